//! Kernel launches whose arguments are held as raw bytes, so that a launch can carry
//! launch attributes (`cuLaunchKernelEx`): the forward pass's programmatic dependent launch
//! (PDL, `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION`). With it a kernel may start
//! while the previous one in the stream finishes; every qwen kernel calls
//! `griddepcontrol.wait` (`pdl_wait` in `kernels/qwen.cu`) before it reads anything an
//! earlier kernel wrote, and before that touches only the weights (prefetched into L2), so
//! the values computed are the serial launch's. Without the attribute the same kernels run
//! serially (the wait returns at once).

use cudarc::driver::{sys, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig};

use crate::error::Result;

/// One kernel argument as the bytes the driver copies (a device pointer or a scalar).
pub trait RawArg {
    fn raw(&self, stream: &CudaStream) -> Box<[u8]>;
}

impl<T> RawArg for CudaSlice<T> {
    fn raw(&self, stream: &CudaStream) -> Box<[u8]> {
        // Event tracking is off (`Device::open`), so the guard records nothing.
        let (p, _guard) = self.device_ptr(stream);
        Box::new(p.to_ne_bytes())
    }
}

macro_rules! scalar_arg {
    ($($t:ty),*) => {$(
        impl RawArg for $t {
            fn raw(&self, _: &CudaStream) -> Box<[u8]> {
                Box::new(self.to_ne_bytes())
            }
        }
    )*};
}
scalar_arg!(i32, u32, i64, u64, f32);

/// A kernel's argument list, in parameter order.
pub struct RawArgs<'s> {
    stream: &'s CudaStream,
    vals: Vec<Box<[u8]>>,
}

impl<'s> RawArgs<'s> {
    pub fn new(stream: &'s CudaStream) -> Self {
        RawArgs { stream, vals: Vec::with_capacity(20) }
    }

    /// Appends an argument the kernel reads.
    pub fn arg<A: RawArg + ?Sized>(&mut self, a: &A) -> &mut Self {
        self.vals.push(a.raw(self.stream));
        self
    }

    /// Appends a buffer the kernel writes (borrowed mutably, so the launch site says so).
    pub fn out<A: RawArg + ?Sized>(&mut self, a: &mut A) -> &mut Self {
        self.vals.push(a.raw(self.stream));
        self
    }

    /// The argument list fits `f`'s parameters (count and byte sizes, from
    /// `cuFuncGetParamInfo`): a mismatch is an error, not a launch that reads past the list.
    fn check_params(&self, f: &CudaFunction) -> Result<()> {
        let info = |i: usize| -> Option<usize> {
            let (mut offset, mut size) = (0usize, 0usize);
            // SAFETY: a loaded function and two out-pointers to live locals.
            let r = unsafe { sys::cuFuncGetParamInfo(f.cu_function(), i, &mut offset, &mut size) };
            (r == sys::CUresult::CUDA_SUCCESS).then_some(size)
        };
        let sizes: Vec<Option<usize>> = (0..=self.vals.len()).map(info).collect();
        let fits = sizes[..self.vals.len()].iter().zip(&self.vals).all(|(s, v)| *s == Some(v.len()))
            && sizes[self.vals.len()].is_none();
        if fits {
            return Ok(());
        }
        let takes = (0..64).take_while(|&i| info(i).is_some()).count();
        Err(crate::error::ExecError::Input(format!(
            "kernel launch with {} arguments of {:?} bytes, but the kernel takes {takes} parameters of {:?} bytes",
            self.vals.len(),
            self.vals.iter().map(|v| v.len()).collect::<Vec<_>>(),
            (0..takes).map(|i| info(i).unwrap_or(0)).collect::<Vec<_>>()
        )))
    }

    /// Launches `f` on the stream, with programmatic stream serialization when `pdl`.
    ///
    /// # Safety
    /// The arguments must match `f`'s parameter list and the buffers must hold what the
    /// kernel indexes, as for `cudarc`'s `LaunchArgs::launch`.
    pub unsafe fn launch(&mut self, f: &CudaFunction, cfg: LaunchConfig, pdl: bool) -> Result<()> {
        self.stream.context().bind_to_thread()?;
        self.check_params(f)?;
        let mut params: Vec<*mut std::ffi::c_void> =
            self.vals.iter_mut().map(|b| b.as_mut_ptr().cast::<std::ffi::c_void>()).collect();
        // SAFETY: a zeroed attribute is a valid "ignore" value; we set the id and the one
        // field the PDL attribute reads.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: u32::from(pdl),
        };
        // SAFETY: `params` points at one live value per kernel parameter (the caller's
        // contract), `config` and `attr` outlive the call.
        unsafe { sys::cuLaunchKernelEx(&config, f.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()) }
            .result()?;
        Ok(())
    }
}
