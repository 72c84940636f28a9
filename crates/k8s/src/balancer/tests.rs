//! Recorded-exchange tests of discovery, moves and the loop.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use posture_core::balance::{BalanceParams, Move, WorkloadKey, WorkloadKind};
use serde_json::{Value, json};

use super::*;
use crate::test_support::{ApiMock, status_json};
use crate::workload::GPU_NODE_LABEL;

const NS: &str = "posture";
const AT: &str = "2026-11-23T14:00:00Z";

fn at() -> Timestamp {
    AT.parse().unwrap()
}

fn mv(kind: WorkloadKind, name: &str) -> Move {
    Move {
        workload: WorkloadKey::new(kind, NS, name),
        from: "agx".into(),
        to: "orin".into(),
        load: 30.0,
        estimate: posture_core::balance::Estimate::AboveIdle,
        from_usage: 80.0,
        to_usage_before: 20.0,
        to_usage_after: 50.0,
    }
}

fn scaledjob_json(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": NS, "uid": format!("sj-{name}"), "resourceVersion": "7",
                     "annotations": annotations},
        "spec": {"jobTargetRef": {"template": {"spec": {"containers": [{"name": "analyzer", "image": "x"}]}}}}
    })
}

fn job_json(name: &str, uid: &str, labels: Value, active: bool) -> Value {
    let status = if active {
        json!({"active": 1, "startTime": "2026-11-23T13:00:00Z"})
    } else {
        json!({"succeeded": 1, "completionTime": "2026-11-23T13:10:00Z",
               "conditions": [{"type": "Complete", "status": "True"}]})
    };
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "uid": uid, "resourceVersion": "11",
                     "creationTimestamp": "2026-11-23T13:00:00Z", "labels": labels,
                     "managedFields": [{"manager": "kube-controller-manager"}]},
        "spec": {
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "posture-analyzer",
                                        "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                                        "batch.kubernetes.io/job-name": name, "job-name": name}},
                "spec": {"containers": [{"name": "analyzer", "image": "x",
                                         "args": ["analyze", "--topic", "images/pi1"]}],
                         "restartPolicy": "Never",
                         "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                             "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu-node", "operator": "In", "values": ["agx"]}]}]}}}}
            }
        },
        "status": status
    })
}

fn pod_json(name: &str, node: &str, labels: Value, owner_job: &str, terminating: bool) -> Value {
    let mut meta = json!({"name": name, "namespace": NS, "uid": format!("pod-{name}"), "labels": labels,
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": owner_job, "uid": "j", "controller": true}]});
    if terminating {
        meta["deletionTimestamp"] = json!("2026-11-23T13:59:00Z");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": {"nodeName": node, "containers": [{"name": "analyzer", "image": "x"}]},
           "status": {"phase": "Running"}})
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "100"}, "items": items})
}

fn affinity_to(node: &str) -> Value {
    json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "gpu-node", "operator": "In", "values": [node]}]}]}})
}

/// Checks the Event the balancer writes for a move.
fn assert_event(req: &crate::test_support::Recorded, kind: &str, name: &str) {
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.path,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
    );
    let b = &req.body;
    assert_eq!(b["regarding"]["kind"], kind);
    assert_eq!(b["regarding"]["name"], name);
    assert_eq!(b["reason"], "Rebalanced");
    assert_eq!(b["action"], "Move");
    assert_eq!(b["type"], "Normal");
    assert_eq!(b["reportingController"], MANAGER);
    let note = b["note"].as_str().unwrap();
    assert!(
        note.contains("from node agx") && note.contains("to node orin"),
        "{note}"
    );
}

