//! The farm page's view (pure): nodes with their GPU reading and the
//! analyzers bound to them, pending analyzers with the scheduler's reason,
//! and recent placements, balancer moves and preemptions, from what the
//! Kubernetes poller read and the latest GPU snapshot. Either source may be
//! absent; the view then holds what the other one knows.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use posture_core::gpu::{GpuSnapshot, UsageState};

/// Event reasons shown in "recent activity".
pub const ACTIVITY_REASONS: [&str; 4] =
    ["Scheduled", "Rebalanced", "Preempted", "FailedScheduling"];
/// Most activity rows shown.
pub const MAX_ACTIVITY: usize = 40;

/// What the Kubernetes poller read.
#[derive(Clone, Debug, Default)]
pub struct KubeInputs {
    /// Our pods (the poller's label selector).
    pub pods: Vec<Pod>,
    /// Every node.
    pub nodes: Vec<Node>,
    /// Events with the [`ACTIVITY_REASONS`] in our pods' namespaces.
    pub events: Vec<Event>,
}

/// A node's GPU reading.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuView {
    /// Usage in percent (the last good one when stale).
    pub usage: Option<f64>,
    /// ok / stale / missing.
    pub state: UsageState,
    /// Age of the sample, seconds.
    pub age_secs: Option<i64>,
    /// Why it is stale or missing.
    pub error: Option<String>,
}

/// A pod of ours.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `status.phase`.
    pub phase: String,
    /// The `camera` label, for analyzers.
    pub camera: Option<String>,
    /// An analyzer (label `app=posture` or owned by a Job), else a platform pod.
    pub analyzer: bool,
}

/// One node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// Ready condition (`None` when Kubernetes is not read).
    pub ready: Option<bool>,
    /// `spec.unschedulable`.
    pub cordoned: bool,
    /// GPU reading, when Prometheus is read.
    pub gpu: Option<GpuView>,
    /// Our pods bound to it, analyzers first.
    pub pods: Vec<PodView>,
}

/// A pod waiting for a node.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingView {
    /// The pod.
    pub pod: PodView,
    /// Since when (creation).
    pub since: Option<Timestamp>,
    /// The scheduler's reason: the `PodScheduled` condition's message, else
    /// the latest FailedScheduling event.
    pub reason: Option<String>,
}

/// One line of recent activity.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivityView {
    /// When it last happened.
    pub time: Option<Timestamp>,
    /// `Scheduled`, `Rebalanced`, `Preempted` or `FailedScheduling`.
    pub reason: String,
    /// `Pod default/posture-pi1-x`.
    pub object: String,
    /// The event's message.
    pub message: String,
    /// How many times (event series).
    pub count: i32,
}

/// The farm page's content.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FarmView {
    /// Nodes by name.
    pub nodes: Vec<NodeView>,
    /// Pending pods, oldest first.
    pub pending: Vec<PendingView>,
    /// Newest first, at most [`MAX_ACTIVITY`].
    pub activity: Vec<ActivityView>,
}

fn event_time(e: &Event) -> Option<Timestamp> {
    e.event_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn pod_view(p: &Pod) -> PodView {
    let labels = p.metadata.labels.as_ref();
    let owned_by_job = p
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.kind == "Job"));
    PodView {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        phase: p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into()),
        camera: labels.and_then(|l| l.get("camera").cloned()),
        analyzer: owned_by_job
            || labels
                .and_then(|l| l.get("app"))
                .is_some_and(|a| a == "posture"),
    }
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn gpu_view(snapshot: &GpuSnapshot, node: &str, now_ms: i64) -> GpuView {
    match snapshot.nodes.get(node) {
        Some(u) => GpuView {
            usage: u.sample.map(|s| s.usage_percent),
            state: u.state,
            age_secs: u.sample.map(|s| (now_ms - s.sampled_at).max(0) / 1000),
            error: u.error.clone(),
        },
        None => GpuView {
            usage: None,
            state: UsageState::Missing,
            age_secs: None,
            error: Some("no GPU reading for this node".into()),
        },
    }
}

fn empty_node(name: String) -> NodeView {
    NodeView {
        name,
        ready: None,
        cordoned: false,
        gpu: None,
        pods: Vec::new(),
    }
}

/// The latest FailedScheduling message per pod `(namespace, name)`.
type Failed = BTreeMap<(String, String), (Option<Timestamp>, String)>;

