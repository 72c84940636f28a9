//! # posture-k8s — the Kubernetes edge of posture-farm
//!
//! Thin I/O around the pure core: convert API objects into the core's model,
//! keep the cluster index fed from watches, carry out plans (bind, evict,
//! nominate, patch, apply) and record Events. No decision is made here.
//!
//! ```text
//!  kube watcher(nodes) ─┐                          ┌─► binder (pods/binding, bounded concurrency)
//!  kube watcher(pods) ──┴─► convert ─► runtime loop ┼─► events (Scheduled / FailedScheduling)
//!                                 (posture_core::Profile) └─► preempt (Eviction API, nominatedNodeName)
//! ```
//!
//! Modules: [`convert`] (API objects → core model), [`runtime`] (the
//! scheduling loop), [`binder`], [`events`], [`metrics`]; placement and
//! operations helpers: [`place`], [`gpu_state`], [`balance`], [`preempt`], [`podgroup`], [`ops`].

pub mod balance;
pub mod binder;
pub mod convert;
pub mod events;
pub mod gpu_state;
pub mod metrics;
pub mod ops;
pub mod place;
pub mod podgroup;
pub mod preempt;
pub mod runtime;

#[cfg(test)]
pub(crate) mod test_support;
