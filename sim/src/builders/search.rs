//! Counterexample search and minimization behind `specreplay explain <builder> --variant <v>`.
//!
//! Random cases are drawn (SplitMix64 from the seed) from each builder's *production
//! domain*: the inputs the upstream code actually sees. For NSA draft_extend (v1) that
//! is `accept_length ∈ 1..=D` (SGLang adds the bonus token before the backend reads it,
//! see `EagleDraftInput.prepare_extend_after_decode`) and `seq_len ≥ accept_length`, with
//! the batch padded to its CUDA-graph capture bucket. The first disagreement is shrunk
//! greedily (drop requests, lower D / topk / lengths / counts) to a local minimum in which
//! every single shrink step makes the disagreement disappear, then reported with its
//! field, element, request, expected vs actual, and a reproduce command.

use std::fmt::Write as _;
use std::time::Instant;

use super::cases::{self, DraftCase, NsaCase, POOL_SIZE};
use super::cuda_graph::{capture_bucket, DEFAULT_CAPTURE_SIZES};
use super::draft_select::DraftVariant;
use super::nsa::{NsaBatch, NsaMode, NsaParams, NsaVariant};
use super::sparse::{SparseInput, SparseVariant};
use super::{builder_info, Mismatch, BUILDERS};
use crate::splitmix::Rng;

/// A builder + variant under test.
pub trait Subject {
    type Case: Clone + std::fmt::Debug;
    fn generate(&self, rng: &mut Rng) -> Self::Case;
    /// Smaller candidates, each inside the production domain.
    fn shrink(&self, case: &Self::Case) -> Vec<Self::Case>;
    fn check(&self, case: &Self::Case) -> Result<(), Mismatch>;
    /// The input, one field per line.
    fn render(&self, case: &Self::Case) -> String;
    /// Extra lines after the first divergence (e.g. the other execution path).
    fn notes(&self, _case: &Self::Case) -> String {
        String::new()
    }
}

/// What a search found.
#[derive(Debug, Clone)]
pub struct Found<C> {
    pub case_index: u64,
    pub minimized: C,
    pub shrink_steps: u32,
    pub mismatch: Mismatch,
}

/// Result of [`search`].
#[derive(Debug, Clone)]
pub struct SearchResult<C> {
    pub cases_run: u64,
    pub found: Option<Found<C>>,
    pub seconds: f64,
}

/// Greedy shrink: take the first smaller candidate that still fails, until none does.
pub fn minimize<S: Subject>(s: &S, mut case: S::Case, mut m: Mismatch) -> (S::Case, Mismatch, u32) {
    let mut steps = 0;
    'outer: loop {
        for cand in s.shrink(&case) {
            if let Err(m2) = s.check(&cand) {
                case = cand;
                m = m2;
                steps += 1;
                continue 'outer;
            }
        }
        return (case, m, steps);
    }
}

/// Runs up to `budget` random cases; minimizes the first failure.
pub fn search<S: Subject>(s: &S, budget: u64, seed: u64) -> SearchResult<S::Case> {
    let t = Instant::now();
    let mut rng = Rng::new(seed);
    for i in 0..budget {
        let case = s.generate(&mut rng);
        if let Err(m) = s.check(&case) {
            let (minimized, mismatch, shrink_steps) = minimize(s, case, m);
            return SearchResult {
                cases_run: i + 1,
                found: Some(Found { case_index: i, minimized, shrink_steps, mismatch }),
                seconds: t.elapsed().as_secs_f64(),
            };
        }
    }
    SearchResult { cases_run: budget, found: None, seconds: t.elapsed().as_secs_f64() }
}

// ---------------------------------------------------------------------------------
// Subjects
// ---------------------------------------------------------------------------------

/// NSA metadata (seeds 001/002), both paths, production domain.
pub struct NsaSubject {
    pub mode: NsaMode,
    pub variant: NsaVariant,
}

impl NsaSubject {
    fn in_domain(&self, c: &NsaCase) -> bool {
        let d = c.params.num_draft_tokens;
        let b = &c.batch;
        d >= 1
            && c.params.nsa_index_topk >= 1
            && !b.seq_lens.is_empty()
            && b.seq_lens.iter().all(|&s| s >= 0 && (s + d) as usize <= c.params.max_context_len)
            && (self.mode == NsaMode::TargetVerify
                || b.accept_length.iter().zip(&b.seq_lens).all(|(&q, &s)| (1..=d).contains(&q) && s >= q))
    }

