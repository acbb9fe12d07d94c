//! Ownership on the rig (src/reconcile/ownership.rs, observe.rs, orphans.rs): adopting an
//! endpoint made by hand without recreating it, a blue/green handover of a private-DNS endpoint
//! between two operators with different cluster identities (each scoped to its own namespace by
//! --watch-namespaces) with no moment where the endpoint or its private DNS is gone, and the
//! orphan sweep removing what an object left behind when its finalizer never ran, sparing
//! Retain and another cluster's resources in the same VPC.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, VpcEndpoint, VpcEndpointType};
use bpl::api::BedrockPrivateLink;
use common::*;
use serde_json::{Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const CLUSTER_TAG: &str = "bedrock.privatelink.io/cluster";
const RUNTIME: &str = "com.amazonaws.us-east-1.bedrock-runtime";

fn uid_of(o: &BedrockPrivateLink) -> String {
    o.metadata.uid.clone().expect("uid")
}

fn tag<'a>(e: &'a VpcEndpoint, key: &str) -> Option<&'a str> {
    e.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn state_of(e: &VpcEndpoint) -> String {
    e.state()
        .map(|s| s.as_str().to_ascii_lowercase())
        .unwrap_or_default()
}

async fn endpoint(rig: &Rig, id: &str) -> Option<VpcEndpoint> {
    rig.ec2
        .describe_vpc_endpoints()
        .filters(Filter::builder().name("vpc-endpoint-id").values(id).build())
        .send()
        .await
        .expect("describe endpoint")
        .vpc_endpoints()
        .first()
        .cloned()
}

