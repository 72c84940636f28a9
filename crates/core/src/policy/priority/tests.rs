//! Tests of the priority profile: the earlier system's scenarios (state
//! set-up, priority semantics, availability, preemption, single pods, gangs,
//! deletions, ordering) and property tests over a simulated scheduling loop.

use super::*;
use crate::backoff::Backoff;
use crate::fixtures::{mk_node, mk_pod};
use crate::model::{PodGroupRef, Taint, TaintEffect};
use crate::queue::SchedulingQueue;
use proptest::prelude::*;
use std::collections::BTreeMap;

const NOW: Millis = 1_000_000;

fn pod(name: &str, priority: i32) -> PodInfo {
    let mut p = mk_pod(name);
    p.priority = priority;
    p.created_at = NOW - 60_000;
    p
}

fn bound(name: &str, node: &str, priority: i32) -> PodInfo {
    let mut p = pod(name, priority);
    p.node_name = Some(node.into());
    p
}

fn member(name: &str, group: &str, min: Option<u32>, priority: i32) -> PodInfo {
    let mut p = pod(name, priority);
    p.group = Some(PodGroupRef {
        name: group.into(),
        min_member: min,
    });
    p
}

fn cluster(nodes: &[&str], pods: Vec<PodInfo>) -> Cluster {
    let mut c = Cluster::new();
    for n in nodes {
        c.upsert_node(mk_node(n));
    }
    for p in pods {
        c.upsert_pod(p);
    }
    c
}

fn profile() -> PriorityProfile {
    PriorityProfile::new(PriorityConfig::default())
}

fn no_preemption() -> PriorityProfile {
    PriorityProfile::new(PriorityConfig {
        preemption: false,
        ..Default::default()
    })
}

fn resource_fit() -> PriorityProfile {
    PriorityProfile::new(PriorityConfig {
        capacity: CapacityMode::ResourceFit,
        ..Default::default()
    })
}

fn key(name: &str) -> PodKey {
    PodKey::new("default", name)
}

fn decide(p: &PriorityProfile, c: &Cluster, names: &[&str]) -> Decision {
    let unit: Vec<&PodInfo> = names
        .iter()
        .map(|n| c.pod(&key(n)).expect("pod in cluster"))
        .collect();
    p.decide(c, &unit, NOW)
}

fn bindings(d: &Decision) -> BTreeMap<String, String> {
    match d {
        Decision::Bind(b) => b
            .iter()
            .map(|b| (b.pod.name.clone(), b.node.clone()))
            .collect(),
        other => panic!("expected Bind, got {other:?}"),
    }
}

fn master(name: &str) -> NodeInfo {
    let mut n = mk_node(name);
    n.taints.push(Taint {
        key: "node-role.kubernetes.io/control-plane".into(),
        value: String::new(),
        effect: TaintEffect::NoSchedule,
    });
    n
}

use crate::model::NodeInfo;

// ---- state set-up and priority semantics ---------------------------------

#[test]
fn state_setup_indexes_free_nodes_victims_and_groups() {
    let mut g = member("g1", "gang", Some(2), 5);
    g.node_name = Some("b".into());
    let c = cluster(
        &["a", "b", "c"],
        vec![
            bound("low", "a", 1),
            g,
            pod("pending", 3),
            member("g2", "gang", Some(2), 5),
        ],
    );
    assert_eq!(
        c.nodes_free_of_ours().iter().cloned().collect::<Vec<_>>(),
        vec!["c".to_string()]
    );
    let victims: Vec<(i32, String)> = c
        .ours_by_priority()
        .map(|(p, k)| (p, k.name.clone()))
        .collect();
    assert_eq!(victims, vec![(1, "low".into()), (5, "g1".into())]);
    assert_eq!(c.bound_group_members("default", "gang"), 1);
    assert_eq!(c.pending_group_members("default", "gang").len(), 1);
    assert_eq!(profile().name(), "priority");
    assert!(profile().gang_aware());
}

#[test]
fn capacity_mode_parses_flag_spellings() {
    assert_eq!("one-per-node".parse(), Ok(CapacityMode::OnePerNode));
    assert_eq!(" resource-fit".parse(), Ok(CapacityMode::ResourceFit));
    let err = "best-effort".parse::<CapacityMode>().unwrap_err();
    assert!(
        err.to_string().contains("one-per-node or resource-fit"),
        "{err}"
    );
    assert_eq!(CapacityMode::ResourceFit.to_string(), "resource-fit");
}

/// The priority itself is extracted by the Kubernetes crate; here: a pod
/// whose annotation was malformed is scheduled as priority 0, neither
/// crashing nor outranking anyone.
#[test]
fn malformed_priority_counts_as_zero() {
    let mut bad = pod("bad", 0);
    bad.priority_warning = Some(crate::model::PriorityWarning {
        reason: "InvalidPriority",
        message: "invalid digit found in string: \"high\"".into(),
    });
    let c = cluster(&["a"], vec![bound("zero", "a", 0), bad]);
    let d = decide(&profile(), &c, &["bad"]);
    assert!(matches!(d, Decision::Unschedulable { .. }), "{d:?}");
    let c = cluster(
        &["a", "b"],
        vec![bound("zero", "a", 0), c.pod(&key("bad")).unwrap().clone()],
    );
    assert_eq!(bindings(&decide(&profile(), &c, &["bad"]))["bad"], "b");
}

