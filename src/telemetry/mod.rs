//! Logs, metrics and the small HTTP server for /healthz, /readyz and /metrics.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub mod heap;
pub mod http;
pub mod kube_requests;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Ec2CallLabels {
    pub operation: String,
    /// ok, or the AWS error code (e.g. RequestLimitExceeded), or "transport".
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

/// Why a VPC's endpoints were polled: an object waits for AWS, or the drift sweep.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeRequestLabels {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// e.g. configmaps, bedrockprivatelinks/status.
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// ok, or the error category.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub ready: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrphanLabels {
    /// endpoint or security_group.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// True or False.
    pub ready: String,
    /// The Ready condition's reason, e.g. EndpointFailed (a bounded set, see docs/install.md).
    pub reason: String,
}

pub struct Metrics {
    pub registry: Registry,
    /// Every HTTP attempt to EC2, including the SDK's retries.
    pub ec2_attempts: Family<Ec2CallLabels, Counter>,
    /// Calls as the operator made them (after the SDK's retries).
    pub ec2_calls: Family<Ec2CallLabels, Counter>,
    pub ec2_throttles: Family<OperationLabels, Counter>,
    /// Every request the kube Client sent to the API server (watches count once, when opened).
    pub kube_requests: Family<KubeRequestLabels, Counter>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Polls of a VPC's endpoints (one DescribeVpcEndpoints, paginated, each).
    pub vpc_polls: Family<PollLabels, Counter>,
    /// Objects a poll triggered for reconcile (their endpoints changed).
    pub poll_triggers: Family<PollLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub objects: Family<ReadyLabels, Gauge>,
    /// Objects by Ready status and reason; series of reasons no object has any more stay at 0.
    pub objects_by_reason: Family<ReasonLabels, Gauge>,
    /// 1 while this replica reconciles (holds the Lease, or runs without leader election).
    pub leader: Gauge,
    /// Resident memory of the process, read at each scrape.
    pub resident_memory: Gauge,
    /// AWS resources the orphan sweep removed (their object is gone), by kind.
    pub orphans_removed: Family<OrphanLabels, Counter>,
    /// Owners whose resources the last orphan sweep found orphaned and within the grace period.
    pub orphans_waiting: Gauge,
    /// Orphaned resources kept because they are tagged deletion-policy=Retain (last sweep).
    pub orphans_retained: Gauge,
    ready_by_object: Mutex<HashMap<String, (String, String)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bpl");
        let ec2_attempts = Family::<Ec2CallLabels, Counter>::default();
        let ec2_calls = Family::<Ec2CallLabels, Counter>::default();
        let ec2_throttles = Family::<OperationLabels, Counter>::default();
        let kube_requests = Family::<KubeRequestLabels, Counter>::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let vpc_polls = Family::<PollLabels, Counter>::default();
        let poll_triggers = Family::<PollLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let objects = Family::<ReadyLabels, Gauge>::default();
        // Every status is shown, 0 while no object has it.
        for ready in ["True", "False", "Unknown"] {
            objects
                .get_or_create(&ReadyLabels {
                    ready: ready.to_string(),
                })
                .set(0);
        }
        let objects_by_reason = Family::<ReasonLabels, Gauge>::default();
        let leader = Gauge::default();
        let resident_memory = Gauge::default();
        let orphans_removed = Family::<OrphanLabels, Counter>::default();
        let orphans_waiting = Gauge::default();
        let orphans_retained = Gauge::default();
        registry.register(
            "orphans_removed",
            "AWS resources of this cluster removed by the orphan sweep because their object is gone",
            orphans_removed.clone(),
        );
        registry.register(
            "orphans_waiting",
            "Objects gone whose resources the orphan sweep removes after the grace period",
            orphans_waiting.clone(),
        );
        registry.register(
            "orphans_retained",
            "Resources of objects that are gone, kept because deletionPolicy was Retain",
            orphans_retained.clone(),
        );
        registry.register(
            "ec2_attempts",
            "EC2 HTTP attempts, including SDK retries",
            ec2_attempts.clone(),
        );
        registry.register(
            "ec2_calls",
            "EC2 API calls by operation and final outcome",
            ec2_calls.clone(),
        );
        registry.register(
            "ec2_throttles",
            "EC2 attempts refused with a throttling error",
            ec2_throttles.clone(),
        );
        registry.register(
            "kube_requests",
            "Requests sent to the Kubernetes API server by verb and resource",
            kube_requests.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles by result (ok or error category)",
            reconciles.clone(),
        );
        registry.register(
            "vpc_polls",
            "Polls of a VPC's endpoints by reason (wait: an object waits for AWS; sweep: drift)",
            vpc_polls.clone(),
        );
        registry.register(
            "poll_triggers",
            "Objects a VPC poll triggered for reconcile because their endpoints changed",
            poll_triggers.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_duration.clone(),
        );
        registry.register(
            "objects",
            "BedrockPrivateLink objects by Ready status",
            objects.clone(),
        );
        registry.register(
            "objects_by_reason",
            "BedrockPrivateLink objects by Ready status and reason",
            objects_by_reason.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica reconciles (holds the Lease, or leader election is off)",
            leader.clone(),
        );
        registry.register_with_unit(
            "resident_memory",
            "Resident memory of the operator process",
            prometheus_client::registry::Unit::Bytes,
            resident_memory.clone(),
        );
        Self {
            registry,
            ec2_attempts,
            ec2_calls,
            ec2_throttles,
            kube_requests,
            reconciles,
            vpc_polls,
            poll_triggers,
            reconcile_duration,
            objects,
            objects_by_reason,
            leader,
            resident_memory,
            orphans_removed,
            orphans_waiting,
            orphans_retained,
            ready_by_object: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn record_ec2_call(&self, operation: &str, outcome: &str) {
        self.ec2_calls
            .get_or_create(&Ec2CallLabels {
                operation: operation.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn record_ec2_attempt(&self, operation: &str, outcome: &str) {
        self.ec2_attempts
            .get_or_create(&Ec2CallLabels {
                operation: operation.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        if is_throttle_code(outcome) {
            self.ec2_throttles
                .get_or_create(&OperationLabels {
                    operation: operation.to_string(),
                })
                .inc();
        }
    }

    pub fn record_kube_request(&self, verb: &str, resource: &str) {
        self.kube_requests
            .get_or_create(&KubeRequestLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
            })
            .inc();
    }

    pub fn record_vpc_poll(&self, reason: &str) {
        self.vpc_polls
            .get_or_create(&PollLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn record_poll_triggers(&self, reason: &str, objects: usize) {
        self.poll_triggers
            .get_or_create(&PollLabels {
                reason: reason.to_string(),
            })
            .inc_by(objects as u64);
    }

    pub fn record_orphans_removed(&self, kind: &str, n: usize) {
        self.orphans_removed
            .get_or_create(&OrphanLabels {
                kind: kind.to_string(),
            })
            .inc_by(n as u64);
    }

    pub fn record_reconcile(&self, result: &str, seconds: f64) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                result: result.to_string(),
            })
            .inc();
        self.reconcile_duration.observe(seconds);
    }

    /// Tracks the Ready status and reason of each object; `None` forgets a deleted object. The gauges
    /// change by the difference, under the map's lock: a resync that changes nothing costs one
    /// lookup, not a recount of every object.
    pub fn set_ready(&self, object: &str, ready: Option<(&str, &str)>) {
        let mut map = self.ready_by_object.lock().expect("metrics lock");
        let unchanged = map.get(object).map(|(s, r)| (s.as_str(), r.as_str())) == ready;
        if unchanged {
            return;
        }
        let old = match ready {
            Some((status, reason)) => {
                map.insert(object.to_string(), (status.to_string(), reason.to_string()))
            }
            None => map.remove(object),
        };
        let add = |status: &str, reason: &str, n: i64| {
            self.objects
                .get_or_create(&ReadyLabels {
                    ready: status.to_string(),
                })
                .inc_by(n);
            // A reason no object has any more stays at 0, so alerts on it resolve.
            self.objects_by_reason
                .get_or_create(&ReasonLabels {
                    ready: status.to_string(),
                    reason: reason.to_string(),
                })
                .inc_by(n);
        };
        if let Some((s, r)) = &old {
            add(s, r, -1);
        }
        if let Some((s, r)) = ready {
            add(s, r, 1);
        }
    }

    /// Refreshes what is read at scrape time: leadership and resident memory.
    pub fn refresh(&self, health: &Health) {
        let leading =
            !health.needs_lease.load(Ordering::Relaxed) || health.leading.load(Ordering::Relaxed);
        self.leader.set(i64::from(leading));
        if let Some(bytes) = resident_bytes() {
            self.resident_memory.set(bytes);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
    }
}

/// Resident set size from /proc/self/statm (Linux; None elsewhere).
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // 4 KiB pages on the platforms the image is built for (x86_64, aarch64 Linux defaults).
    Some(pages * 4096)
}

pub fn is_throttle_code(code: &str) -> bool {
    matches!(
        code,
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled"
    )
}

/// Health as /readyz reports it.
#[derive(Default)]
pub struct Health {
    pub synced: AtomicBool,
    pub leading: AtomicBool,
    pub needs_lease: AtomicBool,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
            && (!self.needs_lease.load(Ordering::Relaxed) || self.leading.load(Ordering::Relaxed))
    }
}

/// Structured logs: text for people, json for log pipelines. Never logs credentials.
pub fn init_logging(format: &str, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_are_counted_separately_and_encoded() {
        let m = Metrics::default();
        m.record_ec2_attempt("CreateVpcEndpoint", "RequestLimitExceeded");
        m.record_ec2_attempt("CreateVpcEndpoint", "ok");
        m.record_ec2_call("CreateVpcEndpoint", "ok");
        m.record_kube_request("patch", "bedrockprivatelinks/status");
        m.set_ready("ns/a", Some(("True", "Ready")));
        m.set_ready("ns/a", Some(("True", "Ready")));
        m.set_ready("ns/b", Some(("False", "EndpointPending")));
        m.set_ready("ns/b", Some(("False", "EndpointFailed")));
        m.set_ready("ns/c", Some(("False", "EndpointFailed")));
        m.set_ready("ns/c", None);
        m.refresh(&Health::default());
        let text = m.encode();
        assert!(
            text.contains(r#"bpl_ec2_throttles_total{operation="CreateVpcEndpoint"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"bpl_ec2_calls_total{operation="CreateVpcEndpoint",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"bpl_kube_requests_total{verb="patch",resource="bedrockprivatelinks/status"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"bpl_objects{ready="True"} 1"#), "{text}");
        assert!(text.contains(r#"bpl_objects{ready="False"} 1"#), "{text}");
        assert!(text.contains(r#"bpl_objects{ready="Unknown"} 0"#), "{text}");
        assert!(
            text.contains(r#"bpl_objects_by_reason{ready="True",reason="Ready"} 1"#),
            "the same status twice counts once: {text}"
        );
        assert!(
            text.contains(r#"bpl_objects_by_reason{ready="False",reason="EndpointFailed"} 1"#),
            "{text}"
        );
        // A reason no object has any more reads 0, so alerts on it resolve.
        assert!(
            text.contains(r#"bpl_objects_by_reason{ready="False",reason="EndpointPending"} 0"#),
            "{text}"
        );
        assert!(text.contains("bpl_leader 1"), "no lease needed: {text}");
        assert!(text.contains("bpl_resident_memory_bytes "), "{text}");
    }
}
