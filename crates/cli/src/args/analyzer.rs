//! Analyzer flag groups: the MQTT connection ([`MqttArgs`], for `analyze`
//! and `publish`) and the pipeline ([`PipelineArgs`], for `analyze` and
//! `local`), with what those commands print about a frame and the outputs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use posture_analyzer::outputs::Outputs;
use posture_analyzer::retention::{self, Retention};
use posture_analyzer::store::DbTarget;
use posture_analyzer::{
    Analyzer, AnalyzerConfig, Database, Limits, Metrics, MqttConfig, MqttTls, Outcome, Store,
    Thresholds,
};
use prometheus_client::registry::Registry;

use super::DbArgs;

/// Connection to the MQTT broker (shared by `analyze` and `publish`).
#[derive(Clone, Debug, clap::Args)]
pub struct MqttArgs {
    /// MQTT broker host.
    #[arg(long = "mqtt-broker", env = "MQTT_BROKER", default_value = "localhost")]
    pub broker: String,
    /// MQTT broker port (1883 plain, 8883 usual for TLS).
    #[arg(long = "mqtt-port", env = "MQTT_PORT", default_value_t = 1883)]
    pub port: u16,
    /// MQTT user name (optional).
    #[arg(long = "mqtt-username", env = "MQTT_USERNAME")]
    pub username: Option<String>,
    /// MQTT password (optional).
    #[arg(long = "mqtt-password", env = "MQTT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Connect to the broker with TLS (rustls).
    #[arg(long = "mqtt-tls", env = "MQTT_TLS")]
    pub tls: bool,
    /// PEM file of CAs trusted for the broker's TLS certificate.
    #[arg(
        long = "mqtt-ca",
        env = "MQTT_CA_FILE",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    pub ca_file: PathBuf,
    /// MQTT client id. Keep it stable: the broker keeps the persistent
    /// session (and frames queued while away) under it. Default:
    /// posture-analyzer-<camera> for `analyze` (the same wherever the pod
    /// runs; two analyzers of one camera must not share it), a fresh
    /// posture-camera-<pid> for `publish`.
    #[arg(long = "mqtt-client-id", env = "MQTT_CLIENT_ID")]
    pub client_id: Option<String>,
}

impl MqttArgs {
    /// The library's connection config with `default_client_id` unless one was given.
    pub fn config(&self, default_client_id: String) -> MqttConfig {
        let mut cfg = MqttConfig::new(
            self.broker.clone(),
            self.port,
            self.client_id.clone().unwrap_or(default_client_id),
        );
        cfg.username = self.username.clone();
        cfg.password = self.password.clone();
        cfg.tls = self.tls.then(|| MqttTls {
            ca_file: self.ca_file.clone(),
        });
        cfg
    }
}

/// The verdict's thresholds (the analyzer judges with them; the dashboard
/// and the report draw them).
#[derive(Clone, Debug, clap::Args)]
pub struct ThresholdArgs {
    /// Neck inclination (ear–shoulder vs vertical, degrees) at or above which posture is Bad.
    #[arg(
        long = "neck-threshold",
        env = "NECK_THRESHOLD",
        default_value_t = 40.0
    )]
    pub neck_threshold: f32,
    /// Torso inclination (shoulder–hip vs vertical, degrees) at or above which posture is Bad.
    #[arg(
        long = "torso-threshold",
        env = "TORSO_THRESHOLD",
        default_value_t = 10.0
    )]
    pub torso_threshold: f32,
}

impl ThresholdArgs {
    /// The thresholds, checked.
    pub fn thresholds(&self) -> anyhow::Result<Thresholds> {
        anyhow::ensure!(
            self.neck_threshold > 0.0 && self.torso_threshold > 0.0,
            "thresholds must be positive degrees"
        );
        Ok(Thresholds {
            neck_deg: self.neck_threshold,
            torso_deg: self.torso_threshold,
        })
    }
}

