//! `status`: what runs where. [`gather`] reads pods, nodes, Jobs, ScaledJobs
//! and FailedScheduling Events (the I/O half); [`summarise`] turns them, plus
//! an optional GPU snapshot, into a [`StatusReport`] (pure, tested on fixtures);
//! [`render`] writes it as the text `status` and `up` print.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};
use posture_core::gpu::GpuSnapshot;

use super::nodes::MASTER_TAINT_KEY;
use super::pods::is_analyzer;
use super::{OpsError, managed_selector};
use crate::workload::{
    GPU_NODE_LABEL, WorkloadKind, is_not_found, pinned_node, pod_spec_pointer, scaledjob_resource,
};

/// One pod `up` created.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The node it is bound to, if any.
    pub node: Option<String>,
    /// `status.phase` (`Pending`, `Running`, …).
    pub phase: String,
    /// `analyzer` for Job pods, `platform` for scheduler/scaler pods.
    pub role: &'static str,
    /// For unscheduled pods: the latest FailedScheduling message, if any.
    pub pending_reason: Option<String>,
}

/// One node's line.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRow {
    /// Name.
    pub name: String,
    /// Pods of ours bound to it.
    pub pods: usize,
    /// GPU usage % when Prometheus gave a fresh reading.
    pub gpu_percent: Option<f64>,
    /// `ok`, `stale` or `missing` when a GPU snapshot was given.
    pub gpu_state: Option<&'static str>,
    /// Whether it carries the posture master taint.
    pub tainted: bool,
    /// Whether it carries the `gpu-node` label.
    pub gpu_labelled: bool,
}

/// Everything `status` prints.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusReport {
    /// `round-robin`, `keda` or `not deployed`.
    pub mode: &'static str,
    /// Jobs and ScaledJobs of ours.
    pub jobs: usize,
    /// ScaledJobs of ours.
    pub scaled_jobs: usize,
    /// Every node, sorted by name.
    pub nodes: Vec<NodeRow>,
    /// Every pod of ours, sorted by node then name (unscheduled last).
    pub pods: Vec<PodRow>,
}

impl StatusReport {
    /// Pods not bound to a node.
    pub fn pending(&self) -> impl Iterator<Item = &PodRow> {
        self.pods.iter().filter(|p| p.node.is_none())
    }
}

/// The raw material of a report.
#[derive(Clone, Debug, Default)]
pub struct StatusInputs {
    /// Pods with the ownership label.
    pub pods: Vec<Pod>,
    /// All nodes.
    pub nodes: Vec<Node>,
    /// Jobs with the ownership label.
    pub jobs: Vec<Job>,
    /// Names of ScaledJobs with the ownership label (`namespace/name`).
    pub scaled_jobs: Vec<String>,
    /// FailedScheduling events in the namespaces of unscheduled pods.
    pub events: Vec<Event>,
}

/// When an event last happened: `eventTime` (events.k8s.io writers, such as
/// our scheduler), else `lastTimestamp`, else creation.
fn event_time(e: &Event) -> Option<k8s_openapi::jiff::Timestamp> {
    e.event_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Builds the report (pure).
pub fn summarise(inputs: &StatusInputs, gpu: Option<&GpuSnapshot>) -> StatusReport {
    let latest = latest_failures(&inputs.events);
    let mut pods: Vec<PodRow> = inputs.pods.iter().map(|p| pod_row(p, &latest)).collect();
    pods.sort_by(|a, b| {
        (a.node.is_none(), &a.node, &a.name).cmp(&(b.node.is_none(), &b.node, &b.name))
    });
    let mut nodes: Vec<NodeRow> = inputs
        .nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let usage = gpu.and_then(|g| g.nodes.get(&name));
            NodeRow {
                pods: pods
                    .iter()
                    .filter(|p| p.node.as_deref() == Some(name.as_str()))
                    .count(),
                gpu_percent: gpu.and_then(|g| g.usage(&name)),
                gpu_state: gpu.map(|_| usage.map_or("missing", |u| u.state.as_str())),
                tainted: n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key == MASTER_TAINT_KEY)),
                gpu_labelled: n
                    .metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(GPU_NODE_LABEL)),
                name,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mode = if !inputs.scaled_jobs.is_empty() {
        "keda"
    } else if !inputs.jobs.is_empty() {
        "round-robin"
    } else {
        "not deployed"
    };
    StatusReport {
        mode,
        jobs: inputs.jobs.len(),
        scaled_jobs: inputs.scaled_jobs.len(),
        nodes,
        pods,
    }
}

