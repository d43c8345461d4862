//! `specreplay gpu builders`, part 1: random cases by the million on the device, batched
//! (thousands of cases per graph replay), each compared with the simulator's reference.
//!
//! Per kernel variant it counts `mismatches` (device vs the reference: must be 0 for a
//! correct variant, > 0 for a known-bad one), `raising` (cases on which the reference raises:
//! the host refuses them as SGLang's torch ops would, nothing is launched) and
//! `model_mismatches` (device vs the simulator's model of the *same* variant: must be 0 for
//! every variant: the known-bad kernels fail exactly as modelled). For a correct variant
//! the model is the reference (the simulator's own million-case runs check that), so the
//! model is evaluated only on a mismatch; known-bad variants evaluate it on every case and
//! run at most [`KNOWN_BAD_CASES`] cases (they only have to disagree, as modelled).
//!
//! The case domain is wider than production's: batch 0-512 (0 = an all-padding batch
//! replayed in the graph for bs 1), zero query lengths and draft counts, query lengths
//! above D, seq_lens at and beyond the page-table width, topk clamps, NaN / signed-zero /
//! tied scores, sink and window larger than sk, overlapping regions, heavy size 0, and a
//! few inputs on which the reference raises. Generation is SplitMix64 from `--seed`:
//! the same seed gives the same cases, and both variants of a builder see the same cases.

use std::time::Instant;

use specreplay_sim::builders::cases::{self, DraftCase, NsaCase, POOL_SIZE};
use specreplay_sim::builders::cuda_graph::capture_bucket;
use specreplay_sim::builders::draft_select::{self, DraftVariant};
use specreplay_sim::builders::nsa::{NsaBatch, NsaMode, NsaParams, NsaVariant};
use specreplay_sim::builders::sparse::{self, SparseInput, SparseVariant};
use specreplay_sim::builders::{Mismatch, Outcome};
use specreplay_sim::splitmix::Rng;

use super::{draft, nsa, sparse as dsparse, KernelVariant, BATCH_GRID, KERNEL_VARIANTS};
use crate::builders::GraphedBuilder;
use crate::device::Device;
use crate::error::Result;

/// SGLang's default capture sizes up to 512: 1, 2, 4, 8, then every multiple of 8.
pub fn capture_sizes() -> Vec<usize> {
    let mut v = vec![1, 2, 4];
    v.extend((1..=64).map(|k| k * 8));
    v
}

/// A live batch size: 0 (all padding) 5%, 1-8 40%, 9-64 35%, 65-256 15%, 257-512 5%.
fn live_bs(rng: &mut Rng, max_bs: usize) -> usize {
    let r = rng.range(0, 99);
    let bs = match r {
        0..=4 => 0,
        5..=44 => rng.range(1, 8),
        45..=79 => rng.range(9, 64),
        80..=94 => rng.range(65, 256),
        _ => rng.range(257, 512),
    } as usize;
    bs.min(max_bs)
}

/// A random NSA case (live batch, captured size = its bucket).
pub fn random_nsa_case(rng: &mut Rng, mode: NsaMode, max_bs: usize) -> NsaCase {
    let live = live_bs(rng, max_bs);
    let captured = capture_bucket(live, &capture_sizes()).unwrap_or(live.max(1));
    let d = rng.range(1, 8) as i32;
    let topk = if rng.range(0, 9) < 3 { 2048 } else { rng.range(1, 64) as i32 };
    let rows = captured * d as usize;
    let w = match rng.range(0, 99) {
        0..=89 => rng.range(1, 16) as usize,
        90..=98 => rng.range(17, 96) as usize,
        _ => (rng.range(97, nsa::R2T_STRIDE as u64) as usize).min((1 << 22) / rows).max(1),
    };
    let odd = rng.range(0, 99);
    let mut b = NsaBatch { seq_lens: vec![], accept_length: vec![], req_pool_indices: vec![] };
    for _ in 0..live {
        let s = match rng.range(0, 99) {
            0..=9 => w as i32 - if rng.range(0, 1) == 0 { 0 } else { d },
            10..=12 => rng.range(0, 200_000) as i32,
            _ => rng.range(0, w as u64) as i32,
        };
        b.seq_lens.push(s.max(0));
        b.accept_length.push(rng.range(0, d as u64) as i32);
        b.req_pool_indices.push(rng.range(0, POOL_SIZE as u64 - 1) as usize);
    }
    if live > 0 {
        let k = rng.range(0, live as u64 - 1) as usize;
        match odd {
            0..=2 => b.accept_length[k] = d + rng.range(1, 2) as i32,
            3 => b.accept_length[k] = -1,
            4 => b.req_pool_indices[k] = POOL_SIZE,
            5..=14 => b.accept_length.iter_mut().for_each(|a| *a = d),
            _ => {}
        }
    }
    NsaCase {
        mode,
        params: NsaParams { num_draft_tokens: d, nsa_index_topk: topk, max_context_len: w },
        batch: b,
        captured_bs: captured,
    }
}

