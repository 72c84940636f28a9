//! Recorded exchanges for whole `up` and `down` runs. The expected requests
//! are computed from a plan and a [`Cluster`] — the objects the API server
//! holds, with a `resourceVersion` that moves only when content changes
//! (server-side apply of identical content is a no-op) — and each request
//! the code sends is checked against them, in order, by method and path.
//! Answers come from the cluster, which then changes as the API server's
//! would: applies store the manifest, deletes remove the object.

use serde_json::{Value, json};

use crate::ops::plan::{ApplyPlan, KindInfo, PlannedObject, Stage, config_kinds, running_kinds};
use crate::ops::teardown::prune_kinds;
use crate::test_support::{ApiMock, status_json};

/// Where the API server serves a kind: `/api/v1` or `/apis/<group>/<version>`.
fn base(kind: &KindInfo) -> String {
    let r = &kind.resource;
    if r.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    }
}

/// The cluster-wide list path of a kind.
pub fn list_path(kind: &KindInfo) -> String {
    format!("{}/{}", base(kind), kind.resource.plural)
}

/// The path of one object.
pub fn object_path(kind: &KindInfo, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if kind.namespaced => {
            format!(
                "{}/namespaces/{ns}/{}/{name}",
                base(kind),
                kind.resource.plural
            )
        }
        _ => format!("{}/{}/{name}", base(kind), kind.resource.plural),
    }
}

/// One object the API server holds.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Its kind.
    pub kind: KindInfo,
    /// The manifest as applied (plus server-set metadata).
    pub value: Value,
    /// Its version.
    pub rv: u64,
}

impl Stored {
    /// Namespace.
    pub fn namespace(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }

    /// Name.
    pub fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn path(&self) -> String {
        object_path(&self.kind, self.namespace(), self.name())
    }

    fn served(&self) -> Value {
        let mut v = self.value.clone();
        v["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        v
    }

    fn ours(&self) -> bool {
        self.value
            .pointer("/metadata/labels/app.kubernetes.io~1managed-by")
            .and_then(Value::as_str)
            == Some("posture-farm")
    }

    fn owned(&self) -> bool {
        self.value
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|o| !o.is_empty())
    }
}

/// What the API server holds.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Every object.
    pub objects: Vec<Stored>,
    next_rv: u64,
}

impl Cluster {
    /// Adds an object as something else (a controller, KEDA) created it.
    pub fn insert(&mut self, kind: KindInfo, value: Value) {
        self.next_rv += 1;
        let rv = self.next_rv;
        self.objects.push(Stored { kind, value, rv });
    }

    fn position(&self, path: &str) -> Option<usize> {
        self.objects.iter().position(|o| o.path() == path)
    }

    /// Stores an apply; the version moves only when the content changed.
    fn apply(&mut self, object: &PlannedObject) -> Value {
        let path = object_path(&object.kind, object.namespace(), object.name());
        match self.position(&path) {
            Some(i) if self.objects[i].value == object.object => {}
            Some(i) => {
                self.next_rv += 1;
                self.objects[i].value = object.object.clone();
                self.objects[i].rv = self.next_rv;
            }
            None => self.insert(object.kind.clone(), object.object.clone()),
        }
        self.position(&path)
            .map(|i| self.objects[i].served())
            .unwrap_or(Value::Null)
    }

    /// Our objects of a kind.
    pub fn ours(&self, kind: &str) -> Vec<&Stored> {
        self.objects
            .iter()
            .filter(|o| o.kind.resource.kind == kind && o.ours())
            .collect()
    }

    /// Names of our objects of a kind, sorted.
    pub fn names(&self, kind: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .ours(kind)
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        names.sort();
        names
    }

