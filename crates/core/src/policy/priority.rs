//! The `priority` profile: priority order, preemption and gang (pod group)
//! scheduling, for clusters where some workloads matter more than others and
//! some only make sense together.
//!
//! ```text
//! unit (one pod, or every pending member of a gang)
//!   │ gang checks: minMember quorum met? settle delay over? ──no──► Wait
//!   ▼
//! for each member, highest priority first:
//!   free room (nominated node, free-node set / free-CPU index) ──► place
//!   else its nominated node frees up once terminating pods go   ──► place, wait
//!   else cheapest victims (victim index, lowest priority first) ──► place, evict
//!   else                                                        ──► Unschedulable (nothing evicted or bound)
//!   ▼
//! Bind (no victims) · Preempt (evictions + nominations) · Wait (victims still terminating)
//! ```
//!
//! Semantics:
//! - **Priority** is [`PodInfo::priority`] (`spec.priority` from the
//!   PriorityClass, else 0; the `priority` annotation only in namespaces the
//!   operator allows, see [`crate::model::effective_priority`]). The queue
//!   hands out the highest priority first, then the oldest.
//! - **Ours** ([`crate::model::Ownership`]): our scheduler name, namespace
//!   and label selector. Other pods bound to a node are capacity only: never
//!   victims.
//! - **Capacity** ([`CapacityMode`]): one pod of this scheduler per node (the
//!   default), or resource fit (the pod's requests against allocatable minus
//!   what every bound pod requests).
//! - **Nominations**: a node nominated to a pending pod of ours with a
//!   priority at least the deciding pod's is held for it (one-per-node: the
//!   node counts as taken; resource-fit: the nominated pod's requests count as
//!   used), so a freed node is not taken by a lower-priority pod meanwhile.
//! - **Preemption**: when a pod fits nowhere, the node is chosen whose
//!   victims have the lowest highest priority, then are the fewest, then have
//!   the lowest priority sum (kube-scheduler's order: protect important work
//!   first, then disturb as little as possible). Victims are pods of ours
//!   only (other schedulers' priorities are not ours to compare), never
//!   terminating ones, nor ones whose eviction was just refused by a
//!   PodDisruptionBudget ([`Cluster::refuse_eviction`]: the next plan picks
//!   other victims or none), and all strictly lower than the preemptor (for a
//!   gang: than its highest member). Victims respect the capacity mode: one-per-node
//!   frees the whole node; resource-fit evicts the fewest lowest-priority pods
//!   whose requests make room.
//! - **Gangs**: all or nothing. A complete plan (a node for every pending
//!   member, plus victims) is made first; a [`Decision::Bind`] or
//!   [`Decision::Preempt`] covers every member, anything less is
//!   [`Decision::Unschedulable`] and touches nothing. Its size is the
//!   `pod-group-min-member` annotation, else the PodGroup object's `minMember`
//!   ([`Cluster::group_min_member`]; members already running count towards it; the
//!   gang waits while fewer are pending), or, without one, the members
//!   pending once the newest is older than the settle delay.
//!
//! Pure: the only inputs are the cluster index, the unit and the time in the
//! [`SchedulingContext`]; the plan is carried out by the I/O crate.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::cluster::{Cluster, NodeState};
use crate::filter::{FilterReason, FilterSummary, check_node};
use crate::framework::{Binding, Decision, Eviction, Nomination, Profile, SchedulingContext};
use crate::model::{Millis, PodInfo, PodKey, Resources};

/// How much of a node one of our pods uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CapacityMode {
    /// At most one pod of this scheduler per node, whatever it requests (the
    /// earlier system's rule: each analyzer owns a whole GPU board).
    #[default]
    OnePerNode,
    /// Pod requests (CPU, memory, pod count, extended resources such as
    /// `nvidia.com/gpu`) against node allocatable minus what is bound there.
    ResourceFit,
}

impl CapacityMode {
    /// The flag spelling (`one-per-node`, `resource-fit`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnePerNode => "one-per-node",
            Self::ResourceFit => "resource-fit",
        }
    }
}

impl fmt::Display for CapacityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A capacity mode spelled neither `one-per-node` nor `resource-fit`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown capacity mode {0:?}: expected one-per-node or resource-fit")]
pub struct ParseCapacityModeError(pub String);

impl FromStr for CapacityMode {
    type Err = ParseCapacityModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "one-per-node" => Ok(Self::OnePerNode),
            "resource-fit" => Ok(Self::ResourceFit),
            other => Err(ParseCapacityModeError(other.to_string())),
        }
    }
}