/// A random draft-selection case.
pub fn random_draft_case(rng: &mut Rng, max_bs: usize) -> DraftCase {
    let bs = live_bs(rng, max_bs);
    let n = match rng.range(0, 9) {
        0..=5 => rng.range(0, 16),
        6..=8 => rng.range(17, 128),
        _ => rng.range(129, 512),
    } as usize;
    let n = n.min((1 << 20) / bs.max(1));
    let style = rng.range(0, 9);
    let scores = (0..bs)
        .map(|_| {
            (0..n)
                .map(|_| match style {
                    0..=4 => cases::score_from_byte(rng.range(0, 255) as u8 as i8),
                    5..=7 => (rng.range(0, 1 << 20) as f32) / (1 << 20) as f32,
                    _ => f32::from_bits(rng.next_u64() as u32),
                })
                .collect()
        })
        .collect();
    let mut counts: Vec<usize> = match rng.range(0, 9) {
        // seed 000's high-variance counts: [1, 1, 1, 64]-style.
        0..=2 => (0..bs).map(|i| if i % 4 == 3 { n.min(64) } else { n.min(1) }).collect(),
        3 => vec![0; bs],
        _ => (0..bs).map(|_| rng.range(0, n as u64) as usize).collect(),
    };
    if bs > 0 && rng.range(0, 99) < 3 {
        let k = rng.range(0, bs as u64 - 1) as usize;
        counts[k] = n + 1;
    }
    DraftCase { scores, counts }
}

/// A random sparse case; sk up to `max_sk` in 3% of cases.
pub fn random_sparse_case(rng: &mut Rng, max_sk: usize) -> SparseInput {
    let (b, h) = (rng.range(0, 4) as usize, rng.range(0, 8) as usize);
    let sk = match rng.range(0, 99) {
        0..=74 => rng.range(0, 64) as usize,
        75..=96 => rng.range(65, 1024.min(max_sk as u64).max(65)) as usize,
        _ => rng.range(1025.min(max_sk as u64), max_sk as u64) as usize,
    };
    let big = sk > 64;
    let pick = |rng: &mut Rng| -> usize {
        if big {
            rng.range(0, 256) as usize
        } else {
            rng.range(0, sk as u64 + 6) as usize
        }
    };
    let sink = pick(rng);
    let window = pick(rng);
    let init_offset = rng.range(0, 8.min(sk as u64)) as usize;
    let heavy_size = if sk == 0 && rng.range(0, 49) > 0 { 0 } else { rng.range(0, 64) as usize };
    let room = sk.saturating_sub(init_offset) as u64;
    let mut heavy: Vec<Vec<Vec<i64>>> = (0..b)
        .map(|_| {
            (0..h)
                .map(|_| (0..heavy_size).map(|_| if room == 0 { 0 } else { rng.range(0, room - 1) as i64 }).collect())
                .collect()
        })
        .collect();
    if b * h * heavy_size > 0 && rng.range(0, 99) < 3 {
        heavy[0][0][0] = if rng.range(0, 1) == 0 { sk as i64 } else { -1 - init_offset as i64 };
    }
    SparseInput { b, h, sk, sink, window, heavy_size, init_offset, heavy }
}

