//! Shared helpers for tests on the rig (real kube-apiserver + EC2 emulator on 127.0.0.1).
//! `scripts/rig up` writes `.rig/env`; the helpers read it, so `cargo test` works with or
//! without having sourced it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter};
use bpl::api::{BedrockPrivateLink, BedrockPrivateLinkGrant};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

pub const OWNER_TAG: &str = "bedrock.privatelink.io/owner-uid";

/// Tenancy (issue 16): namespaces made by `Rig::namespace` carry this label, and the rig's
/// grant `rig-tests-open` (applied with the CRDs) lets them use any VPC, private DNS, every
/// preset and many endpoints, as a cluster admin's trusted team could. Suites about other
/// things thus run under a real grant; tests/tenancy.rs makes namespaces without the label.
pub const OPEN_TENANCY_LABEL: &str = "bpl-test.bedrock.privatelink.io/tenancy";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rig's environment: `.rig/env` overlaid by the process environment.
pub fn rig_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let file = std::env::var("RIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".rig"))
        .join("env");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `scripts/rig up` first",
            file.display()
        )
    });
    for line in text.lines() {
        let line = line.trim().trim_start_matches("export ").trim();
        if let Some((k, v)) = line.split_once('=') {
            env.insert(
                k.to_string(),
                v.trim_matches('"').trim_matches('\'').to_string(),
            );
        }
    }
    for key in [
        "KUBECONFIG",
        "AWS_ENDPOINT_URL_EC2",
        "BPL_EMULATOR_URL",
        "AWS_REGION",
    ] {
        if let Ok(v) = std::env::var(key) {
            env.insert(key.to_string(), v);
        }
    }
    env
}

pub struct Rig {
    /// A harness of this test's own, when it injects faults that must not hit other tests.
    private_emulator: Option<std::process::Child>,
    pub env: BTreeMap<String, String>,
    pub client: Client,
    pub ec2: aws_sdk_ec2::Client,
    pub region: String,
    pub emulator: String,
    http: reqwest::Client,
}

impl Rig {
    pub async fn new() -> Rig {
        Self::with_env(rig_env(), None).await
    }

