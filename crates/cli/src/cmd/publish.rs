//! `posture-farm publish` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {}

/// Runs the subcommand.
pub async fn run(_args: PublishArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
