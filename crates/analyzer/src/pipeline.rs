//! One frame through the analyzer: decode → pose → verdict → annotated image,
//! CSV line, database row (and image). Used the same way by the MQTT loop
//! and by `analyze --files`.
//!
//! Everything that blocks runs on the blocking pool with the model and the
//! file outputs moved in and back: decoding, inference, drawing, JPEG
//! encoding, and the fsynced image file and CSV line. The async side (MQTT
//! keep-alives, /metrics) only awaits the database (row and image in one
//! transaction) or, while it is down, the spool.
//!
//! ```text
//!  Frame ─► [blocking] decode ─ pose ─ angles ─ annotate ─ encode ─ files? (image, CSV)
//!        ─► [async] Store::record(row, image if db) ─► Outcome (then the caller acks)
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ab_glyph::FontVec;
use image::RgbImage;
use posture_core::posture::{Assessment, Pose, Thresholds, Verdict, assess};

use crate::annotate::annotate;
use crate::csvlog::Appended;
use crate::deadletter::{
    DeadLetterError, DeadLetterLimits, DeadLetters, Letter, OVERSIZED_PREFIX_BYTES, sanitize,
};
use crate::metrics::{CameraLabels, Metrics, ReasonLabels, VerdictLabels};
use crate::model::PoseModel;
use crate::outputs::{FileOutputs, MAX_OPEN_CSV, OutputError, Outputs};
use crate::payload::{Limits, RejectReason, Rejected, decode_payload, too_large};
use crate::record::{PostureRow, frame_id, row_time};
use crate::store::{Recorded, SpoolError, Store};

/// Settings of the pipeline.
#[derive(Clone, Debug)]
pub struct AnalyzerConfig {
    /// Root of the local outputs (annotated images, CSVs, dead letters).
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
    /// Where annotated images go besides the row (database, local files).
    pub outputs: Outputs,
    /// Bounds of the dead-letter folder.
    pub dead_letter: DeadLetterLimits,
}

impl AnalyzerConfig {
    /// Defaults for `out_dir` and `node_name`: local files, JPEG quality 85.
    pub fn new(out_dir: PathBuf, node_name: String) -> Self {
        Self {
            out_dir,
            limits: Limits::default(),
            thresholds: Thresholds::default(),
            node_name,
            font: None,
            jpeg_quality: 85,
            outputs: Outputs::default(),
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
        /// How the row (and image) was made durable.
        recorded: Recorded,
        /// The annotated image file, when local files are an output.
        image: Option<PathBuf>,
    },
    /// Never analysable or recordable; kept in the dead-letter folder.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// The kept payload.
        kept: PathBuf,
    },
}

/// A failure that leaves the frame unrecorded: the caller must not
/// acknowledge it, and retries later (every one of these is transient:
/// failures that can never clear end as [`Outcome::Rejected`]).
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// Writing the annotated image or the CSV line failed.
    #[error(transparent)]
    Output(#[from] OutputError),
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

/// Where one frame's time went (`posture-farm bench pipeline`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTimings {
    /// Payload to pixels (base64, JPEG/PNG decoding, orientation).
    pub decode: Duration,
    /// Pose detector (the whole pose step when the model does not split it).
    pub detect: Duration,
    /// Landmark model.
    pub landmarks: Duration,
    /// Angles and verdict.
    pub angles: Duration,
    /// Drawing onto the frame.
    pub annotate: Duration,
    /// JPEG encoding of the annotated frame.
    pub encode: Duration,
    /// Making the outputs durable (image, CSV line, row).
    pub persist: Duration,
}

impl StageTimings {
    /// The pose step: detector plus landmark model.
    pub fn pose(&self) -> Duration {
        self.detect + self.landmarks
    }

    /// Every stage.
    pub fn total(&self) -> Duration {
        self.decode + self.pose() + self.angles + self.annotate + self.encode + self.persist
    }
}

/// The blocking half: model, font, local files and dead letters, moved
/// onto the blocking pool for each frame and back.
struct Worker {
    model: Box<dyn PoseModel>,
    font: Option<Arc<FontVec>>,
    files: FileOutputs,
    dead: Arc<Mutex<DeadLetters>>,
    cfg: AnalyzerConfig,
}

