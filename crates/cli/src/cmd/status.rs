//! `posture-farm status` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

/// Runs the subcommand.
pub async fn run(_args: StatusArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
