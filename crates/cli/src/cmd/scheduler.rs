//! `posture-farm scheduler` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {}

/// Runs the subcommand.
pub async fn run(_args: SchedulerArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
