//! Inputs and checks shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`), the
//! property tests and the corpus replay in `tests/builders.rs`, and the million-case runs.
//!
//! Every fuzz target body is [`check_bytes`]: the bytes are decoded with
//! `arbitrary::Unstructured` (`arbitrary_take_rest`, as libfuzzer-sys does) into a small
//! input struct, normalized into a valid case of a *wide* domain (zero counts, empty
//! batches, `accept_length` 0 and > D, padding, duplicate-heavy sparse rows, NaN and tied
//! scores), and every variant the target covers is compared with the reference, bit for
//! bit, including errors and the CUDA-graph buffers' tails.

use arbitrary::{Arbitrary, Unstructured};

use super::cuda_graph::{self, GraphBuffers};
use super::draft_select::{self, DraftVariant};
use super::nsa::{self, NsaBatch, NsaMetadata, NsaMode, NsaParams, NsaVariant, ReqToToken};
use super::sparse::{self, SparseInput, SparseVariant};
use super::{Ctx, Mismatch, Outcome};
use crate::splitmix::Rng;

/// Width of `req_to_token` / the page-table buffer in generated NSA cases.
pub const MAX_CONTEXT_LEN: usize = 72;
/// Rows in the synthetic `req_to_token` pool (row 0 is the reserved zero slot).
pub const POOL_SIZE: usize = 8;

// ---------------------------------------------------------------------------------
// NSA (seeds 001, 002)
// ---------------------------------------------------------------------------------

/// One NSA metadata call: the live batch, the server constants, and the captured size
/// its CUDA graph replays with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsaCase {
    pub mode: NsaMode,
    pub params: NsaParams,
    /// Live requests (before padding).
    pub batch: NsaBatch,
    /// Captured batch size used on replay (≥ max(1, live bs)).
    pub captured_bs: usize,
}

impl NsaCase {
    pub fn req_to_token(&self) -> ReqToToken {
        ReqToToken::synthetic(POOL_SIZE, self.params.max_context_len)
    }
}

/// One live request in a fuzz input.
#[derive(Debug, Clone, Arbitrary)]
pub struct NsaFuzzRequest {
    pub seq_len: u8,
    pub accept: u8,
    pub pool: u8,
}

/// Raw fuzz input for the NSA targets.
#[derive(Debug, Clone, Arbitrary)]
pub struct NsaFuzzInput {
    pub d: u8,
    pub topk: u8,
    pub extra_pad: u8,
    pub requests: Vec<NsaFuzzRequest>,
}

impl NsaFuzzInput {
    /// Normalizes into the wide domain: D ∈ 1..=8, topk ∈ 1..=32 or 2048, live bs ≤ 16,
    /// seq_len ∈ 0..64, accept_length ∈ 0..=D+1, 0-3 padded rows.
    pub fn to_case(&self, mode: NsaMode) -> NsaCase {
        let d = 1 + (self.d % 8) as i32;
        let topk = if self.topk >= 240 { 2048 } else { 1 + (self.topk % 32) as i32 };
        let reqs = &self.requests[..self.requests.len().min(16)];
        let batch = NsaBatch {
            seq_lens: reqs.iter().map(|r| (r.seq_len % 64) as i32).collect(),
            accept_length: reqs.iter().map(|r| (r.accept as i32) % (d + 2)).collect(),
            req_pool_indices: reqs.iter().map(|r| r.pool as usize % POOL_SIZE).collect(),
        };
        NsaCase {
            mode,
            params: NsaParams { num_draft_tokens: d, nsa_index_topk: topk, max_context_len: MAX_CONTEXT_LEN },
            captured_bs: reqs.len().max(1) + (self.extra_pad % 4) as usize,
            batch,
        }
    }
}

/// Names query row `j` of a batch whose reference q lengths are `qo` (the first `live`
/// requests are live, the rest padding).
fn locate_q_row(qo: &[i32], live: usize, j: usize, tail_label: &str) -> (Option<usize>, String) {
    let mut start = 0usize;
    for (i, &q) in qo.iter().enumerate() {
        let q = q.max(0) as usize;
        if j < start + q {
            let kind = if i < live { "request" } else { "padded request" };
            return (Some(i), format!("{kind} {i}, its q-row {}", j - start));
        }
        start += q;
    }
    (None, format!("{tail_label} (row {j}; the reference writes rows 0..{start})"))
}

fn locate_request(live: usize, i: usize) -> (Option<usize>, String) {
    if i < live {
        (Some(i), format!("request {i}"))
    } else {
        (Some(i), format!("padded request {i}"))
    }
}

