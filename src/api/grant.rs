//! The `BedrockPrivateLinkGrant` custom resource (v1alpha1, cluster-scoped): what the
//! BedrockPrivateLinks of some namespaces may ask for. Written by the cluster admin; tenants
//! who may create BedrockPrivateLinks in their namespace should not be able to write it (it is
//! cluster-scoped, so a namespaced RoleBinding never grants it).
//!
//! Why a "grant": it only ever says what namespaces *may* do, like an RBAC binding; what a
//! namespace may do without any grant is a fixed, safe default (see `tenancy::Rules::builtin`).
//! The accounts issue adds the AWS account to use (IAM role) and its regions to the same
//! object, next to the VPCs of that account: one grant = these namespaces, this account, these
//! VPCs and options.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::api::PolicyPreset;

/// Endpoints one namespace may have without a grant that says otherwise.
pub const DEFAULT_MAX_ENDPOINTS_PER_NAMESPACE: u32 = 5;

/// What the BedrockPrivateLinks of some namespaces may ask for. A namespace that no grant
/// selects gets the built-in default: the cluster's own VPC, no private DNS, presets
/// InvokeOnly and ReadOnly, at most 5 endpoints. A namespace that grants select may do what
/// one of them allows (each object must fit one grant as a whole).
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bedrock.privatelink.io",
    version = "v1alpha1",
    kind = "BedrockPrivateLinkGrant",
    plural = "bedrockprivatelinkgrants",
    shortname = "bplgrant",
    printcolumn = r#"{"name":"Namespaces","type":"string","jsonPath":".spec.namespaces.names"}"#,
    printcolumn = r#"{"name":"Selector","type":"string","jsonPath":".spec.namespaces.selector.matchLabels"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.account.roleArn"}"#,
    printcolumn = r#"{"name":"Regions","type":"string","jsonPath":".spec.regions"}"#,
    printcolumn = r#"{"name":"VPCs","type":"string","jsonPath":".spec.vpcs.ids"}"#,
    printcolumn = r#"{"name":"PrivateDNS","type":"boolean","jsonPath":".spec.privateDns"}"#,
    printcolumn = r#"{"name":"MaxEndpoints","type":"integer","jsonPath":".spec.maxEndpointsPerNamespace"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BedrockPrivateLinkGrantSpec {
    /// The namespaces this grant applies to: those named, and those the selector matches.
    pub namespaces: NamespaceSelection,

    /// The AWS account the namespaces' objects may use, by the IAM role the operator assumes
    /// in it. Default: none, the operator's own credentials (its own account). An object picks
    /// an account with its spec.account (the 12-digit id of this role's account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountAccess>,

    /// Regions the namespaces' objects may use (spec.region), e.g. [us-east-1, eu-west-1], at
    /// most 30. Default: only the operator's own region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 30),
        inner(pattern(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$"))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub regions: Vec<String>,

    /// VPCs the namespaces may place endpoints in. Default: only the cluster's own VPC. The
    /// cluster's VPC is in the operator's own account and region: with account, or a region
    /// other than the operator's, name the VPCs (ids) or allow any.
    #[serde(default)]
    pub vpcs: VpcRules,

    /// Whether objects may turn private DNS on. Private DNS makes the standard Bedrock
    /// hostnames resolve to the endpoint for every workload in the VPC, so whoever holds it
    /// decides the endpoint policy for all of them. Default false.
    #[serde(default)]
    pub private_dns: bool,

    /// Endpoint policy presets objects may use. Default [InvokeOnly, ReadOnly]: FullAccess and
    /// Custom (any document, e.g. one that denies every call) only when listed here.
    #[serde(default = "default_presets")]
    #[schemars(length(max = 4))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub policy_presets: Vec<PolicyPreset>,

    /// Whether objects may set spec.adopt.takeOver: take over endpoints and security groups
    /// that another cluster's operator owns (a blue/green upgrade, or a cluster that is gone)
    /// or that an object deleted without its finalizer left behind. It moves resources out of
    /// another owner's hands, so only namespaces the admin trusts with that get it. Adopting
    /// untagged (hand-made) resources in an allowed VPC needs no such permission. Default false.
    #[serde(default)]
    pub allow_take_over: bool,

    /// Most interface endpoints (one per service of each object) all BedrockPrivateLinks of one
    /// namespace may have together; each costs money per Availability Zone and hour. Objects
    /// are counted in order of creation. Default 5; 0 allows none.
    #[serde(default = "default_max_endpoints")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_endpoints_per_namespace: i32,
}

fn default_presets() -> Vec<PolicyPreset> {
    vec![PolicyPreset::InvokeOnly, PolicyPreset::ReadOnly]
}

fn default_max_endpoints() -> i32 {
    DEFAULT_MAX_ENDPOINTS_PER_NAMESPACE as i32
}

/// An IAM role in another account (or in the operator's own) that the operator assumes with
/// STS AssumeRole for the objects this grant admits. Its trust policy must admit the
/// operator's own role (and require externalId if one is set here); see docs/install.md.
#[derive(
    KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct AccountAccess {
    /// The role to assume, e.g. arn:aws:iam::111122223333:role/bedrock-privatelink. Its
    /// account is the account of the endpoints.
    #[schemars(
        length(max = 2048),
        pattern(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
    )]
    pub role_arn: String,
    /// The external id the role's trust policy requires (sts:ExternalId), 2 to 1224
    /// characters. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1224), pattern(r"^[A-Za-z0-9+=,.@:/_-]+$"))]
    pub external_id: Option<String>,
    /// The role session name (CloudTrail shows it), 2 to 64 characters. Default:
    /// bedrock-privatelink-operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 64), pattern(r"^[A-Za-z0-9+=,.@_-]+$"))]
    pub session_name: Option<String>,
}

