//! Cluster-held state of the `gpu-least-loaded` profile: the node chosen
//! last, kept in a ConfigMap so a restarted (or rescheduled) scheduler keeps
//! preferring it on ties instead of flapping.
//!
//! ```text
//!  start:       GpuStateStore::load()  ─► profile.restore_last_chosen(..)
//!  after bind:  store.save_if_changed(profile.last_chosen())   (SSA, only on change)
//! ```
//!
//! [`PersistLastChosen`] does the second step for the scheduler loop: it
//! wraps the profile, and after each confirmed bind hands the last chosen
//! node to a writer task through a `watch` channel (the loop never waits on
//! the API server for this; only the newest value is written).
//!
//! The ConfigMap (default `posture-farm-gpu-state`, in the scheduler's
//! namespace) holds one key, `lastChosenNode`. It is written with
//! server-side apply (field manager `posture-farm`, force), which creates it
//! when absent. A failed save is returned to the caller to log; the next
//! change retries, and a lost value only costs one tie-break.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use posture_core::cluster::Cluster;
use posture_core::error_chain;
use posture_core::framework::{Binding, Decision, Profile, SchedulingContext};
use posture_core::model::{Millis, PodInfo};
use posture_core::policy::gpu_least_loaded::GpuLeastLoaded;
use serde_json::json;
use tokio::sync::watch;

use crate::workload::FIELD_MANAGER;

/// Pause before retrying a failed write (the API server may be restarting).
const RETRY_AFTER: Duration = Duration::from_secs(5);

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

/// The `gpu-least-loaded` profile with its last chosen node persisted: a
/// drop-in [`Profile`] for the scheduler loop.
pub struct PersistLastChosen<P = GpuLeastLoaded> {
    inner: P,
    tx: watch::Sender<Option<String>>,
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

impl<P: RemembersLastChosen> PersistLastChosen<P> {
    /// Loads the remembered node into `profile` (a failed read is logged and
    /// ignored: it only costs a tie-break), then starts the writer task.
    /// Must be called inside a Tokio runtime; the task ends when the
    /// returned profile is dropped.
    pub async fn start(mut profile: P, mut store: GpuStateStore) -> Self {
        match store.load().await {
            Ok(node) => {
                tracing::info!(node = ?node, configmap = %store.name, "restored last chosen GPU node");
                profile.restore_last_chosen(node);
            }
            Err(e) => tracing::warn!(
                error = %error_chain(&e),
                "could not read the last chosen GPU node; starting without it"
            ),
        }
        let (tx, rx) = watch::channel(profile.last_chosen().map(str::to_string));
        tokio::spawn(write_loop(store, rx));
        Self { inner: profile, tx }
    }

    /// The wrapped profile.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    fn publish(&self) {
        let now = self.inner.last_chosen().map(str::to_string);
        self.tx.send_if_modified(|v| {
            let changed = *v != now;
            if changed {
                v.clone_from(&now);
            }
            changed
        });
    }
}

/// Writes each new value; on failure waits and retries the newest value.
async fn write_loop(mut store: GpuStateStore, mut rx: watch::Receiver<Option<String>>) {
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        loop {
            let value = rx.borrow_and_update().clone();
            match store.save_if_changed(value.as_deref()).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "could not save the last chosen GPU node; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                    if rx.has_changed().is_err() {
                        return;
                    }
                }
            }
        }
    }
}

