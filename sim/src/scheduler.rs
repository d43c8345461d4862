//! vLLM 0.12.0's v1 scheduler (`vllm/v1/core/sched/scheduler.py`), FCFS policy,
//! synchronous scheduling: `schedule()`, `update_from_output()`,
//! `update_draft_token_ids()`.
//!
//! Invariants checked at the boundary: the total scheduled never exceeds the token
//! budget; `running` never exceeds `max_num_seqs`; no position ≥ `max_model_len` is
//! scheduled; drafts are scheduled only for requests in the running branch.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::Config;
use crate::kv::{BlockHasher, BlockId, KvCacheManager};
use crate::request::{Request, Status};

/// What `schedule()` hands the model runner (`SchedulerOutput`).
#[derive(Debug, Clone, Default)]
pub struct SchedulerOutput {
    /// Newly admitted requests (`scheduled_new_reqs`), in admission order.
    pub new_reqs: Vec<usize>,
    /// `scheduled_cached_reqs`: running requests first, then resumed ones.
    pub cached_reqs: Vec<usize>,
    pub resumed_reqs: BTreeSet<usize>,
    /// `num_scheduled_tokens` in dict insertion order (running, then waiting).
    pub num_scheduled: Vec<(usize, usize)>,
    pub spec_tokens: BTreeMap<usize, Vec<u32>>,
    /// `num_computed_tokens` handed to the runner (before `_update_after_schedule`).
    pub num_computed: BTreeMap<usize, usize>,
    /// New block ids of running requests; every block id of new and resumed ones.
    pub new_block_ids: BTreeMap<usize, Vec<BlockId>>,
    pub preempted: Vec<usize>,
    /// Requests finished since the previous `schedule()` (`finished_req_ids`).
    pub finished_req_ids: Vec<usize>,
    /// Leading KV blocks shared by every request holding blocks (cascade attention).
    pub num_common_prefix_blocks: usize,
}

impl SchedulerOutput {
    pub fn total(&self) -> usize {
        self.num_scheduled.iter().map(|&(_, n)| n).sum()
    }
    pub fn scheduled(&self, req: usize) -> Option<usize> {
        self.num_scheduled.iter().find(|&&(r, _)| r == req).map(|&(_, n)| n)
    }
}

/// The scheduler's draft/acceptance counters (`SpecDecodingStats`), defined with the
/// trace recount in `crate::summary` so acceptance is computed in one place.
pub use crate::summary::SpecStats;

/// The scheduler with its queues and the KV cache manager it owns.
#[derive(Debug)]
pub struct Scheduler {
    cfg: Config,
    pub kv: KvCacheManager,
    hasher: BlockHasher,
    pub reqs: Vec<Request>,
    pub waiting: VecDeque<usize>,
    pub running: Vec<usize>,
    finished_pending: Vec<usize>,
    pub stats: SpecStats,
}

impl Scheduler {
    pub fn new(cfg: &Config) -> Self {
        Scheduler {
            kv: KvCacheManager::new(
                cfg.num_gpu_blocks as usize,
                cfg.block_size as usize,
                cfg.max_model_len as usize,
                cfg.enable_prefix_caching,
            ),
            cfg: cfg.clone(),
            hasher: BlockHasher::default(),
            reqs: Vec::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            finished_pending: Vec::new(),
            stats: SpecStats::default(),
        }
    }

    /// `add_request`: appends to the waiting queue; returns the request's index.
    pub fn add_request(&mut self, mut req: Request) -> usize {
        self.hasher.update(&mut req.block_hashes, &req.tokens, self.cfg.block_size as usize);
        self.reqs.push(req);
        let idx = self.reqs.len() - 1;
        self.waiting.push_back(idx);
        idx
    }

