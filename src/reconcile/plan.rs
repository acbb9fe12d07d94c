//! Step 3, plan (pure): the desired state and the minimal changes that reach it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::validate::Valid;
use crate::api::{BedrockPrivateLink, BedrockPrivateLinkSpec, DeletionPolicy};
use crate::aws::{
    CreateEndpoint, EndpointFacts, GroupFacts, IpRule, ModifyEndpoint, RuleSource, TAG_CLUSTER,
    TAG_DELETION_POLICY, TAG_NAME, TAG_NAMESPACE, TAG_OWNER_UID, TAG_SERVICE, TAG_SPEC_KEYS,
};
use crate::catalog::BedrockService;
use crate::names::{self, GROUP_NAME_MAX, TAG_VALUE_MAX};
use crate::policy;

/// Who the object is, for names and ownership tags (derived from the uid).
#[derive(Debug, Clone)]
pub struct Owner {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// The operator's cluster identity (--cluster-id).
    pub cluster: String,
    pub deletion_policy: DeletionPolicy,
}

impl Owner {
    pub fn of(obj: &BedrockPrivateLink, cluster: &str) -> Self {
        use kube::ResourceExt;
        Self {
            uid: obj.uid().unwrap_or_default(),
            name: obj.name_any(),
            namespace: obj.namespace().unwrap_or_default(),
            cluster: cluster.to_string(),
            deletion_policy: obj.spec.deletion_policy,
        }
    }

    /// The ownership rule (ownership.rs): does a resource with these tags belong to us?
    pub fn owns(&self, tags: &BTreeMap<String, String>) -> bool {
        super::ownership::is_ours(tags, &self.cluster, &self.uid)
    }

    /// The spec's tags, ours (which win), and the record of which spec keys we set.
    pub fn tags(&self, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut tags = extra.clone();
        tags.insert(TAG_OWNER_UID.into(), self.uid.clone());
        tags.insert(TAG_CLUSTER.into(), self.cluster.clone());
        let policy = match self.deletion_policy {
            DeletionPolicy::Delete => "Delete",
            DeletionPolicy::Retain => "Retain",
        };
        tags.insert(TAG_DELETION_POLICY.into(), policy.into());
        tags.insert(TAG_NAME.into(), names::fit(&self.name, TAG_VALUE_MAX));
        tags.insert(TAG_NAMESPACE.into(), self.namespace.clone());
        tags.insert(TAG_SPEC_KEYS.into(), spec_keys_record(extra.keys()));
        tags
    }

    /// The `Name` tag: `bpl-<namespace>-<name>[-<suffix>]`, within a tag value's limit.
    fn name_tag(&self, suffix: Option<&str>) -> String {
        let base = format!("bpl-{}-{}", self.namespace, self.name);
        let full = match suffix {
            Some(s) => format!("{base}-{s}"),
            None => base,
        };
        names::fit(&full, TAG_VALUE_MAX)
    }

    /// Group names are unique per VPC; deriving it from the uid makes a retried create fail
    /// with InvalidGroup.Duplicate instead of making a second group.
    pub fn group_name(&self) -> String {
        format!("bpl-{}", self.uid)
    }
}

