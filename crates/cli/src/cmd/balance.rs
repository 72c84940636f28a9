//! `posture-farm balance`: the GPU balancer. Observes per-node GPU usage over
//! a window, then moves at most one posture workload off each overloaded node
//! (pure decision in `posture_core::balance`, actions in
//! `posture_k8s::balance`). Also run in-process by `posture-farm scaler
//! --with-balancer`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use posture_core::balance::{BalanceParams, BalancePlan, Outcome};
use posture_core::gpu::GpuSnapshot;
use posture_core::model::Millis;
use posture_gpu::config::parse_duration;
use posture_k8s::balance::{
    Actuator, Balancer, DEFAULT_NODE_LABEL, LoopEvent, LoopTiming, Scope, run_loop,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use tokio::sync::watch;

use crate::admin::{self, Readiness, tokio_util_shutdown::Shutdown};
use crate::cmd::gpu::GpuSourceArgs;

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
    #[arg(long, env = "BALANCE_AFFINITY_LABEL", default_value = DEFAULT_NODE_LABEL)]
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
}

/// Flags of `posture-farm balance`.
#[derive(Debug, clap::Args)]
pub struct BalanceArgs {
    #[command(flatten)]
    pub balancer: BalancerArgs,
    #[command(flatten)]
    pub source: GpuSourceArgs,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "BALANCE_ADMIN_ADDR", default_value = "0.0.0.0:9102")]
    pub admin_addr: SocketAddr,
}

/// What an operator watches on the balancer.
#[derive(Clone, Debug, Default)]
pub struct BalanceMetrics {
    /// Decisions by outcome (stable, rebalancing, all_overloaded, no_data).
    loops: Family<Vec<(String, String)>, Counter>,
    /// Moves by workload kind and result (applied, failed, dry_run).
    moves: Family<Vec<(String, String)>, Counter>,
    /// Overloaded nodes left without a move, by reason.
    stuck: Family<Vec<(String, String)>, Counter>,
    /// Windowed average GPU usage per node at the last decision.
    average: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Overloaded nodes at the last decision.
    overloaded: Gauge,
    /// Failed cluster reads (the loop retries next window).
    discovery_errors: Counter,
}

impl BalanceMetrics {
    /// Registers under the `balance_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("balance");
        r.register("loops", "Balancing decisions by outcome", m.loops.clone());
        r.register(
            "moves",
            "Workload moves by kind and result",
            m.moves.clone(),
        );
        r.register(
            "stuck",
            "Overloaded nodes without a move, by reason",
            m.stuck.clone(),
        );
        r.register(
            "node_average_usage_percent",
            "Windowed average GPU usage per node at the last decision",
            m.average.clone(),
        );
        r.register(
            "overloaded_nodes",
            "Nodes above the threshold at the last decision",
            m.overloaded.clone(),
        );
        r.register(
            "discovery_errors",
            "Failed reads of the posture workloads from the API server",
            m.discovery_errors.clone(),
        );
        m
    }

    fn observe(&self, plan: &BalancePlan, averages: &BTreeMap<String, f64>) {
        self.loops
            .get_or_create(&vec![("outcome".into(), plan.outcome.as_str().into())])
            .inc();
        for (_, reason) in &plan.stuck {
            self.stuck
                .get_or_create(&vec![("reason".into(), reason.as_str().into())])
                .inc();
        }
        for (node, avg) in averages {
            self.average
                .get_or_create(&vec![("node".into(), node.clone())])
                .set(*avg);
        }
        self.overloaded
            .set(i64::try_from(plan.overloaded.len()).unwrap_or(i64::MAX));
    }

    fn moved(&self, kind: &str, result: &str) {
        self.moves
            .get_or_create(&vec![
                ("kind".into(), kind.into()),
                ("result".into(), result.into()),
            ])
            .inc();
    }
}

/// Runs the subcommand.
pub async fn run(args: BalanceArgs) -> anyhow::Result<()> {
    args.balancer.validate()?;
    let mut registry = Registry::default();
    let usage = args.source.spawn(&mut registry)?;
    let metrics = BalanceMetrics::register(&mut registry);
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let ready = Readiness::default();
    let shutdown = Shutdown::on_signals();
    let admin = admin::serve(args.admin_addr, registry, ready.clone(), shutdown.clone()).await?;
    let result = run_balancer(
        client,
        args.balancer,
        usage,
        metrics,
        ready,
        shutdown.clone(),
    )
    .await;
    shutdown.trigger();
    let _ = admin.await;
    result
}

/// A seed when none was given: the edge may draw entropy, the policy may not.
/// The seed is logged, so a run can be replayed with `--seed`.
fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Truncation is fine: any 64 bits of the clock make a usable seed.
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

fn now_millis() -> Millis {
    posture_gpu::now_millis()
}