#[tokio::test]
async fn scaledjob_move_patches_affinity_deletes_jobs_and_pods_and_records_an_event() {
    let (client, mut api) = ApiMock::new();
    let mover = Mover::new(client, GPU_NODE_LABEL, Some("balancer-0".into()));
    let m = mv(WorkloadKind::ScaledJob, "posture-pi1");
    let task = tokio::spawn(async move { mover.apply(&m, at()).await });

    let req = api
        .expect_patch("/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs/posture-pi1")
        .await;
    assert_eq!(req.content_type, "application/merge-patch+json");
    assert!(
        req.query.contains("fieldManager=posture-farm-balancer"),
        "{}",
        req.query
    );
    assert_eq!(
        req.body,
        json!({
            "metadata": {"annotations": {
                "posture-farm.io/moved-at": AT,
                "posture-farm.io/moved-to": "orin",
                "posture-farm.io/moved-from": "agx",
                "posture-farm.io/moved-load": "30.0"}},
            "spec": {"jobTargetRef": {"template": {"spec": {"affinity": {"nodeAffinity": affinity_to("orin")}}}}}
        })
    );
    req.respond(
        200,
        scaledjob_json(
            "posture-pi1",
            json!({MOVED_AT_ANNOTATION: AT, MOVED_TO_ANNOTATION: "orin"}),
        ),
    );

    let req = api
        .expect_get("/apis/batch/v1/namespaces/posture/jobs")
        .await;
    assert!(
        req.query
            .contains("labelSelector=scaledjob.keda.sh%2Fname%3Dposture-pi1"),
        "{}",
        req.query
    );
    let sj_labels = json!({"scaledjob.keda.sh/name": "posture-pi1"});
    req.respond(
        200,
        list(
            "JobList",
            "batch/v1",
            vec![
                job_json("posture-pi1-done", "uid-done", sj_labels.clone(), false),
                job_json("posture-pi1-abcde", "uid-1", sj_labels.clone(), true),
                job_json("posture-pi1-gone", "uid-2", sj_labels.clone(), true),
            ],
        ),
    );

    // Only active Jobs go, with Background propagation.
    let req = api.next().await;
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        (
            "DELETE",
            "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-abcde"
        )
    );
    assert_eq!(req.body["propagationPolicy"], "Background");
    req.respond(
        200,
        job_json("posture-pi1-abcde", "uid-1", sj_labels.clone(), true),
    );

    let req = api.expect_get("/api/v1/namespaces/posture/pods").await;
    assert!(
        req.query
            .contains("labelSelector=batch.kubernetes.io%2Fcontroller-uid%3Duid-1"),
        "{}",
        req.query
    );
    req.respond(
        200,
        list(
            "PodList",
            "v1",
            vec![
                pod_json(
                    "posture-pi1-abcde-x1",
                    "agx",
                    sj_labels.clone(),
                    "posture-pi1-abcde",
                    false,
                ),
                pod_json(
                    "posture-pi1-abcde-x0",
                    "agx",
                    sj_labels.clone(),
                    "posture-pi1-abcde",
                    true,
                ),
            ],
        ),
    );
    // Leftover pods not already terminating are deleted.
    let req = api.next().await;
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        (
            "DELETE",
            "/api/v1/namespaces/posture/pods/posture-pi1-abcde-x1"
        )
    );
    req.respond(
        200,
        pod_json(
            "posture-pi1-abcde-x1",
            "agx",
            sj_labels.clone(),
            "posture-pi1-abcde",
            true,
        ),
    );

    // A Job KEDA already removed (immediate rollout): 404 counts as done.
    let req = api.next().await;
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        (
            "DELETE",
            "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-gone"
        )
    );
    assert_eq!(req.body["propagationPolicy"], "Background");
    req.respond(
        404,
        status_json(404, "NotFound", "jobs.batch \"posture-pi1-gone\" not found"),
    );
    let req = api.next().await;
    assert!(
        req.query.contains("controller-uid%3Duid-2"),
        "{}",
        req.query
    );
    req.respond(200, list("PodList", "v1", vec![]));

    let req = api.next().await;
    assert_event(&req, "ScaledJob", "posture-pi1");
    assert_eq!(req.body["regarding"]["apiVersion"], "keda.sh/v1alpha1");
    assert!(
        req.body["note"]
            .as_str()
            .unwrap()
            .contains("restarted 2 job(s)")
    );
    let body = req.body.clone();
    req.respond(201, body);

    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn job_move_recreates_a_clean_copy_with_the_new_affinity() {
    let (client, mut api) = ApiMock::new();
    let mut mover = Mover::new(client, GPU_NODE_LABEL, None);
    mover.job_gone_poll = Duration::from_millis(1);
    let m = mv(WorkloadKind::Job, "posture-pi1-3");
    let task = tokio::spawn(async move { mover.apply(&m, at()).await });
    let labels = json!({"app.kubernetes.io/name": "posture-analyzer", "batch.kubernetes.io/controller-uid": "uid-j",
                        "controller-uid": "uid-j", "job-name": "posture-pi1-3"});

    api.expect_get("/apis/batch/v1/namespaces/posture/jobs/posture-pi1-3")
        .await
        .respond(
            200,
            job_json("posture-pi1-3", "uid-j", labels.clone(), true),
        );

    // The intent first: a suspended copy under another name.
    let req = api
        .expect_post("/apis/batch/v1/namespaces/posture/jobs")
        .await;
    let parked = &req.body;
    assert_eq!(parked["metadata"]["name"], "posture-pi1-3-moving");
    assert_eq!(parked["spec"]["suspend"], true);
    assert_eq!(
        parked["metadata"]["annotations"][parked::PARKED_FOR_ANNOTATION],
        "posture-pi1-3"
    );
    assert_eq!(
        parked["metadata"]["annotations"][parked::PARKED_UID_ANNOTATION],
        "uid-j"
    );
    assert_eq!(
        parked["spec"]["template"]["spec"]["affinity"]["nodeAffinity"],
        affinity_to("orin")
    );
    let mut parked_back = parked.clone();
    parked_back["metadata"]["uid"] = json!("uid-parked");
    req.respond(201, parked_back);

    let req = api
        .expect_delete("/apis/batch/v1/namespaces/posture/jobs/posture-pi1-3")
        .await;
    assert_eq!(req.body["propagationPolicy"], "Background");
    assert_eq!(req.body["preconditions"]["uid"], "uid-j", "only this Job");
    req.respond(
        200,
        job_json("posture-pi1-3", "uid-j", labels.clone(), true),
    );
    let req = api.next().await;
    assert!(
        req.query.contains("controller-uid%3Duid-j"),
        "{}",
        req.query
    );
    req.respond(200, list("PodList", "v1", vec![]));

    // Still there once (being deleted), then gone.
    api.expect_get("/apis/batch/v1/namespaces/posture/jobs/posture-pi1-3")
        .await
        .respond(
            200,
            job_json("posture-pi1-3", "uid-j", labels.clone(), true),
        );
    let req = api.next().await;
    assert_eq!(req.method, "GET");
    req.respond(
        404,
        status_json(404, "NotFound", "jobs.batch \"posture-pi1-3\" not found"),
    );

    let req = api
        .expect_post("/apis/batch/v1/namespaces/posture/jobs")
        .await;
    let b = &req.body;
    assert_eq!(b["metadata"]["name"], "posture-pi1-3");
    for gone in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        assert!(b["metadata"].get(gone).is_none(), "{gone} must not be sent");
    }
    assert_eq!(
        b["metadata"]["labels"],
        json!({"app.kubernetes.io/name": "posture-analyzer"})
    );
    assert_eq!(b["metadata"]["annotations"][MOVED_AT_ANNOTATION], AT);
    assert_eq!(b["metadata"]["annotations"][MOVED_TO_ANNOTATION], "orin");
    assert_eq!(b["metadata"]["annotations"][MOVED_LOAD_ANNOTATION], "30.0");
    assert!(
        b["metadata"]["annotations"]
            .get(parked::PARKED_FOR_ANNOTATION)
            .is_none()
    );
    assert!(b["spec"].get("suspend").is_none(), "the final copy runs");
    assert!(b.get("status").is_none());
    assert!(
        b["spec"].get("selector").is_none(),
        "selector is generated by the API server"
    );
    assert_eq!(
        b["spec"]["template"]["metadata"]["labels"],
        json!({"app.kubernetes.io/name": "posture-analyzer"})
    );
    assert_eq!(
        b["spec"]["template"]["spec"]["affinity"]["nodeAffinity"],
        affinity_to("orin")
    );
    assert_eq!(
        b["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["analyze", "--topic", "images/pi1"])
    );
    let mut created = b.clone();
    created["metadata"]["uid"] = json!("uid-new");
    req.respond(201, created);

    // Moved: the parked copy goes.
    let req = api
        .expect_delete("/apis/batch/v1/namespaces/posture/jobs/posture-pi1-3-moving")
        .await;
    req.respond(
        200,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    );

    let req = api.next().await;
    assert_event(&req, "Job", "posture-pi1-3");
    assert_eq!(req.body["regarding"]["uid"], "uid-new");
    let body = req.body.clone();
    req.respond(201, body);
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_job_that_does_not_go_away_is_not_recreated() {
    let (client, mut api) = ApiMock::new();
    let mut mover = Mover::new(client, GPU_NODE_LABEL, None);
    mover.job_gone_timeout = Duration::from_secs(3);
    let m = mv(WorkloadKind::Job, "stuck");
    let task = tokio::spawn(async move { mover.apply(&m, at()).await });
    let labels = json!({"app.kubernetes.io/name": "posture-analyzer"});
    api.next()
        .await
        .respond(200, job_json("stuck", "uid-s", labels.clone(), true));
    let req = api
        .expect_post("/apis/batch/v1/namespaces/posture/jobs")
        .await;
    let body = req.body.clone();
    req.respond(201, body);
    api.expect_delete("/apis/batch/v1/namespaces/posture/jobs/stuck")
        .await
        .respond(200, job_json("stuck", "uid-s", labels.clone(), true));
    api.next().await.respond(200, list("PodList", "v1", vec![]));
    let mut task = task;
    let result = loop {
        tokio::select! {
            // Task first: once it ends the client is gone and the mock's
            // next() would report a hang-up.
            biased;
            done = &mut task => break done.unwrap(),
            req = api.next() => {
                assert_eq!(req.method, "GET", "never POSTs a copy while the old Job exists, nor drops the parked one");
                req.respond(200, job_json("stuck", "uid-s", labels.clone(), true));
            }
        }
    };
    let err = result.unwrap_err();
    assert!(matches!(err, BalanceError::JobNotGone { .. }), "{err}");
}

#[tokio::test]
async fn discover_lists_with_the_selector_and_reads_move_records() {
    let (client, mut api) = ApiMock::new();
    let scope = Scope {
        namespace: NS.into(),
        selector: "app.kubernetes.io/name=posture-analyzer".into(),
    };
    let task = tokio::spawn(async move { discover(&client, &scope).await });
    let sel = "labelSelector=app.kubernetes.io%2Fname%3Dposture-analyzer";

    let req = api.next().await;
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        (
            "GET",
            "/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs"
        )
    );
    assert!(req.query.contains(sel), "{}", req.query);
    req.respond(
        200,
        list(
            "ScaledJobList",
            "keda.sh/v1alpha1",
            vec![
                scaledjob_json(
                    "posture-pi1",
                    json!({MOVED_AT_ANNOTATION: AT, MOVED_TO_ANNOTATION: "orin"}),
                ),
                scaledjob_json("posture-pi1-1", json!({})),
            ],
        ),
    );
    let req = api.next().await;
    assert_eq!(req.path, "/apis/batch/v1/namespaces/posture/jobs");
    assert!(req.query.contains(sel));
    let plain = json!({"app.kubernetes.io/name": "posture-analyzer"});
    req.respond(
        200,
        list(
            "JobList",
            "batch/v1",
            vec![job_json("solo", "uid-solo", plain.clone(), true)],
        ),
    );
    let req = api.next().await;
    assert_eq!(req.path, "/api/v1/namespaces/posture/pods");
    assert!(req.query.contains(sel));
    let sj = |n: &str| json!({"app.kubernetes.io/name": "posture-analyzer", "scaledjob.keda.sh/name": n});
    req.respond(
        200,
        list(
            "PodList",
            "v1",
            vec![
                pod_json(
                    "p1-new",
                    "orin",
                    sj("posture-pi1"),
                    "posture-pi1-new",
                    false,
                ),
                // Old Job of a move interrupted before its deletes.
                pod_json("p1-old", "agx", sj("posture-pi1"), "posture-pi1-old", false),
                pod_json("p2", "nano", sj("posture-pi1-1"), "posture-pi1-1-a", false),
                pod_json("p2b", "nano", sj("posture-pi1-1"), "posture-pi1-1-b", false),
                pod_json("p2c", "agx", sj("posture-pi1-1"), "posture-pi1-1-c", true),
                pod_json("s", "agx", plain.clone(), "solo", false),
                pod_json("foreign", "agx", plain.clone(), "not-ours", false),
            ],
        ),
    );
    let d = task.await.unwrap().unwrap();
    let sjk = |n: &str| WorkloadKey::new(WorkloadKind::ScaledJob, NS, n);
    assert_eq!(
        d.placements,
        vec![
            (sjk("posture-pi1"), "agx".to_owned()),
            (sjk("posture-pi1-1"), "nano".to_owned()),
            (
                WorkloadKey::new(WorkloadKind::Job, NS, "solo"),
                "agx".to_owned()
            ),
        ]
    );
    assert_eq!(
        d.moved_at,
        BTreeMap::from([(sjk("posture-pi1"), parse_moved_at(AT).unwrap())])
    );
    assert_eq!(
        d.unfinished,
        vec![Unfinished {
            workload: sjk("posture-pi1"),
            to: "orin".into(),
            jobs: vec!["posture-pi1-old".into()],
        }]
    );
}

