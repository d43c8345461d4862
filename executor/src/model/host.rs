//! [`HostModel`]: the whole Qwen3 forward pass of one engine step on the CPU twins
//! ([`super::kernels_ref`]), reading and writing the same step buffers
//! ([`crate::layout::HostBuffers`]: `input_ids`, `positions`, `slot_mapping`, the
//! attention metadata, `logits_indices` in; `logits` and `counters` out) in the launch
//! order of the GPU forward ([`super::gpu`]). It is the GPU's bitwise reference and, as
//! [`crate::qwen_device::QwenHostDevice`], a CPU device the engine runs on in CI.

use super::kernels_ref::{self as k, f32_to_bf16, round_bf};
use super::kv_cache::KvLayout;
use super::weights::HostWeights;
use crate::layout::*;

/// Per-layer op of the forward pass, in launch order (shared with the GPU plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// `input_ids` → residual rows.
    Embed,
    /// Input RMSNorm of layer `l` (adds the previous layer's MLP output first when l > 0).
    InputNorm(usize),
    /// Fused q/k/v projection.
    Qkv(usize),
    /// q/k norm + RoPE, K/V write through `slot_mapping`.
    RopeKv(usize),
    /// Paged attention (outside the graph in PIECEWISE mode).
    Attention(usize),
    OProj(usize),
    /// Post-attention RMSNorm (adds the attention output to the residual).
    PostNorm(usize),
    GateUp(usize),
    SiluMul(usize),
    Down(usize),
    /// Final norm on the logits rows (`logits_indices`).
    FinalNorm,
    /// LM head on the logits rows: f32 logits (bf16-rounded).
    LmHead,
}

impl Op {
    /// The op's kind, without its layer (profiles, logs).
    pub fn kind(self) -> &'static str {
        match self {
            Op::Embed => "embed",
            Op::InputNorm(_) => "input_norm",
            Op::Qkv(_) => "qkv_proj",
            Op::RopeKv(_) => "qk_norm_rope_kv",
            Op::Attention(_) => "attention",
            Op::OProj(_) => "o_proj",
            Op::PostNorm(_) => "post_norm",
            Op::GateUp(_) => "gate_up_proj",
            Op::SiluMul(_) => "silu_mul",
            Op::Down(_) => "down_proj",
            Op::FinalNorm => "final_norm",
            Op::LmHead => "lm_head",
        }
    }
}

/// The forward pass's ops for `layers` layers, in order.
pub fn forward_ops(layers: usize) -> Vec<Op> {
    let mut ops = vec![Op::Embed];
    for l in 0..layers {
        ops.extend([
            Op::InputNorm(l),
            Op::Qkv(l),
            Op::RopeKv(l),
            Op::Attention(l),
            Op::OProj(l),
            Op::PostNorm(l),
            Op::GateUp(l),
            Op::SiluMul(l),
            Op::Down(l),
        ]);
    }
    ops.extend([Op::FinalNorm, Op::LmHead]);
    ops
}

/// Activation scratch rows, all `[max_tokens, width]` bf16 (persistent; padded rows hold
/// whatever the last step left).
#[derive(Debug, Clone)]
pub struct Scratch {
    pub residual: Vec<u16>,
    pub x: Vec<u16>,
    pub delta: Vec<u16>,
    pub qkv: Vec<u16>,
    pub q: Vec<u16>,
    pub attn: Vec<u16>,
    pub gate_up: Vec<u16>,
    pub act: Vec<u16>,
    /// `[max_logits, hidden]`: final-normed logits rows.
    pub final_x: Vec<u16>,
}

/// The CPU forward pass with its KV caches and RoPE table.
pub struct HostModel {
    pub w: HostWeights,
    pub kv: KvLayout,
    pub k_cache: Vec<Vec<u16>>,
    pub v_cache: Vec<Vec<u16>>,
    /// [`k::rope_table`] for positions `0..rope_len`.
    pub rope: Vec<u16>,
    pub rope_len: usize,
    pub s: Scratch,
    /// The order of the GEMMs' sums: the plan's ([`super::gpu::KernelPlan::gemm_order`]).
    pub order: k::GemmOrder,
}