/// Where the kernels run: the device (graph replays), or their CPU twins (tests, dry runs).
#[derive(Clone, Copy)]
pub enum Backend<'a> {
    Device(&'a Device),
    Twin,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub kv: KernelVariant,
    pub cases: u64,
    pub raising: u64,
    pub mismatches: u64,
    pub model_mismatches: u64,
    /// The first mismatch (vs the reference), with the case.
    pub first: Option<String>,
    /// The first disagreement with the simulator's model of the same variant.
    pub first_model: Option<String>,
    pub seconds: f64,
    /// Where `seconds` went.
    pub phases: Phases,
}

impl Row {
    /// Whether the row is what it must be: a correct variant with 0 mismatches, a known-bad
    /// one with > 0, and every variant equal to its own model.
    /// A row that ran no cases (`--cases 0`: timings only) is not judged.
    pub fn ok(&self) -> bool {
        self.model_mismatches == 0 && (self.cases == 0 || (self.mismatches > 0) == self.kv.known_bad)
    }
}

/// The verdicts of one case: (raising, vs reference, vs own model).
type Verdict = (bool, Option<Mismatch>, Option<String>);

fn tally(row: &mut Row, verdicts: Vec<(u64, Verdict)>, repro: &dyn Fn(u64) -> String) {
    for (i, (raising, m, model)) in verdicts {
        row.cases += 1;
        row.raising += raising as u64;
        if let Some(m) = m {
            row.mismatches += 1;
            if row.first.is_none() {
                row.first = Some(format!("case {i}: {m}\n  reproduce: {}", repro(i)));
            }
        }
        if let Some(e) = model {
            row.model_mismatches += 1;
            if row.first_model.is_none() {
                row.first_model = Some(format!("case {i}: {e}\n  reproduce: {}", repro(i)));
            }
        }
    }
}

/// Runs `f` over `items` on every core, keeping the order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(32);
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items.chunks(chunk).map(|c| s.spawn(|| c.iter().map(&f).collect::<Vec<R>>())).collect();
        handles.into_iter().flat_map(|h| h.join().expect("comparison thread")).collect()
    })
}

/// Both raise (the device path refuses what the model raises on; messages differ), or
/// equal values.
fn same_outcome<T: PartialEq>(a: &Outcome<T>, b: &Outcome<T>) -> bool {
    match (a, b) {
        (Outcome::Error(_), Outcome::Error(_)) => true,
        (a, b) => a == b,
    }
}

fn nsa_variant(v: &str) -> NsaVariant {
    NsaVariant::from_name(v).unwrap_or(NsaVariant::General)
}

/// Cases generated per batch before the device runs them.
const BATCH_CASES: usize = 4096;

