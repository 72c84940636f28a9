use super::*;
use crate::ops::plan::Stage;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn objects(r: &Rendered) -> Vec<&Value> {
    r.plan.objects.iter().map(|o| &o.object).collect()
}

fn find<'a>(r: &'a Rendered, kind: &str, name: &str) -> Option<&'a Value> {
    r.plan
        .objects
        .iter()
        .find(|o| o.kind_name() == kind && o.name() == name)
        .map(|o| &o.object)
}

fn key(v: &Value) -> String {
    format!(
        "{}/{}/{}",
        v["kind"], v["metadata"]["namespace"], v["metadata"]["name"]
    )
}

fn mode_opts(mode: Mode) -> RenderOptions {
    RenderOptions {
        mode,
        ..RenderOptions::default()
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .canonicalize()
        .expect("deploy/ exists")
}

#[test]
fn the_embedded_table_lists_every_file_of_deploy() {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir)
            .expect("deploy/ is readable")
            .flatten()
        {
            let path = entry.path();
            let rel = path
                .strip_prefix(deploy_dir().parent().expect("repository root"))
                .expect("under the repository")
                .display()
                .to_string();
            if path.is_dir() {
                if !matches!(rel.as_str(), "deploy/examples" | "deploy/compose") {
                    walk(&path, out);
                }
            } else if rel.ends_with(".yaml") {
                out.insert(rel);
            }
        }
    }
    let mut on_disk = BTreeSet::new();
    walk(&deploy_dir(), &mut on_disk);
    let table: BTreeSet<String> = embedded().iter().map(|f| f.path.to_string()).collect();
    assert_eq!(
        table, on_disk,
        "every deploy/ file (but examples/ and compose/) is embedded"
    );
}

