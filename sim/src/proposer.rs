//! vLLM's n-gram proposer (`vllm/v1/spec_decode/ngram_proposer.py`,
//! `_find_longest_matched_ngram_and_propose_tokens`), stated plainly: the longest
//! suffix n-gram with n in [min_n, max_n] that occurs earlier in the context wins; among
//! equal lengths the earliest occurrence wins; up to `k' = min(k, max_model_len - n)`
//! following tokens are proposed (fewer when the context ends).

/// N-gram proposer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ngram {
    pub min_n: usize,
    pub max_n: usize,
    pub k: usize,
    pub max_model_len: usize,
}

impl Ngram {
    /// The proposal for one context (`token_ids_cpu[row, :num_tokens_no_spec]`).
    pub fn propose(&self, ctx: &[u32]) -> Vec<u32> {
        let n = ctx.len();
        if n < self.min_n {
            return Vec::new();
        }
        let k = self.k.min(self.max_model_len.saturating_sub(n));
        if k == 0 {
            return Vec::new();
        }
        let hi = self.max_n.min(n.saturating_sub(1));
        for len in (self.min_n..=hi).rev() {
            let suffix = &ctx[n - len..];
            // earliest occurrence a with a + len <= n - 1 (may overlap, not the suffix)
            if let Some(a) = (0..n - len).find(|&a| &ctx[a..a + len] == suffix) {
                let start = a + len;
                let take = k.min(n - start);
                debug_assert!(take >= 1);
                return ctx[start..start + take].to_vec();
            }
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(min_n: usize, max_n: usize, k: usize, mml: usize, ctx: &[u32]) -> Vec<u32> {
        Ngram { min_n, max_n, k, max_model_len: mml }.propose(ctx)
    }

    #[test]
    fn earliest_occurrence_wins() {
        // seed 004 step 2: suffix [220,16] occurs at 1 and 8; the earliest gives [15,5109].
        let ctx = [852, 220, 16, 15, 5109, 1172, 5610, 15723, 220, 16, 25, 220, 16];
        assert_eq!(p(2, 5, 2, 32, &ctx), vec![15, 5109]);
    }

    #[test]
    fn longest_match_wins() {
        // The 3-gram [1,2,3] first occurs at 3 (followed by 9); the 2-gram [2,3] first
        // occurs at 0 (followed by 7): a longer match beats an earlier shorter one.
        let ctx = [2, 3, 7, 1, 2, 3, 9, 5, 1, 2, 3];
        assert_eq!(p(2, 3, 1, 100, &ctx), vec![9]);
        assert_eq!(p(2, 2, 1, 100, &ctx), vec![7]);
    }

    #[test]
    fn clamps_to_context_end_and_max_model_len() {
        // [5,5] occurs at 0 and overlapping at 1: earliest is 0, proposal runs to the end.
        assert_eq!(p(2, 2, 5, 100, &[5, 5, 5]), vec![5]);
        assert_eq!(p(1, 1, 3, 4, &[1, 2, 1]), vec![2]);
        assert_eq!(p(1, 1, 3, 3, &[1, 2, 1]), Vec::<u32>::new());
    }

    #[test]
    fn too_short_or_no_match() {
        assert!(p(3, 5, 2, 100, &[1, 2]).is_empty());
        assert!(p(1, 3, 2, 100, &[1, 2, 3, 4]).is_empty());
    }
}
