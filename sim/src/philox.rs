//! The one random generator of random-mode sampling: Philox4x32-10 (Salmon, Moraes, Dror,
//! Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11; the Random123 library),
//! counter-based, keyed by `(seed, request, position, purpose)`, and its mapping to the
//! uniform and exponential variates the rejection sampler consumes.
//!
//! vLLM 0.12.0 draws from per-request `torch.Generator`s (CUDA Philox with offset
//! bookkeeping, `vllm/v1/sample/rejection_sampler.py` `generate_uniform_probs`,
//! `sample_recovered_tokens`); specreplay replaces that stream with a counter-based one so
//! that every draw is a pure function of where it is used, identical on CPU and GPU
//! (`executor/kernels/random.cu` is the CUDA twin) and independent of what other rows or
//! discarded samples did. ARCHITECTURE.md ("Random-mode sampling: the generator")
//! specifies the layout so a third twin can be written.
//!
//! Only IEEE-754 basic operations (+, −, ×, ÷ in binary64, round to nearest even, no
//! fused multiply-add) and exact bit manipulation are used, so [`ln`] and [`exp`] give the
//! same bits on every conforming machine; they are accurate to a few ulp, not correctly
//! rounded — what matters is that both twins compute the same expression tree.

/// Philox4x32 round multipliers (Random123 `PHILOX_M4x32_0`, `PHILOX_M4x32_1`).
pub const M0: u32 = 0xD251_1F53;
pub const M1: u32 = 0xCD9E_8D57;
/// Key schedule increments (Random123 `PHILOX_W32_0`, `PHILOX_W32_1`).
pub const W0: u32 = 0x9E37_79B9;
pub const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds: the Random123 `philox4x32_R(10, ctr, key)`.
///
/// Round: `(hi0, lo0) = M0 × c0`, `(hi1, lo1) = M1 × c2` (64-bit products),
/// `c = [hi1 ⊕ c1 ⊕ k0, lo1, hi0 ⊕ c3 ⊕ k1, lo0]`; the key is bumped by `(W0, W1)`
/// (wrapping) before every round but the first.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

/// What a draw is for: the third counter word. Distinct purposes never share a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Purpose {
    /// The exponential vector of a plain (bonus) sample: `argmax_v p[v] / E[v]`
    /// (vLLM `Sampler` random path, `probs.div_(q.exponential_())`).
    Sample = 1,
    /// The uniform `u_j` that decides draft j (`generate_uniform_probs`).
    Accept = 2,
    /// The row's exponential vector for recovered tokens, shared by all its draft
    /// positions (`sample_recovered_tokens`).
    Recover = 3,
}

/// Where a draw is used. `request` is the request's index in arrival order (the
/// scheduler's index), `position` the token position the draw decides (see
/// ARCHITECTURE.md for which position each purpose uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    pub seed: u64,
    pub request: u32,
    pub position: u32,
    pub purpose: Purpose,
}

impl Stream {
    /// Output word `i` of the stream: block `i / 4` (the fourth counter word), lane `i % 4`.
    /// Counter `[request, position, purpose, i / 4]`, key `[seed low 32 bits, seed high 32 bits]`.
    pub fn word(&self, i: u32) -> u32 {
        self.block(i / 4)[(i % 4) as usize]
    }

    /// Block `b` of the stream (four words).
    pub fn block(&self, b: u32) -> [u32; 4] {
        philox4x32_10(
            [self.request, self.position, self.purpose as u32, b],
            [self.seed as u32, (self.seed >> 32) as u32],
        )
    }
}

/// 2^-24, exact.
const TWO_M24: f64 = 1.0 / 16_777_216.0;

/// A uniform in `[0, 1)` from one word: `(x >> 8) × 2^-24`, an f32 with 24 random bits
/// (vLLM's uniforms are float32 `torch.rand`).
pub fn uniform_f32(x: u32) -> f32 {
    ((x >> 8) as f32) * (TWO_M24 as f32)
}

/// A uniform in `(0, 1)` (never 0 or 1) from one word: `((x >> 8) + 0.5) × 2^-24`, exact
/// in binary64; the argument of [`exponential`].
pub fn open_uniform(x: u32) -> f64 {
    (f64::from(x >> 8) + 0.5) * TWO_M24
}

