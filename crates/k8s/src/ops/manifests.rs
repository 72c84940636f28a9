//! Rendering the manifests documented in `deploy/` into what `up` applies.
//!
//! Each mode is a kustomization, `deploy/modes/<mode>/`. The files are
//! embedded with `include_str!` and built with the same subset of kustomize
//! that `kubectl apply -k` would use ([`kustomize`]), so that rendering a
//! mode with the default options gives exactly the objects of
//! `kubectl kustomize deploy/modes/<mode>` plus the Secrets `up` generates
//! (tested below and, against kubectl itself, in CI). The flags then change
//! a few things by fixed structural rules ([`transform`]): namespace, image,
//! cameras and topics, an existing broker or database instead of the
//! in-cluster ones, Prometheus, the GPU configuration, cluster-wide RBAC,
//! priorities, GPU inference. Everything here is pure.
//!
//! ```text
//!  deploy/modes/<mode>/kustomization.yaml ─► kustomize::build ─► documents
//!      (+ deploy/prometheus/ with --with-prometheus)                │
//!  RenderOptions ─► drop broker/database (existing ones) · cameras · namespace · image · env
//!                   · GPU config · RBAC scope · priorities · GPU inference · config checksum
//!                   · generated Secrets (posture-db, mqtt-broker-auth) ─► plan::ApplyPlan
//! ```

pub mod generate;
pub mod kustomize;
pub mod transform;

use std::collections::BTreeMap;

use serde_json::Value;

pub use generate::{BrokerAuth, BrokerSetup, DbCredentials, DbSetup, InClusterDb};
use kustomize::Document;
pub use transform::GpuInference;
use transform::{component, is_analyzer_workload, kind, name};

use super::OpsError;
use super::plan::{ApplyPlan, PlannedObject};

/// One entry of the embedded manifest table: the repository path is written
/// once and used both for messages and for `include_str!`.
macro_rules! embed {
    ($path:literal) => {
        EmbeddedFile {
            path: $path,
            text: include_str!(concat!("../../../../", $path)),
        }
    };
}

/// One manifest or kustomization file of `deploy/`, embedded in the binary.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedFile {
    /// Path relative to the repository root.
    pub path: &'static str,
    /// The YAML text (one or more documents).
    pub text: &'static str,
}

/// Every file of `deploy/` that a mode or Prometheus uses (a unit test
/// checks the list against the folder), compiled into the binary: `up`
/// applies exactly what the repository documents.
pub fn embedded() -> Vec<EmbeddedFile> {
    vec![
        embed!("deploy/kustomization.yaml"),
        embed!("deploy/modes/round-robin/kustomization.yaml"),
        embed!("deploy/modes/gpu/kustomization.yaml"),
        embed!("deploy/modes/keda/kustomization.yaml"),
        embed!("deploy/modes/priority/kustomization.yaml"),
        embed!("deploy/farm/kustomization.yaml"),
        embed!("deploy/farm/namespace.yaml"),
        embed!("deploy/farm/config.yaml"),
        embed!("deploy/broker/kustomization.yaml"),
        embed!("deploy/broker/config.yaml"),
        embed!("deploy/broker/statefulset.yaml"),
        embed!("deploy/broker/service.yaml"),
        embed!("deploy/database/kustomization.yaml"),
        embed!("deploy/database/statefulset.yaml"),
        embed!("deploy/database/service.yaml"),
        embed!("deploy/exporter/kustomization.yaml"),
        embed!("deploy/exporter/daemonset.yaml"),
        embed!("deploy/exporter/service.yaml"),
        embed!("deploy/dashboard/kustomization.yaml"),
        embed!("deploy/dashboard/rbac.yaml"),
        embed!("deploy/dashboard/deployment.yaml"),
        embed!("deploy/dashboard/service.yaml"),
        embed!("deploy/scheduler/kustomization.yaml"),
        embed!("deploy/scheduler/rbac.yaml"),
        embed!("deploy/scheduler/deployment.yaml"),
        embed!("deploy/scheduler/pdb.yaml"),
        embed!("deploy/gpu-scheduler/kustomization.yaml"),
        embed!("deploy/gpu-scheduler/rbac.yaml"),
        embed!("deploy/gpu-scheduler/deployment.yaml"),
        embed!("deploy/gpu-scheduler/pdb.yaml"),
        embed!("deploy/priority/kustomization.yaml"),
        embed!("deploy/priority/rbac.yaml"),
        embed!("deploy/priority/priorityclasses.yaml"),
        embed!("deploy/priority/deployment.yaml"),
        embed!("deploy/priority/pdb.yaml"),
        embed!("deploy/jobs/kustomization.yaml"),
        embed!("deploy/jobs/posture-jobs.yaml"),
        embed!("deploy/keda/kustomization.yaml"),
        embed!("deploy/keda/rbac.yaml"),
        embed!("deploy/keda/scaler.yaml"),
        embed!("deploy/keda/pdb.yaml"),
        embed!("deploy/keda/networkpolicy.yaml"),
        embed!("deploy/keda/scaledjobs.yaml"),
        embed!("deploy/prometheus/kustomization.yaml"),
        embed!("deploy/prometheus/rbac.yaml"),
        embed!("deploy/prometheus/config.yaml"),
        embed!("deploy/prometheus/deployment.yaml"),
        embed!("deploy/prometheus/service.yaml"),
    ]
}

