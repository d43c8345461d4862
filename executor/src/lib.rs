//! CUDA executor for specreplay: the engine's device work (input preparation, attention
//! metadata, a paged toy target model, argmax and greedy rejection sampling) as NVRTC-compiled
//! kernels on persistent device buffers, runnable eagerly or inside CUDA graphs, each kernel
//! with a CPU reference.
//!
//! Built on cudarc with dynamic loading, so this crate builds and its CPU tests run on a
//! machine with no CUDA at all; [`device::Device::open`] reports a missing driver as
//! [`ExecError::NoDriver`] instead of panicking.
//!
//! * [`kernels`]: the `.cu` modules, NVRTC compilation to sm_90 CUBIN, the disk cache.
//! * [`device`]: context, stream, [`device::DeviceInfo`], loaded kernel functions.
//! * [`layout`]: buffer capacities, the `counts` layout, host mirrors of every buffer.
//! * [`mod@reference`]: the CPU reference of every kernel (same inputs, same outputs).
//! * [`step`]: persistent device buffers and kernel launches.
//! * [`mod@replay`]: GPU runs, trace notes, the `--poison` real-rows view, fuzz coverage.
//! * [`host_device`]: the CUDA device's staging over the kernel references (CPU check).
//! * [`mod@bench`]: graph replay timings with CUDA events.
//! * [`builders`]: the seeds' metadata builders (seeds 000-003) as kernels under graph replay.
//! * [`cuda_device`]: the simulator's device boundary on the GPU (`gpu sim` / `gpu replay`).
//! * [`qwen_device`]: the Qwen3 forward pass behind the device boundary (GPU and its CPU twin).
//! * [`graphs`]: capture and replay of a fixed launch list.
//! * [`model`]: Hugging Face checkpoints (Qwen3) and the weight interface of the forward pass.
//! * [`selftest`]: every kernel against its reference on random inputs.

pub mod bench;
pub mod builders;
pub mod cuda_device;
pub mod device;
pub mod error;
pub mod graphs;
pub mod host_device;
pub mod kernels;
pub mod layout;
pub mod model;
pub mod model_replay;
pub mod qwen_device;
pub mod random_rows;
pub mod reference;
pub mod replay;
pub mod selftest;
pub mod step;

pub use error::{ExecError, Result};

/// The repository root for tests that read committed traces: the build-time workspace
/// when it still holds `traces/`, else the current directory (the GPU host runs test
/// binaries built on another machine, from the repository root).
pub fn repo_root() -> std::path::PathBuf {
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if built.join("traces").is_dir() {
        built
    } else {
        std::env::current_dir().unwrap_or_default()
    }
}

/// Re-export of the simulator the executor builds on.
pub use specreplay_sim as sim;
