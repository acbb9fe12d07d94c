//! What the operator knows about EC2, in plain types with no SDK in them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

pub const TAG_OWNER_UID: &str = "bedrock.privatelink.io/owner-uid";
pub const TAG_NAME: &str = "bedrock.privatelink.io/name";
pub const TAG_NAMESPACE: &str = "bedrock.privatelink.io/namespace";
pub const TAG_SERVICE: &str = "bedrock.privatelink.io/service";
/// The cluster whose object owns the resource (the operator's --cluster-id). A resource belongs
/// to object O of cluster C iff it carries this tag with C and `TAG_OWNER_UID` with O's uid
/// (see reconcile/ownership.rs, which also covers resources made before this tag existed).
pub const TAG_CLUSTER: &str = "bedrock.privatelink.io/cluster";
/// The owner's spec.deletionPolicy (Delete or Retain), kept in sync with the spec: the orphan
/// sweep never removes a Retain resource.
pub const TAG_DELETION_POLICY: &str = "bedrock.privatelink.io/deletion-policy";
/// Which spec.tags keys the operator set on a resource (short hashes of the keys), so that a
/// key removed from spec.tags is removed from AWS and tags set by others are left alone.
pub const TAG_SPEC_KEYS: &str = "bedrock.privatelink.io/spec-tag-keys";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VpcFacts {
    pub id: String,
    pub ipv4_cidrs: Vec<String>,
    pub ipv6_cidrs: Vec<String>,
    pub dns_support: bool,
    pub dns_hostnames: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetFacts {
    pub id: String,
    pub vpc_id: String,
    pub az: String,
    pub az_id: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceFacts {
    pub service_name: String,
    /// Availability Zone names where the service is offered.
    pub azs: BTreeSet<String>,
    pub private_dns_name: Option<String>,
}

/// One security-group rule, as the operator compares them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRule {
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    pub source: RuleSource,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleSource {
    Ipv4(String),
    Ipv6(String),
    Group(String),
    PrefixList(String),
}

impl IpRule {
    pub fn https_from(source: RuleSource) -> Self {
        Self {
            protocol: "tcp".into(),
            from_port: 443,
            to_port: 443,
            source,
        }
    }
}

impl std::fmt::Display for IpRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let src = match &self.source {
            RuleSource::Ipv4(c) | RuleSource::Ipv6(c) => c,
            RuleSource::Group(g) => g,
            RuleSource::PrefixList(p) => p,
        };
        write!(
            f,
            "{}/{}-{} from {src}",
            self.protocol, self.from_port, self.to_port
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupFacts {
    pub id: String,
    pub name: String,
    pub vpc_id: String,
    pub ingress: BTreeSet<IpRule>,
    pub egress: BTreeSet<IpRule>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EndpointFacts {
    pub id: String,
    pub service_name: String,
    pub vpc_id: String,
    /// Lower-case state as the API sends it (compared case-insensitively).
    pub state: String,
    pub subnet_ids: BTreeSet<String>,
    pub group_ids: BTreeSet<String>,
    pub private_dns: bool,
    /// Shared by the endpoints of one describe that carry the same document (a VPC's thousand
    /// endpoints usually hold a handful of distinct policies).
    pub policy: Option<Arc<Value>>,
    pub dns_names: Vec<String>,
    pub network_interface_ids: Vec<String>,
    pub last_error: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl EndpointFacts {
    pub fn state_is(&self, s: &str) -> bool {
        self.state.eq_ignore_ascii_case(s)
    }

    /// Gone or going: nothing more to do with it.
    pub fn is_deleted_or_deleting(&self) -> bool {
        self.state_is("deleted") || self.state_is("deleting")
    }
}

/// An endpoint's network interface: where its standard and `vpce-...` names must lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceFacts {
    pub id: String,
    pub private_ips: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceFacts {
    pub id: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub az: String,
}
