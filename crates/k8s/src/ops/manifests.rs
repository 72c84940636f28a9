//! Rendering the manifests documented in `deploy/` into what `up` applies.
//!
//! The files are embedded with `include_str!`, parsed, and transformed by a
//! few structural rules — namespace, image, number of cameras and their MQTT
//! topics, the placement of ScaledJobs, the ownership label — so that
//! rendering with the default options reproduces the documented objects
//! (tested below). Everything here is pure.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use super::plan::{ApplyPlan, PlannedObject, Source};
use super::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, OpsError};

/// One entry of the embedded manifest table: the repository path is written
/// once and used both for messages and for `include_str!`.
macro_rules! embed {
    ($source:expr, $path:literal) => {
        EmbeddedFile {
            path: $path,
            source: $source,
            text: include_str!(concat!("../../../../", $path)),
        }
    };
}

/// One manifest file of `deploy/`, embedded in the binary.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedFile {
    /// Path relative to the repository root, for messages.
    pub path: &'static str,
    /// Which part of the system it deploys.
    pub source: Source,
    /// The YAML text (one or more documents).
    pub text: &'static str,
}

/// The manifests of `deploy/`, compiled into the binary: `up` applies exactly
/// what the repository documents (a unit test renders them with the defaults
/// and compares with the files).
pub fn embedded() -> Vec<EmbeddedFile> {
    vec![
        embed!(Source::Scheduler, "deploy/scheduler/rbac.yaml"),
        embed!(Source::Scheduler, "deploy/scheduler/deployment.yaml"),
        embed!(Source::Jobs, "deploy/jobs/config.yaml"),
        embed!(Source::Jobs, "deploy/jobs/posture-jobs.yaml"),
        embed!(Source::Keda, "deploy/keda/namespace.yaml"),
        embed!(Source::Keda, "deploy/keda/config.yaml"),
        embed!(Source::Keda, "deploy/keda/rbac.yaml"),
        embed!(Source::Keda, "deploy/keda/scaler.yaml"),
        embed!(Source::Keda, "deploy/keda/networkpolicy.yaml"),
        embed!(Source::Keda, "deploy/keda/scaledjobs.yaml"),
    ]
}

/// The namespace `deploy/scheduler/` and `deploy/jobs/` use for workloads
/// (round-robin mode); `--namespace` replaces it.
pub const DOCUMENTED_NAMESPACE: &str = "default";

/// The namespace `deploy/keda/` uses (KEDA mode); `--namespace` replaces it.
pub const DOCUMENTED_KEDA_NAMESPACE: &str = "posture";

/// The namespace the documented files of `source` use for workloads.
pub fn documented_namespace(source: Source) -> &'static str {
    match source {
        Source::Keda => DOCUMENTED_KEDA_NAMESPACE,
        _ => DOCUMENTED_NAMESPACE,
    }
}

/// The workload namespace of a mode when `--namespace` is not given.
pub fn default_namespace(mode: Mode) -> &'static str {
    match mode {
        Mode::RoundRobin => DOCUMENTED_NAMESPACE,
        Mode::Keda => DOCUMENTED_KEDA_NAMESPACE,
    }
}

/// Environment variable names that carry an analyzer's MQTT topic in the
/// documented Job/ScaledJob templates (first match wins).
pub const TOPIC_ENV: &str = "MQTT_TOPIC";

/// Name of the DB Secret when the documented workloads name none.
pub const DEFAULT_DB_SECRET: &str = "posture-db";

/// How analyzers are placed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// One Job per camera with `schedulerName` set to the custom scheduler.
    #[default]
    RoundRobin,
    /// One KEDA ScaledJob per camera, pinned by node affinity from the even-spread plan.
    Keda,
}

impl Mode {
    /// The spelling used on the command line and in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::Keda => "keda",
        }
    }
}

/// Database credentials for the analyzers, turned into a Secret. Built from
/// the operator's environment at `up` time; never written to a file.
#[derive(Clone, PartialEq, Eq)]
pub struct DbCredentials {
    /// A complete `postgres://` URL.
    pub database_url: String,
}

impl std::fmt::Debug for DbCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("DbCredentials").finish_non_exhaustive()
    }
}

