//! Telling people what the scheduler did, where `kubectl describe pod` shows
//! it: `events.k8s.io/v1` Events (`Scheduled`, `FailedScheduling`,
//! `Preempted`, warnings about malformed annotations) and the pod's
//! `PodScheduled` condition (False/Unschedulable with the reason).
//!
//! Reporting never blocks scheduling: reports go through a bounded queue
//! (bound: [`REPORT_QUEUE`]; when full, reports are dropped and counted, as
//! client-go's event broadcaster does) to one worker task that writes them.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use posture_core::PodKey;
use serde_json::json;
use tokio::sync::mpsc;

use super::metrics::SchedulerMetrics;

/// How many reports may wait for the worker. Sized for a burst of 10,000
/// pods failing at once being summarised rather than buffered without end.
pub const REPORT_QUEUE: usize = 4096;

/// A pod as Events refer to it.
#[derive(Clone, Debug)]
pub struct PodRef {
    /// Namespace and name.
    pub key: PodKey,
    /// `metadata.uid` (empty when unknown).
    pub uid: String,
}

impl PodRef {
    fn object_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(self.key.namespace.clone()),
            name: Some(self.key.name.clone()),
            uid: Some(self.uid.clone()).filter(|u| !u.is_empty()),
            ..Default::default()
        }
    }
}

/// One thing to report.
#[derive(Clone, Debug)]
pub enum Report {
    /// `Normal Scheduled "Successfully assigned ns/pod to node"`.
    Scheduled {
        /// The bound pod.
        pod: PodRef,
        /// Where it was bound.
        node: String,
    },
    /// `Warning FailedScheduling <message>` and PodScheduled=False/Unschedulable.
    FailedScheduling {
        /// The pod that did not fit.
        pod: PodRef,
        /// Why (`0/5 nodes are available: …`).
        message: String,
        /// Also patch the PodScheduled condition (skipped when unchanged).
        set_condition: bool,
    },
    /// `Normal Preempted "Preempted by ns/pod on node X"` on the victim.
    Preempted {
        /// The evicted pod.
        victim: PodRef,
        /// The pod the room was made for.
        preemptor: PodKey,
        /// The node.
        node: String,
    },
    /// Any other warning about a pod (e.g. a malformed annotation).
    Warning {
        /// The pod.
        pod: PodRef,
        /// Event reason (`InvalidPriority`).
        reason: String,
        /// Event note.
        message: String,
    },
}

/// Sender side, cloned into the loop.
#[derive(Clone, Debug)]
pub struct Reports {
    tx: mpsc::Sender<Report>,
    metrics: Arc<SchedulerMetrics>,
}

impl Reports {
    /// A sender whose reports arrive on the returned receiver instead of the
    /// API (dry runs, tests).
    pub fn channel(metrics: Arc<SchedulerMetrics>) -> (Self, mpsc::Receiver<Report>) {
        let (tx, rx) = mpsc::channel(REPORT_QUEUE);
        (Self { tx, metrics }, rx)
    }

    /// Queues a report; drops it (and counts the drop) when the queue is full.
    pub fn send(&self, report: Report) {
        if self.tx.try_send(report).is_err() {
            self.metrics.events_dropped.inc();
        }
    }
}

/// Starts the worker; returns the sender and the worker's handle.
pub fn spawn_reporter(
    client: Client,
    scheduler_name: &str,
    instance: Option<String>,
    metrics: Arc<SchedulerMetrics>,
) -> (Reports, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(REPORT_QUEUE);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: scheduler_name.to_string(),
            instance,
        },
    );
    let worker = tokio::spawn(run_reporter(client, recorder, rx, metrics.clone()));
    (Reports { tx, metrics }, worker)
}

/// Reports written at once. Few, so binds go ahead of Events: at most this
/// many Event writes wait at the API server in front of a bind (the
/// time-to-bind model, `posture-farm bench bind-latency`, shows p50 55 ms at
/// 16 against 15 ms at 4 when the server is saturated, and no difference
/// below saturation). Four writes of a few ms each still sustain over 1,000
/// Events/s, twice the 500 pods/s target, so none is dropped. The writer
/// uses its own client (connection pool) in `posture-farm scheduler`.
pub const REPORT_CONCURRENCY: usize = 4;

async fn run_reporter(
    client: Client,
    recorder: Recorder,
    rx: mpsc::Receiver<Report>,
    metrics: Arc<SchedulerMetrics>,
) {
    let (client, recorder) = (&client, &recorder);
    run_reports(rx, REPORT_CONCURRENCY, |report| {
        let metrics = metrics.clone();
        async move {
            if let Err(err) = write(client, recorder, &report).await {
                metrics.event_errors.inc();
                tracing::debug!(%err, ?report, "could not write event/condition");
            }
        }
    })
    .await;
}