impl HostModel {
    /// Caches of `cap.num_blocks x cap.block_size` slots and scratch for `cap.max_tokens`
    /// rows; RoPE table for `cap.max_model_len` positions.
    pub fn new(w: HostWeights, cap: &Capacity) -> HostModel {
        let c = &w.cfg;
        let kv = KvLayout {
            num_blocks: cap.num_blocks,
            block_size: cap.block_size,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
        };
        let t = cap.max_tokens;
        let heads = c.num_heads + 2 * c.num_kv_heads;
        let s = Scratch {
            residual: vec![0; t * c.hidden_size],
            x: vec![0; t * c.hidden_size],
            delta: vec![0; t * c.hidden_size],
            qkv: vec![0; t * heads * c.head_dim],
            q: vec![0; t * c.num_heads * c.head_dim],
            attn: vec![0; t * c.num_heads * c.head_dim],
            gate_up: vec![0; t * 2 * c.intermediate_size],
            act: vec![0; t * c.intermediate_size],
            final_x: vec![0; cap.max_logits * c.hidden_size],
        };
        let order = super::gpu::KernelPlan::for_model(&w.cfg).gemm_order();
        HostModel {
            rope: k::rope_table(c.rope_theta, c.head_dim, cap.max_model_len),
            rope_len: cap.max_model_len,
            k_cache: vec![vec![0; kv.len()]; c.num_layers],
            v_cache: vec![vec![0; kv.len()]; c.num_layers],
            kv,
            s,
            w,
            order,
        }
    }

    /// Runs every op of the forward pass on `b` (after `prepare_inputs`, `prepare_rows`,
    /// `build_metadata`): `b.logits` rows `0..num_logits` get the logits.
    pub fn forward(&mut self, b: &mut HostBuffers) {
        for op in forward_ops(self.w.cfg.num_layers) {
            self.run(op, b);
        }
    }

