//! Property tests over random scenarios (the same generator as the engine fuzz target):
//! speculative outputs equal non-speculative ones, no position ≥ max_model_len, every
//! request finishes, runs are byte-identical, and KV pressure or prefix caching never
//! changes the outputs.

use proptest::prelude::*;
use specreplay_sim::config::CudagraphModeConfig;
use specreplay_sim::fuzzing::{check_invariants, check_scenario, max_min_tokens, min_blocks_to_never_stall};
use specreplay_sim::{engine, Scenario, SimError};

/// Writes a failing scenario under `target/proptest-failures/` and returns the command
/// that reproduces it.
fn save_failure(sc: &Scenario) -> String {
    let json = serde_json::to_string_pretty(sc).unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/proptest-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!(
        "{:016x}.json",
        specreplay_sim::splitmix::splitmix(json.bytes().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b)))
    );
    let path = dir.join(name);
    std::fs::write(&path, json).unwrap();
    format!("specreplay sim {} -o /tmp/failure.json", path.display())
}

fn scenario_from(bytes: &[u8]) -> Option<Scenario> {
    specreplay_sim::fuzzing::scenario_from_bytes(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// spec == non-spec outputs, invariants, determinism (see `check_scenario`).
    #[test]
    fn engine_invariants(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Some(sc) = scenario_from(&bytes) {
            if let Err(e) = check_scenario(&sc) {
                prop_assert!(false, "{e}\nreproduce: {}", save_failure(&sc));
            }
        }
    }

    /// With a greedy oracle, outputs do not depend on the KV pool size or on prefix caching.
    #[test]
    fn kv_pressure_and_prefix_caching_keep_outputs(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Some(sc) = scenario_from(&bytes) {
            let base = engine::run(&sc).unwrap().trace;
            check_invariants(&base).unwrap();
            let mut roomy = sc.clone();
            roomy.config.num_gpu_blocks = 10_000;
            let mut uncached = sc.clone();
            uncached.config.enable_prefix_caching = !sc.config.enable_prefix_caching;
            for (what, variant) in [("unlimited blocks", roomy), ("prefix caching toggled", uncached)] {
                let other = engine::run(&variant).unwrap().trace;
                prop_assert_eq!(&base.outputs, &other.outputs, "{} changed outputs; reproduce: {}", what, save_failure(&variant));
            }
        }
    }
}

/// A scenario built to preempt: four long requests over a pool that holds about two.
#[test]
fn preemption_happens_and_everyone_finishes() {
    let json = r#"{
      "config": {"profile": "vllm-v1", "block_size": 4, "num_gpu_blocks": 12, "max_num_seqs": 4,
                 "max_num_batched_tokens": 16, "max_model_len": 40, "num_speculative_tokens": 2,
                 "prompt_lookup_min": 1, "prompt_lookup_max": 3, "cudagraph_capture_sizes": [3, 6, 9, 12]},
      "requests": [
        {"req_id": "a", "prompt_token_ids": [1, 2, 3, 1, 2, 3], "max_tokens": 20},
        {"req_id": "b", "prompt_token_ids": [4, 5, 4, 5], "max_tokens": 20},
        {"req_id": "c", "prompt_token_ids": [1, 2, 3, 1, 2, 3, 1], "max_tokens": 20, "arrival_step": 2},
        {"req_id": "d", "prompt_token_ids": [6, 6, 6], "max_tokens": 20, "arrival_step": 3}
      ],
      "oracle": {"kind": "synthetic", "seed": 7, "vocab_size": 3, "order": 2}
    }"#;
    let sc: Scenario = serde_json::from_str(json).unwrap();
    let t = engine::run(&sc).unwrap().trace;
    check_invariants(&t).unwrap();
    let preemptions: usize = t.steps.iter().map(|s| s.preempted_req_ids.len()).sum();
    assert!(preemptions > 0, "the scenario is meant to preempt");
    for r in ["a", "b", "c", "d"] {
        assert_eq!(t.outputs[r].len(), 20, "{r}");
    }
    check_scenario(&sc).unwrap();
}

