//! The forward pass's plan: which kernel entry point each [`Op`] launches and how
//! ([`KernelPlan`], [`Launches`], [`Tiling`], [`L2Stream`], [`l2_schedule`]). Every choice here
//! changes speed only: each entry sums in its plan's one order (the `qwen-kernels` GPU tests
//! run every plan and launch choice against the CPU twin). [`super::gpu::GpuModel`] launches
//! what the plan picks.

use cudarc::driver::{sys, CudaFunction, LaunchConfig};

use super::host::Op;
use super::kernels_ref::GemmOrder;
use super::mega::{Mega, MEGA};
use crate::device::Device;
use crate::error::Result;

/// Launch choices of the tensor plan that change speed only, never a bit: each picks
/// entry points of the same K order (the `qwen-kernels` GPU tests run every combination
/// against the twin), so `gpu bench-qwen --launches` can time them in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Launches {
    /// From [`MMA_STAGED_FROM_ROWS`] rows the input and post norms folded into the products
    /// (`qwen_gemm_mma_xs_norm_*`, `qwen_gemm_mma_resadd_s_2_1`) instead of launched.
    pub staged_norms: bool,
    /// At one row the products with 4 weight chunks in flight per warp: qkv
    /// (`qwen_gemm_mma_norm_p_2_1`: 16 columns per block, the weights requested before the
    /// row's sum of squares), o_proj and down_proj (`qwen_gemm_mma_resadd_s_1_1_4`).
    /// gate_up keeps `qwen_gemm_mma_norm_glu_1`: its prefetching form measured slower
    /// (device log run 23, H100: 13.50 against 9.22 us per launch) and was dropped.
    pub prefetch: bool,
    /// The tensor plan launched with programmatic stream serialization (as
    /// [`KernelPlan::FusedPdl`] launches the fused plan): each kernel may start while the one
    /// before it runs and waits (`griddepcontrol.wait`) before it reads what an earlier kernel
    /// wrote; the one-row products `*_pdl` (gate_up, and with [`Launches::prefetch`] qkv,
    /// o_proj and down_proj) first request their block's weight tile into L2, so each
    /// product's weight fetch overlaps the kernel before it.
    pub pdl: bool,
    /// From [`LEAN_ATTENTION_FROM_ROWS`] rows the GQA-pair attention with every K and V row
    /// of a tile requested at once (`qwen_attention_gqa2_whole`) instead of half a tile at a
    /// time (`qwen_attention_gqa2`).
    pub whole_tiles: bool,
    /// Cross-kernel weight streaming ([`L2Stream`]): a product's weights asked into L2 on a
    /// side stream while earlier kernels run (written after run 25).
    pub l2: L2Stream,
    /// Steps of at most [`super::mega::MEGA_MAX_ROWS`] rows as one persistent launch of every layer
    /// ([`Mega`], `executor/kernels/qwen_mega.cu`; the same bodies, so the same bits).
    pub mega: Mega,
}

/// Cross-kernel weight streaming: when a weight-reading launch (or the embedding) is
/// enqueued, the weights of the product `ahead` products later are asked into L2 by
/// `qwen_l2_prefetch` on a side stream, so the card's memory keeps streaming while the
/// kernels between run (at batch 1 a product alone reads its 4-13 MB at 0.9-1.7 TB/s of
/// 3.35, device log run 25's read floors), and that product reads from L2. A hint: it writes
/// nothing, so no value changes. At most [`L2_PREFETCH_CAP`] bytes of one tensor (the LM
/// head's first part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L2Stream {
    Off,
    /// One bulk prefetch per [`L2_CHUNK`] bytes (`cp.async.bulk.prefetch.L2`), `ahead` 1..=3.
    Bulk(u8),
    /// One `prefetch.global.L2` per 128-byte line, `ahead` 1..=3.
    Lines(u8),
}

impl L2Stream {
    /// Products ahead of the one launched whose weights are asked for (0: off).
    pub fn ahead(self) -> usize {
        match self {
            L2Stream::Off => 0,
            L2Stream::Bulk(a) | L2Stream::Lines(a) => usize::from(a),
        }
    }

    fn suffix(self) -> String {
        match self {
            L2Stream::Off => String::new(),
            L2Stream::Bulk(a) => format!("+bulk{a}"),
            L2Stream::Lines(a) => format!("+lines{a}"),
        }
    }

    fn parse_suffix(s: &str) -> Option<(&str, L2Stream)> {
        for (tag, make) in [("+bulk", L2Stream::Bulk as fn(u8) -> L2Stream), ("+lines", L2Stream::Lines)] {
            if let Some(i) = s.rfind(tag) {
                let a: u8 = s[i + tag.len()..].parse().ok()?;
                return (1..=3).contains(&a).then_some((&s[..i], make(a)));
            }
        }
        Some((s, L2Stream::Off))
    }
}

/// Bytes one thread of `qwen_l2_prefetch` asks for.
pub const L2_CHUNK: usize = 8192;

/// The most bytes of one tensor asked into L2 ahead (the LM head's 311 MB would flush
/// everything; its first part is read first).
pub const L2_PREFETCH_CAP: usize = 16 << 20;

/// [`Launches::l2`] by default: off until a device run times it.
pub const L2: L2Stream = L2Stream::Off;

impl Launches {
    /// What the forward pass launches unless told otherwise ([`STAGED_NORMS`], [`PREFETCH`]).
    pub const DEFAULT: Launches = Launches {
        staged_norms: STAGED_NORMS,
        prefetch: PREFETCH,
        pdl: PDL,
        whole_tiles: WHOLE_TILES,
        l2: L2,
        mega: MEGA,
    };
    /// Every combination of the four kernel choices, indexed by the bits staged 1, prefetch 2,
    /// pdl 4, whole tiles 8, with [`L2`] streaming and a launch per op (no megakernel: the
    /// GPU tests run each against the CPU twin, [`Launches::mega_variants`] the megakernels).
    pub const ALL: [Launches; 16] = {
        let mut all = [Launches {
            staged_norms: false,
            prefetch: false,
            pdl: false,
            whole_tiles: false,
            l2: L2,
            mega: Mega::Off,
        }; 16];
        let mut i = 0;
        while i < 16 {
            all[i] = Launches {
                staged_norms: i & 1 != 0,
                prefetch: i & 2 != 0,
                pdl: i & 4 != 0,
                whole_tiles: i & 8 != 0,
                l2: L2,
                mega: Mega::Off,
            };
            i += 1;
        }
        all
    };

