//! Every reconcile branch against the in-memory EC2 (aws/fake.rs): no rig, no Kubernetes
//! (the client points at a closed loopback port and is never used by these paths).

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::runtime::reflector;

use super::memory::ByOwner;
use super::*;
use crate::api::BedrockPrivateLinkSpec;
use crate::aws::fake::{FakeEc2, SUBNETS, VPC};
use crate::aws::{ErrorCode, IpRule, RuleSource, TAG_SPEC_KEYS};

fn context(fake: &FakeEc2) -> Context {
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
    let client = Client::try_from(config).expect("client");
    let mut ctx = Context::without_events(
        client,
        fake.handle(),
        Arc::new(Metrics::default()),
        Config::default(),
    );
    // Empty stores: publishing and cleanup read them instead of the API.
    let (cms, _) = reflector::store();
    let (nss, _) = reflector::store();
    ctx.config_maps = Some(crate::publish::ConfigMaps::new(cms));
    ctx.namespaces = Some(nss);
    ctx
}

fn object(name: &str, namespace: &str, spec: serde_json::Value) -> BedrockPrivateLink {
    let mut spec = spec;
    spec["vpcId"] = VPC.into();
    spec["subnets"] = serde_json::json!({ "ids": SUBNETS });
    let spec: BedrockPrivateLinkSpec = serde_json::from_value(spec).expect("spec");
    let mut o = BedrockPrivateLink::new(name, spec);
    o.metadata.namespace = Some(namespace.into());
    // Kubernetes uids are 36 characters.
    o.metadata.uid = Some(crate::names::fit(&format!("uid-{name}"), 36));
    o.metadata.generation = Some(1);
    o
}

fn plain() -> BedrockPrivateLink {
    object("demo", "team", serde_json::json!({}))
}

/// A new spec generation (as the API server would give it).
fn next_generation(o: &mut BedrockPrivateLink, spec: serde_json::Value) {
    let again = object(&o.name_any(), &o.namespace().unwrap_or_default(), spec);
    o.spec = again.spec;
    o.metadata.generation = o.metadata.generation.map(|g| g + 1);
}

async fn converged(o: &BedrockPrivateLink, ctx: &Context) -> Converged {
    match converge(o, ctx).await {
        Ok(c) => c,
        Err(Failure::Invalid(i)) => panic!("invalid: {i}"),
        Err(Failure::Rejected(e) | Failure::Vanished(e)) => panic!("AWS: {e}"),
        Err(Failure::Transient(e)) => panic!("transient: {e}"),
    }
}

fn reasons(ctx: &Context) -> Vec<String> {
    ctx.notes
        .lock()
        .unwrap()
        .iter()
        .map(|(r, _)| r.clone())
        .collect()
}

#[tokio::test]
async fn create_then_steady() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let o = plain();
    let c = converged(&o, &ctx).await;
    assert!(c.applied.waiting, "a new endpoint is pending");
    assert_eq!(fake.live_endpoints().len(), 1);
    assert_eq!(fake.count("CreateSecurityGroup"), 1);
    assert_eq!(
        reasons(&ctx),
        ["SecurityGroupCreated", "EndpointCreated"],
        "one event per change"
    );
    let group = fake.with(|w| w.groups.values().next().cloned().unwrap());
    assert!(group.egress.is_empty(), "AWS's default egress is revoked");
    assert_eq!(
        group.ingress,
        [IpRule::https_from(RuleSource::Ipv4("10.0.0.0/16".into()))].into()
    );
    fake.settle();
    let before = fake.mutations().len();
    let c = converged(&o, &ctx).await;
    assert_eq!(fake.mutations().len(), before, "in sync: nothing changes");
    let e = assess::endpoints(&c.desired, &c.applied.endpoints, &ctx.home().region);
    assert!(e.pending.is_empty() && e.failed.is_empty() && e.policy_ok);
    assert_eq!(e.statuses[0].state, "available");
}

/// The reconcile our own status write triggers must not describe the groups again: the group
/// as we left it is remembered after the endpoint was created (a change in AWS that would
/// otherwise make the group's memory older than the object's last change).
#[tokio::test]
async fn the_group_just_configured_outlives_the_endpoint_create() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let o = plain();
    converged(&o, &ctx).await;
    assert_eq!(fake.count("CreateVpcEndpoint"), 1);
    let uid = o.uid().unwrap();
    let remembered = ctx
        .memory
        .groups(&uid, o.metadata.generation, std::time::Duration::MAX);
    assert_eq!(remembered.map(|g| g.len()), Some(1), "usable by the rule");
}

