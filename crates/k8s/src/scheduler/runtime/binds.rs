//! What the loop does with bind answers: bound, someone else's, gone, or
//! retry — a gang member on its reserved node (issue 11.7), anything else
//! decided again.

use posture_core::{Binding, Millis};

use super::{Scheduler, flight_key};
use crate::scheduler::binder::BindOutcome;
use crate::scheduler::events::{PodRef, Report};

impl Scheduler {
    /// What a bind answered: bound, someone else's, gone, or retry.
    pub(super) fn bind_done(
        &mut self,
        binding: Binding,
        uid: String,
        created_at: Millis,
        outcome: BindOutcome,
    ) {
        let now = self.clock.now();
        self.binds_in_flight = self.binds_in_flight.saturating_sub(1);
        self.in_flight.remove(&flight_key(&binding.pod, &uid));
        self.metrics.bind(outcome.label());
        if self.cluster.pod(&binding.pod).is_some_and(|p| p.uid != uid) {
            // The pod was deleted and recreated under the same name while
            // this bind was in flight: the answer is about the old pod. The
            // new one is queued on its own and must not be touched.
            tracing::info!(pod = %binding.pod, old_uid = %uid, outcome = outcome.label(), "bind answer for a replaced pod; ignored");
            return;
        }
        match outcome {
            BindOutcome::Bound => {
                tracing::info!(pod = %binding.pod, node = %binding.node, "bound");
                self.queue.done(&binding.pod);
                self.last_failure.remove(&binding.pod);
                self.preempting.remove(&binding.pod);
                if created_at > 0 {
                    self.metrics
                        .e2e_duration
                        .observe(((now - created_at).max(0) as f64) / 1000.0);
                }
                if let Some(seen) = self.first_seen.remove(&flight_key(&binding.pod, &uid)) {
                    self.metrics
                        .sli_duration
                        .observe(((now - seen).max(0) as f64) / 1000.0);
                }
                self.profile.bound(&binding, now);
                self.reports.send(Report::Scheduled {
                    pod: PodRef {
                        key: binding.pod.clone(),
                        uid,
                    },
                    node: binding.node,
                });
            }
            BindOutcome::AlreadyBound(msg) => {
                tracing::info!(pod = %binding.pod, %msg, "already bound by someone else; skipped");
                self.queue.remove(&binding.pod);
                self.cluster.forget(&binding.pod);
            }
            BindOutcome::PodGone => {
                tracing::info!(pod = %binding.pod, "pod deleted before binding; skipped");
                self.queue.remove(&binding.pod);
                self.cluster.remove_pod(&binding.pod);
            }
            BindOutcome::Failed(err) => self.bind_failed(binding, &uid, &err, now),
        }
    }

    /// A bind failed (not 409/404): retry with backoff. A gang member keeps
    /// its node reserved and is retried there, so the gang stays whole
    /// (issue 11.7); any other pod is decided again.
    fn bind_failed(&mut self, binding: Binding, uid: &str, err: &kube::Error, now: Millis) {
        tracing::warn!(pod = %binding.pod, node = %binding.node, %err, "bind failed; will retry");
        self.metrics.failure("BindError");
        let Some(pod) = self.cluster.pod(&binding.pod) else {
            return;
        };
        let (priority, created_at) = (pod.priority, pod.created_at);
        let group = pod
            .group
            .as_ref()
            .filter(|_| self.profile.gang_aware())
            .map(|g| g.name.clone());
        let mut message = format!("Binding rejected: {err}");
        match group {
            Some(group) => {
                // The assumption stays: nothing else is placed on the node.
                let ns = &binding.pod.namespace;
                let bound = self.cluster.bound_group_members(ns, &group);
                message.push_str(&format!(
                    "; retrying on its reserved node {} (pod group {ns}/{group}: {} member(s) bound or binding)",
                    binding.node,
                    bound.saturating_sub(1)
                ));
                self.reserved.insert(binding.pod.clone(), binding.clone());
            }
            None => {
                self.cluster.forget(&binding.pod);
                self.profile.bind_failed(&binding);
            }
        }
        // Queued again even if a backoff timer fired meanwhile and dropped it.
        if !self.queue.contains(&binding.pod) {
            self.queue.add(binding.pod.clone(), priority, created_at);
            self.queue.take(&binding.pod);
        }
        self.queue.backoff(&binding.pod, now, &mut self.rng);
        self.report_failure(&binding.pod, uid, &message);
    }

    /// Re-issues the bind of a gang member on its reserved node. `false`
    /// when the reservation no longer holds (the node is gone): the member
    /// is then decided again like any pending pod.
    pub(super) fn retry_reserved(&mut self, binding: Binding) -> bool {
        let Some(pod) = self
            .cluster
            .pod(&binding.pod)
            .filter(|p| p.uid == binding.uid)
        else {
            return false;
        };
        let created_at = pod.created_at;
        if self.cluster.node(&binding.node).is_none() {
            tracing::info!(pod = %binding.pod, node = %binding.node, "reserved node is gone; deciding again");
            self.cluster.forget(&binding.pod);
            return false;
        }
        let uid = binding.uid.clone();
        self.issue_bind(binding, uid, created_at);
        true
    }
}
