//! Every manifest under `deploy/` — and everything `up` renders, in every
//! mode and with the flags that add or change fields — must be a valid
//! Kubernetes object: parsed into its typed `k8s-openapi` struct and
//! serialised back without losing a field (an unknown or misspelt field
//! would vanish in the round trip, so this rejects unknown fields, as the
//! API server's strict field validation would). KEDA objects have no typed
//! struct here: their embedded pod templates are checked the same way and
//! the rest against the fields of KEDA's v2 ScaledJob schema. When CI has
//! rendered each mode with `kubectl kustomize` (`POSTURE_KUSTOMIZE_DIR`),
//! `up`'s rendering is compared with it object for object.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) && path.file_name().and_then(|n| n.to_str()) != Some("kustomization.yaml")
            && !path.components().any(|c| c.as_os_str() == "compose")
        {
            out.push(path);
        }
    }
}

/// Drops nulls and empty maps/lists the typed model omits when serialising.
fn normalise(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalise(v)))
                .filter(|(_, v)| !matches!(v, Value::Object(m) if m.is_empty()))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        other => other.clone(),
    }
}

/// First path where `a` has something `b` lacks or differs.
fn diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.iter().find_map(|(k, v)| match y.get(k) {
            None => Some(format!("{path}.{k} (unknown field)")),
            Some(w) => diff(v, w, &format!("{path}.{k}")),
        }),
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{path} (length)"));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| diff(v, w, &format!("{path}[{i}]")))
        }
        // Quantities and int-or-string may change representation.
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            (n.to_string() != *s).then(|| format!("{path} ({n} vs {s:?})"))
        }
        _ => (a != b).then(|| format!("{path} ({a} vs {b})")),
    }
}

