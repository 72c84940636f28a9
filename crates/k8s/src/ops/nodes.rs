//! Node preparation: keep analyzers off the control-plane node with a taint,
//! and label GPU nodes `gpu-node=<name>` (the label node affinity and the
//! GPU-aware policies rely on).
//!
//! The taint is the conventional `node-role.kubernetes.io/control-plane:NoSchedule`
//! (the one kubeadm installs and the scheduler Deployment in `deploy/`
//! tolerates). When `up` adds it, it also sets the annotation
//! [`TAINTED_ANNOTATION`] on the node; `down` removes the taint only from nodes
//! carrying that annotation, so a taint the cluster installer put there (kubeadm
//! does, K3s does not) is never removed.
//!
//! `spec.taints` is an atomic list for server-side apply (applying it would
//! replace other managers' taints), so taints are changed with a JSON merge
//! patch of the full list carrying the `resourceVersion` read just before, so
//! a concurrent change makes the API server answer 409 instead of losing it.
//! GPU node labels are set by [`crate::workload::label_gpu_nodes`] (for `up`
//! and `label-nodes` alike), which marks each with [`LABELLED_ANNOTATION`],
//! so [`unlabel_gpu_nodes`] (`down --purge`) removes only labels posture-farm
//! added.

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::OpsError;
use crate::workload::{LABELLED_ANNOTATION, labelled_key};

/// Key of the taint `up` puts on control-plane nodes (effect NoSchedule).
pub const MASTER_TAINT_KEY: &str = "node-role.kubernetes.io/control-plane";

/// Annotation marking that `up` (not the cluster installer) added the taint.
pub const TAINTED_ANNOTATION: &str = "posture-farm/master-tainted";

/// Labels that identify a control-plane node (current and legacy spelling).
pub const CONTROL_PLANE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// What happened to one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeChange {
    /// The node.
    pub node: String,
    /// What was done, e.g. `tainted`, `labelled gpu-node=orin`.
    pub action: String,
    /// False when the node already was as wanted (nothing sent).
    pub changed: bool,
}

fn name_of(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

/// Whether a node carries a control-plane role label.
pub fn is_control_plane(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| CONTROL_PLANE_LABELS.iter().any(|k| l.contains_key(*k)))
}

/// The nodes to taint: `explicit` (`--master`) when given, else every node
/// with a control-plane label.
pub fn masters(nodes: &[Node], explicit: Option<&str>) -> Vec<String> {
    match explicit {
        Some(name) => vec![name.to_string()],
        None => nodes
            .iter()
            .filter(|n| is_control_plane(n))
            .map(|n| name_of(n).to_string())
            .collect(),
    }
}

/// The GPU nodes: `explicit` (`--gpu-nodes`) when given, else every node that
/// is not a master.
pub fn gpu_nodes(nodes: &[Node], masters: &[String], explicit: &[String]) -> Vec<String> {
    if !explicit.is_empty() {
        return explicit.to_vec();
    }
    nodes
        .iter()
        .map(|n| name_of(n).to_string())
        .filter(|n| !masters.contains(n))
        .collect()
}

fn our_taint() -> Taint {
    Taint {
        key: MASTER_TAINT_KEY.to_string(),
        effect: "NoSchedule".to_string(),
        value: None,
        time_added: None,
    }
}

/// The node's taints with ours added; `None` when it is already there.
pub fn with_taint(taints: &[Taint]) -> Option<Vec<Taint>> {
    if taints
        .iter()
        .any(|t| t.key == MASTER_TAINT_KEY && t.effect == "NoSchedule")
    {
        return None;
    }
    let mut out = taints.to_vec();
    out.push(our_taint());
    Some(out)
}

/// The node's taints with ours removed; `None` when it is not there.
pub fn without_taint(taints: &[Taint]) -> Option<Vec<Taint>> {
    let ours = |t: &&Taint| t.key == MASTER_TAINT_KEY && t.effect == "NoSchedule";
    if !taints.iter().any(|t| ours(&t)) {
        return None;
    }
    Some(taints.iter().filter(|t| !ours(t)).cloned().collect())
}

