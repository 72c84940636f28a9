//! The loop's settings: which pods it watches ([`PodScope`]) and how it
//! binds and retries ([`RuntimeConfig`]).

use std::time::Duration;

use posture_core::backoff::Backoff;
use posture_core::model::{LabelSelector, LabelSelectorError, Ownership, PriorityAnnotationPolicy};

use super::convert::PodReader;

/// Which pods the loop watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodScope {
    /// Every pod of ours, pending and bound (server-side selection by
    /// scheduler name, namespace and labels): one-pod-per-node capacity,
    /// which counts only our pods.
    Ours,
    /// Every unfinished pod in the cluster, in one watch (as kube-scheduler
    /// does): ours are picked in-process ([`Ownership`]), every bound pod
    /// counts against its node's allocatable. Round-robin, GPU and
    /// resource-fit, the profiles that check requests. One stream, so a
    /// pod's move from pending to bound arrives in order.
    All,
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
    /// Namespaces where the `priority` annotation is honoured (`*` = all).
    pub priority_annotation_namespaces: Vec<String>,
}

impl RuntimeConfig {
    /// How the loop reads pods: which are ours (scheduler name, namespace,
    /// label selector) and where the `priority` annotation counts. Fails on
    /// a malformed label selector.
    pub fn reader(&self) -> Result<PodReader, LabelSelectorError> {
        let selector = match self.label_selector.as_deref() {
            Some(s) => LabelSelector::parse(s)?,
            None => LabelSelector::default(),
        };
        Ok(PodReader {
            ownership: Ownership {
                scheduler_name: self.scheduler_name.clone(),
                namespace: self.namespace.clone(),
                selector,
            },
            annotation_policy: PriorityAnnotationPolicy {
                namespaces: self.priority_annotation_namespaces.clone(),
            },
        })
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            scheduler_name: "rr-scheduler".into(),
            namespace: Some("default".into()),
            label_selector: Some("app=posture".into()),
            scope: PodScope::All,
            bind_concurrency: 64,
            backoff: Backoff::default(),
            seed: 0,
            preemption_wait: Duration::from_secs(30),
            priority_annotation_namespaces: Vec::new(),
        }
    }
}