    pub fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// `schedule()`: running requests first (with preemption), then waiting ones (only
    /// when nothing was preempted), then `_update_after_schedule`.
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut out =
            SchedulerOutput { finished_req_ids: std::mem::take(&mut self.finished_pending), ..Default::default() };
        let mut budget = self.cfg.max_num_batched_tokens as usize;
        let scheduled_running = self.schedule_running(&mut out, &mut budget);
        let resumed = if out.preempted.is_empty() { self.schedule_waiting(&mut out, &mut budget) } else { Vec::new() };
        out.cached_reqs = scheduled_running.into_iter().chain(resumed).collect();
        out.num_common_prefix_blocks = self.running.first().map_or(0, |&r| self.kv.num_common_prefix_blocks(r));
        let max_model_len = self.cfg.max_model_len as usize;
        for &(r, n) in &out.num_scheduled {
            out.num_computed.insert(r, self.reqs[r].num_computed_tokens);
            debug_assert!(self.reqs[r].num_computed_tokens + n <= max_model_len, "position >= max_model_len scheduled");
        }
        debug_assert!(out.total() <= self.cfg.max_num_batched_tokens as usize);
        debug_assert!(self.running.len() <= self.cfg.max_num_seqs as usize);
        // _update_after_schedule
        for &(r, n) in &out.num_scheduled {
            self.reqs[r].num_computed_tokens += n;
        }
        out
    }

    /// The running loop: tokens incl. drafts, capped by the budget and the
    /// `max_model_len - 1` clamp; allocation with preemption of the last running request;
    /// drafts truncated to what was scheduled, then dropped. Returns the scheduled ones.
    fn schedule_running(&mut self, out: &mut SchedulerOutput, budget: &mut usize) -> Vec<usize> {
        let max_model_len = self.cfg.max_model_len as usize;
        let mut scheduled = Vec::new();
        let mut i = 0;
        while i < self.running.len() && *budget > 0 {
            let r = self.running[i];
            let req = &self.reqs[r];
            let with_spec = req.num_tokens() + req.spec_token_ids.len();
            let new = (with_spec - req.num_computed_tokens)
                .min(*budget)
                .min((max_model_len - 1).saturating_sub(req.num_computed_tokens));
            if new == 0 {
                i += 1;
                continue;
            }
            let mut fresh = None;
            loop {
                let req = &self.reqs[r];
                if let Some(b) =
                    self.kv.allocate_slots(r, req.num_computed_tokens, new, &[], req.num_tokens(), &req.block_hashes)
                {
                    fresh = Some(b);
                    break;
                }
                let victim = self.running.pop().expect("the current request is still running");
                self.preempt(victim);
                out.preempted.push(victim);
                if victim == r {
                    break;
                }
            }
            let Some(fresh) = fresh else { break };
            scheduled.push(r);
            out.new_block_ids.insert(r, fresh);
            out.num_scheduled.push((r, new));
            *budget -= new;
            i += 1;
            let req = &mut self.reqs[r];
            if !req.spec_token_ids.is_empty() {
                let n_spec = new as i64 + req.num_computed_tokens as i64 - req.num_tokens() as i64;
                let mut drafts = std::mem::take(&mut req.spec_token_ids);
                if n_spec > 0 {
                    drafts.truncate(n_spec as usize);
                    out.spec_tokens.insert(r, drafts);
                }
            }
        }
        scheduled
    }

    /// The waiting loop: prefix-cache hits, chunked prefill (or stop at the first prompt
    /// that does not fit without it), admission while seats and blocks last. Returns the
    /// resumed (previously preempted) requests.
    fn schedule_waiting(&mut self, out: &mut SchedulerOutput, budget: &mut usize) -> Vec<usize> {
        let mut resumed = Vec::new();
        while !self.waiting.is_empty() && *budget > 0 {
            if self.running.len() == self.cfg.max_num_seqs as usize {
                break;
            }
            let r = self.waiting[0];
            let req = &self.reqs[r];
            let hits = if req.num_computed_tokens == 0 {
                self.kv.computed_blocks(&req.block_hashes, req.num_tokens())
            } else {
                Vec::new()
            };
            let num_computed = req.num_computed_tokens + hits.len() * self.cfg.block_size as usize;
            let mut new = req.num_tokens() - num_computed;
            if !self.cfg.enable_chunked_prefill && new > *budget {
                break;
            }
            new = new.min(*budget);
            debug_assert!(new > 0);
            if self
                .kv
                .allocate_slots(r, req.num_computed_tokens, new, &hits, req.num_tokens(), &req.block_hashes)
                .is_none()
            {
                break;
            }
            self.waiting.pop_front();
            self.running.push(r);
            let req = &mut self.reqs[r];
            if req.status == Status::Waiting {
                out.new_reqs.push(r);
            } else {
                resumed.push(r);
                out.resumed_reqs.insert(r);
            }
            out.new_block_ids.insert(r, self.kv.blocks(r).to_vec());
            out.num_scheduled.push((r, new));
            *budget -= new;
            req.set_status(Status::Running);
            req.num_computed_tokens = num_computed;
        }
        resumed
    }

    /// `_preempt_request`: frees the blocks and puts the request at the front of waiting.
    fn preempt(&mut self, r: usize) {
        self.kv.free(r);
        let req = &mut self.reqs[r];
        req.set_status(Status::Preempted);
        req.num_computed_tokens = 0;
        self.waiting.push_front(r);
    }

    /// `update_from_output`: corrects `num_computed_tokens` for rejected drafts, appends
    /// sampled tokens one by one with the stop check, frees finished requests. Returns
    /// the requests finished in this call, in order.
    pub fn update_from_output(&mut self, out: &SchedulerOutput, sampled: &BTreeMap<usize, Vec<u32>>) -> Vec<usize> {
        let max_model_len = self.cfg.max_model_len as usize;
        let mut finished = Vec::new();
        for &(r, _) in &out.num_scheduled {
            let generated = sampled.get(&r).cloned().unwrap_or_default();
            if let Some(drafts) = out.spec_tokens.get(&r) {
                let num_accepted = generated.len().saturating_sub(1);
                let num_rejected = drafts.len() - num_accepted;
                let req = &mut self.reqs[r];
                if req.num_computed_tokens > 0 {
                    req.num_computed_tokens -= num_rejected;
                }
                self.stats.observe_draft(drafts.len(), num_accepted);
            }
            let mut stopped = None;
            for &t in &generated {
                let req = &mut self.reqs[r];
                req.tokens.push(t);
                if let Some(s) = req.check_stop(max_model_len) {
                    stopped = Some(s);
                    break;
                }
            }
            let req = &mut self.reqs[r];
            self.hasher.update(&mut req.block_hashes, &req.tokens, self.cfg.block_size as usize);
            if let Some(s) = stopped {
                req.set_status(s);
                self.kv.free(r);
                self.finished_pending.push(r);
                finished.push(r);
            }
        }
        self.running.retain(|r| !self.reqs[*r].status.is_finished());
        finished
    }

    /// `update_draft_token_ids`: stores each unfinished batch request's proposal.
    pub fn update_draft_token_ids(&mut self, drafts: &[(usize, Vec<u32>)]) {
        for (r, d) in drafts {
            let req = &mut self.reqs[*r];
            if !req.status.is_finished() {
                req.spec_token_ids = d.clone();
            }
        }
    }
}
