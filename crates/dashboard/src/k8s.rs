//! The farm's sources: a Kubernetes poller (pods, nodes, Events; in-cluster
//! or kubeconfig, optional) and the GPU snapshot channel (optional). One
//! task reads both and tells open farm pages when what they show changed.
//!
//! ```text
//!  kube API ── list every poll_interval ──┐
//!                                          ├─► Farm (latest inputs) ─► farm::summarise ─► page
//!  GpuSnapshot watch ── on change ─────────┘        └─ fingerprint changed ─► LiveEvent::Farm
//! ```
//!
//! Polling, not watching: a farm has tens of pods, a list every few seconds
//! is cheap, and an API server restart needs no resync logic. Every list is
//! paginated and capped.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use posture_core::gpu::GpuSnapshot;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::farm::{ACTIVITY_REASONS, FarmView, KubeInputs, fingerprint, summarise};
use crate::live::{Live, LiveEvent};

/// The label selector of our pods (what `up` and `deploy/` put on them).
pub const DEFAULT_SELECTOR: &str = "app.kubernetes.io/managed-by=posture-farm";
/// Page size of list calls.
const PAGE: u32 = 500;
/// Most pods, nodes, or events of one reason per namespace read per poll.
const MAX_OBJECTS: usize = 5000;

/// What the poller reads.
#[derive(Clone, Debug)]
pub struct KubeSettings {
    /// Only this namespace (default: every namespace).
    pub namespace: Option<String>,
    /// Label selector of our pods.
    pub selector: String,
    /// Time between polls.
    pub poll_interval: Duration,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            namespace: None,
            selector: DEFAULT_SELECTOR.into(),
            poll_interval: Duration::from_secs(5),
        }
    }
}

async fn list_capped<K>(api: &Api<K>, lp: ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut lp = lp.limit(PAGE);
    let mut out = Vec::new();
    loop {
        let list = api.list(&lp).await?;
        out.extend(list.items);
        match list.metadata.continue_ {
            Some(token) if !token.is_empty() && out.len() < MAX_OBJECTS => {
                lp = lp.continue_token(&token);
            }
            _ => break,
        }
    }
    out.truncate(MAX_OBJECTS);
    Ok(out)
}

/// Reads our pods, every node, and the activity Events
/// ([`ACTIVITY_REASONS`]) in the namespaces our pods are in.
pub async fn gather(client: &Client, settings: &KubeSettings) -> Result<KubeInputs, kube::Error> {
    let pods_api: Api<Pod> = match &settings.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let pods = list_capped(&pods_api, ListParams::default().labels(&settings.selector)).await?;
    let nodes = list_capped(&Api::<Node>::all(client.clone()), ListParams::default()).await?;
    let mut namespaces: Vec<String> = match &settings.namespace {
        Some(ns) => vec![ns.clone()],
        None => pods
            .iter()
            .filter_map(|p| p.metadata.namespace.clone())
            .collect(),
    };
    namespaces.sort();
    namespaces.dedup();
    let mut events = Vec::new();
    for ns in &namespaces {
        let api: Api<Event> = Api::namespaced(client.clone(), ns);
        for reason in ACTIVITY_REASONS {
            let lp = ListParams::default().fields(&format!("reason={reason}"));
            events.extend(list_capped(&api, lp).await?);
        }
    }
    Ok(KubeInputs {
        pods,
        nodes,
        events,
    })
}

/// How Kubernetes is read.
pub enum KubeSource {
    /// Not at all (`--no-kubernetes`).
    Off,
    /// Wanted but no client could be made (no kubeconfig, no in-cluster config).
    Unavailable(String),
    /// Through this client.
    Client(Client, KubeSettings),
}

/// Kubernetes as the farm page reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum KubeStatus {
    /// Turned off.
    Off,
    /// Not configured: why.
    Unavailable(String),
    /// Not read yet.
    Waiting,
    /// Read at `at`.
    Ok {
        /// When.
        at: Timestamp,
    },
    /// The last read failed.
    Failing {
        /// Why.
        error: String,
        /// Since when.
        since: Timestamp,
    },
}