impl DbCredentials {
    /// Reads `DATABASE_URL`, or else all of `DB_HOST`, `DB_PORT`, `DB_NAME`,
    /// `DB_USER`, `DB_PASSWORD`. `Ok(None)` when none is set; an error naming
    /// the missing variables when only some are.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, OpsError> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        if let Some(url) = nonempty("DATABASE_URL") {
            return Ok(Some(Self { database_url: url }));
        }
        const PARTS: [&str; 5] = ["DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD"];
        let values: Vec<Option<String>> = PARTS.iter().map(|k| nonempty(k)).collect();
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let missing: Vec<&str> = PARTS
            .iter()
            .zip(&values)
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| *k)
            .collect();
        if !missing.is_empty() {
            return Err(OpsError::manifest(
                "DB Secret",
                format!(
                    "set DATABASE_URL, or all of DB_HOST DB_PORT DB_NAME DB_USER DB_PASSWORD (missing: {})",
                    missing.join(" ")
                ),
            ));
        }
        let [host, port, name, user, password] =
            [0, 1, 2, 3, 4].map(|i| values[i].clone().unwrap_or_default());
        if port.parse::<u16>().is_err() {
            return Err(OpsError::manifest(
                "DB Secret",
                format!("DB_PORT {port:?} is not a port number"),
            ));
        }
        Ok(Some(Self {
            database_url: format!(
                "postgres://{}:{}@{host}:{port}/{}",
                percent_encode(&user),
                percent_encode(&password),
                percent_encode(&name)
            ),
        }))
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so user
/// names and passwords with `@`, `:` or `/` survive inside a URL.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What `up` was asked to deploy. `Default` reproduces `deploy/` as documented.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// Workload namespace; `None` keeps the documented one of the mode
    /// ([`default_namespace`]).
    pub namespace: Option<String>,
    /// Container image for every posture-farm container; `None` keeps the documented one.
    pub image: Option<String>,
    /// Placement mode.
    pub mode: Mode,
    /// Number of cameras (analyzer workloads); `None` keeps the documented number,
    /// or the number of `topics` when those are given.
    pub cameras: Option<usize>,
    /// MQTT topic per camera, in order; empty keeps the documented topics.
    pub topics: Vec<String>,
    /// DB credentials; `None` applies no Secret.
    pub db: Option<DbCredentials>,
    /// MQTT broker host for the analyzers (`MQTT_BROKER` in the documented
    /// ConfigMap); `None` keeps the documented one.
    pub mqtt_broker: Option<String>,
}

/// The rendered plan plus what the operator should know about it.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    /// The workload namespace the plan uses.
    pub namespace: String,
    /// The ordered objects to apply.
    pub plan: ApplyPlan,
    /// Non-fatal findings (e.g. workloads reference a Secret that will not be created).
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

/// Renders the files for `opts` into an ordered apply plan.
pub fn render(files: &[EmbeddedFile], opts: &RenderOptions) -> Result<Rendered, OpsError> {
    let namespace = opts
        .namespace
        .as_deref()
        .unwrap_or(default_namespace(opts.mode));
    let mut warnings = Vec::new();
    let (platform, workloads) = select_documents(files, opts.mode)?;
    let documented_image = workloads
        .first()
        .and_then(|(_, _, doc)| {
            containers(doc)
                .first()
                .and_then(|c| c.get("image"))
                .and_then(Value::as_str)
        })
        .map(str::to_string);
    let workloads = expand_cameras(workloads, opts)?;

    let mut objects = Vec::new();
    let has_namespace_object = platform
        .iter()
        .any(|(_, _, d)| d.get("kind").and_then(Value::as_str) == Some("Namespace"));
    if namespace != "default" && namespace != "kube-system" && !has_namespace_object {
        objects.push(namespace_object(namespace)?);
    }
    let secret_name =
        referenced_secret(&workloads).unwrap_or_else(|| DEFAULT_DB_SECRET.to_string());
    match &opts.db {
        Some(db) => objects.push(db_secret(db, &secret_name, namespace)?),
        None => {
            if referenced_secret(&workloads).is_some() {
                warnings.push(format!(
                    "no DATABASE_URL (or DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD) in the environment: Secret {namespace}/{secret_name} is not applied; analyzers read it only if it exists"
                ));
            }
        }
    }

    for (source, origin, mut doc) in platform.into_iter().chain(workloads) {
        // Each file moves from its documented namespace to --namespace; without
        // it, everything stays where deploy/ puts it.
        let documented = documented_namespace(source);
        let target = opts.namespace.as_deref().unwrap_or(documented);
        set_namespace(&mut doc, documented, target);
        fill_namespace(&mut doc, target);
        if let (Some(broker), Some(data)) =
            (&opts.mqtt_broker, doc.pointer_mut("/data/MQTT_BROKER"))
        {
            *data = Value::String(broker.clone());
        }
        if let (Some(image), Some(documented)) = (&opts.image, &documented_image) {
            set_image(&mut doc, documented, image);
        }
        add_managed_label(&mut doc);
        objects.push(PlannedObject::new(doc, source, &origin)?);
    }
    Ok(Rendered {
        namespace: namespace.to_string(),
        plan: ApplyPlan::new(objects),
        warnings,
    })
}

