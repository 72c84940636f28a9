//! The part of kustomize that `deploy/` uses, so `up` builds a mode from the
//! same kustomization files `kubectl apply -k` reads: `resources` (files,
//! and folders holding a `kustomization.yaml`, relative to the
//! kustomization) and `patches` (inline JSON 6902 operations `add`,
//! `replace`, `remove` on targets chosen by group, version, kind, name and
//! namespace). Anything else in a kustomization is refused with its name,
//! so a file that starts using another kustomize feature fails a unit test
//! here instead of silently rendering differently from `kubectl`. Pure.

use serde_json::Value;

use super::EmbeddedFile;
use crate::ops::OpsError;

/// One document of a build, with where it came from (`file#index`).
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// `deploy/…/file.yaml#n`, for messages.
    pub origin: String,
    /// The object.
    pub value: Value,
}

/// The fields of a kustomization this builder understands.
const KNOWN_FIELDS: [&str; 4] = ["apiVersion", "kind", "resources", "patches"];

/// Builds the kustomization in folder `dir` (repository-relative, e.g.
/// `deploy/modes/gpu`) from the embedded files.
pub fn build(files: &[EmbeddedFile], dir: &str) -> Result<Vec<Document>, OpsError> {
    build_in(files, &normalise(dir), &mut Vec::new())
}

fn build_in(
    files: &[EmbeddedFile],
    dir: &str,
    stack: &mut Vec<String>,
) -> Result<Vec<Document>, OpsError> {
    let path = format!("{dir}/kustomization.yaml");
    if stack.contains(&path) {
        return Err(OpsError::manifest(&path, "includes itself"));
    }
    let file = find(files, &path)
        .ok_or_else(|| OpsError::manifest(&path, "not embedded (see manifests::embedded)"))?;
    let kustomization: Value =
        serde_saphyr::from_str(file.text).map_err(|source| OpsError::Yaml {
            file: path.clone(),
            source: Box::new(source),
        })?;
    let map = kustomization
        .as_object()
        .ok_or_else(|| OpsError::manifest(&path, "is not a map"))?;
    if let Some(unknown) = map.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(OpsError::manifest(
            &path,
            format!(
                "uses `{unknown}`, which posture-farm up does not implement (only resources and JSON 6902 patches)"
            ),
        ));
    }
    stack.push(path.clone());
    let mut docs = Vec::new();
    for resource in strings(map.get("resources"), &path, "resources")? {
        let target = normalise(&format!("{dir}/{resource}"));
        let more = match find(files, &target) {
            Some(file) => super::parse_file(file)?
                .into_iter()
                .enumerate()
                .map(|(i, value)| Document {
                    origin: format!("{}#{i}", file.path),
                    value,
                })
                .collect(),
            None => build_in(files, &target, stack)?,
        };
        for doc in more {
            if let Some(dup) = docs
                .iter()
                .find(|d: &&Document| same_id(&d.value, &doc.value))
            {
                return Err(OpsError::manifest(
                    &path,
                    format!("{} and {} are the same object", dup.origin, doc.origin),
                ));
            }
            docs.push(doc);
        }
    }
    stack.pop();
    for patch in map
        .get("patches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        apply_patch(&mut docs, patch, &path)?;
    }
    Ok(docs)
}

fn find<'a>(files: &'a [EmbeddedFile], path: &str) -> Option<&'a EmbeddedFile> {
    files.iter().find(|f| f.path == path)
}

fn strings(v: Option<&Value>, path: &str, field: &str) -> Result<Vec<String>, OpsError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    v.as_array()
        .ok_or_else(|| OpsError::manifest(path, format!("{field} is not a list")))?
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_string)
                .ok_or_else(|| OpsError::manifest(path, format!("{field} holds a non-string")))
        })
        .collect()
}

/// Resolves `.` and `..` segments of a `/`-separated path.
fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn field<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Kustomize's resource id: group/version/kind, namespace and name.
fn same_id(a: &Value, b: &Value) -> bool {
    [
        "/apiVersion",
        "/kind",
        "/metadata/namespace",
        "/metadata/name",
    ]
    .iter()
    .all(|p| field(a, p) == field(b, p))
}

