//! Step 1, observe: read the world (Kubernetes Nodes, EC2 describes, memory) for one object.
//! No decisions here beyond which answers are fresh enough (memory.rs has the rule).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;

use super::memory::{ByOwner, SeenEndpoints};
use super::ownership::{self, Holder};
use super::plan::{self, Owner};
use super::validate::{self, Invalid, Observed, SubnetSource};
use super::{Context, Error, FRESH, Failure, Scoped};
use crate::api::{BedrockPrivateLink, BedrockPrivateLinkSpec};
use crate::aws::{
    EndpointFacts, GroupFacts, ServiceFacts, SubnetFacts, TAG_OWNER_UID, VpcFacts, filter,
};
use crate::catalog::BedrockService;

/// What one reconcile saw.
#[derive(Debug, Clone)]
pub struct Observation {
    pub vpc_id: String,
    /// A resync of an object that is Ready at its generation: shared answers will do.
    pub steady: bool,
    /// No spec change since our last status write: our own recent writes are as good as a
    /// describe.
    pub settling: bool,
    /// What validation needs (the VPC, subnets, services, named groups, others' endpoints).
    pub facts: Observed,
    pub endpoints: Vec<EndpointFacts>,
    pub groups: Vec<GroupFacts>,
    /// When the EC2 reads began (for memory's rule).
    pub taken: Instant,
    /// When `endpoints` were seen (earlier than `taken` if they come from memory or a poll).
    pub endpoints_taken: Instant,
    /// Resources named in spec.adopt that passed the checks and are not ours yet: execute tags
    /// them as ours before planning.
    pub adopt: Adoption,
}

/// What spec.adopt brings in at this reconcile.
#[derive(Debug, Clone, Default)]
pub struct Adoption {
    pub endpoints: Vec<EndpointFacts>,
    pub group: Option<GroupFacts>,
}

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
    /// Cluster VPC and node subnets, from the Nodes' provider ids (the Node watch's store;
    /// a list only if there is none), cached for a resync period.
    pub async fn cluster_network(&self) -> Result<ClusterNetwork, Error> {
        let provider_ids: Vec<String> = match &self.nodes {
            Some(store) => {
                // Not before the Node watch has listed them all (an empty store would read as
                // "no VPC"). Polled: the store wakes only its last waiter.
                let tick = Duration::from_millis(200);
                while tokio::time::timeout(tick, store.wait_until_ready())
                    .await
                    .is_err()
                {}
                store
                    .state()
                    .iter()
                    .filter_map(|n| n.spec.as_ref()?.provider_id.clone())
                    .collect()
            }
            None => Api::<Node>::all(self.client.clone())
                .list(&ListParams::default())
                .await
                .map_err(Error::Kube)?
                .items
                .into_iter()
                .filter_map(|n| n.spec?.provider_id)
                .collect(),
        };
        let mut ids: Vec<String> = provider_ids
            .iter()
            .filter_map(|p| instance_id(p))
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
        // The Nodes are in the operator's own account and region.
        let instances = self
            .home()
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
}

