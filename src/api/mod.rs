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
    printcolumn = r#"{"name":"PrivatePath","type":"string","jsonPath":".status.conditions[?(@.type==\"PrivatePathVerified\")].reason"}"#,
    printcolumn = r#"{"name":"Account","type":"string","priority":1,"jsonPath":".status.account"}"#,
    printcolumn = r#"{"name":"Region","type":"string","priority":1,"jsonPath":".status.region"}"#,
    printcolumn = r#"{"name":"VPC","type":"string","jsonPath":".status.vpcId"}"#,
    printcolumn = r#"{"name":"Endpoints","type":"string","jsonPath":".status.endpoints[*].vpcEndpointId"}"#,
    printcolumn = r#"{"name":"DNS","type":"string","priority":1,"jsonPath":".status.endpoints[*].dnsNames[0]"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.vpcId) == has(oldSelf.vpcId) && (!has(self.vpcId) || self.vpcId == oldSelf.vpcId)").message("spec.vpcId is immutable: endpoints cannot move between VPCs; create a new object instead"))]
#[x_kube(validation = Rule::new("has(self.region) == has(oldSelf.region) && (!has(self.region) || self.region == oldSelf.region)").message("spec.region is immutable; create a new object instead"))]
#[x_kube(validation = Rule::new("has(self.account) == has(oldSelf.account) && (!has(self.account) || self.account == oldSelf.account)").message("spec.account is immutable: endpoints cannot move between accounts; create a new object instead"))]
#[x_kube(validation = Rule::new("!has(self.account) || (has(self.vpcId) && has(self.subnets))").message("spec.account needs spec.vpcId and spec.subnets: the cluster's VPC and Nodes are in the operator's own account"))]
#[x_kube(validation = Rule::new("!has(self.adopt) || !has(self.adopt.securityGroupId) || !has(self.securityGroup) || !has(self.securityGroup.existingIds)").message("adopt.securityGroupId makes that group the managed one; it cannot be combined with securityGroup.existingIds"))]
pub struct BedrockPrivateLinkSpec {
    /// AWS account of the endpoints (12 digits), e.g. 111122223333. Default: the operator's own
    /// account. Another account must be granted to the object's namespace by a
    /// BedrockPrivateLinkGrant whose account.roleArn is a role of that account (Ready=False,
    /// reason AccountNotGranted, otherwise); needs spec.vpcId and spec.subnets. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]{12}$"))]
    pub account: Option<String>,

    /// AWS region of the endpoints, e.g. us-east-1. Default: the operator's region (chart value
    /// aws.region). Another region must be listed in the regions of a BedrockPrivateLinkGrant
    /// that selects the object's namespace (Ready=False, reason RegionNotAllowed, otherwise),
    /// and then needs spec.vpcId and spec.subnets. Must be the region of the VPC: an interface
    /// endpoint lives in its VPC's region. Immutable: to move, create a new object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$"))]
    pub region: Option<String>,

    /// VPC to create the endpoints in, e.g. vpc-0123456789abcdef0. Default: the operator's
    /// --default-vpc-id (chart value aws.defaultVpcId), else the cluster's VPC, discovered from
    /// the Nodes' spec.providerID. Immutable: endpoints cannot move between VPCs; create a new
    /// object instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$"))]
    pub vpc_id: Option<String>,

    /// Bedrock endpoint services; each becomes one interface endpoint (com.amazonaws.<region>.
    /// <service>). 1 to 8 distinct entries. Default: [bedrock-runtime]. Removing a service
    /// deletes its endpoint.
    #[serde(default = "default_services")]
    #[schemars(length(min = 1, max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub services: Vec<BedrockService>,

    /// Subnets for the endpoints: explicit ids, or a tag selector (not both). Default: the
    /// subnets of the cluster's nodes. At most one subnet per Availability Zone is used, and only
    /// in zones that offer the service; the rest are listed in status.skippedSubnets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<SubnetSelection>,

    /// Make the standard Bedrock hostnames (e.g. bedrock-runtime.us-east-1.amazonaws.com)
    /// resolve to the endpoint inside the VPC. Default: true. Needs enableDnsSupport and
    /// enableDnsHostnames on the VPC, and only one endpoint per service and VPC may have it; with
    /// false, clients use the endpoint's vpce-... DNS name from the published ConfigMap.
    #[serde(default = "default_true")]
    pub private_dns: bool,

    /// The security group of the endpoints. Default: a group managed by the operator that allows
    /// tcp/443 from the VPC's CIDR blocks. Set allowFrom to change who may connect, or
    /// existingIds to use groups of your own instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group: Option<SecurityGroupSpec>,

