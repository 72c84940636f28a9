//! Carrying out preemption plans ([`posture_core::Decision::Preempt`]): evict
//! the victims through the Eviction API and record the preemptor's
//! `status.nominatedNodeName`. Deciding who to evict is the core's job; this
//! module only performs the two API calls and says what the server answered.
//!
//! ```text
//! Decision::Preempt ─► nominate(preemptor → node)   PATCH pods/{name}/status (merge patch)
//!                   └► evict(victim) per victim      POST  pods/{name}/eviction (policy/v1 Eviction)
//!                         201 → Evicted · 404 → AlreadyGone · 429 → Refused (PodDisruptionBudget)
//! ```
//!
//! Evicting (rather than deleting) lets the API server enforce
//! PodDisruptionBudgets: a refusal is an answer, not an error, and the loop
//! backs off or plans again.
//!
//! Note on retries: a `kube::Client` built from a `kube::Config` retries 429
//! answers by default (`Config::default_retry`), honouring `Retry-After`, up to
//! 15 times. A PDB refusal is a 429, so the client handed to [`evict`] should be
//! built with retries off ([`client_without_retry`]); otherwise one refused
//! eviction holds the caller for minutes before it learns the answer.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction as EvictionBody;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::Status;
use posture_core::model::PodKey;
use posture_core::{Eviction, Nomination};
use serde_json::json;

/// What the API server answered to an eviction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvictOutcome {
    /// Accepted: the pod is being deleted (it turns terminating, then goes).
    Evicted,
    /// The pod no longer exists (404): the room is free already.
    AlreadyGone,
    /// Refused (429), normally because a PodDisruptionBudget allows no more
    /// disruptions now; `reason` is the server's explanation.
    Refused {
        /// The server's explanation (the PodDisruptionBudget).
        reason: String,
    },
}

/// A preemption API call failed for a reason other than the expected answers.
/// Sources are boxed: `kube::Error` is large and these travel in `Result`s.
#[derive(Debug, thiserror::Error)]
pub enum PreemptError {
    /// The eviction request failed (not 201, 404 or 429).
    #[error("evicting pod {pod} from node {node} failed")]
    Evict {
        /// The victim.
        pod: PodKey,
        /// Its node.
        node: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Setting or clearing `status.nominatedNodeName` failed.
    #[error("setting nominatedNodeName of pod {pod} to {node:?} failed")]
    Nominate {
        /// The preemptor.
        pod: PodKey,
        /// The node (`None`: clearing).
        node: Option<String>,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The client could not be built.
    #[error("building a Kubernetes client without retries failed")]
    Client(#[source] Box<kube::Error>),
}

/// A client for preemption calls: the same configuration with the default
/// retry of 429/503/504 switched off, so a PodDisruptionBudget refusal comes
/// back at once as [`EvictOutcome::Refused`].
pub fn client_without_retry(mut config: kube::Config) -> Result<kube::Client, PreemptError> {
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| PreemptError::Client(Box::new(e)))
}

/// The `policy/v1` Eviction sent for `e`: `deleteOptions.preconditions.uid`
/// names the victim the plan chose, so a pod recreated under its name meanwhile
/// is refused (409) rather than evicted.
pub fn eviction_object(e: &Eviction) -> EvictionBody {
    EvictionBody {
        metadata: ObjectMeta {
            name: Some(e.pod.name.clone()),
            namespace: Some(e.pod.namespace.clone()),
            ..Default::default()
        },
        delete_options: Some(e.uid.clone())
            .filter(|u| !u.is_empty())
            .map(|uid| DeleteOptions {
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            }),
    }
}

/// Evicts `e.pod` through the Eviction API (`POST
/// /api/v1/namespaces/{ns}/pods/{name}/eviction` with a `policy/v1` Eviction).
/// 404, and 409 because the UID precondition failed (the victim was
/// replaced by a new pod of the same name), are [`EvictOutcome::AlreadyGone`].
pub async fn evict(client: &kube::Client, e: &Eviction) -> Result<EvictOutcome, PreemptError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &e.pod.namespace);
    let body = eviction_object(e);
    let answer = api
        .create_subresource::<_, Status>("eviction", &e.pod.name, &PostParams::default(), &body)
        .await;
    match answer {
        Ok(_) => {
            tracing::info!(pod = %e.pod, node = %e.node, preemptor = %e.preemptor, "evicted for preemption");
            Ok(EvictOutcome::Evicted)
        }
        Err(kube::Error::Api(status))
            if status.code == 404
                || (status.code == 409 && super::binder::is_uid_precondition(&status)) =>
        {
            tracing::debug!(pod = %e.pod, node = %e.node, "victim already gone");
            Ok(EvictOutcome::AlreadyGone)
        }
        Err(kube::Error::Api(status)) if status.code == 429 => {
            let reason = refusal_reason(&status);
            tracing::info!(pod = %e.pod, node = %e.node, preemptor = %e.preemptor, %reason, "eviction refused");
            Ok(EvictOutcome::Refused { reason })
        }
        Err(source) => Err(PreemptError::Evict {
            pod: e.pod.clone(),
            node: e.node.clone(),
            source: Box::new(source),
        }),
    }
}

