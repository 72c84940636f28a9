//! `status`: what runs where. [`gather`] reads pods, nodes, Jobs, ScaledJobs,
//! the farm's Deployments, StatefulSets and DaemonSets (schedulers, scaler,
//! broker, database, Prometheus, exporter) and FailedScheduling Events (the
//! I/O half); [`summarise`] turns them, plus an optional GPU snapshot, into a
//! [`StatusReport`] (pure, tested on fixtures); [`render`] writes it as the
//! text `status` and `up` print.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};
use posture_core::gpu::GpuSnapshot;

use super::manifests::{DASHBOARD_SERVICE, Mode};
use super::nodes::MASTER_TAINT_KEY;
use super::plan::COMPONENT_LABEL;
use super::pods::is_analyzer;
use super::wait::{deployment_ready, statefulset_ready};
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
    /// The node's last GPU reading (%), fresh or not, when a GPU snapshot was given.
    pub gpu_percent: Option<f64>,
    /// `ok`, `stale` or `missing` when a GPU snapshot was given.
    pub gpu_state: Option<&'static str>,
    /// Whether it carries the posture master taint.
    pub tainted: bool,
    /// Whether it carries the `gpu-node` label.
    pub gpu_labelled: bool,
}

/// One of the farm's own workloads (not an analyzer): a scheduler, the
/// scaler, the broker, the database, Prometheus, the GPU exporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentRow {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its component label (`broker`, `database`, `scheduler`, …).
    pub component: String,
    /// Ready replicas.
    pub ready: usize,
    /// Desired replicas.
    pub desired: usize,
}

/// Everything `status` prints.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusReport {
    /// `round-robin`, `gpu`, `keda`, `priority` or `not deployed`.
    pub mode: &'static str,
    /// The farm's own workloads, sorted by kind then name.
    pub components: Vec<ComponentRow>,
    /// Where the dashboard answers (in-cluster URL first), when deployed.
    pub dashboard: Vec<String>,
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
    /// The farm's Deployments, StatefulSets and DaemonSets with their readiness.
    pub components: Vec<ComponentRow>,
    /// The dashboard's Service, when it is deployed.
    pub dashboard: Option<Service>,
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
                gpu_percent: usage.and_then(|u| u.sample).map(|s| s.usage_percent),
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
    let mut components = inputs.components.clone();
    components.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    StatusReport {
        mode: mode_of(inputs),
        components,
        dashboard: inputs
            .dashboard
            .as_ref()
            .map(dashboard_addresses)
            .unwrap_or_default(),
        jobs: inputs.jobs.len(),
        scaled_jobs: inputs.scaled_jobs.len(),
        nodes,
        pods,
    }
}

/// The URLs of the dashboard's Service: its in-cluster name, then (when
/// its type makes it reachable from outside) each load-balancer address or
/// `<any node>:<nodePort>`.
pub fn dashboard_addresses(service: &Service) -> Vec<String> {
    let ns = service.metadata.namespace.as_deref().unwrap_or("default");
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let port = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first());
    let Some(port) = port else {
        return Vec::new();
    };
    let mut out = vec![format!(
        "http://{name}.{ns}.svc.cluster.local:{} (in the cluster)",
        port.port
    )];
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for i in ingress.into_iter().flatten() {
        if let Some(host) = i.ip.as_ref().or(i.hostname.as_ref()) {
            out.push(format!("http://{host}:{}", port.port));
        }
    }
    if let Some(node_port) = port.node_port {
        out.push(format!("http://<any node>:{node_port}"));
    }
    out
}

