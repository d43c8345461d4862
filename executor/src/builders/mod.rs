//! The seeds' metadata builders (seeds 000-003) as CUDA kernels, run inside replayed CUDA
//! graphs and compared bit for bit with the simulator's models
//! (`specreplay_sim::builders`): `specreplay gpu builders` and `specreplay explain
//! BUILDER --variant V --device cuda`.
//!
//! | builder | kernel (executor/kernels/) | correct | known bad |
//! |---|---|---|---|
//! | `nsa-target-verify` | `nsa_builders.cu` | `general`, `uniform-qo` | — |
//! | `nsa-draft-extend` | `nsa_builders.cu` | `general` | `uniform-qo` (seed 002) |
//! | `draft-select` | `draft_select.cu` | `segmented-topk` | `vectorized-sorted` |
//! | `sparse-indices` | `sparse_indices.cu` | `fused-kernel-clamped` (race-free) | `fused-kernel` (unclamped) |
//!
//! Every family works the same way ([`nsa`], [`draft`], [`sparse`]): a *batch* of
//! independent cases is packed into flat host arrays (per-case header + inputs + the
//! output buffers' initial contents: SGLang's capture state for NSA, poison or zeros for the
//! others); the device buffers are allocated once at a fixed capacity; one graph per kernel
//! variant is captured on them (after an eager warm-up) and replayed for every batch, the
//! loop bounds read from the buffers; whole output buffers are read back and unpacked into
//! the simulator's types, then compared with the simulator's reference
//! (`specreplay_sim::builders::cases::check_*_actual`). Each family also has a CPU twin of
//! its kernel over the same packed arrays, tested here against the simulator, so the packing
//! and the kernels' index arithmetic are checked without a GPU.
//!
//! [`agreement`] runs random cases by the million, [`timing`] measures graph replays with
//! CUDA events, [`explain`] plugs a device check into the simulator's counterexample search.

pub mod agreement;
pub mod draft;
pub mod explain;
pub mod nsa;
pub mod sparse;
pub mod timing;

use cudarc::driver::{sys, CudaGraph, CudaSlice, DeviceRepr, ValidAsZeroBits};

use crate::device::Device;
use crate::error::{ExecError, Result};
use crate::kernels::{CompiledModule, BUILDER_MODULES};

/// Loads the builder kernels into `dev` (compiled by NVRTC or taken from the cache).
pub fn load(dev: &mut Device) -> Result<Vec<CompiledModule>> {
    dev.load_extra(BUILDER_MODULES)
}

/// Blocks of a batched launch: enough to fill an H200 (132 SMs) several times; every
/// kernel loops over its work items with a grid stride, so any count is correct.
pub const BATCH_GRID: u32 = 132 * 8;

/// A persistent device buffer of fixed capacity (never reallocated: graphs hold its address).
pub struct DevBuf<T: DeviceRepr> {
    pub d: CudaSlice<T>,
    pub cap: usize,
    name: &'static str,
}

impl<T: DeviceRepr + ValidAsZeroBits + Default + Clone> DevBuf<T> {
    pub fn new(dev: &Device, name: &'static str, cap: usize) -> Result<Self> {
        Ok(DevBuf { d: dev.stream.alloc_zeros::<T>(cap.max(1))?, cap, name })
    }

    /// Copies `host` into the start of the buffer.
    pub fn put(&mut self, dev: &Device, host: &[T]) -> Result<()> {
        if host.len() > self.cap {
            return Err(ExecError::InvalidInput(format!(
                "{}: {} elements exceed the buffer's capacity {}",
                self.name,
                host.len(),
                self.cap
            )));
        }
        if !host.is_empty() {
            dev.stream.memcpy_htod(host, &mut self.d)?;
        }
        Ok(())
    }

    /// Reads the first `n` elements back into `host[..n]`.
    pub fn get(&self, dev: &Device, host: &mut [T]) -> Result<()> {
        let n = host.len();
        if n > self.cap {
            return Err(ExecError::InvalidInput(format!("{}: read of {n} > capacity {}", self.name, self.cap)));
        }
        if n > 0 {
            dev.stream.memcpy_dtoh(&self.d.slice(0..n), host)?;
        }
        Ok(())
    }
}

