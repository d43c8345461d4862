//! The decode megakernel ([`Mega`], `executor/kernels/qwen_mega.cu`): at most
//! [`MEGA_MAX_ROWS`] padded rows, every decoder layer runs in one persistent launch whose
//! blocks meet at grid barriers between phases, instead of six to nine launches per layer.
//! Each phase runs the body of the kernel the tensor plan launches for it, so the values
//! are the launch-per-op plan's bit for bit; what it removes is the launch ramps (device
//! log run 25: a batch-1 product that moves 4-13 MB reaches only 0.9-1.7 TB/s even when it
//! only reads), and with [`Mega::On`]'s `prefetch` a block asks its share of a later
//! product's weights into L2 before it waits, so the memory keeps streaming through RoPE
//! and attention.
//!
//! Invariants: the grid never exceeds what the device holds at once (the occupancy API's
//! blocks per SM x SMs; a grid barrier over blocks that cannot all be resident would never
//! open); the barrier word pair is zero before a launch and after it; the layer table holds
//! [`MEGA_PTRS`] pointers per layer in `qwen_mega.cu`'s order. The embedding, final norm,
//! LM head and sampler launch as before.

use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig};

use super::gpu::{GpuLayer, GpuModel, KernelPlan};
use super::launch::RawArgs;
use crate::device::Device;
use crate::error::{ExecError, Result};
use crate::layout::DeviceBuffers;

/// Warps per block (`MMA_SPLIT`: the products' split-K bodies need all of them).
const MMA_SPLIT: usize = super::kernels_ref::MMA_SPLIT;

/// Padded rows up to which the megakernel runs a step (one 16-row fragment per product
/// tile: the folded-norm bodies normalise one fragment's rows).
pub const MEGA_MAX_ROWS: usize = 16;

/// Device pointers per layer in the megakernel's table (`MEGA_PTRS` in qwen_mega.cu).
pub const MEGA_PTRS: usize = 10;

/// Whether small steps run as one persistent launch ([`super::gpu::Launches::mega`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mega {
    /// A launch per op.
    Off,
    /// `qwen_decode_layers` (one block per SM, `blocks_per_sm` 1) or
    /// `qwen_decode_layers_2` (two, at most 128 registers a thread); `prefetch`: each block
    /// asks its share of the next products' weights into L2 before a barrier.
    On { blocks_per_sm: u8, prefetch: bool },
}

/// [`super::gpu::Launches::mega`] by default: off until a device run times it.
pub const MEGA: Mega = Mega::Off;

impl Mega {
    /// The four settings that are on, for benchmarks and the GPU tests.
    pub const VARIANTS: [Mega; 4] = [
        Mega::On { blocks_per_sm: 1, prefetch: false },
        Mega::On { blocks_per_sm: 1, prefetch: true },
        Mega::On { blocks_per_sm: 2, prefetch: false },
        Mega::On { blocks_per_sm: 2, prefetch: true },
    ];

    /// Whether it is on.
    pub fn on(self) -> bool {
        self != Mega::Off
    }

    /// The entry point it launches.
    pub fn entry(self) -> Option<&'static str> {
        match self {
            Mega::Off => None,
            Mega::On { blocks_per_sm: 1, .. } => Some("qwen_decode_layers"),
            Mega::On { .. } => Some("qwen_decode_layers_2"),
        }
    }

    /// `+megaN` or `+megaNpf` (nothing when off).
    pub fn suffix(self) -> String {
        match self {
            Mega::Off => String::new(),
            Mega::On { blocks_per_sm, prefetch } => format!("+mega{blocks_per_sm}{}", if prefetch { "pf" } else { "" }),
        }
    }

    /// Splits a trailing `+megaN[pf]` (N 1 or 2) off `s`; `None` when the suffix is malformed.
    pub fn parse_suffix(s: &str) -> Option<(&str, Mega)> {
        let Some(i) = s.rfind("+mega") else { return Some((s, Mega::Off)) };
        let tail = &s[i + "+mega".len()..];
        let (n, prefetch) = match tail.strip_suffix("pf") {
            Some(n) => (n, true),
            None => (tail, false),
        };
        let blocks_per_sm: u8 = n.parse().ok()?;
        (1..=2).contains(&blocks_per_sm).then_some((&s[..i], Mega::On { blocks_per_sm, prefetch }))
    }

    /// Whether a step of `rows` padded rows under `plan` runs as the megakernel (`whole`:
    /// the step's launches run together, not a piecewise graph with eager attention).
    pub fn applies(self, plan: KernelPlan, rows: usize, whole: bool) -> bool {
        self.on() && whole && plan == KernelPlan::Tensor && (1..=MEGA_MAX_ROWS).contains(&rows)
    }
}