/// Compares the six NSA fields (eager metadata or graph buffers have the same fields).
#[allow(clippy::too_many_arguments)]
fn compare_nsa_fields(
    ctx: &Ctx<'_>,
    qo: &[i32],
    live: usize,
    tail: &str,
    e: [&[i32]; 5],
    a: [&[i32]; 5],
    ep: &[Vec<i32>],
    ap: &[Vec<i32>],
) -> Result<(), Mismatch> {
    let eq = |x: &i32, y: &i32| x == y;
    ctx.compare("cache_seqlens_int32", e[0], a[0], eq, |i| locate_request(live, i))?;
    ctx.compare("cu_seqlens_k", e[1], a[1], eq, |j| {
        if j == 0 {
            (None, "leading 0".into())
        } else {
            let (r, s) = locate_request(live, j - 1);
            (r, format!("prefix sum through {s}"))
        }
    })?;
    ctx.compare("page_table_1 (rows)", ep, ap, |x, y| x == y, |j| locate_q_row(qo, live, j, tail))?;
    ctx.compare("nsa_seqlens_expanded", e[2], a[2], eq, |j| locate_q_row(qo, live, j, tail))?;
    ctx.compare("nsa_cache_seqlens_int32", e[3], a[3], eq, |j| locate_q_row(qo, live, j, tail))?;
    ctx.compare("nsa_cu_seqlens_k", e[4], a[4], eq, |j| {
        if j == 0 {
            (None, "leading 0".into())
        } else {
            let (r, s) = locate_q_row(qo, live, j - 1, tail);
            (r, format!("prefix sum through {s}"))
        }
    })
}

/// The NSA outputs both paths produce (fresh eager tensors or replay buffers).
trait NsaFields {
    fn fields(&self) -> [&[i32]; 5];
    fn page_table(&self) -> &[Vec<i32>];
}

impl NsaFields for NsaMetadata {
    fn fields(&self) -> [&[i32]; 5] {
        [
            &self.cache_seqlens,
            &self.cu_seqlens_k,
            &self.seqlens_expanded,
            &self.nsa_cache_seqlens,
            &self.nsa_cu_seqlens_k,
        ]
    }
    fn page_table(&self) -> &[Vec<i32>] {
        &self.page_table_1
    }
}

impl NsaFields for GraphBuffers {
    fn fields(&self) -> [&[i32]; 5] {
        [
            &self.cache_seqlens,
            &self.cu_seqlens_k,
            &self.seqlens_expanded,
            &self.nsa_cache_seqlens,
            &self.nsa_cu_seqlens_k,
        ]
    }
    fn page_table(&self) -> &[Vec<i32>] {
        &self.page_table_1
    }
}

/// Compares two outcomes of one path (errors first, then every field).
fn compare_nsa_outcomes<T: NsaFields>(
    ctx: &Ctx<'_>,
    qo: &[i32],
    live: usize,
    tail: &str,
    exp: &Outcome<T>,
    act: &Outcome<T>,
) -> Result<(), Mismatch> {
    strict_errors(ctx, exp, act)?;
    ctx.compare_outcomes(exp, act, |e, a| {
        compare_nsa_fields(ctx, qo, live, tail, e.fields(), a.fields(), e.page_table(), a.page_table())
    })
}

/// Eager path: the variant's fresh metadata vs the reference's.
pub fn check_nsa_eager(case: &NsaCase, variant: NsaVariant) -> Result<(), Mismatch> {
    let r2t = case.req_to_token();
    let run = |v| -> Outcome<NsaMetadata> { nsa::build_eager(v, case.mode, &case.batch, &case.params, &r2t).into() };
    let (exp, act) = (run(NsaVariant::Reference), run(variant));
    let ctx = Ctx { builder: case.mode.builder_name(), variant: variant.name(), path: "eager" };
    let qo = nsa::qo_lens(case.mode, &case.batch, &case.params);
    compare_nsa_outcomes(&ctx, &qo, case.batch.bs(), "beyond the reference's rows", &exp, &act)
}

/// Runs one replay from the capture state; returns the buffers (or the raise).
pub fn replay_outcome(case: &NsaCase, variant: NsaVariant) -> Outcome<GraphBuffers> {
    let r2t = case.req_to_token();
    let padded = cuda_graph::pad_batch(&case.batch, case.captured_bs);
    let mut bufs = GraphBuffers::captured(case.captured_bs, &case.params);
    match cuda_graph::replay(variant, case.mode, &padded, &case.params, &r2t, &mut bufs) {
        Ok(()) => Outcome::Values(bufs),
        Err(e) => Outcome::Error(e.0),
    }
}