    /// The endpoint policy (which Bedrock calls may pass through the endpoint). Default: preset
    /// InvokeOnly for all models and any principal with its own IAM permission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySpec>,

    /// Extra tags on every AWS resource the operator creates (endpoints, security group), at
    /// most 30. Keys may not start with aws: or bedrock.privatelink.io/ (reserved for the
    /// operator's own tags); keys up to 128 characters, values up to 256. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 30))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('aws:') && !k.startsWith('bedrock.privatelink.io/') && size(k) <= 128 && size(self[k]) <= 256)").message("tag keys may not start with 'aws:' or 'bedrock.privatelink.io/'; keys are at most 128 characters and values at most 256"))]
    pub tags: BTreeMap<String, String>,

    /// What happens to the AWS resources when the object is deleted. Delete (default): the
    /// endpoints, then the managed security group, are deleted. Retain: they stay in AWS with
    /// their tags (remove them yourself when no longer needed); the ConfigMap is still removed.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// The ConfigMap workloads read (endpoint DNS names, region, service URLs): its name, and
    /// other namespaces that get a copy. Default: <name>-bedrock in the object's namespace only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_config: Option<WorkloadConfig>,

    /// Bring existing AWS resources under this object instead of creating new ones: endpoints
    /// made by hand or by Terraform, or handed over by another cluster (blue/green). Each is
    /// checked against the spec (same VPC, a service in spec.services, a state that accepts
    /// changes), then tagged as this object's and reconciled to the spec in place (policy,
    /// subnets, groups, private DNS); never recreated. Default: none (an endpoint the operator
    /// did not create is never touched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<AdoptSpec>,
}

/// Existing resources to adopt (spec.adopt).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AdoptSpec {
    /// Interface endpoints (vpce-...) to adopt, 1 to 8, at most one per service. An id that
    /// does not exist is an error while the object has no endpoints yet (Ready=False, reason
    /// AdoptionNotFound); once the object has endpoints it is ignored, so an adopted endpoint
    /// deleted out of band is replaced like any other. The field may stay after adoption.
    #[schemars(
        length(min = 1, max = 8),
        inner(pattern(r"^vpce-([0-9a-f]{8}|[0-9a-f]{17})$"))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub endpoint_ids: Vec<String>,
    /// A security group (sg-...) in the endpoints' VPC to adopt as the managed group instead of
    /// creating one: its rules are then reconciled to securityGroup.allowFrom and it is deleted
    /// with the object (deletionPolicy Delete). Not with securityGroup.existingIds. Default:
    /// none (a managed group is created, and the adopted endpoints are moved to it in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$"))]
    pub security_group_id: Option<String>,
    /// Also take resources tagged as owned by another cluster (or by an object of this cluster
    /// that no longer exists): a blue/green handover, or a deleted cluster that never released
    /// them. The previous owner sees Ready=False, reason HandedOver, and never changes or
    /// deletes them again. Resources of an object that exists in this cluster are never taken.
    /// Default: false (reason OwnedByAnotherCluster).
    #[serde(default)]
    pub take_over: bool,
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
    /// Explicit subnet ids, e.g. subnet-0123456789abcdef0, 1 to 16; all must be in the
    /// endpoint's VPC. One per Availability Zone is used (the first listed). Not with selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 16),
        inner(pattern(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$"))
    )]
    pub ids: Option<Vec<String>>,
    /// Use the subnets of the VPC that carry all of these tags (key: value, at most 10), e.g.
    /// kubernetes.io/role/internal-elb: "1". Not with ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 10))]
    pub selector: Option<BTreeMap<String, String>>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.existingIds) && has(self.allowFrom))").message("securityGroup: allowFrom configures the managed group; it cannot be combined with existingIds"))]
