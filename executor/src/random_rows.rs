//! Random-mode verification rows on the device (`executor/kernels/random_rows.cu`) and
//! their CPU twin: the synthetic oracle's target distributions with temperature / top-k /
//! top-p (`specreplay_sim::sampling::target_probs` of `Synthetic::log_probs`) and vLLM
//! 0.12.0's random rejection rule for n-gram drafts (`vllm/v1/sample/rejection_sampler.py`;
//! `specreplay_sim::rejection::random_row`), keyed by `(seed, request, position, purpose)`.
//!
//! A batch is a list of [`RandomRow`]s over one vocabulary: each row names the context
//! hashes of its `num_draft + 1` target positions (after the context up to each draft, then
//! the whole context). The device computes every target row (`synthetic_target_probs`) and
//! then every output row (`rejection_random`); [`cpu_rows`] computes the same with the
//! simulator's functions, and the GPU test / `gpu selftest` compare them bit for bit.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use crate::device::Device;
use crate::error::{ExecError, Result};
use specreplay_sim::device::StepPlan;
use specreplay_sim::oracle::Synthetic;
use specreplay_sim::rejection;
use specreplay_sim::sampling::{target_probs, SamplingParams};
use specreplay_sim::SimError;

/// One batch row of random-mode verification.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomRow {
    /// Partial prefill: the row is all -1 and draws nothing.
    pub discard: bool,
    /// Context hashes (`Synthetic::context_hash`) of the target positions: after the
    /// context up to draft `j` for `j < drafts.len()`, then after the whole context.
    pub hashes: Vec<u64>,
    pub drafts: Vec<u32>,
    pub params: SamplingParams,
    /// The request's arrival index (first Philox counter word).
    pub request: u32,
    /// Sequence position of the first sampled token.
    pub first_pos: u32,
}

/// What a batch produced: the target rows (row-major, `vocab` wide, in row order then
/// position order) and the sampler rows (`width` wide, -1 padded).
#[derive(Debug, Clone, PartialEq)]
pub struct RandomOutput {
    pub probs: Vec<f64>,
    pub rows: Vec<i64>,
}

/// The CPU twin: the simulator's own functions, row by row.
pub fn cpu_rows(oracle: &Synthetic, rows: &[RandomRow], width: usize) -> RandomOutput {
    let mut probs = Vec::new();
    let mut out = Vec::with_capacity(rows.len() * width);
    for r in rows {
        let targets: Vec<Vec<f64>> =
            r.hashes.iter().map(|&h| target_probs(&oracle.log_probs_of_hash(h), &r.params)).collect();
        for t in &targets {
            probs.extend_from_slice(t);
        }
        let mut row = vec![-1i64; width];
        if !r.discard {
            let seed = r.params.seed.unwrap_or_default();
            for (j, t) in
                rejection::random_row(&targets, &r.drafts, seed, r.request, r.first_pos).into_iter().enumerate()
            {
                row[j] = i64::from(t);
            }
        }
        out.extend_from_slice(&row);
    }
    RandomOutput { probs, rows: out }
}

/// The random-mode rows of a step as a batch: `(batch row, RandomRow)` for every row of a
/// request sampled at temperature > 0 (discarded rows included: they come back all -1).
/// The drafts are the context slots the CPU device reads back from `input_ids`, the target
/// positions those of [`specreplay_sim::device::RowPlan::first_sample_position`].
pub fn plan_rows(plan: &StepPlan, contexts: &[&[u32]], oracle: &Synthetic) -> Vec<(usize, RandomRow)> {
    let mut out = Vec::new();
    for (i, r) in plan.rows.iter().enumerate() {
        if r.sampling.is_greedy() {
            continue;
        }
        let first = r.first_sample_position();
        let ctx = contexts[i];
        out.push((
            i,
            RandomRow {
                discard: r.discard,
                hashes: (0..=r.num_draft).map(|j| oracle.context_hash(&ctx[..first + j])).collect(),
                drafts: ctx[first..r.seq_len()].to_vec(),
                params: r.sampling,
                request: r.req as u32,
                first_pos: first as u32,
            },
        ));
    }
    out
}