    /// One op (the twin of one kernel launch in `super::gpu`).
    pub fn run(&mut self, op: Op, b: &mut HostBuffers) {
        let c = self.w.cfg.clone();
        let (h, hd, inter) = (c.hidden_size, c.head_dim, c.intermediate_size);
        let heads = c.num_heads + 2 * c.num_kv_heads;
        let padded = b.counts[C_PADDED_TOKENS].max(0) as usize;
        let real = b.counts[C_META_TOKENS].max(0) as usize;
        let order = self.order;
        let s = &mut self.s;
        let gemm_bf16 = |x: &[u16], k: usize, w: &[u16], n: usize, out: &mut [u16]| {
            let y = k::gemm_in(order, x, padded, k, w, n);
            for (o, v) in out.iter_mut().zip(y) {
                *o = f32_to_bf16(v);
            }
        };
        match op {
            Op::Embed => {
                for t in 0..padded {
                    let id = b.input_ids[t];
                    let row = &mut s.residual[t * h..(t + 1) * h];
                    match usize::try_from(id).ok().filter(|&i| i < c.vocab_size) {
                        Some(i) => row.copy_from_slice(&self.w.embed[i * h..(i + 1) * h]),
                        None => {
                            row.fill(0);
                            if t < real {
                                b.counters[CTR_OUT_OF_RANGE] += 1;
                            }
                        }
                    }
                }
            }
            Op::InputNorm(l) | Op::PostNorm(l) => {
                let lw = &self.w.layers[l];
                let (w, add) = if let Op::InputNorm(_) = op { (&lw.input_norm, l > 0) } else { (&lw.post_norm, true) };
                for t in 0..padded {
                    let r = t * h..(t + 1) * h;
                    let delta = add.then(|| &s.delta[r.clone()]);
                    k::rmsnorm_row(delta, &mut s.residual[r.clone()], w, c.rms_norm_eps, true, &mut s.x[r]);
                }
            }
            Op::Qkv(l) => gemm_bf16(&s.x, h, &self.w.layers[l].qkv, heads * hd, &mut s.qkv),
            Op::RopeKv(l) => {
                let lw = &self.w.layers[l];
                let norm = |w: &Vec<u16>| if w.is_empty() { None } else { Some(w.clone()) };
                let (qn, kn) = (norm(&lw.q_norm), norm(&lw.k_norm));
                for t in 0..padded {
                    let slot = if t < real { b.slot_mapping[t] } else { -1 };
                    let slots = self.kv.slots() as i64;
                    if t < real && slot >= slots {
                        b.counters[CTR_OUT_OF_RANGE] += heads as u32;
                    }
                    let in_cache = (0..slots).contains(&slot).then_some(slot as usize);
                    let mut pos = b.positions[t];
                    if pos < 0 || pos >= self.rope_len as i64 {
                        if t < real {
                            // Counted once per head that reads the table (the kernel's warps).
                            let readers = c.num_heads + if in_cache.is_some() { c.num_kv_heads } else { 0 };
                            b.counters[CTR_OUT_OF_RANGE] += readers as u32;
                        }
                        pos = 0;
                    }
                    let cs = &self.rope[pos as usize * hd..(pos as usize + 1) * hd];
                    let row = &s.qkv[t * heads * hd..(t + 1) * heads * hd];
                    for hh in 0..c.num_heads {
                        let out = k::norm_rope_head(&row[hh * hd..(hh + 1) * hd], qn.as_deref(), c.rms_norm_eps, cs);
                        let q0 = (t * c.num_heads + hh) * hd;
                        s.q[q0..q0 + hd].copy_from_slice(&out);
                    }
                    if let Some(slot) = in_cache {
                        for kvh in 0..c.num_kv_heads {
                            let src = &row[(c.num_heads + kvh) * hd..(c.num_heads + kvh + 1) * hd];
                            let out = k::norm_rope_head(src, kn.as_deref(), c.rms_norm_eps, cs);
                            let o = self.kv.offset(slot, kvh);
                            self.k_cache[l][o..o + hd].copy_from_slice(&out);
                            let v0 = (c.num_heads + c.num_kv_heads + kvh) * hd;
                            self.v_cache[l][o..o + hd].copy_from_slice(&row[v0..v0 + hd]);
                        }
                    }
                }
            }
            Op::Attention(l) => {
                let n = b.counts[C_NUM_REQS].max(0) as usize;
                if n == 0 {
                    return;
                }
                let total = b.cu_seqlens_q[n] as usize;
                let group = c.num_heads / c.num_kv_heads;
                let bpr = b.cap.blocks_per_row;
                let (kc, vc) = (&self.k_cache[l], &self.v_cache[l]);
                for t in 0..total {
                    let r = (0..n).rev().find(|&r| b.cu_seqlens_q[r] as usize <= t).unwrap_or(0);
                    let used = i64::from(b.seqused_k[r]);
                    let mut nk = b.positions[t] + 1;
                    if nk > used || nk < 1 {
                        b.counters[CTR_OUT_OF_RANGE] += c.num_heads as u32;
                        nk = if nk < 1 { 0 } else { used };
                    }
                    let blocks = &b.meta_block_table[r * bpr..(r + 1) * bpr];
                    let mut slots = Vec::with_capacity(nk as usize);
                    let mut bad = 0u32;
                    for key in 0..nk as usize {
                        let s = self.kv.slot(blocks, key);
                        bad += u32::from(s.is_none());
                        slots.push(s);
                    }
                    b.counters[CTR_OUT_OF_RANGE] += bad * c.num_heads as u32;
                    for hh in 0..c.num_heads {
                        let kvh = hh / group;
                        let kv = |slot: usize| {
                            let o = self.kv.offset(slot, kvh);
                            (&kc[o..o + hd], &vc[o..o + hd])
                        };
                        let q0 = (t * c.num_heads + hh) * hd;
                        let out = k::attention_head(&s.q[q0..q0 + hd], &slots, &kv);
                        s.attn[q0..q0 + hd].copy_from_slice(&out);
                    }
                }
            }
            Op::OProj(l) => gemm_bf16(&s.attn, c.num_heads * hd, &self.w.layers[l].o, h, &mut s.delta),
            Op::GateUp(l) => gemm_bf16(&s.x, h, &self.w.layers[l].gate_up, 2 * inter, &mut s.gate_up),
            Op::SiluMul(_) => {
                for t in 0..padded {
                    for i in 0..inter {
                        let g = s.gate_up[t * 2 * inter + i];
                        let u = s.gate_up[t * 2 * inter + inter + i];
                        s.act[t * inter + i] = k::silu_mul(g, u);
                    }
                }
            }
            Op::Down(l) => gemm_bf16(&s.act, inter, &self.w.layers[l].down, h, &mut s.delta),
            Op::FinalNorm => {
                let rows = b.counts[C_NUM_LOGITS].max(0) as usize;
                for j in 0..rows {
                    let src = b.logits_indices[j] as usize;
                    let r = src * h..(src + 1) * h;
                    k::rmsnorm_row(
                        Some(&s.delta[r.clone()]),
                        &mut s.residual[r],
                        &self.w.final_norm,
                        c.rms_norm_eps,
                        false,
                        &mut s.final_x[j * h..(j + 1) * h],
                    );
                }
            }
            Op::LmHead => {
                let rows = b.counts[C_NUM_LOGITS].max(0) as usize;
                let vocab = c.vocab_size;
                let y = k::gemm_in(order, &s.final_x, rows, h, self.w.lm_head(), vocab);
                for (o, v) in b.logits[..rows * vocab].iter_mut().zip(y) {
                    *o = round_bf(v);
                }
            }
        }
    }
}

/// The logits of row `j` as bf16-exact f32 (for digests and margins).
pub fn logits_row(b: &HostBuffers, j: usize) -> &[f32] {
    &b.logits[j * b.cap.vocab..(j + 1) * b.cap.vocab]
}

/// Argmax of a row (lowest index on ties, as `argmax_rows` and the greedy sampler) and
/// its value.
pub fn top1(row: &[f32]) -> (u32, f32) {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    (best.0 as u32, best.1)
}

/// Top-1 minus top-2 logit of a row (the near-tie margin a divergence report quotes).
pub fn margin(row: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in row {
        if x > a {
            b = a;
            a = x;
        } else if x > b {
            b = x;
        }
    }
    a - b
}

/// A digest of a logits row: FNV-1a over the bf16 bits (equal rows, equal digests).
pub fn digest(row: &[f32]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &x in row {
        for byte in f32_to_bf16(x).to_le_bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
