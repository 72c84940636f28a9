//! `gpu-least-loaded`: bind each pod to the eligible node whose GPU is least
//! busy, never to a node at or above the threshold.
//!
//! Filtering, in order:
//! 1. [`check_node`]: ready, not cordoned, taints tolerated, selector and
//!    required affinity satisfied; then resource fit (free allocatable).
//! 2. GPU: a node without a fresh reading in the snapshot (stale, missing,
//!    or no snapshot at all) is rejected with
//!    [`FilterReason::GpuUsageUnknown`]; a node whose *measured* usage is at
//!    or above the threshold with [`FilterReason::GpuOverThreshold`].
//!
//! Scoring: measured usage plus the *in-flight* estimate, the load of pods
//! this profile placed that the metrics do not show yet (as Trimaran and
//! crane-scheduler do). Each placement adds `inflight_load_percent` to its
//! node; the estimate goes away when a sample taken after the bind arrives,
//! or after `inflight_window`. So a burst spreads instead of piling onto the
//! node that looked idlest a moment ago. The estimate only ranks nodes; it
//! never filters one out, so a burst is not held pending by guesses.
//!
//! Ties (scores within `tie_tolerance_percent` of the best) go to the node
//! chosen last, to avoid flapping, else to one drawn from the profile's
//! seeded RNG. The last chosen node is exposed so the runtime can persist it
//! across restarts ([`GpuLeastLoaded::last_chosen`],
//! [`GpuLeastLoaded::restore_last_chosen`]).

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::cluster::{Cluster, NodeState};
use crate::filter::{FilterReason, FilterSummary, check_node};
use crate::framework::{Binding, Decision, Profile, SchedulingContext};
use crate::gpu::GpuSnapshot;
use crate::model::{Millis, PodInfo, PodKey, Resources};

/// Settings of the profile.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuLeastLoadedConfig {
    /// Nodes whose measured usage is at or above this (percent) are filtered out.
    pub threshold_percent: f64,
    /// Estimated GPU load (percent) of one newly placed pod.
    pub inflight_load_percent: f64,
    /// How long an estimate lives at most when no newer sample arrives.
    pub inflight_window_ms: Millis,
    /// Scores this close to the best count as ties.
    pub tie_tolerance_percent: f64,
    /// Seed of the tie-break RNG.
    pub seed: u64,
}

impl Default for GpuLeastLoadedConfig {
    fn default() -> Self {
        Self {
            threshold_percent: 60.0,
            inflight_load_percent: 15.0,
            inflight_window_ms: 120_000,
            tie_tolerance_percent: 0.5,
            seed: 0,
        }
    }
}

/// A placement whose load may not show in the metrics yet.
#[derive(Clone, Debug, PartialEq)]
struct InFlight {
    pod: PodKey,
    node: String,
    /// When it was decided, then when the bind was confirmed.
    at: Millis,
}

/// The profile. See the module docs.
#[derive(Clone, Debug)]
pub struct GpuLeastLoaded {
    config: GpuLeastLoadedConfig,
    rng: StdRng,
    last_chosen: Option<String>,
    inflight: Vec<InFlight>,
}

/// One node's standing for one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Node name.
    pub node: String,
    /// Measured usage from the snapshot.
    pub measured: f64,
    /// Measured plus in-flight estimate: what ranks nodes.
    pub score: f64,
}

