//! Benchmark COMMAND for the operator (not a timed test): `make bench`, or
//! `cargo bench --bench operator -- --help` with the rig up (`scripts/rig up`).
//!
//! It starts a private EC2 emulator of its own (instant endpoint lifecycles) on a free
//! 127.0.0.1 port, uses the rig's kube-apiserver, runs the RELEASE build of the operator with the
//! client-side limiter off, and prints one table: apply-to-Ready latency of one object, N objects
//! at once (time, EC2 calls per object from both the emulator and the operator's metrics, API
//! server requests), the steady state (EC2 calls per object per resync, CPU, RSS), deleting N,
//! and, with the limiter on, a burst of creates. Everything stays on loopback; every wait is
//! bounded by --phase-timeout-seconds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter};
use bpl::api::BedrockPrivateLink;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;

// The rig helpers the tests use (repo_root, rig_env, short_id, ...): one copy.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{repo_root, rig_env, seeded_vpc, short_id};

use common::OWNER_TAG;
/// The operator binary `cargo bench` built with the bench (release) profile.
const OPERATOR: &str = env!("CARGO_BIN_EXE_bedrock-privatelink-operator");

#[derive(Parser, Debug, Clone)]
#[command(about = "Benchmark of the operator on the rig (see BENCHMARKS.md)")]
struct Args {
    /// Object counts for the bulk scenarios (0 skips them).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    objects: Vec<usize>,
    /// Create/Ready/delete cycles of one object for the latency figures (0 skips them).
    #[arg(long, default_value_t = 50)]
    latency_runs: usize,
    /// Length of the steady-state window after each bulk apply (0 skips it).
    #[arg(long, default_value_t = 120)]
    steady_seconds: u64,
    /// The operator's --resync-seconds.
    #[arg(long, default_value_t = 20)]
    resync_seconds: u64,
    /// The operator's --concurrency (8: the operator's own default).
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
    /// The operator's --pending-requeue-ms.
    #[arg(long, default_value_t = 100)]
    pending_requeue_ms: u64,
    /// Creates (and deletes) the driver keeps in flight.
    #[arg(long, default_value_t = 32)]
    apply_concurrency: usize,
    /// Objects created at once while the emulator keeps every new endpoint `pending` for
    /// --pending-seconds, as real AWS does for a minute or more (0 skips the scenario).
    #[arg(long, default_value_t = 100)]
    pending_objects: usize,
    /// How long the emulator keeps new endpoints pending in that scenario.
    #[arg(long, default_value_t = 90)]
    pending_seconds: u64,
    /// Objects created at once with the operator's EC2 limiter on (0 skips the scenario).
    #[arg(long, default_value_t = 20)]
    limiter_objects: usize,
    /// Objects created at once in one account (B) while a few more are created in another (C),
    /// from one operator with the limiter on: AWS's buckets are per (account, region), and so
    /// are the operator's limiters (0 skips the scenario).
    #[arg(long, default_value_t = 20)]
    accounts_objects: usize,
    /// Upper bound of every wait (Ready, gone, nothing left in EC2).
    #[arg(long, default_value_t = 600)]
    phase_timeout_seconds: u64,
    /// Also write the table (markdown) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Python of the rig's venv (runs tests/emulator/harness.py).
    #[arg(long, env = "BPL_VENV_PYTHON")]
    python: Option<String>,
    /// Profiling: run the operator under this command, e.g. "heaptrack -o target/bench/heap"
    /// or "perf record -g -o target/bench/perf.data" (CPU and RSS figures are then the
    /// wrapper's, not the operator's).
    #[arg(long, allow_hyphen_values = true)]
    operator_prefix: Option<String>,
    /// After the steady state, restart the operator on the N Ready objects and measure until
    /// every object was reconciled once (`--restart false` skips it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    restart: bool,
    /// Run this operator binary instead of the one `cargo bench` built (e.g. a release build
    /// made with `cargo build --release`, while the driver itself is a debug build).
    #[arg(long, env = "BPL_BENCH_OPERATOR")]
    operator_bin: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn out_dir() -> PathBuf {
    let d = repo_root().join("target").join("bench");
    std::fs::create_dir_all(&d).expect("create target/bench");
    d
}

fn rig_dir() -> PathBuf {
    std::env::var("RIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".rig"))
}

fn loopback_only(url: &str) {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', ':']).next())
        .unwrap_or("");
    assert!(
        host == "127.0.0.1",
        "refusing to talk to {url}: the benchmark stays on 127.0.0.1"
    );
}

// ---------------------------------------------------------------------------------------------
// The private emulator

struct Emulator {
    /// Killed when the benchmark ends (kill_on_drop).
    _child: tokio::process::Child,
    pid: u32,
    url: String,
    http: reqwest::Client,
}

impl Emulator {
    async fn start(python: &str, timeout: Duration) -> Emulator {
        let dir = out_dir();
        let port_file = dir.join(format!("emulator-{}.port", short_id()));
        let _ = std::fs::remove_file(&port_file);
        let log = std::fs::File::create(dir.join("emulator.log")).expect("emulator log");
        let child = tokio::process::Command::new(python)
            .arg(repo_root().join("tests/emulator/harness.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--port-file"])
            .arg(&port_file)
            .args([
                "--region",
                "us-east-1",
                "--pending-seconds",
                "0",
                "--deleting-seconds",
                "0",
                "--deleted-seconds",
                "0",
                "--quiet",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {python} tests/emulator/harness.py: {e}"));
        let started = Instant::now();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = loop {
            assert!(
                started.elapsed() < timeout,
                "the emulator did not start (see target/bench/emulator.log)"
            );
            if let Ok(p) = std::fs::read_to_string(&port_file)
                && let Ok(port) = p.trim().parse::<u16>()
            {
                let url = format!("http://127.0.0.1:{port}");
                if http
                    .get(format!("{url}/_harness/health"))
                    .send()
                    .await
                    .is_ok()
                {
                    break url;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let _ = std::fs::remove_file(&port_file);
        loopback_only(&url);
        Emulator {
            pid: child.id().unwrap_or(0),
            _child: child,
            url,
            http,
        }
    }

    /// Changes the emulator's lifecycle timings (`/_harness/config`).
    async fn configure(&self, config: Value) {
        let resp = self
            .http
            .post(format!("{}/_harness/config", self.url))
            .json(&config)
            .send()
            .await
            .expect("emulator config");
        assert!(resp.status().is_success(), "emulator config: {resp:?}");
    }

    /// Every endpoint as the harness sees it (`/_harness/endpoints`).
    async fn endpoints(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/_harness/endpoints", self.url))
            .send()
            .await
            .expect("emulator endpoints")
            .json()
            .await
            .expect("emulator endpoints json");
        v["endpoints"].as_array().cloned().unwrap_or_default()
    }

    /// A harness view (`/_harness/<path>`) as JSON.
    async fn view(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/_harness/{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("emulator {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("emulator {path} json: {e}"))
    }

    async fn calls(&self) -> BTreeMap<String, u64> {
        let v: Value = self
            .http
            .get(format!("{}/_harness/calls", self.url))
            .send()
            .await
            .expect("emulator calls")
            .json()
            .await
            .expect("emulator calls json");
        serde_json::from_value(v["calls"].clone()).unwrap_or_default()
    }

    fn ec2(&self) -> aws_sdk_ec2::Client {
        let creds =
            aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "bench");
        let conf = aws_sdk_ec2::config::Builder::new()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(&self.url)
            .build();
        aws_sdk_ec2::Client::from_conf(conf)
    }
}

/// One VPC (DNS support and hostnames on) with a subnet in each of three AZs.
async fn network(ec2: &aws_sdk_ec2::Client) -> (String, Vec<String>) {
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.42.0.0/16")
        .send()
        .await
        .expect("create vpc");
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    for support in [true, false] {
        let on = AttributeBooleanValue::builder().value(true).build();
        let req = ec2.modify_vpc_attribute().vpc_id(&vpc_id);
        let req = if support {
            req.enable_dns_support(on)
        } else {
            req.enable_dns_hostnames(on)
        };
        req.send().await.expect("vpc dns attribute");
    }
    let mut subnets = Vec::new();
    for (i, az) in ["a", "b", "c"].iter().enumerate() {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.42.{}.0/24", i + 1))
            .availability_zone(format!("us-east-1{az}"))
            .send()
            .await
            .expect("create subnet");
        subnets.push(s.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    (vpc_id, subnets)
}

/// Endpoints (not deleted) and security groups in the VPC that carry the owner tag.
async fn tagged_left(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> (usize, usize) {
    let filters = || {
        vec![
            Filter::builder().name("vpc-id").values(vpc_id).build(),
            Filter::builder().name("tag-key").values(OWNER_TAG).build(),
        ]
    };
    let mut endpoints = 0;
    let mut token = None;
    loop {
        let out = ec2
            .describe_vpc_endpoints()
            .set_filters(Some(filters()))
            .set_next_token(token)
            .send()
            .await
            .expect("describe endpoints");
        endpoints += out
            .vpc_endpoints()
            .iter()
            .filter(|e| {
                e.state()
                    .is_none_or(|s| !s.as_str().eq_ignore_ascii_case("deleted"))
            })
            .count();
        token = out.next_token().filter(|t| !t.is_empty()).map(String::from);
        if token.is_none() {
            break;
        }
    }
    let groups = ec2
        .describe_security_groups()
        .set_filters(Some(filters()))
        .send()
        .await
        .expect("describe groups")
        .security_groups()
        .len();
    (endpoints, groups)
}

// ---------------------------------------------------------------------------------------------
// The operator process

struct Operator {
    child: tokio::process::Child,
    pid: u32,
    port: u16,
    bin: PathBuf,
    args: Vec<String>,
    http: reqwest::Client,
}

/// The operator binary this run uses.
fn operator_bin(args: &Args) -> PathBuf {
    args.operator_bin
        .clone()
        .unwrap_or_else(|| PathBuf::from(OPERATOR))
}

impl Operator {
    fn start(
        args: &Args,
        env: &BTreeMap<String, String>,
        emulator: &str,
        ns: &str,
        limiter: bool,
        extra: &[String],
    ) -> Operator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let argv: Vec<String> = [
            "run",
            "--watch-namespaces",
            ns,
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--resync-seconds",
            &args.resync_seconds.to_string(),
            "--pending-requeue-ms",
            &args.pending_requeue_ms.to_string(),
            "--concurrency",
            &args.concurrency.to_string(),
            "--ec2-rate-limit",
            if limiter { "true" } else { "false" },
            "--log-level",
            "info",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .collect();
        let log = std::fs::File::create(out_dir().join(format!("operator-{ns}.log"))).unwrap();
        let prefix: Vec<&str> = args
            .operator_prefix
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let bin = operator_bin(args);
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = tokio::process::Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => tokio::process::Command::new(&bin),
        };
        let child = cmd
            .args(&argv)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &env["KUBECONFIG"])
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL_EC2", emulator)
            .env("POD_NAMESPACE", ns)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the operator");
        let pid = child.id().expect("operator pid");
        Operator {
            child,
            pid,
            port,
            bin,
            args: argv,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn command_line(&self) -> String {
        format!("bedrock-privatelink-operator {}", self.args.join(" "))
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(r) = self
                .http
                .get(format!("http://127.0.0.1:{}/readyz", self.port))
                .send()
                .await
                && r.status().is_success()
            {
                break;
            }
            assert!(started.elapsed() < timeout, "operator not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Under a profiling prefix the process we started is the wrapper: follow the operator.
        let needle = format!("127.0.0.1:{}", self.port);
        let bin = self.bin.to_string_lossy().into_owned();
        if let Some(pid) = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.starts_with(&bin) && c.contains(&needle)
                })
            })
        {
            self.pid = pid;
        }
    }

    async fn metrics(&self) -> Metrics {
        let text = self
            .http
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .send()
            .await
            .expect("operator /metrics")
            .text()
            .await
            .expect("operator /metrics text");
        Metrics::parse(&text)
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid)
    }

    /// "VmHWM / VmRSS MiB (anon A, file F)": peak and current resident memory, the current
    /// split into anonymous memory (heap, stacks) and file pages (the binary's code and data,
    /// shared with other processes running it).
    fn memory(&self) -> String {
        let (hwm, rss, anon, file) = self.memory_mib();
        format!("{hwm:.1} / {rss:.1} MiB (anon {anon:.1}, file {file:.1})")
    }

    /// (VmHWM, VmRSS, RssAnon, RssFile) in MiB.
    fn memory_mib(&self) -> (f64, f64, f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (
            kib("VmHWM:") / 1024.0,
            kib("VmRSS:") / 1024.0,
            kib("RssAnon:") / 1024.0,
            kib("RssFile:") / 1024.0,
        )
    }

    async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// utime + stime of a process, in seconds (0 if it cannot be read).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The counters the benchmark reads from the operator's /metrics.
#[derive(Default, Clone, Debug)]
struct Metrics {
    /// bpl_ec2_calls_total by operation (all outcomes).
    ec2_calls: BTreeMap<String, f64>,
    ec2_attempts: BTreeMap<String, f64>,
    ec2_throttles: f64,
    /// bpl_kube_requests_total by verb.
    kube_requests: BTreeMap<String, f64>,
    /// bpl_kube_requests_total by verb and resource.
    kube_by_resource: BTreeMap<String, f64>,
    reconciles: f64,
    /// bpl_vpc_polls_total (all reasons): the per-VPC describes of poll.rs.
    vpc_polls: f64,
    /// Sum of the bpl_objects gauges: every object the process has reconciled (and not
    /// forgotten), whatever its Ready status.
    objects: f64,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let label = |key: &str| {
                labels.split(',').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k == key).then(|| v.trim_matches('"').to_string())
                })
            };
            match name {
                "bpl_ec2_calls_total" => {
                    *m.ec2_calls
                        .entry(label("operation").unwrap_or_default())
                        .or_default() += value
                }
                "bpl_ec2_attempts_total" => {
                    *m.ec2_attempts
                        .entry(label("operation").unwrap_or_default())
                        .or_default() += value
                }
                "bpl_ec2_throttles_total" => m.ec2_throttles += value,
                "bpl_kube_requests_total" => {
                    let verb = label("verb").unwrap_or_default();
                    *m.kube_requests.entry(verb.clone()).or_default() += value;
                    let key = format!("{verb} {}", label("resource").unwrap_or_default());
                    *m.kube_by_resource.entry(key).or_default() += value;
                }
                "bpl_reconciles_total" => m.reconciles += value,
                "bpl_vpc_polls_total" => m.vpc_polls += value,
                "bpl_objects" => m.objects += value,
                _ => {}
            }
        }
        m
    }

    fn minus(&self, before: &Metrics) -> Metrics {
        let sub = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| {
            a.iter()
                .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0)))
                .filter(|(_, v)| *v != 0.0)
                .collect()
        };
        Metrics {
            ec2_calls: sub(&self.ec2_calls, &before.ec2_calls),
            ec2_attempts: sub(&self.ec2_attempts, &before.ec2_attempts),
            ec2_throttles: self.ec2_throttles - before.ec2_throttles,
            kube_requests: sub(&self.kube_requests, &before.kube_requests),
            kube_by_resource: sub(&self.kube_by_resource, &before.kube_by_resource),
            reconciles: self.reconciles - before.reconciles,
            vpc_polls: self.vpc_polls - before.vpc_polls,
            objects: self.objects - before.objects,
        }
    }
}

