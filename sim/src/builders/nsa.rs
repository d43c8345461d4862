//! NSA (DeepSeek sparse attention) per-step metadata for speculative decoding, seeds 001
//! and 002: the `target_verify` and `draft_extend` branches of SGLang's
//! `python/sglang/srt/layers/attention/nsa_backend.py` (`NativeSparseAttnBackend`,
//! read at `005e8bf8abf447d93cd14427efbf0b10bf42a326`), eager form
//! (`init_forward_metadata`). The CUDA-graph form is in [`super::cuda_graph`].
//!
//! Every NSA query token runs as its own `q_len = 1` row, so the per-token ("expanded")
//! visible KV length of request `i`'s `r`-th query row is `kv_i - qo_i + 1 + r`:
//!
//! | mode | `cache_seqlens` = kv | qo per request | `page_table_1` rows |
//! |---|---|---|---|
//! | target_verify | `seq_len + D` | `D` (uniform) | repeated `D` times |
//! | draft_extend  | `seq_len`     | `accept_length` (varies, may be 0 here) | repeated `accept_length` times |
//!
//! `nsa_cache_seqlens = compute_nsa_seqlens(seqlens_expanded, topk)`, which upstream
//! (`nsa/utils.py compute_nsa_seqlens`) is exactly `seqlens_expanded.clamp(max=topk)`:
//! it clamps from above only, so zero or negative lengths pass through unchanged.
//! `nsa_cu_seqlens_k = compute_cu_seqlens(nsa_cache_seqlens)` (leading 0, then cumsum).
//! `pad_nsa_cache_seqlens` (DP-attention / context-parallel padding) is not modelled: it
//! only appends zeros and is the same for every variant.
//!
//! The three ways to compute `seqlens_expanded` ([`NsaVariant`]):
//! * `reference`: the upstream list comprehension
//!   `cat([arange(kv - qo + 1, kv + 1) for qo, kv in zip(qo_lens, kv_lens, strict=True)])`.
//! * `uniform-qo`: seed 001's "quick win", reverted in seed 002: it assumes every request
//!   has `qo = D`: `repeat_interleave(kv - D + 1, D) + arange(D).repeat(bs)`. Exact for
//!   target_verify; wrong for draft_extend whenever some `accept_length != D`.
//! * `general`: a vectorization that is correct for any qo lengths:
//!   `repeat_interleave(kv - qo + 1, qo) + (arange(Σqo) - repeat_interleave(cu_qo[:-1], qo))`.

use super::torch::{self, TorchError};

/// Which forward mode's branch is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NsaMode {
    /// `forward_mode.is_target_verify()`: every request verifies `D` draft tokens.
    TargetVerify,
    /// `forward_mode.is_draft_extend()` (v1): request `i` extends by `accept_length[i]`.
    DraftExtend,
}

impl NsaMode {
    pub fn builder_name(self) -> &'static str {
        match self {
            NsaMode::TargetVerify => "nsa-target-verify",
            NsaMode::DraftExtend => "nsa-draft-extend",
        }
    }
}

/// How `seqlens_expanded` is computed. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NsaVariant {
    Reference,
    UniformQo,
    General,
}

impl NsaVariant {
    pub const ALL: [NsaVariant; 3] = [NsaVariant::Reference, NsaVariant::UniformQo, NsaVariant::General];

    pub fn name(self) -> &'static str {
        match self {
            NsaVariant::Reference => "reference",
            NsaVariant::UniformQo => "uniform-qo",
            NsaVariant::General => "general",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// The batch as the backend sees it (live requests, or live + padded rows on replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsaBatch {
    /// `seq_lens` / `seq_lens_cpu` (host mirror assumed equal to the device value).
    pub seq_lens: Vec<i32>,
    /// `spec_info.accept_length[:bs]` (draft_extend's qo lengths); ignored by target_verify.
    pub accept_length: Vec<i32>,
    /// `req_pool_indices`: rows of `req_to_token`.
    pub req_pool_indices: Vec<usize>,
}

impl NsaBatch {
    pub fn bs(&self) -> usize {
        self.seq_lens.len()
    }
}

/// Server constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsaParams {
    /// `speculative_num_draft_tokens` (D), ≥ 1.
    pub num_draft_tokens: i32,
    /// `nsa_index_topk` (2048 for DeepSeek V3.2; small values exercise the clamp).
    pub nsa_index_topk: i32,
    /// `model_config.context_len`: the width of `req_to_token` and of the page-table buffer.
    pub max_context_len: usize,
}

