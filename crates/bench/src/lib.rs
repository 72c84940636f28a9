//! # posture-bench — scheduling benchmarks on synthetic clusters
//!
//! Builds large, reproducible cluster snapshots (thousands of nodes, tens of
//! thousands of pods of mixed priorities, some in gangs) and drives a
//! scheduling profile over them the way the Kubernetes loop does, timing
//! every decision. Two front ends share it: the criterion benches in
//! `benches/scheduling.rs` (`cargo bench -p posture-bench`) and the
//! `posture-farm bench scheduler` subcommand, which prints [`RunReport::table`].
//!
//! ```text
//! SyntheticSpec ─► synthetic_cluster() ─► Synthetic { cluster, pending }
//!                                              │
//! BenchProfile ─► run_scheduler_bench() ─► queue pop ─► Profile::schedule (timed) ─► apply plan ─► RunReport
//! ```
//!
//! Applying a plan is instantaneous here (binds are assumed, victims vanish),
//! so the numbers are the decision cost alone, not API latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use posture_core::backoff::Backoff;
use posture_core::cluster::Cluster;
use posture_core::model::{Millis, NodeInfo, PodGroupRef, PodInfo, PodKey, Resources};
use posture_core::policy::RoundRobin;
use posture_core::policy::priority::{CapacityMode, PriorityConfig, PriorityProfile};
use posture_core::queue::SchedulingQueue;
use posture_core::{Decision, Profile, SchedulingContext};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The "now" of every synthetic run; pods are created before it.
pub const BENCH_NOW: Millis = 1_800_000_000_000;

/// Priorities pending pods are drawn from, with their weights: mostly
/// ordinary work, some important, a few critical.
const PRIORITIES: [(i32, u32); 4] = [(0, 40), (10, 30), (100, 20), (1000, 10)];

/// Shape of a synthetic cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    /// Number of nodes.
    pub nodes: usize,
    /// Number of pending pods of ours.
    pub pods: usize,
    /// Fraction of pending pods that belong to gangs (of 2 to 8 members).
    pub gang_fraction: f64,
    /// Fraction of nodes already running a low-priority pod of ours
    /// (priority 0 to 5): the preemption victims.
    pub occupied_fraction: f64,
    /// Seed of the generator: the same spec builds the same cluster.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            nodes: 5_000,
            pods: 10_000,
            gang_fraction: 0.1,
            occupied_fraction: 0.25,
            seed: 42,
        }
    }
}

/// A built snapshot.
#[derive(Clone, Debug)]
pub struct Synthetic {
    /// Nodes, bound pods and pending pods.
    pub cluster: Cluster,
    /// The pending pods, in creation order.
    pub pending: Vec<PodKey>,
}

fn node(i: usize, rng: &mut StdRng) -> NodeInfo {
    let name = format!("node-{i:05}");
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), name.clone());
    labels.insert(
        "topology.kubernetes.io/zone".to_string(),
        format!("zone-{}", i % 4),
    );
    // Boards of two sizes, like a farm of Orin NX and AGX Orin boards.
    let big = rng.random_bool(0.3);
    NodeInfo {
        name,
        labels,
        ready: true,
        unschedulable: false,
        taints: vec![],
        allocatable: Resources {
            cpu_millis: if big { 12_000 } else { 8_000 },
            memory_bytes: if big { 64 << 30 } else { 16 << 30 },
            pods: 110,
            extended: [("nvidia.com/gpu".to_string(), 1)].into(),
        },
    }
}

fn pod(name: String, priority: i32, created_at: Millis, rng: &mut StdRng) -> PodInfo {
    PodInfo {
        key: PodKey::new("bench", name.clone()),
        uid: format!("uid-{name}"),
        created_at,
        priority,
        requests: Resources {
            cpu_millis: rng.random_range(1..=8) * 250,
            memory_bytes: rng.random_range(1..=8) << 29,
            pods: 1,
            extended: Default::default(),
        },
        ours: true,
        ..Default::default()
    }
}

fn draw_priority(rng: &mut StdRng) -> i32 {
    let total: u32 = PRIORITIES.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for (p, w) in PRIORITIES {
        if x < w {
            return p;
        }
        x -= w;
    }
    0
}

