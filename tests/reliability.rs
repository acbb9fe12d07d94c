//! Reliability on the rig: throttling and 5xx, slow and failed endpoints, crashes at random
//! moments, drift in AWS, delete ordering, and an object the operator cannot read.
//!
//! Every test that changes the emulator's config or injects faults runs against an EC2 emulator
//! of its own (`Rig::with_private_emulator`), so other tests never see its faults.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{IpPermission, IpRange};
use bpl::api::BedrockPrivateLink;
use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

// ----------------------------------------------------------------------------------------------
// helpers

fn uid_of(o: &BedrockPrivateLink) -> String {
    o.metadata.uid.clone().expect("uid")
}

fn state_of(e: &aws_sdk_ec2::types::VpcEndpoint) -> String {
    e.state()
        .map(|s| s.as_str().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Endpoints tagged with the uid that are neither deleting nor deleted.
async fn live_endpoints(rig: &Rig, uid: &str) -> Vec<aws_sdk_ec2::types::VpcEndpoint> {
    rig.owned_endpoints(uid)
        .await
        .into_iter()
        .filter(|e| !matches!(state_of(e).as_str(), "deleting" | "deleted"))
        .collect()
}

/// service short name -> number of live endpoints for it.
fn per_service(endpoints: &[aws_sdk_ec2::types::VpcEndpoint]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in endpoints {
        let s = e
            .service_name()
            .unwrap_or_default()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_string();
        *m.entry(s).or_default() += 1;
    }
    m
}

/// Ready=True at the object's current generation.
async fn wait_converged(rig: &Rig, ns: &str, name: &str, timeout: Duration) -> BedrockPrivateLink {
    let api = rig.bpls(ns);
    eventually(timeout, &format!("{ns}/{name} converged"), || {
        let api = api.clone();
        async move {
            let o = api.get(name).await.ok()?;
            let s = o.status.as_ref()?;
            let r = condition(&o, "Ready")?;
            (r.status == "True" && s.observed_generation == o.metadata.generation)
                .then_some(o.clone())
        }
    })
    .await
}

fn https_from(cidr: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(443)
        .to_port(443)
        .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        .build()
}

fn total_calls(calls: &BTreeMap<String, u64>) -> u64 {
    calls.values().sum()
}

/// The harness's view of one endpoint.
async fn harness_endpoint(rig: &Rig, id: &str) -> Option<Value> {
    let v = rig.harness("GET", "endpoints", Value::Null).await;
    v["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
}

// ----------------------------------------------------------------------------------------------
// 1. throttling and 5xx

const MUTATIONS: [&str; 8] = [
    "CreateSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress",
    "DeleteSecurityGroup",
    "CreateVpcEndpoint",
    "ModifyVpcEndpoint",
    "DeleteVpcEndpoints",
];
const DESCRIBES: [&str; 7] = [
    "DescribeVpcs",
    "DescribeVpcAttribute",
    "DescribeSubnets",
    "DescribeVpcEndpointServices",
    "DescribeSecurityGroups",
    "DescribeVpcEndpoints",
    "DescribeInstances",
];

/// ~30% of EC2 calls fail: "*" throttles 15% of them (20 ms latency) and each action's own rule
/// answers InternalError to 18% of what is left (15 ms more). Mutations fail *after* running
/// (the response is lost), so the SDK's retries must be idempotent: ClientToken, group names
/// derived from the uid, Duplicate/NotFound treated as done.
async fn inject_faults(rig: &Rig) {
    rig.harness(
        "POST",
        "faults",
        json!({"action": "*", "error": "RequestLimitExceeded", "rate": 0.15, "latency_ms": 20}),
    )
    .await;
    for a in MUTATIONS {
        rig.harness(
            "POST",
            "faults",
            json!({"action": a, "error": "InternalError", "rate": 0.18, "latency_ms": 15, "phase": "after"}),
        )
        .await;
    }
    for a in DESCRIBES {
        rig.harness(
            "POST",
            "faults",
            json!({"action": a, "error": "InternalError", "rate": 0.18, "latency_ms": 15}),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_and_5xx_on_30_percent_of_calls_still_converge_without_duplicates() {
    let started = Instant::now();
    let rig = Rig::with_private_emulator(&["--fault-seed", "20240611"]).await;
    install_crd(&rig).await;
    let ns = rig.namespace("rel-throttle").await;
    let net = rig.network(&ns).await;
    inject_faults(&rig).await;
    rig.harness("POST", "calls/reset", json!({})).await;
    let op = rig.operator(&ns, &["--concurrency", "8"]);

    const N: usize = 20;
    let names: Vec<String> = (0..N).map(|i| format!("t{i:02}")).collect();
    // privateDns off: 20 endpoints for bedrock-runtime share one VPC.
    let spec =
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "privateDns": false});
    let objs =
        futures::future::join_all(names.iter().map(|n| create_bpl(&rig, &ns, n, spec.clone())))
            .await;
    let uids: Vec<String> = objs.iter().map(uid_of).collect();
    futures::future::join_all(
        names
            .iter()
            .map(|n| wait_converged(&rig, &ns, n, Duration::from_secs(150))),
    )
    .await;
    let converged = started.elapsed();

    let faulted = rig.harness("GET", "calls", Value::Null).await;
    let calls: u64 = faulted["calls"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    let faults: u64 = faulted["faulted"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    // The test's own checks must not be faulted.
    rig.harness("DELETE", "faults", Value::Null).await;
    for (n, uid) in names.iter().zip(&uids) {
        let eps = live_endpoints(&rig, uid).await;
        assert_eq!(eps.len(), 1, "{n}: exactly one endpoint, got {eps:?}");
        assert_eq!(
            rig.owned_groups(uid).await.len(),
            1,
            "{n}: exactly one group"
        );
    }
    let m = op.metrics().await;
    let throttled_attempts = metric_sum(
        &m,
        "bpl_ec2_attempts_total",
        &["outcome=\"RequestLimitExceeded\""],
    );
    let internal_attempts =
        metric_sum(&m, "bpl_ec2_attempts_total", &["outcome=\"InternalError\""]);
    let throttles = metric_sum(&m, "bpl_ec2_throttles_total", &[]);
    let ok_attempts = metric_sum(&m, "bpl_ec2_attempts_total", &["outcome=\"ok\""]);
    eprintln!(
        "throttle test: {N} objects Ready in {converged:?}; emulator calls {calls}, faulted {faults} ({:.0}%); operator attempts ok={ok_attempts} RequestLimitExceeded={throttled_attempts} InternalError={internal_attempts}; throttles_total={throttles}",
        100.0 * faults as f64 / calls.max(1) as f64
    );
    assert!(
        faults as f64 >= 0.2 * calls as f64,
        "about 30% of calls were faulted"
    );
    assert!(
        throttled_attempts > 0.0 && throttles > 0.0,
        "retried throttles in /metrics"
    );
    assert!(internal_attempts > 0.0, "retried 5xx in /metrics");

    // Delete under the same faults: everything goes.
    inject_faults(&rig).await;
    futures::future::join_all(names.iter().map(|n| delete_bpl(&rig, &ns, n))).await;
    futures::future::join_all(
        names
            .iter()
            .map(|n| wait_gone(&rig, &ns, n, Duration::from_secs(120))),
    )
    .await;
    rig.harness("DELETE", "faults", Value::Null).await;
    for uid in &uids {
        assert!(
            rig.owned_endpoints(uid).await.is_empty(),
            "endpoint left behind"
        );
        assert!(rig.owned_groups(uid).await.is_empty(), "group left behind");
    }
    eprintln!("throttle test total {:?}", started.elapsed());
}

// ----------------------------------------------------------------------------------------------
// 2. pending for 30 s

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_endpoint_is_reported_and_ready_follows_within_3s_of_available() {
    let rig = Rig::with_private_emulator(&[]).await;
    install_crd(&rig).await;
    let ns = rig.namespace("rel-pending").await;
    let net = rig.network(&ns).await;
    rig.harness(
        "POST",
        "new-endpoints",
        json!({"service": "bedrock-runtime", "hold": {"state": "pending", "seconds": null}}),
    )
    .await;
    let _op = rig.operator(&ns, &["--pending-requeue-ms", "500"]);
    let created = Instant::now();
    let obj = create_bpl(
        &rig,
        &ns,
        "slow",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}}),
    )
    .await;
    let uid = uid_of(&obj);
    let o = wait_ready(
        &rig,
        &ns,
        "slow",
        "False",
        Some("EndpointPending"),
        READY_TIMEOUT,
    )
    .await;
    let msg = condition(&o, "Ready").unwrap().message.clone();
    assert!(
        msg.contains("waiting for AWS") && msg.contains("pending"),
        "{msg}"
    );
    let id = o.status.as_ref().unwrap().endpoints[0]
        .vpc_endpoint_id
        .clone();
    assert_eq!(o.status.as_ref().unwrap().endpoints[0].state, "pending");

    // 30 s of pending: the object keeps saying so, and the operator changes nothing.
    let mut calls_before = rig.emulator_calls().await;
    let mut polls = 0;
    while created.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let o = rig.bpls(&ns).get("slow").await.unwrap();
        let r = condition(&o, "Ready").unwrap();
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "EndpointPending")
        );
        polls += 1;
        if polls == 1 {
            calls_before = rig.emulator_calls().await;
        }
    }
    let calls_after = rig.emulator_calls().await;
    for a in [
        "CreateVpcEndpoint",
        "ModifyVpcEndpoint",
        "DeleteVpcEndpoints",
    ] {
        assert_eq!(
            calls_before.get(a),
            calls_after.get(a),
            "no {a} while the endpoint is pending"
        );
    }
    assert_eq!(live_endpoints(&rig, &uid).await.len(), 1);

    rig.harness("POST", &format!("endpoints/{id}/release"), json!({}))
        .await;
    let available = eventually(Duration::from_secs(10), "available in the emulator", || {
        let rig = &rig;
        let id = id.clone();
        async move {
            let e = harness_endpoint(rig, &id).await?;
            (e["state"] == "available").then(Instant::now)
        }
    })
    .await;
    let o = wait_ready(
        &rig,
        &ns,
        "slow",
        "True",
        Some("Ready"),
        Duration::from_secs(10),
    )
    .await;
    let lag = available.elapsed();
    eprintln!(
        "pending test: Ready {lag:?} after the endpoint turned available (pending {:?})",
        available - created
    );
    assert!(
        lag <= Duration::from_secs(3),
        "Ready {lag:?} after available"
    );
    assert_eq!(o.status.as_ref().unwrap().endpoints[0].vpc_endpoint_id, id);
    assert_eq!(o.status.as_ref().unwrap().endpoints[0].state, "available");
}

