//! `posture-farm setup` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct SetupArgs {}

/// Runs the subcommand.
pub async fn run(_args: SetupArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
