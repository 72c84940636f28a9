//! Placement of Job and KEDA ScaledJob manifests on chosen nodes.
//!
//! Deciding where is [`posture_core::spread`]'s job; this module only acts:
//! - [`parse_workloads`] reads YAML documents (one workload each; other kinds
//!   are refused with a clear error, nothing is silently dropped);
//! - [`pin`] patches one manifest, purely: a required node affinity term on a
//!   node label (default `gpu-node`, value the node name) ANDed into every
//!   existing required term, or `spec.template.spec.nodeName` for plain Jobs
//!   in node-name mode; re-pinning replaces the previous pin, so it is
//!   idempotent;
//! - [`apply`] sends the patched object with server-side apply (field manager
//!   `posture-farm`, force), so re-running `place --apply` converges;
//!
//! Nodes get their `gpu-node=<name>` label from
//! [`crate::workload::label_gpu_nodes`].
//!
//! A Job's pod template is immutable once the Job exists: re-applying a Job
//! pinned to another node is refused by the API server (422) and reported;
//! ScaledJobs can be re-pinned freely.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

pub use crate::workload::WorkloadKind;
use crate::workload::{
    FIELD_MANAGER, GPU_NODE_LABEL, api_resource, pin_requirement, pod_spec_pointer,
};

/// Why a manifest cannot be placed or applied.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// Not YAML.
    #[error("{origin}: not valid YAML")]
    Yaml {
        /// Where the text came from.
        origin: String,
        /// The parser's error.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A document that is not a Job or ScaledJob, or lacks required fields.
    #[error("{origin}: {reason}")]
    Invalid {
        /// The document (`file.yaml#2`).
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API server refused or failed a request.
    #[error("{what}")]
    Api {
        /// What was being done.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// One workload manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Job or ScaledJob.
    pub kind: WorkloadKind,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, if set (else the caller's default applies).
    pub namespace: Option<String>,
    /// Where it came from (`file.yaml#2`), for messages.
    pub origin: String,
    /// The whole object.
    pub object: Value,
}

/// How a workload is pinned to its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinMode {
    /// Required node affinity `key In [node]`.
    Affinity {
        /// The node label matched (`gpu-node`).
        label_key: String,
    },
    /// `nodeName` for plain Jobs (bypasses the scheduler); ScaledJobs still
    /// get affinity on `label_key`.
    NodeName {
        /// The node label ScaledJobs are pinned on.
        label_key: String,
    },
}

impl Default for PinMode {
    fn default() -> Self {
        Self::Affinity {
            label_key: GPU_NODE_LABEL.to_string(),
        }
    }
}

/// Parses YAML text (one or more `---` documents) into workloads. Empty
/// documents are skipped; every other document must be a Job
/// (`batch/v1`) or ScaledJob (`keda.sh/v1alpha1`) with a name and a pod
/// template.
pub fn parse_workloads(text: &str, origin: &str) -> Result<Vec<Workload>, PlaceError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|source| PlaceError::Yaml {
            origin: origin.to_string(),
            source: Box::new(source),
        })?;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let origin = format!("{origin}#{}", i + 1);
        out.push(workload(doc, origin)?);
    }
    Ok(out)
}

fn workload(object: Value, origin: String) -> Result<Workload, PlaceError> {
    let invalid = |reason: String| PlaceError::Invalid {
        origin: origin.clone(),
        reason,
    };
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    let kind = match (api_version, kind) {
        (Some("batch/v1"), Some("Job")) => WorkloadKind::Job,
        (Some(v), Some("ScaledJob")) if v.starts_with("keda.sh/") => {
            if v != "keda.sh/v1alpha1" {
                return Err(invalid(format!(
                    "ScaledJob apiVersion {v} is not supported (keda.sh/v1alpha1)"
                )));
            }
            WorkloadKind::ScaledJob
        }
        (v, k) => {
            return Err(invalid(format!(
                "expected a Job (batch/v1) or ScaledJob (keda.sh/v1alpha1), found {} {}",
                v.unwrap_or("<no apiVersion>"),
                k.unwrap_or("<no kind>")
            )));
        }
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("metadata.name is missing".into()))?
        .to_string();
    if !object
        .pointer(pod_spec_pointer(kind))
        .is_some_and(Value::is_object)
    {
        return Err(invalid(format!(
            "{} {name} has no pod template ({})",
            kind.kind_name(),
            pod_spec_pointer(kind)
                .trim_start_matches('/')
                .replace('/', ".")
        )));
    }
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Workload {
        kind,
        name,
        namespace,
        origin,
        object,
    })
}