/// Settings of the profile (the CLI maps its flags onto this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriorityConfig {
    /// How capacity is counted.
    pub capacity: CapacityMode,
    /// Whether lower-priority pods may be evicted to make room.
    pub preemption: bool,
    /// A gang without `minMember` is the set of members pending once the
    /// newest is this old: members created together arrive over a few
    /// watch events, and scheduling the first one alone would break the gang.
    pub gang_settle: Duration,
    /// How long a preemptor waits for its terminating victims before it is
    /// looked at again (a pod deletion brings it back sooner).
    pub victim_wait: Duration,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        Self {
            capacity: CapacityMode::OnePerNode,
            preemption: true,
            gang_settle: Duration::from_secs(5),
            victim_wait: Duration::from_secs(5),
        }
    }
}

/// The `priority` profile. Stateless between decisions: everything it needs
/// is in the cluster index (nominations included), so a restart loses nothing.
#[derive(Clone, Debug, Default)]
pub struct PriorityProfile {
    config: PriorityConfig,
}

impl PriorityProfile {
    /// A profile with these settings.
    pub fn new(config: PriorityConfig) -> Self {
        Self { config }
    }

    /// The settings in use.
    pub fn config(&self) -> &PriorityConfig {
        &self.config
    }

    /// Decides for one unit: see the module docs. `unit` members that are no
    /// longer pending are ignored.
    pub fn decide(&self, cluster: &Cluster, unit: &[&PodInfo], now: Millis) -> Decision {
        let mut members: Vec<&PodInfo> = unit.iter().copied().filter(|p| p.is_pending()).collect();
        if members.is_empty() {
            return Decision::Bind(Vec::new());
        }
        // Highest priority first, then oldest: the gang's important members
        // get the best nodes, and the order is deterministic.
        members.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.created_at.cmp(&b.created_at))
                .then_with(|| a.key.cmp(&b.key))
        });
        let group = members.iter().find_map(|p| p.group.as_ref());
        if let Some(group) = group
            && let Some(wait) = self.gang_not_ready(cluster, &members, &group.name, now)
        {
            return wait;
        }
        // Victims must be strictly below the unit's highest member.
        let threshold = members[0].priority;
        let mut plan = Plan::new(cluster, self.config.capacity, &members, now);
        for (i, member) in members.iter().enumerate() {
            if let Some(node) = plan.find_free(member) {
                plan.place(member, node, false);
                continue;
            }
            if self.config.preemption {
                if let Some(node) = plan.frees_up_soon(member) {
                    plan.place(member, node, true);
                    continue;
                }
                if let Some(candidate) = plan.find_victims(member, threshold) {
                    plan.evict(&candidate, member);
                    plan.place(member, candidate.node, false);
                    continue;
                }
            }
            return self.unschedulable(&plan, member, i, members.len(), group.map(|g| &g.name[..]));
        }
        plan.into_decision(now, self.config.victim_wait)
    }

    /// `Some(Wait)` while a gang is not complete yet.
    fn gang_not_ready(
        &self,
        cluster: &Cluster,
        members: &[&PodInfo],
        group: &str,
        now: Millis,
    ) -> Option<Decision> {
        let namespace = &members[0].key.namespace;
        let settle = duration_millis(self.config.gang_settle);
        // The annotation wins; else the PodGroup object's `minMember`.
        let min_member = members
            .iter()
            .filter_map(|p| p.group.as_ref().and_then(|g| g.min_member))
            .max()
            .or_else(|| cluster.group_min_member(namespace, group));
        match min_member {
            Some(min) => {
                let running = cluster.bound_group_members(namespace, group);
                let have = running + members.len();
                (have < min as usize).then(|| Decision::Wait {
                    retry_at: now + settle.max(1),
                    message: format!(
                        "pod group {namespace}/{group} waits for members: {} pending and {running} running of minMember {min}",
                        members.len()
                    ),
                })
            }
            None => {
                let newest = members.iter().map(|p| p.created_at).max().unwrap_or(now);
                // A creation time ahead of our clock (skew) waits one settle
                // delay at most.
                let ready_at = (newest + settle).min(now + settle);
                (now < ready_at).then(|| Decision::Wait {
                    retry_at: ready_at,
                    message: format!(
                        "pod group {namespace}/{group}: waiting {} ms for more members to arrive ({} pending)",
                        ready_at - now,
                        members.len()
                    ),
                })
            }
        }
    }

    fn unschedulable(
        &self,
        plan: &Plan<'_>,
        member: &PodInfo,
        placed: usize,
        total: usize,
        group: Option<&str>,
    ) -> Decision {
        let summary = plan.explain(member);
        let mut message = summary.to_string();
        if self.config.preemption {
            message
                .push_str(" preemption: no node where evicting pods of lower priority makes room.");
        }
        if let Some(group) = group {
            message = format!(
                "pod group {}/{group}: no complete placement ({placed}/{total} members placed, none bound); {}: {message}",
                member.key.namespace, member.key
            );
        }
        Decision::Unschedulable { message, summary }
    }
}

