//! The KEDA manifests in `deploy/keda/` agree with the code: every camera's
//! ScaledJob points its external trigger at the scaler's Service, the
//! NetworkPolicy admits only KEDA's namespace on the gRPC port, and the
//! balancer's Role grants exactly the verbs the actuator uses.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::Role;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/keda")
}

/// Every document of every YAML file, keyed by kind.
fn objects() -> BTreeMap<String, Vec<Value>> {
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for entry in std::fs::read_dir(deploy_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            if kind != "Kustomization" {
                let labels = &doc["metadata"]["labels"];
                assert_eq!(
                    labels["app.kubernetes.io/part-of"],
                    "posture-farm",
                    "{kind} {} in {} lacks the part-of label",
                    doc["metadata"]["name"],
                    path.display()
                );
            }
            by_kind.entry(kind).or_default().push(doc);
        }
    }
    by_kind
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn scaledjobs_point_at_the_scaler_service() {
    let objs = objects();
    let service: Service = typed(&objs["Service"][0]);
    let ns = service.metadata.namespace.clone().unwrap();
    let name = service.metadata.name.clone().unwrap();
    let grpc = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("grpc"))
        .unwrap();
    let address = format!("{name}.{ns}.svc.cluster.local:{}", grpc.port);

    let jobs = &objs["ScaledJob"];
    let mut cameras: Vec<String> = Vec::new();
    for sj in jobs {
        assert_eq!(sj["apiVersion"], "keda.sh/v1alpha1");
        let triggers = sj["spec"]["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 1);
        assert_eq!(triggers[0]["type"], "external");
        assert_eq!(triggers[0]["metadata"]["scalerAddress"], address.as_str());
        // The trigger's metadata must pass the scaler's own validation.
        let md: std::collections::HashMap<String, String> =
            serde_json::from_value(triggers[0]["metadata"].clone()).unwrap();
        posture_core::scaler::ScalerConfig::from_metadata(&Default::default(), &md).unwrap();
        // The pod template is a real PodTemplateSpec, labelled for the balancer's selector.
        let template: k8s_openapi::api::core::v1::PodTemplateSpec =
            typed(&sj["spec"]["jobTargetRef"]["template"]);
        let labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["app"], "posture");
        let camera = labels["camera"].clone();
        let container = &template.spec.unwrap().containers[0];
        assert_eq!(
            container.args.clone().unwrap(),
            vec![
                "analyze".to_owned(),
                "--topic".into(),
                format!("images/{camera}")
            ]
        );
        cameras.push(camera);
    }
    cameras.sort();
    let mut expected: Vec<String> = std::iter::once("pi1".to_owned())
        .chain((1..=9).map(|i| format!("pi1-{i}")))
        .collect();
    expected.sort();
    assert_eq!(cameras, expected);
}

#[test]
fn network_policy_admits_only_keda_on_the_grpc_port() {
    let objs = objects();
    let np: NetworkPolicy = typed(&objs["NetworkPolicy"][0]);
    let deployment: Deployment = typed(&objs["Deployment"][0]);
    let pod_labels = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let spec = np.spec.unwrap();
    for (k, v) in spec.pod_selector.clone().unwrap().match_labels.unwrap() {
        assert_eq!(
            pod_labels.get(&k),
            Some(&v),
            "policy selects the scaler pod"
        );
    }
    let rules = spec.ingress.unwrap();
    let grpc_rules: Vec<_> = rules
        .iter()
        .filter(|r| {
            r.ports.iter().flatten().any(|p| {
                p.port
                    == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(50051))
            })
        })
        .collect();
    assert_eq!(grpc_rules.len(), 1);
    let from = grpc_rules[0].from.clone().unwrap();
    assert_eq!(from.len(), 1);
    let ns_sel = from[0]
        .namespace_selector
        .clone()
        .unwrap()
        .match_labels
        .unwrap();
    assert_eq!(ns_sel.len(), 1);
    assert_eq!(ns_sel["kubernetes.io/metadata.name"], "keda");
    assert!(from[0].pod_selector.is_none() && from[0].ip_block.is_none());

    let args = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args, vec!["scaler".to_owned(), "--with-balancer".into()]);
}

#[test]
fn balancer_role_is_least_privilege() {
    let objs = objects();
    let role: Role = typed(&objs["Role"][0]);
    let mut grants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rule in role.rules.unwrap() {
        for group in rule.api_groups.clone().unwrap() {
            for res in rule.resources.clone().unwrap() {
                let mut verbs = rule.verbs.clone();
                verbs.sort();
                grants.insert(format!("{group}/{res}"), verbs);
            }
        }
    }
    let expected: BTreeMap<String, Vec<String>> = [
        // Exactly the calls of crates/k8s/src/balancer (discover.rs lists,
        // mover.rs patches); no get or watch (issue 11.13).
        ("keda.sh/scaledjobs", vec!["list", "patch"]),
        ("batch/jobs", vec!["create", "delete", "get", "list"]),
        ("/pods", vec!["delete", "list"]),
        // kube's event Recorder patches an Event to count a repeat.
        ("events.k8s.io/events", vec!["create", "patch"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(grants, expected);
    assert!(!objs.contains_key("ClusterRole"), "namespaced only");
}