/// The latest FailedScheduling message per pod `(namespace, name)`.
type LatestFailures = BTreeMap<(String, String), (Option<k8s_openapi::jiff::Timestamp>, String)>;

/// The latest FailedScheduling Event message of each pod.
fn latest_failures(events: &[Event]) -> LatestFailures {
    let mut latest = LatestFailures::new();
    for e in events {
        if e.reason.as_deref() != Some("FailedScheduling")
            || e.involved_object.kind.as_deref() != Some("Pod")
        {
            continue;
        }
        let key = (
            e.involved_object.namespace.clone().unwrap_or_default(),
            e.involved_object.name.clone().unwrap_or_default(),
        );
        let stamp = event_time(e);
        let msg = e.message.clone().unwrap_or_default();
        match latest.get(&key) {
            Some((prev, _)) if *prev >= stamp => {}
            _ => {
                latest.insert(key, (stamp, msg));
            }
        }
    }
    latest
}

/// One pod's row: where it runs, or why it waits.
fn pod_row(p: &Pod, latest: &LatestFailures) -> PodRow {
    let namespace = p.metadata.namespace.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let pending_reason = match node {
        Some(_) => None,
        None => latest
            .get(&(namespace.clone(), name.clone()))
            .map(|(_, m)| m.clone()),
    };
    PodRow {
        phase: p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into()),
        role: if is_analyzer(p) {
            "analyzer"
        } else {
            "platform"
        },
        namespace,
        name,
        node,
        pending_reason,
    }
}

/// Lists our ScaledJobs across namespaces; an API server without the KEDA CRD
/// (404) simply has none.
pub(crate) async fn list_scaled_jobs(client: &Client) -> Result<Vec<DynamicObject>, OpsError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &scaledjob_resource());
    match api
        .list(&ListParams::default().labels(&managed_selector()))
        .await
    {
        Ok(list) => Ok(list.items),
        Err(e) if is_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(OpsError::kube("list ScaledJobs", e)),
    }
}

/// The node each of our ScaledJobs in `namespace` is pinned to (required
/// node affinity on `gpu-node`), by name. `up` keeps these pins on a re-run so
/// placement (and the balancer's later moves) are not reshuffled.
pub async fn pinned_scaled_jobs(
    client: &Client,
    namespace: &str,
) -> Result<BTreeMap<String, String>, OpsError> {
    let spec = pod_spec_pointer(WorkloadKind::ScaledJob);
    Ok(list_scaled_jobs(client)
        .await?
        .into_iter()
        .filter(|o| o.metadata.namespace.as_deref() == Some(namespace))
        .filter_map(|o| {
            let node = pinned_node(o.data.pointer(spec)?, GPU_NODE_LABEL)?;
            Some((o.metadata.name?, node))
        })
        .collect())
}