/// The megakernel's device state: the layer table and the grid barrier's two words.
pub struct MegaState {
    pub table: CudaSlice<u64>,
    pub bar: CudaSlice<u32>,
}

impl MegaState {
    /// The table of `layers` (their buffers' device addresses, which never move) and a
    /// zeroed barrier.
    pub fn new(dev: &Device, layers: &[GpuLayer]) -> Result<MegaState> {
        let st = &dev.stream;
        let mut ptrs = Vec::with_capacity(layers.len() * MEGA_PTRS);
        for l in layers {
            let row = [
                &l.input_norm,
                &l.qkv,
                &l.q_norm,
                &l.k_norm,
                &l.o,
                &l.post_norm,
                &l.gate_up,
                &l.down,
                &l.k_cache,
                &l.v_cache,
            ];
            debug_assert_eq!(row.len(), MEGA_PTRS);
            // Event tracking is off (`Device::open`), so the guard records nothing.
            ptrs.extend(row.iter().map(|b| b.device_ptr(st).0));
        }
        Ok(MegaState { table: st.clone_htod(&ptrs)?, bar: st.alloc_zeros(2)? })
    }
}

impl GpuModel {
    /// Enqueues the megakernel for every layer of the step (in place of the layers' ops;
    /// [`GpuModel::mega_step`] says when). Reads the residual stream the embedding wrote and
    /// leaves in it what the last down_proj added, as the folded launch-per-op plan does.
    pub(super) fn launch_mega(&mut self, dev: &Device, b: &mut DeviceBuffers) -> Result<()> {
        let Some(entry) = self.launches.mega.entry() else { return Ok(()) };
        let Mega::On { blocks_per_sm, prefetch } = self.launches.mega else { return Ok(()) };
        let c = &self.cfg;
        let threads = 32 * MMA_SPLIT as u32;
        let blocks = grid(dev, entry, threads, blocks_per_sm)?;
        let f = dev.function(entry)?;
        let cap = b.cap;
        let i = |v: usize| v as i32;
        let qk = i32::from(c.architecture == super::Architecture::Qwen3);
        let s = &mut self.s;
        let mut l = RawArgs::new(&dev.stream);
        l.arg(&b.counts).arg(&self.mega.table).arg(&i(c.num_layers));
        l.out(&mut s.residual).out(&mut s.qkv).out(&mut s.q).out(&mut s.attn).out(&mut s.act);
        l.arg(&b.positions).arg(&b.slot_mapping).arg(&b.cu_seqlens_q).arg(&b.seqused_k).arg(&b.meta_block_table);
        l.arg(&i(cap.blocks_per_row)).arg(&i(cap.block_size)).arg(&self.rope).arg(&i(self.rope_len));
        l.arg(&i(c.hidden_size)).arg(&i(c.intermediate_size)).arg(&i(c.num_heads)).arg(&i(c.num_kv_heads));
        l.arg(&i(c.head_dim)).arg(&qk).arg(&c.rms_norm_eps).arg(&(self.kv.slots() as i64)).arg(&i32::from(prefetch));
        l.out(&mut self.mega.bar).out(&mut b.counters);
        tracing::trace!(entry, blocks, rows = self.grid_rows, "megakernel launch");
        let lc = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the arguments follow MEGA_ARGS in qwen_mega.cu; the table holds every
        // layer's live buffers; the grid is at most what the device holds at once, so the
        // grid barriers open; rows, slots and positions are bounded as for the per-op
        // kernels (the same bodies).
        unsafe { l.launch(f, lc, false) }?;
        self.mega_launches += 1;
        Ok(())
    }
}

