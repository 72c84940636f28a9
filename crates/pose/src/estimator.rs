//! [`PoseEstimator`]: the two ONNX Runtime sessions and the buffers they
//! reuse, gluing the pure stages of [`crate::detect`], [`crate::landmarks`]
//! and [`crate::warp`] into image → pose.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use image::RgbImage;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use posture_core::posture::{Pose, landmark};

use crate::detect::{self, Anchor, AnchorOptions};
use crate::geometry::RotatedRect;
use crate::landmarks::{self, MODEL_LANDMARKS, REFINE_KERNEL, VALUES_PER_LANDMARK};
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

/// Runs BlazePose (detector → rotated ROI → full landmark model) on RGB
/// images, in-process, on a fixed number of CPU threads. Load once, reuse:
/// loading parses ~24 MB of weights; `estimate` allocates nothing after the
/// first call.
pub struct PoseEstimator {
    detector: Session,
    landmarker: Session,
    anchors: Vec<Anchor>,
    cfg: PoseConfig,
    rgb: Vec<u8>,
    input: Vec<f32>,
    timings: PoseTimings,
}

/// Where the last [`PoseEstimator::estimate`] spent its time (for
/// `posture-farm bench pipeline`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoseTimings {
    /// Letterbox, detector, anchor decoding and NMS.
    pub detect: Duration,
    /// ROI crop, landmark model and refinement (zero when nobody was found).
    pub landmarks: Duration,
}

impl std::fmt::Debug for PoseEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoseEstimator")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn runtime_err<R>(what: &'static str) -> impl FnOnce(ort::Error<R>) -> PoseError {
    move |e| PoseError::Runtime {
        what,
        source: ort::Error::new_with_code(e.code(), e.message()),
    }
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
    /// Loads ONNX Runtime (the `libonnxruntime.so` in the models directory,
    /// or `ORT_DYLIB_PATH` when set) and both models, and checks their
    /// input/output shapes.
    pub fn load(cfg: &PoseConfig) -> Result<Self, PoseError> {
        check_models_dir(&cfg.models_dir)?;
        let lib = match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => cfg.models_dir.join(RUNTIME_FILE),
        };
        let env = environment(&lib)?;
        let threads = cfg.threads.max(1);
        let open = |file: &str| -> Result<Session, PoseError> {
            let path = cfg.models_dir.join(file);
            Session::builder(&env)
                .map_err(runtime_err("create a session builder"))?
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(runtime_err("set the optimization level"))?
                .with_intra_threads(threads)
                .map_err(runtime_err("set intra-op threads"))?
                .with_inter_threads(1)
                .map_err(runtime_err("set inter-op threads"))?
                .commit_from_file(&path)
                .map_err(|e| PoseError::ModelLoad {
                    path: path.clone(),
                    source: ort::Error::new_with_code(e.code(), e.message()),
                })
        };
        let detector = open(DETECTOR_FILE)?;
        let landmarker = open(LANDMARK_FILE)?;
        expect_io(
            &detector,
            DETECTOR_FILE,
            &[("input", &[1, 224, 224, 3])],
            &[("Identity", &[1, 2254, 12]), ("Identity_1", &[1, 2254, 1])],
        )?;
        expect_io(
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
        tracing::info!(models_dir = %cfg.models_dir.display(), threads, runtime = %lib.display(), "pose models loaded");
        Ok(Self {
            detector,
            landmarker,
            anchors,
            cfg: cfg.clone(),
            rgb: Vec::new(),
            input: Vec::new(),
            timings: PoseTimings::default(),
        })
    }

    /// Stage timings of the last [`PoseEstimator::estimate`].
    pub fn last_timings(&self) -> PoseTimings {
        self.timings
    }

    /// The configuration this estimator was loaded with.
    pub fn config(&self) -> &PoseConfig {
        &self.cfg
    }

    /// Finds the most confident person in `img` and returns their 33
    /// landmarks in pixels of `img`, or `None` when there is no person (no
    /// detection above `min_detection_score`, or the landmark model's
    /// presence flag below `min_presence`).
    pub fn estimate(&mut self, img: &RgbImage) -> Result<Option<Pose>, PoseError> {
        if img.width() == 0 || img.height() == 0 {
            return Err(PoseError::EmptyImage);
        }
        let started = Instant::now();
        self.timings = PoseTimings::default();
        // Stage 1: detector on the letterboxed frame.
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
        let best = {
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
            detect::weighted_nms(dets, NMS_IOU).into_iter().next()
        };
        self.timings.detect = started.elapsed();
        let Some(best) = best else {
            return Ok(None);
        };
        let started = Instant::now();
        let det = landmarks::detection_to_image(&best, &letterbox);

        // Stage 2: landmark model on the rotated ROI.
        let roi = landmarks::roi_from_keypoints(det.keypoints[0], det.keypoints[1]);
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
        let raw = extract(
            &out,
            "Identity",
            MODEL_LANDMARKS * VALUES_PER_LANDMARK,
            LANDMARK_FILE,
        )?;
        let flag = extract(&out, "Identity_1", 1, LANDMARK_FILE)?[0];
        let heatmap = extract(
            &out,
            "Identity_3",
            HEATMAP.0 * HEATMAP.1 * MODEL_LANDMARKS,
            LANDMARK_FILE,
        )?;
        if flag < self.cfg.min_presence {
            self.timings.landmarks = started.elapsed();
            tracing::debug!(
                flag,
                detection_score = best.score,
                "detector fired but the landmark model sees no person"
            );
            return Ok(None);
        }
        let mut lms = landmarks::decode_landmarks(raw, LM_SIZE as f32);
        landmarks::refine_with_heatmap(
            &mut lms,
            heatmap,
            HEATMAP.0,
            HEATMAP.1,
            MODEL_LANDMARKS,
            REFINE_KERNEL,
        );
        let landmarks = lms
            .iter()
            .take(landmark::COUNT)
            .map(|l| landmarks::project(l, &roi))
            .collect();
        self.timings.landmarks = started.elapsed();
        Ok(Some(Pose {
            landmarks,
            score: best.score,
        }))
    }
}

