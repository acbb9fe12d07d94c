//! The reconcile pipeline: observe -> validate -> desired -> diff -> apply -> status.
//! `finalizer()` is the one top-level action; Apply and Cleanup are both idempotent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

use crate::api::{BedrockPrivateLink, BedrockPrivateLinkStatus, DeletionPolicy, FINALIZER};
use crate::aws::{
    AwsError, Ec2, EndpointFacts, GroupFacts, ServiceFacts, TAG_OWNER_UID, VpcFacts, filter,
};
use crate::publish;
use crate::telemetry::Metrics;

pub mod cache;
pub mod events;
pub mod observe;
pub mod plan;
pub mod status;
pub mod validate;

use cache::TtlCache;
use plan::{EndpointAction, Owner};
use status::{
    CONFIG_PUBLISHED, ENDPOINTS_READY, POLICY_APPLIED, READY, SECURITY_GROUP_READY, Verdict,
};
use validate::Invalid;

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
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Stable label for metrics and event reasons.
    pub fn category(&self) -> String {
        match self {
            Error::Kube(_) => "KubeError".into(),
            Error::Aws(e) => format!("Aws{}", e.code.split('.').next().unwrap_or("Error")),
            Error::Waiting(_) => "Waiting".into(),
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => "FinalizerError".into(),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub resync: Duration,
    pub pending_requeue: Duration,
    pub default_vpc_id: Option<String>,
    pub watch_namespaces: Vec<String>,
    pub concurrency: u16,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(300),
            pending_requeue: Duration::from_secs(2),
            default_vpc_id: None,
            watch_namespaces: Vec::new(),
            concurrency: 8,
        }
    }
}

type Cached<K, V> = Mutex<Option<(Instant, K, V)>>;

/// Shared EC2 answers (see cache.rs). Steady-state resyncs use them for up to the ttl; other
/// reconciles reuse VPC and subnet answers for up to `FRESH` (a burst of creates shares them),
/// and read endpoints and groups fresh after a spec change.
pub struct Caches {
    pub vpcs: TtlCache<(String, bool), Option<VpcFacts>>,
    pub subnets: TtlCache<String, Vec<crate::aws::SubnetFacts>>,
    /// Every endpoint in a VPC, ours and others'.
    pub endpoints: TtlCache<String, Arc<Vec<EndpointFacts>>>,
    /// Every group we own in a VPC.
    pub groups: TtlCache<String, Arc<Vec<GroupFacts>>>,
    /// By object uid: its endpoints (and, with private DNS, the VPC's others) as a reconcile
    /// that changed nothing last saw them, so the resync its own status write triggers needs
    /// no describe.
    pub seen_endpoints: TtlCache<String, Arc<SeenEndpoints>>,
    /// By object uid: objects whose AWS resources cleanup removed.
    pub cleaned: TtlCache<String, ()>,
    /// By object uid: the status we last wrote.
    pub written: TtlCache<String, Arc<BedrockPrivateLinkStatus>>,
    /// By object uid: its groups as we last saw or left them.
    pub seen_groups: TtlCache<String, Arc<Vec<GroupFacts>>>,
    /// By object uid: when we last changed its AWS resources. Cached answers older than that
    /// are not used for it.
    changed: std::sync::Mutex<HashMap<String, Instant>>,
    /// The region's Bedrock endpoint services and their zones (shared by every reconcile).
    pub services: TtlCache<String, BTreeMap<String, ServiceFacts>>,
}

impl Caches {
    fn new(config: &Config) -> Self {
        // Drift is still found within resync + ttl.
        let ttl = (config.resync / 5).clamp(Duration::from_millis(500), Duration::from_secs(60));
        Self {
            vpcs: TtlCache::new(ttl),
            subnets: TtlCache::new(ttl),
            endpoints: TtlCache::new(ttl),
            groups: TtlCache::new(ttl),
            seen_endpoints: TtlCache::new(ttl),
            seen_groups: TtlCache::new(ttl),
            written: TtlCache::new(ttl),
            cleaned: TtlCache::new(ttl),
            changed: Default::default(),
            services: TtlCache::new(ttl),
        }
    }

    /// We changed (or may have changed) this object's resources in AWS just now.
    fn mark_changed(&self, uid: &str) {
        let now = Instant::now();
        let mut changed = self.changed.lock().expect("changed lock");
        // Older marks are moot: every cached answer from before them has expired.
        let ttl = self.endpoints.ttl();
        changed.retain(|_, at| now.duration_since(*at) < ttl);
        changed.insert(uid.to_string(), now);
    }

    fn changed_at(&self, uid: &str) -> Option<Instant> {
        self.changed.lock().expect("changed lock").get(uid).copied()
    }

    /// Frees expired answers: after a resync sweep nothing else would until the next one.
    async fn prune(&self) {
        self.vpcs.prune().await;
        self.subnets.prune().await;
        self.endpoints.prune().await;
        self.groups.prune().await;
        self.seen_endpoints.prune().await;
        self.seen_groups.prune().await;
        self.written.prune().await;
        self.cleaned.prune().await;
        let ttl = self.endpoints.ttl();
        self.changed
            .lock()
            .expect("changed lock")
            .retain(|_, at| at.elapsed() < ttl);
    }
}

/// How long a reconcile that is not a steady-state resync may reuse VPC and subnet answers
/// (and, while settling, the group it just configured).
const FRESH: Duration = Duration::from_secs(3);

/// An object's endpoints as last seen, and the VPC's other endpoints when they matter.
#[derive(Debug, Default)]
pub struct SeenEndpoints {
    pub owned: Vec<EndpointFacts>,
    pub foreign: Vec<EndpointFacts>,
    /// The generation reconciled, and whether it ended Ready.
    pub generation: Option<i64>,
    pub ready: bool,
}

pub struct Context {
    pub client: Client,
    pub ec2: Ec2,
    pub recorder: events::Recorder,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    pub config_maps: Option<Store<ConfigMap>>,
    /// Every Namespace's metadata (set by `run`): where copies may go.
    pub namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
    /// Tenancy (issue 16): the grant watch and object stores the tenancy gate reads.
    pub tenancy: crate::tenancy::gate::Index,
    network_cache: Cached<Vec<String>, observe::ClusterNetwork>,
    pub caches: Caches,
    failures: std::sync::Mutex<HashMap<String, u32>>,
    /// Start of the resync grid (see `next_resync`).
    epoch: Instant,
}

