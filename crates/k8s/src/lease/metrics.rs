//! What an operator watches on the election: `posture_leader{component}`
//! (1 while this replica leads, client-go's `leader_election_master_status`),
//! `posture_lease_transitions{component}` (the Lease's `leaseTransitions` as
//! last observed) and `posture_leader_changes_total{component, change}`
//! (this replica acquired, lost or released the lease).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `{component}`: `scheduler` or `balancer`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// Which elected component.
    pub component: &'static str,
}

/// `{component, change}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// Which elected component.
    pub component: &'static str,
    /// `acquired`, `lost` or `released`.
    pub change: &'static str,
}

/// A change of this replica's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Became leader.
    Acquired,
    /// Stopped leading without giving the lease up (renewals failed, or
    /// another replica holds it).
    Lost,
    /// Gave the lease up on shutdown.
    Released,
}

impl Change {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acquired => "acquired",
            Self::Lost => "lost",
            Self::Released => "released",
        }
    }
}

/// The election's metrics. Cheap to clone (shared handles).
#[derive(Clone, Debug, Default)]
pub struct LeaseMetrics {
    /// 1 while this replica leads.
    pub leader: Family<ComponentLabels, Gauge>,
    /// `leaseTransitions` as last observed.
    pub transitions: Family<ComponentLabels, Gauge>,
    /// Role changes of this replica.
    pub changes: Family<ChangeLabels, Counter>,
}

impl LeaseMetrics {
    /// Registers the metrics at the registry's root (names carry their
    /// `posture_` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "posture_leader",
            "1 while this replica holds the lease and may act, 0 while it follows",
            m.leader.clone(),
        );
        registry.register(
            "posture_lease_transitions",
            "leaseTransitions of the Lease as last observed (how often it changed hands)",
            m.transitions.clone(),
        );
        registry.register(
            "posture_leader_changes",
            "Times this replica acquired, lost or released the lease",
            m.changes.clone(),
        );
        m
    }

    /// Sets `posture_leader{component}`.
    pub fn set_leader(&self, component: &'static str, leading: bool) {
        self.leader
            .get_or_create(&ComponentLabels { component })
            .set(i64::from(leading));
    }

    /// Sets `posture_lease_transitions{component}`.
    pub fn set_transitions(&self, component: &'static str, transitions: i32) {
        self.transitions
            .get_or_create(&ComponentLabels { component })
            .set(i64::from(transitions));
    }

    /// Counts a role change.
    pub fn changed(&self, component: &'static str, change: Change) {
        self.changes
            .get_or_create(&ChangeLabels {
                component,
                change: change.as_str(),
            })
            .inc();
    }
}