impl Scoped<'_> {
    /// The endpoint services of this region, cached: the catalog changes rarely. Keyed by
    /// account and region: zone names map to different zones in different accounts.
    pub async fn services(&self) -> Result<BTreeMap<String, ServiceFacts>, Error> {
        let region = self.ec2.region.clone();
        self.shared
            .services
            .get_or_fetch(&self.ec2.scope(), || async {
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
    async fn observe_network(
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
        let max_age = if steady { Duration::MAX } else { FRESH };
        let key = format!("{}|{ids:?}|{vpc_id:?}|{tags:?}", self.ec2.scope());
        self.shared
            .subnets
            .get_or_fetch_fresh(&key, max_age, None, fetch)
            .await
    }

    /// The object's endpoints by the ownership rule (its uid, and this cluster or none yet).
    pub async fn owned_endpoints(&self, owner: &Owner) -> Result<Vec<EndpointFacts>, Error> {
        let found = self
            .ec2
            .describe_endpoints(vec![filter(
                &format!("tag:{TAG_OWNER_UID}"),
                [owner.uid.as_str()],
            )])
            .await
            .map_err(Error::Aws)?;
        Ok(found.into_iter().filter(|e| owner.owns(&e.tags)).collect())
    }

    /// Whether the object a resource's tags name exists in this cluster, by a direct read (a
    /// cache could lag behind a deletion or a restore).
    pub async fn owner_exists(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<bool, Error> {
        if namespace.is_empty() || name.is_empty() {
            return Ok(false);
        }
        let api: Api<BedrockPrivateLink> = Api::namespaced(self.client.clone(), namespace);
        let found = api.get_opt(name).await.map_err(Error::Kube)?;
        Ok(found.is_some_and(|o| o.metadata.uid.as_deref() == Some(uid)))
    }

    /// Whether the object let go of its endpoints to another owner (a takeover by another
    /// cluster's object): endpoints its status lists that are live and now someone else's.
    /// Sticky while the spec is unchanged, without a describe.
    async fn handed_over(
        &self,
        obj: &BedrockPrivateLink,
        owner: &Owner,
        owned: &[EndpointFacts],
    ) -> Result<Option<Invalid>, Error> {
        let Some(status) = obj.status.as_ref() else {
            return Ok(None);
        };
        let ready = super::status::ready_of(Some(status));
        if let Some(r) = ready.filter(|r| r.reason == ownership::HANDED_OVER)
            && status.observed_generation == obj.metadata.generation
        {
            return Ok(Some(Invalid {
                reason: ownership::HANDED_OVER,
                message: r.message.clone(),
            }));
        }
        let lost: Vec<&str> = status
            .endpoints
            .iter()
            .map(|e| e.vpc_endpoint_id.as_str())
            .filter(|id| !owned.iter().any(|o| o.id == *id && !o.state_is("deleted")))
            .collect();
        if lost.is_empty() {
            return Ok(None);
        }
        let found = self
            .ec2
            .describe_endpoints(vec![filter("vpc-endpoint-id", lost)])
            .await
            .map_err(Error::Aws)?;
        let taken: Vec<String> = found
            .iter()
            .filter(|e| !e.is_deleted_or_deleting())
            .filter_map(
                |e| match ownership::holder(&e.tags, &owner.cluster, &owner.uid) {
                    Holder::Other(other) => {
                        Some(format!("{} now belongs to {}", e.id, other.describe()))
                    }
                    _ => None,
                },
            )
            .collect();
        if taken.is_empty() {
            return Ok(None);
        }
        Ok(Some(Invalid {
            reason: ownership::HANDED_OVER,
            message: format!(
                "{}: this object let go of it and will not change or delete it again; delete \
                 this object when the handover is done (what it still owns goes as its \
                 deletionPolicy says)",
                taken.join("; ")
            ),
        }))
    }

    /// Checks spec.adopt against the spec and the resources' owners; returns what is to be
    /// adopted now (nothing once adopted: ours already).
    async fn adoption(
        &self,
        obj: &BedrockPrivateLink,
        owner: &Owner,
        vpc_id: &str,
        owned: &[EndpointFacts],
        owned_groups: &[GroupFacts],
        described_group: Vec<GroupFacts>,
    ) -> Result<Adoption, Failure> {
        let Some(adopt) = obj.spec.adopt.as_ref() else {
            return Ok(Adoption::default());
        };
        let endpoints = self
            .adopted_endpoints(obj, adopt, owner, vpc_id, owned)
            .await?;
        let group = match adopt.security_group_id.as_deref() {
            Some(id) if !owned_groups.iter().any(|g| g.id == id) => {
                self.group_to_adopt(id, described_group, adopt.take_over, owner, vpc_id)
                    .await?
            }
            _ => None,
        };
        Ok(Adoption { endpoints, group })
    }

    /// The endpoints of spec.adopt.endpointIds not ours yet, each checked (VPC, service, no
    /// second endpoint for a service, owner).
    async fn adopted_endpoints(
        &self,
        obj: &BedrockPrivateLink,
        adopt: &crate::api::AdoptSpec,
        owner: &Owner,
        vpc_id: &str,
        owned: &[EndpointFacts],
    ) -> Result<Vec<EndpointFacts>, Failure> {
        let pending: Vec<&str> = adopt
            .endpoint_ids
            .iter()
            .map(String::as_str)
            .filter(|id| !owned.iter().any(|o| o.id == *id))
            .collect();
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let found = self
            .ec2
            .describe_endpoints(vec![filter("vpc-endpoint-id", pending.iter().copied())])
            .await
            .map_err(Error::Aws)?;
        let has_endpoints = obj.status.as_ref().is_some_and(|s| !s.endpoints.is_empty());
        let missing: Vec<&str> = pending
            .iter()
            .copied()
            .filter(|id| !found.iter().any(|e| e.id == *id && !e.state_is("deleted")))
            .collect();
        if !missing.is_empty() && !has_endpoints {
            return Err(Invalid {
                reason: "AdoptionNotFound",
                message: format!(
                    "spec.adopt.endpointIds: {} not found in {}; check the ids and the region",
                    missing.join(", "),
                    self.ec2.region
                ),
            }
            .into());
        }
        let wanted: Vec<String> = obj
            .spec
            .services
            .iter()
            .map(|s| s.service_name(&self.ec2.region))
            .collect();
        let mut out: Vec<EndpointFacts> = Vec::new();
        for e in found.iter().filter(|e| !e.state_is("deleted")) {
            let held = ownership::holder(&e.tags, &owner.cluster, &owner.uid);
            let claimed: Vec<&EndpointFacts> = owned
                .iter()
                .chain(out.iter())
                .filter(|o| o.service_name == e.service_name && !o.is_deleted_or_deleting())
                .collect();
            check_endpoint(e, vpc_id, &wanted, &claimed)?;
            self.check_holder(&e.id, &held, owner, adopt.take_over)
                .await?;
            out.push(e.clone());
        }
        Ok(out)
    }

    /// spec.adopt.securityGroupId as observe_object described it (`found`), checked (VPC,
    /// owner); None when it is gone (adopted before and deleted since, or never there): a
    /// managed group is made.
    async fn group_to_adopt(
        &self,
        id: &str,
        found: Vec<GroupFacts>,
        take_over: bool,
        owner: &Owner,
        vpc_id: &str,
    ) -> Result<Option<GroupFacts>, Failure> {
        match found.into_iter().next() {
            Some(g) if g.vpc_id != vpc_id => Err(Invalid {
                reason: "AdoptionMismatch",
                message: format!(
                    "spec.adopt.securityGroupId: {id} is in {}, the endpoints' VPC is {vpc_id}",
                    g.vpc_id
                ),
            }
            .into()),
            Some(g) => {
                let held = ownership::holder(&g.tags, &owner.cluster, &owner.uid);
                self.check_holder(id, &held, owner, take_over).await?;
                Ok(Some(g))
            }
            None => {
                tracing::info!(group = %id, "spec.adopt.securityGroupId not found");
                Ok(None)
            }
        }
    }

    async fn check_holder(
        &self,
        resource: &str,
        held: &Holder,
        owner: &Owner,
        take_over: bool,
    ) -> Result<(), Failure> {
        let exists = match held {
            Holder::Other(o) if o.may_be_in(&owner.cluster) => {
                self.owner_exists(&o.namespace, &o.name, &o.uid).await?
            }
            _ => false,
        };
        ownership::may_adopt(resource, held, &owner.cluster, exists, take_over).map_err(|r| {
            Failure::Invalid(Invalid {
                reason: r.reason,
                message: r.message,
            })
        })
    }
}

impl Scoped<'_> {
    /// Observes one object: its VPC (spec, operator default, or the Nodes'), what validation
    /// needs, and its endpoints and groups. Fails with `Invalid` when the VPC cannot be chosen.
    pub async fn observe_object(&self, obj: &BedrockPrivateLink) -> Result<Observation, Failure> {
        let spec = &obj.spec;
        let owner = Owner::of(obj, &self.config.cluster_id);
        let generation = obj.metadata.generation;
        let needs_nodes = spec.vpc_id.is_none() && self.config.default_vpc_id.is_none()
            || spec
                .subnets
                .as_ref()
                .is_none_or(|s| s.ids.is_none() && s.selector.is_none());
        let network = if needs_nodes {
            self.cluster_network().await?
        } else {
            Default::default()
        };
        let vpc_id = validate::choose_vpc(spec, self.config.default_vpc_id.as_deref(), &network)?;
        let taken = Instant::now();
        // Ready at its generation by its status, or by what a reconcile of ours concluded
        // moments ago (the store may not show that status write yet).
        let concluded = self
            .memory
            .endpoints(&owner.uid, generation, Duration::MAX)
            .is_some_and(|s| s.ready);
        let steady = is_steady(obj) || concluded;
        // Our last status write counts even if the store does not show it yet.
        let written = self.memory.written(&owner.uid);
        let settling = written
            .as_deref()
            .or(obj.status.as_ref())
            .is_some_and(|s| s.observed_generation == generation);
        let mut facts = self
            .observe_vpc(spec, &vpc_id, &network.subnet_ids, steady)
            .await?;
        let (endpoints_taken, seen) = if facts.vpc.is_some() {
            let how = Freshness { steady, settling };
            self.endpoints_in_vpc(&owner.uid, generation, &vpc_id, spec.private_dns, how)
                .await?
        } else {
            (taken, Default::default())
        };
        if let Some(lost) = self.handed_over(obj, &owner, &seen.owned).await? {
            return Err(lost.into());
        }
        // An object the VPC poller watches, with no spec change since, waits for AWS (say):
        // its group is checked like a steady object's (drift in rules: at the resync).
        let watched = settling
            && self
                .poller
                .watching(&owner.uid, &self.ec2.key(&vpc_id))
                .is_some();
        let mut groups = self
            .owned_groups(&owner, generation, &vpc_id, steady || watched, settling)
            .await?;
        // spec.adopt's group, not found among ours by name: described once, ours already if
        // adopted earlier, else a candidate for adoption below.
        let adopt_group = match spec
            .adopt
            .as_ref()
            .and_then(|a| a.security_group_id.as_deref())
        {
            Some(id) if !groups.iter().any(|g| g.id == id) => {
                let found = self.group_by_id(id).await?;
                groups.extend(found.iter().filter(|g| owner.owns(&g.tags)).cloned());
                found
            }
            _ => Vec::new(),
        };
        // Without the VPC, validation says VpcNotFound; nothing to check spec.adopt against.
        let adopt = if facts.vpc.is_some() {
            self.adoption(obj, &owner, &vpc_id, &seen.owned, &groups, adopt_group)
                .await?
        } else {
            Adoption::default()
        };
        // What we are about to adopt is not another's private-DNS endpoint.
        facts.foreign_endpoints = seen
            .foreign
            .iter()
            .filter(|f| !adopt.endpoints.iter().any(|a| a.id == f.id))
            .cloned()
            .collect();
        Ok(Observation {
            adopt,
            vpc_id,
            steady,
            settling,
            facts,
            endpoints: seen.owned.clone(),
            groups,
            taken,
            endpoints_taken,
        })
    }

    async fn observe_vpc(
        &self,
        spec: &BedrockPrivateLinkSpec,
        vpc_id: &str,
        node_subnets: &BTreeSet<String>,
        steady: bool,
    ) -> Result<Observed, Error> {
        let key = (self.ec2.key(vpc_id), spec.private_dns);
        let fetch = || async {
            self.ec2
                .describe_vpc(vpc_id, spec.private_dns)
                .await
                .map_err(Error::Aws)
        };
        // VPCs hardly change: every reconcile shares one answer for a while (`FRESH` unless
        // this is a steady-state resync), so a burst of creates asks once.
        let max_age = if steady { Duration::MAX } else { FRESH };
        let vpc = self
            .shared
            .vpcs
            .get_or_fetch_fresh(&key, max_age, None, fetch)
            .await?;
        let mut obs = self
            .observe_network(spec, vpc_id, node_subnets, vpc, steady)
            .await?;
        obs.vpc_id = vpc_id.to_string();
        Ok(obs)
    }

    /// The object's endpoints in the VPC and, with private DNS, the VPC's other endpoints (only
    /// one endpoint per service may have private DNS), and when they were seen. Without a spec
    /// change since the last reconcile, what the VPC's poller or memory saw last (see
    /// `watched_endpoints`); else a steady-state resync uses what a reconcile of it saw (by
    /// memory's rule), or the VPC's shared answer; others ask AWS for just their own endpoints.
    async fn endpoints_in_vpc(
        &self,
        uid: &str,
        generation: Option<i64>,
        vpc_id: &str,
        private_dns: bool,
        how: Freshness,
    ) -> Result<(Instant, Arc<SeenEndpoints>), Error> {
        // `candidates`: every endpoint that may be ours, and with private DNS every other one.
        let split = |candidates: &mut dyn Iterator<Item = &EndpointFacts>| {
            let mut seen = SeenEndpoints::default();
            for e in candidates.filter(|e| e.vpc_id == vpc_id) {
                if ownership::is_ours(&e.tags, &self.config.cluster_id, uid) {
                    seen.owned.push(e.clone());
                } else if private_dns {
                    seen.foreign.push(e.clone());
                }
            }
            seen
        };
        if (how.steady || how.settling)
            && let Some(seen) = self.watched_endpoints(uid, generation, vpc_id, private_dns)
        {
            return Ok(seen);
        }
        if how.steady {
            if let Some(seen) = self.memory.endpoints_seen(uid, generation) {
                return Ok(seen);
            }
            // The shared answer may be up to its ttl old (never older than the process).
            let ttl = self.shared.endpoints.ttl();
            let at = Instant::now()
                .checked_sub(ttl)
                .map_or(self.epoch, |t| t.max(self.epoch));
            let all = self
                .shared
                .endpoints
                .get_or_fetch_fresh(
                    &self.ec2.key(vpc_id),
                    Duration::MAX,
                    self.memory.changed_at(uid),
                    || async {
                        let taken = Instant::now();
                        let all = self
                            .ec2
                            .describe_endpoints(vec![filter("vpc-id", [vpc_id])])
                            .await
                            .map_err(Error::Aws)?;
                        let all = Arc::new(ByOwner::new(all, |e| &e.tags));
                        // The VPC's poller takes it as its latest poll (held once, not twice).
                        self.poller.offer(&self.ec2.key(vpc_id), taken, all.clone());
                        Ok(all)
                    },
                )
                .await?;
            // Without private DNS only ours matter: found by the index, not by a scan.
            let seen = if private_dns {
                split(&mut all.all.iter())
            } else {
                split(&mut all.tagged_for(uid))
            };
            return Ok((at, Arc::new(seen)));
        }
        // Without private DNS only ours matter: one narrow filter (the VPC is checked above).
        let filters = if private_dns {
            vec![filter("vpc-id", [vpc_id])]
        } else {
            vec![filter(&format!("tag:{TAG_OWNER_UID}"), [uid])]
        };
        let at = Instant::now();
        let all = self
            .ec2
            .describe_endpoints(filters)
            .await
            .map_err(Error::Aws)?;
        Ok((at, Arc::new(split(&mut all.iter()))))
    }

    /// While the VPC's poller watches the object, the newer of what its latest poll and memory
    /// saw (since the object's last registration, by memory's rule) is current: a change after
    /// it would have triggered this reconcile (poll.rs). None when the poller does not
    /// watch it or holds nothing usable (with private DNS the VPC's other endpoints are needed
    /// too, which only memory holds).
    fn watched_endpoints(
        &self,
        uid: &str,
        generation: Option<i64>,
        vpc_id: &str,
        private_dns: bool,
    ) -> Option<(Instant, Arc<SeenEndpoints>)> {
        let watched = self.poller.watching(uid, &self.ec2.key(vpc_id))?;
        let changed = self.memory.changed_at(uid);
        // Memory's rule: taken after our last change, younger than the ttl (with a resync
        // shorter than the sweep, a resync reads afresh).
        let polled = watched.polled.filter(|p| {
            changed.is_none_or(|c| p.taken >= c) && p.taken.elapsed() < self.memory.ttl()
        });
        let remembered = self
            .memory
            .endpoints_seen(uid, generation)
            .filter(|(at, _)| *at >= watched.since);
        match (remembered, polled) {
            (Some((at, r)), Some(p)) if p.taken > at => {
                let seen = SeenEndpoints {
                    owned: p.owned,
                    foreign: r.foreign.clone(),
                    ready: r.ready,
                };
                Some((p.taken, Arc::new(seen)))
            }
            (Some(r), _) => Some(r),
            (None, Some(p)) if !private_dns => {
                let seen = SeenEndpoints {
                    owned: p.owned,
                    ..Default::default()
                };
                Some((p.taken, Arc::new(seen)))
            }
            _ => None,
        }
    }

    /// The object's groups. A steady-state resync, or a reconcile with no spec change since
    /// the last one (waiting for an endpoint, say), uses what we last saw or left; a
    /// steady-state resync otherwise shares one describe per VPC.
    async fn owned_groups(
        &self,
        owner: &Owner,
        generation: Option<i64>,
        vpc_id: &str,
        steady: bool,
        settling: bool,
    ) -> Result<Vec<GroupFacts>, Error> {
        let uid = owner.uid.as_str();
        if steady || settling {
            let max_age = if steady { Duration::MAX } else { FRESH };
            if let Some(g) = self.memory.groups(uid, generation, max_age) {
                return Ok(g.to_vec());
            }
        }
        if steady {
            let all = self
                .shared
                .groups
                .get_or_fetch_fresh(
                    &self.ec2.key(vpc_id),
                    Duration::MAX,
                    self.memory.changed_at(uid),
                    || async {
                        // Every group we name (bpl-<uid>); the owner tag is checked below.
                        self.ec2
                            .describe_security_groups(vec![
                                filter("vpc-id", [vpc_id]),
                                filter("group-name", [plan::GROUP_NAME_PATTERN]),
                            ])
                            .await
                            .map(|all| Arc::new(ByOwner::new(all, |g| &g.tags)))
                            .map_err(Error::Aws)
                    },
                )
                .await?;
            return Ok(all
                .tagged_for(uid)
                .filter(|g| owner.owns(&g.tags))
                .cloned()
                .collect());
        }
        self.groups_of(owner).await
    }

    /// The object's groups. We name ours `bpl-<uid>` and tag them with the uid; asking by that
    /// exact name is the narrowest filter (the emulator evaluates a tag filter by scanning
    /// every tag of every resource for each group, which grows with the square of the
    /// objects). Only groups that carry our owner tag count.
    pub async fn groups_of(&self, owner: &Owner) -> Result<Vec<GroupFacts>, Error> {
        let found = self
            .ec2
            .describe_security_groups(vec![filter("group-name", [owner.group_name().as_str()])])
            .await
            .map_err(Error::Aws)?;
        Ok(found.into_iter().filter(|g| owner.owns(&g.tags)).collect())
    }

    /// The group spec.adopt.securityGroupId names, if it is ours already (adopted earlier).
    pub async fn adopted_group(&self, owner: &Owner, id: &str) -> Result<Vec<GroupFacts>, Error> {
        let found = self.group_by_id(id).await?;
        Ok(found.into_iter().filter(|g| owner.owns(&g.tags)).collect())
    }

    /// The security group `id`, whoever owns it (none if it does not exist).
    async fn group_by_id(&self, id: &str) -> Result<Vec<GroupFacts>, Error> {
        self.ec2
            .describe_security_groups(vec![filter("group-id", [id])])
            .await
            .map_err(Error::Aws)
    }
}

/// An endpoint named in spec.adopt against the spec: same VPC, a service the spec asks for, a
/// state that accepts changes, and no other endpoint of ours (or adopted with it) for that
/// service. Its subnets, groups, policy and private DNS are then reconciled in place.
pub fn check_endpoint(
    e: &EndpointFacts,
    vpc_id: &str,
    wanted_services: &[String],
    claimed: &[&EndpointFacts],
) -> Result<(), Invalid> {
    let mismatch = |message: String| Invalid {
        reason: "AdoptionMismatch",
        message,
    };
    if e.vpc_id != vpc_id {
        return Err(mismatch(format!(
            "spec.adopt: {} is in {}, the object's VPC is {vpc_id}; endpoints cannot move \
             between VPCs",
            e.id, e.vpc_id
        )));
    }
    if !wanted_services.contains(&e.service_name) {
        return Err(mismatch(format!(
            "spec.adopt: {} is an endpoint for {}, which is not in spec.services ({}); add \
             the service or remove the id",
            e.id,
            e.service_name,
            wanted_services.join(", ")
        )));
    }
    if e.is_deleted_or_deleting() || plan::is_dead(e) {
        return Err(mismatch(format!(
            "spec.adopt: {} is {} and cannot be adopted; remove the id (a new endpoint is \
             created instead)",
            e.id, e.state
        )));
    }
    if let Some(other) = claimed.iter().find(|o| o.id != e.id) {
        return Err(mismatch(format!(
            "spec.adopt: {} and {} are both endpoints for {}; an object has one per service",
            e.id, other.id, e.service_name
        )));
    }
    Ok(())
}

/// How recent the answers of a reconcile must be.
#[derive(Debug, Clone, Copy)]
struct Freshness {
    /// A resync of an object that is Ready at its generation.
    steady: bool,
    /// No spec change since our last status write.
    settling: bool,
}

/// Ready at the generation it was last reconciled at: a resync, not a change.
fn is_steady(obj: &BedrockPrivateLink) -> bool {
    let Some(status) = obj.status.as_ref() else {
        return false;
    };
    status.observed_generation == obj.metadata.generation
        && super::status::ready_of(Some(status)).is_some_and(|c| c.status == "True")
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