    fn rebucket(mut c: NsaCase) -> NsaCase {
        c.captured_bs = capture_bucket(c.batch.bs(), &DEFAULT_CAPTURE_SIZES).unwrap_or(c.batch.bs());
        c
    }
}

impl Subject for NsaSubject {
    type Case = NsaCase;

    fn generate(&self, rng: &mut Rng) -> NsaCase {
        let d = rng.range(1, 8) as i32;
        let bs = rng.range(1, 8) as usize;
        let topk = if rng.range(0, 3) == 0 { 2048 } else { rng.range(1, 16) as i32 };
        let mut batch = NsaBatch { seq_lens: vec![], accept_length: vec![], req_pool_indices: vec![] };
        for _ in 0..bs {
            let q = rng.range(1, d as u64) as i32;
            batch.accept_length.push(q);
            batch.seq_lens.push(rng.range(q as u64, 56) as i32);
            batch.req_pool_indices.push(rng.range(1, POOL_SIZE as u64 - 1) as usize);
        }
        Self::rebucket(NsaCase {
            mode: self.mode,
            params: NsaParams { num_draft_tokens: d, nsa_index_topk: topk, max_context_len: cases::MAX_CONTEXT_LEN },
            batch,
            captured_bs: 0,
        })
    }

    fn shrink(&self, c: &NsaCase) -> Vec<NsaCase> {
        let mut out = Vec::new();
        let bs = c.batch.bs();
        for k in (0..bs).rev() {
            let mut n = c.clone();
            n.batch.seq_lens.remove(k);
            n.batch.accept_length.remove(k);
            n.batch.req_pool_indices.remove(k);
            out.push(Self::rebucket(n));
        }
        if c.params.num_draft_tokens > 1 {
            let mut n = c.clone();
            n.params.num_draft_tokens -= 1;
            let d = n.params.num_draft_tokens;
            n.batch.accept_length.iter_mut().for_each(|q| *q = (*q).min(d));
            out.push(n);
        }
        for t in [1, c.params.nsa_index_topk / 2, c.params.nsa_index_topk - 1] {
            if t >= 1 && t < c.params.nsa_index_topk {
                let mut n = c.clone();
                n.params.nsa_index_topk = t;
                out.push(n);
            }
        }
        for k in 0..bs {
            let q = c.batch.accept_length[k];
            let s = c.batch.seq_lens[k];
            for ns in [0, q, s - 1] {
                if ns < s {
                    let mut n = c.clone();
                    n.batch.seq_lens[k] = ns;
                    out.push(n);
                }
            }
            if q > 1 {
                let mut n = c.clone();
                n.batch.accept_length[k] = q - 1;
                out.push(n);
            }
            if c.batch.req_pool_indices[k] != 1 {
                let mut n = c.clone();
                n.batch.req_pool_indices[k] = 1;
                out.push(n);
            }
        }
        out.retain(|n| self.in_domain(n));
        out
    }

    fn check(&self, c: &NsaCase) -> Result<(), Mismatch> {
        cases::check_nsa_case(c, self.variant)
    }

    fn render(&self, c: &NsaCase) -> String {
        let live = c.batch.bs();
        let mut s = String::new();
        let mode = match c.mode {
            NsaMode::TargetVerify => "target_verify",
            NsaMode::DraftExtend => "draft_extend (v1)",
        };
        let _ = writeln!(s, "  forward mode        {mode}");
        let _ = writeln!(
            s,
            "  bs                  {live} live, replayed in the graph captured for bs {} ({} padded rows)",
            c.captured_bs,
            c.captured_bs - live
        );
        let _ = writeln!(s, "  D                   {}  (speculative_num_draft_tokens)", c.params.num_draft_tokens);
        let _ = writeln!(s, "  nsa_index_topk      {}", c.params.nsa_index_topk);
        let _ = writeln!(s, "  seq_lens            {:?}", c.batch.seq_lens);
        match c.mode {
            NsaMode::DraftExtend => {
                let _ = writeln!(s, "  accept_length       {:?}  (qo lengths)", c.batch.accept_length);
            }
            NsaMode::TargetVerify => {
                let _ = writeln!(s, "  qo lengths          [D; bs] = {:?}", vec![c.params.num_draft_tokens; live]);
            }
        }
        let _ = writeln!(s, "  req_pool_indices    {:?}", c.batch.req_pool_indices);
        s
    }

