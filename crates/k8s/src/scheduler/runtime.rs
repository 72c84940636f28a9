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
//!
//! Leader election ([`Scheduler::with_leadership`]): a follower keeps its
//! watches, index and queue warm but pops nothing, so it acts as soon as it
//! wins; a leader past its renew deadline stops deciding and reporting.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, SelectAll};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event as WatchEvent};
use posture_core::filter::{FilterReason, FilterSummary};
use posture_core::gpu::GpuSnapshot;
use posture_core::model::{LabelRequirement, LabelSelector, Ownership};
use posture_core::queue::SchedulingQueue;
use posture_core::{
    Binding, Cluster, Decision, Eviction, Millis, Nomination, PodInfo, PodKey, Profile,
    SchedulingContext, error_chain,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;

use super::actuator::{Actuator, EvictResult};
use super::binder::BindOutcome;
use super::config::RuntimeConfig;
use super::convert::PodReader;
use super::events::{PodRef, Report, Reports};
use super::metrics::SchedulerMetrics;
use super::watch::EventStream;
use crate::lease::LeaderGate;

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
    /// A nomination cleared through the API (a preemption abandoned).
    Cleared {
        pod: PodKey,
        result: Result<(), crate::scheduler::preempt::PreemptError>,
    },
}

/// One scheduling unit (a pod, or a gang) as the decision saw it.
struct Unit {
    /// Whether the unit is a gang (several pods, or a pod with a group).
    is_gang: bool,
    /// Each member's key, UID and creation time.
    pods: Vec<(PodKey, String, Millis)>,
    /// When the decision was made.
    now: Millis,
}

/// The key of a bind in flight: the pod's UID (its namespace/name only when
/// it has none, which API objects always have).
fn flight_key(key: &PodKey, uid: &str) -> String {
    if uid.is_empty() {
        key.to_string()
    } else {
        uid.to_string()
    }
}

/// Tagged pod event (which pod stream it came from).
type PodStreamEvent = (usize, Result<WatchEvent<Pod>, watcher::Error>);

/// The loop. Create with [`Scheduler::new`], run with [`Scheduler::run`].
pub struct Scheduler {
    cfg: RuntimeConfig,
    /// Which pods are ours and how their priority is read.
    reader: PodReader,
    profile: Box<dyn Profile>,
    actuator: Arc<dyn Actuator>,
    reports: Reports,
    metrics: Arc<SchedulerMetrics>,
    gpu: Option<watch::Receiver<GpuSnapshot>>,
    podgroups: Option<EventStream<kube::api::DynamicObject>>,
    ready: Option<Box<dyn Fn(bool) + Send>>,
    /// Whether this replica may act (always, without leader election).
    leader: LeaderGate,

