//! The election loop: one task per process that renews (leader) or tries to
//! acquire (candidate) every retry period, publishes [`Leadership`] to the
//! components, and gives the lease up on graceful shutdown.
//!
//! ```text
//!  loop: leader & lease valid ─► update@last version (optimistic renew) ─┐ 409/error
//!        otherwise / fallback ─► get ─► Elector::attempt ─► create | update@version | wait
//!        publish role ─► sleep until Elector::next_attempt_at (or shutdown)
//!  shutdown: publish Follower (stop acting) ─► LeaderElector::release (holder cleared, 1 s lease)
//! ```
//!
//! Each attempt is bounded in time: a leader's by its fence (so a hung
//! request cannot keep it leading past the renew deadline), a candidate's
//! by the renew deadline.

use std::time::Duration;

use posture_core::lease::{Attempt, Elector, LeaseTimings, Role};
use posture_core::{Millis, error_chain};
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::{Change, LeaseMetrics};
use super::store::{LeaseError, LeaseStore};
use super::{LeaderGate, Leadership, Mandate};

/// Which lease, who we are, and the timings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Our identity: unique among the replicas (the pod name).
    pub identity: String,
    /// Lease duration, renew deadline, retry period.
    pub timings: LeaseTimings,
    /// Component label of the metrics (`scheduler`, `balancer`).
    pub component: &'static str,
}

/// Converts tokio's clock into epoch milliseconds (what the Lease records),
/// so paused test time and wall time agree.
#[derive(Clone, Copy, Debug)]
struct Clock {
    base_ms: Millis,
    base: Instant,
}

impl Clock {
    fn new() -> Self {
        let base_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
            .unwrap_or(0);
        Self {
            base_ms,
            base: Instant::now(),
        }
    }

    fn now(&self) -> Millis {
        self.base_ms + Millis::try_from(self.base.elapsed().as_millis()).unwrap_or(Millis::MAX)
    }

    fn instant_at(&self, at: Millis) -> Instant {
        self.base + Duration::from_millis(u64::try_from(at - self.base_ms).unwrap_or(0))
    }
}

/// The election loop over a [`LeaseStore`]. Create with [`LeaderElector::new`]
/// (which hands out the [`LeaderGate`]), run with [`LeaderElector::run`],
/// then [`LeaderElector::release`] once the component stopped.
pub struct LeaderElector<S: LeaseStore> {
    store: S,
    elector: Elector,
    /// The version last read or written (what the next update is conditional on).
    version: Option<S::Version>,
    clock: Clock,
    tx: watch::Sender<Leadership>,
    metrics: LeaseMetrics,
    component: &'static str,
}

impl<S: LeaseStore> LeaderElector<S> {
    /// An elector over `store`, and the gate its components check.
    pub fn new(store: S, cfg: LeaseConfig, metrics: LeaseMetrics) -> (Self, LeaderGate) {
        let (tx, rx) = watch::channel(Leadership {
            mandate: Mandate::Follower,
            identity: cfg.identity.clone(),
            holder: None,
            term: 0,
            transitions: 0,
        });
        metrics.set_leader(cfg.component, false);
        let elector = Self {
            store,
            elector: Elector::new(cfg.identity, cfg.timings),
            version: None,
            clock: Clock::new(),
            tx,
            metrics,
            component: cfg.component,
        };
        (elector, LeaderGate::new(rx))
    }