#[test]
fn priority_ordering_highest_first_then_oldest() {
    let mut q = SchedulingQueue::new(Backoff::default());
    let mut c = cluster(&["only"], vec![]);
    let mut low = pod("low", 1);
    low.created_at = 10;
    let mut high = pod("high", 100);
    high.created_at = 20;
    let mut high_older = pod("high-older", 100);
    high_older.created_at = 5;
    for p in [&low, &high, &high_older] {
        q.add(p.key.clone(), p.priority, p.created_at);
        c.upsert_pod(p.clone());
    }
    let order: Vec<String> = std::iter::from_fn(|| q.pop()).map(|k| k.name).collect();
    assert_eq!(order, ["high-older", "high", "low"]);
    // The first popped takes the only node; the next cannot preempt an equal.
    let d = decide(&profile(), &c, &["high-older"]);
    assert_eq!(bindings(&d)["high-older"], "only");
    c.assume(&key("high-older"), "only");
    assert!(matches!(
        decide(&profile(), &c, &["high"]),
        Decision::Unschedulable { .. }
    ));
}

// ---- availability ---------------------------------------------------------

#[test]
fn only_ready_untainted_free_nodes_are_available() {
    let mut c = cluster(&["a", "b", "c", "d"], vec![bound("x", "a", 0), pod("p", 0)]);
    let mut b = mk_node("b");
    b.ready = false;
    c.upsert_node(b);
    c.upsert_node(master("c"));
    assert_eq!(bindings(&decide(&no_preemption(), &c, &["p"]))["p"], "d");
    c.assume(&key("p"), "d");
    c.upsert_pod(pod("q", 0));
    let Decision::Unschedulable { message, summary } = decide(&no_preemption(), &c, &["q"]) else {
        panic!("expected unschedulable")
    };
    assert_eq!(summary.total, 4);
    assert_eq!(
        message,
        "0/4 nodes are available: 2 node(s) already ran a pod of this scheduler, \
         1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 1 node(s) were not ready."
    );
}

#[test]
fn a_node_nominated_to_a_higher_pod_is_held() {
    let mut high = pod("high", 10);
    high.nominated_node = Some("a".into());
    let c = cluster(&["a"], vec![high, pod("low", 1), pod("higher", 20)]);
    let d = decide(&no_preemption(), &c, &["low"]);
    let Decision::Unschedulable { summary, .. } = d else {
        panic!("{d:?}")
    };
    assert_eq!(summary.reasons.get(&FilterReason::Nominated), Some(&1));
    // A more important pod is not held back by a lesser nomination …
    assert_eq!(
        bindings(&decide(&no_preemption(), &c, &["higher"]))["higher"],
        "a"
    );
    // … and the nominee itself gets its node.
    assert_eq!(
        bindings(&decide(&no_preemption(), &c, &["high"]))["high"],
        "a"
    );
}

#[test]
fn resource_fit_counts_requests_against_allocatable() {
    let mut big = bound("big", "a", 0);
    big.requests.cpu_millis = 3500;
    let mut other = bound("other-scheduler", "b", 0);
    other.ours = false;
    other.requests.cpu_millis = 3900;
    let mut p = pod("p", 0);
    p.requests.cpu_millis = 1000;
    let c = cluster(&["a", "b", "c"], vec![big, other, p]);
    assert_eq!(bindings(&decide(&resource_fit(), &c, &["p"]))["p"], "c");
    // Two small pods may share a node in this mode.
    let mut c = c;
    c.assume(&key("p"), "c");
    let mut q = pod("q", 0);
    q.requests.cpu_millis = 2000;
    c.upsert_pod(q);
    assert_eq!(bindings(&decide(&resource_fit(), &c, &["q"]))["q"], "c");
    c.assume(&key("q"), "c");
    let mut r = pod("r", 0);
    r.requests.cpu_millis = 1500;
    c.upsert_pod(r);
    let Decision::Unschedulable { message, .. } = decide(&resource_fit(), &c, &["r"]) else {
        panic!()
    };
    assert!(
        message.starts_with("0/3 nodes are available: 3 Insufficient cpu."),
        "{message}"
    );
}

// ---- preemption -----------------------------------------------------------

#[test]
fn single_pod_binds_without_preemption_when_a_node_is_free() {
    let c = cluster(&["a", "b"], vec![bound("low", "a", 1), pod("high", 100)]);
    assert_eq!(bindings(&decide(&profile(), &c, &["high"]))["high"], "b");
}

