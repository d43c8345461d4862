//! The engine loop (`vllm/v1/engine/core.py` `EngineCore.step` + `post_step`, synchronous
//! scheduling; nano-vllm's `LLMEngine.step`), shared by every profile and every device:
//! arrivals → the profile's [`Core::step`] (schedule, device work, update) → one recorded
//! [`Step`] handed to a sink as soon as it is produced, so a run of any length needs memory
//! for one step plus the engine state.
//!
//! A profile ([`crate::vllm::VllmCore`], [`crate::nano::NanoCore`]) holds the scheduler and
//! the runner's CPU bookkeeping; the [`Device`] does the device work. The loop owns what
//! every profile shares: arrivals in (step, scenario order), idle steps, the stall and
//! livelock guards, and the step limit.

use std::collections::BTreeMap;

use crate::config::{Profile, Scenario};
use crate::device::{CpuDevice, Device};
use crate::error::SimError;
use crate::oracle;
use crate::scheduler::SpecStats;
use crate::trace::{Step, Trace};

/// Upper bound on engine steps of one run (turns a livelock into an error).
pub const MAX_STEPS: u64 = 1_000_000;

/// Result of a run: the trace plus the scheduler's speculative-decoding counters.
pub struct RunResult {
    pub trace: Trace,
    pub stats: SpecStats,
}

/// How a streamed run ended: the final outputs and the speculative-decoding counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunEnd {
    /// Output token ids per request id.
    pub outputs: BTreeMap<String, Vec<u32>>,
    pub stats: SpecStats,
}

/// The profile-specific side of an engine step.
pub trait Core {
    /// Adds request `i` of the scenario (arrival order is the loop's business).
    fn add_request(&mut self, i: usize);
    /// Whether any request is waiting or running.
    fn has_unfinished(&self) -> bool;
    /// One engine step with at least one request waiting or running.
    fn step(&mut self, step: u64, device: &mut dyn Device) -> Result<Step, SimError>;
    /// Output tokens produced so far, over every request (livelock guard).
    fn num_output_tokens(&self) -> usize;
    /// Why nothing could be scheduled in two consecutive steps.
    fn stall_reason(&self) -> String;
    /// Why tokens keep being scheduled but none is produced.
    fn livelock_reason(&self) -> String;
    /// Final outputs and counters (called once, when every request has finished).
    fn finish(&mut self) -> RunEnd;
}

/// Validates and runs a scenario on the CPU device, collecting the trace in memory.
pub fn run(scenario: &Scenario) -> Result<RunResult, SimError> {
    collect(scenario, None)
}

/// Validates and runs a scenario on `device`, collecting the trace in memory (tests and
/// the GPU commands; the CLI's `sim` streams through [`run_with`] instead).
pub fn run_on(scenario: &Scenario, device: &mut dyn Device) -> Result<RunResult, SimError> {
    collect(scenario, Some(device))
}

fn collect(scenario: &Scenario, device: Option<&mut dyn Device>) -> Result<RunResult, SimError> {
    let mut steps = Vec::new();
    let end = run_with(scenario, device, &mut |s| {
        steps.push(s);
        Ok(())
    })?;
    Ok(RunResult { trace: Trace::recorded(scenario, steps, end.outputs), stats: end.stats })
}

/// The CPU device a scenario runs on by default: the scenario's oracle, persistent
/// buffers of `max(max_num_batched_tokens, largest capture size)` tokens (vLLM's sizing).
pub fn cpu_device(scenario: &Scenario) -> CpuDevice {
    let cfg = &scenario.config;
    let buffer_len = cfg.max_num_batched_tokens.max(cfg.max_capture_size()) as usize;
    CpuDevice::new(oracle::build(&scenario.oracle), buffer_len)
}

/// Validates and runs a scenario on `device` (the CPU device when `None`), handing each
/// step to `sink` as it is produced.
pub fn run_with(
    scenario: &Scenario,
    device: Option<&mut dyn Device>,
    sink: &mut dyn FnMut(Step) -> Result<(), SimError>,
) -> Result<RunEnd, SimError> {
    scenario.validate()?;
    let mut cpu;
    let device: &mut dyn Device = match device {
        Some(d) => d,
        None => {
            cpu = cpu_device(scenario);
            &mut cpu
        }
    };
    match scenario.config.profile {
        Profile::VllmV1 => drive(&mut crate::vllm::VllmCore::new(scenario), scenario, device, sink),
        Profile::NanoVllm => drive(&mut crate::nano::NanoCore::new(scenario)?, scenario, device, sink),
    }
}

/// The scenario index of each scheduler index: requests join the scheduler in (arrival
/// step, scenario order), so a device's `RowPlan::req` (the scheduler index) names
/// `scenario.requests[arrival_order(..)[req]]`. Equal to the identity only when the
/// scenario lists its requests by arrival step.
pub fn arrival_order(requests: &[crate::config::RequestSpec]) -> Vec<usize> {
    let mut arrivals: Vec<(u64, usize)> = requests.iter().enumerate().map(|(i, r)| (r.arrival_step, i)).collect();
    arrivals.sort(); // stable by (step, scenario order)
    arrivals.into_iter().map(|(_, i)| i).collect()
}

/// The loop every profile runs (the caller keeps `core` to read profile counters after).
pub(crate) fn drive<C: Core>(
    core: &mut C,
    scenario: &Scenario,
    device: &mut dyn Device,
    sink: &mut dyn FnMut(Step) -> Result<(), SimError>,
) -> Result<RunEnd, SimError> {
    let arrivals: Vec<(u64, usize)> =
        arrival_order(&scenario.requests).into_iter().map(|i| (scenario.requests[i].arrival_step, i)).collect();
    let mut next_arrival = 0;
    let mut idle_run = 0u64;
    let (mut produced, mut last_progress) = (0usize, 0u64);
    let livelock_bound = 4 * (scenario.requests.len() as u64 + 1) * u64::from(scenario.config.max_model_len) + 64;
    for step in 1..=MAX_STEPS {
        while next_arrival < arrivals.len() && arrivals[next_arrival].0 == step {
            core.add_request(arrivals[next_arrival].1);
            next_arrival += 1;
        }
        if !core.has_unfinished() {
            if next_arrival == arrivals.len() {
                return Ok(core.finish());
            }
            sink(Step { step, idle: true, ..Default::default() })?;
            continue;
        }
        let _span = tracing::debug_span!("step", step).entered();
        let rec = core.step(step, device)?;
        idle_run = if rec.total_num_scheduled_tokens == 0 { idle_run + 1 } else { 0 };
        if idle_run >= 2 {
            return Err(SimError::Stalled { step, reason: core.stall_reason() });
        }
        // Livelock guard: a run that schedules tokens but never produces one (a request
        // that preempts itself and recomputes forever) is an error, not a hang. The bound
        // is far above any legitimate gap (prefills and recomputations of every request).
        let now = core.num_output_tokens();
        if now > produced {
            (produced, last_progress) = (now, step);
        }
        if step - last_progress > livelock_bound {
            return Err(SimError::Stalled { step, reason: core.livelock_reason() });
        }
        sink(rec)?;
    }
    Err(SimError::TooManySteps(MAX_STEPS))
}
