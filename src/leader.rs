//! Leader election on a coordination.k8s.io Lease: two replicas never reconcile at once, and a
//! replica that loses the lease stops reconciling at once (the process exits; Kubernetes
//! restarts it as a follower).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube_lease_manager::LeaseManagerBuilder;

use crate::aws::Ec2Pool;
use crate::cli::RunArgs;
use crate::reconcile::{self, Config, Context};
use crate::telemetry::{Health, Metrics};

pub async fn run_with_lease(
    client: kube::Client,
    ec2: Ec2Pool,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    config: Config,
    args: &RunArgs,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
    let duration = args.lease_seconds.max(2);
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    tracing::info!(%identity, lease = %args.lease_name, namespace = %args.lease_namespace, "waiting for the lease");
    let mut shutdown = Box::pin(shutdown);
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            changed = leading.changed() => changed?,
        }
    }
    tracing::info!(%identity, "acquired the lease; reconciling");
    health.leading.store(true, Ordering::Relaxed);

    let mut lost = leading.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {},
            _ = async { while lost.changed().await.is_ok() { if !*lost.borrow() { break; } } } => {
                tracing::error!("lost the lease; stopping");
            },
        }
    };
    let ctx = Context::new(client, ec2, metrics, config);
    let h = health.clone();
    reconcile::run(ctx, stop, move || h.synced.store(true, Ordering::Relaxed)).await;
    health.leading.store(false, Ordering::Relaxed);
    if !*leading.borrow() {
        // Give the runtime a moment to flush logs, then leave so no stale leader reconciles.
        tokio::time::sleep(Duration::from_millis(100)).await;
        return Err("lost the leader lease".into());
    }
    // Dropping the receivers makes the manager's task release the Lease (a get and a patch);
    // wait for it, bounded, so the next replica takes over at once instead of after expiry.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the lease"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not release the lease"),
        Ok(Err(e)) => tracing::warn!(error = %e, "lease task failed"),
        Err(_) => tracing::warn!("releasing the lease timed out; it expires on its own"),
    }
    Ok(())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bpl".to_string())
}
