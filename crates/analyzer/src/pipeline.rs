//! Frames through the analyzer: decode → pose → verdict → annotated image,
//! CSV line, database row (and image). Used the same way by the MQTT loop
//! and by `analyze --files`.
//!
//! Frames that arrive together are made durable together (a group commit,
//! at most [`MAX_GROUP`]): their images and CSV lines with one fsync per
//! file, folder and CSV file, then their rows in one database transaction.
//! No frame of a group is reported done (and so acknowledged) before that
//! commit returned; a frame the commit could not take is reported as an
//! error and retried, never acknowledged.
//!
//! Everything that blocks runs on the blocking pool with the model and the
//! file outputs moved in and back: decoding, inference, drawing, JPEG
//! encoding, and the fsynced image files and CSV lines. The async side
//! (MQTT keep-alives, /metrics) only awaits the database or, while it is
//! down, the spool.
//!
//! ```text
//!  [Frame; ≤ MAX_GROUP] ─► [blocking] each: decode ─ pose ─ angles ─ annotate ─ encode
//!                          ─► files? FileOutputs::write_group (images, folders, CSV: fsynced)
//!        ─► [async] Store::record_group(rows, images if db): one commit ─► [Outcome] (then the caller acks)
//! ```

mod worker;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use posture_core::posture::{Assessment, Thresholds, Verdict};

use crate::csvlog::Appended;
use crate::deadletter::{DeadLetterError, DeadLetterLimits, DeadLetters};
use crate::metrics::{CameraLabels, Metrics, ReasonLabels, VerdictLabels};
use crate::model::PoseModel;
use crate::outputs::{FileOutputs, MAX_OPEN_CSV, OutputError, Outputs};
use crate::payload::{Limits, RejectReason, Rejected, too_large};
use crate::record::PostureRow;
use crate::store::{Entry, Recorded, SpoolError, Store};
pub(crate) use worker::keep_letter;
use worker::{Step, Worker};

/// Most frames made durable together (one group commit). Sixteen cut the
/// flushes per frame sixteen-fold (the fsyncs of a group's images ride on
/// one journal commit) while the first frame of a full group waits at most
/// sixteen frame times (~0.7 s on one core) for its acknowledgement, and
/// memory holds at most sixteen payloads.
pub const MAX_GROUP: usize = 16;

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
    /// Not recorded because an earlier frame of the same camera in its
    /// group was not (a camera's frames are recorded in order): retried
    /// after that one.
    #[error("held back behind an earlier frame of camera {camera} that is not recorded yet")]
    Held {
        /// The camera.
        camera: String,
    },
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

/// The analyzer: owns the model, the output files and the row store.
pub struct Analyzer {
    cfg: AnalyzerConfig,
    worker: Option<Box<Worker>>,
    store: Store,
    metrics: Metrics,
    logged_reasons: HashSet<RejectReason>,
    /// Where the last group's frames' time went.
    timings: Vec<StageTimings>,
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
            timings: Vec::new(),
            dead,
        }
    }

    /// Where the last frame's time went.
    pub fn last_timings(&self) -> StageTimings {
        self.timings.last().copied().unwrap_or_default()
    }

    /// Where the time of each frame of the last group went, in order (the
    /// group's shared fsyncs and commit split evenly over its frames).
    pub fn group_timings(&self) -> &[StageTimings] {
        &self.timings
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
        let mut results = self.process_group(std::slice::from_ref(frame)).await;
        // process_group answers once per frame.
        results
            .pop()
            .unwrap_or_else(|| Err(AnalyzeError::Task("no result for the frame".into())))
    }

    /// Analyses a group of frames (at most [`MAX_GROUP`], in arrival order)
    /// and makes their outputs durable together: one fsync per image,
    /// folder and CSV file, and one database transaction (or spool append)
    /// for the group. One result per frame, in order, each as for
    /// [`Analyzer::process`]: no `Ok` is returned before the group's commit.
    /// A camera's frames stay in order: after one of its frames fails, its
    /// later frames in the group are [`AnalyzeError::Held`].
    pub async fn process_group(&mut self, frames: &[Frame]) -> Vec<Result<Outcome, AnalyzeError>> {
        for frame in frames {
            self.metrics
                .received
                .get_or_create(&CameraLabels {
                    camera: frame.camera.clone(),
                })
                .inc();
        }
        let started = Instant::now();
        let steps = match self.analyse_group(frames).await {
            Ok(steps) => steps,
            Err(why) => {
                return frames
                    .iter()
                    .map(|_| Err(AnalyzeError::Task(why.clone())))
                    .collect();
            }
        };
        let mut committed = self.commit(&steps).await.into_iter();
        let mut results = Vec::with_capacity(frames.len());
        for (frame, step) in frames.iter().zip(steps) {
            let result = match step {
                Step::Rejected {
                    reason,
                    detail,
                    kept,
                } => Ok(self.rejected(frame, reason, &detail, kept)),
                Step::Failed(e) => Err(e),
                Step::Analysed {
                    row,
                    assessment,
                    image,
                    appended,
                    ..
                } => match committed.next() {
                    Some(Ok(Recorded::Rejected(why))) => self.db_rejected(frame, why).await,
                    Some(Ok(recorded)) => {
                        Ok(self.recorded(frame, row, recorded, &assessment, image, appended))
                    }
                    Some(Err(e)) => Err(e.into()),
                    None => Err(AnalyzeError::Task("no commit result for the frame".into())),
                },
            };
            match &result {
                Ok(_) => self
                    .metrics
                    .latency
                    .observe(started.elapsed().as_secs_f64()),
                Err(AnalyzeError::Held { .. }) => {}
                Err(_) => self.count_retry(frame),
            }
            results.push(result);
        }
        results
    }

    /// The blocking half for a group: the model and the files move onto the
    /// blocking pool and back. An error (the task panicked and took the
    /// model with it) fails every frame of the group.
    async fn analyse_group(&mut self, frames: &[Frame]) -> Result<Vec<Step>, String> {
        let Some(mut worker) = self.worker.take() else {
            return Err("the pose model was lost in an earlier panic".into());
        };
        let owned = frames.to_vec();
        let joined = tokio::task::spawn_blocking(move || {
            let (steps, timings) = worker.run_group(&owned);
            (worker, steps, timings)
        })
        .await;
        match joined {
            Ok((worker, steps, timings)) => {
                self.worker = Some(worker);
                self.timings = timings;
                Ok(steps)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The group commit: the analysed frames' rows (and images, when they
    /// go to the database) in one transaction, or one spool append; how
    /// each was recorded, in order, or the spool's error for every one.
    async fn commit(&mut self, steps: &[Step]) -> Vec<Result<Recorded, SpoolError>> {
        let t = Instant::now();
        let db_images = self.cfg.outputs.db;
        let (index, entries): (Vec<usize>, Vec<Entry<'_>>) = steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Step::Analysed { row, jpeg, .. } => Some((
                    i,
                    Entry {
                        row,
                        jpeg: db_images.then_some(jpeg.as_slice()),
                    },
                )),
                _ => None,
            })
            .unzip();
        if index.is_empty() {
            return Vec::new();
        }
        let recorded = match self.store.record_group(&entries).await {
            Ok(r) => r.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e); index.len()],
        };
        let share = t.elapsed() / index.len() as u32;
        for i in index {
            if let Some(timings) = self.timings.get_mut(i) {
                timings.persist += share;
            }
        }
        recorded
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
    /// (first [`crate::deadletter::OVERSIZED_PREFIX_BYTES`] only) and acknowledgeable like any
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
