//! The scheduler's Prometheus metrics. Names follow kube-scheduler where a
//! peer exists (`scheduling_attempt_duration_seconds`, `pending_pods`,
//! `preemption_attempts_total`), under the `posture_scheduler_` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label: profile and result of a scheduling attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// `round-robin`, `gpu-least-loaded` or `priority`.
    pub profile: String,
    /// `scheduled`, `unschedulable`, `error`, `preempting`, `waiting`.
    pub result: String,
}

/// Label: which queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// `active`, `backoff`, `in_flight`.
    pub queue: String,
}

/// Label: a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why (a filter reason, `BindError`, …).
    pub reason: String,
}

/// Label: a result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// What came of it.
    pub result: String,
}

/// Every metric the scheduler exports. Cheap to clone (shared handles).
#[derive(Clone, Debug)]
pub struct SchedulerMetrics {
    /// Attempts by profile and result.
    pub attempts: Family<AttemptLabels, Counter>,
    /// Time to decide one unit (p50/p95/p99 derivable).
    pub attempt_duration: Histogram,
    /// Pod created → bind confirmed. `metadata.creationTimestamp` has
    /// one-second resolution, so this reads up to 1 s high (0.5 s on
    /// average): use [`SchedulerMetrics::sli_duration`] for latency.
    pub e2e_duration: Histogram,
    /// Pod first seen pending by the watch → bind confirmed, with
    /// millisecond resolution (kube-scheduler's
    /// `pod_scheduling_sli_duration_seconds`).
    pub sli_duration: Histogram,
    /// Pods waiting, by queue.
    pub pending_pods: Family<QueueLabels, Gauge>,
    /// Failed attempts by dominant filter reason.
    pub failures: Family<ReasonLabels, Counter>,
    /// Bind requests by outcome (`bound`, `already_bound`, `pod_gone`, `error`).
    pub binds: Family<ResultLabels, Counter>,
    /// Preemption attempts (one per `Preempt` decision carried out).
    pub preemptions: Counter,
    /// Pods evicted as preemption victims.
    pub preemption_victims: Counter,
    /// Gangs by result (`success`, `failure`).
    pub gangs: Family<ResultLabels, Counter>,
    /// Nodes by state (`ready`, `not_ready`, `cordoned`).
    pub nodes: Family<ReasonLabels, Gauge>,
    /// Share of schedulable nodes that hold at least one pod of ours (0–1000 ‰).
    pub node_utilization_permille: Gauge,
    /// Events/conditions that could not be written.
    pub event_errors: Counter,
    /// Reports dropped because the report queue was full.
    pub events_dropped: Counter,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        Self {
            attempts: Family::default(),
            // 10 µs … ~20 s
            attempt_duration: Histogram::new(exponential_buckets(0.00001, 2.0, 21)),
            // 1 ms … ~65 s
            e2e_duration: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            // 1 ms … ~65 s, four buckets per doubling around what matters.
            sli_duration: Histogram::new(exponential_buckets(0.001, 1.414, 33)),
            pending_pods: Family::default(),
            failures: Family::default(),
            binds: Family::default(),
            preemptions: Counter::default(),
            preemption_victims: Counter::default(),
            gangs: Family::default(),
            nodes: Family::default(),
            node_utilization_permille: Gauge::default(),
            event_errors: Counter::default(),
            events_dropped: Counter::default(),
        }
    }
}

impl SchedulerMetrics {
    /// Registers everything under `posture_scheduler_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("posture_scheduler");
        r.register(
            "schedule_attempts",
            "Scheduling attempts by profile and result",
            m.attempts.clone(),
        );
        r.register(
            "pod_scheduling_sli_duration_seconds",
            "Pod first seen pending by the watch to bind confirmed (millisecond resolution)",
            m.sli_duration.clone(),
        );
        r.register(
            "scheduling_attempt_duration_seconds",
            "Time to decide one scheduling unit",
            m.attempt_duration.clone(),
        );
        r.register(
            "pod_scheduling_duration_seconds",
            "Time from pod creation to confirmed binding",
            m.e2e_duration.clone(),
        );
        r.register(
            "pending_pods",
            "Pods waiting to be scheduled, by queue",
            m.pending_pods.clone(),
        );
        r.register(
            "failed_attempts",
            "Failed scheduling attempts by reason",
            m.failures.clone(),
        );
        r.register("binds", "Bind requests by outcome", m.binds.clone());
        r.register(
            "preemption_attempts",
            "Preemptions carried out",
            m.preemptions.clone(),
        );
        r.register(
            "preemption_victims",
            "Pods evicted to make room",
            m.preemption_victims.clone(),
        );
        r.register("gang_schedules", "Gang scheduling results", m.gangs.clone());
        r.register("nodes", "Nodes by state", m.nodes.clone());
        r.register(
            "node_utilization_permille",
            "Share of schedulable nodes holding a pod of this scheduler, in per mille",
            m.node_utilization_permille.clone(),
        );
        r.register(
            "event_errors",
            "Events or conditions that could not be written",
            m.event_errors.clone(),
        );
        r.register(
            "events_dropped",
            "Reports dropped because the queue was full",
            m.events_dropped.clone(),
        );
        m
    }

    /// Counts one attempt.
    pub fn attempt(&self, profile: &str, result: &str) {
        self.attempts
            .get_or_create(&AttemptLabels {
                profile: profile.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Sets a queue depth.
    pub fn queue_depth(&self, queue: &str, depth: usize) {
        self.pending_pods
            .get_or_create(&QueueLabels {
                queue: queue.to_string(),
            })
            .set(depth as i64);
    }

    /// Counts a failure reason.
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a bind outcome.
    pub fn bind(&self, result: &str) {
        self.binds
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a gang result.
    pub fn gang(&self, result: &str) {
        self.gangs
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }
}
