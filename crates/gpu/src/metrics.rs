//! Metrics an operator watches for the usage source, registered under the
//! `gpu` prefix: per-node usage, sample age and state, unusable readings by
//! reason, and poll counters.

use posture_core::gpu::{NodeUsage, UsageState};
use posture_core::model::Millis;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    node: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Handles to the source's metrics. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SourceMetrics {
    usage: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    age: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    state: Family<StateLabels, Gauge>,
    errors: Family<ReasonLabels, Counter>,
    polls: Counter,
    polls_with_data: Counter,
    last_ok: Gauge<f64, AtomicU64>,
}

impl SourceMetrics {
    /// Creates the metrics and registers them under `gpu_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("gpu");
        r.register(
            "usage_percent",
            "Last good GPU utilisation per node (0-100)",
            m.usage.clone(),
        );
        r.register(
            "sample_age_seconds",
            "Age of the last good GPU usage sample per node",
            m.age.clone(),
        );
        r.register(
            "node_state",
            "1 for the node's current usage state (ok, stale, missing)",
            m.state.clone(),
        );
        r.register(
            "reading_errors",
            "Node readings that could not be used, by reason (unreachable, timeout, query, http, decode, no_sample, ambiguous, nan, out_of_range, stale)",
            m.errors.clone(),
        );
        r.register("polls", "Polls of Prometheus", m.polls.clone());
        r.register(
            "polls_with_data",
            "Polls where at least one node had a fresh reading",
            m.polls_with_data.clone(),
        );
        r.register(
            "last_fresh_poll_timestamp_seconds",
            "When a poll last gave at least one fresh reading",
            m.last_ok.clone(),
        );
        m
    }

    pub(crate) fn node(&self, node: &str, usage: &NodeUsage, now: Millis) {
        let labels = NodeLabels {
            node: node.to_string(),
        };
        if let Some(s) = usage.sample {
            self.usage.get_or_create(&labels).set(s.usage_percent);
            self.age
                .get_or_create(&labels)
                .set(now.saturating_sub(s.sampled_at) as f64 / 1000.0);
        }
        for st in [UsageState::Ok, UsageState::Stale, UsageState::Missing] {
            self.state
                .get_or_create(&StateLabels {
                    node: node.to_string(),
                    state: st.as_str().to_string(),
                })
                .set(i64::from(st == usage.state));
        }
    }

    pub(crate) fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn polled(&self, any_fresh: bool, now: Millis) {
        self.polls.inc();
        if any_fresh {
            self.polls_with_data.inc();
            self.last_ok.set(now as f64 / 1000.0);
        }
    }
}