/// Captures whatever `launch` enqueues on the device's stream into an instantiated,
/// uploaded graph (the kernels must have run once eagerly before: module loading is not
/// capturable). The capture is always ended, also on error.
pub fn capture(dev: &Device, launch: impl FnOnce() -> Result<()>) -> Result<CudaGraph> {
    dev.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
    let launched = launch();
    let ended = dev.stream.end_capture(sys::CUgraphInstantiate_flags(0));
    launched?;
    let g = ended?.ok_or_else(|| ExecError::Capture("the capture recorded no graph".into()))?;
    g.upload()?;
    Ok(g)
}

/// The accessors of [`GraphedBuilder`] for a device with fields `graphs` and `meta`.
macro_rules! graphed_fields {
    () => {
        fn graphs(&self) -> &[(String, CudaGraph)] {
            &self.graphs
        }

        fn graphs_mut(&mut self) -> &mut Vec<(String, CudaGraph)> {
            &mut self.graphs
        }

        fn meta(&mut self) -> &mut DevBuf<i32> {
            &mut self.meta
        }
    };
}
pub(crate) use graphed_fields;

/// A builder's device buffers with its kernels captured as graphs (SGLang's capture /
/// replay): [`draft::DraftDevice`], [`nsa::NsaDevice`], [`sparse::SparseDevice`]. Each
/// says how to launch, stage and read back; the graph cache, replay and the staged run
/// are written once here.
pub trait GraphedBuilder {
    /// The host-side batch the buffers hold.
    type Packed;
    /// Enqueues `entry` with `grid` blocks on the staged buffers (capturable).
    fn launch(&mut self, dev: &Device, entry: &str, grid: u32) -> Result<()>;
    /// Stages a packed batch (inputs and the outputs' initial contents), capacities checked
    /// ([`GraphedBuilder::check_fits`]).
    fn stage(&mut self, dev: &Device, p: &Self::Packed) -> Result<()>;
    /// Whether `p` fits the buffers (a typed error if not).
    fn check_fits(&self, p: &Self::Packed) -> Result<()>;
    /// The cases `p` holds.
    fn cases_of(p: &Self::Packed) -> usize;
    /// Records (`Some`: one case that fits, checked by [`GraphedBuilder::bake`]) or clears
    /// the header later launches pass by value to the graph-baked entries.
    fn set_baked(&mut self, p: Option<&Self::Packed>) -> Result<()>;
    /// Reads every output buffer back into `p` (synchronizes).
    fn read(&self, dev: &Device, p: &mut Self::Packed) -> Result<()>;
    /// The captured graphs by key.
    fn graphs(&self) -> &[(String, CudaGraph)];
    fn graphs_mut(&mut self) -> &mut Vec<(String, CudaGraph)>;
    /// The `meta` buffer (`[cases, work, 0, 0]`).
    fn meta(&mut self) -> &mut DevBuf<i32>;
    /// The cache key of `entry`'s graph with `grid` blocks.
    fn graph_key(&self, entry: &str, grid: u32) -> String {
        format!("{entry}/{grid}")
    }

    /// The graph of `entry` with `grid` blocks, captured on first use after an eager
    /// warm-up with no cases (module loading is not capturable; a baked entry ignores
    /// `meta` and runs its case, so stage before it); returns its index.
    fn graph(&mut self, dev: &Device, entry: &str, grid: u32) -> Result<usize> {
        let key = self.graph_key(entry, grid);
        if let Some(i) = self.graphs().iter().position(|(k, _)| *k == key) {
            return Ok(i);
        }
        self.meta().put(dev, &[0, 0, 0, 0])?;
        self.launch(dev, entry, grid)?;
        dev.stream.synchronize()?;
        let g = capture(dev, || self.launch(dev, entry, grid))?;
        self.graphs_mut().push((key, g));
        Ok(self.graphs().len() - 1)
    }

    /// Replays graph `g` (asynchronous).
    fn replay(&self, g: usize) -> Result<()> {
        self.graphs()[g].1.launch()?;
        Ok(())
    }

    /// Stage, replay the variant's graph, read back: `p`'s outputs become the device's.
    fn run(&mut self, dev: &Device, entry: &str, p: &mut Self::Packed, grid: u32) -> Result<()> {
        let g = self.graph(dev, entry, grid)?;
        self.stage(dev, p)?;
        self.replay(g)?;
        self.read(dev, p)
    }

