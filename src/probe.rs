//! `probe`: checks from inside the cluster that Bedrock calls take the private path.
//!
//! Resolves the Bedrock runtime host the way the workload does (the system resolver), compares the
//! answer with the endpoint's ENI addresses when they are known, then makes one signed call with
//! the AWS SDK's Bedrock runtime client and reports the path (private or not) and whether the call
//! was allowed. Exit codes: 0 private path and the expected answer, 1 private path but the call
//! failed or was answered otherwise than expected, 2 the name resolves outside the endpoint (the
//! traffic would leave the VPC), 3 the name does not resolve.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime as runtime;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, ConverseOutput, Message};
use aws_smithy_http_client::tls;
use aws_smithy_types::error::display::DisplayErrorContext;

/// A model most accounts can call; the stand-in answers any id.
pub const DEFAULT_MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Bedrock runtime endpoint (default: https://bedrock-runtime.<region>.amazonaws.com). The
    /// published ConfigMap sets AWS_ENDPOINT_URL_BEDROCK_RUNTIME, which the AWS SDKs use too.
    #[arg(long, env = "AWS_ENDPOINT_URL_BEDROCK_RUNTIME")]
    pub endpoint_url: Option<String>,
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// The interface endpoint's ENI addresses, comma separated. Given: the name must resolve to
    /// these and nothing else. Not given: private (RFC 1918, RFC 6598, ULA) addresses count as
    /// the private path.
    #[arg(long, env = "BPL_ENDPOINT_ADDRESSES", value_delimiter = ',')]
    pub endpoint_addresses: Vec<IpAddr>,
    /// Model (or inference profile) id or ARN to call.
    #[arg(long, env = "BPL_PROBE_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    #[arg(long, env = "BPL_PROBE_OPERATION", default_value = "converse", value_parser = ["converse", "invoke-model"])]
    pub operation: String,
    /// The call is expected to be refused by the endpoint policy (AccessDeniedException): then a
    /// denial exits 0 and an allowed call exits 1.
    #[arg(long, env = "BPL_PROBE_EXPECT_DENIED", default_value_t = false)]
    pub expect_denied: bool,
    /// PEM bundle of the CAs to trust instead of the system's (AWS_CA_BUNDLE, as the other SDKs).
    #[arg(long, env = "AWS_CA_BUNDLE")]
    pub ca_file: Option<String>,
    /// Connect timeout; a security group that drops the pod's packets shows up as this timeout.
    #[arg(long, env = "BPL_PROBE_CONNECT_TIMEOUT_SECONDS", default_value_t = 5)]
    pub connect_timeout_seconds: u64,
    #[arg(long, env = "BPL_PROBE_TIMEOUT_SECONDS", default_value_t = 20)]
    pub timeout_seconds: u64,
}

/// Where the name led, judged from the resolved addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// Every address is one of the endpoint's ENI addresses.
    Endpoint,
    /// Private addresses, endpoint addresses unknown (not given to compare).
    PrivateAddresses,
    /// Some addresses are not the endpoint's (custom DNS, forwarding rules, private DNS off...).
    Elsewhere {
        foreign: Vec<IpAddr>,
    },
    /// Public addresses: the call leaves the VPC.
    Public {
        public: Vec<IpAddr>,
    },
    Unresolved,
}

impl Path {
    pub fn is_private(&self) -> bool {
        matches!(self, Path::Endpoint | Path::PrivateAddresses)
    }
}

fn is_private_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// The path a name's addresses stand for.
pub fn classify(resolved: &[IpAddr], endpoint_addresses: &[IpAddr]) -> Path {
    if resolved.is_empty() {
        return Path::Unresolved;
    }
    if !endpoint_addresses.is_empty() {
        let foreign: Vec<IpAddr> = resolved
            .iter()
            .filter(|ip| !endpoint_addresses.contains(ip))
            .copied()
            .collect();
        return if foreign.is_empty() {
            Path::Endpoint
        } else {
            Path::Elsewhere { foreign }
        };
    }
    let public: Vec<IpAddr> = resolved
        .iter()
        .filter(|ip| !is_private_address(ip))
        .copied()
        .collect();
    if public.is_empty() {
        Path::PrivateAddresses
    } else {
        Path::Public { public }
    }
}

/// What the one call got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    Allowed {
        text: String,
    },
    Denied {
        message: String,
    },
    /// Another service error (throttling, validation, unknown key...).
    Failed {
        code: String,
        message: String,
    },
    /// No answer: connect or read timed out (a security group dropping the packets looks so).
    NoAnswer {
        detail: String,
    },
    /// Could not talk HTTPS (refused, TLS, ...).
    Unreachable {
        detail: String,
    },
}

