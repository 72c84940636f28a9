//! Leader election on a `coordination.k8s.io/v1` Lease record: the
//! decisions client-go's `leaderelection` makes (may I acquire? have I lost
//! it? when do I try again?), as pure functions of what was observed and
//! when. The Kubernetes I/O lives in `posture_k8s::lease`.
//!
//! ```text
//!  leader, lease valid ─► Elector::fast_renew(now) ─► update (no read first)
//!  otherwise:  read ─► Elector::attempt(found, now) ─► Create | Update | Wait { holder, until }
//!  write ok ─► Elector::written(record, started)       write refused (409) or failed ─► read again next time
//!  Elector::role(now) ─► Leader { until } | Follower { holder }
//!  shutdown ─► Elector::release(now) ─► update with no holder (successor acquires at once)
//! ```
//!
//! Time is what the caller's clock says (milliseconds): expiry is measured
//! from the moment *this* process observed the record change, never from
//! the `renewTime` written by another machine, so clock skew between
//! machines does not matter (client-go's rule).
//!
//! **Fencing.** A leader stops acting at `renew_deadline` after the start of
//! its last successful write, while a candidate may only take the lease
//! `lease_duration` after it saw that write: with `renew_deadline <
//! lease_duration` the old leader has stopped before anyone can take over,
//! even when it cannot reach the API server at all.

use crate::model::Millis;

/// How long a lease lasts, when its holder gives up, how often to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a candidate waits after it last saw the record change
    /// before it may take the lease (written as `leaseDurationSeconds`).
    pub lease_duration: Millis,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Millis,
    /// How often to renew (leader) or try to acquire (candidate).
    pub retry_period: Millis,
}

impl LeaseTimings {
    /// kube-scheduler's defaults: lease 15 s, renew deadline 10 s, retry 2 s.
    pub const KUBE_SCHEDULER: Self = Self {
        lease_duration: 15_000,
        renew_deadline: 10_000,
        retry_period: 2_000,
    };

    /// Checks client-go's constraints: `lease_duration > renew_deadline >
    /// 1.2 × retry_period`, retry period positive, lease at least 1 s (the
    /// record counts whole seconds).
    pub fn validate(&self) -> Result<(), TimingError> {
        if self.retry_period <= 0 {
            return Err(TimingError::RetryNotPositive);
        }
        if self.lease_duration < 1_000 {
            return Err(TimingError::LeaseTooShort(self.lease_duration));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(TimingError::DeadlineNotBeforeExpiry {
                renew_deadline: self.renew_deadline,
                lease_duration: self.lease_duration,
            });
        }
        // client-go: RenewDeadline > JitterFactor (1.2) × RetryPeriod.
        if self.renew_deadline * 10 <= self.retry_period * 12 {
            return Err(TimingError::RetryTooSlow {
                retry_period: self.retry_period,
                renew_deadline: self.renew_deadline,
            });
        }
        Ok(())
    }

    /// `leaseDurationSeconds` to write (whole seconds, rounded down as
    /// client-go does).
    pub fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration / 1_000).unwrap_or(i32::MAX)
    }
}

impl Default for LeaseTimings {
    fn default() -> Self {
        Self::KUBE_SCHEDULER
    }
}

/// Timings that cannot give a safe election.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The retry period is zero or negative.
    #[error("the retry period must be positive")]
    RetryNotPositive,
    /// The lease is shorter than the record's one-second resolution.
    #[error("the lease duration must be at least 1s, got {0} ms")]
    LeaseTooShort(Millis),
    /// A leader could still act after a candidate may take over.
    #[error(
        "the renew deadline ({renew_deadline} ms) must be shorter than the lease duration ({lease_duration} ms)"
    )]
    DeadlineNotBeforeExpiry {
        /// Configured renew deadline.
        renew_deadline: Millis,
        /// Configured lease duration.
        lease_duration: Millis,
    },
    /// Too few renewal attempts fit in the renew deadline.
    #[error(
        "the renew deadline ({renew_deadline} ms) must be more than 1.2 × the retry period ({retry_period} ms)"
    )]
    RetryTooSlow {
        /// Configured retry period.
        retry_period: Millis,
        /// Configured renew deadline.
        renew_deadline: Millis,
    },
}

/// The election fields of a Lease's `spec`, times in epoch milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `holderIdentity`; `None` or empty: nobody holds it.
    pub holder: Option<String>,
    /// `leaseDurationSeconds`.
    pub lease_duration_secs: i32,
    /// `acquireTime`: when the current holder took it.
    pub acquire_time: Option<Millis>,
    /// `renewTime`: when the holder last renewed it.
    pub renew_time: Option<Millis>,
    /// `leaseTransitions`: how often it changed hands.
    pub transitions: i32,
}

impl LeaseRecord {
    /// The holder, if any (an empty identity means none).
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }
}

/// What to do after reading the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// No Lease exists: create it with this record (us as holder).
    Create(LeaseRecord),
    /// Write this record over the one read (conditional on its version):
    /// acquire a free or expired lease, or renew ours.
    Update(LeaseRecord),
    /// Someone else holds a valid lease: try again later.
    Wait {
        /// The current holder.
        holder: String,
        /// When the lease expires by our observation, if not renewed.
        expires_at: Millis,
    },
}

/// This process's part in the election at a given time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// We lead, and must stop acting at `until` unless renewed before.
    Leader {
        /// The fence: last successful write + renew deadline.
        until: Millis,
    },
    /// Someone else leads (or nobody does).
    Follower {
        /// The holder as last observed, if any.
        holder: Option<String>,
    },
}

/// What was last read or written, and when we saw it.
#[derive(Clone, Debug)]
struct Observed {
    /// `None`: no Lease object exists.
    record: Option<LeaseRecord>,
    /// When this process first saw this exact record.
    at: Millis,
}