#[tokio::test]
async fn finish_deletes_the_old_jobs_of_an_interrupted_move() {
    let (client, mut api) = ApiMock::new();
    let mover = Mover::new(client, GPU_NODE_LABEL, None);
    let u = Unfinished {
        workload: WorkloadKey::new(WorkloadKind::ScaledJob, NS, "posture-pi1"),
        to: "orin".into(),
        jobs: vec!["posture-pi1-old".into()],
    };
    let task = tokio::spawn(async move { mover.finish(&u).await });
    let labels = json!({"scaledjob.keda.sh/name": "posture-pi1"});
    let req = api.next().await;
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        (
            "GET",
            "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-old"
        )
    );
    req.respond(
        200,
        job_json("posture-pi1-old", "uid-old", labels.clone(), true),
    );
    let req = api.next().await;
    assert_eq!(req.method, "DELETE");
    assert_eq!(req.body["propagationPolicy"], "Background");
    req.respond(
        200,
        job_json("posture-pi1-old", "uid-old", labels.clone(), true),
    );
    api.next().await.respond(200, list("PodList", "v1", vec![]));
    task.await.unwrap().unwrap();
}

/// Answers the three list calls of `discover`.
async fn answer_discovery(api: &mut ApiMock, scaled_jobs: Vec<Value>, pods: Vec<Value>) {
    answer_discovery_with_jobs(api, scaled_jobs, vec![], pods).await
}

