//! Scenario defaults as vLLM 0.12.0's offline `LLM` entry point resolves them, vLLM's own
//! spellings (`speculative_config`, unrounded capture lists), the oracle-kind enum, and
//! config arithmetic that cannot overflow (issue 12, items 2, 6 and 9).

use proptest::prelude::*;
use serde_json::{json, Value};
use specreplay_sim::config::{input, CudagraphModeConfig, OracleKind, SpecMethod};
use specreplay_sim::{engine, trace, Config, ConfigError, Profile, Scenario};

mod common;
use common::{cli, root};

/// Seed 004's request: 11 prompt tokens and the recorded greedy continuation.
const PROMPT: &str = "[852, 220, 16, 15, 5109, 1172, 5610, 15723, 220, 16, 25]";
const CONTINUATION: &str = "[220, 16, 11, 220, 16, 16, 11, 220, 16, 16, 16, 11, 220, 16, 16, 16, 16, 11, 220, 16, 16]";

/// A one-request scenario with `config` as the config member.
fn with_config(config: &str) -> String {
    format!(
        r#"{{"config": {config}, "requests": [{{"req_id": "0", "prompt_token_ids": {PROMPT}}}],
            "oracle": {{"kind": "continuation", "tokens": {{"0": {CONTINUATION}}}}}}}"#
    )
}

fn resolve(config: &str) -> Result<Scenario, ConfigError> {
    Scenario::from_json(&with_config(config))
}

fn err(config: &str) -> String {
    resolve(config).expect_err("expected a config error").to_string()
}

/// vLLM's default capture list for a largest size of 512: [1, 2, 4], multiples of 8
/// below 256, multiples of 16 from 256 to 512 (`vllm/config/vllm.py` docstring).
fn vllm_list_512() -> Vec<u32> {
    let mut v = vec![1, 2, 4];
    v.extend((1..32).map(|i| 8 * i));
    v.extend((0..=16).map(|i| 256 + 16 * i));
    v
}

