//! The `up` sequence as two steps the CLI calls around KEDA placement:
//! [`prepare_nodes`] (taint the control plane, label GPU nodes) and
//! [`deploy`] (apply the plan in stage order, then wait for the Deployments
//! and the analyzer pods). Kept here, not in the CLI, so the whole exchange
//! with the API server — and its idempotence — is tested as one scenario.

use super::OpsError;
use super::apply::{ApplyOutcome, apply_plan};
use super::nodes::{self, NodeChange};
use super::plan::ApplyPlan;
use super::wait::{WaitConfig, WaitProgress, wait_deployments, wait_pods_scheduled};
use crate::workload::{GPU_NODE_LABEL, LabelError, label_gpu_nodes};
use kube::Client;

/// How `up` prepares nodes.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// `--master`: the node to taint instead of the role-labelled ones.
    pub master: Option<String>,
    /// `--no-taint`.
    pub skip_taint: bool,
    /// `--gpu-nodes`: nodes to label instead of every non-master node.
    pub gpu_nodes: Vec<String>,
}

/// What node preparation did, and the GPU nodes it settled on.
#[derive(Clone, Debug, Default)]
pub struct PreparedNodes {
    /// Taint and label changes (or confirmations).
    pub changes: Vec<NodeChange>,
    /// The control-plane nodes (tainted unless skipped).
    pub masters: Vec<String>,
    /// The GPU nodes (labelled `gpu-node=<name>`).
    pub gpu_nodes: Vec<String>,
}

/// Taints the control-plane node(s) and labels the GPU nodes.
pub async fn prepare_nodes(client: &Client, opts: &NodeOptions) -> Result<PreparedNodes, OpsError> {
    let all = nodes::list_nodes(client).await?;
    let masters = nodes::masters(&all, opts.master.as_deref());
    let mut changes = Vec::new();
    if !opts.skip_taint {
        changes.extend(nodes::taint(client, &all, &masters).await?);
    }
    let gpu_nodes = nodes::gpu_nodes(&all, &masters, &opts.gpu_nodes);
    let labelled = label_gpu_nodes(client, &all, &gpu_nodes, GPU_NODE_LABEL)
        .await
        .map_err(|e| match e {
            LabelError::NoSuchNode { node } => OpsError::manifest(
                format!("node {node}"),
                "no such node in the cluster (check --gpu-nodes)",
            ),
            LabelError::Read { node, source } | LabelError::Patch { node, source, .. } => {
                OpsError::kube(format!("label node {node}"), source)
            }
        })?;
    changes.extend(labelled.into_iter().map(|l| NodeChange {
        action: format!("labelled {GPU_NODE_LABEL}={}", l.node),
        node: l.node,
        changed: l.changed,
    }));
    Ok(PreparedNodes {
        changes,
        masters,
        gpu_nodes,
    })
}

/// A step of [`deploy`], for progress display.
#[derive(Clone, Debug)]
pub enum DeployEvent<'a> {
    /// One object applied (`n` of `total`).
    Applied {
        /// The outcome.
        outcome: &'a ApplyOutcome,
        /// How many are done.
        n: usize,
        /// How many there are.
        total: usize,
    },
    /// A readiness poll.
    Waiting(&'a WaitProgress),
}

