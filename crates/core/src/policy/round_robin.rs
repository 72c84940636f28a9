//! Round-robin: bind each pending pod to the next eligible node in a fixed
//! order, so that over a run with a stable node set every node gets the same
//! number of pods, ±1.
//!
//! The order is the configured list (`--node-order a,b,c`; unlisted nodes are
//! never used) or all nodes sorted by name. The cursor remembers the last node
//! handed out and the walk starts just after it. Binds are pipelined, so the
//! cursor moves when a node is handed out; a bind that fails gives its node
//! back: the node is *owed* and handed out first next time, which is the same
//! sequence a cursor that "moves on only after a successful bind" produces.
//!
//! A node is eligible when it passes [`check_node`] and the pod's requests
//! fit in its allocatable minus what every pod bound or assumed there
//! requests (all schedulers' pods, as the kubelet counts them): a full node
//! is skipped rather than handed a pod the kubelet would reject (OutOfcpu).

use std::collections::VecDeque;

use crate::cluster::{Cluster, NodeState};
use crate::filter::{FilterReason, FilterSummary, check_node};
use crate::framework::{Binding, Decision, Profile, SchedulingContext};
use crate::model::PodInfo;

/// The round-robin profile. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct RoundRobin {
    /// Configured order; empty means "all nodes by name".
    order: Vec<String>,
    /// Last node handed out: a name (default order) or an index into `order`.
    cursor: Option<Cursor>,
    /// Nodes whose bind failed, to be handed out again before moving on.
    owed: VecDeque<String>,
}

#[derive(Clone, Debug)]
enum Cursor {
    Name(String),
    Index(usize),
}

impl RoundRobin {
    /// A profile over `order` (empty: every node, sorted by name).
    pub fn new(order: Vec<String>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let order = order
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && seen.insert(s.clone()))
            .collect();
        Self {
            order,
            cursor: None,
            owed: VecDeque::new(),
        }
    }

    /// Names in the configured order that the cluster does not have, for a
    /// warning (the I/O side warns once per name).
    pub fn unknown_ordered_nodes(&self, cluster: &Cluster) -> Vec<String> {
        self.order
            .iter()
            .filter(|n| cluster.node(n).is_none())
            .cloned()
            .collect()
    }

    /// The last node handed out (the cursor), for a successor to continue
    /// after (leader election hand-over).
    pub fn last_handed_out(&self) -> Option<&str> {
        match &self.cursor {
            Some(Cursor::Name(n)) => Some(n),
            Some(Cursor::Index(i)) => self.order.get(*i).map(String::as_str),
            None => None,
        }
    }

    /// Continues the order just after `node` (what a predecessor handed out
    /// last) and forgets owed nodes (their pods are still pending and are
    /// scheduled again). A node outside the configured order, or none,
    /// starts the order from its beginning.
    pub fn resume_after(&mut self, node: Option<String>) {
        self.owed.clear();
        let node = node.filter(|n| !n.is_empty());
        self.cursor = if self.order.is_empty() {
            node.map(Cursor::Name)
        } else {
            node.and_then(|n| self.order.iter().position(|o| *o == n))
                .map(Cursor::Index)
        };
    }

    /// Picks a node for `pod`, or explains why none is eligible.
    pub fn pick(&mut self, cluster: &Cluster, pod: &PodInfo) -> Result<String, FilterSummary> {
        let eligible = |n: &NodeState| feasible(n, pod).is_ok();
        if let Some(i) = self
            .owed
            .iter()
            .position(|name| cluster.node(name).is_some_and(eligible))
        {
            // An owed node is used without moving the cursor.
            if let Some(name) = self.owed.remove(i) {
                return Ok(name);
            }
        }
        let chosen = if self.order.is_empty() {
            let start = match &self.cursor {
                Some(Cursor::Name(n)) => n.clone(),
                _ => String::new(),
            };
            let found = if start.is_empty() {
                cluster.nodes().find(|n| eligible(n))
            } else {
                cluster.nodes_after(&start).find(|n| eligible(n))
            };
            found.map(|n| {
                self.cursor = Some(Cursor::Name(n.info.name.clone()));
                n.info.name.clone()
            })
        } else {
            let len = self.order.len();
            let start = match self.cursor {
                Some(Cursor::Index(i)) => (i + 1) % len,
                _ => 0,
            };
            (0..len).map(|k| (start + k) % len).find_map(|i| {
                let name = &self.order[i];
                cluster.node(name).filter(|n| eligible(n)).map(|_| {
                    self.cursor = Some(Cursor::Index(i));
                    name.clone()
                })
            })
        };
        chosen.ok_or_else(|| self.explain(cluster, pod))
    }

    fn explain(&self, cluster: &Cluster, pod: &PodInfo) -> FilterSummary {
        let mut summary = FilterSummary {
            total: cluster.node_count(),
            ..Default::default()
        };
        for node in cluster.nodes() {
            if !self.order.is_empty() && !self.order.contains(&node.info.name) {
                summary.add(FilterReason::NotInNodeOrder);
            } else if let Err(reason) = feasible(node, pod) {
                summary.add(reason);
            }
        }
        summary
    }
}

