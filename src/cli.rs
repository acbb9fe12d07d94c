//! Command line: `run` (the controller), `crd` (the CRD YAML from the Rust types) and `probe`
//! (checks that Bedrock calls take the private path; the chart's `helm test`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::aws::{Ec2Options, Ec2Pool};
use crate::reconcile::{self, Config, Context};
use crate::telemetry::{self, Health, Metrics};

#[derive(Parser, Debug)]
#[command(
    name = "bedrock-privatelink-operator",
    version,
    about = "Private access to Amazon Bedrock for Kubernetes workloads"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinition YAML: every CRD (one YAML document each), or one.
    Crd {
        #[arg(value_enum)]
        which: Option<CrdName>,
    },
    /// Check that a Bedrock call from here goes through the interface endpoint (exit 0) or not.
    Probe(Box<crate::probe::ProbeArgs>),
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrdName {
    /// The namespaced BedrockPrivateLink (crds/bedrockprivatelink.yaml).
    Bedrockprivatelinks,
    /// The cluster-scoped BedrockPrivateLinkGrant (crds/bedrockprivatelinkgrant.yaml).
    Bedrockprivatelinkgrants,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// AWS region (default: the standard AWS chain: AWS_REGION, profile, IMDS).
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// EC2 endpoint override (an emulator in tests). AWS_ENDPOINT_URL_EC2 works too.
    #[arg(long, env = "BPL_EC2_ENDPOINT_URL")]
    pub ec2_endpoint_url: Option<String>,
    /// STS endpoint override (an emulator in tests), for AssumeRole into granted accounts and
    /// GetCallerIdentity. AWS_ENDPOINT_URL_STS works too. While EC2 goes to an override and STS
    /// has none, the operator never calls STS (a test rig never reaches AWS).
    #[arg(long, env = "BPL_STS_ENDPOINT_URL")]
    pub sts_endpoint_url: Option<String>,
    /// Namespaces to watch, comma separated; empty: all.
    #[arg(long, env = "BPL_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// How often every object is checked for drift in AWS.
    #[arg(long, env = "BPL_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// How soon an object waiting for AWS without the VPC poller (an object being deleted, say)
    /// is looked at again.
    #[arg(long, env = "BPL_PENDING_REQUEUE_MS", default_value_t = 2000)]
    pub pending_requeue_ms: u64,
    /// Check every this many seconds (and at every reconcile) that the names workloads use
    /// resolve to the endpoint's addresses: the PrivatePathVerified condition. 0: off. Only
    /// meaningful where the operator resolves names as the workloads do (its pod in the
    /// cluster: the chart turns it on).
    #[arg(long, env = "BPL_VERIFY_PATH_SECONDS", default_value_t = 0)]
    pub verify_path_seconds: u64,
    /// The longest interval between polls of a VPC's endpoints (one describe for all objects in
    /// it) while an endpoint in it is pending: from 1 s, doubling while nothing changes.
    #[arg(long, env = "BPL_PENDING_POLL_MAX_MS", default_value_t = 2000)]
    pub pending_poll_max_ms: u64,
    /// How often each VPC's endpoints are checked for drift (deleted, failed, policy, groups,
    /// subnets changed out of band) by one describe per VPC; 0: only at the resync.
    #[arg(long, env = "BPL_DRIFT_SWEEP_SECONDS", default_value_t = 20)]
    pub drift_sweep_seconds: u64,
    /// How often freed heap memory is handed back to the kernel (glibc's malloc_trim: after a
    /// burst of reconciles the allocator would otherwise keep it); 0: never.
    #[arg(long, env = "BPL_HEAP_TRIM_SECONDS", default_value_t = 5)]
    pub heap_trim_seconds: u64,
    /// Objects reconciled at once.
    #[arg(long, env = "BPL_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
    #[arg(long, env = "BPL_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// tracing EnvFilter syntax, e.g. info or bpl=debug.
    #[arg(long, env = "BPL_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "BPL_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Reconcile only while holding a coordination.k8s.io Lease.
    #[arg(long, env = "BPL_LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,
    #[arg(
        long,
        env = "BPL_LEASE_NAME",
        default_value = "bedrock-privatelink-operator"
    )]
    pub lease_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    #[arg(long, env = "BPL_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// VPC to use when an object names none (instead of discovering it from the Nodes).
    #[arg(long, env = "BPL_DEFAULT_VPC_ID")]
    pub default_vpc_id: Option<String>,
    /// Client-side limiter following AWS's EC2 request-token buckets.
    #[arg(long, env = "BPL_EC2_RATE_LIMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub ec2_rate_limit: bool,
    /// This cluster's identity, tagged on every AWS resource (bedrock.privatelink.io/cluster):
    /// a resource belongs to an object only if it carries this cluster and the object's uid.
    /// Default: the uid of the kube-system namespace, read at start (stable for the life of the
    /// cluster). Set it when two clusters may share a kube-system uid (one restored from the
    /// other's etcd backup), or to keep the identity across a cluster rebuild.
    #[arg(long, env = "BPL_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// How often resources tagged with this cluster are checked for an owner that no longer
    /// exists (an object whose finalizer never ran); 0: never.
    #[arg(long, env = "BPL_ORPHAN_SWEEP_SECONDS", default_value_t = 600)]
    pub orphan_sweep_seconds: u64,
    /// How long an orphan is left before the sweep removes it (its object may yet come back,
    /// e.g. a namespace being restored).
    #[arg(long, env = "BPL_ORPHAN_GRACE_SECONDS", default_value_t = 3600)]
    pub orphan_grace_seconds: u64,
    /// Attempts per EC2 call (the SDK's standard retry mode, with backoff and jitter).
    #[arg(long, env = "BPL_EC2_MAX_ATTEMPTS", default_value_t = 5)]
    pub ec2_max_attempts: u32,
}

