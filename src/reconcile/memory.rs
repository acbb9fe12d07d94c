//! What the operator remembers between reconciles, so a steady state costs a handful of
//! describes per VPC instead of several per object.
//!
//! - `Shared`: answers shared by every object of a VPC (or the region): single-flight per
//!   key, stamped when the fetch starts (see cache.rs).
//! - `Memory`: per object (by uid), the one owner of what a reconcile saw or left of its
//!   endpoints and groups, the status it wrote, when it last changed the object's AWS
//!   resources, failed-endpoint replacements, and cleanup.
//!
//! The rule, for every observation of an object (its own or a shared one): it is usable only
//! if it was taken after the object's last change in AWS, for the same generation (shared
//! answers are not per generation), and is younger than the TTL or the caller's tighter limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cache::TtlCache;
use crate::api::BedrockPrivateLinkStatus;
use crate::aws::{EndpointFacts, GroupFacts, ServiceFacts, SubnetFacts, VpcFacts};

/// The rule (see the module doc), as a pure function.
pub fn usable(
    taken: Instant,
    taken_for: Option<i64>,
    last_change: Option<Instant>,
    generation: Option<i64>,
    max_age: Duration,
    now: Instant,
) -> bool {
    last_change.is_none_or(|c| taken >= c)
        && taken_for == generation
        && now.saturating_duration_since(taken) < max_age
}

/// An object's endpoints as last seen, and the VPC's other endpoints when they matter.
#[derive(Debug, Default)]
pub struct SeenEndpoints {
    pub owned: Vec<EndpointFacts>,
    pub foreign: Vec<EndpointFacts>,
    /// Whether the reconcile that saw them ended Ready.
    pub ready: bool,
}

#[derive(Debug)]
struct Seen<T> {
    taken: Instant,
    generation: Option<i64>,
    value: T,
}

/// Replacements of failed endpoints of one service: how many, when the last one began, and
/// why (the dead endpoint and AWS's LastError), for the status while it is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacements {
    pub attempts: u32,
    pub last: Instant,
    pub why: String,
}

#[derive(Debug, Default)]
struct Entry {
    changed: Option<Instant>,
    endpoints: Option<Seen<Arc<SeenEndpoints>>>,
    groups: Option<Seen<Arc<Vec<GroupFacts>>>>,
    written: Option<(Instant, Arc<BedrockPrivateLinkStatus>)>,
    cleaned: Option<Instant>,
    /// By service name.
    replacements: BTreeMap<String, Replacements>,
}

impl Entry {
    /// Nothing in it is worth keeping after `ttl` (replacement counts last longer: they
    /// pace retries that may be minutes apart).
    fn expired(&self, now: Instant, ttl: Duration) -> bool {
        let old = |t: Option<Instant>| t.is_none_or(|t| now.saturating_duration_since(t) >= ttl);
        old(self.changed)
            && old(self.endpoints.as_ref().map(|s| s.taken))
            && old(self.groups.as_ref().map(|s| s.taken))
            && old(self.written.as_ref().map(|w| w.0))
            && old(self.cleaned)
            && self
                .replacements
                .values()
                .all(|r| now.saturating_duration_since(r.last) >= REPLACEMENT_MEMORY)
    }
}

/// How long failed-endpoint replacements are remembered (longer than the largest backoff).
const REPLACEMENT_MEMORY: Duration = Duration::from_secs(3600);

/// Per-object memory: one owner, one rule.
pub struct Memory {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Memory {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn with<T>(&self, uid: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.entries.lock().expect("memory lock");
        f(entries.entry(uid.to_string()).or_default())
    }

    fn peek<T>(&self, uid: &str, f: impl FnOnce(&Entry) -> Option<T>) -> Option<T> {
        self.entries
            .lock()
            .expect("memory lock")
            .get(uid)
            .and_then(f)
    }

    /// We changed (or may have changed) this object's resources in AWS just now: everything
    /// seen of them before is stale.
    pub fn changed(&self, uid: &str) {
        self.with(uid, |e| e.changed = Some(Instant::now()));
    }

    pub fn changed_at(&self, uid: &str) -> Option<Instant> {
        self.peek(uid, |e| e.changed)
    }

    fn fresh<T: Clone>(
        &self,
        uid: &str,
        generation: Option<i64>,
        max_age: Duration,
        pick: impl FnOnce(&Entry) -> Option<&Seen<T>>,
    ) -> Option<T> {
        let now = Instant::now();
        let max_age = max_age.min(self.ttl);
        self.peek(uid, |e| {
            let s = pick(e)?;
            usable(s.taken, s.generation, e.changed, generation, max_age, now)
                .then(|| s.value.clone())
        })
    }

    /// The object's endpoints as last seen, if usable by the rule.
    pub fn endpoints(
        &self,
        uid: &str,
        generation: Option<i64>,
        max_age: Duration,
    ) -> Option<Arc<SeenEndpoints>> {
        self.fresh(uid, generation, max_age, |e| e.endpoints.as_ref())
    }

