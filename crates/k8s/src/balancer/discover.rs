//! Finding the posture workloads: which ScaledJob or Job runs on which
//! node, when each was last moved, and which moves a crash left half-done.
//! [`index_workloads`] is the pure half, [`discover`] lists and calls it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use posture_core::balance::{WorkloadKey, WorkloadKind};
use posture_core::model::Millis;

use super::{BalanceError, MOVED_AT_ANNOTATION, MOVED_TO_ANNOTATION, SCALEDJOB_LABEL};
use crate::workload::{SCALEDJOB_PLURAL, scaledjob_resource};

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
            kind: SCALEDJOB_PLURAL,
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