    /// The rig's API server with an EC2 emulator of this test's own (faults, counters and
    /// config changes stay private to the test). `args` go to harness.py, e.g. --pending-seconds.
    pub async fn with_private_emulator(args: &[&str]) -> Rig {
        let mut env = rig_env();
        let port = free_port();
        let python = std::env::var("BPL_VENV_PYTHON").unwrap_or_else(|_| {
            format!(
                "{}/.cache/bpl-rig/venv/bin/python",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let logs = repo_root().join("target").join("test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = std::fs::File::create(logs.join(format!("emulator-{port}.log"))).unwrap();
        let child = std::process::Command::new(python)
            .arg(repo_root().join("tests/emulator/harness.py"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--quiet",
            ])
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a private emulator");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        while http
            .get(format!("{url}/_harness/health"))
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "private emulator did not start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        env.insert("AWS_ENDPOINT_URL_EC2".into(), url.clone());
        env.insert("BPL_EMULATOR_URL".into(), url);
        Self::with_env(env, Some(child)).await
    }

    async fn with_env(
        env: BTreeMap<String, String>,
        private_emulator: Option<std::process::Child>,
    ) -> Rig {
        let kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"]).expect("kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kube config");
        let client = Client::try_from(config).expect("kube client");
        let region = env
            .get("AWS_REGION")
            .cloned()
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = env["AWS_ENDPOINT_URL_EC2"].clone();
        assert!(
            endpoint.starts_with("http://127.0.0.1"),
            "tests talk to loopback only, not {endpoint}"
        );
        let creds = aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "rig");
        let conf = aws_sdk_ec2::config::Builder::new()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new(region.clone()))
            .credentials_provider(creds)
            .endpoint_url(endpoint)
            .build();
        let emulator = env
            .get("BPL_EMULATOR_URL")
            .cloned()
            .unwrap_or_else(|| env["AWS_ENDPOINT_URL_EC2"].clone());
        Rig {
            private_emulator,
            client,
            ec2: aws_sdk_ec2::Client::from_conf(conf),
            region,
            emulator,
            env,
            http: reqwest::Client::new(),
        }
    }

    /// A fresh namespace for one test, open to everything (the rig's grant selects it).
    pub async fn namespace(&self, prefix: &str) -> String {
        self.namespace_labelled(prefix, json!({OPEN_TENANCY_LABEL: "open"}))
            .await
    }

    /// A fresh namespace with exactly these labels (`{}`: one no grant selects by label).
    pub async fn namespace_labelled(&self, prefix: &str, labels: Value) -> String {
        let name = format!("{prefix}-{}", short_id());
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
        )
        .await
        .expect("create namespace");
        name
    }

    /// Creates or replaces a cluster-scoped BedrockPrivateLinkGrant (server-side apply).
    pub async fn apply_grant(&self, name: &str, spec: Value) {
        let grant: BedrockPrivateLinkGrant = serde_json::from_value(json!({
            "apiVersion": "bedrock.privatelink.io/v1alpha1",
            "kind": "BedrockPrivateLinkGrant",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("valid grant");
        Api::<BedrockPrivateLinkGrant>::all(self.client.clone())
            .patch(
                name,
                &PatchParams::apply("bpl-rig-tests").force(),
                &Patch::Apply(&grant),
            )
            .await
            .expect("apply grant");
    }

    /// Removes the object's finalizer (as someone would by hand) and deletes it: whatever it
    /// held in AWS is left behind.
    pub async fn drop_without_cleanup(&self, ns: &str, name: &str) {
        self.bpls(ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .expect("remove finalizer");
        delete_bpl(self, ns, name).await;
        wait_gone(self, ns, name, Duration::from_secs(20)).await;
    }

    pub fn bpls(&self, ns: &str) -> Api<BedrockPrivateLink> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// A VPC of the test's own (DNS support and hostnames on) with one private subnet in each
    /// of three AZs, so tests never share private-DNS endpoints.
    pub async fn network(&self, name: &str) -> Network {
        let octet = 16 + (rand_u32() % 200);
        let cidr = format!("10.{octet}.0.0/16");
        let vpc = self
            .ec2
            .create_vpc()
            .cidr_block(&cidr)
            .send()
            .await
            .expect("create vpc");
        let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
        for attr in ["support", "hostnames"] {
            let req = self.ec2.modify_vpc_attribute().vpc_id(&vpc_id);
            let req = if attr == "support" {
                req.enable_dns_support(AttributeBooleanValue::builder().value(true).build())
            } else {
                req.enable_dns_hostnames(AttributeBooleanValue::builder().value(true).build())
            };
            req.send().await.expect("dns attribute");
        }
        let mut subnets = Vec::new();
        for (i, az) in ["a", "b", "c"].iter().enumerate() {
            let az = format!("{}{az}", self.region);
            subnets.push(
                self.subnet(&vpc_id, &format!("10.{octet}.{}.0/24", i + 1), &az, name)
                    .await,
            );
        }
        Network {
            vpc_id,
            cidr,
            subnets,
        }
    }

    pub async fn subnet(&self, vpc_id: &str, cidr: &str, az: &str, name: &str) -> (String, String) {
        let s = self
            .ec2
            .create_subnet()
            .vpc_id(vpc_id)
            .cidr_block(cidr)
            .availability_zone(az)
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Subnet)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key("Name")
                            .value(format!("{name}-{az}"))
                            .build(),
                    )
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key("tier")
                            .value("private")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("create subnet");
        (
            s.subnet().unwrap().subnet_id().unwrap().to_string(),
            az.to_string(),
        )
    }

    /// Endpoints tagged as owned by this uid (any state).
    pub async fn owned_endpoints(&self, uid: &str) -> Vec<aws_sdk_ec2::types::VpcEndpoint> {
        self.ec2
            .describe_vpc_endpoints()
            .filters(tag_filter(uid))
            .send()
            .await
            .expect("describe endpoints")
            .vpc_endpoints()
            .iter()
            .filter(|e| {
                e.state().map(|s| s.as_str().to_ascii_lowercase()) != Some("deleted".into())
            })
            .cloned()
            .collect()
    }

    pub async fn owned_groups(&self, uid: &str) -> Vec<aws_sdk_ec2::types::SecurityGroup> {
        self.ec2
            .describe_security_groups()
            .filters(tag_filter(uid))
            .send()
            .await
            .expect("describe groups")
            .security_groups()
            .to_vec()
    }

    pub async fn harness(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/_harness/{path}", self.emulator);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        assert!(
            resp.status().is_success(),
            "{method} {url}: {}",
            resp.status()
        );
        resp.json().await.unwrap_or(Value::Null)
    }

    /// EC2 calls per action as the emulator counted them.
    pub async fn emulator_calls(&self) -> BTreeMap<String, u64> {
        let v = self.harness("GET", "calls", Value::Null).await;
        serde_json::from_value(v["calls"].clone()).unwrap_or_default()
    }

    /// Runs kubectl against the rig.
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(self.bin("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.env["KUBECONFIG"])
            .output()
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> (bool, String, String) {
        use std::io::Write;
        let mut child = std::process::Command::new(self.bin("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.env["KUBECONFIG"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        match self.env.get("KUBEBUILDER_ASSETS") {
            Some(dir) => PathBuf::from(dir).join(name),
            None => PathBuf::from(name),
        }
    }

    /// Starts the operator binary out of cluster, watching one namespace.
    pub fn operator(&self, ns: &str, extra: &[&str]) -> Operator {
        Operator::start(self, ns, extra, None)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut c) = self.private_emulator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The VPC the private emulator seeds in (account, region) (its `/_harness/seed` view): its id
/// and subnet ids.
pub fn seeded_vpc(seed: &Value, account: &str, region: &str) -> (String, Vec<String>) {
    let v = seed["vpcs"]
        .as_array()
        .and_then(|vs| {
            vs.iter()
                .find(|v| v["account"] == account && v["region"] == region)
        })
        .unwrap_or_else(|| panic!("the emulator seeds a VPC in {account}/{region}"));
    let subnets = v["subnets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    (
        v["vpc_id"].as_str().unwrap_or_default().to_string(),
        subnets,
    )
}

pub fn tag_filter(uid: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{OWNER_TAG}"))
        .values(uid)
        .build()
}

pub struct Network {
    pub vpc_id: String,
    pub cidr: String,
    /// (subnet id, AZ)
    pub subnets: Vec<(String, String)>,
}

impl Network {
    pub fn subnet_ids(&self) -> Vec<String> {
        self.subnets.iter().map(|(id, _)| id.clone()).collect()
    }
}

pub struct Operator {
    child: Option<tokio::process::Child>,
    pub http_port: u16,
    pub log: PathBuf,
}

impl Operator {
    pub fn start(rig: &Rig, ns: &str, extra: &[&str], kubeconfig: Option<&str>) -> Operator {
        let port = free_port();
        let logs = repo_root().join("target").join("test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("operator-{ns}-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--watch-namespaces".into(),
            ns.into(),
            "--http-addr".into(),
            format!("127.0.0.1:{port}"),
        ];
        // Test defaults; a flag given in `extra` replaces its default (clap refuses repeats).
        for (flag, value) in [
            ("--resync-seconds", "30"),
            ("--pending-requeue-ms", "300"),
            ("--ec2-rate-limit", "false"),
            ("--log-level", "info,bpl=debug"),
        ] {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), value.to_string()]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child =
            tokio::process::Command::new(env!("CARGO_BIN_EXE_bedrock-privatelink-operator"))
                .args(&args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("KUBECONFIG", kubeconfig.unwrap_or(&rig.env["KUBECONFIG"]))
                .env("AWS_REGION", &rig.region)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("AWS_ENDPOINT_URL_EC2", &rig.env["AWS_ENDPOINT_URL_EC2"])
                .env("POD_NAMESPACE", ns)
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .kill_on_drop(true)
                .spawn()
                .expect("start operator");
        Operator {
            child: Some(child),
            http_port: port,
            log,
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = c.id()?;
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        tokio::time::timeout(Duration::from_secs(20), c.wait())
            .await
            .ok()?
            .ok()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sum of a counter family in Prometheus text for lines matching all `needles`.
pub fn metric_sum(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn short_id() -> String {
    format!("{:06x}", rand_u32() & 0xffffff)
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// Polls `check` until it returns Some, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn create_bpl(rig: &Rig, ns: &str, name: &str, spec: Value) -> BedrockPrivateLink {
    let obj: BedrockPrivateLink = serde_json::from_value(json!({
        "apiVersion": "bedrock.privatelink.io/v1alpha1",
        "kind": "BedrockPrivateLink",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .expect("valid object");
    rig.bpls(ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create BedrockPrivateLink")
}

pub fn condition<'a>(
    obj: &'a BedrockPrivateLink,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Waits until the object's Ready condition has `status` (and, if given, `reason`).
pub async fn wait_ready(
    rig: &Rig,
    ns: &str,
    name: &str,
    status: &str,
    reason: Option<&str>,
    timeout: Duration,
) -> BedrockPrivateLink {
    let api = rig.bpls(ns);
    let what = format!("{ns}/{name} Ready={status} {reason:?}");
    eventually(timeout, &what, || {
        let api = api.clone();
        async move {
            let o = api.get(name).await.ok()?;
            let c = condition(&o, "Ready")?;
            // A verdict on the current spec, not an earlier one.
            let current = o.status.as_ref()?.observed_generation == o.metadata.generation
                && c.observed_generation == o.metadata.generation;
            (current && c.status == status && reason.is_none_or(|r| c.reason == r))
                .then_some(o.clone())
        }
    })
    .await
}

/// Waits until the object is Ready for its current generation (status.observedGeneration and
/// the Ready condition's both equal metadata.generation).
pub async fn converged(rig: &Rig, ns: &str, name: &str, timeout: Duration) -> BedrockPrivateLink {
    wait_ready(rig, ns, name, "True", None, timeout).await
}

pub async fn delete_bpl(rig: &Rig, ns: &str, name: &str) {
    let _ = rig.bpls(ns).delete(name, &DeleteParams::default()).await;
}

pub async fn wait_gone(rig: &Rig, ns: &str, name: &str, timeout: Duration) {
    let api = rig.bpls(ns);
    eventually(timeout, &format!("{ns}/{name} to be gone"), || {
        let api = api.clone();
        async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
    })
    .await
}

static CRD: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Ensures the CRDs in crds/ are installed and established, and the rig's open grant exists
/// (once per test binary).
pub async fn install_crd(rig: &Rig) {
    CRD.get_or_init(|| apply_crd(rig)).await;
}

async fn apply_crd(rig: &Rig) {
    let path = repo_root().join("crds");
    let (ok, _, err) = rig.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        path.to_str().unwrap(),
    ]);
    assert!(ok, "install CRDs: {err}");
    let (ok, _, err) = rig.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/bedrockprivatelinks.bedrock.privatelink.io",
        "crd/bedrockprivatelinkgrants.bedrock.privatelink.io",
    ]);
    assert!(ok, "CRDs established: {err}");
    let grant = format!(
        "apiVersion: bedrock.privatelink.io/v1alpha1
kind: BedrockPrivateLinkGrant
metadata:
  name: rig-tests-open
spec:
  namespaces:
    selector:
      matchLabels:
        {OPEN_TENANCY_LABEL}: open
  vpcs:
    any: true
  privateDns: true
  policyPresets: [InvokeOnly, ReadOnly, FullAccess, Custom]
  allowTakeOver: true
  maxEndpointsPerNamespace: 100000
"
    );
    let (ok, _, err) = rig.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=bpl-tests",
            "-f",
            "-",
        ],
        &grant,
    );
    assert!(ok, "apply the rig's open grant: {err}");
}

/// Security-group rules as `proto/from-to source`, sorted, for comparing with expectations.
pub fn rule_strings(perms: &[aws_sdk_ec2::types::IpPermission]) -> Vec<String> {
    let mut out: Vec<String> = perms
        .iter()
        .flat_map(|p| {
            let proto = format!(
                "{}/{}-{}",
                p.ip_protocol().unwrap_or("?"),
                p.from_port().unwrap_or(-1),
                p.to_port().unwrap_or(-1)
            );
            p.ip_ranges()
                .iter()
                .filter_map(|r| r.cidr_ip().map(|c| format!("{proto} {c}")))
                .chain(
                    p.user_id_group_pairs()
                        .iter()
                        .filter_map(|u| u.group_id().map(|g| format!("{proto} {g}"))),
                )
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

pub fn ingress_rules(g: &aws_sdk_ec2::types::SecurityGroup) -> Vec<String> {
    rule_strings(g.ip_permissions())
}

pub fn egress_rules(g: &aws_sdk_ec2::types::SecurityGroup) -> Vec<String> {
    rule_strings(g.ip_permissions_egress())
}

/// Warning events about the object (by uid) with this reason.
pub async fn warning_events(
    rig: &Rig,
    ns: &str,
    uid: &str,
    reason: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    events_of(rig, ns, uid, reason, "Warning").await
}

/// Normal events about the object (by uid) with this reason.
pub async fn normal_events(
    rig: &Rig,
    ns: &str,
    uid: &str,
    reason: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    events_of(rig, ns, uid, reason, "Normal").await
}

async fn events_of(
    rig: &Rig,
    ns: &str,
    uid: &str,
    reason: &str,
    type_: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(rig.client.clone(), ns);
    api.list(&kube::api::ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid)
                && e.reason.as_deref() == Some(reason)
                && e.type_.as_deref() == Some(type_)
        })
        .collect()
}
