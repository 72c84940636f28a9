//! The scheduling loop: one task that owns the cluster index and the queue,
//! fed by watch streams, deciding through a [`Profile`] and carrying out the
//! decisions through an [`Actuator`].
//!
//! ```text
//!  node watch ─┐                        ┌─► Actuator::bind      (≤ bind_concurrency in flight)
//!  pod watch ──┼─► Cluster + Queue ─► Profile::schedule ─► Decision ─┼─► Actuator::evict / nominate
//!  GPU watch ──┘         ▲                                   └─► Reports (Events, PodScheduled)
//!                        └──────────── results (bound / 409 skip / retry with backoff) ◄──┘
//! ```
//!
//! Level-triggered and restart-safe: on start the watches list every node
//! and pending pod; pods already bound are not in the pending selection; a
//! pod someone else binds first answers 409 and is skipped. A pending pod is
//! never dropped: it stays queued (active or backoff) until it is bound or
//! deleted, and every failed attempt leaves an Event.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client};
use posture_core::backoff::Backoff;
use posture_core::gpu::GpuSnapshot;
use posture_core::queue::SchedulingQueue;
use posture_core::{
    Binding, Cluster, Decision, Eviction, Millis, Nomination, PodInfo, PodKey, Profile,
    SchedulingContext,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;

use crate::binder::{self, BindOutcome};
use crate::convert;
use crate::events::{PodRef, Report, Reports};
use crate::metrics::SchedulerMetrics;

/// Which pods the loop watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodScope {
    /// Only pending pods of ours (`spec.nodeName=`): round-robin, GPU.
    Pending,
    /// Every pod of ours, pending and bound: one-pod-per-node capacity.
    Ours,
    /// Every pod of ours plus every running pod bound anywhere: resource fit.
    OursAndAllBound,
}

/// Loop settings.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// `spec.schedulerName` we answer to.
    pub scheduler_name: String,
    /// Namespace to watch; `None` for all namespaces.
    pub namespace: Option<String>,
    /// Label selector for our pods; `None` or empty for all.
    pub label_selector: Option<String>,
    pub scope: PodScope,
    /// Bind requests in flight at most. Bounded so a burst of 10,000 pods
    /// does not open 10,000 requests; high enough that the API server, not
    /// the scheduler, is the limit.
    pub bind_concurrency: usize,
    pub backoff: Backoff,
    /// Seed of the RNG used for backoff jitter.
    pub seed: u64,
    /// How long a preemptor waits for its victims before it is retried anyway.
    pub preemption_wait: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            scheduler_name: "rr-scheduler".into(),
            namespace: Some("default".into()),
            label_selector: Some("app=posture".into()),
            scope: PodScope::Pending,
            bind_concurrency: 64,
            backoff: Backoff::default(),
            seed: 0,
            preemption_wait: Duration::from_secs(30),
        }
    }
}

/// What became of one eviction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvictResult {
    /// Accepted: the pod will terminate.
    Evicted,
    /// Already gone.
    Gone,
    /// Refused (a PodDisruptionBudget): try another plan or back off.
    Refused(String),
    /// Any other error.
    Failed(String),
}

/// The loop's hands: everything it does to the cluster. Production uses
/// [`KubeActuator`]; tests supply an in-memory one.
pub trait Actuator: Send + Sync + 'static {
    /// Binds a pod to a node.
    fn bind(&self, binding: &Binding) -> BoxFuture<'static, BindOutcome>;
    /// Evicts a victim.
    fn evict(&self, eviction: &Eviction) -> BoxFuture<'static, EvictResult>;
    /// Sets `status.nominatedNodeName`.
    fn nominate(&self, nomination: &Nomination) -> BoxFuture<'static, Result<(), String>>;
}

/// The actuator that talks to the API server.
#[derive(Clone)]
pub struct KubeActuator {
    pub client: Client,
}

impl Actuator for KubeActuator {
    fn bind(&self, binding: &Binding) -> BoxFuture<'static, BindOutcome> {
        let client = self.client.clone();
        let binding = binding.clone();
        Box::pin(async move { binder::bind(&client, &binding).await })
    }

    fn evict(&self, eviction: &Eviction) -> BoxFuture<'static, EvictResult> {
        let client = self.client.clone();
        let eviction = eviction.clone();
        Box::pin(async move { preempt_io::evict(&client, &eviction).await })
    }

    fn nominate(&self, nomination: &Nomination) -> BoxFuture<'static, Result<(), String>> {
        let client = self.client.clone();
        let nomination = nomination.clone();
        Box::pin(async move { preempt_io::nominate(&client, &nomination).await })
    }
}

/// Adapter from the preemption I/O module to the actuator's result types.
mod preempt_io {
    use super::*;
    use crate::preempt::{self, EvictOutcome};

    pub async fn evict(client: &Client, e: &Eviction) -> EvictResult {
        match preempt::evict(client, e).await {
            Ok(EvictOutcome::Evicted) => EvictResult::Evicted,
            Ok(EvictOutcome::AlreadyGone) => EvictResult::Gone,
            Ok(EvictOutcome::Refused { reason }) => EvictResult::Refused(reason),
            Err(err) => EvictResult::Failed(match std::error::Error::source(&err) {
                Some(s) => format!("{err}: {s}"),
                None => err.to_string(),
            }),
        }
    }

    pub async fn nominate(client: &Client, n: &Nomination) -> Result<(), String> {
        preempt::nominate(client, n)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A stream of watch events.
pub type EventStream<K> = BoxStream<'static, Result<WatchEvent<K>, watcher::Error>>;

/// The watch streams for a configuration: nodes, and one or two pod streams.
pub fn watch_streams(
    client: &Client,
    cfg: &RuntimeConfig,
) -> (EventStream<Node>, Vec<EventStream<Pod>>) {
    let nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default());
    let pods_api = match &cfg.namespace {
        Some(ns) => Api::<Pod>::namespaced(client.clone(), ns),
        None => Api::<Pod>::all(client.clone()),
    };
    let mut fields = format!("spec.schedulerName={}", cfg.scheduler_name);
    if cfg.scope == PodScope::Pending {
        // Unassigned and not finished: the selection kube-scheduler watches.
        fields.push_str(",spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed");
    }
    let mut ours = watcher::Config::default().fields(&fields);
    if let Some(sel) = cfg.label_selector.as_deref().filter(|s| !s.is_empty()) {
        ours = ours.labels(sel);
    }
    let mut pods = vec![watcher(pods_api, ours)];
    if cfg.scope == PodScope::OursAndAllBound {
        let bound = watcher::Config::default()
            .fields("spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed");
        pods.push(watcher(Api::<Pod>::all(client.clone()), bound));
    }
    (nodes, pods)
}

/// A watch of scheduler-plugins PodGroups (`scheduling.x-k8s.io`), for
/// clusters where that CRD is installed.
pub fn podgroup_stream(
    client: &Client,
    namespace: Option<&str>,
) -> EventStream<kube::api::DynamicObject> {
    let ar = crate::podgroup::api_resource();
    let api: Api<kube::api::DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed()
}

fn watcher<K>(api: Api<K>, cfg: watcher::Config) -> EventStream<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    // Managed fields are large and never read: drop them to save memory
    // at 10,000 pods. `default_backoff` retries the watch forever when the
    // API server goes away, so the loop survives API server restarts.
    watcher::watcher(api, cfg)
        .default_backoff()
        .map(|ev| {
            ev.map(|e| {
                e.modify(|o| {
                    o.meta_mut().managed_fields = None;
                })
            })
        })
        .boxed()
}

