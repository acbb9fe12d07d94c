//! The operator as users run it: `helm install` of the chart on the rig's real node
//! (`scripts/rig up --cluster`: kubelet + containerd + kube-proxy in the rig's network namespace,
//! controller-manager and scheduler), from the image `scripts/rig image` built and imported.
//! The pods reach kube-apiserver through the `kubernetes` Service and the EC2 emulator at the
//! node's address (RIG_POD_EC2_ENDPOINT); everything stays inside the rig's namespace or loopback.
//!
//! Skipped, with a message, only when the rig runs without a node; `.ci/run` starts one.
//! The tests share one node: they run one at a time (SERIAL).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bpl::api::BedrockPrivateLink;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CHART: &str = "charts/bedrock-privatelink-operator";

struct Cluster {
    rig: Rig,
    image_repo: String,
    pod_ec2: String,
    netns: String,
}

async fn cluster() -> Option<Cluster> {
    let env = rig_env();
    if env.get("RIG_CLUSTER").map(String::as_str) != Some("1") {
        eprintln!(
            "SKIPPED: the rig runs without a node; start it with `scripts/rig up --cluster` \
             (then `scripts/rig image`) to run the in-cluster tests"
        );
        return None;
    }
    let rig = Rig::new().await;
    install_crd(&rig).await;
    Some(Cluster {
        image_repo: format!("{}/bedrock-privatelink-operator", env["RIG_IMAGE_REPO"]),
        pod_ec2: env["RIG_POD_EC2_ENDPOINT"].clone(),
        netns: env["RIG_NETNS"].clone(),
        rig,
    })
}

impl Cluster {
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.rig.kubectl(args);
        assert!(ok, "kubectl {args:?}: {err}");
        out
    }

    fn helm(&self, args: &[&str]) -> (bool, String) {
        let out = std::process::Command::new(self.rig.bin("helm"))
            .args(args)
            .current_dir(repo_root())
            .env("KUBECONFIG", &self.rig.env["KUBECONFIG"])
            .output()
            .expect("run helm");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// A namespace under the rig's open tenancy grant (issue 16), optionally labelled for the
    /// "restricted" Pod Security Standard.
    fn namespace(&self, prefix: &str, restricted: bool) -> String {
        let ns = format!("{prefix}-{}", short_id());
        self.kubectl_ok(&["create", "namespace", &ns]);
        self.kubectl_ok(&[
            "label",
            "namespace",
            &ns,
            &format!("{OPEN_TENANCY_LABEL}=open"),
        ]);
        if restricted {
            self.kubectl_ok(&[
                "label",
                "namespace",
                &ns,
                "pod-security.kubernetes.io/enforce=restricted",
            ]);
        }
        ns
    }

    /// `helm upgrade --install` with the rig's image, the EC2 emulator as seen from pods, and fake
    /// AWS credentials from a Secret (on EKS: IRSA or Pod Identity).
    fn install(&self, release: &str, ns: &str, values: Value) {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "rig-aws", "namespace": ns},
            "stringData": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
        });
        let (ok, _, err) = self
            .rig
            .kubectl_stdin(&["apply", "-f", "-"], &secret.to_string());
        assert!(ok, "secret: {err}");
        let from_secret = |k: &str| json!({"name": k, "valueFrom": {"secretKeyRef": {"name": "rig-aws", "key": k}}});
        let mut base = json!({
            "image": {"repository": self.image_repo, "tag": "dev", "pullPolicy": "Never"},
            "aws": {"region": "us-east-1", "ec2EndpointUrl": self.pod_ec2},
            "resyncSeconds": 30,
            "extraEnv": [
                from_secret("AWS_ACCESS_KEY_ID"), from_secret("AWS_SECRET_ACCESS_KEY"),
                {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
            ],
        });
        merge(&mut base, values);
        let file = std::env::temp_dir().join(format!("bpl-incluster-{release}.json"));
        std::fs::write(&file, base.to_string()).unwrap();
        let (ok, out) = self.helm(&[
            "upgrade",
            "--install",
            release,
            CHART,
            "-n",
            ns,
            "-f",
            file.to_str().unwrap(),
            "--wait",
            "--timeout",
            "180s",
        ]);
        if !ok {
            let (_, pods, _) = self.rig.kubectl(&["-n", ns, "describe", "pods"]);
            panic!("helm install {release}: {out}\n{pods}");
        }
        // `helm --wait` counts a Deployment ready once `replicas - maxUnavailable` (0 with one
        // replica and the chart's maxUnavailable 1) pods are available: wait for the pods themselves.
        let (ok, _, err) = self.rig.kubectl(&[
            "-n",
            ns,
            "rollout",
            "status",
            "deploy",
            "-l",
            &format!("app.kubernetes.io/instance={release}"),
            "--timeout=120s",
        ]);
        if !ok {
            let (_, pods, _) = self.rig.kubectl(&["-n", ns, "describe", "pods"]);
            panic!("rollout of {release}: {err}\n{pods}");
        }
    }

    fn pods(&self, ns: &str, release: &str) -> Vec<Pod> {
        let out = self.kubectl_ok(&[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/instance={release}"),
            "-o",
            "json",
        ]);
        let list: Value = serde_json::from_str(&out).unwrap();
        serde_json::from_value(list["items"].clone()).unwrap()
    }

    async fn lease_holder(&self, ns: &str) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.rig.client.clone(), ns);
        let l = leases
            .get_opt("bedrock-privatelink-operator")
            .await
            .ok()??;
        l.spec?.holder_identity
    }

    /// Runs a command in the node's network namespace (where Service IPs are routed).
    fn node_exec(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(args)
            .output()
            .expect("nsenter");
        assert!(
            out.status.success(),
            "{args:?} in the node namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into()
    }

    fn uninstall(&self, release: &str, ns: &str) {
        let (ok, out) = self.helm(&["uninstall", release, "-n", ns, "--wait"]);
        assert!(ok, "helm uninstall: {out}");
    }

    /// Test cleanup once no operator runs: finalizers off, namespaces deleted.
    fn drop_namespaces(&self, nss: &[&str]) {
        for ns in nss {
            let (_, names, _) = self.rig.kubectl(&["-n", ns, "get", "bpl", "-o", "name"]);
            for n in names.lines() {
                let _ = self.rig.kubectl(&[
                    "-n",
                    ns,
                    "patch",
                    n,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]);
            }
            let _ = self
                .rig
                .kubectl(&["delete", "namespace", ns, "--wait=false"]);
        }
    }
}