    /// The default's choices, a launch per op, with every [`L2Stream`] mode (ahead 1..=3) in
    /// turn.
    pub fn l2_variants() -> Vec<Launches> {
        (1..=3u8)
            .flat_map(|a| [L2Stream::Bulk(a), L2Stream::Lines(a)])
            .map(|l2| Launches { l2, mega: Mega::Off, ..Launches::DEFAULT })
            .collect()
    }

    /// The default's choices with the megakernel ([`Mega::On`]), its attention half a tile
    /// or (`whole_tiles`) a whole tile at a time, and through the compact entry
    /// ([`Mega::Compact`], [`Mega::CompactEvict`], [`Mega::CompactCopyWarp`],
    /// [`Mega::CompactEarlyK`]).
    pub fn mega_variants() -> Vec<Launches> {
        vec![
            Launches { mega: Mega::On, ..Launches::DEFAULT },
            Launches { mega: Mega::On, whole_tiles: true, ..Launches::DEFAULT },
            Launches { mega: Mega::Compact, ..Launches::DEFAULT },
            Launches { mega: Mega::CompactEvict, ..Launches::DEFAULT },
            Launches { mega: Mega::CompactCopyWarp, ..Launches::DEFAULT },
            Launches { mega: Mega::CompactEarlyK, ..Launches::DEFAULT },
        ]
    }

    /// `base`, or the kernel choices that are on joined by `+` in the order `staged`,
    /// `prefetch`, `pdl`, `whole`: `staged+prefetch`, `prefetch+pdl`, ... ([`L2Stream`] not
    /// included: `Display` appends it as `+bulkN` / `+linesN`).
    pub fn kernels_name(self) -> &'static str {
        const NAMES: [&str; 16] = [
            "base",
            "staged",
            "prefetch",
            "staged+prefetch",
            "pdl",
            "staged+pdl",
            "prefetch+pdl",
            "staged+prefetch+pdl",
            "whole",
            "staged+whole",
            "prefetch+whole",
            "staged+prefetch+whole",
            "pdl+whole",
            "staged+pdl+whole",
            "prefetch+pdl+whole",
            "staged+prefetch+pdl+whole",
        ];
        let i = usize::from(self.staged_norms)
            | usize::from(self.prefetch) << 1
            | usize::from(self.pdl) << 2
            | usize::from(self.whole_tiles) << 3;
        NAMES[i]
    }
}

impl Default for Launches {
    fn default() -> Self {
        Launches::DEFAULT
    }
}

impl std::fmt::Display for Launches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.kernels_name(), self.l2.suffix(), self.mega.suffix())
    }
}

impl std::str::FromStr for Launches {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || {
            format!(
                "unknown launches {s:?} (expected default, base, or staged, prefetch, pdl, whole joined by + in that order, optionally followed by +bulkN or +linesN, N 1..=3, then by +mega, +mega-compact, +mega-compact-evict, +mega-compact-copywarp or a timing probe +mega:barriers|stream|products|copies|compute|timeline|timeline-nap|timeline-twice|timeline-evict|timeline-compact|timeline-compact-evict|timeline-poll|timeline-tiles|timeline-copywarp|timeline-tiles-copywarp)"
            )
        };
        let (rest, mega) = Mega::parse_suffix(s);
        let (kernels, l2) = L2Stream::parse_suffix(rest).ok_or_else(bad)?;
        let l = if kernels == "default" {
            // `default` keeps the default's megakernel unless a suffix names one.
            let mega = if mega.on() { mega } else { Launches::DEFAULT.mega };
            Some(Launches { mega, ..Launches::DEFAULT })
        } else {
            Launches::ALL.into_iter().find(|l| l.kernels_name() == kernels).map(|l| Launches { mega, ..l })
        };
        l.map(|l| Launches { l2, ..l }).ok_or_else(bad)
    }
}

/// The forward pass's kernel entry points. Every entry sums in the same order as the CPU
/// twin, so a plan never changes a bit (the `qwen-kernels` GPU tests check both plans
/// against the twin); `gpu bench-qwen --kernels fused,unfused` times both in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelPlan {
    /// Session 9's default (batch 1 1.37x and batch 64 3.2x faster than `Unfused` on the
    /// H100, bitwise equal), the CUDA-core order's fastest plan: the RMSNorm row loaded whole before any
    /// arithmetic (`qwen_rmsnorm_cached`); at one row the input and post norms folded into
    /// the products around them ([`KernelPlan::folds_norms`]); from two rows on the gate_up
    /// product with `qwen_silu_mul` as its epilogue; from [`TILED_FROM_ROWS`] rows on the
    /// register-tiled GEMMs (`qwen_gemm_t_*`).
    Fused,
    /// Session 7's kernels, kept as the same-run baseline: one launch per op (separate
    /// norms and SiLU-mul), every GEMM a warp walking all rows of its columns
    /// ([`gemm_tiling`]).
    Unfused,
    /// `Fused`'s kernels launched with programmatic dependent launch ([`super::launch`]):
    /// each kernel may start while the previous one finishes, a GEMM prefetching its first
    /// weight rows into L2 before it waits for the previous kernel's results. Same kernels,
    /// same values (device log run 14: bitwise equal to the twin; the batch-1 step 2.6 %
    /// faster, inside run-to-run spread, so not the default).
    #[serde(rename = "fused-pdl")]
    FusedPdl,
    /// The default where the model's products allow it ([`KernelPlan::for_model`]; device
    /// log, session 10, H100: batch 64 2.73 ms/step against `Fused`'s 4.21, batch 1 within
    /// 8 %). Every product on the tensor cores (`qwen_gemm_mma_*`: mma.sync m16n8k16 bf16 ->
    /// f32) in one K order for every row count (qwen.cu "TENSOR-CORE GEMMs"), so still
    /// batch invariant, and still matched bit for bit by the CPU twin, which models the
    /// Hopper block FMA exactly ([`super::tensor_core::TcModel::HOPPER`], fitted on the
    /// device). Its sums differ from the other plans' (another order, another rounding), so
    /// its logits do too: [`KernelPlan::gemm_order`] names the order a trace was made with.
    #[default]
    Tensor,
}

