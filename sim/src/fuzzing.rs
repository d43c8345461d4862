//! Fuzz-target bodies shared by `fuzz/` (cargo-fuzz) and the stable `cargo test` replay
//! of the committed corpus: arbitrary bytes → trace parser; arbitrary small scenarios →
//! engine invariants.

use crate::config::{Config, CudagraphModeConfig, OracleKind, OracleSpec, Profile, RequestSpec, Scenario, SpecMethod};
use crate::engine;
use crate::error::SimError;
use crate::splitmix::Rng;
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

/// Fewest KV blocks (null block included) with which a run cannot stall or livelock,
/// for requests whose `min_tokens` respect [`max_min_tokens`]: an unfinished request
/// never needs more than `cdiv(max_model_len - 1, block_size)` blocks (the scheduler's
/// running branch clamps at position `max_model_len - 2` plus one sampled token, and a
/// request holding `max_model_len` tokens finishes in `check_stop`), so the first
/// running request always fits once the scheduler has preempted every request behind
/// it (`vllm/v1/core/sched/scheduler.py`, FCFS: the victim is the last running one), and
/// a waiting request always fits an empty pool. One block fewer and a request whose
/// prompt is `max_model_len - 1` tokens long can never be admitted.
pub fn min_blocks_to_never_stall(block_size: u32, max_model_len: u32) -> u32 {
    1 + (max_model_len - 1).div_ceil(block_size)
}

/// Largest `min_tokens` for which a request still finishes at `max_model_len`:
/// `check_stop` (`vllm/v1/core/sched/utils.py`) tests the length cap only once
/// `min_tokens` outputs exist, and the scheduler never schedules past `max_model_len`, so
/// a request needing more outputs than fit sits unfinished forever (vLLM 0.12.0 spins).
pub fn max_min_tokens(max_model_len: u32, prompt_len: usize) -> u32 {
    max_model_len.saturating_sub(prompt_len as u32)
}

/// Shapes of fuzz scenarios: each aims at engine behaviours the others rarely reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Any small mix: short contexts, every block size and graph mode, chunked prefill.
    Mixed,
    /// Requests sharing a prompt prefix over a prefix-caching pool (prefix hits).
    SharedPrefix,
    /// 8 to 12 requests sharing a 256-300 token prefix (cascade attention and its
    /// FlashAttention cost model).
    Cascade,
    /// A KV pool at the no-stall minimum plus a few blocks (preemption, recomputation).
    KvPressure,
    /// Requests arriving together with short prompts under FULL_AND_PIECEWISE and
    /// capture sizes that are multiples of `1 + k` (FULL graphs, padded requests).
    UniformDecode,
}

const SHAPES: [Shape; 5] = [Shape::Mixed, Shape::SharedPrefix, Shape::Cascade, Shape::KvPressure, Shape::UniformDecode];

/// Fuzzer bytes read as knobs: each read takes the next byte, or 0 once the input is
/// exhausted (so every input decodes, and the zero tail gives the smallest, plainest
/// choices).
struct Knobs<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Knobs<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// `lo..=hi` from two bytes.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        debug_assert!(lo <= hi && hi - lo < u32::from(u16::MAX));
        let x = u32::from(u16::from_le_bytes([self.byte(), self.byte()]));
        lo + x % (hi - lo + 1)
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[usize::from(self.byte()) % xs.len()]
    }

    /// True with about `percent`% probability; false on exhausted input.
    fn chance(&mut self, percent: u32) -> bool {
        u32::from(self.byte()) * 100 >= (100 - percent) * 256
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }
}

/// Decodes fuzzer bytes into a valid scenario that cannot stall (`None` for empty input).
/// The first byte picks a [`Shape`]; the rest are knobs.
pub fn scenario_from_bytes(data: &[u8]) -> Option<Scenario> {
    if data.is_empty() {
        return None;
    }
    let mut kn = Knobs { data, pos: 0 };
    let shape = kn.pick(&SHAPES);
    Some(build(shape, &mut kn))
}

