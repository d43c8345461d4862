//! The `nano-vllm` profile (GeeeekExplorer/nano-vllm @2f21442): its scheduler
//! (`engine/scheduler.py`: prefill first, else decode every running sequence), block
//! manager (`engine/block_manager.py`: ids from 0, no null block, allocation from the
//! front of the free deque, hash reuse of full blocks, reverse-order deallocation to the
//! back) and the `Context` its model runner builds (`engine/model_runner.py`
//! `prepare_prefill` / `prepare_decode`). No speculative decoding; the run is recorded
//! without CUDA-graph padding (nano-vllm only pads decode graphs, and only its graph
//! input tails would differ).

use std::collections::{HashMap, VecDeque};

use crate::config::Scenario;
use crate::cudagraph::{Dispatch, GraphMode};
use crate::device::{self, Device, RowPlan, StepPlan};
use crate::engine::{Core, RunEnd};
use crate::error::SimError;
use crate::scheduler::SpecStats;
use crate::trace::{AttnMetadata, NanoContext, Step};

struct Seq {
    tokens: Vec<u32>,
    prompt_len: usize,
    num_cached: usize,
    block_table: Vec<u32>,
    max_tokens: usize,
    eos: Option<u32>,
    ignore_eos: bool,
}

struct BlockManager {
    bs: usize,
    ref_count: Vec<u32>,
    hash_of: Vec<Option<u64>>,
    tokens_of: Vec<Vec<u32>>,
    hash_to_block: HashMap<u64, usize>,
    free: VecDeque<usize>,
    hashes: HashMap<(u64, Vec<u32>), u64>,
}

impl BlockManager {
    fn new(n: usize, bs: usize) -> Self {
        BlockManager {
            bs,
            ref_count: vec![0; n],
            hash_of: vec![None; n],
            tokens_of: vec![Vec::new(); n],
            hash_to_block: HashMap::new(),
            free: (0..n).collect(),
            hashes: HashMap::new(),
        }
    }
    fn hash(&mut self, tokens: &[u32], parent: u64) -> u64 {
        let next = self.hashes.len() as u64 + 1;
        *self.hashes.entry((parent, tokens.to_vec())).or_insert(next)
    }
    fn take(&mut self, id: usize) {
        self.free.retain(|&b| b != id);
        self.ref_count[id] = 1;
        if let Some(h) = self.hash_of[id].take() {
            if self.hash_to_block.get(&h) == Some(&id) {
                self.hash_to_block.remove(&h);
            }
        }
        self.tokens_of[id].clear();
    }
    fn num_blocks(&self, s: &Seq) -> usize {
        s.tokens.len().div_ceil(self.bs)
    }
    fn allocate(&mut self, s: &mut Seq) {
        let mut h = 0u64;
        let mut miss = false;
        for i in 0..self.num_blocks(s) {
            let toks = s.tokens[i * self.bs..((i + 1) * self.bs).min(s.tokens.len())].to_vec();
            let full = toks.len() == self.bs;
            h = if full { self.hash(&toks, h) } else { 0 };
            let hit =
                if full { self.hash_to_block.get(&h).copied().filter(|&b| self.tokens_of[b] == toks) } else { None };
            miss |= hit.is_none();
            let id = if miss {
                let id = self.free[0];
                self.take(id);
                id
            } else {
                let id = hit.expect("hit");
                s.num_cached += self.bs;
                if self.ref_count[id] > 0 {
                    self.ref_count[id] += 1;
                } else {
                    self.take(id);
                }
                id
            };
            if full {
                self.hash_of[id] = Some(h);
                self.tokens_of[id] = toks;
                self.hash_to_block.insert(h, id);
            }
            s.block_table.push(id as u32);
        }
    }
    fn deallocate(&mut self, s: &mut Seq) {
        for &id in s.block_table.iter().rev() {
            let id = id as usize;
            self.ref_count[id] -= 1;
            if self.ref_count[id] == 0 {
                self.free.push_back(id);
            }
        }
        s.num_cached = 0;
        s.block_table.clear();
    }
    fn may_append(&mut self, s: &mut Seq) {
        let len = s.tokens.len();
        if len % self.bs == 1 {
            let id = self.free[0];
            self.take(id);
            s.block_table.push(id as u32);
        } else if len.is_multiple_of(self.bs) {
            let n = s.block_table.len();
            let parent = if n > 1 { self.hash_of[s.block_table[n - 2] as usize].unwrap_or(0) } else { 0 };
            let toks = s.tokens[len - self.bs..].to_vec();
            let h = self.hash(&toks, parent);
            let last = s.block_table[n - 1] as usize;
            self.hash_of[last] = Some(h);
            self.tokens_of[last] = toks;
            self.hash_to_block.insert(h, last);
        }
    }
}

