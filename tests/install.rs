//! "Install like users expect": the Helm chart on the rig's real API server, the operator run out
//! of cluster with the chart's ServiceAccount token and the chart's arguments (so the chart's RBAC
//! is what it runs with), leader election and failover, upgrade/uninstall, the IAM policy against
//! the EC2 calls in the code, graceful shutdown and the HTTP endpoints.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const CHART: &str = "charts/bedrock-privatelink-operator";
/// Short lease for the failover test (the chart's default is 15 s).
const LEASE_SECONDS: u64 = 4;

fn chart() -> String {
    repo_root().join(CHART).to_string_lossy().into_owned()
}

fn run(cmd: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", cmd.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn helm(rig: &Rig, args: &[&str]) -> (bool, String, String) {
    run(
        &rig.bin("helm"),
        args,
        &[("KUBECONFIG", rig.env["KUBECONFIG"].as_str())],
    )
}

fn kubectl_json(rig: &Rig, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (ok, out, err) = rig.kubectl(&all);
    assert!(ok, "kubectl {args:?}: {err}");
    serde_json::from_str(&out).expect("kubectl json")
}

/// A Helm release of the chart in a namespace of its own; uninstalled on drop.
struct Release {
    name: String,
    ns: String,
    fullname: String,
    sa: String,
    lease_name: String,
    installed: bool,
    kubeconfig: Option<PathBuf>,
}

impl Release {
    /// `helm install` into a fresh namespace, reconciling `watch_ns`, with the EC2 endpoint of
    /// the rig's emulator and `extra` --set values.
    fn install(rig: &Rig, watch_ns: &str, extra: &[&str]) -> Release {
        let id = short_id();
        let name = format!("bpl-{id}");
        let ns = format!("bpl-system-{id}");
        let endpoint = &rig.env["AWS_ENDPOINT_URL_EC2"];
        assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
        let mut sets = vec![
            "aws.region=us-east-1".to_string(),
            format!("aws.ec2EndpointUrl={endpoint}"),
            "aws.rateLimit=false".to_string(),
            format!("watchNamespaces={{{watch_ns}}}"),
            "logLevel=info\\,bpl=debug".to_string(),
        ];
        sets.extend(extra.iter().map(|s| s.to_string()));
        let mut args = vec![
            "install".to_string(),
            name.clone(),
            chart(),
            "-n".into(),
            ns.clone(),
            "--create-namespace".into(),
        ];
        for s in &sets {
            args.push("--set".into());
            args.push(s.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = helm(rig, &args);
        assert!(ok, "helm install: {out}\n{err}");
        let fullname = format!("{name}-bedrock-privatelink-operator");
        Release {
            name,
            ns,
            sa: fullname.clone(),
            fullname,
            lease_name: "bedrock-privatelink-operator".into(),
            installed: true,
            kubeconfig: None,
        }
    }

    fn uninstall(&mut self, rig: &Rig) {
        let (ok, out, err) = helm(rig, &["uninstall", &self.name, "-n", &self.ns, "--wait"]);
        assert!(ok, "helm uninstall: {out}\n{err}");
        self.installed = false;
    }

    /// The container args of the chart's Deployment as the API server stores them.
    fn deployment_args(&self, rig: &Rig) -> Vec<String> {
        let d = kubectl_json(rig, &["get", "deployment", &self.fullname, "-n", &self.ns]);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        let env = c["env"].as_array().cloned().unwrap_or_default();
        assert!(
            env.iter().any(|e| e["name"] == "POD_NAMESPACE"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"),
            "POD_NAMESPACE from the downward API: {env:?}"
        );
        assert!(
            env.iter()
                .any(|e| e["name"] == "MALLOC_ARENA_MAX" && e["value"] == "2"),
            "glibc limited to two malloc arenas: {env:?}"
        );
        serde_json::from_value(c["args"].clone()).expect("args")
    }

    /// A kubeconfig that authenticates as the chart's ServiceAccount (TokenRequest), with the
    /// rig's server and CA.
    fn sa_kubeconfig(&mut self, rig: &Rig) -> PathBuf {
        if let Some(p) = &self.kubeconfig {
            return p.clone();
        }
        let (ok, token, err) =
            rig.kubectl(&["create", "token", &self.sa, "-n", &self.ns, "--duration=1h"]);
        assert!(ok, "kubectl create token: {err}");
        let admin: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&rig.env["KUBECONFIG"]).unwrap())
                .unwrap();
        let cluster = &admin["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().unwrap();
        assert!(server.starts_with("https://127.0.0.1:"), "{server}");
        let ca = cluster["certificate-authority-data"].as_str().unwrap();
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "rig", "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": self.sa, "user": {"token": token.trim()}}],
            "contexts": [{"name": "sa", "context": {"cluster": "rig", "user": self.sa, "namespace": self.ns}}],
            "current-context": "sa",
        });
        let dir = repo_root().join("target").join("test-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("kubeconfig-{}", self.name));
        std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
        self.kubeconfig = Some(path.clone());
        path
    }

    fn subject(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.ns, self.sa)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed {
            let _ = std::process::Command::new(
                PathBuf::from(&rig_env()["KUBEBUILDER_ASSETS"]).join("helm"),
            )
            .args(["uninstall", &self.name, "-n", &self.ns])
            .env("KUBECONFIG", &rig_env()["KUBECONFIG"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        }
    }
}

