//! The reconcile pipeline, one module per step:
//!
//! 1. `observe`: read Kubernetes and EC2 (through memory's rule); no decisions.
//! 2. `validate` (pure): admission checks of the spec alone, then the spec against what was
//!    observed. An invalid spec stops here: nothing is created.
//! 3. `plan` (pure): the desired state and the minimal changes that reach it.
//! 4. `execute`: the only step that changes AWS.
//! 5. `assess` (pure): verdicts from what was observed and applied.
//! 6. `status` (pure): the status, a function of the previous one, the facts and the verdicts.
//!
//! Publishing the ConfigMaps lives in `crate::publish`, deletion in `cleanup`, what is kept
//! between reconciles in `memory`, the per-VPC poll that wakes objects when their endpoints
//! change (pending ones turn available, drift out of band) in `poll`. `finalizer()` is the one top-level action; Apply and
//! Cleanup are both idempotent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{PartialObjectMeta, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

use crate::api::{BedrockPrivateLink, BedrockPrivateLinkStatus, FINALIZER};
use crate::aws::{AwsError, Ec2, Ec2Pool, ErrorKind};
use crate::publish;
use crate::telemetry::Metrics;

pub mod assess;
pub mod cache;
pub mod cleanup;
mod controller;
pub mod events;
pub mod execute;
pub mod memory;
pub mod observe;
pub mod orphans;
pub mod ownership;
pub mod path;
pub mod plan;
pub mod poll;
pub mod status;
pub mod validate;

#[cfg(test)]
mod tests;

use execute::Applied;
use memory::{Memory, SeenEndpoints, Shared};
use observe::Observation;
use plan::{Desired, Owner};
use status::{READY, Verdict};
use validate::{Invalid, Valid};

pub(crate) use controller::fan_out;
pub use controller::run;

pub const MANAGER: &str = "bedrock-privatelink-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Aws(AwsError),
    /// Not a failure: something in AWS is still moving (e.g. an endpoint deleting).
    #[error("waiting: {0}")]
    Waiting(String),
    /// A resource vanished between describe and change: observe again at once.
    #[error("changed underneath: {0}")]
    Vanished(AwsError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Stable label for metrics and event reasons.
    pub fn category(&self) -> String {
        match self {
            Error::Kube(_) => "KubeError".into(),
            Error::Aws(e) if e.credentials_reason().is_some() => {
                e.credentials_reason().unwrap_or_default().into()
            }
            Error::Aws(e) => format!(
                "Aws{}",
                e.code.as_str().split('.').next().unwrap_or("Error")
            ),
            Error::Waiting(_) => "Waiting".into(),
            Error::Vanished(_) => "Vanished".into(),
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => "FinalizerError".into(),
            },
        }
    }

    /// One short sentence for people (condition messages): never a debug dump.
    pub fn summary(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(s)) => format!(
                "the Kubernetes API refused a request ({} {}): {}",
                s.code, s.reason, s.message
            ),
            Error::Kube(e) => format!("the Kubernetes API could not be reached: {e}"),
            Error::Aws(e) | Error::Vanished(e) => e.summary(),
            Error::Waiting(s) => s.clone(),
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.summary(),
                other => format!("the finalizer could not be updated: {other}"),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub resync: Duration,
    pub pending_requeue: Duration,
    /// The longest interval between polls of a VPC while an object in it waits for AWS.
    pub pending_poll_max: Duration,
    /// The drift sweep's period (None: off).
    pub drift_sweep: Option<Duration>,
    pub default_vpc_id: Option<String>,
    pub watch_namespaces: Vec<String>,
    pub concurrency: u16,
    /// Check the private path (path.rs) at every reconcile, and at least this often while an
    /// object is otherwise steady. None: not checked (the default out of a cluster, where the
    /// operator's resolver is not the workloads').
    pub path_check: Option<Duration>,
    /// This cluster's identity, tagged on every resource (ownership.rs).
    pub cluster_id: String,
    /// The orphan sweep's period (None: off) and how long an orphan is left before removal.
    pub orphan_sweep: Option<Duration>,
    pub orphan_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(300),
            pending_requeue: Duration::from_secs(2),
            pending_poll_max: Duration::from_secs(2),
            drift_sweep: Some(Duration::from_secs(20)),
            default_vpc_id: None,
            watch_namespaces: Vec::new(),
            concurrency: 8,
            path_check: None,
            cluster_id: "local".into(),
            orphan_sweep: None,
            orphan_grace: Duration::from_secs(3600),
        }
    }
}