/// The static checks, then resource fit against what is bound there.
fn feasible(node: &NodeState, pod: &PodInfo) -> Result<(), FilterReason> {
    check_node(&node.info, pod)?;
    match node.shortfall(&pod.requests) {
        Some(resource) => Err(FilterReason::Insufficient(resource)),
        None => Ok(()),
    }
}

impl Profile for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn schedule(
        &mut self,
        cluster: &Cluster,
        unit: &[&PodInfo],
        _ctx: &SchedulingContext<'_>,
    ) -> Decision {
        let mut bindings = Vec::with_capacity(unit.len());
        for pod in unit {
            match self.pick(cluster, pod) {
                Ok(node) => bindings.push(Binding {
                    pod: pod.key.clone(),
                    uid: pod.uid.clone(),
                    node,
                }),
                Err(summary) => {
                    // Give back what this unit took, so nothing is skipped.
                    for b in bindings.into_iter().rev() {
                        self.owed.push_front(b.node);
                    }
                    return Decision::Unschedulable {
                        message: summary.to_string(),
                        summary,
                    };
                }
            }
        }
        Decision::Bind(bindings)
    }

    fn bind_failed(&mut self, binding: &Binding) {
        self.owed.push_back(binding.node.clone());
    }

    fn config_warnings(&self, cluster: &Cluster) -> Vec<String> {
        self.unknown_ordered_nodes(cluster)
            .into_iter()
            .map(|n| format!("node {n:?} is in the round-robin node order but does not exist"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{mk_node, mk_pod};
    use crate::model::PodKey;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn cluster(names: &[&str]) -> Cluster {
        crate::fixtures::mk_cluster(names)
    }

    fn run(rr: &mut RoundRobin, c: &Cluster, pods: usize) -> Vec<String> {
        (0..pods)
            .map(|i| rr.pick(c, &mk_pod(&format!("p{i}"))).expect("eligible"))
            .collect()
    }

    #[test]
    fn sorted_by_name_by_default() {
        let c = cluster(&["c", "a", "b"]);
        let mut rr = RoundRobin::new(vec![]);
        assert_eq!(run(&mut rr, &c, 5), ["a", "b", "c", "a", "b"]);
    }

    #[test]
    fn configured_order_is_respected_and_unlisted_nodes_unused() {
        let c = cluster(&["a", "b", "c", "d"]);
        let mut rr = RoundRobin::new(vec!["c".into(), "a".into(), "ghost".into()]);
        assert_eq!(run(&mut rr, &c, 4), ["c", "a", "c", "a"]);
        assert_eq!(rr.unknown_ordered_nodes(&c), ["ghost"]);
    }

    #[test]
    fn not_ready_is_skipped_and_used_again_when_ready() {
        let mut c = cluster(&["a", "b", "c"]);
        let mut rr = RoundRobin::new(vec![]);
        let mut b = mk_node("b");
        b.ready = false;
        c.upsert_node(b.clone());
        assert_eq!(run(&mut rr, &c, 3), ["a", "c", "a"]);
        b.ready = true;
        c.upsert_node(b);
        assert_eq!(run(&mut rr, &c, 3), ["b", "c", "a"]);
    }

    #[test]
    fn failed_bind_gives_the_node_back() {
        let c = cluster(&["a", "b", "c"]);
        let mut rr = RoundRobin::new(vec![]);
        let first = rr.pick(&c, &mk_pod("p")).unwrap();
        rr.bind_failed(&Binding {
            pod: PodKey::new("default", "p"),
            uid: String::new(),
            node: first.clone(),
        });
        assert_eq!(rr.pick(&c, &mk_pod("p")).unwrap(), first);
        assert_eq!(run(&mut rr, &c, 2), ["b", "c"]);
    }

    #[test]
    fn a_successor_resumed_after_the_last_node_continues_the_order() {
        for order in [vec![], vec!["c".to_string(), "a".into(), "b".into()]] {
            let c = cluster(&["a", "b", "c"]);
            let mut first = RoundRobin::new(order.clone());
            let mut alone = RoundRobin::new(order.clone());
            let before = run(&mut first, &c, 4);
            let mut next = RoundRobin::new(order.clone());
            next.resume_after(first.last_handed_out().map(str::to_string));
            let mut handed: Vec<String> = before;
            handed.extend(run(&mut next, &c, 5));
            assert_eq!(handed, run(&mut alone, &c, 9), "order {order:?}");
        }
        // Unknown or missing positions start from the beginning; owed nodes are forgotten.
        let c = cluster(&["a", "b"]);
        let mut rr = RoundRobin::new(vec!["b".into(), "a".into()]);
        rr.bind_failed(&Binding {
            pod: PodKey::new("default", "p"),
            uid: "uid-p".into(),
            node: "a".into(),
        });
        rr.resume_after(Some("ghost".into()));
        assert_eq!(rr.last_handed_out(), None);
        assert_eq!(run(&mut rr, &c, 2), ["b", "a"]);
        rr.resume_after(None);
        assert_eq!(run(&mut rr, &c, 1), ["b"]);
    }

    #[test]
    fn explains_why_nothing_fits() {
        let mut c = cluster(&["a", "b", "c", "d", "e"]);
        for n in ["a", "b", "c"] {
            let mut node = mk_node(n);
            node.ready = false;
            c.upsert_node(node);
        }
        for n in ["d", "e"] {
            let mut node = mk_node(n);
            node.taints.push(crate::model::Taint {
                key: "dedicated".into(),
                value: "gpu".into(),
                effect: crate::model::TaintEffect::NoSchedule,
            });
            c.upsert_node(node);
        }
        let mut rr = RoundRobin::new(vec![]);
        let d = rr.schedule(&c, &[&mk_pod("p")], &SchedulingContext::default());
        let Decision::Unschedulable { message, .. } = d else {
            panic!("expected unschedulable, got {d:?}")
        };
        assert_eq!(
            message,
            "0/5 nodes are available: 3 node(s) were not ready, 2 node(s) had untolerated taint {dedicated: gpu}."
        );
    }

    #[derive(Clone, Debug)]
    enum NodeKind {
        Ready,
        NotReady,
        Cordoned,
        Tainted,
    }

    fn node_kind() -> impl Strategy<Value = NodeKind> {
        prop_oneof![
            4 => Just(NodeKind::Ready),
            1 => Just(NodeKind::NotReady),
            1 => Just(NodeKind::Cordoned),
            1 => Just(NodeKind::Tainted),
        ]
    }

    fn build(kinds: &[NodeKind]) -> Cluster {
        let mut c = Cluster::new();
        for (i, k) in kinds.iter().enumerate() {
            let mut n = mk_node(&format!("node-{i:03}"));
            match k {
                NodeKind::Ready => {}
                NodeKind::NotReady => n.ready = false,
                NodeKind::Cordoned => n.unschedulable = true,
                NodeKind::Tainted => n.taints.push(crate::model::Taint {
                    key: "k".into(),
                    value: "v".into(),
                    effect: crate::model::TaintEffect::NoExecute,
                }),
            }
            c.upsert_node(n);
        }
        c
    }

    /// Issue 11.8: a 4-CPU node already running eight 500m pods (of any
    /// scheduler) is full: the ninth goes elsewhere or waits.
    #[test]
    fn a_full_node_is_skipped() {
        let mut c = cluster(&["full", "roomy"]);
        for i in 0..8 {
            let mut p = mk_pod(&format!("other-{i}"));
            p.ours = false;
            p.requests.cpu_millis = 500;
            p.node_name = Some("full".into());
            c.upsert_pod(p);
        }
        let mut ninth = mk_pod("ninth");
        ninth.requests.cpu_millis = 500;
        let mut rr = RoundRobin::new(vec!["full".into(), "roomy".into()]);
        assert_eq!(rr.pick(&c, &ninth).unwrap(), "roomy");
        assert_eq!(
            rr.pick(&c, &ninth).unwrap(),
            "roomy",
            "full is skipped again"
        );
        let mut rr = RoundRobin::new(vec!["full".into()]);
        let d = rr.schedule(&c, &[&ninth], &SchedulingContext::default());
        let Decision::Unschedulable { message, .. } = d else {
            panic!("expected unschedulable, got {d:?}")
        };
        assert_eq!(
            message,
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) were not in the round-robin node order."
        );
    }

    proptest! {
        /// Issue 11.8: with bound pods counted, round-robin never places a
        /// pod on a node where it does not fit, and says "unschedulable"
        /// only when no node has room.
        #[test]
        fn never_over_allocatable(
            nodes in proptest::collection::vec((1i64..=8, 1i64..=8), 1..8),
            others in proptest::collection::vec((0usize..8, 1i64..=4), 0..12),
            pods in proptest::collection::vec((0i64..=6, 0i64..=4), 1..40),
        ) {
            let mut c = Cluster::new();
            for (i, (cpu, gib)) in nodes.iter().enumerate() {
                let mut n = mk_node(&format!("n{i}"));
                n.allocatable.cpu_millis = cpu * 1000;
                n.allocatable.memory_bytes = gib << 30;
                n.allocatable.pods = 6;
                c.upsert_node(n);
            }
            for (j, (node, cpu)) in others.iter().enumerate() {
                let name = format!("n{}", node % nodes.len());
                let mut p = mk_pod(&format!("other-{j}"));
                p.ours = false;
                p.requests.cpu_millis = cpu * 500;
                if c.node(&name).and_then(|n| n.shortfall(&p.requests)).is_none() {
                    p.node_name = Some(name);
                    c.upsert_pod(p);
                }
            }
            let mut rr = RoundRobin::new(vec![]);
            for (k, (cpu, gib)) in pods.iter().enumerate() {
                let mut p = mk_pod(&format!("p{k}"));
                p.requests.cpu_millis = cpu * 500;
                p.requests.memory_bytes = gib << 29;
                c.upsert_pod(p.clone());
                match rr.schedule(&c, &[&p], &SchedulingContext::default()) {
                    Decision::Bind(b) => c.assume(&p.key, &b[0].node),
                    _ => prop_assert!(
                        c.nodes().all(|n| n.shortfall(&p.requests).is_some()),
                        "unschedulable although a node has room"
                    ),
                }
                for n in c.nodes() {
                    let (a, r) = (&n.info.allocatable, &n.requested);
                    prop_assert!(r.cpu_millis <= a.cpu_millis && r.memory_bytes <= a.memory_bytes && r.pods <= a.pods,
                        "{} over allocatable: {r:?} > {a:?}", n.info.name);
                }
            }
        }

        /// Fairness: per-node counts differ by at most one, and ineligible
        /// nodes are never chosen, whatever the order of failures.
        #[test]
        fn fair_and_only_eligible(
            kinds in proptest::collection::vec(node_kind(), 1..40),
            pods in 0usize..300,
            failures in proptest::collection::vec(any::<bool>(), 0..300),
            configured in any::<bool>(),
        ) {
            let c = build(&kinds);
            let order: Vec<String> = if configured {
                c.nodes().rev().map(|n| n.info.name.clone()).collect()
            } else { vec![] };
            let mut rr = RoundRobin::new(order);
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            let eligible: Vec<String> = c.nodes()
                .filter(|n| check_node(&n.info, &mk_pod("x")).is_ok())
                .map(|n| n.info.name.clone()).collect();
            let mut bound = 0;
            let mut i = 0;
            while bound < pods {
                let pod = mk_pod(&format!("p{bound}"));
                match rr.pick(&c, &pod) {
                    Ok(node) => {
                        prop_assert!(eligible.contains(&node), "chose ineligible {node}");
                        if failures.get(i).copied().unwrap_or(false) {
                            rr.bind_failed(&Binding { pod: pod.key.clone(), uid: pod.uid.clone(), node });
                        } else {
                            *counts.entry(node).or_default() += 1;
                            bound += 1;
                        }
                    }
                    Err(_) => { prop_assert!(eligible.is_empty()); break; }
                }
                i += 1;
            }
            if !eligible.is_empty() && pods > 0 {
                let min = eligible.iter().map(|n| counts.get(n).copied().unwrap_or(0)).min().unwrap();
                let max = eligible.iter().map(|n| counts.get(n).copied().unwrap_or(0)).max().unwrap();
                prop_assert!(max - min <= 1, "counts {counts:?}");
            }
        }

        /// Order respected: with a configured order, picks walk it cyclically,
        /// skipping exactly the ineligible entries.
        #[test]
        fn configured_order_is_walked_cyclically(
            kinds in proptest::collection::vec(node_kind(), 1..30),
            perm_seed in any::<u64>(),
            pods in 1usize..100,
        ) {
            use rand::seq::SliceRandom;
            use rand::SeedableRng;
            let c = build(&kinds);
            let mut order: Vec<String> = c.nodes().map(|n| n.info.name.clone()).collect();
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(perm_seed));
            let eligible: Vec<String> = order.iter()
                .filter(|n| check_node(&c.node(n).unwrap().info, &mk_pod("x")).is_ok())
                .cloned().collect();
            let mut rr = RoundRobin::new(order);
            for i in 0..pods {
                match rr.pick(&c, &mk_pod(&format!("p{i}"))) {
                    Ok(node) => prop_assert_eq!(&node, &eligible[i % eligible.len()]),
                    Err(_) => { prop_assert!(eligible.is_empty()); break; }
                }
            }
        }
    }
}