#[tokio::test]
async fn after_a_crash_resources_are_found_by_tag_not_duplicated() {
    let fake = FakeEc2::standard();
    // The first run dies after making the group: the endpoint create is throttled.
    let first = context(&fake);
    fake.inject("CreateVpcEndpoint", ErrorCode::RequestLimitExceeded);
    assert!(matches!(
        converge(&plain(), &first).await,
        Err(Failure::Transient(_))
    ));
    assert_eq!(fake.with(|w| w.groups.len()), 1);
    // A new process (no memory) adopts the group and makes one endpoint.
    let second = context(&fake);
    converged(&plain(), &second).await;
    assert_eq!(fake.count("CreateSecurityGroup"), 1);
    assert_eq!(fake.live_endpoints().len(), 1);
    // A third finds both by their owner tag and creates nothing.
    fake.settle();
    let third = context(&fake);
    let creates = fake.count("CreateVpcEndpoint");
    converged(&plain(), &third).await;
    assert_eq!(fake.count("CreateVpcEndpoint"), creates);
    assert_eq!(fake.with(|w| w.groups.len()), 1);
}

#[tokio::test]
async fn a_lost_create_answer_is_retried_with_the_same_token() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    // Without private DNS: an endpoint without our tag is simply not seen (with it, it would
    // be someone else's endpoint holding the private DNS name).
    let o = object("demo", "team", serde_json::json!({"privateDns": false}));
    converged(&o, &ctx).await;
    let id = fake.live_endpoints()[0].id.clone();
    // As if the answer never came: the endpoint exists but nothing remembers it.
    fake.with(|w| {
        let e = w.endpoints.get_mut(&id).unwrap();
        e.tags.clear();
    });
    let fresh = context(&fake);
    let c = converged(&o, &fresh).await;
    assert_eq!(c.applied.endpoints.len(), 1);
    assert_eq!(
        c.applied.endpoints[0].id, id,
        "same ClientToken, same endpoint"
    );
    assert_eq!(fake.live_endpoints().len(), 1);
}

#[tokio::test]
async fn spec_changes_are_made_in_place() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let mut o = plain();
    converged(&o, &ctx).await;
    fake.settle();
    let id = fake.live_endpoints()[0].id.clone();
    next_generation(
        &mut o,
        serde_json::json!({
            "privateDns": false,
            "securityGroup": { "allowFrom": { "cidrs": ["10.1.0.0/16"] } },
        }),
    );
    converged(&o, &ctx).await;
    let e = fake.live_endpoints();
    assert_eq!(
        (e.len(), e[0].id.as_str()),
        (1, id.as_str()),
        "same endpoint"
    );
    assert!(!e[0].private_dns);
    assert_eq!(fake.count("ModifyVpcEndpoint"), 1);
    assert_eq!(fake.count("AuthorizeSecurityGroupIngress"), 2);
    assert_eq!(fake.count("RevokeSecurityGroupIngress"), 1);
    assert!(reasons(&ctx).contains(&"SecurityGroupUpdated".to_string()));
}

#[tokio::test]
async fn spec_tags_are_added_changed_and_removed_leaving_foreign_tags() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let mut o = object(
        "demo",
        "team",
        serde_json::json!({"tags": {"team": "a", "old": "x"}}),
    );
    converged(&o, &ctx).await;
    fake.settle();
    // Someone else tags our resources.
    fake.with(|w| {
        for e in w.endpoints.values_mut() {
            e.tags.insert("cost-center".into(), "42".into());
        }
        for g in w.groups.values_mut() {
            g.tags.insert("cost-center".into(), "42".into());
        }
    });
    next_generation(
        &mut o,
        serde_json::json!({"tags": {"team": "b", "new": "y"}}),
    );
    converged(&o, &ctx).await;
    let check = |tags: &BTreeMap<String, String>| {
        assert_eq!(tags.get("team").map(String::as_str), Some("b"));
        assert_eq!(tags.get("new").map(String::as_str), Some("y"));
        assert!(!tags.contains_key("old"), "removed: we set it");
        assert_eq!(tags.get("cost-center").map(String::as_str), Some("42"));
        assert!(tags.contains_key(TAG_SPEC_KEYS));
    };
    check(&fake.live_endpoints()[0].tags);
    check(&fake.with(|w| w.groups.values().next().unwrap().tags.clone()));
    assert_eq!(fake.count("CreateVpcEndpoint"), 1, "tags never re-create");
}

#[tokio::test]
async fn drift_is_put_back() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let o = plain();
    converged(&o, &ctx).await;
    fake.settle();
    let extra = IpRule::https_from(RuleSource::Ipv4("0.0.0.0/0".into()));
    fake.with(|w| {
        let g = w.groups.values_mut().next().unwrap();
        g.ingress.insert(extra.clone());
        let e = w.endpoints.values_mut().next().unwrap();
        e.subnet_ids.remove(SUBNETS[1]);
    });
    // A new process: nothing remembered hides the drift.
    let fresh = context(&fake);
    converged(&o, &fresh).await;
    let g = fake.with(|w| w.groups.values().next().cloned().unwrap());
    assert!(!g.ingress.contains(&extra));
    assert_eq!(fake.live_endpoints()[0].subnet_ids.len(), 2);
}