fn round_trip<T: DeserializeOwned + serde::Serialize>(doc: &Value) -> Result<(), String> {
    let typed: T =
        serde_json::from_value(doc.clone()).map_err(|e| format!("does not parse: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match diff(&normalise(doc), &normalise(&back), "") {
        None => Ok(()),
        Some(d) => Err(format!("field lost in round trip: {d}")),
    }
}

fn check_keda(doc: &Value) -> Result<(), String> {
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    let kind = doc["kind"].as_str().unwrap_or_default();
    let spec = doc.get("spec").ok_or("missing spec")?;
    match kind {
        "ScaledJob" => {
            const KNOWN: &[&str] = &[
                "jobTargetRef",
                "pollingInterval",
                "successfulJobsHistoryLimit",
                "failedJobsHistoryLimit",
                "envSourceContainerName",
                "minReplicaCount",
                "maxReplicaCount",
                "rolloutStrategy",
                "rollout",
                "scalingStrategy",
                "triggers",
            ];
            for k in spec.as_object().ok_or("spec is not a map")?.keys() {
                if !KNOWN.contains(&k.as_str()) {
                    return Err(format!("spec.{k} is not a ScaledJob field"));
                }
            }
            let template = &spec["jobTargetRef"]["template"];
            round_trip::<PodTemplateSpec>(template)
                .map_err(|e| format!("jobTargetRef.template: {e}"))?;
            let triggers = spec["triggers"]
                .as_array()
                .ok_or("spec.triggers must be a list")?;
            for t in triggers {
                if t["type"].as_str().is_none() {
                    return Err("every trigger needs a type".into());
                }
                if t["type"] == "external" && t["metadata"]["scalerAddress"].as_str().is_none() {
                    return Err("external trigger without metadata.scalerAddress".into());
                }
            }
            Ok(())
        }
        other => Err(format!("unexpected keda.sh kind {other}")),
    }
}

fn check(doc: &Value) -> Result<(), String> {
    use k8s_openapi::api::{apps, batch, core, networking, policy, rbac, scheduling};
    let api_version = doc["apiVersion"].as_str().ok_or("missing apiVersion")?;
    let kind = doc["kind"].as_str().ok_or("missing kind")?;
    doc["metadata"]["name"]
        .as_str()
        .ok_or("missing metadata.name")?;
    match (api_version, kind) {
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(doc),
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>(doc),
        ("v1", "Secret") => round_trip::<core::v1::Secret>(doc),
        ("v1", "Service") => round_trip::<core::v1::Service>(doc),
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>(doc),
        ("v1", "Pod") => round_trip::<core::v1::Pod>(doc),
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(doc),
        ("apps/v1", "StatefulSet") => round_trip::<apps::v1::StatefulSet>(doc),
        ("apps/v1", "DaemonSet") => round_trip::<apps::v1::DaemonSet>(doc),
        ("batch/v1", "Job") => round_trip::<batch::v1::Job>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<rbac::v1::ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<rbac::v1::ClusterRoleBinding>(doc)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::v1::Role>(doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<rbac::v1::RoleBinding>(doc),
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            round_trip::<networking::v1::NetworkPolicy>(doc)
        }
        ("policy/v1", "PodDisruptionBudget") => round_trip::<policy::v1::PodDisruptionBudget>(doc),
        ("scheduling.k8s.io/v1", "PriorityClass") => {
            round_trip::<scheduling::v1::PriorityClass>(doc)
        }
        ("keda.sh/v1alpha1", _) => check_keda(doc),
        other => Err(format!("no typed check for {other:?}: add one")),
    }
}

#[test]
fn every_manifest_in_deploy_is_a_valid_typed_object() {
    let mut files = Vec::new();
    yaml_files(&repo_root().join("deploy"), &mut files);
    files.sort();
    assert!(!files.is_empty(), "no manifests found under deploy/");
    let mut problems = Vec::new();
    let mut count = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let docs: Vec<Value> = match serde_saphyr::from_multiple(&text) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{}: not YAML: {e}", file.display()));
                continue;
            }
        };
        for (i, doc) in docs.into_iter().enumerate() {
            if doc.is_null() {
                continue;
            }
            count += 1;
            if let Err(e) = check(&doc) {
                problems.push(format!(
                    "{} document {i} ({} {}): {e}",
                    file.display(),
                    doc["kind"].as_str().unwrap_or("?"),
                    doc["metadata"]["name"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "invalid manifests:\n{}",
        problems.join("\n")
    );
    assert!(
        count >= 13,
        "expected at least the scheduler and ten Jobs, found {count} objects"
    );
}

#[test]
fn the_ten_round_robin_jobs_are_as_documented() {
    let text = std::fs::read_to_string(repo_root().join("deploy/jobs/posture-jobs.yaml")).unwrap();
    let docs: Vec<k8s_openapi::api::batch::v1::Job> = serde_saphyr::from_multiple(&text).unwrap();
    let names: Vec<String> = docs
        .iter()
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    let mut expected = vec!["posture-pi1".to_string()];
    expected.extend((1..10).map(|i| format!("posture-pi1-{i}")));
    assert_eq!(names, expected);
    for job in &docs {
        let spec = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(spec.scheduler_name.as_deref(), Some("rr-scheduler"));
        let labels = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("posture"));
        let env = spec.containers[0].env.as_ref().unwrap();
        let topic = env
            .iter()
            .find(|e| e.name == "MQTT_TOPIC")
            .and_then(|e| e.value.clone());
        let camera = job
            .metadata
            .name
            .as_ref()
            .unwrap()
            .trim_start_matches("posture-");
        assert_eq!(topic, Some(format!("images/{camera}")));
    }
}

#[test]
fn the_round_trip_check_catches_unknown_fields() {
    let doc: Value = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"schedulerNmae": "rr-scheduler", "containers": []}}}
    });
    let err = check(&doc).unwrap_err();
    assert!(err.contains("schedulerNmae"), "{err}");
}

