//! Two replicas of the round-robin scheduler in one process, on a shared
//! in-memory lease, a shared saved position and one shared binding API
//! (first bind wins, a second gets 409), with pods streaming in, on paused
//! time. The leader is cut off from the lease (it can still bind: only the
//! fence stops it), reconnected, and later its successor shuts down
//! gracefully.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc as fmpsc;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event as WatchEvent};
use posture_core::policy::RoundRobin;
use posture_core::{Binding, Eviction, Nomination, PodKey};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::actuator::{Actuator, EvictResult};
use super::binder::BindOutcome;
use super::events::{Report, Reports};
use super::fence::FencedActuator;
use super::handover::HandOver;
use super::handover::tests::MemoryPosition;
use super::metrics::SchedulerMetrics;
use super::preempt::PreemptError;
use super::{RuntimeConfig, Scheduler};
use crate::lease::memory::{MemoryLease, SharedLease};
use crate::lease::{LeaderElector, LeaderGate, LeaseConfig, LeaseMetrics, LeaseTimings};

type Tx<K> = fmpsc::UnboundedSender<Result<WatchEvent<K>, watcher::Error>>;

const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];
const PODS: usize = 170;
const ARRIVAL: Duration = Duration::from_millis(500);

fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}
        }
    }))
    .unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "creationTimestamp": "2026-11-23T10:00:00Z", "labels": {"app": "posture"}},
        "spec": {"schedulerName": "rr-scheduler", "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Pending"}
    }))
    .unwrap()
}

/// One bind request as the API server saw it.
#[derive(Clone, Debug)]
struct Request {
    who: &'static str,
    pod: String,
    node: String,
    at: Instant,
}

/// The binding API both replicas share: the first bind of a pod wins, a
/// later one answers 409; a bound pod leaves every replica's pending watch.
#[derive(Default)]
struct BindingApi {
    bound: Mutex<HashMap<String, String>>,
    requests: Mutex<Vec<Request>>,
    watchers: Mutex<Vec<Tx<Pod>>>,
}

impl BindingApi {
    fn broadcast(&self, event: impl Fn() -> WatchEvent<Pod>) {
        for w in self.watchers.lock().unwrap().iter() {
            let _ = w.unbounded_send(Ok(event()));
        }
    }
}

struct Hands {
    who: &'static str,
    api: Arc<BindingApi>,
}

impl Actuator for Hands {
    fn bind(&self, b: &Binding) -> BoxFuture<'static, BindOutcome> {
        let (api, who, b) = (self.api.clone(), self.who, b.clone());
        Box::pin(async move {
            api.requests.lock().unwrap().push(Request {
                who,
                pod: b.pod.name.clone(),
                node: b.node.clone(),
                at: Instant::now(),
            });
            let first = {
                let mut bound = api.bound.lock().unwrap();
                let first = !bound.contains_key(&b.pod.name);
                bound.entry(b.pod.name.clone()).or_insert(b.node.clone());
                first
            };
            if !first {
                return BindOutcome::AlreadyBound("pod already assigned".into());
            }
            api.broadcast(|| WatchEvent::Delete(pod(&b.pod.name)));
            BindOutcome::Bound
        })
    }

    fn evict(&self, _: &Eviction) -> BoxFuture<'static, EvictResult> {
        Box::pin(async { EvictResult::Gone })
    }

    fn nominate(&self, _: &Nomination) -> BoxFuture<'static, Result<(), PreemptError>> {
        Box::pin(async { Ok(()) })
    }

    fn clear_nomination(&self, _: &PodKey) -> BoxFuture<'static, Result<(), PreemptError>> {
        Box::pin(async { Ok(()) })
    }
}

struct Replica {
    gate: LeaderGate,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    elector_stop: oneshot::Sender<()>,
    elector: tokio::task::JoinHandle<LeaderElector<MemoryLease>>,
    _reports: tokio::sync::mpsc::Receiver<Report>,
}

