//! [`CudaDevice`]: the simulator's device boundary ([`specreplay_sim::device::Device`])
//! implemented on the GPU, for the vLLM v1 profile.
//!
//! Mirrors the device half of vLLM 0.12.0's `GPUModelRunner`
//! (`vllm/v1/worker/gpu_model_runner.py`): persistent buffers allocated once per run and
//! sized as vLLM sizes them (`max(max_num_batched_tokens, largest capture size)` tokens, a
//! `max_num_seqs x max_model_len` token table, a `max_num_seqs x cdiv(max_model_len,
//! block_size)` block table, a `num_gpu_blocks x block_size` paged cache); CUDA graphs
//! captured lazily once per (mode, capture size) and replayed on those buffers
//! (`capture_model`, `vllm/compilation/cuda_graph.py`).
//!
//! * `stage` uploads only host-side state: the scheduled slice of each row's token-table
//!   row, the rows' block-table rows (the CPU block table, `BlockTable.commit_block_table`),
//!   per-row counts, and the sizes of the plan's dispatch. `input_ids`, `positions`,
//!   `slot_mapping`, `cu_seqlens_q`, `seqused_k`, `logits_indices` and the FULL padding are
//!   computed by the kernels on the device; the plan's `attn` values are never copied into
//!   the metadata buffers.
//! * `forward_sample` runs the step: FULL replays one graph holding the bookkeeping, the
//!   paged toy model's context read and sampling, with padded metadata; PIECEWISE replays
//!   graphs around an eager context read with exact metadata; NONE (and sizes above the
//!   largest capture size, which the dispatch already maps to NONE) runs eagerly.
//! * `read_back` downloads `input_ids`/`positions` as the graph consumed them (copied
//!   inside the graph by `consume_inputs`) and the metadata the device held.
//!
//! Two hazard probes: [`Probe::Poison`] fills every slot of the input and metadata buffers
//! that no step has written yet with a poison value before each launch, and
//! [`Probe::ShadowEager`] runs each step a second time, eagerly at exact size on a second
//! buffer set, and compares the real rows.

use std::collections::BTreeMap;

use cudarc::driver::CudaSlice;
use specreplay_sim::config::{OracleKind, Profile, Scenario};
use specreplay_sim::cudagraph::GraphMode;
use specreplay_sim::device::{Device as SimDevice, DeviceView, StepPlan};
use specreplay_sim::oracle::Synthetic;
use specreplay_sim::trace::AttnMetadata;
use specreplay_sim::{engine, SimError};

use crate::device::Device;
use crate::error::{ExecError, Result};
use crate::graphs::{self, StepGraphs};
use crate::layout::*;
use crate::step::Kernel;

/// A hazard probe run alongside the step (`gpu replay --poison` / `--shadow-eager`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Probe {
    #[default]
    None,
    /// Never-written slots of the input and metadata buffers hold [`POISON_I32`] /
    /// [`POISON_I64`] before every launch.
    Poison,
    /// Every step also runs eagerly at exact size on a second buffer set; real rows must
    /// agree.
    ShadowEager,
}

/// Poison of the int32 buffers (a token id and index far outside every table).
pub const POISON_I32: i32 = 0x3A5A_5A5A;
/// Poison of the int64 buffers (positions, slot mapping).
pub const POISON_I64: i64 = 0x3A5A_5A5A_5A5A;

/// The buffer capacities vLLM allocates for `scenario` (`gpu_model_runner.py`
/// `__init__`, `block_table.py`), plus the toy model's logits rows: at most
/// `max_num_seqs x (k + 1)` sampled positions per step, each as wide as the vocabulary
/// (the synthetic oracle's, or one past the largest recorded token).
pub fn capacity(scenario: &Scenario) -> Capacity {
    let cfg = &scenario.config;
    let k = cfg.k() as usize;
    let vocab = match scenario.oracle.kind {
        OracleKind::Synthetic => scenario.oracle.vocab_size as usize,
        OracleKind::Continuation => {
            let recorded = scenario.oracle.tokens.values().flatten();
            let prompts = scenario.requests.iter().flat_map(|r| &r.prompt_token_ids);
            recorded.chain(prompts).copied().max().map_or(1, |t| t as usize + 1)
        }
    };
    Capacity {
        max_num_seqs: cfg.max_num_seqs as usize,
        max_model_len: cfg.max_model_len as usize,
        blocks_per_row: cfg.blocks_per_row(),
        block_size: cfg.block_size as usize,
        max_tokens: cfg.max_num_batched_tokens.max(cfg.max_capture_size()) as usize,
        num_blocks: cfg.num_gpu_blocks as usize,
        max_logits: cfg.max_num_seqs as usize * (k + 1),
        vocab: vocab.max(1),
        max_width: k + 1,
    }
}

