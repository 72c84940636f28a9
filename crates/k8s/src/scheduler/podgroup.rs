//! PodGroup objects of the scheduler-plugins coscheduling CRD
//! (`scheduling.x-k8s.io/v1alpha1`, kind `PodGroup`): where that CRD is
//! installed, a gang's size can come from the PodGroup's `spec.minMember`
//! instead of the `pod-group-min-member` annotation on every pod.
//!
//! ```text
//! list / watch podgroups ─► parse() ─► Cluster::set_group_min_member(ns, name, Some(n))
//!        (404: CRD absent → nothing to do)      delete event ─► set_group_min_member(ns, name, None)
//! ```
//!
//! The CRD is optional, so there is no generated type: objects are read as
//! [`DynamicObject`]s through [`api_resource`] and only `spec.minMember` is
//! looked at.

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use posture_core::Cluster;

/// API group of the coscheduling PodGroup CRD.
pub const GROUP: &str = "scheduling.x-k8s.io";
/// Served version read here.
pub const VERSION: &str = "v1alpha1";
/// Kind.
pub const KIND: &str = "PodGroup";
/// Resource name in URLs.
pub const PLURAL: &str = "podgroups";

/// The dynamic type to build an `Api<DynamicObject>` (or a watcher) with.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// The part of a PodGroup the scheduler uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodGroupMin {
    /// Namespace of the PodGroup.
    pub namespace: String,
    /// Name of the PodGroup (the gang name).
    pub name: String,
    /// `spec.minMember`.
    pub min_member: u32,
}

/// A PodGroup could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PodGroupError {
    /// `spec.minMember` is present but not a non-negative integer.
    #[error("PodGroup {namespace}/{name}: spec.minMember {value} is not a non-negative integer")]
    InvalidMinMember {
        /// Namespace of the PodGroup.
        namespace: String,
        /// Name of the PodGroup.
        name: String,
        /// The value found.
        value: String,
    },
    /// The object has no name or namespace (never from a real API server).
    #[error("PodGroup without a name or namespace")]
    Unnamed,
    /// Listing PodGroups failed (other than the CRD being absent).
    #[error("listing PodGroups failed")]
    List(#[source] Box<kube::Error>),
}

/// Reads `spec.minMember`; `Ok(None)` when the object does not set it.
pub fn parse(obj: &DynamicObject) -> Result<Option<PodGroupMin>, PodGroupError> {
    let (Some(name), Some(namespace)) = (obj.metadata.name.clone(), obj.metadata.namespace.clone())
    else {
        return Err(PodGroupError::Unnamed);
    };
    let Some(value) = obj.data.get("spec").and_then(|s| s.get("minMember")) else {
        return Ok(None);
    };
    match value.as_u64().and_then(|v| u32::try_from(v).ok()) {
        Some(min_member) => Ok(Some(PodGroupMin {
            namespace,
            name,
            min_member,
        })),
        None => Err(PodGroupError::InvalidMinMember {
            namespace,
            name,
            value: value.to_string(),
        }),
    }
}

/// Lists the PodGroups in `namespace` (all namespaces with `None`). `Ok(None)`
/// when the CRD is not installed (the API answers 404): gang sizes then come
/// from annotations only. Objects that cannot be read are skipped with a
/// warning, never fail the list.
pub async fn list(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Result<Option<Vec<PodGroupMin>>, PodGroupError> {
    let ar = api_resource();
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let objects = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::info!(
                "PodGroup CRD ({GROUP}/{VERSION}) not installed; gang sizes from annotations only"
            );
            return Ok(None);
        }
        Err(e) => return Err(PodGroupError::List(Box::new(e))),
    };
    let mut groups = Vec::with_capacity(objects.len());
    for obj in &objects {
        match parse(obj) {
            Ok(Some(g)) => groups.push(g),
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "skipping PodGroup"),
        }
    }
    Ok(Some(groups))
}

