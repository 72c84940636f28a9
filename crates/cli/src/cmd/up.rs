//! `posture-farm up` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct UpArgs {}

/// Runs the subcommand.
pub async fn run(_args: UpArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
