//! The target model as an oracle: the token the target would emit greedily after a
//! context. Stands in for the forward pass + argmax of a real model, so no GPU is
//! needed; the CUDA executor replaces it with a real transformer.

use crate::config::{OracleKind, OracleSpec, RequestSpec};
use crate::error::{ConfigError, SimError};
use crate::splitmix::splitmix;
use std::collections::BTreeMap;

/// A greedy target model: `next_token(req, context)` is the argmax token after
/// `context` (prompt + outputs so far + any accepted drafts).
pub trait TargetModel {
    /// The target's greedy token after `context` for request `req_id` whose prompt has
    /// `prompt_len` tokens.
    fn next_token(&self, req_id: &str, prompt_len: usize, context: &[u32]) -> Result<u32, SimError>;

    /// The target's log-probability row after `context` (the logits random-mode sampling
    /// starts from, `vllm/v1/sample/rejection_sampler.py` `compute_probs`); `None` for a
    /// greedy-only model (a recorded continuation has no probability rows).
    fn log_probs(&self, _context: &[u32]) -> Option<Vec<f64>> {
        None
    }
}

/// Builds the oracle a scenario names.
pub fn build(spec: &OracleSpec) -> Box<dyn TargetModel + Send + Sync> {
    match spec.kind {
        OracleKind::Continuation => Box::new(Continuation { tokens: spec.tokens.clone() }),
        OracleKind::Synthetic => {
            Box::new(Synthetic { seed: spec.seed, vocab_size: spec.vocab_size, order: spec.order })
        }
    }
}

/// Checks an oracle spec against the scenario's requests.
pub fn validate(spec: &OracleSpec, requests: &[RequestSpec]) -> Result<(), ConfigError> {
    match spec.kind {
        OracleKind::Continuation => {
            for r in requests {
                if !spec.tokens.contains_key(&r.req_id) {
                    return Err(ConfigError::Oracle(format!("continuation has no tokens for request {:?}", r.req_id)));
                }
            }
            Ok(())
        }
        OracleKind::Synthetic => {
            if spec.vocab_size == 0 {
                return Err(ConfigError::Oracle("synthetic oracle needs vocab_size >= 1".into()));
            }
            if spec.order == 0 {
                return Err(ConfigError::Oracle("synthetic oracle needs order >= 1".into()));
            }
            Ok(())
        }
    }
}

/// The recorded greedy continuation of each request: the token after a context of
/// length `prompt_len + i` is `tokens[i]`. Only contexts that are prefixes of
/// prompt + continuation are ever asked for under greedy verification.
#[derive(Debug, Clone)]
pub struct Continuation {
    pub tokens: BTreeMap<String, Vec<u32>>,
}

impl TargetModel for Continuation {
    fn next_token(&self, req_id: &str, prompt_len: usize, context: &[u32]) -> Result<u32, SimError> {
        let seq = self.tokens.get(req_id).map(Vec::as_slice).unwrap_or(&[]);
        debug_assert!(context.len() >= prompt_len, "the oracle is asked after the whole prompt");
        let i = context.len() - prompt_len;
        seq.get(i).copied().ok_or_else(|| SimError::OracleExhausted {
            req_id: req_id.to_string(),
            position: context.len(),
            available: seq.len(),
        })
    }
}

/// A deterministic pseudo-LM: the next token is a hash of the seed and the last
/// `order` tokens, modulo `vocab_size`. It depends on the context only (never on the
/// position or the request), so speculative and plain decoding must agree; small
/// vocabularies and orders give repetitive streams where n-gram drafts get accepted.
#[derive(Debug, Clone, Copy)]
pub struct Synthetic {
    pub seed: u64,
    pub vocab_size: u32,
    pub order: u32,
}

impl Synthetic {
    /// The greedy token after `context`.
    pub fn token_after(&self, context: &[u32]) -> u32 {
        (self.context_hash(context) % u64::from(self.vocab_size.max(1))) as u32
    }
}

