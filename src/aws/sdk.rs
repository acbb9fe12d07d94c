//! The real `Ec2Api`: aws-sdk-ec2. Every call is counted, rate limited and mapped to plain types.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::{Intercept, RuntimeComponents};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter as SdkFilter, IpPermission, IpRange, Ipv6Range, ResourceType, Tag, TagSpecification,
    UserIdGroupPair, VpcAttributeName, VpcEndpointType,
};
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::retry::RetryConfig;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use futures::future::BoxFuture;

use super::{
    AwsError, AwsResult, CreateEndpoint, Ec2Api, EndpointFacts, ErrorCode, Filter, GroupFacts,
    InstanceFacts, InterfaceFacts, IpRule, ModifyEndpoint, RuleSource, ServiceFacts, SubnetFacts,
    VpcFacts,
};
use crate::telemetry::Metrics;

/// Page size of the describes that can return a whole VPC's endpoints or groups: each page is
/// turned into our compact facts before the next is asked for, so a VPC of a thousand
/// endpoints never holds the whole answer (megabytes of XML and SDK types) in memory at once.
const DESCRIBE_PAGE: i32 = 100;

fn map_err<E: ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &'static str,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> AwsError {
    if let Some(e) = credentials_failure(operation, &err) {
        return e;
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = match (err.code(), &err) {
        (Some(code), _) => ErrorCode::parse(code),
        (None, SdkError::TimeoutError(_)) => ErrorCode::Transport("Timeout"),
        (None, SdkError::DispatchFailure(_)) => ErrorCode::Transport("DispatchFailure"),
        (None, SdkError::ResponseError(_)) => ErrorCode::Transport("ResponseError"),
        (None, _) => ErrorCode::Transport("Unknown"),
    };
    let message = match err.message() {
        Some(m) => m.to_string(),
        None => format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(&err)
        ),
    };
    AwsError {
        operation,
        code,
        message,
        status,
    }
}

/// A request that never left because its credentials could not be had: STS refused to let the
/// operator assume the role (trust policy, external id), or could not be reached. Found in the
/// error's source chain (the SDK's identity cache wraps the AssumeRoleProvider's error), by
/// type: the STS error's own code, never its text.
fn credentials_failure(
    operation: &'static str,
    err: &(dyn std::error::Error + 'static),
) -> Option<AwsError> {
    type StsError = aws_sdk_sts::error::SdkError<
        aws_sdk_sts::operation::assume_role::AssumeRoleError,
        aws_smithy_runtime_api::http::Response,
    >;
    let mut found_credentials = None;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(sts) = e.downcast_ref::<StsError>() {
            let status = sts.raw_response().map(|r| r.status().as_u16());
            let (code, message) = match (sts.code(), sts.message()) {
                (Some(c), m) => (c.to_string(), m.unwrap_or_default().to_string()),
                (None, _) => (
                    "NoAnswer".to_string(),
                    format!(
                        "{}",
                        aws_smithy_types::error::display::DisplayErrorContext(sts)
                    ),
                ),
            };
            return Some(AwsError {
                operation,
                code: ErrorCode::AssumeRoleFailed,
                message: format!("STS AssumeRole failed: {code}: {message}"),
                status,
            });
        }
        if e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            found_credentials = Some(e);
        }
        next = e.source();
    }
    found_credentials.map(|e| AwsError {
        operation,
        code: ErrorCode::AssumeRoleFailed,
        message: format!(
            "no credentials: {}",
            aws_smithy_types::error::display::DisplayErrorContext(e)
        ),
        status: None,
    })
}

/// AWS's documented EC2 request-token buckets, applied client-side so that many objects at
/// once never run into RequestLimitExceeded.
pub struct Limiter {
    endpoint_mutations: DefaultDirectRateLimiter,
    mutations: DefaultDirectRateLimiter,
    describes: DefaultDirectRateLimiter,
}