/// Uninstalls the release and removes the namespaces when a test ends, also when it fails.
struct Cleanup<'a> {
    c: &'a Cluster,
    release: String,
    rel_ns: String,
    namespaces: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        // Objects first, while the operator still runs: nothing is left in AWS (a private-DNS
        // endpoint left behind would block the next run's).
        for ns in &self.namespaces {
            let _ = self.c.rig.kubectl(&[
                "-n",
                ns,
                "delete",
                "bpl",
                "--all",
                "--wait=true",
                "--timeout=60s",
            ]);
        }
        let _ = self
            .c
            .helm(&["uninstall", &self.release, "-n", &self.rel_ns, "--wait"]);
        let mut all: Vec<&str> = self.namespaces.iter().map(String::as_str).collect();
        all.push(&self.rel_ns);
        self.c.drop_namespaces(&all);
    }
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && p.metadata.deletion_timestamp.is_none()
}

fn image_of(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

async fn calls(rig: &Rig) -> BTreeMap<String, u64> {
    rig.emulator_calls().await
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, k: &str) -> u64 {
    after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0)
}

/// One release through its life: Ready pod with JSON logs, /metrics through the Service, the
/// restricted namespace admits it and refuses a pod without its securityContext, a workload gets
/// the variables by envFrom, a namespace with objects is deleted after the AWS cleanup, a rolling
/// `helm upgrade`, `helm uninstall` keeping CRD and objects, and ConfigMap garbage collection.
#[tokio::test(flavor = "multi_thread")]
async fn the_chart_runs_the_operator_as_a_pod_through_its_life() {
    let Some(c) = cluster().await else { return };
    let _serial = SERIAL.lock().await;
    let rel_ns = c.namespace("bpl-op", true);
    let work = c.namespace("bpl-work", true);
    let doomed = c.namespace("bpl-doomed", false);
    let release = format!("bpl-{}", short_id());
    let _cleanup = Cleanup {
        c: &c,
        release: release.clone(),
        rel_ns: rel_ns.clone(),
        namespaces: vec![work.clone(), doomed.clone()],
    };
    c.install(
        &release,
        &rel_ns,
        json!({"watchNamespaces": [work, doomed], "logLevel": "info"}),
    );

    // Scheduled on the real node, Ready, from the rig's image.
    let pods = c.pods(&rel_ns, &release);
    assert_eq!(pods.len(), 1, "one pod");
    let pod = &pods[0];
    assert!(ready(pod), "Ready after helm --wait");
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(c.rig.env["RIG_NODE_NAME"].as_str()),
        "on the kubelet's node"
    );
    assert_eq!(image_of(pod), format!("{}:dev", c.image_repo));
    let pod_name = pod.metadata.name.clone().unwrap();
    assert_eq!(
        c.lease_holder(&rel_ns).await.as_deref(),
        Some(pod_name.as_str()),
        "the pod holds the Lease under its own name (downward API)"
    );

    // Reconciles with its ServiceAccount: an object in a watched namespace gets Ready.
    let bpl = create_bpl(&c.rig, &work, "demo", json!({"privateDns": false})).await;
    let uid = bpl.metadata.uid.clone().unwrap();
    let obj = wait_ready(
        &c.rig,
        &work,
        "demo",
        "True",
        None,
        Duration::from_secs(120),
    )
    .await;
    let vpce = obj.status.as_ref().unwrap().endpoints[0]
        .vpc_endpoint_id
        .clone();
    assert_eq!(c.rig.owned_endpoints(&uid).await.len(), 1);

    // kubectl logs: one JSON object per line.
    let logs = c.kubectl_ok(&["-n", &rel_ns, "logs", &pod_name]);
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the pod logged");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.is_object(), "{l}");
    }
    assert!(logs.contains("acquired the lease"), "{logs}");

    // /metrics through the Service (ClusterIP -> kube-proxy -> pod), from the node.
    let svc_ip = c.kubectl_ok(&[
        "-n",
        &rel_ns,
        "get",
        "svc",
        "-l",
        &format!("app.kubernetes.io/instance={release}"),
        "-o",
        "jsonpath={.items[0].spec.clusterIP}",
    ]);
    let metrics = c.node_exec(&[
        "curl",
        "-sf",
        "--max-time",
        "5",
        &format!("http://{svc_ip}:8080/metrics"),
    ]);
    let ok = metric_sum(&metrics, "bpl_reconciles_total", &["result=\"ok\""]);
    assert!(ok >= 1.0, "bpl_reconciles_total ok={ok}:\n{metrics}");

    // The restricted namespace refuses a pod without the chart's securityContext.
    let bare = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "no-security-context", "namespace": rel_ns},
        "spec": {"containers": [{"name": "c", "image": format!("{}/workload:1", c.rig.env["RIG_IMAGE_REPO"]),
                                 "command": ["sleep", "1"]}]},
    });
    let (ok, _, err) = c
        .rig
        .kubectl_stdin(&["apply", "-f", "-"], &bare.to_string());
    assert!(!ok, "a pod without securityContext was admitted");
    assert!(err.contains("violates PodSecurity \"restricted"), "{err}");

    // The workload of examples/workload-deployment.yaml gets the variables through envFrom.
    let manifest = std::fs::read_to_string(repo_root().join("examples/workload-deployment.yaml"))
        .unwrap()
        .replace("namespace: default", &format!("namespace: {work}"))
        .replace(
            "public.ecr.aws/aws-cli/aws-cli:2.22.0",
            &format!("{}/workload:1", c.rig.env["RIG_IMAGE_REPO"]),
        );
    let (ok, _, err) = c.rig.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(ok, "workload: {err}");
    c.kubectl_ok(&[
        "-n",
        &work,
        "rollout",
        "status",
        "deploy/bedrock-client",
        "--timeout=120s",
    ]);
    let cm: Api<ConfigMap> = Api::namespaced(c.rig.client.clone(), &work);
    let data = cm.get("demo-bedrock").await.unwrap().data.unwrap();
    let seen = eventually(Duration::from_secs(30), "the workload's output", || {
        let c = &c;
        let work = work.clone();
        async move {
            let (_, out, _) = c
                .rig
                .kubectl(&["-n", &work, "logs", "deploy/bedrock-client"]);
            out.contains("BEDROCK_RUNTIME_VPC_ENDPOINT_ID=")
                .then_some(out)
        }
    })
    .await;
    for (k, v) in &data {
        assert!(seen.contains(&format!("{k}={v}")), "{k}={v} not in\n{seen}");
    }
    assert!(seen.contains(&vpce), "{seen}");

    // Deleting a namespace that holds an object completes: AWS is cleaned up first.
    let gone = create_bpl(&c.rig, &doomed, "gone", json!({"privateDns": false})).await;
    let gone_uid = gone.metadata.uid.clone().unwrap();
    wait_ready(
        &c.rig,
        &doomed,
        "gone",
        "True",
        None,
        Duration::from_secs(120),
    )
    .await;
    c.kubectl_ok(&["delete", "namespace", &doomed, "--wait=false"]);
    eventually(Duration::from_secs(120), "the namespace to go away", || {
        let c = &c;
        let doomed = doomed.clone();
        async move {
            let (ok, _, err) = c.rig.kubectl(&["get", "namespace", &doomed]);
            (!ok && err.contains("NotFound")).then_some(())
        }
    })
    .await;
    assert!(
        c.rig.owned_endpoints(&gone_uid).await.is_empty(),
        "endpoint left"
    );
    assert!(c.rig.owned_groups(&gone_uid).await.is_empty(), "group left");

    // helm upgrade: a new image tag and a changed value roll the pod.
    let tag = format!("up-{}", short_id());
    let out = std::process::Command::new(repo_root().join("scripts/rig"))
        .args([
            "ctr",
            "images",
            "tag",
            &format!("{}:dev", c.image_repo),
            &format!("{}:{tag}", c.image_repo),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = calls(&c.rig).await;
    c.install(
        &release,
        &rel_ns,
        json!({"watchNamespaces": [work, doomed], "image": {"tag": tag}, "logLevel": "debug"}),
    );
    let pods = eventually(Duration::from_secs(60), "the rolled pod alone", || {
        let pods = c.pods(&rel_ns, &release);
        async move { (pods.len() == 1 && ready(&pods[0])).then_some(pods) }
    })
    .await;
    assert_ne!(pods[0].metadata.name.as_deref(), Some(pod_name.as_str()));
    assert_eq!(image_of(&pods[0]), format!("{}:{tag}", c.image_repo));
    let args = pods[0].spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(args.contains(&"--log-level=debug".to_string()), "{args:?}");
    let obj = wait_ready(&c.rig, &work, "demo", "True", None, Duration::from_secs(60)).await;
    assert_eq!(obj.status.unwrap().endpoints[0].vpc_endpoint_id, vpce);
    let after = calls(&c.rig).await;
    assert_eq!(
        delta(&before, &after, "CreateVpcEndpoint"),
        0,
        "no new endpoint"
    );
    assert_eq!(c.rig.owned_endpoints(&uid).await.len(), 1);

    // helm uninstall: the CRD and the objects stay (and so does the endpoint).
    c.uninstall(&release, &rel_ns);
    eventually(Duration::from_secs(60), "the release's pods gone", || {
        let pods = c.pods(&rel_ns, &release);
        async move { pods.is_empty().then_some(()) }
    })
    .await;
    c.kubectl_ok(&["get", "crd", "bedrockprivatelinks.bedrock.privatelink.io"]);
    c.kubectl_ok(&["-n", &work, "get", "bpl", "demo"]);
    assert_eq!(c.rig.owned_endpoints(&uid).await.len(), 1);

    // The published ConfigMap is owned by the object: the garbage collector removes it.
    let owner = cm
        .get("demo-bedrock")
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap();
    assert_eq!(owner[0].uid, uid);
    c.kubectl_ok(&[
        "-n",
        &work,
        "patch",
        "bpl",
        "demo",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    c.kubectl_ok(&["-n", &work, "delete", "bpl", "demo", "--wait=true"]);
    eventually(
        Duration::from_secs(60),
        "ConfigMap garbage-collected",
        || {
            let cm = cm.clone();
            async move { matches!(cm.get_opt("demo-bedrock").await, Ok(None)).then_some(()) }
        },
    )
    .await;
}

/// Two replicas: the leader pod is deleted while the object changes; the other pod takes the
/// Lease within its duration plus a few seconds, applies the change exactly once, and the
/// Deployment brings the replica count back. No AWS resource is duplicated or left behind.
#[tokio::test(flavor = "multi_thread")]
async fn the_standby_pod_takes_over_when_the_leader_pod_goes() {
    let Some(c) = cluster().await else { return };
    let _serial = SERIAL.lock().await;
    let rel_ns = c.namespace("bpl-ha", true);
    let work = c.namespace("bpl-ha-work", false);
    let release = format!("bpl-{}", short_id());
    let _cleanup = Cleanup {
        c: &c,
        release: release.clone(),
        rel_ns: rel_ns.clone(),
        namespaces: vec![work.clone()],
    };
    c.install(
        &release,
        &rel_ns,
        json!({"replicaCount": 2, "watchNamespaces": [work]}),
    );
    let bpl = create_bpl(&c.rig, &work, "ha", json!({"privateDns": false})).await;
    let uid = bpl.metadata.uid.clone().unwrap();
    wait_ready(&c.rig, &work, "ha", "True", None, Duration::from_secs(120)).await;
    let pods = c.pods(&rel_ns, &release);
    assert_eq!(pods.len(), 2);
    let leader = c.lease_holder(&rel_ns).await.expect("a leader");
    let names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(names.contains(&leader), "{leader} not in {names:?}");

    // Delete the leader and change the object at once.
    let before = calls(&c.rig).await;
    let t0 = Instant::now();
    c.kubectl_ok(&["-n", &rel_ns, "delete", "pod", &leader, "--wait=false"]);
    let model = "anthropic.claude-3-haiku-20240307-v1:0";
    let patched = c
        .rig
        .bpls(&work)
        .patch(
            "ha",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"policy": {"preset": "InvokeOnly", "models": [model]}}})),
        )
        .await
        .unwrap();
    let generation = patched.metadata.generation.unwrap();
    let new_leader = eventually(Duration::from_secs(15 + 10), "a new leader", || {
        let c = &c;
        let rel_ns = rel_ns.clone();
        let leader = leader.clone();
        async move { c.lease_holder(&rel_ns).await.filter(|h| *h != leader) }
    })
    .await;
    let took = t0.elapsed();
    // The standby or the Deployment's replacement pod, whichever asks first once the Lease is free.
    let standby = names.iter().find(|n| **n != leader).unwrap();
    eprintln!(
        "leader {leader} -> {new_leader} ({}) in {took:?}",
        if new_leader == *standby {
            "the standby"
        } else {
            "the replacement pod"
        }
    );
    let obj = eventually(Duration::from_secs(60), "the change applied", || {
        let api = c.rig.bpls(&work);
        async move {
            let o = api.get("ha").await.ok()?;
            let s = o.status.as_ref()?;
            (s.observed_generation == Some(generation)
                && condition(&o, "Ready").is_some_and(|r| r.status == "True"))
            .then_some(o.clone())
        }
    })
    .await;
    let eps = c.rig.owned_endpoints(&uid).await;
    assert_eq!(eps.len(), 1, "one endpoint: {eps:?}");
    assert!(
        eps[0].policy_document().unwrap_or_default().contains(model),
        "the new policy is on the endpoint"
    );
    assert_eq!(
        c.rig.owned_groups(&uid).await.len(),
        1,
        "one security group"
    );
    let after = calls(&c.rig).await;
    assert_eq!(
        delta(&before, &after, "ModifyVpcEndpoint"),
        1,
        "applied exactly once"
    );
    assert_eq!(delta(&before, &after, "CreateVpcEndpoint"), 0);
    assert_eq!(delta(&before, &after, "CreateSecurityGroup"), 0);
    assert_eq!(
        obj.status.unwrap().endpoints[0].vpc_endpoint_id,
        eps[0].vpc_endpoint_id().unwrap()
    );

    // The Deployment replaces the deleted pod.
    eventually(Duration::from_secs(90), "two Ready replicas again", || {
        let pods = c.pods(&rel_ns, &release);
        let leader = leader.clone();
        async move {
            (pods.len() == 2
                && pods.iter().all(ready)
                && pods
                    .iter()
                    .all(|p| p.metadata.name.as_deref() != Some(&leader)))
            .then_some(())
        }
    })
    .await;

    // Clean up with the operator still running: the object's AWS resources go with it.
    delete_bpl(&c.rig, &work, "ha").await;
    wait_gone(&c.rig, &work, "ha", Duration::from_secs(90)).await;
    assert!(c.rig.owned_endpoints(&uid).await.is_empty());
    c.uninstall(&release, &rel_ns);
}