/// Answers the three list calls of `discover`, with Jobs.
async fn answer_discovery_with_jobs(
    api: &mut ApiMock,
    scaled_jobs: Vec<Value>,
    jobs: Vec<Value>,
    pods: Vec<Value>,
) {
    let req = api.next().await;
    assert_eq!(
        req.path,
        "/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs"
    );
    req.respond(200, list("ScaledJobList", "keda.sh/v1alpha1", scaled_jobs));
    let req = api.next().await;
    assert_eq!(req.path, "/apis/batch/v1/namespaces/posture/jobs");
    req.respond(200, list("JobList", "batch/v1", jobs));
    let req = api.next().await;
    assert_eq!(req.path, "/api/v1/namespaces/posture/pods");
    req.respond(200, list("PodList", "v1", pods));
}

fn sj_pod(sj: &str, node: &str) -> Value {
    pod_json(
        &format!("{sj}-job-pod"),
        node,
        json!({"app": "posture", "scaledjob.keda.sh/name": sj}),
        &format!("{sj}-job"),
        false,
    )
}

fn balancer(client: Client) -> Balancer {
    Balancer::new(
        Mover::new(client, GPU_NODE_LABEL, None),
        Scope {
            namespace: NS.into(),
            selector: "app=posture".into(),
        },
        BalanceParams {
            threshold: 50.0,
            cooldown: 300_000,
            ..Default::default()
        },
    )
}

