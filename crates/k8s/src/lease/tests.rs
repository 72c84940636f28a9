//! Recorded exchanges of the election with the API server (acquire, renew,
//! loss, take-over, release), on paused time.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;
use crate::test_support::{ApiMock, Recorded, status_json};

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/rr-scheduler";
const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";

fn start(identity: &str) -> (ApiMock, LeaderGate, LeaseMetrics, Shutdown) {
    let (client, mock) = ApiMock::new();
    let metrics = LeaseMetrics::default();
    let (elector, gate) = LeaderElector::new(
        KubeLease::new(client, "kube-system", "rr-scheduler"),
        LeaseConfig {
            identity: identity.into(),
            timings: LeaseTimings::KUBE_SCHEDULER,
            component: "scheduler",
        },
        metrics.clone(),
    );
    let shutdown = Shutdown::new(elector);
    (mock, gate, metrics, shutdown)
}

/// Runs the elector until `stop`, then releases.
struct Shutdown {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<LeaderElector<KubeLease>>,
}

impl Shutdown {
    fn new(elector: LeaderElector<KubeLease>) -> Self {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async move {
            let _ = rx.await;
        }));
        Self {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) -> LeaderElector<KubeLease> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap()
    }
}

fn lease(rv: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "rr-scheduler", "namespace": "kube-system", "resourceVersion": rv,
                     "labels": {"keep": "me"}},
        "spec": spec
    })
}

fn held_by(holder: &str, transitions: i32) -> Value {
    json!({"holderIdentity": holder, "leaseDurationSeconds": 15,
           "acquireTime": "2026-11-29T10:00:00.000000Z", "renewTime": "2026-11-29T10:00:00.000000Z",
           "leaseTransitions": transitions})
}

/// Answers a write with the object written and a new resourceVersion.
fn echo(r: Recorded, rv: &str) {
    let mut body = r.body.clone();
    body["metadata"]["resourceVersion"] = json!(rv);
    r.respond(200, body);
}

/// Lets the elector task run until it waits on time or the mock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// `posture_leader{component="scheduler"}`.
fn leader_gauge(metrics: &LeaseMetrics) -> i64 {
    metrics
        .leader
        .get_or_create(&metrics::ComponentLabels {
            component: "scheduler",
        })
        .get()
}

/// `posture_leader_changes_total{component="scheduler", change}`.
fn changes(metrics: &LeaseMetrics, change: &'static str) -> u64 {
    metrics
        .changes
        .get_or_create(&metrics::ChangeLabels {
            component: "scheduler",
            change,
        })
        .get()
}

fn not_found() -> Value {
    status_json(
        404,
        "NotFound",
        "leases.coordination.k8s.io \"rr-scheduler\" not found",
    )
}

/// Acquires a missing lease: GET 404, POST; returns the created object's rv "1".
async fn acquire_fresh(mock: &mut ApiMock) -> Value {
    mock.expect_get(PATH).await.respond(404, not_found());
    let r = mock.expect_post(COLLECTION).await;
    let spec = r.body["spec"].clone();
    let mut body = r.body.clone();
    body["metadata"]["resourceVersion"] = json!("1");
    r.respond(201, body);
    spec
}

#[tokio::test(start_paused = true)]
async fn acquires_a_missing_lease_then_renews_without_reading() {
    let (mut mock, gate, metrics, shutdown) = start("sched-a");
    assert!(
        !gate.acting(),
        "a candidate does not act before it holds the lease"
    );
    let spec = acquire_fresh(&mut mock).await;
    assert_eq!(spec["holderIdentity"], "sched-a");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);
    assert_eq!(spec["acquireTime"], spec["renewTime"]);
    settle().await;
    assert!(gate.acting());
    assert_eq!(gate.term(), 1);
    assert_eq!(gate.current().holder.as_deref(), Some("sched-a"));
    assert_eq!(leader_gauge(&metrics), 1);

    // Two seconds later: a PUT conditional on resourceVersion 1, no GET.
    let t0 = Instant::now();
    let r = mock.expect("PUT", PATH).await;
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    assert_eq!(r.body["metadata"]["resourceVersion"], "1");
    assert_eq!(r.body["spec"]["holderIdentity"], "sched-a");
    assert_eq!(
        r.body["spec"]["acquireTime"], spec["acquireTime"],
        "acquire time kept"
    );
    assert_ne!(
        r.body["spec"]["renewTime"], spec["renewTime"],
        "renew time moves"
    );
    assert_eq!(r.body["spec"]["leaseTransitions"], 0);
    echo(r, "2");
    let r = mock.expect("PUT", PATH).await;
    assert_eq!(r.body["metadata"]["resourceVersion"], "2");
    echo(r, "3");
    settle().await;
    assert!(gate.acting());
    drop(shutdown);
}