/// `req_to_token_pool.req_to_token`: `[pool_size, max_context_len]` KV slot ids.
/// Row 0 is the reserved slot, all zeros (what SGLang PR #26292 points padded rows at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReqToToken {
    pub rows: Vec<Vec<i32>>,
}

impl ReqToToken {
    /// A deterministic pool: row 0 zeros, row `p > 0` holds slot ids `p * 1000 + t + 1`.
    pub fn synthetic(pool_size: usize, max_context_len: usize) -> Self {
        let rows = (0..pool_size.max(1))
            .map(|p| (0..max_context_len).map(|t| if p == 0 { 0 } else { (p * 1000 + t + 1) as i32 }).collect())
            .collect();
        ReqToToken { rows }
    }
}

/// The NSA metadata fields the builders produce (eager form: fresh tensors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsaMetadata {
    /// `cache_seqlens_int32`, one per request.
    pub cache_seqlens: Vec<i32>,
    /// `cu_seqlens_k`, `bs + 1` entries.
    pub cu_seqlens_k: Vec<i32>,
    /// `page_table_1`, one row per query token (rows of `req_to_token[:, :max_seqlen_k]`).
    pub page_table_1: Vec<Vec<i32>>,
    /// `nsa_seqlens_expanded`, one per query token, unclipped.
    pub seqlens_expanded: Vec<i32>,
    /// `nsa_cache_seqlens_int32` = `seqlens_expanded.clamp(max=topk)`.
    pub nsa_cache_seqlens: Vec<i32>,
    /// `nsa_cu_seqlens_k` = leading 0 + cumsum of `nsa_cache_seqlens`.
    pub nsa_cu_seqlens_k: Vec<i32>,
}

/// Per-request query lengths the reference uses (`extend_seq_lens_cpu`).
pub fn qo_lens(mode: NsaMode, batch: &NsaBatch, p: &NsaParams) -> Vec<i32> {
    match mode {
        NsaMode::TargetVerify => vec![p.num_draft_tokens; batch.bs()],
        NsaMode::DraftExtend => batch.accept_length.clone(),
    }
}

/// Per-request KV lengths after this step's cache write (`cache_seqlens`).
pub fn kv_lens(mode: NsaMode, batch: &NsaBatch, p: &NsaParams) -> Vec<i32> {
    match mode {
        NsaMode::TargetVerify => batch.seq_lens.iter().map(|&s| s + p.num_draft_tokens).collect(),
        NsaMode::DraftExtend => batch.seq_lens.clone(),
    }
}

/// `seqlens_expanded` by the chosen variant.
pub fn seqlens_expanded(
    variant: NsaVariant,
    mode: NsaMode,
    batch: &NsaBatch,
    p: &NsaParams,
) -> Result<Vec<i32>, TorchError> {
    let kv = kv_lens(mode, batch, p);
    let qo = qo_lens(mode, batch, p);
    match variant {
        NsaVariant::Reference => {
            // zip(..., strict=True)
            if qo.len() != kv.len() {
                return Err(TorchError(format!(
                    "zip() argument 2 is shorter than argument 1 ({} vs {})",
                    kv.len(),
                    qo.len()
                )));
            }
            let parts =
                qo.iter().zip(&kv).map(|(&q, &k)| torch::arange(k - q + 1, k + 1)).collect::<Result<Vec<_>, _>>()?;
            torch::cat(&parts)
        }
        NsaVariant::UniformQo => {
            let d = p.num_draft_tokens;
            let start: Vec<i32> = kv.iter().map(|&k| k - d + 1).collect();
            let start_rep = torch::repeat_interleave_scalar(&start, d as usize);
            let base = torch::arange(0, d)?;
            let base_rep: Vec<i32> = base.iter().copied().cycle().take(base.len() * kv.len()).collect();
            debug_assert_eq!(start_rep.len(), base_rep.len());
            Ok(start_rep.iter().zip(&base_rep).map(|(a, b)| a + b).collect())
        }
        NsaVariant::General => {
            let start: Vec<i32> = kv.iter().zip(&qo).map(|(&k, &q)| k - q + 1).collect();
            let start_rep = torch::repeat_interleave(&start, &qo)?;
            let cu = torch::cu_seqlens(&qo);
            let row_start = torch::repeat_interleave(&cu[..cu.len() - 1], &qo)?;
            let total: i32 = qo.iter().sum();
            let local: Vec<i32> = torch::arange(0, total)?.iter().zip(&row_start).map(|(a, b)| a - b).collect();
            debug_assert_eq!(start_rep.len(), local.len());
            Ok(start_rep.iter().zip(&local).map(|(a, b)| a + b).collect())
        }
    }
}

