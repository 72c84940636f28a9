//! The structural rules `up`'s flags apply to the documented manifests:
//! namespace, image, environment variables, cameras and their topics, the
//! ownership label, cluster-wide RBAC, priorities, GPU inference, and the
//! checksum that restarts a component when its configuration changes. Each
//! rule is a plain function over a JSON manifest. Pure.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::kustomize::Document;
use crate::ops::plan::COMPONENT_LABEL;
use crate::ops::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, OpsError};

/// Environment variable carrying an analyzer's MQTT topic in the Jobs.
pub const TOPIC_ENV: &str = "MQTT_TOPIC";

/// Command-line spelling of the analyzer's topic flag (the ScaledJobs).
const TOPIC_ARG: &str = "--topic";

/// Annotation on a Role or RoleBinding that `--all-namespaces` turns into
/// its cluster-wide counterpart.
pub const ALL_NAMESPACES_ANNOTATION: &str = "posture-farm/all-namespaces";

/// Annotation on pod templates whose ConfigMaps differ from `deploy/`: a
/// checksum of their data, so a changed configuration rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "posture-farm/config-hash";

/// The `kind` of a manifest.
pub fn kind(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or_default()
}

/// `metadata.name`.
pub fn name(doc: &Value) -> &str {
    doc.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The component label (`analyzer`, `broker`, …).
pub fn component(doc: &Value) -> Option<&str> {
    doc.pointer("/metadata/labels")
        .and_then(|l| l.get(COMPONENT_LABEL))
        .and_then(Value::as_str)
}

/// Whether a manifest is an analyzer workload (a Job or ScaledJob of
/// component `analyzer`).
pub fn is_analyzer_workload(doc: &Value) -> bool {
    matches!(kind(doc), "Job" | "ScaledJob") && component(doc) == Some("analyzer")
}

/// JSON pointer of the pod template of a workload kind.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "ScaledJob" => Some("/spec/jobTargetRef/template"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => Some("/spec/template"),
        _ => None,
    }
}

/// The pod template of a workload, if it has one.
pub fn pod_template_mut(doc: &mut Value) -> Option<&mut Value> {
    let pointer = template_pointer(kind(doc))?;
    doc.pointer_mut(pointer)
}

/// The pod template of a workload, if it has one.
pub fn pod_template(doc: &Value) -> Option<&Value> {
    doc.pointer(template_pointer(kind(doc))?)
}

/// Every container (init containers first).
pub fn containers(doc: &Value) -> Vec<&Value> {
    let Some(spec) = pod_template(doc).and_then(|t| t.get("spec")) else {
        return Vec::new();
    };
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect()
}

/// Calls `f` on every container (init containers first).
pub fn for_each_container(doc: &mut Value, mut f: impl FnMut(&mut Value)) {
    let Some(template) = pod_template_mut(doc) else {
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

/// Moves an object from the documented namespace `from` into `to`: its own
/// `metadata.namespace` (or its name, for the Namespace object), RBAC
/// subjects, container env vars named `*NAMESPACE` that carry the documented
/// value, and in-cluster service addresses (`<svc>.<from>.svc…`, e.g. the
/// ScaledJob trigger's `scalerAddress` and `PROMETHEUS_URL`).
pub fn set_namespace(doc: &mut Value, from: &str, to: &str) {
    if from == to {
        return;
    }
    let swap = |v: &mut Value| {
        if v.as_str() == Some(from) {
            *v = Value::String(to.to_string());
        }
    };
    if kind(doc) == "Namespace" {
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
    if let Some(spec) = doc.get_mut("spec") {
        rewrite_strings(spec, &|s| s.contains(&needle), &|s| {
            s.replace(&needle, &replacement)
        });
    }
}

/// Replaces, anywhere in `v`, each string for which `pick` holds by `with(s)`.
fn rewrite_strings(v: &mut Value, pick: &dyn Fn(&str) -> bool, with: &dyn Fn(&str) -> String) {
    match v {
        Value::String(s) if pick(s) => *s = with(s),
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_strings(x, pick, with)),
        Value::Object(o) => o.values_mut().for_each(|x| rewrite_strings(x, pick, with)),
        _ => {}
    }
}

/// Replaces the image `from` in every container.
pub fn set_image(doc: &mut Value, from: &str, to: &str) {
    for_each_container(doc, |c| {
        if let Some(v) = c.get_mut("image")
            && v.as_str() == Some(from)
        {
            *v = Value::String(to.to_string());
        }
    });
}

/// Sets the value of env var `var` in every container that has it; returns
/// how many were set.
pub fn set_env(doc: &mut Value, var: &str, value: &str) -> usize {
    let mut n = 0;
    for_each_container(doc, |c| {
        for e in c
            .get_mut("env")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if e.get("name").and_then(Value::as_str) == Some(var) {
                *e = json!({"name": var, "value": value});
                n += 1;
            }
        }
    });
    n
}

/// Sets env var `var` in the main containers (not init containers): the
/// value is replaced where the variable exists, appended where it does not.
pub fn put_env(doc: &mut Value, var: &str, value: &str) {
    let Some(list) = pod_template_mut(doc)
        .and_then(|t| t.pointer_mut("/spec/containers"))
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in list {
        let Some(map) = c.as_object_mut() else {
            continue;
        };
        let env = map.entry("env").or_insert_with(|| json!([]));
        let Some(env) = env.as_array_mut() else {
            continue;
        };
        let entry = json!({"name": var, "value": value});
        match env
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(var))
        {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
    }
}

/// Renames every `secretKeyRef`/`secretRef` to Secret `from` into `to`.
pub fn rename_secret(doc: &mut Value, from: &str, to: &str) {
    const REFS: [(&str, &str); 2] = [
        ("env", "/valueFrom/secretKeyRef/name"),
        ("envFrom", "/secretRef/name"),
    ];
    for_each_container(doc, |c| {
        for (list, pointer) in REFS {
            for e in c
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(n) = e.pointer_mut(pointer)
                    && n.as_str() == Some(from)
                {
                    *n = Value::String(to.to_string());
                }
            }
        }
    });
}

