//! The farm page's Kubernetes reads against recorded exchanges: a
//! `tower-test` mock behind a real `kube::Client` answers exactly the
//! requests the poller must send (pods by label, nodes, paginated lists,
//! Events by reason per namespace), with the bodies an API server sends.
//! Then the page built from them, and the live `farm` event on a change.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use posture_dashboard::k8s::{KubeSettings, KubeStatus, gather};
use posture_dashboard::{Farm, KubeSource, LiveEvent};
use serde_json::{Value, json};
use tower::ServiceExt as _;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

struct Exchange {
    method: String,
    path: String,
    query: String,
    send: tower_test::mock::SendResponse<Response<Body>>,
}

async fn next(handle: &mut Handle) -> Exchange {
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("timed out waiting for an API request")
        .expect("the client hung up");
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    Exchange {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        send,
    }
}

fn respond(ex: Exchange, status: u16, body: Value) {
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    ex.send.send_response(resp);
}

fn list(kind: &str, items: Vec<Value>, cont: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": kind, "metadata": { "resourceVersion": "1", "continue": cont }, "items": items })
}

fn pod(name: &str, camera: &str, node: Option<&str>, condition: Option<&str>) -> Value {
    let mut status = json!({ "phase": if node.is_some() { "Running" } else { "Pending" } });
    if let Some(m) = condition {
        status["conditions"] = json!([{ "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": m }]);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "posture", "creationTimestamp": "2026-11-23T10:00:00Z",
                      "labels": { "app": "posture", "camera": camera, "app.kubernetes.io/managed-by": "posture-farm" } },
        "spec": { "containers": [{ "name": "analyzer" }], "nodeName": node },
        "status": status
    })
}

fn node(name: &str, ready: bool) -> Value {
    json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name },
            "status": { "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] } })
}

fn event(reason: &str, kind: &str, name: &str, at: &str, msg: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Event",
            "metadata": { "name": format!("{name}.{reason}"), "namespace": "posture" },
            "involvedObject": { "kind": kind, "namespace": "posture", "name": name },
            "reason": reason, "message": msg, "eventTime": at, "type": "Normal",
            "reportingComponent": "rr-scheduler", "reportingInstance": "rr-scheduler-0" })
}

/// Answers one poll: pods, nodes (in two pages), then Events per reason.
async fn answer_poll(h: &mut Handle, pods: Vec<Value>, events: Vec<Value>) {
    let ex = next(h).await;
    assert_eq!(
        (ex.method.as_str(), ex.path.as_str()),
        ("GET", "/api/v1/pods")
    );
    assert!(
        ex.query
            .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dposture-farm"),
        "{}",
        ex.query
    );
    assert!(ex.query.contains("limit=500"), "{}", ex.query);
    respond(ex, 200, list("PodList", pods, ""));
    let ex = next(h).await;
    assert_eq!(ex.path, "/api/v1/nodes");
    respond(
        ex,
        200,
        list(
            "NodeList",
            vec![node("agx", true), node("orin", false)],
            "page2",
        ),
    );
    let ex = next(h).await;
    assert_eq!(ex.path, "/api/v1/nodes");
    assert!(ex.query.contains("continue=page2"), "{}", ex.query);
    respond(ex, 200, list("NodeList", vec![node("xavier", true)], ""));
    for reason in ["Scheduled", "Rebalanced", "Preempted", "FailedScheduling"] {
        let ex = next(h).await;
        assert_eq!(ex.path, "/api/v1/namespaces/posture/events");
        assert!(
            ex.query
                .contains(&format!("fieldSelector=reason%3D{reason}")),
            "{}",
            ex.query
        );
        let items = events
            .iter()
            .filter(|e| e["reason"] == reason)
            .cloned()
            .collect();
        respond(ex, 200, list("EventList", items, ""));
    }
}

fn pods_v1() -> Vec<Value> {
    vec![
        pod("posture-pi1-abc", "pi1", Some("agx"), None),
        pod(
            "posture-pi2-def",
            "pi2",
            None,
            Some(
                "0/3 nodes are available: 1 node(s) were not ready, 2 node(s) had no fresh GPU usage sample.",
            ),
        ),
    ]
}

fn events_v1() -> Vec<Value> {
    vec![
        event(
            "Scheduled",
            "Pod",
            "posture-pi1-abc",
            "2026-11-23T10:00:05.000000Z",
            "Successfully assigned posture/posture-pi1-abc to agx",
        ),
        event(
            "Rebalanced",
            "ScaledJob",
            "posture-pi3",
            "2026-11-23T10:02:00.000000Z",
            "Moved from node orin (avg GPU 82.0%) to node xavier (projected 20.0% -> 35.0%); restarted 1 job(s)",
        ),
        event(
            "Preempted",
            "Pod",
            "posture-low",
            "2026-11-23T10:01:00.000000Z",
            "Preempted by pod posture/posture-high on node agx",
        ),
    ]
}

