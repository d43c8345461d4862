//! Bad input: every malformed trace or invalid scenario gives one readable error line
//! and exit code 2, never a panic; a failed write leaves no partial file behind.

use std::path::PathBuf;

mod common;
use common::{cli as run, root};

fn tmp(name: &str, body: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("specreplay-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn golden_text() -> String {
    std::fs::read_to_string(root().join("traces/vllm_ngram_13step.json")).unwrap()
}

fn scenario_text() -> String {
    std::fs::read_to_string(root().join("scenarios/vllm_ngram_13step.json")).unwrap()
}

/// Replaces the first occurrence of `from` in the golden scenario.
fn scenario_with(from: &str, to: &str) -> String {
    let s = scenario_text();
    assert!(s.contains(from), "fixture lacks {from}");
    s.replacen(from, to, 1)
}

/// (name, subcommand, file body) → the single error line, snapshotted.
#[test]
fn bad_inputs_give_one_line_and_exit_2() {
    let g = golden_text();
    let cases: Vec<(&str, &str, String)> = vec![
        ("truncated_trace", "replay", g[..g.len() / 2].to_string()),
        ("not_json", "replay", "this is not a trace".into()),
        ("wrong_format", "replay", g.replacen("\"specreplay-trace\"", "\"other\"", 1)),
        ("unknown_version", "replay", g.replacen("\"version\": 1", "\"version\": 7", 1)),
        ("wrong_field_type", "replay", g.replacen("\"block_size\":16", "\"block_size\":\"16\"", 1)),
        ("empty_file", "show", String::new()),
        ("k0_with_ngram", "sim", scenario_with("\"num_speculative_tokens\": 2", "\"num_speculative_tokens\": 0")),
        ("lookup_min_gt_max", "sim", scenario_with("\"prompt_lookup_min\": 2", "\"prompt_lookup_min\": 6")),
        ("block_size_0", "sim", scenario_with("\"block_size\": 16", "\"block_size\": 0")),
        ("prompt_too_long", "sim", scenario_with("\"max_model_len\": 32", "\"max_model_len\": 11")),
        (
            "duplicate_req_id",
            "sim",
            scenario_with(
                "\"arrival_step\": 1}]",
                "\"arrival_step\": 1}, {\"req_id\": \"0\", \"prompt_token_ids\": [1, 2], \"max_tokens\": 3}]",
            ),
        ),
        (
            "capture_none_after_rounding",
            "sim",
            scenario_with("\"cudagraph_capture_sizes\": [3]", "\"cudagraph_capture_sizes\": [1, 2]"),
        ),
        ("unknown_field", "sim", scenario_with("\"max_num_seqs\": 4", "\"max_num_seqs\": 4, \"bogus\": 1")),
        ("missing_continuation", "sim", scenario_with("\"tokens\": {\"0\"", "\"tokens\": {\"9\"")),
        ("unknown_oracle", "sim", scenario_with("\"continuation\"", "\"magic\"")),
        ("too_large_for_memory", "sim", scenario_with("\"max_num_seqs\": 4", "\"max_num_seqs\": 4000000000")),
        ("oracle_exhausted", "sim", scenario_with("[220, 16, 11, 220, 16, 16,", "[220, 16,")),
    ];
    let mut report = String::new();
    for (name, cmd, body) in &cases {
        let p = tmp(&format!("{name}.json"), body.as_bytes());
        let out = tmp("out.json", b"previous contents");
        let args: Vec<&str> = if *cmd == "sim" {
            vec![cmd, p.to_str().unwrap(), "-o", out.to_str().unwrap()]
        } else {
            vec![cmd, p.to_str().unwrap()]
        };
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, 2, "{name}: expected exit 2, got {code}\nstdout: {stdout}\nstderr: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: expected one error line, got:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert_eq!(std::fs::read(&out).unwrap(), b"previous contents", "{name}: output clobbered");
        let line = stderr.trim().replace(p.to_str().unwrap(), "<FILE>");
        report += &format!("{name}: {line}\n");
    }
    insta::assert_snapshot!("bad_input_errors", report);
}

#[test]
fn missing_file_is_a_clean_error() {
    let (code, _, stderr) = run(&["replay", "/nonexistent/trace.json"]);
    assert_eq!(code, 2);
    assert!(stderr.starts_with("specreplay: error: io error: /nonexistent/trace.json"), "{stderr}");
}

#[test]
fn truncated_bincode_is_a_clean_error() {
    let t = specreplay_sim::trace::read(&root().join("traces/vllm_ngram_13step.json")).unwrap();
    let bin = specreplay_sim::trace::to_bincode(&t);
    for cut in [0, 5, 12, 40, bin.len() / 2, bin.len() - 1] {
        let r = specreplay_sim::trace::from_bytes(&bin[..cut]);
        assert!(r.is_err(), "cut at {cut} parsed");
    }
    let mut v = bin.clone();
    v[8] = 9; // version
    assert!(specreplay_sim::trace::from_bytes(&v).unwrap_err().to_string().contains("unsupported trace version 9"));
}

/// vLLM 0.12.0 livelocks on this scenario (docs/vllm-quirks.md §2); the simulator stops
/// with a line that names the cause.
#[test]
fn min_tokens_livelock_is_reported_not_hung() {
    let out = tmp("livelock_out.json", b"");
    let sc = root().join("scenarios/min_tokens_livelock.json");
    let (code, _, stderr) = run(&["sim", sc.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("stalled at step") && stderr.contains("min_tokens = 4"), "{stderr}");
}

/// The same min_tokens state plus a preemption: the request is recomputed in full and
/// vLLM 0.12.0 fails `_bookkeeping_sync`'s assertion (checked with the conformance
/// driver); the simulator reports that, one line, exit 2.
#[test]
fn min_tokens_preempted_request_reports_vllms_assertion() {
    let out = tmp("assert_out.json", b"");
    let sc = root().join("scenarios/min_tokens_preempted_assert.json");
    let (code, _, stderr) = run(&["sim", sc.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("vLLM 0.12.0 would fail an assertion") && stderr.contains("(33 > 32)"), "{stderr}");
}

/// Reports over a trace with absurd (but well-typed) config values stay bounded: `show`
/// sizes its per-position table by the drafts actually scheduled, not by the config.
#[test]
fn show_does_not_trust_configured_sizes() {
    let g = golden_text().replacen("\"num_speculative_tokens\":2", "\"num_speculative_tokens\":4000000000", 1);
    assert!(g.contains("4000000000"));
    let p = tmp("huge_k.json", g.as_bytes());
    let (code, out, err) = run(&["show", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acceptance at token 1: 0.57") && !out.contains("acceptance at token 2"), "{out}");
    let (code, _, err) = run(&["replay", p.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
}
