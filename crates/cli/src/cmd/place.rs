//! `posture-farm place` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct PlaceArgs {}

/// Runs the subcommand.
pub async fn run(_args: PlaceArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
