//! Issue 11.11: a plain Job move never loses the Job, whatever fails and
//! whenever the balancer stops (recorded exchanges).

use super::*;
use crate::balancer::parked::{PARKED_FOR_ANNOTATION, PARKED_UID_ANNOTATION, ParkedAction};

const JOBS: &str = "/apis/batch/v1/namespaces/posture/jobs";

fn labels() -> Value {
    json!({"app": "posture"})
}

/// The parked copy of `posture-pi1-3` as the API server lists it.
fn parked_json() -> Value {
    let mut p = job_json("posture-pi1-3-moving", "uid-parked", labels(), true);
    p["metadata"]["annotations"] = json!({
        PARKED_FOR_ANNOTATION: "posture-pi1-3", PARKED_UID_ANNOTATION: "uid-j",
        MOVED_AT_ANNOTATION: AT, MOVED_TO_ANNOTATION: "orin", MOVED_FROM_ANNOTATION: "agx",
        MOVED_LOAD_ANNOTATION: "30.0"});
    p["spec"]["suspend"] = json!(true);
    p["spec"]["template"]["spec"]["affinity"]["nodeAffinity"] = affinity_to("orin");
    p["status"] = json!({"conditions": [{"type": "Suspended", "status": "True"}]});
    p
}

/// The copy's create fails after the original was deleted (the defect:
/// before the fix nothing held the Job any more). The exchange's ledger of
/// the camera's Jobs still holds the parked copy, and the move reports the
/// failure.
#[tokio::test]
async fn create_failing_after_delete_keeps_the_job_in_its_parked_copy() {
    let (client, mut api) = ApiMock::new();
    let mut mover = Mover::new(client, GPU_NODE_LABEL, None);
    mover.job_gone_poll = Duration::from_millis(1);
    let m = mv(WorkloadKind::Job, "posture-pi1-3");
    let mut task = tokio::spawn(async move { mover.apply(&m, at()).await });
    let mut alive: std::collections::BTreeSet<String> = ["posture-pi1-3".to_owned()].into();
    let mut sequence = Vec::new();
    let result = loop {
        tokio::select! {
            biased;
            done = &mut task => break done.unwrap(),
            req = api.next() => {
                let name = req.path.rsplit('/').next().unwrap_or_default().to_owned();
                sequence.push(format!("{} {name}", req.method));
                match (req.method.as_str(), req.path.as_str()) {
                    ("GET", p) if p.ends_with("/pods") => req.respond(200, list("PodList", "v1", vec![])),
                    ("GET", _) if alive.contains(&name) => req.respond(200, job_json(&name, "uid-j", labels(), true)),
                    ("GET", _) => req.respond(404, status_json(404, "NotFound", "gone")),
                    ("DELETE", _) => { alive.remove(&name); req.respond(200, job_json(&name, "uid-j", labels(), true)) }
                    ("POST", _) if req.body["metadata"]["name"] == "posture-pi1-3" => req.respond(500, status_json(500, "InternalError", "etcd timeout")),
                    ("POST", _) => { alive.insert(req.body["metadata"]["name"].as_str().unwrap().to_owned()); let b = req.body.clone(); req.respond(201, b) }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    };
    let err = result.unwrap_err();
    assert!(
        err.to_string()
            .contains("recreating job posture/posture-pi1-3"),
        "{err}"
    );
    assert_eq!(
        alive.into_iter().collect::<Vec<_>>(),
        vec!["posture-pi1-3-moving".to_owned()],
        "the parked copy holds the camera's Job: {sequence:?}"
    );
    assert_eq!(
        sequence[..3],
        ["GET posture-pi1-3", "POST jobs", "DELETE posture-pi1-3"]
    );
}

/// When even the parked copy cannot be created, nothing is deleted.
#[tokio::test]
async fn a_failed_park_touches_nothing() {
    let (client, mut api) = ApiMock::new();
    let mover = Mover::new(client, GPU_NODE_LABEL, None);
    let m = mv(WorkloadKind::Job, "posture-pi1-3");
    let task = tokio::spawn(async move { mover.apply(&m, at()).await });
    api.expect_get(&format!("{JOBS}/posture-pi1-3"))
        .await
        .respond(200, job_json("posture-pi1-3", "uid-j", labels(), true));
    api.expect_post(JOBS).await.respond(
        403,
        status_json(403, "Forbidden", "exceeded quota: count/jobs.batch"),
    );
    let err = task.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("parking a copy of job"), "{err}");
}

/// The restart case: the balancer died after deleting the original (or
/// its create failed). The next loop finds the parked copy, creates the
/// final Job under the original name and drops the parked copy; the
/// parked copy is not a workload and the move still counts as in progress.
#[tokio::test]
async fn a_restarted_balancer_finishes_a_job_move_from_its_parked_copy() {
    use rand::SeedableRng;
    let (client, mut api) = ApiMock::new();
    let now = parse_moved_at(AT).unwrap() + 40_000;
    let averages: BTreeMap<String, f64> = [("agx", 80.0), ("orin", 20.0)]
        .map(|(n, u)| (n.to_owned(), u))
        .into();
    let task = tokio::spawn(async move {
        let mut b = balancer(client);
        b.run_once(&averages, now, &mut rand::rngs::StdRng::seed_from_u64(1))
            .await
    });
    answer_discovery_with_jobs(&mut api, vec![], vec![parked_json()], vec![]).await;
    api.expect_get(&format!("{JOBS}/posture-pi1-3"))
        .await
        .respond(404, status_json(404, "NotFound", "gone"));
    let req = api.expect_post(JOBS).await;
    let b = &req.body;
    assert_eq!(b["metadata"]["name"], "posture-pi1-3");
    assert!(b["metadata"].get("uid").is_none());
    assert!(b["spec"].get("suspend").is_none(), "the final copy runs");
    assert!(b["spec"].get("selector").is_none());
    assert!(b["status"].is_null());
    assert_eq!(b["metadata"]["annotations"][MOVED_TO_ANNOTATION], "orin");
    assert!(
        b["metadata"]["annotations"]
            .get(PARKED_FOR_ANNOTATION)
            .is_none()
    );
    assert_eq!(
        b["spec"]["template"]["spec"]["affinity"]["nodeAffinity"],
        affinity_to("orin")
    );
    assert_eq!(
        b["spec"]["template"]["metadata"]["labels"],
        json!({"app.kubernetes.io/name": "posture-analyzer"})
    );
    let created = b.clone();
    req.respond(201, created);
    api.expect_delete(&format!("{JOBS}/posture-pi1-3-moving"))
        .await
        .respond(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        );
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.parked.len(), 1);
    assert_eq!(report.parked[0].1.as_ref().unwrap(), &ParkedAction::Finish);
    assert!(report.plan.moves.is_empty());
    assert_eq!(
        report.plan.pending.len(),
        1,
        "the move counts as in progress"
    );
    assert_eq!(report.plan.projected["orin"], 50.0);
}

/// The balancer died between parking and deleting: the original still
/// runs, so the parked copy is dropped (rolled back); nothing moved.
#[tokio::test]
async fn a_parked_copy_next_to_its_untouched_original_is_rolled_back() {
    let (client, mut api) = ApiMock::new();
    let mover = Mover::new(client, GPU_NODE_LABEL, None);
    let parked = parked::parked_of(&serde_json::from_value(parked_json()).unwrap()).unwrap();
    let task = tokio::spawn(async move { mover.finish_parked(&parked).await });
    api.expect_get(&format!("{JOBS}/posture-pi1-3"))
        .await
        .respond(200, job_json("posture-pi1-3", "uid-j", labels(), true));
    api.expect_delete(&format!("{JOBS}/posture-pi1-3-moving"))
        .await
        .respond(200, parked_json());
    assert_eq!(task.await.unwrap().unwrap(), ParkedAction::RollBack);
}

/// The original is still terminating: wait, touch nothing.
#[tokio::test]
async fn a_parked_copy_waits_for_a_terminating_original() {
    let (client, mut api) = ApiMock::new();
    let mover = Mover::new(client, GPU_NODE_LABEL, None);
    let parked = parked::parked_of(&serde_json::from_value(parked_json()).unwrap()).unwrap();
    let task = tokio::spawn(async move { mover.finish_parked(&parked).await });
    let mut terminating = job_json("posture-pi1-3", "uid-j", labels(), true);
    terminating["metadata"]["deletionTimestamp"] = json!(AT);
    api.expect_get(&format!("{JOBS}/posture-pi1-3"))
        .await
        .respond(200, terminating);
    assert_eq!(task.await.unwrap().unwrap(), ParkedAction::Wait);
}

/// The final copy was created but the parked one not yet dropped: done.
#[tokio::test]
async fn a_parked_copy_whose_move_completed_is_dropped() {
    let (client, mut api) = ApiMock::new();
    let mover = Mover::new(client, GPU_NODE_LABEL, None);
    let parked = parked::parked_of(&serde_json::from_value(parked_json()).unwrap()).unwrap();
    let task = tokio::spawn(async move { mover.finish_parked(&parked).await });
    api.expect_get(&format!("{JOBS}/posture-pi1-3"))
        .await
        .respond(200, job_json("posture-pi1-3", "uid-new", labels(), true));
    api.expect_delete(&format!("{JOBS}/posture-pi1-3-moving"))
        .await
        .respond(404, status_json(404, "NotFound", "gone"));
    assert_eq!(task.await.unwrap().unwrap(), ParkedAction::Done);
}
