//! A bit-exact CPU model of one tensor-core block fused multiply-add: what
//! `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` computes for one output element,
//! `d = c + sum_k a[k] * b[k]`, which is not IEEE arithmetic: the products are exact, the
//! terms are aligned to the largest exponent with a fixed number of bits kept below it
//! (the rest cut off), added exactly, and the sum rounded once to f32. The parameters
//! ([`TcModel`]) are fitted on the device by the GPU test
//! `tensor_core_block_model_matches_the_mma` (`executor/tests/gpu_qwen.rs`), which runs
//! the instruction on random and adversarial operands and counts the mismatches of every
//! candidate; the chosen one is [`TcModel::HOPPER`].
//!
//! The model's shape follows Fasi, Higham, Mikaitis and Pranesh, "Numerical behavior of
//! NVIDIA tensor cores" (PeerJ CS 2021) and Khattak and Mikaitis, "Accurate models of
//! NVIDIA tensor cores" (arXiv 2512.07004): exact products, alignment with truncation,
//! no normalization inside the block, one rounding at the end.

/// How a product's exponent for the alignment is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductExp {
    /// The position of the product's leading bit (the normalized exact product).
    Actual,
    /// `exp(a) + exp(b)`: the product's significand in [1, 4) is not normalized first.
    Nominal,
}

/// Rounding of the block's exact sum to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Round to nearest, ties to even.
    Nearest,
    /// Round toward zero (truncate the magnitude).
    TowardZero,
}

/// One candidate model of the block FMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcModel {
    /// Bits kept below the largest term's leading bit when the terms are aligned.
    pub frac_bits: i32,
    pub product_exp: ProductExp,
    pub round: Round,
    /// `c` joins the products' alignment (true) or is added to the rounded block sum with
    /// an IEEE f32 addition (false).
    pub c_joint: bool,
    /// Products summed per block: 16 (one block) or 8 / 4 (k in index order, chained).
    pub block: usize,
}

impl TcModel {
    /// The model fitted to Hopper (H100) on the device.
    pub const HOPPER: TcModel =
        TcModel { frac_bits: 25, product_exp: ProductExp::Nominal, round: Round::TowardZero, c_joint: true, block: 16 };

    /// Every candidate the fitting test scores.
    pub fn candidates() -> Vec<TcModel> {
        let mut v = Vec::new();
        for block in [16, 8, 4] {
            for c_joint in [true, false] {
                for round in [Round::TowardZero, Round::Nearest] {
                    for product_exp in [ProductExp::Actual, ProductExp::Nominal] {
                        for frac_bits in 22..=30 {
                            v.push(TcModel { frac_bits, product_exp, round, c_joint, block });
                        }
                    }
                }
            }
        }
        v
    }

    /// `c + sum a[i] * b[i]` as the block FMA computes it (`a`, `b` bf16 bits, equal lengths).
    pub fn fma(&self, c: f32, a: &[u16], b: &[u16]) -> f32 {
        debug_assert_eq!(a.len(), b.len());
        let mut acc = c;
        for (ca, cb) in a.chunks(self.block).zip(b.chunks(self.block)) {
            acc = self.block_fma(acc, ca, cb);
        }
        acc
    }

    fn block_fma(&self, c: f32, a: &[u16], b: &[u16]) -> f32 {
        debug_assert!(a.len() <= 16);
        let mut terms = [Term::ZERO; 17];
        let mut n = 0;
        for (&x, &y) in a.iter().zip(b) {
            if let Some(t) = Term::product(x, y, self.product_exp) {
                if t.special {
                    // Infinities and NaNs are outside the fitted model: IEEE's answer.
                    return a.iter().zip(b).fold(c, |s, (&x, &y)| s + bf(x) * bf(y));
                }
                terms[n] = t;
                n += 1;
            }
        }
        if !c.is_finite() {
            return a.iter().zip(b).fold(c, |s, (&x, &y)| s + bf(x) * bf(y));
        }
        if self.c_joint {
            if let Some(t) = Term::f32(c) {
                terms[n] = t;
                n += 1;
            }
            if n == 0 {
                return c;
            }
            self.sum(&terms[..n])
        } else {
            if n == 0 {
                return c;
            }
            c + self.sum(&terms[..n])
        }
    }

