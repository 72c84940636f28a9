//! The scheduler wing: the loop that carries out
//! [`posture_core::Profile`] decisions, and everything it needs around it.
//!
//! ```text
//!  watch (nodes, pods, PodGroups) ─► convert ─► runtime (Cluster + Queue ─► Profile) ─► actuator
//!                                                  │                                   ├► binder   (pods/binding)
//!                                                  └► events (Scheduled, FailedScheduling) └► preempt (Eviction API, nominatedNodeName)
//! ```
//!
//! Rooms: [`runtime`] (the loop only), [`config`] ([`PodScope`],
//! [`RuntimeConfig`]), [`watch`] (the streams), [`actuator`] ([`Actuator`],
//! [`KubeActuator`], [`EvictResult`]); beside them [`binder`], [`events`],
//! [`preempt`], [`podgroup`], [`convert`] (API objects → core model),
//! [`gpu_state`] (the GPU profile's last choice in a ConfigMap),
//! [`metrics`], [`loadmodel`] (time to bind, measured on the real loop),
//! and for leader election [`fence`] (the actuator refusing to act for a
//! follower) and [`handover`] (a profile's position carried from one leader
//! to the next).

pub mod actuator;
pub mod binder;
pub mod config;
pub mod convert;
pub mod events;
pub mod fence;
pub mod gpu_state;
pub mod handover;
pub mod loadmodel;
pub mod metrics;
pub mod podgroup;
pub mod preempt;
pub mod runtime;
pub mod watch;

pub use actuator::{Actuator, EvictResult, KubeActuator};
pub use config::{PodScope, RuntimeConfig};
pub use runtime::Scheduler;
pub use watch::{EventStream, podgroup_stream, watch_streams};

#[cfg(test)]
mod ha_tests;
