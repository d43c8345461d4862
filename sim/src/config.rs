//! Scenario input: engine configuration, requests and the target-model oracle.
//!
//! These are the validated, serializable inputs of a run (the `config`, `requests` and
//! `oracle` members of a scenario or trace file). A trace always holds the *concrete,
//! effective* config; a scenario file may leave out what vLLM 0.12.0 defaults, and
//! [`Scenario::from_json`] (see [`input`]) resolves those defaults as vLLM does.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::error::ConfigError;
use crate::sampling::SamplingParams;

pub mod input;

/// Which engine's bookkeeping is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Profile {
    /// vLLM 0.12.0's v1 engine (scheduler, GPU model runner, n-gram proposer).
    #[serde(rename = "vllm-v1")]
    VllmV1,
    /// nano-vllm (GeeeekExplorer/nano-vllm): no speculative decoding; its `Context`.
    #[serde(rename = "nano-vllm")]
    NanoVllm,
}

/// Speculative-decoding method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SpecMethod {
    /// vLLM's `NgramProposer` (`vllm/v1/spec_decode/ngram_proposer.py`).
    #[serde(rename = "ngram")]
    Ngram,
    /// No speculative decoding (the non-spec baseline).
    #[serde(rename = "none")]
    None,
}

/// `CompilationConfig.cudagraph_mode` (`vllm/config/compilation.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

impl Default for Config {
    /// vLLM 0.12.0's offline `LLM` engine on an H100/H200-class GPU (≥ 70 GiB, not A100)
    /// serving Qwen3-0.6B without speculative decoding: `max_model_len` 40960 (the model's
    /// `max_position_embeddings`), and every other field as [`input::ConfigInput`]
    /// resolves it for a full batch of `max_num_seqs` requests. Code that builds configs
    /// by hand starts from here and overrides fields (`Config { k: .., ..Config::default() }`);
    /// derived fields (`max_num_batched_tokens`, `num_gpu_blocks`, capture sizes) are *not*
    /// recomputed when another field is overridden.
    fn default() -> Self {
        input::ConfigInput { max_model_len: Some(input::QWEN3_MAX_MODEL_LEN), ..Default::default() }
            .resolve(None)
            .expect("the vLLM default config resolves")
    }
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

    /// Checks every rule a vLLM 0.12.0 engine would enforce at start-up, plus the
    /// simulator's memory limits ([`MAX_TABLE_ENTRIES`], [`MAX_BATCH_TOKENS`],
    /// [`MAX_BLOCKS`]), which vLLM has only implicitly (GPU memory).
    ///
    /// Overflow: every sum or product here is taken in `u64`. Downstream, sizes derived
    /// from a validated config stay far below `u64::MAX`: buffers are bounded by the
    /// limits above; `num_speculative_tokens` and `prompt_lookup_max` need no limit (vLLM
    /// has none) because drafts are cut to `max_model_len - n` and n-grams to the context
    /// (`proposer.rs`), and the drafter gate and FULL-key bound add/multiply them
    /// saturating; head counts and `num_sms` need none because the cascade cost model's
    /// largest product (requests × KV heads × prefix tiles) is below 2^60 under
    /// `MAX_TABLE_ENTRIES` (`tests/config_defaults.rs` feeds u32::MAX to each).
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
        // u64: `1 + k` must not wrap for k = u32::MAX.
        let q = 1 + u64::from(self.k());
        if self.cudagraph_mode == CudagraphModeConfig::FullAndPiecewise
            && q > 1
            && sizes.iter().any(|&s| u64::from(s) % q != 0)
        {
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

/// One request of a scenario (vLLM's `EngineCoreRequest`).
///
/// Serde: the JSON form omits `sampling` when it is the greedy default (so greedy traces
/// keep their bytes) and reads it when present; the bincode form is the eight fields
/// without `sampling` (the layout of every committed `.bin` trace), and writing a request
/// with non-greedy sampling to bincode is an error (random-mode traces are JSON for now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    pub req_id: String,
    pub prompt_token_ids: Vec<u32>,
    pub max_tokens: u32,
    /// Engine step (1-based) before whose scheduling the request is added.
    pub arrival_step: u64,
    pub eos_token_id: Option<u32>,
    pub stop_token_ids: Vec<u32>,
    pub min_tokens: u32,
    pub ignore_eos: bool,
    /// Effective sampling parameters (`crate::sampling`); greedy by default.
    pub sampling: SamplingParams,
}

/// One request (vLLM's `EngineCoreRequest`) in JSON: `sampling` is omitted when greedy.
#[derive(Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "RequestSpec")]
#[serde(deny_unknown_fields)]
struct RequestSpecJson {
    req_id: String,
    prompt_token_ids: Vec<u32>,
    max_tokens: u32,
    #[serde(default = "one")]
    arrival_step: u64,
    #[serde(default)]
    eos_token_id: Option<u32>,
    #[serde(default)]
    stop_token_ids: Vec<u32>,
    #[serde(default)]
    min_tokens: u32,
    #[serde(default)]
    ignore_eos: bool,
    #[serde(default, skip_serializing_if = "SamplingParams::is_default")]
    sampling: SamplingParams,
}

/// The bincode form of [`RequestSpec`]: the layout before sampling parameters existed.
#[derive(Serialize, Deserialize)]
struct RequestSpecBin {
    req_id: String,
    prompt_token_ids: Vec<u32>,
    max_tokens: u32,
    arrival_step: u64,
    eos_token_id: Option<u32>,
    stop_token_ids: Vec<u32>,
    min_tokens: u32,
    ignore_eos: bool,
}

/// The schema of the JSON form (what serde reads and writes in JSON; the bincode form
/// has no schema).
impl JsonSchema for RequestSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RequestSpec".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        RequestSpecJson::json_schema(g)
    }
}