/// CUDA-graph path: padded batch, replay into the captured buffers, whole buffers compared.
pub fn check_nsa_replay(case: &NsaCase, variant: NsaVariant) -> Result<(), Mismatch> {
    check_nsa_replay_actual(case, variant, &replay_outcome(case, variant), "cuda-graph replay")
}

/// Compares an observed replay outcome of `variant` (the modelled one, or the buffers read
/// back from a replayed CUDA graph on the device) with the reference's modelled replay,
/// whole buffers, tails included; `path` names where `actual` comes from.
pub fn check_nsa_replay_actual(
    case: &NsaCase,
    variant: NsaVariant,
    act: &Outcome<GraphBuffers>,
    path: &str,
) -> Result<(), Mismatch> {
    let exp = replay_outcome(case, NsaVariant::Reference);
    let ctx = Ctx { builder: case.mode.builder_name(), variant: variant.name(), path };
    let padded = cuda_graph::pad_batch(&case.batch, case.captured_bs);
    let qo = nsa::qo_lens(case.mode, &padded, &case.params);
    let tail = "buffer tail, not written by the reference (capture-time/stale value)";
    compare_nsa_outcomes(&ctx, &qo, case.batch.bs(), tail, &exp, act)
}

/// Both paths: the CUDA-graph replay (the production path) first, then eager.
pub fn check_nsa_case(case: &NsaCase, variant: NsaVariant) -> Result<(), Mismatch> {
    check_nsa_replay(case, variant)?;
    check_nsa_eager(case, variant)
}

// ---------------------------------------------------------------------------------
// Draft selection (seed 000)
// ---------------------------------------------------------------------------------

/// One draft-selection call.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftCase {
    pub scores: Vec<Vec<f32>>,
    pub counts: Vec<usize>,
}

/// Raw fuzz input for `draft_select`.
#[derive(Debug, Clone, Arbitrary)]
pub struct DraftFuzzInput {
    pub n_cand: u8,
    pub counts: Vec<u8>,
    pub scores: Vec<i8>,
}

/// A score byte: -128 → NaN, -127 → -0.0, else a quarter-step value in [-1.75, 1.75]
/// (few distinct values, so ties are common).
pub fn score_from_byte(b: i8) -> f32 {
    match b {
        -128 => f32::NAN,
        -127 => -0.0,
        _ => (b % 8) as f32 / 4.0,
    }
}

impl DraftFuzzInput {
    /// bs ≤ 16, n_cand ∈ 0..=16, counts ∈ 0..=n_cand+1 (n_cand + 1 is the error path).
    pub fn to_case(&self) -> DraftCase {
        let n_cand = (self.n_cand % 17) as usize;
        let counts: Vec<usize> = self.counts.iter().take(16).map(|&c| c as usize % (n_cand + 2)).collect();
        let mut bytes = self.scores.iter().copied().cycle();
        let scores =
            counts.iter().map(|_| (0..n_cand).map(|_| score_from_byte(bytes.next().unwrap_or(0))).collect()).collect();
        DraftCase { scores, counts }
    }
}

/// Compares a draft-selection variant with the loop reference.
pub fn check_draft_case(case: &DraftCase, variant: DraftVariant) -> Result<(), Mismatch> {
    let act: Outcome<draft_select::Selection> = draft_select::select(variant, &case.scores, &case.counts).into();
    check_draft_actual(case, variant, &act, "eager")
}

/// Compares an observed selection of `variant` (modelled, or read back from the device)
/// with the loop reference; `path` names where `act` comes from.
pub fn check_draft_actual(
    case: &DraftCase,
    variant: DraftVariant,
    act: &Outcome<draft_select::Selection>,
    path: &str,
) -> Result<(), Mismatch> {
    let mut exp: Outcome<draft_select::Selection> =
        draft_select::select(DraftVariant::Loop, &case.scores, &case.counts).into();
    if let (true, Outcome::Values(rows)) = (variant.index_ordered(), &mut exp) {
        rows.iter_mut().for_each(|r| r.sort_unstable());
    }
    let ctx = Ctx { builder: "draft-select", variant: variant.name(), path };
    strict_errors(&ctx, &exp, act)?;
    ctx.compare_outcomes(&exp, act, |e, a| {
        for (i, (x, y)) in e.iter().zip(a).enumerate() {
            ctx.compare(
                &format!("selected[{i}]"),
                x,
                y,
                |p, q| p == q,
                |k| (Some(i), format!("request {i}, draft {k}")),
            )?;
        }
        ctx.compare("selected (requests)", e, a, |_, _| true, |i| (Some(i), format!("request {i}")))
    })
}