/// The operator binary as the chart's pod would run it: the Deployment's args (with
/// `$(POD_NAMESPACE)` expanded as the kubelet would, and the HTTP port on loopback), the
/// Deployment's env, and the ServiceAccount's token.
struct ChartOperator {
    child: Option<tokio::process::Child>,
    port: u16,
    log: PathBuf,
}

impl ChartOperator {
    fn start(rel: &mut Release, rig: &Rig, pod_name: &str) -> ChartOperator {
        let kubeconfig = rel.sa_kubeconfig(rig);
        let port = free_port();
        let args: Vec<String> = rel
            .deployment_args(rig)
            .into_iter()
            .map(|a| {
                if a.starts_with("--http-addr=") {
                    format!("--http-addr=127.0.0.1:{port}")
                } else {
                    a.replace("$(POD_NAMESPACE)", &rel.ns)
                }
            })
            .collect();
        for a in &args {
            assert!(
                !a.contains("://") || a.contains("://127.0.0.1:"),
                "loopback only: {a}"
            );
        }
        let logs = repo_root().join("target").join("test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("operator-{}-{pod_name}.log", rel.name));
        let file = std::fs::File::create(&log).unwrap();
        let child =
            tokio::process::Command::new(env!("CARGO_BIN_EXE_bedrock-privatelink-operator"))
                .args(&args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("KUBECONFIG", &kubeconfig)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("POD_NAMESPACE", &rel.ns)
                .env("POD_NAME", pod_name)
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .kill_on_drop(true)
                .spawn()
                .expect("start operator");
        ChartOperator {
            child: Some(child),
            port,
            log,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn leads(&self) -> bool {
        self.logs().contains("acquired the lease")
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.unwrap_or_default()))
    }

    async fn wait_status(&self, path: &str, want: u16) {
        eventually(
            Duration::from_secs(30),
            &format!("{path} {want}"),
            || async { self.get(path).await.filter(|(s, _)| *s == want).map(|_| ()) },
        )
        .await
    }

    async fn metrics(&self) -> String {
        self.get("/metrics").await.expect("GET /metrics").1
    }

    /// SIGKILL, as when a node dies.
    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("kill -9");
        }
    }

    /// SIGTERM; the exit status and how long it took.
    async fn terminate(&mut self) -> (Option<std::process::ExitStatus>, Duration) {
        let mut c = self.child.take().expect("running");
        let pid = c.id().expect("pid");
        let started = Instant::now();
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let status = tokio::time::timeout(Duration::from_secs(20), c.wait())
            .await
            .ok()
            .and_then(Result::ok);
        (status, started.elapsed())
    }
}

