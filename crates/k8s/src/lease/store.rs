//! Where the lease lives: the [`LeaseStore`] seam (read, create, update
//! conditional on the version read) and [`KubeLease`], the
//! `coordination.k8s.io/v1` Lease behind it.
//!
//! Updates are `PUT`s of the whole object carrying the `resourceVersion`
//! last read or written, as client-go's `LeaseLock` does: the API server
//! answers 409 Conflict when someone wrote in between, which means we lost
//! the race ([`LeaseError::Conflict`]).

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use posture_core::Millis;
use posture_core::lease::LeaseRecord;

/// Why a lease read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else wrote the lease since we read it (HTTP 409): we lost
    /// the race; read again.
    #[error("lease {namespace}/{name} was changed by another candidate")]
    Conflict {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
    },
    /// Any other API error (unreachable, forbidden, …).
    #[error("{action} lease {namespace}/{name}")]
    Api {
        /// `reading`, `creating` or `updating`.
        action: &'static str,
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
}

/// What a read found: the version to condition the next update on and the
/// record, or `None` when the lease does not exist.
pub type Found<V> = Option<(V, LeaseRecord)>;

/// The lease as the election sees it: read, create, update conditional on
/// the version read. Production uses [`KubeLease`]; tests supply an
/// in-memory one shared by several candidates.
pub trait LeaseStore: Send + Sync + 'static {
    /// What a read or write returns to condition the next update on
    /// (for [`KubeLease`], the whole object with its `resourceVersion`).
    type Version: Clone + Send + Sync + 'static;

    /// The lease, or `None` when it does not exist.
    fn get(&self) -> BoxFuture<'_, Result<Found<Self::Version>, LeaseError>>;

    /// Creates the lease with `record` (409 when it exists: [`LeaseError::Conflict`]).
    fn create(&self, record: &LeaseRecord) -> BoxFuture<'_, Result<Self::Version, LeaseError>>;

    /// Writes `record` over `base`, only if nobody wrote since `base` was
    /// read (else [`LeaseError::Conflict`]).
    fn update(
        &self,
        base: &Self::Version,
        record: &LeaseRecord,
    ) -> BoxFuture<'_, Result<Self::Version, LeaseError>>;

    /// `namespace/name`, for logs.
    fn describe(&self) -> String;
}

/// A `coordination.k8s.io/v1` Lease.
#[derive(Clone)]
pub struct KubeLease {
    api: Api<Lease>,
    namespace: String,
    name: String,
}

impl KubeLease {
    /// The Lease `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn error(&self, action: &'static str, err: kube::Error) -> LeaseError {
        match err {
            kube::Error::Api(status) if status.code == 409 => LeaseError::Conflict {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
            },
            other => LeaseError::Api {
                action,
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source: Box::new(other),
            },
        }
    }
}

impl LeaseStore for KubeLease {
    type Version = Lease;

    fn get(&self) -> BoxFuture<'_, Result<Found<Lease>, LeaseError>> {
        Box::pin(async move {
            let lease = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| self.error("reading", e))?;
            Ok(lease.map(|l| {
                let record = record_of(&l);
                (l, record)
            }))
        })
    }

    fn create(&self, record: &LeaseRecord) -> BoxFuture<'_, Result<Lease, LeaseError>> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        crate::workload::FIELD_MANAGER.to_string(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(spec_of(record)),
        };
        Box::pin(async move {
            self.api
                .create(&PostParams::default(), &lease)
                .await
                .map_err(|e| self.error("creating", e))
        })
    }

    fn update(
        &self,
        base: &Lease,
        record: &LeaseRecord,
    ) -> BoxFuture<'_, Result<Lease, LeaseError>> {
        let mut lease = base.clone();
        // The resourceVersion stays: the API server refuses the write (409)
        // when someone wrote since `base` was read.
        lease.spec = Some(spec_of(record));
        lease.metadata.managed_fields = None;
        Box::pin(async move {
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map_err(|e| self.error("updating", e))
        })
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The election fields of a Lease (absent fields read as empty/zero).
pub fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        lease_duration_secs: spec.lease_duration_seconds.unwrap_or(0),
        acquire_time: spec.acquire_time.map(|t| t.0.as_millisecond()),
        renew_time: spec.renew_time.map(|t| t.0.as_millisecond()),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// The `spec` written for `record` (client-go writes the same five fields).
pub fn spec_of(record: &LeaseRecord) -> LeaseSpec {
    LeaseSpec {
        holder_identity: record.holder.clone(),
        lease_duration_seconds: Some(record.lease_duration_secs),
        acquire_time: record.acquire_time.and_then(micro_time),
        renew_time: record.renew_time.and_then(micro_time),
        lease_transitions: Some(record.transitions),
        ..LeaseSpec::default()
    }
}

fn micro_time(ms: Millis) -> Option<MicroTime> {
    Timestamp::from_millisecond(ms).ok().map(MicroTime)
}
