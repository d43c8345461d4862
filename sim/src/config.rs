//! Scenario input: engine configuration, requests and the target-model oracle.
//!
//! These are the validated, serializable inputs of a run (the `config`, `requests` and
//! `oracle` members of a scenario or trace file). Defaults mirror vLLM 0.12.0 where the
//! scenario leaves a field out (`vllm/config/scheduler.py`, `vllm/config/cache.py`,
//! `vllm/config/compilation.py`).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::error::ConfigError;

/// Which engine's bookkeeping is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Profile {
    /// vLLM 0.12.0's v1 engine (scheduler, GPU model runner, n-gram proposer).
    #[serde(rename = "vllm-v1")]
    VllmV1,
    /// nano-vllm (GeeeekExplorer/nano-vllm): no speculative decoding; its `Context`.
    #[serde(rename = "nano-vllm")]
    NanoVllm,
}

/// Speculative-decoding method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecMethod {
    /// vLLM's `NgramProposer` (`vllm/v1/spec_decode/ngram_proposer.py`).
    #[serde(rename = "ngram")]
    Ngram,
    /// No speculative decoding (the non-spec baseline).
    #[serde(rename = "none")]
    None,
}

/// `CompilationConfig.cudagraph_mode` (`vllm/config/compilation.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CudagraphModeConfig {
    /// vLLM 0.12.0 default: FULL graphs for uniform decode, PIECEWISE for the rest.
    #[serde(rename = "FULL_AND_PIECEWISE")]
    FullAndPiecewise,
    /// PIECEWISE graphs only: input_ids/positions padded, attention metadata not.
    #[serde(rename = "PIECEWISE")]
    Piecewise,
    /// No CUDA graphs (`enforce_eager`): nothing is padded.
    #[serde(rename = "NONE")]
    None,
}

fn default_method() -> SpecMethod {
    SpecMethod::Ngram
}
fn default_true() -> bool {
    true
}
fn default_mode() -> CudagraphModeConfig {
    CudagraphModeConfig::FullAndPiecewise
}

/// Largest `max_num_seqs * max_model_len` the simulator accepts (`token_ids_cpu` slots).
pub const MAX_TABLE_ENTRIES: u64 = 1 << 26;
/// Largest token budget (the persistent `input_ids`/`positions` buffers).
pub const MAX_BATCH_TOKENS: u32 = 1 << 24;
/// Largest KV pool.
pub const MAX_BLOCKS: u32 = 1 << 22;

/// Engine configuration (the scenario's `config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub profile: Profile,
    pub block_size: u32,
    pub num_gpu_blocks: u32,
    pub max_num_seqs: u32,
    pub max_num_batched_tokens: u32,
    pub max_model_len: u32,
    #[serde(default = "default_method")]
    pub method: SpecMethod,
    pub num_speculative_tokens: u32,
    pub prompt_lookup_min: u32,
    pub prompt_lookup_max: u32,
    /// The *effective* capture list (after vLLM's own filtering and rounding).
    pub cudagraph_capture_sizes: Vec<u32>,
    #[serde(default = "default_mode")]
    pub cudagraph_mode: CudagraphModeConfig,
    #[serde(default = "default_true")]
    pub enable_chunked_prefill: bool,
    #[serde(default = "default_true")]
    pub enable_prefix_caching: bool,
    /// Query heads of the target model (cascade-attention heuristic; Qwen3-0.6B: 16).
    #[serde(default = "default_q_heads")]
    pub num_attention_heads: u32,
    /// KV heads of the target model (Qwen3-0.6B: 8).
    #[serde(default = "default_kv_heads")]
    pub num_kv_heads: u32,
    /// Streaming multiprocessors of the GPU (cascade-attention cost model; H100: 132).
    #[serde(default = "default_num_sms")]
    pub num_sms: u32,
    /// `ModelConfig.disable_cascade_attn`.
    #[serde(default)]
    pub disable_cascade_attn: bool,
}

fn default_q_heads() -> u32 {
    16
}
fn default_kv_heads() -> u32 {
    8
}
fn default_num_sms() -> u32 {
    132
}

impl Config {
    /// Number of speculative tokens actually proposed (0 when speculation is off).
    pub fn k(&self) -> u32 {
        match self.method {
            SpecMethod::Ngram => self.num_speculative_tokens,
            SpecMethod::None => 0,
        }
    }

