//! An in-memory [`LeaseStore`] shared by several candidates in one test,
//! with the API server's semantics that matter to the election: versions
//! bumped on every write, 409 on a stale version or an existing object,
//! and a per-candidate "partition" that makes every call fail.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use posture_core::lease::LeaseRecord;

use super::store::{LeaseError, LeaseStore};

#[derive(Default)]
struct State {
    object: Option<(u64, LeaseRecord)>,
    next_version: u64,
    partitioned: HashSet<String>,
    /// Every successful write: (candidate, record, when).
    writes: Vec<(String, LeaseRecord, tokio::time::Instant)>,
}

/// The lease every candidate of a test shares.
#[derive(Clone, Default)]
pub(crate) struct SharedLease(Arc<Mutex<State>>);

impl SharedLease {
    /// A store for candidate `who`.
    pub(crate) fn store(&self, who: &str) -> MemoryLease {
        MemoryLease {
            shared: self.clone(),
            who: who.to_string(),
        }
    }

    /// Cuts `who` off the API server (every call fails) or reconnects it.
    pub(crate) fn partition(&self, who: &str, cut: bool) {
        let mut s = self.0.lock().unwrap();
        if cut {
            s.partitioned.insert(who.to_string());
        } else {
            s.partitioned.remove(who);
        }
    }

    /// The record as stored now.
    pub(crate) fn record(&self) -> Option<LeaseRecord> {
        self.0
            .lock()
            .unwrap()
            .object
            .as_ref()
            .map(|(_, r)| r.clone())
    }

    /// Every successful write so far: (candidate, record, when).
    pub(crate) fn writes(&self) -> Vec<(String, LeaseRecord, tokio::time::Instant)> {
        self.0.lock().unwrap().writes.clone()
    }
}

/// One candidate's handle on a [`SharedLease`].
pub(crate) struct MemoryLease {
    shared: SharedLease,
    who: String,
}

fn unavailable() -> LeaseError {
    LeaseError::Api {
        action: "updating",
        namespace: "test".into(),
        name: "lease".into(),
        source: Box::new(kube::Error::Api(
            kube::core::Status::failure("connection refused", "ServiceUnavailable")
                .with_code(503)
                .boxed(),
        )),
    }
}

fn conflict() -> LeaseError {
    LeaseError::Conflict {
        namespace: "test".into(),
        name: "lease".into(),
    }
}

impl MemoryLease {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, LeaseError>,
    ) -> Result<T, LeaseError> {
        let mut s = self.shared.0.lock().unwrap();
        if s.partitioned.contains(&self.who) {
            return Err(unavailable());
        }
        f(&mut s)
    }

    fn write(&self, s: &mut State, record: &LeaseRecord) -> u64 {
        s.next_version += 1;
        let v = s.next_version;
        s.object = Some((v, record.clone()));
        s.writes.push((
            self.who.clone(),
            record.clone(),
            tokio::time::Instant::now(),
        ));
        v
    }
}

impl LeaseStore for MemoryLease {
    type Version = u64;

    fn get(&self) -> BoxFuture<'_, Result<super::store::Found<u64>, LeaseError>> {
        let r = self.with(|s| Ok(s.object.clone()));
        Box::pin(async move { r })
    }

    fn create(&self, record: &LeaseRecord) -> BoxFuture<'_, Result<u64, LeaseError>> {
        let r = self.with(|s| match s.object {
            Some(_) => Err(conflict()),
            None => Ok(self.write(s, record)),
        });
        Box::pin(async move { r })
    }

    fn update(&self, base: &u64, record: &LeaseRecord) -> BoxFuture<'_, Result<u64, LeaseError>> {
        let r = self.with(|s| match s.object {
            Some((v, _)) if v == *base => Ok(self.write(s, record)),
            _ => Err(conflict()),
        });
        Box::pin(async move { r })
    }

    fn describe(&self) -> String {
        "test/lease".into()
    }
}