/// Keeps `frame` (its first bytes only when it is too large) in the
/// dead-letter folder shared by the pipeline and the store.
pub(crate) fn keep_letter(
    dead: &Mutex<DeadLetters>,
    frame: &Frame,
    rejected: &Rejected,
    total_bytes: usize,
) -> Result<PathBuf, DeadLetterError> {
    let keep = match rejected.reason {
        RejectReason::TooLarge => frame.payload.len().min(OVERSIZED_PREFIX_BYTES),
        _ => frame.payload.len(),
    };
    // A panic while holding the lock leaves the index usable: files are the truth.
    let mut dead = dead.lock().unwrap_or_else(|p| p.into_inner());
    dead.keep(&Letter {
        camera: &frame.camera,
        source: &frame.source,
        received: frame.received,
        reason: rejected.reason.as_str(),
        detail: &rejected.detail,
        payload: &frame.payload[..keep],
        payload_bytes: total_bytes,
    })
}

/// What the blocking half did with a frame.
enum Step {
    Rejected {
        reason: RejectReason,
        detail: String,
        kept: PathBuf,
    },
    Analysed {
        row: Box<PostureRow>,
        jpeg: Vec<u8>,
        assessment: Assessment,
        image: Option<PathBuf>,
        appended: Option<Appended>,
    },
    Failed(AnalyzeError),
}

impl Worker {
    fn run(&mut self, frame: &Frame, timings: &mut StageTimings) -> Step {
        let analysed = analyse(
            &mut *self.model,
            &frame.camera,
            &frame.payload,
            &self.cfg,
            self.font.as_deref(),
            timings,
        );
        let (id, jpeg, assessment) = match analysed {
            Ok(done) => done,
            Err(rejected) => return self.reject(frame, rejected),
        };
        let row = self.row(frame, &id, &assessment);
        let (mut image, mut appended) = (None, None);
        if self.cfg.outputs.files {
            let started = Instant::now();
            match self.files.write(&row, &jpeg) {
                Ok((path, a)) => (image, appended) = (Some(path), Some(a)),
                Err(e) if e.is_permanent() => {
                    let detail = crate::error_chain(&e);
                    return self.reject(
                        frame,
                        Rejected {
                            reason: RejectReason::OutputError,
                            detail,
                        },
                    );
                }
                Err(e) => return Step::Failed(e.into()),
            }
            timings.persist = started.elapsed();
        }
        Step::Analysed {
            row: Box::new(row),
            jpeg,
            assessment,
            image,
            appended,
        }
    }

    fn row(&self, frame: &Frame, id: &str, assessment: &Assessment) -> PostureRow {
        let cam = sanitize(&frame.camera);
        let filename = match &frame.name_hint {
            Some(hint) => format!("{cam}_{}_{}.jpg", sanitize(hint), &id[..12]),
            None => format!("{cam}_{}.jpg", &id[..16]),
        };
        let measurement = assessment.measurement();
        PostureRow {
            pi_id: frame.camera.clone(),
            filename,
            received_time: row_time(frame.received),
            analyzed_time: row_time(jiff::Timestamp::now()),
            neck_angle: measurement.map(|m| round2(m.neck_deg)),
            body_angle: measurement.map(|m| round2(m.torso_deg)),
            posture_status: assessment.status().to_string(),
            landmarks_detected: assessment.landmarks_detected(),
            processed_by: self.cfg.node_name.clone(),
            frame_id: id.to_string(),
        }
    }

    fn reject(&self, frame: &Frame, rejected: Rejected) -> Step {
        match keep_letter(&self.dead, frame, &rejected, frame.payload.len()) {
            Ok(kept) => Step::Rejected {
                reason: rejected.reason,
                detail: rejected.detail,
                kept,
            },
            Err(e) => Step::Failed(e.into()),
        }
    }
}

/// The analyzer: owns the model, the output files and the row store.
pub struct Analyzer {
    cfg: AnalyzerConfig,
    worker: Option<Box<Worker>>,
    store: Store,
    metrics: Metrics,
    logged_reasons: HashSet<RejectReason>,
    timings: StageTimings,
    dead: Arc<Mutex<DeadLetters>>,
}