    /// Answers the next request, a GET of our objects of `kind`, and then
    /// the DELETEs of those `doomed` picks; returns what was deleted.
    async fn serve_delete_kind(
        &mut self,
        mock: &mut ApiMock,
        kind: &KindInfo,
        doomed: impl Fn(&Stored) -> bool,
    ) -> Vec<String> {
        let req = mock.expect_get(list_path(kind).as_str()).await;
        assert!(
            req.query
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dposture-farm"),
            "{}",
            req.query
        );
        let items: Vec<Stored> = self
            .ours(&kind.resource.kind)
            .into_iter()
            .cloned()
            .collect();
        req.respond(
            200,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items.iter().map(Stored::served).collect::<Vec<_>>()}),
        );
        let mut deleted = Vec::new();
        for item in items.iter().filter(|o| doomed(o)) {
            let path = item.path();
            let req = mock.expect_delete(path.as_str()).await;
            assert_eq!(req.body["propagationPolicy"], "Background", "{path}");
            req.respond(200, item.served());
            if let Some(i) = self.position(&path) {
                self.objects.remove(i);
            }
            deleted.push(format!("{} {}", kind.resource.kind, item.name()));
        }
        deleted
    }

    /// Serves `up`'s pruning for `plan`; returns what was deleted.
    pub async fn serve_prune(&mut self, mock: &mut ApiMock, plan: &ApplyPlan) -> Vec<String> {
        let mut deleted = Vec::new();
        for kind in prune_kinds() {
            let doomed = |o: &Stored| {
                !o.owned() && !plan.contains(&kind.resource.kind, o.namespace(), o.name())
            };
            deleted.extend(self.serve_delete_kind(mock, &kind, doomed).await);
        }
        deleted
    }

    /// Serves the applies of `objects` (a GET, then the apply PATCH each).
    pub async fn serve_applies(&mut self, mock: &mut ApiMock, objects: &[&PlannedObject]) {
        for object in objects {
            let path = object_path(&object.kind, object.namespace(), object.name());
            let get = mock.expect_get(path.as_str()).await;
            match self.position(&path) {
                Some(i) => get.respond(200, self.objects[i].served()),
                None => get.respond(404, status_json(404, "NotFound", "not found")),
            }
            let mut patch = mock.expect_patch(path.as_str()).await;
            assert!(
                patch.query.contains("fieldManager=posture-farm")
                    && patch.query.contains("force=true"),
                "{}",
                patch.query
            );
            assert_eq!(patch.body, object.object, "{path}: the manifest as planned");
            let immutable = self.position(&path).is_some_and(|i| {
                object.kind_name() == "Job"
                    && self.objects[i].value.pointer("/spec/template")
                        != object.object.pointer("/spec/template")
            });
            if immutable {
                // The API server refuses a new Job template; up replaces the Job.
                patch.respond(
                    422,
                    status_json(422, "Invalid", "spec.template: field is immutable"),
                );
                let delete = mock.expect_delete(path.as_str()).await;
                assert_eq!(delete.body["propagationPolicy"], "Background");
                let i = self.position(&path).expect("present");
                delete.respond(200, self.objects.remove(i).served());
                mock.expect_get(path.as_str())
                    .await
                    .respond(404, status_json(404, "NotFound", "not found"));
                patch = mock.expect_patch(path.as_str()).await;
            }
            let answer = self.apply(object);
            patch.respond(200, answer);
        }
    }

    /// Puts every object of `plan` in the cluster, as a finished `up` left it.
    pub fn install(&mut self, plan: &ApplyPlan) {
        for object in &plan.objects {
            self.apply(object);
        }
    }

    /// Serves a whole `deploy` without waiting: prune, then every apply.
    pub async fn serve_deploy(&mut self, mock: &mut ApiMock, plan: &ApplyPlan) -> Vec<String> {
        let pruned = self.serve_prune(mock, plan).await;
        let (platform, rest): (Vec<&PlannedObject>, Vec<&PlannedObject>) = plan
            .objects
            .iter()
            .partition(|o| o.stage <= Stage::Platform);
        self.serve_applies(mock, &platform).await;
        self.serve_applies(mock, &rest).await;
        pruned
    }

    /// Serves `down` (`teardown`); returns what was deleted.
    pub async fn serve_down(&mut self, mock: &mut ApiMock, purge: bool) -> Vec<String> {
        let mut deleted = Vec::new();
        let running = running_kinds();
        let mut scaled_jobs = Vec::new();
        for kind in &running {
            let gone = self.serve_delete_kind(mock, kind, |_| true).await;
            if kind.resource.kind == "ScaledJob" {
                scaled_jobs = gone
                    .iter()
                    .map(|d| d.trim_start_matches("ScaledJob ").to_string())
                    .collect();
            }
            deleted.extend(gone);
            if kind.resource.kind == "Job" && !scaled_jobs.is_empty() {
                // KEDA's Jobs, by KEDA's label (ours were deleted above).
                let req = mock.expect_get(list_path(kind).as_str()).await;
                assert!(req.query.contains("scaledjob.keda.sh"), "{}", req.query);
                let spawned: Vec<Stored> = self
                    .objects
                    .iter()
                    .filter(|o| {
                        o.kind.resource.kind == "Job"
                            && o.value
                                .pointer("/metadata/labels/scaledjob.keda.sh~1name")
                                .is_some()
                    })
                    .cloned()
                    .collect();
                req.respond(
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": spawned.iter().map(Stored::served).collect::<Vec<_>>()}),
                );
                for job in &spawned {
                    mock.expect_delete(job.path().as_str())
                        .await
                        .respond(200, job.served());
                    if let Some(i) = self.position(&job.path()) {
                        self.objects.remove(i);
                    }
                    deleted.push(format!("Job {}", job.name()));
                }
            }
        }
        let pods: Vec<Stored> = self.ours("Pod").into_iter().cloned().collect();
        let req = mock.expect_get("/api/v1/pods").await;
        req.respond(
            200,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": pods.iter().map(Stored::served).collect::<Vec<_>>()}),
        );
        for pod in &pods {
            let req = mock.expect_delete(pod.path().as_str()).await;
            req.respond(200, pod.served());
            if let Some(i) = self.position(&pod.path()) {
                self.objects.remove(i);
            }
            deleted.push(format!("Pod {}", pod.name()));
        }
        if purge {
            for kind in config_kinds() {
                deleted.extend(self.serve_delete_kind(mock, &kind, |_| true).await);
            }
        }
        deleted
    }
}

/// The `Pod` kind, for pods a controller created in a [`Cluster`].
pub fn pod_kind() -> KindInfo {
    KindInfo {
        resource: kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
        namespaced: true,
    }
}
