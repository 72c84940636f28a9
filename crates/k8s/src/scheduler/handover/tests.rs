use std::sync::{Arc, Mutex};

use posture_core::model::{NodeInfo, PodKey, Resources};
use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::lease::{Leadership, Mandate};
use crate::scheduler::gpu_state::DEFAULT_CONFIGMAP;
use crate::test_support::{ApiMock, status_json};

/// The saved position, shared by the candidates of a test; counts calls.
#[derive(Clone, Default)]
pub(crate) struct MemoryPosition {
    pub(crate) node: Arc<Mutex<Option<String>>>,
    pub(crate) loads: Arc<Mutex<usize>>,
    pub(crate) saves: Arc<Mutex<Vec<Option<String>>>>,
}

impl PositionStore for MemoryPosition {
    fn load(&mut self) -> BoxFuture<'_, Result<Option<String>, StateError>> {
        *self.loads.lock().unwrap() += 1;
        let node = self.node.lock().unwrap().clone();
        Box::pin(async move { Ok(node) })
    }

    fn save<'a>(&'a mut self, node: Option<&'a str>) -> BoxFuture<'a, Result<(), StateError>> {
        let node = node.map(str::to_string);
        self.saves.lock().unwrap().push(node.clone());
        *self.node.lock().unwrap() = node;
        Box::pin(async { Ok(()) })
    }
}

fn cluster_of(names: &[&str]) -> Cluster {
    let mut c = Cluster::new();
    for n in names {
        c.upsert_node(NodeInfo {
            name: (*n).into(),
            ready: true,
            allocatable: Resources {
                pods: 10,
                ..Default::default()
            },
            ..Default::default()
        });
    }
    c
}

fn pending(name: &str) -> PodInfo {
    PodInfo {
        key: PodKey::new("default", name),
        ours: true,
        ..Default::default()
    }
}

fn ctx(now: Millis) -> SchedulingContext<'static> {
    SchedulingContext { now, gpu: None }
}

fn bound_to(d: Decision) -> String {
    match d {
        Decision::Bind(b) => b[0].node.clone(),
        other => panic!("expected a bind, got {other:?}"),
    }
}

fn leader(term: u64) -> Leadership {
    Leadership {
        mandate: Mandate::Until(Instant::now() + std::time::Duration::from_secs(3600)),
        identity: "me".into(),
        holder: Some("me".into()),
        term,
        transitions: 0,
    }
}

