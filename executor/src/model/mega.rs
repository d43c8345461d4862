//! The decode megakernel ([`Mega`], `executor/kernels/qwen_mega.cu`): at most
//! [`MEGA_MAX_ROWS`] padded rows, every decoder layer runs in one persistent launch whose
//! blocks meet at grid barriers between phases, instead of six to nine launches per layer.
//! Each phase runs the body of the kernel the tensor plan launches for it, so the values
//! are the launch-per-op plan's bit for bit. The products read their weights from shared
//! memory, where bulk copies put them one product ahead, so the memory keeps streaming
//! through the barriers, RoPE and attention instead of ramping up once per launch (device
//! log run 25: a batch-1 product that moves 4-13 MB reaches only 0.9-1.7 TB/s even when it
//! only reads).
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

/// Padded rows up to which the megakernel runs a step (`MEGA_MAX_ROWS` in qwen_mega.cu):
/// every product stages its x rows in region Z, which holds this many rows of the widest
/// x row next to the staged weights (sm_90's 227 KiB a block: 8 rows fit for Qwen3-0.6B).
pub const MEGA_MAX_ROWS: usize = 8;

/// Device pointers per layer in the megakernel's table (`MEGA_PTRS` in qwen_mega.cu).
pub const MEGA_PTRS: usize = 10;

/// Whether small steps run as one persistent launch ([`super::gpu::Launches::mega`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mega {
    /// A launch per op.
    Off,
    /// `qwen_decode_layers`: one block per SM, the products' weights staged in shared
    /// memory one product ahead.
    On,
    /// [`Mega::On`] through `qwen_decode_layers_compact`: attention's K and V rows staged in
    /// shared memory and summed by loops (`att_tiles_compact`: fewer instructions a layer
    /// to fetch; the same values).
    Compact,
    /// [`Mega::Compact`] with the weight copies marked evict-first in L2 (`MEGA_EVICT`):
    /// the 1.2 GB a step streams through the 50 MB L2 stops pushing out the kernel's code,
    /// the KV cache and the activations (device log run 36: the timeline 1.646 -> 1.513 ms
    /// a step at batch 1 on the H100). The same values.
    CompactEvict,
    /// [`Mega::CompactEvict`] with a copy warp (`MEGA_COPYWARP`): warp 7 issues the weight
    /// copies and takes no share of the x staging, so thread 0's barrier arrivals and x
    /// loads no longer queue behind the copies it issued (device log run 39). The same
    /// values.
    CompactCopyWarp,
    /// [`Mega::CompactCopyWarp`] with each attention warp's first tile of K rows requested
    /// before the item's RoPE (`MEGA_EARLYK`; all but the row of the item's own token,
    /// which RoPE writes; the tile's V rows asked into L2): the rows' round trip (2.0 us after RoPE's 2.9 in device log run
    /// 39) overlaps RoPE. The same values.
    CompactEarlyK,
    /// Timing probe (`gpu bench-qwen` only; the values are not the model's): the same
    /// launch with its parts left out (`MEGA_BARRIERS` .. `MEGA_COMPUTE` in qwen_mega.cu),
    /// so one device call splits the step's time between barriers, weight streaming,
    /// products, and RoPE plus attention.
    Probe(MegaProbe),
}

