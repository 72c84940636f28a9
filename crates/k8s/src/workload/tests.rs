use super::*;
use crate::test_support::{ApiMock, status_json};

fn node_json(name: &str, labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "resourceVersion": "1", "labels": labels, "annotations": annotations},
           "spec": {}, "status": {}})
}

fn node(name: &str, labels: Value) -> Node {
    serde_json::from_value(node_json(name, labels, json!({}))).unwrap()
}

#[test]
fn affinity_pins_with_one_in_requirement_and_reads_back() {
    let affinity = node_affinity(GPU_NODE_LABEL, "agx");
    let spec = json!({"affinity": {"nodeAffinity": serde_json::to_value(&affinity).unwrap()}});
    assert_eq!(
        spec.pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0"),
        Some(&json!({"key": "gpu-node", "operator": "In", "values": ["agx"]}))
    );
    assert_eq!(pinned_node(&spec, GPU_NODE_LABEL).as_deref(), Some("agx"));
    assert_eq!(pinned_node(&spec, "other"), None);
    assert_eq!(pinned_node(&json!({}), GPU_NODE_LABEL), None);
}

#[test]
fn kinds_name_their_resources_and_pod_specs() {
    assert_eq!(api_resource(WorkloadKind::ScaledJob).plural, "scaledjobs");
    assert_eq!(
        api_resource(WorkloadKind::ScaledJob).api_version,
        SCALEDJOB_API_VERSION
    );
    assert_eq!(api_resource(WorkloadKind::Job).plural, "jobs");
    assert_eq!(
        pod_spec_pointer(WorkloadKind::ScaledJob),
        "/spec/jobTargetRef/template/spec"
    );
    assert_eq!(labelled_key("true"), GPU_NODE_LABEL);
    assert_eq!(labelled_key("accel"), "accel");
}

#[tokio::test]
async fn labels_are_set_once_and_marked() {
    let (client, mut mock) = ApiMock::new();
    let nodes = vec![
        node("orin", json!({})),
        node("agx", json!({"gpu-node": "agx"})),
    ];
    let task = tokio::spawn(async move {
        label_gpu_nodes(
            &client,
            &nodes,
            &["orin".to_string(), "agx".to_string()],
            GPU_NODE_LABEL,
        )
        .await
    });
    let req = mock.expect_patch_node("orin").await;
    assert_eq!(req.content_type, "application/merge-patch+json");
    assert_eq!(
        req.body,
        json!({"metadata": {"labels": {"gpu-node": "orin"}, "annotations": {LABELLED_ANNOTATION: "gpu-node"}}})
    );
    req.respond(
        200,
        node_json("orin", json!({"gpu-node": "orin"}), json!({})),
    );
    let changes = task.await.unwrap().unwrap();
    assert_eq!(
        changes,
        [
            LabelOutcome {
                node: "orin".into(),
                before: None,
                changed: true
            },
            LabelOutcome {
                node: "agx".into(),
                before: Some("agx".into()),
                changed: false
            },
        ]
    );
}

#[tokio::test]
async fn read_then_label_patches_only_what_differs() {
    let (client, mut mock) = ApiMock::new();
    let server = tokio::spawn(async move {
        mock.expect_get("/api/v1/nodes/agx")
            .await
            .respond(200, node_json("agx", json!({"gpu-node": "agx"}), json!({})));
        mock.expect_get("/api/v1/nodes/orin").await.respond(
            200,
            node_json("orin", json!({"kubernetes.io/hostname": "orin"}), json!({})),
        );
        let r = mock.expect_patch_node("orin").await;
        assert_eq!(r.content_type, "application/merge-patch+json");
        assert_eq!(
            r.body,
            json!({"metadata": {"labels": {"gpu-node": "orin"}, "annotations": {LABELLED_ANNOTATION: "gpu-node"}}})
        );
        r.respond(
            200,
            node_json("orin", json!({"gpu-node": "orin"}), json!({})),
        );

        mock.expect_get("/api/v1/nodes/ghost").await.respond(
            404,
            status_json(404, "NotFound", "nodes \"ghost\" not found"),
        );
    });
    let names = ["agx".to_string(), "orin".to_string()];
    let nodes = read_nodes(&client, &names).await.unwrap();
    let out = label_gpu_nodes(&client, &nodes, &names, "gpu-node")
        .await
        .unwrap();
    assert_eq!(
        out,
        [
            LabelOutcome {
                node: "agx".into(),
                before: Some("agx".into()),
                changed: false
            },
            LabelOutcome {
                node: "orin".into(),
                before: None,
                changed: true
            },
        ]
    );
    let err = read_nodes(&client, &["ghost".into()]).await.unwrap_err();
    assert_eq!(err.to_string(), "reading node ghost");
    server.await.unwrap();
}

#[tokio::test]
async fn unknown_node_is_refused_before_any_patch() {
    let (client, _mock) = ApiMock::new();
    let err = label_gpu_nodes(&client, &[], &["ghost".into()], GPU_NODE_LABEL)
        .await
        .unwrap_err();
    assert!(matches!(err, LabelError::NoSuchNode { ref node } if node == "ghost"));
}