#[tokio::test]
async fn deletion_waits_for_endpoints_then_for_the_group() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let o = Arc::new(plain());
    converged(&o, &ctx).await;
    fake.settle();
    // Endpoints first; the group is not touched while they are deleting.
    let r = cleanup::cleanup(o.clone(), &ctx).await;
    assert!(matches!(r, Err(Error::Waiting(_))), "{r:?}");
    assert_eq!(fake.count("DeleteSecurityGroup"), 0);
    fake.settle();
    // AWS still holds the group for the endpoint's network interfaces.
    fake.inject("DeleteSecurityGroup", ErrorCode::DependencyViolation);
    let r = cleanup::cleanup(o.clone(), &ctx).await;
    assert!(
        matches!(&r, Err(Error::Waiting(m)) if m.contains("still in use")),
        "{r:?}"
    );
    cleanup::cleanup(o.clone(), &ctx).await.expect("done");
    assert!(fake.with(|w| w.groups.is_empty()));
    assert!(fake.live_endpoints().is_empty());
    assert_eq!(
        fake.mutations()
            .into_iter()
            .filter(|m| m.starts_with("Delete"))
            .collect::<Vec<_>>(),
        [
            "DeleteVpcEndpoints",
            "DeleteSecurityGroup",
            "DeleteSecurityGroup"
        ]
    );
}

/// The one group deletion that cleanup and stale-group removal share: in use while an endpoint
/// holds the group, then deleted (with an Event), then gone; other errors are errors.
#[tokio::test]
async fn an_owned_group_is_deleted_once_no_endpoint_holds_it() {
    use execute::{GroupDeletion, delete_owned_group};
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let o = plain();
    converged(&o, &ctx).await;
    fake.settle();
    let id = fake.with(|w| w.groups.keys().next().cloned().expect("a group"));
    let deletion = delete_owned_group(&ctx.scoped(ctx.home().clone()), &o, &id, "")
        .await
        .expect("no error");
    assert_eq!(deletion, GroupDeletion::InUse);
    assert!(fake.with(|w| w.groups.contains_key(&id)));
    assert!(!reasons(&ctx).contains(&"SecurityGroupDeleted".to_string()));
    fake.with(|w| w.endpoints.clear());
    fake.inject("DeleteSecurityGroup", ErrorCode::UnauthorizedOperation);
    let refused = delete_owned_group(&ctx.scoped(ctx.home().clone()), &o, &id, "").await;
    assert!(matches!(refused, Err(Error::Aws(_))), "{refused:?}");
    let deletion = delete_owned_group(
        &ctx.scoped(ctx.home().clone()),
        &o,
        &id,
        " (no longer used)",
    )
    .await;
    assert_eq!(deletion.expect("no error"), GroupDeletion::Deleted);
    assert!(fake.with(|w| w.groups.is_empty()));
    let note = ctx
        .notes
        .lock()
        .unwrap()
        .iter()
        .find(|(r, _)| r == "SecurityGroupDeleted")
        .map(|(_, n)| n.clone());
    assert_eq!(note, Some(format!("deleted {id} (no longer used)")));
    let deletion = delete_owned_group(&ctx.scoped(ctx.home().clone()), &o, &id, "").await;
    assert_eq!(deletion.expect("no error"), GroupDeletion::Gone);
}

#[tokio::test]
async fn a_failed_endpoint_is_replaced_one_at_a_time_with_backoff() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let o = plain();
    converged(&o, &ctx).await;
    fake.settle();
    let first = fake.live_endpoints()[0].id.clone();
    fake.fail_endpoint(&first, "InternalFailure: capacity");
    // Replaced: the dead one is deleted, an event says so, the status says why.
    let c = converged(&o, &ctx).await;
    assert!(reasons(&ctx).contains(&"EndpointReplacing".to_string()));
    let e = assess::endpoints(&c.desired, &c.applied.endpoints, &ctx.home().region);
    let v = assess::endpoints_verdict(&e, &c.applied);
    assert_eq!(v.reason, "EndpointFailed", "{v:?}");
    assert!(
        v.message.contains("capacity") && v.message.contains("attempt 1"),
        "{}",
        v.message
    );
    // While it is deleting nothing new is made: never two at a time.
    converged(&o, &ctx).await;
    assert_eq!(fake.count("CreateVpcEndpoint"), 1);
    fake.settle();
    converged(&o, &ctx).await;
    let live = fake.live_endpoints();
    assert_eq!(live.len(), 1);
    let second = live[0].id.clone();
    assert_ne!(second, first, "a new endpoint (the token chain moved on)");
    fake.settle();
    let c = converged(&o, &ctx).await;
    let e = assess::endpoints(&c.desired, &c.applied.endpoints, &ctx.home().region);
    assert!(e.failed.is_empty() && e.pending.is_empty(), "Ready again");
    // It fails again right away: the next attempt waits for its backoff.
    fake.fail_endpoint(&second, "InternalFailure: capacity");
    let c = converged(&o, &ctx).await;
    assert!(c.applied.retry_in.is_some());
    assert_eq!(
        fake.live_endpoints().len(),
        1,
        "still the failed one, not deleted yet"
    );
    let e = assess::endpoints(&c.desired, &c.applied.endpoints, &ctx.home().region);
    let v = assess::endpoints_verdict(&e, &c.applied);
    assert_eq!(v.reason, "EndpointFailed");
    assert!(v.message.contains("capacity") && v.message.contains("replaces it in"));
}

