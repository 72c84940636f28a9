//! The balancer under leader election: a follower reads and moves nothing;
//! a new leader decides on its first full window; a leader fenced while it
//! decides moves nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use posture_core::balance::BalanceParams;
use posture_core::gpu::{GpuSample, GpuSnapshot, NodeUsage, UsageState};
use rand::SeedableRng;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::lease::{LeaderGate, Leadership, Mandate};
use crate::test_support::ApiMock;
use crate::workload::GPU_NODE_LABEL;

fn leading() -> Leadership {
    Leadership {
        mandate: Mandate::Until(Instant::now() + Duration::from_secs(3600)),
        ..Leadership::unelected()
    }
}

fn following() -> Leadership {
    Leadership {
        mandate: Mandate::Follower,
        ..Leadership::unelected()
    }
}

fn snapshot() -> GpuSnapshot {
    GpuSnapshot {
        taken_at: 0,
        nodes: [("agx", 80.0), ("orin", 20.0)]
            .map(|(n, u)| {
                let usage = NodeUsage {
                    sample: Some(GpuSample {
                        usage_percent: u,
                        sampled_at: 0,
                    }),
                    state: UsageState::Ok,
                    error: None,
                };
                (n.to_owned(), usage)
            })
            .into(),
    }
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

/// Three ScaledJobs, each with a pod on agx: one of them fits on orin.
async fn answer_discovery(api: &mut ApiMock) {
    let names = ["pi1", "pi2", "pi3"];
    let sjs = names
        .iter()
        .map(|n| json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": n, "namespace": "posture", "uid": n, "resourceVersion": "7"},
            "spec": {"jobTargetRef": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}}}))
        .collect();
    let pods = names
        .iter()
        .map(|n| json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{n}-pod"), "namespace": "posture", "uid": format!("{n}-pod"),
                "labels": {"app": "posture", "scaledjob.keda.sh/name": n},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": format!("{n}-job"),
                                     "uid": "j", "controller": true}]},
            "spec": {"nodeName": "agx", "containers": [{"name": "a", "image": "x"}]},
            "status": {"phase": "Running"}}))
        .collect();
    api.expect_get("/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs")
        .await
        .respond(200, list("ScaledJobList", "keda.sh/v1alpha1", sjs));
    api.expect_get("/apis/batch/v1/namespaces/posture/jobs")
        .await
        .respond(200, list("JobList", "batch/v1", vec![]));
    api.expect_get("/api/v1/namespaces/posture/pods")
        .await
        .respond(200, list("PodList", "v1", pods));
}

fn balancer(client: kube::Client, gate: LeaderGate) -> Balancer {
    let mut b = Balancer::new(
        Mover::new(client, GPU_NODE_LABEL, None),
        Scope {
            namespace: "posture".into(),
            selector: "app=posture".into(),
        },
        BalanceParams {
            threshold: 50.0,
            cooldown: 300_000,
            ..Default::default()
        },
    );
    b.leader = gate;
    b
}

#[tokio::test(start_paused = true)]
async fn a_follower_decides_nothing_and_a_new_leader_waits_for_a_full_window() {
    let (client, mut api) = ApiMock::new();
    let (gate_tx, gate_rx) = watch::channel(following());
    let (_usage_tx, usage) = watch::channel(snapshot());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let task = tokio::spawn(async move {
        let mut b = balancer(client, LeaderGate::new(gate_rx));
        b.dry_run = true;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut decided = Vec::new();
        run_loop(
            &mut b,
            usage,
            LoopTiming {
                sample_interval: Duration::from_secs(5),
                window: Duration::from_secs(30),
                once: false,
            },
            &mut rng,
            move || i64::try_from(start.elapsed().as_millis()).unwrap_or(0),
            async {
                let _ = stop_rx.await;
            },
            |e| {
                if let LoopEvent::Decided { report, .. } = e {
                    decided.push((Instant::now(), report.plan.moves.len()));
                }
            },
        )
        .await;
        decided
    });
    // A minute as a follower: no request (a request would be waiting for
    // the mock when we look at 85 s).
    tokio::time::sleep_until(start + Duration::from_millis(60_200)).await;
    gate_tx.send(leading()).unwrap();
    tokio::time::sleep_until(start + Duration::from_secs(85)).await;
    // Samples from 65 s on: the window is full at 90 s.
    answer_discovery(&mut api).await;
    assert_eq!(start.elapsed(), Duration::from_secs(90));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send(()).unwrap();
    let decided = task.await.unwrap();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].1, 1, "one move planned off agx");
}

#[tokio::test]
async fn a_leader_fenced_while_deciding_moves_nothing() {
    let (client, mut api) = ApiMock::new();
    let (gate_tx, gate_rx) = watch::channel(leading());
    let task = tokio::spawn(async move {
        let mut b = balancer(client, LeaderGate::new(gate_rx));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let averages: BTreeMap<String, f64> = [("agx", 80.0), ("orin", 20.0)]
            .map(|(n, u)| (n.to_owned(), u))
            .into();
        let report = b.run_once(&averages, 1_000, &mut rng).await;
        (b, report)
    });
    // The lease is lost while the workloads are being read.
    gate_tx.send(following()).unwrap();
    answer_discovery(&mut api).await;
    let (_balancer, report) = task.await.unwrap();
    let report = report.unwrap();
    assert_eq!(report.plan.moves.len(), 1, "the decision is made");
    assert!(report.applied.is_empty(), "but nothing is moved");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), api.next())
            .await
            .is_err(),
        "no patch, no delete"
    );
}