    /// Like `endpoints`, with when they were seen.
    pub fn endpoints_seen(
        &self,
        uid: &str,
        generation: Option<i64>,
    ) -> Option<(Instant, Arc<SeenEndpoints>)> {
        let now = Instant::now();
        self.peek(uid, |e| {
            let s = e.endpoints.as_ref()?;
            usable(s.taken, s.generation, e.changed, generation, self.ttl, now)
                .then(|| (s.taken, s.value.clone()))
        })
    }

    /// `taken`: when the observation began (a describe started before a change may not show
    /// it).
    pub fn remember_endpoints(
        &self,
        uid: &str,
        generation: Option<i64>,
        taken: Instant,
        seen: SeenEndpoints,
    ) {
        let value = Arc::new(seen);
        self.with(uid, |e| {
            e.endpoints = Some(Seen {
                taken,
                generation,
                value,
            })
        });
    }

    pub fn groups(
        &self,
        uid: &str,
        generation: Option<i64>,
        max_age: Duration,
    ) -> Option<Arc<Vec<GroupFacts>>> {
        self.fresh(uid, generation, max_age, |e| e.groups.as_ref())
    }

    pub fn remember_groups(
        &self,
        uid: &str,
        generation: Option<i64>,
        taken: Instant,
        groups: Vec<GroupFacts>,
    ) {
        let value = Arc::new(groups);
        self.with(uid, |e| {
            e.groups = Some(Seen {
                taken,
                generation,
                value,
            })
        });
    }

    /// The status we last wrote (within the TTL): the store may not show that write yet.
    /// Not an observation of AWS, so only its age counts.
    pub fn written(&self, uid: &str) -> Option<Arc<BedrockPrivateLinkStatus>> {
        self.peek(uid, |e| {
            e.written
                .as_ref()
                .filter(|(at, _)| at.elapsed() < self.ttl)
                .map(|(_, s)| s.clone())
        })
    }

    pub fn remember_written(&self, uid: &str, status: BedrockPrivateLinkStatus) {
        let s = Arc::new(status);
        self.with(uid, |e| e.written = Some((Instant::now(), s)));
    }

    /// Cleanup removed the object's AWS resources within the TTL.
    pub fn cleaned(&self, uid: &str) -> bool {
        self.peek(uid, |e| e.cleaned.filter(|t| t.elapsed() < self.ttl))
            .is_some()
    }

    pub fn remember_cleaned(&self, uid: &str) {
        self.with(uid, |e| e.cleaned = Some(Instant::now()));
    }

    /// Replacements of the service's dead endpoint within the last hour (older ones are
    /// forgotten: a failure after a long healthy spell starts a fresh backoff).
    pub fn replacements(&self, uid: &str, service_name: &str) -> Option<Replacements> {
        self.peek(uid, |e| {
            e.replacements
                .get(service_name)
                .filter(|r| r.last.elapsed() < REPLACEMENT_MEMORY)
                .cloned()
        })
    }

    /// A replacement of the service's failed endpoint begins now; returns the attempt number.
    pub fn replacing(&self, uid: &str, service_name: &str, why: String) -> u32 {
        self.with(uid, |e| {
            let r = e
                .replacements
                .entry(service_name.to_string())
                .or_insert(Replacements {
                    attempts: 0,
                    last: Instant::now(),
                    why: String::new(),
                });
            if r.last.elapsed() >= REPLACEMENT_MEMORY {
                r.attempts = 0;
            }
            r.attempts += 1;
            r.last = Instant::now();
            r.why = why;
            r.attempts
        })
    }

    /// Drops what no rule would use any more.
    pub fn prune(&self) {
        let now = Instant::now();
        let ttl = self.ttl;
        self.entries
            .lock()
            .expect("memory lock")
            .retain(|_, e| !e.expired(now, ttl));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("memory lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A VPC's resources as one describe returned them, indexed by the owner uid their tags name:
/// a steady-state resync of N objects finds each object's own without scanning all N.
#[derive(Debug)]
pub struct ByOwner<T> {
    pub all: Vec<T>,
    by_owner: HashMap<String, Vec<usize>>,
}

impl<T> ByOwner<T> {
    pub fn new(all: Vec<T>, tags: impl Fn(&T) -> &BTreeMap<String, String>) -> Self {
        let mut by_owner: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in all.iter().enumerate() {
            if let Some(uid) = tags(r).get(crate::aws::TAG_OWNER_UID) {
                by_owner.entry(uid.clone()).or_default().push(i);
            }
        }
        Self { all, by_owner }
    }

    /// The owner uids the resources' tags name.
    pub fn owners(&self) -> impl Iterator<Item = &str> + '_ {
        self.by_owner.keys().map(String::as_str)
    }

    /// The resources whose owner tag names `uid` (the cluster tag is the caller's to check).
    pub fn tagged_for<'a>(&'a self, uid: &str) -> impl Iterator<Item = &'a T> + 'a {
        self.by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .map(|&i| &self.all[i])
    }
}

/// Every endpoint in a VPC, ours and others', by VPC key (`Ec2::key`). Shared with the VPC's
/// poller (poll.rs), so one describe's answer is held once, whoever made it.
pub type VpcEndpoints = TtlCache<String, Arc<ByOwner<EndpointFacts>>>;

/// Answers shared by every object of a VPC or the region.
pub struct Shared {
    pub vpcs: TtlCache<(String, bool), Option<VpcFacts>>,
    pub subnets: TtlCache<String, Vec<SubnetFacts>>,
    /// Every endpoint in a VPC, ours and others'.
    pub endpoints: Arc<VpcEndpoints>,
    /// Every group we own in a VPC.
    pub groups: TtlCache<String, Arc<ByOwner<GroupFacts>>>,
    /// The region's Bedrock endpoint services and their zones.
    pub services: TtlCache<String, BTreeMap<String, ServiceFacts>>,
}

impl Shared {
    pub fn new(ttl: Duration) -> Self {
        Self {
            vpcs: TtlCache::new(ttl),
            subnets: TtlCache::new(ttl),
            endpoints: Arc::new(TtlCache::new(ttl)),
            groups: TtlCache::new(ttl),
            services: TtlCache::new(ttl),
        }
    }

