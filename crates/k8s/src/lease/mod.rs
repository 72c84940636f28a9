//! Leader election for the controllers (scheduler, balancer): one replica
//! acts, the others keep their caches warm and take over within seconds.
//! The decisions are [`posture_core::lease::Elector`]'s; this room reads and
//! writes the `coordination.k8s.io/v1` Lease and tells the components
//! whether they may act.
//!
//! ```text
//!  LeaderElector (one task) ── every retry period ─► LeaseStore (Api<Lease>: get · create · replace@resourceVersion)
//!        │   Elector::fast_renew / attempt / written / role
//!        ▼
//!  watch::Sender<Leadership> ──► LeaderGate (cheap clones) ─► scheduler loop: pops the queue only while acting
//!                                                        ├─► FencedActuator: refuses binds/evictions when not acting
//!                                                        ├─► balancer loop: decides and moves only while acting
//!                                                        └─► /readyz header, /leader, posture_leader{component}
//! ```
//!
//! **Fencing.** [`LeaderGate::acting`] compares the fence instant (start of
//! the last successful renewal + renew deadline) with the clock at every
//! call, so a leader whose renewals hang stops acting at the deadline even
//! if the election task is stuck; a candidate may only take the lease a
//! whole lease duration after it saw the last renewal.
//!
//! Rooms: [`store`] (the [`LeaseStore`] seam and [`KubeLease`]), [`elector`]
//! (the [`LeaderElector`] loop), [`metrics`] ([`LeaseMetrics`]).

use tokio::sync::watch;
use tokio::time::Instant;

pub mod elector;
pub mod metrics;
pub mod store;

pub use elector::{LeaderElector, LeaseConfig};
pub use metrics::LeaseMetrics;
pub use posture_core::lease::LeaseTimings;
pub use store::{KubeLease, LeaseError, LeaseStore};

/// Whether, and until when, this replica may act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mandate {
    /// Leader election is off: this replica always acts.
    Unelected,
    /// This replica leads until this instant (the fence).
    Until(Instant),
    /// Another replica leads, or nobody does.
    Follower,
}

/// What the election says right now, as published to the components.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// Whether and until when we may act.
    pub mandate: Mandate,
    /// Our identity in the election (empty when unelected).
    pub identity: String,
    /// The holder as last observed (`None`: nobody, or not read yet).
    pub holder: Option<String>,
    /// How many times this replica became leader. A component that keeps
    /// position across terms (round-robin) reloads it when this changes.
    pub term: u64,
    /// `leaseTransitions` as last observed.
    pub transitions: i32,
}

impl Leadership {
    /// Leader election off: always acting, in one endless term.
    pub fn unelected() -> Self {
        Self {
            mandate: Mandate::Unelected,
            identity: String::new(),
            holder: None,
            term: 1,
            transitions: 0,
        }
    }

    /// Whether we may act at `now`.
    pub fn is_leading(&self, now: Instant) -> bool {
        match self.mandate {
            Mandate::Unelected => true,
            Mandate::Until(until) => now < until,
            Mandate::Follower => false,
        }
    }

    /// Whether leader election is on.
    pub fn elected(&self) -> bool {
        self.mandate != Mandate::Unelected
    }
}

/// A component's view of the election: cheap to clone, checked before
/// every action.
#[derive(Clone, Debug)]
pub struct LeaderGate {
    rx: watch::Receiver<Leadership>,
}

impl LeaderGate {
    /// A gate for a component without leader election: always acting.
    pub fn unelected() -> Self {
        // The sender is dropped at once: the value never changes, and
        // `changed` waits forever.
        let (_tx, rx) = watch::channel(Leadership::unelected());
        Self { rx }
    }

    /// A gate following `rx` (made by [`LeaderElector::new`], or by a test).
    pub fn new(rx: watch::Receiver<Leadership>) -> Self {
        Self { rx }
    }

    /// Whether this replica may act now: leader election off, or leading
    /// and not past the fence.
    pub fn acting(&self) -> bool {
        self.rx.borrow().is_leading(Instant::now())
    }

    /// The election state as last published.
    pub fn current(&self) -> Leadership {
        self.rx.borrow().clone()
    }

    /// The current term (see [`Leadership::term`]).
    pub fn term(&self) -> u64 {
        self.rx.borrow().term
    }

    /// Resolves when the role, holder or term changes; never once the
    /// election has stopped (or with leader election off).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
pub(crate) mod memory;
#[cfg(test)]
mod tests;
