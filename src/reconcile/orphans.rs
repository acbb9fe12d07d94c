//! The orphan sweep: resources tagged with this cluster whose object no longer exists (its
//! finalizer removed by hand while the operator was down, its namespace force-deleted, the
//! cluster restored from an older backup) are removed after a grace period: endpoints first,
//! then the security group once the endpoints' network interfaces let go of it. Resources tagged
//! deletion-policy=Retain stay. Only resources carrying this cluster's tag are considered (never
//! another cluster's in a shared VPC, nor ones from before the cluster tag, whose owner cannot
//! be told apart from another cluster's), and, with --watch-namespaces, only those of the
//! watched namespaces. Whether an owner exists is read from the API server directly, never from
//! a cache. There is no object left to carry an Event: each decision is logged, and counted in
//! bpl_orphans_removed_total, bpl_orphans_waiting and bpl_orphans_retained.
//!
//! Runs in the controller, so only on the leader. The state (when each orphan was first seen)
//! has one owner, the sweep's task; the decision is `ownership::orphan_verdict`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::ownership::{self, OrphanVerdict};
use super::{Context, Error, Scoped};
use crate::aws::{
    EndpointFacts, ErrorKind, GroupFacts, TAG_CLUSTER, TAG_NAME, TAG_NAMESPACE, TAG_OWNER_UID,
    filter,
};

/// One owner's resources, as one sweep saw them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holding {
    pub namespace: String,
    pub name: String,
    pub endpoints: Vec<EndpointFacts>,
    pub groups: Vec<GroupFacts>,
}

/// The resources this cluster's tag names, by owner uid (pure). Only resources whose cluster tag
/// is exactly `cluster`, with an owner uid, not yet deleted, and (when `namespaces` is not
/// empty) owned by an object of one of those namespaces.
pub fn holdings(
    cluster: &str,
    namespaces: &[String],
    endpoints: Vec<EndpointFacts>,
    groups: Vec<GroupFacts>,
) -> BTreeMap<String, Holding> {
    let mut out: BTreeMap<String, Holding> = BTreeMap::new();
    let key = |tags: &BTreeMap<String, String>| -> Option<(String, String, String)> {
        if tags.get(TAG_CLUSTER).map(String::as_str) != Some(cluster) {
            return None;
        }
        let uid = tags.get(TAG_OWNER_UID)?.clone();
        let namespace = tags.get(TAG_NAMESPACE).cloned().unwrap_or_default();
        if !namespaces.is_empty() && !namespaces.contains(&namespace) {
            return None;
        }
        let name = tags.get(TAG_NAME).cloned().unwrap_or_default();
        Some((uid, namespace, name))
    };
    for e in endpoints.into_iter().filter(|e| !e.state_is("deleted")) {
        if let Some((uid, namespace, name)) = key(&e.tags) {
            let h = out.entry(uid).or_insert_with(|| Holding {
                namespace,
                name,
                ..Default::default()
            });
            h.endpoints.push(e);
        }
    }
    for g in groups {
        if let Some((uid, namespace, name)) = key(&g.tags) {
            let h = out.entry(uid).or_insert_with(|| Holding {
                namespace,
                name,
                ..Default::default()
            });
            h.groups.push(g);
        }
    }
    out
}

/// Runs a sweep every `config.orphan_sweep` until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let Some(period) = ctx.config.orphan_sweep else {
        return;
    };
    tracing::info!(
        cluster = %ctx.config.cluster_id,
        period_s = period.as_secs(),
        grace_s = ctx.config.orphan_grace.as_secs(),
        "orphan sweep on"
    );
    let mut first_seen = HashMap::new();
    loop {
        tokio::time::sleep(period).await;
        if let Err(e) = sweep(&ctx, &mut first_seen).await {
            tracing::warn!(error = %e, "orphan sweep failed; trying again next period");
        }
    }
}

/// One sweep of every account and region the operator may act in (`gate::sweep_targets`);
/// `first_seen` (owner uid -> when first seen orphaned) carries over between sweeps. A target
/// that cannot be listed (a role that cannot be assumed, say) is logged and skipped; the others
/// are swept, and what was first seen there is not forgotten.
pub async fn sweep(ctx: &Context, first_seen: &mut HashMap<String, Instant>) -> Result<(), Error> {
    let mut listed = Vec::new();
    let mut failed = None;
    for target in crate::tenancy::gate::sweep_targets(ctx) {
        let scoped = Scoped {
            ctx,
            ec2: ctx.pool.client(&target).await,
        };
        match holdings_of(&scoped).await {
            Ok(found) => listed.push((scoped, found)),
            Err(e) => {
                tracing::warn!(region = %target.region, account = %scoped.ec2.account.as_deref().unwrap_or("self"), error = %e, "orphan sweep could not list this account and region; trying again next period");
                failed = Some(e);
            }
        }
    }
    if failed.is_none() {
        first_seen.retain(|uid, _| listed.iter().any(|(_, found)| found.contains_key(uid)));
    }
    let (mut waiting, mut retained) = (0i64, 0i64);
    for (scoped, found) in &listed {
        let (w, r) = judge(scoped, found, first_seen).await?;
        waiting += w;
        retained += r;
    }
    ctx.metrics.orphans_waiting.set(waiting);
    ctx.metrics.orphans_retained.set(retained);
    failed.map_or(Ok(()), Err)
}