/// Case `i`'s own generator seed (cases are independent: generated in parallel, and any one
/// can be regenerated alone).
fn case_seed(base: u64, i: u64) -> u64 {
    specreplay_sim::splitmix::splitmix(base ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The random cases of one row, generated [`BATCH_CASES`] at a time on every core.
struct Feed<C> {
    queue: std::collections::VecDeque<(u64, C)>,
    next: u64,
    n: u64,
}

impl<C: Send> Feed<C> {
    fn new(n: u64) -> Self {
        Feed { queue: Default::default(), next: 0, n }
    }
    fn done(&self) -> bool {
        self.queue.is_empty() && self.next >= self.n
    }
    fn pop(&mut self, gen: &(dyn Fn(u64) -> C + Sync)) -> Option<(u64, C)> {
        if self.queue.is_empty() && self.next < self.n {
            let ids: Vec<u64> = (self.next..(self.next + BATCH_CASES as u64).min(self.n)).collect();
            self.next += ids.len() as u64;
            let cases = par_map(&ids, |&i| gen(i));
            self.queue.extend(ids.into_iter().zip(cases));
        }
        self.queue.pop_front()
    }
    /// Puts back a case that did not fit the current batch.
    fn unpop(&mut self, x: (u64, C)) {
        self.queue.push_front(x);
    }
}

fn seed_for(seed: u64, builder: &str) -> u64 {
    builder.bytes().fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| h.rotate_left(7) ^ b as u64)
}

/// One builder's side of the agreement run: its random cases, the host's refusal (what the
/// reference raises on: nothing is launched), how a case packs into a batch, and how its
/// result is read back and judged. [`run_row`] is the one loop over batches.
trait Harness: Sync {
    type Case: Send + Sync + std::fmt::Debug;
    type Packed: Sync;
    type Values: PartialEq + Send;
    type Dev: GraphedBuilder<Packed = Self::Packed>;
    fn new_device(&self, dev: &Device) -> Result<Self::Dev>;
    fn generate(&self, rng: &mut Rng) -> Self::Case;
    fn raises(&self, c: &Self::Case) -> Option<String>;
    fn packed(&self) -> Self::Packed;
    fn cases_in(p: &Self::Packed) -> usize;
    fn fits(&self, p: &Self::Packed, c: &Self::Case) -> bool;
    fn push(&self, p: &mut Self::Packed, c: &Self::Case) -> std::result::Result<(), String>;
    fn run_twin(&self, p: &mut Self::Packed);
    /// The launched case in `slot`, or (`None`) a case refused on the host with `raised`.
    fn actual(&self, p: &Self::Packed, slot: Option<usize>, c: &Self::Case, raised: &str) -> Outcome<Self::Values>;
    /// Against the reference: the first mismatch, if any.
    fn check(&self, c: &Self::Case, act: &Outcome<Self::Values>) -> Option<Mismatch>;
    /// The simulator's model of the variant.
    fn model(&self, c: &Self::Case) -> Outcome<Self::Values>;
    fn variant_name(&self) -> &'static str;
}

struct NsaHarness {
    mode: NsaMode,
    variant: NsaVariant,
    max_bs: usize,
    cap: nsa::Capacity,
    r2t: Vec<i32>,
}

impl Harness for NsaHarness {
    type Case = NsaCase;
    type Packed = nsa::Packed;
    type Values = specreplay_sim::builders::cuda_graph::GraphBuffers;
    type Dev = nsa::NsaDevice;
    fn new_device(&self, dev: &Device) -> Result<Self::Dev> {
        nsa::NsaDevice::new(dev, self.cap)
    }
    fn generate(&self, rng: &mut Rng) -> NsaCase {
        random_nsa_case(rng, self.mode, self.max_bs)
    }
    fn raises(&self, c: &NsaCase) -> Option<String> {
        nsa::raises(c)
    }
    fn packed(&self) -> nsa::Packed {
        nsa::Packed::default()
    }
    fn cases_in(p: &nsa::Packed) -> usize {
        p.cases
    }
    fn fits(&self, p: &nsa::Packed, c: &NsaCase) -> bool {
        self.cap.fits(p, nsa::footprint(c, true))
    }
    fn push(&self, p: &mut nsa::Packed, c: &NsaCase) -> std::result::Result<(), String> {
        p.push(c, true)
    }
    fn run_twin(&self, p: &mut nsa::Packed) {
        p.run_twin(self.variant == NsaVariant::UniformQo, &self.r2t, nsa::R2T_STRIDE)
    }
    fn actual(&self, p: &nsa::Packed, slot: Option<usize>, c: &NsaCase, _raised: &str) -> Outcome<Self::Values> {
        match slot {
            Some(k) => Outcome::Values(p.unpack(k)),
            // Refused on the host: SGLang's torch ops raise before the replay (torch's message).
            None => cases::replay_outcome(c, NsaVariant::Reference),
        }
    }
    fn check(&self, c: &NsaCase, act: &Outcome<Self::Values>) -> Option<Mismatch> {
        cases::check_nsa_replay_actual(c, self.variant, act, "cuda-graph replay on the device").err()
    }
    fn model(&self, c: &NsaCase) -> Outcome<Self::Values> {
        cases::replay_outcome(c, self.variant)
    }
    fn variant_name(&self) -> &'static str {
        self.variant.name()
    }
}

struct DraftHarness {
    variant: DraftVariant,
    max_bs: usize,
    cap: draft::Capacity,
}

