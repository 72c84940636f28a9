//! Node feasibility shared by every profile: readiness, cordon, taints,
//! `nodeSelector` and required node affinity — and the reasons a node was
//! rejected, summarised the way kube-scheduler words its `FailedScheduling`
//! events ("0/5 nodes are available: 3 node(s) were not ready, …").

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{NodeInfo, PodInfo};

/// Why one node cannot take one pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FilterReason {
    /// The node's `Ready` condition is not `True`.
    NotReady,
    /// `spec.unschedulable` is set (cordoned).
    Unschedulable,
    /// A NoSchedule/NoExecute taint the pod does not tolerate.
    UntoleratedTaint(String),
    /// The pod's `nodeSelector` or required node affinity excludes the node.
    AffinityMismatch,
    /// Not listed in the configured round-robin node order.
    NotInNodeOrder,
    /// One-pod-per-node capacity already used by a pod of ours.
    Occupied,
    /// Not enough of a resource (name as kube-scheduler: cpu, memory, pods, …).
    Insufficient(String),
    /// GPU usage at or above the threshold.
    GpuOverThreshold,
    /// No fresh GPU usage sample for the node.
    GpuUsageUnknown,
    /// Held for a higher-priority pod nominated to it.
    Nominated,
}

impl FilterReason {
    /// The variant's name without its payload (`UntoleratedTaint`,
    /// `Insufficient`, …): a bounded metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotReady => "NotReady",
            Self::Unschedulable => "Unschedulable",
            Self::UntoleratedTaint(_) => "UntoleratedTaint",
            Self::AffinityMismatch => "AffinityMismatch",
            Self::NotInNodeOrder => "NotInNodeOrder",
            Self::Occupied => "Occupied",
            Self::Insufficient(_) => "Insufficient",
            Self::GpuOverThreshold => "GpuOverThreshold",
            Self::GpuUsageUnknown => "GpuUsageUnknown",
            Self::Nominated => "Nominated",
        }
    }

    fn phrase(&self) -> String {
        match self {
            Self::NotReady => "node(s) were not ready".into(),
            Self::Unschedulable => "node(s) were unschedulable".into(),
            Self::UntoleratedTaint(t) => format!("node(s) had untolerated taint {{{t}}}"),
            Self::AffinityMismatch => "node(s) didn't match Pod's node affinity/selector".into(),
            Self::NotInNodeOrder => "node(s) were not in the round-robin node order".into(),
            Self::Occupied => "node(s) already ran a pod of this scheduler".into(),
            Self::Insufficient(r) => format!("Insufficient {r}"),
            Self::GpuOverThreshold => "node(s) had GPU usage at or above the threshold".into(),
            Self::GpuUsageUnknown => "node(s) had no fresh GPU usage sample".into(),
            Self::Nominated => "node(s) were nominated for higher-priority pods".into(),
        }
    }
}

/// The static checks every profile applies before its own: ready, not
/// cordoned, taints tolerated, selector and required affinity satisfied.
pub fn check_node(node: &NodeInfo, pod: &PodInfo) -> Result<(), FilterReason> {
    if !node.ready {
        return Err(FilterReason::NotReady);
    }
    if node.unschedulable {
        return Err(FilterReason::Unschedulable);
    }
    if let Some(t) = node
        .taints
        .iter()
        .filter(|t| t.effect.blocks_scheduling())
        .find(|t| !pod.tolerations.iter().any(|tol| tol.tolerates(t)))
    {
        return Err(FilterReason::UntoleratedTaint(format!(
            "{}: {}",
            t.key, t.value
        )));
    }
    if !matches_node_affinity(node, pod) {
        return Err(FilterReason::AffinityMismatch);
    }
    Ok(())
}

/// `nodeSelector` (every pair present) and required node affinity (any term).
pub fn matches_node_affinity(node: &NodeInfo, pod: &PodInfo) -> bool {
    let selector_ok = pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    let affinity_ok = match &pod.required_affinity {
        None => true,
        Some(terms) => terms.iter().any(|t| t.matches(node)),
    };
    selector_ok && affinity_ok
}

/// Counts of rejection reasons over all nodes considered for one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSummary {
    /// Nodes considered (the "5" in "0/5 nodes are available").
    pub total: usize,
    /// How many nodes were rejected for each reason.
    pub reasons: BTreeMap<FilterReason, usize>,
}

impl FilterSummary {
    /// Records one rejected node.
    pub fn add(&mut self, reason: FilterReason) {
        *self.reasons.entry(reason).or_default() += 1;
    }

    /// The reason most nodes were rejected for (for metric labels).
    pub fn dominant(&self) -> Option<&FilterReason> {
        self.reasons.iter().max_by_key(|(_, n)| **n).map(|(r, _)| r)
    }
}

