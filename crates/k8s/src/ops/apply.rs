//! Server-side apply of an [`ApplyPlan`], one object at a time in plan order.
//!
//! Each object is read first (to learn its `resourceVersion`), then applied
//! with field manager [`FIELD_MANAGER`] and `force` (we own these fields; a
//! hand edit with kubectl is overridden, which is what "up makes the cluster
//! match deploy/" means). Re-applying identical content is a no-op on the API
//! server — the object is not written, its `resourceVersion` stays — so
//! comparing versions before and after tells "unchanged" from "configured"
//! without diffing. Jobs are never deleted and re-created: their pod template
//! is immutable, so a changed one is reported with what to do.

use kube::api::{DynamicObject, Patch, PatchParams};
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
}

impl ApplyAction {
    /// Lower-case word for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
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
    let after = api
        .patch(object.name(), &params, &Patch::Apply(&object.object))
        .await
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 422 && object.kind_name() == "Job" && before.is_some() => {
                OpsError::kube(
                    format!("apply {what}: the existing Job has a different pod template (immutable); run `posture-farm down` first to replace it"),
                    e,
                )
            }
            _ => OpsError::kube(format!("apply {what}"), e),
        })?;
    let action = match before {
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
    use crate::ops::plan::{PlannedObject, Source};
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
                .map(|o| PlannedObject::new(o, Source::Scheduler, "test").expect("valid"))
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

    #[tokio::test]
    async fn a_changed_job_template_stops_with_advice_and_nothing_after_it_is_applied() {
        let (client, mut mock) = ApiMock::new();
        let p = ApplyPlan::new(plan().objects.into_iter().skip(2).collect());
        let p2 = p.clone();
        let task = tokio::spawn(async move { apply_plan(&client, &p2, |_| {}).await });
        let get = mock.next().await;
        get.respond(200, with_rv(p.objects[0].object.clone(), "3"));
        let patch = mock.next().await;
        patch.respond(
            422,
            status_json(422, "Invalid", "spec.template: field is immutable"),
        );
        let err = task.await.expect("joins").expect_err("fails");
        assert!(err.to_string().contains("posture-farm down"), "{err}");
    }
}
