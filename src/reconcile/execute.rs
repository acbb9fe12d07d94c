//! Step 4, execute: the only step that changes AWS. It carries out the plan (computed by the
//! pure functions in plan.rs from what was observed, and, for endpoints, the group id this
//! step made) and reports what it left.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::runtime::events::EventType;

use super::observe::Observation;
use super::plan::{self, Desired, DesiredGroup, EndpointAction, Owner};
use super::{Error, Failure, Scoped};
use crate::api::BedrockPrivateLink;
use crate::aws::{
    AwsResult, CreateEndpoint, EndpointFacts, ErrorCode, ErrorKind, GroupFacts, IpRule,
    ModifyEndpoint, RuleSource, filter,
};

/// The security group the endpoints carry.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupOutcome {
    /// Ours, with exactly the desired rules and no egress.
    Managed { id: String, ingress: Vec<IpRule> },
    /// Groups the spec names; we do not touch them.
    Existing(Vec<String>),
}

impl GroupOutcome {
    pub fn ids(&self) -> Vec<String> {
        match self {
            GroupOutcome::Managed { id, .. } => vec![id.clone()],
            GroupOutcome::Existing(ids) => ids.clone(),
        }
    }
}

/// What AWS holds after this step.
#[derive(Debug, Clone)]
pub struct Applied {
    pub group: GroupOutcome,
    /// The object's endpoints (as created, or described again after other changes).
    pub endpoints: Vec<EndpointFacts>,
    /// Something is moving in AWS (pending, deleting): look again soon.
    pub waiting: bool,
    /// A failed endpoint's replacement waits for its backoff: look again then.
    pub retry_in: Option<Duration>,
    /// Services whose dead endpoint is being replaced and that have no available endpoint
    /// yet: (why, attempt).
    pub replacing: Vec<(String, u32)>,
    /// Whether this step changed anything.
    pub changed: bool,
}

/// Delay before replacement attempt `n + 1` of a service's dead endpoint, after `n` attempts:
/// none for the first, then doubling from 10 s, at most 10 minutes.
pub fn replacement_backoff(attempts: u32) -> Duration {
    match attempts {
        0 => Duration::ZERO,
        n => Duration::from_secs(10 << (n - 1).min(6)).min(Duration::from_secs(600)),
    }
}

pub async fn execute(
    ctx: &Scoped<'_>,
    obj: &BedrockPrivateLink,
    desired: &Desired,
    obs: &Observation,
) -> Result<Applied, Failure> {
    let owner = Owner::of(obj, &ctx.config.cluster_id);
    let (adopted_endpoints, adopted_group) = adopt(ctx, obj, desired, obs).await?;
    let mut owned_groups = obs.groups.clone();
    owned_groups.extend(adopted_group);
    let mut owned_endpoints = obs.endpoints.clone();
    owned_endpoints.extend(adopted_endpoints);
    let group = match &desired.group {
        Some(dg) => {
            let id = ensure_group(ctx, obj, dg, &owned_groups).await?;
            GroupOutcome::Managed {
                id,
                ingress: dg.ingress.iter().cloned().collect(),
            }
        }
        None => GroupOutcome::Existing(desired.existing_group_ids.clone()),
    };
    let (may_replace, retry_in) = replacements_due(ctx, &owner.uid, &owned_endpoints);
    let actions = plan::plan_endpoints(
        desired,
        &owned_endpoints,
        &group.ids(),
        &owner,
        &may_replace,
    );
    let mut applied = Applied {
        group,
        endpoints: owned_endpoints.clone(),
        // Something moving in AWS; a dead endpoint waiting for its backoff is `retry_in`.
        waiting: actions.iter().any(|a| match a {
            EndpointAction::Create(_) | EndpointAction::Replace { .. } => true,
            EndpointAction::Wait { state, .. } => !is_dead_state(state),
            _ => false,
        }),
        retry_in,
        replacing: Vec::new(),
        changed: false,
    };
    for action in &actions {
        run_endpoint_action(ctx, obj, action, &mut applied).await?;
    }
    tag_endpoints(ctx, obj, desired, &mut applied).await?;
    if applied.changed {
        ctx.memory.changed(&owner.uid);
        applied.endpoints = ctx.owned_endpoints(&owner).await?;
    }
    remove_stale_groups(ctx, obj, desired, &owned_groups, &applied.group).await?;
    // Remembered last: stamped before the endpoint changes above, the group would be older
    // than the object's last change in AWS, and the reconcile our status write triggers would
    // describe the whole VPC's groups again (0.27 extra calls per object with 1000 creates).
    if let (Some(dg), GroupOutcome::Managed { id, .. }) = (&desired.group, &applied.group)
        && !obs.steady
        && owned_groups.iter().all(|g| &g.id == id)
    {
        remember_group(ctx, obj, dg, id);
    }
    applied.replacing = replacements_in_progress(ctx, &owner.uid, desired, &applied.endpoints);
    Ok(applied)
}

