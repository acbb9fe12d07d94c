//! Reading the world: Kubernetes Nodes and EC2 describes. No decisions here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;

use super::validate::{Observed, SubnetSource};
use super::{Context, Error};
use crate::api::BedrockPrivateLinkSpec;
use crate::aws::{EndpointFacts, ServiceFacts, SubnetFacts, TAG_OWNER_UID, VpcFacts, filter};
use crate::catalog::BedrockService;

/// The cluster's network as seen from its Nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterNetwork {
    pub vpc_ids: BTreeSet<String>,
    pub subnet_ids: BTreeSet<String>,
}

/// `aws:///us-east-1a/i-0123456789abcdef0` -> `i-0123456789abcdef0`.
pub fn instance_id(provider_id: &str) -> Option<&str> {
    let rest = provider_id.strip_prefix("aws://")?;
    rest.rsplit('/').next().filter(|id| id.starts_with("i-"))
}

impl Context {
    /// Cluster VPC and node subnets, from the Nodes' provider ids (cached for a resync period).
    pub async fn cluster_network(&self) -> Result<ClusterNetwork, Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes
            .list(&ListParams::default())
            .await
            .map_err(Error::Kube)?;
        let mut ids: Vec<String> = list
            .items
            .iter()
            .filter_map(|n| n.spec.as_ref()?.provider_id.as_deref())
            .filter_map(instance_id)
            .map(str::to_string)
            .collect();
        ids.sort();
        if ids.is_empty() {
            return Ok(ClusterNetwork::default());
        }
        {
            let cache = self.network_cache.lock().await;
            if let Some((at, key, net)) = cache.as_ref()
                && *key == ids
                && at.elapsed() < self.config.resync
            {
                return Ok(net.clone());
            }
        }
        let instances = self
            .ec2
            .describe_instances(&ids)
            .await
            .map_err(Error::Aws)?;
        let net = ClusterNetwork {
            vpc_ids: instances
                .iter()
                .map(|i| i.vpc_id.clone())
                .filter(|v| !v.is_empty())
                .collect(),
            subnet_ids: instances
                .iter()
                .map(|i| i.subnet_id.clone())
                .filter(|v| !v.is_empty())
                .collect(),
        };
        *self.network_cache.lock().await = Some((Instant::now(), ids, net.clone()));
        Ok(net)
    }

    /// The endpoint services of this region, cached: the catalog changes rarely.
    pub async fn services(&self) -> Result<BTreeMap<String, ServiceFacts>, Error> {
        let region = self.ec2.region.clone();
        self.caches
            .services
            .get_or_fetch(&region, || async {
                let all: Vec<String> = BedrockService::ALL
                    .iter()
                    .map(|s| s.service_name(&region))
                    .collect();
                let facts = self.ec2.describe_services(&all).await.map_err(Error::Aws)?;
                Ok(facts
                    .into_iter()
                    .map(|f| (f.service_name.clone(), f))
                    .collect())
            })
            .await
    }

    /// Everything validation needs, for a resolved VPC.
    pub async fn observe(
        &self,
        spec: &BedrockPrivateLinkSpec,
        vpc_id: &str,
        node_subnets: &BTreeSet<String>,
        vpc: Option<VpcFacts>,
        steady: bool,
    ) -> Result<Observed, Error> {
        let (source, subnets) = match spec.subnets.as_ref() {
            Some(s) if s.ids.is_some() => {
                let ids = s.ids.clone().unwrap_or_default();
                let found = self.subnets(&ids, None, &BTreeMap::new(), steady).await?;
                (SubnetSource::Explicit(ids), found)
            }
            Some(s) if s.selector.is_some() => {
                let tags = s.selector.clone().unwrap_or_default();
                let found = self.subnets(&[], Some(vpc_id), &tags, steady).await?;
                (SubnetSource::Selector(tags), found)
            }
            _ => {
                let ids: Vec<String> = node_subnets.iter().cloned().collect();
                let found = if ids.is_empty() {
                    Vec::new()
                } else {
                    self.subnets(&ids, Some(vpc_id), &BTreeMap::new(), steady)
                        .await?
                };
                (SubnetSource::Nodes, found)
            }
        };
        let services = self.services().await?;
        // The groups the spec names: existingIds, or the sources in allowFrom (exclusive).
        let named_groups = spec.security_group.as_ref().and_then(|g| {
            g.existing_ids.as_ref().or(g
                .allow_from
                .as_ref()
                .and_then(|a| a.security_group_ids.as_ref()))
        });
        let existing_groups = match named_groups.filter(|ids| !ids.is_empty()) {
            Some(ids) => self
                .ec2
                .describe_security_groups(vec![filter("group-id", ids.iter().map(String::as_str))])
                .await
                .map_err(Error::Aws)?,
            None => Vec::new(),
        };
        Ok(Observed {
            operator_region: self.ec2.region.clone(),
            vpc_id: vpc_id.to_string(),
            vpc,
            subnet_source: Some(source),
            subnets,
            services,
            existing_groups,
            foreign_endpoints: Vec::new(),
        })
    }

    async fn subnets(
        &self,
        ids: &[String],
        vpc_id: Option<&str>,
        tags: &BTreeMap<String, String>,
        steady: bool,
    ) -> Result<Vec<SubnetFacts>, Error> {
        let fetch = || async {
            self.ec2
                .describe_subnets(ids, vpc_id, tags)
                .await
                .map_err(Error::Aws)
        };
        // Like VPCs: shared for `FRESH` by every reconcile, for the ttl by steady resyncs.
        let max_age = if steady { Duration::MAX } else { super::FRESH };
        let key = format!("{ids:?}|{vpc_id:?}|{tags:?}");
        self.caches
            .subnets
            .get_or_fetch_fresh(&key, max_age, None, fetch)
            .await
    }

    pub async fn owned_endpoints(&self, uid: &str) -> Result<Vec<EndpointFacts>, Error> {
        self.ec2
            .describe_endpoints(vec![filter(&format!("tag:{TAG_OWNER_UID}"), [uid])])
            .await
            .map_err(Error::Aws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids() {
        assert_eq!(
            instance_id("aws:///us-east-1a/i-0123456789abcdef0"),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(instance_id("aws:///i-0abc"), Some("i-0abc"));
        assert_eq!(instance_id("gce://project/zone/name"), None);
        assert_eq!(instance_id("aws:///us-east-1a/fargate-ip-10-0-0-1"), None);
    }
}
