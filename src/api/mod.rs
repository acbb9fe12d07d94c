//! The `BedrockPrivateLink` custom resource (v1alpha1).
//!
//! What the API server can judge (formats, enums, required-together, exclusive fields) is in the
//! schema and CEL rules here, so `kubectl apply` rejects a bad spec before the operator sees it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::catalog::BedrockService;

pub mod grant;
pub use grant::{BedrockPrivateLinkGrant, BedrockPrivateLinkGrantSpec};

pub const GROUP: &str = "bedrock.privatelink.io";
pub const FINALIZER: &str = "bedrock.privatelink.io/cleanup";

/// Private access to Amazon Bedrock: interface VPC endpoints, their security group and policy.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "bedrock.privatelink.io",
    version = "v1alpha1",
    kind = "BedrockPrivateLink",
    plural = "bedrockprivatelinks",
    shortname = "bpl",
    namespaced,
    status = "BedrockPrivateLinkStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"VPC","type":"string","jsonPath":".status.vpcId"}"#,
    printcolumn = r#"{"name":"Endpoints","type":"string","jsonPath":".status.endpoints[*].vpcEndpointId"}"#,
    printcolumn = r#"{"name":"DNS","type":"string","priority":1,"jsonPath":".status.endpoints[*].dnsNames[0]"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.vpcId) == has(oldSelf.vpcId) && (!has(self.vpcId) || self.vpcId == oldSelf.vpcId)").message("spec.vpcId is immutable: endpoints cannot move between VPCs; create a new object instead"))]
#[x_kube(validation = Rule::new("has(self.region) == has(oldSelf.region) && (!has(self.region) || self.region == oldSelf.region)").message("spec.region is immutable; create a new object instead"))]
pub struct BedrockPrivateLinkSpec {
    /// AWS region of the endpoints. Defaults to the operator's region. Must be the region of the
    /// VPC (an interface endpoint lives in the VPC's region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$"))]
    pub region: Option<String>,

    /// VPC to create the endpoints in. Defaults to the cluster's VPC, discovered from the Nodes'
    /// spec.providerID, or the operator's --default-vpc-id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$"))]
    pub vpc_id: Option<String>,

    /// Bedrock endpoint services; each becomes one interface endpoint. Default [bedrock-runtime].
    #[serde(default = "default_services")]
    #[schemars(length(min = 1, max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub services: Vec<BedrockService>,

    /// Subnets for the endpoints: explicit ids, or a tag selector. Default: the subnets of the
    /// cluster's nodes. At most one subnet per Availability Zone is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<SubnetSelection>,

    /// Make the standard Bedrock hostnames resolve to the endpoint inside the VPC. Default true.
    #[serde(default = "default_true")]
    pub private_dns: bool,

    /// The security group of the endpoints: managed by the operator (default) or existing ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group: Option<SecurityGroupSpec>,

    /// The endpoint policy. Default: preset InvokeOnly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySpec>,

    /// Extra tags on every AWS resource the operator creates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 30))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('aws:') && !k.startsWith('bedrock.privatelink.io/') && size(k) <= 128 && size(self[k]) <= 256)").message("tag keys may not start with 'aws:' or 'bedrock.privatelink.io/'; keys are at most 128 characters and values at most 256"))]
    pub tags: BTreeMap<String, String>,

    /// Delete (default): remove the AWS resources with the object. Retain: leave them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// What workloads see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_config: Option<WorkloadConfig>,
}

fn default_services() -> Vec<BedrockService> {
    vec![BedrockService::BedrockRuntime]
}

fn default_true() -> bool {
    true
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.ids) && has(self.selector))").message("subnets: set either ids or selector, not both"))]
pub struct SubnetSelection {
    /// Explicit subnet ids (one per Availability Zone is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 16),
        inner(pattern(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$"))
    )]
    pub ids: Option<Vec<String>>,
    /// Subnets of the VPC that carry all of these tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 10))]
    pub selector: Option<BTreeMap<String, String>>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.existingIds) && has(self.allowFrom))").message("securityGroup: allowFrom configures the managed group; it cannot be combined with existingIds"))]
pub struct SecurityGroupSpec {
    /// Who may reach the endpoints on tcp/443 (managed group only). Default: the VPC's CIDR blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<AllowFrom>,
    /// Use these existing security groups instead of a managed one; the operator never changes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 5),
        inner(pattern(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$"))
    )]
    pub existing_ids: Option<Vec<String>>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.cidrs) || self.allowAnyAddress || self.cidrs.all(c, !c.endsWith('/0'))").message("allowFrom.cidrs: a /0 range opens the endpoint to any address; set allowFrom.allowAnyAddress: true to confirm"))]
