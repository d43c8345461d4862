//! Greedy rejection sampling (`vllm/v1/sample/rejection_sampler.py`,
//! `rejection_greedy_sample_kernel`), with the target model as an oracle.

use crate::device::RowPlan;
use crate::error::SimError;
use crate::oracle::TargetModel;
use crate::trace::RandomDraws;

/// One batch row's verification input.
pub struct RowInput<'a> {
    pub req_id: &'a str,
    pub prompt_len: usize,
    /// Tokens whose KV is already computed, followed by this step's scheduled input ids
    /// (the real context the target model attends to).
    pub context: &'a [u32],
    /// Length of `context` up to and including the last non-draft input token.
    pub verify_from: usize,
    /// Drafts as read back from the input buffer (the last `drafts.len()` inputs).
    pub drafts: &'a [u32],
}

/// The sampler output row: accepted drafts, then the target token at the first
/// mismatch or the bonus token, padded with -1 to `width` (= max_spec_len + 1).
pub fn greedy_row(model: &dyn TargetModel, row: &RowInput<'_>, width: usize) -> Result<Vec<i64>, SimError> {
    debug_assert!(row.drafts.len() < width);
    debug_assert_eq!(row.verify_from + row.drafts.len(), row.context.len());
    let mut out = Vec::with_capacity(width);
    for (j, &d) in row.drafts.iter().enumerate() {
        let t = model.next_token(row.req_id, row.prompt_len, &row.context[..row.verify_from + j])?;
        out.push(i64::from(t));
        if t != d {
            break;
        }
    }
    if out.len() == row.drafts.len() && out.iter().zip(row.drafts).all(|(&o, &d)| o == i64::from(d)) {
        let bonus = model.next_token(row.req_id, row.prompt_len, row.context)?;
        out.push(i64::from(bonus));
    }
    out.resize(width, -1);
    Ok(out)
}

/// vLLM 0.12.0's random rejection rule for n-gram drafts (`rejection_sampler.py`:
/// `rejection_random_sample_kernel` with `IS_NGRAM`, `sample_recovered_tokens`,
/// `generate_uniform_probs`; the bonus from `Sampler`), with specreplay's generator
/// (`crate::philox`, ARCHITECTURE.md "Random-mode sampling: the generator").
///
/// `targets[j]` is the target distribution at draft position j (`j < drafts.len()`) and
/// `targets[drafts.len()]` the bonus position's; `first_pos` the sequence position of the
/// first draft (or of the sampled token when there are no drafts). The draft
/// distribution is one-hot, so draft j is accepted iff `p_j(d_j) ≥ u_j`; at the first
/// rejection the recovered token `argmax_v p_j[v]·[v ≠ d_j] / E_v` is emitted (one
/// exponential vector per row, shared by its positions) and the row stops; if every draft
/// is accepted the bonus `argmax_v p_n[v] / E'_v` follows. Returns the emitted tokens.
pub fn random_row(targets: &[Vec<f64>], drafts: &[u32], seed: u64, request: u32, first_pos: u32) -> Vec<u32> {
    random_row_variant(targets, drafts, seed, request, first_pos, false)
}

/// [`random_row`], or with `biased` the known-wrong variant whose recovered token is drawn
/// from `p_j` without removing the draft (the negative control of the losslessness test).
pub fn random_row_variant(
    targets: &[Vec<f64>],
    drafts: &[u32],
    seed: u64,
    request: u32,
    first_pos: u32,
    biased: bool,
) -> Vec<u32> {
    use crate::philox::{uniform_f32, Purpose, Stream};
    debug_assert_eq!(targets.len(), drafts.len() + 1);
    let n = drafts.len() as u32;
    let stream = |position, purpose| Stream { seed, request, position, purpose };
    // 1. the bonus sample (drawn first in vLLM; independent here by construction).
    let bonus = race(&targets[drafts.len()], None, &stream(first_pos + n, Purpose::Sample));
    let recover = stream(first_pos, Purpose::Recover);
    let mut out = Vec::with_capacity(drafts.len() + 1);
    for (j, &d) in drafts.iter().enumerate() {
        // 2. the uniform of draft j.
        let u = uniform_f32(stream(first_pos + j as u32, Purpose::Accept).word(0));
        let p = &targets[j];
        if p[d as usize] >= f64::from(u) {
            out.push(d);
            continue;
        }
        // 3. the recovered token from the row's shared exponential vector.
        let excluded = if biased { None } else { Some(d) };
        out.push(race(p, excluded, &recover));
        return out;
    }
    out.push(bonus);
    out
}