#[tokio::test]
async fn a_resource_that_vanished_means_observe_again() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let mut o = plain();
    converged(&o, &ctx).await;
    fake.settle();
    next_generation(&mut o, serde_json::json!({"privateDns": false}));
    fake.inject("ModifyVpcEndpoint", ErrorCode::VpcEndpointNotFound);
    assert!(matches!(
        converge(&o, &ctx).await,
        Err(Failure::Vanished(_))
    ));
}

#[tokio::test]
async fn invalid_and_rejected_specs_create_nothing() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let mut o = plain();
    o.spec.vpc_id = Some("vpc-missing".into());
    match converge(&o, &ctx).await {
        Err(Failure::Invalid(i)) => assert_eq!(i.reason, "VpcNotFound"),
        _ => panic!("expected VpcNotFound"),
    }
    o.spec.vpc_id = Some(VPC.into());
    o.spec.region = Some("eu-west-1".into());
    assert!(matches!(converge(&o, &ctx).await, Err(Failure::Invalid(_))));
    assert!(fake.mutations().is_empty(), "{:?}", fake.mutations());
    o.spec.region = None;
    fake.inject("CreateSecurityGroup", ErrorCode::UnauthorizedOperation);
    assert!(matches!(
        converge(&o, &ctx).await,
        Err(Failure::Rejected(_))
    ));
}

#[tokio::test]
async fn names_at_the_maximum_lengths_fit_every_limit() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let name = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    let o = object(
        &name,
        &"n".repeat(63),
        serde_json::json!({"tags": {"k": "v"}}),
    );
    assert_eq!(o.name_any().len(), 253);
    converged(&o, &ctx).await;
    for e in fake.live_endpoints() {
        assert!(e.tags.values().all(|v| v.len() <= 256), "{:?}", e.tags);
    }
    let g = fake.with(|w| w.groups.values().next().cloned().unwrap());
    assert!(g.name.len() <= 255 && g.tags.values().all(|v| v.len() <= 256));
    assert!(o.config_map_name().len() <= 253);
    let cm = publish::config_map(&o, "team", BTreeMap::new());
    let labels = cm.metadata.labels.unwrap();
    assert!(labels.values().all(|v| v.len() <= 63), "{labels:?}");
}

#[tokio::test]
async fn a_steady_resync_uses_memory_not_describes() {
    // With private DNS the VPC's shared answer is read whole (the other endpoints matter);
    // without, by its owner index.
    for private_dns in [true, false] {
        let fake = FakeEc2::standard();
        let ctx = context(&fake);
        let o = object(
            "demo",
            "team",
            serde_json::json!({ "privateDns": private_dns }),
        );
        converged(&o, &ctx).await;
        fake.settle();
        converged(&o, &ctx).await;
        // As `conclude` would after a Ready reconcile, and the object now shows Ready.
        let c = converged(&o, &ctx).await;
        let seen = memory::SeenEndpoints {
            owned: c.applied.endpoints.clone(),
            foreign: vec![],
            ready: true,
        };
        ctx.memory.remember_endpoints(
            &o.uid().unwrap(),
            o.metadata.generation,
            std::time::Instant::now(),
            seen,
        );
        let describes = fake.count("DescribeVpcEndpoints");
        converged(&o, &ctx).await;
        assert_eq!(fake.count("DescribeVpcEndpoints"), describes, "remembered");
        // A change in AWS by us makes the memory unusable; the object shows Ready, so this
        // is a steady-state resync and reads the VPC's shared answer.
        ctx.memory.changed(&o.uid().unwrap());
        let mut o = o;
        let ready = [Verdict::new(READY, true, "Ready", "ready".to_string())];
        o.status = Some(status::build(
            None,
            None,
            &ready,
            o.metadata.generation,
            jiff::Timestamp::now(),
        ));
        // Registered with the VPC's poller (as `conclude` does), whose answer the resync's
        // describe of the VPC becomes: held once.
        let uid = o.uid().unwrap();
        let since = std::time::Instant::now();
        let name = o.name_any();
        let applied = &c.applied.endpoints;
        ctx.poller.register(
            &uid,
            (&name, "team"),
            ctx.home(),
            VPC,
            applied,
            false,
            since,
        );
        let creates = fake.count("CreateVpcEndpoint");
        let again = converged(&o, &ctx).await;
        assert_eq!(fake.count("DescribeVpcEndpoints"), describes + 1);
        let key = ctx.home().key(VPC);
        let shared = ctx.shared.endpoints.get_fresh(&key, Duration::MAX, None);
        let shared = shared.await.expect("the resync's shared answer");
        let polled = ctx.poller.latest(&key).expect("offered to the poller");
        assert!(Arc::ptr_eq(&polled.all, &shared), "one answer, held once");
        // The VPC's shared answer still finds the object's own endpoint.
        let ids = |c: &Converged| {
            c.applied
                .endpoints
                .iter()
                .map(|e| e.id.clone())
                .collect::<Vec<_>>()
        };
        assert!(!ids(&c).is_empty());
        assert_eq!(
            ids(&again),
            ids(&c),
            "privateDns {private_dns}: the same endpoint"
        );
        assert_eq!(fake.count("CreateVpcEndpoint"), creates, "nothing created");
    }
}

