//! vLLM 0.12.0's engine step (`vllm/v1/engine/core.py` `EngineCore.step`): `schedule()` →
//! runner (`execute_model` + `sample_tokens`, device work through [`Device`]) →
//! `update_from_output()` → `update_draft_token_ids()`, recorded as one trace step.

use crate::config::{Config, Scenario};
use crate::device::Device;
use crate::engine::{Core, RunEnd};
use crate::error::SimError;
use crate::request::Request;
use crate::runner::Runner;
use crate::sampling::SamplingParams;
use crate::scheduler::Scheduler;
use crate::trace::{CudagraphMode, RandomRows, Step};

/// The vLLM profile: scheduler + GPU model runner bookkeeping.
pub struct VllmCore<'a> {
    scenario: &'a Scenario,
    sched: Scheduler,
    runner: Runner,
    /// Scheduler index → request id (requests are indexed in arrival order).
    names: Vec<String>,
    /// Scheduler index → the request's sampling parameters.
    sampling: Vec<SamplingParams>,
}

impl<'a> VllmCore<'a> {
    pub fn new(scenario: &'a Scenario) -> Self {
        VllmCore {
            scenario,
            sched: Scheduler::new(&scenario.config),
            runner: Runner::new(&scenario.config),
            names: Vec::new(),
            sampling: Vec::new(),
        }
    }

    fn cfg(&self) -> &Config {
        &self.scenario.config
    }
}

impl Core for VllmCore<'_> {
    fn add_request(&mut self, i: usize) {
        let spec = &self.scenario.requests[i];
        let idx = self.sched.add_request(Request::new(spec.clone()));
        debug_assert_eq!(idx, self.names.len(), "scheduler indices follow arrival order");
        self.names.push(spec.req_id.clone());
        self.sampling.push(spec.sampling);
    }

    fn has_unfinished(&self) -> bool {
        self.sched.has_unfinished()
    }

    fn step(&mut self, step: u64, device: &mut dyn Device) -> Result<Step, SimError> {
        let (sched, runner, names) = (&mut self.sched, &mut self.runner, &self.names);
        let out = sched.schedule();
        tracing::debug!(
            tokens = out.total(),
            reqs = out.num_scheduled.len(),
            preempted = out.preempted.len(),
            "scheduled"
        );
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
        for id in &rec.preempted_req_ids {
            tracing::debug!(req = %id, "preempted");
        }
        let prompts = |r: usize| sched.reqs[r].spec.prompt_token_ids.clone();
        runner.update_states(&out, &prompts);
        rec.batch_req_ids = runner.batch.req_ids().into_iter().map(name).collect();
        if out.total() == 0 {
            // execute_model returns early; nothing is sampled and no drafts are taken.
            rec.cudagraph_mode = CudagraphMode::None;
            sched.update_from_output(&out, &Default::default());
            rec.num_free_blocks = sched.kv.pool.num_free() as u32;
            return Ok(rec);
        }
        let rs = runner.execute(step, &out, device, names, &self.sampling).map_err(|e| e.at_step(step))?;
        tracing::debug!(
            mode = rs.mode.map_or("NONE", |m| m.as_str()),
            padded_tokens = rs.num_tokens_padded,
            padded_reqs = rs.num_reqs_padded,
            "graph dispatch"
        );
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
        rec.random_draws = RandomRows(rs.random_draws.into_iter().map(|(r, d)| (name(r), d)).collect());
        let finished = sched.update_from_output(&out, &rs.sampled);
        rec.finished_req_ids = finished.iter().map(|&r| name(r)).collect();
        if let Some(drafts) = rs.drafts {
            rec.draft_token_ids = drafts.iter().map(|(r, d)| (name(*r), d.clone())).collect();
            sched.update_draft_token_ids(&drafts);
        }
        rec.num_free_blocks = sched.kv.pool.num_free() as u32;
        Ok(rec)
    }

    fn num_output_tokens(&self) -> usize {
        self.sched.reqs.iter().map(Request::num_output_tokens).sum()
    }

    /// Why nothing can be scheduled any more (vLLM itself would spin forever here).
    fn stall_reason(&self) -> String {
        let (sched, max_model_len) = (&self.sched, self.cfg().max_model_len as usize);
        if let Some(r) = sched.running.iter().map(|&r| &sched.reqs[r]).find(|r| r.num_tokens() >= max_model_len) {
            return format!(
                "request {:?} holds max_model_len = {max_model_len} tokens but has not finished: min_tokens = {} \
                 suppresses check_stop's length stop (vLLM 0.12.0 livelocks the same way)",
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
    fn livelock_reason(&self) -> String {
        let cfg = self.cfg();
        let usable = cfg.num_gpu_blocks as usize - 1;
        let bs = cfg.block_size as usize;
        let need = |r: &Request| (r.num_tokens() + 1).min(cfg.max_model_len as usize).div_ceil(bs);
        let hungry = self.sched.reqs.iter().filter(|r| !r.status.is_finished()).find(|r| need(r) > usable);
        match hungry {
            Some(r) => format!(
                "request {:?} needs {} KV blocks for {} tokens but the pool has {usable}: it preempts itself and \
                 recomputes forever (vLLM 0.12.0 livelocks the same way)",
                r.spec.req_id,
                need(r),
                r.num_tokens() + 1
            ),
            None => "tokens are scheduled but no request produced a token for too long (preemption livelock)".into(),
        }
    }

    fn finish(&mut self) -> RunEnd {
        let outputs = self.sched.reqs.iter().map(|r| (r.spec.req_id.clone(), r.output().to_vec())).collect();
        RunEnd { outputs, stats: self.sched.stats.clone() }
    }
}