/// The nano-vllm profile: `Scheduler` + `BlockManager` + the `Context` its model runner
/// builds; the forward pass and greedy sampling go through the [`Device`] (width 1, no drafts).
pub struct NanoCore<'a> {
    scenario: &'a Scenario,
    bm: BlockManager,
    seqs: Vec<Seq>,
    waiting: VecDeque<usize>,
    running: VecDeque<usize>,
}

impl<'a> NanoCore<'a> {
    pub fn new(scenario: &'a Scenario) -> Self {
        let cfg = &scenario.config;
        let seqs = scenario
            .requests
            .iter()
            .map(|r| Seq {
                tokens: r.prompt_token_ids.clone(),
                prompt_len: r.prompt_token_ids.len(),
                num_cached: 0,
                block_table: Vec::new(),
                max_tokens: r.max_tokens as usize,
                eos: r.eos_token_id,
                ignore_eos: r.ignore_eos,
            })
            .collect();
        NanoCore {
            scenario,
            bm: BlockManager::new(cfg.num_gpu_blocks as usize, cfg.block_size as usize),
            seqs,
            waiting: VecDeque::new(),
            running: VecDeque::new(),
        }
    }

    fn name(&self, i: usize) -> &str {
        &self.scenario.requests[i].req_id
    }

    /// `Scheduler.schedule`: prefill first, else decode every running sequence
    /// (preempting from the back when a new block is needed). Returns the scheduled
    /// sequences and whether this is a prefill step.
    fn schedule(&mut self) -> (Vec<usize>, bool) {
        let cfg = &self.scenario.config;
        let bs = cfg.block_size as usize;
        let (bm, seqs) = (&mut self.bm, &mut self.seqs);
        let (waiting, running) = (&mut self.waiting, &mut self.running);
        let mut scheduled = Vec::new();
        let mut batched = 0;
        while let Some(&i) = waiting.front() {
            if scheduled.len() >= cfg.max_num_seqs as usize {
                break;
            }
            let need = bm.num_blocks(&seqs[i]);
            if batched + seqs[i].tokens.len() > cfg.max_num_batched_tokens as usize || bm.free.len() < need {
                break;
            }
            bm.allocate(&mut seqs[i]);
            batched += seqs[i].tokens.len() - seqs[i].num_cached;
            waiting.pop_front();
            running.push_back(i);
            scheduled.push(i);
        }
        let is_prefill = !scheduled.is_empty();
        if !is_prefill {
            while let Some(i) = running.pop_front() {
                if scheduled.len() >= cfg.max_num_seqs as usize {
                    running.push_front(i);
                    break;
                }
                let mut preempted_self = false;
                while bm.free.len() < usize::from(seqs[i].tokens.len() % bs == 1) {
                    if let Some(v) = running.pop_back() {
                        tracing::debug!(req = %self.scenario.requests[v].req_id, "preempted");
                        bm.deallocate(&mut seqs[v]);
                        waiting.push_front(v);
                    } else {
                        tracing::debug!(req = %self.scenario.requests[i].req_id, "preempted");
                        bm.deallocate(&mut seqs[i]);
                        waiting.push_front(i);
                        preempted_self = true;
                        break;
                    }
                }
                if !preempted_self {
                    bm.may_append(&mut seqs[i]);
                    scheduled.push(i);
                }
            }
            for &i in scheduled.iter().rev() {
                running.push_front(i);
            }
        }
        (scheduled, is_prefill)
    }
}

