use super::*;

const SCHED: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: rr-scheduler
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: rr-scheduler
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: rr-scheduler}
subjects:
- {kind: ServiceAccount, name: rr-scheduler, namespace: kube-system}
- {kind: ServiceAccount, name: balancer, namespace: default}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: rr-scheduler, namespace: kube-system}
spec:
  selector: {matchLabels: {app: rr-scheduler}}
  template:
    metadata: {labels: {app: rr-scheduler}}
    spec:
      containers:
      - name: scheduler
        image: example/posture-farm:latest
        env:
        - {name: POD_NAMESPACE, value: default}
"#;

const JOBS: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: posture-pi1, namespace: default, labels: {app: posture}}
spec:
  template:
    metadata: {labels: {app: posture, camera: posture-pi1}}
    spec:
      schedulerName: rr-scheduler
      restartPolicy: Never
      containers:
      - name: analyzer
        image: example/posture-farm:latest
        env:
        - {name: MQTT_TOPIC, value: camera/pi1}
        - name: DATABASE_URL
          valueFrom: {secretKeyRef: {name: posture-db, key: DATABASE_URL, optional: true}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: posture-pi1-1, namespace: default, labels: {app: posture}}
spec:
  template:
    metadata: {labels: {app: posture, camera: posture-pi1-1}}
    spec:
      schedulerName: rr-scheduler
      restartPolicy: Never
      containers:
      - name: analyzer
        image: example/posture-farm:latest
        env:
        - {name: MQTT_TOPIC, value: camera/pi1-1}
"#;

fn files() -> Vec<EmbeddedFile> {
    vec![
        EmbeddedFile {
            path: "sched.yaml",
            source: Source::Scheduler,
            text: SCHED,
        },
        EmbeddedFile {
            path: "jobs.yaml",
            source: Source::Jobs,
            text: JOBS,
        },
    ]
}

fn names(r: &Rendered) -> Vec<String> {
    r.plan.objects.iter().map(PlannedObject::describe).collect()
}

#[test]
fn defaults_reproduce_the_files_plus_the_ownership_label() {
    let r = render(&files(), &RenderOptions::default()).expect("renders");
    let mut expected: Vec<Value> = files()
        .iter()
        .flat_map(|f| parse_file(f).expect("parses"))
        .collect();
    expected.iter_mut().for_each(add_managed_label);
    let got: Vec<Value> = r.plan.objects.iter().map(|o| o.object.clone()).collect();
    // Order is by stage, which here is file order.
    assert_eq!(got, expected);
    assert_eq!(
        r.warnings.len(),
        1,
        "no DB env: the referenced Secret is reported"
    );
}

/// The documented objects as `up` must apply them with default options:
/// the files' objects, plus the ownership label, plus `namespace: default`
/// where the file leaves the namespace to `kubectl`.
fn documented(files: &[EmbeddedFile], mode: Mode) -> Vec<Value> {
    let mut docs = Vec::new();
    for f in files {
        let in_mode = match f.source {
            Source::Jobs => mode == Mode::RoundRobin,
            Source::Keda => mode == Mode::Keda,
            _ => true,
        };
        if !in_mode {
            continue;
        }
        for mut d in parse_file(f).expect("parses") {
            add_managed_label(&mut d);
            fill_namespace(&mut d, documented_namespace(f.source));
            docs.push(d);
        }
    }
    docs
}