/// Both raising must raise the same error (typed errors are deterministic).
fn strict_errors<T>(ctx: &Ctx<'_>, exp: &Outcome<T>, act: &Outcome<T>) -> Result<(), Mismatch> {
    if let (Outcome::Error(e), Outcome::Error(a)) = (exp, act) {
        if e != a {
            return Err(Mismatch {
                builder: ctx.builder.into(),
                variant: ctx.variant.into(),
                path: ctx.path.into(),
                field: "error".into(),
                index: None,
                request: None,
                location: "whole call".into(),
                expected: e.clone(),
                actual: a.clone(),
                expected_field: e.clone(),
                actual_field: a.clone(),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Sparse sink + heavy + window (seed 003)
// ---------------------------------------------------------------------------------

/// Raw fuzz input for `sparse_indices`.
#[derive(Debug, Clone, Arbitrary)]
pub struct SparseFuzzInput {
    pub b: u8,
    pub h: u8,
    pub sk: u8,
    pub sink: u8,
    pub window: u8,
    pub heavy_size: u8,
    pub init_offset: u8,
    pub heavy: Vec<u8>,
}

impl SparseFuzzInput {
    /// b, h ∈ 0..=2, sk ∈ 0..24, sink ∈ 0..8, window ∈ 0..10 (both may exceed sk),
    /// heavy_size ∈ 0..5, init_offset ∈ 0..6; heavy bytes ≥ 250 give out-of-range indices.
    pub fn to_case(&self) -> SparseInput {
        let (b, h) = ((self.b % 3) as usize, (self.h % 3) as usize);
        let sk = (self.sk % 24) as usize;
        let heavy_size = (self.heavy_size % 5) as usize;
        let init_offset = (self.init_offset % 6) as usize;
        let room = sk.saturating_sub(init_offset).max(1) as i64;
        let mut bytes = self.heavy.iter().copied().cycle();
        let mut next = || {
            let v = bytes.next().unwrap_or(0);
            match v {
                250..=252 => -1 - init_offset as i64,
                253..=255 => sk as i64,
                _ => v as i64 % room,
            }
        };
        let heavy = (0..b).map(|_| (0..h).map(|_| (0..heavy_size).map(|_| next()).collect()).collect()).collect();
        SparseInput {
            b,
            h,
            sk,
            sink: (self.sink % 8) as usize,
            window: (self.window % 10) as usize,
            heavy_size,
            init_offset,
            heavy,
        }
    }
}

/// Compares a sparse-index variant with the reference.
pub fn check_sparse_case(x: &SparseInput, variant: SparseVariant) -> Result<(), Mismatch> {
    let act: Outcome<sparse::SparseOutput> = sparse::build(variant, x).into();
    check_sparse_actual(x, variant, &act, "eager")
}

/// Compares an observed output of `variant` (modelled, or read back from the device) with
/// the reference; `path` names where `act` comes from.
pub fn check_sparse_actual(
    x: &SparseInput,
    variant: SparseVariant,
    act: &Outcome<sparse::SparseOutput>,
    path: &str,
) -> Result<(), Mismatch> {
    let exp: Outcome<sparse::SparseOutput> = sparse::build(SparseVariant::Reference, x).into();
    let ctx = Ctx { builder: "sparse-indices", variant: variant.name(), path };
    // The kernel reports an out-of-range heavy index as an out-of-bounds store, the
    // reference as HeavyIndexOutOfRange: both raise, which counts as agreement here.
    ctx.compare_outcomes(&exp, act, |e, a| {
        let bh = |i: usize, per: usize| -> (Option<usize>, String) {
            let per = per.max(1);
            let (row, k) = (i / per, i % per);
            let hh = x.h.max(1);
            (Some(row / hh), format!("batch {} head {}, element {k}", row / hh, row % hh))
        };
        let el: Vec<usize> = e.sparse_len.iter().flatten().copied().collect();
        let al: Vec<usize> = a.sparse_len.iter().flatten().copied().collect();
        ctx.compare("sparse_len", &el, &al, |p, q| p == q, |i| bh(i, 1))?;
        let per = el.first().copied().unwrap_or(0);
        let es: Vec<i64> = e.sparse_list.iter().flatten().flatten().copied().collect();
        let as_: Vec<i64> = a.sparse_list.iter().flatten().flatten().copied().collect();
        ctx.compare("sparse_list", &es, &as_, |p, q| p == q, |i| bh(i, per))?;
        let ew: Vec<f32> = e.weight_list.iter().flatten().flatten().copied().collect();
        let aw: Vec<f32> = a.weight_list.iter().flatten().flatten().copied().collect();
        ctx.compare("weight_list", &ew, &aw, |p, q| p.to_bits() == q.to_bits(), |i| bh(i, x.sk))
    })
}

// ---------------------------------------------------------------------------------
// Byte-level entry points (the fuzz targets' bodies)
// ---------------------------------------------------------------------------------

/// The builder fuzz targets. Each compares the variants named on its enum variant with
/// the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FuzzTarget {
    /// All three NSA variants, target_verify (all must agree).
    NsaTargetVerify,
    /// `general` vs reference, draft_extend (must agree).
    NsaDraftExtend,
    /// `uniform-qo` vs reference, draft_extend: **expected to fail**; the fuzzer finds
    /// seed 002's bug (crash inputs are kept as regressions that must still fail).
    NsaDraftExtendUniformQo,
    /// `vectorized` vs `loop`.
    DraftSelect,
    /// `fused-kernel-clamped` vs reference.
    SparseIndices,
}

impl FuzzTarget {
    pub const ALL: [FuzzTarget; 5] = [
        FuzzTarget::NsaTargetVerify,
        FuzzTarget::NsaDraftExtend,
        FuzzTarget::NsaDraftExtendUniformQo,
        FuzzTarget::DraftSelect,
        FuzzTarget::SparseIndices,
    ];

    /// The fuzz target's file/binary name (`fuzz/fuzz_targets/<name>.rs`).
    pub fn name(self) -> &'static str {
        match self {
            FuzzTarget::NsaTargetVerify => "nsa_target_verify",
            FuzzTarget::NsaDraftExtend => "nsa_draft_extend",
            FuzzTarget::NsaDraftExtendUniformQo => "nsa_draft_extend_uniform_qo",
            FuzzTarget::DraftSelect => "draft_select",
            FuzzTarget::SparseIndices => "sparse_indices",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Whether the target is expected to find a disagreement (a known-bad variant).
    pub fn expects_failure(self) -> bool {
        self == FuzzTarget::NsaDraftExtendUniformQo
    }
}

/// Decodes `data` like libfuzzer-sys (`arbitrary_take_rest`) and checks it. `Err` holds a
/// readable report (the decoded input, then the first mismatch).
pub fn check_bytes(target: FuzzTarget, data: &[u8]) -> Result<(), String> {
    let u = Unstructured::new(data);
    let report = |input: &dyn std::fmt::Debug, m: Mismatch| format!("input: {input:#?}\n{m}");
    match target {
        FuzzTarget::NsaTargetVerify | FuzzTarget::NsaDraftExtend | FuzzTarget::NsaDraftExtendUniformQo => {
            let Ok(input) = NsaFuzzInput::arbitrary_take_rest(u) else { return Ok(()) };
            let (mode, variants): (NsaMode, &[NsaVariant]) = match target {
                FuzzTarget::NsaTargetVerify => (NsaMode::TargetVerify, &[NsaVariant::UniformQo, NsaVariant::General]),
                FuzzTarget::NsaDraftExtend => (NsaMode::DraftExtend, &[NsaVariant::General]),
                _ => (NsaMode::DraftExtend, &[NsaVariant::UniformQo]),
            };
            let case = input.to_case(mode);
            for &v in variants {
                check_nsa_case(&case, v).map_err(|m| report(&case, m))?;
            }
            Ok(())
        }
        FuzzTarget::DraftSelect => {
            let Ok(input) = DraftFuzzInput::arbitrary_take_rest(u) else { return Ok(()) };
            let case = input.to_case();
            check_draft_case(&case, DraftVariant::Vectorized).map_err(|m| report(&case, m))
        }
        FuzzTarget::SparseIndices => {
            let Ok(input) = SparseFuzzInput::arbitrary_take_rest(u) else { return Ok(()) };
            let case = input.to_case();
            check_sparse_case(&case, SparseVariant::FusedKernelClamped).map_err(|m| report(&case, m))
        }
    }
}

/// Statistics of a random run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStats {
    pub cases: u64,
    /// Index of the first failing case and its report, if any.
    pub first_failure: Option<(u64, String)>,
}

/// Runs `cases` random byte strings (length 0..=256, SplitMix64 from `seed`) through
/// [`check_bytes`]; stops at the first failure.
pub fn run_random(target: FuzzTarget, cases: u64, seed: u64) -> RunStats {
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 256];
    for i in 0..cases {
        let len = rng.range(0, 256) as usize;
        rng.fill(&mut buf[..len]);
        if let Err(report) = check_bytes(target, &buf[..len]) {
            return RunStats { cases: i + 1, first_failure: Some((i, report)) };
        }
    }
    RunStats { cases, first_failure: None }
}
