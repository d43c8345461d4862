//! The target model as an oracle: the token the target would emit greedily after a
//! context. Stands in for the forward pass + argmax of a real model, so no GPU is
//! needed; the CUDA executor replaces it with a real transformer.

use crate::config::{OracleSpec, RequestSpec};
use crate::error::{ConfigError, SimError};
use crate::splitmix::splitmix;
use std::collections::BTreeMap;

/// A greedy target model: `next_token(req, context)` is the argmax token after
/// `context` (prompt + outputs so far + any accepted drafts).
pub trait TargetModel {
    /// The target's greedy token after `context` for request `req_id` whose prompt has
    /// `prompt_len` tokens.
    fn next_token(&self, req_id: &str, prompt_len: usize, context: &[u32]) -> Result<u32, SimError>;
}

/// Builds the oracle a scenario names.
pub fn build(spec: &OracleSpec) -> Box<dyn TargetModel + Send + Sync> {
    match spec.kind.as_str() {
        "continuation" => Box::new(Continuation { tokens: spec.tokens.clone() }),
        _ => Box::new(Synthetic { seed: spec.seed, vocab_size: spec.vocab_size, order: spec.order }),
    }
}

/// Checks an oracle spec against the scenario's requests.
pub fn validate(spec: &OracleSpec, requests: &[RequestSpec]) -> Result<(), ConfigError> {
    match spec.kind.as_str() {
        "continuation" => {
            for r in requests {
                if !spec.tokens.contains_key(&r.req_id) {
                    return Err(ConfigError::Oracle(format!("continuation has no tokens for request {:?}", r.req_id)));
                }
            }
            Ok(())
        }
        "synthetic" => {
            if spec.vocab_size == 0 {
                return Err(ConfigError::Oracle("synthetic oracle needs vocab_size >= 1".into()));
            }
            if spec.order == 0 {
                return Err(ConfigError::Oracle("synthetic oracle needs order >= 1".into()));
            }
            Ok(())
        }
        other => Err(ConfigError::Oracle(format!(
            "unknown oracle kind {other:?} (expected \"continuation\" or \"synthetic\")"
        ))),
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
        let n = context.len().min(self.order as usize);
        let mut h = splitmix(self.seed ^ 0x5eed_5eed_5eed_5eed);
        for &t in &context[context.len() - n..] {
            h = splitmix(h ^ u64::from(t));
        }
        (h % u64::from(self.vocab_size.max(1))) as u32
    }
}

impl TargetModel for Synthetic {
    fn next_token(&self, _req_id: &str, _prompt_len: usize, context: &[u32]) -> Result<u32, SimError> {
        Ok(self.token_after(context))
    }
}