/// What the kernels are told about a step: the per-row inputs and the sizes of the
/// dispatch (`exact`: the shadow run's NONE at exact size).
pub fn step_input(plan: &StepPlan, exact: bool) -> StepInput {
    let n = plan.rows.len();
    let total = plan.num_tokens();
    let full = !exact && plan.dispatch.mode == GraphMode::Full;
    StepInput {
        num_computed: plan.rows.iter().map(|r| r.num_computed as i32).collect(),
        query_start_loc: plan.cu_seqlens.iter().map(|&c| c as i32).collect(),
        num_sampled: plan.rows.iter().map(|r| r.num_sampled as i32).collect(),
        discard: plan.rows.iter().map(|r| r.discard).collect(),
        meta_reqs: if full { plan.dispatch.num_reqs_padded } else { n },
        meta_tokens: if full { plan.dispatch.num_tokens_padded } else { total },
        padded_tokens: if exact { total } else { plan.dispatch.num_tokens_padded },
        width: plan.width,
    }
}

/// The rows' block-table rows as the CPU block table holds them (`block_table.py`
/// `commit_block_table` copies these to the device), `blocks_per_row` each. The padded
/// metadata rows (-1) are built on the device, never taken from here.
pub fn block_rows(plan: &StepPlan, blocks_per_row: usize) -> Result<Vec<i32>> {
    let mut bt = Vec::with_capacity(plan.rows.len() * blocks_per_row);
    for row in 0..plan.rows.len() {
        let src = plan
            .attn
            .block_table
            .get(row)
            .ok_or_else(|| ExecError::InvalidInput(format!("step {}: no block-table row {row}", plan.step)))?;
        bt.extend((0..blocks_per_row).map(|c| src.get(c).map_or(-1, |&x| x as i32)));
    }
    Ok(bt)
}

/// Writes each row's scheduled slice of its token-table row (`token_ids_cpu`, the slots
/// `prepare_inputs` gathers from) into `table` (row stride `max_model_len`); returns the
/// end of the last row's slice.
pub fn write_scheduled(table: &mut [i32], max_model_len: usize, plan: &StepPlan, contexts: &[&[u32]]) -> usize {
    let mut end = 0;
    for (row, r) in plan.rows.iter().enumerate() {
        let base = row * max_model_len;
        let src = &contexts[row][r.num_computed..r.seq_len()];
        for (dst, &t) in table[base + r.num_computed..base + r.seq_len()].iter_mut().zip(src) {
            *dst = t as i32;
        }
        end = base + r.seq_len();
    }
    end
}

/// The `counts` buffer of a step (layout in `layout.rs`).
pub fn counts(s: &StepInput) -> Vec<i32> {
    let mut c = vec![0i32; NUM_COUNTS];
    c[C_NUM_REQS] = s.num_reqs() as i32;
    c[C_META_REQS] = s.meta_reqs as i32;
    c[C_META_TOKENS] = s.meta_tokens as i32;
    c[C_NUM_LOGITS] = s.num_logits() as i32;
    c[C_WIDTH] = s.width as i32;
    c[C_PADDED_TOKENS] = s.padded_tokens as i32;
    c
}

