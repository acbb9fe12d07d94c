//! What a person had to look up by hand: the cluster's VPC and subnets, which zones offer a
//! service, private-DNS clashes, sharing one VPC between teams, and the policy builder.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn seed() -> Value {
    let path = std::env::var("RIG_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".rig"))
        .join("seed.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("seed.json")).unwrap()
}

/// Nodes are cluster-wide, so everything that depends on them runs in this one test.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_vpc_and_node_subnets_are_discovered_from_the_nodes() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let seed = seed();
    let ns = rig.namespace("net-discovery").await;
    let _op = rig.operator(&ns, &[]);
    // privateDns off: the seeded VPC may hold the demo's private-DNS endpoint.
    let obj = create_bpl(&rig, &ns, "found", json!({"privateDns": false})).await;
    let uid = obj.metadata.uid.clone().unwrap();
    let o = wait_ready(&rig, &ns, "found", "True", None, T).await;
    let st = o.status.clone().unwrap();
    assert_eq!(
        st.vpc_id.as_deref(),
        seed["vpc_id"].as_str(),
        "the Nodes' VPC"
    );
    let mut want: Vec<String> = seed["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    let mut got = st.endpoints[0].subnet_ids.clone();
    got.sort();
    assert_eq!(got, want, "one subnet per node zone");
    assert_eq!(
        rig.owned_endpoints(&uid).await[0].vpc_id(),
        seed["vpc_id"].as_str()
    );

    // A Node in another VPC: the operator refuses to guess.
    let other = rig.network(&ns).await;
    let run = rig
        .ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
        .min_count(1)
        .max_count(1)
        .subnet_id(&other.subnets[0].0)
        .send()
        .await
        .expect("run instance");
    let instance = run.instances()[0].instance_id().unwrap().to_string();
    let nodes: Api<Node> = Api::all(rig.client.clone());
    let node_name = format!("stray-{}", short_id());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": node_name},
        "spec": {"providerID": format!("aws:///{}/{instance}", other.subnets[0].1)}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let obj2 = create_bpl(&rig, &ns, "ambiguous", json!({"privateDns": false})).await;
    let o = wait_ready(&rig, &ns, "ambiguous", "False", Some("MultipleVpcs"), T).await;
    let msg = &condition(&o, "Ready").unwrap().message;
    assert!(
        msg.contains(&other.vpc_id) && msg.contains("spec.vpcId"),
        "{msg}"
    );
    assert!(
        rig.owned_endpoints(obj2.metadata.uid.as_deref().unwrap())
            .await
            .is_empty()
    );
    nodes
        .delete(&node_name, &DeleteParams::default())
        .await
        .unwrap();
    for name in ["found", "ambiguous"] {
        delete_bpl(&rig, &ns, name).await;
        wait_gone(&rig, &ns, name, T).await;
    }
    assert!(rig.owned_endpoints(&uid).await.is_empty() && rig.owned_groups(&uid).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn only_zones_offering_the_service_are_used_one_subnet_each() {
    let rig = Rig::with_private_emulator(&["--pending-seconds", "0.2", "--no-seed"]).await;
    install_crd(&rig).await;
    let ns = rig.namespace("net-zones").await;
    let net = rig.network(&ns).await;
    let prefix = net.cidr.trim_end_matches(".0.0/16");
    let extra = rig
        .subnet(
            &net.vpc_id,
            &format!("{prefix}.200.0/24"),
            "us-east-1a",
            "extra",
        )
        .await;
    rig.harness(
        "POST",
        "service-azs",
        json!({"service": "bedrock-runtime", "azs": ["us-east-1a", "us-east-1b"]}),
    )
    .await;
    rig.harness(
        "POST",
        "service-azs",
        json!({"service": "bedrock-agentcore", "azs": []}),
    )
    .await;
    let _op = rig.operator(&ns, &[]);
    let mut ids = net.subnet_ids();
    ids.push(extra.0.clone());
    let obj = create_bpl(
        &rig,
        &ns,
        "zones",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": ids}}),
    )
    .await;
    let o = wait_ready(&rig, &ns, "zones", "True", Some("Ready"), T).await;
    let st = o.status.unwrap();
    let mut used = st.endpoints[0].subnet_ids.clone();
    used.sort();
    let (a, b, c) = (&net.subnets[0].0, &net.subnets[1].0, &net.subnets[2].0);
    let mut want = vec![a.clone().min(extra.0.clone()), b.clone()];
    want.sort();
    assert_eq!(used, want, "lowest subnet id per offered zone");
    let skipped: Vec<(String, String)> = st
        .skipped_subnets
        .iter()
        .map(|s| (s.subnet_id.clone(), s.reason.clone()))
        .collect();
    assert!(
        skipped
            .iter()
            .any(|(id, r)| id == c && r.contains("does not offer bedrock-runtime")),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|(_, r)| r.contains("one subnet per zone")),
        "{skipped:?}"
    );

    // One zone left: allowed, but said.
    rig.harness(
        "POST",
        "service-azs",
        json!({"service": "bedrock-runtime", "azs": ["us-east-1b"]}),
    )
    .await;
    rig.bpls(&ns)
        .patch(
            "zones",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tags": {"resilience": "test"}}})),
        )
        .await
        .unwrap();
    let o = wait_ready(&rig, &ns, "zones", "True", Some("ReducedResilience"), T).await;
    assert!(
        condition(&o, "Ready")
            .unwrap()
            .message
            .contains("fewer than 2 Availability Zones")
    );
    let (_, events, _) = rig.kubectl(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "reason=ReducedResilience",
        "-o",
        "name",
    ]);
    assert!(
        !events.trim().is_empty(),
        "a Warning event says resilience is reduced"
    );
    let ep = &rig
        .owned_endpoints(obj.metadata.uid.as_deref().unwrap())
        .await[0];
    assert_eq!(
        ep.subnet_ids(),
        std::slice::from_ref(b),
        "moved to the only offered zone in place"
    );

    // Not offered at all (set before the operator started): nothing created.
    let obj2 = create_bpl(&rig, &ns, "missing", json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "services": ["bedrock-agentcore"]})).await;
    let o = wait_ready(
        &rig,
        &ns,
        "missing",
        "False",
        Some("ServiceNotAvailable"),
        T,
    )
    .await;
    assert!(
        condition(&o, "Ready")
            .unwrap()
            .message
            .contains("us-east-1")
    );
    assert!(
        rig.owned_endpoints(obj2.metadata.uid.as_deref().unwrap())
            .await
            .is_empty()
    );
    assert!(
        rig.owned_groups(obj2.metadata.uid.as_deref().unwrap())
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subnets_can_be_chosen_by_tag() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("net-selector").await;
    let net = rig.network(&ns).await;
    let _op = rig.operator(&ns, &[]);
    create_bpl(
        &rig,
        &ns,
        "tagged",
        json!({"vpcId": net.vpc_id, "subnets": {"selector": {"tier": "private"}}}),
    )
    .await;
    let o = wait_ready(&rig, &ns, "tagged", "True", None, T).await;
    assert_eq!(o.status.unwrap().endpoints[0].subnet_ids.len(), 3);
    create_bpl(
        &rig,
        &ns,
        "none",
        json!({"vpcId": net.vpc_id, "subnets": {"selector": {"tier": "nope"}}}),
    )
    .await;
    let o = wait_ready(&rig, &ns, "none", "False", Some("NoUsableSubnets"), T).await;
    assert!(
        condition(&o, "Ready")
            .unwrap()
            .message
            .contains("spec.subnets.selector")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_private_dns_endpoint_is_refused_and_teams_share_or_get_their_own() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("net-share").await;
    let team = rig.namespace("net-team").await;
    // The team opts in to receiving configuration from other namespaces.
    rig.kubectl(&[
        "label",
        "namespace",
        &team,
        "bedrock.privatelink.io/accept-config=true",
    ]);
    let net = rig.network(&ns).await;
    let _op = rig.operator(&ns, &[]);
    // The platform team's endpoint owns private DNS, and publishes its config to the team.
    create_bpl(&rig, &ns, "shared", json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "workloadConfig": {"namespaces": [team]}})).await;
    let shared = wait_ready(&rig, &ns, "shared", "True", None, T).await;
    let shared_id = shared.status.as_ref().unwrap().endpoints[0]
        .vpc_endpoint_id
        .clone();
    let cms: Api<ConfigMap> = Api::namespaced(rig.client.clone(), &team);
    let copy = cms
        .get("shared-bedrock")
        .await
        .expect("copy in the team namespace");
    assert_eq!(
        copy.data.unwrap()["BEDROCK_RUNTIME_VPC_ENDPOINT_ID"],
        shared_id
    );
    assert_eq!(
        shared.status.as_ref().unwrap().published_namespaces,
        vec![team.clone()]
    );

    // A second private-DNS endpoint for the same service would be refused by AWS: said first.
    let clash = create_bpl(
        &rig,
        &ns,
        "clash",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}}),
    )
    .await;
    let o = wait_ready(&rig, &ns, "clash", "False", Some("PrivateDnsConflict"), T).await;
    let msg = &condition(&o, "Ready").unwrap().message;
    assert!(
        msg.contains(&shared_id) && msg.contains("privateDns: false"),
        "{msg}"
    );
    assert!(
        rig.owned_endpoints(clash.metadata.uid.as_deref().unwrap())
            .await
            .is_empty()
    );

    // A team that wants its own policy: its own endpoint, reached through its vpce name.
    let own = create_bpl(&rig, &ns, "team-own", json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "privateDns": false, "policy": {"preset": "InvokeOnly", "models": ["anthropic.claude-3-haiku-20240307-v1:0"]}})).await;
    let o = wait_ready(&rig, &ns, "team-own", "True", None, T).await;
    let data = Api::<ConfigMap>::namespaced(rig.client.clone(), &ns)
        .get("team-own-bedrock")
        .await
        .unwrap()
        .data
        .unwrap();
    let url = &data["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"];
    assert!(
        url.starts_with("https://vpce-")
            && url.ends_with(".bedrock-runtime.us-east-1.vpce.amazonaws.com"),
        "{url}"
    );
    assert_ne!(o.status.unwrap().endpoints[0].vpc_endpoint_id, shared_id);
    let ep = &rig
        .owned_endpoints(own.metadata.uid.as_deref().unwrap())
        .await[0];
    let policy: Value = serde_json::from_str(ep.policy_document().unwrap()).unwrap();
    assert_eq!(
        policy["Statement"][0]["Resource"],
        json!([
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"
        ])
    );

    // Unselecting the team namespace removes the copy.
    rig.bpls(&ns)
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"workloadConfig": {"namespaces": null}}})),
        )
        .await
        .unwrap();
    eventually(T, "the copy to be removed", || {
        let cms = cms.clone();
        async move {
            cms.get_opt("shared-bedrock")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_follow_a_namespace_label_selector() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("net-label").await;
    let t1 = rig.namespace("net-label-t1").await;
    let net = rig.network(&ns).await;
    let label = format!("bpl-test-{}", short_id());
    let t2 = rig.namespace("net-label-t2").await;
    rig.kubectl(&[
        "label",
        "namespace",
        &t1,
        &format!("{label}=yes"),
        "bedrock.privatelink.io/accept-config=true",
    ]);
    // Selected by the object's author but not opted in: gets nothing.
    rig.kubectl(&["label", "namespace", &t2, &format!("{label}=yes")]);
    let op = rig.operator(&ns, &[]);
    create_bpl(&rig, &ns, "sel", json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "privateDns": false, "workloadConfig": {"namespaceSelector": {label.clone(): "yes"}}})).await;
    wait_ready(&rig, &ns, "sel", "True", None, T).await;
    let cms: Api<ConfigMap> = Api::namespaced(rig.client.clone(), &t1);
    eventually(T, "copy in the labelled namespace", || {
        let cms = cms.clone();
        async move { cms.get_opt("sel-bedrock").await.ok()?.map(|_| ()) }
    })
    .await;
    let t2_cms: Api<ConfigMap> = Api::namespaced(rig.client.clone(), &t2);
    assert!(
        t2_cms.get_opt("sel-bedrock").await.unwrap().is_none(),
        "no copy without opt-in"
    );
    // Namespace label changes take effect at once (a watch), not at the next resync (30 s).
    let quick = Duration::from_secs(10);
    rig.kubectl(&[
        "label",
        "namespace",
        &t2,
        "bedrock.privatelink.io/accept-config=true",
    ]);
    eventually(quick, "a copy once t2 opts in", || {
        let c = t2_cms.clone();
        async move { c.get_opt("sel-bedrock").await.ok()?.map(|_| ()) }
    })
    .await;
    rig.kubectl(&["label", "namespace", &t1, &format!("{label}-")]);
    eventually(quick, "t1's copy removed once unselected", || {
        let c = cms.clone();
        async move { c.get_opt("sel-bedrock").await.ok()?.is_none().then_some(()) }
    })
    .await;
    // Where copies may go comes from the operator's watch of Namespaces: reconciles ask the
    // API server nothing about namespaces (the watch's one initial list aside).
    let m = op.metrics().await;
    let asked = |verb: &str| {
        metric_sum(
            &m,
            "bpl_kube_requests_total",
            &[&format!("verb=\"{verb}\""), "resource=\"namespaces\""],
        )
    };
    assert!(asked("watch") >= 1.0, "{m}");
    // One get at start: the cluster identity (the kube-system namespace's uid, issue 17).
    assert!(asked("get") <= 1.0, "{m}");
    assert!(asked("list") <= 1.0, "{m}");
    delete_bpl(&rig, &ns, "sel").await;
    wait_gone(&rig, &ns, "sel", T).await;
    assert!(
        t2_cms.get_opt("sel-bedrock").await.unwrap().is_none(),
        "copies go with the object"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_are_built_from_models_principals_and_organization() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("net-policy").await;
    let net = rig.network(&ns).await;
    let _op = rig.operator(&ns, &[]);
    let obj = create_bpl(&rig, &ns, "pol", json!({
        "vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "privateDns": false,
        "policy": {"preset": "ReadOnly", "models": ["us.anthropic.claude-3-5-haiku-20241022-v1:0"],
                   "principals": ["arn:aws:iam::123456789012:role/chat"], "organizationId": "o-a1b2c3d4e5"}
    })).await;
    let o = wait_ready(&rig, &ns, "pol", "True", None, T).await;
    let ep = &rig
        .owned_endpoints(obj.metadata.uid.as_deref().unwrap())
        .await[0];
    let policy: Value = serde_json::from_str(ep.policy_document().unwrap()).unwrap();
    let invoke = &policy["Statement"][0];
    assert_eq!(
        invoke["Principal"],
        json!({"AWS": ["arn:aws:iam::123456789012:role/chat"]})
    );
    assert_eq!(
        invoke["Condition"]["StringEquals"]["aws:PrincipalOrgID"],
        "o-a1b2c3d4e5"
    );
    assert_eq!(
        invoke["Resource"][0],
        "arn:aws:bedrock:us-east-1:*:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
    );
    assert_eq!(
        policy["Statement"][1]["Action"],
        json!(["bedrock:Get*", "bedrock:List*"])
    );
    assert_eq!(
        o.status.unwrap().policy_hash.unwrap(),
        bpl::policy::hash(&policy)
    );

    // A Custom document that is not an IAM policy: said, nothing created.
    let bad = create_bpl(&rig, &ns, "badpol", json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "policy": {"preset": "Custom", "document": "{\"Statement\": \"allow everything\"}"}})).await;
    let o = wait_ready(&rig, &ns, "badpol", "False", Some("InvalidPolicy"), T).await;
    assert!(
        condition(&o, "Ready")
            .unwrap()
            .message
            .contains("not an IAM policy document")
    );
    assert!(
        rig.owned_endpoints(bad.metadata.uid.as_deref().unwrap())
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn configmaps_the_operator_did_not_create_are_never_touched() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("net-cmguard").await;
    let other = rig.namespace("net-cmguard-victim").await;
    rig.kubectl(&[
        "label",
        "namespace",
        &other,
        "bedrock.privatelink.io/accept-config=true",
    ]);
    for n in [&ns, &other] {
        let (ok, _, err) = rig.kubectl(&[
            "create",
            "configmap",
            "app-settings",
            "-n",
            n,
            "--from-literal=keep=me",
        ]);
        assert!(ok, "{err}");
    }
    let net = rig.network(&ns).await;
    let _op = rig.operator(&ns, &[]);
    create_bpl(
        &rig,
        &ns,
        "guard",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "privateDns": false,
        "workloadConfig": {"configMapName": "app-settings", "namespaces": [other]}}),
    )
    .await;
    let o = wait_ready(&rig, &ns, "guard", "False", Some("ConfigMapConflict"), T).await;
    assert!(
        condition(&o, "Ready")
            .unwrap()
            .message
            .contains("app-settings")
    );
    delete_bpl(&rig, &ns, "guard").await;
    wait_gone(&rig, &ns, "guard", T).await;
    for n in [&ns, &other] {
        let cm = Api::<ConfigMap>::namespaced(rig.client.clone(), n)
            .get("app-settings")
            .await
            .expect("still there");
        let data = cm.data.unwrap();
        assert_eq!(data.len(), 1, "{n}: untouched: {data:?}");
        assert_eq!(data["keep"], "me");
    }
}
