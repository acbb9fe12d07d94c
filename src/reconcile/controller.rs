//! The controller: the watches (objects, our ConfigMaps, Namespaces, Nodes), their stores, and
//! one kube-runtime Controller per watched namespace (or one for all), running `reconcile`.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::api::PartialObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::poll::Trigger;
use super::{Context, error_policy, reconcile};
use crate::api::{BedrockPrivateLink, BedrockPrivateLinkGrant};
use crate::publish;

/// kubectl apply's annotation: a second copy of the spec.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

type Triggers<K> = Vec<futures::channel::mpsc::Receiver<K>>;

/// Objects per page of the initial lists (the API server's default page is 500). A page is
/// held as text and then parsed whole, managedFields and kubectl's annotation included, before
/// the reflector strips them: with 1000 objects and their ConfigMaps, pages of 500 raised the
/// restart's peak memory by several MiB over the steady state. Pages of 100 cost a few more
/// list requests at start (about 20 for 1000 objects) and nothing afterwards.
const LIST_PAGE: u32 = 100;

/// Runs `stream` (a watch, with its reflector) and hands each object it touches to `n`
/// receivers, one per controller. The channels are bounded: the watch waits for the
/// controllers. A receiver that is gone (its controller stopped) is skipped.
pub(crate) fn fan_out<K: Clone + Send + 'static>(
    stream: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    n: usize,
) -> Triggers<K> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| futures::channel::mpsc::channel::<K>(64))
        .unzip();
    tokio::spawn(stream.fold(senders, |mut senders, obj| async move {
        if let Ok(obj) = obj {
            for tx in &mut senders {
                let _ = futures::SinkExt::send(tx, obj.clone()).await;
            }
        }
        senders
    }));
    receivers
}

/// One watch of our ConfigMaps feeds both the store and every controller (a ConfigMap changed
/// or deleted by someone else queues its owner): no second watch, no second copy of each event.
fn watch_config_maps(
    client: &Client,
    controllers: usize,
) -> (publish::ConfigMaps, Triggers<ConfigMap>) {
    let selector = format!("app.kubernetes.io/managed-by={}", publish::MANAGED_BY);
    let (store, writer) = reflector::store();
    let maps = publish::ConfigMaps::new(store);
    let triggers = fan_out(
        reflector::reflector(
            writer,
            // With backoff: without it a watch error (the API server restarting) is retried at
            // once, in a tight loop of connection attempts until the API server is back.
            watcher(
                Api::<ConfigMap>::all(client.clone()),
                watcher::Config::default()
                    .labels(&selector)
                    .page_size(LIST_PAGE),
            )
            .default_backoff()
            .modify(|cm| {
                cm.managed_fields_mut().clear();
            }),
        )
        // After the reflector: the store already holds what the event brought.
        .inspect({
            let maps = maps.clone();
            move |_| maps.changed()
        })
        .touched_objects(),
        controllers,
    );
    (maps, triggers)
}

type NamespaceMeta = PartialObjectMeta<Namespace>;

/// Likewise the Namespaces' metadata: where copies may go, and a namespace gaining or losing
/// labels changes where they belong.
fn watch_namespaces(
    client: &Client,
    controllers: usize,
) -> (Store<NamespaceMeta>, Triggers<NamespaceMeta>) {
    let (store, writer) = reflector::store();
    let triggers = fan_out(
        reflector::reflector(
            writer,
            watcher(
                Api::<NamespaceMeta>::all(client.clone()),
                watcher::Config::default().page_size(LIST_PAGE),
            )
            .default_backoff()
            .modify(|ns| {
                ns.managed_fields_mut().clear();
            }),
        )
        .touched_objects(),
        controllers,
    );
    (store, triggers)
}

/// The Nodes, of which only spec.providerID matters (where the cluster's VPC and subnets are):
/// read from this store instead of a list per reconcile.
fn watch_nodes(client: &Client) -> Store<Node> {
    let (store, writer) = reflector::store();
    tokio::spawn(
        reflector::reflector(
            writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .modify(|n| {
                    n.managed_fields_mut().clear();
                    n.metadata.annotations = None;
                    n.metadata.labels = None;
                    n.status = None;
                }),
        )
        .for_each(|_| futures::future::ready(())),
    );
    store
}

/// Polls until the store has listed everything (Store::wait_until_ready wakes only the task
/// that polled it last, and the Controller waits on the same stores).
async fn synced<K: Resource + Clone + 'static>(store: &Store<K>)
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let tick = Duration::from_millis(200);
    while tokio::time::timeout(tick, store.wait_until_ready())
        .await
        .is_err()
    {}
}

type Guarded = DeserializeGuard<BedrockPrivateLink>;

/// Where a controller's objects are queued from besides their own watch.
struct Sources {
    config_maps: futures::channel::mpsc::Receiver<ConfigMap>,
    namespaces: futures::channel::mpsc::Receiver<NamespaceMeta>,
    grants: futures::channel::mpsc::Receiver<DeserializeGuard<BedrockPrivateLinkGrant>>,
    /// Objects whose endpoints the VPC poller saw change (poll.rs).
    polls: futures::channel::mpsc::UnboundedReceiver<Trigger>,
    /// Counts every change to the store (the tenancy gate rereads a namespace only then).
    changes: Arc<std::sync::atomic::AtomicU64>,
}

