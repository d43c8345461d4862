//! The CPU reference forward pass of a Qwen3 / Qwen2 / Llama decoder: f32 arithmetic over
//! the bf16 weights, one token row at a time, so that its results do not depend on how
//! tokens are batched (a prefill of n tokens and n single-token decodes give the same
//! bits). It is the yardstick of the GPU forward pass on small models and lets CI test
//! generation without a GPU.
//!
//! Mirrors `transformers` `Qwen3ForCausalLM` (`transformers/models/qwen3/modeling_qwen3.py`;
//! Qwen2 and Llama in `models/qwen2/modeling_qwen2.py`, `models/llama/modeling_llama.py`):
//!
//! * `x = embed_tokens[token]`;
//! * per layer: `h = RMSNorm(x)·w_in` (`Qwen3RMSNorm`: `x · rsqrt(mean(x²) + eps)`, then
//!   times the weight); `q = h Wqᵀ (+ bq)`, `k`, `v` likewise (biases: Qwen2 only); Qwen3
//!   applies RMSNorm over each head's `head_dim` to q and k (`q_norm`, `k_norm`); RoPE
//!   (`apply_rotary_pos_emb`, neox style `rotate_half`: pairs `(i, i + d/2)`, angle
//!   `pos · θ^(−2i/d)`, inverse frequencies rounded to f32 and the angle an f32 product
//!   as `Qwen3RotaryEmbedding`); causal attention with scale `head_dim^−½`, query head
//!   `h` reading KV head `h / (heads / kv_heads)` (`repeat_kv`); `x += o_proj(attn)`;
//!   `x += down(SiLU(gate(h₂)) · up(h₂))` with `h₂ = RMSNorm(x)·w_post`;
//! * `logits = RMSNorm(x)·w_final · Eᵀ` (`E` the embedding when `tie_word_embeddings`,
//!   else `lm_head.weight`).
//!
//! Differences from `transformers` in bf16: no rounding to bf16 between operations (the
//! activations stay f32), so agreement is to bf16 tolerance, not bitwise. Dot products
//! sum in 8 interleaved f32 lanes combined pairwise, a fixed order (no fused
//! multiply-add: Rust never contracts `a * b + c`), so results are reproducible on every
//! machine.

use super::{names, DType, ModelConfig, WeightSource};
use crate::error::{ExecError, Result};

/// bf16 bits to f32 (exact).
#[inline]
fn bf(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}