/// The generator keys and uniforms of a random-mode row ([`RandomDraws`]): what the trace
/// records so a reader can re-derive the row's decisions without the generator's state.
pub fn draws(r: &RowPlan) -> RandomDraws {
    use crate::philox::{Purpose, Stream};
    let seed = r.sampling.seed.unwrap_or_default();
    let (request, position) = (r.req as u32, r.first_sample_position() as u32);
    let uniforms = (0..r.num_draft as u32)
        .map(|j| Stream { seed, request, position: position + j, purpose: Purpose::Accept }.word(0) >> 8)
        .collect();
    RandomDraws { seed, request, position, uniforms }
}

/// `argmax_v p[v] / E_v` over `v ≠ excluded`, lowest index on ties (vLLM's exponential
/// race, `probs.div(q).argmax()`), `E_v` = [`crate::philox::exponential`] of word `v` of
/// `stream` (read a Philox block, four words, at a time). A zero-probability token scores
/// 0 and never beats a positive one.
pub fn race(p: &[f64], excluded: Option<u32>, stream: &crate::philox::Stream) -> u32 {
    use crate::philox::exponential;
    let mut best = 0u32;
    let mut best_score = -1.0f64;
    for (b, chunk) in p.chunks(4).enumerate() {
        let words = stream.block(b as u32);
        for (lane, &pv) in chunk.iter().enumerate() {
            let v = (4 * b + lane) as u32;
            let score = if Some(v) == excluded || pv == 0.0 { 0.0 } else { pv / exponential(words[lane]) };
            if score > best_score {
                best_score = score;
                best = v;
            }
        }
    }
    best
}

#[cfg(test)]
mod random_tests {
    //! Losslessness of the random rule, position by position (issue 15 acceptance).
    //!
    //! Pre-registered design. Each configuration fixes a draft path `d_0..d_{k-1}` and the
    //! targets `p_j` after the context plus `d_0..d_{j-1}`; a sample is one row with seed
    //! `s` (s = 0, 1, ...). For every emitted position `j` (0..=k) the samples that reach it
    //! (drafts `0..j` accepted) must emit a token distributed as `p_j`: chi-square against
    //! `p_j` with bins of expected count < 5 pooled, tested when at least 100 samples reach
    //! the position; family-wise significance 10^-3 per configuration, Bonferroni-split
    //! over its tested positions (critical values by Wilson–Hilferty). Zero-probability
    //! tokens must never be emitted. The acceptance rate of draft `j` among samples reaching
    //! it must equal its closed form `(⌊p_j(d_j)·2^24⌋ + 1)/2^24` within 5 standard errors.
    //! The negative control (recovered token raced over `p_j` with the draft left in) must be
    //! rejected, at some position, in every configuration. The full run (10^6 samples per
    //! configuration) must test every position of every configuration.
    use super::*;
    use crate::oracle::Synthetic;
    use crate::sampling::{target_probs, SamplingParams};

    /// How a configuration picks its drafts along the path.
    #[derive(Clone, Copy)]
    enum Drafts {
        /// The target's most likely token: drafts often right.
        Right,
        /// The least likely token with probability ≥ 0.1 (or the most likely if none):
        /// drafts rarely right.
        Rare,
    }

    /// One configuration of the losslessness test.
    struct Case {
        name: &'static str,
        vocab: u32,
        k: usize,
        params: SamplingParams,
        drafts: Drafts,
    }

    fn cases() -> Vec<Case> {
        let p = |t, k, p| SamplingParams { temperature: t, top_k: k, top_p: p, seed: Some(0) };
        use Drafts::*;
        vec![
            Case { name: "k1 T1", vocab: 8, k: 1, params: p(1.0, 0, 1.0), drafts: Right },
            Case { name: "k2 T0.5 rare", vocab: 8, k: 2, params: p(0.5, 0, 1.0), drafts: Rare },
            Case { name: "k3 T2", vocab: 12, k: 3, params: p(2.0, 0, 1.0), drafts: Right },
            Case { name: "k4 T1 top-k 5", vocab: 12, k: 4, params: p(1.0, 5, 1.0), drafts: Right },
            Case { name: "k5 T2 top-p 0.8", vocab: 10, k: 5, params: p(2.0, 0, 0.8), drafts: Right },
            Case { name: "k3 T2 top-k 6 top-p 0.9 rare", vocab: 16, k: 3, params: p(2.0, 6, 0.9), drafts: Rare },
            Case { name: "k2 T1 top-p 0.7 rare", vocab: 9, k: 2, params: p(1.0, 0, 0.7), drafts: Rare },
        ]
    }

