//! Which hardware runs the two networks: ONNX Runtime's CPU provider, or
//! its CUDA or TensorRT execution provider on an NVIDIA GPU, and where the
//! GPU build of ONNX Runtime and its CUDA libraries are found.
//!
//! ```text
//!  requested  auto ─► tensorrt ─fails─► cuda ─fails─► cpu   (one log line says why)
//!             cuda ─► cuda ─fails─► error      tensorrt ─► tensorrt (+ cuda for what
//!             cpu  ─► cpu                                   TensorRT cannot run) ─fails─► error
//! ```
//!
//! The order and the library choice are pure ([`Device::attempts`],
//! [`runtime_library`]); opening the sessions is in `estimator`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::estimator::RUNTIME_FILE;

/// Environment variable choosing the device (`--device` of the commands).
pub const DEVICE_ENV: &str = "POSE_DEVICE";
/// Sub-directory of the models directory where `posture-farm setup --gpu`
/// puts the GPU build of ONNX Runtime and the CUDA libraries it needs.
pub const GPU_SUBDIR: &str = "gpu";
/// The CUDA libraries `libonnxruntime_providers_cuda.so` (ONNX Runtime
/// 1.22, CUDA 12, cuDNN 9) links against, in load order: each after those
/// it needs. Loaded from [`GPU_SUBDIR`] before ONNX Runtime asks for them,
/// because the provider library has no run path of its own.
pub const CUDA_LIBRARIES: [&str; 7] = [
    "libcudart.so.12",
    "libcublasLt.so.12",
    "libcublas.so.12",
    "libcurand.so.10",
    "libcufft.so.11",
    "libnvrtc.so.12",
    "libcudnn.so.9",
];

/// Where the pose model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The first that works of TensorRT, CUDA, CPU.
    #[default]
    Auto,
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// ONNX Runtime's CUDA execution provider (NVIDIA GPU, cuDNN).
    Cuda,
    /// ONNX Runtime's TensorRT execution provider, with CUDA for the nodes
    /// TensorRT does not take.
    TensorRt,
}

impl Device {
    /// Every value, in `--help` order.
    pub const ALL: [Device; 4] = [Device::Auto, Device::Cpu, Device::Cuda, Device::TensorRt];

    /// The name used on the command line, in logs and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::TensorRt => "tensorrt",
        }
    }

    /// The devices to try, in order, when this one is requested. Only
    /// `auto` has more than one, and it always ends with the CPU.
    pub fn attempts(self) -> &'static [Device] {
        match self {
            Device::Auto => &[Device::TensorRt, Device::Cuda, Device::Cpu],
            Device::Cpu => &[Device::Cpu],
            Device::Cuda => &[Device::Cuda],
            Device::TensorRt => &[Device::TensorRt],
        }
    }

    /// Whether this device needs the GPU build of ONNX Runtime.
    pub fn is_gpu(self) -> bool {
        matches!(self, Device::Cuda | Device::TensorRt)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--device` value that is none of auto, cpu, cuda, tensorrt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown pose device {0:?}: expected auto, cpu, cuda or tensorrt")]
pub struct ParseDeviceError(pub String);

impl FromStr for Device {
    type Err = ParseDeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Device::ALL
            .into_iter()
            .find(|d| d.as_str() == wanted)
            .ok_or_else(|| ParseDeviceError(s.to_string()))
    }
}

/// Which `libonnxruntime.so` to load, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeLibrary {
    /// The library file.
    pub path: PathBuf,
    /// Whether it is the GPU build from `<models>/gpu` (whose CUDA libraries
    /// are preloaded from the same directory).
    pub bundled_gpu: bool,
}

/// Chooses the ONNX Runtime library: `ORT_DYLIB_PATH` when set (e.g.
/// JetPack's onnxruntime on a Jetson), else the GPU build in
/// `<models>/gpu/` when a GPU may be used and setup installed it, else the
/// CPU build `<models>/libonnxruntime.so`. `gpu_dir_has_runtime` says
/// whether `<models>/gpu/libonnxruntime.so` exists.
pub fn runtime_library(
    models_dir: &Path,
    device: Device,
    ort_dylib_path: Option<&Path>,
    gpu_dir_has_runtime: bool,
) -> RuntimeLibrary {
    if let Some(p) = ort_dylib_path.filter(|p| !p.as_os_str().is_empty()) {
        return RuntimeLibrary {
            path: p.to_path_buf(),
            bundled_gpu: false,
        };
    }
    if device != Device::Cpu && gpu_dir_has_runtime {
        return RuntimeLibrary {
            path: models_dir.join(GPU_SUBDIR).join(RUNTIME_FILE),
            bundled_gpu: true,
        };
    }
    RuntimeLibrary {
        path: models_dir.join(RUNTIME_FILE),
        bundled_gpu: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Device::ALL {
            assert_eq!(d.as_str().parse::<Device>(), Ok(d));
            assert_eq!(d.to_string(), d.as_str());
        }
        assert_eq!(" CUDA ".parse::<Device>(), Ok(Device::Cuda));
        let err = "gpu".parse::<Device>().unwrap_err();
        assert!(err.to_string().contains("auto, cpu, cuda or tensorrt"));
    }

    #[test]
    fn auto_tries_the_gpu_providers_then_always_the_cpu() {
        assert_eq!(
            Device::Auto.attempts(),
            [Device::TensorRt, Device::Cuda, Device::Cpu]
        );
        for d in [Device::Cpu, Device::Cuda, Device::TensorRt] {
            assert_eq!(d.attempts(), [d], "an explicit device never falls back");
        }
        assert!(Device::Cuda.is_gpu() && Device::TensorRt.is_gpu());
        assert!(!Device::Cpu.is_gpu() && !Device::Auto.is_gpu());
    }

    #[test]
    fn library_choice() {
        let m = Path::new("/m");
        let cpu = RuntimeLibrary {
            path: "/m/libonnxruntime.so".into(),
            bundled_gpu: false,
        };
        let gpu = RuntimeLibrary {
            path: "/m/gpu/libonnxruntime.so".into(),
            bundled_gpu: true,
        };
        assert_eq!(runtime_library(m, Device::Auto, None, false), cpu);
        assert_eq!(runtime_library(m, Device::Auto, None, true), gpu);
        assert_eq!(runtime_library(m, Device::Cuda, None, true), gpu);
        assert_eq!(
            runtime_library(m, Device::Cpu, None, true),
            cpu,
            "cpu never loads the GPU build"
        );
        let jetpack = Path::new("/usr/lib/libonnxruntime.so.1.20");
        assert_eq!(
            runtime_library(m, Device::Cuda, Some(jetpack), true),
            RuntimeLibrary {
                path: jetpack.into(),
                bundled_gpu: false
            }
        );
        assert_eq!(
            runtime_library(m, Device::Auto, Some(Path::new("")), false),
            cpu
        );
    }
}
