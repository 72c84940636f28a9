//! The ordered apply plan: which objects `up` applies, in which stage, through
//! which API resource. Pure: built from rendered manifests, no I/O.
//!
//! Order matters because later objects depend on earlier ones: a namespace
//! must exist before anything in it, RBAC before the Deployments whose service
//! accounts use it, the DB Secret before the analyzer pods that read it, the
//! scheduler before the Jobs that name it in `schedulerName` (otherwise they sit
//! Pending with nobody to bind them).

use kube::api::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::OpsError;
use crate::workload::{SCALEDJOB_GROUP, SCALEDJOB_PLURAL, SCALEDJOB_VERSION};

/// Apply stages, in the order `up` runs them (and the reverse of `down --purge`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The farm's namespace.
    Namespace,
    /// ServiceAccounts, (Cluster)Roles and their bindings.
    Rbac,
    /// Secrets, ConfigMaps, PriorityClasses, Services, NetworkPolicies,
    /// PodDisruptionBudgets: what the running parts read or are reached by.
    Config,
    /// What the farm runs on: the broker and the database (StatefulSets),
    /// Prometheus and the GPU exporter. `up` waits for the StatefulSets
    /// before it starts anything that uses them.
    Platform,
    /// The controllers: scheduler, scaler and balancer, dashboard.
    Controllers,
    /// The analyzers: Jobs or ScaledJobs.
    Workloads,
}

impl Stage {
    /// Human name for progress lines and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Namespace => "namespace",
            Self::Rbac => "rbac",
            Self::Config => "config",
            Self::Platform => "platform",
            Self::Controllers => "controllers",
            Self::Workloads => "workloads",
        }
    }
}

/// Label naming what part of the farm an object belongs to (`broker`,
/// `database`, `scheduler`, `scaler`, `analyzer`, …); every manifest in
/// `deploy/` carries it, and it decides the stage of the kinds that appear
/// in several parts (a Deployment is a controller or part of the platform).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// Components whose workloads form the [`Stage::Platform`].
pub const PLATFORM_COMPONENTS: [&str; 4] = ["broker", "database", "prometheus", "gpu-exporter"];

/// A kind `up` knows how to apply: its API resource and scope.
#[derive(Clone, Debug)]
pub struct KindInfo {
    /// Group, version, kind and plural for `Api::<DynamicObject>`.
    pub resource: ApiResource,
    /// Whether objects of this kind live in a namespace.
    pub namespaced: bool,
}

/// The kinds `up` applies and `down` deletes. A fixed table instead of API
/// discovery: the set is closed (it is what `deploy/` contains), it saves a
/// round of discovery calls, and an unknown kind in `deploy/` is caught by a
/// unit test instead of at deploy time.
const KINDS: &[(&str, &str, &str, &str, bool)] = &[
    // (group, version, kind, plural, namespaced)
    ("", "v1", "Namespace", "namespaces", false),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Service", "services", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    ("batch", "v1", "Job", "jobs", true),
    (
        SCALEDJOB_GROUP,
        SCALEDJOB_VERSION,
        "ScaledJob",
        SCALEDJOB_PLURAL,
        true,
    ),
    (
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        false,
    ),
];

/// Looks up a kind by `apiVersion` and `kind` as written in a manifest.
pub fn kind_info(api_version: &str, kind: &str) -> Option<KindInfo> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    KINDS
        .iter()
        .find(|(g, v, k, _, _)| *g == group && *v == version && *k == kind)
        .map(|(g, v, k, plural, namespaced)| KindInfo {
            resource: ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural),
            namespaced: *namespaced,
        })
}

/// The `apiVersion` a table entry is written with.
fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Every kind `up` knows, in `down --purge`'s deletion order: the reverse
/// of the apply order, what creates others before what it creates
/// (ScaledJobs before Jobs, Deployments before their pods' config), the
/// data volumes (PersistentVolumeClaims) and the namespace last.
pub const PURGE_ORDER: [&str; 18] = [
    "ScaledJob",
    "Job",
    "Deployment",
    "DaemonSet",
    "StatefulSet",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "Service",
    "ConfigMap",
    "Secret",
    "PriorityClass",
    "RoleBinding",
    "Role",
    "ClusterRoleBinding",
    "ClusterRole",
    "ServiceAccount",
    "PersistentVolumeClaim",
    "Namespace",
];

fn info_of(kind: &str) -> Option<KindInfo> {
    let (g, v, _, _, _) = KINDS.iter().find(|e| e.2 == kind)?;
    kind_info(&api_version(g, v), kind)
}

