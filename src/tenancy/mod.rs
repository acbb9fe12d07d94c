//! Tenancy: what the BedrockPrivateLinks of a namespace may ask for, judged against the cluster
//! admin's `BedrockPrivateLinkGrant`s (pure; `gate` feeds it from the watches).
//!
//! The rule, in one place:
//! - The grants that select a namespace (by name or label selector) are the only ones that
//!   count for it. A namespace that no grant selects gets the built-in default
//!   ([`Rules::builtin`]): the cluster's own VPC, no private DNS, presets InvokeOnly and
//!   ReadOnly, at most 5 endpoints.
//! - An object is admitted when one grant (or the default) allows all of it: its VPC, its
//!   private DNS, its policy preset, and its endpoints on top of those of the namespace's
//!   older objects (ordered by creation time, then name; only objects that were admitted
//!   count, and objects being deleted do not).
//! - A refusal names the rule (the condition reason) and, in the message, the grant and field
//!   that decided, and what to change.
//! - A grant that cannot be read (version skew) fails closed: it selects every namespace and
//!   allows nothing, so it can never widen what a namespace may do.
//! - Accounts and regions (issue 17): an object's account (spec.account; omitted: the
//!   operator's own) must be the account of the grant's `account.roleArn` (a grant without
//!   `account` stands for the operator's own account and credentials), and its region
//!   (spec.region; omitted: the operator's) one of the grant's `regions` (omitted: the
//!   operator's region only). The grant that admits an object names the role the operator
//!   assumes for it: a namespace can only ever use a role a grant that selects it names (no
//!   confused deputy). The cluster's VPC is in the operator's own account and region, so
//!   `vpcs.clusterVpc` allows nothing elsewhere.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Selector, SelectorExt};

use crate::api::grant::{AccountAccess, DEFAULT_MAX_ENDPOINTS_PER_NAMESPACE, VpcRules};
use crate::api::{BedrockPrivateLinkGrant, BedrockPrivateLinkSpec, PolicyPreset};

pub mod gate;
mod ledger;

pub const VPC_NOT_ALLOWED: &str = "VpcNotAllowed";
pub const PRIVATE_DNS_NOT_ALLOWED: &str = "PrivateDnsNotAllowed";
pub const PRESET_NOT_ALLOWED: &str = "PolicyPresetNotAllowed";
pub const ENDPOINT_LIMIT: &str = "EndpointLimitExceeded";
pub const GRANT_UNREADABLE: &str = "GrantUnreadable";
pub const ACCOUNT_NOT_GRANTED: &str = "AccountNotGranted";
pub const REGION_NOT_ALLOWED: &str = "RegionNotAllowed";
pub const TAKE_OVER_NOT_ALLOWED: &str = "TakeOverNotAllowed";

/// The stages an ask passes, in order: the furthest one a grant got to names the reason.
const STAGE_ACCOUNT: u8 = 0;
const STAGE_REGION: u8 = 1;
const STAGE_VPC: u8 = 2;
const STAGE_DNS: u8 = 3;
const STAGE_PRESET: u8 = 4;
const STAGE_TAKE_OVER: u8 = 5;
const STAGE_COUNT: u8 = 6;

/// The operator's own account and region: what an object that names neither gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Home {
    pub region: String,
    /// None: not known (the operator could not ask STS).
    pub account: Option<String>,
}

/// Where a set of rules comes from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No grant selects the namespace.
    Builtin,
    Grant(String),
    /// A grant the operator could not read, with why.
    Unreadable(String, String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Builtin => f.write_str(
                "the built-in default (no BedrockPrivateLinkGrant selects this namespace)",
            ),
            Source::Grant(n) => write!(f, "BedrockPrivateLinkGrant {n}"),
            Source::Unreadable(n, e) => {
                write!(f, "BedrockPrivateLinkGrant {n}, which cannot be read ({e})")
            }
        }
    }
}

/// What one grant (or the default) allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub source: Source,
    /// The role to assume; None: the operator's own credentials and account.
    pub account: Option<AccountAccess>,
    /// Regions allowed; empty: the operator's own region only.
    pub regions: Vec<String>,
    pub vpcs: VpcRules,
    pub private_dns: bool,
    pub presets: Vec<PolicyPreset>,
    /// spec.adopt.takeOver allowed.
    pub take_over: bool,
    pub max_endpoints: u32,
}

impl Rules {
    /// What a namespace that no grant selects may do.
    pub fn builtin() -> Self {
        Rules {
            source: Source::Builtin,
            account: None,
            regions: Vec::new(),
            vpcs: VpcRules::default(),
            private_dns: false,
            presets: vec![PolicyPreset::InvokeOnly, PolicyPreset::ReadOnly],
            take_over: false,
            max_endpoints: DEFAULT_MAX_ENDPOINTS_PER_NAMESPACE,
        }
    }
}

/// Which namespaces a grant selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    Every,
    Some {
        names: BTreeSet<String>,
        selector: Option<Selector>,
    },
}