/// The page-table rows every variant shares: `req_to_token[rpi, :max_k]`, repeated per
/// query token (`repeat_interleave(..., D)` or `repeat_interleave(..., accept_length)`).
pub fn page_indices(
    mode: NsaMode,
    batch: &NsaBatch,
    p: &NsaParams,
    r2t: &ReqToToken,
    max_k: usize,
) -> Result<Vec<Vec<i32>>, TorchError> {
    let rows = torch::index_rows(&r2t.rows, &batch.req_pool_indices, max_k)?;
    match mode {
        NsaMode::TargetVerify => Ok(torch::repeat_interleave_scalar(&rows, p.num_draft_tokens as usize)),
        NsaMode::DraftExtend => torch::repeat_interleave(&rows, &batch.accept_length),
    }
}

/// Eager `init_forward_metadata` for target_verify / draft_extend(v1), with the chosen
/// variant computing `seqlens_expanded`.
pub fn build_eager(
    variant: NsaVariant,
    mode: NsaMode,
    batch: &NsaBatch,
    p: &NsaParams,
    r2t: &ReqToToken,
) -> Result<NsaMetadata, TorchError> {
    let draft = if mode == NsaMode::TargetVerify { p.num_draft_tokens } else { 0 };
    let cache_seqlens: Vec<i32> = batch.seq_lens.iter().map(|&s| s + draft).collect();
    let cu_seqlens_k = torch::cu_seqlens(&cache_seqlens);
    // int(seq_lens_cpu.max().item() + draft_token_num): raises on an empty batch.
    let max_k = torch::max(&batch.seq_lens)? + draft;
    let expanded = seqlens_expanded(variant, mode, batch, p)?;
    let page_table_1 = page_indices(mode, batch, p, r2t, max_k.max(0) as usize)?;
    let nsa_cache_seqlens = torch::clamp_max(&expanded, p.nsa_index_topk);
    let nsa_cu_seqlens_k = torch::cu_seqlens(&nsa_cache_seqlens);
    Ok(NsaMetadata {
        cache_seqlens,
        cu_seqlens_k,
        page_table_1,
        seqlens_expanded: expanded,
        nsa_cache_seqlens,
        nsa_cu_seqlens_k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: &[i32], acc: &[i32]) -> NsaBatch {
        NsaBatch { seq_lens: seq.to_vec(), accept_length: acc.to_vec(), req_pool_indices: (1..=seq.len()).collect() }
    }

    const P: NsaParams = NsaParams { num_draft_tokens: 3, nsa_index_topk: 2048, max_context_len: 32 };

    #[test]
    fn target_verify_expands_seq_plus_one_to_seq_plus_d() {
        // seq_lens [5, 2], D = 3: kv = [8, 5]; rows 6,7,8 then 3,4,5.
        for v in NsaVariant::ALL {
            let e = seqlens_expanded(v, NsaMode::TargetVerify, &batch(&[5, 2], &[]), &P).unwrap();
            assert_eq!(e, vec![6, 7, 8, 3, 4, 5], "{v:?}");
        }
    }

    #[test]
    fn draft_extend_uniform_qo_is_wrong_when_accept_varies() {
        // seq_lens [5, 2], accept [1, 2]: reference [5] ++ [1, 2].
        let b = batch(&[5, 2], &[1, 2]);
        let r = seqlens_expanded(NsaVariant::Reference, NsaMode::DraftExtend, &b, &P).unwrap();
        assert_eq!(r, vec![5, 1, 2]);
        let g = seqlens_expanded(NsaVariant::General, NsaMode::DraftExtend, &b, &P).unwrap();
        assert_eq!(g, r);
        // uniform-qo: D = 3 rows per request: [3,4,5] ++ [0,1,2].
        let u = seqlens_expanded(NsaVariant::UniformQo, NsaMode::DraftExtend, &b, &P).unwrap();
        assert_eq!(u, vec![3, 4, 5, 0, 1, 2]);
    }
}
