//! `down` and `up`'s clean-up: delete what `up` created, and only that —
//! every list is filtered by the [`MANAGED_BY_LABEL`](super::MANAGED_BY_LABEL)
//! selector.
//!
//! **`down`** stops whatever runs, in an order where nothing is left that
//! recreates an analyzer: ScaledJobs first (KEDA stops creating Jobs), then
//! Jobs — ours and those KEDA spawned (they carry our label too, copied
//! from the ScaledJob) — then the Deployments (schedulers, scaler and
//! balancer, dashboard, Prometheus), DaemonSets (GPU exporter) and
//! StatefulSets (broker, database), then every pod of ours still there.
//! RBAC, the namespace, Secrets, ConfigMaps and the data volumes stay.
//! With `--purge` the rest goes too, in [`PURGE_ORDER`](super::plan::PURGE_ORDER):
//! Services and config, RBAC, the PersistentVolumeClaims, the namespace last.
//! Objects already gone (404) count as deleted; a kind the server does not
//! serve (no KEDA) has none. On an empty cluster nothing is sent.
//!
//! **Pruning** (`up`): objects of ours that the new plan does not hold —
//! the previous mode's scheduler, ScaledJobs after a switch to Jobs, Jobs
//! beyond a smaller `--cameras` — are deleted before the plan is applied.
//! Only top-level objects are pruned (none with an owner: KEDA's Jobs
//! belong to their ScaledJob), and never data or configuration (Secrets,
//! ConfigMaps, PersistentVolumeClaims, the namespace).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::{Api, Client};

use super::plan::{ApplyPlan, KindInfo, config_kinds, purge_kinds, running_kinds};
use super::wait::WaitConfig;
use super::{OpsError, managed_selector};
use crate::balancer::SCALEDJOB_LABEL;
use crate::workload::is_not_found;

/// One object deleted (or found already gone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// Its kind.
    pub kind: String,
    /// Its namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for Deleted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Kinds `up` never prunes: data and configuration stay until `down --purge`.
const NEVER_PRUNED: [&str; 4] = ["Secret", "ConfigMap", "PersistentVolumeClaim", "Namespace"];

/// Lists our objects of a kind across namespaces; a kind the server does not
/// serve (404, e.g. no KEDA CRD) has none.
async fn list_ours(client: &Client, kind: &KindInfo) -> Result<Vec<DynamicObject>, OpsError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource);
    match api
        .list(&ListParams::default().labels(&managed_selector()))
        .await
    {
        Ok(list) => Ok(list.items),
        Err(e) if is_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(OpsError::kube(format!("list {}", kind.resource.plural), e)),
    }
}

/// Deletes one object (Background propagation: its dependents go with it).
async fn delete(
    client: &Client,
    kind: &KindInfo,
    obj: &DynamicObject,
) -> Result<Deleted, OpsError> {
    let ns = obj.metadata.namespace.clone().filter(|_| kind.namespaced);
    let name = obj.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = match &ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &kind.resource),
        None => Api::all_with(client.clone(), &kind.resource),
    };
    let deleted = Deleted {
        kind: kind.resource.kind.clone(),
        namespace: ns,
        name,
    };
    match api.delete(&deleted.name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(OpsError::kube(format!("delete {deleted}"), e)),
    }
    tracing::info!(object = %deleted, "deleted");
    Ok(deleted)
}

/// Deletes every object of ours of `kind` for which `keep` is false.
async fn delete_kind(
    client: &Client,
    kind: &KindInfo,
    keep: impl Fn(&DynamicObject) -> bool,
) -> Result<Vec<Deleted>, OpsError> {
    let mut out = Vec::new();
    for obj in list_ours(client, kind).await? {
        if obj.metadata.deletion_timestamp.is_some() || keep(&obj) {
            continue;
        }
        out.push(delete(client, kind, &obj).await?);
    }
    Ok(out)
}

