//! The GPU balancer's decisions: windowed averaging of per-node usage and the
//! plan of moves that takes load off overloaded nodes.
//!
//! The balancer observes GPU usage (sampled every few seconds) over a window,
//! averages it per node and then, for every node whose average is above the
//! threshold, moves **at most one** posture workload to the least-loaded node
//! that still is at or under the threshold once the workload's load is added.
//! A workload's load is estimated above its node's idle baseline
//! ([`estimate`]); when no baseline is known the move follows the seed's
//! rule (the lowest-usage node at or under the threshold).
//!
//! The balancer remembers its own moves ([`RecentMove`]): until the moved
//! workload has run on its destination for a whole window, the readings do
//! not show the move, so its load is added to the destination and taken off
//! the source before deciding, and the source sheds nothing more
//! ([`StuckReason::Settling`]). Within one loop, each planned move is
//! counted the same way before the next decision. Workloads moved less than
//! a cool-down ago are not moved again.
//!
//! ```text
//!  GpuSnapshot every 5 s ─► UsageWindow (30 s) ─► averages ──────────┐
//!  workloads on nodes ─► estimate_loads (idle baselines) ────────────┼─► plan_moves ─► BalancePlan
//!  History: last move per workload (cool-down), recent moves (pending)┘      (moves, outcome, stuck nodes)
//! ```
//!
//! Everything here is pure: time comes in as [`Millis`], randomness (the
//! tie-break between equally loaded destinations) as a seeded RNG.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use rand::Rng;

use crate::gpu::GpuSnapshot;
use crate::model::Millis;

pub mod estimate;

pub use estimate::{Estimate, IdleBaselines, Workload, estimate_loads, learn_idle};

/// Default overload threshold in percent (`GPU_THRESHOLD`): a node whose
/// windowed average is above it is overloaded.
pub const DEFAULT_THRESHOLD: f64 = 50.0;

/// Two usages closer than this are equal for the random tie-break, so that
/// floating-point noise in averages does not defeat it.
const TIE_EPSILON: f64 = 1e-9;

/// What kind of object a posture workload is; the actuator moves each kind
/// differently (patch a ScaledJob's template, recreate a plain Job).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// A KEDA `ScaledJob` (keda.sh/v1alpha1): its Jobs follow its template.
    ScaledJob,
    /// A plain `batch/v1` Job: its pod template is immutable.
    Job,
}

impl WorkloadKind {
    /// Lower-case name for logs, tables and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaledJob => "scaledjob",
            Self::Job => "job",
        }
    }

    /// The `kind` as written in manifests (`ScaledJob`, `Job`).
    pub fn kind_name(self) -> &'static str {
        match self {
            Self::ScaledJob => "ScaledJob",
            Self::Job => "Job",
        }
    }
}

/// Identity of a movable workload: cool-down records and moves refer to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    /// ScaledJob or Job: decides how the actuator moves it.
    pub kind: WorkloadKind,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the ScaledJob or Job (not of its pods).
    pub name: String,
}

impl WorkloadKey {
    /// Builds a key.
    pub fn new(kind: WorkloadKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// Sliding window of usage samples, averaged per node.
///
/// The balancer samples every `interval` (5 s by default) and decides on the
/// average over the last `window` (30 s by default). Only fresh readings
/// (state `Ok`) enter the window; a node whose readings are all stale or
/// missing has no average and is neither a source nor a destination.
#[derive(Clone, Debug)]
pub struct UsageWindow {
    window: Millis,
    samples: VecDeque<(Millis, BTreeMap<String, f64>)>,
}

impl UsageWindow {
    /// An empty window of the given length (milliseconds, > 0).
    pub fn new(window: Millis) -> Self {
        Self {
            window: window.max(1),
            samples: VecDeque::new(),
        }
    }

    /// Window length in milliseconds.
    pub fn window(&self) -> Millis {
        self.window
    }

    /// Adds the fresh readings of `snapshot`, stamped with its `taken_at`,
    /// and drops samples that fell out of the window.
    pub fn record(&mut self, snapshot: &GpuSnapshot) {
        let fresh: BTreeMap<String, f64> = snapshot
            .fresh()
            .map(|(n, u)| (n.to_owned(), u.clamp(0.0, 100.0)))
            .collect();
        self.samples.push_back((snapshot.taken_at, fresh));
        self.prune(snapshot.taken_at);
    }

    /// Forgets every sample (after moves, so the next decision only sees
    /// usage measured once the moved workloads restarted elsewhere).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Number of samples currently inside the window.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the window holds no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Whether the samples span the whole window as of `now` (the oldest is at
    /// least `window - interval` old), i.e. a decision would not be based on a
    /// partial observation.
    pub fn is_full(&self, now: Millis, interval: Millis) -> bool {
        self.samples
            .front()
            .is_some_and(|(t, _)| now - *t >= self.window - interval)
    }

    /// Mean fresh usage per node over the samples inside the window ending at
    /// `now`.
    pub fn averages(&self, now: Millis) -> BTreeMap<String, f64> {
        let mut sums: BTreeMap<&str, (f64, u32)> = BTreeMap::new();
        for (_, sample) in self.samples.iter().filter(|(t, _)| self.inside(*t, now)) {
            for (node, usage) in sample {
                let e = sums.entry(node.as_str()).or_insert((0.0, 0));
                e.0 += usage;
                e.1 += 1;
            }
        }
        sums.into_iter()
            .map(|(n, (sum, count))| (n.to_owned(), sum / f64::from(count)))
            .collect()
    }

    fn inside(&self, t: Millis, now: Millis) -> bool {
        t > now - self.window && t <= now
    }

    fn prune(&mut self, now: Millis) {
        while let Some((t, _)) = self.samples.front() {
            if *t <= now - self.window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }
}

/// Knobs of the balancer's decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BalanceParams {
    /// Percent; a node above it is overloaded, a destination must stay at or
    /// under it after the move.
    pub threshold: f64,
    /// A workload moved less than this long ago is not moved again.
    pub cooldown: Millis,
    /// Length of the observation window: a move is shown by the readings
    /// once its workload has run on the destination for this long.
    pub window: Millis,
    /// A move whose workload never shows up ready on its destination stops
    /// counting as pending after this long.
    pub settle_timeout: Millis,
}

impl Default for BalanceParams {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            cooldown: 5 * 60 * 1000,
            window: 30 * 1000,
            settle_timeout: 5 * 60 * 1000,
        }
    }
}