/// The namespace every file of `deploy/` uses; `--namespace` replaces it.
pub const DOCUMENTED_NAMESPACE: &str = "posture";

/// The posture-farm image of `deploy/`: pinned to this release.
pub const DOCUMENTED_IMAGE: &str = concat!(
    "ghcr.io/posture-farm/posture-farm:",
    env!("CARGO_PKG_VERSION")
);

/// The folder of the optional Prometheus (`--with-prometheus`).
pub const PROMETHEUS_DIR: &str = "deploy/prometheus";

/// ConfigMap holding the per-node GPU queries (`gpu.yaml`).
pub const GPU_CONFIG_MAP: &str = "posture-gpu-config";

/// Key of the GPU queries in [`GPU_CONFIG_MAP`].
pub const GPU_CONFIG_KEY: &str = "gpu.yaml";

/// Service of the dashboard (port 8080).
pub const DASHBOARD_SERVICE: &str = "posture-dashboard";

/// ConfigMap of the analyzers' settings (`MQTT_BROKER`, `MQTT_PORT`).
pub const ANALYZER_CONFIG_MAP: &str = "posture-analyzer";

/// How analyzers are placed: one kustomization under `deploy/modes/` each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// One Job per camera, bound in turn to the Ready nodes by `rr-scheduler`.
    #[default]
    RoundRobin,
    /// One Job per camera, bound to the least-loaded GPU node by `gpu-scheduler`.
    Gpu,
    /// One KEDA ScaledJob per camera, pinned by the even-spread plan, moved by the balancer.
    Keda,
    /// One Job per camera with a PriorityClass, bound (and preempted) by `posture-priority`.
    Priority,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 4] = [Self::RoundRobin, Self::Gpu, Self::Keda, Self::Priority];

    /// The spelling used on the command line and in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::Gpu => "gpu",
            Self::Keda => "keda",
            Self::Priority => "priority",
        }
    }

    /// Its kustomization folder.
    pub fn dir(self) -> String {
        format!("deploy/modes/{}", self.as_str())
    }

    /// The `schedulerName` of its Jobs (KEDA's Jobs use the default scheduler).
    pub fn scheduler_name(self) -> Option<&'static str> {
        match self {
            Self::RoundRobin => Some("rr-scheduler"),
            Self::Gpu => Some("gpu-scheduler"),
            Self::Priority => Some("posture-priority"),
            Self::Keda => None,
        }
    }

    /// Whether its components read GPU usage from Prometheus.
    pub fn reads_gpu(self) -> bool {
        matches!(self, Self::Gpu | Self::Keda)
    }
}

/// Prometheus for the GPU-aware components.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrometheusSetup {
    /// Deploy the farm's own (`deploy/prometheus/`).
    pub deploy: bool,
    /// An existing one's URL, passed to the components as `PROMETHEUS_URL`.
    pub url: Option<String>,
}

/// What `up` was asked to deploy. `Default` reproduces the round-robin mode
/// of `deploy/` as documented.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// Placement mode.
    pub mode: Mode,
    /// Namespace of the farm; `None` keeps [`DOCUMENTED_NAMESPACE`].
    pub namespace: Option<String>,
    /// Image of every posture-farm container; `None` keeps [`DOCUMENTED_IMAGE`].
    pub image: Option<String>,
    /// Number of cameras (analyzer workloads); `None` keeps the documented
    /// number, or the number of `topics` when those are given.
    pub cameras: Option<usize>,
    /// MQTT topic per camera, in order; empty keeps the documented topics.
    pub topics: Vec<String>,
    /// The in-cluster broker, or an existing one.
    pub broker: BrokerSetup,
    /// MQTT credentials (Secret `mqtt-broker-auth`); the in-cluster broker
    /// then accepts only this user.
    pub broker_auth: Option<BrokerAuth>,
    /// The in-cluster database, or an existing one.
    pub database: DbSetup,
    /// Prometheus.
    pub prometheus: PrometheusSetup,
    /// The per-node GPU queries (YAML, already checked); `None` keeps the
    /// documented ones.
    pub gpu_config: Option<String>,
    /// Schedulers watch every namespace, with cluster-wide RBAC.
    pub all_namespaces: bool,
    /// PriorityClass per camera (priority mode): `camera → class`.
    pub camera_priorities: BTreeMap<String, String>,
    /// Analyzers use the node's GPU.
    pub gpu_inference: Option<GpuInference>,
    /// Leave the dashboard out.
    pub no_dashboard: bool,
    /// `spec.type` of Service posture-dashboard; `None` keeps `ClusterIP`.
    pub dashboard_service_type: Option<String>,
}