impl Context {
    pub fn new(client: Client, ec2: Ec2, metrics: Arc<Metrics>, config: Config) -> Self {
        let config_for_caches = config.clone();
        Self {
            recorder: events::Recorder::new(
                client.clone(),
                MANAGER,
                std::env::var("POD_NAME").ok(),
            ),
            client,
            ec2,
            metrics,
            config,
            config_maps: None,
            namespaces: None,
            tenancy: Default::default(),
            network_cache: Mutex::default(),
            caches: Caches::new(&config_for_caches),
            failures: Default::default(),
            epoch: Instant::now(),
        }
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

    async fn event(
        &self,
        obj: &BedrockPrivateLink,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if let Err(e) = self
            .recorder
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

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }
}

fn owner_of(obj: &BedrockPrivateLink) -> Owner {
    Owner {
        uid: obj.uid().unwrap_or_default(),
        name: obj.name_any(),
        namespace: obj.namespace().unwrap_or_default(),
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
            Finalizer::Cleanup(o) => cleanup(o, &ctx).await,
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
    if err.category() == "Waiting" {
        tracing::info!(object = %key, "{err}");
        return Action::requeue(ctx.config.pending_requeue);
    }
    let delay = ctx.backoff(&key);
    tracing::warn!(object = %key, error = %err, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

/// What Apply concluded, before it becomes status.
struct Outcome {
    verdicts: Vec<Verdict>,
    requeue: Duration,
}

async fn apply(obj: Arc<BedrockPrivateLink>, ctx: &Context) -> Result<Action, Error> {
    // The status as we last wrote it, if the store does not show that write yet (a reconcile
    // queued while the previous one ran sees the object as it was): no second write, no
    // second event.
    let uid = obj.uid().unwrap_or_default();
    let current = match ctx
        .caches
        .written
        .get_fresh(&uid, Duration::MAX, None)
        .await
    {
        Some(w) => Some((*w).clone()),
        None => obj.status.clone(),
    };
    let previous_ready = status::ready_of(current.as_ref()).cloned();
    let mut new_status = current.clone().unwrap_or_default();
    let outcome = match converge(&obj, ctx, &mut new_status).await {
        Ok(o) => o,
        Err(Failure::Invalid(inv)) => {
            new_status
                .region
                .get_or_insert_with(|| ctx.ec2.region.clone());
            // The parts were not checked against a spec that cannot work; say so rather than
            // leave an earlier True standing.
            let blocked =
                |t| Verdict::new(t, false, "Blocked", format!("not checked: {}", inv.reason));
            let verdicts = vec![
                blocked(SECURITY_GROUP_READY),
                blocked(ENDPOINTS_READY),
                blocked(POLICY_APPLIED),
                blocked(CONFIG_PUBLISHED),
                Verdict::new(READY, false, inv.reason, inv.message),
            ];
            Outcome {
                verdicts,
                requeue: ctx.config.resync.min(Duration::from_secs(60)),
            }
        }
        Err(Failure::Rejected(e)) => Outcome {
            verdicts: vec![Verdict::new(
                READY,
                false,
                "AwsRejected",
                format!("AWS refused the change: {e}. Fix the spec or the AWS resources it names"),
            )],
            requeue: ctx.config.resync.min(Duration::from_secs(60)),
        },
        Err(Failure::Transient(e)) => {
            let msg = format!("{e}; retrying with backoff");
            let verdict = Verdict::new(READY, false, e.category(), msg);
            finish(
                &obj,
                ctx,
                current.as_ref(),
                new_status,
                &[verdict],
                previous_ready.as_ref(),
            )
            .await?;
            return Err(e);
        }
    };
    finish(
        &obj,
        ctx,
        current.as_ref(),
        new_status,
        &outcome.verdicts,
        previous_ready.as_ref(),
    )
    .await?;
    Ok(Action::requeue(outcome.requeue))
}

/// Writes status (only if it changed) and tells the story in events when Ready changes.
async fn finish(
    obj: &BedrockPrivateLink,
    ctx: &Context,
    current: Option<&BedrockPrivateLinkStatus>,
    mut new_status: BedrockPrivateLinkStatus,
    verdicts: &[Verdict],
    previous_ready: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> Result<(), Error> {
    let generation = obj.metadata.generation;
    new_status.observed_generation = generation;
    new_status.conditions = status::conditions(
        &new_status.conditions,
        verdicts,
        generation,
        jiff::Timestamp::now(),
    );
    let ready = status::ready_of(Some(&new_status)).cloned();
    if let Some(r) = &ready {
        let changed = previous_ready.is_none_or(|p| p.status != r.status || p.reason != r.reason);
        if changed {
            // Waiting for AWS is normal; anything else not Ready needs a person.
            let (type_, action) = if r.status == "True" || r.reason == "EndpointPending" {
                (EventType::Normal, "Reconcile")
            } else {
                (EventType::Warning, "Reconcile")
            };
            let reason = if r.status == "True" {
                "Ready".to_string()
            } else {
                r.reason.clone()
            };
            ctx.event(obj, type_, &reason, action, r.message.clone())
                .await;
        }
        ctx.metrics
            .set_ready(&obj.uid().unwrap_or_default(), Some(&r.status));
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
        ctx.caches
            .written
            .put(obj.uid().unwrap_or_default(), Arc::new(new_status))
            .await;
    }
    Ok(())
}

enum Failure {
    /// The spec cannot work: a condition, an event, nothing created.
    Invalid(Invalid),
    /// AWS refused a change for a reason retrying will not fix.
    Rejected(AwsError),
    /// Throttling, 5xx, the API server: retry with backoff.
    Transient(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Aws(a) if is_permanent(&a) => Failure::Rejected(a),
            other => Failure::Transient(other),
        }
    }
}

impl From<Invalid> for Failure {
    fn from(i: Invalid) -> Self {
        Failure::Invalid(i)
    }
}

fn is_permanent(e: &AwsError) -> bool {
    e.code.starts_with("Invalid")
        || matches!(
            e.code.as_str(),
            "DuplicateSubnetsInSameZone"
                | "IdempotentParameterMismatch"
                | "UnauthorizedOperation"
                | "VpcEndpointLimitExceeded"
                | "Unsuccessful"
        )
}

async fn converge(
    obj: &BedrockPrivateLink,
    ctx: &Context,
    out: &mut BedrockPrivateLinkStatus,
) -> Result<Outcome, Failure> {
    let spec = &obj.spec;
    let owner = owner_of(obj);
    let region = ctx.ec2.region.clone();
    out.region = Some(region.clone());

    // Region first: nothing else is worth asking if the object wants another region.
    if let Some(r) = &spec.region
        && *r != region
    {
        let obs = validate::Observed {
            operator_region: region.clone(),
            ..Default::default()
        };
        return Err(validate::validate(spec, &obs)
            .expect_err("region mismatch")
            .into());
    }

    // Tenancy (issue 16): may this namespace ask for this VPC, private DNS, preset and number
    // of endpoints? Decided before anything in AWS is created or changed.
    if let Some(refused) = crate::tenancy::gate::check(obj, ctx).await? {
        return Err(refused.into());
    }

    // The VPC: spec, operator default, or the cluster's, from its Nodes.
    let needs_nodes = spec.vpc_id.is_none() && ctx.config.default_vpc_id.is_none()
        || spec
            .subnets
            .as_ref()
            .is_none_or(|s| s.ids.is_none() && s.selector.is_none());
    let network = if needs_nodes {
        ctx.cluster_network().await?
    } else {
        Default::default()
    };
    let vpc_id = match (&spec.vpc_id, &ctx.config.default_vpc_id) {
        (Some(v), _) | (None, Some(v)) => v.clone(),
        (None, None) => match network.vpc_ids.len() {
            1 => network.vpc_ids.iter().next().cloned().unwrap_or_default(),
            0 => {
                return Err(Invalid {
                    reason: "VpcDiscoveryFailed",
                    message: "no Node has an AWS providerID (aws:///<zone>/<instance-id>) to find the cluster's VPC from; set spec.vpcId or the operator's --default-vpc-id".into(),
                }
                .into());
            }
            _ => {
                return Err(Invalid {
                    reason: "MultipleVpcs",
                    message: format!(
                        "the cluster's Nodes are in several VPCs ({}); set spec.vpcId to choose one",
                        network.vpc_ids.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                }
                .into());
            }
        },
    };
    out.vpc_id = Some(vpc_id.clone());

    // A resync of an object that is Ready at its current generation only checks for drift: it
    // may use answers shared with the other objects of its VPC. Ready by its status, or by what
    // a reconcile of ours concluded moments ago: the store may not show that status write yet
    // when, say, the ConfigMap we published queues the object again.
    let concluded = ctx
        .caches
        .seen_endpoints
        .get_fresh(&owner.uid, Duration::MAX, ctx.caches.changed_at(&owner.uid))
        .await
        .is_some_and(|s| s.ready && s.generation == obj.metadata.generation);
    let steady = is_steady(obj) || concluded;
    // No spec change since our last status write (e.g. waiting for an endpoint): our own
    // recent writes to the group are as good as a describe.
    let settling = obj
        .status
        .as_ref()
        .is_some_and(|s| s.observed_generation == obj.metadata.generation);
    let mut observed = ctx
        .observe_vpc(spec, &vpc_id, &network.subnet_ids, steady)
        .await?;
    let seen = if observed.vpc.is_some() {
        ctx.endpoints_in_vpc(&owner.uid, &vpc_id, spec.private_dns, steady)
            .await?
    } else {
        Default::default()
    };
    let mut owned = seen.owned.clone();
    observed.foreign_endpoints = seen.foreign.clone();

    let valid = validate::validate(spec, &observed)?;
    out.skipped_subnets = valid.skipped.clone();
    let desired = plan::desired(spec, &valid, &owner);

    // Security group first: endpoints need its id.
    let owned_groups = ctx.owned_groups(&owner, &vpc_id, steady, settling).await?;
    let (group_ids, group_verdict) = match &desired.group {
        Some(dg) => {
            let id = ensure_group(obj, ctx, dg, &owned_groups).await?;
            out.security_group_id = Some(id.clone());
            if !steady && owned_groups.iter().all(|g| g.id == id) {
                // The group now has exactly the desired rules and no egress.
                let now = GroupFacts {
                    id: id.clone(),
                    name: dg.name.clone(),
                    vpc_id: dg.vpc_id.clone(),
                    ingress: dg.ingress.clone(),
                    egress: Default::default(),
                    tags: dg.tags.clone(),
                };
                ctx.caches
                    .seen_groups
                    .put(owner.uid.clone(), Arc::new(vec![now]))
                    .await;
            }
            let sources: Vec<String> = dg.ingress.iter().map(|r| r.to_string()).collect();
            (
                vec![id.clone()],
                Verdict::new(
                    SECURITY_GROUP_READY,
                    true,
                    "Managed",
                    format!("{id} admits only {}; no egress", sources.join(", ")),
                ),
            )
        }
        None => {
            out.security_group_id = desired.existing_group_ids.first().cloned();
            (
                desired.existing_group_ids.clone(),
                Verdict::new(
                    SECURITY_GROUP_READY,
                    true,
                    "Existing",
                    format!(
                        "using existing groups {}",
                        desired.existing_group_ids.join(", ")
                    ),
                ),
            )
        }
    };

    // Endpoints.
    let actions = plan::plan_endpoints(&desired, &owned, &group_ids, &owner);
    let mut changed = false;
    for action in &actions {
        match action {
            EndpointAction::Create(req) => {
                let mut req = req.clone();
                let mut created = ctx.ec2.create_endpoint(&req).await.map_err(Error::Aws)?;
                // The token still names an endpoint that is gone (deleted out of band, say):
                // follow the token chain to a live one.
                for _ in 0..16 {
                    let dead = created.is_deleted_or_deleting()
                        || owned
                            .iter()
                            .any(|e| e.id == created.id && e.is_deleted_or_deleting());
                    if !dead {
                        break;
                    }
                    req.client_token = plan::successor_token(&req.client_token, &created.id);
                    created = ctx.ec2.create_endpoint(&req).await.map_err(Error::Aws)?;
                }
                tracing::info!(endpoint = %created.id, service = %req.service_name, "created endpoint");
                ctx.event(
                    obj,
                    EventType::Normal,
                    "EndpointCreated",
                    "Create",
                    format!(
                        "created {} for {} in {}",
                        created.id,
                        req.service_name,
                        req.subnet_ids.join(", ")
                    ),
                )
                .await;
                owned.retain(|e| e.id != created.id);
                owned.push(created);
            }
            EndpointAction::Modify(m) => {
                ctx.ec2.modify_endpoint(m).await.map_err(Error::Aws)?;
                let mut what = Vec::new();
                if !m.add_subnets.is_empty() || !m.remove_subnets.is_empty() {
                    what.push(format!(
                        "subnets +{:?} -{:?}",
                        m.add_subnets, m.remove_subnets
                    ));
                }
                if !m.add_groups.is_empty() || !m.remove_groups.is_empty() {
                    what.push(format!("groups +{:?} -{:?}", m.add_groups, m.remove_groups));
                }
                if m.policy.is_some() {
                    what.push("policy".into());
                }
                if let Some(p) = m.private_dns {
                    what.push(format!("private DNS {}", if p { "on" } else { "off" }));
                }
                tracing::info!(endpoint = %m.id, changes = %what.join("; "), "updated endpoint");
                ctx.event(
                    obj,
                    EventType::Normal,
                    "EndpointUpdated",
                    "Update",
                    format!("updated {}: {}", m.id, what.join("; ")),
                )
                .await;
                changed = true;
            }
            EndpointAction::Delete { id, reason } => {
                ctx.ec2
                    .delete_endpoints(std::slice::from_ref(id))
                    .await
                    .map_err(Error::Aws)?;
                tracing::info!(endpoint = %id, %reason, "deleted endpoint");
                ctx.event(
                    obj,
                    EventType::Normal,
                    "EndpointDeleted",
                    "Delete",
                    format!("deleted {id}: {reason}"),
                )
                .await;
                changed = true;
            }
            EndpointAction::Wait { .. } => {}
        }
    }
    if !actions
        .iter()
        .all(|a| matches!(a, EndpointAction::Wait { .. }))
    {
        ctx.caches.mark_changed(&owner.uid);
    }
    if changed {
        owned = ctx.owned_endpoints(&owner.uid).await?;
    }

    // A managed group left over from before the spec named existing groups: remove it once
    // no endpoint holds it.
    for g in owned_groups
        .iter()
        .filter(|g| Some(&g.id) != group_ids.first() || desired.group.is_none())
    {
        ctx.caches.mark_changed(&owner.uid);
        ctx.caches.seen_groups.invalidate(&owner.uid).await;
        match ctx.ec2.delete_security_group(&g.id).await {
            Ok(()) => {
                ctx.event(
                    obj,
                    EventType::Normal,
                    "SecurityGroupDeleted",
                    "Delete",
                    format!("deleted {} (no longer used)", g.id),
                )
                .await
            }
            Err(e) if e.is("DependencyViolation") || e.is("InvalidGroup.NotFound") => {}
            Err(e) => return Err(Error::Aws(e).into()),
        }
    }

    // Status of each desired endpoint.
    let mut endpoint_statuses = Vec::new();
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    let mut policy_ok = true;
    for d in &desired.endpoints {
        let current = owned
            .iter()
            .filter(|e| e.service_name == d.service_name && !e.is_deleted_or_deleting())
            .min_by_key(|e| (!e.state_is("available"), e.id.clone()));
        let Some(e) = current else {
            pending.push(format!("{} has no endpoint yet", d.service));
            continue;
        };
        endpoint_statuses.push(status::endpoint_status(d.service, &region, e));
        match e.state.to_ascii_lowercase().as_str() {
            "available" => {}
            "pending" | "pendingacceptance" => pending.push(format!("{} is {}", e.id, e.state)),
            other => failed.push(format!(
                "{} is {other}{}",
                e.id,
                e.last_error
                    .as_ref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default()
            )),
        }
        if !e
            .policy
            .as_ref()
            .is_some_and(|p| crate::policy::equivalent(p, &d.policy))
        {
            policy_ok = false;
        }
    }
    out.endpoints = endpoint_statuses;
    // One fingerprint for what every endpoint should carry.
    let policies: Vec<&serde_json::Value> = desired.endpoints.iter().map(|d| &d.policy).collect();
    out.policy_hash = Some(match policies.as_slice() {
        [one] => crate::policy::hash(one),
        many => crate::policy::hash(&serde_json::json!(many)),
    });

    let endpoints_verdict = if !failed.is_empty() {
        Verdict::new(
            ENDPOINTS_READY,
            false,
            "EndpointFailed",
            format!(
                "{}; AWS will not recover it by itself: check the error, then delete and re-create the object or fix the cause",
                failed.join("; ")
            ),
        )
    } else if !pending.is_empty() {
        Verdict::new(
            ENDPOINTS_READY,
            false,
            "EndpointPending",
            format!("waiting for AWS: {}", pending.join("; ")),
        )
    } else {
        let ids: Vec<&str> = out
            .endpoints
            .iter()
            .map(|e| e.vpc_endpoint_id.as_str())
            .collect();
        Verdict::new(
            ENDPOINTS_READY,
            true,
            "Available",
            format!("{} available", ids.join(", ")),
        )
    };
    let policy_verdict = if policy_ok {
        Verdict::new(
            POLICY_APPLIED,
            true,
            "Applied",
            format!(
                "policy {} applied to every endpoint",
                out.policy_hash.clone().unwrap_or_default()
            ),
        )
    } else {
        Verdict::new(
            POLICY_APPLIED,
            false,
            "PolicyPending",
            "the endpoint policy is being applied",
        )
    };

    // Publish what workloads need as soon as the DNS names are known.
    let config_verdict = if out.endpoints.is_empty() {
        Verdict::new(
            CONFIG_PUBLISHED,
            false,
            "NoEndpoints",
            "nothing to publish yet",
        )
    } else {
        let data = publish::config_data(&region, &out.endpoints);
        let name = obj.config_map_name();
        let publication = publish_config(obj, ctx, &data)
            .await
            .map_err(Failure::Transient)?;
        out.published_namespaces = publication.copies.clone();
        out.config_map_name = Some(name.clone());
        let copies = if publication.copies.is_empty() {
            String::new()
        } else {
            format!(" (copies in {})", publication.copies.join(", "))
        };
        let refused = if publication.refused.is_empty() {
            String::new()
        } else {
            format!("; not published: {}", publication.refused.join("; "))
        };
        match publication.own_conflict {
            Some(conflict) => Verdict::new(CONFIG_PUBLISHED, false, "ConfigMapConflict", conflict),
            None => Verdict::new(
                CONFIG_PUBLISHED,
                true,
                "Published",
                format!(
                    "ConfigMap {name} holds {} keys{copies}; use it with envFrom{refused}",
                    data.len()
                ),
            ),
        }
    };

    let parts = [
        &group_verdict,
        &endpoints_verdict,
        &policy_verdict,
        &config_verdict,
    ];
    let ready = match parts.iter().find(|v| !v.status) {
        Some(v) => Verdict::new(READY, false, v.reason.clone(), v.message.clone()),
        None => match &valid.reduced_resilience {
            Some(msg) => Verdict::new(READY, true, "ReducedResilience", msg.clone()),
            None => {
                let dns: Vec<String> = out
                    .endpoints
                    .iter()
                    .map(|e| {
                        e.private_dns_name
                            .clone()
                            .or_else(|| e.dns_names.first().cloned())
                            .unwrap_or_default()
                    })
                    .collect();
                Verdict::new(
                    READY,
                    true,
                    "Ready",
                    format!("private access to Bedrock through {}", dns.join(", ")),
                )
            }
        },
    };
    if let Some(msg) = &valid.reduced_resilience
        && status::ready_of(obj.status.as_ref()).is_none_or(|c| c.reason != "ReducedResilience")
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
    let requeue = if !pending.is_empty()
        || actions
            .iter()
            .any(|a| matches!(a, EndpointAction::Wait { .. }))
    {
        ctx.config.pending_requeue
    } else if !failed.is_empty() {
        ctx.config.resync.min(Duration::from_secs(60))
    } else {
        ctx.next_resync()
    };
    // What we saw, updated by what we did (a created endpoint as the create answered it, or a
    // fresh describe after other changes): the resync our own status write is about to
    // trigger needs no describe.
    if !steady {
        let now = SeenEndpoints {
            owned,
            foreign: std::mem::take(&mut observed.foreign_endpoints),
            generation: obj.metadata.generation,
            ready: ready.status,
        };
        ctx.caches
            .seen_endpoints
            .put(owner.uid.clone(), Arc::new(now))
            .await;
    }
    Ok(Outcome {
        verdicts: vec![
            ready,
            group_verdict,
            endpoints_verdict,
            policy_verdict,
            config_verdict,
        ],
        requeue,
    })
}

/// Ready at the generation it was last reconciled at: a resync, not a change.
fn is_steady(obj: &BedrockPrivateLink) -> bool {
    let Some(status) = obj.status.as_ref() else {
        return false;
    };
    status.observed_generation == obj.metadata.generation
        && status::ready_of(Some(status)).is_some_and(|c| c.status == "True")
}

impl Context {
    async fn observe_vpc(
        &self,
        spec: &crate::api::BedrockPrivateLinkSpec,
        vpc_id: &str,
        node_subnets: &BTreeSet<String>,
        steady: bool,
    ) -> Result<validate::Observed, Error> {
        let key = (vpc_id.to_string(), spec.private_dns);
        let fetch = || async {
            self.ec2
                .describe_vpc(vpc_id, spec.private_dns)
                .await
                .map_err(Error::Aws)
        };
        // VPCs hardly change: every reconcile shares one answer for a while (`FRESH` unless
        // this is a steady-state resync), so a burst of creates asks once.
        let max_age = if steady { Duration::MAX } else { FRESH };
        let vpc = self
            .caches
            .vpcs
            .get_or_fetch_fresh(&key, max_age, None, fetch)
            .await?;
        let mut obs = self
            .observe(spec, vpc_id, node_subnets, vpc, steady)
            .await?;
        obs.vpc_id = vpc_id.to_string();
        Ok(obs)
    }

    /// The object's endpoints in the VPC and, with private DNS, the VPC's other endpoints (only
    /// one endpoint per service may have private DNS). A steady-state resync uses what a
    /// reconcile of it that changed nothing saw within the ttl, else the VPC's shared answer;
    /// others ask AWS for just their own endpoints.
    async fn endpoints_in_vpc(
        &self,
        uid: &str,
        vpc_id: &str,
        private_dns: bool,
        steady: bool,
    ) -> Result<Arc<SeenEndpoints>, Error> {
        let split = |all: &[EndpointFacts]| {
            let mut seen = SeenEndpoints::default();
            for e in all.iter().filter(|e| e.vpc_id == vpc_id) {
                if e.tags.get(TAG_OWNER_UID).map(String::as_str) == Some(uid) {
                    seen.owned.push(e.clone());
                } else if private_dns {
                    seen.foreign.push(e.clone());
                }
            }
            seen
        };
        if steady {
            let changed = self.caches.changed_at(uid);
            let key = uid.to_string();
            if let Some(seen) = self
                .caches
                .seen_endpoints
                .get_fresh(&key, Duration::MAX, changed)
                .await
            {
                return Ok(seen);
            }
            let all = self
                .caches
                .endpoints
                .get_or_fetch_fresh(&vpc_id.to_string(), Duration::MAX, changed, || async {
                    self.ec2
                        .describe_endpoints(vec![filter("vpc-id", [vpc_id])])
                        .await
                        .map(Arc::new)
                        .map_err(Error::Aws)
                })
                .await?;
            return Ok(Arc::new(split(&all)));
        }
        // Without private DNS only ours matter: one narrow filter (the VPC is checked below).
        let filters = if private_dns {
            vec![filter("vpc-id", [vpc_id])]
        } else {
            vec![filter(&format!("tag:{TAG_OWNER_UID}"), [uid])]
        };
        let all = self
            .ec2
            .describe_endpoints(filters)
            .await
            .map_err(Error::Aws)?;
        Ok(Arc::new(split(&all)))
    }

    /// The object's groups. A steady-state resync, or a reconcile with no spec change since
    /// the last one (waiting for an endpoint, say), uses what we last saw or left; a
    /// steady-state resync otherwise shares one describe per VPC.
    async fn owned_groups(
        &self,
        owner: &Owner,
        vpc_id: &str,
        steady: bool,
        settling: bool,
    ) -> Result<Vec<GroupFacts>, Error> {
        let uid = owner.uid.as_str();
        if steady || settling {
            let max_age = if steady { Duration::MAX } else { FRESH };
            if let Some(g) = self
                .caches
                .seen_groups
                .get_fresh(&uid.to_string(), max_age, None)
                .await
            {
                return Ok(g.to_vec());
            }
        }
        if steady {
            let changed = self.caches.changed_at(uid);
            let all = self
                .caches
                .groups
                .get_or_fetch_fresh(&vpc_id.to_string(), Duration::MAX, changed, || async {
                    // Every group we name (bpl-<uid>); the owner tag is checked below.
                    self.ec2
                        .describe_security_groups(vec![
                            filter("vpc-id", [vpc_id]),
                            filter("group-name", [plan::GROUP_NAME_PATTERN]),
                        ])
                        .await
                        .map(Arc::new)
                        .map_err(Error::Aws)
                })
                .await?;
            return Ok(all
                .iter()
                .filter(|g| g.tags.get(TAG_OWNER_UID).map(String::as_str) == Some(uid))
                .cloned()
                .collect());
        }
        self.groups_of(owner).await
    }

    /// The object's groups. We name ours `bpl-<uid>` and tag them with the uid; asking by that
    /// exact name is the narrowest filter (the emulator evaluates a tag filter by scanning
    /// every tag of every resource for each group, which grows with the square of the
    /// objects). Only groups that carry our owner tag count.
    async fn groups_of(&self, owner: &Owner) -> Result<Vec<GroupFacts>, Error> {
        let found = self
            .ec2
            .describe_security_groups(vec![filter("group-name", [owner.group_name().as_str()])])
            .await
            .map_err(Error::Aws)?;
        Ok(found
            .into_iter()
            .filter(|g| g.tags.get(TAG_OWNER_UID) == Some(&owner.uid))
            .collect())
    }
}

/// A rule change AWS refuses because it is already in place (a retry after a lost answer)
/// counts as done.
fn already_done(result: crate::aws::AwsResult<()>, code: &str) -> Result<(), Error> {
    match result {
        Err(e) if e.is(code) => Ok(()),
        other => other.map_err(Error::Aws),
    }
}

/// The managed group exists with exactly the desired rules; returns its id.
async fn ensure_group(
    obj: &BedrockPrivateLink,
    ctx: &Context,
    dg: &plan::DesiredGroup,
    owned: &[GroupFacts],
) -> Result<String, Failure> {
    let current = owned
        .iter()
        .find(|g| g.vpc_id == dg.vpc_id && g.name == dg.name)
        .cloned();
    let current = match current {
        Some(g) => g,
        None => {
            let id = match ctx
                .ec2
                .create_security_group(&dg.name, &dg.description, &dg.vpc_id, &dg.tags)
                .await
            {
                Ok(id) => {
                    ctx.event(
                        obj,
                        EventType::Normal,
                        "SecurityGroupCreated",
                        "Create",
                        format!("created {id} in {}", dg.vpc_id),
                    )
                    .await;
                    id
                }
                // Created by an earlier run that crashed before it could see it: adopt it.
                Err(e) if e.is("InvalidGroup.Duplicate") => {
                    let found = ctx
                        .ec2
                        .describe_security_groups(vec![
                            filter("group-name", [dg.name.as_str()]),
                            filter("vpc-id", [dg.vpc_id.as_str()]),
                        ])
                        .await
                        .map_err(Error::Aws)?;
                    found.first().map(|g| g.id.clone()).ok_or(Error::Aws(e))?
                }
                Err(e) => return Err(Error::Aws(e).into()),
            };
            // A new group carries AWS's default allow-all egress rule.
            GroupFacts {
                id,
                egress: [crate::aws::IpRule {
                    protocol: "-1".into(),
                    from_port: -1,
                    to_port: -1,
                    source: crate::aws::RuleSource::Ipv4("0.0.0.0/0".into()),
                }]
                .into(),
                ..Default::default()
            }
        }
    };
    let p = plan::plan_group(dg, &current);
    if owned.is_empty() || !p.is_empty() {
        ctx.caches
            .mark_changed(obj.metadata.uid.as_deref().unwrap_or_default());
    }
    if !p.authorize.is_empty() {
        already_done(
            ctx.ec2.authorize_ingress(&current.id, &p.authorize).await,
            "InvalidPermission.Duplicate",
        )?;
    }
    if !p.revoke_ingress.is_empty() {
        already_done(
            ctx.ec2.revoke_ingress(&current.id, &p.revoke_ingress).await,
            "InvalidPermission.NotFound",
        )?;
    }
    if !p.revoke_egress.is_empty() {
        already_done(
            ctx.ec2.revoke_egress(&current.id, &p.revoke_egress).await,
            "InvalidPermission.NotFound",
        )?;
    }
    if !p.is_empty() && !owned.is_empty() {
        let changes: Vec<String> = p
            .authorize
            .iter()
            .map(|r| format!("+{r}"))
            .chain(p.revoke_ingress.iter().map(|r| format!("-{r}")))
            .chain(p.revoke_egress.iter().map(|r| format!("-egress {r}")))
            .collect();
        ctx.event(
            obj,
            EventType::Normal,
            "SecurityGroupUpdated",
            "Update",
            format!("{}: {}", current.id, changes.join(", ")),
        )
        .await;
    }
    Ok(current.id)
}

/// Where the ConfigMap went, and where it was refused.
#[derive(Debug, Default)]
struct Publication {
    /// Namespaces other than the object's own that hold a copy.
    copies: Vec<String>,
    /// Why a namespace got nothing, e.g. an existing ConfigMap that is not ours.
    refused: Vec<String>,
    /// The object's own namespace holds a ConfigMap of that name that is not ours.
    own_conflict: Option<String>,
}

/// Publishes the ConfigMap into the object's namespace and the selected others, and removes
/// copies from namespaces no longer selected. It never writes or deletes a ConfigMap it did
/// not create (the owner-uid label says whose it is), and publishes into another namespace
/// only when that namespace opted in with the label `bedrock.privatelink.io/accept-config=true`.
async fn publish_config(
    obj: &BedrockPrivateLink,
    ctx: &Context,
    data: &BTreeMap<String, String>,
) -> Result<Publication, Error> {
    let own = obj.namespace().unwrap_or_default();
    let uid = obj.uid().unwrap_or_default();
    let name = obj.config_map_name();
    let mut out = Publication::default();
    let mut targets: BTreeSet<String> = BTreeSet::from([own.clone()]);
    if let Some(wc) = &obj.spec.workload_config {
        // From the store the namespace watch keeps: no API request per reconcile.
        let namespaces = ctx
            .namespaces
            .as_ref()
            .map(Store::state)
            .unwrap_or_default();
        let accepts = |n: &PartialObjectMeta<Namespace>| {
            n.labels().get(publish::ACCEPT_LABEL).map(String::as_str) == Some("true")
        };
        for ns in wc.namespaces.iter().flatten().filter(|n| **n != own) {
            match namespaces.iter().find(|n| n.name_any() == *ns) {
                Some(n) if accepts(n) => {
                    targets.insert(ns.clone());
                }
                Some(_) => out.refused.push(format!(
                    "{ns} has not opted in (label {}=true)",
                    publish::ACCEPT_LABEL
                )),
                None => out.refused.push(format!("{ns} does not exist")),
            }
        }
        if let Some(sel) = wc.namespace_selector.as_ref().filter(|s| !s.is_empty()) {
            targets.extend(
                namespaces
                    .iter()
                    .filter(|n| accepts(n) && publish::selects(sel, n.labels()))
                    .map(|n| n.name_any()),
            );
        }
    }
    for ns in &targets {
        let key = reflector::ObjectRef::new(&name).within(ns);
        let cached = ctx.config_maps.as_ref().and_then(|s| s.get(&key));
        if cached.as_ref().is_some_and(|cm| {
            cm.labels().get(publish::OWNER_UID_LABEL) == Some(&uid)
                && cm.data.as_ref() == Some(data)
        }) {
            if ns != &own {
                out.copies.push(ns.clone());
            }
            continue;
        }
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        // The store only sees ConfigMaps we label; someone else's must be looked up.
        let existing = match cached {
            Some(cm) => Some((*cm).clone()),
            None => api.get_opt(&name).await.map_err(Error::Kube)?,
        };
        if let Some(cm) = &existing
            && cm.labels().get(publish::OWNER_UID_LABEL) != Some(&uid)
        {
            let msg = format!(
                "ConfigMap {ns}/{name} exists and was not created by this object; it is left untouched"
            );
            if ns == &own {
                out.own_conflict = Some(format!(
                    "{msg}. Choose another spec.workloadConfig.configMapName or remove that ConfigMap"
                ));
            } else {
                out.refused.push(msg);
            }
            continue;
        }
        let cm = publish::config_map(obj, ns, data.clone());
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await
        .map_err(Error::Kube)?;
        // Server-side apply leaves keys that another manager added; remove them, or the data
        // would differ forever (and every reconcile would write again).
        let foreign: serde_json::Map<String, serde_json::Value> = existing
            .iter()
            .flat_map(|cm| cm.data.iter().flatten())
            .filter(|(k, _)| !data.contains_key(*k))
            .map(|(k, _)| (k.clone(), serde_json::Value::Null))
            .collect();
        if !foreign.is_empty() {
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "data": foreign })),
            )
            .await
            .map_err(Error::Kube)?;
        }
        if ns != &own {
            out.copies.push(ns.clone());
        }
    }
    for (ns, cm_name) in published_copies(obj, ctx).await? {
        if !targets.contains(&ns) {
            delete_config_map_in(ctx, &ns, &cm_name).await?;
            ctx.event(
                obj,
                EventType::Normal,
                "ConfigUnpublished",
                "Delete",
                format!("removed ConfigMap {cm_name} from namespace {ns}"),
            )
            .await;
        }
    }
    Ok(out)
}

/// (namespace, name) of every ConfigMap this object published.
async fn published_copies(
    obj: &BedrockPrivateLink,
    ctx: &Context,
) -> Result<Vec<(String, String)>, Error> {
    let uid = obj.uid().unwrap_or_default();
    let found: Vec<(String, String)> = match &ctx.config_maps {
        Some(store) => store
            .state()
            .iter()
            .filter(|cm| cm.labels().get(publish::OWNER_UID_LABEL) == Some(&uid))
            .map(|cm| (cm.namespace().unwrap_or_default(), cm.name_any()))
            .collect(),
        None => {
            let api: Api<ConfigMap> = Api::all(ctx.client.clone());
            let list = api
                .list_metadata(
                    &ListParams::default().labels(&format!("{}={uid}", publish::OWNER_UID_LABEL)),
                )
                .await
                .map_err(Error::Kube)?;
            list.items
                .into_iter()
                .map(|m| {
                    (
                        m.metadata.namespace.unwrap_or_default(),
                        m.metadata.name.unwrap_or_default(),
                    )
                })
                .collect()
        }
    };
    Ok(found)
}

async fn delete_config_map_in(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

async fn cleanup(obj: Arc<BedrockPrivateLink>, ctx: &Context) -> Result<Action, Error> {
    let owner = owner_of(&obj);
    ctx.metrics.set_ready(&owner.uid, None);
    if obj.spec.deletion_policy == DeletionPolicy::Retain {
        ctx.event(
            &obj,
            EventType::Normal,
            "Retained",
            "Delete",
            "deletionPolicy Retain: the endpoints and security group stay in AWS".into(),
        )
        .await;
        delete_config_map(&obj, ctx).await?;
        return Ok(Action::await_change());
    }
    // Done moments ago; this is a reconcile queued before the finalizer came off.
    if ctx
        .caches
        .cleaned
        .get_fresh(&owner.uid, Duration::MAX, None)
        .await
        .is_some()
    {
        return Ok(Action::await_change());
    }
    // Endpoints first: their network interfaces hold the security group.
    let endpoints = ctx.owned_endpoints(&owner.uid).await?;
    let to_delete: Vec<String> = endpoints
        .iter()
        .filter(|e| !e.is_deleted_or_deleting())
        .map(|e| e.id.clone())
        .collect();
    if !to_delete.is_empty() {
        ctx.ec2
            .delete_endpoints(&to_delete)
            .await
            .map_err(Error::Aws)?;
        ctx.event(
            &obj,
            EventType::Normal,
            "EndpointDeleted",
            "Delete",
            format!("deleting {}", to_delete.join(", ")),
        )
        .await;
    }
    let lingering: Vec<String> = endpoints
        .iter()
        .filter(|e| !e.state_is("deleted"))
        .map(|e| {
            format!(
                "{} ({})",
                e.id,
                if to_delete.contains(&e.id) {
                    "deleting"
                } else {
                    e.state.as_str()
                }
            )
        })
        .collect();
    if !lingering.is_empty() {
        return Err(Error::Waiting(format!(
            "endpoints {} are not gone yet",
            lingering.join(", ")
        )));
    }
    let groups = ctx.groups_of(&owner).await?;
    for g in &groups {
        match ctx.ec2.delete_security_group(&g.id).await {
            Ok(()) => {
                ctx.event(
                    &obj,
                    EventType::Normal,
                    "SecurityGroupDeleted",
                    "Delete",
                    format!("deleted {}", g.id),
                )
                .await
            }
            Err(e) if e.is("InvalidGroup.NotFound") => {}
            Err(e) if e.is("DependencyViolation") => {
                return Err(Error::Waiting(format!(
                    "security group {} is still in use by network interfaces of deleted endpoints",
                    g.id
                )));
            }
            Err(e) => return Err(Error::Aws(e)),
        }
    }
    delete_config_map(&obj, ctx).await?;
    ctx.caches.cleaned.put(owner.uid.clone(), ()).await;
    tracing::info!(object = %owner.name, namespace = %owner.namespace, "all AWS resources removed");
    Ok(Action::await_change())
}

async fn delete_config_map(obj: &BedrockPrivateLink, ctx: &Context) -> Result<(), Error> {
    // Owner references would do this with a garbage collector, and cannot cross namespaces;
    // delete explicitly, but only ConfigMaps that carry this object's owner-uid label.
    for (ns, name) in published_copies(obj, ctx).await? {
        delete_config_map_in(ctx, &ns, &name).await?;
    }
    Ok(())
}

/// Runs `stream` (a watch, with its reflector) and hands each object it touches to `n`
/// receivers, one per controller. The channels are bounded: the watch waits for the
/// controllers. A receiver that is gone (its controller stopped) is skipped.
pub(crate) fn fan_out<K: Clone + Send + 'static>(
    stream: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    n: usize,
) -> Vec<futures::channel::mpsc::Receiver<K>> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| futures::channel::mpsc::channel::<K>(64))
        .unzip();
    tokio::spawn(stream.fold(senders, |mut senders, obj| async move {
        if let Ok(obj) = obj {
            for tx in &mut senders {
                let _ = futures::SinkExt::send(tx, obj.clone()).await;
            }
        }
        senders
    }));
    receivers
}