/// Documents parsed from `(source, origin, document)`.
type Documents = Vec<(Source, String, Value)>;

/// The documents of the files `mode` uses, split into platform objects and
/// workloads (Jobs, ScaledJobs).
fn select_documents(
    files: &[EmbeddedFile],
    mode: Mode,
) -> Result<(Documents, Documents), OpsError> {
    let mut platform = Vec::new();
    let mut workloads = Vec::new();
    for file in files {
        let wanted = matches!(
            (file.source, mode),
            (Source::Scheduler | Source::Generated, _)
                | (Source::Jobs, Mode::RoundRobin)
                | (Source::Keda, Mode::Keda)
        );
        if !wanted {
            continue;
        }
        for (i, doc) in parse_file(file)?.into_iter().enumerate() {
            let origin = format!("{}#{i}", file.path);
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
            if matches!(kind, "Job" | "ScaledJob") {
                workloads.push((file.source, origin, doc));
            } else {
                platform.push((file.source, origin, doc));
            }
        }
    }
    Ok((platform, workloads))
}

/// The labels of every object `up` generates.
fn managed_labels() -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([(
        MANAGED_BY_LABEL.to_string(),
        MANAGED_BY_VALUE.to_string(),
    )]))
}

/// The Namespace object for a namespace deploy/ does not create.
fn namespace_object(namespace: &str) -> Result<PlannedObject, OpsError> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_string()),
            labels: managed_labels(),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    PlannedObject::new(to_value(&ns)?, Source::Generated, "namespace")
}

/// The DB Secret the analyzers read `DATABASE_URL` from.
fn db_secret(db: &DbCredentials, name: &str, namespace: &str) -> Result<PlannedObject, OpsError> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: managed_labels(),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            "DATABASE_URL".to_string(),
            ByteString(db.database_url.clone().into_bytes()),
        )])),
        ..Secret::default()
    };
    PlannedObject::new(to_value(&secret)?, Source::Generated, "DB Secret")
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, OpsError> {
    serde_json::to_value(v).map_err(|e| OpsError::manifest("generated object", e.to_string()))
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

/// The pod spec of a workload or Deployment, if it has one.
fn pod_spec_mut(doc: &mut Value) -> Option<&mut Value> {
    let pointer = match doc.get("kind").and_then(Value::as_str)? {
        "ScaledJob" => "/spec/jobTargetRef/template",
        "Deployment" | "Job" => "/spec/template",
        _ => return None,
    };
    doc.pointer_mut(pointer)
}

fn containers(doc: &Value) -> Vec<&Value> {
    let pointer = match doc.get("kind").and_then(Value::as_str) {
        Some("ScaledJob") => "/spec/jobTargetRef/template/spec",
        _ => "/spec/template/spec",
    };
    let Some(spec) = doc.pointer(pointer) else {
        return Vec::new();
    };
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect()
}

fn for_each_container(doc: &mut Value, mut f: impl FnMut(&mut Value)) {
    let Some(template) = pod_spec_mut(doc) else {
        return;
    };
    for key in ["initContainers", "containers"] {
        if let Some(list) = template
            .pointer_mut(&format!("/spec/{key}"))
            .and_then(Value::as_array_mut)
        {
            list.iter_mut().for_each(&mut f);
        }
    }
}

/// Moves an object from its documented namespace `from` into `to`: its own
/// `metadata.namespace` (or its name, for the documented Namespace object),
/// RBAC subjects, container env vars named `*NAMESPACE` that carry the
/// documented value, and in-cluster service addresses (`<svc>.<from>.svc…`,
/// e.g. the ScaledJob trigger's `scalerAddress`). `kube-system` stays.
fn set_namespace(doc: &mut Value, from: &str, to: &str) {
    if from == to {
        return;
    }
    let swap = |v: &mut Value| {
        if v.as_str() == Some(from) {
            *v = Value::String(to.to_string());
        }
    };
    if doc.get("kind").and_then(Value::as_str) == Some("Namespace") {
        if let Some(name) = doc.pointer_mut("/metadata/name") {
            swap(name);
        }
        return;
    }
    if let Some(ns) = doc.pointer_mut("/metadata/namespace") {
        swap(ns);
    }
    if let Some(subjects) = doc.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects {
            if let Some(ns) = s.get_mut("namespace") {
                swap(ns);
            }
        }
    }
    for_each_container(doc, |c| {
        if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
            for e in env {
                let is_ns = e
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.ends_with("NAMESPACE"));
                if let Some(v) = e.get_mut("value")
                    && is_ns
                {
                    swap(v);
                }
            }
        }
    });
    let (needle, replacement) = (format!(".{from}.svc"), format!(".{to}.svc"));
    fn rewrite(v: &mut Value, needle: &str, replacement: &str) {
        match v {
            Value::String(s) if s.contains(needle) => *s = s.replace(needle, replacement),
            Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, needle, replacement)),
            Value::Object(o) => o.values_mut().for_each(|x| rewrite(x, needle, replacement)),
            _ => {}
        }
    }
    if let Some(spec) = doc.get_mut("spec") {
        rewrite(spec, &needle, &replacement);
    }
}

