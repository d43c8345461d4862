//! The random-mode generator's CUDA twin (`executor/kernels/random.cu`) against the CPU
//! (`specreplay_sim::philox`), bit for bit: ≥ 10^8 Philox4x32-10 blocks, `ln` and `exp`
//! on 10^8 generated inputs each (the whole positive binary64 range for `ln`, [-745, 745)
//! for `exp`), and the Exp(1) variate of all 2^24 words it can take. GPU tests are
//! `#[ignore]`d; `scripts/gpu-check.sh device` runs them (stage `random-twins`).

use cudarc::driver::{LaunchConfig, PushKernelArg};
use specreplay_executor::device::test_device;
use specreplay_executor::random_rows::{self, cpu_rows, device_rows, random_batch};
use specreplay_sim::oracle::Synthetic;
use specreplay_sim::philox::{self, philox4x32_10};
use specreplay_sim::splitmix::splitmix;
use std::time::Instant;

/// Items per launch (2^22).
const CHUNK: usize = 1 << 22;

fn cfg() -> LaunchConfig {
    LaunchConfig { grid_dim: (2048, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// The CPU twin of `ln_exp_inputs`'s inputs for item `base + i`.
fn ln_exp_inputs(base: u32, k: [u32; 2]) -> (f64, f64) {
    let o = philox4x32_10([base, 0, 0x1e, 0], k);
    let a = (u64::from(o[0]) | u64::from(o[1]) << 32) & 0x7FEF_FFFF_FFFF_FFFF;
    let b = (u64::from(o[2]) | u64::from(o[3]) << 32) >> 11;
    (f64::from_bits(a), b as f64 * (1.0 / 9_007_199_254_740_992.0) * 1490.0 - 745.0)
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn philox_blocks_are_bit_equal_on_134m_counters() {
    let dev = test_device();
    let f = dev.function("philox_blocks").unwrap();
    let mut out = dev.stream.alloc_zeros::<u32>(4 * CHUNK).unwrap();
    let mut seed = 0x5eed_0015u64;
    let mut compared = 0u64;
    // 32 launches x 2^22 blocks = 134,217,728 blocks (536,870,912 words), random counters
    // and keys, the last counter word wrapping inside some launches.
    for launch in 0..32 {
        seed = splitmix(seed);
        let s2 = splitmix(seed);
        let (c0, c1, c2) = (seed as u32, (seed >> 32) as u32, s2 as u32);
        let c3 = if launch % 4 == 0 { u32::MAX - 1000 } else { (s2 >> 32) as u32 };
        let s3 = splitmix(s2);
        let (k0, k1) = (s3 as u32, (s3 >> 32) as u32);
        let n = CHUNK as i64;
        let mut l = dev.stream.launch_builder(f);
        l.arg(&c0).arg(&c1).arg(&c2).arg(&c3).arg(&k0).arg(&k1).arg(&n).arg(&mut out);
        // SAFETY: arguments match `philox_blocks`'s signature; `out` holds 4n words.
        unsafe { l.launch(cfg()) }.unwrap();
        let got = dev.stream.clone_dtoh(&out).unwrap();
        for i in 0..CHUNK {
            let want = philox4x32_10([c0, c1, c2, c3.wrapping_add(i as u32)], [k0, k1]);
            assert_eq!(&got[4 * i..4 * i + 4], &want, "launch {launch} block {i}");
        }
        compared += CHUNK as u64;
    }
    println!("philox4x32-10 twins: {compared} blocks ({} words) bit-equal", 4 * compared);
    assert!(compared >= 100_000_000);
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn ln_and_exp_are_bit_equal_on_100m_inputs_each() {
    let dev = test_device();
    let f = dev.function("ln_exp_inputs").unwrap();
    let mut ln_out = dev.stream.alloc_zeros::<f64>(CHUNK).unwrap();
    let mut exp_out = dev.stream.alloc_zeros::<f64>(CHUNK).unwrap();
    let key = [0x0123_4567u32, 0x89ab_cdefu32];
    let launches = 24; // 24 x 2^22 = 100,663,296 inputs for each function
    for launch in 0..launches {
        let base = (launch * CHUNK) as u32;
        let n = CHUNK as i64;
        let mut l = dev.stream.launch_builder(f);
        l.arg(&base).arg(&key[0]).arg(&key[1]).arg(&n).arg(&mut ln_out).arg(&mut exp_out);
        // SAFETY: arguments match `ln_exp_inputs`'s signature; both outputs hold n doubles.
        unsafe { l.launch(cfg()) }.unwrap();
        let got_ln = dev.stream.clone_dtoh(&ln_out).unwrap();
        let got_exp = dev.stream.clone_dtoh(&exp_out).unwrap();
        for i in 0..CHUNK {
            let (x, y) = ln_exp_inputs(base.wrapping_add(i as u32), key);
            let (a, b) = (philox::ln(x), philox::exp(y));
            assert_eq!(got_ln[i].to_bits(), a.to_bits(), "ln({x:e}) [{x:?}]: GPU {:e} CPU {a:e}", got_ln[i]);
            assert_eq!(got_exp[i].to_bits(), b.to_bits(), "exp({y:e}): GPU {:e} CPU {b:e}", got_exp[i]);
        }
    }
    println!("ln/exp twins: {} inputs each bit-equal", launches * CHUNK);
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn every_exponential_variate_is_bit_equal() {
    let dev = test_device();
    let f = dev.function("exponential_all").unwrap();
    let mut out = dev.stream.alloc_zeros::<f64>(1 << 24).unwrap();
    let mut l = dev.stream.launch_builder(f);
    l.arg(&mut out);
    // SAFETY: `exponential_all` writes 2^24 doubles.
    unsafe { l.launch(cfg()) }.unwrap();
    let got = dev.stream.clone_dtoh(&out).unwrap();
    for (k, g) in got.iter().enumerate() {
        let want = philox::exponential((k as u32) << 8);
        assert_eq!(g.to_bits(), want.to_bits(), "word {k} << 8");
    }
    println!("exponential variate: all {} values bit-equal", got.len());
}

// ---- Random-mode rows (`executor/kernels/random_rows.cu`): the target distributions
// (temperature, top-k, top-p on the synthetic oracle) and vLLM's random rejection rule,
// device against the CPU twin, bit for bit, on >= 10^6 rows; rows/s at vocabulary
// 151,936. Stages `random-rows` (through `gpu selftest --random-rows`) and `random-bench`;
// `random-twins` skips these.

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