/// Whether `doc` matches a patch target (every given field must match).
fn matches(doc: &Value, target: &serde_json::Map<String, Value>) -> Result<bool, String> {
    let api_version = field(doc, "/apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    for (key, want) in target {
        let want = want
            .as_str()
            .ok_or(format!("target.{key} is not a string"))?;
        let have = match key.as_str() {
            "group" => group,
            "version" => version,
            "kind" => field(doc, "/kind"),
            "name" => field(doc, "/metadata/name"),
            "namespace" => field(doc, "/metadata/namespace"),
            other => return Err(format!("target.{other} is not supported")),
        };
        if have != want {
            return Ok(false);
        }
    }
    Ok(true)
}

fn apply_patch(docs: &mut [Document], patch: &Value, path: &str) -> Result<(), OpsError> {
    let err = |reason: String| OpsError::manifest(path, format!("patch: {reason}"));
    let target = patch
        .get("target")
        .and_then(Value::as_object)
        .ok_or_else(|| err("needs a target".into()))?;
    let text = patch
        .get("patch")
        .and_then(Value::as_str)
        .ok_or_else(|| err("needs an inline `patch` (a JSON 6902 list)".into()))?;
    let ops: Value = serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?;
    let ops = ops
        .as_array()
        .ok_or_else(|| err("only JSON 6902 patches (a list of operations) are supported".into()))?;
    let mut hit = false;
    for doc in docs.iter_mut() {
        if !matches(&doc.value, target).map_err(err)? {
            continue;
        }
        hit = true;
        for op in ops {
            json_patch_op(&mut doc.value, op).map_err(|e| err(format!("{}: {e}", doc.origin)))?;
        }
    }
    if !hit {
        return Err(err("its target matches no resource".into()));
    }
    Ok(())
}

/// Unescapes one JSON pointer token (RFC 6901).
fn token(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

/// Applies one RFC 6902 operation (`add`, `replace`, `remove`).
pub fn json_patch_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let kind = op.get("op").and_then(Value::as_str).ok_or("op missing")?;
    let path = op
        .get("path")
        .and_then(Value::as_str)
        .ok_or("path missing")?;
    let (parent_path, last) = path
        .rsplit_once('/')
        .ok_or(format!("path {path:?} does not start with /"))?;
    let last = token(last);
    let parent = if parent_path.is_empty() {
        Some(&mut *doc)
    } else {
        doc.pointer_mut(parent_path)
    }
    .ok_or(format!("{parent_path} does not exist"))?;
    let value = || {
        op.get("value")
            .cloned()
            .ok_or(format!("{kind} needs a value"))
    };
    match (kind, parent) {
        ("add", Value::Object(map)) => {
            map.insert(last, value()?);
        }
        ("add", Value::Array(list)) => {
            let at = if last == "-" {
                list.len()
            } else {
                index(&last, list.len() + 1)?
            };
            list.insert(at, value()?);
        }
        ("replace", Value::Object(map)) => {
            let slot = map.get_mut(&last).ok_or(format!("{path} does not exist"))?;
            *slot = value()?;
        }
        ("replace", Value::Array(list)) => {
            let at = index(&last, list.len())?;
            list[at] = value()?;
        }
        ("remove", Value::Object(map)) => {
            map.remove(&last).ok_or(format!("{path} does not exist"))?;
        }
        ("remove", Value::Array(list)) => {
            let at = index(&last, list.len())?;
            list.remove(at);
        }
        ("add" | "replace" | "remove", _) => {
            return Err(format!("{parent_path} is not a map or list"));
        }
        (other, _) => {
            return Err(format!(
                "op {other:?} is not supported (add, replace, remove)"
            ));
        }
    }
    Ok(())
}

