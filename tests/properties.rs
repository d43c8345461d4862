//! Property tests over random scenarios (the same generator as the engine fuzz target):
//! speculative outputs equal non-speculative ones, no position ≥ max_model_len, every
//! request finishes, runs are byte-identical, and KV pressure or prefix caching never
//! changes the outputs.

use proptest::prelude::*;
use specreplay_sim::fuzzing::{check_invariants, check_scenario, FuzzScenario};
use specreplay_sim::{engine, Scenario};

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
    FuzzScenario::scenario_from_bytes(bytes)
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Two engines, one model: nano-vllm's engine and vLLM's (with or without n-gram
    /// speculation) produce the same greedy outputs when no request hits max_model_len
    /// (nano-vllm has no length stop).
    #[test]
    fn nano_vllm_and_vllm_agree_on_outputs(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Some(mut sc) = scenario_from(&bytes) {
            let mml = sc.config.max_model_len as usize;
            for r in &mut sc.requests {
                r.max_tokens = r.max_tokens.min((mml - r.prompt_token_ids.len()) as u32).max(1);
            }
            let vllm = engine::run(&sc).unwrap().trace;
            let mut nano = sc.clone();
            nano.config.profile = specreplay_sim::Profile::NanoVllm;
            nano.config.method = specreplay_sim::config::SpecMethod::None;
            nano.config.num_speculative_tokens = 0;
            nano.config.block_size = 256;
            nano.config.num_gpu_blocks = 64;
            nano.config.max_num_batched_tokens = nano.config.max_num_batched_tokens.max(mml as u32);
            let n = engine::run(&nano).unwrap().trace;
            prop_assert_eq!(&vllm.outputs, &n.outputs, "reproduce: {}", save_failure(&nano));
        }
    }
}

/// Wide configurations (any valid combination, not only the fuzz generator's shapes):
/// a validated scenario never panics (overflow checks are on in tests) and its trace
/// keeps the invariants.
fn wide_scenario() -> impl Strategy<Value = Scenario> {
    let cfg = (
        (prop::sample::select(vec![1u32, 2, 3, 4, 8, 16, 32]), 2u32..40, 1u32..10, 1u32..80, 3u32..120),
        (0u32..9, 1u32..7, 0u32..4, prop::collection::vec(1u32..40, 0..5), 0u8..3, any::<bool>(), any::<bool>()),
    );
    let reqs = prop::collection::vec(
        (prop::collection::vec(0u32..6, 1..60), 1u32..60, 1u64..10, prop::option::of(0u32..6), 0u32..3),
        1..8,
    );
    (cfg, reqs, any::<u64>(), 2u32..7, 1u32..4).prop_map(
        |(
            ((bs, blocks, seqs, budget, mml), (k, min_n, span, caps, mode, chunked, caching)),
            reqs,
            seed,
            vocab,
            order,
        )| {
            let q = 1 + k;
            let mode = [
                specreplay_sim::config::CudagraphModeConfig::FullAndPiecewise,
                specreplay_sim::config::CudagraphModeConfig::Piecewise,
                specreplay_sim::config::CudagraphModeConfig::None,
            ][mode as usize];
            // Keep most draws valid (vLLM's own start-up rules), so few are rejected.
            let budget = if chunked { budget.max(seqs) } else { budget.max(seqs).max(mml) };
            let mut sizes: Vec<u32> = caps.iter().map(|&c| c.div_ceil(q) * q).filter(|&c| c <= budget).collect();
            sizes.sort_unstable();
            sizes.dedup();
            let reqs: Vec<_> = reqs
                .into_iter()
                .map(|(mut p, mt, arr, eos, min_t)| {
                    p.truncate(mml as usize - 1);
                    (p, mt, arr, eos, min_t)
                })
                .collect();
            let json = serde_json::json!({
                "config": {"profile": "vllm-v1", "block_size": bs, "num_gpu_blocks": blocks, "max_num_seqs": seqs,
                    "max_num_batched_tokens": budget, "max_model_len": mml,
                    "method": if k == 0 { "none" } else { "ngram" }, "num_speculative_tokens": k,
                    "prompt_lookup_min": min_n, "prompt_lookup_max": min_n + span,
                    "cudagraph_capture_sizes": sizes, "cudagraph_mode": mode,
                    "enable_chunked_prefill": chunked, "enable_prefix_caching": caching},
                "requests": reqs.iter().enumerate().map(|(i, (p, mt, arr, eos, min_t))| serde_json::json!({
                    "req_id": format!("r{i}"), "prompt_token_ids": p, "max_tokens": mt, "arrival_step": arr,
                    "eos_token_id": eos, "min_tokens": (*min_t).min(*mt)})).collect::<Vec<_>>(),
                "oracle": {"kind": "synthetic", "seed": seed, "vocab_size": vocab, "order": order}
            });
            serde_json::from_value(json).unwrap()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn wide_valid_configs_never_panic(sc in wide_scenario()) {
        prop_assume!(sc.validate().is_ok());
        match engine::run(&sc) {
            Ok(r) => {
                if let Err(e) = check_invariants(&r.trace) {
                    prop_assert!(false, "{e}\nreproduce: {}", save_failure(&sc));
                }
            }
            // Stalls (a request larger than the pool, min_tokens past max_model_len) are
            // reported errors, as they would hang vLLM; nothing else may fail.
            Err(specreplay_sim::SimError::Stalled { .. }) => {}
            // min_tokens past max_model_len plus a preemption: vLLM's own assertion.
            Err(specreplay_sim::SimError::VllmAssertion { .. }) => {}
            Err(e) => prop_assert!(false, "{e}\nreproduce: {}", save_failure(&sc)),
        }
    }
}
