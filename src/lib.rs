//! Bedrock PrivateLink operator: one `BedrockPrivateLink` becomes interface VPC endpoints for
//! Amazon Bedrock, their security group and policy, and a ConfigMap for workloads.
#![deny(unsafe_code)]

pub mod api;
pub mod aws;
pub mod catalog;
pub mod cli;
pub mod leader;
pub mod names;
pub mod policy;
pub mod probe;
pub mod publish;
pub mod reconcile;
pub mod telemetry;
pub mod tenancy;