fn index(token: &str, len: usize) -> Result<usize, String> {
    token
        .parse::<usize>()
        .ok()
        .filter(|i| *i < len)
        .ok_or(format!("index {token:?} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(path: &'static str, text: &'static str) -> EmbeddedFile {
        EmbeddedFile { path, text }
    }

    const JOB: &str = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j, namespace: p}\nspec: {template: {spec: {schedulerName: rr, containers: []}}}\n";

    #[test]
    fn resources_recurse_and_patches_apply_to_their_targets() {
        let files = [
            file("d/jobs/kustomization.yaml", "resources: [j.yaml]\n"),
            file("d/jobs/j.yaml", JOB),
            file(
                "d/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: p}\n",
            ),
            file(
                "d/modes/gpu/kustomization.yaml",
                "resources: [../../jobs, ../../cm.yaml]\npatches:\n- target: {group: batch, version: v1, kind: Job}\n  patch: |-\n    - {op: replace, path: /spec/template/spec/schedulerName, value: gpu}\n    - {op: add, path: /spec/template/spec/priorityClassName, value: hi}\n    - {op: add, path: /spec/template/spec/containers/-, value: {name: c}}\n",
            ),
        ];
        let docs = build(&files, "d/modes/gpu").expect("builds");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].origin, "d/jobs/j.yaml#0");
        assert_eq!(
            docs[0].value["spec"]["template"]["spec"],
            json!({"schedulerName": "gpu", "priorityClassName": "hi", "containers": [{"name": "c"}]})
        );
        assert_eq!(docs[1].value["kind"], "ConfigMap", "untouched");
    }

    #[test]
    fn unsupported_fields_duplicates_and_dead_patches_are_refused() {
        let files = [
            file("k/kustomization.yaml", "namespace: x\nresources: []\n"),
            file("dup/kustomization.yaml", "resources: [a.yaml, b.yaml]\n"),
            file("dup/a.yaml", JOB),
            file("dup/b.yaml", JOB),
            file(
                "dead/kustomization.yaml",
                "resources: [../dup/a.yaml]\npatches:\n- target: {kind: Deployment}\n  patch: '[{op: remove, path: /spec}]'\n",
            ),
            file(
                "smp/kustomization.yaml",
                "resources: [../dup/a.yaml]\npatches:\n- target: {kind: Job}\n  patch: 'spec: {}'\n",
            ),
        ];
        let err = |dir| build(&files, dir).expect_err(dir).to_string();
        assert!(err("k").contains("`namespace`"), "{}", err("k"));
        assert!(err("dup").contains("same object"), "{}", err("dup"));
        assert!(
            err("dead").contains("matches no resource"),
            "{}",
            err("dead")
        );
        assert!(err("smp").contains("JSON 6902"), "{}", err("smp"));
        assert!(
            err("nowhere").contains("not embedded"),
            "{}",
            err("nowhere")
        );
    }

    #[test]
    fn json_patch_operations_follow_rfc_6902() {
        let mut doc = json!({"a": {"b/c": 1, "list": [1, 2]}});
        json_patch_op(
            &mut doc,
            &json!({"op": "replace", "path": "/a/b~1c", "value": 2}),
        )
        .expect("replace");
        json_patch_op(
            &mut doc,
            &json!({"op": "add", "path": "/a/list/0", "value": 0}),
        )
        .expect("insert");
        json_patch_op(&mut doc, &json!({"op": "remove", "path": "/a/list/2"})).expect("remove");
        assert_eq!(doc, json!({"a": {"b/c": 2, "list": [0, 1]}}));
        for bad in [
            json!({"op": "replace", "path": "/a/missing", "value": 1}),
            json!({"op": "remove", "path": "/a/list/9"}),
            json!({"op": "add", "path": "/x/y", "value": 1}),
            json!({"op": "move", "from": "/a", "path": "/b"}),
            json!({"op": "add", "path": "/a/z"}),
        ] {
            assert!(json_patch_op(&mut doc, &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_normalise() {
        assert_eq!(normalise("deploy/modes/gpu/../../jobs"), "deploy/jobs");
        assert_eq!(normalise("./deploy//farm/"), "deploy/farm");
    }
}