/// Applies one watch event to the cluster index: an applied object sets its
/// `minMember` (or clears it when absent or invalid), a deleted one clears it.
pub fn apply_event(cluster: &mut Cluster, obj: &DynamicObject, deleted: bool) {
    let (Some(name), Some(namespace)) = (
        obj.metadata.name.as_deref(),
        obj.metadata.namespace.as_deref(),
    ) else {
        return;
    };
    if deleted {
        cluster.set_group_min_member(namespace, name, None);
        return;
    }
    match parse(obj) {
        Ok(g) => cluster.set_group_min_member(namespace, name, g.map(|g| g.min_member)),
        Err(err) => {
            tracing::warn!(%err, "ignoring PodGroup minMember");
            cluster.set_group_min_member(namespace, name, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;

    fn object(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "scheduling.x-k8s.io/v1alpha1",
            "kind": "PodGroup",
            "metadata": {"name": "trio", "namespace": "default", "uid": "3f0c", "resourceVersion": "77"},
            "spec": spec
        }))
        .expect("a PodGroup")
    }

    #[test]
    fn min_member_is_read_and_validated() {
        assert_eq!(
            parse(&object(
                json!({"minMember": 3, "scheduleTimeoutSeconds": 10})
            ))
            .unwrap(),
            Some(PodGroupMin {
                namespace: "default".into(),
                name: "trio".into(),
                min_member: 3
            })
        );
        assert_eq!(parse(&object(json!({}))).unwrap(), None);
        let err = parse(&object(json!({"minMember": -1}))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PodGroup default/trio: spec.minMember -1 is not a non-negative integer"
        );
    }

    #[test]
    fn watch_events_update_the_index() {
        let mut c = Cluster::new();
        apply_event(&mut c, &object(json!({"minMember": 4})), false);
        assert_eq!(c.group_min_member("default", "trio"), Some(4));
        apply_event(&mut c, &object(json!({"minMember": "many"})), false);
        assert_eq!(c.group_min_member("default", "trio"), None);
        apply_event(&mut c, &object(json!({"minMember": 2})), false);
        apply_event(&mut c, &object(json!({"minMember": 2})), true);
        assert_eq!(c.group_min_member("default", "trio"), None);
    }

    async fn answer(
        handle: &mut tower_test::mock::Handle<Request<Body>, Response<Body>>,
        path: &str,
        status: u16,
        body: serde_json::Value,
    ) {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), "GET");
        assert_eq!(request.uri().path(), path);
        send.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("response"),
        );
    }

    #[tokio::test]
    async fn listing_reads_min_members_and_skips_bad_objects() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let call = tokio::spawn(async move { list(&client, Some("default")).await });
        let item = |name: &str, spec: serde_json::Value| {
            json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
                   "metadata": {"name": name, "namespace": "default", "resourceVersion": "5"}, "spec": spec})
        };
        answer(
            &mut handle,
            "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/default/podgroups",
            200,
            json!({
                "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroupList",
                "metadata": {"resourceVersion": "80"},
                "items": [item("trio", json!({"minMember": 3})), item("bad", json!({"minMember": 1.5})), item("open", json!({}))]
            }),
        )
        .await;
        let groups = call.await.unwrap().unwrap().expect("CRD installed");
        assert_eq!(
            groups,
            vec![PodGroupMin {
                namespace: "default".into(),
                name: "trio".into(),
                min_member: 3
            }]
        );
    }

    #[tokio::test]
    async fn an_absent_crd_is_not_an_error() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let call = tokio::spawn(async move { list(&client, None).await });
        answer(
            &mut handle,
            "/apis/scheduling.x-k8s.io/v1alpha1/podgroups",
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "the server could not find the requested resource", "reason": "NotFound",
                   "details": {}, "code": 404}),
        )
        .await;
        assert!(call.await.unwrap().unwrap().is_none());
    }
}