fn assert_no_forbidden(op: &ChartOperator) {
    let logs = op.logs();
    assert!(
        !logs.to_ascii_lowercase().contains("forbidden"),
        "the chart's RBAC was not enough:\n{logs}"
    );
}

async fn lease_holder(rig: &Rig, rel: &Release) -> Option<String> {
    let (ok, out, _) = rig.kubectl(&["get", "lease", &rel.lease_name, "-n", &rel.ns, "-o", "json"]);
    if !ok {
        return None;
    }
    let v: Value = serde_json::from_str(&out).ok()?;
    v["spec"]["holderIdentity"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn check_rbac_rules(kind: &str, obj: &Value) {
    let rules = obj["rules"].as_array().expect("rules");
    assert!(!rules.is_empty(), "{kind} has rules");
    for rule in rules {
        assert!(
            rule.get("nonResourceURLs").is_none(),
            "{kind}: no nonResourceURLs: {rule}"
        );
        for field in ["verbs", "resources", "apiGroups"] {
            for v in rule[field].as_array().expect(field) {
                let v = v.as_str().unwrap();
                assert!(!v.contains('*'), "{kind}: wildcard in {field}: {rule}");
                assert!(
                    !v.starts_with("secrets"),
                    "{kind}: no access to secrets: {rule}"
                );
            }
        }
        for verb in rule["verbs"].as_array().unwrap() {
            assert!(
                !["escalate", "bind", "impersonate"].contains(&verb.as_str().unwrap()),
                "{kind}: no privilege escalation verbs: {rule}"
            );
        }
    }
}

fn can_i(rig: &Rig, subject: &str, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    all.extend(["--as", subject]);
    let (_, out, err) = rig.kubectl(&all);
    let answer = out.trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "can-i {args:?}: {out} {err}"
    );
    answer
}

// ---------------------------------------------------------------------------------------------
// 1. lint, template + server-side dry run, schema errors name the field.

#[tokio::test(flavor = "multi_thread")]
async fn chart_lints_renders_and_applies_server_side_and_schema_names_bad_fields() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let (ok, out, err) = helm(&rig, &["lint", &chart(), "--strict"]);
    assert!(ok, "helm lint --strict: {out}\n{err}");
    assert!(out.contains("0 chart(s) failed"), "{out}");

    let ns = rig.namespace("inst-dry").await;
    let variants: [&[&str]; 2] = [
        &["aws.region=us-east-1"],
        &[
            "aws.region=eu-west-1",
            "replicaCount=2",
            "watchNamespaces={team-a,team-b}",
            "aws.defaultVpcId=vpc-0123456789abcdef0",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111122223333:role/bpl",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
            "networkPolicy.egress[0].ports[0].port=443",
            "extraArgs={--lease-seconds=30}",
            "image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ],
    ];
    for sets in variants {
        let mut args = vec!["template", "dry", CHART, "-n", &ns, "--include-crds"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let (ok, manifest, err) = helm(&rig, &args);
        assert!(ok, "helm template {sets:?}: {err}");
        for kind in [
            "kind: CustomResourceDefinition",
            "kind: ServiceAccount",
            "kind: ClusterRole\n",
            "kind: ClusterRoleBinding",
            "kind: Role\n",
            "kind: RoleBinding",
            "kind: Deployment",
            "kind: Service\n",
            "kind: NetworkPolicy",
        ] {
            assert!(manifest.contains(kind), "{sets:?}: no {kind}");
        }
        if sets.contains(&"replicaCount=2") {
            assert!(manifest.contains("kind: PodDisruptionBudget"));
        }
        let (ok, out, err) = rig.kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=bpl-install-test",
                "--dry-run=server",
                "-n",
                &ns,
                "-f",
                "-",
            ],
            &manifest,
        );
        assert!(ok, "server-side dry run {sets:?}:\n{out}\n{err}");
        assert!(out.contains("deployment.apps/dry-bedrock-privatelink-operator serverside-applied (server dry run)"), "{out}");
    }

    // values.schema.json refuses bad values before anything is applied, naming the field.
    let bad: [(&[&str], &str); 5] = [
        (&["logFormat=xml"], "logFormat"),
        (
            &["replicaCount=2", "leaderElection.enabled=false"],
            "leaderElection/enabled",
        ),
        (&["aws.region=US East"], "aws/region"),
        (&["resyncSecond=60"], "resyncSecond"),
        (&["resyncSeconds=1"], "resyncSeconds"),
    ];
    for (sets, field) in bad {
        let mut args = vec!["template", "bad", CHART, "-n", &ns];
        for s in sets {
            args.extend(["--set", s]);
        }
        let (ok, _, err) = helm(&rig, &args);
        assert!(!ok, "{sets:?} must be rejected");
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{sets:?}: {err}"
        );
        assert!(
            err.contains(field),
            "{sets:?}: message names {field}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The chart carries the CRD of crds/, byte for byte.

#[test]
fn chart_crd_is_the_repository_crd() {
    let root = repo_root();
    for file in ["bedrockprivatelink.yaml", "bedrockprivatelinkgrant.yaml"] {
        let repo = std::fs::read(root.join("crds").join(file)).expect("crds/");
        let chart = std::fs::read(root.join(CHART).join("crds").join(file))
            .unwrap_or_else(|e| panic!("the chart's crds/{file}: {e}"));
        assert!(
            repo == chart,
            "{CHART}/crds/{file} differs from crds/{file}: cp crds/{file} {CHART}/crds/"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3 (+7, +8). helm install, then the operator with the chart's ServiceAccount and args does the
// whole job; the chart's RBAC is minimal.

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_rbac_suffices_for_the_full_lifecycle() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let wl = rig.namespace("inst-wl").await;
    let net = rig.network(&wl).await;
    let mut rel = Release::install(&rig, &wl, &["extraArgs={--pending-requeue-ms=300}"]);

    // What Helm created, and nothing more than the job needs.
    let cr = kubectl_json(&rig, &["get", "clusterrole", &rel.fullname]);
    check_rbac_rules("ClusterRole", &cr);
    let role = kubectl_json(
        &rig,
        &[
            "get",
            "role",
            &format!("{}-leader-election", rel.fullname),
            "-n",
            &rel.ns,
        ],
    );
    check_rbac_rules("Role", &role);
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(rule["apiGroups"], json!(["coordination.k8s.io"]), "{rule}");
        assert_eq!(rule["resources"], json!(["leases"]), "{rule}");
    }
    let subject = rel.subject();
    let lease = format!("leases/{}", rel.lease_name);
    for (args, want) in [
        (vec!["get", "secrets", "-n", &wl], "no"),
        (vec!["get", "secrets", "-n", &rel.ns], "no"),
        (vec!["list", "secrets", "--all-namespaces"], "no"),
        (vec!["*", "*"], "no"),
        (vec!["create", "pods", "-n", &wl], "no"),
        (vec!["delete", "bedrockprivatelinks", "-n", &wl], "no"),
        (vec!["patch", lease.as_str(), "-n", &rel.ns], "yes"),
        (vec!["update", lease.as_str(), "-n", &rel.ns], "yes"),
        (vec!["create", "leases", "-n", &rel.ns], "yes"),
        (vec!["patch", "leases/other", "-n", &rel.ns], "no"),
        (vec!["create", "leases", "-n", &wl], "no"),
        (vec!["watch", "bedrockprivatelinks", "-n", &wl], "yes"),
        (
            vec![
                "patch",
                "bedrockprivatelinks",
                "--subresource=status",
                "-n",
                &wl,
            ],
            "yes",
        ),
        (vec!["create", "configmaps", "-n", &wl], "yes"),
        (vec!["list", "nodes"], "yes"),
    ] {
        assert_eq!(can_i(&rig, &subject, &args), want, "can-i {args:?}");
    }

    // The operator as the pod would run it.
    let started = Instant::now();
    let pod = format!("{}-pod-a", rel.fullname);
    let mut op = ChartOperator::start(&mut rel, &rig, &pod);
    op.wait_status("/healthz", 200).await;
    op.wait_status("/readyz", 200).await;
    eprintln!("operator ready (lease held) after {:?}", started.elapsed());
    assert_eq!(
        lease_holder(&rig, &rel).await.as_deref(),
        Some(pod.as_str())
    );

    let obj = create_bpl(
        &rig,
        &wl,
        "chart",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}}),
    )
    .await;
    let uid = obj.metadata.uid.clone().unwrap();
    let t = Instant::now();
    let ready = wait_ready(&rig, &wl, "chart", "True", Some("Ready"), READY_TIMEOUT).await;
    eprintln!("Ready after {:?}", t.elapsed());
    let id = ready.status.as_ref().unwrap().endpoints[0]
        .vpc_endpoint_id
        .clone();
    assert_eq!(rig.owned_endpoints(&uid).await.len(), 1);
    assert_eq!(rig.owned_groups(&uid).await.len(), 1);

    // 8. /metrics after a reconcile.
    let metrics = op.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "bpl_ec2_calls_total",
            &["operation=\"CreateVpcEndpoint\"", "outcome=\"ok\""]
        ) == 1.0,
        "{metrics}"
    );
    assert!(
        metric_sum(
            &metrics,
            "bpl_ec2_calls_total",
            &["operation=\"DescribeVpcEndpoints\""]
        ) >= 1.0
    );
    let (status, body) = op.get("/healthz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));

    // Update in place.
    let api = rig.bpls(&wl);
    let updated = api
        .patch(
            "chart",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"policy": {"preset": "FullAccess"}}})),
        )
        .await
        .unwrap();
    let generation = updated.metadata.generation;
    eventually(READY_TIMEOUT, "FullAccess applied", || {
        let api = api.clone();
        async move {
            let o = api.get("chart").await.ok()?;
            let ready = condition(&o, "Ready")?;
            (o.status.as_ref()?.observed_generation == generation && ready.status == "True")
                .then_some(())
        }
    })
    .await;
    let endpoints = rig.owned_endpoints(&uid).await;
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].vpc_endpoint_id(), Some(id.as_str()));
    let policy: Value = serde_json::from_str(endpoints[0].policy_document().unwrap()).unwrap();
    let spec: bpl::api::PolicySpec =
        serde_json::from_value(json!({"preset": "FullAccess"})).unwrap();
    let want = bpl::policy::render(Some(&spec), "us-east-1").unwrap();
    assert!(
        bpl::policy::equivalent(&policy, &want),
        "FullAccess in EC2: {policy}"
    );

    // Delete.
    delete_bpl(&rig, &wl, "chart").await;
    wait_gone(&rig, &wl, "chart", READY_TIMEOUT).await;
    assert!(rig.owned_endpoints(&uid).await.is_empty(), "endpoint left");
    assert!(rig.owned_groups(&uid).await.is_empty(), "group left");
    assert_no_forbidden(&op);

    // 7. SIGTERM: a clean exit, the Lease released for the next pod.
    let (status, took) = op.terminate().await;
    let status = status.expect("exited after SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", op.logs());
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    eprintln!("SIGTERM -> exit 0 in {took:?}");
    assert_eq!(
        lease_holder(&rig, &rel).await,
        None,
        "the Lease is released on shutdown"
    );
    assert!(op.logs().contains("released the lease"), "{}", op.logs());
    rel.uninstall(&rig);
}

