//! The CUDA device: one context, one non-default stream with event tracking off (so
//! stream capture works), the loaded kernel modules and what the trace header records
//! about the machine.
//!
//! Every entry point checks that `libcuda` can be loaded before the first driver call:
//! cudarc's dynamic loading panics on a missing library, so a machine without a driver
//! gets [`ExecError::NoDriver`] instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaStream};
use cudarc::nvrtc::Ptx;

use crate::error::{ExecError, Result};
use crate::kernels::{self, CompiledModule, KernelModule, Variant, MODULES};

/// Environment variable that turns a missing driver into a test failure (GPU host runs).
pub const REQUIRE_GPU_ENV: &str = "SPECREPLAY_REQUIRE_GPU";

/// Whether `SPECREPLAY_REQUIRE_GPU=1` is set.
pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v == "1")
}

/// Whether the CUDA driver library can be loaded (never panics).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { sys::is_culib_present() }
}

/// What the trace header records about the device and its software.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    pub compute_capability: (i32, i32),
    pub sm_count: i32,
    pub total_memory: usize,
    /// `cuDriverGetVersion` (e.g. 13000 for CUDA 13.0).
    pub driver_version: i32,
    pub nvrtc_version: (i32, i32),
    /// cuBLAS `(major, minor, patch)`, `None` when libcublas cannot be loaded.
    pub cublas_version: Option<(i32, i32, i32)>,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ma, mi) = self.compute_capability;
        writeln!(f, "device             {}", self.name)?;
        writeln!(f, "compute capability {ma}.{mi}")?;
        writeln!(f, "multiprocessors    {}", self.sm_count)?;
        writeln!(f, "memory             {} MiB", self.total_memory >> 20)?;
        writeln!(f, "driver (CUDA)      {}.{}", self.driver_version / 1000, (self.driver_version % 1000) / 10)?;
        writeln!(f, "NVRTC              {}.{}", self.nvrtc_version.0, self.nvrtc_version.1)?;
        match self.cublas_version {
            Some((a, b, c)) => writeln!(f, "cuBLAS             {a}.{b}.{c}"),
            None => writeln!(f, "cuBLAS             not found"),
        }
    }
}

fn cublas_version() -> Option<(i32, i32, i32)> {
    use cudarc::cublas::sys as cb;
    // SAFETY: probes with dlopen only; the call below runs only when the library loads.
    if !unsafe { cb::is_culib_present() } {
        return None;
    }
    let get = |t| {
        let mut v = 0;
        // SAFETY: library present; `v` is valid for writes.
        unsafe { cb::cublasGetProperty(t, &mut v) }.result().ok().map(|()| v)
    };
    Some((
        get(cb::libraryPropertyType::MAJOR_VERSION)?,
        get(cb::libraryPropertyType::MINOR_VERSION)?,
        get(cb::libraryPropertyType::PATCH_LEVEL)?,
    ))
}

/// An open device: context, stream, loaded kernels.
pub struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub info: DeviceInfo,
    functions: BTreeMap<&'static str, CudaFunction>,
    /// The loaded modules (name, CUBIN sha256), in [`MODULES`] order, for trace headers.
    pub modules: Vec<CompiledModule>,
    /// The kernel build loaded ([`Variant::Correct`] except in known-bad-variant tests).
    pub variant: Variant,
    /// The most dynamic shared memory one block may opt into (bytes), read once at open.
    shared_optin: usize,
}

impl Device {
    /// Opens device `ordinal`: checks the driver library, creates the primary context,
    /// turns event tracking off (before any allocation; required for stream capture),
    /// creates one non-default stream, compiles (or loads from the cache) and loads every
    /// kernel module.
    pub fn open(ordinal: usize) -> Result<Device> {
        Self::open_variant(ordinal, Variant::Correct)
    }