/// kubectl apply's annotation: a second copy of the spec.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Context,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_synced: impl FnOnce() + Send + 'static,
) {
    let client = ctx.client.clone();
    let namespaces = ctx.config.watch_namespaces.clone();
    let concurrency = ctx.config.concurrency;
    let selector = format!("app.kubernetes.io/managed-by={}", publish::MANAGED_BY);
    let cm_api: Api<ConfigMap> = Api::all(client.clone());
    let controllers = namespaces.len().max(1);
    // One watch of our ConfigMaps feeds both the store and every controller (a ConfigMap
    // changed or deleted by someone else queues its owner): no second watch, no second copy
    // of each event.
    let (cm_store, cm_writer) = reflector::store();
    let mut cm_triggers = fan_out(
        reflector::reflector(
            cm_writer,
            // With backoff: without it a watch error (the API server restarting) is retried at
            // once, in a tight loop of connection attempts until the API server is back.
            watcher(cm_api, watcher::Config::default().labels(&selector))
                .default_backoff()
                .modify(|cm| {
                    cm.managed_fields_mut().clear();
                }),
        )
        .touched_objects(),
        controllers,
    );
    // Likewise the Namespaces' metadata: where copies may go, and a namespace gaining or
    // losing labels changes where they belong.
    let (ns_store, ns_writer) = reflector::store();
    let mut ns_triggers = fan_out(
        reflector::reflector(
            ns_writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .modify(|ns| {
                ns.managed_fields_mut().clear();
            }),
        )
        .touched_objects(),
        controllers,
    );
    // Tenancy (issue 16): every grant change queues every object again.
    let mut grant_triggers = ctx.tenancy.watch_grants(client.clone(), controllers);
    let mut ctx = ctx;
    ctx.config_maps = Some(cm_store.clone());
    ctx.namespaces = Some(ns_store.clone());
    let ctx = Arc::new(ctx);
    tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let every = ctx.caches.endpoints.ttl();
            loop {
                tokio::time::sleep(every).await;
                ctx.caches.prune().await;
            }
        }
    });

    let apis: Vec<Api<DeserializeGuard<BedrockPrivateLink>>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let shutdown = Box::pin(shutdown).shared();
    let mut streams = Vec::new();
    let mut stores = Vec::new();
    for api in apis {
        // The store keeps every object; their managedFields (and kubectl's copy of the last
        // applied spec) are most of their size and nothing here reads them.
        let (reader, writer) = reflector::store();
        let objects = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default().any_semantic()).modify(|o| {
                o.managed_fields_mut().clear();
                o.annotations_mut().remove(LAST_APPLIED);
            }),
        )
        .applied_objects();
        let controller = Controller::for_stream(objects, reader).owns_stream(
            cm_triggers
                .pop()
                .expect("one channel per controller")
                .map(Ok),
        );
        let objects = controller.store();
        let all_objects = controller.store();
        let controller = controller
            .watches_stream(
                ns_triggers
                    .pop()
                    .expect("one channel per controller")
                    .map(Ok),
                move |ns| {
                    objects
                        .state()
                        .into_iter()
                        .filter(|g| {
                            g.0.as_ref().is_ok_and(|o| {
                                publish::concerns_namespace(o, &ns)
                                    // Tenancy (issue 16): grants select namespaces by label.
                                    || o.namespace() == Some(ns.name_any())
                            })
                        })
                        .map(|g| reflector::ObjectRef::from_obj(&*g))
                        .collect::<Vec<_>>()
                },
            )
            .watches_stream(
                grant_triggers
                    .pop()
                    .expect("one channel per controller")
                    .map(Ok),
                move |_grant| crate::tenancy::gate::all_objects(&all_objects),
            )
            .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
            .graceful_shutdown_on(shutdown.clone());
        stores.push(controller.store());
        streams.push(
            controller
                .run(reconcile, error_policy, ctx.clone())
                .for_each(|res| async move {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "controller event");
                    }
                })
                .boxed(),
        );
    }
    ctx.tenancy.set_objects(stores.clone());
    let ready_ctx = ctx.clone();
    tokio::spawn(async move {
        // Store::wait_until_ready wakes only the task that polled it last (a oneshot inside), and
        // the Controller waits on the same stores: poll again until ready, or /readyz stays 503.
        let tick = Duration::from_millis(200);
        for s in &stores {
            while tokio::time::timeout(tick, s.wait_until_ready())
                .await
                .is_err()
            {}
        }
        while tokio::time::timeout(tick, cm_store.wait_until_ready())
            .await
            .is_err()
        {}
        while tokio::time::timeout(tick, ns_store.wait_until_ready())
            .await
            .is_err()
        {}
        while !ready_ctx.tenancy.listed() {
            tokio::time::sleep(tick).await;
        }
        on_synced();
    });
    futures::future::join_all(streams).await;
}
