//! The edges on the rig: names at Kubernetes' maximum lengths, spec.tags changed in place
//! (foreign tags kept), and a failed endpoint replaced one at a time.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn names_at_the_maximum_lengths_become_ready() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    // A namespace of 63 characters and an object name of 253.
    let prefix = rig.namespace("edge-long").await;
    let ns = format!("{prefix}-{}", "n".repeat(62 - prefix.len()));
    assert_eq!(ns.len(), 63);
    let (ok, _, err) = rig.kubectl(&["create", "namespace", &ns]);
    assert!(ok, "{err}");
    // Tenancy (issue 16): like Rig::namespace's, under the rig's open grant (its own VPC).
    let label = format!("{OPEN_TENANCY_LABEL}=open");
    let (ok, _, err) = rig.kubectl(&["label", "namespace", &ns, &label]);
    assert!(ok, "{err}");
    let name = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    assert_eq!(name.len(), 253);
    let net = rig.network(&prefix).await;
    let _op = rig.operator(&ns, &[]);
    let obj = create_bpl(
        &rig,
        &ns,
        &name,
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "tags": {"team": "a"}}),
    )
    .await;
    let o = converged(&rig, &ns, &name, READY_TIMEOUT).await;
    let status = o.status.unwrap();
    let cm_name = status.config_map_name.expect("published");
    assert!(cm_name.len() <= 253, "{cm_name}");
    let cm = Api::<ConfigMap>::namespaced(rig.client.clone(), &ns)
        .get(&cm_name)
        .await
        .expect("the ConfigMap exists");
    for (k, v) in cm.metadata.labels.unwrap_or_default() {
        assert!(v.len() <= 63, "label {k}={v}");
    }
    let uid = obj.metadata.uid.unwrap();
    for e in rig.owned_endpoints(&uid).await {
        for (k, v) in tags_of(e.tags()) {
            assert!(v.len() <= 256, "endpoint tag {k}={v}");
        }
    }
    let g = &rig.owned_groups(&uid).await[0];
    assert!(g.group_name().unwrap().len() <= 255);
    assert!(g.description().unwrap().len() <= 255);
    // Every message stays short and human.
    for c in &status.conditions {
        assert!(
            c.message.len() <= 1024 && !c.message.contains("ErrorResponse"),
            "{c:?}"
        );
    }
    delete_bpl(&rig, &ns, &name).await;
    wait_gone(&rig, &ns, &name, Duration::from_secs(30)).await;
    assert!(rig.owned_endpoints(&uid).await.iter().all(|e| {
        e.state()
            .is_some_and(|s| s.as_str().eq_ignore_ascii_case("deleted"))
    }));
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_tags_are_added_changed_and_removed_in_place() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("edge-tags").await;
    let net = rig.network(&ns).await;
    let _op = rig.operator(&ns, &[]);
    let base = json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}});
    let mut spec = base.clone();
    spec["tags"] = json!({"team": "a", "old": "x"});
    let obj = create_bpl(&rig, &ns, "tagged", spec).await;
    let uid = obj.metadata.uid.unwrap();
    converged(&rig, &ns, "tagged", READY_TIMEOUT).await;
    let endpoint_id = rig.owned_endpoints(&uid).await[0]
        .vpc_endpoint_id()
        .unwrap()
        .to_string();
    let group_id = rig.owned_groups(&uid).await[0]
        .group_id()
        .unwrap()
        .to_string();
    // A cost tool tags our resources.
    rig.ec2
        .create_tags()
        .resources(&endpoint_id)
        .resources(&group_id)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("cost-center")
                .value("42")
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Change one, add one, remove one.
    let patch = json!({"spec": {"tags": {"team": "b", "new": "y", "old": null}}});
    rig.bpls(&ns)
        .patch("tagged", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let check = |tags: BTreeMap<String, String>| {
        tags.get("team").map(String::as_str) == Some("b")
            && tags.get("new").map(String::as_str) == Some("y")
            && !tags.contains_key("old")
            && tags.get("cost-center").map(String::as_str) == Some("42")
    };
    let o = converged(&rig, &ns, "tagged", READY_TIMEOUT).await;
    eventually(Duration::from_secs(20), "tags in place", || async {
        let e = rig.owned_endpoints(&uid).await;
        let g = rig.owned_groups(&uid).await;
        (e.len() == 1 && check(tags_of(e[0].tags())) && g.len() == 1 && check(tags_of(g[0].tags())))
            .then_some(())
    })
    .await;
    let e = rig.owned_endpoints(&uid).await;
    assert_eq!(
        e[0].vpc_endpoint_id(),
        Some(endpoint_id.as_str()),
        "same endpoint"
    );
    assert_eq!(o.status.unwrap().endpoints[0].vpc_endpoint_id, endpoint_id);
    // Removing every spec tag removes ours only.
    let patch = json!({"spec": {"tags": null}});
    rig.bpls(&ns)
        .patch("tagged", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    converged(&rig, &ns, "tagged", READY_TIMEOUT).await;
    eventually(Duration::from_secs(20), "spec tags removed", || async {
        let e = rig.owned_endpoints(&uid).await;
        let tags = tags_of(e[0].tags());
        (!tags.contains_key("team")
            && !tags.contains_key("new")
            && tags.get("cost-center").map(String::as_str) == Some("42")
            && tags.get(OWNER_TAG).map(String::as_str) == Some(uid.as_str()))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_endpoint_is_replaced_and_the_object_is_ready_again() {
    let rig = Rig::with_private_emulator(&["--pending-seconds", "0.3"]).await;
    install_crd(&rig).await;
    let ns = rig.namespace("edge-replace").await;
    let net = rig.network(&ns).await;
    let _op = rig.operator(&ns, &["--resync-seconds", "5"]);
    let spec =
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "privateDns": false});
    let obj = create_bpl(&rig, &ns, "broken", spec).await;
    let uid = obj.metadata.uid.unwrap();
    let o = converged(&rig, &ns, "broken", READY_TIMEOUT).await;
    let first = o.status.unwrap().endpoints[0].vpc_endpoint_id.clone();
    rig.harness(
        "POST",
        &format!("endpoints/{first}/fail"),
        json!({"state": "failed", "code": "InsufficientCapacity", "message": "no capacity"}),
    )
    .await;
    // Never more than one endpoint at a time while it is replaced.
    let started = Instant::now();
    let mut most = 0;
    let o = loop {
        let live = rig
            .owned_endpoints(&uid)
            .await
            .iter()
            .filter(|e| {
                !e.state()
                    .is_some_and(|s| s.as_str().eq_ignore_ascii_case("deleted"))
            })
            .count();
        most = most.max(live);
        let o = rig.bpls(&ns).get("broken").await.unwrap();
        let replaced = o
            .status
            .as_ref()
            .and_then(|s| s.endpoints.first())
            .is_some_and(|e| e.vpc_endpoint_id != first && e.state == "available");
        if replaced && condition(&o, "Ready").is_some_and(|c| c.status == "True") {
            break o;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not replaced: {:?}",
            o.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(most, 1, "at most one endpoint at a time");
    assert_eq!(o.status.unwrap().observed_generation, o.metadata.generation);
    let replacing = warning_events(&rig, &ns, &uid, "EndpointReplacing").await;
    assert_eq!(replacing.len(), 1, "one event per attempt");
    let note = replacing[0].note.clone().unwrap_or_default();
    assert!(
        note.contains(&first) && note.contains("no capacity"),
        "{note}"
    );
    assert!(
        !warning_events(&rig, &ns, &uid, "EndpointFailed")
            .await
            .is_empty(),
        "Ready=False said why first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_keeps_failing_is_retried_with_backoff_one_at_a_time() {
    let rig = Rig::with_private_emulator(&["--pending-seconds", "0.3"]).await;
    install_crd(&rig).await;
    let ns = rig.namespace("edge-refused").await;
    let net = rig.network(&ns).await;
    let _op = rig.operator(&ns, &[]);
    // Every new endpoint of this service is rejected.
    rig.harness(
        "POST",
        "new-endpoints",
        json!({"service": "bedrock-agent-runtime", "fail": {"state": "rejected", "code": "Rejected", "message": "the service owner rejected it"}}),
    )
    .await;
    let spec = json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()},
        "privateDns": false, "services": ["bedrock-agent-runtime"]});
    let obj = create_bpl(&rig, &ns, "refused", spec).await;
    let uid = obj.metadata.uid.unwrap();
    let o = wait_ready(
        &rig,
        &ns,
        "refused",
        "False",
        Some("EndpointFailed"),
        READY_TIMEOUT,
    )
    .await;
    let msg = &condition(&o, "Ready").unwrap().message;
    assert!(msg.contains("rejected it") && msg.len() <= 1024, "{msg}");
    // Over 25 s: attempts at about 0, 10 and 30 s, never two endpoints at once.
    let started = Instant::now();
    let mut most = 0;
    let mut ids = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(25) {
        let endpoints = rig.owned_endpoints(&uid).await;
        let live: Vec<&aws_sdk_ec2::types::VpcEndpoint> = endpoints
            .iter()
            .filter(|e| {
                !e.state()
                    .is_some_and(|s| s.as_str().eq_ignore_ascii_case("deleted"))
            })
            .collect();
        most = most.max(live.len());
        ids.extend(
            live.iter()
                .filter_map(|e| e.vpc_endpoint_id().map(str::to_string)),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(most <= 1, "{most} endpoints at once");
    let events = warning_events(&rig, &ns, &uid, "EndpointReplacing").await;
    eprintln!(
        "refused: endpoints {ids:?} in ~{:?}, {} EndpointReplacing events",
        started.elapsed(),
        events.len()
    );
    assert!(!events.is_empty(), "an event per attempt");
    assert!((2..=4).contains(&ids.len()), "bounded backoff: {ids:?}");
}