type Cached<K, V> = Mutex<Option<(Instant, K, V)>>;

/// How long a reconcile that is not a steady-state resync may reuse VPC and subnet answers
/// (and, while settling, the group it just configured).
const FRESH: Duration = Duration::from_secs(3);

pub struct Context {
    pub client: Client,
    /// One EC2 client per (credentials, region), the operator's own first (issue 17). A
    /// reconcile works through the client of its object's account and region (`Scoped`).
    pub pool: Arc<Ec2Pool>,
    /// None in unit tests: events are then kept in `notes`.
    pub recorder: Option<events::Recorder>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    pub config_maps: Option<crate::publish::ConfigMaps>,
    /// Every Namespace's metadata (set by `run`): where copies may go.
    pub namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
    /// Tenancy (issue 16): the grant watch and object stores the tenancy gate reads.
    pub tenancy: crate::tenancy::gate::Index,
    /// Every Node (set by `run`; spec only): where the cluster's VPC is.
    pub nodes: Option<Store<Node>>,
    network_cache: Cached<Vec<String>, observe::ClusterNetwork>,
    /// Per-object memory between reconciles (one owner, one rule: see memory.rs).
    pub memory: Memory,
    /// Answers shared by the objects of a VPC.
    pub shared: Shared,
    /// Endpoint interface addresses for the private path check.
    pub interfaces: path::InterfaceAddresses,
    /// One poll per VPC for waiting and drift (see poll.rs).
    pub poller: Arc<poll::Poller>,
    failures: std::sync::Mutex<HashMap<String, u32>>,
    /// Events when there is no recorder: (reason, note).
    pub notes: std::sync::Mutex<Vec<(String, String)>>,
    /// Start of the resync grid (see `next_resync`).
    epoch: Instant,
}

impl Context {
    pub fn new(
        client: Client,
        pool: impl Into<Ec2Pool>,
        metrics: Arc<Metrics>,
        config: Config,
    ) -> Self {
        let recorder =
            events::Recorder::new(client.clone(), MANAGER, std::env::var("POD_NAME").ok());
        let mut ctx = Self::without_events(client, pool, metrics, config);
        ctx.recorder = Some(recorder);
        ctx
    }

    /// A context that keeps events in `notes` (unit tests).
    pub fn without_events(
        client: Client,
        pool: impl Into<Ec2Pool>,
        metrics: Arc<Metrics>,
        config: Config,
    ) -> Self {
        // Drift is still found within resync + ttl.
        let ttl = (config.resync / 5).clamp(Duration::from_millis(500), Duration::from_secs(60));
        let timing = poll::Timing::new(config.pending_poll_max, config.drift_sweep);
        let shared = Shared::new(ttl);
        let poller = Arc::new(poll::Poller::new(
            timing,
            metrics.clone(),
            config.cluster_id.clone(),
            shared.endpoints.clone(),
        ));
        Self {
            recorder: None,
            client,
            pool: Arc::new(pool.into()),
            metrics,
            config,
            config_maps: None,
            namespaces: None,
            tenancy: Default::default(),
            nodes: None,
            network_cache: Mutex::default(),
            memory: Memory::new(ttl),
            shared,
            interfaces: Default::default(),
            poller,
            failures: Default::default(),
            notes: Default::default(),
            epoch: Instant::now(),
        }
    }

    /// The operator's own EC2 client (its credentials, its region).
    pub fn home(&self) -> &Ec2 {
        self.pool.home()
    }