/// The VPC poller (poll.rs) against the in-memory EC2: one describe per poll whatever the
/// number of objects, and only the objects whose endpoints changed are triggered.
#[tokio::test]
async fn one_poll_per_vpc_triggers_only_the_objects_whose_endpoints_changed() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let objects: Vec<BedrockPrivateLink> = ["a", "b", "c"]
        .iter()
        .map(|n| object(n, "team", serde_json::json!({"privateDns": false})))
        .collect();
    let register = |o: &BedrockPrivateLink, endpoints: &[crate::aws::EndpointFacts]| {
        let waiting = endpoints.iter().any(|e| e.state_is("pending"));
        ctx.poller.register(
            &o.uid().unwrap(),
            (&o.name_any(), "team"),
            ctx.home(),
            VPC,
            endpoints,
            waiting,
            std::time::Instant::now(),
        );
    };
    for o in &objects {
        let c = converged(o, &ctx).await;
        assert!(c.applied.waiting);
        register(o, &c.applied.endpoints);
    }
    let names = |t: Vec<poll::Trigger>| -> Vec<String> {
        let mut n: Vec<String> = t.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    };
    let describes = fake.count("DescribeVpcEndpoints");
    let key = ctx.home().key(VPC);
    assert!(ctx.poller.poll(&key).await.is_empty(), "still pending");
    fake.settle();
    assert_eq!(names(ctx.poller.poll(&key).await), ["a", "b", "c"]);
    assert!(
        ctx.poller.poll(&key).await.is_empty(),
        "not again before their reconcile"
    );
    assert_eq!(
        fake.count("DescribeVpcEndpoints"),
        describes + 3,
        "one per poll"
    );
    // Their reconciles register what they saw: in sync.
    let owned = |o: &BedrockPrivateLink| -> Vec<crate::aws::EndpointFacts> {
        let uid = o.uid().unwrap();
        fake.live_endpoints()
            .into_iter()
            .filter(|e| e.tags.get(crate::aws::TAG_OWNER_UID) == Some(&uid))
            .collect()
    };
    for o in &objects {
        register(o, &owned(o));
    }
    assert!(ctx.poller.poll(&key).await.is_empty(), "in sync");
    // Out of band: a's policy opened up, b's endpoint deleted.
    let (a, b) = (
        owned(&objects[0])[0].id.clone(),
        owned(&objects[1])[0].id.clone(),
    );
    fake.with(|w| {
        w.endpoints.get_mut(&a).unwrap().policy = Some(Arc::new(serde_json::json!({
            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]
        })));
        w.endpoints.remove(&b);
    });
    assert_eq!(names(ctx.poller.poll(&key).await), ["a", "b"]);
    ctx.poller.forget(&objects[2].uid().unwrap());
    assert_eq!(ctx.poller.len(), 2, "c forgotten");
}