#[test]
fn rendering_the_deploy_files_with_defaults_reproduces_them() {
    let files = embedded();
    let keda = RenderOptions {
        mode: Mode::Keda,
        ..RenderOptions::default()
    };
    let r = render(&files, &keda).expect("deploy/ renders in KEDA mode");
    let key = |v: &Value| {
        format!(
            "{}/{}/{}",
            v["kind"], v["metadata"]["namespace"], v["metadata"]["name"]
        )
    };
    let mut got: Vec<Value> = r.plan.objects.iter().map(|o| o.object.clone()).collect();
    let mut want = documented(&files, Mode::Keda);
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want);
    assert_eq!(r.namespace, "posture");
    assert_eq!(r.plan.workload_names("ScaledJob").len(), 10);
    assert_eq!(r.plan.deployments().len(), 2, "scheduler and scaler");

    let r = render(&files, &RenderOptions::default()).expect("deploy/ renders");
    let mut got: Vec<Value> = r.plan.objects.iter().map(|o| o.object.clone()).collect();
    let mut want = documented(&files, Mode::RoundRobin);
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want);
    assert_eq!(r.namespace, "default");
    assert_eq!(
        r.plan.workload_names("Job").len(),
        10,
        "ten documented cameras"
    );
    assert_eq!(
        r.plan.deployments(),
        [("kube-system".to_string(), "rr-scheduler".to_string())]
    );
    // Stage order: RBAC, then config, then the scheduler, then the Jobs.
    let stages: Vec<_> = r.plan.objects.iter().map(|o| o.stage).collect();
    assert!(stages.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn derived_cameras_follow_the_documented_pattern() {
    // Keep only the first two documented Jobs and derive the other eight:
    // they must equal the documented ones.
    let files = embedded();
    let jobs_file = files
        .iter()
        .find(|f| f.path.ends_with("posture-jobs.yaml"))
        .expect("present");
    let docs = parse_file(jobs_file).expect("parses");
    for (i, want) in docs.iter().enumerate().skip(2) {
        assert_eq!(
            &derive_camera(&docs[0], Some(&docs[1]), i),
            want,
            "camera {i}"
        );
    }
    let opts = RenderOptions {
        cameras: Some(12),
        ..RenderOptions::default()
    };
    let r = render(&files, &opts).expect("renders");
    let names = r.plan.workload_names("Job");
    assert_eq!(names.len(), 12);
    assert_eq!(names[11], "posture-pi1-11");
}

#[test]
fn keda_files_move_to_another_namespace_with_their_service_address() {
    let opts = RenderOptions {
        mode: Mode::Keda,
        namespace: Some("farm".into()),
        cameras: Some(11),
        topics: (0..11).map(|i| format!("t/{i}")).collect(),
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
    assert_eq!(
        ns,
        ["farm"],
        "the documented Namespace is renamed, not duplicated"
    );
    let sj = r
        .plan
        .objects
        .iter()
        .find(|o| o.name() == "posture-pi1-10")
        .expect("derived camera");
    assert_eq!(sj.namespace(), Some("farm"));
    assert_eq!(
        sj.object.pointer("/spec/triggers/0/metadata/scalerAddress"),
        Some(&json!("posture-scaler.farm.svc.cluster.local:50051"))
    );
    assert_eq!(topic_of(&sj.object).as_deref(), Some("t/10"));
    assert_eq!(
        sj.object
            .pointer("/spec/jobTargetRef/template/spec/containers/0/args"),
        Some(&json!(["analyze", "--topic", "t/10"]))
    );
    let sched = r
        .plan
        .objects
        .iter()
        .find(|o| o.name() == "rr-scheduler" && o.kind_name() == "Deployment")
        .expect("scheduler");
    assert_eq!(sched.namespace(), Some("kube-system"));
    let binding = r
        .plan
        .objects
        .iter()
        .find(|o| o.kind_name() == "RoleBinding")
        .expect("balancer binding");
    assert_eq!(binding.object["subjects"][0]["namespace"], "farm");
}

#[test]
fn derived_scaled_jobs_follow_the_documented_pattern() {
    let files = embedded();
    let file = files
        .iter()
        .find(|f| f.path.ends_with("scaledjobs.yaml"))
        .expect("present");
    let docs = parse_file(file).expect("parses");
    assert_eq!(docs.len(), 10);
    for (i, want) in docs.iter().enumerate().skip(2) {
        assert_eq!(
            &derive_camera(&docs[0], Some(&docs[1]), i),
            want,
            "camera {i}"
        );
    }
}

#[test]
fn broker_override_lands_in_the_config_map() {
    let opts = RenderOptions {
        mqtt_broker: Some("mosquitto.posture".into()),
        ..RenderOptions::default()
    };
    let r = render(&embedded(), &opts).expect("renders");
    let cm = r
        .plan
        .objects
        .iter()
        .find(|o| o.kind_name() == "ConfigMap")
        .expect("config map");
    assert_eq!(
        cm.object.pointer("/data/MQTT_BROKER"),
        Some(&json!("mosquitto.posture"))
    );
}

#[test]
fn namespace_image_and_secret_are_rendered() {
    let opts = RenderOptions {
        namespace: Some("posture".into()),
        image: Some("reg.example/pf:v2".into()),
        db: Some(DbCredentials {
            database_url: "postgres://u:p@h:5432/d".into(),
        }),
        ..RenderOptions::default()
    };
    let r = render(&files(), &opts).expect("renders");
    assert_eq!(
        names(&r),
        [
            "Namespace posture",
            "ServiceAccount kube-system/rr-scheduler",
            "ClusterRoleBinding rr-scheduler",
            "Secret posture/posture-db",
            "Deployment kube-system/rr-scheduler",
            "Job posture/posture-pi1",
            "Job posture/posture-pi1-1",
        ]
    );
    let crb = &r.plan.objects[2].object;
    assert_eq!(crb["subjects"][0]["namespace"], "kube-system");
    assert_eq!(crb["subjects"][1]["namespace"], "posture");
    let dep = &r.plan.objects[4].object;
    assert_eq!(
        dep.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("reg.example/pf:v2"))
    );
    assert_eq!(
        dep.pointer("/spec/template/spec/containers/0/env/0/value"),
        Some(&json!("posture"))
    );
    assert_eq!(
        dep.pointer("/spec/template/metadata/labels/app.kubernetes.io~1managed-by"),
        Some(&json!("posture-farm"))
    );
    let secret = &r.plan.objects[3].object;
    // base64 of the URL, never the plain text in a file.
    assert_eq!(
        secret.pointer("/data/DATABASE_URL"),
        Some(&json!("cG9zdGdyZXM6Ly91OnBAaDo1NDMyL2Q="))
    );
    assert!(r.warnings.is_empty());
}

#[test]
fn cameras_beyond_the_documented_ones_are_cloned_from_the_first() {
    let opts = RenderOptions {
        cameras: Some(3),
        ..RenderOptions::default()
    };
    let r = render(&files(), &opts).expect("renders");
    let jobs: Vec<&PlannedObject> = r
        .plan
        .objects
        .iter()
        .filter(|o| o.kind_name() == "Job")
        .collect();
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs[2].name(), "posture-pi1-2");
    assert_eq!(topic_of(&jobs[1].object).as_deref(), Some("camera/pi1-1"));
    assert_eq!(topic_of(&jobs[2].object).as_deref(), Some("camera/pi1-2"));
    assert_eq!(
        jobs[2]
            .object
            .pointer("/spec/template/metadata/labels/camera"),
        Some(&json!("posture-pi1-2"))
    );

    let opts = RenderOptions {
        cameras: Some(1),
        ..RenderOptions::default()
    };
    let r = render(&files(), &opts).expect("renders");
    assert_eq!(r.plan.workload_names("Job"), ["posture-pi1"]);
}