/// The acceptance scenario end to end (discovery, pure plan,
/// mover): agx averages 80 %, orin 20 %, nano 30 %. One loop moves
/// exactly one ScaledJob from agx to orin; the next loop, once usage has
/// settled, moves nothing.
#[tokio::test]
async fn one_loop_moves_one_scaledjob_to_the_20_percent_node_then_nothing() {
    use rand::SeedableRng;
    let (client, mut api) = ApiMock::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let t0 = parse_moved_at(AT).unwrap();
    let averages: BTreeMap<String, f64> = [("agx", 80.0), ("orin", 20.0), ("nano", 30.0)]
        .map(|(n, u)| (n.to_owned(), u))
        .into();
    let task = tokio::spawn(async move {
        let mut b = balancer(client);
        let first = b.run_once(&averages, t0, &mut rng).await;
        (b, rng, first)
    });
    let sjs: Vec<Value> = [
        "posture-pi1",
        "posture-pi1-1",
        "posture-pi1-2",
        "posture-pi1-3",
        "posture-pi1-4",
    ]
    .iter()
    .map(|n| scaledjob_json(n, json!({})))
    .collect();
    let pods = vec![
        sj_pod("posture-pi1", "agx"),
        sj_pod("posture-pi1-1", "agx"),
        sj_pod("posture-pi1-2", "agx"),
        sj_pod("posture-pi1-3", "orin"),
        sj_pod("posture-pi1-4", "nano"),
    ];
    answer_discovery(&mut api, sjs.clone(), pods).await;

    let req = api
        .expect_patch("/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs/posture-pi1")
        .await;
    assert_eq!(
        req.body["spec"]["jobTargetRef"]["template"]["spec"]["affinity"]["nodeAffinity"],
        affinity_to("orin")
    );
    assert_eq!(
        req.body["metadata"]["annotations"][MOVED_FROM_ANNOTATION],
        "agx"
    );
    req.respond(
        200,
        scaledjob_json(
            "posture-pi1",
            json!({MOVED_AT_ANNOTATION: AT, MOVED_TO_ANNOTATION: "orin"}),
        ),
    );
    let labels = json!({"scaledjob.keda.sh/name": "posture-pi1"});
    api.next().await.respond(
        200,
        list(
            "JobList",
            "batch/v1",
            vec![job_json("posture-pi1-job", "uid-a", labels.clone(), true)],
        ),
    );
    let req = api.next().await;
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        (
            "DELETE",
            "/apis/batch/v1/namespaces/posture/jobs/posture-pi1-job"
        )
    );
    req.respond(
        200,
        job_json("posture-pi1-job", "uid-a", labels.clone(), true),
    );
    api.next().await.respond(200, list("PodList", "v1", vec![]));
    let req = api.next().await;
    assert_event(&req, "ScaledJob", "posture-pi1");
    let body = req.body.clone();
    req.respond(201, body);

    let (mut b, mut rng, first) = task.await.unwrap();
    let first = first.unwrap();
    assert_eq!(first.plan.moves.len(), 1, "exactly one move");
    let m = &first.plan.moves[0];
    assert_eq!(
        (m.workload.name.as_str(), m.from.as_str(), m.to.as_str()),
        ("posture-pi1", "agx", "orin")
    );
    assert!(first.applied.iter().all(|(_, r)| r.is_ok()));

    // Next window: the analyzer runs on orin now and usage has settled.
    let settled: BTreeMap<String, f64> = [("agx", 50.0), ("orin", 47.0), ("nano", 30.0)]
        .map(|(n, u)| (n.to_owned(), u))
        .into();
    let task = tokio::spawn(async move { b.run_once(&settled, t0 + 35_000, &mut rng).await });
    let mut sjs = sjs;
    sjs[0] = scaledjob_json(
        "posture-pi1",
        json!({MOVED_AT_ANNOTATION: AT, MOVED_TO_ANNOTATION: "orin"}),
    );
    let pods = vec![
        sj_pod("posture-pi1", "orin"),
        sj_pod("posture-pi1-1", "agx"),
        sj_pod("posture-pi1-2", "agx"),
        sj_pod("posture-pi1-3", "orin"),
        sj_pod("posture-pi1-4", "nano"),
    ];
    answer_discovery(&mut api, sjs, pods).await;
    let second = task.await.unwrap().unwrap();
    assert_eq!(second.plan.outcome, posture_core::balance::Outcome::Stable);
    assert!(second.plan.moves.is_empty() && second.applied.is_empty());
    assert!(second.finished.is_empty());
}