#[test]
fn minimal_scenario_gets_vllm_offline_defaults() {
    let sc = resolve(r#"{"max_model_len": 32}"#).unwrap();
    let c = &sc.config;
    assert_eq!(c.profile, Profile::VllmV1);
    assert_eq!(c.block_size, 16, "vllm/platforms/cuda.py");
    // arg_utils.py get_batch_defaults, LLM_CLASS on a >= 70 GiB non-A100 GPU.
    assert_eq!((c.max_num_seqs, c.max_num_batched_tokens), (1024, 16384));
    assert_eq!(c.method, SpecMethod::None, "vLLM speculates only when asked");
    assert_eq!((c.num_speculative_tokens, c.prompt_lookup_min, c.prompt_lookup_max), (0, 0, 0));
    assert_eq!(c.cudagraph_mode, CudagraphModeConfig::FullAndPiecewise);
    assert!(c.enable_chunked_prefill && c.enable_prefix_caching);
    // min(1024 * 2, 512) = 512, no rounding without speculation.
    assert_eq!(c.cudagraph_capture_sizes, vllm_list_512());
    assert_eq!(c.cudagraph_capture_sizes.len(), 51);
    // One request: cdiv(32, 16) = 2 blocks + the null block.
    assert_eq!(c.num_gpu_blocks, 3);
    let r = &sc.requests[0];
    assert_eq!((r.max_tokens, r.arrival_step), (16, 1), "SamplingParams.max_tokens = 16; arrival at step 1");
    let t = engine::run(&sc).unwrap().trace;
    assert_eq!(t.outputs["0"].len(), 16);
    assert_eq!(t.outputs["0"][..], serde_json::from_str::<Vec<u32>>(CONTINUATION).unwrap()[..16]);
}

#[test]
fn batch_defaults_follow_arg_utils() {
    // Without chunked prefill the default budget rises to max_model_len (20000 > 16384).
    let c = resolve(r#"{"max_model_len": 20000, "enable_chunked_prefill": false}"#).unwrap().config;
    assert_eq!(c.max_num_batched_tokens, 20000);
    // Capped at max_num_seqs * max_model_len when the budget is defaulted ...
    let c = resolve(r#"{"max_model_len": 100, "max_num_seqs": 2}"#).unwrap().config;
    assert_eq!((c.max_num_seqs, c.max_num_batched_tokens), (2, 200));
    // ... and a defaulted max_num_seqs is capped at the budget.
    let c = resolve(r#"{"max_model_len": 100, "max_num_batched_tokens": 8}"#).unwrap().config;
    assert_eq!((c.max_num_seqs, c.max_num_batched_tokens), (8, 8));
    // Given values are never adjusted (vLLM then refuses budget < max_num_seqs).
    assert!(err(r#"{"max_model_len": 100, "max_num_seqs": 9, "max_num_batched_tokens": 8}"#)
        .contains("max_num_batched_tokens (8) must be >= max_num_seqs (9)"));
}

#[test]
fn capture_sizes_are_rounded_as_vllm_rounds_them() {
    let sizes = |cfg: &str| resolve(cfg).map(|s| s.config.cudagraph_capture_sizes);
    let k2 = r#""num_speculative_tokens": 2, "max_model_len": 64"#;
    // Explicit [1, 2, 4, 8] with k = 2: 3, 3, 6, 9 -> 9 > 8 dropped (seed-004 analysis).
    assert_eq!(sizes(&format!("{{{k2}, \"cudagraph_capture_sizes\": [1, 2, 4, 8]}}")).unwrap(), [3, 6]);
    // Unsorted, duplicated, above the budget: deduplicated, filtered, sorted, then rounded.
    assert_eq!(
        sizes(&format!("{{{k2}, \"max_num_batched_tokens\": 64, \"cudagraph_capture_sizes\": [8, 4, 4, 100]}}"))
            .unwrap(),
        [6]
    );
    // Default lists by max_num_seqs, k = 2 (largest size min(2 * seqs, 512)).
    for (seqs, want) in [(2, vec![3]), (3, vec![3]), (4, vec![3, 6]), (7, vec![3, 6]), (8, vec![3, 6, 9])] {
        assert_eq!(sizes(&format!("{{{k2}, \"max_num_seqs\": {seqs}}}")).unwrap(), want, "max_num_seqs {seqs}");
    }
    assert_eq!(sizes(&format!("{{{k2}, \"max_num_seqs\": 12}}")).unwrap(), [3, 6, 9, 18, 24]);
    // max_num_seqs = 1: [1, 2], largest 2 < 3 -> vLLM 0.12.0 refuses to start.
    let e = err(&format!("{{{k2}, \"max_num_seqs\": 1}}"));
    assert!(e.contains("no cudagraph capture size is left") && e.contains("= 3"), "{e}");
    // No rounding under PIECEWISE, no default list under NONE.
    assert_eq!(
        sizes(&format!("{{{k2}, \"cudagraph_mode\": \"PIECEWISE\", \"cudagraph_capture_sizes\": [1, 2, 4, 8]}}"))
            .unwrap(),
        [1, 2, 4, 8]
    );
    assert!(sizes(&format!("{{{k2}, \"cudagraph_mode\": \"NONE\"}}")).unwrap().is_empty());
    // An empty explicit list captures nothing.
    assert!(sizes(&format!("{{{k2}, \"cudagraph_capture_sizes\": []}}")).unwrap().is_empty());
    assert!(err(&format!("{{{k2}, \"cudagraph_capture_sizes\": [0, 3]}}")).contains("must not contain 0"));
}

#[test]
fn speculative_config_spelling() {
    let flat = resolve(
        r#"{"max_model_len": 32, "num_speculative_tokens": 2, "prompt_lookup_min": 2, "prompt_lookup_max": 5}"#,
    )
    .unwrap();
    let nested = resolve(
        r#"{"max_model_len": 32, "speculative_config":
            {"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 2, "prompt_lookup_max": 5}}"#,
    )
    .unwrap();
    assert_eq!(flat, nested);
    assert_eq!((nested.config.method, nested.config.k()), (SpecMethod::Ngram, 2));
    // Both spellings, agreeing: fine; disagreeing: an error naming both.
    let both = r#"{"max_model_len": 32, "num_speculative_tokens": 2,
                   "speculative_config": {"method": "ngram", "num_speculative_tokens": 2}}"#;
    assert_eq!(resolve(both).unwrap().config.k(), 2);
    let e = err(r#"{"max_model_len": 32, "num_speculative_tokens": 3,
                    "speculative_config": {"method": "ngram", "num_speculative_tokens": 2}}"#);
    assert!(
        e.contains("num_speculative_tokens (3) disagrees with speculative_config.num_speculative_tokens (2)"),
        "{e}"
    );
    let e = err(r#"{"max_model_len": 32, "method": "none",
                    "speculative_config": {"method": "ngram", "num_speculative_tokens": 2}}"#);
    assert!(e.contains("disagrees"), "{e}");
    assert!(err(r#"{"max_model_len": 32, "speculative_config": {"num_speculative_tokens": 2}}"#)
        .contains("needs \"method\": \"ngram\""));
    assert!(err(r#"{"max_model_len": 32, "speculative_config": {"method": "eagle", "num_speculative_tokens": 2}}"#)
        .contains("not modelled"));
    assert!(err(r#"{"max_model_len": 32, "speculative_config": {"method": "ngram"}}"#)
        .contains("num_speculative_tokens is required"));
    // vllm/config/speculative.py: neither lookup bound -> 5 and 5; one -> both equal it.
    let c = resolve(r#"{"max_model_len": 32, "speculative_config": {"method": "ngram", "num_speculative_tokens": 1}}"#)
        .unwrap()
        .config;
    assert_eq!((c.prompt_lookup_min, c.prompt_lookup_max), (5, 5));
    let c = resolve(r#"{"max_model_len": 32, "num_speculative_tokens": 1, "prompt_lookup_max": 3}"#).unwrap().config;
    assert_eq!((c.prompt_lookup_min, c.prompt_lookup_max), (3, 3));
    let c = resolve(r#"{"max_model_len": 32, "num_speculative_tokens": 1, "prompt_lookup_min": 2}"#).unwrap().config;
    assert_eq!((c.prompt_lookup_min, c.prompt_lookup_max), (2, 2));
}

#[test]
fn default_num_gpu_blocks_lets_every_request_reach_max_model_len() {
    // No speculation and no prefix caching: a and b grow one token per step in lockstep.
    let json = r#"{"config": {"max_model_len": 40, "block_size": 4, "max_num_seqs": 2, "enable_prefix_caching": false},
        "requests": [{"req_id": "a", "prompt_token_ids": [1, 2, 3], "max_tokens": 100},
                     {"req_id": "b", "prompt_token_ids": [3, 2, 1], "max_tokens": 100},
                     {"req_id": "c", "prompt_token_ids": [3, 1, 2, 3], "max_tokens": 100, "arrival_step": 2}],
        "oracle": {"kind": "synthetic", "seed": 3, "vocab_size": 3, "order": 2}}"#;
    let sc = Scenario::from_json(json).unwrap();
    // At most max_num_seqs = 2 run at once: 2 * cdiv(40, 4) + the null block.
    assert_eq!(sc.config.num_gpu_blocks, 21);
    let t = engine::run(&sc).unwrap().trace;
    assert!(t.steps.iter().all(|s| s.preempted_req_ids.is_empty()), "no preemption with the default pool");
    for r in ["a", "b", "c"] {
        assert_eq!(t.requests.iter().find(|q| q.req_id == r).unwrap().prompt_token_ids.len() + t.outputs[r].len(), 40);
    }
    // One block fewer and the same run must preempt: the default is not oversized.
    let mut tight = sc.clone();
    tight.config.num_gpu_blocks = 20;
    let t = engine::run(&tight).unwrap().trace;
    assert!(t.steps.iter().any(|s| !s.preempted_req_ids.is_empty()));
    // Above the simulator's pool limit the default is refused with a pointer to the field.
    let big = input::ConfigInput { max_model_len: Some(65536), block_size: Some(1), ..Default::default() };
    assert_eq!(big.resolve(Some(1)).unwrap().num_gpu_blocks, 65537);
    let e = big.resolve(Some(64)).unwrap_err().to_string();
    assert!(e.contains("give num_gpu_blocks"), "{e}");
}

#[test]
fn show_names_a_defaulted_num_gpu_blocks() {
    let dir = tempdir("show");
    let sc = dir.join("minimal.json");
    std::fs::write(&sc, with_config(r#"{"max_model_len": 32}"#)).unwrap();
    let out = dir.join("minimal.trace.json");
    let (code, _, e) = cli(&["sim", sc.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{e}");
    let (code, text, e) = cli(&["show", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{e}");
    assert!(text.contains("num_gpu_blocks 3 = the default"), "{text}");
    assert!(text.contains("capture sizes [1, 2, 4, 8, 16,"), "the effective list: {text}");
    // The golden trace gives 210 blocks explicitly (the default would be 3).
    let (_, text, _) = cli(&["show", root().join("traces/vllm_ngram_13step.json").to_str().unwrap()]);
    assert!(!text.contains("= the default"), "{text}");
}

#[test]
fn nano_vllm_defaults_are_nano_vllms() {
    let sc = Scenario::from_json(
        r#"{"config": {"profile": "nano-vllm", "max_model_len": 4096},
            "requests": [{"req_id": "0", "prompt_token_ids": [1, 2, 3]}],
            "oracle": {"kind": "synthetic", "seed": 1, "vocab_size": 5, "order": 2}}"#,
    )
    .unwrap();
    let c = &sc.config;
    // nanovllm/config.py and sampling_params.py.
    assert_eq!((c.block_size, c.max_num_seqs, c.max_num_batched_tokens), (256, 512, 16384));
    assert_eq!((c.method, c.k()), (SpecMethod::None, 0));
    assert!(!c.enable_chunked_prefill);
    assert_eq!((c.cudagraph_mode, c.cudagraph_capture_sizes.len()), (CudagraphModeConfig::None, 0));
    assert_eq!(sc.requests[0].max_tokens, 64);
    assert_eq!(engine::run(&sc).unwrap().trace.outputs["0"].len(), 64);
    let e = Scenario::from_json(
        r#"{"config": {"profile": "nano-vllm", "max_model_len": 4096, "num_speculative_tokens": 2},
            "requests": [], "oracle": {"kind": "synthetic", "seed": 1, "vocab_size": 5, "order": 2}}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no speculative decoding"), "{e}");
}

#[test]
fn max_model_len_is_required_and_says_why() {
    assert!(err("{}").contains("max_model_len is required"));
}

/// Committed scenarios hold complete configs: reading them with defaults changes nothing,
/// so their traces do not change either.
#[test]
fn committed_scenarios_resolve_to_themselves() {
    let mut n = 0;
    for dir in ["scenarios", "conformance/vllm/scenarios"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let strict: Scenario = serde_json::from_str(&text).unwrap();
            let resolved = Scenario::from_json(&text).unwrap();
            assert_eq!(strict, resolved, "{}", p.display());
            n += 1;
        }
    }
    assert!(n >= 6, "{n} scenarios");
}

/// Every committed trace holds an effective config, and resolving an effective config
/// again is the identity (filtering and rounding are idempotent); the oracle-kind enum
/// re-encodes every committed trace to the same bytes, JSON and bincode.
#[test]
fn committed_traces_are_fixed_points_and_reencode_byte_for_byte() {
    let mut files: Vec<_> = std::fs::read_dir(root().join("traces/conformance/vllm-0.12.0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain(["traces/vllm_ngram_13step.json", "traces/nano_vllm_basic.json"].map(|p| root().join(p)))
        .collect();
    files.sort();
    assert!(files.len() > 300);
    for p in &files {
        let bytes = std::fs::read(p).unwrap();
        let t = trace::from_bytes(&bytes).unwrap();
        let again =
            if bytes.starts_with(trace::BIN_MAGIC) { trace::to_bincode(&t) } else { trace::to_json(&t).into_bytes() };
        assert!(again == bytes, "{} re-encodes differently", p.display());
        let sc = t.scenario();
        let text =
            serde_json::to_string(&json!({"config": sc.config, "requests": sc.requests, "oracle": sc.oracle})).unwrap();
        assert_eq!(Scenario::from_json(&text).unwrap(), sc, "{}", p.display());
    }
}

#[test]
fn unknown_oracle_kinds_are_rejected_not_synthetic() {
    let json = with_config(r#"{"max_model_len": 32}"#).replace("\"continuation\"", "\"syntheticc\"");
    let e = Scenario::from_json(&json).unwrap_err();
    assert!(matches!(e, ConfigError::Json(_)), "{e:?}");
    assert!(e.to_string().contains("unknown oracle kind \"syntheticc\""), "{e}");
    // Traces too (the recorded oracle is part of the header).
    let golden = std::fs::read_to_string(root().join("traces/vllm_ngram_13step.json")).unwrap();
    let bad = golden.replacen("\"kind\":\"continuation\"", "\"kind\":\"magic\"", 1);
    assert_ne!(bad, golden);
    assert!(trace::from_json(&bad).unwrap_err().to_string().contains("unknown oracle kind \"magic\""));
    // The JSON spelling is unchanged.
    assert_eq!(serde_json::to_string(&OracleKind::Synthetic).unwrap(), "\"synthetic\"");
    assert_eq!(OracleKind::NAMES.map(|n| OracleKind::parse(n).unwrap().as_str()), OracleKind::NAMES);
}

#[test]
fn config_default_is_vllms_offline_default_for_qwen3() {
    let c = Config::default();
    assert_eq!(c.max_model_len, 40960);
    assert_eq!((c.block_size, c.max_num_seqs, c.max_num_batched_tokens), (16, 1024, 16384));
    assert_eq!(c.num_gpu_blocks, 1024 * 2560 + 1);
    assert_eq!(c.cudagraph_capture_sizes, vllm_list_512());
    assert_eq!((c.num_attention_heads, c.num_kv_heads, c.num_sms, c.disable_cascade_attn), (16, 8, 132, false));
    c.validate().unwrap();
    // The same as a scenario that gives only max_model_len, for a full batch of requests.
    let resolved = input::ConfigInput { max_model_len: Some(40960), ..Default::default() }.resolve(Some(1024)).unwrap();
    assert_eq!(resolved, c);
}

// ---------------------------------------------------------------- overflow (item 6)

/// The issue's reproducer: k = u32::MAX made `1 + k` wrap (debug: panic; release:
/// accepted). Under FULL_AND_PIECEWISE vLLM itself refuses (no capture size can be a
/// multiple of 2^32); under PIECEWISE it is legal and simply never drafts.
#[test]
fn k_u32_max_is_refused_or_runs_never_wraps() {
    let e = err(r#"{"max_model_len": 32, "num_speculative_tokens": 4294967295}"#);
    assert!(e.contains("1 + num_speculative_tokens = 4294967296"), "{e}");
    // A trace config (strict, already "effective") with k = u32::MAX and a FULL list.
    let mut sc = resolve(r#"{"max_model_len": 32, "num_speculative_tokens": 2}"#).unwrap();
    sc.config.num_speculative_tokens = u32::MAX;
    sc.config.cudagraph_capture_sizes = vec![3];
    assert!(sc.validate().unwrap_err().to_string().contains("4294967296"));
    let sc = resolve(r#"{"max_model_len": 32, "num_speculative_tokens": 4294967295, "cudagraph_mode": "PIECEWISE"}"#)
        .unwrap();
    let t = engine::run(&sc).unwrap().trace;
    assert!(t.steps.iter().all(|s| s.scheduled_spec_decode_tokens.is_empty()));
    assert_eq!(t.outputs["0"].len(), 16);
}

const U32_EXTREMES: [u64; 6] = [0, 1, 1 << 31, u32::MAX as u64 - 1, u32::MAX as u64, 3];
const U64_EXTREMES: [u64; 6] = [0, 1, 1 << 31, u32::MAX as u64, u64::MAX - 1, u64::MAX];

/// The numeric fields of a scenario, as JSON pointers into [`base_scenario`], with
/// whether they are u64.
const FIELDS: [(&str, bool); 24] = [
    ("/config/block_size", false),
    ("/config/num_gpu_blocks", false),
    ("/config/max_num_seqs", false),
    ("/config/max_num_batched_tokens", false),
    ("/config/max_model_len", false),
    ("/config/num_speculative_tokens", false),
    ("/config/prompt_lookup_min", false),
    ("/config/prompt_lookup_max", false),
    ("/config/cudagraph_capture_sizes/0", false),
    ("/config/cudagraph_capture_sizes/3", false),
    ("/config/num_attention_heads", false),
    ("/config/num_kv_heads", false),
    ("/config/num_sms", false),
    ("/requests/0/prompt_token_ids/0", false),
    ("/requests/0/max_tokens", false),
    ("/requests/0/min_tokens", false),
    ("/requests/0/eos_token_id", false),
    ("/requests/0/stop_token_ids/0", false),
    ("/requests/0/arrival_step", true),
    ("/requests/1/arrival_step", true),
    ("/requests/1/max_tokens", false),
    ("/oracle/seed", true),
    ("/oracle/vocab_size", false),
    ("/oracle/order", false),
];

/// A small valid scenario with every numeric field present.
fn base_scenario(spec_nested: bool, mode: &str) -> Value {
    let mut config = json!({"profile": "vllm-v1", "block_size": 4, "num_gpu_blocks": 64, "max_num_seqs": 4,
        "max_num_batched_tokens": 64, "max_model_len": 48, "num_speculative_tokens": 2,
        "prompt_lookup_min": 1, "prompt_lookup_max": 3, "cudagraph_capture_sizes": [1, 2, 4, 8],
        "cudagraph_mode": mode, "num_attention_heads": 16, "num_kv_heads": 8, "num_sms": 132});
    if spec_nested {
        let c = config.as_object_mut().unwrap();
        let mut spec = serde_json::Map::new();
        spec.insert("method".into(), json!("ngram"));
        for f in ["num_speculative_tokens", "prompt_lookup_min", "prompt_lookup_max"] {
            spec.insert(f.into(), c.remove(f).unwrap());
        }
        c.insert("speculative_config".into(), Value::Object(spec));
    }
    json!({"config": config,
        "requests": [{"req_id": "a", "prompt_token_ids": [1, 2, 3, 1, 2], "max_tokens": 20, "arrival_step": 1,
                      "min_tokens": 0, "eos_token_id": 2, "stop_token_ids": [3]},
                     {"req_id": "b", "prompt_token_ids": [2, 2, 1], "max_tokens": 12, "arrival_step": 2}],
        "oracle": {"kind": "synthetic", "seed": 7, "vocab_size": 4, "order": 2}})
}

/// Sets `ptr` (moving speculative fields into `speculative_config` when nested).
fn set(v: &mut Value, ptr: &str, x: u64) {
    let nested = v.pointer("/config/speculative_config").is_some();
    let ptr = match ptr.strip_prefix("/config/") {
        Some(f) if nested && (f.starts_with("num_spec") || f.starts_with("prompt_lookup")) => {
            format!("/config/speculative_config/{f}")
        }
        _ => ptr.to_string(),
    };
    *v.pointer_mut(&ptr).unwrap_or_else(|| panic!("no {ptr}")) = json!(x);
}

/// Runs a scenario whose resolved sizes keep a run cheap; anything else is only resolved
/// and validated. Either way: `Ok` or a typed error, never a panic (overflow checks are
/// on in the test profile, so a wrapping `+`/`*` panics here).
fn resolve_and_maybe_run(v: &Value) -> Outcome {
    let Ok(sc) = Scenario::from_json(&v.to_string()) else { return Outcome::Refused };
    let c = &sc.config;
    let cheap = c.max_model_len <= 256
        && c.max_num_seqs <= 64
        && c.max_num_batched_tokens <= 4096
        && c.num_gpu_blocks <= 4096
        && c.max_capture_size() <= 4096
        && sc.requests.iter().all(|r| r.arrival_step <= 64);
    match (cheap, cheap && engine::run(&sc).is_ok()) {
        (false, _) => Outcome::Resolved,
        (true, true) => Outcome::Ran,
        (true, false) => Outcome::Stopped,
    }
}

/// What became of one scenario in [`resolve_and_maybe_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// A clean `ConfigError`.
    Refused,
    /// Valid, too large to run here.
    Resolved,
    /// Ran to completion.
    Ran,
    /// Ran and stopped with a clean `SimError`.
    Stopped,
}

/// Each numeric field alone at each extreme value, both speculative spellings, every
/// graph mode (2 x 3 x 24 x 6 = 864 scenarios).
#[test]
fn every_field_alone_at_its_extremes_never_panics() {
    let mut outcomes = std::collections::BTreeMap::new();
    for nested in [false, true] {
        for mode in ["FULL_AND_PIECEWISE", "PIECEWISE", "NONE"] {
            let base = base_scenario(nested, mode);
            assert!(Scenario::from_json(&base.to_string()).is_ok(), "the base scenario is valid");
            for (ptr, wide) in FIELDS {
                for x in if wide { U64_EXTREMES } else { U32_EXTREMES } {
                    let mut v = base.clone();
                    set(&mut v, ptr, x);
                    *outcomes.entry(resolve_and_maybe_run(&v)).or_insert(0) += 1;
                }
            }
        }
    }
    assert_eq!(outcomes.values().sum::<u32>(), 864);
    // Both sides are exercised: many extremes are refused, most others run.
    let n = |o| outcomes.get(&o).copied().unwrap_or(0);
    assert!(n(Outcome::Refused) >= 200 && n(Outcome::Ran) >= 400, "{outcomes:?}");
}

/// The cascade-attention cost model multiplies head counts, request counts and prefix
/// tiles: with the simulator's size limits (max_num_seqs x max_model_len <= 2^26) the
/// product stays below 2^60 even for head counts of u32::MAX.
#[test]
fn cascade_cost_model_takes_extreme_head_counts() {
    use specreplay_sim::cudagraph::cascade_prefix_len;
    let n = 1 << 16; // 2^16 requests x 1024 tokens = the 2^26 table limit
    for (hq, hkv) in [(u32::MAX, 1), (u32::MAX, u32::MAX), (1 << 31, 1), (u32::MAX - 1, 2)] {
        for sms in [1, u32::MAX] {
            let c = Config {
                max_model_len: 1024,
                max_num_seqs: n as u32,
                max_num_batched_tokens: n as u32,
                num_attention_heads: hq,
                num_kv_heads: hkv,
                num_sms: sms,
                ..Config::default()
            };
            c.validate().unwrap();
            let len = cascade_prefix_len(&c, 64, &vec![1000; n], &vec![1; n]);
            assert!(len == 0 || len == 992, "{hq}/{hkv}/{sms}: {len}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any combination of extreme values (and left-out fields, resolved to defaults):
    /// resolution, validation and — when cheap — the run give `Ok` or a clean error.
    #[test]
    fn extreme_combinations_never_panic(
        picks in prop::collection::vec((0usize..FIELDS.len(), 0usize..6), 1..8),
        omit in prop::collection::vec(prop::sample::select(vec![
            "block_size", "num_gpu_blocks", "max_num_seqs", "max_num_batched_tokens",
            "cudagraph_capture_sizes", "num_speculative_tokens", "prompt_lookup_min", "prompt_lookup_max",
        ]), 0..4),
        nested in any::<bool>(),
        mode in prop::sample::select(vec!["FULL_AND_PIECEWISE", "PIECEWISE", "NONE"]),
    ) {
        let mut v = base_scenario(nested, mode);
        for (f, i) in picks {
            let (ptr, wide) = FIELDS[f];
            set(&mut v, ptr, if wide { U64_EXTREMES[i] } else { U32_EXTREMES[i] });
        }
        for f in omit {
            let c = v.pointer_mut("/config").unwrap().as_object_mut().unwrap();
            c.remove(f);
            if let Some(s) = c.get_mut("speculative_config").and_then(Value::as_object_mut) {
                s.remove(f);
            }
        }
        resolve_and_maybe_run(&v);
    }
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("specreplay-config-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
