//! `posture-farm exporter`: this node's GPU load on `/metrics` as
//! `jetson_gpu_usage_percent{node="<node>"}` (the `posture-exporter`
//! crate), for the Prometheus the GPU-aware components read. Runs as a
//! DaemonSet on GPU nodes (`deploy/exporter/`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use posture_exporter::{DEFAULT_METRIC_NAME, DetectOptions, Exporter, GpuSource};

use crate::admin::Shutdown;

/// Flags of `posture-farm exporter`.
#[derive(Debug, clap::Args)]
pub struct ExporterArgs {
    /// Address of /metrics and /healthz (9105: not node-exporter's 9100).
    #[arg(long, env = "EXPORTER_LISTEN", default_value = "0.0.0.0:9105")]
    pub listen: SocketAddr,
    /// The node label's value; in Kubernetes NODE_NAME from the downward API
    /// (spec.nodeName). Default: the host name.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Name of the GPU usage metric (what the farm's --gpu-query-template reads).
    #[arg(long, env = "EXPORTER_METRIC_NAME", default_value = DEFAULT_METRIC_NAME)]
    pub metric_name: String,
    /// The GPU's per-mille `load` file; skips discovery (e.g. /sys/devices/gpu.0/load).
    #[arg(long, env = "GPU_LOAD_PATH")]
    pub gpu_load_path: Option<PathBuf>,
    /// Where the host's /sys is (the DaemonSet mounts it read-only at /host/sys).
    #[arg(long, env = "SYSFS_ROOT", default_value = "/sys")]
    pub sysfs_root: PathBuf,
    /// NVML library tried when no Jetson GPU is found (desktop NVIDIA GPUs).
    #[arg(long, env = "NVML_LIBRARY", default_value = posture_exporter::nvml::DEFAULT_LIBRARY)]
    pub nvml_library: String,
    /// Do not try NVML.
    #[arg(long, env = "NO_NVML")]
    pub no_nvml: bool,
}

/// Runs the subcommand.
pub async fn run(args: ExporterArgs) -> anyhow::Result<()> {
    let node = posture_analyzer::node_name(args.node_name.as_deref());
    let source = GpuSource::detect(&DetectOptions {
        sysfs_root: args.sysfs_root.clone(),
        gpu_load_path: args.gpu_load_path.clone(),
        nvml_library: (!args.no_nvml).then(|| args.nvml_library.clone()),
    });
    let exporter = Exporter::new(source, &node, &args.metric_name)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the exporter on {}", args.listen))?;
    tracing::info!(%node, metric = %args.metric_name, "GPU exporter starting");
    let shutdown = Shutdown::on_signals();
    posture_exporter::serve(listener, exporter, async move { shutdown.wait().await })
        .await
        .context("serving the GPU exporter")
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cmd::{Cli, Command};

    #[test]
    fn defaults_and_flags() {
        let Command::Exporter(a) = Cli::try_parse_from(["posture-farm", "exporter"])
            .unwrap()
            .command
        else {
            panic!("not exporter");
        };
        assert_eq!(a.listen.port(), 9105);
        assert_eq!(a.metric_name, "jetson_gpu_usage_percent");
        assert_eq!(a.sysfs_root, std::path::PathBuf::from("/sys"));
        assert_eq!(a.nvml_library, "libnvidia-ml.so.1");
        assert!(!a.no_nvml && a.gpu_load_path.is_none());
        let Command::Exporter(a) = Cli::try_parse_from([
            "posture-farm",
            "exporter",
            "--node-name",
            "agx",
            "--gpu-load-path",
            "/host/sys/devices/gpu.0/load",
            "--metric-name",
            "jetson_orin_gpu_load_percent",
        ])
        .unwrap()
        .command
        else {
            panic!("not exporter");
        };
        assert_eq!(a.node_name.as_deref(), Some("agx"));
        assert_eq!(a.metric_name, "jetson_orin_gpu_load_percent");
    }
}