/// The synthetic oracle as a whole logits row, for executors that compute logits and
/// take their argmax (the CUDA executor's paged toy model, `executor/kernels/toy_model.cu`).
///
/// Definition (integer operations only, so a GPU computes the same bits):
/// * `h = context_hash(context)`: `h = splitmix(seed ^ 0x5eed5eed5eed5eed)`, then
///   `h = splitmix(h ^ t)` for each of the last `min(order, len)` tokens `t`, in order —
///   exactly the hash [`Synthetic::token_after`] reduces modulo `vocab_size`;
/// * `score(h, v) = 2^23` for `v == h % vocab_size`, else the top 23 bits of
///   `splitmix(h + v * 0xd1b5_4a32_d192_ed03)` (so `< 2^23`).
///
/// Every score is an integer below 2^24, exact in f32, and the maximum is unique at
/// `token_after(context)`: the row's argmax (lowest index on ties) is the oracle's token.
impl Synthetic {
    /// The mixed hash of the last `order` tokens of `context`.
    pub fn context_hash(&self, context: &[u32]) -> u64 {
        let n = context.len().min(self.order as usize);
        let mut h = splitmix(self.seed ^ 0x5eed_5eed_5eed_5eed);
        for &t in &context[context.len() - n..] {
            h = splitmix(h ^ u64::from(t));
        }
        h
    }

    /// The score of token `v` after a context whose [`Synthetic::context_hash`] is `h`.
    pub fn score(&self, h: u64, v: u32) -> u32 {
        if u64::from(v) == h % u64::from(self.vocab_size.max(1)) {
            1 << 23
        } else {
            (splitmix(h.wrapping_add(u64::from(v).wrapping_mul(0xd1b5_4a32_d192_ed03))) >> 41) as u32
        }
    }

    /// The whole logits row (`vocab_size` entries) after `context`.
    pub fn row(&self, context: &[u32]) -> Vec<f32> {
        let h = self.context_hash(context);
        (0..self.vocab_size).map(|v| self.score(h, v) as f32).collect()
    }
}

/// The synthetic oracle as a probability row, for random-mode sampling (issue 15).
///
/// Definition (integers, then one exact scaling, so CPU and GPU agree to the bit):
/// `r_v = 1 + (score(h, v) >> 19)` (in 1..=16 for non-argmax tokens), `R = Σ r_v`,
/// `S = ⌈log2 R⌉`; the argmax token `a = token_after(context)` gets `w_a = r_a + 2^S − R`,
/// every other token `w_v = r_v`, so `Σ w_v = 2^S` exactly and `p_v = w_v × 2^−S` is an
/// exact dyadic binary32 (every `w_v < 2^24` for vocabularies up to 2^20). The argmax of the
/// row is `token_after(context)`, unique, so greedy decoding is unchanged.
impl Synthetic {
    /// The integer weights and the shift `S` of the row after `context`.
    pub fn weights(&self, context: &[u32]) -> (Vec<u32>, u32) {
        self.weights_of_hash(self.context_hash(context))
    }

    /// [`Synthetic::weights`] of the context whose [`Synthetic::context_hash`] is `h` (the
    /// argmax token is `h % vocab_size`).
    pub fn weights_of_hash(&self, h: u64) -> (Vec<u32>, u32) {
        let mut w: Vec<u32> = (0..self.vocab_size).map(|v| 1 + (self.score(h, v) >> 19)).collect();
        let total: u64 = w.iter().map(|&x| u64::from(x)).sum();
        let shift = 64 - (total - 1).leading_zeros();
        let a = (h % u64::from(self.vocab_size.max(1))) as usize;
        w[a] += ((1u64 << shift) - total) as u32;
        (w, shift)
    }

    /// The probability row after `context`: `w_v × 2^−S`, exact.
    pub fn probs(&self, context: &[u32]) -> Vec<f32> {
        self.probs_of_hash(self.context_hash(context))
    }

    /// [`Synthetic::probs`] of the context whose hash is `h`.
    pub fn probs_of_hash(&self, h: u64) -> Vec<f32> {
        let (w, shift) = self.weights_of_hash(h);
        let scale = f32::powi(2.0, -(shift as i32));
        w.into_iter().map(|x| x as f32 * scale).collect()
    }

