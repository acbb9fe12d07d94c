//! The tenancy gate of the reconcile: feeds [`super::admit`] from the watches (grants,
//! Namespaces, the namespace's other objects) and turns a refusal into the reconcile's
//! `Invalid`, so a refused object gets `Ready=False` with the rule as reason and an Event,
//! before anything in AWS is created or changed.
//!
//! A refused object that already has endpoints (the rules changed after it was admitted) is
//! frozen, not deleted: its endpoints, security group and ConfigMap stay as they are, nothing
//! of it is updated, until it complies again (then it is reconciled as usual) or is deleted
//! (then cleanup removes them, or keeps them with deletionPolicy Retain).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PartialObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use super::ledger::{Earlier, Ledgers};
use super::{Ask, Grant, Home};
use crate::api::{BedrockPrivateLink, BedrockPrivateLinkGrant, DeletionPolicy};
use crate::aws::Target;
use crate::reconcile::validate::Invalid;
use crate::reconcile::{Context, Error};

type Guarded<K> = DeserializeGuard<K>;

/// The watches the gate reads. Wired by `reconcile::run`; a Context that was never run (a
/// library user driving `reconcile` by hand) has none, and then the gate admits everything.
#[derive(Default)]
pub struct Index {
    grants: OnceLock<Store<Guarded<BedrockPrivateLinkGrant>>>,
    /// The grant watch has listed every grant once: before that, "no grant" means "unknown".
    grants_listed: Arc<AtomicBool>,
    objects: OnceLock<Vec<Store<Guarded<BedrockPrivateLink>>>>,
    /// Each namespace's objects in creation order, between reconciles.
    ledgers: Ledgers,
    /// Bumped by the controllers on every change to `objects`.
    object_changes: Arc<AtomicU64>,
}

impl Index {
    /// Starts the watch of every grant; returns one stream per controller that yields each
    /// grant added, changed or deleted (each controller then checks all its objects again).
    pub fn watch_grants(
        &self,
        client: Client,
        controllers: usize,
    ) -> Vec<futures::channel::mpsc::Receiver<Guarded<BedrockPrivateLinkGrant>>> {
        let (store, writer) = reflector::store();
        let _ = self.grants.set(store);
        let listed = self.grants_listed.clone();
        let stream = reflector::reflector(
            writer,
            watcher(Api::all(client), watcher::Config::default()).default_backoff(),
        )
        .inspect(move |event| match event {
            Ok(watcher::Event::InitDone) => listed.store(true, Ordering::Relaxed),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot watch BedrockPrivateLinkGrants (is crds/bedrockprivatelinkgrant.yaml installed?); objects wait"
            ),
            _ => {}
        })
        .touched_objects();
        crate::reconcile::fan_out(stream, controllers)
    }

    /// The stores of the controllers' objects (for counting a namespace's endpoints).
    pub fn set_objects(&self, stores: Vec<Store<Guarded<BedrockPrivateLink>>>) {
        let _ = self.objects.set(stores);
    }

    /// The counter the controllers bump on every change to their stores (after the change).
    pub fn object_changes(&self) -> Arc<AtomicU64> {
        self.object_changes.clone()
    }

    /// The live objects of `obj`'s namespace created before it.
    fn earlier(&self, obj: &BedrockPrivateLink, home: &Home) -> Earlier {
        let stores = self.objects.get().map(Vec::as_slice).unwrap_or_default();
        let changes = self.object_changes.load(Ordering::Acquire);
        self.ledgers.earlier(stores, changes, obj, home)
    }

    /// Forgets what it keeps of namespaces that have no object left.
    pub fn prune(&self) {
        let stores = self.objects.get().map(Vec::as_slice).unwrap_or_default();
        self.ledgers.prune(stores);
    }

    /// Whether every grant has been listed (for readiness).
    pub fn listed(&self) -> bool {
        self.grants.get().is_none() || self.grants_listed.load(Ordering::Relaxed)
    }
}

