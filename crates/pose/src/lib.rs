//! # posture-pose — BlazePose in-process: image in, 33 landmarks out
//!
//! MediaPipe's BlazePose models (detector + full landmark model, from the
//! `mediapipe==0.10.21` wheel, converted to ONNX by `scripts/setup-models.sh`)
//! run with ONNX Runtime through `ort`, on a fixed number of CPU threads or
//! an NVIDIA GPU ([`device`]: CUDA or TensorRT, `auto` falling back to the
//! CPU). Every step around the two networks reproduces MediaPipe's CPU graph
//! (`pose_landmark_cpu`, `model_complexity=1`, static images) so the
//! landmarks match MediaPipe Python's to well under a pixel on PNG input.
//!
//! ```text
//!  RgbImage ─► letterbox 224×224 (OpenCV fixed-point bilinear, zero border, [-1,1])
//!           ─► detector.onnx ─► decode 2254 SSD anchors ─► weighted NMS (IoU 0.3) ─► best person
//!           ─► rotated square ROI (hip centre, ×1.25, hips→shoulders up)       ▲ skipped while a
//!           ─► crop 256×256 (replicated border, [0,1]) ─► landmark.onnx        │ stream's person
//!           ─► 39 landmarks + heatmap refinement (kernel 9) ─► project ─► Pose  │ stays ([`tracking`])
//! ```
//!
//! The geometry, post-processing and decisions ([`geometry`], [`warp`],
//! [`detect`], [`landmarks`], [`tracking`], [`device`], [`models`],
//! [`agreement`]) are pure functions tested without a model;
//! [`PoseEstimator`] only glues them to the two ONNX Runtime sessions and
//! times its two stages ([`PoseTimings`]).
//! The models directory comes from `posture-farm setup` (or the script) and
//! is found by one rule, [`models::resolve`];
//! nothing is downloaded at run time.

pub mod agreement;
pub mod detect;
pub mod device;
pub mod estimator;
pub mod geometry;
pub mod landmarks;
pub mod models;
mod session;
pub mod tracking;
pub mod warp;

use std::path::PathBuf;

pub use device::Device;
pub use estimator::{
    DETECTOR_FILE, LANDMARK_FILE, PoseEstimator, PoseTimings, RUNTIME_FILE, check_models_dir,
};
/// Re-exported so callers decode images with the same `image` version the
/// estimator takes.
pub use image;
pub use posture_core::posture::{Landmark, Pose};
pub use tracking::Mode;

pub use models::MODELS_DIR_ENV;

/// Where the models live unless told otherwise: `$POSTURE_MODELS_DIR`, else
/// an existing `./models`, else the per-user data directory (see [`models`]).
pub fn default_models_dir() -> PathBuf {
    models::resolve_current().path
}

/// How to load and run the estimator.
#[derive(Clone, Debug, PartialEq)]
pub struct PoseConfig {
    /// Directory holding the two .onnx models and `libonnxruntime.so`.
    pub models_dir: PathBuf,
    /// ONNX Runtime intra-op threads. 1 keeps one analyzer on one core,
    /// which is how the farm packs analyzers onto small boards.
    pub threads: usize,
    /// Minimum detector score for a person (MediaPipe's
    /// `min_detection_confidence`, default 0.5).
    pub min_detection_score: f32,
    /// Minimum landmark-model presence flag (MediaPipe's
    /// `min_tracking_confidence`, default 0.5); below it the detection was
    /// not a person after all, or a tracked person was lost.
    pub min_presence: f32,
    /// Where the models run. The library default is the CPU (results and
    /// tests independent of the machine); the commands default to `auto`.
    pub device: Device,
    /// Static images or per-stream tracking (see [`tracking`]).
    pub mode: Mode,
    /// Where the TensorRT provider caches its engines.
    pub tensorrt_cache_dir: PathBuf,
}

impl Default for PoseConfig {
    fn default() -> Self {
        Self {
            models_dir: default_models_dir(),
            threads: 1,
            min_detection_score: 0.5,
            min_presence: 0.5,
            device: Device::Cpu,
            mode: Mode::Static,
            tensorrt_cache_dir: models::tensorrt_cache_dir(&models::Env::current()),
        }
    }
}

/// Why the estimator could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum PoseError {
    /// The models directory is incomplete.
    #[error(
        "pose model files missing in {dir}: {missing:?}; run `posture-farm setup` (or scripts/setup-models.sh) \
         or point POSTURE_MODELS_DIR at a models directory"
    )]
    MissingModels {
        /// The directory looked in.
        dir: PathBuf,
        /// Files not found.
        missing: Vec<PathBuf>,
    },
    /// `libonnxruntime.so` could not be loaded.
    #[error("cannot load ONNX Runtime from {path}; run `posture-farm setup` to install it")]
    RuntimeLibrary {
        /// The library path tried.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: ort::LoadDynamicError,
    },
    /// A model file exists but ONNX Runtime rejected it.
    #[error("cannot load model {path}; re-run `posture-farm setup` to regenerate it")]
    ModelLoad {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// A model has unexpected inputs/outputs (wrong or stale file).
    #[error("model {model}: tensor {tensor} should be {expected}, is {actual}")]
    BadTensorShape {
        /// Model file name.
        model: &'static str,
        /// Tensor name.
        tensor: &'static str,
        /// What the estimator needs.
        expected: String,
        /// What the model has.
        actual: String,
    },
    /// ONNX Runtime failed at some step.
    #[error("ONNX Runtime failed to {what}")]
    Runtime {
        /// The step.
        what: &'static str,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// The requested GPU execution provider cannot run here (with `auto`,
    /// logged and the next device tried instead).
    #[error("the pose model cannot run on {device}: {reason}")]
    DeviceUnavailable {
        /// The device tried.
        device: Device,
        /// ONNX Runtime's or our explanation.
        reason: String,
    },
    /// The image has no pixels.
    #[error("image has zero width or height")]
    EmptyImage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_models_error_tells_how_to_fix_it() {
        let dir = std::env::temp_dir().join("posture-pose-no-such-dir");
        let err = PoseEstimator::load(&PoseConfig {
            models_dir: dir.clone(),
            ..PoseConfig::default()
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PoseError::MissingModels { .. }), "{err:?}");
        assert!(
            msg.contains("posture-farm setup")
                && msg.contains(DETECTOR_FILE)
                && msg.contains(RUNTIME_FILE),
            "{msg}"
        );
    }

    #[test]
    fn estimator_can_move_to_a_worker_thread() {
        // The analyzer runs the estimator on a blocking thread.
        fn is_send<T: Send + 'static>() {}
        is_send::<PoseEstimator>();
    }

    #[test]
    fn defaults_match_mediapipe() {
        let c = PoseConfig::default();
        assert_eq!(
            (c.threads, c.min_detection_score, c.min_presence),
            (1, 0.5, 0.5)
        );
        // The library runs static images on the CPU unless told otherwise.
        assert_eq!((c.device, c.mode), (Device::Cpu, Mode::Static));
    }
}
