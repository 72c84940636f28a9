//! GPU usage as policies see it: a snapshot of per-node utilisation samples,
//! each marked fresh, stale or missing. The `posture-gpu` crate builds these
//! from Prometheus; policies only read them.

use std::collections::BTreeMap;

use crate::model::Millis;

/// One utilisation reading, 0–100 %.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuSample {
    /// Utilisation in percent, validated to 0–100 by the source.
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
    /// The last good reading (kept, with a `Stale` state, when newer ones fail).
    pub sample: Option<GpuSample>,
    /// Whether `sample` may be acted on.
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
    /// Every node the source knows, by name.
    pub nodes: BTreeMap<String, NodeUsage>,
}

impl GpuSnapshot {
    /// A snapshot in which every listed node has a fresh reading sampled at
    /// `at` (dry runs, tests, fixed readings).
    pub fn from_fresh(at: Millis, usage: &[(&str, f64)]) -> Self {
        let nodes = usage
            .iter()
            .map(|(node, percent)| {
                let entry = NodeUsage {
                    sample: Some(GpuSample {
                        usage_percent: *percent,
                        sampled_at: at,
                    }),
                    state: UsageState::Ok,
                    error: None,
                };
                (node.to_string(), entry)
            })
            .collect();
        Self {
            taken_at: at,
            nodes,
        }
    }

    /// Usage of a node if its reading is fresh.
    pub fn usage(&self, node: &str) -> Option<f64> {
        self.nodes
            .get(node)
            .filter(|u| u.state == UsageState::Ok)
            .and_then(|u| u.sample)
            .map(|s| s.usage_percent)
    }

    /// A node's state; [`UsageState::Missing`] for a node the snapshot does
    /// not know (e.g. a cluster node no query covers).
    pub fn state(&self, node: &str) -> UsageState {
        self.nodes
            .get(node)
            .map_or(UsageState::Missing, |u| u.state)
    }

    /// Nodes whose reading cannot be used (stale or missing), sorted by
    /// name: what components report and skip.
    pub fn unusable(&self) -> impl Iterator<Item = (&str, &NodeUsage)> {
        self.nodes
            .iter()
            .filter(|(_, u)| u.state != UsageState::Ok)
            .map(|(n, u)| (n.as_str(), u))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(usage: Option<f64>, state: UsageState) -> NodeUsage {
        NodeUsage {
            sample: usage.map(|u| GpuSample {
                usage_percent: u,
                sampled_at: 0,
            }),
            state,
            error: None,
        }
    }

    #[test]
    fn only_fresh_readings_count() {
        let mut s = GpuSnapshot::default();
        s.nodes
            .insert("a".into(), entry(Some(20.0), UsageState::Ok));
        s.nodes
            .insert("b".into(), entry(Some(5.0), UsageState::Stale));
        s.nodes.insert("c".into(), entry(None, UsageState::Missing));
        assert_eq!(s.usage("a"), Some(20.0));
        assert_eq!(s.usage("b"), None, "stale keeps its value but is not used");
        assert_eq!(s.fresh().collect::<Vec<_>>(), [("a", 20.0)]);
        assert_eq!(s.state("b"), UsageState::Stale);
        assert_eq!(s.state("zzz"), UsageState::Missing);
        let bad: Vec<&str> = s.unusable().map(|(n, _)| n).collect();
        assert_eq!(bad, ["b", "c"]);
    }
}