/// Every object of the controller's store: a grant change may change any object's verdict.
pub fn all_objects(
    store: &Store<Guarded<BedrockPrivateLink>>,
) -> Vec<ObjectRef<Guarded<BedrockPrivateLink>>> {
    store
        .state()
        .iter()
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

fn grants(store: &Store<Guarded<BedrockPrivateLinkGrant>>) -> Vec<Grant> {
    let mut found: Vec<(String, Grant)> = store
        .state()
        .iter()
        .map(|g| match &g.0 {
            Ok(g) => (g.name_any(), Grant::from_resource(g)),
            Err(invalid) => {
                let name = invalid.metadata.name.clone().unwrap_or_default();
                (name.clone(), Grant::unreadable(name, invalid.error.clone()))
            }
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.into_iter().map(|(_, g)| g).collect()
}

/// The operator's own account and region.
pub fn home(ctx: &Context) -> Home {
    Home {
        region: ctx.home().region.clone(),
        account: ctx.home().account.clone(),
    }
}

/// `Ok`: admitted, with where its endpoints go (account credentials and region). `Err`:
/// refused, with the rule as reason. The outer `Err`: try again later.
pub async fn check(
    obj: &BedrockPrivateLink,
    ctx: &Context,
) -> Result<Result<Target, Invalid>, Error> {
    let index = &ctx.tenancy;
    let home = home(ctx);
    let Some(grant_store) = index.grants.get() else {
        // No grant watch (a Context that was never run): the built-in rules for account and
        // region (the operator's own), everything else admitted.
        let ask = Ask::of(&obj.spec, &home);
        let rules = super::Rules::builtin();
        if !super::allows_account(&rules, &ask) || !super::allows_region(&rules, &ask) {
            let ns = super::Namespace {
                name: obj.namespace().unwrap_or_default(),
                labels: Default::default(),
            };
            let refusal = super::admit(&ask, &[], &ns, &[], &BTreeSet::new())
                .expect_err("the built-in rules refuse another account or region");
            return Ok(Err(Invalid {
                reason: refusal.reason,
                message: refusal.message,
            }));
        }
        return Ok(Ok(Target {
            role: None,
            region: ask.region,
        }));
    };
    if !index.grants_listed.load(Ordering::Relaxed) {
        return Err(Error::Waiting(
            "waiting for the list of BedrockPrivateLinkGrants (is crds/bedrockprivatelinkgrant.yaml installed?)".into(),
        ));
    }
    let ns_name = obj.namespace().unwrap_or_default();
    let labels = match &ctx.namespaces {
        Some(store) => match store.get(&ObjectRef::<PartialObjectMeta<Namespace>>::new(&ns_name)) {
            Some(ns) => ns.labels().clone(),
            None => {
                return Err(Error::Waiting(format!(
                    "namespace {ns_name} is not in the namespace cache yet"
                )));
            }
        },
        None => Default::default(),
    };
    let namespace = super::Namespace {
        name: ns_name,
        labels,
    };
    let ask = Ask::of(&obj.spec, &home);
    let earlier = index.earlier(obj, &home);
    let grants = grants(grant_store);
    let rules = super::applicable(&grants, &namespace);
    // Which VPCs are the cluster's matters only for a VPC named in a spec in the operator's own
    // account and region (where the cluster's VPC is), under a rule that allows the cluster's
    // VPC but not every VPC: objects in other accounts never cost a look at the cluster's nodes.
    let names_vpc =
        (ask.vpc.is_some() && ask.account.is_none() && ask.home_region) || earlier.names_home_vpc();
    let rules_ask = rules.iter().any(|r| r.vpcs.cluster_vpc && !r.vpcs.any);
    let cluster_vpcs: BTreeSet<String> = if !(names_vpc && rules_ask) {
        BTreeSet::new()
    } else if let Some(v) = &ctx.config.default_vpc_id {
        BTreeSet::from([v.clone()])
    } else {
        ctx.cluster_network().await?.vpc_ids
    };
    let used = earlier.used(&rules, &cluster_vpcs);
    match super::judge(&ask, used, &namespace, &rules, &cluster_vpcs) {
        Ok(admitted) => {
            tracing::debug!(object = %obj.name_any(), namespace = %namespace.name, by = %admitted.by, endpoints = admitted.namespace_endpoints, "admitted");
            Ok(Ok(Target {
                role: admitted.account,
                region: ask.region,
            }))
        }
        Err(refusal) => {
            tracing::info!(object = %obj.name_any(), namespace = %namespace.name, rule = refusal.reason, "refused by the tenancy rules");
            let existing: Vec<&str> = obj
                .status
                .iter()
                .flat_map(|s| &s.endpoints)
                .map(|e| e.vpc_endpoint_id.as_str())
                .collect();
            let frozen = if existing.is_empty() {
                " Nothing was created in AWS.".to_string()
            } else {
                format!(
                    " Its existing endpoints ({}) stay as they are and are no longer updated until the object complies again; deleting the object {}.",
                    existing.join(", "),
                    match obj.spec.deletion_policy {
                        DeletionPolicy::Delete => "removes them",
                        DeletionPolicy::Retain => "leaves them in AWS (deletionPolicy Retain)",
                    }
                )
            };
            Ok(Err(Invalid {
                reason: refusal.reason,
                message: format!("{}{frozen}", refusal.message),
            }))
        }
    }
}

/// Where the orphan sweep looks: the operator's own account in its own region, and every
/// (account, region) a grant names (a grant without regions: the operator's region; without an
/// account: the operator's own). One target per (account, region): the first grant (by name)
/// naming an account lends its role.
pub fn sweep_targets(ctx: &Context) -> Vec<Target> {
    let home = ctx.pool.home_target();
    let grants = ctx.tenancy.grants.get().map(grants).unwrap_or_default();
    targets_of(&home, &grants)
}

/// `sweep_targets`, pure.
pub fn targets_of(home: &Target, grants: &[Grant]) -> Vec<Target> {
    let mut out: std::collections::BTreeMap<(Option<String>, String), Target> = Default::default();
    out.insert((None, home.region.clone()), home.clone());
    for g in grants {
        let regions = if g.rules.regions.is_empty() {
            std::slice::from_ref(&home.region)
        } else {
            g.rules.regions.as_slice()
        };
        for region in regions {
            let account = g.rules.account.as_ref().map(|a| a.account_id().to_string());
            out.entry((account, region.clone()))
                .or_insert_with(|| Target {
                    role: g.rules.account.clone(),
                    region: region.clone(),
                });
        }
    }
    out.into_values().collect()
}

/// Where a deleted object's endpoints are, to remove them: its region, and its account's
/// credentials. The operator's own account needs no grant; another account's role is taken
/// from a grant naming that account that selects the object's namespace, or (`any_grant`: the
/// status records endpoints or a group there) from any grant naming it: the admin's role for
/// that account, and deleting only ever touches what carries the object's own tags. `Err`: no
/// such grant.
pub fn cleanup_target(
    obj: &BedrockPrivateLink,
    ctx: &Context,
    any_grant: bool,
) -> Result<Target, String> {
    let home = home(ctx);
    let ask = Ask::of(&obj.spec, &home);
    let Some(account) = ask.account else {
        return Ok(Target {
            role: None,
            region: ask.region,
        });
    };
    let ns_name = obj.namespace().unwrap_or_default();
    let labels = ctx
        .namespaces
        .as_ref()
        .and_then(|s| s.get(&ObjectRef::<PartialObjectMeta<Namespace>>::new(&ns_name)))
        .map(|ns| ns.labels().clone())
        .unwrap_or_default();
    let namespace = super::Namespace {
        name: ns_name,
        labels,
    };
    let grants = ctx.tenancy.grants.get().map(grants).unwrap_or_default();
    let naming: Vec<&Grant> = grants
        .iter()
        .filter(|g| {
            g.rules
                .account
                .as_ref()
                .is_some_and(|a| a.account_id() == account)
        })
        .collect();
    let chosen = naming
        .iter()
        .find(|g| g.selects(&namespace))
        .or(naming.first().filter(|_| any_grant));
    match chosen.and_then(|g| g.rules.account.clone()) {
        Some(role) => Ok(Target {
            role: Some(role),
            region: ask.region,
        }),
        None => Err(format!(
            "no BedrockPrivateLinkGrant that selects this namespace names account {account}, so the operator cannot reach it to delete this object's endpoints. Restore a grant with account.roleArn in account {account}, or delete the endpoints yourself and remove the finalizer {}",
            crate::api::FINALIZER
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(name: &str, spec: serde_json::Value) -> Grant {
        let g: BedrockPrivateLinkGrant = serde_json::from_value(serde_json::json!({
            "apiVersion": "bedrock.privatelink.io/v1alpha1",
            "kind": "BedrockPrivateLinkGrant",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        Grant::from_resource(&g)
    }

    #[test]
    fn the_sweep_looks_in_every_granted_account_and_region_once() {
        let home = Target {
            role: None,
            region: "us-east-1".into(),
        };
        let b = "arn:aws:iam::111111111111:role/bpl";
        let grants = [
            grant("a", serde_json::json!({"namespaces": {"names": ["x"]}})),
            grant(
                "b",
                serde_json::json!({"namespaces": {"names": ["x"]},
                    "account": {"roleArn": b}, "regions": ["us-east-1", "us-west-2"]}),
            ),
            // The same account by another role: not swept twice.
            grant(
                "c",
                serde_json::json!({"namespaces": {"names": ["y"]},
                    "account": {"roleArn": "arn:aws:iam::111111111111:role/other"}}),
            ),
            grant(
                "d",
                serde_json::json!({"namespaces": {"names": ["z"]}, "regions": ["eu-west-1"]}),
            ),
        ];
        let got: Vec<(Option<String>, String)> = targets_of(&home, &grants)
            .into_iter()
            .map(|t| (t.role.map(|r| r.role_arn), t.region))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, "eu-west-1".to_string()),
                (None, "us-east-1".to_string()),
                (Some(b.to_string()), "us-east-1".to_string()),
                (Some(b.to_string()), "us-west-2".to_string()),
            ]
        );
        // No grant: the operator's own account and region only.
        assert_eq!(targets_of(&home, &[]), vec![home]);
    }
}
