//! Endpoint policies: rendering the presets, checking custom documents, comparing by meaning.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{PolicyPreset, PolicySpec};
use crate::catalog::BedrockService;

/// AWS's limit for a VPC endpoint policy document.
pub const MAX_POLICY_CHARS: usize = 20_480;

const INVOKE_ACTIONS: [&str; 2] = [
    "bedrock:InvokeModel",
    "bedrock:InvokeModelWithResponseStream",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// The AWS partition of a region (arn:<partition>:...).
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Geographic prefixes of cross-region inference profile ids (e.g. `us.anthropic...`).
const PROFILE_PREFIXES: [&str; 6] = ["us.", "eu.", "apac.", "global.", "us-gov.", "jp."];

/// The resource ARNs a model id stands for. Inference profiles also need the underlying
/// foundation model in every region the profile routes to.
pub fn model_resources(model: &str, region: &str) -> Vec<String> {
    if model.starts_with("arn:") {
        return vec![model.to_string()];
    }
    let p = partition(region);
    match PROFILE_PREFIXES
        .iter()
        .find(|prefix| model.starts_with(*prefix))
    {
        Some(prefix) => vec![
            format!("arn:{p}:bedrock:{region}:*:inference-profile/{model}"),
            format!(
                "arn:{p}:bedrock:*::foundation-model/{}",
                &model[prefix.len()..]
            ),
        ],
        None => vec![format!(
            "arn:{p}:bedrock:{region}::foundation-model/{model}"
        )],
    }
}

/// The policy document the spec asks for, as a JSON value.
pub fn render(spec: Option<&PolicySpec>, region: &str) -> Result<Value, PolicyError> {
    render_for(spec, region, BedrockService::BedrockRuntime)
}

/// What each preset allows, per service: an InvokeOnly policy for bedrock-agent-runtime must
/// allow InvokeAgent and Retrieve, not InvokeModel. `models` narrows only model invocations.
struct ServiceActions {
    invoke: &'static [&'static str],
    read: &'static [&'static str],
    all: &'static str,
    models_apply: bool,
}

fn service_actions(service: BedrockService) -> ServiceActions {
    const READ: &[&str] = &["bedrock:Get*", "bedrock:List*"];
    match service {
        BedrockService::BedrockRuntime | BedrockService::BedrockMantle => ServiceActions {
            invoke: &INVOKE_ACTIONS,
            read: READ,
            all: "bedrock:*",
            models_apply: true,
        },
        BedrockService::BedrockAgentRuntime => ServiceActions {
            invoke: &[
                "bedrock:InvokeAgent",
                "bedrock:InvokeInlineAgent",
                "bedrock:InvokeFlow",
                "bedrock:Retrieve",
                "bedrock:RetrieveAndGenerate",
                "bedrock:Rerank",
            ],
            read: READ,
            all: "bedrock:*",
            models_apply: false,
        },
        BedrockService::BedrockDataAutomationRuntime => ServiceActions {
            invoke: &[
                "bedrock:InvokeDataAutomationAsync",
                "bedrock:GetDataAutomationStatus",
            ],
            read: READ,
            all: "bedrock:*",
            models_apply: false,
        },
        BedrockService::BedrockAgentcore => ServiceActions {
            invoke: &["bedrock-agentcore:Invoke*"],
            read: &["bedrock-agentcore:Get*", "bedrock-agentcore:List*"],
            all: "bedrock-agentcore:*",
            models_apply: false,
        },
        // Control planes: "invoke only" means reading, never changing, resources.
        BedrockService::Bedrock
        | BedrockService::BedrockAgent
        | BedrockService::BedrockDataAutomation => ServiceActions {
            invoke: READ,
            read: READ,
            all: "bedrock:*",
            models_apply: false,
        },
    }
}