/// One describe of a VPC's endpoints is held once: a poll's answer is the shared answer a
/// steady-state resync reads, and a resync's shared describe becomes the poller's latest poll
/// (it triggers what changed, like a poll); an older answer replaces nothing.
#[tokio::test]
async fn a_vpcs_endpoints_are_held_once_by_the_poller_and_the_shared_answer() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let objects: Vec<BedrockPrivateLink> = ["a", "b"]
        .iter()
        .map(|n| object(n, "team", serde_json::json!({"privateDns": false})))
        .collect();
    for o in &objects {
        converged(o, &ctx).await;
    }
    fake.settle();
    // Their reconciles saw them available.
    for o in &objects {
        let uid = o.uid().unwrap();
        let owned: Vec<crate::aws::EndpointFacts> = fake
            .live_endpoints()
            .into_iter()
            .filter(|e| e.tags.get(crate::aws::TAG_OWNER_UID) == Some(&uid))
            .collect();
        let now = std::time::Instant::now();
        let ns = (o.name_any(), "team");
        ctx.poller
            .register(&uid, (&ns.0, ns.1), ctx.home(), VPC, &owned, false, now);
    }
    let key = ctx.home().key(VPC);
    let shared = || ctx.shared.endpoints.get_fresh(&key, Duration::MAX, None);
    let before = std::time::Instant::now();
    assert!(ctx.poller.poll(&key).await.is_empty(), "in sync");
    let polled = ctx.poller.latest(&key).expect("polled");
    let held = shared().await.expect("the poll's answer is shared");
    assert!(Arc::ptr_eq(&polled.all, &held), "one answer, held once");
    // A resync's describe (the shared answer's fetch) in which b's endpoint is gone.
    let mut rx = ctx.poller.subscribe(None);
    let b_uid = objects[1].uid().unwrap();
    let without_b: Vec<crate::aws::EndpointFacts> = fake
        .live_endpoints()
        .into_iter()
        .filter(|e| e.tags.get(crate::aws::TAG_OWNER_UID) != Some(&b_uid))
        .collect();
    let offered = Arc::new(ByOwner::new(without_b, |e| &e.tags));
    ctx.poller.offer(&key, before, offered.clone());
    assert!(
        Arc::ptr_eq(&ctx.poller.latest(&key).unwrap().all, &polled.all),
        "older than the poll: ignored"
    );
    let describes = fake.count("DescribeVpcEndpoints");
    ctx.poller
        .offer(&key, std::time::Instant::now(), offered.clone());
    assert!(Arc::ptr_eq(&ctx.poller.latest(&key).unwrap().all, &offered));
    let triggered = rx.try_recv().expect("a trigger");
    assert_eq!(triggered.name, "b", "b's endpoint vanished");
    assert!(rx.try_recv().is_err(), "only b");
    assert_eq!(
        fake.count("DescribeVpcEndpoints"),
        describes,
        "no call of its own"
    );
}

/// Accounts and regions (issue 17) without a grant watch: the built-in rules allow only the
/// operator's own account and region; a target away from them needs its VPC and subnets named.
/// Nothing is asked of EC2 (or STS) for a refused object.
#[tokio::test]
async fn another_account_or_region_is_refused_before_any_call() {
    let fake = FakeEc2::standard();
    let ctx = context(&fake);
    let cases = [
        (
            object(
                "acct",
                "team",
                serde_json::json!({"account": "111111111111"}),
            ),
            "AccountNotGranted",
        ),
        (
            object("west", "team", serde_json::json!({"region": "us-west-2"})),
            "RegionNotAllowed",
        ),
    ];
    for (o, reason) in cases {
        match converge(&o, &ctx).await {
            Err(Failure::Invalid(i)) => assert_eq!(i.reason, reason, "{}", i.message),
            _ => panic!("{}: refused", o.name_any()),
        }
    }
    let mut no_vpc = object("novpc", "team", serde_json::json!({"region": "us-west-2"}));
    no_vpc.spec.vpc_id = None;
    match converge(&no_vpc, &ctx).await {
        Err(Failure::Invalid(i)) => assert_eq!(i.reason, "VpcRequired", "{}", i.message),
        _ => panic!("refused"),
    }
    let mut no_subnets = object(
        "nosub",
        "team",
        serde_json::json!({"account": "111111111111"}),
    );
    no_subnets.spec.subnets = None;
    match converge(&no_subnets, &ctx).await {
        Err(Failure::Invalid(i)) => assert_eq!(i.reason, "SubnetsRequired", "{}", i.message),
        _ => panic!("refused"),
    }
    assert_eq!(
        fake.with(|w| w.calls.len()),
        0,
        "no EC2 call for refused objects"
    );
    // The operator's own account named explicitly is its own.
    let mut home = ctx.home().clone();
    home.account = Some("123456789012".into());
    let ctx = Context::without_events(
        ctx.client.clone(),
        home,
        Arc::new(Metrics::default()),
        Config::default(),
    );
    let own = object(
        "own",
        "team",
        serde_json::json!({"account": "123456789012"}),
    );
    let c = converged(&own, &ctx).await;
    assert!(!c.applied.endpoints.is_empty());
}

// --- Ownership (ownership.rs): migration, adoption, takeover, handover ----------------------