impl Core for NanoCore<'_> {
    fn add_request(&mut self, i: usize) {
        self.waiting.push_back(i);
    }

    fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    fn step(&mut self, step: u64, device: &mut dyn Device) -> Result<Step, SimError> {
        let bs = self.scenario.config.block_size as usize;
        let (scheduled, is_prefill) = self.schedule();
        if scheduled.is_empty() {
            return Err(SimError::Stalled { step, reason: "nano-vllm scheduled nothing".into() });
        }
        tracing::debug!(seqs = scheduled.len(), is_prefill, "scheduled");
        let mut rec = Step { step, cudagraph_mode: "NONE".into(), ..Default::default() };
        let ctx = if is_prefill {
            prefill_context(&self.seqs, &scheduled, bs)
        } else {
            decode_context(&self.seqs, &scheduled, bs)
        };
        let rows: Vec<RowPlan> = scheduled
            .iter()
            .map(|&i| {
                let s = &self.seqs[i];
                let computed = if is_prefill { s.num_cached } else { s.tokens.len() - 1 };
                RowPlan {
                    req: i,
                    req_id: self.name(i).to_string(),
                    prompt_len: s.prompt_len,
                    num_computed: computed,
                    num_scheduled: s.tokens.len() - computed,
                    num_draft: 0,
                    num_sampled: 1,
                    discard: false,
                }
            })
            .collect();
        let plan = step_plan(step, rows, &ctx, bs);
        let contexts: Vec<&[u32]> = scheduled.iter().map(|&i| self.seqs[i].tokens.as_slice()).collect();
        device.stage(&plan, &contexts)?;
        let out_rows = device.forward_sample(&plan, &contexts)?;
        let view = device.read_back(&plan)?;
        let sampled = device::check_rows(&plan, &contexts, &out_rows)?;
        rec.input_ids = view.input_ids;
        rec.positions = view.positions;
        rec.context = Some(ctx);
        for r in &plan.rows {
            rec.num_scheduled_tokens.insert(r.req_id.clone(), r.num_scheduled as u32);
        }
        rec.total_num_scheduled_tokens = plan.num_tokens() as u32;
        rec.num_padded_tokens = rec.total_num_scheduled_tokens;
        rec.num_reqs_padded = scheduled.len() as u32;
        rec.batch_req_ids = plan.rows.iter().map(|r| r.req_id.clone()).collect();
        rec.output_token_ids = out_rows;
        // Scheduler.postprocess: append the token, finish on EOS or max_tokens.
        for &i in &scheduled {
            let t = sampled[&i][0];
            let s = &mut self.seqs[i];
            s.tokens.push(t);
            let done = (!s.ignore_eos && Some(t) == s.eos) || s.tokens.len() - s.prompt_len == s.max_tokens;
            let name = self.scenario.requests[i].req_id.clone();
            rec.block_ids.insert(name.clone(), s.block_table.clone());
            if done {
                self.bm.deallocate(s);
                self.running.retain(|&r| r != i);
                rec.finished_req_ids.push(name);
            }
        }
        rec.num_free_blocks = self.bm.free.len() as u32;
        Ok(rec)
    }

    fn num_output_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len() - s.prompt_len).sum()
    }

    fn stall_reason(&self) -> String {
        "nano-vllm scheduled nothing".into()
    }

    fn livelock_reason(&self) -> String {
        "tokens are scheduled but no sequence produced a token for too long".into()
    }

    fn finish(self) -> RunEnd {
        let outputs = self
            .seqs
            .iter()
            .zip(&self.scenario.requests)
            .map(|(s, r)| (r.req_id.clone(), s.tokens[s.prompt_len..].to_vec()))
            .collect();
        RunEnd { outputs, stats: SpecStats::default() }
    }
}