impl Limiter {
    pub fn aws_defaults() -> Self {
        let bucket = |burst: u32, per_second: f64| {
            let period = Duration::from_secs_f64(1.0 / per_second);
            RateLimiter::direct(
                Quota::with_period(period)
                    .expect("period > 0")
                    .allow_burst(NonZeroU32::new(burst).expect("burst > 0")),
            )
        };
        Self {
            endpoint_mutations: bucket(4, 0.3),
            mutations: bucket(50, 5.0),
            describes: bucket(100, 20.0),
        }
    }

    async fn acquire(&self, operation: &str) {
        let bucket = match operation {
            "CreateVpcEndpoint" | "ModifyVpcEndpoint" | "DeleteVpcEndpoints" => {
                &self.endpoint_mutations
            }
            op if op.starts_with("Describe") => &self.describes,
            _ => &self.mutations,
        };
        bucket.until_ready().await;
    }
}

/// Counts every HTTP attempt (the SDK's retries included) by operation and outcome.
#[derive(Debug)]
struct AttemptCounter(Arc<Metrics>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "AttemptCounter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_default();
        let outcome = match context.response() {
            Some(resp) if resp.status().is_success() => "ok".to_string(),
            Some(resp) => resp
                .body()
                .bytes()
                .and_then(error_code_in_body)
                .unwrap_or_else(|| format!("http_{}", resp.status().as_u16())),
            None => "transport".to_string(),
        };
        self.0.record_ec2_attempt(&operation, &outcome);
        Ok(())
    }
}

fn error_code_in_body(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = text[start..].find("</Code>")? + start;
    Some(text[start..end].to_string())
}

#[derive(Clone)]
pub struct SdkEc2 {
    client: Client,
    metrics: Arc<Metrics>,
    limiter: Option<Arc<Limiter>>,
    pub region: String,
}

#[derive(Debug, Clone, Default)]
pub struct Ec2Options {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// STS endpoint override (an emulator in tests). AWS_ENDPOINT_URL_STS works too.
    pub sts_endpoint_url: Option<String>,
    pub rate_limit: bool,
    pub max_attempts: u32,
}

impl Ec2Options {
    /// The operator's own configuration: region and credentials from the standard chain (env,
    /// IRSA, EKS Pod Identity), with the STS endpoint override if any.
    pub async fn load_shared(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &self.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        loader.load().await
    }

    /// The configuration of the operator's STS clients (the AssumeRoleProviders', the caller
    /// identity's): `shared` with the STS endpoint override, if any.
    pub fn sts_config(&self, shared: &aws_config::SdkConfig) -> aws_config::SdkConfig {
        match &self.sts_endpoint_url {
            Some(url) => shared.to_builder().endpoint_url(url.clone()).build(),
            None => shared.clone(),
        }
    }
}

