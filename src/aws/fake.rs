//! An in-memory EC2 for unit tests of the reconciler, behaving like EC2 where the operator
//! depends on it: ClientToken idempotency (same token and request: the same endpoint; same
//! token, other request: IdempotentParameterMismatch; a token stays bound to its endpoint after
//! that is deleted), tags and tag filters, endpoint states (pending -> available, deleting ->
//! deleted, failed with a LastError), DependencyViolation while an endpoint that is not yet
//! deleted holds a group, NotFound for ids that are gone, Duplicate for existing groups and
//! rules, unsuccessful items on delete, and injected errors. `settle` moves time forward.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::ready;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::{
    AwsError, AwsResult, CreateEndpoint, Ec2, Ec2Api, EndpointFacts, ErrorCode, Filter, GroupFacts,
    InstanceFacts, InterfaceFacts, IpRule, ModifyEndpoint, RuleSource, ServiceFacts, SubnetFacts,
    VpcFacts,
};

/// The fake's whole world; tests may read and change it through `FakeEc2::with`.
#[derive(Debug, Default)]
pub struct World {
    pub vpcs: BTreeMap<String, VpcFacts>,
    pub subnets: Vec<SubnetFacts>,
    pub services: Vec<ServiceFacts>,
    pub instances: Vec<InstanceFacts>,
    pub groups: BTreeMap<String, GroupFacts>,
    pub endpoints: BTreeMap<String, EndpointFacts>,
    /// ClientToken -> (the request without its token, the endpoint it made).
    tokens: HashMap<String, (CreateEndpoint, String)>,
    /// Every call, in order, by EC2 operation name.
    pub calls: Vec<&'static str>,
    /// Errors the next calls of an operation return, in order.
    injected: Vec<(&'static str, AwsError)>,
    /// Endpoint ids DeleteVpcEndpoints reports as unsuccessful (and does not delete).
    pub undeletable: BTreeSet<String>,
    next_id: u64,
}

#[derive(Clone, Default)]
pub struct FakeEc2 {
    world: Arc<Mutex<World>>,
}

pub const REGION: &str = "us-east-1";
pub const VPC: &str = "vpc-0fake";
/// Two subnets in two zones of `VPC`.
pub const SUBNETS: [&str; 2] = ["subnet-0a", "subnet-0b"];

impl FakeEc2 {
    /// A VPC (10.0.0.0/16, DNS on) with a subnet in each of two zones, and every Bedrock
    /// endpoint service offered in both zones.
    pub fn standard() -> Self {
        let fake = Self::default();
        fake.with(|w| {
            w.vpcs.insert(
                VPC.into(),
                VpcFacts {
                    id: VPC.into(),
                    ipv4_cidrs: vec!["10.0.0.0/16".into()],
                    ipv6_cidrs: vec![],
                    dns_support: true,
                    dns_hostnames: true,
                },
            );
            for (i, id) in SUBNETS.iter().enumerate() {
                w.subnets.push(SubnetFacts {
                    id: (*id).into(),
                    vpc_id: VPC.into(),
                    az: format!("{REGION}{}", ["a", "b"][i]),
                    az_id: format!("use1-az{}", i + 1),
                    tags: BTreeMap::new(),
                });
            }
            for s in crate::catalog::BedrockService::ALL {
                w.services.push(ServiceFacts {
                    service_name: s.service_name(REGION),
                    azs: [format!("{REGION}a"), format!("{REGION}b")].into(),
                    private_dns_name: Some(s.private_dns_name(REGION)),
                });
            }
        });
        fake
    }

    /// The handle the reconciler takes.
    pub fn handle(&self) -> Ec2 {
        Ec2::new(REGION, Arc::new(self.clone()))
    }

