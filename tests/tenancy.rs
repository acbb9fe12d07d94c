//! Tenancy on the rig: what one namespace may do (the cluster admin's BedrockPrivateLinkGrants
//! and the built-in default), and the operator's own privileges (the chart's
//! ValidatingAdmissionPolicy, exercised with the operator's ServiceAccount token).
//!
//! Namespaces here are made without the rig's open-tenancy label (tests/common), so the
//! built-in default or this test's own grants decide. "The cluster's VPC" is the operator's
//! --default-vpc-id, a VPC of the test's own.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bpl::api::{BedrockPrivateLink, BedrockPrivateLinkGrant};
use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
const CHART: &str = "charts/bedrock-privatelink-operator";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const OWNER_UID: &str = "bedrock.privatelink.io/owner-uid";

/// A namespace no grant selects (no open-tenancy label).
async fn plain_namespace(rig: &Rig, prefix: &str) -> String {
    rig.namespace_labelled(prefix, json!({})).await
}

async fn delete_grant(rig: &Rig, name: &str) {
    let _ = Api::<BedrockPrivateLinkGrant>::all(rig.client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Waits for Ready=False with `reason`, then checks that nothing exists in AWS for the object
/// and that a Warning event names the rule.
async fn refused_with_nothing_created(
    rig: &Rig,
    ns: &str,
    name: &str,
    reason: &str,
    mentions: &[&str],
) -> BedrockPrivateLink {
    let o = wait_ready(rig, ns, name, "False", Some(reason), TIMEOUT).await;
    let msg = &condition(&o, "Ready").unwrap().message;
    for m in mentions {
        assert!(
            msg.contains(m),
            "{ns}/{name}: message mentions {m:?}: {msg}"
        );
    }
    assert!(msg.contains("Nothing was created in AWS"), "{msg}");
    let uid = o.uid().unwrap();
    assert!(
        rig.owned_endpoints(&uid).await.is_empty(),
        "{name}: no endpoint"
    );
    assert!(rig.owned_groups(&uid).await.is_empty(), "{name}: no group");
    eventually(TIMEOUT, &format!("{name}: Warning event {reason}"), || {
        let uid = uid.clone();
        async move { (!warning_events(rig, ns, &uid, reason).await.is_empty()).then_some(()) }
    })
    .await;
    o
}

/// The object's live endpoint ids (AWS's view), sorted.
async fn live_endpoints(rig: &Rig, uid: &str) -> Vec<String> {
    let mut ids: Vec<String> = rig
        .owned_endpoints(uid)
        .await
        .iter()
        .filter(|e| {
            e.state()
                .is_some_and(|s| s.as_str().eq_ignore_ascii_case("available"))
        })
        .filter_map(|e| e.vpc_endpoint_id().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

fn subnets(net: &Network) -> Value {
    json!({"ids": net.subnet_ids()})
}

// ---------------------------------------------------------------------------------------------
// 1. The built-in default refuses another VPC, private DNS, FullAccess/Custom and a sixth
//    endpoint, with nothing created; a grant admits each; tightening the grant later flips the
//    conditions of existing objects and deletes nothing.

#[tokio::test(flavor = "multi_thread")]
async fn default_refuses_a_grant_admits_and_a_tightened_grant_freezes() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = plain_namespace(&rig, "ten-rules").await;
    let cluster = rig.network(&format!("{ns}-cluster")).await;
    let other = rig.network(&format!("{ns}-other")).await;
    let _op = rig.operator(&ns, &["--default-vpc-id", &cluster.vpc_id]);

    let custom_doc = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": "*", "Action": "bedrock:InvokeModel", "Resource": "*"}]})
    .to_string();
    // Names sort in creation order: the endpoint count goes by (creation time, name).
    let specs = [
        (
            "a-admitted",
            json!({"subnets": subnets(&cluster), "privateDns": false,
                   "services": ["bedrock-runtime", "bedrock-agent-runtime"]}),
        ),
        (
            "b-other-vpc",
            json!({"vpcId": other.vpc_id, "subnets": subnets(&other), "privateDns": false}),
        ),
        ("c-private-dns", json!({"subnets": subnets(&cluster)})),
        (
            "d-full-access",
            json!({"subnets": subnets(&cluster), "privateDns": false,
                   "policy": {"preset": "FullAccess"}}),
        ),
        (
            "e-custom",
            json!({"subnets": subnets(&cluster), "privateDns": false,
                   "policy": {"preset": "Custom", "document": custom_doc}}),
        ),
        (
            "f-too-many",
            json!({"subnets": subnets(&cluster), "privateDns": false,
                   "services": ["bedrock", "bedrock-runtime", "bedrock-agent", "bedrock-agent-runtime"]}),
        ),
    ];
    for (name, spec) in &specs {
        create_bpl(&rig, &ns, name, spec.clone()).await;
    }

    // Without a grant: the default.
    wait_ready(&rig, &ns, "a-admitted", "True", None, TIMEOUT).await;
    refused_with_nothing_created(
        &rig,
        &ns,
        "b-other-vpc",
        "VpcNotAllowed",
        &[
            &other.vpc_id,
            &cluster.vpc_id,
            "built-in default",
            "spec.vpcs",
        ],
    )
    .await;
    refused_with_nothing_created(
        &rig,
        &ns,
        "c-private-dns",
        "PrivateDnsNotAllowed",
        &["spec.privateDns: false", "built-in default"],
    )
    .await;
    for name in ["d-full-access", "e-custom"] {
        refused_with_nothing_created(
            &rig,
            &ns,
            name,
            "PolicyPresetNotAllowed",
            &["InvokeOnly, ReadOnly"],
        )
        .await;
    }
    refused_with_nothing_created(
        &rig,
        &ns,
        "f-too-many",
        "EndpointLimitExceeded",
        &[
            "would have 6 endpoints (2 of older objects, 4 of this one)",
            "allows 5",
        ],
    )
    .await;

    // Taking over (another cluster's endpoint, say) needs a grant that allows it: refused
    // before anything is looked up, let alone tagged.
    create_bpl(
        &rig,
        &ns,
        "g-take-over",
        json!({"subnets": subnets(&cluster), "privateDns": false,
               "adopt": {"endpointIds": ["vpce-0123456789abcdef0"], "takeOver": true}}),
    )
    .await;
    refused_with_nothing_created(
        &rig,
        &ns,
        "g-take-over",
        "TakeOverNotAllowed",
        &["allowTakeOver: true", "built-in default"],
    )
    .await;
    delete_bpl(&rig, &ns, "g-take-over").await;
    wait_gone(&rig, &ns, "g-take-over", TIMEOUT).await;

    // The cluster admin grants everything: each refused object becomes Ready, at once (the
    // grant watch queues every object).
    let grant = format!("tenancy-{ns}");
    rig.apply_grant(
        &grant,
        json!({
            "namespaces": {"names": [ns]},
            "vpcs": {"ids": [other.vpc_id]},
            "privateDns": true,
            "policyPresets": ["InvokeOnly", "ReadOnly", "FullAccess", "Custom"],
            "maxEndpointsPerNamespace": 20,
        }),
    )
    .await;
    let mut endpoints = std::collections::BTreeMap::new();
    for (name, _) in &specs {
        let o = wait_ready(&rig, &ns, name, "True", None, TIMEOUT).await;
        let uid = o.uid().unwrap();
        let ids = live_endpoints(&rig, &uid).await;
        assert!(!ids.is_empty(), "{name}: endpoints in AWS");
        endpoints.insert(name.to_string(), (uid, ids));
    }
    let dns = rig.bpls(&ns).get("c-private-dns").await.unwrap();
    assert!(
        dns.status.unwrap().endpoints[0].private_dns_name.is_some(),
        "private DNS on"
    );

    // Tightened: no other VPC, no private DNS, no FullAccess/Custom, at most 5 endpoints.
    rig.apply_grant(
        &grant,
        json!({"namespaces": {"names": [ns]}, "maxEndpointsPerNamespace": 5}),
    )
    .await;
    for (name, reason) in [
        ("b-other-vpc", "VpcNotAllowed"),
        ("c-private-dns", "PrivateDnsNotAllowed"),
        ("d-full-access", "PolicyPresetNotAllowed"),
        ("e-custom", "PolicyPresetNotAllowed"),
        ("f-too-many", "EndpointLimitExceeded"),
    ] {
        let o = wait_ready(&rig, &ns, name, "False", Some(reason), TIMEOUT).await;
        let msg = condition(&o, "Ready").unwrap().message.clone();
        assert!(
            msg.contains(&format!("BedrockPrivateLinkGrant {grant}")),
            "{name}: names the grant: {msg}"
        );
        assert!(
            msg.contains("stay as they are") && msg.contains("deleting the object removes them"),
            "{name}: says what happens to its endpoints: {msg}"
        );
        let (uid, _) = &endpoints[name];
        eventually(
            TIMEOUT,
            &format!("{name}: Warning event {reason}"),
            || async { (!warning_events(&rig, &ns, uid, reason).await.is_empty()).then_some(()) },
        )
        .await;
        // The status still shows its endpoints; the ConfigMap workloads use is still there.
        assert!(!o.status.as_ref().unwrap().endpoints.is_empty(), "{name}");
        let cms: Api<ConfigMap> = Api::namespaced(rig.client.clone(), &ns);
        assert!(
            cms.get_opt(&format!("{name}-bedrock"))
                .await
                .unwrap()
                .is_some(),
            "{name}: ConfigMap kept"
        );
    }
    wait_ready(&rig, &ns, "a-admitted", "True", None, TIMEOUT).await;
    // A few reconciles later nothing was deleted or replaced in AWS.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, (uid, ids)) in &endpoints {
        assert_eq!(
            &live_endpoints(&rig, uid).await,
            ids,
            "{name}: endpoints kept"
        );
    }

    // Deleting a frozen object removes its endpoints as usual.
    delete_bpl(&rig, &ns, "b-other-vpc").await;
    wait_gone(&rig, &ns, "b-other-vpc", TIMEOUT).await;
    assert!(
        live_endpoints(&rig, &endpoints["b-other-vpc"].0)
            .await
            .is_empty()
    );
    for (name, _) in &specs {
        delete_bpl(&rig, &ns, name).await;
    }
    for (name, _) in &specs {
        wait_gone(&rig, &ns, name, TIMEOUT).await;
    }
    delete_grant(&rig, &grant).await;
}

// ---------------------------------------------------------------------------------------------
// 2. A grant by label selector: a namespace gains it when labelled and loses it when not; the
//    endpoint count follows creation order.

#[tokio::test(flavor = "multi_thread")]
async fn label_selected_grant_and_endpoint_count_in_creation_order() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = plain_namespace(&rig, "ten-label").await;
    let cluster = rig.network(&format!("{ns}-cluster")).await;
    let other = rig.network(&format!("{ns}-other")).await;
    let _op = rig.operator(&ns, &["--default-vpc-id", &cluster.vpc_id]);
    let key = format!("tenancy-test.example.com/{ns}");
    let grant = format!("label-{ns}");
    rig.apply_grant(&grant,
        json!({
            "namespaces": {"selector": {"matchExpressions": [{"key": key, "operator": "In", "values": ["yes"]}]}},
            "vpcs": {"clusterVpc": false, "ids": [other.vpc_id]},
            "maxEndpointsPerNamespace": 2,
        }),
    )
    .await;
    let spec = json!({"vpcId": other.vpc_id, "subnets": subnets(&other), "privateDns": false});
    for name in ["c1", "c2", "c3"] {
        create_bpl(&rig, &ns, name, spec.clone()).await;
    }
    // Not labelled: the default, which allows only the cluster's VPC.
    for name in ["c1", "c2", "c3"] {
        refused_with_nothing_created(&rig, &ns, name, "VpcNotAllowed", &["built-in default"]).await;
    }

    // Labelled: the grant applies at once (the namespace watch queues its objects); two fit.
    let nss: Api<Namespace> = Api::all(rig.client.clone());
    let label = |v: Option<&str>| json!({"metadata": {"labels": {key.clone(): v}}});
    nss.patch(
        &ns,
        &PatchParams::default(),
        &Patch::Merge(label(Some("yes"))),
    )
    .await
    .unwrap();
    wait_ready(&rig, &ns, "c1", "True", None, TIMEOUT).await;
    wait_ready(&rig, &ns, "c2", "True", None, TIMEOUT).await;
    refused_with_nothing_created(
        &rig,
        &ns,
        "c3",
        "EndpointLimitExceeded",
        &[&format!(
            "BedrockPrivateLinkGrant {grant} allows 2 endpoints"
        )],
    )
    .await;

    // A higher limit admits the third.
    rig.apply_grant(&grant,
        json!({
            "namespaces": {"selector": {"matchExpressions": [{"key": key, "operator": "In", "values": ["yes"]}]}},
            "vpcs": {"clusterVpc": false, "ids": [other.vpc_id]},
            "maxEndpointsPerNamespace": 3,
        }),
    )
    .await;
    let c3 = wait_ready(&rig, &ns, "c3", "True", None, TIMEOUT).await;
    let c3_endpoints = live_endpoints(&rig, &c3.uid().unwrap()).await;

    // The label goes: back to the default; the objects say so and keep their endpoints.
    nss.patch(&ns, &PatchParams::default(), &Patch::Merge(label(None)))
        .await
        .unwrap();
    for name in ["c1", "c2", "c3"] {
        let o = wait_ready(&rig, &ns, name, "False", Some("VpcNotAllowed"), TIMEOUT).await;
        let msg = &condition(&o, "Ready").unwrap().message;
        assert!(msg.contains("stay as they are"), "{msg}");
    }
    assert_eq!(live_endpoints(&rig, &c3.uid().unwrap()).await, c3_endpoints);

    for name in ["c1", "c2", "c3"] {
        delete_bpl(&rig, &ns, name).await;
    }
    for name in ["c1", "c2", "c3"] {
        wait_gone(&rig, &ns, name, TIMEOUT).await;
    }
    delete_grant(&rig, &grant).await;
}

// ---------------------------------------------------------------------------------------------
// 3. The chart's ConfigMap guard, with the operator's own ServiceAccount token.

/// The chart installed with Helm into a namespace of its own; uninstalled on drop.
struct Release {
    name: String,
    ns: String,
    sa: String,
}

impl Release {
    fn install(rig: &Rig, watch_ns: &str) -> Release {
        let id = short_id();
        let (name, ns) = (format!("ten-{id}"), format!("ten-system-{id}"));
        let endpoint = &rig.env["AWS_ENDPOINT_URL_EC2"];
        assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
        let out = std::process::Command::new(rig.bin("helm"))
            .args(["install", &name, CHART, "-n", &ns, "--create-namespace"])
            .args(["--set", "aws.region=us-east-1"])
            .args(["--set", &format!("aws.ec2EndpointUrl={endpoint}")])
            .args(["--set", &format!("watchNamespaces={{{watch_ns}}}")])
            .env("KUBECONFIG", &rig.env["KUBECONFIG"])
            .current_dir(repo_root())
            .output()
            .expect("helm install");
        assert!(
            out.status.success(),
            "helm install: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Release {
            sa: format!("{name}-bedrock-privatelink-operator"),
            name,
            ns,
        }
    }

    /// A kubeconfig with a TokenRequest token of the chart's ServiceAccount.
    fn sa_kubeconfig(&self, rig: &Rig) -> PathBuf {
        let (ok, token, err) =
            rig.kubectl(&["create", "token", &self.sa, "-n", &self.ns, "--duration=1h"]);
        assert!(ok, "kubectl create token: {err}");
        let admin: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&rig.env["KUBECONFIG"]).unwrap())
                .unwrap();
        let cluster = &admin["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().unwrap();
        assert!(server.starts_with("https://127.0.0.1:"), "{server}");
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "rig", "cluster": {"server": server,
                "certificate-authority-data": cluster["certificate-authority-data"]}}],
            "users": [{"name": "sa", "user": {"token": token.trim()}}],
            "contexts": [{"name": "sa", "context": {"cluster": "rig", "user": "sa"}}],
            "current-context": "sa",
        });
        let dir = repo_root().join("target").join("test-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("kubeconfig-{}", self.name));
        std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
        path
    }
}