/// What a [`Mega::Probe`] launch keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MegaProbe {
    /// The grid barriers alone.
    Barriers,
    /// The barriers, the weight copies and their waits.
    Stream,
    /// All of that and the products (no RoPE / KV write, no attention).
    Products,
    /// The weight copies and their waits without the barriers: the stream's own rate.
    Copies,
    /// Everything but the weight copies (the products read stale shared memory): the
    /// phases' time without the stream's traffic.
    Compute,
    /// The full launch (the model's values) with every block stamping each phase's end
    /// ([`super::mega_timeline`]): where a step's time goes, phase by phase.
    Timeline,
    /// The timeline with thread 0 napping between its polls of a grid barrier
    /// (`MEGA_NAP`): whether 132 pollers of one word slow the blocks that work.
    TimelineNap,
    /// The timeline with every layer's attention phase run twice (`MEGA_TWICE`; the same
    /// values): the first pass's time next to a second's, whose code and data the first
    /// brought in.
    TimelineTwice,
    /// The timeline with the weight copies marked evict-first in L2 (`MEGA_EVICT`; the
    /// same values): whether the weight stream pushing the kernel's code, the KV cache and
    /// the activations out of L2 is what slows the phases.
    TimelineEvict,
    /// The timeline of [`Mega::Compact`]'s entry.
    TimelineCompact,
    /// The timeline of [`Mega::CompactEvict`].
    TimelineCompactEvict,
    /// The timeline of [`Mega::CompactEvict`] with the grid barriers' arrival and polls by
    /// thread 32 instead of thread 0, which issues the weight copies (`MEGA_POLL1`; the same
    /// values): whether a barrier waits for its block's copies in flight.
    TimelinePoll,
    /// The timeline of [`Mega::CompactEvict`] with stamps inside the compact attention
    /// tiles (`MEGA_TILES`; [`super::mega_timeline::TILE_PHASES`]): where the tiles' time
    /// goes.
    TimelineTiles,
    /// The timeline of [`Mega::CompactCopyWarp`].
    TimelineCopyWarp,
    /// [`MegaProbe::TimelineTiles`]' stamps inside the tiles with the copy warp: whether
    /// attention's K and V round trips queued behind warp 0's copies.
    TimelineTilesCopyWarp,
    /// The timeline of [`Mega::CompactEarlyK`].
    TimelineEarlyK,
    /// [`MegaProbe::TimelineTilesCopyWarp`]'s stamps with [`Mega::CompactEarlyK`].
    TimelineTilesEarlyK,
}

impl MegaProbe {
    const ALL: [MegaProbe; 17] = [
        MegaProbe::Barriers,
        MegaProbe::Stream,
        MegaProbe::Products,
        MegaProbe::Copies,
        MegaProbe::Compute,
        MegaProbe::Timeline,
        MegaProbe::TimelineNap,
        MegaProbe::TimelineTwice,
        MegaProbe::TimelineEvict,
        MegaProbe::TimelineCompact,
        MegaProbe::TimelineCompactEvict,
        MegaProbe::TimelinePoll,
        MegaProbe::TimelineTiles,
        MegaProbe::TimelineCopyWarp,
        MegaProbe::TimelineTilesCopyWarp,
        MegaProbe::TimelineEarlyK,
        MegaProbe::TimelineTilesEarlyK,
    ];

    fn name(self) -> &'static str {
        match self {
            MegaProbe::Barriers => "barriers",
            MegaProbe::Stream => "stream",
            MegaProbe::Products => "products",
            MegaProbe::Copies => "copies",
            MegaProbe::Compute => "compute",
            MegaProbe::Timeline => "timeline",
            MegaProbe::TimelineNap => "timeline-nap",
            MegaProbe::TimelineTwice => "timeline-twice",
            MegaProbe::TimelineEvict => "timeline-evict",
            MegaProbe::TimelineCompact => "timeline-compact",
            MegaProbe::TimelineCompactEvict => "timeline-compact-evict",
            MegaProbe::TimelinePoll => "timeline-poll",
            MegaProbe::TimelineTiles => "timeline-tiles",
            MegaProbe::TimelineCopyWarp => "timeline-copywarp",
            MegaProbe::TimelineTilesCopyWarp => "timeline-tiles-copywarp",
            MegaProbe::TimelineEarlyK => "timeline-earlyk",
            MegaProbe::TimelineTilesEarlyK => "timeline-tiles-earlyk",
        }
    }

    /// Whether the probe stamps the timeline (every `timeline*` probe: all but the five
    /// that leave parts out).
    fn stamps(self) -> bool {
        !matches!(
            self,
            MegaProbe::Barriers | MegaProbe::Stream | MegaProbe::Products | MegaProbe::Copies | MegaProbe::Compute
        )
    }

    /// Whether the probe runs the compact entry (every timeline since `timeline-compact`;
    /// the part probes and the first four timelines run `qwen_decode_layers`).
    fn compact(self) -> bool {
        self.stamps()
            && !matches!(
                self,
                MegaProbe::Timeline | MegaProbe::TimelineNap | MegaProbe::TimelineTwice | MegaProbe::TimelineEvict
            )
    }

    /// Whether the probe stamps inside the compact tiles (`MEGA_TILES`: attention's stamps
    /// read as [`super::mega_timeline::TILE_PHASES`]).
    pub fn tile_stamps(self) -> bool {
        matches!(self, MegaProbe::TimelineTiles | MegaProbe::TimelineTilesCopyWarp | MegaProbe::TimelineTilesEarlyK)
    }
}