/// Tags what spec.adopt brings in (checked in observe) as this object's, in one CreateTags per
/// resource that rewrites the owner and cluster tags together: ownership moves atomically, and
/// nothing else about the resource changes here (the plan then brings it to the spec in place).
/// Only the operator's own tag keys are written in this call (the IAM statement for adoption
/// allows no others); spec.tags follow through the usual tag plan.
async fn adopt(
    ctx: &Scoped<'_>,
    obj: &BedrockPrivateLink,
    desired: &Desired,
    obs: &Observation,
) -> Result<(Vec<EndpointFacts>, Option<GroupFacts>), Failure> {
    let mut endpoints = Vec::new();
    for e in &obs.adopt.endpoints {
        let Some(d) = desired.endpoint_for(&e.service_name) else {
            continue;
        };
        let how = ("EndpointAdopted", "; reconciling it to the spec in place");
        let tags = tag_adopted(ctx, obj, &e.id, &e.tags, &d.tags, how).await?;
        let mut adopted = e.clone();
        adopted.tags.extend(tags);
        endpoints.push(adopted);
    }
    let group = match (&obs.adopt.group, &desired.group) {
        (Some(g), Some(dg)) => {
            let how = ("SecurityGroupAdopted", " as the managed group");
            let tags = tag_adopted(ctx, obj, &g.id, &g.tags, &dg.tags, how).await?;
            let mut adopted = g.clone();
            adopted.tags.extend(tags);
            Some(adopted)
        }
        _ => None,
    };
    Ok((endpoints, group))
}

/// Makes one adopted resource ours: writes the operator's tags of `wanted` (owner, cluster,
/// deletion policy, Name) in one CreateTags, which moves ownership atomically; logs it and
/// records the Event `how.0` (note: "adopted <id> (<previous owner>)<how.1>"). Returns the
/// tags written.
async fn tag_adopted(
    ctx: &Scoped<'_>,
    obj: &BedrockPrivateLink,
    id: &str,
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
    how: (&str, &str),
) -> Result<BTreeMap<String, String>, Failure> {
    let uid = obj.metadata.uid.as_deref().unwrap_or_default();
    let tags: BTreeMap<String, String> = wanted
        .iter()
        .filter(|(k, _)| k.starts_with("bedrock.privatelink.io/") || k.as_str() == "Name")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    ctx.memory.changed(uid);
    ctx.ec2
        .create_tags(&[id.to_string()], &tags)
        .await
        .map_err(Error::Aws)?;
    let from = previous_owner(current);
    tracing::info!(resource = %id, from = %from, event = how.0, "adopted");
    let note = format!("adopted {id} ({from}){}", how.1);
    ctx.event(obj, EventType::Normal, how.0, "Adopt", note)
        .await;
    Ok(tags)
}

fn previous_owner(tags: &BTreeMap<String, String>) -> String {
    match super::ownership::OtherOwner::of(tags) {
        Some(o) => format!("taken over from {}", o.describe()),
        None => "was untagged".to_string(),
    }
}