/// A restarted balancer (no memory) reads the move record back from the
/// annotation and does not move the workload again within the cool-down.
#[tokio::test]
async fn a_restarted_balancer_does_not_repeat_a_recent_move() {
    use rand::SeedableRng;
    let (client, mut api) = ApiMock::new();
    let now = parse_moved_at(AT).unwrap() + 60_000;
    let averages: BTreeMap<String, f64> = [("agx", 20.0), ("orin", 80.0)]
        .map(|(n, u)| (n.to_owned(), u))
        .into();
    let task = tokio::spawn(async move {
        let mut b = balancer(client);
        b.run_once(&averages, now, &mut rand::rngs::StdRng::seed_from_u64(1))
            .await
    });
    answer_discovery(
        &mut api,
        vec![scaledjob_json(
            "posture-pi1",
            json!({MOVED_AT_ANNOTATION: AT, MOVED_TO_ANNOTATION: "orin"}),
        )],
        vec![sj_pod("posture-pi1", "orin")],
    )
    .await;
    let report = task.await.unwrap().unwrap();
    assert!(report.plan.moves.is_empty());
    assert_eq!(
        report.plan.stuck,
        vec![(
            "orin".to_owned(),
            posture_core::balance::StuckReason::CoolingDown
        )]
    );
}

