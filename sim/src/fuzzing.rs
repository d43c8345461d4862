//! Fuzz-target bodies shared by `fuzz/` (cargo-fuzz) and the stable `cargo test` replay
//! of the committed corpus: arbitrary bytes → trace parser; arbitrary small scenarios →
//! engine invariants.

use arbitrary::{Arbitrary, Unstructured};

use crate::config::{Config, CudagraphModeConfig, OracleKind, OracleSpec, Profile, RequestSpec, Scenario, SpecMethod};
use crate::engine;
use crate::error::SimError;
use crate::trace::{self, Trace};

/// The trace parser never panics: arbitrary bytes are either a trace or a clean error.
pub fn check_trace_bytes(data: &[u8]) {
    // Stream first: a short input may hold an idle range of up to the step limit, which
    // is checked here without holding it expanded in memory.
    let Ok(mut r) = trace::TraceReader::new(data) else { return };
    let mut steps = 0u64;
    while let Ok(Some(_)) = r.next_step() {
        steps += 1;
    }
    if steps > 100_000 {
        let _ = r.finish();
        return;
    }
    if let Ok(t) = trace::from_bytes(data) {
        // Whatever parses must serialize and parse back to the same value.
        let again = trace::from_json(&trace::to_json(&t)).expect("a parsed trace re-parses");
        assert_eq!(t, again, "JSON round trip changed the trace");
        // Reports over arbitrary (parsed) traces never panic either.
        let _ = crate::summary::Summary::from_trace(&t);
        assert!(crate::diff::compare(&t, &again).identical());
        for s in &t.steps {
            let _ = crate::diff::step_context(&t, s.step);
        }
    }
}

/// A small scenario drawn from fuzzer bytes (shapes kept small so runs stay fast).
#[derive(Debug, Clone, Arbitrary)]
pub struct FuzzScenario {
    block_size_sel: u8,
    blocks: u8,
    max_num_seqs: u8,
    budget: u8,
    max_model_len: u8,
    k: u8,
    min_n: u8,
    span_n: u8,
    capture: Vec<u8>,
    mode: u8,
    chunked: bool,
    caching: bool,
    spec_on: bool,
    vocab: u8,
    order: u8,
    seed: u64,
    requests: Vec<(Vec<u8>, u8, u8)>,
}

impl FuzzScenario {
    /// Decodes fuzzer bytes into a valid scenario (`None` when the bytes run out early).
    pub fn scenario_from_bytes(data: &[u8]) -> Option<Scenario> {
        FuzzScenario::arbitrary_take_rest(Unstructured::new(data)).ok().map(|f| f.scenario())
    }

    /// Maps the raw draw onto a valid scenario.
    pub fn scenario(&self) -> Scenario {
        let block_size = [1, 2, 4, 16][(self.block_size_sel % 4) as usize];
        let max_model_len = 4 + u32::from(self.max_model_len % 60);
        let k = if self.spec_on { 1 + u32::from(self.k % 5) } else { 0 };
        let min_n = 1 + u32::from(self.min_n % 4);
        let q = 1 + k;
        let mode = [CudagraphModeConfig::FullAndPiecewise, CudagraphModeConfig::Piecewise, CudagraphModeConfig::None]
            [(self.mode % 3) as usize];
        let max_num_seqs = 1 + u32::from(self.max_num_seqs % 6);
        // vLLM requires max_num_batched_tokens >= max_num_seqs.
        let mut budget = (1 + u32::from(self.budget % 64)).max(max_num_seqs);
        if !self.chunked {
            // vLLM requires max_num_batched_tokens >= max_model_len without chunked prefill.
            budget = budget.max(max_model_len);
        }
        let mut sizes: Vec<u32> = self.capture.iter().take(4).map(|&c| 1 + u32::from(c % 16)).collect();
        if mode == CudagraphModeConfig::FullAndPiecewise {
            sizes = sizes.into_iter().map(|s| s.div_ceil(q) * q).collect();
        }
        sizes.retain(|&s| s <= budget.max(1));
        sizes.sort_unstable();
        sizes.dedup();
        let mut requests = Vec::new();
        for (i, (prompt, max_tokens, arrival)) in self.requests.iter().take(6).enumerate() {
            let vocab = 2 + u32::from(self.vocab % 6);
            let mut p: Vec<u32> =
                prompt.iter().take(max_model_len as usize - 1).map(|&t| u32::from(t) % vocab).collect();
            if p.is_empty() {
                p.push(0);
            }
            requests.push(RequestSpec {
                req_id: format!("r{i}"),
                prompt_token_ids: p,
                max_tokens: 1 + u32::from(max_tokens % 40),
                arrival_step: 1 + u64::from(arrival % 6),
                eos_token_id: None,
                stop_token_ids: Vec::new(),
                min_tokens: 0,
                ignore_eos: false,
            });
        }
        if requests.is_empty() {
            requests.push(RequestSpec {
                req_id: "r0".into(),
                prompt_token_ids: vec![1, 2, 1],
                max_tokens: 8,
                arrival_step: 1,
                eos_token_id: None,
                stop_token_ids: Vec::new(),
                min_tokens: 0,
                ignore_eos: false,
            });
        }
        // Every request must fit the pool alone, or vLLM itself would livelock.
        let need = (max_model_len as usize).div_ceil(block_size) as u32 + 1;
        let config = Config {
            profile: Profile::VllmV1,
            block_size: block_size as u32,
            num_gpu_blocks: need + u32::from(self.blocks % 24),
            max_num_seqs,
            max_num_batched_tokens: budget,
            max_model_len,
            method: if self.spec_on { SpecMethod::Ngram } else { SpecMethod::None },
            num_speculative_tokens: k,
            prompt_lookup_min: min_n,
            prompt_lookup_max: min_n + u32::from(self.span_n % 4),
            cudagraph_capture_sizes: sizes,
            cudagraph_mode: mode,
            enable_chunked_prefill: self.chunked,
            enable_prefix_caching: self.caching,
            ..Config::default()
        };
        let oracle = OracleSpec {
            kind: OracleKind::Synthetic,
            tokens: Default::default(),
            seed: self.seed,
            vocab_size: 2 + u32::from(self.vocab % 6),
            order: 1 + u32::from(self.order % 3),
        };
        Scenario { config, requests, oracle }
    }
}

