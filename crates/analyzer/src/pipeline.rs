//! One frame through the analyzer: decode → pose → verdict → annotated image,
//! CSV line, database row. Used the same way by the MQTT loop and by
//! `analyze --files`.
//!
//! The CPU-heavy part (decoding, inference, drawing, JPEG encoding) runs on
//! the blocking pool with the model moved in and back, so the async side
//! (MQTT keep-alives, /metrics) stays responsive.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ab_glyph::FontVec;
use image::RgbImage;
use posture_core::posture::{Assessment, Pose, Thresholds, Verdict, assess};

use crate::annotate::annotate;
use crate::csvlog::{Appended, CsvError, CsvLog};
use crate::deadletter::{
    DeadLetterError, DeadLetterLimits, DeadLetters, Letter, OVERSIZED_PREFIX_BYTES, sanitize,
};
use crate::metrics::{CameraLabels, Metrics, ReasonLabels, VerdictLabels};
use crate::model::PoseModel;
use crate::payload::{Limits, RejectReason, Rejected, decode_payload, too_large};
use crate::record::{PostureRow, frame_id};
use crate::store::{Recorded, SpoolError, Store};

/// Settings of the pipeline.
#[derive(Clone, Debug)]
pub struct AnalyzerConfig {
    /// Root of every output (annotated images, CSVs, dead letters).
    pub out_dir: PathBuf,
    /// Payload size and pixel limits.
    pub limits: Limits,
    /// Good/Bad thresholds.
    pub thresholds: Thresholds,
    /// The `processed_by` value (node name or host name).
    pub node_name: String,
    /// Font for the text on annotated images (`None`: DejaVu Sans from the system).
    pub font: Option<PathBuf>,
    /// JPEG quality of annotated images.
    pub jpeg_quality: u8,
    /// Bounds of the dead-letter folder.
    pub dead_letter: DeadLetterLimits,
}

impl AnalyzerConfig {
    /// Defaults for `out_dir` and `node_name`.
    pub fn new(out_dir: PathBuf, node_name: String) -> Self {
        Self {
            out_dir,
            limits: Limits::default(),
            thresholds: Thresholds::default(),
            node_name,
            font: None,
            jpeg_quality: 90,
            dead_letter: DeadLetterLimits::default(),
        }
    }
}

/// The node name for `processed_by`: `NODE_NAME` (set from the downward API
/// in Kubernetes) if given, else the host name.
pub fn node_name(node_name_env: Option<&str>) -> String {
    if let Some(n) = node_name_env.map(str::trim).filter(|n| !n.is_empty()) {
        return n.to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// One frame to analyse.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Camera id (`pi1`).
    pub camera: String,
    /// Where it came from: MQTT topic or file path (for logs and dead letters).
    pub source: String,
    /// File stem to include in the output name (files mode), if any.
    pub name_hint: Option<String>,
    /// The payload as received.
    pub payload: Vec<u8>,
    /// When it arrived.
    pub received: jiff::Timestamp,
}

/// What happened to a frame. Both variants mean "done, acknowledge it".
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Analysed; outputs written.
    Analyzed {
        /// The row written (or already present).
        row: Box<PostureRow>,
        /// How the row was made durable.
        recorded: Recorded,
        /// The annotated image.
        image: PathBuf,
    },
    /// Never analysable; kept in the dead-letter folder.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// The kept payload.
        kept: PathBuf,
    },
}