impl Harness for DraftHarness {
    type Case = DraftCase;
    type Packed = draft::Packed;
    type Values = draft_select::Selection;
    type Dev = draft::DraftDevice;
    fn new_device(&self, dev: &Device) -> Result<Self::Dev> {
        draft::DraftDevice::new(dev, self.cap)
    }
    fn generate(&self, rng: &mut Rng) -> DraftCase {
        random_draft_case(rng, self.max_bs)
    }
    fn raises(&self, c: &DraftCase) -> Option<String> {
        draft::raises(c)
    }
    fn packed(&self) -> draft::Packed {
        draft::Packed::default()
    }
    fn cases_in(p: &draft::Packed) -> usize {
        p.cases
    }
    fn fits(&self, p: &draft::Packed, c: &DraftCase) -> bool {
        self.cap.fits(p, draft::footprint(c))
    }
    fn push(&self, p: &mut draft::Packed, c: &DraftCase) -> std::result::Result<(), String> {
        p.push(c)
    }
    fn run_twin(&self, p: &mut draft::Packed) {
        p.run_twin(self.variant == DraftVariant::VectorizedSorted)
    }
    fn actual(&self, p: &draft::Packed, slot: Option<usize>, _c: &DraftCase, raised: &str) -> Outcome<Self::Values> {
        match slot {
            Some(k) => Outcome::Values(p.unpack(k)),
            None => Outcome::Error(raised.to_string()),
        }
    }
    fn check(&self, c: &DraftCase, act: &Outcome<Self::Values>) -> Option<Mismatch> {
        cases::check_draft_actual(c, self.variant, act, "cuda-graph replay on the device").err()
    }
    fn model(&self, c: &DraftCase) -> Outcome<Self::Values> {
        Outcome::from(draft_select::select(self.variant, &c.scores, &c.counts))
    }
    fn variant_name(&self) -> &'static str {
        self.variant.name()
    }
}

struct SparseHarness {
    variant: SparseVariant,
    max_sk: usize,
    cap: dsparse::Capacity,
}

impl Harness for SparseHarness {
    type Case = SparseInput;
    type Packed = dsparse::Packed;
    type Values = sparse::SparseOutput;
    type Dev = dsparse::SparseDevice;
    fn new_device(&self, dev: &Device) -> Result<Self::Dev> {
        dsparse::SparseDevice::new(dev, self.cap)
    }
    fn generate(&self, rng: &mut Rng) -> SparseInput {
        random_sparse_case(rng, self.max_sk)
    }
    fn raises(&self, c: &SparseInput) -> Option<String> {
        dsparse::raises(c)
    }
    fn packed(&self) -> dsparse::Packed {
        dsparse::Packed::new(dsparse::unclamped(self.variant))
    }
    fn cases_in(p: &dsparse::Packed) -> usize {
        p.cases
    }
    fn fits(&self, p: &dsparse::Packed, c: &SparseInput) -> bool {
        self.cap.fits(p, dsparse::footprint(c, dsparse::unclamped(self.variant)))
    }
    fn push(&self, p: &mut dsparse::Packed, c: &SparseInput) -> std::result::Result<(), String> {
        p.push(c)
    }
    fn run_twin(&self, p: &mut dsparse::Packed) {
        p.run_twin()
    }
    fn actual(&self, p: &dsparse::Packed, slot: Option<usize>, c: &SparseInput, raised: &str) -> Outcome<Self::Values> {
        match slot {
            Some(k) => p.unpack(k, c),
            None => Outcome::Error(raised.to_string()),
        }
    }
    fn check(&self, c: &SparseInput, act: &Outcome<Self::Values>) -> Option<Mismatch> {
        cases::check_sparse_actual(c, self.variant, act, "cuda-graph replay on the device").err()
    }
    fn model(&self, c: &SparseInput) -> Outcome<Self::Values> {
        Outcome::from(sparse::build(self.variant, c))
    }
    fn variant_name(&self) -> &'static str {
        self.variant.name()
    }
}

/// Where an agreement row's wall time went (seconds): generating the cases and the host's
/// refusals (every core), packing them (one thread), the device's stage + graph replay +
/// read-back (or the CPU twins), and the comparisons (every core).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    pub generate: f64,
    pub pack: f64,
    pub device: f64,
    pub check: f64,
}

/// Cases between two progress events of a row (`RUST_LOG=info`).
const PROGRESS_EVERY: u64 = 1 << 17;