/// Reads what a report needs: our pods, Jobs and ScaledJobs (all namespaces),
/// every node, and FailedScheduling events where pods wait.
pub async fn gather(client: &Client) -> Result<StatusInputs, OpsError> {
    let lp = ListParams::default().labels(&managed_selector());
    let pods = Api::<Pod>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| OpsError::kube("list pods", e))?
        .items;
    let nodes = super::nodes::list_nodes(client).await?;
    let jobs = Api::<Job>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| OpsError::kube("list Jobs", e))?
        .items;
    let scaled_jobs = list_scaled_jobs(client)
        .await?
        .into_iter()
        .map(|o| {
            format!(
                "{}/{}",
                o.metadata.namespace.unwrap_or_default(),
                o.metadata.name.unwrap_or_default()
            )
        })
        .collect();
    let mut pending_ns: Vec<String> = pods
        .iter()
        .filter(|p| !super::pods::pod_scheduled(p))
        .filter_map(|p| p.metadata.namespace.clone())
        .collect();
    pending_ns.sort();
    pending_ns.dedup();
    let mut events = Vec::new();
    for ns in pending_ns {
        let ep = ListParams::default().fields("involvedObject.kind=Pod,reason=FailedScheduling");
        let list = Api::<Event>::namespaced(client.clone(), &ns)
            .list(&ep)
            .await
            .map_err(|e| OpsError::kube(format!("list FailedScheduling events in {ns}"), e))?;
        events.extend(list.items);
    }
    Ok(StatusInputs {
        pods,
        nodes,
        jobs,
        scaled_jobs,
        events,
    })
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The report as text: summary line, nodes, pods, pending reasons.
pub fn render(report: &StatusReport, with_gpu: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mode: {}   jobs: {}   scaledjobs: {}   pods: {}   pending: {}\n",
        report.mode,
        report.jobs,
        report.scaled_jobs,
        report.pods.len(),
        report.pending().count()
    );
    let mut header = vec!["NODE", "PODS", "GPU-LABEL", "MASTER-TAINT"];
    if with_gpu {
        header.push("GPU");
    }
    let nodes: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|n| {
            let mut row = vec![
                n.name.clone(),
                n.pods.to_string(),
                if n.gpu_labelled { "yes" } else { "-" }.to_string(),
                if n.tainted { "yes" } else { "-" }.to_string(),
            ];
            if with_gpu {
                row.push(match n.gpu_percent {
                    Some(p) => format!("{p:.1}%"),
                    None => n.gpu_state.unwrap_or("-").to_string(),
                });
            }
            row
        })
        .collect();
    out.push_str(&table(&header, &nodes));
    out.push('\n');
    if report.pods.is_empty() {
        out.push_str("no pods created by posture-farm\n");
        return out;
    }
    let pods: Vec<Vec<String>> = report
        .pods
        .iter()
        .map(|p| {
            vec![
                format!("{}/{}", p.namespace, p.name),
                p.role.to_string(),
                p.phase.clone(),
                p.node.clone().unwrap_or_else(|| "<none>".into()),
            ]
        })
        .collect();
    out.push_str(&table(&["POD", "ROLE", "PHASE", "NODE"], &pods));
    let pending: Vec<_> = report.pending().collect();
    if !pending.is_empty() {
        out.push_str("\npending pods:\n");
        for p in pending {
            let _ = writeln!(
                out,
                "  {}/{}: {}",
                p.namespace,
                p.name,
                p.pending_reason
                    .as_deref()
                    .unwrap_or("no FailedScheduling event yet (is the scheduler running?)")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ApiMock;
    use posture_core::gpu::{GpuSample, NodeUsage, UsageState};
    use serde_json::{Value, json};

    pub(crate) fn pod_json(name: &str, node: Option<&str>, phase: &str, job: bool) -> Value {
        let owners = if job {
            json!([{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "u"}])
        } else {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u"}])
        };
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "ownerReferences": owners,
                         "labels": {"app.kubernetes.io/managed-by": "posture-farm"}},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase},
        })
    }

    fn event(pod: &str, at: &str, msg: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{pod}.{at}"), "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": pod, "namespace": "default"},
            "reason": "FailedScheduling", "message": msg, "lastTimestamp": at,
        })
    }

    fn list(kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": kind, "metadata": {}, "items": items})
    }

    #[test]
    fn report_counts_pods_per_node_and_explains_pending_ones() {
        let inputs = StatusInputs {
            pods: [
                pod_json("posture-pi1-x", Some("orin"), "Running", true),
                pod_json("posture-pi1-1-x", Some("orin"), "Running", true),
                pod_json("posture-pi1-2-x", None, "Pending", true),
            ]
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("pod"))
            .collect(),
            nodes: [
                crate::ops::nodes::tests::node_json("orin", json!({"gpu-node": "orin"}), json!([])),
                crate::ops::nodes::tests::node_json(
                    "nuc",
                    json!({}),
                    json!([{"key": MASTER_TAINT_KEY, "effect": "NoSchedule"}]),
                ),
            ]
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("node"))
            .collect(),
            jobs: vec![Job::default(); 3],
            scaled_jobs: vec![],
            events: [
                event("posture-pi1-2-x", "2026-11-23T10:00:00Z", "old reason"),
                event(
                    "posture-pi1-2-x",
                    "2026-11-23T10:05:00Z",
                    "0/2 nodes are available: 1 node(s) had untolerated taint",
                ),
            ]
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("event"))
            .collect(),
        };
        let mut gpu = GpuSnapshot::default();
        gpu.nodes.insert(
            "orin".into(),
            NodeUsage {
                sample: Some(GpuSample {
                    usage_percent: 42.0,
                    sampled_at: 0,
                }),
                state: UsageState::Ok,
                error: None,
            },
        );
        let r = summarise(&inputs, Some(&gpu));
        assert_eq!(r.mode, "round-robin");
        assert_eq!(
            r.nodes
                .iter()
                .map(|n| (n.name.as_str(), n.pods))
                .collect::<Vec<_>>(),
            [("nuc", 0), ("orin", 2)]
        );
        assert_eq!(r.nodes[1].gpu_percent, Some(42.0));
        assert_eq!(r.nodes[0].gpu_state, Some("missing"));
        assert!(r.nodes[0].tainted && !r.nodes[0].gpu_labelled);
        let pending: Vec<&PodRow> = r.pending().collect();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            pending[0].pending_reason.as_deref(),
            Some("0/2 nodes are available: 1 node(s) had untolerated taint")
        );
        assert_eq!(
            r.pods.last().map(|p| p.name.as_str()),
            Some("posture-pi1-2-x"),
            "unscheduled last"
        );
        let none = summarise(&StatusInputs::default(), None);
        assert_eq!(none.mode, "not deployed");
    }

    #[tokio::test]
    async fn pinned_scaled_jobs_reads_the_gpu_node_affinity() {
        let (client, mut mock) = ApiMock::new();
        let task = tokio::spawn(async move { pinned_scaled_jobs(&client, "posture").await });
        let req = mock.next().await;
        assert_eq!(req.path, "/apis/keda.sh/v1alpha1/scaledjobs");
        let sj = |name: &str, ns: &str, node: Option<&str>| {
            let spec = match node {
                Some(n) => {
                    json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu-node", "operator": "In", "values": [n]}]}]}}}})
                }
                None => json!({}),
            };
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": name, "namespace": ns},
                   "spec": {"jobTargetRef": {"template": {"spec": spec}}}})
        };
        req.respond(
            200,
            list(
                "ScaledJobList",
                vec![
                    sj("posture-pi1", "posture", Some("orin")),
                    sj("posture-pi1-1", "posture", None),
                    sj("posture-pi1", "other", Some("agx")),
                ],
            ),
        );
        let pins = task.await.expect("joins").expect("ok");
        assert_eq!(
            pins,
            BTreeMap::from([("posture-pi1".to_string(), "orin".to_string())])
        );
    }

    #[tokio::test]
    async fn gather_reads_by_label_and_tolerates_missing_keda_crd() {
        let (client, mut mock) = ApiMock::new();
        let task = tokio::spawn(async move { gather(&client).await });
        let req = mock.next().await;
        assert_eq!(req.path, "/api/v1/pods");
        assert!(
            req.query
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dposture-farm")
        );
        req.respond(
            200,
            list("PodList", vec![pod_json("p", None, "Pending", true)]),
        );
        let req = mock.next().await;
        assert_eq!(req.path, "/api/v1/nodes");
        req.respond(200, list("NodeList", vec![]));
        let req = mock.next().await;
        assert_eq!(req.path, "/apis/batch/v1/jobs");
        req.respond(200, list("JobList", vec![]));
        let req = mock.next().await;
        assert_eq!(req.path, "/apis/keda.sh/v1alpha1/scaledjobs");
        req.respond(
            404,
            crate::test_support::status_json(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
        let req = mock.next().await;
        assert_eq!(req.path, "/api/v1/namespaces/default/events");
        assert!(
            req.query
                .contains("fieldSelector=involvedObject.kind%3DPod%2Creason%3DFailedScheduling"),
            "{}",
            req.query
        );
        req.respond(
            200,
            list(
                "EventList",
                vec![event("p", "2026-11-23T10:00:00Z", "no nodes")],
            ),
        );
        let inputs = task.await.expect("joins").expect("ok");
        let r = summarise(&inputs, None);
        assert_eq!(r.pods[0].pending_reason.as_deref(), Some("no nodes"));
        assert!(r.nodes.is_empty());
    }

    #[test]
    fn renders_nodes_pods_and_pending_reasons() {
        let report = StatusReport {
            mode: "round-robin",
            jobs: 2,
            scaled_jobs: 0,
            nodes: vec![NodeRow {
                name: "orin".into(),
                pods: 1,
                gpu_percent: Some(12.5),
                gpu_state: Some("ok"),
                tainted: false,
                gpu_labelled: true,
            }],
            pods: vec![
                PodRow {
                    namespace: "default".into(),
                    name: "posture-pi1-x".into(),
                    node: Some("orin".into()),
                    phase: "Running".into(),
                    role: "analyzer",
                    pending_reason: None,
                },
                PodRow {
                    namespace: "default".into(),
                    name: "posture-pi1-1-y".into(),
                    node: None,
                    phase: "Pending".into(),
                    role: "analyzer",
                    pending_reason: Some("0/1 nodes are available".into()),
                },
            ],
        };
        let text = render(&report, true);
        assert!(text.starts_with("mode: round-robin   jobs: 2"), "{text}");
        assert!(
            text.contains("orin  1     yes        -             12.5%"),
            "{text}"
        );
        assert!(
            text.contains("default/posture-pi1-x    analyzer  Running  orin"),
            "{text}"
        );
        assert!(
            text.contains("default/posture-pi1-1-y: 0/1 nodes are available"),
            "{text}"
        );
    }
}
