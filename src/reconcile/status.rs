//! Step 6, status (pure): the status is a function of the previous status, what was observed
//! and applied (`Facts`) and the verdicts; it is written only when it really changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{BedrockPrivateLinkStatus, EndpointStatus};
use crate::aws::EndpointFacts;
use crate::catalog::BedrockService;

pub const READY: &str = "Ready";
pub const SECURITY_GROUP_READY: &str = "SecurityGroupReady";
pub const ENDPOINTS_READY: &str = "EndpointsReady";
pub const POLICY_APPLIED: &str = "PolicyApplied";
pub const CONFIG_PUBLISHED: &str = "ConfigPublished";
/// kstatus' abnormal-true conditions (read by Flux, `kubectl wait`, cli-utils and the Argo CD
/// health script in docs/gitops.md), derived from Ready in [`conditions`].
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// A condition before timestamps: what the reconcile concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Verdict {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Whether a `Ready=False` reason waits for a person (a spec that cannot work, a failed
/// endpoint, a refusal by AWS, a name conflict) rather than for time (AWS still working, or a
/// transient error retried with backoff).
pub fn needs_person(reason: &str) -> bool {
    let retrying = matches!(
        reason,
        "EndpointPending"
            | "PolicyPending"
            | "KubeError"
            | "Waiting"
            | "FinalizerError"
            // The account's credentials (issue 17): retried with backoff; a fixed trust
            // policy or a refreshed session ends it without a spec change.
            | "AssumeRoleFailed"
            | "SessionExpired"
    ) || (reason.starts_with("Aws") && reason != "AwsRejected");
    !retrying
}

/// `Reconciling` and `Stalled` as kstatus defines them, from the Ready verdict: exactly one of
/// Ready, Reconciling and Stalled is True.
fn kstatus_verdicts(ready: &Verdict) -> [Verdict; 2] {
    let stalled = !ready.status && needs_person(&ready.reason);
    let reconciling = !ready.status && !stalled;
    let reconciling = if reconciling {
        Verdict::new(RECONCILING, true, &ready.reason, &ready.message)
    } else if stalled {
        Verdict::new(
            RECONCILING,
            false,
            "Stalled",
            "not retrying until the spec or the AWS resources change; see Ready",
        )
    } else {
        Verdict::new(RECONCILING, false, "Ready", "nothing in progress")
    };
    let stalled = if stalled {
        Verdict::new(STALLED, true, &ready.reason, &ready.message)
    } else if ready.status {
        Verdict::new(STALLED, false, "Ready", "nothing needs a person")
    } else {
        Verdict::new(
            STALLED,
            false,
            "Progressing",
            "waiting for AWS or retrying; see Ready",
        )
    };
    [reconciling, stalled]
}

/// Builds conditions, keeping lastTransitionTime unless the status flipped. Conditions of
/// types not in `verdicts` are kept as they were. A Ready verdict also sets `Reconciling` and
/// `Stalled` (see [`kstatus_verdicts`]).
pub fn conditions(
    previous: &[Condition],
    verdicts: &[Verdict],
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    let derived: Vec<Verdict> = verdicts
        .iter()
        .filter(|v| v.type_ == READY)
        .flat_map(kstatus_verdicts)
        .collect();
    let verdicts: Vec<&Verdict> = verdicts.iter().chain(&derived).collect();
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|c| !verdicts.iter().any(|v| v.type_ == c.type_))
        .cloned()
        .collect();
    for v in verdicts {
        let status = if v.status { "True" } else { "False" }.to_string();
        let since = previous
            .iter()
            .find(|c| c.type_ == v.type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        out.push(Condition {
            type_: v.type_.to_string(),
            status,
            reason: v.reason.clone(),
            message: bounded(&v.message),
            observed_generation: generation,
            last_transition_time: since,
        });
    }
    out.sort_by_key(|c| order(&c.type_));
    out
}

fn order(t: &str) -> usize {
    [
        READY,
        SECURITY_GROUP_READY,
        ENDPOINTS_READY,
        POLICY_APPLIED,
        CONFIG_PUBLISHED,
        super::path::PRIVATE_PATH,
        RECONCILING,
        STALLED,
    ]
    .iter()
    .position(|x| *x == t)
    .unwrap_or(99)
}

/// Condition messages are for people: at most this many bytes.
pub const MESSAGE_MAX: usize = 1024;