fn context_of(fake: &FakeEc2, cluster: &str) -> Context {
    let mut ctx = context(fake);
    ctx.config.cluster_id = cluster.into();
    ctx
}

fn reason_of(f: Result<Converged, Failure>) -> String {
    match f {
        Err(Failure::Invalid(i)) => i.reason.to_string(),
        Ok(_) => "converged".into(),
        Err(Failure::Rejected(e) | Failure::Vanished(e)) => format!("AWS: {e}"),
        Err(Failure::Transient(e)) => format!("transient: {e}"),
    }
}

/// An endpoint made by hand: untagged, one subnet, AWS's default (full access) policy.
fn hand_made(fake: &FakeEc2, id: &str, vpc: &str, service: &str) {
    fake.with(|w| {
        w.endpoints.insert(
            id.into(),
            crate::aws::EndpointFacts {
                id: id.into(),
                service_name: format!("com.amazonaws.us-east-1.{service}"),
                vpc_id: vpc.into(),
                state: "available".into(),
                subnet_ids: [SUBNETS[0].to_string()].into(),
                private_dns: true,
                ..Default::default()
            },
        );
    });
}

#[tokio::test]
async fn resources_from_before_the_cluster_tag_are_kept_and_tagged() {
    let fake = FakeEc2::standard();
    let o = plain();
    converged(&o, &context_of(&fake, "blue")).await;
    fake.settle();
    // As an operator without the cluster tag would have left them.
    fake.with(|w| {
        for e in w.endpoints.values_mut() {
            e.tags.remove(crate::aws::TAG_CLUSTER);
            e.tags.remove(crate::aws::TAG_DELETION_POLICY);
        }
        for g in w.groups.values_mut() {
            g.tags.remove(crate::aws::TAG_CLUSTER);
            g.tags.remove(crate::aws::TAG_DELETION_POLICY);
        }
    });
    let ctx = context_of(&fake, "blue");
    converged(&o, &ctx).await;
    assert_eq!(fake.count("CreateVpcEndpoint"), 1, "nothing recreated");
    assert_eq!(fake.count("CreateSecurityGroup"), 1);
    let e = &fake.live_endpoints()[0];
    assert_eq!(e.tags[crate::aws::TAG_CLUSTER], "blue");
    assert_eq!(e.tags[crate::aws::TAG_DELETION_POLICY], "Delete");
    let g = fake.with(|w| w.groups.values().next().cloned().unwrap());
    assert_eq!(g.tags[crate::aws::TAG_CLUSTER], "blue");
    // Another cluster never claims them: its object of the same uid sees nothing of its own.
    let green = context_of(&fake, "green");
    assert!(
        Scoped {
            ctx: &green,
            ec2: green.pool.home().clone(),
        }
        .owned_endpoints(&Owner::of(&o, "green"))
        .await
        .unwrap()
        .is_empty()
    );
}

#[tokio::test]
async fn a_hand_made_endpoint_is_adopted_in_place() {
    let fake = FakeEc2::standard();
    hand_made(&fake, "vpce-0hand", VPC, "bedrock-runtime");
    let ctx = context_of(&fake, "blue");
    let o = object(
        "demo",
        "team",
        serde_json::json!({"adopt": {"endpointIds": ["vpce-0hand"]}}),
    );
    let c = converged(&o, &ctx).await;
    assert_eq!(fake.count("CreateVpcEndpoint"), 0);
    assert_eq!(c.applied.endpoints.len(), 1);
    let e = fake.with(|w| w.endpoints["vpce-0hand"].clone());
    assert_eq!(e.tags[crate::aws::TAG_OWNER_UID], o.uid().unwrap());
    assert_eq!(e.tags[crate::aws::TAG_CLUSTER], "blue");
    assert_eq!(
        e.subnet_ids,
        SUBNETS.iter().map(|s| s.to_string()).collect(),
        "subnets reconciled in place"
    );
    assert!(e.policy.is_some(), "policy set");
    assert_eq!(e.group_ids.len(), 1, "moved to the managed group");
    assert!(reasons(&ctx).contains(&"EndpointAdopted".to_string()));
    // Steady afterwards: nothing adopted or changed again.
    let before = fake.mutations().len();
    converged(&o, &ctx).await;
    assert_eq!(fake.mutations().len(), before);
}