/// One planned move: take `workload` off `from` and run it on `to`.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    /// The workload to move.
    pub workload: WorkloadKey,
    /// The overloaded node it leaves.
    pub from: String,
    /// The destination node (its affinity target after the move).
    pub to: String,
    /// The estimated load that moves with it (an upper bound when
    /// `estimate` is [`Estimate::Unknown`]).
    pub load: f64,
    /// How `load` was estimated.
    pub estimate: Estimate,
    /// Source average before this loop's moves.
    pub from_usage: f64,
    /// Destination's projected usage before this move (including moves in
    /// progress and earlier moves of the same loop).
    pub to_usage_before: f64,
    /// Destination's projected usage after this move (≤ threshold when the
    /// estimate is known).
    pub to_usage_after: f64,
}

/// A move made recently: until the readings show it, its load counts on
/// its destination and its relief on its source.
#[derive(Clone, Debug, PartialEq)]
pub struct RecentMove {
    /// The moved workload.
    pub workload: WorkloadKey,
    /// The node it left.
    pub from: String,
    /// The node it was moved to.
    pub to: String,
    /// The load moved (as estimated when moving).
    pub load: f64,
    /// When it was moved.
    pub at: Millis,
    /// Since when all its pods run ready on `to` (`None`: not yet, or not
    /// known).
    pub arrived_at: Option<Millis>,
}

impl RecentMove {
    /// The record of `mv`, made at `at`.
    pub fn of(mv: &Move, at: Millis) -> Self {
        Self {
            workload: mv.workload.clone(),
            from: mv.from.clone(),
            to: mv.to.clone(),
            load: mv.load,
            at,
            arrived_at: None,
        }
    }

    /// Whether a window ending at `now` may not show the move yet: its
    /// workload has not run ready on the destination for a whole window,
    /// and the settle timeout has not passed.
    pub fn is_pending(&self, now: Millis, params: &BalanceParams) -> bool {
        let shown = self
            .arrived_at
            .is_some_and(|a| a <= now.saturating_sub(params.window));
        !shown && now.saturating_sub(self.at) < params.settle_timeout
    }
}

/// What the balancer remembers of its own moves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// When each workload was last moved (cool-down), e.g. from annotations.
    pub moved_at: BTreeMap<WorkloadKey, Millis>,
    /// Recent moves with their load, for the pending projection.
    pub recent: Vec<RecentMove>,
}

impl History {
    /// When `key` was last moved, from either record.
    pub fn last_move(&self, key: &WorkloadKey) -> Option<Millis> {
        let recent = self
            .recent
            .iter()
            .filter(|m| &m.workload == key)
            .map(|m| m.at)
            .max();
        self.moved_at.get(key).copied().max(recent)
    }

    /// The recent moves the readings of a window ending at `now` may not
    /// show yet.
    pub fn pending(&self, now: Millis, params: &BalanceParams) -> Vec<RecentMove> {
        self.recent
            .iter()
            .filter(|m| m.is_pending(now, params))
            .cloned()
            .collect()
    }
}

