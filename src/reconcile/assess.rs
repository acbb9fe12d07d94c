//! Step 5, assess (pure): verdicts (conditions before timestamps) from what was observed and
//! applied. Every message is short, says what is wrong and what to do, and names no Rust type.

use crate::api::EndpointStatus;
use crate::aws::EndpointFacts;

use super::execute::{Applied, GroupOutcome};
use super::plan::{self, Desired};
use super::status::{
    self, CONFIG_PUBLISHED, ENDPOINTS_READY, POLICY_APPLIED, READY, SECURITY_GROUP_READY, Verdict,
};

/// The endpoints as the status shows them, and what is still missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Endpoints {
    pub statuses: Vec<EndpointStatus>,
    /// "<id> is pending", "<service> has no endpoint yet".
    pub pending: Vec<String>,
    /// "<id> is failed (<AWS's LastError>)".
    pub failed: Vec<String>,
    pub policy_ok: bool,
    pub policy_hash: String,
}

/// For each desired endpoint, the one we hold for it.
pub fn endpoints(desired: &Desired, owned: &[EndpointFacts], region: &str) -> Endpoints {
    let mut out = Endpoints {
        policy_ok: true,
        ..Default::default()
    };
    for d in &desired.endpoints {
        let current = owned
            .iter()
            .filter(|e| e.service_name == d.service_name && !e.is_deleted_or_deleting())
            .min_by_key(|e| (!e.state_is("available"), e.id.clone()));
        let Some(e) = current else {
            let going = owned
                .iter()
                .any(|e| e.service_name == d.service_name && e.state_is("deleting"));
            out.pending.push(if going {
                format!("{} is being replaced", d.service)
            } else {
                format!("{} has no endpoint yet", d.service)
            });
            continue;
        };
        out.statuses
            .push(status::endpoint_status(d.service, region, e));
        if plan::is_dead(e) {
            let why = e
                .last_error
                .as_ref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            out.failed.push(format!("{} is {}{why}", e.id, e.state));
        } else if !e.state_is("available") {
            out.pending.push(format!("{} is {}", e.id, e.state));
        }
        if !e
            .policy
            .as_ref()
            .is_some_and(|p| crate::policy::equivalent(p, &d.policy))
        {
            out.policy_ok = false;
        }
    }
    // One fingerprint for what every endpoint should carry.
    let policies: Vec<&serde_json::Value> = desired.endpoints.iter().map(|d| &d.policy).collect();
    out.policy_hash = match policies.as_slice() {
        [one] => crate::policy::hash(one),
        many => crate::policy::hash(&serde_json::json!(many)),
    };
    out
}

pub fn group(outcome: &GroupOutcome) -> Verdict {
    match outcome {
        GroupOutcome::Managed { id, ingress } => {
            let sources: Vec<String> = ingress.iter().map(|r| r.to_string()).collect();
            Verdict::new(
                SECURITY_GROUP_READY,
                true,
                "Managed",
                format!("{id} admits only {}; no egress", sources.join(", ")),
            )
        }
        GroupOutcome::Existing(ids) => Verdict::new(
            SECURITY_GROUP_READY,
            true,
            "Existing",
            format!("using existing groups {}", ids.join(", ")),
        ),
    }
}

pub fn endpoints_verdict(e: &Endpoints, applied: &Applied) -> Verdict {
    if !e.failed.is_empty() {
        let next = match applied.retry_in {
            Some(d) => format!(
                "the operator replaces it in {} s (bounded backoff)",
                d.as_secs().max(1)
            ),
            None => "the operator is replacing it".to_string(),
        };
        return Verdict::new(
            ENDPOINTS_READY,
            false,
            "EndpointFailed",
            format!(
                "{}; {next}. If it fails again, fix the cause AWS names",
                e.failed.join("; ")
            ),
        );
    }
    if !applied.replacing.is_empty() {
        let what: Vec<String> = applied
            .replacing
            .iter()
            .map(|(why, attempt)| format!("{why}; replacing it (attempt {attempt})"))
            .collect();
        return Verdict::new(
            ENDPOINTS_READY,
            false,
            "EndpointFailed",
            format!(
                "{}; {}. Ready again once the replacement is available",
                what.join("; "),
                e.pending.join("; ")
            ),
        );
    }
    if !e.pending.is_empty() {
        return Verdict::new(
            ENDPOINTS_READY,
            false,
            "EndpointPending",
            format!("waiting for AWS: {}", e.pending.join("; ")),
        );
    }
    let ids: Vec<&str> = e
        .statuses
        .iter()
        .map(|s| s.vpc_endpoint_id.as_str())
        .collect();
    Verdict::new(
        ENDPOINTS_READY,
        true,
        "Available",
        format!("{} available", ids.join(", ")),
    )
}

pub fn policy(e: &Endpoints) -> Verdict {
    if e.policy_ok {
        Verdict::new(
            POLICY_APPLIED,
            true,
            "Applied",
            format!("policy {} applied to every endpoint", e.policy_hash),
        )
    } else {
        Verdict::new(
            POLICY_APPLIED,
            false,
            "PolicyPending",
            "the endpoint policy is being applied",
        )
    }
}

/// Where the ConfigMap went (from publishing), for the verdict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    pub name: String,
    pub keys: usize,
    pub copies: Vec<String>,
    pub refused: Vec<String>,
    pub own_conflict: Option<String>,
}

pub fn config(published: Option<&Published>) -> Verdict {
    let Some(p) = published else {
        return Verdict::new(
            CONFIG_PUBLISHED,
            false,
            "NoEndpoints",
            "nothing to publish yet",
        );
    };
    if let Some(conflict) = &p.own_conflict {
        return Verdict::new(
            CONFIG_PUBLISHED,
            false,
            "ConfigMapConflict",
            conflict.clone(),
        );
    }
    let copies = if p.copies.is_empty() {
        String::new()
    } else {
        format!(" (copies in {})", p.copies.join(", "))
    };
    let refused = if p.refused.is_empty() {
        String::new()
    } else {
        format!("; not published: {}", p.refused.join("; "))
    };
    Verdict::new(
        CONFIG_PUBLISHED,
        true,
        "Published",
        format!(
            "ConfigMap {} holds {} keys{copies}; use it with envFrom{refused}",
            p.name, p.keys
        ),
    )
}

/// Ready: the first part that is not ready says why; else Ready (or ReducedResilience).
pub fn ready(parts: &[&Verdict], reduced_resilience: Option<&str>, e: &Endpoints) -> Verdict {
    if let Some(v) = parts.iter().find(|v| !v.status) {
        return Verdict::new(READY, false, v.reason.clone(), v.message.clone());
    }
    if let Some(msg) = reduced_resilience {
        return Verdict::new(READY, true, "ReducedResilience", msg);
    }
    let dns: Vec<String> = e
        .statuses
        .iter()
        .map(|s| {
            s.private_dns_name
                .clone()
                .or_else(|| s.dns_names.first().cloned())
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

/// The parts were not checked against a spec that cannot work: say so rather than leave an
/// earlier True standing.
pub fn blocked(reason: &'static str, message: &str) -> Vec<Verdict> {
    let b = |t| Verdict::new(t, false, "Blocked", format!("not checked: {reason}"));
    vec![
        Verdict::new(READY, false, reason, message),
        b(SECURITY_GROUP_READY),
        b(ENDPOINTS_READY),
        b(POLICY_APPLIED),
        b(CONFIG_PUBLISHED),
    ]
}