/// Invariants every vLLM-v1 trace must satisfy (checked on simulator output).
pub fn check_invariants(t: &Trace) -> Result<(), String> {
    let c = &t.config;
    let mml = i64::from(c.max_model_len);
    for s in t.steps.iter().filter(|s| !s.idle) {
        let ctx = |m: &str| format!("step {}: {m}", s.step);
        let total: u32 = s.num_scheduled_tokens.values().sum();
        if total != s.total_num_scheduled_tokens || total > c.max_num_batched_tokens {
            return Err(ctx("total scheduled tokens disagree or exceed the budget"));
        }
        if s.batch_req_ids.len() > c.max_num_seqs as usize {
            return Err(ctx("batch larger than max_num_seqs"));
        }
        if s.positions.iter().take(total as usize).any(|&p| p >= mml) {
            return Err(ctx("a position >= max_model_len was scheduled"));
        }
        if total > 0 && (s.num_padded_tokens < total || s.input_ids.len() != s.num_padded_tokens as usize) {
            return Err(ctx("padding shorter than the batch"));
        }
        for (r, d) in &s.scheduled_spec_decode_tokens {
            if d.is_empty() || d.len() > c.k() as usize {
                return Err(ctx(&format!("request {r} has {} drafts scheduled (k = {})", d.len(), c.k())));
            }
        }
        if s.attn.cu_seqlens_q.windows(2).any(|w| w[0] > w[1]) {
            return Err(ctx("cu_seqlens_q not monotone"));
        }
    }
    for r in &t.requests {
        let out = t.outputs.get(&r.req_id).ok_or(format!("request {} has no output", r.req_id))?;
        let finished = t.steps.iter().any(|s| s.finished_req_ids.contains(&r.req_id));
        if !finished {
            return Err(format!("request {} never finished", r.req_id));
        }
        if out.len() > r.max_tokens as usize || r.prompt_token_ids.len() + out.len() > c.max_model_len as usize {
            return Err(format!("request {} produced {} tokens, past its limits", r.req_id, out.len()));
        }
    }
    Ok(())
}

/// Engine fuzz body: a valid scenario runs to completion, satisfies the invariants,
/// equals the non-speculative run's outputs, and is byte-identical when run twice.
pub fn check_scenario(sc: &Scenario) -> Result<(), String> {
    let a = engine::run(sc).map_err(|e: SimError| format!("run failed: {e}"))?;
    check_invariants(&a.trace)?;
    let b = engine::run(sc).map_err(|e| format!("second run failed: {e}"))?;
    if trace::to_json(&a.trace) != trace::to_json(&b.trace) {
        return Err("two runs of the same scenario differ".into());
    }
    let mut plain = sc.clone();
    plain.config.method = SpecMethod::None;
    plain.config.num_speculative_tokens = 0;
    let p = engine::run(&plain).map_err(|e| format!("non-spec run failed: {e}"))?;
    if p.trace.outputs != a.trace.outputs {
        return Err("speculative outputs differ from non-speculative outputs".into());
    }
    Ok(())
}

/// Decodes fuzzer bytes into a scenario and checks it.
pub fn check_scenario_bytes(data: &[u8]) -> Result<(), String> {
    match FuzzScenario::scenario_from_bytes(data) {
        Some(sc) => check_scenario(&sc),
        None => Ok(()),
    }
}