/// Overwrites the random-mode rows of a step's sampler output with `verify(batch)`'s rows
/// (`plan.width` wide each); greedy rows stay as the greedy kernels wrote them.
pub fn replace_random_rows(
    plan: &StepPlan,
    contexts: &[&[u32]],
    oracle: &Synthetic,
    rows: &mut [Vec<i64>],
    verify: impl FnOnce(&[RandomRow]) -> Result<RandomOutput>,
) -> std::result::Result<(), SimError> {
    let batch = plan_rows(plan, contexts, oracle);
    if batch.is_empty() {
        return Ok(());
    }
    let (idx, batch): (Vec<usize>, Vec<RandomRow>) = batch.into_iter().unzip();
    let out = verify(&batch).map_err(|e| SimError::Device(format!("step {}: random-mode rows: {e}", plan.step)))?;
    for (k, &i) in idx.iter().enumerate() {
        rows[i] = out.rows[k * plan.width..(k + 1) * plan.width].to_vec();
    }
    Ok(())
}

/// Checks a batch before it reaches the device (sizes the kernels index with).
fn validate(oracle: &Synthetic, rows: &[RandomRow], width: usize) -> Result<()> {
    let bad = |m: String| Err(ExecError::InvalidInput(m));
    if oracle.vocab_size == 0 || oracle.vocab_size >= 1 << 20 {
        return bad(format!("vocabulary {} outside 1..2^20", oracle.vocab_size));
    }
    for (i, r) in rows.iter().enumerate() {
        if r.hashes.len() != r.drafts.len() + 1 || r.drafts.len() >= width {
            return bad(format!("row {i}: {} targets for {} drafts (width {width})", r.hashes.len(), r.drafts.len()));
        }
        if r.params.is_greedy() || r.params.seed.is_none() {
            return bad(format!("row {i} is not a seeded random-mode row"));
        }
        if let Some(d) = r.drafts.iter().find(|&&d| d >= oracle.vocab_size) {
            return bad(format!("row {i}: draft {d} outside the vocabulary"));
        }
    }
    Ok(())
}