impl SdkEc2 {
    /// One EC2 client for `region`: the operator's own credentials (`credentials` None) or a
    /// role's (an AssumeRoleProvider behind the shared identity cache, which refreshes them
    /// before they expire). `limiter` is the (account, region)'s.
    pub fn build(
        shared: &aws_config::SdkConfig,
        region: &str,
        credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
        limiter: Option<Arc<Limiter>>,
        opts: &Ec2Options,
        metrics: Arc<Metrics>,
    ) -> Self {
        // Throttling and 5xx: the SDK's standard retry mode (exponential backoff with jitter).
        let retry = RetryConfig::standard()
            .with_max_attempts(opts.max_attempts.max(1))
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(10));
        let mut conf = aws_sdk_ec2::config::Builder::from(shared)
            .region(aws_config::Region::new(region.to_string()))
            .retry_config(retry)
            .interceptor(AttemptCounter(metrics.clone()));
        if let Some(c) = credentials {
            conf = conf.credentials_provider(c);
        }
        if let Some(url) = &opts.endpoint_url {
            conf = conf.endpoint_url(url.clone());
        }
        Self {
            client: Client::from_conf(conf.build()),
            metrics,
            limiter,
            region: region.to_string(),
        }
    }

    async fn call<T, F>(&self, operation: &'static str, fut: F) -> AwsResult<T>
    where
        F: Future<Output = AwsResult<T>>,
    {
        if let Some(l) = &self.limiter {
            l.acquire(operation).await;
        }
        let started = Instant::now();
        let result = fut.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.metrics.record_ec2_call(operation, outcome);
        tracing::debug!(
            operation,
            outcome,
            ms = started.elapsed().as_millis() as u64,
            "ec2 call"
        );
        result
    }

    pub async fn describe_vpc(
        &self,
        vpc_id: &str,
        with_dns_attributes: bool,
    ) -> AwsResult<Option<VpcFacts>> {
        let out = self
            .call("DescribeVpcs", async {
                self.client
                    .describe_vpcs()
                    .filters(sdk_filter(&super::filter("vpc-id", [vpc_id])))
                    .send()
                    .await
                    .map_err(|e| map_err("DescribeVpcs", e))
            })
            .await?;
        let Some(vpc) = out.vpcs().first() else {
            return Ok(None);
        };
        let mut facts = VpcFacts {
            id: vpc_id.to_string(),
            ipv4_cidrs: vpc
                .cidr_block_association_set()
                .iter()
                .filter(|a| {
                    a.cidr_block_state()
                        .and_then(|s| s.state())
                        .is_none_or(|s| s.as_str() == "associated")
                })
                .filter_map(|a| a.cidr_block().map(str::to_string))
                .collect(),
            ipv6_cidrs: vpc
                .ipv6_cidr_block_association_set()
                .iter()
                .filter_map(|a| a.ipv6_cidr_block().map(str::to_string))
                .collect(),
            ..Default::default()
        };
        if facts.ipv4_cidrs.is_empty()
            && let Some(c) = vpc.cidr_block()
        {
            facts.ipv4_cidrs.push(c.to_string());
        }
        if with_dns_attributes {
            facts.dns_support = self
                .vpc_attribute(vpc_id, VpcAttributeName::EnableDnsSupport)
                .await?;
            facts.dns_hostnames = self
                .vpc_attribute(vpc_id, VpcAttributeName::EnableDnsHostnames)
                .await?;
        }
        Ok(Some(facts))
    }

    async fn vpc_attribute(&self, vpc_id: &str, attribute: VpcAttributeName) -> AwsResult<bool> {
        let out = self
            .call("DescribeVpcAttribute", async {
                self.client
                    .describe_vpc_attribute()
                    .vpc_id(vpc_id)
                    .attribute(attribute.clone())
                    .send()
                    .await
                    .map_err(|e| map_err("DescribeVpcAttribute", e))
            })
            .await?;
        let value = match attribute {
            VpcAttributeName::EnableDnsSupport => out.enable_dns_support().and_then(|v| v.value()),
            _ => out.enable_dns_hostnames().and_then(|v| v.value()),
        };
        Ok(value.unwrap_or(false))
    }

    /// Subnets by id (missing ids are simply absent) or, with no ids, by VPC and tags.
    pub async fn describe_subnets(
        &self,
        ids: &[String],
        vpc_id: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> AwsResult<Vec<SubnetFacts>> {
        let mut req = self.client.describe_subnets();
        if !ids.is_empty() {
            req = req.filters(sdk_filter(&super::filter(
                "subnet-id",
                ids.iter().map(String::as_str),
            )));
        }
        if let Some(v) = vpc_id {
            req = req.filters(sdk_filter(&super::filter("vpc-id", [v])));
        }
        for (k, v) in tags {
            req = req.filters(sdk_filter(&super::filter(
                &format!("tag:{k}"),
                [v.as_str()],
            )));
        }
        let out = self
            .call("DescribeSubnets", async {
                req.send().await.map_err(|e| map_err("DescribeSubnets", e))
            })
            .await?;
        Ok(out
            .subnets()
            .iter()
            .map(|s| SubnetFacts {
                id: s.subnet_id().unwrap_or_default().to_string(),
                vpc_id: s.vpc_id().unwrap_or_default().to_string(),
                az: s.availability_zone().unwrap_or_default().to_string(),
                az_id: s.availability_zone_id().unwrap_or_default().to_string(),
                tags: tags_of(s.tags()),
            })
            .collect())
    }

    /// The endpoint services among `names` that exist in this region (missing ones are absent).
    pub async fn describe_services(&self, names: &[String]) -> AwsResult<Vec<ServiceFacts>> {
        let out = self
            .call("DescribeVpcEndpointServices", async {
                self.client
                    .describe_vpc_endpoint_services()
                    .filters(sdk_filter(&super::filter(
                        "service-name",
                        names.iter().map(String::as_str),
                    )))
                    .send()
                    .await
                    .map_err(|e| map_err("DescribeVpcEndpointServices", e))
            })
            .await?;
        Ok(out
            .service_details()
            .iter()
            .map(|d| ServiceFacts {
                service_name: d.service_name().unwrap_or_default().to_string(),
                azs: d.availability_zones().iter().cloned().collect(),
                private_dns_name: d.private_dns_name().map(str::to_string),
            })
            .collect())
    }

    pub async fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> AwsResult<Vec<GroupFacts>> {
        let mut groups = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .client
                .describe_security_groups()
                .set_filters(Some(filters.iter().map(sdk_filter).collect()))
                .max_results(DESCRIBE_PAGE)
                .set_next_token(token.clone());
            let out = self
                .call("DescribeSecurityGroups", async {
                    req.send()
                        .await
                        .map_err(|e| map_err("DescribeSecurityGroups", e))
                })
                .await?;
            groups.extend(out.security_groups().iter().map(|g| GroupFacts {
                id: g.group_id().unwrap_or_default().to_string(),
                name: g.group_name().unwrap_or_default().to_string(),
                vpc_id: g.vpc_id().unwrap_or_default().to_string(),
                ingress: rules_of(g.ip_permissions()),
                egress: rules_of(g.ip_permissions_egress()),
                tags: tags_of(g.tags()),
            }));
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(groups);
            }
        }
    }

    pub async fn describe_endpoints(&self, filters: Vec<Filter>) -> AwsResult<Vec<EndpointFacts>> {
        let mut endpoints = Vec::new();
        let mut policies = Policies::default();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .client
                .describe_vpc_endpoints()
                .set_filters(Some(filters.iter().map(sdk_filter).collect()))
                .max_results(DESCRIBE_PAGE)
                .set_next_token(token.clone());
            let out = self
                .call("DescribeVpcEndpoints", async {
                    req.send()
                        .await
                        .map_err(|e| map_err("DescribeVpcEndpoints", e))
                })
                .await?;
            endpoints.extend(
                out.vpc_endpoints()
                    .iter()
                    .map(|e| endpoint_facts(e, &mut policies)),
            );
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(endpoints);
            }
        }
    }

    pub async fn describe_instances(&self, ids: &[String]) -> AwsResult<Vec<InstanceFacts>> {
        let out = self
            .call("DescribeInstances", async {
                self.client
                    .describe_instances()
                    .filters(sdk_filter(&super::filter(
                        "instance-id",
                        ids.iter().map(String::as_str),
                    )))
                    .send()
                    .await
                    .map_err(|e| map_err("DescribeInstances", e))
            })
            .await?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| InstanceFacts {
                id: i.instance_id().unwrap_or_default().to_string(),
                vpc_id: i.vpc_id().unwrap_or_default().to_string(),
                subnet_id: i.subnet_id().unwrap_or_default().to_string(),
                az: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or_default()
                    .to_string(),
            })
            .collect())
    }

    pub async fn describe_network_interfaces(
        &self,
        ids: &[String],
    ) -> AwsResult<Vec<InterfaceFacts>> {
        let out = self
            .call("DescribeNetworkInterfaces", async {
                self.client
                    .describe_network_interfaces()
                    .filters(sdk_filter(&super::filter(
                        "network-interface-id",
                        ids.iter().map(String::as_str),
                    )))
                    .send()
                    .await
                    .map_err(|e| map_err("DescribeNetworkInterfaces", e))
            })
            .await?;
        Ok(out
            .network_interfaces()
            .iter()
            .map(|n| InterfaceFacts {
                id: n.network_interface_id().unwrap_or_default().to_string(),
                private_ips: n
                    .private_ip_addresses()
                    .iter()
                    .filter_map(|a| a.private_ip_address()?.parse().ok())
                    .chain(
                        n.ipv6_addresses()
                            .iter()
                            .filter_map(|a| a.ipv6_address()?.parse().ok()),
                    )
                    .collect(),
            })
            .collect())
    }

    pub async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> AwsResult<String> {
        let out = self
            .call("CreateSecurityGroup", async {
                self.client
                    .create_security_group()
                    .group_name(name)
                    .description(description)
                    .vpc_id(vpc_id)
                    .tag_specifications(tag_spec(ResourceType::SecurityGroup, tags))
                    .send()
                    .await
                    .map_err(|e| map_err("CreateSecurityGroup", e))
            })
            .await?;
        Ok(out.group_id().unwrap_or_default().to_string())
    }

    pub async fn authorize_ingress(&self, group_id: &str, rules: &[IpRule]) -> AwsResult<()> {
        let perms = rules.iter().map(permission).collect::<Vec<_>>();
        self.call("AuthorizeSecurityGroupIngress", async {
            self.client
                .authorize_security_group_ingress()
                .group_id(group_id)
                .set_ip_permissions(Some(perms))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map_err("AuthorizeSecurityGroupIngress", e))
        })
        .await
    }

    pub async fn revoke_ingress(&self, group_id: &str, rules: &[IpRule]) -> AwsResult<()> {
        let perms = rules.iter().map(permission).collect::<Vec<_>>();
        self.call("RevokeSecurityGroupIngress", async {
            self.client
                .revoke_security_group_ingress()
                .group_id(group_id)
                .set_ip_permissions(Some(perms))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map_err("RevokeSecurityGroupIngress", e))
        })
        .await
    }

    pub async fn revoke_egress(&self, group_id: &str, rules: &[IpRule]) -> AwsResult<()> {
        let perms = rules.iter().map(permission).collect::<Vec<_>>();
        self.call("RevokeSecurityGroupEgress", async {
            self.client
                .revoke_security_group_egress()
                .group_id(group_id)
                .set_ip_permissions(Some(perms))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map_err("RevokeSecurityGroupEgress", e))
        })
        .await
    }

    pub async fn delete_security_group(&self, group_id: &str) -> AwsResult<()> {
        self.call("DeleteSecurityGroup", async {
            self.client
                .delete_security_group()
                .group_id(group_id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map_err("DeleteSecurityGroup", e))
        })
        .await
    }

    /// Creates an endpoint and returns it as AWS described it in the answer.
    pub async fn create_endpoint(&self, req: &CreateEndpoint) -> AwsResult<EndpointFacts> {
        let out = self
            .call("CreateVpcEndpoint", async {
                self.client
                    .create_vpc_endpoint()
                    .vpc_endpoint_type(VpcEndpointType::Interface)
                    .vpc_id(&req.vpc_id)
                    .service_name(&req.service_name)
                    .set_subnet_ids(Some(req.subnet_ids.clone()))
                    .set_security_group_ids(Some(req.group_ids.clone()))
                    .private_dns_enabled(req.private_dns)
                    .policy_document(&req.policy)
                    .client_token(&req.client_token)
                    .tag_specifications(tag_spec(ResourceType::VpcEndpoint, &req.tags))
                    .send()
                    .await
                    .map_err(|e| map_err("CreateVpcEndpoint", e))
            })
            .await?;
        out.vpc_endpoint()
            .map(|e| endpoint_facts(e, &mut Policies::default()))
            .ok_or_else(|| {
                AwsError::new(
                    "CreateVpcEndpoint",
                    ErrorCode::Transport("EmptyResponse"),
                    "CreateVpcEndpoint returned no endpoint",
                )
            })
    }

    pub async fn modify_endpoint(&self, m: &ModifyEndpoint) -> AwsResult<()> {
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        self.call("ModifyVpcEndpoint", async {
            self.client
                .modify_vpc_endpoint()
                .vpc_endpoint_id(&m.id)
                .set_add_subnet_ids(some(&m.add_subnets))
                .set_remove_subnet_ids(some(&m.remove_subnets))
                .set_add_security_group_ids(some(&m.add_groups))
                .set_remove_security_group_ids(some(&m.remove_groups))
                .set_policy_document(m.policy.clone())
                .set_private_dns_enabled(m.private_dns)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map_err("ModifyVpcEndpoint", e))
        })
        .await
    }

    /// Deletes endpoints; an item AWS reports as unsuccessful is an error, not ignored.
    pub async fn delete_endpoints(&self, ids: &[String]) -> AwsResult<()> {
        let out = self
            .call("DeleteVpcEndpoints", async {
                self.client
                    .delete_vpc_endpoints()
                    .set_vpc_endpoint_ids(Some(ids.to_vec()))
                    .send()
                    .await
                    .map_err(|e| map_err("DeleteVpcEndpoints", e))
            })
            .await?;
        let failures: Vec<String> = out
            .unsuccessful()
            .iter()
            .filter(|u| {
                // Already gone is what we want.
                let code = u.error().and_then(|e| e.code()).unwrap_or_default();
                ErrorCode::parse(code) != ErrorCode::VpcEndpointNotFound
            })
            .map(|u| {
                format!(
                    "{}: {}",
                    u.resource_id().unwrap_or_default(),
                    u.error().and_then(|e| e.message()).unwrap_or_default()
                )
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(AwsError::new(
                "DeleteVpcEndpoints",
                ErrorCode::Unsuccessful,
                failures.join("; "),
            ))
        }
    }
}

