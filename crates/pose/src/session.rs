//! ONNX Runtime plumbing: the process-wide environment, opening the two
//! sessions on the requested [`Device`] (falling back for `auto`), and
//! checked access to their tensors.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::ep::{self, ExecutionProvider as _};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::device::{self, CUDA_LIBRARIES, Device, GPU_SUBDIR, RuntimeLibrary};
use crate::estimator::{DETECTOR_FILE, LANDMARK_FILE, RUNTIME_FILE};
use crate::{PoseConfig, PoseError};

/// The two sessions and the device they run on (never `auto`).
pub(crate) struct Sessions {
    pub detector: Session,
    pub landmarker: Session,
    pub device: Device,
    pub library: PathBuf,
}

pub(crate) fn runtime_err<R>(what: &'static str) -> impl FnOnce(ort::Error<R>) -> PoseError {
    move |e| PoseError::Runtime {
        what,
        source: ort::Error::new_with_code(e.code(), e.message()),
    }
}

/// Loads ONNX Runtime and opens both models on the first device of
/// `cfg.device.attempts()` that works. `auto` logs one line when it falls
/// back to the CPU; an explicit GPU device that cannot run is an error.
pub(crate) fn open(cfg: &PoseConfig) -> Result<Sessions, PoseError> {
    let ort_dylib = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    let gpu_runtime = cfg.models_dir.join(GPU_SUBDIR).join(RUNTIME_FILE);
    let lib = device::runtime_library(
        &cfg.models_dir,
        cfg.device,
        ort_dylib.as_deref(),
        gpu_runtime.is_file(),
    );
    if lib.bundled_gpu {
        preload_cuda_libraries(&cfg.models_dir.join(GPU_SUBDIR));
    }
    let env = environment(&lib.path)?;
    let mut unavailable: Vec<String> = Vec::new();
    for &dev in cfg.device.attempts() {
        match open_on(&env, cfg, dev, &lib) {
            Ok((detector, landmarker)) => {
                if !unavailable.is_empty() {
                    tracing::info!(
                        requested = %cfg.device,
                        device = %dev,
                        tried = %unavailable.join("; "),
                        "no GPU execution provider usable here; the pose model runs on the {dev}"
                    );
                }
                return Ok(Sessions {
                    detector,
                    landmarker,
                    device: dev,
                    library: lib.path,
                });
            }
            Err(PoseError::DeviceUnavailable { device, reason })
                if cfg.device == Device::Auto && device != Device::Cpu =>
            {
                unavailable.push(format!("{device}: {reason}"));
            }
            Err(e) => return Err(e),
        }
    }
    // `attempts()` always ends with an attempt that returns.
    Err(PoseError::DeviceUnavailable {
        device: cfg.device,
        reason: unavailable.join("; "),
    })
}

/// Opens both models with `dev`'s execution providers.
fn open_on(
    env: &ort::environment::Environment,
    cfg: &PoseConfig,
    dev: Device,
    lib: &RuntimeLibrary,
) -> Result<(Session, Session), PoseError> {
    let unavailable = |reason: String| PoseError::DeviceUnavailable {
        device: dev,
        reason,
    };
    let eps = match dev {
        Device::Cpu | Device::Auto => Vec::new(),
        Device::Cuda => {
            require_provider(ep::CUDA::is_available(), "CUDAExecutionProvider", lib)
                .and_then(|()| require_driver())
                .map_err(unavailable)?;
            vec![cuda()]
        }
        Device::TensorRt => {
            require_provider(
                ep::TensorRT::is_available(),
                "TensorrtExecutionProvider",
                lib,
            )
            .and_then(|()| require_driver())
            .map_err(unavailable)?;
            // TensorRT takes the nodes it supports; CUDA runs the rest.
            vec![tensorrt(cfg), cuda()]
        }
    };
    let threads = cfg.threads.max(1);
    let open = |file: &str| -> Result<Session, PoseError> {
        let path = cfg.models_dir.join(file);
        let builder = Session::builder(env)
            .map_err(runtime_err("create a session builder"))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(runtime_err("set the optimization level"))?
            .with_intra_threads(threads)
            .map_err(runtime_err("set intra-op threads"))?
            .with_inter_threads(1)
            .map_err(runtime_err("set inter-op threads"))?;
        let mut builder = if eps.is_empty() {
            builder
        } else {
            builder
                .with_execution_providers(&eps)
                .map_err(|e| unavailable(e.message().to_string()))?
        };
        builder.commit_from_file(&path).map_err(|e| {
            if dev.is_gpu() {
                // A GPU build without a usable GPU fails here (no device,
                // driver too old, CUDA libraries missing).
                unavailable(e.message().to_string())
            } else {
                PoseError::ModelLoad {
                    path: path.clone(),
                    source: ort::Error::new_with_code(e.code(), e.message()),
                }
            }
        })
    };
    Ok((open(DETECTOR_FILE)?, open(LANDMARK_FILE)?))
}

/// `Ok` when the loaded ONNX Runtime was built with the provider.
fn require_provider(
    available: ort::Result<bool>,
    name: &str,
    lib: &RuntimeLibrary,
) -> Result<(), String> {
    match available {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "{name} is not in {} (a CPU-only build); install the GPU build with \
             `posture-farm setup --gpu`, or point ORT_DYLIB_PATH at one (JetPack's on a Jetson)",
            lib.path.display()
        )),
        Err(e) => Err(format!("cannot list ONNX Runtime's providers: {e}")),
    }
}

