use super::*;
use crate::ops::manifests::{Mode, RenderOptions, embedded, render};
use crate::ops::plan::{config_kinds, kind_info};
use crate::ops::test_cluster::{Cluster, list_path, pod_kind};
use crate::test_support::{ApiMock, status_json};
use serde_json::json;

const OURS: &str = "app.kubernetes.io/managed-by";

/// The cluster a finished `up --mode <mode>` leaves: the plan's objects,
/// the pods their controllers made, the data volumes of the StatefulSets,
/// and (KEDA) a Job KEDA spawned.
fn cluster_after_up(mode: Mode) -> Cluster {
    let plan = render(
        &embedded(),
        &RenderOptions {
            mode,
            ..RenderOptions::default()
        },
    )
    .expect("renders")
    .plan;
    let mut cluster = Cluster::default();
    cluster.install(&plan);
    let pod = |name: &str, owner: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "posture",
            "labels": {OURS: "posture-farm"},
            "ownerReferences": [{"apiVersion": "v1", "kind": owner, "name": name, "uid": "u"}]}})
    };
    for (name, owner) in [
        ("posture-pi1-abc", "Job"),
        ("mqtt-broker-0", "StatefulSet"),
        ("posture-db-0", "StatefulSet"),
        ("controller-5d9f-x", "ReplicaSet"),
    ] {
        cluster.insert(pod_kind(), pod(name, owner));
    }
    let pvc = kind_info("v1", "PersistentVolumeClaim").expect("known");
    for name in ["data-mqtt-broker-0", "data-posture-db-0"] {
        cluster.insert(
            pvc.clone(),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": name, "namespace": "posture", "labels": {OURS: "posture-farm"}}}),
        );
    }
    if mode == Mode::Keda {
        // KEDA's Job for a ScaledJob, without our label.
        cluster.insert(
            kind_info("batch/v1", "Job").expect("known"),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "posture-pi1-x7k",
                "namespace": "posture", "labels": {"scaledjob.keda.sh/name": "posture-pi1"}}}),
        );
    }
    cluster
}

async fn down(cluster: &mut Cluster, purge: bool) -> (Vec<Deleted>, Vec<String>) {
    let (client, mut mock) = ApiMock::new();
    let task = tokio::spawn(async move { teardown(&client, purge).await });
    let served = cluster.serve_down(&mut mock, purge).await;
    (task.await.expect("joins").expect("ok"), served)
}

/// Kinds that run or recreate an analyzer.
const RECREATE: [&str; 6] = [
    "ScaledJob",
    "Job",
    "Deployment",
    "DaemonSet",
    "StatefulSet",
    "Pod",
];

#[tokio::test]
async fn down_after_each_mode_leaves_nothing_that_recreates_analyzers_and_keeps_the_data() {
    for mode in Mode::ALL {
        let mut cluster = cluster_after_up(mode);
        let (deleted, served) = down(&mut cluster, false).await;
        let deleted: Vec<String> = deleted.iter().map(ToString::to_string).collect();
        assert_eq!(
            deleted.len(),
            served.len(),
            "{}: {deleted:?}",
            mode.as_str()
        );
        for kind in RECREATE {
            assert!(
                cluster.objects.iter().all(|o| o.kind.resource.kind != kind),
                "{}: a {kind} is left",
                mode.as_str()
            );
        }
        if mode == Mode::Keda {
            // ScaledJobs first, so KEDA stops creating Jobs.
            assert!(deleted[0].starts_with("ScaledJob posture/"), "{deleted:?}");
            assert!(deleted.contains(&"Job posture/posture-pi1-x7k".to_string()));
        }
        // RBAC, namespace, Secrets, config and the data volumes stay.
        assert_eq!(cluster.names("Namespace"), ["posture"]);
        assert_eq!(cluster.names("Secret"), ["posture-db"]);
        assert_eq!(
            cluster.names("PersistentVolumeClaim"),
            ["data-mqtt-broker-0", "data-posture-db-0"]
        );
        assert!(!cluster.names("ServiceAccount").is_empty());
        assert!(!cluster.names("ConfigMap").is_empty());

        // A second down finds nothing to stop.
        let (again, _) = down(&mut cluster, false).await;
        assert!(again.is_empty(), "{}: {again:?}", mode.as_str());

        // --purge removes the rest of ours, the namespace last.
        let (purged, _) = down(&mut cluster, true).await;
        assert_eq!(
            purged.last().map(ToString::to_string).as_deref(),
            Some("Namespace posture")
        );
        assert!(
            cluster.objects.is_empty(),
            "{:?}",
            cluster.names("ConfigMap")
        );
    }
}

#[tokio::test]
async fn down_on_an_empty_cluster_lists_and_deletes_nothing() {
    for purge in [false, true] {
        let (client, mut mock) = ApiMock::new();
        let task = tokio::spawn(async move { teardown(&client, purge).await });
        // No KEDA installed: the ScaledJob path is not served.
        let running = running_kinds();
        for kind in &running {
            let req = mock.expect_get(list_path(kind).as_str()).await;
            if kind.resource.kind == "ScaledJob" {
                req.respond(
                    404,
                    status_json(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    ),
                );
            } else {
                req.respond(
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
                );
            }
        }
        mock.expect_get("/api/v1/pods").await.respond(
            200,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
        );
        if purge {
            for kind in config_kinds() {
                mock.expect_get(list_path(&kind).as_str()).await.respond(
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
                );
            }
        }
        let deleted = task.await.expect("joins").expect("ok");
        assert!(deleted.is_empty(), "{deleted:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_for_pods_to_go_reports_the_ones_left() {
    let (client, mut mock) = ApiMock::new();
    let cfg = WaitConfig {
        interval: std::time::Duration::from_secs(1),
        timeout: std::time::Duration::from_secs(2),
    };
    let task = tokio::spawn(async move { wait_pods_gone(&client, cfg).await });
    let pod = json!({"metadata": {"name": "posture-db-0", "namespace": "posture"}});
    for _ in 0..3 {
        mock.expect_get("/api/v1/pods").await.respond(
            200,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [pod]}),
        );
    }
    let left = task.await.expect("joins").expect("ok");
    assert_eq!(left, ["posture/posture-db-0"]);
}
