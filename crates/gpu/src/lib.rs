//! # posture-gpu — per-node GPU usage from Prometheus
//!
//! Reads each GPU board's utilisation from the Prometheus HTTP API and
//! publishes it as a [`posture_core::gpu::GpuSnapshot`] through a
//! `tokio::sync::watch` channel. Policies read the latest snapshot; they never
//! call Prometheus.
//!
//! ```text
//!  gpu.yaml ─► config::GpuConfig ─► ResolvedConfig (node → PromQL, discovery)
//!                                        │
//!  Prometheus /api/v1/query ◄─ prom::PromClient ◄─ source::GpuSource (own task, every interval)
//!                                        │  assemble(): ok / stale / missing, last good kept
//!                                        ▼
//!                          watch::Receiver<GpuSnapshot> ─► scheduler, balancer, scaler
//!                                        │
//!                          display::render_table / to_json ─► `gpu`, `place --dry-run`
//! ```
//!
//! Stale or missing nodes are not eligible for GPU-aware placement; the
//! source logs each new problem once and counts it in
//! `gpu_reading_errors_total{reason}`.

pub mod config;
pub mod display;
pub mod metrics;
pub mod prom;
pub mod source;

pub use config::{ConfigError, GpuConfig, ResolvedConfig};
pub use metrics::SourceMetrics;
pub use prom::{PromClient, PromError};
pub use source::{GpuSource, SourceSettings, now_millis};
