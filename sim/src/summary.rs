//! Run summary computed from a trace (works on any recording, simulated or not): the
//! counters vLLM's `SpecDecodingStats` reports (`vllm/v1/spec_decode/metrics.py`).

use crate::trace::{Step, Trace};

/// Speculative-decoding summary of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Engine steps that ran the model (idle steps excluded).
    pub steps: usize,
    /// Steps in which at least one request had drafts scheduled.
    pub steps_with_drafts: usize,
    /// (request, step) pairs that verified drafts (`num_drafts`).
    pub num_drafts: u64,
    pub drafted: u64,
    pub accepted: u64,
    /// Per draft position: how many draft events accepted that position.
    pub accepted_per_pos: Vec<u64>,
}

impl Default for Summary {
    fn default() -> Self {
        Summary::new()
    }
}

impl Summary {
    pub fn from_trace(t: &Trace) -> Summary {
        let mut s = Summary::new();
        for step in &t.steps {
            s.add(step);
        }
        s
    }

    /// An empty summary, to be fed step by step with [`Summary::add`] (streaming).
    pub fn new() -> Summary {
        // Positions are sized by the longest draft actually scheduled (never by the
        // configured k, which an arbitrary trace may set to anything).
        Summary { steps: 0, steps_with_drafts: 0, num_drafts: 0, drafted: 0, accepted: 0, accepted_per_pos: Vec::new() }
    }

    /// Accounts one step (idle steps are skipped).
    pub fn add(&mut self, step: &Step) {
        let s = self;
        if step.idle {
            return;
        }
        s.steps += 1;
        if !step.scheduled_spec_decode_tokens.is_empty() {
            s.steps_with_drafts += 1;
        }
        for (req, drafts) in &step.scheduled_spec_decode_tokens {
            let Some(row) = step.batch_req_ids.iter().position(|r| r == req) else { continue };
            let valid = step.output_token_ids.get(row).map_or(0, |o| o.iter().filter(|&&x| x >= 0).count());
            let acc = valid.saturating_sub(1);
            s.num_drafts += 1;
            s.drafted += drafts.len() as u64;
            s.accepted += acc as u64;
            if s.accepted_per_pos.len() < drafts.len() {
                s.accepted_per_pos.resize(drafts.len(), 0);
            }
            for p in 0..acc.min(drafts.len()) {
                s.accepted_per_pos[p] += 1;
            }
        }
    }

    /// Mean acceptance length: accepted per draft event, plus the bonus/target token.
    pub fn mean_acceptance_length(&self) -> f64 {
        if self.num_drafts == 0 {
            return 1.0;
        }
        self.accepted as f64 / self.num_drafts as f64 + 1.0
    }

    /// Acceptance rate at each draft position.
    pub fn acceptance_per_pos(&self) -> Vec<f64> {
        self.accepted_per_pos
            .iter()
            .map(|&a| if self.num_drafts == 0 { 0.0 } else { a as f64 / self.num_drafts as f64 })
            .collect()
    }
}