#[derive(Debug)]
pub struct Report {
    pub endpoint_url: String,
    pub host: String,
    pub resolved: Vec<IpAddr>,
    pub endpoint_addresses: Vec<IpAddr>,
    pub path: Path,
    pub operation: String,
    pub model: String,
    pub call: Option<(CallOutcome, Duration)>,
    pub expect_denied: bool,
}

fn list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    pub fn exit_code(&self) -> u8 {
        match (&self.path, &self.call) {
            (Path::Unresolved, _) => 3,
            (p, _) if !p.is_private() => 2,
            (_, Some((CallOutcome::Allowed { .. }, _))) if !self.expect_denied => 0,
            (_, Some((CallOutcome::Denied { .. }, _))) if self.expect_denied => 0,
            _ => 1,
        }
    }

    /// Text for a person reading `helm test --logs` or a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "endpoint URL:  {}", self.endpoint_url);
        let _ = writeln!(
            out,
            "resolved:      {} -> {}",
            self.host,
            if self.resolved.is_empty() {
                "nothing".to_string()
            } else {
                list(&self.resolved)
            }
        );
        if !self.endpoint_addresses.is_empty() {
            let _ = writeln!(out, "endpoint ENIs: {}", list(&self.endpoint_addresses));
        }
        let path = match &self.path {
            Path::Endpoint => "PRIVATE (every address is one of the endpoint's ENIs)".to_string(),
            Path::PrivateAddresses => {
                "PRIVATE (private addresses; set BPL_ENDPOINT_ADDRESSES to compare with the endpoint's ENIs)"
                    .to_string()
            }
            Path::Elsewhere { foreign } => format!(
                "NOT THE ENDPOINT: {} is not an ENI address of the endpoint. Likely causes: custom DNS \
                 servers in the VPC's DHCP options, CoreDNS forwarding this zone elsewhere, a Route 53 \
                 Resolver rule, or private DNS off on the endpoint (then use its vpce-... name)",
                list(foreign)
            ),
            Path::Public { public } => format!(
                "PUBLIC: {} is outside the VPC's private ranges; the call leaves the VPC. Likely causes: \
                 private DNS off on the endpoint, no endpoint for this service in the VPC, or a DNS \
                 server that is not the VPC's resolver",
                list(public)
            ),
            Path::Unresolved => format!(
                "UNRESOLVED: {} has no address; check the name and the cluster's DNS",
                self.host
            ),
        };
        let _ = writeln!(out, "path:          {path}");
        if let Some((outcome, took)) = &self.call {
            let what = format!("{} {}", self.operation, self.model);
            let took = format!("{:.2} s", took.as_secs_f64());
            let line = match outcome {
                CallOutcome::Allowed { text } => {
                    format!("ALLOWED ({what}, {took}): {}", text.trim())
                }
                CallOutcome::Denied { message } => {
                    format!("DENIED by policy ({what}, {took}): {message}")
                }
                CallOutcome::Failed { code, message } => {
                    format!("FAILED ({what}, {took}): {code}: {message}")
                }
                CallOutcome::NoAnswer { detail } => format!(
                    "NO ANSWER ({what}, {took}): {detail}. Likely cause: the endpoint's security group \
                     does not admit this pod's address on port 443"
                ),
                CallOutcome::Unreachable { detail } => {
                    format!("UNREACHABLE ({what}, {took}): {detail}")
                }
            };
            let _ = writeln!(out, "call:          {line}");
        }
        let verdict = match self.exit_code() {
            0 if self.expect_denied => {
                "OK: private path, and the endpoint policy denied the call as expected"
            }
            0 => "OK: private path, call allowed",
            1 if self.expect_denied => {
                "FAIL: private path, but the call was not denied by the endpoint policy"
            }
            1 => "FAIL: private path, but the call did not succeed",
            2 => "FAIL: the Bedrock name does not lead to the endpoint",
            _ => "FAIL: the Bedrock name does not resolve",
        };
        let _ = writeln!(out, "result:        {verdict}");
        out
    }
}

fn host_and_port(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("https://")
        .map(|r| (r, 443))
        .or_else(|| url.strip_prefix("http://").map(|r| (r, 80)))
        .ok_or_else(|| format!("endpoint URL {url} must start with https:// (or http://)"))?;
    let authority = rest.0.split(['/', '?']).next().unwrap_or_default();
    // [v6]:port, [v6], host:port, host
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("bad address in endpoint URL {url}"))?;
            (h, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("bad port in endpoint URL {url}"))?,
        None => rest.1,
    };
    Ok((host.to_string(), port))
}

