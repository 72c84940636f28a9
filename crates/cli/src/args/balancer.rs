//! The balancer's flag group ([`BalancerArgs`]), shared by `balance` and
//! `scaler --with-balancer`.

use std::time::Duration;

use posture_core::balance::BalanceParams;
use posture_core::gpu::GpuSnapshot;
use posture_core::model::Millis;
use posture_gpu::config::parse_duration;
use posture_k8s::balancer::{BalanceMetrics, BalancerConfig, LoopTiming, Scope, run_balancer};
use posture_k8s::lease::LeaderGate;
use posture_k8s::workload::GPU_NODE_LABEL;
use tokio::sync::watch;

use super::lease::{BALANCER_LEASE, Election, LeaderElectionArgs};
use super::seed_or_clock;
use crate::admin::{Readiness, Shutdown};

/// Balancer settings, shared by `balance` and `scaler --with-balancer`.
#[derive(Clone, Debug, clap::Args)]
pub struct BalancerArgs {
    /// GPU usage threshold in percent: a node whose windowed average is above
    /// it is overloaded; a destination must stay at or under it. The scaler
    /// uses the same threshold for IsActive.
    #[arg(long, env = "GPU_THRESHOLD", default_value_t = posture_core::balance::DEFAULT_THRESHOLD)]
    pub threshold: f64,
    /// How often the current GPU usage is sampled into the window.
    #[arg(long, env = "BALANCE_SAMPLE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub sample_interval: Duration,
    /// Observation window: per-node usage is averaged over it, and one
    /// balancing decision is made per window.
    #[arg(long, env = "BALANCE_WINDOW", default_value = "30s", value_parser = parse_duration)]
    pub window: Duration,
    /// A workload moved less than this long ago is not moved again (read back
    /// from the `posture-farm.io/moved-at` annotation after a restart).
    #[arg(long, env = "BALANCE_COOLDOWN", default_value = "5m", value_parser = parse_duration)]
    pub cooldown: Duration,
    /// Seed of the random tie-break between equally loaded destinations
    /// (default: drawn at start and logged, so a run can be replayed).
    #[arg(long, env = "BALANCE_SEED")]
    pub seed: Option<u64>,
    /// Print the moves that would be made; change nothing in the cluster.
    #[arg(long, env = "BALANCE_DRY_RUN")]
    pub dry_run: bool,
    /// Stop after the first decision (with --dry-run: a one-shot report).
    #[arg(long, env = "BALANCE_ONCE")]
    pub once: bool,
    /// Namespace of the posture workloads (ScaledJobs, Jobs, pods).
    #[arg(
        long = "namespace",
        env = "POSTURE_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Label selector of posture workloads; ScaledJobs, Jobs and their pods
    /// must all carry it.
    #[arg(
        long = "selector",
        env = "BALANCE_SELECTOR",
        default_value = "app=posture"
    )]
    pub selector: String,
    /// Node label the written node affinity matches (`<key>=<node name>`, as
    /// set by `posture-farm label-nodes`).
    #[arg(long, env = "BALANCE_AFFINITY_LABEL", default_value = GPU_NODE_LABEL)]
    pub affinity_label: String,
    /// GPU load (percentage points) one analyzer is assumed to add; default:
    /// the node's average split evenly over the analyzers on it.
    #[arg(long, env = "BALANCE_WORKLOAD_LOAD")]
    pub workload_load: Option<f64>,
}

impl BalancerArgs {
    /// Checks value ranges clap cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=100.0).contains(&self.threshold),
            "--threshold must be within 0..=100, got {}",
            self.threshold
        );
        anyhow::ensure!(
            !self.sample_interval.is_zero(),
            "--sample-interval must be > 0"
        );
        anyhow::ensure!(
            self.window >= self.sample_interval,
            "--window ({:?}) must be at least --sample-interval ({:?})",
            self.window,
            self.sample_interval
        );
        if let Some(l) = self.workload_load {
            anyhow::ensure!(
                (0.0..=100.0).contains(&l),
                "--workload-load must be within 0..=100, got {l}"
            );
        }
        Ok(())
    }

    /// The library's balancer configuration, with `seed` drawn by the
    /// caller when `--seed` was not given (see [`seed_or_clock`]).
    pub fn config(&self, seed: u64) -> BalancerConfig {
        BalancerConfig {
            params: BalanceParams {
                threshold: self.threshold,
                cooldown: Millis::try_from(self.cooldown.as_millis()).unwrap_or(Millis::MAX),
            },
            seed,
            scope: Scope {
                namespace: self.namespace.clone(),
                selector: self.selector.clone(),
            },
            affinity_label: self.affinity_label.clone(),
            workload_load: self.workload_load,
            dry_run: self.dry_run,
            timing: LoopTiming {
                sample_interval: self.sample_interval,
                window: self.window,
                once: self.once,
            },
            instance: std::env::var("POD_NAME").ok(),
            leader: LeaderGate::unelected(),
        }
    }

    /// Starts leader election on the balancer's Lease (`--leader-elect`),
    /// except for `--dry-run` and `--once`, which change nothing or stop at
    /// once and so never compete with the acting balancer.
    pub fn election(
        &self,
        leader: &LeaderElectionArgs,
        client: &kube::Client,
        registry: &mut prometheus_client::registry::Registry,
        shutdown: Shutdown,
    ) -> anyhow::Result<Election> {
        if leader.leader_elect && (self.dry_run || self.once) {
            tracing::info!("--dry-run/--once: not taking part in leader election");
            return Ok(Election::unelected());
        }
        leader.start(client, BALANCER_LEASE, "balancer", registry, shutdown)
    }

    /// Runs the balancer until `shutdown` (or one decision with `--once`):
    /// validates the flags, draws a seed unless `--seed`, then runs
    /// [`posture_k8s::balancer::run_balancer`] on `usage`, deciding and
    /// moving only while `leader` says this replica leads.
    pub async fn run(
        &self,
        client: kube::Client,
        usage: watch::Receiver<GpuSnapshot>,
        metrics: BalanceMetrics,
        ready: Readiness,
        shutdown: Shutdown,
        leader: LeaderGate,
    ) -> anyhow::Result<()> {
        self.validate()?;
        let cfg = BalancerConfig {
            leader,
            ..self.config(seed_or_clock(self.seed))
        };
        run_balancer(
            client,
            cfg,
            usage,
            metrics,
            posture_gpu::now_millis,
            move || ready.set(true),
            shutdown.wait(),
        )
        .await;
        Ok(())
    }
}