#[tokio::test(start_paused = true)]
async fn waits_for_a_valid_lease_and_takes_it_over_at_expiry_with_a_transition() {
    let (mut mock, gate, metrics, _shutdown) = start("sched-b");
    let t0 = Instant::now();
    let mut reads = 0;
    let put = loop {
        let r = mock.next().await;
        if r.method == "PUT" {
            break r;
        }
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", PATH));
        reads += 1;
        // The holder stopped renewing: the same record every time.
        r.respond(200, lease("41", held_by("sched-a", 6)));
        settle().await;
        assert!(!gate.acting());
        assert_eq!(gate.current().holder.as_deref(), Some("sched-a"));
    };
    // Read at 0, 2, …, 14 s, then at expiry (15 s after it was first seen).
    assert_eq!(t0.elapsed(), Duration::from_secs(15));
    assert_eq!(reads, 9);
    assert_eq!(put.body["metadata"]["resourceVersion"], "41");
    assert_eq!(
        put.body["metadata"]["labels"]["keep"], "me",
        "other metadata kept"
    );
    assert_eq!(put.body["spec"]["holderIdentity"], "sched-b");
    assert_eq!(put.body["spec"]["leaseTransitions"], 7);
    echo(put, "42");
    settle().await;
    assert!(gate.acting());
    assert_eq!(
        metrics
            .transitions
            .get_or_create(&metrics::ComponentLabels {
                component: "scheduler"
            })
            .get(),
        7
    );
}

