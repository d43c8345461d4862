//! Random-mode verification rows on the GPU (`executor/kernels/random_rows.cu`) against the
//! CPU (`specreplay_sim::sampling::target_probs` + `rejection::random_row`, through
//! `specreplay_executor::random_rows::cpu_rows`), bit for bit: the target probability rows
//! (temperature, top-k, top-p on the synthetic oracle) and the sampler rows, on ≥ 10^6 rows
//! with zero drafts, discarded rows, k up to 8 and vocabularies up to 151,936; and the
//! device's rows/s at vocabulary 151,936. GPU tests are `#[ignore]`d;
//! `scripts/gpu-check.sh device` runs them (stages `random-rows`, `random-bench`).

use std::time::Instant;

use specreplay_executor::device::test_device;
use specreplay_executor::random_rows::{self, cpu_rows, device_rows, random_batch};
use specreplay_sim::oracle::Synthetic;

const WIDTH: usize = 9;

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn random_rows_are_bit_equal_to_the_cpu_on_1m_rows() {
    let dev = test_device();
    let start = Instant::now();
    let row = random_rows::self_test(&dev, 1_000_000, 1).unwrap();
    println!(
        "random rows twins: {} rows, {} mismatching, in {:.1} s (first: {})",
        row.cases,
        row.mismatches,
        start.elapsed().as_secs_f64(),
        row.first.as_deref().unwrap_or("none")
    );
    assert_eq!(row.mismatches, 0, "reproduce: specreplay gpu selftest --cases 1 --random-rows 1000000");
    assert!(row.cases >= 1_000_000);
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn random_rows_bench_at_vocab_151936() {
    let dev = test_device();
    let oracle = Synthetic { seed: 0x15, vocab_size: 151_936, order: 2 };
    for n in [64usize, 512] {
        let mut batch = random_batch(&oracle, n, 3, 9);
        for r in &mut batch {
            r.discard = false;
        }
        device_rows(&dev, &oracle, &batch, WIDTH).unwrap(); // warm-up (module load, caches)
        let reps = 5;
        let t0 = Instant::now();
        for _ in 0..reps {
            device_rows(&dev, &oracle, &batch, WIDTH).unwrap();
        }
        let secs = t0.elapsed().as_secs_f64() / reps as f64;
        let targets: usize = batch.iter().map(|r| r.hashes.len()).sum();
        println!(
            "random rows bench: vocab 151936, {n} rows ({targets} target rows, 0-3 drafts): {:.1} rows/s on the GPU \
             ({:.2} ms per batch, upload + both kernels + download of the probability rows)",
            n as f64 / secs,
            secs * 1e3
        );
    }
    let batch = random_batch(&oracle, 16, 3, 9);
    let t0 = Instant::now();
    cpu_rows(&oracle, &batch, WIDTH);
    println!("random rows bench: same rows on one CPU core: {:.1} rows/s", 16.0 / t0.elapsed().as_secs_f64());
}