/// The one batch loop: generate, pack until a buffer is full, run the batch on the device
/// (or the twins), judge every case.
fn run_row<H: Harness>(h: &H, be: Backend<'_>, kv: KernelVariant, n: u64, seed: u64) -> Result<Row> {
    let mut dev = match be {
        Backend::Device(dev) => Some((dev, h.new_device(dev)?)),
        Backend::Twin => None,
    };
    let base = seed_for(seed, kv.builder);
    let mut row = Row {
        kv,
        cases: 0,
        raising: 0,
        mismatches: 0,
        model_mismatches: 0,
        first: None,
        first_model: None,
        seconds: 0.0,
        phases: Phases::default(),
    };
    let t = Instant::now();
    let mut feed = Feed::new(n);
    let gen = |i: u64| {
        let c = h.generate(&mut Rng::new(case_seed(base, i)));
        let raised = h.raises(&c);
        (c, raised)
    };
    let mut next_progress = PROGRESS_EVERY;
    while !feed.done() {
        let mut p = h.packed();
        let mut batch: Vec<(u64, H::Case, Option<String>)> = Vec::new();
        loop {
            let t0 = Instant::now();
            let item = feed.pop(&gen);
            let t1 = Instant::now();
            row.phases.generate += (t1 - t0).as_secs_f64();
            let Some((i, (c, raised))) = item else { break };
            if raised.is_some() {
                batch.push((i, c, raised));
                continue;
            }
            if !h.fits(&p, &c) {
                if H::cases_in(&p) == 0 {
                    return Err(crate::ExecError::InvalidInput(format!(
                        "{} case {i} does not fit the buffers",
                        kv.builder
                    )));
                }
                feed.unpop((i, (c, None)));
                break;
            }
            h.push(&mut p, &c).map_err(crate::ExecError::InvalidInput)?;
            batch.push((i, c, None));
            row.phases.pack += t1.elapsed().as_secs_f64();
        }
        let t0 = Instant::now();
        if H::cases_in(&p) > 0 {
            match dev.as_mut() {
                Some((d, dd)) => dd.run(d, kv.entry, &mut p, BATCH_GRID)?,
                None => h.run_twin(&mut p),
            }
        }
        let t1 = Instant::now();
        row.phases.device += (t1 - t0).as_secs_f64();
        let mut k = 0usize;
        let slots: Vec<(u64, &H::Case, Option<usize>, &str)> = batch
            .iter()
            .map(|(i, c, raised)| {
                let s = raised.is_none().then_some(k);
                k += raised.is_none() as usize;
                (*i, c, s, raised.as_deref().unwrap_or(""))
            })
            .collect();
        let verdicts = par_map(&slots, |&(i, c, slot, raised)| {
            let act = h.actual(&p, slot, c, raised);
            let m = h.check(c, &act);
            let model_err = (kv.known_bad || m.is_some())
                .then(|| h.model(c))
                .filter(|model| !same_outcome(model, &act))
                .map(|_| format!("device differs from the simulator's {} model", h.variant_name()));
            (i, (slot.is_none(), m.map(|m| with_case(m, c)), model_err))
        });
        tally(&mut row, verdicts, &|i| {
            format!("specreplay gpu builders --cases {} --seed {seed} (case {i} of {})", i + 1, kv.builder)
        });
        row.phases.check += t1.elapsed().as_secs_f64();
        if row.cases >= next_progress {
            next_progress += PROGRESS_EVERY;
            tracing::info!(
                kernel = kv.builder,
                variant = kv.variant,
                cases = row.cases,
                mismatches = row.mismatches,
                seconds = t.elapsed().as_secs_f64(),
                phases = ?row.phases,
                "builder agreement progress"
            );
        }
    }
    row.seconds = t.elapsed().as_secs_f64();
    Ok(row)
}

fn with_case<C: std::fmt::Debug>(mut m: Mismatch, c: &C) -> Mismatch {
    let s = format!("{c:?}");
    let s = if s.len() > 600 { format!("{}...", &s[..600]) } else { s };
    m.location = format!("{} [input: {s}]", m.location);
    m
}

fn run_nsa(be: Backend<'_>, kv: KernelVariant, n: u64, seed: u64, max_bs: usize) -> Result<Row> {
    let mode = if kv.builder == "nsa-target-verify" { NsaMode::TargetVerify } else { NsaMode::DraftExtend };
    let cap = nsa::Capacity { cases: BATCH_CASES, reqs: 1 << 21, rows: 1 << 24, page: 1 << 26 };
    let h = NsaHarness { mode, variant: nsa_variant(kv.variant), max_bs, cap, r2t: nsa::req_to_token() };
    run_row(&h, be, kv, n, seed)
}

