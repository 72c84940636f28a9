use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    up: UpArgs,
}

fn parse(args: &[&str]) -> Result<UpArgs, clap::Error> {
    let mut all = vec!["up"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).map(|c| c.up)
}

#[test]
fn flags_parse_and_conflicting_sources_are_refused() {
    let up =
        parse(&["--cameras", "3", "--topics", "a,b,c", "--namespace", "farm"]).expect("parses");
    assert_eq!(up.topics, ["a", "b", "c"]);
    assert_eq!(up.mode, ModeArg::RoundRobin);
    assert_eq!(
        up.tag,
        env!("CARGO_PKG_VERSION"),
        "images are pinned to the release"
    );
    assert!(parse(&["--build"]).is_err(), "--build needs --registry");
    for mode in ["round-robin", "gpu", "keda", "priority"] {
        assert!(parse(&["--mode", mode]).is_ok(), "{mode}");
    }
    let up = parse(&["--mode", "keda", "--wait-timeout", "5m"]).expect("parses");
    assert_eq!(up.wait_timeout, Duration::from_secs(300));
    assert!(parse(&["--with-prometheus", "--prometheus-url", "http://p:9090"]).is_err());
    assert!(parse(&["--database-url", "postgres://x", "--database-secret", "s"]).is_err());
    assert!(
        parse(&["--mqtt-username", "u"]).is_err(),
        "a user needs a password"
    );
    assert!(parse(&["--pose-device", "gpu"]).is_err());
    let up = parse(&["--camera-priority", "pi1=high,pi1-2=posture-vip"]).expect("parses");
    assert_eq!(
        up.camera_priorities,
        [
            ("pi1".to_string(), "high".to_string()),
            ("pi1-2".to_string(), "posture-vip".to_string())
        ]
    );
    assert!(parse(&["--camera-priority", "pi1"]).is_err());
}

#[test]
fn flags_become_render_options_and_every_mode_renders_without_a_cluster() {
    for mode in ["round-robin", "gpu", "keda", "priority"] {
        let up = parse(&["--mode", mode, "--with-prometheus"]).expect("parses");
        let opts = render_options(&up).expect("valid");
        assert_eq!(opts.database, DbSetup::InCluster(None));
        let r = manifests::render(&manifests::embedded(), &opts).expect("renders");
        assert!(r.warnings.is_empty(), "{mode}: {:?}", r.warnings);
        assert!(!r.plan.objects.is_empty());
    }
    let up = parse(&[
        "--mqtt-broker",
        "broker.lan:1884",
        "--mqtt-username",
        "farm",
        "--mqtt-password",
        "pw",
        "--database-secret",
        "supabase",
        "--gpu-inference",
        "--gpu-runtime-class",
        "",
        "--image",
        "reg/pf:1.2",
    ])
    .expect("parses");
    let opts = render_options(&up).expect("valid");
    assert_eq!(
        opts.broker,
        BrokerSetup::External {
            host: "broker.lan".into(),
            port: 1884
        }
    );
    assert_eq!(opts.database, DbSetup::Secret("supabase".into()));
    let gpu = opts.gpu_inference.expect("on");
    assert_eq!(gpu.image, "reg/pf:1.2-gpu");
    assert_eq!(gpu.runtime_class, None);
    assert_eq!(gpu.device, "cuda");
}

#[test]
fn a_gpu_config_is_checked_before_anything_is_deployed() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = dir.path().join("gpu.yaml");
    std::fs::write(
        &good,
        "nodes:\n  orin: { query: 'max(jetson_orin_gpu_load_percent)' }\n",
    )
    .expect("write");
    let up = parse(&[
        "--mode",
        "gpu",
        "--gpu-config",
        good.to_str().expect("utf-8"),
    ])
    .expect("parses");
    let opts = render_options(&up).expect("valid");
    assert!(
        opts.gpu_config
            .as_deref()
            .is_some_and(|t| t.contains("orin"))
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "nodes:\n  orin: { query: 'x', metric: y }\n").expect("write");
    let up = parse(&["--gpu-config", bad.to_str().expect("utf-8")]).expect("parses");
    let err = render_options(&up).expect_err("mixed query forms");
    assert!(format!("{err:#}").contains("orin"), "{err:#}");
    let up = parse(&["--gpu-config", "/nonexistent/gpu.yaml"]).expect("parses");
    assert!(render_options(&up).is_err());
}

#[test]
fn generated_passwords_are_long_alphanumeric_and_differ() {
    let a = generate_password().expect("random");
    let b = generate_password().expect("random");
    assert_eq!(a.len(), 32);
    assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
    assert_ne!(a, b);
}

#[test]
fn build_reports_a_missing_dockerfile_before_calling_docker() {
    let tmp = tempfile::tempdir().expect("tmp");
    let err = build_and_push(tmp.path(), "x/posture-farm:0.1.0", None).expect_err("no Dockerfile");
    assert!(err.to_string().contains("no Dockerfile"), "{err}");
}