/// Services replaced lately that have no available endpoint yet: (why, attempt).
fn replacements_in_progress(
    ctx: &Scoped<'_>,
    uid: &str,
    desired: &Desired,
    endpoints: &[EndpointFacts],
) -> Vec<(String, u32)> {
    desired
        .endpoints
        .iter()
        .filter(|d| {
            !endpoints
                .iter()
                .any(|e| e.service_name == d.service_name && e.state_is("available"))
        })
        .filter_map(|d| ctx.memory.replacements(uid, &d.service_name))
        .filter(|r| r.last.elapsed() < ctx.memory.ttl().max(Duration::from_secs(600)))
        .map(|r| (r.why, r.attempts))
        .collect()
}

/// The group as we just left it: the resync our status write triggers needs no describe.
fn remember_group(ctx: &Scoped<'_>, obj: &BedrockPrivateLink, dg: &DesiredGroup, id: &str) {
    let now = GroupFacts {
        id: id.to_string(),
        name: dg.name.clone(),
        vpc_id: dg.vpc_id.clone(),
        ingress: dg.ingress.clone(),
        egress: Default::default(),
        tags: dg.tags.clone(),
    };
    ctx.memory.remember_groups(
        obj.metadata.uid.as_deref().unwrap_or_default(),
        obj.metadata.generation,
        Instant::now(),
        vec![now],
    );
}

fn is_dead_state(state: &str) -> bool {
    ["failed", "rejected", "expired"]
        .iter()
        .any(|d| state.eq_ignore_ascii_case(d))
}

/// The services whose dead endpoint may be replaced now, and when the next may be.
fn replacements_due(
    ctx: &Scoped<'_>,
    uid: &str,
    endpoints: &[EndpointFacts],
) -> (BTreeSet<String>, Option<Duration>) {
    let mut due = BTreeSet::new();
    let mut next: Option<Duration> = None;
    for e in endpoints.iter().filter(|e| plan::is_dead(e)) {
        let wait = match ctx.memory.replacements(uid, &e.service_name) {
            None => Duration::ZERO,
            Some(r) => replacement_backoff(r.attempts).saturating_sub(r.last.elapsed()),
        };
        if wait.is_zero() {
            due.insert(e.service_name.clone());
        } else {
            next = Some(next.map_or(wait, |n| n.min(wait)));
        }
    }
    (due, next)
}

async fn run_endpoint_action(
    ctx: &Scoped<'_>,
    obj: &BedrockPrivateLink,
    action: &EndpointAction,
    applied: &mut Applied,
) -> Result<(), Failure> {
    let uid = obj.metadata.uid.as_deref().unwrap_or_default();
    match action {
        EndpointAction::Create(req) => {
            // Stamped before (a describe racing the create is stale) and after: the create may
            // have waited for the limiter's bucket, and a describe begun meanwhile (another
            // object's, the VPC poller's) does not show the endpoint yet.
            ctx.memory.changed(uid);
            let created = create_endpoint(ctx, req, &applied.endpoints).await?;
            ctx.memory.changed(uid);
            let note = format!(
                "created {} for {} in {}",
                created.id,
                req.service_name,
                req.subnet_ids.join(", ")
            );
            tracing::info!(endpoint = %created.id, service = %req.service_name, "created endpoint");
            ctx.event(obj, EventType::Normal, "EndpointCreated", "Create", note)
                .await;
            applied.endpoints.retain(|e| e.id != created.id);
            applied.endpoints.push(created);
            applied.waiting = true;
        }
        EndpointAction::Modify(m) => {
            ctx.memory.changed(uid);
            ctx.ec2.modify_endpoint(m).await.map_err(Error::Aws)?;
            let what = describe_modification(m);
            tracing::info!(endpoint = %m.id, changes = %what, "updated endpoint");
            let note = format!("updated {}: {what}", m.id);
            ctx.event(obj, EventType::Normal, "EndpointUpdated", "Update", note)
                .await;
            applied.changed = true;
        }
        EndpointAction::Delete { id, reason } => {
            ctx.memory.changed(uid);
            delete_endpoint(ctx, id).await?;
            tracing::info!(endpoint = %id, %reason, "deleted endpoint");
            let note = format!("deleted {id}: {reason}");
            ctx.event(obj, EventType::Normal, "EndpointDeleted", "Delete", note)
                .await;
            applied.changed = true;
        }
        EndpointAction::Replace {
            id,
            service_name,
            state,
            last_error,
        } => {
            ctx.memory.changed(uid);
            delete_endpoint(ctx, id).await?;
            ctx.memory.changed(uid);
            let error = last_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            let why = format!("{id} is {state}{error}");
            let attempt = ctx.memory.replacing(uid, service_name, why.clone());
            let note = format!(
                "{why}; deleted it, a replacement follows once it is gone (attempt {attempt})"
            );
            tracing::warn!(endpoint = %id, attempt, "replacing a dead endpoint");
            ctx.event(
                obj,
                EventType::Warning,
                "EndpointReplacing",
                "Replace",
                note,
            )
            .await;
            applied.changed = true;
        }
        EndpointAction::Wait { .. } => {}
    }
    Ok(())
}

