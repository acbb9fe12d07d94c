//! The EC2 seam: `Ec2Api` is every EC2 call the operator makes, in plain types. `sdk::SdkEc2`
//! is the real one (aws-sdk-ec2: counted, rate limited); `fake::FakeEc2` is an in-memory EC2
//! for unit tests. The reconciler holds an `Ec2` handle and never sees which one it has.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;

pub mod error;
pub mod fake;
pub mod model;
pub mod pool;
pub mod sdk;

pub use error::{AwsError, AwsResult, ErrorCode, ErrorKind};
pub use model::*;
pub use pool::{Ec2Pool, Target};
pub use sdk::{Ec2Options, Limiter};

/// The EC2 calls the operator makes. Describes of ids that do not exist return fewer items
/// (no error), as EC2 does with filters.
pub trait Ec2Api: Send + Sync {
    fn describe_vpc<'a>(
        &'a self,
        vpc_id: &'a str,
        with_dns_attributes: bool,
    ) -> BoxFuture<'a, AwsResult<Option<VpcFacts>>>;
    /// Subnets by id or, with no ids, by VPC and tags.
    fn describe_subnets<'a>(
        &'a self,
        ids: &'a [String],
        vpc_id: Option<&'a str>,
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, AwsResult<Vec<SubnetFacts>>>;
    fn describe_services<'a>(
        &'a self,
        names: &'a [String],
    ) -> BoxFuture<'a, AwsResult<Vec<ServiceFacts>>>;
    fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> BoxFuture<'_, AwsResult<Vec<GroupFacts>>>;
    fn describe_endpoints(
        &self,
        filters: Vec<Filter>,
    ) -> BoxFuture<'_, AwsResult<Vec<EndpointFacts>>>;
    fn describe_instances<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, AwsResult<Vec<InstanceFacts>>>;
    /// Network interfaces by id (the path check reads an endpoint's ENI addresses).
    fn describe_network_interfaces<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, AwsResult<Vec<InterfaceFacts>>>;
    /// Returns the new group's id.
    fn create_security_group<'a>(
        &'a self,
        name: &'a str,
        description: &'a str,
        vpc_id: &'a str,
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, AwsResult<String>>;
    fn authorize_ingress<'a>(
        &'a self,
        group_id: &'a str,
        rules: &'a [IpRule],
    ) -> BoxFuture<'a, AwsResult<()>>;
    fn revoke_ingress<'a>(
        &'a self,
        group_id: &'a str,
        rules: &'a [IpRule],
    ) -> BoxFuture<'a, AwsResult<()>>;
    fn revoke_egress<'a>(
        &'a self,
        group_id: &'a str,
        rules: &'a [IpRule],
    ) -> BoxFuture<'a, AwsResult<()>>;
    fn delete_security_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, AwsResult<()>>;
    /// Creates an endpoint and returns it as AWS described it in the answer. The same
    /// ClientToken with the same request returns the same endpoint.
    fn create_endpoint<'a>(
        &'a self,
        req: &'a CreateEndpoint,
    ) -> BoxFuture<'a, AwsResult<EndpointFacts>>;
    fn modify_endpoint<'a>(&'a self, m: &'a ModifyEndpoint) -> BoxFuture<'a, AwsResult<()>>;
    /// Deletes endpoints; ids that are already gone count as deleted, any other unsuccessful
    /// item is an error.
    fn delete_endpoints<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, AwsResult<()>>;
    /// Adds or overwrites tags on resources (endpoints, groups).
    fn create_tags<'a>(
        &'a self,
        resource_ids: &'a [String],
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, AwsResult<()>>;
    /// Removes tag keys from resources.
    fn delete_tags<'a>(
        &'a self,
        resource_ids: &'a [String],
        keys: &'a [String],
    ) -> BoxFuture<'a, AwsResult<()>>;
}

/// The reconciler's handle on EC2 in one account and region: the region, the account (None:
/// the operator's own, not known) and an `Ec2Api`. `pool::Ec2Pool` hands them out.
#[derive(Clone)]
pub struct Ec2 {
    pub region: String,
    pub account: Option<String>,
    api: Arc<dyn Ec2Api>,
}

impl Ec2 {
    pub fn new(region: impl Into<String>, api: Arc<dyn Ec2Api>) -> Self {
        Self {
            region: region.into(),
            account: None,
            api,
        }
    }

    /// "<account>/<region>" ("self/<region>" for the operator's own account if unknown): the
    /// prefix of every cache key and poller key, so that equal ids in different accounts or
    /// regions never meet.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}",
            self.account.as_deref().unwrap_or("self"),
            self.region
        )
    }

    /// A key of `id` (a VPC, say) in this client's account and region.
    pub fn key(&self, id: &str) -> String {
        format!("{}/{id}", self.scope())
    }
}

impl std::ops::Deref for Ec2 {
    type Target = dyn Ec2Api;

    fn deref(&self) -> &Self::Target {
        self.api.as_ref()
    }
}

/// A describe filter (name and values), as EC2 takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

pub fn filter<'a>(name: &str, values: impl IntoIterator<Item = &'a str>) -> Filter {
    Filter {
        name: name.to_string(),
        values: values.into_iter().map(str::to_string).collect(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateEndpoint {
    pub vpc_id: String,
    pub service_name: String,
    pub subnet_ids: Vec<String>,
    pub group_ids: Vec<String>,
    pub private_dns: bool,
    pub policy: String,
    pub client_token: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModifyEndpoint {
    pub id: String,
    pub add_subnets: Vec<String>,
    pub remove_subnets: Vec<String>,
    pub add_groups: Vec<String>,
    pub remove_groups: Vec<String>,
    pub policy: Option<String>,
    pub private_dns: Option<bool>,
}

impl ModifyEndpoint {
    pub fn is_noop(&self) -> bool {
        self.add_subnets.is_empty()
            && self.remove_subnets.is_empty()
            && self.add_groups.is_empty()
            && self.remove_groups.is_empty()
            && self.policy.is_none()
            && self.private_dns.is_none()
    }
}
