//! How much GPU load one analyzer puts on its node, and the idle baseline
//! that estimate rests on.
//!
//! A node's windowed average is its idle baseline (what the board reports
//! with no analyzer on it: the OS, the display, other programs) plus the
//! load of the analyzers on it. The estimate of one analyzer is therefore
//! `(average − idle baseline) ÷ analyzers on the node`
//! ([`Estimate::AboveIdle`]), or a fixed value the operator gives
//! ([`Estimate::Fixed`]). When no idle baseline is known for the node the
//! load is [`Estimate::Unknown`]: the upper bound `average ÷ analyzers` is
//! kept for projections, and the move follows the seed's rule (to the
//! lowest-usage node at or under the threshold, without a room check).
//!
//! Idle baselines come from a flag, or are learned: a window in which a
//! node had no posture workload and no move to or from it in progress is an
//! idle reading ([`learn_idle`]).

use std::collections::BTreeMap;
use std::fmt;

use super::{RecentMove, WorkloadKey};

/// How a workload's load was estimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Estimate {
    /// The operator's fixed per-analyzer load (`--workload-load`).
    Fixed,
    /// (node average − the node's idle baseline) ÷ analyzers on the node.
    AboveIdle,
    /// No idle baseline is known for the node: the load is the upper bound
    /// node average ÷ analyzers (baseline included), used only to project;
    /// the destination is chosen by the seed's rule (lowest usage at or
    /// under the threshold) without a room check.
    Unknown,
}

impl Estimate {
    /// Lower-case name for logs and the `--dry-run` printout.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::AboveIdle => "above_idle",
            Self::Unknown => "unknown",
        }
    }

    /// Whether the load is an estimate the room check can rely on.
    pub fn is_known(self) -> bool {
        !matches!(self, Self::Unknown)
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workload running on a node, with the GPU load (percentage points) it is
/// estimated to put there. Moving it is assumed to move that much load.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Which object this is.
    pub key: WorkloadKey,
    /// The node its pods run on now.
    pub node: String,
    /// Estimated GPU usage it causes, in percentage points (≥ 0); for
    /// [`Estimate::Unknown`] an upper bound.
    pub load: f64,
    /// How `load` was found.
    pub estimate: Estimate,
}

/// Idle baselines per node: fixed by the operator or learned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdleBaselines {
    /// `--idle-baseline N`: every node not listed in `fixed`.
    pub fixed_default: Option<f64>,
    /// `--idle-baseline node=N`: per node; wins over everything else.
    pub fixed: BTreeMap<String, f64>,
    /// Learned from idle windows (or restored from Prometheus at start).
    pub learned: BTreeMap<String, f64>,
}

impl IdleBaselines {
    /// The baseline used for `node`: a per-node flag, else the flag's
    /// default, else the learned value; `None` when nothing is known.
    pub fn get(&self, node: &str) -> Option<f64> {
        self.fixed
            .get(node)
            .copied()
            .or(self.fixed_default)
            .or_else(|| self.learned.get(node).copied())
    }

    /// Every node with a baseline, as [`IdleBaselines::get`] resolves it
    /// (nodes covered only by the flag's default are not listed).
    pub fn resolved(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = self
            .learned
            .keys()
            .filter_map(|n| self.get(n).map(|b| (n.clone(), b)))
            .collect();
        out.extend(self.fixed.iter().map(|(n, b)| (n.clone(), *b)));
        out
    }

    /// Adds restored baselines for nodes that have none learned yet.
    pub fn restore(&mut self, restored: &BTreeMap<String, f64>) {
        for (node, b) in restored {
            if b.is_finite() {
                self.learned
                    .entry(node.clone())
                    .or_insert_with(|| b.clamp(0.0, 100.0));
            }
        }
    }
}

/// Estimates each placed workload's load (see the module docs).
///
/// `fixed_load`, when given, is used for every workload. Otherwise a node
/// with an idle baseline gives `(average − baseline) ÷ analyzers` (never
/// below 0), one without gives the upper bound `average ÷ analyzers` marked
/// [`Estimate::Unknown`]. Workloads on nodes without an average get load 0
/// and cannot be moved by [`super::plan_moves`] anyway (their node is not
/// a known source).
pub fn estimate_loads(
    averages: &BTreeMap<String, f64>,
    placements: &[(WorkloadKey, String)],
    fixed_load: Option<f64>,
    idle: &IdleBaselines,
) -> Vec<Workload> {
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, node) in placements {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    placements
        .iter()
        .map(|(key, node)| {
            // per_node has an entry for every placement's node, ≥ 1.
            let n = per_node.get(node.as_str()).copied().unwrap_or(1).max(1) as f64;
            let (load, estimate) = match (fixed_load, averages.get(node), idle.get(node)) {
                (Some(fixed), _, _) => (fixed.max(0.0), Estimate::Fixed),
                (None, Some(avg), Some(base)) => ((avg - base).max(0.0) / n, Estimate::AboveIdle),
                (None, Some(avg), None) => ((avg / n).max(0.0), Estimate::Unknown),
                (None, None, _) => (0.0, Estimate::Unknown),
            };
            Workload {
                key: key.clone(),
                node: node.clone(),
                load,
                estimate,
            }
        })
        .collect()
}

/// Learns idle baselines from one window: every node with an average, no
/// posture workload placed on it and no `pending` move to or from it was
/// idle for the window, so its average is its baseline now (the latest
/// idle window wins: other programs on a board come and go). Returns the
/// nodes learned.
pub fn learn_idle(
    learned: &mut BTreeMap<String, f64>,
    averages: &BTreeMap<String, f64>,
    placements: &[(WorkloadKey, String)],
    pending: &[RecentMove],
) -> Vec<String> {
    let mut out = Vec::new();
    for (node, avg) in averages {
        let busy = placements.iter().any(|(_, n)| n == node)
            || pending.iter().any(|m| &m.from == node || &m.to == node);
        if !busy {
            learned.insert(node.clone(), avg.clamp(0.0, 100.0));
            out.push(node.clone());
        }
    }
    out
}
