//! [`PoseEstimator`]: the two ONNX Runtime sessions, the buffers they
//! reuse and the per-stream tracks, gluing the pure stages of
//! [`crate::detect`], [`crate::landmarks`], [`crate::warp`] and
//! [`crate::tracking`] into image → pose.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;
use posture_core::posture::{Landmark, Pose, landmark};

use crate::detect::{self, Anchor, AnchorOptions, Detection};
use crate::device::Device;
use crate::geometry::RotatedRect;
use crate::landmarks::{self, MODEL_LANDMARKS, REFINE_KERNEL, VALUES_PER_LANDMARK};
use crate::session::{self, Sessions, extract, runtime_err};
use crate::tracking::{self, Mode, Track, Tracks};
use crate::warp::{self, Border};
use crate::{PoseConfig, PoseError};

/// File names inside the models directory (written by `scripts/setup-models.sh`).
pub const DETECTOR_FILE: &str = "pose_detection.onnx";
/// See [`DETECTOR_FILE`].
pub const LANDMARK_FILE: &str = "pose_landmark_full.onnx";
/// See [`DETECTOR_FILE`].
pub const RUNTIME_FILE: &str = "libonnxruntime.so";

const DET_SIZE: u32 = 224;
const LM_SIZE: u32 = 256;
const NUM_ANCHORS: usize = 2254;
const HEATMAP: (usize, usize) = (64, 64);
/// Weighted NMS overlap threshold (pose_detection_cpu.pbtxt).
const NMS_IOU: f32 = 0.3;
/// Auxiliary landmarks the next ROI is computed from (hip centre, full-body point).
const AUX_HIP: usize = 33;
const AUX_FULL_BODY: usize = 34;

/// Runs BlazePose (detector → rotated ROI → full landmark model) on RGB
/// images, in-process, on a fixed number of CPU threads or a GPU. Load once,
/// reuse: loading parses ~24 MB of weights; `estimate` allocates nothing
/// after the first call but the returned pose.
pub struct PoseEstimator {
    detector: Session,
    landmarker: Session,
    anchors: Vec<Anchor>,
    cfg: PoseConfig,
    device: Device,
    tracks: Tracks,
    rgb: Vec<u8>,
    input: Vec<f32>,
}

impl std::fmt::Debug for PoseEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoseEstimator")
            .field("cfg", &self.cfg)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Where the time of one [`PoseEstimator::estimate_timed`] call went.
/// Each stage includes its resampling, inference and decoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoseTimings {
    /// The detector stage (zero when tracking skipped it).
    pub detect: Duration,
    /// The landmark stage, summed over its runs.
    pub landmarks: Duration,
    /// Whether the detector ran.
    pub detector_ran: bool,
    /// How many times the landmark model ran (0, 1, or 2 when a tracked
    /// region was lost and the detector found the person again).
    pub landmark_runs: u32,
}

/// The landmark model's result on one ROI.
struct RoiLandmarks {
    /// The 33 body landmarks, image pixels.
    landmarks: Vec<Landmark>,
    /// The ROI for the next frame, from the auxiliary landmarks.
    next_roi: RotatedRect,
}

/// Checks that every file the estimator needs exists, and says how to get them.
pub fn check_models_dir(dir: &Path) -> Result<(), PoseError> {
    let missing: Vec<PathBuf> = [DETECTOR_FILE, LANDMARK_FILE, RUNTIME_FILE]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| !p.is_file())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PoseError::MissingModels {
            dir: dir.to_path_buf(),
            missing,
        })
    }
}