/// The done criterion: three nodes (one a tainted control plane), two
/// low-priority pods bound; a high-priority pod evicts exactly one and, once
/// it is gone, takes its node.
#[test]
fn high_priority_evicts_exactly_one_low_pod_and_takes_its_node() {
    let mut c = cluster(
        &["worker-1", "worker-2"],
        vec![
            bound("low-1", "worker-1", 10),
            bound("low-2", "worker-2", 10),
        ],
    );
    c.upsert_node(master("master"));
    c.upsert_pod(pod("high", 100));
    let d = decide(&profile(), &c, &["high"]);
    let Decision::Preempt {
        evictions,
        nominations,
        ..
    } = d
    else {
        panic!("expected preemption, got {d:?}")
    };
    assert_eq!(evictions.len(), 1);
    let victim = &evictions[0];
    assert_eq!(victim.preemptor, key("high"));
    assert_eq!(
        nominations,
        vec![Nomination {
            pod: key("high"),
            node: victim.node.clone()
        }]
    );
    // The loop nominates and evicts; the victim turns terminating …
    c.set_nominated(&key("high"), Some(&victim.node));
    let mut dying = c.pod(&victim.pod).unwrap().clone();
    dying.terminating = true;
    c.upsert_pod(dying);
    let d = decide(&profile(), &c, &["high"]);
    assert!(
        matches!(d, Decision::Wait { retry_at, .. } if retry_at > NOW),
        "{d:?}"
    );
    // … a low pod created meanwhile does not get the node …
    c.upsert_pod(pod("low-3", 10));
    assert!(matches!(
        decide(&profile(), &c, &["low-3"]),
        Decision::Unschedulable { .. }
    ));
    // … and once it is deleted the preemptor binds there.
    c.remove_pod(&victim.pod);
    assert_eq!(
        bindings(&decide(&profile(), &c, &["high"]))["high"],
        victim.node
    );
}

#[test]
fn victims_are_the_lowest_priority_and_never_equal_or_higher() {
    let c = cluster(
        &["a", "b", "c", "d"],
        vec![
            bound("p50", "a", 50),
            bound("p5", "b", 5),
            bound("p7", "c", 7),
            bound("p100", "d", 100),
            pod("pre", 50),
        ],
    );
    let Decision::Preempt { evictions, .. } = decide(&profile(), &c, &["pre"]) else {
        panic!()
    };
    assert_eq!(
        evictions
            .iter()
            .map(|e| e.pod.name.as_str())
            .collect::<Vec<_>>(),
        ["p5"]
    );
    // Nothing strictly lower: no preemption.
    let c = cluster(&["a"], vec![bound("same", "a", 50), pod("pre", 50)]);
    assert!(matches!(
        decide(&profile(), &c, &["pre"]),
        Decision::Unschedulable { .. }
    ));
}

#[test]
fn preemption_prefers_lowest_highest_victim_then_fewest() {
    // Resource fit: node a needs two victims (1 and 2), node b one (3).
    let mk = |name: &str, node: &str, prio, cpu| {
        let mut p = bound(name, node, prio);
        p.requests.cpu_millis = cpu;
        p
    };
    let mut pre = pod("pre", 10);
    pre.requests.cpu_millis = 4000;
    let c = cluster(
        &["a", "b"],
        vec![
            mk("a1", "a", 1, 2000),
            mk("a2", "a", 2, 2000),
            mk("b3", "b", 3, 4000),
            pre.clone(),
        ],
    );
    let Decision::Preempt { evictions, .. } = decide(&resource_fit(), &c, &["pre"]) else {
        panic!()
    };
    let mut names: Vec<&str> = evictions.iter().map(|e| e.pod.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["a1", "a2"],
        "lowest highest victim (2 < 3) wins over fewer victims"
    );
    // Equal highest priority: fewer victims win.
    let c = cluster(
        &["a", "b"],
        vec![
            mk("a1", "a", 3, 2000),
            mk("a2", "a", 3, 2000),
            mk("b3", "b", 3, 4000),
            pre,
        ],
    );
    let Decision::Preempt { evictions, .. } = decide(&resource_fit(), &c, &["pre"]) else {
        panic!()
    };
    assert_eq!(
        evictions
            .iter()
            .map(|e| e.pod.name.as_str())
            .collect::<Vec<_>>(),
        ["b3"]
    );
}

#[test]
fn resource_fit_evicts_only_what_is_needed() {
    let mk = |name: &str, prio, cpu| {
        let mut p = bound(name, "a", prio);
        p.requests.cpu_millis = cpu;
        p
    };
    let mut pre = pod("pre", 10);
    pre.requests.cpu_millis = 1500;
    // Free 500; evicting the 1000-CPU pod of priority 2 suffices, the tiny
    // priority-1 pod is reprieved.
    let c = cluster(
        &["a"],
        vec![
            mk("tiny", 1, 100),
            mk("mid", 2, 1000),
            mk("keep", 20, 2400),
            pre,
        ],
    );
    let Decision::Preempt { evictions, .. } = decide(&resource_fit(), &c, &["pre"]) else {
        panic!()
    };
    assert_eq!(
        evictions
            .iter()
            .map(|e| e.pod.name.as_str())
            .collect::<Vec<_>>(),
        ["mid"]
    );
}

