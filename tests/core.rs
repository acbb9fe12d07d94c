//! The operator's main job on the rig: create, update in place, delete, restart, bad input.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn create_reaches_ready_with_exactly_the_expected_aws_resources() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("core-create").await;
    let net = rig.network(&ns).await;
    let _op = rig.operator(&ns, &[]);
    let obj = create_bpl(
        &rig,
        &ns,
        "demo",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}}),
    )
    .await;
    let uid = obj.metadata.uid.clone().unwrap();

    let (ok, out, err) = rig.kubectl(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "--timeout=60s",
        "bedrockprivatelink/demo",
    ]);
    assert!(ok, "kubectl wait: {out} {err}");
    let obj = wait_ready(&rig, &ns, "demo", "True", Some("Ready"), READY_TIMEOUT).await;
    let status = obj.status.clone().unwrap();

    // EC2: exactly one endpoint and one group, as specified.
    let endpoints = rig.owned_endpoints(&uid).await;
    assert_eq!(endpoints.len(), 1, "one endpoint per service");
    let ep = &endpoints[0];
    assert_eq!(
        ep.service_name(),
        Some("com.amazonaws.us-east-1.bedrock-runtime")
    );
    assert_eq!(ep.private_dns_enabled(), Some(true));
    let mut subnets = ep.subnet_ids().to_vec();
    subnets.sort();
    let mut want = net.subnet_ids();
    want.sort();
    assert_eq!(subnets, want);
    let groups = rig.owned_groups(&uid).await;
    assert_eq!(groups.len(), 1, "one managed group");
    let g = &groups[0];
    assert_eq!(
        ingress_rules(g),
        vec![format!("tcp/443-443 {}", net.cidr)],
        "HTTPS from the VPC only"
    );
    assert!(
        g.ip_permissions_egress().is_empty(),
        "no egress rules: {:?}",
        g.ip_permissions_egress()
    );
    assert_eq!(
        ep.groups()
            .iter()
            .filter_map(|x| x.group_id())
            .collect::<Vec<_>>(),
        vec![g.group_id().unwrap()]
    );
    let policy: Value = serde_json::from_str(ep.policy_document().unwrap()).unwrap();
    assert!(
        bpl::policy::equivalent(&policy, &bpl::policy::render(None, "us-east-1").unwrap()),
        "InvokeOnly policy: {policy}"
    );

    // Status says what EC2 says.
    assert_eq!(status.observed_generation, obj.metadata.generation);
    assert_eq!(status.vpc_id.as_deref(), Some(net.vpc_id.as_str()));
    assert_eq!(status.security_group_id.as_deref(), g.group_id());
    assert_eq!(status.endpoints.len(), 1);
    assert_eq!(
        status.endpoints[0].vpc_endpoint_id,
        ep.vpc_endpoint_id().unwrap()
    );
    assert_eq!(status.endpoints[0].state, "available");
    assert_eq!(
        status.endpoints[0].private_dns_name.as_deref(),
        Some("bedrock-runtime.us-east-1.amazonaws.com")
    );
    assert!(
        status.endpoints[0].dns_names[0].ends_with(".bedrock-runtime.us-east-1.vpce.amazonaws.com")
    );
    for t in [
        "Ready",
        "SecurityGroupReady",
        "EndpointsReady",
        "PolicyApplied",
        "ConfigPublished",
    ] {
        let c = condition(&obj, t).unwrap_or_else(|| panic!("condition {t}"));
        assert_eq!(c.status, "True", "{t}: {}", c.message);
        assert_eq!(c.observed_generation, obj.metadata.generation);
    }

    // The ConfigMap a Deployment consumes with envFrom.
    let cms: Api<ConfigMap> = Api::namespaced(rig.client.clone(), &ns);
    let cm = cms
        .get("demo-bedrock")
        .await
        .expect("ConfigMap demo-bedrock");
    let data = cm.data.unwrap();
    assert_eq!(data["AWS_REGION"], "us-east-1");
    assert_eq!(
        data["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"],
        "https://bedrock-runtime.us-east-1.amazonaws.com"
    );
    assert_eq!(
        data["BEDROCK_RUNTIME_VPC_ENDPOINT_ID"],
        status.endpoints[0].vpc_endpoint_id
    );
    assert_eq!(
        data["BEDROCK_RUNTIME_VPCE_DNS_NAME"],
        status.endpoints[0].dns_names[0]
    );
    assert_eq!(cm.metadata.owner_references.unwrap()[0].uid, uid);

    // Someone edits or deletes the ConfigMap: the watch on it puts it back well before the
    // next resync (30 s here).
    let want = data.clone();
    cms.patch(
        "demo-bedrock",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"AWS_REGION": "eu-west-1", "EXTRA": "x"}})),
    )
    .await
    .expect("edit the ConfigMap");
    let restored = |what: &'static str| {
        let (cms, want) = (cms.clone(), want.clone());
        eventually(Duration::from_secs(10), what, move || {
            let (cms, want) = (cms.clone(), want.clone());
            async move { (cms.get("demo-bedrock").await.ok()?.data? == want).then_some(()) }
        })
    };
    restored("edited ConfigMap restored").await;
    cms.delete("demo-bedrock", &Default::default())
        .await
        .expect("delete the ConfigMap");
    restored("deleted ConfigMap recreated").await;

    // kubectl describe tells the story.
    let (ok, out, _) = rig.kubectl(&["describe", "-n", &ns, "bedrockprivatelink", "demo"]);
    assert!(ok);
    for needle in [
        "EndpointsReady",
        "SecurityGroupCreated",
        "EndpointCreated",
        "vpce-",
    ] {
        assert!(out.contains(needle), "describe lacks {needle}:\n{out}");
    }
    let (ok, out, _) = rig.kubectl(&["get", "-n", &ns, "bpl", "demo"]);
    assert!(
        ok && out.contains("True") && out.contains(&net.vpc_id),
        "{out}"
    );

    // Delete: nothing of ours remains, and the object is gone.
    delete_bpl(&rig, &ns, "demo").await;
    wait_gone(&rig, &ns, "demo", READY_TIMEOUT).await;
    assert!(
        rig.owned_endpoints(&uid).await.is_empty(),
        "endpoint left behind"
    );
    assert!(rig.owned_groups(&uid).await.is_empty(), "group left behind");
    assert!(
        cms.get_opt("demo-bedrock").await.unwrap().is_none(),
        "ConfigMap left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_changes_apply_in_place_keeping_the_endpoint_id() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("core-update").await;
    let net = rig.network(&ns).await;
    let _op = rig.operator(&ns, &[]);
    let two = net.subnet_ids()[..2].to_vec();
    let obj = create_bpl(
        &rig,
        &ns,
        "upd",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": two}}),
    )
    .await;
    let uid = obj.metadata.uid.clone().unwrap();
    let first = wait_ready(&rig, &ns, "upd", "True", None, READY_TIMEOUT).await;
    let id = first.status.as_ref().unwrap().endpoints[0]
        .vpc_endpoint_id
        .clone();
    let api = rig.bpls(&ns);

    let steps: Vec<(&str, Value)> = vec![
        (
            "third subnet",
            json!({"spec": {"subnets": {"ids": net.subnet_ids()}}}),
        ),
        (
            "FullAccess policy",
            json!({"spec": {"policy": {"preset": "FullAccess"}}}),
        ),
        ("private DNS off", json!({"spec": {"privateDns": false}})),
        (
            "narrower sources",
            json!({"spec": {"securityGroup": {"allowFrom": {"cidrs": ["10.99.0.0/24", "10.98.0.0/24"]}}}}),
        ),
        (
            "second service",
            json!({"spec": {"services": ["bedrock-runtime", "bedrock-agent-runtime"]}}),
        ),
        (
            "service removed",
            json!({"spec": {"services": ["bedrock-runtime"]}}),
        ),
    ];
    for (what, patch) in steps {
        let updated = api
            .patch("upd", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect(what);
        let generation = updated.metadata.generation;
        let obj = eventually(READY_TIMEOUT, what, || {
            let api = api.clone();
            async move {
                let o = api.get("upd").await.ok()?;
                let s = o.status.as_ref()?;
                let ready = condition(&o, "Ready")?;
                (s.observed_generation == generation && ready.status == "True").then_some(o.clone())
            }
        })
        .await;
        let endpoints = rig.owned_endpoints(&uid).await;
        let runtime: Vec<_> = endpoints
            .iter()
            .filter(|e| e.service_name().unwrap().ends_with("bedrock-runtime"))
            .collect();
        assert_eq!(
            runtime.len(),
            1,
            "{what}: still one bedrock-runtime endpoint"
        );
        let ep = runtime[0];
        assert_eq!(
            ep.vpc_endpoint_id(),
            Some(id.as_str()),
            "{what}: endpoint id unchanged"
        );
        match what {
            "third subnet" => assert_eq!(ep.subnet_ids().len(), 3, "{what}"),
            "FullAccess policy" => {
                let p: Value = serde_json::from_str(ep.policy_document().unwrap()).unwrap();
                assert_eq!(p["Statement"][0]["Action"], json!(["bedrock:*"]), "{what}");
                assert_ne!(
                    obj.status.as_ref().unwrap().policy_hash,
                    first.status.as_ref().unwrap().policy_hash
                );
            }
            "private DNS off" => {
                assert_eq!(ep.private_dns_enabled(), Some(false), "{what}");
                let cm: Api<ConfigMap> = Api::namespaced(rig.client.clone(), &ns);
                let data = cm.get("upd-bedrock").await.unwrap().data.unwrap();
                assert!(
                    data["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"].contains(".vpce.amazonaws.com"),
                    "{data:?}"
                );
            }
            "narrower sources" => {
                let g = &rig.owned_groups(&uid).await[0];
                assert_eq!(
                    ingress_rules(g),
                    vec!["tcp/443-443 10.98.0.0/24", "tcp/443-443 10.99.0.0/24"]
                );
            }
            "second service" => {
                assert_eq!(endpoints.len(), 2, "{what}");
                assert_eq!(obj.status.as_ref().unwrap().endpoints.len(), 2);
            }
            "service removed" => {
                let live: Vec<_> = endpoints
                    .iter()
                    .filter(|e| e.state().map(|s| s.as_str()) != Some("deleting"))
                    .collect();
                assert_eq!(live.len(), 1, "{what}: agent-runtime endpoint deleted");
            }
            _ => unreachable!(),
        }
    }
    delete_bpl(&rig, &ns, "upd").await;
    wait_gone(&rig, &ns, "upd", READY_TIMEOUT).await;
    assert!(rig.owned_endpoints(&uid).await.is_empty());
    assert!(rig.owned_groups(&uid).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn retain_leaves_aws_untouched_on_delete() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("core-retain").await;
    let net = rig.network(&ns).await;
    let _op = rig.operator(&ns, &[]);
    let obj = create_bpl(&rig, &ns, "keep", json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "deletionPolicy": "Retain"})).await;
    let uid = obj.metadata.uid.clone().unwrap();
    wait_ready(&rig, &ns, "keep", "True", None, READY_TIMEOUT).await;
    delete_bpl(&rig, &ns, "keep").await;
    wait_gone(&rig, &ns, "keep", READY_TIMEOUT).await;
    assert_eq!(
        rig.owned_endpoints(&uid).await.len(),
        1,
        "endpoint retained"
    );
    assert_eq!(rig.owned_groups(&uid).await.len(), 1, "group retained");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_operator_never_duplicates_endpoints_or_groups() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("core-crash").await;
    let net = rig.network(&ns).await;
    let mut op = rig.operator(&ns, &[]);
    let obj = create_bpl(
        &rig,
        &ns,
        "crash",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}}),
    )
    .await;
    let uid = obj.metadata.uid.clone().unwrap();
    // Kill it the moment the endpoint exists: before it could write status.
    eventually(READY_TIMEOUT, "an endpoint to exist", || {
        let rig = &rig;
        let uid = uid.clone();
        async move { (!rig.owned_endpoints(&uid).await.is_empty()).then_some(()) }
    })
    .await;
    op.kill();
    let _op2 = rig.operator(&ns, &[]);
    wait_ready(&rig, &ns, "crash", "True", None, READY_TIMEOUT).await;
    assert_eq!(
        rig.owned_endpoints(&uid).await.len(),
        1,
        "exactly one endpoint after restart"
    );
    assert_eq!(
        rig.owned_groups(&uid).await.len(),
        1,
        "exactly one group after restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nonexistent_subnet_is_reported_and_nothing_is_created() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("core-bad").await;
    let net = rig.network(&ns).await;
    let _op = rig.operator(&ns, &[]);
    let obj = create_bpl(
        &rig,
        &ns,
        "bad",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": ["subnet-0000000000000dead"]}}),
    )
    .await;
    let uid = obj.metadata.uid.clone().unwrap();
    let o = wait_ready(
        &rig,
        &ns,
        "bad",
        "False",
        Some("SubnetNotFound"),
        READY_TIMEOUT,
    )
    .await;
    let msg = &condition(&o, "Ready").unwrap().message;
    assert!(
        msg.contains("subnet-0000000000000dead") && msg.contains("spec.subnets.ids"),
        "{msg}"
    );
    let (_, out, _) = rig.kubectl(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "reason=SubnetNotFound",
        "-o",
        "name",
    ]);
    assert!(!out.trim().is_empty(), "a Warning event SubnetNotFound");
    assert!(rig.owned_endpoints(&uid).await.is_empty());
    assert!(rig.owned_groups(&uid).await.is_empty());
    delete_bpl(&rig, &ns, "bad").await;
    wait_gone(&rig, &ns, "bad", READY_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn specs_the_schema_rejects_never_reach_the_controller() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("core-schema").await;
    let cases = [
        (r#"{"services": ["bedrock-fake"]}"#, "services"),
        (r#"{"vpcId": "vpc-XYZ"}"#, "vpcId"),
        (
            r#"{"policy": {"preset": "Custom"}}"#,
            "preset Custom requires document",
        ),
        (
            r#"{"securityGroup": {"allowFrom": {"cidrs": ["0.0.0.0/0"]}}}"#,
            "allowAnyAddress",
        ),
        (
            r#"{"securityGroup": {"allowFrom": {"cidrs": ["10.0.0.300/16"]}}}"#,
            "CIDR",
        ),
        (r#"{"tags": {"aws:owner": "me"}}"#, "aws:"),
    ];
    for (spec, needle) in cases {
        let manifest = format!(
            r#"{{"apiVersion":"bedrock.privatelink.io/v1alpha1","kind":"BedrockPrivateLink","metadata":{{"name":"x","namespace":"{ns}"}},"spec":{spec}}}"#
        );
        let (ok, _, err) = rig.kubectl_stdin(&["apply", "-f", "-"], &manifest);
        assert!(!ok, "{spec} should be rejected");
        assert!(
            err.contains(needle),
            "{spec}: message should name {needle}: {err}"
        );
    }
    assert!(
        rig.bpls(&ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
