//! The demo against recorded exchanges: the exact API calls of every step
//! and the narration of the Events the scheduler would write.

use futures::channel::mpsc;
use serde_json::{Value, json};

use super::*;
use crate::test_support::{ApiMock, Recorded, status_json};

const NS: &str = "default";
const PODS: &str = "/api/v1/namespaces/default/pods";
const CLASSES: &str = "/apis/scheduling.k8s.io/v1/priorityclasses";

fn cfg() -> DemoConfig {
    DemoConfig {
        namespace: NS.into(),
        scheduler_name: "posture-priority".into(),
        image: "registry.k8s.io/pause:3.10".into(),
        nodes: 2,
        step_timeout: Duration::from_secs(5),
    }
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn ev(uid: &str, reason: &str, note: &str) -> Observed {
    Observed {
        uid: uid.into(),
        reason: reason.into(),
        type_: "Normal".into(),
        note: note.into(),
    }
}

/// Answers a pod create with a UID; returns the pod's name.
fn created(req: Recorded, uid: &str) -> String {
    let mut body = req.body.clone();
    body["metadata"]["uid"] = json!(uid);
    let name = body["metadata"]["name"].as_str().unwrap().to_owned();
    req.respond(201, body);
    name
}

async fn expect_empty_cleanup(api: &mut ApiMock) {
    let req = api.expect_get(PODS).await;
    assert!(
        req.query
            .contains("labelSelector=posture-farm.io%2Fdemo%3Dpreemption"),
        "{}",
        req.query
    );
    req.respond(200, list("PodList", "v1", vec![]));
    api.expect_get(CLASSES).await.respond(
        200,
        list("PriorityClassList", "scheduling.k8s.io/v1", vec![]),
    );
}

#[tokio::test]
async fn the_whole_story_with_its_exact_calls_and_narration() {
    let (client, mut api) = ApiMock::new();
    let (tx, rx) = mpsc::unbounded::<Observed>();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let task = tokio::spawn(async move {
        run_preemption(
            client,
            cfg(),
            rx,
            move |l: &str| sink.lock().unwrap().push(l.to_owned()),
            std::future::pending(),
        )
        .await
    });

    expect_empty_cleanup(&mut api).await;
    // PriorityClasses: low 10, gang 50, high 100; one left from before (409).
    for (name, value) in [
        ("posture-farm-demo-low", 10),
        ("posture-farm-demo-gang", 50),
        ("posture-farm-demo-high", 100),
    ] {
        let req = api.expect_post(CLASSES).await;
        assert_eq!(req.body["metadata"]["name"], name);
        assert_eq!(req.body["value"], value);
        assert_eq!(req.body["globalDefault"], false);
        assert_eq!(
            req.body["metadata"]["labels"]["posture-farm.io/demo"],
            "preemption"
        );
        if value == 50 {
            req.respond(409, status_json(409, "AlreadyExists", "exists"));
        } else {
            let b = req.body.clone();
            req.respond(201, b);
        }
    }

    // Step 1: two low pods.
    for (i, uid) in [(1, "u-l1"), (2, "u-l2")] {
        let req = api.expect_post(PODS).await;
        let b = &req.body;
        assert_eq!(b["metadata"]["name"], format!("posture-demo-low-{i}"));
        assert_eq!(b["spec"]["schedulerName"], "posture-priority");
        assert_eq!(b["spec"]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            b["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(b["spec"]["priorityClassName"], "posture-farm-demo-low");
        assert!(
            b["spec"].get("priority").is_none(),
            "admission sets it from the class"
        );
        assert!(
            b["metadata"].get("annotations").is_none(),
            "no priority annotation"
        );
        assert_eq!(b["spec"]["terminationGracePeriodSeconds"], 0);
        created(req, uid);
    }
    tx.unbounded_send(ev(
        "u-l1",
        "Scheduled",
        "Successfully assigned default/posture-demo-low-1 to w1",
    ))
    .unwrap();
    tx.unbounded_send(ev(
        "someone-else",
        "Scheduled",
        "Successfully assigned default/x to w1",
    ))
    .unwrap();
    tx.unbounded_send(ev(
        "u-l2",
        "Scheduled",
        "Successfully assigned default/posture-demo-low-2 to w2",
    ))
    .unwrap();

    // Step 2: the high pod.
    let req = api.expect_post(PODS).await;
    assert_eq!(
        req.body["spec"]["priorityClassName"],
        "posture-farm-demo-high"
    );
    assert_eq!(created(req, "u-h"), "posture-demo-high");
    tx.unbounded_send(ev(
        "u-l2",
        "Preempted",
        "Preempted by pod default/posture-demo-high on node w2",
    ))
    .unwrap();
    tx.unbounded_send(ev(
        "u-h",
        "Scheduled",
        "Successfully assigned default/posture-demo-high to w2",
    ))
    .unwrap();

    // Step 3: a gang of two.
    for (i, uid) in [(1, "u-g1"), (2, "u-g2")] {
        let req = api.expect_post(PODS).await;
        let b = &req.body;
        assert_eq!(b["metadata"]["name"], format!("posture-demo-gang-{i}"));
        assert_eq!(b["spec"]["priorityClassName"], "posture-farm-demo-gang");
        assert_eq!(
            b["metadata"]["annotations"]["pod-group"],
            "posture-demo-gang"
        );
        assert_eq!(b["metadata"]["annotations"]["pod-group-min-member"], "2");
        created(req, uid);
    }
    tx.unbounded_send(Observed {
        type_: "Warning".into(),
        ..ev("u-g1", "FailedScheduling", "pod group default/posture-demo-gang: no complete placement (1/2 members placed, none bound)")
    })
    .unwrap();

    // Step 4: the high pod leaves; the gang preempts the low one and binds.
    let req = api
        .expect_delete(&format!("{PODS}/posture-demo-high"))
        .await;
    assert_eq!(req.body["gracePeriodSeconds"], 0);
    req.respond(
        200,
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "posture-demo-high"}}),
    );
    tx.unbounded_send(ev(
        "u-l1",
        "Preempted",
        "Preempted by pod default/posture-demo-gang-1 on node w1",
    ))
    .unwrap();
    tx.unbounded_send(ev(
        "u-g1",
        "Scheduled",
        "Successfully assigned default/posture-demo-gang-1 to w1",
    ))
    .unwrap();
    tx.unbounded_send(ev(
        "u-g2",
        "Scheduled",
        "Successfully assigned default/posture-demo-gang-2 to w2",
    ))
    .unwrap();

    // Cleanup: everything labelled as the demo's.
    let req = api.expect_get(PODS).await;
    assert!(
        req.query
            .contains("labelSelector=posture-farm.io%2Fdemo%3Dpreemption")
    );
    let left: Vec<Value> = ["posture-demo-gang-1", "posture-demo-gang-2"]
        .iter()
        .map(|n| json!({"metadata": {"name": n, "namespace": NS}}))
        .collect();
    req.respond(200, list("PodList", "v1", left));
    for n in ["posture-demo-gang-1", "posture-demo-gang-2"] {
        let req = api.expect_delete(&format!("{PODS}/{n}")).await;
        assert_eq!(req.body["gracePeriodSeconds"], 0);
        req.respond(404, status_json(404, "NotFound", "gone"));
    }
    let classes: Vec<Value> = [
        "posture-farm-demo-low",
        "posture-farm-demo-gang",
        "posture-farm-demo-high",
    ]
    .iter()
    .map(|n| json!({"metadata": {"name": n}, "value": 1}))
    .collect();
    api.expect_get(CLASSES).await.respond(
        200,
        list("PriorityClassList", "scheduling.k8s.io/v1", classes),
    );
    for n in [
        "posture-farm-demo-low",
        "posture-farm-demo-gang",
        "posture-farm-demo-high",
    ] {
        let req = api.expect_delete(&format!("{CLASSES}/{n}")).await;
        req.respond(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        );
    }

    let summary = task.await.unwrap().unwrap();
    assert!(summary.contains("posture-demo-gang-1"), "{summary}");
    let lines = lines.lock().unwrap().clone();
    let expected = [
        "Step 1/4: 2 low-priority analyzers (priority 10) fill the 2 usable nodes",
        "  scheduled  posture-demo-low-1 (low priority 10) -> node w1",
        "  scheduled  posture-demo-low-2 (low priority 10) -> node w2",
        "Step 2/4: one high-priority analyzer (priority 100) arrives; no node is free",
        "  preempted  posture-demo-low-2 (low priority 10): Preempted by pod default/posture-demo-high on node w2",
        "  scheduled  posture-demo-high (high priority 100) -> node w2",
        "Step 3/4: a gang of 2 (priority 50) needs every node, but one runs a higher-priority pod",
        "  waiting    posture-demo-gang-1 (gang priority 50): pod group default/posture-demo-gang: no complete placement (1/2 members placed, none bound)",
        "Step 4/4: the high-priority analyzer leaves; the gang can be placed whole",
        "  deleted    posture-demo-high",
        "  preempted  posture-demo-low-1 (low priority 10): Preempted by pod default/posture-demo-gang-1 on node w1",
        "  scheduled  posture-demo-gang-1 (gang priority 50) -> node w1",
        "  scheduled  posture-demo-gang-2 (gang priority 50) -> node w2",
        "Cleaned up: 2 pod(s), 3 PriorityClass(es).",
    ];
    assert_eq!(&lines[..expected.len()], &expected[..]);
    assert!(lines[expected.len()].starts_with("Where the demo's pods ended up:"));
}

