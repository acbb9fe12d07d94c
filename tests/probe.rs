//! `bedrock-privatelink-operator probe` against the emulator's VPC resolver and Bedrock stand-in.
//!
//! The test starts its own emulator harness with `--data-netns` in a throwaway network namespace
//! (root needed), creates the endpoint through the EC2 API with a policy rendered by the
//! operator's own code, and runs the probe binary inside the namespace with `ip netns exec`, whose
//! resolv.conf points at the VPC resolver (as a pod's DNS chain ends there). The stand-in's call
//! record shows which path each call took.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{IpPermission, IpRange, VpcEndpointType};
use bpl::api::{PolicyPreset, PolicySpec};
use serde_json::{Value, json};

const REGION: &str = "us-east-1";
const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const TITAN: &str = "amazon.titan-text-express-v1";
const RUNTIME_NAME: &str = "bedrock-runtime.us-east-1.amazonaws.com";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    std::env::var_os("BPL_RIG_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/bpl-rig/venv/bin/python")
        })
}

fn can_make_netns() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("needs root (ip netns add)".into());
    }
    if !python().exists() {
        return Err(format!("no rig venv at {}", python().display()));
    }
    Ok(())
}

/// A namespace, a harness serving the data plane in it, and an EC2 client for the harness.
struct DataPlaneRig {
    netns: String,
    harness: Child,
    dir: PathBuf,
    url: String,
    ca: PathBuf,
    ec2: aws_sdk_ec2::Client,
    http: reqwest::Client,
}