/// What this cluster's tag names in one account and region, by owner uid.
async fn holdings_of(ctx: &Scoped<'_>) -> Result<BTreeMap<String, Holding>, Error> {
    let cluster = ctx.config.cluster_id.as_str();
    let by_cluster = || vec![filter(&format!("tag:{TAG_CLUSTER}"), [cluster])];
    let endpoints = ctx
        .ec2
        .describe_endpoints(by_cluster())
        .await
        .map_err(Error::Aws)?;
    let groups = ctx
        .ec2
        .describe_security_groups(by_cluster())
        .await
        .map_err(Error::Aws)?;
    Ok(holdings(
        cluster,
        &ctx.config.watch_namespaces,
        endpoints,
        groups,
    ))
}

/// Judges one account and region's holdings (removing what is due); returns how many owners
/// wait out their grace period and how many resources were kept for Retain.
async fn judge(
    ctx: &Scoped<'_>,
    found: &BTreeMap<String, Holding>,
    first_seen: &mut HashMap<String, Instant>,
) -> Result<(i64, i64), Error> {
    let now = Instant::now();
    let (mut waiting, mut retained) = (0i64, 0i64);
    for (uid, h) in found {
        let exists = match ctx.owner_exists(&h.namespace, &h.name, uid).await {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(owner = %format!("{}/{}", h.namespace, h.name), %uid, error = %e, "could not read the owner; not judged this sweep");
                None
            }
        };
        let before = first_seen.get(uid).copied();
        match ownership::orphan_verdict(exists, before, now, ctx.config.orphan_grace) {
            OrphanVerdict::NotOrphan => {
                first_seen.remove(uid);
            }
            OrphanVerdict::Waiting(at) => {
                if before.is_none() {
                    tracing::warn!(
                        owner = %format!("{}/{}", h.namespace, h.name),
                        %uid,
                        region = %ctx.ec2.region,
                        account = %ctx.ec2.account.as_deref().unwrap_or("self"),
                        endpoints = %ids(h.endpoints.iter().map(|e| &e.id)),
                        groups = %ids(h.groups.iter().map(|g| &g.id)),
                        grace_s = ctx.config.orphan_grace.as_secs(),
                        "orphaned resources: their object is gone; removing them after the grace period unless it comes back"
                    );
                }
                first_seen.insert(uid.clone(), at);
                waiting += 1;
            }
            OrphanVerdict::Remove => {
                first_seen.entry(uid.clone()).or_insert(now);
                retained += remove(ctx, uid, h).await?;
            }
        }
    }
    Ok((waiting, retained))
}

fn ids<'a>(ids: impl Iterator<Item = &'a String>) -> String {
    ids.map(String::as_str).collect::<Vec<_>>().join(",")
}