// ----------------------------------------------------------------------------------------------
// 3. failed / rejected

#[tokio::test(flavor = "multi_thread")]
async fn failed_and_rejected_endpoints_surface_last_error_without_a_hot_loop() {
    let rig = Rig::with_private_emulator(&["--pending-seconds", "0.3"]).await;
    install_crd(&rig).await;
    let ns = rig.namespace("rel-failed").await;
    let net = rig.network(&ns).await;
    const RESYNC: u64 = 5;
    let _op = rig.operator(&ns, &["--resync-seconds", &RESYNC.to_string()]);
    // "refused": every endpoint of its service goes pending -> rejected on its own (the
    // harness's new-endpoint rule). The operator says why and replaces it with backoff
    // (tests/edges.rs follows a replacement that succeeds).
    let (code, message) = ("Rejected", "the service owner rejected the connection");
    rig.harness(
        "POST",
        "new-endpoints",
        json!({"service": "bedrock-agent-runtime", "fail": {"state": "rejected", "code": code, "message": message}}),
    )
    .await;
    let spec = json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()},
        "privateDns": false, "services": ["bedrock-agent-runtime"]});
    let refused = create_bpl(&rig, &ns, "refused", spec).await;
    let uid = uid_of(&refused);
    let o = wait_ready(
        &rig,
        &ns,
        "refused",
        "False",
        Some("EndpointFailed"),
        Duration::from_secs(RESYNC + 10),
    )
    .await;
    let msg = &condition(&o, "Ready").unwrap().message;
    assert!(
        msg.contains(message) && msg.contains(code) && msg.contains("rejected"),
        "{msg}"
    );
    assert_eq!(
        condition(&o, "EndpointsReady").unwrap().reason,
        "EndpointFailed"
    );
    eventually(
        Duration::from_secs(10),
        "a Warning event EndpointFailed",
        || async {
            (!warning_events(&rig, &ns, &uid, "EndpointFailed")
                .await
                .is_empty())
            .then_some(())
        },
    )
    .await;

    // No hot loop: the EC2 call rate stays bounded while it keeps failing (replacements back
    // off from 10 s; a loop at the pending requeue would be hundreds of calls).
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.harness("POST", "calls/reset", json!({})).await;
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let calls = rig.emulator_calls().await;
    let total = total_calls(&calls);
    eprintln!("failed test: {total} EC2 calls in {window:?} while failing: {calls:?}");
    assert!(total <= 60, "EC2 calls in {window:?}: {calls:?}");
    assert_eq!(calls.get("ModifyVpcEndpoint").copied().unwrap_or(0), 0);
    assert!(
        calls.get("DeleteVpcEndpoints").copied().unwrap_or(0) <= 2,
        "replacements back off: {calls:?}"
    );
    assert!(rig.owned_endpoints(&uid).await.len() <= 1, "one at a time");
    assert_eq!(rig.owned_groups(&uid).await.len(), 1);
    // A failing object is still deleted with everything it made.
    delete_bpl(&rig, &ns, "refused").await;
    wait_gone(&rig, &ns, "refused", READY_TIMEOUT).await;
    assert!(rig.owned_endpoints(&uid).await.is_empty());
    assert!(rig.owned_groups(&uid).await.is_empty());
}