impl PoseEstimator {
    /// Loads ONNX Runtime (see [`crate::device::runtime_library`]) and both
    /// models on the configured device, and checks their inputs/outputs.
    pub fn load(cfg: &PoseConfig) -> Result<Self, PoseError> {
        check_models_dir(&cfg.models_dir)?;
        let Sessions {
            detector,
            landmarker,
            device,
            library,
        } = session::open(cfg)?;
        session::expect_io(
            &detector,
            DETECTOR_FILE,
            &[("input", &[1, 224, 224, 3])],
            &[("Identity", &[1, 2254, 12]), ("Identity_1", &[1, 2254, 1])],
        )?;
        session::expect_io(
            &landmarker,
            LANDMARK_FILE,
            &[("input", &[1, 256, 256, 3])],
            &[
                ("Identity", &[1, 195]),
                ("Identity_1", &[1, 1]),
                ("Identity_3", &[1, 64, 64, 39]),
            ],
        )?;
        let anchors = detect::generate_anchors(&AnchorOptions::blazepose());
        debug_assert_eq!(anchors.len(), NUM_ANCHORS);
        tracing::info!(
            models_dir = %cfg.models_dir.display(),
            device = %device,
            requested_device = %cfg.device,
            mode = %cfg.mode,
            threads = cfg.threads.max(1),
            runtime = %library.display(),
            "pose models loaded"
        );
        Ok(Self {
            detector,
            landmarker,
            anchors,
            cfg: cfg.clone(),
            device,
            tracks: Tracks::default(),
            rgb: Vec::new(),
            input: Vec::new(),
        })
    }

    /// The configuration this estimator was loaded with.
    pub fn config(&self) -> &PoseConfig {
        &self.cfg
    }

    /// The device the models run on (never [`Device::Auto`]).
    pub fn device(&self) -> Device {
        self.device
    }

    /// Finds the most confident person in `img` and returns their 33
    /// landmarks in pixels of `img`, or `None` when there is no person (no
    /// detection above `min_detection_score`, or the landmark model's
    /// presence flag below `min_presence`). Always a static image: the
    /// result depends on `img` alone.
    pub fn estimate(&mut self, img: &RgbImage) -> Result<Option<Pose>, PoseError> {
        Ok(self.estimate_timed(None, img)?.0)
    }

    /// As [`Self::estimate`] for the next frame of `stream` (a camera): in
    /// [`Mode::Tracking`] the person's region in the stream's previous frame
    /// is reused and the detector skipped while the person stays in it; in
    /// [`Mode::Static`] the same as `estimate`.
    pub fn estimate_stream(
        &mut self,
        stream: &str,
        img: &RgbImage,
    ) -> Result<Option<Pose>, PoseError> {
        Ok(self.estimate_timed(Some(stream), img)?.0)
    }

    /// [`Self::estimate_stream`] (or [`Self::estimate`] without a stream),
    /// also saying how long the detector and landmark stages took.
    pub fn estimate_timed(
        &mut self,
        stream: Option<&str>,
        img: &RgbImage,
    ) -> Result<(Option<Pose>, PoseTimings), PoseError> {
        if img.width() == 0 || img.height() == 0 {
            return Err(PoseError::EmptyImage);
        }
        let mut t = PoseTimings::default();
        let stream = stream.filter(|_| self.cfg.mode == Mode::Tracking);
        if let Some(s) = stream
            && let Some(track) = self.tracks.get(s)
        {
            match self.timed_landmarks(img, &track.roi, &mut t)? {
                Some(found) if tracking::follows(&track.anchor, &found.next_roi) => {
                    return Ok((Some(pose(found.landmarks, track.score)), t));
                }
                _ => self.tracks.forget(s),
            }
        }
        let started = Instant::now();
        let best = self.detect(img)?;
        t.detect = started.elapsed();
        t.detector_ran = true;
        let Some(best) = best else {
            return Ok((None, t));
        };
        let roi = landmarks::roi_from_keypoints(best.keypoints[0], best.keypoints[1]);
        let Some(found) = self.timed_landmarks(img, &roi, &mut t)? else {
            tracing::debug!(
                detection_score = best.score,
                "detector fired but the landmark model sees no person"
            );
            return Ok((None, t));
        };
        if let Some(s) = stream {
            self.tracks.set(
                s,
                Track {
                    roi,
                    anchor: found.next_roi,
                    score: best.score,
                },
            );
        }
        Ok((Some(pose(found.landmarks, best.score)), t))
    }

