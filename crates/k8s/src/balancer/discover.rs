//! Finding the posture workloads: which ScaledJob or Job runs on which
//! node, when each was last moved (and with how much load, so a move in
//! progress still counts after a restart), since when each runs ready
//! where it is, and which moves a crash left half-done.
//! [`index_workloads`] is the pure half, [`discover`] lists and calls it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use posture_core::balance::{RecentMove, WorkloadKey, WorkloadKind};
use posture_core::model::Millis;

use super::parked::{Parked, parked_of};
use super::{
    BalanceError, MOVED_AT_ANNOTATION, MOVED_FROM_ANNOTATION, MOVED_LOAD_ANNOTATION,
    MOVED_TO_ANNOTATION, SCALEDJOB_LABEL,
};
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
    /// The last move of each workload whose annotations carry its source
    /// and load, with `arrived_at` filled in from [`Discovery::ready_on`].
    pub recent: Vec<RecentMove>,
    /// Workloads whose live pods all run ready on one node: that node and
    /// since when the last of them is ready.
    pub ready_on: BTreeMap<WorkloadKey, (String, Millis)>,
    /// ScaledJob moves left half-done.
    pub unfinished: Vec<Unfinished>,
    /// Plain Job moves left half-done (a parked copy still exists).
    pub parked: Vec<Parked>,
}

impl Discovery {
    /// Since when `key` runs ready on `node`, if it does.
    pub fn arrival(&self, key: &WorkloadKey, node: &str) -> Option<Millis> {
        self.ready_on
            .get(key)
            .filter(|(n, _)| n == node)
            .map(|(_, at)| *at)
    }
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

/// The move record of `key` from its annotations, when they carry the
/// source and the load (written since the balancer remembers its moves).
fn recent_move(key: &WorkloadKey, annotations: &BTreeMap<String, String>) -> Option<RecentMove> {
    let (at, to) = moved_record(annotations)?;
    let load = annotations
        .get(MOVED_LOAD_ANNOTATION)?
        .parse::<f64>()
        .ok()
        .filter(|l| l.is_finite() && *l >= 0.0)?;
    Some(RecentMove {
        workload: key.clone(),
        from: annotations.get(MOVED_FROM_ANNOTATION)?.clone(),
        to: to?,
        load,
        at,
        arrived_at: None,
    })
}

/// Since when the pod is Ready (its `Ready` condition's last transition),
/// if it is.
fn ready_since(pod: &Pod) -> Option<Millis> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_millisecond())
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

/// Which workloads exist, from the listed ScaledJobs and Jobs.
struct Owners {
    scaled_jobs: BTreeSet<String>,
    plain_jobs: BTreeSet<String>,
    /// Where each moved ScaledJob's affinity points.
    moved_to: BTreeMap<WorkloadKey, String>,
}

/// What the live pods say, per workload.
#[derive(Default)]
struct PodIndex {
    /// Pods per node.
    counts: BTreeMap<WorkloadKey, BTreeMap<String, usize>>,
    /// Latest Ready time; `None` once one live pod is not ready.
    ready: BTreeMap<WorkloadKey, Option<Millis>>,
    /// Jobs of a moved ScaledJob still running off its destination.
    jobs_elsewhere: BTreeMap<WorkloadKey, BTreeSet<String>>,
}