#[tokio::test]
async fn poll_reads_pods_nodes_and_activity_and_the_page_shows_them() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let settings = KubeSettings::default();
    let reading = tokio::spawn({
        let client = client.clone();
        async move { gather(&client, &settings).await }
    });
    answer_poll(&mut handle, pods_v1(), events_v1()).await;
    let inputs = reading.await.unwrap().unwrap();
    assert_eq!(
        (inputs.pods.len(), inputs.nodes.len(), inputs.events.len()),
        (2, 3, 3)
    );

    let farm = Farm::new(
        &KubeSource::Client(client, KubeSettings::default()),
        None,
        None,
    );
    farm.record(Ok(inputs));
    let (view, sources) = farm.view(Timestamp::now());
    assert!(matches!(sources.kube, KubeStatus::Ok { .. }));
    let names: Vec<_> = view
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.ready, n.pods.len()))
        .collect();
    assert_eq!(
        names,
        [
            ("agx", Some(true), 1),
            ("orin", Some(false), 0),
            ("xavier", Some(true), 0)
        ]
    );
    assert!(
        view.pending[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("no fresh GPU usage sample")
    );
    let reasons: Vec<_> = view.activity.iter().map(|a| a.reason.as_str()).collect();
    assert_eq!(reasons, ["Rebalanced", "Preempted", "Scheduled"]);

    // The page as served.
    let dir = tempfile::tempdir().unwrap();
    let db = posture_dashboard::ReadOnlyDb::open(&posture_analyzer::store::DbTarget::Sqlite(
        dir.path().join("none.db"),
    ));
    let dashboard =
        posture_dashboard::Dashboard::new(db, farm.clone(), Default::default(), Default::default());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let resp = dashboard
        .router(rx)
        .oneshot(
            Request::get("/farm")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for needle in [
        r#"<tr data-node="agx">"#,
        r#"<a href="/camera/pi1">pi1</a>"#,
        "posture/posture-pi2-def",
        "2 node(s) had no fresh GPU usage sample.",
        "Moved from node orin (avg GPU 82.0%) to node xavier",
        "ScaledJob posture/posture-pi3",
        r#"<span class="badge bad">Not ready</span>"#,
    ] {
        assert!(html.contains(needle), "{needle} missing from the farm page");
    }

    // An API failure keeps the last reading and says so.
    farm.record(Err("connection refused".into()));
    let (view, sources) = farm.view(Timestamp::now());
    assert_eq!(view.nodes.len(), 3);
    assert!(
        matches!(sources.kube, KubeStatus::Failing { ref error, .. } if error == "connection refused")
    );
}

#[tokio::test]
async fn the_poller_announces_a_placement_change_once() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let settings = KubeSettings {
        poll_interval: Duration::from_millis(50),
        ..KubeSettings::default()
    };
    let kube = KubeSource::Client(client, settings);
    let farm = Farm::new(&kube, None, None);
    let dir = tempfile::tempdir().unwrap();
    let live = posture_dashboard::Live::new(posture_dashboard::ReadOnlyDb::open(
        &posture_analyzer::store::DbTarget::Sqlite(dir.path().join("none.db")),
    ));
    let mut events = live.subscribe();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(farm.clone().run(kube, live.clone(), async move {
        let _ = stop_rx.await;
    }));
    answer_poll(&mut handle, pods_v1(), events_v1()).await;
    let first = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, LiveEvent::Farm);
    // Same state: no event. Then pi2 gets a node: one event.
    answer_poll(&mut handle, pods_v1(), events_v1()).await;
    let mut moved = pods_v1();
    moved[1] = pod("posture-pi2-def", "pi2", Some("xavier"), None);
    answer_poll(&mut handle, moved, events_v1()).await;
    let second = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second, LiveEvent::Farm);
    assert!(events.try_recv().is_err(), "one event per change");
    let (view, _) = farm.view(Timestamp::now());
    assert!(view.pending.is_empty());
    assert_eq!(
        view.nodes
            .iter()
            .find(|n| n.name == "xavier")
            .unwrap()
            .pods
            .len(),
        1
    );
    let _ = stop_tx.send(());
    // The loop may be waiting for an answer to its next poll: end the mock.
    drop(handle);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
