//! The `nano-vllm` profile: GeeeekExplorer/nano-vllm at commit
//! 2f214426530e2841e7d24c73ee0dfa914d62df56 ("support qwen2"), modelled exactly and
//! checked against that commit's own code by `conformance/nano/`.
//!
//! * Scheduler (`nanovllm/engine/scheduler.py`): prefill first (FCFS while
//!   `max_num_seqs`, `max_num_batched_tokens` counted on the *whole* sequence, and
//!   `can_allocate` allow); else decode every running sequence, preempting from the back
//!   of `running` (or the sequence itself) while `can_append` fails;
//!   `assert scheduled_seqs` (line 56) is a [`SimError::NanoAssertion`].
//! * Block manager ([`block_manager`]): ids from 0, no null block, the free deque,
//!   hash reuse of full blocks with stale `hash_to_block_id` entries, 256-token
//!   sequence pieces whatever the block size.
//! * Model runner (`nanovllm/engine/model_runner.py` `prepare_prefill` /
//!   `prepare_decode`): the `Context` as built there, recorded in `Step.context`.
//! * The forward pass is the oracle, read where nano-vllm reads its logits:
//!   `ParallelLMHead` (`layers/embed_head.py:59`) takes hidden row `cu_seqlens_q[i+1] - 1`
//!   of a prefill batch for sequence `i`. A fully prefix-cached prompt has no row of its
//!   own, so it gets the prediction of the previous sequence's last token (row -1, the
//!   batch's last token, when it comes first); an empty prefill batch, or
//!   `store_kvcache`'s `assert slot_mapping.numel() == N` (`layers/attention.py:38`)
//!   failing, is a [`SimError::NanoAssertion`].
//! * Engine (`nanovllm/engine/llm_engine.py step`): `schedule` → `run` → `postprocess`
//!   (append, then finish on `eos` unless `ignore_eos`, or at `max_tokens`; no length
//!   stop at `max_model_len`). Requests are added at their `arrival_step`; a step with
//!   nothing waiting or running is recorded idle.
//!
//! Scenario mapping (nano-vllm has one `eos` per engine, the tokenizer's, and no stop
//! tokens or `min_tokens`): the requests' `eos_token_id`s must agree; a request without
//! one runs with `ignore_eos`; `stop_token_ids` and `min_tokens` are refused, as is
//! `max_num_batched_tokens < max_model_len` (`config.py:27`). Not modelled: random
//! sampling (nano-vllm refuses temperature 0; the oracle is its argmax), tensor
//! parallelism, CUDA graphs (the run is recorded as eager, `cudagraph_mode` `"NONE"`;
//! graphs would only add padded tails to decode inputs), KV contents (a stale hit reads
//! another prefix's KV upstream; the oracle still answers for the sequence's tokens).

pub mod block_manager;
pub mod coverage;

use std::collections::VecDeque;

use crate::config::Scenario;
use crate::cudagraph::{Dispatch, GraphMode};
use crate::device::{self, Device, RowPlan, StepPlan};
use crate::engine::{Core, RunEnd, RunResult};
use crate::error::{ConfigError, SimError};
use crate::scheduler::SpecStats;
use crate::trace::{AttnMetadata, NanoContext, Step, Trace};
use block_manager::{assertion, BlockManager, Seq};

pub use block_manager::{Counters, SEQUENCE_BLOCK_SIZE};

/// The modelled nano-vllm commit.
pub const COMMIT: &str = "2f214426530e2841e7d24c73ee0dfa914d62df56";

/// What nano-vllm's engine did in a run, beyond the trace (tests use it to require
/// that a behaviour really ran).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NanoStats {
    pub blocks: Counters,
    /// Sequences preempted (`Scheduler.preempt`).
    pub preemptions: usize,
    /// Prefilled sequences whose whole prompt was a prefix-cache hit (no row of their own).
    pub fully_cached_prefills: usize,
    pub prefill_steps: usize,
    pub decode_steps: usize,
    /// Sequences finished on `eos` / on `max_tokens`.
    pub eos_finishes: usize,
    pub max_tokens_finishes: usize,
}

