//! The GPU balancer's Kubernetes edge: find which posture workloads run on
//! which node, and carry out the moves planned by
//! [`posture_core::balance::plan_moves`].
//!
//! ```text
//!  list ScaledJobs/Jobs/Pods (label selector) ─► discover ─► placements + cool-down records
//!                                                             (+ moves left half-done by a crash)
//!  BalancePlan.moves ─► Actuator::apply ─► ScaledJob: merge-patch nodeAffinity + annotations,
//!                                                     delete its active Jobs (Background),
//!                                                     delete leftover pods, Event
//!                                          Job:       delete (Background), wait until gone,
//!                                                     create a clean copy with the new affinity, Event
//! ```
//!
//! Restart safety: every move writes `posture-farm.io/moved-at` and
//! `posture-farm.io/moved-to` on the moved object, in the same request that
//! changes its affinity (ScaledJob) or in the recreated object (Job).
//! [`discover`] reads them back as cool-down records, so a restarted balancer
//! does not repeat a move, and it reports ScaledJobs whose old Jobs still run
//! elsewhere so [`Actuator::finish`] can complete the move.
//!
//! Note: KEDA's default rollout strategy (`immediate`) itself deletes the
//! Jobs of a ScaledJob whose spec changed; deleting them here as well is
//! harmless (a 404 counts as done) and covers `rollout.strategy: gradual`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, Pod,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use posture_core::balance::{
    BalanceParams, BalancePlan, Move, WorkloadKey, WorkloadKind, estimate_loads, plan_moves,
};
use posture_core::model::Millis;
use serde_json::json;

/// Annotation holding when the balancer last moved the object (RFC 3339).
pub const MOVED_AT_ANNOTATION: &str = "posture-farm.io/moved-at";
/// Annotation holding the node the balancer last moved the object to.
pub const MOVED_TO_ANNOTATION: &str = "posture-farm.io/moved-to";
/// Annotation holding the node the balancer last moved the object from.
pub const MOVED_FROM_ANNOTATION: &str = "posture-farm.io/moved-from";
/// Label KEDA puts on the Jobs and pods it creates for a ScaledJob.
pub const SCALEDJOB_LABEL: &str = "scaledjob.keda.sh/name";
/// Label the Job controller puts on a Job's pods (Kubernetes ≥ 1.27).
pub const JOB_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// Field manager / reporting controller name of the balancer.
pub const MANAGER: &str = "posture-farm-balancer";

/// Default node label the affinity matches on (`gpu-node=<node name>`, set
/// by `posture-farm label-nodes`).
pub const DEFAULT_NODE_LABEL: &str = "gpu-node";

/// Labels and fields the API server or the Job controller fill in on a Job;
/// a copy sent to `create` must not carry them (selector and controller-uid
/// labels are generated anew, a stale copy is rejected).
const JOB_GENERATED_LABELS: &[&str] = &[
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
];

/// The ScaledJob resource (KEDA CRD `keda.sh/v1alpha1`, plural `scaledjobs`).
pub fn scaledjob_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledJob"),
        "scaledjobs",
    )
}

/// What went wrong talking to the API server while balancing.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// An API call failed.
    #[error("{action} {kind} {namespace}/{name}")]
    Api {
        /// What was being done ("deleting", …).
        action: &'static str,
        /// Resource kind, lower case.
        kind: &'static str,
        /// Namespace of the object.
        namespace: String,
        /// Name of the object.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Listing objects failed.
    #[error("listing {kind} in namespace {namespace}")]
    List {
        /// Resource kind, plural.
        kind: &'static str,
        /// Namespace listed.
        namespace: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A deleted Job did not disappear in time, so its copy was not created.
    #[error("job {namespace}/{name} still exists {waited:?} after deletion; not recreated")]
    JobNotGone {
        /// Namespace of the Job.
        namespace: String,
        /// Name of the Job.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A Job copy could not be built (the object lacks a pod template).
    #[error("job {namespace}/{name} has no pod template")]
    NoTemplate {
        /// Namespace of the Job.
        namespace: String,
        /// Name of the Job.
        name: String,
    },
}

/// Which namespace and objects the balancer looks at.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Namespace of the posture workloads.
    pub namespace: String,
    /// Label selector for posture workloads (ScaledJobs, Jobs and their pods),
    /// e.g. `app.kubernetes.io/name=posture-analyzer`.
    pub selector: String,
}

/// A ScaledJob move whose affinity points at `to` but whose old Jobs still
/// run elsewhere (the balancer stopped between patch and deletes).
#[derive(Clone, Debug, PartialEq)]
pub struct Unfinished {
    /// The ScaledJob.
    pub workload: WorkloadKey,
    /// Where its affinity points now.
    pub to: String,
    /// Jobs with pods on other nodes.
    pub jobs: Vec<String>,
}

/// What the balancer knows about the cluster's posture workloads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Discovery {
    /// Each workload with running/pending pods, and the node most of them are on.
    pub placements: Vec<(WorkloadKey, String)>,
    /// When each workload was last moved (from the annotations).
    pub moved_at: BTreeMap<WorkloadKey, Millis>,
    /// Moves left half-done.
    pub unfinished: Vec<Unfinished>,
}

/// Parses an RFC 3339 `moved-at` annotation into epoch milliseconds.
pub fn parse_moved_at(value: &str) -> Option<Millis> {
    value.parse::<Timestamp>().ok().map(|t| t.as_millisecond())
}

fn moved_record(annotations: &BTreeMap<String, String>) -> Option<(Millis, Option<String>)> {
    let at = annotations
        .get(MOVED_AT_ANNOTATION)
        .and_then(|v| parse_moved_at(v))?;
    Some((at, annotations.get(MOVED_TO_ANNOTATION).cloned()))
}

fn pod_is_live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none()
        && matches!(phase, Some("Running") | Some("Pending") | None)
}

fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

fn owner_job(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "Job")
        .map(|o| o.name.as_str())
}

