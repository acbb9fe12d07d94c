//! The API server restarts under a running operator (its own test binary: the restart disturbs
//! every test that talks to the API server meanwhile, so it runs alone).

mod common;

use std::time::{Duration, Instant};

use common::*;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_rides_out_an_api_server_restart() {
    let rig = Rig::new().await;
    install_crd(&rig).await;
    let ns = rig.namespace("rel-apiserver").await;
    let net = rig.network(&ns).await;
    let op = rig.operator(&ns, &[]);
    let first = create_bpl(
        &rig,
        &ns,
        "before",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()[..2]}, "privateDns": false}),
    )
    .await;
    let first_uid = first.metadata.uid.clone().unwrap();
    wait_ready(&rig, &ns, "before", "True", None, READY_TIMEOUT).await;

    let t = Instant::now();
    let out = std::process::Command::new(repo_root().join("scripts/rig"))
        .arg("restart-apiserver")
        .output()
        .expect("run scripts/rig restart-apiserver");
    if !out.status.success() {
        // Never leave the shared rig without its API server.
        let _ = std::process::Command::new(repo_root().join("scripts/rig"))
            .arg("up")
            .output();
        panic!(
            "restart-apiserver failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let restart = t.elapsed();
    // Our client may need a moment too: wait until the API server answers again.
    eventually(
        Duration::from_secs(60),
        "the API server to answer",
        || async { rig.bpls(&ns).get("before").await.ok().map(|_| ()) },
    )
    .await;

    // After the restart: a new object, and a change to the old one.
    let t = Instant::now();
    let second = create_bpl(
        &rig,
        &ns,
        "after",
        json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}, "privateDns": false}),
    )
    .await;
    let second_uid = second.metadata.uid.clone().unwrap();
    let patched = rig
        .bpls(&ns)
        .patch(
            "before",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"subnets": {"ids": net.subnet_ids()}, "policy": {"preset": "ReadOnly"}}})),
        )
        .await
        .expect("patch after the restart");
    let generation = patched.metadata.generation;
    let api = rig.bpls(&ns);
    for name in ["before", "after"] {
        eventually(READY_TIMEOUT, &format!("{name} converged"), || {
            let api = api.clone();
            async move {
                let o = api.get(name).await.ok()?;
                let ready = condition(&o, "Ready")?;
                (ready.status == "True"
                    && o.status.as_ref()?.observed_generation == o.metadata.generation)
                    .then_some(())
            }
        })
        .await;
    }
    let converged = t.elapsed();
    let before = api.get("before").await.unwrap();
    assert_eq!(before.metadata.generation, generation);
    eprintln!(
        "apiserver restart took {restart:?}; both objects converged {converged:?} after it; operator alive: {}; failed connects logged: {}",
        op.metrics().await.contains("bpl_reconciles_total"),
        op.logs().matches("client error (Connect)").count()
    );

    // While the API server was away the operator retried with backoff, not in a tight loop.
    let failed_connects = op.logs().matches("client error (Connect)").count();
    assert!(
        failed_connects < 300,
        "{failed_connects} failed connection attempts logged during the restart"
    );

    // EC2 says the same.
    let eps = rig.owned_endpoints(&first_uid).await;
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].subnet_ids().len(), 3, "the change reached EC2");
    let p: serde_json::Value = serde_json::from_str(eps[0].policy_document().unwrap()).unwrap();
    assert!(
        p.to_string().contains("bedrock:List*"),
        "ReadOnly policy: {p}"
    );
    assert_eq!(rig.owned_groups(&first_uid).await.len(), 1);
    assert_eq!(rig.owned_endpoints(&second_uid).await.len(), 1);
    assert_eq!(rig.owned_groups(&second_uid).await.len(), 1);

    for name in ["before", "after"] {
        delete_bpl(&rig, &ns, name).await;
    }
    for name in ["before", "after"] {
        wait_gone(&rig, &ns, name, READY_TIMEOUT).await;
    }
    for uid in [&first_uid, &second_uid] {
        assert!(rig.owned_endpoints(uid).await.is_empty());
        assert!(rig.owned_groups(uid).await.is_empty());
    }
}
