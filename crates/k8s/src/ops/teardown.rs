//! `down`: delete what `up` created, and only that — every list is filtered
//! by the [`MANAGED_BY_LABEL`](super::MANAGED_BY_LABEL) selector (plus, for
//! Jobs KEDA spawned from our ScaledJobs, KEDA's `scaledjob.keda.sh/name`
//! label restricted to our ScaledJobs' names).
//!
//! Order: (with `--purge`) ScaledJobs first, so KEDA stops creating Jobs
//! while we delete them; then Jobs (propagation Background: the garbage
//! collector removes their pods); then leftover analyzer pods (orphans, or
//! pods whose Job is already gone); then, with `--purge`, the platform in the
//! reverse of the apply order — Deployments, Services, NetworkPolicies,
//! Secrets/ConfigMaps, RBAC, and last the namespace. Objects already gone
//! (404) count as deleted. Safe on an empty cluster: lists come back empty and
//! nothing is sent.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams};
use kube::{Api, Client};

use super::plan::{KindInfo, purge_kinds};
use super::pods::is_analyzer;
use super::status::list_scaled_jobs;
use super::{OpsError, managed_selector};
use crate::workload::{is_not_found, scaledjob_resource};

/// One object `down` deleted (or found already gone).
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

async fn delete_dynamic(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
    name: &str,
) -> Result<(), OpsError> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(OpsError::kube(
            format!("delete {} {name}", resource.kind),
            e,
        )),
    }
}

/// Lists our objects of a kind across namespaces; a kind the server does not
/// serve (404, e.g. no KEDA CRD) has none.
async fn list_ours(
    client: &Client,
    kind: &KindInfo,
    selector: &str,
) -> Result<Vec<DynamicObject>, OpsError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource);
    match api.list(&ListParams::default().labels(selector)).await {
        Ok(list) => Ok(list.items),
        Err(e) if is_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(OpsError::kube(format!("list {}", kind.resource.plural), e)),
    }
}

fn deleted(kind: &str, namespace: Option<String>, name: Option<String>) -> Deleted {
    Deleted {
        kind: kind.to_string(),
        namespace,
        name: name.unwrap_or_default(),
    }
}

/// Deletes what `up` created, in the documented order; returns what was deleted.
pub async fn teardown(client: &Client, purge: bool) -> Result<Vec<Deleted>, OpsError> {
    let selector = managed_selector();
    let mut out = Vec::new();

    let scaled_jobs = list_scaled_jobs(client).await?;
    let scaled_names: Vec<String> = scaled_jobs
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    if purge {
        let resource = scaledjob_resource();
        for sj in &scaled_jobs {
            let ns = sj.metadata.namespace.as_deref();
            let name = sj.metadata.name.as_deref().unwrap_or_default();
            delete_dynamic(client, &resource, ns, name).await?;
            out.push(deleted(
                "ScaledJob",
                sj.metadata.namespace.clone(),
                sj.metadata.name.clone(),
            ));
        }
    }
    out.extend(delete_jobs(client, &selector, &scaled_names).await?);
    out.extend(delete_leftover_pods(client, &selector).await?);
    if purge {
        for kind in purge_kinds() {
            if matches!(kind.resource.kind.as_str(), "Job" | "ScaledJob") {
                continue;
            }
            for obj in list_ours(client, &kind, &selector).await? {
                let ns = obj.metadata.namespace.clone().filter(|_| kind.namespaced);
                let name = obj.metadata.name.clone().unwrap_or_default();
                delete_dynamic(client, &kind.resource, ns.as_deref(), &name).await?;
                tracing::info!(kind = %kind.resource.kind, name = %name, "deleted");
                out.push(deleted(&kind.resource.kind, ns, Some(name)));
            }
        }
    }
    Ok(out)
}