const STANDARD_NAME: &str = "bedrock-runtime.us-east-1.amazonaws.com";
const ALLOWED_MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const OTHER_MODEL: &str = "amazon.titan-text-express-v1";
/// The role the stand-in maps the rig's access key `testing` to (dataplane.py).
const WORKLOAD_ROLE: &str = "arn:aws:iam::123456789012:role/bpl-rig-workload";

/// What one `probe` pod said: its exit code and its log.
struct Probe {
    code: i32,
    log: String,
}

impl Cluster {
    /// The rig CA (which signs the Bedrock stand-in's certificate) as a ConfigMap in `ns`.
    fn ca_config_map(&self, ns: &str) {
        let ca = std::fs::read_to_string(&self.rig.env["RIG_BEDROCK_CA"]).expect("rig CA");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "rig-ca", "namespace": ns}, "data": {"ca.pem": ca}});
        let (ok, _, err) = self
            .rig
            .kubectl_stdin(&["apply", "-f", "-"], &cm.to_string());
        assert!(ok, "CA ConfigMap: {err}");
    }

    /// Runs `bedrock-privatelink-operator probe ARGS` as a workload pod in `ns` (envFrom the
    /// ConfigMap `config`, AWS credentials `access_key`), and waits for it to end.
    async fn probe(&self, ns: &str, config: &str, access_key: &str, args: &[&str]) -> Probe {
        let name = format!("probe-{}", short_id());
        let args: Vec<&str> = [
            "probe",
            "--connect-timeout-seconds=3",
            "--timeout-seconds=10",
        ]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "probe", "image": format!("{}:dev", self.image_repo), "imagePullPolicy": "Never",
                    "args": args,
                    "envFrom": [{"configMapRef": {"name": config}}],
                    "env": [
                        {"name": "AWS_ACCESS_KEY_ID", "value": access_key},
                        {"name": "AWS_SECRET_ACCESS_KEY", "value": "testing"},
                        {"name": "AWS_CA_BUNDLE", "value": "/etc/rig-ca/ca.pem"},
                        {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
                    ],
                    "volumeMounts": [{"name": "ca", "mountPath": "/etc/rig-ca", "readOnly": true}],
                    "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                        "capabilities": {"drop": ["ALL"]}},
                }],
                "volumes": [{"name": "ca", "configMap": {"name": "rig-ca"}}],
            },
        });
        let (ok, _, err) = self
            .rig
            .kubectl_stdin(&["apply", "-f", "-"], &pod.to_string());
        assert!(ok, "probe pod: {err}");
        let pods: Api<Pod> = Api::namespaced(self.rig.client.clone(), ns);
        let code = eventually(Duration::from_secs(90), "the probe pod to end", || {
            let pods = pods.clone();
            let name = name.clone();
            async move {
                let p = pods.get(&name).await.ok()?;
                let st = p.status?.container_statuses?.into_iter().next()?;
                Some(st.state?.terminated?.exit_code)
            }
        })
        .await;
        let log = self.kubectl_ok(&["-n", ns, "logs", &name]);
        self.kubectl_ok(&["-n", ns, "delete", "pod", &name, "--wait=false"]);
        Probe { code, log }
    }
}