/// The rendered plan plus what the operator should know about it.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    /// The farm's namespace.
    pub namespace: String,
    /// The ordered objects to apply.
    pub plan: ApplyPlan,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
}

/// Parses every document of a file into JSON values, skipping empty documents.
pub fn parse_file(file: &EmbeddedFile) -> Result<Vec<Value>, OpsError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(file.text).map_err(|source| OpsError::Yaml {
            file: file.path.to_string(),
            source: Box::new(source),
        })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The documents of a mode as `kubectl kustomize` builds them (plus
/// Prometheus when asked), before any flag is applied.
pub fn documented(
    files: &[EmbeddedFile],
    mode: Mode,
    prometheus: bool,
) -> Result<Vec<Document>, OpsError> {
    let mut docs = kustomize::build(files, &mode.dir())?;
    if prometheus {
        docs.extend(kustomize::build(files, PROMETHEUS_DIR)?);
    }
    Ok(docs)
}

/// Renders the files for `opts` into an ordered apply plan.
pub fn render(files: &[EmbeddedFile], opts: &RenderOptions) -> Result<Rendered, OpsError> {
    let namespace = opts
        .namespace
        .clone()
        .unwrap_or_else(|| DOCUMENTED_NAMESPACE.to_string());
    let docs = documented(files, opts.mode, opts.prometheus.deploy)?;
    let documented_config = transform::config_map_data(&docs);
    let mut warnings = Vec::new();
    let docs = select_components(docs, opts);
    let (workloads, mut docs): (Vec<Document>, Vec<Document>) = docs
        .into_iter()
        .partition(|d| is_analyzer_workload(&d.value));
    docs.extend(transform::expand_cameras(
        workloads,
        opts.cameras,
        &opts.topics,
    )?);
    docs.extend(generated(opts, &namespace)?);
    for doc in &mut docs {
        apply_flags(&mut doc.value, opts, &namespace)?;
    }
    apply_priorities(&mut docs, opts)?;
    transform::mark_config_changes(&mut docs, &documented_config);
    if opts.mode.reads_gpu() && !opts.prometheus.deploy && opts.prometheus.url.is_none() {
        warnings.push(format!(
            "mode {} reads GPU usage from Prometheus at http://prometheus.{namespace}.svc.cluster.local:9090: add --with-prometheus, or --prometheus-url for an existing one",
            opts.mode.as_str()
        ));
    }
    let mut objects = Vec::with_capacity(docs.len());
    for mut doc in docs {
        transform::add_managed_label(&mut doc.value);
        objects.push(PlannedObject::new(doc.value, &doc.origin)?);
    }
    Ok(Rendered {
        namespace,
        plan: ApplyPlan::new(objects),
        warnings,
    })
}

/// Leaves out the in-cluster broker or database when existing ones are
/// used, and the dashboard when asked.
fn select_components(docs: Vec<Document>, opts: &RenderOptions) -> Vec<Document> {
    let external_broker = matches!(opts.broker, BrokerSetup::External { .. });
    let external_db = !matches!(opts.database, DbSetup::InCluster(_));
    docs.into_iter()
        .filter(|d| match component(&d.value) {
            Some("broker") => !external_broker,
            Some("database") => !external_db,
            Some("dashboard") => !opts.no_dashboard,
            _ => true,
        })
        .collect()
}

/// The Secrets `up` generates: the database's, and the MQTT user's.
fn generated(opts: &RenderOptions, namespace: &str) -> Result<Vec<Document>, OpsError> {
    let mut out = Vec::new();
    if let Some(data) = generate::db_secret_data(&opts.database) {
        out.push(Document {
            origin: "generated DB Secret".into(),
            value: generate::secret(generate::DB_SECRET, namespace, "database", data)?,
        });
    }
    if let Some(auth) = &opts.broker_auth {
        out.push(Document {
            origin: "generated MQTT Secret".into(),
            value: generate::secret(
                generate::BROKER_AUTH_SECRET,
                namespace,
                "broker",
                generate::broker_auth_data(auth),
            )?,
        });
    }
    Ok(out)
}

/// The structural rules every document goes through.
fn apply_flags(doc: &mut Value, opts: &RenderOptions, namespace: &str) -> Result<(), OpsError> {
    transform::set_namespace(doc, DOCUMENTED_NAMESPACE, namespace);
    if let Some(image) = &opts.image {
        transform::set_image(doc, DOCUMENTED_IMAGE, image);
    }
    if kind(doc) == "ConfigMap" {
        match name(doc) {
            ANALYZER_CONFIG_MAP => {
                if let BrokerSetup::External { host, port } = &opts.broker {
                    doc["data"]["MQTT_BROKER"] = Value::String(host.clone());
                    doc["data"]["MQTT_PORT"] = Value::String(port.to_string());
                }
            }
            GPU_CONFIG_MAP => {
                if let Some(text) = &opts.gpu_config {
                    doc["data"][GPU_CONFIG_KEY] = Value::String(text.clone());
                }
            }
            _ => {}
        }
    }
    if let Some(service_type) = &opts.dashboard_service_type
        && kind(doc) == "Service"
        && name(doc) == DASHBOARD_SERVICE
    {
        doc["spec"]["type"] = Value::String(service_type.clone());
    }
    if let Some(url) = &opts.prometheus.url {
        transform::set_env(doc, "PROMETHEUS_URL", url);
    }
    if let DbSetup::Secret(secret) = &opts.database {
        transform::rename_secret(doc, generate::DB_SECRET, secret);
    }
    if opts.all_namespaces {
        transform::make_cluster_wide(doc);
        if kind(doc) == "Deployment" && component(doc) == Some("scheduler") {
            transform::put_env(doc, "ALL_NAMESPACES", "true");
        }
    }
    if let Some(gpu) = &opts.gpu_inference
        && is_analyzer_workload(doc)
    {
        transform::use_gpu(doc, gpu);
    }
    Ok(())
}

/// `--camera-priority`: each named camera's analyzer gets its PriorityClass.
fn apply_priorities(docs: &mut [Document], opts: &RenderOptions) -> Result<(), OpsError> {
    if opts.camera_priorities.is_empty() {
        return Ok(());
    }
    if opts.mode != Mode::Priority {
        return Err(OpsError::manifest(
            "--camera-priority",
            format!(
                "priorities only matter in --mode priority (not {})",
                opts.mode.as_str()
            ),
        ));
    }
    for (camera, class) in &opts.camera_priorities {
        let mut hit = false;
        for d in docs.iter_mut().filter(|d| is_analyzer_workload(&d.value)) {
            hit |= transform::set_priority_class(&mut d.value, camera, class);
        }
        if !hit {
            return Err(OpsError::manifest(
                "--camera-priority",
                format!("no analyzer for camera {camera:?}"),
            ));
        }
    }
    Ok(())
}

/// The PriorityClass a `--camera-priority` value names: `low`, `normal`,
/// `high` (the classes of `deploy/priority/`), or any other class by name.
pub fn priority_class(value: &str) -> String {
    match value {
        "low" | "normal" | "high" => format!("posture-farm-{value}"),
        other => other.to_string(),
    }
}

/// Pins each ScaledJob of the plan to a node with required node affinity on
/// the `gpu-node` label (`placement`: ScaledJob name → node). ScaledJobs not in
/// `placement` are left unpinned.
pub fn assign_nodes(plan: &mut ApplyPlan, placement: &BTreeMap<String, String>) {
    use crate::place::{PinMode, Workload, pin};
    use crate::workload::{GPU_NODE_LABEL, WorkloadKind};
    let mode = PinMode::Affinity {
        label_key: GPU_NODE_LABEL.to_string(),
    };
    for object in &mut plan.objects {
        if object.kind_name() != "ScaledJob" {
            continue;
        }
        let Some(node) = placement.get(object.name()) else {
            continue;
        };
        // The same pinning as `posture-farm place`: required node affinity on
        // `gpu-node`, merged into any affinity the manifest already has.
        let workload = Workload {
            kind: WorkloadKind::ScaledJob,
            name: object.name().to_string(),
            namespace: None,
            origin: "deploy/keda".into(),
            object: object.object.clone(),
        };
        object.object = pin(&workload, node, &mode);
    }
}

#[cfg(test)]
mod ha_tests;
#[cfg(test)]
mod tests;
