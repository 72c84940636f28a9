//! Even initial spread: N workloads (one per camera stream) over the M nodes
//! that have a valid GPU reading.
//!
//! Every node gets ⌊N/M⌋ or ⌈N/M⌉ workloads. The N mod M extra ones go to the
//! lowest-usage nodes; when several nodes tie at the cut, which of them get an
//! extra is drawn from the RNG the caller hands in, so a plan is reproducible
//! from its seed. Workloads are dealt out round by round in that ranking
//! (lowest usage first), so the first workloads land on the idlest nodes.

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::gpu::GpuSnapshot;

/// Why no plan can be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpreadError {
    /// No node has a valid reading.
    #[error("no node with a fresh GPU usage reading to place {workloads} workload(s) on")]
    NoNodes {
        /// How many workloads were to be placed.
        workloads: usize,
    },
    /// A usage value is NaN (the source never publishes one; a caller bug).
    #[error("usage of node {0:?} is not a number")]
    NotANumber(String),
}

/// The plan: a node for each workload, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub struct SpreadPlan {
    /// `assignments[i]` is the node of workload `i`.
    pub assignments: Vec<String>,
    /// Every candidate node with its usage and its number of workloads,
    /// lowest usage first (the ranking used), including nodes given none.
    pub nodes: Vec<NodeShare>,
}

/// One node's part of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeShare {
    /// Node name.
    pub node: String,
    /// The usage the ranking used.
    pub usage_percent: f64,
    /// Workloads planned on it: ⌊N/M⌋ or ⌈N/M⌉.
    pub workloads: usize,
}

impl SpreadPlan {
    /// Workload count per node, by name.
    pub fn counts(&self) -> BTreeMap<&str, usize> {
        self.nodes
            .iter()
            .map(|n| (n.node.as_str(), n.workloads))
            .collect()
    }
}

impl fmt::Display for SpreadPlan {
    /// `agx: 4 (20.0 %), orin: 3 (35.0 %)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}: {} ({:.1} %)", n.node, n.workloads, n.usage_percent))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// Plans `workloads` over `nodes` (name, usage %). Input order does not
/// matter: nodes are sorted by name before the RNG is used, so the same
/// inputs and seed give the same plan.
pub fn plan_even_spread<R: Rng + ?Sized>(
    workloads: usize,
    nodes: &[(String, f64)],
    rng: &mut R,
) -> Result<SpreadPlan, SpreadError> {
    if let Some((n, _)) = nodes.iter().find(|(_, u)| u.is_nan()) {
        return Err(SpreadError::NotANumber(n.clone()));
    }
    let mut ranked: Vec<(String, f64)> = nodes.to_vec();
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    ranked.dedup_by(|a, b| a.0 == b.0);
    if ranked.is_empty() {
        return Err(SpreadError::NoNodes { workloads });
    }
    // Shuffle, then a stable sort by usage: equal usages end up in random
    // order, which is the random tie-break at the cut.
    ranked.shuffle(rng);
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    let m = ranked.len();
    let (base, extra) = (workloads / m, workloads % m);
    let shares: Vec<NodeShare> = ranked
        .into_iter()
        .enumerate()
        .map(|(i, (node, usage))| NodeShare {
            node,
            usage_percent: usage,
            workloads: base + usize::from(i < extra),
        })
        .collect();
    let mut assignments = Vec::with_capacity(workloads);
    for round in 0..base + usize::from(extra > 0) {
        for s in shares.iter().filter(|s| s.workloads > round) {
            assignments.push(s.node.clone());
        }
    }
    Ok(SpreadPlan {
        assignments,
        nodes: shares,
    })
}

/// [`plan_even_spread`] over the nodes of `snapshot` with a fresh reading
/// (stale and missing nodes are not candidates), optionally limited to
/// `allowed` (e.g. nodes labelled for GPU work).
pub fn plan_from_snapshot<R: Rng + ?Sized>(
    workloads: usize,
    snapshot: &GpuSnapshot,
    allowed: Option<&dyn Fn(&str) -> bool>,
    rng: &mut R,
) -> Result<SpreadPlan, SpreadError> {
    let nodes: Vec<(String, f64)> = snapshot
        .fresh()
        .filter(|(n, _)| allowed.is_none_or(|f| f(n)))
        .map(|(n, u)| (n.to_string(), u))
        .collect();
    plan_even_spread(workloads, &nodes, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{GpuSample, NodeUsage, UsageState};
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn nodes(list: &[(&str, f64)]) -> Vec<(String, f64)> {
        list.iter().map(|(n, u)| (n.to_string(), *u)).collect()
    }

    #[test]
    fn ten_over_three_is_four_three_three_extra_on_lowest() {
        let n = nodes(&[("agx", 20.0), ("xavier", 70.0), ("orin", 35.0)]);
        let plan = plan_even_spread(10, &n, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(
            plan.counts(),
            [("agx", 4), ("orin", 3), ("xavier", 3)].into()
        );
        assert_eq!(plan.assignments.len(), 10);
        assert_eq!(&plan.assignments[..4], ["agx", "orin", "xavier", "agx"]);
        assert_eq!(
            plan.to_string(),
            "agx: 4 (20.0 %), orin: 3 (35.0 %), xavier: 3 (70.0 %)"
        );
    }

    #[test]
    fn fewer_workloads_than_nodes_use_the_idlest() {
        let n = nodes(&[("a", 50.0), ("b", 10.0), ("c", 30.0)]);
        let plan = plan_even_spread(2, &n, &mut StdRng::seed_from_u64(0)).unwrap();
        assert_eq!(plan.assignments, ["b", "c"]);
        assert_eq!(plan.counts()["a"], 0);
        let empty = plan_even_spread(0, &n, &mut StdRng::seed_from_u64(0)).unwrap();
        assert!(empty.assignments.is_empty());
    }

    #[test]
    fn ties_at_the_cut_are_drawn_at_random() {
        let n = nodes(&[("a", 10.0), ("b", 10.0), ("c", 10.0)]);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let plan = plan_even_spread(1, &n, &mut StdRng::seed_from_u64(seed)).unwrap();
            seen.insert(plan.assignments[0].clone());
        }
        assert_eq!(seen.len(), 3, "every tied node is sometimes chosen");
    }

    #[test]
    fn errors() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            plan_even_spread(3, &[], &mut rng),
            Err(SpreadError::NoNodes { workloads: 3 })
        );
        assert!(matches!(
            plan_even_spread(3, &nodes(&[("a", f64::NAN)]), &mut rng),
            Err(SpreadError::NotANumber(_))
        ));
    }