/// Pipeline settings: model, thresholds, limits, outputs, database.
#[derive(Clone, Debug, clap::Args)]
pub struct PipelineArgs {
    /// Directory for outputs: analyzed_images/, <camera>_results.csv, dead_letter/, spool/.
    #[arg(long = "out-dir", env = "OUTPUT_DIR", default_value = ".")]
    pub out_dir: PathBuf,
    /// Models directory made by `posture-farm setup`. Default: ./models if it
    /// holds model files, else $XDG_DATA_HOME/posture-farm/models, else
    /// ~/.local/share/posture-farm/models (where `setup` installs).
    #[arg(
        long = "models-dir",
        env = "POSTURE_MODELS_DIR",
        default_value_os_t = posture_pose::models::default_dir()
    )]
    pub models_dir: PathBuf,
    /// Inference threads (1 = one core per analyzer).
    #[arg(long = "pose-threads", env = "POSE_THREADS", default_value_t = 1)]
    pub pose_threads: usize,
    /// Where the pose model runs: auto (TensorRT, else CUDA, else the CPU,
    /// saying why in one log line), cpu, cuda or tensorrt (an error if the GPU
    /// cannot be used). GPUs need `posture-farm setup --gpu` or ORT_DYLIB_PATH.
    #[arg(long = "device", env = "POSE_DEVICE", default_value = "auto")]
    pub device: posture_pose::Device,
    /// static (every frame on its own) or tracking (per camera, skip the
    /// detector while the person stays where it was found). Default:
    /// tracking for MQTT cameras, static for --files and `local`'s samples.
    #[arg(long = "pose-mode", env = "POSE_MODE")]
    pub pose_mode: Option<posture_pose::Mode>,
    /// The Good/Bad thresholds.
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Largest accepted payload in bytes. Over MQTT 5 the broker is told
    /// (Maximum Packet Size = this + 68 KiB for topic and headers) and
    /// discards larger messages; what arrives over it is dead-lettered (first
    /// 64 KiB only). Files longer than this are not read.
    #[arg(long = "max-payload-bytes", env = "MAX_PAYLOAD_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_payload_bytes: usize,
    /// Most letters (payload + .json sidecar) kept in <out-dir>/dead_letter/;
    /// the oldest are removed first.
    #[arg(
        long = "dead-letter-max-letters",
        env = "DEAD_LETTER_MAX_LETTERS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub dead_letter_max_letters: u64,
    /// Most bytes kept in <out-dir>/dead_letter/; the oldest letters are removed first.
    #[arg(
        long = "dead-letter-max-bytes",
        env = "DEAD_LETTER_MAX_BYTES",
        default_value_t = 256 * 1024 * 1024
    )]
    pub dead_letter_max_bytes: u64,
    /// Largest accepted image in pixels, checked from the header before decoding.
    #[arg(long = "max-pixels", env = "MAX_PIXELS", default_value_t = 40_000_000)]
    pub max_pixels: u64,
    /// TrueType font for the text on annotated images (default: DejaVu Sans from /usr/share/fonts).
    #[arg(long = "font", env = "ANNOTATION_FONT")]
    pub font: Option<PathBuf>,
    /// Value of the processed_by column (default: the host name). In Kubernetes set
    /// NODE_NAME from the downward API (spec.nodeName).
    #[arg(long = "node-name", env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Spool file for rows while the database is unreachable (default <out-dir>/spool/posture_log.jsonl).
    #[arg(long = "spool-path", env = "SPOOL_PATH")]
    pub spool_path: Option<PathBuf>,
    /// Where annotated images go besides the posture_log row: `db` (table
    /// posture_image, same transaction as the row; the cluster), `files`
    /// (analyzed_images/ and <camera>_results.csv under --out-dir) or `db,files`.
    /// Default: `db` for MQTT cameras (the database is the system of record),
    /// `db,files` for --files and `local`.
    #[arg(long = "outputs", env = "ANALYZER_OUTPUTS")]
    pub outputs: Option<Outputs>,
    /// Delete annotated images older than this from the database (e.g. 30d,
    /// 12h; units s, m, h, d, w), in the background. Rows are kept.
    #[arg(long = "image-retention", env = "IMAGE_RETENTION", value_parser = retention::parse_age)]
    pub image_retention: Option<Duration>,
    /// Keep only the newest N annotated images per camera in the database. Rows are kept.
    #[arg(long = "image-keep", env = "IMAGE_KEEP")]
    pub image_keep: Option<u64>,
    /// JPEG quality (1–100) of annotated images.
    #[arg(long = "jpeg-quality", env = "JPEG_QUALITY", default_value_t = 85, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
    /// The results database (`--database-url`, `--sqlite-path`, legacy `DB_*`).
    #[command(flatten)]
    pub db: DbArgs,
}

impl PipelineArgs {
    /// Starts pruning annotated images in the database per --image-retention
    /// and --image-keep (none if neither is set); stops when dropped.
    pub fn start_retention(&self, analyzer: &mut Analyzer) -> Option<AbortOnDrop> {
        let policy = Retention {
            max_age: self.image_retention,
            keep_per_camera: self.image_keep,
        };
        if policy.is_off() {
            return None;
        }
        tracing::info!(max_age = ?policy.max_age, keep_per_camera = ?policy.keep_per_camera, "image retention on");
        let pruned = analyzer.metrics().images_pruned.clone();
        let db = analyzer.store().database().clone();
        // Every 5 minutes: images age by hours or days; a round is a few batched DELETEs.
        Some(AbortOnDrop(retention::spawn(
            db,
            policy,
            Duration::from_secs(300),
            pruned,
        )))
    }