/// Builds the snapshot described by `spec`, deterministically from its seed.
pub fn synthetic_cluster(spec: &SyntheticSpec) -> Synthetic {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut cluster = Cluster::new();
    for i in 0..spec.nodes {
        cluster.upsert_node(node(i, &mut rng));
    }
    let occupied = (spec.nodes as f64 * spec.occupied_fraction.clamp(0.0, 1.0)) as usize;
    for i in 0..occupied {
        // Spread the victims over the name space rather than the first nodes.
        let n = (i * 7919) % spec.nodes.max(1);
        let mut p = pod(
            format!("running-{i:05}"),
            rng.random_range(0..=5),
            BENCH_NOW - 3_600_000,
            &mut rng,
        );
        p.node_name = Some(format!("node-{n:05}"));
        if cluster
            .node(&format!("node-{n:05}"))
            .is_some_and(|s| s.ours.is_empty())
        {
            cluster.upsert_pod(p);
        }
    }
    let mut pending = Vec::with_capacity(spec.pods);
    let gang_pods = (spec.pods as f64 * spec.gang_fraction.clamp(0.0, 1.0)) as usize;
    let mut made = 0usize;
    let mut gang_id = 0usize;
    while made < gang_pods {
        let size = rng.random_range(2..=8usize).min(gang_pods - made).max(1);
        let priority = draw_priority(&mut rng);
        let group = format!("gang-{gang_id:05}");
        for m in 0..size {
            let created = BENCH_NOW - 600_000 + made as Millis;
            let mut p = pod(format!("{group}-{m}"), priority, created, &mut rng);
            p.group = Some(PodGroupRef {
                name: group.clone(),
                min_member: Some(size as u32),
            });
            pending.push(p.key.clone());
            cluster.upsert_pod(p);
            made += 1;
        }
        gang_id += 1;
    }
    for i in made..spec.pods {
        let created = BENCH_NOW - 600_000 + i as Millis;
        let p = pod(
            format!("pod-{i:05}"),
            draw_priority(&mut rng),
            created,
            &mut rng,
        );
        pending.push(p.key.clone());
        cluster.upsert_pod(p);
    }
    Synthetic { cluster, pending }
}

/// Which profile to benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchProfile {
    /// `priority` with the given capacity mode (preemption on).
    Priority(CapacityMode),
    /// `round-robin` over every node.
    RoundRobin,
}

impl BenchProfile {
    fn build(self) -> Box<dyn Profile> {
        match self {
            Self::Priority(capacity) => Box::new(PriorityProfile::new(PriorityConfig {
                capacity,
                gang_settle: Duration::ZERO,
                ..Default::default()
            })),
            Self::RoundRobin => Box::new(RoundRobin::new(vec![])),
        }
    }

    /// Name for the table.
    pub fn label(self) -> String {
        match self {
            Self::Priority(c) => format!("priority ({c})"),
            Self::RoundRobin => "round-robin".into(),
        }
    }
}

/// Outcome counts and timings of one run.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// Profile name for the table.
    pub profile: String,
    /// Nodes in the synthetic cluster.
    pub nodes: usize,
    /// Pending pods at the start.
    pub pending: usize,
    /// Decisions taken (a gang is one decision).
    pub decisions: usize,
    /// Pods bound.
    pub bound: usize,
    /// Preempt decisions and pods evicted by them.
    pub preemptions: usize,
    /// Pods evicted by those preemptions.
    pub evicted: usize,
    /// Unschedulable and Wait decisions.
    pub unschedulable: usize,
    /// Wait decisions (gangs still missing members).
    pub waits: usize,
    /// Time spent inside `Profile::schedule`, summed.
    pub decision_time: Duration,
    /// Wall time of the whole run (decisions plus applying plans).
    pub wall: Duration,
    /// Each decision's latency, sorted.
    pub latencies: Vec<Duration>,
    /// Peak resident memory of the process (VmHWM), when readable.
    pub peak_rss_kib: Option<u64>,
}

