//! The farm's GPU readings from the operator's machine, for `up` (KEDA
//! placement) and `status`: the per-node queries the in-cluster components
//! use (ConfigMap `posture-gpu-config`) unless a local `--gpu-config` is
//! given, read from the farm's own Prometheus through a port-forward unless
//! a `--prometheus-url` is given.

use anyhow::Context as _;
use posture_core::gpu::GpuSnapshot;
use posture_gpu::GpuConfig;
use posture_k8s::ops::prometheus::farm_gpu;

use super::GpuSourceArgs;

/// The default `--prometheus-url` (nothing was given).
pub const LOCAL_PROMETHEUS: &str = "http://localhost:9090";

/// One GPU reading of every node, or `None` (logged) when there is none.
/// `base` carries the flags; its `--gpu-config` and `--prometheus-url`, when
/// set, win over the cluster's.
pub async fn farm_snapshot(
    base: &GpuSourceArgs,
    client: &kube::Client,
    namespace: &str,
) -> Option<GpuSnapshot> {
    let own_prometheus = base.prometheus_url == LOCAL_PROMETHEUS;
    let farm = match farm_gpu(client, namespace, own_prometheus).await {
        Ok(farm) => farm,
        Err(err) => {
            tracing::warn!(
                error = format!("{err:#}"),
                "cannot read the farm's GPU settings"
            );
            return base.snapshot_once().await;
        }
    };
    let mut args = base.clone();
    if let Some(url) = farm.prometheus_url() {
        tracing::info!(via = %url, "reading GPU usage from the farm's Prometheus (port-forward)");
        args.prometheus_url = url;
    }
    let resolved = match (&base.gpu_config, &farm.config) {
        (None, Some(text)) => GpuConfig::parse(text, "ConfigMap posture-gpu-config")
            .context("the cluster's GPU config")
            .and_then(|file| args.resolve_file(&file)),
        _ => args.resolve(),
    };
    // `farm` (and its port-forward) lives until the reading is done.
    let snapshot = args.snapshot_once_from(resolved).await;
    drop(farm);
    snapshot
}