/// One controller over `api`'s objects, queued also by our ConfigMaps, by Namespaces that
/// concern an object, by grants and by the VPC poller.
fn controller(api: Api<Guarded>, sources: Sources, concurrency: u16) -> Controller<Guarded> {
    // The store keeps every object; their managedFields (and kubectl's copy of the last
    // applied spec) are most of their size and nothing here reads them.
    let (reader, writer) = reflector::store();
    let objects = reflector::reflector(
        writer,
        watcher(
            api,
            watcher::Config::default()
                .any_semantic()
                .page_size(LIST_PAGE),
        )
        .modify(|o| {
            o.managed_fields_mut().clear();
            o.annotations_mut().remove(LAST_APPLIED);
        }),
    )
    // After the reflector: the store already holds what the event brought.
    .inspect({
        let changes = sources.changes.clone();
        move |_| {
            changes.fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    })
    .applied_objects();
    let controller = Controller::for_stream(objects, reader)
        .owns_stream(sources.config_maps.map(Ok))
        .reconcile_on(sources.polls);
    let objects = controller.store();
    let all_objects = controller.store();
    controller
        .watches_stream(sources.namespaces.map(Ok), move |ns| {
            objects
                .state()
                .into_iter()
                .filter(|g| {
                    g.0.as_ref().is_ok_and(|o| {
                        publish::concerns_namespace(o, &ns)
                            // Tenancy (issue 16): grants select namespaces by label.
                            || o.namespace() == Some(ns.name_any())
                    })
                })
                .map(|g| reflector::ObjectRef::from_obj(&*g))
                .collect::<Vec<_>>()
        })
        // Tenancy (issue 16): every grant change queues every object again.
        .watches_stream(sources.grants.map(Ok), move |_grant| {
            crate::tenancy::gate::all_objects(&all_objects)
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
}

/// Drops what memory, the shared caches and the tenancy ledger hold past its use, once per TTL.
fn spawn_pruner(ctx: Arc<Context>) {
    tokio::spawn(async move {
        let every = ctx.memory.ttl();
        loop {
            tokio::time::sleep(every).await;
            ctx.memory.prune();
            ctx.shared.prune().await;
            ctx.tenancy.prune();
        }
    });
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Context,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_synced: impl FnOnce() + Send + 'static,
) {
    let client = ctx.client.clone();
    let namespaces = ctx.config.watch_namespaces.clone();
    let concurrency = ctx.config.concurrency;
    let controllers = namespaces.len().max(1);
    let (cm_store, mut cm_triggers) = watch_config_maps(&client, controllers);
    let (ns_store, mut ns_triggers) = watch_namespaces(&client, controllers);
    let node_store = watch_nodes(&client);
    // Tenancy (issue 16): the grant watch, one trigger stream per controller.
    let mut grant_triggers = ctx.tenancy.watch_grants(client.clone(), controllers);
    let mut ctx = ctx;
    ctx.config_maps = Some(cm_store.clone());
    ctx.namespaces = Some(ns_store.clone());
    ctx.nodes = Some(node_store.clone());
    let ctx = Arc::new(ctx);
    spawn_pruner(ctx.clone());
    let apis: Vec<(Api<Guarded>, Option<String>)> = if namespaces.is_empty() {
        vec![(Api::all(client.clone()), None)]
    } else {
        namespaces
            .iter()
            .map(|ns| (Api::namespaced(client.clone(), ns), Some(ns.clone())))
            .collect()
    };
    let shutdown = Box::pin(shutdown).shared();
    let mut streams = Vec::new();
    let mut stores = Vec::new();
    for (api, namespace) in apis {
        let sources = Sources {
            config_maps: cm_triggers.pop().expect("one channel per controller"),
            namespaces: ns_triggers.pop().expect("one channel per controller"),
            grants: grant_triggers.pop().expect("one channel per controller"),
            polls: ctx.poller.subscribe(namespace),
            changes: ctx.tenancy.object_changes(),
        };
        let c = controller(api, sources, concurrency).graceful_shutdown_on(shutdown.clone());
        stores.push(c.store());
        streams.push(
            c.run(reconcile, error_policy, ctx.clone())
                .for_each(|res| async move {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "controller event");
                    }
                })
                .boxed(),
        );
    }
    ctx.poller.start();
    // Only here, under the lease when leader election is on: one sweeper per cluster.
    let orphans = tokio::spawn(super::orphans::run(ctx.clone()));
    // Tenancy (issue 16): the gate counts a namespace's endpoints in these stores.
    ctx.tenancy.set_objects(stores.clone());
    let ready_ctx = ctx.clone();
    tokio::spawn(async move {
        // /readyz stays 503 until every store has listed.
        for s in &stores {
            synced(s).await;
        }
        synced(cm_store.store()).await;
        synced(&ns_store).await;
        synced(&node_store).await;
        while !ready_ctx.tenancy.listed() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        on_synced();
    });
    futures::future::join_all(streams).await;
    orphans.abort();
    ctx.poller.stop();
}