pub struct AllowFrom {
    /// IPv4 or IPv6 CIDR blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50), inner(length(max = 43)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("allowFrom.cidrs: every entry must be a CIDR block such as 10.0.0.0/16"))]
    pub cidrs: Option<Vec<String>>,
    /// Security groups whose members may connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50), inner(pattern(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")))]
    pub security_group_ids: Option<Vec<String>>,
    /// Explicit opt-in for a /0 range in cidrs.
    #[serde(default)]
    pub allow_any_address: bool,
}

#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum PolicyPreset {
    /// bedrock:InvokeModel and bedrock:InvokeModelWithResponseStream (also Converse/ConverseStream).
    #[default]
    InvokeOnly,
    /// Invoke plus read-only Get/List calls.
    ReadOnly,
    /// Every bedrock action.
    FullAccess,
    /// The raw JSON in `document`.
    Custom,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.preset == 'Custom' ? has(self.document) : !has(self.document)").message("policy: preset Custom requires document, and document is only allowed with preset Custom"))]
#[x_kube(validation = Rule::new("self.preset != 'Custom' || (!has(self.models) && !has(self.principals) && !has(self.organizationId))").message("policy: models, principals and organizationId apply to presets; with Custom, write them into the document"))]
pub struct PolicySpec {
    #[serde(default)]
    pub preset: PolicyPreset,
    /// Foundation model ids (e.g. anthropic.claude-3-haiku-20240307-v1:0) or full model /
    /// inference-profile ARNs the policy is limited to. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 50), inner(length(min = 1, max = 2048), pattern(r"^([a-z0-9-]+\.[A-Za-z0-9.:_-]+|arn:aws[a-z-]*:bedrock:[a-z0-9-]*:[0-9]{0,12}:[a-z-]+/[A-Za-z0-9.:_/-]+)$")))]
    pub models: Option<Vec<String>>,
    /// IAM principal ARNs allowed through the endpoint. Default: any principal of an account
    /// that has its own IAM permission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 50),
        inner(pattern(r"^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:[A-Za-z0-9+=,.@_/:-]+$"))
    )]
    pub principals: Option<Vec<String>>,
    /// Allow only principals of this AWS Organization (aws:PrincipalOrgID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^o-[a-z0-9]{10,32}$"))]
    pub organization_id: Option<String>,
    /// Raw IAM policy JSON, preset Custom only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 20480))]
    pub document: Option<String>,
}

#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadConfig {
    /// Name of the published ConfigMap. Default `<name>-bedrock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub config_map_name: Option<String>,
    /// Also publish a copy of the ConfigMap into these namespaces (e.g. teams sharing this
    /// VPC's private-DNS endpoint). Copies are removed when no longer selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 100),
        inner(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    pub namespaces: Option<Vec<String>>,
    /// Also publish into every namespace carrying all of these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 10))]
    pub namespace_selector: Option<BTreeMap<String, String>>,
}

/// Observed state, written by the operator.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BedrockPrivateLinkStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
    /// sha256 of the applied endpoint policy (canonical JSON), first 16 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<EndpointStatus>,
    /// Subnets considered and left out, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_subnets: Vec<SkippedSubnet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// Namespaces that hold a copy of the ConfigMap besides the object's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_namespaces: Vec<String>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    pub service: String,
    pub service_name: String,
    pub vpc_endpoint_id: String,
    pub state: String,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_dns_name: Option<String>,
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    #[serde(default)]
    pub availability_zones: Vec<String>,
    #[serde(default)]
    pub network_interface_ids: Vec<String>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SkippedSubnet {
    pub subnet_id: String,
    pub reason: String,
}

impl BedrockPrivateLink {
    pub fn config_map_name(&self) -> String {
        self.spec
            .workload_config
            .as_ref()
            .and_then(|w| w.config_map_name.clone())
            .unwrap_or_else(|| format!("{}-bedrock", kube::ResourceExt::name_any(self)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn defaults_apply_to_an_empty_spec() {
        let spec: BedrockPrivateLinkSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.services, vec![BedrockService::BedrockRuntime]);
        assert!(spec.private_dns);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
    }

    #[test]
    fn crd_carries_cel_rules_and_enums() {
        let crd = serde_json::to_string(&BedrockPrivateLink::crd()).unwrap();
        assert!(crd.contains("x-kubernetes-validations"));
        assert!(crd.contains("isCIDR"));
        assert!(crd.contains("\"bedrock-agentcore\""));
        assert!(crd.contains("\"InvokeOnly\""));
    }
}