/// An Exp(1) variate from one word: `-ln(open_uniform(x))`, strictly positive and finite.
pub fn exponential(x: u32) -> f64 {
    -ln(open_uniform(x))
}

/// ln 2 split for Cody–Waite reduction: `LN2_HI` has 32 trailing zero bits, so
/// `k × LN2_HI` is exact for |k| < 2^21.
pub const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
/// `ln 2 − LN2_HI` to binary64 precision.
pub const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
const SQRT2: f64 = std::f64::consts::SQRT_2;

/// Natural logarithm of a positive normal binary64 `x` from basic operations only.
/// `x = m × 2^e` with `m ∈ [√2/2, √2)`, `s = (m − 1)/(m + 1)`, `z = s²`,
/// `ln m = 2s(1 + z/3 + z²/5 + … + z¹¹/23)` (Horner, from the highest term),
/// `ln x = e·LN2_HI + (e·LN2_LO + ln m)`. Zero gives −∞, a negative or NaN input NaN,
/// +∞ itself; subnormal inputs are scaled by 2^54 first.
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x == f64::INFINITY {
        return x;
    }
    let mut bits = x.to_bits();
    let mut e: i64 = 0;
    if bits >> 52 == 0 {
        // Subnormal: scale into the normal range (exact).
        bits = (x * 18_014_398_509_481_984.0).to_bits();
        e = -54;
    }
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    if m > SQRT2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    // 1/(2i+1) for i = 11 down to 1, each a correctly rounded binary64 constant.
    let mut p = 1.0 / 23.0;
    for d in [21.0, 19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0] {
        p = p * z + 1.0 / d;
    }
    p = p * z + 1.0;
    let lnm = 2.0 * s * p;
    let ef = e as f64;
    ef * LN2_HI + (ef * LN2_LO + lnm)
}

/// `e^x` from basic operations only: `k = floor(x / ln 2 + 0.5)`,
/// `r = (x − k·LN2_HI) − k·LN2_LO`, `e^r` by its Taylor series to `r^13/13!` (Horner,
/// from the highest term), times `2^k` built from bits (in two factors when `k` is 1024
/// or below the normal range). `x > 709.78` gives +∞, `x < −745.2` gives 0, NaN gives NaN.
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.782_712_893_384 {
        return f64::INFINITY;
    }
    if x < -745.2 {
        return 0.0;
    }
    let k = (x * std::f64::consts::LOG2_E + 0.5).floor();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // 1/i! for i = 13 down to 2 as products of correctly rounded reciprocals would
    // differ between twins only if written differently: use exact division by i.
    let mut p = 1.0;
    for i in (1..=13).rev() {
        p = 1.0 + p * r / f64::from(i);
    }
    let k = k as i64;
    if k > 1023 {
        // Just below the overflow threshold: 2^k in two factors.
        p * pow2(k - 1) * 2.0
    } else if k >= -1022 {
        p * pow2(k)
    } else {
        // 2^k below the normal range: two exact scalings.
        p * pow2(k + 600) * pow2(-600)
    }
}

