//! `specreplay gpu selftest`: every kernel against its CPU reference on random inputs,
//! buffer for buffer (stale tails included), plus the whole step pipeline replayed in
//! CUDA graphs (FULL), split around eager context reads (PIECEWISE) and eager (NONE).
//!
//! Inputs are random but valid (`StepInput::validate`): empty batches, all-padding
//! batches (no real row, padded metadata), zero-draft rows, discarded rows, blocks
//! outside the cache in read-only columns, tie-heavy logits, and real-vocabulary rows
//! (151,936 wide) in every 20th group of cases. Every buffer starts with random contents, so a write
//! outside a kernel's range is a mismatch. [`random_case`] needs no GPU and is tested on CPU.

use specreplay_sim::oracle::Synthetic;
use specreplay_sim::splitmix::splitmix;

use crate::device::Device;
use crate::error::Result;
use crate::graphs::{self, StepGraphs};
use crate::layout::*;
use crate::step::{self, Kernel};

/// Vocabulary of the real-vocabulary cases (Qwen3's).
pub const WIDE_VOCAB: usize = 151_936;

/// The project's SplitMix64 (`specreplay_sim::splitmix::Rng`) with the draws the random
/// cases use.
#[derive(Debug, Clone)]
pub struct Rng(specreplay_sim::splitmix::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(specreplay_sim::splitmix::Rng::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..n` (`n >= 1`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `pct` percent.
    pub fn pct(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }
}

/// A random capacity; `wide` uses the real vocabulary with few logits rows.
pub fn random_capacity(rng: &mut Rng, wide: bool) -> Capacity {
    let block_size = [1, 2, 3, 4, 8, 16][rng.below(6)];
    let max_model_len = rng.range(1, 40);
    let max_tokens = rng.range(1, 48);
    Capacity {
        max_num_seqs: rng.range(1, 6),
        max_model_len,
        blocks_per_row: max_model_len.div_ceil(block_size),
        block_size,
        max_tokens,
        num_blocks: rng.range(1, 40),
        max_logits: if wide { rng.range(1, 4) } else { rng.range(1, max_tokens) },
        vocab: if wide { WIDE_VOCAB } else { rng.range(1, 50) },
        max_width: rng.range(1, 5),
    }
}

fn fill_i32(rng: &mut Rng, v: &mut [i32], lo: i64, hi: i64) {
    for x in v {
        *x = (lo + (rng.next_u64() % (hi - lo) as u64) as i64) as i32;
    }
}

/// Random contents for every buffer (the "stale" state a step starts from).
pub fn random_buffers(rng: &mut Rng, cap: Capacity) -> Result<HostBuffers> {
    let mut b = HostBuffers::zeroed(cap)?;
    let v = cap.vocab as i64;
    for buf in [
        &mut b.token_table,
        &mut b.input_ids,
        &mut b.consumed_ids,
        &mut b.token_cache,
        &mut b.expected,
        &mut b.argmax,
        &mut b.sampled,
        &mut b.num_computed,
        &mut b.num_sampled,
        &mut b.seqused_k,
        &mut b.cu_sampled,
        &mut b.logits_indices,
        &mut b.cu_seqlens_q,
        &mut b.query_start_loc,
    ] {
        fill_i32(rng, buf, -2, v.max(2));
    }
    fill_i32(rng, &mut b.block_table, -1, cap.num_blocks as i64 + 2);
    fill_i32(rng, &mut b.meta_block_table, -1, cap.num_blocks as i64 + 2);
    fill_i32(rng, &mut b.discard, 0, 2);
    fill_i32(rng, &mut b.expected_len, 0, cap.expected_stride() as i64 + 1);
    for x in b.positions.iter_mut().chain(b.slot_mapping.iter_mut()).chain(b.consumed_pos.iter_mut()) {
        *x = rng.below(1000) as i64 - 3;
    }
    for x in &mut b.logits {
        *x = rng.below(1 << 20) as f32;
    }
    for x in &mut b.counters {
        *x = rng.below(5) as u32;
    }
    Ok(b)
}

/// A random valid step staged into `b` (per-row inputs, tables, counts). Block ids of
/// the columns the step writes are distinct (as the engine's are), so the cache writes
/// never race; 3% of them are -1 or outside the cache.
pub fn random_step(rng: &mut Rng, b: &mut HostBuffers) -> Result<StepInput> {
    let cap = b.cap;
    let mut pool: Vec<i32> = (0..cap.num_blocks as i32).collect();
    for i in (1..pool.len()).rev() {
        pool.swap(i, rng.below(i + 1));
    }
    let empty = rng.pct(8);
    let want = if empty { 0 } else { rng.range(1, cap.max_num_seqs) };
    let mut s = StepInput { query_start_loc: vec![0], ..Default::default() };
    let (mut total, mut logits) = (0usize, 0usize);
    let spec = rng.pct(70);
    'rows: for r in 0..want {
        let room = cap.max_tokens - total;
        if room == 0 {
            break;
        }
        let c = rng.below(cap.max_model_len);
        let short = if rng.pct(50) { 4 } else { 40 };
        let q = rng.range(1, (cap.max_model_len - c).min(room).min(short));
        let ns = if spec { rng.range(1, q.min(cap.max_width)) } else { 1 };
        if logits + ns > cap.max_logits {
            break;
        }
        // Written columns get fresh blocks.
        let row_bt = r * cap.blocks_per_row;
        for col in c / cap.block_size..=(c + q - 1) / cap.block_size {
            let Some(blk) = pool.pop() else { break 'rows };
            b.block_table[row_bt + col] = if rng.pct(3) {
                if rng.pct(50) {
                    -1
                } else {
                    (cap.num_blocks + rng.below(3)) as i32
                }
            } else {
                blk
            };
        }
        // Read-only columns: mostly valid (may repeat), sometimes outside the cache.
        for col in 0..c / cap.block_size {
            if rng.pct(90) {
                b.block_table[row_bt + col] = rng.below(cap.num_blocks) as i32;
            }
        }
        total += q;
        logits += ns;
        s.num_computed.push(c as i32);
        s.query_start_loc.push(total as i32);
        s.num_sampled.push(ns as i32);
        s.discard.push(rng.pct(15));
    }
    let n = s.num_reqs();
    let full = rng.pct(50);
    s.meta_reqs = if full { rng.range(n, cap.max_tokens) } else { n };
    s.meta_tokens = if full { rng.range(total, cap.max_tokens) } else { total };
    s.padded_tokens = rng.range(total.max(s.meta_tokens), cap.max_tokens);
    let max_ns = s.num_sampled.iter().copied().max().unwrap_or(1) as usize;
    s.width = rng.range(max_ns, cap.max_width);
    // Recorded rows mostly agree with the token table.
    let stride = cap.expected_stride();
    for r in 0..n {
        if rng.pct(80) {
            for p in 0..cap.max_model_len {
                b.expected[r * stride + p] = b.token_table[r * cap.max_model_len + p];
            }
            if rng.pct(80) {
                b.expected_len[r] = rng.range(cap.max_model_len / 2, stride) as i32;
            }
        }
    }
    s.stage(b)?;
    Ok(s)
}

/// A random case: buffers, a staged step and a synthetic oracle of the capacity's vocabulary.
pub fn random_case(seed: u64, wide: bool) -> Result<(HostBuffers, Synthetic)> {
    let cap = random_capacity(&mut Rng::new(seed ^ 0xc0ff_ee00), wide);
    random_case_in(seed, cap)
}

/// A random case within a given capacity.
pub fn random_case_in(seed: u64, cap: Capacity) -> Result<(HostBuffers, Synthetic)> {
    let mut rng = Rng::new(seed);
    let mut b = random_buffers(&mut rng, cap)?;
    random_step(&mut rng, &mut b)?;
    let oracle = Synthetic { seed: rng.next_u64(), vocab_size: cap.vocab as u32, order: rng.range(1, 8) as u32 };
    Ok((b, oracle))
}

/// The kernels that produce `k`'s inputs, in order (synthetic or continuation model).
fn prefix(k: Kernel, synthetic: bool) -> Vec<Kernel> {
    let full = graphs::full_plan(synthetic);
    let mut p: Vec<Kernel> = match k {
        Kernel::SyntheticLogits | Kernel::ContinuationLogits | Kernel::ContextCheck => {
            full.iter().copied().take_while(|&x| x != Kernel::CacheWrite).collect()
        }
        _ => full.iter().copied().take_while(|&x| x != k).collect(),
    };
    if matches!(k, Kernel::SyntheticLogits | Kernel::ContinuationLogits | Kernel::ContextCheck) {
        p.push(Kernel::CacheWrite);
    }
    p
}

/// Brings a random case to the state just before `k` runs, with extra variety for the
/// sampling kernels (tie-heavy logits, drafts that match the argmax).
pub fn state_before(k: Kernel, seed: u64, cap: Capacity) -> Result<(HostBuffers, Synthetic)> {
    let (mut b, oracle) = random_case_in(seed, cap)?;
    let mut rng = Rng::new(seed ^ 0x5e1f_7e57);
    for p in prefix(k, rng.pct(50)) {
        p.reference(&mut b, &oracle);
    }
    if k == Kernel::ArgmaxRows && rng.pct(40) {
        let hi = [1, 3, 1000][rng.below(3)];
        for x in &mut b.logits {
            *x = rng.below(hi) as f32 - 1.0;
        }
    }
    if k == Kernel::RejectionGreedy {
        for r in 0..b.counts[C_NUM_REQS] as usize {
            let nd = (b.num_sampled[r] - 1) as usize;
            let accept = rng.range(0, nd);
            let (base, d0) = (b.cu_sampled[r] as usize, b.query_start_loc[r + 1] as usize - nd);
            for j in 0..accept {
                b.input_ids[d0 + j] = b.argmax[base + j];
            }
        }
    }
    Ok((b, oracle))
}

/// One line of the result table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub kernel: String,
    pub cases: u64,
    pub mismatches: u64,
    /// The first mismatch: case seed and differing buffers.
    pub first: Option<String>,
}

/// The self-test's result.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.rows.iter().all(|r| r.mismatches == 0)
    }

    /// `kernel / cases / mismatches`, one line per kernel, then the first mismatch of each.
    pub fn table(&self) -> String {
        let mut s = format!("{:<22} {:>8} {:>10}\n", "kernel", "cases", "mismatches");
        for r in &self.rows {
            s += &format!("{:<22} {:>8} {:>10}\n", r.kernel, r.cases, r.mismatches);
        }
        for r in self.rows.iter().filter(|r| r.first.is_some()) {
            s += &format!("first mismatch in {}: {}\n", r.kernel, r.first.as_deref().unwrap_or(""));
        }
        s
    }

    /// The table as JSON (for the GPU check's results folder).
    pub fn json(&self) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| format!("{{\"kernel\":\"{}\",\"cases\":{},\"mismatches\":{}}}", r.kernel, r.cases, r.mismatches))
            .collect();
        format!("{{\"ok\":{},\"rows\":[{}]}}", self.ok(), rows.join(","))
    }
}

fn describe(seed: u64, d: &[(&'static str, usize)]) -> String {
    let fields: Vec<String> = d.iter().map(|(n, i)| format!("{n}[{i}]")).collect();
    format!("case seed {seed:#x}: {}", fields.join(", "))
}

/// Cases that share one capacity (and one set of device buffers) in [`run`].
pub const GROUP: u64 = 25;

/// Runs every kernel on `cases` random inputs (groups of [`GROUP`] share a random
/// capacity; every 20th group uses the real vocabulary) and the pipeline in graphs on
/// `cases` steps; `progress` is called after each kernel.
pub fn run(dev: &Device, cases: u64, seed: u64, progress: &mut dyn FnMut(&Row)) -> Result<Report> {
    run_with_random(dev, cases, 0, seed, progress)
}

/// [`run`], then `random_rows` random-mode rows (`crate::random_rows::self_test`: target
/// distributions and vLLM's random rejection rule, device against CPU twin) when non-zero.
pub fn run_with_random(
    dev: &Device,
    cases: u64,
    random_rows: u64,
    seed: u64,
    progress: &mut dyn FnMut(&Row),
) -> Result<Report> {
    let mut rep = run_kernels(dev, cases, seed, progress)?;
    if random_rows > 0 {
        let row = crate::random_rows::self_test(dev, random_rows, seed)?;
        progress(&row);
        rep.rows.push(row);
    }
    Ok(rep)
}

fn run_kernels(dev: &Device, cases: u64, seed: u64, progress: &mut dyn FnMut(&Row)) -> Result<Report> {
    let mut rep = Report::default();
    for k in Kernel::ALL {
        let mut row = Row { kernel: k.entry().to_string(), cases: 0, mismatches: 0, first: None };
        let mut bufs: Option<DeviceBuffers> = None;
        let mut cap = random_capacity(&mut Rng::new(seed), false);
        for i in 0..cases {
            if i % GROUP == 0 {
                let group = i / GROUP;
                cap = random_capacity(&mut Rng::new(splitmix(seed ^ ((k as u64) << 48) ^ group)), group % 20 == 19);
                bufs = None;
            }
            let case_seed = splitmix(seed ^ ((k as u64) << 40) ^ i);
            let (mut want, oracle) = state_before(k, case_seed, cap)?;
            let bufs = match bufs.as_mut() {
                Some(b) => {
                    b.write(&dev.stream, &want)?;
                    b
                }
                None => bufs.insert(DeviceBuffers::upload(&dev.stream, &want)?),
            };
            step::launch(dev, k, bufs, &oracle)?;
            let got = bufs.download(&dev.stream)?;
            k.reference(&mut want, &oracle);
            let d = want.differences(&got);
            row.cases += 1;
            if !d.is_empty() {
                row.mismatches += 1;
                row.first.get_or_insert_with(|| describe(case_seed, &d));
            }
        }
        progress(&row);
        rep.rows.push(row);
    }
    let row = graph_pipeline(dev, cases, seed)?;
    progress(&row);
    rep.rows.push(row);
    Ok(rep)
}

/// The whole step in the three modes on persistent buffers: groups of 10 steps share one
/// capacity, one set of buffers and three captured graphs (FULL; PIECEWISE's two halves);
/// each step stages new inputs over the previous step's outputs (stale state carries
/// over), runs in a random mode and is compared with the references.
pub fn graph_pipeline(dev: &Device, cases: u64, seed: u64) -> Result<Row> {
    let mut row = Row { kernel: "graph_pipeline".into(), cases: 0, mismatches: 0, first: None };
    let mut g = 0u64;
    while row.cases < cases {
        let gseed = splitmix(seed ^ 0x6a09_e667 ^ g);
        g += 1;
        let mut rng = Rng::new(gseed);
        let synthetic = rng.pct(50);
        let (mut host, oracle) = random_case(gseed, g % 10 == 9)?;
        let mut sg = StepGraphs::new(dev, &host, oracle)?;
        let full = graphs::full_plan(synthetic);
        let model = graphs::model_kernels(synthetic);
        let split = full.iter().position(|&k| k == model[0]).expect("model kernels are in the plan");
        let (head, tail) = (&full[..split], &full[split + model.len()..]);
        sg.capture(dev, "FULL", &full)?;
        sg.capture(dev, "PIECEWISE/head", head)?;
        sg.capture(dev, "PIECEWISE/tail", tail)?;
        for _ in 0..10 {
            if row.cases >= cases {
                break;
            }
            let step_seed = rng.next_u64();
            let mut srng = Rng::new(step_seed);
            // New tables and step over the stale outputs of the previous step.
            fill_i32(&mut srng, &mut host.token_table, 0, host.cap.vocab as i64);
            random_step(&mut srng, &mut host)?;
            sg.write(dev, &host)?;
            match srng.below(3) {
                0 => sg.replay("FULL")?,
                1 => {
                    sg.replay("PIECEWISE/head")?;
                    sg.eager(dev, &model)?;
                    sg.replay("PIECEWISE/tail")?;
                }
                _ => sg.eager(dev, &full)?,
            }
            let got = sg.read(dev)?;
            for &k in &full {
                k.reference(&mut host, &oracle);
            }
            let d = host.differences(&got);
            row.cases += 1;
            if !d.is_empty() {
                row.mismatches += 1;
                row.first.get_or_insert_with(|| describe(step_seed, &d));
                host = got; // continue from what the device holds
            }
        }
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_cases_are_valid_and_cover_the_edge_cases() {
        let (mut empty, mut padded_only, mut zero_draft, mut discard, mut wide, mut full) = (0, 0, 0, 0, 0, 0);
        for i in 0..2000u64 {
            let (b, o) = random_case(i, i % 50 == 49).unwrap();
            assert_eq!(o.vocab_size as usize, b.cap.vocab);
            let n = b.counts[C_NUM_REQS] as usize;
            empty += u32::from(n == 0);
            padded_only += u32::from(n == 0 && b.counts[C_META_REQS] > 0);
            zero_draft += u32::from((0..n).any(|r| b.num_sampled[r] == 1));
            discard += u32::from((0..n).any(|r| b.discard[r] == 1));
            wide += u32::from(b.cap.vocab == WIDE_VOCAB);
            full += u32::from(b.counts[C_META_REQS] as usize > n);
            // Every kernel's reference runs without panicking on it.
            for syn in [true, false] {
                let mut c = b.clone();
                for k in graphs::full_plan(syn) {
                    k.reference(&mut c, &o);
                }
            }
        }
        for (name, count) in [
            ("empty", empty),
            ("all-padding", padded_only),
            ("zero-draft", zero_draft),
            ("discard", discard),
            ("wide", wide),
            ("full", full),
        ] {
            assert!(count >= 20, "{name}: only {count} of 2000 cases");
        }
    }

    #[test]
    fn written_slots_are_distinct_so_cache_writes_never_race() {
        for i in 0..500u64 {
            let (mut b, o) = random_case(i, false).unwrap();
            for k in [Kernel::PrepareInputs, Kernel::PrepareRows, Kernel::BuildMetadata] {
                k.reference(&mut b, &o);
            }
            let n = b.counts[C_META_TOKENS] as usize;
            // Slots outside the cache (deliberately bad block ids) are counted, never written.
            let cache = b.cap.cache_slots() as i64;
            let mut slots: Vec<i64> =
                b.slot_mapping[..n].iter().copied().filter(|&s| (0..cache).contains(&s)).collect();
            slots.sort_unstable();
            let len = slots.len();
            slots.dedup();
            assert_eq!(slots.len(), len, "case {i}: duplicate slots");
        }
    }

    #[test]
    fn differences_catch_a_write_past_the_scheduled_tokens() {
        let (mut b, o) = random_case(7, false).unwrap();
        let before = b.clone();
        Kernel::PrepareInputs.reference(&mut b, &o);
        let total = b.query_start_loc[b.counts[C_NUM_REQS] as usize] as usize;
        if total < b.cap.max_tokens {
            let mut bad = b.clone();
            bad.input_ids[total] = before.input_ids[total] ^ 1;
            assert_eq!(b.differences(&bad), vec![("input_ids", total)]);
        }
    }

    #[test]
    fn report_table_and_json() {
        let rep = Report {
            rows: vec![
                Row { kernel: "argmax_rows".into(), cases: 10, mismatches: 0, first: None },
                Row {
                    kernel: "cache_write".into(),
                    cases: 10,
                    mismatches: 1,
                    first: Some("case seed 0x1: x[0]".into()),
                },
            ],
        };
        assert!(!rep.ok());
        let t = rep.table();
        assert!(t.contains("argmax_rows") && t.contains("first mismatch in cache_write: case seed 0x1"), "{t}");
        assert!(rep.json().starts_with("{\"ok\":false,"), "{}", rep.json());
    }
}