/// [`super::gpu::Launches::mega`] by default: the compact entry with evict-first weight
/// copies. Device log run 37 (H100, one call): 1.082 / 1.100 / 1.159 / 1.241 ms a step at
/// batch 1 / 2 / 4 / 8 against 1.362 / 1.347 / 1.364 / 1.403 launching per op (0.79-0.88x);
/// `qwen_decode_layers` 1.626-1.804. Where the module is not loaded or its shared memory
/// does not fit ([`shape`]), a model launches per op ([`available`]).
pub const MEGA: Mega = Mega::CompactEvict;

/// The megakernel's entry point: attention half a tile's K and V rows at a time.
pub const MEGA_ENTRY: &str = "qwen_decode_layers";
/// The entry with [`super::gpu::Launches::whole_tiles`]: attention with a whole tile's K and
/// V rows in flight (more registers).
pub const MEGA_ENTRY_WHOLE: &str = "qwen_decode_layers_whole";

/// The entry with [`Mega::Compact`]: attention's rows staged in shared memory, summed by
/// loops.
pub const MEGA_ENTRY_COMPACT: &str = "qwen_decode_layers_compact";

/// Shared memory one warp of the compact entry stages a tile's rows in
/// (`ATT_COMPACT_WARP_BYTES` in qwen.cu: 32 rows of 128 + 8 bf16, then 32 slots).
pub const ATT_COMPACT_WARP_BYTES: usize = 32 * (128 + 8) * 2 + 32 * 8;

/// The entry point for `mega` with (`true`) or without whole-tile attention (the compact
/// entry has its own tiles).
pub fn entry(mega: Mega, whole_tiles: bool) -> &'static str {
    let compact = match mega {
        Mega::Compact | Mega::CompactEvict | Mega::CompactCopyWarp | Mega::CompactEarlyK => true,
        Mega::Probe(p) => p.compact(),
        Mega::Off | Mega::On => false,
    };
    if compact {
        MEGA_ENTRY_COMPACT
    } else if whole_tiles {
        MEGA_ENTRY_WHOLE
    } else {
        MEGA_ENTRY
    }
}

impl Mega {
    /// Whether it is on.
    pub fn on(self) -> bool {
        self != Mega::Off
    }

    /// The kernel's `mode` argument (`MEGA_FULL` .. `MEGA_COMPUTE` in qwen_mega.cu).
    pub fn mode(self) -> i32 {
        match self {
            Mega::Off | Mega::On | Mega::Compact | Mega::Probe(MegaProbe::Timeline | MegaProbe::TimelineCompact) => 0,
            Mega::Probe(MegaProbe::Barriers) => 1,
            Mega::Probe(MegaProbe::Stream) => 2,
            Mega::Probe(MegaProbe::Products) => 3,
            Mega::Probe(MegaProbe::Copies) => 4,
            Mega::Probe(MegaProbe::Compute) => 5,
            Mega::Probe(MegaProbe::TimelineNap) => 8,
            Mega::Probe(MegaProbe::TimelineTwice) => 16,
            Mega::CompactEvict | Mega::Probe(MegaProbe::TimelineEvict | MegaProbe::TimelineCompactEvict) => 32,
            Mega::Probe(MegaProbe::TimelinePoll) => 32 | 64,
            Mega::Probe(MegaProbe::TimelineTiles) => 32 | 128,
            Mega::CompactCopyWarp | Mega::Probe(MegaProbe::TimelineCopyWarp) => 32 | 256,
            Mega::Probe(MegaProbe::TimelineTilesCopyWarp) => 32 | 128 | 256,
            Mega::CompactEarlyK | Mega::Probe(MegaProbe::TimelineEarlyK) => 32 | 256 | 512,
            Mega::Probe(MegaProbe::TimelineTilesEarlyK) => 32 | 128 | 256 | 512,
        }
    }

    /// Whether the launch stamps the timeline ([`super::mega_timeline`]).
    pub fn stamps(self) -> bool {
        matches!(self, Mega::Probe(p) if p.stamps())
    }

    /// Whether this is a timing probe, whose values are not the model's.
    pub fn is_probe(self) -> bool {
        matches!(self, Mega::Probe(_))
    }