async fn vpc_endpoints(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Vec<VpcEndpoint> {
    ec2.describe_vpc_endpoints()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .expect("describe endpoints")
        .vpc_endpoints()
        .to_vec()
}

/// An interface endpoint made directly in the emulator, as a person following the AWS
/// walkthrough would: no tags, one subnet, AWS's default (full access) policy.
async fn hand_made_endpoint(rig: &Rig, net: &Network, private_dns: bool) -> String {
    let id = rig
        .ec2
        .create_vpc_endpoint()
        .vpc_id(&net.vpc_id)
        .service_name(RUNTIME)
        .vpc_endpoint_type(VpcEndpointType::Interface)
        .subnet_ids(&net.subnets[0].0)
        .private_dns_enabled(private_dns)
        .send()
        .await
        .expect("create endpoint by hand")
        .vpc_endpoint()
        .and_then(|e| e.vpc_endpoint_id())
        .expect("endpoint id")
        .to_string();
    eventually(
        Duration::from_secs(30),
        "hand-made endpoint available",
        || {
            let id = id.clone();
            async move {
                let e = endpoint(rig, &id).await?;
                (state_of(&e) == "available").then_some(())
            }
        },
    )
    .await;
    id
}

/// A security group made by hand in the VPC, with the wide rules people add while trying
/// things out: HTTPS and SSH from anywhere.
async fn hand_made_group(rig: &Rig, vpc_id: &str) -> String {
    let id = rig
        .ec2
        .create_security_group()
        .group_name(format!("bedrock-by-hand-{}", short_id()))
        .description("made by hand")
        .vpc_id(vpc_id)
        .send()
        .await
        .expect("create group by hand")
        .group_id()
        .expect("group id")
        .to_string();
    for port in [443, 22] {
        rig.ec2
            .authorize_security_group_ingress()
            .group_id(&id)
            .ip_protocol("tcp")
            .from_port(port)
            .to_port(port)
            .cidr_ip("0.0.0.0/0")
            .send()
            .await
            .expect("open the hand-made group");
    }
    id
}

fn policy_of(e: &VpcEndpoint) -> Option<Value> {
    serde_json::from_str(e.policy_document()?).ok()
}

/// The endpoint's subnets, sorted.
fn subnets_of(e: &VpcEndpoint) -> Vec<String> {
    let mut s: Vec<String> = e.subnet_ids().to_vec();
    s.sort();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_made_endpoint_is_adopted_in_place_without_a_create() {
    // Its own emulator: the CreateVpcEndpoint count is this test's alone.
    let rig = Rig::with_private_emulator(&[]).await;
    install_crd(&rig).await;
    let ns = rig.namespace("own-adopt").await;
    let net = rig.network(&ns).await;
    let id = hand_made_endpoint(&rig, &net, true).await;
    let cluster = format!("blue-{}", short_id());
    let _op = rig.operator(&ns, &["--cluster-id", &cluster]);
    rig.harness("POST", "calls/reset", json!({})).await;

    create_bpl(
        &rig,
        &ns,
        "adopter",
        json!({
            "vpcId": net.vpc_id,
            "subnets": {"ids": net.subnet_ids()},
            "adopt": {"endpointIds": [id]},
        }),
    )
    .await;
    let o = converged(&rig, &ns, "adopter", READY_TIMEOUT).await;
    let status = o.status.as_ref().unwrap();
    assert_eq!(status.endpoints.len(), 1);
    assert_eq!(status.endpoints[0].vpc_endpoint_id, id, "the same endpoint");
    let e = endpoint(&rig, &id).await.unwrap();
    assert_eq!(state_of(&e), "available");
    assert_eq!(tag(&e, OWNER_TAG), Some(uid_of(&o).as_str()));
    assert_eq!(tag(&e, CLUSTER_TAG), Some(cluster.as_str()));
    let mut wanted = net.subnet_ids();
    wanted.sort();
    assert_eq!(subnets_of(&e), wanted, "subnets reconciled in place");
    assert_eq!(
        policy_of(&e),
        Some(bpl::policy::render(None, "us-east-1").unwrap()),
        "policy reconciled in place"
    );
    let group = status.security_group_id.clone().expect("managed group");
    assert_eq!(e.groups().len(), 1);
    assert_eq!(e.groups()[0].group_id(), Some(group.as_str()));
    assert!(e.private_dns_enabled().unwrap_or(false));
    let calls = rig.emulator_calls().await;
    assert_eq!(
        calls.get("CreateVpcEndpoint").copied().unwrap_or(0),
        0,
        "never recreated: {calls:?}"
    );
    assert!(calls.get("ModifyVpcEndpoint").copied().unwrap_or(0) >= 1);

    // A second object asking for an endpoint that does not fit its spec (a service it does not
    // list) gets a reason and an Event, and nothing in AWS changes.
    let other = hand_made_endpoint(&rig, &net, false).await;
    let before = endpoint(&rig, &other).await.unwrap();
    rig.harness("POST", "calls/reset", json!({})).await;
    let m = create_bpl(
        &rig,
        &ns,
        "mismatch",
        json!({
            "vpcId": net.vpc_id,
            "subnets": {"ids": net.subnet_ids()},
            "privateDns": false,
            "services": ["bedrock-agent-runtime"],
            "adopt": {"endpointIds": [other]},
        }),
    )
    .await;
    let m_obj = wait_ready(
        &rig,
        &ns,
        "mismatch",
        "False",
        Some("AdoptionMismatch"),
        READY_TIMEOUT,
    )
    .await;
    let msg = condition(&m_obj, "Ready").unwrap().message.clone();
    assert!(msg.contains("spec.services"), "{msg}");
    eventually(Duration::from_secs(10), "AdoptionMismatch event", || {
        let (rig, ns, uid) = (&rig, ns.clone(), uid_of(&m));
        async move {
            (!warning_events(rig, &ns, &uid, "AdoptionMismatch")
                .await
                .is_empty())
            .then_some(())
        }
    })
    .await;
    let after = endpoint(&rig, &other).await.unwrap();
    assert_eq!(after.tags(), before.tags(), "not tagged");
    assert_eq!(subnets_of(&after), subnets_of(&before), "not changed");
    assert!(
        rig.owned_groups(&uid_of(&m)).await.is_empty(),
        "nothing created"
    );
    let calls = rig.emulator_calls().await;
    assert_eq!(calls.get("CreateVpcEndpoint").copied().unwrap_or(0), 0);

    // An endpoint and its hand-made security group (HTTPS open to the world, SSH too) adopted
    // together: the group becomes the object's managed group in place (tagged, its rules
    // reconciled to the spec's), the endpoint uses it, and nothing is created.
    let with_group = hand_made_endpoint(&rig, &net, false).await;
    let sg = hand_made_group(&rig, &net.vpc_id).await;
    rig.harness("POST", "calls/reset", json!({})).await;
    let g = create_bpl(
        &rig,
        &ns,
        "group-adopter",
        json!({
            "vpcId": net.vpc_id,
            "subnets": {"ids": net.subnet_ids()},
            "privateDns": false,
            "adopt": {"endpointIds": [with_group], "securityGroupId": sg},
        }),
    )
    .await;
    let g_obj = converged(&rig, &ns, "group-adopter", READY_TIMEOUT).await;
    let g_status = g_obj.status.as_ref().unwrap();
    assert_eq!(g_status.security_group_id.as_deref(), Some(sg.as_str()));
    assert_eq!(g_status.endpoints[0].vpc_endpoint_id, with_group);
    let e = endpoint(&rig, &with_group).await.unwrap();
    let groups: Vec<&str> = e.groups().iter().filter_map(|g| g.group_id()).collect();
    assert_eq!(groups, [sg.as_str()], "the endpoint uses the adopted group");
    let owned = rig.owned_groups(&uid_of(&g)).await;
    assert_eq!(owned.len(), 1, "one group carries the owner tag");
    assert_eq!(owned[0].group_id(), Some(sg.as_str()));
    // The adopter's group was made by the operator from the same kind of spec: same rules.
    let made = rig.owned_groups(&uid_of(&o)).await;
    assert_eq!(
        ingress_rules(&owned[0]),
        ingress_rules(&made[0]),
        "the adopted group's rules reconciled to the spec's"
    );
    assert!(
        !ingress_rules(&owned[0])
            .iter()
            .any(|r| r.contains("0.0.0.0/0")),
        "the world-open rules are gone: {:?}",
        ingress_rules(&owned[0])
    );
    let calls = rig.emulator_calls().await;
    for call in ["CreateVpcEndpoint", "CreateSecurityGroup"] {
        assert_eq!(
            calls.get(call).copied().unwrap_or(0),
            0,
            "{call}: {calls:?}"
        );
    }
    eventually(
        Duration::from_secs(10),
        "SecurityGroupAdopted event",
        || {
            let (rig, ns, uid) = (&rig, ns.clone(), uid_of(&g));
            async move {
                (!normal_events(rig, &ns, &uid, "SecurityGroupAdopted")
                    .await
                    .is_empty())
                .then_some(())
            }
        },
    )
    .await;

    // Deleting the adopter deletes what it adopted (deletionPolicy Delete).
    delete_bpl(&rig, &ns, "adopter").await;
    delete_bpl(&rig, &ns, "mismatch").await;
    delete_bpl(&rig, &ns, "group-adopter").await;
    wait_gone(&rig, &ns, "group-adopter", READY_TIMEOUT).await;
    eventually(
        Duration::from_secs(30),
        "the adopted group deleted with its object",
        || {
            let (rig, uid) = (&rig, uid_of(&g));
            async move { rig.owned_groups(&uid).await.is_empty().then_some(()) }
        },
    )
    .await;
    wait_gone(&rig, &ns, "adopter", READY_TIMEOUT).await;
    let e = endpoint(&rig, &id).await;
    assert!(
        e.as_ref()
            .is_none_or(|e| matches!(state_of(e).as_str(), "deleting" | "deleted")),
        "{e:?}"
    );
}

/// One look at the VPC during the handover: the live bedrock-runtime endpoints with private DNS
/// on. Live: not deleting or gone or failed (the emulator, like AWS, shows `pending` while a
/// modification is applied; the endpoint and its DNS name keep serving meanwhile).
async fn private_dns_holders(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Vec<String> {
    vpc_endpoints(ec2, vpc_id)
        .await
        .iter()
        .filter(|e| e.service_name() == Some(RUNTIME))
        .filter(|e| {
            let dead = ["deleting", "deleted", "failed", "rejected", "expired"];
            !dead.contains(&state_of(e).as_str()) && e.private_dns_enabled() == Some(true)
        })
        .filter_map(|e| e.vpc_endpoint_id().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_handover_keeps_the_endpoint_and_its_private_dns() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let old_ns = rig.namespace("own-green").await;
    let new_ns = rig.namespace("own-blue").await;
    let net = rig.network(&old_ns).await;
    let (green, blue) = (
        format!("green-{}", short_id()),
        format!("blue-{}", short_id()),
    );
    // Two clusters, each its own operator over its own namespace, one VPC.
    let fast = ["--drift-sweep-seconds", "2"];
    let _old_op = rig.operator(
        &old_ns,
        &[&["--cluster-id", green.as_str()][..], &fast].concat(),
    );
    let spec = json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}});
    create_bpl(&rig, &old_ns, "bedrock", spec.clone()).await;
    let old = converged(&rig, &old_ns, "bedrock", READY_TIMEOUT).await;
    let id = old.status.as_ref().unwrap().endpoints[0]
        .vpc_endpoint_id
        .clone();
    assert_eq!(
        private_dns_holders(&rig.ec2, &net.vpc_id).await,
        std::slice::from_ref(&id)
    );

    // Sample the emulator all through the switch.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (stop, vpc, ec2) = (stop.clone(), net.vpc_id.clone(), rig.ec2.clone());
        async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(private_dns_holders(&ec2, &vpc).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            samples
        }
    });
    let _new_op = rig.operator(
        &new_ns,
        &[&["--cluster-id", blue.as_str()][..], &fast].concat(),
    );
    let mut takeover = spec.clone();
    takeover["adopt"] = json!({"endpointIds": [id], "takeOver": true});
    create_bpl(&rig, &new_ns, "bedrock", takeover).await;
    let new = converged(&rig, &new_ns, "bedrock", READY_TIMEOUT).await;
    assert_eq!(
        new.status.as_ref().unwrap().endpoints[0].vpc_endpoint_id,
        id,
        "the new cluster's object holds the same endpoint"
    );
    // The old object notices it let go, with a reason and an Event.
    let old_after = wait_ready(
        &rig,
        &old_ns,
        "bedrock",
        "False",
        Some("HandedOver"),
        READY_TIMEOUT,
    )
    .await;
    let msg = condition(&old_after, "Ready").unwrap().message.clone();
    assert!(msg.contains(&id) && msg.contains(&blue), "{msg}");
    eventually(Duration::from_secs(10), "HandedOver event", || {
        let (rig, ns, uid) = (&rig, old_ns.clone(), uid_of(&old));
        async move {
            (!warning_events(rig, &ns, &uid, "HandedOver")
                .await
                .is_empty())
            .then_some(())
        }
    })
    .await;
    // Deleting the old object (deletionPolicy Delete) leaves what it handed over.
    delete_bpl(&rig, &old_ns, "bedrock").await;
    wait_gone(&rig, &old_ns, "bedrock", READY_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    assert!(samples.len() > 20, "{} samples", samples.len());
    let lapses: Vec<&Vec<String>> = samples.iter().filter(|s| **s != [id.clone()]).collect();
    assert!(
        lapses.is_empty(),
        "{} of {} samples without exactly {id} holding private DNS: {:?}",
        lapses.len(),
        samples.len(),
        lapses.first()
    );
    let e = endpoint(&rig, &id).await.unwrap();
    assert_eq!(state_of(&e), "available");
    assert_eq!(tag(&e, CLUSTER_TAG), Some(blue.as_str()));
    assert_eq!(tag(&e, OWNER_TAG), Some(uid_of(&new).as_str()));
    assert!(
        rig.owned_groups(&uid_of(&old)).await.is_empty(),
        "the old object's own group went with it"
    );
    converged(&rig, &new_ns, "bedrock", READY_TIMEOUT).await;
    delete_bpl(&rig, &new_ns, "bedrock").await;
    wait_gone(&rig, &new_ns, "bedrock", READY_TIMEOUT).await;
}

