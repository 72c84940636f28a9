//! Recorded-exchange testing for Kubernetes I/O: a `tower-test` mock service
//! behind a real `kube::Client`. Each test states the exact requests it
//! expects (method, path and query, body) and the responses the API server
//! would send, as kube-rs controller examples do.
//!
//! Named exchanges, in the controller-rs style: `mock.expect_bind("ns",
//! "pod")`, `mock.expect_patch_status(..)`, `mock.expect_get(path)`, … wait
//! for the next request, check its method and path, and hand it back for
//! body checks and the answer.

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::Value;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The server side of the mock.
pub struct ApiMock {
    handle: Handle,
}

/// One request received by the mock.
pub struct Recorded {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query string (may be empty).
    pub query: String,
    pub content_type: String,
    /// The JSON body (`Null` when empty or not JSON).
    pub body: Value,
    send: tower_test::mock::SendResponse<Response<Body>>,
}

impl Recorded {
    /// Answers with `status` and a JSON body.
    pub fn respond(self, status: u16, body: Value) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .unwrap_or_else(|_| Response::new(Body::empty()));
        self.send.send_response(response);
    }
}

impl ApiMock {
    /// A client wired to a fresh mock.
    pub fn new() -> (Client, ApiMock) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), ApiMock { handle })
    }

    /// Waits for the next request (panics after 10 s: a test expecting a call
    /// that never comes must fail, not hang).
    pub async fn next(&mut self) -> Recorded {
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.handle.next_request(),
        );
        let (request, send) = next
            .await
            .expect("timed out waiting for an API request")
            .expect("the client hung up");
        let (parts, body) = request.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            send,
        }
    }
}

/// Named API exchanges: each waits for the next request, asserts its method
/// and path (query excluded), and returns it.
impl ApiMock {
    /// The next request, which must be `method path`.
    pub async fn expect(&mut self, method: &str, path: &str) -> Recorded {
        let r = self.next().await;
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            (method, path),
            "unexpected API request (query: {:?}, body: {})",
            r.query,
            r.body
        );
        r
    }

    /// `GET path` (a read or a list).
    pub async fn expect_get(&mut self, path: &str) -> Recorded {
        self.expect("GET", path).await
    }

    /// `PATCH path`.
    pub async fn expect_patch(&mut self, path: &str) -> Recorded {
        self.expect("PATCH", path).await
    }

    /// `POST path` (a create).
    pub async fn expect_post(&mut self, path: &str) -> Recorded {
        self.expect("POST", path).await
    }

    /// `DELETE path`.
    pub async fn expect_delete(&mut self, path: &str) -> Recorded {
        self.expect("DELETE", path).await
    }

    /// A bind: `POST /api/v1/namespaces/{ns}/pods/{pod}/binding`.
    pub async fn expect_bind(&mut self, ns: &str, pod: &str) -> Recorded {
        self.expect_post(&format!("/api/v1/namespaces/{ns}/pods/{pod}/binding"))
            .await
    }

    /// A pod status patch: `PATCH /api/v1/namespaces/{ns}/pods/{pod}/status`.
    pub async fn expect_patch_status(&mut self, ns: &str, pod: &str) -> Recorded {
        self.expect_patch(&format!("/api/v1/namespaces/{ns}/pods/{pod}/status"))
            .await
    }

    /// A new Event: `POST /apis/events.k8s.io/v1/namespaces/{ns}/events`.
    pub async fn expect_event(&mut self, ns: &str) -> Recorded {
        self.expect_post(&format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"))
            .await
    }

    /// A node patch: `PATCH /api/v1/nodes/{node}`.
    pub async fn expect_patch_node(&mut self, node: &str) -> Recorded {
        self.expect_patch(&format!("/api/v1/nodes/{node}")).await
    }
}

/// A `meta/v1` Status body as the API server sends with errors.
pub fn status_json(code: u16, reason: &str, message: &str) -> Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "message": message,
        "reason": reason,
        "code": code
    })
}