impl KernelPlan {
    /// The RMSNorm entry point.
    pub fn rmsnorm(self) -> &'static str {
        match self {
            KernelPlan::Unfused => "qwen_rmsnorm",
            KernelPlan::Fused | KernelPlan::FusedPdl | KernelPlan::Tensor => "qwen_rmsnorm_cached",
        }
    }

    /// Whether the plan can run `c`: the tensor-core products take K in chunks of 32, so
    /// the hidden, attention-output and intermediate sizes must be multiples of 32.
    pub fn check(self, c: &super::ModelConfig) -> Result<()> {
        let ks = [c.hidden_size, c.num_heads * c.head_dim, c.intermediate_size];
        if self == KernelPlan::Tensor && ks.iter().any(|k| k % 32 != 0) {
            return Err(crate::error::ExecError::Input(format!(
                "--kernels tensor needs the products' K (hidden {}, heads x head_dim {}, intermediate {}) to be multiples of 32",
                ks[0], ks[1], ks[2]
            )));
        }
        Ok(())
    }

    /// The plan a model runs unless told otherwise: the default ([`KernelPlan::Tensor`])
    /// where [`KernelPlan::check`] accepts the model, else [`KernelPlan::Fused`].
    pub fn for_model(c: &super::ModelConfig) -> KernelPlan {
        if KernelPlan::default().check(c).is_ok() {
            KernelPlan::default()
        } else {
            KernelPlan::Fused
        }
    }

    /// The order of the products' sums (the CPU twin's [`GemmOrder`]).
    pub fn gemm_order(self) -> GemmOrder {
        match self {
            KernelPlan::Tensor => GemmOrder::Tensor,
            _ => GemmOrder::Lanes,
        }
    }

    /// The gate_up product with the SiLU-mul epilogue at `rows` rows (writes `act`, and
    /// `SiluMul` launches nothing), or `None` for the plain product followed by
    /// `qwen_silu_mul`. (At one row the folded norm variant, `qwen_gemm_norm_glu_1_8`,
    /// takes its place.)
    pub fn fused_gate_up(self, rows: usize) -> Option<Tiling> {
        match self {
            KernelPlan::Unfused => None,
            KernelPlan::Tensor => Some(S_GLU_1),
            _ if rows >= TILED_FROM_ROWS => Some(Tiling::tiled("qwen_gemm_t_glu_8_8", 8, 8)),
            _ => Some(Tiling::walk("qwen_gemm_glu_4_4", 2)),
        }
    }

    /// The GEMM tiling of a product with `n` output columns at `rows` rows (the fused
    /// gate_up and the folded one-row products aside). `Unfused`: [`gemm_tiling`]. `Fused`,
    /// from `gpu bench-gemm` on the H100 (device log, session 9): from [`TILED_FROM_ROWS`]
    /// rows on the register-tiled `qwen_gemm_t_8_4` (at 64 rows 3.3-7x the walking
    /// tilings), and from 2 rows on for the wide products (N > 1,024: at 4 rows 1.1-1.4x);
    /// the narrow ones (o_proj, down_proj) keep x in flight with `qwen_gemm_2_1_8` below 8
    /// rows. All sum in qwen_gemm's order.
    pub fn gemm(self, rows: usize, n: usize) -> Tiling {
        match self {
            KernelPlan::Unfused => gemm_tiling(rows, n),
            KernelPlan::Tensor => mma_tiling(rows, n),
            _ if rows >= TILED_FROM_ROWS || (rows >= 2 && n > 1024) => Tiling::tiled("qwen_gemm_t_8_4", 8, 4),
            _ if rows >= 2 => Tiling::walk("qwen_gemm_2_1_8", 2),
            _ => gemm_tiling(rows, n),
        }
    }

    /// The attention entry point at `rows` rows: `qwen_attention` holds every K and V row
    /// of a tile in flight (222 registers: 2 blocks per SM, the least latency per block, as
    /// at batch 1); the fused plan switches to `qwen_attention_lean` (half a tile at a
    /// time, 128 registers: 4 blocks per SM) from [`LEAN_ATTENTION_FROM_ROWS`] rows, where
    /// the (token, head) items outnumber two blocks per SM. Same sums, same bits.
    pub fn attention(self, rows: usize) -> &'static str {
        match self {
            KernelPlan::Unfused => "qwen_attention",
            _ if rows >= LEAN_ATTENTION_FROM_ROWS => "qwen_attention_lean",
            _ => "qwen_attention",
        }
    }

    /// [`KernelPlan::attention`] for a model with `group` query heads per KV head, and the
    /// query heads each block item takes: the tensor plan, from
    /// [`LEAN_ATTENTION_FROM_ROWS`] rows and with an even group, launches
    /// `qwen_attention_gqa2` (two query heads of one KV head per item: each K and V row
    /// read once for both; same sums per head, so the same bits), or with
    /// [`Launches::whole_tiles`] `qwen_attention_gqa2_whole`.
    pub fn attention_for(self, rows: usize, group: usize, l: Launches) -> (&'static str, usize) {
        if self == KernelPlan::Tensor && rows >= LEAN_ATTENTION_FROM_ROWS && group.is_multiple_of(2) {
            (if l.whole_tiles { "qwen_attention_gqa2_whole" } else { "qwen_attention_gqa2" }, 2)
        } else {
            (self.attention(rows), 1)
        }
    }

    /// The norms folded into the products around them at `rows` rows: the input and post
    /// norms launch nothing, o_proj and down_proj add into the residual stream, qkv and
    /// gate_up normalise it as they read it, and the final norm adds nothing (the residual
    /// already holds the last sum). One row (the batch-1 decode): every product warp
    /// recomputes its row's sum of squares. The tensor plan also from
    /// [`MMA_STAGED_FROM_ROWS`] rows with [`Launches::staged_norms`]: each block normalises
    /// its staged rows once.
    pub fn folds_norms(self, rows: usize, l: Launches) -> bool {
        match self {
            KernelPlan::Unfused => false,
            KernelPlan::Tensor => rows == 1 || (l.staged_norms && rows >= MMA_STAGED_FROM_ROWS),
            _ => rows == 1,
        }
    }

    /// [`KernelPlan::folds_norms`] for a model of hidden size `hidden` on a device whose
    /// blocks may opt into `limit` bytes of shared memory (the staged norms need their
    /// block's rows to fit; where they do not, the norms launch as before).
    pub fn folds_norms_on(self, rows: usize, l: Launches, hidden: usize, limit: usize) -> bool {
        self.folds_norms(rows, l)
            && (rows == 1 || self.folded(Op::Qkv(0), rows, l).fitting(hidden, limit).shared_bytes(hidden) <= limit)
    }

    /// The folded product of `op` at `rows` rows ([`KernelPlan::folds_norms`]): qkv and
    /// gate_up normalise the residual stream as they read it, o_proj and down_proj add
    /// into it. [`Launches::prefetch`] picks the tensor plan's one-row entries.
    pub fn folded(self, op: Op, rows: usize, l: Launches) -> Tiling {
        let tensor = self == KernelPlan::Tensor;
        let staged = tensor && rows >= MMA_STAGED_FROM_ROWS;
        let wide = rows > 32;
        let prefetch = tensor && l.prefetch && rows < MMA_STAGED_FROM_ROWS;
        let pdl = tensor && l.pdl && rows < MMA_STAGED_FROM_ROWS;
        match op {
            Op::Qkv(_) if prefetch && pdl => Tiling::mma("qwen_gemm_mma_norm_p_2_1_pdl", 16, 16, true),
            Op::Qkv(_) if prefetch => Tiling::mma("qwen_gemm_mma_norm_p_2_1", 16, 16, true),
            Op::OProj(_) | Op::Down(_) if prefetch && pdl => {
                Tiling::mma("qwen_gemm_mma_resadd_s_1_1_4_pdl", 8, 16, true)
            }
            Op::OProj(_) | Op::Down(_) if prefetch => Tiling::mma("qwen_gemm_mma_resadd_s_1_1_4", 8, 16, true),
            Op::GateUp(_) if pdl => Tiling::mma("qwen_gemm_mma_norm_glu_1_pdl", 16, 16, true),
            Op::Qkv(_) if staged => {
                if wide {
                    XS_NORM_2_4
                } else {
                    XS_NORM_2_2
                }
            }
            Op::GateUp(_) if staged => {
                if wide {
                    XS_NORM_GLU_4
                } else {
                    XS_NORM_GLU_2
                }
            }
            _ if staged => RESADD_S_2_1,
            Op::Qkv(_) if tensor => Tiling::mma("qwen_gemm_mma_norm_s_1_1", 8, 16, true),
            Op::Qkv(_) => Tiling::walk("qwen_gemm_norm_2_1_8", 2),
            Op::GateUp(_) if tensor => Tiling::mma("qwen_gemm_mma_norm_glu_1", 16, 16, true),
            Op::GateUp(_) => Tiling::walk("qwen_gemm_norm_glu_1_8", 2),
            _ if tensor => Tiling::mma("qwen_gemm_mma_resadd_s_1_1", 8, 16, true),
            _ => Tiling::walk("qwen_gemm_resadd_1_1_16", 1),
        }
    }

    /// Whether the forward pass's launches carry programmatic stream serialization.
    pub fn pdl(self) -> bool {
        self == KernelPlan::FusedPdl
    }

    /// `fused` / `unfused`.
    pub fn name(self) -> &'static str {
        match self {
            KernelPlan::Fused => "fused",
            KernelPlan::Unfused => "unfused",
            KernelPlan::FusedPdl => "fused-pdl",
            KernelPlan::Tensor => "tensor",
        }
    }
}