/// Deleting an endpoint that is already gone is done.
async fn delete_endpoint(ctx: &Scoped<'_>, id: &str) -> Result<(), Error> {
    match ctx.ec2.delete_endpoints(&[id.to_string()]).await {
        Err(e) if e.kind() != ErrorKind::Vanished => Err(Error::Aws(e)),
        _ => Ok(()),
    }
}

/// Creates the endpoint. The token may still name an endpoint that is gone (deleted out of
/// band, or a dead one we replaced): follow the token chain to a live one.
async fn create_endpoint(
    ctx: &Scoped<'_>,
    req: &CreateEndpoint,
    known: &[EndpointFacts],
) -> Result<EndpointFacts, Error> {
    let mut req = req.clone();
    let mut created = ctx.ec2.create_endpoint(&req).await.map_err(Error::Aws)?;
    for _ in 0..16 {
        let dead = created.is_deleted_or_deleting()
            || plan::is_dead(&created)
            || known
                .iter()
                .any(|e| e.id == created.id && (e.is_deleted_or_deleting() || plan::is_dead(e)));
        if !dead {
            break;
        }
        req.client_token = plan::successor_token(&req.client_token, &created.id);
        created = ctx.ec2.create_endpoint(&req).await.map_err(Error::Aws)?;
    }
    Ok(created)
}

fn describe_modification(m: &ModifyEndpoint) -> String {
    let mut what = Vec::new();
    if !m.add_subnets.is_empty() || !m.remove_subnets.is_empty() {
        what.push(format!(
            "subnets +[{}] -[{}]",
            m.add_subnets.join(", "),
            m.remove_subnets.join(", ")
        ));
    }
    if !m.add_groups.is_empty() || !m.remove_groups.is_empty() {
        what.push(format!(
            "groups +[{}] -[{}]",
            m.add_groups.join(", "),
            m.remove_groups.join(", ")
        ));
    }
    if m.policy.is_some() {
        what.push("policy".into());
    }
    if let Some(p) = m.private_dns {
        what.push(format!("private DNS {}", if p { "on" } else { "off" }));
    }
    what.join("; ")
}

/// spec.tags in place on the object's live endpoints (the group's are done with its rules).
async fn tag_endpoints(
    ctx: &Scoped<'_>,
    obj: &BedrockPrivateLink,
    desired: &Desired,
    applied: &mut Applied,
) -> Result<(), Failure> {
    let live = applied
        .endpoints
        .iter()
        .filter(|e| !e.is_deleted_or_deleting() && !plan::is_dead(e));
    let mut changed = false;
    for e in live {
        let Some(d) = desired.endpoint_for(&e.service_name) else {
            continue;
        };
        changed |= apply_tags(ctx, obj, &e.id, &d.tags, &e.tags).await?;
    }
    applied.changed |= changed;
    Ok(())
}

