//! `posture-farm analyze`: camera frames from MQTT (or image files with
//! `--files`) into annotated images, CSV lines and `posture_log` rows.
//! Flags here only configure; the work is in the `posture-analyzer` crate.

use std::net::SocketAddr;
use std::path::PathBuf;

use prometheus_client::registry::Registry;

use crate::admin::{self, Readiness, Shutdown};
use crate::args::{MqttArgs, PipelineArgs, print_locations, summary_line};

/// Flags of `posture-farm analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Topic to subscribe to (repeatable; MQTT_TOPIC may list several, comma-separated).
    #[arg(long = "topic", env = "MQTT_TOPIC", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Camera id for every frame (default: the topic's last segment, images/pi1 → pi1;
    /// with --files: "files").
    #[arg(long = "camera-id", env = "CAMERA_ID")]
    pub camera_id: Option<String>,
    /// Analyse these image files or directories instead of subscribing to MQTT.
    #[arg(long = "files", num_args = 1.., value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Address of /metrics, /healthz and /readyz (MQTT mode).
    #[arg(
        long = "admin-addr",
        env = "ADMIN_ADDR",
        default_value = "0.0.0.0:9102"
    )]
    pub admin_addr: SocketAddr,
    /// MQTT protocol of the subscription: 5 (the broker discards messages
    /// over --max-payload-bytes) or 3.1.1 (for brokers without MQTT 5: set
    /// the broker's message_size_limit, or large messages reach the analyzer).
    #[arg(long = "mqtt-protocol", env = "MQTT_PROTOCOL", default_value = "5")]
    pub mqtt_protocol: posture_analyzer::MqttProtocol,
    #[command(flatten)]
    pub mqtt: MqttArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

impl AnalyzeArgs {
    /// Defaults that differ in `--files` mode: files are unrelated photos,
    /// not a camera's frames (static pose mode), and the seeds' folders and
    /// CSV are written next to the database rows.
    fn apply_files_defaults(&mut self) {
        if self.files.is_empty() {
            return;
        }
        self.pipeline
            .pose_mode
            .get_or_insert(posture_pose::Mode::Static);
        self.pipeline
            .outputs
            .get_or_insert(posture_analyzer::outputs::Outputs::BOTH);
    }
}

