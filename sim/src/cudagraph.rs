//! CUDA-graph dispatch and padding (`vllm/v1/cudagraph_dispatcher.py`,
//! `GPUModelRunner._determine_batch_execution_and_padding`, vLLM 0.12.0).

use crate::config::{Config, CudagraphModeConfig};

/// Runtime graph mode of one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphMode {
    None,
    Piecewise,
    Full,
}

impl GraphMode {
    pub fn as_str(self) -> &'static str {
        match self {
            GraphMode::None => "NONE",
            GraphMode::Piecewise => "PIECEWISE",
            GraphMode::Full => "FULL",
        }
    }
}

/// The dispatcher's decision: mode, padded token count, padded request count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatch {
    pub mode: GraphMode,
    pub num_tokens_padded: usize,
    pub num_reqs_padded: usize,
}

/// Picks the graph for a batch of `num_tokens` tokens over `num_reqs` requests whose
/// longest query is `max_query_len`; `cascade` (cascade attention in use) forbids FULL.
///
/// A batch is uniform decode iff every request has exactly `1 + k` tokens. Above the
/// largest capture size, or with mode NONE, nothing is padded. Otherwise the size pads
/// to the smallest capture size ≥ `num_tokens`; a uniform batch runs FULL when a FULL
/// decode key exists (`1 + k ≤ size ≤ max_num_seqs·(1 + k)`, FULL_AND_PIECEWISE only),
/// padding the request count to `size / (1 + k)`; any other batch runs PIECEWISE.
pub fn dispatch(cfg: &Config, num_tokens: usize, num_reqs: usize, max_query_len: usize, cascade: bool) -> Dispatch {
    let unpadded = Dispatch { mode: GraphMode::None, num_tokens_padded: num_tokens, num_reqs_padded: num_reqs };
    let q = 1 + cfg.k() as usize;
    let max_cap = cfg.max_capture_size() as usize;
    if cfg.cudagraph_mode == CudagraphModeConfig::None || num_tokens > max_cap {
        return unpadded;
    }
    let padded = cfg
        .cudagraph_capture_sizes
        .iter()
        .map(|&s| s as usize)
        .find(|&s| s >= num_tokens)
        .expect("num_tokens <= largest capture size");
    let uniform = max_query_len == q && num_tokens == max_query_len * num_reqs;
    if uniform && !cascade && cfg.cudagraph_mode == CudagraphModeConfig::FullAndPiecewise {
        let full_key = padded >= q && padded <= q.saturating_mul(cfg.max_num_seqs as usize);
        if full_key {
            debug_assert_eq!(padded % q, 0, "capture sizes are multiples of 1 + k");
            return Dispatch { mode: GraphMode::Full, num_tokens_padded: padded, num_reqs_padded: padded / q };
        }
    }
    Dispatch { mode: GraphMode::Piecewise, num_tokens_padded: padded, num_reqs_padded: num_reqs }
}

/// Length of the prefix shared through cascade attention, or 0 when it is not used
/// (`GPUModelRunner._compute_cascade_attn_prefix_len` + FlashAttention's
/// `use_cascade_attention`, `vllm/v1/attention/backends/flash_attn.py`): the common
/// blocks, capped by the least computed request and cut to whole blocks, used only
/// from 256 tokens and 8 requests on, and, when flash-decoding would run (GQA with all
/// queries of length 1), only if the rough CTA cost model favours it.
pub fn cascade_prefix_len(cfg: &Config, common_blocks: usize, num_computed: &[usize], query_lens: &[usize]) -> usize {
    let bs = cfg.block_size as usize;
    if cfg.disable_cascade_attn || common_blocks == 0 {
        return 0;
    }
    let min_computed = num_computed.iter().copied().min().unwrap_or(0);
    let len = (common_blocks * bs).min(min_computed) / bs * bs;
    if len < 256 || query_lens.len() < 8 {
        return 0;
    }
    let (hq, hkv, sms) = (cfg.num_attention_heads as usize, cfg.num_kv_heads as usize, cfg.num_sms as usize);
    let qpk = hq / hkv;
    let flash_decoding = qpk > 1 && query_lens.iter().all(|&q| q == 1);
    if !flash_decoding {
        return len;
    }
    let n = query_lens.len();
    let prefix_tiles = len.div_ceil(128);
    let cascade_time = (hq * n.div_ceil(128)).div_ceil(sms) * prefix_tiles;
    let flash_decoding_time = (n * hkv * qpk.div_ceil(128) * prefix_tiles).div_ceil(sms);
    if cascade_time < flash_decoding_time {
        len
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SpecMethod;

    fn cfg(hq: u32, hkv: u32) -> Config {
        Config {
            num_gpu_blocks: 1000,
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            max_model_len: 1024,
            method: SpecMethod::Ngram,
            num_speculative_tokens: 2,
            prompt_lookup_min: 1,
            prompt_lookup_max: 3,
            cudagraph_capture_sizes: vec![3, 6, 24],
            num_attention_heads: hq,
            num_kv_heads: hkv,
            ..Config::default()
        }
    }

    #[test]
    fn cascade_thresholds() {
        let c = cfg(2, 1);
        // 18 common blocks = 288 tokens, 8 requests with drafts (no flash-decoding).
        assert_eq!(cascade_prefix_len(&c, 18, &[300; 8], &[3; 8]), 288);
        // capped by the least computed request, cut to whole blocks
        assert_eq!(cascade_prefix_len(&c, 18, &[300, 300, 300, 300, 300, 300, 300, 270], &[3; 8]), 256);
        assert_eq!(cascade_prefix_len(&c, 18, &[300; 7], &[3; 7]), 0, "fewer than 8 requests");
        assert_eq!(cascade_prefix_len(&c, 15, &[300; 8], &[3; 8]), 0, "240 < 256 tokens");
        let off = Config { disable_cascade_attn: true, ..c.clone() };
        assert_eq!(cascade_prefix_len(&off, 18, &[300; 8], &[3; 8]), 0);
    }

    #[test]
    fn flash_decoding_cost_model_boundary() {
        // GQA (2 query heads per KV head) with all queries of length 1: cascade only when
        // ceil(2*ceil(n/128)/132) * 3 < ceil(n*3/132); n = 133 → 3 < 4, n = 132 → 3 < 3.
        let c = cfg(2, 1);
        assert_eq!(cascade_prefix_len(&c, 18, &[300; 133], &[1; 133]), 288);
        assert_eq!(cascade_prefix_len(&c, 18, &[300; 132], &[1; 132]), 0);
        // no GQA: no flash-decoding, so cascade whenever the thresholds pass
        assert_eq!(cascade_prefix_len(&cfg(2, 2), 18, &[300; 8], &[1; 8]), 288);
    }

    #[test]
    fn cascade_forbids_full_graphs() {
        let c = cfg(2, 1);
        let d = dispatch(&c, 24, 8, 3, false);
        assert_eq!((d.mode, d.num_tokens_padded, d.num_reqs_padded), (GraphMode::Full, 24, 8));
        let d = dispatch(&c, 21, 7, 3, true);
        assert_eq!((d.mode, d.num_tokens_padded, d.num_reqs_padded), (GraphMode::Piecewise, 24, 7));
    }
}