    fn sum(&self, terms: &[Term]) -> f32 {
        // The alignment exponent never goes below -133 (the models' `min_exp_limit`).
        let top = terms.iter().map(|t| t.align_exp).max().unwrap_or(0).max(-133);
        let cut = top - self.frac_bits;
        let mut s: i128 = 0;
        for t in terms {
            let sh = t.lsb - cut;
            let m = if sh >= 0 {
                (t.mag as i128) << sh
            } else if -sh >= 100 {
                0
            } else {
                (t.mag as i128) >> -sh
            };
            s += if t.neg { -m } else { m };
        }
        round_f32(s < 0, s.unsigned_abs(), cut, self.round)
    }
}

/// [`TcModel::HOPPER`]'s block FMA over one half of a 32-element chunk, as the tensor
/// plan's kernels feed it (`dot_tensor`, qwen.cu `mma_chunk`): `c` plus the products of
/// elements `8 t + 4 half + j` (t, j in 0..4) of `x` and `w`. The same value as
/// `TcModel::HOPPER.fma` on those 16 elements, bit for bit (the test
/// `the_hopper_fast_path_equals_the_model` checks it on random and adversarial operands),
/// in 64-bit integers: with nominal product exponents every product's lowest bit sits 14
/// below its alignment exponent, so aligned to 25 bits below the top a product is at most
/// 2^27 and `c` at most 2^26, and 17 of them fit an i64. Infinities and NaNs go to the
/// model's own path.
/// Always inlined, so that a caller compiled for AVX2 or AVX-512 (`kernels_ref::dot_tensor`)
/// runs its 16-lane loops in vector registers.
#[inline(always)]
pub fn hopper_half_chunk(c: f32, x: &[u16], w: &[u16], half: usize) -> f32 {
    const M: TcModel = TcModel::HOPPER;
    const _: () = assert!(
        M.frac_bits == 25
            && matches!(M.product_exp, ProductExp::Nominal)
            && matches!(M.round, Round::TowardZero)
            && M.c_joint
            && M.block == 16
    );
    debug_assert!(x.len() >= 32 && w.len() >= 32 && half < 2);
    let (mut a, mut b) = ([0u16; 16], [0u16; 16]);
    for t in 0..4 {
        a[4 * t..4 * t + 4].copy_from_slice(&x[8 * t + 4 * half..][..4]);
        b[4 * t..4 * t + 4].copy_from_slice(&w[8 * t + 4 * half..][..4]);
    }
    // Branch-free over the 16 products in 32-bit lanes: significand with its implicit bit,
    // nominal exponent (a subnormal's is -126 = 1 - 127).
    let mut mag = [0u32; 16];
    let mut exp = [0i32; 16];
    let mut neg = [0i32; 16];
    let mut special = 0u32;
    let mut top = -133i32;
    for k in 0..16 {
        let (ea, eb) = (u32::from((a[k] >> 7) & 0xff), u32::from((b[k] >> 7) & 0xff));
        special |= u32::from(ea == 0xff) | u32::from(eb == 0xff);
        let ma = u32::from(a[k] & 0x7f) | (u32::from(ea != 0) << 7);
        let mb = u32::from(b[k] & 0x7f) | (u32::from(eb != 0) << 7);
        mag[k] = ma * mb;
        exp[k] = ea.max(1) as i32 + eb.max(1) as i32 - 254;
        neg[k] = -i32::from((a[k] ^ b[k]) >> 15);
        // A zero product takes no part in the alignment.
        top = top.max(if mag[k] != 0 { exp[k] } else { -1000 });
    }
    let cu = c.to_bits();
    if special != 0 || (cu >> 23) & 0xff == 0xff {
        return M.fma(c, &a, &b);
    }
    // c: its actual leading-bit exponent aligns it.
    let ce = ((cu >> 23) & 0xff) as i32;
    let cf = u64::from(cu & 0x7f_ffff);
    let (cmag, clsb) = if ce == 0 { (cf, -149) } else { (cf | 0x80_0000, ce - 150) };
    if cmag != 0 {
        top = top.max(clsb + 63 - cmag.leading_zeros() as i32);
    } else if mag.iter().all(|&m| m == 0) {
        return c;
    }
    let cut = top - M.frac_bits;
    // A product's lowest bit is 14 below its exponent: aligned, it is mag * 2^(exp - 14 -
    // cut) = (mag << 11) >> (top - exp), truncated.
    // Each is below 2^27, so 16 of them fit an i32.
    let mut sum32: i32 = 0;
    for k in 0..16 {
        let v = ((mag[k] << 11) >> (top - exp[k]).clamp(0, 31) as u32) as i32;
        sum32 += (v ^ neg[k]) - neg[k];
    }
    let mut sum = i64::from(sum32);
    if cmag != 0 {
        let sh = clsb - cut;
        let v = if sh >= 0 { cmag << sh } else { cmag >> (-sh).min(63) } as i64;
        sum += if cu >> 31 != 0 { -v } else { v };
    }
    round_f32_toward_zero(sum < 0, sum.unsigned_abs(), cut)
}