/// Converts tokio's clock into the core's [`Millis`], so paused test time
/// and wall time agree.
#[derive(Clone, Copy, Debug)]
struct Clock {
    base_ms: Millis,
    base: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        let base_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0);
        Self {
            base_ms,
            base: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> Millis {
        self.base_ms + self.base.elapsed().as_millis() as Millis
    }

    fn instant_at(&self, at: Millis) -> tokio::time::Instant {
        self.base + Duration::from_millis((at - self.base_ms).max(0) as u64)
    }
}

/// Most units decided before the loop looks at events again, so a long
/// queue does not starve watch processing.
const DECISIONS_PER_TURN: usize = 256;

/// What one in-flight operation reports back.
enum Done {
    Bind {
        binding: Binding,
        /// The pod's UID when the bind was issued (the pod may leave the
        /// watched selection before the answer arrives).
        uid: String,
        created_at: Millis,
        outcome: BindOutcome,
    },
    Preempt {
        unit: Vec<PodKey>,
        evictions: Vec<(Eviction, EvictResult)>,
        nominations_failed: Vec<String>,
    },
}

/// Tagged pod event (which pod stream it came from).
type PodStreamEvent = (usize, Result<WatchEvent<Pod>, watcher::Error>);

/// The loop. Create with [`Scheduler::new`], run with [`Scheduler::run`].
pub struct Scheduler {
    cfg: RuntimeConfig,
    profile: Box<dyn Profile>,
    actuator: Arc<dyn Actuator>,
    reports: Reports,
    metrics: Arc<SchedulerMetrics>,
    gpu: Option<watch::Receiver<GpuSnapshot>>,
    podgroups: Option<EventStream<kube::api::DynamicObject>>,
    ready: Option<Box<dyn Fn(bool) + Send>>,

    clock: Clock,
    rng: StdRng,
    cluster: Cluster,
    queue: SchedulingQueue,
    /// Pods with a bind in flight → node assumed.
    in_flight: HashMap<PodKey, String>,
    /// Preemptors waiting for their victims.
    preempting: HashSet<PodKey>,
    ops: FuturesUnordered<BoxFuture<'static, Done>>,
    binds_in_flight: usize,
    /// Last FailedScheduling message per pod (condition patched on change).
    last_failure: HashMap<PodKey, String>,
    warned_uids: HashSet<String>,
    warned_config: HashSet<String>,
    nodes_synced: bool,
    pods_synced: Vec<bool>,
    init_seen_nodes: HashSet<String>,
    init_seen_pods: Vec<HashSet<PodKey>>,
}

