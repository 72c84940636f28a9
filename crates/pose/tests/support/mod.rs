//! Shared by the integration tests that need the real models.

#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};

use posture_pose::image::{self, RgbImage, imageops};

/// The sample photos, in the order the tests report them.
pub const PHOTOS: [&str; 4] = [
    "astronaut.png",
    "camera.png",
    "coffee.png",
    "grace_hopper.jpg",
];

/// The models directory made by `scripts/setup-models.sh` (with its
/// samples), from `POSTURE_MODELS_DIR`, else `<workspace>/models`. Without
/// it: a failure when `CI` is set, else a skip notice and `None`.
pub fn models_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("POSTURE_MODELS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"),
    };
    match posture_pose::check_models_dir(&dir) {
        Ok(()) if dir.join("samples").is_dir() => Some(dir),
        r => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but the pose models are missing ({r:?}); run scripts/setup-models.sh first"
            );
            eprintln!(
                "SKIP: pose models not found in {} ({r:?}); run scripts/setup-models.sh",
                dir.display()
            );
            None
        }
    }
}

/// A sample photo.
pub fn load(dir: &Path, name: &str) -> RgbImage {
    image::open(dir.join("samples").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .to_rgb8()
}

/// Every sample photo, and each turned 90° and 270° (the rotated-ROI path).
pub fn photos_and_turns(dir: &Path) -> Vec<(String, RgbImage)> {
    let mut out = Vec::new();
    for name in PHOTOS {
        let img = load(dir, name);
        out.push((format!("{name}@rot90"), imageops::rotate90(&img)));
        out.push((format!("{name}@rot270"), imageops::rotate270(&img)));
        out.push((name.to_string(), img));
    }
    out
}