/// The grid of `entry` on `dev`: blocks per SM as the occupancy API allows (at most `want`)
/// times the SMs. An entry no block of which fits is an error, not a launch that hangs.
pub fn grid(dev: &Device, entry: &str, threads: u32, want: u8) -> Result<u32> {
    let f = dev.function(entry).map_err(|_| {
        ExecError::Input(format!(
            "launches +mega need the qwen_mega module: load it with Device::load_extra(&[kernels::MEGA_MODULE]) ({entry} is not loaded)"
        ))
    })?;
    let per_sm = f.occupancy_max_active_blocks_per_multiprocessor(threads, 0, None)?;
    if per_sm < 1 {
        return Err(ExecError::Input(format!("{entry}: no block of {threads} threads fits an SM of this device")));
    }
    Ok(dev.info.sm_count.max(1) as u32 * per_sm.min(u32::from(want)))
}

/// `entry: G blocks (B per SM), R registers, L bytes of local memory a thread` for the
/// benchmark's log (`None` when off).
pub fn describe(dev: &Device, mega: Mega) -> Result<Option<String>> {
    let (Some(entry), Mega::On { blocks_per_sm, prefetch }) = (mega.entry(), mega) else { return Ok(None) };
    let threads = 32 * MMA_SPLIT as u32;
    let blocks = grid(dev, entry, threads, blocks_per_sm)?;
    let f = dev.function(entry)?;
    use cudarc::driver::sys::CUfunction_attribute as A;
    let regs = f.get_attribute(A::CU_FUNC_ATTRIBUTE_NUM_REGS)?;
    let local = f.get_attribute(A::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?;
    let shared = f.get_attribute(A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?;
    Ok(Some(format!(
        "megakernel {entry}: {blocks} blocks of {threads} threads ({} per SM), {regs} registers, {local} bytes local, {shared} bytes shared a block, L2 prefetch {}",
        blocks / dev.info.sm_count.max(1) as u32,
        if prefetch { "on" } else { "off" }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_round_trip_and_malformed_ones_are_refused() {
        for m in Mega::VARIANTS {
            let s = format!("prefetch{}", m.suffix());
            assert_eq!(Mega::parse_suffix(&s), Some(("prefetch", m)), "{s}");
        }
        assert_eq!(Mega::parse_suffix("prefetch"), Some(("prefetch", Mega::Off)));
        for bad in ["prefetch+mega", "prefetch+mega0", "prefetch+mega3", "prefetch+megapf", "prefetch+mega1p"] {
            assert_eq!(Mega::parse_suffix(bad), None, "{bad}");
        }
        assert_eq!(Mega::VARIANTS[0].entry(), Some("qwen_decode_layers"));
        assert_eq!(Mega::VARIANTS[3].entry(), Some("qwen_decode_layers_2"));
        assert_eq!(Mega::Off.entry(), None);
    }

    #[test]
    fn only_whole_small_tensor_plan_steps_run_as_the_megakernel() {
        let m = Mega::VARIANTS[1];
        assert!(m.applies(KernelPlan::Tensor, 1, true));
        assert!(m.applies(KernelPlan::Tensor, MEGA_MAX_ROWS, true));
        assert!(!m.applies(KernelPlan::Tensor, MEGA_MAX_ROWS + 1, true), "past one fragment");
        assert!(!m.applies(KernelPlan::Tensor, 0, true));
        assert!(!m.applies(KernelPlan::Tensor, 1, false), "a piecewise graph launches attention eagerly");
        assert!(!m.applies(KernelPlan::Fused, 1, true), "the megakernel runs the tensor plan's bodies");
        assert!(!Mega::Off.applies(KernelPlan::Tensor, 1, true));
    }
}