/// Deletes our Jobs and those our ScaledJobs (`scaled_names`) spawned
/// (Background propagation: their pods go with them).
async fn delete_jobs(
    client: &Client,
    selector: &str,
    scaled_names: &[String],
) -> Result<Vec<Deleted>, OpsError> {
    let jobs_api: Api<Job> = Api::all(client.clone());
    let mut jobs = jobs_api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| OpsError::kube("list Jobs", e))?
        .items;
    if !scaled_names.is_empty() {
        let keda = format!("scaledjob.keda.sh/name in ({})", scaled_names.join(","));
        let spawned = jobs_api
            .list(&ListParams::default().labels(&keda))
            .await
            .map_err(|e| OpsError::kube("list Jobs spawned by our ScaledJobs", e))?
            .items;
        for job in spawned {
            if !jobs.iter().any(|j| j.metadata.uid == job.metadata.uid) {
                jobs.push(job);
            }
        }
    }
    let mut out = Vec::new();
    for job in jobs {
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(client.clone(), &ns);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(OpsError::kube(format!("delete Job {ns}/{name}"), e)),
        }
        tracing::info!(job = %format!("{ns}/{name}"), "deleted");
        out.push(deleted("Job", Some(ns), Some(name)));
    }
    Ok(out)
}

/// Deletes our analyzer pods (and orphans) still there after their Jobs;
/// scheduler and scaler pods belong to their Deployments (`--purge`).
async fn delete_leftover_pods(client: &Client, selector: &str) -> Result<Vec<Deleted>, OpsError> {
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| OpsError::kube("list pods", e))?
        .items;
    let mut out = Vec::new();
    for pod in pods {
        let orphan = pod
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty());
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if terminating || !(is_analyzer(&pod) || orphan) {
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
        out.push(deleted("Pod", Some(ns), Some(name)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ApiMock, status_json};
    use serde_json::{Value, json};

    fn empty(kind: &str) -> Value {
        json!({"apiVersion": "v1", "kind": kind, "metadata": {}, "items": []})
    }

    fn list(items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items})
    }

    /// Paths of the purge lists, in order (all but Job and ScaledJob).
    fn purge_list_paths() -> Vec<String> {
        purge_kinds()
            .into_iter()
            .filter(|k| !matches!(k.resource.kind.as_str(), "Job" | "ScaledJob"))
            .map(|k| {
                if k.resource.group.is_empty() {
                    format!("/api/v1/{}", k.resource.plural)
                } else {
                    format!(
                        "/apis/{}/{}/{}",
                        k.resource.group, k.resource.version, k.resource.plural
                    )
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn down_on_an_empty_cluster_lists_and_deletes_nothing() {
        for purge in [false, true] {
            let (client, mut mock) = ApiMock::new();
            let task = tokio::spawn(async move { teardown(&client, purge).await });
            let req = mock.next().await;
            assert_eq!(req.path, "/apis/keda.sh/v1alpha1/scaledjobs");
            // No KEDA installed: the CRD's path is not served.
            req.respond(
                404,
                status_json(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            );
            let mut paths = vec![
                "/apis/batch/v1/jobs".to_string(),
                "/api/v1/pods".to_string(),
            ];
            if purge {
                paths.extend(purge_list_paths());
            }
            for path in paths {
                let req = mock.expect_get(path.as_str()).await;
                assert!(
                    req.query
                        .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dposture-farm"),
                    "{}",
                    req.query
                );
                req.respond(200, empty("List"));
            }
            let deleted = task.await.expect("joins").expect("ok");
            assert!(deleted.is_empty(), "{deleted:?}");
        }
    }

    #[tokio::test]
    async fn down_deletes_jobs_then_leftover_analyzer_pods_only() {
        let (client, mut mock) = ApiMock::new();
        let task = tokio::spawn(async move { teardown(&client, false).await });
        mock.next().await.respond(200, list(vec![]));
        let req = mock.next().await;
        assert_eq!(req.path, "/apis/batch/v1/jobs");
        req.respond(
            200,
            list(vec![
                json!({"metadata": {"name": "posture-pi1", "namespace": "default", "uid": "j1"}}),
            ]),
        );
        let req = mock.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/default/jobs/posture-pi1"
            )
        );
        assert_eq!(req.body["propagationPolicy"], "Background");
        req.respond(
            200,
            json!({"metadata": {"name": "posture-pi1", "namespace": "default"}}),
        );
        let req = mock.next().await;
        assert_eq!(req.path, "/api/v1/pods");
        let pod = |name: &str, owner: Value, terminating: bool| {
            let mut p = json!({"metadata": {"name": name, "namespace": "default", "ownerReferences": owner}, "spec": {"containers": []}});
            if terminating {
                p["metadata"]["deletionTimestamp"] = json!("2026-11-23T10:00:00Z");
            }
            p
        };
        req.respond(200, list(vec![
            pod("posture-pi1-abc", json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "posture-pi1", "uid": "j1"}]), true),
            pod("posture-pi1-1-def", json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "posture-pi1-1", "uid": "j2"}]), false),
            pod("rr-scheduler-xyz", json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rr-scheduler-1", "uid": "r"}]), false),
        ]));
        let req = mock.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "DELETE",
                "/api/v1/namespaces/default/pods/posture-pi1-1-def"
            )
        );
        req.respond(
            404,
            status_json(404, "NotFound", "pods \"posture-pi1-1-def\" not found"),
        );
        let deleted: Vec<String> = task
            .await
            .expect("joins")
            .expect("ok")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            deleted,
            ["Job default/posture-pi1", "Pod default/posture-pi1-1-def"]
        );
    }

    #[tokio::test]
    async fn purge_removes_scaled_jobs_first_and_the_namespace_last() {
        let (client, mut mock) = ApiMock::new();
        let task = tokio::spawn(async move { teardown(&client, true).await });
        let req = mock.next().await;
        assert_eq!(req.path, "/apis/keda.sh/v1alpha1/scaledjobs");
        req.respond(200, list(vec![json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "posture-pi1", "namespace": "posture"}})]));
        let req = mock.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "DELETE",
                "/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs/posture-pi1"
            )
        );
        req.respond(200, json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "posture-pi1", "namespace": "posture"}}));
        // Our Jobs, then the Jobs KEDA spawned from our ScaledJobs.
        let req = mock.next().await;
        assert!(req.query.contains("managed-by"), "{}", req.query);
        req.respond(200, list(vec![]));
        let req = mock.next().await;
        assert!(
            req.query
                .contains("scaledjob.keda.sh%2Fname+in+%28posture-pi1%29")
                || req
                    .query
                    .contains("scaledjob.keda.sh%2Fname%20in%20%28posture-pi1%29"),
            "{}",
            req.query
        );
        req.respond(200, list(vec![json!({"metadata": {"name": "posture-pi1-x7k", "namespace": "posture", "uid": "k"}})]));
        let req = mock.next().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-x7k"
            )
        );
        req.respond(200, json!({"metadata": {"name": "posture-pi1-x7k"}}));
        mock.next().await.respond(200, list(vec![])); // pods
        for path in purge_list_paths() {
            let req = mock.next().await;
            assert_eq!(req.path, path);
            let items = match path.as_str() {
                "/apis/apps/v1/deployments" => {
                    vec![json!({"metadata": {"name": "rr-scheduler", "namespace": "kube-system"}})]
                }
                "/apis/rbac.authorization.k8s.io/v1/clusterroles" => {
                    vec![json!({"metadata": {"name": "posture-farm-scheduler"}})]
                }
                "/api/v1/namespaces" => vec![json!({"metadata": {"name": "posture"}})],
                _ => vec![],
            };
            let expected_deletes: Vec<String> = items
                .iter()
                .map(|i| {
                    let name = i["metadata"]["name"].as_str().unwrap_or_default();
                    match i["metadata"]["namespace"].as_str() {
                        Some(ns) => {
                            let (prefix, plural) = path.rsplit_once('/').expect("has a slash");
                            format!("{prefix}/namespaces/{ns}/{plural}/{name}")
                        }
                        None => format!("{path}/{name}"),
                    }
                })
                .collect();
            req.respond(200, list(items));
            for want in expected_deletes {
                let req = mock.expect_delete(want.as_str()).await;
                req.respond(200, json!({"metadata": {}}));
            }
        }
        let deleted: Vec<String> = task
            .await
            .expect("joins")
            .expect("ok")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            deleted.first().map(String::as_str),
            Some("ScaledJob posture/posture-pi1")
        );
        assert_eq!(
            deleted.last().map(String::as_str),
            Some("Namespace posture")
        );
        assert!(deleted.contains(&"Deployment kube-system/rr-scheduler".to_string()));
        assert!(deleted.contains(&"ClusterRole posture-farm-scheduler".to_string()));
    }
}