    fn notes(&self, c: &NsaCase) -> String {
        let mut s = String::new();
        match cases::check_nsa_eager(c, self.variant) {
            Ok(()) => {
                let _ = writeln!(s, "eager path (no CUDA graph): agrees with the reference on this input");
            }
            Err(m) => {
                let _ = writeln!(
                    s,
                    "eager path (no CUDA graph): {} element {} ({}): expected {}, actual {}",
                    m.field,
                    m.index.map_or("-".into(), |i| i.to_string()),
                    m.location,
                    m.expected,
                    m.actual
                );
                let _ = writeln!(s, "  reference {}", m.expected_field);
                let _ = writeln!(s, "  variant   {}", m.actual_field);
            }
        }
        if c.mode == NsaMode::DraftExtend && self.variant == NsaVariant::UniformQo {
            let d = c.params.num_draft_tokens;
            let sum_q: i32 = c.batch.accept_length.iter().sum::<i32>() + (c.captured_bs - c.batch.bs()) as i32;
            let _ = writeln!(
                s,
                "why: uniform-qo lays out D = {d} rows per request (start = kv - D + 1); the reference lays out \
accept_length rows per request (start = kv - accept_length + 1), Σ = {sum_q} rows. The graph buffers were \
captured with verify shapes (bs*D = {} rows), so `buf[:bs*D].copy_` always fits: no error is raised, the \
live q-rows just read wrong visible-KV lengths (see docs/seed-002-revert.md).",
                c.captured_bs as i32 * d
            );
        }
        s
    }
}

/// Draft selection (seed 000).
pub struct DraftSubject {
    pub variant: DraftVariant,
}

impl Subject for DraftSubject {
    type Case = DraftCase;

    fn generate(&self, rng: &mut Rng) -> DraftCase {
        let bs = rng.range(1, 6) as usize;
        let n = rng.range(1, 8) as usize;
        let scores =
            (0..bs).map(|_| (0..n).map(|_| cases::score_from_byte(rng.range(0, 255) as u8 as i8)).collect()).collect();
        let counts = (0..bs).map(|_| rng.range(0, n as u64) as usize).collect();
        DraftCase { scores, counts }
    }

    fn shrink(&self, c: &DraftCase) -> Vec<DraftCase> {
        let mut out = Vec::new();
        for k in (0..c.counts.len()).rev() {
            if c.counts.len() > 1 {
                let mut n = c.clone();
                n.counts.remove(k);
                n.scores.remove(k);
                out.push(n);
            }
        }
        let n_cand = c.scores.first().map_or(0, Vec::len);
        if n_cand > 1 {
            let mut n = c.clone();
            n.scores.iter_mut().for_each(|r| {
                r.pop();
            });
            n.counts.iter_mut().for_each(|x| *x = (*x).min(n_cand - 1));
            out.push(n);
        }
        for k in 0..c.counts.len() {
            if c.counts[k] > 0 {
                let mut n = c.clone();
                n.counts[k] -= 1;
                out.push(n);
            }
            for j in 0..n_cand {
                if c.scores[k][j].to_bits() != 0 {
                    let mut n = c.clone();
                    n.scores[k][j] = 0.0;
                    out.push(n);
                }
            }
        }
        out
    }

    fn check(&self, c: &DraftCase) -> Result<(), Mismatch> {
        cases::check_draft_case(c, self.variant)
    }

    fn render(&self, c: &DraftCase) -> String {
        format!(
            "  bs                  {}\n  n_cand              {}\n  draft_counts        {:?}\n  scores              {:?}\n",
            c.counts.len(),
            c.scores.first().map_or(0, Vec::len),
            c.counts,
            c.scores
        )
    }
}

