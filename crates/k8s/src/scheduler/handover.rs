//! A profile's position carried from one leader to the next: the
//! round-robin cursor (and the GPU profile's last chosen node) live in a
//! ConfigMap, written by the leader as it decides and read by each new
//! leader when its term starts, so a take-over continues the order instead
//! of restarting it. Without leader election there is one endless term: the
//! position is read once at start, which also carries it across restarts.
//!
//! ```text
//!  term starts (LeaderGate.term changes while acting) ─► keeper: PositionStore::load ─► Loaded { term, node }
//!  HandOver::schedule, first call of the term ─► inner.restore_last_chosen(node)   (Wait ~100 ms until loaded)
//!  after each decision and bind ─► (term, inner.last_chosen()) ─► keeper ─► PositionStore::save
//!                                            (newest value only, one write in flight, only while acting)
//! ```
//!
//! The position is written after each decision (not only after the bind is
//! confirmed), so what a successor reads is what its predecessor handed out
//! last; a leader killed abruptly loses at most the picks made while its
//! last write was in flight.

use std::time::Duration;

use futures::future::BoxFuture;
use posture_core::cluster::Cluster;
use posture_core::error_chain;
use posture_core::framework::{Binding, Decision, Profile, SchedulingContext};
use posture_core::gpu::GpuSnapshot;
use posture_core::model::{Millis, PodInfo};
use posture_core::policy::RoundRobin;
use tokio::sync::watch;

use super::gpu_state::{GpuStateStore, RemembersLastChosen, StateError};
use crate::lease::LeaderGate;

/// Default ConfigMap of the round-robin position.
pub const DEFAULT_RR_CONFIGMAP: &str = "posture-farm-rr-state";

/// How long a decision waits for the new term's position to be read
/// (one ConfigMap GET; retried on the next attempt).
const RESUME_WAIT_MS: Millis = 100;

/// Pause before retrying a failed write.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Where the position is kept. Production: [`GpuStateStore`] (a ConfigMap,
/// key `lastChosenNode`); tests supply an in-memory one.
pub trait PositionStore: Send + 'static {
    /// The saved node (`None`: none saved, or no ConfigMap).
    fn load(&mut self) -> BoxFuture<'_, Result<Option<String>, StateError>>;
    /// Saves `node` (a no-op when it equals what was last loaded or saved).
    fn save<'a>(&'a mut self, node: Option<&'a str>) -> BoxFuture<'a, Result<(), StateError>>;
}

impl PositionStore for GpuStateStore {
    fn load(&mut self) -> BoxFuture<'_, Result<Option<String>, StateError>> {
        Box::pin(GpuStateStore::load(self))
    }

    fn save<'a>(&'a mut self, node: Option<&'a str>) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move { self.save_if_changed(node).await.map(|_| ()) })
    }
}

impl RemembersLastChosen for RoundRobin {
    fn last_chosen(&self) -> Option<&str> {
        self.last_handed_out()
    }

    fn restore_last_chosen(&mut self, node: Option<String>) {
        self.resume_after(node);
    }
}

/// The position read at the start of a term.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Loaded {
    term: u64,
    node: Option<String>,
}

/// A position to save, tagged with the term whose leader decided it.
type Tagged = Option<(u64, Option<String>)>;

/// A profile whose position survives leader changes and restarts: a
/// drop-in [`Profile`] for the scheduler loop.
pub struct HandOver<P> {
    inner: P,
    gate: LeaderGate,
    loaded: watch::Receiver<Option<Loaded>>,
    /// The term whose position was restored into `inner`.
    resumed: Option<u64>,
    tx: watch::Sender<Tagged>,
}

impl<P: RemembersLastChosen> HandOver<P> {
    /// Wraps `profile` and starts the task keeping its position in `store`.
    /// Must be called inside a Tokio runtime; the task ends when the
    /// returned profile is dropped.
    pub fn start(profile: P, store: impl PositionStore, gate: LeaderGate) -> Self {
        let (loaded_tx, loaded) = watch::channel(None);
        let (tx, positions) = watch::channel(None);
        tokio::spawn(keep(store, gate.clone(), positions, loaded_tx));
        Self {
            inner: profile,
            gate,
            loaded,
            resumed: None,
            tx,
        }
    }

    /// The wrapped profile.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// Restores the term's position on the first decision of a term; false
    /// while it has not been read yet.
    fn resume(&mut self) -> bool {
        let term = self.gate.term();
        if self.resumed == Some(term) {
            return true;
        }
        let loaded = self.loaded.borrow().clone();
        match loaded {
            Some(l) if l.term == term => {
                self.inner.restore_last_chosen(l.node);
                self.resumed = Some(term);
                true
            }
            _ => false,
        }
    }

    fn publish(&self) {
        let Some(term) = self.resumed else { return };
        let now = Some((term, self.inner.last_chosen().map(str::to_string)));
        self.tx.send_if_modified(|v| {
            let changed = *v != now;
            if changed {
                v.clone_from(&now);
            }
            changed
        });
    }
}

/// Reads the position when a term starts, then saves each new position of
/// the current term while acting. Level-triggered: each turn compares what
/// is wanted with what was done.
async fn keep(
    mut store: impl PositionStore,
    mut gate: LeaderGate,
    mut positions: watch::Receiver<Tagged>,
    loaded: watch::Sender<Option<Loaded>>,
) {
    let mut loaded_term = None;
    loop {
        let term = gate.term();
        if gate.acting() && loaded_term != Some(term) {
            let node = match store.load().await {
                Ok(node) => node,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "could not read the saved position; starting the order afresh");
                    None
                }
            };
            tracing::info!(term, node = ?node, "resuming after the saved position");
            loaded_term = Some(term);
            if loaded.send(Some(Loaded { term, node })).is_err() {
                return;
            }
            continue;
        }
        let wanted = positions.borrow_and_update().clone();
        if let Some((t, node)) = wanted
            && t == term
            && loaded_term == Some(term)
            && gate.acting()
            && let Err(e) = store.save(node.as_deref()).await
        {
            tracing::warn!(error = %error_chain(&e), "could not save the position; retrying");
            tokio::time::sleep(RETRY_AFTER).await;
            positions.mark_changed();
        }
        tokio::select! {
            changed = positions.changed() => if changed.is_err() { return },
            () = gate.changed() => {}
        }
    }
}

impl<P: RemembersLastChosen> Profile for HandOver<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn gang_aware(&self) -> bool {
        self.inner.gang_aware()
    }

    fn schedule(
        &mut self,
        cluster: &Cluster,
        unit: &[&PodInfo],
        ctx: &SchedulingContext<'_>,
    ) -> Decision {
        if !self.resume() {
            return Decision::Wait {
                retry_at: ctx.now + RESUME_WAIT_MS,
                message: "reading the position the previous leader saved".into(),
            };
        }
        let decision = self.inner.schedule(cluster, unit, ctx);
        self.publish();
        decision
    }

    fn bound(&mut self, binding: &Binding, now: Millis) {
        self.inner.bound(binding, now);
        self.publish();
    }

    fn bind_failed(&mut self, binding: &Binding) {
        self.inner.bind_failed(binding);
    }

    fn gpu_may_fit_more(&self, before: Option<&GpuSnapshot>, after: &GpuSnapshot) -> bool {
        self.inner.gpu_may_fit_more(before, after)
    }

    fn config_warnings(&self, cluster: &Cluster) -> Vec<String> {
        self.inner.config_warnings(cluster)
    }
}

#[cfg(test)]
pub(crate) mod tests;
