//! `specreplay show` on long traces: `--step A..B`, `--request ID`, `--hide-idle`, and the
//! summary's idle-step, preemption and KV-utilisation counts (src/show.rs).

mod common;
use common::{cli, root};

fn path(rel: &str) -> String {
    root().join(rel).to_str().unwrap().to_string()
}

#[test]
fn step_range_prints_only_those_steps_and_says_so() {
    let g = path("traces/vllm_ngram_13step.json");
    let (code, out, _) = cli(&["show", &g, "--step", "12..13"]);
    assert_eq!(code, 0);
    assert!(out.contains("--- 12. ") && out.contains("--- 13. ") && !out.contains("--- 11. "), "{out}");
    assert!(out.contains("shown: 2 of 13 steps (steps 12..13); the summary covers the whole trace"), "{out}");
    assert!(out.contains("total steps: 13"), "{out}");
    let (_, out, _) = cli(&["show", &g, "--step", "12.."]);
    assert!(out.contains("--- 13. ") && !out.contains("--- 11. "), "{out}");
    let (_, out, _) = cli(&["show", &g, "--step", "..1"]);
    assert!(out.contains("--- 1. ") && !out.contains("--- 2. "), "{out}");
    // Unfiltered: no "shown" line.
    let (_, out, _) = cli(&["show", &g]);
    assert!(!out.contains("shown:"), "{out}");
    for bad in ["5..2", "x", "1...3", ""] {
        let (code, _, err) = cli(&["show", &g, "--step", bad]);
        assert_eq!(code, 2, "{bad}");
        assert!(err.starts_with("specreplay: error: --step"), "{bad}: {err}");
    }
}

#[test]
fn request_filter_narrows_steps_and_per_request_fields() {
    let t = path("traces/conformance/vllm-0.12.0/s3_0202.bin");
    let (code, out, _) = cli(&["show", &t, "--request", "r9", "--step", "85"]);
    assert_eq!(code, 0);
    assert!(out.contains("scheduled_spec_decode_tokens: {'r9': [117]}"), "{out}");
    assert!(!out.contains("'r8'") && !out.contains("output['r8']"), "{out}");
    assert!(out.contains("batch rows: [\"r8\", \"r9\", \"r10\"]"), "{out}");
    // r9 takes part in fewer steps than the trace has.
    let (_, out, _) = cli(&["show", &t, "--request", "r9"]);
    let shown: u64 = out.split("shown: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(shown > 0 && shown < 154, "{shown}");
    assert_eq!(out.matches("\n--- ").count() as u64 + u64::from(out.starts_with("--- ")), shown);
    let (code, _, err) = cli(&["show", &t, "--request", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("--request: no request \"nope\""), "{err}");
}

#[test]
fn hide_idle_and_idle_preemption_kv_counts() {
    let dir = std::env::temp_dir().join(format!("specreplay-show-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sc = dir.join("late.json");
    std::fs::write(
        &sc,
        r#"{"config": {"max_model_len": 32, "num_speculative_tokens": 2, "prompt_lookup_min": 2},
            "requests": [{"req_id": "a", "prompt_token_ids": [1, 2, 1, 2], "max_tokens": 4, "arrival_step": 5}],
            "oracle": {"kind": "synthetic", "seed": 1, "vocab_size": 3, "order": 1}}"#,
    )
    .unwrap();
    let tr = dir.join("late.trace.json");
    let (code, _, err) = cli(&["sim", sc.to_str().unwrap(), "-o", tr.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = cli(&["show", tr.to_str().unwrap()]);
    assert!(out.contains("--- 1-4. idle, 4 steps"), "{out}");
    assert!(out.contains("idle steps: 4"), "{out}");
    let (_, out, _) = cli(&["show", tr.to_str().unwrap(), "--hide-idle"]);
    assert!(!out.contains("idle, 4 steps") && out.contains("--- 5. "), "{out}");
    assert!(out.contains("idle steps: 4") && out.contains("idle hidden"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn preemptions_and_kv_utilisation_match_the_trace() {
    // A corpus trace with preemptions: the summary's count is the number of events.
    let traces = common::corpus("traces/conformance/vllm-0.12.0");
    let (p, t) = traces.iter().find(|(_, t)| t.steps.iter().any(|s| !s.preempted_req_ids.is_empty())).unwrap();
    let events: usize = t.steps.iter().map(|s| s.preempted_req_ids.len()).sum();
    let min_free = t.steps.iter().filter(|s| !s.idle).map(|s| s.num_free_blocks).min().unwrap();
    let usable = t.config.num_gpu_blocks - 1;
    let (_, out, _) = cli(&["show", p.to_str().unwrap()]);
    assert!(out.contains(&format!("preemptions: {events}\n")), "{}: {out}", p.display());
    assert!(out.contains(&format!("KV blocks in use: peak {} of {usable} ", usable - min_free)), "{out}");
}