impl std::fmt::Display for KernelPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl KernelPlan {
    /// The plan a generation trace names in its header `kernels` (absent: traces made
    /// before it was recorded, all with the CUDA-core order, i.e. `fused`).
    pub fn recorded(kernels: &str) -> Result<KernelPlan> {
        if kernels.is_empty() {
            return Ok(KernelPlan::Fused);
        }
        kernels.parse().map_err(|e| crate::error::ExecError::Input(format!("trace header `kernels`: {e}")))
    }
}

impl std::str::FromStr for KernelPlan {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fused" => Ok(KernelPlan::Fused),
            "unfused" => Ok(KernelPlan::Unfused),
            "fused-pdl" => Ok(KernelPlan::FusedPdl),
            "tensor" => Ok(KernelPlan::Tensor),
            _ => Err(format!("unknown kernel plan {s:?} (expected fused, unfused, fused-pdl or tensor)")),
        }
    }
}

impl KernelPlan {
    /// Every plan.
    pub const ALL: [KernelPlan; 4] = [KernelPlan::Fused, KernelPlan::Unfused, KernelPlan::FusedPdl, KernelPlan::Tensor];
}

/// Rows from which the fused plan's products all use the register-tiled GEMMs.
pub const TILED_FROM_ROWS: usize = 8;

/// Rows from which the tensor plan gives each warp its own tile (`qwen_gemm_mma_w_*`) on
/// the LM head; below, and on every other product, a block's warps split K
/// (`qwen_gemm_mma_s_*`).
pub const MMA_WARP_TILES_FROM_ROWS: usize = 16;

/// The tensor plan's tiling of a product with `n` columns at `rows` rows, from `gpu
/// bench-gemm` on the H100 (device log, session 10): K split over a block's 8 warps, one
/// 16-row fragment per tile, 8 columns up to 16 rows (qkv 6.1-6.5 us at 1-16 rows) and 16
/// beyond (at 64 rows qkv 13.1, o 8.0, down 10.7 us); the LM head from 16 rows on a warp
/// per 32 x 16 tile (64 rows: 254 us, 2.8x qwen_gemm_t_8_4). Same sums whichever.
pub fn mma_tiling(rows: usize, n: usize) -> Tiling {
    if rows >= MMA_WARP_TILES_FROM_ROWS && n > 65_536 {
        Tiling::mma("qwen_gemm_mma_w_2_2", 16, 32, false)
    } else if rows <= 16 {
        Tiling::mma("qwen_gemm_mma_s_1_1", 8, 16, true)
    } else {
        Tiling::mma("qwen_gemm_mma_s_2_1", 16, 16, true)
    }
}

/// Rows from which the tensor plan can fold ([`STAGED_NORMS`]) the input and post norms into the products
/// around them ([`KernelPlan::folds_norms`]): qkv and gate_up stage their block's x rows
/// (the residual stream) in shared memory and normalise them there
/// (`qwen_gemm_mma_xs_norm_*`, qwen.cu "XS"; K split over the block's warps as in
/// `qwen_gemm_mma_s_*`, same fragments, same sums), o_proj and down_proj add into the
/// residual stream (`qwen_gemm_mma_resadd_s_2_1`).
pub const MMA_STAGED_FROM_ROWS: usize = 17;