fn run_draft(be: Backend<'_>, kv: KernelVariant, n: u64, seed: u64, max_bs: usize) -> Result<Row> {
    let variant = if kv.known_bad { DraftVariant::VectorizedSorted } else { DraftVariant::Vectorized };
    let cap = draft::Capacity { cases: BATCH_CASES, rows: 1 << 21, scores: 1 << 26, out: 1 << 24 };
    run_row(&DraftHarness { variant, max_bs, cap }, be, kv, n, seed)
}

fn run_sparse(be: Backend<'_>, kv: KernelVariant, n: u64, seed: u64, max_sk: usize) -> Result<Row> {
    let variant = if kv.known_bad { SparseVariant::FusedKernel } else { SparseVariant::FusedKernelClamped };
    let cap = dsparse::Capacity { cases: BATCH_CASES, heavy: 1 << 22, list: 1 << 22, lens: 1 << 20, weights: 1 << 26 };
    run_row(&SparseHarness { variant, max_sk, cap }, be, kv, n, seed)
}

/// Largest live batch of the random NSA / draft cases and largest sk of the sparse ones.
pub const MAX_BS: usize = 512;
pub const MAX_SK: usize = 32768;

/// Cases of a known-bad variant at most (they only have to disagree, as modelled).
pub const KNOWN_BAD_CASES: u64 = 100_000;

/// Runs `n` cases of every correct kernel variant and `min(n, KNOWN_BAD_CASES)` of every
/// known-bad one; `progress` sees each row as it completes.
pub fn run(be: Backend<'_>, n: u64, seed: u64, progress: &mut dyn FnMut(&Row)) -> Result<Vec<Row>> {
    run_only(be, &[], n, seed, progress)
}

/// [`run`] restricted to the kernel variants whose builder is in `only` (empty: all).
/// Unknown names are the caller's to reject ([`builder_names`]).
pub fn run_only(
    be: Backend<'_>,
    only: &[String],
    n: u64,
    seed: u64,
    progress: &mut dyn FnMut(&Row),
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &kv in KERNEL_VARIANTS.iter().filter(|kv| only.is_empty() || only.iter().any(|b| b == kv.builder)) {
        let n = if kv.known_bad { n.min(KNOWN_BAD_CASES) } else { n };
        let row = match kv.builder {
            "nsa-target-verify" | "nsa-draft-extend" => run_nsa(be, kv, n, seed, MAX_BS)?,
            "draft-select" => run_draft(be, kv, n, seed, MAX_BS)?,
            _ => run_sparse(be, kv, n, seed, MAX_SK)?,
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The builders' names, in table order (each once).
pub fn builder_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for kv in KERNEL_VARIANTS {
        if !names.contains(&kv.builder) {
            names.push(kv.builder);
        }
    }
    names
}

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:<18} {:<21} {:>9} {:>10} {:>8} {:>15}  {}\n",
        "kernel", "variant", "cases", "mismatches", "raising", "model-mismatch", "expected"
    )
}

/// One row's line (printed as soon as the row completes).
pub fn line(r: &Row) -> String {
    format!(
        "{:<18} {:<21} {:>9} {:>10} {:>8} {:>15}  {}{}\n",
        r.kv.builder,
        r.kv.variant,
        r.cases,
        r.mismatches,
        r.raising,
        r.model_mismatches,
        if r.kv.known_bad { "> 0 (known bad)" } else { "0" },
        if r.ok() { "" } else { "   <-- FAIL" }
    )
}

/// The first mismatch of each row (and the first disagreement with its own model).
pub fn details(rows: &[Row]) -> String {
    let mut s = String::new();
    for r in rows {
        if let Some(f) = &r.first {
            s.push_str(&format!("\nfirst mismatch, {} / {}: {f}\n", r.kv.builder, r.kv.variant));
        }
        if let Some(f) = &r.first_model {
            s.push_str(&format!("\nfirst disagreement with its own model, {} / {}: {f}\n", r.kv.builder, r.kv.variant));
        }
    }
    s
}