/// ONNX Runtime allows one environment per process, created once and never
/// again (even after it is dropped), so it is kept here for the life of the
/// process and shared by every estimator. The library is loaded by the first
/// call; later calls reuse it whatever path they name.
fn environment(lib: &Path) -> Result<ort::environment::Environment, PoseError> {
    static ENV: Mutex<Option<ort::environment::Environment>> = Mutex::new(None);
    // A panic while holding this lock cannot leave the Option half-written.
    let mut guard = ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = guard.as_ref() {
        return Ok(env.clone());
    }
    let env = ort::init_from(lib)
        .map_err(|source| PoseError::RuntimeLibrary {
            path: lib.to_path_buf(),
            source,
        })?
        .with_name("posture-pose")
        .with_telemetry(false)
        .build()
        .map_err(runtime_err("create the ONNX Runtime environment"))?;
    // ONNX Runtime logs every graph rewrite at INFO; only its warnings and
    // errors are worth an operator's attention.
    env.set_log_level(ort::logging::LogLevel::Warning);
    *guard = Some(env.clone());
    Ok(env)
}

/// The f32 data of output `name`, checked to have `len` elements.
fn extract<'a>(
    out: &'a ort::session::SessionOutputs<'_>,
    name: &'static str,
    len: usize,
    model: &'static str,
) -> Result<&'a [f32], PoseError> {
    let value = out.get(name).ok_or(PoseError::BadTensorShape {
        model,
        tensor: name,
        expected: format!("{len} values"),
        actual: "missing".into(),
    })?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|source| PoseError::Runtime {
            what: "read an output tensor",
            source,
        })?;
    if data.len() != len {
        return Err(PoseError::BadTensorShape {
            model,
            tensor: name,
            expected: format!("{len} values"),
            actual: format!("{shape:?}"),
        });
    }
    Ok(data)
}

/// Checks a session's input and output names and static shapes, so a wrong
/// or stale model file fails at load with a clear message, not at run time.
fn expect_io(
    s: &Session,
    model: &'static str,
    inputs: &[(&'static str, &[i64])],
    outputs: &[(&'static str, &[i64])],
) -> Result<(), PoseError> {
    let check = |outlets: &[ort::value::Outlet],
                 wanted: &[(&'static str, &[i64])]|
     -> Result<(), PoseError> {
        for (name, shape) in wanted {
            let Some(o) = outlets.iter().find(|o| o.name() == *name) else {
                return Err(PoseError::BadTensorShape {
                    model,
                    tensor: name,
                    expected: format!("{shape:?}"),
                    actual: "missing".into(),
                });
            };
            let actual: Option<Vec<i64>> = o
                .dtype()
                .tensor_shape()
                .map(|s| s.iter().copied().collect());
            if actual.as_deref() != Some(*shape) {
                return Err(PoseError::BadTensorShape {
                    model,
                    tensor: name,
                    expected: format!("{shape:?}"),
                    actual: format!("{actual:?}"),
                });
            }
        }
        Ok(())
    };
    check(s.inputs(), inputs)?;
    check(s.outputs(), outputs)
}
