//! The nano-vllm conformance corpus: traces recorded by nano-vllm 2f21442's own engine
//! code on CPU (`conformance/nano/driver.py`), replayed by the simulator with no Python
//! installed. Every trace must be identical field by field, and the corpus must keep
//! covering the behaviours of nano-vllm's bookkeeping (coverage marks below, read from
//! the recordings by `specreplay_sim::nano::coverage::marks`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use specreplay_sim::{nano, Trace};

mod common;

fn corpus() -> Vec<(PathBuf, Trace)> {
    common::corpus("traces/conformance/nano-vllm-2f21442")
}

#[test]
fn every_nano_vllm_recording_replays_identically() {
    let traces = corpus();
    assert!(traces.len() >= 100, "corpus has {} traces", traces.len());
    common::assert_corpus_replays(&traces, "nano-vllm 2f21442");
}

/// Every behaviour the nano-vllm model has must stay exercised by the recordings.
#[test]
fn nano_corpus_covers_every_behaviour() {
    let mut total: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (_, t) in &corpus() {
        for (k, v) in nano::coverage::marks(t) {
            *total.entry(k).or_default() += v;
        }
    }
    let expected = [
        "prefill_step",
        "decode_step",
        "idle_step",
        "multi_sequence_prefill",
        "prefix_hit",
        "fully_cached_prompt",
        "stale_hash_hit",
        "stale_hit_one_token",
        "preemption",
        "reprefill_after_preemption",
        "may_append_new_block",
        "decode_fills_block",
        "eos_finish",
        "max_tokens_finish",
        "block_size_over_256",
    ];
    let missing: Vec<_> = expected.iter().filter(|k| total.get(*k).copied().unwrap_or(0) == 0).collect();
    assert!(missing.is_empty(), "corpus never exercises: {missing:?}\nall counts: {total:#?}");
    assert_eq!(total.len(), expected.len(), "a mark without an expectation: {total:#?}");
    println!("{total:#?}");
}

/// The stale-hash reading of the marks is itself checked on the simulator's counters:
/// a stale hit seen in a trace is one the block manager counted, and the reverse.
#[test]
fn trace_marks_agree_with_the_block_manager_counters() {
    for (path, t) in corpus().iter().filter(|(_, t)| t.config.block_size == 256) {
        let (_, stats) = nano::run_with_stats(&t.scenario()).unwrap();
        let m = nano::coverage::marks(t);
        assert_eq!(m["stale_hash_hit"] > 0, stats.blocks.stale_hash_hits > 0, "{}", path.display());
        assert_eq!(m["preemption"] > 0, stats.preemptions > 0, "{}", path.display());
        assert_eq!(m["fully_cached_prompt"], stats.fully_cached_prefills, "{}", path.display());
    }
}
