//! The tools platform teams already run, run for real against what we ship:
//! - Argo CD's health script (docs/gitops/argocd-health.lua) in gopher-lua, the interpreter Argo
//!   CD embeds, and kstatus (sigs.k8s.io/cli-utils, what Flux reads) on objects taken from the rig
//!   in each state (tests/tools, built once and cached in ~/.cache/bpl-tools);
//! - `promtool test rules` on the chart's PrometheusRule, `promtool check rules` on the Grafana
//!   dashboard's queries, and every metric they use checked against a running operator's /metrics;
//! - `kubectl explain` on the installed CRD.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Builds (once per machine; cached under ~/.cache/bpl-tools) and returns a tool of tests/tools.
fn tool(name: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("tests/tools/build.sh"))
        .arg(name)
        .output()
        .expect("run tests/tools/build.sh");
    assert!(
        out.status.success(),
        "building {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.trim().lines().last().expect("tool path"))
}

fn run(cmd: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", cmd.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn scratch(name: &str) -> PathBuf {
    let dir = repo_root()
        .join("target/test-logs/ecosystem")
        .join(format!("{name}-{}", short_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whitespace collapsed, so text wrapped by kubectl or YAML folding compares as written.
fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---- Argo CD health and kstatus ------------------------------------------------------------

/// The object as `kubectl get -o json` gives it (what Argo CD and Flux read from the cluster).
fn object_json(rig: &Rig, ns: &str, name: &str) -> Value {
    let (ok, out, err) = rig.kubectl(&["-n", ns, "get", "bpl", name, "-o", "json"]);
    assert!(ok, "kubectl get {ns}/{name}: {err}");
    serde_json::from_str(&out).unwrap()
}

fn ready_message(o: &Value) -> String {
    o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Runs `bpl-ecotools <cmd>` on the captured objects; returns name -> (status, message).
fn verdicts(tool: &Path, cmd: &[&str], files: &[PathBuf]) -> BTreeMap<String, (String, String)> {
    let mut args: Vec<&str> = cmd.to_vec();
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let (ok, out) = run(tool, &args);
    assert!(ok, "bpl-ecotools {cmd:?}: {out}");
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (
                v["name"].as_str().unwrap().to_string(),
                (
                    v["status"].as_str().unwrap().to_string(),
                    v["message"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn argo_cd_health_and_kstatus_read_each_state_as_a_user_would() {
    let ecotools = tokio::task::spawn_blocking(|| tool("ecotools"));
    let rig = Rig::with_private_emulator(&[]).await;
    install_crd(&rig).await;
    let ns = rig.namespace("eco-health").await;
    let net = rig.network(&ns).await;
    let base =
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "privateDns": false});
    let with = |extra: Value| {
        let mut s = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    };
    // bedrock-agent-runtime endpoints stay pending; bedrock-agent ones go pending -> failed.
    rig.harness(
        "POST",
        "new-endpoints",
        json!({"service": "bedrock-agent-runtime", "hold": {"state": "pending", "seconds": null}}),
    )
    .await;
    let (code, msg) = (
        "InsufficientFreeAddressesInSubnet",
        "subnet has no free addresses",
    );
    rig.harness(
        "POST",
        "new-endpoints",
        json!({"service": "bedrock-agent", "fail": {"state": "failed", "code": code, "message": msg}}),
    )
    .await;

    let dir = scratch("health");
    let mut captured: Vec<(&str, Value)> = vec![];
    // Created while no operator runs: no status at all yet.
    create_bpl(&rig, &ns, "new", base.clone()).await;
    captured.push(("new", object_json(&rig, &ns, "new")));
    create_bpl(&rig, &ns, "ready", base.clone()).await;
    create_bpl(
        &rig,
        &ns,
        "pending",
        with(json!({"services": ["bedrock-agent-runtime"]})),
    )
    .await;
    create_bpl(
        &rig,
        &ns,
        "invalid",
        with(json!({"policy": {"preset": "Custom", "document": "{nope"}})),
    )
    .await;
    create_bpl(
        &rig,
        &ns,
        "failed",
        with(json!({"services": ["bedrock-agent"]})),
    )
    .await;
    let mut op = rig.operator(&ns, &[]);
    let t = Duration::from_secs(60);
    wait_ready(&rig, &ns, "ready", "True", Some("Ready"), t).await;
    wait_ready(&rig, &ns, "invalid", "False", Some("InvalidPolicy"), t).await;
    wait_ready(&rig, &ns, "failed", "False", Some("EndpointFailed"), t).await;
    // Still pending after the others settled (held by the emulator).
    wait_ready(&rig, &ns, "pending", "False", Some("EndpointPending"), t).await;
    for name in ["ready", "pending", "invalid", "failed"] {
        captured.push((name, object_json(&rig, &ns, name)));
    }
    // EC2 throttles every CreateSecurityGroup (the SDK's retries too): retried with backoff.
    rig.harness(
        "POST",
        "faults",
        json!({"action": "CreateSecurityGroup", "error": "RequestLimitExceeded"}),
    )
    .await;
    create_bpl(&rig, &ns, "throttled", base.clone()).await;
    wait_ready(
        &rig,
        &ns,
        "throttled",
        "False",
        Some("AwsRequestLimitExceeded"),
        t,
    )
    .await;
    captured.push(("throttled", object_json(&rig, &ns, "throttled")));
    rig.harness("DELETE", "faults", json!({})).await;
    // A spec change the operator has not seen (it is stopped): generation 2, observed 1.
    op.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, _, err) = rig.kubectl(&[
        "-n",
        &ns,
        "patch",
        "bpl",
        "ready",
        "--type=merge",
        "-p",
        r#"{"spec":{"tags":{"team":"ml"}}}"#,
    ]);
    assert!(ok, "patch: {err}");
    let unobserved = object_json(&rig, &ns, "ready");
    assert_eq!(unobserved["metadata"]["generation"], 2);
    assert_eq!(unobserved["status"]["observedGeneration"], 1);
    let mut unobserved = unobserved;
    // One name per state in the tools' output.
    unobserved["metadata"]["name"] = json!("unobserved");
    captured.push(("unobserved", unobserved));

    let files: Vec<PathBuf> = captured
        .iter()
        .map(|(state, o)| {
            let f = dir.join(format!("{state}.json"));
            std::fs::write(&f, serde_json::to_string_pretty(o).unwrap()).unwrap();
            f
        })
        .collect();
    let ecotools = ecotools.await.unwrap();
    let script = repo_root().join("docs/gitops/argocd-health.lua");
    let argo = verdicts(
        &ecotools,
        &["argo-health", script.to_str().unwrap()],
        &files,
    );
    let kstatus = verdicts(&ecotools, &["kstatus"], &files);

    // state -> (Argo CD health, kstatus)
    let expected = [
        ("new", "Progressing", "Current"),
        ("ready", "Healthy", "Current"),
        ("pending", "Progressing", "InProgress"),
        ("invalid", "Degraded", "Failed"),
        ("failed", "Degraded", "Failed"),
        ("throttled", "Progressing", "InProgress"),
        ("unobserved", "Progressing", "InProgress"),
    ];
    let mut table = String::from("| state | Argo CD health | kstatus |\n| --- | --- | --- |\n");
    for (state, _, _) in expected {
        let (a, am) = &argo[state];
        let (k, km) = &kstatus[state];
        table.push_str(&format!("| {state} | {a}: {am} | {k}: {km} |\n"));
    }
    std::fs::write(dir.join("table.md"), &table).unwrap();
    eprintln!("{table}");
    for (state, want_argo, want_kstatus) in expected {
        assert_eq!(
            argo[state].0, want_argo,
            "Argo CD health of {state}\n{table}"
        );
        assert_eq!(
            kstatus[state].0, want_kstatus,
            "kstatus of {state}\n{table}"
        );
    }
    // What a person reads next to the status: the Ready condition's message, which says what
    // to fix.
    let object = |s: &str| {
        captured
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, o)| o.clone())
            .unwrap()
    };
    for state in ["invalid", "failed", "pending", "ready", "throttled"] {
        let m = ready_message(&object(state));
        assert!(!m.is_empty(), "{state} has a Ready message");
        assert!(
            argo[state].1.contains(&m),
            "Argo message of {state}: {:?} lacks {m:?}",
            argo[state].1
        );
    }
    assert!(argo["failed"].1.starts_with("EndpointFailed: "));
    assert!(argo["failed"].1.contains(msg), "{:?}", argo["failed"].1);
    assert!(argo["invalid"].1.starts_with("InvalidPolicy: "));
    for state in ["invalid", "failed"] {
        assert_eq!(kstatus[state].1, ready_message(&object(state)), "{state}");
    }
    assert!(
        kstatus["unobserved"].1.contains("generation is 2"),
        "{:?}",
        kstatus["unobserved"].1
    );
    assert!(argo["unobserved"].1.contains("generation 2"));
    drop(op);
}

/// The argocd-cm snippet in docs/gitops.md carries the tested script verbatim.
#[test]
fn gitops_doc_embeds_the_tested_health_script() {
    let script =
        std::fs::read_to_string(repo_root().join("docs/gitops/argocd-health.lua")).unwrap();
    let doc = std::fs::read_to_string(repo_root().join("docs/gitops.md")).unwrap();
    assert!(
        doc.contains("resource.customizations.health.bedrock.privatelink.io_BedrockPrivateLink: |")
    );
    let indented: String = script
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    assert!(
        doc.contains(&indented),
        "docs/gitops.md must embed docs/gitops/argocd-health.lua, indented by 4 spaces"
    );
}

// ---- kubectl explain -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_explain_shows_what_each_field_means() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    // The API server publishes a changed CRD's OpenAPI a moment after it is established.
    let policy = eventually(
        Duration::from_secs(60),
        "kubectl explain bpl.spec.policy",
        || {
            let (ok, out, _) = rig.kubectl(&["explain", "bpl.spec.policy"]);
            let out = flat(&out);
            std::future::ready((ok && out.contains("InvokeOnly (default)")).then_some(out))
        },
    )
    .await;
    for needle in [
        "KIND: BedrockPrivateLink",
        "FIELD: policy <Object>",
        "The endpoint policy (which Bedrock calls may pass through the endpoint). Default: preset InvokeOnly",
        "document <string>",
        "2 to 20480 characters; required with preset Custom",
        "models <[]string>",
        "1 to 50. Default: all models",
        "organizationId <string>",
        "principals <[]string>",
        "preset <string>",
        "enum: InvokeOnly, ReadOnly, FullAccess, Custom",
    ] {
        assert!(
            policy.contains(needle),
            "explain lacks {needle:?}:\n{policy}"
        );
    }
    for (field, needles) in [
        ("bpl.spec.vpcId", &["Immutable", "aws.defaultVpcId"][..]),
        (
            "bpl.spec.region",
            &["Immutable", "Default: the operator's region"][..],
        ),
        (
            "bpl.spec.privateDns",
            &["Default: true", "enableDnsHostnames"][..],
        ),
        ("bpl.spec.tags", &["at most 30", "aws:"][..]),
        (
            "bpl.status.endpoints.state",
            &["available", "failed, rejected and expired do not recover"][..],
        ),
        (
            "bpl.status.conditions",
            &["Stalled (True when a person must act)"][..],
        ),
        (
            "bpl.status.observedGeneration",
            &["metadata.generation"][..],
        ),
    ] {
        let (ok, out, err) = rig.kubectl(&["explain", field]);
        assert!(ok, "kubectl explain {field}: {err}");
        let out = flat(&out);
        for n in needles {
            assert!(out.contains(n), "explain {field} lacks {n:?}:\n{out}");
        }
    }
}

// ---- Alerts and dashboard ------------------------------------------------------------------

/// `helm template` of the chart (release bpl in bpl-system) with `set`, as parsed documents.
fn helm_template(set: &[&str]) -> Vec<Value> {
    let helm = PathBuf::from(&rig_env()["KUBEBUILDER_ASSETS"]).join("helm");
    let mut args = vec![
        "template",
        "bpl",
        "charts/bedrock-privatelink-operator",
        "--namespace",
        "bpl-system",
    ];
    for s in set {
        args.extend(["--set", *s]);
    }
    let out = Command::new(helm)
        .args(&args)
        .current_dir(repo_root())
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| {
            let v: Value = serde::Deserialize::deserialize(d).ok()?;
            (!v.is_null()).then_some(v)
        })
        .collect()
}

const MONITORING: [&str; 2] = [
    "prometheusRule.enabled=true",
    "grafanaDashboard.enabled=true",
];

fn rule_groups(docs: &[Value]) -> Value {
    docs.iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule")["spec"]["groups"]
        .clone()
}

fn dashboard(docs: &[Value]) -> (Value, Value) {
    let cm = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"] == "bpl-bedrock-privatelink-operator-dashboard"
        })
        .expect("the dashboard ConfigMap")
        .clone();
    let text = cm["data"]["bedrock-privatelink-operator.json"]
        .as_str()
        .expect("dashboard JSON in the ConfigMap");
    let json: Value = serde_json::from_str(text).expect("the dashboard is valid JSON");
    (cm, json)
}

