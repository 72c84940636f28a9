//! `posture-farm scaler` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct ScalerArgs {}

/// Runs the subcommand.
pub async fn run(_args: ScalerArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
