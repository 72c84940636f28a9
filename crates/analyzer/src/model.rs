//! The seam between the analyzer and the pose model. The service only needs
//! "image in, landmarks of one person (or nobody) out"; keeping that behind a
//! trait lets tests use a deterministic double and the binary plug in the
//! BlazePose estimator from `posture-pose`.

use image::RgbImage;
use posture_core::posture::Pose;

/// An error from a pose model, kept opaque: the analyzer only reports it.
pub type ModelError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A human-pose model run in-process.
pub trait PoseModel: Send + 'static {
    /// Landmarks (in pixels of `image`) of the most prominent person, or
    /// `None` when nobody is found (not an error).
    fn estimate(&mut self, image: &RgbImage) -> Result<Option<Pose>, ModelError>;

    /// Short name for logs and the startup line.
    fn name(&self) -> &str;

    /// How the last [`PoseModel::estimate`] split its time between the
    /// detector and the landmark model, when the model measures it.
    fn last_timings(&self) -> Option<posture_pose::PoseTimings> {
        None
    }
}

impl<M: PoseModel + ?Sized> PoseModel for Box<M> {
    fn estimate(&mut self, image: &RgbImage) -> Result<Option<Pose>, ModelError> {
        (**self).estimate(image)
    }

    fn name(&self) -> &str {
        (**self).name()
    }

    fn last_timings(&self) -> Option<posture_pose::PoseTimings> {
        (**self).last_timings()
    }
}

/// The real model: MediaPipe BlazePose run by `posture-pose`.
impl PoseModel for posture_pose::PoseEstimator {
    fn estimate(&mut self, image: &RgbImage) -> Result<Option<Pose>, ModelError> {
        posture_pose::PoseEstimator::estimate(self, image).map_err(|e| Box::new(e) as ModelError)
    }

    fn name(&self) -> &str {
        "blazepose-full"
    }

    fn last_timings(&self) -> Option<posture_pose::PoseTimings> {
        Some(posture_pose::PoseEstimator::last_timings(self))
    }
}

/// Loads BlazePose from `models_dir` with `threads` inference threads.
pub fn load_blazepose(
    models_dir: &std::path::Path,
    threads: usize,
) -> Result<posture_pose::PoseEstimator, posture_pose::PoseError> {
    posture_pose::PoseEstimator::load(&posture_pose::PoseConfig {
        models_dir: models_dir.to_path_buf(),
        threads,
        ..posture_pose::PoseConfig::default()
    })
}