impl SdkEc2 {
    pub async fn create_tags(
        &self,
        resource_ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> AwsResult<()> {
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        self.call("CreateTags", async {
            self.client
                .create_tags()
                .set_resources(Some(resource_ids.to_vec()))
                .set_tags(Some(tags))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map_err("CreateTags", e))
        })
        .await
    }

    pub async fn delete_tags(&self, resource_ids: &[String], keys: &[String]) -> AwsResult<()> {
        // A tag given by key alone is removed whatever its value.
        let tags: Vec<Tag> = keys.iter().map(|k| Tag::builder().key(k).build()).collect();
        self.call("DeleteTags", async {
            self.client
                .delete_tags()
                .set_resources(Some(resource_ids.to_vec()))
                .set_tags(Some(tags))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map_err("DeleteTags", e))
        })
        .await
    }
}

/// Inherent methods above do the work; the trait only boxes their futures.
impl Ec2Api for SdkEc2 {
    fn describe_vpc<'a>(
        &'a self,
        vpc_id: &'a str,
        with_dns_attributes: bool,
    ) -> BoxFuture<'a, AwsResult<Option<VpcFacts>>> {
        Box::pin(SdkEc2::describe_vpc(self, vpc_id, with_dns_attributes))
    }
    fn describe_subnets<'a>(
        &'a self,
        ids: &'a [String],
        vpc_id: Option<&'a str>,
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, AwsResult<Vec<SubnetFacts>>> {
        Box::pin(SdkEc2::describe_subnets(self, ids, vpc_id, tags))
    }
    fn describe_services<'a>(
        &'a self,
        names: &'a [String],
    ) -> BoxFuture<'a, AwsResult<Vec<ServiceFacts>>> {
        Box::pin(SdkEc2::describe_services(self, names))
    }
    fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> BoxFuture<'_, AwsResult<Vec<GroupFacts>>> {
        Box::pin(SdkEc2::describe_security_groups(self, filters))
    }
    fn describe_endpoints(
        &self,
        filters: Vec<Filter>,
    ) -> BoxFuture<'_, AwsResult<Vec<EndpointFacts>>> {
        Box::pin(SdkEc2::describe_endpoints(self, filters))
    }
    fn describe_instances<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, AwsResult<Vec<InstanceFacts>>> {
        Box::pin(SdkEc2::describe_instances(self, ids))
    }
    fn describe_network_interfaces<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, AwsResult<Vec<InterfaceFacts>>> {
        Box::pin(SdkEc2::describe_network_interfaces(self, ids))
    }
    fn create_security_group<'a>(
        &'a self,
        name: &'a str,
        description: &'a str,
        vpc_id: &'a str,
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, AwsResult<String>> {
        Box::pin(SdkEc2::create_security_group(
            self,
            name,
            description,
            vpc_id,
            tags,
        ))
    }
    fn authorize_ingress<'a>(
        &'a self,
        group_id: &'a str,
        rules: &'a [IpRule],
    ) -> BoxFuture<'a, AwsResult<()>> {
        Box::pin(SdkEc2::authorize_ingress(self, group_id, rules))
    }
    fn revoke_ingress<'a>(
        &'a self,
        group_id: &'a str,
        rules: &'a [IpRule],
    ) -> BoxFuture<'a, AwsResult<()>> {
        Box::pin(SdkEc2::revoke_ingress(self, group_id, rules))
    }
    fn revoke_egress<'a>(
        &'a self,
        group_id: &'a str,
        rules: &'a [IpRule],
    ) -> BoxFuture<'a, AwsResult<()>> {
        Box::pin(SdkEc2::revoke_egress(self, group_id, rules))
    }
    fn delete_security_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, AwsResult<()>> {
        Box::pin(SdkEc2::delete_security_group(self, group_id))
    }
    fn create_endpoint<'a>(
        &'a self,
        req: &'a CreateEndpoint,
    ) -> BoxFuture<'a, AwsResult<EndpointFacts>> {
        Box::pin(SdkEc2::create_endpoint(self, req))
    }
    fn modify_endpoint<'a>(&'a self, m: &'a ModifyEndpoint) -> BoxFuture<'a, AwsResult<()>> {
        Box::pin(SdkEc2::modify_endpoint(self, m))
    }
    fn delete_endpoints<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, AwsResult<()>> {
        Box::pin(SdkEc2::delete_endpoints(self, ids))
    }
    fn create_tags<'a>(
        &'a self,
        resource_ids: &'a [String],
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, AwsResult<()>> {
        Box::pin(SdkEc2::create_tags(self, resource_ids, tags))
    }
    fn delete_tags<'a>(
        &'a self,
        resource_ids: &'a [String],
        keys: &'a [String],
    ) -> BoxFuture<'a, AwsResult<()>> {
        Box::pin(SdkEc2::delete_tags(self, resource_ids, keys))
    }
}