/// Sparse sink + heavy + window (seed 003).
pub struct SparseSubject {
    pub variant: SparseVariant,
}

fn sparse_valid(x: &SparseInput) -> bool {
    x.heavy.len() == x.b
        && x.heavy.iter().all(|r| r.len() == x.h && r.iter().all(|t| t.len() == x.heavy_size))
        && x.heavy.iter().flatten().flatten().all(|&v| v >= 0 && v + (x.init_offset as i64) < x.sk as i64)
}

impl Subject for SparseSubject {
    type Case = SparseInput;

    fn generate(&self, rng: &mut Rng) -> SparseInput {
        let (b, h) = (rng.range(1, 2) as usize, rng.range(1, 2) as usize);
        let sk = rng.range(1, 24) as usize;
        let init_offset = rng.range(0, 4).min(sk as u64 - 1) as usize;
        let heavy_size = rng.range(0, 4) as usize;
        let room = (sk - init_offset) as u64;
        let heavy = (0..b)
            .map(|_| (0..h).map(|_| (0..heavy_size).map(|_| rng.range(0, room - 1) as i64).collect()).collect())
            .collect();
        SparseInput {
            b,
            h,
            sk,
            sink: rng.range(0, 6) as usize,
            window: rng.range(0, 8) as usize,
            heavy_size,
            init_offset,
            heavy,
        }
    }

    fn shrink(&self, x: &SparseInput) -> Vec<SparseInput> {
        let mut out = Vec::new();
        if x.b > 1 {
            let mut n = x.clone();
            n.b -= 1;
            n.heavy.pop();
            out.push(n);
        }
        if x.h > 1 {
            let mut n = x.clone();
            n.h -= 1;
            n.heavy.iter_mut().for_each(|r| {
                r.pop();
            });
            out.push(n);
        }
        if x.heavy_size > 0 {
            let mut n = x.clone();
            n.heavy_size -= 1;
            n.heavy.iter_mut().flatten().for_each(|t| {
                t.pop();
            });
            out.push(n);
        }
        for f in 0..4 {
            let mut n = x.clone();
            let field = match f {
                0 => &mut n.sk,
                1 => &mut n.sink,
                2 => &mut n.window,
                _ => &mut n.init_offset,
            };
            if *field > if f == 0 { 1 } else { 0 } {
                *field -= 1;
                out.push(n);
            }
        }
        for (i, &v) in x.heavy.iter().flatten().flatten().enumerate() {
            if v > 0 {
                let mut n = x.clone();
                *n.heavy.iter_mut().flatten().flatten().nth(i).expect("index in range") = 0;
                out.push(n);
            }
        }
        out.retain(sparse_valid);
        out
    }

    fn check(&self, x: &SparseInput) -> Result<(), Mismatch> {
        cases::check_sparse_case(x, self.variant)
    }

    fn render(&self, x: &SparseInput) -> String {
        format!(
            "  b, h                {}, {}\n  sk                  {}\n  sink, window        {}, {}\n  heavy_size          {}\n  init_offset         {}\n  topk heavy indices  {:?}\n",
            x.b, x.h, x.sk, x.sink, x.window, x.heavy_size, x.init_offset, x.heavy
        )
    }
}

// ---------------------------------------------------------------------------------
// explain
// ---------------------------------------------------------------------------------

/// The text of `specreplay explain --list`.
pub fn list_text() -> String {
    let mut s = String::from(
        "builders and their variants (the first variant is the reference; * = known to disagree with it):\n",
    );
    for b in BUILDERS {
        let _ = writeln!(s, "\n{}  (seed {}; {})", b.name, b.seed, b.upstream);
        for (name, desc, bad) in b.variants {
            let _ = writeln!(s, "  {}{:<22} {}", if *bad { "*" } else { " " }, name, desc);
        }
    }
    s.push_str("\nusage: specreplay explain <builder> --variant <variant> [--cases N] [--seed S]\n");
    s
}

/// The outcome of `explain`.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub found: bool,
    pub report: String,
}

