//! CPU twins of the Qwen3 kernels (`executor/kernels/qwen.cu`): the same f32 operations in
//! the same order, bf16 rounding at the same points, so the GPU must match them bit for bit.
//!
//! The model is Hugging Face's `Qwen3ForCausalLM` (`transformers/models/qwen3/
//! modeling_qwen3.py`): `Qwen3RMSNorm` (normalise in f32, round to bf16, times the weight
//! in bf16), residual adds in bf16, RoPE with `rotate_half` and bf16 cos/sin
//! (`Qwen3RotaryEmbedding` casts them to the activation dtype), SiLU-mul MLP in bf16.
//! What HF leaves to cuBLAS / SDPA (dot products, softmax) is given one fixed order here
//! that depends only on a row's own data and the shapes: that is what makes the forward
//! pass batch-invariant (see the top of `qwen.cu`).

/// bf16 bits to f32 (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// f32 to bf16 bits, round to nearest even; a NaN stays a quiet NaN.
pub fn f32_to_bf16(f: f32) -> u16 {
    let u = f.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 0x40) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// `f` rounded to the nearest bf16, as f32.
pub fn round_bf(f: f32) -> f32 {
    bf16_to_f32(f32_to_bf16(f))
}

/// `qwen.cu::exp_f`: exp from basic operations (0 below -87, +inf above 88).
#[allow(clippy::excessive_precision)]
pub fn exp_f(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < -87.0 {
        return 0.0;
    }
    if x > 88.0 {
        return f32::INFINITY;
    }
    let (log2e, ln2_hi, ln2_lo) = (1.44269502f32, 0.693145751953125f32, 1.42860677e-06f32);
    let k = (x * log2e + 0.5).floor();
    let r = (x - k * ln2_hi) - k * ln2_lo;
    let coef = [1.38888892e-03f32, 8.33333377e-03, 4.16666679e-02, 1.66666672e-01, 0.5, 1.0, 1.0];
    let mut p = 1.98412701e-04f32;
    for c in coef {
        p = p * r + c;
    }
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// The warp butterfly (`__shfl_xor` 16, 8, 4, 2, 1, each lane `v + other`); lane 0's value.
pub fn butterfly_sum(mut v: [f32; 32]) -> f32 {
    for off in [16, 8, 4, 2, 1] {
        let prev = v;
        for (l, x) in v.iter_mut().enumerate() {
            *x = prev[l] + prev[l ^ off];
        }
    }
    v[0]
}

/// Sum of squares in the `warp_sum_strided` order: lane `i % 32` accumulates `x[i]` with
/// fused multiply-add in increasing `i`, then the butterfly.
pub fn strided_sum_sq(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 32];
    for (i, &v) in x.iter().enumerate() {
        lanes[i % 32] = v.mul_add(v, lanes[i % 32]);
    }
    butterfly_sum(lanes)
}

/// The GEMM dot product of one output element: lane `c % 32` accumulates 8-element chunk
/// `c` (elements in order, fused multiply-add), then the butterfly. `x.len() % 8 == 0`.
pub fn dot_chunked(x: &[u16], w: &[u16]) -> f32 {
    debug_assert_eq!(x.len(), w.len());
    let mut lanes = [0f32; 32];
    for (c, (xc, wc)) in x.chunks_exact(8).zip(w.chunks_exact(8)).enumerate() {
        let l = &mut lanes[c % 32];
        for (&a, &b) in xc.iter().zip(wc) {
            *l = bf16_to_f32(a).mul_add(bf16_to_f32(b), *l);
        }
    }
    butterfly_sum(lanes)
}

/// Slices of the tensor-core GEMMs' K split (`MMA_SPLIT` in qwen.cu).
pub const MMA_SPLIT: usize = 8;