// ----------------------------------------------------------------------------------------------
// 4. crash consistency

const KILLS: usize = 50;

/// What one object should look like after a step of its lifecycle.
fn crash_spec(net: &Network, step: usize) -> Option<(Value, Vec<&'static str>)> {
    let ids = net.subnet_ids();
    let base = |v: Value| {
        let mut s = json!({"vpcId": net.vpc_id, "privateDns": false});
        s.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        s
    };
    match step % 5 {
        0 => Some((
            base(json!({"subnets": {"ids": ids[..2]}})),
            vec!["bedrock-runtime"],
        )),
        1 => Some((
            base(json!({"subnets": {"ids": ids}, "policy": {"preset": "FullAccess"}})),
            vec!["bedrock-runtime"],
        )),
        2 => Some((
            base(
                json!({"subnets": {"ids": ids[1..]}, "services": ["bedrock-runtime", "bedrock-agent-runtime"], "policy": {"preset": "ReadOnly"}}),
            ),
            vec!["bedrock-agent-runtime", "bedrock-runtime"],
        )),
        3 => Some((
            base(
                json!({"subnets": {"ids": ids[1..]}, "services": ["bedrock-agent-runtime"], "securityGroup": {"allowFrom": {"cidrs": ["10.200.0.0/24"]}}}),
            ),
            vec!["bedrock-agent-runtime"],
        )),
        _ => None, // deleted
    }
}

