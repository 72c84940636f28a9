//! The cluster index: nodes and pods as last seen by the watchers, with the
//! indexes decisions need to be fast at 5,000 nodes and 10,000 pods.
//!
//! It is a plain struct updated synchronously from watch events (the
//! Kubernetes crate converts API objects and calls [`Cluster::upsert_node`],
//! [`Cluster::upsert_pod`], …) and from the scheduler's own assumptions
//! ([`Cluster::assume`] when a bind is issued, [`Cluster::forget`] if it
//! fails), like kube-scheduler's cache. Policies only read it.
//!
//! Indexes kept up to date on every write, so that a decision touches only
//! the nodes that can matter:
//!
//! - nodes holding no pod of ours (the one-pod-per-node free list);
//! - nodes ordered by free CPU (resource-fit: walk from the emptiest node and
//!   stop at the first one too small);
//! - our bound pods ordered by priority (preemption: the cheapest victims
//!   come first, and the walk stops at the preemptor's priority);
//! - pending pods of ours by nominated node (room held for a preemptor);
//! - pending and bound members of each pod group (gangs).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{Millis, NodeInfo, PodInfo, PodKey, Resources};

/// A node with what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeState {
    /// The node itself.
    pub info: NodeInfo,
    /// Sum of the requests of every pod bound or assumed here (any scheduler).
    pub requested: Resources,
    /// Pods of our scheduler bound or assumed here.
    pub ours: BTreeSet<PodKey>,
    /// Pods of other schedulers bound here.
    pub others: usize,
}

impl NodeState {
    /// Allocatable minus requested CPU, without cloning the resource maps:
    /// the key of the resource-fit index.
    pub fn free_cpu_millis(&self) -> i64 {
        self.info.allocatable.cpu_millis - self.requested.cpu_millis
    }

    /// The first resource of `request` that does not fit in allocatable
    /// minus what is bound or assumed here (every scheduler's pods), named
    /// as kube-scheduler names it; `None` when the pod fits. Allocates only
    /// for the answer.
    pub fn shortfall(&self, request: &Resources) -> Option<String> {
        let (a, u) = (&self.info.allocatable, &self.requested);
        if request.cpu_millis > 0 && request.cpu_millis > a.cpu_millis - u.cpu_millis {
            return Some("cpu".into());
        }
        if request.memory_bytes > 0 && request.memory_bytes > a.memory_bytes - u.memory_bytes {
            return Some("memory".into());
        }
        if request.pods > 0 && request.pods > a.pods - u.pods {
            return Some("pods".into());
        }
        request
            .extended
            .iter()
            .find(|(k, v)| {
                let free = a.extended.get(*k).copied().unwrap_or(0)
                    - u.extended.get(*k).copied().unwrap_or(0);
                **v > 0 && **v > free
            })
            .map(|(k, _)| k.clone())
    }

    /// Allocatable minus requested.
    pub fn free(&self) -> Resources {
        let mut free = self.info.allocatable.clone();
        free.sub(&self.requested);
        free
    }
}

/// What changed when a node was written, so the loop knows whether capacity
/// may have appeared (kube-scheduler's "move pods to the active queue").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeChange {
    /// The node was not known before.
    pub added: bool,
    /// Became Ready, was uncordoned, lost a taint or gained allocatable.
    pub may_fit_more: bool,
}

/// The index. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    nodes: BTreeMap<String, NodeState>,
    pods: HashMap<PodKey, PodInfo>,
    /// Pods bound to a node we have not seen (yet): kept so accounting is
    /// right when the node arrives.
    orphans: BTreeMap<String, BTreeSet<PodKey>>,
    /// Nodes without any pod of ours: the one-pod-per-node free list.
    free_of_ours: BTreeSet<String>,
    /// Pending pods of ours by (namespace, pod group): gang membership.
    pending_groups: HashMap<(String, String), BTreeSet<PodKey>>,
    /// Bound (or assumed), not terminating pods of ours by (namespace, pod
    /// group): how much of a gang's quorum is already running.
    bound_groups: HashMap<(String, String), BTreeSet<PodKey>>,
    /// Known nodes by (free CPU millicores, name): resource-fit search order.
    by_free_cpu: BTreeSet<(i64, String)>,
    /// Pods of ours bound or assumed on some node, by (priority, key): the
    /// preemption victim index, lowest priority first.
    ours_by_priority: BTreeSet<(i32, PodKey)>,
    /// Pending pods of ours with `status.nominatedNodeName`, by that node.
    nominated: HashMap<String, BTreeSet<PodKey>>,
    /// `minMember` of PodGroup objects (scheduler-plugins CRD) by
    /// (namespace, name), where that CRD is installed.
    group_min_members: HashMap<(String, String), u32>,
    /// Pods whose eviction was refused (a PodDisruptionBudget), until when
    /// preemption should not pick them again.
    eviction_refused: HashMap<PodKey, Millis>,
    generation: u64,
}