/// [`Launches::staged_norms`] by default. Off: device log run 22 (H200) measured the staged
/// norms bit-equal but slower (batch 64 qkv 25.74 and gate_up 29.48 us, against about 11.6
/// and 15.6 plus a 5 us norm launch each unfolded: each warp summed its rows' squares one
/// row after another); the launches stay as before. Run 23 (H100) measured the rewrite
/// (two rows per warp, each lane's loads before its fmaf chains): still slower, qkv 24.59
/// and gate_up 28.67 us against 11.83 and 17.59 plus a 4.9 us norm each; batch-64 step
/// 3.166 against 2.744 ms.
pub const STAGED_NORMS: bool = false;

/// [`Launches::prefetch`] by default: on. Device log run 23 (H100, eager per launch at batch
/// 1): qkv 9.34 against 11.47 us, o_proj 4.49 against 4.91, down_proj 5.81 against 6.36
/// (gate_up's prefetching form was slower and is not used).
pub const PREFETCH: bool = true;

/// [`Launches::pdl`] by default: off until a device run times it.
pub const PDL: bool = false;

/// [`Launches::whole_tiles`] by default: off until a device run times it.
pub const WHOLE_TILES: bool = false;

const S_GLU_1: Tiling = Tiling::mma("qwen_gemm_mma_s_glu_1", 16, 16, true);
const RESADD_S_2_1: Tiling = Tiling::mma("qwen_gemm_mma_resadd_s_2_1", 16, 16, true);
const XS_NORM_2_2: Tiling = Tiling::mma_staged("qwen_gemm_mma_xs_norm_2_2", 16, 32);
const XS_NORM_2_4: Tiling = Tiling::mma_staged("qwen_gemm_mma_xs_norm_2_4", 16, 64);
const XS_NORM_GLU_2: Tiling = Tiling::mma_staged("qwen_gemm_mma_xs_norm_glu_2", 16, 32);
const XS_NORM_GLU_4: Tiling = Tiling::mma_staged("qwen_gemm_mma_xs_norm_glu_4", 16, 64);
/// The staged products without a norm, for `gpu bench-gemm` (device log, session 12: no
/// faster than the unstaged ones on their own; the staging pays by carrying the norm).
pub const XS_2_2: Tiling = Tiling::mma_staged("qwen_gemm_mma_xs_2_2", 16, 32);
pub const XS_2_4: Tiling = Tiling::mma_staged("qwen_gemm_mma_xs_2_4", 16, 64);

/// Each staged tiling and the one launched instead when its shared memory does not fit the
/// device (fewer rows per block, then an unstaged entry of the same K order). The 32-row
/// normalising entries have none: [`KernelPlan::folds_norms_on`] folds only where they fit.
const STAGED_FALLBACK: [(Tiling, Tiling); 4] = [
    (XS_NORM_2_4, XS_NORM_2_2),
    (XS_NORM_GLU_4, XS_NORM_GLU_2),
    (XS_2_4, XS_2_2),
    (XS_2_2, Tiling::mma("qwen_gemm_mma_s_2_1", 16, 16, true)),
];

/// Rows from which the fused plan launches `qwen_attention_lean`.
pub const LEAN_ATTENTION_FROM_ROWS: usize = 16;

/// A GEMM entry point and how its warps split the output: `cols` columns per warp and,
/// for the register-tiled entries (`qwen_gemm_t_*`), `rows` rows per warp tile (0: the warp
/// walks every row, as `qwen_gemm_NC_MT_U` do). The grid follows from it ([`Tiling::grid`]);
/// every tiling walks its work grid-stride, so the grid changes speed only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub entry: &'static str,
    pub cols: usize,
    pub rows: usize,
    /// Tensor-core entries (`qwen_gemm_mma_*`, blocks of `MMA_SPLIT` warps): whether the
    /// block's warps split K of one tile (true) or take a tile each (false). None: the
    /// CUDA-core entries (blocks of `GEMM_WARPS` warps, a warp per column group or tile).
    pub mma_split: Option<bool>,
    /// Staged tensor-core entries (`qwen_gemm_mma_xs_*`): the block's `rows` x rows live in
    /// dynamic shared memory ([`Tiling::shared_bytes`]).
    pub staged: bool,
}

impl Tiling {
    /// A warp owns `cols` columns and walks every row.
    pub const fn walk(entry: &'static str, cols: usize) -> Tiling {
        Tiling { entry, cols, rows: 0, mma_split: None, staged: false }
    }

    /// A warp owns tiles of `rows` x `cols`.
    pub const fn tiled(entry: &'static str, rows: usize, cols: usize) -> Tiling {
        Tiling { entry, cols, rows, mma_split: None, staged: false }
    }

    /// A tensor-core entry: tiles of `rows` x `cols` (weight rows: a GLU tile counts its
    /// gate and up columns), a block's warps splitting K of one tile or taking one each.
    pub const fn mma(entry: &'static str, cols: usize, rows: usize, split: bool) -> Tiling {
        Tiling { entry, cols, rows, mma_split: Some(split), staged: false }
    }

    /// A staged tensor-core entry (qwen.cu "XS"): K split over the block's warps, the
    /// block's `rows` x rows copied once into shared memory.
    pub const fn mma_staged(entry: &'static str, cols: usize, rows: usize) -> Tiling {
        Tiling { entry, cols, rows, mma_split: Some(true), staged: true }
    }

    /// Dynamic shared memory of a launch with K = `k`: the staged x rows (each padded as
    /// qwen.cu `xs_stride` pads it) and the warps' partial sums; 0 unless staged.
    pub fn shared_bytes(&self, k: usize) -> usize {
        if !self.staged {
            return 0;
        }
        let stride = k + if k.is_multiple_of(64) { 32 } else { 0 };
        self.rows * stride * 2 + MMA_SPLIT * self.rows * (self.cols + 1) * 4
    }

    /// `self`, or when its shared memory at K = `k` exceeds `limit` bytes (the device's
    /// opt-in maximum per block) the first of its fallbacks that fits.
    pub fn fitting(self, k: usize, limit: usize) -> Tiling {
        let mut t = self;
        while t.shared_bytes(k) > limit {
            match STAGED_FALLBACK.iter().find(|(s, _)| *s == t) {
                Some(&(_, f)) => t = f,
                None => break,
            }
        }
        t
    }

