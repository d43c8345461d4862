//! Per-request variable draft selection, seed 000 (TileSpec-style ragged drafting; the
//! pattern of `tile_spec/test_vectorized_slice.py` in the sjchoi1/sglang fork): from
//! `scores[bs][n_cand]` and `draft_counts[bs]` (zeros allowed), the indices of each
//! request's top `draft_counts[i]` candidates.
//!
//! * `loop` (reference): `topk(scores[i], c_i).indices` per request, skipped when `c_i == 0`.
//! * `vectorized`: one `topk(scores, max(c))`, then `cumsum`, `repeat_interleave` of the
//!   offsets and of `arange(bs)` by the counts, a gather `top[req, local]` and a `split`
//!   by the counts, exactly seed 000's trace. The empty batch and the all-zero case take
//!   an early branch (Python's `max([])` raises, and `topk(k=0)` is skipped upstream).
//!
//! Ties: equal scores keep the lower index first ([`super::torch::score_order`]),
//! everywhere. `draft_count > n_cand` is [`BuilderError::DraftCountExceedsCandidates`]
//! for the first such request, in both variants.
//!
//! Note (reading notes §2.1): the fork's test additionally *sorts* the top-max indices by
//! index before gathering, which picks the lowest-index members of the top-max set for a
//! request with `c_i < max`. Seed 000 does not sort; that variant is not modelled here.

use super::torch;
use super::BuilderError;

/// The two forms seed 000 compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DraftVariant {
    Loop,
    Vectorized,
}

impl DraftVariant {
    pub const ALL: [DraftVariant; 2] = [DraftVariant::Loop, DraftVariant::Vectorized];
    pub fn name(self) -> &'static str {
        match self {
            DraftVariant::Loop => "loop",
            DraftVariant::Vectorized => "vectorized",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// Per-request selected candidate indices (`torch.int64`), highest score first.
pub type Selection = Vec<Vec<i64>>;

fn validate(scores: &[Vec<f32>], counts: &[usize]) -> Result<usize, BuilderError> {
    if scores.len() != counts.len() {
        return Err(BuilderError::Shape(format!(
            "scores has {} rows but draft_counts has {} entries",
            scores.len(),
            counts.len()
        )));
    }
    let n_cand = scores.first().map_or(0, Vec::len);
    if let Some((i, row)) = scores.iter().enumerate().find(|(_, r)| r.len() != n_cand) {
        return Err(BuilderError::Shape(format!("scores row {i} has {} candidates, row 0 has {n_cand}", row.len())));
    }
    if let Some((request, &count)) = counts.iter().enumerate().find(|(_, &c)| c > n_cand) {
        return Err(BuilderError::DraftCountExceedsCandidates { request, count, n_cand });
    }
    Ok(n_cand)
}

/// Runs the chosen variant.
pub fn select(variant: DraftVariant, scores: &[Vec<f32>], counts: &[usize]) -> Result<Selection, BuilderError> {
    validate(scores, counts)?;
    let out = match variant {
        DraftVariant::Loop => select_loop(scores, counts),
        DraftVariant::Vectorized => select_vectorized(scores, counts),
    }
    .map_err(|e| BuilderError::Shape(e.0))?;
    debug_assert!(out.iter().zip(counts).all(|(s, &c)| s.len() == c));
    Ok(out)
}

fn select_loop(scores: &[Vec<f32>], counts: &[usize]) -> Result<Selection, torch::TorchError> {
    scores.iter().zip(counts).map(|(row, &c)| if c > 0 { torch::topk_row(row, c) } else { Ok(Vec::new()) }).collect()
}

fn select_vectorized(scores: &[Vec<f32>], counts: &[usize]) -> Result<Selection, torch::TorchError> {
    let bs = counts.len();
    let max_drafts = counts.iter().copied().max().unwrap_or(0);
    if bs == 0 || max_drafts == 0 {
        return Ok(vec![Vec::new(); bs]);
    }
    // 1. one topk over the whole batch: [bs, max_drafts]
    let top: Vec<Vec<i64>> = scores.iter().map(|row| torch::topk_row(row, max_drafts)).collect::<Result<_, _>>()?;
    // 2. offsets = cumsum - counts
    let c32: Vec<i32> = counts.iter().map(|&c| c as i32).collect();
    let cums = torch::cumsum(&c32);
    let total = *cums.last().unwrap_or(&0);
    let offsets: Vec<i32> = cums.iter().zip(&c32).map(|(a, b)| a - b).collect();
    // 3. repeat_interleave(offsets, counts), repeat_interleave(arange(bs), counts)
    let off_rep = torch::repeat_interleave(&offsets, &c32)?;
    let req_idx = torch::repeat_interleave(&torch::arange(0, bs as i32)?, &c32)?;
    // 4. local = arange(total) - off_rep; gather top[req_idx, local]
    let local: Vec<i32> = torch::arange(0, total)?.iter().zip(&off_rep).map(|(a, b)| a - b).collect();
    let all: Vec<i64> = req_idx.iter().zip(&local).map(|(&r, &l)| top[r as usize][l as usize]).collect();
    // 5. split by counts
    torch::split(&all, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_000_mixed_counts() {
        let scores = vec![vec![0.9, 0.8, 0.7, 0.6], vec![0.5, 0.4, 0.3, 0.2], vec![0.95, 0.85, 0.75, 0.65]];
        for v in DraftVariant::ALL {
            assert_eq!(select(v, &scores, &[2, 0, 1]).unwrap(), vec![vec![0, 1], vec![], vec![0]], "{v:?}");
        }
    }
}
