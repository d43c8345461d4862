//! A real target model behind the simulator's device boundary
//! ([`specreplay_sim::device::Device`]): [`QwenDevice`] runs the Qwen3 forward pass on the
//! GPU ([`crate::model::gpu`]), [`QwenHostDevice`] runs its bitwise CPU twin
//! ([`crate::model::host`]). Both stage exactly as [`crate::cuda_device::CudaDevice`] does
//! (host state only: the scheduled token-table slices, block-table rows, per-row counts;
//! `prepare_inputs` / `prepare_rows` / `build_metadata` compute the rest), then run the
//! forward pass over the step's tokens, `argmax_rows` (lowest index on ties) and
//! vLLM's greedy rejection (`rejection_greedy`, `vllm/v1/sample/rejection_sampler.py`).
//!
//! Graph modes follow the engine's dispatch (vLLM's `CudagraphDispatcher`): FULL replays
//! one graph per capture size holding the bookkeeping, the whole forward pass with padded
//! metadata and the sampler; PIECEWISE replays per-size graphs between the attention
//! launches, which run eagerly (vLLM splits its piecewise graphs at the attention op,
//! `vllm/compilation/backends.py` `split_graph`); NONE runs everything eagerly. Padded
//! tokens write no KV (their slots are -1, or past `meta_tokens`).
//!
//! Batch invariance: every kernel computes a row from that row's own data in a fixed order
//! (`executor/kernels/qwen.cu`), so a verify row's logits equal a single-token decode's
//! and n-gram speculation cannot change greedy output.

use std::collections::BTreeMap;

use cudarc::driver::{sys, CudaGraph, CudaSlice};
use specreplay_sim::config::{Profile, RequestSpec, Scenario};
use specreplay_sim::cudagraph::GraphMode;
use specreplay_sim::device::{Device as SimDevice, DeviceView, StepPlan};
use specreplay_sim::oracle::Synthetic;
use specreplay_sim::trace::{Digest as TraceDigest, JsonOnly, LogitsRow, Trace, F32};
use specreplay_sim::{engine, SimError};

use crate::cuda_device::{assemble_view, block_rows, capacity, counts, step_input, write_scheduled, RunStats};
use crate::device::Device;
use crate::error::{ExecError, Result};
use crate::layout::*;
use crate::model::gpu::GpuModel;
use crate::model::host::{digest, margin, top1, HostModel, Op};
use crate::model::weights::HostWeights;
use crate::reference;
use crate::step::{self, Kernel};

/// The buffer capacities of a model run: the engine's sizing ([`capacity`]) with batch
/// rows bounded by the number of requests (no step holds more) and logits rows as wide
/// as the model's vocabulary.
pub fn qwen_capacity(scenario: &Scenario, vocab: usize) -> Result<Capacity> {
    if scenario.config.profile != Profile::VllmV1 {
        return Err(ExecError::Input("the model devices run the vllm-v1 profile only".into()));
    }
    let mut c = capacity(scenario);
    let k = scenario.config.k() as usize;
    c.max_num_seqs = c.max_num_seqs.min(scenario.requests.len().max(1));
    c.max_logits = c.max_num_seqs * (k + 1);
    c.vocab = vocab;
    if c.max_model_len > i32::MAX as usize {
        return Err(ExecError::Input("max_model_len too large".into()));
    }
    Ok(c)
}

/// What a run's logits looked like, per step: for each logits row (in `logits_indices`
/// order) a digest of the row, its argmax and top-1 logit, and the top-1 minus top-2
/// margin. Recorded in the trace as `Step::logits` ([`attach_logits`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepLogits {
    pub step: u64,
    /// Per logits row: (request index, context length the row follows).
    pub keys: Vec<(usize, usize)>,
    pub digests: Vec<u64>,
    pub margins: Vec<f32>,
    /// Argmax of each row (lowest index on ties).
    pub top1: Vec<u32>,
    /// The largest logit of each row.
    pub top1_logits: Vec<f32>,
}

impl StepLogits {
    /// The statistics of `rows` (each one logits row, bf16-exact f32) of `plan`.
    pub fn of_rows<'a>(plan: &StepPlan, rows: impl Iterator<Item = &'a [f32]>) -> StepLogits {
        let mut s = StepLogits { step: plan.step, keys: logit_keys(plan), ..Default::default() };
        for r in rows {
            let (t, v) = top1(r);
            s.digests.push(digest(r));
            s.margins.push(margin(r));
            s.top1.push(t);
            s.top1_logits.push(v);
        }
        s
    }

    /// The trace's form of these rows: request ids from `requests` (the scenario's list;
    /// a key's request index is the scheduler's, in arrival order: [`engine::arrival_order`]).
    pub fn rows(&self, requests: &[RequestSpec]) -> Vec<LogitsRow> {
        let order = engine::arrival_order(requests);
        (0..self.digests.len())
            .map(|i| {
                let (req, ctx) = self.keys.get(i).copied().unwrap_or((usize::MAX, 0));
                LogitsRow {
                    req_id: order
                        .get(req)
                        .and_then(|&i| requests.get(i))
                        .map_or_else(|| format!("#{req}"), |r| r.req_id.clone()),
                    position: u32::try_from(ctx).unwrap_or(u32::MAX),
                    digest: TraceDigest(self.digests[i]),
                    top1: self.top1.get(i).copied().unwrap_or(0),
                    top1_logit: F32(self.top1_logits.get(i).copied().unwrap_or(f32::NAN)),
                    margin: F32(self.margins[i]),
                }
            })
            .collect()
    }
}