/// `s` within `MESSAGE_MAX` bytes (cut at a character boundary, marked with an ellipsis).
pub fn bounded(s: &str) -> String {
    if s.len() <= MESSAGE_MAX {
        return s.to_string();
    }
    let mut end = MESSAGE_MAX - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What a reconcile that got as far as AWS found and left, for the status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// None: the operator's own account, not known.
    pub account: Option<String>,
    pub region: String,
    pub vpc_id: String,
    pub security_group_id: Option<String>,
    pub skipped_subnets: Vec<crate::api::SkippedSubnet>,
    pub endpoints: Vec<EndpointStatus>,
    pub policy_hash: Option<String>,
    pub config_map_name: Option<String>,
    pub published_namespaces: Vec<String>,
}

/// The status to write. With `facts` every field comes from them; without (the reconcile
/// stopped before it knew them: an invalid spec, AWS refusing) the fields of the previous
/// status stand and only the conditions change. Never a mix of old and new fields.
pub fn build(
    previous: Option<&BedrockPrivateLinkStatus>,
    facts: Option<Facts>,
    verdicts: &[Verdict],
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> BedrockPrivateLinkStatus {
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let conditions = conditions(previous_conditions, verdicts, generation, now);
    let mut status = match facts {
        Some(f) => BedrockPrivateLinkStatus {
            account: f.account,
            region: Some(f.region),
            vpc_id: Some(f.vpc_id),
            security_group_id: f.security_group_id,
            policy_hash: f.policy_hash,
            endpoints: f.endpoints,
            skipped_subnets: f.skipped_subnets,
            config_map_name: f.config_map_name,
            published_namespaces: f.published_namespaces,
            ..Default::default()
        },
        None => previous.cloned().unwrap_or_default(),
    };
    status.observed_generation = generation;
    status.conditions = conditions;
    status
}

/// Whether writing `new` would change anything but timestamps.
pub fn differs(old: Option<&BedrockPrivateLinkStatus>, new: &BedrockPrivateLinkStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &BedrockPrivateLinkStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(old) != strip(new)
}

pub fn ready_of(status: Option<&BedrockPrivateLinkStatus>) -> Option<&Condition> {
    status?.conditions.iter().find(|c| c.type_ == READY)
}

pub fn endpoint_status(service: BedrockService, region: &str, e: &EndpointFacts) -> EndpointStatus {
    let mut dns_names = e.dns_names.clone();
    let private = service.private_dns_name(region);
    dns_names.retain(|d| *d != private);
    // Regional name first, then the zonal ones.
    dns_names.sort_by_key(|d| (is_zonal(d), d.clone()));
    let azs: Vec<String> = dns_names.iter().filter_map(|d| zonal_az(d)).collect();
    EndpointStatus {
        service: service.as_str().to_string(),
        service_name: e.service_name.clone(),
        vpc_endpoint_id: e.id.clone(),
        account: None,
        region: Some(region.to_string()),
        state: e.state.clone(),
        dns_names,
        private_dns_name: e.private_dns.then_some(private),
        subnet_ids: e.subnet_ids.iter().cloned().collect(),
        availability_zones: azs,
        network_interface_ids: e.network_interface_ids.clone(),
    }
}

/// `vpce-0abc-x1y2-us-east-1a.bedrock-runtime...` is zonal; `vpce-0abc-x1y2.bedrock-runtime...` is not.
fn zonal_az(dns: &str) -> Option<String> {
    let first = dns.split('.').next()?;
    let parts: Vec<&str> = first.split('-').collect();
    // vpce, id, suffix, then region parts and zone letter
    if parts.len() >= 6 && parts[0] == "vpce" {
        Some(parts[3..].join("-"))
    } else {
        None
    }
}

fn is_zonal(dns: &str) -> bool {
    zonal_az(dns).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_built_from_facts_or_kept_whole() {
        let ready = [Verdict::new(READY, true, "Ready", "ok")];
        let facts = Facts {
            account: None,
            region: "us-east-1".into(),
            vpc_id: "vpc-1".into(),
            security_group_id: Some("sg-1".into()),
            ..Default::default()
        };
        let first = build(None, Some(facts), &ready, Some(1), ts(1));
        assert_eq!(first.vpc_id.as_deref(), Some("vpc-1"));
        assert_eq!(first.observed_generation, Some(1));
        // An invalid spec at generation 2: the fields stand, the conditions say why.
        let invalid = [Verdict::new(READY, false, "VpcNotFound", "x".repeat(5000))];
        let second = build(Some(&first), None, &invalid, Some(2), ts(2));
        assert_eq!(second.security_group_id.as_deref(), Some("sg-1"));
        assert_eq!(second.observed_generation, Some(2));
        let c = ready_of(Some(&second)).unwrap();
        assert_eq!(c.reason, "VpcNotFound");
        assert!(c.message.len() <= MESSAGE_MAX && c.message.ends_with('…'));
        // New facts replace every field: nothing from before survives.
        let third = build(
            Some(&second),
            Some(Facts::default()),
            &ready,
            Some(2),
            ts(3),
        );
        assert_eq!(third.security_group_id, None);
    }

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = conditions(
            &[],
            &[Verdict::new(READY, false, "EndpointPending", "waiting")],
            Some(1),
            ts(100),
        );
        let same = conditions(
            &first,
            &[Verdict::new(
                READY,
                false,
                "EndpointPending",
                "still waiting",
            )],
            Some(1),
            ts(200),
        );
        assert_eq!(same[0].last_transition_time, Time(ts(100)));
        assert_eq!(same[0].message, "still waiting");
        let flipped = conditions(
            &same,
            &[Verdict::new(READY, true, "Ready", "ok")],
            Some(2),
            ts(300),
        );
        assert_eq!(flipped[0].last_transition_time, Time(ts(300)));
        assert_eq!(flipped[0].observed_generation, Some(2));
    }

    fn status_of<'a>(cs: &'a [Condition], t: &str) -> (&'a str, &'a str) {
        let c = cs.iter().find(|c| c.type_ == t).expect(t);
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn ready_sets_exactly_one_of_ready_reconciling_stalled() {
        let cases = [
            (true, "Ready", "True", "False", "False"),
            (true, "ReducedResilience", "True", "False", "False"),
            (false, "EndpointPending", "False", "True", "False"),
            (false, "PolicyPending", "False", "True", "False"),
            (false, "AwsRequestLimitExceeded", "False", "True", "False"),
            (false, "KubeError", "False", "True", "False"),
            (false, "EndpointFailed", "False", "False", "True"),
            (false, "InvalidPolicy", "False", "False", "True"),
            (false, "VpcNotFound", "False", "False", "True"),
            (false, "AwsRejected", "False", "False", "True"),
            (false, "ConfigMapConflict", "False", "False", "True"),
        ];
        for (ok, reason, ready, reconciling, stalled) in cases {
            let cs = conditions(&[], &[Verdict::new(READY, ok, reason, "m")], Some(3), ts(1));
            assert_eq!(status_of(&cs, READY).0, ready, "{reason}");
            assert_eq!(status_of(&cs, RECONCILING).0, reconciling, "{reason}");
            assert_eq!(status_of(&cs, STALLED).0, stalled, "{reason}");
            let true_one = cs.iter().find(|c| c.status == "True").unwrap();
            assert_eq!(
                true_one.reason, reason,
                "the True condition carries the reason"
            );
            assert!(cs.iter().all(|c| c.observed_generation == Some(3)));
        }
        // Part verdicts alone (no Ready) leave Reconciling/Stalled as they were.
        let first = conditions(
            &[],
            &[Verdict::new(READY, false, "EndpointFailed", "m")],
            Some(1),
            ts(1),
        );
        let parts = conditions(
            &first,
            &[Verdict::new(ENDPOINTS_READY, false, "EndpointFailed", "m")],
            Some(1),
            ts(2),
        );
        assert_eq!(status_of(&parts, STALLED), ("True", "EndpointFailed"));
    }

    #[test]
    fn differs_ignores_timestamps_only() {
        let a = BedrockPrivateLinkStatus {
            conditions: conditions(
                &[],
                &[Verdict::new(READY, true, "Ready", "ok")],
                Some(1),
                ts(1),
            ),
            ..Default::default()
        };
        let mut b = a.clone();
        b.conditions[0].last_transition_time = Time(ts(999));
        assert!(!differs(Some(&a), &b));
        b.conditions[0].reason = "Other".into();
        assert!(differs(Some(&a), &b));
        assert!(differs(None, &a));
    }

    #[test]
    fn endpoint_dns_names_are_ordered_regional_first() {
        let e = EndpointFacts {
            id: "vpce-0123".into(),
            service_name: "com.amazonaws.us-east-1.bedrock-runtime".into(),
            state: "available".into(),
            private_dns: true,
            dns_names: vec![
                "vpce-0123-abcd1234-us-east-1a.bedrock-runtime.us-east-1.vpce.amazonaws.com".into(),
                "bedrock-runtime.us-east-1.amazonaws.com".into(),
                "vpce-0123-abcd1234.bedrock-runtime.us-east-1.vpce.amazonaws.com".into(),
            ],
            ..Default::default()
        };
        let s = endpoint_status(BedrockService::BedrockRuntime, "us-east-1", &e);
        assert_eq!(
            s.dns_names[0],
            "vpce-0123-abcd1234.bedrock-runtime.us-east-1.vpce.amazonaws.com"
        );
        assert_eq!(s.availability_zones, vec!["us-east-1a"]);
        assert_eq!(
            s.private_dns_name.as_deref(),
            Some("bedrock-runtime.us-east-1.amazonaws.com")
        );
    }
}