/// `2^k` for `-1022 <= k <= 1023`, from its bits.
fn pow2(k: i64) -> f64 {
    debug_assert!((-1022..=1023).contains(&k));
    f64::from_bits(((k + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<u32> {
        s.split(' ').map(|w| u32::from_str_radix(w, 16).unwrap()).collect()
    }

    /// The "philox4x32 10" known-answer vectors of Random123 (`tests/kat_vectors`,
    /// DEShawResearch/random123 v1.14.0): counter words, key words, expected output.
    #[test]
    fn random123_known_answer_vectors() {
        let kat = [
            ("00000000 00000000 00000000 00000000", "00000000 00000000", "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
            ("ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "408f276d 41c83b0e a20bc7c6 6d5451fd"),
            ("243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "d16cfe09 94fdcceb 5001e420 24126ea1"),
        ];
        for (c, k, want) in kat {
            let (c, k) = (words(c), words(k));
            let got = philox4x32_10([c[0], c[1], c[2], c[3]], [k[0], k[1]]);
            assert_eq!(got.to_vec(), words(want), "ctr {c:x?} key {k:x?}");
        }
    }

    #[test]
    fn streams_are_keyed_by_every_coordinate() {
        let base = Stream { seed: 0x1234_5678_9abc_def0, request: 3, position: 17, purpose: Purpose::Accept };
        let w = base.word(0);
        assert_ne!(w, Stream { seed: base.seed ^ (1 << 40), ..base }.word(0), "seed high word");
        assert_ne!(w, Stream { seed: base.seed ^ 1, ..base }.word(0), "seed low word");
        assert_ne!(w, Stream { request: 4, ..base }.word(0));
        assert_ne!(w, Stream { position: 18, ..base }.word(0));
        assert_ne!(w, Stream { purpose: Purpose::Recover, ..base }.word(0));
        // Word i is lane i % 4 of block i / 4, counter [request, position, purpose, block].
        let b1 = philox4x32_10([3, 17, 2, 1], [0x9abc_def0, 0x1234_5678]);
        assert_eq!([base.word(4), base.word(5), base.word(6), base.word(7)], b1);
        assert_eq!(base.word(0), base.block(0)[0]);
    }

    #[test]
    fn uniform_and_exponential_ranges() {
        assert_eq!(uniform_f32(0), 0.0);
        assert_eq!(uniform_f32(u32::MAX), 1.0 - f32::EPSILON / 2.0);
        assert_eq!(uniform_f32(0x100), (TWO_M24 as f32));
        assert_eq!(open_uniform(0), 0.5 * TWO_M24);
        assert!(open_uniform(u32::MAX) < 1.0);
        assert!(exponential(u32::MAX) > 0.0 && exponential(0).is_finite());
        // -ln(2^-25) = 25 ln 2.
        assert!((exponential(0) - 25.0 * std::f64::consts::LN_2).abs() < 1e-14);
    }

    /// Relative error in ulps of `got` against the platform's libm `want`.
    fn ulps(got: f64, want: f64) -> f64 {
        ((got - want) / (want.abs() * f64::EPSILON).max(f64::MIN_POSITIVE)).abs()
    }

    #[test]
    fn ln_is_accurate_over_the_whole_range() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut worst: f64 = 0.0;
        for _ in 0..200_000 {
            x = crate::splitmix::splitmix(x);
            // Every finite positive binary64, subnormals included.
            let v = f64::from_bits(x & 0x7FEF_FFFF_FFFF_FFFF);
            if v == 0.0 {
                continue;
            }
            let (got, want) = (ln(v), v.ln());
            worst = worst.max(if want.abs() < 1e-300 { (got - want).abs() } else { ulps(got, want) });
        }
        assert!(worst <= 2.0, "worst ln error {worst} ulp");
        for v in [1.0, 2.0, 0.5, SQRT2, std::f64::consts::E, f64::MIN_POSITIVE, 5e-324, f64::MAX] {
            assert!(ulps(ln(v), v.ln()) <= 2.0 || (ln(v) - v.ln()).abs() < 1e-15, "ln({v}) = {}", ln(v));
        }
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert!(ln(-1.0).is_nan() && ln(f64::NAN).is_nan());
        assert_eq!(ln(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn exp_is_accurate_over_the_whole_range() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut worst: f64 = 0.0;
        for _ in 0..200_000 {
            x = crate::splitmix::splitmix(x);
            let v = (x >> 11) as f64 / (1u64 << 53) as f64 * 1400.0 - 700.0;
            worst = worst.max(ulps(exp(v), v.exp()));
        }
        assert!(worst <= 2.0, "worst exp error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(1000.0), f64::INFINITY);
        assert!(ulps(exp(709.78), 709.78f64.exp()) <= 2.0, "k = 1024 is finite");
        assert!(exp(f64::NAN).is_nan());
        // The subnormal range is reached with two scalings.
        let t = exp(-740.0);
        assert!(t > 0.0 && ((t - (-740.0f64).exp()) / t).abs() < 1e-9, "{t}");
    }
}