/// The trace of a model run made a generation trace: its oracle the greedy tokens the run
/// sampled ([`with_recorded_oracle`], so the simulator replays it anywhere) and each step's
/// logits rows attached ([`attach_logits`]). The caller names the backend (header
/// `backend`, `device`, `checkpoint`, `module_hashes`).
pub fn generation_trace(mut trace: Trace, scenario: &Scenario, greedy: &Greedy, logits: &[StepLogits]) -> Trace {
    trace.oracle = with_recorded_oracle(scenario, greedy).oracle;
    attach_logits(&mut trace, logits);
    trace
}

/// Writes each step's logits rows into the trace's steps of the same number
/// (`Step::logits`; steps without a forward pass keep none).
pub fn attach_logits(trace: &mut Trace, logits: &[StepLogits]) {
    let by_step: BTreeMap<u64, &StepLogits> = logits.iter().map(|s| (s.step, s)).collect();
    for s in &mut trace.steps {
        if let Some(l) = by_step.get(&s.step) {
            s.logits = JsonOnly(l.rows(&trace.requests));
        }
    }
}

/// The greedy tokens a run sampled, by request index and context length (every valid
/// sampler output is the target's greedy token after a verified context): the
/// continuation oracle that replays the run on the CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Greedy(pub BTreeMap<usize, BTreeMap<usize, u32>>);

impl Greedy {
    fn observe(&mut self, plan: &StepPlan, rows: &[Vec<i64>]) {
        for (r, row) in plan.rows.iter().zip(rows) {
            let first = r.seq_len() - r.num_sampled + 1;
            for (j, &t) in row.iter().take_while(|&&t| t >= 0).enumerate() {
                self.0.entry(r.req).or_default().insert(first + j, t as u32);
            }
        }
    }

    /// The contiguous greedy continuation of request `req` after its prompt.
    pub fn continuation(&self, req: usize, prompt_len: usize) -> Vec<u32> {
        let Some(m) = self.0.get(&req) else { return Vec::new() };
        (prompt_len..).map_while(|c| m.get(&c).copied()).collect()
    }
}

/// Host-side staging shared by both devices.
struct Staging {
    cap: Capacity,
    token_table: Vec<i32>,
    input: StepInput,
}

impl Staging {
    fn new(cap: Capacity) -> Staging {
        Staging { cap, token_table: vec![0; cap.max_num_seqs * cap.max_model_len], input: StepInput::default() }
    }

    /// Validates the step and fills the host token table; returns the end of the written
    /// prefix and the block-table rows.
    fn stage(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> Result<(usize, Vec<i32>)> {
        let input = step_input(plan, false);
        input.validate(&self.cap)?;
        let end = write_scheduled(&mut self.token_table, self.cap.max_model_len, plan, contexts);
        let bt = block_rows(plan, self.cap.blocks_per_row)?;
        self.input = input;
        Ok((end, bt))
    }
}

fn upload<T: cudarc::driver::DeviceRepr>(dev: &Device, dst: &mut CudaSlice<T>, src: &[T]) -> Result<()> {
    if !src.is_empty() {
        let mut view = dst.slice_mut(0..src.len());
        dev.stream.memcpy_htod(src, &mut view)?;
    }
    Ok(())
}

fn drv(e: impl std::fmt::Display) -> SimError {
    SimError::Device(e.to_string())
}

fn check_counters(step: u64, c: &[u32]) -> std::result::Result<(), SimError> {
    if c[CTR_OUT_OF_RANGE] > 0 {
        return Err(SimError::Device(format!(
            "step {step}: {} out-of-range access(es) in the forward pass (token id, position, or KV slot)",
            c[CTR_OUT_OF_RANGE]
        )));
    }
    Ok(())
}

/// (request index, context length) of every logits row of `plan`, in row order.
pub fn logit_keys(plan: &StepPlan) -> Vec<(usize, usize)> {
    let mut keys = Vec::new();
    for r in &plan.rows {
        let first = r.seq_len() - r.num_sampled + 1;
        keys.extend((0..r.num_sampled).map(|j| (r.req, first + j)));
    }
    keys
}

fn rows_of(sampled: &[i32], n: usize, width: usize) -> Vec<Vec<i64>> {
    (0..n).map(|r| sampled[r * width..(r + 1) * width].iter().map(|&t| i64::from(t)).collect()).collect()
}

/// The Qwen3 forward pass on the CPU twins, as a device (CI runs the engine on it).
pub struct QwenHostDevice {
    b: HostBuffers,
    model: HostModel,
    staging: Staging,
    pub greedy: Greedy,
    /// Logits digests and margins of every step (when `record_logits`).
    pub logits: Vec<StepLogits>,
    pub record_logits: bool,
}

impl QwenHostDevice {
    /// Computes the products in `plan`'s order ([`crate::model::gpu::KernelPlan::gemm_order`]),
    /// the twin of [`QwenDevice::set_kernels`].
    pub fn set_kernels(&mut self, plan: crate::model::gpu::KernelPlan) -> Result<()> {
        plan.check(&self.model.w.cfg)?;
        self.model.order = plan.gemm_order();
        Ok(())
    }

