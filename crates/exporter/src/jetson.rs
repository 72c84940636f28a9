//! Jetson boards: the integrated GPU's load is a per-mille value (0–1000)
//! in a `load` file of the GPU device under `/sys/devices`, whose name
//! depends on the board and the L4T release:
//!
//! | board | device |
//! |---|---|
//! | Nano, TX1 | `gpu.0` (also `57000000.gpu`) |
//! | TX2 | `17000000.gp10b` |
//! | Xavier | `17000000.gv11b` |
//! | Orin, L4T 35 | `17000000.ga10b` |
//! | Orin, L4T 36 | `platform/bus@0/17000000.gpu` (`platform/17000000.gpu`) |
//!
//! [`discover`] finds it the way jetson-stats does (the devfreq device whose
//! device-tree node is named `gpu`, `gv11b`, `gp10b` or `ga10b`), then tries
//! the known paths, then scans `/sys/devices` for a GPU-named device with a
//! `load` file. Everything is relative to a sysfs root, so tests use a fake
//! tree and a DaemonSet can mount the host's `/sys` elsewhere.

use std::path::{Path, PathBuf};

/// Device-tree node names of Jetson integrated GPUs (jetson-stats' list,
/// plus the TK1/TX1 generations).
pub const GPU_OF_NODE_NAMES: &[&str] = &["gpu", "gv11b", "gp10b", "ga10b", "gk20a", "gm20b"];

/// Known `load` files, relative to the sysfs root, most common first.
pub const KNOWN_LOAD_PATHS: &[&str] = &[
    "devices/gpu.0/load",
    "devices/17000000.ga10b/load",
    "devices/17000000.gv11b/load",
    "devices/17000000.gp10b/load",
    "devices/platform/bus@0/17000000.gpu/load",
    "devices/platform/17000000.gpu/load",
    "devices/platform/17000000.ga10b/load",
    "devices/57000000.gpu/load",
];

/// How deep [`discover`]'s last resort looks under `<root>/devices`.
const SCAN_DEPTH: usize = 4;

/// How the load file was found (for logs and the info metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Through `class/devfreq/*/device/of_node/name`.
    Devfreq,
    /// One of [`KNOWN_LOAD_PATHS`].
    KnownPath,
    /// By scanning `devices/` for a GPU-named device.
    Scan,
}

/// The GPU's `load` file under `sysfs_root` (normally `/sys`), if any.
pub fn discover(sysfs_root: &Path) -> Option<(PathBuf, Found)> {
    if let Some(p) = via_devfreq(sysfs_root) {
        return Some((p, Found::Devfreq));
    }
    if let Some(p) = KNOWN_LOAD_PATHS
        .iter()
        .map(|rel| sysfs_root.join(rel))
        .find(|p| p.is_file())
    {
        return Some((p, Found::KnownPath));
    }
    let mut found = Vec::new();
    scan(&sysfs_root.join("devices"), SCAN_DEPTH, &mut found);
    found.sort();
    found.into_iter().next().map(|p| (p, Found::Scan))
}

fn via_devfreq(root: &Path) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join("class/devfreq"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries.into_iter().find_map(|entry| {
        let name = std::fs::read_to_string(entry.join("device/of_node/name")).ok()?;
        // Device-tree strings end in NUL.
        let name = name.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        if !GPU_OF_NODE_NAMES.contains(&name) {
            return None;
        }
        let load = entry.join("device/load");
        load.is_file().then_some(load)
    })
}

/// Whether a device directory name looks like a Jetson GPU.
fn gpu_named(name: &str) -> bool {
    name.strip_prefix("gpu.")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        || GPU_OF_NODE_NAMES
            .iter()
            .any(|g| name.strip_suffix(g).is_some_and(|p| p.ends_with('.')))
}

fn scan(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // No symlinks: sysfs is full of cycles through them.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        let path = entry.path();
        if gpu_named(&entry.file_name().to_string_lossy()) && path.join("load").is_file() {
            found.push(path.join("load"));
        } else if depth > 1 {
            scan(&path, depth - 1, found);
        }
    }
}

/// Why a load file gave no value.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It could not be read.
    #[error("reading {path}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It does not hold a per-mille number.
    #[error("{path} holds {content:?}, not a load in per mille (0-1000)")]
    Malformed {
        /// Which file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
}

/// The GPU load in percent (0–100) from a per-mille `load` file.
pub fn read_load_percent(path: &Path) -> Result<f64, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let trimmed = text.trim();
    match trimmed.parse::<u32>() {
        Ok(per_mille) if per_mille <= 1000 => Ok(f64::from(per_mille) / 10.0),
        _ => Err(LoadError::Malformed {
            path: path.to_path_buf(),
            content: trimmed.chars().take(32).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_names() {
        for yes in [
            "gpu.0",
            "17000000.gv11b",
            "17000000.ga10b",
            "17000000.gpu",
            "57000000.gpu",
        ] {
            assert!(gpu_named(yes), "{yes}");
        }
        for no in ["gpu.", "gpu.x", "ga10b", "17000000.host1x", "gpu-clock"] {
            assert!(!gpu_named(no), "{no}");
        }
    }
}