fn follower(term: u64) -> Leadership {
    Leadership {
        mandate: Mandate::Follower,
        holder: Some("other".into()),
        ..leader(term)
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn each_term_resumes_after_the_saved_node_and_saves_only_while_leading() {
    let c = cluster_of(&["a", "b", "c"]);
    let store = MemoryPosition::default();
    *store.node.lock().unwrap() = Some("a".into());
    let (tx, rx) = watch::channel(follower(0));
    let mut p = HandOver::start(RoundRobin::new(vec![]), store.clone(), LeaderGate::new(rx));
    settle().await;
    assert_eq!(*store.loads.lock().unwrap(), 0, "a follower reads nothing");

    // Term 1 starts: the first decision waits until the position is read.
    tx.send(leader(1)).unwrap();
    let early = p.schedule(&c, &[&pending("p0")], &ctx(1_000));
    assert!(
        matches!(
            early,
            Decision::Wait {
                retry_at: 1_100,
                ..
            }
        ),
        "{early:?}"
    );
    settle().await;
    assert_eq!(*store.loads.lock().unwrap(), 1);
    assert_eq!(
        bound_to(p.schedule(&c, &[&pending("p1")], &ctx(1_100))),
        "b"
    );
    settle().await;
    assert_eq!(
        bound_to(p.schedule(&c, &[&pending("p2")], &ctx(1_200))),
        "c"
    );
    settle().await;
    assert_eq!(store.node.lock().unwrap().as_deref(), Some("c"));

    // Another replica leads and moves the order on. A decision racing our
    // loss of the lease is not saved.
    tx.send(follower(1)).unwrap();
    settle().await;
    *store.node.lock().unwrap() = Some("b".into());
    let saves = store.saves.lock().unwrap().len();
    assert_eq!(
        bound_to(p.schedule(&c, &[&pending("late")], &ctx(1_300))),
        "a"
    );
    settle().await;
    assert_eq!(
        store.saves.lock().unwrap().len(),
        saves,
        "a follower writes nothing"
    );

    // Term 2: we continue after the other leader's last node, not ours.
    tx.send(leader(2)).unwrap();
    settle().await;
    assert_eq!(*store.loads.lock().unwrap(), 2);
    assert_eq!(
        bound_to(p.schedule(&c, &[&pending("p3")], &ctx(2_000))),
        "c"
    );
}

#[tokio::test]
async fn unelected_reads_the_configmap_once_and_writes_each_new_position() {
    let (client, mut mock) = ApiMock::new();
    let path = "/api/v1/namespaces/kube-system/configmaps/posture-farm-rr-state";
    let server = tokio::spawn(async move {
        mock.expect_get(path).await.respond(
            200,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "posture-farm-rr-state", "namespace": "kube-system"},
                   "data": {"lastChosenNode": "b"}}),
        );
        for node in ["c", "a"] {
            let r = mock.expect_patch(path).await;
            assert_eq!(r.content_type, "application/apply-patch+yaml");
            assert_eq!(r.body["data"]["lastChosenNode"], node);
            let body = r.body.clone();
            r.respond(200, body);
        }
        mock
    });
    let store = GpuStateStore::new(client, "kube-system", DEFAULT_RR_CONFIGMAP);
    let mut p = HandOver::start(RoundRobin::new(vec![]), store, LeaderGate::unelected());
    let c = cluster_of(&["a", "b", "c"]);
    let mut decided = p.schedule(&c, &[&pending("p0")], &ctx(0));
    while matches!(decided, Decision::Wait { .. }) {
        tokio::task::yield_now().await;
        decided = p.schedule(&c, &[&pending("p0")], &ctx(0));
    }
    assert_eq!(bound_to(decided), "c", "continues after the saved b");
    // Wait for the first write before deciding again (newest value only).
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(bound_to(p.schedule(&c, &[&pending("p1")], &ctx(1))), "a");
    let mut mock = server.await.unwrap();
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), mock.next())
            .await
            .is_err(),
        "nothing else is written"
    );
    drop(p);
}

#[tokio::test]
async fn an_unreadable_position_starts_the_order_afresh() {
    let (client, mut mock) = ApiMock::new();
    let server = tokio::spawn(async move {
        mock.expect_get(&format!(
            "/api/v1/namespaces/kube-system/configmaps/{DEFAULT_CONFIGMAP}"
        ))
        .await
        .respond(
            403,
            status_json(403, "Forbidden", "configmaps is forbidden"),
        );
        mock
    });
    let store = GpuStateStore::new(client, "kube-system", DEFAULT_CONFIGMAP);
    let mut p = HandOver::start(RoundRobin::new(vec![]), store, LeaderGate::unelected());
    let _mock = server.await.unwrap();
    tokio::task::yield_now().await;
    let c = cluster_of(&["a", "b"]);
    let mut decided = p.schedule(&c, &[&pending("p0")], &ctx(0));
    while matches!(decided, Decision::Wait { .. }) {
        tokio::task::yield_now().await;
        decided = p.schedule(&c, &[&pending("p0")], &ctx(0));
    }
    assert_eq!(bound_to(decided), "a");
    assert_eq!(p.name(), "round-robin");
    assert_eq!(p.inner().last_handed_out(), Some("a"));
}

