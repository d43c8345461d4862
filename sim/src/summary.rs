//! Speculative-decoding accounting, in one place: [`SpecStats`] (vLLM's
//! `SpecDecodingStats`, `vllm/v1/spec_decode/metrics.py`) is what the scheduler counts
//! while running and what [`Summary`] recounts from any recording (simulated or not);
//! `specreplay show` prints the latter.

use crate::trace::{Step, Trace};

/// Draft and acceptance counters (`SpecDecodingStats`), with the derived rates vLLM's
/// `SpecDecodingLogging` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecStats {
    /// (request, step) pairs that verified drafts.
    pub num_drafts: u64,
    pub num_draft_tokens: u64,
    pub num_accepted_tokens: u64,
    /// Per draft position: how many draft events accepted that position. Sized by the
    /// longest draft observed (never by the configured k, which an arbitrary trace may
    /// set to anything).
    pub accepted_per_pos: Vec<u64>,
}

impl SpecStats {
    /// `observe_draft`: one request verified `num_draft_tokens` drafts and accepted the
    /// first `num_accepted` of them (the scheduler passes `len(generated) - 1`).
    pub fn observe_draft(&mut self, num_draft_tokens: usize, num_accepted: usize) {
        debug_assert!(num_accepted <= num_draft_tokens, "accepted {num_accepted} of {num_draft_tokens} drafts");
        self.num_drafts += 1;
        self.num_draft_tokens += num_draft_tokens as u64;
        self.num_accepted_tokens += num_accepted as u64;
        if self.accepted_per_pos.len() < num_draft_tokens {
            self.accepted_per_pos.resize(num_draft_tokens, 0);
        }
        for p in &mut self.accepted_per_pos[..num_accepted.min(num_draft_tokens)] {
            *p += 1;
        }
    }

    /// Mean acceptance length: accepted per draft event, plus the bonus/target token
    /// (1 when nothing was drafted).
    pub fn mean_acceptance_length(&self) -> f64 {
        if self.num_drafts == 0 {
            return 1.0;
        }
        self.num_accepted_tokens as f64 / self.num_drafts as f64 + 1.0
    }

    /// Acceptance rate at each draft position (accepted events / draft events).
    pub fn acceptance_per_pos(&self) -> Vec<f64> {
        self.accepted_per_pos
            .iter()
            .map(|&a| if self.num_drafts == 0 { 0.0 } else { a as f64 / self.num_drafts as f64 })
            .collect()
    }
}

/// Summary of a recorded run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Engine steps that ran the model (idle steps excluded).
    pub steps: usize,
    /// Steps in which at least one request had drafts scheduled.
    pub steps_with_drafts: usize,
    /// The run's draft/acceptance counters, recounted from the recorded rows.
    pub spec: SpecStats,
    /// Idle engine steps (nothing waiting or running).
    pub idle_steps: u64,
    /// Preemption events (a request preempted twice counts twice).
    pub preemptions: u64,
    /// Fewest free KV blocks at the end of a busy step (`None` before one).
    pub min_free_blocks: Option<u32>,
    /// Sum over busy steps of the free blocks at their end (mean = sum / steps).
    pub free_blocks_sum: u64,
}

impl Summary {
    /// Recounts a trace: a request with drafts scheduled accepted as many as its
    /// rejection-sampler row holds valid tokens, minus the bonus/target one.
    pub fn from_trace(t: &Trace) -> Summary {
        let mut s = Summary::new();
        for step in &t.steps {
            s.add(step);
        }
        s
    }

    /// An empty summary, fed step by step with [`Summary::add`] (streaming readers).
    pub fn new() -> Summary {
        Summary {
            steps: 0,
            steps_with_drafts: 0,
            spec: SpecStats::default(),
            idle_steps: 0,
            preemptions: 0,
            min_free_blocks: None,
            free_blocks_sum: 0,
        }
    }

    /// Accounts one step (idle steps are only counted).
    pub fn add(&mut self, step: &Step) {
        if step.idle {
            self.idle_steps += 1;
            return;
        }
        self.steps += 1;
        self.preemptions += step.preempted_req_ids.len() as u64;
        self.min_free_blocks = Some(self.min_free_blocks.map_or(step.num_free_blocks, |m| m.min(step.num_free_blocks)));
        self.free_blocks_sum += u64::from(step.num_free_blocks);
        if !step.scheduled_spec_decode_tokens.is_empty() {
            self.steps_with_drafts += 1;
        }
        for (req, drafts) in &step.scheduled_spec_decode_tokens {
            let Some(row) = step.batch_req_ids.iter().position(|r| r == req) else { continue };
            let valid = step.output_token_ids.get(row).map_or(0, |o| o.iter().filter(|&&x| x >= 0).count());
            // An arbitrary trace may hold more valid tokens than drafts + 1: clamp.
            self.spec.observe_draft(drafts.len(), valid.saturating_sub(1).min(drafts.len()));
        }
    }
}

impl Summary {
    /// KV-cache utilisation over busy steps given the allocatable blocks (vLLM: the pool
    /// minus the null block 0; nano-vllm: the whole pool): (peak used, mean used).
    pub fn kv_used(&self, usable_blocks: u32) -> Option<(u32, f64)> {
        let min_free = self.min_free_blocks?;
        let mean_free = self.free_blocks_sum as f64 / self.steps.max(1) as f64;
        Some((usable_blocks.saturating_sub(min_free), (f64::from(usable_blocks) - mean_free).max(0.0)))
    }
}

impl Default for Summary {
    fn default() -> Self {
        Summary::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_draft_counts_events_tokens_and_positions() {
        let mut s = SpecStats::default();
        assert_eq!(s.mean_acceptance_length(), 1.0);
        s.observe_draft(3, 2);
        s.observe_draft(1, 0);
        s.observe_draft(2, 2);
        assert_eq!((s.num_drafts, s.num_draft_tokens, s.num_accepted_tokens), (3, 6, 4));
        assert_eq!(s.accepted_per_pos, vec![2, 2, 0]);
        assert_eq!(s.acceptance_per_pos(), vec![2.0 / 3.0, 2.0 / 3.0, 0.0]);
        assert!((s.mean_acceptance_length() - (4.0 / 3.0 + 1.0)).abs() < 1e-12);
    }
}