/// The tensor-core GEMMs' dot product of one output element (qwen.cu "TENSOR-CORE GEMMs"):
/// K in [`MMA_SPLIT`] slices of 32-element chunks (slice s: chunks `s C / S .. (s+1) C / S`),
/// in a slice two Hopper block FMAs per chunk (elements `8t + j`, then `8t + 4 + j`, t, j < 4)
/// chained from +0, the slices' sums added in order. `x.len() % 32 == 0`.
/// Runs its block FMAs ([`super::tensor_core::hopper_half_chunk`]) with AVX-512 or AVX2 where
/// the CPU has them: the same integer operations, so the same bits (`cargo bench --bench
/// twin`).
pub fn dot_tensor(x: &[u16], w: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU supports AVX-512 F and BW (checked just above).
            return unsafe { dot_tensor_avx512(x, w) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { dot_tensor_avx2(x, w) };
        }
    }
    dot_tensor_body(x, w)
}

/// [`dot_tensor`] compiled for AVX-512 F and BW.
///
/// # Safety
/// Call it only where the CPU has AVX-512 F and BW (`is_x86_feature_detected!`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub fn dot_tensor_avx512(x: &[u16], w: &[u16]) -> f32 {
    dot_tensor_body(x, w)
}

/// [`dot_tensor`] compiled for AVX2.
///
/// # Safety
/// Call it only where the CPU has AVX2 (`is_x86_feature_detected!`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub fn dot_tensor_avx2(x: &[u16], w: &[u16]) -> f32 {
    dot_tensor_body(x, w)
}

/// [`dot_tensor`] for any CPU (the baseline instruction set).
#[inline(always)]
pub fn dot_tensor_body(x: &[u16], w: &[u16]) -> f32 {
    debug_assert_eq!(x.len(), w.len());
    debug_assert_eq!(x.len() % 32, 0);
    let chunks = x.len() / 32;
    let mut total = 0f32;
    for s in 0..MMA_SPLIT {
        let mut acc = 0f32;
        for c in s * chunks / MMA_SPLIT..(s + 1) * chunks / MMA_SPLIT {
            let (xc, wc) = (&x[c * 32..][..32], &w[c * 32..][..32]);
            for half in 0..2 {
                acc = super::tensor_core::hopper_half_chunk(acc, xc, wc, half);
            }
        }
        total = if s == 0 { acc } else { total + acc };
    }
    total
}

/// How a plan's GEMMs order their sums: [`dot_chunked`] (the CUDA-core kernels) or
/// [`dot_tensor`] (the tensor-core kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemmOrder {
    #[default]
    Lanes,
    Tensor,
}

/// The GEMM of either order: `x` `[rows, k]`, `w` `[n, k]`; returns the f32 sums `[rows, n]`.
pub fn gemm_in(order: GemmOrder, x: &[u16], rows: usize, k: usize, w: &[u16], n: usize) -> Vec<f32> {
    let dot = match order {
        GemmOrder::Lanes => dot_chunked,
        GemmOrder::Tensor => dot_tensor,
    };
    let mut y = vec![0f32; rows * n];
    fill_parallel(&mut y, rows * n * k, |i| dot(&x[(i / n) * k..][..k], &w[(i % n) * k..][..k]));
    y
}

/// `out[i] = f(i)` for every i, split over threads when `work` (multiply-adds) is large:
/// each element is computed alone, so the split never changes a bit (the CPU twin replays
/// a 0.6B-parameter run on a laptop's cores).
pub fn fill_parallel(out: &mut [f32], work: usize, f: impl Fn(usize) -> f32 + Sync) {
    let threads = if work >= 1 << 21 { std::thread::available_parallelism().map_or(1, |n| n.get()).min(16) } else { 1 };
    if threads <= 1 || out.len() < 2 {
        for (i, o) in out.iter_mut().enumerate() {
            *o = f(i);
        }
        return;
    }
    let per = out.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        for (ci, chunk) in out.chunks_mut(per).enumerate() {
            s.spawn(move || {
                for (j, o) in chunk.iter_mut().enumerate() {
                    *o = f(ci * per + j);
                }
            });
        }
    });
}

/// `qwen_gemm` over `rows` rows: `x` `[rows, k]`, `w` `[n, k]`; returns the f32 sums
/// `[rows, n]` (the kernel stores `f32_to_bf16` of them, or `round_bf` for logits).
pub fn gemm(x: &[u16], rows: usize, k: usize, w: &[u16], n: usize) -> Vec<f32> {
    gemm_in(GemmOrder::Lanes, x, rows, k, w, n)
}