#[tokio::test]
async fn a_hand_made_group_is_adopted_as_the_managed_group_described_once() {
    let fake = FakeEc2::standard();
    hand_made(&fake, "vpce-0hand", VPC, "bedrock-runtime");
    fake.with(|w| {
        let g = crate::aws::GroupFacts {
            id: "sg-0hand".into(),
            name: "made-by-hand".into(),
            vpc_id: VPC.into(),
            ..Default::default()
        };
        w.groups.insert(g.id.clone(), g);
    });
    let ctx = context_of(&fake, "blue");
    let o = object(
        "demo",
        "team",
        serde_json::json!({"adopt": {"endpointIds": ["vpce-0hand"], "securityGroupId": "sg-0hand"}}),
    );
    let before = fake.count("DescribeSecurityGroups");
    let c = converged(&o, &ctx).await;
    assert_eq!(fake.count("CreateSecurityGroup"), 0, "adopted, not made");
    assert_eq!(c.applied.group.ids(), ["sg-0hand"]);
    let g = fake.with(|w| w.groups["sg-0hand"].clone());
    assert_eq!(g.tags[crate::aws::TAG_OWNER_UID], o.uid().unwrap());
    let e = fake.with(|w| w.endpoints["vpce-0hand"].clone());
    assert_eq!(
        e.group_ids,
        ["sg-0hand".to_string()].into(),
        "the endpoint uses it"
    );
    // One describe of the object's groups by name, one of the adopted group by id.
    assert_eq!(fake.count("DescribeSecurityGroups") - before, 2);
}

#[tokio::test]
async fn adoption_refuses_mismatches_and_others_endpoints_changing_nothing() {
    let fake = FakeEc2::standard();
    hand_made(&fake, "vpce-0else", "vpc-0other", "bedrock-runtime");
    hand_made(&fake, "vpce-0agent", VPC, "bedrock-agent-runtime");
    hand_made(&fake, "vpce-0green", VPC, "bedrock-runtime");
    fake.with(|w| {
        let t = &mut w.endpoints.get_mut("vpce-0green").unwrap().tags;
        t.insert(crate::aws::TAG_CLUSTER.into(), "green".into());
        t.insert(crate::aws::TAG_OWNER_UID.into(), "uid-old".into());
    });
    let ctx = context_of(&fake, "blue");
    let adopt = |id: &str, take: bool| {
        object(
            "demo",
            "team",
            serde_json::json!({"adopt": {"endpointIds": [id], "takeOver": take}}),
        )
    };
    for (id, reason) in [
        ("vpce-0else", "AdoptionMismatch"),
        ("vpce-0agent", "AdoptionMismatch"),
        ("vpce-0green", "OwnedByAnotherCluster"),
        ("vpce-0000000", "AdoptionNotFound"),
    ] {
        assert_eq!(
            reason_of(converge(&adopt(id, false), &ctx).await),
            reason,
            "{id}"
        );
    }
    assert!(fake.mutations().is_empty(), "{:?}", fake.mutations());
    // With takeOver another cluster's endpoint is taken, atomically, in place.
    converged(&adopt("vpce-0green", true), &ctx).await;
    let e = fake.with(|w| w.endpoints["vpce-0green"].clone());
    assert_eq!(e.tags[crate::aws::TAG_CLUSTER], "blue");
    assert_eq!(fake.count("CreateVpcEndpoint"), 0);
}

#[tokio::test]
async fn the_previous_owner_notices_the_handover_and_changes_nothing() {
    let fake = FakeEc2::standard();
    let green = context_of(&fake, "green");
    let mut old = object("old", "team", serde_json::json!({}));
    let c = converged(&old, &green).await;
    fake.settle();
    let id = c.applied.endpoints[0].id.clone();
    old.status = Some(crate::api::BedrockPrivateLinkStatus {
        observed_generation: Some(1),
        endpoints: vec![crate::api::EndpointStatus {
            vpc_endpoint_id: id.clone(),
            ..Default::default()
        }],
        ..Default::default()
    });
    // The new cluster's object takes the private-DNS endpoint over.
    let blue = context_of(&fake, "blue");
    let new = object(
        "new",
        "team",
        serde_json::json!({"adopt": {"endpointIds": [id], "takeOver": true}}),
    );
    converged(&new, &blue).await;
    assert_eq!(fake.live_endpoints().len(), 1, "the same endpoint");
    assert!(fake.live_endpoints()[0].private_dns, "private DNS stays on");
    // The old object lets go: HandedOver, and nothing changes in AWS.
    let before = fake.mutations().len();
    let fresh = context_of(&fake, "green");
    assert_eq!(reason_of(converge(&old, &fresh).await), "HandedOver");
    assert_eq!(fake.mutations().len(), before);
    // Deleting it leaves the endpoint; its own group goes (no longer used by the endpoint).
    let deleted = cleanup::cleanup(Arc::new(old.clone()), &fresh).await;
    assert!(deleted.is_ok(), "{deleted:?}");
    assert_eq!(fake.live_endpoints().len(), 1);
    assert_eq!(fake.live_endpoints()[0].id, id);
    assert_eq!(
        fake.with(|w| w.groups.len()),
        1,
        "only the new object's group"
    );
}