impl Drop for DataPlaneRig {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.harness.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && matches!(self.harness.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.harness.kill();
        let _ = self.harness.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.netns));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl DataPlaneRig {
    async fn start() -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let netns = format!("bpl-probe-{}-{n}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {netns}");
        let etc = format!("/etc/netns/{netns}");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            format!("{etc}/resolv.conf"),
            "nameserver 10.0.0.2\noptions timeout:1 attempts:2\n",
        )
        .unwrap();
        let dir = std::env::temp_dir().join(&netns);
        std::fs::create_dir_all(&dir).unwrap();
        let port_file = dir.join("port");
        let harness = Command::new(python())
            .arg(repo_root().join("tests/emulator/harness.py"))
            .args(["--port", "0", "--quiet", "--pending-seconds", "0.2"])
            .args(["--deleting-seconds", "0.2", "--deleted-seconds", "0.2"])
            .arg("--port-file")
            .arg(&port_file)
            .arg("--seed-out")
            .arg(dir.join("seed.json"))
            .arg("--data-netns")
            .arg(format!("/run/netns/{netns}"))
            .arg("--tls-dir")
            .arg(dir.join("tls"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the harness");
        let http = reqwest::Client::new();
        let mut rig = DataPlaneRig {
            netns,
            harness,
            ca: dir.join("tls/ca.pem"),
            dir,
            url: String::new(),
            ec2: ec2_client("http://127.0.0.1:1"),
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "harness did not start");
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                let url = format!("http://127.0.0.1:{}", port.trim());
                if let Ok(r) = rig
                    .http
                    .get(format!("{url}/_harness/dataplane"))
                    .send()
                    .await
                    && r.status().is_success()
                {
                    rig.url = url;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        rig.ec2 = ec2_client(&rig.url);
        rig
    }

    async fn control(&self, method: reqwest::Method, route: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method, format!("{}/_harness/{route}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{route}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn seed(&self) -> Value {
        self.control(reqwest::Method::GET, "seed", json!({})).await
    }

    /// The probe, run inside the namespace; (exit code, stdout).
    fn probe(&self, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(env!("CARGO_BIN_EXE_bedrock-privatelink-operator"))
            .arg("probe")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CA_BUNDLE", &self.ca)
            .env("BPL_PROBE_CONNECT_TIMEOUT_SECONDS", "2");
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let out = cmd.output().expect("run the probe");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    async fn calls(&self) -> Vec<Value> {
        self.control(reqwest::Method::GET, "bedrock/calls", json!({}))
            .await["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn wait_available(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self
                .ec2
                .describe_vpc_endpoints()
                .vpc_endpoint_ids(id)
                .send()
                .await
                .unwrap();
            let state = out.vpc_endpoints()[0]
                .state()
                .map(|s| s.as_str().to_string());
            if state.as_deref() == Some("available") {
                break;
            }
            assert!(Instant::now() < deadline, "{id} is {state:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The data plane follows EC2 every 100 ms.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

fn ec2_client(url: &str) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(url)
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

fn https_443(cidr: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(443)
        .to_port(443)
        .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        .build()
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_tells_the_private_path_from_the_public_one() {
    if let Err(why) = can_make_netns() {
        eprintln!("SKIPPED probe test: {why}");
        return;
    }
    let rig = DataPlaneRig::start().await;
    let seed = rig.seed().await;
    let vpc = seed["vpc_id"].as_str().unwrap();
    let subnets: Vec<String> = seed["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();

    // No endpoint yet: the standard name resolves to the public address.
    let (code, out) = rig.probe(&[], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("path:          PUBLIC: 203.0.113.10"), "{out}");
    assert!(out.contains("call:          ALLOWED"), "{out}");
    assert_eq!(rig.calls().await.last().unwrap()["endpoint"], "public");

    // An endpoint as the operator makes it: private DNS, InvokeOnly limited to one model.
    let spec = PolicySpec {
        preset: PolicyPreset::InvokeOnly,
        models: Some(vec![HAIKU.to_string()]),
        ..PolicySpec::default()
    };
    let policy = bpl::policy::render(Some(&spec), REGION).unwrap();
    let group = rig
        .ec2
        .create_security_group()
        .group_name("bpl-probe")
        .description("probe test")
        .vpc_id(vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    rig.ec2
        .authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(https_443("10.0.0.0/16"))
        .send()
        .await
        .unwrap();
    let ep = rig
        .ec2
        .create_vpc_endpoint()
        .vpc_id(vpc)
        .service_name(format!("com.amazonaws.{REGION}.bedrock-runtime"))
        .vpc_endpoint_type(VpcEndpointType::Interface)
        .set_subnet_ids(Some(subnets))
        .security_group_ids(&group)
        .private_dns_enabled(true)
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap()
        .vpc_endpoint()
        .cloned()
        .unwrap();
    let ep_id = ep.vpc_endpoint_id().unwrap().to_string();
    rig.wait_available(&ep_id).await;
    let enis = rig
        .ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(ep.network_interface_ids().to_vec()))
        .send()
        .await
        .unwrap();
    let mut addresses: Vec<String> = enis
        .network_interfaces()
        .iter()
        .map(|e| e.private_ip_address().unwrap().to_string())
        .collect();
    addresses.sort();
    let known = addresses.join(",");

    let (code, out) = rig.probe(&[("BPL_ENDPOINT_ADDRESSES", &known)], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "resolved:      {RUNTIME_NAME} -> {}",
            addresses.join(", ")
        )),
        "{out}"
    );
    assert!(
        out.contains("path:          PRIVATE (every address is one of the endpoint's ENIs)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("private path through {ep_id}")),
        "{out}"
    );
    let last = rig.calls().await.last().cloned().unwrap();
    assert_eq!(last["endpoint"], ep_id.as_str());
    assert_eq!(last["operation"], "Converse");
    assert!(addresses.contains(&last["address"].as_str().unwrap().to_string()));

    // Without the ENI list the private addresses still count as private.
    let (code, out) = rig.probe(&[], &["--operation", "invoke-model"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        rig.calls().await.last().unwrap()["operation"],
        "InvokeModel"
    );

    // A model outside policy.models: denied by the endpoint policy, in AWS's words.
    let (code, out) = rig.probe(&[("BPL_ENDPOINT_ADDRESSES", &known)], &["--model", TITAN]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "DENIED by policy (Converse {TITAN}, "
        )) && out.contains(&format!(
            "is not authorized to perform: bedrock:InvokeModel on resource: arn:aws:bedrock:{REGION}::foundation-model/{TITAN} because no VPC endpoint policy allows the bedrock:InvokeModel action"
        )),
        "{out}"
    );
    let (code, out) = rig.probe(&[], &["--model", TITAN, "--expect-denied"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("denied the call as expected"), "{out}");

    // DNS made to resolve elsewhere (custom DNS): the probe names the address and fails.
    rig.control(
        reqwest::Method::POST,
        "dns/overrides",
        json!({"name": RUNTIME_NAME, "addresses": ["198.51.100.7"]}),
    )
    .await;
    let (code, out) = rig.probe(&[("BPL_ENDPOINT_ADDRESSES", &known)], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("NOT THE ENDPOINT: 198.51.100.7"), "{out}");
    rig.control(
        reqwest::Method::DELETE,
        "dns/overrides",
        json!({"name": RUNTIME_NAME}),
    )
    .await;

    // The security group no longer admits the namespace's addresses: no answer at all.
    rig.ec2
        .revoke_security_group_ingress()
        .group_id(&group)
        .ip_permissions(https_443("10.0.0.0/16"))
        .send()
        .await
        .unwrap();
    rig.ec2
        .authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(https_443("10.9.0.0/16"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let served = rig.calls().await.len();
    let (code, out) = rig.probe(&[("BPL_ENDPOINT_ADDRESSES", &known)], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("call:          NO ANSWER"), "{out}");
    assert!(out.contains("security group"), "{out}");
    assert_eq!(rig.calls().await.len(), served, "nothing was served");

    // Admitted again; without the rig CA the TLS handshake fails, and the probe says so.
    rig.ec2
        .authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(https_443("10.0.0.0/16"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (code, out) = rig.probe(&[("AWS_CA_BUNDLE", "")], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("call:          UNREACHABLE"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_reaches_an_endpoint_without_private_dns_by_its_vpce_name() {
    if let Err(why) = can_make_netns() {
        eprintln!("SKIPPED probe test: {why}");
        return;
    }
    let rig = DataPlaneRig::start().await;
    let seed = rig.seed().await;
    let subnets: Vec<String> = seed["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let vpc = seed["vpc_id"].as_str().unwrap();
    let default_group = rig
        .ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(vpc)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .security_groups()[0]
        .group_id()
        .unwrap()
        .to_string();
    rig.ec2
        .authorize_security_group_ingress()
        .group_id(&default_group)
        .ip_permissions(https_443("10.0.0.0/16"))
        .send()
        .await
        .unwrap();
    let ep = rig
        .ec2
        .create_vpc_endpoint()
        .vpc_id(vpc)
        .service_name(format!("com.amazonaws.{REGION}.bedrock-runtime"))
        .vpc_endpoint_type(VpcEndpointType::Interface)
        .set_subnet_ids(Some(subnets))
        .security_group_ids(&default_group)
        .private_dns_enabled(false)
        .send()
        .await
        .unwrap()
        .vpc_endpoint()
        .cloned()
        .unwrap();
    let ep_id = ep.vpc_endpoint_id().unwrap().to_string();
    rig.wait_available(&ep_id).await;
    let regional = ep.dns_entries()[0].dns_name().unwrap().to_string();

    // The standard name stays public (private DNS off) ...
    let (code, out) = rig.probe(&[], &[]);
    assert_eq!(code, 2, "{out}");
    // ... while the vpce-... name from the ConfigMap leads to the endpoint.
    let url = format!("https://{regional}");
    let (code, out) = rig.probe(&[("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", &url)], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("private path through {ep_id}")),
        "{out}"
    );
}

/// The `helm test` pod: a hook running `probe` with the workload's ConfigMap, admitted by a
/// namespace that enforces the restricted Pod Security Standard (server-side dry run).
#[test]
fn helm_test_pod_runs_the_probe_and_is_restricted() {
    let Ok(assets) = std::env::var("KUBEBUILDER_ASSETS") else {
        eprintln!("SKIPPED: no rig env (source .rig/env)");
        return;
    };
    let bin = PathBuf::from(assets);
    let chart = repo_root().join("charts/bedrock-privatelink-operator");
    let ns = format!("bpl-probe-psa-{}", std::process::id());
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(bin.join("kubectl"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let render = |sets: &[&str]| {
        let mut cmd = Command::new(bin.join("helm"));
        cmd.args(["template", "demo"]).arg(&chart).args(["-n", &ns]);
        if sets.contains(&"test.enabled=true") {
            cmd.args(["--show-only", "templates/tests/probe.yaml"]);
        }
        for s in sets {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "helm template: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };

    let manifest = render(&[
        "test.enabled=true",
        "test.configMap=demo-bedrock",
        "test.caConfigMap=rig-ca",
        "test.endpointAddresses={10.0.1.5,10.0.2.6}",
        "test.serviceAccountName=bedrock-client",
    ]);
    let pod: Value = serde_yaml::from_str(&manifest).unwrap();
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["args"][0], "probe");
    assert_eq!(c["envFrom"][0]["configMapRef"]["name"], "demo-bedrock");
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(env.contains(&("BPL_ENDPOINT_ADDRESSES".into(), "10.0.1.5,10.0.2.6".into())));
    assert!(env.contains(&("AWS_CA_BUNDLE".into(), "/etc/bpl-probe-ca/ca.pem".into())));
    assert_eq!(pod["spec"]["serviceAccountName"], "bedrock-client");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    // No values: the defaults render too, with no token mounted.
    let plain: Value = serde_yaml::from_str(&render(&["test.enabled=true"])).unwrap();
    assert_eq!(plain["spec"]["automountServiceAccountToken"], false);
    assert!(
        !render(&["test.enabled=false"]).contains("helm.sh/hook: test"),
        "off by default: no test pod"
    );

    let (ok, out) = kubectl(&["create", "namespace", &ns], None);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    );
    assert!(ok, "{out}");
    // The ServiceAccount the pod names (a workload's, with its IAM role).
    let _ = kubectl(
        &["-n", &ns, "create", "serviceaccount", "bedrock-client"],
        None,
    );
    let dry_run = |m: &str| {
        kubectl(
            &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
            Some(m),
        )
    };
    let (ok, out) = dry_run(&manifest);
    // The check bites: the same pod allowed to run as root is refused.
    let (root_ok, root_out) =
        dry_run(&manifest.replace("runAsNonRoot: true", "runAsNonRoot: false"));
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"], None);
    assert!(ok, "the restricted namespace admits the probe pod: {out}");
    assert!(out.contains("created (server dry run)"), "{out}");
    assert!(
        !root_ok && root_out.contains("violates PodSecurity \"restricted"),
        "{root_out}"
    );
}
