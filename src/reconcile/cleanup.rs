//! Deletion: endpoints first (their network interfaces hold the security group), then the
//! group once AWS lets go of it, then the published ConfigMaps.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::execute::{GroupDeletion, delete_owned_group};
use super::plan::Owner;
use super::{Context, Error, Scoped};
use crate::api::{BedrockPrivateLink, DeletionPolicy};
use crate::aws::{AwsError, ErrorCode};
use crate::publish;

pub async fn cleanup(obj: Arc<BedrockPrivateLink>, ctx: &Context) -> Result<Action, Error> {
    let owner = Owner::of(&obj, &ctx.config.cluster_id);
    ctx.metrics.set_ready(&owner.uid, None);
    ctx.poller.forget(&owner.uid);
    if obj.spec.deletion_policy == DeletionPolicy::Retain {
        let note = "deletionPolicy Retain: the endpoints and security group stay in AWS";
        ctx.event(&obj, EventType::Normal, "Retained", "Delete", note.into())
            .await;
        publish::delete_config_map(&obj, ctx).await?;
        return Ok(Action::await_change());
    }
    // Done moments ago; this is a reconcile queued before the finalizer came off.
    if ctx.memory.cleaned(&owner.uid) {
        return Ok(Action::await_change());
    }
    // The object's account and region (issue 17).
    let recorded = !nothing_recorded(&obj);
    let scoped = match crate::tenancy::gate::cleanup_target(&obj, ctx, recorded) {
        Ok(target) => ctx.scoped(ctx.pool.client(&target).await),
        Err(why) if !recorded => return skip(&obj, ctx, &why).await,
        Err(why) => {
            return Err(Error::Aws(AwsError::new(
                "AssumeRole",
                ErrorCode::AssumeRoleFailed,
                why,
            )));
        }
    };
    let deleted = async {
        delete_endpoints(&obj, &scoped, &owner).await?;
        delete_groups(&obj, &scoped, &owner).await?;
        Ok::<(), Error>(())
    };
    match deleted.await {
        Err(Error::Aws(e)) if e.credentials_reason().is_some() && !recorded => {
            return skip(&obj, ctx, &e.summary()).await;
        }
        other => other?,
    }
    publish::delete_config_map(&obj, ctx).await?;
    ctx.memory.remember_cleaned(&owner.uid);
    tracing::info!(object = %owner.name, namespace = %owner.namespace, "all AWS resources removed");
    Ok(Action::await_change())
}

/// The status records no endpoint and no group: the object never got anything in AWS (it was
/// refused, say, or its role could never be assumed).
fn nothing_recorded(obj: &BedrockPrivateLink) -> bool {
    obj.status
        .as_ref()
        .is_none_or(|s| s.endpoints.is_empty() && s.security_group_id.is_none())
}

/// The object's account cannot be reached and its status records nothing there: it is let go
/// without looking, with a Warning saying so.
async fn skip(obj: &BedrockPrivateLink, ctx: &Context, why: &str) -> Result<Action, Error> {
    let note = format!(
        "deleted without checking AWS: {why}. Its status recorded no endpoint and no security group"
    );
    tracing::warn!(object = %kube::ResourceExt::name_any(obj), "{note}");
    ctx.event(obj, EventType::Warning, "CleanupSkipped", "Delete", note)
        .await;
    publish::delete_config_map(obj, ctx).await?;
    Ok(Action::await_change())
}

/// Deletes the object's endpoints; waits (an `Error::Waiting`) until AWS shows them deleted.
async fn delete_endpoints(
    obj: &BedrockPrivateLink,
    ctx: &Scoped<'_>,
    owner: &Owner,
) -> Result<(), Error> {
    let endpoints = ctx.owned_endpoints(owner).await?;
    let to_delete: Vec<String> = endpoints
        .iter()
        .filter(|e| !e.is_deleted_or_deleting())
        .map(|e| e.id.clone())
        .collect();
    if !to_delete.is_empty() {
        ctx.memory.changed(&owner.uid);
        ctx.ec2
            .delete_endpoints(&to_delete)
            .await
            .map_err(Error::Aws)?;
        let note = format!("deleting {}", to_delete.join(", "));
        ctx.event(obj, EventType::Normal, "EndpointDeleted", "Delete", note)
            .await;
    }
    let lingering: Vec<String> = endpoints
        .iter()
        .filter(|e| !e.state_is("deleted"))
        .map(|e| {
            let state = if to_delete.contains(&e.id) {
                "deleting"
            } else {
                e.state.as_str()
            };
            format!("{} ({state})", e.id)
        })
        .collect();
    if lingering.is_empty() {
        Ok(())
    } else {
        Err(Error::Waiting(format!(
            "endpoints {} are not gone yet",
            lingering.join(", ")
        )))
    }
}

/// Deletes the object's groups; waits while network interfaces of deleted endpoints hold them.
async fn delete_groups(
    obj: &BedrockPrivateLink,
    ctx: &Scoped<'_>,
    owner: &Owner,
) -> Result<(), Error> {
    let mut groups = ctx.groups_of(owner).await?;
    if let Some(id) = obj
        .spec
        .adopt
        .as_ref()
        .and_then(|a| a.security_group_id.as_deref())
        && !groups.iter().any(|g| g.id == id)
    {
        groups.extend(ctx.adopted_group(owner, id).await?);
    }
    for g in &groups {
        if delete_owned_group(ctx, obj, &g.id, "").await? == GroupDeletion::InUse {
            return Err(Error::Waiting(format!(
                "security group {} is still in use by network interfaces of deleted endpoints",
                g.id
            )));
        }
    }
    Ok(())
}
