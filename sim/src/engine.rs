//! The engine step (`vllm/v1/engine/core.py` `EngineCore.step` + `post_step`, synchronous
//! scheduling): arrivals → `schedule()` → runner (`execute_model` + `sample_tokens`) →
//! `update_from_output()` → `update_draft_token_ids()`, recorded as one trace step.

use std::collections::BTreeMap;

use crate::config::{Profile, Scenario};
use crate::error::SimError;
use crate::oracle;
use crate::request::Request;
use crate::runner::Runner;
use crate::scheduler::{Scheduler, SpecStats};
use crate::trace::{CudagraphMode, Step, Trace};

/// Upper bound on engine steps of one run (turns a livelock into an error).
pub const MAX_STEPS: u64 = 1_000_000;

/// Result of a run: the trace plus the scheduler's speculative-decoding counters.
pub struct RunResult {
    pub trace: Trace,
    pub stats: SpecStats,
}

/// How a streamed run ended (its steps went to the sink): outputs and counters.
pub struct RunEnd {
    /// Final output token ids per request.
    pub outputs: BTreeMap<String, Vec<u32>>,
    pub stats: SpecStats,
}

/// Receives each step as the engine produces it; an `Err` stops the run with that error
/// (a failed trace write, or a replay that found its first divergence).
pub type StepSink<'a> = dyn FnMut(Step) -> Result<(), SimError> + 'a;

/// Validates and runs a scenario, recording every step in memory.
pub fn run(scenario: &Scenario) -> Result<RunResult, SimError> {
    let mut steps = Vec::new();
    let end = run_with_sink(scenario, &mut |s| {
        steps.push(s);
        Ok(())
    })?;
    Ok(RunResult { trace: Trace::recorded(scenario, steps, end.outputs), stats: end.stats })
}

/// Validates and runs a scenario, handing each step to `sink` as it is produced (memory
/// stays bounded by the engine state, whatever the run's length).
pub fn run_with_sink(scenario: &Scenario, sink: &mut StepSink) -> Result<RunEnd, SimError> {
    scenario.validate()?;
    match scenario.config.profile {
        Profile::VllmV1 => run_vllm(scenario, sink),
        Profile::NanoVllm => crate::nano::run(scenario, sink),
    }
}

fn run_vllm(scenario: &Scenario, sink: &mut StepSink) -> Result<RunEnd, SimError> {
    let cfg = &scenario.config;
    let model = oracle::build(&scenario.oracle);
    let mut sched = Scheduler::new(cfg);
    let mut runner = Runner::new(cfg);
    // Scheduler index → request id (requests are indexed in arrival order).
    let mut names: Vec<String> = Vec::new();
    let mut arrivals: Vec<(u64, usize)> =
        scenario.requests.iter().enumerate().map(|(i, r)| (r.arrival_step, i)).collect();
    arrivals.sort(); // stable by (step, scenario order)
    let mut next_arrival = 0;
    let mut idle_run = 0u64;
    let (mut produced, mut last_progress) = (0usize, 0u64);
    for step in 1..=MAX_STEPS {
        while next_arrival < arrivals.len() && arrivals[next_arrival].0 == step {
            let i = arrivals[next_arrival].1;
            let idx = sched.add_request(Request::new(scenario.requests[i].clone()));
            debug_assert_eq!(idx, names.len());
            names.push(scenario.requests[i].req_id.clone());
            next_arrival += 1;
        }
        if !sched.has_unfinished() {
            if next_arrival == arrivals.len() {
                let outputs = sched.reqs.iter().map(|r| (r.spec.req_id.clone(), r.output().to_vec())).collect();
                return Ok(RunEnd { outputs, stats: sched.stats.clone() });
            }
            sink(Step::idle(step))?;
            continue;
        }
        let rec = engine_step(step, &mut sched, &mut runner, model.as_ref(), &names)?;
        idle_run = if rec.total_num_scheduled_tokens == 0 { idle_run + 1 } else { 0 };
        if idle_run >= 2 {
            return Err(SimError::Stalled { step, reason: stall_reason(&sched, cfg.max_model_len as usize) });
        }
        // Livelock guard: a run that schedules tokens but never produces one (a request
        // that preempts itself and recomputes forever) is an error, not a hang. The bound
        // is far above any legitimate gap (prefills and recomputations of every request).
        let now: usize = sched.reqs.iter().map(Request::num_output_tokens).sum();
        if now > produced {
            (produced, last_progress) = (now, step);
        }
        if step - last_progress > 4 * (names.len() as u64 + 1) * u64::from(cfg.max_model_len) + 64 {
            return Err(SimError::Stalled { step, reason: livelock_reason(&sched, cfg) });
        }
        sink(rec)?;
    }
    Err(SimError::TooManySteps(MAX_STEPS))
}

