//! `posture-farm local` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct LocalArgs {}

/// Runs the subcommand.
pub async fn run(_args: LocalArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