/// Reads the move records of ScaledJobs, parked copies and plain Jobs into
/// `out`, and says which workloads exist.
fn index_records(
    namespace: &str,
    scaled_jobs: &[DynamicObject],
    jobs: &[Job],
    out: &mut Discovery,
) -> Owners {
    let mut record = |key: WorkloadKey, annotations: &BTreeMap<String, String>| {
        out.recent.extend(recent_move(&key, annotations));
        let (at, to) = moved_record(annotations)?;
        out.moved_at.insert(key, at);
        to
    };
    let mut moved_to = BTreeMap::new();
    for sj in scaled_jobs {
        let key = WorkloadKey::new(WorkloadKind::ScaledJob, namespace, sj.name_any());
        if let Some(to) = record(key.clone(), sj.annotations()) {
            moved_to.insert(key, to);
        }
    }
    // Parked copies (a plain Job move in progress) are not workloads, but
    // their move counts as in progress.
    let parked: Vec<_> = jobs.iter().filter_map(parked_of).collect();
    for p in &parked {
        record(
            WorkloadKey::new(WorkloadKind::Job, namespace, p.for_name.clone()),
            p.job.annotations(),
        );
    }
    let plain_jobs: BTreeSet<String> = jobs
        .iter()
        .filter(|j| !j.labels().contains_key(SCALEDJOB_LABEL) && parked_of(j).is_none())
        .map(|j| j.name_any())
        .collect();
    for job in jobs.iter().filter(|j| plain_jobs.contains(&j.name_any())) {
        record(
            WorkloadKey::new(WorkloadKind::Job, namespace, job.name_any()),
            job.annotations(),
        );
    }
    out.parked = parked;
    Owners {
        scaled_jobs: scaled_jobs.iter().map(|o| o.name_any()).collect(),
        plain_jobs,
        moved_to,
    }
}

/// Counts the live pods of each workload per node, with their readiness.
fn index_pods(namespace: &str, pods: &[Pod], owners: &Owners) -> PodIndex {
    let mut ix = PodIndex::default();
    for pod in pods.iter().filter(|p| pod_is_live(p)) {
        let Some(node) = pod_node(pod) else { continue };
        let key = if let Some(sj) = pod
            .labels()
            .get(SCALEDJOB_LABEL)
            .filter(|n| owners.scaled_jobs.contains(*n))
        {
            WorkloadKey::new(WorkloadKind::ScaledJob, namespace, sj.clone())
        } else if let Some(job) = owner_job(pod).filter(|j| owners.plain_jobs.contains(*j)) {
            WorkloadKey::new(WorkloadKind::Job, namespace, job)
        } else {
            continue;
        };
        if let (Some(to), Some(job)) = (owners.moved_to.get(&key), owner_job(pod))
            && to != node
        {
            ix.jobs_elsewhere
                .entry(key.clone())
                .or_default()
                .insert(job.to_owned());
        }
        let since = ready_since(pod);
        ix.ready
            .entry(key.clone())
            .and_modify(|r| *r = r.zip(since).map(|(a, b)| a.max(b)))
            .or_insert(since);
        *ix.counts
            .entry(key)
            .or_default()
            .entry(node.to_owned())
            .or_default() += 1;
    }
    ix
}

/// Pure part of [`discover`]: turns listed objects into placements,
/// move records (with arrival), and moves left half-done.
pub fn index_workloads(
    namespace: &str,
    scaled_jobs: &[DynamicObject],
    jobs: &[Job],
    pods: &[Pod],
) -> Discovery {
    let mut out = Discovery::default();
    let owners = index_records(namespace, scaled_jobs, jobs, &mut out);
    let ix = index_pods(namespace, pods, &owners);
    for (key, nodes) in &ix.counts {
        if let (Some(Some(at)), [(node, _)]) = (
            ix.ready.get(key),
            nodes.iter().collect::<Vec<_>>().as_slice(),
        ) {
            out.ready_on.insert(key.clone(), ((*node).clone(), *at));
        }
    }
    for m in &mut out.recent {
        m.arrived_at = out
            .ready_on
            .get(&m.workload)
            .filter(|(n, _)| *n == m.to)
            .map(|(_, at)| *at);
    }
    for (key, nodes) in ix.counts {
        // Most pods wins; ties go to the first name, deterministically.
        if let Some((node, _)) = nodes
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        {
            out.placements.push((key, node.clone()));
        }
    }
    for (key, jobs) in ix.jobs_elsewhere {
        if let Some(to) = owners.moved_to.get(&key) {
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