/// One engine step with at least one request waiting or running.
fn engine_step(
    step: u64,
    sched: &mut Scheduler,
    runner: &mut Runner,
    model: &dyn oracle::TargetModel,
    names: &[String],
) -> Result<Step, SimError> {
    let out = sched.schedule();
    let name = |r: usize| names[r].clone();
    let mut rec = Step { step, ..Default::default() };
    for &(r, n) in &out.num_scheduled {
        rec.num_scheduled_tokens.insert(name(r), n as u32);
        rec.num_computed_tokens.insert(name(r), out.num_computed[&r] as u32);
        rec.block_ids.insert(name(r), sched.kv.blocks(r).to_vec());
    }
    rec.total_num_scheduled_tokens = out.total() as u32;
    rec.scheduled_spec_decode_tokens = out.spec_tokens.iter().map(|(&r, d)| (name(r), d.clone())).collect();
    rec.preempted_req_ids = out.preempted.iter().map(|&r| name(r)).collect();
    let prompts = |r: usize| sched.reqs[r].spec.prompt_token_ids.clone();
    runner.update_states(&out, &prompts);
    rec.batch_req_ids = runner.batch.req_ids().into_iter().map(name).collect();
    if out.total() == 0 {
        // execute_model returns early; nothing is sampled and no drafts are taken.
        rec.cudagraph_mode = CudagraphMode::None;
        sched.update_from_output(&out, &BTreeMap::new());
        rec.num_free_blocks = sched.kv.pool.num_free() as u32;
        return Ok(rec);
    }
    let rs = runner.execute(&out, model, names).map_err(|e| e.at_step(step))?;
    rec.cudagraph_mode = rs.mode.map_or(CudagraphMode::None, CudagraphMode::from);
    rec.num_padded_tokens = rs.num_tokens_padded as u32;
    rec.num_reqs_padded = rs.num_reqs_padded as u32;
    rec.cascade_prefix_len = rs.cascade_prefix_len as u32;
    rec.input_ids = rs.input_ids;
    rec.positions = rs.positions;
    rec.logits_indices = rs.logits_indices;
    rec.num_sampled_tokens = rs.num_sampled_tokens;
    rec.attn = rs.attn;
    rec.output_token_ids = rs.output_rows;
    rec.token_ids_cpu = rs.token_rows.into_iter().map(|(r, row)| (name(r), row)).collect();
    let finished = sched.update_from_output(&out, &rs.sampled);
    rec.finished_req_ids = finished.iter().map(|&r| name(r)).collect();
    if let Some(drafts) = rs.drafts {
        rec.draft_token_ids = drafts.iter().map(|(r, d)| (name(*r), d.clone())).collect();
        sched.update_draft_token_ids(&drafts);
    }
    rec.num_free_blocks = sched.kv.pool.num_free() as u32;
    Ok(rec)
}

/// Why nothing can be scheduled any more (vLLM itself would spin forever here).
fn stall_reason(sched: &Scheduler, max_model_len: usize) -> String {
    if let Some(r) = sched.running.iter().map(|&r| &sched.reqs[r]).find(|r| r.num_tokens() >= max_model_len) {
        return format!(
            "request {:?} holds max_model_len = {max_model_len} tokens but has not finished: min_tokens = {} suppresses \
             check_stop's length stop (vLLM 0.12.0 livelocks the same way)",
            r.spec.req_id, r.spec.min_tokens
        );
    }
    let blocks = sched.kv.pool.num_free();
    format!(
        "no token could be scheduled in two consecutive steps; {} waiting, {} running, {blocks} free KV blocks \
         (a request needs more KV blocks than the pool holds)",
        sched.waiting.len(),
        sched.running.len()
    )
}

/// Why steps keep scheduling tokens but no token is ever produced.
fn livelock_reason(sched: &Scheduler, cfg: &crate::config::Config) -> String {
    let usable = cfg.num_gpu_blocks as usize - 1;
    let bs = cfg.block_size as usize;
    let hungry = sched
        .reqs
        .iter()
        .filter(|r| !r.status.is_finished())
        .find(|r| (r.num_tokens() + 1).min(cfg.max_model_len as usize).div_ceil(bs) > usable);
    match hungry {
        Some(r) => format!(
            "request {:?} needs {} KV blocks for {} tokens but the pool has {usable}: it preempts itself and recomputes \
             forever (vLLM 0.12.0 livelocks the same way)",
            r.spec.req_id,
            (r.num_tokens() + 1).min(cfg.max_model_len as usize).div_ceil(bs),
            r.num_tokens() + 1
        ),
        None => "tokens are scheduled but no request produced a token for too long (preemption livelock)".into(),
    }
}