    /// This context bound to `ec2` (an object's account and region).
    pub fn scoped(&self, ec2: Ec2) -> Scoped<'_> {
        Scoped { ctx: self, ec2 }
    }

    /// Time to the next resync: the next multiple of the resync period since start, plus a
    /// little jitter. Healthy objects resync together, so one describe per VPC (shared within
    /// the caches' ttl, which is longer than the jitter) checks all of them for drift; each is
    /// still checked at least once per period.
    pub fn next_resync(&self) -> Duration {
        let period = self.config.resync.as_millis().max(1) as u64;
        let since = self.epoch.elapsed().as_millis() as u64;
        let to_boundary = period - since % period;
        let spread = (period / 10).clamp(1, 2000);
        Duration::from_millis(to_boundary + rand::random::<u64>() % spread)
    }

    pub async fn event(
        &self,
        obj: &BedrockPrivateLink,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let Some(recorder) = &self.recorder else {
            self.notes
                .lock()
                .expect("notes lock")
                .push((reason.to_string(), note));
            return;
        };
        if let Err(e) = recorder
            .publish(type_, reason, action, note, &obj.object_ref(&()))
            .await
        {
            tracing::warn!(error = %e, "could not publish event");
        }
    }

    fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().expect("failures lock");
        let n = f.entry(key.to_string()).or_insert(0);
        *n = (*n + 1).min(8);
        let base = Duration::from_secs(1 << *n).min(Duration::from_secs(300));
        base + Duration::from_millis(rand::random::<u64>() % 1000)
    }

    /// After a resource vanished: at once the first time, with backoff if it keeps happening.
    fn after_vanished(&self, key: &str) -> Duration {
        let first = !self
            .failures
            .lock()
            .expect("failures lock")
            .contains_key(key);
        let backoff = self.backoff(key);
        if first {
            Duration::from_millis(200)
        } else {
            backoff
        }
    }

    /// How soon an object that waits for AWS is looked at again. Its VPC's poller triggers it
    /// when its endpoints change, so this is only a safety net; without the poller (unit
    /// tests), `pending_requeue`.
    fn waiting_requeue(&self) -> Duration {
        if self.poller.started() {
            self.config.resync.min(Duration::from_secs(60))
        } else {
            self.config.pending_requeue
        }
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }
}

/// A `Context` bound to the EC2 client of one object's account and region: every EC2 call of a
/// reconcile goes through `ec2` here (the `Context` itself holds only the pool).
pub struct Scoped<'a> {
    pub ctx: &'a Context,
    pub ec2: Ec2,
}

impl std::ops::Deref for Scoped<'_> {
    type Target = Context;

    fn deref(&self) -> &Context {
        self.ctx
    }
}