/// The policy document the spec asks for on one service's endpoint.
pub fn render_for(
    spec: Option<&PolicySpec>,
    region: &str,
    service: BedrockService,
) -> Result<Value, PolicyError> {
    let default = PolicySpec::default();
    let spec = spec.unwrap_or(&default);
    if spec.preset == PolicyPreset::Custom {
        let doc = spec
            .document
            .as_deref()
            .ok_or_else(|| PolicyError("policy.preset Custom needs policy.document".into()))?;
        return parse_custom(doc);
    }
    let principal = match &spec.principals {
        Some(arns) if !arns.is_empty() => json!({ "AWS": arns }),
        _ => json!("*"),
    };
    let actions = service_actions(service);
    let resources: Vec<String> = match &spec.models {
        Some(models) if !models.is_empty() && actions.models_apply => models
            .iter()
            .flat_map(|m| model_resources(m, region))
            .collect(),
        _ => vec!["*".to_string()],
    };
    let condition = spec
        .organization_id
        .as_ref()
        .map(|org| json!({ "StringEquals": { "aws:PrincipalOrgID": org } }));
    let statement = |sid: &str, actions: Vec<&str>, resources: &[String]| {
        let mut s = json!({
            "Sid": sid,
            "Effect": "Allow",
            "Principal": principal.clone(),
            "Action": actions,
            "Resource": resources,
        });
        if let Some(c) = &condition {
            s["Condition"] = c.clone();
        }
        s
    };
    let all = vec!["*".to_string()];
    let statements = match spec.preset {
        PolicyPreset::InvokeOnly => vec![statement(
            "BedrockInvoke",
            actions.invoke.to_vec(),
            &resources,
        )],
        PolicyPreset::ReadOnly if actions.invoke == actions.read => {
            vec![statement("BedrockRead", actions.read.to_vec(), &all)]
        }
        PolicyPreset::ReadOnly => vec![
            statement("BedrockInvoke", actions.invoke.to_vec(), &resources),
            statement("BedrockRead", actions.read.to_vec(), &all),
        ],
        PolicyPreset::FullAccess => vec![statement(
            "BedrockFullAccess",
            vec![actions.all],
            &resources,
        )],
        PolicyPreset::Custom => unreachable!("handled above"),
    };
    Ok(json!({ "Version": "2012-10-17", "Statement": statements }))
}

/// Parses a user's policy and checks that it is an IAM policy document.
pub fn parse_custom(doc: &str) -> Result<Value, PolicyError> {
    if doc.len() > MAX_POLICY_CHARS {
        return Err(PolicyError(format!(
            "policy.document is {} characters; AWS allows at most {MAX_POLICY_CHARS}",
            doc.len()
        )));
    }
    let value: Value = serde_json::from_str(doc)
        .map_err(|e| PolicyError(format!("policy.document is not valid JSON: {e}")))?;
    check_iam_document(&value)?;
    Ok(value)
}

fn check_iam_document(value: &Value) -> Result<(), PolicyError> {
    let err = |m: &str| {
        Err(PolicyError(format!(
            "policy.document is not an IAM policy document: {m}"
        )))
    };
    let Some(obj) = value.as_object() else {
        return err("it must be a JSON object");
    };
    for key in obj.keys() {
        if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
            return err(&format!(
                "unknown top-level key {key:?} (allowed: Version, Id, Statement)"
            ));
        }
    }
    if let Some(v) = obj.get("Version")
        && v != "2012-10-17"
        && v != "2008-10-17"
    {
        return err("Version must be \"2012-10-17\"");
    }
    let statements = match obj.get("Statement") {
        Some(Value::Array(a)) if !a.is_empty() => a.clone(),
        Some(s @ Value::Object(_)) => vec![s.clone()],
        _ => return err("it needs a non-empty Statement"),
    };
    for (i, s) in statements.iter().enumerate() {
        let Some(s) = s.as_object() else {
            return err(&format!("Statement[{i}] must be an object"));
        };
        match s.get("Effect").and_then(Value::as_str) {
            Some("Allow" | "Deny") => {}
            _ => {
                return err(&format!(
                    "Statement[{i}].Effect must be \"Allow\" or \"Deny\""
                ));
            }
        }
        if s.contains_key("Action") == s.contains_key("NotAction") {
            return err(&format!(
                "Statement[{i}] needs exactly one of Action or NotAction"
            ));
        }
        for key in s.keys() {
            if !matches!(
                key.as_str(),
                "Sid"
                    | "Effect"
                    | "Principal"
                    | "NotPrincipal"
                    | "Action"
                    | "NotAction"
                    | "Resource"
                    | "NotResource"
                    | "Condition"
            ) {
                return err(&format!("Statement[{i}] has unknown key {key:?}"));
            }
        }
    }
    Ok(())
}

