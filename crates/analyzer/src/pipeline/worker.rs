//! The blocking half of the pipeline: the model, the font, the local
//! files and the dead letters move onto the blocking pool for a group of
//! frames and back. Each frame is decoded, run through the model, judged,
//! annotated and encoded; then the group's local files are written and
//! fsynced together ([`FileOutputs::write_group`]).
//!
//! ```text
//!  [Frame] ─► run_one: decode ─ pose ─ angles ─ annotate ─ encode ─► Step::{Analysed, Rejected}
//!          ─► write_files (files output): images, folders, CSV lines ─► Step::{Analysed + paths, Rejected, Failed}
//! ```

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ab_glyph::FontVec;
use image::RgbImage;
use posture_core::posture::{Assessment, Pose, assess};

use super::{AnalyzeError, AnalyzerConfig, Frame, StageTimings};
use crate::annotate::annotate;
use crate::csvlog::Appended;
use crate::deadletter::{DeadLetterError, DeadLetters, Letter, OVERSIZED_PREFIX_BYTES, sanitize};
use crate::model::PoseModel;
use crate::outputs::{FileOutputs, NotWritten};
use crate::payload::{RejectReason, Rejected, decode_payload, too_large};
use crate::record::{PostureRow, frame_id, row_time};

/// The blocking half: model, font, local files and dead letters, moved
/// onto the blocking pool for each frame and back.
pub(super) struct Worker {
    pub(super) model: Box<dyn PoseModel>,
    pub(super) font: Option<Arc<FontVec>>,
    pub(super) files: FileOutputs,
    pub(super) dead: Arc<Mutex<DeadLetters>>,
    pub(super) cfg: AnalyzerConfig,
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
pub(super) enum Step {
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
    /// Analyses a group of frames and, when local files are an output,
    /// writes and fsyncs their files together; each frame's step and timings.
    ///
    /// Each frame's image goes to its temporary file as soon as it is
    /// encoded, and its fsync runs on a thread of its own while the next
    /// frames are analysed (at most one thread per frame of the group, so
    /// at most [`super::MAX_GROUP`]): the disk's latency hides behind the
    /// model's work, and the group's commit only renames the images, fsyncs
    /// their folder and appends the CSV lines.
    pub(super) fn run_group(&mut self, frames: &[Frame]) -> (Vec<Step>, Vec<StageTimings>) {
        let mut timings = vec![StageTimings::default(); frames.len()];
        let (mut steps, staged) = std::thread::scope(|scope| {
            let mut steps = Vec::with_capacity(frames.len());
            let mut syncs = Vec::with_capacity(frames.len());
            let mut staged_paths = HashSet::new();
            for (frame, t) in frames.iter().zip(&mut timings) {
                let step = self.run_one(frame, t);
                let sync = match &step {
                    Step::Analysed { row, jpeg, .. }
                        if self.cfg.outputs.files
                            && staged_paths.insert(self.files.image_path(row)) =>
                    {
                        let started = Instant::now();
                        let sync = match self.files.stage_image(row, jpeg) {
                            // No thread to be had: the commit writes and fsyncs it.
                            Ok(file) => std::thread::Builder::new()
                                .name("image-fsync".into())
                                .spawn_scoped(scope, move || file.sync_data())
                                .ok()
                                .map(Ok),
                            Err(e) => Some(Err(e)),
                        };
                        t.persist += started.elapsed();
                        sync
                    }
                    _ => None,
                };
                steps.push(step);
                syncs.push(sync);
            }
            let staged: Vec<Option<io::Result<()>>> = syncs
                .into_iter()
                .map(|sync| {
                    sync.map(|s| {
                        s.and_then(|thread| {
                            thread.join().unwrap_or_else(|_| {
                                Err(io::Error::other("the image's fsync thread panicked"))
                            })
                        })
                    })
                })
                .collect();
            (steps, staged)
        });
        if self.cfg.outputs.files {
            self.write_files(frames, &mut steps, &mut timings, staged);
        }
        (steps, timings)
    }

    fn run_one(&mut self, frame: &Frame, timings: &mut StageTimings) -> Step {
        if frame.payload.len() > self.cfg.limits.max_payload_bytes {
            // Never decoded: only its first bytes are kept.
            let rejected = too_large(frame.payload.len(), &self.cfg.limits);
            return self.reject(frame, rejected);
        }
        let analysed = analyse(
            &mut *self.model,
            &frame.camera,
            &frame.payload,
            &self.cfg,
            self.font.as_deref(),
            timings,
        );
        match analysed {
            Ok((id, jpeg, assessment)) => Step::Analysed {
                row: Box::new(self.row(frame, &id, &assessment)),
                jpeg,
                assessment,
                image: None,
                appended: None,
            },
            Err(rejected) => self.reject(frame, rejected),
        }
    }

    /// The analysed frames' images and CSV lines, written and fsynced as a
    /// group (`staged`: per frame, whether its image is already in its
    /// temporary file and fsynced); each frame's share of the time goes to
    /// its `persist`.
    fn write_files(
        &mut self,
        frames: &[Frame],
        steps: &mut [Step],
        timings: &mut [StageTimings],
        mut staged: Vec<Option<io::Result<()>>>,
    ) {
        let started = Instant::now();
        let (index, items): (Vec<usize>, Vec<(&PostureRow, &[u8])>) = steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Step::Analysed { row, jpeg, .. } => Some((i, (&**row, jpeg.as_slice()))),
                _ => None,
            })
            .unzip();
        if index.is_empty() {
            return;
        }
        let mut staged: Vec<Option<io::Result<()>>> = index
            .iter()
            .map(|&i| staged.get_mut(i).and_then(Option::take))
            .collect();
        let written = self.files.write_group(&items, &mut staged);
        let share = started.elapsed() / index.len() as u32;
        for (i, result) in index.into_iter().zip(written) {
            timings[i].persist += share;
            match result {
                Ok((path, a)) => {
                    if let Step::Analysed {
                        image, appended, ..
                    } = &mut steps[i]
                    {
                        (*image, *appended) = (Some(path), Some(a));
                    }
                }
                Err(NotWritten::Failed(e)) if e.is_permanent() => {
                    let detail = crate::error_chain(&e);
                    let reason = RejectReason::OutputError;
                    steps[i] = self.reject(&frames[i], Rejected { reason, detail });
                }
                Err(NotWritten::Failed(e)) => steps[i] = Step::Failed(e.into()),
                Err(NotWritten::Held) => {
                    let camera = frames[i].camera.clone();
                    steps[i] = Step::Failed(AnalyzeError::Held { camera });
                }
            }
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