/// The server's message, with the causes it lists (the PDB that refused).
fn refusal_reason(status: &Status) -> String {
    let causes: Vec<&str> = status
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .map(|c| c.message.as_str())
        .filter(|m| !m.is_empty())
        .collect();
    match (status.message.is_empty(), causes.is_empty()) {
        (false, true) => status.message.clone(),
        (true, true) => format!("refused ({})", status.reason),
        (true, false) => causes.join("; "),
        (false, false) => format!("{} {}", status.message, causes.join("; ")),
    }
}

/// Sets `status.nominatedNodeName` of `n.pod` to `n.node` (merge patch on the
/// `pods/status` subresource), so other schedulers' and our own lower-priority
/// pods see the node as held. A pod that is gone needs no nomination.
pub async fn nominate(client: &kube::Client, n: &Nomination) -> Result<(), PreemptError> {
    patch_nomination(client, &n.pod, Some(&n.node)).await
}

/// Clears `status.nominatedNodeName` of `pod` (its plan was abandoned, e.g. an
/// eviction was refused), so the node is no longer held for it.
pub async fn clear_nomination(client: &kube::Client, pod: &PodKey) -> Result<(), PreemptError> {
    patch_nomination(client, pod, None).await
}

async fn patch_nomination(
    client: &kube::Client,
    pod: &PodKey,
    node: Option<&str>,
) -> Result<(), PreemptError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let patch = Patch::Merge(json!({ "status": { "nominatedNodeName": node } }));
    match api
        .patch_status(&pod.name, &PatchParams::default(), &patch)
        .await
    {
        Ok(_) => {
            tracing::debug!(pod = %pod, node = ?node, "nominatedNodeName set");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::debug!(pod = %pod, "pod gone; nothing to nominate");
            Ok(())
        }
        Err(source) => Err(PreemptError::Nominate {
            pod: pod.clone(),
            node: node.map(str::to_string),
            source: Box::new(source),
        }),
    }
}

#[cfg(test)]
mod tests {
    //! Recorded API exchanges: a `tower-test` mock behind a real
    //! `kube::Client`; each test checks the exact request and answers as
    //! the API server does.

