//! Scheduling profiles: one module per policy, each a [`crate::Profile`].
//!
//! - [`round_robin`]: next eligible node in order, cursor moves on success.
//! - `gpu_least_loaded`: least GPU usage under a threshold (issue 4).
//! - `priority`: priority queue, preemption and gangs (issue 6).

pub mod gpu_least_loaded;
pub mod priority;
pub mod round_robin;

pub use round_robin::RoundRobin;
