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
//! * `vectorized-sorted` (known bad): the fork's `tile_spec/test_vectorized_slice.py`, which
//!   additionally `torch.sort`s the top-max indices by index before the gather. A request
//!   with `c_i < max(c)` then takes the `c_i` lowest-index members of its top-max set, not
//!   its top `c_i` by score. Seed 000's analysis calls the logic correct because its test
//!   scores decrease with the index, where the two coincide. Its output is in index order
//!   by design (an EAGLE tree keeps parents first), so it is compared with the reference
//!   as index-sorted sets: only the membership error counts.

use super::torch;
use super::BuilderError;

/// The forms seed 000 compares, plus the fork's sorted variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DraftVariant {
    Loop,
    Vectorized,
    /// Known to disagree with the reference (see the module docs).
    VectorizedSorted,
}

impl DraftVariant {
    /// The variants that agree with the reference.
    pub const ALL: [DraftVariant; 2] = [DraftVariant::Loop, DraftVariant::Vectorized];
    pub fn name(self) -> &'static str {
        match self {
            DraftVariant::Loop => "loop",
            DraftVariant::Vectorized => "vectorized",
            DraftVariant::VectorizedSorted => "vectorized-sorted",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        [DraftVariant::Loop, DraftVariant::Vectorized, DraftVariant::VectorizedSorted]
            .into_iter()
            .find(|v| v.name() == s)
    }
    /// Whether the variant's rows are in index order (compared with the reference as sets).
    pub fn index_ordered(self) -> bool {
        self == DraftVariant::VectorizedSorted
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
        DraftVariant::Vectorized => select_vectorized(scores, counts, false),
        DraftVariant::VectorizedSorted => select_vectorized(scores, counts, true),
    }
    .map_err(|e| BuilderError::Shape(e.0))?;
    debug_assert!(out.iter().zip(counts).all(|(s, &c)| s.len() == c));
    Ok(out)
}

fn select_loop(scores: &[Vec<f32>], counts: &[usize]) -> Result<Selection, torch::TorchError> {
    scores.iter().zip(counts).map(|(row, &c)| if c > 0 { torch::topk_row(row, c) } else { Ok(Vec::new()) }).collect()
}

fn select_vectorized(scores: &[Vec<f32>], counts: &[usize], sort: bool) -> Result<Selection, torch::TorchError> {
    let bs = counts.len();
    let max_drafts = counts.iter().copied().max().unwrap_or(0);
    if bs == 0 || max_drafts == 0 {
        return Ok(vec![Vec::new(); bs]);
    }
    // 1. one topk over the whole batch: [bs, max_drafts]
    let mut top: Vec<Vec<i64>> = scores.iter().map(|row| torch::topk_row(row, max_drafts)).collect::<Result<_, _>>()?;
    if sort {
        // top_indices = torch.sort(topk(...).indices, dim=-1).values
        top.iter_mut().for_each(|row| row.sort_unstable());
    }
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
    fn sorted_variant_takes_the_lowest_indices_of_the_top_max_set() {
        // The reading notes' example: scores [0.8, 0.1, 0.9], counts [1, 2]: top-2 of row 0
        // is {2, 0}; sorted [0, 2]; request 0 takes index 0 (0.8), not 2 (0.9).
        let scores = vec![vec![0.8, 0.1, 0.9], vec![0.8, 0.1, 0.9]];
        assert_eq!(select(DraftVariant::Loop, &scores, &[1, 2]).unwrap(), vec![vec![2], vec![2, 0]]);
        assert_eq!(select(DraftVariant::VectorizedSorted, &scores, &[1, 2]).unwrap(), vec![vec![0], vec![0, 2]]);
    }

    #[test]
    fn seed_000_mixed_counts() {
        let scores = vec![vec![0.9, 0.8, 0.7, 0.6], vec![0.5, 0.4, 0.3, 0.2], vec![0.95, 0.85, 0.75, 0.65]];
        for v in DraftVariant::ALL {
            assert_eq!(select(v, &scores, &[2, 0, 1]).unwrap(), vec![vec![0, 1], vec![], vec![0]], "{v:?}");
        }
    }
}
