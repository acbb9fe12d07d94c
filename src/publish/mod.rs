//! What workloads see: a ConfigMap with the AWS SDKs' standard variables, owned by the object.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::{BedrockPrivateLink, EndpointStatus};
use crate::catalog::BedrockService;
use crate::names;

mod index;
mod write;
pub use index::ConfigMaps;
pub use write::{Publication, delete_config_map, delete_config_map_in, publish_config};

pub const MANAGED_BY: &str = "bedrock-privatelink-operator";
pub const OWNER_UID_LABEL: &str = "bedrock.privatelink.io/owner-uid";
/// A namespace carrying this label with value "true" accepts copies of ConfigMaps from
/// BedrockPrivateLinks in other namespaces.
pub const ACCEPT_LABEL: &str = "bedrock.privatelink.io/accept-config";

/// Whether labels match an equality selector (every key with its value).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The data a workload gets with `envFrom: [{configMapRef: {name: ...}}]`.
pub fn config_data(region: &str, endpoints: &[EndpointStatus]) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    data.insert("AWS_REGION".to_string(), region.to_string());
    for e in endpoints {
        let Some(service) = BedrockService::parse(&e.service) else {
            continue;
        };
        let stem = service.env_stem();
        let regional = e.dns_names.first().cloned();
        // With private DNS the standard hostname resolves to the endpoint inside the VPC; without
        // it only the endpoint's own vpce name does.
        let host = e.private_dns_name.clone().or(regional.clone());
        if let Some(host) = host {
            data.insert(service.sdk_endpoint_variable(), format!("https://{host}"));
        }
        data.insert(format!("{stem}_VPC_ENDPOINT_ID"), e.vpc_endpoint_id.clone());
        if let Some(r) = regional {
            data.insert(format!("{stem}_VPCE_DNS_NAME"), r);
        }
        let zonal: Vec<&str> = e.dns_names.iter().skip(1).map(String::as_str).collect();
        if !zonal.is_empty() {
            data.insert(format!("{stem}_VPCE_ZONAL_DNS_NAMES"), zonal.join(","));
        }
        if let Some(p) = &e.private_dns_name {
            data.insert(format!("{stem}_PRIVATE_DNS_NAME"), p.clone());
        }
    }
    data
}

pub fn config_map(
    obj: &BedrockPrivateLink,
    namespace: &str,
    data: BTreeMap<String, String>,
) -> ConfigMap {
    let owner = obj.controller_owner_ref(&()).expect("object has a uid");
    let same_namespace = obj.namespace().as_deref() == Some(namespace);
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(obj.config_map_name()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    MANAGED_BY.to_string(),
                ),
                // Label values hold 63 characters; names hold 253.
                (
                    "bedrock.privatelink.io/owner".to_string(),
                    names::fit(&obj.name_any(), names::LABEL_VALUE_MAX),
                ),
                (
                    "bedrock.privatelink.io/owner-namespace".to_string(),
                    names::fit(&obj.namespace().unwrap_or_default(), names::LABEL_VALUE_MAX),
                ),
                (OWNER_UID_LABEL.to_string(), obj.uid().unwrap_or_default()),
            ])),
            // Owner references cannot cross namespaces; copies elsewhere are tracked by label.
            owner_references: same_namespace.then(|| vec![owner]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// Whether a change to `ns` may change where `obj` publishes copies: it names or selects the
/// namespace, or holds a copy there.
pub fn concerns_namespace(obj: &BedrockPrivateLink, ns: &impl Resource) -> bool {
    let name = ns.name_any();
    let held = obj
        .status
        .as_ref()
        .is_some_and(|s| s.published_namespaces.contains(&name));
    let Some(wc) = &obj.spec.workload_config else {
        return held;
    };
    let named = wc.namespaces.iter().flatten().any(|n| *n == name);
    let selected = wc
        .namespace_selector
        .as_ref()
        .is_some_and(|sel| !sel.is_empty() && selects(sel, ns.labels()));
    held || named || selected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(service: &str, private: Option<&str>) -> EndpointStatus {
        EndpointStatus {
            service: service.into(),
            vpc_endpoint_id: "vpce-0123".into(),
            dns_names: vec![
                format!("vpce-0123-abcd.{service}.us-east-1.vpce.amazonaws.com"),
                format!("vpce-0123-abcd-us-east-1a.{service}.us-east-1.vpce.amazonaws.com"),
            ],
            private_dns_name: private.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn namespaces_that_matter_to_an_object() {
        let obj: BedrockPrivateLink = serde_json::from_value(serde_json::json!({
            "apiVersion": "bedrock.privatelink.io/v1alpha1", "kind": "BedrockPrivateLink",
            "metadata": {"name": "a", "namespace": "platform"},
            "spec": {"workloadConfig": {"namespaces": ["named"], "namespaceSelector": {"team": "ml"}}},
            "status": {"publishedNamespaces": ["old"]}
        }))
        .unwrap();
        let ns = |name: &str, labels: serde_json::Value| -> k8s_openapi::api::core::v1::Namespace {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name, "labels": labels}}),
            )
            .unwrap()
        };
        assert!(concerns_namespace(
            &obj,
            &ns("named", serde_json::json!({}))
        ));
        assert!(concerns_namespace(
            &obj,
            &ns("x", serde_json::json!({"team": "ml"}))
        ));
        assert!(
            concerns_namespace(&obj, &ns("old", serde_json::json!({}))),
            "holds a copy there"
        );
        assert!(!concerns_namespace(
            &obj,
            &ns("x", serde_json::json!({"team": "web"}))
        ));
    }

    #[test]
    fn private_dns_points_the_sdk_at_the_standard_hostname() {
        let d = config_data(
            "us-east-1",
            &[endpoint(
                "bedrock-runtime",
                Some("bedrock-runtime.us-east-1.amazonaws.com"),
            )],
        );
        assert_eq!(d["AWS_REGION"], "us-east-1");
        assert_eq!(
            d["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"],
            "https://bedrock-runtime.us-east-1.amazonaws.com"
        );
        assert_eq!(d["BEDROCK_RUNTIME_VPC_ENDPOINT_ID"], "vpce-0123");
        assert_eq!(
            d["BEDROCK_RUNTIME_VPCE_ZONAL_DNS_NAMES"],
            "vpce-0123-abcd-us-east-1a.bedrock-runtime.us-east-1.vpce.amazonaws.com"
        );
    }

    #[test]
    fn without_private_dns_the_sdk_uses_the_vpce_name() {
        let d = config_data("us-east-1", &[endpoint("bedrock-agent-runtime", None)]);
        assert_eq!(
            d["AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME"],
            "https://vpce-0123-abcd.bedrock-agent-runtime.us-east-1.vpce.amazonaws.com"
        );
        assert!(!d.contains_key("BEDROCK_AGENT_RUNTIME_PRIVATE_DNS_NAME"));
    }
}