/// Runs a scenario under nano-vllm's engine (CPU device) and records each step's `Context`.
pub fn run(scenario: &Scenario) -> Result<RunResult, SimError> {
    run_with_stats(scenario).map(|(r, _)| r)
}

/// [`run`], also returning what the engine did ([`NanoStats`]).
pub fn run_with_stats(scenario: &Scenario) -> Result<(RunResult, NanoStats), SimError> {
    scenario.validate()?;
    let mut core = NanoCore::new(scenario)?;
    let mut device = crate::engine::cpu_device(scenario);
    let mut steps = Vec::new();
    let end = crate::engine::drive(&mut core, scenario, &mut device, &mut |s| {
        steps.push(s);
        Ok(())
    })?;
    let trace = Trace::recorded(scenario, steps, end.outputs);
    Ok((RunResult { trace, stats: end.stats }, core.stats))
}

/// The nano-vllm profile behind the engine loop: `Scheduler` + `BlockManager` + the
/// `Context` its model runner builds; the forward pass and greedy sampling go through the
/// [`Device`] (width 1, no drafts; the LM head's rows are the plan's `logits_indices`).
pub struct NanoCore {
    sched: Scheduler,
    seqs: Vec<Seq>,
    names: Vec<String>,
    eos: Option<u32>,
    pub stats: NanoStats,
}

impl NanoCore {
    /// Refuses what nano-vllm's config and `SamplingParams` cannot express.
    pub fn new(scenario: &Scenario) -> Result<Self, SimError> {
        let eos = engine_eos(scenario)?;
        let cfg = &scenario.config;
        let sched = Scheduler {
            bm: BlockManager::new(cfg.num_gpu_blocks as usize, cfg.block_size as usize),
            waiting: VecDeque::new(),
            running: VecDeque::new(),
            max_num_seqs: cfg.max_num_seqs as usize,
            max_num_batched_tokens: cfg.max_num_batched_tokens as usize,
        };
        let seqs = scenario
            .requests
            .iter()
            .map(|r| Seq {
                tokens: r.prompt_token_ids.clone(),
                num_prompt_tokens: r.prompt_token_ids.len(),
                num_cached_tokens: 0,
                block_table: Vec::new(),
                max_tokens: r.max_tokens as usize,
                ignore_eos: r.ignore_eos || r.eos_token_id.is_none(),
            })
            .collect();
        let names = scenario.requests.iter().map(|r| r.req_id.clone()).collect();
        Ok(NanoCore { sched, seqs, names, eos, stats: NanoStats::default() })
    }
}

impl Core for NanoCore {
    fn add_request(&mut self, i: usize) {
        self.sched.waiting.push_back(i);
    }

    fn has_unfinished(&self) -> bool {
        !self.sched.waiting.is_empty() || !self.sched.running.is_empty()
    }

    fn step(&mut self, step: u64, device: &mut dyn Device) -> Result<Step, SimError> {
        engine_step(step, &mut self.sched, &mut self.seqs, &self.names, device, self.eos, &mut self.stats)
            .map_err(|e| e.at_step(step))
    }

    fn num_output_tokens(&self) -> usize {
        self.seqs.iter().map(Seq::num_completion_tokens).sum()
    }

    fn stall_reason(&self) -> String {
        // Unreachable in practice: an empty schedule is scheduler.py:56's assertion.
        "nano-vllm scheduled nothing in two consecutive steps".into()
    }

    fn livelock_reason(&self) -> String {
        "tokens are scheduled but no sequence produced a token for too long".into()
    }

    fn finish(&mut self) -> RunEnd {
        let outputs = self
            .seqs
            .iter()
            .zip(&self.names)
            .map(|(s, n)| (n.clone(), s.tokens[s.num_prompt_tokens..].to_vec()))
            .collect();
        self.stats.blocks = self.sched.bm.counters.clone();
        RunEnd { outputs, stats: SpecStats::default() }
    }
}

