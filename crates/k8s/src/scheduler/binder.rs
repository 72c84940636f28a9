//! Binding pods to nodes through the `pods/binding` subresource, exactly as
//! kube-scheduler does: `POST /api/v1/namespaces/{ns}/pods/{name}/binding`
//! with a `v1/Binding` whose target is the node.

use k8s_openapi::api::core::v1::{Binding as ApiBinding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use posture_core::Binding;

/// What became of one bind request.
#[derive(Debug)]
pub enum BindOutcome {
    /// The API server accepted the binding.
    Bound,
    /// HTTP 409: someone bound the pod first. A skip, not an error.
    AlreadyBound(String),
    /// HTTP 404, or 409 because the UID precondition failed: the pod the
    /// decision was made for is gone (perhaps replaced by a new pod of the
    /// same name, which is decided on its own). Nothing to do for it.
    PodGone,
    /// Anything else: retried with backoff by the loop.
    Failed(kube::Error),
}

impl BindOutcome {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Bound => "bound",
            Self::AlreadyBound(_) => "already_bound",
            Self::PodGone => "pod_gone",
            Self::Failed(_) => "error",
        }
    }
}

/// The `v1/Binding` object sent for `binding`. `metadata.uid` is the UID of
/// the pod the decision was made for: the API server then refuses (409
/// "Precondition failed: UID in precondition") to bind a pod recreated under
/// the same name meanwhile, which nobody has evaluated.
pub fn binding_object(binding: &Binding) -> ApiBinding {
    ApiBinding {
        metadata: ObjectMeta {
            name: Some(binding.pod.name.clone()),
            namespace: Some(binding.pod.namespace.clone()),
            uid: Some(binding.uid.clone()).filter(|u| !u.is_empty()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(binding.node.clone()),
            ..Default::default()
        },
    }
}

/// Issues one bind. Never panics; classifies the result.
pub async fn bind(client: &Client, binding: &Binding) -> BindOutcome {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &binding.pod.namespace);
    let body = binding_object(binding);
    match pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &binding.pod.name,
            &PostParams::default(),
            &body,
        )
        .await
    {
        Ok(_) => BindOutcome::Bound,
        Err(kube::Error::Api(status)) if status.code == 409 && is_uid_precondition(&status) => {
            BindOutcome::PodGone
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            BindOutcome::AlreadyBound(status.message.clone())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => BindOutcome::PodGone,
        Err(err) => BindOutcome::Failed(err),
    }
}

/// Whether a 409 says the object's UID is not the one in the precondition
/// (the pod was deleted and recreated under the same name): the API
/// server's "Precondition failed: UID in precondition: …" or the Eviction
/// API's "The object might have been deleted and then recreated".
pub fn is_uid_precondition(status: &kube::core::Status) -> bool {
    let m = &status.message;
    m.contains("UID in precondition") || m.contains("might have been deleted and then recreated")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ApiMock, status_json};
    use posture_core::PodKey;
    use serde_json::json;

    fn b() -> Binding {
        Binding {
            pod: PodKey::new("default", "posture-pi1-x"),
            uid: "6f1c2a10-3b7e-4d2c-9a55-2f0e8c4b7d31".into(),
            node: "agx-desktop".into(),
        }
    }

    #[tokio::test]
    async fn sends_the_exact_binding_request() {
        let (client, mut mock) = ApiMock::new();
        let server = tokio::spawn(async move {
            let req = mock.expect_bind("default", "posture-pi1-x").await;
            assert_eq!(
                req.body,
                json!({
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": "posture-pi1-x", "namespace": "default",
                        "uid": "6f1c2a10-3b7e-4d2c-9a55-2f0e8c4b7d31"},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": "agx-desktop"}
                })
            );
            req.respond(201, status_json(201, "Success", ""));
        });
        assert!(matches!(bind(&client, &b()).await, BindOutcome::Bound));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn conflict_is_a_skip_and_not_found_is_gone() {
        let (client, mut mock) = ApiMock::new();
        let server = tokio::spawn(async move {
            mock.next().await.respond(
                409,
                status_json(
                    409,
                    "Conflict",
                    "pod posture-pi1-x is already assigned to node \"orin\"",
                ),
            );
            mock.next().await.respond(
                404,
                status_json(404, "NotFound", "pods \"posture-pi1-x\" not found"),
            );
            mock.next().await.respond(
                409,
                status_json(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled on pods/binding \"posture-pi1-x\": StorageError: invalid object, Code: 4, Key: /registry/pods/default/posture-pi1-x, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: 6f1c2a10-3b7e-4d2c-9a55-2f0e8c4b7d31, UID in object meta: 0b9d4e7c-1111-4f00-8c1e-3d2a9b8e6f42",
                ),
            );
            mock.next().await.respond(
                500,
                status_json(500, "InternalError", "etcdserver: request timed out"),
            );
        });
        match bind(&client, &b()).await {
            BindOutcome::AlreadyBound(msg) => assert!(msg.contains("already assigned")),
            other => panic!("expected AlreadyBound, got {other:?}"),
        }
        assert!(matches!(bind(&client, &b()).await, BindOutcome::PodGone));
        assert!(
            matches!(bind(&client, &b()).await, BindOutcome::PodGone),
            "a recreated pod (UID precondition failed) is gone, not bound by someone else"
        );
        assert!(matches!(bind(&client, &b()).await, BindOutcome::Failed(_)));
        server.await.unwrap();
    }
}