/// Activity lines from Events, and each pod's latest FailedScheduling.
fn activity_from(events: &[Event]) -> (Vec<ActivityView>, Failed) {
    let mut failed = Failed::new();
    let mut activity = Vec::with_capacity(events.len());
    for e in events {
        let object = &e.involved_object;
        let key = (
            object.namespace.clone().unwrap_or_default(),
            object.name.clone().unwrap_or_default(),
        );
        let time = event_time(e);
        let message = e.message.clone().unwrap_or_default();
        let reason = e.reason.clone().unwrap_or_default();
        if reason == "FailedScheduling" && failed.get(&key).is_none_or(|(prev, _)| *prev < time) {
            failed.insert(key.clone(), (time, message.clone()));
        }
        activity.push(ActivityView {
            time,
            reason,
            object: format!(
                "{} {}/{}",
                object.kind.clone().unwrap_or_default(),
                key.0,
                key.1
            ),
            message,
            count: e.count.unwrap_or(1).max(1),
        });
    }
    (activity, failed)
}

/// Puts bound pods on their nodes; returns the unbound, unfinished ones
/// with the scheduler's reason.
fn place_pods(
    pods: &[Pod],
    nodes: &mut BTreeMap<String, NodeView>,
    failed: &Failed,
) -> Vec<PendingView> {
    let mut pending = Vec::new();
    for p in pods {
        let view = pod_view(p);
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        if let Some(node) = node {
            nodes
                .entry(node.clone())
                .or_insert_with(|| empty_node(node))
                .pods
                .push(view);
            continue;
        }
        if matches!(view.phase.as_str(), "Succeeded" | "Failed") {
            continue;
        }
        let condition = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .filter(|c| c.status == "False")
            .and_then(|c| c.message.clone())
            .filter(|m| !m.is_empty());
        let reason = condition.or_else(|| {
            failed
                .get(&(view.namespace.clone(), view.name.clone()))
                .map(|(_, m)| m.clone())
        });
        pending.push(PendingView {
            since: p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            reason,
            pod: view,
        });
    }
    pending
}

/// Builds the view (pure). `now_ms`: milliseconds since the epoch.
pub fn summarise(k8s: Option<&KubeInputs>, gpu: Option<&GpuSnapshot>, now_ms: i64) -> FarmView {
    let mut nodes: BTreeMap<String, NodeView> = BTreeMap::new();
    let mut pending = Vec::new();
    let mut activity = Vec::new();
    if let Some(k) = k8s {
        for n in &k.nodes {
            let mut view = empty_node(n.metadata.name.clone().unwrap_or_default());
            view.ready = Some(node_ready(n));
            view.cordoned = n
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            nodes.insert(view.name.clone(), view);
        }
        let failed;
        (activity, failed) = activity_from(&k.events);
        pending = place_pods(&k.pods, &mut nodes, &failed);
    }
    if let Some(g) = gpu {
        for name in g.nodes.keys() {
            nodes
                .entry(name.clone())
                .or_insert_with(|| empty_node(name.clone()));
        }
        for (name, n) in nodes.iter_mut() {
            n.gpu = Some(gpu_view(g, name, now_ms));
        }
    }
    for n in nodes.values_mut() {
        n.pods
            .sort_by(|a, b| (!a.analyzer, &a.name).cmp(&(!b.analyzer, &b.name)));
    }
    pending.sort_by(|a, b| (a.since, &a.pod.name).cmp(&(b.since, &b.pod.name)));
    activity.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.object.cmp(&b.object)));
    activity.truncate(MAX_ACTIVITY);
    FarmView {
        nodes: nodes.into_values().collect(),
        pending,
        activity,
    }
}