/// Runs a batch on the device: `synthetic_target_probs` over every target row, then
/// `rejection_random` over every row. Returns both, downloaded.
pub fn device_rows(dev: &Device, oracle: &Synthetic, rows: &[RandomRow], width: usize) -> Result<RandomOutput> {
    validate(oracle, rows, width)?;
    let vocab = oracle.vocab_size;
    let v = vocab as usize;
    let (mut hashes, mut param_of, mut temp, mut top_k, mut top_p) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut discard, mut first_target, mut num_draft, mut draft_offset, mut drafts) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut seeds, mut request, mut first_pos) = (vec![], vec![], vec![]);
    for (i, r) in rows.iter().enumerate() {
        temp.push(r.params.temperature);
        top_k.push(r.params.top_k);
        top_p.push(r.params.top_p);
        first_target.push(hashes.len() as i32);
        for &h in &r.hashes {
            hashes.push(h);
            param_of.push(i as i32);
        }
        discard.push(i32::from(r.discard));
        num_draft.push(r.drafts.len() as i32);
        draft_offset.push(drafts.len() as i32);
        drafts.extend(r.drafts.iter().map(|&d| d as i32));
        seeds.push(r.params.seed.unwrap_or_default());
        request.push(r.request);
        first_pos.push(r.first_pos);
    }
    if drafts.is_empty() {
        drafts.push(0); // no zero-length device buffers
    }
    let n_targets = hashes.len();
    let s = &dev.stream;
    let d_hashes = s.clone_htod(&hashes)?;
    let d_param_of = s.clone_htod(&param_of)?;
    let d_temp = s.clone_htod(&temp)?;
    let d_top_k = s.clone_htod(&top_k)?;
    let d_top_p = s.clone_htod(&top_p)?;
    let mut scratch = s.alloc_zeros::<f64>(n_targets * v)?;
    let mut probs = s.alloc_zeros::<f64>(n_targets * v)?;
    let cfg = |n: usize| LaunchConfig {
        grid_dim: (n.clamp(1, 65_535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let n_t = n_targets as i32;
    let mut l = s.launch_builder(dev.function("synthetic_target_probs")?);
    l.arg(&n_t).arg(&vocab).arg(&d_hashes).arg(&d_param_of).arg(&d_temp).arg(&d_top_k).arg(&d_top_p);
    l.arg(&mut scratch).arg(&mut probs);
    // SAFETY: arguments match `synthetic_target_probs`; every buffer holds n_targets rows
    // of `vocab` doubles or one entry per target row / request.
    unsafe { l.launch(cfg(n_targets)) }?;
    let d_discard = s.clone_htod(&discard)?;
    let d_first_target = s.clone_htod(&first_target)?;
    let d_num_draft = s.clone_htod(&num_draft)?;
    let d_draft_offset = s.clone_htod(&draft_offset)?;
    let d_drafts = s.clone_htod(&drafts)?;
    let d_seeds = s.clone_htod(&seeds)?;
    let d_request = s.clone_htod(&request)?;
    let d_first_pos = s.clone_htod(&first_pos)?;
    let mut out = s.alloc_zeros::<i64>((rows.len() * width).max(1))?;
    let (n_r, w) = (rows.len() as i32, width as i32);
    let mut l = s.launch_builder(dev.function("rejection_random")?);
    l.arg(&n_r).arg(&vocab).arg(&w).arg(&d_discard).arg(&d_first_target).arg(&d_num_draft).arg(&d_draft_offset);
    l.arg(&d_drafts).arg(&d_seeds).arg(&d_request).arg(&d_first_pos).arg(&probs).arg(&mut out);
    // SAFETY: arguments match `rejection_random`; per-row arrays hold one entry per row,
    // drafts and target rows are indexed through the offsets built above.
    unsafe { l.launch(cfg(rows.len())) }?;
    let probs = s.clone_dtoh(&probs)?;
    let mut rows_out = s.clone_dtoh(&out)?;
    rows_out.truncate(rows.len() * width);
    s.synchronize()?;
    Ok(RandomOutput { probs, rows: rows_out })
}

/// The algorithm of `synthetic_target_probs`, step for step on the CPU (block reductions
/// become plain loops): the weights, the top-k threshold by a bitwise search over total-order
/// keys, top-p by the level search, the softmaxes in `lane_sum` order. It shares no code
/// path with `target_probs` beyond `ln`/`exp`/`softmax`, so equality of the two checks the
/// kernel's searches on every CI run.
pub fn kernel_algorithm_probs(oracle: &Synthetic, h: u64, params: &SamplingParams) -> Vec<f64> {
    use specreplay_sim::sampling::{fixed62, softmax, top_p_limit};
    let key = |x: f64| {
        let b = x.to_bits();
        if b >> 63 == 1 {
            !b
        } else {
            b | (1 << 63)
        }
    };
    let t = f64::from(params.temperature);
    let mut x: Vec<f64> = oracle.log_probs_of_hash(h).into_iter().map(|l| l / t).collect();
    let vocab = x.len();
    let k = params.top_k as usize;
    if k > 0 && k < vocab {
        let mut th = 0u64;
        for bit in (0..64).rev() {
            let cand = th | (1 << bit);
            if x.iter().filter(|&&v| key(v) >= cand).count() >= k {
                th = cand;
            }
        }
        for v in x.iter_mut() {
            if key(*v) < th {
                *v = f64::NEG_INFINITY;
            }
        }
    }
    if params.top_p < 1.0 {
        let q = softmax(&x);
        let limit = top_p_limit(params.top_p);
        let f = |t: u64| -> u64 { (0..vocab).filter(|&v| key(x[v]) <= t).map(|v| fixed62(q[v])).sum() };
        let (mut t0, mut any) = (0u64, false);
        for bit in (0..64).rev() {
            let cand = t0 | (1 << bit);
            if f(cand) <= limit {
                t0 = cand;
                any = true;
            }
        }
        if !any {
            any = f(0) <= limit;
        }
        let kmax = x.iter().map(|&v| key(v)).max().unwrap_or(0);
        let none = any && t0 >= kmax;
        let level = if !any {
            0
        } else if none {
            kmax
        } else {
            t0 + 1
        };
        let below: u64 = (0..vocab).filter(|&v| key(x[v]) < level).map(|v| fixed62(q[v])).sum();
        let n_level = (0..vocab).filter(|&v| key(x[v]) == level).count() as u64;
        let qlev = (0..vocab).filter(|&v| key(x[v]) == level).map(|v| fixed62(q[v])).max().unwrap_or(0);
        let mut m = if none { n_level - 1 } else { (limit - below).checked_div(qlev).unwrap_or(n_level) };
        m = m.min(n_level);
        let mut cut = 0usize;
        if m > 0 {
            let mut best = 0usize;
            for bit in (0..=20).rev() {
                let cand = best | (1 << bit);
                let c = (0..vocab.min(cand)).filter(|&u| key(x[u]) == level).count() as u64;
                if c < m {
                    best = cand;
                }
            }
            cut = best + 1;
        }
        for (v, xv) in x.iter_mut().enumerate() {
            let kv = key(*xv);
            if kv < level || (kv == level && v < cut) {
                *xv = f64::NEG_INFINITY;
            }
        }
    }
    softmax(&x)
}

/// A seeded random batch for the self-test, GPU test and benchmark: `n` rows over the
/// oracle's vocabulary, `0..=max_k` drafts (often the target's likely tokens, sometimes
/// arbitrary), temperatures 0.5 / 1 / 2 / other, top-k and top-p on and off, about 5 %
/// discarded rows.
pub fn random_batch(oracle: &Synthetic, n: usize, max_k: usize, seed: u64) -> Vec<RandomRow> {
    use specreplay_sim::splitmix::splitmix;
    let mut x = seed;
    let mut next = move || {
        x = splitmix(x);
        x
    };
    let vocab = u64::from(oracle.vocab_size);
    (0..n)
        .map(|i| {
            let k = (next() % (max_k as u64 + 1)) as usize;
            let temperature = match next() % 4 {
                0 => 0.5,
                1 => 1.0,
                2 => 2.0,
                _ => 0.01 + (next() % 400) as f32 / 100.0,
            };
            let top_k = if next() % 2 == 0 { 0 } else { 1 + (next() % vocab.min(64)) as u32 };
            let top_p = if next() % 2 == 0 { 1.0 } else { 0.05 + (next() % 95) as f32 / 100.0 };
            let params = SamplingParams { temperature, top_k, top_p, seed: Some(next()) };
            let mut ctx: Vec<u32> = (0..2 + next() % 6).map(|_| (next() % vocab) as u32).collect();
            let (mut hashes, mut drafts) = (Vec::new(), Vec::new());
            for _ in 0..k {
                hashes.push(oracle.context_hash(&ctx));
                let d = if next() % 3 == 0 { (next() % vocab) as u32 } else { oracle.token_after(&ctx) };
                drafts.push(d);
                ctx.push(d);
            }
            hashes.push(oracle.context_hash(&ctx));
            RandomRow {
                discard: next() % 20 == 0,
                hashes,
                drafts,
                params,
                request: (i % 1000) as u32,
                first_pos: (ctx.len() - k) as u32 + (next() % 4000) as u32,
            }
        })
        .collect()
}

/// The CPU twin over all cores (rows are independent).
pub fn cpu_rows_parallel(oracle: &Synthetic, rows: &[RandomRow], width: usize) -> RandomOutput {
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let chunk = rows.len().div_ceil(threads).max(1);
    let parts: Vec<RandomOutput> = std::thread::scope(|s| {
        let hs: Vec<_> = rows.chunks(chunk).map(|c| s.spawn(move || cpu_rows(oracle, c, width))).collect();
        hs.into_iter().map(|h| h.join().expect("CPU twin thread")).collect()
    });
    let mut out = RandomOutput { probs: Vec::new(), rows: Vec::new() };
    for p in parts {
        out.probs.extend(p.probs);
        out.rows.extend(p.rows);
    }
    out
}

/// Rows of the self-test batches: `(vocabulary, rows per batch, share of the total)`; the
/// 151,936-vocabulary batches always run (3 of 64 rows).
const SELFTEST_PLAN: [(u32, usize, f64); 6] =
    [(2, 8192, 0.04), (7, 8192, 0.16), (32, 8192, 0.45), (64, 8192, 0.33), (1000, 1024, 0.015), (5000, 256, 0.005)];

/// `gpu selftest`'s random-mode rows: about `total` rows in seeded batches (zero drafts,
/// discarded rows, k up to 8, vocabularies 2 to 151,936), device against CPU twin, target
/// probability rows compared bit for bit and sampler rows exactly. A row counts as one
/// mismatch if any of its target rows or its output differs; `first` names it.
pub fn self_test(dev: &Device, total: u64, seed: u64) -> Result<crate::selftest::Row> {
    const WIDTH: usize = 9;
    let mut row = crate::selftest::Row { kernel: "random_rows".into(), cases: 0, mismatches: 0, first: None };
    let mut plan: Vec<(u32, usize, u64)> =
        SELFTEST_PLAN.iter().map(|&(v, n, share)| (v, n, ((total as f64 * share) / n as f64).ceil() as u64)).collect();
    plan.push((151_936, 64, 3));
    let mut bseed = specreplay_sim::splitmix::splitmix(seed ^ 0x15_0015);
    for (vocab, n, batches) in plan {
        for b in 0..batches {
            bseed = specreplay_sim::splitmix::splitmix(bseed ^ b);
            let oracle = Synthetic { seed: bseed, vocab_size: vocab, order: 2 };
            let batch = random_batch(&oracle, n, 8, bseed);
            let got = device_rows(dev, &oracle, &batch, WIDTH)?;
            let want = cpu_rows_parallel(&oracle, &batch, WIDTH);
            let v = vocab as usize;
            let mut t = 0;
            for (i, r) in batch.iter().enumerate() {
                let mut bad = None;
                for _ in &r.hashes {
                    let (g, w) = (&got.probs[t * v..(t + 1) * v], &want.probs[t * v..(t + 1) * v]);
                    if let Some(x) = (0..v).find(|&x| g[x].to_bits() != w[x].to_bits()) {
                        bad.get_or_insert(format!("target row {t} token {x}: GPU {:e} vs CPU {:e}", g[x], w[x]));
                    }
                    t += 1;
                }
                let (g, w) = (&got.rows[i * WIDTH..(i + 1) * WIDTH], &want.rows[i * WIDTH..(i + 1) * WIDTH]);
                if g != w {
                    bad.get_or_insert(format!("sampler row GPU {g:?} vs CPU {w:?}"));
                }
                row.cases += 1;
                if let Some(what) = bad {
                    row.mismatches += 1;
                    row.first.get_or_insert_with(|| {
                        format!(
                            "vocab {vocab}, batch seed {bseed:#x}, row {i} ({} drafts, discard {}, {:?}): {what}",
                            r.drafts.len(),
                            r.discard,
                            r.params
                        )
                    });
                }
            }
        }
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU twin is the simulator's CPU device: a row built from a real context gives
    /// the tokens `rejection::random_row` gives, and discarded rows are all -1.
    /// The kernel's search-based algorithm gives the bits of `target_probs` on rows full of
    /// ties (synthetic weights take ~17 values), every temperature / top-k / top-p mix.
    #[test]
    fn the_kernels_search_algorithm_equals_target_probs_bit_for_bit() {
        let mut checked = 0;
        for (vocab, n) in [(1u32, 20usize), (2, 200), (5, 400), (17, 400), (64, 400), (700, 60), (151_936, 2)] {
            let oracle = Synthetic { seed: u64::from(vocab) * 31, vocab_size: vocab, order: 2 };
            for r in random_batch(&oracle, n, 2, u64::from(vocab)) {
                for &h in &r.hashes {
                    let want = target_probs(&oracle.log_probs_of_hash(h), &r.params);
                    let got = kernel_algorithm_probs(&oracle, h, &r.params);
                    let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "vocab {vocab} {:?}: {want:?} vs {got:?}", r.params);
                    checked += 1;
                }
            }
        }
        assert!(checked > 2000, "{checked}");
    }

    #[test]
    fn the_cpu_twin_is_the_simulators_rule_and_batches_validate() {
        let oracle = Synthetic { seed: 5, vocab_size: 50, order: 2 };
        let rows = random_batch(&oracle, 300, 8, 1);
        assert!(rows.iter().any(|r| r.discard) && rows.iter().any(|r| r.drafts.len() == 8));
        assert!(rows.iter().any(|r| r.drafts.is_empty()));
        let out = cpu_rows(&oracle, &rows, 9);
        assert_eq!(out.rows.len(), 300 * 9);
        for (r, row) in rows.iter().zip(out.rows.chunks(9)) {
            let valid = row.iter().take_while(|&&t| t >= 0).count();
            if r.discard {
                assert_eq!(valid, 0);
            } else {
                assert!((1..=r.drafts.len() + 1).contains(&valid));
                assert!(row[..valid - 1].iter().zip(&r.drafts).all(|(&a, &d)| a == i64::from(d)));
            }
        }
        assert!(validate(&oracle, &rows, 9).is_ok());
        assert!(validate(&oracle, &rows, 8).is_err(), "8 drafts need width 9");
        let mut greedy = rows.clone();
        greedy[0].params = SamplingParams::default();
        assert!(validate(&oracle, &greedy, 9).is_err());
    }
}