/// nano-vllm's single `config.eos`, refusing what its `SamplingParams` cannot express.
fn engine_eos(scenario: &Scenario) -> Result<Option<u32>, SimError> {
    let cfg = &scenario.config;
    let bad = |m: String| Err(SimError::Config(ConfigError::Invalid(m)));
    if cfg.max_num_batched_tokens < cfg.max_model_len {
        return bad(format!(
            "profile \"nano-vllm\": max_num_batched_tokens ({}) < max_model_len ({}) (nanovllm/config.py asserts >=)",
            cfg.max_num_batched_tokens, cfg.max_model_len
        ));
    }
    let mut eos = None;
    for r in &scenario.requests {
        if !r.stop_token_ids.is_empty() || r.min_tokens > 0 {
            return bad(format!(
                "request {:?}: profile \"nano-vllm\" has no stop_token_ids or min_tokens (nanovllm/sampling_params.py)",
                r.req_id
            ));
        }
        match (eos, r.eos_token_id) {
            (Some(a), Some(b)) if a != b => {
                return bad(format!(
                    "request {:?}: eos_token_id {b} differs from {a}; nano-vllm has one eos per engine (config.eos)",
                    r.req_id
                ))
            }
            (None, Some(b)) => eos = Some(b),
            _ => {}
        }
    }
    Ok(eos)
}

/// `Scheduler` (`nanovllm/engine/scheduler.py`); sequences are indices into the run's
/// `seqs`.
struct Scheduler {
    bm: BlockManager,
    waiting: VecDeque<usize>,
    running: VecDeque<usize>,
    max_num_seqs: usize,
    max_num_batched_tokens: usize,
}

/// One `schedule()` result.
struct Scheduled {
    seqs: Vec<usize>,
    is_prefill: bool,
    /// In the order `preempt` was called.
    preempted: Vec<usize>,
}

impl Scheduler {
    /// `schedule` (`scheduler.py:24`).
    fn schedule(&mut self, seqs: &mut [Seq]) -> Result<Scheduled, SimError> {
        let mut scheduled = Vec::new();
        let mut num_batched_tokens = 0;
        while let Some(&i) = self.waiting.front() {
            if scheduled.len() >= self.max_num_seqs {
                break;
            }
            let len = seqs[i].len();
            if num_batched_tokens + len > self.max_num_batched_tokens || !self.bm.can_allocate(&seqs[i]) {
                break;
            }
            self.bm.allocate(&mut seqs[i])?;
            num_batched_tokens += len - seqs[i].num_cached_tokens;
            self.waiting.pop_front();
            self.running.push_back(i);
            scheduled.push(i);
        }
        if !scheduled.is_empty() {
            return Ok(Scheduled { seqs: scheduled, is_prefill: true, preempted: Vec::new() });
        }
        let mut preempted = Vec::new();
        while scheduled.len() < self.max_num_seqs {
            let Some(i) = self.running.pop_front() else { break };
            let mut preempted_self = false;
            while !self.bm.can_append(&seqs[i]) {
                let victim = match self.running.pop_back() {
                    Some(v) => v,
                    None => {
                        preempted_self = true;
                        i
                    }
                };
                self.preempt(&mut seqs[victim]);
                self.waiting.push_front(victim);
                preempted.push(victim);
                if preempted_self {
                    break;
                }
            }
            if !preempted_self {
                self.bm.may_append(&mut seqs[i])?;
                scheduled.push(i);
            }
        }
        if scheduled.is_empty() {
            return Err(assertion(
                "scheduler.py:56 assert scheduled_seqs (nothing waiting fits the token budget or the free blocks, and \
                 nothing can run)",
            ));
        }
        for &i in scheduled.iter().rev() {
            self.running.push_front(i);
        }
        Ok(Scheduled { seqs: scheduled, is_prefill: false, preempted })
    }

    /// `preempt` (`scheduler.py:60`), less the `appendleft` the caller does.
    fn preempt(&mut self, seq: &mut Seq) {
        self.bm.deallocate(seq);
    }
}