/// [`round_f32`] toward zero for a 64-bit magnitude.
#[inline]
fn round_f32_toward_zero(neg: bool, mag: u64, exp2: i32) -> f32 {
    if mag == 0 {
        return f32::from_bits(0);
    }
    let sign = if neg { 0x8000_0000u32 } else { 0 };
    let lead = exp2 + 63 - mag.leading_zeros() as i32;
    let q = if lead >= -126 { lead - 23 } else { -149 };
    let shift = q - exp2;
    let m = if shift <= 0 {
        mag << (-shift)
    } else if shift >= 64 {
        0
    } else {
        mag >> shift
    };
    if q == -149 && m < 1 << 23 {
        return f32::from_bits(sign | m as u32);
    }
    let biased = q + 150;
    if biased >= 255 {
        return f32::from_bits(sign | 0x7f7f_ffff);
    }
    f32::from_bits(sign | ((biased as u32) << 23) | (m as u32 & 0x7f_ffff))
}

fn bf(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// A finite nonzero term: `(-1)^neg * mag * 2^lsb`, aligned by `align_exp`.
#[derive(Clone, Copy)]
struct Term {
    neg: bool,
    mag: u64,
    lsb: i32,
    align_exp: i32,
    special: bool,
}

/// (significand, exponent of its lowest bit, exponent of the leading bit as normalized);
/// None for zero; `Err` for inf / NaN.
fn bf16_parts(h: u16) -> Result<Option<(u64, i32, i32)>, ()> {
    let e = i32::from((h >> 7) & 0xff);
    let f = u64::from(h & 0x7f);
    match e {
        0xff => Err(()),
        0 if f == 0 => Ok(None),
        0 => Ok(Some((f, -133, -126))),
        _ => Ok(Some((f | 0x80, e - 127 - 7, e - 127))),
    }
}

impl Term {
    const ZERO: Term = Term { neg: false, mag: 0, lsb: 0, align_exp: 0, special: false };

    fn product(a: u16, b: u16, pe: ProductExp) -> Option<Term> {
        let neg = ((a ^ b) & 0x8000) != 0;
        match (bf16_parts(a), bf16_parts(b)) {
            (Err(()), _) | (_, Err(())) => Some(Term { neg, mag: 0, lsb: 0, align_exp: 0, special: true }),
            (Ok(None), _) | (_, Ok(None)) => None,
            (Ok(Some((ma, la, ea))), Ok(Some((mb, lb, eb)))) => {
                let mag = ma * mb;
                let lsb = la + lb;
                let align_exp = match pe {
                    ProductExp::Actual => lsb + 63 - mag.leading_zeros() as i32,
                    ProductExp::Nominal => ea + eb,
                };
                Some(Term { neg, mag, lsb, align_exp, special: false })
            }
        }
    }

    fn f32(c: f32) -> Option<Term> {
        let u = c.to_bits();
        let e = ((u >> 23) & 0xff) as i32;
        let f = u64::from(u & 0x7f_ffff);
        let (mag, lsb) = match e {
            0 if f == 0 => return None,
            0 => (f, -149),
            _ => (f | 0x80_0000, e - 150),
        };
        Some(Term { neg: (u >> 31) != 0, mag, lsb, align_exp: lsb + 63 - mag.leading_zeros() as i32, special: false })
    }
}

/// `(-1)^neg * mag * 2^exp2` rounded to f32 (`mode`), subnormals and overflow included.
pub fn round_f32(neg: bool, mag: u128, exp2: i32, mode: Round) -> f32 {
    let sign = if neg { 0x8000_0000u32 } else { 0 };
    if mag == 0 {
        return f32::from_bits(0);
    }
    let len = 128 - mag.leading_zeros() as i32;
    let lead = exp2 + len - 1;
    // The result's lowest kept bit: 24 significant bits, or 2^-149 below the normal range.
    let q = if lead >= -126 { lead - 23 } else { -149 };
    let shift = q - exp2;
    let mut m: u128 = if shift <= 0 {
        mag << (-shift)
    } else if shift >= 128 {
        0
    } else {
        let kept = mag >> shift;
        let rem = mag & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        match mode {
            Round::TowardZero => kept,
            Round::Nearest if rem > half || (rem == half && kept & 1 == 1) => kept + 1,
            Round::Nearest => kept,
        }
    };
    let mut q = q;
    if m == 1 << 24 {
        m >>= 1;
        q += 1;
    }
    if q == -149 && m < 1 << 23 {
        return f32::from_bits(sign | m as u32);
    }
    let biased = q + 150;
    if biased >= 255 {
        return match mode {
            Round::Nearest => f32::from_bits(sign | 0x7f80_0000),
            Round::TowardZero => f32::from_bits(sign | 0x7f7f_ffff),
        };
    }
    f32::from_bits(sign | ((biased as u32) << 23) | (m as u32 & 0x7f_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> u16 {
        (x.to_bits() >> 16) as u16
    }

    #[test]
    fn round_f32_matches_ieee_casts_in_nearest_mode() {
        let mut s = 1u64;
        for _ in 0..20_000 {
            s = specreplay_sim::splitmix::splitmix(s);
            let mag = u128::from(s >> (s % 40)) | 1;
            let exp2 = (s % 300) as i32 - 200;
            let want = (mag as f64) * 2f64.powi(exp2);
            // f64 holds mag exactly below 2^53; its cast to f32 rounds to nearest even.
            if mag < 1 << 53 {
                assert_eq!(
                    round_f32(false, mag, exp2, Round::Nearest).to_bits(),
                    (want as f32).to_bits(),
                    "{mag} {exp2}"
                );
            }
        }
    }

    #[test]
    fn toward_zero_truncates_and_nearest_rounds() {
        // 2^24 + 1 is not representable: RZ gives 2^24, RN (tie to even) 2^24; 2^24 + 3 RN -> 2^24 + 4.
        assert_eq!(round_f32(false, (1 << 24) + 3, 0, Round::Nearest), 16_777_220.0);
        assert_eq!(round_f32(false, (1 << 24) + 3, 0, Round::TowardZero), 16_777_218.0);
        assert_eq!(round_f32(true, 3, -150, Round::TowardZero).to_bits(), 0x8000_0001);
    }

    #[test]
    fn an_exact_block_sum_needs_no_rounding_in_any_model() {
        // Small integers: every model sums them exactly.
        let a: Vec<u16> = (1..=16).map(|i| h(i as f32)).collect();
        let b: Vec<u16> = (1..=16).map(|i| h((17 - i) as f32)).collect();
        let want: f32 = (1..=16).map(|i| (i * (17 - i)) as f32).sum::<f32>() + 0.5;
        for m in TcModel::candidates() {
            assert_eq!(m.fma(0.5, &a, &b), want, "{m:?}");
        }
    }

    /// A bf16 drawn to hit the model's corners: zeros, subnormals, extreme and clustered
    /// exponents, now and then an infinity or NaN.
    fn odd_bf16(s: u64) -> u16 {
        let sign = ((s >> 60) as u16 & 1) << 15;
        let frac = (s >> 20) as u16 & 0x7f;
        let exp = match s % 16 {
            0 => 0,
            1 => 0xff * u16::from(s % 97 == 1),
            2 => 1,
            3 => 0xfe,
            4..=9 => 120 + (s >> 40) as u16 % 16,
            _ => (s >> 32) as u16 % 255,
        };
        sign | (exp << 7) | frac
    }

    #[test]
    fn the_hopper_fast_path_equals_the_model() {
        let mut s = 7u64;
        let mut next = || {
            s = specreplay_sim::splitmix::splitmix(s);
            s
        };
        for case in 0..200_000 {
            let (mut x, mut w) = ([0u16; 32], [0u16; 32]);
            for i in 0..32 {
                x[i] = odd_bf16(next());
                w[i] = odd_bf16(next());
            }
            let r = next();
            let c = match case % 5 {
                0 => 0.0,
                1 => -0.0,
                2 => f32::from_bits(r as u32 & 0x807f_ffff), // subnormal
                3 => f32::from_bits(r as u32),
                _ => (r % 1000) as f32 * 0.37 - 185.0,
            };
            for half in 0..2 {
                let (mut a, mut b) = ([0u16; 16], [0u16; 16]);
                for t in 0..4 {
                    for j in 0..4 {
                        a[4 * t + j] = x[8 * t + 4 * half + j];
                        b[4 * t + j] = w[8 * t + 4 * half + j];
                    }
                }
                let want = TcModel::HOPPER.fma(c, &a, &b);
                let got = hopper_half_chunk(c, &x, &w, half);
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "case {case} half {half}: {got:e} vs model {want:e} (c {c:e}, x {x:04x?}, w {w:04x?})"
                );
            }
        }
    }

    /// `kernels_ref::dot_tensor` (each vector path this CPU has) and its portable body equal
    /// the general model chained in the tensor plan's order, on operands with every corner.
    #[test]
    fn dot_tensor_on_every_cpu_path_equals_the_model() {
        use super::super::kernels_ref::{dot_tensor, dot_tensor_body, MMA_SPLIT};
        let mut s = 11u64;
        let mut next = || {
            s = specreplay_sim::splitmix::splitmix(s);
            s
        };
        for (case, k) in [32usize, 64, 96, 256, 1024].into_iter().cycle().take(3_000).enumerate() {
            let x: Vec<u16> = (0..k).map(|_| odd_bf16(next())).collect();
            let w: Vec<u16> = (0..k).map(|_| odd_bf16(next())).collect();
            let chunks = k / 32;
            let mut want = 0f32;
            for sl in 0..MMA_SPLIT {
                let mut acc = 0f32;
                for c in sl * chunks / MMA_SPLIT..(sl + 1) * chunks / MMA_SPLIT {
                    for half in 0..2 {
                        let pick = |v: &[u16]| -> Vec<u16> {
                            (0..16).map(|i| v[c * 32 + 8 * (i / 4) + 4 * half + i % 4]).collect()
                        };
                        acc = TcModel::HOPPER.fma(acc, &pick(&x), &pick(&w));
                    }
                }
                want = if sl == 0 { acc } else { want + acc };
            }
            let mut paths = vec![("dispatch", dot_tensor(&x, &w)), ("portable", dot_tensor_body(&x, &w))];
            #[cfg(target_arch = "x86_64")]
            {
                use super::super::kernels_ref::{dot_tensor_avx2, dot_tensor_avx512};
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    paths.push(("avx2", unsafe { dot_tensor_avx2(&x, &w) }));
                }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
                    // SAFETY: the CPU supports AVX-512 F and BW (checked just above).
                    paths.push(("avx512", unsafe { dot_tensor_avx512(&x, &w) }));
                }
            }
            for (path, got) in paths {
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "case {case} K {k} {path}: {got:e} vs model {want:e}"
                );
            }
        }
    }

    #[test]
    fn truncation_drops_a_small_term_below_the_kept_bits() {
        // 1 + 2^-30: with 25 kept bits the small product is cut, with IEEE-like RN also lost.
        let a = [h(1.0), h(2f32.powi(-15)), 0, 0];
        let b = [h(1.0), h(2f32.powi(-15)), 0, 0];
        let m = TcModel {
            frac_bits: 25,
            product_exp: ProductExp::Actual,
            round: Round::TowardZero,
            c_joint: true,
            block: 4,
        };
        assert_eq!(m.fma(0.0, &a, &b), 1.0);
        // A negative tiny term under truncation toward zero of each aligned term: the sum
        // 1 - 2^-30 is cut to 1 - 0 = 1 (the term is truncated to 0 before the addition).
        let a2 = [h(1.0), h(-(2f32.powi(-15))), 0, 0];
        assert_eq!(m.fma(0.0, &a2, &b), 1.0);
    }
}
