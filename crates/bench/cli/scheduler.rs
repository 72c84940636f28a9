//! `posture-farm bench scheduler`: schedules a large synthetic cluster (by
//! default 5,000 nodes and 10,000 pending pods of mixed priorities, a tenth
//! of them in gangs) with one profile, the way the scheduler loop does, and
//! prints decisions per second, p50/p95/p99 decision latency and peak memory.
//! The builder and runner live in `posture-bench`, shared with the criterion
//! benches; API calls are not part of the measurement.

use anyhow::Context as _;
use posture_bench::{BenchProfile, SyntheticSpec, run_scheduler_bench, synthetic_cluster};
use posture_core::policy::priority::CapacityMode;

/// Which profile the benchmark drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileArg {
    /// Priority, preemption and gangs (`--capacity` picks the capacity mode).
    Priority,
    /// Round-robin over every node.
    RoundRobin,
}

/// Flags of this benchmark.
#[derive(Debug, clap::Args)]
pub struct BenchSchedulerArgs {
    /// Nodes in the synthetic cluster.
    #[arg(long, default_value_t = 5_000, env = "POSTURE_BENCH_NODES")]
    pub nodes: usize,
    /// Pending pods to schedule.
    #[arg(long, default_value_t = 10_000, env = "POSTURE_BENCH_PODS")]
    pub pods: usize,
    /// Fraction of the pending pods that belong to gangs of 2 to 8 members (0 to 1).
    #[arg(long, default_value_t = 0.1, value_parser = fraction, env = "POSTURE_BENCH_GANG_FRACTION")]
    pub gang_fraction: f64,
    /// Fraction of nodes already running a low-priority pod (preemption victims), 0 to 1.
    #[arg(long, default_value_t = 0.25, value_parser = fraction, env = "POSTURE_BENCH_OCCUPIED_FRACTION")]
    pub occupied_fraction: f64,
    /// Profile to benchmark.
    #[arg(long, value_enum, default_value_t = ProfileArg::Priority, env = "POSTURE_BENCH_PROFILE")]
    pub profile: ProfileArg,
    /// Capacity mode of the priority profile: one-per-node or resource-fit.
    #[arg(long, default_value = "one-per-node", env = "POSTURE_BENCH_CAPACITY")]
    pub capacity: CapacityMode,
    /// Seed of the synthetic cluster (same seed, same cluster).
    #[arg(long, default_value_t = 42, env = "POSTURE_BENCH_SEED")]
    pub seed: u64,
}

fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0 to 1"))
    }
}

/// Runs the benchmark and prints its table.
pub async fn run(args: BenchSchedulerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes > 0, "--nodes must be at least 1");
    anyhow::ensure!(args.pods > 0, "--pods must be at least 1");
    let spec = SyntheticSpec {
        nodes: args.nodes,
        pods: args.pods,
        gang_fraction: args.gang_fraction,
        occupied_fraction: args.occupied_fraction,
        seed: args.seed,
    };
    let profile = match args.profile {
        ProfileArg::Priority => BenchProfile::Priority(args.capacity),
        ProfileArg::RoundRobin => BenchProfile::RoundRobin,
    };
    tracing::info!(nodes = spec.nodes, pods = spec.pods, profile = %profile.label(), "building the synthetic cluster");
    // CPU-bound for seconds: keep it off the async worker threads.
    let (report, build) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let world = synthetic_cluster(&spec);
        let build = started.elapsed();
        (run_scheduler_bench(world, profile), build)
    })
    .await
    .context("the benchmark thread panicked")?;
    println!("{}", report.table());
    println!(
        "(snapshot built in {:.2} s; decision time only, no API calls)",
        build.as_secs_f64()
    );
    Ok(())
}