impl Cluster {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bumped on every change; lets callers cache derived views.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Nodes sorted by name.
    pub fn nodes(&self) -> impl DoubleEndedIterator<Item = &NodeState> {
        self.nodes.values()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Nodes in name order starting just after `name` and wrapping around:
    /// the round-robin walk, O(log n) to start.
    pub fn nodes_after<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a NodeState> + 'a {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        self.nodes
            .range::<str, _>((Excluded(name), Unbounded))
            .chain(self.nodes.range::<str, _>((Unbounded, Included(name))))
            .map(|(_, n)| n)
    }

    /// One node by name.
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.get(name)
    }

    /// Every known pod.
    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }

    /// One pod by key.
    pub fn pod(&self, key: &PodKey) -> Option<&PodInfo> {
        self.pods.get(key)
    }

    /// Names of the nodes holding no pod of ours, sorted.
    pub fn nodes_free_of_ours(&self) -> &BTreeSet<String> {
        &self.free_of_ours
    }

    /// Pending pods of ours in the same namespace and pod group as `pod`
    /// (including `pod` itself when pending), sorted by key.
    pub fn pending_group_members(&self, namespace: &str, group: &str) -> Vec<&PodInfo> {
        self.pending_groups
            .get(&(namespace.to_string(), group.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
            .collect()
    }

    /// How many pods of ours in this pod group are bound (or assumed) and not
    /// terminating: the part of a gang's `minMember` already met.
    pub fn bound_group_members(&self, namespace: &str, group: &str) -> usize {
        self.bound_groups
            .get(&(namespace.to_string(), group.to_string()))
            .map_or(0, BTreeSet::len)
    }

    /// The `minMember` of the PodGroup object of this name, when one exists
    /// (the gang size when pods carry no `pod-group-min-member` annotation).
    pub fn group_min_member(&self, namespace: &str, group: &str) -> Option<u32> {
        self.group_min_members
            .get(&(namespace.to_string(), group.to_string()))
            .copied()
    }

    /// Namespaces and names of the PodGroup objects whose `minMember` is
    /// recorded (to purge those a re-list no longer shows).
    pub fn group_min_member_keys(&self) -> Vec<(String, String)> {
        self.group_min_members.keys().cloned().collect()
    }

    /// Records a PodGroup object's `minMember` (`None`: the object was
    /// deleted), as its watch reports it.
    pub fn set_group_min_member(&mut self, namespace: &str, group: &str, min_member: Option<u32>) {
        self.generation += 1;
        let key = (namespace.to_string(), group.to_string());
        match min_member {
            Some(m) => self.group_min_members.insert(key, m),
            None => self.group_min_members.remove(&key),
        };
    }

    /// Records that evicting `key` was refused (HTTP 429, a
    /// PodDisruptionBudget), so preemption plans around it until `until`
    /// instead of asking again for the same victim.
    pub fn refuse_eviction(&mut self, key: &PodKey, until: Millis) {
        self.generation += 1;
        if self.pods.contains_key(key) {
            self.eviction_refused.insert(key.clone(), until);
        }
    }

    /// Whether an eviction of `key` was refused recently (before `until`
    /// given to [`Cluster::refuse_eviction`] is reached at `now`).
    pub fn eviction_refused(&self, key: &PodKey, now: Millis) -> bool {
        self.eviction_refused
            .get(key)
            .is_some_and(|until| now < *until)
    }

    /// Our pods placed on a node (bound or assumed), lowest priority first,
    /// ties by key: the order in which preemption considers victims.
    pub fn ours_by_priority(&self) -> impl Iterator<Item = (i32, &PodKey)> {
        self.ours_by_priority.iter().map(|(p, k)| (*p, k))
    }

    /// Nodes by free CPU (allocatable minus requested), most free first: the
    /// resource-fit search order, so the walk can stop at the first node
    /// whose CPU is too small.
    pub fn nodes_by_free_cpu_desc(&self) -> impl Iterator<Item = (i64, &NodeState)> {
        self.by_free_cpu
            .iter()
            .rev()
            .filter_map(|(cpu, name)| self.nodes.get(name).map(|n| (*cpu, n)))
    }

    /// Pending pods of ours whose `status.nominatedNodeName` is `node`: room
    /// on that node is held for them (kube-scheduler's nominator).
    pub fn nominated_to<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a PodInfo> + 'a {
        self.nominated
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
    }

    /// Records (or with `None` clears) a pod's nominated node as soon as the
    /// nomination is issued, before the watch echoes it back, so the next
    /// decision already treats the node as held.
    pub fn set_nominated(&mut self, key: &PodKey, node: Option<&str>) {
        if let Some(mut pod) = self.pods.get(key).cloned() {
            pod.nominated_node = node.map(str::to_string);
            self.upsert_pod(pod);
        }
    }

    /// Inserts or replaces a node.
    pub fn upsert_node(&mut self, info: NodeInfo) -> NodeChange {
        self.generation += 1;
        let name = info.name.clone();
        match self.nodes.get_mut(&name) {
            Some(state) => {
                let old = &state.info;
                let may_fit_more = (!old.ready && info.ready)
                    || (old.unschedulable && !info.unschedulable)
                    || info.taints.len() < old.taints.len()
                    || info.labels != old.labels
                    || info.allocatable.cpu_millis > old.allocatable.cpu_millis
                    || info.allocatable.memory_bytes > old.allocatable.memory_bytes
                    || info.allocatable.pods > old.allocatable.pods;
                let old_free = state.free_cpu_millis();
                state.info = info;
                let new_free = state.free_cpu_millis();
                self.by_free_cpu.remove(&(old_free, name.clone()));
                self.by_free_cpu.insert((new_free, name));
                NodeChange {
                    added: false,
                    may_fit_more,
                }
            }
            None => {
                let mut state = NodeState {
                    info,
                    requested: Resources::default(),
                    ours: BTreeSet::new(),
                    others: 0,
                };
                for key in self.orphans.remove(&name).unwrap_or_default() {
                    if let Some(pod) = self.pods.get(&key) {
                        state.requested.add(&pod.requests);
                        if pod.ours {
                            state.ours.insert(key);
                        } else {
                            state.others += 1;
                        }
                    }
                }
                if state.ours.is_empty() {
                    self.free_of_ours.insert(name.clone());
                }
                self.by_free_cpu
                    .insert((state.free_cpu_millis(), name.clone()));
                self.nodes.insert(name, state);
                NodeChange {
                    added: true,
                    may_fit_more: true,
                }
            }
        }
    }

    /// Removes a node; pods still bound to it become orphans until it returns
    /// or they are deleted.
    pub fn remove_node(&mut self, name: &str) -> Option<NodeInfo> {
        self.generation += 1;
        self.free_of_ours.remove(name);
        let state = self.nodes.remove(name)?;
        self.by_free_cpu
            .remove(&(state.free_cpu_millis(), name.to_string()));
        let bound: BTreeSet<PodKey> = self
            .pods
            .values()
            .filter(|p| p.node_name.as_deref() == Some(name))
            .map(|p| p.key.clone())
            .collect();
        if !bound.is_empty() {
            self.orphans.insert(name.to_string(), bound);
        }
        Some(state.info)
    }

    /// Inserts or replaces a pod, keeping per-node accounting right.
    /// Returns the previous version.
    pub fn upsert_pod(&mut self, pod: PodInfo) -> Option<PodInfo> {
        self.generation += 1;
        let old = self.pods.remove(&pod.key);
        if let Some(old) = &old {
            self.unaccount(old);
        }
        self.account(&pod);
        self.pods.insert(pod.key.clone(), pod);
        old
    }

    /// Removes a pod (deleted, or left the watched selection).
    pub fn remove_pod(&mut self, key: &PodKey) -> Option<PodInfo> {
        self.generation += 1;
        self.eviction_refused.remove(key);
        let old = self.pods.remove(key)?;
        self.unaccount(&old);
        Some(old)
    }

    /// Records that a bind of `key` to `node` was issued, before the API
    /// confirms it, so the next decision sees the capacity as taken.
    pub fn assume(&mut self, key: &PodKey, node: &str) {
        if let Some(mut pod) = self.pods.get(key).cloned() {
            pod.node_name = Some(node.to_string());
            self.upsert_pod(pod);
        }
    }

    /// Undoes [`Cluster::assume`] after a failed bind.
    pub fn forget(&mut self, key: &PodKey) {
        if let Some(mut pod) = self.pods.get(key).cloned() {
            pod.node_name = None;
            self.upsert_pod(pod);
        }
    }

    fn account(&mut self, pod: &PodInfo) {
        if let (true, true, Some(g)) = (pod.ours, pod.is_pending(), &pod.group) {
            self.pending_groups
                .entry((pod.key.namespace.clone(), g.name.clone()))
                .or_default()
                .insert(pod.key.clone());
        }
        if let (true, true, Some(node)) = (pod.ours, pod.is_pending(), &pod.nominated_node) {
            self.nominated
                .entry(node.clone())
                .or_default()
                .insert(pod.key.clone());
        }
        let Some(node) = pod.node_name.as_deref() else {
            return;
        };
        if pod.ours {
            self.ours_by_priority
                .insert((pod.priority, pod.key.clone()));
            if let (false, Some(g)) = (pod.terminating, &pod.group) {
                self.bound_groups
                    .entry((pod.key.namespace.clone(), g.name.clone()))
                    .or_default()
                    .insert(pod.key.clone());
            }
        }
        match self.nodes.get_mut(node) {
            Some(state) => {
                let old_free = state.free_cpu_millis();
                state.requested.add(&pod.requests);
                let new_free = state.free_cpu_millis();
                if old_free != new_free {
                    self.by_free_cpu.remove(&(old_free, node.to_string()));
                    self.by_free_cpu.insert((new_free, node.to_string()));
                }
                if pod.ours {
                    state.ours.insert(pod.key.clone());
                    self.free_of_ours.remove(node);
                } else {
                    state.others += 1;
                }
            }
            None => {
                self.orphans
                    .entry(node.to_string())
                    .or_default()
                    .insert(pod.key.clone());
            }
        }
    }

    fn unaccount(&mut self, pod: &PodInfo) {
        if let Some(g) = &pod.group {
            let gk = (pod.key.namespace.clone(), g.name.clone());
            for index in [&mut self.pending_groups, &mut self.bound_groups] {
                if let Some(set) = index.get_mut(&gk) {
                    set.remove(&pod.key);
                    if set.is_empty() {
                        index.remove(&gk);
                    }
                }
            }
        }
        if let Some(node) = &pod.nominated_node
            && let Some(set) = self.nominated.get_mut(node)
        {
            set.remove(&pod.key);
            if set.is_empty() {
                self.nominated.remove(node);
            }
        }
        let Some(node) = pod.node_name.as_deref() else {
            return;
        };
        if pod.ours {
            self.ours_by_priority
                .remove(&(pod.priority, pod.key.clone()));
        }
        match self.nodes.get_mut(node) {
            Some(state) => {
                let old_free = state.free_cpu_millis();
                state.requested.sub(&pod.requests);
                let new_free = state.free_cpu_millis();
                if old_free != new_free {
                    self.by_free_cpu.remove(&(old_free, node.to_string()));
                    self.by_free_cpu.insert((new_free, node.to_string()));
                }
                if pod.ours {
                    state.ours.remove(&pod.key);
                    if state.ours.is_empty() {
                        self.free_of_ours.insert(node.to_string());
                    }
                } else {
                    state.others = state.others.saturating_sub(1);
                }
            }
            None => {
                if let Some(set) = self.orphans.get_mut(node) {
                    set.remove(&pod.key);
                    if set.is_empty() {
                        self.orphans.remove(node);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{mk_node, mk_pod};

    #[test]
    fn accounting_follows_binds_assumes_and_deletes() {
        let mut c = Cluster::new();
        c.upsert_node(mk_node("a"));
        c.upsert_node(mk_node("b"));
        let p = mk_pod("p");
        c.upsert_pod(p.clone());
        assert_eq!(c.nodes_free_of_ours().len(), 2);
        c.assume(&p.key, "a");
        assert_eq!(c.node("a").unwrap().ours.len(), 1);
        assert_eq!(c.node("a").unwrap().requested.pods, 1);
        assert!(!c.nodes_free_of_ours().contains("a"));
        c.forget(&p.key);
        assert!(c.nodes_free_of_ours().contains("a"));
        assert_eq!(c.node("a").unwrap().requested.pods, 0);
        c.assume(&p.key, "b");
        c.remove_pod(&p.key);
        assert_eq!(c.node("b").unwrap().requested.pods, 0);
        assert!(c.nodes_free_of_ours().contains("b"));
    }

    #[test]
    fn pods_on_unknown_nodes_are_counted_when_the_node_arrives() {
        let mut c = Cluster::new();
        let mut p = mk_pod("p");
        p.node_name = Some("late".into());
        c.upsert_pod(p);
        let change = c.upsert_node(mk_node("late"));
        assert!(change.added);
        assert_eq!(c.node("late").unwrap().ours.len(), 1);
        assert!(c.nodes_free_of_ours().is_empty());
        c.remove_node("late");
        c.upsert_node(mk_node("late"));
        assert_eq!(c.node("late").unwrap().ours.len(), 1);
    }

    #[test]
    fn gang_members_are_indexed_while_pending() {
        let mut c = Cluster::new();
        c.upsert_node(mk_node("a"));
        for n in ["g1", "g2"] {
            let mut p = mk_pod(n);
            p.group = Some(crate::model::PodGroupRef {
                name: "gang".into(),
                min_member: Some(2),
            });
            c.upsert_pod(p);
        }
        assert_eq!(c.pending_group_members("default", "gang").len(), 2);
        c.assume(&PodKey::new("default", "g1"), "a");
        assert_eq!(c.pending_group_members("default", "gang").len(), 1);
        c.remove_pod(&PodKey::new("default", "g2"));
        assert!(c.pending_group_members("default", "gang").is_empty());
    }

    #[test]
    fn node_becoming_ready_may_fit_more() {
        let mut c = Cluster::new();
        let mut n = mk_node("a");
        n.ready = false;
        c.upsert_node(n.clone());
        n.ready = true;
        assert!(c.upsert_node(n.clone()).may_fit_more);
        assert!(!c.upsert_node(n).may_fit_more);
    }

    #[test]
    fn nominations_and_victims_are_indexed() {
        let mut c = Cluster::new();
        c.upsert_node(mk_node("a"));
        let mut low = mk_pod("low");
        low.priority = 1;
        low.node_name = Some("a".into());
        c.upsert_pod(low);
        let high = mk_pod("high");
        c.upsert_pod(high.clone());
        c.set_nominated(&high.key, Some("a"));
        assert_eq!(
            c.nominated_to("a")
                .map(|p| p.key.name.as_str())
                .collect::<Vec<_>>(),
            ["high"]
        );
        assert_eq!(
            c.ours_by_priority().map(|(p, _)| p).collect::<Vec<_>>(),
            [1]
        );
        c.assume(&high.key, "a");
        assert_eq!(c.nominated_to("a").count(), 0, "bound pods hold nothing");
        assert_eq!(
            c.nodes_by_free_cpu_desc().next().map(|(cpu, _)| cpu),
            Some(4000)
        );
    }

    mod index_consistency {
        use super::*;
        use crate::model::PodGroupRef;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Node {
                n: u8,
                cpu: i64,
            },
            RemoveNode(u8),
            Pod {
                p: u8,
                node: Option<u8>,
                prio: i8,
                cpu: i64,
                group: Option<u8>,
                nominated: Option<u8>,
                ours: bool,
                terminating: bool,
            },
            RemovePod(u8),
            Assume(u8, u8),
            Forget(u8),
            Nominate(u8, Option<u8>),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..5, 0i64..8).prop_map(|(n, cpu)| Op::Node { n, cpu: cpu * 1000 }),
                (0u8..5).prop_map(Op::RemoveNode),
                (
                    0u8..8,
                    proptest::option::of(0u8..6),
                    any::<i8>(),
                    0i64..4,
                    proptest::option::of(0u8..2),
                    proptest::option::of(0u8..5),
                    prop::bool::weighted(0.8),
                    prop::bool::weighted(0.1)
                )
                    .prop_map(
                        |(p, node, prio, cpu, group, nominated, ours, terminating)| Op::Pod {
                            p,
                            node,
                            prio,
                            cpu: cpu * 500,
                            group,
                            nominated,
                            ours,
                            terminating
                        }
                    ),
                (0u8..8).prop_map(Op::RemovePod),
                (0u8..8, 0u8..6).prop_map(|(p, n)| Op::Assume(p, n)),
                (0u8..8).prop_map(Op::Forget),
                (0u8..8, proptest::option::of(0u8..5)).prop_map(|(p, n)| Op::Nominate(p, n)),
            ]
        }

        fn name(n: u8) -> String {
            format!("n{n}")
        }

        fn pkey(p: u8) -> PodKey {
            PodKey::new("default", format!("p{p}"))
        }

        proptest! {
            /// Every index equals what a full recomputation from the nodes and
            /// pods gives, after any sequence of watch events and assumptions.
            #[test]
            fn indexes_match_a_recomputation(ops in proptest::collection::vec(op(), 0..60)) {
                let mut c = Cluster::new();
                for o in ops {
                    match o {
                        Op::Node { n, cpu } => {
                            let mut node = mk_node(&name(n));
                            node.allocatable.cpu_millis = cpu;
                            c.upsert_node(node);
                        }
                        Op::RemoveNode(n) => { c.remove_node(&name(n)); }
                        Op::Pod { p, node, prio, cpu, group, nominated, ours, terminating } => {
                            let mut pod = mk_pod(&format!("p{p}"));
                            pod.node_name = node.map(name);
                            pod.priority = i32::from(prio);
                            pod.requests.cpu_millis = cpu;
                            pod.group = group.map(|g| PodGroupRef { name: format!("g{g}"), min_member: None });
                            pod.nominated_node = nominated.map(name);
                            pod.ours = ours;
                            pod.terminating = terminating;
                            c.upsert_pod(pod);
                        }
                        Op::RemovePod(p) => { c.remove_pod(&pkey(p)); }
                        Op::Assume(p, n) => c.assume(&pkey(p), &name(n)),
                        Op::Forget(p) => c.forget(&pkey(p)),
                        Op::Nominate(p, n) => c.set_nominated(&pkey(p), n.map(name).as_deref()),
                    }
                }
                for node in c.nodes() {
                    let n = &node.info.name;
                    let here: Vec<&PodInfo> = c.pods().filter(|p| p.node_name.as_ref() == Some(n)).collect();
                    let ours: BTreeSet<PodKey> = here.iter().filter(|p| p.ours).map(|p| p.key.clone()).collect();
                    prop_assert_eq!(&node.ours, &ours);
                    prop_assert_eq!(node.others, here.iter().filter(|p| !p.ours).count());
                    let cpu: i64 = here.iter().map(|p| p.requests.cpu_millis).sum();
                    prop_assert_eq!(node.requested.cpu_millis, cpu);
                    prop_assert_eq!(c.nodes_free_of_ours().contains(n), ours.is_empty());
                    let nominated: BTreeSet<PodKey> = c.nominated_to(n).map(|p| p.key.clone()).collect();
                    let expected: BTreeSet<PodKey> = c.pods()
                        .filter(|p| p.ours && p.is_pending() && p.nominated_node.as_ref() == Some(n))
                        .map(|p| p.key.clone()).collect();
                    prop_assert_eq!(nominated, expected);
                }
                prop_assert_eq!(c.nodes_free_of_ours().len(), c.nodes().filter(|n| n.ours.is_empty()).count());
                let by_cpu: Vec<(i64, String)> = c.nodes_by_free_cpu_desc().map(|(cpu, n)| (cpu, n.info.name.clone())).collect();
                let mut expected: Vec<(i64, String)> = c.nodes().map(|n| (n.free_cpu_millis(), n.info.name.clone())).collect();
                expected.sort();
                expected.reverse();
                prop_assert_eq!(by_cpu, expected);
                let victims: Vec<(i32, PodKey)> = c.ours_by_priority().map(|(p, k)| (p, k.clone())).collect();
                let mut expected: Vec<(i32, PodKey)> = c.pods()
                    .filter(|p| p.ours && p.node_name.is_some())
                    .map(|p| (p.priority, p.key.clone())).collect();
                expected.sort();
                prop_assert_eq!(victims, expected);
                for g in ["g0", "g1"] {
                    let bound = c.pods().filter(|p| p.ours && p.node_name.is_some() && !p.terminating
                        && p.group.as_ref().is_some_and(|x| x.name == g)).count();
                    prop_assert_eq!(c.bound_group_members("default", g), bound);
                    let pending = c.pods().filter(|p| p.ours && p.is_pending()
                        && p.group.as_ref().is_some_and(|x| x.name == g)).count();
                    prop_assert_eq!(c.pending_group_members("default", g).len(), pending);
                }
            }
        }
    }
}
