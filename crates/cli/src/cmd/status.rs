//! `posture-farm status`: where the posture workloads run. Pods per node, the
//! placement mode, GPU usage per node from Prometheus (when reachable; the
//! same `--prometheus-url`/`--gpu-*` flags as `posture-farm gpu`), and every
//! pending pod with the reason from its latest FailedScheduling Event.

use anyhow::Context as _;
use posture_k8s::ops::status::{gather, render, summarise};

use crate::args::GpuSourceArgs;

/// Flags of `posture-farm status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Do not query Prometheus for GPU usage.
    #[arg(long, env = "STATUS_NO_GPU")]
    pub no_gpu: bool,
    #[command(flatten)]
    pub gpu: GpuSourceArgs,
}

/// Runs the subcommand.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    let inputs = gather(&client).await.context("reading cluster state")?;
    let gpu = if args.no_gpu {
        None
    } else {
        args.gpu.snapshot_once().await
    };
    let report = summarise(&inputs, gpu.as_ref());
    print!("{}", render(&report, gpu.is_some()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: StatusArgs,
    }

    #[test]
    fn gpu_flags_are_shared_and_can_be_off() {
        let w = Wrap::try_parse_from(["x", "--no-gpu"]).unwrap();
        assert!(w.args.no_gpu);
        assert_eq!(w.args.gpu.prometheus_url, "http://localhost:9090");
    }
}
