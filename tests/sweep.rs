//! The VPC poller on the rig (src/reconcile/poll.rs): objects waiting for pending endpoints share
//! one describe per VPC per poll instead of each polling EC2, and the drift sweep finds an
//! endpoint deleted, or its policy or groups changed, out of band long before the full resync and
//! restores it. Counts are bounded by the design (objects + polls), never by wall time.

mod common;

use std::time::Duration;

use bpl::api::BedrockPrivateLink;
use common::*;
use serde_json::{Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Far longer than any wait below: whatever restores drift in these tests is not the resync.
const RESYNC_SECONDS: &str = "600";

fn uid_of(o: &BedrockPrivateLink) -> String {
    o.metadata.uid.clone().expect("uid")
}

fn state_of(e: &aws_sdk_ec2::types::VpcEndpoint) -> String {
    e.state()
        .map(|s| s.as_str().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The object's one endpoint that is neither deleting nor deleted, if it has exactly one.
async fn live_endpoint(rig: &Rig, uid: &str) -> Option<aws_sdk_ec2::types::VpcEndpoint> {
    let live: Vec<_> = rig
        .owned_endpoints(uid)
        .await
        .into_iter()
        .filter(|e| !matches!(state_of(e).as_str(), "deleting" | "deleted"))
        .collect();
    (live.len() == 1).then(|| live[0].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_waiting_for_pending_endpoints_share_one_describe_per_vpc_poll() {
    // Endpoints stay pending for several seconds (real AWS: minutes).
    let rig = Rig::with_private_emulator(&["--pending-seconds", "6"]).await;
    install_crd(&rig).await;
    let ns = rig.namespace("sweep-pending").await;
    let net = rig.network(&ns).await;
    // A pending object that polled EC2 on its own would describe every 100 ms.
    let op = rig.operator(
        &ns,
        &[
            "--pending-requeue-ms",
            "100",
            "--resync-seconds",
            RESYNC_SECONDS,
        ],
    );
    rig.harness("POST", "calls/reset", json!({})).await;
    const N: usize = 12;
    // Without private DNS: a VPC has only one private-DNS endpoint per service.
    let spec = json!({
        "vpcId": net.vpc_id,
        "subnets": {"ids": net.subnet_ids()},
        "privateDns": false,
    });
    let names: Vec<String> = (0..N).map(|i| format!("wait-{i}")).collect();
    futures::future::join_all(
        names
            .iter()
            .map(|name| create_bpl(&rig, &ns, name, spec.clone())),
    )
    .await;
    for name in &names {
        let o = converged(&rig, &ns, name, READY_TIMEOUT).await;
        assert_eq!(o.status.as_ref().unwrap().endpoints[0].state, "available");
    }
    let calls = rig.emulator_calls().await;
    let describes = calls.get("DescribeVpcEndpoints").copied().unwrap_or(0);
    let metrics = op.metrics().await;
    let polls = metric_sum(&metrics, "bpl_vpc_polls_total", &[]) as u64;
    let waits = metric_sum(&metrics, "bpl_vpc_polls_total", &["reason=\"wait\""]) as u64;
    let triggered = metric_sum(&metrics, "bpl_poll_triggers_total", &[]) as u64;
    eprintln!(
        "{N} objects: {describes} DescribeVpcEndpoints, {polls} VPC polls ({waits} while waiting), \
         {triggered} objects triggered; calls {calls:?}"
    );
    assert!(
        waits >= 1,
        "the VPC was polled while its endpoints were pending"
    );
    assert!(
        triggered >= N as u64,
        "every object was triggered when its endpoint turned available"
    );
    assert_eq!(
        calls.get("CreateVpcEndpoint").copied(),
        Some(N as u64),
        "one endpoint per object"
    );
    // Each object describes its own endpoints when it creates them (at most twice, should a
    // reconcile be retried); everything else is the VPC's polls, one page each (< 100 endpoints).
    let bound = 2 * N as u64 + polls;
    assert!(
        describes <= bound,
        "{describes} DescribeVpcEndpoints for {N} objects and {polls} polls (bound {bound})"
    );
}

/// The policy the operator renders by default.
fn default_policy() -> Value {
    bpl::policy::render(None, "us-east-1").unwrap()
}

fn policy_of(e: &aws_sdk_ec2::types::VpcEndpoint) -> Option<Value> {
    serde_json::from_str(e.policy_document()?).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drift_sweep_restores_endpoints_changed_out_of_band_long_before_the_resync() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("sweep-drift").await;
    let net = rig.network(&ns).await;
    let op = rig.operator(
        &ns,
        &[
            "--resync-seconds",
            RESYNC_SECONDS,
            "--drift-sweep-seconds",
            "2",
        ],
    );
    let obj = create_bpl(
        &rig,
        &ns,
        "drift",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}}),
    )
    .await;
    let uid = uid_of(&obj);
    let o = converged(&rig, &ns, "drift", READY_TIMEOUT).await;
    let group = o
        .status
        .as_ref()
        .unwrap()
        .security_group_id
        .clone()
        .unwrap();
    let available = || async {
        live_endpoint(&rig, &uid)
            .await
            .filter(|e| state_of(e) == "available")
    };
    let swept = || async {
        let m = op.metrics().await;
        metric_sum(&m, "bpl_poll_triggers_total", &["reason=\"sweep\""]) as u64
    };
    // Well under the resync (600 s): only the sweep can have noticed.
    let within = Duration::from_secs(60);

    // (b) The endpoint is deleted: a new one, named in the status, and Ready again.
    let old = eventually(within, "endpoint available", available)
        .await
        .vpc_endpoint_id()
        .unwrap()
        .to_string();
    let before = swept().await;
    rig.ec2
        .delete_vpc_endpoints()
        .vpc_endpoint_ids(&old)
        .send()
        .await
        .unwrap();
    let new = eventually(within, "endpoint recreated and Ready", || async {
        let e = available().await?;
        let id = e.vpc_endpoint_id()?.to_string();
        let o = rig.bpls(&ns).get("drift").await.ok()?;
        let s = o.status.as_ref()?;
        let ready = condition(&o, "Ready")?.status == "True";
        (id != old && ready && s.endpoints.first()?.vpc_endpoint_id == id).then_some(id)
    })
    .await;
    assert!(swept().await > before, "the sweep triggered the reconcile");

    // (c) The policy is opened up: put back.
    let before = swept().await;
    let open = json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]});
    rig.ec2
        .modify_vpc_endpoint()
        .vpc_endpoint_id(&new)
        .policy_document(open.to_string())
        .send()
        .await
        .unwrap();
    eventually(within, "policy restored", || async {
        let p = policy_of(&available().await?)?;
        bpl::policy::equivalent(&p, &default_policy()).then_some(())
    })
    .await;
    assert!(swept().await > before, "the sweep triggered the reconcile");

    // (d) The group is swapped for the VPC's default group: put back.
    let before = swept().await;
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
        .vpc_endpoint_id(&new)
        .add_security_group_ids(&default_group)
        .remove_security_group_ids(&group)
        .send()
        .await
        .unwrap();
    eventually(within, "group restored", || async {
        let e = available().await?;
        let groups: Vec<&str> = e.groups().iter().filter_map(|g| g.group_id()).collect();
        (groups == vec![group.as_str()]).then_some(())
    })
    .await;
    assert!(swept().await > before, "the sweep triggered the reconcile");
    assert_eq!(
        live_endpoint(&rig, &uid).await.unwrap().vpc_endpoint_id(),
        Some(new.as_str()),
        "changed in place, not recreated"
    );

    delete_bpl(&rig, &ns, "drift").await;
    wait_gone(&rig, &ns, "drift", READY_TIMEOUT).await;
    assert!(rig.owned_endpoints(&uid).await.is_empty());
}