    /// Reads or changes the world.
    pub fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().expect("fake EC2 lock"))
    }

    /// The next call of `operation` fails with `code`.
    pub fn inject(&self, operation: &'static str, code: ErrorCode) {
        let status = match AwsError::new(operation, code.clone(), "").kind() {
            super::ErrorKind::Retry => 503,
            _ => 400,
        };
        let mut err = AwsError::new(operation, code, "injected by the test");
        err.status = Some(status);
        self.with(|w| w.injected.push((operation, err)));
    }

    /// Time passes: pending endpoints become available, deleting ones deleted.
    pub fn settle(&self) {
        self.with(|w| {
            for e in w.endpoints.values_mut() {
                match e.state.as_str() {
                    "pending" => e.state = "available".into(),
                    "deleting" => e.state = "deleted".into(),
                    _ => {}
                }
            }
        })
    }

    /// AWS gives up on an endpoint: `failed`, with a LastError.
    pub fn fail_endpoint(&self, id: &str, error: &str) {
        self.with(|w| {
            let e = w.endpoints.get_mut(id).expect("endpoint to fail");
            e.state = "failed".into();
            e.last_error = Some(error.into());
        })
    }

    /// Endpoints that are not deleted.
    pub fn live_endpoints(&self) -> Vec<EndpointFacts> {
        self.with(|w| {
            w.endpoints
                .values()
                .filter(|e| e.state != "deleted")
                .cloned()
                .collect()
        })
    }

    pub fn count(&self, operation: &str) -> usize {
        self.with(|w| w.calls.iter().filter(|c| **c == operation).count())
    }

    /// Mutating calls so far (anything but Describe*).
    pub fn mutations(&self) -> Vec<&'static str> {
        self.with(|w| {
            w.calls
                .iter()
                .filter(|c| !c.starts_with("Describe"))
                .copied()
                .collect()
        })
    }

    fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut World) -> AwsResult<T>,
    ) -> BoxFuture<'static, AwsResult<T>> {
        let result = self.with(|w| {
            w.calls.push(operation);
            if let Some(i) = w.injected.iter().position(|(op, _)| *op == operation) {
                return Err(w.injected.remove(i).1);
            }
            f(w)
        });
        Box::pin(ready(result))
    }
}

fn err(operation: &'static str, code: ErrorCode, message: impl Into<String>) -> AwsError {
    let mut e = AwsError::new(operation, code, message);
    e.status = Some(400);
    e
}

fn tags_match(tags: &BTreeMap<String, String>, f: &Filter) -> Option<bool> {
    let key = f.name.strip_prefix("tag:")?;
    Some(tags.get(key).is_some_and(|v| f.values.contains(v)))
}

/// EC2 filter values may end in `*`.
fn value_matches(values: &[String], v: &str) -> bool {
    values.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => v.starts_with(prefix),
        None => p == v,
    })
}