fn minus_calls(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    a.iter()
        .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v != 0)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Watching objects

#[derive(Default)]
struct Seen {
    ready_at: HashMap<String, Instant>,
    gone_at: HashMap<String, Instant>,
}

/// Follows one namespace's objects through a watch and records when each first became
/// Ready=True and when it was deleted.
struct Tracker {
    seen: Arc<Mutex<Seen>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

fn is_ready(o: &BedrockPrivateLink) -> bool {
    o.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

impl Tracker {
    async fn start(api: Api<BedrockPrivateLink>) -> Tracker {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let notify = Arc::new(Notify::new());
        let (init_tx, init_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let (seen, notify) = (seen.clone(), notify.clone());
            async move {
                let mut init = Some(init_tx);
                let mut stream = watcher(api, watcher::Config::default()).boxed();
                while let Some(ev) = stream.next().await {
                    let now = Instant::now();
                    match ev {
                        Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                            if is_ready(&o) {
                                seen.lock()
                                    .unwrap()
                                    .ready_at
                                    .entry(o.name_any())
                                    .or_insert(now);
                            }
                        }
                        Ok(watcher::Event::Delete(o)) => {
                            seen.lock()
                                .unwrap()
                                .gone_at
                                .entry(o.name_any())
                                .or_insert(now);
                        }
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = init.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(watcher::Event::Init) => {}
                        Err(e) => {
                            eprintln!("bench watch: {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    notify.notify_waiters();
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), init_rx).await;
        Tracker { seen, notify, task }
    }

    /// Waits until `done` holds for what was seen; false on timeout.
    async fn wait(&self, timeout: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.seen.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.seen.lock().unwrap());
            }
        }
    }
}

impl Tracker {
    /// Waits until every one of `names` was deleted; whether they all were.
    async fn all_gone(&self, timeout: Duration, names: &[String]) -> bool {
        self.wait(timeout, |s| names.iter().all(|n| s.gone_at.contains_key(n)))
            .await
    }

    /// Waits until every one of `names` was Ready; how long after `since` the last one was.
    async fn all_ready(
        &self,
        timeout: Duration,
        names: &[String],
        since: Instant,
    ) -> Option<Duration> {
        let ok = self
            .wait(timeout, |s| {
                names.iter().all(|x| s.ready_at.contains_key(x))
            })
            .await;
        let seen = self.seen.lock().unwrap();
        let last = names.iter().filter_map(|x| seen.ready_at.get(x)).max();
        last.filter(|_| ok)
            .map(|t| t.saturating_duration_since(since))
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes helpers

async fn kube_client(env: &BTreeMap<String, String>) -> Client {
    let kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"]).expect("read the rig's kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    loopback_only(&config.cluster_url.to_string());
    Client::try_from(config).expect("kube client")
}

/// Applies the CRDs in crds/ (server-side), waits until they are established, and grants the
/// bench's namespaces (labelled by `namespace`) any VPC and endpoint count (tenancy, issue 16).
async fn install_crd(client: &Client, timeout: Duration) {
    for file in ["bedrockprivatelink.yaml", "bedrockprivatelinkgrant.yaml"] {
        apply_crd_file(client, file, timeout).await;
    }
    let grant: bpl::api::BedrockPrivateLinkGrant = serde_json::from_value(json!({
        "apiVersion": "bedrock.privatelink.io/v1alpha1",
        "kind": "BedrockPrivateLinkGrant",
        "metadata": {"name": "bench-open"},
        "spec": {
            "namespaces": {"selector": {"matchLabels": {BENCH_TENANCY_LABEL: "open"}}},
            "vpcs": {"any": true},
            "maxEndpointsPerNamespace": 100000,
        },
    }))
    .expect("valid grant");
    Api::<bpl::api::BedrockPrivateLinkGrant>::all(client.clone())
        .patch(
            "bench-open",
            &PatchParams::apply("bpl-bench").force(),
            &Patch::Apply(&grant),
        )
        .await
        .expect("apply the bench's grant");
}

const BENCH_TENANCY_LABEL: &str = "bpl-bench.bedrock.privatelink.io/tenancy";

async fn apply_crd_file(client: &Client, file: &str, timeout: Duration) {
    let text = std::fs::read_to_string(repo_root().join("crds").join(file))
        .unwrap_or_else(|e| panic!("read crds/{file}: {e}"));
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("CRD yaml");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    api.patch(
        &name,
        &PatchParams::apply("bpl-bench").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the CRD");
    let started = Instant::now();
    loop {
        let c = api.get(&name).await.expect("get CRD");
        let established = c.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            return;
        }
        assert!(started.elapsed() < timeout, "CRD not established");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("bench-{prefix}-{}", short_id());
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {BENCH_TENANCY_LABEL: "open"}}}),
        )
        .unwrap(),
    )
    .await
    .expect("create namespace");
    name
}