/// The report writer's loop: up to `concurrency` reports written at once by
/// `write`, in arrival order, until every sender is gone. Shared by the API
/// writer and the time-to-bind model (`loadmodel`).
pub async fn run_reports<F, Fut>(rx: mpsc::Receiver<Report>, concurrency: usize, write: F)
where
    F: FnMut(Report) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::StreamExt;
    tokio_stream_from(rx)
        .for_each_concurrent(concurrency.max(1), write)
        .await;
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Report>) -> impl futures::Stream<Item = Report> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The Event a report becomes, and the object it is about.
pub fn event_for(report: &Report) -> (Event, ObjectReference) {
    match report {
        Report::Scheduled { pod, node } => (
            Event {
                type_: EventType::Normal,
                reason: "Scheduled".into(),
                note: Some(format!("Successfully assigned {} to {node}", pod.key)),
                action: "Binding".into(),
                secondary: None,
            },
            pod.object_ref(),
        ),
        Report::FailedScheduling { pod, message, .. } => (
            Event {
                type_: EventType::Warning,
                reason: "FailedScheduling".into(),
                note: Some(truncate(message)),
                action: "Scheduling".into(),
                secondary: None,
            },
            pod.object_ref(),
        ),
        Report::Preempted {
            victim,
            preemptor,
            node,
        } => (
            Event {
                type_: EventType::Normal,
                reason: "Preempted".into(),
                note: Some(format!("Preempted by pod {preemptor} on node {node}")),
                action: "Preempting".into(),
                secondary: None,
            },
            victim.object_ref(),
        ),
        Report::Warning {
            pod,
            reason,
            message,
        } => (
            Event {
                type_: EventType::Warning,
                reason: reason.clone(),
                note: Some(truncate(message)),
                action: "Scheduling".into(),
                secondary: None,
            },
            pod.object_ref(),
        ),
    }
}

/// Event notes are limited to 1 KiB by the API server.
fn truncate(s: &str) -> String {
    if s.len() <= 1024 {
        return s.to_string();
    }
    let mut end = 1021;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The strategic-merge patch kube-scheduler sends to `pods/status` for an
/// unschedulable pod (conditions merge by `type`).
pub fn unschedulable_condition_patch(message: &str, now: Timestamp) -> serde_json::Value {
    json!({
        "status": {
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": now.to_string(),
            }]
        }
    })
}

async fn write(client: &Client, recorder: &Recorder, report: &Report) -> Result<(), kube::Error> {
    let (event, reference) = event_for(report);
    recorder.publish(&event, &reference).await?;
    if let Report::FailedScheduling {
        pod,
        message,
        set_condition: true,
    } = report
    {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.key.namespace);
        let patch = unschedulable_condition_patch(message, Timestamp::now());
        match pods
            .patch_status(
                &pod.key.name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(_) => {}
            // The pod was deleted meanwhile: nothing to explain any more.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ApiMock;

    fn pod() -> PodRef {
        PodRef {
            key: PodKey::new("default", "posture-pi1-x"),
            uid: "uid-1".into(),
        }
    }

    #[tokio::test]
    async fn scheduled_event_is_written_like_kube_scheduler() {
        let (client, mut mock) = ApiMock::new();
        let metrics = Arc::new(SchedulerMetrics::default());
        let (reports, worker) = spawn_reporter(client, "rr-scheduler", None, metrics);
        reports.send(Report::Scheduled {
            pod: pod(),
            node: "agx".into(),
        });
        let req = mock.expect_event("default").await;
        assert_eq!(req.body["reason"], "Scheduled");
        assert_eq!(req.body["type"], "Normal");
        assert_eq!(
            req.body["note"],
            "Successfully assigned default/posture-pi1-x to agx"
        );
        assert_eq!(req.body["regarding"]["kind"], "Pod");
        assert_eq!(req.body["regarding"]["uid"], "uid-1");
        assert_eq!(req.body["reportingController"], "rr-scheduler");
        let body = req.body.clone();
        req.respond(201, body);
        drop(reports);
        worker.await.unwrap();
    }

    #[tokio::test]
    async fn failed_scheduling_writes_event_and_condition() {
        let (client, mut mock) = ApiMock::new();
        let metrics = Arc::new(SchedulerMetrics::default());
        let (reports, worker) = spawn_reporter(client, "rr-scheduler", None, metrics);
        let message = "0/5 nodes are available: 3 node(s) were not ready, 2 node(s) had untolerated taint {k: v}.";
        reports.send(Report::FailedScheduling {
            pod: pod(),
            message: message.into(),
            set_condition: true,
        });
        let req = mock.next().await;
        assert_eq!(req.body["reason"], "FailedScheduling");
        assert_eq!(req.body["type"], "Warning");
        assert_eq!(req.body["note"], message);
        let body = req.body.clone();
        req.respond(201, body);
        let req = mock.expect_patch_status("default", "posture-pi1-x").await;
        assert_eq!(req.content_type, "application/strategic-merge-patch+json");
        let cond = &req.body["status"]["conditions"][0];
        assert_eq!(cond["type"], "PodScheduled");
        assert_eq!(cond["status"], "False");
        assert_eq!(cond["reason"], "Unschedulable");
        assert_eq!(cond["message"], message);
        req.respond(200, serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "posture-pi1-x"}}));
        drop(reports);
        worker.await.unwrap();
    }

    #[test]
    fn long_notes_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let t = truncate(&long);
        assert!(t.len() <= 1024 && t.ends_with("..."));
    }
}
