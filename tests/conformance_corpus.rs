//! The vLLM 0.12.0 conformance corpus: traces recorded by vLLM's own engine code on CPU
//! (`conformance/vllm/driver.py`), replayed by the simulator with no Python installed.
//! Every trace must be identical field by field, and the corpus must keep covering every
//! behaviour the conformance issue lists (coverage marks below).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use specreplay_sim::fuzzing::{behaviours, BEHAVIOURS};
use specreplay_sim::{diff, trace, Trace};

mod common;

fn corpus() -> Vec<(PathBuf, Trace)> {
    common::corpus("traces/conformance/vllm-0.12.0")
}

#[test]
fn every_vllm_recording_replays_identically() {
    let traces = corpus();
    assert!(traces.len() >= 300, "corpus has {} traces", traces.len());
    common::assert_corpus_replays(&traces, "vllm 0.12.0");
}

#[test]
fn vllm_recording_of_the_golden_run_matches_the_committed_golden() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let golden = trace::read(&root.join("traces/vllm_ngram_13step.json")).unwrap();
    let vllm = trace::read(&root.join("traces/conformance/vllm-0.12.0/vllm_ngram_13step.json")).unwrap();
    assert_eq!(vllm.recorded_by, "vllm 0.12.0");
    let rep = diff::compare(&golden, &vllm);
    assert!(rep.identical(), "{:?}", rep.first);
}

/// Counts of each behaviour the corpus exercises: the fuzz domain's marks
/// (`fuzzing::BEHAVIOURS`, traces reaching each) and the corpus's own (steps or traces).
fn coverage(traces: &[(PathBuf, Trace)]) -> BTreeMap<&'static str, usize> {
    let mut c: BTreeMap<&'static str, usize> = BEHAVIOURS.iter().map(|&b| (b, 0)).collect();
    for (_, t) in traces {
        for b in behaviours(t) {
            *c.get_mut(b).unwrap() += 1;
        }
    }
    let mut mark = |k: &'static str, hit: bool| *c.entry(k).or_default() += usize::from(hit);
    for (_, t) in traces {
        mark("prefix_caching_off", !t.config.enable_prefix_caching);
        mark(
            "mode_piecewise_config",
            t.config.cudagraph_mode == specreplay_sim::config::CudagraphModeConfig::Piecewise,
        );
        mark("mode_none_config", t.config.cudagraph_mode == specreplay_sim::config::CudagraphModeConfig::None);
        mark("method_none", t.config.method == specreplay_sim::config::SpecMethod::None);
        let mut prev_rows: BTreeMap<String, usize> = BTreeMap::new();
        let mut prev_batch: BTreeSet<String> = BTreeSet::new();
        for s in t.steps.iter().filter(|s| !s.idle) {
            mark("cascade_without_full_graph", s.cascade_prefix_len > 0 && s.cudagraph_mode == "PIECEWISE");
            mark("finished", !s.finished_req_ids.is_empty());
            mark("several_finish_in_one_step", s.finished_req_ids.len() >= 2);
            for (r, &n) in &s.num_computed_tokens {
                if !prev_batch.contains(r) && n > 0 && s.scheduled_spec_decode_tokens.contains_key(r) {
                    mark("reentering_request_with_drafts", true);
                }
            }
            for (row, r) in s.batch_req_ids.iter().enumerate() {
                if prev_rows.get(r).is_some_and(|&p| p != row) {
                    mark("row_moved_by_condense_or_reentry", true);
                }
            }
            for (r, d) in &s.scheduled_spec_decode_tokens {
                let row = s.batch_req_ids.iter().position(|x| x == r).unwrap();
                let end = s.attn.cu_seqlens_q[row + 1] as usize;
                let fed: Vec<i64> = s.input_ids[end - d.len()..end].to_vec();
                let sched: Vec<i64> = d.iter().map(|&x| i64::from(x)).collect();
                mark("verified_drafts_differ_from_scheduled", fed != sched);
            }
            for (r, row) in &s.token_ids_cpu {
                mark(
                    "stale_token_row_tail",
                    row.len()
                        > (s.num_computed_tokens.get(r).copied().unwrap_or(0)
                            + s.num_scheduled_tokens.get(r).copied().unwrap_or(0)) as usize
                            + 1,
                );
            }
            // The clamp keeps the highest scheduled position at max_model_len - 2 (the last
            // token is sampled, never fed); drafts beyond it are dropped.
            let top = i64::from(t.config.max_model_len) - 2;
            mark(
                "positions_reach_the_clamp",
                s.positions.iter().take(s.total_num_scheduled_tokens as usize).any(|&p| p == top),
            );
            prev_rows = s.batch_req_ids.iter().enumerate().map(|(i, r)| (r.clone(), i)).collect();
            prev_batch = s.batch_req_ids.iter().cloned().collect();
        }
    }
    c
}

#[test]
fn corpus_covers_every_behaviour() {
    let c = coverage(&corpus());
    let missing: Vec<_> = c.iter().filter(|(_, &n)| n == 0).map(|(k, _)| *k).collect();
    assert!(missing.is_empty(), "corpus never exercises: {missing:?}\nall counts: {c:#?}");
    println!("{c:#?}");
}