#[tokio::test(start_paused = true)]
async fn a_renewal_seen_keeps_the_candidate_waiting() {
    let (mut mock, gate, _metrics, _shutdown) = start("sched-b");
    let t0 = Instant::now();
    for (i, renew) in ["10:00:00", "10:00:02", "10:00:04"].iter().enumerate() {
        let mut spec = held_by("sched-a", 0);
        spec["renewTime"] = json!(format!("2026-11-29T{renew}.000000Z"));
        mock.expect_get(PATH)
            .await
            .respond(200, lease(&format!("{}", 10 + i), spec));
    }
    // The holder renewed at 4 s (as we saw it): it expires at 19 s, so we
    // keep reading every 2 s and write nothing before.
    loop {
        let r = mock.next().await;
        if r.method == "PUT" {
            assert_eq!(t0.elapsed(), Duration::from_secs(19));
            break;
        }
        let mut spec = held_by("sched-a", 0);
        spec["renewTime"] = json!("2026-11-29T10:00:04.000000Z");
        r.respond(200, lease("12", spec));
        settle().await;
        assert!(!gate.acting());
    }
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_fail_stops_acting_at_the_renew_deadline() {
    let (mut mock, mut gate, metrics, _shutdown) = start("sched-a");
    acquire_fresh(&mut mock).await;
    settle().await;
    let acquired = Instant::now();
    assert!(gate.acting());
    gate.changed().await; // became leader
    // Every renewal fails: the optimistic PUT and the fallback GET.
    let watcher = {
        let mut gate = gate.clone();
        tokio::spawn(async move {
            gate.changed().await;
            Instant::now()
        })
    };
    loop {
        let r = mock.next().await;
        r.respond(
            500,
            status_json(500, "InternalError", "etcdserver: request timed out"),
        );
        settle().await;
        if !gate.acting() {
            break;
        }
        assert!(acquired.elapsed() < Duration::from_secs(10));
    }
    let stopped = watcher.await.unwrap();
    assert_eq!(
        stopped - acquired,
        Duration::from_secs(10),
        "fenced at the renew deadline"
    );
    assert_eq!(gate.current().mandate, Mandate::Follower);
    assert_eq!(leader_gauge(&metrics), 0);
    assert_eq!(changes(&metrics, "lost"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hung_renewal_cannot_keep_the_leader_acting() {
    let (mut mock, gate, _metrics, _shutdown) = start("sched-a");
    acquire_fresh(&mut mock).await;
    settle().await;
    let acquired = Instant::now();
    // The API server swallows the renewal and never answers.
    let hung = mock.expect("PUT", PATH).await;
    tokio::time::sleep_until(acquired + Duration::from_millis(9_999)).await;
    assert!(gate.acting());
    tokio::time::sleep_until(acquired + Duration::from_secs(10)).await;
    assert!(
        !gate.acting(),
        "the fence holds even while the request hangs"
    );
    drop(hung);
}

#[tokio::test(start_paused = true)]
async fn losing_the_race_follows_the_winner_at_once() {
    let (mut mock, mut gate, _metrics, _shutdown) = start("sched-a");
    acquire_fresh(&mut mock).await;
    settle().await;
    gate.changed().await;
    // Our renewal loses (someone wrote since version 1), and the lease
    // now names another replica.
    mock.expect("PUT", PATH).await.respond(
        409,
        status_json(409, "Conflict", "the object has been modified"),
    );
    mock.expect_get(PATH)
        .await
        .respond(200, lease("9", held_by("sched-b", 1)));
    gate.changed().await;
    assert!(!gate.acting());
    assert_eq!(gate.current().holder.as_deref(), Some("sched-b"));
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_stops_acting_then_releases_the_lease() {
    let (mut mock, gate, metrics, shutdown) = start("sched-a");
    mock.expect_get(PATH)
        .await
        .respond(200, lease("5", json!({"leaseTransitions": 2})));
    let r = mock.expect("PUT", PATH).await;
    assert_eq!(
        r.body["spec"]["leaseTransitions"], 3,
        "a free lease taken counts a transition"
    );
    echo(r, "6");
    settle().await;
    assert!(gate.acting());
    let mut elector = shutdown.stop().await;
    assert!(!gate.acting(), "stops acting before the lease is released");
    let release = tokio::spawn(async move { elector.release().await });
    let r = mock.expect("PUT", PATH).await;
    assert_eq!(r.body["metadata"]["resourceVersion"], "6");
    assert_eq!(r.body["spec"].get("holderIdentity"), None);
    assert_eq!(r.body["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(r.body["spec"]["leaseTransitions"], 3);
    echo(r, "7");
    release.await.unwrap();
    assert_eq!(changes(&metrics, "released"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_follower_releases_nothing() {
    let (mut mock, _gate, _metrics, shutdown) = start("sched-b");
    mock.expect_get(PATH)
        .await
        .respond(200, lease("3", held_by("sched-a", 0)));
    settle().await;
    let mut elector = shutdown.stop().await;
    elector.release().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), mock.next())
            .await
            .is_err(),
        "no request"
    );
}

#[tokio::test]
async fn record_and_spec_round_trip_through_micro_time() {
    let record = posture_core::lease::LeaseRecord {
        holder: Some("a".into()),
        lease_duration_secs: 15,
        acquire_time: Some(1_764_410_400_123),
        renew_time: Some(1_764_410_402_456),
        transitions: 4,
    };
    let spec = store::spec_of(&record);
    let lease = k8s_openapi::api::coordination::v1::Lease {
        spec: Some(spec),
        ..Default::default()
    };
    let v = serde_json::to_value(&lease).unwrap();
    assert_eq!(v["spec"]["renewTime"], "2025-11-29T10:00:02.456000Z");
    assert_eq!(store::record_of(&lease), record);
}
