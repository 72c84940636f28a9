//! CPU and GPU give the same answers: on every sample photo (and the photos
//! turned sideways), identical labels and both angles within 0.5° between
//! the CPU provider and each GPU provider that can run here.
//!
//! Where no GPU can run (no NVIDIA GPU, or no GPU build of ONNX Runtime: run
//! `posture-farm setup --gpu`, or set `ORT_DYLIB_PATH`), each device is
//! skipped with a notice saying why. `POSE_REQUIRE_GPU=1` turns a skip into a
//! failure, for runs on GPU machines. The same comparison, with timings:
//! `posture-farm bench pose --device cuda`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

mod support;

use posture_core::posture::Thresholds;
use posture_pose::agreement::{Agreement, MAX_ANGLE_DIFF_DEG};
use posture_pose::{Device, PoseConfig, PoseError, PoseEstimator};

#[test]
fn every_usable_gpu_provider_matches_the_cpu() {
    let Some(dir) = support::models_dir() else {
        return;
    };
    let require = std::env::var_os("POSE_REQUIRE_GPU").is_some_and(|v| v == "1");
    let cfg = |device| PoseConfig {
        models_dir: dir.clone(),
        device,
        ..PoseConfig::default()
    };
    let images = support::photos_and_turns(&dir);
    // The GPU build is loaded first (one ONNX Runtime per process); its CPU
    // provider is the reference.
    let mut ran = 0;
    for device in [Device::Cuda, Device::TensorRt] {
        let mut gpu = match PoseEstimator::load(&cfg(device)) {
            Ok(e) => e,
            Err(PoseError::DeviceUnavailable { reason, .. }) => {
                assert!(
                    !require,
                    "POSE_REQUIRE_GPU=1 but {device} cannot run: {reason}"
                );
                eprintln!("SKIP {device}: no usable GPU here: {reason}");
                continue;
            }
            Err(e) => panic!("{device}: {e}"),
        };
        let mut cpu = PoseEstimator::load(&cfg(Device::Cpu)).expect("cpu");
        let mut agreement = Agreement::default();
        for (name, img) in &images {
            let reference = cpu.estimate(img).expect("cpu estimate");
            let other = gpu.estimate(img).expect("gpu estimate");
            agreement.add(
                name,
                reference.as_ref(),
                other.as_ref(),
                &Thresholds::default(),
            );
        }
        eprintln!("{device} vs cpu: {}", agreement.summary());
        agreement
            .check(MAX_ANGLE_DIFF_DEG, 5)
            .unwrap_or_else(|e| panic!("{device}: {e}"));
        ran += 1;
    }
    if ran == 0 {
        eprintln!("SKIP: no GPU execution provider could run; nothing compared");
    }
}