    /// Block-table width `cdiv(max_model_len, block_size)` (`vllm/v1/worker/block_table.py`).
    pub fn blocks_per_row(&self) -> usize {
        self.max_model_len.div_ceil(self.block_size) as usize
    }

    /// Largest capture size, or 0 when no graphs are captured.
    pub fn max_capture_size(&self) -> u32 {
        match self.cudagraph_mode {
            CudagraphModeConfig::None => 0,
            _ => self.cudagraph_capture_sizes.last().copied().unwrap_or(0),
        }
    }

    /// Checks every rule a vLLM 0.12.0 engine would enforce at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if self.block_size == 0 {
            return bad("block_size must be > 0".into());
        }
        if self.max_model_len == 0 {
            return bad("max_model_len must be > 0".into());
        }
        if self.max_num_seqs == 0 {
            return bad("max_num_seqs must be > 0".into());
        }
        if self.max_num_batched_tokens == 0 {
            return bad("max_num_batched_tokens must be > 0".into());
        }
        if self.num_gpu_blocks < 2 {
            return bad(format!(
                "num_gpu_blocks must be >= 2 (block 0 is the null block), got {}",
                self.num_gpu_blocks
            ));
        }
        // The simulator holds vLLM's persistent buffers in memory: refuse sizes that would
        // not fit rather than abort on allocation.
        if self.num_attention_heads == 0 || self.num_kv_heads == 0 || self.num_sms == 0 {
            return bad("num_attention_heads, num_kv_heads and num_sms must be >= 1".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_kv_heads ({})",
                self.num_attention_heads, self.num_kv_heads
            ));
        }
        let table = u64::from(self.max_num_seqs) * u64::from(self.max_model_len);
        if table > MAX_TABLE_ENTRIES {
            return bad(format!(
                "max_num_seqs x max_model_len = {table} token slots exceeds the simulator's limit of {MAX_TABLE_ENTRIES}"
            ));
        }
        if self.max_num_batched_tokens > MAX_BATCH_TOKENS || self.num_gpu_blocks > MAX_BLOCKS {
            return bad(format!(
                "max_num_batched_tokens ({}) or num_gpu_blocks ({}) exceeds the simulator's limits ({MAX_BATCH_TOKENS}, {MAX_BLOCKS})",
                self.max_num_batched_tokens, self.num_gpu_blocks
            ));
        }
        match self.method {
            SpecMethod::Ngram => {
                if self.num_speculative_tokens == 0 {
                    return bad("num_speculative_tokens must be > 0 with method \"ngram\"".into());
                }
                if self.prompt_lookup_min == 0 || self.prompt_lookup_max == 0 {
                    return bad("prompt_lookup_min and prompt_lookup_max must be >= 1".into());
                }
                if self.prompt_lookup_min > self.prompt_lookup_max {
                    return bad(format!(
                        "prompt_lookup_min ({}) > prompt_lookup_max ({})",
                        self.prompt_lookup_min, self.prompt_lookup_max
                    ));
                }
            }
            SpecMethod::None => {
                if self.num_speculative_tokens != 0 {
                    return bad("num_speculative_tokens must be 0 with method \"none\"".into());
                }
            }
        }
        if !self.enable_chunked_prefill && self.max_num_batched_tokens < self.max_model_len {
            // vllm/config/scheduler.py: without chunked prefill a prompt must fit one step.
            return bad(format!(
                "max_num_batched_tokens ({}) < max_model_len ({}) with chunked prefill disabled",
                self.max_num_batched_tokens, self.max_model_len
            ));
        }
        if self.profile == Profile::VllmV1 && self.max_num_batched_tokens < self.max_num_seqs {
            // vllm/config/scheduler.py verify_max_model_len.
            return bad(format!(
                "max_num_batched_tokens ({}) must be >= max_num_seqs ({})",
                self.max_num_batched_tokens, self.max_num_seqs
            ));
        }
        let sizes = &self.cudagraph_capture_sizes;
        if sizes.contains(&0) {
            return bad("cudagraph_capture_sizes must not contain 0".into());
        }
        if sizes.windows(2).any(|w| w[0] >= w[1]) {
            return bad(format!("cudagraph_capture_sizes must be strictly ascending, got {sizes:?}"));
        }
        if let Some(&largest) = sizes.last() {
            if largest > self.max_num_batched_tokens {
                // vllm/config/vllm.py drops capture sizes above max_num_batched_tokens.
                return bad(format!(
                    "cudagraph capture size {largest} exceeds max_num_batched_tokens {}",
                    self.max_num_batched_tokens
                ));
            }
        }
        let q = 1 + self.k();
        if self.cudagraph_mode == CudagraphModeConfig::FullAndPiecewise && q > 1 && sizes.iter().any(|s| s % q != 0) {
            // vllm/config/compilation.py adjust_cudagraph_sizes_for_spec_decode rounds
            // every size to a multiple of 1 + k, so no effective list holds another.
            return bad(format!(
                "cudagraph_capture_sizes {sizes:?} must be multiples of 1 + num_speculative_tokens = {q} under FULL_AND_PIECEWISE (vLLM rounds them)"
            ));
        }
        if self.profile == Profile::NanoVllm && self.method != SpecMethod::None {
            return bad("profile \"nano-vllm\" has no speculative decoding: use method \"none\"".into());
        }
        if self.profile == Profile::NanoVllm && !self.block_size.is_multiple_of(256) {
            // nanovllm/config.py asserts kvcache_block_size % 256 == 0.
            return bad(format!("profile \"nano-vllm\" needs block_size a multiple of 256, got {}", self.block_size));
        }
        Ok(())
    }
}