/// The GPU profile through the hand-over (what `PersistLastChosen` did
/// before): the remembered node is restored, a bind to another node is
/// written once, a repeat writes nothing.
#[tokio::test]
async fn the_gpu_profile_restores_and_persists_its_last_chosen_node() {
    use posture_core::gpu::GpuSnapshot;
    use posture_core::policy::gpu_least_loaded::{GpuLeastLoaded, GpuLeastLoadedConfig};

    let (client, mut mock) = ApiMock::new();
    let path = format!("/api/v1/namespaces/posture-farm/configmaps/{DEFAULT_CONFIGMAP}");
    let server = {
        let path = path.clone();
        tokio::spawn(async move {
            mock.expect_get(&path).await.respond(
                200,
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": DEFAULT_CONFIGMAP, "namespace": "posture-farm"},
                       "data": {"lastChosenNode": "orin"}}),
            );
            let r = mock.expect_patch(&path).await;
            assert_eq!(r.content_type, "application/apply-patch+yaml");
            assert_eq!(r.body["data"], json!({"lastChosenNode": "agx"}));
            let body = r.body.clone();
            r.respond(200, body);
            mock
        })
    };
    let store = GpuStateStore::new(client, "posture-farm", DEFAULT_CONFIGMAP);
    let gpu = GpuLeastLoaded::new(GpuLeastLoadedConfig::default());
    let mut p = HandOver::start(gpu, store, LeaderGate::unelected());
    assert_eq!(p.name(), "gpu-least-loaded");
    let c = cluster_of(&["agx", "orin"]);
    let snap = GpuSnapshot::from_fresh(0, &[("agx", 10.0), ("orin", 40.0)]);
    let ctx = SchedulingContext {
        now: 1,
        gpu: Some(&snap),
    };
    let mut decided = p.schedule(&c, &[&pending("a")], &ctx);
    while matches!(decided, Decision::Wait { .. }) {
        tokio::task::yield_now().await;
        decided = p.schedule(&c, &[&pending("a")], &ctx);
    }
    let Decision::Bind(b) = decided else {
        panic!("expected a bind")
    };
    assert_eq!(b[0].node, "agx", "the idlest node");
    p.bound(&b[0], 2);
    let mut mock = server.await.unwrap();
    p.bound(&b[0], 3);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), mock.next())
            .await
            .is_err(),
        "the same node again writes nothing"
    );
}

/// A profile whose configuration is wrong for the cluster and which always
/// gains from new GPU data, to see both through the wrapper.
struct Misconfigured {
    last: Option<String>,
}

impl Profile for Misconfigured {
    fn name(&self) -> &'static str {
        "misconfigured"
    }
    fn schedule(&mut self, _: &Cluster, _: &[&PodInfo], ctx: &SchedulingContext<'_>) -> Decision {
        Decision::Wait {
            retry_at: ctx.now,
            message: "never".into(),
        }
    }
    fn gpu_may_fit_more(&self, _: Option<&GpuSnapshot>, _: &GpuSnapshot) -> bool {
        true
    }
    fn config_warnings(&self, _cluster: &Cluster) -> Vec<String> {
        vec!["node order names node ghost, which does not exist".into()]
    }
}

impl RemembersLastChosen for Misconfigured {
    fn last_chosen(&self) -> Option<&str> {
        self.last.as_deref()
    }
    fn restore_last_chosen(&mut self, node: Option<String>) {
        self.last = node;
    }
}

#[tokio::test]
async fn the_wrapper_forwards_warnings_and_gpu_interest() {
    let p = HandOver::start(
        Misconfigured { last: None },
        MemoryPosition::default(),
        LeaderGate::unelected(),
    );
    assert_eq!(
        p.config_warnings(&Cluster::new()),
        ["node order names node ghost, which does not exist"]
    );
    let snap = GpuSnapshot::from_fresh(0, &[("agx", 10.0)]);
    assert!(p.gpu_may_fit_more(None, &snap));
    assert!(!p.gang_aware());
}