impl RunReport {
    /// The `q`-quantile of decision latency (nearest rank), `q` in `[0, 1]`.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.latencies.len() as f64).ceil() as usize).max(1);
        self.latencies[rank.min(self.latencies.len()) - 1]
    }

    /// Decisions per second of decision time.
    pub fn decisions_per_sec(&self) -> f64 {
        let secs = self.decision_time.as_secs_f64();
        if secs > 0.0 {
            self.decisions as f64 / secs
        } else {
            0.0
        }
    }

    /// Pods bound per second of wall time.
    pub fn pods_per_sec(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.bound as f64 / secs
        } else {
            0.0
        }
    }

    /// A plain-text table for the terminal.
    pub fn table(&self) -> String {
        let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
        let rows: Vec<(&str, String)> = vec![
            ("profile", self.profile.clone()),
            ("nodes", self.nodes.to_string()),
            ("pending pods", self.pending.to_string()),
            ("decisions", self.decisions.to_string()),
            (
                "  bind / preempt / unschedulable / wait",
                format!(
                    "{} / {} / {} / {}",
                    self.decisions - self.preemptions - self.unschedulable - self.waits,
                    self.preemptions,
                    self.unschedulable,
                    self.waits
                ),
            ),
            ("pods bound", self.bound.to_string()),
            ("pods evicted", self.evicted.to_string()),
            ("decisions/s", format!("{:.0}", self.decisions_per_sec())),
            ("pods bound/s (wall)", format!("{:.0}", self.pods_per_sec())),
            ("decision latency p50", us(self.quantile(0.50))),
            ("decision latency p95", us(self.quantile(0.95))),
            ("decision latency p99", us(self.quantile(0.99))),
            (
                "decision latency max",
                us(self.latencies.last().copied().unwrap_or_default()),
            ),
            (
                "peak memory (VmHWM)",
                self.peak_rss_kib.map_or_else(
                    || "unavailable".into(),
                    |k| format!("{:.1} MiB", k as f64 / 1024.0),
                ),
            ),
        ];
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

/// Peak resident set size of this process in KiB (`VmHWM` in
/// `/proc/self/status`); `None` where that file does not exist.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Schedules every pending pod of `world` with `profile`, as the Kubernetes
/// loop would (priority queue, gangs as units, binds assumed, victims removed
/// and preemptors retried), timing each decision.
pub fn run_scheduler_bench(mut world: Synthetic, profile: BenchProfile) -> RunReport {
    let mut p = profile.build();
    let mut report = RunReport {
        profile: profile.label(),
        nodes: world.cluster.node_count(),
        pending: world.pending.len(),
        ..Default::default()
    };
    let cluster = &mut world.cluster;
    let mut queue = SchedulingQueue::new(Backoff::default());
    for k in &world.pending {
        if let Some(pod) = cluster.pod(k) {
            queue.add(k.clone(), pod.priority, pod.created_at);
        }
    }
    let ctx = SchedulingContext {
        now: BENCH_NOW,
        gpu: None,
    };
    let start = Instant::now();
    // Each pod is decided at most twice (a preemption, then its bind) plus
    // retries caused by deletions; the cap keeps a bad profile from looping.
    let cap = world.pending.len() * 4 + 16;
    while let Some(key) = queue.pop() {
        if report.decisions >= cap {
            break;
        }
        let Some(pod) = cluster.pod(&key) else {
            queue.remove(&key);
            continue;
        };
        let unit: Vec<PodInfo> = match (&pod.group, p.gang_aware()) {
            (Some(g), true) => cluster
                .pending_group_members(&key.namespace, &g.name)
                .into_iter()
                .cloned()
                .collect(),
            _ => vec![pod.clone()],
        };
        for m in &unit {
            queue.take(&m.key);
        }
        let refs: Vec<&PodInfo> = unit.iter().collect();
        let t = Instant::now();
        let decision = p.schedule(cluster, &refs, &ctx);
        let took = t.elapsed();
        report.decision_time += took;
        report.latencies.push(took);
        report.decisions += 1;
        apply_decision(decision, &unit, cluster, &mut queue, &mut report);
    }
    report.wall = start.elapsed();
    report.latencies.sort_unstable();
    report.peak_rss_kib = peak_rss_kib();
    report
}

/// Carries out a decision in the synthetic world, as the runtime would
/// after the API answered: binds succeed, victims go at once.
fn apply_decision(
    decision: Decision,
    unit: &[PodInfo],
    cluster: &mut Cluster,
    queue: &mut SchedulingQueue,
    report: &mut RunReport,
) {
    match decision {
        Decision::Bind(bindings) => {
            for b in bindings {
                cluster.assume(&b.pod, &b.node);
                queue.done(&b.pod);
                report.bound += 1;
            }
        }
        Decision::Preempt {
            evictions,
            nominations,
            ..
        } => {
            report.preemptions += 1;
            report.evicted += evictions.len();
            for e in evictions {
                cluster.remove_pod(&e.pod);
            }
            for n in nominations {
                cluster.set_nominated(&n.pod, Some(&n.node));
            }
            // The victims' deletion brings the unit straight back.
            for m in unit {
                queue.defer(&m.key, BENCH_NOW);
            }
            queue.promote_due(BENCH_NOW);
        }
        Decision::Unschedulable { .. } => {
            report.unschedulable += 1;
            for m in unit {
                queue.remove(&m.key);
            }
        }
        Decision::Wait { .. } => {
            report.waits += 1;
            for m in unit {
                queue.remove(&m.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SyntheticSpec {
        SyntheticSpec {
            nodes: 200,
            pods: 400,
            gang_fraction: 0.2,
            occupied_fraction: 0.25,
            seed: 7,
        }
    }

    #[test]
    fn the_builder_is_deterministic_and_shaped_as_asked() {
        let a = synthetic_cluster(&small());
        let b = synthetic_cluster(&small());
        assert_eq!(a.pending, b.pending);
        assert_eq!(a.cluster.node_count(), 200);
        assert_eq!(a.pending.len(), 400);
        let gang_members = a
            .pending
            .iter()
            .filter(|k| a.cluster.pod(k).is_some_and(|p| p.group.is_some()))
            .count();
        assert_eq!(gang_members, 80);
        assert_eq!(a.cluster.nodes_free_of_ours().len(), 150);
        let priorities: std::collections::BTreeSet<i32> = a
            .pending
            .iter()
            .filter_map(|k| a.cluster.pod(k))
            .map(|p| p.priority)
            .collect();
        assert_eq!(priorities.len(), 4, "mixed priorities: {priorities:?}");
    }

    #[test]
    fn a_priority_run_fills_the_cluster_and_preempts_the_low_pods() {
        let world = synthetic_cluster(&small());
        let r = run_scheduler_bench(world, BenchProfile::Priority(CapacityMode::OnePerNode));
        // One pod per node: every node ends up with one of the pending pods
        // (the 50 low-priority running pods are all outranked by some).
        assert_eq!(r.bound, 200, "{}", r.table());
        assert_eq!(r.evicted, 50, "{}", r.table());
        assert!(r.unschedulable > 0);
        assert_eq!(r.latencies.len(), r.decisions);
        assert!(r.quantile(0.5) <= r.quantile(0.99));
        let table = r.table();
        assert!(table.contains("decision latency p99"), "{table}");
    }

    #[test]
    fn a_round_robin_run_binds_every_pod() {
        let world = synthetic_cluster(&small());
        let r = run_scheduler_bench(world, BenchProfile::RoundRobin);
        assert_eq!(r.bound, 400);
        assert_eq!(r.preemptions, 0);
    }

    #[test]
    fn resource_fit_packs_more_than_one_pod_per_node() {
        let world = synthetic_cluster(&small());
        let r = run_scheduler_bench(world, BenchProfile::Priority(CapacityMode::ResourceFit));
        assert!(r.bound > 200, "{}", r.table());
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let r = RunReport {
            latencies: (1..=100).map(Duration::from_micros).collect(),
            ..Default::default()
        };
        assert_eq!(r.quantile(0.5), Duration::from_micros(50));
        assert_eq!(r.quantile(0.99), Duration::from_micros(99));
        assert_eq!(r.quantile(1.0), Duration::from_micros(100));
        assert_eq!(RunReport::default().quantile(0.5), Duration::ZERO);
    }

    #[test]
    fn vm_hwm_is_read_in_kib() {
        assert_eq!(
            parse_vm_hwm("Name:\tx\nVmPeak:\t 1 kB\nVmHWM:\t   20480 kB\n"),
            Some(20480)
        );
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }
}