struct Slot {
    name: String,
    step: usize,
    uid: Option<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_operator_at_random_moments_never_duplicates_or_leaks() {
    let started = Instant::now();
    let rig = Rig::with_private_emulator(&[
        "--pending-seconds",
        "0.1",
        "--deleting-seconds",
        "0.1",
        "--deleted-seconds",
        "0.1",
    ])
    .await;
    install_crd(&rig).await;
    let ns = rig.namespace("rel-crash").await;
    let net = rig.network(&ns).await;
    // 25 ms per EC2 call stretches a reconcile over a few hundred ms, so that the random kills
    // land inside reconciles, not only between them.
    rig.harness(
        "POST",
        "faults",
        json!({"action": "*", "error": null, "latency_ms": 25}),
    )
    .await;
    let args = ["--pending-requeue-ms", "100"];
    let mut op = rig.operator(&ns, &args);
    let mut logs = vec![op.log.clone()];
    let api = rig.bpls(&ns);
    // Three objects a step apart: at every kill one is being created or updated while another
    // is updated or deleted.
    let mut slots: Vec<Slot> = (0..3)
        .map(|i| Slot {
            name: format!("c{i}"),
            step: 0,
            uid: None,
        })
        .collect();
    // Staggered: c{i} starts at step i, so the three are always in different phases.
    for (i, s) in slots.iter_mut().enumerate() {
        let (spec, _) = crash_spec(&net, 0).unwrap();
        s.uid = Some(uid_of(&create_bpl(&rig, &ns, &s.name, spec).await));
        for _ in 0..i {
            s.step += 1;
            let (spec, _) = crash_spec(&net, s.step).unwrap();
            api.patch(
                &s.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await
            .unwrap();
        }
    }
    for s in &slots {
        wait_converged(&rig, &ns, &s.name, READY_TIMEOUT).await;
    }

    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    let mut delays = Vec::new();
    let mut mid_flight = 0;
    for kill in 0..KILLS {
        // Next step for every object.
        for s in slots.iter_mut() {
            s.step += 1;
            match (s.step % 5, crash_spec(&net, s.step)) {
                (0, Some((spec, _))) => {
                    s.uid = Some(uid_of(&create_bpl(&rig, &ns, &s.name, spec).await));
                    *phases.entry("create").or_default() += 1;
                }
                (_, Some((spec, _))) => {
                    let spec = with_nulls(spec);
                    api.patch(
                        &s.name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"spec": spec})),
                    )
                    .await
                    .unwrap();
                    *phases.entry("update").or_default() += 1;
                }
                (_, None) => {
                    delete_bpl(&rig, &ns, &s.name).await;
                    *phases.entry("delete").or_default() += 1;
                }
            }
        }
        let delay = Duration::from_millis(rand::random::<u64>() % 800);
        delays.push(delay);
        tokio::time::sleep(delay).await;
        // Was anything still in flight? (converged objects have Ready=True at their generation)
        let mut busy = false;
        for s in &slots {
            busy |= match api.get_opt(&s.name).await.unwrap() {
                None => false,
                Some(o) => {
                    o.metadata.deletion_timestamp.is_some()
                        || o.status.as_ref().and_then(|st| st.observed_generation)
                            != o.metadata.generation
                        || condition(&o, "Ready").is_none_or(|r| r.status != "True")
                }
            };
        }
        op.kill();
        mid_flight += busy as usize;
        op = rig.operator(&ns, &args);
        logs.push(op.log.clone());

