//! [`GpuModel`]: the Qwen3 forward pass on the device (`executor/kernels/qwen.cu`), one
//! kernel launch per [`Op`] on persistent buffers, so the same launch list runs eagerly or
//! inside a CUDA graph. Weights, KV caches, RoPE table and activation scratch are
//! allocated once; every launch's grid is fixed by capacities and shapes, and its row
//! count is read from the step's `counts` (see `executor/kernels/prepare.cu`).
//!
//! The step buffers ([`DeviceBuffers`]) hold the engine's inputs and metadata (written by
//! `prepare_inputs` / `prepare_rows` / `build_metadata`) and receive the logits, which
//! `argmax_rows` and `rejection_greedy` (`sample.cu`) turn into the sampler's rows.

use std::sync::Arc;

use cudarc::driver::{sys, CudaSlice, CudaStream};

use super::host::{forward_ops, Op};
use super::kernels_ref::rope_table;
use super::kv_cache::KvLayout;
use super::launch::RawArgs;
use super::mega::MegaState;
use super::plan::cfg;
/// The plan's types, where they were defined before `plan.rs` (`model::gpu::KernelPlan`).
pub use super::plan::*;
use super::weights::HostWeights;
use crate::device::Device;
use crate::error::Result;
use crate::layout::{Capacity, DeviceBuffers};

/// One layer's weights on the device.
pub struct GpuLayer {
    pub input_norm: CudaSlice<u16>,
    pub qkv: CudaSlice<u16>,
    /// Empty-architecture fallback: the input norm (never read when `qk_norm` is 0).
    pub q_norm: CudaSlice<u16>,
    pub k_norm: CudaSlice<u16>,
    pub o: CudaSlice<u16>,
    pub post_norm: CudaSlice<u16>,
    pub gate_up: CudaSlice<u16>,
    pub down: CudaSlice<u16>,
    pub k_cache: CudaSlice<u16>,
    pub v_cache: CudaSlice<u16>,
}

/// Activation scratch on the device (`[max_tokens, width]` each).
pub struct GpuScratch {
    pub residual: CudaSlice<u16>,
    pub x: CudaSlice<u16>,
    pub delta: CudaSlice<u16>,
    pub qkv: CudaSlice<u16>,
    pub q: CudaSlice<u16>,
    pub attn: CudaSlice<u16>,
    pub gate_up: CudaSlice<u16>,
    pub act: CudaSlice<u16>,
    pub final_x: CudaSlice<u16>,
}

/// The model on the device.
pub struct GpuModel {
    pub cfg: super::ModelConfig,
    pub kv: KvLayout,
    pub embed: CudaSlice<u16>,
    /// `None`: tied (the embedding is the LM head).
    pub lm_head: Option<CudaSlice<u16>>,
    pub final_norm: CudaSlice<u16>,
    pub layers: Vec<GpuLayer>,
    pub rope: CudaSlice<u16>,
    pub rope_len: usize,
    pub s: GpuScratch,
    /// Bytes of weights read by one decode step (for bandwidth figures).
    pub weight_bytes: usize,
    /// The rows the next launches' grids and GEMM tilings are chosen for (a graph's
    /// padded size, an eager step's padded tokens; `cap.max_tokens` until set). Every
    /// kernel walks its rows grid-stride from `counts` and every tiling sums in the same
    /// order, so this changes speed only, never a bit: a grid sized by the capacity
    /// launched thousands of idle blocks per op at batch 1 (device log run 5).
    pub grid_rows: usize,
    /// Which kernel entry points the forward pass launches (every choice sums in the same
    /// order: the plan changes speed only).
    pub kernels: KernelPlan,
    /// The tensor plan's launch choices ([`Launches`]: speed only).
    pub launches: Launches,
    /// The side stream [`Launches::l2`]'s prefetches run on (made on first use); joined back
    /// into the device stream after the LM head, so a captured graph holds both branches.
    side: Option<Arc<CudaStream>>,
    /// Whether the side stream has forked from the device stream since the last
    /// [`GpuModel::join_side`]: a join without a fork would make a capturing device stream
    /// wait on uncaptured work (CUDA_ERROR_STREAM_CAPTURE_ISOLATION).
    side_forked: bool,
    /// The megakernel's layer table and grid barrier ([`Launches::mega`]).
    pub(super) mega: MegaState,
    /// Whether the next launches run as one list (eager, a FULL graph) rather than the
    /// pieces of a PIECEWISE graph around eager attention, where the megakernel, which
    /// holds attention, cannot run.
    pub whole_step: bool,
    /// Megakernel launches enqueued so far (a captured graph's once, at its capture).
    pub mega_launches: u64,
}

