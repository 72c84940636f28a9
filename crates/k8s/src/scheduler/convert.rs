//! API objects → the core's model. Everything the policies look at is read
//! here, once, so the policies never see `k8s-openapi` types.
//!
//! Malformed inputs never fail a conversion: a `priority` annotation that is
//! malformed or not allowed in the pod's namespace is not used and sets
//! [`PodInfo::priority_warning`] (the loop turns it into a Warning Event), unknown selector operators make their term match
//! nothing (as the API server would reject them anyway), unparsable
//! quantities count as zero.

use k8s_openapi::api::core::v1::{Node, NodeSelectorTerm as ApiTerm, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use posture_core::model::{
    NodeInfo, NodeSelectorTerm, Ownership, PodGroupRef, PodInfo, PodKey, PriorityAnnotationPolicy,
    PriorityWarning, Resources, SelectorOperator, SelectorRequirement, Taint, TaintEffect,
    Toleration, TolerationOperator, effective_priority,
};
use std::collections::BTreeMap;

/// Annotation giving a pod's priority (an integer), used instead of
/// `spec.priority` only where [`PodReader::annotation_policy`] allows it.
pub const PRIORITY_ANNOTATION: &str = "priority";
/// Annotation naming a pod's gang.
pub const POD_GROUP_ANNOTATION: &str = "pod-group";
/// The scheduler-plugins (coscheduling) label naming a pod's gang.
pub const POD_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";
/// Annotation giving the gang's size.
pub const POD_GROUP_MIN_MEMBER_ANNOTATION: &str = "pod-group-min-member";

/// Converts a Node.
pub fn node_info(node: &Node) -> NodeInfo {
    let meta = &node.metadata;
    let spec = node.spec.as_ref();
    let status = node.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let taints = spec
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    Some(Taint {
                        key: t.key.clone(),
                        value: t.value.clone().unwrap_or_default(),
                        effect: TaintEffect::parse(&t.effect)?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let allocatable = status
        .and_then(|s| s.allocatable.as_ref())
        .map(resources_from_map)
        .unwrap_or_default();
    NodeInfo {
        name: meta.name.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        ready,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        taints,
        allocatable,
    }
}

/// How pods are read: which are ours, and where the `priority` annotation
/// counts.
#[derive(Clone, Debug, Default)]
pub struct PodReader {
    /// Our scheduler name, namespace and label selector.
    pub ownership: Ownership,
    /// Namespaces where the `priority` annotation is honoured.
    pub annotation_policy: PriorityAnnotationPolicy,
}

impl PodReader {
    /// A reader for pods of `scheduler_name` in any namespace with any
    /// labels, the annotation honoured nowhere.
    pub fn for_scheduler(scheduler_name: &str) -> Self {
        Self {
            ownership: Ownership {
                scheduler_name: scheduler_name.to_string(),
                ..Ownership::default()
            },
            ..Self::default()
        }
    }
}

/// Converts a Pod; `reader` decides [`PodInfo::ours`] and its priority.
pub fn pod_info(pod: &Pod, reader: &PodReader) -> PodInfo {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let annotations = meta.annotations.as_ref();
    let labels = meta.labels.as_ref();
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let (priority, priority_warning) = priority(pod, &reader.annotation_policy);
    let group_name = annotations
        .and_then(|a| a.get(POD_GROUP_ANNOTATION))
        .or_else(|| labels.and_then(|l| l.get(POD_GROUP_LABEL)))
        .filter(|g| !g.trim().is_empty());
    let group = group_name.map(|name| PodGroupRef {
        name: name.trim().to_string(),
        min_member: annotations
            .and_then(|a| a.get(POD_GROUP_MIN_MEMBER_ANNOTATION))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|n| *n > 0),
    });
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    PodInfo {
        key: PodKey::new(
            meta.namespace.clone().unwrap_or_else(|| "default".into()),
            meta.name.clone().unwrap_or_default(),
        ),
        uid: meta.uid.clone().unwrap_or_default(),
        created_at: meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .unwrap_or(0),
        priority,
        priority_warning,
        node_selector: spec
            .and_then(|s| s.node_selector.clone())
            .unwrap_or_default(),
        required_affinity: spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|sel| sel.node_selector_terms.iter().map(term).collect()),
        tolerations: spec
            .and_then(|s| s.tolerations.as_ref())
            .map(|ts| {
                ts.iter()
                    .map(|t| Toleration {
                        key: t.key.clone().unwrap_or_default(),
                        operator: match t.operator.as_deref() {
                            Some("Exists") => TolerationOperator::Exists,
                            _ => TolerationOperator::Equal,
                        },
                        value: t.value.clone().unwrap_or_default(),
                        effect: t.effect.as_deref().and_then(TaintEffect::parse),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        requests: pod_requests(pod),
        group,
        node_name: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        nominated_node: pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone())
            .filter(|n| !n.is_empty()),
        ours: reader.ownership.owns(
            spec.and_then(|s| s.scheduler_name.as_deref()),
            namespace,
            labels.unwrap_or(&BTreeMap::new()),
        ),
        terminating: meta.deletion_timestamp.is_some()
            || matches!(phase, Some("Succeeded") | Some("Failed")),
    }
}

/// The pod's effective priority under `policy` (see
/// [`effective_priority`]), with a warning when its annotation was not used.
pub fn priority(pod: &Pod, policy: &PriorityAnnotationPolicy) -> (i32, Option<PriorityWarning>) {
    effective_priority(
        pod.spec.as_ref().and_then(|s| s.priority),
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PRIORITY_ANNOTATION))
            .map(String::as_str),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        policy,
    )
}

fn term(t: &ApiTerm) -> NodeSelectorTerm {
    let reqs = |rs: &Option<Vec<k8s_openapi::api::core::v1::NodeSelectorRequirement>>| {
        rs.iter()
            .flatten()
            .map(|r| {
                SelectorOperator::parse(&r.operator).map(|operator| SelectorRequirement {
                    key: r.key.clone(),
                    operator,
                    values: r.values.clone().unwrap_or_default(),
                })
            })
            .collect::<Option<Vec<_>>>()
    };
    match (reqs(&t.match_expressions), reqs(&t.match_fields)) {
        (Some(match_expressions), Some(match_fields)) => NodeSelectorTerm {
            match_expressions,
            match_fields,
        },
        // An unknown operator: the term matches nothing (empty term).
        _ => NodeSelectorTerm::default(),
    }
}

/// Effective requests as kube-scheduler computes them: the sum over
/// containers, at least the largest init container, plus pod overhead, plus
/// one pod slot.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Default::default()
        };
    };
    let req = |r: &Option<ResourceRequirements>| {
        r.as_ref()
            .and_then(|r| r.requests.as_ref())
            .map(resources_from_map)
            .unwrap_or_default()
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&req(&c.resources));
    }
    for c in spec.init_containers.iter().flatten() {
        let r = req(&c.resources);
        total.cpu_millis = total.cpu_millis.max(r.cpu_millis);
        total.memory_bytes = total.memory_bytes.max(r.memory_bytes);
        for (k, v) in r.extended {
            let e = total.extended.entry(k).or_default();
            *e = (*e).max(v);
        }
    }
    if let Some(overhead) = &spec.overhead {
        total.add(&resources_from_map(overhead));
    }
    total.pods = 1;
    total
}