/// Returns a copy of `w`'s manifest pinned to `node`.
pub fn pin(w: &Workload, node: &str, mode: &PinMode) -> Value {
    let mut object = w.object.clone();
    let (label_key, node_name) = match mode {
        PinMode::Affinity { label_key } => (label_key.as_str(), false),
        PinMode::NodeName { label_key } => (label_key.as_str(), w.kind == WorkloadKind::Job),
    };
    let Some(spec) = object
        .pointer_mut(pod_spec_pointer(w.kind))
        .and_then(Value::as_object_mut)
    else {
        // parse_workloads guarantees the pod spec; nothing to pin otherwise.
        return object;
    };
    if node_name {
        spec.insert("nodeName".into(), json!(node));
        return object;
    }
    spec.remove("nodeName");
    let ours = serde_json::to_value(pin_requirement(label_key, node)).unwrap_or_default();
    let required = spec
        .entry("affinity")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(|a| a.entry("nodeAffinity").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
        .map(|na| {
            na.entry("requiredDuringSchedulingIgnoredDuringExecution")
                .or_insert_with(|| json!({}))
        })
        .and_then(Value::as_object_mut)
        .map(|r| r.entry("nodeSelectorTerms").or_insert_with(|| json!([])));
    let Some(Value::Array(terms)) = required else {
        return object;
    };
    if terms.is_empty() {
        terms.push(json!({}));
    }
    // Terms are ORed: AND our expression into each, replacing any earlier pin.
    for term in terms.iter_mut() {
        let Some(term) = term.as_object_mut() else {
            continue;
        };
        let exprs = term.entry("matchExpressions").or_insert_with(|| json!([]));
        if let Value::Array(exprs) = exprs {
            exprs.retain(|e| e.get("key").and_then(Value::as_str) != Some(label_key));
            exprs.push(ours.clone());
        }
    }
    object
}

/// Fields the server owns, removed before apply (an applied object carrying
/// them is refused or fights the server).
fn strip_server_fields(object: &mut Value) {
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(f);
        }
    }
}

/// Server-side applies a (patched) manifest of `w` in its namespace or
/// `default_namespace`, returning the object the server stored.
pub async fn apply(
    client: &Client,
    w: &Workload,
    mut object: Value,
    default_namespace: &str,
) -> Result<DynamicObject, PlaceError> {
    strip_server_fields(&mut object);
    let namespace = w.namespace.as_deref().unwrap_or(default_namespace);
    let ar = api_resource(w.kind);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let stored = api
        .patch(&w.name, &params, &Patch::Apply(&object))
        .await
        .map_err(|source| PlaceError::Api {
            what: format!(
                "server-side apply of {} {namespace}/{} ({})",
                w.kind.kind_name(),
                w.name,
                w.origin
            ),
            source,
        })?;
    tracing::info!(kind = w.kind.kind_name(), namespace, name = %stored.name_any(), "applied");
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ApiMock, status_json};

    const SCALED_JOB: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata:
  name: posture-cam1
  namespace: posture
spec:
  jobTargetRef:
    template:
      spec:
        containers:
          - name: analyzer
            image: posture-farm:latest
        restartPolicy: Never
  triggers:
    - type: external
      metadata:
        scalerAddress: posture-farm-scaler.posture:9090
"#;

    const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: posture-cam2
spec:
  template:
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions:
                  - { key: kubernetes.io/arch, operator: In, values: [arm64] }
              - matchExpressions:
                  - { key: gpu-node, operator: In, values: [old] }
      containers: [{ name: analyzer, image: posture-farm:latest }]
      restartPolicy: Never