        for s in &slots {
            let uid = s.uid.clone().unwrap();
            match crash_spec(&net, s.step) {
                Some((_, services)) => {
                    let o = wait_converged(&rig, &ns, &s.name, Duration::from_secs(30)).await;
                    assert_eq!(uid_of(&o), uid);
                    let live = live_endpoints(&rig, &uid).await;
                    let want: BTreeMap<String, usize> =
                        services.iter().map(|s| (s.to_string(), 1)).collect();
                    assert_eq!(
                        per_service(&live),
                        want,
                        "kill {kill} ({delay:?}), {} step {}: one endpoint per service",
                        s.name,
                        s.step
                    );
                    let status_ids: BTreeSet<String> = o
                        .status
                        .as_ref()
                        .unwrap()
                        .endpoints
                        .iter()
                        .map(|e| e.vpc_endpoint_id.clone())
                        .collect();
                    let live_ids: BTreeSet<String> = live
                        .iter()
                        .filter_map(|e| e.vpc_endpoint_id().map(str::to_string))
                        .collect();
                    assert_eq!(
                        status_ids, live_ids,
                        "kill {kill}: status names the live endpoints"
                    );
                    let groups = rig.owned_groups(&uid).await;
                    assert_eq!(groups.len(), 1, "kill {kill}, {}: one group", s.name);
                    assert_eq!(
                        o.status.as_ref().unwrap().security_group_id.as_deref(),
                        groups[0].group_id()
                    );
                }
                None => {
                    wait_gone(&rig, &ns, &s.name, Duration::from_secs(30)).await;
                    // The finalizer goes only after both are gone: nothing may remain now.
                    assert!(
                        live_endpoints(&rig, &uid).await.is_empty(),
                        "kill {kill} ({delay:?}), {}: endpoint left after delete",
                        s.name
                    );
                    let groups = rig.owned_groups(&uid).await;
                    assert!(
                        groups.is_empty(),
                        "kill {kill}, {}: group left after delete: {groups:?}",
                        s.name
                    );
                }
            }
        }
    }
    // Removed services' endpoints finish deleting; nothing of a deleted object comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for s in &slots {
        let uid = s.uid.clone().unwrap();
        if let Some((_, services)) = crash_spec(&net, s.step) {
            let all = rig.owned_endpoints(&uid).await;
            assert_eq!(all.len(), services.len(), "{}: {all:?}", s.name);
        }
    }
    // The operator never had to clean up a duplicate either.
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            !text.contains("duplicate endpoint"),
            "{} made a duplicate",
            log.display()
        );
    }
    let calls = rig.emulator_calls().await;
    eprintln!(
        "crash test: {KILLS} kills ({mid_flight} with work in flight; delays {:?}..{:?}), disrupted {phases:?}, CreateVpcEndpoint {:?}, CreateSecurityGroup {:?}, in {:?}",
        delays.iter().min().unwrap(),
        delays.iter().max().unwrap(),
        calls.get("CreateVpcEndpoint"),
        calls.get("CreateSecurityGroup"),
        started.elapsed()
    );
    op.kill();
    for s in &slots {
        delete_bpl(&rig, &ns, &s.name).await;
    }
}

/// A merge patch that also clears the fields the new spec leaves out.
fn with_nulls(mut spec: Value) -> Value {
    let obj = spec.as_object_mut().unwrap();
    for k in ["services", "policy", "securityGroup", "subnets"] {
        obj.entry(k).or_insert(Value::Null);
    }
    spec
}

// ----------------------------------------------------------------------------------------------
// 6. drift

