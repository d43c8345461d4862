//! Replays the committed corpus of the `engine` and `trace_parser` fuzz targets on stable
//! (the builder targets are replayed by `tests/builders.rs`), through the same library
//! functions the targets call, and keeps the engine fuzz domain wide: coverage marks
//! like `tests/conformance_corpus.rs` has for the vLLM corpus.

use std::collections::BTreeMap;
use std::path::PathBuf;

use specreplay_sim::engine;
use specreplay_sim::fuzzing::{
    behaviours, check_invariants, check_scenario, check_scenario_bytes, check_trace_bytes, draw_inputs,
    scenario_from_bytes, BEHAVIOURS,
};

fn files(target: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target);
        if let Ok(rd) = std::fs::read_dir(&dir) {
            v.extend(rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()));
        }
    }
    v.sort();
    v
}

#[test]
fn engine_corpus_replays() {
    let fs = files("engine");
    assert!(fs.len() >= 5, "engine corpus missing");
    for f in fs {
        let data = std::fs::read(&f).unwrap();
        if let Err(e) = check_scenario_bytes(&data) {
            panic!("{}: {e}\nreproduce: cd fuzz && cargo fuzz run -s none engine {}", f.display(), f.display());
        }
    }
}

/// Every committed engine seed is named after the behaviour it was picked for and must
/// still reach it (a decoder change that moves the seeds fails here: refresh them).
#[test]
fn engine_seeds_reach_the_behaviour_they_are_named_after() {
    let seeds = files("engine");
    for name in BEHAVIOURS {
        let Some(f) = seeds.iter().find(|f| f.file_name().is_some_and(|n| n == *name)) else {
            panic!("no seed fuzz/seeds/engine/{name}")
        };
        let sc = scenario_from_bytes(&std::fs::read(f).unwrap()).expect("seeds are not empty");
        let t = engine::run(&sc).unwrap().trace;
        assert!(behaviours(&t).contains(name), "{} no longer reaches {name}", f.display());
    }
}

/// Fraction of draws (in percent) that must reach each behaviour.
const MIN_PERCENT: usize = 5;

/// The fuzz domain, sampled as the fuzzer starts (300 random inputs): every draw runs
/// (`check_scenario`: no stall, invariants, spec = non-spec, deterministic) and every
/// behaviour of `BEHAVIOURS` is reached by at least `MIN_PERCENT`% of the draws.
#[test]
fn fuzz_domain_covers_every_behaviour() {
    let inputs = draw_inputs(0x0f0f, 300);
    let mut counts: BTreeMap<&str, usize> = BEHAVIOURS.iter().map(|&b| (b, 0)).collect();
    let mut requests = 0;
    for data in &inputs {
        let sc = scenario_from_bytes(data).expect("drawn inputs are not empty");
        requests += sc.requests.len();
        if let Err(e) = check_scenario(&sc) {
            panic!("{e}\nscenario: {}", serde_json::to_string(&sc).unwrap());
        }
        for b in behaviours(&engine::run(&sc).unwrap().trace) {
            *counts.get_mut(b).unwrap() += 1;
        }
    }
    println!("{counts:#?}\nmean requests per draw: {:.2}", requests as f64 / inputs.len() as f64);
    let rare: Vec<_> = counts.iter().filter(|(_, &n)| n * 100 < MIN_PERCENT * inputs.len()).collect();
    assert!(rare.is_empty(), "reached by fewer than {MIN_PERCENT}% of {} draws: {rare:?}", inputs.len());
    assert!(requests >= 4 * inputs.len(), "fewer than 4 requests per draw on average");
}

/// The fuzz oracle (`check_invariants`, including `check_stop`'s exact output length) is
/// vLLM's behaviour, not only the simulator's: every recording of vLLM 0.12.0's own code
/// in the conformance corpus satisfies it.
#[test]
fn invariants_hold_on_every_vllm_recording() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("traces/conformance/vllm-0.12.0");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let t = specreplay_sim::trace::read(&path).unwrap();
        if let Err(e) = check_invariants(&t) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 300, "conformance corpus has {n} traces");
}

#[test]
fn trace_parser_corpus_replays() {
    let fs = files("trace_parser");
    assert!(fs.len() >= 3, "trace_parser corpus missing");
    for f in fs {
        let data = std::fs::read(&f).unwrap();
        // Panics (the failure) propagate; Ok or Err are both fine.
        check_trace_bytes(&data);
        let mut truncated = data.clone();
        truncated.truncate(data.len() / 2);
        check_trace_bytes(&truncated);
    }
}