impl AccountAccess {
    /// The 12-digit account id of the role.
    pub fn account_id(&self) -> &str {
        account_of_arn(&self.role_arn).unwrap_or_default()
    }
}

/// The account id of an IAM ARN (`arn:aws:iam::111122223333:role/x` -> `111122223333`).
pub fn account_of_arn(arn: &str) -> Option<&str> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then_some(account)
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.names) || has(self.selector)").message("namespaces: set names, selector, or both (selector: {} selects every namespace)"))]
pub struct NamespaceSelection {
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 500),
        inner(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub names: Option<Vec<String>>,
    /// Namespaces whose labels match (matchLabels and matchExpressions, as everywhere in
    /// Kubernetes). An empty selector matches every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))").message("namespaces.selector: operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, the others none"))]
    pub selector: Option<LabelSelector>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VpcRules {
    /// The cluster's own VPC: the operator's --default-vpc-id, else the VPC of the cluster's
    /// Nodes. Default true.
    #[serde(default = "default_true")]
    pub cluster_vpc: bool,
    /// Further VPCs by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200), inner(pattern(r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$")))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub ids: Vec<String>,
    /// Every VPC the operator's IAM role can reach. Default false.
    #[serde(default)]
    pub any: bool,
}

impl Default for VpcRules {
    fn default() -> Self {
        Self {
            cluster_vpc: true,
            ids: Vec::new(),
            any: false,
        }
    }
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn omitted_fields_take_the_builtin_defaults() {
        let spec: BedrockPrivateLinkGrantSpec =
            serde_json::from_str(r#"{"namespaces": {"names": ["team-a"]}}"#).unwrap();
        assert_eq!(spec.vpcs, VpcRules::default());
        assert!(spec.vpcs.cluster_vpc && !spec.vpcs.any);
        assert!(!spec.private_dns);
        assert!(spec.account.is_none() && spec.regions.is_empty());
        assert_eq!(
            spec.policy_presets,
            vec![PolicyPreset::InvokeOnly, PolicyPreset::ReadOnly]
        );
        assert_eq!(
            spec.max_endpoints_per_namespace as u32,
            DEFAULT_MAX_ENDPOINTS_PER_NAMESPACE
        );
    }

    #[test]
    fn the_crd_is_cluster_scoped_with_schema_defaults() {
        let crd = BedrockPrivateLinkGrant::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        let text = serde_json::to_string(&crd).unwrap();
        assert!(text.contains("x-kubernetes-validations"), "{text}");
        assert!(text.contains("\"matchExpressions\""), "{text}");
        assert!(text.contains("\"default\":5"), "{text}");
        assert!(text.contains("roleArn"), "{text}");
    }

    #[test]
    fn the_account_of_a_role_is_in_its_arn() {
        let a: AccountAccess = serde_json::from_value(serde_json::json!({
            "roleArn": "arn:aws:iam::111122223333:role/path/bpl"}))
        .unwrap();
        assert_eq!(a.account_id(), "111122223333");
        assert_eq!(
            account_of_arn("arn:aws-us-gov:iam::210987654321:role/x"),
            Some("210987654321")
        );
        assert_eq!(account_of_arn("arn:aws:iam::12345:role/x"), None);
        assert_eq!(account_of_arn("not an arn"), None);
    }
}