/// The [`DeviceView`] of what a device held, from its buffers' prefixes: consumed
/// `input_ids`/`positions` (`padded_tokens`), `cu_seqlens_q` (`meta_reqs + 1`),
/// `seqused_k` (`meta_reqs`), the metadata block table (`meta_reqs` rows), `slot_mapping`
/// (`meta_tokens`) and `logits_indices` (`num_logits`).
#[allow(clippy::too_many_arguments)]
pub fn assemble_view(
    consumed_ids: &[i32],
    consumed_pos: &[i64],
    cu_seqlens_q: &[i32],
    seqused_k: &[i32],
    meta_block_table: &[i32],
    slot_mapping: &[i64],
    logits_indices: &[i32],
    blocks_per_row: usize,
) -> DeviceView {
    let w = |v: &[i32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<i64>>();
    let cu = w(cu_seqlens_q);
    let seqused = w(seqused_k);
    let max_q = cu.windows(2).map(|p| p[1] - p[0]).max().unwrap_or(0);
    let max_k = seqused.iter().copied().max().unwrap_or(0);
    DeviceView {
        input_ids: w(consumed_ids),
        positions: consumed_pos.to_vec(),
        attn: AttnMetadata {
            cu_seqlens_q: cu,
            max_seqlen_q: max_q as u32,
            seqused_k: seqused,
            max_seqlen_k: max_k as u32,
            block_table: w(meta_block_table).chunks(blocks_per_row.max(1)).map(<[i64]>::to_vec).collect(),
            slot_mapping: slot_mapping.to_vec(),
        },
        logits_indices: w(logits_indices),
    }
}

/// The recorded rows of the continuation oracle: prompt + continuation per request
/// index (cut to the table stride), and each continuation's length.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub rows: Vec<Vec<i32>>,
    pub continuation_len: Vec<usize>,
}

impl Recorded {
    pub fn new(scenario: &Scenario, stride: usize) -> Recorded {
        let mut r = Recorded::default();
        // Indexed like `RowPlan::req`: by scheduler index (arrival order).
        for i in engine::arrival_order(&scenario.requests) {
            let req = &scenario.requests[i];
            let rec = scenario.oracle.tokens.get(&req.req_id).map(Vec::as_slice).unwrap_or(&[]);
            r.continuation_len.push(rec.len());
            r.rows.push(req.prompt_token_ids.iter().chain(rec).take(stride).map(|&t| t as i32).collect());
        }
        r
    }

    /// `OracleExhausted` when a sampled position the rows use lies past the recorded
    /// continuation (the CPU oracle fails at the same first position).
    pub fn check_exhausted(&self, plan: &StepPlan, rows: &[Vec<i64>]) -> std::result::Result<(), SimError> {
        for (r, row) in plan.rows.iter().zip(rows) {
            if r.discard {
                continue;
            }
            let used = row.iter().take_while(|&&t| t >= 0).count();
            let rec = &self.rows[r.req];
            for j in 0..used.min(r.num_sampled) {
                let context_len = r.seq_len() - r.num_sampled + j + 1;
                if context_len >= rec.len() {
                    return Err(SimError::OracleExhausted {
                        req_id: r.req_id.clone(),
                        position: context_len,
                        available: self.continuation_len[r.req],
                    });
                }
            }
        }
        Ok(())
    }
}

/// High-water marks of the slots the kernels have written so far, per poisonable buffer
/// (each kernel writes a prefix; see `executor/kernels/prepare.cu`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub input_ids: usize,
    pub positions: usize,
    pub slot_mapping: usize,
    pub cu_seqlens_q: usize,
    pub seqused_k: usize,
    pub meta_block_table: usize,
    pub logits_indices: usize,
    pub cu_sampled: usize,
}

impl Written {
    /// Adds the prefixes one step writes.
    pub fn add(&mut self, s: &StepInput, blocks_per_row: usize) {
        let (n, total) = (s.num_reqs(), s.num_tokens());
        let grow = |x: &mut usize, v: usize| *x = (*x).max(v);
        grow(&mut self.input_ids, total);
        grow(&mut self.positions, total);
        grow(&mut self.slot_mapping, total.max(s.meta_tokens));
        grow(&mut self.cu_seqlens_q, s.meta_reqs + 1);
        grow(&mut self.seqused_k, n.max(s.meta_reqs));
        grow(&mut self.meta_block_table, s.meta_reqs * blocks_per_row);
        grow(&mut self.logits_indices, s.num_logits());
        grow(&mut self.cu_sampled, if n > 0 { n + 1 } else { 0 });
    }
}