/// Applies the plan; then, unless `wait` is `None`, waits for its
/// Deployments and for one scheduled pod per Job in `namespace`.
pub async fn deploy(
    client: &Client,
    plan: &ApplyPlan,
    namespace: &str,
    wait: Option<WaitConfig>,
    mut events: impl FnMut(DeployEvent<'_>),
) -> Result<Vec<ApplyOutcome>, OpsError> {
    let total = plan.objects.len();
    let mut n = 0;
    let outcomes = apply_plan(client, plan, |outcome| {
        n += 1;
        events(DeployEvent::Applied { outcome, n, total });
    })
    .await?;
    if let Some(cfg) = wait {
        wait_deployments(client, &plan.deployments(), cfg, |p| {
            events(DeployEvent::Waiting(p))
        })
        .await?;
        let jobs = plan.workload_names("Job").len();
        if jobs > 0 {
            wait_pods_scheduled(client, namespace, jobs, cfg, |p| {
                events(DeployEvent::Waiting(p))
            })
            .await?;
        }
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::apply::ApplyAction;
    use crate::ops::manifests::{RenderOptions, embedded, render};
    use crate::ops::nodes::tests::node_json;
    use crate::ops::plan::PlannedObject;
    use crate::test_support::{ApiMock, status_json};
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use std::time::Duration;

    /// The path the API server serves an object at.
    fn path_of(o: &PlannedObject) -> String {
        let r = &o.kind.resource;
        let base = if r.group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        match o.namespace() {
            Some(ns) if o.kind.namespaced => {
                format!("{base}/namespaces/{ns}/{}/{}", r.plural, o.name())
            }
            _ => format!("{base}/{}/{}", r.plural, o.name()),
        }
    }

    /// A minimal stand-in for the API server's SSA bookkeeping: objects by
    /// path with a resourceVersion that moves only when content changes.
    #[derive(Default)]
    struct Store {
        objects: HashMap<String, (Value, u64)>,
        next_rv: u64,
    }

    impl Store {
        fn get(&self, path: &str) -> Option<Value> {
            self.objects.get(path).map(|(v, rv)| with_rv(v, *rv))
        }
        fn apply(&mut self, path: &str, body: Value) -> Value {
            let rv = match self.objects.get(path) {
                Some((old, rv)) if *old == body => *rv,
                _ => {
                    self.next_rv += 1;
                    self.next_rv
                }
            };
            self.objects.insert(path.to_string(), (body.clone(), rv));
            with_rv(&body, rv)
        }
    }

    fn with_rv(v: &Value, rv: u64) -> Value {
        let mut v = v.clone();
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        v
    }

    /// Serves one `deploy` (no wait): asserts each GET then apply PATCH hits the
    /// planned object's path in plan order; returns the apply bodies.
    async fn serve_deploy(
        mock: &mut ApiMock,
        store: &mut Store,
        plan: &ApplyPlan,
    ) -> Vec<(String, Value)> {
        let mut sent = Vec::new();
        for object in &plan.objects {
            let path = path_of(object);
            let get = mock.expect_get(path.as_str()).await;
            match store.get(&path) {
                Some(v) => get.respond(200, v),
                None => get.respond(404, status_json(404, "NotFound", "not found")),
            }
            let patch = mock.expect_patch(path.as_str()).await;
            assert!(
                patch.query.contains("fieldManager=posture-farm")
                    && patch.query.contains("force=true")
            );
            sent.push((path.clone(), patch.body.clone()));
            let answer = store.apply(&path, patch.body.clone());
            patch.respond(200, answer);
        }
        sent
    }

    #[tokio::test]
    async fn up_twice_with_the_deploy_files_sends_the_same_applies_and_changes_nothing() {
        let rendered = render(
            &embedded(),
            &RenderOptions {
                namespace: Some("posture".into()),
                ..RenderOptions::default()
            },
        )
        .expect("renders");
        let plan = rendered.plan;
        let (client, mut mock) = ApiMock::new();
        let p = plan.clone();
        let task = tokio::spawn(async move {
            let first = deploy(&client, &p, "posture", None, |_| {}).await?;
            let second = deploy(&client, &p, "posture", None, |_| {}).await?;
            Ok::<_, OpsError>((first, second))
        });
        let mut store = Store::default();
        let first_sent = serve_deploy(&mut mock, &mut store, &plan).await;
        let second_sent = serve_deploy(&mut mock, &mut store, &plan).await;
        let (first, second) = task.await.expect("joins").expect("ok");
        assert_eq!(
            first_sent, second_sent,
            "the same applies, in the same order"
        );
        assert!(first.iter().all(|o| o.action == ApplyAction::Created));
        assert!(
            second.iter().all(|o| o.action == ApplyAction::Unchanged),
            "{second:?}"
        );
        let order: Vec<&str> = first_sent.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(order[0], "/api/v1/namespaces/posture");
        let sched = order
            .iter()
            .position(|p| p.ends_with("deployments/rr-scheduler"))
            .expect("scheduler applied");
        let first_job = order
            .iter()
            .position(|p| p.contains("/jobs/"))
            .expect("jobs applied");
        assert!(
            order
                .iter()
                .position(|p| p.contains("clusterroles/"))
                .expect("rbac")
                < sched
        );
        assert!(sched < first_job, "scheduler before the Jobs that name it");
        assert_eq!(
            order
                .iter()
                .filter(|p| p.contains("/namespaces/posture/jobs/"))
                .count(),
            10
        );
    }

    #[tokio::test(start_paused = true)]
    async fn prepare_then_deploy_waits_for_scheduler_and_pods() {
        let plan = render(
            &embedded(),
            &RenderOptions {
                cameras: Some(1),
                ..RenderOptions::default()
            },
        )
        .expect("renders")
        .plan;
        let (client, mut mock) = ApiMock::new();
        let p = plan.clone();
        let task = tokio::spawn(async move {
            let nodes = prepare_nodes(&client, &NodeOptions::default()).await?;
            let cfg = WaitConfig {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(60),
            };
            let mut waits = 0;
            let out = deploy(&client, &p, "default", Some(cfg), |e| {
                if matches!(e, DeployEvent::Waiting(_)) {
                    waits += 1;
                }
            })
            .await?;
            Ok::<_, OpsError>((nodes, out, waits))
        });
        // Nodes: the master gets the taint, the worker the label.
        let req = mock.next().await;
        assert_eq!(req.path, "/api/v1/nodes");
        req.respond(200, json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [
            node_json("nuc", json!({"node-role.kubernetes.io/control-plane": "true"}), json!([])),
            node_json("orin", json!({}), json!([])),
        ]}));
        let req = mock.expect_patch_node("nuc").await;
        assert_eq!(
            req.body["spec"]["taints"][0]["key"],
            "node-role.kubernetes.io/control-plane"
        );
        req.respond(200, node_json("nuc", json!({}), json!([])));
        let req = mock.expect_patch_node("orin").await;
        assert_eq!(req.body["metadata"]["labels"]["gpu-node"], "orin");
        req.respond(
            200,
            node_json("orin", json!({"gpu-node": "orin"}), json!([])),
        );
        let mut store = Store::default();
        serve_deploy(&mut mock, &mut store, &plan).await;
        // Scheduler Deployment: not yet available, then available.
        for available in [0, 1] {
            let req = mock.next().await;
            assert_eq!(
                req.path,
                "/apis/apps/v1/namespaces/kube-system/deployments/rr-scheduler"
            );
            req.respond(200, json!({
                "metadata": {"name": "rr-scheduler", "namespace": "kube-system", "generation": 1},
                "spec": {"replicas": 1, "selector": {}, "template": {}},
                "status": {"observedGeneration": 1, "updatedReplicas": available, "availableReplicas": available},
            }));
        }
        let req = mock.next().await;
        assert_eq!(req.path, "/api/v1/namespaces/default/pods");
        req.respond(200, json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
            "metadata": {"name": "posture-pi1-abcde", "namespace": "default",
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "posture-pi1", "uid": "u"}]},
            "spec": {"containers": [], "nodeName": "orin"},
        }]}));
        let (nodes, out, waits) = task.await.expect("joins").expect("ok");
        assert_eq!(nodes.masters, ["nuc"]);
        assert_eq!(nodes.gpu_nodes, ["orin"]);
        assert!(out.iter().all(|o| o.action == ApplyAction::Created));
        assert_eq!(waits, 3);
    }
}
