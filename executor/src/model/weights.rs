//! The forward pass's view of the weights: bf16 matrices as `u16` words, q/k/v and
//! gate/up fused into one matrix each (vLLM's `QKVParallelLinear` / `MergedColumnParallelLinear`
//! layout, `vllm/model_executor/models/qwen3.py`), read from any [`WeightSource`]; and
//! [`random_weights`], an in-memory [`WeightSource`] of seeded random weights for tests and
//! benchmarks (no checkpoint on disk).

use specreplay_sim::splitmix::Rng;

use super::{names, Architecture, MemWeights, ModelConfig, TensorRef, WeightSource};
use crate::error::{ExecError, Result};

/// One decoder layer's weights.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub input_norm: Vec<u16>,
    /// `[q_proj; k_proj; v_proj]`: `[(heads + 2 kv_heads) * head_dim, hidden]`.
    pub qkv: Vec<u16>,
    /// `[head_dim]` each; empty when the architecture has no q/k norm.
    pub q_norm: Vec<u16>,
    pub k_norm: Vec<u16>,
    /// `[hidden, heads * head_dim]`.
    pub o: Vec<u16>,
    pub post_norm: Vec<u16>,
    /// `[gate_proj; up_proj]`: `[2 * intermediate, hidden]`.
    pub gate_up: Vec<u16>,
    /// `[hidden, intermediate]`.
    pub down: Vec<u16>,
}

/// Every weight of the model, checked against the config.
#[derive(Debug, Clone)]
pub struct HostWeights {
    pub cfg: ModelConfig,
    /// `[vocab, hidden]`.
    pub embed: Vec<u16>,
    /// `[vocab, hidden]`; `None` when tied to the embedding.
    pub lm_head: Option<Vec<u16>>,
    pub final_norm: Vec<u16>,
    pub layers: Vec<LayerWeights>,
}

fn words(t: TensorRef<'_>) -> Vec<u16> {
    t.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()
}

/// Checks that the config fits the kernels (`qwen.cu`): GEMM reductions need every
/// reduced width to be a multiple of 8, RoPE an even head_dim, attention at most 256.
pub fn check_shapes(cfg: &ModelConfig) -> Result<()> {
    let bad = |m: String| Err(ExecError::Checkpoint(m));
    if cfg.architecture == Architecture::Qwen2 {
        return bad("Qwen2 (q/k/v biases) is not supported by the GPU forward pass yet".into());
    }
    if cfg.num_kv_heads == 0 || !cfg.num_heads.is_multiple_of(cfg.num_kv_heads) {
        return bad(format!("{} attention heads are not a multiple of {} kv heads", cfg.num_heads, cfg.num_kv_heads));
    }
    if !cfg.head_dim.is_multiple_of(8) || cfg.head_dim > 256 || cfg.head_dim == 0 {
        return bad(format!("head_dim {} must be a multiple of 8 and at most 256", cfg.head_dim));
    }
    for (what, v) in [("hidden_size", cfg.hidden_size), ("intermediate_size", cfg.intermediate_size)] {
        if !v.is_multiple_of(8) || v == 0 {
            return bad(format!("{what} {v} must be a positive multiple of 8"));
        }
    }
    if cfg.vocab_size == 0 || cfg.num_layers == 0 {
        return bad("empty vocabulary or no layers".into());
    }
    Ok(())
}

impl HostWeights {
    /// Reads and fuses every tensor `cfg` needs from `src` (bf16, exact shapes; a missing
    /// tensor or wrong shape/dtype is [`ExecError::Checkpoint`] naming it).
    pub fn load(cfg: &ModelConfig, src: &dyn WeightSource) -> Result<HostWeights> {
        check_shapes(cfg)?;
        let (h, hd, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (q, kv) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
        let get = |name: &str, shape: &[usize]| src.expect_bf16(name, shape).map(words);
        let qk_norm = cfg.architecture == Architecture::Qwen3;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let n = |s: &str| names::layer(l, s);
            let mut qkv = get(&n("self_attn.q_proj.weight"), &[q, h])?;
            qkv.extend(get(&n("self_attn.k_proj.weight"), &[kv, h])?);
            qkv.extend(get(&n("self_attn.v_proj.weight"), &[kv, h])?);
            let mut gate_up = get(&n("mlp.gate_proj.weight"), &[i, h])?;
            gate_up.extend(get(&n("mlp.up_proj.weight"), &[i, h])?);
            let (q_norm, k_norm) = if qk_norm {
                (get(&n("self_attn.q_norm.weight"), &[hd])?, get(&n("self_attn.k_norm.weight"), &[hd])?)
            } else {
                (Vec::new(), Vec::new())
            };
            layers.push(LayerWeights {
                input_norm: get(&n("input_layernorm.weight"), &[h])?,
                qkv,
                q_norm,
                k_norm,
                o: get(&n("self_attn.o_proj.weight"), &[h, q])?,
                post_norm: get(&n("post_attention_layernorm.weight"), &[h])?,
                gate_up,
                down: get(&n("mlp.down_proj.weight"), &[h, i])?,
            });
        }
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(get(names::LM_HEAD, &[cfg.vocab_size, h])?) };
        Ok(HostWeights {
            cfg: cfg.clone(),
            embed: get(names::EMBED, &[cfg.vocab_size, h])?,
            lm_head,
            final_norm: get(names::FINAL_NORM, &[h])?,
            layers,
        })
    }

    /// The LM head matrix (the embedding when tied).
    pub fn lm_head(&self) -> &[u16] {
        self.lm_head.as_deref().unwrap_or(&self.embed)
    }

    /// Bytes of all weights (for bandwidth figures).
    pub fn bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| {
                l.input_norm.len()
                    + l.qkv.len()
                    + l.q_norm.len()
                    + l.k_norm.len()
                    + l.o.len()
                    + l.post_norm.len()
                    + l.gate_up.len()
                    + l.down.len()
            })
            .sum();
        2 * (l + self.embed.len() + self.lm_head.as_ref().map_or(0, Vec::len) + self.final_norm.len())
    }
}