/// A form of the policy in which documents that mean the same compare equal: single values
/// become lists, lists of strings are sorted, `Principal: "*"` equals `{"AWS": "*"}`, and the
/// default Version is explicit.
pub fn normalize(value: &Value) -> Value {
    let mut doc = value.clone();
    if let Some(obj) = doc.as_object_mut() {
        obj.entry("Version").or_insert_with(|| json!("2008-10-17"));
        if let Some(st) = obj.get_mut("Statement") {
            let list = match st.take() {
                Value::Array(a) => a,
                other => vec![other],
            };
            *st = Value::Array(list.into_iter().map(normalize_statement).collect());
        }
    }
    doc
}

fn normalize_statement(mut s: Value) -> Value {
    if let Some(obj) = s.as_object_mut() {
        for key in ["Action", "NotAction", "Resource", "NotResource"] {
            if let Some(v) = obj.get_mut(key) {
                *v = string_set(v.take());
            }
        }
        for key in ["Principal", "NotPrincipal"] {
            if let Some(v) = obj.get_mut(key) {
                *v = match v.take() {
                    Value::String(s) if s == "*" => json!({ "AWS": ["*"] }),
                    Value::Object(m) => {
                        Value::Object(m.into_iter().map(|(k, v)| (k, string_set(v))).collect())
                    }
                    other => other,
                };
            }
        }
        if let Some(Value::Object(ops)) = obj.get_mut("Condition") {
            for (_, keys) in ops.iter_mut() {
                if let Value::Object(keys) = keys {
                    for (_, v) in keys.iter_mut() {
                        *v = string_set(v.take());
                    }
                }
            }
        }
    }
    s
}

fn string_set(v: Value) -> Value {
    let mut items: Vec<Value> = match v {
        Value::Array(a) => a,
        other => vec![other],
    };
    items.sort_by_key(|a| a.to_string());
    items.dedup();
    Value::Array(items)
}

/// Whether two policy documents mean the same.
pub fn equivalent(a: &Value, b: &Value) -> bool {
    normalize(a) == normalize(b)
}