"#;

    fn one(text: &str) -> Workload {
        parse_workloads(text, "t.yaml").unwrap().remove(0)
    }

    #[test]
    fn parses_multi_document_files_and_refuses_other_kinds() {
        let text = format!("{SCALED_JOB}\n---\n{JOB}\n---\n");
        let w = parse_workloads(&text, "f.yaml").unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].kind, WorkloadKind::ScaledJob);
        assert_eq!(w[0].namespace.as_deref(), Some("posture"));
        assert_eq!(w[1].name, "posture-cam2");
        assert_eq!(w[1].origin, "f.yaml#2");

        let err = parse_workloads("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "p.yaml")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.yaml#1: expected a Job (batch/v1) or ScaledJob (keda.sh/v1alpha1), found v1 Pod"
        );
        let err = parse_workloads(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n",
            "j",
        )
        .unwrap_err();
        assert!(err.to_string().contains("no pod template"), "{err}");
        assert!(matches!(
            parse_workloads("a: [", "bad").unwrap_err(),
            PlaceError::Yaml { .. }
        ));
    }

    #[test]
    fn scaled_job_gets_required_affinity_idempotently() {
        let w = one(SCALED_JOB);
        let mode = PinMode::default();
        let pinned = pin(&w, "agx", &mode);
        assert_eq!(
            pinned
                .pointer("/spec/jobTargetRef/template/spec/affinity")
                .unwrap(),
            &json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "gpu-node", "operator": "In", "values": ["agx"]}
                ]}]
            }}})
        );
        // Re-pinning replaces, never accumulates.
        let again = Workload {
            object: pinned.clone(),
            ..w.clone()
        };
        let repinned = pin(&again, "orin", &mode);
        let exprs = repinned
            .pointer("/spec/jobTargetRef/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions")
            .unwrap();
        assert_eq!(
            exprs,
            &json!([{"key": "gpu-node", "operator": "In", "values": ["orin"]}])
        );
        assert_eq!(pin(&again, "agx", &mode), pinned);
        // ScaledJobs get affinity even in node-name mode.
        let nn = pin(
            &w,
            "agx",
            &PinMode::NodeName {
                label_key: "gpu-node".into(),
            },
        );
        assert_eq!(nn, pinned);
    }

    #[test]
    fn job_terms_are_anded_and_node_name_mode_sets_node_name() {
        let w = one(JOB);
        let pinned = pin(
            &w,
            "agx",
            &PinMode::Affinity {
                label_key: "gpu-node".into(),
            },
        );
        let terms = pinned
            .pointer("/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
            .unwrap();
        assert_eq!(
            terms,
            &json!([
                {"matchExpressions": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]},
                    {"key": "gpu-node", "operator": "In", "values": ["agx"]}
                ]},
                {"matchExpressions": [
                    {"key": "gpu-node", "operator": "In", "values": ["agx"]}
                ]}
            ])
        );
        let nn = pin(
            &w,
            "orin",
            &PinMode::NodeName {
                label_key: "gpu-node".into(),
            },
        );
        assert_eq!(
            nn.pointer("/spec/template/spec/nodeName"),
            Some(&json!("orin"))
        );
        // Switching back to affinity drops the nodeName.
        let back = pin(
            &Workload {
                object: nn,
                ..w.clone()
            },
            "agx",
            &PinMode::default(),
        );
        assert_eq!(back.pointer("/spec/template/spec/nodeName"), None);
    }

    #[tokio::test]
    async fn apply_is_server_side_apply_with_our_field_manager() {
        let (client, mut mock) = ApiMock::new();
        let sj = one(SCALED_JOB);
        let mut patched = pin(&sj, "agx", &PinMode::default());
        patched["status"] = json!({"conditions": []});
        patched["metadata"]["resourceVersion"] = json!("42");
        let job = one(JOB);
        let job_patched = pin(&job, "orin", &PinMode::default());
        let expected_sj = {
            let mut v = patched.clone();
            strip_server_fields(&mut v);
            v
        };
        let server = tokio::spawn(async move {
            let r = mock
                .expect_patch("/apis/keda.sh/v1alpha1/namespaces/posture/scaledjobs/posture-cam1")
                .await;
            assert_eq!(r.query, "&force=true&fieldManager=posture-farm");
            assert_eq!(r.content_type, "application/apply-patch+yaml");
            assert_eq!(r.body, expected_sj);
            let mut stored = r.body.clone();
            stored["metadata"]["resourceVersion"] = json!("43");
            r.respond(200, stored);

            let r = mock
                .expect_patch("/apis/batch/v1/namespaces/default/jobs/posture-cam2")
                .await;
            assert_eq!(r.query, "&force=true&fieldManager=posture-farm");
            r.respond(
                422,
                status_json(
                    422,
                    "Invalid",
                    "Job.batch \"posture-cam2\" is invalid: spec.template: Invalid value: field is immutable",
                ),
            );
        });
        let stored = apply(&client, &sj, patched, "default").await.unwrap();
        assert_eq!(stored.metadata.resource_version.as_deref(), Some("43"));
        let err = apply(&client, &job, job_patched, "default")
            .await
            .unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("Job default/posture-cam2"), "{text}");
        assert!(text.contains("immutable"), "{text}");
        server.await.unwrap();
    }
}
