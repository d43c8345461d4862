//! The CPU twin's tensor-core dot product (`kernels_ref::dot_tensor`, the order of the
//! tensor plan's GEMMs): dot products of K = 1,024 per second through the general block-FMA
//! model (`TcModel::HOPPER.fma`, 128-bit alignment of each block's terms) and through the
//! Hopper fast path `dot_tensor` now takes (`tensor_core::hopper_half_chunk`, 32/64-bit
//! integers; the test `the_hopper_fast_path_equals_the_model` checks they agree bit for
//! bit), portable and with each vector extension this CPU has. All run here on the same
//! operands and must agree. Plain `fn main` (harness = false): `cargo
//! bench --bench twin` prints a Markdown table; `TWIN_BENCH_MS` sets the time per cell
//! (default 2000 ms).

use std::hint::black_box;
use std::time::{Duration, Instant};

use specreplay_executor::model::kernels_ref::{dot_tensor, dot_tensor_body, MMA_SPLIT};
#[cfg(target_arch = "x86_64")]
use specreplay_executor::model::kernels_ref::{dot_tensor_avx2, dot_tensor_avx512};
use specreplay_executor::model::tensor_core::TcModel;

const K: usize = 1024;

/// `dot_tensor`'s order through the general model.
fn dot_model(x: &[u16], w: &[u16]) -> f32 {
    let chunks = x.len() / 32;
    let mut total = 0f32;
    for s in 0..MMA_SPLIT {
        let mut acc = 0f32;
        for c in s * chunks / MMA_SPLIT..(s + 1) * chunks / MMA_SPLIT {
            for half in 0..2 {
                let (mut a, mut b) = ([0u16; 16], [0u16; 16]);
                for t in 0..4 {
                    for j in 0..4 {
                        a[4 * t + j] = x[c * 32 + 8 * t + 4 * half + j];
                        b[4 * t + j] = w[c * 32 + 8 * t + 4 * half + j];
                    }
                }
                acc = TcModel::HOPPER.fma(acc, &a, &b);
            }
        }
        total = if s == 0 { acc } else { total + acc };
    }
    total
}

fn rate(budget: Duration, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut n = 0;
    while n == 0 || start.elapsed() < budget {
        f(n);
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let ms: u64 = std::env::var("TWIN_BENCH_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let budget = Duration::from_millis(ms);
    // Activations and weights of a random-weight model's scale: bf16 of N(0, 1) and N(0, 0.02).
    let mut s = 0x7717u64;
    let mut normal = |scale: f32| {
        s = specreplay_sim::splitmix::splitmix(s);
        let u = (s >> 11) as f64 / (1u64 << 53) as f64;
        let v = ((s & 0x7ff) as f64 + 0.5) / 2048.0;
        let z = (-2.0 * u.max(1e-300).ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        ((z as f32 * scale).to_bits() >> 16) as u16
    };
    let rows = 64;
    let x: Vec<u16> = (0..rows * K).map(|_| normal(1.0)).collect();
    let w: Vec<u16> = (0..rows * K).map(|_| normal(0.02)).collect();
    for r in 0..rows {
        let (a, b) = (&x[r * K..][..K], &w[r * K..][..K]);
        assert_eq!(dot_model(a, b).to_bits(), dot_tensor(a, b).to_bits(), "row {r}");
    }
    println!("| K = {K}, one thread | dots/s |");
    println!("|---|---:|");
    let time = |f: &dyn Fn(&[u16], &[u16]) -> f32| {
        rate(budget, |i| {
            let r = i % rows;
            black_box(f(black_box(&x[r * K..][..K]), &w[r * K..][..K]));
        })
    };
    let general = time(&dot_model);
    println!("| TcModel::HOPPER.fma (general model) | {general:.0} |");
    let portable = time(&dot_tensor_body);
    println!("| dot_tensor, portable (baseline x86-64) | {portable:.0} |");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            let avx2 = time(&|a, b| unsafe { dot_tensor_avx2(a, b) });
            println!("| dot_tensor, AVX2 | {avx2:.0} |");
        }
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU supports AVX-512 F and BW (checked just above).
            let avx512 = time(&|a, b| unsafe { dot_tensor_avx512(a, b) });
            println!("| dot_tensor, AVX-512 | {avx512:.0} |");
        }
    }
    let fast = time(&dot_tensor);
    println!("| dot_tensor (the path this CPU takes) | {fast:.0} |");
    println!("fast / general: {:.2}x", fast / general);
}