/// A bf16 tensor's elements as bf16 bits, after checking dtype and shape.
fn load<W: WeightSource + ?Sized>(w: &W, name: &str, shape: &[usize]) -> Result<Vec<u16>> {
    let t = w.expect_bf16(name, shape)?;
    debug_assert_eq!(t.dtype, DType::BF16);
    Ok(t.bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
}

fn load_f32<W: WeightSource + ?Sized>(w: &W, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    Ok(load(w, name, shape)?.into_iter().map(bf).collect())
}

/// `Σ a[i]·b[i]` in the fixed order described in the module doc; `a` as bf16 bits.
#[inline]
fn dot_bf16(a: &[u16], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let n8 = a.len() / 8 * 8;
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += bf(ca[l]) * cb[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in a[n8..].iter().zip(&b[n8..]) {
        tail += bf(*x) * y;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// `Σ a[i]·b[i]` for two f32 vectors, same order as [`dot_bf16`].
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let n8 = a.len() / 8 * 8;
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in a[n8..].iter().zip(&b[n8..]) {
        tail += x * y;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// `y = W x` for `W` `[rows, x.len()]` in bf16; rows split over threads when large (each
/// row's arithmetic is the same whatever the split).
fn matvec(w: &[u16], x: &[f32], rows: usize) -> Vec<f32> {
    let cols = x.len();
    let mut y = vec![0f32; rows];
    super::kernels_ref::fill_parallel(&mut y, rows * cols, |r| dot_bf16(&w[r * cols..(r + 1) * cols], x));
    y
}

/// `x · rsqrt(mean(x²) + eps) · w` (`Qwen3RMSNorm.forward` in f32).
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = dot(x, x) / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| (v * r) * g).collect()
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Token id of the largest value (lowest id on ties, as `torch.argmax` and the engine's
/// argmax) and its margin over the second largest (0 for a tie or a 1-entry row).
pub fn top1_margin(row: &[f32]) -> (u32, f32) {
    let mut best = (0usize, f32::NEG_INFINITY);
    let mut second = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            second = best.1;
            best = (i, v);
        } else if v > second {
            second = v;
        }
    }
    let margin = if second.is_finite() { best.1 - second } else { 0.0 };
    (best.0 as u32, margin)
}

/// Generated tokens, each with its top-1/top-2 margin.
pub type Generated = Vec<(u32, f32)>;

/// One decoder layer's weights (bf16 bits for matrices, f32 for norms and biases).
struct Layer {
    input_norm: Vec<f32>,
    wq: Vec<u16>,
    wk: Vec<u16>,
    wv: Vec<u16>,
    bias: Option<[Vec<f32>; 3]>,
    wo: Vec<u16>,
    qk_norm: Option<[Vec<f32>; 2]>,
    post_norm: Vec<f32>,
    gate: Vec<u16>,
    up: Vec<u16>,
    down: Vec<u16>,
}

/// The reference model: weights copied out of a [`WeightSource`] (bf16, 2 bytes a
/// parameter).
pub struct Reference {
    cfg: ModelConfig,
    embed: Vec<u16>,
    lm_head: Option<Vec<u16>>,
    final_norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Reference {
    /// Reads every tensor `cfg` needs from `w` (bf16, exact shapes, else
    /// [`ExecError::Checkpoint`] naming the tensor).
    pub fn new<W: WeightSource + ?Sized>(cfg: &ModelConfig, w: &W) -> Result<Reference> {
        let (h, hd, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (q, kv) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let n = |s: &str| names::layer(l, s);
            let bias = if cfg.architecture.has_qkv_bias() {
                Some([
                    load_f32(w, &n("self_attn.q_proj.bias"), &[q])?,
                    load_f32(w, &n("self_attn.k_proj.bias"), &[kv])?,
                    load_f32(w, &n("self_attn.v_proj.bias"), &[kv])?,
                ])
            } else {
                None
            };
            let qk_norm = if cfg.architecture.has_qk_norm() {
                Some([
                    load_f32(w, &n("self_attn.q_norm.weight"), &[hd])?,
                    load_f32(w, &n("self_attn.k_norm.weight"), &[hd])?,
                ])
            } else {
                None
            };
            layers.push(Layer {
                input_norm: load_f32(w, &n("input_layernorm.weight"), &[h])?,
                wq: load(w, &n("self_attn.q_proj.weight"), &[q, h])?,
                wk: load(w, &n("self_attn.k_proj.weight"), &[kv, h])?,
                wv: load(w, &n("self_attn.v_proj.weight"), &[kv, h])?,
                bias,
                wo: load(w, &n("self_attn.o_proj.weight"), &[h, q])?,
                qk_norm,
                post_norm: load_f32(w, &n("post_attention_layernorm.weight"), &[h])?,
                gate: load(w, &n("mlp.gate_proj.weight"), &[i, h])?,
                up: load(w, &n("mlp.up_proj.weight"), &[i, h])?,
                down: load(w, &n("mlp.down_proj.weight"), &[h, i])?,
            });
        }
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(load(w, names::LM_HEAD, &[cfg.vocab_size, h])?) };
        // inv_freq[j] = 1 / θ^(2j/d), computed in f64 and rounded to f32.
        let inv_freq =
            (0..hd / 2).map(|j| (1.0 / f64::from(cfg.rope_theta).powf((2 * j) as f64 / hd as f64)) as f32).collect();
        Ok(Reference {
            cfg: cfg.clone(),
            embed: load(w, names::EMBED, &[cfg.vocab_size, h])?,
            lm_head,
            final_norm: load_f32(w, names::FINAL_NORM, &[h])?,
            layers,
            inv_freq,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// A fresh KV cache for one sequence.
    pub fn session(&self) -> Session<'_> {
        Session {
            model: self,
            keys: vec![Vec::new(); self.cfg.num_layers],
            values: vec![Vec::new(); self.cfg.num_layers],
            len: 0,
        }
    }

    /// The logits row of every position of `tokens` (row `i` predicts token `i + 1`).
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut s = self.session();
        s.extend(tokens)
    }

    /// Greedy continuation of `prompt`: `n` tokens, each the argmax (lowest id on ties)
    /// of the previous position's logits.
    pub fn generate(&self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        Ok(self.generate_with_margins(prompt, n)?.into_iter().map(|(t, _)| t).collect())
    }

    /// [`Reference::generate`] with, for each generated token, its top-1/top-2 logit
    /// margin at the position that chose it.
    pub fn generate_with_margins(&self, prompt: &[u32], n: usize) -> Result<Generated> {
        Ok(self.prefill_and_generate(prompt, n)?.1)
    }

    /// The prompt's logits rows ([`Reference::logits`]) and the greedy continuation with
    /// margins ([`Reference::generate_with_margins`]), the prompt processed once.
    pub fn prefill_and_generate(&self, prompt: &[u32], n: usize) -> Result<(Vec<Vec<f32>>, Generated)> {
        if prompt.is_empty() {
            return Err(ExecError::Input("empty prompt (no tokens)".into()));
        }
        let mut s = self.session();
        let rows = s.extend(prompt)?;
        let mut row = rows.last().cloned().unwrap_or_default();
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            let (t, m) = top1_margin(&row);
            out.push((t, m));
            if k + 1 < n {
                row = s.step(t)?;
            }
        }
        Ok((rows, out))
    }
}

/// One sequence's KV cache over a [`Reference`].
pub struct Session<'a> {
    model: &'a Reference,
    /// Per layer: `len × kv_heads × head_dim` keys after RoPE.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl Session<'_> {
    /// Tokens processed so far (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token was processed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `tokens` one by one; the logits row of each.
    pub fn extend(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        tokens.iter().map(|&t| self.step(t)).collect()
    }

    /// Processes `token` at position [`Session::len`], returns its logits row.
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        let m = self.model;
        let c = &m.cfg;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (nh, nkv) = (c.num_heads, c.num_kv_heads);
        let group = nh / nkv;
        let t = token as usize;
        if t >= c.vocab_size {
            return Err(ExecError::Input(format!(
                "token id {token} is outside the vocabulary (size {})",
                c.vocab_size
            )));
        }
        let pos = self.len;
        // RoPE angles of this position.
        let (cos, sin): (Vec<f32>, Vec<f32>) = m
            .inv_freq
            .iter()
            .map(|&f| {
                let a = pos as f32 * f;
                ((f64::from(a)).cos() as f32, (f64::from(a)).sin() as f32)
            })
            .unzip();
        let rope = |v: &mut [f32]| {
            let half = hd / 2;
            for j in 0..half {
                let (x1, x2) = (v[j], v[j + half]);
                v[j] = x1 * cos[j] - x2 * sin[j];
                v[j + half] = x2 * cos[j] + x1 * sin[j];
            }
        };
        let scale = 1.0 / (hd as f32).sqrt();
        let mut x: Vec<f32> = m.embed[t * h..(t + 1) * h].iter().map(|&v| bf(v)).collect();
        for (li, l) in m.layers.iter().enumerate() {
            let hn = rms_norm(&x, &l.input_norm, c.rms_norm_eps);
            let mut q = matvec(&l.wq, &hn, nh * hd);
            let mut k = matvec(&l.wk, &hn, nkv * hd);
            let mut v = matvec(&l.wv, &hn, nkv * hd);
            if let Some([bq, bk, bv]) = &l.bias {
                for (a, b) in q.iter_mut().zip(bq).chain(k.iter_mut().zip(bk)).chain(v.iter_mut().zip(bv)) {
                    *a += b;
                }
            }
            if let Some([qn, kn]) = &l.qk_norm {
                for head in q.chunks_mut(hd) {
                    let n = rms_norm(head, qn, c.rms_norm_eps);
                    head.copy_from_slice(&n);
                }
                for head in k.chunks_mut(hd) {
                    let n = rms_norm(head, kn, c.rms_norm_eps);
                    head.copy_from_slice(&n);
                }
            }
            q.chunks_mut(hd).for_each(rope);
            k.chunks_mut(hd).for_each(rope);
            self.keys[li].extend_from_slice(&k);
            self.values[li].extend_from_slice(&v);
            let (keys, values) = (&self.keys[li], &self.values[li]);
            let n_ctx = pos + 1;
            let mut attn = vec![0f32; nh * hd];
            for head in 0..nh {
                let kvh = head / group;
                let qh = &q[head * hd..(head + 1) * hd];
                let scores: Vec<f32> = (0..n_ctx)
                    .map(|j| dot(qh, &keys[(j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd]) * scale)
                    .collect();
                let mx = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - mx).exp()).collect();
                let sum: f32 = e.iter().sum();
                let out = &mut attn[head * hd..(head + 1) * hd];
                for (j, ej) in e.iter().enumerate() {
                    let p = ej / sum;
                    let vj = &values[(j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd];
                    for (o, vv) in out.iter_mut().zip(vj) {
                        *o += p * vv;
                    }
                }
            }
            let o = matvec(&l.wo, &attn, h);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let h2 = rms_norm(&x, &l.post_norm, c.rms_norm_eps);
            let g = matvec(&l.gate, &h2, c.intermediate_size);
            let u = matvec(&l.up, &h2, c.intermediate_size);
            let act: Vec<f32> = g.iter().zip(&u).map(|(a, b)| silu(*a) * b).collect();
            let d = matvec(&l.down, &act, h);
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
        let xf = rms_norm(&x, &m.final_norm, c.rms_norm_eps);
        self.len += 1;
        Ok(matvec(m.lm_head.as_ref().unwrap_or(&m.embed), &xf, c.vocab_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::make::random_weights;
    use crate::model::{Architecture, MemWeights};

    /// A 1-layer model small enough to compute by hand: hidden 2, one head of dim 2 (so
    /// RoPE rotates the pair by `pos` radians: θ^0 = 1), intermediate 1, vocab 2, tied.
    /// E = [[1, 0], [0, 2]], Wq = Wk = Wv = Wo = I, gate = [1, 1], up = [1, 0],
    /// down = [1, 0]ᵀ, norms 1, q_norm = `q_gain` (Qwen3 only).
    fn hand_model(arch: Architecture, q_gain: f32) -> Reference {
        let cfg = ModelConfig {
            architecture: arch,
            vocab_size: 2,
            hidden_size: 2,
            intermediate_size: 1,
            num_layers: 1,
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 2,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            max_position_embeddings: 16,
            tie_word_embeddings: true,
        };
        let mut w = MemWeights::new();
        let eye = [1.0, 0.0, 0.0, 1.0];
        w.insert_bf16(names::EMBED, &[2, 2], &[1.0, 0.0, 0.0, 2.0]);
        for p in ["q", "k", "v", "o"] {
            w.insert_bf16(&names::layer(0, &format!("self_attn.{p}_proj.weight")), &[2, 2], &eye);
        }
        if arch.has_qkv_bias() {
            for p in ["q", "k", "v"] {
                w.insert_bf16(&names::layer(0, &format!("self_attn.{p}_proj.bias")), &[2], &[0.0, 0.0]);
            }
        }
        if arch.has_qk_norm() {
            w.insert_bf16(&names::layer(0, "self_attn.q_norm.weight"), &[2], &[q_gain, q_gain]);
            w.insert_bf16(&names::layer(0, "self_attn.k_norm.weight"), &[2], &[1.0, 1.0]);
        }
        w.insert_bf16(&names::layer(0, "mlp.gate_proj.weight"), &[1, 2], &[1.0, 1.0]);
        w.insert_bf16(&names::layer(0, "mlp.up_proj.weight"), &[1, 2], &[1.0, 0.0]);
        w.insert_bf16(&names::layer(0, "mlp.down_proj.weight"), &[2, 1], &[1.0, 0.0]);
        for n in ["input_layernorm.weight", "post_attention_layernorm.weight"] {
            w.insert_bf16(&names::layer(0, n), &[2], &[1.0, 1.0]);
        }
        w.insert_bf16(names::FINAL_NORM, &[2], &[1.0, 1.0]);
        Reference::new(&cfg, &w).unwrap()
    }

    /// The logits of tokens [0, 1] worked out by hand (f64; eps neglected, 1e-6 relative).
    /// Position 0: x = (1, 0), RMSNorm gives (√2, 0); one key, so attention returns
    /// v = (√2, 0); the MLP adds along the first axis only; the final norm gives (√2, 0)
    /// and logits (√2, 0).
    /// Position 1: x = (0, 2), h = (0, √2); q = k₁ = rot₁(h)·gain = (−√2 s, √2 c)·gain with
    /// c, s = cos 1, sin 1; k₀ = (√2, 0); scores (q·k₀, q·k₁)/√2 = gain·(−√2 s, √2);
    /// attn = p₀ (√2, 0) + p₁ (0, √2); x₁ = x + attn; h₂ = RMSNorm(x₁); the MLP adds
    /// (SiLU(h₂₀ + h₂₁)·h₂₀, 0); logits = (n₀, 2 n₁) for n = RMSNorm(x₂).
    fn by_hand(gain: f64) -> [[f64; 2]; 2] {
        let r2 = 2f64.sqrt();
        let rms = |v: [f64; 2]| {
            let r = ((v[0] * v[0] + v[1] * v[1]) / 2.0).sqrt();
            [v[0] / r, v[1] / r]
        };
        // q·k₁ = 2·gain (c² + s²): only sin 1 survives.
        let s = 1f64.sin();
        let (s0, s1) = (-gain * r2 * s, gain * r2);
        let (p0, p1) = (s0.exp() / (s0.exp() + s1.exp()), s1.exp() / (s0.exp() + s1.exp()));
        let x1 = [p0 * r2, 2.0 + p1 * r2];
        let h2 = rms(x1);
        let g = h2[0] + h2[1];
        let x2 = [x1[0] + g / (1.0 + (-g).exp()) * h2[0], x1[1]];
        let n = rms(x2);
        [[r2, 0.0], [n[0], 2.0 * n[1]]]
    }

    fn close(got: &[Vec<f32>], want: [[f64; 2]; 2]) {
        for (g, w) in got.iter().zip(want) {
            for (a, b) in g.iter().zip(w) {
                assert!((f64::from(*a) - b).abs() <= 1e-5 * b.abs().max(1.0), "got {got:?}, by hand {want:?}");
            }
        }
    }

    #[test]
    fn a_hand_computed_model_gives_the_hand_computed_logits() {
        close(&hand_model(Architecture::Llama, 1.0).logits(&[0, 1]).unwrap(), by_hand(1.0));
        close(&hand_model(Architecture::Qwen2, 1.0).logits(&[0, 1]).unwrap(), by_hand(1.0));
        // Qwen3's q_norm weight scales the scores.
        close(&hand_model(Architecture::Qwen3, 2.0).logits(&[0, 1]).unwrap(), by_hand(2.0));
        // The check can fail: a q gain of 2 is not what gain 1 computes.
        let got = hand_model(Architecture::Qwen3, 2.0).logits(&[0, 1]).unwrap();
        assert!((f64::from(got[1][0]) - by_hand(1.0)[1][0]).abs() > 1e-3);
    }

    fn tiny() -> (ModelConfig, Reference) {
        let cfg = ModelConfig::tiny();
        let r = Reference::new(&cfg, &random_weights(&cfg, 11)).unwrap();
        (cfg, r)
    }

    #[test]
    fn causal_a_prefix_keeps_its_logits_bit_for_bit_when_tokens_are_appended() {
        let (_, r) = tiny();
        let tokens = [5, 17, 300, 2, 2, 99, 511, 0];
        let all = r.logits(&tokens).unwrap();
        for n in 1..tokens.len() {
            assert_eq!(r.logits(&tokens[..n]).unwrap(), all[..n].to_vec(), "prefix {n}");
        }
        // ... and later tokens do depend on earlier ones (the check can fail).
        let other = r.logits(&[6, 17, 300]).unwrap();
        assert_ne!(other[2], all[2]);
    }

    #[test]
    fn generate_is_the_argmax_chain_of_logits() {
        let (_, r) = tiny();
        let prompt = [1, 2, 3];
        let gen = r.generate_with_margins(&prompt, 12).unwrap();
        let toks: Vec<u32> = gen.iter().map(|g| g.0).collect();
        assert_eq!(r.generate(&prompt, 12).unwrap(), toks);
        let mut seq = prompt.to_vec();
        seq.extend(&toks[..11]);
        let rows = r.logits(&seq).unwrap();
        for (k, (t, m)) in gen.iter().enumerate() {
            assert_eq!(top1_margin(&rows[prompt.len() - 1 + k]), (*t, *m), "position {k}");
            assert!(*m >= 0.0);
        }
        let (prefill, gen2) = r.prefill_and_generate(&prompt, 12).unwrap();
        assert_eq!((prefill, gen2), (r.logits(&prompt).unwrap(), gen));
        assert!(r.generate(&[], 3).is_err());
        assert!(r.logits(&[512]).unwrap_err().to_string().contains("outside the vocabulary"));
    }

    #[test]
    fn gqa_equals_multi_head_attention_with_the_kv_heads_repeated() {
        // tiny: 4 query heads on 2 KV heads; the same model with 4 KV heads whose k/v
        // rows repeat each KV head twice (transformers' repeat_kv) computes the same.
        let (cfg, r) = tiny();
        let w = random_weights(&cfg, 11);
        let mut mha_cfg = cfg.clone();
        mha_cfg.num_kv_heads = 4;
        let mut mha = w.clone();
        let hd = cfg.head_dim;
        for l in 0..cfg.num_layers {
            for p in ["k", "v"] {
                let name = names::layer(l, &format!("self_attn.{p}_proj.weight"));
                let t = w.tensor(&name).unwrap();
                let row_bytes = cfg.hidden_size * 2;
                let mut bytes = Vec::new();
                for head in 0..4 {
                    let kvh = head / 2;
                    bytes.extend_from_slice(&t.bytes[kvh * hd * row_bytes..(kvh + 1) * hd * row_bytes]);
                }
                mha.insert_raw(&name, DType::BF16, &[4 * hd, cfg.hidden_size], bytes);
            }
        }
        let m = Reference::new(&mha_cfg, &mha).unwrap();
        let tokens = [7, 8, 9, 10, 11];
        assert_eq!(m.logits(&tokens).unwrap(), r.logits(&tokens).unwrap());
        // Mapping query heads to the wrong KV heads does change the result.
        let mut wrong = mha.clone();
        let name = names::layer(0, "self_attn.k_proj.weight");
        let t = mha.tensor(&name).unwrap();
        let mut bytes = t.bytes.to_vec();
        bytes.rotate_left(hd * cfg.hidden_size * 2);
        wrong.insert_raw(&name, DType::BF16, &[4 * hd, cfg.hidden_size], bytes);
        assert_ne!(Reference::new(&mha_cfg, &wrong).unwrap().logits(&tokens).unwrap(), r.logits(&tokens).unwrap());
    }

    #[test]
    fn untied_models_read_lm_head_and_bad_weights_are_named() {
        let mut cfg = ModelConfig::tiny();
        cfg.tie_word_embeddings = false;
        let mut w = random_weights(&cfg, 4);
        let r = Reference::new(&cfg, &w).unwrap();
        let tied = Reference::new(&ModelConfig::tiny(), &w).unwrap();
        assert_ne!(r.logits(&[3]).unwrap(), tied.logits(&[3]).unwrap(), "lm_head is not the embedding");
        w.remove(names::LM_HEAD);
        assert_eq!(Reference::new(&cfg, &w).unwrap_err().to_string(), "checkpoint: missing tensor lm_head.weight");
        w.insert_raw(names::FINAL_NORM, DType::F32, &[64], vec![0; 256]);
        let e = Reference::new(&ModelConfig::tiny(), &w).unwrap_err().to_string();
        assert_eq!(e, "checkpoint: tensor model.norm.weight: expected bf16 [64], found F32 [64]");
    }

    #[test]
    fn top1_margin_breaks_ties_low_and_measures_the_gap() {
        assert_eq!(top1_margin(&[1.0, 3.0, 2.5]), (1, 0.5));
        assert_eq!(top1_margin(&[3.0, 1.0, 3.0]), (0, 0.0));
        assert_eq!(top1_margin(&[-1.0]), (0, 0.0));
    }
}
