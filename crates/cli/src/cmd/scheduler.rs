//! `posture-farm scheduler`: the custom Kubernetes scheduler. One loop
//! (`posture_k8s::scheduler`), one profile chosen by `--profile`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kube::api::DynamicObject;
use posture_core::Profile;
use posture_core::backoff::Backoff;
use posture_core::gpu::GpuSnapshot;
use posture_core::policy::RoundRobin;
use posture_core::policy::gpu_least_loaded::GpuLeastLoaded;
use posture_core::policy::priority::{CapacityMode, PriorityConfig, PriorityProfile};
use posture_gpu::config::parse_duration;
use posture_k8s::lease::LeaderGate;
use posture_k8s::scheduler::events::spawn_reporter;
use posture_k8s::scheduler::fence::FencedActuator;
use posture_k8s::scheduler::gpu_state::GpuStateStore;
use posture_k8s::scheduler::handover::{DEFAULT_RR_CONFIGMAP, HandOver};
use posture_k8s::scheduler::metrics::SchedulerMetrics;
use posture_k8s::scheduler::preempt::client_without_retry;
use posture_k8s::scheduler::{
    EventStream, KubeActuator, PodScope, RuntimeConfig, Scheduler, podgroup, podgroup_stream,
    watch_streams,
};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::admin::{self, Readiness, Shutdown};
use crate::args::{GpuProfileArgs, GpuSourceArgs, LeaderElectionArgs};

/// Which scheduling policy the loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProfileKind {
    /// Next Ready node in order; per-node counts differ by at most one.
    RoundRobin,
    /// Least GPU usage (from Prometheus) under a threshold; bursts spread by in-flight estimates.
    GpuLeastLoaded,
    /// Highest priority first, preemption of lower-priority pods, all-or-nothing gangs.
    Priority,
}

/// Flags of `posture-farm scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Scheduling profile.
    #[arg(
        long,
        env = "SCHEDULER_PROFILE",
        value_enum,
        default_value = "round-robin"
    )]
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

    /// Round-robin with --leader-elect: ConfigMap (in the scheduler's
    /// namespace) holding the last node handed out, so a new leader
    /// continues the order.
    #[arg(long, env = "RR_STATE_CONFIGMAP", default_value = DEFAULT_RR_CONFIGMAP)]
    pub rr_state_configmap: String,

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

    #[command(flatten, next_help_heading = "GPU profile")]
    pub gpu_profile: GpuProfileArgs,

    #[command(
        flatten,
        next_help_heading = "GPU usage source (gpu-least-loaded profile)"
    )]
    pub gpu: GpuSourceArgs,

    /// priority: how capacity is counted (`one-per-node` or `resource-fit`).
    #[arg(
        long,
        env = "CAPACITY_MODE",
        default_value = "one-per-node",
        help_heading = "Priority profile"
    )]
    pub capacity: CapacityMode,

    /// priority: never evict lower-priority pods.
    #[arg(long, env = "NO_PREEMPTION", help_heading = "Priority profile")]
    pub no_preemption: bool,

    /// Namespaces (comma-separated; `*` = all) where a pod's `priority` annotation
    /// counts. Elsewhere spec.priority (its PriorityClass) decides and an annotation
    /// only earns a Warning event: anyone who may create pods could otherwise claim
    /// the highest priority and preempt everyone.
    #[arg(
        long,
        env = "PRIORITY_ANNOTATION_NAMESPACES",
        value_delimiter = ',',
        help_heading = "Priority profile"
    )]
    pub priority_annotation_namespaces: Vec<String>,

    /// priority: a gang without `pod-group-min-member` is the members pending once
    /// the newest is this old.
    #[arg(long, env = "GANG_SETTLE", default_value = "5s", value_parser = parse_duration, help_heading = "Priority profile")]
    pub gang_settle: Duration,

    #[command(flatten, next_help_heading = "Leader election")]
    pub leader: LeaderElectionArgs,
}

impl SchedulerArgs {
    fn runtime_config(&self, scope: PodScope) -> anyhow::Result<RuntimeConfig> {
        let cfg = RuntimeConfig {
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
            priority_annotation_namespaces: self
                .priority_annotation_namespaces
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            ..RuntimeConfig::default()
        };
        // A selector the API server would refuse must fail here, clearly.
        cfg.reader().context("--label-selector")?;
        Ok(cfg)
    }
}

/// The chosen profile, the pods its loop watches, and (GPU profile) the usage feed.
struct ChosenProfile {
    profile: Box<dyn Profile>,
    scope: PodScope,
    gpu: Option<watch::Receiver<GpuSnapshot>>,
}