    use super::*;
    use http::{Request, Response};
    use http_body_util::BodyExt;
    use kube::client::Body;
    use serde_json::Value;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn mock() -> (kube::Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "default"), handle)
    }

    /// Receives one request, checks it and answers `status` with `answer`.
    async fn exchange(
        handle: &mut Handle,
        method: &str,
        path: &str,
        content_type: &str,
        body: Value,
        status: u16,
        answer: Value,
    ) {
        let (request, send) =
            tokio::time::timeout(std::time::Duration::from_secs(10), handle.next_request())
                .await
                .expect("a request within 10 s")
                .expect("client alive");
        assert_eq!(request.method().as_str(), method);
        assert_eq!(request.uri().path(), path);
        assert_eq!(
            request
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some(content_type)
        );
        let bytes = request
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let got: Value = serde_json::from_slice(&bytes).expect("JSON body");
        assert_eq!(got, body);
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).expect("json")))
            .expect("response");
        send.send_response(response);
    }

    fn eviction() -> Eviction {
        Eviction {
            pod: PodKey::new("default", "low-1"),
            uid: "3c9e1f7a-0d2b-4e55-a1c4-7b8f2e6d9a03".into(),
            node: "worker-1".into(),
            preemptor: PodKey::new("default", "high"),
        }
    }

    fn eviction_body() -> Value {
        json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": { "name": "low-1", "namespace": "default" },
            "deleteOptions": { "preconditions": { "uid": "3c9e1f7a-0d2b-4e55-a1c4-7b8f2e6d9a03" } }
        })
    }

    const EVICTION_PATH: &str = "/api/v1/namespaces/default/pods/low-1/eviction";

    #[tokio::test]
    async fn eviction_posts_a_policy_v1_eviction() {
        let (client, mut handle) = mock();
        let call = tokio::spawn(async move { evict(&client, &eviction()).await });
        let created = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        exchange(
            &mut handle,
            "POST",
            EVICTION_PATH,
            "application/json",
            eviction_body(),
            201,
            created,
        )
        .await;
        assert_eq!(call.await.unwrap().unwrap(), EvictOutcome::Evicted);
    }

    #[tokio::test]
    async fn eviction_refused_by_a_disruption_budget_is_an_answer() {
        let (client, mut handle) = mock();
        let call = tokio::spawn(async move { evict(&client, &eviction()).await });
        let refused = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "reason": "TooManyRequests",
            "details": {
                "causes": [{"reason": "DisruptionBudget", "message": "The disruption budget low-pdb needs 1 healthy pods and has 1 currently"}],
                "retryAfterSeconds": 10
            },
            "code": 429
        });
        exchange(
            &mut handle,
            "POST",
            EVICTION_PATH,
            "application/json",
            eviction_body(),
            429,
            refused,
        )
        .await;
        assert_eq!(
            call.await.unwrap().unwrap(),
            EvictOutcome::Refused {
                reason: "Cannot evict pod as it would violate the pod's disruption budget. \
                         The disruption budget low-pdb needs 1 healthy pods and has 1 currently"
                    .into()
            }
        );
    }

    #[tokio::test]
    async fn eviction_of_a_vanished_pod_is_already_gone() {
        let (client, mut handle) = mock();
        let call = tokio::spawn(async move { evict(&client, &eviction()).await });
        let not_found = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "pods \"low-1\" not found", "reason": "NotFound",
            "details": {"name": "low-1", "kind": "pods"}, "code": 404
        });
        exchange(
            &mut handle,
            "POST",
            EVICTION_PATH,
            "application/json",
            eviction_body(),
            404,
            not_found,
        )
        .await;
        assert_eq!(call.await.unwrap().unwrap(), EvictOutcome::AlreadyGone);
    }

    /// Issue 11.6: the victim was deleted and a pod of the same name created
    /// meanwhile; the UID precondition makes the API server refuse (409), and
    /// the new pod is left alone.
    #[tokio::test]
    async fn eviction_of_a_recreated_victim_is_refused_by_its_uid_precondition() {
        let (client, mut handle) = mock();
        let call = tokio::spawn(async move { evict(&client, &eviction()).await });
        let conflict = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Operation cannot be fulfilled on Pod \"low-1\": the UID in the precondition (3c9e1f7a-0d2b-4e55-a1c4-7b8f2e6d9a03) does not match the UID in record (8a1b2c3d-0000-4e55-a1c4-7b8f2e6d9a03). The object might have been deleted and then recreated",
            "reason": "Conflict", "details": {"name": "low-1", "kind": "Pod"}, "code": 409
        });
        exchange(
            &mut handle,
            "POST",
            EVICTION_PATH,
            "application/json",
            eviction_body(),
            409,
            conflict,
        )
        .await;
        assert_eq!(call.await.unwrap().unwrap(), EvictOutcome::AlreadyGone);
    }

    #[tokio::test]
    async fn other_eviction_failures_are_errors_with_their_source() {
        let (client, mut handle) = mock();
        let call = tokio::spawn(async move { evict(&client, &eviction()).await });
        let forbidden = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "pods \"low-1\" is forbidden: User \"system:serviceaccount:posture:scheduler\" cannot create resource \"pods/eviction\"",
            "reason": "Forbidden", "details": {"name": "low-1", "kind": "pods"}, "code": 403
        });
        exchange(
            &mut handle,
            "POST",
            EVICTION_PATH,
            "application/json",
            eviction_body(),
            403,
            forbidden,
        )
        .await;
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "evicting pod default/low-1 from node worker-1 failed"
        );
        let source = std::error::Error::source(&err).expect("source").to_string();
        assert!(source.contains("cannot create resource"), "{source}");
    }

    fn pod_json(nominated: Option<&str>) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "high", "namespace": "default", "uid": "7d1c0c2e-5b43-4c5e-9d7e-0f6f4b1c2a10", "resourceVersion": "4242"},
            "spec": {"schedulerName": "posture-priority", "containers": [{"name": "app", "image": "busybox"}]},
            "status": {"phase": "Pending", "nominatedNodeName": nominated}
        })
    }

    #[tokio::test]
    async fn nomination_is_a_merge_patch_on_the_status_subresource() {
        let (client, mut handle) = mock();
        let n = Nomination {
            pod: PodKey::new("default", "high"),
            node: "worker-1".into(),
        };
        let call = tokio::spawn(async move { nominate(&client, &n).await });
        exchange(
            &mut handle,
            "PATCH",
            "/api/v1/namespaces/default/pods/high/status",
            "application/merge-patch+json",
            json!({"status": {"nominatedNodeName": "worker-1"}}),
            200,
            pod_json(Some("worker-1")),
        )
        .await;
        call.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn clearing_a_nomination_sends_null() {
        let (client, mut handle) = mock();
        let call = tokio::spawn(async move {
            clear_nomination(&client, &PodKey::new("default", "high")).await
        });
        exchange(
            &mut handle,
            "PATCH",
            "/api/v1/namespaces/default/pods/high/status",
            "application/merge-patch+json",
            json!({"status": {"nominatedNodeName": null}}),
            200,
            pod_json(None),
        )
        .await;
        call.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn nominating_a_deleted_pod_is_not_an_error_but_a_server_error_is() {
        let (client, mut handle) = mock();
        let n = Nomination {
            pod: PodKey::new("default", "high"),
            node: "worker-1".into(),
        };
        let (c2, n2) = (client.clone(), n.clone());
        let call = tokio::spawn(async move { nominate(&client, &n).await });
        let not_found = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "pods \"high\" not found", "reason": "NotFound", "details": {"name": "high", "kind": "pods"}, "code": 404
        });
        let path = "/api/v1/namespaces/default/pods/high/status";
        let body = json!({"status": {"nominatedNodeName": "worker-1"}});
        exchange(
            &mut handle,
            "PATCH",
            path,
            "application/merge-patch+json",
            body.clone(),
            404,
            not_found,
        )
        .await;
        call.await.unwrap().unwrap();

        let call = tokio::spawn(async move { nominate(&c2, &n2).await });
        let unavailable = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500
        });
        exchange(
            &mut handle,
            "PATCH",
            path,
            "application/merge-patch+json",
            body,
            500,
            unavailable,
        )
        .await;
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(err, PreemptError::Nominate { node: Some(ref n), .. } if n == "worker-1"),
            "{err:?}"
        );
    }
}