/// The balancing loop: sample every `sample_interval`; once a full window is
/// observed, read the workloads, decide, act (or print with `--dry-run`),
/// then start a fresh window. Survives API server and Prometheus outages (a
/// failed read skips that decision). Returns on shutdown or after one
/// decision with `--once`.
pub async fn run_balancer(
    client: kube::Client,
    args: BalancerArgs,
    usage: watch::Receiver<GpuSnapshot>,
    metrics: BalanceMetrics,
    ready: Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    args.validate()?;
    let seed = args.seed.unwrap_or_else(seed_from_clock);
    let mut rng = StdRng::seed_from_u64(seed);
    let params = BalanceParams {
        threshold: args.threshold,
        cooldown: Millis::try_from(args.cooldown.as_millis()).unwrap_or(Millis::MAX),
    };
    let scope = Scope {
        namespace: args.namespace.clone(),
        selector: args.selector.clone(),
    };
    let actuator = Actuator::new(
        client,
        args.affinity_label.clone(),
        std::env::var("POD_NAME").ok(),
    );
    let mut balancer = Balancer::new(actuator, scope, params);
    balancer.dry_run = args.dry_run;
    balancer.workload_load = args.workload_load;
    tracing::info!(
        seed,
        threshold = args.threshold,
        window = ?args.window,
        sample_interval = ?args.sample_interval,
        cooldown = ?args.cooldown,
        dry_run = args.dry_run,
        namespace = %args.namespace,
        selector = %args.selector,
        "balancer started"
    );

    let timing = LoopTiming {
        sample_interval: args.sample_interval,
        window: args.window,
        once: args.once,
    };
    ready.set(true);
    run_loop(
        &mut balancer,
        usage,
        timing,
        &mut rng,
        now_millis,
        shutdown.wait(),
        |event| report(&args, &metrics, event),
    )
    .await;
    Ok(())
}

/// Logs, counts and (with `--dry-run`) prints what one loop did.
fn report(args: &BalancerArgs, metrics: &BalanceMetrics, event: LoopEvent<'_>) {
    let (averages, report) = match event {
        LoopEvent::Decided { averages, report } => (averages, report),
        LoopEvent::ReadFailed(err) => {
            metrics.discovery_errors.inc();
            tracing::warn!(
                error = error_chain(err),
                "could not read posture workloads; retrying next window"
            );
            return;
        }
    };
    for (unfinished, result) in &report.finished {
        if args.dry_run {
            println!(
                "would finish the move of {} to {}: delete jobs {:?}",
                unfinished.workload, unfinished.to, unfinished.jobs
            );
        } else if let Err(err) = result {
            tracing::warn!(workload = %unfinished.workload, error = error_chain(err), "could not finish an interrupted move");
        }
    }
    let plan = &report.plan;
    metrics.observe(plan, averages);
    log_plan(plan, averages, args.threshold);
    if args.dry_run {
        print_plan(plan, averages, args.threshold);
        for m in &plan.moves {
            metrics.moved(m.workload.kind.as_str(), "dry_run");
        }
    }
    for (m, result) in &report.applied {
        match result {
            Ok(()) => metrics.moved(m.workload.kind.as_str(), "applied"),
            Err(err) => {
                metrics.moved(m.workload.kind.as_str(), "failed");
                tracing::warn!(workload = %m.workload, from = %m.from, to = %m.to, error = error_chain(err), "move failed; it is re-planned next window");
            }
        }
    }
}

/// `error: cause: cause…`, for logs (the API's own message is in the sources).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn log_plan(plan: &BalancePlan, averages: &BTreeMap<String, f64>, threshold: f64) {
    match plan.outcome {
        Outcome::NoData => {
            tracing::warn!("no fresh GPU usage for any node in the window; nothing to decide")
        }
        Outcome::Stable => {
            tracing::info!(
                ?averages,
                threshold,
                "stable: every node at or under the threshold"
            )
        }
        Outcome::AllOverloaded => tracing::warn!(
            ?averages,
            threshold,
            "every node is overloaded: nowhere to move to, nothing moves"
        ),
        Outcome::Rebalancing => {
            for m in &plan.moves {
                tracing::info!(workload = %m.workload, from = %m.from, to = %m.to, load = m.load,
                    from_usage = m.from_usage, to_before = m.to_usage_before, to_after = m.to_usage_after, "planned move");
            }
            for (node, reason) in &plan.stuck {
                tracing::info!(%node, reason = reason.as_str(), "overloaded node left as is");
            }
        }
    }
}

/// `--dry-run` output: one line per node, then one per move.
fn print_plan(plan: &BalancePlan, averages: &BTreeMap<String, f64>, threshold: f64) {
    println!(
        "outcome: {} (threshold {threshold}%)",
        plan.outcome.as_str()
    );
    for (node, avg) in averages {
        let state = if *avg > threshold { "overloaded" } else { "ok" };
        println!("  node {node:<24} avg {avg:6.1}%  {state}");
    }
    for m in &plan.moves {
        println!(
            "would move {} from {} ({:.1}%) to {} ({:.1}% -> {:.1}%)",
            m.workload, m.from, m.from_usage, m.to, m.to_usage_before, m.to_usage_after
        );
    }
    for (node, reason) in &plan.stuck {
        println!("no move off {node}: {}", reason.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BalanceArgs,
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let w = Wrap::try_parse_from(["x", "--gpu-nodes", "agx"]).unwrap();
        let b = w.args.balancer;
        assert_eq!(b.threshold, 50.0);
        assert_eq!(b.sample_interval, Duration::from_secs(5));
        assert_eq!(b.window, Duration::from_secs(30));
        assert_eq!(b.cooldown, Duration::from_secs(300));
        assert_eq!(b.affinity_label, "gpu-node");
        assert!(!b.dry_run);
        b.validate().unwrap();
    }

    #[test]
    fn bad_values_are_refused() {
        let w =
            Wrap::try_parse_from(["x", "--threshold", "150", "--seed", "7", "--dry-run"]).unwrap();
        assert!(w.args.balancer.validate().is_err());
        let w = Wrap::try_parse_from(["x", "--window", "1s", "--sample-interval", "5s"]).unwrap();
        assert!(w.args.balancer.validate().is_err());
        assert!(Wrap::try_parse_from(["x", "--cooldown", "soon"]).is_err());
    }
}
