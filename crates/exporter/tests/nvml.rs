//! NVML loaded at run time: against a stand-in library with NVML's C ABI
//! (`fake_nvml.c`, built here with the system C compiler, as the linker
//! Rust uses is), since this machine has no NVIDIA driver. Checks the
//! loading, every entry point, the mean over devices, NVML's error strings,
//! and that a missing library is a clear "no NVML", not a crash.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::path::{Path, PathBuf};
use std::process::Command;

use posture_exporter::nvml::{Nvml, NvmlError};
use posture_exporter::{DetectOptions, Exporter, GpuSource};

/// Builds the stand-in as `<dir>/libnvidia-ml.so.1` reading `state`.
fn build_fake(dir: &Path, state: &Path) -> Option<PathBuf> {
    let out = dir.join("libnvidia-ml.so.1");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_nvml.c");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(format!("-DSTATE_FILE=\"{}\"", state.display()))
        .arg(&src)
        .status();
    match status {
        Ok(s) if s.success() => Some(out),
        other => {
            assert!(
                std::env::var_os("CI").is_none(),
                "cc is required under CI: {other:?}"
            );
            eprintln!("SKIPPED: no C compiler ({other:?})");
            None
        }
    }
}

#[test]
fn nvml_is_loaded_at_run_time_and_averages_the_devices() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("gpus");
    let Some(lib) = build_fake(dir.path(), &state) else {
        return;
    };
    let lib = lib.display().to_string();

    std::fs::write(&state, "30\n50\n").unwrap();
    let nvml = Nvml::open(&lib).unwrap();
    assert_eq!(nvml.device_count(), 2);
    assert_eq!(nvml.utilization_percent().unwrap(), 40.0);
    std::fs::write(&state, "100\n0\n").unwrap();
    assert_eq!(nvml.utilization_percent().unwrap(), 50.0);
    // A device whose query fails: an error with NVML's own message, no value.
    std::fs::write(&state, "10\nx\n").unwrap();
    let err = nvml.utilization_percent().unwrap_err().to_string();
    assert!(
        err.contains("nvmlDeviceGetUtilizationRates") && err.contains("Unknown Error"),
        "{err}"
    );
    drop(nvml);

    // Through detection: no Jetson file, so NVML; served with source "nvml".
    std::fs::write(&state, "64\n").unwrap();
    let source = GpuSource::detect(&DetectOptions {
        sysfs_root: dir.path().join("no-sys"),
        gpu_load_path: None,
        nvml_library: Some(lib.clone()),
    });
    assert_eq!(source.kind(), "nvml");
    assert_eq!(source.read().unwrap(), 64.0);
    let exporter = Exporter::new(source, "desk", "jetson_gpu_usage_percent").unwrap();
    let text = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(exporter.scrape())
        .unwrap();
    assert!(
        text.contains("jetson_gpu_usage_percent{node=\"desk\"} 64.0"),
        "{text}"
    );
    assert!(text.contains("source=\"nvml\""), "{text}");
    drop(exporter);

    // The driver is not loaded: init fails with NVML's message.
    std::fs::write(&state, "driver-not-loaded\n").unwrap();
    match Nvml::open(&lib) {
        Err(NvmlError::Call { call, message, .. }) => {
            assert_eq!(
                (call, message.as_str()),
                ("nvmlInit_v2", "Driver Not Loaded")
            );
        }
        other => panic!("{other:?}"),
    }
    // No device at all.
    std::fs::write(&state, "").unwrap();
    assert!(matches!(Nvml::open(&lib), Err(NvmlError::NoDevice)));
}

#[test]
fn no_nvml_library_is_a_clear_error() {
    let err = Nvml::open("/nonexistent/libnvidia-ml.so.1").unwrap_err();
    assert!(matches!(err, NvmlError::Load { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/libnvidia-ml.so.1"));
}
