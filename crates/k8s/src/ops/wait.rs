//! Waiting for what `up` applied to come alive: Deployments available, then
//! the analyzer pods bound to nodes. Polls the API at a fixed interval until a
//! deadline (a watch would save a few calls, but `up` runs once, for seconds,
//! and polling keeps each step a plain GET/LIST the tests can script).
//! Progress is reported through a callback so the CLI decides how to draw it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

use super::pods::pod_scheduled;
use super::{OpsError, managed_selector};

/// Where a waiting step stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitProgress {
    /// What is awaited, e.g. `deployment kube-system/rr-scheduler`.
    pub what: String,
    /// How many units are ready.
    pub done: usize,
    /// How many are expected.
    pub total: usize,
}

/// Polling interval and deadline.
#[derive(Clone, Copy, Debug)]
pub struct WaitConfig {
    /// Between two polls.
    pub interval: Duration,
    /// Give up after this long (per step).
    pub timeout: Duration,
}

impl Default for WaitConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(300),
        }
    }
}

/// Whether a Deployment has rolled out: the controller saw the latest spec and
/// every desired replica is updated and available.
pub fn deployment_ready(d: &Deployment) -> (usize, usize) {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    let Some(status) = &d.status else {
        return (0, desired);
    };
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0).max(0) as usize;
    let available = status.available_replicas.unwrap_or(0).max(0) as usize;
    let ready = if observed { updated.min(available) } else { 0 };
    (ready.min(desired), desired)
}

/// Whether a StatefulSet (broker, database) is up: the controller saw the
/// latest spec and every desired replica is updated and ready.
pub fn statefulset_ready(s: &StatefulSet) -> (usize, usize) {
    let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    let Some(status) = &s.status else {
        return (0, desired);
    };
    let observed = status.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0).max(0) as usize;
    let ready = status.ready_replicas.unwrap_or(0).max(0) as usize;
    let done = if observed { updated.min(ready) } else { 0 };
    (done.min(desired), desired)
}

/// Polls each object `(namespace, name)` of kind `K` until `ready` says all
/// its replicas are; `label` names the kind in progress and errors.
async fn wait_rollouts<K>(
    client: &Client,
    objects: &[(String, String)],
    label: &str,
    ready: fn(&K) -> (usize, usize),
    cfg: WaitConfig,
    progress: &mut impl FnMut(&WaitProgress),
) -> Result<(), OpsError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    for (ns, name) in objects {
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        let what = format!("{label} {ns}/{name}");
        let deadline = tokio::time::Instant::now() + cfg.timeout;
        loop {
            let obj = api
                .get(name)
                .await
                .map_err(|e| OpsError::kube(format!("read {what}"), e))?;
            let (done, total) = ready(&obj);
            progress(&WaitProgress {
                what: what.clone(),
                done,
                total,
            });
            if done >= total {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OpsError::Timeout {
                    what,
                    seconds: cfg.timeout.as_secs(),
                });
            }
            tokio::time::sleep(cfg.interval).await;
        }
    }
    Ok(())
}

/// Waits until each Deployment `(namespace, name)` is available.
pub async fn wait_deployments(
    client: &Client,
    deployments: &[(String, String)],
    cfg: WaitConfig,
    mut progress: impl FnMut(&WaitProgress),
) -> Result<(), OpsError> {
    wait_rollouts::<Deployment>(
        client,
        deployments,
        "deployment",
        deployment_ready,
        cfg,
        &mut progress,
    )
    .await
}

/// Waits until each StatefulSet `(namespace, name)` is ready (the broker
/// and the database, before anything that uses them starts).
pub async fn wait_statefulsets(
    client: &Client,
    statefulsets: &[(String, String)],
    cfg: WaitConfig,
    mut progress: impl FnMut(&WaitProgress),
) -> Result<(), OpsError> {
    wait_rollouts::<StatefulSet>(
        client,
        statefulsets,
        "statefulset",
        statefulset_ready,
        cfg,
        &mut progress,
    )
    .await
}

