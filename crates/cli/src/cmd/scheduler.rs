//! `posture-farm scheduler`: the custom Kubernetes scheduler. One loop
//! (`posture_k8s::runtime`), one profile chosen by `--profile`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use posture_core::Profile;
use posture_core::backoff::Backoff;
use posture_core::policy::RoundRobin;
use posture_gpu::config::parse_duration;
use posture_k8s::metrics::SchedulerMetrics;
use posture_k8s::runtime::{KubeActuator, PodScope, RuntimeConfig, Scheduler, watch_streams};
use prometheus_client::registry::Registry;

use crate::admin::{self, Readiness, tokio_util_shutdown::Shutdown};

/// Which scheduling policy the loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProfileKind {
    /// Next Ready node in order; per-node counts differ by at most one.
    RoundRobin,
}

/// Flags of `posture-farm scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Scheduling profile.
    #[arg(long, env = "SCHEDULER_PROFILE", value_enum, default_value = "round-robin")]
    pub profile: ProfileKind,

    /// `spec.schedulerName` this scheduler answers to.
    #[arg(long, env = "SCHEDULER_NAME", default_value = "rr-scheduler")]
    pub scheduler_name: String,

    /// Namespace whose pods are scheduled.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Schedule pods in every namespace (overrides --namespace).
    #[arg(long, env = "ALL_NAMESPACES")]
    pub all_namespaces: bool,

    /// Only pods matching this label selector; empty = every pod with our scheduler name.
    #[arg(long, env = "LABEL_SELECTOR", default_value = "app=posture")]
    pub label_selector: String,

    /// Round-robin node order, comma-separated (nodes not listed are never used).
    /// Default: every node, sorted by name.
    #[arg(long, env = "RR_NODE_ORDER", value_delimiter = ',')]
    pub node_order: Vec<String>,

    /// Bind requests in flight at most.
    #[arg(long, env = "BIND_CONCURRENCY", default_value_t = 64)]
    pub bind_concurrency: usize,

    /// First retry delay after a failed attempt (doubles up to --backoff-max).
    #[arg(long, env = "BACKOFF_INITIAL", default_value = "1s", value_parser = parse_duration)]
    pub backoff_initial: Duration,

    /// Longest retry delay.
    #[arg(long, env = "BACKOFF_MAX", default_value = "10s", value_parser = parse_duration)]
    pub backoff_max: Duration,

    /// Seed for the scheduler's randomness (backoff jitter, tie-breaks).
    #[arg(long, env = "SCHEDULER_SEED", default_value_t = 0)]
    pub seed: u64,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:10251")]
    pub admin_addr: SocketAddr,
}

impl SchedulerArgs {
    fn runtime_config(&self, scope: PodScope) -> RuntimeConfig {
        RuntimeConfig {
            scheduler_name: self.scheduler_name.clone(),
            namespace: (!self.all_namespaces).then(|| self.namespace.clone()),
            label_selector: Some(self.label_selector.clone()).filter(|s| !s.trim().is_empty()),
            scope,
            bind_concurrency: self.bind_concurrency.max(1),
            backoff: Backoff {
                initial: self.backoff_initial,
                max: self.backoff_max.max(self.backoff_initial),
                jitter: 0.1,
            },
            seed: self.seed,
            ..RuntimeConfig::default()
        }
    }
}

/// Runs the scheduler until SIGTERM.
pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let mut registry = Registry::default();
    let metrics = Arc::new(SchedulerMetrics::register(&mut registry));

    let (profile, scope): (Box<dyn Profile>, PodScope) = match args.profile {
        ProfileKind::RoundRobin => (
            Box::new(RoundRobin::new(args.node_order.clone())),
            PodScope::Pending,
        ),
    };
    let cfg = args.runtime_config(scope);

    let shutdown = Shutdown::on_signals();
    let ready = Readiness::default();
    let admin = admin::serve(args.admin_addr, registry, ready.clone(), shutdown.clone()).await?;

    let instance = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok());
    let (reports, reporter) = posture_k8s::events::spawn_reporter(
        client.clone(),
        &cfg.scheduler_name,
        instance,
        metrics.clone(),
    );
    let (nodes, pods) = watch_streams(&client, &cfg);
    let ready_flag = ready.clone();
    let scheduler = Scheduler::new(
        cfg,
        profile,
        Arc::new(KubeActuator {
            client: client.clone(),
        }),
        reports,
        metrics,
    )
    .on_ready(move |r| ready_flag.set(r));
    scheduler.run(nodes, pods, shutdown.clone().wait()).await;
    // The loop dropped its report sender: let the reporter drain, briefly.
    if tokio::time::timeout(Duration::from_secs(5), reporter).await.is_err() {
        tracing::warn!("some events were not written before exit");
    }
    shutdown.trigger();
    let _ = admin.await;
    Ok(())
}
