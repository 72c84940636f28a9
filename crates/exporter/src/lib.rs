//! # posture-exporter — this node's GPU load, for Prometheus
//!
//! What the GPU-aware scheduler, `place`, the balancer and the KEDA scaler
//! read: `jetson_gpu_usage_percent{node="<node name>"}` (name
//! configurable), served on `/metrics` by one exporter per GPU node (a
//! DaemonSet, `deploy/exporter/`). The value is read at every scrape, so
//! it is never older than the scrape itself.
//!
//! ```text
//!  --gpu-load-path FILE ─────────────────────────────────┐
//!  Jetson sysfs: devfreq of_node name ∈ {gpu, gv11b, …}   │ source::GpuSource::detect (once, at start)
//!    → device/load; known paths; scan of /sys/devices ───┤
//!  NVML (libnvidia-ml.so.1, dlopen'ed) ──────────────────┤
//!  none of them: source "none" ──────────────────────────┘
//!                         │ every scrape: read() on the blocking pool
//!                         ▼
//!  /metrics: <metric>{node} (only when read) · posture_exporter_gpu_up{node,source} · posture_exporter_gpu_source_info{…} · posture_exporter_read_errors_total{node}
//! ```
//!
//! Where no source exists, or a read fails, no GPU value is served (never a
//! made-up 0) and `posture_exporter_gpu_up` is 0, so Prometheus queries see
//! the node as *missing*, which every consumer treats as not eligible.

pub mod jetson;
pub mod nvml;
pub mod source;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub use source::{DetectOptions, GpuSource, ReadError};

/// The default metric name (what the farm's GPU queries read).
pub const DEFAULT_METRIC_NAME: &str = "jetson_gpu_usage_percent";

/// The default port: not node-exporter's 9100, nor the farm's 9102
/// (analyzer, balancer) and 9103 (scaler).
pub const DEFAULT_PORT: u16 = 9105;

/// Label set of the GPU value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// The Kubernetes node name.
    pub node: String,
}

/// Label set of the up gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpLabels {
    /// The Kubernetes node name.
    pub node: String,
    /// `jetson-sysfs`, `nvml` or `none`.
    pub source: String,
}

/// Label set of the info metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    /// The Kubernetes node name.
    pub node: String,
    /// `jetson-sysfs`, `nvml` or `none`.
    pub source: String,
    /// The load file, or the NVML library and device count.
    pub device: String,
}

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// The metric name is not a valid Prometheus name.
    #[error("metric name {0:?} is not a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")]
    MetricName(String),
    /// The node name is empty.
    #[error("the node name is empty (set --node-name or NODE_NAME)")]
    NodeName,
    /// The HTTP server failed.
    #[error("the exporter's HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// The exporter: a source, the node name and the metrics. Cheap to clone.
#[derive(Clone)]
pub struct Exporter {
    inner: Arc<Inner>,
}

struct Inner {
    source: GpuSource,
    node: String,
    registry: Registry,
    usage: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    up: Family<UpLabels, Gauge>,
    errors: Counter,
    /// The last read error logged (each new one is logged once). A std
    /// mutex: held for a comparison, never across an `.await`.
    last_error: Mutex<Option<String>>,
}

/// Whether `name` is a valid Prometheus metric name.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

impl Exporter {
    /// An exporter for `node` serving `metric_name` from `source`.
    pub fn new(source: GpuSource, node: &str, metric_name: &str) -> Result<Self, ExporterError> {
        if !valid_metric_name(metric_name) {
            return Err(ExporterError::MetricName(metric_name.to_owned()));
        }
        let node = node.trim();
        if node.is_empty() {
            return Err(ExporterError::NodeName);
        }
        let mut registry = Registry::default();
        let usage = Family::<NodeLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            metric_name,
            "GPU load of this node, percent (0-100), read at scrape time; absent when unknown",
            usage.clone(),
        );
        let own = registry.sub_registry_with_prefix("posture_exporter");
        let up = Family::<UpLabels, Gauge>::default();
        own.register(
            "gpu_up",
            "1 if the last scrape read the GPU load, 0 if it could not (no source, or a read error)",
            up.clone(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        own.register(
            "gpu_source_info",
            "Where this exporter reads the GPU load (jetson-sysfs, nvml or none)",
            info.clone(),
        );
        let errors = Counter::default();
        own.register("read_errors", "GPU load reads that failed", errors.clone());
        info.get_or_create(&InfoLabels {
            node: node.to_owned(),
            source: source.kind().to_owned(),
            device: source.device(),
        })
        .set(1);
        up.get_or_create(&UpLabels {
            node: node.to_owned(),
            source: source.kind().to_owned(),
        })
        .set(0);
        Ok(Self {
            inner: Arc::new(Inner {
                source,
                node: node.to_owned(),
                registry,
                usage,
                up,
                errors,
                last_error: Mutex::new(None),
            }),
        })
    }

    /// The source in use.
    pub fn source(&self) -> &GpuSource {
        &self.inner.source
    }

    /// Reads the GPU now and updates the metrics; the value, if any.
    pub async fn refresh(&self) -> Option<f64> {
        let this = self.clone();
        // sysfs and NVML reads can block (a suspended GPU, a busy driver).
        let read = tokio::task::spawn_blocking(move || this.inner.source.read()).await;
        let inner = &self.inner;
        let labels = NodeLabels {
            node: inner.node.clone(),
        };
        let up = inner.up.get_or_create(&UpLabels {
            node: inner.node.clone(),
            source: inner.source.kind().to_owned(),
        });
        let result = match read {
            Ok(r) => r.map_err(|e| {
                let cause = std::error::Error::source(&e)
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                format!("{e}{cause}")
            }),
            Err(e) => Err(format!("the read task failed: {e}")),
        };
        match result {
            Ok(v) => {
                inner.usage.get_or_create(&labels).set(v);
                up.set(1);
                self.note_error(None);
                Some(v)
            }
            Err(message) => {
                // No value rather than a stale or made-up one.
                inner.usage.remove(&labels);
                up.set(0);
                if !matches!(inner.source, GpuSource::None { .. }) {
                    inner.errors.inc();
                }
                self.note_error(Some(message));
                None
            }
        }
    }

    fn note_error(&self, error: Option<String>) {
        let mut last = self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == error {
            return;
        }
        match &error {
            Some(e) if !matches!(self.inner.source, GpuSource::None { .. }) => {
                tracing::warn!(error = %e, "GPU load not read; no value served until it is")
            }
            Some(_) => {}
            None if last.is_some() => tracing::info!("GPU load read again"),
            None => {}
        }
        *last = error;
    }

    /// The metrics text (OpenMetrics), after a fresh read.
    pub async fn scrape(&self) -> Result<String, std::fmt::Error> {
        self.refresh().await;
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &self.inner.registry)?;
        Ok(body)
    }
}

async fn metrics(State(exporter): State<Exporter>) -> impl IntoResponse {
    match exporter.scrape().await {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    exporter: Exporter,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ExporterError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, source = exporter.source().kind(), "GPU exporter listening (/metrics, /healthz)");
    }
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(exporter);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ExporterError::Serve)
}