/// Runs the subcommand.
pub async fn run(mut args: AnalyzeArgs) -> anyhow::Result<()> {
    args.apply_files_defaults();
    let mut registry = Registry::default();
    let mut analyzer = args.pipeline.build(&mut registry).await?;
    if !args.files.is_empty() {
        let camera = args
            .camera_id
            .clone()
            .unwrap_or_else(|| "files".to_string());
        let _retention = args.pipeline.start_retention(&mut analyzer);
        let mut lines = Vec::new();
        let mut missing = Vec::new();
        let report = posture_analyzer::files::analyze_files(
            &mut analyzer,
            &args.files,
            &camera,
            |path, o| {
                lines.push(summary_line(&path.display().to_string(), o));
            },
            |path, why| missing.push(format!("{:<28} UNREADABLE ({why})", path.display())),
        )
        .await?;
        for l in lines.iter().chain(&missing) {
            println!("{l}");
        }
        print_locations(&mut analyzer, &camera).await;
        println!(
            "{} analysed, {} rejected (see dead_letter/), {} unreadable path(s)",
            report.stats.analyzed,
            report.stats.rejected,
            report.unreadable.len()
        );
        analyzer.store().database().close().await;
        anyhow::ensure!(
            !report.any_failed(),
            "{} of the inputs could not be analysed (listed above)",
            report.stats.rejected as usize + report.unreadable.len()
        );
        return Ok(());
    }
    anyhow::ensure!(
        !args.topics.is_empty(),
        "nothing to analyse: give --topic (or MQTT_TOPIC) to subscribe, or --files PATH…"
    );
    // Per camera, not per node: when the scheduler moves a camera's analyzer
    // to another node, the new pod resumes the same broker session (and the
    // frames queued in it).
    let who = args.camera_id.clone().unwrap_or_else(|| {
        args.topics
            .iter()
            .map(|t| posture_analyzer::camera_from_topic(t))
            .collect::<Vec<_>>()
            .join("-")
    });
    let mut mqtt = args.mqtt.config(format!("posture-analyzer-{who}"));
    let _retention = args.pipeline.start_retention(&mut analyzer);
    mqtt.protocol = args.mqtt_protocol;
    let shutdown = Shutdown::on_signals();
    let ready = Readiness::default();
    let admin = admin::serve(args.admin_addr, registry, ready.clone(), shutdown.clone()).await?;
    let stats = posture_analyzer::run_analyzer(
        &mqtt,
        &args.topics,
        args.camera_id.as_deref(),
        &mut analyzer,
        shutdown.clone().wait(),
        move |up| ready.set(up),
        |_| {},
    )
    .await?;
    tracing::info!(
        analyzed = stats.analyzed,
        rejected = stats.rejected,
        "analyzer stopped"
    );
    analyzer.store().database().close().await;
    // The loop only ends by itself when its MQTT task died: exit non-zero so
    // the supervisor (Kubernetes, compose) restarts us.
    let unexpected = !shutdown.is_triggered();
    shutdown.trigger();
    let _ = admin.await;
    anyhow::ensure!(!unexpected, "the MQTT connection task ended unexpectedly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cmd::{Cli, Command};

    fn analyze(args: &[&str]) -> super::AnalyzeArgs {
        let mut argv = vec!["posture-farm", "analyze"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Analyze(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn topics_repeat_and_split_on_commas() {
        let a = analyze(&["--topic", "images/pi1", "--topic", "images/pi2,images/pi3"]);
        assert_eq!(a.topics, ["images/pi1", "images/pi2", "images/pi3"]);
        assert!(a.files.is_empty());
        assert_eq!(a.pipeline.thresholds.neck_threshold, 40.0);
        assert_eq!(a.pipeline.thresholds.torso_threshold, 10.0);
        let cfg = a.mqtt.config("default-id".into());
        assert_eq!((cfg.port, cfg.client_id.as_str()), (1883, "default-id"));
        assert!(cfg.tls.is_none());
    }

    #[test]
    fn mqtt_protocol_and_dead_letter_bounds() {
        let a = analyze(&["--topic", "t"]);
        assert_eq!(a.mqtt_protocol, posture_analyzer::MqttProtocol::V5);
        assert_eq!(a.pipeline.dead_letter_max_letters, 1000);
        assert_eq!(a.pipeline.dead_letter_max_bytes, 256 << 20);
        let a = analyze(&[
            "--topic",
            "t",
            "--mqtt-protocol",
            "3.1.1",
            "--dead-letter-max-letters",
            "10",
            "--dead-letter-max-bytes",
            "1000000",
        ]);
        assert_eq!(a.mqtt_protocol, posture_analyzer::MqttProtocol::V311);
        assert_eq!(a.pipeline.dead_letter_max_letters, 10);
        assert_eq!(a.pipeline.dead_letter_max_bytes, 1_000_000);
        let zero = ["posture-farm", "analyze", "--dead-letter-max-letters", "0"];
        assert!(Cli::try_parse_from(zero).is_err());
        let bad = ["posture-farm", "analyze", "--mqtt-protocol", "6"];
        assert!(Cli::try_parse_from(bad).is_err());
    }

    #[test]
    fn files_mode_and_thresholds() {
        let a = analyze(&[
            "--files",
            "a.jpg",
            "photos/",
            "--neck-threshold",
            "35",
            "--camera-id",
            "desk",
        ]);
        assert_eq!(a.files.len(), 2);
        assert_eq!(a.pipeline.thresholds.neck_threshold, 35.0);
        assert_eq!(a.camera_id.as_deref(), Some("desk"));
    }

    #[test]
    fn pose_device_and_mode() {
        let a = analyze(&["--topic", "t"]);
        assert_eq!(a.pipeline.device, posture_pose::Device::Auto);
        assert_eq!(
            a.pipeline.pose_mode, None,
            "decided by run(): tracking unless --files"
        );
        let a = analyze(&["--topic", "t", "--device", "cuda", "--pose-mode", "static"]);
        assert_eq!(a.pipeline.device, posture_pose::Device::Cuda);
        assert_eq!(a.pipeline.pose_mode, Some(posture_pose::Mode::Static));
        assert!(
            Cli::try_parse_from(["posture-farm", "analyze", "--device", "gpu"]).is_err(),
            "unknown devices are refused"
        );
    }

    #[test]
    fn database_choice_from_flags() {
        let a = analyze(&["--topic", "t", "--sqlite-path", "/data/p.db"]);
        assert_eq!(
            a.pipeline.db_target().unwrap().describe(),
            "sqlite:/data/p.db"
        );
        let a = analyze(&[
            "--topic",
            "t",
            "--db-enabled",
            "true",
            "--db-host",
            "db.local",
            "--db-name",
            "farm",
            "--db-password",
            "s3cret",
        ]);
        assert_eq!(
            a.pipeline.db_target().unwrap().describe(),
            "postgres://db.local:5432/farm"
        );
        let a = analyze(&[
            "--topic",
            "t",
            "--database-url",
            "postgres://u:p@pg:6543/x",
            "--db-enabled",
            "true",
            "--db-host",
            "ignored",
        ]);
        assert_eq!(
            a.pipeline.db_target().unwrap().describe(),
            "postgres://pg:6543/x"
        );
    }

    #[test]
    fn legacy_database_tls_and_outputs_flags() {
        let a = analyze(&[
            "--topic",
            "t",
            "--db-enabled",
            "true",
            "--db-host",
            "db.local",
            "--db-sslmode",
            "verify-full",
            "--db-sslrootcert",
            "/etc/ca.pem",
            "--outputs",
            "db",
            "--image-retention",
            "30d",
            "--image-keep",
            "100",
        ]);
        assert!(a.pipeline.db_target().is_ok());
        assert_eq!(
            a.pipeline.outputs,
            Some(posture_analyzer::outputs::Outputs::DB)
        );
        assert_eq!(
            a.pipeline.image_retention,
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
        let a = analyze(&[
            "--topic",
            "t",
            "--db-enabled",
            "true",
            "--db-host",
            "h",
            "--db-sslmode",
            "strict",
        ]);
        assert!(a.pipeline.db_target().is_err());
        // MQTT cameras: the database only (unset here, resolved in build).
        assert_eq!(analyze(&["--topic", "t"]).pipeline.outputs, None);
        // Files: database and the seeds' files, unless told otherwise.
        let mut a = analyze(&["--files", "x.jpg"]);
        a.apply_files_defaults();
        assert_eq!(
            a.pipeline.outputs,
            Some(posture_analyzer::outputs::Outputs::BOTH)
        );
        let mut a = analyze(&["--files", "x.jpg", "--outputs", "files"]);
        a.apply_files_defaults();
        assert_eq!(
            a.pipeline.outputs,
            Some(posture_analyzer::outputs::Outputs::FILES)
        );
    }

    #[test]
    fn tls_and_credentials() {
        let a = analyze(&[
            "--topic",
            "t",
            "--mqtt-tls",
            "--mqtt-ca",
            "/etc/ca.pem",
            "--mqtt-username",
            "u",
            "--mqtt-password",
            "p",
            "--mqtt-port",
            "8883",
        ]);
        let cfg = a.mqtt.config("x".into());
        assert_eq!(
            cfg.tls.unwrap().ca_file,
            std::path::PathBuf::from("/etc/ca.pem")
        );
        assert_eq!(
            (cfg.username.as_deref(), cfg.password.as_deref(), cfg.port),
            (Some("u"), Some("p"), 8883)
        );
    }

    #[test]
    fn publish_and_local_flags() {
        match Cli::try_parse_from([
            "posture-farm",
            "publish",
            "--topic",
            "images/pi4",
            "--interval",
            "0.5",
            "--repeat",
            "3",
            "--raw",
            "a.jpg",
            "b.png",
        ])
        .unwrap()
        .command
        {
            Command::Publish(p) => {
                assert_eq!(p.topic, "images/pi4");
                assert_eq!(
                    (p.interval, p.repeat, p.raw, p.files.len()),
                    (0.5, 3, true, 2)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["posture-farm", "publish"]).is_err(),
            "files are required"
        );
        match Cli::try_parse_from([
            "posture-farm",
            "local",
            "--keep-running",
            "--broker-port",
            "11883",
        ])
        .unwrap()
        .command
        {
            Command::Local(l) => {
                assert!(l.keep_running);
                assert_eq!((l.broker_port, l.topic.as_str()), (11883, "images/pi1"));
            }
            other => panic!("{other:?}"),
        }
    }
}
