//! `posture-farm down` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct DownArgs {}

/// Runs the subcommand.
pub async fn run(_args: DownArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