fn build(shape: Shape, kn: &mut Knobs) -> Scenario {
    use Shape::*;
    let spec_on = kn.chance(if shape == UniformDecode { 50 } else { 75 });
    let k = if spec_on { kn.range(1, 4) } else { 0 };
    let q = 1 + k;
    let min_n = kn.range(1, 3);
    let max_n = min_n + kn.range(0, 3);
    let vocab = kn.range(2, 8);
    let order = kn.range(1, 3);
    let seed = kn.u64();
    let block_size = if shape == Cascade { 16 } else { kn.pick(&[1, 2, 4, 8, 16]) };
    let mode = match shape {
        UniformDecode => CudagraphModeConfig::FullAndPiecewise,
        _ => {
            kn.pick(&[CudagraphModeConfig::FullAndPiecewise, CudagraphModeConfig::Piecewise, CudagraphModeConfig::None])
        }
    };
    let caching = match shape {
        SharedPrefix | Cascade => !kn.chance(8),
        _ => kn.chance(60),
    };
    let (num_reqs, prefix_len, max_model_len) = match shape {
        Mixed => (kn.range(1, 8), 0, kn.range(4, 80)),
        SharedPrefix => {
            let mml = kn.range(16, 96);
            (kn.range(2, 8), kn.range(1, mml / 2), mml)
        }
        // prefix + suffix (<= 8) + max_tokens (<= 12) + slack
        Cascade => {
            let p = kn.range(256, 300);
            (kn.range(8, 12), p, p + 8 + kn.range(1, 24))
        }
        KvPressure => (kn.range(3, 8), 0, kn.range(16, 64)),
        UniformDecode => (kn.range(2, 8), 0, kn.range(24, 80)),
    };
    // Token streams: a periodic base (n-gram matches) with sparse noise, from the seed.
    let mut rng = Rng::new(seed);
    let period = 1 + rng.range(0, 7) as usize;
    let base: Vec<u32> = (0..period).map(|_| rng.range(0, u64::from(vocab) - 1) as u32).collect();
    let token = |i: usize, rng: &mut Rng| {
        if rng.range(0, 9) == 0 {
            rng.range(0, u64::from(vocab) - 1) as u32
        } else {
            base[i % period]
        }
    };
    let prefix: Vec<u32> = (0..prefix_len as usize).map(|i| token(i, &mut rng)).collect();
    let mut requests = Vec::new();
    let mut arrival = 1;
    for i in 0..num_reqs as usize {
        let room = max_model_len as usize - 1 - prefix.len();
        let own = match shape {
            Mixed => kn.range(1, 60) as usize,
            SharedPrefix | Cascade => kn.range(0, 8) as usize,
            KvPressure => kn.range(1, max_model_len / 2) as usize,
            UniformDecode => kn.range(1, 8) as usize,
        };
        let mut prompt = prefix.clone();
        prompt.extend((0..own.min(room)).map(|j| token(prefix.len() + j + i, &mut rng)));
        if prompt.is_empty() {
            prompt.push(0);
        }
        let max_tokens = match shape {
            Cascade => kn.range(4, 12),
            UniformDecode => kn.range(8, 40),
            KvPressure => kn.range(8, max_model_len),
            _ => kn.range(1, 40),
        };
        arrival += match shape {
            UniformDecode => u64::from(kn.chance(10)),
            // Mostly together, so that 8 rows decode over the shared prefix at once.
            Cascade => u64::from(i > 0 && kn.chance(20)),
            _ => u64::from(kn.range(0, 3)),
        };
        let eos_token_id = kn.chance(25).then(|| kn.range(0, vocab - 1));
        let stop_token_ids = if kn.chance(15) { vec![kn.range(0, vocab - 1)] } else { Vec::new() };
        let ignore_eos = eos_token_id.is_some() && kn.chance(20);
        let min_tokens =
            if kn.chance(30) { kn.range(0, max_tokens.min(max_min_tokens(max_model_len, prompt.len()))) } else { 0 };
        requests.push(RequestSpec {
            req_id: format!("r{i}"),
            prompt_token_ids: prompt,
            max_tokens,
            arrival_step: arrival,
            eos_token_id,
            stop_token_ids,
            min_tokens,
            ignore_eos,
            sampling: Default::default(),
        });
    }
    let max_num_seqs = match shape {
        Cascade | UniformDecode => num_reqs.max(8) + kn.range(0, 2),
        _ => kn.range(1, 6),
    };
    let chunked = shape == Cascade || !kn.chance(25);
    let mut budget = match shape {
        Cascade => kn.pick(&[256, 512, 2048]),
        UniformDecode => q * max_num_seqs + kn.range(0, 16),
        _ => kn.range(1, 64),
    }
    // vLLM requires max_num_batched_tokens >= max_num_seqs ...
    .max(max_num_seqs);
    if !chunked {
        // ... and >= max_model_len without chunked prefill.
        budget = budget.max(max_model_len);
    }
    let mut sizes: Vec<u32> = match shape {
        // Multiples of 1 + k up to a decode batch of every seat (FULL keys exist up to
        // q * max_num_seqs, vllm/v1/cudagraph_dispatcher.py).
        UniformDecode => (1..=max_num_seqs).filter(|_| kn.chance(40)).map(|m| q * m).collect(),
        _ => (0..kn.range(0, 4)).map(|_| kn.range(1, 16)).collect(),
    };
    if mode == CudagraphModeConfig::FullAndPiecewise {
        // vllm/config/compilation.py rounds capture sizes to multiples of 1 + k.
        sizes = sizes.into_iter().map(|s| s.div_ceil(q) * q).collect();
    }
    sizes.retain(|&s| s <= budget);
    sizes.sort_unstable();
    sizes.dedup();
    let min_blocks = min_blocks_to_never_stall(block_size, max_model_len);
    let per_request = max_model_len.div_ceil(block_size);
    let num_gpu_blocks = min_blocks
        + match shape {
            KvPressure => kn.range(0, 3),
            Mixed => kn.range(0, 24),
            // The shared prefix once, every request's own blocks, then some slack.
            SharedPrefix | Cascade | UniformDecode => {
                let own = (max_model_len - prefix_len).div_ceil(block_size) + 1;
                let roomy = prefix_len / block_size + own * num_reqs;
                if kn.chance(20) {
                    kn.range(0, per_request)
                } else {
                    roomy + kn.range(0, 8)
                }
            }
        };
    let (num_attention_heads, num_kv_heads) = kn.pick(&[(16, 8), (4, 4), (2, 1), (8, 2)]);
    let config = Config {
        profile: Profile::VllmV1,
        block_size,
        num_gpu_blocks,
        max_num_seqs,
        max_num_batched_tokens: budget,
        max_model_len,
        method: if spec_on { SpecMethod::Ngram } else { SpecMethod::None },
        num_speculative_tokens: k,
        prompt_lookup_min: min_n,
        prompt_lookup_max: max_n,
        cudagraph_capture_sizes: sizes,
        cudagraph_mode: mode,
        enable_chunked_prefill: chunked,
        enable_prefix_caching: caching,
        num_attention_heads,
        num_kv_heads,
        num_sms: kn.pick(&[132, 132, 16, 4]),
        disable_cascade_attn: kn.chance(5),
    };
    let oracle = OracleSpec { kind: OracleKind::Synthetic, tokens: Default::default(), seed, vocab_size: vocab, order };
    Scenario { config, requests, oracle }
}

