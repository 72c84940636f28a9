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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::BenchCommand;
    use crate::cmd::{Cli, Command};

    fn bench(args: &[&str]) -> BenchCommand {
        let mut argv = vec!["posture-farm", "bench"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Bench(b) => b,
            other => panic!("{other:?}"),
        }
    }

    /// Issue 17.1: the benches find the models where `setup` installs them
    /// (./models if it has them, else the per-user data directory), as
    /// `analyze` and `local` do, from any working directory.
    #[test]
    fn benches_default_to_the_models_dir_setup_installs() {
        let expected = posture_pose::models::default_dir();
        match bench(&["pipeline"]) {
            BenchCommand::Pipeline(a) => assert_eq!(a.models_dir, expected),
            other => panic!("{other:?}"),
        }
        match bench(&["pose"]) {
            BenchCommand::Pose(a) => assert_eq!(a.models_dir, expected),
            other => panic!("{other:?}"),
        }
    }
}