/// The device's view of a nano step: exact sizes (no graph padding is recorded), the
/// `Context`'s slot mapping, lengths and block tables as attention metadata.
fn step_plan(step: u64, rows: Vec<RowPlan>, ctx: &NanoContext, bs: usize) -> StepPlan {
    let mut cu = vec![0];
    for r in &rows {
        cu.push(cu.last().copied().unwrap_or(0) + r.num_scheduled);
    }
    let n = *cu.last().unwrap_or(&0);
    let attn = AttnMetadata {
        cu_seqlens_q: cu.iter().map(|&x| x as i64).collect(),
        max_seqlen_q: rows.iter().map(|r| r.num_scheduled).max().unwrap_or(0) as u32,
        seqused_k: rows.iter().map(|r| r.seq_len() as i64).collect(),
        max_seqlen_k: rows.iter().map(RowPlan::seq_len).max().unwrap_or(0) as u32,
        block_table: ctx.block_tables.clone().unwrap_or_default(),
        slot_mapping: ctx.slot_mapping.clone(),
    };
    let num_reqs = rows.len();
    StepPlan {
        step,
        rows,
        cu_seqlens: cu,
        dispatch: Dispatch { mode: GraphMode::None, num_tokens_padded: n, num_reqs_padded: num_reqs },
        width: 1,
        block_size: bs,
        attn,
        logits_indices: Vec::new(),
    }
}

fn prefill_context(seqs: &[Seq], sched: &[usize], bs: usize) -> NanoContext {
    let (mut cu_q, mut cu_k) = (vec![0i64], vec![0i64]);
    let (mut max_q, mut max_k) = (0, 0);
    let mut slots = Vec::new();
    for &i in sched {
        let s = &seqs[i];
        let len = s.tokens.len();
        let (q, k) = (len - s.num_cached, len);
        cu_q.push(cu_q.last().unwrap() + q as i64);
        cu_k.push(cu_k.last().unwrap() + k as i64);
        max_q = max_q.max(q);
        max_k = max_k.max(k);
        let nb = s.block_table.len();
        for b in s.num_cached / bs..nb {
            let start = s.block_table[b] as usize * bs;
            let end = if b + 1 != nb { start + bs } else { start + len - (nb - 1) * bs };
            slots.extend((start..end).map(|x| x as i64));
        }
    }
    let prefix_hit = cu_k.last() > cu_q.last();
    NanoContext {
        is_prefill: true,
        max_seqlen_q: max_q as u32,
        max_seqlen_k: max_k as u32,
        cu_seqlens_q: Some(cu_q),
        cu_seqlens_k: Some(cu_k),
        slot_mapping: slots,
        context_lens: None,
        block_tables: prefix_hit.then(|| block_tables(seqs, sched)),
    }
}

fn decode_context(seqs: &[Seq], sched: &[usize], bs: usize) -> NanoContext {
    let mut slots = Vec::new();
    let mut lens = Vec::new();
    for &i in sched {
        let s = &seqs[i];
        let len = s.tokens.len();
        lens.push(len as i64);
        let last_block_tokens = len - (s.block_table.len() - 1) * bs;
        slots.push(i64::from(*s.block_table.last().expect("allocated")) * bs as i64 + last_block_tokens as i64 - 1);
    }
    NanoContext {
        is_prefill: false,
        max_seqlen_q: 0,
        max_seqlen_k: 0,
        cu_seqlens_q: None,
        cu_seqlens_k: None,
        slot_mapping: slots,
        context_lens: Some(lens),
        block_tables: Some(block_tables(seqs, sched)),
    }
}

fn block_tables(seqs: &[Seq], sched: &[usize]) -> Vec<Vec<i64>> {
    let w = sched.iter().map(|&i| seqs[i].block_table.len()).max().unwrap_or(0);
    sched
        .iter()
        .map(|&i| {
            let mut row: Vec<i64> = seqs[i].block_table.iter().map(|&b| i64::from(b)).collect();
            row.resize(w, -1);
            row
        })
        .collect()
}
