//! `posture-farm bench bind-latency`: time from pod creation to bind at a
//! given arrival rate, measured on the real scheduler loop and report writer
//! against a modelled API server (`posture_k8s::scheduler::loadmodel`), in
//! virtual time: reproducible figures for the structure of the path (Event
//! writes competing with binds, bind concurrency, the loop's turns), not the
//! machine's speed.

use std::time::Duration;

use anyhow::Context as _;
use posture_k8s::scheduler::loadmodel::{ModelSpec, run_model_blocking};

/// Flags of this benchmark.
#[derive(Debug, clap::Args)]
pub struct BenchBindLatencyArgs {
    /// Pods created per second.
    #[arg(long, default_value_t = 500.0, env = "POSTURE_BENCH_RATE")]
    pub rate: f64,
    /// Pods created in all.
    #[arg(long, default_value_t = 5_000, env = "POSTURE_BENCH_PODS")]
    pub pods: usize,
    /// Nodes.
    #[arg(long, default_value_t = 50, env = "POSTURE_BENCH_NODES")]
    pub nodes: usize,
    /// API server requests served at once (its cores).
    #[arg(long, default_value_t = 2, env = "POSTURE_BENCH_API_WORKERS")]
    pub api_workers: usize,
    /// API server time per request, in milliseconds.
    #[arg(long, default_value_t = 1.15, env = "POSTURE_BENCH_API_SERVICE_MS")]
    pub api_service_ms: f64,
    /// Network round trip per request, in milliseconds.
    #[arg(long, default_value_t = 1.0, env = "POSTURE_BENCH_ROUND_TRIP_MS")]
    pub round_trip_ms: f64,
    /// Creation → watch event, in milliseconds.
    #[arg(long, default_value_t = 2.0, env = "POSTURE_BENCH_WATCH_DELAY_MS")]
    pub watch_delay_ms: f64,
    /// The loop's bind concurrency.
    #[arg(long, default_value_t = 64, env = "BIND_CONCURRENCY")]
    pub bind_concurrency: usize,
    /// Event writes in flight at most (comma-separated to compare several).
    #[arg(
        long,
        default_value = "16,4,1",
        value_delimiter = ',',
        env = "POSTURE_BENCH_EVENT_CONCURRENCY"
    )]
    pub event_concurrency: Vec<usize>,
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1000.0)
}

/// Runs the model once per event concurrency and prints a table.
pub async fn run(args: BenchBindLatencyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0.0 && args.pods > 0,
        "--rate and --pods must be positive"
    );
    let base = ModelSpec {
        rate: args.rate,
        pods: args.pods,
        nodes: args.nodes.max(1),
        workers: args.api_workers.max(1),
        service: ms(args.api_service_ms),
        round_trip: ms(args.round_trip_ms),
        watch_delay: ms(args.watch_delay_ms),
        bind_concurrency: args.bind_concurrency.max(1),
        event_concurrency: 1,
    };
    let mut out = format!(
        "{} pods at {}/s, API server {} × {:.2} ms + {:.1} ms round trip, bind concurrency {}\n\
         {:>18}  {:>9}  {:>9}  {:>9}  {:>8}\n",
        args.pods,
        args.rate,
        base.workers,
        args.api_service_ms,
        args.round_trip_ms,
        base.bind_concurrency,
        "event concurrency",
        "p50",
        "p99",
        "max",
        "events"
    );
    for c in &args.event_concurrency {
        let spec = ModelSpec {
            event_concurrency: (*c).max(1),
            ..base.clone()
        };
        let report = tokio::task::spawn_blocking(move || run_model_blocking(&spec))
            .await
            .context("the model thread panicked")?
            .context("building the model's runtime")?;
        let f = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        out.push_str(&format!(
            "{:>18}  {:>9}  {:>9}  {:>9}  {:>8}\n",
            c,
            f(report.quantile(0.5)),
            f(report.quantile(0.99)),
            f(report.latencies.last().copied().unwrap_or_default()),
            report.events_written
        ));
    }
    print!("{out}");
    Ok(())
}
