//! Judging a spec against what EC2 says, without calling anything (pure).

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{BedrockPrivateLinkSpec, PolicyPreset, SkippedSubnet};
use crate::aws::{EndpointFacts, GroupFacts, ServiceFacts, SubnetFacts, VpcFacts};
use crate::catalog::BedrockService;
use crate::policy;

/// A spec that cannot work, with the condition reason and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

fn invalid(reason: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        reason,
        message: message.into(),
    }
}

/// Where the candidate subnets came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetSource {
    Explicit(Vec<String>),
    Selector(BTreeMap<String, String>),
    Nodes,
}

/// Everything observed that validation needs.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub operator_region: String,
    pub vpc_id: String,
    pub vpc: Option<VpcFacts>,
    pub subnet_source: Option<SubnetSource>,
    pub subnets: Vec<SubnetFacts>,
    /// Keyed by full service name.
    pub services: BTreeMap<String, ServiceFacts>,
    /// The groups the spec names (securityGroup.existingIds or allowFrom.securityGroupIds).
    pub existing_groups: Vec<GroupFacts>,
    /// Endpoints of the same services in the VPC that are not ours.
    pub foreign_endpoints: Vec<EndpointFacts>,
}

/// The subnets chosen for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlacement {
    pub service: BedrockService,
    pub service_name: String,
    pub subnet_ids: BTreeSet<String>,
    pub azs: BTreeSet<String>,
    pub policy: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Valid {
    pub region: String,
    pub vpc: VpcFacts,
    pub placements: Vec<ServicePlacement>,
    pub skipped: Vec<SkippedSubnet>,
    /// Fewer than two AZs for some service.
    pub reduced_resilience: Option<String>,
}

/// Admission: pure checks of the spec alone (and the operator's own settings), made before
/// anything is observed or created. Checks of this kind (e.g. tenancy rules) go here.
pub fn admit(spec: &BedrockPrivateLinkSpec, operator_region: &str) -> Result<(), Invalid> {
    if let Some(region) = &spec.region
        && region != operator_region
    {
        return Err(invalid(
            "RegionMismatch",
            format!(
                "spec.region is {region} but the operator and the cluster's VPC are in {operator_region}; an interface endpoint only serves a VPC of its own region. Remove spec.region or set it to {operator_region}"
            ),
        ));
    }
    Ok(())
}