#[test]
fn pods_of_other_schedulers_and_terminating_pods_are_never_victims() {
    let mut foreign = bound("foreign", "a", 0);
    foreign.ours = false;
    let mut dying = bound("dying", "b", 0);
    dying.terminating = true;
    let c = cluster(&["a", "b"], vec![foreign, dying, pod("pre", 100)]);
    // a: foreign pods do not occupy in one-per-node mode, so it binds there.
    assert_eq!(bindings(&decide(&profile(), &c, &["pre"]))["pre"], "a");
    let c = cluster(
        &["b"],
        vec![c.pod(&key("dying")).unwrap().clone(), pod("pre", 100)],
    );
    assert!(matches!(
        decide(&profile(), &c, &["pre"]),
        Decision::Unschedulable { .. }
    ));
}

#[test]
fn without_preemption_a_full_cluster_is_unschedulable() {
    let c = cluster(&["a"], vec![bound("low", "a", 1), pod("high", 100)]);
    let Decision::Unschedulable { message, .. } = decide(&no_preemption(), &c, &["high"]) else {
        panic!()
    };
    assert_eq!(
        message,
        "0/1 nodes are available: 1 node(s) already ran a pod of this scheduler."
    );
    let Decision::Preempt { .. } = decide(&profile(), &c, &["high"]) else {
        panic!()
    };
}

#[test]
fn victims_must_also_pass_the_preemptors_node_checks() {
    let mut c = cluster(
        &["a", "b"],
        vec![bound("low-a", "a", 1), bound("low-b", "b", 2)],
    );
    let mut pre = pod("pre", 10);
    pre.node_selector
        .insert("kubernetes.io/hostname".into(), "b".into());
    c.upsert_pod(pre);
    let Decision::Preempt { evictions, .. } = decide(&profile(), &c, &["pre"]) else {
        panic!()
    };
    assert_eq!(evictions[0].pod.name, "low-b");
}

// ---- gangs ------------------------------------------------------------------

fn gang(names: &[&str], group: &str, min: Option<u32>, priority: i32) -> Vec<PodInfo> {
    names
        .iter()
        .map(|n| member(n, group, min, priority))
        .collect()
}

#[test]
fn gang_with_enough_capacity_binds_every_member_on_distinct_nodes() {
    let c = cluster(
        &["a", "b", "c"],
        gang(&["g1", "g2", "g3"], "trio", Some(3), 50),
    );
    let b = bindings(&decide(&profile(), &c, &["g1", "g2", "g3"]));
    assert_eq!(b.len(), 3);
    let nodes: HashSet<&String> = b.values().collect();
    assert_eq!(nodes.len(), 3);
}

#[test]
fn gang_without_enough_capacity_binds_none() {
    let c = cluster(
        &["a", "b", "c"],
        gang(&["g1", "g2", "g3", "g4"], "four", Some(4), 50),
    );
    let d = decide(&profile(), &c, &["g1", "g2", "g3", "g4"]);
    let Decision::Unschedulable { message, .. } = d else {
        panic!("{d:?}")
    };
    assert!(
        message.starts_with(
            "pod group default/four: no complete placement (3/4 members placed, none bound)"
        ),
        "{message}"
    );
}

