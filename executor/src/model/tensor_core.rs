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