// ---------------------------------------------------------------------------------------------
// 4. Leader election: one of two replicas acts; the other takes over when it dies.

#[tokio::test(flavor = "multi_thread")]
async fn leader_election_one_acts_and_the_standby_takes_over() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let wl = rig.namespace("inst-le").await;
    let net = rig.network(&wl).await;
    // Two objects with private DNS for one service cannot share a VPC (PrivateDnsConflict).
    let net2 = rig.network(&format!("{wl}-2")).await;
    let lease_arg = format!("--lease-seconds={LEASE_SECONDS}");
    let mut rel = Release::install(
        &rig,
        &wl,
        &[
            "replicaCount=2",
            &format!("extraArgs={{--pending-requeue-ms=300,{lease_arg}}}"),
        ],
    );
    let args = rel.deployment_args(&rig);
    assert!(args.contains(&"--leader-elect".to_string()), "{args:?}");
    assert!(args.contains(&lease_arg), "{args:?}");

    let names = [
        format!("{}-pod-a", rel.fullname),
        format!("{}-pod-b", rel.fullname),
    ];
    let mut ops = [
        ChartOperator::start(&mut rel, &rig, &names[0]),
        ChartOperator::start(&mut rel, &rig, &names[1]),
    ];
    let leader = eventually(Duration::from_secs(30), "a leader", || async {
        match (ops[0].leads(), ops[1].leads()) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            (true, true) => panic!("both replicas acquired the lease"),
            _ => None,
        }
    })
    .await;
    let follower = 1 - leader;
    ops[leader].wait_status("/readyz", 200).await;
    ops[follower].wait_status("/healthz", 200).await;
    let (status, _) = ops[follower].get("/readyz").await.unwrap();
    assert_eq!(status, 503, "a standby is not ready");
    assert_eq!(
        lease_holder(&rig, &rel).await.as_deref(),
        Some(names[leader].as_str())
    );

    let first = create_bpl(
        &rig,
        &wl,
        "first",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}}),
    )
    .await;
    wait_ready(&rig, &wl, "first", "True", None, READY_TIMEOUT).await;
    // Past a renewal or two, the standby still only waits.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS)).await;
    assert!(!ops[follower].leads(), "{}", ops[follower].logs());
    let standby = ops[follower].metrics().await;
    assert_eq!(
        metric_sum(&standby, "bpl_ec2_calls_total", &[]),
        0.0,
        "the standby made EC2 calls:\n{standby}"
    );
    assert_eq!(
        metric_sum(&standby, "bpl_reconciles_total", &[]),
        0.0,
        "{standby}"
    );
    assert!(ops[leader].logs().contains("created endpoint"));
    assert!(!ops[follower].logs().contains("created endpoint"));
    assert_eq!(ops[follower].get("/readyz").await.unwrap().0, 503);

    // The leader's node dies: no release, the Lease has to expire.
    ops[leader].kill().await;
    let killed = Instant::now();
    let second = create_bpl(
        &rig,
        &wl,
        "second",
        json!({"vpcId": net2.vpc_id, "subnets": {"ids": net2.subnet_ids()}}),
    )
    .await;
    eventually(
        Duration::from_secs(LEASE_SECONDS + 10),
        "the standby takes the lease",
        || async { ops[follower].leads().then_some(()) },
    )
    .await;
    let took_over = killed.elapsed();
    wait_ready(&rig, &wl, "second", "True", None, READY_TIMEOUT).await;
    let ready = killed.elapsed();
    eprintln!("failover: lease after {took_over:?}, second object Ready after {ready:?}");
    assert!(
        ready < Duration::from_secs(LEASE_SECONDS + 20),
        "second object Ready {ready:?} after the leader died"
    );
    assert_eq!(
        lease_holder(&rig, &rel).await.as_deref(),
        Some(names[follower].as_str())
    );
    ops[follower].wait_status("/readyz", 200).await;

    // Nothing duplicated: the new leader adopted the first object's resources.
    let uids = [
        first.metadata.uid.clone().unwrap(),
        second.metadata.uid.clone().unwrap(),
    ];
    wait_ready(&rig, &wl, "first", "True", None, READY_TIMEOUT).await;
    for uid in &uids {
        assert_eq!(
            rig.owned_endpoints(uid).await.len(),
            1,
            "one endpoint for {uid}"
        );
        assert_eq!(rig.owned_groups(uid).await.len(), 1, "one group for {uid}");
    }
    let metrics = ops[follower].metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "bpl_ec2_calls_total",
            &["operation=\"CreateVpcEndpoint\""]
        ),
        1.0,
        "the new leader created only the second object's endpoint:\n{metrics}"
    );

    // Clean up while a leader runs, then stop it gracefully (7).
    delete_bpl(&rig, &wl, "first").await;
    delete_bpl(&rig, &wl, "second").await;
    wait_gone(&rig, &wl, "first", READY_TIMEOUT).await;
    wait_gone(&rig, &wl, "second", READY_TIMEOUT).await;
    for uid in &uids {
        assert!(rig.owned_endpoints(uid).await.is_empty());
        assert!(rig.owned_groups(uid).await.is_empty());
    }
    assert_no_forbidden(&ops[follower]);
    let (status, took) = ops[follower].terminate().await;
    let status = status.expect("exited after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", ops[follower].logs());
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    assert_eq!(lease_holder(&rig, &rel).await, None, "Lease released");
    rel.uninstall(&rig);
}

