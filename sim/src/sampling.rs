//! Per-request sampling parameters, as vLLM 0.12.0's `SamplingParams` takes them
//! (`vllm/sampling_params.py`): `temperature` (0 = greedy, the default), `top_k`, `top_p`,
//! `seed`.
//!
//! A scenario request gives them flat (`"temperature": 0.7, "top_k": 20, ...`); the
//! resolved [`SamplingParams`] is what the trace header records. Greedy requests record
//! nothing new (the field is omitted), so greedy traces keep their bytes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// vLLM `_SAMPLING_EPS`: a temperature below it is greedy.
pub const SAMPLING_EPS: f32 = 1e-5;
/// vLLM `_MAX_TEMP`: a positive temperature below it is raised to it (with a warning).
pub const MIN_RANDOM_TEMPERATURE: f32 = 1e-2;

/// The effective sampling parameters of one request.
///
/// Greedy (`temperature == 0`, the default) has `top_k == 0`, `top_p == 1` and no seed,
/// as vLLM resets them for greedy requests (`SamplingParams.__post_init__`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// 0 for greedy, else in `[0.01, ∞)`.
    pub temperature: f32,
    /// 0 = all tokens (vLLM's `-1` and `0` both mean disabled), else the k most likely.
    pub top_k: u32,
    /// In `(0, 1]`; 1 = disabled.
    pub top_p: f32,
    /// The request's generator seed: given, or derived from the scenario's oracle seed
    /// ([`derive_seed`]). `None` for greedy requests.
    pub seed: Option<u64>,
}

/// Validation refuses NaN, so equality is an equivalence.
impl Eq for SamplingParams {}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, seed: None }
    }
}

impl SamplingParams {
    /// Greedy: the request is verified by argmax (`rejection_greedy_sample_kernel`).
    pub fn is_greedy(&self) -> bool {
        self.temperature < SAMPLING_EPS
    }

    /// The default (greedy) parameters, which a trace omits.
    pub fn is_default(&self) -> bool {
        *self == SamplingParams::default()
    }

    /// Resolves a request's given fields as `SamplingParams.__post_init__` and
    /// `_verify_args` do: a negative or non-finite temperature, `top_p` outside `(0, 1]`
    /// and `top_k < -1` are errors (one message, no panic); a temperature in
    /// `(0, 0.01)` becomes 0.01; a greedy request gets `top_k = 0`, `top_p = 1`, no seed;
    /// a random request without a seed gets `derived_seed`.
    pub fn resolve(
        temperature: Option<f64>,
        top_k: Option<i64>,
        top_p: Option<f64>,
        seed: Option<u64>,
        derived_seed: u64,
    ) -> Result<SamplingParams, String> {
        let t = temperature.unwrap_or(0.0);
        if !t.is_finite() || t < 0.0 {
            return Err(format!("temperature must be a finite number >= 0, got {t}"));
        }
        let p = top_p.unwrap_or(1.0);
        if !(p > 0.0 && p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {p}"));
        }
        let k = top_k.unwrap_or(0);
        if k < -1 {
            return Err(format!("top_k must be -1 (disable), 0 (disable) or at least 1, got {k}"));
        }
        let k = u32::try_from(k.max(0)).map_err(|_| format!("top_k {k} is too large"))?;
        let mut t = t as f32;
        if t > 0.0 && t < MIN_RANDOM_TEMPERATURE {
            t = MIN_RANDOM_TEMPERATURE;
        }
        if t < SAMPLING_EPS {
            return Ok(SamplingParams::default());
        }
        Ok(SamplingParams { temperature: t, top_k: k, top_p: p as f32, seed: Some(seed.unwrap_or(derived_seed)) })
    }
}

