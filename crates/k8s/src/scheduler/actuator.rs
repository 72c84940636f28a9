//! The loop's hands: the [`Actuator`] seam (bind, evict, nominate, clear a
//! nomination) and its
//! production implementation [`KubeActuator`]. Errors stay typed across the
//! seam ([`PreemptError`], `kube::Error` inside [`BindOutcome`]), so the loop
//! logs and reports the whole cause chain.

use futures::future::BoxFuture;
use kube::Client;
use posture_core::{Binding, Eviction, Nomination, PodKey};

use super::binder::{self, BindOutcome};
use super::preempt::{self, EvictOutcome, PreemptError};

/// What became of one eviction.
#[derive(Debug)]
pub enum EvictResult {
    /// Accepted: the pod will terminate.
    Evicted,
    /// Already gone.
    Gone,
    /// Refused (a PodDisruptionBudget): try another plan or back off. The
    /// server's explanation.
    Refused(String),
    /// Any other error.
    Failed(PreemptError),
}

/// The loop's hands: everything it does to the cluster. Production uses
/// [`KubeActuator`]; tests supply an in-memory one.
pub trait Actuator: Send + Sync + 'static {
    /// Binds a pod to a node.
    fn bind(&self, binding: &Binding) -> BoxFuture<'static, BindOutcome>;
    /// Evicts a victim.
    fn evict(&self, eviction: &Eviction) -> BoxFuture<'static, EvictResult>;
    /// Sets `status.nominatedNodeName`.
    fn nominate(&self, nomination: &Nomination) -> BoxFuture<'static, Result<(), PreemptError>>;
    /// Clears `status.nominatedNodeName` (a preemption was abandoned).
    fn clear_nomination(&self, pod: &PodKey) -> BoxFuture<'static, Result<(), PreemptError>>;
}

/// The actuator that talks to the API server.
#[derive(Clone)]
pub struct KubeActuator {
    /// The client every call goes through (for preemption, one built with
    /// [`preempt::client_without_retry`]).
    pub client: Client,
}

impl Actuator for KubeActuator {
    fn bind(&self, binding: &Binding) -> BoxFuture<'static, BindOutcome> {
        let client = self.client.clone();
        let binding = binding.clone();
        Box::pin(async move { binder::bind(&client, &binding).await })
    }

    fn evict(&self, eviction: &Eviction) -> BoxFuture<'static, EvictResult> {
        let client = self.client.clone();
        let eviction = eviction.clone();
        Box::pin(async move {
            match preempt::evict(&client, &eviction).await {
                Ok(EvictOutcome::Evicted) => EvictResult::Evicted,
                Ok(EvictOutcome::AlreadyGone) => EvictResult::Gone,
                Ok(EvictOutcome::Refused { reason }) => EvictResult::Refused(reason),
                Err(err) => EvictResult::Failed(err),
            }
        })
    }

    fn nominate(&self, nomination: &Nomination) -> BoxFuture<'static, Result<(), PreemptError>> {
        let client = self.client.clone();
        let nomination = nomination.clone();
        Box::pin(async move { preempt::nominate(&client, &nomination).await })
    }

    fn clear_nomination(&self, pod: &PodKey) -> BoxFuture<'static, Result<(), PreemptError>> {
        let client = self.client.clone();
        let pod = pod.clone();
        Box::pin(async move { preempt::clear_nomination(&client, &pod).await })
    }
}