/// The mode a cluster runs: ScaledJobs mean KEDA; otherwise the scheduler
/// the Jobs name tells which of the Job modes.
fn mode_of(inputs: &StatusInputs) -> &'static str {
    if !inputs.scaled_jobs.is_empty() {
        return Mode::Keda.as_str();
    }
    let scheduler = inputs.jobs.iter().find_map(|j| {
        j.spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .scheduler_name
            .clone()
    });
    match scheduler {
        Some(name) => Mode::ALL
            .into_iter()
            .find(|m| m.scheduler_name() == Some(name.as_str()))
            .map_or("jobs (unknown scheduler)", Mode::as_str),
        None if inputs.jobs.is_empty() => "not deployed",
        None => "jobs (default scheduler)",
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
        components: gather_components(client).await?,
        dashboard: Api::<Service>::all(client.clone())
            .list(&ListParams::default().labels(&format!(
                "{},app.kubernetes.io/name={DASHBOARD_SERVICE}",
                managed_selector()
            )))
            .await
            .map_err(|e| OpsError::kube("list the dashboard's Service", e))?
            .items
            .into_iter()
            .next(),
    })
}

fn component_row<K: kube::Resource>(
    kind: &'static str,
    obj: &K,
    (ready, desired): (usize, usize),
) -> ComponentRow {
    let meta = obj.meta();
    ComponentRow {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        component: meta
            .labels
            .as_ref()
            .and_then(|l| l.get(COMPONENT_LABEL))
            .cloned()
            .unwrap_or_default(),
        ready,
        desired,
    }
}

/// The farm's Deployments, StatefulSets and DaemonSets with their readiness.
async fn gather_components(client: &Client) -> Result<Vec<ComponentRow>, OpsError> {
    let lp = ListParams::default().labels(&managed_selector());
    let mut rows = Vec::new();
    for d in Api::<Deployment>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| OpsError::kube("list Deployments", e))?
    {
        rows.push(component_row("Deployment", &d, deployment_ready(&d)));
    }
    for s in Api::<StatefulSet>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| OpsError::kube("list StatefulSets", e))?
    {
        rows.push(component_row("StatefulSet", &s, statefulset_ready(&s)));
    }
    for d in Api::<DaemonSet>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| OpsError::kube("list DaemonSets", e))?
    {
        let status = d.status.as_ref();
        let ready = status.map_or(0, |s| s.number_ready.max(0) as usize);
        let desired = status.map_or(0, |s| s.desired_number_scheduled.max(0) as usize);
        rows.push(component_row("DaemonSet", &d, (ready, desired)));
    }
    Ok(rows)
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
    out.push_str(&nodes_table(&report.nodes, with_gpu));
    out.push('\n');
    if !report.components.is_empty() {
        let rows: Vec<Vec<String>> = report
            .components
            .iter()
            .map(|c| {
                vec![
                    format!("{}/{}", c.namespace, c.name),
                    c.kind.to_string(),
                    c.component.clone(),
                    format!("{}/{}", c.ready, c.desired),
                ]
            })
            .collect();
        out.push_str(&table(&["COMPONENT", "KIND", "ROLE", "READY"], &rows));
        out.push('\n');
    }
    for (i, address) in report.dashboard.iter().enumerate() {
        let label = if i == 0 { "dashboard:" } else { "          " };
        let _ = writeln!(out, "{label} {address}");
    }
    if !report.dashboard.is_empty() {
        out.push('\n');
    }
    out.push_str(&pods_section(report));
    out
}

/// One row per node: pods, GPU label, master taint, and (when read) the GPU
/// reading with its state.
fn nodes_table(nodes: &[NodeRow], with_gpu: bool) -> String {
    let mut header = vec!["NODE", "PODS", "GPU-LABEL", "MASTER-TAINT"];
    if with_gpu {
        header.push("GPU");
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let mut row = vec![
                n.name.clone(),
                n.pods.to_string(),
                if n.gpu_labelled { "yes" } else { "-" }.to_string(),
                if n.tainted { "yes" } else { "-" }.to_string(),
            ];
            if with_gpu {
                let state = n.gpu_state.unwrap_or("missing");
                row.push(match n.gpu_percent {
                    Some(p) => format!("{p:.1}% {state}"),
                    None => state.to_string(),
                });
            }
            row
        })
        .collect();
    table(&header, &rows)
}

/// One row per pod, then each pending pod with its reason.
fn pods_section(report: &StatusReport) -> String {
    if report.pods.is_empty() {
        return "no pods created by posture-farm\n".to_string();
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
    let mut out = table(&["POD", "ROLE", "PHASE", "NODE"], &pods);
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
mod tests;