/// A grant as the rules need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub selection: Selection,
    pub rules: Rules,
}

impl Grant {
    pub fn from_resource(g: &BedrockPrivateLinkGrant) -> Grant {
        let name = kube::ResourceExt::name_any(g);
        let selector = match g.spec.namespaces.selector.clone().map(Selector::try_from) {
            Some(Err(e)) => return Grant::unreadable(name, e.to_string()),
            other => other.map(Result::unwrap_or_default),
        };
        Grant {
            selection: Selection::Some {
                names: g.spec.namespaces.names.iter().flatten().cloned().collect(),
                selector,
            },
            rules: Rules {
                source: Source::Grant(name),
                account: g.spec.account.clone(),
                regions: g.spec.regions.clone(),
                vpcs: g.spec.vpcs.clone(),
                private_dns: g.spec.private_dns,
                presets: g.spec.policy_presets.clone(),
                take_over: g.spec.allow_take_over,
                max_endpoints: g.spec.max_endpoints_per_namespace.max(0) as u32,
            },
        }
    }

    /// Fails closed: selects every namespace and allows nothing.
    pub fn unreadable(name: String, error: String) -> Grant {
        Grant {
            selection: Selection::Every,
            rules: Rules {
                source: Source::Unreadable(name, error),
                account: None,
                regions: Vec::new(),
                vpcs: VpcRules {
                    cluster_vpc: false,
                    ids: Vec::new(),
                    any: false,
                },
                private_dns: false,
                presets: Vec::new(),
                take_over: false,
                max_endpoints: 0,
            },
        }
    }

    pub fn selects(&self, ns: &Namespace) -> bool {
        match &self.selection {
            Selection::Every => true,
            Selection::Some { names, selector } => {
                names.contains(&ns.name) || selector.as_ref().is_some_and(|s| s.matches(&ns.labels))
            }
        }
    }
}

/// The namespace of the object.
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// What an object asks for, as far as tenancy is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// None: the operator's own account (the spec names none, or names the operator's).
    pub account: Option<String>,
    /// The region (the spec's, else the operator's).
    pub region: String,
    /// `region` is the operator's own.
    pub home_region: bool,
    /// None: the cluster's VPC (the spec names none).
    pub vpc: Option<String>,
    pub private_dns: bool,
    pub preset: PolicyPreset,
    /// One interface endpoint per service.
    pub endpoints: u32,
    /// spec.adopt.takeOver.
    pub take_over: bool,
}

impl Ask {
    pub fn of(spec: &BedrockPrivateLinkSpec, home: &Home) -> Ask {
        let region = spec.region.clone().unwrap_or_else(|| home.region.clone());
        Ask {
            account: spec
                .account
                .clone()
                .filter(|a| home.account.as_ref() != Some(a)),
            home_region: region == home.region,
            region,
            vpc: spec.vpc_id.clone(),
            private_dns: spec.private_dns,
            preset: spec.policy.as_ref().map(|p| p.preset).unwrap_or_default(),
            endpoints: spec.services.len() as u32,
            take_over: spec.adopt.as_ref().is_some_and(|a| a.take_over),
        }
    }
}

/// Why an object may not do what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The condition reason: the rule that refused.
    pub reason: &'static str,
    pub message: String,
}

/// Which rules admitted an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub by: Source,
    /// The role of the admitting grant (None: the operator's own credentials).
    pub account: Option<AccountAccess>,
    /// The namespace's endpoints with this object's (in creation order, up to it).
    pub namespace_endpoints: u32,
}

/// One rule's objection, before it becomes a message.
#[derive(Debug, Clone)]
struct Objection {
    /// How far the ask got (VPC 0, private DNS 1, preset 2, count 3): the furthest decides
    /// the reason, as the grant that fits best.
    stage: u8,
    reason: &'static str,
    clause: String,
}

