use super::*;
use crate::test_support::ApiMock;
use posture_core::gpu::{GpuSample, NodeUsage, UsageState};
use serde_json::{Value, json};

pub(crate) fn pod_json(name: &str, node: Option<&str>, phase: &str, job: bool) -> Value {
    let owners = if job {
        json!([{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "u"}])
    } else {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u"}])
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "ownerReferences": owners,
                     "labels": {"app.kubernetes.io/managed-by": "posture-farm"}},
        "spec": {"containers": [], "nodeName": node},
        "status": {"phase": phase},
    })
}

fn event(pod: &str, at: &str, msg: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{pod}.{at}"), "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": "default"},
        "reason": "FailedScheduling", "message": msg, "lastTimestamp": at,
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {}, "items": items})
}

#[test]
fn report_counts_pods_per_node_and_explains_pending_ones() {
    let inputs = StatusInputs {
        pods: [
            pod_json("posture-pi1-x", Some("orin"), "Running", true),
            pod_json("posture-pi1-1-x", Some("orin"), "Running", true),
            pod_json("posture-pi1-2-x", None, "Pending", true),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("pod"))
        .collect(),
        nodes: [
            crate::ops::nodes::tests::node_json("orin", json!({"gpu-node": "orin"}), json!([])),
            crate::ops::nodes::tests::node_json(
                "nuc",
                json!({}),
                json!([{"key": MASTER_TAINT_KEY, "effect": "NoSchedule"}]),
            ),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("node"))
        .collect(),
        jobs: vec![
            serde_json::from_value(json!({"spec": {"template": {"spec": {
                "schedulerName": "gpu-scheduler", "containers": []}}}}))
            .expect("job");
            3
        ],
        scaled_jobs: vec![],
        components: vec![ComponentRow {
            kind: "StatefulSet",
            namespace: "posture".into(),
            name: "posture-db".into(),
            component: "database".into(),
            ready: 0,
            desired: 1,
        }],
        dashboard: None,
        events: [
            event("posture-pi1-2-x", "2026-11-23T10:00:00Z", "old reason"),
            event(
                "posture-pi1-2-x",
                "2026-11-23T10:05:00Z",
                "0/2 nodes are available: 1 node(s) had untolerated taint",
            ),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("event"))
        .collect(),
    };
    let mut gpu = GpuSnapshot::default();
    gpu.nodes.insert(
        "orin".into(),
        NodeUsage {
            sample: Some(GpuSample {
                usage_percent: 42.0,
                sampled_at: 0,
            }),
            state: UsageState::Ok,
            error: None,
        },
    );
    let r = summarise(&inputs, Some(&gpu));
    assert_eq!(r.mode, "gpu", "the Jobs name gpu-scheduler");
    assert_eq!(r.components.len(), 1);
    assert_eq!(
        r.nodes
            .iter()
            .map(|n| (n.name.as_str(), n.pods))
            .collect::<Vec<_>>(),
        [("nuc", 0), ("orin", 2)]
    );
    assert_eq!(r.nodes[1].gpu_percent, Some(42.0));
    assert_eq!(r.nodes[0].gpu_state, Some("missing"));
    assert!(r.nodes[0].tainted && !r.nodes[0].gpu_labelled);
    let pending: Vec<&PodRow> = r.pending().collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].pending_reason.as_deref(),
        Some("0/2 nodes are available: 1 node(s) had untolerated taint")
    );
    assert_eq!(
        r.pods.last().map(|p| p.name.as_str()),
        Some("posture-pi1-2-x"),
        "unscheduled last"
    );
    let none = summarise(&StatusInputs::default(), None);
    assert_eq!(none.mode, "not deployed");
    let keda = StatusInputs {
        scaled_jobs: vec!["posture/posture-pi1".into()],
        ..StatusInputs::default()
    };
    assert_eq!(summarise(&keda, None).mode, "keda");
}

#[tokio::test]
async fn pinned_scaled_jobs_reads_the_gpu_node_affinity() {
    let (client, mut mock) = ApiMock::new();
    let task = tokio::spawn(async move { pinned_scaled_jobs(&client, "posture").await });
    let req = mock.next().await;
    assert_eq!(req.path, "/apis/keda.sh/v1alpha1/scaledjobs");
    let sj = |name: &str, ns: &str, node: Option<&str>| {
        let spec = match node {
            Some(n) => {
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gpu-node", "operator": "In", "values": [n]}]}]}}}})
            }
            None => json!({}),
        };
        json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": name, "namespace": ns},
               "spec": {"jobTargetRef": {"template": {"spec": spec}}}})
    };
    req.respond(
        200,
        list(
            "ScaledJobList",
            vec![
                sj("posture-pi1", "posture", Some("orin")),
                sj("posture-pi1-1", "posture", None),
                sj("posture-pi1", "other", Some("agx")),
            ],
        ),
    );
    let pins = task.await.expect("joins").expect("ok");
    assert_eq!(
        pins,
        BTreeMap::from([("posture-pi1".to_string(), "orin".to_string())])
    );
}

