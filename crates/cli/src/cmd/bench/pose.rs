//! `posture-farm bench pose` (being built; its owner replaces this file).

/// Flags of this benchmark.
#[derive(Debug, clap::Args)]
pub struct BenchPoseArgs {}

/// Runs the benchmark.
pub async fn run(_args: BenchPoseArgs) -> anyhow::Result<()> {
    anyhow::bail!("this benchmark is not built yet")
}