impl Cluster {
    /// The log of the chart's `helm test` pod (in `test.namespace`, where `helm test --logs`
    /// does not look: it reads the release's namespace only).
    fn test_pod_log(&self, ns: &str, release: &str) -> String {
        let (_, out, err) = self.rig.kubectl(&[
            "-n",
            ns,
            "logs",
            "-l",
            &format!("app.kubernetes.io/instance={release},app.kubernetes.io/component=test"),
        ]);
        format!("{out}{err}")
    }
}

impl Cluster {
    /// Runs the probe (key `testing`) until it exits with `code`, for at most a minute.
    async fn probe_until(
        &self,
        ns: &str,
        config: &str,
        args: &[&str],
        code: i32,
        what: &str,
    ) -> Probe {
        eventually(Duration::from_secs(60), what, || async move {
            let p = self.probe(ns, config, "testing", args).await;
            (p.code == code).then_some(p)
        })
        .await
    }
}

async fn patch_spec(rig: &Rig, ns: &str, name: &str, spec: Value) {
    rig.bpls(ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
}

/// The Bedrock calls the stand-in served since `from` (its call records).
async fn bedrock_calls(rig: &Rig, from: usize) -> Vec<Value> {
    let v = rig.harness("GET", "bedrock/calls", json!({})).await;
    v["calls"].as_array().unwrap()[from..].to_vec()
}

async fn bedrock_call_count(rig: &Rig) -> usize {
    bedrock_calls(rig, 0).await.len()
}

async fn path_condition(rig: &Rig, ns: &str, name: &str, reason: &str) -> BedrockPrivateLink {
    eventually(
        Duration::from_secs(60),
        &format!("PrivatePathVerified {reason}"),
        || async move {
            let o = rig.bpls(ns).get(name).await.ok()?;
            let c = condition(&o, "PrivatePathVerified")?;
            (c.reason == reason).then_some(o.clone())
        },
    )
    .await
}

fn eni_addresses(rig_listeners: &Value, vpce: &str) -> Vec<String> {
    rig_listeners["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["endpoint"] == vpce)
        .map(|l| l["address"].as_str().unwrap().to_string())
        .collect()
}

/// The walkthrough's last step, on the real node: a pod's Bedrock call (the AWS SDK, envFrom the
/// published ConfigMap) goes through the interface endpoint under its policy; the operator's
/// PrivatePathVerified condition follows DNS; a per-team endpoint without private DNS is reached
/// by its vpce name under its own policy; a narrowed security group drops the pods; DNS pointed
/// elsewhere is reported (condition, Event, `helm test` fails); an endpoint deleted out of band is
/// restored and the public window is measured.
#[tokio::test(flavor = "multi_thread")]
async fn a_pods_bedrock_call_takes_the_private_path_under_the_policy() {
    let Some(c) = cluster().await else { return };
    let _serial = SERIAL.lock().await;
    let rig = &c.rig;
    let rel_ns = c.namespace("bpl-op", true);
    let work = c.namespace("bpl-path", true);
    let release = format!("bpl-{}", short_id());
    let _cleanup = Cleanup {
        c: &c,
        release: release.clone(),
        rel_ns: rel_ns.clone(),
        namespaces: vec![work.clone()],
    };
    c.ca_config_map(&work);
    let test_values = json!({"enabled": true, "namespace": work, "configMap": "platform-bedrock",
                             "caConfigMap": "rig-ca", "model": ALLOWED_MODEL,
                             "extraEnv": [{"name": "AWS_ACCESS_KEY_ID", "value": "testing"},
                                          {"name": "AWS_SECRET_ACCESS_KEY", "value": "testing"}]});
    c.install(
        &release,
        &rel_ns,
        json!({"watchNamespaces": [work], "verifyPathSeconds": 3, "resyncSeconds": 10,
               "test": test_values}),
    );

    // The platform endpoint: private DNS, InvokeOnly for one model.
    let platform = create_bpl(
        rig,
        &work,
        "platform",
        json!({"privateDns": true, "policy": {"preset": "InvokeOnly", "models": [ALLOWED_MODEL]}}),
    )
    .await;
    let uid = platform.metadata.uid.clone().unwrap();
    wait_ready(
        rig,
        &work,
        "platform",
        "True",
        None,
        Duration::from_secs(120),
    )
    .await;
    let obj = path_condition(rig, &work, "platform", "Verified").await;
    let vpce = obj.status.as_ref().unwrap().endpoints[0]
        .vpc_endpoint_id
        .clone();
    let enis = eni_addresses(&rig.harness("GET", "dataplane", json!({})).await, &vpce);
    assert!(
        !enis.is_empty(),
        "the stand-in listens on {vpce}'s interfaces"
    );
    let msg = &condition(&obj, "PrivatePathVerified").unwrap().message;
    assert!(
        msg.contains(STANDARD_NAME) && msg.contains(&enis[0]),
        "{msg}"
    );

    // Allowed: the call is answered through the endpoint, at one of its interface addresses.
    let from = bedrock_call_count(rig).await;
    let p = c
        .probe(
            &work,
            "platform-bedrock",
            "testing",
            &["--model", ALLOWED_MODEL],
        )
        .await;
    assert_eq!(p.code, 0, "{}", p.log);
    assert!(p.log.contains("private"), "{}", p.log);
    let calls = bedrock_calls(rig, from).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["endpoint"], vpce.as_str());
    assert_eq!(calls[0]["decision"], "allowed");
    assert!(enis.contains(&calls[0]["address"].as_str().unwrap().to_string()));
    assert_eq!(
        calls[0]["host"]
            .as_str()
            .unwrap_or_default()
            .split(':')
            .next(),
        Some(STANDARD_NAME)
    );

    // A model outside policy.models: denied by the endpoint policy, on the private path.
    let from = bedrock_call_count(rig).await;
    let p = c
        .probe(
            &work,
            "platform-bedrock",
            "testing",
            &["--model", OTHER_MODEL, "--expect-denied"],
        )
        .await;
    assert_eq!(p.code, 0, "{}", p.log);
    let calls = bedrock_calls(rig, from).await;
    assert_eq!(
        (calls[0]["endpoint"].as_str(), calls[0]["decision"].as_str()),
        (Some(vpce.as_str()), Some("denied"))
    );

    // The policy follows the spec: the other model allowed after an edit, the first denied.
    patch_spec(
        rig,
        &work,
        "platform",
        json!({"policy": {"models": [OTHER_MODEL]}}),
    )
    .await;
    let p = c
        .probe_until(
            &work,
            "platform-bedrock",
            &["--model", OTHER_MODEL],
            0,
            "the new policy enforced",
        )
        .await;
    assert!(p.log.contains("allowed"), "{}", p.log);
    let p = c
        .probe(
            &work,
            "platform-bedrock",
            "testing",
            &["--model", ALLOWED_MODEL, "--expect-denied"],
        )
        .await;
    assert_eq!(p.code, 0, "{}", p.log);

    // helm test (the chart's probe) passes on this install... (probe model: OTHER_MODEL now)
    let (ok, out) = c.helm(&[
        "upgrade",
        &release,
        CHART,
        "-n",
        &rel_ns,
        "--reuse-values",
        "--set",
        &format!("test.model={OTHER_MODEL}"),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = c.helm(&["test", &release, "-n", &rel_ns, "--timeout", "90s"]);
    assert!(ok, "helm test: {out}\n{}", c.test_pod_log(&work, &release));

    // DNS pointed elsewhere (custom DNS): the condition names the address, a Warning Event is
    // emitted, the pod's call is recorded as public, and helm test fails, saying why.
    let public = rig.harness("GET", "dataplane", json!({})).await["public_address"]
        .as_str()
        .unwrap()
        .to_string();
    rig.harness(
        "POST",
        "dns/overrides",
        json!({"name": STANDARD_NAME, "addresses": [public]}),
    )
    .await;
    let obj = path_condition(rig, &work, "platform", "ResolvesElsewhere").await;
    let msg = &condition(&obj, "PrivatePathVerified").unwrap().message;
    assert!(
        msg.contains(&public) && msg.contains(STANDARD_NAME),
        "{msg}"
    );
    eventually(
        Duration::from_secs(20),
        "a ResolvesElsewhere Event",
        || async {
            (!warning_events(rig, &work, &uid, "ResolvesElsewhere")
                .await
                .is_empty())
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        condition(&obj, "Ready").unwrap().status,
        "True",
        "DNS does not change Ready"
    );
    let from = bedrock_call_count(rig).await;
    let p = c
        .probe(
            &work,
            "platform-bedrock",
            "testing",
            &["--model", OTHER_MODEL],
        )
        .await;
    assert_eq!(
        p.code, 2,
        "exit 2: the name leads outside the endpoint\n{}",
        p.log
    );
    let calls = bedrock_calls(rig, from).await;
    assert!(
        calls.iter().all(|c| c["path_kind"] == "public"),
        "{calls:?}"
    );
    let (ok, out) = c.helm(&["test", &release, "-n", &rel_ns, "--timeout", "90s"]);
    assert!(!ok, "helm test passed with DNS broken: {out}");
    let log = c.test_pod_log(&work, &release);
    assert!(
        log.contains(&public) && log.contains("PUBLIC"),
        "the test pod says where the name led: {log}"
    );
    rig.harness("DELETE", "dns/overrides", json!({"name": STANDARD_NAME}))
        .await;
    path_condition(rig, &work, "platform", "Verified").await;

    // A per-team endpoint without private DNS: its pods use its vpce name (from its ConfigMap)
    // under its own policy; the standard name still leads to the platform endpoint.
    create_bpl(
        rig,
        &work,
        "team",
        json!({"privateDns": false, "policy": {"preset": "InvokeOnly", "models": [ALLOWED_MODEL],
                                                "principals": [WORKLOAD_ROLE]}}),
    )
    .await;
    let team = wait_ready(rig, &work, "team", "True", None, Duration::from_secs(120)).await;
    let team_vpce = team.status.as_ref().unwrap().endpoints[0]
        .vpc_endpoint_id
        .clone();
    path_condition(rig, &work, "team", "Verified").await;
    let from = bedrock_call_count(rig).await;
    let p = c
        .probe(
            &work,
            "team-bedrock",
            "testing",
            &["--model", ALLOWED_MODEL],
        )
        .await;
    assert_eq!(p.code, 0, "{}", p.log);
    let p2 = c
        .probe(
            &work,
            "team-bedrock",
            "testing",
            &["--model", OTHER_MODEL, "--expect-denied"],
        )
        .await;
    assert_eq!(p2.code, 0, "{}", p2.log);
    let p3 = c
        .probe(
            &work,
            "platform-bedrock",
            "testing",
            &["--model", OTHER_MODEL],
        )
        .await;
    assert_eq!(p3.code, 0, "{}", p3.log);
    // Another principal (its own access key, another role): not in policy.principals.
    rig.harness(
        "POST",
        "bedrock/principals",
        json!({"access_key": "other-team", "arn": "arn:aws:iam::123456789012:role/other-team"}),
    )
    .await;
    let p4 = c
        .probe(
            &work,
            "team-bedrock",
            "other-team",
            &["--model", ALLOWED_MODEL, "--expect-denied"],
        )
        .await;
    assert_eq!(p4.code, 0, "{}", p4.log);
    let calls = bedrock_calls(rig, from).await;
    let seen: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| {
            (
                c["endpoint"].as_str().unwrap_or("?"),
                c["decision"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (team_vpce.as_str(), "allowed"),
            (team_vpce.as_str(), "denied"),
            (vpce.as_str(), "allowed"),
            (team_vpce.as_str(), "denied"),
        ]
    );

    // Security group: allowFrom without the pods' range drops their packets (no answer at all);
    // back to the default (the VPC's CIDR), they are admitted again.
    patch_spec(
        rig,
        &work,
        "team",
        json!({"securityGroup": {"allowFrom": {"cidrs": ["10.0.2.0/24"]}}}),
    )
    .await;
    let p = c
        .probe_until(
            &work,
            "team-bedrock",
            &["--model", ALLOWED_MODEL],
            1,
            "the pods dropped by the group",
        )
        .await;
    assert!(p.log.contains("NO ANSWER"), "{}", p.log);
    patch_spec(rig, &work, "team", json!({"securityGroup": null})).await;
    c.probe_until(
        &work,
        "team-bedrock",
        &["--model", ALLOWED_MODEL],
        0,
        "the pods admitted again",
    )
    .await;

    // The platform endpoint deleted out of band: the standard name goes public until the
    // operator has replaced it (sampled through the VPC resolver every 100 ms).
    let ec2 = rig.ec2.clone();
    ec2.delete_vpc_endpoints()
        .vpc_endpoint_ids(&vpce)
        .send()
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut public_since: Option<Instant> = None;
    let window = loop {
        let a = rig
            .harness("POST", "dns/resolve", json!({"name": STANDARD_NAME}))
            .await;
        let addrs: Vec<String> = serde_json::from_value(a["addresses"].clone()).unwrap_or_default();
        let is_public = addrs.contains(&public);
        match (is_public, public_since) {
            (true, None) => public_since = Some(Instant::now()),
            (false, Some(s)) => break s.elapsed(),
            _ => {}
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "the endpoint was not restored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let obj = wait_ready(
        rig,
        &work,
        "platform",
        "True",
        None,
        Duration::from_secs(60),
    )
    .await;
    let new_vpce = obj.status.as_ref().unwrap().endpoints[0]
        .vpc_endpoint_id
        .clone();
    assert_ne!(new_vpce, vpce, "a new endpoint replaced the deleted one");
    eprintln!(
        "private path: the standard name resolved publicly for {:.1}s after the endpoint was deleted out of band (resync 10 s)",
        window.as_secs_f64()
    );
    path_condition(rig, &work, "platform", "Verified").await;
    let p = c
        .probe(
            &work,
            "platform-bedrock",
            "testing",
            &["--model", OTHER_MODEL],
        )
        .await;
    assert_eq!(p.code, 0, "{}", p.log);
    // The stand-in's answer names the endpoint that served it: the replacement.
    assert!(p.log.contains(&new_vpce), "{}", p.log);
}
