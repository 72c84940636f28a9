//! The GPU balancer's Kubernetes edge: find which posture workloads run on
//! which node, and carry out the moves planned by
//! [`posture_core::balance::plan_moves`].
//!
//! ```text
//!  list ScaledJobs/Jobs/Pods (label selector) ─► discover ─► placements, move records
//!                                                             (+ moves left half-done by a crash)
//!  averages + placements ─► learn idle baselines ─► estimate_loads ─► plan_moves (History)
//!  BalancePlan.moves ─► Mover::apply ─► ScaledJob: merge-patch nodeAffinity + annotations,
//!                                                  delete its active Jobs (Background),
//!                                                  delete leftover pods, Event
//!                                       Job:       create a suspended parked copy, delete the
//!                                                  original, wait until gone, create the final
//!                                                  copy with the new affinity, delete the parked
//!                                                  copy, Event
//! ```
//!
//! Restart safety: every move writes `posture-farm.io/moved-at`,
//! `moved-to`, `moved-from` and `moved-load` on the moved object, in the
//! same request that changes its affinity (ScaledJob) or in the recreated
//! object (Job). [`discover`] reads them back as cool-down records and as
//! moves in progress (counted until the readings show them), so a
//! restarted balancer neither repeats a move nor forgets one; it reports
//! ScaledJobs whose old Jobs still run elsewhere so [`Mover::finish`] can
//! complete the move, and parked Job copies so [`Mover::finish_parked`] can
//! finish or roll back a Job move ([`parked`]): a Job is never lost.
//!
//! Note: KEDA's default rollout strategy (`immediate`) itself deletes the
//! Jobs of a ScaledJob whose spec changed; deleting them here as well is
//! harmless (a 404 counts as done) and covers `rollout.strategy: gradual`.
//!
//! Rooms: [`discover`] (what runs where), [`mover`] (the [`Mover`] that
//! carries out moves), [`parked`] (the never-lose-a-Job protocol), [`run`]
//! (the per-window step and the loop, with the logging and `--dry-run`
//! printout) and [`metrics`] ([`BalanceMetrics`]).

use std::time::Duration;

pub mod discover;
pub mod metrics;
pub mod mover;
pub mod parked;
pub mod run;

pub use discover::{Discovery, Scope, Unfinished, discover, index_workloads, parse_moved_at};
pub use metrics::BalanceMetrics;
pub use mover::{Mover, job_copy, scaledjob_patch};
pub use run::{
    Balancer, BalancerConfig, LoopEvent, LoopReport, LoopTiming, render_plan, run_balancer,
    run_loop,
};

/// Annotation holding when the balancer last moved the object (RFC 3339).
pub const MOVED_AT_ANNOTATION: &str = "posture-farm.io/moved-at";
/// Annotation holding the node the balancer last moved the object to.
pub const MOVED_TO_ANNOTATION: &str = "posture-farm.io/moved-to";
/// Annotation holding the node the balancer last moved the object from.
pub const MOVED_FROM_ANNOTATION: &str = "posture-farm.io/moved-from";
/// Annotation holding the GPU load (percentage points) the last move was
/// estimated to carry: a restarted balancer keeps counting it on the
/// destination until the readings show it.
pub const MOVED_LOAD_ANNOTATION: &str = "posture-farm.io/moved-load";
/// Label KEDA puts on the Jobs and pods it creates for a ScaledJob.
pub const SCALEDJOB_LABEL: &str = "scaledjob.keda.sh/name";
/// Label the Job controller puts on a Job's pods (Kubernetes ≥ 1.27).
pub const JOB_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// Field manager / reporting controller name of the balancer.
pub const MANAGER: &str = "posture-farm-balancer";

/// What went wrong talking to the API server while balancing.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// An API call failed.
    #[error("{action} {kind} {namespace}/{name}")]
    Api {
        /// What was being done ("deleting", …).
        action: &'static str,
        /// Resource kind, lower case.
        kind: &'static str,
        /// Namespace of the object.
        namespace: String,
        /// Name of the object.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Listing objects failed.
    #[error("listing {kind} in namespace {namespace}")]
    List {
        /// Resource kind, plural.
        kind: &'static str,
        /// Namespace listed.
        namespace: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A deleted Job did not disappear in time, so its copy was not created.
    #[error("job {namespace}/{name} still exists {waited:?} after deletion; not recreated")]
    JobNotGone {
        /// Namespace of the Job.
        namespace: String,
        /// Name of the Job.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A Job copy could not be built (the object lacks a pod template).
    #[error("job {namespace}/{name} has no pod template")]
    NoTemplate {
        /// Namespace of the Job.
        namespace: String,
        /// Name of the Job.
        name: String,
    },
}

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod tests;