impl GpuLeastLoaded {
    /// A profile with these settings; the tie-break RNG is seeded from `config.seed`.
    pub fn new(config: GpuLeastLoadedConfig) -> Self {
        Self {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            last_chosen: None,
            inflight: Vec::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &GpuLeastLoadedConfig {
        &self.config
    }

    /// The node chosen last, for the runtime to persist.
    pub fn last_chosen(&self) -> Option<&str> {
        self.last_chosen.as_deref()
    }

    /// Restores the node chosen last before a restart.
    pub fn restore_last_chosen(&mut self, node: Option<String>) {
        self.last_chosen = node.filter(|n| !n.is_empty());
    }

    /// Number of placements still counted as in-flight load on `node`.
    pub fn inflight_on(&self, node: &str) -> usize {
        self.inflight.iter().filter(|f| f.node == node).count()
    }

    /// Drops estimates that a newer sample covers or that outlived the window.
    fn prune(&mut self, now: Millis, gpu: Option<&GpuSnapshot>) {
        let window = self.config.inflight_window_ms;
        self.inflight.retain(|f| {
            let covered = gpu
                .and_then(|g| g.nodes.get(&f.node))
                .and_then(|u| u.sample)
                .is_some_and(|s| s.sampled_at > f.at);
            !covered && now.saturating_sub(f.at) < window
        });
    }

    /// Every eligible node for `pod` with its score, or why none is.
    /// `taken` holds resources already promised to earlier members of the
    /// same unit.
    pub fn candidates(
        &self,
        cluster: &Cluster,
        pod: &PodInfo,
        gpu: Option<&GpuSnapshot>,
        taken: &[(String, Resources)],
    ) -> Result<Vec<Candidate>, FilterSummary> {
        let mut summary = FilterSummary {
            total: cluster.node_count(),
            ..Default::default()
        };
        // Count estimates per node once: O(nodes + in-flight) per pod.
        let mut pending: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for f in &self.inflight {
            *pending.entry(f.node.as_str()).or_default() += 1;
        }
        let mut out = Vec::new();
        for node in cluster.nodes() {
            match self.check(node, pod, gpu, taken) {
                Ok(measured) => {
                    let n = pending.get(node.info.name.as_str()).copied().unwrap_or(0);
                    let score = measured + self.config.inflight_load_percent * n as f64;
                    out.push(Candidate {
                        node: node.info.name.clone(),
                        measured,
                        score,
                    });
                }
                Err(reason) => summary.add(reason),
            }
        }
        if out.is_empty() {
            Err(summary)
        } else {
            Ok(out)
        }
    }

    fn check(
        &self,
        node: &NodeState,
        pod: &PodInfo,
        gpu: Option<&GpuSnapshot>,
        taken: &[(String, Resources)],
    ) -> Result<f64, FilterReason> {
        check_node(&node.info, pod)?;
        let mut free = node.free();
        for (_, r) in taken.iter().filter(|(n, _)| *n == node.info.name) {
            free.sub(r);
        }
        if let Some(r) = free.first_shortfall(&pod.requests) {
            return Err(FilterReason::Insufficient(r));
        }
        let usage = gpu
            .and_then(|g| g.usage(&node.info.name))
            .filter(|u| u.is_finite())
            .ok_or(FilterReason::GpuUsageUnknown)?;
        if usage >= self.config.threshold_percent {
            return Err(FilterReason::GpuOverThreshold);
        }
        Ok(usage)
    }

    /// Picks among candidates: lowest score; ties to the last chosen node,
    /// else at random.
    fn pick(&mut self, candidates: &[Candidate]) -> String {
        let best = candidates
            .iter()
            .map(|c| c.score)
            .fold(f64::INFINITY, f64::min);
        let tied: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| c.score <= best + self.config.tie_tolerance_percent)
            .collect();
        if let Some(last) = &self.last_chosen
            && let Some(c) = tied.iter().find(|c| &c.node == last)
        {
            return c.node.clone();
        }
        // `candidates` is never empty (the caller returns early), so `tied`
        // holds at least the best one; fall back to the first regardless.
        tied.choose(&mut self.rng)
            .or(tied.first())
            .map(|c| c.node.clone())
            .unwrap_or_default()
    }
}

impl GpuLeastLoaded {
    /// Nodes a snapshot makes eligible: a fresh, finite reading under the
    /// threshold.
    pub fn eligible_nodes<'a>(&self, gpu: &'a GpuSnapshot) -> impl Iterator<Item = &'a str> + 'a {
        let threshold = self.config.threshold_percent;
        gpu.nodes
            .keys()
            .map(String::as_str)
            .filter(move |n| gpu.usage(n).is_some_and(|u| u.is_finite() && u < threshold))
    }
}

