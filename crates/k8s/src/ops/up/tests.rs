use super::*;
use crate::ops::apply::ApplyAction;
use crate::ops::manifests::{Mode, RenderOptions, embedded, render};
use crate::ops::nodes::tests::node_json;
use crate::ops::test_cluster::Cluster;
use crate::test_support::ApiMock;
use serde_json::json;
use std::time::Duration;

fn plan_for(mode: Mode) -> ApplyPlan {
    render(
        &embedded(),
        &RenderOptions {
            mode,
            ..RenderOptions::default()
        },
    )
    .expect("renders")
    .plan
}

/// Runs `deploy` (no waiting) against `cluster`; returns the report and
/// what the recorded exchange pruned.
async fn up(cluster: &mut Cluster, plan: &ApplyPlan) -> (DeployReport, Vec<String>) {
    let (client, mut mock) = ApiMock::new();
    let p = plan.clone();
    let task = tokio::spawn(async move { deploy(&client, &p, "posture", None, |_| {}).await });
    let pruned = cluster.serve_deploy(&mut mock, plan).await;
    let report = task.await.expect("joins").expect("deploys");
    (report, pruned)
}

#[tokio::test]
async fn each_mode_is_created_once_and_a_second_up_changes_nothing() {
    for mode in Mode::ALL {
        let plan = plan_for(mode);
        let mut cluster = Cluster::default();
        let (first, pruned) = up(&mut cluster, &plan).await;
        assert!(pruned.is_empty() && first.pruned.is_empty());
        assert!(
            first
                .applied
                .iter()
                .all(|o| o.action == ApplyAction::Created),
            "{}: {:?}",
            mode.as_str(),
            first.applied
        );
        // The broker and the database (issue 12.3) with their Services and
        // the generated credentials.
        assert_eq!(cluster.names("StatefulSet"), ["mqtt-broker", "posture-db"]);
        for service in ["mqtt-broker", "posture-db"] {
            assert!(cluster.names("Service").contains(&service.to_string()));
        }
        assert_eq!(cluster.names("Secret"), ["posture-db"]);
        let (second, pruned) = up(&mut cluster, &plan).await;
        assert!(pruned.is_empty(), "{}: {pruned:?}", mode.as_str());
        assert!(
            second
                .applied
                .iter()
                .all(|o| o.action == ApplyAction::Unchanged),
            "{}: {:?}",
            mode.as_str(),
            second.applied
        );
    }
}

