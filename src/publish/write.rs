//! Writing the ConfigMaps workloads read: into the object's namespace and the namespaces that
//! opted in, and away from those no longer selected. Only ConfigMaps this object created (by
//! the owner-uid label) are ever written or deleted.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::api::BedrockPrivateLink;
use crate::reconcile::{Context, Error, MANAGER};

/// Where the ConfigMap went, and where it was refused.
#[derive(Debug, Default)]
pub struct Publication {
    /// Namespaces other than the object's own that hold a copy.
    pub copies: Vec<String>,
    /// Why a namespace got nothing, e.g. an existing ConfigMap that is not ours.
    pub refused: Vec<String>,
    /// The object's own namespace holds a ConfigMap of that name that is not ours.
    pub own_conflict: Option<String>,
}

/// Publishes the ConfigMap into the object's namespace and the selected others, and removes
/// copies from namespaces no longer selected. It never writes or deletes a ConfigMap it did
/// not create (the owner-uid label says whose it is), and publishes into another namespace
/// only when that namespace opted in with the label `bedrock.privatelink.io/accept-config=true`.
pub async fn publish_config(
    obj: &BedrockPrivateLink,
    ctx: &Context,
    data: &BTreeMap<String, String>,
) -> Result<Publication, Error> {
    let own = obj.namespace().unwrap_or_default();
    let mut out = Publication::default();
    let targets = targets(obj, ctx, &mut out.refused);
    for ns in &targets {
        match write_one(obj, ctx, ns, data).await? {
            Written::Yes if ns != &own => out.copies.push(ns.clone()),
            Written::Yes => {}
            Written::NotOurs(msg) if ns == &own => {
                out.own_conflict = Some(format!(
                    "{msg}. Choose another spec.workloadConfig.configMapName or remove that ConfigMap"
                ));
            }
            Written::NotOurs(msg) => out.refused.push(msg),
        }
    }
    for (ns, cm_name) in published_copies(obj, ctx).await? {
        if !targets.contains(&ns) {
            delete_config_map_in(ctx, &ns, &cm_name).await?;
            ctx.event(
                obj,
                EventType::Normal,
                "ConfigUnpublished",
                "Delete",
                format!("removed ConfigMap {cm_name} from namespace {ns}"),
            )
            .await;
        }
    }
    Ok(out)
}

/// The object's namespace and the others it names or selects that opted in (from the store
/// the namespace watch keeps: no API request per reconcile); why others get nothing.
fn targets(obj: &BedrockPrivateLink, ctx: &Context, refused: &mut Vec<String>) -> BTreeSet<String> {
    let own = obj.namespace().unwrap_or_default();
    let mut targets: BTreeSet<String> = BTreeSet::from([own.clone()]);
    let Some(wc) = &obj.spec.workload_config else {
        return targets;
    };
    let namespaces = ctx
        .namespaces
        .as_ref()
        .map(Store::state)
        .unwrap_or_default();
    let accepts = |n: &PartialObjectMeta<Namespace>| {
        n.labels().get(super::ACCEPT_LABEL).map(String::as_str) == Some("true")
    };
    for ns in wc.namespaces.iter().flatten().filter(|n| **n != own) {
        match namespaces.iter().find(|n| n.name_any() == *ns) {
            Some(n) if accepts(n) => {
                targets.insert(ns.clone());
            }
            Some(_) => refused.push(format!(
                "{ns} has not opted in (label {}=true)",
                super::ACCEPT_LABEL
            )),
            None => refused.push(format!("{ns} does not exist")),
        }
    }
    if let Some(sel) = wc.namespace_selector.as_ref().filter(|s| !s.is_empty()) {
        targets.extend(
            namespaces
                .iter()
                .filter(|n| accepts(n) && super::selects(sel, n.labels()))
                .map(|n| n.name_any()),
        );
    }
    targets
}

enum Written {
    /// Ours, with the data (written now or already).
    Yes,
    /// Someone else's ConfigMap of that name: left untouched.
    NotOurs(String),
}

/// Writes the ConfigMap into `ns` unless it is already there as it should be.
async fn write_one(
    obj: &BedrockPrivateLink,
    ctx: &Context,
    ns: &str,
    data: &BTreeMap<String, String>,
) -> Result<Written, Error> {
    let uid = obj.uid().unwrap_or_default();
    let name = obj.config_map_name();
    let key = reflector::ObjectRef::new(&name).within(ns);
    let cached = ctx.config_maps.as_ref().and_then(|s| s.get(&key));
    let ours = |cm: &ConfigMap| cm.labels().get(super::OWNER_UID_LABEL) == Some(&uid);
    if cached
        .as_ref()
        .is_some_and(|cm| ours(cm) && cm.data.as_ref() == Some(data))
    {
        return Ok(Written::Yes);
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    // The store only sees ConfigMaps we label; someone else's must be looked up.
    let existing = match cached {
        Some(cm) => Some((*cm).clone()),
        None => api.get_opt(&name).await.map_err(Error::Kube)?,
    };
    if existing.as_ref().is_some_and(|cm| !ours(cm)) {
        return Ok(Written::NotOurs(format!(
            "ConfigMap {ns}/{name} exists and was not created by this object; it is left untouched"
        )));
    }
    let cm = super::config_map(obj, ns, data.clone());
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .map_err(Error::Kube)?;
    // Server-side apply leaves keys that another manager added; remove them, or the data
    // would differ forever (and every reconcile would write again).
    let foreign: serde_json::Map<String, serde_json::Value> = existing
        .iter()
        .flat_map(|cm| cm.data.iter().flatten())
        .filter(|(k, _)| !data.contains_key(*k))
        .map(|(k, _)| (k.clone(), serde_json::Value::Null))
        .collect();
    if !foreign.is_empty() {
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": foreign })),
        )
        .await
        .map_err(Error::Kube)?;
    }
    Ok(Written::Yes)
}

/// (namespace, name) of every ConfigMap this object published.
async fn published_copies(
    obj: &BedrockPrivateLink,
    ctx: &Context,
) -> Result<Vec<(String, String)>, Error> {
    let uid = obj.uid().unwrap_or_default();
    let found: Vec<(String, String)> = match &ctx.config_maps {
        Some(maps) => maps.owned_by(&uid),
        None => {
            let api: Api<ConfigMap> = Api::all(ctx.client.clone());
            let list = api
                .list_metadata(
                    &ListParams::default().labels(&format!("{}={uid}", super::OWNER_UID_LABEL)),
                )
                .await
                .map_err(Error::Kube)?;
            list.items
                .into_iter()
                .map(|m| {
                    (
                        m.metadata.namespace.unwrap_or_default(),
                        m.metadata.name.unwrap_or_default(),
                    )
                })
                .collect()
        }
    };
    Ok(found)
}

pub async fn delete_config_map_in(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

pub async fn delete_config_map(obj: &BedrockPrivateLink, ctx: &Context) -> Result<(), Error> {
    // Owner references would do this with a garbage collector, and cannot cross namespaces;
    // delete explicitly, but only ConfigMaps that carry this object's owner-uid label.
    for (ns, name) in published_copies(obj, ctx).await? {
        delete_config_map_in(ctx, &ns, &name).await?;
    }
    Ok(())
}