/// The election state of one candidate. Feed it what the API server says;
/// it answers what to write and whether we lead.
#[derive(Clone, Debug)]
pub struct Elector {
    identity: String,
    timings: LeaseTimings,
    observed: Option<Observed>,
    /// Start of our last successful write naming us as holder.
    renewed_at: Option<Millis>,
}

impl Elector {
    /// A candidate called `identity` (unique among the candidates).
    pub fn new(identity: impl Into<String>, timings: LeaseTimings) -> Self {
        Self {
            identity: identity.into(),
            timings,
            observed: None,
            renewed_at: None,
        }
    }

    /// Our identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The timings in force.
    pub fn timings(&self) -> LeaseTimings {
        self.timings
    }

    /// The record as last observed (read or written).
    pub fn observed(&self) -> Option<&LeaseRecord> {
        self.observed.as_ref().and_then(|o| o.record.as_ref())
    }

    /// Whether the last observed record names us (client-go's `IsLeader`).
    fn recorded_holder(&self) -> bool {
        self.observed()
            .and_then(LeaseRecord::holder)
            .is_some_and(|h| h == self.identity)
    }

    /// When the observed lease expires (observation time + its duration).
    fn expires_at(&self) -> Option<Millis> {
        let o = self.observed.as_ref()?;
        let secs = o.record.as_ref()?.lease_duration_secs.max(0);
        Some(o.at + Millis::from(secs) * 1_000)
    }

    fn lease_valid(&self, now: Millis) -> bool {
        self.expires_at().is_some_and(|t| t > now)
    }

    /// A record naming us, renewed at `now`; keeps the acquire time and the
    /// transition count when we already hold it, counts a transition when
    /// we take it from someone (or from nobody).
    fn our_record(&self, old: Option<&LeaseRecord>, now: Millis) -> LeaseRecord {
        let mut record = LeaseRecord {
            holder: Some(self.identity.clone()),
            lease_duration_secs: self.timings.lease_duration_seconds(),
            acquire_time: Some(now),
            renew_time: Some(now),
            transitions: 0,
        };
        if let Some(old) = old {
            if old.holder() == Some(self.identity.as_str()) {
                record.acquire_time = old.acquire_time;
                record.transitions = old.transitions;
            } else {
                record.transitions = old.transitions.saturating_add(1);
            }
        }
        record
    }

    /// The leader's optimistic renewal: when the observed record names us
    /// and has not expired, the record to write without reading first
    /// (conditional on the version we last saw). `None`: read first.
    pub fn fast_renew(&self, now: Millis) -> Option<LeaseRecord> {
        (self.recorded_holder() && self.lease_valid(now))
            .then(|| self.our_record(self.observed(), now))
    }

    /// Takes what a read found (`None`: no Lease exists) and decides. The
    /// observation time moves only when the record changed, so a holder
    /// that stops renewing expires `lease_duration` after we last saw it
    /// renew, whatever its clock says.
    pub fn attempt(&mut self, found: Option<LeaseRecord>, now: Millis) -> Attempt {
        self.observe(found, now);
        let Some(old) = self.observed().cloned() else {
            return Attempt::Create(self.our_record(None, now));
        };
        if let Some(holder) = old.holder()
            && holder != self.identity
            && self.lease_valid(now)
        {
            return Attempt::Wait {
                holder: holder.to_string(),
                expires_at: self.expires_at().unwrap_or(now),
            };
        }
        Attempt::Update(self.our_record(Some(&old), now))
    }

    fn observe(&mut self, found: Option<LeaseRecord>, now: Millis) {
        let changed = self.observed.as_ref().is_none_or(|o| o.record != found);
        if changed {
            self.observed = Some(Observed {
                record: found,
                at: now,
            });
        }
        if !self.recorded_holder() {
            // Someone else (or nobody) holds it now: we do not lead.
            self.renewed_at = None;
        }
    }

    /// A write of `record` that started at `started` succeeded.
    pub fn written(&mut self, record: LeaseRecord, started: Millis) {
        self.observed = Some(Observed {
            record: Some(record),
            at: started,
        });
        self.renewed_at = self.recorded_holder().then_some(started);
    }

    /// Our role at `now`. We lead only while the record names us and our
    /// last successful write started less than `renew_deadline` ago.
    pub fn role(&self, now: Millis) -> Role {
        match self.renewed_at {
            Some(at) if self.recorded_holder() && now < at + self.timings.renew_deadline => {
                Role::Leader {
                    until: at + self.timings.renew_deadline,
                }
            }
            _ => Role::Follower {
                holder: self
                    .observed()
                    .and_then(LeaseRecord::holder)
                    .map(str::to_string),
            },
        }
    }

    /// When to try again after an attempt at `now`: a leader renews every
    /// retry period; a candidate tries every retry period, or as soon as the
    /// observed lease expires if that is sooner.
    pub fn next_attempt_at(&self, now: Millis) -> Millis {
        let retry = now + self.timings.retry_period;
        if self.recorded_holder() {
            return retry;
        }
        match self.expires_at() {
            Some(expiry) if expiry > now => retry.min(expiry),
            _ => retry,
        }
    }

    /// The record that gives the lease up on shutdown (no holder, 1 s
    /// duration, transitions kept: client-go's release), if the observed
    /// record names us. Write it conditionally on the version last seen.
    pub fn release(&self, now: Millis) -> Option<LeaseRecord> {
        let old = self.observed()?;
        self.recorded_holder().then_some(LeaseRecord {
            holder: None,
            lease_duration_secs: 1,
            acquire_time: Some(now),
            renew_time: Some(now),
            transitions: old.transitions,
        })
    }
}

#[cfg(test)]
mod tests;
