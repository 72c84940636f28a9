//! The watch streams that feed the loop: nodes, pods (ours, or every
//! unfinished pod, by [`PodScope`]) and, where the CRD exists, PodGroups.

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client};

use super::config::{PodScope, RuntimeConfig};

/// A stream of watch events.
pub type EventStream<K> = BoxStream<'static, Result<WatchEvent<K>, watcher::Error>>;

/// The watch streams for a configuration: nodes, and one pod stream.
pub fn watch_streams(
    client: &Client,
    cfg: &RuntimeConfig,
) -> (EventStream<Node>, Vec<EventStream<Pod>>) {
    let nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default());
    let pods = match cfg.scope {
        PodScope::Ours => {
            let api = match &cfg.namespace {
                Some(ns) => Api::<Pod>::namespaced(client.clone(), ns),
                None => Api::<Pod>::all(client.clone()),
            };
            let fields = format!("spec.schedulerName={}", cfg.scheduler_name);
            let mut ours = watcher::Config::default().fields(&fields);
            if let Some(sel) = cfg.label_selector.as_deref().filter(|s| !s.is_empty()) {
                ours = ours.labels(sel);
            }
            watcher(api, ours)
        }
        PodScope::All => {
            // Every namespace, every scheduler: what is bound anywhere takes
            // room on its node. Finished pods hold nothing (kube-scheduler's
            // selection).
            let unfinished =
                watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
            watcher(Api::<Pod>::all(client.clone()), unfinished)
        }
    };
    (nodes, vec![pods])
}

/// A watch of scheduler-plugins PodGroups (`scheduling.x-k8s.io`), for
/// clusters where that CRD is installed.
pub fn podgroup_stream(
    client: &Client,
    namespace: Option<&str>,
) -> EventStream<kube::api::DynamicObject> {
    let ar = super::podgroup::api_resource();
    let api: Api<kube::api::DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed()
}

fn watcher<K>(api: Api<K>, cfg: watcher::Config) -> EventStream<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    // Managed fields are large and never read: drop them to save memory
    // at 10,000 pods. `default_backoff` retries the watch forever when the
    // API server goes away, so the loop survives API server restarts.
    watcher::watcher(api, cfg)
        .default_backoff()
        .map(|ev| {
            ev.map(|e| {
                e.modify(|o| {
                    o.meta_mut().managed_fields = None;
                })
            })
        })
        .boxed()
}