    /// Where rows go.
    pub fn db_target(&self) -> anyhow::Result<DbTarget> {
        self.db.target()
    }

    /// Loads the model, opens the database and spool, registers metrics
    /// under `posture_analyzer_` in `registry`, and returns the analyzer.
    pub async fn build(&self, registry: &mut Registry) -> anyhow::Result<Analyzer> {
        let thresholds = self.thresholds.thresholds()?;
        let model = load_model(&posture_pose::PoseConfig {
            models_dir: self.models_dir.clone(),
            threads: self.pose_threads.max(1),
            device: self.device,
            mode: self.pose_mode.unwrap_or(posture_pose::Mode::Tracking),
            ..posture_pose::PoseConfig::default()
        })?;
        let target = self.db_target()?;
        let db = Database::open(&target)
            .await
            .with_context(|| format!("opening the database {}", target.describe()))?;
        let metrics = Metrics::register(registry.sub_registry_with_prefix("posture_analyzer"));
        metrics.set_pose_device(model.device());
        let spool = self
            .spool_path
            .clone()
            .unwrap_or_else(|| self.out_dir.join("spool").join("posture_log.jsonl"));
        let store = Store::new(db, &spool, &metrics).context("opening the spool")?;
        let mut cfg = AnalyzerConfig::new(
            self.out_dir.clone(),
            posture_analyzer::node_name(self.node_name.as_deref()),
        );
        cfg.limits = Limits {
            max_payload_bytes: self.max_payload_bytes,
            max_pixels: self.max_pixels,
        };
        cfg.thresholds = thresholds;
        cfg.font = self.font.clone();
        cfg.dead_letter = posture_analyzer::deadletter::DeadLetterLimits {
            max_letters: usize::try_from(self.dead_letter_max_letters).unwrap_or(usize::MAX),
            max_bytes: self.dead_letter_max_bytes,
        };
        cfg.outputs = self.outputs.unwrap_or(Outputs::DB);
        cfg.jpeg_quality = self.jpeg_quality;
        tracing::info!(
            outputs = %cfg.outputs,
            out_dir = %cfg.out_dir.display(),
            database = %target.describe(),
            spool = %spool.display(),
            node = %cfg.node_name,
            neck_threshold = cfg.thresholds.neck_deg,
            torso_threshold = cfg.thresholds.torso_deg,
            "analyzer configured"
        );
        Ok(Analyzer::new(cfg, model, store, metrics))
    }
}

/// Aborts a background task when dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Loads BlazePose, or says how to get it.
pub fn load_model(
    cfg: &posture_pose::PoseConfig,
) -> anyhow::Result<Box<dyn posture_analyzer::PoseModel>> {
    let dir = &cfg.models_dir;
    if posture_pose::check_models_dir(dir).is_err() {
        anyhow::bail!(
            "the pose model is not in {} — run `posture-farm setup` (or scripts/setup-models.sh), or point --models-dir / POSTURE_MODELS_DIR at it",
            dir.display()
        );
    }
    let est = posture_analyzer::model::load_blazepose_with(cfg)
        .with_context(|| format!("loading the pose model from {}", dir.display()))?;
    Ok(Box::new(est))
}

/// One human-readable line per frame.
pub fn summary_line(source: &str, o: &Outcome) -> String {
    match o {
        Outcome::Analyzed { row, .. } => {
            let angle = |a: Option<f64>| {
                a.map(|v| format!("{v:5.1}°"))
                    .unwrap_or_else(|| "    – ".into())
            };
            format!(
                "{:<28} {:<20} neck {} torso {}  → {}",
                source,
                row.posture_status,
                angle(row.neck_angle),
                angle(row.body_angle),
                row.filename
            )
        }
        Outcome::Rejected { reason, kept } => {
            format!("{source:<28} REJECTED ({reason}) → {}", kept.display())
        }
    }
}

/// Prints where a camera's outputs are.
pub async fn print_locations(analyzer: &mut Analyzer, camera: &str) {
    let out = analyzer.config().out_dir.clone();
    let outputs = analyzer.config().outputs;
    if outputs.files {
        println!(
            "annotated images: {}",
            Analyzer::images_dir(&out, camera).display()
        );
        println!(
            "CSV:              {}",
            Analyzer::csv_path(&out, camera).display()
        );
    }
    let tables = if outputs.db {
        "tables posture_log, posture_image; `posture-farm results export` writes the files"
    } else {
        "table posture_log"
    };
    println!(
        "database:         {} ({tables})",
        analyzer.store().database().target()
    );
    if analyzer.store().spool_depth() > 0 {
        println!(
            "spooled rows waiting for the database: {}",
            analyzer.store().spool_depth()
        );
    }
}