#[tokio::test]
async fn gather_reads_by_label_and_tolerates_missing_keda_crd() {
    let (client, mut mock) = ApiMock::new();
    let task = tokio::spawn(async move { gather(&client).await });
    let req = mock.next().await;
    assert_eq!(req.path, "/api/v1/pods");
    assert!(
        req.query
            .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dposture-farm")
    );
    req.respond(
        200,
        list("PodList", vec![pod_json("p", None, "Pending", true)]),
    );
    let req = mock.next().await;
    assert_eq!(req.path, "/api/v1/nodes");
    req.respond(200, list("NodeList", vec![]));
    let req = mock.next().await;
    assert_eq!(req.path, "/apis/batch/v1/jobs");
    req.respond(200, list("JobList", vec![]));
    let req = mock.next().await;
    assert_eq!(req.path, "/apis/keda.sh/v1alpha1/scaledjobs");
    req.respond(
        404,
        crate::test_support::status_json(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    );
    let req = mock.next().await;
    assert_eq!(req.path, "/api/v1/namespaces/default/events");
    assert!(
        req.query
            .contains("fieldSelector=involvedObject.kind%3DPod%2Creason%3DFailedScheduling"),
        "{}",
        req.query
    );
    req.respond(
        200,
        list(
            "EventList",
            vec![event("p", "2026-11-23T10:00:00Z", "no nodes")],
        ),
    );
    let req = mock.expect_get("/apis/apps/v1/deployments").await;
    assert!(req.query.contains("managed-by"), "{}", req.query);
    req.respond(
        200,
        list(
            "DeploymentList",
            vec![json!({
        "metadata": {"name": "rr-scheduler", "namespace": "posture", "generation": 1,
                     "labels": {"app.kubernetes.io/component": "scheduler"}},
        "spec": {"replicas": 1, "selector": {}, "template": {}},
        "status": {"observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 1}})],
        ),
    );
    mock.expect_get("/apis/apps/v1/statefulsets")
        .await
        .respond(200, list("StatefulSetList", vec![]));
    mock.expect_get("/apis/apps/v1/daemonsets")
        .await
        .respond(200, list("DaemonSetList", vec![]));
    let req = mock.expect_get("/api/v1/services").await;
    assert!(req.query.contains("posture-dashboard"), "{}", req.query);
    req.respond(
        200,
        list(
            "ServiceList",
            vec![json!({
        "metadata": {"name": "posture-dashboard", "namespace": "posture"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 8080, "nodePort": 31080}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.79"}]}}})],
        ),
    );
    let inputs = task.await.expect("joins").expect("ok");
    let r = summarise(&inputs, None);
    assert_eq!(r.pods[0].pending_reason.as_deref(), Some("no nodes"));
    assert_eq!(
        r.dashboard,
        [
            "http://posture-dashboard.posture.svc.cluster.local:8080 (in the cluster)",
            "http://192.168.1.79:8080",
            "http://<any node>:31080"
        ]
    );
    assert_eq!(
        r.components,
        [ComponentRow {
            kind: "Deployment",
            namespace: "posture".into(),
            name: "rr-scheduler".into(),
            component: "scheduler".into(),
            ready: 1,
            desired: 1,
        }]
    );
    assert!(r.nodes.is_empty());
}

#[test]
fn renders_nodes_pods_and_pending_reasons() {
    let report = StatusReport {
        mode: "round-robin",
        dashboard: vec![
            "http://posture-dashboard.posture.svc.cluster.local:8080 (in the cluster)".into(),
        ],
        components: vec![ComponentRow {
            kind: "StatefulSet",
            namespace: "posture".into(),
            name: "mqtt-broker".into(),
            component: "broker".into(),
            ready: 1,
            desired: 1,
        }],
        jobs: 2,
        scaled_jobs: 0,
        nodes: vec![NodeRow {
            name: "orin".into(),
            pods: 1,
            gpu_percent: Some(12.5),
            gpu_state: Some("ok"),
            tainted: false,
            gpu_labelled: true,
        }],
        pods: vec![
            PodRow {
                namespace: "default".into(),
                name: "posture-pi1-x".into(),
                node: Some("orin".into()),
                phase: "Running".into(),
                role: "analyzer",
                pending_reason: None,
            },
            PodRow {
                namespace: "default".into(),
                name: "posture-pi1-1-y".into(),
                node: None,
                phase: "Pending".into(),
                role: "analyzer",
                pending_reason: Some("0/1 nodes are available".into()),
            },
        ],
    };
    let text = render(&report, true);
    assert!(text.starts_with("mode: round-robin   jobs: 2"), "{text}");
    assert!(
        text.contains("orin  1     yes        -             12.5% ok"),
        "{text}"
    );
    assert!(
        text.contains("default/posture-pi1-x    analyzer  Running  orin"),
        "{text}"
    );
    assert!(
        text.contains("default/posture-pi1-1-y: 0/1 nodes are available"),
        "{text}"
    );
    assert!(
        text.contains("posture/mqtt-broker  StatefulSet  broker  1/1"),
        "{text}"
    );
    assert!(
        text.contains("dashboard: http://posture-dashboard.posture.svc.cluster.local:8080"),
        "{text}"
    );
}

#[test]
fn each_nodes_gpu_reading_shows_with_its_state() {
    let node = |name: &str| {
        serde_json::from_value::<Node>(crate::ops::nodes::tests::node_json(
            name,
            json!({"gpu-node": name}),
            json!([]),
        ))
        .expect("node")
    };
    let inputs = StatusInputs {
        nodes: vec![node("agx"), node("nano"), node("orin")],
        ..StatusInputs::default()
    };
    let mut gpu = GpuSnapshot::default();
    let reading = |percent, state| NodeUsage {
        sample: Some(GpuSample {
            usage_percent: percent,
            sampled_at: 0,
        }),
        state,
        error: None,
    };
    gpu.nodes
        .insert("agx".into(), reading(42.0, UsageState::Ok));
    gpu.nodes
        .insert("orin".into(), reading(37.5, UsageState::Stale));
    let text = render(&summarise(&inputs, Some(&gpu)), true);
    assert!(
        text.contains("agx   0     yes        -             42.0% ok"),
        "{text}"
    );
    assert!(
        text.contains("nano  0     yes        -             missing"),
        "{text}"
    );
    assert!(
        text.contains("orin  0     yes        -             37.5% stale"),
        "{text}"
    );
}