fn start(
    who: &'static str,
    lease: &SharedLease,
    position: &MemoryPosition,
    api: &Arc<BindingApi>,
) -> Replica {
    let (elector, gate) = LeaderElector::new(
        lease.store(who),
        LeaseConfig {
            identity: who.into(),
            timings: LeaseTimings::KUBE_SCHEDULER,
            component: "scheduler",
        },
        LeaseMetrics::default(),
    );
    let (elector_stop, rx) = oneshot::channel::<()>();
    let elector = tokio::spawn(elector.run(async move {
        let _ = rx.await;
    }));
    let (ntx, nrx) = fmpsc::unbounded();
    let (ptx, prx) = fmpsc::unbounded();
    let _ = ntx.unbounded_send(Ok(WatchEvent::Init));
    for n in NODES {
        let _ = ntx.unbounded_send(Ok(WatchEvent::InitApply(node(n))));
    }
    let _ = ntx.unbounded_send(Ok(WatchEvent::InitDone));
    let _ = ptx.unbounded_send(Ok(WatchEvent::Init));
    let _ = ptx.unbounded_send(Ok(WatchEvent::InitDone));
    api.watchers.lock().unwrap().push(ptx);
    let metrics = Arc::new(SchedulerMetrics::default());
    let (reports, report_rx) = Reports::channel(metrics.clone());
    let profile = HandOver::start(RoundRobin::new(vec![]), position.clone(), gate.clone());
    let hands = Arc::new(Hands {
        who,
        api: api.clone(),
    });
    let actuator = Arc::new(FencedActuator::new(hands, gate.clone()));
    let scheduler = Scheduler::new(
        RuntimeConfig::default(),
        Box::new(profile),
        actuator,
        reports,
        metrics,
    )
    .with_leadership(gate.clone());
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(scheduler.run(nrx.boxed(), vec![prx.boxed()], async move {
        let _ = rx.await;
    }));
    Replica {
        gate,
        stop,
        task,
        elector_stop,
        elector,
        _reports: report_rx,
    }
}

/// When `who` last wrote the lease before `before`.
fn last_write(lease: &SharedLease, who: &str, before: Instant) -> Instant {
    lease
        .writes()
        .iter()
        .filter(|(w, _, at)| w == who && *at < before)
        .map(|(_, _, at)| *at)
        .max()
        .unwrap()
}

/// When `who` first wrote the lease at or after `after`.
fn first_write(lease: &SharedLease, who: &str, after: Instant) -> Instant {
    lease
        .writes()
        .iter()
        .filter(|(w, _, at)| w == who && *at >= after)
        .map(|(_, _, at)| *at)
        .min()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn two_replicas_never_both_bind_and_take_over_in_order() {
    let t0 = Instant::now();
    let lease = SharedLease::default();
    let position = MemoryPosition::default();
    let api = Arc::new(BindingApi::default());
    let a = start("sched-a", &lease, &position, &api);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(a.gate.acting(), "the first replica takes the free lease");
    let b = start("sched-b", &lease, &position, &api);

    let feeder = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..PODS {
                api.broadcast(|| WatchEvent::Apply(pod(&format!("p{i:03}"))));
                tokio::time::sleep(ARRIVAL).await;
            }
        })
    };

    // 1. The leader is cut off from the lease (binds would still work).
    tokio::time::sleep_until(t0 + Duration::from_millis(20_500)).await;
    lease.partition("sched-a", true);
    tokio::time::sleep_until(t0 + Duration::from_secs(45)).await;
    assert!(!a.gate.acting() && b.gate.acting());
    lease.partition("sched-a", false);

    // 2. The successor shuts down gracefully and hands the lease over.
    tokio::time::sleep_until(t0 + Duration::from_secs(61)).await;
    let _ = b.stop.send(());
    b.task.await.unwrap();
    let _ = b.elector_stop.send(());
    let mut elector_b = b.elector.await.unwrap();
    let released = Instant::now();
    elector_b.release().await;
    feeder.await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(a.gate.acting());

    // Every pod bound exactly once; nobody ever got a 409.
    let requests = api.requests.lock().unwrap().clone();
    assert_eq!(api.bound.lock().unwrap().len(), PODS);
    assert_eq!(requests.len(), PODS, "one bind request per pod");
    let pods: std::collections::BTreeSet<&str> = requests.iter().map(|r| r.pod.as_str()).collect();
    assert_eq!(pods.len(), PODS);
    assert_eq!(
        lease.record().and_then(|r| r.holder),
        Some("sched-a".into())
    );

    // Never both: the binders take turns A, B, A, with the fences between.
    let mut turns: Vec<&str> = requests.iter().map(|r| r.who).collect();
    turns.dedup();
    assert_eq!(turns, ["sched-a", "sched-b", "sched-a"]);
    let cut = t0 + Duration::from_millis(20_500);
    let a_renewed = last_write(&lease, "sched-a", cut);
    let a_last_bind = requests
        .iter()
        .filter(|r| r.who == "sched-a" && r.at < cut + Duration::from_secs(30))
        .map(|r| r.at)
        .max()
        .unwrap();
    assert!(
        a_last_bind < a_renewed + Duration::from_secs(10),
        "the cut-off leader stopped at its renew deadline"
    );
    // The follower took over within lease duration + retry period of the
    // last renewal it saw, and acted within a second of winning.
    let b_acquired = first_write(&lease, "sched-b", cut);
    let b_first_bind = requests.iter().find(|r| r.who == "sched-b").unwrap().at;
    assert!(
        b_acquired - a_renewed <= Duration::from_secs(17),
        "{:?}",
        b_acquired - a_renewed
    );
    assert!(b_first_bind - b_acquired < Duration::from_secs(1));
    // A released lease is taken at the next attempt, not after expiry.
    let a_again = first_write(&lease, "sched-a", released);
    assert!(
        a_again - released <= Duration::from_secs(2),
        "{:?}",
        a_again - released
    );

    // The order continued across both take-overs, as if one scheduler had
    // run all along: n1, n2, n3, n4, n1, … so the counts stay within one.
    let order: Vec<&str> = requests.iter().map(|r| r.node.as_str()).collect();
    let expected: Vec<&str> = (0..PODS).map(|i| NODES[i % NODES.len()]).collect();
    assert_eq!(order, expected);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in order {
        *counts.entry(n).or_default() += 1;
    }
    let (min, max) = (counts.values().min(), counts.values().max());
    assert!(
        max.zip(min).is_some_and(|(max, min)| max - min <= 1),
        "{counts:?}"
    );
    let _ = a.stop.send(());
    a.task.await.unwrap();
}

