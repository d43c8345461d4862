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
/// longest query is `max_query_len`.
///
/// A batch is uniform decode iff every request has exactly `1 + k` tokens. Above the
/// largest capture size, or with mode NONE, nothing is padded. Otherwise the size pads
/// to the smallest capture size ≥ `num_tokens`; a uniform batch runs FULL when a FULL
/// decode key exists (`1 + k ≤ size ≤ max_num_seqs·(1 + k)`, FULL_AND_PIECEWISE only),
/// padding the request count to `size / (1 + k)`; any other batch runs PIECEWISE.
pub fn dispatch(cfg: &Config, num_tokens: usize, num_reqs: usize, max_query_len: usize) -> Dispatch {
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
    if uniform && cfg.cudagraph_mode == CudagraphModeConfig::FullAndPiecewise {
        let full_key = padded >= q && padded <= q * cfg.max_num_seqs as usize;
        if full_key {
            debug_assert_eq!(padded % q, 0, "capture sizes are multiples of 1 + k");
            return Dispatch { mode: GraphMode::Full, num_tokens_padded: padded, num_reqs_padded: padded / q };
        }
    }
    Dispatch { mode: GraphMode::Piecewise, num_tokens_padded: padded, num_reqs_padded: num_reqs }
}
