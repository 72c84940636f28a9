//! Server-side apply of an [`ApplyPlan`], one object at a time in plan order.
//!
//! Each object is read first (to learn its `resourceVersion`), then applied
//! with field manager [`FIELD_MANAGER`] and `force` (we own these fields; a
//! hand edit with kubectl is overridden, which is what "up makes the cluster
//! match deploy/" means). Re-applying identical content is a no-op on the API
//! server — the object is not written, its `resourceVersion` stays — so
//! comparing versions before and after tells "unchanged" from "configured"
//! without diffing. A Job's pod template is immutable: when it changed (a
//! mode switch gives the analyzers another scheduler; a new image, topic or
//! configuration), the API server refuses the apply (422) and the Job is
//! replaced — deleted with its pods, then created again. The analyzers keep
//! nothing but their spool in the pod (results are in the database, frames
//! wait in the broker's persistent session), so a replacement loses nothing.

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};

use super::plan::{ApplyPlan, PlannedObject, Stage};
use super::{FIELD_MANAGER, OpsError};

/// What applying one object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyAction {
    /// It did not exist.
    Created,
    /// It existed and the apply changed it.
    Configured,
    /// It existed and the apply changed nothing.
    Unchanged,
    /// It existed with an immutable field that differs (a Job's pod
    /// template), so it was deleted and created again.
    Replaced,
}

impl ApplyAction {
    /// Lower-case word for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
            Self::Replaced => "replaced",
        }
    }
}

/// The outcome for one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Its stage.
    pub stage: Stage,
    /// `Kind namespace/name`.
    pub object: String,
    /// What happened.
    pub action: ApplyAction,
}

fn api_for(client: &Client, object: &PlannedObject) -> Api<DynamicObject> {
    match (object.kind.namespaced, object.namespace()) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &object.kind.resource),
        _ => Api::all_with(client.clone(), &object.kind.resource),
    }
}

/// How long a replaced Job may take to disappear before `up` gives up (it
/// has no finalizers of its own, so it is normally gone at once).
const REPLACE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Applies one object and classifies the result.
pub async fn apply_one(client: &Client, object: &PlannedObject) -> Result<ApplyOutcome, OpsError> {
    let api = api_for(client, object);
    let what = object.describe();
    let before = api
        .get_opt(object.name())
        .await
        .map_err(|e| OpsError::kube(format!("read {what}"), e))?
        .map(|o| o.metadata.resource_version);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&object.object);
    let (after, replaced) = match api.patch(object.name(), &params, &patch).await {
        Ok(after) => (after, false),
        Err(kube::Error::Api(s))
            if s.code == 422 && object.kind_name() == "Job" && before.is_some() =>
        {
            tracing::info!(object = %what, reason = %s.message, "pod template changed: replacing the Job");
            replace_job(&api, object.name(), &what).await?;
            let created = api
                .patch(object.name(), &params, &patch)
                .await
                .map_err(|e| OpsError::kube(format!("apply {what} (replacement)"), e))?;
            (created, true)
        }
        Err(kube::Error::Api(s)) if s.code == 404 && object.kind_name() == "ScaledJob" => {
            return Err(OpsError::manifest(
                what,
                "the API server does not serve keda.sh/v1alpha1 ScaledJobs: install KEDA v2 first (https://keda.sh/docs/deploy/), or use another --mode",
            ));
        }
        Err(e) => return Err(OpsError::kube(format!("apply {what}"), e)),
    };
    let action = match before {
        _ if replaced => ApplyAction::Replaced,
        None => ApplyAction::Created,
        Some(rv) if rv.is_some() && rv == after.metadata.resource_version => ApplyAction::Unchanged,
        Some(_) => ApplyAction::Configured,
    };
    tracing::info!(object = %what, action = action.as_str(), "applied");
    Ok(ApplyOutcome {
        stage: object.stage,
        object: what,
        action,
    })
}

