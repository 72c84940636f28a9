//! `posture-farm gpu` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct GpuArgs {}

/// Runs the subcommand.
pub async fn run(_args: GpuArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
