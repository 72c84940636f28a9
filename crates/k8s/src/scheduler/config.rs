//! The loop's settings: which pods it watches ([`PodScope`]) and how it
//! binds and retries ([`RuntimeConfig`]).

use std::time::Duration;

use posture_core::backoff::Backoff;

/// Which pods the loop watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodScope {
    /// Only pending pods of ours (`spec.nodeName=`): round-robin, GPU.
    Pending,
    /// Every pod of ours, pending and bound: one-pod-per-node capacity.
    Ours,
    /// Every pod of ours plus every running pod bound anywhere: resource fit.
    OursAndAllBound,
}

/// Loop settings.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// `spec.schedulerName` we answer to.
    pub scheduler_name: String,
    /// Namespace to watch; `None` for all namespaces.
    pub namespace: Option<String>,
    /// Label selector for our pods; `None` or empty for all.
    pub label_selector: Option<String>,
    /// Which pods the loop watches.
    pub scope: PodScope,
    /// Bind requests in flight at most. Bounded so a burst of 10,000 pods
    /// does not open 10,000 requests; high enough that the API server, not
    /// the scheduler, is the limit.
    pub bind_concurrency: usize,
    /// Retry delays after a failed attempt.
    pub backoff: Backoff,
    /// Seed of the RNG used for backoff jitter.
    pub seed: u64,
    /// How long a preemptor waits for its victims before it is retried anyway.
    pub preemption_wait: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            scheduler_name: "rr-scheduler".into(),
            namespace: Some("default".into()),
            label_selector: Some("app=posture".into()),
            scope: PodScope::Pending,
            bind_concurrency: 64,
            backoff: Backoff::default(),
            seed: 0,
            preemption_wait: Duration::from_secs(30),
        }
    }
}
