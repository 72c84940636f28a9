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
}

impl<M: PoseModel + ?Sized> PoseModel for Box<M> {
    fn estimate(&mut self, image: &RgbImage) -> Result<Option<Pose>, ModelError> {
        (**self).estimate(image)
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}