/// `qwen_rmsnorm` of one row: with `delta`, `residual` becomes `bf16(delta + residual)`
/// first; returns `bf16(bf16(r / rms) * w)` (`Qwen3RMSNorm`). `write_residual`: whether
/// the sum is stored back (the layers' norms) or not (the final norm on logits rows).
pub fn rmsnorm_row(
    delta: Option<&[u16]>,
    residual: &mut [u16],
    weight: &[u16],
    eps: f32,
    write_residual: bool,
    out: &mut [u16],
) {
    let h = residual.len();
    let r: Vec<f32> = match delta {
        Some(d) => (0..h).map(|i| round_bf(bf16_to_f32(d[i]) + bf16_to_f32(residual[i]))).collect(),
        None => residual.iter().map(|&x| bf16_to_f32(x)).collect(),
    };
    if delta.is_some() && write_residual {
        for (dst, &v) in residual.iter_mut().zip(&r) {
            *dst = f32_to_bf16(v);
        }
    }
    let inv = 1.0 / (strided_sum_sq(&r) / h as f32 + eps).sqrt();
    for i in 0..h {
        out[i] = f32_to_bf16(round_bf(r[i] * inv) * bf16_to_f32(weight[i]));
    }
}

/// The RoPE table `qwen_qk_norm_rope_kv` reads: `[positions][head_dim / 2][cos, sin]` as
/// bf16. HF `Qwen3RotaryEmbedding` (default rope type): `inv_freq[i] = 1 / θ^(2i / d)` in
/// f32, angle = position × inv_freq in f32, cos/sin in f32 cast to bf16.
pub fn rope_table(theta: f32, head_dim: usize, positions: usize) -> Vec<u16> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect();
    let mut t = Vec::with_capacity(positions * head_dim);
    for p in 0..positions {
        for &f in &inv {
            let a = p as f32 * f;
            t.push(f32_to_bf16(a.cos()));
            t.push(f32_to_bf16(a.sin()));
        }
    }
    t
}

/// `qwen_qk_norm_rope_kv` for one q or k head: optional RMSNorm over `head_dim` (Qwen3's
/// `q_norm` / `k_norm`), then RoPE with the table row `cs` (`[half][cos, sin]`):
/// `bf16(bf16(x cos) + bf16(rotate_half(x) sin))`.
pub fn norm_rope_head(src: &[u16], norm: Option<&[u16]>, eps: f32, cs: &[u16]) -> Vec<u16> {
    let hd = src.len();
    let half = hd / 2;
    let v: Vec<f32> = match norm {
        Some(w) => {
            let x: Vec<f32> = src.iter().map(|&b| bf16_to_f32(b)).collect();
            let inv = 1.0 / (strided_sum_sq(&x) / hd as f32 + eps).sqrt();
            (0..hd).map(|d| round_bf(round_bf(x[d] * inv) * bf16_to_f32(w[d]))).collect()
        }
        None => src.iter().map(|&b| bf16_to_f32(b)).collect(),
    };
    (0..hd)
        .map(|d| {
            let i = if d < half { d } else { d - half };
            let (c, s) = (bf16_to_f32(cs[2 * i]), bf16_to_f32(cs[2 * i + 1]));
            let rot = if d < half { -v[d + half] } else { v[d - half] };
            f32_to_bf16(round_bf(v[d] * c) + round_bf(rot * s))
        })
        .collect()
}

/// Warps per (token, head) of `qwen_attention`, and its key tile.
pub const ATT_WARPS: usize = 4;
pub const ATT_TILE: usize = 32;

