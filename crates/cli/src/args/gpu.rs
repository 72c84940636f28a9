//! GPU flag groups: where usage comes from ([`GpuSourceArgs`], flattened by
//! every subcommand that reads GPU usage, so all read it the same way) and
//! the `gpu-least-loaded` profile's settings ([`GpuProfileArgs`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use posture_core::gpu::GpuSnapshot;
use posture_gpu::config::{
    DEFAULT_DISCOVER_QUERY, DEFAULT_NODE_LABEL, DEFAULT_QUERY_TEMPLATE, Discover, parse_duration,
};
use posture_gpu::{
    GpuConfig, GpuSource, PromClient, ResolvedConfig, SourceMetrics, SourceSettings,
};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// Where GPU usage comes from: Prometheus address, per-node queries, polling
/// and staleness. Flatten it into any subcommand that needs GPU usage.
#[derive(clap::Args, Clone, Debug)]
pub struct GpuSourceArgs {
    /// Prometheus base URL (a path prefix such as http://host/prometheus is kept).
    #[arg(long, env = "PROMETHEUS_URL", default_value = super::LOCAL_PROMETHEUS)]
    pub prometheus_url: String,
    /// YAML file mapping nodes to PromQL (`query:`, or `instance:` + `metric:`),
    /// with `default_query` and `discover` keys; see the README.
    #[arg(long, env = "GPU_CONFIG")]
    pub gpu_config: Option<PathBuf>,
    /// PromQL template for nodes without their own query; `{node}` is replaced
    /// by the node name. The config file's `default_query` wins.
    #[arg(long, env = "GPU_QUERY_TEMPLATE", default_value = DEFAULT_QUERY_TEMPLATE)]
    pub gpu_query_template: String,
    /// Extra GPU nodes (comma-separated) read with the template.
    #[arg(long, env = "GPU_NODES", value_delimiter = ',')]
    pub gpu_nodes: Vec<String>,
    /// Query whose series name GPU nodes (by --gpu-node-label); empty turns
    /// discovery off. The config file's `discover` key wins.
    #[arg(long, env = "GPU_DISCOVER_QUERY", default_value = DEFAULT_DISCOVER_QUERY)]
    pub gpu_discover_query: String,
    /// Label of the discovery query's series that holds the node name.
    #[arg(long, env = "GPU_NODE_LABEL", default_value = DEFAULT_NODE_LABEL)]
    pub gpu_node_label: String,
    /// How often Prometheus is polled (e.g. 5s, 500ms).
    #[arg(long, env = "GPU_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub gpu_poll_interval: Duration,
    /// A sample older than this is stale: the node is not eligible for
    /// GPU-aware placement until a fresh one arrives.
    #[arg(long, env = "GPU_STALE_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub gpu_stale_after: Duration,
    /// Timeout of one Prometheus query.
    #[arg(long, env = "GPU_QUERY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub gpu_query_timeout: Duration,
}

impl GpuSourceArgs {
    /// The per-node queries these flags (and the config file) describe.
    pub fn resolve(&self) -> anyhow::Result<ResolvedConfig> {
        let file = match &self.gpu_config {
            Some(path) => GpuConfig::load(path)?,
            None => GpuConfig::default(),
        };
        self.resolve_file(&file)
    }

    /// The per-node queries of `file` (e.g. read from the cluster's
    /// ConfigMap) completed by these flags.
    pub fn resolve_file(&self, file: &GpuConfig) -> anyhow::Result<ResolvedConfig> {
        let discover = (!self.gpu_discover_query.trim().is_empty()).then(|| Discover {
            query: self.gpu_discover_query.clone(),
            node_label: self.gpu_node_label.clone(),
        });
        let resolved = file.resolve(&self.gpu_query_template, discover, &self.gpu_nodes)?;
        if resolved.nodes.is_empty() && resolved.discover.is_none() {
            anyhow::bail!(
                "no GPU node to read: list nodes in --gpu-config or --gpu-nodes, or keep discovery on"
            );
        }
        Ok(resolved)
    }

    /// A source built from these flags, without metrics (one-shot use).
    pub fn build(&self) -> anyhow::Result<GpuSource> {
        self.build_from(self.resolve()?)
    }

    /// A source reading `resolved` with these flags' Prometheus and timings.
    pub fn build_from(&self, resolved: ResolvedConfig) -> anyhow::Result<GpuSource> {
        let client = PromClient::new(&self.prometheus_url, self.gpu_query_timeout)
            .context("configuring the Prometheus client")?;
        Ok(GpuSource::new(
            client,
            resolved,
            SourceSettings {
                poll_interval: self.gpu_poll_interval,
                stale_after: self.gpu_stale_after,
            },
        ))
    }

