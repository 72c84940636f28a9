//! What an operator watches on the balancer, registered under `balance_`:
//! decisions by outcome, moves by kind and result, overloaded nodes left as
//! they are, per-node window averages.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use posture_core::balance::{BalancePlan, WorkloadKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `{outcome}`: stable, rebalancing, all_overloaded, no_data.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The plan's outcome.
    pub outcome: &'static str,
}

/// `{kind, result}` of a move.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MoveLabels {
    /// `scaledjob` or `job`.
    pub kind: &'static str,
    /// `applied`, `failed` or `dry_run`.
    pub result: &'static str,
}

/// `{reason}` an overloaded node got no move.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StuckLabels {
    /// Why nothing moved off it.
    pub reason: &'static str,
}

/// `{node}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// Node name.
    pub node: String,
}

/// What a move came to, for [`BalanceMetrics::moved`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveResult {
    /// Carried out.
    Applied,
    /// Tried and failed (re-planned next window).
    Failed,
    /// Only printed (`--dry-run`).
    DryRun,
}

impl MoveResult {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::DryRun => "dry_run",
        }
    }
}

/// The balancer's metrics.
#[derive(Clone, Debug, Default)]
pub struct BalanceMetrics {
    /// Decisions by outcome (stable, rebalancing, all_overloaded, no_data).
    loops: Family<OutcomeLabels, Counter>,
    /// Moves by workload kind and result (applied, failed, dry_run).
    moves: Family<MoveLabels, Counter>,
    /// Overloaded nodes left without a move, by reason.
    stuck: Family<StuckLabels, Counter>,
    /// Windowed average GPU usage per node at the last decision.
    average: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    /// Overloaded nodes at the last decision.
    overloaded: Gauge,
    /// Moves counted as in progress at the last decision.
    pending: Gauge,
    /// Learned idle baseline per node.
    idle: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    /// Failed cluster reads (the loop retries next window).
    discovery_errors: Counter,
}

impl BalanceMetrics {
    /// Registers under the `balance_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("balance");
        r.register("loops", "Balancing decisions by outcome", m.loops.clone());
        r.register(
            "moves",
            "Workload moves by kind and result",
            m.moves.clone(),
        );
        r.register(
            "stuck",
            "Overloaded nodes without a move, by reason",
            m.stuck.clone(),
        );
        r.register(
            "node_average_usage_percent",
            "Windowed average GPU usage per node at the last decision",
            m.average.clone(),
        );
        r.register(
            "overloaded_nodes",
            "Nodes above the threshold at the last decision",
            m.overloaded.clone(),
        );
        r.register(
            "pending_moves",
            "Moves not shown by the readings yet, counted at the last decision",
            m.pending.clone(),
        );
        r.register(
            "node_idle_baseline_percent",
            "GPU usage a node shows with no posture workload, learned from idle windows (restored at start by --idle-baseline-query)",
            m.idle.clone(),
        );
        r.register(
            "discovery_errors",
            "Failed reads of the posture workloads from the API server",
            m.discovery_errors.clone(),
        );
        m
    }

    /// Counts a decision and records the window it was made on.
    pub fn observe(&self, plan: &BalancePlan, averages: &BTreeMap<String, f64>) {
        self.loops
            .get_or_create(&OutcomeLabels {
                outcome: plan.outcome.as_str(),
            })
            .inc();
        for (_, reason) in &plan.stuck {
            self.stuck
                .get_or_create(&StuckLabels {
                    reason: reason.as_str(),
                })
                .inc();
        }
        for (node, avg) in averages {
            self.average
                .get_or_create(&NodeLabels { node: node.clone() })
                .set(*avg);
        }
        self.overloaded
            .set(i64::try_from(plan.overloaded.len()).unwrap_or(i64::MAX));
        self.pending
            .set(i64::try_from(plan.pending.len()).unwrap_or(i64::MAX));
    }

    /// Records the learned idle baselines.
    pub fn idle_baselines(&self, learned: &BTreeMap<String, f64>) {
        for (node, b) in learned {
            self.idle
                .get_or_create(&NodeLabels { node: node.clone() })
                .set(*b);
        }
    }

    /// Counts one move of a `kind` workload.
    pub fn moved(&self, kind: WorkloadKind, result: MoveResult) {
        self.moves
            .get_or_create(&MoveLabels {
                kind: kind.as_str(),
                result: result.as_str(),
            })
            .inc();
    }

    /// Counts a failed read of the workloads.
    pub fn discovery_failed(&self) {
        self.discovery_errors.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posture_core::balance::Outcome;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn typed_labels_encode_as_before() {
        let mut registry = Registry::default();
        let m = BalanceMetrics::register(&mut registry);
        let plan = BalancePlan {
            outcome: Outcome::Stable,
            moves: Vec::new(),
            stuck: Vec::new(),
            overloaded: Vec::new(),
            pending: Vec::new(),
            projected: BTreeMap::new(),
        };
        m.observe(&plan, &BTreeMap::from([("agx".to_string(), 42.5)]));
        m.idle_baselines(&BTreeMap::from([("agx".to_string(), 12.5)]));
        m.moved(WorkloadKind::ScaledJob, MoveResult::DryRun);
        m.discovery_failed();
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "balance_loops_total{outcome=\"stable\"} 1",
            "balance_moves_total{kind=\"scaledjob\",result=\"dry_run\"} 1",
            "balance_node_average_usage_percent{node=\"agx\"} 42.5",
            "balance_overloaded_nodes 0",
            "balance_pending_moves 0",
            "balance_node_idle_baseline_percent{node=\"agx\"} 12.5",
            "balance_discovery_errors_total 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