impl fmt::Display for FilterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available", self.total)?;
        if self.reasons.is_empty() {
            return f.write_str(".");
        }
        f.write_str(": ")?;
        let mut parts: Vec<(usize, String)> =
            self.reasons.iter().map(|(r, n)| (*n, r.phrase())).collect();
        // kube-scheduler sorts the phrases; we put the largest counts first.
        parts.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let text: Vec<String> = parts.into_iter().map(|(n, p)| format!("{n} {p}")).collect();
        write!(f, "{}.", text.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{mk_node, mk_pod};
    use crate::model::*;

    #[test]
    fn labels_are_the_variant_names_without_payload() {
        let all = [
            FilterReason::NotReady,
            FilterReason::Unschedulable,
            FilterReason::UntoleratedTaint("gpu=busy:NoSchedule".into()),
            FilterReason::AffinityMismatch,
            FilterReason::NotInNodeOrder,
            FilterReason::Occupied,
            FilterReason::Insufficient("cpu".into()),
            FilterReason::GpuOverThreshold,
            FilterReason::GpuUsageUnknown,
            FilterReason::Nominated,
        ];
        for r in all {
            // The metric label the scheduler derived from `Debug` before.
            let debug = format!("{r:?}");
            let from_debug = debug.split('(').next().unwrap_or_default();
            assert_eq!(r.label(), from_debug);
        }
    }

    #[test]
    fn not_ready_cordoned_and_tainted_nodes_are_rejected() {
        let pod = mk_pod("p");
        assert_eq!(check_node(&mk_node("a"), &pod), Ok(()));
        let mut n = mk_node("a");
        n.ready = false;
        assert_eq!(check_node(&n, &pod), Err(FilterReason::NotReady));
        let mut n = mk_node("a");
        n.unschedulable = true;
        assert_eq!(check_node(&n, &pod), Err(FilterReason::Unschedulable));
        let mut n = mk_node("a");
        n.taints.push(Taint {
            key: "node-role.kubernetes.io/control-plane".into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        });
        assert!(matches!(
            check_node(&n, &pod),
            Err(FilterReason::UntoleratedTaint(_))
        ));
        let mut tolerant = mk_pod("t");
        tolerant.tolerations.push(Toleration {
            key: "node-role.kubernetes.io/control-plane".into(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
        });
        assert_eq!(check_node(&n, &tolerant), Ok(()));
    }

    #[test]
    fn prefer_no_schedule_does_not_block() {
        let mut n = mk_node("a");
        n.taints.push(Taint {
            key: "k".into(),
            value: "v".into(),
            effect: TaintEffect::PreferNoSchedule,
        });
        assert_eq!(check_node(&n, &mk_pod("p")), Ok(()));
    }

    #[test]
    fn toleration_rules_follow_the_api() {
        let taint = Taint {
            key: "k".into(),
            value: "v".into(),
            effect: TaintEffect::NoExecute,
        };
        let tol = |key: &str, op, value: &str, effect| Toleration {
            key: key.into(),
            operator: op,
            value: value.into(),
            effect,
        };
        use TolerationOperator::*;
        assert!(tol("", Exists, "", None).tolerates(&taint));
        assert!(!tol("", Equal, "", None).tolerates(&taint));
        assert!(tol("k", Equal, "v", None).tolerates(&taint));
        assert!(!tol("k", Equal, "w", None).tolerates(&taint));
        assert!(tol("k", Exists, "", Some(TaintEffect::NoExecute)).tolerates(&taint));
        assert!(!tol("k", Exists, "", Some(TaintEffect::NoSchedule)).tolerates(&taint));
    }

    #[test]
    fn selector_and_affinity() {
        let mut node = mk_node("agx");
        node.labels.insert("gpu-node".into(), "agx".into());
        node.labels.insert("cores".into(), "8".into());
        let mut pod = mk_pod("p");
        pod.node_selector.insert("gpu-node".into(), "agx".into());
        assert!(matches_node_affinity(&node, &pod));
        pod.node_selector.insert("gpu-node".into(), "orin".into());
        assert!(!matches_node_affinity(&node, &pod));

        let req = |key: &str, op, values: &[&str]| SelectorRequirement {
            key: key.into(),
            operator: op,
            values: values.iter().map(|s| s.to_string()).collect(),
        };
        use SelectorOperator::*;
        let mut pod = mk_pod("p");
        pod.required_affinity = Some(vec![
            NodeSelectorTerm {
                match_expressions: vec![req("gpu-node", In, &["orin"])],
                match_fields: vec![],
            },
            NodeSelectorTerm {
                match_expressions: vec![req("cores", Gt, &["4"]), req("absent", DoesNotExist, &[])],
                match_fields: vec![req("metadata.name", In, &["agx"])],
            },
        ]);
        assert!(matches_node_affinity(&node, &pod));
        pod.required_affinity = Some(vec![NodeSelectorTerm {
            match_expressions: vec![req("cores", Lt, &["4"])],
            match_fields: vec![],
        }]);
        assert!(!matches_node_affinity(&node, &pod));
        pod.required_affinity = Some(vec![NodeSelectorTerm::default()]);
        assert!(
            !matches_node_affinity(&node, &pod),
            "empty term matches nothing"
        );
        pod.required_affinity = Some(vec![NodeSelectorTerm {
            match_expressions: vec![req("gpu-node", NotIn, &["orin"])],
            match_fields: vec![],
        }]);
        assert!(matches_node_affinity(&node, &pod));
    }

    #[test]
    fn summary_reads_like_kube_scheduler() {
        let mut s = FilterSummary {
            total: 5,
            ..Default::default()
        };
        for _ in 0..3 {
            s.add(FilterReason::NotReady);
        }
        s.add(FilterReason::UntoleratedTaint("k: v".into()));
        s.add(FilterReason::UntoleratedTaint("k: v".into()));
        assert_eq!(
            s.to_string(),
            "0/5 nodes are available: 3 node(s) were not ready, 2 node(s) had untolerated taint {k: v}."
        );
        assert_eq!(s.dominant(), Some(&FilterReason::NotReady));
    }
}
