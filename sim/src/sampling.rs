//! Per-request sampling parameters, as vLLM 0.12.0's `SamplingParams` takes them
//! (`vllm/sampling_params.py`): `temperature` (0 = greedy, the default), `top_k`, `top_p`,
//! `seed`.
//!
//! A scenario request gives them flat (`"temperature": 0.7, "top_k": 20, ...`); the
//! resolved [`SamplingParams`] is what the trace header records. Greedy requests record
//! nothing new (the field is omitted), so greedy traces keep their bytes.

use serde::{Deserialize, Serialize};

/// vLLM `_SAMPLING_EPS`: a temperature below it is greedy.
pub const SAMPLING_EPS: f32 = 1e-5;
/// vLLM `_MAX_TEMP`: a positive temperature below it is raised to it (with a warning).
pub const MIN_RANDOM_TEMPERATURE: f32 = 1e-2;

/// The effective sampling parameters of one request.
///
/// Greedy (`temperature == 0`, the default) has `top_k == 0`, `top_p == 1` and no seed,
/// as vLLM resets them for greedy requests (`SamplingParams.__post_init__`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
