//! The second fence of leader election: an [`Actuator`] that checks the
//! [`LeaderGate`] when each request is about to go out, not when it was
//! decided. The loop already stops popping its queue when it stops leading;
//! this catches what was decided just before (an eviction queued behind a
//! nomination, a bind polled late), so a replica past its renew deadline
//! never writes.

use std::sync::Arc;

use futures::future::BoxFuture;
use posture_core::{Binding, Eviction, Nomination, PodKey};

use super::actuator::{Actuator, EvictResult};
use super::binder::BindOutcome;
use super::preempt::PreemptError;
use crate::lease::LeaderGate;

/// Why a request was not sent.
#[derive(Debug, thiserror::Error)]
#[error("not sent: this replica no longer holds the leader lease")]
pub struct NotLeader;

fn not_leader() -> Box<kube::Error> {
    Box::new(kube::Error::Service(Box::new(NotLeader)))
}

fn nomination_refused(pod: PodKey, node: Option<String>) -> PreemptError {
    PreemptError::Nominate {
        pod,
        node,
        source: not_leader(),
    }
}

/// Wraps an actuator: every call is refused while the gate says this
/// replica may not act.
pub struct FencedActuator {
    inner: Arc<dyn Actuator>,
    gate: LeaderGate,
}

impl FencedActuator {
    /// `inner`, fenced by `gate`.
    pub fn new(inner: Arc<dyn Actuator>, gate: LeaderGate) -> Self {
        Self { inner, gate }
    }
}

impl Actuator for FencedActuator {
    fn bind(&self, binding: &Binding) -> BoxFuture<'static, BindOutcome> {
        let (inner, gate, binding) = (self.inner.clone(), self.gate.clone(), binding.clone());
        Box::pin(async move {
            if !gate.acting() {
                return BindOutcome::Failed(*not_leader());
            }
            inner.bind(&binding).await
        })
    }

    fn evict(&self, eviction: &Eviction) -> BoxFuture<'static, EvictResult> {
        let (inner, gate, eviction) = (self.inner.clone(), self.gate.clone(), eviction.clone());
        Box::pin(async move {
            if !gate.acting() {
                return EvictResult::Failed(PreemptError::Evict {
                    pod: eviction.pod.clone(),
                    node: eviction.node.clone(),
                    source: not_leader(),
                });
            }
            inner.evict(&eviction).await
        })
    }

    fn nominate(&self, nomination: &Nomination) -> BoxFuture<'static, Result<(), PreemptError>> {
        let (inner, gate, nomination) = (self.inner.clone(), self.gate.clone(), nomination.clone());
        Box::pin(async move {
            if !gate.acting() {
                return Err(nomination_refused(
                    nomination.pod.clone(),
                    Some(nomination.node.clone()),
                ));
            }
            inner.nominate(&nomination).await
        })
    }

    fn clear_nomination(&self, pod: &PodKey) -> BoxFuture<'static, Result<(), PreemptError>> {
        let (inner, gate, pod) = (self.inner.clone(), self.gate.clone(), pod.clone());
        Box::pin(async move {
            if !gate.acting() {
                return Err(nomination_refused(pod, None));
            }
            inner.clear_nomination(&pod).await
        })
    }
}
