//! The admin HTTP endpoint every long-running subcommand serves:
//! `/metrics` (Prometheus text format from one `prometheus-client` registry),
//! `/healthz` (the process is up), `/readyz` (caches synced / ready to
//! serve) and `/leader` (leader election state, JSON). Components register
//! their metrics into the registry under their own prefix before the server
//! starts.
//!
//! With leader election, a follower is as Ready as the leader (a rolling
//! update must not stall on it, and it takes over within seconds); `/readyz`
//! tells them apart in its body (`ready: leader` / `ready: follower`) and in
//! the `X-Posture-Leader: true|false` header.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use posture_k8s::lease::LeaderGate;
use prometheus_client::registry::Registry;
pub use shutdown::Shutdown;

/// Header on `/readyz` saying whether this replica leads (leader election on).
pub const LEADER_HEADER: &str = "x-posture-leader";

/// Readiness flag flipped by the component when it can do its job, and
/// (leader election on) whether it leads.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    leader: Arc<OnceLock<LeaderGate>>,
}

impl Readiness {
    /// Marks the component ready (or not).
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the component said it is ready.
    pub fn get(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Reports this election on `/readyz` and `/leader` (set once; shared
    /// by every clone).
    pub fn set_leadership(&self, gate: LeaderGate) {
        let _ = self.leader.set(gate);
    }

    /// The leadership this readiness reports (set by
    /// [`Readiness::set_leadership`]; without it, always acting): the
    /// component acts only while it says so.
    pub fn leadership(&self) -> LeaderGate {
        self.leader
            .get()
            .cloned()
            .unwrap_or_else(LeaderGate::unelected)
    }

    /// `Some(leading)` when leader election is on.
    fn leading(&self) -> Option<bool> {
        self.leader
            .get()
            .filter(|g| g.current().elected())
            .map(LeaderGate::acting)
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
        .route("/leader", get(leader))
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
    let (status, body) = if state.ready.get() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    match state.ready.leading() {
        None => (status, body).into_response(),
        Some(leading) => {
            let role = if leading { "leader" } else { "follower" };
            (
                status,
                [(
                    HeaderName::from_static(LEADER_HEADER),
                    HeaderValue::from_static(if leading { "true" } else { "false" }),
                )],
                format!("{body}: {role}"),
            )
                .into_response()
        }
    }
}

/// The election as this replica sees it, as JSON (always 200: a follower
/// is healthy too).
async fn leader(State(state): State<AppState>) -> impl IntoResponse {
    let body = match state.ready.leader.get() {
        Some(gate) => {
            let l = gate.current();
            serde_json::json!({
                "leaderElection": l.elected(),
                "leader": gate.acting(),
                "identity": l.identity,
                "holder": l.holder,
                "term": l.term,
                "leaseTransitions": l.transitions,
            })
        }
        None => serde_json::json!({"leaderElection": false, "leader": true}),
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
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
    use posture_k8s::lease::{Leadership, Mandate};

    /// One plain HTTP/1.1 GET; the whole response as text.
    async fn http_get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

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
        let get = |path: &'static str| http_get(addr, path);
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        ready.set(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/metrics").await.contains("test_things_total 1"));
        assert!(
            get("/leader")
                .await
                .contains(r#"{"leader":true,"leaderElection":false}"#)
        );
        shutdown.trigger();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn readyz_tells_leader_and_follower_apart_and_both_are_ready() {
        let (tx, rx) = tokio::sync::watch::channel(Leadership {
            mandate: Mandate::Follower,
            identity: "sched-b".into(),
            holder: Some("sched-a".into()),
            term: 0,
            transitions: 3,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ready = Readiness::default();
        ready.clone().set_leadership(LeaderGate::new(rx));
        ready.set(true);
        let shutdown = Shutdown::new();
        let task = tokio::spawn(serve_on(
            listener,
            Registry::default(),
            ready.clone(),
            shutdown.clone(),
        ));
        let get = |path: &'static str| http_get(addr, path);
        let r = get("/readyz").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("x-posture-leader: false"), "{r}");
        assert!(r.ends_with("ready: follower"), "{r}");
        let r = get("/leader").await;
        assert!(
            r.contains(r#""holder":"sched-a""#) && r.contains(r#""leader":false"#),
            "{r}"
        );
        tx.send_replace(Leadership {
            mandate: Mandate::Until(
                tokio::time::Instant::now() + std::time::Duration::from_secs(60),
            ),
            identity: "sched-b".into(),
            holder: Some("sched-b".into()),
            term: 1,
            transitions: 4,
        });
        let r = get("/readyz").await;
        assert!(
            r.contains("x-posture-leader: true") && r.ends_with("ready: leader"),
            "{r}"
        );
        shutdown.trigger();
        task.await.unwrap();
    }
}