/// Admission of an object's account and region (pure, before the tenancy gate): away from the
/// operator's own account and region there is no cluster VPC and no Node subnet to default to,
/// so the spec must name its VPC and subnets. (The CRD's CEL rules say so for spec.account;
/// the operator's region is not known to the API server.)
pub fn admit_target(
    spec: &BedrockPrivateLinkSpec,
    home_region: &str,
    home_account: Option<&str>,
) -> Result<(), Invalid> {
    let other_account = spec
        .account
        .as_deref()
        .is_some_and(|a| Some(a) != home_account);
    let other_region = spec.region.as_deref().is_some_and(|r| r != home_region);
    if !(other_account || other_region) {
        return Ok(());
    }
    let where_ = match (other_account, other_region) {
        (true, true) => "another account and region",
        (true, false) => "another account",
        _ => "another region",
    };
    if spec.vpc_id.is_none() {
        return Err(invalid(
            "VpcRequired",
            format!(
                "the endpoints are to go to {where_} than the operator's own ({home_region}), where the cluster's VPC is not: set spec.vpcId to the VPC there"
            ),
        ));
    }
    if spec
        .subnets
        .as_ref()
        .is_none_or(|s| s.ids.is_none() && s.selector.is_none())
    {
        return Err(invalid(
            "SubnetsRequired",
            format!(
                "the endpoints are to go to {where_} than the operator's own ({home_region}), where the cluster's Nodes are not: set spec.subnets (ids or selector) in VPC {}",
                spec.vpc_id.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// The VPC: the spec's, else the operator's default, else the one VPC of the cluster's Nodes.
pub fn choose_vpc(
    spec: &BedrockPrivateLinkSpec,
    default_vpc_id: Option<&str>,
    network: &super::observe::ClusterNetwork,
) -> Result<String, Invalid> {
    if let Some(v) = spec.vpc_id.as_deref().or(default_vpc_id) {
        return Ok(v.to_string());
    }
    let vpcs: Vec<&str> = network.vpc_ids.iter().map(String::as_str).collect();
    match vpcs.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(invalid(
            "VpcDiscoveryFailed",
            "no Node has an AWS providerID (aws:///<zone>/<instance-id>) to find the cluster's VPC from; set spec.vpcId or the operator's --default-vpc-id",
        )),
        many => Err(invalid(
            "MultipleVpcs",
            format!(
                "the cluster's Nodes are in several VPCs ({}); set spec.vpcId to choose one",
                many.join(", ")
            ),
        )),
    }
}

/// The spec against what was observed: a `Valid` plan input, or why it cannot work. Checks
/// run in the order a person would fix things: policy, VPC, subnets, groups, DNS, services.
pub fn validate(spec: &BedrockPrivateLinkSpec, obs: &Observed) -> Result<Valid, Invalid> {
    let region = spec
        .region
        .clone()
        .unwrap_or_else(|| obs.operator_region.clone());
    admit(spec, &obs.operator_region)?;
    check_policy(spec, &region)?;
    let vpc = obs.vpc.clone().ok_or_else(|| {
        invalid(
            "VpcNotFound",
            format!(
                "VPC {} does not exist in {region}; check spec.vpcId",
                obs.vpc_id
            ),
        )
    })?;
    check_subnets(obs, &vpc, &region)?;
    check_groups(spec, obs, &vpc)?;
    if spec.private_dns && !(vpc.dns_support && vpc.dns_hostnames) {
        return Err(invalid(
            "PrivateDnsUnsupported",
            format!(
                "private DNS needs enableDnsSupport and enableDnsHostnames on VPC {} (now {} and {}); turn both on, or set spec.privateDns: false",
                vpc.id, vpc.dns_support, vpc.dns_hostnames
            ),
        ));
    }
    place_services(spec, obs, vpc, region)
}

fn check_policy(spec: &BedrockPrivateLinkSpec, region: &str) -> Result<(), Invalid> {
    let policy =
        policy::render(spec.policy.as_ref(), region).map_err(|e| invalid("InvalidPolicy", e.0))?;
    if spec
        .policy
        .as_ref()
        .is_some_and(|p| p.preset == PolicyPreset::Custom)
        && policy.to_string().len() > policy::MAX_POLICY_CHARS
    {
        return Err(invalid(
            "InvalidPolicy",
            "policy.document is longer than AWS allows",
        ));
    }
    Ok(())
}

/// Named subnets exist, all are in the VPC, and there is at least one.
fn check_subnets(obs: &Observed, vpc: &VpcFacts, region: &str) -> Result<(), Invalid> {
    if let Some(SubnetSource::Explicit(ids)) = &obs.subnet_source {
        let found: BTreeSet<&str> = obs.subnets.iter().map(|s| s.id.as_str()).collect();
        let missing: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| !found.contains(id))
            .collect();
        if !missing.is_empty() {
            return Err(invalid(
                "SubnetNotFound",
                format!(
                    "subnets {} do not exist in {region}; fix spec.subnets.ids",
                    missing.join(", ")
                ),
            ));
        }
    }
    let foreign: Vec<&SubnetFacts> = obs.subnets.iter().filter(|s| s.vpc_id != vpc.id).collect();
    if !foreign.is_empty() {
        let list: Vec<String> = foreign
            .iter()
            .map(|s| format!("{} (in {})", s.id, s.vpc_id))
            .collect();
        return Err(invalid(
            "SubnetNotInVpc",
            format!(
                "subnets {} are not in VPC {}; an endpoint's subnets must all be in its VPC",
                list.join(", "),
                vpc.id
            ),
        ));
    }
    if obs.subnets.is_empty() {
        let what = match &obs.subnet_source {
            Some(SubnetSource::Selector(tags)) => format!(
                "no subnet of {} carries the tags {}; fix spec.subnets.selector",
                vpc.id,
                tags.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => format!("no subnets found for VPC {}; set spec.subnets.ids", vpc.id),
        };
        return Err(invalid("NoUsableSubnets", what));
    }
    Ok(())
}

/// Groups the spec names exist (and existing ones are in the VPC).
fn check_groups(
    spec: &BedrockPrivateLinkSpec,
    obs: &Observed,
    vpc: &VpcFacts,
) -> Result<(), Invalid> {
    let sg = spec.security_group.as_ref();
    for id in sg
        .and_then(|g| g.existing_ids.as_ref())
        .into_iter()
        .flatten()
    {
        match obs.existing_groups.iter().find(|g| &g.id == id) {
            None => {
                return Err(invalid(
                    "SecurityGroupNotFound",
                    format!(
                        "security group {id} does not exist; fix spec.securityGroup.existingIds"
                    ),
                ));
            }
            Some(g) if g.vpc_id != vpc.id => {
                return Err(invalid(
                    "SecurityGroupNotInVpc",
                    format!(
                        "security group {id} is in {}, not in {}; use a group of the endpoint's VPC",
                        g.vpc_id, vpc.id
                    ),
                ));
            }
            _ => {}
        }
    }
    // A rule naming a group that does not exist would fail only after the managed group was
    // made: refuse it first. (Groups of peered VPCs are fine as sources.)
    let sources = sg
        .and_then(|g| g.allow_from.as_ref())
        .and_then(|a| a.security_group_ids.as_ref());
    let missing: Vec<&str> = sources
        .into_iter()
        .flatten()
        .filter(|id| !obs.existing_groups.iter().any(|g| &g.id == *id))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(invalid(
            "SecurityGroupNotFound",
            format!(
                "security groups {} do not exist; fix spec.securityGroup.allowFrom.securityGroupIds",
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Each service: offered here, no private DNS conflict, and its subnets (one per zone).
fn place_services(
    spec: &BedrockPrivateLinkSpec,
    obs: &Observed,
    vpc: VpcFacts,
    region: String,
) -> Result<Valid, Invalid> {
    let mut placements = Vec::new();
    let mut skipped: BTreeMap<String, String> = BTreeMap::new();
    let mut thin = Vec::new();
    for service in &spec.services {
        let (placement, left_out) = place_service(spec, obs, &vpc, &region, *service)?;
        for (id, reason) in left_out {
            skipped.entry(id).or_insert(reason);
        }
        if placement.azs.len() < 2 {
            thin.push(format!(
                "{service} uses only {}",
                placement.azs.iter().next().cloned().unwrap_or_default()
            ));
        }
        placements.push(placement);
    }
    // A subnet used by some service is not "skipped" overall.
    let used: BTreeSet<&String> = placements
        .iter()
        .flat_map(|p| p.subnet_ids.iter())
        .collect();
    let skipped = skipped
        .into_iter()
        .filter(|(id, _)| !used.contains(id))
        .map(|(subnet_id, reason)| SkippedSubnet { subnet_id, reason })
        .collect();
    let reduced_resilience = (!thin.is_empty()).then(|| {
        format!("{}: fewer than 2 Availability Zones, so one zone outage cuts private access to Bedrock; add subnets in other zones", thin.join("; "))
    });
    Ok(Valid {
        region,
        vpc,
        placements,
        skipped,
        reduced_resilience,
    })
}

type LeftOut = Vec<(String, String)>;

fn place_service(
    spec: &BedrockPrivateLinkSpec,
    obs: &Observed,
    vpc: &VpcFacts,
    region: &str,
    service: BedrockService,
) -> Result<(ServicePlacement, LeftOut), Invalid> {
    let service_name = service.service_name(region);
    let Some(facts) = obs
        .services
        .get(&service_name)
        .filter(|f| !f.azs.is_empty())
    else {
        return Err(invalid(
            "ServiceNotAvailable",
            format!(
                "{service_name} is not offered in {region}; remove {service} from spec.services or use a region that offers it"
            ),
        ));
    };
    if spec.private_dns
        && let Some(other) = obs.foreign_endpoints.iter().find(|e| {
            e.service_name == service_name && e.private_dns && !e.is_deleted_or_deleting()
        })
    {
        return Err(invalid(
            "PrivateDnsConflict",
            format!(
                "endpoint {} already serves {} with private DNS in {}; only one may. Set spec.privateDns: false to get an endpoint of your own reached through its vpce DNS name, or use that endpoint",
                other.id,
                service.private_dns_name(region),
                vpc.id
            ),
        ));
    }
    let (chosen, left_out) = choose_subnets(&obs.subnets, &facts.azs, &service);
    if chosen.is_empty() {
        return Err(invalid(
            "NoUsableSubnets",
            format!(
                "none of the subnets is in an Availability Zone that offers {service_name} (offered in: {}); add subnets in those zones",
                facts.azs.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let placement = ServicePlacement {
        service,
        service_name,
        subnet_ids: chosen.iter().map(|s| s.id.clone()).collect(),
        azs: chosen.iter().map(|s| s.az.clone()).collect(),
        policy: policy::render_for(spec.policy.as_ref(), region, service)
            .map_err(|e| invalid("InvalidPolicy", e.0))?,
    };
    Ok((placement, left_out))
}

/// At most one subnet per AZ (an interface endpoint takes one per zone), only in zones that
/// offer the service, chosen deterministically (lowest subnet id per zone).
pub fn choose_subnets<'a>(
    subnets: &'a [SubnetFacts],
    offered_azs: &BTreeSet<String>,
    service: &BedrockService,
) -> (Vec<&'a SubnetFacts>, Vec<(String, String)>) {
    let mut sorted: Vec<&SubnetFacts> = subnets.iter().collect();
    sorted.sort_by(|a, b| (&a.az, &a.id).cmp(&(&b.az, &b.id)));
    let mut chosen: Vec<&SubnetFacts> = Vec::new();
    let mut skipped = Vec::new();
    for s in sorted {
        if !offered_azs.contains(&s.az) {
            skipped.push((
                s.id.clone(),
                format!("{} ({}) does not offer {service}", s.az, s.az_id),
            ));
        } else if let Some(first) = chosen.iter().find(|c| c.az == s.az) {
            skipped.push((
                s.id.clone(),
                format!("{} already serves {} (one subnet per zone)", first.id, s.az),
            ));
        } else {
            chosen.push(s);
        }
    }
    (chosen, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PolicySpec, SecurityGroupSpec};

    fn subnet(id: &str, az: &str, vpc: &str) -> SubnetFacts {
        SubnetFacts {
            id: id.into(),
            vpc_id: vpc.into(),
            az: az.into(),
            az_id: format!("use1-{az}"),
            tags: Default::default(),
        }
    }

    fn observed() -> Observed {
        let region = "us-east-1";
        let services = BedrockService::ALL
            .iter()
            .map(|s| {
                let name = s.service_name(region);
                (
                    name.clone(),
                    ServiceFacts {
                        service_name: name,
                        azs: ["us-east-1a", "us-east-1b", "us-east-1c"]
                            .map(String::from)
                            .into(),
                        private_dns_name: None,
                    },
                )
            })
            .collect();
        Observed {
            operator_region: region.into(),
            vpc_id: "vpc-1".into(),
            vpc: Some(VpcFacts {
                id: "vpc-1".into(),
                ipv4_cidrs: vec!["10.0.0.0/16".into()],
                ipv6_cidrs: vec![],
                dns_support: true,
                dns_hostnames: true,
            }),
            subnet_source: Some(SubnetSource::Nodes),
            subnets: vec![
                subnet("subnet-a", "us-east-1a", "vpc-1"),
                subnet("subnet-b", "us-east-1b", "vpc-1"),
            ],
            services,
            existing_groups: vec![],
            foreign_endpoints: vec![],
        }
    }

    fn spec() -> BedrockPrivateLinkSpec {
        serde_json::from_str("{}").unwrap()
    }

    #[test]
    fn a_plain_spec_is_valid_and_uses_one_subnet_per_zone() {
        let mut obs = observed();
        obs.subnets.push(subnet("subnet-a2", "us-east-1a", "vpc-1"));
        let v = validate(&spec(), &obs).unwrap();
        assert_eq!(v.placements.len(), 1);
        assert_eq!(
            v.placements[0].subnet_ids,
            ["subnet-a", "subnet-b"].map(String::from).into()
        );
        assert_eq!(
            v.skipped,
            vec![SkippedSubnet {
                subnet_id: "subnet-a2".into(),
                reason: "subnet-a already serves us-east-1a (one subnet per zone)".into()
            }]
        );
        assert!(v.reduced_resilience.is_none());
    }

    #[test]
    fn runtime_rejections_table() {
        type Case = (
            &'static str,
            Box<dyn Fn(&mut BedrockPrivateLinkSpec, &mut Observed)>,
        );
        let cases: Vec<Case> = vec![
            (
                "RegionMismatch",
                Box::new(|s, _| s.region = Some("eu-west-1".into())),
            ),
            ("VpcNotFound", Box::new(|_, o| o.vpc = None)),
            (
                "SubnetNotFound",
                Box::new(|_, o| {
                    o.subnet_source = Some(SubnetSource::Explicit(vec![
                        "subnet-a".into(),
                        "subnet-zz".into(),
                    ]))
                }),
            ),
            (
                "SubnetNotInVpc",
                Box::new(|_, o| o.subnets.push(subnet("subnet-x", "us-east-1c", "vpc-2"))),
            ),
            ("NoUsableSubnets", Box::new(|_, o| o.subnets.clear())),
            (
                "SecurityGroupNotFound",
                Box::new(|s, _| {
                    s.security_group = Some(SecurityGroupSpec {
                        existing_ids: Some(vec!["sg-00000000".into()]),
                        allow_from: None,
                    })
                }),
            ),
            (
                "SecurityGroupNotFound",
                Box::new(|s, _| {
                    s.security_group = Some(SecurityGroupSpec {
                        existing_ids: None,
                        allow_from: Some(crate::api::AllowFrom {
                            security_group_ids: Some(vec!["sg-0000000000000dead".into()]),
                            ..Default::default()
                        }),
                    })
                }),
            ),
            (
                "PrivateDnsUnsupported",
                Box::new(|_, o| o.vpc.as_mut().unwrap().dns_hostnames = false),
            ),
            ("ServiceNotAvailable", Box::new(|_, o| o.services.clear())),
            (
                "InvalidPolicy",
                Box::new(|s, _| {
                    s.policy = Some(PolicySpec {
                        preset: PolicyPreset::Custom,
                        document: Some("{nope".into()),
                        ..Default::default()
                    })
                }),
            ),
            (
                "PrivateDnsConflict",
                Box::new(|_, o| {
                    o.foreign_endpoints.push(EndpointFacts {
                        id: "vpce-other".into(),
                        service_name: "com.amazonaws.us-east-1.bedrock-runtime".into(),
                        private_dns: true,
                        state: "available".into(),
                        ..Default::default()
                    })
                }),
            ),
            (
                "NoUsableSubnets",
                Box::new(|_, o| {
                    o.services
                        .values_mut()
                        .for_each(|f| f.azs = ["us-east-1f".to_string()].into())
                }),
            ),
        ];
        for (reason, mutate) in cases {
            let (mut s, mut o) = (spec(), observed());
            mutate(&mut s, &mut o);
            let err = validate(&s, &o).unwrap_err();
            assert_eq!(err.reason, reason, "{err}");
            assert!(
                err.message.len() > 30,
                "message should say what to fix: {err}"
            );
        }
    }

    #[test]
    fn private_dns_off_avoids_the_conflict_and_dns_preflight() {
        let mut o = observed();
        o.vpc.as_mut().unwrap().dns_support = false;
        o.foreign_endpoints.push(EndpointFacts {
            id: "vpce-other".into(),
            service_name: "com.amazonaws.us-east-1.bedrock-runtime".into(),
            private_dns: true,
            state: "available".into(),
            ..Default::default()
        });
        let mut s = spec();
        s.private_dns = false;
        assert!(validate(&s, &o).is_ok());
    }

    #[test]
    fn zones_that_do_not_offer_the_service_are_skipped_with_a_reason() {
        let mut o = observed();
        o.services
            .get_mut("com.amazonaws.us-east-1.bedrock-runtime")
            .unwrap()
            .azs = ["us-east-1a".to_string()].into();
        let v = validate(&spec(), &o).unwrap();
        assert_eq!(v.placements[0].subnet_ids.len(), 1);
        assert!(
            v.skipped[0]
                .reason
                .contains("does not offer bedrock-runtime"),
            "{:?}",
            v.skipped
        );
        assert!(
            v.reduced_resilience
                .as_deref()
                .unwrap()
                .contains("fewer than 2")
        );
    }
}