    /// The draft path and the targets along it (`targets[j]` after context + drafts[..j]).
    fn path(case: &Case) -> (Vec<u32>, Vec<Vec<f64>>) {
        let oracle = Synthetic { seed: 0x15, vocab_size: case.vocab, order: 2 };
        let mut ctx = vec![1u32, 2];
        let (mut drafts, mut targets) = (Vec::new(), Vec::new());
        for _ in 0..=case.k {
            let p = target_probs(&oracle.log_probs(&ctx), &case.params);
            let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b]).then(b.cmp(&a))).unwrap();
            let d = match case.drafts {
                Drafts::Right => best,
                Drafts::Rare => (0..p.len())
                    .filter(|&v| p[v] >= 0.1)
                    .min_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)))
                    .unwrap_or(best),
            } as u32;
            targets.push(p);
            drafts.push(d);
            ctx.push(d);
        }
        drafts.pop();
        (drafts, targets)
    }

    /// Upper normal quantile for a small tail probability `alpha` (Abramowitz–Stegun
    /// 26.2.23, absolute error < 4.5e-4).
    fn z_upper(alpha: f64) -> f64 {
        let t = (-2.0 * alpha.ln()).sqrt();
        t - (2.515517 + 0.802853 * t + 0.010328 * t * t)
            / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t)
    }

    /// Chi-square critical value (upper tail `alpha`) for `df` degrees of freedom
    /// (Wilson–Hilferty).
    fn critical(df: f64, alpha: f64) -> f64 {
        let a = 2.0 / (9.0 * df);
        df * (1.0 - a + z_upper(alpha) * a.sqrt()).powi(3)
    }

    /// Family-wise significance per configuration.
    const ALPHA: f64 = 1e-3;
    /// Fewest samples reaching a position for it to be tested.
    const MIN_REACH: u64 = 100;

    /// Chi-square statistic and degrees of freedom of `counts` against `p` over `n`
    /// samples, bins with expected count < 5 pooled (the pool joins the smallest kept bin
    /// when its own expected count is < 5). Panics if a zero-probability token was emitted.
    fn chi_square(name: &str, j: usize, counts: &[u64], p: &[f64], n: u64) -> (f64, f64) {
        let mut bins: Vec<(f64, f64)> = Vec::new(); // (expected, observed)
        let mut pool = (0.0, 0.0);
        for (v, (&c, &pv)) in counts.iter().zip(p).enumerate() {
            assert!(pv > 0.0 || c == 0, "{name}: position {j} emitted token {v} of probability 0");
            let e = pv * n as f64;
            if pv == 0.0 {
                continue;
            }
            if e < 5.0 {
                pool = (pool.0 + e, pool.1 + c as f64);
            } else {
                bins.push((e, c as f64));
            }
        }
        if pool.0 >= 5.0 || bins.is_empty() {
            bins.push(pool);
        } else if pool.0 > 0.0 {
            let smallest = (0..bins.len()).min_by(|&a, &b| bins[a].0.total_cmp(&bins[b].0)).unwrap();
            bins[smallest].0 += pool.0;
            bins[smallest].1 += pool.1;
        }
        let chi = bins.iter().map(|&(e, o)| (o - e) * (o - e) / e).sum();
        (chi, bins.len() as f64 - 1.0)
    }

    /// Per position: (samples reaching it, chi-square, df), and draft acceptances.
    struct Outcome {
        reach: Vec<u64>,
        accepted: Vec<u64>,
        counts: Vec<Vec<u64>>,
    }

    fn sample(case: &Case, drafts: &[u32], targets: &[Vec<f64>], samples: u64, biased: bool) -> Outcome {
        let k = drafts.len();
        let mut o =
            Outcome { reach: vec![0; k + 1], accepted: vec![0; k], counts: vec![vec![0; case.vocab as usize]; k + 1] };
        for s in 0..samples {
            let row = random_row_variant(targets, drafts, s, 0, 7, biased);
            for (j, &t) in row.iter().enumerate() {
                o.reach[j] += 1;
                o.counts[j][t as usize] += 1;
                if j < k && row.len() > j + 1 {
                    o.accepted[j] += 1;
                }
            }
        }
        o
    }

    /// Tests one configuration; returns (tested positions, whether the biased variant was
    /// rejected) and panics on a failed check of the unbiased rule.
    fn check(case: &Case, samples: u64) -> (usize, bool) {
        let (drafts, targets) = path(case);
        let fair = sample(case, &drafts, &targets, samples, false);
        let tested: Vec<usize> = (0..=case.k).filter(|&j| fair.reach[j] >= MIN_REACH).collect();
        let alpha = ALPHA / tested.len().max(1) as f64;
        let mut report = format!("{}: drafts {drafts:?}", case.name);
        for &j in &tested {
            let (chi, df) = chi_square(case.name, j, &fair.counts[j], &targets[j], fair.reach[j]);
            assert!(df >= 1.0, "{}: position {j} is degenerate", case.name);
            let crit = critical(df, alpha);
            report +=
                &format!("\n  position {j}: reached {}, chi2 {chi:.2} (df {df}, critical {crit:.2})", fair.reach[j]);
            assert!(chi < crit, "{report}\n{}: position {j} is not distributed as the target", case.name);
        }
        for j in 0..case.k {
            let n = fair.reach[j] as f64;
            if n == 0.0 {
                continue;
            }
            let p = targets[j][drafts[j] as usize];
            let pa = (((p * 16_777_216.0).floor() + 1.0) / 16_777_216.0).min(1.0);
            let sd = (n * pa * (1.0 - pa)).sqrt();
            let acc = fair.accepted[j] as f64;
            report += &format!("\n  draft {j}: accepted {acc} of {n} (closed form {pa:.6})");
            assert!((acc - n * pa).abs() <= 5.0 * sd + 1.0, "{report}\n{}: acceptance of draft {j}", case.name);
        }
        let biased = sample(case, &drafts, &targets, samples, true);
        let caught = tested.iter().any(|&j| {
            let (chi, df) = chi_square(case.name, j, &biased.counts[j], &targets[j], biased.reach[j]);
            chi >= critical(df, alpha)
        });
        println!("{report}\n  biased variant rejected: {caught}");
        (tested.len(), caught)
    }

    fn run(samples: u64, every_position: bool) {
        let cases = cases();
        assert!(cases.len() >= 6);
        for case in &cases {
            let (tested, caught) = check(case, samples);
            assert!(caught, "{}: the biased negative control passed", case.name);
            if every_position {
                assert_eq!(tested, case.k + 1, "{}: a position was reached too rarely to test", case.name);
            }
        }
    }

    /// CI size: 20,000 samples per configuration (positions reached by fewer than 100
    /// samples are not tested at this size).
    #[test]
    fn every_position_is_distributed_as_the_target_and_the_biased_variant_is_caught() {
        run(20_000, false);
    }

    /// The full run: 10^6 samples per configuration, every position tested (`cargo test
    /// --release -p specreplay-sim --lib -- --ignored lossless_full --nocapture`).
    #[test]
    #[ignore = "full statistical run (10^6 samples per configuration); about a minute in release"]
    fn lossless_full() {
        run(1_000_000, true);
    }

    #[test]
    fn a_certain_draft_is_always_accepted_and_rows_are_reproducible() {
        let one_hot = vec![0.0, 1.0, 0.0];
        let t = vec![one_hot.clone(), one_hot.clone(), vec![0.25, 0.25, 0.5]];
        for seed in 0..200 {
            let row = random_row(&t, &[1, 1], seed, 3, 10);
            assert_eq!(&row[..2], &[1, 1]);
            assert_eq!(row, random_row(&t, &[1, 1], seed, 3, 10), "same inputs, same row");
        }
        // A zero-probability draft is always rejected, and the recovered token is never it.
        let t = vec![vec![0.5, 0.0, 0.5], vec![0.2, 0.3, 0.5]];
        for seed in 0..200 {
            let row = random_row(&t, &[1], seed, 0, 4);
            assert_eq!(row.len(), 1);
            assert_ne!(row[0], 1);
        }
    }
}