    /// [`Device::open`] with the kernels of `variant` (a known-bad variant for the tests
    /// that prove the GPU check catches it).
    pub fn open_variant(ordinal: usize, variant: Variant) -> Result<Device> {
        let (ctx, stream, info) = Self::open_context(ordinal)?;
        let dir = kernels::cache_dir();
        let mut functions = BTreeMap::new();
        let mut modules = Vec::new();
        for base in MODULES {
            let source = variant.source(base);
            // A variant's source lives as long as the process (one per open, test-only).
            let m = &if source == base.source {
                *base
            } else {
                KernelModule { source: Box::leak(source.into_boxed_str()), ..*base }
            };
            let compiled = kernels::cubin_cached(m, dir.as_deref())?;
            let module = ctx.load_module(Ptx::from_binary(compiled.cubin.clone()))?;
            for &e in m.entries {
                functions.insert(e, module.load_function(e)?);
            }
            modules.push(compiled);
        }
        let shared_optin =
            ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)? as usize;
        Ok(Device { ctx, stream, info, functions, modules, variant, shared_optin })
    }

    /// The context, stream and device facts, without loading kernels (`gpu info`).
    pub fn open_context(ordinal: usize) -> Result<(Arc<CudaContext>, Arc<CudaStream>, DeviceInfo)> {
        if !driver_present() {
            return Err(ExecError::NoDriver(
                "libcuda.so.1 could not be loaded (no NVIDIA driver on this machine)".into(),
            ));
        }
        cudarc::driver::result::init().map_err(|e| ExecError::NoDriver(format!("cuInit failed: {e}")))?;
        let count = CudaContext::device_count().map_err(|e| ExecError::NoDriver(format!("cuDeviceGetCount: {e}")))?;
        if ordinal as i32 >= count {
            return Err(ExecError::NoDriver(format!("device {ordinal} requested, the driver sees {count}")));
        }
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: called before any allocation; every launch is ordered on one stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let mut driver_version = 0;
        // SAFETY: the driver library is loaded; the pointer is valid.
        unsafe { sys::cuDriverGetVersion(&mut driver_version) }.result()?;
        let info = DeviceInfo {
            name: ctx.name()?,
            compute_capability: ctx.compute_capability()?,
            sm_count: ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            total_memory: ctx.total_mem()?,
            driver_version,
            nvrtc_version: kernels::nvrtc_version()?,
            cublas_version: cublas_version(),
        };
        Ok((ctx, stream, info))
    }

    /// Compiles (or loads from the cache) and loads further modules whose entry points
    /// become available through [`Device::function`] (the builder kernels,
    /// [`crate::builders`]); they are not part of [`Device::modules`], so the engine's
    /// trace notes are unchanged. Returns the modules' CUBIN hashes.
    pub fn load_extra(&mut self, mods: &[KernelModule]) -> Result<Vec<CompiledModule>> {
        let dir = kernels::cache_dir();
        let mut out = Vec::new();
        for m in mods {
            let compiled = kernels::cubin_cached(m, dir.as_deref())?;
            let module = self.ctx.load_module(Ptx::from_binary(compiled.cubin.clone()))?;
            for &e in m.entries {
                self.functions.insert(e, module.load_function(e)?);
            }
            out.push(compiled);
        }
        Ok(out)
    }

    /// The most dynamic shared memory one block may opt into (bytes; 227 KiB on Hopper).
    pub fn shared_optin(&self) -> usize {
        self.shared_optin
    }

    /// A loaded kernel by entry-point name.
    pub fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or_else(|| ExecError::UnknownKernel(name.to_string()))
    }

    /// `(module, sha256 of its CUBIN)` for the trace header.
    pub fn module_hashes(&self) -> Vec<(String, String)> {
        self.modules.iter().map(|m| (m.name.to_string(), m.sha256.clone())).collect()
    }
}

/// For GPU tests (all `#[ignore]`d): the device, or a panic saying why there is none. A
/// GPU test never passes without a GPU; with `SPECREPLAY_REQUIRE_GPU=1` (the GPU host's
/// runs) the message says the host is misconfigured.
pub fn test_device() -> Device {
    match Device::open(0) {
        Ok(d) => d,
        Err(e) if gpu_required() => panic!("{REQUIRE_GPU_ENV}=1 but the GPU is unusable: {e}"),
        Err(e) => panic!("this GPU test needs a CUDA GPU (run it on the GPU host, scripts/gpu-check.sh): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_driver_is_a_typed_error_never_a_panic() {
        match Device::open_context(0) {
            Ok((_, _, info)) => assert!(!info.name.is_empty()),
            Err(e) => {
                assert!(!gpu_required(), "{REQUIRE_GPU_ENV}=1 but: {e}");
                assert!(matches!(e, ExecError::NoDriver(_)), "{e}");
                assert!(e.to_string().starts_with("no CUDA driver found: "), "{e}");
            }
        }
    }

    #[test]
    fn device_info_renders_versions() {
        let info = DeviceInfo {
            name: "NVIDIA H200".into(),
            compute_capability: (9, 0),
            sm_count: 132,
            total_memory: 143_771 << 20,
            driver_version: 13000,
            nvrtc_version: (13, 0),
            cublas_version: None,
        };
        let s = info.to_string();
        assert!(s.contains("compute capability 9.0") && s.contains("driver (CUDA)      13.0"), "{s}");
        assert!(s.contains("143771 MiB") && s.contains("cuBLAS             not found"), "{s}");
    }
}
