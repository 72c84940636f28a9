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

    /// As [`PoseModel::estimate`] for the next frame of `stream` (a
    /// camera): a model that tracks people across frames may use the
    /// stream's previous frames. Default: `estimate`.
    fn estimate_stream(
        &mut self,
        stream: &str,
        image: &RgbImage,
    ) -> Result<Option<Pose>, ModelError> {
        let _ = stream;
        self.estimate(image)
    }

    /// Short name for logs and the startup line.
    fn name(&self) -> &str;

    /// [`PoseModel::estimate_stream`], also saying how its time split
    /// between the detector and the landmark model when the model measures
    /// it (`posture-farm bench pipeline`). Default: no split.
    fn estimate_stream_timed(
        &mut self,
        stream: &str,
        image: &RgbImage,
    ) -> Result<(Option<Pose>, Option<posture_pose::PoseTimings>), ModelError> {
        Ok((self.estimate_stream(stream, image)?, None))
    }

    /// Where it runs (`cpu`, `cuda`, `tensorrt`), for logs and the
    /// `pose_device_info` metric.
    fn device(&self) -> &str {
        "cpu"
    }
}

impl<M: PoseModel + ?Sized> PoseModel for Box<M> {
    fn estimate(&mut self, image: &RgbImage) -> Result<Option<Pose>, ModelError> {
        (**self).estimate(image)
    }

    fn estimate_stream(
        &mut self,
        stream: &str,
        image: &RgbImage,
    ) -> Result<Option<Pose>, ModelError> {
        (**self).estimate_stream(stream, image)
    }

    fn name(&self) -> &str {
        (**self).name()
    }

    fn estimate_stream_timed(
        &mut self,
        stream: &str,
        image: &RgbImage,
    ) -> Result<(Option<Pose>, Option<posture_pose::PoseTimings>), ModelError> {
        (**self).estimate_stream_timed(stream, image)
    }

    fn device(&self) -> &str {
        (**self).device()
    }
}

/// The real model: MediaPipe BlazePose run by `posture-pose`.
impl PoseModel for posture_pose::PoseEstimator {
    fn estimate(&mut self, image: &RgbImage) -> Result<Option<Pose>, ModelError> {
        posture_pose::PoseEstimator::estimate(self, image).map_err(|e| Box::new(e) as ModelError)
    }

    fn estimate_stream(
        &mut self,
        stream: &str,
        image: &RgbImage,
    ) -> Result<Option<Pose>, ModelError> {
        posture_pose::PoseEstimator::estimate_stream(self, stream, image)
            .map_err(|e| Box::new(e) as ModelError)
    }

    fn name(&self) -> &str {
        "blazepose-full"
    }

    fn estimate_stream_timed(
        &mut self,
        stream: &str,
        image: &RgbImage,
    ) -> Result<(Option<Pose>, Option<posture_pose::PoseTimings>), ModelError> {
        posture_pose::PoseEstimator::estimate_timed(self, Some(stream), image)
            .map(|(pose, t)| (pose, Some(t)))
            .map_err(|e| Box::new(e) as ModelError)
    }

    fn device(&self) -> &str {
        posture_pose::PoseEstimator::device(self).as_str()
    }
}

/// Loads BlazePose from `models_dir` with `threads` inference threads, on
/// the CPU, static images (see [`load_blazepose_with`] for the rest).
pub fn load_blazepose(
    models_dir: &std::path::Path,
    threads: usize,
) -> Result<posture_pose::PoseEstimator, posture_pose::PoseError> {
    load_blazepose_with(&posture_pose::PoseConfig {
        models_dir: models_dir.to_path_buf(),
        threads,
        ..posture_pose::PoseConfig::default()
    })
}

/// Loads BlazePose as `cfg` says (device, tracking, thresholds).
pub fn load_blazepose_with(
    cfg: &posture_pose::PoseConfig,
) -> Result<posture_pose::PoseEstimator, posture_pose::PoseError> {
    posture_pose::PoseEstimator::load(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers which entry point was called.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
    }

    impl PoseModel for Recorder {
        fn estimate(&mut self, _: &RgbImage) -> Result<Option<Pose>, ModelError> {
            self.calls.push("estimate".into());
            Ok(None)
        }

        fn estimate_stream(
            &mut self,
            stream: &str,
            _: &RgbImage,
        ) -> Result<Option<Pose>, ModelError> {
            self.calls.push(format!("stream {stream}"));
            Ok(None)
        }

        fn name(&self) -> &str {
            "recorder"
        }

        fn device(&self) -> &str {
            "cuda"
        }
    }

    struct Plain;

    impl PoseModel for Plain {
        fn estimate(&mut self, _: &RgbImage) -> Result<Option<Pose>, ModelError> {
            Ok(Some(Pose::default()))
        }

        fn name(&self) -> &str {
            "plain"
        }
    }

    #[test]
    fn boxed_models_forward_streams_and_device() {
        let mut m = Box::new(Recorder::default());
        let img = RgbImage::new(2, 2);
        <Box<Recorder> as PoseModel>::estimate_stream(&mut m, "pi1", &img).unwrap();
        <Box<Recorder> as PoseModel>::estimate(&mut m, &img).unwrap();
        assert_eq!(m.calls, ["stream pi1", "estimate"]);
        assert_eq!(<Box<Recorder> as PoseModel>::device(&m), "cuda");
        // A model without streams or a device answers every stream statically, on the CPU.
        let mut p: Box<dyn PoseModel> = Box::new(Plain);
        assert_eq!(
            p.estimate_stream("pi1", &img).unwrap(),
            Some(Pose::default())
        );
        assert_eq!(p.device(), "cpu");
    }
}