impl World {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", self.next_id)
    }

    fn group_mut(&mut self, op: &'static str, id: &str) -> AwsResult<&mut GroupFacts> {
        self.groups
            .get_mut(id)
            .ok_or_else(|| err(op, ErrorCode::GroupNotFound, format!("{id} does not exist")))
    }

    fn validate_create(&self, req: &CreateEndpoint) -> AwsResult<()> {
        const OP: &str = "CreateVpcEndpoint";
        if !self.vpcs.contains_key(&req.vpc_id) {
            return Err(err(OP, ErrorCode::VpcNotFound, req.vpc_id.clone()));
        }
        let mut zones = BTreeSet::new();
        for id in &req.subnet_ids {
            let s = self.subnets.iter().find(|s| &s.id == id);
            let Some(s) = s.filter(|s| s.vpc_id == req.vpc_id) else {
                return Err(err(OP, ErrorCode::SubnetNotFound, id.clone()));
            };
            if !zones.insert(s.az.clone()) {
                return Err(err(OP, ErrorCode::DuplicateSubnetsInSameZone, s.az.clone()));
            }
        }
        if let Some(g) = req.group_ids.iter().find(|g| !self.groups.contains_key(*g)) {
            return Err(err(OP, ErrorCode::GroupNotFound, g.clone()));
        }
        if !self
            .services
            .iter()
            .any(|s| s.service_name == req.service_name)
        {
            return Err(err(
                OP,
                ErrorCode::InvalidServiceName,
                req.service_name.clone(),
            ));
        }
        let dns_taken = self.endpoints.values().any(|e| {
            req.private_dns
                && e.private_dns
                && e.vpc_id == req.vpc_id
                && e.service_name == req.service_name
                && !e.is_deleted_or_deleting()
        });
        if dns_taken {
            return Err(err(
                OP,
                ErrorCode::InvalidParameter,
                "private DNS is already enabled for this service in the VPC",
            ));
        }
        Ok(())
    }

    fn create_endpoint(&mut self, req: &CreateEndpoint) -> AwsResult<EndpointFacts> {
        let mut untokened = req.clone();
        untokened.client_token.clear();
        if let Some((earlier, id)) = self.tokens.get(&req.client_token) {
            if *earlier != untokened {
                return Err(err(
                    "CreateVpcEndpoint",
                    ErrorCode::IdempotentParameterMismatch,
                    "the client token was used with another request",
                ));
            }
            return Ok(self.endpoints[id].clone());
        }
        self.validate_create(req)?;
        let id = self.id("vpce");
        let e = EndpointFacts {
            id: id.clone(),
            service_name: req.service_name.clone(),
            vpc_id: req.vpc_id.clone(),
            state: "pending".into(),
            subnet_ids: req.subnet_ids.iter().cloned().collect(),
            group_ids: req.group_ids.iter().cloned().collect(),
            private_dns: req.private_dns,
            policy: crate::policy::parse_observed(&req.policy).map(Arc::new),
            dns_names: vec![format!("{id}.{}.vpce.amazonaws.com", req.service_name)],
            network_interface_ids: req
                .subnet_ids
                .iter()
                .enumerate()
                .map(|(i, _)| format!("eni-{id}-{i}"))
                .collect(),
            last_error: None,
            tags: req.tags.clone(),
        };
        self.tokens
            .insert(req.client_token.clone(), (untokened, id.clone()));
        self.endpoints.insert(id, e.clone());
        Ok(e)
    }

    fn modify_endpoint(&mut self, m: &ModifyEndpoint) -> AwsResult<()> {
        const OP: &str = "ModifyVpcEndpoint";
        let e = self.endpoints.get(&m.id).cloned();
        let Some(mut e) = e.filter(|e| !e.is_deleted_or_deleting()) else {
            return Err(err(OP, ErrorCode::VpcEndpointNotFound, m.id.clone()));
        };
        if e.state_is("pending") {
            return Err(err(
                OP,
                ErrorCode::IncorrectState,
                "the endpoint is pending",
            ));
        }
        if let Some(g) = m.add_groups.iter().find(|g| !self.groups.contains_key(*g)) {
            return Err(err(OP, ErrorCode::GroupNotFound, g.clone()));
        }
        e.subnet_ids.extend(m.add_subnets.iter().cloned());
        e.subnet_ids.retain(|s| !m.remove_subnets.contains(s));
        e.group_ids.extend(m.add_groups.iter().cloned());
        e.group_ids.retain(|g| !m.remove_groups.contains(g));
        if let Some(p) = &m.policy {
            e.policy = crate::policy::parse_observed(p).map(Arc::new);
        }
        if let Some(p) = m.private_dns {
            e.private_dns = p;
        }
        self.endpoints.insert(e.id.clone(), e);
        Ok(())
    }

    fn delete_endpoints(&mut self, ids: &[String]) -> AwsResult<()> {
        let mut failures = Vec::new();
        for id in ids {
            if self.undeletable.contains(id) {
                failures.push(format!("{id}: the endpoint cannot be deleted now"));
                continue;
            }
            // Unknown or deleted ids are "not found" items: gone is what was asked for.
            if let Some(e) = self.endpoints.get_mut(id)
                && !e.state_is("deleted")
            {
                e.state = "deleting".into();
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(err(
                "DeleteVpcEndpoints",
                ErrorCode::Unsuccessful,
                failures.join("; "),
            ))
        }
    }

    fn delete_group(&mut self, id: &str) -> AwsResult<()> {
        const OP: &str = "DeleteSecurityGroup";
        if !self.groups.contains_key(id) {
            return Err(err(OP, ErrorCode::GroupNotFound, id.to_string()));
        }
        // The network interfaces of an endpoint hold its groups until it is deleted.
        let holder = self
            .endpoints
            .values()
            .find(|e| !e.state_is("deleted") && e.group_ids.contains(id));
        if let Some(e) = holder {
            return Err(err(
                OP,
                ErrorCode::DependencyViolation,
                format!("{id} has a dependent object ({})", e.id),
            ));
        }
        self.groups.remove(id);
        Ok(())
    }

    fn tags_of(&mut self, op: &'static str, id: &str) -> AwsResult<&mut BTreeMap<String, String>> {
        if let Some(e) = self.endpoints.get_mut(id) {
            return Ok(&mut e.tags);
        }
        if let Some(g) = self.groups.get_mut(id) {
            return Ok(&mut g.tags);
        }
        let code = if id.starts_with("sg-") {
            ErrorCode::GroupNotFound
        } else {
            ErrorCode::VpcEndpointNotFound
        };
        Err(err(op, code, id.to_string()))
    }
}

