//! `posture-farm bench …`: benchmarks that print tables.

pub mod bind_latency;
pub mod pipeline;
pub mod pose;
pub mod scheduler;

/// Which benchmark to run.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Per-image pose latency and images/s on one core.
    Pose(pose::BenchPoseArgs),
    /// Per-stage cost of a frame through the analyzer (decode … persist), p50/p99, frames/s.
    Pipeline(pipeline::BenchPipelineArgs),
    /// Scheduling decisions/s and p50/p99 decision latency on a large synthetic cluster.
    Scheduler(scheduler::BenchSchedulerArgs),
    /// Pod creation → bind p50/p99 at an arrival rate, on the real loop against a modelled API server.
    BindLatency(bind_latency::BenchBindLatencyArgs),
}

/// Runs the chosen benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Pose(a) => pose::run(a).await,
        BenchCommand::Pipeline(a) => pipeline::run(a).await,
        BenchCommand::Scheduler(a) => scheduler::run(a).await,
        BenchCommand::BindLatency(a) => bind_latency::run(a).await,
    }
}