impl Serialize for RequestSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.clone();
        if s.is_human_readable() {
            RequestSpecJson {
                req_id: r.req_id,
                prompt_token_ids: r.prompt_token_ids,
                max_tokens: r.max_tokens,
                arrival_step: r.arrival_step,
                eos_token_id: r.eos_token_id,
                stop_token_ids: r.stop_token_ids,
                min_tokens: r.min_tokens,
                ignore_eos: r.ignore_eos,
                sampling: r.sampling,
            }
            .serialize(s)
        } else if !r.sampling.is_default() {
            Err(serde::ser::Error::custom(format!(
                "request {:?} samples at temperature {}: random-mode traces can only be written as JSON",
                r.req_id, r.sampling.temperature
            )))
        } else {
            RequestSpecBin {
                req_id: r.req_id,
                prompt_token_ids: r.prompt_token_ids,
                max_tokens: r.max_tokens,
                arrival_step: r.arrival_step,
                eos_token_id: r.eos_token_id,
                stop_token_ids: r.stop_token_ids,
                min_tokens: r.min_tokens,
                ignore_eos: r.ignore_eos,
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for RequestSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let r = RequestSpecJson::deserialize(d)?;
            Ok(RequestSpec {
                req_id: r.req_id,
                prompt_token_ids: r.prompt_token_ids,
                max_tokens: r.max_tokens,
                arrival_step: r.arrival_step,
                eos_token_id: r.eos_token_id,
                stop_token_ids: r.stop_token_ids,
                min_tokens: r.min_tokens,
                ignore_eos: r.ignore_eos,
                sampling: r.sampling,
            })
        } else {
            let r = RequestSpecBin::deserialize(d)?;
            Ok(RequestSpec {
                req_id: r.req_id,
                prompt_token_ids: r.prompt_token_ids,
                max_tokens: r.max_tokens,
                arrival_step: r.arrival_step,
                eos_token_id: r.eos_token_id,
                stop_token_ids: r.stop_token_ids,
                min_tokens: r.min_tokens,
                ignore_eos: r.ignore_eos,
                sampling: SamplingParams::default(),
            })
        }
    }
}

fn one() -> u64 {
    1
}

/// Which target-model oracle a scenario uses (`crate::oracle`).
///
/// Written as the strings `"continuation"` / `"synthetic"` in JSON *and* in bincode (a
/// length-prefixed string, as when this field was a `String`), so the bytes of recorded
/// traces do not depend on this being an enum. Any other string is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OracleKind {
    /// A recorded greedy continuation per request (`OracleSpec.tokens`).
    Continuation,
    /// A seeded pseudo-LM (`OracleSpec.seed`, `vocab_size`, `order`).
    Synthetic,
}

impl OracleKind {
    /// Every kind, in its JSON spelling.
    pub const NAMES: [&'static str; 2] = ["continuation", "synthetic"];

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OracleKind::Continuation => "continuation",
            OracleKind::Synthetic => "synthetic",
        }
    }

    /// Parses the JSON spelling.
    pub fn parse(s: &str) -> Option<OracleKind> {
        match s {
            "continuation" => Some(OracleKind::Continuation),
            "synthetic" => Some(OracleKind::Synthetic),
            _ => None,
        }
    }
}

impl std::fmt::Display for OracleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JsonSchema for OracleKind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OracleKind".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "enum": OracleKind::NAMES})
    }
}

impl Serialize for OracleKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OracleKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl serde::de::Visitor<'_> for KindVisitor {
            type Value = OracleKind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an oracle kind (\"continuation\" or \"synthetic\")")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OracleKind, E> {
                OracleKind::parse(v).ok_or_else(|| {
                    E::custom(format!("unknown oracle kind {v:?} (expected \"continuation\" or \"synthetic\")"))
                })
            }
        }
        d.deserialize_str(KindVisitor)
    }
}

/// The target model, as an oracle (`crate::oracle`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OracleSpec {
    /// `"continuation"` or `"synthetic"`.
    pub kind: OracleKind,
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

/// A resolved scenario: what `specreplay sim` runs, with every config field concrete.
/// Its own serde form is the strict one (every required field present, as in a trace);
/// scenario *files* are read with [`Scenario::from_json`], which fills in vLLM's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub config: Config,
    pub requests: Vec<RequestSpec>,
    pub oracle: OracleSpec,
}

impl Scenario {
    /// Parses a scenario file, resolves the fields it leaves out to vLLM 0.12.0's defaults
    /// (see [`input`]) and validates the result. Malformed JSON is [`ConfigError::Json`].
    pub fn from_json(text: &str) -> Result<Scenario, ConfigError> {
        let raw: input::ScenarioInput = serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        let sc = raw.resolve()?;
        sc.validate()?;
        Ok(sc)
    }

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
            if !r.sampling.is_greedy() {
                if self.oracle.kind == OracleKind::Continuation {
                    // A recorded greedy continuation has no probability rows.
                    return bad(format!(
                        "temperature {} needs a synthetic oracle: a continuation oracle is greedy-only",
                        r.sampling.temperature
                    ));
                }
                if self.config.profile == Profile::NanoVllm {
                    // nano-vllm samples with temperature only and the simulator models its
                    // greedy path (the oracle's argmax) alone.
                    return bad(format!(
                        "temperature {}: profile \"nano-vllm\" is modelled greedy-only; use temperature 0",
                        r.sampling.temperature
                    ));
                }
            }
        }
        crate::oracle::validate(&self.oracle, &self.requests)
    }
}
