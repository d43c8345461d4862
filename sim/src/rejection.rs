//! Greedy rejection sampling (`vllm/v1/sample/rejection_sampler.py`,
//! `rejection_greedy_sample_kernel`), with the target model as an oracle.

use crate::error::SimError;
use crate::oracle::TargetModel;

/// One batch row's verification input.
pub struct RowInput<'a> {
    pub req_id: &'a str,
    pub prompt_len: usize,
    /// Tokens whose KV is already computed, followed by this step's scheduled input ids
    /// (the real context the target model attends to).
    pub context: &'a [u32],
    /// Length of `context` up to and including the last non-draft input token.
    pub verify_from: usize,
    /// Drafts as read back from the input buffer (the last `drafts.len()` inputs).
    pub drafts: &'a [u32],
}

/// The sampler output row: accepted drafts, then the target token at the first
/// mismatch or the bonus token, padded with -1 to `width` (= max_spec_len + 1).
pub fn greedy_row(model: &dyn TargetModel, row: &RowInput<'_>, width: usize) -> Result<Vec<i64>, SimError> {
    debug_assert!(row.drafts.len() < width);
    debug_assert_eq!(row.verify_from + row.drafts.len(), row.context.len());
    let mut out = Vec::with_capacity(width);
    for (j, &d) in row.drafts.iter().enumerate() {
        let t = model.next_token(row.req_id, row.prompt_len, &row.context[..row.verify_from + j])?;
        out.push(i64::from(t));
        if t != d {
            break;
        }
    }
    if out.len() == row.drafts.len() && out.iter().zip(row.drafts).all(|(&o, &d)| o == i64::from(d)) {
        let bonus = model.next_token(row.req_id, row.prompt_len, row.context)?;
        out.push(i64::from(bonus));
    }
    out.resize(width, -1);
    Ok(out)
}
