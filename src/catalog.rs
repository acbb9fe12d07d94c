//! The Bedrock endpoint services the operator knows, and what workloads need to reach each one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Bedrock service that AWS offers through an interface VPC endpoint.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum BedrockService {
    /// Control plane: model catalog, customization, guardrails.
    Bedrock,
    /// InvokeModel / Converse (the default).
    BedrockRuntime,
    /// Agents build-time API.
    BedrockAgent,
    /// InvokeAgent / Retrieve.
    BedrockAgentRuntime,
    /// OpenAI-compatible API (private DNS under api.aws).
    BedrockMantle,
    /// Data Automation build-time API.
    BedrockDataAutomation,
    /// Data Automation runtime.
    BedrockDataAutomationRuntime,
    /// AgentCore.
    BedrockAgentcore,
}

impl BedrockService {
    pub const ALL: [BedrockService; 8] = [
        Self::Bedrock,
        Self::BedrockRuntime,
        Self::BedrockAgent,
        Self::BedrockAgentRuntime,
        Self::BedrockMantle,
        Self::BedrockDataAutomation,
        Self::BedrockDataAutomationRuntime,
        Self::BedrockAgentcore,
    ];

    /// The short name, as users write it and as it appears in the AWS service name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bedrock => "bedrock",
            Self::BedrockRuntime => "bedrock-runtime",
            Self::BedrockAgent => "bedrock-agent",
            Self::BedrockAgentRuntime => "bedrock-agent-runtime",
            Self::BedrockMantle => "bedrock-mantle",
            Self::BedrockDataAutomation => "bedrock-data-automation",
            Self::BedrockDataAutomationRuntime => "bedrock-data-automation-runtime",
            Self::BedrockAgentcore => "bedrock-agentcore",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The endpoint service name, e.g. `com.amazonaws.us-east-1.bedrock-runtime`.
    pub fn service_name(self, region: &str) -> String {
        format!("com.amazonaws.{region}.{}", self.as_str())
    }

    /// The hostname that private DNS makes resolve to the endpoint inside the VPC.
    pub fn private_dns_name(self, region: &str) -> String {
        match self {
            Self::BedrockMantle => format!("bedrock-mantle.{region}.api.aws"),
            _ => format!("{}.{region}.amazonaws.com", self.as_str()),
        }
    }

    /// The AWS SDKs' standard per-service endpoint variable (`AWS_ENDPOINT_URL_<SERVICE_ID>`).
    pub fn sdk_endpoint_variable(self) -> String {
        format!("AWS_ENDPOINT_URL_{}", self.env_stem())
    }

    /// Upper snake case of the short name, used to build the ConfigMap's other keys.
    pub fn env_stem(self) -> String {
        self.as_str().replace('-', "_").to_ascii_uppercase()
    }
}

impl std::fmt::Display for BedrockService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for s in BedrockService::ALL {
            assert_eq!(BedrockService::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(BedrockService::parse("bedrock-fake"), None);
    }

    #[test]
    fn derived_names() {
        let cases = [
            (
                BedrockService::BedrockRuntime,
                "com.amazonaws.eu-west-1.bedrock-runtime",
                "bedrock-runtime.eu-west-1.amazonaws.com",
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
            ),
            (
                BedrockService::BedrockMantle,
                "com.amazonaws.eu-west-1.bedrock-mantle",
                "bedrock-mantle.eu-west-1.api.aws",
                "AWS_ENDPOINT_URL_BEDROCK_MANTLE",
            ),
            (
                BedrockService::BedrockAgentRuntime,
                "com.amazonaws.eu-west-1.bedrock-agent-runtime",
                "bedrock-agent-runtime.eu-west-1.amazonaws.com",
                "AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME",
            ),
        ];
        for (svc, name, dns, var) in cases {
            assert_eq!(svc.service_name("eu-west-1"), name);
            assert_eq!(svc.private_dns_name("eu-west-1"), dns);
            assert_eq!(svc.sdk_endpoint_variable(), var);
        }
    }
}
