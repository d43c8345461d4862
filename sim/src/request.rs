//! Scheduler-side request state (`vllm/v1/request.py`) and the stop rule
//! (`vllm/v1/core/sched/utils.py check_stop`).

use crate::config::RequestSpec;
use crate::kv::BlockHash;

/// Request status. Legal transitions: Waiting → Running; Running → Preempted |
/// Finished; Preempted → Running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Running,
    Preempted,
    /// `FINISHED_STOPPED` (EOS or a stop token id).
    FinishedStopped,
    /// `FINISHED_LENGTH_CAPPED` (max_tokens or max_model_len).
    FinishedLength,
}

impl Status {
    pub fn is_finished(self) -> bool {
        matches!(self, Status::FinishedStopped | Status::FinishedLength)
    }

    /// Whether `self → next` is a transition vLLM's scheduler can make.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Waiting, Running)
                | (Preempted, Running)
                | (Running, Preempted)
                | (Running, FinishedStopped)
                | (Running, FinishedLength)
        )
    }
}

/// A request as the scheduler tracks it.
#[derive(Debug, Clone)]
pub struct Request {
    pub spec: RequestSpec,
    /// `all_token_ids`: prompt followed by output tokens (never drafts).
    pub tokens: Vec<u32>,
    pub num_prompt_tokens: usize,
    /// Drafts proposed for the next step (`spec_token_ids`).
    pub spec_token_ids: Vec<u32>,
    pub num_computed_tokens: usize,
    pub status: Status,
    /// Prefix-cache hashes of every full block of `tokens`.
    pub block_hashes: Vec<BlockHash>,
}

impl Request {
    pub fn new(spec: RequestSpec) -> Self {
        let tokens = spec.prompt_token_ids.clone();
        Request {
            num_prompt_tokens: tokens.len(),
            tokens,
            spec,
            spec_token_ids: Vec::new(),
            num_computed_tokens: 0,
            status: Status::Waiting,
            block_hashes: Vec::new(),
        }
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn num_output_tokens(&self) -> usize {
        self.tokens.len() - self.num_prompt_tokens
    }

    pub fn output(&self) -> &[u32] {
        &self.tokens[self.num_prompt_tokens..]
    }

    /// Moves to `next`, checking the transition is legal.
    pub fn set_status(&mut self, next: Status) {
        debug_assert!(
            self.status.can_become(next),
            "illegal transition {:?} -> {next:?} for {}",
            self.status,
            self.spec.req_id
        );
        self.status = next;
    }

    /// `check_stop`, run after each appended output token; returns the finished status.
    pub fn check_stop(&self, max_model_len: usize) -> Option<Status> {
        if self.num_output_tokens() < self.spec.min_tokens as usize {
            return None;
        }
        let last = *self.tokens.last().expect("called after an append");
        if !self.spec.ignore_eos && Some(last) == self.spec.eos_token_id {
            return Some(Status::FinishedStopped);
        }
        if self.spec.stop_token_ids.contains(&last) {
            return Some(Status::FinishedStopped);
        }
        if self.num_tokens() >= max_model_len || self.num_output_tokens() >= self.spec.max_tokens as usize {
            return Some(Status::FinishedLength);
        }
        None
    }
}