#[tokio::test]
async fn switching_mode_removes_the_previous_modes_workloads() {
    let mut cluster = Cluster::default();
    up(&mut cluster, &plan_for(Mode::RoundRobin)).await;
    assert_eq!(
        cluster.names("Deployment"),
        ["posture-dashboard", "rr-scheduler"]
    );

    // round-robin → gpu: another scheduler; the Jobs keep their names but
    // name gpu-scheduler now, so each is replaced.
    let (report, pruned) = up(&mut cluster, &plan_for(Mode::Gpu)).await;
    assert!(
        pruned.contains(&"Deployment rr-scheduler".to_string()),
        "{pruned:?}"
    );
    assert!(pruned.contains(&"ClusterRole posture-farm-rr-scheduler-read".to_string()));
    assert!(pruned.contains(&"ServiceAccount rr-scheduler".to_string()));
    for gone in [
        "PodDisruptionBudget rr-scheduler",
        "Role posture-farm-rr-scheduler-lease",
        "Role posture-farm-rr-state",
    ] {
        assert!(pruned.contains(&gone.to_string()), "{gone}: {pruned:?}");
    }
    assert_eq!(cluster.names("PodDisruptionBudget"), ["gpu-scheduler"]);
    assert!(!pruned.iter().any(|p| p.starts_with("Job ")), "{pruned:?}");
    let replaced = report
        .applied
        .iter()
        .filter(|o| o.action == ApplyAction::Replaced)
        .count();
    assert_eq!(replaced, 10, "every Job names the new scheduler");
    assert_eq!(
        cluster.names("Deployment"),
        ["gpu-scheduler", "posture-dashboard"]
    );
    for job in cluster.ours("Job") {
        assert_eq!(
            job.value["spec"]["template"]["spec"]["schedulerName"],
            "gpu-scheduler"
        );
    }

    // gpu → keda: the Jobs go, ScaledJobs and the scaler come.
    let (_, pruned) = up(&mut cluster, &plan_for(Mode::Keda)).await;
    assert_eq!(pruned.iter().filter(|p| p.starts_with("Job ")).count(), 10);
    assert!(pruned.contains(&"Deployment gpu-scheduler".to_string()));
    assert!(cluster.names("Job").is_empty());
    assert_eq!(cluster.names("ScaledJob").len(), 10);
    assert_eq!(
        cluster.names("Deployment"),
        ["posture-dashboard", "posture-scaler"]
    );

    // keda → priority: ScaledJobs, scaler, its NetworkPolicy and RBAC go.
    let (_, pruned) = up(&mut cluster, &plan_for(Mode::Priority)).await;
    assert_eq!(
        pruned
            .iter()
            .filter(|p| p.starts_with("ScaledJob "))
            .count(),
        10
    );
    for gone in [
        "Deployment posture-scaler",
        "NetworkPolicy posture-scaler",
        "Role posture-balancer",
        "Service posture-scaler",
    ] {
        assert!(pruned.contains(&gone.to_string()), "{gone}: {pruned:?}");
    }
    assert!(cluster.names("ScaledJob").is_empty());
    assert_eq!(
        cluster.names("Deployment"),
        ["posture-dashboard", "posture-priority"]
    );
    assert!(
        pruned.contains(&"PodDisruptionBudget posture-scaler".to_string()),
        "{pruned:?}"
    );
    assert_eq!(cluster.names("PodDisruptionBudget"), ["posture-priority"]);
    assert_eq!(cluster.names("PriorityClass").len(), 3);
    // Data and configuration stay through every switch.
    assert_eq!(cluster.names("Secret"), ["posture-db"]);
    assert_eq!(cluster.names("StatefulSet"), ["mqtt-broker", "posture-db"]);
}

#[tokio::test]
async fn objects_owned_by_others_are_never_pruned() {
    let mut cluster = Cluster::default();
    up(&mut cluster, &plan_for(Mode::Keda)).await;
    // A Job KEDA created from a ScaledJob, carrying our labels.
    cluster.insert(
        crate::ops::plan::kind_info("batch/v1", "Job").expect("known"),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {
            "name": "posture-pi1-x7k", "namespace": "posture",
            "labels": {"app.kubernetes.io/managed-by": "posture-farm"},
            "ownerReferences": [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "name": "posture-pi1", "uid": "u"}]}}),
    );
    let (_, pruned) = up(&mut cluster, &plan_for(Mode::Keda)).await;
    assert!(pruned.is_empty(), "{pruned:?}");
    assert_eq!(cluster.names("Job"), ["posture-pi1-x7k"]);
}