fn check_all<'a>(docs: impl IntoIterator<Item = &'a Value>, what: &str) -> Vec<String> {
    docs.into_iter()
        .filter_map(|doc| {
            check(doc).err().map(|e| {
                format!(
                    "{what}: {} {}: {e}",
                    doc["kind"].as_str().unwrap_or("?"),
                    doc["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
        })
        .collect()
}

#[test]
fn everything_up_renders_is_a_valid_typed_object() {
    use posture_k8s::ops::manifests::{
        BrokerAuth, GpuInference, Mode, PrometheusSetup, RenderOptions, embedded, render,
    };
    let mut problems = Vec::new();
    for mode in Mode::ALL {
        let variants = [
            RenderOptions {
                mode,
                ..RenderOptions::default()
            },
            RenderOptions {
                mode,
                namespace: Some("farm".into()),
                cameras: Some(12),
                prometheus: PrometheusSetup {
                    deploy: true,
                    url: None,
                },
                broker_auth: Some(BrokerAuth {
                    username: "u".into(),
                    password: "p".into(),
                }),
                gpu_config: Some("nodes: {agx: {}}\n".into()),
                all_namespaces: true,
                gpu_inference: Some(GpuInference {
                    image: "reg/pf:1-gpu".into(),
                    runtime_class: Some("nvidia".into()),
                    device: "cuda".into(),
                }),
                dashboard_service_type: Some("LoadBalancer".into()),
                ..RenderOptions::default()
            },
        ];
        for opts in variants {
            let rendered = render(&embedded(), &opts).expect("renders");
            let docs: Vec<&Value> = rendered.plan.objects.iter().map(|o| &o.object).collect();
            problems.extend(check_all(docs, mode.as_str()));
        }
    }
    assert!(
        problems.is_empty(),
        "invalid rendered objects:\n{}",
        problems.join("\n")
    );
}

/// `kubectl apply -k deploy/modes/<mode>` and `up --mode <mode>` give the
/// same objects (but the Secret `up` generates, which kubectl users create).
#[test]
fn up_renders_what_kubectl_kustomize_renders() {
    use posture_k8s::ops::manifests::{Mode, RenderOptions, embedded, render};
    let Ok(dir) = std::env::var("POSTURE_KUSTOMIZE_DIR") else {
        eprintln!(
            "skipped: POSTURE_KUSTOMIZE_DIR is not set (.ci/run sets it after `kubectl kustomize`)"
        );
        return;
    };
    let key = |v: &Value| {
        format!(
            "{}/{}/{}",
            v["kind"], v["metadata"]["namespace"], v["metadata"]["name"]
        )
    };
    for mode in Mode::ALL {
        let path = Path::new(&dir).join(format!("{}.yaml", mode.as_str()));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut want: Vec<Value> = serde_saphyr::from_multiple::<Value>(&text)
            .unwrap()
            .into_iter()
            .filter(|d| !d.is_null())
            .collect();
        let opts = RenderOptions {
            mode,
            ..RenderOptions::default()
        };
        let mut got: Vec<Value> = render(&embedded(), &opts)
            .expect("renders")
            .plan
            .objects
            .into_iter()
            .map(|o| o.object)
            .filter(|o| !(o["kind"] == "Secret" && o["metadata"]["name"] == "posture-db"))
            .collect();
        want.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(
            got.iter().map(key).collect::<Vec<_>>(),
            want.iter().map(key).collect::<Vec<_>>(),
            "{}: the same objects",
            mode.as_str()
        );
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{}: {}", mode.as_str(), key(g));
        }
    }
}

/// Issue 15: in every mode (and with `--namespace`/`--all-namespaces`),
/// every controller that takes part in leader election — `scheduler`,
/// `balance`, `scaler --with-balancer` — runs two replicas with a rolling
/// update, `--leader-elect`, its identity from the downward API, a
/// readiness probe a follower passes, anti-affinity across nodes, and a
/// PodDisruptionBudget selecting exactly its pods.
#[test]
fn every_controller_runs_two_replicas_with_leader_election_and_a_budget() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use posture_k8s::ops::manifests::{Mode, RenderOptions, embedded, render};
    for mode in Mode::ALL {
        for (namespace, all_namespaces) in [(None, false), (Some("farm"), true)] {
            let opts = RenderOptions {
                mode,
                namespace: namespace.map(str::to_string),
                all_namespaces,
                ..RenderOptions::default()
            };
            let rendered = render(&embedded(), &opts).expect("renders");
            let typed = |kind: &str| -> Vec<Value> {
                rendered
                    .plan
                    .objects
                    .iter()
                    .filter(|o| o.object["kind"] == kind)
                    .map(|o| o.object.clone())
                    .collect()
            };
            let deployments: Vec<Deployment> = typed("Deployment")
                .into_iter()
                .map(|d| serde_json::from_value(d).unwrap())
                .collect();
            let budgets: Vec<PodDisruptionBudget> = typed("PodDisruptionBudget")
                .into_iter()
                .map(|d| serde_json::from_value(d).unwrap())
                .collect();
            // Every pod template of the plan, with its namespace and labels.
            let templates: Vec<(String, String, Value)> = rendered
                .plan
                .objects
                .iter()
                .filter_map(|o| {
                    let labels =
                        o.object
                            .pointer("/spec/template/metadata/labels")
                            .or_else(|| {
                                o.object
                                    .pointer("/spec/jobTargetRef/template/metadata/labels")
                            })?;
                    Some((
                        o.object["metadata"]["name"].as_str()?.to_string(),
                        o.object["metadata"]["namespace"].as_str()?.to_string(),
                        labels.clone(),
                    ))
                })
                .collect();
            let mut controllers = 0;
            for d in &deployments {
                let name = d.metadata.name.clone().unwrap();
                let ns = d.metadata.namespace.clone().unwrap();
                let what = format!("{} ({namespace:?}): {name}", mode.as_str());
                let spec = d.spec.as_ref().unwrap();
                let pod = spec.template.spec.as_ref().unwrap();
                let c = &pod.containers[0];
                let args = c.args.clone().unwrap_or_default();
                let elected = match args.first().map(String::as_str) {
                    Some("scheduler" | "balance") => true,
                    Some("scaler") => args.iter().any(|a| a == "--with-balancer"),
                    _ => false,
                };
                if !elected {
                    continue;
                }
                controllers += 1;
                let env = c.env.clone().unwrap_or_default();
                let var = |n: &str| env.iter().find(|e| e.name == n);
                let field = |n: &str| {
                    var(n)
                        .and_then(|e| e.value_from.as_ref())
                        .and_then(|v| v.field_ref.as_ref())
                        .map(|f| f.field_path.clone())
                };
                assert_eq!(spec.replicas, Some(2), "{what}: replicas");
                let strategy = spec.strategy.as_ref().unwrap();
                assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"), "{what}");
                let rolling = strategy.rolling_update.as_ref().unwrap();
                assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)), "{what}");
                assert_eq!(rolling.max_surge, Some(IntOrString::Int(0)), "{what}");
                let elect_flag = args.iter().any(|a| a == "--leader-elect");
                let elect_env =
                    var("LEADER_ELECT").and_then(|e| e.value.as_deref()) == Some("true");
                assert!(elect_flag || elect_env, "{what}: --leader-elect");
                assert_eq!(
                    field("POD_NAME").as_deref(),
                    Some("metadata.name"),
                    "{what}"
                );
                assert_eq!(
                    field("LEASE_NAMESPACE").as_deref(),
                    Some("metadata.namespace"),
                    "{what}: the Lease in the pod's own namespace"
                );
                // A follower answers /readyz 200: the probe must be that one.
                let probe = c
                    .readiness_probe
                    .as_ref()
                    .unwrap()
                    .http_get
                    .as_ref()
                    .unwrap();
                assert_eq!(probe.path.as_deref(), Some("/readyz"), "{what}");
                // Preferred (never required) anti-affinity on the host name,
                // selecting this Deployment's own pods.
                let selector = spec.selector.match_labels.clone().unwrap();
                let anti = pod
                    .affinity
                    .as_ref()
                    .and_then(|a| a.pod_anti_affinity.as_ref())
                    .unwrap_or_else(|| panic!("{what}: no podAntiAffinity"));
                assert!(
                    anti.required_during_scheduling_ignored_during_execution
                        .is_none(),
                    "{what}: a required rule would leave a one-node K3s with one replica"
                );
                let terms = anti
                    .preferred_during_scheduling_ignored_during_execution
                    .as_ref()
                    .unwrap();
                assert!(
                    terms.iter().any(|t| {
                        t.pod_affinity_term.topology_key == "kubernetes.io/hostname"
                            && t.pod_affinity_term
                                .label_selector
                                .as_ref()
                                .and_then(|s| s.match_labels.as_ref())
                                == Some(&selector)
                    }),
                    "{what}: anti-affinity across nodes on its own pods"
                );
                // Exactly one budget selects these pods, with the same
                // selector, and it selects no other pod of the plan.
                let mine: Vec<&PodDisruptionBudget> = budgets
                    .iter()
                    .filter(|b| b.metadata.namespace.as_deref() == Some(&ns))
                    .filter(|b| {
                        let sel = b.spec.as_ref().and_then(|s| s.selector.as_ref());
                        let labels = sel.and_then(|s| s.match_labels.as_ref());
                        labels.is_some_and(|l| {
                            l.iter().all(|(k, v)| {
                                spec.template
                                    .metadata
                                    .as_ref()
                                    .unwrap()
                                    .labels
                                    .as_ref()
                                    .unwrap()
                                    .get(k)
                                    == Some(v)
                            })
                        })
                    })
                    .collect();
                assert_eq!(mine.len(), 1, "{what}: one PodDisruptionBudget");
                let budget = mine[0].spec.as_ref().unwrap();
                assert_eq!(budget.min_available, Some(IntOrString::Int(1)), "{what}");
                let budget_labels = budget
                    .selector
                    .as_ref()
                    .unwrap()
                    .match_labels
                    .clone()
                    .unwrap();
                assert_eq!(
                    budget_labels, selector,
                    "{what}: the Deployment's own selector"
                );
                assert!(
                    budget
                        .selector
                        .as_ref()
                        .unwrap()
                        .match_expressions
                        .is_none()
                );
                for (other, other_ns, labels) in &templates {
                    let selected = *other_ns == ns
                        && budget_labels
                            .iter()
                            .all(|(k, v)| labels[k.as_str()] == v.as_str());
                    assert_eq!(selected, *other == name, "{what}: budget selects {other}");
                }
            }
            assert!(controllers >= 1, "{}: no controller", mode.as_str());
            assert_eq!(
                budgets.len(),
                controllers,
                "{}: one budget per controller, no other",
                mode.as_str()
            );
        }
    }
}