/// Parsed policy documents by their text, so equal documents are parsed and held once.
type Policies = std::collections::HashMap<String, Option<Arc<serde_json::Value>>>;

fn endpoint_facts(e: &aws_sdk_ec2::types::VpcEndpoint, policies: &mut Policies) -> EndpointFacts {
    EndpointFacts {
        id: e.vpc_endpoint_id().unwrap_or_default().to_string(),
        service_name: e.service_name().unwrap_or_default().to_string(),
        vpc_id: e.vpc_id().unwrap_or_default().to_string(),
        // aws-sdk-ec2's State enum expects "Available" but the API sends "available":
        // keep the raw string and compare case-insensitively.
        state: e
            .state()
            .map(|s| s.as_str().to_ascii_lowercase())
            .unwrap_or_default(),
        subnet_ids: e.subnet_ids().iter().cloned().collect(),
        group_ids: e
            .groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
        private_dns: e.private_dns_enabled().unwrap_or(false),
        policy: e.policy_document().and_then(|doc| {
            policies
                .entry(doc.to_string())
                .or_insert_with(|| crate::policy::parse_observed(doc).map(Arc::new))
                .clone()
        }),
        dns_names: e
            .dns_entries()
            .iter()
            .filter_map(|d| d.dns_name().map(str::to_string))
            .collect(),
        network_interface_ids: e.network_interface_ids().to_vec(),
        last_error: e.last_error().map(|l| {
            format!(
                "{}: {}",
                l.code().unwrap_or("Error"),
                l.message().unwrap_or_default()
            )
        }),
        tags: tags_of(e.tags()),
    }
}