    /// The launch shape for `n` output columns and `rows` rows with K = `k` on `dev`: the
    /// grid of [`Tiling::grid`] (a staged entry: at most as many blocks as the device holds
    /// at once, each taking a contiguous run of tiles), its shared memory allowed on `f`.
    pub fn launch_config(
        &self,
        dev: &Device,
        f: &CudaFunction,
        n: usize,
        rows: usize,
        k: usize,
    ) -> Result<LaunchConfig> {
        let mut lc = cfg(self.grid(n, rows), self.threads());
        if self.staged {
            let bytes = self.shared_bytes(k);
            f.set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)?;
            let per_sm = f.occupancy_max_active_blocks_per_multiprocessor(self.threads(), bytes, None)?.max(1);
            let resident = dev.info.sm_count.max(1) as usize * per_sm as usize;
            lc.grid_dim.0 = lc.grid_dim.0.min(resident as u32);
            lc.shared_mem_bytes = bytes as u32;
        }
        Ok(lc)
    }

    /// Threads per block.
    pub fn threads(&self) -> u32 {
        32 * if self.mma_split.is_some() { MMA_SPLIT as u32 } else { GEMM_WARPS as u32 }
    }

    /// Blocks of `GEMM_WARPS` warps for `n` output columns and `rows` rows: one warp per
    /// column group (walking tilings) or per tile.
    pub fn grid(&self, n: usize, rows: usize) -> usize {
        let col_groups = n.div_ceil(self.cols);
        let row_tiles = if self.rows == 0 { 1 } else { rows.max(1).div_ceil(self.rows) };
        match self.mma_split {
            Some(true) => col_groups * row_tiles,
            Some(false) => (col_groups * row_tiles).div_ceil(MMA_SPLIT),
            None => (col_groups * row_tiles).div_ceil(GEMM_WARPS),
        }
    }
}

/// The GEMM entry point (and its columns per warp) for `rows` rows of a product with `n`
/// output columns, from `gpu bench-gemm` on the H100 (BENCHMARKS.md, device log run 5, the
/// fastest of nine tilings per shape): one row, 2x4 tiles with 4 chunks in flight on every
/// shape; from 2 rows on, 1x4 tiles with 8 in flight for the narrow products (qkv, o_proj,
/// down_proj: N <= 4096) and 2x4 for the wide ones (gate_up, lm_head). All bit-equal.
pub fn gemm_tiling(rows: usize, n: usize) -> Tiling {
    if rows >= 2 && n <= 4096 {
        Tiling::walk("qwen_gemm_1_4_8", 1)
    } else {
        Tiling::walk("qwen_gemm_2_4_4", 2)
    }
}

/// Warps per GEMM block (`GEMM_WARPS`).
pub(super) const GEMM_WARPS: usize = 4;

/// The products whose weights [`Launches::l2`] asks into L2 when `op` is enqueued: the one
/// `ahead` products after `op` (a product), or the first `ahead` (the embedding), in the
/// forward order of the weight-reading products ([`Op::Qkv`], [`Op::OProj`], [`Op::GateUp`],
/// [`Op::Down`] per layer, then [`Op::LmHead`]). Each product's weights are asked for once.
pub fn l2_schedule(layers: usize, ahead: usize, op: Op) -> Vec<Op> {
    if ahead == 0 {
        return Vec::new();
    }
    let seq: Vec<Op> =
        (0..layers).flat_map(|i| [Op::Qkv(i), Op::OProj(i), Op::GateUp(i), Op::Down(i)]).chain([Op::LmHead]).collect();
    match op {
        Op::Embed => seq.into_iter().take(ahead).collect(),
        _ => match seq.iter().position(|&o| o == op) {
            Some(j) => seq.get(j + ahead).copied().into_iter().collect(),
            None => Vec::new(),
        },
    }
}

/// Warps per tensor-core GEMM block (`MMA_SPLIT`).
pub(super) const MMA_SPLIT: usize = super::kernels_ref::MMA_SPLIT;