impl Analyzer {
    /// An analyzer writing local outputs under `cfg.out_dir` and rows (and
    /// images, per `cfg.outputs`) to `store`.
    pub fn new(
        cfg: AnalyzerConfig,
        model: Box<dyn PoseModel>,
        mut store: Store,
        metrics: Metrics,
    ) -> Self {
        let font = crate::annotate::load_font(cfg.font.as_deref()).map(Arc::new);
        let dead = Arc::new(Mutex::new(DeadLetters::open(
            &cfg.out_dir,
            cfg.dead_letter,
            metrics.dead_letter.clone(),
        )));
        store.set_dead_letters(dead.clone());
        let worker = Worker {
            model,
            font,
            files: FileOutputs::new(cfg.out_dir.clone(), MAX_OPEN_CSV),
            dead: dead.clone(),
            cfg: cfg.clone(),
        };
        Self {
            cfg,
            worker: Some(Box::new(worker)),
            store,
            metrics,
            logged_reasons: HashSet::new(),
            timings: StageTimings::default(),
            dead,
        }
    }

    /// Where the last frame's time went.
    pub fn last_timings(&self) -> StageTimings {
        self.timings
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

    /// CSV files open now (at most [`MAX_OPEN_CSV`]).
    pub fn open_csv_files(&self) -> usize {
        self.worker.as_ref().map_or(0, |w| w.files.open_csv_files())
    }

    /// Folder of a camera's annotated images.
    pub fn images_dir(out: &Path, camera: &str) -> PathBuf {
        FileOutputs::images_dir(out, camera)
    }

    /// A camera's CSV file.
    pub fn csv_path(out: &Path, camera: &str) -> PathBuf {
        FileOutputs::csv_path(out, camera)
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
            return self.reject_too_large(frame, frame.payload.len());
        }
        let started = Instant::now();
        let Some(mut worker) = self.worker.take() else {
            return Err(AnalyzeError::Task(
                "the pose model was lost in an earlier panic".into(),
            ));
        };
        let owned = frame.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut timings = StageTimings::default();
            let step = worker.run(&owned, &mut timings);
            (worker, step, timings)
        })
        .await;
        let step = match joined {
            Ok((worker, step, timings)) => {
                self.worker = Some(worker);
                self.timings = timings;
                step
            }
            Err(e) => return Err(AnalyzeError::Task(e.to_string())),
        };
        let outcome = match step {
            Step::Rejected {
                reason,
                detail,
                kept,
            } => self.rejected(frame, reason, &detail, kept),
            Step::Failed(e) => {
                self.count_retry(frame);
                return Err(e);
            }
            Step::Analysed {
                row,
                jpeg,
                assessment,
                image,
                appended,
            } => {
                let t = Instant::now();
                let image_for_db = self.cfg.outputs.db.then_some(jpeg.as_slice());
                let recorded = match self.store.record(&row, image_for_db).await {
                    Ok(r) => r,
                    Err(e) => {
                        self.count_retry(frame);
                        return Err(e.into());
                    }
                };
                self.timings.persist += t.elapsed();
                if let Recorded::Rejected(why) = recorded {
                    return self.db_rejected(frame, why).await;
                }
                self.recorded(frame, row, recorded, &assessment, image, appended)
            }
        };
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// A frame not recorded on a transient error: the caller retries it.
    fn count_retry(&self, frame: &Frame) {
        self.metrics
            .retried
            .get_or_create(&CameraLabels {
                camera: frame.camera.clone(),
            })
            .inc();
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
        self.reject_too_large(frame, total_bytes)
    }

    fn reject_too_large(
        &mut self,
        frame: &Frame,
        total_bytes: usize,
    ) -> Result<Outcome, AnalyzeError> {
        let rejected = too_large(total_bytes, &self.cfg.limits);
        let kept = keep_letter(&self.dead, frame, &rejected, total_bytes)?;
        Ok(self.rejected(frame, rejected.reason, &rejected.detail, kept))
    }

    /// The database refused the row for good: keep the frame as a dead letter.
    async fn db_rejected(&mut self, frame: &Frame, why: String) -> Result<Outcome, AnalyzeError> {
        let dead = self.dead.clone();
        let owned = frame.clone();
        let rejected = Rejected {
            reason: RejectReason::DbRejected,
            detail: why.clone(),
        };
        let kept = tokio::task::spawn_blocking(move || {
            keep_letter(&dead, &owned, &rejected, owned.payload.len())
        })
        .await
        .map_err(|e| AnalyzeError::Task(e.to_string()))??;
        Ok(self.rejected(frame, RejectReason::DbRejected, &why, kept))
    }

    fn rejected(
        &mut self,
        frame: &Frame,
        reason: RejectReason,
        detail: &str,
        kept: PathBuf,
    ) -> Outcome {
        self.metrics
            .failed
            .get_or_create(&ReasonLabels {
                reason: reason.as_str().to_string(),
            })
            .inc();
        if self.logged_reasons.insert(reason) {
            tracing::warn!(
                camera = %frame.camera,
                source = %frame.source,
                reason = reason.as_str(),
                detail = %detail,
                kept = %kept.display(),
                "frame rejected and kept in the dead-letter folder (further rejections for this reason are logged at debug)"
            );
        } else {
            tracing::debug!(camera = %frame.camera, reason = reason.as_str(), detail = %detail, kept = %kept.display(), "frame rejected");
        }
        Outcome::Rejected { reason, kept }
    }

    fn recorded(
        &mut self,
        frame: &Frame,
        row: Box<PostureRow>,
        recorded: Recorded,
        assessment: &Assessment,
        image: Option<PathBuf>,
        appended: Option<Appended>,
    ) -> Outcome {
        let duplicate = recorded == Recorded::Duplicate || appended == Some(Appended::Duplicate);
        if duplicate {
            self.metrics.duplicates.inc();
            tracing::info!(camera = %frame.camera, frame_id = %row.frame_id, "redelivered frame: outputs already recorded");
        } else {
            self.metrics
                .analyzed
                .get_or_create(&VerdictLabels {
                    camera: frame.camera.clone(),
                    verdict: verdict_label(assessment).to_string(),
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
        Outcome::Analyzed {
            row,
            recorded,
            image,
        }
    }
}

fn verdict_label(assessment: &Assessment) -> &'static str {
    match assessment {
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
    }
}

fn round2(v: f32) -> f64 {
    (f64::from(v) * 100.0).round() / 100.0
}

/// Decode → pose → angles → annotate → encode; the frame id, the annotated
/// JPEG and the assessment, or why the payload can never be analysed.
fn analyse(
    model: &mut dyn PoseModel,
    camera: &str,
    payload: &[u8],
    cfg: &AnalyzerConfig,
    font: Option<&FontVec>,
    timings: &mut StageTimings,
) -> Result<(String, Vec<u8>, Assessment), Rejected> {
    let mut clock = Instant::now();
    let mut lap = || {
        let now = Instant::now();
        let d = now - clock;
        clock = now;
        d
    };
    let decoded = decode_payload(payload, &cfg.limits)?;
    timings.decode = lap();
    let bytes_id = frame_id(camera, &decoded.bytes);
    let mut img: RgbImage = decoded.image;
    let (pose, split) = model
        .estimate_stream_timed(camera, &img)
        .map_err(|e| Rejected {
            reason: RejectReason::ModelError,
            detail: format!("{} failed: {e}", model.name()),
        })?;
    let pose: Option<Pose> = pose;
    let pose_time = lap();
    match split {
        Some(t) => (timings.detect, timings.landmarks) = (t.detect, t.landmarks),
        None => timings.detect = pose_time,
    }
    let assessment = assess(pose.as_ref(), &cfg.thresholds);
    timings.angles = lap();
    annotate(&mut img, pose.as_ref(), &assessment, font);
    timings.annotate = lap();
    let jpeg = encode_jpeg(&img, cfg.jpeg_quality).map_err(|detail| Rejected {
        // Encoding an in-memory RGB8 image only fails on absurd sizes.
        reason: RejectReason::Corrupt,
        detail: format!("encoding the annotated image: {detail}"),
    })?;
    timings.encode = lap();
    Ok((bytes_id, jpeg, assessment))
}

/// The annotated frame as a baseline JPEG, encoded once (jpeg-encoder:
/// SIMD colour conversion and DCT where the CPU has them).
fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, String> {
    let (w, h) = img.dimensions();
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(format!("{w}×{h} is beyond JPEG's 65535-pixel sides"));
    };
    let mut jpeg = Vec::with_capacity(img.as_raw().len() / 8);
    jpeg_encoder::Encoder::new(&mut jpeg, quality)
        .encode(img.as_raw(), w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| e.to_string())?;
    Ok(jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotated_frames_encode_to_jpegs_of_the_same_size() {
        let img = RgbImage::from_fn(173, 97, |x, y| image::Rgb([x as u8, y as u8, 200]));
        let jpeg = encode_jpeg(&img, 85).unwrap();
        let back = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (173, 97));
        let p = back.get_pixel(100, 50);
        assert!(
            (i32::from(p[0]) - 100).abs() < 12 && (i32::from(p[2]) - 200).abs() < 12,
            "{p:?}"
        );
        assert!(encode_jpeg(&RgbImage::new(70_000, 1), 85).is_err());
    }
}