/// The kinds of [`PURGE_ORDER`], resolved.
pub fn purge_kinds() -> Vec<KindInfo> {
    PURGE_ORDER.iter().filter_map(|k| info_of(k)).collect()
}

/// The kinds `down --purge` deletes after [`running_kinds`]: configuration,
/// RBAC, data volumes and the namespace, in [`PURGE_ORDER`].
pub fn config_kinds() -> Vec<KindInfo> {
    PURGE_ORDER[5..].iter().filter_map(|k| info_of(k)).collect()
}

/// The kinds that run something (or make something run): what `down`
/// stops without `--purge`, in that order — ScaledJobs first so KEDA stops
/// creating Jobs, then Jobs, then the Deployments, DaemonSets and
/// StatefulSets of schedulers, scaler, exporter, broker and database.
pub fn running_kinds() -> Vec<KindInfo> {
    PURGE_ORDER[..5].iter().filter_map(|k| info_of(k)).collect()
}

/// The stage of an object of `kind` whose component label is among
/// `components` (empty: unknown).
fn stage_of_kind(kind: &str, components: &[&str]) -> Stage {
    match kind {
        "Namespace" => Stage::Namespace,
        "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => {
            Stage::Rbac
        }
        "Job" | "ScaledJob" => Stage::Workloads,
        "Deployment" | "StatefulSet" | "DaemonSet"
            if components.iter().any(|c| PLATFORM_COMPONENTS.contains(c)) =>
        {
            Stage::Platform
        }
        "Deployment" | "StatefulSet" | "DaemonSet" => Stage::Controllers,
        _ => Stage::Config,
    }
}

/// The stage of a manifest: by kind, and for workloads of the platform by
/// their [`COMPONENT_LABEL`].
pub fn stage_of(object: &Value) -> Stage {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let component = object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(COMPONENT_LABEL))
        .and_then(Value::as_str);
    stage_of_kind(kind, component.as_slice())
}

/// One object to apply.
#[derive(Clone, Debug)]
pub struct PlannedObject {
    /// When it is applied.
    pub stage: Stage,
    /// How to reach it through the API.
    pub kind: KindInfo,
    /// The full manifest, as sent in the apply patch.
    pub object: Value,
}

impl PlannedObject {
    /// Builds a planned object from a manifest, checking it names a known kind
    /// and has a name (and a namespace when the kind is namespaced).
    pub fn new(object: Value, origin: &str) -> Result<Self, OpsError> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| OpsError::manifest(origin, "missing apiVersion"))?;
        let kind_name = object
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| OpsError::manifest(origin, "missing kind"))?;
        let kind = kind_info(api_version, kind_name).ok_or_else(|| {
            OpsError::manifest(
                origin,
                format!("kind {api_version}/{kind_name} is not one `up` applies"),
            )
        })?;
        let planned = Self {
            stage: stage_of(&object),
            kind,
            object,
        };
        if planned.name().is_empty() {
            return Err(OpsError::manifest(origin, "missing metadata.name"));
        }
        if planned.kind.namespaced && planned.namespace().is_none() {
            return Err(OpsError::manifest(
                origin,
                "namespaced object without metadata.namespace",
            ));
        }
        Ok(planned)
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `metadata.namespace`, for namespaced kinds.
    pub fn namespace(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }

    /// The kind, e.g. `Deployment`.
    pub fn kind_name(&self) -> &str {
        &self.kind.resource.kind
    }

    /// `Kind namespace/name` for logs and errors.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {ns}/{}", self.kind_name(), self.name()),
            None => format!("{} {}", self.kind_name(), self.name()),
        }
    }
}

/// All objects `up` applies, sorted by stage (stable within a stage: the
/// order of the documented files).
#[derive(Clone, Debug, Default)]
pub struct ApplyPlan {
    /// The objects, in apply order.
    pub objects: Vec<PlannedObject>,
}

impl ApplyPlan {
    /// Orders objects into stages; the sort is stable so file order is kept.
    pub fn new(mut objects: Vec<PlannedObject>) -> Self {
        objects.sort_by_key(|o| o.stage);
        Self { objects }
    }

    /// Objects of one stage.
    pub fn stage(&self, stage: Stage) -> impl Iterator<Item = &PlannedObject> {
        self.objects.iter().filter(move |o| o.stage == stage)
    }

    /// Objects of `kind` up to and including `last` (e.g. the StatefulSets
    /// of the platform), as `(namespace, name)`.
    pub fn named(&self, kind: &str, last: Stage) -> Vec<(String, String)> {
        self.objects
            .iter()
            .filter(|o| o.kind_name() == kind && o.stage <= last)
            .filter_map(|o| Some((o.namespace()?.to_string(), o.name().to_string())))
            .collect()
    }