    pub fn new(scenario: &Scenario, w: HostWeights) -> Result<QwenHostDevice> {
        let cap = qwen_capacity(scenario, w.cfg.vocab_size)?;
        Ok(QwenHostDevice {
            b: HostBuffers::zeroed(cap)?,
            model: HostModel::new(w, &cap),
            staging: Staging::new(cap),
            greedy: Greedy::default(),
            logits: Vec::new(),
            record_logits: true,
        })
    }
}

/// What a model device records for a generation trace: the greedy tokens it sampled and,
/// with [`GenerationDevice::record_logits`], every logits row's digest and margin. Both
/// [`QwenDevice`] and its CPU twin [`QwenHostDevice`] implement it, so code that runs a
/// generation (`model_replay::rerun`) is written once for both.
pub trait GenerationDevice: SimDevice {
    /// Turns per-step logits recording on or off.
    fn record_logits(&mut self, on: bool);
    /// `generation_trace` of the engine's `trace` with what this device recorded.
    fn generation_trace(&self, trace: Trace, scenario: &Scenario) -> Trace;
}

impl GenerationDevice for QwenHostDevice {
    fn record_logits(&mut self, on: bool) {
        self.record_logits = on;
    }
    fn generation_trace(&self, trace: Trace, scenario: &Scenario) -> Trace {
        generation_trace(trace, scenario, &self.greedy, &self.logits)
    }
}

impl GenerationDevice for QwenDevice<'_> {
    fn record_logits(&mut self, on: bool) {
        self.record_logits = on;
    }
    fn generation_trace(&self, trace: Trace, scenario: &Scenario) -> Trace {
        generation_trace(trace, scenario, &self.greedy, &self.logits)
    }
}

impl SimDevice for QwenHostDevice {
    fn stage(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> std::result::Result<(), SimError> {
        let (end, bt) = self.staging.stage(plan, contexts).map_err(drv)?;
        let b = &mut self.b;
        self.staging.input.stage(b).map_err(drv)?;
        b.token_table[..end].copy_from_slice(&self.staging.token_table[..end]);
        b.block_table[..bt.len()].copy_from_slice(&bt);
        b.counters.fill(0);
        Ok(())
    }

    fn forward_sample(&mut self, plan: &StepPlan, _: &[&[u32]]) -> std::result::Result<Vec<Vec<i64>>, SimError> {
        let b = &mut self.b;
        reference::prepare_inputs(b);
        reference::prepare_rows(b);
        reference::build_metadata(b);
        reference::consume_inputs(b);
        self.model.forward(b);
        reference::argmax_rows(b);
        reference::rejection_greedy(b);
        check_counters(plan.step, &b.counters)?;
        if self.record_logits {
            let n = self.staging.input.num_logits();
            let v = b.cap.vocab;
            let rows = (0..n).map(|j| &b.logits[j * v..(j + 1) * v]);
            self.logits.push(StepLogits::of_rows(plan, rows));
        }
        let rows = rows_of(&b.sampled, plan.rows.len(), plan.width);
        self.greedy.observe(plan, &rows);
        Ok(rows)
    }

    fn read_back(&mut self, _plan: &StepPlan) -> std::result::Result<DeviceView, SimError> {
        let (b, s) = (&self.b, &self.staging.input);
        let bpr = b.cap.blocks_per_row;
        Ok(assemble_view(
            &b.consumed_ids[..s.padded_tokens],
            &b.consumed_pos[..s.padded_tokens],
            &b.cu_seqlens_q[..=s.meta_reqs],
            &b.seqused_k[..s.meta_reqs],
            &b.meta_block_table[..s.meta_reqs * bpr],
            &b.slot_mapping[..s.meta_tokens],
            &b.logits_indices[..s.num_logits()],
            bpr,
        ))
    }
}

/// One launch of a step: a bookkeeping kernel on the step buffers or a model op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    Book(Kernel),
    Model(Op),
}