#[tokio::test(flavor = "multi_thread")]
async fn drift_in_aws_is_restored_within_one_resync_period() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("rel-drift").await;
    let net = rig.network(&ns).await;
    const RESYNC: Duration = Duration::from_secs(3);
    let _op = rig.operator(&ns, &["--resync-seconds", "3"]);
    let obj = create_bpl(
        &rig,
        &ns,
        "drift",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}}),
    )
    .await;
    let uid = uid_of(&obj);
    let o = wait_converged(&rig, &ns, "drift", READY_TIMEOUT).await;
    let group_id = o
        .status
        .as_ref()
        .unwrap()
        .security_group_id
        .clone()
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(rig.client.clone(), &ns);
    let mut report = Vec::new();
    // Restoring may take a resync period to notice plus AWS's own pending time after a change.
    let limit = RESYNC + Duration::from_secs(4);

    let settled = |what: &'static str| {
        let rig = &rig;
        let ns = ns.clone();
        let uid = uid.clone();
        async move {
            wait_converged(rig, &ns, "drift", READY_TIMEOUT).await;
            eventually(Duration::from_secs(20), what, || {
                let uid = uid.clone();
                async move {
                    let eps = live_endpoints(rig, &uid).await;
                    (eps.len() == 1 && state_of(&eps[0]) == "available").then(|| eps[0].clone())
                }
            })
            .await
        }
    };

    // a. The endpoint is deleted: a new one, and status and ConfigMap follow.
    let ep = settled("initial").await;
    let old = ep.vpc_endpoint_id().unwrap().to_string();
    rig.ec2
        .delete_vpc_endpoints()
        .vpc_endpoint_ids(&old)
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    let new = eventually(
        limit + Duration::from_secs(10),
        "endpoint recreated",
        || {
            let (rig, uid, old, ns, cms) =
                (&rig, uid.clone(), old.clone(), ns.clone(), cms.clone());
            async move {
                let eps = live_endpoints(rig, &uid).await;
                let e = eps
                    .first()
                    .filter(|e| eps.len() == 1 && e.vpc_endpoint_id() != Some(old.as_str()))?;
                let id = e.vpc_endpoint_id()?.to_string();
                let o = rig.bpls(&ns).get("drift").await.ok()?;
                (o.status.as_ref()?.endpoints.first()?.vpc_endpoint_id == id).then_some(())?;
                let data = cms.get("drift-bedrock").await.ok()?.data?;
                (data.get("BEDROCK_RUNTIME_VPC_ENDPOINT_ID") == Some(&id)).then_some(id)
            }
        },
    )
    .await;
    report.push((
        "endpoint deleted -> recreated, status + ConfigMap",
        t.elapsed(),
    ));
    assert_ne!(new, old);

    // b..d. Security group rules.
    let only_https_from_vpc = || async {
        let g = rig.owned_groups(&uid).await;
        (ingress_rules(&g[0]) == vec![format!("tcp/443-443 {}", net.cidr)]).then_some(())
    };
    settled("after recreate").await;
    rig.ec2
        .revoke_security_group_ingress()
        .group_id(&group_id)
        .ip_permissions(https_from(&net.cidr))
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    restored(&rig, limit, "ingress rule restored", only_https_from_vpc).await;
    report.push(("group's ingress rule revoked -> restored", t.elapsed()));

    rig.ec2
        .authorize_security_group_ingress()
        .group_id(&group_id)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(IpRange::builder().cidr_ip("203.0.113.0/24").build())
                .build(),
        )
        .ip_permissions(https_from("0.0.0.0/0"))
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    restored(&rig, limit, "foreign ingress revoked", only_https_from_vpc).await;
    report.push((
        "foreign ingress rules (22 and 443 from 0/0) -> revoked",
        t.elapsed(),
    ));

    rig.ec2
        .authorize_security_group_egress()
        .group_id(&group_id)
        .ip_permissions(https_from("0.0.0.0/0"))
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    restored(&rig, limit, "egress revoked", || async {
        let g = rig.owned_groups(&uid).await;
        egress_rules(&g[0]).is_empty().then_some(())
    })
    .await;
    report.push(("egress rule added -> revoked", t.elapsed()));

    // e..g. The endpoint's policy, subnets and private DNS.
    let id = settled("before policy")
        .await
        .vpc_endpoint_id()
        .unwrap()
        .to_string();
    let open = json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]});
    rig.ec2
        .modify_vpc_endpoint()
        .vpc_endpoint_id(&id)
        .policy_document(open.to_string())
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    restored(&rig, limit, "policy restored", || async {
        let e = live_endpoints(&rig, &uid).await.pop()?;
        let p: Value = serde_json::from_str(e.policy_document()?).ok()?;
        bpl::policy::equivalent(&p, &bpl::policy::render(None, "us-east-1").unwrap()).then_some(())
    })
    .await;
    report.push(("policy edited -> restored", t.elapsed()));

    settled("before subnets").await;
    let removed = net.subnet_ids()[2].clone();
    rig.ec2
        .modify_vpc_endpoint()
        .vpc_endpoint_id(&id)
        .remove_subnet_ids(&removed)
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    restored(&rig, limit, "subnet re-added", || async {
        let e = live_endpoints(&rig, &uid).await.pop()?;
        (e.subnet_ids().len() == 3 && e.subnet_ids().contains(&removed)).then_some(())
    })
    .await;
    report.push(("subnet removed -> re-added", t.elapsed()));

    settled("before private DNS").await;
    rig.ec2
        .modify_vpc_endpoint()
        .vpc_endpoint_id(&id)
        .private_dns_enabled(false)
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    restored(&rig, limit, "private DNS on", || async {
        let e = live_endpoints(&rig, &uid).await.pop()?;
        (e.private_dns_enabled() == Some(true)).then_some(())
    })
    .await;
    report.push(("private DNS switched off -> on", t.elapsed()));

    // h. The group itself: AWS refuses to delete a group in use; detached and deleted, it is
    //    replaced and attached again.
    settled("before group").await;
    let err = rig
        .ec2
        .delete_security_group()
        .group_id(&group_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_ec2::error::ProvideErrorMetadata::code(&err),
        Some("DependencyViolation"),
        "AWS refuses to delete a group in use"
    );
    let default_group = rig
        .ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&net.vpc_id)
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values("default")
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
        .modify_vpc_endpoint()
        .vpc_endpoint_id(&id)
        .add_security_group_ids(&default_group)
        .remove_security_group_ids(&group_id)
        .send()
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "group deletable", || async {
        rig.ec2
            .delete_security_group()
            .group_id(&group_id)
            .send()
            .await
            .ok()
    })
    .await;
    let t = Instant::now();
    let replacement = restored(
        &rig,
        limit + Duration::from_secs(3),
        "group replaced",
        || async {
            let g = rig.owned_groups(&uid).await;
            let g = g.first()?;
            let e = live_endpoints(&rig, &uid).await.pop()?;
            let groups: Vec<&str> = e.groups().iter().filter_map(|x| x.group_id()).collect();
            (groups == vec![g.group_id()?]
                && ingress_rules(g) == vec![format!("tcp/443-443 {}", net.cidr)])
            .then(|| g.group_id().unwrap().to_string())
        },
    )
    .await;
    report.push((
        "group detached + deleted -> new group attached",
        t.elapsed(),
    ));
    assert_ne!(replacement, group_id);
    wait_converged(&rig, &ns, "drift", Duration::from_secs(20)).await;
    // The object stayed Ready throughout, so `wait_converged` can return before the reconcile
    // that attached the replacement writes its status (EC2 shows the change first, the status
    // write ends that reconcile): wait for the write.
    let api = rig.bpls(&ns);
    eventually(
        Duration::from_secs(20),
        "status to name the replacement group",
        || {
            let (api, want) = (api.clone(), replacement.clone());
            async move {
                let o = api.get("drift").await.ok()?;
                (o.status?.security_group_id.as_deref() == Some(want.as_str())).then_some(())
            }
        },
    )
    .await;

    eprintln!("drift test (resync {RESYNC:?}):");
    for (what, took) in &report {
        eprintln!("  {what}: {took:?}");
    }
    delete_bpl(&rig, &ns, "drift").await;
    wait_gone(&rig, &ns, "drift", READY_TIMEOUT).await;
    assert!(rig.owned_endpoints(&uid).await.is_empty());
    assert!(rig.owned_groups(&uid).await.is_empty());
}

