//! The VPC poller: one paginated DescribeVpcEndpoints per VPC (filtered by the VPC) serves every
//! object in it, so waiting and drift detection cost per VPC, not per object. Its answer is the
//! shared answer of steady-state resyncs (memory.rs `Shared::endpoints`), and theirs counts as
//! a poll (`offer`): a VPC's endpoints are held once.
//!
//! Every reconcile registers what it concluded its endpoints are (a digest of their state,
//! policy, groups, subnets, private DNS and tags). Each VPC with registered objects is polled:
//!
//! - while an object waits for AWS (an endpoint pending or deleting): from `first`, doubling to
//!   `max` while nothing changes, back to `first` when something does;
//! - otherwise every `sweep` (the drift sweep), if enabled.
//!
//! An object whose endpoints in the poll's answer differ from its digest (turned available,
//! failed, vanished, policy or groups changed out of band) is triggered for reconcile at once,
//! and that reconcile reads the poll's answer instead of describing again (observe.rs). One
//! owner (this type) holds the answers and the digests; the decisions are the pure functions
//! `next_interval`, `next_due` and `to_trigger`.
//!
//! VPCs are keyed by account, region and id (`Ec2::key`), and each is polled with the client of
//! its account and region (the one its objects' reconciles used).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;

use super::memory::{ByOwner, VpcEndpoints};
use crate::api::BedrockPrivateLink;
use crate::aws::{Ec2, EndpointFacts, TAG_CLUSTER, filter};
use crate::telemetry::Metrics;

/// A reconcile request for one object.
pub type Trigger = ObjectRef<DeserializeGuard<BedrockPrivateLink>>;

/// How often a VPC is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The first interval while an object waits for AWS, and the one after a change.
    pub first: Duration,
    /// The longest interval while an object waits.
    pub max: Duration,
    /// The drift sweep's period when nothing waits; None: no sweep.
    pub sweep: Option<Duration>,
}

impl Timing {
    pub fn new(max: Duration, sweep: Option<Duration>) -> Self {
        let max = max.max(Duration::from_millis(50));
        Self {
            first: max.min(Duration::from_secs(1)),
            max,
            sweep: sweep.filter(|s| !s.is_zero()),
        }
    }
}

/// The next wait interval after a poll: back to `first` when something changed, else doubled up
/// to `max`.
pub fn next_interval(current: Duration, changed: bool, t: &Timing) -> Duration {
    if changed {
        t.first
    } else {
        (current * 2).clamp(t.first, t.max)
    }
}

/// When a VPC is polled next: the wait poll if an object waits, the sweep otherwise (whichever
/// is sooner); None: only a registration can start polling again.
pub fn next_due(
    wait_due: Option<Instant>,
    last_poll: Instant,
    sweep: Option<Duration>,
) -> Option<Instant> {
    let sweep_due = sweep.map(|s| last_poll + s);
    match (wait_due, sweep_due) {
        (Some(w), Some(s)) => Some(w.min(s)),
        (w, s) => w.or(s),
    }
}

/// What the last reconcile of an object concluded about its endpoints in a VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub name: String,
    pub namespace: String,
    pub digest: u64,
    /// Something of it is moving in AWS (pending, deleting, about to be created).
    pub waiting: bool,
    /// When the view behind `digest` was taken: an older poll cannot contradict it.
    pub since: Instant,
    /// Triggered since it registered: not again until its reconcile registers anew.
    pub triggered: bool,
}

/// The objects whose endpoints, in a poll taken at `taken`, differ from what their last
/// reconcile concluded (`seen`: digest by owner uid; an owner with none has no endpoints).
pub fn to_trigger(
    expected: &HashMap<String, Expected>,
    seen: &HashMap<String, u64>,
    taken: Instant,
) -> Vec<String> {
    let none = digest("", &[]);
    let mut uids: Vec<String> = expected
        .iter()
        .filter(|(_, e)| !e.triggered && taken >= e.since)
        .filter(|(uid, e)| *seen.get(*uid).unwrap_or(&none) != e.digest)
        .map(|(uid, _)| uid.clone())
        .collect();
    uids.sort();
    uids
}