#[test]
fn monitoring_objects_are_off_by_default() {
    let docs = helm_template(&[]);
    let kinds: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!kinds.contains(&"PrometheusRule".to_string()), "{kinds:?}");
    assert!(!kinds.contains(&"ServiceMonitor".to_string()), "{kinds:?}");
    assert!(
        !docs
            .iter()
            .any(|d| d["metadata"]["labels"]["grafana_dashboard"].is_string()),
        "no dashboard ConfigMap unless asked for"
    );
    let on = helm_template(&MONITORING);
    let (cm, dash) = dashboard(&on);
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join(
            "charts/bedrock-privatelink-operator/dashboards/bedrock-privatelink-operator.json",
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        dash, shipped,
        "the ConfigMap carries the dashboard file unchanged"
    );
}

#[test]
fn chart_alerts_pass_promtool_unit_tests() {
    let promtool = tool("promtool");
    let groups = rule_groups(&helm_template(&MONITORING));
    let dir = scratch("alerts");
    std::fs::write(
        dir.join("rules.yaml"),
        serde_yaml::to_string(&json!({ "groups": groups })).unwrap(),
    )
    .unwrap();
    let tests = std::fs::read_to_string(repo_root().join("tests/alerts/alerts_test.yaml")).unwrap();
    std::fs::write(dir.join("alerts_test.yaml"), &tests).unwrap();
    let rules = dir.join("rules.yaml");
    let (ok, out) = run(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    assert!(ok, "promtool check rules: {out}");
    let (ok, out) = run(
        &promtool,
        &[
            "test",
            "rules",
            dir.join("alerts_test.yaml").to_str().unwrap(),
        ],
    );
    assert!(ok, "promtool test rules: {out}");
    eprintln!("promtool test rules: {}", out.trim());

    // Each alert is exercised by a case and tells a person what to do and where to read more.
    let mut names = vec![];
    for rule in groups[0]["rules"].as_array().unwrap() {
        let name = rule["alert"].as_str().expect("alerting rules only");
        names.push(name.to_string());
        assert!(
            tests.contains(&format!("alertname=\"{name}\""))
                || tests.contains(&format!("alertname: {name}")),
            "{name} has no case in tests/alerts/alerts_test.yaml"
        );
        let a = &rule["annotations"];
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                a[key].as_str().is_some_and(|s| s.len() > 20),
                "{name} lacks {key}"
            );
        }
        let url = a["runbook_url"].as_str().unwrap();
        assert!(
            url.ends_with("docs/install.md#by-condition-reason")
                || url.ends_with("docs/install.md#the-operator-itself"),
            "{name}: {url}"
        );
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name} severity"
        );
    }
    // The anchors the alerts link to exist in docs/install.md.
    let install = std::fs::read_to_string(repo_root().join("docs/install.md")).unwrap();
    assert!(install.contains("### By condition reason"));
    assert!(install.contains("### The operator itself"));
    // The list in docs/monitoring.md is the list in the chart.
    let doc = std::fs::read_to_string(repo_root().join("docs/monitoring.md")).unwrap();
    for n in &names {
        assert!(
            doc.contains(&format!("`{n}`")),
            "docs/monitoring.md lacks {n}"
        );
    }
    assert_eq!(names.len(), 6, "{names:?}");
}