async fn restored<T, F, Fut>(_rig: &Rig, limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually(limit, what, check).await
}

// ----------------------------------------------------------------------------------------------
// 7. delete ordering

#[tokio::test(flavor = "multi_thread")]
async fn delete_waits_for_the_endpoint_then_retries_the_group_then_drops_the_finalizer() {
    let rig =
        Rig::with_private_emulator(&["--eni-linger-seconds", "3", "--deleted-seconds", "0.5"])
            .await;
    install_crd(&rig).await;
    let ns = rig.namespace("rel-order").await;
    let net = rig.network(&ns).await;
    let op = rig.operator(&ns, &[]);
    let obj = create_bpl(
        &rig,
        &ns,
        "order",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}}),
    )
    .await;
    let uid = uid_of(&obj);
    let o = wait_converged(&rig, &ns, "order", READY_TIMEOUT).await;
    let id = o.status.as_ref().unwrap().endpoints[0]
        .vpc_endpoint_id
        .clone();
    const LINGER: f64 = 4.0;
    rig.harness(
        "POST",
        &format!("endpoints/{id}/linger"),
        json!({"seconds": LINGER}),
    )
    .await;
    rig.harness("POST", "calls/reset", json!({})).await;

    let t0 = Instant::now();
    delete_bpl(&rig, &ns, "order").await;
    let api = rig.bpls(&ns);
    let (mut endpoint_gone, mut group_gone, mut object_gone) = (None, None, None);
    let mut group_deletes_while_endpoint_lived = 0;
    while object_gone.is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "delete did not finish"
        );
        // AWS first, then the object: an object seen gone must have nothing left in AWS.
        let eps = rig.owned_endpoints(&uid).await; // every state but deleted
        let groups = rig.owned_groups(&uid).await;
        let calls = rig.emulator_calls().await;
        let exists = api.get_opt("order").await.unwrap().is_some();
        if !eps.is_empty() {
            assert!(exists, "the object must outlive its endpoint");
            assert_eq!(groups.len(), 1, "the group must outlive the endpoint");
            group_deletes_while_endpoint_lived =
                calls.get("DeleteSecurityGroup").copied().unwrap_or(0);
        } else {
            endpoint_gone.get_or_insert(t0.elapsed());
        }
        if groups.is_empty() {
            group_gone.get_or_insert(t0.elapsed());
        } else {
            assert!(exists, "the object must outlive its group");
        }
        if !exists {
            object_gone = Some(t0.elapsed());
            assert!(eps.is_empty() && groups.is_empty());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (e, g, ob) = (
        endpoint_gone.unwrap(),
        group_gone.unwrap(),
        object_gone.unwrap(),
    );
    let m = op.metrics().await;
    let dv = metric_sum(
        &m,
        "bpl_ec2_calls_total",
        &[
            "operation=\"DeleteSecurityGroup\"",
            "outcome=\"DependencyViolation\"",
        ],
    );
    let calls = rig.emulator_calls().await;
    eprintln!(
        "delete order: endpoint gone {e:?}, group gone {g:?}, object gone {ob:?}; DeleteSecurityGroup calls {:?} ({dv} DependencyViolation); DeleteVpcEndpoints {:?}",
        calls.get("DeleteSecurityGroup"),
        calls.get("DeleteVpcEndpoints")
    );
    assert!(
        e >= Duration::from_secs_f64(LINGER),
        "the endpoint lingered {e:?}"
    );
    assert_eq!(
        group_deletes_while_endpoint_lived, 0,
        "no group delete while the endpoint lived"
    );
    assert!(dv >= 1.0, "DependencyViolation (ENIs linger) was retried");
    assert!(g >= e && ob >= g, "endpoint, then group, then finalizer");
    assert_eq!(
        calls.get("DeleteVpcEndpoints").copied(),
        Some(1),
        "deleted once, then waited"
    );
}