/// `Ok` when the NVIDIA driver's `libcuda.so.1` loads. ONNX Runtime 1.22's
/// CUDA provider library crashes the process (SIGSEGV in its initialisers)
/// when it is loaded on a machine without the driver, as a GPU image on a
/// node without a GPU would be, so the driver is checked first. Loading it
/// early is harmless: the CUDA runtime would load it anyway.
fn require_driver() -> Result<(), String> {
    ort::util::preload_dylib("libcuda.so.1").map_err(|e| {
        format!(
            "no NVIDIA driver here (libcuda.so.1: {e}); on Kubernetes, request nvidia.com/gpu \
             with runtimeClassName: nvidia"
        )
    })
}

/// The CUDA provider. TF32 off: convolutions in full fp32, so GPU results
/// stay within the CPU's (angles within 0.5°), at a cost these small models
/// do not notice.
fn cuda() -> ep::ExecutionProviderDispatch {
    ep::CUDA::default()
        .with_tf32(false)
        .build()
        .error_on_failure()
}

/// The TensorRT provider, fp32, with its engines cached in
/// `cfg.tensorrt_cache_dir` (building them takes minutes on a Jetson).
fn tensorrt(cfg: &PoseConfig) -> ep::ExecutionProviderDispatch {
    let cache = cfg.tensorrt_cache_dir.display().to_string();
    if let Err(e) = std::fs::create_dir_all(&cfg.tensorrt_cache_dir) {
        tracing::warn!(dir = %cache, error = %e, "cannot create the TensorRT engine cache; engines are rebuilt at every start");
    }
    ep::TensorRT::default()
        .with_engine_cache(true)
        .with_engine_cache_path(&cache)
        .with_timing_cache(true)
        .with_timing_cache_path(&cache)
        .build()
        .error_on_failure()
}

/// Loads the CUDA libraries that `setup --gpu` put next to the GPU build, so
/// that the CUDA provider library (which has no run path) finds them. A
/// library missing there is left to the system's search path.
fn preload_cuda_libraries(dir: &Path) {
    for name in CUDA_LIBRARIES {
        let path = dir.join(name);
        if !path.is_file() {
            tracing::debug!(library = %path.display(), "not bundled; left to the system's library path");
            continue;
        }
        if let Err(e) = ort::util::preload_dylib(&path) {
            tracing::debug!(library = %path.display(), error = %e, "cannot preload a CUDA library");
        }
    }
}

/// ONNX Runtime allows one environment per process, created once and never
/// again (even after it is dropped), so it is kept here for the life of the
/// process and shared by every estimator. The library is loaded by the first
/// call; later calls reuse it whatever path they name.
fn environment(lib: &Path) -> Result<ort::environment::Environment, PoseError> {
    static ENV: Mutex<Option<ort::environment::Environment>> = Mutex::new(None);
    // A panic while holding this lock cannot leave the Option half-written.
    let mut guard = ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = guard.as_ref() {
        return Ok(env.clone());
    }
    let env = ort::init_from(lib)
        .map_err(|source| PoseError::RuntimeLibrary {
            path: lib.to_path_buf(),
            source,
        })?
        .with_name("posture-pose")
        .with_telemetry(false)
        .build()
        .map_err(runtime_err("create the ONNX Runtime environment"))?;
    // ONNX Runtime logs every graph rewrite at INFO; only its warnings and
    // errors are worth an operator's attention.
    env.set_log_level(ort::logging::LogLevel::Warning);
    *guard = Some(env.clone());
    Ok(env)
}

/// The f32 data of output `name`, checked to have `len` elements.
pub(crate) fn extract<'a>(
    out: &'a ort::session::SessionOutputs<'_>,
    name: &'static str,
    len: usize,
    model: &'static str,
) -> Result<&'a [f32], PoseError> {
    let value = out.get(name).ok_or(PoseError::BadTensorShape {
        model,
        tensor: name,
        expected: format!("{len} values"),
        actual: "missing".into(),
    })?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|source| PoseError::Runtime {
            what: "read an output tensor",
            source,
        })?;
    if data.len() != len {
        return Err(PoseError::BadTensorShape {
            model,
            tensor: name,
            expected: format!("{len} values"),
            actual: format!("{shape:?}"),
        });
    }
    Ok(data)
}

/// Checks a session's input and output names and static shapes, so a wrong
/// or stale model file fails at load with a clear message, not at run time.
pub(crate) fn expect_io(
    s: &Session,
    model: &'static str,
    inputs: &[(&'static str, &[i64])],
    outputs: &[(&'static str, &[i64])],
) -> Result<(), PoseError> {
    let check = |outlets: &[ort::value::Outlet],
                 wanted: &[(&'static str, &[i64])]|
     -> Result<(), PoseError> {
        for (name, shape) in wanted {
            let Some(o) = outlets.iter().find(|o| o.name() == *name) else {
                return Err(PoseError::BadTensorShape {
                    model,
                    tensor: name,
                    expected: format!("{shape:?}"),
                    actual: "missing".into(),
                });
            };
            let actual: Option<Vec<i64>> = o
                .dtype()
                .tensor_shape()
                .map(|s| s.iter().copied().collect());
            if actual.as_deref() != Some(*shape) {
                return Err(PoseError::BadTensorShape {
                    model,
                    tensor: name,
                    expected: format!("{shape:?}"),
                    actual: format!("{actual:?}"),
                });
            }
        }
        Ok(())
    };
    check(s.inputs(), inputs)?;
    check(s.outputs(), outputs)
}
