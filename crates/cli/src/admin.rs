//! The admin HTTP endpoint every long-running subcommand serves:
//! `/metrics` (Prometheus text format from one `prometheus-client` registry),
//! `/healthz` (the process is up) and `/readyz` (caches synced / ready to
//! serve). Components register their metrics into the registry under their
//! own prefix before the server starts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
pub use shutdown::Shutdown;

/// Readiness flag flipped by the component when it can do its job.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the component ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the component said it is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    ready: Readiness,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown`.
/// Binding happens before this returns, so a port clash is reported at once.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    ready: Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin endpoint on {addr}"))?;
    tracing::info!(%addr, "admin endpoint listening (/metrics, /healthz, /readyz)");
    Ok(tokio::spawn(serve_on(listener, registry, ready, shutdown)))
}

/// Same as [`serve`] on an already bound listener (tests bind `127.0.0.1:0`).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    registry: Registry,
    ready: Readiness,
    shutdown: Shutdown,
) {
    let state = AppState {
        registry: Arc::new(registry),
        ready,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
    {
        tracing::warn!(%err, "admin endpoint stopped");
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
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

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.get() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Shutdown signalling: a cloneable token that resolves on SIGTERM/SIGINT
/// (or when triggered by hand, in tests).
pub mod shutdown {
    use tokio::sync::watch;

    /// See the module docs.
    #[derive(Clone, Debug)]
    pub struct Shutdown {
        rx: watch::Receiver<bool>,
        tx: std::sync::Arc<watch::Sender<bool>>,
    }

    impl Default for Shutdown {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Shutdown {
        /// A token nobody has triggered yet.
        pub fn new() -> Self {
            let (tx, rx) = watch::channel(false);
            Self {
                rx,
                tx: std::sync::Arc::new(tx),
            }
        }

        /// A token triggered by SIGTERM or Ctrl-C.
        pub fn on_signals() -> Self {
            let s = Self::new();
            let trigger = s.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutdown requested");
                trigger.trigger();
            });
            s
        }

        /// Asks everything holding a clone to stop.
        pub fn trigger(&self) {
            let _ = self.tx.send(true);
        }

        /// Whether shutdown was requested.
        pub fn is_triggered(&self) -> bool {
            *self.rx.borrow()
        }

        /// Resolves once shutdown is requested.
        pub async fn wait(mut self) {
            let _ = self.rx.wait_for(|v| *v).await;
        }
    }

    async fn wait_for_signal() {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let mut registry = Registry::default();
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        registry.register("test_things", "Things", counter.clone());
        counter.inc();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ready = Readiness::default();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(serve_on(
            listener,
            registry,
            ready.clone(),
            shutdown.clone(),
        ));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        ready.set(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/metrics").await.contains("test_things_total 1"));
        shutdown.trigger();
        task.await.unwrap();
    }
}