impl Profile for PriorityProfile {
    fn name(&self) -> &'static str {
        "priority"
    }

    fn gang_aware(&self) -> bool {
        true
    }

    fn schedule(
        &mut self,
        cluster: &Cluster,
        unit: &[&PodInfo],
        ctx: &SchedulingContext<'_>,
    ) -> Decision {
        self.decide(cluster, unit, ctx.now)
    }
}

fn duration_millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX / 4)
}

/// Victims on one node that make room for one pod, with their cost.
#[derive(Clone, Debug)]
struct Candidate {
    node: String,
    victims: Vec<PodKey>,
    /// (highest victim priority, victim count, priority sum): smaller is better.
    cost: (i32, usize, i64),
}

/// A plan being built for one unit: an overlay of placements and victims on
/// top of the (read-only) cluster index.
struct Plan<'c> {
    cluster: &'c Cluster,
    mode: CapacityMode,
    /// Decision time: recently refused victims are not asked again.
    now: Millis,
    /// The unit's own pods: their nominations never block them.
    unit: HashSet<PodKey>,
    /// Requests this plan placed on each node.
    placed_on: HashMap<String, Resources>,
    /// Pods this plan evicts.
    victims: HashSet<PodKey>,
    /// Nodes with victims, in the order chosen.
    victim_nodes: Vec<String>,
    bindings: Vec<Binding>,
    evictions: Vec<Eviction>,
    /// Unit members whose nominated node differs from the plan's choice.
    nominations: Vec<Nomination>,
    /// Some member waits for terminating pods to leave its node.
    waits: bool,
}

impl<'c> Plan<'c> {
    fn new(cluster: &'c Cluster, mode: CapacityMode, members: &[&PodInfo], now: Millis) -> Self {
        Self {
            cluster,
            mode,
            now,
            unit: members.iter().map(|p| p.key.clone()).collect(),
            placed_on: HashMap::new(),
            victims: HashSet::new(),
            victim_nodes: Vec::new(),
            bindings: Vec::new(),
            evictions: Vec::new(),
            nominations: Vec::new(),
            waits: false,
        }
    }

    /// Whether `pod` has room on `node` given this plan, counting `freed` as
    /// gone and, with `terminating_gone`, terminating pods of ours as gone.
    fn room(
        &self,
        node: &NodeState,
        pod: &PodInfo,
        freed: &[PodKey],
        terminating_gone: bool,
    ) -> Result<(), FilterReason> {
        let name = &node.info.name;
        let gone = |k: &PodKey| -> bool {
            self.victims.contains(k)
                || freed.contains(k)
                || (terminating_gone && self.cluster.pod(k).is_some_and(|p| p.terminating))
        };
        // Pods of ours that hold the node for themselves: nominated, pending,
        // not in this unit, at least as important.
        let holders = || {
            self.cluster
                .nominated_to(name)
                .filter(|q| !self.unit.contains(&q.key) && q.priority >= pod.priority)
        };
        match self.mode {
            CapacityMode::OnePerNode => {
                if self.placed_on.contains_key(name) || node.ours.iter().any(|k| !gone(k)) {
                    return Err(FilterReason::Occupied);
                }
                if holders().next().is_some() {
                    return Err(FilterReason::Nominated);
                }
                Ok(())
            }
            CapacityMode::ResourceFit => {
                let mut free = node.free();
                for k in node.ours.iter().filter(|k| gone(k)) {
                    if let Some(p) = self.cluster.pod(k) {
                        free.add(&p.requests);
                    }
                }
                if let Some(placed) = self.placed_on.get(name) {
                    free.sub(placed);
                }
                if let Some(r) = free.first_shortfall(&pod.requests) {
                    return Err(FilterReason::Insufficient(r));
                }
                for q in holders() {
                    free.sub(&q.requests);
                }
                if free.first_shortfall(&pod.requests).is_some() {
                    return Err(FilterReason::Nominated);
                }
                Ok(())
            }
        }
    }