pub struct SecurityGroupSpec {
    /// Who may reach the endpoints on tcp/443 (the managed group only). Default: the VPC's CIDR
    /// blocks. Not with existingIds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<AllowFrom>,
    /// Use these existing security groups (sg-..., 1 to 5, in the endpoint's VPC) instead of a
    /// managed one; the operator never changes them, so they must allow tcp/443 from your
    /// workloads. Not with allowFrom.
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
    /// IPv4 or IPv6 CIDR blocks allowed to connect, e.g. 10.0.0.0/16, at most 50. A /0 range
    /// needs allowAnyAddress: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50), inner(length(max = 43)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("allowFrom.cidrs: every entry must be a CIDR block such as 10.0.0.0/16"))]
    pub cidrs: Option<Vec<String>>,
    /// Security groups (sg-..., at most 50) whose members may connect; a group of a peered VPC
    /// is a valid source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50), inner(pattern(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")))]
    pub security_group_ids: Option<Vec<String>>,
    /// Confirms a /0 range (0.0.0.0/0 or ::/0) in cidrs, which lets any address that can route
    /// to the endpoint connect. Default: false.
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
    /// InvokeOnly (default): InvokeModel, InvokeModelWithResponseStream, Converse and
    /// ConverseStream. ReadOnly: those plus read-only Get/List calls. FullAccess: every bedrock
    /// action. Custom: the IAM policy JSON in document. The presets may be narrowed with models,
    /// principals and organizationId.
    #[serde(default)]
    pub preset: PolicyPreset,
    /// Foundation model ids (e.g. anthropic.claude-3-haiku-20240307-v1:0) or full model /
    /// inference-profile ARNs the policy is limited to, 1 to 50. Default: all models. Presets
    /// only (with Custom, write them into document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 50), inner(length(min = 1, max = 2048), pattern(r"^([a-z0-9-]+\.[A-Za-z0-9.:_-]+|arn:aws[a-z-]*:bedrock:[a-z0-9-]*:[0-9]{0,12}:[a-z-]+/[A-Za-z0-9.:_/-]+)$")))]
    pub models: Option<Vec<String>>,
    /// IAM principal ARNs (arn:aws:iam::<12-digit account>:role/... or user/..., 1 to 50)
    /// allowed through the endpoint. Default: any principal that has its own IAM permission.
    /// Presets only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 50),
        inner(pattern(r"^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:[A-Za-z0-9+=,.@_/:-]+$"))
    )]
    pub principals: Option<Vec<String>>,
    /// Allow only principals of this AWS Organization (aws:PrincipalOrgID), e.g. o-a1b2c3d4e5.
    /// Default: no organization condition. Presets only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^o-[a-z0-9]{10,32}$"))]
    pub organization_id: Option<String>,
    /// The endpoint policy as IAM policy JSON (Version 2012-10-17, a non-empty Statement), 2 to
    /// 20480 characters; required with preset Custom and refused otherwise. The operator checks
    /// it before creating anything (Ready=False, reason InvalidPolicy, if it is not valid).
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
    /// Name of the published ConfigMap (a DNS subdomain, at most 253 characters). Default:
    /// <name>-bedrock. A ConfigMap of that name that the operator did not create is left alone
    /// (Ready=False, reason ConfigMapConflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub config_map_name: Option<String>,
    /// Also publish a copy of the ConfigMap into these namespaces (at most 100), e.g. teams
    /// sharing this VPC's private-DNS endpoint. Only namespaces labelled
    /// bedrock.privatelink.io/accept-config=true get one; copies are removed when no longer
    /// selected. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 100),
        inner(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    pub namespaces: Option<Vec<String>>,
    /// Also publish a copy into every namespace carrying all of these labels (matchLabels style,
    /// at most 10); the namespace must also be labelled bedrock.privatelink.io/accept-config=true.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 10))]
    pub namespace_selector: Option<BTreeMap<String, String>>,
}