// ---------------------------------------------------------------------------------------------
// 5. helm upgrade changes the Deployment; helm uninstall keeps the CRD and the objects.

#[tokio::test(flavor = "multi_thread")]
async fn helm_upgrade_applies_values_and_uninstall_keeps_crd_and_objects() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let wl = rig.namespace("inst-up").await;
    let mut rel = Release::install(&rig, &wl, &[]);
    let args = rel.deployment_args(&rig);
    assert!(
        args.contains(&"--resync-seconds=300".to_string()),
        "{args:?}"
    );

    let endpoint = rig.env["AWS_ENDPOINT_URL_EC2"].clone();
    let (ok, out, err) = helm(
        &rig,
        &[
            "upgrade",
            &rel.name,
            &chart(),
            "-n",
            &rel.ns,
            "--set",
            "aws.region=us-east-1",
            "--set",
            &format!("aws.ec2EndpointUrl={endpoint}"),
            "--set",
            &format!("watchNamespaces={{{wl}}}"),
            "--set",
            "resyncSeconds=120",
        ],
    );
    assert!(ok, "helm upgrade: {out}\n{err}");
    let args = rel.deployment_args(&rig);
    assert!(
        args.contains(&"--resync-seconds=120".to_string()),
        "{args:?}"
    );
    assert!(
        !args.contains(&"--resync-seconds=300".to_string()),
        "{args:?}"
    );
    let (ok, out, _) = helm(&rig, &["history", &rel.name, "-n", &rel.ns]);
    assert!(ok && out.lines().count() == 3, "two revisions: {out}");

    // An object that exists when the release goes away (no operator runs for it here).
    create_bpl(&rig, &wl, "survivor", json!({"deletionPolicy": "Retain"})).await;
    rel.uninstall(&rig);
    let (ok, _, _) = helm(&rig, &["status", &rel.name, "-n", &rel.ns]);
    assert!(!ok, "the release is gone");
    for (kind, ns) in [
        ("deployment", Some(rel.ns.as_str())),
        ("serviceaccount", Some(rel.ns.as_str())),
        ("clusterrole", None),
        ("clusterrolebinding", None),
    ] {
        let mut args = vec![
            "get",
            kind,
            &rel.fullname,
            "--ignore-not-found",
            "-o",
            "name",
        ];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let (ok, out, err) = rig.kubectl(&args);
        assert!(ok && out.trim().is_empty(), "{kind} left: {out} {err}");
    }
    let (ok, _, err) = rig.kubectl(&["get", "crd", "bedrockprivatelinks.bedrock.privatelink.io"]);
    assert!(ok, "the CRD stays: {err}");
    assert!(
        rig.bpls(&wl).get_opt("survivor").await.unwrap().is_some(),
        "objects stay"
    );
    delete_bpl(&rig, &wl, "survivor").await;
    wait_gone(&rig, &wl, "survivor", Duration::from_secs(10)).await;
}