/// Brings one resource's tags to `desired`; true if anything changed.
async fn apply_tags(
    ctx: &Scoped<'_>,
    obj: &BedrockPrivateLink,
    id: &str,
    desired: &std::collections::BTreeMap<String, String>,
    observed: &std::collections::BTreeMap<String, String>,
) -> Result<bool, Failure> {
    let p = plan::plan_tags(desired, observed);
    if p.is_empty() {
        return Ok(false);
    }
    ctx.memory
        .changed(obj.metadata.uid.as_deref().unwrap_or_default());
    let ids = [id.to_string()];
    if !p.set.is_empty() {
        ctx.ec2
            .create_tags(&ids, &p.set)
            .await
            .map_err(Error::Aws)?;
    }
    if !p.remove.is_empty() {
        ctx.ec2
            .delete_tags(&ids, &p.remove)
            .await
            .map_err(Error::Aws)?;
    }
    let mut what: Vec<String> = p.set.keys().map(|k| format!("+{k}")).collect();
    what.extend(p.remove.iter().map(|k| format!("-{k}")));
    let note = format!("tags of {id}: {}", what.join(", "));
    ctx.event(obj, EventType::Normal, "TagsUpdated", "Update", note)
        .await;
    Ok(true)
}

/// A rule change AWS refuses because it is already in place (a retry after a lost answer)
/// counts as done.
fn already_done(result: AwsResult<()>) -> Result<(), Error> {
    match result {
        Err(e) if e.kind() == ErrorKind::AlreadyDone => Ok(()),
        other => other.map_err(Error::Aws),
    }
}

/// The managed group exists with exactly the desired rules and tags; returns its id.
async fn ensure_group(
    ctx: &Scoped<'_>,
    obj: &BedrockPrivateLink,
    dg: &DesiredGroup,
    owned: &[GroupFacts],
) -> Result<String, Failure> {
    let uid = obj.metadata.uid.as_deref().unwrap_or_default();
    // The adopted group (spec.adopt.securityGroupId) if we hold it, else ours by name.
    let found = owned
        .iter()
        .find(|g| g.vpc_id == dg.vpc_id && dg.adopted_id.as_ref() == Some(&g.id))
        .or_else(|| {
            owned
                .iter()
                .find(|g| g.vpc_id == dg.vpc_id && g.name == dg.name)
        })
        .cloned();
    let current = match found {
        Some(g) => g,
        None => {
            ctx.memory.changed(uid);
            create_group(ctx, obj, dg).await?
        }
    };
    let p = plan::plan_group(dg, &current);
    if !p.is_empty() {
        ctx.memory.changed(uid);
    }
    if !p.authorize.is_empty() {
        already_done(ctx.ec2.authorize_ingress(&current.id, &p.authorize).await)?;
    }
    if !p.revoke_ingress.is_empty() {
        already_done(ctx.ec2.revoke_ingress(&current.id, &p.revoke_ingress).await)?;
    }
    if !p.revoke_egress.is_empty() {
        already_done(ctx.ec2.revoke_egress(&current.id, &p.revoke_egress).await)?;
    }
    if !p.is_empty() && !owned.is_empty() {
        let changes: Vec<String> = p
            .authorize
            .iter()
            .map(|r| format!("+{r}"))
            .chain(p.revoke_ingress.iter().map(|r| format!("-{r}")))
            .chain(p.revoke_egress.iter().map(|r| format!("-egress {r}")))
            .collect();
        let note = format!("{}: {}", current.id, changes.join(", "));
        ctx.event(
            obj,
            EventType::Normal,
            "SecurityGroupUpdated",
            "Update",
            note,
        )
        .await;
    }
    if !owned.is_empty() {
        apply_tags(ctx, obj, &current.id, &dg.tags, &current.tags).await?;
    }
    Ok(current.id)
}