/// `qwen_attention` for one query head: `q` (head_dim bf16), keys `0..slots.len()` at the
/// cache rows `slots[j]` (`None`: a key whose block lies outside the cache, skipped), `k`
/// / `v` the cache rows by slot (head_dim bf16 each). Online softmax per warp over tiles
/// `w, w + ATT_WARPS, ...`, merged in warp order.
pub fn attention_head<'a>(
    q: &[u16],
    slots: &[Option<usize>],
    kv: &dyn Fn(usize) -> (&'a [u16], &'a [u16]),
) -> Vec<u16> {
    let hd = q.len();
    let qf: Vec<f32> = q.iter().map(|&b| bf16_to_f32(b)).collect();
    let scale = 1.0 / (hd as f32).sqrt();
    let tiles = slots.len().div_ceil(ATT_TILE);
    let mut wm = [f32::NEG_INFINITY; ATT_WARPS];
    let mut wl = [0f32; ATT_WARPS];
    let mut wacc = vec![vec![0f32; hd]; ATT_WARPS];
    for w in 0..ATT_WARPS {
        let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
        let acc = &mut wacc[w];
        for ti in (w..tiles).step_by(ATT_WARPS) {
            let mut s = [f32::NEG_INFINITY; ATT_TILE];
            let mut sl = [None; ATT_TILE];
            for j in 0..ATT_TILE {
                let key = ti * ATT_TILE + j;
                if let Some(Some(slot)) = slots.get(key) {
                    let kr = kv(*slot).0;
                    let mut dot = 0f32;
                    for d in 0..hd {
                        dot = qf[d].mul_add(bf16_to_f32(kr[d]), dot);
                    }
                    s[j] = dot * scale;
                    sl[j] = Some(*slot);
                }
            }
            let mt = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let m_new = m.max(mt);
            if m_new == f32::NEG_INFINITY {
                continue;
            }
            let corr = exp_f(m - m_new);
            let mut p = [0f32; ATT_TILE];
            for j in 0..ATT_TILE {
                if sl[j].is_some() {
                    p[j] = exp_f(s[j] - m_new);
                }
            }
            l = l * corr + butterfly_sum(p);
            for a in acc.iter_mut() {
                *a *= corr;
            }
            for j in 0..ATT_TILE {
                let Some(slot) = sl[j] else { continue };
                let vr = kv(slot).1;
                for d in 0..hd {
                    acc[d] = p[j].mul_add(bf16_to_f32(vr[d]), acc[d]);
                }
            }
            m = m_new;
        }
        wm[w] = m;
        wl[w] = l;
    }
    let mx = wm.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut ew = [0f32; ATT_WARPS];
    let mut sum = 0f32;
    for w in 0..ATT_WARPS {
        ew[w] = if wm[w] == f32::NEG_INFINITY { 0.0 } else { exp_f(wm[w] - mx) };
        sum = wl[w].mul_add(ew[w], sum);
    }
    (0..hd)
        .map(|d| {
            let mut o = 0f32;
            for w in 0..ATT_WARPS {
                o = wacc[w][d].mul_add(ew[w], o);
            }
            f32_to_bf16(if sum > 0.0 { o / sum } else { 0.0 })
        })
        .collect()
}