impl<P: RemembersLastChosen> Profile for PersistLastChosen<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn gang_aware(&self) -> bool {
        self.inner.gang_aware()
    }

    fn schedule(
        &mut self,
        cluster: &Cluster,
        unit: &[&PodInfo],
        ctx: &SchedulingContext<'_>,
    ) -> Decision {
        self.inner.schedule(cluster, unit, ctx)
    }

    fn bound(&mut self, binding: &Binding, now: Millis) {
        self.inner.bound(binding, now);
        self.publish();
    }

    fn bind_failed(&mut self, binding: &Binding) {
        self.inner.bind_failed(binding);
    }

    fn gpu_may_fit_more(
        &self,
        before: Option<&posture_core::gpu::GpuSnapshot>,
        after: &posture_core::gpu::GpuSnapshot,
    ) -> bool {
        self.inner.gpu_may_fit_more(before, after)
    }

    fn config_warnings(&self, cluster: &Cluster) -> Vec<String> {
        self.inner.config_warnings(cluster)
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
    async fn the_wrapped_profile_restores_and_persists_after_binds() {
        use posture_core::gpu::GpuSnapshot;
        use posture_core::model::{NodeInfo, PodKey};
        use posture_core::policy::gpu_least_loaded::GpuLeastLoadedConfig;

        let (client, mut mock) = ApiMock::new();
        let server = tokio::spawn(async move {
            let r = mock.next().await;
            assert_eq!(r.method, "GET");
            r.respond(200, cm("orin"));
            // The first bind goes to agx (idlest): one write.
            let r = mock.next().await;
            assert_eq!(r.method, "PATCH");
            assert_eq!(r.content_type, "application/apply-patch+yaml");
            assert_eq!(r.body["data"], json!({"lastChosenNode": "agx"}));
            r.respond(200, cm("agx"));
            mock
        });
        let store = GpuStateStore::new(client, "posture-farm", DEFAULT_CONFIGMAP);
        let mut p =
            PersistLastChosen::start(GpuLeastLoaded::new(GpuLeastLoadedConfig::default()), store)
                .await;
        assert_eq!(p.inner().last_chosen(), Some("orin"), "restored");
        assert_eq!(p.name(), "gpu-least-loaded");

        let mut cluster = Cluster::new();
        for n in ["agx", "orin"] {
            cluster.upsert_node(NodeInfo {
                name: n.into(),
                ready: true,
                allocatable: posture_core::model::Resources {
                    pods: 10,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        let snap = GpuSnapshot::from_fresh(0, &[("agx", 10.0), ("orin", 40.0)]);
        let pod = PodInfo {
            key: PodKey::new("posture", "a"),
            ours: true,
            ..Default::default()
        };
        let ctx = SchedulingContext {
            now: 1,
            gpu: Some(&snap),
        };
        let Decision::Bind(b) = p.schedule(&cluster, &[&pod], &ctx) else {
            panic!("expected a bind")
        };
        assert_eq!(b[0].node, "agx");
        p.bound(&b[0], 2);
        let mut mock = server.await.unwrap();
        // Binding to the same node again writes nothing.
        p.bound(&b[0], 3);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(100), mock.next())
                .await
                .is_err(),
            "no further request"
        );
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

    /// A profile whose configuration is wrong for the cluster, to see its
    /// warning through the wrapper.
    struct Misconfigured {
        last: Option<String>,
    }

    impl Profile for Misconfigured {
        fn name(&self) -> &'static str {
            "misconfigured"
        }
        fn schedule(
            &mut self,
            _cluster: &Cluster,
            _unit: &[&PodInfo],
            ctx: &SchedulingContext<'_>,
        ) -> Decision {
            Decision::Wait {
                retry_at: ctx.now,
                message: "never".into(),
            }
        }
        fn config_warnings(&self, _cluster: &Cluster) -> Vec<String> {
            vec!["node order names node ghost, which does not exist".into()]
        }
    }

    impl RemembersLastChosen for Misconfigured {
        fn last_chosen(&self) -> Option<&str> {
            self.last.as_deref()
        }
        fn restore_last_chosen(&mut self, node: Option<String>) {
            self.last = node;
        }
    }

    #[tokio::test]
    async fn the_wrapper_forwards_config_warnings() {
        let (client, mut mock) = ApiMock::new();
        let server = tokio::spawn(async move {
            mock.expect_get(&format!(
                "/api/v1/namespaces/posture-farm/configmaps/{DEFAULT_CONFIGMAP}"
            ))
            .await
            .respond(404, status_json(404, "NotFound", "not found"));
        });
        let store = GpuStateStore::new(client, "posture-farm", DEFAULT_CONFIGMAP);
        let p = PersistLastChosen::start(Misconfigured { last: None }, store).await;
        server.await.unwrap();
        assert_eq!(
            p.config_warnings(&Cluster::new()),
            ["node order names node ghost, which does not exist"]
        );
    }
}