/// One engine step with something waiting or running.
fn engine_step(
    step: u64,
    sched: &mut Scheduler,
    seqs: &mut [Seq],
    names: &[String],
    device: &mut dyn Device,
    eos: Option<u32>,
    stats: &mut NanoStats,
) -> Result<Step, SimError> {
    let out = sched.schedule(seqs)?;
    let mut rec = Step { step, ..Default::default() };
    rec.preempted_req_ids = out.preempted.iter().map(|&i| names[i].clone()).collect();
    stats.preemptions += out.preempted.len();
    let rows = if out.is_prefill {
        stats.prefill_steps += 1;
        prepare_prefill(seqs, &out.seqs, sched.bm.block_size(), &mut rec)
    } else {
        stats.decode_steps += 1;
        prepare_decode(seqs, &out.seqs, sched.bm.block_size(), &mut rec)
    };
    let ctx = rec.context.as_ref().expect("context prepared");
    if ctx.slot_mapping.len() != rec.input_ids.len() {
        return Err(assertion(format!(
            "layers/attention.py:38 store_kvcache asserts slot_mapping.numel() == N ({} slots for {} tokens: \
             kvcache_block_size {} with 256-token sequence blocks)",
            ctx.slot_mapping.len(),
            rec.input_ids.len(),
            sched.bm.block_size()
        )));
    }
    if rec.input_ids.is_empty() {
        return Err(assertion(
            "layers/embed_head.py:59 ParallelLMHead indexes x[cu_seqlens_q[1:] - 1] in a prefill batch without a \
             token: every scheduled prompt is wholly prefix-cached",
        ));
    }
    for &i in &out.seqs {
        let n = if out.is_prefill { seqs[i].len() - seqs[i].num_cached_tokens } else { 1 };
        rec.num_scheduled_tokens.insert(names[i].clone(), n as u32);
        rec.block_ids.insert(names[i].clone(), seqs[i].block_table.iter().map(|&b| b as u32).collect());
    }
    rec.total_num_scheduled_tokens = rec.input_ids.len() as u32;
    rec.num_padded_tokens = rec.total_num_scheduled_tokens;
    rec.num_reqs_padded = out.seqs.len() as u32;
    rec.batch_req_ids = out.seqs.iter().map(|&i| names[i].clone()).collect();
    // The forward pass on the device: every sequence's token comes from the hidden row the
    // LM head reads (`logits_indices`), computed before any sequence is updated.
    let bs = sched.bm.block_size();
    let plan = step_plan(step, &out, seqs, names, &rows, rec.context.as_ref().expect("context prepared"), bs);
    let contexts: Vec<&[u32]> = out.seqs.iter().map(|&i| seqs[i].tokens.as_slice()).collect();
    device.stage(&plan, &contexts)?;
    let out_rows = device.forward_sample(&plan, &contexts)?;
    let view = device.read_back(&plan)?;
    let sampled = device::check_rows(&plan, &contexts, &out_rows)?;
    debug_assert_eq!(
        (&view.input_ids, &view.positions),
        (&rec.input_ids, &rec.positions),
        "the CPU plan and the device agree"
    );
    rec.input_ids = view.input_ids;
    rec.positions = view.positions;
    let token_ids: Vec<u32> = out.seqs.iter().map(|i| sampled[i][0]).collect();
    // Scheduler.postprocess (scheduler.py:65).
    for (&i, &t) in out.seqs.iter().zip(&token_ids) {
        rec.output_token_ids.push(vec![i64::from(t)]);
        let s = &mut seqs[i];
        s.tokens.push(t);
        let on_eos = !s.ignore_eos && Some(t) == eos;
        if on_eos || s.num_completion_tokens() == s.max_tokens {
            if on_eos {
                stats.eos_finishes += 1;
            } else {
                stats.max_tokens_finishes += 1;
            }
            sched.bm.deallocate(s);
            if let Some(p) = sched.running.iter().position(|&r| r == i) {
                sched.running.remove(p);
            }
            rec.finished_req_ids.push(names[i].clone());
        }
    }
    stats.fully_cached_prefills += rows.iter().zip(&out.seqs).filter(|(&(o, _), &i)| out.is_prefill && o != i).count();
    rec.num_free_blocks = sched.bm.num_free() as u32;
    Ok(rec)
}