/// Ctrl-C in the middle of step 1: the demo stops and still cleans up.
#[tokio::test]
async fn ctrl_c_cleans_up() {
    let (client, mut api) = ApiMock::new();
    let (_tx, rx) = mpsc::unbounded::<Observed>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run_preemption(client, cfg(), rx, |_: &str| {}, async {
            let _ = stop_rx.await;
        })
        .await
    });
    expect_empty_cleanup(&mut api).await;
    for _ in 0..3 {
        let req = api.expect_post(CLASSES).await;
        let b = req.body.clone();
        req.respond(201, b);
    }
    created(api.expect_post(PODS).await, "u1");
    created(api.expect_post(PODS).await, "u2");
    stop_tx.send(()).unwrap();
    let req = api.expect_get(PODS).await;
    req.respond(
        200,
        list(
            "PodList",
            "v1",
            vec![json!({"metadata": {"name": "posture-demo-low-1", "namespace": NS}})],
        ),
    );
    api.expect_delete(&format!("{PODS}/posture-demo-low-1"))
        .await
        .respond(
            200,
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "posture-demo-low-1"}}),
        );
    api.expect_get(CLASSES).await.respond(
        200,
        list("PriorityClassList", "scheduling.k8s.io/v1", vec![]),
    );
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, DemoError::Interrupted), "{err}");
}