#[test]
fn gang_with_preemption_evicts_only_lower_than_its_highest_member() {
    let mut pods = vec![bound("low", "a", 10), bound("high", "b", 80)];
    let mut members = gang(&["g1", "g2", "g3"], "trio", Some(3), 20);
    members[0].priority = 60;
    pods.extend(members);
    let c = cluster(&["a", "b", "c", "d"], pods);
    let d = decide(&profile(), &c, &["g1", "g2", "g3"]);
    let Decision::Preempt {
        evictions,
        nominations,
        ..
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!(
        evictions
            .iter()
            .map(|e| e.pod.name.as_str())
            .collect::<Vec<_>>(),
        ["low"]
    );
    assert_eq!(
        nominations.len(),
        3,
        "every member holds its node: {nominations:?}"
    );
    let nodes: HashSet<&str> = nominations.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(nodes, HashSet::from(["a", "c", "d"]));

    // Only higher-priority pods in the way: nothing at all is evicted.
    let mut pods = vec![bound("x", "a", 70), bound("high", "b", 80)];
    pods.extend(gang(&["g1", "g2", "g3"], "trio", Some(3), 60));
    let c = cluster(&["a", "b", "c"], pods);
    assert!(matches!(
        decide(&profile(), &c, &["g1", "g2", "g3"]),
        Decision::Unschedulable { .. }
    ));
}

#[test]
fn gang_waits_for_min_member_and_counts_running_members() {
    let c = cluster(&["a", "b", "c"], gang(&["g1", "g2"], "trio", Some(3), 0));
    let d = decide(&profile(), &c, &["g1", "g2"]);
    let Decision::Wait { retry_at, message } = d else {
        panic!("{d:?}")
    };
    assert!(retry_at > NOW);
    assert!(
        message.contains("2 pending and 0 running of minMember 3"),
        "{message}"
    );
    // A member already running (e.g. its siblings failed to bind) counts.
    let mut running = member("g0", "trio", Some(3), 0);
    running.node_name = Some("a".into());
    let mut pods = gang(&["g1", "g2"], "trio", Some(3), 0);
    pods.push(running);
    let c = cluster(&["a", "b", "c"], pods);
    let b = bindings(&decide(&profile(), &c, &["g1", "g2"]));
    assert_eq!(b.len(), 2);
    assert!(!b.values().any(|n| n == "a"));
}

#[test]
fn gang_without_min_member_settles_first() {
    let mut pods = gang(&["g1", "g2"], "duo", None, 0);
    pods[1].created_at = NOW - 1_000;
    let c = cluster(&["a", "b"], pods);
    let d = decide(&profile(), &c, &["g1", "g2"]);
    assert_eq!(
        d,
        Decision::Wait {
            retry_at: NOW + 4_000,
            message:
                "pod group default/duo: waiting 4000 ms for more members to arrive (2 pending)"
                    .into()
        }
    );
    let unit: Vec<&PodInfo> = c.pending_group_members("default", "duo");
    assert_eq!(bindings(&profile().decide(&c, &unit, NOW + 4_000)).len(), 2);
}

/// The done criterion for gangs on three nodes: a three-pod gang waits while
/// a node is taken and binds all three once it frees up.
#[test]
fn three_pod_gang_waits_until_three_nodes_then_binds_all() {
    let mut pods = vec![bound("blocker", "b", 100)];
    pods.extend(gang(&["g1", "g2", "g3"], "trio", Some(3), 50));
    let mut c = cluster(&["a", "b", "c"], pods);
    let d = decide(&profile(), &c, &["g1", "g2", "g3"]);
    assert!(matches!(d, Decision::Unschedulable { .. }), "{d:?}");
    c.remove_pod(&key("blocker"));
    assert_eq!(
        bindings(&decide(&profile(), &c, &["g1", "g2", "g3"])).len(),
        3
    );
}

// ---- deletions --------------------------------------------------------------

#[test]
fn deleting_a_pod_frees_its_node() {
    let mut c = cluster(&["a"], vec![bound("old", "a", 0), pod("new", 0)]);
    assert!(matches!(
        decide(&no_preemption(), &c, &["new"]),
        Decision::Unschedulable { .. }
    ));
    c.remove_pod(&key("old"));
    assert_eq!(
        bindings(&decide(&no_preemption(), &c, &["new"]))["new"],
        "a"
    );
    // A deleted pending pod leaves no nomination behind.
    let mut nominee = pod("nominee", 99);
    nominee.nominated_node = Some("a".into());
    c.upsert_pod(nominee);
    c.remove_pod(&key("new"));
    c.upsert_pod(pod("next", 0));
    assert!(matches!(
        decide(&no_preemption(), &c, &["next"]),
        Decision::Unschedulable { .. }
    ));
    c.remove_pod(&key("nominee"));
    assert_eq!(
        bindings(&decide(&no_preemption(), &c, &["next"]))["next"],
        "a"
    );
}

#[test]
fn a_stale_nomination_is_replaced_by_a_new_plan() {
    // The nominated node's victim was not evicted (a PDB refused): plan again.
    let mut pre = pod("pre", 100);
    pre.nominated_node = Some("a".into());
    let c = cluster(
        &["a", "b"],
        vec![bound("guarded", "a", 5), bound("cheap", "b", 1), pre],
    );
    let Decision::Preempt {
        evictions,
        nominations,
        ..
    } = decide(&profile(), &c, &["pre"])
    else {
        panic!()
    };
    assert_eq!(evictions[0].pod.name, "cheap");
    assert_eq!(nominations[0].node, "b");
}

// ---- property tests over a simulated loop ---------------------------------

/// What happened in one simulated run.
#[derive(Debug, Default)]
struct SimLog {
    /// (unit, decision) for every Bind and Preempt.
    decisions: Vec<(Vec<PodInfo>, Decision)>,
    /// Pods bound during the run, in order.
    bound: Vec<PodKey>,
    /// Invariant violations seen after a step.
    violations: Vec<String>,
}

/// The scheduling loop the Kubernetes crate runs, with API calls that take
/// effect at once: evicted pods disappear, bindings and nominations land.
fn simulate(c: &mut Cluster, profile: &mut PriorityProfile) -> SimLog {
    let mut log = SimLog::default();
    let mut q = SchedulingQueue::new(Backoff::default());
    for p in c.pods().filter(|p| p.ours && p.is_pending()) {
        q.add(p.key.clone(), p.priority, p.created_at);
    }
    let mut parked: Vec<PodKey> = Vec::new();
    let ctx = SchedulingContext {
        now: NOW,
        gpu: None,
    };
    for _ in 0..2_000 {
        let Some(k) = q.pop() else { break };
        let Some(p) = c.pod(&k).cloned() else {
            q.remove(&k);
            continue;
        };
        if !p.is_pending() {
            q.done(&k);
            continue;
        }
        let unit: Vec<PodInfo> = match &p.group {
            Some(g) => c
                .pending_group_members(&k.namespace, &g.name)
                .into_iter()
                .cloned()
                .collect(),
            None => vec![p.clone()],
        };
        for m in &unit {
            q.take(&m.key);
        }
        let refs: Vec<&PodInfo> = unit.iter().collect();
        let d = profile.schedule(c, &refs, &ctx);
        match &d {
            Decision::Bind(bs) => {
                for b in bs {
                    c.assume(&b.pod, &b.node);
                    q.done(&b.pod);
                    log.bound.push(b.pod.clone());
                }
                log.decisions.push((unit.clone(), d.clone()));
            }
            Decision::Preempt {
                evictions,
                nominations,
                ..
            } => {
                for e in evictions {
                    c.remove_pod(&e.pod);
                }
                for n in nominations {
                    c.set_nominated(&n.pod, Some(&n.node));
                }
                log.decisions.push((unit.clone(), d.clone()));
                // A pod deletion: everything parked may fit now.
                for m in &unit {
                    q.defer(&m.key, NOW);
                }
                for k in parked.drain(..) {
                    q.defer(&k, NOW);
                }
                q.move_all_to_active();
            }
            Decision::Unschedulable { .. } | Decision::Wait { .. } => {
                for m in &unit {
                    q.remove(&m.key);
                    parked.push(m.key.clone());
                }
            }
        }
        check_capacity(c, profile.config().capacity, &mut log.violations);
    }
    log
}

fn check_capacity(c: &Cluster, mode: CapacityMode, violations: &mut Vec<String>) {
    for n in c.nodes() {
        match mode {
            CapacityMode::OnePerNode if n.ours.len() > 1 => {
                violations.push(format!("{} holds {:?}", n.info.name, n.ours));
            }
            CapacityMode::ResourceFit => {
                let free = n.free();
                if free.cpu_millis < 0 || free.memory_bytes < 0 || free.pods < 0 {
                    violations.push(format!("{} over capacity: {free:?}", n.info.name));
                }
            }
            _ => {}
        }
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    nodes: Vec<(bool, u8)>,                   // (ready, zone)
    bound: Vec<(usize, i32, i64)>,            // (node index, priority, cpu)
    pending: Vec<(i32, Option<u8>, i64, u8)>, // (priority, zone selector, cpu, gang id: 0 = none)
}

fn scenario(gangs: bool) -> impl Strategy<Value = Scenario> {
    let max_gang = if gangs { 3u8 } else { 0 };
    (
        prop::collection::vec((prop::bool::weighted(0.9), 0u8..2), 1..12),
        prop::collection::vec((0usize..12, 0i32..5, 0i64..4), 0..12),
        prop::collection::vec(
            (
                0i32..5,
                prop::option::weighted(0.2, 0u8..2),
                0i64..4,
                0u8..=max_gang,
            ),
            1..16,
        ),
    )
        .prop_map(|(nodes, bound, pending)| Scenario {
            nodes,
            bound,
            pending,
        })
}

fn build(s: &Scenario, mode: CapacityMode) -> Cluster {
    let mut c = Cluster::new();
    for (i, (ready, zone)) in s.nodes.iter().enumerate() {
        let mut n = mk_node(&format!("n{i:02}"));
        n.ready = *ready;
        n.labels.insert("zone".into(), zone.to_string());
        c.upsert_node(n);
    }
    for (j, (node, priority, cpu)) in s.bound.iter().enumerate() {
        let node = format!("n{:02}", node % s.nodes.len());
        let mut p = bound(&format!("b{j:02}"), &node, *priority);
        p.requests.cpu_millis = cpu * 1000;
        // Keep the starting state within capacity.
        let state = c.node(&node).expect("node exists");
        let ok = match mode {
            CapacityMode::OnePerNode => state.ours.is_empty(),
            CapacityMode::ResourceFit => state.free_cpu_millis() >= p.requests.cpu_millis,
        };
        if ok {
            c.upsert_pod(p);
        }
    }
    for (j, (priority, zone, cpu, gang)) in s.pending.iter().enumerate() {
        let mut p = if *gang == 0 {
            pod(&format!("p{j:02}"), *priority)
        } else {
            member(&format!("p{j:02}"), &format!("gang{gang}"), None, *priority)
        };
        p.created_at = NOW - 60_000 + j as Millis;
        p.requests.cpu_millis = cpu * 1000;
        if let Some(z) = zone {
            p.node_selector.insert("zone".into(), z.to_string());
        }
        c.upsert_pod(p);
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// One-per-node mode never puts two of our pods on one node.
    #[test]
    fn never_two_of_ours_on_a_node(s in scenario(true), preemption in any::<bool>()) {
        let mut c = build(&s, CapacityMode::OnePerNode);
        let mut p = PriorityProfile::new(PriorityConfig { preemption, gang_settle: Duration::ZERO, ..Default::default() });
        let log = simulate(&mut c, &mut p);
        prop_assert!(log.violations.is_empty(), "{:?}", log.violations);
    }

    /// Resource-fit mode never overcommits a node.
    #[test]
    fn no_node_over_capacity_in_resource_fit(s in scenario(true), preemption in any::<bool>()) {
        let mut c = build(&s, CapacityMode::ResourceFit);
        let mut p = PriorityProfile::new(PriorityConfig {
            capacity: CapacityMode::ResourceFit, preemption, gang_settle: Duration::ZERO, ..Default::default()
        });
        let log = simulate(&mut c, &mut p);
        prop_assert!(log.violations.is_empty(), "{:?}", log.violations);
    }

    /// Gangs are all or nothing: every Bind or Preempt of a gang covers all
    /// its pending members, and at the end a gang is wholly bound or not at all.
    #[test]
    fn gangs_all_or_nothing(s in scenario(true), fit in any::<bool>()) {
        let mode = if fit { CapacityMode::ResourceFit } else { CapacityMode::OnePerNode };
        let mut c = build(&s, mode);
        let mut p = PriorityProfile::new(PriorityConfig { capacity: mode, gang_settle: Duration::ZERO, ..Default::default() });
        let log = simulate(&mut c, &mut p);
        for (unit, d) in &log.decisions {
            let covered = match d {
                Decision::Bind(b) => b.len(),
                Decision::Preempt { .. } => unit.len(),
                _ => unreachable!(),
            };
            prop_assert_eq!(covered, unit.len(), "partial decision {:?}", d);
        }
        let mut groups: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for pod in c.pods().filter(|p| p.group.is_some()) {
            let e = groups.entry(pod.group.clone().unwrap().name).or_default();
            e.0 += 1;
            if pod.node_name.is_some() { e.1 += 1; }
        }
        for (g, (total, bound)) in groups {
            prop_assert!(bound == 0 || bound == total, "gang {g}: {bound}/{total} bound");
        }
    }

    /// No victim has a priority at or above its preemptor's (a gang's
    /// highest member).
    #[test]
    fn no_victim_at_or_above_the_preemptor(s in scenario(true), fit in any::<bool>()) {
        let mode = if fit { CapacityMode::ResourceFit } else { CapacityMode::OnePerNode };
        let original = build(&s, mode);
        let mut c = original.clone();
        let mut p = PriorityProfile::new(PriorityConfig { capacity: mode, gang_settle: Duration::ZERO, ..Default::default() });
        let log = simulate(&mut c, &mut p);
        for (unit, d) in &log.decisions {
            if let Decision::Preempt { evictions, .. } = d {
                let top = unit.iter().map(|m| m.priority).max().unwrap();
                for e in evictions {
                    let victim = original.pod(&e.pod).expect("victims existed");
                    prop_assert!(victim.priority < top, "{} (prio {}) evicted for prio {top}", e.pod, victim.priority);
                    prop_assert!(victim.ours && !victim.terminating);
                }
            }
        }
    }

    /// Higher priority never waits behind lower when both fit: at the end no
    /// pending single pod could use a node that a lower-priority pod was
    /// bound to during the run.
    #[test]
    fn higher_priority_never_waits_behind_lower(s in scenario(false), preemption in any::<bool>(), fit in any::<bool>()) {
        let mode = if fit { CapacityMode::ResourceFit } else { CapacityMode::OnePerNode };
        let mut c = build(&s, mode);
        let mut p = PriorityProfile::new(PriorityConfig { capacity: mode, preemption, ..Default::default() });
        let log = simulate(&mut c, &mut p);
        for waiting in c.pods().filter(|p| p.ours && p.is_pending()) {
            for k in &log.bound {
                let Some(lower) = c.pod(k) else { continue };
                if lower.priority >= waiting.priority { continue; }
                let node = c.node(lower.node_name.as_deref().unwrap()).unwrap();
                let usable = check_node(&node.info, waiting).is_ok()
                    && (mode == CapacityMode::OnePerNode
                        || {
                            // Would fit in the room `lower` took.
                            let mut free = node.free();
                            free.add(&lower.requests);
                            free.first_shortfall(&waiting.requests).is_none()
                        });
                prop_assert!(!usable, "{} (prio {}) waits while {} (prio {}) took {}",
                    waiting.key, waiting.priority, lower.key, lower.priority, node.info.name);
            }
        }
    }
}

/// The walkthrough of docs/priority.md, step by step, with the loop's
/// actions applied by hand: master tainted, two workers.
#[test]
fn docs_walkthrough_on_three_nodes() {
    let p = profile();
    let mut c = cluster(&["worker-1", "worker-2"], vec![]);
    c.upsert_node(master("master"));
    let bind_all = |c: &mut Cluster, d: &Decision| {
        for (pod, node) in bindings(d) {
            c.assume(&key(&pod), &node);
        }
    };
    // 1. Two low-priority pods, one per worker.
    for name in ["low-a", "low-b"] {
        c.upsert_pod(pod(name, 10));
        let d = decide(&p, &c, &[name]);
        bind_all(&mut c, &d);
    }
    assert_eq!(c.node("worker-1").unwrap().ours.len(), 1);
    assert_eq!(c.node("worker-2").unwrap().ours.len(), 1);

    // 2. The high pod evicts exactly one and takes its node.
    c.upsert_pod(pod("high", 100));
    let Decision::Preempt {
        evictions,
        nominations,
        ..
    } = decide(&p, &c, &["high"])
    else {
        panic!("expected preemption")
    };
    assert_eq!(evictions.len(), 1);
    let (victim, node) = (evictions[0].pod.clone(), evictions[0].node.clone());
    c.set_nominated(&nominations[0].pod, Some(&nominations[0].node));
    let mut dying = c.pod(&victim).unwrap().clone();
    dying.terminating = true;
    c.upsert_pod(dying);
    assert!(matches!(decide(&p, &c, &["high"]), Decision::Wait { .. }));
    c.remove_pod(&victim);
    let d = decide(&p, &c, &["high"]);
    assert_eq!(bindings(&d)["high"], node);
    bind_all(&mut c, &d);
    c.upsert_pod(pod("low-c", 10)); // the Deployment's replacement
    assert!(matches!(
        decide(&p, &c, &["low-c"]),
        Decision::Unschedulable { .. }
    ));

    // 3. Master untainted: the replacement binds there; the trio cannot be
    // placed whole while the high pod runs, and evicts nobody.
    assert!(c.upsert_node(mk_node("master")).may_fit_more);
    let d = decide(&p, &c, &["low-c"]);
    assert_eq!(bindings(&d)["low-c"], "master");
    bind_all(&mut c, &d);
    for m in gang(&["trio-0", "trio-1", "trio-2"], "trio", Some(3), 50) {
        c.upsert_pod(m);
    }
    let trio = ["trio-0", "trio-1", "trio-2"];
    let Decision::Unschedulable { message, .. } = decide(&p, &c, &trio) else {
        panic!("the trio must wait")
    };
    assert!(
        message.starts_with(
            "pod group default/trio: no complete placement (2/3 members placed, none bound)"
        ),
        "{message}"
    );
    c.remove_pod(&key("high"));
    let Decision::Preempt {
        evictions,
        nominations,
        ..
    } = decide(&p, &c, &trio)
    else {
        panic!("expected the trio to preempt")
    };
    assert_eq!(evictions.len(), 2, "both low pods: {evictions:?}");
    assert_eq!(nominations.len(), 3);
    for n in &nominations {
        c.set_nominated(&n.pod, Some(&n.node));
    }
    for e in &evictions {
        c.remove_pod(&e.pod);
    }
    let d = decide(&p, &c, &trio);
    let placed = bindings(&d);
    assert_eq!(placed.len(), 3);
    assert_eq!(placed.values().collect::<HashSet<_>>().len(), 3);
    bind_all(&mut c, &d);

    // 4. A four-pod gang on three nodes binds none and evicts nobody.
    for m in gang(
        &["four-0", "four-1", "four-2", "four-3"],
        "four",
        Some(4),
        50,
    ) {
        c.upsert_pod(m);
    }
    let Decision::Unschedulable { message, .. } =
        decide(&p, &c, &["four-0", "four-1", "four-2", "four-3"])
    else {
        panic!("the four-pod gang cannot be placed")
    };
    assert!(
        message.starts_with("pod group default/four: no complete placement (0/4"),
        "{message}"
    );
}

#[test]
fn a_podgroup_objects_min_member_sizes_a_gang_without_the_annotation() {
    let mut c = cluster(&["a", "b", "c"], gang(&["g1", "g2"], "crd", None, 0));
    c.set_group_min_member("default", "crd", Some(3));
    let d = decide(&profile(), &c, &["g1", "g2"]);
    assert!(
        matches!(&d, Decision::Wait { message, .. } if message.contains("of minMember 3")),
        "{d:?}"
    );
    c.upsert_pod(member("g3", "crd", None, 0));
    assert_eq!(
        bindings(&decide(&profile(), &c, &["g1", "g2", "g3"])).len(),
        3
    );
    // A larger minMember on the object makes the gang wait again.
    c.set_group_min_member("default", "crd", Some(5));
    assert!(matches!(
        decide(&profile(), &c, &["g1", "g2", "g3"]),
        Decision::Wait { .. }
    ));
    c.set_group_min_member("default", "crd", None);
    assert_eq!(c.group_min_member("default", "crd"), None);
}

#[test]
fn a_refused_victim_is_planned_around_until_the_refusal_expires() {
    let mut c = cluster(
        &["a", "b"],
        vec![
            bound("guarded", "a", 1),
            bound("other", "b", 5),
            pod("pre", 100),
        ],
    );
    let Decision::Preempt { evictions, .. } = decide(&profile(), &c, &["pre"]) else {
        panic!()
    };
    assert_eq!(evictions[0].pod.name, "guarded");
    // The Eviction API answered 429: another plan picks another victim …
    c.refuse_eviction(&key("guarded"), NOW + 30_000);
    let Decision::Preempt { evictions, .. } = decide(&profile(), &c, &["pre"]) else {
        panic!()
    };
    assert_eq!(evictions[0].pod.name, "other");
    // … or none at all, when it was the only one.
    c.remove_pod(&key("other"));
    c.upsert_pod(bound("other", "b", 100));
    assert!(matches!(
        decide(&profile(), &c, &["pre"]),
        Decision::Unschedulable { .. }
    ));
    // Once the refusal is old, the budget may allow it: ask again.
    let unit = [c.pod(&key("pre")).unwrap()];
    let Decision::Preempt { evictions, .. } = profile().decide(&c, &unit, NOW + 30_000) else {
        panic!()
    };
    assert_eq!(evictions[0].pod.name, "guarded");
}