    /// Stage 1: the detector on the letterboxed frame; the best person, in
    /// image pixels.
    fn detect(&mut self, img: &RgbImage) -> Result<Option<Detection>, PoseError> {
        let (letterbox, _) =
            RotatedRect::full_image(img.width(), img.height()).letterbox(DET_SIZE, DET_SIZE);
        warp::warp_bilinear(
            img,
            &letterbox.tensor_to_image(DET_SIZE, DET_SIZE),
            DET_SIZE,
            DET_SIZE,
            Border::Zero,
            &mut self.rgb,
        );
        warp::to_tensor(&self.rgb, 2.0 / 255.0, -1.0, &mut self.input);
        let t = TensorRef::from_array_view(([1usize, 224, 224, 3], self.input.as_slice()))
            .map_err(runtime_err("wrap the detector input"))?;
        let out = self
            .detector
            .run(ort::inputs!["input" => t])
            .map_err(runtime_err("run the detector"))?;
        let boxes = extract(
            &out,
            "Identity",
            NUM_ANCHORS * detect::NUM_COORDS,
            DETECTOR_FILE,
        )?;
        let scores = extract(&out, "Identity_1", NUM_ANCHORS, DETECTOR_FILE)?;
        let dets = detect::decode(
            boxes,
            scores,
            &self.anchors,
            DET_SIZE as f32,
            self.cfg.min_detection_score,
        );
        Ok(detect::weighted_nms(dets, NMS_IOU)
            .into_iter()
            .next()
            .map(|best| landmarks::detection_to_image(&best, &letterbox)))
    }

    /// [`Self::landmarks_on`], timed into `t`.
    fn timed_landmarks(
        &mut self,
        img: &RgbImage,
        roi: &RotatedRect,
        t: &mut PoseTimings,
    ) -> Result<Option<RoiLandmarks>, PoseError> {
        let started = Instant::now();
        let found = self.landmarks_on(img, roi);
        t.landmarks += started.elapsed();
        t.landmark_runs += 1;
        found
    }

    /// Stage 2: the landmark model on the rotated ROI; `None` when its
    /// presence flag says there is no person in it.
    fn landmarks_on(
        &mut self,
        img: &RgbImage,
        roi: &RotatedRect,
    ) -> Result<Option<RoiLandmarks>, PoseError> {
        warp::warp_bilinear(
            img,
            &roi.tensor_to_image(LM_SIZE, LM_SIZE),
            LM_SIZE,
            LM_SIZE,
            Border::Replicate,
            &mut self.rgb,
        );
        warp::to_tensor(&self.rgb, 1.0 / 255.0, 0.0, &mut self.input);
        let t = TensorRef::from_array_view(([1usize, 256, 256, 3], self.input.as_slice()))
            .map_err(runtime_err("wrap the landmark input"))?;
        let out = self
            .landmarker
            .run(ort::inputs!["input" => t])
            .map_err(runtime_err("run the landmark model"))?;
        let flag = extract(&out, "Identity_1", 1, LANDMARK_FILE)?[0];
        if flag < self.cfg.min_presence {
            return Ok(None);
        }
        let raw = extract(
            &out,
            "Identity",
            MODEL_LANDMARKS * VALUES_PER_LANDMARK,
            LANDMARK_FILE,
        )?;
        let heatmap = extract(
            &out,
            "Identity_3",
            HEATMAP.0 * HEATMAP.1 * MODEL_LANDMARKS,
            LANDMARK_FILE,
        )?;
        let mut lms = landmarks::decode_landmarks(raw, LM_SIZE as f32);
        landmarks::refine_with_heatmap(
            &mut lms,
            heatmap,
            HEATMAP.0,
            HEATMAP.1,
            MODEL_LANDMARKS,
            REFINE_KERNEL,
        );
        let (hip, full_body) = (
            landmarks::project(&lms[AUX_HIP], roi),
            landmarks::project(&lms[AUX_FULL_BODY], roi),
        );
        Ok(Some(RoiLandmarks {
            landmarks: lms
                .iter()
                .take(landmark::COUNT)
                .map(|l| landmarks::project(l, roi))
                .collect(),
            next_roi: landmarks::roi_from_keypoints([hip.x, hip.y], [full_body.x, full_body.y]),
        }))
    }
}

fn pose(landmarks: Vec<Landmark>, score: f32) -> Pose {
    Pose { landmarks, score }
}
