//! `posture-farm label-nodes`: set `gpu-node=<node name>` on the GPU nodes,
//! the label the node affinity written by `place` matches. Idempotent: nodes
//! already labelled are left alone.

use anyhow::Context as _;
use posture_k8s::workload::{GPU_NODE_LABEL, label_gpu_nodes, read_nodes};

use crate::args::GpuSourceArgs;

/// Flags of `posture-farm label-nodes`.
#[derive(Debug, clap::Args)]
pub struct LabelNodesArgs {
    /// Nodes to label.
    #[arg(value_name = "NODES", required_unless_present = "from_config")]
    pub nodes: Vec<String>,
    /// Label the GPU nodes of the GPU configuration: nodes listed in
    /// --gpu-config / --gpu-nodes plus those Prometheus discovery reports.
    #[arg(long)]
    pub from_config: bool,
    /// Label key; the value is always the node name.
    #[arg(long, env = "GPU_NODE_LABEL_KEY", default_value = GPU_NODE_LABEL)]
    pub label_key: String,
    #[command(flatten)]
    pub source: GpuSourceArgs,
}

/// Node names from the arguments and, with `--from-config`, from the GPU
/// configuration and one Prometheus poll; sorted, without duplicates.
async fn target_nodes(args: &LabelNodesArgs) -> anyhow::Result<Vec<String>> {
    let mut nodes: Vec<String> = args
        .nodes
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if args.from_config {
        let resolved = args.source.resolve()?;
        nodes.extend(resolved.nodes.into_iter().map(|n| n.node));
        if resolved.discover.is_some() {
            let mut source = args.source.build()?;
            let snapshot = source.poll(posture_gpu::now_millis()).await;
            nodes.extend(snapshot.nodes.keys().cloned());
        }
    }
    nodes.sort();
    nodes.dedup();
    if nodes.is_empty() {
        anyhow::bail!("no GPU node to label (name them, or check --gpu-config / Prometheus)");
    }
    Ok(nodes)
}

/// Runs the subcommand.
pub async fn run(args: LabelNodesArgs) -> anyhow::Result<()> {
    if args.label_key.trim().is_empty() {
        anyhow::bail!("--label-key must not be empty");
    }
    let nodes = target_nodes(&args).await?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
    let found = read_nodes(&client, &nodes).await?;
    let outcomes = label_gpu_nodes(&client, &found, &nodes, &args.label_key).await?;
    for o in outcomes {
        let what = if o.changed {
            match o.before {
                Some(old) => format!("relabelled (was {old})"),
                None => "labelled".to_string(),
            }
        } else {
            "already labelled".to_string()
        };
        println!("{}: {}={} {what}", o.node, args.label_key, o.node);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: LabelNodesArgs,
    }

    #[test]
    fn nodes_or_from_config_is_required() {
        assert!(T::try_parse_from(["t"]).is_err());
        let t = T::try_parse_from(["t", "agx", "orin"]).unwrap();
        assert_eq!(t.a.nodes, ["agx", "orin"]);
        assert_eq!(t.a.label_key, "gpu-node");
        assert!(
            T::try_parse_from(["t", "--from-config"])
                .unwrap()
                .a
                .from_config
        );
    }

    #[tokio::test]
    async fn from_config_lists_configured_nodes_without_prometheus() {
        let t = T::try_parse_from([
            "t",
            "orin",
            "--from-config",
            "--gpu-nodes",
            "agx,orin",
            "--gpu-discover-query",
            "",
        ])
        .unwrap();
        assert_eq!(target_nodes(&t.a).await.unwrap(), ["agx", "orin"]);
    }
}
