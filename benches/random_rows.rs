//! Random-mode rejection sampling on the CPU at Qwen3's vocabulary (151,936): rows per
//! second of `rejection::random_row` (vLLM 0.12.0's random rule for n-gram drafts, three
//! drafts per row, on given target rows) and of the whole CPU-device row (the synthetic
//! oracle's four target distributions with temperature / top-k / top-p, then the rule).
//! Plain `fn main` (harness = false): `cargo bench --bench random_rows` prints a Markdown
//! table; `RANDOM_BENCH_MS` sets the time per cell (default 2000 ms).

use std::time::{Duration, Instant};

use specreplay_sim::oracle::Synthetic;
use specreplay_sim::rejection::random_row;
use specreplay_sim::sampling::{target_probs, SamplingParams};

const VOCAB: u32 = 151_936;

fn rate(budget: Duration, mut f: impl FnMut(u64)) -> (u64, f64) {
    let start = Instant::now();
    let mut n = 0;
    while n == 0 || start.elapsed() < budget {
        f(n);
        n += 1;
    }
    (n, n as f64 / start.elapsed().as_secs_f64())
}

fn main() {
    let ms: u64 = std::env::var("RANDOM_BENCH_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let budget = Duration::from_millis(ms);
    let oracle = Synthetic { seed: 0x15, vocab_size: VOCAB, order: 2 };
    println!("| measure (vocab {VOCAB}, 3 drafts/row) | params | rows | rows/s |");
    println!("|---|---|---:|---:|");
    for (label, params) in [
        ("T 1", SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, seed: Some(1) }),
        ("T 0.7 top-k 50 top-p 0.9", SamplingParams { temperature: 0.7, top_k: 50, top_p: 0.9, seed: Some(1) }),
    ] {
        let ctx = [11u32, 22];
        let mut drafts = Vec::new();
        let mut targets = Vec::new();
        let mut c = ctx.to_vec();
        for j in 0..4u32 {
            targets.push(target_probs(&oracle.log_probs(&c), &params));
            let d = (j * 7919) % VOCAB;
            drafts.push(d);
            c.push(d);
        }
        drafts.pop();
        let (n, r) = rate(budget, |s| {
            std::hint::black_box(random_row(&targets, &drafts, s, 0, 100));
        });
        println!("| rejection rule on given targets | {label} | {n} | {r:.1} |");
        let (n, r) = rate(budget, |s| {
            let mut c = ctx.to_vec();
            let t: Vec<Vec<f64>> = (0..4)
                .map(|j| {
                    let p = target_probs(&oracle.log_probs(&c), &params);
                    c.push(drafts.get(j).copied().unwrap_or(0));
                    p
                })
                .collect();
            std::hint::black_box(random_row(&t, &drafts, s, 0, 100));
        });
        println!("| targets + rule (CPU device row) | {label} | {n} | {r:.1} |");
    }
}
