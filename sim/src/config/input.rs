//! Scenario files as people write them: every field vLLM 0.12.0 defaults may be left out,
//! and vLLM's own spellings are accepted. [`ScenarioInput::resolve`] turns such a file
//! into a concrete [`Scenario`], applying vLLM's defaults and start-up adjustments in
//! vLLM's order, so that a trace always records the *effective* config.
//!
//! What is modelled is vLLM's **offline `LLM` entry point** (`UsageContext.LLM_CLASS`,
//! `vllm/entrypoints/llm.py`) on an **H100/H200-class GPU** (≥ 70 GiB, not an A100), the
//! GPU the project targets; vLLM's batch defaults depend on both (see
//! [`VLLM_DEFAULT_MAX_NUM_SEQS`]). For profile `nano-vllm` the defaults are nano-vllm's
//! (`nanovllm/config.py`, `nanovllm/sampling_params.py`).
//!
//! Arithmetic on user values is done in `u64` or checked: no input makes this module
//! panic or wrap (`tests/config_defaults.rs` feeds the extreme values of every field).

use schemars::JsonSchema;
use serde::Deserialize;

use crate::sampling::SamplingParams;

use super::{Config, CudagraphModeConfig, OracleSpec, Profile, RequestSpec, Scenario, SpecMethod, MAX_BLOCKS};
use crate::error::ConfigError;

/// `max_position_embeddings` of Qwen3-0.6B, the project's target model (vLLM takes
/// `max_model_len` from the model's config; the simulator has no model, so a scenario
/// must give it). Used only by [`Config::default`].
pub const QWEN3_MAX_MODEL_LEN: u32 = 40960;

/// `EngineArgs.get_batch_defaults` (`vllm/engine/arg_utils.py`, v0.12.0): `max_num_seqs`
/// for `UsageContext.LLM_CLASS` on a GPU with ≥ 70 GiB that is not an A100 (256 on
/// smaller GPUs and A100s).
pub const VLLM_DEFAULT_MAX_NUM_SEQS: u32 = 1024;
/// Same source: `max_num_batched_tokens` for `LLM_CLASS` on such a GPU (8192 otherwise),
/// before [`ConfigInput::resolve`]'s adjustments for chunked prefill and `max_model_len`.
pub const VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS: u32 = 16384;
/// `CacheConfig.block_size` is `None` until `CudaPlatform.check_and_update_config`
/// (`vllm/platforms/cuda.py`) sets 16 (FlashAttention; MLA/sparse backends differ).
pub const VLLM_DEFAULT_BLOCK_SIZE: u32 = 16;
/// `SamplingParams.max_tokens` (`vllm/sampling_params.py`).
pub const VLLM_DEFAULT_MAX_TOKENS: u32 = 16;
/// `SpeculativeConfig.__post_init__` (`vllm/config/speculative.py`): n-gram with neither
/// `prompt_lookup_min` nor `prompt_lookup_max` uses 5 for both; with one, the other
/// takes its value.
pub const VLLM_DEFAULT_PROMPT_LOOKUP: u32 = 5;
/// `VllmConfig._set_cudagraph_sizes` (`vllm/config/vllm.py`): the default largest capture
/// size is `min(max_num_seqs * 2, 512)`.
pub const VLLM_MAX_DEFAULT_CAPTURE_SIZE: u64 = 512;

/// nano-vllm `Config.kvcache_block_size` (`nanovllm/config.py`; must be a multiple of 256).
pub const NANO_DEFAULT_BLOCK_SIZE: u32 = 256;
/// nano-vllm `Config.max_num_seqs`.
pub const NANO_DEFAULT_MAX_NUM_SEQS: u32 = 512;
/// nano-vllm `Config.max_num_batched_tokens`.
pub const NANO_DEFAULT_MAX_NUM_BATCHED_TOKENS: u32 = 16384;
/// nano-vllm `SamplingParams.max_tokens` (`nanovllm/sampling_params.py`).
pub const NANO_DEFAULT_MAX_TOKENS: u32 = 64;

