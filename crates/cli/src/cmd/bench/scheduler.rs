//! `posture-farm bench scheduler` (being built; its owner replaces this file).

/// Flags of this benchmark.
#[derive(Debug, clap::Args)]
pub struct BenchSchedulerArgs {}

/// Runs the benchmark.
pub async fn run(_args: BenchSchedulerArgs) -> anyhow::Result<()> {
    anyhow::bail!("this benchmark is not built yet")
}
