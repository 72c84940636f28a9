//! The farm's GPU readings as the in-cluster components see them, for the
//! commands that run on the operator's machine (`status`, `up`'s KEDA
//! placement): the per-node queries of ConfigMap `posture-gpu-config`, and
//! the farm's Prometheus (`up --with-prometheus`) through a port-forward.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

use super::OpsError;
use super::forward::{Forward, running_pod};
use super::manifests::{GPU_CONFIG_KEY, GPU_CONFIG_MAP};

/// Label selector of the farm's Prometheus pods.
pub const PROMETHEUS_SELECTOR: &str = "app.kubernetes.io/name=prometheus";

/// Port of the farm's Prometheus.
pub const PROMETHEUS_PORT: u16 = 9090;

/// What the cluster says about GPU readings.
pub struct FarmGpu {
    /// The `gpu.yaml` of ConfigMap `posture-gpu-config`, when it exists.
    pub config: Option<String>,
    /// A local port forwarding to the farm's Prometheus, when it runs.
    pub prometheus: Option<Forward>,
}

impl FarmGpu {
    /// `http://127.0.0.1:<port>` of the forwarded Prometheus.
    pub fn prometheus_url(&self) -> Option<String> {
        self.prometheus
            .as_ref()
            .map(|f| format!("http://{}", f.addr))
    }
}

/// Reads the GPU config and, when `forward` is set and the farm's
/// Prometheus runs in `namespace`, opens a port-forward to it.
pub async fn farm_gpu(
    client: &Client,
    namespace: &str,
    forward: bool,
) -> Result<FarmGpu, OpsError> {
    let config = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(GPU_CONFIG_MAP)
        .await
        .map_err(|e| OpsError::kube(format!("read ConfigMap {namespace}/{GPU_CONFIG_MAP}"), e))?
        .and_then(|cm| cm.data)
        .and_then(|mut d| d.remove(GPU_CONFIG_KEY));
    let prometheus = if forward
        && running_pod(client, namespace, PROMETHEUS_SELECTOR)
            .await?
            .is_some()
    {
        Some(Forward::to_pod(client, namespace, PROMETHEUS_SELECTOR, PROMETHEUS_PORT).await?)
    } else {
        None
    };
    Ok(FarmGpu { config, prometheus })
}
