//! Operations: what `posture-farm up`, `down` and `status` do to a cluster.
//!
//! Deciding is separated from acting. The pure half builds a mode's
//! kustomization from the manifests documented in `deploy/` (embedded at
//! compile time, so what `up` applies is by construction what `kubectl apply
//! -k deploy/modes/<mode>` would), applies the flags' rules, orders the
//! objects into an apply plan and summarises cluster state for `status`. The
//! I/O half is thin: it prunes what the plan no longer holds,
//! server-side-applies each planned object with the field manager
//! [`FIELD_MANAGER`], taints the control-plane node, labels GPU nodes, waits
//! for readiness, reaches in-cluster ports through port-forwards, collects
//! results and deletes — only ever objects carrying the [`MANAGED_BY_LABEL`]
//! label that `up` puts on everything it creates.
//!
//! ```text
//!  deploy/ (include_str!) ─► manifests::{kustomize, transform, generate} ─► plan::ApplyPlan (stages)
//!                                                                   │
//!  up: nodes::taint · workload::label_gpu_nodes · up::read_secret ───┼─► up::deploy: teardown::prune
//!        ─► apply (platform) ─► wait StatefulSets ─► apply (controllers, analyzers) ─► wait
//!  down: database::access (forward) ─► export · collect (exec tar) ─► teardown::teardown ─► nodes::untaint
//!  status: status::gather (+ prometheus::farm_gpu via forward) ─► status::summarise ─► render
//! ```

pub mod apply;
pub mod collect;
pub mod database;
pub mod forward;
pub mod manifests;
pub mod nodes;
pub mod plan;
pub mod pods;
pub mod prometheus;
pub mod status;
pub mod teardown;
#[cfg(test)]
pub(crate) mod test_cluster;
pub mod up;
pub mod wait;

pub use crate::workload::FIELD_MANAGER;

/// Label key put on every object `up` creates; `down` and `status` select by it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Value of [`MANAGED_BY_LABEL`] on objects `up` creates.
pub const MANAGED_BY_VALUE: &str = "posture-farm";

/// The label selector matching everything `up` created.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
}

/// Why an operation on the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// An embedded or rendered manifest could not be understood.
    #[error("manifest {what}: {reason}")]
    Manifest {
        /// Which document (file name and index, or object name).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A YAML document failed to parse.
    #[error("cannot parse YAML in {file}")]
    Yaml {
        /// The embedded file.
        file: String,
        /// The parser's error (boxed: it is large).
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A call to the Kubernetes API failed.
    #[error("{action}")]
    Kube {
        /// What was being done, e.g. `apply Deployment kube-system/rr-scheduler`.
        action: String,
        /// The client or API error.
        #[source]
        source: kube::Error,
    },
    /// Waiting for readiness ran past its deadline.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What was not ready.
        what: String,
        /// The limit that was exceeded.
        seconds: u64,
    },
    /// Writing collected results to disk failed.
    #[error("cannot write results to {path}")]
    Io {
        /// The local path.
        path: String,
        /// The file system error.
        #[source]
        source: std::io::Error,
    },
}

impl OpsError {
    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    pub(crate) fn manifest(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Manifest {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