/// The device's view of a nano step: exact sizes (graphs are not modelled), the
/// `Context`'s slot mapping, lengths and block tables as attention metadata, and the LM
/// head's hidden rows as `logits_indices` (`rows` gives each sequence's (owner, context
/// length); the row read is the owner's input at position `context length - 1`).
fn step_plan(
    step: u64,
    out: &Scheduled,
    seqs: &[Seq],
    names: &[String],
    rows: &[(usize, usize)],
    ctx: &NanoContext,
    bs: usize,
) -> StepPlan {
    let row_plans: Vec<RowPlan> = out
        .seqs
        .iter()
        .map(|&i| {
            let s = &seqs[i];
            let computed = if out.is_prefill { s.num_cached_tokens } else { s.len() - 1 };
            RowPlan {
                req: i,
                req_id: names[i].clone(),
                prompt_len: s.num_prompt_tokens,
                num_computed: computed,
                num_scheduled: s.len() - computed,
                num_draft: 0,
                num_sampled: 1,
                discard: false,
                sampling: Default::default(),
            }
        })
        .collect();
    let mut cu = vec![0];
    for r in &row_plans {
        cu.push(cu.last().copied().unwrap_or(0) + r.num_scheduled);
    }
    let row_index = |i: usize| out.seqs.iter().position(|&x| x == i).expect("owners are scheduled");
    let logits_indices = rows
        .iter()
        .map(|&(owner, ctx_len)| {
            let r = row_index(owner);
            (cu[r] + ctx_len - 1 - row_plans[r].num_computed) as i64
        })
        .collect();
    let n = *cu.last().unwrap_or(&0);
    let attn = AttnMetadata {
        cu_seqlens_q: cu.iter().map(|&x| x as i64).collect(),
        max_seqlen_q: row_plans.iter().map(|r| r.num_scheduled).max().unwrap_or(0) as u32,
        seqused_k: row_plans.iter().map(|r| r.seq_len() as i64).collect(),
        max_seqlen_k: row_plans.iter().map(RowPlan::seq_len).max().unwrap_or(0) as u32,
        block_table: ctx.block_tables.clone().unwrap_or_default(),
        slot_mapping: ctx.slot_mapping.clone(),
    };
    let num_reqs = row_plans.len();
    StepPlan {
        step,
        rows: row_plans,
        cu_seqlens: cu,
        dispatch: Dispatch { mode: GraphMode::None, num_tokens_padded: n, num_reqs_padded: num_reqs },
        width: 1,
        block_size: bs,
        attn,
        logits_indices,
    }
}

/// `prepare_prefill` (`model_runner.py:126`): inputs and the prefill `Context`; returns,
/// per sequence, the (sequence, context length) whose prediction the LM head reads.
fn prepare_prefill(seqs: &[Seq], sched: &[usize], bs: usize, rec: &mut Step) -> Vec<(usize, usize)> {
    let (mut cu_q, mut cu_k) = (vec![0i64], vec![0i64]);
    let (mut max_q, mut max_k) = (0, 0);
    let mut slots = Vec::new();
    // Owner and context length of each flattened input row.
    let mut row_of = Vec::new();
    for &i in sched {
        let s = &seqs[i];
        let len = s.len();
        for p in s.num_cached_tokens..len {
            rec.input_ids.push(i64::from(s.tokens[p]));
            rec.positions.push(p as i64);
            row_of.push((i, p + 1));
        }
        let (q, k) = (len - s.num_cached_tokens, len);
        cu_q.push(cu_q.last().expect("starts at 0") + q as i64);
        cu_k.push(cu_k.last().expect("starts at 0") + k as i64);
        max_q = max_q.max(q);
        max_k = max_k.max(k);
        let nb = s.num_blocks();
        for b in s.num_cached_blocks()..nb {
            let start = s.block_table[b] * bs;
            let end = if b != nb - 1 { start + bs } else { start + s.last_block_num_tokens() };
            slots.extend((start..end).map(|x| x as i64));
        }
    }
    // ParallelLMHead: x[cu_seqlens_q[1:] - 1], Python/torch indexing (-1 = last row).
    // An empty batch (n == 0) is an error in `engine_step` before any row is read.
    let n = row_of.len() as i64;
    let rows = cu_q[1..]
        .iter()
        .map(|&end| if n == 0 { (usize::MAX, 0) } else { row_of[(end - 1).rem_euclid(n) as usize] })
        .collect();
    let prefix_cache = cu_k.last() > cu_q.last();
    rec.context = Some(NanoContext {
        is_prefill: true,
        max_seqlen_q: max_q as u32,
        max_seqlen_k: max_k as u32,
        cu_seqlens_q: Some(cu_q),
        cu_seqlens_k: Some(cu_k),
        slot_mapping: slots,
        context_lens: None,
        block_tables: prefix_cache.then(|| block_tables(seqs, sched)),
    });
    rows
}