/// Adds the ownership label to the object and to its pod template, so
/// `down` finds both the object and the pods it spawns.
pub fn add_managed_label(doc: &mut Value) {
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
    if let Some(template) = pod_template_mut(doc) {
        let meta = template
            .as_object_mut()
            .map(|t| t.entry("metadata").or_insert_with(|| json!({})));
        if let Some(meta) = meta {
            label(meta);
        }
    }
}

/// `--all-namespaces`: a Role or RoleBinding marked with
/// [`ALL_NAMESPACES_ANNOTATION`] becomes a ClusterRole or
/// ClusterRoleBinding (same name, same rules); returns whether it changed.
pub fn make_cluster_wide(doc: &mut Value) -> bool {
    let marked = doc
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ALL_NAMESPACES_ANNOTATION))
        .is_some();
    let cluster_kind = match kind(doc) {
        "Role" if marked => "ClusterRole",
        "RoleBinding" if marked => "ClusterRoleBinding",
        _ => return false,
    };
    doc["kind"] = json!(cluster_kind);
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("namespace");
    }
    if let Some(role_ref) = doc.get_mut("roleRef") {
        role_ref["kind"] = json!("ClusterRole");
    }
    true
}

/// The camera's MQTT topic: the `MQTT_TOPIC` env var, or the value of a
/// `--topic` argument (`--topic X` or `--topic=X`).
pub fn topic_of(doc: &Value) -> Option<String> {
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

fn set_topic(doc: &mut Value, topic: &str) {
    set_env(doc, TOPIC_ENV, topic);
    for_each_container(doc, |c| {
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

/// Camera `i` (beyond the documented ones) as a copy of the first workload,
/// following the pattern the documented files use: every string of the first
/// that reads `<s>-1` at the same place in the second becomes `<s>-<i>` (name,
/// camera label, topic, …). With a single documented workload, the name and
/// the topic get the `-<i>` suffix.
pub fn derive_camera(base: &Value, second: Option<&Value>, i: usize) -> Value {
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
    let old = name(base).to_string();
    let new = format!("{old}-{i}");
    rewrite_strings(&mut doc, &|s| s == old, &|_| new.clone());
    if let Some(topic) = topic_of(base) {
        set_topic(&mut doc, &format!("{topic}-{i}"));
    }
    doc
}

/// Produces one workload per camera. Camera `i` uses the `i`-th documented
/// workload when there is one, else [`derive_camera`]. `topics` (when not
/// empty) override the topics; `cameras` defaults to the documented count,
/// or the number of topics.
pub fn expand_cameras(
    docs: Vec<Document>,
    cameras: Option<usize>,
    topics: &[String],
) -> Result<Vec<Document>, OpsError> {
    let Some(first) = docs.first().cloned() else {
        return Ok(docs);
    };
    let count = match (cameras, topics.len()) {
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
    if count == 0 {
        return Err(OpsError::manifest(
            "cameras",
            "at least one camera is needed",
        ));
    }
    let second = docs.get(1).map(|d| d.value.clone());
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mut item = match docs.get(i) {
            Some(doc) => doc.clone(),
            None => Document {
                origin: format!("{} (camera {i})", first.origin),
                value: derive_camera(&first.value, second.as_ref(), i),
            },
        };
        if let Some(topic) = topics.get(i) {
            if topic_of(&item.value).is_none() {
                return Err(OpsError::manifest(
                    &item.origin,
                    format!("has no {TOPIC_ENV} env var or --topic argument to set the topic in"),
                ));
            }
            set_topic(&mut item.value, topic);
        }
        out.push(item);
    }
    Ok(out)
}

/// `priorityClassName` of the analyzer of `camera` (its `camera` label).
pub fn set_priority_class(doc: &mut Value, camera: &str, class: &str) -> bool {
    let is_camera = doc
        .pointer("/metadata/labels/camera")
        .and_then(Value::as_str)
        == Some(camera);
    match pod_template_mut(doc).and_then(|t| t.get_mut("spec")) {
        Some(spec) if is_camera => {
            spec["priorityClassName"] = json!(class);
            true
        }
        _ => false,
    }
}

/// How analyzers use the node's GPU (`up --gpu-inference`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInference {
    /// Image of the analyzers (the `-gpu` variant).
    pub image: String,
    /// `runtimeClassName` (K3s: `nvidia`); `None` leaves the runtime alone.
    pub runtime_class: Option<String>,
    /// `POSE_DEVICE` of the analyzers (`auto`, `cuda`, `tensorrt`).
    pub device: String,
}

/// The extended resource the NVIDIA device plugin advertises.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// An analyzer on the GPU: the GPU image, one `nvidia.com/gpu`, the runtime
/// class, `POSE_DEVICE`, and a writable cache for TensorRT engines.
pub fn use_gpu(doc: &mut Value, gpu: &GpuInference) {
    if let Some(spec) = pod_template_mut(doc).and_then(|t| t.get_mut("spec"))
        && let Some(class) = &gpu.runtime_class
    {
        spec["runtimeClassName"] = json!(class);
    }
    for_each_container(doc, |c| {
        c["image"] = json!(gpu.image);
        let resources = c
            .as_object_mut()
            .map(|m| m.entry("resources").or_insert_with(|| json!({})));
        if let Some(resources) = resources {
            let limits = resources
                .as_object_mut()
                .map(|r| r.entry("limits").or_insert_with(|| json!({})));
            if let Some(limits) = limits {
                limits[GPU_RESOURCE] = json!("1");
            }
        }
    });
    put_env(doc, "POSE_DEVICE", &gpu.device);
    // TensorRT caches its engines under $XDG_CACHE_HOME; the root file
    // system is read-only, /data is the pod's writable volume.
    put_env(doc, "XDG_CACHE_HOME", "/data/.cache");
}

/// The ConfigMaps a pod template reads (env, envFrom, volumes).
fn referenced_config_maps(doc: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for c in containers(doc) {
        for e in c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            names.extend(
                e.pointer("/configMapRef/name")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            );
        }
        for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
            names.extend(
                e.pointer("/valueFrom/configMapKeyRef/name")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            );
        }
    }
    let volumes = pod_template(doc)
        .and_then(|t| t.pointer("/spec/volumes"))
        .and_then(Value::as_array);
    for v in volumes.into_iter().flatten() {
        names.extend(
            v.pointer("/configMap/name")
                .and_then(Value::as_str)
                .map(str::to_string),
        );
    }
    names.sort();
    names.dedup();
    names
}

/// 64-bit FNV-1a: a stable checksum (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Marks the pod templates whose ConfigMaps differ from the documented
/// ones with [`CONFIG_HASH_ANNOTATION`] (a checksum of those ConfigMaps'
/// data), so changing the configuration with `up` restarts exactly the
/// components that read it. With the documented configuration nothing is
/// added, and the objects stay those of `kubectl apply -k`.
pub fn mark_config_changes(docs: &mut [Document], documented: &BTreeMap<String, Value>) {
    let current = config_map_data(docs);
    for doc in docs.iter_mut() {
        let refs = referenced_config_maps(&doc.value);
        let changed = refs.iter().any(|n| {
            current
                .get(n)
                .is_some_and(|data| documented.get(n) != Some(data))
        });
        if !changed {
            continue;
        }
        let mut text = String::new();
        for n in &refs {
            text.push_str(n);
            text.push('\0');
            text.push_str(&current.get(n).map(Value::to_string).unwrap_or_default());
            text.push('\0');
        }
        let hash = format!("{:016x}", fnv1a(text.as_bytes()));
        if let Some(template) = pod_template_mut(&mut doc.value)
            && let Some(t) = template.as_object_mut()
        {
            let meta = t.entry("metadata").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
                annotations[CONFIG_HASH_ANNOTATION] = json!(hash);
            }
        }
    }
}

/// The data of each ConfigMap of `docs`, by name.
pub fn config_map_data(docs: &[Document]) -> BTreeMap<String, Value> {
    docs.iter()
        .filter(|d| kind(&d.value) == "ConfigMap")
        .map(|d| {
            (
                name(&d.value).to_string(),
                d.value.get("data").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}
