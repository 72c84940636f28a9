//! The ground floor: the vocabulary every wing shares, written once — the
//! KEDA ScaledJob resource, the `gpu-node` label and its pinning affinity,
//! the `posture-farm` field manager, the workload kinds (reusing
//! [`posture_core::balance::WorkloadKind`]), the 404 test, and the one
//! function that labels GPU nodes.
//!
//! ```text
//!  place ─┐                          ┌─ scaledjob_resource · pod_spec_pointer
//!  ops ───┼─► workload (this module) ┼─ GPU_NODE_LABEL · node_affinity · pinned_node
//!  balancer┘                         └─ read_nodes · label_gpu_nodes ─► PATCH nodes/{name} (label + LABELLED_ANNOTATION)
//! ```
//!
//! Labels set by [`label_gpu_nodes`] carry [`LABELLED_ANNOTATION`] (its value
//! is the label key), whether `up` or `label-nodes` set them, so `down --purge`
//! removes exactly the labels posture-farm added and never one an operator
//! set by hand.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};
use kube::api::{ApiResource, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

pub use posture_core::balance::WorkloadKind;

/// Field manager of every object posture-farm applies or patches (`up`,
/// `place --apply`, the GPU profile's state ConfigMap). Re-applying the same
/// content with the same manager is a no-op, which makes those idempotent.
pub const FIELD_MANAGER: &str = "posture-farm";

/// The node label placement pins to; its value is the node's name
/// (`gpu-node=<name>`).
pub const GPU_NODE_LABEL: &str = "gpu-node";

/// Annotation marking that posture-farm (not the operator) set a GPU node
/// label; its value is the label key (`true` from older versions means
/// [`GPU_NODE_LABEL`]).
pub const LABELLED_ANNOTATION: &str = "posture-farm/gpu-node-labelled";

/// API group of KEDA's ScaledJob.
pub const SCALEDJOB_GROUP: &str = "keda.sh";
/// API version of KEDA's ScaledJob.
pub const SCALEDJOB_VERSION: &str = "v1alpha1";
/// `apiVersion` of KEDA's ScaledJob as written in manifests.
pub const SCALEDJOB_API_VERSION: &str = "keda.sh/v1alpha1";
/// Resource (plural) name of KEDA's ScaledJob.
pub const SCALEDJOB_PLURAL: &str = "scaledjobs";

/// The ScaledJob resource (KEDA CRD `keda.sh/v1alpha1`, plural `scaledjobs`).
pub fn scaledjob_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(SCALEDJOB_GROUP, SCALEDJOB_VERSION, "ScaledJob"),
        SCALEDJOB_PLURAL,
    )
}

/// The API resource of a workload kind.
pub fn api_resource(kind: WorkloadKind) -> ApiResource {
    match kind {
        WorkloadKind::Job => ApiResource::erase::<Job>(&()),
        WorkloadKind::ScaledJob => scaledjob_resource(),
    }
}

/// JSON pointer of the pod spec inside a manifest of `kind`.
pub fn pod_spec_pointer(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Job => "/spec/template/spec",
        WorkloadKind::ScaledJob => "/spec/jobTargetRef/template/spec",
    }
}

/// Whether an API error is a 404 Not Found.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// The node selector requirement that pins a pod to nodes labelled
/// `key=node`.
pub fn pin_requirement(key: &str, node: &str) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_owned(),
        operator: "In".to_owned(),
        values: Some(vec![node.to_owned()]),
    }
}

/// The `nodeAffinity` pinning pods to nodes labelled `key=node`.
pub fn node_affinity(key: &str, node: &str) -> NodeAffinity {
    NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![pin_requirement(key, node)]),
                match_fields: None,
            }],
        }),
        preferred_during_scheduling_ignored_during_execution: None,
    }
}

/// The node a pod spec (JSON) is pinned to by a [`pin_requirement`] on
/// `key` in its first required node-affinity term, if any.
pub fn pinned_node(pod_spec: &Value, key: &str) -> Option<String> {
    let exprs = pod_spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions")?
        .as_array()?;
    exprs.iter().find_map(|e| {
        (e.get("key")?.as_str()? == key && e.get("operator")?.as_str()? == "In")
            .then(|| e.pointer("/values/0")?.as_str().map(str::to_string))
            .flatten()
    })
}

/// What [`label_gpu_nodes`] did to one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelOutcome {
    /// Node name.
    pub node: String,
    /// The label value before (`None`: absent).
    pub before: Option<String>,
    /// Whether a patch was sent.
    pub changed: bool,
}

/// Why labelling a node failed.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// Reading the node failed (it does not exist, or the API failed).
    #[error("reading node {node}")]
    Read {
        /// The name asked for.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The node is not among the nodes read from the cluster.
    #[error("node {node}: no such node in the cluster")]
    NoSuchNode {
        /// The name asked for.
        node: String,
    },
    /// The API server refused or failed the patch.
    #[error("labelling node {node} {key}={node}")]
    Patch {
        /// The node.
        node: String,
        /// The label key.
        key: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Sets `key=<node name>` on each named node (a merge patch of its labels),
/// only where the label is absent or different, and marks each label it
/// sets with [`LABELLED_ANNOTATION`] so `down --purge` can take it off
/// again. `nodes` are the node objects as read just before; a name not
/// among them is an error. The single GPU-node labelling function of the
/// crate: `up` and `label-nodes` both call it.
pub async fn label_gpu_nodes(
    client: &Client,
    nodes: &[Node],
    names: &[String],
    key: &str,
) -> Result<Vec<LabelOutcome>, LabelError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let node = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name.as_str()))
            .ok_or_else(|| LabelError::NoSuchNode { node: name.clone() })?;
        let before = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l: &BTreeMap<String, String>| l.get(key))
            .cloned();
        let changed = before.as_deref() != Some(name.as_str());
        if changed {
            let patch = json!({"metadata": {
                "labels": {key: name},
                "annotations": {LABELLED_ANNOTATION: key},
            }});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| LabelError::Patch {
                    node: name.clone(),
                    key: key.to_owned(),
                    source,
                })?;
            tracing::info!(node = %name, label = key, "node labelled");
        }
        out.push(LabelOutcome {
            node: name.clone(),
            before,
            changed,
        });
    }
    Ok(out)
}

/// Reads the named nodes one by one (for [`label_gpu_nodes`] when no list
/// is at hand, as in `label-nodes`).
pub async fn read_nodes(client: &Client, names: &[String]) -> Result<Vec<Node>, LabelError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut nodes = Vec::with_capacity(names.len());
    for name in names {
        let node = api.get(name).await.map_err(|source| LabelError::Read {
            node: name.clone(),
            source,
        })?;
        nodes.push(node);
    }
    Ok(nodes)
}

/// The label key a [`LABELLED_ANNOTATION`] value names (`true`, written by
/// older versions, meant [`GPU_NODE_LABEL`]).
pub fn labelled_key(annotation: &str) -> &str {
    if annotation == "true" || annotation.is_empty() {
        GPU_NODE_LABEL
    } else {
        annotation
    }
}

#[cfg(test)]
mod tests;