/// The whole step in launch order: bookkeeping, the forward pass, argmax and rejection.
pub fn step_launches(model_ops: &[Op]) -> Vec<Launch> {
    let mut v: Vec<Launch> = [Kernel::PrepareInputs, Kernel::PrepareRows, Kernel::BuildMetadata, Kernel::ConsumeInputs]
        .into_iter()
        .map(Launch::Book)
        .collect();
    v.extend(model_ops.iter().map(|&o| Launch::Model(o)));
    v.extend([Launch::Book(Kernel::ArgmaxRows), Launch::Book(Kernel::RejectionGreedy)]);
    v
}

/// PIECEWISE: the launches split at the attention ops — `(graph pieces, attention
/// between piece i and i + 1)`.
pub fn piecewise(launches: &[Launch]) -> (Vec<Vec<Launch>>, Vec<Launch>) {
    let mut pieces = vec![Vec::new()];
    let mut eager = Vec::new();
    for &l in launches {
        if let Launch::Model(Op::Attention(_)) = l {
            eager.push(l);
            pieces.push(Vec::new());
        } else {
            pieces.last_mut().expect("non-empty").push(l);
        }
    }
    (pieces, eager)
}

/// The Qwen3 forward pass on the GPU, as a device.
pub struct QwenDevice<'d> {
    // Declared first: dropped before the buffers they point into.
    graphs: BTreeMap<String, CudaGraph>,
    dev: &'d Device,
    bufs: DeviceBuffers,
    pub model: GpuModel,
    staging: Staging,
    oracle: Synthetic,
    launches: Vec<Launch>,
    pub stats: RunStats,
    pub greedy: Greedy,
    pub logits: Vec<StepLogits>,
    /// Download every logits row for digests and margins (costly at large vocabularies).
    pub record_logits: bool,
    /// Run every step eagerly whatever the dispatch (benchmarks of graph vs eager).
    pub force_eager: bool,
    /// The poison probe (`gpu generate --poison`): see [`QwenDevice::set_poison`].
    poison: bool,
}

/// bf16 NaN with every bit set (and f32 NaN as two of them): what `--poison` fills with.
pub const POISON_BF16: u16 = 0xffff;

impl<'d> QwenDevice<'d> {
    /// Uploads the weights, allocates every buffer for `scenario`, and runs every launch
    /// once on an empty batch (module loading is not capturable).
    pub fn new(dev: &'d Device, scenario: &Scenario, w: &HostWeights) -> Result<QwenDevice<'d>> {
        let cap = qwen_capacity(scenario, w.cfg.vocab_size)?;
        let host = HostBuffers::zeroed(cap)?;
        let bufs = DeviceBuffers::upload(&dev.stream, &host)?;
        drop(host);
        let model = GpuModel::new(dev, w, &cap)?;
        let launches = step_launches(&model.ops());
        let mut d = QwenDevice {
            graphs: BTreeMap::new(),
            dev,
            bufs,
            model,
            staging: Staging::new(cap),
            oracle: Synthetic { seed: 0, vocab_size: cap.vocab as u32, order: 1 },
            launches,
            stats: RunStats::default(),
            greedy: Greedy::default(),
            logits: Vec::new(),
            record_logits: false,
            force_eager: false,
            poison: false,
        };
        let all = d.launches.clone();
        d.enqueue(&all)?;
        dev.stream.synchronize()?;
        Ok(d)
    }

    /// The plan the forward pass launches.
    pub fn kernels(&self) -> crate::model::gpu::KernelPlan {
        self.model.kernels
    }

    /// Launches the forward pass with `plan`'s entry points from the next step on; graphs
    /// captured before are dropped (they hold the previous entries) and captured again.
    pub fn set_kernels(&mut self, plan: crate::model::gpu::KernelPlan) -> Result<()> {
        plan.check(&self.model.cfg)?;
        if self.model.kernels != plan {
            self.graphs.clear();
            self.model.kernels = plan;
        }
        Ok(())
    }

    /// The tensor plan's launch choices from the next step on (speed only: the same bits),
    /// graphs dropped as by [`QwenDevice::set_kernels`].
    pub fn set_launches(&mut self, l: crate::model::gpu::Launches) {
        if self.model.launches != l {
            self.graphs.clear();
            self.model.launches = l;
        }
    }

    /// The poison probe: now, every KV-cache slot (so a slot no step wrote is NaN), and
    /// before every step, the activation scratch and the logits rows, hold NaN. A correct
    /// forward pass reads only what the step's own kernels and the written KV slots hold,
    /// so a poisoned run samples and records exactly what a plain run does (a padded row,
    /// a stale scratch row or an unwritten slot leaking into a real row turns its logits
    /// NaN). Costs host-to-device copies every step: a probe, not a mode to time.
    pub fn set_poison(&mut self) -> Result<()> {
        self.poison = true;
        let dev = self.dev;
        for l in &mut self.model.layers {
            fill_u16(dev, &mut l.k_cache, POISON_BF16)?;
            fill_u16(dev, &mut l.v_cache, POISON_BF16)?;
        }
        dev.stream.synchronize()?;
        Ok(())
    }

    /// Before a poisoned step: scratch and logits to NaN.
    fn poison_step(&mut self) -> Result<()> {
        let (dev, s) = (self.dev, &mut self.model.s);
        for buf in [
            &mut s.residual,
            &mut s.x,
            &mut s.delta,
            &mut s.qkv,
            &mut s.q,
            &mut s.attn,
            &mut s.gate_up,
            &mut s.act,
            &mut s.final_x,
        ] {
            fill_u16(dev, buf, POISON_BF16)?;
        }
        let n = self.bufs.logits.len();
        dev.stream.memcpy_htod(&vec![f32::from_bits(u32::from(POISON_BF16) * 0x1_0001); n], &mut self.bufs.logits)?;
        Ok(())
    }

    fn enqueue(&mut self, launches: &[Launch]) -> Result<()> {
        for &l in launches {
            match l {
                Launch::Book(k) => step::launch(self.dev, k, &mut self.bufs, &self.oracle)?,
                Launch::Model(op) => self.model.launch(self.dev, op, &mut self.bufs)?,
            }
        }
        self.model.join_side(self.dev)
    }

    fn replay(&mut self, key: String, launches: &[Launch]) -> Result<()> {
        if !self.graphs.contains_key(&key) {
            let dev = self.dev;
            dev.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
            let launched = self.enqueue(launches);
            let ended = dev.stream.end_capture(sys::CUgraphInstantiate_flags(0));
            launched?;
            let g = ended?.ok_or_else(|| ExecError::Capture("the capture recorded no graph".into()))?;
            g.upload()?;
            tracing::info!(key = key.as_str(), launches = launches.len(), "captured CUDA graph");
            self.graphs.insert(key.clone(), g);
            self.stats.captures += 1;
        }
        self.graphs[&key].launch()?;
        *self.stats.replays.entry(key).or_default() += 1;
        Ok(())
    }

    fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        src: &CudaSlice<T>,
        len: usize,
    ) -> Result<Vec<T>> {
        let mut out = vec![T::default(); len];
        if len > 0 {
            self.dev.stream.memcpy_dtoh(&src.slice(..len), &mut out)?;
        }
        self.dev.stream.synchronize()?;
        Ok(out)
    }

