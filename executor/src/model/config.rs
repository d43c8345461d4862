//! The architecture as `config.json` states it (Hugging Face `PretrainedConfig` fields).

/// Which decoder family a checkpoint is; it decides biases and q/k norms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `Qwen3ForCausalLM`: RMSNorm on q and k per head before RoPE, no q/k/v bias.
    Qwen3,
    /// `Qwen2ForCausalLM`: q/k/v biases, no q/k norm.
    Qwen2,
    /// `LlamaForCausalLM`: no biases, no q/k norm.
    Llama,
}

/// The fields of `config.json` the forward pass needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// From `architectures[0]`.
    pub architecture: Architecture,
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `intermediate_size` (the MLP's gate/up width).
    pub intermediate_size: usize,
    /// `num_hidden_layers`.
    pub num_layers: usize,
    /// `num_attention_heads`.
    pub num_heads: usize,
    /// `num_key_value_heads` (GQA; defaults to `num_attention_heads`).
    pub num_kv_heads: usize,
    /// `head_dim` (defaults to `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// `rms_norm_eps`.
    pub rms_norm_eps: f32,
    /// `rope_theta`.
    pub rope_theta: f32,
    /// `max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// `tie_word_embeddings`: the LM head is the embedding matrix.
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    /// Qwen3-0.6B's `config.json` values (Hugging Face `Qwen/Qwen3-0.6B`).
    pub fn qwen3_0_6b() -> Self {
        ModelConfig {
            architecture: Architecture::Qwen3,
            vocab_size: 151_936,
            hidden_size: 1024,
            intermediate_size: 3072,
            num_layers: 28,
            num_heads: 16,
            num_kv_heads: 8,
            head_dim: 128,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            max_position_embeddings: 40_960,
            tie_word_embeddings: true,
        }
    }
}