    /// Renews or tries to acquire every retry period until `shutdown`; then
    /// stops acting at once (publishes Follower) and returns itself so the
    /// caller can [`release`](Self::release) the lease after its component
    /// finished what was in flight.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Self {
        tokio::pin!(shutdown);
        tracing::info!(
            lease = %self.store.describe(),
            identity = %self.elector.identity(),
            timings = ?self.elector.timings(),
            "leader election started"
        );
        loop {
            // Announce a lapsed fence now, not only after this attempt.
            self.publish();
            let budget = self.attempt_budget();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                outcome = tokio::time::timeout(budget, self.try_acquire_or_renew()) => {
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(err @ LeaseError::Conflict { .. })) => {
                            tracing::debug!(error = %error_chain(&err), "lost the race for the lease");
                        }
                        Ok(Err(err)) => {
                            tracing::warn!(error = %error_chain(&err), "could not read or write the lease; retrying");
                        }
                        Err(_) => tracing::warn!(?budget, "lease request timed out; retrying"),
                    }
                }
            }
            self.publish();
            let wake = self
                .clock
                .instant_at(self.elector.next_attempt_at(self.clock.now()));
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        self.step_down();
        self
    }

    /// How long one attempt may take: a leader's ends at its fence, a
    /// candidate's at the renew deadline.
    fn attempt_budget(&self) -> Duration {
        let now = self.clock.now();
        let ms = match self.elector.role(now) {
            Role::Leader { until } => until - now,
            Role::Follower { .. } => self.elector.timings().renew_deadline,
        };
        Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(1))
    }

    /// One round of client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self) -> Result<(), LeaseError> {
        let started = self.clock.now();
        if let (Some(record), Some(base)) = (self.elector.fast_renew(started), self.version.clone())
        {
            match self.store.update(&base, &record).await {
                Ok(version) => {
                    self.version = Some(version);
                    self.elector.written(record, started);
                    return Ok(());
                }
                Err(err) => tracing::debug!(
                    error = %error_chain(&err),
                    "optimistic renewal failed; reading the lease"
                ),
            }
        }
        let found = self.store.get().await?;
        // Observed when the read came back: a candidate never counts a
        // lease's expiry from before it saw the record.
        let seen = self.clock.now();
        let (version, record) = match found {
            Some((v, r)) => (Some(v), Some(r)),
            None => (None, None),
        };
        self.version.clone_from(&version);
        match (self.elector.attempt(record, seen), version) {
            (Attempt::Create(record), _) => {
                let version = self.store.create(&record).await?;
                self.version = Some(version);
                self.elector.written(record, seen);
            }
            (Attempt::Update(record), Some(base)) => {
                let version = self.store.update(&base, &record).await?;
                self.version = Some(version);
                self.elector.written(record, seen);
            }
            (Attempt::Update(_), None) | (Attempt::Wait { .. }, _) => {}
        }
        Ok(())
    }

    /// Publishes the role now; components are woken only when the role,
    /// holder or term changes (a renewal only moves the fence).
    fn publish(&mut self) {
        let now = self.clock.now();
        let role = self.elector.role(now);
        let transitions = self.elector.observed().map_or(0, |r| r.transitions);
        self.metrics.set_transitions(self.component, transitions);
        let (mandate, holder) = match role {
            Role::Leader { until } => (
                Mandate::Until(self.clock.instant_at(until)),
                Some(self.elector.identity().to_string()),
            ),
            Role::Follower { holder } => (Mandate::Follower, holder),
        };
        let component = self.component;
        let metrics = self.metrics.clone();
        let lease = self.store.describe();
        self.tx.send_if_modified(|cur| {
            let was_leading = matches!(cur.mandate, Mandate::Until(_));
            let leading = matches!(mandate, Mandate::Until(_));
            let mut notify = cur.holder != holder || was_leading != leading;
            if leading && !was_leading {
                cur.term += 1;
                metrics.set_leader(component, true);
                metrics.changed(component, Change::Acquired);
                tracing::info!(%lease, term = cur.term, transitions, "became leader");
            } else if was_leading && !leading {
                metrics.set_leader(component, false);
                metrics.changed(component, Change::Lost);
                tracing::warn!(%lease, holder = ?holder, "stopped leading: could not renew the lease in time, or another replica holds it");
            }
            if cur.holder != holder && !leading {
                tracing::info!(%lease, holder = ?holder, "following");
            }
            notify |= cur.transitions != transitions;
            cur.mandate = mandate;
            cur.holder = holder;
            cur.transitions = transitions;
            notify
        });
    }

    /// Stops acting at once (shutdown): components see Follower.
    fn step_down(&mut self) {
        let component = self.component;
        let metrics = self.metrics.clone();
        self.tx.send_if_modified(|cur| {
            let was_leading = matches!(cur.mandate, Mandate::Until(_));
            cur.mandate = Mandate::Follower;
            if was_leading {
                metrics.set_leader(component, false);
            }
            was_leading
        });
    }

    /// Gives the lease up if we hold it (holder cleared, 1 s duration), so
    /// another replica takes over at once instead of after the lease
    /// duration. Call after the component stopped acting. Bounded by the
    /// retry period; a failure only delays the take-over.
    pub async fn release(&mut self) {
        self.step_down();
        let now = self.clock.now();
        let (Some(record), Some(base)) = (self.elector.release(now), self.version.clone()) else {
            return;
        };
        let budget = Duration::from_millis(
            u64::try_from(self.elector.timings().retry_period.max(1)).unwrap_or(1),
        );
        match tokio::time::timeout(budget, self.store.update(&base, &record)).await {
            Ok(Ok(_)) => {
                self.metrics.changed(self.component, Change::Released);
                tracing::info!(lease = %self.store.describe(), "released the lease");
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %error_chain(&err), "could not release the lease; the other replica takes over when it expires")
            }
            Err(_) => tracing::warn!(
                "releasing the lease timed out; the other replica takes over when it expires"
            ),
        }
    }
}