/// The overall verdict of one loop, for logs and the `--dry-run` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No node has a usable average: nothing to decide on.
    NoData,
    /// No node is overloaded once moves in progress are counted: observe
    /// again.
    Stable,
    /// Some nodes are overloaded and every other node is too, or is
    /// projected over the threshold by moves in progress: there is nowhere
    /// to move to, so nothing moves.
    AllOverloaded,
    /// Some nodes are overloaded and some are not: see the moves (possibly
    /// none, with the reasons in [`BalancePlan::stuck`]).
    Rebalancing,
}

impl Outcome {
    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoData => "no_data",
            Self::Stable => "stable",
            Self::AllOverloaded => "all_overloaded",
            Self::Rebalancing => "rebalancing",
        }
    }
}

/// Why an overloaded node got no move in this loop.
#[derive(Clone, Debug, PartialEq)]
pub enum StuckReason {
    /// No posture workload runs there (the load comes from something else).
    NoWorkload,
    /// A workload moved off it recently does not show in the readings yet:
    /// it sheds nothing more until they do.
    Settling,
    /// Every workload there was moved within the cool-down.
    CoolingDown,
    /// The workloads there add no load above the node's idle baseline:
    /// moving one would relieve nothing.
    NoRelief,
    /// No destination has room for any of its workloads without going over
    /// the threshold.
    NoRoom,
}

impl StuckReason {
    /// Lower-case name for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoWorkload => "no_workload",
            Self::Settling => "settling",
            Self::CoolingDown => "cooling_down",
            Self::NoRelief => "no_relief",
            Self::NoRoom => "no_room",
        }
    }
}

/// The result of one balancing decision. Performs nothing: the actuator in
/// `posture-k8s` applies [`BalancePlan::moves`].
#[derive(Clone, Debug, PartialEq)]
pub struct BalancePlan {
    /// The overall verdict of the loop.
    pub outcome: Outcome,
    /// At most one per overloaded node, in decision order.
    pub moves: Vec<Move>,
    /// Overloaded nodes without a move, and why.
    pub stuck: Vec<(String, StuckReason)>,
    /// Overloaded nodes with their averages, highest first.
    pub overloaded: Vec<(String, f64)>,
    /// Moves in progress counted in this decision.
    pub pending: Vec<RecentMove>,
    /// Per-node usage once moves in progress and the planned moves are
    /// counted.
    pub projected: BTreeMap<String, f64>,
}

/// Whether `key` was moved less than `cooldown` before `now`.
pub fn cooling_down(history: &History, key: &WorkloadKey, now: Millis, cooldown: Millis) -> bool {
    history
        .last_move(key)
        .is_some_and(|at| now.saturating_sub(at) < cooldown)
}

/// Per-node averages with the moves in progress counted: their load added
/// to the destination, taken off the source (never below 0). Nodes without
/// an average stay out.
pub fn project_pending(
    averages: &BTreeMap<String, f64>,
    pending: &[RecentMove],
) -> BTreeMap<String, f64> {
    let mut projected = averages.clone();
    for m in pending {
        if let Some(u) = projected.get_mut(&m.to) {
            *u += m.load;
        }
        if let Some(u) = projected.get_mut(&m.from) {
            *u = (*u - m.load).max(0.0);
        }
    }
    projected
}

/// Decides which workloads to move, given per-node averages.
///
/// Rules (see the module docs): moves in progress ([`History::pending`])
/// are counted first. Sources are the nodes whose average *and* projected
/// usage are above the threshold, highest average first; each gets at most
/// one move, none while a move off it is pending. Its candidate workloads
/// are those not cooling down, largest estimated load first (most relief).
/// Destinations are the nodes whose average and projected usage are at or
/// under the threshold at the start of the loop; for a known estimate the
/// one with the lowest projected usage among those that stay at or under
/// the threshold with the workload added, for an unknown estimate (seed
/// rule) the one with the lowest projected usage; ties broken by `rng`.
/// Projected usage is updated after each move. When no destination exists
/// nothing moves.
pub fn plan_moves<R: Rng + ?Sized>(
    averages: &BTreeMap<String, f64>,
    workloads: &[Workload],
    history: &History,
    now: Millis,
    params: BalanceParams,
    rng: &mut R,
) -> BalancePlan {
    let threshold = params.threshold;
    let pending = history.pending(now, &params);
    let mut projected = project_pending(averages, &pending);
    let projected_over = |n: &String| projected.get(n).is_some_and(|p| *p > threshold);
    let mut overloaded: Vec<(String, f64)> = averages
        .iter()
        .filter(|(n, u)| **u > threshold && projected_over(n))
        .map(|(n, u)| (n.clone(), *u))
        .collect();
    overloaded.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    // Destinations are fixed at the start of the loop: a source relieved by
    // its own move does not receive load in the same loop.
    let destinations: Vec<String> = averages
        .iter()
        .filter(|(n, u)| **u <= threshold && !projected_over(n))
        .map(|(n, _)| n.clone())
        .collect();

    let mut plan = BalancePlan {
        outcome: Outcome::Rebalancing,
        moves: Vec::new(),
        stuck: Vec::new(),
        overloaded: overloaded.clone(),
        pending: Vec::new(),
        projected: BTreeMap::new(),
    };
    if averages.is_empty() {
        plan.outcome = Outcome::NoData;
    } else if overloaded.is_empty() {
        plan.outcome = Outcome::Stable;
    } else if destinations.is_empty() {
        plan.outcome = Outcome::AllOverloaded;
    } else {
        let planner = Planner {
            destinations: &destinations,
            workloads,
            history,
            pending: &pending,
            now,
            params,
        };
        for (source, source_usage) in &overloaded {
            match planner.move_off(source, *source_usage, &mut projected, rng) {
                Ok(mv) => plan.moves.push(mv),
                Err(reason) => plan.stuck.push((source.clone(), reason)),
            }
        }
    }
    plan.projected = projected;
    plan.pending = pending;
    plan
}