fn resources_from_map(map: &BTreeMap<String, Quantity>) -> Resources {
    let mut r = Resources::default();
    for (name, q) in map {
        match name.as_str() {
            "cpu" => r.cpu_millis = parse_quantity_milli(&q.0).unwrap_or(0),
            "memory" => r.memory_bytes = parse_quantity(&q.0).unwrap_or(0),
            "pods" => r.pods = parse_quantity(&q.0).unwrap_or(0),
            "ephemeral-storage" => {}
            other if other.starts_with("hugepages-") => {}
            other => {
                r.extended
                    .insert(other.to_string(), parse_quantity(&q.0).unwrap_or(0));
            }
        }
    }
    r
}

/// Parses a Kubernetes quantity ("1", "500m", "2Gi", "1e3", "0.5") into
/// thousandths of its unit (so "500m" → 500, "2" → 2000). Rounds up like the
/// API's `MilliValue`.
pub fn parse_quantity_milli(s: &str) -> Option<i64> {
    let (mantissa, scale) = split_quantity(s)?;
    Some((mantissa * scale * 1000.0).ceil() as i64)
}

/// Parses a Kubernetes quantity into whole units, rounding up ("1Ki" → 1024,
/// "100m" → 1).
pub fn parse_quantity(s: &str) -> Option<i64> {
    let (mantissa, scale) = split_quantity(s)?;
    Some((mantissa * scale).ceil() as i64)
}