/// A nano-vllm-sized scenario: prompts made of two shared 256-token pieces (so whole
/// blocks repeat under different prefixes) plus tails, decodes crossing block
/// boundaries, a KV pool from "every request fits alone" (preemption) to roomy, and one
/// eos for some requests. The same requests run under vLLM (block size 16, a pool that
/// never preempts) and under nano-vllm (block size 256).
fn nano_sized_scenario() -> impl Strategy<Value = (Scenario, Scenario)> {
    let req = (
        0u8..4,
        prop::sample::select(vec![0u32, 1, 1, 7, 40, 129, 255]),
        1u32..300,
        prop::sample::select(vec![0u64, 0, 1, 3]),
        any::<bool>(),
    );
    (
        any::<u64>(),
        2u32..5,
        prop::collection::vec(req, 1..7),
        prop::sample::select(vec![0u32, 0, 1, 2, 8]),
        1u32..6,
        any::<bool>(),
    )
        .prop_map(|(seed, vocab, reqs, slack, max_num_seqs, eos_on)| {
            let tok = |i: u64| (specreplay_sim::splitmix::splitmix(seed ^ i) % u64::from(vocab)) as u32;
            let pieces: Vec<Vec<u32>> = (0..2u64).map(|p| (0..256u64).map(|j| tok(p * 1000 + j)).collect()).collect();
            let mut arrival = 1;
            let requests: Vec<specreplay_sim::RequestSpec> = reqs
                .iter()
                .enumerate()
                .map(|(i, &(shape, tail, max_tokens, gap, eos))| {
                    // shape: which pieces, in which order (0: none, 1: A, 2: B A, 3: A A).
                    let mut prompt: Vec<u32> = match shape {
                        0 => vec![],
                        1 => pieces[0].clone(),
                        2 => [pieces[1].as_slice(), &pieces[0]].concat(),
                        _ => [pieces[0].as_slice(), &pieces[0]].concat(),
                    };
                    prompt.extend(
                        (0..u64::from(tail.max(u32::from(shape == 0)))).map(|j| tok(9000 + i as u64 * 300 + j)),
                    );
                    arrival += gap;
                    specreplay_sim::RequestSpec {
                        req_id: format!("r{i}"),
                        prompt_token_ids: prompt,
                        max_tokens,
                        arrival_step: arrival,
                        eos_token_id: (eos_on && eos).then_some(0),
                        stop_token_ids: Vec::new(),
                        min_tokens: 0,
                        ignore_eos: false,
                        sampling: Default::default(),
                    }
                })
                .collect();
            let len = |r: &specreplay_sim::RequestSpec| r.prompt_token_ids.len() + r.max_tokens as usize;
            let mml = requests.iter().map(len).max().unwrap() as u32 + 1;
            let alone = requests.iter().map(|r| len(r).div_ceil(256) + 1).max().unwrap() as u32;
            let vllm_blocks: usize = requests.iter().map(|r| len(r).div_ceil(16) + 1).sum();
            let mut vllm: Scenario = serde_json::from_value(serde_json::json!({
                "config": {"profile": "vllm-v1", "block_size": 16, "num_gpu_blocks": vllm_blocks + 1,
                           "max_num_seqs": max_num_seqs, "max_num_batched_tokens": 8192, "max_model_len": mml,
                           "method": "none", "num_speculative_tokens": 0, "prompt_lookup_min": 0,
                           "prompt_lookup_max": 0, "cudagraph_capture_sizes": [], "cudagraph_mode": "NONE"},
                "requests": [],
                "oracle": {"kind": "synthetic", "seed": seed, "vocab_size": vocab, "order": 2}
            }))
            .unwrap();
            vllm.requests = requests;
            let mut nano = vllm.clone();
            nano.config.profile = specreplay_sim::Profile::NanoVllm;
            nano.config.block_size = 256;
            nano.config.num_gpu_blocks = alone + slack;
            nano.config.max_num_batched_tokens = mml.max(1024);
            (vllm, nano)
        })
}

