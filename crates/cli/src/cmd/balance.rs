//! `posture-farm balance` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct BalanceArgs {}

/// Runs the subcommand.
pub async fn run(_args: BalanceArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