    fn stage_inner(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> Result<()> {
        let (end, bt) = self.staging.stage(plan, contexts)?;
        let input = self.staging.input.clone();
        let discard: Vec<i32> = input.discard.iter().map(|&d| i32::from(d)).collect();
        let table = self.staging.token_table[..end].to_vec();
        let (dev, bufs) = (self.dev, &mut self.bufs);
        upload(dev, &mut bufs.counters, &[0u32; NUM_COUNTERS])?;
        upload(dev, &mut bufs.token_table, &table)?;
        upload(dev, &mut bufs.block_table, &bt)?;
        upload(dev, &mut bufs.counts, &counts(&input))?;
        upload(dev, &mut bufs.num_computed, &input.num_computed)?;
        upload(dev, &mut bufs.query_start_loc, &input.query_start_loc)?;
        upload(dev, &mut bufs.num_sampled, &input.num_sampled)?;
        upload(dev, &mut bufs.discard, &discard)?;
        Ok(())
    }

    fn forward_inner(&mut self, plan: &StepPlan) -> Result<Vec<Vec<i64>>> {
        if self.poison {
            self.poison_step()?;
        }
        let mode = if self.force_eager { GraphMode::None } else { plan.dispatch.mode };
        let size = plan.dispatch.num_tokens_padded;
        // Grids for this step's rows: a graph is captured at its size, an eager step runs
        // its padded tokens (see `GpuModel::grid_rows`).
        self.model.grid_rows = match mode {
            GraphMode::Full | GraphMode::Piecewise => size,
            GraphMode::None => self.staging.input.padded_tokens,
        };
        // A piecewise graph launches attention eagerly between its pieces: no megakernel.
        self.model.whole_step = mode != GraphMode::Piecewise;
        let launches = self.launches.clone();
        match mode {
            GraphMode::Full => self.replay(format!("FULL/{size}"), &launches)?,
            GraphMode::Piecewise => {
                let (pieces, eager) = piecewise(&launches);
                for (i, piece) in pieces.iter().enumerate() {
                    self.replay(format!("PIECEWISE/{size}/{i}"), piece)?;
                    if let Some(&a) = eager.get(i) {
                        self.enqueue(&[a])?;
                    }
                }
            }
            GraphMode::None => {
                self.enqueue(&launches)?;
                self.stats.eager += 1;
            }
        }
        let sampled = self.download(&self.bufs.sampled, plan.rows.len() * plan.width)?;
        Ok(rows_of(&sampled, plan.rows.len(), plan.width))
    }

    /// Replays the captured graph `key` `n` times back to back and returns the mean
    /// milliseconds per replay (wall clock around a synchronized batch of replays; the
    /// buffers keep the last step's inputs, so every replay recomputes that step).
    pub fn time_graph(&self, key: &str, n: usize) -> Result<f64> {
        let g = self.graphs.get(key).ok_or_else(|| ExecError::Capture(format!("no graph captured as {key:?}")))?;
        g.launch()?;
        self.dev.stream.synchronize()?;
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            g.launch()?;
        }
        self.dev.stream.synchronize()?;
        Ok(t0.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64)
    }

