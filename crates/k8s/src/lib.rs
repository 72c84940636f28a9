//! # posture-k8s — the Kubernetes edge of posture-farm
//!
//! Thin I/O around the pure core: convert API objects into the core's model,
//! keep the cluster index fed from watches, carry out plans (bind, evict,
//! nominate, patch, apply) and record Events. No decision is made here.
//! Folder names mirror `posture-core`: the decision lives in
//! `posture_core::<x>`, where it is carried out lives in `posture_k8s::<x>`.
//!
//! ```text
//!  scheduler/  watch ─► convert ─► runtime (posture_core::Profile) ─► actuator ─► binder · preempt
//!                                      └─► events (Scheduled / FailedScheduling)
//!  balancer/   discover ─► posture_core::balance::plan_moves ─► mover (patch / recreate) ─► Event
//!  place       posture_core::spread plan ─► pin manifests ─► server-side apply
//!  ops/        up (render ─► plan ─► apply ─► wait) · status · down (collect ─► teardown)
//!  lease/      LeaderElector (Lease: get ─► posture_core::lease::Elector ─► create / replace@resourceVersion)
//!              ─► LeaderGate: only the leader's scheduler binds and its balancer moves
//!  demo/       script (pods, PriorityClasses) ─► create ─► watch Events ─► narrate ─► clean up
//!  workload    the shared vocabulary: ScaledJob resource, gpu-node label and pinning,
//!              field manager, is_not_found, label_gpu_nodes (used by all of the above)
//! ```
//!
//! Rooms: [`scheduler`] (the scheduling loop and what it needs), [`balancer`]
//! (the GPU balancer's discovery, mover, loop and metrics), [`place`]
//! (pinning Job/ScaledJob manifests), [`ops`] (`up`, `status`, `down`),
//! [`demo`] (`demo preemption`), [`lease`] (leader election for the
//! scheduler and the balancer) and the ground floor [`workload`].

pub mod balancer;
pub mod demo;
pub mod lease;
pub mod ops;
pub mod place;
pub mod scheduler;
pub mod workload;

#[cfg(test)]
pub(crate) mod test_support;