/// Metric names a PromQL expression selects (`name{` and every `bpl_` identifier).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_alphabetic() || chars[i] == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let before = start.checked_sub(1).map(|j| chars[j]);
            let in_variable = before == Some('$');
            if !in_variable && (chars.get(i) == Some(&'{') || word.starts_with("bpl_")) {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Sample names /metrics can carry, from its TYPE lines (a family with no samples yet still
/// counts) and its samples.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            match kind {
                "counter" => {
                    out.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{name}{s}"));
                    }
                }
                _ => {
                    out.insert(name.to_string());
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            out.insert(line[..end].to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_alerts_use_only_metrics_the_operator_exports() {
    let promtool = tokio::task::spawn_blocking(|| tool("promtool"));
    let docs = helm_template(&MONITORING);
    let (_, dash) = dashboard(&docs);
    let groups = rule_groups(&docs);

    // The dashboard's queries, with Grafana's variables as Grafana would fill them.
    let mut queries: Vec<(String, String)> = vec![];
    for p in dash["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap().to_string();
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            let e = t["expr"].as_str().expect("expr");
            queries.push((
                title.clone(),
                e.replace("$__rate_interval", "2m").replace("$job", ".+"),
            ));
        }
    }
    let titles: Vec<&str> = queries.iter().map(|(t, _)| t.as_str()).collect();
    for want in [
        "Objects by Ready",
        "Reconcile latency",
        "EC2 calls by action",
        "EC2 throttles by action",
        "Memory",
    ] {
        assert!(
            titles.contains(&want),
            "dashboard lacks a {want} panel: {titles:?}"
        );
    }
    // Every query parses as PromQL (promtool parses recording rules with Prometheus' parser).
    let dir = scratch("dashboard");
    let records: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, e))| json!({"record": format!("dashboard:query{i}"), "expr": e}))
        .collect();
    let file = dir.join("dashboard-queries.yaml");
    std::fs::write(
        &file,
        serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": records}]}))
            .unwrap(),
    )
    .unwrap();

    // What a running operator exports, after it reconciled an object. A family with no sample
    // yet is not in /metrics at all, so EC2 throttles one call (the SDK retries it).
    let rig = Rig::with_private_emulator(&[]).await;
    install_crd(&rig).await;
    let ns = rig.namespace("eco-metrics").await;
    let net = rig.network(&ns).await;
    rig.harness(
        "POST",
        "faults",
        json!({"action": "CreateVpcEndpoint", "error": "RequestLimitExceeded", "count": 1}),
    )
    .await;
    let op = rig.operator(&ns, &[]);
    create_bpl(
        &rig,
        &ns,
        "m",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "privateDns": false}),
    )
    .await;
    wait_ready(&rig, &ns, "m", "True", None, Duration::from_secs(60)).await;
    let text = op.metrics().await;
    let exported = exported_names(&text);
    assert!(exported.contains("bpl_reconciles_total"), "{text}");
    assert!(text.contains("bpl_leader 1"), "{text}");
    assert!(
        text.contains("bpl_objects_by_reason{ready=\"True\",reason=\"Ready\"} 1"),
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "bpl_ec2_throttles_total", &[]),
        1.0,
        "{text}"
    );
    let rss = metric_sum(&text, "bpl_resident_memory_bytes", &[]);
    assert!(rss > 1e6 && rss < 1e9, "resident memory {rss}");

    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (title, e) in &queries {
        for m in metric_names(e) {
            used.entry(m)
                .or_default()
                .push(format!("dashboard: {title}"));
        }
    }
    for rule in groups[0]["rules"].as_array().unwrap() {
        for m in metric_names(rule["expr"].as_str().unwrap()) {
            used.entry(m)
                .or_default()
                .push(format!("alert: {}", rule["alert"]));
        }
    }
    assert!(used.len() >= 8, "{used:?}");
    // `up` is written by Prometheus for every scrape target, not by the operator.
    let missing: Vec<_> = used
        .iter()
        .filter(|(m, _)| *m != "up" && !exported.contains(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics used but not exported: {missing:?}\nexported: {exported:?}"
    );

    let promtool = promtool.await.unwrap();
    let (ok, out) = run(&promtool, &["check", "rules", file.to_str().unwrap()]);
    assert!(ok, "dashboard queries do not parse: {out}");
    drop(op);
}

#[test]
fn metric_names_finds_selected_metrics_only() {
    let names = metric_names(
        r#"histogram_quantile(0.9, sum by (le) (rate(bpl_reconcile_duration_seconds_bucket{job=~"$job"}[$__rate_interval]))) / up{job="x"} + bpl_leader"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["bpl_leader", "bpl_reconcile_duration_seconds_bucket", "up"]
    );
    let exported = exported_names(
        "# TYPE bpl_ec2_throttles counter\n# TYPE bpl_reconcile_duration_seconds histogram\nbpl_objects{ready=\"True\"} 1\n# EOF\n",
    );
    assert!(exported.contains("bpl_ec2_throttles_total"));
    assert!(exported.contains("bpl_reconcile_duration_seconds_bucket"));
    assert!(exported.contains("bpl_objects"));
    assert!(!exported.contains("bpl_ec2_throttles"));
}