/// Two engines, one model: nano-vllm's engine and vLLM's produce the same greedy outputs
/// (no request reaches max_model_len, where only vLLM stops), with nano-vllm's prefix
/// hashing, prefix hits, `may_append` and preemption all running (asserted on its
/// counters over the cases). The one place nano-vllm 2f21442 departs: a wholly cached
/// prompt takes the LM-head row of another sequence (or crashes when alone in its
/// prefill batch), so such runs are only required to have done so.
#[test]
fn nano_vllm_and_vllm_agree_on_outputs() {
    use proptest::test_runner::{Config, TestRng, TestRunner};
    use std::cell::RefCell;
    let config = Config { cases: 48, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config.clone(), TestRng::deterministic_rng(config.rng_algorithm));
    let totals = RefCell::new((specreplay_sim::nano::NanoStats::default(), 0usize));
    runner
        .run(&nano_sized_scenario(), |(vllm, nano)| {
            let v = engine::run(&vllm).map_err(|e| TestCaseError::fail(format!("vLLM: {e}")))?.trace;
            let (n, stats) = match specreplay_sim::nano::run_with_stats(&nano) {
                Ok((r, s)) => (r.trace, s),
                Err(e @ specreplay_sim::SimError::NanoAssertion { .. }) => {
                    // Only the wholly-cached prompt alone in a prefill batch may crash.
                    prop_assert!(e.to_string().contains("embed_head.py:59"), "{e}; reproduce: {}", save_failure(&nano));
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(format!("nano: {e}; reproduce: {}", save_failure(&nano)))),
            };
            if stats.fully_cached_prefills == 0 {
                prop_assert_eq!(&v.outputs, &n.outputs, "reproduce: {}", save_failure(&nano));
            }
            let mut t = totals.borrow_mut();
            let b = &stats.blocks;
            t.0.blocks.prefix_hit_blocks += b.prefix_hit_blocks;
            t.0.blocks.stale_hash_hits += b.stale_hash_hits;
            t.0.blocks.may_append_new_blocks += b.may_append_new_blocks;
            t.0.blocks.may_append_hashes += b.may_append_hashes;
            t.0.preemptions += stats.preemptions;
            t.0.eos_finishes += stats.eos_finishes;
            t.0.decode_steps += stats.decode_steps;
            t.1 += usize::from(stats.fully_cached_prefills == 0);
            Ok(())
        })
        .unwrap();
    let (t, compared) = totals.into_inner();
    let b = &t.blocks;
    println!("{t:?}, {compared} cases compared");
    assert!(compared >= 24, "only {compared} cases compared outputs");
    for (what, n) in [
        ("prefix-hit blocks", b.prefix_hit_blocks),
        ("may_append new blocks", b.may_append_new_blocks),
        ("may_append hashes", b.may_append_hashes),
        ("preemptions", t.preemptions),
        ("eos finishes", t.eos_finishes),
        ("decode steps", t.decode_steps),
    ] {
        assert!(n > 0, "no {what} in any case: {t:?}");
    }
}