/// Puts a namespaced object that names no namespace (the `deploy/` Jobs rely
/// on `kubectl apply`'s current namespace) into `namespace`.
fn fill_namespace(doc: &mut Value, namespace: &str) {
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let namespaced = super::plan::kind_info(api_version, kind).is_some_and(|k| k.namespaced);
    if !namespaced || doc.pointer("/metadata/namespace").is_some() {
        return;
    }
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "namespace".to_string(),
            Value::String(namespace.to_string()),
        );
    }
}

/// Replaces the documented posture-farm image in every container.
fn set_image(doc: &mut Value, documented: &str, image: &str) {
    for_each_container(doc, |c| {
        if let Some(v) = c.get_mut("image")
            && v.as_str() == Some(documented)
        {
            *v = Value::String(image.to_string());
        }
    });
}

/// Adds the ownership label to the object and to its pod template, so `down`
/// finds both the object and the pods it spawns.
fn add_managed_label(doc: &mut Value) {
    fn label(meta: &mut Value) {
        let Some(meta) = meta.as_object_mut() else {
            return;
        };
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels
                .entry(MANAGED_BY_LABEL)
                .or_insert_with(|| Value::String(MANAGED_BY_VALUE.to_string()));
        }
    }
    if let Some(meta) = doc.get_mut("metadata") {
        label(meta);
    }
    if let Some(template) = pod_spec_mut(doc) {
        let meta = template
            .as_object_mut()
            .map(|t| t.entry("metadata").or_insert_with(|| json!({})));
        if let Some(meta) = meta {
            label(meta);
        }
    }
}

/// The Secret the workloads' containers read (via `secretKeyRef` or
/// `envFrom.secretRef`), if any.
fn referenced_secret(workloads: &[(Source, String, Value)]) -> Option<String> {
    workloads.iter().find_map(|(_, _, doc)| {
        containers(doc).into_iter().find_map(|c| {
            let from_env = c.get("env").and_then(Value::as_array).and_then(|env| {
                env.iter().find_map(|e| {
                    e.pointer("/valueFrom/secretKeyRef/name")
                        .and_then(Value::as_str)
                })
            });
            let from_env_from = c.get("envFrom").and_then(Value::as_array).and_then(|list| {
                list.iter()
                    .find_map(|e| e.pointer("/secretRef/name").and_then(Value::as_str))
            });
            from_env.or(from_env_from).map(str::to_string)
        })
    })
}

/// The camera's MQTT topic: the `MQTT_TOPIC` env var, or the value of a
/// `--topic` argument (`--topic X` or `--topic=X`), as the documented Jobs
/// and ScaledJobs spell it.
fn topic_of(doc: &Value) -> Option<String> {
    containers(doc).into_iter().find_map(|c| {
        let from_env = c.get("env").and_then(Value::as_array).and_then(|env| {
            env.iter().find_map(|e| {
                (e.get("name").and_then(Value::as_str) == Some(TOPIC_ENV))
                    .then(|| e.get("value").and_then(Value::as_str).map(str::to_string))
                    .flatten()
            })
        });
        let from_args = c.get("args").and_then(Value::as_array).and_then(|args| {
            let args: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
            args.iter()
                .enumerate()
                .find_map(|(i, a)| match a.strip_prefix(TOPIC_ARG) {
                    Some("") => args.get(i + 1).map(|s| s.to_string()),
                    Some(rest) => rest.strip_prefix('=').map(str::to_string),
                    None => None,
                })
        });
        from_env.or(from_args)
    })
}

