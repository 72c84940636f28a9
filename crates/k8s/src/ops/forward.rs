//! Reaching a pod's port from the operator's machine through the API
//! server (the pod `portforward` subresource over a WebSocket, what
//! `kubectl port-forward` does), so `down` can read results from the
//! in-cluster PostgreSQL and `status`/`up` can read GPU usage from the
//! in-cluster Prometheus without any Service being exposed.
//!
//! [`Forward`] listens on `127.0.0.1:<free port>`; each accepted connection
//! opens its own port-forward stream (one stream carries one connection)
//! and bytes are copied both ways until either side closes. The transport
//! sits behind [`Connect`] so the accept-and-copy loop is tested with
//! in-memory streams; [`PodConnect`] is the Kubernetes one.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::OpsError;

/// At most this many forwarded connections at once: a database pool and a
/// few Prometheus queries need a handful; the bound keeps a misbehaving
/// local client from opening WebSockets without limit.
const MAX_CONNECTIONS: usize = 16;

/// Opens one byte stream to the forwarded port.
pub trait Connect: Send + Sync + 'static {
    /// The stream type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A new stream (one per local connection).
    fn connect(&self) -> impl Future<Output = Result<Self::Stream, String>> + Send;
}

/// [`Connect`] to a pod's port over the Kubernetes API.
#[derive(Clone)]
pub struct PodConnect {
    api: Api<Pod>,
    pod: String,
    port: u16,
}

impl PodConnect {
    /// Streams to `namespace/pod:port`.
    pub fn new(client: &Client, namespace: &str, pod: &str, port: u16) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            pod: pod.to_string(),
            port,
        }
    }
}

impl Connect for PodConnect {
    type Stream = tokio::io::DuplexStream;

    async fn connect(&self) -> Result<Self::Stream, String> {
        let mut forwarder = self
            .api
            .portforward(&self.pod, &[self.port])
            .await
            .map_err(|e| format!("port-forward to {}:{}: {e}", self.pod, self.port))?;
        forwarder
            .take_stream(self.port)
            .ok_or_else(|| format!("port-forward to {}:{} gave no stream", self.pod, self.port))
    }
}

/// A local port forwarding to a pod; stops when dropped.
pub struct Forward {
    /// Where to connect locally (`127.0.0.1:<port>`).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Forward {
    /// Listens on a free loopback port and forwards each connection through `connect`.
    pub async fn start<C: Connect>(connect: C) -> Result<Self, OpsError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| OpsError::Io {
                path: "127.0.0.1:0 (port-forward)".into(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| OpsError::Io {
            path: "127.0.0.1:0 (port-forward)".into(),
            source,
        })?;
        let connect = Arc::new(connect);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Ok((mut local, peer)) = listener.accept().await else {
                    continue;
                };
                let connect = connect.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match connect.connect().await {
                        Ok(mut remote) => {
                            if let Err(e) =
                                tokio::io::copy_bidirectional(&mut local, &mut remote).await
                            {
                                tracing::debug!(%peer, error = %e, "forwarded connection ended");
                            }
                        }
                        Err(e) => tracing::warn!(%peer, error = %e, "cannot forward"),
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// Forwards to a Running pod matching `selector` in `namespace`.
    pub async fn to_pod(
        client: &Client,
        namespace: &str,
        selector: &str,
        port: u16,
    ) -> Result<Self, OpsError> {
        let pod = running_pod(client, namespace, selector)
            .await?
            .ok_or_else(|| {
                OpsError::manifest(
                    format!("pods {selector} in {namespace}"),
                    "none is running to forward to",
                )
            })?;
        tracing::debug!(pod = %pod, port, "port-forward");
        Self::start(PodConnect::new(client, namespace, &pod, port)).await
    }
}

/// The name of a Running, Ready pod matching `selector` in `namespace`.
pub async fn running_pod(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<Option<String>, OpsError> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| OpsError::kube(format!("list pods {selector} in {namespace}"), e))?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .find(|p| {
            let status = p.status.as_ref();
            status.and_then(|s| s.phase.as_deref()) == Some("Running")
                && status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .and_then(|p| p.metadata.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ApiMock;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Each connection gets one end of a fresh duplex pipe whose other end
    /// upper-cases what it reads: a stand-in for the pod's port.
    struct Upper;

    impl Connect for Upper {
        type Stream = DuplexStream;
        async fn connect(&self) -> Result<DuplexStream, String> {
            let (near, mut far) = tokio::io::duplex(1024);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = far.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let up = buf[..n].to_ascii_uppercase();
                    if far.write_all(&up).await.is_err() {
                        break;
                    }
                }
            });
            Ok(near)
        }
    }

    #[tokio::test]
    async fn every_local_connection_gets_its_own_stream_both_ways() {
        let forward = Forward::start(Upper).await.expect("listens");
        assert!(forward.addr.ip().is_loopback());
        for word in ["select 1", "up{job}"] {
            let mut conn = tokio::net::TcpStream::connect(forward.addr)
                .await
                .expect("connects");
            conn.write_all(word.as_bytes()).await.expect("writes");
            let mut back = vec![0u8; word.len()];
            conn.read_exact(&mut back).await.expect("reads");
            assert_eq!(back, word.to_ascii_uppercase().as_bytes());
        }
        let addr = forward.addr;
        drop(forward);
        tokio::task::yield_now().await;
        // Dropped: the listener is gone (connecting fails or is reset).
        let gone = match tokio::net::TcpStream::connect(addr).await {
            Err(_) => true,
            Ok(mut c) => {
                let _ = c.write_all(b"x").await;
                let mut b = [0u8; 1];
                matches!(c.read(&mut b).await, Ok(0) | Err(_))
            }
        };
        assert!(gone);
    }

    #[tokio::test]
    async fn only_a_running_ready_pod_is_chosen() {
        let (client, mut mock) = ApiMock::new();
        let task = tokio::spawn(async move {
            running_pod(&client, "posture", "app.kubernetes.io/name=posture-db").await
        });
        let req = mock.expect_get("/api/v1/namespaces/posture/pods").await;
        assert!(req.query.contains("posture-db"), "{}", req.query);
        let pod = |name: &str, phase: &str, ready: &str| {
            json!({"metadata": {"name": name, "namespace": "posture"},
                   "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}})
        };
        req.respond(
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                pod("posture-db-0", "Pending", "False"),
                pod("posture-db-1", "Running", "False"),
                pod("posture-db-2", "Running", "True"),
            ]}),
        );
        assert_eq!(
            task.await.expect("joins").expect("ok").as_deref(),
            Some("posture-db-2")
        );
    }
}