/// A scenario file (`config`, `requests`, `oracle`) before defaults are resolved.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Scenario")]
pub struct ScenarioInput {
    pub config: ConfigInput,
    pub requests: Vec<RequestInput>,
    pub oracle: OracleSpec,
}

/// The scenario's `config` with every defaulted field optional. Field meanings are those
/// of [`Config`]; `speculative_config` is vLLM's spelling of the four speculative fields.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ScenarioConfig")]
pub struct ConfigInput {
    pub profile: Option<Profile>,
    pub block_size: Option<u32>,
    pub num_gpu_blocks: Option<u32>,
    pub max_num_seqs: Option<u32>,
    pub max_num_batched_tokens: Option<u32>,
    /// Required: vLLM derives it from the model's config, which the simulator lacks.
    pub max_model_len: Option<u32>,
    pub method: Option<SpecMethod>,
    pub num_speculative_tokens: Option<u32>,
    pub prompt_lookup_min: Option<u32>,
    pub prompt_lookup_max: Option<u32>,
    /// `LLM(speculative_config={...})`: an alternative to the flat fields above.
    pub speculative_config: Option<SpeculativeConfigInput>,
    /// vLLM's `compilation_config.cudagraph_capture_sizes` as given (any order,
    /// duplicates, sizes above the token budget, not rounded): resolved as vLLM resolves it.
    pub cudagraph_capture_sizes: Option<Vec<u32>>,
    pub cudagraph_mode: Option<CudagraphModeConfig>,
    pub enable_chunked_prefill: Option<bool>,
    pub enable_prefix_caching: Option<bool>,
    pub num_attention_heads: Option<u32>,
    pub num_kv_heads: Option<u32>,
    pub num_sms: Option<u32>,
    pub disable_cascade_attn: Option<bool>,
}

/// vLLM's `SpeculativeConfig` fields the simulator models (`vllm/config/speculative.py`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SpeculativeConfig")]
pub struct SpeculativeConfigInput {
    /// Must be `"ngram"` (the only proposer modelled).
    pub method: Option<String>,
    pub num_speculative_tokens: Option<u32>,
    pub prompt_lookup_min: Option<u32>,
    pub prompt_lookup_max: Option<u32>,
}

/// One request with `max_tokens` optional (the other optional fields default as in
/// [`RequestSpec`]).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ScenarioRequest")]
pub struct RequestInput {
    pub req_id: String,
    pub prompt_token_ids: Vec<u32>,
    /// Default: `SamplingParams.max_tokens` of the profile (vLLM 16, nano-vllm 64).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Engine step (1-based) before whose scheduling the request is added; default 1.
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
    /// `SamplingParams.temperature`: 0 (the default) is greedy (`crate::sampling`).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// `SamplingParams.top_k`: -1 or 0 (the default) disables it.
    #[serde(default)]
    pub top_k: Option<i64>,
    /// `SamplingParams.top_p`: in (0, 1], default 1.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// `SamplingParams.seed`; a random request without one derives it from the oracle's
    /// seed and its index (`sampling::derive_seed`).
    #[serde(default)]
    pub seed: Option<u64>,
}