impl Scheduler {
    /// Builds a loop around a profile.
    pub fn new(
        cfg: RuntimeConfig,
        profile: Box<dyn Profile>,
        actuator: Arc<dyn Actuator>,
        reports: Reports,
        metrics: Arc<SchedulerMetrics>,
    ) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        let queue = SchedulingQueue::new(cfg.backoff);
        Self {
            cfg,
            profile,
            actuator,
            reports,
            metrics,
            gpu: None,
            podgroups: None,
            ready: None,
            clock: Clock::new(),
            rng,
            cluster: Cluster::new(),
            queue,
            in_flight: HashMap::new(),
            preempting: HashSet::new(),
            ops: FuturesUnordered::new(),
            binds_in_flight: 0,
            last_failure: HashMap::new(),
            warned_uids: HashSet::new(),
            warned_config: HashSet::new(),
            nodes_synced: false,
            pods_synced: Vec::new(),
            init_seen_nodes: HashSet::new(),
            init_seen_pods: Vec::new(),
        }
    }

    /// Feeds GPU snapshots to the profile (`ctx.gpu`).
    pub fn with_gpu(mut self, gpu: watch::Receiver<GpuSnapshot>) -> Self {
        self.gpu = Some(gpu);
        self
    }

    /// Feeds scheduler-plugins PodGroup objects (their `minMember` sizes gangs).
    pub fn with_podgroups(mut self, events: EventStream<kube::api::DynamicObject>) -> Self {
        self.podgroups = Some(events);
        self
    }

    /// Called with `true` once the caches are synced (for `/readyz`).
    pub fn on_ready(mut self, ready: impl Fn(bool) + Send + 'static) -> Self {
        self.ready = Some(Box::new(ready));
        self
    }

    /// Runs until `shutdown` resolves. In-flight binds are finished first.
    pub async fn run(
        mut self,
        nodes: EventStream<Node>,
        pods: Vec<EventStream<Pod>>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        self.pods_synced = vec![false; pods.len()];
        self.init_seen_pods = vec![HashSet::new(); pods.len()];
        let mut pod_events: SelectAll<Pin<Box<dyn Stream<Item = PodStreamEvent> + Send>>> =
            SelectAll::new();
        for (i, s) in pods.into_iter().enumerate() {
            pod_events.push(Box::pin(s.map(move |e| (i, e))));
        }
        let mut nodes = nodes;
        let mut gpu = self.gpu.clone();
        let mut podgroups = self
            .podgroups
            .take()
            .unwrap_or_else(|| futures::stream::pending().boxed());
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        tracing::info!(
            profile = self.profile.name(),
            scheduler = %self.cfg.scheduler_name,
            namespace = self.cfg.namespace.as_deref().unwrap_or("<all>"),
            "scheduler starting"
        );
        loop {
            self.schedule_some();
            self.publish_gauges();
            let wake = self
                .queue
                .next_retry_at()
                .map(|at| self.clock.instant_at(at))
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(done) = self.ops.next(), if !self.ops.is_empty() => self.on_done(done),
                Some((i, ev)) = pod_events.next() => self.on_pod_event(i, ev),
                Some(ev) = nodes.next() => self.on_node_event(ev),
                Some(ev) = podgroups.next() => self.on_podgroup_event(ev),
                changed = async {
                    match gpu.as_mut() {
                        Some(g) => g.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if changed.is_err() {
                        tracing::warn!("GPU usage source stopped; keeping the last snapshot");
                        gpu = None;
                    } else {
                        // New usage data may let waiting pods fit.
                        self.queue.move_all_to_active();
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    self.queue.promote_due(self.clock.now());
                }
                _ = tick.tick() => self.publish_node_gauges(),
            }
        }
        tracing::info!(
            in_flight = self.ops.len(),
            "shutting down: finishing in-flight requests"
        );
        while let Some(done) = self.ops.next().await {
            self.on_done(done);
        }
    }

    fn synced(&self) -> bool {
        self.nodes_synced && self.pods_synced.iter().all(|s| *s)
    }

    fn schedule_some(&mut self) {
        if !self.synced() {
            return;
        }
        self.queue.promote_due(self.clock.now());
        let mut decided = 0;
        while decided < DECISIONS_PER_TURN && self.binds_in_flight < self.cfg.bind_concurrency {
            let Some(key) = self.queue.pop() else { break };
            decided += 1;
            self.schedule_unit(key);
        }
    }

    fn unit_for(&mut self, key: &PodKey) -> Vec<PodKey> {
        let Some(pod) = self.cluster.pod(key) else {
            return Vec::new();
        };
        match (&pod.group, self.profile.gang_aware()) {
            (Some(group), true) => {
                let members: Vec<PodKey> = self
                    .cluster
                    .pending_group_members(&key.namespace, &group.name)
                    .into_iter()
                    .filter(|p| !self.in_flight.contains_key(&p.key))
                    .map(|p| p.key.clone())
                    .collect();
                for m in &members {
                    self.queue.take(m);
                }
                if members.contains(key) {
                    members
                } else {
                    vec![key.clone()]
                }
            }
            _ => vec![key.clone()],
        }
    }

    fn schedule_unit(&mut self, key: PodKey) {
        let unit_keys = self.unit_for(&key);
        let unit: Vec<&PodInfo> = unit_keys
            .iter()
            .filter_map(|k| self.cluster.pod(k))
            .filter(|p| p.is_pending())
            .collect();
        if unit.is_empty() {
            // Bound or deleted meanwhile.
            self.queue.remove(&key);
            return;
        }
        let now = self.clock.now();
        let snapshot = self.gpu.as_ref().map(|g| g.borrow().clone());
        let ctx = SchedulingContext {
            now,
            gpu: snapshot.as_ref(),
        };
        let started = std::time::Instant::now();
        let decision = self.profile.schedule(&self.cluster, &unit, &ctx);
        self.metrics
            .attempt_duration
            .observe(started.elapsed().as_secs_f64());
        let profile = self.profile.name();
        let is_gang = unit.len() > 1 || unit.first().is_some_and(|p| p.group.is_some());
        let unit_refs: Vec<(PodKey, String, Millis)> = unit
            .iter()
            .map(|p| (p.key.clone(), p.uid.clone(), p.created_at))
            .collect();
        match decision {
            Decision::Bind(bindings) => {
                self.metrics.attempt(profile, "scheduled");
                if is_gang && self.profile.gang_aware() {
                    self.metrics.gang("success");
                }
                let bound: HashSet<PodKey> = bindings.iter().map(|b| b.pod.clone()).collect();
                for binding in bindings {
                    let (uid, created_at) = unit_refs
                        .iter()
                        .find(|(k, _, _)| *k == binding.pod)
                        .map(|(_, u, c)| (u.clone(), *c))
                        .unwrap_or_else(|| (String::new(), now));
                    self.issue_bind(binding, uid, created_at);
                }
                // Members the decision left out were taken off the queue with
                // the unit: put them back, so no pending pod is ever dropped.
                for (k, _, _) in unit_refs.iter().filter(|(k, _, _)| !bound.contains(k)) {
                    self.queue.backoff(k, now, &mut self.rng);
                }
            }
            Decision::Preempt {
                evictions,
                nominations,
                message,
            } => {
                let already_leaving = !evictions.is_empty()
                    && evictions
                        .iter()
                        .all(|e| self.cluster.pod(&e.pod).is_none_or(|p| p.terminating));
                let unit: Vec<PodKey> = unit_refs.iter().map(|(k, _, _)| k.clone()).collect();
                let retry_at = now + self.cfg.preemption_wait.as_millis() as Millis;
                if already_leaving {
                    // The victims are on their way out: wait for their deletion.
                    self.metrics.attempt(profile, "waiting");
                    for k in &unit {
                        self.queue.defer(k, retry_at);
                    }
                    return;
                }
                self.metrics.attempt(profile, "preempting");
                self.metrics.preemptions.inc();
                tracing::info!(unit = ?unit, victims = evictions.len(), %message, "preempting");
                for k in &unit {
                    self.preempting.insert(k.clone());
                    self.queue.defer(k, retry_at);
                }
                // Hold the nominated nodes for the unit at once, before the API
                // confirms, so no lower-priority pod takes them meanwhile.
                for n in &nominations {
                    self.cluster.set_nominated(&n.pod, Some(&n.node));
                }
                let actuator = self.actuator.clone();
                self.ops.push(Box::pin(async move {
                    let mut nominations_failed = Vec::new();
                    for n in &nominations {
                        if let Err(err) = actuator.nominate(n).await {
                            nominations_failed.push(format!("{}: {err}", n.pod));
                        }
                    }
                    let results =
                        futures::future::join_all(evictions.iter().map(|e| actuator.evict(e)))
                            .await;
                    Done::Preempt {
                        unit,
                        evictions: evictions.into_iter().zip(results).collect(),
                        nominations_failed,
                    }
                }));
            }
            Decision::Unschedulable { message, summary } => {
                self.metrics.attempt(profile, "unschedulable");
                if is_gang && self.profile.gang_aware() {
                    self.metrics.gang("failure");
                }
                let reason = summary
                    .dominant()
                    .map(|r| format!("{r:?}"))
                    .map(|r| r.split('(').next().unwrap_or_default().to_string())
                    .unwrap_or_else(|| "NoNodes".into());
                self.metrics.failure(&reason);
                for (k, uid, _) in &unit_refs {
                    let retry_at = self.queue.backoff(k, now, &mut self.rng);
                    tracing::debug!(pod = %k, %message, retry_in_ms = retry_at - now, "unschedulable");
                    self.report_failure(k, uid, &message);
                }
            }
            Decision::Wait { retry_at, message } => {
                self.metrics.attempt(profile, "waiting");
                for (k, _, _) in &unit_refs {
                    tracing::debug!(pod = %k, %message, "waiting");
                    self.queue.defer(k, retry_at);
                }
            }
        }
    }

    fn report_failure(&mut self, key: &PodKey, uid: &str, message: &str) {
        let changed = self.last_failure.get(key).map(String::as_str) != Some(message);
        if changed {
            self.last_failure.insert(key.clone(), message.to_string());
        }
        self.reports.send(Report::FailedScheduling {
            pod: PodRef {
                key: key.clone(),
                uid: uid.to_string(),
            },
            message: message.to_string(),
            set_condition: changed,
        });
    }

    fn issue_bind(&mut self, binding: Binding, uid: String, created_at: Millis) {
        self.cluster.assume(&binding.pod, &binding.node);
        self.in_flight
            .insert(binding.pod.clone(), binding.node.clone());
        self.binds_in_flight += 1;
        let fut = self.actuator.bind(&binding);
        self.ops.push(Box::pin(async move {
            let outcome = fut.await;
            Done::Bind {
                binding,
                uid,
                created_at,
                outcome,
            }
        }));
    }

    fn on_done(&mut self, done: Done) {
        let now = self.clock.now();
        match done {
            Done::Bind {
                binding,
                uid,
                created_at,
                outcome,
            } => {
                self.binds_in_flight = self.binds_in_flight.saturating_sub(1);
                self.in_flight.remove(&binding.pod);
                self.metrics.bind(outcome.label());
                match outcome {
                    BindOutcome::Bound => {
                        tracing::info!(pod = %binding.pod, node = %binding.node, "bound");
                        self.queue.done(&binding.pod);
                        self.last_failure.remove(&binding.pod);
                        self.preempting.remove(&binding.pod);
                        if created_at > 0 {
                            self.metrics
                                .e2e_duration
                                .observe(((now - created_at).max(0) as f64) / 1000.0);
                        }
                        self.profile.bound(&binding, now);
                        self.reports.send(Report::Scheduled {
                            pod: PodRef {
                                key: binding.pod.clone(),
                                uid,
                            },
                            node: binding.node,
                        });
                    }
                    BindOutcome::AlreadyBound(msg) => {
                        tracing::info!(pod = %binding.pod, %msg, "already bound by someone else; skipped");
                        self.queue.remove(&binding.pod);
                        self.cluster.forget(&binding.pod);
                    }
                    BindOutcome::PodGone => {
                        tracing::info!(pod = %binding.pod, "pod deleted before binding; skipped");
                        self.queue.remove(&binding.pod);
                        self.cluster.remove_pod(&binding.pod);
                    }
                    BindOutcome::Failed(err) => {
                        tracing::warn!(pod = %binding.pod, node = %binding.node, %err, "bind failed; will retry");
                        self.cluster.forget(&binding.pod);
                        self.profile.bind_failed(&binding);
                        self.metrics.failure("BindError");
                        if self.queue.contains(&binding.pod) {
                            self.queue.backoff(&binding.pod, now, &mut self.rng);
                        }
                        let message = format!("Binding rejected: {err}");
                        self.report_failure(&binding.pod, &uid, &message);
                    }
                }
            }
            Done::Preempt {
                unit,
                evictions,
                nominations_failed,
            } => {
                for failed in &nominations_failed {
                    tracing::warn!(%failed, "could not set nominatedNodeName");
                }
                let mut refused = Vec::new();
                for (eviction, result) in evictions {
                    match result {
                        EvictResult::Evicted => {
                            self.metrics.preemption_victims.inc();
                            let uid = self
                                .cluster
                                .pod(&eviction.pod)
                                .map(|p| p.uid.clone())
                                .unwrap_or_default();
                            self.reports.send(Report::Preempted {
                                victim: PodRef {
                                    key: eviction.pod.clone(),
                                    uid,
                                },
                                preemptor: eviction.preemptor.clone(),
                                node: eviction.node.clone(),
                            });
                        }
                        EvictResult::Gone => {}
                        EvictResult::Refused(reason) | EvictResult::Failed(reason) => {
                            // The next plan must pick other victims (or none).
                            self.cluster.refuse_eviction(
                                &eviction.pod,
                                now + self.cfg.preemption_wait.as_millis() as Millis,
                            );
                            refused.push(format!("{}: {reason}", eviction.pod));
                        }
                    }
                }
                if !refused.is_empty() {
                    let message = format!(
                        "preemption could not evict every victim ({}); backing off",
                        refused.join("; ")
                    );
                    tracing::warn!(unit = ?unit, %message);
                    self.metrics.failure("EvictionRefused");
                    for k in &unit {
                        self.preempting.remove(k);
                        self.cluster.set_nominated(k, None);
                        if self.queue.contains(k) {
                            self.queue.backoff(k, now, &mut self.rng);
                            let uid = self
                                .cluster
                                .pod(k)
                                .map(|p| p.uid.clone())
                                .unwrap_or_default();
                            self.report_failure(k, &uid, &message);
                        }
                    }
                }
            }
        }
    }

    fn on_node_event(&mut self, ev: Result<WatchEvent<Node>, watcher::Error>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(err) => {
                tracing::warn!(%err, "node watch error; retrying");
                return;
            }
        };
        match ev {
            WatchEvent::Init => self.init_seen_nodes.clear(),
            WatchEvent::InitApply(node) => {
                let info = convert::node_info(&node);
                self.init_seen_nodes.insert(info.name.clone());
                self.cluster.upsert_node(info);
            }
            WatchEvent::InitDone => {
                let gone: Vec<String> = self
                    .cluster
                    .nodes()
                    .filter(|n| !self.init_seen_nodes.contains(&n.info.name))
                    .map(|n| n.info.name.clone())
                    .collect();
                for n in gone {
                    self.cluster.remove_node(&n);
                }
                self.init_seen_nodes.clear();
                self.nodes_synced = true;
                self.queue.move_all_to_active();
                self.after_sync_change();
                self.publish_node_gauges();
            }
            WatchEvent::Apply(node) => {
                let change = self.cluster.upsert_node(convert::node_info(&node));
                if change.added || change.may_fit_more {
                    let moved = self.queue.move_all_to_active();
                    if moved > 0 {
                        tracing::debug!(moved, node = ?node.metadata.name, "node change: retrying waiting pods");
                    }
                }
                if change.added {
                    self.after_sync_change();
                }
            }
            WatchEvent::Delete(node) => {
                if let Some(name) = node.metadata.name.as_deref() {
                    self.cluster.remove_node(name);
                    self.after_sync_change();
                }
            }
        }
    }

    fn on_podgroup_event(
        &mut self,
        ev: Result<WatchEvent<kube::api::DynamicObject>, watcher::Error>,
    ) {
        match ev {
            Ok(WatchEvent::Apply(obj)) | Ok(WatchEvent::InitApply(obj)) => {
                crate::podgroup::apply_event(&mut self.cluster, &obj, false);
                // A gang's size may have changed: let waiting members try again.
                self.queue.move_all_to_active();
            }
            Ok(WatchEvent::Delete(obj)) => {
                crate::podgroup::apply_event(&mut self.cluster, &obj, true)
            }
            Ok(WatchEvent::Init) | Ok(WatchEvent::InitDone) => {}
            Err(err) => tracing::warn!(%err, "PodGroup watch error; retrying"),
        }
    }

    fn after_sync_change(&mut self) {
        let ready = self.synced();
        if let Some(cb) = &self.ready {
            cb(ready);
        }
        if !self.nodes_synced {
            return;
        }
        for w in self.profile.config_warnings(&self.cluster) {
            if self.warned_config.insert(w.clone()) {
                tracing::warn!("{w}");
            }
        }
    }

    fn on_pod_event(&mut self, stream: usize, ev: Result<WatchEvent<Pod>, watcher::Error>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(err) => {
                tracing::warn!(%err, "pod watch error; retrying");
                return;
            }
        };
        match ev {
            WatchEvent::Init => self.init_seen_pods[stream].clear(),
            WatchEvent::InitApply(pod) => {
                if let Some(key) = self.apply_pod(&pod) {
                    self.init_seen_pods[stream].insert(key);
                }
            }
            WatchEvent::InitDone => {
                let seen = std::mem::take(&mut self.init_seen_pods[stream]);
                let stale: Vec<PodKey> = self
                    .cluster
                    .pods()
                    .filter(|p| if stream == 0 { p.ours } else { !p.ours })
                    .filter(|p| !seen.contains(&p.key) && !self.in_flight.contains_key(&p.key))
                    .map(|p| p.key.clone())
                    .collect();
                for k in stale {
                    self.forget_pod(&k);
                }
                self.pods_synced[stream] = true;
                self.after_sync_change();
            }
            WatchEvent::Apply(pod) => {
                self.apply_pod(&pod);
            }
            WatchEvent::Delete(pod) => {
                let info = convert::pod_info(&pod, &self.cfg.scheduler_name);
                self.forget_pod(&info.key);
            }
        }
    }

    /// Removes a pod that was deleted or left the watched selection.
    fn forget_pod(&mut self, key: &PodKey) {
        self.queue.remove(key);
        self.last_failure.remove(key);
        self.preempting.remove(key);
        if let Some(old) = self.cluster.remove_pod(key)
            && old.node_name.is_some()
            && self.cfg.scope != PodScope::Pending
        {
            // Capacity freed (a victim gone, a pod finished): retry waiting pods.
            self.queue.move_all_to_active();
        }
    }

    /// Updates the index from a pod; returns its key.
    fn apply_pod(&mut self, pod: &Pod) -> Option<PodKey> {
        let mut info = convert::pod_info(pod, &self.cfg.scheduler_name);
        let key = info.key.clone();
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        );
        if terminal {
            self.forget_pod(&key);
            return Some(key);
        }
        if info.node_name.is_none()
            && let Some(node) = self.in_flight.get(&key)
        {
            // An event older than our bind: keep the assumption.
            info.node_name = Some(node.clone());
        }
        if info.ours
            && let Some(err) = &info.priority_error
            && self.warned_uids.insert(info.uid.clone())
        {
            self.reports.send(Report::Warning {
                pod: PodRef {
                    key: key.clone(),
                    uid: info.uid.clone(),
                },
                reason: "InvalidPriority".into(),
                message: err.clone(),
            });
        }
        let pending_ours = info.ours && info.is_pending();
        let (priority, created_at) = (info.priority, info.created_at);
        let was_bound = self
            .cluster
            .upsert_pod(info)
            .is_some_and(|old| old.node_name.is_some());
        if pending_ours {
            self.queue.add(key.clone(), priority, created_at);
        } else if !self.in_flight.contains_key(&key) {
            self.queue.remove(&key);
            if was_bound && self.cluster.pod(&key).is_some_and(|p| p.terminating) {
                // Terminating pods still hold their node until deleted.
            }
        }
        Some(key)
    }

    fn publish_gauges(&self) {
        self.metrics.queue_depth("active", self.queue.active_len());
        self.metrics
            .queue_depth("backoff", self.queue.backoff_len());
        self.metrics.queue_depth("in_flight", self.binds_in_flight);
    }

    fn publish_node_gauges(&self) {
        let (mut ready, mut not_ready, mut cordoned, mut used) = (0i64, 0i64, 0i64, 0i64);
        for n in self.cluster.nodes() {
            if !n.info.ready {
                not_ready += 1;
            } else if n.info.unschedulable {
                cordoned += 1;
            } else {
                ready += 1;
                if !n.ours.is_empty() {
                    used += 1;
                }
            }
        }
        for (state, v) in [
            ("ready", ready),
            ("not_ready", not_ready),
            ("cordoned", cordoned),
        ] {
            self.metrics
                .nodes
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: state.into(),
                })
                .set(v);
        }
        let permille = if ready > 0 { used * 1000 / ready } else { 0 };
        self.metrics.node_utilization_permille.set(permille);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ApiMock, status_json};
    use futures::channel::mpsc as fmpsc;
    use posture_core::policy::RoundRobin;
    use serde_json::json;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    fn node(name: &str, ready: bool, cordoned: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"unschedulable": cordoned},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}
            }
        }))
        .unwrap()
    }

    fn pod(name: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "creationTimestamp": "2026-11-23T10:00:00Z", "labels": {"app": "posture"}},
            "spec": {"schedulerName": "rr-scheduler", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending"}
        }))
        .unwrap()
    }

    /// Scripted bind results per pod name; default `Bound`.
    #[derive(Default)]
    struct FakeActuator {
        binds: Mutex<Vec<Binding>>,
        evictions: Mutex<Vec<Eviction>>,
        nominations: Mutex<Vec<Nomination>>,
        script: Mutex<HashMap<String, VecDeque<&'static str>>>,
    }

    impl Actuator for FakeActuator {
        fn bind(&self, binding: &Binding) -> BoxFuture<'static, BindOutcome> {
            self.binds.lock().unwrap().push(binding.clone());
            let next = self
                .script
                .lock()
                .unwrap()
                .get_mut(&binding.pod.name)
                .and_then(|q| q.pop_front())
                .unwrap_or("bound");
            Box::pin(async move {
                match next {
                    "conflict" => BindOutcome::AlreadyBound("already assigned".into()),
                    "error" => BindOutcome::Failed(kube::Error::Api(
                        kube::core::Status::failure(
                            "etcdserver: request timed out",
                            "InternalError",
                        )
                        .with_code(500)
                        .boxed(),
                    )),
                    _ => BindOutcome::Bound,
                }
            })
        }
        fn evict(&self, e: &Eviction) -> BoxFuture<'static, EvictResult> {
            self.evictions.lock().unwrap().push(e.clone());
            Box::pin(async { EvictResult::Evicted })
        }
        fn nominate(&self, n: &Nomination) -> BoxFuture<'static, Result<(), String>> {
            self.nominations.lock().unwrap().push(n.clone());
            Box::pin(async { Ok(()) })
        }
    }

    struct Harness {
        nodes: fmpsc::UnboundedSender<Result<WatchEvent<Node>, watcher::Error>>,
        pods: fmpsc::UnboundedSender<Result<WatchEvent<Pod>, watcher::Error>>,
        actuator: Arc<FakeActuator>,
        reports: tokio::sync::mpsc::Receiver<Report>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Harness {
        fn start(order: Vec<String>) -> Self {
            Self::start_with(Box::new(RoundRobin::new(order)), RuntimeConfig::default())
        }

        fn start_with(profile: Box<dyn Profile>, cfg: RuntimeConfig) -> Self {
            Self::start_full(profile, cfg, None)
        }

        fn start_full(
            profile: Box<dyn Profile>,
            cfg: RuntimeConfig,
            gpu: Option<watch::Receiver<GpuSnapshot>>,
        ) -> Self {
            let (ntx, nrx) = fmpsc::unbounded();
            let (ptx, prx) = fmpsc::unbounded();
            let actuator = Arc::new(FakeActuator::default());
            let metrics = Arc::new(SchedulerMetrics::default());
            let (reports, report_rx) = Reports::channel(metrics.clone());
            let sched = Scheduler::new(cfg, profile, actuator.clone(), reports, metrics);
            let sched = match gpu {
                Some(rx) => sched.with_gpu(rx),
                None => sched,
            };
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(sched.run(nrx.boxed(), vec![prx.boxed()], async move {
                let _ = stop_rx.await;
            }));
            Harness {
                nodes: ntx,
                pods: ptx,
                actuator,
                reports: report_rx,
                stop: Some(stop_tx),
                task,
            }
        }

        fn init_nodes(&self, nodes: Vec<Node>) {
            self.nodes.unbounded_send(Ok(WatchEvent::Init)).unwrap();
            for n in nodes {
                self.nodes
                    .unbounded_send(Ok(WatchEvent::InitApply(n)))
                    .unwrap();
            }
            self.nodes.unbounded_send(Ok(WatchEvent::InitDone)).unwrap();
        }

        fn init_pods(&self, pods: Vec<Pod>) {
            self.pods.unbounded_send(Ok(WatchEvent::Init)).unwrap();
            for p in pods {
                self.pods
                    .unbounded_send(Ok(WatchEvent::InitApply(p)))
                    .unwrap();
            }
            self.pods.unbounded_send(Ok(WatchEvent::InitDone)).unwrap();
        }

        async fn settle(&self) {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        }

        fn bound_nodes(&self) -> Vec<String> {
            self.actuator
                .binds
                .lock()
                .unwrap()
                .iter()
                .map(|b| b.node.clone())
                .collect()
        }

        async fn stop(mut self) -> Vec<Report> {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
            self.task.await.unwrap();
            let mut out = Vec::new();
            while let Ok(r) = self.reports.try_recv() {
                out.push(r);
            }
            out
        }
    }

    fn prio_pod(name: &str, priority: i32, node: Option<&str>, group: Option<(&str, u32)>) -> Pod {
        let mut annotations = serde_json::Map::new();
        annotations.insert("priority".into(), json!(priority.to_string()));
        if let Some((g, n)) = group {
            annotations.insert("pod-group".into(), json!(g));
            annotations.insert("pod-group-min-member".into(), json!(n.to_string()));
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "creationTimestamp": "2026-11-23T10:00:00Z", "annotations": annotations},
            "spec": {"schedulerName": "posture-priority", "nodeName": node,
                "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": if node.is_some() { "Running" } else { "Pending" }}
        }))
        .unwrap()
    }

    fn priority_harness() -> Harness {
        use posture_core::policy::priority::{PriorityConfig, PriorityProfile};
        let cfg = RuntimeConfig {
            scheduler_name: "posture-priority".into(),
            label_selector: None,
            scope: PodScope::Ours,
            ..RuntimeConfig::default()
        };
        Harness::start_with(
            Box::new(PriorityProfile::new(PriorityConfig::default())),
            cfg,
        )
    }

    /// Issue 6, done means (1): three nodes, two low-priority pods bound; a
    /// high-priority pod evicts exactly one of them and takes its node once
    /// the victim is gone.
    #[tokio::test(start_paused = true)]
    async fn high_priority_pod_preempts_exactly_one_low_pod() {
        let h = priority_harness();
        h.init_nodes(vec![
            node("n1", true, false),
            node("n2", true, false),
            node("n3", true, false),
        ]);
        h.init_pods(vec![
            prio_pod("low-1", 10, Some("n1"), None),
            prio_pod("low-2", 10, Some("n2"), None),
            prio_pod("filler", 100, Some("n3"), None),
        ]);
        h.settle().await;
        h.pods
            .unbounded_send(Ok(WatchEvent::Apply(prio_pod("high", 100, None, None))))
            .unwrap();
        h.settle().await;
        let evictions = h.actuator.evictions.lock().unwrap().clone();
        assert_eq!(evictions.len(), 1, "{evictions:?}");
        let victim = evictions[0].pod.name.clone();
        let freed = evictions[0].node.clone();
        assert!(victim.starts_with("low-"));
        let noms = h.actuator.nominations.lock().unwrap().clone();
        assert_eq!(noms.len(), 1);
        assert_eq!(
            (noms[0].pod.name.as_str(), noms[0].node.as_str()),
            ("high", freed.as_str())
        );
        assert!(
            h.bound_nodes().is_empty(),
            "no bind before the victim is gone"
        );
        // The victim terminates, then is deleted.
        let mut leaving = prio_pod(&victim, 10, Some(&freed), None);
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        h.pods
            .unbounded_send(Ok(WatchEvent::Apply(leaving.clone())))
            .unwrap();
        h.settle().await;
        assert!(h.bound_nodes().is_empty());
        assert_eq!(
            h.actuator.evictions.lock().unwrap().len(),
            1,
            "no second victim"
        );
        h.pods
            .unbounded_send(Ok(WatchEvent::Delete(leaving)))
            .unwrap();
        h.settle().await;
        assert_eq!(h.bound_nodes(), [freed]);
        let _ = h.stop().await;
    }

    /// Issue 6, done means (2) and (3): a three-pod gang waits until three
    /// nodes can be had, then binds all three; a four-pod gang on three nodes
    /// binds none.
    #[tokio::test(start_paused = true)]
    async fn gangs_are_all_or_nothing_through_the_loop() {
        let h = priority_harness();
        h.init_nodes(vec![
            node("n1", true, false),
            node("n2", true, false),
            node("n3", true, false),
        ]);
        h.init_pods(vec![prio_pod("busy", 100, Some("n3"), None)]);
        h.settle().await;
        for i in 0..3 {
            h.pods
                .unbounded_send(Ok(WatchEvent::Apply(prio_pod(
                    &format!("trio-{i}"),
                    50,
                    None,
                    Some(("trio", 3)),
                ))))
                .unwrap();
        }
        for i in 0..4 {
            h.pods
                .unbounded_send(Ok(WatchEvent::Apply(prio_pod(
                    &format!("quad-{i}"),
                    50,
                    None,
                    Some(("quad", 4)),
                ))))
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        h.settle().await;
        assert!(
            h.bound_nodes().is_empty(),
            "only two nodes free: nothing binds"
        );
        assert!(
            h.actuator.evictions.lock().unwrap().is_empty(),
            "busy has higher priority"
        );
        h.pods
            .unbounded_send(Ok(WatchEvent::Delete(prio_pod(
                "busy",
                100,
                Some("n3"),
                None,
            ))))
            .unwrap();
        h.settle().await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        h.settle().await;
        let binds = h.actuator.binds.lock().unwrap().clone();
        let mut trio: Vec<_> = binds
            .iter()
            .filter(|b| b.pod.name.starts_with("trio"))
            .map(|b| b.node.clone())
            .collect();
        trio.sort();
        assert_eq!(trio, ["n1", "n2", "n3"]);
        assert!(
            !binds.iter().any(|b| b.pod.name.starts_with("quad")),
            "{binds:?}"
        );
        let _ = h.stop().await;
    }

    /// Issue 4, done means: in gpu-least-loaded mode the loop never binds to
    /// the node at 70 % and spreads a burst instead of piling onto one node.
    #[tokio::test(start_paused = true)]
    async fn gpu_profile_skips_busy_nodes_and_spreads_a_burst() {
        use posture_core::policy::gpu_least_loaded::{GpuLeastLoaded, GpuLeastLoadedConfig};
        let now = Clock::new().now();
        let snapshot =
            GpuSnapshot::from_fresh(now, &[("agx", 20.0), ("xavier", 70.0), ("orin", 35.0)]);
        let (_tx, rx) = watch::channel(snapshot);
        let profile = GpuLeastLoaded::new(GpuLeastLoadedConfig {
            seed: 7,
            ..GpuLeastLoadedConfig::default()
        });
        let h = Harness::start_full(Box::new(profile), RuntimeConfig::default(), Some(rx));
        h.init_nodes(vec![
            node("agx", true, false),
            node("xavier", true, false),
            node("orin", true, false),
        ]);
        h.init_pods((0..10).map(|i| pod(&format!("burst-{i}"))).collect());
        h.settle().await;
        let nodes = h.bound_nodes();
        assert_eq!(nodes.len(), 10);
        assert!(!nodes.contains(&"xavier".to_string()), "{nodes:?}");
        let on_agx = nodes.iter().filter(|n| *n == "agx").count();
        assert!(
            (3..=7).contains(&on_agx),
            "burst spread over agx and orin: {nodes:?}"
        );
        let _ = h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn binds_ten_jobs_round_robin_over_eligible_nodes() {
        let h = Harness::start(vec![]);
        h.init_nodes(vec![
            node("agx", true, false),
            node("nano", false, false),
            node("orin", true, false),
            node("cordoned", true, true),
            node("xavier", true, false),
        ]);
        let names: Vec<String> = std::iter::once("posture-pi1".to_string())
            .chain((1..10).map(|i| format!("posture-pi1-{i}")))
            .collect();
        h.init_pods(names.iter().map(|n| pod(n)).collect());
        h.settle().await;
        assert_eq!(
            h.bound_nodes(),
            [
                "agx", "orin", "xavier", "agx", "orin", "xavier", "agx", "orin", "xavier", "agx"
            ]
        );
        let reports = h.stop().await;
        let scheduled = reports
            .iter()
            .filter(|r| matches!(r, Report::Scheduled { .. }))
            .count();
        assert_eq!(scheduled, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn conflict_is_skipped_and_errors_retry_with_backoff() {
        let h = Harness::start(vec![]);
        h.actuator
            .script
            .lock()
            .unwrap()
            .insert("taken".into(), VecDeque::from(["conflict"]));
        h.actuator
            .script
            .lock()
            .unwrap()
            .insert("flaky".into(), VecDeque::from(["error", "error"]));
        h.init_nodes(vec![node("a", true, false), node("b", true, false)]);
        h.init_pods(vec![pod("flaky"), pod("taken")]);
        h.settle().await;
        // flaky: first attempt failed; taken: 409, skipped for good.
        assert_eq!(h.actuator.binds.lock().unwrap().len(), 2);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        h.settle().await;
        assert_eq!(
            h.actuator.binds.lock().unwrap().len(),
            3,
            "retried after ~1 s"
        );
        tokio::time::sleep(Duration::from_millis(2300)).await;
        h.settle().await;
        let binds = h.actuator.binds.lock().unwrap().clone();
        assert_eq!(binds.len(), 4, "retried again after ~2 s: {binds:?}");
        // The failed node is handed out again (cursor unchanged on failure).
        assert_eq!(binds[0].node, binds[2].node);
        let reports = h.stop().await;
        let failed = reports
            .iter()
            .filter(|r| matches!(r, Report::FailedScheduling { message, .. } if message.starts_with("Binding rejected")))
            .count();
        assert_eq!(failed, 2);
        assert_eq!(
            reports
                .iter()
                .filter(|r| matches!(r, Report::Scheduled { .. }))
                .count(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pod_is_retried_at_once_when_a_node_turns_ready() {
        let h = Harness::start(vec![]);
        h.init_nodes(vec![node("a", false, false)]);
        h.init_pods(vec![pod("p")]);
        h.settle().await;
        assert!(h.bound_nodes().is_empty());
        h.nodes
            .unbounded_send(Ok(WatchEvent::Apply(node("a", true, false))))
            .unwrap();
        h.settle().await;
        assert_eq!(h.bound_nodes(), ["a"], "no need to wait for the backoff");
        let reports = h.stop().await;
        let msg = reports.iter().find_map(|r| match r {
            Report::FailedScheduling {
                message,
                set_condition,
                ..
            } => Some((message.clone(), *set_condition)),
            _ => None,
        });
        assert_eq!(
            msg,
            Some((
                "0/1 nodes are available: 1 node(s) were not ready.".to_string(),
                true
            ))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_scheduled_before_caches_sync_and_deleted_pods_are_dropped() {
        let h = Harness::start(vec![]);
        h.init_pods(vec![pod("p"), pod("q")]);
        h.settle().await;
        assert!(h.bound_nodes().is_empty(), "nodes not synced yet");
        h.pods
            .unbounded_send(Ok(WatchEvent::Delete(pod("q"))))
            .unwrap();
        h.settle().await;
        h.init_nodes(vec![node("a", true, false)]);
        h.settle().await;
        assert_eq!(h.bound_nodes(), ["a"]);
        let _ = h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn configured_order_is_followed() {
        let h = Harness::start(vec!["c".into(), "a".into()]);
        h.init_nodes(vec![
            node("a", true, false),
            node("b", true, false),
            node("c", true, false),
        ]);
        h.init_pods((0..4).map(|i| pod(&format!("p{i}"))).collect());
        h.settle().await;
        let mut nodes = h.bound_nodes();
        nodes.sort();
        assert_eq!(nodes, ["a", "a", "c", "c"]);
        let _ = h.stop().await;
    }

    /// The pod watch asks the API server for exactly our pending pods.
    #[tokio::test]
    async fn pod_watch_uses_field_and_label_selectors() {
        let (client, mut mock) = ApiMock::new();
        let (_nodes, mut pods) = watch_streams(&client, &RuntimeConfig::default());
        let mut stream = pods.remove(0);
        // The first event (Init) comes before any request; the list follows.
        let poll = tokio::spawn(async move {
            let first = stream.next().await;
            let second = stream.next().await;
            (
                first.is_some_and(|e| e.is_ok()),
                second.is_some_and(|e| e.is_ok()),
            )
        });
        let req = mock.next().await;
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/api/v1/namespaces/default/pods");
        let query: std::collections::HashMap<String, String> =
            url_pairs(&req.query).into_iter().collect();
        assert_eq!(
            query.get("fieldSelector").map(String::as_str),
            Some(
                "spec.schedulerName=rr-scheduler,spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed"
            )
        );
        assert_eq!(
            query.get("labelSelector").map(String::as_str),
            Some("app=posture")
        );
        req.respond(
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": []}),
        );
        assert_eq!(poll.await.unwrap(), (true, true));
    }

    fn url_pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect()
    }

    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// The whole path against recorded API exchanges: the loop binds through
    /// the real binder, a 500 is retried, and Events are written.
    #[tokio::test]
    async fn recorded_exchange_bind_retry_and_events() {
        let (client, mut mock) = ApiMock::new();
        let metrics = Arc::new(SchedulerMetrics::default());
        let (reports, reporter) =
            crate::events::spawn_reporter(client.clone(), "rr-scheduler", None, metrics.clone());
        let cfg = RuntimeConfig {
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(100),
                jitter: 0.0,
            },
            ..RuntimeConfig::default()
        };
        let sched = Scheduler::new(
            cfg,
            Box::new(RoundRobin::new(vec![])),
            Arc::new(KubeActuator { client }),
            reports,
            metrics.clone(),
        );
        let (ntx, nrx) = fmpsc::unbounded();
        let (ptx, prx) = fmpsc::unbounded();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sched.run(nrx.boxed(), vec![prx.boxed()], async move {
            let _ = stop_rx.await;
        }));
        for ev in [
            WatchEvent::Init,
            WatchEvent::InitApply(node("agx", true, false)),
            WatchEvent::InitDone,
        ] {
            ntx.unbounded_send(Ok(ev)).unwrap();
        }
        for ev in [
            WatchEvent::Init,
            WatchEvent::InitApply(pod("posture-pi1")),
            WatchEvent::InitDone,
        ] {
            ptx.unbounded_send(Ok(ev)).unwrap();
        }
        let mut seen = Vec::new();
        let mut binds = 0;
        while !seen
            .iter()
            .any(|s: &String| s.starts_with("event:Scheduled"))
        {
            let req = mock.next().await;
            match (req.method.as_str(), req.path.as_str()) {
                ("POST", "/api/v1/namespaces/default/pods/posture-pi1/binding") => {
                    assert_eq!(
                        req.body["target"],
                        json!({"apiVersion": "v1", "kind": "Node", "name": "agx"})
                    );
                    binds += 1;
                    seen.push(format!("bind#{binds}"));
                    if binds == 1 {
                        req.respond(
                            500,
                            status_json(500, "InternalError", "etcdserver: request timed out"),
                        );
                    } else {
                        req.respond(201, status_json(201, "", ""));
                    }
                }
                ("POST", "/apis/events.k8s.io/v1/namespaces/default/events") => {
                    seen.push(format!(
                        "event:{}",
                        req.body["reason"].as_str().unwrap_or_default()
                    ));
                    let body = req.body.clone();
                    req.respond(201, body);
                }
                ("PATCH", "/api/v1/namespaces/default/pods/posture-pi1/status") => {
                    assert_eq!(
                        req.body["status"]["conditions"][0]["reason"],
                        "Unschedulable"
                    );
                    seen.push("condition".into());
                    req.respond(200, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "posture-pi1"}}));
                }
                other => panic!("unexpected request {other:?}"),
            }
        }
        assert_eq!(binds, 2, "the 500 was retried: {seen:?}");
        assert!(
            seen.contains(&"event:FailedScheduling".to_string()),
            "{seen:?}"
        );
        let _ = stop_tx.send(());
        task.await.unwrap();
        reporter.abort();
    }
}