async fn client(args: &ProbeArgs, region: &str, url: &str) -> Result<runtime::Client, String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(args.connect_timeout_seconds.max(1)))
                .operation_timeout(Duration::from_secs(args.timeout_seconds.max(1)))
                .build(),
        );
    if let Some(path) = &args.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read the CA bundle {path}: {e}"))?;
        let context = tls::TlsContext::builder()
            .with_trust_store(tls::TrustStore::empty().with_pem_certificate(pem))
            .build()
            .map_err(|e| format!("CA bundle {path}: {e}"))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(context)
            .build_https();
        loader = loader.http_client(http);
    }
    let shared = loader.load().await;
    let conf = runtime::config::Builder::from(&shared)
        .endpoint_url(url)
        .build();
    Ok(runtime::Client::from_conf(conf))
}

fn outcome_of<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    err: SdkError<E, R>,
) -> CallOutcome {
    match &err {
        SdkError::ServiceError(_) => {
            let code = err.code().unwrap_or("Unknown").to_string();
            let message = err.message().unwrap_or_default().to_string();
            if code == "AccessDeniedException" {
                CallOutcome::Denied { message }
            } else {
                CallOutcome::Failed { code, message }
            }
        }
        SdkError::TimeoutError(_) => CallOutcome::NoAnswer {
            detail: "timed out".into(),
        },
        SdkError::DispatchFailure(d) if d.is_timeout() => CallOutcome::NoAnswer {
            detail: format!("{}", DisplayErrorContext(&err)),
        },
        _ => CallOutcome::Unreachable {
            detail: format!("{}", DisplayErrorContext(&err)),
        },
    }
}

async fn call(client: &runtime::Client, args: &ProbeArgs) -> CallOutcome {
    if args.operation == "invoke-model" {
        let body = serde_json::json!({
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "ping"}],
        });
        return match client
            .invoke_model()
            .model_id(&args.model)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(body.to_string()))
            .send()
            .await
        {
            Ok(out) => {
                let text = String::from_utf8_lossy(out.body().as_ref()).to_string();
                CallOutcome::Allowed {
                    text: text.chars().take(200).collect(),
                }
            }
            Err(e) => outcome_of(e),
        };
    }
    let message = match Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("ping".into()))
        .build()
    {
        Ok(m) => m,
        Err(e) => {
            return CallOutcome::Failed {
                code: "Build".into(),
                message: e.to_string(),
            };
        }
    };
    match client
        .converse()
        .model_id(&args.model)
        .messages(message)
        .send()
        .await
    {
        Ok(out) => {
            let text = match out.output() {
                Some(ConverseOutput::Message(m)) => m
                    .content()
                    .iter()
                    .filter_map(|c| c.as_text().ok())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(""),
                _ => String::new(),
            };
            CallOutcome::Allowed { text }
        }
        Err(e) => outcome_of(e),
    }
}