    /// From now on, graphs bake `p`'s single case's header into their kernel parameters
    /// (the graph-baked entries: one graph per case, as SGLang captures one graph per batch
    /// size); `None` goes back to the batched entries, which read `meta` and `hdr`.
    fn bake(&mut self, p: Option<&Self::Packed>) -> Result<()> {
        if let Some(p) = p {
            self.check_fits(p)?;
            if Self::cases_of(p) != 1 {
                return Err(ExecError::InvalidInput(format!(
                    "a graph-baked header needs exactly one case, got {}",
                    Self::cases_of(p)
                )));
            }
        }
        self.set_baked(p)
    }

    /// [`GraphedBuilder::run`] of `p`'s single case through a graph captured for it alone,
    /// its header baked into the entry's parameters; the graph is dropped afterwards.
    fn run_baked(&mut self, dev: &Device, entry: &str, p: &mut Self::Packed) -> Result<()> {
        self.bake(Some(p))?;
        let key = self.graph_key(entry, 1);
        // Staged first: the graph's eager warm-up, baked, runs the case on these inputs;
        // `run` stages again, restoring the capture state.
        let r = self.stage(dev, p).and_then(|()| self.run(dev, entry, p, 1));
        self.bake(None)?;
        self.graphs_mut().retain(|(k, _)| *k != key);
        r
    }
}

/// One kernel variant of the table `specreplay gpu builders` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelVariant {
    /// The builder (`specreplay explain --list` name).
    pub builder: &'static str,
    /// The variant's name in the table.
    pub variant: &'static str,
    /// The kernel entry point.
    pub entry: &'static str,
    /// Known to disagree with the reference (must show mismatches).
    pub known_bad: bool,
}

/// Every kernel variant, in table order.
pub const KERNEL_VARIANTS: &[KernelVariant] = &[
    KernelVariant { builder: "nsa-target-verify", variant: "general", entry: "nsa_meta_general", known_bad: false },
    KernelVariant {
        builder: "nsa-target-verify",
        variant: "uniform-qo",
        entry: "nsa_meta_uniform_qo",
        known_bad: false,
    },
    KernelVariant { builder: "nsa-draft-extend", variant: "general", entry: "nsa_meta_general", known_bad: false },
    KernelVariant { builder: "nsa-draft-extend", variant: "uniform-qo", entry: "nsa_meta_uniform_qo", known_bad: true },
    KernelVariant { builder: "draft-select", variant: "segmented-topk", entry: "draft_select_topk", known_bad: false },
    KernelVariant {
        builder: "draft-select",
        variant: "vectorized-sorted",
        entry: "draft_select_sorted",
        known_bad: true,
    },
    KernelVariant {
        builder: "sparse-indices",
        variant: "fused-kernel-clamped",
        entry: "sparse_build",
        known_bad: false,
    },
    KernelVariant {
        builder: "sparse-indices",
        variant: "fused-kernel",
        entry: "sparse_build_fused_unclamped",
        known_bad: true,
    },
];

/// Exclusive-end prefix offsets helper: returns the current length of `v` as `i32`,
/// erroring past `i32::MAX` (the kernels index with 32-bit offsets inside each buffer).
/// The first case's `N` header words of a packed batch (what a graph-baked entry takes by
/// value).
pub(crate) fn first_header<const N: usize>(hdr: &[i32]) -> Result<[i32; N]> {
    hdr.get(..N)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| ExecError::InvalidInput(format!("a packed batch holds {} header words, not {N}", hdr.len())))
}

pub(crate) fn off32(len: usize, what: &str) -> std::result::Result<i32, String> {
    i32::try_from(len).map_err(|_| format!("{what}: offset {len} exceeds the 32-bit range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_baked_header_is_the_first_cases_words_or_a_typed_error() {
        let hdr: Vec<i32> = (0..20).collect();
        assert_eq!(first_header::<8>(&hdr).unwrap(), [0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(matches!(first_header::<16>(&hdr[..15]), Err(ExecError::InvalidInput(_))));
    }

    #[test]
    fn every_kernel_variant_names_a_builder_and_an_entry_point() {
        for kv in KERNEL_VARIANTS {
            assert!(specreplay_sim::builders::builder_info(kv.builder).is_some(), "{kv:?}");
            assert!(BUILDER_MODULES.iter().any(|m| m.entries.contains(&kv.entry)), "{kv:?}");
        }
        // Exactly one known-bad variant per builder except target_verify (seed 001 is exact there).
        let bad: Vec<_> = KERNEL_VARIANTS.iter().filter(|k| k.known_bad).map(|k| k.builder).collect();
        assert_eq!(bad, ["nsa-draft-extend", "draft-select", "sparse-indices"]);
    }
}
