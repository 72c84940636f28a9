//! Desktop and server NVIDIA GPUs: utilisation from NVML
//! (`libnvidia-ml.so.1`, installed with the driver), loaded at run time so
//! the binary still starts where there is no NVIDIA driver.
//!
//! Only five documented NVML entry points are used: `nvmlInit_v2`,
//! `nvmlDeviceGetCount_v2`, `nvmlDeviceGetHandleByIndex_v2`,
//! `nvmlDeviceGetUtilizationRates` and `nvmlShutdown` (plus
//! `nvmlErrorString` for messages). The node's value is the mean GPU
//! utilisation of its devices: the share of the node's GPU capacity in use.

use std::ffi::{CStr, c_char, c_uint, c_void};

use libloading::Library;

/// The library name the NVIDIA driver installs.
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// `nvmlReturn_t`: 0 is success.
type NvmlReturn = c_uint;
/// `nvmlDevice_t`: an opaque handle.
type Device = *mut c_void;

/// `nvmlUtilization_t`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Utilization {
    /// Percent of the last sample period a kernel ran on the GPU.
    gpu: c_uint,
    /// Percent of the period device memory was read or written.
    memory: c_uint,
}

type InitFn = unsafe extern "C" fn() -> NvmlReturn;
type CountFn = unsafe extern "C" fn(*mut c_uint) -> NvmlReturn;
type HandleFn = unsafe extern "C" fn(c_uint, *mut Device) -> NvmlReturn;
type UtilFn = unsafe extern "C" fn(Device, *mut Utilization) -> NvmlReturn;
type ErrorStringFn = unsafe extern "C" fn(NvmlReturn) -> *const c_char;

/// Why NVML gave no value.
#[derive(Debug, thiserror::Error)]
pub enum NvmlError {
    /// The library could not be loaded (no NVIDIA driver here).
    #[error("loading {library}")]
    Load {
        /// The name or path tried.
        library: String,
        /// Why.
        #[source]
        source: libloading::Error,
    },
    /// A call failed.
    #[error("{call} failed: {message} (NVML error {code})")]
    Call {
        /// Which entry point.
        call: &'static str,
        /// NVML's error code.
        code: u32,
        /// NVML's message for it.
        message: String,
    },
    /// NVML works but sees no device.
    #[error("NVML reports no GPU")]
    NoDevice,
}

/// An initialised NVML with the node's device handles.
pub struct Nvml {
    shutdown: InitFn,
    utilization: UtilFn,
    error_string: ErrorStringFn,
    devices: Vec<Device>,
    library: String,
    /// Kept last: the function pointers above point into it.
    _lib: Library,
}

// SAFETY: NVML is documented as thread-safe ("NVML is thread-safe so it is
// safe to make simultaneous NVML calls from multiple threads"); the device
// handles are opaque tokens valid until nvmlShutdown, which only Drop calls.
unsafe impl Send for Nvml {}
// SAFETY: as above; `&Nvml` only calls NVML's thread-safe queries.
unsafe impl Sync for Nvml {}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvml")
            .field("library", &self.library)
            .field("devices", &self.devices.len())
            .finish()
    }
}

impl Nvml {
    /// Loads `library` (a name searched like `dlopen` does, or a path),
    /// initialises NVML and takes a handle to every device.
    pub fn open(library: &str) -> Result<Self, NvmlError> {
        let load_err = |source| NvmlError::Load {
            library: library.to_owned(),
            source,
        };
        // SAFETY: loading the NVIDIA management library runs its
        // initialisers, which have no preconditions on our side.
        let lib = unsafe { Library::new(library) }.map_err(load_err)?;
        // SAFETY: the signatures are NVML's documented C prototypes
        // (nvml.h); each pointer is copied out while `lib` stays alive in
        // the returned value.
        let (init, shutdown, count, handle, utilization, error_string) = unsafe {
            (
                *lib.get::<InitFn>(b"nvmlInit_v2\0").map_err(load_err)?,
                *lib.get::<InitFn>(b"nvmlShutdown\0").map_err(load_err)?,
                *lib.get::<CountFn>(b"nvmlDeviceGetCount_v2\0")
                    .map_err(load_err)?,
                *lib.get::<HandleFn>(b"nvmlDeviceGetHandleByIndex_v2\0")
                    .map_err(load_err)?,
                *lib.get::<UtilFn>(b"nvmlDeviceGetUtilizationRates\0")
                    .map_err(load_err)?,
                *lib.get::<ErrorStringFn>(b"nvmlErrorString\0")
                    .map_err(load_err)?,
            )
        };
        let check = |call: &'static str, code: NvmlReturn| -> Result<(), NvmlError> {
            if code == 0 {
                return Ok(());
            }
            Err(NvmlError::Call {
                call,
                code,
                message: message(error_string, code),
            })
        };
        // SAFETY: no arguments; NVML allows init from any thread.
        check("nvmlInit_v2", unsafe { init() })?;
        let mut nvml = Self {
            shutdown,
            utilization,
            error_string,
            devices: Vec::new(),
            library: library.to_owned(),
            _lib: lib,
        };
        // From here on, Drop shuts NVML down again on any error.
        let mut n: c_uint = 0;
        // SAFETY: `n` is a valid out-pointer for the call's duration.
        check("nvmlDeviceGetCount_v2", unsafe { count(&mut n) })?;
        for i in 0..n {
            let mut device: Device = std::ptr::null_mut();
            // SAFETY: `device` is a valid out-pointer; `i` < the count.
            check("nvmlDeviceGetHandleByIndex_v2", unsafe {
                handle(i, &mut device)
            })?;
            nvml.devices.push(device);
        }
        if nvml.devices.is_empty() {
            return Err(NvmlError::NoDevice);
        }
        Ok(nvml)
    }

    /// How many devices NVML reported.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// The library loaded.
    pub fn library(&self) -> &str {
        &self.library
    }

    /// Mean GPU utilisation of the devices, percent (0–100).
    pub fn utilization_percent(&self) -> Result<f64, NvmlError> {
        let mut sum = 0.0;
        for &device in &self.devices {
            let mut u = Utilization::default();
            // SAFETY: `device` came from nvmlDeviceGetHandleByIndex_v2 and
            // NVML is initialised until Drop; `u` is a valid out-pointer.
            let code = unsafe { (self.utilization)(device, &mut u) };
            if code != 0 {
                return Err(NvmlError::Call {
                    call: "nvmlDeviceGetUtilizationRates",
                    code,
                    message: message(self.error_string, code),
                });
            }
            sum += f64::from(u.gpu.min(100));
        }
        Ok(sum / self.devices.len() as f64)
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: NVML was initialised in `open`; shutting down once.
        let _ = unsafe { (self.shutdown)() };
    }
}

fn message(error_string: ErrorStringFn, code: NvmlReturn) -> String {
    // SAFETY: nvmlErrorString returns a pointer to a static NUL-terminated
    // string for any code (or null, handled).
    unsafe {
        let p = error_string(code);
        if p.is_null() {
            return format!("error {code}");
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}
