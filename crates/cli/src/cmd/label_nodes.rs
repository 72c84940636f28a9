//! `posture-farm label_nodes` (being built; its owner replaces this file).

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct LabelNodesArgs {}

/// Runs the subcommand.
pub async fn run(_args: LabelNodesArgs) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