#[tokio::test(start_paused = true)]
async fn prepare_then_deploy_waits_for_the_platform_then_the_scheduler_and_pods() {
    let plan = render(
        &embedded(),
        &RenderOptions {
            cameras: Some(1),
            ..RenderOptions::default()
        },
    )
    .expect("renders")
    .plan;
    let (client, mut mock) = ApiMock::new();
    let p = plan.clone();
    let task = tokio::spawn(async move {
        let nodes = prepare_nodes(&client, &NodeOptions::default()).await?;
        let cfg = WaitConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
        };
        let mut waits = Vec::new();
        let out = deploy(&client, &p, "posture", Some(cfg), |e| {
            if let DeployEvent::Waiting(w) = e {
                waits.push(w.what.clone());
            }
        })
        .await?;
        Ok::<_, OpsError>((nodes, out, waits))
    });
    // Nodes: the master gets the taint, the worker the label.
    let req = mock.next().await;
    assert_eq!(req.path, "/api/v1/nodes");
    req.respond(
        200,
        json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [
            node_json("nuc", json!({"node-role.kubernetes.io/control-plane": "true"}), json!([])),
            node_json("orin", json!({}), json!([])),
        ]}),
    );
    let req = mock.expect_patch_node("nuc").await;
    assert_eq!(
        req.body["spec"]["taints"][0]["key"],
        "node-role.kubernetes.io/control-plane"
    );
    req.respond(200, node_json("nuc", json!({}), json!([])));
    let req = mock.expect_patch_node("orin").await;
    assert_eq!(req.body["metadata"]["labels"]["gpu-node"], "orin");
    req.respond(
        200,
        node_json("orin", json!({"gpu-node": "orin"}), json!([])),
    );

    let mut cluster = Cluster::default();
    cluster.serve_prune(&mut mock, &plan).await;
    let (platform, rest): (Vec<_>, Vec<_>) = plan
        .objects
        .iter()
        .partition(|o| o.stage <= Stage::Platform);
    cluster.serve_applies(&mut mock, &platform).await;
    // The broker and the database must be ready before anything else starts.
    for name in ["mqtt-broker", "posture-db"] {
        for ready in [0, 1] {
            let req = mock
                .expect_get(
                    format!("/apis/apps/v1/namespaces/posture/statefulsets/{name}").as_str(),
                )
                .await;
            req.respond(200, json!({
                "metadata": {"name": name, "namespace": "posture", "generation": 1},
                "spec": {"replicas": 1, "serviceName": name, "selector": {}, "template": {}},
                "status": {"replicas": 1, "observedGeneration": 1, "updatedReplicas": 1, "readyReplicas": ready},
            }));
        }
    }
    cluster.serve_applies(&mut mock, &rest).await;
    // The dashboard is available at once; the scheduler after a second poll.
    let ready = |name: &str, available: i32| {
        json!({
            "metadata": {"name": name, "namespace": "posture", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "updatedReplicas": available, "availableReplicas": available},
        })
    };
    mock.expect_get("/apis/apps/v1/namespaces/posture/deployments/posture-dashboard")
        .await
        .respond(200, ready("posture-dashboard", 1));
    for available in [0, 1] {
        let req = mock
            .expect_get("/apis/apps/v1/namespaces/posture/deployments/rr-scheduler")
            .await;
        req.respond(200, json!({
            "metadata": {"name": "rr-scheduler", "namespace": "posture", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "updatedReplicas": available, "availableReplicas": available},
        }));
    }
    let req = mock.expect_get("/api/v1/namespaces/posture/pods").await;
    req.respond(200, json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "metadata": {"name": "posture-pi1-abcde", "namespace": "posture",
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "posture-pi1", "uid": "u"}]},
        "spec": {"containers": [], "nodeName": "orin"},
    }]}));
    let (nodes, out, waits) = task.await.expect("joins").expect("ok");
    assert_eq!(nodes.masters, ["nuc"]);
    assert_eq!(nodes.gpu_nodes, ["orin"]);
    assert!(out.applied.iter().all(|o| o.action == ApplyAction::Created));
    assert_eq!(
        waits.first().map(String::as_str),
        Some("statefulset posture/mqtt-broker")
    );
    assert_eq!(waits.len(), 8, "{waits:?}");
}

#[tokio::test]
async fn a_secret_is_read_as_strings_or_absent() {
    let (client, mut mock) = ApiMock::new();
    let task = tokio::spawn(async move {
        let found = read_secret(&client, "posture", "posture-db").await?;
        let missing = read_secret(&client, "posture", "posture-db").await?;
        Ok::<_, OpsError>((found, missing))
    });
    mock.expect_get("/api/v1/namespaces/posture/secrets/posture-db")
        .await
        .respond(
            200,
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "posture-db", "namespace": "posture"},
            "data": {"POSTGRES_PASSWORD": "cHc="}}),
        );
    mock.expect_get("/api/v1/namespaces/posture/secrets/posture-db")
        .await
        .respond(
            404,
            crate::test_support::status_json(404, "NotFound", "not found"),
        );
    let (found, missing) = task.await.expect("joins").expect("ok");
    assert_eq!(
        found
            .expect("present")
            .get("POSTGRES_PASSWORD")
            .map(String::as_str),
        Some("pw")
    );
    assert!(missing.is_none());
}
