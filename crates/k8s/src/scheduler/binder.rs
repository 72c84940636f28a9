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
    /// HTTP 404: the pod is gone. Nothing to do.
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

/// The `v1/Binding` object sent for `binding`.
pub fn binding_object(binding: &Binding) -> ApiBinding {
    ApiBinding {
        metadata: ObjectMeta {
            name: Some(binding.pod.name.clone()),
            namespace: Some(binding.pod.namespace.clone()),
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
        Err(kube::Error::Api(status)) if status.code == 409 => {
            BindOutcome::AlreadyBound(status.message.clone())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => BindOutcome::PodGone,
        Err(err) => BindOutcome::Failed(err),
    }
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
                    "metadata": {"name": "posture-pi1-x", "namespace": "default"},
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
                500,
                status_json(500, "InternalError", "etcdserver: request timed out"),
            );
        });
        match bind(&client, &b()).await {
            BindOutcome::AlreadyBound(msg) => assert!(msg.contains("already assigned")),
            other => panic!("expected AlreadyBound, got {other:?}"),
        }
        assert!(matches!(bind(&client, &b()).await, BindOutcome::PodGone));
        assert!(matches!(bind(&client, &b()).await, BindOutcome::Failed(_)));
        server.await.unwrap();
    }
}