    /// Device time per model op, in the step's last state: for each op kind, one graph
    /// holding that kind's launches of every layer (distinct weights, so the weights come
    /// from HBM as in a step), `reps` times over, replayed 5 times. Returns (kind, launches
    /// per step, microseconds per launch), in forward order. Ops that update the residual
    /// in place leave garbage behind: profile only a device that is done.
    pub fn profile_ops(&mut self, reps: usize) -> Result<Vec<(&'static str, usize, f64)>> {
        // Each kind's own kernels (the megakernel, which runs them all at once, is timed by
        // the step's graph).
        let whole = std::mem::replace(&mut self.model.whole_step, false);
        let out = self.profile_kinds(reps);
        self.model.whole_step = whole;
        out
    }

    fn profile_kinds(&mut self, reps: usize) -> Result<Vec<(&'static str, usize, f64)>> {
        let ops = self.model.ops();
        let mut kinds: Vec<&'static str> = Vec::new();
        for op in &ops {
            if !kinds.contains(&op.kind()) {
                kinds.push(op.kind());
            }
        }
        let mut out = Vec::new();
        for kind in kinds {
            let of_kind: Vec<Launch> = ops.iter().filter(|o| o.kind() == kind).map(|&o| Launch::Model(o)).collect();
            let all: Vec<Launch> = (0..reps.max(1)).flat_map(|_| of_kind.iter().copied()).collect();
            let key = format!("profile/{kind}");
            self.replay(key.clone(), &all)?;
            self.dev.stream.synchronize()?;
            let ms = self.time_graph(&key, 5)?;
            self.graphs.remove(&key);
            out.push((kind, of_kind.len(), ms * 1e3 / all.len() as f64));
        }
        Ok(out)
    }

    /// Keys of the captured graphs, sorted.
    pub fn graph_keys(&self) -> Vec<String> {
        self.graphs.keys().cloned().collect()
    }

    /// The logits rows of the last step (`num_logits x vocab`, bf16-exact f32).
    pub fn last_logits(&self) -> Result<Vec<f32>> {
        self.download(&self.bufs.logits, self.staging.input.num_logits() * self.staging.cap.vocab)
    }
}

impl SimDevice for QwenDevice<'_> {
    fn stage(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> std::result::Result<(), SimError> {
        self.stage_inner(plan, contexts).map_err(drv)
    }

    fn forward_sample(&mut self, plan: &StepPlan, _: &[&[u32]]) -> std::result::Result<Vec<Vec<i64>>, SimError> {
        let rows = self.forward_inner(plan).map_err(drv)?;
        let ctr = self.download(&self.bufs.counters, NUM_COUNTERS).map_err(drv)?;
        check_counters(plan.step, &ctr)?;
        if self.record_logits {
            let v = self.staging.cap.vocab;
            let all = self.last_logits().map_err(drv)?;
            self.logits.push(StepLogits::of_rows(plan, all.chunks(v.max(1))));
        }
        self.greedy.observe(plan, &rows);
        Ok(rows)
    }

    fn read_back(&mut self, _plan: &StepPlan) -> std::result::Result<DeviceView, SimError> {
        let read = || -> Result<DeviceView> {
            let (b, s) = (&self.bufs, &self.staging.input);
            let bpr = b.cap.blocks_per_row;
            Ok(assemble_view(
                &self.download(&b.consumed_ids, s.padded_tokens)?,
                &self.download(&b.consumed_pos, s.padded_tokens)?,
                &self.download(&b.cu_seqlens_q, s.meta_reqs + 1)?,
                &self.download(&b.seqused_k, s.meta_reqs)?,
                &self.download(&b.meta_block_table, s.meta_reqs * bpr)?,
                &self.download(&b.slot_mapping, s.meta_tokens)?,
                &self.download(&b.logits_indices, s.num_logits())?,
                bpr,
            ))
        };
        read().map_err(drv)
    }
}

/// Fills `buf` with `v` (in pieces of at most 16 Mi elements).
fn fill_u16(dev: &Device, buf: &mut CudaSlice<u16>, v: u16) -> Result<()> {
    const PIECE: usize = 1 << 24;
    let n = buf.len();
    let host = vec![v; n.min(PIECE)];
    let mut at = 0;
    while at < n {
        let m = (n - at).min(PIECE);
        dev.stream.memcpy_htod(&host[..m], &mut buf.slice_mut(at..at + m))?;
        at += m;
    }
    dev.stream.synchronize()?;
    Ok(())
}

