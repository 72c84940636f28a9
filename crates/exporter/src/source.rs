//! Where this node's GPU load comes from, chosen once at start:
//! an explicit `--gpu-load-path`, else a Jetson `load` file found under the
//! sysfs root, else NVML, else nothing (said clearly, and no value served).

use std::path::{Path, PathBuf};

use crate::jetson::{self, Found, LoadError};
use crate::nvml::{Nvml, NvmlError};

/// How to look for the GPU.
#[derive(Clone, Debug)]
pub struct DetectOptions {
    /// The sysfs root (`/sys`, or where the host's is mounted).
    pub sysfs_root: PathBuf,
    /// A `load` file given by the operator: used as is, no discovery.
    pub gpu_load_path: Option<PathBuf>,
    /// NVML library to try when no Jetson GPU is found (`None`: do not).
    pub nvml_library: Option<String>,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            sysfs_root: PathBuf::from("/sys"),
            gpu_load_path: None,
            nvml_library: Some(crate::nvml::DEFAULT_LIBRARY.to_owned()),
        }
    }
}

/// The chosen source.
#[derive(Debug)]
pub enum GpuSource {
    /// A Jetson per-mille `load` file.
    Jetson {
        /// The file.
        path: PathBuf,
        /// How it was found (`None`: given by the operator).
        found: Option<Found>,
    },
    /// NVML.
    Nvml(Nvml),
    /// Nothing found: no value is served.
    None {
        /// What was tried, for the log.
        tried: String,
    },
}

/// Why no value could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The Jetson load file failed.
    #[error(transparent)]
    Jetson(#[from] LoadError),
    /// NVML failed.
    #[error(transparent)]
    Nvml(#[from] NvmlError),
    /// There is no GPU source on this node.
    #[error("no GPU load source on this node ({0})")]
    NoSource(String),
}

impl GpuSource {
    /// Chooses the source per `opts`, logging what was found.
    pub fn detect(opts: &DetectOptions) -> Self {
        if let Some(path) = &opts.gpu_load_path {
            tracing::info!(path = %path.display(), "GPU load from the given file (per mille)");
            return GpuSource::Jetson {
                path: path.clone(),
                found: None,
            };
        }
        if let Some((path, found)) = jetson::discover(&opts.sysfs_root) {
            tracing::info!(path = %path.display(), ?found, "Jetson GPU load file found");
            return GpuSource::Jetson {
                path,
                found: Some(found),
            };
        }
        let mut tried = format!(
            "no Jetson GPU load file under {}",
            opts.sysfs_root.display()
        );
        if let Some(library) = &opts.nvml_library {
            match Nvml::open(library) {
                Ok(nvml) => {
                    tracing::info!(
                        library,
                        devices = nvml.device_count(),
                        "GPU utilisation from NVML"
                    );
                    return GpuSource::Nvml(nvml);
                }
                Err(e) => {
                    let cause = std::error::Error::source(&e)
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default();
                    tried.push_str(&format!("; NVML: {e}{cause}"));
                }
            }
        }
        tracing::warn!(%tried, "no GPU load source found: serving no GPU value (the _up metric is 0); pass --gpu-load-path if the board keeps its load file elsewhere");
        GpuSource::None { tried }
    }

    /// `jetson-sysfs`, `nvml` or `none` (the `source` label).
    pub fn kind(&self) -> &'static str {
        match self {
            GpuSource::Jetson { .. } => "jetson-sysfs",
            GpuSource::Nvml(_) => "nvml",
            GpuSource::None { .. } => "none",
        }
    }

    /// What is read: the file, the NVML library and device count, or "".
    pub fn device(&self) -> String {
        match self {
            GpuSource::Jetson { path, .. } => path.display().to_string(),
            GpuSource::Nvml(n) => format!("{} ({} devices)", n.library(), n.device_count()),
            GpuSource::None { .. } => String::new(),
        }
    }

    /// The load file, for a Jetson source.
    pub fn load_path(&self) -> Option<&Path> {
        match self {
            GpuSource::Jetson { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The GPU load now, percent (0–100).
    pub fn read(&self) -> Result<f64, ReadError> {
        match self {
            GpuSource::Jetson { path, .. } => Ok(jetson::read_load_percent(path)?),
            GpuSource::Nvml(n) => Ok(n.utilization_percent()?),
            GpuSource::None { tried } => Err(ReadError::NoSource(tried.clone())),
        }
    }
}