    #[test]
    fn snapshot_stale_and_missing_nodes_are_not_candidates() {
        let mut s = GpuSnapshot::default();
        let usage = |u: f64, state| NodeUsage {
            sample: Some(GpuSample {
                usage_percent: u,
                sampled_at: 0,
            }),
            state,
            error: None,
        };
        s.nodes.insert("a".into(), usage(20.0, UsageState::Ok));
        s.nodes.insert("b".into(), usage(5.0, UsageState::Stale));
        s.nodes.insert("c".into(), usage(30.0, UsageState::Ok));
        s.nodes.insert(
            "d".into(),
            NodeUsage {
                sample: None,
                state: UsageState::Missing,
                error: None,
            },
        );
        let plan = plan_from_snapshot(3, &s, None, &mut StdRng::seed_from_u64(0)).unwrap();
        assert_eq!(plan.counts(), [("a", 2), ("c", 1)].into());
        let only_c = |n: &str| n == "c";
        let plan = plan_from_snapshot(3, &s, Some(&only_c), &mut StdRng::seed_from_u64(0)).unwrap();
        assert_eq!(plan.counts(), [("c", 3)].into());
    }

    fn node_set() -> impl Strategy<Value = Vec<(String, f64)>> {
        // Few distinct usage values so ties are common.
        proptest::collection::btree_map("[a-z]{1,6}", prop_oneof![0u8..=4, 0u8..=100], 1..12)
            .prop_map(|m| {
                m.into_iter()
                    .map(|(n, u)| (n, f64::from(u) * 1.0))
                    .collect()
            })
    }

    proptest! {
        /// Each node gets ⌊N/M⌋ or ⌈N/M⌉ and the counts add up to N.
        #[test]
        fn floor_or_ceil(n in node_set(), workloads in 0usize..60, seed in any::<u64>()) {
            let plan = plan_even_spread(workloads, &n, &mut StdRng::seed_from_u64(seed)).unwrap();
            let m = n.len();
            let (lo, hi) = (workloads / m, workloads.div_ceil(m));
            for s in &plan.nodes {
                prop_assert!(s.workloads == lo || s.workloads == hi, "{plan:?}");
            }
            prop_assert_eq!(plan.assignments.len(), workloads);
            let counts = plan.counts();
            for (node, c) in &counts {
                prop_assert_eq!(plan.assignments.iter().filter(|a| a == node).count(), *c);
            }
        }

        /// Extras only go to minimum-usage nodes: every node with an extra
        /// has usage ≤ every node without one.
        #[test]
        fn extras_on_lowest_usage(n in node_set(), workloads in 0usize..60, seed in any::<u64>()) {
            let plan = plan_even_spread(workloads, &n, &mut StdRng::seed_from_u64(seed)).unwrap();
            let m = n.len();
            if workloads % m != 0 {
                let hi = workloads.div_ceil(m);
                let max_with = plan.nodes.iter().filter(|s| s.workloads == hi).map(|s| s.usage_percent).fold(f64::MIN, f64::max);
                let min_without = plan.nodes.iter().filter(|s| s.workloads < hi).map(|s| s.usage_percent).fold(f64::MAX, f64::min);
                prop_assert!(max_with <= min_without, "{plan:?}");
            }
        }

        /// Same inputs and seed, same plan, whatever the input order.
        #[test]
        fn same_seed_same_plan(n in node_set(), workloads in 0usize..60, seed in any::<u64>()) {
            let a = plan_even_spread(workloads, &n, &mut StdRng::seed_from_u64(seed)).unwrap();
            let mut rev = n.clone();
            rev.reverse();
            let b = plan_even_spread(workloads, &rev, &mut StdRng::seed_from_u64(seed)).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}
