//! # posture-core — the pure heart of posture-farm
//!
//! Everything here is a *decision*: a function of a snapshot (nodes, pods, GPU
//! usage samples, time and randomness handed in by the caller) that returns a
//! plan. Nothing here performs I/O, reads a clock or draws entropy of its own;
//! the Kubernetes, Prometheus, gRPC and MQTT edges live in other crates and
//! feed this one.
//!
//! ```text
//!  watch events ──► cluster::Cluster (index) ─┐
//!  Prometheus ────► gpu::GpuSnapshot ─────────┼─► policy::<profile> ─► framework::Decision (binds, evictions, nominations)
//!  queue::SchedulingQueue (active/backoff) ───┘
//!
//!  spread::plan_even_spread   (initial placement of N workloads over M nodes)
//!  balance::plan_moves        (balancer: at most one move per overloaded node)
//!  scaler::Activity           (KEDA IsActive with debounce)
//!  lease::Elector             (leader election on a Lease record: acquire, renew, fence, release)
//!  posture::*                 (neck/torso angles, Good/Bad)
//! ```
//!
//! Where to find the scheduler's decision logic: [`policy`] (one module per
//! profile), [`filter`] (node feasibility shared by all profiles) and
//! [`framework`] (the trait every profile implements). [`error_chain`] is
//! the one shared utility: an error and its causes on one line, for logs.

pub mod backoff;
pub mod balance;
pub mod cluster;
pub mod error;
pub mod filter;
pub mod framework;
pub mod gpu;
pub mod lease;
pub mod model;
pub mod policy;
pub mod posture;
pub mod queue;
pub mod scaler;
pub mod spread;

#[cfg(test)]
pub(crate) mod fixtures;

pub use cluster::Cluster;
pub use error::error_chain;
pub use framework::{Binding, Decision, Eviction, Nomination, Profile, SchedulingContext};
pub use model::{Millis, NodeInfo, PodInfo, PodKey};