#[test]
fn topics_set_the_camera_count_and_must_agree_with_cameras() {
    let opts = RenderOptions {
        topics: vec!["a".into(), "b".into(), "c".into()],
        ..RenderOptions::default()
    };
    let r = render(&files(), &opts).expect("renders");
    let topics: Vec<Option<String>> = r
        .plan
        .stage(super::super::plan::Stage::Workloads)
        .map(|o| topic_of(&o.object))
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
    let err = render(&files(), &opts).expect_err("mismatch");
    assert!(err.to_string().contains("one topic per camera"), "{err}");
    let opts = RenderOptions {
        cameras: Some(0),
        ..RenderOptions::default()
    };
    assert!(render(&files(), &opts).is_err());
}

#[test]
fn db_credentials_from_parts_are_url_encoded_and_partial_sets_fail() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let db = DbCredentials::from_env(env(&[
        ("DB_HOST", "db"),
        ("DB_PORT", "5432"),
        ("DB_NAME", "posture"),
        ("DB_USER", "pf"),
        ("DB_PASSWORD", "p@ss:w/rd"),
    ]))
    .expect("complete")
    .expect("set");
    assert_eq!(
        db.database_url,
        "postgres://pf:p%40ss%3Aw%2Frd@db:5432/posture"
    );
    assert!(
        !format!("{db:?}").contains("ss"),
        "Debug must not leak the password"
    );
    assert_eq!(DbCredentials::from_env(env(&[])).expect("ok"), None);
    let err = DbCredentials::from_env(env(&[("DB_HOST", "db")])).expect_err("partial");
    assert!(err.to_string().contains("DB_PORT"), "{err}");
    let url = DbCredentials::from_env(env(&[
        ("DATABASE_URL", "postgres://x"),
        ("DB_HOST", "ignored"),
    ]));
    assert_eq!(url.expect("ok").expect("set").database_url, "postgres://x");
}

