//! CUDA-graph capture and replay of the NSA metadata (seeds 001/002), mirroring
//! `init_forward_metadata_capture_cuda_graph` and `init_forward_metadata_replay_cuda_graph`
//! in SGLang's `python/sglang/srt/layers/attention/nsa_backend.py`, and the padding that
//! `speculative/eagle_draft_extend_cuda_graph_runner.py` applies before a replay.
//!
//! * **Bucket.** A live batch of `raw_bs` requests runs the graph captured for the
//!   smallest capture size `bs ≥ raw_bs`; rows `raw_bs..bs` are padding.
//! * **Padding fill values.** `seq_lens` / `seq_lens_cpu` = `get_cuda_graph_seq_len_fill_value()`
//!   = 1, `accept_length` = 1 (`extend_seq_lens` = 1), `req_pool_indices` = 0 (the reserved
//!   all-zero slot; before SGLang PR #26292 this field was *not* reset and kept a stale
//!   request's slot; the page table is the same for every variant, so the choice does not
//!   affect any comparison here).
//! * **Capture.** target_verify and draft_extend share one capture branch with *verify*
//!   shapes: buffers hold `bs * D` query rows, `cache_seqlens = seq_lens + D`, uniform
//!   `D`-long `seqlens_expanded`. Captured with `seq_lens` = fill value 1 and a zeroed
//!   page table, which is what the buffers hold before the first replay.
//! * **Replay.** Buffers are overwritten with `Tensor.copy_` (see [`super::torch::copy_into`]):
//!   target_verify copies whole buffers; draft_extend writes only the first
//!   `n = len(seqlens_expanded)` rows (`buf[:n].copy_(...)`), so rows `n..bs*D` keep
//!   whatever was there (the capture values or an earlier replay's: a **stale tail**).

use super::nsa::{self, NsaBatch, NsaMode, NsaParams, NsaVariant, ReqToToken};
use super::torch::{self, TorchError};

/// SGLang's `get_cuda_graph_seq_len_fill_value()`.
pub const SEQ_LEN_FILL_VALUE: i32 = 1;
/// `accept_length.fill_(1)` in the v1 draft-extend runner.
pub const ACCEPT_LENGTH_FILL_VALUE: i32 = 1;
/// `req_pool_indices` of padded rows after PR #26292 (reserved slot 0).
pub const REQ_POOL_FILL_VALUE: usize = 0;

/// Default capture sizes (SGLang captures 1, 2, 4, 8, then steps of 8 up to its max).
pub const DEFAULT_CAPTURE_SIZES: [usize; 8] = [1, 2, 4, 8, 16, 24, 32, 64];

/// The captured size a batch of `raw_bs` live requests replays with, or `None` when it
/// is larger than every captured size (then SGLang runs the eager path).
pub fn capture_bucket(raw_bs: usize, sizes: &[usize]) -> Option<usize> {
    sizes.iter().copied().filter(|&s| s >= raw_bs.max(1)).min()
}

/// Pads a live batch to the captured size with the runner's fill values.
pub fn pad_batch(raw: &NsaBatch, captured_bs: usize) -> NsaBatch {
    debug_assert!(captured_bs >= raw.bs());
    let mut b = raw.clone();
    b.seq_lens.resize(captured_bs, SEQ_LEN_FILL_VALUE);
    b.accept_length.resize(captured_bs, ACCEPT_LENGTH_FILL_VALUE);
    b.req_pool_indices.resize(captured_bs, REQ_POOL_FILL_VALUE);
    b
}

/// The preallocated metadata buffers of one captured graph (`decode_cuda_graph_metadata[bs]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphBuffers {
    pub captured_bs: usize,
    /// `[captured_bs]`
    pub cache_seqlens: Vec<i32>,
    /// `[captured_bs + 1]`
    pub cu_seqlens_k: Vec<i32>,
    /// `[captured_bs * D, max_context_len]`
    pub page_table_1: Vec<Vec<i32>>,
    /// `[captured_bs * D]`
    pub seqlens_expanded: Vec<i32>,
    /// `[captured_bs * D]`
    pub nsa_cache_seqlens: Vec<i32>,
    /// `[captured_bs * D + 1]`
    pub nsa_cu_seqlens_k: Vec<i32>,
}

/// What the captured page table holds before the first replay (`torch.zeros` at capture).
pub const PAGE_TABLE_FILL_VALUE: i32 = 0;

impl GraphBuffers {
    /// The buffers as `init_forward_metadata_capture_cuda_graph` leaves them (shared
    /// target_verify/draft_extend branch, `seq_lens` = fill value, zeroed page table).
    pub fn captured(captured_bs: usize, p: &NsaParams) -> Self {
        let mut b = Self::captured_without_page_table(captured_bs, p);
        b.page_table_1 = vec![vec![PAGE_TABLE_FILL_VALUE; p.max_context_len]; b.seqlens_expanded.len()];
        b
    }

