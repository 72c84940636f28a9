//! `scripts/setup-models.sh --check`: the manifest check that makes setup
//! idempotent and catches missing, truncated or altered files. Runs the real
//! script with bash; downloads nothing (`--check` never does).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the setup script with `args` and `--models-dir models_dir`. With
/// no usable Python, so it can never download anything.
fn run_script(args: &[&str], models_dir: &Path) -> (Option<i32>, String) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/setup-models.sh"))
        .args(args)
        .arg("--models-dir")
        .arg(models_dir)
        .env("PYTHON", "/nonexistent/python")
        .output()
        .expect("run bash");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(models_dir: &Path) -> (bool, String) {
    let (code, err) = run_script(&["--check"], models_dir);
    (code == Some(0), err)
}

/// The models directory made by the setup script, if present (see tests/mediapipe.rs).
fn models_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("POSTURE_MODELS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => repo().join("models"),
    };
    let (ok, err) = check(&dir);
    if ok {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {} is not set up: {err}",
        dir.display()
    );
    eprintln!(
        "SKIP: {} is not set up; run scripts/setup-models.sh",
        dir.display()
    );
    None
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn empty_directory_fails_the_check_and_names_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, err) = check(tmp.path());
    assert!(!ok);
    for f in [
        "pose_detection.onnx",
        "pose_landmark_full.onnx",
        "libonnxruntime.so",
        "samples/astronaut.png",
    ] {
        assert!(
            err.contains(&format!("missing: {}/{f}", tmp.path().display())),
            "{f} not reported:\n{err}"
        );
    }
}

#[test]
fn complete_directory_passes_and_setup_does_nothing() {
    let Some(dir) = models_dir() else { return };
    let (ok, err) = check(&dir);
    assert!(ok, "{err}");
    // Without --check, a valid directory is left alone (no download, no venv).
    let (code, err) = run_script(&[], &dir);
    assert!(code == Some(0) && err.contains("nothing to do"), "{err}");
}

#[test]
fn truncated_or_altered_files_are_caught() {
    let Some(dir) = models_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&dir, tmp.path());
    assert!(check(tmp.path()).0, "the copy should pass");

    let sample = tmp.path().join("samples/coffee.png");
    let mut bytes = std::fs::read(&sample).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&sample, &bytes).unwrap();
    let (ok, err) = check(tmp.path());
    assert!(
        !ok && err.contains("wrong sha256") && err.contains("samples/coffee.png"),
        "{err}"
    );

    bytes.truncate(1000);
    std::fs::write(&sample, &bytes).unwrap();
    let (ok, err) = check(tmp.path());
    assert!(
        !ok && err.contains("wrong size") && err.contains("samples/coffee.png"),
        "{err}"
    );
}

#[test]
fn gpu_check_names_the_gpu_runtime_and_cuda_libraries() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, err) = run_script(&["--check", "--gpu", "--arch", "x86_64"], tmp.path());
    assert_eq!(code, Some(1), "{err}");
    for f in [
        "pose_detection.onnx",
        "gpu/libonnxruntime.so",
        "gpu/libonnxruntime_providers_cuda.so",
        "gpu/libcudart.so.12",
        "gpu/libcudnn.so.9",
    ] {
        assert!(
            err.contains(&format!("missing: {}/{f}", tmp.path().display())),
            "{f} not reported:\n{err}"
        );
    }
}

#[test]
fn gpu_on_a_jetson_points_at_jetpack() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, err) = run_script(&["--gpu", "--arch", "aarch64"], tmp.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("ORT_DYLIB_PATH") && err.contains("JetPack"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
