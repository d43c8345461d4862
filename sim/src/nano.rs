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
use crate::engine::{RunEnd, StepSink, MAX_STEPS};
use crate::error::SimError;
use crate::oracle;
use crate::scheduler::SpecStats;
use crate::trace::{NanoContext, Step};

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

/// Runs a scenario under nano-vllm's engine and records each step's `Context`.
pub fn run(scenario: &Scenario, sink: &mut StepSink) -> Result<RunEnd, SimError> {
    let cfg = &scenario.config;
    let model = oracle::build(&scenario.oracle);
    let bs = cfg.block_size as usize;
    let mut bm = BlockManager::new(cfg.num_gpu_blocks as usize, bs);
    let names: Vec<String> = scenario.requests.iter().map(|r| r.req_id.clone()).collect();
    let mut seqs: Vec<Seq> = scenario
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
    let (mut waiting, mut running) = (VecDeque::new(), VecDeque::new());
    let mut pending: Vec<usize> = (0..seqs.len()).collect();
    pending.sort_by_key(|&i| scenario.requests[i].arrival_step);
    for step in 1..=MAX_STEPS {
        while let Some(&i) = pending.first().filter(|&&i| scenario.requests[i].arrival_step == step) {
            waiting.push_back(i);
            pending.remove(0);
        }
        if waiting.is_empty() && running.is_empty() {
            if pending.is_empty() {
                let outputs =
                    seqs.iter().zip(&names).map(|(s, n)| (n.clone(), s.tokens[s.prompt_len..].to_vec())).collect();
                return Ok(RunEnd { outputs, stats: SpecStats::default() });
            }
            sink(Step::idle(step))?;
            continue;
        }
        // Scheduler.schedule: prefill first.
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
                        bm.deallocate(&mut seqs[v]);
                        waiting.push_front(v);
                    } else {
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
        if scheduled.is_empty() {
            return Err(SimError::Stalled { step, reason: "nano-vllm scheduled nothing".into() });
        }
        let mut rec = Step { step, ..Default::default() };
        let ctx = if is_prefill {
            prefill_context(&seqs, &scheduled, bs, &mut rec)
        } else {
            decode_context(&seqs, &scheduled, bs, &mut rec)
        };
        rec.context = Some(ctx);
        for &i in &scheduled {
            let s = &seqs[i];
            let n = if is_prefill { s.tokens.len() - s.num_cached } else { 1 };
            rec.num_scheduled_tokens.insert(names[i].clone(), n as u32);
        }
        rec.total_num_scheduled_tokens = rec.num_scheduled_tokens.values().sum();
        rec.num_padded_tokens = rec.total_num_scheduled_tokens;
        rec.num_reqs_padded = scheduled.len() as u32;
        rec.batch_req_ids = scheduled.iter().map(|&i| names[i].clone()).collect();
        // Forward + greedy sample: one token per sequence.
        for &i in &scheduled {
            let s = &seqs[i];
            let t = model.next_token(&names[i], s.prompt_len, &s.tokens)?;
            rec.output_token_ids.push(vec![i64::from(t)]);
            let s = &mut seqs[i];
            s.tokens.push(t);
            let done = (!s.ignore_eos && Some(t) == s.eos) || s.tokens.len() - s.prompt_len == s.max_tokens;
            rec.block_ids.insert(names[i].clone(), s.block_table.clone());
            if done {
                bm.deallocate(s);
                running.retain(|&r| r != i);
                rec.finished_req_ids.push(names[i].clone());
            }
        }
        rec.num_free_blocks = bm.free.len() as u32;
        sink(rec)?;
    }
    Err(SimError::TooManySteps(MAX_STEPS))
}

fn prefill_context(seqs: &[Seq], sched: &[usize], bs: usize, rec: &mut Step) -> NanoContext {
    let (mut cu_q, mut cu_k) = (vec![0i64], vec![0i64]);
    let (mut max_q, mut max_k) = (0, 0);
    let mut slots = Vec::new();
    for &i in sched {
        let s = &seqs[i];
        let len = s.tokens.len();
        for p in s.num_cached..len {
            rec.input_ids.push(i64::from(s.tokens[p]));
            rec.positions.push(p as i64);
        }
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

fn decode_context(seqs: &[Seq], sched: &[usize], bs: usize, rec: &mut Step) -> NanoContext {
    let mut slots = Vec::new();
    let mut lens = Vec::new();
    for &i in sched {
        let s = &seqs[i];
        let len = s.tokens.len();
        rec.input_ids.push(i64::from(*s.tokens.last().expect("non-empty")));
        rec.positions.push(len as i64 - 1);
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