/// Observed state, written by the operator.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BedrockPrivateLinkStatus {
    /// The metadata.generation this status was computed for. Lower than metadata.generation
    /// while the operator has not yet acted on the latest spec change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (True when everything works; its reason says what is wrong otherwise; see the
    /// reason table in docs/install.md), the parts SecurityGroupReady, EndpointsReady,
    /// PolicyApplied, ConfigPublished, and kstatus' Reconciling (True while waiting for AWS or
    /// retrying) and Stalled (True when a person must act).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// AWS account the endpoints are in (12 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// AWS region the endpoints are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// VPC the endpoints are in (spec.vpcId, or the one discovered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// The security group on the endpoints: the managed one, or the first of
    /// spec.securityGroup.existingIds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
    /// sha256 of the desired endpoint policy (canonical JSON, so reordering does not change it;
    /// with several services, of the list of their policies), first 16 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// One entry per interface endpoint, in the order of spec.services.
    #[serde(default)]
    pub endpoints: Vec<EndpointStatus>,
    /// Subnets considered and left out, with the reason (e.g. a second subnet in the same
    /// Availability Zone, or a zone that does not offer the service).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_subnets: Vec<SkippedSubnet>,
    /// Name of the ConfigMap published in the object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// Namespaces that hold a copy of the ConfigMap besides the object's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_namespaces: Vec<String>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// The entry of spec.services, e.g. bedrock-runtime.
    pub service: String,
    /// The AWS endpoint service, e.g. com.amazonaws.us-east-1.bedrock-runtime.
    pub service_name: String,
    /// The interface endpoint's id (vpce-...).
    pub vpc_endpoint_id: String,
    /// AWS account the endpoint is in (12 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// AWS region the endpoint is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The endpoint's state as EC2 reports it: pendingAcceptance, pending, available,
    /// deleting, deleted, rejected, failed or expired. Only available serves traffic; failed,
    /// rejected and expired do not recover (Ready=False, reason EndpointFailed).
    pub state: String,
    /// The endpoint's own DNS names: the regional one first, then one per Availability Zone.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// The standard Bedrock hostname that resolves to this endpoint inside the VPC (only with
    /// private DNS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_dns_name: Option<String>,
    /// Subnets the endpoint has a network interface in.
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    /// Availability Zones the endpoint serves (from its zonal DNS names).
    #[serde(default)]
    pub availability_zones: Vec<String>,
    /// The endpoint's network interfaces (eni-...), one per subnet.
    #[serde(default)]
    pub network_interface_ids: Vec<String>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SkippedSubnet {
    /// The subnet left out (subnet-...).
    pub subnet_id: String,
    /// Why, e.g. another subnet already covers its Availability Zone.
    pub reason: String,
}

/// The CRD as installed (`make crds`): [`BedrockPrivateLink::crd`] with the doc comments'
/// line breaks unwrapped (a blank line stays a paragraph break), so that `kubectl explain`
/// wraps each description itself instead of breaking lines where the source did.
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut v = serde_json::to_value(BedrockPrivateLink::crd()).expect("CRD serializes");
    unwrap_descriptions(&mut v);
    serde_json::from_value(v).expect("CRD deserializes")
}

/// The BedrockPrivateLinkGrant CRD, descriptions post-processed like [`crd`]'s.
pub fn grant_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut v = serde_json::to_value(BedrockPrivateLinkGrant::crd()).expect("CRD serializes");
    unwrap_descriptions(&mut v);
    serde_json::from_value(v).expect("CRD deserializes")
}

fn unwrap_descriptions(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match x {
                    serde_json::Value::String(s) if k == "description" => {
                        *s = s
                            .split("\n\n")
                            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(x),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

impl BedrockPrivateLink {
    pub fn config_map_name(&self) -> String {
        self.spec
            .workload_config
            .as_ref()
            .and_then(|w| w.config_map_name.clone())
            .unwrap_or_else(|| {
                let name = format!("{}-bedrock", kube::ResourceExt::name_any(self));
                crate::names::fit(&name, crate::names::NAME_MAX)
            })
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

    /// Every field `kubectl explain` can show (each property, at any depth, spec and status) has
    /// a description; items of lists and values of maps are described by their field.
    fn undescribed(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, field) in props {
                let here = format!("{path}.{name}");
                let text = field.get("description").and_then(|d| d.as_str());
                if text.is_none_or(|t| t.trim().len() < 10) {
                    out.push(here.clone());
                }
                undescribed(field, &here, out);
            }
        }
        if let Some(items) = schema.get("items") {
            undescribed(items, &format!("{path}[]"), out);
        }
        if let Some(values) = schema.get("additionalProperties") {
            undescribed(values, &format!("{path}{{}}"), out);
        }
    }

    #[test]
    fn every_crd_field_has_a_description() {
        let crd = serde_json::to_value(crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = vec![];
        undescribed(schema, "", &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
        // The walk reaches the deepest fields (so an empty result means something).
        let cond = &schema["properties"]["status"]["properties"]["conditions"]["items"];
        assert!(cond["properties"]["observedGeneration"]["description"].is_string());
        let spec = &schema["properties"]["spec"]["properties"];
        let preset = spec["policy"]["properties"]["preset"]["description"]
            .as_str()
            .unwrap();
        assert!(preset.contains("InvokeOnly (default)"), "{preset}");
        for immutable in ["vpcId", "region", "account"] {
            let d = spec[immutable]["description"].as_str().unwrap();
            assert!(d.contains("Immutable"), "{immutable}: {d}");
        }
        // Source line breaks are unwrapped; kubectl explain wraps the text itself.
        let models = spec["policy"]["properties"]["models"]["description"]
            .as_str()
            .unwrap();
        assert!(
            models.contains("full model / inference-profile ARNs"),
            "{models}"
        );
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
