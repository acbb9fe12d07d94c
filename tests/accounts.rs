//! Many accounts and regions from one operator (issue 17), on the rig: a private emulator
//! (harness.py) serving the operator's own account and two more (B: a role that requires an
//! external id; C: a role that does not), in two regions, and STS AssumeRole with sessions
//! capped to a few seconds. One operator, pointed at the emulator's STS too.
//!
//! Proven here: objects in namespaces granted each account get endpoints in that account's VPC,
//! in the region asked (checked per account in the emulator, and absent from the operator's own
//! account); a namespace without a grant for the account, a region the grant does not list, a
//! role whose trust fails (wrong external id): each its own reason and Event, nothing created,
//! nothing assumed for the first two, the other objects unaffected; sessions that expire while
//! the operator runs are refreshed (by the SDK's identity cache, before they expire) with no
//! error visible to the user; throttling in one account does not hold up another's objects; an
//! object dropped without its finalizer leaves an orphan in account B's second region, which
//! the orphan sweep finds there (it looks in every granted account and region) and removes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bpl::api::{BedrockPrivateLink, BedrockPrivateLinkGrant};
use common::*;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);
/// The emulator's cap on a session's lifetime: the SDK's identity cache refreshes a session
/// 10 to 15 s before it expires, so about every 10 s here.
const SESSION_SECONDS: &str = "25";

fn role(seed: &Value, account: &str) -> (String, Option<String>) {
    let r = seed["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account"] == account)
        .unwrap();
    (
        r["arn"].as_str().unwrap().to_string(),
        r["external_id"].as_str().map(str::to_string),
    )
}