    pub async fn prune(&self) {
        self.vpcs.prune().await;
        self.subnets.prune().await;
        self.endpoints.prune().await;
        self.groups.prune().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_owner_finds_each_owners_resources_and_only_theirs() {
        let tagged = |owner: Option<&str>| -> BTreeMap<String, String> {
            owner
                .map(|u| (crate::aws::TAG_OWNER_UID.to_string(), u.to_string()))
                .into_iter()
                .collect()
        };
        let all = vec![
            ("a", tagged(Some("u1"))),
            ("b", tagged(None)),
            ("c", tagged(Some("u2"))),
            ("d", tagged(Some("u1"))),
        ];
        let index = ByOwner::new(all, |(_, t)| t);
        let of = |uid: &str| index.tagged_for(uid).map(|(n, _)| *n).collect::<Vec<_>>();
        assert_eq!(of("u1"), ["a", "d"]);
        assert_eq!(of("u2"), ["c"]);
        assert!(of("u3").is_empty());
        assert_eq!(index.all.len(), 4, "the untagged stay in `all`");
    }

    #[test]
    fn the_rule() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let ttl = s(60);
        // (taken, taken for generation, last change, current generation, now) -> usable
        let table = [
            (t0, Some(1), None, Some(1), t0 + s(1), true),
            (t0, Some(1), Some(t0 - s(5)), Some(1), t0 + s(1), true),
            (t0, Some(1), Some(t0), Some(1), t0 + s(1), true),
            // Taken before our last change in AWS.
            (t0, Some(1), Some(t0 + s(1)), Some(1), t0 + s(2), false),
            // For another generation.
            (t0, Some(1), None, Some(2), t0 + s(1), false),
            // Older than the TTL.
            (t0, Some(1), None, Some(1), t0 + s(60), false),
        ];
        for (i, (taken, taken_for, change, generation, now, want)) in table.iter().enumerate() {
            assert_eq!(
                usable(*taken, *taken_for, *change, *generation, ttl, *now),
                *want,
                "case {i}"
            );
        }
    }

    #[test]
    fn memory_applies_the_rule_to_what_it_holds() {
        let m = Memory::new(Duration::from_secs(60));
        let long = Duration::MAX;
        m.remember_groups("u", Some(1), Instant::now(), vec![GroupFacts::default()]);
        assert!(m.groups("u", Some(1), long).is_some());
        assert!(m.groups("u", Some(2), long).is_none(), "another generation");
        assert!(m.groups("u", Some(1), Duration::ZERO).is_none(), "too old");
        assert!(m.groups("other", Some(1), long).is_none());
        m.changed("u");
        assert!(
            m.groups("u", Some(1), long).is_none(),
            "taken before a change"
        );
        m.remember_endpoints("u", Some(1), Instant::now(), SeenEndpoints::default());
        assert!(m.endpoints("u", Some(1), long).is_some(), "taken after it");
    }

    #[test]
    fn replacements_count_and_outlive_the_ttl() {
        let m = Memory::new(Duration::from_millis(1));
        assert_eq!(m.replacing("u", "svc", "a".into()), 1);
        assert_eq!(m.replacing("u", "svc", "b".into()), 2);
        std::thread::sleep(Duration::from_millis(5));
        m.prune();
        let r = m.replacements("u", "svc").unwrap();
        assert_eq!((r.attempts, r.why.as_str()), (2, "b"));
        assert_eq!(m.replacements("u", "other"), None);
        m.changed("v");
        std::thread::sleep(Duration::from_millis(5));
        m.prune();
        assert_eq!(m.len(), 1, "v expired, u's replacements kept");
    }
}