fn sdk_filter(f: &Filter) -> SdkFilter {
    SdkFilter::builder()
        .name(&f.name)
        .set_values(Some(f.values.clone()))
        .build()
}

fn tag_spec(kind: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

fn tags_of(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn rules_of(perms: &[IpPermission]) -> BTreeSet<IpRule> {
    let mut rules = BTreeSet::new();
    for p in perms {
        let protocol = p.ip_protocol().unwrap_or("-1").to_string();
        let (from_port, to_port) = (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1));
        let rule = |source| IpRule {
            protocol: protocol.clone(),
            from_port,
            to_port,
            source,
        };
        rules.extend(
            p.ip_ranges()
                .iter()
                .filter_map(|r| r.cidr_ip())
                .map(|c| rule(RuleSource::Ipv4(c.to_string()))),
        );
        rules.extend(
            p.ipv6_ranges()
                .iter()
                .filter_map(|r| r.cidr_ipv6())
                .map(|c| rule(RuleSource::Ipv6(c.to_string()))),
        );
        rules.extend(
            p.user_id_group_pairs()
                .iter()
                .filter_map(|g| g.group_id())
                .map(|g| rule(RuleSource::Group(g.to_string()))),
        );
        rules.extend(
            p.prefix_list_ids()
                .iter()
                .filter_map(|g| g.prefix_list_id())
                .map(|g| rule(RuleSource::PrefixList(g.to_string()))),
        );
    }
    rules
}

fn permission(rule: &IpRule) -> IpPermission {
    let mut b = IpPermission::builder().ip_protocol(&rule.protocol);
    if rule.protocol != "-1" {
        b = b.from_port(rule.from_port).to_port(rule.to_port);
    }
    match &rule.source {
        RuleSource::Ipv4(c) => b = b.ip_ranges(IpRange::builder().cidr_ip(c).build()),
        RuleSource::Ipv6(c) => b = b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build()),
        RuleSource::Group(g) => {
            b = b.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build())
        }
        RuleSource::PrefixList(p) => {
            b = b.prefix_list_ids(
                aws_sdk_ec2::types::PrefixListId::builder()
                    .prefix_list_id(p)
                    .build(),
            )
        }
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_from_ec2_xml() {
        let body = b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>slow down</Message></Error></Errors></Response>";
        assert_eq!(
            error_code_in_body(body).as_deref(),
            Some("RequestLimitExceeded")
        );
        assert_eq!(error_code_in_body(b"{}"), None);
    }

    #[test]
    fn rules_round_trip_through_permissions() {
        let rules = [
            IpRule::https_from(RuleSource::Ipv4("10.0.0.0/16".into())),
            IpRule::https_from(RuleSource::Ipv6("2600:1f18::/56".into())),
            IpRule::https_from(RuleSource::Group("sg-0123456789abcdef0".into())),
            IpRule {
                protocol: "-1".into(),
                from_port: -1,
                to_port: -1,
                source: RuleSource::Ipv4("0.0.0.0/0".into()),
            },
        ];
        let perms: Vec<IpPermission> = rules.iter().map(permission).collect();
        let back = rules_of(&perms);
        assert_eq!(back, rules.into_iter().collect());
    }
}
