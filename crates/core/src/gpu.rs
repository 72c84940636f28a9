//! GPU usage as policies see it: a snapshot of per-node utilisation samples,
//! each marked fresh, stale or missing. The `posture-gpu` crate builds these
//! from Prometheus; policies only read them.

use std::collections::BTreeMap;

use crate::model::Millis;

/// One utilisation reading, 0–100 %.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuSample {
    pub usage_percent: f64,
    /// When Prometheus sampled it (not when we asked).
    pub sampled_at: Millis,
}

/// Whether a node's reading can be used for placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UsageState {
    /// Fresh enough to act on.
    Ok,
    /// Older than the staleness bound, or the last query failed.
    Stale,
    /// No reading at all.
    Missing,
}

impl UsageState {
    /// Lower-case name for tables, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Stale => "stale",
            Self::Missing => "missing",
        }
    }
}

/// A node's entry in a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeUsage {
    pub sample: Option<GpuSample>,
    pub state: UsageState,
    /// Why the reading is stale or missing, when known.
    pub error: Option<String>,
}

/// Per-node GPU usage at one moment. Policy rule (documented in the README):
/// only nodes whose state is [`UsageState::Ok`] are eligible for GPU-aware
/// placement; stale and missing nodes are reported and skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuSnapshot {
    /// When the snapshot was assembled.
    pub taken_at: Millis,
    pub nodes: BTreeMap<String, NodeUsage>,
}

impl GpuSnapshot {
    /// Usage of a node if its reading is fresh.
    pub fn usage(&self, node: &str) -> Option<f64> {
        self.nodes
            .get(node)
            .filter(|u| u.state == UsageState::Ok)
            .and_then(|u| u.sample)
            .map(|s| s.usage_percent)
    }

    /// Nodes with fresh readings and their usage, sorted by name.
    pub fn fresh(&self) -> impl Iterator<Item = (&str, f64)> {
        self.nodes.iter().filter_map(|(n, u)| {
            (u.state == UsageState::Ok)
                .then_some(u.sample)
                .flatten()
                .map(|s| (n.as_str(), s.usage_percent))
        })
    }
}