/// `n` fuzz inputs drawn from SplitMix64 (`seed`), lengths 1..=256: the fuzz domain as the
/// coverage test and the property tests sample it.
pub fn draw_inputs(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut buf = vec![0; rng.range(1, 256) as usize];
            rng.fill(&mut buf);
            buf
        })
        .collect()
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
        if stop_len(r, out, c.max_model_len) != Some(out.len()) {
            return Err(format!(
                "request {} produced {} tokens; check_stop ends it after {:?}",
                r.req_id,
                out.len(),
                stop_len(r, out, c.max_model_len)
            ));
        }
    }
    Ok(())
}

/// Whether `check_stop` stops request `r` on sampling `token`, once `min_tokens` outputs
/// exist: its EOS (unless `ignore_eos`) or one of its stop token ids.
fn is_stop_token(r: &RequestSpec, token: u32) -> bool {
    r.stop_token_ids.contains(&token) || (!r.ignore_eos && Some(token) == r.eos_token_id)
}

/// After how many of the tokens in `out` `check_stop` (`vllm/v1/core/sched/utils.py`)
/// finishes the request: the first output, counting from `min_tokens` on, that is a stop
/// token, reaches `max_tokens`, or brings the sequence to `max_model_len`; `None` if none.
pub fn stop_len(r: &RequestSpec, out: &[u32], max_model_len: u32) -> Option<usize> {
    let prompt = r.prompt_token_ids.len();
    (1..=out.len()).find(|&n| {
        n >= r.min_tokens as usize
            && (is_stop_token(r, out[n - 1]) || prompt + n >= max_model_len as usize || n >= r.max_tokens as usize)
    })
}

/// Engine fuzz body: a valid scenario runs to completion, satisfies the invariants,
/// counts the acceptance its trace records, equals the non-speculative run's outputs,
/// and is byte-identical when run twice.
pub fn check_scenario(sc: &Scenario) -> Result<(), String> {
    let a = engine::run(sc).map_err(|e: SimError| format!("run failed: {e}"))?;
    check_invariants(&a.trace)?;
    // The scheduler's acceptance counters and the recount from the recorded rows agree.
    let recount = crate::summary::Summary::from_trace(&a.trace).spec;
    if a.stats != recount {
        return Err(format!("scheduler counted {:?}, the trace's rows give {recount:?}", a.stats));
    }
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
    match scenario_from_bytes(data) {
        Some(sc) => check_scenario(&sc),
        None => Ok(()),
    }
}