/// Removes one orphan's resources (Retain ones excepted): endpoints first, the groups once no
/// endpoint holds them (a group still in use is tried again next sweep). Returns how many
/// resources were kept for Retain.
async fn remove(ctx: &Scoped<'_>, uid: &str, h: &Holding) -> Result<i64, Error> {
    let owner = format!("{}/{}", h.namespace, h.name);
    let kept: Vec<&String> = h
        .endpoints
        .iter()
        .filter(|e| ownership::retained(&e.tags))
        .map(|e| &e.id)
        .chain(
            h.groups
                .iter()
                .filter(|g| ownership::retained(&g.tags))
                .map(|g| &g.id),
        )
        .collect();
    let doomed: Vec<String> = h
        .endpoints
        .iter()
        .filter(|e| !ownership::retained(&e.tags) && !e.is_deleted_or_deleting())
        .map(|e| e.id.clone())
        .collect();
    if !doomed.is_empty() {
        ctx.ec2
            .delete_endpoints(&doomed)
            .await
            .map_err(Error::Aws)?;
        ctx.metrics.record_orphans_removed("endpoint", doomed.len());
        tracing::warn!(%owner, %uid, region = %ctx.ec2.region, account = %ctx.ec2.account.as_deref().unwrap_or("self"), endpoints = %doomed.join(","), "deleted orphaned endpoints (their object is gone)");
    }
    for g in h.groups.iter().filter(|g| !ownership::retained(&g.tags)) {
        match ctx.ec2.delete_security_group(&g.id).await {
            Ok(()) => {
                ctx.metrics.record_orphans_removed("security_group", 1);
                tracing::warn!(%owner, %uid, group = %g.id, "deleted orphaned security group (its object is gone)");
            }
            Err(e) if e.kind() == ErrorKind::Vanished => {}
            Err(e) if e.kind() == ErrorKind::InUse => {
                tracing::info!(%owner, %uid, group = %g.id, "orphaned security group still in use (endpoints deleting); next sweep");
            }
            Err(e) => return Err(Error::Aws(e)),
        }
    }
    if !kept.is_empty() {
        tracing::debug!(%owner, %uid, kept = %ids(kept.iter().copied()), "orphaned resources kept: deletionPolicy Retain");
    }
    Ok(kept.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::TAG_DELETION_POLICY;

    fn tags(cluster: Option<&str>, uid: &str, ns: &str) -> BTreeMap<String, String> {
        let mut t: BTreeMap<String, String> = [
            (TAG_OWNER_UID.to_string(), uid.to_string()),
            (TAG_NAMESPACE.to_string(), ns.to_string()),
            (TAG_NAME.to_string(), format!("obj-{uid}")),
        ]
        .into();
        if let Some(c) = cluster {
            t.insert(TAG_CLUSTER.into(), c.into());
        }
        t
    }

    fn endpoint(id: &str, state: &str, t: BTreeMap<String, String>) -> EndpointFacts {
        EndpointFacts {
            id: id.into(),
            state: state.into(),
            tags: t,
            ..Default::default()
        }
    }

    #[test]
    fn only_this_clusters_resources_in_scope_are_considered() {
        let endpoints = vec![
            endpoint("vpce-1", "available", tags(Some("blue"), "u1", "a")),
            endpoint("vpce-2", "available", tags(Some("green"), "u2", "a")),
            endpoint("vpce-3", "available", tags(None, "u3", "a")),
            endpoint("vpce-4", "deleted", tags(Some("blue"), "u4", "a")),
            endpoint("vpce-5", "available", tags(Some("blue"), "u5", "b")),
            endpoint("vpce-6", "available", BTreeMap::new()),
        ];
        let groups = vec![GroupFacts {
            id: "sg-1".into(),
            tags: tags(Some("blue"), "u1", "a"),
            ..Default::default()
        }];
        let all = holdings("blue", &[], endpoints.clone(), groups.clone());
        assert_eq!(all.keys().collect::<Vec<_>>(), ["u1", "u5"]);
        assert_eq!(all["u1"].endpoints.len(), 1);
        assert_eq!(all["u1"].groups.len(), 1);
        assert_eq!(all["u1"].name, "obj-u1");
        let scoped = holdings("blue", &["a".to_string()], endpoints, groups);
        assert_eq!(scoped.keys().collect::<Vec<_>>(), ["u1"]);
    }

    #[tokio::test]
    async fn a_sweep_removes_endpoints_then_groups_keeps_retain_and_others() {
        use crate::aws::fake::FakeEc2;
        let fake = FakeEc2::standard();
        let mut gone = tags(Some("local"), "gone", "");
        let mut keep = tags(Some("local"), "kept", "");
        keep.insert(TAG_DELETION_POLICY.into(), "Retain".into());
        let other = tags(Some("green"), "other", "");
        gone.insert(TAG_DELETION_POLICY.into(), "Delete".into());
        fake.with(|w| {
            for (id, t) in [("vpce-g", &gone), ("vpce-k", &keep), ("vpce-o", &other)] {
                let mut e = endpoint(id, "available", (*t).clone());
                e.vpc_id = crate::aws::fake::VPC.into();
                if id == "vpce-g" {
                    e.group_ids.insert("sg-g".into());
                }
                w.endpoints.insert(id.into(), e);
            }
            for (id, t) in [("sg-g", &gone), ("sg-o", &other)] {
                w.groups.insert(
                    id.into(),
                    GroupFacts {
                        id: id.into(),
                        vpc_id: crate::aws::fake::VPC.into(),
                        tags: (*t).clone(),
                        ..Default::default()
                    },
                );
            }
        });
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let cfg = super::super::Config {
            orphan_grace: std::time::Duration::ZERO,
            ..Default::default()
        };
        let ctx = Context::without_events(
            client,
            fake.handle(),
            Arc::new(crate::telemetry::Metrics::default()),
            cfg,
        );
        // Owners without a namespace tag cannot exist: no API read is needed.
        let mut first = HashMap::new();
        sweep(&ctx, &mut first).await.expect("sweep");
        let state = |id: &str| fake.with(|w| w.endpoints.get(id).map(|e| e.state.clone()));
        assert_eq!(state("vpce-g").as_deref(), Some("deleting"));
        assert_eq!(state("vpce-k").as_deref(), Some("available"), "Retain");
        assert_eq!(
            state("vpce-o").as_deref(),
            Some("available"),
            "another cluster's"
        );
        assert_eq!(ctx.metrics.orphans_retained.get(), 1);
        // The group is held by the deleting endpoint; once it is gone, the next sweep takes it.
        assert!(fake.with(|w| w.groups.contains_key("sg-g")));
        fake.settle();
        sweep(&ctx, &mut first).await.expect("sweep");
        assert!(!fake.with(|w| w.groups.contains_key("sg-g")));
        assert!(fake.with(|w| w.groups.contains_key("sg-o")));
    }
}