/// Entry point for one object.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<BedrockPrivateLink>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let obj = match &guard.0 {
        Ok(obj) => Arc::new(obj.clone()),
        Err(invalid) => {
            // One malformed object must not stop the others; it is reported and skipped.
            tracing::warn!(error = %invalid, "skipping an object that does not match the schema");
            return Ok(Action::await_change());
        }
    };
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let api: Api<BedrockPrivateLink> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(o) => apply(o, &ctx).await,
            Finalizer::Cleanup(o) => cleanup::cleanup(o, &ctx).await,
        }
    })
    .await;
    // A reconcile queued before the finalizer came off works from the cached object and finds
    // it gone when it removes the finalizer again: the object is done with, not failed.
    let result = match result {
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s)))
            if s.code == 404 =>
        {
            Ok(Action::await_change())
        }
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    };
    let label = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.category(),
    };
    ctx.metrics
        .record_reconcile(&label, started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

pub fn error_policy(
    guard: Arc<DeserializeGuard<BedrockPrivateLink>>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = guard
        .0
        .as_ref()
        .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
        .unwrap_or_default();
    match err.category().as_str() {
        "Waiting" => {
            tracing::info!(object = %key, "{err}");
            Action::requeue(ctx.config.pending_requeue)
        }
        "Vanished" => {
            let delay = ctx.after_vanished(&key);
            tracing::info!(object = %key, retry_in_ms = delay.as_millis() as u64, "{err}; observing again");
            Action::requeue(delay)
        }
        _ => {
            let delay = ctx.backoff(&key);
            tracing::warn!(object = %key, error = %err, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
            Action::requeue(delay)
        }
    }
}

/// Why a reconcile stopped before it could conclude.
pub enum Failure {
    /// The spec cannot work: a condition, an event, nothing created.
    Invalid(Invalid),
    /// AWS refused a change for a reason retrying will not fix.
    Rejected(AwsError),
    /// A resource vanished between describe and change: observe again at once.
    Vanished(AwsError),
    /// Throttling, 5xx, the API server: retry with backoff.
    Transient(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Aws(a) => match a.kind() {
                ErrorKind::Terminal => Failure::Rejected(a),
                ErrorKind::Vanished => Failure::Vanished(a),
                _ => Failure::Transient(Error::Aws(a)),
            },
            other => Failure::Transient(other),
        }
    }
}

impl From<Invalid> for Failure {
    fn from(i: Invalid) -> Self {
        Failure::Invalid(i)
    }
}

/// Steps 1 to 4 for one object: everything that involves AWS.
pub struct Converged {
    pub observation: Observation,
    pub valid: Valid,
    pub desired: Desired,
    pub applied: Applied,
}

pub async fn converge(obj: &BedrockPrivateLink, ctx: &Context) -> Result<Converged, Failure> {
    converge_scoped(obj, ctx).await.map(|(_, c)| c)
}

/// `converge`, and the client of the object's account and region (None: refused before one
/// was chosen).
async fn converge_scoped(
    obj: &BedrockPrivateLink,
    ctx: &Context,
) -> Result<(Ec2, Converged), Failure> {
    validate::admit_target(&obj.spec, &ctx.home().region, ctx.home().account.as_deref())?;
    // Tenancy (issues 16, 17): may this namespace use this account and region, this VPC,
    // private DNS, preset and number of endpoints? Decided before any credentials are
    // assumed and before anything in AWS is created or changed.
    let target = match crate::tenancy::gate::check(obj, ctx).await? {
        Ok(target) => target,
        Err(refused) => return Err(refused.into()),
    };
    let ec2 = ctx.pool.client(&target).await;
    let scoped = ctx.scoped(ec2.clone());
    let observation = scoped.observe_object(obj).await?;
    let valid = validate::validate(&obj.spec, &observation.facts)?;
    let desired = plan::desired(&obj.spec, &valid, &Owner::of(obj, &ctx.config.cluster_id));
    let applied = execute::execute(&scoped, obj, &desired, &observation).await?;
    Ok((
        ec2,
        Converged {
            observation,
            valid,
            desired,
            applied,
        },
    ))
}

/// What a reconcile concluded: the verdicts, the status facts (if it got that far) and when to
/// look again.
struct Conclusion {
    verdicts: Vec<Verdict>,
    facts: Option<status::Facts>,
    requeue: Duration,
}

async fn apply(obj: Arc<BedrockPrivateLink>, ctx: &Context) -> Result<Action, Error> {
    // The status as we last wrote it, if the store does not show that write yet (a reconcile
    // queued while the previous one ran sees the object as it was): no second write, no
    // second event.
    let uid = obj.uid().unwrap_or_default();
    let current = match ctx.memory.written(&uid) {
        Some(w) => Some((*w).clone()),
        None => obj.status.clone(),
    };
    let slow = ctx.config.resync.min(Duration::from_secs(60));
    let conclusion = match converge_scoped(&obj, ctx).await {
        Ok((ec2, c)) => conclude(&obj, &ctx.scoped(ec2), c).await?,
        Err(Failure::Invalid(inv)) => Conclusion {
            verdicts: assess::blocked(inv.reason, &inv.message),
            facts: None,
            requeue: slow,
        },
        Err(Failure::Rejected(e)) => Conclusion {
            verdicts: vec![Verdict::new(
                READY,
                false,
                "AwsRejected",
                format!(
                    "AWS refused the change: {}. Fix the spec or the AWS resources it names",
                    e.summary()
                ),
            )],
            facts: None,
            requeue: slow,
        },
        Err(Failure::Vanished(e)) => {
            // What we saw is stale: nothing of it may be used again.
            ctx.memory.changed(&uid);
            return Err(Error::Vanished(e));
        }
        Err(Failure::Transient(e)) => {
            let msg = match &e {
                Error::Aws(a) if a.code == crate::aws::ErrorCode::AssumeRoleFailed => format!(
                    "{}. Check that the role's trust policy admits the operator's own role and that the grant's account.externalId is the one it requires (docs/install.md); retrying with backoff",
                    e.summary()
                ),
                Error::Aws(a) if a.code == crate::aws::ErrorCode::SessionExpired => format!(
                    "{}: the assumed role's session expired before it was refreshed; retrying with backoff",
                    e.summary()
                ),
                _ => format!("{}; retrying with backoff", e.summary()),
            };
            let verdicts = [Verdict::new(READY, false, e.category(), msg)];
            finish(&obj, ctx, current.as_ref(), None, &verdicts).await?;
            return Err(e);
        }
    };
    finish(
        &obj,
        ctx,
        current.as_ref(),
        conclusion.facts,
        &conclusion.verdicts,
    )
    .await?;
    Ok(Action::requeue(conclusion.requeue))
}

/// Steps 5 and 6 after AWS: assess, publish the ConfigMaps, and decide when to look again.
async fn conclude(
    obj: &BedrockPrivateLink,
    ctx: &Scoped<'_>,
    c: Converged,
) -> Result<Conclusion, Error> {
    let region = ctx.ec2.region.clone();
    let account = ctx.ec2.account.clone();
    let mut endpoints = assess::endpoints(&c.desired, &c.applied.endpoints, &region);
    for e in &mut endpoints.statuses {
        e.account = account.clone();
    }
    let published = if endpoints.statuses.is_empty() {
        None
    } else {
        let data = publish::config_data(&region, &endpoints.statuses);
        let p = publish::publish_config(obj, ctx, &data).await?;
        Some(assess::Published {
            name: obj.config_map_name(),
            keys: data.len(),
            copies: p.copies,
            refused: p.refused,
            own_conflict: p.own_conflict,
        })
    };
    let group = assess::group(&c.applied.group);
    let endpoints_verdict = assess::endpoints_verdict(&endpoints, &c.applied);
    let policy = assess::policy(&endpoints);
    let config = assess::config(published.as_ref());
    let path = match ctx.config.path_check {
        Some(_) => Some(check_path(obj, ctx, &endpoints.statuses).await),
        None => None,
    };
    let parts = [&group, &endpoints_verdict, &policy, &config];
    let ready = assess::ready(&parts, c.valid.reduced_resilience.as_deref(), &endpoints);
    if let Some(msg) = &c.valid.reduced_resilience
        && status::ready_of(obj.status.as_ref()).is_none_or(|r| r.reason != "ReducedResilience")
        && ready.status
    {
        ctx.event(
            obj,
            EventType::Warning,
            "ReducedResilience",
            "Reconcile",
            msg.clone(),
        )
        .await;
    }
    let waiting = !endpoints.pending.is_empty() || c.applied.waiting;
    let requeue = requeue_after(
        ctx,
        waiting,
        c.applied.retry_in,
        !endpoints.failed.is_empty(),
    );
    let seen_at = remember_seen(obj, ctx, &c, ready.status);
    watch(obj, ctx, &c, waiting, seen_at);
    let facts = status::Facts {
        account,
        region,
        vpc_id: c.observation.vpc_id.clone(),
        security_group_id: c.applied.group.ids().first().cloned(),
        skipped_subnets: c.valid.skipped.clone(),
        policy_hash: Some(endpoints.policy_hash.clone()),
        endpoints: endpoints.statuses,
        config_map_name: published.as_ref().map(|p| p.name.clone()),
        published_namespaces: published.map(|p| p.copies).unwrap_or_default(),
    };
    let mut verdicts = vec![ready, group, endpoints_verdict, policy, config];
    verdicts.extend(path);
    Ok(Conclusion {
        verdicts,
        facts: Some(facts),
        requeue,
    })
}

/// When to look again: soon while something moves in AWS, after a failed call's delay, within a
/// minute while an endpoint is failed (its replacement's backoff), else at the next resync
/// boundary (or the private path check's period, if shorter).
fn requeue_after(
    ctx: &Scoped<'_>,
    waiting: bool,
    retry_in: Option<Duration>,
    failed: bool,
) -> Duration {
    if waiting {
        ctx.waiting_requeue()
    } else if let Some(d) = retry_in {
        d.max(ctx.config.pending_requeue)
    } else if failed {
        ctx.config.resync.min(Duration::from_secs(60))
    } else {
        let resync = ctx.next_resync();
        ctx.config.path_check.map_or(resync, |p| resync.min(p))
    }
}

/// Remembers what this reconcile saw, updated by what it did, so that the reconcile our own
/// status write is about to trigger needs no describe; returns when that view was taken (now,
/// if this reconcile changed something in AWS).
fn remember_seen(
    obj: &BedrockPrivateLink,
    ctx: &Scoped<'_>,
    c: &Converged,
    ready: bool,
) -> Instant {
    let uid = obj.uid().unwrap_or_default();
    let seen_at = match ctx.memory.changed_at(&uid) {
        Some(at) if at >= c.observation.taken => Instant::now(),
        _ => c.observation.endpoints_taken,
    };
    if !c.observation.steady {
        let seen = SeenEndpoints {
            owned: c.applied.endpoints.clone(),
            foreign: c.observation.facts.foreign_endpoints.clone(),
            ready,
        };
        ctx.memory
            .remember_endpoints(&uid, obj.metadata.generation, seen_at, seen);
    }
    seen_at
}

/// The private path check (path.rs), with an Event when its outcome changes.
async fn check_path(
    obj: &BedrockPrivateLink,
    ctx: &Scoped<'_>,
    statuses: &[crate::api::EndpointStatus],
) -> Verdict {
    let verdict = path::check(&ctx.ec2, &ctx.interfaces, statuses).await;
    let written = ctx.memory.written(&obj.uid().unwrap_or_default());
    let current = written.as_deref().or(obj.status.as_ref());
    let previous =
        current.and_then(|s| s.conditions.iter().find(|c| c.type_ == path::PRIVATE_PATH));
    let changed = previous.is_none_or(|p| p.reason != verdict.reason);
    // Waiting for the endpoint is not news; a verified path (again) or a broken one is.
    if changed && verdict.reason != path::NOT_AVAILABLE && verdict.reason != path::ADDRESSES_UNKNOWN
    {
        let type_ = if verdict.status {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let reason = if verdict.status {
            "PrivatePathVerified"
        } else {
            verdict.reason.as_str()
        };
        ctx.event(obj, type_, reason, "VerifyPath", verdict.message.clone())
            .await;
    }
    verdict
}

/// Hands what this reconcile concluded to the VPC's poller, which triggers the object again
/// when its endpoints change (turn available, fail, vanish, drift).
fn watch(obj: &BedrockPrivateLink, ctx: &Scoped<'_>, c: &Converged, waiting: bool, since: Instant) {
    let uid = obj.uid().unwrap_or_default();
    let (name, namespace) = (obj.name_any(), obj.namespace().unwrap_or_default());
    ctx.poller.register(
        &uid,
        (&name, &namespace),
        &ctx.ec2,
        &c.observation.vpc_id,
        &c.applied.endpoints,
        waiting,
        since,
    );
}

/// Writes status (only if it changed) and tells the story in events when Ready changes.
async fn finish(
    obj: &BedrockPrivateLink,
    ctx: &Context,
    current: Option<&BedrockPrivateLinkStatus>,
    facts: Option<status::Facts>,
    verdicts: &[Verdict],
) -> Result<(), Error> {
    let new_status = status::build(
        current,
        facts,
        verdicts,
        obj.metadata.generation,
        jiff::Timestamp::now(),
    );
    let previous_ready = status::ready_of(current);
    if let Some(r) = status::ready_of(Some(&new_status)) {
        let changed = previous_ready.is_none_or(|p| p.status != r.status || p.reason != r.reason);
        if changed {
            // Waiting for AWS is normal; anything else not Ready needs a person.
            let normal = r.status == "True" || r.reason == "EndpointPending";
            let type_ = if normal {
                EventType::Normal
            } else {
                EventType::Warning
            };
            let reason = if r.status == "True" {
                "Ready"
            } else {
                r.reason.as_str()
            };
            ctx.event(obj, type_, reason, "Reconcile", r.message.clone())
                .await;
        }
        ctx.metrics
            .set_ready(&obj.uid().unwrap_or_default(), Some((&r.status, &r.reason)));
    }
    if status::differs(current, &new_status) {
        let api: Api<BedrockPrivateLink> =
            Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        let patch = json!({
            "apiVersion": "bedrock.privatelink.io/v1alpha1",
            "kind": "BedrockPrivateLink",
            "status": new_status,
        });
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Kube)?;
        ctx.memory
            .remember_written(&obj.uid().unwrap_or_default(), new_status);
    }
    Ok(())
}