/// Searches, minimizes and reports for any [`Subject`] (the CPU subjects below, or a
/// device-backed one whose `check` runs the variant on the GPU: `explain --device cuda`).
/// `builder` must be a name in [`BUILDERS`].
pub fn run_subject<S: Subject>(s: &S, builder: &str, variant: &str, budget: u64, seed: u64) -> Explanation {
    let Some(info) = builder_info(builder) else {
        return Explanation { found: false, report: format!("unknown builder `{builder}`\n") };
    };
    let desc = info.variants.iter().find(|v| v.0 == variant).map_or("", |v| v.1);
    let r = search(s, budget, seed);
    let mut out = String::new();
    let _ = writeln!(out, "builder    {builder}  (seed {}; {})", info.seed, info.upstream);
    let _ = writeln!(out, "variant    {variant}  ({desc})");
    let repro = format!("specreplay explain {builder} --variant {variant} --cases {budget} --seed {seed}");
    match r.found {
        None => {
            let _ = writeln!(
                out,
                "result     NO COUNTEREXAMPLE: the variant agreed with the reference on all {} random cases (seed {seed}, {:.2} s), eager and CUDA-graph replay paths",
                r.cases_run, r.seconds
            );
            let _ = writeln!(out, "reproduce: {repro}");
            Explanation { found: false, report: out }
        }
        Some(f) => {
            let m = &f.mismatch;
            let _ = writeln!(
                out,
                "result     COUNTEREXAMPLE after {} random case(s), minimized in {} shrink step(s) ({:.3} s, seed {seed})",
                f.case_index + 1,
                f.shrink_steps,
                r.seconds
            );
            let _ = writeln!(out, "\nminimized input");
            out.push_str(&s.render(&f.minimized));
            let _ = writeln!(out, "\nfirst divergence  ({} path)", m.path);
            let _ = writeln!(out, "  field      {}", m.field);
            let _ = writeln!(out, "  element    {}", m.index.map_or("-".to_string(), |i| i.to_string()));
            let _ = writeln!(out, "  request    {}", m.request.map_or("-".to_string(), |i| i.to_string()));
            let _ = writeln!(out, "  where      {}", m.location);
            let _ = writeln!(out, "  expected   {}   (reference)", m.expected);
            let _ = writeln!(out, "  actual     {}   ({variant})", m.actual);
            let _ = writeln!(out, "  reference  {}", m.expected_field);
            let _ = writeln!(out, "  variant    {}", m.actual_field);
            let notes = s.notes(&f.minimized);
            if !notes.is_empty() {
                let _ = writeln!(out);
                out.push_str(&notes);
            }
            let _ = writeln!(out, "\nreproduce: {repro}");
            Explanation { found: true, report: out }
        }
    }
}

/// Searches `budget` random cases (seed `seed`) for an input on which `variant` of
/// `builder` disagrees with the reference. `Err` is a one-line message for an unknown
/// builder or variant.
pub fn explain(builder: &str, variant: &str, budget: u64, seed: u64) -> Result<Explanation, String> {
    let names = |b: &str| -> String {
        builder_info(b).map_or(String::new(), |i| i.variants.iter().map(|v| v.0).collect::<Vec<_>>().join(", "))
    };
    let bad_variant = || {
        format!(
            "unknown variant `{variant}` for builder `{builder}` (variants: {}); see `specreplay explain --list`",
            names(builder)
        )
    };
    match builder {
        "nsa-target-verify" | "nsa-draft-extend" => {
            let mode = if builder == "nsa-target-verify" { NsaMode::TargetVerify } else { NsaMode::DraftExtend };
            let v = NsaVariant::from_name(variant).ok_or_else(bad_variant)?;
            Ok(run_subject(&NsaSubject { mode, variant: v }, builder, variant, budget, seed))
        }
        "draft-select" => {
            let v = DraftVariant::from_name(variant).ok_or_else(bad_variant)?;
            Ok(run_subject(&DraftSubject { variant: v }, builder, variant, budget, seed))
        }
        "sparse-indices" => {
            let v = SparseVariant::from_name(variant).ok_or_else(bad_variant)?;
            Ok(run_subject(&SparseSubject { variant: v }, builder, variant, budget, seed))
        }
        _ => Err(format!(
            "unknown builder `{builder}` (builders: {}); see `specreplay explain --list`",
            BUILDERS.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
        )),
    }
}
