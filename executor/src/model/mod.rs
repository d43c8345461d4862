//! A real target model: Hugging Face checkpoints (Qwen3 first; Qwen2 and Llama where they
//! differ only in biases and q/k norms) and the interface between the weights and the
//! forward pass.
//!
//! * [`config`]: the architecture read from `config.json` ([`ModelConfig`]).
//! * [`checkpoint`]: a memory-mapped checkpoint folder ([`Checkpoint`]), its validation
//!   and hash; [`MemWeights`], weights in memory.
//! * [`comparison`]: the logits comparison file shared with `scripts/hf_reference.py`.
//! * [`make`]: random-weight checkpoints in HF layout (`gpu make-checkpoint`).
//! * [`tokenizer`]: prompts as text or ids, `tokenizer.json`.
//! * [`mod@reference`]: the CPU reference forward pass and greedy generation.
//! * [`WeightSource`]: named tensors by their Hugging Face names; a safetensors checkpoint
//!   and an in-memory set of weights both implement it, so the forward pass is tested on
//!   weights the tests make themselves.
//!
//! Tensor names follow `transformers`' `Qwen3ForCausalLM` state dict
//! (`transformers/models/qwen3/modeling_qwen3.py`): see [`names`].

pub mod checkpoint;
pub mod comparison;
pub mod config;
pub mod make;
pub mod reference;
pub mod tokenizer;
pub mod twin_prompt;

pub use checkpoint::{Checkpoint, MemWeights};
pub use config::{Architecture, ModelConfig};

use crate::error::{ExecError, Result};

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// bfloat16, little-endian: the dtype the forward pass runs in.
    BF16,
    /// IEEE half, little-endian.
    F16,
    /// IEEE single, little-endian.
    F32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::BF16 | DType::F16 => 2,
            DType::F32 => 4,
        }
    }
}

/// A borrowed tensor: dtype, row-major shape and its little-endian bytes.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// Element type.
    pub dtype: DType,
    /// Row-major shape (`[out_features, in_features]` for a linear weight, as torch stores it).
    pub shape: &'a [usize],
    /// `shape.iter().product() * dtype.size()` bytes.
    pub bytes: &'a [u8],
}

/// Where the forward pass gets its weights: by Hugging Face tensor name.
pub trait WeightSource {
    /// The tensor called `name`, or [`ExecError::Checkpoint`] naming it when absent.
    fn tensor(&self, name: &str) -> Result<TensorRef<'_>>;

    /// The tensor called `name`, checked to be bf16 of exactly `shape`.
    fn expect_bf16(&self, name: &str, shape: &[usize]) -> Result<TensorRef<'_>> {
        let t = self.tensor(name)?;
        if t.dtype != DType::BF16 || t.shape != shape {
            return Err(ExecError::Checkpoint(format!(
                "tensor {name}: expected bf16 {shape:?}, found {:?} {:?}",
                t.dtype, t.shape
            )));
        }
        Ok(t)
    }
}

/// Hugging Face tensor names of a decoder-only model (`model.` prefix as stored by
/// `save_pretrained`).
pub mod names {
    /// `[vocab, hidden]`.
    pub const EMBED: &str = "model.embed_tokens.weight";
    /// `[hidden]`.
    pub const FINAL_NORM: &str = "model.norm.weight";
    /// `[vocab, hidden]`, absent when `tie_word_embeddings` (the embedding is used).
    pub const LM_HEAD: &str = "lm_head.weight";

    /// `model.layers.{layer}.{suffix}`, e.g. `layer(3, "self_attn.q_proj.weight")`.
    /// Suffixes: `input_layernorm.weight`, `self_attn.{q,k,v,o}_proj.weight` (Qwen2 adds
    /// `{q,k,v}_proj.bias`), `self_attn.{q,k}_norm.weight` (Qwen3 only, `[head_dim]`),
    /// `post_attention_layernorm.weight`, `mlp.{gate,up,down}_proj.weight`.
    pub fn layer(layer: usize, suffix: &str) -> String {
        format!("model.layers.{layer}.{suffix}")
    }
}

pub mod gemm_bench;
pub mod gpu;
pub mod host;
pub mod kernels_ref;
pub mod kv_cache;
pub mod launch;
pub mod mega;
pub mod mega_timeline;
pub mod plan;
pub mod tensor_core;
pub mod weights;