/// One request of a scenario (vLLM's `EngineCoreRequest`, greedy sampling).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub req_id: String,
    pub prompt_token_ids: Vec<u32>,
    pub max_tokens: u32,
    /// Engine step (1-based) before whose scheduling the request is added.
    #[serde(default = "one")]
    pub arrival_step: u64,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub stop_token_ids: Vec<u32>,
    #[serde(default)]
    pub min_tokens: u32,
    #[serde(default)]
    pub ignore_eos: bool,
}

fn one() -> u64 {
    1
}

/// The target model, as an oracle (`crate::oracle`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleSpec {
    /// `"continuation"` or `"synthetic"`.
    pub kind: String,
    /// continuation: the target's greedy output sequence per request.
    #[serde(default)]
    pub tokens: BTreeMap<String, Vec<u32>>,
    /// synthetic: seed of the pseudo-LM.
    #[serde(default)]
    pub seed: u64,
    /// synthetic: vocabulary size (tokens are `0..vocab_size`).
    #[serde(default)]
    pub vocab_size: u32,
    /// synthetic: how many trailing tokens the next token depends on (smaller = more
    /// repetitive output, more accepted drafts).
    #[serde(default)]
    pub order: u32,
}

/// A scenario file: what `specreplay sim` runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub config: Config,
    pub requests: Vec<RequestSpec>,
    pub oracle: OracleSpec,
}

impl Scenario {
    /// Validates the config, every request, and the oracle against the requests.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.config.validate()?;
        let mut seen = BTreeSet::new();
        for r in &self.requests {
            let bad = |message: String| Err(ConfigError::Request { req_id: r.req_id.clone(), message });
            if !seen.insert(r.req_id.as_str()) {
                return bad("duplicate req_id".into());
            }
            if r.prompt_token_ids.is_empty() {
                return bad("empty prompt".into());
            }
            // vllm/v1/engine/input_processor.py: the prompt must be shorter than max_model_len.
            if r.prompt_token_ids.len() >= self.config.max_model_len as usize {
                return bad(format!(
                    "prompt of {} tokens is not shorter than max_model_len {}",
                    r.prompt_token_ids.len(),
                    self.config.max_model_len
                ));
            }
            if r.max_tokens == 0 {
                return bad("max_tokens must be >= 1".into());
            }
            if r.min_tokens > r.max_tokens {
                // vllm/sampling_params.py refuses min_tokens > max_tokens.
                return bad(format!("min_tokens ({}) > max_tokens ({})", r.min_tokens, r.max_tokens));
            }
            if r.arrival_step > crate::engine::MAX_STEPS {
                return bad(format!(
                    "arrival_step {} is past the simulator's step limit {}",
                    r.arrival_step,
                    crate::engine::MAX_STEPS
                ));
            }
            if r.arrival_step == 0 {
                return bad("arrival_step is 1-based".into());
            }
        }
        crate::oracle::validate(&self.oracle, &self.requests)
    }
}
