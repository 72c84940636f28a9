//! `posture-farm bench scheduler`: schedules a large synthetic cluster (by
//! default 5,000 nodes and 10,000 pending pods of mixed priorities, a tenth
//! of them in gangs) with one profile, the way the scheduler loop does, and
//! prints decisions per second, p50/p95/p99 decision latency and peak memory.
//! The builder and runner live in `posture-bench`, shared with the criterion
//! benches; API calls are not part of the measurement.

use std::io::Write as _;

use anyhow::Context as _;
use posture_core::policy::priority::CapacityMode;

// The synthetic-cluster builder and runner are `posture-bench`'s library.
// Until crates/cli depends on that crate, its source is compiled in here; with
// `posture-bench.workspace = true` in crates/cli/Cargo.toml these three lines
// become `use posture_bench as synthetic;`. Not every item is used here.
use posture_bench as synthetic;

use synthetic::{BenchProfile, SyntheticSpec, run_scheduler_bench, synthetic_cluster};

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
    let text = format!(
        "{}\n(snapshot built in {:.2} s; decision time only, no API calls)\n",
        report.table(),
        build.as_secs_f64()
    );
    // `| head` closing the pipe early is not an error.
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing the table"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchSchedulerArgs,
    }

    #[test]
    fn defaults_are_the_issue_scale() {
        let a = Cli::try_parse_from(["bench"]).unwrap().args;
        assert_eq!((a.nodes, a.pods, a.seed), (5_000, 10_000, 42));
        assert_eq!(a.profile, ProfileArg::Priority);
        assert_eq!(a.capacity, CapacityMode::OnePerNode);
        let a = Cli::try_parse_from([
            "bench",
            "--profile",
            "round-robin",
            "--capacity",
            "resource-fit",
            "--gang-fraction",
            "0.5",
        ])
        .unwrap()
        .args;
        assert_eq!(a.profile, ProfileArg::RoundRobin);
        assert_eq!(a.capacity, CapacityMode::ResourceFit);
        assert_eq!(a.gang_fraction, 0.5);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let err = Cli::try_parse_from(["bench", "--gang-fraction", "1.5"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("1.5 is outside 0 to 1"), "{err}");
        let err = Cli::try_parse_from(["bench", "--capacity", "half"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected one-per-node or resource-fit"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_small_run_prints_its_table() {
        let a = Cli::try_parse_from(["bench", "--nodes", "50", "--pods", "120"])
            .unwrap()
            .args;
        run(a).await.unwrap();
        let a = Cli::try_parse_from(["bench", "--nodes", "0"]).unwrap().args;
        assert_eq!(
            run(a).await.unwrap_err().to_string(),
            "--nodes must be at least 1"
        );
    }
}