#[test]
fn keda_mode_pins_scaled_jobs_with_node_affinity() {
    const KEDA: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: posture-pi1, namespace: default}
spec:
  jobTargetRef:
    template:
      spec:
        containers:
        - {name: analyzer, image: example/posture-farm:latest, env: [{name: MQTT_TOPIC, value: camera/pi1}]}
  triggers:
  - {type: external, metadata: {scalerAddress: "posture-scaler.default:50051"}}
"#;
    let mut files = files();
    files.push(EmbeddedFile {
        path: "keda.yaml",
        source: Source::Keda,
        text: KEDA,
    });
    let opts = RenderOptions {
        mode: Mode::Keda,
        cameras: Some(2),
        ..RenderOptions::default()
    };
    let mut r = render(&files, &opts).expect("renders");
    assert!(
        r.plan.workload_names("Job").is_empty(),
        "no round-robin Jobs in KEDA mode"
    );
    let names = r.plan.workload_names("ScaledJob");
    assert_eq!(names, ["posture-pi1", "posture-pi1-1"]);
    let placement = BTreeMap::from([("posture-pi1".to_string(), "orin".to_string())]);
    assign_nodes(&mut r.plan, &placement);
    let sj = r
        .plan
        .objects
        .iter()
        .find(|o| o.name() == "posture-pi1" && o.kind_name() == "ScaledJob")
        .expect("present");
    assert_eq!(
        sj.object.pointer("/spec/jobTargetRef/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0/values/0"),
        Some(&json!("orin"))
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any camera count renders to that many workloads with distinct
        /// names and topics, all carrying the ownership label on object
        /// and pod template, all in the requested namespace, in stage order.
        #[test]
        fn cameras_render_to_distinct_owned_workloads(n in 1usize..40, keda in any::<bool>(), ns in "[a-z]{1,8}") {
            let mode = if keda { Mode::Keda } else { Mode::RoundRobin };
            let opts = RenderOptions { mode, cameras: Some(n), namespace: Some(ns.clone()), ..RenderOptions::default() };
            let r = render(&embedded(), &opts).expect("renders");
            let workloads: Vec<&PlannedObject> = r.plan.stage(super::super::super::plan::Stage::Workloads).collect();
            prop_assert_eq!(workloads.len(), n);
            let names: BTreeSet<&str> = workloads.iter().map(|o| o.name()).collect();
            prop_assert_eq!(names.len(), n);
            let topics: BTreeSet<Option<String>> = workloads.iter().map(|o| topic_of(&o.object)).collect();
            prop_assert_eq!(topics.len(), n);
            prop_assert!(!topics.contains(&None));
            for o in &r.plan.objects {
                prop_assert_eq!(o.object.pointer("/metadata/labels/app.kubernetes.io~1managed-by"), Some(&json!("posture-farm")));
                if o.kind.namespaced && o.namespace() != Some("kube-system") {
                    prop_assert_eq!(o.namespace(), Some(ns.as_str()));
                }
            }
            for w in &workloads {
                let mut doc = w.object.clone();
                let labelled = pod_spec_mut(&mut doc)
                    .and_then(|t| t.pointer("/metadata/labels/app.kubernetes.io~1managed-by").cloned());
                prop_assert_eq!(labelled, Some(json!("posture-farm")));
            }
            let stages: Vec<_> = r.plan.objects.iter().map(|o| o.stage).collect();
            prop_assert!(stages.windows(2).all(|w| w[0] <= w[1]));
        }
    }
}