pub fn crd_yaml() -> String {
    serde_yaml::to_string(&crate::api::crd()).expect("CRD serializes")
}

pub fn grant_crd_yaml() -> String {
    serde_yaml::to_string(&crate::api::grant_crd()).expect("CRD serializes")
}

/// Every CRD, as a multi-document stream (`crd | kubectl apply -f -`).
pub fn all_crds_yaml() -> String {
    format!("{}---\n{}", crd_yaml(), grant_crd_yaml())
}

pub async fn execute(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Crd { which } => {
            let yaml = match which {
                None => all_crds_yaml(),
                Some(CrdName::Bedrockprivatelinks) => crd_yaml(),
                Some(CrdName::Bedrockprivatelinkgrants) => grant_crd_yaml(),
            };
            print!("{yaml}");
            Ok(())
        }
        Command::Run(args) => run(*args).await,
        Command::Probe(args) => {
            let report = crate::probe::probe(&args).await?;
            print!("{}", report.render());
            std::process::exit(report.exit_code().into());
        }
    }
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    telemetry::init_logging(&args.log_format, &args.log_level);
    if args.heap_trim_seconds > 0 {
        telemetry::heap::spawn_trimmer(Duration::from_secs(args.heap_trim_seconds));
    }
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    health
        .needs_lease
        .store(args.leader_elect, Ordering::Relaxed);
    tokio::spawn({
        let (m, h, addr) = (metrics.clone(), health.clone(), args.http_addr);
        async move {
            if let Err(e) = telemetry::http::serve(addr, m, h).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }
    });

    // The default client stack plus a layer that counts requests (bpl_kube_requests_total).
    let client = kube::client::ClientBuilder::try_from(kube::Config::infer().await?)?
        .with_layer(&telemetry::kube_requests::CountRequestsLayer(
            metrics.clone(),
        ))
        .build();
    let ec2 = Ec2Pool::connect(
        Ec2Options {
            region: args.region.clone(),
            endpoint_url: args.ec2_endpoint_url.clone(),
            sts_endpoint_url: args.sts_endpoint_url.clone(),
            rate_limit: args.ec2_rate_limit,
            max_attempts: args.ec2_max_attempts.max(1),
        },
        metrics.clone(),
    )
    .await;
    let cluster_id = cluster_identity(&client, args.cluster_id.as_deref()).await?;
    tracing::info!(region = %ec2.home().region, account = ec2.home().account.as_deref().unwrap_or("unknown"), rate_limit = args.ec2_rate_limit, cluster = %cluster_id, "starting");
    let config = Config {
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        pending_requeue: Duration::from_millis(args.pending_requeue_ms.max(50)),
        pending_poll_max: Duration::from_millis(args.pending_poll_max_ms.max(50)),
        drift_sweep: (args.drift_sweep_seconds > 0)
            .then(|| Duration::from_secs(args.drift_sweep_seconds)),
        default_vpc_id: args.default_vpc_id.clone(),
        watch_namespaces: args
            .watch_namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect(),
        concurrency: args.concurrency.max(1),
        path_check: (args.verify_path_seconds > 0)
            .then(|| Duration::from_secs(args.verify_path_seconds)),
        cluster_id,
        orphan_sweep: (args.orphan_sweep_seconds > 0)
            .then(|| Duration::from_secs(args.orphan_sweep_seconds)),
        orphan_grace: Duration::from_secs(args.orphan_grace_seconds),
    };

    let shutdown = shutdown_signal();
    if args.leader_elect {
        crate::leader::run_with_lease(client, ec2, metrics, health, config, &args, shutdown).await
    } else {
        health.leading.store(true, Ordering::Relaxed);
        let ctx = Context::new(client, ec2, metrics, config);
        let h = health.clone();
        reconcile::run(ctx, shutdown, move || {
            h.synced.store(true, Ordering::Relaxed)
        })
        .await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The cluster identity: the flag, else the kube-system namespace's uid (unique per cluster,
/// unchanged for its life; kube-system cannot be deleted).
async fn cluster_identity(
    client: &kube::Client,
    flag: Option<&str>,
) -> Result<String, Box<dyn std::error::Error>> {
    if let Some(id) = flag.map(str::trim).filter(|s| !s.is_empty()) {
        let valid = id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
        if !valid {
            return Err(format!(
                "--cluster-id {id:?}: use at most 128 letters, digits, '-', '_', '.', ':' or '/'"
            )
            .into());
        }
        return Ok(id.to_string());
    }
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let ns = api.get("kube-system").await.map_err(|e| {
        format!(
            "reading the kube-system namespace for the cluster identity (or set --cluster-id): {e}"
        )
    })?;
    ns.metadata
        .uid
        .ok_or_else(|| "the kube-system namespace has no uid; set --cluster-id".into())
}

/// SIGTERM or Ctrl-C: stop taking work, let in-flight reconciles finish.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; finishing in-flight reconciles");
}