/// `qwen_silu_mul` of one element: `bf16(bf16(g / (1 + exp(-g))) * u)`.
pub fn silu_mul(g: u16, u: u16) -> u16 {
    let g = bf16_to_f32(g);
    let sg = round_bf(g / (1.0 + exp_f(-g)));
    f32_to_bf16(sg * bf16_to_f32(u))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf(v: f32) -> u16 {
        f32_to_bf16(v)
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up to even.
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(f32_to_bf16(1.0 + 1.5 / 256.0), 0x3f81, "above half rounds up");
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(bf16_to_f32(0xc000), -2.0);
    }

    #[test]
    fn exp_f_is_accurate_and_saturates() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = f64::from(exp_f(x));
            let want = f64::from(x).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0173;
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp_f(-1000.0), 0.0);
        assert_eq!(exp_f(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f(0.0), 1.0);
        assert_eq!(exp_f(100.0), f32::INFINITY);
        assert!(exp_f(f32::NAN).is_nan());
    }

    #[test]
    fn butterfly_sums_every_lane_and_is_not_a_sequential_sum() {
        let v: [f32; 32] = std::array::from_fn(|i| i as f32);
        assert_eq!(butterfly_sum(v), 496.0);
        // Order matters in f32: this vector sums to 1 sequentially but to 0 in the
        // butterfly (1e8 + 1 - 1e8 pairs differently).
        let mut w = [0f32; 32];
        w[0] = 1e8;
        w[1] = 1.0;
        w[16] = -1e8;
        let seq = w.iter().fold(0f32, |a, &b| a + b);
        assert_eq!(seq, 0.0);
        assert_eq!(butterfly_sum(w), 1.0, "(1e8 + -1e8) + 1 in the butterfly");
    }

    #[test]
    fn gemm_is_close_to_f64_and_its_order_depends_on_k_only() {
        let k = 72;
        let x: Vec<u16> = (0..2 * k).map(|i| bf(((i * 37 % 23) as f32 - 11.0) / 7.0)).collect();
        let w: Vec<u16> = (0..3 * k).map(|i| bf(((i * 29 % 17) as f32 - 8.0) / 5.0)).collect();
        let y = gemm(&x, 2, k, &w, 3);
        for m in 0..2 {
            for n in 0..3 {
                let exact: f64 =
                    (0..k).map(|i| f64::from(bf16_to_f32(x[m * k + i])) * f64::from(bf16_to_f32(w[n * k + i]))).sum();
                assert!((f64::from(y[m * 3 + n]) - exact).abs() < 1e-4, "{m},{n}");
            }
        }
        // Row 1 alone gives the same bits as row 1 among others.
        let alone = gemm(&x[k..], 1, k, &w, 3);
        assert_eq!(alone, y[3..].to_vec());
    }

    #[test]
    fn tensor_dot_is_exact_on_integers_and_truncates_like_the_block_fma() {
        // Small integers: every order sums them exactly.
        let x: Vec<u16> = (0..96).map(|i| bf((i % 7) as f32 - 3.0)).collect();
        let w: Vec<u16> = (0..96).map(|i| bf((i % 5) as f32 - 2.0)).collect();
        let exact: f32 = (0..96).map(|i| ((i % 7) as f32 - 3.0) * ((i % 5) as f32 - 2.0)).sum();
        assert_eq!(dot_tensor(&x, &w), exact);
        assert_eq!(dot_chunked(&x, &w), exact);
        // 1 + 15 products of 2^-24 (elements 1-15 of a 32-chunk with x = w = 2^-12): the
        // first block holds element 0 and 7 of them (1-3, 8-11), the second 8 (4-7, 12-15).
        // Block 1: exact 1 + 7 * 2^-24, cut toward zero to 24 bits: 1 + 3 * 2^-23. Block 2
        // adds 8 * 2^-24 = 4 * 2^-23 exactly: 1 + 7 * 2^-23. IEEE fmaf in order would round
        // every 1 + 2^-24 back to 1 (a tie, to even).
        let mut x = vec![0u16; 32];
        x[0] = bf(1.0);
        for v in &mut x[1..16] {
            *v = bf(2f32.powi(-12));
        }
        let want = 1.0 + 7.0 * 2f32.powi(-23);
        assert_eq!(dot_tensor(&x, &x), want);
        let ieee = x.iter().fold(0f32, |s, &v| bf16_to_f32(v).mul_add(bf16_to_f32(v), s));
        assert_eq!(ieee, 1.0);
        // The slices: K = 256 is 8 chunks, one per slice; moving a chunk's values to another
        // chunk changes the grouping, never the exact integer result.
        let x: Vec<u16> = (0..256).map(|i| bf(((i * 3) % 11) as f32)).collect();
        assert_eq!(dot_tensor(&x, &x), (0..256).map(|i| (((i * 3) % 11) * ((i * 3) % 11)) as f32).sum::<f32>());
        assert_eq!(gemm_in(GemmOrder::Tensor, &x, 1, 256, &x, 1), vec![dot_tensor(&x, &x)]);
    }

    #[test]
    fn rmsnorm_matches_the_definition_and_adds_the_residual() {
        let d: Vec<u16> = (0..64).map(|i| bf(i as f32 / 10.0 - 3.0)).collect();
        let mut r: Vec<u16> = (0..64).map(|i| bf((i % 7) as f32 / 3.0)).collect();
        let w: Vec<u16> = (0..64).map(|i| bf(1.0 + i as f32 / 64.0)).collect();
        let before = r.clone();
        let mut out = vec![0u16; 64];
        rmsnorm_row(Some(&d), &mut r, &w, 1e-6, true, &mut out);
        let sum: Vec<f64> = (0..64).map(|i| f64::from(bf16_to_f32(d[i]) + bf16_to_f32(before[i]))).collect();
        for i in 0..64 {
            assert_eq!(bf16_to_f32(r[i]), round_bf(sum[i] as f32), "residual {i}");
        }
        let rms = (sum.iter().map(|v| v * v).sum::<f64>() / 64.0 + 1e-6).sqrt();
        for i in 0..64 {
            let want = sum[i] / rms * f64::from(bf16_to_f32(w[i]));
            assert!((f64::from(bf16_to_f32(out[i])) - want).abs() <= want.abs() / 64.0 + 1e-3, "{i}");
        }
        let mut r2 = before.clone();
        rmsnorm_row(Some(&d), &mut r2, &w, 1e-6, false, &mut out);
        assert_eq!(r2, before, "the final norm leaves the residual alone");
    }

    #[test]
    fn rope_at_position_zero_is_the_identity_and_rotates_pairs_later() {
        let t = rope_table(10_000.0, 8, 3);
        let x: Vec<u16> = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0].iter().map(|&v| bf(v)).collect();
        assert_eq!(norm_rope_head(&x, None, 1e-6, &t[..8]), x);
        let y = norm_rope_head(&x, None, 1e-6, &t[8..16]);
        // Pair (0, 4) rotates by angle 1 (inv_freq[0] = 1): norm kept up to bf16 rounding.
        let (a, b) = (bf16_to_f32(y[0]), bf16_to_f32(y[4]));
        assert!(((a * a + b * b).sqrt() - (1.0f32 + 25.0).sqrt()).abs() < 0.05, "{a} {b}");
        assert!((a - (1.0f32.cos() - 5.0 * 1.0f32.sin())).abs() < 0.05, "{a}");
    }

    #[test]
    fn attention_is_the_softmax_average_and_independent_of_tiling_position() {
        let hd = 8;
        let n = 100;
        let keys: Vec<Vec<u16>> =
            (0..n).map(|j| (0..hd).map(|d| bf(((j * 7 + d * 3) % 11) as f32 / 11.0 - 0.5)).collect()).collect();
        let vals: Vec<Vec<u16>> =
            (0..n).map(|j| (0..hd).map(|d| bf(((j * 5 + d) % 13) as f32 / 13.0)).collect()).collect();
        let q: Vec<u16> = (0..hd).map(|d| bf(d as f32 / 4.0 - 1.0)).collect();
        let kv = |s: usize| (keys[s].as_slice(), vals[s].as_slice());
        let slots: Vec<Option<usize>> = (0..n).map(Some).collect();
        let out = attention_head(&q, &slots, &kv);
        let scale = 1.0 / (hd as f64).sqrt();
        let s: Vec<f64> = (0..n)
            .map(|j| {
                (0..hd).map(|d| f64::from(bf16_to_f32(q[d])) * f64::from(bf16_to_f32(keys[j][d]))).sum::<f64>() * scale
            })
            .collect();
        let mx = s.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
        let z: f64 = e.iter().sum();
        for d in 0..hd {
            let want: f64 = (0..n).map(|j| e[j] * f64::from(bf16_to_f32(vals[j][d]))).sum::<f64>() / z;
            assert!((f64::from(bf16_to_f32(out[d])) - want).abs() < 4e-3, "{d}");
        }
        // Skipped keys (outside the cache) do not count.
        let mut holes = slots.clone();
        holes[3] = None;
        assert_ne!(attention_head(&q, &holes, &kv), out);
        // One key: its value exactly.
        assert_eq!(attention_head(&q, &slots[..1], &kv), vals[0]);
    }

    #[test]
    fn silu_mul_matches_the_definition() {
        for &(g, u) in &[(0.0f32, 3.0f32), (1.0, 2.0), (-3.0, 0.5), (-100.0, 1.0), (100.0, 1.0)] {
            let want = g as f64 / (1.0 + (-g as f64).exp()) * u as f64;
            let got = bf16_to_f32(silu_mul(bf(g), bf(u))) as f64;
            assert!((got - want).abs() <= want.abs() / 100.0 + 1e-6, "{g} {u}: {got} vs {want}");
        }
    }
}