/// Dry-run decides and reports but sends nothing beyond the reads.
#[tokio::test]
async fn dry_run_only_reads() {
    use rand::SeedableRng;
    let (client, mut api) = ApiMock::new();
    let averages: BTreeMap<String, f64> = [("agx", 90.0), ("orin", 10.0)]
        .map(|(n, u)| (n.to_owned(), u))
        .into();
    let task = tokio::spawn(async move {
        let mut b = balancer(client);
        b.dry_run = true;
        b.workload_load = Some(20.0);
        b.run_once(&averages, 0, &mut rand::rngs::StdRng::seed_from_u64(1))
            .await
    });
    answer_discovery(
        &mut api,
        vec![scaledjob_json("posture-pi1", json!({}))],
        vec![sj_pod("posture-pi1", "agx")],
    )
    .await;
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.plan.moves.len(), 1);
    assert_eq!(report.plan.moves[0].load, 20.0);
    assert!(report.applied.is_empty());
}

/// The loop with paused time: six samples 5 s apart (agx at 70 % then
/// 90 %, averaging 80 %), one decision when the 30 s window is full, one
/// move to the 20 % node; then a fresh window before the next decision.
#[tokio::test(start_paused = true)]
async fn loop_samples_a_full_window_then_decides_once_per_window() {
    use posture_core::gpu::{GpuSample, GpuSnapshot, NodeUsage, UsageState};
    use rand::SeedableRng;
    let snap = |agx: f64| GpuSnapshot {
        taken_at: 0,
        nodes: [("agx", agx), ("orin", 20.0), ("nano", 30.0)]
            .map(|(n, u)| {
                (
                    n.to_owned(),
                    NodeUsage {
                        sample: Some(GpuSample {
                            usage_percent: u,
                            sampled_at: 0,
                        }),
                        state: UsageState::Ok,
                        error: None,
                    },
                )
            })
            .into(),
    };
    let (tx, rx) = tokio::sync::watch::channel(snap(70.0));
    let (client, mut api) = ApiMock::new();
    let start = tokio::time::Instant::now();
    let t0 = parse_moved_at(AT).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut b = balancer(client);
        b.dry_run = true;
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut decisions: Vec<(BTreeMap<String, f64>, usize)> = Vec::new();
        run_loop(
            &mut b,
            rx,
            LoopTiming {
                sample_interval: Duration::from_secs(5),
                window: Duration::from_secs(30),
                once: false,
            },
            &mut rng,
            move || t0 + i64::try_from(start.elapsed().as_millis()).unwrap(),
            async {
                let _ = stop_rx.await;
            },
            |e| match e {
                LoopEvent::Decided { averages, report } => {
                    decisions.push((averages.clone(), report.plan.moves.len()))
                }
                LoopEvent::ReadFailed(err) => panic!("{err}"),
            },
        )
        .await;
        decisions
    });
    // Samples at 0, 5, 10 s see 70 %; at 15, 20, 25 s 90 %.
    tokio::time::sleep(Duration::from_millis(12_500)).await;
    tx.send(snap(90.0)).unwrap();
    tokio::time::sleep(Duration::from_millis(13_000)).await;
    // 25.5 s: the window is full, the decision reads the workloads.
    let sjs: Vec<Value> = ["posture-pi1", "posture-pi1-1", "posture-pi1-2"]
        .iter()
        .map(|n| scaledjob_json(n, json!({})))
        .collect();
    let pods = vec![
        sj_pod("posture-pi1", "agx"),
        sj_pod("posture-pi1-1", "agx"),
        sj_pod("posture-pi1-2", "agx"),
    ];
    answer_discovery(&mut api, sjs.clone(), pods.clone()).await;
    // Nothing else until the next window is full (30 s later).
    tokio::time::sleep(Duration::from_secs(29)).await;
    answer_discovery(&mut api, sjs, pods).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send(()).unwrap();
    let decisions = task.await.unwrap();
    assert_eq!(decisions.len(), 2, "one decision per full window");
    let (averages, moves) = &decisions[0];
    assert!((averages["agx"] - 80.0).abs() < 1e-9, "{averages:?}");
    assert_eq!(averages["orin"], 20.0);
    // 80 % over three analyzers: 26.7 each, fits on orin (20 %): one move.
    assert_eq!(*moves, 1);
    assert!(
        (decisions[1].0["agx"] - 90.0).abs() < 1e-9,
        "fresh window: only 90 % samples"
    );
}

mod jobs;
mod memory;

#[test]
fn moved_at_parses_rfc3339_only() {
    assert_eq!(parse_moved_at("1970-01-01T00:00:01Z"), Some(1000));
    assert_eq!(parse_moved_at("yesterday"), None);
}
