//! # posture-scaler — KEDA External Scaler for posture-farm
//!
//! A gRPC server implementing KEDA's `externalscaler.ExternalScaler` service
//! (proto in `proto/externalscaler.proto`, identical to KEDA's). KEDA calls it
//! for every camera's ScaledJob; the answers come from the current per-node
//! GPU usage snapshot and the pure rules in [`posture_core::scaler`].
//!
//! ```text
//!  Prometheus poller ─► watch::Receiver<GpuSnapshot> ─┐ (UsageSource)
//!                                                    ├─► Scaler ─► IsActive / StreamIsActive (debounced)
//!  scalerMetadata (per request) ─► ScalerConfig ──────┤           GetMetricSpec / GetMetrics (spare capacity)
//!  settings file (settings::watch_file) ─► Settings ──┘           StreamMetricSpec (current spec, then every change)
//! ```
//!
//! The service is generic over [`UsageSource`] ("what is the GPU usage now"),
//! so tests feed it an in-memory value and production a watch channel. The
//! server takes its listener and shutdown future as parameters ([`serve`]),
//! so tests bind `127.0.0.1:0`.

pub mod metrics;
pub mod service;
pub mod settings;
pub mod source;

pub use metrics::ScalerMetrics;
pub use service::{DEFAULT_TARGET, Scaler, ScalerOptions, Settings, SettingsError};
pub use source::{StaticUsage, UsageSource};

/// Code generated from KEDA's `externalscaler.proto` (server and client).
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("externalscaler");
}

use std::future::Future;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

/// PEM-encoded certificate chain and private key for serving gRPC over TLS
/// (KEDA's `enableTLS` / `caCert` trigger settings talk to it).
#[derive(Clone)]
pub struct TlsPem {
    /// PEM certificate chain, leaf first.
    pub cert: Vec<u8>,
    /// PEM private key of the leaf.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TlsPem")
            .field("cert_bytes", &self.cert.len())
            .finish_non_exhaustive()
    }
}

/// Why the gRPC server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS certificate or key was refused.
    #[error("invalid TLS configuration for the scaler's gRPC server")]
    Tls(#[source] tonic::transport::Error),
    /// The server failed while serving.
    #[error("the scaler's gRPC server failed")]
    Transport(#[source] tonic::transport::Error),
}

/// Serves the External Scaler on an already bound `listener` until `shutdown`
/// resolves, with TLS when `tls` is given.
pub async fn serve<S, F>(
    listener: TcpListener,
    scaler: Scaler<S>,
    tls: Option<TlsPem>,
    shutdown: F,
) -> Result<(), ServeError>
where
    S: UsageSource,
    F: Future<Output = ()> + Send,
{
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        let identity = Identity::from_pem(tls.cert, tls.key);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(ServeError::Tls)?;
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "KEDA external scaler listening (gRPC externalscaler.ExternalScaler)");
    }
    builder
        .add_service(pb::external_scaler_server::ExternalScalerServer::new(
            scaler,
        ))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
        .map_err(ServeError::Transport)
}