/// Deletes a Job with its pods (Background propagation) and waits until the
/// API server no longer has it, so the same name can be created again.
async fn replace_job(api: &Api<DynamicObject>, name: &str, what: &str) -> Result<(), OpsError> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(e) if crate::workload::is_not_found(&e) => {}
        Err(e) => return Err(OpsError::kube(format!("delete {what} to replace it"), e)),
    }
    let deadline = tokio::time::Instant::now() + REPLACE_TIMEOUT;
    loop {
        let still = api
            .get_opt(name)
            .await
            .map_err(|e| OpsError::kube(format!("read {what}"), e))?;
        if still.is_none() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(OpsError::Timeout {
                what: format!("{what} to be deleted before it is created again"),
                seconds: REPLACE_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Applies a plan in order, calling `progress` after each object. Stops at
/// the first failure: later stages depend on earlier ones.
pub async fn apply_plan(
    client: &Client,
    plan: &ApplyPlan,
    mut progress: impl FnMut(&ApplyOutcome),
) -> Result<Vec<ApplyOutcome>, OpsError> {
    let mut out = Vec::with_capacity(plan.objects.len());
    for object in &plan.objects {
        let outcome = apply_one(client, object).await?;
        progress(&outcome);
        out.push(outcome);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::plan::PlannedObject;
    use crate::test_support::{ApiMock, status_json};
    use serde_json::{Value, json};

    fn plan() -> ApplyPlan {
        let objects = vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "posture"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rr-scheduler", "namespace": "kube-system"}, "spec": {}}),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "posture-pi1", "namespace": "posture"}, "spec": {}}),
        ];
        ApplyPlan::new(
            objects
                .into_iter()
                .map(|o| PlannedObject::new(o, "test").expect("valid"))
                .collect(),
        )
    }

    fn with_rv(mut v: Value, rv: &str) -> Value {
        v["metadata"]["resourceVersion"] = json!(rv);
        v
    }

    const PATHS: [&str; 3] = [
        "/api/v1/namespaces/posture",
        "/apis/apps/v1/namespaces/kube-system/deployments/rr-scheduler",
        "/apis/batch/v1/namespaces/posture/jobs/posture-pi1",
    ];

    /// Serves one `up`: GET (absent or at `before`), then the apply answered at `after`.
    async fn serve(mock: &mut ApiMock, plan: &ApplyPlan, versions: &[(Option<&str>, &str)]) {
        for ((object, path), (before, after)) in plan.objects.iter().zip(PATHS).zip(versions) {
            let get = mock.expect_get(path).await;
            match before {
                None => get.respond(404, status_json(404, "NotFound", "not found")),
                Some(rv) => get.respond(200, with_rv(object.object.clone(), rv)),
            }
            let patch = mock.expect_patch(path).await;
            assert_eq!(patch.content_type, "application/apply-patch+yaml");
            assert!(
                patch.query.contains("fieldManager=posture-farm"),
                "{}",
                patch.query
            );
            assert!(patch.query.contains("force=true"), "{}", patch.query);
            assert_eq!(patch.body, object.object, "the manifest is sent as is");
            patch.respond(200, with_rv(object.object.clone(), after));
        }
    }

    #[tokio::test]
    async fn first_up_creates_second_up_sends_the_same_applies_and_changes_nothing() {
        let (client, mut mock) = ApiMock::new();
        let p = plan();
        let p2 = p.clone();
        let task = tokio::spawn(async move {
            let first = apply_plan(&client, &p2, |_| {}).await?;
            let second = apply_plan(&client, &p2, |_| {}).await?;
            Ok::<_, OpsError>((first, second))
        });
        serve(&mut mock, &p, &[(None, "1"), (None, "2"), (None, "3")]).await;
        serve(
            &mut mock,
            &p,
            &[(Some("1"), "1"), (Some("2"), "2"), (Some("3"), "3")],
        )
        .await;
        let (first, second) = task.await.expect("joins").expect("ok");
        assert!(first.iter().all(|o| o.action == ApplyAction::Created));
        assert!(
            second.iter().all(|o| o.action == ApplyAction::Unchanged),
            "{second:?}"
        );
        assert_eq!(second[2].object, "Job posture/posture-pi1");
    }

    #[tokio::test]
    async fn changed_content_is_reported_configured() {
        let (client, mut mock) = ApiMock::new();
        let p = plan();
        let p2 = p.clone();
        let task = tokio::spawn(async move { apply_plan(&client, &p2, |_| {}).await });
        serve(
            &mut mock,
            &p,
            &[(Some("1"), "1"), (Some("2"), "7"), (Some("3"), "3")],
        )
        .await;
        let out = task.await.expect("joins").expect("ok");
        let actions: Vec<ApplyAction> = out.iter().map(|o| o.action).collect();
        assert_eq!(
            actions,
            [
                ApplyAction::Unchanged,
                ApplyAction::Configured,
                ApplyAction::Unchanged
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_whose_template_changed_is_replaced() {
        let (client, mut mock) = ApiMock::new();
        let p = ApplyPlan::new(plan().objects.into_iter().skip(2).collect());
        let p2 = p.clone();
        let task = tokio::spawn(async move { apply_plan(&client, &p2, |_| {}).await });
        let path = PATHS[2];
        let job = p.objects[0].object.clone();
        mock.expect_get(path)
            .await
            .respond(200, with_rv(job.clone(), "3"));
        mock.expect_patch(path).await.respond(
            422,
            status_json(422, "Invalid", "spec.template: field is immutable"),
        );
        let delete = mock.expect_delete(path).await;
        assert_eq!(delete.body["propagationPolicy"], "Background");
        delete.respond(200, with_rv(job.clone(), "4"));
        // Still there (the garbage collector is busy), then gone.
        mock.expect_get(path)
            .await
            .respond(200, with_rv(job.clone(), "4"));
        mock.expect_get(path)
            .await
            .respond(404, status_json(404, "NotFound", "not found"));
        let create = mock.expect_patch(path).await;
        assert_eq!(create.body, job, "the new manifest, as is");
        create.respond(201, with_rv(job, "9"));
        let out = task.await.expect("joins").expect("ok");
        assert_eq!(out[0].action, ApplyAction::Replaced);
    }

    #[tokio::test]
    async fn an_invalid_object_other_than_a_job_stops_up() {
        let (client, mut mock) = ApiMock::new();
        let p = ApplyPlan::new(plan().objects.into_iter().skip(1).take(1).collect());
        let p2 = p.clone();
        let task = tokio::spawn(async move { apply_plan(&client, &p2, |_| {}).await });
        mock.next()
            .await
            .respond(200, with_rv(p.objects[0].object.clone(), "3"));
        mock.next().await.respond(
            422,
            status_json(422, "Invalid", "spec.selector: field is immutable"),
        );
        let err = task.await.expect("joins").expect_err("fails");
        assert!(err.to_string().contains("apply Deployment"), "{err}");
    }

    #[tokio::test]
    async fn keda_mode_without_keda_says_to_install_it() {
        let (client, mut mock) = ApiMock::new();
        let sj = PlannedObject::new(
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
                   "metadata": {"name": "posture-pi1", "namespace": "posture"}}),
            "test",
        )
        .expect("valid");
        let task = tokio::spawn(async move { apply_one(&client, &sj).await });
        // No CRD: the whole resource path is unknown (404 with no object).
        let path = "/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs/posture-pi1";
        let missing = status_json(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        mock.expect_get(path).await.respond(404, missing.clone());
        mock.expect_patch(path).await.respond(404, missing);
        let err = task.await.expect("joins").expect_err("no KEDA");
        assert!(err.to_string().contains("install KEDA v2"), "{err}");
    }
}