/// A step whose Events never come times out, names what is missing, and
/// cleans up.
#[tokio::test(start_paused = true)]
async fn a_silent_scheduler_times_out_with_what_is_missing() {
    let (client, mut api) = ApiMock::new();
    let (_tx, rx) = mpsc::unbounded::<Observed>();
    let task = tokio::spawn(async move {
        run_preemption(client, cfg(), rx, |_: &str| {}, std::future::pending()).await
    });
    expect_empty_cleanup(&mut api).await;
    for _ in 0..3 {
        let req = api.expect_post(CLASSES).await;
        let b = req.body.clone();
        req.respond(201, b);
    }
    created(api.expect_post(PODS).await, "u1");
    created(api.expect_post(PODS).await, "u2");
    expect_empty_cleanup(&mut api).await;
    let err = task.await.unwrap().unwrap_err();
    match err {
        DemoError::Timeout { step, missing, .. } => {
            assert_eq!(step, Step::FillLow);
            assert_eq!(
                missing,
                vec![
                    "posture-demo-low-1".to_owned(),
                    "posture-demo-low-2".to_owned()
                ]
            );
        }
        other => panic!("{other}"),
    }
}

#[test]
fn usable_nodes_skip_tainted_cordoned_and_not_ready() {
    let node = |name: &str, extra: Value| -> Node {
        let mut n = json!({"metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                n[k] = v;
            }
        }
        serde_json::from_value(n).unwrap()
    };
    let nodes = [
        node("w2", json!({})),
        node(
            "master",
            json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}),
        ),
        node(
            "w1",
            json!({"spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}}),
        ),
        node("cordoned", json!({"spec": {"unschedulable": true}})),
        node(
            "down",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        ),
    ];
    assert_eq!(
        script::usable_nodes(&nodes),
        vec!["w1".to_owned(), "w2".to_owned()]
    );
}

#[test]
fn the_farm_s_own_pods_hold_their_nodes() {
    let p = |name: &str, node: Option<&str>, sched: &str, extra: Value| -> Pod {
        let mut v = json!({"metadata": {"name": name, "namespace": NS},
            "spec": {"schedulerName": sched, "containers": []}, "status": {"phase": "Running"}});
        if let Some(n) = node {
            v["spec"]["nodeName"] = json!(n);
        }
        if let Value::Object(m) = extra {
            for (k, x) in m {
                v["metadata"][k] = x;
            }
        }
        serde_json::from_value(v).unwrap()
    };
    let pods = [
        p("posture-pi1", Some("w1"), "posture-priority", json!({})),
        p("posture-pi2", None, "posture-priority", json!({})),
        p("other", Some("w2"), "default-scheduler", json!({})),
        p(
            "posture-demo-low-1",
            Some("w3"),
            "posture-priority",
            json!({"labels": {DEMO_LABEL: DEMO_VALUE}}),
        ),
        p(
            "leaving",
            Some("w2"),
            "posture-priority",
            json!({"deletionTimestamp": "2026-11-23T14:00:00Z"}),
        ),
    ];
    let usable = ["w1", "w2", "w3"].map(String::from);
    let plan = script::plan_nodes(&usable, &pods, "posture-priority");
    assert_eq!(plan.free, vec!["w2".to_owned(), "w3".to_owned()]);
    assert_eq!(plan.held, vec![("w1".to_owned(), "posture-pi1".to_owned())]);
    assert_eq!(plan.competing, vec!["posture-pi2".to_owned()]);
}