// ---------------------------------------------------------------------------------------------
// 6. docs/iam-policy.json allows exactly the EC2 operations the code calls.

fn operations_called_in_code() -> std::collections::BTreeSet<String> {
    let src = std::fs::read_to_string(repo_root().join("src/aws/sdk.rs")).unwrap();
    let mut ops = std::collections::BTreeSet::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find(".call(") {
        rest = &rest[i + ".call(".len()..];
        let trimmed = rest.trim_start();
        if let Some(lit) = trimmed.strip_prefix('"') {
            let end = lit.find('"').expect("closing quote");
            ops.insert(lit[..end].to_string());
        }
    }
    ops
}

#[test]
fn iam_policy_allows_exactly_the_ec2_calls_in_the_code() {
    let called = operations_called_in_code();
    for op in [
        "CreateVpcEndpoint",
        "DeleteVpcEndpoints",
        "DescribeVpcEndpoints",
        "CreateSecurityGroup",
        "CreateTags",
        "DeleteTags",
    ] {
        assert!(called.contains(op), "scan found {op}: {called:?}");
    }
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("docs/iam-policy.json")).unwrap(),
    )
    .expect("docs/iam-policy.json is JSON");
    let mut actions = std::collections::BTreeSet::new();
    for st in policy["Statement"].as_array().expect("Statement") {
        assert_eq!(st["Effect"], "Allow", "{st}");
        assert!(st.get("NotAction").is_none(), "no NotAction: {st}");
        let here: Vec<String> = match &st["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(v) => v.iter().map(|a| a.as_str().unwrap().to_string()).collect(),
            other => panic!("Action {other}"),
        };
        // Changing tags could re-own or hide resources: only with conditions.
        if here
            .iter()
            .any(|a| a == "ec2:CreateTags" || a == "ec2:DeleteTags")
        {
            assert!(
                st["Condition"].is_object(),
                "tagging needs a Condition: {st}"
            );
        }
        actions.extend(here);
    }
    // Other accounts (issue 17): the roles of BedrockPrivateLinkGrants are assumed through the
    // SDK's AssumeRoleProvider, and nothing else of STS needs a permission (GetCallerIdentity
    // needs none).
    let pool = std::fs::read_to_string(repo_root().join("src/aws/pool.rs")).unwrap();
    assert!(
        pool.contains("AssumeRoleProvider::builder"),
        "the pool assumes roles"
    );
    let sts: Vec<&String> = actions.iter().filter(|a| a.starts_with("sts:")).collect();
    assert_eq!(sts, ["sts:AssumeRole"], "STS: AssumeRole only");
    let assume = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["Action"] == "sts:AssumeRole")
        .unwrap();
    assert_ne!(
        assume["Resource"], "*",
        "AssumeRole only on roles: {assume}"
    );
    actions.remove("sts:AssumeRole");
    for a in &actions {
        assert!(!a.contains('*'), "no wildcard action: {a}");
        assert!(a.starts_with("ec2:"), "only EC2 and sts:AssumeRole: {a}");
    }
    let missing: Vec<_> = called
        .iter()
        .filter(|op| !actions.contains(&format!("ec2:{op}")))
        .collect();
    assert!(missing.is_empty(), "docs/iam-policy.json lacks {missing:?}");
    let extra: Vec<_> = actions
        .iter()
        .filter(|a| !called.contains(a.trim_start_matches("ec2:")))
        .collect();
    assert!(
        extra.is_empty(),
        "docs/iam-policy.json allows actions the code never calls: {extra:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7 (without leader election) and 8.

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_cleanly_and_health_endpoints_answer() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("inst-term").await;
    let mut op = rig.operator(&ns, &[]);
    let base = format!("http://127.0.0.1:{}", op.http_port);
    eventually(Duration::from_secs(30), "/readyz 200", || {
        let url = format!("{base}/readyz");
        async move {
            let r = reqwest::get(url).await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let metrics = op.metrics().await;
    assert!(
        metrics.contains("# TYPE bpl_reconcile_duration_seconds histogram"),
        "{metrics}"
    );
    let started = Instant::now();
    let status = op.terminate().await.expect("exited after SIGTERM");
    let took = started.elapsed();
    assert!(status.success(), "{status:?}\n{}", op.logs());
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    assert!(op.logs().contains("shutdown requested"), "{}", op.logs());
}