    clock: Clock,
    rng: StdRng,
    cluster: Cluster,
    queue: SchedulingQueue,
    /// Binds in flight by pod UID → (pod, node assumed). Keyed by UID, not
    /// name: a pod deleted and recreated under the same name mid-bind is a
    /// different pod, decided on its own (issue 11.6).
    in_flight: HashMap<String, (PodKey, String)>,
    /// Preemptors waiting for their victims.
    preempting: HashSet<PodKey>,
    /// Gang members whose bind failed: their node stays assumed (reserved)
    /// and the same binding is retried after backoff (issue 11.7).
    reserved: HashMap<PodKey, Binding>,
    ops: FuturesUnordered<BoxFuture<'static, Done>>,
    binds_in_flight: usize,
    /// Last FailedScheduling message per pod (condition patched on change).
    last_failure: HashMap<PodKey, String>,
    warned_uids: HashSet<String>,
    /// When each pending pod of ours was first seen (by flight key), for
    /// the millisecond-resolution scheduling SLI.
    first_seen: HashMap<String, Millis>,
    /// The GPU snapshot waiting pods were last judged against.
    last_gpu: Option<GpuSnapshot>,
    /// PodGroups seen since the PodGroup watch's last (re-)list began.
    init_seen_groups: HashSet<(String, String)>,
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
        let reader = cfg.reader().unwrap_or_else(|err| {
            // The CLI validates the selector first; a library caller that
            // passes a bad one gets no pod taken as ours rather than all.
            tracing::error!(%err, "no pod is taken as ours");
            PodReader {
                ownership: Ownership {
                    scheduler_name: cfg.scheduler_name.clone(),
                    namespace: cfg.namespace.clone(),
                    selector: LabelSelector {
                        requirements: vec![LabelRequirement::In(String::new(), Vec::new())],
                    },
                },
                ..PodReader::default()
            }
        });
        Self {
            cfg,
            reader,
            profile,
            actuator,
            reports,
            metrics,
            gpu: None,
            podgroups: None,
            ready: None,
            leader: LeaderGate::unelected(),
            clock: Clock::new(),
            rng,
            cluster: Cluster::new(),
            queue,
            in_flight: HashMap::new(),
            preempting: HashSet::new(),
            reserved: HashMap::new(),
            ops: FuturesUnordered::new(),
            binds_in_flight: 0,
            last_failure: HashMap::new(),
            warned_uids: HashSet::new(),
            first_seen: HashMap::new(),
            last_gpu: None,
            init_seen_groups: HashSet::new(),
            warned_config: HashSet::new(),
            nodes_synced: false,
            pods_synced: Vec::new(),
            init_seen_nodes: HashSet::new(),
            init_seen_pods: Vec::new(),
        }
    }

    /// Feeds GPU snapshots to the profile (`ctx.gpu`).
    pub fn with_gpu(mut self, gpu: watch::Receiver<GpuSnapshot>) -> Self {
        self.last_gpu = Some(gpu.borrow().clone());
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

    /// Acts only while `gate` says this replica leads (leader election).
    /// Pair with a [`super::fence::FencedActuator`] on the same gate.
    pub fn with_leadership(mut self, gate: LeaderGate) -> Self {
        self.leader = gate;
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
        let mut leader = self.leader.clone();
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
                    } else if let Some(g) = gpu.as_ref() {
                        let after = g.borrow().clone();
                        self.gpu_changed(after);
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    self.queue.promote_due(self.clock.now());
                }
                _ = tick.tick() => self.publish_node_gauges(),
                () = leader.changed() => self.on_leadership(),
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

    /// Leadership changed: say so; the next turn acts (or not) on it.
    fn on_leadership(&mut self) {
        let now = self.leader.current();
        tracing::info!(
            acting = self.leader.acting(),
            term = now.term,
            holder = now.holder.as_deref().unwrap_or("<none>"),
            queued = self.queue.active_len() + self.queue.backoff_len(),
            "leadership changed"
        );
    }

    fn schedule_some(&mut self) {
        // A follower keeps its caches and queue warm and decides nothing.
        if !self.synced() || !self.leader.acting() {
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
                    .filter(|p| !self.in_flight.contains_key(&flight_key(&p.key, &p.uid)))
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
        if let Some(binding) = self.reserved.remove(&key)
            && self.retry_reserved(binding)
        {
            return;
        }
        let unit_keys = self.unit_for(&key);
        let unit: Vec<&PodInfo> = unit_keys
            .iter()
            .filter_map(|k| self.cluster.pod(k))
            .filter(|p| p.is_pending())
            .collect();
        if unit.is_empty() {
            // Bound or deleted meanwhile, or its bind is in flight (then the
            // bind's answer decides what becomes of it: keep it queued).
            let in_flight = self
                .cluster
                .pod(&key)
                .is_some_and(|p| self.in_flight.contains_key(&flight_key(&key, &p.uid)));
            if !in_flight {
                self.queue.remove(&key);
            }
            return;
        }
        let now = self.clock.now();
        // Borrowed, not cloned: a snapshot of 5,000 nodes per decision
        // would cost more than the decision. No await while it is held.
        let snapshot = self.gpu.as_ref().map(|g| g.borrow());
        let ctx = SchedulingContext {
            now,
            gpu: snapshot.as_deref(),
        };
        let started = std::time::Instant::now();
        let decision = self.profile.schedule(&self.cluster, &unit, &ctx);
        drop(snapshot);
        self.metrics
            .attempt_duration
            .observe(started.elapsed().as_secs_f64());
        let unit = Unit {
            is_gang: unit.len() > 1 || unit.first().is_some_and(|p| p.group.is_some()),
            pods: unit
                .iter()
                .map(|p| (p.key.clone(), p.uid.clone(), p.created_at))
                .collect(),
            now,
        };
        match decision {
            Decision::Bind(bindings) => self.decided_bind(&unit, bindings),
            Decision::Preempt {
                evictions,
                nominations,
                message,
            } => self.decided_preempt(&unit, evictions, nominations, &message),
            Decision::Unschedulable { message, summary } => {
                self.decided_unschedulable(&unit, &message, &summary)
            }
            Decision::Wait { retry_at, message } => {
                self.metrics.attempt(self.profile.name(), "waiting");
                for (k, _, _) in &unit.pods {
                    tracing::debug!(pod = %k, %message, "waiting");
                    self.queue.defer(k, retry_at);
                }
            }
        }
    }

    /// `Decision::Bind`: issue the binds; members the decision left out go
    /// back to the queue.
    fn decided_bind(&mut self, unit: &Unit, bindings: Vec<Binding>) {
        self.metrics.attempt(self.profile.name(), "scheduled");
        if unit.is_gang && self.profile.gang_aware() {
            self.metrics.gang("success");
        }
        let bound: HashSet<PodKey> = bindings.iter().map(|b| b.pod.clone()).collect();
        for binding in bindings {
            let (uid, created_at) = unit
                .pods
                .iter()
                .find(|(k, _, _)| *k == binding.pod)
                .map(|(_, u, c)| (u.clone(), *c))
                .unwrap_or_else(|| (String::new(), unit.now));
            self.issue_bind(binding, uid, created_at);
        }
        // Members the decision left out were taken off the queue with
        // the unit: put them back, so no pending pod is ever dropped.
        for (k, _, _) in unit.pods.iter().filter(|(k, _, _)| !bound.contains(k)) {
            self.queue.backoff(k, unit.now, &mut self.rng);
        }
    }

    /// `Decision::Preempt`: hold the nominated nodes, then nominate and
    /// evict in the background; the unit waits for its victims.
    fn decided_preempt(
        &mut self,
        unit: &Unit,
        evictions: Vec<Eviction>,
        nominations: Vec<Nomination>,
        message: &str,
    ) {
        let profile = self.profile.name();
        let already_leaving = !evictions.is_empty()
            && evictions
                .iter()
                .all(|e| self.cluster.pod(&e.pod).is_none_or(|p| p.terminating));
        let keys: Vec<PodKey> = unit.pods.iter().map(|(k, _, _)| k.clone()).collect();
        let retry_at = unit.now + self.cfg.preemption_wait.as_millis() as Millis;
        if already_leaving {
            // The victims are on their way out: wait for their deletion.
            self.metrics.attempt(profile, "waiting");
            for k in &keys {
                self.queue.defer(k, retry_at);
            }
            return;
        }
        self.metrics.attempt(profile, "preempting");
        self.metrics.preemptions.inc();
        tracing::info!(unit = ?keys, victims = evictions.len(), %message, "preempting");
        for k in &keys {
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
                    nominations_failed.push(format!("{}: {}", n.pod, error_chain(&err)));
                }
            }
            let results =
                futures::future::join_all(evictions.iter().map(|e| actuator.evict(e))).await;
            Done::Preempt {
                unit: keys,
                evictions: evictions.into_iter().zip(results).collect(),
                nominations_failed,
            }
        }));
    }

    /// `Decision::Unschedulable`: back off every member and explain why.
    fn decided_unschedulable(&mut self, unit: &Unit, message: &str, summary: &FilterSummary) {
        self.metrics.attempt(self.profile.name(), "unschedulable");
        if unit.is_gang && self.profile.gang_aware() {
            self.metrics.gang("failure");
        }
        let reason = summary.dominant().map_or("NoNodes", FilterReason::label);
        self.metrics.failure(reason);
        for (k, uid, _) in &unit.pods {
            // No placement, so no node is held for it any more.
            self.clear_nomination(k);
            let retry_at = self.queue.backoff(k, unit.now, &mut self.rng);
            tracing::debug!(pod = %k, %message, retry_in_ms = retry_at - unit.now, "unschedulable");
            self.report_failure(k, uid, message);
        }
    }

    fn report_failure(&mut self, key: &PodKey, uid: &str, message: &str) {
        if !self.leader.acting() {
            // Only the leader writes conditions and Events (a fenced bind fails here).
            return;
        }
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
        self.in_flight.insert(
            flight_key(&binding.pod, &uid),
            (binding.pod.clone(), binding.node.clone()),
        );
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
        match done {
            Done::Bind {
                binding,
                uid,
                created_at,
                outcome,
            } => self.bind_done(binding, uid, created_at, outcome),
            Done::Preempt {
                unit,
                evictions,
                nominations_failed,
            } => self.preempt_done(&unit, evictions, &nominations_failed),
            Done::Cleared { pod, result } => {
                if let Err(err) = result {
                    tracing::warn!(%pod, err = %error_chain(&err), "could not clear nominatedNodeName");
                }
            }
        }
    }

    /// A new GPU snapshot: waiting pods are retried at once only when a node
    /// turned eligible; otherwise their backoff stands (issue 11.12).
    fn gpu_changed(&mut self, after: GpuSnapshot) {
        if self
            .profile
            .gpu_may_fit_more(self.last_gpu.as_ref(), &after)
        {
            self.queue.move_all_to_active();
        }
        self.last_gpu = Some(after);
    }

    /// Gives up a pod's nominated node, in the index and through the API
    /// (`status.nominatedNodeName: null`), so no node stays held for a
    /// preemption that will not happen.
    fn clear_nomination(&mut self, key: &PodKey) {
        if self
            .cluster
            .pod(key)
            .is_none_or(|p| p.nominated_node.is_none())
        {
            return;
        }
        self.cluster.set_nominated(key, None);
        let fut = self.actuator.clear_nomination(key);
        let pod = key.clone();
        self.ops.push(Box::pin(async move {
            Done::Cleared {
                pod,
                result: fut.await,
            }
        }));
    }

    /// What the evictions answered: victims reported, refusals make the unit
    /// back off and plan again.
    fn preempt_done(
        &mut self,
        unit: &[PodKey],
        evictions: Vec<(Eviction, EvictResult)>,
        nominations_failed: &[String],
    ) {
        let now = self.clock.now();
        for failed in nominations_failed {
            tracing::warn!(%failed, "could not set nominatedNodeName");
        }
        let mut refused = Vec::new();
        for (eviction, result) in evictions {
            let reason = match result {
                EvictResult::Evicted => {
                    self.metrics.preemption_victims.inc();
                    let uid = self.uid_of(&eviction.pod);
                    self.reports.send(Report::Preempted {
                        victim: PodRef {
                            key: eviction.pod.clone(),
                            uid,
                        },
                        preemptor: eviction.preemptor.clone(),
                        node: eviction.node.clone(),
                    });
                    continue;
                }
                EvictResult::Gone => continue,
                EvictResult::Refused(reason) => reason,
                EvictResult::Failed(err) => error_chain(&err),
            };
            // The next plan must pick other victims (or none).
            self.cluster.refuse_eviction(
                &eviction.pod,
                now + self.cfg.preemption_wait.as_millis() as Millis,
            );
            refused.push(format!("{}: {reason}", eviction.pod));
        }
        if refused.is_empty() {
            return;
        }
        let message = format!(
            "preemption could not evict every victim ({}); backing off",
            refused.join("; ")
        );
        tracing::warn!(unit = ?unit, %message);
        self.metrics.failure("EvictionRefused");
        for k in unit {
            self.preempting.remove(k);
            self.clear_nomination(k);
            if self.queue.contains(k) {
                self.queue.backoff(k, now, &mut self.rng);
                let uid = self.uid_of(k);
                self.report_failure(k, &uid, &message);
            }
        }
    }

    /// The UID of a pod in the index, or empty when it left.
    fn uid_of(&self, key: &PodKey) -> String {
        self.cluster
            .pod(key)
            .map(|p| p.uid.clone())
            .unwrap_or_default()
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
                .get_or_create(&super::metrics::ReasonLabels {
                    reason: state.into(),
                })
                .set(v);
        }
        let permille = if ready > 0 { used * 1000 / ready } else { 0 };
        self.metrics.node_utilization_permille.set(permille);
    }
}

mod binds;
mod feed;

#[cfg(test)]
mod tests;
