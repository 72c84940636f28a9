//! The scheduling framework every profile plugs into:
//!
//! ```text
//! queue (active/backoff) ─► pop unit ─► Profile::schedule(cluster, unit, ctx) ─► Decision
//!        ▲                                                                      │
//!        └──── backoff / move-to-active on cluster change ◄── bind results ◄────┘ (I/O crate)
//! ```
//!
//! A profile filters nodes (see [`crate::filter`]), picks, and returns a
//! [`Decision`]: bindings to issue, or evictions and nominations to make
//! room, or why the unit cannot be placed now. It performs none of them.

use crate::cluster::Cluster;
use crate::filter::FilterSummary;
use crate::gpu::GpuSnapshot;
use crate::model::{Millis, PodInfo, PodKey};

/// What a decision may look at besides the cluster index.
#[derive(Clone, Copy, Debug, Default)]
pub struct SchedulingContext<'a> {
    /// The current time, as the caller's clock says.
    pub now: Millis,
    /// Latest GPU usage snapshot, when the profile uses one.
    pub gpu: Option<&'a GpuSnapshot>,
}

/// Bind `pod` to `node` (the `pods/binding` subresource).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Binding {
    /// The pod to bind.
    pub pod: PodKey,
    /// The `metadata.uid` of the pod the decision was made for: sent in the
    /// Binding so the API server refuses it (409) when a pod of the same
    /// name was recreated meanwhile, as kube-scheduler does.
    pub uid: String,
    /// The node to bind it to.
    pub node: String,
}

/// Evict `pod` from `node` to make room for `preemptor` (the Eviction API).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Eviction {
    /// The victim.
    pub pod: PodKey,
    /// The victim's `metadata.uid`: sent as `deleteOptions.preconditions.uid`,
    /// so a pod recreated under the victim's name is never evicted instead.
    pub uid: String,
    /// The node it runs on.
    pub node: String,
    /// The pod the room is made for.
    pub preemptor: PodKey,
}

/// Set `status.nominatedNodeName` of `pod` to `node`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Nomination {
    /// The preemptor.
    pub pod: PodKey,
    /// The node held for it.
    pub node: String,
}

/// The outcome of one scheduling attempt for a unit (a pod, or a gang).
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Bind these pods: one for a single pod, every member for a gang.
    Bind(Vec<Binding>),
    /// Make room first: evict the victims and nominate the unit's pods; the
    /// unit is retried once the victims are gone.
    Preempt {
        /// Victims to evict.
        evictions: Vec<Eviction>,
        /// Nominations of the unit's pods to the freed nodes.
        nominations: Vec<Nomination>,
        /// Why, for logs.
        message: String,
    },
    /// Fits nowhere now: retried with backoff, or at once when the cluster
    /// changes so it may fit.
    Unschedulable {
        /// The FailedScheduling text (kube-scheduler's wording).
        message: String,
        /// Rejections counted by reason (metric labels).
        summary: FilterSummary,
    },
    /// Not ready to decide (a gang still missing members): retry at `retry_at`
    /// without counting a failed attempt.
    Wait {
        /// When to try again.
        retry_at: Millis,
        /// Why, for logs.
        message: String,
    },
}

/// A scheduling profile: one policy behind the common loop.
pub trait Profile: Send {
    /// Profile name for logs and metrics (`round-robin`, `gpu-least-loaded`, `priority`).
    fn name(&self) -> &'static str;

    /// Whether pods of a gang are handed over together. When `true`, the loop
    /// passes every pending member of the popped pod's group as the unit.
    fn gang_aware(&self) -> bool {
        false
    }

    /// Decides for one unit. `unit` is never empty.
    fn schedule(
        &mut self,
        cluster: &Cluster,
        unit: &[&PodInfo],
        ctx: &SchedulingContext<'_>,
    ) -> Decision;

    /// The API confirmed a binding this profile decided.
    fn bound(&mut self, _binding: &Binding, _now: Millis) {}

    /// A binding this profile decided failed (not a 409 "already bound").
    fn bind_failed(&mut self, _binding: &Binding) {}

    /// Whether a new GPU usage snapshot may let a waiting pod fit where the
    /// previous one did not (a node became eligible), so waiting pods are
    /// retried at once; otherwise their backoff stands. Profiles that do
    /// not look at GPU usage never gain anything from a new snapshot.
    fn gpu_may_fit_more(&self, _before: Option<&GpuSnapshot>, _after: &GpuSnapshot) -> bool {
        false
    }

    /// Problems with the profile's configuration against the current
    /// cluster (e.g. an ordered node that does not exist), for the runtime
    /// to log once each.
    fn config_warnings(&self, _cluster: &Cluster) -> Vec<String> {
        Vec::new()
    }
}