    /// `+mega` or `+mega:PROBE` (nothing when off).
    pub fn suffix(self) -> String {
        match self {
            Mega::Off => String::new(),
            Mega::On => "+mega".into(),
            Mega::Compact => "+mega-compact".into(),
            Mega::CompactEvict => "+mega-compact-evict".into(),
            Mega::CompactCopyWarp => "+mega-compact-copywarp".into(),
            Mega::CompactEarlyK => "+mega-compact-earlyk".into(),
            Mega::Probe(p) => format!("+mega:{}", p.name()),
        }
    }

    /// Splits a trailing `+mega` or `+mega:PROBE` off `s`; an unknown probe name is left in
    /// place (the caller's parse then rejects it).
    pub fn parse_suffix(s: &str) -> (&str, Mega) {
        if let Some(rest) = s.strip_suffix("+mega") {
            return (rest, Mega::On);
        }
        if let Some(rest) = s.strip_suffix("+mega-compact") {
            return (rest, Mega::Compact);
        }
        if let Some(rest) = s.strip_suffix("+mega-compact-evict") {
            return (rest, Mega::CompactEvict);
        }
        if let Some(rest) = s.strip_suffix("+mega-compact-copywarp") {
            return (rest, Mega::CompactCopyWarp);
        }
        if let Some(rest) = s.strip_suffix("+mega-compact-earlyk") {
            return (rest, Mega::CompactEarlyK);
        }
        for p in MegaProbe::ALL {
            if let Some(rest) = s.strip_suffix(&format!("+mega:{}", p.name())) {
                return (rest, Mega::Probe(p));
            }
        }
        (s, Mega::Off)
    }

    /// Whether a step of `rows` padded rows under `plan` runs as the megakernel (`whole`:
    /// the step's launches run together, not a piecewise graph with eager attention).
    pub fn applies(self, plan: KernelPlan, rows: usize, whole: bool) -> bool {
        self.on() && whole && plan == KernelPlan::Tensor && (1..=MEGA_MAX_ROWS).contains(&rows)
    }
}

/// The megakernel's dynamic shared memory of a block (bytes): region X holds the block's
/// tiles of qkv or gate_up, region Y of o_proj or down_proj (`qwen_mega.cu`
/// `stage_product`: a tile is 16 weight rows of qkv, 8 gate and 8 up rows of gate_up, 8 rows
/// of o_proj and down_proj; block b takes tiles b, b + blocks, ...), region Z the product's
/// x rows (`stage_x`: [`MEGA_MAX_ROWS`] x rows at the widest stride of
/// `xs_stride`), the norm weights and the residual slices o_proj and down_proj add into;
/// while attention runs, region Z is its scratch
/// ([`ATTENTION_SCRATCH`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regions {
    pub x: usize,
    pub y: usize,
    pub z: usize,
}

impl Regions {
    /// Where region Y starts (X before it; every region starts on 128 bytes).
    pub fn y_offset(&self) -> usize {
        self.x.div_ceil(128) * 128
    }

    /// Where region Z starts.
    pub fn z_offset(&self) -> usize {
        self.y_offset() + self.y.div_ceil(128) * 128
    }

    /// The dynamic shared memory of a block.
    pub fn total(&self) -> usize {
        self.z_offset() + self.z
    }
}

/// `xs_stride` of qwen.cu: a staged x row of `k` elements padded so that a quarter warp's
/// 16-byte reads of two neighbouring rows fall in disjoint banks.
pub fn xs_stride(k: usize) -> usize {
    k + if k.is_multiple_of(64) { 32 } else { 0 }
}

/// Bytes of attention scratch the megakernel lends from region Z while attention runs
/// (`attention_body` with EXT in qwen.cu): two items a block (8 warps, ATT_WARPS 4 each),
/// each `ATT_SCRATCH(2)` floats: q `[2][256]`, the warps' maxima and sums `[2][4]` each and
/// accumulators `[2][4][256]`.
pub const ATTENTION_SCRATCH: usize = 2 * (2 * 256 + 2 * 2 * 4 + 2 * 4 * 256) * 4;