/// A one-dimensional launch of `blocks` (clamped to 1..=2^20) blocks of `threads`.
pub(super) fn cfg(blocks: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks.clamp(1, 1 << 20) as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

#[cfg(test)]
mod tests {
    use super::super::host::forward_ops;
    use super::*;

    #[test]
    fn every_tiling_the_forward_pass_picks_is_a_qwen_entry_and_benchmarked() {
        let qwen = crate::kernels::MODULES.iter().find(|m| m.name == "qwen").expect("qwen module");
        for plan in KernelPlan::ALL {
            for rows in [1, 2, 4, 7, 8, 16, 17, 64, 512] {
                for n in [1024, 4096, 6144, 151_936] {
                    let t = plan.gemm(rows, n);
                    assert!(qwen.entries.contains(&t.entry), "{} is not loaded", t.entry);
                    assert!(
                        super::super::gemm_bench::GEMM_VARIANTS.contains(&t),
                        "{t:?} is not what bench-gemm measures"
                    );
                }
            }
        }
        // Unfused: from two rows on the narrow products change tiling, the wide ones do not.
        assert_ne!(gemm_tiling(4, 1024), gemm_tiling(1, 1024));
        assert_eq!(gemm_tiling(64, 151_936), gemm_tiling(1, 151_936));
        // Fused: tiled from 8 rows on, and below that for the wide products only.
        assert_eq!(KernelPlan::Fused.gemm(8, 1024).rows, 8);
        assert_eq!(KernelPlan::Fused.gemm(4, 4096).rows, 8);
        assert_eq!(KernelPlan::Fused.gemm(7, 1024).rows, 0);
        assert_eq!(KernelPlan::Fused.gemm(1, 151_936), gemm_tiling(1, 151_936));
    }

    #[test]
    fn staged_tilings_fall_back_to_what_fits_in_shared_memory() {
        const HOPPER: usize = 232_448; // cudaDevAttrMaxSharedMemoryPerBlockOptin, sm_90
        const ADA: usize = 101_376; // sm_89
                                    // 64 rows of K = 1,024 (qkv, gate_up at batch 64): x 64 x (1,024 + 32 pad) bf16,
                                    // partials 8 warps x 64 x 17 f32.
        assert_eq!(XS_NORM_2_4.shared_bytes(1024), 64 * 1056 * 2 + 8 * 64 * 17 * 4);
        assert_eq!(XS_NORM_2_4.fitting(1024, HOPPER), XS_NORM_2_4);
        // K = 2,048 and 3,072: 32 rows per block.
        assert_eq!(XS_2_4.fitting(2048, HOPPER), XS_2_2);
        assert_eq!(XS_2_4.fitting(3072, HOPPER), XS_2_2);
        assert_eq!(XS_NORM_GLU_4.fitting(3072, HOPPER), XS_NORM_GLU_2);
        // A K that is an odd multiple of 32 is not padded (its rows already start 64 bytes
        // apart modulo 128).
        assert_eq!(XS_2_2.shared_bytes(1056), 32 * 1056 * 2 + 8 * 32 * 17 * 4);
        // A smaller device falls back to the unstaged entry of the same order...
        assert_eq!(XS_2_4.fitting(3072, ADA), Tiling::mma("qwen_gemm_mma_s_2_1", 16, 16, true));
        // ...and launches the norms where their staged products do not fit.
        let t = KernelPlan::Tensor;
        let (on, off) = (Launches::ALL[1], Launches::ALL[0]);
        assert!(t.folds_norms_on(64, on, 1024, HOPPER));
        assert!(t.folds_norms_on(64, on, 1024, ADA));
        assert!(t.folds_norms_on(64, on, 3072, HOPPER));
        assert!(!t.folds_norms_on(64, off, 1024, HOPPER), "without staged norms they launch");
        assert!(!t.folds_norms_on(64, on, 3072, ADA), "32 rows of K = 3,072 do not fit 99 KiB");
        assert!(t.folds_norms_on(1, off, 1 << 16, 0), "one row stages nothing");
        assert!(!t.folds_norms_on(8, on, 1024, HOPPER), "2-16 rows launch the norms");
        let qwen = crate::kernels::MODULES.iter().find(|m| m.name == "qwen").expect("qwen module");
        for (staged, fallback) in STAGED_FALLBACK {
            assert!(staged.staged && staged.mma_split == Some(true), "{staged:?}");
            assert!(qwen.entries.contains(&staged.entry) && qwen.entries.contains(&fallback.entry));
            for k in [1024, 3072] {
                assert!(fallback.shared_bytes(k) < staged.shared_bytes(k), "{fallback:?} needs less than {staged:?}");
            }
        }
        // The tensor plan's folded products from 17 rows: staged norms (32 rows per block up
        // to 32 rows, else 64) and residual adds; every one loaded.
        for rows in [17, 32, 33, 64, 512] {
            for op in [Op::Qkv(0), Op::GateUp(0), Op::OProj(0), Op::Down(0)] {
                let f = t.folded(op, rows, on);
                assert!(qwen.entries.contains(&f.entry), "{} is not loaded", f.entry);
                assert_eq!(f.staged, matches!(op, Op::Qkv(_) | Op::GateUp(_)), "{op:?}: {f:?}");
                assert_eq!(f.entry.contains("glu"), matches!(op, Op::GateUp(_)));
                if f.staged {
                    assert_eq!(f.rows, if rows > 32 { 64 } else { 32 });
                }
            }
        }
        assert_eq!(S_GLU_1.shared_bytes(1024), 0);
        assert!(!t.gemm(64, 4096).staged && !t.gemm(64, 151_936).staged);
    }

    #[test]
    fn l2_streaming_asks_for_every_product_once_ahead_of_it() {
        for layers in [1, 2, 28] {
            let products = 4 * layers + 1;
            assert!(forward_ops(layers).iter().all(|&op| l2_schedule(layers, 0, op).is_empty()));
            for ahead in 1..=3 {
                let (mut asked, mut launched) = (Vec::new(), Vec::new());
                for op in forward_ops(layers) {
                    asked.extend(l2_schedule(layers, ahead, op));
                    if matches!(op, Op::Qkv(_) | Op::OProj(_) | Op::GateUp(_) | Op::Down(_) | Op::LmHead) {
                        launched.push(op);
                        // Asked for before launched, and at most `ahead` products before it.
                        let i = asked.iter().position(|&a| a == op).expect("asked for before launch");
                        assert!(i + 1 >= launched.len(), "{op:?} asked too early");
                        assert!(asked.len() <= launched.len() + ahead, "more than {ahead} products ahead");
                    }
                }
                assert_eq!(asked, launched, "layers {layers} ahead {ahead}: each product once, in order");
                assert_eq!(asked.len(), products);
            }
        }
    }

    #[test]
    fn grids_cover_every_column_group_and_row_tile_once() {
        let walk = Tiling::walk("qwen_gemm_2_4_4", 2);
        assert_eq!(walk.grid(1024, 64), 1024 / (2 * GEMM_WARPS));
        assert_eq!(walk.grid(1025, 1), 129, "a partial column group still gets a warp");
        let tiled = Tiling::tiled("qwen_gemm_t_8_8", 8, 8);
        assert_eq!(tiled.grid(1024, 64), 128 * 8 / GEMM_WARPS);
        assert_eq!(tiled.grid(1024, 9), 128 * 2 / GEMM_WARPS, "9 rows are two row tiles");
        assert_eq!(tiled.grid(8, 0), 1, "an empty step still launches one block");
    }

    #[test]
    fn every_plan_launches_loaded_and_benchmarked_entries() {
        let qwen = crate::kernels::MODULES.iter().find(|m| m.name == "qwen").expect("qwen module");
        for plan in KernelPlan::ALL {
            assert!(qwen.entries.contains(&plan.rmsnorm()), "{plan:?}: {} is not loaded", plan.rmsnorm());
            assert_eq!(plan.name().parse::<KernelPlan>(), Ok(plan));
            for l in Launches::ALL {
                if !plan.folds_norms(1, l) {
                    assert_eq!(plan, KernelPlan::Unfused);
                    continue;
                }
                for op in [Op::Qkv(0), Op::GateUp(0), Op::OProj(0), Op::Down(0)] {
                    let t = plan.folded(op, 1, l);
                    assert!(qwen.entries.contains(&t.entry), "{plan:?}: {} is not loaded", t.entry);
                    assert_eq!(t.mma_split.is_some(), plan == KernelPlan::Tensor, "{t:?}");
                    let fresh = t.entry.contains("_p_") || t.entry.contains("_1_1_4");
                    let prefetching = plan == KernelPlan::Tensor && l.prefetch && !matches!(op, Op::GateUp(_));
                    assert_eq!(fresh, prefetching, "{plan:?} {l}: {t:?}");
                    let l2 = plan == KernelPlan::Tensor && l.pdl && (prefetching || matches!(op, Op::GateUp(_)));
                    assert_eq!(t.entry.ends_with("_pdl"), l2, "{plan:?} {l}: {t:?}");
                    if matches!(op, Op::GateUp(_)) {
                        assert!(t.entry.contains("glu"), "{t:?}");
                    }
                }
            }
            // A plan's products all sum in its order: the tensor plan's on the tensor cores only.
            for rows in [1, 2, 16, 17, 64] {
                let mut ts = vec![plan.gemm(rows, 4096), plan.gemm(rows, 151_936)];
                ts.extend(plan.fused_gate_up(rows));
                for t in ts {
                    assert_eq!(t.mma_split.is_some(), plan.gemm_order() == GemmOrder::Tensor, "{plan:?}: {t:?}");
                }
            }
        }
        assert_eq!(KernelPlan::Tensor.gemm_order(), GemmOrder::Tensor);
        assert_eq!(KernelPlan::Fused.gemm_order(), GemmOrder::Lanes);
        assert_eq!(KernelPlan::default(), KernelPlan::Tensor);
        let mut odd = crate::model::weights::tiny_config();
        assert_eq!(KernelPlan::for_model(&odd), KernelPlan::Tensor);
        odd.intermediate_size = 120;
        assert_eq!(KernelPlan::for_model(&odd), KernelPlan::Fused, "K % 32 != 0: the CUDA-core plan");
        assert!(KernelPlan::FusedPdl.pdl() && !KernelPlan::Fused.pdl() && !KernelPlan::Unfused.pdl());
        for rows in [1, 2, 8, 64] {
            let (a, b) = (KernelPlan::Fused, KernelPlan::FusedPdl);
            assert_eq!(a.gemm(rows, 4096), b.gemm(rows, 4096), "fused-pdl launches fused's kernels");
            assert_eq!(a.fused_gate_up(rows), b.fused_gate_up(rows));
            assert_eq!(a.attention(rows), b.attention(rows));
            assert_eq!(a.folds_norms(rows, Launches::DEFAULT), b.folds_norms(rows, Launches::DEFAULT));
        }
        assert_ne!(KernelPlan::Fused.rmsnorm(), KernelPlan::Unfused.rmsnorm());
        assert_eq!(KernelPlan::Unfused.fused_gate_up(64), None);
        let l = Launches::DEFAULT;
        assert!(KernelPlan::Fused.folds_norms(1, l));
        assert!(!KernelPlan::Fused.folds_norms(2, l) && !KernelPlan::Unfused.folds_norms(1, l));
        let all: Vec<Launches> =
            Launches::ALL.into_iter().chain(Launches::l2_variants()).chain(Launches::mega_variants()).collect();
        let names: std::collections::BTreeSet<String> = all.iter().map(|l| l.to_string()).collect();
        assert_eq!(names.len(), all.len(), "every combination has its own name");
        for &l in &all {
            assert_eq!(l.to_string().parse::<Launches>(), Ok(l));
            assert_eq!(KernelPlan::Tensor.folds_norms(64, l), l.staged_norms);
        }
        assert_eq!("default".parse::<Launches>(), Ok(Launches::DEFAULT));
        assert_eq!(Launches::DEFAULT.to_string().parse::<Launches>(), Ok(Launches::DEFAULT));
        assert_eq!("prefetch".parse::<Launches>().map(|l| l.mega), Ok(Mega::Off), "a plain name launches per op");
        assert!(Launches::ALL.iter().chain(&Launches::l2_variants()).all(|l| !l.mega.on()));
        assert!("fast".parse::<Launches>().is_err());
        for bad in ["prefetch+bulk0", "prefetch+bulk4", "prefetch+lines", "fast+bulk1", "prefetch+bulk1x"] {
            assert!(bad.parse::<Launches>().is_err(), "{bad}");
        }
        assert_eq!(
            "prefetch+bulk1+mega".parse::<Launches>().unwrap(),
            Launches { l2: L2Stream::Bulk(1), mega: Mega::On, ..Launches::ALL[2] }
        );
        assert!("prefetch+mega+bulk1".parse::<Launches>().is_err(), "the mega suffix comes last");
        let l = "prefetch+lines2".parse::<Launches>().unwrap();
        assert_eq!((l.l2, l.prefetch, l.staged_norms), (L2Stream::Lines(2), true, false));
        assert_eq!(
            "default+bulk1".parse::<Launches>().unwrap(),
            Launches { l2: L2Stream::Bulk(1), ..Launches::DEFAULT }
        );
        assert_eq!(KernelPlan::Fused.attention(1), "qwen_attention");
        assert_eq!(KernelPlan::Fused.attention(64), "qwen_attention_lean");
        assert_eq!(KernelPlan::Unfused.attention(64), "qwen_attention");
        // GQA pairs: the tensor plan from 16 rows with an even group; every other case one
        // head per item.
        let (base, whole) = (Launches::ALL[0], Launches::ALL[8]);
        assert!(whole.whole_tiles && !base.whole_tiles);
        assert_eq!(KernelPlan::Tensor.attention_for(64, 2, base), ("qwen_attention_gqa2", 2));
        assert_eq!(KernelPlan::Tensor.attention_for(64, 2, whole), ("qwen_attention_gqa2_whole", 2));
        assert_eq!(KernelPlan::Tensor.attention_for(16, 4, base), ("qwen_attention_gqa2", 2));
        for l in [base, whole] {
            assert_eq!(KernelPlan::Tensor.attention_for(15, 2, l), ("qwen_attention", 1));
            assert_eq!(KernelPlan::Tensor.attention_for(64, 3, l), ("qwen_attention_lean", 1));
            assert_eq!(KernelPlan::Fused.attention_for(64, 2, l), ("qwen_attention_lean", 1));
        }
        assert!(qwen.entries.contains(&"qwen_attention_gqa2"));
        for e in ["qwen_gemm_norm_2_1_8", "qwen_gemm_norm_glu_1_8", "qwen_gemm_resadd_1_1_16", "qwen_attention_lean"] {
            assert!(qwen.entries.contains(&e), "{e} is not loaded");
        }
        for rows in [2, 7, 8, 64] {
            let t = KernelPlan::Fused.fused_gate_up(rows).expect("the fused plan fuses");
            assert!(qwen.entries.contains(&t.entry), "{} is not loaded", t.entry);
            assert!(t.entry.contains("glu"), "{t:?} must be a SiLU-mul epilogue entry");
            assert_eq!(t.cols % 2, 0, "a GLU warp owns whole (gate, up) pairs");
            assert_eq!(t.rows == 0, rows < TILED_FROM_ROWS);
        }
        assert!("fast".parse::<KernelPlan>().is_err());
    }
}