/// Whether `up` added the node's control-plane taint.
pub fn tainted_by_us(node: &Node) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(TAINTED_ANNOTATION))
}

fn taints_of(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// Lists every node.
pub async fn list_nodes(client: &Client) -> Result<Vec<Node>, OpsError> {
    let api: Api<Node> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| OpsError::kube("list nodes", e))?;
    Ok(list.items)
}

/// Replaces the node's taint list, setting (`mark`) or clearing the ownership
/// annotation in the same write.
async fn patch_taints(
    api: &Api<Node>,
    node: &Node,
    taints: Vec<Taint>,
    mark: bool,
) -> Result<(), OpsError> {
    let name = name_of(node);
    let annotation = if mark {
        json!("true")
    } else {
        serde_json::Value::Null
    };
    let patch = json!({
        "metadata": {
            "resourceVersion": node.metadata.resource_version,
            "annotations": {TAINTED_ANNOTATION: annotation},
        },
        "spec": {"taints": taints},
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| OpsError::kube(format!("patch taints of node {name}"), e))?;
    Ok(())
}

/// Adds the posture taint to each named node (idempotent).
pub async fn taint(
    client: &Client,
    nodes: &[Node],
    names: &[String],
) -> Result<Vec<NodeChange>, OpsError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut changes = Vec::new();
    for name in names {
        let node = nodes.iter().find(|n| name_of(n) == name).ok_or_else(|| {
            OpsError::manifest(
                format!("node {name}"),
                "no such node in the cluster (check --master)",
            )
        })?;
        let changed = match with_taint(taints_of(node)) {
            Some(taints) => {
                patch_taints(&api, node, taints, true).await?;
                true
            }
            None => false,
        };
        tracing::info!(node = %name, changed, taint = MASTER_TAINT_KEY, "master tainted");
        changes.push(NodeChange {
            node: name.clone(),
            action: format!("tainted {MASTER_TAINT_KEY}:NoSchedule"),
            changed,
        });
    }
    Ok(changes)
}

/// Removes the control-plane taint from every node where `up` added it.
pub async fn untaint_all(client: &Client) -> Result<Vec<NodeChange>, OpsError> {
    let api: Api<Node> = Api::all(client.clone());
    let nodes = list_nodes(client).await?;
    let mut changes = Vec::new();
    for node in nodes.iter().filter(|n| tainted_by_us(n)) {
        // Annotated but the taint already gone (removed by hand): clear the mark only.
        let taints = without_taint(taints_of(node)).unwrap_or_else(|| taints_of(node).to_vec());
        {
            patch_taints(&api, node, taints, false).await?;
            tracing::info!(node = %name_of(node), taint = MASTER_TAINT_KEY, "master untainted");
            changes.push(NodeChange {
                node: name_of(node).to_string(),
                action: format!("untainted {MASTER_TAINT_KEY}"),
                changed: true,
            });
        }
    }
    Ok(changes)
}