/// The seed of a random request that gives none: a SplitMix64 mix of the scenario seed
/// (the oracle's) and the request's index in the scenario, so runs stay deterministic and
/// requests get distinct streams.
pub fn derive_seed(scenario_seed: u64, request_index: usize) -> u64 {
    crate::splitmix::splitmix(scenario_seed ^ crate::splitmix::splitmix(0x5a4d_11e5 ^ request_index as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_greedy_and_greedy_resets_the_rest() {
        let g = SamplingParams::resolve(None, None, None, None, 9).unwrap();
        assert!(g.is_greedy() && g.is_default());
        let g = SamplingParams::resolve(Some(0.0), Some(5), Some(0.5), Some(3), 9).unwrap();
        assert_eq!(g, SamplingParams::default(), "vLLM resets top_k/top_p for greedy");
    }

    #[test]
    fn random_requests_resolve_as_vllm() {
        let r = SamplingParams::resolve(Some(0.7), Some(-1), Some(0.9), None, 9).unwrap();
        assert_eq!(r, SamplingParams { temperature: 0.7, top_k: 0, top_p: 0.9, seed: Some(9) });
        let r = SamplingParams::resolve(Some(0.001), Some(20), None, Some(4), 9).unwrap();
        assert_eq!(r, SamplingParams { temperature: 0.01, top_k: 20, top_p: 1.0, seed: Some(4) });
        assert!(!r.is_greedy());
    }

    #[test]
    fn invalid_values_are_one_message() {
        for (t, k, p, want) in [
            (Some(-0.5), None, None, "temperature"),
            (Some(f64::NAN), None, None, "temperature"),
            (Some(f64::INFINITY), None, None, "temperature"),
            (None, None, Some(0.0), "top_p"),
            (None, None, Some(1.5), "top_p"),
            (None, None, Some(f64::NAN), "top_p"),
            (None, Some(-2), None, "top_k"),
            (None, Some(1 << 40), None, "top_k"),
        ] {
            let e = SamplingParams::resolve(t, k, p, None, 0).unwrap_err();
            assert!(e.starts_with(want) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn derived_seeds_differ_per_request_and_scenario() {
        assert_ne!(derive_seed(7, 0), derive_seed(7, 1));
        assert_ne!(derive_seed(7, 0), derive_seed(8, 0));
        assert_eq!(derive_seed(7, 3), derive_seed(7, 3));
    }
}

/// The target distribution of one position, as vLLM's `compute_probs`
/// (`vllm/v1/sample/rejection_sampler.py`) and `apply_top_k_top_p`
/// (`vllm/v1/sample/ops/topk_topp_sampler.py`) derive it from logits: divide by the
/// temperature; top-k keeps every logit ≥ the k-th largest (ties at the threshold kept);
/// top-p orders tokens ascending by (logit, index), and masks every token whose cumulative
/// probability in that order is ≤ 1 − top_p, always keeping the largest; then the softmax.
///
/// Arithmetic is defined so that a GPU computes the same bits with a different algorithm
/// (`executor/kernels/random_rows.cu`): binary64 basic operations and
/// [`crate::philox::exp`] only; sums in the fixed [`lane_sum`] order; the top-k threshold is
/// a value (the k-th largest in total order), and top-p's cumulative sums are exact
/// integers: each probability `q` of the row after top-k counts as `⌊q·2^62⌋` and the
/// limit is `⌊(1 − top_p)·2^62⌋` (integer sums do not depend on the order they are taken
/// in). `logits` with −∞ entries are masked tokens (probability 0).
pub fn target_probs(logits: &[f64], params: &SamplingParams) -> Vec<f64> {
    debug_assert!(!params.is_greedy());
    let t = f64::from(params.temperature);
    let mut l: Vec<f64> = logits.iter().map(|&x| x / t).collect();
    let n = l.len();
    if params.top_k > 0 && (params.top_k as usize) < n {
        let threshold = kth_largest(&l, params.top_k as usize);
        for x in l.iter_mut() {
            if *x < threshold {
                *x = f64::NEG_INFINITY;
            }
        }
    }
    if params.top_p < 1.0 {
        let q = softmax(&l);
        let limit = top_p_limit(params.top_p);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| l[a].total_cmp(&l[b]).then(a.cmp(&b)));
        let mut cum = 0u64;
        for (r, &i) in order.iter().enumerate() {
            cum += fixed62(q[i]);
            if cum <= limit && r + 1 < n {
                l[i] = f64::NEG_INFINITY;
            } else {
                break; // cumulative sums only grow
            }
        }
    }
    softmax(&l)
}

/// The k-th largest value of `x` in IEEE total order (`1 ≤ k ≤ x.len()`).
pub fn kth_largest(x: &[f64], k: usize) -> f64 {
    let mut sorted = x.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    sorted[k - 1]
}

/// `⌊q · 2^62⌋` for a probability `q` in `[0, 1]` (exact: scaling by a power of two, then
/// truncation).
pub fn fixed62(q: f64) -> u64 {
    (q * 4_611_686_018_427_387_904.0) as u64
}

/// The top-p mask limit `⌊(1 − top_p) · 2^62⌋`, `top_p` widened to binary64.
pub fn top_p_limit(top_p: f32) -> u64 {
    fixed62(1.0 - f64::from(top_p))
}

/// Lanes of [`lane_sum`] (a CUDA block of this many threads computes it directly).
pub const SUM_LANES: usize = 256;

/// `Σ x` in the order both twins use: lane `t` (`0..256`) adds `x[t], x[t + 256], …` left
/// to right starting from 0; then for `s = 128, 64, …, 1`, lane `i < s` becomes
/// `lane[i] + lane[i + s]`; the sum is lane 0.
pub fn lane_sum(x: &[f64]) -> f64 {
    let mut lanes = [0.0f64; SUM_LANES];
    for (i, &v) in x.iter().enumerate() {
        lanes[i % SUM_LANES] += v;
    }
    let mut s = SUM_LANES / 2;
    while s > 0 {
        for i in 0..s {
            lanes[i] += lanes[i + s];
        }
        s /= 2;
    }
    lanes[0]
}

/// `exp(x_v − max) / Σ exp(x_u − max)`, the sum in [`lane_sum`] order; −∞ entries give 0.
pub fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|&v| if v == f64::NEG_INFINITY { 0.0 } else { crate::philox::exp(v - m) }).collect();
    let sum = lane_sum(&e);
    e.into_iter().map(|v| v / sum).collect()
}

#[cfg(test)]
mod prob_tests {
    use super::*;

    fn params(t: f32, k: u32, p: f32) -> SamplingParams {
        SamplingParams { temperature: t, top_k: k, top_p: p, seed: Some(1) }
    }

    #[test]
    fn temperature_one_reproduces_the_distribution_and_two_flattens_it() {
        let p = [0.5f64, 0.25, 0.125, 0.125];
        let l: Vec<f64> = p.iter().map(|&x| crate::philox::ln(x)).collect();
        let q = target_probs(&l, &params(1.0, 0, 1.0));
        for (a, b) in q.iter().zip(p) {
            assert!((a - b).abs() < 1e-15, "{q:?}");
        }
        // T = 2: p^(1/2) normalised.
        let q = target_probs(&l, &params(2.0, 0, 1.0));
        let r: Vec<f64> = p.iter().map(|x| x.sqrt()).collect();
        let s: f64 = r.iter().sum();
        for (a, b) in q.iter().zip(&r) {
            assert!((a - b / s).abs() < 1e-12, "{q:?}");
        }
    }

    #[test]
    fn top_k_and_top_p_mask_as_vllm() {
        let p = [0.1f64, 0.4, 0.2, 0.3];
        let l: Vec<f64> = p.iter().map(|&x| crate::philox::ln(x)).collect();
        let q = target_probs(&l, &params(1.0, 2, 1.0));
        assert_eq!(q[0], 0.0);
        assert_eq!(q[2], 0.0);
        assert!((q[1] - 4.0 / 7.0).abs() < 1e-12 && (q[3] - 3.0 / 7.0).abs() < 1e-12, "{q:?}");
        // top_p 0.7: ascending 0.1, 0.2, 0.3, 0.4; cumulative 0.1, 0.3 ≤ 0.3 masked, 0.6 kept.
        let q = target_probs(&l, &params(1.0, 0, 0.7));
        assert_eq!((q[0], q[2]), (0.0, 0.0), "{q:?}");
        // top_p tiny keeps only the largest.
        let q = target_probs(&l, &params(1.0, 0, 0.01));
        assert_eq!(q, vec![0.0, 1.0, 0.0, 0.0]);
        // top_k 3 then top_p 0.5 over what is left (0.4, 0.2, 0.3)/0.9.
        let q = target_probs(&l, &params(1.0, 3, 0.5));
        assert_eq!((q[0], q[2]), (0.0, 0.0), "{q:?}");
    }
}