fn split_quantity(s: &str) -> Option<(f64, f64)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let mantissa: f64 = num.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some((mantissa, scale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity_milli("500m"), Some(500));
        assert_eq!(parse_quantity_milli("2"), Some(2000));
        assert_eq!(parse_quantity_milli("0.5"), Some(500));
        assert_eq!(parse_quantity("2Gi"), Some(2 << 30));
        assert_eq!(parse_quantity("1k"), Some(1000));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("100m"), Some(1));
        assert_eq!(parse_quantity("12Xi"), None);
        assert_eq!(parse_quantity(""), None);
    }

    #[test]
    fn node_conversion() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "agx", "labels": {"gpu-node": "agx"}},
            "spec": {"unschedulable": true, "taints": [
                {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                {"key": "weird", "effect": "Sometimes"}
            ]},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "allocatable": {"cpu": "7800m", "memory": "30Gi", "pods": "110", "nvidia.com/gpu": "1"}
            }
        }))
        .unwrap();
        let n = node_info(&node);
        assert_eq!(n.name, "agx");
        assert!(n.ready && n.unschedulable);
        assert_eq!(n.taints.len(), 1, "unknown effects are dropped");
        assert_eq!(n.allocatable.cpu_millis, 7800);
        assert_eq!(n.allocatable.pods, 110);
        assert_eq!(n.allocatable.extended["nvidia.com/gpu"], 1);
    }

    #[test]
    fn pod_conversion() {
        let p = pod(json!({
            "metadata": {"name": "posture-pi1-abc", "namespace": "default", "uid": "u1",
                "creationTimestamp": "2026-11-23T10:00:00Z",
                "annotations": {"priority": "100", "pod-group": "g", "pod-group-min-member": "3"}},
            "spec": {
                "schedulerName": "rr-scheduler",
                "priority": 5,
                "nodeSelector": {"gpu-node": "agx"},
                "tolerations": [{"operator": "Exists"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu-node", "operator": "In", "values": ["agx"]}]}]}}},
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "250m"}}}
                ]
            },
            "status": {"phase": "Pending", "nominatedNodeName": "orin"}
        }));
        let trusting = PodReader {
            annotation_policy: PriorityAnnotationPolicy {
                namespaces: vec!["default".into()],
            },
            ..PodReader::for_scheduler("rr-scheduler")
        };
        let info = pod_info(&p, &trusting);
        assert!(info.ours && info.is_pending());
        assert_eq!(info.key.to_string(), "default/posture-pi1-abc");
        assert_eq!(info.priority, 100);
        assert_eq!(info.created_at, 1_795_428_000_000);
        assert_eq!(info.group.as_ref().unwrap().min_member, Some(3));
        assert_eq!(info.nominated_node.as_deref(), Some("orin"));
        assert_eq!(info.requests.cpu_millis, 2000, "init container dominates");
        assert_eq!(info.requests.memory_bytes, 64 << 20);
        assert_eq!(info.requests.pods, 1);
        assert_eq!(info.required_affinity.as_ref().unwrap().len(), 1);
        assert_eq!(info.tolerations[0].operator, TolerationOperator::Exists);
        assert!(!pod_info(&p, &PodReader::for_scheduler("other")).ours);
        let info = pod_info(&p, &PodReader::for_scheduler("rr-scheduler"));
        assert_eq!(info.priority, 5, "annotation not allowed: spec.priority");
        assert_eq!(
            info.priority_warning.map(|w| w.reason),
            Some("PriorityAnnotationIgnored")
        );
    }

    #[test]
    fn priority_falls_back_and_reports_malformed_annotations() {
        let all = PriorityAnnotationPolicy {
            namespaces: vec!["*".into()],
        };
        let p = pod(json!({"metadata": {"name": "x"}, "spec": {"containers": [], "priority": 7}}));
        assert_eq!(priority(&p, &all), (7, None));
        let p = pod(
            json!({"metadata": {"name": "x", "annotations": {"priority": "high"}},
            "spec": {"containers": [], "priority": 7}}),
        );
        let (prio, warning) = priority(&p, &all);
        assert_eq!(prio, 7);
        assert!(warning.unwrap().message.contains("\"high\""));
        let p = pod(json!({"metadata": {"name": "x"}}));
        assert_eq!(priority(&p, &all), (0, None));
    }

    #[test]
    fn ours_needs_namespace_and_labels_too() {
        let reader = PodReader {
            ownership: Ownership {
                scheduler_name: "s".into(),
                namespace: Some("default".into()),
                selector: posture_core::model::LabelSelector::parse("app=posture").unwrap(),
            },
            ..PodReader::default()
        };
        let mk = |ns: &str, app: &str| {
            pod(
                json!({"metadata": {"name": "x", "namespace": ns, "labels": {"app": app}},
                "spec": {"containers": [], "schedulerName": "s"}}),
            )
        };
        assert!(pod_info(&mk("default", "posture"), &reader).ours);
        assert!(!pod_info(&mk("other", "posture"), &reader).ours);
        assert!(!pod_info(&mk("default", "web"), &reader).ours);
    }

    #[test]
    fn group_label_and_terminal_phases() {
        let p = pod(
            json!({"metadata": {"name": "x", "labels": {"scheduling.x-k8s.io/pod-group": "pg"}},
            "spec": {"containers": [], "schedulerName": "s", "nodeName": ""},
            "status": {"phase": "Succeeded"}}),
        );
        let info = pod_info(&p, &PodReader::for_scheduler("s"));
        assert_eq!(info.group.as_ref().unwrap().name, "pg");
        assert_eq!(info.node_name, None);
        assert!(info.terminating && !info.is_pending());
    }

    #[test]
    fn unknown_operator_makes_the_term_match_nothing() {
        let t: ApiTerm =
            serde_json::from_value(json!({"matchExpressions": [{"key": "k", "operator": "Near"}]}))
                .unwrap();
        assert_eq!(term(&t), NodeSelectorTerm::default());
    }
}