/// Parses a policy document as EC2 returns it (it may be URL-encoded JSON).
pub fn parse_observed(doc: &str) -> Option<Value> {
    serde_json::from_str(doc).ok().or_else(|| {
        let decoded = percent_decode(doc)?;
        serde_json::from_str(&decoded).ok()
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Short, stable fingerprint of a policy's meaning, shown in status.
pub fn hash(value: &Value) -> String {
    let canonical = canonical_json(&normalize(value));
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(preset: PolicyPreset) -> PolicySpec {
        PolicySpec {
            preset,
            ..Default::default()
        }
    }

    #[test]
    fn invoke_only_is_the_default_and_allows_exactly_the_invoke_actions() {
        let doc = render(None, "us-east-1").unwrap();
        let st = &doc["Statement"][0];
        assert_eq!(st["Effect"], "Allow");
        assert_eq!(
            st["Action"],
            json!([
                "bedrock:InvokeModel",
                "bedrock:InvokeModelWithResponseStream"
            ])
        );
        assert_eq!(st["Resource"], json!(["*"]));
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn presets_table() {
        let cases = [
            (
                PolicyPreset::InvokeOnly,
                vec![
                    "bedrock:InvokeModel",
                    "bedrock:InvokeModelWithResponseStream",
                ],
            ),
            (
                PolicyPreset::ReadOnly,
                vec![
                    "bedrock:InvokeModel",
                    "bedrock:InvokeModelWithResponseStream",
                    "bedrock:Get*",
                    "bedrock:List*",
                ],
            ),
            (PolicyPreset::FullAccess, vec!["bedrock:*"]),
        ];
        for (preset, actions) in cases {
            let doc = render(Some(&spec(preset)), "us-east-1").unwrap();
            let got: Vec<String> = doc["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| {
                    s["Action"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_string())
                })
                .collect();
            assert_eq!(got, actions, "{preset:?}");
        }
    }

    #[test]
    fn models_principals_and_org_are_rendered() {
        let s = PolicySpec {
            models: Some(vec![
                "anthropic.claude-3-haiku-20240307-v1:0".into(),
                "us.meta.llama3-2-1b-instruct-v1:0".into(),
            ]),
            principals: Some(vec!["arn:aws:iam::123456789012:role/app".into()]),
            organization_id: Some("o-abcdefghij".into()),
            ..Default::default()
        };
        let doc = render(Some(&s), "us-east-1").unwrap();
        let st = &doc["Statement"][0];
        assert_eq!(
            st["Resource"],
            json!([
                "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
                "arn:aws:bedrock:us-east-1:*:inference-profile/us.meta.llama3-2-1b-instruct-v1:0",
                "arn:aws:bedrock:*::foundation-model/meta.llama3-2-1b-instruct-v1:0"
            ])
        );
        assert_eq!(
            st["Principal"],
            json!({"AWS": ["arn:aws:iam::123456789012:role/app"]})
        );
        assert_eq!(
            st["Condition"]["StringEquals"]["aws:PrincipalOrgID"],
            "o-abcdefghij"
        );
    }

    #[test]
    fn presets_follow_the_service() {
        let doc = render_for(None, "us-east-1", BedrockService::BedrockAgentRuntime).unwrap();
        let actions = doc["Statement"][0]["Action"].as_array().unwrap();
        assert!(
            actions.contains(&json!("bedrock:InvokeAgent"))
                && actions.contains(&json!("bedrock:Retrieve"))
        );
        let models = PolicySpec {
            models: Some(vec!["a.b".into()]),
            ..Default::default()
        };
        let doc = render_for(
            Some(&models),
            "us-east-1",
            BedrockService::BedrockAgentRuntime,
        )
        .unwrap();
        assert_eq!(
            doc["Statement"][0]["Resource"],
            json!(["*"]),
            "models narrow only model invocations"
        );
        let doc = render_for(
            Some(&spec(PolicyPreset::FullAccess)),
            "us-east-1",
            BedrockService::BedrockAgentcore,
        )
        .unwrap();
        assert_eq!(
            doc["Statement"][0]["Action"],
            json!(["bedrock-agentcore:*"])
        );
        let doc = render_for(None, "us-east-1", BedrockService::Bedrock).unwrap();
        assert_eq!(
            doc["Statement"][0]["Action"],
            json!(["bedrock:Get*", "bedrock:List*"]),
            "control plane: read only"
        );
    }

    #[test]
    fn partitions() {
        assert_eq!(
            model_resources("a.b", "cn-north-1")[0],
            "arn:aws-cn:bedrock:cn-north-1::foundation-model/a.b"
        );
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
    }

    #[test]
    fn equivalence_ignores_form_but_not_meaning() {
        let a = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":["b","a"],"Resource":"*"}]});
        let b = json!({"Statement":{"Resource":["*"],"Action":["a","b"],"Effect":"Allow","Principal":{"AWS":"*"}},"Version":"2012-10-17"});
        let c = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":["a"],"Resource":"*"}]});
        assert!(equivalent(&a, &b));
        assert!(!equivalent(&a, &c));
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&c));
    }

    #[test]
    fn observed_documents_may_be_url_encoded() {
        let raw = r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        let encoded = "%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D";
        assert_eq!(parse_observed(raw), parse_observed(encoded));
        assert!(parse_observed("not json").is_none());
    }

    #[test]
    fn custom_documents_are_checked() {
        let bad = [
            ("{", "not valid JSON"),
            ("[]", "must be a JSON object"),
            (r#"{"Statement":[]}"#, "non-empty Statement"),
            (
                r#"{"Statement":[{"Effect":"Maybe","Action":"*"}]}"#,
                "Effect",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow"}]}"#,
                "Action or NotAction",
            ),
            (
                r#"{"Version":"2020-01-01","Statement":[{"Effect":"Allow","Action":"*"}]}"#,
                "Version",
            ),
            (
                r#"{"Foo":1,"Statement":[{"Effect":"Allow","Action":"*"}]}"#,
                "unknown top-level key",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"*","Colour":"red"}]}"#,
                "unknown key",
            ),
        ];
        for (doc, needle) in bad {
            let e = parse_custom(doc).unwrap_err();
            assert!(e.0.contains(needle), "{doc}: {e}");
        }
        let too_long = format!(
            r#"{{"Statement":[{{"Effect":"Allow","Action":"*","Sid":"{}"}}]}}"#,
            "x".repeat(MAX_POLICY_CHARS)
        );
        assert!(parse_custom(&too_long).unwrap_err().0.contains("at most"));
        assert!(parse_custom(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"bedrock:*","Resource":"*","Principal":"*"}}"#).is_ok());
    }
}