/// Creates the group, or adopts the one an earlier run created before it crashed.
async fn create_group(
    ctx: &Scoped<'_>,
    obj: &BedrockPrivateLink,
    dg: &DesiredGroup,
) -> Result<GroupFacts, Error> {
    let created = ctx
        .ec2
        .create_security_group(&dg.name, &dg.description, &dg.vpc_id, &dg.tags)
        .await;
    let id = match created {
        Ok(id) => {
            let note = format!("created {id} in {}", dg.vpc_id);
            ctx.event(
                obj,
                EventType::Normal,
                "SecurityGroupCreated",
                "Create",
                note,
            )
            .await;
            id
        }
        Err(e) if e.code == ErrorCode::GroupDuplicate => {
            let found = ctx
                .ec2
                .describe_security_groups(vec![
                    filter("group-name", [dg.name.as_str()]),
                    filter("vpc-id", [dg.vpc_id.as_str()]),
                ])
                .await
                .map_err(Error::Aws)?;
            // Adopted as found: its rules and tags are planned like any other.
            return found.into_iter().next().ok_or(Error::Aws(e));
        }
        Err(e) => return Err(Error::Aws(e)),
    };
    // A new group carries AWS's default allow-all egress rule.
    let egress = IpRule {
        protocol: "-1".into(),
        from_port: -1,
        to_port: -1,
        source: RuleSource::Ipv4("0.0.0.0/0".into()),
    };
    Ok(GroupFacts {
        id,
        name: dg.name.clone(),
        vpc_id: dg.vpc_id.clone(),
        egress: [egress].into(),
        tags: dg.tags.clone(),
        ..Default::default()
    })
}

/// A managed group left over from before the spec named existing groups (or from another
/// VPC): removed once no endpoint holds it.
async fn remove_stale_groups(
    ctx: &Scoped<'_>,
    obj: &BedrockPrivateLink,
    desired: &Desired,
    owned: &[GroupFacts],
    group: &GroupOutcome,
) -> Result<(), Failure> {
    let keep = match group {
        GroupOutcome::Managed { id, .. } if desired.group.is_some() => Some(id.as_str()),
        _ => None,
    };
    for g in owned.iter().filter(|g| Some(g.id.as_str()) != keep) {
        ctx.memory
            .changed(obj.metadata.uid.as_deref().unwrap_or_default());
        // Still held by an endpoint's network interfaces: tried again at the next reconcile.
        delete_owned_group(ctx, obj, &g.id, " (no longer used)").await?;
    }
    Ok(())
}

/// What deleting one of the operator's security groups came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GroupDeletion {
    /// Deleted now, and recorded as an Event.
    Deleted,
    /// Already gone.
    Gone,
    /// Network interfaces (of endpoints being deleted) still hold it.
    InUse,
}

/// Deletes a security group the operator owns and records a `SecurityGroupDeleted` Event
/// ("deleted <id><why>"). Gone already and still in use are answers, not errors: the caller
/// decides whether to wait (deleting the object) or to try again later (a stale group).
pub(super) async fn delete_owned_group(
    ctx: &Scoped<'_>,
    obj: &BedrockPrivateLink,
    id: &str,
    why: &str,
) -> Result<GroupDeletion, Error> {
    match ctx.ec2.delete_security_group(id).await {
        Ok(()) => {
            let note = format!("deleted {id}{why}");
            ctx.event(
                obj,
                EventType::Normal,
                "SecurityGroupDeleted",
                "Delete",
                note,
            )
            .await;
            Ok(GroupDeletion::Deleted)
        }
        Err(e) if e.kind() == ErrorKind::Vanished => Ok(GroupDeletion::Gone),
        Err(e) if e.kind() == ErrorKind::InUse => Ok(GroupDeletion::InUse),
        Err(e) => Err(Error::Aws(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacement_backoff_is_bounded() {
        assert_eq!(replacement_backoff(0), Duration::ZERO);
        assert_eq!(replacement_backoff(1), Duration::from_secs(10));
        assert_eq!(replacement_backoff(2), Duration::from_secs(20));
        assert_eq!(replacement_backoff(7), Duration::from_secs(600));
        assert_eq!(replacement_backoff(u32::MAX), Duration::from_secs(600));
    }
}
