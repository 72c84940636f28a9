//! `--device` on a machine without a usable GPU (CI, this build machine):
//! `auto` falls back to the CPU with one log line and gives the CPU's
//! results; an explicit `cuda`/`tensorrt` is a clear error naming the fix.
//!
//! Runs against a models directory holding only the CPU build of ONNX
//! Runtime (links to the real files), so it means the same on a machine
//! where `setup --gpu` ran. Skipped (with a notice) when `ORT_DYLIB_PATH`
//! names another library, and where the models are missing (fails under CI).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use posture_pose::{
    DETECTOR_FILE, Device, LANDMARK_FILE, PoseConfig, PoseError, PoseEstimator, RUNTIME_FILE,
};

fn models_dir() -> Option<PathBuf> {
    if std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty()) {
        eprintln!(
            "SKIP: ORT_DYLIB_PATH names another ONNX Runtime; these tests need the CPU build"
        );
        return None;
    }
    support::models_dir()
}

/// A models directory with the CPU runtime only (no `gpu/`), as CI has.
fn cpu_only_models(real: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    for f in [DETECTOR_FILE, LANDMARK_FILE, RUNTIME_FILE, "samples"] {
        let target = std::fs::canonicalize(real.join(f)).expect("model file");
        std::os::unix::fs::symlink(target, tmp.path().join(f)).expect("symlink");
    }
    tmp
}

fn config(dir: &Path, device: Device) -> PoseConfig {
    PoseConfig {
        models_dir: dir.to_path_buf(),
        device,
        ..PoseConfig::default()
    }
}

/// Counts the events whose message mentions the fallback, at INFO or above.
#[derive(Default)]
struct FallbackLines {
    count: AtomicUsize,
    text: Mutex<String>,
}

struct Collector(Arc<FallbackLines>);

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Collector {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() > tracing::Level::INFO {
            return;
        }
        let mut line = String::new();
        event.record(&mut Message(&mut line));
        if line.contains("no GPU execution provider") {
            self.0.count.fetch_add(1, Ordering::SeqCst);
            *self.0.text.lock().unwrap() = line;
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn auto_falls_back_to_the_cpu_with_one_log_line_and_the_same_results() {
    let Some(real) = models_dir() else { return };
    let dir = cpu_only_models(&real);
    let lines = Arc::new(FallbackLines::default());
    let mut auto = tracing::subscriber::with_default(Collector(lines.clone()), || {
        PoseEstimator::load(&config(dir.path(), Device::Auto))
    })
    .expect("auto must fall back to the CPU, not fail");
    assert_eq!(auto.device(), Device::Cpu);
    assert_eq!(
        lines.count.load(Ordering::SeqCst),
        1,
        "exactly one fallback line"
    );
    let text = lines.text.lock().unwrap().clone();
    for part in ["tensorrt", "cuda", "setup --gpu"] {
        assert!(text.contains(part), "fallback line lacks {part}: {text}");
    }

    let mut cpu = PoseEstimator::load(&config(dir.path(), Device::Cpu)).expect("cpu");
    assert_eq!(cpu.device(), Device::Cpu);
    for name in ["astronaut.png", "grace_hopper.jpg", "coffee.png"] {
        let img = support::load(dir.path(), name);
        assert_eq!(
            auto.estimate(&img).expect("auto"),
            cpu.estimate(&img).expect("cpu"),
            "{name}: auto (fallen back) and cpu differ"
        );
    }
}

#[test]
fn explicit_gpu_without_one_is_a_clear_error() {
    let Some(real) = models_dir() else { return };
    let dir = cpu_only_models(&real);
    for device in [Device::Cuda, Device::TensorRt] {
        let err = PoseEstimator::load(&config(dir.path(), device)).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, PoseError::DeviceUnavailable { device: d, .. } if d == device),
            "{device}: {err:?}"
        );
        assert!(
            msg.contains(device.as_str()) && msg.contains("posture-farm setup --gpu"),
            "{msg}"
        );
    }
}