    /// Deployments `up` waits for (schedulers, scaler, dashboard,
    /// Prometheus): `(namespace, name)`.
    pub fn deployments(&self) -> Vec<(String, String)> {
        self.named("Deployment", Stage::Workloads)
    }

    /// Whether the plan holds an object of `kind` named `name`.
    pub fn contains(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        self.objects.iter().any(|o| {
            o.kind_name() == kind
                && o.name() == name
                && (!o.kind.namespaced || o.namespace() == namespace)
        })
    }

    /// Names of the objects of `kind` in the workloads stage, e.g. the ScaledJobs.
    pub fn workload_names(&self, kind: &str) -> Vec<String> {
        self.stage(Stage::Workloads)
            .filter(|o| o.kind_name() == kind)
            .map(|o| o.name().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kind_table_resolves_core_and_grouped_kinds() {
        let ns = kind_info("v1", "Namespace").expect("namespace is known");
        assert_eq!(ns.resource.plural, "namespaces");
        assert!(!ns.namespaced);
        let sj = kind_info("keda.sh/v1alpha1", "ScaledJob").expect("scaledjob is known");
        assert_eq!(sj.resource.group, "keda.sh");
        assert_eq!(sj.resource.plural, "scaledjobs");
        assert!(sj.namespaced);
        assert!(kind_info("apps/v1beta1", "Deployment").is_none());
    }

    #[test]
    fn plan_orders_stages_and_keeps_file_order_within_a_stage() {
        let mk = |kind: &str, api: &str, name: &str, component: &str| {
            PlannedObject::new(
                json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "default",
                       "labels": {COMPONENT_LABEL: component}}}),
                name,
            )
            .expect("valid")
        };
        let plan = ApplyPlan::new(vec![
            mk("Job", "batch/v1", "j1", "analyzer"),
            mk("Deployment", "apps/v1", "sched", "scheduler"),
            mk("StatefulSet", "apps/v1", "broker", "broker"),
            mk("Job", "batch/v1", "j0", "analyzer"),
            mk("ServiceAccount", "v1", "sa", "scheduler"),
            mk("Deployment", "apps/v1", "scaler", "scaler"),
            mk("Secret", "v1", "db", "database"),
            mk("StatefulSet", "apps/v1", "db", "database"),
        ]);
        let order: Vec<&str> = plan.objects.iter().map(PlannedObject::name).collect();
        assert_eq!(
            order,
            ["sa", "db", "broker", "db", "sched", "scaler", "j1", "j0"]
        );
        assert_eq!(plan.deployments().len(), 2);
        assert_eq!(
            plan.named("StatefulSet", Stage::Platform),
            [
                ("default".to_string(), "broker".to_string()),
                ("default".to_string(), "db".to_string())
            ]
        );
        assert!(plan.contains("Job", Some("default"), "j0"));
        assert!(!plan.contains("Job", Some("other"), "j0"));
    }

    #[test]
    fn invalid_manifests_are_rejected_with_the_reason() {
        let err = PlannedObject::new(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}),
            "f.yaml#0",
        )
        .expect_err("pods are not applied");
        assert!(err.to_string().contains("not one `up` applies"), "{err}");
        let err = PlannedObject::new(
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}}),
            "f.yaml#1",
        )
        .expect_err("jobs need a namespace");
        assert!(err.to_string().contains("namespace"), "{err}");
    }

    #[test]
    fn purge_order_is_reverse_of_apply_and_covers_every_kind() {
        let kinds: Vec<String> = purge_kinds().into_iter().map(|k| k.resource.kind).collect();
        assert_eq!(kinds.len(), KINDS.len(), "every kind is purged: {kinds:?}");
        let pos = |k: &str| kinds.iter().position(|x| x == k).expect("present");
        assert!(pos("ScaledJob") < pos("Job"));
        assert!(pos("Job") < pos("Deployment"));
        assert!(pos("Deployment") < pos("ClusterRole"));
        assert!(pos("StatefulSet") < pos("PersistentVolumeClaim"));
        assert_eq!(kinds.last().map(String::as_str), Some("Namespace"));
        let running: Vec<String> = running_kinds()
            .into_iter()
            .map(|k| k.resource.kind)
            .collect();
        assert_eq!(
            running,
            ["ScaledJob", "Job", "Deployment", "DaemonSet", "StatefulSet"]
        );
    }
}