/// Engine behaviours a vLLM-v1 trace can exercise: the coverage marks of the fuzz domain
/// (`tests/fuzz_corpus.rs` requires the generator to reach each of them), read off the
/// recorded fields only, so they apply to any recording.
pub const BEHAVIOURS: &[&str] = &[
    "cascade_attention",
    "full_graph",
    "full_graph_padded_requests",
    "piecewise_graph",
    "no_graph",
    "preemption",
    "prefix_cache_hit",
    "partial_prefill",
    "drafter_gate_closed",
    "draft_rejected",
    "all_drafts_accepted",
    "idle_step",
    "finished_by_stop_token",
    "stop_held_by_min_tokens",
    "finished_at_max_model_len",
    "eight_plus_requests",
];

/// The [`BEHAVIOURS`] a trace exercises.
pub fn behaviours(t: &Trace) -> std::collections::BTreeSet<&'static str> {
    let mut seen = std::collections::BTreeSet::new();
    let mut mark = |name: &'static str, hit: bool| {
        debug_assert!(BEHAVIOURS.contains(&name), "unlisted behaviour {name}");
        if hit {
            seen.insert(name);
        }
    };
    let has_spec = t.config.k() > 0;
    mark("eight_plus_requests", t.requests.len() >= 8);
    for r in &t.requests {
        let out = t.outputs.get(&r.req_id).map(Vec::as_slice).unwrap_or(&[]);
        let is_stop = |x: u32| is_stop_token(r, x);
        mark("finished_by_stop_token", out.last().is_some_and(|&x| is_stop(x)));
        // A stop token sampled before min_tokens outputs did not end the request.
        let held = (r.min_tokens as usize).saturating_sub(1).min(out.len());
        mark("stop_held_by_min_tokens", out[..held].iter().any(|&x| is_stop(x)));
        mark("finished_at_max_model_len", r.prompt_token_ids.len() + out.len() == t.config.max_model_len as usize);
    }
    let mut admitted = std::collections::BTreeSet::new();
    for s in &t.steps {
        mark("idle_step", s.idle);
        if s.idle {
            continue;
        }
        mark("preemption", !s.preempted_req_ids.is_empty());
        mark("cascade_attention", s.cascade_prefix_len > 0);
        mark("full_graph", s.cudagraph_mode == "FULL");
        mark(
            "full_graph_padded_requests",
            s.cudagraph_mode == "FULL" && s.num_reqs_padded as usize > s.batch_req_ids.len(),
        );
        mark("piecewise_graph", s.cudagraph_mode == "PIECEWISE");
        mark("no_graph", s.cudagraph_mode == "NONE" && s.total_num_scheduled_tokens > 0);
        mark("partial_prefill", s.output_token_ids.iter().any(|r| !r.is_empty() && r.iter().all(|&x| x == -1)));
        mark("drafter_gate_closed", has_spec && s.total_num_scheduled_tokens > 0 && s.draft_token_ids.is_empty());
        for (r, &n) in &s.num_computed_tokens {
            // First scheduling of a request with tokens already computed: a prefix hit.
            mark("prefix_cache_hit", admitted.insert(r.clone()) && n > 0);
        }
        for r in s.scheduled_spec_decode_tokens.keys() {
            let Some(row) = s.batch_req_ids.iter().position(|x| x == r) else { continue };
            let out = s.output_token_ids.get(row).map(Vec::as_slice).unwrap_or(&[]);
            mark("draft_rejected", out.iter().any(|&x| x < 0));
            mark("all_drafts_accepted", !out.is_empty() && out.iter().all(|&x| x >= 0));
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check_invariants` rejects an output that ends anywhere but where `check_stop` does.
    #[test]
    fn invariants_pin_the_stop_position() {
        let sc = scenario_from_bytes(&[0]).unwrap();
        let mut sc = Scenario { requests: sc.requests[..1].to_vec(), ..sc };
        sc.requests[0].max_tokens = 30;
        sc.config.max_model_len = 64;
        sc.config.num_gpu_blocks = min_blocks_to_never_stall(sc.config.block_size, 64);
        // Stop on the third output token.
        let plain = engine::run(&sc).unwrap().trace;
        let third = plain.outputs["r0"][2];
        sc.requests[0].eos_token_id = Some(third);
        sc.requests[0].min_tokens = 3;
        let t = engine::run(&sc).unwrap().trace;
        assert_eq!(t.outputs["r0"].len(), 3);
        check_invariants(&t).unwrap();
        let mut longer = t.clone();
        longer.outputs.get_mut("r0").unwrap().push(third);
        assert!(check_invariants(&longer).unwrap_err().contains("check_stop ends it after Some(3)"));
        let mut shorter = t.clone();
        shorter.outputs.get_mut("r0").unwrap().pop();
        assert!(check_invariants(&shorter).unwrap_err().contains("produced 2 tokens"));
        let mut held = t.clone();
        held.requests[0].min_tokens = 4;
        assert!(check_invariants(&held).is_err(), "min_tokens 4 holds the stop token back");
    }
}
