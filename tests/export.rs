//! `specreplay export --format perfetto`: Chrome trace-event JSON. Every event carries
//! the keys the Trace Event Format requires (name, ph, ts, pid, tid; dur for complete
//! `X` events), every thread used is named by an `M` event, one engine slice per step
//! (idle runs as one), one row slice per (step, row), and the bytes are deterministic.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use specreplay_sim::trace;

mod common;
use common::{cli, root};

fn export(rel: &str) -> (Value, String) {
    let dir = std::env::temp_dir().join(format!("specreplay-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{}.json", rel.replace('/', "_")));
    let (code, _, err) =
        cli(&["export", "--format", "perfetto", root().join(rel).to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    (serde_json::from_str(&text).unwrap(), text)
}

/// Validates one export against the trace it came from.
fn validate(rel: &str) {
    let t = trace::read(&root().join(rel)).unwrap();
    let (doc, text) = export(rel);
    let events = doc["traceEvents"].as_array().expect("traceEvents array");
    let mut named: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut used: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut step_slices = 0usize;
    let mut row_slices: BTreeMap<u64, usize> = BTreeMap::new();
    for e in events {
        for key in ["name", "ph", "ts", "pid", "tid"] {
            assert!(e.get(key).is_some(), "{rel}: event without {key}: {e}");
        }
        let ph = e["ph"].as_str().unwrap();
        assert!(["X", "M", "i", "C"].contains(&ph), "{e}");
        assert!(e["ts"].as_u64().is_some() && e["pid"].as_u64().is_some() && e["tid"].as_u64().is_some(), "{e}");
        let key = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        match ph {
            "M" if e["name"] == "thread_name" => {
                assert!(e["args"]["name"].is_string(), "{e}");
                named.insert(key);
            }
            "M" => {}
            _ => {
                assert!(named.contains(&key), "{rel}: thread {key:?} used before an M event names it: {e}");
                used.insert(key);
            }
        }
        if ph == "X" {
            assert!(e["dur"].as_u64().is_some_and(|d| d > 0), "X without dur: {e}");
            if key == (1, 1) {
                step_slices += 1;
            }
            if key.0 == 2 {
                *row_slices.entry(e["args"]["row"].as_u64().unwrap()).or_default() += 1;
            }
        }
    }
    // One engine slice per busy step (idle runs coalesced; these traces have none).
    let busy = t.steps.iter().filter(|s| !s.idle).count();
    assert_eq!(step_slices, busy, "{rel}");
    let mut want: BTreeMap<u64, usize> = BTreeMap::new();
    for s in t.steps.iter().filter(|s| !s.idle) {
        for row in 0..s.batch_req_ids.len() {
            *want.entry(row as u64).or_default() += 1;
        }
    }
    assert_eq!(row_slices, want, "{rel}: one row slice per scheduled (step, row)");
    assert!(used.contains(&(3, 1)), "request tracks used");
    // Deterministic bytes.
    assert_eq!(export(rel).1, text);
}

#[test]
fn golden_export_is_valid_trace_event_json() {
    validate("traces/vllm_ngram_13step.json");
    let (doc, _) = export("traces/vllm_ngram_13step.json");
    let ev = doc["traceEvents"].as_array().unwrap();
    let step3 = ev.iter().find(|e| e["name"] == "step 3").unwrap();
    assert_eq!((step3["ts"].as_u64(), step3["args"]["cudagraph_mode"].as_str()), (Some(2000), Some("FULL")));
    // Hazards from `check` appear on their track.
    assert!(ev.iter().any(|e| e["name"] == "drafter-gate-suppressed" && e["ts"] == 12000 && e["tid"] == 2), "{doc}");
}

#[test]
fn corpus_exports_are_valid_trace_event_json() {
    validate("traces/conformance/vllm-0.12.0/s3_0202.bin");
    validate("traces/nano_vllm_basic.json");
}

#[test]
fn idle_runs_are_one_slice_and_bad_format_is_refused() {
    let dir = std::env::temp_dir().join(format!("specreplay-export-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sc = dir.join("late.json");
    std::fs::write(
        &sc,
        r#"{"config": {"max_model_len": 32},
            "requests": [{"req_id": "a", "prompt_token_ids": [1, 2], "max_tokens": 2, "arrival_step": 4}],
            "oracle": {"kind": "synthetic", "seed": 1, "vocab_size": 3, "order": 1}}"#,
    )
    .unwrap();
    let tr = dir.join("late.trace.json");
    assert_eq!(cli(&["sim", sc.to_str().unwrap(), "-o", tr.to_str().unwrap()]).0, 0);
    let (code, out, _) = cli(&["export", "--format", "perfetto", tr.to_str().unwrap(), "-o", "-"]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    let idle: Vec<&Value> = doc["traceEvents"].as_array().unwrap().iter().filter(|e| e["name"] == "idle").collect();
    assert_eq!(idle.len(), 1);
    assert_eq!((idle[0]["ts"].as_u64(), idle[0]["dur"].as_u64()), (Some(0), Some(3000)));
    let (code, _, err) = cli(&["export", "--format", "svg", tr.to_str().unwrap(), "-o", "-"]);
    assert_eq!(code, 2, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