/// `prepare_decode` (`model_runner.py:164`); each sequence reads its own row.
fn prepare_decode(seqs: &[Seq], sched: &[usize], bs: usize, rec: &mut Step) -> Vec<(usize, usize)> {
    let mut slots = Vec::new();
    let mut lens = Vec::new();
    for &i in sched {
        let s = &seqs[i];
        let len = s.len();
        rec.input_ids.push(i64::from(*s.tokens.last().expect("a sequence has a prompt")));
        rec.positions.push(len as i64 - 1);
        lens.push(len as i64);
        let last = *s.block_table.last().expect("a running sequence holds blocks");
        slots.push((last * bs + s.last_block_num_tokens()) as i64 - 1);
    }
    rec.context = Some(NanoContext {
        is_prefill: false,
        max_seqlen_q: 0,
        max_seqlen_k: 0,
        cu_seqlens_q: None,
        cu_seqlens_k: None,
        slot_mapping: slots,
        context_lens: Some(lens),
        block_tables: Some(block_tables(seqs, sched)),
    });
    sched.iter().map(|&i| (i, seqs[i].len())).collect()
}

/// `prepare_block_tables` (`model_runner.py:120`): rows padded with -1.
fn block_tables(seqs: &[Seq], sched: &[usize]) -> Vec<Vec<i64>> {
    let w = sched.iter().map(|&i| seqs[i].block_table.len()).max().unwrap_or(0);
    sched
        .iter()
        .map(|&i| {
            let mut row: Vec<i64> = seqs[i].block_table.iter().map(|&b| b as i64).collect();
            row.resize(w, -1);
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::Synthetic;

    /// A nano-vllm scenario: `reqs` are (id, prompt, max_tokens, arrival_step). The
    /// scenarios below give the same traces / crashes under nano-vllm 2f21442 itself
    /// (`conformance/nano/run.py --scenario`).
    fn scenario(bs: u32, blocks: u32, reqs: &[(&str, Vec<u32>, u32, u64)]) -> Scenario {
        let requests: Vec<serde_json::Value> = reqs
            .iter()
            .map(|(id, p, m, a)| serde_json::json!({"req_id": id, "prompt_token_ids": p, "max_tokens": m, "arrival_step": a}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "config": {"profile": "nano-vllm", "block_size": bs, "num_gpu_blocks": blocks, "max_num_seqs": 8,
                       "max_num_batched_tokens": 4096, "max_model_len": 4096, "method": "none",
                       "num_speculative_tokens": 0, "prompt_lookup_min": 0, "prompt_lookup_max": 0,
                       "cudagraph_capture_sizes": [], "cudagraph_mode": "NONE"},
            "requests": requests,
            "oracle": {"kind": "synthetic", "seed": 3, "vocab_size": 7, "order": 2}
        }))
        .unwrap()
    }

    fn piece(t: u32) -> Vec<u32> {
        vec![t; 256]
    }

    fn nano_error(sc: &Scenario) -> String {
        match run(sc) {
            Err(e @ SimError::NanoAssertion { .. }) => e.to_string(),
            other => panic!("expected a NanoAssertion, got {:?}", other.map(|r| r.trace.steps.len())),
        }
    }

    /// The case end to end: A's block of x is refilled with x under B's prefix y;
    /// C = x + 1 token hits it through A's stale hash and is scheduled with 1 token.
    #[test]
    fn stale_hash_hit_schedules_one_token_on_another_prefixs_block() {
        let x = piece(1);
        let sc = scenario(
            256,
            2,
            &[
                ("a", [x.clone(), vec![2]].concat(), 1, 1),
                ("b", [piece(3), x.clone()].concat(), 1, 2),
                ("c", [x, vec![4]].concat(), 1, 3),
            ],
        );
        let (r, stats) = run_with_stats(&sc).unwrap();
        assert_eq!(r.trace.steps[1].block_ids["b"], vec![1, 0], "b's x lands on a's old block 0");
        let c = r.trace.steps.iter().find(|s| s.batch_req_ids == ["c"]).unwrap();
        assert_eq!(c.num_scheduled_tokens["c"], 1);
        assert_eq!(c.block_ids["c"], vec![0, 1]);
        let ctx = c.context.as_ref().unwrap();
        assert_eq!((ctx.cu_seqlens_q.clone(), ctx.cu_seqlens_k.clone()), (Some(vec![0, 1]), Some(vec![0, 257])));
        assert_eq!(ctx.block_tables, Some(vec![vec![0, 1]]));
        assert_eq!(stats.blocks.stale_hash_hits, 1);
    }

    /// A wholly cached prompt has no row: the LM head reads row -1, the last token of the
    /// batch (another request's), so it gets that request's next token.
    #[test]
    fn wholly_cached_prompt_takes_the_batchs_last_row() {
        let sc = scenario(256, 8, &[("a", piece(1), 1, 1), ("b", piece(1), 2, 2), ("c", vec![5, 6, 0], 1, 2)]);
        let (r, stats) = run_with_stats(&sc).unwrap();
        let s = &r.trace.steps[1];
        assert_eq!(s.batch_req_ids, ["b", "c"]);
        assert_eq!(s.context.as_ref().unwrap().cu_seqlens_q, Some(vec![0, 0, 3]));
        let m = Synthetic { seed: 3, vocab_size: 7, order: 2 };
        assert_eq!(r.trace.outputs["b"][0], m.token_after(&[5, 6, 0]), "c's prediction");
        assert_ne!(m.token_after(&[5, 6, 0]), m.token_after(&piece(1)), "the scenario tells the rows apart");
        assert_eq!(stats.fully_cached_prefills, 1);
    }

    #[test]
    fn wholly_cached_prompt_alone_crashes_in_the_lm_head() {
        let sc = scenario(256, 8, &[("a", piece(1), 1, 1), ("b", piece(1), 1, 2)]);
        let e = nano_error(&sc);
        assert!(e.starts_with("step 2: ") && e.contains("embed_head.py:59"), "{e}");
    }

    #[test]
    fn nothing_schedulable_fails_the_scheduler_assert() {
        let sc = scenario(256, 2, &[("a", vec![1; 600], 4, 1)]);
        let e = nano_error(&sc);
        assert!(e.starts_with("step 1: ") && e.contains("scheduler.py:56"), "{e}");
    }

    /// Block size 512: 256-token sequence pieces give a prefill of 300 tokens 512 + 44
    /// slots, and store_kvcache's shape assert fails.
    #[test]
    fn block_size_512_prefill_above_256_tokens_fails_store_kvcache() {
        let e = nano_error(&scenario(512, 8, &[("a", vec![1; 300], 4, 1)]));
        assert!(e.starts_with("step 1: ") && e.contains("attention.py:38") && e.contains("556 slots for 300"), "{e}");
        // ≤ 256 tokens run; position 256 is then written over position 0's slot.
        let r = run(&scenario(512, 8, &[("a", vec![1; 250], 8, 1)])).unwrap();
        let dec = r.trace.steps.iter().find(|s| s.positions == [256]).unwrap();
        assert_eq!(dec.context.as_ref().unwrap().slot_mapping, vec![0]);
    }

    #[test]
    fn what_nano_vllm_cannot_express_is_refused() {
        let mut sc = scenario(256, 8, &[("a", vec![1], 1, 1), ("b", vec![2], 1, 1)]);
        sc.requests[0].eos_token_id = Some(1);
        sc.requests[1].eos_token_id = Some(2);
        assert!(matches!(run(&sc), Err(SimError::Config(_))));
        sc.requests[1].eos_token_id = None;
        sc.requests[1].stop_token_ids = vec![3];
        assert!(matches!(run(&sc), Err(SimError::Config(_))));
        sc.requests[1].stop_token_ids.clear();
        sc.config.max_num_batched_tokens = 100;
        assert!(matches!(run(&sc), Err(SimError::Config(_))));
    }
}