/// A digest of the endpoints in `vpc_id` that are not deleted: what drift means.
pub fn digest<'a>(vpc_id: &str, endpoints: impl IntoIterator<Item = &'a EndpointFacts>) -> u64 {
    let mut live: Vec<&EndpointFacts> = endpoints
        .into_iter()
        .filter(|e| e.vpc_id == vpc_id && !e.state_is("deleted"))
        .collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for e in live {
        e.id.hash(&mut h);
        e.state.to_ascii_lowercase().hash(&mut h);
        e.subnet_ids.hash(&mut h);
        e.group_ids.hash(&mut h);
        e.private_dns.hash(&mut h);
        e.policy.as_deref().map(crate::policy::hash).hash(&mut h);
        e.tags.hash(&mut h);
    }
    h.finish()
}

/// Every endpoint in one VPC as one describe saw them (a poll's, or a steady-state resync's
/// shared answer: the same `Arc` the shared cache holds, so it is held once).
#[derive(Debug)]
pub struct Snapshot {
    pub taken: Instant,
    pub all: Arc<ByOwner<EndpointFacts>>,
}

impl Snapshot {
    /// The endpoints the ownership rule gives to the object `uid` of `cluster` (its tag, or
    /// none yet): another cluster's endpoint in a shared VPC is nobody's here.
    fn owned<'a>(&'a self, uid: &str, cluster: &'a str) -> impl Iterator<Item = &'a EndpointFacts> {
        self.all
            .tagged_for(uid)
            .filter(move |e| e.tags.get(TAG_CLUSTER).is_none_or(|c| c == cluster))
    }

    /// The digest of each owner's endpoints (owners with none of this cluster's are left out:
    /// `to_trigger` reads a missing owner as one without endpoints).
    fn digests(&self, vpc_id: &str, cluster: &str) -> HashMap<String, u64> {
        self.all
            .owners()
            .filter_map(|uid| {
                let mut eps = self.owned(uid, cluster).peekable();
                eps.peek()?;
                Some((uid.to_string(), digest(vpc_id, eps)))
            })
            .collect()
    }
}

/// One object's endpoints as the VPC's latest poll saw them.
#[derive(Debug, Clone)]
pub struct Polled {
    pub taken: Instant,
    pub owned: Vec<EndpointFacts>,
}

/// An object the poller watches: since when (its last registration's view), and its endpoints
/// from the latest poll if that poll is no older.
#[derive(Debug, Clone)]
pub struct Watched {
    pub since: Instant,
    pub polled: Option<Polled>,
}

struct Vpc {
    /// The client of the VPC's account and region, and the VPC's id.
    ec2: Ec2,
    vpc_id: String,
    /// Change only through `put` and `take`, which keep `waiting_count`.
    objects: HashMap<String, Expected>,
    /// How many of `objects` wait (kept, not counted per registration: O(1), not O(N)).
    waiting_count: usize,
    latest: Option<Arc<Snapshot>>,
    /// Digests of the latest poll (to tell whether anything changed).
    seen: HashMap<String, u64>,
    interval: Duration,
    /// The next wait poll, while an object waits.
    wait_due: Option<Instant>,
    last_poll: Instant,
    wake: Arc<Notify>,
}

impl Vpc {
    fn new(t: &Timing, ec2: Ec2, vpc_id: &str) -> Self {
        Self {
            ec2,
            vpc_id: vpc_id.to_string(),
            objects: HashMap::new(),
            waiting_count: 0,
            latest: None,
            seen: HashMap::new(),
            interval: t.first,
            wait_due: None,
            last_poll: Instant::now(),
            wake: Arc::new(Notify::new()),
        }
    }

    fn waiting(&self) -> bool {
        self.waiting_count > 0
    }

    fn put(&mut self, uid: &str, expected: Expected) {
        let waits = expected.waiting;
        if let Some(old) = self.objects.insert(uid.to_string(), expected) {
            self.waiting_count -= usize::from(old.waiting);
        }
        self.waiting_count += usize::from(waits);
    }

    fn take(&mut self, uid: &str) {
        if let Some(old) = self.objects.remove(uid) {
            self.waiting_count -= usize::from(old.waiting);
        }
    }
}

#[derive(Default)]
struct State {
    vpcs: HashMap<String, Vpc>,
    vpc_of: HashMap<String, String>,
    subscribers: Vec<(Option<String>, UnboundedSender<Trigger>)>,
    started: bool,
}