impl Drop for Release {
    fn drop(&mut self) {
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

async fn client_for(kubeconfig: &PathBuf) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn config_map(name: &str, labels: Value, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
        .unwrap()
}

fn owned_labels(uid: &str) -> Value {
    json!({MANAGED_BY: "bedrock-privatelink-operator", OWNER_UID: uid})
}

/// The request was denied by the chart's policy, with `says` in the message.
fn denied<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>, says: &str) {
    match result {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{what}: {s:?}");
            assert!(
                s.message.contains("ValidatingAdmissionPolicy") && s.message.contains(says),
                "{what}: {}",
                s.message
            );
        }
        other => panic!("{what}: must be denied by the admission policy, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn configmap_guard_confines_the_operator_service_account() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = plain_namespace(&rig, "ten-guard").await;
    let net = rig.network(&format!("{ns}-net")).await;
    let rel = Release::install(&rig, &ns);
    let kubeconfig = rel.sa_kubeconfig(&rig);
    let sa = client_for(&kubeconfig).await;
    let as_sa: Api<ConfigMap> = Api::namespaced(sa.clone(), &ns);
    let as_admin: Api<ConfigMap> = Api::namespaced(rig.client.clone(), &ns);
    let pp = PostParams::default();

    // The API server loads a new policy within moments: until it does, an unlabelled create
    // by the operator's ServiceAccount still goes through (and is cleaned up).
    eventually(TIMEOUT, "the admission policy in force", || async {
        let name = format!("probe-{}", short_id());
        match as_sa
            .create(&pp, &config_map(&name, json!({}), json!({})))
            .await
        {
            Ok(_) => {
                let _ = as_admin.delete(&name, &DeleteParams::default()).await;
                None
            }
            Err(kube::Error::Api(s)) if s.code == 403 => Some(()),
            Err(e) => panic!("probe: {e}"),
        }
    })
    .await;

    // kube-system/aws-auth (on EKS it grants cluster access): never, labelled or not.
    let ks_admin: Api<ConfigMap> = Api::namespaced(rig.client.clone(), "kube-system");
    let ks_sa: Api<ConfigMap> = Api::namespaced(sa.clone(), "kube-system");
    if ks_admin.get_opt("aws-auth").await.unwrap().is_none() {
        ks_admin
            .create(
                &pp,
                &config_map("aws-auth", json!({}), json!({"mapRoles": "[]"})),
            )
            .await
            .expect("admin creates aws-auth");
    }
    let before = ks_admin.get("aws-auth").await.unwrap();
    denied(
        "patch kube-system/aws-auth",
        ks_sa
            .patch(
                "aws-auth",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"mapRoles": "- rolearn: arn:aws:iam::111122223333:role/attacker\n  groups: [system:masters]"}})),
            )
            .await,
        "may not write ConfigMaps in namespace kube-system",
    );
    denied(
        "label kube-system/aws-auth as the operator's",
        ks_sa
            .patch(
                "aws-auth",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": owned_labels("x")}})),
            )
            .await,
        "kube-system",
    );
    denied(
        "delete kube-system/aws-auth",
        ks_sa.delete("aws-auth", &DeleteParams::default()).await,
        "kube-system",
    );
    denied(
        "create a labelled ConfigMap in kube-system",
        ks_sa
            .create(&pp, &config_map("bpl-sneaky", owned_labels("x"), json!({})))
            .await,
        "kube-system",
    );
    let after = ks_admin.get("aws-auth").await.unwrap();
    assert_eq!(before.data, after.data, "aws-auth unchanged");
    assert_eq!(before.resource_version(), after.resource_version());

    // Unlabelled ConfigMaps elsewhere: not created, not changed, not deleted.
    denied(
        "create an unlabelled ConfigMap",
        as_sa
            .create(&pp, &config_map("unlabelled", json!({}), json!({})))
            .await,
        "may only create ConfigMaps labelled",
    );
    let user = as_admin
        .create(
            &pp,
            &config_map("users-own", json!({"team": "a"}), json!({"k": "v"})),
        )
        .await
        .unwrap();
    denied(
        "change a user's ConfigMap",
        as_sa
            .patch(
                "users-own",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"k": "changed"}})),
            )
            .await,
        "may only change or delete ConfigMaps it created",
    );
    denied(
        "take over a user's ConfigMap by labelling it",
        as_sa
            .patch(
                "users-own",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": owned_labels("x")}})),
            )
            .await,
        "may only change or delete ConfigMaps it created",
    );
    denied(
        "delete a user's ConfigMap",
        as_sa.delete("users-own", &DeleteParams::default()).await,
        "may only change or delete ConfigMaps it created",
    );
    assert_eq!(
        as_admin.get("users-own").await.unwrap().resource_version(),
        user.resource_version()
    );

    // Its own ConfigMaps: create, change, delete; but the labels stay and the owner is fixed.
    as_sa
        .create(
            &pp,
            &config_map("own", owned_labels("uid-1"), json!({"A": "1"})),
        )
        .await
        .expect("create its own ConfigMap");
    as_sa
        .patch(
            "own",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"A": "2"}})),
        )
        .await
        .expect("change its own ConfigMap");
    denied(
        "remove the ownership label",
        as_sa
            .patch(
                "own",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {MANAGED_BY: null}}})),
            )
            .await,
        "may not remove its ownership labels",
    );
    denied(
        "move to another owner",
        as_sa
            .patch(
                "own",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {OWNER_UID: "uid-2"}}})),
            )
            .await,
        "may not move a ConfigMap to another owner",
    );
    as_sa
        .delete("own", &DeleteParams::default())
        .await
        .expect("delete its own ConfigMap");

    // Everyone else is unaffected: the admin writes unlabelled ConfigMaps, in kube-system too.
    let name = format!("admin-{}", short_id());
    ks_admin
        .create(&pp, &config_map(&name, json!({}), json!({})))
        .await
        .expect("admin unaffected");
    ks_admin
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();

    // The operator itself, with that token: publishes its own ConfigMap, and leaves a user's
    // ConfigMap of the same name alone (found by a get; reported as a conflict).
    let clash = as_admin
        .create(
            &pp,
            &config_map("clash-bedrock", json!({}), json!({"mine": "yes"})),
        )
        .await
        .unwrap();
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let op = Operator::start(
        &rig,
        &ns,
        &["--default-vpc-id", &net.vpc_id],
        Some(&kubeconfig),
    );
    let spec = json!({"subnets": subnets(&net), "privateDns": false});
    create_bpl(&rig, &ns, "clash", spec.clone()).await;
    create_bpl(&rig, &ns, "fine", spec).await;
    wait_ready(&rig, &ns, "fine", "True", None, TIMEOUT).await;
    let published = as_admin.get("fine-bedrock").await.expect("published");
    assert_eq!(
        published.labels().get(MANAGED_BY).map(String::as_str),
        Some("bedrock-privatelink-operator")
    );
    wait_ready(
        &rig,
        &ns,
        "clash",
        "False",
        Some("ConfigMapConflict"),
        TIMEOUT,
    )
    .await;
    delete_bpl(&rig, &ns, "clash").await;
    delete_bpl(&rig, &ns, "fine").await;
    wait_gone(&rig, &ns, "clash", TIMEOUT).await;
    wait_gone(&rig, &ns, "fine", TIMEOUT).await;
    let kept = as_admin
        .get("clash-bedrock")
        .await
        .expect("user's ConfigMap kept");
    assert_eq!(
        kept.resource_version(),
        clash.resource_version(),
        "unchanged"
    );
    assert!(
        as_admin.get_opt("fine-bedrock").await.unwrap().is_none(),
        "its own ConfigMap removed with the object"
    );
    let logs = op.logs();
    assert!(
        !logs.contains("denied request") && !logs.to_ascii_lowercase().contains("forbidden"),
        "the operator never needed more than the guard allows:\n{logs}"
    );
}
