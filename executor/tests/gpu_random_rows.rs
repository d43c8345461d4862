//! Random-mode verification rows on the GPU (`executor/kernels/random_rows.cu`) against the
//! CPU (`specreplay_sim::sampling::target_probs` + `rejection::random_row`, through
//! `specreplay_executor::random_rows::cpu_rows`), bit for bit: the target probability rows
//! (temperature, top-k, top-p on the synthetic oracle) and the sampler rows, on ≥ 10^6 rows
//! with zero drafts, discarded rows, k up to 8 and vocabularies up to 151,936; and the
//! device's rows/s at vocabulary 151,936. GPU tests are `#[ignore]`d;
//! `scripts/gpu-check.sh device` runs them (stages `random-rows`, `random-bench`).

use std::time::Instant;

use specreplay_executor::device::{test_device, Device};
use specreplay_executor::random_rows::{cpu_rows, device_rows, random_batch, RandomOutput, RandomRow};
use specreplay_sim::oracle::Synthetic;

const WIDTH: usize = 9;

/// The CPU twin over all cores (rows are independent).
fn cpu_parallel(oracle: &Synthetic, rows: &[RandomRow]) -> RandomOutput {
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let chunk = rows.len().div_ceil(threads).max(1);
    let parts: Vec<RandomOutput> = std::thread::scope(|s| {
        let hs: Vec<_> = rows.chunks(chunk).map(|c| s.spawn(move || cpu_rows(oracle, c, WIDTH))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut out = RandomOutput { probs: Vec::new(), rows: Vec::new() };
    for p in parts {
        out.probs.extend(p.probs);
        out.rows.extend(p.rows);
    }
    out
}

/// Compares one batch; on a mismatch, prints the row, its parameters and how to rerun.
fn compare(dev: &Device, oracle: &Synthetic, rows: &[RandomRow], seed: u64) -> (usize, usize) {
    let got = device_rows(dev, oracle, rows, WIDTH).unwrap();
    let want = cpu_parallel(oracle, rows);
    let v = oracle.vocab_size as usize;
    let mut t = 0;
    for (i, r) in rows.iter().enumerate() {
        for _ in &r.hashes {
            let (g, w) = (&got.probs[t * v..(t + 1) * v], &want.probs[t * v..(t + 1) * v]);
            if let Some(x) = (0..v).find(|&x| g[x].to_bits() != w[x].to_bits()) {
                panic!(
                    "vocab {v} batch seed {seed}: row {i} ({:?}) target row {t} token {x}: GPU {:e} vs CPU {:e}\n\
                     reproduce: .gpu/executor-gpu-random-rows --ignored --nocapture random_rows",
                    r.params, g[x], w[x]
                );
            }
            t += 1;
        }
        let (g, w) = (&got.rows[i * WIDTH..(i + 1) * WIDTH], &want.rows[i * WIDTH..(i + 1) * WIDTH]);
        assert_eq!(g, w, "vocab {v} batch seed {seed}: row {i} {r:?}");
    }
    (rows.len(), t)
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn random_rows_are_bit_equal_to_the_cpu_on_1m_rows() {
    let dev = test_device();
    let start = Instant::now();
    let (mut rows, mut targets, mut discarded, mut zero, mut k8) = (0, 0, 0, 0, 0);
    // (vocab, rows per batch, batches): 1,004,736 rows.
    let plan: [(u32, usize, u64); 7] = [
        (2, 8192, 4),
        (7, 8192, 20),
        (32, 8192, 60),
        (64, 8192, 38),
        (1000, 1024, 4),
        (5000, 256, 4),
        (151_936, 64, 3),
    ];
    let mut seed = 0x15_0015u64;
    for (vocab, n, batches) in plan {
        let (mut vr, mut vt) = (0, 0);
        for b in 0..batches {
            seed = specreplay_sim::splitmix::splitmix(seed ^ b);
            let oracle = Synthetic { seed, vocab_size: vocab, order: 2 };
            let batch = random_batch(&oracle, n, 8, seed);
            discarded += batch.iter().filter(|r| r.discard).count();
            zero += batch.iter().filter(|r| r.drafts.is_empty() && !r.discard).count();
            k8 += batch.iter().filter(|r| r.drafts.len() == 8).count();
            let (r, t) = compare(&dev, &oracle, &batch, seed);
            vr += r;
            vt += t;
        }
        println!("random rows: vocab {vocab}: {vr} rows, {vt} target rows bit-equal");
        rows += vr;
        targets += vt;
    }
    println!(
        "random rows twins: {rows} rows ({discarded} discarded, {zero} without drafts, {k8} with 8 drafts), \
         {targets} target probability rows bit-equal in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(rows >= 1_000_000 && discarded > 0 && zero > 0 && k8 > 0);
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
