//! A measurable model of time to bind (issue 19.4): the real loop
//! ([`Scheduler::run`]) and the real report writer ([`run_reports`]) driven
//! by pods arriving at a fixed rate, against an in-memory API server whose
//! calls take a realistic time and are served a bounded number at a time,
//! binds and Event writes alike. Runs in virtual time (tokio's paused
//! clock), so figures are reproducible and the machine's load does not
//! enter them: they show the structure (queueing behind Event writes, bind
//! concurrency, the loop's turns), not CPU cost.
//!
//! ```text
//! arrivals (rate/s) ─► watch delay ─► Scheduler::run ─► ModelApi::bind ──┐
//!                                         └► Reports ─► run_reports ─► ModelApi (Event) ─┤ FIFO, `workers` at once,
//!                                                                                        └ `service` each, + round trip
//! ```
//!
//! Creation → bind is measured with millisecond precision from the moment
//! the pod is created (before the watch delay), unlike
//! `metadata.creationTimestamp`, which has one-second resolution.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc as fmpsc;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::Event as WatchEvent;
use posture_core::policy::RoundRobin;
use posture_core::{Binding, Eviction, Nomination, PodKey};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::actuator::{Actuator, EvictResult};
use super::binder::BindOutcome;
use super::config::RuntimeConfig;
use super::events::{Reports, run_reports};
use super::metrics::SchedulerMetrics;
use super::preempt::PreemptError;
use super::runtime::Scheduler;

/// The model's parameters.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// Pods created per second.
    pub rate: f64,
    /// Pods created in all.
    pub pods: usize,
    /// Nodes to bind to.
    pub nodes: usize,
    /// API server requests served at once (its cores).
    pub workers: usize,
    /// Server time of one request.
    pub service: Duration,
    /// Network round trip added to every request.
    pub round_trip: Duration,
    /// Creation → watch event delivery.
    pub watch_delay: Duration,
    /// The loop's `--bind-concurrency`.
    pub bind_concurrency: usize,
    /// Event writes in flight at most (the report writer's concurrency).
    pub event_concurrency: usize,
}

impl Default for ModelSpec {
    fn default() -> Self {
        // 2 cores at ~0.6 ms a request ≈ 1,700 requests/s: what a 2-core API
        // server accepted from a bare client (shared/notes/cluster-facts.md).
        Self {
            rate: 500.0,
            pods: 5_000,
            nodes: 50,
            workers: 2,
            service: Duration::from_micros(1_150),
            round_trip: Duration::from_millis(1),
            watch_delay: Duration::from_millis(2),
            bind_concurrency: 64,
            event_concurrency: super::events::REPORT_CONCURRENCY,
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct ModelReport {
    /// Creation → bind of every bound pod, sorted.
    pub latencies: Vec<Duration>,
    /// Events written by the end.
    pub events_written: usize,
    /// Pods created.
    pub created: usize,
}

impl ModelReport {
    /// The `q`-quantile (nearest rank) of creation → bind.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.latencies.len() as f64).ceil() as usize).max(1);
        self.latencies[rank.min(self.latencies.len()) - 1]
    }
}

/// The API server: one FIFO of requests, `workers` served at once.
struct ModelApi {
    cores: Semaphore,
    service: Duration,
    round_trip: Duration,
}

impl ModelApi {
    async fn call(&self) {
        tokio::time::sleep(self.round_trip / 2).await;
        if let Ok(_core) = self.cores.acquire().await {
            tokio::time::sleep(self.service).await;
        }
        tokio::time::sleep(self.round_trip / 2).await;
    }
}

struct ModelActuator {
    api: Arc<ModelApi>,
    created: Arc<Mutex<std::collections::HashMap<String, Instant>>>,
    latencies: Arc<Mutex<Vec<Duration>>>,
}

impl Actuator for ModelActuator {
    fn bind(&self, binding: &Binding) -> BoxFuture<'static, BindOutcome> {
        let (api, created, latencies) = (
            self.api.clone(),
            self.created.clone(),
            self.latencies.clone(),
        );
        let name = binding.pod.name.clone();
        Box::pin(async move {
            api.call().await;
            let at = created.lock().map(|c| c.get(&name).copied()).ok().flatten();
            if let (Some(at), Ok(mut l)) = (at, latencies.lock()) {
                l.push(at.elapsed());
            }
            BindOutcome::Bound
        })
    }

    fn evict(&self, _e: &Eviction) -> BoxFuture<'static, EvictResult> {
        let api = self.api.clone();
        Box::pin(async move {
            api.call().await;
            EvictResult::Evicted
        })
    }