#[test]
fn every_kustomization_of_deploy_builds_with_the_supported_subset() {
    let files = embedded();
    for f in files
        .iter()
        .filter(|f| f.path.ends_with("kustomization.yaml"))
    {
        let dir = f.path.trim_end_matches("/kustomization.yaml");
        let docs = kustomize::build(&files, dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(!docs.is_empty(), "{dir} builds to nothing");
    }
    // `kubectl apply -k deploy/` is the default mode.
    let root = kustomize::build(&files, "deploy").expect("root");
    let rr = kustomize::build(&files, &Mode::RoundRobin.dir()).expect("round-robin");
    assert_eq!(root, rr);
}

#[test]
fn every_mode_renders_what_kustomize_builds_plus_the_generated_secret() {
    let files = embedded();
    for mode in Mode::ALL {
        let r = render(&files, &mode_opts(mode)).expect("renders");
        let mut got: Vec<Value> = objects(&r)
            .into_iter()
            .filter(|o| !(o["kind"] == "Secret" && o["metadata"]["name"] == "posture-db"))
            .cloned()
            .collect();
        let mut want: Vec<Value> = documented(&files, mode, false)
            .expect("builds")
            .into_iter()
            .map(|d| d.value)
            .collect();
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(got, want, "mode {}", mode.as_str());
        assert_eq!(r.namespace, "posture");
        let stages: Vec<_> = r.plan.objects.iter().map(|o| o.stage).collect();
        assert!(stages.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            find(&r, "Secret", "posture-db").is_some(),
            "{}: DB Secret",
            mode.as_str()
        );
    }
}

#[test]
fn each_mode_runs_its_scheduler_and_its_analyzers() {
    let files = embedded();
    for mode in Mode::ALL {
        let r = render(&files, &mode_opts(mode)).expect("renders");
        let deployments: Vec<String> = r.plan.deployments().into_iter().map(|(_, n)| n).collect();
        let statefulsets: Vec<String> = r
            .plan
            .named("StatefulSet", Stage::Platform)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(
            statefulsets,
            ["mqtt-broker", "posture-db"],
            "{}",
            mode.as_str()
        );
        match mode.scheduler_name() {
            Some(scheduler) => {
                let jobs = r.plan.workload_names("Job");
                assert_eq!(jobs.len(), 10);
                assert!(r.plan.workload_names("ScaledJob").is_empty());
                for job in r.plan.stage(Stage::Workloads) {
                    let spec = &job.object["spec"]["template"]["spec"];
                    assert_eq!(spec["schedulerName"], scheduler, "{}", job.name());
                    let class = (mode == Mode::Priority).then_some("posture-farm-normal");
                    assert_eq!(spec["priorityClassName"].as_str(), class);
                }
                let dep = r
                    .plan
                    .objects
                    .iter()
                    .find(|o| {
                        o.kind_name() == "Deployment"
                            && transform::component(&o.object) == Some("scheduler")
                    })
                    .expect("the scheduler");
                let env = &dep.object["spec"]["template"]["spec"]["containers"][0]["env"];
                assert!(
                    env.as_array()
                        .expect("env")
                        .iter()
                        .any(|e| e["name"] == "SCHEDULER_NAME" && e["value"] == scheduler)
                );
                assert_eq!(deployments.len(), 2, "{deployments:?}");
                assert!(deployments.contains(&"posture-dashboard".to_string()));
            }
            None => {
                assert!(r.plan.workload_names("Job").is_empty());
                assert_eq!(r.plan.workload_names("ScaledJob").len(), 10);
                assert_eq!(deployments, ["posture-dashboard", "posture-scaler"]);
            }
        }
    }
    let r = render(&files, &mode_opts(Mode::Priority)).expect("renders");
    for class in ["low", "normal", "high"] {
        let pc = find(&r, "PriorityClass", &priority_class(class)).expect("class");
        assert!(pc["value"].as_i64().is_some_and(|v| v > 0));
    }
    let r = render(&files, &mode_opts(Mode::Gpu)).expect("renders");
    assert!(find(&r, "Role", "posture-farm-gpu-state").is_some());
    assert!(
        r.warnings.iter().any(|w| w.contains("--with-prometheus")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn derived_cameras_follow_the_documented_pattern() {
    let files = embedded();
    for dir in ["deploy/jobs", "deploy/keda"] {
        let docs: Vec<Value> = kustomize::build(&files, dir)
            .expect("builds")
            .into_iter()
            .map(|d| d.value)
            .filter(transform::is_analyzer_workload)
            .collect();
        assert_eq!(docs.len(), 10, "{dir}");
        for (i, want) in docs.iter().enumerate().skip(2) {
            assert_eq!(
                &transform::derive_camera(&docs[0], Some(&docs[1]), i),
                want,
                "{dir}: camera {i}"
            );
        }
    }
    let opts = RenderOptions {
        cameras: Some(12),
        ..RenderOptions::default()
    };
    let r = render(&files, &opts).expect("renders");
    let names = r.plan.workload_names("Job");
    assert_eq!(names.len(), 12);
    assert_eq!(names[11], "posture-pi1-11");
    let job = find(&r, "Job", "posture-pi1-11").expect("derived");
    assert_eq!(transform::topic_of(job).as_deref(), Some("images/pi1-11"));
    let r = render(
        &files,
        &RenderOptions {
            cameras: Some(1),
            ..RenderOptions::default()
        },
    )
    .expect("renders");
    assert_eq!(r.plan.workload_names("Job"), ["posture-pi1"]);
}

#[test]
fn another_namespace_moves_everything_with_its_service_addresses() {
    let opts = RenderOptions {
        mode: Mode::Keda,
        namespace: Some("farm".into()),
        cameras: Some(11),
        topics: (0..11).map(|i| format!("t/{i}")).collect(),
        prometheus: PrometheusSetup {
            deploy: true,
            url: None,
        },
        ..RenderOptions::default()
    };
    let r = render(&embedded(), &opts).expect("renders");
    assert_eq!(r.namespace, "farm");
    let ns: Vec<&str> = r
        .plan
        .objects
        .iter()
        .filter(|o| o.kind_name() == "Namespace")
        .map(PlannedObject::name)
        .collect();
    assert_eq!(ns, ["farm"], "renamed, not duplicated");
    for o in &r.plan.objects {
        if o.kind.namespaced {
            assert_eq!(o.namespace(), Some("farm"), "{}", o.describe());
        }
        for s in o.object["subjects"].as_array().into_iter().flatten() {
            assert_eq!(s["namespace"], "farm", "{}", o.describe());
        }
        assert!(
            !o.object.to_string().contains(".posture.svc"),
            "{} keeps an address in posture",
            o.describe()
        );
    }
    let sj = find(&r, "ScaledJob", "posture-pi1-10").expect("derived camera");
    assert_eq!(
        sj.pointer("/spec/triggers/0/metadata/scalerAddress"),
        Some(&json!("posture-scaler.farm.svc.cluster.local:50051"))
    );
    assert_eq!(transform::topic_of(sj).as_deref(), Some("t/10"));
    let scaler = find(&r, "Deployment", "posture-scaler").expect("scaler");
    assert!(
        scaler
            .to_string()
            .contains("http://prometheus.farm.svc.cluster.local:9090")
    );
    assert!(find(&r, "Deployment", "prometheus").is_some());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn topics_set_the_camera_count_and_must_agree_with_cameras() {
    let files = embedded();
    let opts = RenderOptions {
        topics: vec!["a".into(), "b".into(), "c".into()],
        ..RenderOptions::default()
    };
    let r = render(&files, &opts).expect("renders");
    let topics: Vec<Option<String>> = r
        .plan
        .stage(Stage::Workloads)
        .map(|o| transform::topic_of(&o.object))
        .collect();
    assert_eq!(
        topics,
        [Some("a".into()), Some("b".into()), Some("c".into())]
    );
    let opts = RenderOptions {
        cameras: Some(2),
        topics: vec!["a".into()],
        ..RenderOptions::default()
    };
    let err = render(&files, &opts).expect_err("mismatch");
    assert!(err.to_string().contains("one topic per camera"), "{err}");
    let opts = RenderOptions {
        cameras: Some(0),
        ..RenderOptions::default()
    };
    assert!(render(&files, &opts).is_err());
}

#[test]
fn an_existing_broker_replaces_the_in_cluster_one() {
    let files = embedded();
    let r = render(&files, &RenderOptions::default()).expect("renders");
    assert!(find(&r, "StatefulSet", "mqtt-broker").is_some());
    assert!(find(&r, "Secret", "mqtt-broker-auth").is_none());
    let opts = RenderOptions {
        broker: BrokerSetup::external("broker.lan:8883").expect("address"),
        broker_auth: Some(BrokerAuth {
            username: "farm".into(),
            password: "s3cret".into(),
        }),
        ..RenderOptions::default()
    };
    let r = render(&files, &opts).expect("renders");
    for (kind, name) in [
        ("StatefulSet", "mqtt-broker"),
        ("Service", "mqtt-broker"),
        ("ConfigMap", "mqtt-broker"),
    ] {
        assert!(find(&r, kind, name).is_none(), "{kind} {name}");
    }
    let cm = find(&r, "ConfigMap", ANALYZER_CONFIG_MAP).expect("analyzer settings");
    assert_eq!(
        cm["data"],
        json!({"MQTT_BROKER": "broker.lan", "MQTT_PORT": "8883"})
    );
    let auth = find(&r, "Secret", "mqtt-broker-auth").expect("credentials");
    // base64 of "farm"; the password is never in plain text.
    assert_eq!(auth["data"]["MQTT_USERNAME"], "ZmFybQ==");
    // A changed ConfigMap restarts its readers: the analyzers.
    let job = find(&r, "Job", "posture-pi1").expect("job");
    assert!(
        job.pointer("/spec/template/metadata/annotations/posture-farm~1config-hash")
            .is_some()
    );
}

#[test]
fn the_database_is_in_the_cluster_or_an_existing_one() {
    let files = embedded();
    let db = InClusterDb::new("pw".into());
    let r = render(
        &files,
        &RenderOptions {
            database: DbSetup::InCluster(Some(db)),
            ..RenderOptions::default()
        },
    )
    .expect("renders");
    let secret = find(&r, "Secret", "posture-db").expect("generated");
    let keys: Vec<&String> = secret["data"].as_object().expect("data").keys().collect();
    assert_eq!(
        keys,
        [
            "DATABASE_URL",
            "POSTGRES_DB",
            "POSTGRES_PASSWORD",
            "POSTGRES_USER"
        ]
    );
    assert!(find(&r, "StatefulSet", "posture-db").is_some());

    let r = render(
        &files,
        &RenderOptions {
            database: DbSetup::Url(DbCredentials {
                database_url: "postgres://u:p@h:5432/d".into(),
            }),
            ..RenderOptions::default()
        },
    )
    .expect("renders");
    assert!(find(&r, "StatefulSet", "posture-db").is_none());
    assert!(find(&r, "Service", "posture-db").is_none());
    let secret = find(&r, "Secret", "posture-db").expect("generated");
    assert_eq!(
        secret["data"],
        json!({"DATABASE_URL": "cG9zdGdyZXM6Ly91OnBAaDo1NDMyL2Q="})
    );

    let r = render(
        &files,
        &RenderOptions {
            database: DbSetup::Secret("supabase".into()),
            ..RenderOptions::default()
        },
    )
    .expect("renders");
    assert!(find(&r, "Secret", "posture-db").is_none());
    let text = serde_json::to_string(&objects(&r)).expect("json");
    assert!(!text.contains("\"posture-db\""), "no reference left");
    let job = find(&r, "Job", "posture-pi1").expect("job");
    assert!(job.to_string().contains("\"name\":\"supabase\""));
}

#[test]
fn the_gpu_config_map_reaches_the_components_that_read_gpu_usage() {
    let files = embedded();
    let gpu = "nodes:\n  agx: {instance: '10.0.0.2:9100', metric: jetson_gpu_usage_percent}\n";
    for mode in [Mode::Gpu, Mode::Keda] {
        let r = render(
            &files,
            &RenderOptions {
                mode,
                gpu_config: Some(gpu.into()),
                ..RenderOptions::default()
            },
        )
        .expect("renders");
        let cm = find(&r, "ConfigMap", GPU_CONFIG_MAP).expect("config map");
        assert_eq!(cm["data"][GPU_CONFIG_KEY], gpu);
        let reader = match mode {
            Mode::Gpu => "gpu-scheduler",
            _ => "posture-scaler",
        };
        let dep = find(&r, "Deployment", reader).expect("reader");
        let spec = &dep["spec"]["template"]["spec"];
        let volume = spec["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["configMap"]["name"] == GPU_CONFIG_MAP))
            .expect("the ConfigMap is a volume");
        let container = &spec["containers"][0];
        let mount = container["volumeMounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == volume["name"]))
            .expect("mounted");
        let path = container["env"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == "GPU_CONFIG"))
            .and_then(|e| e["value"].as_str())
            .expect("GPU_CONFIG");
        assert_eq!(
            path,
            format!(
                "{}/{GPU_CONFIG_KEY}",
                mount["mountPath"].as_str().expect("path")
            )
        );
        assert!(
            dep.pointer("/spec/template/metadata/annotations/posture-farm~1config-hash")
                .is_some(),
            "a changed config restarts {reader}"
        );
        // The analyzers do not read it: they are left alone.
        for w in r.plan.stage(Stage::Workloads) {
            assert!(
                !w.object.to_string().contains("config-hash"),
                "{}",
                w.name()
            );
        }
    }
    // The documented config adds no annotation (kubectl apply -k and up agree).
    let r = render(&files, &mode_opts(Mode::Gpu)).expect("renders");
    assert!(
        !serde_json::to_string(&objects(&r))
            .expect("json")
            .contains("config-hash")
    );
}

#[test]
fn all_namespaces_makes_the_scheduler_rbac_cluster_wide() {
    let r = render(
        &embedded(),
        &RenderOptions {
            mode: Mode::Priority,
            all_namespaces: true,
            ..RenderOptions::default()
        },
    )
    .expect("renders");
    assert!(find(&r, "Role", "posture-farm-priority-scheduler").is_none());
    let role = find(&r, "ClusterRole", "posture-farm-priority-scheduler").expect("cluster role");
    assert!(role["metadata"].get("namespace").is_none());
    assert!(role.to_string().contains("pods/eviction"));
    let binding =
        find(&r, "ClusterRoleBinding", "posture-farm-priority-scheduler").expect("binding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    let dep = find(&r, "Deployment", "posture-priority").expect("scheduler");
    assert!(
        dep.to_string()
            .contains(r#"{"name":"ALL_NAMESPACES","value":"true"}"#)
    );
    // Without the flag: namespaced.
    let r = render(&embedded(), &mode_opts(Mode::Priority)).expect("renders");
    let role = find(&r, "Role", "posture-farm-priority-scheduler").expect("role");
    assert_eq!(role["metadata"]["namespace"], "posture");
}

#[test]
fn camera_priorities_need_the_priority_mode_and_a_known_camera() {
    let files = embedded();
    let mut opts = RenderOptions {
        mode: Mode::Priority,
        camera_priorities: BTreeMap::from([("pi1-3".into(), priority_class("high"))]),
        ..RenderOptions::default()
    };
    let r = render(&files, &opts).expect("renders");
    let class = |name: &str| {
        find(&r, "Job", name).expect("job")["spec"]["template"]["spec"]["priorityClassName"].clone()
    };
    assert_eq!(class("posture-pi1-3"), "posture-farm-high");
    assert_eq!(class("posture-pi1"), "posture-farm-normal");
    opts.camera_priorities = BTreeMap::from([("nope".into(), "x".into())]);
    assert!(render(&files, &opts).is_err());
    opts.mode = Mode::RoundRobin;
    opts.camera_priorities = BTreeMap::from([("pi1".into(), "x".into())]);
    let err = render(&files, &opts).expect_err("not priority mode");
    assert!(err.to_string().contains("--mode priority"), "{err}");
}

#[test]
fn gpu_inference_puts_analyzers_on_the_gpu() {
    let gpu = GpuInference {
        image: format!("{DOCUMENTED_IMAGE}-gpu"),
        runtime_class: Some("nvidia".into()),
        device: "cuda".into(),
    };
    for mode in [Mode::Gpu, Mode::Keda] {
        let r = render(
            &embedded(),
            &RenderOptions {
                mode,
                gpu_inference: Some(gpu.clone()),
                ..RenderOptions::default()
            },
        )
        .expect("renders");
        for w in r.plan.stage(Stage::Workloads) {
            let template = transform::pod_template(&w.object).expect("template");
            assert_eq!(template["spec"]["runtimeClassName"], "nvidia");
            let c = &template["spec"]["containers"][0];
            assert_eq!(c["image"], gpu.image.as_str());
            assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
            assert!(
                c["env"]
                    .to_string()
                    .contains(r#""name":"POSE_DEVICE","value":"cuda""#)
            );
        }
        for o in r
            .plan
            .objects
            .iter()
            .filter(|o| o.stage != Stage::Workloads)
        {
            for c in transform::containers(&o.object) {
                let gpu = c.pointer("/resources/limits/nvidia.com~1gpu");
                assert!(gpu.is_none(), "{}", o.describe());
            }
        }
    }
}

/// A mode with every optional part (Prometheus) rendered.
fn everything(mode: Mode) -> Rendered {
    let opts = RenderOptions {
        mode,
        prometheus: PrometheusSetup {
            deploy: true,
            url: None,
        },
        ..RenderOptions::default()
    };
    render(&embedded(), &opts).expect("renders")
}

#[test]
fn images_are_pinned_to_the_release_and_never_latest() {
    for mode in Mode::ALL {
        let r = everything(mode);
        for o in &r.plan.objects {
            for c in transform::containers(&o.object) {
                let image = c["image"].as_str().expect("image");
                assert!(
                    image.contains(':') && !image.ends_with(":latest"),
                    "{}: {image}",
                    o.describe()
                );
                if image.starts_with("ghcr.io/posture-farm/") {
                    assert_eq!(image, DOCUMENTED_IMAGE, "{}", o.describe());
                }
            }
        }
    }
}

/// Issue 11.13: every pod runs as non-root with the runtime's seccomp
/// profile; every container has a read-only root, no privilege escalation,
/// no capabilities, and an ephemeral-storage limit; every emptyDir is bounded.
#[test]
fn every_pod_is_locked_down() {
    for mode in Mode::ALL {
        let r = everything(mode);
        for o in &r.plan.objects {
            let Some(template) = transform::pod_template(&o.object) else {
                continue;
            };
            let what = o.describe();
            let pod = &template["spec"]["securityContext"];
            assert_eq!(pod["runAsNonRoot"], true, "{what}");
            assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{what}");
            for c in transform::containers(&o.object) {
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
                assert!(
                    c["resources"]["limits"]["ephemeral-storage"].is_string(),
                    "{what}: ephemeral-storage limit"
                );
                assert!(c["resources"]["limits"]["memory"].is_string(), "{what}");
            }
            for v in template["spec"]["volumes"].as_array().into_iter().flatten() {
                if let Some(empty) = v.get("emptyDir") {
                    assert!(empty["sizeLimit"].is_string(), "{what}: {v}");
                }
            }
            assert!(
                transform::component(&o.object).is_some(),
                "{what}: component label"
            );
        }
    }
}

#[test]
fn keda_mode_pins_scaled_jobs_with_node_affinity() {
    let mut r = render(&embedded(), &mode_opts(Mode::Keda)).expect("renders");
    let placement = BTreeMap::from([("posture-pi1".to_string(), "orin".to_string())]);
    assign_nodes(&mut r.plan, &placement);
    let sj = find(&r, "ScaledJob", "posture-pi1").expect("present");
    assert_eq!(
        sj.pointer("/spec/jobTargetRef/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0/values/0"),
        Some(&json!("orin"))
    );
    let other = find(&r, "ScaledJob", "posture-pi1-1").expect("present");
    assert!(
        other
            .pointer("/spec/jobTargetRef/template/spec/affinity")
            .is_none()
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Any camera count renders to that many workloads with distinct
        /// names and topics, all carrying the ownership label on object
        /// and pod template, all in the requested namespace, in stage order.
        #[test]
        fn cameras_render_to_distinct_owned_workloads(n in 1usize..40, mode in 0usize..4, ns in "[a-z]{1,8}") {
            let mode = Mode::ALL[mode];
            let opts = RenderOptions { mode, cameras: Some(n), namespace: Some(ns.clone()), ..RenderOptions::default() };
            let r = render(&embedded(), &opts).expect("renders");
            let workloads: Vec<&PlannedObject> = r.plan.stage(Stage::Workloads).collect();
            prop_assert_eq!(workloads.len(), n);
            let names: BTreeSet<&str> = workloads.iter().map(|o| o.name()).collect();
            prop_assert_eq!(names.len(), n);
            let topics: BTreeSet<Option<String>> = workloads.iter().map(|o| transform::topic_of(&o.object)).collect();
            prop_assert_eq!(topics.len(), n);
            prop_assert!(!topics.contains(&None));
            for o in &r.plan.objects {
                prop_assert_eq!(o.object.pointer("/metadata/labels/app.kubernetes.io~1managed-by"), Some(&json!("posture-farm")));
                if o.kind.namespaced {
                    prop_assert_eq!(o.namespace(), Some(ns.as_str()));
                }
            }
            for w in &workloads {
                let labelled = transform::pod_template(&w.object)
                    .and_then(|t| t.pointer("/metadata/labels/app.kubernetes.io~1managed-by").cloned());
                prop_assert_eq!(labelled, Some(json!("posture-farm")));
            }
            let stages: Vec<_> = r.plan.objects.iter().map(|o| o.stage).collect();
            prop_assert!(stages.windows(2).all(|w| w[0] <= w[1]));
        }
    }
}

#[test]
fn the_dashboard_runs_next_to_the_database_unless_left_out() {
    let files = embedded();
    let r = render(&files, &RenderOptions::default()).expect("renders");
    let dep = find(&r, "Deployment", "posture-dashboard").expect("dashboard");
    let env = dep["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains(r#""name":"DASHBOARD_LISTEN","value":"0.0.0.0:8080""#),
        "{env}"
    );
    assert!(
        env.contains(r#""secretKeyRef":{"key":"DATABASE_URL","name":"posture-db"}"#),
        "{env}"
    );
    let stage = r
        .plan
        .objects
        .iter()
        .find(|o| o.name() == "posture-dashboard" && o.kind_name() == "Deployment")
        .map(|o| o.stage);
    assert_eq!(
        stage,
        Some(Stage::Controllers),
        "after the database is ready"
    );
    let service_type =
        |r: &Rendered| find(r, "Service", DASHBOARD_SERVICE).map(|s| s["spec"]["type"].clone());
    assert_eq!(service_type(&r), Some(json!("ClusterIP")));
    let r = render(
        &files,
        &RenderOptions {
            dashboard_service_type: Some("LoadBalancer".into()),
            ..RenderOptions::default()
        },
    )
    .expect("renders");
    assert_eq!(service_type(&r), Some(json!("LoadBalancer")));
    let r = render(
        &files,
        &RenderOptions {
            no_dashboard: true,
            ..RenderOptions::default()
        },
    )
    .expect("renders");
    assert!(
        r.plan
            .objects
            .iter()
            .all(|o| transform::component(&o.object) != Some("dashboard"))
    );
}

#[test]
fn the_gpu_exporter_runs_on_gpu_nodes_in_every_mode() {
    for mode in Mode::ALL {
        let r = render(&embedded(), &mode_opts(mode)).expect("renders");
        let ds = find(&r, "DaemonSet", "posture-gpu-exporter").expect("exporter");
        assert_eq!(
            ds.pointer("/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0"),
            Some(&json!({"key": "gpu-node", "operator": "Exists"})),
            "{}",
            mode.as_str()
        );
    }
}