/// `down`: stops everything of ours that runs and, with `purge`, deletes
/// the rest; returns what was deleted, in order.
pub async fn teardown(client: &Client, purge: bool) -> Result<Vec<Deleted>, OpsError> {
    let mut out = Vec::new();
    let running = running_kinds();
    let mut scaled_jobs = Vec::new();
    for kind in &running {
        let deleted = delete_kind(client, kind, |_| false).await?;
        match kind.resource.kind.as_str() {
            "ScaledJob" => scaled_jobs = deleted.iter().map(|d| d.name.clone()).collect(),
            "Job" => {
                out.extend(deleted);
                out.extend(delete_keda_jobs(client, kind, &scaled_jobs, &out).await?);
                continue;
            }
            _ => {}
        }
        out.extend(deleted);
    }
    out.extend(delete_pods(client).await?);
    if purge {
        for kind in config_kinds() {
            out.extend(delete_kind(client, &kind, |_| false).await?);
        }
    }
    Ok(out)
}

/// Deletes the Jobs KEDA spawned from our ScaledJobs (`scaled_jobs`) that
/// are not among `done` — found by KEDA's [`SCALEDJOB_LABEL`],
/// whatever other labels KEDA gave them.
async fn delete_keda_jobs(
    client: &Client,
    jobs: &KindInfo,
    scaled_jobs: &[String],
    done: &[Deleted],
) -> Result<Vec<Deleted>, OpsError> {
    if scaled_jobs.is_empty() {
        return Ok(Vec::new());
    }
    let selector = format!("{SCALEDJOB_LABEL} in ({})", scaled_jobs.join(","));
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &jobs.resource);
    let spawned = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| OpsError::kube("list Jobs spawned by our ScaledJobs", e))?
        .items;
    let mut out = Vec::new();
    for job in spawned {
        let seen = done.iter().any(|d| {
            d.kind == "Job"
                && d.namespace == job.metadata.namespace
                && Some(&d.name) == job.metadata.name.as_ref()
        });
        if !seen && job.metadata.deletion_timestamp.is_none() {
            out.push(delete(client, jobs, &job).await?);
        }
    }
    Ok(out)
}

/// Deletes every pod of ours not already terminating (analyzers, and the
/// pods of the controllers just deleted, which would otherwise linger until
/// the garbage collector reaches them).
async fn delete_pods(client: &Client) -> Result<Vec<Deleted>, OpsError> {
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(&managed_selector()))
        .await
        .map_err(|e| OpsError::kube("list pods", e))?
        .items;
    let mut out = Vec::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(OpsError::kube(format!("delete pod {ns}/{name}"), e)),
        }
        out.push(Deleted {
            kind: "Pod".into(),
            namespace: Some(ns),
            name,
        });
    }
    Ok(out)
}

/// Waits until no pod of ours is left (terminating ones included); returns
/// the names still there when `cfg.timeout` ran out.
pub async fn wait_pods_gone(client: &Client, cfg: WaitConfig) -> Result<Vec<String>, OpsError> {
    let api = Api::<Pod>::all(client.clone());
    let lp = ListParams::default().labels(&managed_selector());
    let deadline = tokio::time::Instant::now() + cfg.timeout;
    loop {
        let left: Vec<String> = api
            .list(&lp)
            .await
            .map_err(|e| OpsError::kube("list pods", e))?
            .items
            .into_iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.unwrap_or_default(),
                    p.metadata.name.unwrap_or_default()
                )
            })
            .collect();
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(cfg.interval).await;
    }
}

/// The kinds pruning considers, in deletion order.
pub fn prune_kinds() -> Vec<KindInfo> {
    purge_kinds()
        .into_iter()
        .filter(|k| !NEVER_PRUNED.contains(&k.resource.kind.as_str()))
        .collect()
}

/// `up`: deletes the top-level objects of ours that `plan` does not hold.
pub async fn prune(client: &Client, plan: &ApplyPlan) -> Result<Vec<Deleted>, OpsError> {
    let mut out = Vec::new();
    for kind in prune_kinds() {
        let keep = |obj: &DynamicObject| {
            let owned = obj
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty());
            owned
                || plan.contains(
                    &kind.resource.kind,
                    obj.metadata.namespace.as_deref(),
                    obj.metadata.name.as_deref().unwrap_or_default(),
                )
        };
        out.extend(delete_kind(client, &kind, keep).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