fn one() -> u64 {
    1
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

impl ScenarioInput {
    /// Resolves every default (see [`ConfigInput::resolve`]); the result is not yet
    /// validated ([`Scenario::from_json`] does both).
    pub fn resolve(self) -> Result<Scenario, ConfigError> {
        let config = self.config.resolve(Some(self.requests.len()))?;
        let max_tokens = match config.profile {
            Profile::VllmV1 => VLLM_DEFAULT_MAX_TOKENS,
            Profile::NanoVllm => NANO_DEFAULT_MAX_TOKENS,
        };
        let scenario_seed = self.oracle.seed;
        let requests = self
            .requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let derived = crate::sampling::derive_seed(scenario_seed, i);
                let sampling = SamplingParams::resolve(r.temperature, r.top_k, r.top_p, r.seed, derived)
                    .map_err(|message| ConfigError::Request { req_id: r.req_id.clone(), message })?;
                Ok(RequestSpec {
                    req_id: r.req_id,
                    prompt_token_ids: r.prompt_token_ids,
                    max_tokens: r.max_tokens.unwrap_or(max_tokens),
                    arrival_step: r.arrival_step,
                    eos_token_id: r.eos_token_id,
                    stop_token_ids: r.stop_token_ids,
                    min_tokens: r.min_tokens,
                    ignore_eos: r.ignore_eos,
                    sampling,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Scenario { config, requests, oracle: self.oracle })
    }
}

/// The speculative fields after merging the flat spelling with `speculative_config`.
struct Speculative {
    method: SpecMethod,
    k: u32,
    lookup_min: u32,
    lookup_max: u32,
}

/// A field given both flat and inside `speculative_config` must agree.
fn merge(name: &str, flat: Option<u32>, nested: Option<u32>) -> Result<Option<u32>, ConfigError> {
    match (flat, nested) {
        (Some(a), Some(b)) if a != b => {
            Err(invalid(format!("{name} ({a}) disagrees with speculative_config.{name} ({b})")))
        }
        (a, b) => Ok(a.or(b)),
    }
}

impl ConfigInput {
    /// Merges the flat speculative fields with `speculative_config` and applies vLLM's
    /// n-gram defaults (`vllm/config/speculative.py`).
    ///
    /// The method is `ngram` when `speculative_config` is given; otherwise the flat
    /// `method`, or — the simulator's own shorthand — `ngram` when
    /// `num_speculative_tokens` is given and `none` when it is not (vLLM's default is no
    /// speculative decoding; nano-vllm has none).
    fn speculative(&self) -> Result<Speculative, ConfigError> {
        let nested = self.speculative_config.clone().unwrap_or_default();
        if self.speculative_config.is_some() {
            match nested.method.as_deref() {
                Some("ngram") => {}
                // vLLM: "num_speculative_tokens was provided but without speculative model."
                None => return Err(invalid("speculative_config needs \"method\": \"ngram\"")),
                Some(other) => {
                    return Err(invalid(format!(
                        "speculative_config.method {other:?} is not modelled (only \"ngram\")"
                    )))
                }
            }
            if self.method == Some(SpecMethod::None) {
                return Err(invalid("method \"none\" disagrees with speculative_config.method \"ngram\""));
            }
        }
        let k = merge("num_speculative_tokens", self.num_speculative_tokens, nested.num_speculative_tokens)?;
        let min = merge("prompt_lookup_min", self.prompt_lookup_min, nested.prompt_lookup_min)?;
        let max = merge("prompt_lookup_max", self.prompt_lookup_max, nested.prompt_lookup_max)?;
        let method = match (self.speculative_config.is_some(), self.method) {
            (true, _) => SpecMethod::Ngram,
            (false, Some(m)) => m,
            (false, None) if k.is_some() => SpecMethod::Ngram,
            (false, None) => SpecMethod::None,
        };
        Ok(match method {
            SpecMethod::Ngram => {
                // vllm/config/speculative.py `_verify_args`: no default for n-gram.
                let k = k.ok_or_else(|| {
                    invalid("num_speculative_tokens is required with method \"ngram\" (vLLM has no default for it)")
                })?;
                let (lookup_min, lookup_max) = match (min, max) {
                    (None, None) => (VLLM_DEFAULT_PROMPT_LOOKUP, VLLM_DEFAULT_PROMPT_LOOKUP),
                    (Some(a), None) => (a, a),
                    (None, Some(b)) => (b, b),
                    (Some(a), Some(b)) => (a, b),
                };
                Speculative { method, k, lookup_min, lookup_max }
            }
            SpecMethod::None => {
                Speculative { method, k: k.unwrap_or(0), lookup_min: min.unwrap_or(0), lookup_max: max.unwrap_or(0) }
            }
        })
    }

    /// Resolves the config for `num_requests` requests (`None`: a full batch of
    /// `max_num_seqs`, as [`Config::default`] uses), in vLLM 0.12.0's order:
    ///
    /// 1. `EngineArgs._set_default_max_num_seqs_and_batched_tokens_args`
    ///    (`vllm/engine/arg_utils.py`): unset `max_num_batched_tokens` is the LLM-class
    ///    default, raised to `max_model_len` without chunked prefill and capped at
    ///    `max_num_seqs * max_model_len`; unset `max_num_seqs` is its default capped at
    ///    `max_num_batched_tokens`.
    /// 2. `VllmConfig._set_cudagraph_sizes` (`vllm/config/vllm.py`): see
    ///    [`capture_sizes`].
    /// 3. `GPUModelRunner` calls `CompilationConfig.adjust_cudagraph_sizes_for_spec_decode`
    ///    (`vllm/config/compilation.py`) under FULL_AND_PIECEWISE with `1 + k > 1`: see
    ///    [`round_for_spec_decode`].
    ///
    /// `num_gpu_blocks` (vLLM sizes it from free GPU memory) defaults to
    /// [`default_num_gpu_blocks`]. Errors that [`Config::validate`] reports are left to it;
    /// this function fails only where vLLM itself refuses at start-up or where a default
    /// cannot be formed.
    pub fn resolve(&self, num_requests: Option<usize>) -> Result<Config, ConfigError> {
        let profile = self.profile.unwrap_or(Profile::VllmV1);
        let max_model_len = self.max_model_len.ok_or_else(|| {
            invalid("max_model_len is required (vLLM takes it from the model's config; Qwen3-0.6B: 40960)")
        })?;
        let spec = self.speculative()?;
        let nano = profile == Profile::NanoVllm;
        let block_size =
            self.block_size.unwrap_or(if nano { NANO_DEFAULT_BLOCK_SIZE } else { VLLM_DEFAULT_BLOCK_SIZE });
        // vLLM: `model_config.is_chunked_prefill_supported` (true for generative models);
        // nano-vllm schedules whole prompts (no chunked prefill).
        let enable_chunked_prefill = self.enable_chunked_prefill.unwrap_or(!nano);
        let enable_prefix_caching = self.enable_prefix_caching.unwrap_or(true);
        // CompilationConfig.cudagraph_mode docs: FULL_AND_PIECEWISE is the v1 default. The
        // simulator records no CUDA graphs for nano-vllm, so NONE there.
        let cudagraph_mode = self.cudagraph_mode.unwrap_or(if nano {
            CudagraphModeConfig::None
        } else {
            CudagraphModeConfig::FullAndPiecewise
        });
        let (max_num_seqs, max_num_batched_tokens) = if nano {
            (
                self.max_num_seqs.unwrap_or(NANO_DEFAULT_MAX_NUM_SEQS),
                self.max_num_batched_tokens.unwrap_or(NANO_DEFAULT_MAX_NUM_BATCHED_TOKENS),
            )
        } else {
            vllm_batch_defaults(self.max_num_seqs, self.max_num_batched_tokens, max_model_len, enable_chunked_prefill)
        };
        let cudagraph_capture_sizes = capture_sizes(
            profile,
            cudagraph_mode,
            self.cudagraph_capture_sizes.as_deref(),
            max_num_seqs,
            max_num_batched_tokens,
            spec.k,
        )?;
        let num_gpu_blocks = match self.num_gpu_blocks {
            Some(n) => n,
            None if block_size == 0 => return Err(invalid("block_size must be > 0")),
            None => {
                let concurrent = num_requests.map_or(max_num_seqs, |n| u32::try_from(n).unwrap_or(u32::MAX));
                default_num_gpu_blocks(block_size, max_model_len, concurrent.min(max_num_seqs)).ok_or_else(|| {
                    invalid(format!(
                        "num_gpu_blocks is not given and its default (every request can reach max_model_len {max_model_len}) \
                         is above the simulator's limit of {MAX_BLOCKS} blocks: give num_gpu_blocks"
                    ))
                })?
            }
        };
        Ok(Config {
            profile,
            block_size,
            num_gpu_blocks,
            max_num_seqs,
            max_num_batched_tokens,
            max_model_len,
            method: spec.method,
            num_speculative_tokens: spec.k,
            prompt_lookup_min: spec.lookup_min,
            prompt_lookup_max: spec.lookup_max,
            cudagraph_capture_sizes,
            cudagraph_mode,
            enable_chunked_prefill,
            enable_prefix_caching,
            num_attention_heads: self.num_attention_heads.unwrap_or(super::default_q_heads()),
            num_kv_heads: self.num_kv_heads.unwrap_or(super::default_kv_heads()),
            num_sms: self.num_sms.unwrap_or(super::default_num_sms()),
            disable_cascade_attn: self.disable_cascade_attn.unwrap_or(false),
        })
    }
}

/// `(max_num_seqs, max_num_batched_tokens)` as vLLM 0.12.0's
/// `EngineArgs._set_default_max_num_seqs_and_batched_tokens_args` resolves them for the
/// offline `LLM` on an H100/H200-class GPU. Only unset values are adjusted.
pub fn vllm_batch_defaults(
    max_num_seqs: Option<u32>,
    max_num_batched_tokens: Option<u32>,
    max_model_len: u32,
    enable_chunked_prefill: bool,
) -> (u32, u32) {
    let mut seqs = max_num_seqs.unwrap_or(VLLM_DEFAULT_MAX_NUM_SEQS);
    let mut tokens = max_num_batched_tokens.unwrap_or(VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS);
    if max_num_batched_tokens.is_none() {
        if !enable_chunked_prefill {
            // "If max_model_len is too short, use the default for higher throughput."
            tokens = tokens.max(max_model_len);
        }
        // "Ensure max_num_batched_tokens does not exceed model limit." (u64: no wrap)
        let cap = u64::from(seqs) * u64::from(max_model_len);
        tokens = u32::try_from(cap.min(u64::from(tokens))).unwrap_or(tokens);
    }
    if max_num_seqs.is_none() {
        seqs = seqs.min(tokens);
    }
    (seqs, tokens)
}

/// The effective capture list (`VllmConfig._set_cudagraph_sizes` in `vllm/config/vllm.py`,
/// then [`round_for_spec_decode`] under FULL_AND_PIECEWISE).
///
/// * mode NONE: no graphs, so no default list; a given list is only deduplicated, sorted
///   and filtered (it is never used).
/// * A given list is deduplicated, filtered to sizes ≤ `max_num_batched_tokens` and
///   sorted; its largest element is the largest capture size. (vLLM asserts a given list
///   is non-empty; the simulator reads `[]` as "capture nothing", which pads nothing.)
/// * The default list is `[1, 2, 4]`, multiples of 8 below 256, then multiples of 16
///   from 256, all ≤ `min(max_num_seqs * 2, 512, max_num_batched_tokens)`.
/// * nano-vllm: no default list (its graphs are not modelled).
pub fn capture_sizes(
    profile: Profile,
    mode: CudagraphModeConfig,
    given: Option<&[u32]>,
    max_num_seqs: u32,
    max_num_batched_tokens: u32,
    k: u32,
) -> Result<Vec<u32>, ConfigError> {
    let sizes = match given {
        Some(given) => {
            if given.contains(&0) {
                return Err(invalid("cudagraph_capture_sizes must not contain 0"));
            }
            let mut s: Vec<u32> = given.iter().copied().filter(|&s| s <= max_num_batched_tokens).collect();
            s.sort_unstable();
            s.dedup();
            s
        }
        None if mode == CudagraphModeConfig::None || profile == Profile::NanoVllm => Vec::new(),
        None => default_capture_sizes(max_num_seqs, max_num_batched_tokens),
    };
    if mode == CudagraphModeConfig::FullAndPiecewise {
        round_for_spec_decode(&sizes, 1 + u64::from(k))
    } else {
        Ok(sizes)
    }
}

/// vLLM 0.12.0's default capture list for `max_num_seqs` and the token budget.
pub fn default_capture_sizes(max_num_seqs: u32, max_num_batched_tokens: u32) -> Vec<u32> {
    let max_cap =
        (u64::from(max_num_seqs) * 2).min(VLLM_MAX_DEFAULT_CAPTURE_SIZE).min(u64::from(max_num_batched_tokens));
    // max_cap <= 512, so the casts below are exact.
    let max_cap = max_cap as u32;
    let mut sizes: Vec<u32> = [1, 2, 4].into_iter().filter(|&s| s <= max_cap).collect();
    if max_cap >= 8 {
        sizes.extend((8..(max_cap + 1).min(256)).step_by(8));
    }
    if max_cap >= 256 {
        sizes.extend((256..=max_cap).step_by(16));
    }
    sizes
}

/// `CompilationConfig.adjust_cudagraph_sizes_for_spec_decode` (`vllm/config/compilation.py`,
/// v0.12.0, tensor parallel size 1): every size is rounded up to a multiple of
/// `q = 1 + num_speculative_tokens`, sizes that then exceed the largest capture size are
/// dropped, and the rest deduplicated and sorted; when none is left, `[q]` if `q` fits
/// under the largest size, else vLLM refuses to start (an error here too).
pub fn round_for_spec_decode(sizes: &[u32], q: u64) -> Result<Vec<u32>, ConfigError> {
    let Some(&max_cap) = sizes.last() else { return Ok(Vec::new()) };
    if q <= 1 {
        return Ok(sizes.to_vec());
    }
    let max_cap = u64::from(max_cap);
    // u64: s + q - 1 <= u32::MAX + 2^32, no wrap.
    let mut rounded: Vec<u32> = sizes
        .iter()
        .map(|&s| u64::from(s).div_ceil(q) * q)
        .filter(|&r| r <= max_cap)
        .map(|r| r as u32) // r <= max_cap <= u32::MAX
        .collect();
    rounded.sort_unstable();
    rounded.dedup();
    if rounded.is_empty() && q <= max_cap {
        rounded.push(q as u32); // q <= max_cap <= u32::MAX
    }
    if rounded.is_empty() {
        return Err(invalid(format!(
            "no cudagraph capture size is left after rounding {sizes:?} up to multiples of 1 + num_speculative_tokens = {q} \
             within the largest size {max_cap} (vLLM 0.12.0 refuses this at start-up too)"
        )));
    }
    Ok(rounded)
}

/// Enough KV blocks for `concurrent` requests (at least one) to each hold
/// `max_model_len` tokens, plus vLLM's null block 0 (`vllm/v1/core/block_pool.py`):
/// `max(1, concurrent) * cdiv(max_model_len, block_size) + 1`. Only running requests hold
/// blocks and vLLM never allocates past `max_model_len`, so with `concurrent =
/// min(requests, max_num_seqs)` no request is ever preempted for lack of blocks.
/// `None` when `block_size` is 0 or the count exceeds [`MAX_BLOCKS`].
pub fn default_num_gpu_blocks(block_size: u32, max_model_len: u32, concurrent: u32) -> Option<u32> {
    if block_size == 0 {
        return None;
    }
    let per_request = u64::from(max_model_len.div_ceil(block_size));
    let blocks = u64::from(concurrent.max(1)).checked_mul(per_request)?.checked_add(1)?;
    u32::try_from(blocks).ok().filter(|&b| b <= MAX_BLOCKS)
}

impl Config {
    /// [`default_num_gpu_blocks`] for this config and `num_requests` requests: what a
    /// scenario that leaves `num_gpu_blocks` out gets (`show` names it when a trace holds it).
    pub fn default_num_gpu_blocks(&self, num_requests: usize) -> Option<u32> {
        let n = u32::try_from(num_requests).unwrap_or(u32::MAX).min(self.max_num_seqs);
        default_num_gpu_blocks(self.block_size, self.max_model_len, n)
    }
}
