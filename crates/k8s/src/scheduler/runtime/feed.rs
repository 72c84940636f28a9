//! The loop's inputs: watch events update the cluster index and the queue
//! (level-triggered: each event is applied as the object's current state;
//! a re-list drops what it no longer shows).

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event as WatchEvent};
use posture_core::PodKey;

use super::{Scheduler, flight_key};
use crate::scheduler::convert;
use crate::scheduler::events::{PodRef, Report};

impl Scheduler {
    pub(super) fn on_node_event(&mut self, ev: Result<WatchEvent<Node>, watcher::Error>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(err) => {
                tracing::warn!(%err, "node watch error; retrying");
                return;
            }
        };
        match ev {
            WatchEvent::Init => self.init_seen_nodes.clear(),
            WatchEvent::InitApply(node) => {
                let info = convert::node_info(&node);
                self.init_seen_nodes.insert(info.name.clone());
                self.cluster.upsert_node(info);
            }
            WatchEvent::InitDone => {
                let gone: Vec<String> = self
                    .cluster
                    .nodes()
                    .filter(|n| !self.init_seen_nodes.contains(&n.info.name))
                    .map(|n| n.info.name.clone())
                    .collect();
                for n in gone {
                    self.cluster.remove_node(&n);
                }
                self.init_seen_nodes.clear();
                self.nodes_synced = true;
                self.queue.move_all_to_active();
                self.after_sync_change();
                self.publish_node_gauges();
            }
            WatchEvent::Apply(node) => {
                let change = self.cluster.upsert_node(convert::node_info(&node));
                if change.added || change.may_fit_more {
                    let moved = self.queue.move_all_to_active();
                    if moved > 0 {
                        tracing::debug!(moved, node = ?node.metadata.name, "node change: retrying waiting pods");
                    }
                }
                if change.added {
                    self.after_sync_change();
                }
            }
            WatchEvent::Delete(node) => {
                if let Some(name) = node.metadata.name.as_deref() {
                    self.cluster.remove_node(name);
                    self.after_sync_change();
                }
            }
        }
    }

    pub(super) fn on_podgroup_event(
        &mut self,
        ev: Result<WatchEvent<kube::api::DynamicObject>, watcher::Error>,
    ) {
        match ev {
            Ok(WatchEvent::Apply(obj)) | Ok(WatchEvent::InitApply(obj)) => {
                if let (Some(ns), Some(name)) = (&obj.metadata.namespace, &obj.metadata.name) {
                    self.init_seen_groups.insert((ns.clone(), name.clone()));
                }
                crate::scheduler::podgroup::apply_event(&mut self.cluster, &obj, false);
                // A gang's size may have changed: let waiting members try again.
                self.queue.move_all_to_active();
            }
            Ok(WatchEvent::Delete(obj)) => {
                crate::scheduler::podgroup::apply_event(&mut self.cluster, &obj, true)
            }
            Ok(WatchEvent::Init) => self.init_seen_groups.clear(),
            Ok(WatchEvent::InitDone) => {
                // A re-list: PodGroups deleted while the watch was down are
                // gone from it, so their sizes go too (issue 11.12).
                let seen = std::mem::take(&mut self.init_seen_groups);
                let mut purged = 0;
                for (ns, name) in self.cluster.group_min_member_keys() {
                    if !seen.contains(&(ns.clone(), name.clone())) {
                        self.cluster.set_group_min_member(&ns, &name, None);
                        purged += 1;
                    }
                }
                if purged > 0 {
                    self.queue.move_all_to_active();
                }
            }
            Err(err) => tracing::warn!(%err, "PodGroup watch error; retrying"),
        }
    }

    fn after_sync_change(&mut self) {
        let ready = self.synced();
        if let Some(cb) = &self.ready {
            cb(ready);
        }
        if !self.nodes_synced {
            return;
        }
        for w in self.profile.config_warnings(&self.cluster) {
            if self.warned_config.insert(w.clone()) {
                tracing::warn!("{w}");
            }
        }
    }

    pub(super) fn on_pod_event(
        &mut self,
        stream: usize,
        ev: Result<WatchEvent<Pod>, watcher::Error>,
    ) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(err) => {
                tracing::warn!(%err, "pod watch error; retrying");
                return;
            }
        };
        match ev {
            WatchEvent::Init => self.init_seen_pods[stream].clear(),
            WatchEvent::InitApply(pod) => {
                if let Some(key) = self.apply_pod(&pod) {
                    self.init_seen_pods[stream].insert(key);
                }
            }
            WatchEvent::InitDone => {
                let seen = std::mem::take(&mut self.init_seen_pods[stream]);
                // One stream shows every pod the loop knows; with two, the
                // first shows ours and the second the others.
                let single = self.init_seen_pods.len() == 1;
                let stale: Vec<PodKey> = self
                    .cluster
                    .pods()
                    .filter(|p| single || if stream == 0 { p.ours } else { !p.ours })
                    .filter(|p| {
                        !seen.contains(&p.key)
                            && !self.in_flight.contains_key(&flight_key(&p.key, &p.uid))
                    })
                    .map(|p| p.key.clone())
                    .collect();
                for k in stale {
                    self.forget_pod(&k);
                }
                self.pods_synced[stream] = true;
                self.after_sync_change();
            }
            WatchEvent::Apply(pod) => {
                self.apply_pod(&pod);
            }
            WatchEvent::Delete(pod) => {
                let info = convert::pod_info(&pod, &self.reader);
                // A Delete for an older pod of the same name leaves the
                // current one alone.
                let replaced = self
                    .cluster
                    .pod(&info.key)
                    .is_some_and(|p| !info.uid.is_empty() && p.uid != info.uid);
                if !replaced {
                    self.forget_pod(&info.key);
                }
            }
        }
    }

    /// Removes a pod that was deleted or left the watched selection.
    fn forget_pod(&mut self, key: &PodKey) {
        self.queue.remove(key);
        self.reserved.remove(key);
        self.last_failure.remove(key);
        self.preempting.remove(key);
        if let Some(old) = self.cluster.remove_pod(key) {
            self.first_seen.remove(&flight_key(key, &old.uid));
            // Its warning was given; a pod recreated under this name has a
            // new UID and gets its own.
            self.warned_uids.remove(&old.uid);
            if old.node_name.is_some() {
                // Capacity freed (a victim gone, a pod finished): retry
                // waiting pods.
                self.queue.move_all_to_active();
            }
        }
    }

    /// Updates the index from a pod; returns its key.
    fn apply_pod(&mut self, pod: &Pod) -> Option<PodKey> {
        let mut info = convert::pod_info(pod, &self.reader);
        let key = info.key.clone();
        if !info.ours && info.node_name.is_none() {
            // Another scheduler's (or out of our scope) and not bound: it
            // takes no room anywhere yet. Not kept, to keep the index small.
            if self.cluster.pod(&key).is_some_and(|p| p.uid == info.uid) {
                self.forget_pod(&key);
            }
            return Some(key);
        }
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        );
        if terminal {
            self.forget_pod(&key);
            return Some(key);
        }
        let reserved = self
            .reserved
            .get(&key)
            .filter(|b| b.uid == info.uid)
            .map(|b| b.node.clone());
        if info.node_name.is_none()
            && let Some(node) = self
                .in_flight
                .get(&flight_key(&key, &info.uid))
                .map(|(_, n)| n.clone())
                .or(reserved.clone())
        {
            // An event older than our bind (or a gang member retrying on its
            // reserved node): keep the assumption. Only for the same pod
            // (UID): a pod recreated under the same name is new.
            info.node_name = Some(node);
        }
        if info.ours
            && let Some(warning) = &info.priority_warning
            && self.warned_uids.insert(info.uid.clone())
        {
            self.reports.send(Report::Warning {
                pod: PodRef {
                    key: key.clone(),
                    uid: info.uid.clone(),
                },
                reason: warning.reason.into(),
                message: warning.message.clone(),
            });
        }
        let pending_ours = info.ours && info.is_pending();
        let (priority, created_at, uid) = (info.priority, info.created_at, info.uid.clone());
        let in_flight =
            self.in_flight.contains_key(&flight_key(&key, &info.uid)) || reserved.is_some();
        // A terminating pod stays in the index (holding its node) until its
        // Delete event arrives.
        self.cluster.upsert_pod(info);
        if pending_ours {
            let now = self.clock.now();
            self.first_seen.entry(flight_key(&key, &uid)).or_insert(now);
            self.queue.add(key.clone(), priority, created_at);
        } else if !in_flight {
            self.queue.remove(&key);
        }
        Some(key)
    }
}