/// [`Regions`] of model `c` for a grid of `blocks`.
pub fn regions(c: &super::ModelConfig, blocks: usize) -> Regions {
    let per_block = |tiles: usize, rows: usize, k: usize| tiles.div_ceil(blocks.max(1)) * rows * k * 2;
    let n_qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
    let k_o = c.num_heads * c.head_dim;
    let x = per_block(n_qkv.div_ceil(16), 16, c.hidden_size).max(per_block(
        c.intermediate_size.div_ceil(8),
        16,
        c.hidden_size,
    ));
    let y =
        per_block(c.hidden_size.div_ceil(8), 8, k_o).max(per_block(c.hidden_size.div_ceil(8), 8, c.intermediate_size));
    // The widest padded x row (a shorter row may pad past a longer unpadded one), then one
    // row of norm weights (hidden_size wide).
    let s_max = [c.hidden_size, c.intermediate_size, k_o].into_iter().map(xs_stride).max().unwrap_or(0);
    // ... then the residual slices the block's o_proj / down_proj tiles add into (8
    // columns a tile, `stage_x` RES).
    let res = MEGA_MAX_ROWS * c.hidden_size.div_ceil(8).div_ceil(blocks.max(1)) * 8 * 2;
    let z = MEGA_MAX_ROWS * s_max * 2 + c.hidden_size * 2 + res;
    // Region X also holds the compact entry's attention rows (free between qkv's tiles and
    // gate_up's copies): a tile of each of the block's warps.
    let x = x.max(MMA_SPLIT * ATT_COMPACT_WARP_BYTES);
    Regions { x, y, z: z.max(ATTENTION_SCRATCH) }
}

/// The megakernel's device state: the layer table, the grid barrier's two words and the
/// timeline's stamps (`+mega:timeline`; one pair per SM, layer and event).
pub struct MegaState {
    pub table: CudaSlice<u64>,
    pub bar: CudaSlice<u32>,
    pub clock: CudaSlice<u64>,
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
        let stamps = dev.info.sm_count.max(1) as usize * layers.len().max(1) * 2 * super::mega_timeline::EVENTS;
        Ok(MegaState { table: st.clone_htod(&ptrs)?, bar: st.alloc_zeros(2)?, clock: st.alloc_zeros(stamps)? })
    }
}

impl GpuModel {
    /// Enqueues the megakernel for every layer of the step (in place of the layers' ops;
    /// [`GpuModel::mega_step`] says when). Reads the residual stream the embedding wrote and
    /// leaves in it what the last down_proj added, as the folded launch-per-op plan does.
    pub(super) fn launch_mega(&mut self, dev: &Device, b: &mut DeviceBuffers) -> Result<()> {
        let c = &self.cfg;
        let threads = 32 * MMA_SPLIT as u32;
        let name = entry(self.launches.mega, self.launches.whole_tiles);
        let shape = shape(dev, c, name)?;
        let f = dev.function(name)?;
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
        l.arg(&i(c.head_dim)).arg(&qk).arg(&c.rms_norm_eps).arg(&(self.kv.slots() as i64)).arg(&i(shape.region_x));
        l.arg(&i(shape.region_z));
        l.out(&mut self.mega.bar).out(&mut b.counters).arg(&self.launches.mega.mode());
        if self.launches.mega.stamps() {
            l.out(&mut self.mega.clock);
        } else {
            l.arg(&0u64);
        }
        tracing::trace!(blocks = shape.blocks, shared = shape.shared, rows = self.grid_rows, "megakernel launch");
        let lc = LaunchConfig {
            grid_dim: (shape.blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: shape.shared as u32,
        };
        // SAFETY: the arguments follow MEGA_ARGS in qwen_mega.cu; the table holds every
        // layer's live buffers; the grid is what the device holds at once (one block per
        // SM, checked by the occupancy API with this shared memory), so the grid barriers
        // open; the staged regions fit the shared memory given; rows, slots and positions
        // are bounded as for the per-op kernels (the same bodies).
        unsafe { l.launch(f, lc, false) }?;
        self.mega_launches += 1;
        Ok(())
    }
}

impl GpuModel {
    /// The phases of the last `+mega:timeline` launch ([`super::mega_timeline`]); an error
    /// when no such launch ran.
    pub fn mega_timeline(&self, dev: &Device) -> Result<super::mega_timeline::Timeline> {
        let raw = dev.stream.clone_dtoh(&self.mega.clock)?;
        super::mega_timeline::summarize(&raw, dev.info.sm_count.max(1) as usize, self.cfg.num_layers)
    }
}

/// `launches` as model `c` can run them on `dev`: unchanged, or with the megakernel off (and
/// an info event saying why) when its module is not loaded or its shared memory does not fit
/// ([`shape`]). For the default; a megakernel asked for by name
/// ([`crate::qwen_device::QwenDevice::set_launches`]) fails at its launch instead.
pub fn available(dev: &Device, c: &super::ModelConfig, launches: super::gpu::Launches) -> super::gpu::Launches {
    if !launches.mega.on() {
        return launches;
    }
    match shape(dev, c, entry(launches.mega, launches.whole_tiles)) {
        Ok(_) => launches,
        Err(e) => {
            tracing::info!(reason = %e, "decode megakernel unavailable: small steps launch per op");
            super::gpu::Launches { mega: Mega::Off, ..launches }
        }
    }
}

/// Loads the megakernel's module (`kernels::MEGA_MODULE`, compiled for sm_90 features) into
/// `dev` when it can: its `(name, CUBIN sha256)` for a trace header whose run launched it. A
/// device or toolkit that cannot build it keeps launching per op ([`available`]), with an
/// info event saying why.
pub fn load_module(dev: &mut Device) -> Option<(String, String)> {
    match dev.load_extra(&[crate::kernels::MEGA_MODULE]) {
        Ok(m) => m.first().map(|m| (m.name.to_string(), m.sha256.clone())),
        Err(e) => {
            tracing::info!(reason = %e, "decode megakernel module not loaded: small steps launch per op");
            None
        }
    }
}

/// A megakernel launch's shape: blocks (one per SM), region X's bytes and the dynamic
/// shared memory (X + Y).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MegaShape {
    pub blocks: u32,
    pub region_x: usize,
    /// Where region Z starts.
    pub region_z: usize,
    pub shared: usize,
}