fn live(eps: &[VpcEndpoint]) -> usize {
    eps.iter()
        .filter(|e| !matches!(state_of(e).as_str(), "deleting" | "deleted"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn orphans_are_swept_after_the_grace_period_sparing_retain_and_other_clusters() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("own-orphan").await;
    let net = rig.network(&ns).await;
    let spec = |policy: &str| {
        json!({
            "vpcId": net.vpc_id,
            "subnets": {"ids": net.subnet_ids()},
            "privateDns": false,
            "deletionPolicy": policy,
        })
    };
    // Another cluster's object in the same namespace and VPC, orphaned while its operator is
    // down: this cluster's sweep must never touch it.
    let other_cluster = format!("other-{}", short_id());
    let mut other_op = rig.operator(
        &ns,
        &[
            "--cluster-id",
            &other_cluster,
            "--orphan-sweep-seconds",
            "0",
        ],
    );
    let other = create_bpl(&rig, &ns, "other", spec("Delete")).await;
    converged(&rig, &ns, "other", READY_TIMEOUT).await;
    other_op.terminate().await;
    rig.drop_without_cleanup(&ns, "other").await;

    let cluster = format!("sweep-{}", short_id());
    let (period, grace) = ("1", "6");
    let args = [
        "--cluster-id",
        cluster.as_str(),
        "--orphan-sweep-seconds",
        period,
        "--orphan-grace-seconds",
        grace,
    ];
    let mut op = rig.operator(&ns, &args);
    let doomed = create_bpl(&rig, &ns, "doomed", spec("Delete")).await;
    let kept = create_bpl(&rig, &ns, "kept", spec("Retain")).await;
    converged(&rig, &ns, "doomed", READY_TIMEOUT).await;
    converged(&rig, &ns, "kept", READY_TIMEOUT).await;
    // Live objects are never orphans, however many sweeps pass.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(live(&rig.owned_endpoints(&uid_of(&doomed)).await), 1);
    assert_eq!(live(&rig.owned_endpoints(&uid_of(&other)).await), 1);
    // The operator is down while both lose their finalizer and are deleted.
    op.terminate().await;
    rig.drop_without_cleanup(&ns, "doomed").await;
    rig.drop_without_cleanup(&ns, "kept").await;
    let started = Instant::now();
    let op = rig.operator(&ns, &args);
    // Seen as orphans at once, removed only after the grace period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        live(&rig.owned_endpoints(&uid_of(&doomed)).await),
        1,
        "within the grace period"
    );
    eventually(
        Duration::from_secs(60),
        "the orphan's endpoint deleted",
        || {
            let (rig, uid) = (&rig, uid_of(&doomed));
            async move { (live(&rig.owned_endpoints(&uid).await) == 0).then_some(()) }
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    eventually(
        Duration::from_secs(60),
        "the orphan's group deleted",
        || {
            let (rig, uid) = (&rig, uid_of(&doomed));
            async move { rig.owned_groups(&uid).await.is_empty().then_some(()) }
        },
    )
    .await;
    // Retain is kept, and so is the other cluster's orphan in the same VPC.
    assert_eq!(live(&rig.owned_endpoints(&uid_of(&kept)).await), 1);
    assert_eq!(rig.owned_groups(&uid_of(&kept)).await.len(), 1);
    assert_eq!(live(&rig.owned_endpoints(&uid_of(&other)).await), 1);
    assert_eq!(rig.owned_groups(&uid_of(&other)).await.len(), 1);
    let metrics = op.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "bpl_orphans_removed_total",
            &["kind=\"endpoint\""]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "bpl_orphans_removed_total",
            &["kind=\"security_group\""]
        ),
        1.0
    );
    assert_eq!(metric_sum(&metrics, "bpl_orphans_retained", &[]), 2.0);
    let logs = op.logs();
    assert!(logs.contains("deleted orphaned endpoints"), "{logs}");
    // Tidy up what the test left in AWS on purpose.
    for uid in [uid_of(&kept), uid_of(&other)] {
        let ids: Vec<String> = rig
            .owned_endpoints(&uid)
            .await
            .iter()
            .filter_map(|e| e.vpc_endpoint_id().map(str::to_string))
            .collect();
        if !ids.is_empty() {
            let _ = rig
                .ec2
                .delete_vpc_endpoints()
                .set_vpc_endpoint_ids(Some(ids))
                .send()
                .await;
        }
    }
}