    fn fits(&self, node: &NodeState, pod: &PodInfo) -> bool {
        check_node(&node.info, pod).is_ok() && self.room(node, pod, &[], false).is_ok()
    }

    /// A node with room now, without evicting anything. Looks at the pod's
    /// nominated node, nodes this plan frees, then the index of free nodes
    /// (one-per-node) or nodes by free CPU, most first (resource-fit),
    /// stopping at the first node whose CPU is too small.
    fn find_free(&self, pod: &PodInfo) -> Option<String> {
        let cluster = self.cluster;
        if let Some(node) = pod.nominated_node.as_deref().and_then(|n| cluster.node(n))
            && self.fits(node, pod)
        {
            return Some(node.info.name.clone());
        }
        for name in &self.victim_nodes {
            if let Some(node) = cluster.node(name)
                && self.fits(node, pod)
            {
                return Some(name.clone());
            }
        }
        match self.mode {
            CapacityMode::OnePerNode => cluster
                .nodes_free_of_ours()
                .iter()
                .filter(|n| !self.placed_on.contains_key(*n))
                .filter_map(|n| cluster.node(n))
                .find(|node| self.fits(node, pod))
                .map(|node| node.info.name.clone()),
            CapacityMode::ResourceFit => cluster
                .nodes_by_free_cpu_desc()
                .take_while(|(cpu, _)| *cpu >= pod.requests.cpu_millis)
                .map(|(_, node)| node)
                .find(|node| self.fits(node, pod))
                .map(|node| node.info.name.clone()),
        }
    }

    /// The pod's nominated node, when it will have room once the terminating
    /// pods there are gone (its victims, evicted by an earlier decision):
    /// wait for them rather than evict more.
    fn frees_up_soon(&self, pod: &PodInfo) -> Option<String> {
        let node = self.cluster.node(pod.nominated_node.as_deref()?)?;
        let terminating = node
            .ours
            .iter()
            .any(|k| self.cluster.pod(k).is_some_and(|p| p.terminating));
        (terminating
            && check_node(&node.info, pod).is_ok()
            && self.room(node, pod, &[], true).is_ok())
        .then(|| node.info.name.clone())
    }

    /// The cheapest victims that make room for `pod`, all below `threshold`.
    /// Walks our placed pods from the lowest priority up and stops as soon as
    /// no later node can be cheaper.
    fn find_victims(&self, pod: &PodInfo, threshold: i32) -> Option<Candidate> {
        let cluster = self.cluster;
        let mut best: Option<Candidate> = None;
        let mut visited: HashSet<&str> = HashSet::new();
        for (priority, key) in cluster.ours_by_priority() {
            if priority >= threshold {
                break;
            }
            if let Some(b) = &best {
                // Later candidates have every victim at ≥ `priority`.
                if priority > b.cost.0 || (priority == b.cost.0 && b.cost.1 == 1) {
                    break;
                }
            }
            let Some(victim) = cluster.pod(key) else {
                continue;
            };
            if victim.terminating || self.victims.contains(key) {
                continue;
            }
            let Some(node_name) = victim.node_name.as_deref() else {
                continue;
            };
            if !visited.insert(node_name) {
                continue;
            }
            let Some(node) = cluster.node(node_name) else {
                continue;
            };
            if check_node(&node.info, pod).is_err() {
                continue;
            }
            let Some(candidate) = self.victims_on(node, pod, threshold) else {
                continue;
            };
            if best.as_ref().is_none_or(|b| candidate.cost < b.cost) {
                best = Some(candidate);
            }
        }
        best
    }