/// See the module doc.
pub struct Poller {
    timing: Timing,
    metrics: Arc<Metrics>,
    /// This cluster's identity: whose endpoints count (ownership.rs).
    cluster: String,
    /// The shared answers to "every endpoint in the VPC": polls store theirs there, and
    /// reconciles offer theirs here (`offer`).
    endpoints: Arc<VpcEndpoints>,
    state: Mutex<State>,
}

impl Poller {
    pub fn new(
        timing: Timing,
        metrics: Arc<Metrics>,
        cluster: String,
        endpoints: Arc<VpcEndpoints>,
    ) -> Self {
        Self {
            timing,
            metrics,
            cluster,
            endpoints,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("poller lock")
    }

    /// Triggers for the objects of `namespace` (None: all).
    pub fn subscribe(&self, namespace: Option<String>) -> UnboundedReceiver<Trigger> {
        let (tx, rx) = unbounded();
        self.lock().subscribers.push((namespace, tx));
        rx
    }

    /// Starts polling (the controller calls this; unit tests never do).
    pub fn start(self: &Arc<Self>) {
        let vpcs: Vec<String> = {
            let mut s = self.lock();
            s.started = true;
            s.vpcs.keys().cloned().collect()
        };
        for vpc in vpcs {
            self.spawn(vpc);
        }
    }

    /// Stops polling (the controller has stopped: nobody would act on a trigger).
    pub fn stop(&self) {
        let mut s = self.lock();
        s.started = false;
        s.subscribers.clear();
        for v in s.vpcs.values() {
            v.wake.notify_one();
        }
    }

    pub fn started(&self) -> bool {
        self.lock().started
    }

    /// What a reconcile concluded: the object's endpoints (as of `since`) in `vpc_id` of
    /// `ec2`'s account and region, and whether it waits.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        self: &Arc<Self>,
        uid: &str,
        obj: (&str, &str),
        ec2: &Ec2,
        vpc_id: &str,
        endpoints: &[EndpointFacts],
        waiting: bool,
        since: Instant,
    ) {
        let expected = Expected {
            name: obj.0.to_string(),
            namespace: obj.1.to_string(),
            digest: digest(vpc_id, endpoints),
            waiting,
            since,
            triggered: false,
        };
        let key = ec2.key(vpc_id);
        let (new_vpc, wake) = self.insert(uid, &key, expected, || {
            Vpc::new(&self.timing, ec2.clone(), vpc_id)
        });
        if new_vpc {
            self.spawn(key);
        }
        // The VPC's task works out its next poll again (it may be sooner now).
        wake.notify_one();
    }

    /// Records `expected` under the VPC `vpc_id` (a key: account, region and id), made by
    /// `new` if it is new; returns whether it is new (and polling has started), and the VPC's
    /// wake-up.
    fn insert(
        &self,
        uid: &str,
        vpc_id: &str,
        expected: Expected,
        new: impl FnOnce() -> Vpc,
    ) -> (bool, Arc<Notify>) {
        let mut s = self.lock();
        if let Some(old) = s.vpc_of.insert(uid.to_string(), vpc_id.to_string())
            && old != vpc_id
            && let Some(v) = s.vpcs.get_mut(&old)
        {
            v.take(uid);
        }
        let started = s.started;
        let timing = self.timing;
        let new_vpc = !s.vpcs.contains_key(vpc_id);
        let vpc = s.vpcs.entry(vpc_id.to_string()).or_insert_with(new);
        if expected.waiting && !vpc.waiting() {
            vpc.interval = timing.first;
            vpc.wait_due = Some(Instant::now() + timing.first);
        }
        vpc.put(uid, expected);
        if !vpc.waiting() {
            vpc.wait_due = None;
        }
        (new_vpc && started, vpc.wake.clone())
    }

    /// The object is gone (or no longer has anything in AWS to watch).
    pub fn forget(&self, uid: &str) {
        let mut s = self.lock();
        let Some(vpc_id) = s.vpc_of.remove(uid) else {
            return;
        };
        if let Some(v) = s.vpcs.get_mut(&vpc_id) {
            v.take(uid);
            if v.objects.is_empty() {
                v.latest = None;
                v.seen.clear();
            }
        }
    }

