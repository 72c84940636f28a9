//! Pod predicates shared by `status`, `wait`, `collect` and `teardown`
//! (kept here so those modules do not import each other).

use k8s_openapi::api::core::v1::Pod;

/// Whether a pod is an analyzer (owned by a Job), not a scheduler or scaler pod.
pub fn is_analyzer(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.kind == "Job"))
}

/// Whether a pod is bound to a node.
pub fn pod_scheduled(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}