    /// The row as logits for random-mode sampling: `ln p_v` with [`crate::philox::ln`].
    pub fn log_probs(&self, context: &[u32]) -> Vec<f64> {
        self.log_probs_of_hash(self.context_hash(context))
    }

    /// [`Synthetic::log_probs`] of the context whose hash is `h`.
    pub fn log_probs_of_hash(&self, h: u64) -> Vec<f64> {
        self.probs_of_hash(h).into_iter().map(|p| crate::philox::ln(f64::from(p))).collect()
    }
}

impl TargetModel for Synthetic {
    fn next_token(&self, _req_id: &str, _prompt_len: usize, context: &[u32]) -> Result<u32, SimError> {
        Ok(self.token_after(context))
    }

    fn log_probs(&self, context: &[u32]) -> Option<Vec<f64>> {
        Some(Synthetic::log_probs(self, context))
    }
}

#[cfg(test)]
mod row_tests {
    use super::*;

    /// Argmax with the lowest index winning ties.
    fn argmax(row: &[f32]) -> u32 {
        let mut best = 0;
        for (v, &x) in row.iter().enumerate() {
            if x > row[best] {
                best = v;
            }
        }
        best as u32
    }

    #[test]
    fn the_rows_argmax_is_token_after_on_many_random_contexts() {
        let mut x = 12345u64;
        let mut next = || {
            x = splitmix(x);
            x
        };
        for case in 0..3000 {
            let vocab = match case % 4 {
                0 => 1 + (next() % 4) as u32,
                1 => 1 + (next() % 64) as u32,
                2 => 1 + (next() % 5000) as u32,
                _ => 151_936,
            };
            if vocab == 151_936 && case % 40 != 3 {
                continue; // a few real-vocabulary rows keep the test fast
            }
            let s = Synthetic { seed: next(), vocab_size: vocab, order: 1 + (next() % 6) as u32 };
            let len = (next() % 12) as usize;
            let ctx: Vec<u32> = (0..len).map(|_| (next() % u64::from(vocab)) as u32).collect();
            let row = s.row(&ctx);
            assert_eq!(row.len(), vocab as usize);
            assert_eq!(argmax(&row), s.token_after(&ctx), "{s:?} {ctx:?}");
            assert!(row.iter().all(|&f| f >= 0.0 && f <= (1u32 << 23) as f32 && f.fract() == 0.0));
            assert_eq!(row.iter().filter(|&&f| f == (1u32 << 23) as f32).count(), 1, "unique maximum");
        }
    }

    #[test]
    fn probability_rows_are_exact_dyadic_and_sum_to_one() {
        let mut x = 99u64;
        for case in 0..400 {
            x = splitmix(x);
            let vocab = if case % 50 == 0 { 151_936 } else { 1 + (x % 3000) as u32 };
            let s = Synthetic { seed: x, vocab_size: vocab, order: 2 };
            let ctx = [(x >> 7) as u32 % vocab, (x >> 17) as u32 % vocab];
            let (w, shift) = s.weights(&ctx);
            assert_eq!(w.iter().map(|&v| u64::from(v)).sum::<u64>(), 1u64 << shift);
            let p = s.probs(&ctx);
            let sum: f64 = p.iter().map(|&v| f64::from(v)).sum();
            assert_eq!(sum, 1.0, "exact");
            for (&pv, &wv) in p.iter().zip(&w) {
                assert_eq!(f64::from(pv) * f64::from(2u32).powi(shift as i32), f64::from(wv), "exact in f32");
            }
            assert_eq!(argmax(&p), s.token_after(&ctx));
            assert_eq!(p.iter().filter(|&&v| v == p[s.token_after(&ctx) as usize]).count(), 1, "unique maximum");
        }
    }

    #[test]
    fn scores_depend_on_the_context_hash() {
        let s = Synthetic { seed: 1, vocab_size: 1000, order: 2 };
        assert_ne!(s.row(&[1, 2]), s.row(&[2, 1]));
        assert_eq!(s.row(&[9, 1, 2]), s.row(&[1, 2]), "only the last `order` tokens count");
    }
}