    fn nominate(&self, _n: &Nomination) -> BoxFuture<'static, Result<(), PreemptError>> {
        let api = self.api.clone();
        Box::pin(async move {
            api.call().await;
            Ok(())
        })
    }

    fn clear_nomination(&self, _p: &PodKey) -> BoxFuture<'static, Result<(), PreemptError>> {
        self.nominate(&Nomination {
            pod: PodKey::default(),
            node: String::new(),
        })
    }
}

fn model_node(i: usize) -> Option<Node> {
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i:03}")},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"}}
    }))
    .ok()
}

fn model_pod(i: usize) -> Option<Pod> {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i:05}"), "namespace": "default",
            "uid": format!("uid-{i:05}"), "labels": {"app": "posture"}},
        "spec": {"schedulerName": "rr-scheduler", "containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "10m"}}}]},
        "status": {"phase": "Pending"}
    }))
    .ok()
}

/// Runs the model once. Call inside a current-thread runtime with paused
/// time ([`run_model_blocking`] builds one).
pub async fn run_model(spec: &ModelSpec) -> ModelReport {
    let api = Arc::new(ModelApi {
        cores: Semaphore::new(spec.workers.max(1)),
        service: spec.service,
        round_trip: spec.round_trip,
    });
    let created = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let actuator = Arc::new(ModelActuator {
        api: api.clone(),
        created: created.clone(),
        latencies: latencies.clone(),
    });
    let metrics = Arc::new(SchedulerMetrics::default());
    let (reports, rx) = Reports::channel(metrics.clone());
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (api, written) = (api.clone(), written.clone());
        tokio::spawn(run_reports(rx, spec.event_concurrency, move |_report| {
            let (api, written) = (api.clone(), written.clone());
            async move {
                api.call().await;
                written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }))
    };
    let cfg = RuntimeConfig {
        bind_concurrency: spec.bind_concurrency,
        ..RuntimeConfig::default()
    };
    let sched = Scheduler::new(
        cfg,
        Box::new(RoundRobin::new(vec![])),
        actuator,
        reports,
        metrics,
    );
    let (ntx, nrx) = fmpsc::unbounded();
    let (ptx, prx) = fmpsc::unbounded();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sched.run(nrx.boxed(), vec![prx.boxed()], async move {
        let _ = stop_rx.await;
    }));
    let _ = ntx.unbounded_send(Ok(WatchEvent::Init));
    for i in 0..spec.nodes {
        if let Some(n) = model_node(i) {
            let _ = ntx.unbounded_send(Ok(WatchEvent::InitApply(n)));
        }
    }
    let _ = ntx.unbounded_send(Ok(WatchEvent::InitDone));
    let _ = ptx.unbounded_send(Ok(WatchEvent::Init));
    let _ = ptx.unbounded_send(Ok(WatchEvent::InitDone));
    let gap = Duration::from_secs_f64(1.0 / spec.rate.max(1e-3));
    let start = Instant::now();
    for i in 0..spec.pods {
        tokio::time::sleep_until(start + gap.mul_f64(i as f64)).await;
        let Some(pod) = model_pod(i) else { continue };
        if let Ok(mut c) = created.lock() {
            c.insert(format!("pod-{i:05}"), Instant::now());
        }
        let (ptx, delay) = (ptx.clone(), spec.watch_delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = ptx.unbounded_send(Ok(WatchEvent::Apply(pod)));
        });
    }
    // Let the tail drain: every bind and Event answered.
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let bound = latencies.lock().map(|l| l.len()).unwrap_or(0);
        if bound >= spec.pods && written.load(std::sync::atomic::Ordering::Relaxed) >= spec.pods {
            break;
        }
    }
    let _ = stop_tx.send(());
    let _ = task.await;
    writer.abort();
    let mut latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort_unstable();
    ModelReport {
        latencies,
        events_written: written.load(std::sync::atomic::Ordering::Relaxed),
        created: spec.pods,
    }
}

/// Builds a paused current-thread runtime and runs the model in it.
pub fn run_model_blocking(spec: &ModelSpec) -> std::io::Result<ModelReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    Ok(rt.block_on(run_model(spec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pod_is_bound_and_every_event_written() {
        let spec = ModelSpec {
            pods: 300,
            ..ModelSpec::default()
        };
        let r = run_model_blocking(&spec).unwrap();
        assert_eq!(r.latencies.len(), 300);
        assert_eq!(r.events_written, 300);
        assert!(r.quantile(0.5) <= r.quantile(0.99));
        assert!(r.quantile(0.5) >= spec.watch_delay + spec.service + spec.round_trip);
    }
}