/// Resolve, classify, call; the report says what happened.
pub async fn probe(args: &ProbeArgs) -> Result<Report, String> {
    let region = args
        .region
        .clone()
        .ok_or("no region: set AWS_REGION (the published ConfigMap does) or --region")?;
    let url = args
        .endpoint_url
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
    let (host, port) = host_and_port(&url)?;
    let resolved: Vec<IpAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(addrs) => addrs
            .map(|a| a.ip())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        Err(_) => Vec::new(),
    };
    let path = classify(&resolved, &args.endpoint_addresses);
    let mut report = Report {
        endpoint_url: url.clone(),
        host,
        resolved,
        endpoint_addresses: args.endpoint_addresses.clone(),
        path,
        operation: if args.operation == "invoke-model" {
            "InvokeModel".into()
        } else {
            "Converse".into()
        },
        model: args.model.clone(),
        call: None,
        expect_denied: args.expect_denied,
    };
    if report.path != Path::Unresolved {
        let client = client(args, &region, &url).await?;
        let started = Instant::now();
        let outcome = call(&client, args).await;
        report.call = Some((outcome, started.elapsed()));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn classify_paths() {
        let eni = ips(&["10.0.1.5", "10.0.2.6"]);
        let none: Vec<IpAddr> = Vec::new();
        let cases: Vec<(Vec<&str>, &Vec<IpAddr>, Path)> = vec![
            (vec![], &eni, Path::Unresolved),
            (vec!["10.0.1.5", "10.0.2.6"], &eni, Path::Endpoint),
            (vec!["10.0.1.5"], &eni, Path::Endpoint),
            (
                vec!["10.0.1.5", "10.9.9.9"],
                &eni,
                Path::Elsewhere {
                    foreign: ips(&["10.9.9.9"]),
                },
            ),
            (
                vec!["203.0.113.10"],
                &eni,
                Path::Elsewhere {
                    foreign: ips(&["203.0.113.10"]),
                },
            ),
            (vec!["10.0.1.5"], &none, Path::PrivateAddresses),
            (
                vec!["172.20.0.4", "192.168.1.1"],
                &none,
                Path::PrivateAddresses,
            ),
            (vec!["100.64.0.9", "fd00::1"], &none, Path::PrivateAddresses),
            (
                vec!["52.1.2.3", "10.0.0.1"],
                &none,
                Path::Public {
                    public: ips(&["52.1.2.3"]),
                },
            ),
            (
                vec!["203.0.113.10"],
                &none,
                Path::Public {
                    public: ips(&["203.0.113.10"]),
                },
            ),
        ];
        for (resolved, known, want) in cases {
            assert_eq!(classify(&ips(&resolved), known), want, "{resolved:?}");
        }
    }

    fn report(path: Path, call: Option<CallOutcome>, expect_denied: bool) -> Report {
        Report {
            endpoint_url: "https://bedrock-runtime.us-east-1.amazonaws.com".into(),
            host: "bedrock-runtime.us-east-1.amazonaws.com".into(),
            resolved: ips(&["10.0.1.5"]),
            endpoint_addresses: vec![],
            path,
            operation: "Converse".into(),
            model: DEFAULT_MODEL.into(),
            call: call.map(|c| (c, Duration::from_millis(20))),
            expect_denied,
        }
    }

    #[test]
    fn exit_codes() {
        let allowed = || Some(CallOutcome::Allowed { text: "hi".into() });
        let denied = || {
            Some(CallOutcome::Denied {
                message: "no".into(),
            })
        };
        let public = Path::Public {
            public: ips(&["52.1.2.3"]),
        };
        let cases = vec![
            (Path::Endpoint, allowed(), false, 0),
            (Path::PrivateAddresses, allowed(), false, 0),
            (Path::Endpoint, denied(), false, 1),
            (Path::Endpoint, denied(), true, 0),
            (Path::Endpoint, allowed(), true, 1),
            (
                Path::Endpoint,
                Some(CallOutcome::NoAnswer {
                    detail: "timed out".into(),
                }),
                false,
                1,
            ),
            (public.clone(), allowed(), false, 2),
            (public, denied(), true, 2),
            (Path::Unresolved, None, false, 3),
        ];
        for (path, call, expect_denied, code) in cases {
            let r = report(path.clone(), call.clone(), expect_denied);
            assert_eq!(r.exit_code(), code, "{path:?} {call:?} {expect_denied}");
        }
    }

    #[test]
    fn render_names_the_addresses_and_causes() {
        let r = report(
            Path::Elsewhere {
                foreign: ips(&["198.51.100.7"]),
            },
            Some(CallOutcome::Allowed { text: "hi".into() }),
            false,
        );
        let text = r.render();
        assert!(text.contains("NOT THE ENDPOINT: 198.51.100.7"), "{text}");
        assert!(text.contains("custom DNS"), "{text}");
        assert!(
            text.contains("result:        FAIL: the Bedrock name does not lead to the endpoint"),
            "{text}"
        );
    }

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            host_and_port("https://bedrock-runtime.us-east-1.amazonaws.com").unwrap(),
            ("bedrock-runtime.us-east-1.amazonaws.com".into(), 443)
        );
        assert_eq!(
            host_and_port("https://vpce-1-a.bedrock-runtime.us-east-1.vpce.amazonaws.com:8443/x")
                .unwrap(),
            (
                "vpce-1-a.bedrock-runtime.us-east-1.vpce.amazonaws.com".into(),
                8443
            )
        );
        assert_eq!(
            host_and_port("http://[::1]:80").unwrap(),
            ("::1".into(), 80)
        );
        assert_eq!(
            host_and_port("https://[fd00::5]").unwrap(),
            ("fd00::5".into(), 443)
        );
        assert!(host_and_port("bedrock-runtime.us-east-1.amazonaws.com").is_err());
        assert!(host_and_port("https://host:port").is_err());
    }
}