/// Every (request, context length) → logits digest of a run (for invariance checks).
pub fn digests_by_key(steps: &[StepLogits]) -> BTreeMap<(usize, usize), u64> {
    let mut m = BTreeMap::new();
    for s in steps {
        for (k, d) in s.keys.iter().zip(&s.digests) {
            m.insert(*k, *d);
        }
    }
    m
}

/// Keys two runs both computed whose digests differ (empty: invariant).
pub fn digest_mismatches(a: &[StepLogits], b: &[StepLogits]) -> (usize, Vec<(usize, usize)>) {
    let (da, db) = (digests_by_key(a), digests_by_key(b));
    let mut common = 0;
    let mut bad = Vec::new();
    for (k, d) in &da {
        if let Some(e) = db.get(k) {
            common += 1;
            if d != e {
                bad.push(*k);
            }
        }
    }
    (common, bad)
}

/// The scenario with a continuation oracle made of the greedy tokens a model run
/// sampled: the simulator replays the run's trace from it on any machine.
pub fn with_recorded_oracle(scenario: &Scenario, greedy: &Greedy) -> Scenario {
    let mut sc = scenario.clone();
    sc.oracle = specreplay_sim::config::OracleSpec {
        kind: specreplay_sim::config::OracleKind::Continuation,
        tokens: engine::arrival_order(&scenario.requests)
            .into_iter()
            .enumerate()
            .map(|(sched, i)| {
                let r = &scenario.requests[i];
                (r.req_id.clone(), greedy.continuation(sched, r.prompt_token_ids.len()))
            })
            .collect(),
        seed: 0,
        vocab_size: 0,
        order: 0,
    };
    sc
}