/// Command-line spelling of the analyzer's topic flag.
const TOPIC_ARG: &str = "--topic";

fn set_topic(doc: &mut Value, topic: &str) {
    for_each_container(doc, |c| {
        if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
            for e in env {
                if e.get("name").and_then(Value::as_str) == Some(TOPIC_ENV) {
                    e["value"] = Value::String(topic.to_string());
                }
            }
        }
        if let Some(args) = c.get_mut("args").and_then(Value::as_array_mut) {
            let mut next_is_topic = false;
            for a in args.iter_mut() {
                if next_is_topic {
                    *a = Value::String(topic.to_string());
                    next_is_topic = false;
                    continue;
                }
                match a.as_str() {
                    Some(TOPIC_ARG) => next_is_topic = true,
                    Some(s) if s.starts_with("--topic=") => {
                        *a = Value::String(format!("{TOPIC_ARG}={topic}"))
                    }
                    _ => {}
                }
            }
        }
    });
}

/// Replaces every string equal to `from` anywhere in `v` by `to` (names of a
/// cloned camera workload appear in labels, container names, file paths).
fn replace_strings(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::String(s) if s == from => *s = to.to_string(),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_strings(x, from, to)),
        Value::Object(o) => o.values_mut().for_each(|x| replace_strings(x, from, to)),
        _ => {}
    }
}

/// Camera `i` (beyond the documented ones) as a copy of the first workload,
/// following the pattern the documented files use: every string of the first
/// that reads `<s>-1` at the same place in the second becomes `<s>-<i>` (name,
/// camera label, topic, …). With a single documented workload, the name and
/// the topic get the `-<i>` suffix.
fn derive_camera(base: &Value, second: Option<&Value>, i: usize) -> Value {
    fn follow(a: &Value, b: &Value, i: usize) -> Value {
        match (a, b) {
            (Value::String(x), Value::String(y)) if *y == format!("{x}-1") => {
                Value::String(format!("{x}-{i}"))
            }
            (Value::Object(x), Value::Object(y)) => Value::Object(
                x.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            y.get(k).map_or_else(|| v.clone(), |w| follow(v, w, i)),
                        )
                    })
                    .collect(),
            ),
            (Value::Array(x), Value::Array(y)) => Value::Array(
                x.iter()
                    .enumerate()
                    .map(|(n, v)| y.get(n).map_or_else(|| v.clone(), |w| follow(v, w, i)))
                    .collect(),
            ),
            _ => a.clone(),
        }
    }
    if let Some(second) = second {
        return follow(base, second, i);
    }
    let mut doc = base.clone();
    let name = base
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    replace_strings(&mut doc, &name, &format!("{name}-{i}"));
    if let Some(topic) = topic_of(base) {
        set_topic(&mut doc, &format!("{topic}-{i}"));
    }
    doc
}

/// Produces one workload per camera. Camera `i` uses the `i`-th documented
/// workload when there is one, else [`derive_camera`]. `--topics` overrides
/// the topics.
fn expand_cameras(
    docs: Vec<(Source, String, Value)>,
    opts: &RenderOptions,
) -> Result<Vec<(Source, String, Value)>, OpsError> {
    let Some(first) = docs.first().cloned() else {
        return Ok(docs);
    };
    let cameras = match (opts.cameras, opts.topics.len()) {
        (Some(n), t) if t > 0 && t != n => {
            return Err(OpsError::manifest(
                "cameras",
                format!("--cameras {n} but {t} topics given; give one topic per camera"),
            ));
        }
        (Some(n), _) => n,
        (None, 0) => docs.len(),
        (None, t) => t,
    };
    if cameras == 0 {
        return Err(OpsError::manifest(
            "cameras",
            "at least one camera is needed",
        ));
    }
    let (source, origin, base) = first;
    let second = docs.get(1).map(|(_, _, d)| d.clone());
    let mut out = Vec::with_capacity(cameras);
    for i in 0..cameras {
        let mut item = match docs.get(i) {
            Some(doc) => doc.clone(),
            None => (
                source,
                format!("{origin} (camera {i})"),
                derive_camera(&base, second.as_ref(), i),
            ),
        };
        if let Some(topic) = opts.topics.get(i) {
            if topic_of(&item.2).is_none() {
                return Err(OpsError::manifest(
                    &item.1,
                    format!("has no {TOPIC_ENV} env var to set the topic in"),
                ));
            }
            set_topic(&mut item.2, topic);
        }
        out.push(item);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