impl Ec2Api for FakeEc2 {
    fn describe_vpc<'a>(
        &'a self,
        vpc_id: &'a str,
        with_dns_attributes: bool,
    ) -> BoxFuture<'a, AwsResult<Option<VpcFacts>>> {
        let vpc_id = vpc_id.to_string();
        self.call("DescribeVpcs", move |w| {
            Ok(w.vpcs.get(&vpc_id).cloned().map(|mut v| {
                if !with_dns_attributes {
                    v.dns_support = false;
                    v.dns_hostnames = false;
                }
                v
            }))
        })
    }

    fn describe_subnets<'a>(
        &'a self,
        ids: &'a [String],
        vpc_id: Option<&'a str>,
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, AwsResult<Vec<SubnetFacts>>> {
        self.call("DescribeSubnets", |w| {
            Ok(w.subnets
                .iter()
                .filter(|s| ids.is_empty() || ids.contains(&s.id))
                .filter(|s| vpc_id.is_none_or(|v| s.vpc_id == v))
                .filter(|s| tags.iter().all(|(k, v)| s.tags.get(k) == Some(v)))
                .cloned()
                .collect())
        })
    }

    fn describe_services<'a>(
        &'a self,
        names: &'a [String],
    ) -> BoxFuture<'a, AwsResult<Vec<ServiceFacts>>> {
        self.call("DescribeVpcEndpointServices", |w| {
            Ok(w.services
                .iter()
                .filter(|s| names.contains(&s.service_name))
                .cloned()
                .collect())
        })
    }

    fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> BoxFuture<'_, AwsResult<Vec<GroupFacts>>> {
        self.call("DescribeSecurityGroups", move |w| {
            let matches = |g: &GroupFacts| {
                filters.iter().all(|f| match f.name.as_str() {
                    "group-id" => f.values.contains(&g.id),
                    "group-name" => value_matches(&f.values, &g.name),
                    "vpc-id" => f.values.contains(&g.vpc_id),
                    _ => tags_match(&g.tags, f).unwrap_or(false),
                })
            };
            Ok(w.groups.values().filter(|g| matches(g)).cloned().collect())
        })
    }

    fn describe_endpoints(
        &self,
        filters: Vec<Filter>,
    ) -> BoxFuture<'_, AwsResult<Vec<EndpointFacts>>> {
        self.call("DescribeVpcEndpoints", move |w| {
            let matches = |e: &EndpointFacts| {
                filters.iter().all(|f| match f.name.as_str() {
                    "vpc-endpoint-id" => f.values.contains(&e.id),
                    "vpc-id" => f.values.contains(&e.vpc_id),
                    "service-name" => f.values.contains(&e.service_name),
                    "tag-key" => e.tags.keys().any(|k| f.values.contains(k)),
                    _ => tags_match(&e.tags, f).unwrap_or(false),
                })
            };
            Ok(w.endpoints
                .values()
                .filter(|e| matches(e))
                .cloned()
                .collect())
        })
    }

    fn describe_instances<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, AwsResult<Vec<InstanceFacts>>> {
        self.call("DescribeInstances", |w| {
            Ok(w.instances
                .iter()
                .filter(|i| ids.contains(&i.id))
                .cloned()
                .collect())
        })
    }

    /// An endpoint's interfaces have the address 10.0.<subnet index + 1>.<endpoint number>.
    fn describe_network_interfaces<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, AwsResult<Vec<InterfaceFacts>>> {
        self.call("DescribeNetworkInterfaces", |w| {
            Ok(w.endpoints
                .values()
                .flat_map(|e| e.network_interface_ids.iter().enumerate())
                .filter(|(_, id)| ids.contains(id))
                .map(|(i, id)| InterfaceFacts {
                    id: id.clone(),
                    private_ips: vec![fake_eni_address(id, i)],
                })
                .collect())
        })
    }

    fn create_security_group<'a>(
        &'a self,
        name: &'a str,
        description: &'a str,
        vpc_id: &'a str,
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, AwsResult<String>> {
        const OP: &str = "CreateSecurityGroup";
        self.call(OP, |w| {
            if name.len() > 255 || description.len() > 255 {
                return Err(err(
                    OP,
                    ErrorCode::InvalidParameter,
                    "name or description too long",
                ));
            }
            if !w.vpcs.contains_key(vpc_id) {
                return Err(err(OP, ErrorCode::VpcNotFound, vpc_id.to_string()));
            }
            if w.groups
                .values()
                .any(|g| g.name == name && g.vpc_id == vpc_id)
            {
                return Err(err(OP, ErrorCode::GroupDuplicate, name.to_string()));
            }
            let id = w.id("sg");
            let egress = IpRule {
                protocol: "-1".into(),
                from_port: -1,
                to_port: -1,
                source: RuleSource::Ipv4("0.0.0.0/0".into()),
            };
            let g = GroupFacts {
                id: id.clone(),
                name: name.into(),
                vpc_id: vpc_id.into(),
                ingress: BTreeSet::new(),
                egress: [egress].into(),
                tags: tags.clone(),
            };
            w.groups.insert(id.clone(), g);
            Ok(id)
        })
    }

    fn authorize_ingress<'a>(
        &'a self,
        group_id: &'a str,
        rules: &'a [IpRule],
    ) -> BoxFuture<'a, AwsResult<()>> {
        const OP: &str = "AuthorizeSecurityGroupIngress";
        self.call(OP, |w| {
            let g = w.group_mut(OP, group_id)?;
            if rules.iter().any(|r| g.ingress.contains(r)) {
                return Err(err(OP, ErrorCode::PermissionDuplicate, "rule exists"));
            }
            g.ingress.extend(rules.iter().cloned());
            Ok(())
        })
    }

    fn revoke_ingress<'a>(
        &'a self,
        group_id: &'a str,
        rules: &'a [IpRule],
    ) -> BoxFuture<'a, AwsResult<()>> {
        const OP: &str = "RevokeSecurityGroupIngress";
        self.call(OP, |w| {
            let g = w.group_mut(OP, group_id)?;
            if rules.iter().any(|r| !g.ingress.contains(r)) {
                return Err(err(OP, ErrorCode::PermissionNotFound, "no such rule"));
            }
            g.ingress.retain(|r| !rules.contains(r));
            Ok(())
        })
    }

    fn revoke_egress<'a>(
        &'a self,
        group_id: &'a str,
        rules: &'a [IpRule],
    ) -> BoxFuture<'a, AwsResult<()>> {
        const OP: &str = "RevokeSecurityGroupEgress";
        self.call(OP, |w| {
            let g = w.group_mut(OP, group_id)?;
            if rules.iter().any(|r| !g.egress.contains(r)) {
                return Err(err(OP, ErrorCode::PermissionNotFound, "no such rule"));
            }
            g.egress.retain(|r| !rules.contains(r));
            Ok(())
        })
    }

    fn delete_security_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, AwsResult<()>> {
        self.call("DeleteSecurityGroup", |w| w.delete_group(group_id))
    }

    fn create_endpoint<'a>(
        &'a self,
        req: &'a CreateEndpoint,
    ) -> BoxFuture<'a, AwsResult<EndpointFacts>> {
        self.call("CreateVpcEndpoint", |w| {
            if req.client_token.len() > 64 {
                return Err(err(
                    "CreateVpcEndpoint",
                    ErrorCode::InvalidParameter,
                    "ClientToken is longer than 64 characters",
                ));
            }
            if let Some((k, v)) = req
                .tags
                .iter()
                .find(|(k, v)| k.len() > 128 || v.len() > 256)
            {
                return Err(err(
                    "CreateVpcEndpoint",
                    ErrorCode::InvalidParameter,
                    format!("tag {k}={v} is too long"),
                ));
            }
            w.create_endpoint(req)
        })
    }

    fn modify_endpoint<'a>(&'a self, m: &'a ModifyEndpoint) -> BoxFuture<'a, AwsResult<()>> {
        self.call("ModifyVpcEndpoint", |w| w.modify_endpoint(m))
    }

    fn delete_endpoints<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, AwsResult<()>> {
        self.call("DeleteVpcEndpoints", |w| w.delete_endpoints(ids))
    }

    fn create_tags<'a>(
        &'a self,
        resource_ids: &'a [String],
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, AwsResult<()>> {
        self.call("CreateTags", |w| {
            for id in resource_ids {
                w.tags_of("CreateTags", id)?
                    .extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Ok(())
        })
    }

    fn delete_tags<'a>(
        &'a self,
        resource_ids: &'a [String],
        keys: &'a [String],
    ) -> BoxFuture<'a, AwsResult<()>> {
        self.call("DeleteTags", |w| {
            for id in resource_ids {
                w.tags_of("DeleteTags", id)?
                    .retain(|k, _| !keys.contains(k));
            }
            Ok(())
        })
    }
}