/// Wide configurations that cannot stall: any valid combination of every config and
/// request field (not only the fuzz generator's shapes), with the two conditions under
/// which the engine provably always progresses (see `fuzzing::min_blocks_to_never_stall`
/// and `fuzzing::max_min_tokens`): a KV pool of at least the no-stall minimum (often
/// exactly it, for preemption) and `min_tokens` at most what fits below max_model_len.
fn never_stalling_scenario() -> impl Strategy<Value = Scenario> {
    let cfg = (
        (prop::sample::select(vec![1u32, 2, 3, 4, 8, 16, 32]), 2u32..120, 1u32..10, 1u32..80),
        (prop_oneof![0u32..4, 0u32..40], 0u32..9, 1u32..7, 0u32..4, prop::collection::vec(1u32..40, 0..5)),
        (0usize..3, any::<bool>(), any::<bool>(), 0usize..4, prop::sample::select(vec![132u32, 16, 4]), any::<bool>()),
    );
    let reqs = prop::collection::vec(
        (
            prop::collection::vec(0u32..6, 1..60),
            1u32..60,
            1u64..10,
            prop::option::of(0u32..6),
            prop::collection::vec(0u32..6, 0..2),
            any::<bool>(),
            0u32..=100,
        ),
        1..8,
    );
    (cfg, reqs, any::<u64>(), 2u32..7, 1u32..4).prop_map(
        |(
            (
                (bs, mml, seqs, budget),
                (extra_blocks, k, min_n, span, caps),
                (mode, chunked, caching, heads, sms, no_cascade),
            ),
            reqs,
            seed,
            vocab,
            order,
        )| {
            let q = 1 + k;
            let mode =
                [CudagraphModeConfig::FullAndPiecewise, CudagraphModeConfig::Piecewise, CudagraphModeConfig::None]
                    [mode];
            // vLLM's start-up rules, so that every draw is valid.
            let budget = if chunked { budget.max(seqs) } else { budget.max(seqs).max(mml) };
            let mut sizes: Vec<u32> = caps.iter().map(|&c| c.div_ceil(q) * q).filter(|&c| c <= budget).collect();
            sizes.sort_unstable();
            sizes.dedup();
            let (hq, hkv) = [(16, 8), (4, 4), (2, 1), (8, 2)][heads];
            let requests: Vec<_> = reqs
                .into_iter()
                .enumerate()
                .map(|(i, (mut p, max_tokens, arrival, eos, stop, ignore_eos, min_pct))| {
                    p.truncate(mml as usize - 1);
                    let min_cap = max_tokens.min(max_min_tokens(mml, p.len()));
                    serde_json::json!({
                        "req_id": format!("r{i}"), "prompt_token_ids": p, "max_tokens": max_tokens,
                        "arrival_step": arrival, "eos_token_id": eos, "stop_token_ids": stop, "ignore_eos": ignore_eos,
                        "min_tokens": min_cap * min_pct / 100})
                })
                .collect();
            let json = serde_json::json!({
                "config": {"profile": "vllm-v1", "block_size": bs,
                    "num_gpu_blocks": min_blocks_to_never_stall(bs, mml) + extra_blocks, "max_num_seqs": seqs,
                    "max_num_batched_tokens": budget, "max_model_len": mml,
                    "method": if k == 0 { "none" } else { "ngram" }, "num_speculative_tokens": k,
                    "prompt_lookup_min": min_n, "prompt_lookup_max": min_n + span,
                    "cudagraph_capture_sizes": sizes, "cudagraph_mode": mode,
                    "enable_chunked_prefill": chunked, "enable_prefix_caching": caching,
                    "num_attention_heads": hq, "num_kv_heads": hkv, "num_sms": sms, "disable_cascade_attn": no_cascade},
                "requests": requests,
                "oracle": {"kind": "synthetic", "seed": seed, "vocab_size": vocab, "order": order}
            });
            serde_json::from_value(json).unwrap()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Every draw is valid and runs to completion: every request finishes, within its
    /// limits and at the stop `check_stop` dictates (`check_invariants`).
    #[test]
    fn never_stalling_configs_finish_every_request(sc in never_stalling_scenario()) {
        if let Err(e) = sc.validate() {
            prop_assert!(false, "the generator drew an invalid scenario: {e}\nreproduce: {}", save_failure(&sc));
        }
        match engine::run(&sc) {
            Ok(r) => {
                if let Err(e) = check_invariants(&r.trace) {
                    prop_assert!(false, "{e}\nreproduce: {}", save_failure(&sc));
                }
            }
            Err(e) => prop_assert!(false, "{e}\nreproduce: {}", save_failure(&sc)),
        }
    }
}

/// A one-request scenario (n-gram with `k` drafts, or none for k = 0, no graphs, no
/// prefix caching).
#[derive(Clone, Copy)]
struct OneRequest {
    block_size: u32,
    num_gpu_blocks: u32,
    max_model_len: u32,
    budget: u32,
    prompt_len: usize,
    max_tokens: u32,
    min_tokens: u32,
    k: u32,
}

impl OneRequest {
    fn scenario(self) -> Scenario {
        serde_json::from_value(serde_json::json!({
            "config": {"profile": "vllm-v1", "block_size": self.block_size, "num_gpu_blocks": self.num_gpu_blocks,
                "max_num_seqs": 2, "max_num_batched_tokens": self.budget, "max_model_len": self.max_model_len,
                "method": if self.k == 0 { "none" } else { "ngram" }, "num_speculative_tokens": self.k,
                "prompt_lookup_min": 1, "prompt_lookup_max": 2, "cudagraph_capture_sizes": [],
                "enable_chunked_prefill": true, "enable_prefix_caching": false},
            "requests": [{"req_id": "r0", "prompt_token_ids": (0..self.prompt_len).map(|i| i % 3).collect::<Vec<_>>(),
                "max_tokens": self.max_tokens, "min_tokens": self.min_tokens}],
            "oracle": {"kind": "synthetic", "seed": 5, "vocab_size": 3, "order": 2}
        }))
        .unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// `max_min_tokens` is exact: at the bound the request ends at max_model_len; one
    /// more and `check_stop` never lets it finish, which is reported as a stall naming
    /// the request and its min_tokens (vLLM 0.12.0 spins forever).
    #[test]
    fn min_tokens_past_max_model_len_stalls_naming_the_request(
        bs in 1u32..17, mml in 4u32..64, prompt_frac in 0u32..100, k in 0u32..4,
    ) {
        let prompt_len = 1 + (prompt_frac * (mml - 2) / 100) as usize;
        let bound = max_min_tokens(mml, prompt_len);
        let one = OneRequest {
            block_size: bs,
            num_gpu_blocks: min_blocks_to_never_stall(bs, mml),
            max_model_len: mml,
            budget: mml,
            prompt_len,
            max_tokens: bound + 1,
            min_tokens: bound,
            k,
        };
        let ok = engine::run(&one.scenario()).unwrap();
        prop_assert_eq!(ok.trace.outputs["r0"].len(), bound as usize, "ends at max_model_len");
        match engine::run(&OneRequest { min_tokens: bound + 1, ..one }.scenario()) {
            Err(SimError::Stalled { reason, .. }) => prop_assert!(
                reason.contains("request \"r0\"") && reason.contains(&format!("min_tokens = {}", bound + 1)),
                "{}", reason
            ),
            other => prop_assert!(false, "expected a stall, got {:?}", other.map(|r| r.trace.outputs)),
        }
    }

    /// `min_blocks_to_never_stall` is exact: a prompt of max_model_len - 1 tokens is
    /// admitted with that many blocks and never with one fewer (a stall naming the pool).
    #[test]
    fn pool_one_block_short_of_the_bound_stalls(bs in 1u32..17, mml in 3u32..64, k in 0u32..4) {
        let blocks = min_blocks_to_never_stall(bs, mml);
        prop_assume!(blocks > 2); // num_gpu_blocks >= 2 is a start-up rule
        let one = OneRequest {
            block_size: bs,
            num_gpu_blocks: blocks,
            max_model_len: mml,
            budget: mml,
            prompt_len: mml as usize - 1,
            max_tokens: 4,
            min_tokens: 0,
            k,
        };
        let ok = engine::run(&one.scenario()).unwrap();
        check_invariants(&ok.trace).unwrap();
        match engine::run(&OneRequest { num_gpu_blocks: blocks - 1, ..one }.scenario()) {
            Err(SimError::Stalled { step, reason }) => {
                prop_assert_eq!(step, 2, "two steps in a row schedule nothing");
                prop_assert!(reason.contains("needs more KV blocks than the pool holds"), "{}", reason);
            }
            other => prop_assert!(false, "expected a stall, got {:?}", other.map(|r| r.trace.outputs)),
        }
    }
}

/// A prompt larger than the pool, prefilled in chunks without prefix caching: each chunk
/// allocates, the request preempts itself when the pool runs dry and recomputes from
/// zero, forever; no token is ever produced. Reported as a livelock naming the request
/// and its block count, not a hang.
#[test]
fn chunked_prefill_larger_than_the_pool_is_a_livelock_naming_the_request() {
    // block_size 4, 3 usable blocks (12 tokens), a 20-token prompt, 4 tokens a step.
    let one = OneRequest {
        block_size: 4,
        num_gpu_blocks: 4,
        max_model_len: 32,
        budget: 4,
        prompt_len: 20,
        max_tokens: 4,
        min_tokens: 0,
        k: 0,
    };
    let sc = one.scenario();
    match engine::run(&sc) {
        Err(SimError::Stalled { step, reason }) => {
            assert!(
                reason.contains("request \"r0\" needs 6 KV blocks for 21 tokens but the pool has 3")
                    && reason.contains("preempts itself and recomputes forever"),
                "{reason}"
            );
            // The guard allows 4 * (requests + 1) * max_model_len + 64 steps without output.
            assert_eq!(step, 4 * 2 * 32 + 64 + 1, "{reason}");
        }
        other => panic!("expected a livelock, got {:?}", other.map(|r| r.trace.outputs)),
    }
}

/// min_tokens past max_model_len plus a preemption: `a` sits unfinished at
/// max_model_len = 32 (min_tokens 6, only 4 outputs fit) behind `b`; when `b` needs its
/// second block, the scheduler preempts `a` (the last running request), and `a`'s
/// recomputation prefills all 32 tokens and samples a 33rd, which vLLM 0.12.0's
/// `_bookkeeping_sync` asserts against (`gpu_model_runner.py`). The pool holds the
/// no-stall minimum (3 usable blocks), so only min_tokens breaks the no-stall conditions.
#[test]
fn min_tokens_at_max_model_len_then_preempted_is_vllms_assertion_naming_the_request() {
    let json = serde_json::json!({
        "config": {"profile": "vllm-v1", "block_size": 16, "num_gpu_blocks": min_blocks_to_never_stall(16, 32) + 1,
            "max_num_seqs": 2, "max_num_batched_tokens": 64, "max_model_len": 32, "method": "none",
            "num_speculative_tokens": 0, "prompt_lookup_min": 1, "prompt_lookup_max": 1,
            "cudagraph_capture_sizes": [1, 2, 4], "enable_prefix_caching": false},
        "requests": [
            {"req_id": "b", "prompt_token_ids": (5..15).collect::<Vec<u32>>(), "max_tokens": 21},
            {"req_id": "a", "prompt_token_ids": (0..28).map(|i| 1 + i % 4).collect::<Vec<u32>>(), "max_tokens": 8,
             "min_tokens": 6, "arrival_step": 2}
        ],
        "oracle": {"kind": "synthetic", "seed": 3, "vocab_size": 5, "order": 2}
    });
    let sc: Scenario = serde_json::from_value(json).unwrap();
    assert!(sc.requests[1].min_tokens > max_min_tokens(32, 28), "a breaks the min_tokens condition");
    match engine::run(&sc) {
        Err(SimError::VllmAssertion { step, message }) => {
            assert!(message.contains("request \"a\"") && message.contains("(33 > 32)"), "{message}");
            assert!(step > 8, "after b's 17th token preempted a: step {step}");
        }
        other => panic!("expected vLLM's assertion, got {:?}", other.map(|r| r.trace.outputs)),
    }
}

/// `sc` with `fields` added to every request, resolved again from its JSON form.
fn with_request_fields(sc: &Scenario, fields: &serde_json::Value) -> Scenario {
    let mut v = serde_json::to_value(sc).unwrap();
    for r in v["requests"].as_array_mut().unwrap() {
        for (k, x) in fields.as_object().unwrap() {
            r[k] = x.clone();
        }
    }
    Scenario::from_json(&v.to_string()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// Issue 15: temperature 0 everywhere (whatever top_k / top_p / seed say) gives traces
    /// byte-identical, in JSON and bincode, to the same scenario without sampling fields.
    #[test]
    fn temperature_zero_everywhere_is_byte_identical_to_greedy(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        top_k in -1i64..50,
        top_p in 0.01f64..=1.0,
        seed in any::<u64>(),
    ) {
        if let Some(sc) = scenario_from(&bytes) {
            let base = engine::run(&sc).map(|r| r.trace).map_err(|e| e.to_string());
            let greedy = with_request_fields(&sc, &serde_json::json!({"temperature": 0, "top_k": top_k, "top_p": top_p, "seed": seed}));
            let got = engine::run(&greedy).map(|r| r.trace).map_err(|e| e.to_string());
            let enc = |t: &Result<specreplay_sim::Trace, String>| {
                t.as_ref().map(|t| (specreplay_sim::trace::to_json(t), specreplay_sim::trace::to_bincode(t))).map_err(Clone::clone)
            };
            prop_assert!(enc(&base) == enc(&got), "temperature 0 changed the trace; reproduce: {}", save_failure(&greedy));
        }
    }

    /// Random-mode runs of the fuzz domain (synthetic oracles, vLLM profile) finish every
    /// request and give the same bytes twice.
    #[test]
    fn random_mode_runs_are_deterministic_and_finish(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        t in 0.3f64..2.5,
        top_k in 0i64..6,
    ) {
        if let Some(sc) = scenario_from(&bytes) {
            if sc.oracle.kind != specreplay_sim::config::OracleKind::Synthetic
                || sc.config.profile != specreplay_sim::config::Profile::VllmV1
            {
                return Ok(());
            }
            let base = engine::run(&sc);
            let rnd = with_request_fields(&sc, &serde_json::json!({"temperature": t, "top_k": top_k}));
            let a = engine::run(&rnd).map(|r| specreplay_sim::trace::to_json(&r.trace)).map_err(|e| e.to_string());
            let b = engine::run(&rnd).map(|r| specreplay_sim::trace::to_json(&r.trace)).map_err(|e| e.to_string());
            prop_assert!(a == b, "two runs differ; reproduce: {}", save_failure(&rnd));
            if base.is_ok() {
                let t = engine::run(&rnd).unwrap().trace;
                for r in &rnd.requests {
                    prop_assert!(!t.outputs[&r.req_id].is_empty(), "{} produced nothing; reproduce: {}", r.req_id, save_failure(&rnd));
                }
            }
        }
    }
}