/// One set of persistent buffers with its graphs and host-side state.
struct Lane {
    graphs: StepGraphs,
    /// Host mirror of the token table (only scheduled slices are ever uploaded from it).
    token_table: Vec<i32>,
    /// The request whose recorded row sits in `expected[row]` (continuation oracle).
    expected_of: Vec<Option<usize>>,
    written: Written,
    /// Run every step eagerly with exact metadata (the shadow lane).
    exact: bool,
    /// Staged this step.
    input: StepInput,
}

fn drv(e: impl std::fmt::Display) -> SimError {
    SimError::Device(e.to_string())
}

fn upload<T: cudarc::driver::DeviceRepr>(
    dev: &Device,
    dst: &mut CudaSlice<T>,
    at: usize,
    src: &[T],
) -> std::result::Result<(), ExecError> {
    if src.is_empty() {
        return Ok(());
    }
    let mut view = dst.slice_mut(at..at + src.len());
    dev.stream.memcpy_htod(src, &mut view)?;
    Ok(())
}

fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
    dev: &Device,
    src: &CudaSlice<T>,
    len: usize,
) -> std::result::Result<Vec<T>, ExecError> {
    let mut out = vec![T::default(); len];
    if len > 0 {
        dev.stream.memcpy_dtoh(&src.slice(..len), &mut out)?;
        dev.stream.synchronize()?;
    }
    Ok(out)
}

/// Counters of what the device ran, for reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Graph replays per key (`FULL/8`, `PIECEWISE/16`).
    pub replays: BTreeMap<String, u64>,
    /// Eager steps (NONE).
    pub eager: u64,
    /// Graphs captured.
    pub captures: u64,
}

/// The CUDA device of one run.
pub struct CudaDevice<'d> {
    dev: &'d Device,
    main: Lane,
    shadow: Option<Lane>,
    probe: Probe,
    synthetic: bool,
    /// The synthetic oracle (random-mode rows); a placeholder for continuation oracles.
    oracle: Synthetic,
    /// Recorded rows (continuation oracle).
    recorded: Recorded,
    pub stats: RunStats,
}