fn object(ns: &str, name: &str, vpc_id: &str, subnets: &[String]) -> BedrockPrivateLink {
    serde_json::from_value(json!({
        "apiVersion": "bedrock.privatelink.io/v1alpha1",
        "kind": "BedrockPrivateLink",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"vpcId": vpc_id, "subnets": {"ids": subnets}, "privateDns": false},
    }))
    .expect("valid object")
}

/// Creates `names` with at most `in_flight` requests at once.
async fn create_all(
    api: &Api<BedrockPrivateLink>,
    ns: &str,
    names: &[String],
    vpc_id: &str,
    subnets: &[String],
    in_flight: usize,
) {
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let obj = object(ns, &name, vpc_id, subnets);
            async move { api.create(&PostParams::default(), &obj).await }
        })
        .buffer_unordered(in_flight.max(1))
        .try_for_each(|_| async { Ok(()) })
        .await
        .expect("create objects");
}

// ---------------------------------------------------------------------------------------------
// Report

struct Report {
    rows: Vec<[String; 3]>,
    notes: Vec<String>,
}

impl Report {
    fn section(&mut self, title: &str) {
        self.rows
            .push([format!("**{title}**"), String::new(), String::new()]);
    }

    fn row(&mut self, what: &str, value: String, target: &str) {
        self.rows
            .push([what.to_string(), value, target.to_string()]);
        if target.is_empty() {
            println!("  {what}: {}", self.rows.last().unwrap()[1]);
        } else {
            println!(
                "  {what}: {}   [target: {target}]",
                self.rows.last().unwrap()[1]
            );
        }
    }