/// A failure that leaves the frame unrecorded: the caller must not
/// acknowledge it, and retries.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// Writing the annotated image failed.
    #[error("writing annotated image {path}")]
    Image {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Appending to the CSV failed.
    #[error(transparent)]
    Csv(#[from] CsvError),
    /// The spool (the database's stand-in) could not be written.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The dead-letter folder could not be written.
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    /// The analysis task panicked (the model is gone with it).
    #[error("the analysis task failed: {0}")]
    Task(String),
}

impl AnalyzeError {
    /// Whether retrying cannot help in this process (the model is gone).
    pub fn is_fatal(&self) -> bool {
        matches!(self, AnalyzeError::Task(_))
    }
}

enum Analysed {
    Rejected(Rejected),
    Done {
        bytes_id: String,
        annotated_jpeg: Vec<u8>,
        assessment: Assessment,
    },
}

/// The analyzer: owns the model, the output files and the row store.
pub struct Analyzer {
    cfg: AnalyzerConfig,
    model: Option<Box<dyn PoseModel>>,
    font: Option<Arc<FontVec>>,
    csv: HashMap<String, CsvLog>,
    store: Store,
    dead: DeadLetters,
    metrics: Metrics,
    logged_reasons: HashSet<RejectReason>,
}

impl Analyzer {
    /// An analyzer writing under `cfg.out_dir` and rows to `store`.
    pub fn new(
        cfg: AnalyzerConfig,
        model: Box<dyn PoseModel>,
        store: Store,
        metrics: Metrics,
    ) -> Self {
        let font = crate::annotate::load_font(cfg.font.as_deref()).map(Arc::new);
        let dead = DeadLetters::open(&cfg.out_dir, cfg.dead_letter, metrics.dead_letter.clone());
        Self {
            cfg,
            model: Some(model),
            font,
            csv: HashMap::new(),
            store,
            dead,
            metrics,
            logged_reasons: HashSet::new(),
        }
    }

    /// The metrics handles.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The row store (replay, summaries).
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The settings.
    pub fn config(&self) -> &AnalyzerConfig {
        &self.cfg
    }

    /// Folder of a camera's annotated images.
    pub fn images_dir(out: &Path, camera: &str) -> PathBuf {
        out.join("analyzed_images")
            .join(format!("analyzed_images_from_{}", sanitize(camera)))
    }

    /// A camera's CSV file.
    pub fn csv_path(out: &Path, camera: &str) -> PathBuf {
        out.join(format!("{}_results.csv", sanitize(camera)))
    }

    /// Analyses one frame and makes its outputs durable. `Ok` means the frame
    /// may be acknowledged; `Err` means it must not be (nothing lost: retry).
    pub async fn process(&mut self, frame: &Frame) -> Result<Outcome, AnalyzeError> {
        self.metrics
            .received
            .get_or_create(&CameraLabels {
                camera: frame.camera.clone(),
            })
            .inc();
        if frame.payload.len() > self.cfg.limits.max_payload_bytes {
            // Neither copied nor decoded: only its first bytes are kept.
            return self.reject(
                frame,
                too_large(frame.payload.len(), &self.cfg.limits),
                frame.payload.len(),
            );
        }
        let started = Instant::now();
        let Some(mut model) = self.model.take() else {
            return Err(AnalyzeError::Task(
                "the pose model was lost in an earlier panic".into(),
            ));
        };
        let payload = frame.payload.clone();
        let camera = frame.camera.clone();
        let limits = self.cfg.limits;
        let thresholds = self.cfg.thresholds;
        let font = self.font.clone();
        let quality = self.cfg.jpeg_quality;
        let joined = tokio::task::spawn_blocking(move || {
            let result = analyse_blocking(
                &mut *model,
                &camera,
                &payload,
                &limits,
                &thresholds,
                font.as_deref(),
                quality,
            );
            (model, result)
        })
        .await;
        let analysed = match joined {
            Ok((model, result)) => {
                self.model = Some(model);
                result
            }
            Err(e) => return Err(AnalyzeError::Task(e.to_string())),
        };
        let outcome = match analysed {
            Analysed::Rejected(rejected) => self.reject(frame, rejected, frame.payload.len())?,
            Analysed::Done {
                bytes_id,
                annotated_jpeg,
                assessment,
            } => {
                self.write_outputs(frame, bytes_id, annotated_jpeg, assessment)
                    .await?
            }
        };
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// Replays spooled rows if the database is back (call periodically).
    pub async fn flush_spool(&mut self) {
        if self.store.spool_depth() > 0 {
            let _ = self.store.flush().await;
        }
    }

    /// Rejects a frame too large to be read whole (checked by the MQTT loop
    /// and files mode before any copy): `frame.payload` holds only its first
    /// bytes and `total_bytes` is its real length. Counted, dead-lettered
    /// (first [`OVERSIZED_PREFIX_BYTES`] only) and acknowledgeable like any
    /// rejection.
    pub fn reject_oversized(
        &mut self,
        frame: &Frame,
        total_bytes: usize,
    ) -> Result<Outcome, AnalyzeError> {
        self.metrics
            .received
            .get_or_create(&CameraLabels {
                camera: frame.camera.clone(),
            })
            .inc();
        self.reject(frame, too_large(total_bytes, &self.cfg.limits), total_bytes)
    }

    fn reject(
        &mut self,
        frame: &Frame,
        rejected: Rejected,
        total_bytes: usize,
    ) -> Result<Outcome, AnalyzeError> {
        let keep = match rejected.reason {
            RejectReason::TooLarge => frame.payload.len().min(OVERSIZED_PREFIX_BYTES),
            _ => frame.payload.len(),
        };
        let kept = self.dead.keep(&Letter {
            camera: &frame.camera,
            source: &frame.source,
            received: frame.received,
            reason: rejected.reason.as_str(),
            detail: &rejected.detail,
            payload: &frame.payload[..keep],
            payload_bytes: total_bytes,
        })?;
        self.metrics
            .failed
            .get_or_create(&ReasonLabels {
                reason: rejected.reason.as_str().to_string(),
            })
            .inc();
        if self.logged_reasons.insert(rejected.reason) {
            tracing::warn!(
                camera = %frame.camera,
                source = %frame.source,
                reason = rejected.reason.as_str(),
                detail = %rejected.detail,
                kept = %kept.display(),
                "frame rejected and kept in the dead-letter folder (further rejections for this reason are logged at debug)"
            );
        } else {
            tracing::debug!(camera = %frame.camera, reason = rejected.reason.as_str(), detail = %rejected.detail, kept = %kept.display(), "frame rejected");
        }
        Ok(Outcome::Rejected {
            reason: rejected.reason,
            kept,
        })
    }

    async fn write_outputs(
        &mut self,
        frame: &Frame,
        id: String,
        jpeg: Vec<u8>,
        assessment: Assessment,
    ) -> Result<Outcome, AnalyzeError> {
        let cam = sanitize(&frame.camera);
        let filename = match &frame.name_hint {
            Some(hint) => format!("{cam}_{}_{}.jpg", sanitize(hint), &id[..12]),
            None => format!("{cam}_{}.jpg", &id[..16]),
        };
        let dir = Self::images_dir(&self.cfg.out_dir, &frame.camera);
        let path = dir.join(&filename);
        write_atomically(&dir, &path, &jpeg).map_err(|source| AnalyzeError::Image {
            path: path.clone(),
            source,
        })?;
        let measurement = assessment.measurement();
        let row = PostureRow {
            pi_id: frame.camera.clone(),
            filename,
            received_time: frame.received.to_string(),
            analyzed_time: jiff::Timestamp::now().to_string(),
            neck_angle: measurement.map(|m| round2(m.neck_deg)),
            body_angle: measurement.map(|m| round2(m.torso_deg)),
            posture_status: assessment.status().to_string(),
            landmarks_detected: assessment.landmarks_detected(),
            processed_by: self.cfg.node_name.clone(),
            frame_id: id,
        };
        let csv_path = Self::csv_path(&self.cfg.out_dir, &frame.camera);
        let csv = match self.csv.entry(frame.camera.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(CsvLog::open(&csv_path)?),
        };
        let appended = csv.append(&row)?;
        let recorded = self.store.record(&row).await?;
        let duplicate = recorded == Recorded::Duplicate || appended == Appended::Duplicate;
        if duplicate {
            self.metrics.duplicates.inc();
            tracing::info!(camera = %frame.camera, frame_id = %row.frame_id, "redelivered frame: outputs already recorded");
        } else {
            let verdict = match assessment {
                Assessment::NoPerson => "no_person",
                Assessment::Unmeasurable => "unmeasurable",
                Assessment::Measured {
                    verdict: Verdict::Good,
                    ..
                } => "good",
                Assessment::Measured {
                    verdict: Verdict::Bad,
                    ..
                } => "bad",
            };
            self.metrics
                .analyzed
                .get_or_create(&VerdictLabels {
                    camera: frame.camera.clone(),
                    verdict: verdict.to_string(),
                })
                .inc();
        }
        tracing::info!(
            camera = %frame.camera,
            file = %row.filename,
            status = %row.posture_status,
            neck = ?row.neck_angle,
            torso = ?row.body_angle,
            recorded = ?recorded,
            "frame analysed"
        );
        Ok(Outcome::Analyzed {
            row: Box::new(row),
            recorded,
            image: path,
        })
    }
}

fn round2(v: f32) -> f64 {
    (f64::from(v) * 100.0).round() / 100.0
}

fn analyse_blocking(
    model: &mut dyn PoseModel,
    camera: &str,
    payload: &[u8],
    limits: &Limits,
    thresholds: &Thresholds,
    font: Option<&FontVec>,
    quality: u8,
) -> Analysed {
    let decoded = match decode_payload(payload, limits) {
        Ok(d) => d,
        Err(r) => return Analysed::Rejected(r),
    };
    let bytes_id = frame_id(camera, &decoded.bytes);
    let mut img: RgbImage = decoded.image;
    let pose: Option<Pose> = match model.estimate_stream(camera, &img) {
        Ok(p) => p,
        Err(e) => {
            return Analysed::Rejected(Rejected {
                reason: RejectReason::ModelError,
                detail: format!("{} failed: {e}", model.name()),
            });
        }
    };
    let assessment = assess(pose.as_ref(), thresholds);
    annotate(&mut img, pose.as_ref(), &assessment, font);
    let mut jpeg = Vec::new();
    if let Err(e) =
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality).encode_image(&img)
    {
        // Encoding an in-memory RGB8 image only fails on absurd sizes.
        return Analysed::Rejected(Rejected {
            reason: RejectReason::Corrupt,
            detail: format!("encoding the annotated image: {e}"),
        });
    }
    Analysed::Done {
        bytes_id,
        annotated_jpeg: jpeg,
        assessment,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees half an image.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("jpg.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}