#[tokio::test]
async fn the_fence_refuses_every_call_of_a_follower() {
    let api = Arc::new(BindingApi::default());
    let hands = Arc::new(Hands {
        who: "sched-a",
        api: api.clone(),
    });
    let (tx, rx) = tokio::sync::watch::channel(crate::lease::Leadership {
        mandate: crate::lease::Mandate::Follower,
        ..crate::lease::Leadership::unelected()
    });
    let fenced = FencedActuator::new(hands, LeaderGate::new(rx));
    let key = posture_core::PodKey::new("default", "p");
    let binding = Binding {
        pod: key.clone(),
        uid: "uid-p".into(),
        node: "n1".into(),
    };
    let BindOutcome::Failed(err) = fenced.bind(&binding).await else {
        panic!("a follower's bind must not go out")
    };
    assert!(posture_core::error_chain(&err).contains("no longer holds the leader lease"));
    let eviction = Eviction {
        pod: key.clone(),
        uid: "uid-p".into(),
        node: "n1".into(),
        preemptor: key.clone(),
    };
    assert!(matches!(
        fenced.evict(&eviction).await,
        EvictResult::Failed(_)
    ));
    let nomination = Nomination {
        pod: key,
        node: "n1".into(),
    };
    assert!(fenced.nominate(&nomination).await.is_err());
    let pod = posture_core::PodKey::new("default", "p");
    assert!(fenced.clear_nomination(&pod).await.is_err());
    assert!(api.requests.lock().unwrap().is_empty());
    // Past the fence instant counts as not leading, without any new value.
    tx.send_replace(crate::lease::Leadership {
        mandate: crate::lease::Mandate::Until(Instant::now()),
        ..crate::lease::Leadership::unelected()
    });
    assert!(matches!(
        fenced.bind(&binding).await,
        BindOutcome::Failed(_)
    ));
    tx.send_replace(crate::lease::Leadership::unelected());
    assert!(matches!(fenced.bind(&binding).await, BindOutcome::Bound));
    assert_eq!(api.requests.lock().unwrap().len(), 1);
}