    /// The fewest lowest-priority pods of ours on `node` whose eviction makes
    /// room for `pod` (terminating pods count as leaving anyway).
    fn victims_on(&self, node: &NodeState, pod: &PodInfo, threshold: i32) -> Option<Candidate> {
        if self.mode == CapacityMode::OnePerNode && self.placed_on.contains_key(&node.info.name) {
            return None;
        }
        let mut evictable: Vec<&PodInfo> = Vec::new();
        for key in &node.ours {
            if self.victims.contains(key) {
                continue;
            }
            let p = self.cluster.pod(key)?;
            if p.terminating {
                continue;
            }
            let refused = self.cluster.eviction_refused(key, self.now);
            if p.priority < threshold && !refused {
                evictable.push(p);
            } else if self.mode == CapacityMode::OnePerNode {
                // The node can only be freed by evicting a pod we may not
                // (more important, or its eviction was just refused).
                return None;
            }
        }
        evictable.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.key.cmp(&b.key)));
        let mut chosen: Vec<PodKey> = Vec::new();
        let mut fits = self.room(node, pod, &chosen, true).is_ok();
        for p in &evictable {
            if fits {
                break;
            }
            chosen.push(p.key.clone());
            fits = self.room(node, pod, &chosen, true).is_ok();
        }
        if !fits || chosen.is_empty() {
            return None;
        }
        // Reprieve: give back the most important victims that are not needed.
        let mut i = chosen.len();
        while i > 0 {
            i -= 1;
            let key = chosen.remove(i);
            if self.room(node, pod, &chosen, true).is_err() {
                chosen.insert(i, key);
            }
        }
        let priorities: Vec<i32> = chosen
            .iter()
            .filter_map(|k| self.cluster.pod(k).map(|p| p.priority))
            .collect();
        let max = priorities.iter().copied().max()?;
        let sum = priorities.iter().map(|p| i64::from(*p)).sum();
        Some(Candidate {
            node: node.info.name.clone(),
            cost: (max, chosen.len(), sum),
            victims: chosen,
        })
    }

    fn place(&mut self, pod: &PodInfo, node: String, waits: bool) {
        self.waits |= waits;
        if pod.nominated_node.as_deref() != Some(node.as_str()) {
            self.nominations.push(Nomination {
                pod: pod.key.clone(),
                node: node.clone(),
            });
        }
        self.placed_on
            .entry(node.clone())
            .or_default()
            .add(&pod.requests);
        self.bindings.push(Binding {
            pod: pod.key.clone(),
            uid: pod.uid.clone(),
            node,
        });
    }

    fn evict(&mut self, candidate: &Candidate, preemptor: &PodInfo) {
        for victim in &candidate.victims {
            self.victims.insert(victim.clone());
            self.evictions.push(Eviction {
                pod: victim.clone(),
                uid: self
                    .cluster
                    .pod(victim)
                    .map(|p| p.uid.clone())
                    .unwrap_or_default(),
                node: candidate.node.clone(),
                preemptor: preemptor.key.clone(),
            });
        }
        self.victim_nodes.push(candidate.node.clone());
    }

    fn into_decision(self, now: Millis, victim_wait: Duration) -> Decision {
        if !self.evictions.is_empty() {
            let message = format!(
                "preempting {} pod(s) of lower priority on {} node(s) for {} pod(s): {}",
                self.evictions.len(),
                self.victim_nodes.len(),
                self.bindings.len(),
                self.evictions
                    .iter()
                    .map(|e| format!("{} on {}", e.pod, e.node))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            // Every member whose nomination differs is nominated (members
            // on free nodes too), so no pod of lower priority takes the room
            // while the victims terminate.
            return Decision::Preempt {
                evictions: self.evictions,
                nominations: self.nominations,
                message,
            };
        }
        if self.waits {
            return Decision::Wait {
                retry_at: now + duration_millis(victim_wait).max(1),
                message: "waiting for preempted pods to terminate on the nominated node".into(),
            };
        }
        Decision::Bind(self.bindings)
    }

    /// Why `pod` fits nowhere, kube-scheduler style. One-per-node counts the
    /// occupied nodes from the index and inspects only the free ones.
    fn explain(&self, pod: &PodInfo) -> FilterSummary {
        let cluster = self.cluster;
        let mut summary = FilterSummary {
            total: cluster.node_count(),
            ..Default::default()
        };
        let mut judge = |node: &NodeState| {
            if let Err(r) =
                check_node(&node.info, pod).and_then(|()| self.room(node, pod, &[], false))
            {
                summary.add(r);
            }
        };
        match self.mode {
            CapacityMode::OnePerNode => {
                let free = cluster.nodes_free_of_ours();
                for node in free.iter().filter_map(|n| cluster.node(n)) {
                    judge(node);
                }
                let occupied = cluster.node_count().saturating_sub(free.len());
                if occupied > 0 {
                    *summary.reasons.entry(FilterReason::Occupied).or_default() += occupied;
                }
            }
            CapacityMode::ResourceFit => cluster.nodes().for_each(judge),
        }
        summary
    }
}

#[cfg(test)]
mod tests;