/// Matches every `Owner::group_name` (EC2 filter wildcard).
pub const GROUP_NAME_PATTERN: &str = "bpl-*";

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredGroup {
    pub name: String,
    /// spec.adopt.securityGroupId: the group to use instead of the one named `name`.
    pub adopted_id: Option<String>,
    pub description: String,
    pub vpc_id: String,
    pub ingress: BTreeSet<IpRule>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredEndpoint {
    pub service: BedrockService,
    pub service_name: String,
    pub subnet_ids: BTreeSet<String>,
    pub private_dns: bool,
    pub policy: Value,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub vpc_id: String,
    /// The managed group, or None when the spec names existing groups.
    pub group: Option<DesiredGroup>,
    pub existing_group_ids: Vec<String>,
    pub endpoints: Vec<DesiredEndpoint>,
}

impl Desired {
    /// The desired endpoint of a service (by its full service name).
    pub fn endpoint_for(&self, service_name: &str) -> Option<&DesiredEndpoint> {
        self.endpoints
            .iter()
            .find(|d| d.service_name == service_name)
    }
}

pub fn desired(spec: &BedrockPrivateLinkSpec, valid: &Valid, owner: &Owner) -> Desired {
    let existing = spec
        .security_group
        .as_ref()
        .and_then(|g| g.existing_ids.clone());
    let group = match &existing {
        Some(_) => None,
        None => {
            let allow = spec
                .security_group
                .as_ref()
                .and_then(|g| g.allow_from.clone())
                .unwrap_or_default();
            let mut sources: Vec<RuleSource> = Vec::new();
            let explicit = allow.cidrs.is_some() || allow.security_group_ids.is_some();
            for c in allow.cidrs.iter().flatten() {
                sources.push(if c.contains(':') {
                    RuleSource::Ipv6(c.clone())
                } else {
                    RuleSource::Ipv4(c.clone())
                });
            }
            for g in allow.security_group_ids.iter().flatten() {
                sources.push(RuleSource::Group(g.clone()));
            }
            if !explicit {
                sources.extend(valid.vpc.ipv4_cidrs.iter().cloned().map(RuleSource::Ipv4));
                sources.extend(valid.vpc.ipv6_cidrs.iter().cloned().map(RuleSource::Ipv6));
            }
            let mut tags = owner.tags(&spec.tags);
            tags.insert("Name".into(), owner.name_tag(None));
            let description = format!(
                "Bedrock PrivateLink endpoints of {}/{} (HTTPS in only)",
                owner.namespace, owner.name
            );
            Some(DesiredGroup {
                name: owner.group_name(),
                adopted_id: spec
                    .adopt
                    .as_ref()
                    .and_then(|a| a.security_group_id.clone()),
                description: names::fit(&description, GROUP_NAME_MAX),
                vpc_id: valid.vpc.id.clone(),
                ingress: sources.into_iter().map(IpRule::https_from).collect(),
                tags,
            })
        }
    };
    let endpoints = valid
        .placements
        .iter()
        .map(|p| {
            let mut tags = owner.tags(&spec.tags);
            tags.insert(TAG_SERVICE.into(), p.service.as_str().into());
            tags.insert("Name".into(), owner.name_tag(Some(p.service.as_str())));
            DesiredEndpoint {
                service: p.service,
                service_name: p.service_name.clone(),
                subnet_ids: p.subnet_ids.clone(),
                private_dns: spec.private_dns,
                policy: p.policy.clone(),
                tags,
            }
        })
        .collect();
    Desired {
        vpc_id: valid.vpc.id.clone(),
        group,
        existing_group_ids: existing.unwrap_or_default(),
        endpoints,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPlan {
    pub authorize: Vec<IpRule>,
    pub revoke_ingress: Vec<IpRule>,
    pub revoke_egress: Vec<IpRule>,
}

impl GroupPlan {
    pub fn is_empty(&self) -> bool {
        self.authorize.is_empty() && self.revoke_ingress.is_empty() && self.revoke_egress.is_empty()
    }
}

/// Only the rules that differ: never revoke-all-then-re-add (that would be an outage).
/// Egress is emptied: an endpoint's group needs no outbound rule.
pub fn plan_group(desired: &DesiredGroup, observed: &GroupFacts) -> GroupPlan {
    GroupPlan {
        authorize: desired
            .ingress
            .difference(&observed.ingress)
            .cloned()
            .collect(),
        revoke_ingress: observed
            .ingress
            .difference(&desired.ingress)
            .cloned()
            .collect(),
        revoke_egress: observed.egress.iter().cloned().collect(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EndpointAction {
    Create(CreateEndpoint),
    Modify(ModifyEndpoint),
    Delete {
        id: String,
        reason: String,
    },
    /// AWS gave up on the endpoint (failed, rejected, expired): delete it; the replacement is
    /// created once it is gone.
    Replace {
        id: String,
        service_name: String,
        state: String,
        last_error: Option<String>,
    },
    /// In a state where AWS refuses changes (pending, or deleting before a replacement, or a
    /// failed endpoint whose replacement waits for its backoff); look again soon.
    Wait {
        id: String,
        state: String,
    },
}

/// States AWS never leaves by itself: only deleting and creating again helps.
pub fn is_dead(e: &EndpointFacts) -> bool {
    e.state_is("failed") || e.state_is("rejected") || e.state_is("expired")
}

/// The endpoint actions, given the endpoints we own, the group ids they should carry, and the
/// services whose dead endpoint may be replaced now (the others wait for their backoff).
pub fn plan_endpoints(
    desired: &Desired,
    owned: &[EndpointFacts],
    group_ids: &[String],
    owner: &Owner,
    may_replace: &BTreeSet<String>,
) -> Vec<EndpointAction> {
    let mut actions = Vec::new();
    let in_vpc: Vec<&EndpointFacts> = owned
        .iter()
        .filter(|e| e.vpc_id == desired.vpc_id)
        .collect();
    for d in &desired.endpoints {
        let mine: Vec<&EndpointFacts> = in_vpc
            .iter()
            .copied()
            .filter(|e| e.service_name == d.service_name)
            .collect();
        let replace = may_replace.contains(&d.service_name);
        actions.extend(plan_service(desired, d, &mine, group_ids, owner, replace));
    }
    for e in owned.iter().filter(|e| !e.is_deleted_or_deleting()) {
        let wanted = desired
            .endpoints
            .iter()
            .any(|d| d.service_name == e.service_name && e.vpc_id == desired.vpc_id);
        if !wanted {
            actions.push(EndpointAction::Delete {
                id: e.id.clone(),
                reason: format!("{} is no longer in spec.services", e.service_name),
            });
        }
    }
    actions
}

/// One service's endpoint: create, wait, replace, or bring it in line. Never more than one
/// endpoint per service at a time: a new one is created only when no other is left, not even
/// one still deleting.
fn plan_service(
    desired: &Desired,
    d: &DesiredEndpoint,
    mine: &[&EndpointFacts],
    group_ids: &[String],
    owner: &Owner,
    may_replace: bool,
) -> Vec<EndpointAction> {
    let mut live: Vec<&EndpointFacts> = mine
        .iter()
        .copied()
        .filter(|e| !e.is_deleted_or_deleting())
        .collect();
    // Keep the most advanced one if a duplicate ever slipped through; delete the rest.
    live.sort_by_key(|e| (!e.state_is("available"), is_dead(e), e.id.clone()));
    let mut actions: Vec<EndpointAction> = live
        .iter()
        .skip(1)
        .map(|extra| EndpointAction::Delete {
            id: extra.id.clone(),
            reason: format!("duplicate endpoint for {}", d.service),
        })
        .collect();
    let Some(current) = live.first() else {
        match mine.iter().find(|e| e.state_is("deleting")) {
            Some(going) => actions.push(EndpointAction::Wait {
                id: going.id.clone(),
                state: going.state.clone(),
            }),
            None => actions.push(EndpointAction::Create(create_request(
                desired, d, group_ids, owner,
            ))),
        }
        return actions;
    };
    if is_dead(current) {
        actions.push(if may_replace {
            EndpointAction::Replace {
                id: current.id.clone(),
                service_name: current.service_name.clone(),
                state: current.state.clone(),
                last_error: current.last_error.clone(),
            }
        } else {
            EndpointAction::Wait {
                id: current.id.clone(),
                state: current.state.clone(),
            }
        });
        return actions;
    }
    if current.state_is("pending") || current.state_is("pendingacceptance") {
        actions.push(EndpointAction::Wait {
            id: current.id.clone(),
            state: current.state.clone(),
        });
        return actions;
    }
    let m = modification(d, current, group_ids);
    if !m.is_noop() {
        actions.push(EndpointAction::Modify(m));
    }
    actions
}

fn create_request(
    desired: &Desired,
    d: &DesiredEndpoint,
    group_ids: &[String],
    owner: &Owner,
) -> CreateEndpoint {
    let mut req = CreateEndpoint {
        vpc_id: desired.vpc_id.clone(),
        service_name: d.service_name.clone(),
        subnet_ids: d.subnet_ids.iter().cloned().collect(),
        group_ids: group_ids.to_vec(),
        private_dns: d.private_dns,
        policy: d.policy.to_string(),
        client_token: String::new(),
        tags: d.tags.clone(),
    };
    req.client_token = client_token(owner, &req);
    req
}

/// The in-place changes that bring `current` to `d` (subnets, groups, policy, private DNS).
fn modification(
    d: &DesiredEndpoint,
    current: &EndpointFacts,
    group_ids: &[String],
) -> ModifyEndpoint {
    let wanted_groups: BTreeSet<String> = group_ids.iter().cloned().collect();
    let policy_differs = current
        .policy
        .as_ref()
        .is_none_or(|p| !policy::equivalent(p, &d.policy));
    ModifyEndpoint {
        id: current.id.clone(),
        add_subnets: d
            .subnet_ids
            .difference(&current.subnet_ids)
            .cloned()
            .collect(),
        remove_subnets: current
            .subnet_ids
            .difference(&d.subnet_ids)
            .cloned()
            .collect(),
        add_groups: wanted_groups
            .difference(&current.group_ids)
            .cloned()
            .collect(),
        remove_groups: current
            .group_ids
            .difference(&wanted_groups)
            .cloned()
            .collect(),
        policy: policy_differs.then(|| d.policy.to_string()),
        private_dns: (current.private_dns != d.private_dns).then_some(d.private_dns),
    }
}

/// Tag changes on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagPlan {
    /// Tags to add or overwrite.
    pub set: BTreeMap<String, String>,
    /// Keys to remove: spec.tags keys we set earlier (by the record tag) that the spec no
    /// longer has. Tags someone else set are never removed.
    pub remove: Vec<String>,
}

impl TagPlan {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// `desired` is what `Owner::tags` (plus Name and service) gives; `observed` the resource's
/// tags now.
pub fn plan_tags(
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
) -> TagPlan {
    let set = desired
        .iter()
        .filter(|(k, v)| observed.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let recorded: BTreeSet<&str> = observed
        .get(TAG_SPEC_KEYS)
        .map(|r| r.split('.').collect())
        .unwrap_or_default();
    let remove = observed
        .keys()
        .filter(|k| !desired.contains_key(*k) && recorded.contains(key_hash(k).as_str()))
        .cloned()
        .collect();
    TagPlan { set, remove }
}

/// The record of spec.tags keys: 6 hex digits of each key's SHA-256, sorted, dot-separated
/// (30 keys, the most spec.tags holds, take 209 of a tag value's 256 characters).
pub fn spec_keys_record<'a>(keys: impl IntoIterator<Item = &'a String>) -> String {
    let hashes: BTreeSet<String> = keys.into_iter().map(|k| key_hash(k)).collect();
    hashes.into_iter().collect::<Vec<_>>().join(".")
}

fn key_hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .take(3)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic and request-specific: a retried identical create returns the same endpoint;
/// AWS allows 64 ASCII characters.
pub fn client_token(owner: &Owner, req: &CreateEndpoint) -> String {
    token_of(&[
        &owner.uid,
        &req.vpc_id,
        &req.service_name,
        &req.subnet_ids.join(","),
        &req.group_ids.join(","),
        &req.private_dns.to_string(),
        &policy::hash(&serde_json::from_str(&req.policy).unwrap_or(Value::Null)),
    ])
}

/// `bpl-` and 48 hex digits of the parts' SHA-256 (each part NUL-terminated): within
/// ClientToken's 64 characters.
fn token_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("bpl-{}", &hex[..48])
}

/// The token to use when `token` answers with an endpoint that is already deleted or deleting
/// (AWS keeps a ClientToken bound to its endpoint after the endpoint is gone, so recreating an
/// endpoint deleted out of band with the same request would get the dead one back forever).
/// Chained and deterministic: after a crash the same chain leads to the same new endpoint.
pub fn successor_token(token: &str, dead_endpoint_id: &str) -> String {
    token_of(&[token, dead_endpoint_id])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::VpcFacts;
    use crate::reconcile::validate::ServicePlacement;
    use serde_json::json;

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn owner() -> Owner {
        Owner {
            uid: "0d5c6f9e-uid".into(),
            name: "demo".into(),
            namespace: "team-a".into(),
            cluster: "blue".into(),
            deletion_policy: DeletionPolicy::Delete,
        }
    }

    fn valid() -> Valid {
        Valid {
            region: "us-east-1".into(),
            vpc: VpcFacts {
                id: "vpc-1".into(),
                ipv4_cidrs: vec!["10.0.0.0/16".into(), "10.1.0.0/16".into()],
                ipv6_cidrs: vec![],
                dns_support: true,
                dns_hostnames: true,
            },
            placements: vec![ServicePlacement {
                service: BedrockService::BedrockRuntime,
                service_name: "com.amazonaws.us-east-1.bedrock-runtime".into(),
                subnet_ids: ["subnet-a", "subnet-b"].map(String::from).into(),
                azs: ["us-east-1a", "us-east-1b"].map(String::from).into(),
                policy: policy::render(None, "us-east-1").unwrap(),
            }],
            skipped: vec![],
            reduced_resilience: None,
        }
    }

    fn spec() -> BedrockPrivateLinkSpec {
        serde_json::from_str("{}").unwrap()
    }

    #[test]
    fn default_group_admits_https_from_the_vpc_cidrs_only() {
        let d = desired(&spec(), &valid(), &owner());
        let g = d.group.unwrap();
        let rules: Vec<String> = g.ingress.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            rules,
            vec![
                "tcp/443-443 from 10.0.0.0/16",
                "tcp/443-443 from 10.1.0.0/16"
            ]
        );
        assert_eq!(g.tags[TAG_OWNER_UID], "0d5c6f9e-uid");
        assert_eq!(g.name, "bpl-0d5c6f9e-uid");
    }

    #[test]
    fn group_plan_touches_only_differing_rules_and_drops_egress() {
        let d = desired(&spec(), &valid(), &owner()).group.unwrap();
        let observed = GroupFacts {
            ingress: [
                IpRule::https_from(RuleSource::Ipv4("10.0.0.0/16".into())),
                IpRule::https_from(RuleSource::Ipv4("0.0.0.0/0".into())),
            ]
            .into(),
            egress: [IpRule {
                protocol: "-1".into(),
                from_port: -1,
                to_port: -1,
                source: RuleSource::Ipv4("0.0.0.0/0".into()),
            }]
            .into(),
            ..Default::default()
        };
        let p = plan_group(&d, &observed);
        assert_eq!(
            p.authorize,
            vec![IpRule::https_from(RuleSource::Ipv4("10.1.0.0/16".into()))]
        );
        assert_eq!(
            p.revoke_ingress,
            vec![IpRule::https_from(RuleSource::Ipv4("0.0.0.0/0".into()))]
        );
        assert_eq!(p.revoke_egress.len(), 1);
        let settled = GroupFacts {
            ingress: d.ingress.clone(),
            ..Default::default()
        };
        assert!(plan_group(&d, &settled).is_empty());
    }

    fn endpoint(id: &str, state: &str) -> EndpointFacts {
        EndpointFacts {
            id: id.into(),
            service_name: "com.amazonaws.us-east-1.bedrock-runtime".into(),
            vpc_id: "vpc-1".into(),
            state: state.into(),
            subnet_ids: ["subnet-a", "subnet-b"].map(String::from).into(),
            group_ids: ["sg-1".to_string()].into(),
            private_dns: true,
            policy: Some(std::sync::Arc::new(
                policy::render(None, "us-east-1").unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn endpoint_plans_table() {
        let d = desired(&spec(), &valid(), &owner());
        let groups = vec!["sg-1".to_string()];
        // Nothing yet: one create, with a deterministic token.
        let a = plan_endpoints(&d, &[], &groups, &owner(), &none());
        let b = plan_endpoints(&d, &[], &groups, &owner(), &none());
        assert!(matches!(&a[..], [EndpointAction::Create(c)] if c.client_token.len() <= 64));
        assert_eq!(a, b);
        // In sync: nothing.
        assert!(
            plan_endpoints(
                &d,
                &[endpoint("vpce-1", "available")],
                &groups,
                &owner(),
                &none()
            )
            .is_empty()
        );
        // Same policy written differently: nothing.
        let mut reworded = endpoint("vpce-1", "Available");
        reworded.policy = Some(std::sync::Arc::new(
            json!({"Statement":{"Effect":"Allow","Principal":{"AWS":"*"},"Resource":"*","Action":["bedrock:InvokeModelWithResponseStream","bedrock:InvokeModel"],"Sid":"BedrockInvoke"},"Version":"2012-10-17"}),
        ));
        assert!(plan_endpoints(&d, &[reworded], &groups, &owner(), &none()).is_empty());
        // Pending: wait, change nothing.
        let mut pending = endpoint("vpce-1", "pending");
        pending.private_dns = false;
        assert!(matches!(
            &plan_endpoints(&d, &[pending], &groups, &owner(), &none())[..],
            [EndpointAction::Wait { .. }]
        ));
        // Drifted: minimal modify.
        let mut drifted = endpoint("vpce-1", "available");
        drifted.subnet_ids = ["subnet-a", "subnet-c"].map(String::from).into();
        drifted.group_ids = ["sg-1", "sg-foreign"].map(String::from).into();
        drifted.private_dns = false;
        drifted.policy = Some(std::sync::Arc::new(
            json!({"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Principal":"*"}]}),
        ));
        let plan = plan_endpoints(&d, &[drifted], &groups, &owner(), &none());
        let EndpointAction::Modify(m) = &plan[0] else {
            panic!("{plan:?}")
        };
        assert_eq!(m.add_subnets, vec!["subnet-b"]);
        assert_eq!(m.remove_subnets, vec!["subnet-c"]);
        assert_eq!(m.remove_groups, vec!["sg-foreign"]);
        assert!(m.add_groups.is_empty());
        assert_eq!(m.private_dns, Some(true));
        assert!(m.policy.is_some());
        // A service dropped from the spec, and a duplicate: deleted.
        let mut agent = endpoint("vpce-9", "available");
        agent.service_name = "com.amazonaws.us-east-1.bedrock-agent".into();
        let plan = plan_endpoints(
            &d,
            &[
                endpoint("vpce-1", "available"),
                endpoint("vpce-2", "pending"),
                agent,
            ],
            &groups,
            &owner(),
            &none(),
        );
        let deleted: Vec<&str> = plan
            .iter()
            .filter_map(|a| match a {
                EndpointAction::Delete { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, vec!["vpce-2", "vpce-9"]);
        // One still deleting: wait for it to go (never two at a time); gone: create.
        assert!(matches!(
            &plan_endpoints(
                &d,
                &[endpoint("vpce-1", "deleting")],
                &groups,
                &owner(),
                &none()
            )[..],
            [EndpointAction::Wait { .. }]
        ));
        assert!(matches!(
            &plan_endpoints(
                &d,
                &[endpoint("vpce-1", "deleted")],
                &groups,
                &owner(),
                &none()
            )[..],
            [EndpointAction::Create(_)]
        ));
    }

    #[test]
    fn dead_endpoints_are_replaced_only_when_allowed() {
        let d = desired(&spec(), &valid(), &owner());
        let groups = vec!["sg-1".to_string()];
        for state in ["failed", "rejected", "Expired"] {
            let dead = endpoint("vpce-1", state);
            let allowed: BTreeSet<String> = [dead.service_name.clone()].into();
            assert!(matches!(
                &plan_endpoints(&d, std::slice::from_ref(&dead), &groups, &owner(), &allowed)[..],
                [EndpointAction::Replace { id, .. }] if id == "vpce-1"
            ));
            assert!(matches!(
                &plan_endpoints(&d, &[dead], &groups, &owner(), &none())[..],
                [EndpointAction::Wait { .. }]
            ));
        }
        // An available one beside a failed one: keep the available, delete the failed.
        let plan = plan_endpoints(
            &d,
            &[
                endpoint("vpce-1", "failed"),
                endpoint("vpce-2", "available"),
            ],
            &groups,
            &owner(),
            &none(),
        );
        assert!(matches!(&plan[..], [EndpointAction::Delete { id, .. }] if id == "vpce-1"));
    }

    #[test]
    fn tags_change_in_place_and_only_ours_are_removed() {
        let tags = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let o = owner();
        let before = o.tags(&tags(&[("team", "a"), ("gone", "x")]));
        let mut observed = before.clone();
        observed.insert("cost-center".into(), "foreign".into());
        let after = o.tags(&tags(&[("team", "b"), ("new", "y")]));
        let p = plan_tags(&after, &observed);
        assert_eq!(p.set.get("team").map(String::as_str), Some("b"));
        assert_eq!(p.set.get("new").map(String::as_str), Some("y"));
        assert!(
            p.set.contains_key(TAG_SPEC_KEYS),
            "the record follows the spec"
        );
        assert_eq!(
            p.remove,
            vec!["gone".to_string()],
            "cost-center is not ours"
        );
        assert!(plan_tags(&before, &before).is_empty());
        // 30 keys of 128 characters: the record still fits a tag value.
        let many: BTreeMap<String, String> = (0..30)
            .map(|i| (format!("{i:0>128}"), "v".to_string()))
            .collect();
        assert!(spec_keys_record(many.keys()).len() <= 256);
    }

    #[test]
    fn cluster_and_deletion_policy_tags_follow_the_owner() {
        let mut o = owner();
        let tags = o.tags(&BTreeMap::new());
        assert_eq!(tags[TAG_CLUSTER], "blue");
        assert_eq!(tags[TAG_DELETION_POLICY], "Delete");
        // A resource made before the cluster tag (migration): only the new tags are set.
        let mut legacy = tags.clone();
        legacy.remove(TAG_CLUSTER);
        legacy.remove(TAG_DELETION_POLICY);
        assert!(o.owns(&legacy), "legacy resources are ours");
        let p = plan_tags(&tags, &legacy);
        assert_eq!(
            p.set.keys().collect::<Vec<_>>(),
            [TAG_CLUSTER, TAG_DELETION_POLICY]
        );
        assert!(p.remove.is_empty());
        // spec.deletionPolicy changed: the tag follows in place.
        o.deletion_policy = DeletionPolicy::Retain;
        let p = plan_tags(&o.tags(&BTreeMap::new()), &tags);
        assert_eq!(
            p.set.get(TAG_DELETION_POLICY).map(String::as_str),
            Some("Retain")
        );
        assert_eq!(p.set.len(), 1);
    }

    #[test]
    fn client_token_changes_with_the_request() {
        let d = desired(&spec(), &valid(), &owner());
        let EndpointAction::Create(a) =
            plan_endpoints(&d, &[], &["sg-1".into()], &owner(), &none()).remove(0)
        else {
            panic!()
        };
        let EndpointAction::Create(b) =
            plan_endpoints(&d, &[], &["sg-2".into()], &owner(), &none()).remove(0)
        else {
            panic!()
        };
        assert_ne!(a.client_token, b.client_token);
        let next = successor_token(&a.client_token, "vpce-0123");
        assert_eq!(next, successor_token(&a.client_token, "vpce-0123"));
        assert_ne!(next, a.client_token);
        assert_ne!(next, successor_token(&a.client_token, "vpce-0456"));
        assert!(next.len() <= 64);
    }
}
