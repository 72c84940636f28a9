//! `posture-farm analyze` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {}

/// Runs the subcommand.
pub async fn run(_args: AnalyzeArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