/// The launch shape of the megakernel for model `c` on `dev` (its shared-memory attribute
/// set): an error when it is not loaded, when the staged weights do not fit a block's
/// shared memory, or when no block fits an SM (a grid that cannot be resident would never
/// pass its first barrier).
pub fn shape(dev: &Device, c: &super::ModelConfig, name: &str) -> Result<MegaShape> {
    let f = dev.function(name).map_err(|_| {
        ExecError::Input(format!(
            "launches +mega need the qwen_mega module: load it with Device::load_extra(&[kernels::MEGA_MODULE]) ({name} is not loaded)"
        ))
    })?;
    let blocks = dev.info.sm_count.max(1) as usize;
    let r = regions(c, blocks);
    let shared = r.total();
    use cudarc::driver::sys::CUfunction_attribute as A;
    let fixed = f.get_attribute(A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)? as usize;
    if shared + fixed > dev.shared_optin() {
        return Err(ExecError::Input(format!(
            "--launches +mega: the staged weights need {shared} bytes of shared memory a block (+ {fixed} static), the device allows {}",
            dev.shared_optin()
        )));
    }
    f.set_attribute(A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32)?;
    let per_sm = f.occupancy_max_active_blocks_per_multiprocessor(32 * MMA_SPLIT as u32, shared, None)?;
    if per_sm < 1 {
        return Err(ExecError::Input(format!("{name}: no block fits an SM of this device")));
    }
    Ok(MegaShape { blocks: blocks as u32, region_x: r.y_offset(), region_z: r.z_offset(), shared })
}