impl<'d> CudaDevice<'d> {
    /// Allocates the persistent buffers for `scenario` (zero-filled, like the simulator's)
    /// and warms every kernel up. The nano-vllm profile is not supported yet.
    pub fn new(dev: &'d Device, scenario: &Scenario, probe: Probe) -> Result<CudaDevice<'d>> {
        if scenario.config.profile != Profile::VllmV1 {
            return Err(ExecError::Input(format!(
                "the CUDA device runs the vllm-v1 profile only (this scenario is {:?})",
                scenario.config.profile
            )));
        }
        let cap = capacity(scenario);
        let synthetic = scenario.oracle.kind == OracleKind::Synthetic;
        let recorded = Recorded::new(scenario, cap.expected_stride());
        let oracle = if synthetic {
            let o = &scenario.oracle;
            Synthetic { seed: o.seed, vocab_size: o.vocab_size, order: o.order }
        } else {
            Synthetic { seed: 0, vocab_size: cap.vocab as u32, order: 1 }
        };
        let poison = probe == Probe::Poison;
        let lane = |exact: bool| -> Result<Lane> {
            let init = HostBuffers::zeroed(cap)?;
            let mut graphs = StepGraphs::new(dev, &init, oracle)?;
            let fill = if poison && !exact { POISON_I32 } else { 0 };
            if fill != 0 {
                // The token and block tables are host state: their never-written slots
                // are poisoned once (every later upload writes only scheduled slices).
                let b = graphs.bufs_mut();
                let t = vec![fill; cap.max_num_seqs * cap.max_model_len];
                dev.stream.memcpy_htod(&t, &mut b.token_table)?;
                let t = vec![fill; cap.max_num_seqs * cap.blocks_per_row];
                dev.stream.memcpy_htod(&t, &mut b.block_table)?;
            }
            Ok(Lane {
                graphs,
                token_table: vec![fill; cap.max_num_seqs * cap.max_model_len],
                expected_of: vec![None; cap.max_num_seqs],
                written: Written::default(),
                exact,
                input: StepInput::default(),
            })
        };
        let main = lane(false)?;
        let shadow = if probe == Probe::ShadowEager { Some(lane(true)?) } else { None };
        Ok(CudaDevice { dev, main, shadow, probe, synthetic, oracle, recorded, stats: RunStats::default() })
    }

    fn stage_lane(&mut self, shadow: bool, plan: &StepPlan, contexts: &[&[u32]]) -> Result<()> {
        let dev = self.dev;
        let expected = &self.recorded.rows;
        let lane = if shadow { self.shadow.as_mut().expect("shadow lane") } else { &mut self.main };
        let cap = lane.graphs.bufs().cap;
        let input = step_input(plan, lane.exact);
        input.validate(&cap)?;
        let (mml, bpr) = (cap.max_model_len, cap.blocks_per_row);
        // Token table: the scheduled slice of each row (what `prepare_inputs` gathers).
        let end = write_scheduled(&mut lane.token_table, mml, plan, contexts);
        let b = lane.graphs.bufs_mut();
        upload(dev, &mut b.token_table, 0, &lane.token_table[..end])?;
        upload(dev, &mut b.block_table, 0, &block_rows(plan, bpr)?)?;
        upload(dev, &mut b.counts, 0, &counts(&input))?;
        upload(dev, &mut b.num_computed, 0, &input.num_computed)?;
        upload(dev, &mut b.query_start_loc, 0, &input.query_start_loc)?;
        upload(dev, &mut b.num_sampled, 0, &input.num_sampled)?;
        let discard: Vec<i32> = input.discard.iter().map(|&d| i32::from(d)).collect();
        upload(dev, &mut b.discard, 0, &discard)?;
        upload(dev, &mut b.counters, 0, &[0u32; NUM_COUNTERS])?;
        if !self.synthetic {
            let stride = cap.expected_stride();
            for (row, r) in plan.rows.iter().enumerate() {
                if lane.expected_of[row] != Some(r.req) {
                    let rec = &expected[r.req];
                    upload(dev, &mut b.expected, row * stride, rec)?;
                    upload(dev, &mut b.expected_len, row, &[rec.len() as i32])?;
                    lane.expected_of[row] = Some(r.req);
                }
            }
        }
        lane.input = input;
        Ok(())
    }

    /// Fills the never-written tails of the input and metadata buffers with poison.
    fn poison(&mut self) -> Result<()> {
        let dev = self.dev;
        let w = self.main.written;
        let b = self.main.graphs.bufs_mut();
        fn tail<T: cudarc::driver::DeviceRepr + Copy>(
            dev: &Device,
            buf: &mut CudaSlice<T>,
            from: usize,
            v: T,
        ) -> std::result::Result<(), ExecError> {
            let len = buf.len();
            if from < len {
                upload(dev, buf, from, &vec![v; len - from])?;
            }
            Ok(())
        }
        tail(dev, &mut b.input_ids, w.input_ids, POISON_I32)?;
        tail(dev, &mut b.positions, w.positions, POISON_I64)?;
        tail(dev, &mut b.slot_mapping, w.slot_mapping, POISON_I64)?;
        tail(dev, &mut b.cu_seqlens_q, w.cu_seqlens_q, POISON_I32)?;
        tail(dev, &mut b.seqused_k, w.seqused_k, POISON_I32)?;
        tail(dev, &mut b.meta_block_table, w.meta_block_table, POISON_I32)?;
        tail(dev, &mut b.logits_indices, w.logits_indices, POISON_I32)?;
        tail(dev, &mut b.cu_sampled, w.cu_sampled, POISON_I32)?;
        Ok(())
    }

    /// Launches the step on a lane (graph replay, split, or eager) and returns its rows.
    fn launch_lane(&mut self, shadow: bool, plan: &StepPlan) -> Result<Vec<Vec<i64>>> {
        let dev = self.dev;
        let synthetic = self.synthetic;
        let stats = &mut self.stats;
        let lane = if shadow { self.shadow.as_mut().expect("shadow lane") } else { &mut self.main };
        let full = graphs::full_plan(synthetic);
        let model = graphs::model_kernels(synthetic);
        let split = full.iter().position(|&k| k == model[0]).expect("model kernels are in the plan");
        let mode = if lane.exact { GraphMode::None } else { plan.dispatch.mode };
        let size = plan.dispatch.num_tokens_padded;
        let mut replay = |g: &mut StepGraphs, key: String, kernels: &[Kernel]| -> Result<()> {
            if !g.has(&key) {
                g.capture(dev, &key, kernels)?;
                stats.captures += 1;
                tracing::info!(key = key.as_str(), kernels = kernels.len(), "captured CUDA graph");
            }
            g.replay(&key)?;
            *stats.replays.entry(key).or_default() += 1;
            Ok(())
        };
        match mode {
            GraphMode::Full => replay(&mut lane.graphs, format!("FULL/{size}"), &full)?,
            GraphMode::Piecewise => {
                replay(&mut lane.graphs, format!("PIECEWISE/{size}/head"), &full[..split])?;
                lane.graphs.eager(dev, &model)?;
                replay(&mut lane.graphs, format!("PIECEWISE/{size}/tail"), &full[split + model.len()..])?;
            }
            GraphMode::None => {
                lane.graphs.eager(dev, &full)?;
                stats.eager += u64::from(!shadow);
            }
        }
        let cap = lane.graphs.bufs().cap;
        lane.written.add(&lane.input, cap.blocks_per_row);
        let b = lane.graphs.bufs();
        let width = plan.width;
        let sampled = download(dev, &b.sampled, plan.rows.len() * width)?;
        dev.stream.synchronize()?;
        Ok(sampled.chunks(width.max(1)).map(|c| c.iter().map(|&t| i64::from(t)).collect()).collect())
    }

    fn counters(&self, lane: &Lane) -> Result<Vec<u32>> {
        let c = download(self.dev, &lane.graphs.bufs().counters, NUM_COUNTERS)?;
        self.dev.stream.synchronize()?;
        Ok(c)
    }

    /// Real-row slices a lane held this step, by field name (for `--shadow-eager`).
    fn real_rows(&self, lane: &Lane, plan: &StepPlan) -> Result<Vec<(&'static str, Vec<i64>)>> {
        let (dev, b) = (self.dev, lane.graphs.bufs());
        let (n, total) = (plan.rows.len(), plan.num_tokens());
        let logits = lane.input.num_logits();
        let w = |v: Vec<i32>| v.into_iter().map(i64::from).collect::<Vec<i64>>();
        let out = vec![
            ("input_ids", w(download(dev, &b.input_ids, total)?)),
            ("positions", download(dev, &b.positions, total)?),
            ("slot_mapping", download(dev, &b.slot_mapping, total)?),
            ("cu_seqlens_q", w(download(dev, &b.cu_seqlens_q, n + 1)?)),
            ("seqused_k", w(download(dev, &b.seqused_k, n)?)),
            ("logits_indices", w(download(dev, &b.logits_indices, logits)?)),
            ("argmax", w(download(dev, &b.argmax, logits)?)),
            ("output_token_ids", w(download(dev, &b.sampled, n * plan.width)?)),
        ];
        dev.stream.synchronize()?;
        Ok(out)
    }

    /// The first real-row difference between the graph run and the shadow eager run.
    fn shadow_check(&self, plan: &StepPlan) -> Result<Option<String>> {
        let Some(shadow) = self.shadow.as_ref() else { return Ok(None) };
        let a = self.real_rows(&self.main, plan)?;
        let e = self.real_rows(shadow, plan)?;
        Ok(first_difference(&a, &e).map(|(field, i, g, x)| {
            format!(
                "step {}: --shadow-eager: the {} run and the eager exact-size run differ at {field}[{i}]: {g} vs {x}",
                plan.step,
                plan.dispatch.mode.as_str()
            )
        }))
    }
}

/// The first differing element over named vectors: `(field, index, a, b)`.
pub fn first_difference(
    a: &[(&'static str, Vec<i64>)],
    b: &[(&'static str, Vec<i64>)],
) -> Option<(&'static str, usize, i64, i64)> {
    for ((name, x), (_, y)) in a.iter().zip(b) {
        if let Some(i) = x.iter().zip(y).position(|(p, q)| p != q) {
            return Some((name, i, x[i], y[i]));
        }
        if x.len() != y.len() {
            let i = x.len().min(y.len());
            return Some((name, i, x.get(i).copied().unwrap_or(-1), y.get(i).copied().unwrap_or(-1)));
        }
    }
    None
}

impl SimDevice for CudaDevice<'_> {
    fn stage(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> std::result::Result<(), SimError> {
        self.stage_lane(false, plan, contexts).map_err(drv)?;
        if self.shadow.is_some() {
            self.stage_lane(true, plan, contexts).map_err(drv)?;
        }
        Ok(())
    }

    fn forward_sample(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> std::result::Result<Vec<Vec<i64>>, SimError> {
        if self.probe == Probe::Poison {
            self.poison().map_err(drv)?;
        }
        let mut rows = self.launch_lane(false, plan).map_err(drv)?;
        let ctr = self.counters(&self.main).map_err(drv)?;
        if ctr[CTR_MISMATCH] > 0 {
            return Err(SimError::Device(format!(
                "step {}: the paged context read through the block table disagrees with the recorded continuation at {} position(s)",
                plan.step, ctr[CTR_MISMATCH]
            )));
        }
        if ctr[CTR_OUT_OF_RANGE] > 0 {
            return Err(SimError::Device(format!(
                "step {}: {} paged-cache access(es) outside the cache or past seqused_k",
                plan.step, ctr[CTR_OUT_OF_RANGE]
            )));
        }
        if !self.synthetic {
            self.recorded.check_exhausted(plan, &rows)?;
        }
        // Random-mode rows (temperature > 0, synthetic oracle): the target distributions
        // and vLLM's random rejection rule on the device (`random_rows.cu`), replacing the
        // greedy rows the graph wrote for them. Context hashes come from the host's token
        // rows (the same tokens the graph read through the paged cache).
        let (dev, oracle) = (self.dev, self.oracle);
        crate::random_rows::replace_random_rows(plan, contexts, &oracle, &mut rows, |b| {
            crate::random_rows::device_rows(dev, &oracle, b, plan.width)
        })?;
        if self.shadow.is_some() {
            self.launch_lane(true, plan).map_err(drv)?;
            if let Some(msg) = self.shadow_check(plan).map_err(drv)? {
                return Err(SimError::Device(msg));
            }
        }
        Ok(rows)
    }

    fn read_back(&mut self, plan: &StepPlan) -> std::result::Result<DeviceView, SimError> {
        let read = || -> Result<DeviceView> {
            let (dev, b) = (self.dev, self.main.graphs.bufs());
            let s = &self.main.input;
            let view = assemble_view(
                &download(dev, &b.consumed_ids, s.padded_tokens)?,
                &download(dev, &b.consumed_pos, s.padded_tokens)?,
                &download(dev, &b.cu_seqlens_q, s.meta_reqs + 1)?,
                &download(dev, &b.seqused_k, s.meta_reqs)?,
                &download(dev, &b.meta_block_table, s.meta_reqs * b.cap.blocks_per_row)?,
                &download(dev, &b.slot_mapping, s.meta_tokens)?,
                &download(dev, &b.logits_indices, s.num_logits())?,
                b.cap.blocks_per_row,
            );
            dev.stream.synchronize()?;
            Ok(view)
        };
        let view = read().map_err(drv)?;
        debug_assert_eq!(view.input_ids.len(), plan.dispatch.num_tokens_padded);
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use specreplay_sim::cudagraph::Dispatch;
    use specreplay_sim::device::RowPlan;

    fn plan(mode: GraphMode, padded: usize, reqs_padded: usize) -> StepPlan {
        let rows = vec![
            RowPlan {
                req: 0,
                req_id: "a".into(),
                prompt_len: 3,
                num_computed: 5,
                num_scheduled: 3,
                num_draft: 2,
                num_sampled: 3,
                discard: false,
                sampling: Default::default(),
            },
            RowPlan {
                req: 1,
                req_id: "b".into(),
                prompt_len: 3,
                num_computed: 4,
                num_scheduled: 3,
                num_draft: 2,
                num_sampled: 3,
                discard: false,
                sampling: Default::default(),
            },
        ];
        StepPlan {
            step: 4,
            rows,
            cu_seqlens: vec![0, 3, 6],
            dispatch: Dispatch { mode, num_tokens_padded: padded, num_reqs_padded: reqs_padded },
            width: 3,
            block_size: 4,
            attn: AttnMetadata::default(),
            logits_indices: vec![0, 1, 2, 3, 4, 5],
        }
    }

    #[test]
    fn full_steps_pad_metadata_and_others_stay_exact() {
        let s = step_input(&plan(GraphMode::Full, 9, 3), false);
        assert_eq!((s.meta_reqs, s.meta_tokens, s.padded_tokens), (3, 9, 9));
        let s = step_input(&plan(GraphMode::Piecewise, 8, 2), false);
        assert_eq!((s.meta_reqs, s.meta_tokens, s.padded_tokens), (2, 6, 8));
        // The shadow run is exact whatever the dispatch said.
        let s = step_input(&plan(GraphMode::Full, 9, 3), true);
        assert_eq!((s.meta_reqs, s.meta_tokens, s.padded_tokens), (2, 6, 6));
        assert_eq!(s.query_start_loc, vec![0, 3, 6]);
        assert_eq!(s.num_computed, vec![5, 4]);
        assert_eq!(s.num_logits(), 6);
    }

    #[test]
    fn written_prefixes_grow_monotonically() {
        let mut w = Written::default();
        w.add(&step_input(&plan(GraphMode::Full, 9, 3), false), 4);
        assert_eq!(
            w,
            Written {
                input_ids: 6,
                positions: 6,
                slot_mapping: 9,
                cu_seqlens_q: 4,
                seqused_k: 3,
                meta_block_table: 12,
                logits_indices: 6,
                cu_sampled: 3
            }
        );
        let before = w;
        w.add(&step_input(&plan(GraphMode::Piecewise, 8, 2), false), 4);
        assert_eq!(w, before, "a smaller step lowers no mark");
    }

    #[test]
    fn first_difference_names_the_field_and_index() {
        let a = vec![("input_ids", vec![1, 2, 3]), ("positions", vec![0, 1])];
        let mut b = a.clone();
        assert_eq!(first_difference(&a, &b), None);
        b[1].1[1] = 7;
        assert_eq!(first_difference(&a, &b), Some(("positions", 1, 1, 7)));
        b[0].1.pop();
        assert_eq!(first_difference(&a, &b), Some(("input_ids", 2, 3, -1)));
    }

    #[test]
    fn capacity_follows_vllm_sizing_and_the_vocabulary() {
        let path = crate::repo_root().join("traces/vllm_ngram_13step.json");
        let sc = specreplay_sim::trace::read(&path).unwrap().scenario();
        let c = capacity(&sc);
        assert_eq!(c.max_tokens, 8192, "max(max_num_batched_tokens, largest capture size)");
        assert_eq!((c.max_num_seqs, c.max_model_len, c.block_size), (4, 32, 16));
        assert_eq!(c.blocks_per_row, 2);
        assert_eq!(c.num_blocks, 210);
        assert_eq!((c.max_width, c.max_logits), (3, 12));
        let top = sc.oracle.tokens.values().flatten().chain(sc.requests.iter().flat_map(|r| &r.prompt_token_ids));
        assert_eq!(c.vocab, *top.max().unwrap() as usize + 1);
    }
}