/// Removes the GPU node labels posture-farm added (by `up` or
/// `label-nodes`: those marked with [`LABELLED_ANNOTATION`], whose value names
/// the label key), and the mark. Labels an operator set stay.
pub async fn unlabel_gpu_nodes(client: &Client) -> Result<Vec<NodeChange>, OpsError> {
    let api: Api<Node> = Api::all(client.clone());
    let nodes = api
        .list(&ListParams::default())
        .await
        .map_err(|e| OpsError::kube("list nodes", e))?;
    let mut changes = Vec::new();
    for node in &nodes.items {
        let Some(mark) = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LABELLED_ANNOTATION))
        else {
            continue;
        };
        let key = labelled_key(mark);
        let name = name_of(node);
        let patch = json!({"metadata": {"labels": {key: null}, "annotations": {LABELLED_ANNOTATION: null}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| OpsError::kube(format!("unlabel node {name}"), e))?;
        changes.push(NodeChange {
            node: name.to_string(),
            action: format!("removed label {key}"),
            changed: true,
        });
    }
    Ok(changes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_support::ApiMock;
    use serde_json::Value;

    pub(crate) fn node_json(name: &str, labels: Value, taints: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "resourceVersion": "100", "labels": labels},
            "spec": {"taints": taints},
        })
    }

    fn node(name: &str, labels: Value, taints: Value) -> Node {
        serde_json::from_value(node_json(name, labels, taints)).expect("valid node")
    }

    #[test]
    fn masters_are_detected_by_role_labels_or_named() {
        let nodes = vec![
            node(
                "nuc",
                json!({"node-role.kubernetes.io/control-plane": "true"}),
                json!([]),
            ),
            node(
                "old",
                json!({"node-role.kubernetes.io/master": ""}),
                json!([]),
            ),
            node("orin", json!({}), json!([])),
        ];
        assert_eq!(masters(&nodes, None), ["nuc", "old"]);
        assert_eq!(masters(&nodes, Some("orin")), ["orin"]);
        let m = masters(&nodes, None);
        assert_eq!(gpu_nodes(&nodes, &m, &[]), ["orin"]);
        assert_eq!(gpu_nodes(&nodes, &m, &["nuc".to_string()]), ["nuc"]);
    }

    #[test]
    fn taint_is_added_once_and_removed_without_touching_others() {
        let other = Taint {
            key: "gpu".into(),
            effect: "NoExecute".into(),
            ..Taint::default()
        };
        let added = with_taint(std::slice::from_ref(&other)).expect("added");
        assert_eq!(added.len(), 2);
        assert_eq!(
            with_taint(&added),
            None,
            "idempotent: an existing control-plane taint counts"
        );
        assert_eq!(without_taint(&added), Some(vec![other.clone()]));
        assert_eq!(without_taint(&[other]), None);
    }

    #[tokio::test]
    async fn taint_sends_full_list_with_resource_version_and_skips_tainted_nodes() {
        let (client, mut mock) = ApiMock::new();
        let nodes = vec![
            node(
                "nuc",
                json!({}),
                json!([{"key": "other", "effect": "NoExecute"}]),
            ),
            node(
                "done",
                json!({}),
                json!([{"key": MASTER_TAINT_KEY, "effect": "NoSchedule"}]),
            ),
        ];
        let task = tokio::spawn(async move {
            taint(&client, &nodes, &["nuc".to_string(), "done".to_string()]).await
        });
        let req = mock.expect_patch_node("nuc").await;
        assert_eq!(req.content_type, "application/merge-patch+json");
        assert_eq!(
            req.body,
            json!({"metadata": {"resourceVersion": "100", "annotations": {TAINTED_ANNOTATION: "true"}}, "spec": {"taints": [
                {"key": "other", "effect": "NoExecute"},
                {"key": MASTER_TAINT_KEY, "effect": "NoSchedule"},
            ]}})
        );
        req.respond(200, node_json("nuc", json!({}), json!([])));
        let changes = task.await.expect("joins").expect("ok");
        assert_eq!(
            changes.iter().map(|c| c.changed).collect::<Vec<_>>(),
            [true, false]
        );
    }

    #[tokio::test]
    async fn unknown_master_is_a_clear_error() {
        let (client, _mock) = ApiMock::new();
        let err = taint(&client, &[], &["ghost".to_string()])
            .await
            .expect_err("no node");
        assert!(err.to_string().contains("--master"), "{err}");
    }

    #[tokio::test]
    async fn untaint_all_removes_only_taints_up_added() {
        let (client, mut mock) = ApiMock::new();
        let task = tokio::spawn(async move { untaint_all(&client).await });
        let req = mock.expect_get("/api/v1/nodes").await;
        let mut nuc = node_json(
            "nuc",
            json!({}),
            json!([{"key": MASTER_TAINT_KEY, "effect": "NoSchedule"}, {"key": "keep", "effect": "NoSchedule"}]),
        );
        nuc["metadata"]["annotations"] = json!({TAINTED_ANNOTATION: "true"});
        req.respond(200, json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [
            nuc,
            node_json("orin", json!({}), json!([{"key": "keep", "effect": "NoSchedule"}])),
            // kubeadm's own taint, not ours: left alone.
            node_json("kubeadm", json!({}), json!([{"key": MASTER_TAINT_KEY, "effect": "NoSchedule"}])),
        ]}));
        let req = mock.expect_patch_node("nuc").await;
        assert_eq!(
            req.body["spec"]["taints"],
            json!([{"key": "keep", "effect": "NoSchedule"}])
        );
        assert_eq!(
            req.body["metadata"]["annotations"],
            json!({TAINTED_ANNOTATION: null}),
            "mark cleared"
        );
        req.respond(200, node_json("nuc", json!({}), json!([])));
        let changes = task.await.expect("joins").expect("ok");
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].node, "nuc");
    }

    /// `label-nodes` and `up` label through the same function, so `down
    /// --purge` takes off labels set by either (before, only `up` marked
    /// its labels and `down` left those of `label-nodes` behind).
    #[tokio::test]
    async fn labels_set_by_label_nodes_are_removed_by_down() {
        use crate::workload::{GPU_NODE_LABEL, label_gpu_nodes, read_nodes};
        let (client, mut mock) = ApiMock::new();
        let server = tokio::spawn(async move {
            // label-nodes orin: read, then label (and mark).
            mock.expect_get("/api/v1/nodes/orin")
                .await
                .respond(200, node_json("orin", json!({}), json!([])));
            let patch = mock.expect_patch_node("orin").await;
            let mut stored = node_json("orin", json!({}), json!([]));
            stored["metadata"]["labels"] = patch.body["metadata"]["labels"].clone();
            stored["metadata"]["annotations"] = patch.body["metadata"]["annotations"].clone();
            patch.respond(200, stored.clone());
            // down --purge: list nodes, remove what is marked, leave the rest.
            let list = mock.expect_get("/api/v1/nodes").await;
            let by_hand = node_json("agx", json!({GPU_NODE_LABEL: "agx"}), json!([]));
            list.respond(
                200,
                json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {},
                                     "items": [stored, by_hand]}),
            );
            let unlabel = mock.expect_patch_node("orin").await;
            assert_eq!(
                unlabel.body,
                json!({"metadata": {"labels": {GPU_NODE_LABEL: null}, "annotations": {LABELLED_ANNOTATION: null}}})
            );
            unlabel.respond(200, node_json("orin", json!({}), json!([])));
        });
        let names = ["orin".to_string()];
        let nodes = read_nodes(&client, &names).await.unwrap();
        label_gpu_nodes(&client, &nodes, &names, GPU_NODE_LABEL)
            .await
            .unwrap();
        let removed = unlabel_gpu_nodes(&client).await.unwrap();
        assert_eq!(
            removed.iter().map(|c| c.node.as_str()).collect::<Vec<_>>(),
            ["orin"]
        );
        server.await.unwrap();
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn taint_strategy() -> impl Strategy<Value = Taint> {
            (
                prop::sample::select(vec![
                    MASTER_TAINT_KEY,
                    "gpu",
                    "dedicated",
                    "node.kubernetes.io/not-ready",
                ]),
                prop::sample::select(vec!["NoSchedule", "PreferNoSchedule", "NoExecute"]),
            )
                .prop_map(|(k, e)| Taint {
                    key: k.into(),
                    effect: e.into(),
                    ..Taint::default()
                })
        }

        proptest! {
            /// Tainting then untainting gives back every taint that is not
            /// ours, in order; tainting is idempotent.
            #[test]
            fn taint_roundtrip_keeps_others(taints in prop::collection::vec(taint_strategy(), 0..6)) {
                let ours = |t: &Taint| t.key == MASTER_TAINT_KEY && t.effect == "NoSchedule";
                let tainted = with_taint(&taints).unwrap_or_else(|| taints.clone());
                prop_assert_eq!(tainted.iter().filter(|t| ours(t)).count().max(1), tainted.iter().filter(|t| ours(t)).count());
                prop_assert_eq!(with_taint(&tainted), None);
                let cleaned = without_taint(&tainted).unwrap_or(tainted);
                let others: Vec<Taint> = taints.iter().filter(|t| !ours(t)).cloned().collect();
                prop_assert_eq!(cleaned, others);
            }
        }
    }
}