// ----------------------------------------------------------------------------------------------
// 9. an object the operator cannot read

#[tokio::test(flavor = "multi_thread")]
async fn an_object_that_does_not_deserialize_does_not_stop_the_others() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("rel-guard").await;
    let net = rig.network(&ns).await;
    // The API server takes a year-9999 timestamp (a valid date-time) that the Rust type
    // (jiff, up to 9999-12-30) cannot hold: the object passes the schema but not serde.
    let bad = create_bpl(
        &rig,
        &ns,
        "unreadable",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}}),
    )
    .await;
    let bad_uid = uid_of(&bad);
    let api = rig.bpls(&ns);
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "Imported", "message": "written by another tool", "lastTransitionTime": "9999-12-31T23:59:59Z"}]}});
    let raw: Api<kube::core::DynamicObject> = Api::namespaced_with(
        rig.client.clone(),
        &ns,
        &kube::core::ApiResource::erase::<BedrockPrivateLink>(&()),
    );
    raw.patch_status(
        "unreadable",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .expect("the API server accepts the status");
    let stored = raw.get("unreadable").await.unwrap();
    let as_json = serde_json::to_value(&stored).unwrap();
    assert!(
        serde_json::from_value::<BedrockPrivateLink>(as_json).is_err(),
        "the stored object must not deserialize"
    );

    let op = rig.operator(&ns, &[]);
    let good = create_bpl(&rig, &ns, "readable", json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()[..2]}, "privateDns": false})).await;
    wait_converged(&rig, &ns, "readable", READY_TIMEOUT).await;
    assert_eq!(live_endpoints(&rig, &uid_of(&good)).await.len(), 1);
    // The unreadable one was skipped: no finalizer, nothing in AWS, a warning in the log.
    let stored = raw.get("unreadable").await.unwrap();
    assert!(stored.metadata.finalizers.unwrap_or_default().is_empty());
    assert!(rig.owned_endpoints(&bad_uid).await.is_empty());
    assert!(rig.owned_groups(&bad_uid).await.is_empty());
    eventually(
        Duration::from_secs(10),
        "a log line about the skipped object",
        || async {
            op.logs()
                .contains("does not match the schema")
                .then_some(())
        },
    )
    .await;
    // Changes to the good object still flow while the bad one sits there.
    api.patch(
        "readable",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"policy": {"preset": "FullAccess"}}})),
    )
    .await
    .unwrap();
    wait_converged(&rig, &ns, "readable", READY_TIMEOUT).await;

    // Repaired, it is reconciled like any other.
    let repair = json!({"status": {"conditions": []}});
    raw.patch_status(
        "unreadable",
        &PatchParams::default(),
        &Patch::Merge(&repair),
    )
    .await
    .unwrap();
    wait_converged(&rig, &ns, "unreadable", READY_TIMEOUT).await;
    assert_eq!(live_endpoints(&rig, &bad_uid).await.len(), 1);
    for n in ["readable", "unreadable"] {
        delete_bpl(&rig, &ns, n).await;
    }
    for n in ["readable", "unreadable"] {
        wait_gone(&rig, &ns, n, READY_TIMEOUT).await;
    }
    assert!(rig.owned_endpoints(&bad_uid).await.is_empty());
    assert!(rig.owned_groups(&bad_uid).await.is_empty());
}