/// Every endpoint the emulator holds, in any account and region, by id.
async fn emulator_endpoints(rig: &Rig) -> BTreeMap<String, Value> {
    let all = rig.harness("GET", "endpoints", Value::Null).await;
    all["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

/// AssumeRole outcomes per role, as the emulator counted them.
async fn assumed(rig: &Rig, role_arn: &str, outcome: &str) -> u64 {
    let sts = rig.harness("GET", "sts", Value::Null).await;
    sts["assume_role"][role_arn][outcome].as_u64().unwrap_or(0)
}

/// The object is Ready with its endpoint in `account`/`region`/`vpc` (by the status and by the
/// emulator), and the operator's own account does not have it.
async fn ready_in(
    rig: &Rig,
    ns: &str,
    name: &str,
    account: &str,
    region: &str,
    vpc_id: &str,
) -> BedrockPrivateLink {
    let o = converged(rig, ns, name, TIMEOUT).await;
    let st = o.status.as_ref().unwrap();
    assert_eq!(
        st.account.as_deref(),
        Some(account),
        "{name}: status.account"
    );
    assert_eq!(st.region.as_deref(), Some(region), "{name}: status.region");
    assert_eq!(st.vpc_id.as_deref(), Some(vpc_id), "{name}: status.vpcId");
    assert_eq!(st.endpoints.len(), 1, "{name}: one endpoint");
    let e = &st.endpoints[0];
    assert_eq!(
        e.account.as_deref(),
        Some(account),
        "{name}: endpoint account"
    );
    assert_eq!(e.region.as_deref(), Some(region), "{name}: endpoint region");
    assert!(
        e.service_name.contains(&format!(".{region}.")),
        "{name}: {}",
        e.service_name
    );
    let held = emulator_endpoints(rig).await;
    let in_emulator = held
        .get(&e.vpc_endpoint_id)
        .unwrap_or_else(|| panic!("{name}: {} in the emulator", e.vpc_endpoint_id));
    assert_eq!(in_emulator["account"], account, "{name}: {in_emulator}");
    assert_eq!(in_emulator["region"], region, "{name}: {in_emulator}");
    assert_eq!(in_emulator["vpc_id"], vpc_id, "{name}: {in_emulator}");
    // The operator's own credentials do not see it: it is in the other account.
    let own = rig
        .ec2
        .describe_vpc_endpoints()
        .filters(tag_filter(&o.uid().unwrap()))
        .send()
        .await
        .unwrap();
    assert!(
        own.vpc_endpoints().is_empty(),
        "{name}: not in the operator's own account"
    );
    o
}

/// Refused with `reason` (a message mentioning `mentions`, a Warning event), and nothing of
/// the object anywhere in the emulator.
async fn refused(rig: &Rig, ns: &str, name: &str, reason: &str, mentions: &[&str]) {
    let o = wait_ready(rig, ns, name, "False", Some(reason), TIMEOUT).await;
    let msg = &condition(&o, "Ready").unwrap().message;
    for m in mentions {
        assert!(msg.contains(m), "{name}: message mentions {m:?}: {msg}");
    }
    let uid = o.uid().unwrap();
    eventually(TIMEOUT, &format!("{name}: a {reason} event"), || {
        let uid = uid.clone();
        async move { (!warning_events(rig, ns, &uid, reason).await.is_empty()).then_some(()) }
    })
    .await;
    assert!(
        o.status.as_ref().unwrap().endpoints.is_empty(),
        "{name}: no endpoint in the status"
    );
}

/// CreateTags calls in (account, region), as the emulator counted them.
async fn create_tags(rig: &Rig, account: &str, region: &str) -> u64 {
    let calls = rig.harness("GET", "calls/by-scope", Value::Null).await;
    calls["calls"][format!("{account}/{region}")]["CreateTags"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn two_accounts_and_two_regions_from_one_operator() {
    let rig = Rig::with_private_emulator(&["--session-seconds", SESSION_SECONDS]).await;
    install_crd(&rig).await;
    let seed = rig.harness("GET", "seed", Value::Null).await;
    let home_region = rig.region.clone();
    let second = seed["second_region"].as_str().unwrap().to_string();
    let (b, c) = ("111111111111", "222222222222");
    let (b_east, b_east_subnets) = seeded_vpc(&seed, b, &home_region);
    let (b_west, b_west_subnets) = seeded_vpc(&seed, b, &second);
    let (c_east, c_east_subnets) = seeded_vpc(&seed, c, &home_region);
    let (b_role, b_external) = role(&seed, b);
    let (c_role, c_external) = role(&seed, c);
    assert!(b_external.is_some() && c_external.is_none());

    let id = short_id();
    let ns_b = rig.namespace_labelled("acct-b", json!({})).await;
    let ns_c = rig
        .namespace_labelled("acct-c", json!({"bpl-accounts": id}))
        .await;
    let ns_bad = rig.namespace_labelled("acct-bad", json!({})).await;
    let ns_none = rig.namespace_labelled("acct-none", json!({})).await;
    let grants = [
        format!("acct-b-{id}"),
        format!("acct-c-{id}"),
        format!("acct-bad-{id}"),
    ];
    rig.apply_grant(
        &grants[0],
        json!({
            "namespaces": {"names": [ns_b]},
            "account": {"roleArn": b_role, "externalId": b_external, "sessionName": "bpl-rig"},
            "regions": [home_region, second],
            "vpcs": {"ids": [b_east, b_west]},
            "privateDns": true,
        }),
    )
    .await;
    rig.apply_grant(
        &grants[1],
        json!({
            "namespaces": {"selector": {"matchLabels": {"bpl-accounts": id}}},
            "account": {"roleArn": c_role},
            "vpcs": {"ids": [c_east]},
        }),
    )
    .await;
    rig.apply_grant(
        &grants[2],
        json!({
            "namespaces": {"names": [ns_bad]},
            "account": {"roleArn": b_role, "externalId": "not-the-one"},
            "vpcs": {"ids": [b_east]},
        }),
    )
    .await;

    let watch = [ns_b.as_str(), &ns_c, &ns_bad, &ns_none].join(",");
    let mut op = Operator::start(
        &rig,
        &watch,
        &[
            "--sts-endpoint-url",
            &rig.emulator,
            "--resync-seconds",
            "5",
            "--drift-sweep-seconds",
            "3",
            "--orphan-sweep-seconds",
            "2",
            "--orphan-grace-seconds",
            "4",
        ],
        None,
    );

    let spec = |account: &str, region: Option<&str>, vpc: &str, subnets: &[String]| {
        let mut s = json!({
            "account": account,
            "vpcId": vpc,
            "subnets": {"ids": subnets},
            "privateDns": false,
        });
        if let Some(r) = region {
            s["region"] = json!(r);
        }
        s
    };
    create_bpl(
        &rig,
        &ns_b,
        "b-east",
        spec(b, None, &b_east, &b_east_subnets),
    )
    .await;
    create_bpl(
        &rig,
        &ns_b,
        "b-west",
        spec(b, Some(&second), &b_west, &b_west_subnets),
    )
    .await;
    create_bpl(
        &rig,
        &ns_c,
        "c-east",
        spec(c, None, &c_east, &c_east_subnets),
    )
    .await;
    // Refused: a region account B's grant does not list; an account the namespace has no grant
    // for (twice: no grant at all, and a grant for another account); a role whose trust
    // policy refuses the external id.
    create_bpl(
        &rig,
        &ns_b,
        "b-eu",
        spec(b, Some("eu-west-1"), &b_east, &b_east_subnets),
    )
    .await;
    create_bpl(
        &rig,
        &ns_none,
        "none-b",
        spec(b, None, &b_east, &b_east_subnets),
    )
    .await;
    create_bpl(
        &rig,
        &ns_c,
        "c-as-b",
        spec(b, None, &b_east, &b_east_subnets),
    )
    .await;
    create_bpl(
        &rig,
        &ns_bad,
        "bad-b",
        spec(b, None, &b_east, &b_east_subnets),
    )
    .await;

    let b_e = ready_in(&rig, &ns_b, "b-east", b, &home_region, &b_east).await;
    let b_w = ready_in(&rig, &ns_b, "b-west", b, &second, &b_west).await;
    let c_e = ready_in(&rig, &ns_c, "c-east", c, &home_region, &c_east).await;

    refused(
        &rig,
        &ns_b,
        "b-eu",
        "RegionNotAllowed",
        &["eu-west-1", &grants[0]],
    )
    .await;
    refused(
        &rig,
        &ns_none,
        "none-b",
        "AccountNotGranted",
        &[b, "Nothing was assumed"],
    )
    .await;
    refused(&rig, &ns_c, "c-as-b", "AccountNotGranted", &[b, &grants[1]]).await;
    refused(
        &rig,
        &ns_bad,
        "bad-b",
        "AssumeRoleFailed",
        &["AccessDenied", "externalId"],
    )
    .await;
    assert!(
        assumed(&rig, &b_role, "AccessDenied").await >= 1,
        "the wrong external id reached STS and was refused"
    );
    // Nothing of the refused objects in any account: every endpoint the emulator holds belongs
    // to one of the three admitted objects.
    let ours: Vec<String> = [&b_e, &b_w, &c_e]
        .iter()
        .map(|o| {
            o.status.as_ref().unwrap().endpoints[0]
                .vpc_endpoint_id
                .clone()
        })
        .collect();
    let held = emulator_endpoints(&rig).await;
    let mut held_ids: Vec<&String> = held.keys().collect();
    held_ids.sort();
    let mut want: Vec<&String> = ours.iter().collect();
    want.sort();
    assert_eq!(held_ids, want, "only the admitted objects' endpoints exist");
    // Calls per (account, region): the refused region was never called.
    let calls = rig.harness("GET", "calls/by-scope", Value::Null).await;
    let scopes: Vec<&String> = calls["calls"].as_object().unwrap().keys().collect();
    assert!(
        !scopes.iter().any(|s| s.ends_with("/eu-west-1")),
        "no call in the refused region: {scopes:?}"
    );
    assert_eq!(
        calls["calls"][format!("{b}/{second}")]["CreateVpcEndpoint"],
        1,
        "{calls}"
    );

    // Sessions expire every few seconds; the operator keeps working through them.
    let first_b = assumed(&rig, &b_role, "ok").await;
    let first_c = assumed(&rig, &c_role, "ok").await;
    assert!(first_b >= 1 && first_c >= 1);
    let ready_since: Vec<_> = [("b-east", &ns_b), ("b-west", &ns_b), ("c-east", &ns_c)]
        .iter()
        .map(|(n, ns)| (n.to_string(), ns.to_string()))
        .collect();
    eventually(
        Duration::from_secs(120),
        "three more sessions per role",
        || async {
            let (nb, nc) = (
                assumed(&rig, &b_role, "ok").await,
                assumed(&rig, &c_role, "ok").await,
            );
            (nb >= first_b + 3 && nc >= first_c + 3).then_some(())
        },
    )
    .await;
    // A change after the refreshes: made with the new sessions.
    let tags_before = create_tags(&rig, c, &home_region).await;
    rig.bpls(&ns_c)
        .patch(
            "c-east",
            &PatchParams::apply("bpl-accounts-test"),
            &Patch::Merge(json!({"spec": {"tags": {"refreshed": "yes"}}})),
        )
        .await
        .unwrap();
    converged(&rig, &ns_c, "c-east", TIMEOUT).await;
    eventually(TIMEOUT, "c-east's new tag written in account C", || async {
        (create_tags(&rig, c, &home_region).await > tags_before).then_some(())
    })
    .await;
    // No error was visible: still Ready since first Ready, no Warning about credentials, and no
    // call was ever signed with an expired session.
    for ((name, ns), before) in ready_since.iter().zip([&b_e, &b_w, &c_e]) {
        let now = rig.bpls(ns).get(name).await.unwrap();
        let (r0, r1) = (
            condition(before, "Ready").unwrap(),
            condition(&now, "Ready").unwrap(),
        );
        assert_eq!(r1.status, "True", "{name}: {}", r1.message);
        assert_eq!(
            r0.last_transition_time, r1.last_transition_time,
            "{name}: Ready never dropped"
        );
        let uid = now.uid().unwrap();
        for reason in ["AssumeRoleFailed", "SessionExpired"] {
            assert!(
                warning_events(&rig, ns, &uid, reason).await.is_empty(),
                "{name}: no {reason} event"
            );
        }
    }
    let sts = rig.harness("GET", "sts", Value::Null).await;
    assert_eq!(
        sts["expired_rejections"],
        json!({}),
        "no call with an expired session: {sts}"
    );

    // Throttling in one account does not slow another's: every EC2 call in account C is
    // refused with RequestLimitExceeded while a new object in account B is made.
    rig.harness(
        "POST",
        "faults",
        json!({"action": "*", "error": "RequestLimitExceeded", "account": c}),
    )
    .await;
    // Account C's resyncs and VPC polls (every few seconds) now fail.
    let faulted = || async {
        let calls = rig.harness("GET", "calls", Value::Null).await;
        calls["faulted"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_u64)
            .sum::<u64>()
    };
    eventually(TIMEOUT, "account C throttled", || async {
        (faulted().await > 0).then_some(())
    })
    .await;
    let c_throttled = faulted().await;
    let started = std::time::Instant::now();
    create_bpl(
        &rig,
        &ns_b,
        "b-late",
        spec(b, Some(&second), &b_west, &b_west_subnets),
    )
    .await;
    ready_in(&rig, &ns_b, "b-late", b, &second, &b_west).await;
    let took = started.elapsed();
    let by_scope = rig.harness("GET", "calls/by-scope", Value::Null).await;
    assert!(
        faulted().await > c_throttled,
        "account C was still throttled meanwhile: {by_scope}"
    );
    assert!(
        took < Duration::from_secs(30),
        "account B's object was Ready in {took:?} while account C was throttled"
    );
    rig.harness("DELETE", "faults", json!({})).await;
    converged(&rig, &ns_c, "c-east", TIMEOUT).await;

    // An orphan in a granted account and region (its finalizer removed by hand): the sweep
    // looks there too, and removes it after the grace period; the live objects stay.
    let b_west_id = b_w.status.as_ref().unwrap().endpoints[0]
        .vpc_endpoint_id
        .clone();
    rig.drop_without_cleanup(&ns_b, "b-west").await;
    eventually(
        Duration::from_secs(60),
        "b-west's orphaned endpoint removed from account B's second region",
        || async {
            let e = emulator_endpoints(&rig).await.remove(&b_west_id);
            e.is_none_or(|e| e["state"] == "deleting" || e["state"] == "deleted")
                .then_some(())
        },
    )
    .await;
    let held = emulator_endpoints(&rig).await;
    for o in [&b_e, &c_e] {
        let id = &o.status.as_ref().unwrap().endpoints[0].vpc_endpoint_id;
        assert_eq!(held[id]["state"], "available", "{id} kept: {}", held[id]);
    }
    assert!(
        op.logs().contains("deleted orphaned endpoints"),
        "the sweep logged it"
    );

    // Deletion: each account's endpoints go from that account; the refused objects leave
    // without anything to remove.
    for (ns, name) in [
        (&ns_b, "b-late"),
        (&ns_b, "b-east"),
        (&ns_b, "b-west"),
        (&ns_c, "c-east"),
        (&ns_b, "b-eu"),
        (&ns_none, "none-b"),
        (&ns_c, "c-as-b"),
        (&ns_bad, "bad-b"),
    ] {
        delete_bpl(&rig, ns, name).await;
    }
    for (ns, name) in [
        (&ns_b, "b-late"),
        (&ns_b, "b-east"),
        (&ns_b, "b-west"),
        (&ns_c, "c-east"),
        (&ns_b, "b-eu"),
        (&ns_none, "none-b"),
        (&ns_c, "c-as-b"),
        (&ns_bad, "bad-b"),
    ] {
        wait_gone(&rig, ns, name, TIMEOUT).await;
    }
    let left = emulator_endpoints(&rig).await;
    for id in &ours {
        assert!(
            left.get(id)
                .is_none_or(|e| e["state"] == "deleted" || e["state"] == "deleting"),
            "{id} removed: {:?}",
            left.get(id)
        );
    }
    op.terminate().await;
    for g in &grants {
        let _ = Api::<BedrockPrivateLinkGrant>::all(rig.client.clone())
            .delete(g, &DeleteParams::default())
            .await;
    }
}