    /// The VPC's latest answer (a key: `Ec2::key`).
    #[cfg(test)]
    pub fn latest(&self, key: &str) -> Option<Arc<Snapshot>> {
        self.lock().vpcs.get(key)?.latest.clone()
    }

    /// Whether the poller watches the object in `vpc_id` (a key: `Ec2::key`; and polling has
    /// started), with its
    /// endpoints from the latest poll taken since its registration.
    pub fn watching(&self, uid: &str, vpc_id: &str) -> Option<Watched> {
        let s = self.lock();
        if !s.started {
            return None;
        }
        let v = s.vpcs.get(vpc_id)?;
        let since = v.objects.get(uid)?.since;
        let polled = v
            .latest
            .as_ref()
            .filter(|snap| snap.taken >= since)
            .map(|snap| Polled {
                taken: snap.taken,
                owned: snap.owned(uid, &self.cluster).cloned().collect(),
            });
        Some(Watched { since, polled })
    }

    fn spawn(self: &Arc<Self>, vpc_id: String) {
        let me = self.clone();
        tokio::spawn(async move { me.run_vpc(vpc_id).await });
    }

    /// One task per VPC, for the life of the process (VPCs are few).
    async fn run_vpc(self: Arc<Self>, vpc_id: String) {
        loop {
            let (due, wake) = {
                let s = self.lock();
                let Some(v) = s.vpcs.get(&vpc_id).filter(|_| s.started) else {
                    return;
                };
                let due = (!v.objects.is_empty())
                    .then(|| next_due(v.wait_due, v.last_poll, self.timing.sweep))
                    .flatten();
                (due, v.wake.clone())
            };
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {
                    self.poll(&vpc_id).await;
                }
                _ = wake.notified() => {}
            }
        }
    }

    /// Polls the VPC (a key: `Ec2::key`) once: triggers the objects whose endpoints changed
    /// and returns them.
    pub async fn poll(&self, key: &str) -> Vec<Trigger> {
        let (reason, ec2, vpc_id) = {
            let s = self.lock();
            let Some(v) = s.vpcs.get(key) else {
                return Vec::new();
            };
            let reason = if v.waiting() { "wait" } else { "sweep" };
            (reason, v.ec2.clone(), v.vpc_id.clone())
        };
        self.metrics.record_vpc_poll(reason);
        // Every endpoint in the VPC (not only tagged ones): the shared answer's question, asked
        // through its cache, so a resync that wants it meanwhile waits for this answer instead
        // of describing the VPC a second time at once (max age zero: always a new describe).
        let answer = self
            .endpoints
            .get_or_fetch_stamped(&key.to_string(), Duration::ZERO, None, || async {
                ec2.describe_endpoints(vec![filter("vpc-id", [vpc_id.as_str()])])
                    .await
                    .map(|all| Arc::new(ByOwner::new(all, |e| &e.tags)))
            })
            .await;
        let snapshot = match answer {
            Ok((taken, all)) => Some(Snapshot { taken, all }),
            Err(e) => {
                tracing::warn!(vpc = %key, error = %e, "could not poll the VPC's endpoints");
                None
            }
        };
        let triggers = self.after_poll(key, snapshot);
        if !triggers.is_empty() {
            self.metrics.record_poll_triggers(reason, triggers.len());
            tracing::debug!(vpc = %key, reason, objects = triggers.len(), "endpoints changed");
        }
        self.send(&triggers);
        triggers
    }

    /// A reconcile's describe of every endpoint in the VPC (a key: `Ec2::key`), begun at
    /// `taken`: it counts as a poll (triggers what changed, and the sweep waits from now) if
    /// it is newer than the latest poll. Not an EC2 call of its own.
    pub fn offer(&self, key: &str, taken: Instant, all: Arc<ByOwner<EndpointFacts>>) {
        let newer = {
            let s = self.lock();
            s.vpcs.get(key).is_some_and(|v| {
                !v.objects.is_empty() && v.latest.as_ref().is_none_or(|l| l.taken < taken)
            })
        };
        if newer {
            let triggers = self.after_poll(key, Some(Snapshot { taken, all }));
            self.send(&triggers);
        }
    }

    /// Takes a poll's answer (None: it failed): which objects to trigger, and when to poll next.
    fn after_poll(&self, key: &str, snapshot: Option<Snapshot>) -> Vec<Trigger> {
        let timing = self.timing;
        let mut s = self.lock();
        let Some(v) = s.vpcs.get_mut(key) else {
            return Vec::new();
        };
        let vpc_id = v.vpc_id.clone();
        let now = Instant::now();
        v.last_poll = now;
        let mut triggers = Vec::new();
        let mut changed = false;
        // A newer answer (a resync's, offered meanwhile) stands.
        let newer_held = |snap: &Snapshot| v.latest.as_ref().is_some_and(|l| l.taken > snap.taken);
        if let Some(snap) = snapshot.filter(|snap| !newer_held(snap)) {
            let seen = snap.digests(&vpc_id, &self.cluster);
            changed = seen != v.seen;
            for uid in to_trigger(&v.objects, &seen, snap.taken) {
                let e = v.objects.get_mut(&uid).expect("listed above");
                e.triggered = true;
                triggers.push(ObjectRef::new(&e.name).within(&e.namespace));
            }
            v.seen = seen;
            v.latest = Some(Arc::new(snap));
        }
        v.interval = next_interval(v.interval, changed, &timing);
        v.wait_due = v.waiting().then(|| now + v.interval);
        triggers
    }

    fn send(&self, triggers: &[Trigger]) {
        if triggers.is_empty() {
            return;
        }
        let mut s = self.lock();
        s.subscribers.retain(|(_, tx)| !tx.is_closed());
        for t in triggers {
            for (ns, tx) in &s.subscribers {
                if ns.as_ref().is_none_or(|n| Some(n) == t.namespace.as_ref()) {
                    let _ = tx.unbounded_send(t.clone());
                }
            }
        }
    }

    /// Objects registered (all VPCs).
    pub fn len(&self) -> usize {
        self.lock().vpc_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::Arc as StdArc;

    fn timing(max_secs: u64) -> Timing {
        Timing::new(Duration::from_secs(max_secs), Some(Duration::from_secs(20)))
    }

    #[test]
    fn the_wait_interval_doubles_to_its_cap_and_resets_on_change() {
        let t = timing(15);
        let s = Duration::from_secs;
        let mut i = t.first;
        let mut seen = Vec::new();
        for _ in 0..6 {
            i = next_interval(i, false, &t);
            seen.push(i.as_secs());
        }
        assert_eq!(seen, [2, 4, 8, 15, 15, 15]);
        assert_eq!(next_interval(s(15), true, &t), s(1), "a change resets it");
        // The default cap keeps an endpoint's turn to available seen within 2 s.
        let d = timing(2);
        assert_eq!(next_interval(s(1), false, &d), s(2));
        assert_eq!(next_interval(s(2), false, &d), s(2));
        // A cap under a second is also the first interval.
        let fast = Timing::new(Duration::from_millis(300), None);
        assert_eq!(fast.first, Duration::from_millis(300));
        assert_eq!(next_interval(fast.first, false, &fast), fast.first);
        assert_eq!(
            Timing::new(s(2), Some(Duration::ZERO)).sweep,
            None,
            "0 turns the sweep off"
        );
    }

    #[test]
    fn the_next_poll_is_the_sooner_of_the_wait_and_the_sweep() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let sweep = Some(s(20));
        // (wait due, last poll, sweep) -> due
        let table = [
            (Some(t0 + s(2)), t0, sweep, Some(t0 + s(2))),
            (Some(t0 + s(30)), t0, sweep, Some(t0 + s(20))),
            (None, t0, sweep, Some(t0 + s(20))),
            (Some(t0 + s(2)), t0, None, Some(t0 + s(2))),
            (None, t0, None, None),
        ];
        for (i, (wait, last, sweep, want)) in table.into_iter().enumerate() {
            assert_eq!(next_due(wait, last, sweep), want, "case {i}");
        }
    }

    fn endpoint(id: &str, state: &str) -> EndpointFacts {
        EndpointFacts {
            id: id.into(),
            vpc_id: "vpc-1".into(),
            state: state.into(),
            subnet_ids: BTreeSet::from(["subnet-a".to_string()]),
            group_ids: BTreeSet::from(["sg-1".to_string()]),
            policy: Some(StdArc::new(serde_json::json!({"Statement": []}))),
            ..Default::default()
        }
    }

    #[test]
    fn the_digest_covers_what_drift_means_and_nothing_else() {
        let base = vec![
            endpoint("vpce-1", "available"),
            endpoint("vpce-2", "pending"),
        ];
        let d = digest("vpc-1", &base);
        let reordered = vec![base[1].clone(), base[0].clone()];
        assert_eq!(digest("vpc-1", &reordered), d, "order does not matter");
        let mut upper = base.clone();
        upper[0].state = "Available".into();
        assert_eq!(digest("vpc-1", &upper), d, "state case does not matter");
        let mut gone = base.clone();
        gone.push(endpoint("vpce-3", "deleted"));
        let mut elsewhere = endpoint("vpce-4", "available");
        elsewhere.vpc_id = "vpc-2".into();
        gone.push(elsewhere);
        assert_eq!(digest("vpc-1", &gone), d, "deleted and other VPCs ignored");
        type Change = fn(&mut EndpointFacts);
        let changes: [(&str, Change); 6] = [
            ("state", |e| e.state = "failed".into()),
            ("policy", |e| {
                e.policy = Some(StdArc::new(serde_json::json!({"Statement": [1]})))
            }),
            ("groups", |e| e.group_ids.clear()),
            ("subnets", |e| {
                e.subnet_ids.insert("subnet-b".into());
            }),
            ("private DNS", |e| e.private_dns = true),
            ("tags", |e| {
                e.tags.insert("k".into(), "v".into());
            }),
        ];
        for (what, change) in changes {
            let mut changed = base.clone();
            change(&mut changed[0]);
            assert_ne!(digest("vpc-1", &changed), d, "{what}");
        }
        assert_ne!(digest("vpc-1", &base[..1]), d, "an endpoint vanished");
    }

    fn expected(digest: u64, since: Instant, triggered: bool) -> Expected {
        Expected {
            name: "n".into(),
            namespace: "ns".into(),
            digest,
            waiting: false,
            since,
            triggered,
        }
    }

    #[test]
    fn the_vpc_waits_while_any_of_its_objects_waits() {
        let fake = crate::aws::fake::FakeEc2::standard();
        let poller = Poller::new(
            timing(60),
            Arc::default(),
            "c".into(),
            Arc::new(super::super::cache::TtlCache::new(Duration::from_secs(1))),
        );
        let waiting = |w: bool| Expected {
            waiting: w,
            ..expected(0, Instant::now(), false)
        };
        let vpc_waits = |p: &Poller| p.lock().vpcs.get("k").is_some_and(Vpc::waiting);
        let put = |uid: &str, e: Expected| {
            poller.insert(uid, "k", e, || {
                Vpc::new(&poller.timing, fake.handle(), "vpc-1")
            });
        };
        put("a", waiting(true));
        put("b", waiting(true));
        put("c", waiting(false));
        assert!(vpc_waits(&poller));
        put("a", waiting(false));
        assert!(vpc_waits(&poller), "b still waits");
        poller.forget("b");
        assert!(!vpc_waits(&poller), "nobody waits");
        put("c", waiting(true));
        assert!(vpc_waits(&poller));
        poller.forget("c");
        poller.forget("a");
        assert!(!vpc_waits(&poller));
    }

    #[test]
    fn objects_are_triggered_when_their_endpoints_differ_from_their_last_reconcile() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let none = digest("", &[]);
        let expected: HashMap<String, Expected> = [
            ("same", expected(1, t0, false)),
            ("changed", expected(1, t0, false)),
            ("vanished", expected(1, t0, false)),
            ("still-none", expected(none, t0, false)),
            ("already-triggered", expected(1, t0, true)),
            ("newer-than-the-poll", expected(1, later, false)),
        ]
        .into_iter()
        .map(|(u, e)| (u.to_string(), e))
        .collect();
        let seen: HashMap<String, u64> = [
            ("same", 1),
            ("changed", 2),
            ("already-triggered", 2),
            ("newer-than-the-poll", 2),
            ("not-registered", 3),
        ]
        .into_iter()
        .map(|(u, d)| (u.to_string(), d))
        .collect();
        let taken = t0 + Duration::from_secs(1);
        assert_eq!(to_trigger(&expected, &seen, taken), ["changed", "vanished"]);
    }
}