/// Builds the profile `--profile` names (the GPU one restores its last
/// choice from the ConfigMap and starts the Prometheus source; with
/// `--leader-elect` round-robin keeps its position in a ConfigMap too, and
/// each new leader reads it when its term starts).
async fn choose_profile(
    args: &SchedulerArgs,
    client: &kube::Client,
    registry: &mut Registry,
    gate: &LeaderGate,
) -> anyhow::Result<ChosenProfile> {
    Ok(match args.profile {
        ProfileKind::RoundRobin => {
            let rr = RoundRobin::new(args.node_order.clone());
            let profile: Box<dyn Profile> = if args.leader.leader_elect {
                let store = GpuStateStore::new(
                    client.clone(),
                    client.default_namespace(),
                    &args.rr_state_configmap,
                );
                Box::new(HandOver::start(rr, store, gate.clone()))
            } else {
                Box::new(rr)
            };
            ChosenProfile {
                profile,
                // Every bound pod counts against its node (resource fit).
                scope: PodScope::All,
                gpu: None,
            }
        }
        ProfileKind::GpuLeastLoaded => {
            let gpu = Some(args.gpu.spawn(registry)?);
            let profile = GpuLeastLoaded::new(args.gpu_profile.config(args.seed)?);
            // The last chosen node survives restarts in a ConfigMap (preferred on ties).
            let namespace = args
                .gpu_profile
                .gpu_state_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            let store = GpuStateStore::new(
                client.clone(),
                &namespace,
                &args.gpu_profile.gpu_state_configmap,
            );
            let profile = HandOver::start(profile, store, gate.clone());
            ChosenProfile {
                profile: Box::new(profile),
                scope: PodScope::All,
                gpu,
            }
        }
        ProfileKind::Priority => {
            let config = PriorityConfig {
                capacity: args.capacity,
                preemption: !args.no_preemption,
                gang_settle: args.gang_settle,
                ..PriorityConfig::default()
            };
            let scope = match args.capacity {
                CapacityMode::OnePerNode => PodScope::Ours,
                CapacityMode::ResourceFit => PodScope::All,
            };
            ChosenProfile {
                profile: Box::new(PriorityProfile::new(config)),
                scope,
                gpu: None,
            }
        }
    })
}

/// The priority profile's extra I/O: a client without automatic retries
/// (evictions refused by a PodDisruptionBudget, 429, must come back at
/// once) and the PodGroup watch where the CRD exists. Other profiles use
/// `client` and no PodGroups.
async fn priority_io(
    args: &SchedulerArgs,
    client: &kube::Client,
    namespace: Option<&str>,
) -> anyhow::Result<(kube::Client, Option<EventStream<DynamicObject>>)> {
    if args.profile != ProfileKind::Priority {
        return Ok((client.clone(), None));
    }
    let config = kube::Config::infer()
        .await
        .context("reading the Kubernetes client configuration")?;
    let actuator_client = client_without_retry(config)?;
    let podgroups = match podgroup::list(client, namespace).await {
        Ok(Some(_)) => Some(podgroup_stream(client, namespace)),
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(%err, "cannot read PodGroups; gang sizes from annotations only");
            None
        }
    };
    Ok((actuator_client, podgroups))
}

/// Runs the scheduler until SIGTERM.
pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let mut registry = Registry::default();
    let metrics = Arc::new(SchedulerMetrics::register(&mut registry));
    let shutdown = Shutdown::on_signals();
    // Replicas share the Lease named after the scheduler; one binds.
    let election = args.leader.start(
        &client,
        &args.scheduler_name,
        "scheduler",
        &mut registry,
        shutdown.clone(),
    )?;
    let gate = election.gate();
    let chosen = choose_profile(&args, &client, &mut registry, &gate).await?;
    let cfg = args.runtime_config(chosen.scope)?;

    let ready = Readiness::default();
    ready.set_leadership(gate.clone());
    let admin = admin::serve(args.admin_addr, registry, ready.clone(), shutdown.clone()).await?;

    let instance = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok());
    // Events and condition patches on their own client (connection pool),
    // so they never hold a connection a bind could use.
    let events_client = kube::Client::try_from(
        kube::Config::infer()
            .await
            .context("reading the Kubernetes client configuration")?,
    )
    .context("building the Events client")?;
    let (reports, reporter) = spawn_reporter(
        events_client,
        &cfg.scheduler_name,
        instance,
        metrics.clone(),
    );
    let (nodes, pods) = watch_streams(&client, &cfg);
    let (actuator_client, podgroups) =
        priority_io(&args, &client, cfg.namespace.as_deref()).await?;
    let ready_flag = ready.clone();
    let actuator = Arc::new(KubeActuator {
        client: actuator_client,
    });
    let scheduler = Scheduler::new(
        cfg,
        chosen.profile,
        Arc::new(FencedActuator::new(actuator, gate.clone())),
        reports,
        metrics,
    )
    .with_leadership(gate)
    .on_ready(move |r| ready_flag.set(r));
    let scheduler = match chosen.gpu {
        Some(rx) => scheduler.with_gpu(rx),
        None => scheduler,
    };
    let scheduler = match podgroups {
        Some(events) => scheduler.with_podgroups(events),
        None => scheduler,
    };
    scheduler.run(nodes, pods, shutdown.clone().wait()).await;
    // In-flight binds are done: hand the lease over at once.
    election.release().await;
    // The loop dropped its report sender: let the reporter drain, briefly.
    if tokio::time::timeout(Duration::from_secs(5), reporter)
        .await
        .is_err()
    {
        tracing::warn!("some events were not written before exit");
    }
    shutdown.trigger();
    let _ = admin.await;
    Ok(())
}