/// Seeded random weights for `cfg` in Hugging Face's layout: linear and embedding
/// weights uniform with HF's init standard deviation (`initializer_range` 0.02,
/// `Qwen3PreTrainedModel._init_weights` draws normal(0, 0.02); uniform keeps the
/// spread without a Gaussian sampler), norm weights 1 ± 0.1 (HF initialises them
/// to 1; the spread makes the tests see the weight).
pub fn random_weights(cfg: &ModelConfig, seed: u64) -> MemWeights {
    let mut rng = Rng::new(seed);
    let mut m = MemWeights::new();
    let mut uniform = |n: usize, centre: f32, half: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                centre + half * (2.0 * u - 1.0)
            })
            .collect()
    };
    let lin = 0.02 * 3f32.sqrt();
    let (h, hd, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let (q, kv) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
    m.insert_bf16(names::EMBED, &[cfg.vocab_size, h], &uniform(cfg.vocab_size * h, 0.0, lin));
    m.insert_bf16(names::FINAL_NORM, &[h], &uniform(h, 1.0, 0.1));
    if !cfg.tie_word_embeddings {
        m.insert_bf16(names::LM_HEAD, &[cfg.vocab_size, h], &uniform(cfg.vocab_size * h, 0.0, lin));
    }
    for l in 0..cfg.num_layers {
        let n = |s: &str| names::layer(l, s);
        let shapes: [(&str, [usize; 2]); 7] = [
            ("self_attn.q_proj.weight", [q, h]),
            ("self_attn.k_proj.weight", [kv, h]),
            ("self_attn.v_proj.weight", [kv, h]),
            ("self_attn.o_proj.weight", [h, q]),
            ("mlp.gate_proj.weight", [i, h]),
            ("mlp.up_proj.weight", [i, h]),
            ("mlp.down_proj.weight", [h, i]),
        ];
        for (s, shape) in shapes {
            m.insert_bf16(&n(s), &shape, &uniform(shape[0] * shape[1], 0.0, lin));
        }
        m.insert_bf16(&n("input_layernorm.weight"), &[h], &uniform(h, 1.0, 0.1));
        m.insert_bf16(&n("post_attention_layernorm.weight"), &[h], &uniform(h, 1.0, 0.1));
        if cfg.architecture == Architecture::Qwen3 {
            m.insert_bf16(&n("self_attn.q_norm.weight"), &[hd], &uniform(hd, 1.0, 0.1));
            m.insert_bf16(&n("self_attn.k_norm.weight"), &[hd], &uniform(hd, 1.0, 0.1));
        }
    }
    m
}

/// The tiny Qwen3 of the tests: [`ModelConfig::tiny`] (`make-checkpoint --preset tiny`).
pub fn tiny_config() -> ModelConfig {
    ModelConfig::tiny()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_weights_load_fused_and_missing_or_misshaped_tensors_are_named() {
        let cfg = tiny_config();
        let w = random_weights(&cfg, 1);
        let hw = HostWeights::load(&cfg, &w).unwrap();
        assert_eq!(hw.layers.len(), 2);
        assert_eq!(hw.layers[0].qkv.len(), (4 + 2 * 2) * 16 * 64);
        assert_eq!(hw.layers[1].gate_up.len(), 2 * 128 * 64);
        assert_eq!(hw.lm_head().len(), 512 * 64);
        assert_eq!(random_weights(&cfg, 1).tensor(names::EMBED).unwrap().bytes, w.tensor(names::EMBED).unwrap().bytes);
        assert_ne!(random_weights(&cfg, 2).tensor(names::EMBED).unwrap().bytes, w.tensor(names::EMBED).unwrap().bytes);

        let mut missing = w.clone();
        missing.remove(&names::layer(1, "self_attn.k_norm.weight"));
        let e = HostWeights::load(&cfg, &missing).unwrap_err().to_string();
        assert!(e.contains("model.layers.1.self_attn.k_norm.weight"), "{e}");

        let mut wrong = w.clone();
        wrong.insert_bf16(&names::layer(0, "mlp.down_proj.weight"), &[64, 64], &[0.0; 64 * 64]);
        let e = HostWeights::load(&cfg, &wrong).unwrap_err().to_string();
        assert!(e.contains("mlp.down_proj.weight") && e.contains("[64, 128]"), "{e}");

        let mut odd = cfg.clone();
        odd.head_dim = 12;
        assert!(HostWeights::load(&odd, &w).unwrap_err().to_string().contains("head_dim 12"));
    }
}