/// Pure part of [`discover`]: turns listed objects into placements,
/// cool-down records and unfinished moves.
pub fn index_workloads(
    namespace: &str,
    scaled_jobs: &[DynamicObject],
    jobs: &[Job],
    pods: &[Pod],
) -> Discovery {
    let mut out = Discovery::default();
    let sj_names: BTreeSet<String> = scaled_jobs.iter().map(|o| o.name_any()).collect();
    let mut moved_to: BTreeMap<WorkloadKey, String> = BTreeMap::new();
    for sj in scaled_jobs {
        let key = WorkloadKey::new(WorkloadKind::ScaledJob, namespace, sj.name_any());
        if let Some((at, to)) = moved_record(sj.annotations()) {
            out.moved_at.insert(key.clone(), at);
            if let Some(to) = to {
                moved_to.insert(key, to);
            }
        }
    }
    let plain_jobs: BTreeSet<String> = jobs
        .iter()
        .filter(|j| !j.labels().contains_key(SCALEDJOB_LABEL))
        .map(|j| j.name_any())
        .collect();
    for job in jobs.iter().filter(|j| plain_jobs.contains(&j.name_any())) {
        if let Some((at, _)) = moved_record(job.annotations()) {
            out.moved_at.insert(
                WorkloadKey::new(WorkloadKind::Job, namespace, job.name_any()),
                at,
            );
        }
    }

    // node counts per workload, and (for ScaledJobs) jobs per node
    let mut counts: BTreeMap<WorkloadKey, BTreeMap<String, usize>> = BTreeMap::new();
    let mut sj_jobs_elsewhere: BTreeMap<WorkloadKey, BTreeSet<String>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| pod_is_live(p)) {
        let Some(node) = pod_node(pod) else { continue };
        let key = if let Some(sj) = pod
            .labels()
            .get(SCALEDJOB_LABEL)
            .filter(|n| sj_names.contains(*n))
        {
            WorkloadKey::new(WorkloadKind::ScaledJob, namespace, sj.clone())
        } else if let Some(job) = owner_job(pod).filter(|j| plain_jobs.contains(*j)) {
            WorkloadKey::new(WorkloadKind::Job, namespace, job)
        } else {
            continue;
        };
        if let (Some(to), Some(job)) = (moved_to.get(&key), owner_job(pod))
            && to != node
        {
            sj_jobs_elsewhere
                .entry(key.clone())
                .or_default()
                .insert(job.to_owned());
        }
        *counts
            .entry(key)
            .or_default()
            .entry(node.to_owned())
            .or_default() += 1;
    }
    for (key, nodes) in counts {
        // Most pods wins; ties go to the first name, deterministically.
        if let Some((node, _)) = nodes
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        {
            out.placements.push((key, node.clone()));
        }
    }
    for (key, jobs) in sj_jobs_elsewhere {
        if let Some(to) = moved_to.get(&key) {
            out.unfinished.push(Unfinished {
                workload: key,
                to: to.clone(),
                jobs: jobs.into_iter().collect(),
            });
        }
    }
    out
}

/// Lists the posture ScaledJobs, Jobs and pods of `scope` and indexes them.
pub async fn discover(client: &Client, scope: &Scope) -> Result<Discovery, BalanceError> {
    let ns = scope.namespace.as_str();
    let lp = ListParams::default().labels(&scope.selector);
    let sj_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &scaledjob_resource());
    let scaled_jobs = sj_api
        .list(&lp)
        .await
        .map_err(|source| BalanceError::List {
            kind: "scaledjobs",
            namespace: ns.to_owned(),
            source: Box::new(source),
        })?;
    let jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|source| BalanceError::List {
            kind: "jobs",
            namespace: ns.to_owned(),
            source: Box::new(source),
        })?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|source| BalanceError::List {
            kind: "pods",
            namespace: ns.to_owned(),
            source: Box::new(source),
        })?;
    Ok(index_workloads(
        ns,
        &scaled_jobs.items,
        &jobs.items,
        &pods.items,
    ))
}

/// The `nodeAffinity` pinning pods to nodes labelled `key=node`.
pub fn node_affinity(key: &str, node: &str) -> NodeAffinity {
    NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: key.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec![node.to_owned()]),
                }]),
                match_fields: None,
            }],
        }),
        preferred_during_scheduling_ignored_during_execution: None,
    }
}

/// The JSON merge patch moving a ScaledJob to `to`: its Job template's
/// required node affinity, plus the move record annotations.
pub fn scaledjob_patch(label_key: &str, mv: &Move, at: Timestamp) -> serde_json::Value {
    let required =
        node_affinity(label_key, &mv.to).required_during_scheduling_ignored_during_execution;
    json!({
        "metadata": {
            "annotations": {
                MOVED_AT_ANNOTATION: at.to_string(),
                MOVED_TO_ANNOTATION: mv.to,
                MOVED_FROM_ANNOTATION: mv.from,
            }
        },
        "spec": {
            "jobTargetRef": {
                "template": {
                    "spec": {
                        "affinity": {
                            "nodeAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": required
                            }
                        }
                    }
                }
            }
        }
    })
}

/// A copy of `job` that can be created again: server-populated metadata,
/// status, the generated selector and controller labels removed; the pod
/// template pinned to `to`; the move recorded in annotations.
pub fn job_copy(job: &Job, label_key: &str, mv: &Move, at: Timestamp) -> Result<Job, BalanceError> {
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let mut spec = job.spec.clone().ok_or_else(|| BalanceError::NoTemplate {
        namespace: namespace.clone(),
        name: name.clone(),
    })?;
    spec.selector = None;
    spec.manual_selector = None;
    let strip = |labels: &mut Option<BTreeMap<String, String>>| {
        if let Some(l) = labels.as_mut() {
            for k in JOB_GENERATED_LABELS {
                l.remove(*k);
            }
        }
    };
    if let Some(meta) = spec.template.metadata.as_mut() {
        strip(&mut meta.labels);
    }
    let pod_spec = spec.template.spec.get_or_insert_with(Default::default);
    let affinity = pod_spec.affinity.get_or_insert_with(Affinity::default);
    let mut na = affinity.node_affinity.take().unwrap_or_default();
    na.required_during_scheduling_ignored_during_execution =
        node_affinity(label_key, &mv.to).required_during_scheduling_ignored_during_execution;
    affinity.node_affinity = Some(na);
    // Pinning by nodeName would bypass the scheduler; affinity is the contract.
    pod_spec.node_name = None;

    let mut metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name),
        namespace: Some(namespace),
        labels: job.metadata.labels.clone(),
        annotations: job.metadata.annotations.clone(),
        ..Default::default()
    };
    strip(&mut metadata.labels);
    let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(MOVED_AT_ANNOTATION.into(), at.to_string());
    annotations.insert(MOVED_TO_ANNOTATION.into(), mv.to.clone());
    annotations.insert(MOVED_FROM_ANNOTATION.into(), mv.from.clone());
    Ok(Job {
        metadata,
        spec: Some(spec),
        status: None,
    })
}