#[derive(Default)]
struct FarmState {
    inputs: Option<Arc<KubeInputs>>,
    status: Option<KubeStatus>,
}

/// The farm's sources and what was last read from them (cheap to clone).
#[derive(Clone)]
pub struct Farm {
    state: Arc<RwLock<FarmState>>,
    gpu: Option<watch::Receiver<GpuSnapshot>>,
    prometheus: Option<String>,
}

/// Where the farm page's data comes from, for its header.
#[derive(Clone, Debug, PartialEq)]
pub struct FarmSources {
    /// Kubernetes.
    pub kube: KubeStatus,
    /// The Prometheus URL, when GPU usage is read.
    pub prometheus: Option<String>,
    /// Whether a GPU snapshot with at least one node arrived.
    pub gpu_read: bool,
}

impl Farm {
    /// A farm reading `gpu` snapshots (from the Prometheus at `prometheus`,
    /// for display) and Kubernetes as `kube` says; call [`Farm::run`].
    pub fn new(
        kube: &KubeSource,
        gpu: Option<watch::Receiver<GpuSnapshot>>,
        prometheus: Option<String>,
    ) -> Self {
        let status = match kube {
            KubeSource::Off => KubeStatus::Off,
            KubeSource::Unavailable(why) => KubeStatus::Unavailable(why.clone()),
            KubeSource::Client(..) => KubeStatus::Waiting,
        };
        Self {
            state: Arc::new(RwLock::new(FarmState {
                inputs: None,
                status: Some(status),
            })),
            gpu,
            prometheus,
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut FarmState) -> T) -> T {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// The page's view at `now`, and where it came from.
    pub fn view(&self, now: Timestamp) -> (FarmView, FarmSources) {
        let (inputs, kube) = self.with_state(|s| {
            (
                s.inputs.clone(),
                s.status.clone().unwrap_or(KubeStatus::Waiting),
            )
        });
        let snapshot = self.gpu.as_ref().map(|rx| rx.borrow().clone());
        let view = summarise(inputs.as_deref(), snapshot.as_ref(), now.as_millisecond());
        let sources = FarmSources {
            kube,
            prometheus: self.prometheus.clone(),
            gpu_read: snapshot.is_some_and(|s| !s.nodes.is_empty()),
        };
        (view, sources)
    }

    /// Records a poll's result (the last good inputs stay shown on failure).
    pub fn record(&self, result: Result<KubeInputs, String>) {
        let now = Timestamp::now();
        self.with_state(|s| match result {
            Ok(inputs) => {
                if matches!(s.status, Some(KubeStatus::Failing { .. })) {
                    tracing::info!("Kubernetes API answers again");
                }
                s.inputs = Some(Arc::new(inputs));
                s.status = Some(KubeStatus::Ok { at: now });
            }
            Err(error) => {
                let since = match &s.status {
                    Some(KubeStatus::Failing { since, .. }) => *since,
                    _ => {
                        tracing::warn!(%error, "Kubernetes API unreachable; retrying");
                        now
                    }
                };
                s.status = Some(KubeStatus::Failing { error, since });
            }
        });
    }

    /// Polls Kubernetes and follows GPU snapshots until `shutdown`,
    /// publishing [`LiveEvent::Farm`] whenever the view's
    /// [`fingerprint`] changes.
    pub async fn run(self, kube: KubeSource, live: Live, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let (client, settings) = match kube {
            KubeSource::Client(c, s) => (Some(c), s),
            _ => (None, KubeSettings::default()),
        };
        let mut gpu = self.gpu.clone();
        let mut tick = tokio::time::interval(settings.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = String::new();
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick(), if client.is_some() => {
                    if let Some(c) = &client {
                        let r = gather(c, &settings).await.map_err(|e| posture_analyzer::error_chain(&e));
                        self.record(r);
                    }
                }
                changed = async {
                    match gpu.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if changed.is_err() {
                        // The GPU source stopped: keep its last snapshot.
                        gpu = None;
                    }
                }
            }
            let fp = fingerprint(&self.view(Timestamp::now()).0);
            if fp != last {
                last = fp;
                live.publish(LiveEvent::Farm);
            }
        }
    }
}