/// The fake's address of an endpoint's `index`-th interface: in the subnet's /24 (10.0.1.0/24
/// for the first), the host part from the interface id.
pub fn fake_eni_address(eni_id: &str, index: usize) -> std::net::IpAddr {
    let host = eni_id
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
        % 250;
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        10,
        0,
        index as u8 + 1,
        host as u8 + 4,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: &str) -> CreateEndpoint {
        CreateEndpoint {
            vpc_id: VPC.into(),
            service_name: crate::catalog::BedrockService::ALL[0].service_name(REGION),
            subnet_ids: SUBNETS.iter().map(|s| s.to_string()).collect(),
            group_ids: vec![],
            private_dns: true,
            policy: "{}".into(),
            client_token: token.into(),
            tags: [("k".to_string(), "v".to_string())].into(),
        }
    }

    #[tokio::test]
    async fn client_tokens_are_idempotent_and_stay_bound() {
        let fake = FakeEc2::standard();
        let ec2 = fake.handle();
        let a = ec2.create_endpoint(&request("t1")).await.unwrap();
        let b = ec2.create_endpoint(&request("t1")).await.unwrap();
        assert_eq!(a.id, b.id);
        let mut other = request("t1");
        other.private_dns = false;
        let e = ec2.create_endpoint(&other).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::IdempotentParameterMismatch);
        // The same token after the endpoint is deleted: the dead endpoint again.
        ec2.delete_endpoints(std::slice::from_ref(&a.id))
            .await
            .unwrap();
        fake.settle();
        let c = ec2.create_endpoint(&request("t1")).await.unwrap();
        assert_eq!(
            (c.id.as_str(), c.state.as_str()),
            (a.id.as_str(), "deleted")
        );
    }

    #[tokio::test]
    async fn a_group_is_held_until_its_endpoints_are_deleted() {
        let fake = FakeEc2::standard();
        let ec2 = fake.handle();
        let sg = ec2
            .create_security_group("bpl-x", "d", VPC, &BTreeMap::new())
            .await
            .unwrap();
        let mut req = request("t");
        req.group_ids = vec![sg.clone()];
        let e = ec2.create_endpoint(&req).await.unwrap();
        let dup = ec2
            .create_security_group("bpl-x", "d", VPC, &BTreeMap::new())
            .await
            .unwrap_err();
        assert_eq!(dup.code, ErrorCode::GroupDuplicate);
        ec2.delete_endpoints(std::slice::from_ref(&e.id))
            .await
            .unwrap();
        let held = ec2.delete_security_group(&sg).await.unwrap_err();
        assert_eq!(held.code, ErrorCode::DependencyViolation);
        fake.settle();
        ec2.delete_security_group(&sg).await.unwrap();
        let gone = ec2.delete_security_group(&sg).await.unwrap_err();
        assert_eq!(gone.kind(), super::super::ErrorKind::Vanished);
    }

    #[tokio::test]
    async fn filters_tags_and_injected_errors() {
        let fake = FakeEc2::standard();
        let ec2 = fake.handle();
        let e = ec2.create_endpoint(&request("t")).await.unwrap();
        let by_tag = |v: &str| super::super::filter("tag:k", [v]);
        assert_eq!(
            ec2.describe_endpoints(vec![by_tag("v")])
                .await
                .unwrap()
                .len(),
            1
        );
        ec2.create_tags(
            std::slice::from_ref(&e.id),
            &[("k".into(), "w".into())].into(),
        )
        .await
        .unwrap();
        assert!(
            ec2.describe_endpoints(vec![by_tag("v")])
                .await
                .unwrap()
                .is_empty()
        );
        ec2.delete_tags(std::slice::from_ref(&e.id), &["k".into()])
            .await
            .unwrap();
        assert!(
            ec2.describe_endpoints(vec![by_tag("w")])
                .await
                .unwrap()
                .is_empty()
        );
        fake.inject("DescribeVpcEndpoints", ErrorCode::RequestLimitExceeded);
        let throttled = ec2.describe_endpoints(vec![]).await.unwrap_err();
        assert_eq!(throttled.kind(), super::super::ErrorKind::Retry);
        assert_eq!(ec2.describe_endpoints(vec![]).await.unwrap().len(), 1);
        fake.with(|w| w.undeletable.insert(e.id.clone()));
        let refused = ec2
            .delete_endpoints(std::slice::from_ref(&e.id))
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::Unsuccessful);
    }
}
