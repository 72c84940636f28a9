//! The balancer's hands: [`Mover`] carries out one planned move (patch a
//! ScaledJob's affinity and restart its Jobs, or recreate a plain Job
//! pinned elsewhere through a parked copy, see [`super::parked`]) and
//! records it; [`scaledjob_patch`] and [`job_copy`] are the pure halves.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Affinity, ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use posture_core::balance::{Move, WorkloadKind};
use serde_json::json;

use super::discover::Unfinished;
use super::parked::{Parked, ParkedAction, decide, park, unpark};
use super::{
    BalanceError, JOB_UID_LABEL, MANAGER, MOVED_AT_ANNOTATION, MOVED_FROM_ANNOTATION,
    MOVED_LOAD_ANNOTATION, MOVED_TO_ANNOTATION, SCALEDJOB_LABEL,
};
use crate::workload::{is_not_found, node_affinity, scaledjob_resource};

/// Labels and fields the API server or the Job controller fill in on a Job;
/// a copy sent to `create` must not carry them (selector and controller-uid
/// labels are generated anew, a stale copy is rejected).
pub(super) const JOB_GENERATED_LABELS: &[&str] = &[
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
];

/// The move record annotations: when, to and from where, and the load
/// moved (so a restarted balancer still counts a move in progress).
fn move_annotations(mv: &Move, at: Timestamp) -> [(&'static str, String); 4] {
    [
        (MOVED_AT_ANNOTATION, at.to_string()),
        (MOVED_TO_ANNOTATION, mv.to.clone()),
        (MOVED_FROM_ANNOTATION, mv.from.clone()),
        (MOVED_LOAD_ANNOTATION, format!("{:.1}", mv.load)),
    ]
}

/// The JSON merge patch moving a ScaledJob to `to`: its Job template's
/// required node affinity, plus the move record annotations.
pub fn scaledjob_patch(label_key: &str, mv: &Move, at: Timestamp) -> serde_json::Value {
    let required =
        node_affinity(label_key, &mv.to).required_during_scheduling_ignored_during_execution;
    let annotations: serde_json::Map<String, serde_json::Value> = move_annotations(mv, at)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    json!({
        "metadata": { "annotations": annotations },
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
    for (k, v) in move_annotations(mv, at) {
        annotations.insert(k.into(), v);
    }
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

/// Carries out moves: thin, one API call per step, each step idempotent
/// (a 404 on delete counts as done).
#[derive(Clone)]
pub struct Mover {
    pub(super) client: Client,
    recorder: Recorder,
    /// Node label the affinity matches (`gpu-node` by default).
    pub node_label: String,
    /// How long to wait for a deleted Job to disappear before recreating it.
    pub job_gone_timeout: Duration,
    /// How often to check whether it is gone.
    pub job_gone_poll: Duration,
}

impl Mover {
    /// An mover reporting Events as `posture-farm-balancer` (`instance`:
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
        // Only this Job: a Job recreated under the same name meanwhile is
        // not ours to delete (409 Conflict, like 404, means done).
        let params = DeleteParams {
            preconditions: job.uid().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match jobs.delete(&name, &params).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
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

    /// Moves a plain Job: parks a suspended copy (the durable intent),
    /// deletes the original, creates the final copy under the original
    /// name, drops the parked copy. A failure leaves the parked copy for
    /// [`Mover::finish_parked`] to finish or roll back next loop.
    async fn move_job(&self, mv: &Move, at: Timestamp) -> Result<(), BalanceError> {
        let ns = &mv.workload.namespace;
        let name = &mv.workload.name;
        let api = Api::<Job>::namespaced(self.client.clone(), ns);
        let job = api.get(name).await.map_err(job_err("getting", ns, name))?;
        // Build the copy before touching anything: a Job we cannot recreate
        // is left alone.
        let copy = job_copy(&job, &self.node_label, mv, at)?;
        let parked = park(&copy, &job.uid().unwrap_or_default());
        let parked_name = parked.name_any();
        api.create(&post_params(), &parked).await.map_err(job_err(
            "parking a copy of",
            ns,
            name,
        ))?;
        tracing::info!(workload = %mv.workload, parked = %parked_name, "parked a suspended copy before deleting the job");

        self.delete_job_and_pods(&job).await?;
        self.wait_job_gone(&api, &job).await?;
        let created = self.create_final(&api, &copy).await?;
        self.drop_parked(&api, ns, &parked_name).await;
        tracing::info!(workload = %mv.workload, from = %mv.from, to = %mv.to, load = mv.load, "moved job");
        let reference = created.object_ref(&());
        self.record(mv, &reference, 1).await;
        Ok(())
    }

    /// Waits until `job` (this UID) is gone from the API server.
    async fn wait_job_gone(&self, api: &Api<Job>, job: &Job) -> Result<(), BalanceError> {
        let (ns, name) = (job.namespace().unwrap_or_default(), job.name_any());
        let waited = tokio::time::Instant::now();
        loop {
            match api.get_opt(&name).await.map_err(job_err(
                "waiting for deletion of",
                &ns,
                &name,
            ))? {
                None => return Ok(()),
                Some(current) if current.uid() != job.uid() => return Ok(()),
                Some(_) => {}
            }
            if waited.elapsed() >= self.job_gone_timeout {
                return Err(BalanceError::JobNotGone {
                    namespace: ns,
                    name,
                    waited: self.job_gone_timeout,
                });
            }
            tokio::time::sleep(self.job_gone_poll).await;
        }
    }

    /// Creates the final copy; a Job already under its name (created by a
    /// previous attempt or by someone else) counts as done.
    async fn create_final(&self, api: &Api<Job>, copy: &Job) -> Result<Job, BalanceError> {
        let (ns, name) = (copy.namespace().unwrap_or_default(), copy.name_any());
        match api.create(&post_params(), copy).await {
            Ok(created) => Ok(created),
            Err(e) if is_already_exists(&e) => {
                api.get(&name).await.map_err(job_err("getting", &ns, &name))
            }
            Err(source) => Err(job_err("recreating", &ns, &name)(source)),
        }
    }

    /// Deletes a parked copy; a failure is only logged (the next loop
    /// finds it and, the move being done, deletes it then).
    async fn drop_parked(&self, api: &Api<Job>, ns: &str, parked: &str) {
        match api.delete(parked, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(err) => {
                tracing::warn!(namespace = ns, parked, error = %err, "could not delete the parked copy; retried next loop")
            }
        }
    }

    /// Finishes or rolls back a plain Job move a failure or a restart left
    /// with its parked copy (see [`super::parked`]); returns what it did.
    pub async fn finish_parked(&self, parked: &Parked) -> Result<ParkedAction, BalanceError> {
        let ns = parked.job.namespace().unwrap_or_default();
        let api = Api::<Job>::namespaced(self.client.clone(), &ns);
        let current = api.get_opt(&parked.for_name).await.map_err(job_err(
            "getting",
            &ns,
            &parked.for_name,
        ))?;
        let action = decide(parked, current.as_ref());
        match action {
            ParkedAction::Wait => {}
            ParkedAction::RollBack | ParkedAction::Done => {
                self.drop_parked(&api, &ns, &parked.name).await
            }
            ParkedAction::Finish => {
                self.create_final(&api, &unpark(parked)).await?;
                self.drop_parked(&api, &ns, &parked.name).await;
            }
        }
        tracing::info!(job = %parked.for_name, parked = %parked.name, action = action.as_str(), "handled an interrupted job move");
        Ok(action)
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

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    }
}

/// Maps an API error on Job `ns/name` to a [`BalanceError::Api`].
fn job_err(action: &'static str, ns: &str, name: &str) -> impl FnOnce(kube::Error) -> BalanceError {
    let (namespace, name) = (ns.to_owned(), name.to_owned());
    move |source| BalanceError::Api {
        action,
        kind: "job",
        namespace,
        name,
        source: Box::new(source),
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
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