fn describe_vpcs(v: &VpcRules, cluster_vpcs: &BTreeSet<String>) -> String {
    if v.any {
        return "any VPC".into();
    }
    let mut parts = Vec::new();
    if v.cluster_vpc {
        parts.push(if cluster_vpcs.is_empty() {
            "the cluster's VPC".to_string()
        } else {
            format!(
                "the cluster's VPC ({})",
                cluster_vpcs.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        });
    }
    parts.extend(v.ids.iter().cloned());
    if parts.is_empty() {
        "no VPC".into()
    } else {
        format!("only {}", parts.join(", "))
    }
}

fn describe_presets(p: &[PolicyPreset]) -> String {
    if p.is_empty() {
        return "no preset".into();
    }
    p.iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_account(r: &Rules) -> String {
    match &r.account {
        None => "only the operator's own account".into(),
        Some(a) => format!("only account {} (role {})", a.account_id(), a.role_arn),
    }
}

fn describe_regions(r: &Rules) -> String {
    if r.regions.is_empty() {
        "only the operator's own region".into()
    } else {
        format!("only {}", r.regions.join(", "))
    }
}

/// Whether the rule's account is the one asked for.
pub(crate) fn allows_account(r: &Rules, ask: &Ask) -> bool {
    match (&r.account, &ask.account) {
        (None, None) => true,
        (Some(role), Some(account)) => role.account_id() == account,
        _ => false,
    }
}

/// Whether the rule allows the region asked for.
pub(crate) fn allows_region(r: &Rules, ask: &Ask) -> bool {
    if r.regions.is_empty() {
        ask.home_region
    } else {
        r.regions.contains(&ask.region)
    }
}

/// Account, region, VPC, private DNS and preset (everything but the count).
fn allows_shape(r: &Rules, ask: &Ask, cluster_vpcs: &BTreeSet<String>) -> Result<(), Objection> {
    if !allows_account(r, ask) {
        return Err(Objection {
            stage: STAGE_ACCOUNT,
            reason: ACCOUNT_NOT_GRANTED,
            clause: format!("{} grants {} (spec.account)", r.source, describe_account(r)),
        });
    }
    if !allows_region(r, ask) {
        return Err(Objection {
            stage: STAGE_REGION,
            reason: REGION_NOT_ALLOWED,
            clause: format!("{} allows {} (spec.regions)", r.source, describe_regions(r)),
        });
    }
    // The cluster's VPC is in the operator's own account and region.
    let home = ask.account.is_none() && ask.home_region;
    let cluster_vpc = r.vpcs.cluster_vpc && home;
    let vpc_ok = r.vpcs.any
        || match &ask.vpc {
            None => cluster_vpc,
            Some(v) => r.vpcs.ids.contains(v) || (cluster_vpc && cluster_vpcs.contains(v)),
        };
    if !vpc_ok {
        return Err(Objection {
            stage: STAGE_VPC,
            reason: VPC_NOT_ALLOWED,
            clause: format!(
                "{} allows {} (spec.vpcs)",
                r.source,
                describe_vpcs(&r.vpcs, cluster_vpcs)
            ),
        });
    }
    if ask.private_dns && !r.private_dns {
        return Err(Objection {
            stage: STAGE_DNS,
            reason: PRIVATE_DNS_NOT_ALLOWED,
            clause: format!("{} does not allow private DNS (spec.privateDns)", r.source),
        });
    }
    if !r.presets.contains(&ask.preset) {
        return Err(Objection {
            stage: STAGE_PRESET,
            reason: PRESET_NOT_ALLOWED,
            clause: format!(
                "{} allows {} (spec.policyPresets)",
                r.source,
                describe_presets(&r.presets)
            ),
        });
    }
    if ask.take_over && !r.take_over {
        return Err(Objection {
            stage: STAGE_TAKE_OVER,
            reason: TAKE_OVER_NOT_ALLOWED,
            clause: format!(
                "{} does not allow taking over (spec.allowTakeOver)",
                r.source
            ),
        });
    }
    Ok(())
}

/// The rules that count for a namespace: the grants that select it, else the default.
pub fn applicable(grants: &[Grant], ns: &Namespace) -> Vec<Rules> {
    let mut rules: Vec<Rules> = grants
        .iter()
        .filter(|g| g.selects(ns))
        .map(|g| g.rules.clone())
        .collect();
    if rules.is_empty() {
        rules.push(Rules::builtin());
    }
    rules
}

/// Judges `ask`, given the asks of the namespace's older objects (in creation order).
pub fn admit(
    ask: &Ask,
    earlier: &[Ask],
    ns: &Namespace,
    grants: &[Grant],
    cluster_vpcs: &BTreeSet<String>,
) -> Result<Admitted, Refusal> {
    let rules = applicable(grants, ns);
    let used = tally(earlier, &rules, cluster_vpcs)
        .last()
        .copied()
        .unwrap_or(0);
    judge(ask, used, ns, &rules, cluster_vpcs)
}

/// The endpoints the namespace's older objects hold, in creation order: each counts if some
/// rule admits it then. `out[i]`: what the first `i` of them hold (`out.len() == earlier.len()
/// + 1`), so one pass serves every object of a namespace.
pub fn tally(earlier: &[Ask], rules: &[Rules], cluster_vpcs: &BTreeSet<String>) -> Vec<u32> {
    let mut out = Vec::with_capacity(earlier.len() + 1);
    let mut used: u32 = 0;
    out.push(used);
    for e in earlier {
        let fits = rules.iter().any(|r| {
            allows_shape(r, e, cluster_vpcs).is_ok()
                && used.saturating_add(e.endpoints) <= r.max_endpoints
        });
        if fits {
            used = used.saturating_add(e.endpoints);
        }
        out.push(used);
    }
    out
}

/// Judges `ask` under `rules` (from [`applicable`]), with `used` endpoints already held by
/// the namespace's older objects (from [`tally`]).
pub fn judge(
    ask: &Ask,
    used: u32,
    ns: &Namespace,
    rules: &[Rules],
    cluster_vpcs: &BTreeSet<String>,
) -> Result<Admitted, Refusal> {
    let mut objections = Vec::new();
    for r in rules {
        match allows_shape(r, ask, cluster_vpcs) {
            Err(o) => objections.push(o),
            Ok(()) if used.saturating_add(ask.endpoints) <= r.max_endpoints => {
                return Ok(Admitted {
                    by: r.source.clone(),
                    account: r.account.clone(),
                    namespace_endpoints: used + ask.endpoints,
                });
            }
            Ok(()) => objections.push(Objection {
                stage: STAGE_COUNT,
                reason: ENDPOINT_LIMIT,
                clause: format!(
                    "{} allows {} endpoints in this namespace (spec.maxEndpointsPerNamespace)",
                    r.source, r.max_endpoints
                ),
            }),
        }
    }
    Err(refusal(ask, used, ns, rules, objections))
}

fn refusal(
    ask: &Ask,
    used: u32,
    ns: &Namespace,
    rules: &[Rules],
    objections: Vec<Objection>,
) -> Refusal {
    let unreadable = rules
        .iter()
        .find(|r| matches!(r.source, Source::Unreadable(..)));
    // The grant that got furthest says what is wrong (ties: the first by name).
    let best = objections
        .iter()
        .enumerate()
        .max_by_key(|(i, o)| (o.stage, std::cmp::Reverse(*i)))
        .map(|(_, o)| o.clone())
        .expect("one objection per rule");
    let reason = if unreadable.is_some() && objections.iter().all(|o| o.stage <= STAGE_VPC) {
        GRANT_UNREADABLE
    } else {
        best.reason
    };
    let what = match best.reason {
        ACCOUNT_NOT_GRANTED => match &ask.account {
            Some(a) => format!("account {a} is not granted to namespace {}", ns.name),
            None => format!(
                "the operator's own account is not granted to namespace {}",
                ns.name
            ),
        },
        REGION_NOT_ALLOWED => format!(
            "region {} is not allowed for namespace {}",
            ask.region, ns.name
        ),
        VPC_NOT_ALLOWED => format!(
            "VPC {} is not allowed for namespace {}",
            ask.vpc.as_deref().unwrap_or("(the cluster's)"),
            ns.name
        ),
        PRIVATE_DNS_NOT_ALLOWED => format!(
            "private DNS is not allowed for namespace {}: it makes the standard Bedrock hostnames resolve to this endpoint for every workload in the VPC",
            ns.name
        ),
        PRESET_NOT_ALLOWED => format!(
            "policy preset {:?} is not allowed for namespace {}",
            ask.preset, ns.name
        ),
        TAKE_OVER_NOT_ALLOWED => format!(
            "spec.adopt.takeOver is not allowed for namespace {}: it takes endpoints and groups out of another owner's hands",
            ns.name
        ),
        _ => format!(
            "namespace {} would have {} endpoints ({} of older objects, {} of this one)",
            ns.name,
            used + ask.endpoints,
            used,
            ask.endpoints
        ),
    };
    let fix = match reason {
        GRANT_UNREADABLE => "A cluster admin must fix or delete that grant".to_string(),
        ACCOUNT_NOT_GRANTED => format!(
            "Set spec.account to a granted account, or ask a cluster admin for a BedrockPrivateLinkGrant that selects this namespace with account.roleArn in account {}. Nothing was assumed",
            ask.account.as_deref().unwrap_or("(the operator's own)")
        ),
        REGION_NOT_ALLOWED => format!(
            "Use an allowed region in spec.region, or ask a cluster admin to add {} to the regions of a BedrockPrivateLinkGrant that selects this namespace",
            ask.region
        ),
        VPC_NOT_ALLOWED => format!(
            "Use an allowed VPC, or ask a cluster admin to allow {} in a BedrockPrivateLinkGrant that selects this namespace",
            ask.vpc.as_deref().unwrap_or("it")
        ),
        PRIVATE_DNS_NOT_ALLOWED => "Set spec.privateDns: false (workloads then use the endpoint's own DNS names from the published ConfigMap), or ask a cluster admin for a grant with privateDns: true".into(),
        PRESET_NOT_ALLOWED => "Use an allowed preset in spec.policy.preset, or ask a cluster admin to add it to a grant's policyPresets".into(),
        TAKE_OVER_NOT_ALLOWED => "Remove spec.adopt.takeOver (adopting untagged, hand-made resources needs no permission), or ask a cluster admin for a grant with allowTakeOver: true".into(),
        _ => "Remove services or objects, or ask a cluster admin to raise maxEndpointsPerNamespace".into(),
    };
    let clauses: Vec<&str> = objections.iter().map(|o| o.clause.as_str()).collect();
    Refusal {
        reason,
        message: format!("{what}: {}. {fix}", clauses.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    const CLUSTER: &str = "vpc-0000000000000000a";
    const OTHER: &str = "vpc-0000000000000000b";

    fn cluster() -> BTreeSet<String> {
        BTreeSet::from([CLUSTER.to_string()])
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn ask(vpc: Option<&str>, dns: bool, preset: PolicyPreset, endpoints: u32) -> Ask {
        Ask {
            account: None,
            region: "us-east-1".into(),
            home_region: true,
            vpc: vpc.map(str::to_string),
            private_dns: dns,
            preset,
            endpoints,
            take_over: false,
        }
    }

    fn plain() -> Ask {
        ask(None, false, PolicyPreset::InvokeOnly, 1)
    }

    impl Ask {
        fn with_region(mut self, region: &str) -> Ask {
            self.home_region = region == "us-east-1";
            self.region = region.into();
            self
        }
    }

    fn grant(json: serde_json::Value) -> Grant {
        let name = json["name"].as_str().unwrap_or("g").to_string();
        let g: BedrockPrivateLinkGrant = serde_json::from_value(serde_json::json!({
            "apiVersion": "bedrock.privatelink.io/v1alpha1",
            "kind": "BedrockPrivateLinkGrant",
            "metadata": {"name": name},
            "spec": json["spec"],
        }))
        .unwrap();
        Grant::from_resource(&g)
    }

    use PolicyPreset::*;

    #[test]
    fn the_builtin_default_allows_only_the_cluster_vpc_without_private_dns() {
        let team = ns("team-a", &[]);
        let cases: Vec<(&str, Ask, Result<(), &str>)> = vec![
            ("defaults but private DNS off", plain(), Ok(())),
            (
                "cluster VPC named",
                ask(Some(CLUSTER), false, InvokeOnly, 1),
                Ok(()),
            ),
            ("ReadOnly", ask(None, false, ReadOnly, 1), Ok(())),
            ("five endpoints", ask(None, false, InvokeOnly, 5), Ok(())),
            (
                "another VPC",
                ask(Some(OTHER), false, InvokeOnly, 1),
                Err(VPC_NOT_ALLOWED),
            ),
            (
                "private DNS",
                ask(None, true, InvokeOnly, 1),
                Err(PRIVATE_DNS_NOT_ALLOWED),
            ),
            (
                "FullAccess",
                ask(None, false, FullAccess, 1),
                Err(PRESET_NOT_ALLOWED),
            ),
            (
                "Custom",
                ask(None, false, Custom, 1),
                Err(PRESET_NOT_ALLOWED),
            ),
            (
                "six endpoints",
                ask(None, false, InvokeOnly, 6),
                Err(ENDPOINT_LIMIT),
            ),
        ];
        for (name, a, want) in cases {
            let got = admit(&a, &[], &team, &[], &cluster());
            match (want, got) {
                (Ok(()), Ok(adm)) => assert_eq!(adm.by, Source::Builtin, "{name}"),
                (Err(reason), Err(r)) => {
                    assert_eq!(r.reason, reason, "{name}: {}", r.message);
                    assert!(
                        r.message.contains("built-in default"),
                        "{name}: {}",
                        r.message
                    );
                    assert!(r.message.contains("team-a"), "{name}: {}", r.message);
                }
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_grant_that_selects_the_namespace_replaces_the_default() {
        let open = grant(serde_json::json!({"name": "open", "spec": {
            "namespaces": {"names": ["team-a"]},
            "vpcs": {"ids": [OTHER]},
            "privateDns": true,
            "policyPresets": ["InvokeOnly", "FullAccess", "Custom"],
            "maxEndpointsPerNamespace": 8,
        }}));
        let strict = grant(serde_json::json!({"name": "strict", "spec": {
            "namespaces": {"names": ["team-b"]},
            "vpcs": {"clusterVpc": false, "ids": [OTHER]},
            "maxEndpointsPerNamespace": 1,
        }}));
        let grants = [open, strict];
        let (a, b, c) = (ns("team-a", &[]), ns("team-b", &[]), ns("team-c", &[]));
        let cases: Vec<(&str, &Namespace, Ask, Result<&str, &str>)> = vec![
            (
                "other VPC granted",
                &a,
                ask(Some(OTHER), true, Custom, 8),
                Ok("open"),
            ),
            (
                "cluster VPC still allowed",
                &a,
                ask(None, true, FullAccess, 1),
                Ok("open"),
            ),
            (
                "ReadOnly not listed",
                &a,
                ask(None, false, ReadOnly, 1),
                Err(PRESET_NOT_ALLOWED),
            ),
            (
                "more than the grant's limit",
                &a,
                ask(None, false, InvokeOnly, 9),
                Err(ENDPOINT_LIMIT),
            ),
            (
                "strict: cluster VPC taken away",
                &b,
                plain(),
                Err(VPC_NOT_ALLOWED),
            ),
            (
                "strict: the granted VPC",
                &b,
                ask(Some(OTHER), false, InvokeOnly, 1),
                Ok("strict"),
            ),
            (
                "strict: its limit",
                &b,
                ask(Some(OTHER), false, InvokeOnly, 2),
                Err(ENDPOINT_LIMIT),
            ),
            (
                "unselected namespace keeps the default",
                &c,
                ask(Some(OTHER), false, InvokeOnly, 1),
                Err(VPC_NOT_ALLOWED),
            ),
        ];
        for (name, n, a, want) in cases {
            match (want, admit(&a, &[], n, &grants, &cluster())) {
                (Ok(g), Ok(adm)) => assert_eq!(adm.by, Source::Grant(g.into()), "{name}"),
                (Err(reason), Err(r)) => assert_eq!(r.reason, reason, "{name}: {}", r.message),
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn label_selectors_select_namespaces() {
        let by_label = grant(serde_json::json!({"name": "ml", "spec": {
            "namespaces": {"selector": {
                "matchLabels": {"team": "ml"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}],
            }},
            "vpcs": {"any": true},
        }}));
        let everyone = grant(serde_json::json!({"name": "all", "spec": {
            "namespaces": {"selector": {}},
            "vpcs": {"clusterVpc": false},
            "maxEndpointsPerNamespace": 0,
        }}));
        let cases = [
            (ns("x", &[("team", "ml"), ("env", "prod")]), true),
            (ns("x", &[("team", "ml"), ("env", "test")]), false),
            (ns("x", &[("team", "ml")]), false),
            (ns("x", &[("env", "dev")]), false),
        ];
        for (n, selected) in &cases {
            assert_eq!(by_label.selects(n), *selected, "{n:?}");
            assert!(
                everyone.selects(n),
                "an empty selector selects every namespace"
            );
            let r = admit(
                &ask(Some(OTHER), false, InvokeOnly, 1),
                &[],
                n,
                &[by_label.clone(), everyone.clone()],
                &cluster(),
            );
            assert_eq!(r.is_ok(), *selected, "{n:?}: {r:?}");
        }
        // "all" takes everything away from namespaces the other grant does not select.
        let r = admit(&plain(), &[], &ns("y", &[]), &[everyone], &cluster()).unwrap_err();
        assert_eq!(r.reason, VPC_NOT_ALLOWED);
        assert!(
            r.message
                .contains("BedrockPrivateLinkGrant all allows no VPC"),
            "{}",
            r.message
        );
    }

    #[test]
    fn endpoints_count_older_admitted_objects_in_creation_order() {
        let two = grant(serde_json::json!({"name": "two", "spec": {
            "namespaces": {"names": ["team-a"]}, "maxEndpointsPerNamespace": 2}}));
        let team = ns("team-a", &[]);
        let one = plain();
        let refused_vpc = ask(Some(OTHER), false, InvokeOnly, 1);
        type Case<'a> = (&'a str, Vec<Ask>, Ask, Result<u32, ()>);
        let cases: Vec<Case> = vec![
            ("first", vec![], one.clone(), Ok(1)),
            ("second", vec![one.clone()], one.clone(), Ok(2)),
            (
                "third",
                vec![one.clone(), one.clone()],
                one.clone(),
                Err(()),
            ),
            (
                "refused older objects do not count",
                vec![refused_vpc.clone(), refused_vpc, one.clone()],
                one.clone(),
                Ok(2),
            ),
            (
                "an older object over the limit does not count",
                vec![ask(None, false, InvokeOnly, 3), one.clone()],
                one.clone(),
                Ok(2),
            ),
            (
                "two services at once",
                vec![one.clone()],
                ask(None, false, InvokeOnly, 2),
                Err(()),
            ),
        ];
        for (name, earlier, a, want) in cases {
            let got = admit(&a, &earlier, &team, std::slice::from_ref(&two), &cluster());
            match (want, got) {
                (Ok(n), Ok(adm)) => assert_eq!(adm.namespace_endpoints, n, "{name}"),
                (Err(()), Err(r)) => {
                    assert_eq!(r.reason, ENDPOINT_LIMIT, "{name}");
                    assert!(
                        r.message.contains("allows 2 endpoints"),
                        "{name}: {}",
                        r.message
                    );
                }
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn the_best_fitting_grant_names_the_reason_and_every_grant_is_listed() {
        let vpc_only = grant(serde_json::json!({"name": "a-vpc", "spec": {
            "namespaces": {"names": ["t"]}, "vpcs": {"ids": [OTHER]}}}));
        let dns_only = grant(serde_json::json!({"name": "b-dns", "spec": {
            "namespaces": {"names": ["t"]}, "privateDns": true}}));
        let r = admit(
            &ask(Some(OTHER), true, InvokeOnly, 1),
            &[],
            &ns("t", &[]),
            &[vpc_only, dns_only],
            &cluster(),
        )
        .unwrap_err();
        // a-vpc allows the VPC but not private DNS: it got further than b-dns.
        assert_eq!(r.reason, PRIVATE_DNS_NOT_ALLOWED, "{}", r.message);
        assert!(
            r.message
                .contains("BedrockPrivateLinkGrant a-vpc does not allow private DNS"),
            "{}",
            r.message
        );
        assert!(
            r.message.contains(&format!(
                "BedrockPrivateLinkGrant b-dns allows only the cluster's VPC ({CLUSTER})"
            )),
            "{}",
            r.message
        );
        assert!(
            r.message.contains("spec.privateDns: false"),
            "{}",
            r.message
        );
    }

    const B: &str = "111111111111";
    const C: &str = "222222222222";

    fn in_account(account: Option<&str>, region: &str) -> Ask {
        Ask {
            account: account.map(str::to_string),
            home_region: region == "us-east-1",
            region: region.into(),
            vpc: Some(OTHER.into()),
            ..plain()
        }
    }

    #[test]
    fn take_over_needs_a_grant_that_allows_it() {
        let team = ns("team-a", &[]);
        let taking = Ask {
            take_over: true,
            ..plain()
        };
        let r = admit(&taking, &[], &team, &[], &cluster()).unwrap_err();
        assert_eq!(r.reason, TAKE_OVER_NOT_ALLOWED);
        assert!(r.message.contains("allowTakeOver: true"), "{}", r.message);
        let plain_grant = grant(serde_json::json!({"name": "plain", "spec": {
            "namespaces": {"names": ["team-a"]}}}));
        let r = admit(
            &taking,
            &[],
            &team,
            std::slice::from_ref(&plain_grant),
            &cluster(),
        )
        .unwrap_err();
        assert_eq!(r.reason, TAKE_OVER_NOT_ALLOWED);
        assert!(
            r.message
                .contains("BedrockPrivateLinkGrant plain does not allow taking over"),
            "{}",
            r.message
        );
        // Adoption without takeOver needs nothing; a grant with allowTakeOver admits it.
        assert!(admit(&plain(), &[], &team, &[plain_grant], &cluster()).is_ok());
        let trusted = grant(serde_json::json!({"name": "trusted", "spec": {
            "namespaces": {"names": ["team-a"]}, "allowTakeOver": true}}));
        assert!(admit(&taking, &[], &team, &[trusted], &cluster()).is_ok());
    }

    #[test]
    fn accounts_and_regions_are_granted_per_namespace() {
        let b = grant(serde_json::json!({"name": "b", "spec": {
            "namespaces": {"names": ["team-b"]},
            "account": {"roleArn": format!("arn:aws:iam::{B}:role/bpl"), "externalId": "x1"},
            "regions": ["us-east-1", "us-west-2"],
            "vpcs": {"ids": [OTHER]},
        }}));
        let c = grant(serde_json::json!({"name": "c", "spec": {
            "namespaces": {"selector": {"matchLabels": {"account": "c"}}},
            "account": {"roleArn": format!("arn:aws:iam::{C}:role/bpl")},
            "vpcs": {"any": true},
        }}));
        let own_west = grant(serde_json::json!({"name": "own-west", "spec": {
            "namespaces": {"names": ["team-own"]},
            "regions": ["us-west-2"],
            "vpcs": {"any": true},
        }}));
        let grants = [b, c, own_west];
        let (nb, nc, nown, nobody) = (
            ns("team-b", &[]),
            ns("team-c", &[("account", "c")]),
            ns("team-own", &[]),
            ns("team-x", &[]),
        );
        type Case<'a> = (
            &'a str,
            &'a Namespace,
            Ask,
            Result<Option<&'a str>, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "B in its first region",
                &nb,
                in_account(Some(B), "us-east-1"),
                Ok(Some(B)),
            ),
            (
                "B in its second region",
                &nb,
                in_account(Some(B), "us-west-2"),
                Ok(Some(B)),
            ),
            (
                "B in a region not listed",
                &nb,
                in_account(Some(B), "eu-west-1"),
                Err(REGION_NOT_ALLOWED),
            ),
            (
                "C, not granted to team-b",
                &nb,
                in_account(Some(C), "us-east-1"),
                Err(ACCOUNT_NOT_GRANTED),
            ),
            (
                "team-b's own account: its grant names B only",
                &nb,
                in_account(None, "us-east-1"),
                Err(ACCOUNT_NOT_GRANTED),
            ),
            (
                "C by label, its default region",
                &nc,
                in_account(Some(C), "us-east-1"),
                Ok(Some(C)),
            ),
            (
                "C outside the operator's region",
                &nc,
                in_account(Some(C), "us-west-2"),
                Err(REGION_NOT_ALLOWED),
            ),
            (
                "own account, another region",
                &nown,
                in_account(None, "us-west-2"),
                Ok(None),
            ),
            (
                "own account: the home region is not listed",
                &nown,
                in_account(None, "us-east-1"),
                Err(REGION_NOT_ALLOWED),
            ),
            (
                "no grant: no other account",
                &nobody,
                in_account(Some(B), "us-east-1"),
                Err(ACCOUNT_NOT_GRANTED),
            ),
            (
                "no grant: no other region",
                &nobody,
                ask(None, false, InvokeOnly, 1).with_region("us-west-2"),
                Err(REGION_NOT_ALLOWED),
            ),
        ];
        for (name, n, a, want) in cases {
            match (want, admit(&a, &[], n, &grants, &cluster())) {
                (Ok(account), Ok(adm)) => assert_eq!(
                    adm.account.as_ref().map(|r| r.account_id()),
                    account,
                    "{name}"
                ),
                (Err(reason), Err(r)) => assert_eq!(r.reason, reason, "{name}: {}", r.message),
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
        // The admitting grant's role, external id included, is what the operator assumes.
        let adm = admit(
            &in_account(Some(B), "us-west-2"),
            &[],
            &nb,
            &grants,
            &cluster(),
        )
        .unwrap();
        let role = adm.account.unwrap();
        assert_eq!(role.role_arn, format!("arn:aws:iam::{B}:role/bpl"));
        assert_eq!(role.external_id.as_deref(), Some("x1"));
        // Messages name the account or region, the grant, and what to change.
        let r = admit(
            &in_account(Some(C), "us-east-1"),
            &[],
            &nb,
            &grants,
            &cluster(),
        )
        .unwrap_err();
        assert!(
            r.message
                .contains(&format!("account {C} is not granted to namespace team-b")),
            "{}",
            r.message
        );
        assert!(
            r.message.contains(&format!(
                "BedrockPrivateLinkGrant b grants only account {B}"
            )),
            "{}",
            r.message
        );
        let r = admit(
            &in_account(Some(B), "eu-west-1"),
            &[],
            &nb,
            &grants,
            &cluster(),
        )
        .unwrap_err();
        assert!(
            r.message.contains("region eu-west-1 is not allowed"),
            "{}",
            r.message
        );
        assert!(
            r.message
                .contains("allows only us-east-1, us-west-2 (spec.regions)"),
            "{}",
            r.message
        );
    }

    #[test]
    fn the_cluster_vpc_is_only_in_the_operators_own_account_and_region() {
        let own_west = grant(serde_json::json!({"name": "w", "spec": {
            "namespaces": {"names": ["t"]}, "regions": ["us-east-1", "us-west-2"]}}));
        let t = ns("t", &[]);
        assert!(
            admit(
                &plain(),
                &[],
                &t,
                std::slice::from_ref(&own_west),
                &cluster()
            )
            .is_ok()
        );
        let r = admit(
            &plain().with_region("us-west-2"),
            &[],
            &t,
            &[own_west],
            &cluster(),
        )
        .unwrap_err();
        assert_eq!(r.reason, VPC_NOT_ALLOWED, "{}", r.message);
    }

    #[test]
    fn asks_name_the_operators_own_account_as_none() {
        let home = Home {
            region: "us-east-1".into(),
            account: Some("123456789012".into()),
        };
        let spec = |json: serde_json::Value| -> BedrockPrivateLinkSpec {
            serde_json::from_value(json).unwrap()
        };
        let a = Ask::of(&spec(serde_json::json!({"account": "123456789012"})), &home);
        assert_eq!((a.account, a.home_region), (None, true));
        let a = Ask::of(
            &spec(serde_json::json!({"account": B, "region": "us-west-2"})),
            &home,
        );
        assert_eq!(a.account.as_deref(), Some(B));
        assert_eq!((a.region.as_str(), a.home_region), ("us-west-2", false));
        let a = Ask::of(&spec(serde_json::json!({"region": "us-east-1"})), &home);
        assert!(a.home_region);
    }

    #[test]
    fn an_unreadable_grant_fails_closed() {
        let broken = Grant::unreadable("typo".into(), "bad selector".into());
        let r = admit(
            &plain(),
            &[],
            &ns("anyone", &[]),
            std::slice::from_ref(&broken),
            &cluster(),
        )
        .unwrap_err();
        assert_eq!(r.reason, GRANT_UNREADABLE);
        assert!(r.message.contains("typo"), "{}", r.message);
        // It does not take away what another grant allows.
        let ok =
            grant(serde_json::json!({"name": "ok", "spec": {"namespaces": {"names": ["anyone"]}}}));
        assert!(admit(&plain(), &[], &ns("anyone", &[]), &[broken, ok], &cluster()).is_ok());
        // A selector the API server let through but that cannot be evaluated.
        let mut g: BedrockPrivateLinkGrant = serde_json::from_value(serde_json::json!({
            "apiVersion": "bedrock.privatelink.io/v1alpha1", "kind": "BedrockPrivateLinkGrant",
            "metadata": {"name": "odd"}, "spec": {"namespaces": {"selector": {}}}}))
        .unwrap();
        g.spec.namespaces.selector = Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Near".into(),
                values: None,
            }]),
            match_labels: None,
        });
        assert!(matches!(
            Grant::from_resource(&g).rules.source,
            Source::Unreadable(..)
        ));
    }
}