    /// Starts polling in a background task (metrics `gpu_*` registered in
    /// `registry`) and returns the receiver of its snapshots. The first
    /// snapshot is empty until the first poll completes; wait with
    /// `rx.changed().await` if you need data. The task stops when every
    /// receiver is dropped. Must be called inside a Tokio runtime.
    pub fn spawn(&self, registry: &mut Registry) -> anyhow::Result<watch::Receiver<GpuSnapshot>> {
        let metrics = SourceMetrics::register(registry);
        let source = self.build()?.with_metrics(metrics);
        tracing::info!(
            prometheus = %self.prometheus_url,
            interval = ?self.gpu_poll_interval,
            stale_after = ?self.gpu_stale_after,
            "GPU usage source started"
        );
        let (rx, _task) = source.spawn();
        Ok(rx)
    }

    /// One GPU reading of every node, or `None` (with a warning) when
    /// Prometheus is not configured or not reachable: `status` and `up`
    /// still go on without it.
    pub async fn snapshot_once(&self) -> Option<GpuSnapshot> {
        self.snapshot_once_from(self.resolve()).await
    }

    /// [`Self::snapshot_once`] with already resolved queries.
    pub async fn snapshot_once_from(
        &self,
        resolved: anyhow::Result<ResolvedConfig>,
    ) -> Option<GpuSnapshot> {
        let mut source = match resolved.and_then(|r| self.build_from(r)) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), "GPU usage not shown");
                return None;
            }
        };
        let snapshot = source.poll(posture_gpu::now_millis()).await.clone();
        if snapshot.nodes.values().all(|u| u.sample.is_none()) {
            tracing::warn!(prometheus = %self.prometheus_url, "no GPU reading from Prometheus; GPU usage not shown");
            return None;
        }
        Some(snapshot)
    }
}

/// Settings of the `gpu-least-loaded` scheduler profile, for the scheduler
/// subcommand to flatten next to [`GpuSourceArgs`].
#[derive(clap::Args, Clone, Debug)]
pub struct GpuProfileArgs {
    /// Nodes whose measured GPU usage is at or above this percentage are not eligible.
    #[arg(long, env = "GPU_THRESHOLD", default_value_t = 60.0)]
    pub gpu_threshold: f64,
    /// Estimated GPU load (percent) of a pod just placed, counted on its node
    /// until a sample taken after the bind arrives (in-flight compensation).
    #[arg(long, env = "GPU_INFLIGHT_LOAD", default_value_t = 15.0)]
    pub gpu_inflight_load: f64,
    /// The longest an in-flight estimate counts without a newer sample.
    #[arg(long, env = "GPU_INFLIGHT_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub gpu_inflight_window: Duration,
    /// Usages within this many percentage points of the best are ties (the
    /// node chosen last wins them, else a seeded random one).
    #[arg(long, env = "GPU_TIE_TOLERANCE", default_value_t = 0.5)]
    pub gpu_tie_tolerance: f64,
    /// ConfigMap remembering the node chosen last across restarts.
    #[arg(long, env = "GPU_STATE_CONFIGMAP", default_value = posture_k8s::scheduler::gpu_state::DEFAULT_CONFIGMAP)]
    pub gpu_state_configmap: String,
    /// Namespace of that ConfigMap; default: the client's (in a pod, the
    /// scheduler's own namespace).
    #[arg(long, env = "GPU_STATE_NAMESPACE")]
    pub gpu_state_namespace: Option<String>,
}

impl GpuProfileArgs {
    /// The profile configuration these flags describe, with the scheduler's
    /// tie-break `seed`; checks ranges.
    pub fn config(
        &self,
        seed: u64,
    ) -> anyhow::Result<posture_core::policy::gpu_least_loaded::GpuLeastLoadedConfig> {
        for (flag, v) in [
            ("--gpu-threshold", self.gpu_threshold),
            ("--gpu-inflight-load", self.gpu_inflight_load),
            ("--gpu-tie-tolerance", self.gpu_tie_tolerance),
        ] {
            if !(0.0..=100.0).contains(&v) {
                anyhow::bail!("{flag} must be within 0-100, got {v}");
            }
        }
        Ok(
            posture_core::policy::gpu_least_loaded::GpuLeastLoadedConfig {
                threshold_percent: self.gpu_threshold,
                inflight_load_percent: self.gpu_inflight_load,
                inflight_window_ms: i64::try_from(self.gpu_inflight_window.as_millis())
                    .unwrap_or(i64::MAX),
                tie_tolerance_percent: self.gpu_tie_tolerance,
                seed,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn profile_flags() {
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            p: GpuProfileArgs,
        }
        let p = P::parse_from(["t", "--gpu-inflight-window", "30s"]);
        let c = p.p.config(9).unwrap();
        assert_eq!(c.threshold_percent, 60.0);
        assert_eq!(c.inflight_load_percent, 15.0);
        assert_eq!(c.inflight_window_ms, 30_000);
        assert_eq!(c.seed, 9);
        assert_eq!(p.p.gpu_state_configmap, "posture-farm-gpu-state");
        let p = P::parse_from(["t", "--gpu-threshold", "120"]);
        assert!(p.p.config(0).is_err());
    }
}