/// What stays fixed while one loop's moves are planned.
struct Planner<'a> {
    /// Nodes at or under the threshold when the loop started.
    destinations: &'a [String],
    workloads: &'a [Workload],
    history: &'a History,
    pending: &'a [RecentMove],
    now: Millis,
    params: BalanceParams,
}

impl Planner<'_> {
    /// The move off overloaded `source` (the heaviest workload not cooling
    /// down that fits somewhere), counted into `projected`; or why none.
    fn move_off<R: Rng + ?Sized>(
        &self,
        source: &str,
        source_usage: f64,
        projected: &mut BTreeMap<String, f64>,
        rng: &mut R,
    ) -> Result<Move, StuckReason> {
        let on_node: Vec<&Workload> = self.workloads.iter().filter(|w| w.node == source).collect();
        if on_node.is_empty() {
            return Err(StuckReason::NoWorkload);
        }
        if self.pending.iter().any(|m| m.from == source) {
            return Err(StuckReason::Settling);
        }
        let mut candidates: Vec<&Workload> = on_node
            .into_iter()
            .filter(|w| !cooling_down(self.history, &w.key, self.now, self.params.cooldown))
            .collect();
        if candidates.is_empty() {
            return Err(StuckReason::CoolingDown);
        }
        candidates.retain(|w| w.load > 0.0);
        if candidates.is_empty() {
            return Err(StuckReason::NoRelief);
        }
        candidates.sort_by(|a, b| b.load.total_cmp(&a.load).then_with(|| a.key.cmp(&b.key)));

        let threshold = self.params.threshold;
        let chosen = candidates.into_iter().find_map(|w| {
            // A known load must fit; an unknown one follows the seed's rule.
            let need = if w.estimate.is_known() { w.load } else { 0.0 };
            pick_destination(self.destinations, projected, need, threshold, rng).map(|d| (w, d))
        });
        let Some((workload, dest)) = chosen else {
            return Err(StuckReason::NoRoom);
        };
        let before = projected.get(&dest).copied().unwrap_or(0.0);
        let after = before + workload.load;
        projected.insert(dest.clone(), after);
        if let Some(u) = projected.get_mut(source) {
            *u = (*u - workload.load).max(0.0);
        }
        Ok(Move {
            workload: workload.key.clone(),
            from: source.to_string(),
            to: dest,
            load: workload.load,
            estimate: workload.estimate,
            from_usage: source_usage,
            to_usage_before: before,
            to_usage_after: after,
        })
    }
}

/// The least-loaded destination with room for `load`, random among ties.
fn pick_destination<R: Rng + ?Sized>(
    destinations: &[String],
    projected: &BTreeMap<String, f64>,
    load: f64,
    threshold: f64,
    rng: &mut R,
) -> Option<String> {
    let fitting: Vec<(&String, f64)> = destinations
        .iter()
        .filter_map(|d| projected.get(d).map(|u| (d, *u)))
        .filter(|(_, u)| u + load <= threshold)
        .collect();
    let min = fitting.iter().map(|(_, u)| *u).reduce(f64::min)?;
    let ties: Vec<&String> = fitting
        .iter()
        .filter(|(_, u)| *u - min <= TIE_EPSILON)
        .map(|(d, _)| *d)
        .collect();
    let i = if ties.len() > 1 {
        rng.random_range(0..ties.len())
    } else {
        0
    };
    ties.get(i).map(|d| (*d).clone())
}

#[cfg(test)]
mod tests;
