//! Cluster-held state of the `gpu-least-loaded` profile: the node chosen
//! last, kept in a ConfigMap so a restarted (or rescheduled) scheduler keeps
//! preferring it on ties instead of flapping.
//!
//! ```text
//!  start:       GpuStateStore::load()  ─► profile.restore_last_chosen(..)
//!  after bind:  store.save_if_changed(profile.last_chosen())   (SSA, only on change)
//! ```
//!
//! [`super::handover::HandOver`] does both steps for the scheduler loop
//! (and, with leader election, again at the start of each leader's term):
//! it wraps any [`RemembersLastChosen`] profile and hands each new value to
//! a writer task (the loop never waits on the API server for this; only the
//! newest value is written).
//!
//! The ConfigMap (default `posture-farm-gpu-state`, in the scheduler's
//! namespace) holds one key, `lastChosenNode`. It is written with
//! server-side apply (field manager `posture-farm`, force), which creates it
//! when absent. A failed save is returned to the caller to log; the next
//! change retries, and a lost value only costs one tie-break.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use posture_core::framework::Profile;
use posture_core::policy::gpu_least_loaded::GpuLeastLoaded;
use serde_json::json;

use crate::workload::FIELD_MANAGER;

/// Default ConfigMap name.
pub const DEFAULT_CONFIGMAP: &str = "posture-farm-gpu-state";
/// Data key holding the node name.
pub const LAST_CHOSEN_KEY: &str = "lastChosenNode";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The API server refused or failed the request.
    #[error("{what} ConfigMap {namespace}/{name}")]
    Api {
        /// `reading` or `writing`.
        what: &'static str,
        /// Namespace of the ConfigMap.
        namespace: String,
        /// Name of the ConfigMap.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Reads and writes the state ConfigMap; remembers what it last wrote so an
/// unchanged value costs no API call.
#[derive(Clone)]
pub struct GpuStateStore {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    saved: Option<Option<String>>,
}

impl GpuStateStore {
    /// A store for ConfigMap `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            saved: None,
        }
    }

    fn err(&self, what: &'static str) -> impl FnOnce(kube::Error) -> StateError + '_ {
        move |source| StateError::Api {
            what,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// The last chosen node, or `None` when the ConfigMap or key is absent.
    pub async fn load(&mut self) -> Result<Option<String>, StateError> {
        let cm = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(self.err("reading"))?;
        let node = cm
            .and_then(|cm| cm.data)
            .and_then(|mut d| d.remove(LAST_CHOSEN_KEY))
            .filter(|n| !n.is_empty());
        self.saved = Some(node.clone());
        Ok(node)
    }

    /// Writes `node` when it differs from what was last loaded or saved.
    /// Returns whether a write was made.
    pub async fn save_if_changed(&mut self, node: Option<&str>) -> Result<bool, StateError> {
        let node = node.filter(|n| !n.is_empty());
        if self.saved.as_ref().is_some_and(|s| s.as_deref() == node) {
            return Ok(false);
        }
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "labels": {"app.kubernetes.io/managed-by": "posture-farm"},
            },
            "data": {LAST_CHOSEN_KEY: node.unwrap_or("")},
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(self.err("writing"))?;
        self.saved = Some(node.map(str::to_string));
        Ok(true)
    }
}

/// A profile that remembers the node it chose last (a tie-break worth
/// keeping across restarts).
pub trait RemembersLastChosen: Profile {
    /// The node chosen last, if any.
    fn last_chosen(&self) -> Option<&str>;
    /// Restores the node chosen last (from the ConfigMap).
    fn restore_last_chosen(&mut self, node: Option<String>);
}

impl RemembersLastChosen for GpuLeastLoaded {
    fn last_chosen(&self) -> Option<&str> {
        GpuLeastLoaded::last_chosen(self)
    }

    fn restore_last_chosen(&mut self, node: Option<String>) {
        GpuLeastLoaded::restore_last_chosen(self, node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ApiMock, status_json};

    fn cm(node: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": DEFAULT_CONFIGMAP, "namespace": "posture-farm", "resourceVersion": "7"},
               "data": {LAST_CHOSEN_KEY: node}})
    }

    #[tokio::test]
    async fn load_missing_then_save_on_change_only() {
        let (client, mut mock) = ApiMock::new();
        let server = tokio::spawn(async move {
            let r = mock
                .expect_get("/api/v1/namespaces/posture-farm/configmaps/posture-farm-gpu-state")
                .await;
            r.respond(
                404,
                status_json(
                    404,
                    "NotFound",
                    "configmaps \"posture-farm-gpu-state\" not found",
                ),
            );

            let r = mock
                .expect_patch("/api/v1/namespaces/posture-farm/configmaps/posture-farm-gpu-state")
                .await;
            assert_eq!(r.query, "&force=true&fieldManager=posture-farm");
            assert_eq!(r.content_type, "application/apply-patch+yaml");
            assert_eq!(r.body["data"], json!({"lastChosenNode": "agx"}));
            assert_eq!(r.body["kind"], "ConfigMap");
            r.respond(201, cm("agx"));

            let r = mock.next().await;
            assert_eq!(r.method, "PATCH");
            assert_eq!(r.body["data"], json!({"lastChosenNode": "orin"}));
            r.respond(
                403,
                status_json(403, "Forbidden", "configmaps is forbidden: cannot patch"),
            );
            let r = mock.next().await;
            assert_eq!(r.body["data"], json!({"lastChosenNode": "orin"}));
            r.respond(200, cm("orin"));
        });
        let mut store = GpuStateStore::new(client, "posture-farm", DEFAULT_CONFIGMAP);
        assert_eq!(store.load().await.unwrap(), None);
        assert!(store.save_if_changed(Some("agx")).await.unwrap());
        assert!(
            !store.save_if_changed(Some("agx")).await.unwrap(),
            "no call"
        );
        let err = store.save_if_changed(Some("orin")).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("writing ConfigMap posture-farm/"),
            "{err}"
        );
        // The failed write is retried on the next save.
        assert!(store.save_if_changed(Some("orin")).await.unwrap());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn load_existing_value_avoids_a_redundant_write() {
        let (client, mut mock) = ApiMock::new();
        let server = tokio::spawn(async move {
            let r = mock.next().await;
            assert_eq!(r.method, "GET");
            r.respond(200, cm("xavier"));
        });
        let mut store = GpuStateStore::new(client, "posture-farm", DEFAULT_CONFIGMAP);
        assert_eq!(store.load().await.unwrap().as_deref(), Some("xavier"));
        assert!(!store.save_if_changed(Some("xavier")).await.unwrap());
        server.await.unwrap();
    }
}