/// What a page would redraw for: placements, pending pods and reasons,
/// activity, GPU states and usages (rounded to whole percent).
pub fn fingerprint(view: &FarmView) -> String {
    let mut out = String::new();
    for n in &view.nodes {
        out.push_str(&n.name);
        out.push_str(&format!("|{:?}|{}", n.ready, n.cordoned));
        if let Some(g) = &n.gpu {
            out.push_str(&format!(
                "|{}|{:?}",
                g.state.as_str(),
                g.usage.map(|u| u.round() as i64)
            ));
        }
        for p in &n.pods {
            out.push_str(&format!("|{}/{}:{}", p.namespace, p.name, p.phase));
        }
        out.push('\n');
    }
    for p in &view.pending {
        out.push_str(&format!(
            "P {}/{} {:?}\n",
            p.pod.namespace, p.pod.name, p.reason
        ));
    }
    for a in &view.activity {
        out.push_str(&format!(
            "A {:?} {} {} {}\n",
            a.time, a.reason, a.object, a.count
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use posture_core::gpu::{GpuSample, NodeUsage};
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, phase: &str, condition: Option<&str>) -> Pod {
        let mut status = json!({ "phase": phase });
        if let Some(m) = condition {
            status["conditions"] = json!([{ "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": m }]);
        }
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "posture", "labels": { "app": "posture", "camera": name.trim_start_matches("posture-") },
                          "creationTimestamp": "2026-11-23T10:00:00Z" },
            "spec": { "containers": [], "nodeName": node },
            "status": status
        }))
        .unwrap()
    }

    fn node(name: &str, ready: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": name },
            "status": { "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] }
        }))
        .unwrap()
    }

    fn event(reason: &str, pod: &str, at: &str, msg: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": { "name": format!("{pod}.{reason}"), "namespace": "posture" },
            "involvedObject": { "kind": "Pod", "namespace": "posture", "name": pod },
            "reason": reason, "message": msg, "eventTime": at, "count": 1
        }))
        .unwrap()
    }

    #[test]
    fn nodes_carry_their_analyzers_gpu_and_pending_reasons() {
        let inputs = KubeInputs {
            pods: vec![
                pod("posture-pi1", Some("agx"), "Running", None),
                pod(
                    "posture-pi2",
                    None,
                    "Pending",
                    Some("0/2 nodes are available: 2 node(s) had no fresh GPU usage sample."),
                ),
                pod("posture-pi3", None, "Pending", None),
                pod("posture-old", None, "Succeeded", None),
            ],
            nodes: vec![node("agx", true), node("orin", false)],
            events: vec![
                event(
                    "Scheduled",
                    "posture-pi1",
                    "2026-11-23T10:00:05.000000Z",
                    "Successfully assigned posture/posture-pi1 to agx",
                ),
                event(
                    "FailedScheduling",
                    "posture-pi3",
                    "2026-11-23T10:00:07.000000Z",
                    "0/2 nodes are available: 1 node(s) were not ready.",
                ),
                event(
                    "Preempted",
                    "posture-pi9",
                    "2026-11-23T10:00:06.000000Z",
                    "Preempted by pod posture/high on node agx",
                ),
            ],
        };
        let mut gpu = GpuSnapshot::from_fresh(1_000_000, &[("agx", 35.0)]);
        gpu.nodes.insert(
            "orin".into(),
            NodeUsage {
                sample: Some(GpuSample {
                    usage_percent: 80.0,
                    sampled_at: 900_000,
                }),
                state: UsageState::Stale,
                error: Some("sample too old".into()),
            },
        );
        let v = summarise(Some(&inputs), Some(&gpu), 1_010_000);
        assert_eq!(v.nodes.len(), 2);
        let agx = &v.nodes[0];
        assert_eq!((agx.name.as_str(), agx.ready), ("agx", Some(true)));
        assert_eq!(agx.pods.len(), 1);
        assert_eq!(agx.pods[0].camera.as_deref(), Some("pi1"));
        let g = agx.gpu.as_ref().unwrap();
        assert_eq!(
            (g.usage, g.state, g.age_secs),
            (Some(35.0), UsageState::Ok, Some(10))
        );
        let orin = &v.nodes[1];
        assert_eq!(orin.ready, Some(false));
        assert_eq!(orin.gpu.as_ref().unwrap().state, UsageState::Stale);
        assert_eq!(orin.gpu.as_ref().unwrap().age_secs, Some(110));
        // The condition's message wins; without one, the latest FailedScheduling.
        assert_eq!(v.pending.len(), 2, "finished pods are not pending");
        assert!(
            v.pending[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("no fresh GPU usage sample")
        );
        assert!(
            v.pending[1]
                .reason
                .as_deref()
                .unwrap()
                .contains("were not ready")
        );
        let reasons: Vec<_> = v.activity.iter().map(|a| a.reason.as_str()).collect();
        assert_eq!(reasons, ["FailedScheduling", "Preempted", "Scheduled"]);
        assert_eq!(v.activity[2].object, "Pod posture/posture-pi1");
    }

    #[test]
    fn gpu_only_lists_prometheus_nodes_and_fingerprint_tracks_placement() {
        let gpu = GpuSnapshot::from_fresh(1_000, &[("xavier", 70.0)]);
        let v = summarise(None, Some(&gpu), 1_000);
        assert_eq!(v.nodes.len(), 1);
        assert_eq!(v.nodes[0].ready, None);
        let a = fingerprint(&v);
        let moved = summarise(
            Some(&KubeInputs {
                pods: vec![pod("posture-pi1", Some("xavier"), "Running", None)],
                ..Default::default()
            }),
            Some(&gpu),
            1_000,
        );
        assert_ne!(a, fingerprint(&moved));
        assert_eq!(fingerprint(&moved), fingerprint(&moved.clone()));
        assert_eq!(summarise(None, None, 0), FarmView::default());
    }
}