    /// [`GraphBuffers::captured`] with `page_table_1` left empty, for a caller that lays
    /// out the `captured_bs * D` rows of [`PAGE_TABLE_FILL_VALUE`] itself (the device's
    /// packed buffers).
    pub fn captured_without_page_table(captured_bs: usize, p: &NsaParams) -> Self {
        let d = p.num_draft_tokens;
        let cache_seqlens = vec![SEQ_LEN_FILL_VALUE + d; captured_bs];
        let cu_seqlens_k = torch::cu_seqlens(&cache_seqlens);
        let rows = captured_bs * d as usize;
        let page_table_1 = Vec::new();
        let seqlens_expanded: Vec<i32> = cache_seqlens.iter().flat_map(|&kv| (kv - d + 1)..=kv).collect();
        let nsa_cache_seqlens = torch::clamp_max(&seqlens_expanded, p.nsa_index_topk);
        let nsa_cu_seqlens_k = torch::cu_seqlens(&nsa_cache_seqlens);
        debug_assert_eq!(seqlens_expanded.len(), rows);
        GraphBuffers {
            captured_bs,
            cache_seqlens,
            cu_seqlens_k,
            page_table_1,
            seqlens_expanded,
            nsa_cache_seqlens,
            nsa_cu_seqlens_k,
        }
    }
}

/// `init_forward_metadata_replay_cuda_graph` for target_verify / draft_extend on an
/// already padded batch (`batch.bs() == bufs.captured_bs`), with the chosen variant
/// computing `seqlens_expanded`. On `Err`, the buffers hold whatever the copies before
/// the raising one wrote (as on device).
pub fn replay(
    variant: NsaVariant,
    mode: NsaMode,
    batch: &NsaBatch,
    p: &NsaParams,
    r2t: &ReqToToken,
    bufs: &mut GraphBuffers,
) -> Result<(), TorchError> {
    debug_assert_eq!(batch.bs(), bufs.captured_bs);
    let d = p.num_draft_tokens;
    let draft = if mode == NsaMode::TargetVerify { d } else { 0 };
    let max_k = torch::max(&batch.seq_lens)? + draft;
    let cache: Vec<i32> = batch.seq_lens.iter().map(|&s| s + draft).collect();
    torch::copy_into(&mut bufs.cache_seqlens, 0, None, &cache)?;
    torch::copy_into(&mut bufs.cu_seqlens_k, 1, None, &torch::cumsum(&cache))?;
    let page = nsa::page_indices(mode, batch, p, r2t, max_k.max(0) as usize)?;
    let expanded = nsa::seqlens_expanded(variant, mode, batch, p)?;
    let nsa_cache = torch::clamp_max(&expanded, p.nsa_index_topk);
    let n = expanded.len();
    match mode {
        NsaMode::TargetVerify => {
            // metadata.page_table_1[:, :max_seqlen_k].copy_(page_indices)
            torch::copy_into_2d(&mut bufs.page_table_1, None, Some(max_k.max(0) as usize), &page)?;
            // metadata.nsa_seqlens_expanded.copy_(seqlens_expanded): the whole buffer.
            torch::copy_into(&mut bufs.seqlens_expanded, 0, None, &expanded)?;
            torch::copy_into(&mut bufs.nsa_cache_seqlens, 0, None, &nsa_cache)?;
        }
        NsaMode::DraftExtend => {
            // metadata.page_table_1[: page_indices.shape[0], :max_seqlen_k].copy_(...)
            torch::copy_into_2d(&mut bufs.page_table_1, Some(page.len()), Some(max_k.max(0) as usize), &page)?;
            // metadata.nsa_seqlens_expanded[: seqlens_expanded.shape[0]].copy_(...)
            torch::copy_into(&mut bufs.seqlens_expanded, 0, Some(n), &expanded)?;
            torch::copy_into(&mut bufs.nsa_cache_seqlens, 0, Some(n), &nsa_cache)?;
        }
    }
    // metadata.nsa_cu_seqlens_k[1 : 1 + seqlens_expanded_size].copy_(cumsum(...))
    torch::copy_into(&mut bufs.nsa_cu_seqlens_k, 1, Some(1 + n), &torch::cumsum(&nsa_cache))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_and_padding() {
        assert_eq!(capture_bucket(0, &DEFAULT_CAPTURE_SIZES), Some(1));
        assert_eq!(capture_bucket(3, &DEFAULT_CAPTURE_SIZES), Some(4));
        assert_eq!(capture_bucket(65, &DEFAULT_CAPTURE_SIZES), None);
        let raw = NsaBatch { seq_lens: vec![7], accept_length: vec![2], req_pool_indices: vec![3] };
        let b = pad_batch(&raw, 2);
        assert_eq!(b.seq_lens, vec![7, 1]);
        assert_eq!(b.accept_length, vec![2, 1]);
        assert_eq!(b.req_pool_indices, vec![3, 0]);
    }

    #[test]
    fn capture_state_is_uniform_verify_shaped() {
        let p = NsaParams { num_draft_tokens: 2, nsa_index_topk: 2, max_context_len: 4 };
        let g = GraphBuffers::captured(2, &p);
        assert_eq!(g.cache_seqlens, vec![3, 3]);
        assert_eq!(g.seqlens_expanded, vec![2, 3, 2, 3]);
        assert_eq!(g.nsa_cache_seqlens, vec![2, 2, 2, 2]);
        assert_eq!(g.nsa_cu_seqlens_k, vec![0, 2, 4, 6, 8]);
    }
}
