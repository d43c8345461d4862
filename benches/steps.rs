//! Simulated engine steps per second for 1 and 256 concurrent requests, n-gram
//! speculation against the non-speculative run of the same scenario (the reference in
//! the same process). Run: `cargo bench --bench steps`.

use std::time::Instant;

use specreplay_sim::config::{Config, OracleKind, OracleSpec, RequestSpec, Scenario, SpecMethod};
use specreplay_sim::engine;

fn scenario(num_requests: usize, spec: bool) -> Scenario {
    let k = if spec { 3 } else { 0 };
    let q = 1 + k;
    let config = Config {
        num_gpu_blocks: 20_000,
        max_num_seqs: 256,
        max_num_batched_tokens: 8192,
        max_model_len: 2048,
        method: if spec { SpecMethod::Ngram } else { SpecMethod::None },
        num_speculative_tokens: k,
        prompt_lookup_min: if spec { 2 } else { 0 },
        prompt_lookup_max: if spec { 4 } else { 0 },
        cudagraph_capture_sizes: (1..=64).map(|i| i * 8).filter(|s| s % q == 0).collect(),
        ..Config::default()
    };
    let requests = (0..num_requests)
        .map(|i| RequestSpec {
            req_id: format!("{i}"),
            prompt_token_ids: (0..64).map(|j| ((i * 7 + j * 3) % 50) as u32).collect(),
            max_tokens: 256,
            arrival_step: 1 + (i % 8) as u64,
            eos_token_id: None,
            stop_token_ids: Vec::new(),
            min_tokens: 0,
            ignore_eos: false,
            sampling: Default::default(),
        })
        .collect();
    let oracle =
        OracleSpec { kind: OracleKind::Synthetic, tokens: Default::default(), seed: 42, vocab_size: 8, order: 2 };
    Scenario { config, requests, oracle }
}

/// Median seconds per run, the step count and the generated-token count.
fn time(sc: &Scenario, reps: usize) -> (f64, usize, usize) {
    let mut secs = Vec::new();
    let (mut steps, mut tokens) = (0, 0);
    for _ in 0..reps {
        let t0 = Instant::now();
        let r = engine::run(sc).expect("bench scenario runs");
        secs.push(t0.elapsed().as_secs_f64());
        steps = r.trace.steps.len();
        tokens = r.trace.outputs.values().map(Vec::len).sum();
    }
    secs.sort_by(f64::total_cmp);
    (secs[reps / 2], steps, tokens)
}

fn main() {
    println!("| requests | mode | steps | tokens | median run (ms) | steps/s | tokens/s | steps/s vs no spec | run time vs no spec |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for n in [1usize, 256] {
        let reps = if n == 1 { 21 } else { 5 };
        let (ts, ss, ks) = time(&scenario(n, true), reps);
        let (tp, sp, kp) = time(&scenario(n, false), reps);
        let (rs, rp) = (ss as f64 / ts, sp as f64 / tp);
        let ms = |t: f64| t * 1e3;
        println!(
            "| {n} | ngram k=3 | {ss} | {ks} | {:.2} | {rs:.0} | {:.0} | {:.2} | {:.2} |",
            ms(ts),
            ks as f64 / ts,
            rs / rp,
            ts / tp
        );
        println!("| {n} | no spec | {sp} | {kp} | {:.2} | {rp:.0} | {:.0} | 1.00 | 1.00 |", ms(tp), kp as f64 / tp);
    }
}