fn job_is_active(job: &Job) -> bool {
    let Some(status) = job.status.as_ref() else {
        return true;
    };
    let finished = status
        .conditions
        .iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    !finished && status.completion_time.is_none()
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// Carries out moves: thin, one API call per step, each step idempotent
/// (a 404 on delete counts as done).
#[derive(Clone)]
pub struct Actuator {
    client: Client,
    recorder: Recorder,
    /// Node label the affinity matches (`gpu-node` by default).
    pub node_label: String,
    /// How long to wait for a deleted Job to disappear before recreating it.
    pub job_gone_timeout: Duration,
    /// How often to check whether it is gone.
    pub job_gone_poll: Duration,
}

impl Actuator {
    /// An actuator reporting Events as `posture-farm-balancer` (`instance`:
    /// e.g. the pod name).
    pub fn new(client: Client, node_label: impl Into<String>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            node_label: node_label.into(),
            job_gone_timeout: Duration::from_secs(60),
            job_gone_poll: Duration::from_secs(1),
        }
    }

    /// Applies one planned move at time `at`.
    pub async fn apply(&self, mv: &Move, at: Timestamp) -> Result<(), BalanceError> {
        match mv.workload.kind {
            WorkloadKind::ScaledJob => self.move_scaledjob(mv, at).await,
            WorkloadKind::Job => self.move_job(mv, at).await,
        }
    }

    /// Completes a ScaledJob move interrupted after its patch: deletes the
    /// listed Jobs still running elsewhere and their leftover pods.
    pub async fn finish(&self, unfinished: &Unfinished) -> Result<(), BalanceError> {
        let ns = &unfinished.workload.namespace;
        let jobs = Api::<Job>::namespaced(self.client.clone(), ns);
        for name in &unfinished.jobs {
            match jobs.get_opt(name).await {
                Ok(Some(job)) => self.delete_job_and_pods(&job).await?,
                Ok(None) => {}
                Err(source) => {
                    return Err(BalanceError::Api {
                        action: "getting",
                        kind: "job",
                        namespace: ns.clone(),
                        name: name.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        tracing::info!(workload = %unfinished.workload, to = %unfinished.to, jobs = ?unfinished.jobs, "finished an interrupted move");
        Ok(())
    }

    async fn move_scaledjob(&self, mv: &Move, at: Timestamp) -> Result<(), BalanceError> {
        let ns = &mv.workload.namespace;
        let name = &mv.workload.name;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &scaledjob_resource());
        let patch = scaledjob_patch(&self.node_label, mv, at);
        let patched = api
            .patch(
                name,
                &PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|source| BalanceError::Api {
                action: "patching node affinity of",
                kind: "scaledjob",
                namespace: ns.clone(),
                name: name.clone(),
                source: Box::new(source),
            })?;

        // The Jobs created from the old template: all active ones of this
        // ScaledJob. Their pods go with them (Background propagation).
        let jobs = Api::<Job>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels(&format!("{SCALEDJOB_LABEL}={name}")))
            .await
            .map_err(|source| BalanceError::List {
                kind: "jobs",
                namespace: ns.clone(),
                source: Box::new(source),
            })?;
        let mut deleted = Vec::new();
        for job in jobs.items.iter().filter(|j| job_is_active(j)) {
            self.delete_job_and_pods(job).await?;
            deleted.push(job.name_any());
        }
        tracing::info!(workload = %mv.workload, from = %mv.from, to = %mv.to, load = mv.load, jobs = ?deleted, "moved scaledjob");
        let reference = object_ref(&patched, "keda.sh/v1alpha1", "ScaledJob");
        self.record(mv, &reference, deleted.len()).await;
        Ok(())
    }

    /// Deletes a Job (Background propagation) and then any of its pods that
    /// are not already terminating.
    async fn delete_job_and_pods(&self, job: &Job) -> Result<(), BalanceError> {
        let ns = job.namespace().unwrap_or_default();
        let name = job.name_any();
        let jobs = Api::<Job>::namespaced(self.client.clone(), &ns);
        match jobs.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(BalanceError::Api {
                    action: "deleting",
                    kind: "job",
                    namespace: ns,
                    name,
                    source: Box::new(source),
                });
            }
        }
        let Some(uid) = job.uid() else { return Ok(()) };
        let pods = Api::<Pod>::namespaced(self.client.clone(), &ns);
        let leftover = pods
            .list(&ListParams::default().labels(&format!("{JOB_UID_LABEL}={uid}")))
            .await
            .map_err(|source| BalanceError::List {
                kind: "pods",
                namespace: ns.clone(),
                source: Box::new(source),
            })?;
        for pod in leftover
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let pod_name = pod.name_any();
            match pods.delete(&pod_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(source) => {
                    return Err(BalanceError::Api {
                        action: "deleting",
                        kind: "pod",
                        namespace: ns.clone(),
                        name: pod_name,
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(())
    }

    async fn move_job(&self, mv: &Move, at: Timestamp) -> Result<(), BalanceError> {
        let ns = &mv.workload.namespace;
        let name = &mv.workload.name;
        let api = Api::<Job>::namespaced(self.client.clone(), ns);
        let api_err = |action: &'static str| {
            let (ns, name) = (ns.clone(), name.clone());
            move |source| BalanceError::Api {
                action,
                kind: "job",
                namespace: ns,
                name,
                source: Box::new(source),
            }
        };
        let job = api.get(name).await.map_err(api_err("getting"))?;
        // Build the copy before deleting anything: a Job we cannot recreate
        // is left alone.
        let copy = job_copy(&job, &self.node_label, mv, at)?;
        match serde_json::to_string(&copy) {
            Ok(manifest) => {
                tracing::info!(workload = %mv.workload, %manifest, "recreating job (manifest logged for recovery)")
            }
            Err(err) => tracing::warn!(workload = %mv.workload, %err, "could not log the job copy"),
        }
        self.delete_job_and_pods(&job).await?;

        let waited = tokio::time::Instant::now();
        loop {
            match api
                .get_opt(name)
                .await
                .map_err(api_err("waiting for deletion of"))?
            {
                None => break,
                Some(current) if current.uid() != job.uid() => break,
                Some(_) => {}
            }
            if waited.elapsed() >= self.job_gone_timeout {
                return Err(BalanceError::JobNotGone {
                    namespace: ns.clone(),
                    name: name.clone(),
                    waited: self.job_gone_timeout,
                });
            }
            tokio::time::sleep(self.job_gone_poll).await;
        }
        let created = api
            .create(
                &PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                },
                &copy,
            )
            .await
            .map_err(api_err("recreating"))?;
        tracing::info!(workload = %mv.workload, from = %mv.from, to = %mv.to, load = mv.load, "moved job");
        let reference = created.object_ref(&());
        self.record(mv, &reference, 1).await;
        Ok(())
    }

    /// Records the move as an Event on the moved object. A failed Event does
    /// not undo the move; it is logged.
    async fn record(&self, mv: &Move, reference: &ObjectReference, jobs: usize) {
        let event = Event {
            type_: EventType::Normal,
            reason: "Rebalanced".into(),
            note: Some(format!(
                "Moved from node {} (avg GPU {:.1}%) to node {} (projected {:.1}% -> {:.1}%); restarted {jobs} job(s)",
                mv.from, mv.from_usage, mv.to, mv.to_usage_before, mv.to_usage_after
            )),
            action: "Move".into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, reference).await {
            tracing::warn!(workload = %mv.workload, %err, "could not record the move as an Event");
        }
    }
}

/// One balancing decision and what came of it.
#[derive(Debug)]
pub struct LoopReport {
    /// The pure plan (outcome, moves, stuck nodes, projected usage).
    pub plan: BalancePlan,
    /// Interrupted moves found and (unless dry-run) completed, with results.
    pub finished: Vec<(Unfinished, Result<(), BalanceError>)>,
    /// Result of each planned move, in plan order (empty in dry-run).
    pub applied: Vec<(Move, Result<(), BalanceError>)>,
}

/// The balancer's per-window step: read the workloads, decide with the pure
/// policy, act. Keeps only the moves it made itself (in case a restart-safe
/// annotation has not been read back yet); everything else is recomputed
/// from the cluster each time.
pub struct Balancer {
    /// Carries out the moves.
    pub actuator: Actuator,
    /// Which workloads are considered.
    pub scope: Scope,
    /// Threshold and cool-down of the pure policy.
    pub params: BalanceParams,
    /// Fixed per-workload load estimate (percentage points); `None` splits
    /// each node's average evenly over its workloads.
    pub workload_load: Option<f64>,
    /// Decide and report, change nothing.
    pub dry_run: bool,
    local_moves: BTreeMap<WorkloadKey, Millis>,
}

impl Balancer {
    /// A balancer acting through `actuator` on `scope`.
    pub fn new(actuator: Actuator, scope: Scope, params: BalanceParams) -> Self {
        Self {
            actuator,
            scope,
            params,
            workload_load: None,
            dry_run: false,
            local_moves: BTreeMap::new(),
        }
    }

    /// One loop on the per-node `averages` of the last window, at `now`
    /// (epoch ms). An error means the workloads could not be read: nothing
    /// was decided; the caller retries next window.
    pub async fn run_once<R: rand::Rng + ?Sized>(
        &mut self,
        averages: &BTreeMap<String, f64>,
        now: Millis,
        rng: &mut R,
    ) -> Result<LoopReport, BalanceError> {
        let discovery = discover(&self.actuator.client, &self.scope).await?;
        let mut finished = Vec::new();
        for unfinished in &discovery.unfinished {
            let result = if self.dry_run {
                Ok(())
            } else {
                self.actuator.finish(unfinished).await
            };
            finished.push((unfinished.clone(), result));
        }
        let workloads = estimate_loads(averages, &discovery.placements, self.workload_load);
        let mut moved_at = discovery.moved_at;
        for (k, at) in &self.local_moves {
            let e = moved_at.entry(k.clone()).or_insert(*at);
            *e = (*e).max(*at);
        }
        let plan = plan_moves(averages, &workloads, &moved_at, now, self.params, rng);
        let mut applied = Vec::new();
        if !self.dry_run {
            let at = Timestamp::from_millisecond(now).unwrap_or_else(|_| Timestamp::now());
            for m in &plan.moves {
                let result = self.actuator.apply(m, at).await;
                if result.is_ok() {
                    self.local_moves.insert(m.workload.clone(), now);
                }
                applied.push((m.clone(), result));
            }
        }
        let cooldown = self.params.cooldown;
        self.local_moves
            .retain(|_, at| now.saturating_sub(*at) < cooldown);
        Ok(LoopReport {
            plan,
            finished,
            applied,
        })
    }
}

/// What the balancing loop reports to its caller (logs, metrics, the
/// `--dry-run` printout).
#[derive(Debug)]
pub enum LoopEvent<'a> {
    /// A decision was made on these window averages.
    Decided {
        /// Per-node average usage over the window.
        averages: &'a BTreeMap<String, f64>,
        /// The plan and what came of it.
        report: &'a LoopReport,
    },
    /// The workloads could not be read; the decision is skipped until the
    /// next full window.
    ReadFailed(&'a BalanceError),
}

/// Timing of the balancing loop.
#[derive(Clone, Copy, Debug)]
pub struct LoopTiming {
    /// How often the usage is sampled into the window (5 s by default).
    pub sample_interval: Duration,
    /// Length of the window; one decision per window (30 s by default).
    pub window: Duration,
    /// Stop after the first decision.
    pub once: bool,
}

/// The balancer's loop: sample `usage` every `sample_interval`; when the
/// window is full, decide on its averages and act; then start a fresh
/// window, so the next decision only sees usage measured after the moves.
/// `clock` gives epoch milliseconds (wall clock in production, tokio's
/// clock in tests). Returns when `shutdown` resolves (or after one decision
/// with `once`). Read failures are reported and retried next window, so the
/// loop survives API server restarts.
pub async fn run_loop<R, F, C>(
    balancer: &mut Balancer,
    mut usage: tokio::sync::watch::Receiver<posture_core::gpu::GpuSnapshot>,
    timing: LoopTiming,
    rng: &mut R,
    mut clock: C,
    shutdown: impl std::future::Future<Output = ()>,
    mut on_event: F,
) where
    R: rand::Rng + ?Sized,
    F: FnMut(LoopEvent<'_>),
    C: FnMut() -> Millis,
{
    let window_ms = Millis::try_from(timing.window.as_millis()).unwrap_or(Millis::MAX);
    let interval_ms = Millis::try_from(timing.sample_interval.as_millis()).unwrap_or(Millis::MAX);
    let mut window = posture_core::balance::UsageWindow::new(window_ms);
    let mut tick = tokio::time::interval(timing.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut shutdown => return,
        }
        let now = clock();
        let mut snapshot = usage.borrow_and_update().clone();
        // Stamp with our clock: the window is about when we observed.
        snapshot.taken_at = now;
        window.record(&snapshot);
        if !window.is_full(now, interval_ms) {
            continue;
        }
        let averages = window.averages(now);
        window.clear();
        match balancer.run_once(&averages, now, rng).await {
            Ok(report) => on_event(LoopEvent::Decided {
                averages: &averages,
                report: &report,
            }),
            Err(err) => on_event(LoopEvent::ReadFailed(&err)),
        }
        if timing.once {
            return;
        }
    }
}

fn object_ref(obj: &DynamicObject, api_version: &str, kind: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: obj.metadata.name.clone(),
        namespace: obj.metadata.namespace.clone(),
        uid: obj.metadata.uid.clone(),
        resource_version: obj.metadata.resource_version.clone(),
        field_path: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ApiMock, status_json};
    use serde_json::Value;

    const NS: &str = "posture";
    const AT: &str = "2026-11-23T14:00:00Z";

    fn at() -> Timestamp {
        AT.parse().unwrap()
    }

    fn mv(kind: WorkloadKind, name: &str) -> Move {
        Move {
            workload: WorkloadKey::new(kind, NS, name),
            from: "agx".into(),
            to: "orin".into(),
            load: 30.0,
            from_usage: 80.0,
            to_usage_before: 20.0,
            to_usage_after: 50.0,
        }
    }

    fn scaledjob_json(name: &str, annotations: Value) -> Value {
        json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledJob",
            "metadata": {"name": name, "namespace": NS, "uid": format!("sj-{name}"), "resourceVersion": "7",
                         "annotations": annotations},
            "spec": {"jobTargetRef": {"template": {"spec": {"containers": [{"name": "analyzer", "image": "x"}]}}}}
        })
    }

    fn job_json(name: &str, uid: &str, labels: Value, active: bool) -> Value {
        let status = if active {
            json!({"active": 1, "startTime": "2026-11-23T13:00:00Z"})
        } else {
            json!({"succeeded": 1, "completionTime": "2026-11-23T13:10:00Z",
                   "conditions": [{"type": "Complete", "status": "True"}]})
        };
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NS, "uid": uid, "resourceVersion": "11",
                         "creationTimestamp": "2026-11-23T13:00:00Z", "labels": labels,
                         "managedFields": [{"manager": "kube-controller-manager"}]},
            "spec": {
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "posture-analyzer",
                                            "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                                            "batch.kubernetes.io/job-name": name, "job-name": name}},
                    "spec": {"containers": [{"name": "analyzer", "image": "x",
                                             "args": ["analyze", "--topic", "images/pi1"]}],
                             "restartPolicy": "Never",
                             "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                                 "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu-node", "operator": "In", "values": ["agx"]}]}]}}}}
                }
            },
            "status": status
        })
    }

    fn pod_json(
        name: &str,
        node: &str,
        labels: Value,
        owner_job: &str,
        terminating: bool,
    ) -> Value {
        let mut meta = json!({"name": name, "namespace": NS, "uid": format!("pod-{name}"), "labels": labels,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": owner_job, "uid": "j", "controller": true}]});
        if terminating {
            meta["deletionTimestamp"] = json!("2026-11-23T13:59:00Z");
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
               "spec": {"nodeName": node, "containers": [{"name": "analyzer", "image": "x"}]},
               "status": {"phase": "Running"}})
    }

    fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "100"}, "items": items})
    }

    fn affinity_to(node: &str) -> Value {
        json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gpu-node", "operator": "In", "values": [node]}]}]}})
    }

    /// Checks the Event the balancer writes for a move.
    fn assert_event(req: &crate::test_support::Recorded, kind: &str, name: &str) {
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.path,
            format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
        );
        let b = &req.body;
        assert_eq!(b["regarding"]["kind"], kind);
        assert_eq!(b["regarding"]["name"], name);
        assert_eq!(b["reason"], "Rebalanced");
        assert_eq!(b["action"], "Move");
        assert_eq!(b["type"], "Normal");
        assert_eq!(b["reportingController"], MANAGER);
        let note = b["note"].as_str().unwrap();
        assert!(
            note.contains("from node agx") && note.contains("to node orin"),
            "{note}"
        );
    }

    #[tokio::test]
    async fn scaledjob_move_patches_affinity_deletes_jobs_and_pods_and_records_an_event() {
        let (client, mut api) = ApiMock::new();
        let actuator = Actuator::new(client, DEFAULT_NODE_LABEL, Some("balancer-0".into()));
        let m = mv(WorkloadKind::ScaledJob, "posture-pi1");
        let task = tokio::spawn(async move { actuator.apply(&m, at()).await });

        let req = api.next().await;
        assert_eq!(req.method, "PATCH");
        assert_eq!(
            req.path,
            "/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs/posture-pi1"
        );
        assert_eq!(req.content_type, "application/merge-patch+json");
        assert!(
            req.query.contains("fieldManager=posture-farm-balancer"),
            "{}",
            req.query
        );
        assert_eq!(
            req.body,
            json!({
                "metadata": {"annotations": {
                    "posture-farm.io/moved-at": AT,
                    "posture-farm.io/moved-to": "orin",
                    "posture-farm.io/moved-from": "agx"}},
                "spec": {"jobTargetRef": {"template": {"spec": {"affinity": {"nodeAffinity": affinity_to("orin")}}}}}
            })
        );
        req.respond(
            200,
            scaledjob_json(
                "posture-pi1",
                json!({MOVED_AT_ANNOTATION: AT, MOVED_TO_ANNOTATION: "orin"}),
            ),
        );

        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("GET", "/apis/batch/v1/namespaces/posture/jobs")
        );
        assert!(
            req.query
                .contains("labelSelector=scaledjob.keda.sh%2Fname%3Dposture-pi1"),
            "{}",
            req.query
        );
        let sj_labels = json!({"scaledjob.keda.sh/name": "posture-pi1"});
        req.respond(
            200,
            list(
                "JobList",
                "batch/v1",
                vec![
                    job_json("posture-pi1-done", "uid-done", sj_labels.clone(), false),
                    job_json("posture-pi1-abcde", "uid-1", sj_labels.clone(), true),
                    job_json("posture-pi1-gone", "uid-2", sj_labels.clone(), true),
                ],
            ),
        );

        // Only active Jobs go, with Background propagation.
        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-abcde"
            )
        );
        assert_eq!(req.body["propagationPolicy"], "Background");
        req.respond(
            200,
            job_json("posture-pi1-abcde", "uid-1", sj_labels.clone(), true),
        );

        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("GET", "/api/v1/namespaces/posture/pods")
        );
        assert!(
            req.query
                .contains("labelSelector=batch.kubernetes.io%2Fcontroller-uid%3Duid-1"),
            "{}",
            req.query
        );
        req.respond(
            200,
            list(
                "PodList",
                "v1",
                vec![
                    pod_json(
                        "posture-pi1-abcde-x1",
                        "agx",
                        sj_labels.clone(),
                        "posture-pi1-abcde",
                        false,
                    ),
                    pod_json(
                        "posture-pi1-abcde-x0",
                        "agx",
                        sj_labels.clone(),
                        "posture-pi1-abcde",
                        true,
                    ),
                ],
            ),
        );
        // Leftover pods not already terminating are deleted.
        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "DELETE",
                "/api/v1/namespaces/posture/pods/posture-pi1-abcde-x1"
            )
        );
        req.respond(
            200,
            pod_json(
                "posture-pi1-abcde-x1",
                "agx",
                sj_labels.clone(),
                "posture-pi1-abcde",
                true,
            ),
        );

        // A Job KEDA already removed (immediate rollout): 404 counts as done.
        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-gone"
            )
        );
        assert_eq!(req.body["propagationPolicy"], "Background");
        req.respond(
            404,
            status_json(404, "NotFound", "jobs.batch \"posture-pi1-gone\" not found"),
        );
        let req = api.next().await;
        assert!(
            req.query.contains("controller-uid%3Duid-2"),
            "{}",
            req.query
        );
        req.respond(200, list("PodList", "v1", vec![]));

        let req = api.next().await;
        assert_event(&req, "ScaledJob", "posture-pi1");
        assert_eq!(req.body["regarding"]["apiVersion"], "keda.sh/v1alpha1");
        assert!(
            req.body["note"]
                .as_str()
                .unwrap()
                .contains("restarted 2 job(s)")
        );
        let body = req.body.clone();
        req.respond(201, body);

        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn job_move_recreates_a_clean_copy_with_the_new_affinity() {
        let (client, mut api) = ApiMock::new();
        let mut actuator = Actuator::new(client, DEFAULT_NODE_LABEL, None);
        actuator.job_gone_poll = Duration::from_millis(1);
        let m = mv(WorkloadKind::Job, "posture-pi1-3");
        let task = tokio::spawn(async move { actuator.apply(&m, at()).await });
        let labels = json!({"app.kubernetes.io/name": "posture-analyzer", "batch.kubernetes.io/controller-uid": "uid-j",
                            "controller-uid": "uid-j", "job-name": "posture-pi1-3"});

        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "GET",
                "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-3"
            )
        );
        req.respond(
            200,
            job_json("posture-pi1-3", "uid-j", labels.clone(), true),
        );

        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-3"
            )
        );
        assert_eq!(req.body["propagationPolicy"], "Background");
        req.respond(
            200,
            job_json("posture-pi1-3", "uid-j", labels.clone(), true),
        );
        let req = api.next().await;
        assert!(
            req.query.contains("controller-uid%3Duid-j"),
            "{}",
            req.query
        );
        req.respond(200, list("PodList", "v1", vec![]));

        // Still there once (being deleted), then gone.
        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "GET",
                "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-3"
            )
        );
        req.respond(
            200,
            job_json("posture-pi1-3", "uid-j", labels.clone(), true),
        );
        let req = api.next().await;
        assert_eq!(req.method, "GET");
        req.respond(
            404,
            status_json(404, "NotFound", "jobs.batch \"posture-pi1-3\" not found"),
        );

        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/apis/batch/v1/namespaces/posture/jobs")
        );
        let b = &req.body;
        assert_eq!(b["metadata"]["name"], "posture-pi1-3");
        for gone in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            assert!(b["metadata"].get(gone).is_none(), "{gone} must not be sent");
        }
        assert_eq!(
            b["metadata"]["labels"],
            json!({"app.kubernetes.io/name": "posture-analyzer"})
        );
        assert_eq!(b["metadata"]["annotations"][MOVED_AT_ANNOTATION], AT);
        assert_eq!(b["metadata"]["annotations"][MOVED_TO_ANNOTATION], "orin");
        assert!(b.get("status").is_none());
        assert!(
            b["spec"].get("selector").is_none(),
            "selector is generated by the API server"
        );
        assert_eq!(
            b["spec"]["template"]["metadata"]["labels"],
            json!({"app.kubernetes.io/name": "posture-analyzer"})
        );
        assert_eq!(
            b["spec"]["template"]["spec"]["affinity"]["nodeAffinity"],
            affinity_to("orin")
        );
        assert_eq!(
            b["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["analyze", "--topic", "images/pi1"])
        );
        let mut created = b.clone();
        created["metadata"]["uid"] = json!("uid-new");
        req.respond(201, created);

        let req = api.next().await;
        assert_event(&req, "Job", "posture-pi1-3");
        assert_eq!(req.body["regarding"]["uid"], "uid-new");
        let body = req.body.clone();
        req.respond(201, body);
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_that_does_not_go_away_is_not_recreated() {
        let (client, mut api) = ApiMock::new();
        let mut actuator = Actuator::new(client, DEFAULT_NODE_LABEL, None);
        actuator.job_gone_timeout = Duration::from_secs(3);
        let m = mv(WorkloadKind::Job, "stuck");
        let task = tokio::spawn(async move { actuator.apply(&m, at()).await });
        let labels = json!({"app.kubernetes.io/name": "posture-analyzer"});
        api.next()
            .await
            .respond(200, job_json("stuck", "uid-s", labels.clone(), true));
        api.next()
            .await
            .respond(200, job_json("stuck", "uid-s", labels.clone(), true));
        api.next().await.respond(200, list("PodList", "v1", vec![]));
        let mut task = task;
        let result = loop {
            tokio::select! {
                // Task first: once it ends the client is gone and the mock's
                // next() would report a hang-up.
                biased;
                done = &mut task => break done.unwrap(),
                req = api.next() => {
                    assert_eq!(req.method, "GET", "never POSTs a copy while the old Job exists");
                    req.respond(200, job_json("stuck", "uid-s", labels.clone(), true));
                }
            }
        };
        let err = result.unwrap_err();
        assert!(matches!(err, BalanceError::JobNotGone { .. }), "{err}");
    }

    #[tokio::test]
    async fn discover_lists_with_the_selector_and_reads_move_records() {
        let (client, mut api) = ApiMock::new();
        let scope = Scope {
            namespace: NS.into(),
            selector: "app.kubernetes.io/name=posture-analyzer".into(),
        };
        let task = tokio::spawn(async move { discover(&client, &scope).await });
        let sel = "labelSelector=app.kubernetes.io%2Fname%3Dposture-analyzer";

        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "GET",
                "/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs"
            )
        );
        assert!(req.query.contains(sel), "{}", req.query);
        req.respond(
            200,
            list(
                "ScaledJobList",
                "keda.sh/v1alpha1",
                vec![
                    scaledjob_json(
                        "posture-pi1",
                        json!({MOVED_AT_ANNOTATION: AT, MOVED_TO_ANNOTATION: "orin"}),
                    ),
                    scaledjob_json("posture-pi1-1", json!({})),
                ],
            ),
        );
        let req = api.next().await;
        assert_eq!(req.path, "/apis/batch/v1/namespaces/posture/jobs");
        assert!(req.query.contains(sel));
        let plain = json!({"app.kubernetes.io/name": "posture-analyzer"});
        req.respond(
            200,
            list(
                "JobList",
                "batch/v1",
                vec![job_json("solo", "uid-solo", plain.clone(), true)],
            ),
        );
        let req = api.next().await;
        assert_eq!(req.path, "/api/v1/namespaces/posture/pods");
        assert!(req.query.contains(sel));
        let sj = |n: &str| json!({"app.kubernetes.io/name": "posture-analyzer", "scaledjob.keda.sh/name": n});
        req.respond(
            200,
            list(
                "PodList",
                "v1",
                vec![
                    pod_json(
                        "p1-new",
                        "orin",
                        sj("posture-pi1"),
                        "posture-pi1-new",
                        false,
                    ),
                    // Old Job of a move interrupted before its deletes.
                    pod_json("p1-old", "agx", sj("posture-pi1"), "posture-pi1-old", false),
                    pod_json("p2", "nano", sj("posture-pi1-1"), "posture-pi1-1-a", false),
                    pod_json("p2b", "nano", sj("posture-pi1-1"), "posture-pi1-1-b", false),
                    pod_json("p2c", "agx", sj("posture-pi1-1"), "posture-pi1-1-c", true),
                    pod_json("s", "agx", plain.clone(), "solo", false),
                    pod_json("foreign", "agx", plain.clone(), "not-ours", false),
                ],
            ),
        );
        let d = task.await.unwrap().unwrap();
        let sjk = |n: &str| WorkloadKey::new(WorkloadKind::ScaledJob, NS, n);
        assert_eq!(
            d.placements,
            vec![
                (sjk("posture-pi1"), "agx".to_owned()),
                (sjk("posture-pi1-1"), "nano".to_owned()),
                (
                    WorkloadKey::new(WorkloadKind::Job, NS, "solo"),
                    "agx".to_owned()
                ),
            ]
        );
        assert_eq!(
            d.moved_at,
            BTreeMap::from([(sjk("posture-pi1"), parse_moved_at(AT).unwrap())])
        );
        assert_eq!(
            d.unfinished,
            vec![Unfinished {
                workload: sjk("posture-pi1"),
                to: "orin".into(),
                jobs: vec!["posture-pi1-old".into()],
            }]
        );
    }

    #[tokio::test]
    async fn finish_deletes_the_old_jobs_of_an_interrupted_move() {
        let (client, mut api) = ApiMock::new();
        let actuator = Actuator::new(client, DEFAULT_NODE_LABEL, None);
        let u = Unfinished {
            workload: WorkloadKey::new(WorkloadKind::ScaledJob, NS, "posture-pi1"),
            to: "orin".into(),
            jobs: vec!["posture-pi1-old".into()],
        };
        let task = tokio::spawn(async move { actuator.finish(&u).await });
        let labels = json!({"scaledjob.keda.sh/name": "posture-pi1"});
        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "GET",
                "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-old"
            )
        );
        req.respond(
            200,
            job_json("posture-pi1-old", "uid-old", labels.clone(), true),
        );
        let req = api.next().await;
        assert_eq!(req.method, "DELETE");
        assert_eq!(req.body["propagationPolicy"], "Background");
        req.respond(
            200,
            job_json("posture-pi1-old", "uid-old", labels.clone(), true),
        );
        api.next().await.respond(200, list("PodList", "v1", vec![]));
        task.await.unwrap().unwrap();
    }

    /// Answers the three list calls of `discover`.
    async fn answer_discovery(api: &mut ApiMock, scaled_jobs: Vec<Value>, pods: Vec<Value>) {
        let req = api.next().await;
        assert_eq!(
            req.path,
            "/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs"
        );
        req.respond(200, list("ScaledJobList", "keda.sh/v1alpha1", scaled_jobs));
        let req = api.next().await;
        assert_eq!(req.path, "/apis/batch/v1/namespaces/posture/jobs");
        req.respond(200, list("JobList", "batch/v1", vec![]));
        let req = api.next().await;
        assert_eq!(req.path, "/api/v1/namespaces/posture/pods");
        req.respond(200, list("PodList", "v1", pods));
    }

    fn sj_pod(sj: &str, node: &str) -> Value {
        pod_json(
            &format!("{sj}-job-pod"),
            node,
            json!({"app": "posture", "scaledjob.keda.sh/name": sj}),
            &format!("{sj}-job"),
            false,
        )
    }

    fn balancer(client: Client) -> Balancer {
        Balancer::new(
            Actuator::new(client, DEFAULT_NODE_LABEL, None),
            Scope {
                namespace: NS.into(),
                selector: "app=posture".into(),
            },
            BalanceParams {
                threshold: 50.0,
                cooldown: 300_000,
            },
        )
    }

    /// The issue's acceptance scenario end to end (discovery, pure plan,
    /// actuator): agx averages 80 %, orin 20 %, nano 30 %. One loop moves
    /// exactly one ScaledJob from agx to orin; the next loop, once usage has
    /// settled, moves nothing.
    #[tokio::test]
    async fn one_loop_moves_one_scaledjob_to_the_20_percent_node_then_nothing() {
        use rand::SeedableRng;
        let (client, mut api) = ApiMock::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let t0 = parse_moved_at(AT).unwrap();
        let averages: BTreeMap<String, f64> = [("agx", 80.0), ("orin", 20.0), ("nano", 30.0)]
            .map(|(n, u)| (n.to_owned(), u))
            .into();
        let task = tokio::spawn(async move {
            let mut b = balancer(client);
            let first = b.run_once(&averages, t0, &mut rng).await;
            (b, rng, first)
        });
        let sjs: Vec<Value> = [
            "posture-pi1",
            "posture-pi1-1",
            "posture-pi1-2",
            "posture-pi1-3",
            "posture-pi1-4",
        ]
        .iter()
        .map(|n| scaledjob_json(n, json!({})))
        .collect();
        let pods = vec![
            sj_pod("posture-pi1", "agx"),
            sj_pod("posture-pi1-1", "agx"),
            sj_pod("posture-pi1-2", "agx"),
            sj_pod("posture-pi1-3", "orin"),
            sj_pod("posture-pi1-4", "nano"),
        ];
        answer_discovery(&mut api, sjs.clone(), pods).await;

        let req = api.next().await;
        assert_eq!(req.method, "PATCH");
        assert_eq!(
            req.path,
            "/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs/posture-pi1"
        );
        assert_eq!(
            req.body["spec"]["jobTargetRef"]["template"]["spec"]["affinity"]["nodeAffinity"],
            affinity_to("orin")
        );
        assert_eq!(
            req.body["metadata"]["annotations"][MOVED_FROM_ANNOTATION],
            "agx"
        );
        req.respond(
            200,
            scaledjob_json(
                "posture-pi1",
                json!({MOVED_AT_ANNOTATION: AT, MOVED_TO_ANNOTATION: "orin"}),
            ),
        );
        let labels = json!({"scaledjob.keda.sh/name": "posture-pi1"});
        api.next().await.respond(
            200,
            list(
                "JobList",
                "batch/v1",
                vec![job_json("posture-pi1-job", "uid-a", labels.clone(), true)],
            ),
        );
        let req = api.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-job"
            )
        );
        req.respond(
            200,
            job_json("posture-pi1-job", "uid-a", labels.clone(), true),
        );
        api.next().await.respond(200, list("PodList", "v1", vec![]));
        let req = api.next().await;
        assert_event(&req, "ScaledJob", "posture-pi1");
        let body = req.body.clone();
        req.respond(201, body);

        let (mut b, mut rng, first) = task.await.unwrap();
        let first = first.unwrap();
        assert_eq!(first.plan.moves.len(), 1, "exactly one move");
        let m = &first.plan.moves[0];
        assert_eq!(
            (m.workload.name.as_str(), m.from.as_str(), m.to.as_str()),
            ("posture-pi1", "agx", "orin")
        );
        assert!(first.applied.iter().all(|(_, r)| r.is_ok()));

        // Next window: the analyzer runs on orin now and usage has settled.
        let settled: BTreeMap<String, f64> = [("agx", 50.0), ("orin", 47.0), ("nano", 30.0)]
            .map(|(n, u)| (n.to_owned(), u))
            .into();
        let task = tokio::spawn(async move { b.run_once(&settled, t0 + 35_000, &mut rng).await });
        let mut sjs = sjs;
        sjs[0] = scaledjob_json(
            "posture-pi1",
            json!({MOVED_AT_ANNOTATION: AT, MOVED_TO_ANNOTATION: "orin"}),
        );
        let pods = vec![
            sj_pod("posture-pi1", "orin"),
            sj_pod("posture-pi1-1", "agx"),
            sj_pod("posture-pi1-2", "agx"),
            sj_pod("posture-pi1-3", "orin"),
            sj_pod("posture-pi1-4", "nano"),
        ];
        answer_discovery(&mut api, sjs, pods).await;
        let second = task.await.unwrap().unwrap();
        assert_eq!(second.plan.outcome, posture_core::balance::Outcome::Stable);
        assert!(second.plan.moves.is_empty() && second.applied.is_empty());
        assert!(second.finished.is_empty());
    }

    /// A restarted balancer (no memory) reads the move record back from the
    /// annotation and does not move the workload again within the cool-down.
    #[tokio::test]
    async fn a_restarted_balancer_does_not_repeat_a_recent_move() {
        use rand::SeedableRng;
        let (client, mut api) = ApiMock::new();
        let now = parse_moved_at(AT).unwrap() + 60_000;
        let averages: BTreeMap<String, f64> = [("agx", 20.0), ("orin", 80.0)]
            .map(|(n, u)| (n.to_owned(), u))
            .into();
        let task = tokio::spawn(async move {
            let mut b = balancer(client);
            b.run_once(&averages, now, &mut rand::rngs::StdRng::seed_from_u64(1))
                .await
        });
        answer_discovery(
            &mut api,
            vec![scaledjob_json(
                "posture-pi1",
                json!({MOVED_AT_ANNOTATION: AT, MOVED_TO_ANNOTATION: "orin"}),
            )],
            vec![sj_pod("posture-pi1", "orin")],
        )
        .await;
        let report = task.await.unwrap().unwrap();
        assert!(report.plan.moves.is_empty());
        assert_eq!(
            report.plan.stuck,
            vec![(
                "orin".to_owned(),
                posture_core::balance::StuckReason::CoolingDown
            )]
        );
    }

    /// Dry-run decides and reports but sends nothing beyond the reads.
    #[tokio::test]
    async fn dry_run_only_reads() {
        use rand::SeedableRng;
        let (client, mut api) = ApiMock::new();
        let averages: BTreeMap<String, f64> = [("agx", 90.0), ("orin", 10.0)]
            .map(|(n, u)| (n.to_owned(), u))
            .into();
        let task = tokio::spawn(async move {
            let mut b = balancer(client);
            b.dry_run = true;
            b.workload_load = Some(20.0);
            b.run_once(&averages, 0, &mut rand::rngs::StdRng::seed_from_u64(1))
                .await
        });
        answer_discovery(
            &mut api,
            vec![scaledjob_json("posture-pi1", json!({}))],
            vec![sj_pod("posture-pi1", "agx")],
        )
        .await;
        let report = task.await.unwrap().unwrap();
        assert_eq!(report.plan.moves.len(), 1);
        assert_eq!(report.plan.moves[0].load, 20.0);
        assert!(report.applied.is_empty());
    }

    /// The loop with paused time: six samples 5 s apart (agx at 70 % then
    /// 90 %, averaging 80 %), one decision when the 30 s window is full, one
    /// move to the 20 % node; then a fresh window before the next decision.
    #[tokio::test(start_paused = true)]
    async fn loop_samples_a_full_window_then_decides_once_per_window() {
        use posture_core::gpu::{GpuSample, GpuSnapshot, NodeUsage, UsageState};
        use rand::SeedableRng;
        let snap = |agx: f64| GpuSnapshot {
            taken_at: 0,
            nodes: [("agx", agx), ("orin", 20.0), ("nano", 30.0)]
                .map(|(n, u)| {
                    (
                        n.to_owned(),
                        NodeUsage {
                            sample: Some(GpuSample {
                                usage_percent: u,
                                sampled_at: 0,
                            }),
                            state: UsageState::Ok,
                            error: None,
                        },
                    )
                })
                .into(),
        };
        let (tx, rx) = tokio::sync::watch::channel(snap(70.0));
        let (client, mut api) = ApiMock::new();
        let start = tokio::time::Instant::now();
        let t0 = parse_moved_at(AT).unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut b = balancer(client);
            b.dry_run = true;
            let mut rng = rand::rngs::StdRng::seed_from_u64(9);
            let mut decisions: Vec<(BTreeMap<String, f64>, usize)> = Vec::new();
            run_loop(
                &mut b,
                rx,
                LoopTiming {
                    sample_interval: Duration::from_secs(5),
                    window: Duration::from_secs(30),
                    once: false,
                },
                &mut rng,
                move || t0 + i64::try_from(start.elapsed().as_millis()).unwrap(),
                async {
                    let _ = stop_rx.await;
                },
                |e| match e {
                    LoopEvent::Decided { averages, report } => {
                        decisions.push((averages.clone(), report.plan.moves.len()))
                    }
                    LoopEvent::ReadFailed(err) => panic!("{err}"),
                },
            )
            .await;
            decisions
        });
        // Samples at 0, 5, 10 s see 70 %; at 15, 20, 25 s 90 %.
        tokio::time::sleep(Duration::from_millis(12_500)).await;
        tx.send(snap(90.0)).unwrap();
        tokio::time::sleep(Duration::from_millis(13_000)).await;
        // 25.5 s: the window is full, the decision reads the workloads.
        let sjs: Vec<Value> = ["posture-pi1", "posture-pi1-1", "posture-pi1-2"]
            .iter()
            .map(|n| scaledjob_json(n, json!({})))
            .collect();
        let pods = vec![
            sj_pod("posture-pi1", "agx"),
            sj_pod("posture-pi1-1", "agx"),
            sj_pod("posture-pi1-2", "agx"),
        ];
        answer_discovery(&mut api, sjs.clone(), pods.clone()).await;
        // Nothing else until the next window is full (30 s later).
        tokio::time::sleep(Duration::from_secs(29)).await;
        answer_discovery(&mut api, sjs, pods).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop_tx.send(()).unwrap();
        let decisions = task.await.unwrap();
        assert_eq!(decisions.len(), 2, "one decision per full window");
        let (averages, moves) = &decisions[0];
        assert!((averages["agx"] - 80.0).abs() < 1e-9, "{averages:?}");
        assert_eq!(averages["orin"], 20.0);
        // 80 % over three analyzers: 26.7 each, fits on orin (20 %): one move.
        assert_eq!(*moves, 1);
        assert!(
            (decisions[1].0["agx"] - 90.0).abs() < 1e-9,
            "fresh window: only 90 % samples"
        );
    }

    #[test]
    fn moved_at_parses_rfc3339_only() {
        assert_eq!(parse_moved_at("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_moved_at("yesterday"), None);
    }
}