const ROWS_PADDED: i32 = 0;
const ROWS_LOGITS: i32 = 1;

impl GpuModel {
    /// Uploads `w` and allocates caches for `cap` (KV: `cap.num_blocks x cap.block_size`
    /// slots per layer; scratch: `cap.max_tokens` rows; RoPE: `cap.max_model_len`).
    pub fn new(dev: &Device, w: &HostWeights, cap: &Capacity) -> Result<GpuModel> {
        let c = w.cfg.clone();
        let st = &dev.stream;
        let kv = KvLayout {
            num_blocks: cap.num_blocks,
            block_size: cap.block_size,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in &w.layers {
            let qk = c.architecture == super::Architecture::Qwen3;
            layers.push(GpuLayer {
                input_norm: st.clone_htod(&l.input_norm)?,
                qkv: st.clone_htod(&l.qkv)?,
                q_norm: st.clone_htod(if qk { &l.q_norm } else { &l.input_norm })?,
                k_norm: st.clone_htod(if qk { &l.k_norm } else { &l.input_norm })?,
                o: st.clone_htod(&l.o)?,
                post_norm: st.clone_htod(&l.post_norm)?,
                gate_up: st.clone_htod(&l.gate_up)?,
                down: st.clone_htod(&l.down)?,
                k_cache: st.alloc_zeros(kv.len().max(1))?,
                v_cache: st.alloc_zeros(kv.len().max(1))?,
            });
        }
        let t = cap.max_tokens;
        let heads = c.num_heads + 2 * c.num_kv_heads;
        let z = |n: usize| st.alloc_zeros::<u16>(n.max(1));
        let s = GpuScratch {
            residual: z(t * c.hidden_size)?,
            x: z(t * c.hidden_size)?,
            delta: z(t * c.hidden_size)?,
            qkv: z(t * heads * c.head_dim)?,
            q: z(t * c.num_heads * c.head_dim)?,
            attn: z(t * c.num_heads * c.head_dim)?,
            gate_up: z(t * 2 * c.intermediate_size)?,
            act: z(t * c.intermediate_size)?,
            final_x: z(cap.max_logits * c.hidden_size)?,
        };
        let mega = MegaState::new(dev, &layers)?;
        let m = GpuModel {
            embed: st.clone_htod(&w.embed)?,
            lm_head: w.lm_head.as_ref().map(|v| st.clone_htod(v)).transpose()?,
            final_norm: st.clone_htod(&w.final_norm)?,
            layers,
            rope: st.clone_htod(&rope_table(c.rope_theta, c.head_dim, cap.max_model_len))?,
            rope_len: cap.max_model_len,
            s,
            weight_bytes: w.bytes(),
            grid_rows: cap.max_tokens,
            kernels: KernelPlan::for_model(&c),
            launches: super::mega::available(dev, &c, Launches::DEFAULT),
            side: None,
            side_forked: false,
            mega,
            whole_step: true,
            mega_launches: 0,
            kv,
            cfg: c,
        };
        st.synchronize()?;
        Ok(m)
    }

    /// Every op of the forward pass, in order.
    pub fn ops(&self) -> Vec<Op> {
        forward_ops(self.cfg.num_layers)
    }

    /// The weights `op` reads, if it is a product.
    fn weights_of(&self, op: Op) -> Option<&CudaSlice<u16>> {
        Some(match op {
            Op::Qkv(i) => &self.layers[i].qkv,
            Op::OProj(i) => &self.layers[i].o,
            Op::GateUp(i) => &self.layers[i].gate_up,
            Op::Down(i) => &self.layers[i].down,
            Op::LmHead => self.lm_head.as_ref().unwrap_or(&self.embed),
            _ => return None,
        })
    }

    /// [`l2_schedule`] under this model's launches (none outside the tensor plan).
    pub fn streamed_at(&self, op: Op) -> Vec<Op> {
        if self.kernels != KernelPlan::Tensor {
            return Vec::new();
        }
        l2_schedule(self.cfg.num_layers, self.launches.l2.ahead(), op)
    }

    /// Enqueues [`GpuModel::streamed_at`]'s prefetches for `op` on the side stream, after
    /// everything enqueued so far on the device stream (so a prefetch never races ahead of
    /// the product two before it and flushes what that still reads).
    fn stream_weights(&mut self, dev: &Device, op: Op) -> Result<()> {
        let ahead = self.streamed_at(op);
        if ahead.is_empty() {
            return Ok(());
        }
        if self.side.is_none() {
            self.side = Some(dev.ctx.new_stream()?);
        }
        let side = self.side.clone().expect("made above");
        side.wait(&dev.stream.record_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))?)?;
        self.side_forked = true;
        let f = dev.function("qwen_l2_prefetch")?;
        let bulk = i32::from(matches!(self.launches.l2, L2Stream::Bulk(_)));
        let chunk = L2_CHUNK as i32;
        for o in ahead {
            let w = self.weights_of(o).expect("streamed_at lists products");
            let bytes = (w.len() * 2).min(L2_PREFETCH_CAP);
            let threads = bytes.div_ceil(L2_CHUNK);
            let mut l = RawArgs::new(&side);
            l.arg(w).arg(&(bytes as i64)).arg(&chunk).arg(&bulk);
            tracing::trace!(?op, ?o, bytes, "L2 prefetch ahead");
            // SAFETY: qwen_l2_prefetch(const char*, long long, int, int) reads no byte past
            // `bytes` of `w` (a prefetch hint; it writes nothing).
            unsafe { l.launch(f, cfg(threads.div_ceil(32), 32), false) }?;
        }
        Ok(())
    }

    /// Enqueues `op` (asynchronous; capturable). `b` are the step buffers; its `logits`
    /// must be `vocab_size` wide.
    pub fn launch(&mut self, dev: &Device, op: Op, b: &mut DeviceBuffers) -> Result<()> {
        if !self.mega_step(b.cap.max_tokens) {
            self.stream_weights(dev, op)?;
        }
        self.launch_op(dev, op, b)
    }

    /// Whether the step being launched (its rows as [`GpuModel::grid_rows`] gives them) runs
    /// its layers as the megakernel ([`super::mega::Mega::applies`]).
    pub fn mega_step(&self, max_tokens: usize) -> bool {
        self.launches.mega.applies(self.kernels, self.grid_rows.clamp(1, max_tokens.max(1)), self.whole_step)
    }

    /// Joins [`Launches::l2`]'s side stream back into the device stream: called after the
    /// last launch of a launch list (a capture must end with every branch joined). Joins
    /// only after a fork in this list: a list of bookkeeping launches alone (or a capture
    /// whose products stream nothing) must not wait on the side stream's earlier, uncaptured
    /// work.
    pub fn join_side(&mut self, dev: &Device) -> Result<()> {
        if let (Some(side), true) = (&self.side, self.side_forked) {
            dev.stream.join(side)?;
            self.side_forked = false;
        }
        Ok(())
    }

    fn launch_op(&mut self, dev: &Device, op: Op, b: &mut DeviceBuffers) -> Result<()> {
        let mega = self.mega_step(b.cap.max_tokens);
        if mega {
            match op {
                Op::InputNorm(0) => return self.launch_mega(dev, b),
                // The megakernel runs every layer's ops.
                Op::InputNorm(_)
                | Op::Qkv(_)
                | Op::RopeKv(_)
                | Op::Attention(_)
                | Op::OProj(_)
                | Op::PostNorm(_)
                | Op::GateUp(_)
                | Op::SiluMul(_)
                | Op::Down(_) => return Ok(()),
                Op::Embed | Op::FinalNorm | Op::LmHead => {}
            }
        }
        let c = &self.cfg;
        let (h, hd, inter) = (c.hidden_size as i32, c.head_dim as i32, c.intermediate_size as i32);
        let (nh, nkv) = (c.num_heads as i32, c.num_kv_heads as i32);
        let heads = nh + 2 * nkv;
        let eps = c.rms_norm_eps;
        let vocab = c.vocab_size as i32;
        let cap = b.cap;
        let rows = self.grid_rows.clamp(1, cap.max_tokens);
        let logit_rows = rows.min(cap.max_logits);
        let s = &mut self.s;
        let zero = 0i32;
        let one = 1i32;
        let n_qkv = heads * hd;
        let k_o = nh * hd;
        let n_gu = 2 * inter;
        let qk = i32::from(c.architecture == super::Architecture::Qwen3);
        let rope_len = self.rope_len as i32;
        let slots = self.kv.slots() as i64;
        let (bpr, bs) = (cap.blocks_per_row as i32, cap.block_size as i32);
        let add = match op {
            Op::InputNorm(i) => i32::from(i > 0),
            _ => 1,
        };
        let gemm_n = match op {
            Op::Qkv(_) => n_qkv,
            Op::GateUp(_) => n_gu,
            Op::LmHead => vocab,
            _ => h,
        } as usize;
        let fused = self.kernels.fused_gate_up(rows);
        // The megakernel folds the norms at every row count it runs.
        let folded = mega || self.kernels.folds_norms_on(rows, self.launches, c.hidden_size, dev.shared_optin());
        match op {
            // The gate_up product wrote `act` already.
            Op::SiluMul(_) if fused.is_some() => return Ok(()),
            // The products around them apply these norms (`KernelPlan::folds_norms`).
            Op::InputNorm(_) | Op::PostNorm(_) if folded => return Ok(()),
            _ => {}
        }
        let gemm_rows = if op == Op::LmHead { logit_rows } else { rows };
        let gemm_k = match op {
            Op::OProj(_) => k_o,
            Op::Down(_) => inter,
            _ => h,
        } as usize;
        let tiling = match (op, fused) {
            (Op::Qkv(_) | Op::GateUp(_) | Op::OProj(_) | Op::Down(_), _) if folded => {
                self.kernels.folded(op, rows, self.launches)
            }
            (Op::GateUp(_), Some(f)) => f,
            _ => self.kernels.gemm(gemm_rows, gemm_n),
        };
        let tiling = if tiling.staged { tiling.fitting(gemm_k, dev.shared_optin()) } else { tiling };
        let gemm = tiling.entry;
        // Folded steps: the residual stream already holds each sum when a norm would add it.
        let final_add = if folded { zero } else { one };
        let att = self.kernels.attention_for(rows, c.num_heads / c.num_kv_heads.max(1), self.launches);
        let f = dev.function(match op {
            Op::Embed => "qwen_embed",
            Op::InputNorm(_) | Op::PostNorm(_) | Op::FinalNorm => self.kernels.rmsnorm(),
            Op::Qkv(_) | Op::OProj(_) | Op::GateUp(_) | Op::Down(_) | Op::LmHead => gemm,
            Op::RopeKv(_) => "qwen_qk_norm_rope_kv",
            Op::Attention(_) => att.0,
            Op::SiluMul(_) => "qwen_silu_mul",
        })?;
        let gemm_grid = |n: i32| tiling.launch_config(dev, f, n as usize, gemm_rows, gemm_k);
        let mut l = RawArgs::new(&dev.stream);
        // GEMM arguments: (counts, source, x, K, w, N, y, yf, f32_out).
        let lc = match op {
            Op::Embed => {
                l.arg(&b.counts).arg(&b.input_ids).arg(&self.embed).arg(&vocab).arg(&h);
                l.out(&mut s.residual).out(&mut b.counters);
                cfg(rows.min(4096), 128)
            }
            Op::InputNorm(i) | Op::PostNorm(i) => {
                let lw = &self.layers[i];
                let w = if let Op::InputNorm(_) = op { &lw.input_norm } else { &lw.post_norm };
                l.arg(&b.counts).arg(&ROWS_PADDED).arg(&b.logits_indices).arg(&s.delta).out(&mut s.residual);
                l.arg(w).arg(&h).arg(&eps).arg(&add).out(&mut s.x);
                cfg(rows.div_ceil(4).min(4096), 128)
            }
            Op::FinalNorm => {
                l.arg(&b.counts).arg(&ROWS_LOGITS).arg(&b.logits_indices).arg(&s.delta).out(&mut s.residual);
                l.arg(&self.final_norm).arg(&h).arg(&eps).arg(&final_add).out(&mut s.final_x);
                cfg(logit_rows.div_ceil(4).min(4096), 128)
            }
            Op::Qkv(i) => {
                // Folded: x is the residual stream, normalised by the kernel (input norm).
                let x = if folded { &s.residual } else { &s.x };
                l.arg(&b.counts).arg(&ROWS_PADDED).arg(x).arg(&h).arg(&self.layers[i].qkv).arg(&n_qkv);
                l.out(&mut s.qkv).out(&mut b.logits).arg(&zero);
                if folded {
                    l.arg(&self.layers[i].input_norm).arg(&eps);
                }
                gemm_grid(n_qkv)?
            }
            Op::OProj(i) => {
                l.arg(&b.counts).arg(&ROWS_PADDED).arg(&s.attn).arg(&k_o).arg(&self.layers[i].o).arg(&h);
                // Folded: the kernel adds into the residual stream instead of writing delta.
                l.out(if folded { &mut s.residual } else { &mut s.delta }).out(&mut b.logits).arg(&zero);
                gemm_grid(h)?
            }
            Op::GateUp(i) => {
                let x = if folded { &s.residual } else { &s.x };
                l.arg(&b.counts).arg(&ROWS_PADDED).arg(x).arg(&h).arg(&self.layers[i].gate_up).arg(&n_gu);
                // Fused: the kernel writes act ([rows, I]) instead of gate_up.
                l.out(if fused.is_some() { &mut s.act } else { &mut s.gate_up }).out(&mut b.logits).arg(&zero);
                if folded {
                    l.arg(&self.layers[i].post_norm).arg(&eps);
                }
                gemm_grid(n_gu)?
            }
            Op::Down(i) => {
                l.arg(&b.counts).arg(&ROWS_PADDED).arg(&s.act).arg(&inter).arg(&self.layers[i].down).arg(&h);
                l.out(if folded { &mut s.residual } else { &mut s.delta }).out(&mut b.logits).arg(&zero);
                gemm_grid(h)?
            }
            Op::LmHead => {
                let w = self.lm_head.as_ref().unwrap_or(&self.embed);
                l.arg(&b.counts).arg(&ROWS_LOGITS).arg(&s.final_x).arg(&h).arg(w).arg(&vocab);
                l.out(&mut s.x).out(&mut b.logits).arg(&one);
                gemm_grid(vocab)?
            }
            Op::RopeKv(i) => {
                let lw = &mut self.layers[i];
                l.arg(&b.counts).arg(&s.qkv).arg(&b.positions).arg(&b.slot_mapping);
                l.arg(&lw.q_norm).arg(&lw.k_norm).arg(&qk).arg(&eps).arg(&self.rope).arg(&rope_len);
                l.arg(&nh).arg(&nkv).arg(&hd).out(&mut s.q).out(&mut lw.k_cache).out(&mut lw.v_cache).arg(&slots);
                l.out(&mut b.counters);
                cfg((rows * heads as usize).div_ceil(4).min(8192), 128)
            }
            Op::Attention(i) => {
                let lw = &self.layers[i];
                l.arg(&b.counts).arg(&s.q).arg(&lw.k_cache).arg(&lw.v_cache).arg(&slots);
                l.arg(&b.cu_seqlens_q).arg(&b.seqused_k).arg(&b.meta_block_table).arg(&bpr).arg(&bs);
                l.arg(&b.positions).arg(&nh).arg(&nkv).arg(&hd).out(&mut s.attn).out(&mut b.counters);
                cfg((rows * nh as usize / att.1).min(16384), 128)
            }
            Op::SiluMul(_) => {
                l.arg(&b.counts).arg(&s.gate_up).arg(&inter).out(&mut s.act);
                cfg((rows * inter as usize).div_ceil(256).min(4096), 256)
            }
        };
        // SAFETY: the arguments follow each kernel's parameter list in qwen.cu; buffers
        // have the capacities the kernels index within (rows < max_tokens, logits rows <
        // max_logits, cache slots < kv.slots(), positions < rope_len, all checked in-kernel
        // or by `StepInput::validate`).
        let pdl = self.kernels.pdl() || (self.kernels == KernelPlan::Tensor && self.launches.pdl);
        unsafe { l.launch(f, lc, pdl) }?;
        Ok(())
    }
}