/// `entry: G blocks, R registers, L bytes local, S bytes shared` for the benchmark's log
/// (`None` when off).
pub fn describe(dev: &Device, c: &super::ModelConfig, l: super::gpu::Launches) -> Result<Option<String>> {
    if !l.mega.on() {
        return Ok(None);
    }
    let name = entry(l.mega, l.whole_tiles);
    let sh = shape(dev, c, name)?;
    let f = dev.function(name)?;
    use cudarc::driver::sys::CUfunction_attribute as A;
    let regs = f.get_attribute(A::CU_FUNC_ATTRIBUTE_NUM_REGS)?;
    let local = f.get_attribute(A::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?;
    let fixed = f.get_attribute(A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?;
    Ok(Some(format!(
        "megakernel {name}: {} blocks of {} threads, {regs} registers, {local} bytes local, {} + {fixed} bytes shared a block (staged weights + static)",
        sh.blocks,
        32 * MMA_SPLIT,
        sh.shared
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suffix_round_trips() {
        assert_eq!(Mega::parse_suffix("prefetch+mega"), ("prefetch", Mega::On));
        assert_eq!(Mega::parse_suffix("prefetch+mega-compact"), ("prefetch", Mega::Compact));
        assert_eq!(format!("prefetch{}", Mega::Compact.suffix()), "prefetch+mega-compact");
        assert_eq!(entry(Mega::Compact, false), MEGA_ENTRY_COMPACT);
        assert_eq!(entry(Mega::Probe(MegaProbe::TimelineCompact), false), MEGA_ENTRY_COMPACT);
        assert_eq!(entry(Mega::On, true), MEGA_ENTRY_WHOLE);
        assert_eq!(entry(Mega::Probe(MegaProbe::Timeline), false), MEGA_ENTRY);
        for p in [MegaProbe::TimelineNap, MegaProbe::TimelineTwice, MegaProbe::TimelineEvict, MegaProbe::Barriers] {
            assert_eq!(entry(Mega::Probe(p), false), MEGA_ENTRY, "{}", p.name());
        }
        assert_eq!(Mega::parse_suffix("prefetch"), ("prefetch", Mega::Off));
        assert_eq!(format!("prefetch{}", Mega::On.suffix()), "prefetch+mega");
        assert_eq!(Mega::Off.suffix(), "");
        for p in MegaProbe::ALL {
            let m = Mega::Probe(p);
            let s = format!("prefetch{}", m.suffix());
            assert_eq!(Mega::parse_suffix(&s), ("prefetch", m), "{s}");
            assert!(m.on() && m.is_probe());
        }
        assert_eq!(Mega::parse_suffix("prefetch+mega:nope"), ("prefetch+mega:nope", Mega::Off));
        let modes: Vec<i32> = [Mega::On, Mega::Probe(MegaProbe::Barriers), Mega::Probe(MegaProbe::Stream)]
            .into_iter()
            .chain([Mega::Probe(MegaProbe::Products), Mega::Probe(MegaProbe::Copies), Mega::Probe(MegaProbe::Compute)])
            .chain([Mega::Probe(MegaProbe::Timeline), Mega::Probe(MegaProbe::TimelineNap)])
            .chain([Mega::Probe(MegaProbe::TimelineTwice), Mega::Probe(MegaProbe::TimelineEvict)])
            .chain([Mega::Compact, Mega::Probe(MegaProbe::TimelineCompact)])
            .chain([Mega::CompactEvict, Mega::Probe(MegaProbe::TimelineCompactEvict)])
            .chain([Mega::Probe(MegaProbe::TimelinePoll), Mega::Probe(MegaProbe::TimelineTiles)])
            .chain([Mega::CompactCopyWarp, Mega::Probe(MegaProbe::TimelineCopyWarp)])
            .chain([Mega::Probe(MegaProbe::TimelineTilesCopyWarp)])
            .chain([Mega::CompactEarlyK, Mega::Probe(MegaProbe::TimelineEarlyK)])
            .chain([Mega::Probe(MegaProbe::TimelineTilesEarlyK)])
            .map(Mega::mode)
            .collect();
        assert_eq!(
            modes,
            [0, 1, 2, 3, 4, 5, 0, 8, 16, 32, 0, 0, 32, 32, 96, 160, 288, 288, 416, 800, 800, 928],
            "the kernel's MEGA_FULL .. MEGA_COMPUTE; the timeline runs MEGA_FULL, with MEGA_NAP, MEGA_TWICE or MEGA_EVICT"
        );
        assert!(!Mega::On.is_probe());
        assert_eq!(Mega::parse_suffix("prefetch+mega-compact-evict"), ("prefetch", Mega::CompactEvict));
        assert_eq!(entry(Mega::CompactEvict, false), MEGA_ENTRY_COMPACT);
        assert_eq!(entry(Mega::Probe(MegaProbe::TimelineCompactEvict), false), MEGA_ENTRY_COMPACT);
        assert_eq!(entry(Mega::Probe(MegaProbe::TimelinePoll), false), MEGA_ENTRY_COMPACT);
        assert_eq!(entry(Mega::Probe(MegaProbe::TimelineTiles), false), MEGA_ENTRY_COMPACT);
        assert_eq!(Mega::parse_suffix("prefetch+mega-compact-copywarp"), ("prefetch", Mega::CompactCopyWarp));
        assert_eq!(entry(Mega::CompactCopyWarp, false), MEGA_ENTRY_COMPACT);
        assert_eq!(entry(Mega::Probe(MegaProbe::TimelineCopyWarp), false), MEGA_ENTRY_COMPACT);
        assert_eq!(entry(Mega::Probe(MegaProbe::TimelineTilesCopyWarp), false), MEGA_ENTRY_COMPACT);
        for p in MegaProbe::ALL {
            // The tile stamps are exactly the MEGA_TILES flag (128) of the mode.
            assert_eq!(p.tile_stamps(), Mega::Probe(p).mode() & 128 != 0, "{}", p.name());
        }
        assert_eq!(Mega::parse_suffix("prefetch+mega-compact-earlyk"), ("prefetch", Mega::CompactEarlyK));
        assert_eq!(entry(Mega::CompactEarlyK, false), MEGA_ENTRY_COMPACT);
        assert_eq!(entry(Mega::Probe(MegaProbe::TimelineTilesEarlyK), false), MEGA_ENTRY_COMPACT);
        for m in [Mega::Off, Mega::On, Mega::Compact, Mega::CompactEvict, Mega::CompactCopyWarp, Mega::CompactEarlyK] {
            assert!(!m.is_probe() && !m.stamps(), "{m:?}");
        }
    }

    /// Every `timeline*` probe stamps the timeline and no other launch does (run 36's
    /// `timeline-compact` left it unstamped).
    #[test]
    fn exactly_the_timeline_probes_stamp() {
        for p in MegaProbe::ALL {
            assert_eq!(Mega::Probe(p).stamps(), p.name().starts_with("timeline"), "{}", p.name());
        }
    }

    #[test]
    fn only_whole_small_tensor_plan_steps_run_as_the_megakernel() {
        let m = Mega::On;
        assert!(m.applies(KernelPlan::Tensor, 1, true));
        assert!(m.applies(KernelPlan::Tensor, MEGA_MAX_ROWS, true));
        assert!(!m.applies(KernelPlan::Tensor, MEGA_MAX_ROWS + 1, true), "past one fragment");
        assert!(!m.applies(KernelPlan::Tensor, 0, true));
        assert!(!m.applies(KernelPlan::Tensor, 1, false), "a piecewise graph launches attention eagerly");
        assert!(!m.applies(KernelPlan::Fused, 1, true), "the megakernel runs the tensor plan's bodies");
        assert!(!Mega::Off.applies(KernelPlan::Tensor, 1, true));
    }

    #[test]
    fn qwen3_0_6b_stages_fit_a_hopper_block() {
        // 132 SMs (H100 SXM): gate_up's 384 tiles are 3 a block (96 KiB), down_proj's 128
        // one (8 rows x 3,072 x 2 = 48 KiB).
        let c = super::super::ModelConfig::qwen3_0_6b();
        let r = regions(&c, 132);
        assert_eq!(r.x, 3 * 16 * 1024 * 2);
        assert_eq!(r.y, 8 * 3072 * 2);
        // 8 rows of 3,072 + 32 (padding) and one row of norm weights (hidden 1,024).
        assert_eq!(r.z, 8 * 3104 * 2 + 1024 * 2 + 8 * 8 * 2);
        assert_eq!(r.z_offset(), r.x + r.y);
        assert!(
            r.total() + 27 * 1024 <= 232_448,
            "staged weights, x rows and static shared memory must fit sm_90's opt-in"
        );
        // Fewer SMs, more tiles a block: 2 SMs would need far more than a block has.
        assert_eq!(regions(&c, 2).x, 192 * 16 * 1024 * 2);
        // Qwen3-0.6B's gate_up tiles need more of X than the compact entry's attention
        // rows (8 warps x 8,960 bytes); the tiny model's need less, so its X is those rows.
        assert!(r.x > MMA_SPLIT * ATT_COMPACT_WARP_BYTES);
        // The tiny model fits anywhere; its region Z is attention's scratch, larger than
        // its x rows.
        let t = regions(&super::super::weights::tiny_config(), 1);
        assert_eq!(t.x, MMA_SPLIT * ATT_COMPACT_WARP_BYTES, "{t:?}");
        assert!(t.total() + 27 * 1024 <= 232_448, "{t:?}");
        assert_eq!(t.z, ATTENTION_SCRATCH);
        assert_eq!((xs_stride(1024), xs_stride(96)), (1056, 96));
    }
}