/// Waits until at least `expected` analyzer pods created by `up` in
/// `namespace` are bound to nodes; returns the pods seen last.
pub async fn wait_pods_scheduled(
    client: &Client,
    namespace: &str,
    expected: usize,
    cfg: WaitConfig,
    mut progress: impl FnMut(&WaitProgress),
) -> Result<Vec<Pod>, OpsError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&managed_selector());
    let what = format!("analyzer pods scheduled in {namespace}");
    let deadline = tokio::time::Instant::now() + cfg.timeout;
    loop {
        let pods = api
            .list(&lp)
            .await
            .map_err(|e| OpsError::kube(format!("list pods in {namespace}"), e))?
            .items;
        let analyzers: Vec<Pod> = pods.into_iter().filter(super::pods::is_analyzer).collect();
        let done = analyzers.iter().filter(|p| pod_scheduled(p)).count();
        progress(&WaitProgress {
            what: what.clone(),
            done,
            total: expected,
        });
        if done >= expected {
            return Ok(analyzers);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(OpsError::Timeout {
                what,
                seconds: cfg.timeout.as_secs(),
            });
        }
        tokio::time::sleep(cfg.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ApiMock;
    use serde_json::json;

    fn deployment(generation: i64, observed: i64, available: i32) -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "rr-scheduler", "namespace": "kube-system", "generation": generation},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "updatedReplicas": available, "availableReplicas": available},
        })
    }

    #[test]
    fn readiness_needs_the_latest_generation_observed() {
        let d = |g, o, a| serde_json::from_value::<Deployment>(deployment(g, o, a)).expect("valid");
        assert_eq!(deployment_ready(&d(2, 2, 1)), (1, 1));
        assert_eq!(
            deployment_ready(&d(3, 2, 1)),
            (0, 1),
            "old status does not count"
        );
        assert_eq!(deployment_ready(&d(2, 2, 0)), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_polling_until_available() {
        let (client, mut mock) = ApiMock::new();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            wait_deployments(
                &client,
                &[("kube-system".into(), "rr-scheduler".into())],
                WaitConfig::default(),
                |p| seen.push(p.done),
            )
            .await
            .map(|()| seen)
        });
        for available in [0, 1] {
            let req = mock.next().await;
            assert_eq!(
                req.path,
                "/apis/apps/v1/namespaces/kube-system/deployments/rr-scheduler"
            );
            req.respond(200, deployment(1, 1, available));
        }
        assert_eq!(task.await.expect("joins").expect("ready"), [0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_with_what_was_not_ready() {
        let (client, mut mock) = ApiMock::new();
        let cfg = WaitConfig {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
        };
        let task = tokio::spawn(async move {
            wait_deployments(
                &client,
                &[("kube-system".into(), "rr-scheduler".into())],
                cfg,
                |_| {},
            )
            .await
        });
        for _ in 0..4 {
            mock.next().await.respond(200, deployment(1, 1, 0));
        }
        let err = task.await.expect("joins").expect_err("times out");
        assert!(
            err.to_string()
                .contains("deployment kube-system/rr-scheduler"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn statefulsets_are_ready_when_every_replica_is_updated_and_ready() {
        let sts = |generation: i64, observed: i64, updated: i32, ready: i32| {
            json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "posture-db", "namespace": "posture", "generation": generation},
                "spec": {"replicas": 1, "serviceName": "posture-db", "selector": {}, "template": {}},
                "status": {"replicas": 1, "observedGeneration": observed, "updatedReplicas": updated, "readyReplicas": ready},
            })
        };
        let typed = |v| serde_json::from_value::<StatefulSet>(v).expect("valid");
        assert_eq!(statefulset_ready(&typed(sts(2, 1, 1, 1))), (0, 1));
        assert_eq!(statefulset_ready(&typed(sts(2, 2, 1, 0))), (0, 1));
        assert_eq!(statefulset_ready(&typed(sts(2, 2, 1, 1))), (1, 1));
        let (client, mut mock) = ApiMock::new();
        let task = tokio::spawn(async move {
            wait_statefulsets(
                &client,
                &[("posture".into(), "posture-db".into())],
                WaitConfig::default(),
                |_| {},
            )
            .await
        });
        for ready in [0, 1] {
            let req = mock
                .expect_get("/apis/apps/v1/namespaces/posture/statefulsets/posture-db")
                .await;
            req.respond(200, sts(1, 1, 1, ready));
        }
        task.await.expect("joins").expect("ready");
    }

    #[tokio::test(start_paused = true)]
    async fn pods_count_once_bound_to_a_node() {
        let (client, mut mock) = ApiMock::new();
        let task = tokio::spawn(async move {
            wait_pods_scheduled(&client, "default", 2, WaitConfig::default(), |_| {}).await
        });
        let pod = |name: &str, node: Option<&str>| {
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "u"}]},
                "spec": {"containers": [], "nodeName": node},
            })
        };
        let req = mock.next().await;
        assert_eq!(req.path, "/api/v1/namespaces/default/pods");
        assert!(
            req.query
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dposture-farm"),
            "{}",
            req.query
        );
        req.respond(200, json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod("a", Some("orin")), pod("b", None)]}));
        let req = mock.next().await;
        req.respond(200, json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod("a", Some("orin")), pod("b", Some("agx"))]}));
        let pods = task.await.expect("joins").expect("scheduled");
        assert_eq!(pods.len(), 2);
    }
}