    fn markdown(&self) -> String {
        let mut s = String::from("| measure | value | target |\n| --- | --- | --- |\n");
        for r in &self.rows {
            s.push_str(&format!("| {} | {} | {} |\n", r[0], r[1], r[2]));
        }
        s
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn as_f64(calls: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
    calls.iter().map(|(k, v)| (k.clone(), *v as f64)).collect()
}

fn per_object(calls: &BTreeMap<String, f64>, n: usize) -> String {
    // + 0.0: an empty sum is -0.0.
    let total: f64 = calls.values().sum::<f64>() + 0.0;
    let parts: Vec<String> = calls
        .iter()
        .map(|(k, v)| format!("{k} {:.2}", v / n as f64))
        .collect();
    format!("{:.2} ({})", total / n as f64, parts.join(", "))
}

/// A point in a run: the operator's metrics just before and just after the emulator's counters.
struct Snap {
    before: Metrics,
    calls: BTreeMap<String, u64>,
    after: Metrics,
    at: Instant,
    /// CPU seconds: operator, emulator, kube-apiserver + etcd.
    cpu: [f64; 3],
}

/// Whether the emulator's counts over a phase match the operator's bpl_ec2_calls_total. The
/// emulator counts a call when it arrives, the operator when it is answered, so the operator's
/// count is bracketed by the snapshots taken around the emulator's; a call still in flight at a
/// snapshot (a page of a whole-VPC describe can take seconds with a thousand endpoints) can put
/// them one or two apart, which is reported as such.
fn agree(s0: &Snap, s1: &Snap) -> String {
    let emulator = minus_calls(&s1.calls, &s0.calls);
    let low = s1.before.minus(&s0.after);
    let high = s1.after.minus(&s0.before);
    let mut diffs = Vec::new();
    let mut worst: f64 = 0.0;
    let keys: std::collections::BTreeSet<&String> = emulator
        .keys()
        .chain(low.ec2_calls.keys())
        .chain(high.ec2_calls.keys())
        .collect();
    for k in keys {
        let e = emulator.get(k).copied().unwrap_or(0) as f64;
        let lo = low.ec2_calls.get(k).copied().unwrap_or(0.0);
        let hi = high.ec2_calls.get(k).copied().unwrap_or(0.0);
        let off = (lo - e).max(e - hi).max(0.0);
        if off > 0.5 {
            worst = worst.max(off);
            let attempts = high.ec2_attempts.get(k).copied().unwrap_or(0.0);
            diffs.push(format!(
                "{k}: emulator {e} vs operator {lo}..{hi} (attempts {attempts})"
            ));
        }
    }
    if diffs.is_empty() {
        "yes (every action)".into()
    } else if worst <= 2.5 {
        format!(
            "yes, but for calls in flight at a snapshot: {}",
            diffs.join("; ")
        )
    } else {
        format!("NO: {}", diffs.join("; "))
    }
}

fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    vec![
        ("nproc".into(), nproc.to_string()),
        ("CPU".into(), model),
        ("memory".into(), mem),
        ("kernel".into(), kernel),
        (
            "load average at start".into(),
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Scenarios

struct Bench {
    args: Args,
    env: BTreeMap<String, String>,
    client: Client,
    emulator: Emulator,
    ec2: aws_sdk_ec2::Client,
    vpc_id: String,
    subnets: Vec<String>,
    timeout: Duration,
    report: Report,
    operator_lines: Vec<String>,
    /// kube-apiserver and etcd of the rig (shared with whatever else runs on it).
    rig_pids: Vec<u32>,
}

impl Bench {
    fn operator(&mut self, ns: &str, limiter: bool) -> Operator {
        self.operator_with(ns, limiter, &[])
    }

    fn operator_with(&mut self, ns: &str, limiter: bool, extra: &[String]) -> Operator {
        let op = Operator::start(
            &self.args,
            &self.env,
            &self.emulator.url,
            ns,
            limiter,
            extra,
        );
        let line = op.command_line();
        let generic = line
            .replace(&self.emulator.url, "<emulator>")
            .replace(ns, "<ns>")
            .replace(&op.port.to_string(), "<port>");
        if !self.operator_lines.contains(&generic) {
            self.operator_lines.push(generic);
        }
        op
    }

    async fn latency(&mut self) {
        let runs = self.args.latency_runs;
        println!("== apply-to-Ready latency of one object, {runs} runs");
        let ns = namespace(&self.client, "latency").await;
        let mut op = self.operator(&ns, false);
        op.wait_ready(self.timeout).await;
        let api: Api<BedrockPrivateLink> = Api::namespaced(self.client.clone(), &ns);
        let tracker = Tracker::start(api.clone()).await;
        let mut ready = Vec::new();
        let mut gone = Vec::new();
        for i in 0..runs {
            let name = format!("lat-{i:03}");
            let obj = object(&ns, &name, &self.vpc_id, &self.subnets);
            let t0 = Instant::now();
            api.create(&PostParams::default(), &obj)
                .await
                .expect("create");
            let ok = tracker
                .wait(self.timeout, |s| s.ready_at.contains_key(&name))
                .await;
            assert!(ok, "{name} did not become Ready");
            let at = tracker.seen.lock().unwrap().ready_at[&name];
            ready.push((at - t0).as_secs_f64() * 1000.0);
            let t1 = Instant::now();
            api.delete(&name, &DeleteParams::default())
                .await
                .expect("delete");
            let ok = tracker
                .wait(self.timeout, |s| s.gone_at.contains_key(&name))
                .await;
            assert!(ok, "{name} was not deleted");
            let at = tracker.seen.lock().unwrap().gone_at[&name];
            gone.push((at - t1).as_secs_f64() * 1000.0);
        }
        ready.sort_by(f64::total_cmp);
        gone.sort_by(f64::total_cmp);
        self.report.section(&format!(
            "One object, {runs} runs (create, wait Ready via watch, delete)"
        ));
        self.report.row(
            "apply-to-Ready p50 / p99 / max",
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                percentile(&ready, 50.0),
                percentile(&ready, 99.0),
                ready.last().copied().unwrap_or(f64::NAN)
            ),
            "p50 <= 300 ms",
        );
        self.report.row(
            "delete-to-gone p50 / p99",
            format!(
                "{:.0} / {:.0} ms",
                percentile(&gone, 50.0),
                percentile(&gone, 99.0)
            ),
            "",
        );
        op.stop().await;
    }

    /// Operator metrics before and after reading the emulator's counters (the emulator counts
    /// a call when it arrives, the operator when it is answered), and CPU of the processes.
    /// Creates `names` (`--apply-concurrency` in flight) and waits until every one is Ready:
    /// how long sending the creates took, and how long until the last was Ready.
    async fn create_until_ready(
        &self,
        api: &Api<BedrockPrivateLink>,
        tracker: &Tracker,
        ns: &str,
        names: &[String],
    ) -> (Duration, Duration) {
        let t0 = Instant::now();
        create_all(
            api,
            ns,
            names,
            &self.vpc_id,
            &self.subnets,
            self.args.apply_concurrency,
        )
        .await;
        let applied = t0.elapsed();
        let ok = tracker
            .wait(self.timeout, |s| {
                names.iter().all(|n| s.ready_at.contains_key(n))
            })
            .await;
        let seen = tracker.seen.lock().unwrap();
        assert!(
            ok,
            "only {} of {} objects became Ready",
            seen.ready_at.len(),
            names.len()
        );
        let last = names.iter().map(|n| seen.ready_at[n]).max().unwrap();
        (applied, last - t0)
    }

    async fn snap(&self, op: &Operator) -> Snap {
        let before = op.metrics().await;
        let calls = self.emulator.calls().await;
        let after = op.metrics().await;
        Snap {
            before,
            calls,
            after,
            at: Instant::now(),
            cpu: [
                op.cpu_seconds(),
                cpu_seconds(self.emulator.pid),
                self.rig_pids.iter().map(|p| cpu_seconds(*p)).sum(),
            ],
        }
    }

    fn phase_rows(&mut self, n: usize, s0: &Snap, s1: &Snap, per: f64, what: &str) {
        let calls = minus_calls(&s1.calls, &s0.calls);
        let metrics = s1.after.minus(&s0.after);
        let scaled = |m: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
            m.iter().map(|(k, v)| (k.clone(), v / per)).collect()
        };
        self.report.row(
            &format!("EC2 calls per object{what}, emulator"),
            per_object(&scaled(&as_f64(&calls)), n),
            match what {
                "" => "<= 8",
                " per resync" => "<= 1",
                _ => "",
            },
        );
        self.report.row(
            &format!("EC2 calls per object{what}, operator bpl_ec2_calls_total"),
            per_object(&scaled(&metrics.ec2_calls), n),
            "",
        );
        self.report
            .row("emulator and operator agree", agree(s0, s1), "");
        self.report.row(
            &format!("API server requests per object{what} (bpl_kube_requests_total)"),
            per_object(&scaled(&metrics.kube_requests), n),
            "",
        );
        self.report.row(
            &format!("reconciles per object{what}"),
            format!("{:.2}", metrics.reconciles / n as f64 / per),
            "",
        );
        let secs = (s1.at - s0.at).as_secs_f64();
        self.report.row(
            "CPU seconds: operator / emulator / kube-apiserver+etcd",
            format!(
                "{:.2} / {:.1} / {:.1} in {secs:.0} s",
                s1.cpu[0] - s0.cpu[0],
                s1.cpu[1] - s0.cpu[1],
                s1.cpu[2] - s0.cpu[2]
            ),
            "",
        );
    }

    async fn bulk(&mut self, n: usize) {
        println!("== {n} objects at once");
        let ns = namespace(&self.client, &format!("n{n}")).await;
        let mut op = self.operator(&ns, false);
        op.wait_ready(self.timeout).await;
        let api: Api<BedrockPrivateLink> = Api::namespaced(self.client.clone(), &ns);
        let tracker = Tracker::start(api.clone()).await;
        let names: Vec<String> = (0..n).map(|i| format!("obj-{i:04}")).collect();

        // Apply N at once.
        let s0 = self.snap(&op).await;
        let (applied, all_ready) = self.create_until_ready(&api, &tracker, &ns, &names).await;
        let s1 = self.snap(&op).await;
        let memory_create = op.memory();
        let create_metrics = s1.after.minus(&s0.after);

        self.report.section(&format!(
            "{n} objects applied at once (driver: {} creates in flight)",
            self.args.apply_concurrency
        ));
        self.report.row(
            "time until all Ready",
            format!(
                "{:.1} s (creates sent in {:.1} s)",
                all_ready.as_secs_f64(),
                applied.as_secs_f64()
            ),
            if n >= 1000 { "<= 60 s" } else { "" },
        );
        self.phase_rows(n, &s0, &s1, 1.0, "");
        self.report.notes.push(format!(
            "{n} objects, create phase, API server requests by verb and resource: {}",
            create_metrics
                .kube_by_resource
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.report.row(
            "RSS peak (VmHWM) / current (VmRSS) when all are Ready",
            memory_create,
            "",
        );

        // Steady state.
        if self.args.steady_seconds > 0 {
            let secs = self.args.steady_seconds;
            println!("   steady state for {secs} s");
            let s0 = self.snap(&op).await;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let s1 = self.snap(&op).await;
            let elapsed = (s1.at - s0.at).as_secs_f64();
            let cpu = s1.cpu[0] - s0.cpu[0];
            let memory = op.memory();
            let resyncs = elapsed / self.args.resync_seconds as f64;
            let still_ready = api
                .list(&ListParams::default())
                .await
                .map(|l| l.items.iter().filter(|o| is_ready(o)).count())
                .unwrap_or(0);
            self.report.section(&format!(
                "{n} objects, steady state {secs} s, resync {} s ({resyncs:.1} resync periods)",
                self.args.resync_seconds
            ));
            self.phase_rows(n, &s0, &s1, resyncs, " per resync");
            // Issue 15: what the drift sweep and the resync cost per minute, for the one VPC.
            let calls: u64 = minus_calls(&s1.calls, &s0.calls).values().sum();
            let minutes = elapsed / 60.0;
            self.report.row(
                "EC2 calls per minute: per VPC (one VPC) / per object",
                format!(
                    "{:.1} / {:.4} ({} VPC polls, drift sweep every 20 s)",
                    calls as f64 / minutes,
                    calls as f64 / minutes / n as f64,
                    s1.after.minus(&s0.after).vpc_polls
                ),
                "does not grow with N",
            );
            self.report.row(
                "operator CPU",
                format!(
                    "{:.2} % of one core ({:.2} ms per object per resync)",
                    cpu / elapsed * 100.0,
                    cpu * 1000.0 / n as f64 / resyncs
                ),
                "near zero",
            );
            self.report.row(
                "RSS peak (VmHWM) / settled (VmRSS)",
                memory,
                if n >= 1000 { "<= 40 MiB" } else { "" },
            );
            self.report.row(
                "still Ready at the end",
                format!("{still_ready} of {n}"),
                "",
            );
        }

        if n >= 1000 || self.args.objects.len() == 1 {
            self.drift(&api).await;
        }

        let op = if self.args.restart {
            self.restart(n, &ns, &api, op).await
        } else {
            op
        };

        // Profiling: what the profiled operator still holds here is everything live with N
        // objects (heaptrack reports it as leaked); a plain operator does the deleting.
        let op = if self.args.operator_prefix.is_some() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &op.pid.to_string()])
                .status();
            op.stop().await;
            let prefix = self.args.operator_prefix.take();
            let mut fresh = self.operator(&ns, false);
            self.args.operator_prefix = prefix;
            fresh.wait_ready(self.timeout).await;
            fresh
        } else {
            op
        };

        // Delete N.
        let s0 = self.snap(&op).await;
        let t0 = Instant::now();
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .expect("delete collection");
        let ok = tracker.all_gone(self.timeout, &names).await;
        assert!(ok, "not every object was deleted");
        let objects_gone = t0.elapsed();
        let s1 = self.snap(&op).await;
        let mut left = tagged_left(&self.ec2, &self.vpc_id).await;
        while left != (0, 0) && t0.elapsed() < self.timeout {
            tokio::time::sleep(Duration::from_millis(200)).await;
            left = tagged_left(&self.ec2, &self.vpc_id).await;
        }
        let all_gone = t0.elapsed();
        self.report.section(&format!("Delete {n}"));
        self.report.row(
            "time until all objects gone / nothing tagged left in EC2",
            format!(
                "{:.1} s / {:.1} s ({} endpoints, {} groups left)",
                objects_gone.as_secs_f64(),
                all_gone.as_secs_f64(),
                left.0,
                left.1
            ),
            "",
        );
        self.phase_rows(n, &s0, &s1, 1.0, " to delete");
        op.stop().await;
    }

    /// Restarts the operator on `n` Ready objects and follows the new process until it has
    /// reconciled every object once (the sum of its bpl_objects gauges reaches `n`): how long
    /// that took, the EC2 calls and API server requests it made (a restart must change nothing),
    /// and its memory. Returns the new process.
    async fn restart(
        &mut self,
        n: usize,
        ns: &str,
        api: &Api<BedrockPrivateLink>,
        old: Operator,
    ) -> Operator {
        println!("   restart with {n} Ready objects");
        old.stop().await;
        let calls = self.emulator.calls().await;
        let s0 = Snap {
            // A new process: its counters start at zero.
            before: Metrics::default(),
            calls,
            after: Metrics::default(),
            at: Instant::now(),
            cpu: [
                0.0,
                cpu_seconds(self.emulator.pid),
                self.rig_pids.iter().map(|p| cpu_seconds(*p)).sum(),
            ],
        };
        let mut op = self.operator(ns, false);
        op.wait_ready(self.timeout).await;
        let listed = s0.at.elapsed();
        let mut seen = 0.0;
        let reconciled = loop {
            if let Ok(r) = op
                .http
                .get(format!("http://127.0.0.1:{}/metrics", op.port))
                .send()
                .await
                && let Ok(text) = r.text().await
            {
                seen = Metrics::parse(&text).objects;
                if seen >= n as f64 {
                    break s0.at.elapsed();
                }
            }
            assert!(
                s0.at.elapsed() < self.timeout,
                "after the restart only {seen} of {n} objects were reconciled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let s1 = self.snap(&op).await;
        let memory_done = op.memory();
        let calls = minus_calls(&s1.calls, &s0.calls);
        let m = s1.after.clone();
        let total = |c: &BTreeMap<String, f64>| c.values().sum::<f64>() + 0.0;
        let list = |c: &BTreeMap<String, f64>| {
            if c.is_empty() {
                return "none".to_string();
            }
            c.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mutations: BTreeMap<String, f64> = as_f64(&calls)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("Describe"))
            .collect();
        let writes: BTreeMap<String, f64> = m
            .kube_by_resource
            .iter()
            .filter(|(k, _)| {
                let verb = k.split(' ').next().unwrap_or("");
                !matches!(verb, "get" | "list" | "watch")
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        // Memory a little later: what the initial list and the first reconciles left behind.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let memory_settled = op.memory();
        let (hwm, ..) = op.memory_mib();
        let still_ready = api
            .list(&ListParams::default())
            .await
            .map(|l| l.items.iter().filter(|o| is_ready(o)).count())
            .unwrap_or(0);

        self.report.section(&format!(
            "Restart with {n} Ready objects (new operator process, same namespace)"
        ));
        self.report.row(
            "time until every object was reconciled once (sum of bpl_objects = N)",
            format!(
                "{:.1} s (/readyz after {:.1} s)",
                reconciled.as_secs_f64(),
                listed.as_secs_f64()
            ),
            if n >= 1000 {
                "keep near 2.0 s (issue 15)"
            } else {
                ""
            },
        );
        self.report.row(
            "EC2 calls until then, emulator",
            format!(
                "{} ({:.3} per object: {})",
                total(&as_f64(&calls)),
                total(&as_f64(&calls)) / n as f64,
                list(&as_f64(&calls))
            ),
            if n >= 1000 {
                "keep near 14 (issue 15)"
            } else {
                ""
            },
        );
        self.report.row(
            "EC2 calls until then, operator bpl_ec2_calls_total",
            format!("{} ({})", total(&m.ec2_calls), list(&m.ec2_calls)),
            "",
        );
        self.report
            .row("emulator and operator agree", agree(&s0, &s1), "");
        self.report.row(
            "EC2 calls that change something (not Describe*)",
            format!("{} ({})", total(&mutations), list(&mutations)),
            "0",
        );
        self.report.row(
            "API server writes (bpl_kube_requests_total, not get/list/watch)",
            format!("{} ({})", total(&writes), list(&writes)),
            "0",
        );
        self.report.row(
            "API server requests, all (bpl_kube_requests_total)",
            format!(
                "{} ({})",
                total(&m.kube_by_resource),
                list(&m.kube_by_resource)
            ),
            "",
        );
        self.report.row(
            "reconciles per object",
            format!("{:.2}", m.reconciles / n as f64),
            "",
        );
        self.report.row(
            "CPU seconds: operator / emulator / kube-apiserver+etcd",
            format!(
                "{:.2} / {:.1} / {:.1} in {:.0} s",
                s1.cpu[0],
                s1.cpu[1] - s0.cpu[1],
                s1.cpu[2] - s0.cpu[2],
                (s1.at - s0.at).as_secs_f64()
            ),
            "",
        );
        self.report.row(
            "RSS peak (VmHWM) / current (VmRSS) when every object was reconciled",
            memory_done,
            "",
        );
        self.report.row(
            "RSS peak (VmHWM) / current (VmRSS) 5 s later",
            memory_settled,
            if n >= 1000 { "peak <= 40 MiB" } else { "" },
        );
        if n >= 1000 && hwm > 40.0 {
            println!("   restart RSS peak {hwm:.1} MiB is above the 40 MiB target");
        }
        self.report.row(
            "still Ready after the restart",
            format!("{still_ready} of {n}"),
            &format!("{n} of {n}"),
        );
        op
    }

    /// Deletes the first object's endpoint out of band (as a person with the console would) and
    /// follows the object: how long until the operator noticed (the object left Ready, or its
    /// status names a new endpoint) and until it is Ready again on a replacement.
    async fn drift(&mut self, api: &Api<BedrockPrivateLink>) {
        let name = "obj-0000";
        let endpoint_of = |o: &BedrockPrivateLink| {
            o.status
                .as_ref()
                .and_then(|s| s.endpoints.first())
                .map(|e| e.vpc_endpoint_id.clone())
        };
        let Some(old) = api.get(name).await.ok().as_ref().and_then(endpoint_of) else {
            self.report.notes.push(format!(
                "drift: {name} has no endpoint in its status; skipped"
            ));
            return;
        };
        println!("   drift: deleting {old} ({name}) out of band");
        self.ec2
            .delete_vpc_endpoints()
            .vpc_endpoint_ids(&old)
            .send()
            .await
            .expect("delete endpoint out of band");
        let t0 = Instant::now();
        let (mut noticed, mut restored) = (None, None);
        while restored.is_none() && t0.elapsed() < self.timeout {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(o) = api.get(name).await else { continue };
            let now = endpoint_of(&o);
            if noticed.is_none() && (!is_ready(&o) || now.as_deref() != Some(old.as_str())) {
                noticed = Some(t0.elapsed());
            }
            if is_ready(&o) && now.as_deref().is_some_and(|e| e != old) {
                restored = Some(t0.elapsed());
            }
        }
        let secs = |d: Option<Duration>| {
            d.map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "never".into())
        };
        self.report.row(
            "endpoint deleted out of band: noticed / Ready on a replacement after",
            format!("{} / {}", secs(noticed), secs(restored)),
            "<= 30 s / <= 30 s + AWS's time",
        );
    }

    /// Issue 15: N objects at once while every new endpoint stays `pending` for
    /// --pending-seconds. Waiting must cost per VPC, not per object: the EC2 calls per object
    /// from create to Ready, and how soon after its endpoint became available each object was
    /// seen Ready (the emulator says when each endpoint's pending ended).
    async fn pending(&mut self) {
        let n = self.args.pending_objects;
        let secs = self.args.pending_seconds;
        println!("== {n} objects at once, endpoints pending for {secs} s");
        self.emulator
            .configure(json!({"pending_seconds": secs}))
            .await;
        let ns = namespace(&self.client, "pending").await;
        let mut op = self.operator(&ns, false);
        op.wait_ready(self.timeout).await;
        let api: Api<BedrockPrivateLink> = Api::namespaced(self.client.clone(), &ns);
        let tracker = Tracker::start(api.clone()).await;
        let names: Vec<String> = (0..n).map(|i| format!("pend-{i:03}")).collect();
        let s0 = self.snap(&op).await;
        let (wall0, inst0) = (std::time::SystemTime::now(), Instant::now());
        let (applied, all_ready) = self.create_until_ready(&api, &tracker, &ns, &names).await;
        let s1 = self.snap(&op).await;
        self.emulator.configure(json!({"pending_seconds": 0})).await;
        // Each object's endpoint, and when the emulator ended its pending.
        let until: HashMap<String, f64> = self
            .emulator
            .endpoints()
            .await
            .iter()
            .filter_map(|e| Some((e["id"].as_str()?.to_string(), e["pending_until"].as_f64()?)))
            .collect();
        let unix = |i: Instant| {
            (wall0 + (i - inst0))
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        };
        let objects = api.list(&ListParams::default()).await.expect("list");
        let mut lags: Vec<f64> = {
            let seen = tracker.seen.lock().unwrap();
            objects
                .items
                .iter()
                .filter_map(|o| {
                    let ep = o
                        .status
                        .as_ref()?
                        .endpoints
                        .first()?
                        .vpc_endpoint_id
                        .clone();
                    Some(unix(*seen.ready_at.get(&o.name_any())?) - until.get(&ep)?)
                })
                .collect()
        };
        lags.sort_by(f64::total_cmp);
        self.report.section(&format!(
            "{n} objects at once, every endpoint pending {secs} s (real AWS: a minute or more)"
        ));
        self.report.row(
            "time until all Ready",
            format!(
                "{:.1} s (creates sent in {:.1} s)",
                all_ready.as_secs_f64(),
                applied.as_secs_f64()
            ),
            "",
        );
        self.report.row(
            "Ready after the endpoint became available: p50 / max",
            format!(
                "{:.2} / {:.2} s ({} of {n} objects matched)",
                percentile(&lags, 50.0),
                lags.last().copied().unwrap_or(f64::NAN),
                lags.len()
            ),
            "max <= 3 s",
        );
        let calls = minus_calls(&s1.calls, &s0.calls);
        let total: u64 = calls.values().sum();
        self.report.row(
            "EC2 calls per object, create to Ready, emulator",
            format!(
                "{:.2} in total: {}",
                total as f64 / n as f64,
                per_object(&as_f64(&calls), n)
            ),
            "<= 7",
        );
        let m = s1.after.minus(&s0.after);
        self.report.row(
            "VPC polls (bpl_vpc_polls_total) / reconciles per object",
            format!("{} / {:.2}", m.vpc_polls, m.reconciles / n as f64),
            "",
        );
        self.delete_all(&api, &tracker, &names).await;
        op.stop().await;
    }

    /// Deletes every object of `api`'s namespace and reports whether all went and what tagged
    /// resources were left in EC2.
    async fn delete_all(
        &mut self,
        api: &Api<BedrockPrivateLink>,
        tracker: &Tracker,
        names: &[String],
    ) {
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .expect("delete collection");
        let ok = tracker.all_gone(self.timeout, names).await;
        let t = Instant::now();
        let mut left = tagged_left(&self.ec2, &self.vpc_id).await;
        while left != (0, 0) && t.elapsed() < self.timeout {
            tokio::time::sleep(Duration::from_millis(500)).await;
            left = tagged_left(&self.ec2, &self.vpc_id).await;
        }
        self.report.row(
            "delete: all gone / left in EC2",
            format!("{ok} / {} endpoints, {} groups", left.0, left.1),
            "",
        );
    }

    async fn limiter(&mut self) {
        let n = self.args.limiter_objects;
        println!("== {n} objects at once, EC2 limiter on");
        let ns = namespace(&self.client, "limiter").await;
        let mut op = self.operator(&ns, true);
        op.wait_ready(self.timeout).await;
        let api: Api<BedrockPrivateLink> = Api::namespaced(self.client.clone(), &ns);
        let tracker = Tracker::start(api.clone()).await;
        let names: Vec<String> = (0..n).map(|i| format!("lim-{i:03}")).collect();
        let calls0 = self.emulator.calls().await;
        let (_, took) = self.create_until_ready(&api, &tracker, &ns, &names).await;
        let m = op.metrics().await;
        let calls = minus_calls(&self.emulator.calls().await, &calls0);
        let creates = calls.get("CreateVpcEndpoint").copied().unwrap_or(0) as f64;
        // CreateVpcEndpoint bucket: burst 4, refill 0.3/s.
        let floor = ((creates - 4.0).max(0.0) / 0.3).max(0.0);
        self.report.section(&format!("{n} objects at once, EC2 limiter ON (AWS's buckets; CreateVpcEndpoint burst 4, refill 0.3/s)"));
        self.report.row(
            "time until all Ready",
            format!(
                "{:.1} s (bucket floor for {creates} creates: {floor:.1} s)",
                took.as_secs_f64()
            ),
            "close to the bucket rate",
        );
        self.report.row(
            "100 objects on real AWS (CreateVpcEndpoint bucket, computed)",
            format!("{:.0} s at least ((100 - 4) / 0.3)", 96.0 / 0.3),
            "",
        );
        self.report.row(
            "throttling errors (bpl_ec2_throttles_total)",
            format!("{}", m.ec2_throttles),
            "0",
        );
        self.report
            .row("EC2 calls per object", per_object(&as_f64(&calls), n), "");
        self.delete_all(&api, &tracker, &names).await;
        op.stop().await;
    }
}

/// A grant admitting `ns` to the seeded role of `account` and its VPC.
async fn account_grant(client: &Client, seed: &Value, ns: &str, account: &str, vpc_id: &str) {
    let role = seed["roles"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["account"] == account))
        .unwrap_or_else(|| panic!("the emulator seeds a role in {account}"));
    let name = format!("{ns}-{account}");
    let grant: bpl::api::BedrockPrivateLinkGrant = serde_json::from_value(json!({
        "apiVersion": "bedrock.privatelink.io/v1alpha1",
        "kind": "BedrockPrivateLinkGrant",
        "metadata": {"name": name},
        "spec": {
            "namespaces": {"names": [ns]},
            "account": {"roleArn": role["arn"], "externalId": role["external_id"]},
            "vpcs": {"ids": [vpc_id]},
            "maxEndpointsPerNamespace": 100000,
        },
    }))
    .expect("valid grant");
    Api::<bpl::api::BedrockPrivateLinkGrant>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("bpl-bench").force(),
            &Patch::Apply(&grant),
        )
        .await
        .expect("apply an account grant");
}

impl Bench {
    /// Per-(account, region) throttling: N objects at once in account B empty B's
    /// CreateVpcEndpoint bucket for (N - 4) / 0.3 s; objects created in account C meanwhile
    /// are made from C's own bucket, not queued behind B's.
    async fn accounts(&mut self) {
        let n = self.args.accounts_objects;
        let late = 3;
        println!("== {n} objects in account B, then {late} in account C, EC2 limiter on");
        let seed = self.emulator.view("seed").await;
        let (b, c) = ("111111111111", "222222222222");
        let region = "us-east-1";
        let (b_vpc, b_subnets) = seeded_vpc(&seed, b, region);
        let (c_vpc, c_subnets) = seeded_vpc(&seed, c, region);
        let ns_b = namespace(&self.client, "acct-b").await;
        let ns_c = namespace(&self.client, "acct-c").await;
        account_grant(&self.client, &seed, &ns_b, b, &b_vpc).await;
        account_grant(&self.client, &seed, &ns_c, c, &c_vpc).await;
        let extra = ["--sts-endpoint-url".to_string(), self.emulator.url.clone()];
        let mut op = self.operator_with(&format!("{ns_b},{ns_c}"), true, &extra);
        op.wait_ready(self.timeout).await;
        let (api_b, api_c): (Api<BedrockPrivateLink>, Api<BedrockPrivateLink>) = (
            Api::namespaced(self.client.clone(), &ns_b),
            Api::namespaced(self.client.clone(), &ns_c),
        );
        let (tracker_b, tracker_c) = (
            Tracker::start(api_b.clone()).await,
            Tracker::start(api_c.clone()).await,
        );
        let create = |api: Api<BedrockPrivateLink>,
                      ns: String,
                      name: String,
                      account: &str,
                      vpc: &str,
                      subnets: &[String]| {
            let o: BedrockPrivateLink = serde_json::from_value(json!({
                "apiVersion": "bedrock.privatelink.io/v1alpha1",
                "kind": "BedrockPrivateLink",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"account": account, "vpcId": vpc, "subnets": {"ids": subnets},
                         "privateDns": false},
            }))
            .expect("valid object");
            async move {
                api.create(&PostParams::default(), &o)
                    .await
                    .expect("create object");
            }
        };
        let creates_in = |calls: &Value, account: &str| {
            calls["calls"][format!("{account}/{region}")]["CreateVpcEndpoint"]
                .as_u64()
                .unwrap_or(0)
        };
        let names_b: Vec<String> = (0..n).map(|i| format!("b-{i:03}")).collect();
        let names_c: Vec<String> = (0..late).map(|i| format!("c-{i:03}")).collect();
        let t0 = Instant::now();
        futures::future::join_all(names_b.iter().map(|name| {
            create(
                api_b.clone(),
                ns_b.clone(),
                name.clone(),
                b,
                &b_vpc,
                &b_subnets,
            )
        }))
        .await;
        // B's burst spent: its next create waits for the bucket to refill.
        while creates_in(&self.emulator.view("calls/by-scope").await, b) < 4
            && t0.elapsed() < self.timeout
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t1 = Instant::now();
        let b_at_t1 = creates_in(&self.emulator.view("calls/by-scope").await, b);
        futures::future::join_all(names_c.iter().map(|name| {
            create(
                api_c.clone(),
                ns_c.clone(),
                name.clone(),
                c,
                &c_vpc,
                &c_subnets,
            )
        }))
        .await;
        let took_c = tracker_c.all_ready(self.timeout, &names_c, t1).await;
        let b_when_c_ready = creates_in(&self.emulator.view("calls/by-scope").await, b);
        let took_b = tracker_b.all_ready(self.timeout, &names_b, t0).await;
        assert!(
            took_b.is_some() && took_c.is_some(),
            "every object of both accounts became Ready"
        );
        let by_scope = self.emulator.view("calls/by-scope").await;
        let (creates_b, creates_c) = (creates_in(&by_scope, b), creates_in(&by_scope, c));
        let m = op.metrics().await;
        self.report.section(&format!(
            "Throttling per (account, region): {n} objects at once in account B, then {late} in account C (one operator, EC2 limiter ON)"
        ));
        let secs = |d: Option<Duration>| {
            d.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
        };
        self.report.row(
            &format!("account B: all {n} Ready (CreateVpcEndpoint calls: {creates_b})"),
            format!(
                "{} (B's bucket floor: {:.1} s)",
                secs(took_b),
                (creates_b as f64 - 4.0).max(0.0) / 0.3
            ),
            "close to B's bucket rate",
        );
        // Had C shared B's bucket, its creates would queue behind B's remaining ones.
        let queued = (n as f64 - b_at_t1 as f64 + late as f64 - 1.0).max(0.0) / 0.3;
        self.report.row(
            &format!("account C: {late} created after B's burst was spent, all Ready (CreateVpcEndpoint calls: {creates_c})"),
            format!(
                "{} (behind B's queue in one shared bucket: about {queued:.0} s)",
                secs(took_c)
            ),
            "seconds: C's own bucket",
        );
        self.report.row(
            "account B's creates still queued when C was Ready",
            format!("{}", (n as u64).saturating_sub(b_when_c_ready)),
            "> 0 (C did not wait for B)",
        );
        self.report.row(
            "throttling errors (bpl_ec2_throttles_total)",
            format!("{}", m.ec2_throttles),
            "0",
        );
        for (api, tracker, names) in [
            (&api_b, &tracker_b, &names_b),
            (&api_c, &tracker_c, &names_c),
        ] {
            api.delete_collection(&DeleteParams::default(), &ListParams::default())
                .await
                .expect("delete collection");
            let gone = tracker.all_gone(self.timeout, names).await;
            assert!(gone, "every object deleted");
        }
        let left = self
            .emulator
            .endpoints()
            .await
            .into_iter()
            .filter(|e| {
                (e["vpc_id"] == b_vpc.as_str() || e["vpc_id"] == c_vpc.as_str())
                    && e["state"] != "deleted"
                    && e["state"] != "deleting"
            })
            .count();
        self.report
            .row("delete: endpoints left in B and C", format!("{left}"), "0");
        op.stop().await;
    }
}

fn main() {
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let started = Instant::now();
    let timeout = Duration::from_secs(args.phase_timeout_seconds);
    let env = rig_env();
    let python = args.python.clone().unwrap_or_else(|| {
        format!(
            "{}/.cache/bpl-rig/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let client = kube_client(&env).await;
    install_crd(&client, timeout).await;
    let emulator = Emulator::start(&python, Duration::from_secs(60)).await;
    let ec2 = emulator.ec2();
    let (vpc_id, subnets) = network(&ec2).await;
    let machine = machine();
    let invocation = format!(
        "cargo bench --bench operator -- {}",
        std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("bench: {invocation}");
    for (k, v) in &machine {
        println!("  {k}: {v}");
    }
    let mut b = Bench {
        args: args.clone(),
        env,
        client,
        emulator,
        ec2,
        vpc_id,
        subnets,
        timeout,
        report: Report {
            rows: Vec::new(),
            notes: Vec::new(),
        },
        operator_lines: Vec::new(),
        rig_pids: ["kube-apiserver", "etcd"]
            .iter()
            .filter_map(|n| {
                std::fs::read_to_string(rig_dir().join("pids").join(format!("{n}.pid")))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
            .collect(),
    };
    if args.latency_runs > 0 {
        b.latency().await;
    }
    for &n in args.objects.iter().filter(|n| **n > 0) {
        b.bulk(n).await;
    }
    if args.pending_objects > 0 {
        b.pending().await;
    }
    if args.limiter_objects > 0 {
        b.limiter().await;
    }
    if args.accounts_objects > 0 {
        b.accounts().await;
    }

    let mut out = String::new();
    out.push_str(&format!("Command: `{}`\n\n", invocation.trim()));
    match &args.operator_bin {
        Some(bin) => out.push_str(&format!(
            "Operator `{}` (--operator-bin; one process per scenario, `<ns>` its namespace; driver built {}):\n",
            bin.display(),
            if cfg!(debug_assertions) {
                "without optimisation"
            } else {
                "optimised"
            }
        )),
        None => out.push_str(&format!(
            "Operator ({} build; one process per scenario, `<ns>` its namespace):\n",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        )),
    }
    for l in &b.operator_lines {
        out.push_str(&format!("- `{l}`\n"));
    }
    out.push_str(
        "\nEmulator: `python tests/emulator/harness.py --host 127.0.0.1 --port 0 --pending-seconds 0 --deleting-seconds 0 --deleted-seconds 0 --quiet` (private to the run); API server: the rig's kube-apiserver v1.36.\n\n",
    );
    out.push_str("Machine: ");
    out.push_str(
        &machine
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    out.push_str("\n\n");
    out.push_str(&b.report.markdown());
    if !b.report.notes.is_empty() {
        out.push('\n');
        for n in &b.report.notes {
            out.push_str(&format!("- {n}\n"));
        }
    }
    out.push_str(&format!(
        "\nTotal run time {:.0} s.\n",
        started.elapsed().as_secs_f64()
    ));
    println!("\n{out}");
    let path = args
        .report
        .clone()
        .unwrap_or_else(|| out_dir().join("report.md"));
    write_report(&path, &out);
    drop(b);
}

fn write_report(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("could not write {}: {e}", path.display());
    } else {
        println!("report written to {}", path.display());
    }
}