/// The whole table: header, rows, details.
pub fn table(rows: &[Row]) -> String {
    let mut s = header();
    rows.iter().for_each(|r| s.push_str(&line(r)));
    s + &details(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_cover_the_edges() {
        let mut rng = Rng::new(1);
        let nsa: Vec<NsaCase> = (0..2000).map(|_| random_nsa_case(&mut rng, NsaMode::DraftExtend, MAX_BS)).collect();
        assert!(nsa.iter().any(|c| c.batch.bs() == 0 && c.captured_bs == 1), "all-padding batches");
        assert!(nsa.iter().any(|c| c.batch.accept_length.contains(&0)), "zero query lengths");
        assert!(nsa.iter().any(|c| c.batch.bs() > 256), "large batches");
        assert!(nsa.iter().any(|c| c.batch.seq_lens.iter().any(|&s| s as usize >= c.params.max_context_len)));
        let d: Vec<DraftCase> = (0..2000).map(|_| random_draft_case(&mut rng, MAX_BS)).collect();
        assert!(d.iter().any(|c| !c.counts.is_empty() && c.counts.iter().all(|&x| x == 0)));
        assert!(d.iter().any(|c| c.scores.iter().flatten().any(|s| s.is_nan())));
        let s: Vec<SparseInput> = (0..2000).map(|_| random_sparse_case(&mut rng, MAX_SK)).collect();
        assert!(s.iter().any(|x| x.window > x.sk && x.b * x.h > 0));
        assert!(s.iter().any(|x| x.sink > x.sk && x.b * x.h > 0));
        assert!(s.iter().any(|x| x.sk > 4096));
    }

    /// The whole agreement run with the kernels' CPU twins standing in for the device:
    /// correct variants 0 mismatches, known-bad ones > 0, every variant equal to its model.
    #[test]
    fn the_agreement_run_on_the_twins_passes_and_catches_every_known_bad_variant() {
        let t = Instant::now();
        let rows =
            run(Backend::Twin, 1500, 7, &mut |r| eprintln!("{} {} {:.2} s", r.kv.builder, r.kv.variant, r.seconds))
                .unwrap();
        let text = table(&rows);
        assert_eq!(rows.len(), KERNEL_VARIANTS.len());
        for r in &rows {
            assert!(r.ok(), "{text}");
            assert_eq!(r.cases, 1500);
            assert!(r.raising > 0, "{text}");
        }
        assert!(text.contains("first mismatch, nsa-draft-extend / uniform-qo"), "{text}");
        eprintln!("{text}\n({:.1} s)", t.elapsed().as_secs_f64());
    }

    #[test]
    fn rows_judge_known_bad_and_correct_variants() {
        let kv = KERNEL_VARIANTS[0];
        let mut r = Row {
            kv,
            cases: 10,
            raising: 0,
            mismatches: 0,
            model_mismatches: 0,
            first: None,
            first_model: None,
            seconds: 0.0,
            phases: Phases::default(),
        };
        assert!(r.ok());
        r.mismatches = 1;
        assert!(!r.ok());
        let bad = KERNEL_VARIANTS.iter().find(|k| k.known_bad).copied().unwrap();
        let mut b = Row { kv: bad, ..r.clone() };
        assert!(b.ok());
        b.mismatches = 0;
        assert!(!b.ok(), "a known-bad variant that never disagrees is a failure");
        b.mismatches = 3;
        b.model_mismatches = 1;
        assert!(!b.ok());
        let skipped = Row { kv: bad, cases: 0, mismatches: 0, model_mismatches: 0, ..r.clone() };
        assert!(skipped.ok(), "--cases 0 runs timings only");
        assert!(table(&[r]).contains("<-- FAIL"));
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// CPU cost of the agreement run (twins stand in for the device). Run by hand:
    /// `cargo test --release -p specreplay-executor --lib builders::agreement::cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn agreement_cpu_cost() {
        let n: u64 = std::env::var("BUILDERS_COST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        run(Backend::Twin, n, 3, &mut |r| {
            eprintln!("{} {} {} cases {:.2} s {:?}", r.kv.builder, r.kv.variant, r.cases, r.seconds, r.phases)
        })
        .unwrap();
    }
}