/// A scenario for the tiny test model: `prompts` (arrival steps), n-gram speculation with
/// `k` drafts (0: none), prompt lookup 1..=3, the given capture sizes.
pub fn test_scenario(prompts: &[(&[u32], u64)], max_tokens: u32, k: u32, capture: &[u32]) -> Scenario {
    let reqs: Vec<String> = prompts
        .iter()
        .enumerate()
        .map(|(i, (p, at))| {
            format!(
                r#"{{"req_id": "r{i}", "prompt_token_ids": {p:?}, "max_tokens": {max_tokens}, "arrival_step": {at}}}"#
            )
        })
        .collect();
    let spec = if k > 0 {
        format!(r#", "num_speculative_tokens": {k}, "prompt_lookup_min": 1, "prompt_lookup_max": 3"#)
    } else {
        String::new()
    };
    let json = format!(
        r#"{{"config": {{"max_model_len": 160, "max_num_batched_tokens": 256, "max_num_seqs": 8, "cudagraph_capture_sizes": {capture:?}{spec}}},
            "requests": [{}],
            "oracle": {{"kind": "synthetic", "seed": 1, "vocab_size": 512, "order": 1}}}}"#,
        reqs.join(", ")
    );
    Scenario::from_json(&json).expect("test scenario")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gpu::KernelPlan;
    use crate::model::weights::{random_weights, tiny_config};
    use specreplay_sim::diff;

    fn weights() -> HostWeights {
        let cfg = tiny_config();
        HostWeights::load(&cfg, &random_weights(&cfg, 7)).unwrap()
    }

    const P0: &[u32] = &[5, 9, 5, 9, 5, 9, 17, 3, 5, 9];
    const P1: &[u32] = &[100, 200, 300, 100, 200];
    const P2: &[u32] = &[7; 40];

    fn run(sc: &Scenario) -> (engine::RunResult, QwenHostDevice) {
        let mut d = QwenHostDevice::new(sc, weights()).unwrap();
        let r = engine::run_on(sc, &mut d).unwrap();
        (r, d)
    }

    /// Speculation changes nothing: n-gram outputs equal plain greedy outputs, drafts were
    /// accepted and rejected, and every logits row both runs computed (decode rows vs
    /// verify rows, different batch mates) has the same digest.
    #[test]
    fn ngram_speculation_is_bit_identical_to_plain_greedy_on_the_cpu_twin() {
        let prompts: &[(&[u32], u64)] = &[(P0, 1), (P1, 2), (P2, 4)];
        let (plain, dp) = run(&test_scenario(prompts, 40, 0, &[1, 2, 4, 8]));
        let (spec, ds) = run(&test_scenario(prompts, 40, 3, &[4, 8, 16]));
        assert_eq!(plain.trace.outputs, spec.trace.outputs);
        assert!(spec.stats.num_accepted_tokens > 0, "{:?}", spec.stats);
        assert!(spec.stats.num_accepted_tokens < spec.stats.num_draft_tokens, "{:?}", spec.stats);
        let (common, bad) = digest_mismatches(&dp.logits, &ds.logits);
        assert!(common >= 100, "{common} rows in common");
        assert_eq!(bad, vec![], "logits rows that differ between plain and speculative runs");
        // Alone vs with batch mates.
        let (alone, da) = run(&test_scenario(&[(P1, 1)], 40, 3, &[4, 8, 16]));
        assert_eq!(alone.trace.outputs["r0"], spec.trace.outputs["r1"]);
        let remap: Vec<StepLogits> = da
            .logits
            .iter()
            .map(|s| StepLogits { keys: s.keys.iter().map(|&(_, c)| (1, c)).collect(), ..s.clone() })
            .collect();
        let (common, bad) = digest_mismatches(&remap, &ds.logits);
        assert!(common >= 40 && bad.is_empty(), "{common} common, {bad:?}");
    }

    /// The tensor-core plan's twin (the Hopper block FMA model, another K order): n-gram
    /// verify rows still equal plain decode rows bit for bit, and its logits are not the
    /// CUDA-core plans' (a different order is a different function, so traces name it).
    #[test]
    fn the_tensor_core_twin_is_batch_invariant_and_differs_from_the_lane_order() {
        let prompts: &[(&[u32], u64)] = &[(P0, 1), (P1, 2)];
        let run_t = |sc: &Scenario| {
            let mut d = QwenHostDevice::new(sc, weights()).unwrap();
            d.set_kernels(KernelPlan::Tensor).unwrap();
            (engine::run_on(sc, &mut d).unwrap(), d)
        };
        let (plain, dp) = run_t(&test_scenario(prompts, 24, 0, &[1, 2, 4]));
        let (spec, ds) = run_t(&test_scenario(prompts, 24, 3, &[4, 8]));
        assert_eq!(plain.trace.outputs, spec.trace.outputs);
        assert!(spec.stats.num_accepted_tokens > 0, "{:?}", spec.stats);
        let (common, bad) = digest_mismatches(&dp.logits, &ds.logits);
        assert!(common >= 40 && bad.is_empty(), "{common} common, {bad:?}");
        let sc = test_scenario(prompts, 24, 0, &[1, 2, 4]);
        let mut dl = QwenHostDevice::new(&sc, weights()).unwrap();
        dl.set_kernels(KernelPlan::Fused).unwrap();
        engine::run_on(&sc, &mut dl).unwrap();
        let (common, bad) = digest_mismatches(&dp.logits, &dl.logits);
        // The default is the tensor plan (the model's K sizes allow it).
        assert_eq!(KernelPlan::for_model(&tiny_config()), KernelPlan::Tensor);
        // Both round every product to bf16, so on this tiny model most rows agree; some do not.
        assert!(common >= 40 && !bad.is_empty(), "{} of {common} rows differ between the orders", bad.len());
        // A K that is not a multiple of 32 is refused by the plan, not computed wrong.
        let mut cfg = tiny_config();
        cfg.intermediate_size = 120;
        let w = HostWeights::load(&cfg, &random_weights(&cfg, 7)).unwrap();
        let mut d = QwenHostDevice::new(&test_scenario(prompts, 4, 0, &[1]), w).unwrap();
        let e = d.set_kernels(KernelPlan::Tensor).unwrap_err().to_string();
        assert!(e.contains("multiples of 32"), "{e}");
    }

    /// The digests can tell rows apart: a different model (seed) changes them.
    #[test]
    fn digests_differ_for_a_different_model() {
        let sc = test_scenario(&[(P0, 1)], 8, 0, &[1, 2]);
        let (_, a) = run(&sc);
        let cfg = tiny_config();
        let mut b = QwenHostDevice::new(&sc, HostWeights::load(&cfg, &random_weights(&cfg, 8)).unwrap()).unwrap();
        engine::run_on(&sc, &mut b).unwrap();
        let (common, bad) = digest_mismatches(&a.logits, &b.logits);
        assert_eq!(bad.len(), common);
    }

    /// The trace of a model run replays on the simulator from the recorded greedy tokens.
    #[test]
    fn a_model_run_replays_on_the_simulator_with_its_recorded_oracle() {
        let prompts: &[(&[u32], u64)] = &[(P0, 1), (P1, 2), (P2, 3)];
        let sc = test_scenario(prompts, 30, 2, &[3, 6, 12]);
        let (r, d) = run(&sc);
        let replay_sc = with_recorded_oracle(&sc, &d.greedy);
        let cpu = engine::run(&replay_sc).unwrap();
        let mut recorded = r.trace.clone();
        recorded.oracle = cpu.trace.oracle.clone();
        let rep = diff::compare(&recorded, &cpu.trace);
        assert!(rep.identical(), "{:?}", rep.first);
        assert!(r.trace.steps.iter().any(|s| s.cudagraph_mode == "FULL"), "a FULL step");
        // A wrong recorded token is caught.
        let mut bad = replay_sc.clone();
        bad.oracle.tokens.get_mut("r0").unwrap()[3] ^= 1;
        let out = engine::run(&bad).map(|c| diff::compare(&recorded, &c.trace).identical());
        assert!(!matches!(out, Ok(true)));
    }
}