impl Profile for GpuLeastLoaded {
    fn name(&self) -> &'static str {
        "gpu-least-loaded"
    }

    /// Only a node turning eligible (fresh and under the threshold) can let
    /// a waiting pod fit; a poll that changes readings but not eligibility
    /// leaves backoff alone.
    fn gpu_may_fit_more(&self, before: Option<&GpuSnapshot>, after: &GpuSnapshot) -> bool {
        let Some(before) = before else {
            return true;
        };
        let was: std::collections::HashSet<&str> = self.eligible_nodes(before).collect();
        self.eligible_nodes(after).any(|n| !was.contains(n))
    }

    fn schedule(
        &mut self,
        cluster: &Cluster,
        unit: &[&PodInfo],
        ctx: &SchedulingContext<'_>,
    ) -> Decision {
        self.prune(ctx.now, ctx.gpu);
        let mut bindings = Vec::with_capacity(unit.len());
        let mut taken: Vec<(String, Resources)> = Vec::new();
        let previous_last = self.last_chosen.clone();
        for pod in unit {
            match self.candidates(cluster, pod, ctx.gpu, &taken) {
                Ok(cands) => {
                    let node = self.pick(&cands);
                    self.inflight.retain(|f| f.pod != pod.key);
                    self.inflight.push(InFlight {
                        pod: pod.key.clone(),
                        node: node.clone(),
                        at: ctx.now,
                    });
                    self.last_chosen = Some(node.clone());
                    taken.push((node.clone(), pod.requests.clone()));
                    bindings.push(Binding {
                        pod: pod.key.clone(),
                        uid: pod.uid.clone(),
                        node,
                    });
                }
                Err(summary) => {
                    // Undo what this unit took.
                    self.inflight
                        .retain(|f| !bindings.iter().any(|b: &Binding| b.pod == f.pod));
                    self.last_chosen = previous_last;
                    return Decision::Unschedulable {
                        message: summary.to_string(),
                        summary,
                    };
                }
            }
        }
        Decision::Bind(bindings)
    }

    fn bound(&mut self, binding: &Binding, now: Millis) {
        match self.inflight.iter_mut().find(|f| f.pod == binding.pod) {
            Some(f) => {
                f.node.clone_from(&binding.node);
                f.at = now;
            }
            None => self.inflight.push(InFlight {
                pod: binding.pod.clone(),
                node: binding.node.clone(),
                at: now,
            }),
        }
        self.last_chosen = Some(binding.node.clone());
    }

    fn bind_failed(&mut self, binding: &Binding) {
        self.inflight.retain(|f| f.pod != binding.pod);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{mk_node, mk_pod};
    use crate::gpu::{GpuSample, NodeUsage, UsageState};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn cluster(names: &[&str]) -> Cluster {
        crate::fixtures::mk_cluster(names)
    }

    fn snapshot(at: Millis, usage: &[(&str, f64)]) -> GpuSnapshot {
        let mut s = GpuSnapshot {
            taken_at: at,
            ..Default::default()
        };
        for (n, u) in usage {
            s.nodes.insert(
                n.to_string(),
                NodeUsage {
                    sample: Some(GpuSample {
                        usage_percent: *u,
                        sampled_at: at,
                    }),
                    state: UsageState::Ok,
                    error: None,
                },
            );
        }
        s
    }

    #[test]
    fn only_a_node_turning_eligible_requeues() {
        let p = GpuLeastLoaded::new(GpuLeastLoadedConfig::default());
        let busy = snapshot(1, &[("a", 70.0), ("b", 20.0)]);
        let still_busy = snapshot(2, &[("a", 65.0), ("b", 30.0)]);
        let a_free = snapshot(3, &[("a", 40.0), ("b", 30.0)]);
        assert!(p.gpu_may_fit_more(None, &busy), "first snapshot");
        assert!(
            !p.gpu_may_fit_more(Some(&busy), &still_busy),
            "readings changed, eligibility not"
        );
        assert!(p.gpu_may_fit_more(Some(&still_busy), &a_free));
        assert!(
            !p.gpu_may_fit_more(Some(&a_free), &busy),
            "fewer eligible nodes"
        );
    }

    fn bind_one(
        p: &mut GpuLeastLoaded,
        c: &Cluster,
        pod: &str,
        ctx: &SchedulingContext<'_>,
    ) -> String {
        match p.schedule(c, &[&mk_pod(pod)], ctx) {
            Decision::Bind(b) => {
                p.bound(&b[0], ctx.now);
                b[0].node.clone()
            }
            other => panic!("expected a bind, got {other:?}"),
        }
    }

    #[test]
    fn least_loaded_wins_and_over_threshold_is_never_chosen() {
        let c = cluster(&["agx", "orin", "xavier"]);
        let s = snapshot(1_000, &[("agx", 20.0), ("xavier", 70.0), ("orin", 35.0)]);
        let ctx = SchedulingContext {
            now: 1_000,
            gpu: Some(&s),
        };
        let mut p = GpuLeastLoaded::new(GpuLeastLoadedConfig::default());
        assert_eq!(bind_one(&mut p, &c, "p0", &ctx), "agx");
        assert_eq!(p.last_chosen(), Some("agx"));
    }

    #[test]
    fn a_burst_spreads_and_skips_the_busy_node() {
        let c = cluster(&["agx", "orin", "xavier"]);
        let s = snapshot(1_000, &[("agx", 20.0), ("xavier", 70.0), ("orin", 35.0)]);
        let mut p = GpuLeastLoaded::new(GpuLeastLoadedConfig::default());
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..10 {
            let ctx = SchedulingContext {
                now: 1_000 + i * 10,
                gpu: Some(&s),
            };
            *counts
                .entry(bind_one(&mut p, &c, &format!("p{i}"), &ctx))
                .or_default() += 1;
        }
        assert_eq!(counts.get("xavier"), None, "70 % is over the threshold");
        // Scores 20 + 15k vs 35 + 15j: agx first, then ties (35/35, 50/50,
        // …) go to the node chosen last, so the nodes alternate in pairs and
        // end within one estimate of each other.
        assert_eq!(counts["agx"], 6);
        assert_eq!(counts["orin"], 4);
    }

    #[test]
    fn newer_samples_replace_the_estimate_and_the_window_expires_it() {
        let c = cluster(&["a", "b"]);
        let mut p = GpuLeastLoaded::new(GpuLeastLoadedConfig::default());
        let s0 = snapshot(1_000, &[("a", 10.0), ("b", 20.0)]);
        let ctx = |now, s| SchedulingContext { now, gpu: Some(s) };
        assert_eq!(bind_one(&mut p, &c, "p0", &ctx(2_000, &s0)), "a");
        assert_eq!(p.inflight_on("a"), 1);
        // a is now 10 + 15 = 25 > 20: b.
        assert_eq!(bind_one(&mut p, &c, "p1", &ctx(2_100, &s0)), "b");
        // A sample of a taken after its bind covers the estimate.
        let s1 = snapshot(3_000, &[("a", 12.0), ("b", 50.0)]);
        assert_eq!(bind_one(&mut p, &c, "p2", &ctx(3_100, &s1)), "a");
        assert_eq!(p.inflight_on("b"), 0, "covered by the 3_000 sample");
        // Without newer samples, estimates expire after the window.
        let later = 3_100 + p.config().inflight_window_ms;
        p.prune(later, Some(&s1));
        assert_eq!(p.inflight_on("a"), 0);
    }

    #[test]
    fn stale_missing_and_absent_snapshot_are_unknown() {
        let c = cluster(&["a", "b", "c", "d"]);
        let mut s = snapshot(1_000, &[("a", 10.0), ("b", 80.0)]);
        s.nodes.get_mut("a").unwrap().state = UsageState::Stale;
        s.nodes.insert(
            "c".into(),
            NodeUsage {
                sample: None,
                state: UsageState::Missing,
                error: None,
            },
        );
        let mut p = GpuLeastLoaded::new(GpuLeastLoadedConfig::default());
        let d = p.schedule(
            &c,
            &[&mk_pod("p")],
            &SchedulingContext {
                now: 1_000,
                gpu: Some(&s),
            },
        );
        let Decision::Unschedulable { message, summary } = d else {
            panic!("{d:?}")
        };
        assert_eq!(summary.reasons[&FilterReason::GpuUsageUnknown], 3);
        assert_eq!(summary.reasons[&FilterReason::GpuOverThreshold], 1);
        assert_eq!(
            message,
            "0/4 nodes are available: 3 node(s) had no fresh GPU usage sample, 1 node(s) had GPU usage at or above the threshold."
        );
        let d = p.schedule(&c, &[&mk_pod("p")], &SchedulingContext::default());
        assert!(matches!(d, Decision::Unschedulable { .. }));
        assert_eq!(p.last_chosen(), None);
    }

    #[test]
    fn static_filters_come_first() {
        let mut c = cluster(&["a", "b"]);
        let mut a = mk_node("a");
        a.unschedulable = true;
        c.upsert_node(a);
        let s = snapshot(1_000, &[("a", 1.0), ("b", 50.0)]);
        let mut p = GpuLeastLoaded::new(GpuLeastLoadedConfig::default());
        let ctx = SchedulingContext {
            now: 1_000,
            gpu: Some(&s),
        };
        assert_eq!(bind_one(&mut p, &c, "p", &ctx), "b");
    }

    #[test]
    fn ties_prefer_the_last_chosen_node_then_random() {
        let c = cluster(&["a", "b", "c"]);
        let s = snapshot(1_000, &[("a", 30.0), ("b", 30.0), ("c", 30.0)]);
        let ctx = SchedulingContext {
            now: 1_000,
            gpu: Some(&s),
        };
        for seed in 0..8 {
            let mut p = GpuLeastLoaded::new(GpuLeastLoadedConfig {
                seed,
                ..Default::default()
            });
            p.restore_last_chosen(Some("c".into()));
            let d = p.schedule(&c, &[&mk_pod("p")], &ctx);
            assert_eq!(
                d,
                Decision::Bind(vec![Binding {
                    pod: PodKey::new("default", "p"),
                    uid: mk_pod("p").uid,
                    node: "c".into()
                }])
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mut p = GpuLeastLoaded::new(GpuLeastLoadedConfig {
                seed,
                ..Default::default()
            });
            if let Decision::Bind(b) = p.schedule(&c, &[&mk_pod("p")], &ctx) {
                seen.insert(b[0].node.clone());
            }
        }
        assert_eq!(seen.len(), 3, "random among tied nodes");
        // Same seed, same choice.
        let pick = |seed| {
            let mut p = GpuLeastLoaded::new(GpuLeastLoadedConfig {
                seed,
                ..Default::default()
            });
            p.schedule(&c, &[&mk_pod("p")], &ctx)
        };
        assert_eq!(pick(7), pick(7));
    }

    #[test]
    fn failed_bind_removes_the_estimate_and_gang_failure_rolls_back() {
        let c = cluster(&["a", "b"]);
        let s = snapshot(1_000, &[("a", 10.0), ("b", 40.0)]);
        let ctx = SchedulingContext {
            now: 1_000,
            gpu: Some(&s),
        };
        let mut p = GpuLeastLoaded::new(GpuLeastLoadedConfig::default());
        let Decision::Bind(b) = p.schedule(&c, &[&mk_pod("p")], &ctx) else {
            panic!()
        };
        assert_eq!(p.inflight_on("a"), 1);
        p.bind_failed(&b[0]);
        assert_eq!(p.inflight_on("a"), 0);

        // Second member does not fit anywhere (asks for 100 CPUs).
        let mut big = mk_pod("big");
        big.requests.cpu_millis = 100_000;
        let d = p.schedule(&c, &[&mk_pod("m1"), &big], &ctx);
        let Decision::Unschedulable { summary, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            summary.reasons[&FilterReason::Insufficient("cpu".into())],
            2
        );
        assert_eq!(p.inflight_on("a") + p.inflight_on("b"), 0, "rolled back");
    }

    proptest! {
        /// Whatever the usages and burst size: nodes at or over the threshold
        /// are never chosen, and with in-flight compensation a burst over
        /// nodes of equal measured usage never puts more than one extra pod
        /// on any node (counts differ by at most one).
        #[test]
        fn threshold_respected_and_burst_spread(
            usages in proptest::collection::vec(0u8..=100, 1..8),
            burst in 1usize..40,
            seed in any::<u64>(),
        ) {
            let names: Vec<String> = (0..usages.len()).map(|i| format!("n{i}")).collect();
            let mut c = Cluster::new();
            for n in &names { c.upsert_node(mk_node(n)); }
            let pairs: Vec<(&str, f64)> = names.iter().map(|n| n.as_str()).zip(usages.iter().map(|u| f64::from(*u))).collect();
            let s = snapshot(1_000, &pairs);
            let mut p = GpuLeastLoaded::new(GpuLeastLoadedConfig { seed, ..Default::default() });
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for i in 0..burst {
                let ctx = SchedulingContext { now: 1_000 + i as i64, gpu: Some(&s) };
                match p.schedule(&c, &[&mk_pod(&format!("p{i}"))], &ctx) {
                    Decision::Bind(b) => {
                        let u = s.usage(&b[0].node).unwrap();
                        prop_assert!(u < 60.0, "bound to {} at {u}", b[0].node);
                        p.bound(&b[0], ctx.now);
                        *counts.entry(b[0].node.clone()).or_default() += 1;
                    }
                    Decision::Unschedulable { .. } => {
                        prop_assert!(usages.iter().all(|u| *u >= 60));
                    }
                    other => prop_assert!(false, "{other:?}"),
                }
            }
            // Equal measured usage among eligible nodes: spread within one.
            let eligible: Vec<&String> = names.iter().filter(|n| s.usage(n).unwrap() < 60.0).collect();
            let same = eligible.iter().all(|n| s.usage(n) == s.usage(eligible[0]));
            if same && !eligible.is_empty() {
                let cs: Vec<usize> = eligible.iter().map(|n| counts.get(*n).copied().unwrap_or(0)).collect();
                let (lo, hi) = (cs.iter().min().unwrap(), cs.iter().max().unwrap());
                prop_assert!(hi - lo <= 1, "{counts:?}");
            }
            // In general no node ends more than one estimate above another
            // node's final score.
            let score = |n: &String| s.usage(n).unwrap() + 15.0 * counts.get(n).copied().unwrap_or(0) as f64;
            for a in &eligible {
                if counts.get(*a).copied().unwrap_or(0) > 0 {
                    for b in &eligible {
                        prop_assert!(score(a) - 15.0 <= score(b) + 0.5 + 1e-9, "{a} vs {b}: {counts:?}");
                    }
                }
            }
        }
    }
}
