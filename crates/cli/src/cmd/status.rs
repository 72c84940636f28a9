//! `posture-farm status`: where the farm runs. The mode, the farm's own
//! workloads (schedulers, scaler, broker, database, Prometheus, exporter)
//! with their readiness, pods per node, each node's GPU reading and its
//! state (ok / stale / missing), and every pending pod with the reason
//! from its latest FailedScheduling Event.
//!
//! GPU readings use the queries the in-cluster components use (ConfigMap
//! `posture-gpu-config`) and the farm's Prometheus through a port-forward,
//! unless `--gpu-config` / `--prometheus-url` say otherwise.

use anyhow::Context as _;
use posture_k8s::ops::status::{gather, render, summarise};

use crate::args::{GpuSourceArgs, farm_snapshot};

/// Flags of `posture-farm status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Do not query Prometheus for GPU usage.
    #[arg(long, env = "STATUS_NO_GPU")]
    pub no_gpu: bool,
    /// The farm's namespace (its GPU config and Prometheus).
    #[arg(long, env = "POSTURE_NAMESPACE", default_value = posture_k8s::ops::manifests::DOCUMENTED_NAMESPACE)]
    pub namespace: String,
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
        farm_snapshot(&args.gpu, &client, &args.namespace).await
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
        assert_eq!(w.args.namespace, "posture");
    }
}
