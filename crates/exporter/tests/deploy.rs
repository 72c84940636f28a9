//! The manifests in `deploy/exporter/` agree with the exporter: parsed into
//! typed k8s-openapi objects, the DaemonSet runs `exporter` on GPU nodes
//! only, reads the host's /sys read-only where `--sysfs-root` says, gets
//! its node name from the downward API, serves the port Prometheus is told
//! about, runs locked down, and uses the release's image tag.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/exporter")
}

/// Every document of every YAML file but the kustomization, keyed by kind.
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
            by_kind.entry(kind).or_default().push(doc);
        }
    }
    by_kind
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

fn daemonset() -> (DaemonSet, PodSpec, Container) {
    let objs = objects();
    assert_eq!(objs["DaemonSet"].len(), 1);
    let ds: DaemonSet = typed(&objs["DaemonSet"][0]);
    let pod = ds.spec.clone().unwrap().template.spec.unwrap();
    assert_eq!(pod.containers.len(), 1);
    let c = pod.containers[0].clone();
    (ds, pod, c)
}

#[test]
fn kustomization_lists_every_manifest() {
    let k: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let mut listed: Vec<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut files: Vec<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    files.sort();
    assert_eq!(listed, files);
    // Everything lives in the farm's namespace (created by deploy/farm/,
    // which every mode of `posture-farm up` includes with this folder).
    for doc in objects()
        .values()
        .flatten()
        .filter(|d| d["kind"] != "Kustomization")
    {
        assert_eq!(doc["metadata"]["namespace"], "posture", "{}", doc["kind"]);
    }
}

#[test]
fn runs_the_exporter_on_gpu_nodes_with_the_host_sys_read_only() {
    let (ds, pod, c) = daemonset();
    assert_eq!(ds.metadata.namespace.as_deref(), Some("posture"));
    // GPU nodes only: required affinity on the gpu-node label.
    let terms = pod
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms;
    assert_eq!(terms.len(), 1);
    let exprs = terms[0].match_expressions.clone().unwrap();
    assert_eq!(exprs.len(), 1);
    assert_eq!(
        (exprs[0].key.as_str(), exprs[0].operator.as_str()),
        ("gpu-node", "Exists")
    );
    // The command and where it finds /sys.
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "exporter");
    let root = args
        .iter()
        .position(|a| a == "--sysfs-root")
        .map(|i| args[i + 1].clone())
        .unwrap();
    let mount = c
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .find(|m| m.mount_path == root)
        .expect("--sysfs-root is a mount");
    assert_eq!(mount.read_only, Some(true));
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(volume.host_path.unwrap().path, "/sys");
    // The node label from the downward API.
    let env = c.env.clone().unwrap();
    let node = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(
        node.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
}

#[test]
fn serves_the_port_prometheus_is_told_about() {
    let (ds, _, c) = daemonset();
    let port = c
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .unwrap();
    assert_eq!(
        port.container_port,
        i32::from(posture_exporter::DEFAULT_PORT)
    );
    assert_ne!(port.container_port, 9100, "node-exporter's port");
    let listen = c
        .env
        .clone()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "EXPORTER_LISTEN");
    if let Some(listen) = listen {
        assert!(
            listen
                .value
                .unwrap()
                .ends_with(&format!(":{}", port.container_port))
        );
    }
    let template = ds.spec.unwrap().template.metadata.unwrap();
    let annotations = template.annotations.unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        port.container_port.to_string()
    );
    for probe in [c.readiness_probe.unwrap(), c.liveness_probe.unwrap()] {
        let get = probe.http_get.unwrap();
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(get.port, IntOrString::String("metrics".into()));
    }
    // The headless Service selects these pods and names the same port.
    let svc: Service = typed(&objects()["Service"][0]);
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    let pod_labels = template.labels.unwrap();
    for (k, v) in spec.selector.unwrap() {
        assert_eq!(pod_labels.get(&k), Some(&v));
    }
    let sp = &spec.ports.unwrap()[0];
    assert_eq!(sp.port, port.container_port);
    assert_eq!(sp.target_port, Some(IntOrString::String("metrics".into())));
}

#[test]
fn is_locked_down_and_pinned_to_the_release() {
    let (_, pod, c) = daemonset();
    let image = c.image.clone().unwrap();
    let (_, tag) = image.rsplit_once(':').unwrap();
    assert_ne!(tag, "latest");
    assert_eq!(tag, env!("CARGO_PKG_VERSION"), "the release's image");
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert!(psc.run_as_user.unwrap() > 0);
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.automount_service_account_token, Some(false));
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.unwrap().drop.unwrap(),
        vec!["ALL".to_owned()]
    );
    assert!(sc.privileged.is_none_or(|p| !p));
    let limits = c.resources.unwrap().limits.unwrap();
    assert!(limits.contains_key("memory") && limits.contains_key("ephemeral-storage"));
}
