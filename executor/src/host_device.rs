//! [`HostDevice`]: the [`CudaDevice`](crate::cuda_device::CudaDevice)'s exact staging and
//! read-back logic over the host mirror, with every kernel replaced by its CPU reference
//! ([`crate::reference`]). It needs no GPU, so CI runs whole traces through the same
//! step inputs, block-table rows, recorded rows and views the GPU gets, and checks them
//! against the simulator's own device: a staging or metadata mistake fails on CPU before
//! it reaches the GPU. (Graph modes change which launches sit in a graph, not what they
//! compute, so all modes run the reference pipeline in order.)

use specreplay_sim::config::{OracleKind, Profile, Scenario};
use specreplay_sim::device::{Device as SimDevice, DeviceView, StepPlan};
use specreplay_sim::oracle::Synthetic;
use specreplay_sim::SimError;

use crate::cuda_device::{
    assemble_view, block_rows, capacity, step_input, write_scheduled, Recorded, Written, POISON_I32, POISON_I64,
};
use crate::error::{ExecError, Result};
use crate::graphs;
use crate::kernels::Variant;
use crate::layout::*;
use crate::step::Kernel;

/// The reference device of one run.
pub struct HostDevice {
    b: HostBuffers,
    oracle: Synthetic,
    synthetic: bool,
    recorded: Recorded,
    expected_of: Vec<Option<usize>>,
    input: StepInput,
    variant: Variant,
    /// `--poison`: never-written slots hold poison before every step.
    poison: bool,
    written: Written,
}

fn err(e: impl std::fmt::Display) -> SimError {
    SimError::Device(e.to_string())
}

impl HostDevice {
    pub fn new(scenario: &Scenario) -> Result<HostDevice> {
        Self::with_variant(scenario, Variant::Correct)
    }

    /// The reference device with `--poison`'s tail filling (the same marks as the GPU's).
    pub fn poisoned(scenario: &Scenario) -> Result<HostDevice> {
        let mut d = Self::new(scenario)?;
        d.poison = true;
        d.b.token_table.fill(POISON_I32);
        d.b.block_table.fill(POISON_I32);
        Ok(d)
    }

    fn fill_tails(&mut self) {
        let (w, b) = (self.written, &mut self.b);
        b.input_ids[w.input_ids..].fill(POISON_I32);
        b.positions[w.positions..].fill(POISON_I64);
        b.slot_mapping[w.slot_mapping..].fill(POISON_I64);
        b.cu_seqlens_q[w.cu_seqlens_q..].fill(POISON_I32);
        b.seqused_k[w.seqused_k..].fill(POISON_I32);
        b.meta_block_table[w.meta_block_table..].fill(POISON_I32);
        b.logits_indices[w.logits_indices..].fill(POISON_I32);
        b.cu_sampled[w.cu_sampled..].fill(POISON_I32);
    }

    /// The reference device running the references of a kernel `variant` (the known-bad
    /// `padded-slot-writes` keeps FULL-padded tokens' stale slots, as its CUDA build does).
    pub fn with_variant(scenario: &Scenario, variant: Variant) -> Result<HostDevice> {
        if scenario.config.profile != Profile::VllmV1 {
            return Err(ExecError::Input("the reference device runs the vllm-v1 profile only".into()));
        }
        let cap = capacity(scenario);
        let synthetic = scenario.oracle.kind == OracleKind::Synthetic;
        let o = &scenario.oracle;
        let oracle = if synthetic {
            Synthetic { seed: o.seed, vocab_size: o.vocab_size, order: o.order }
        } else {
            Synthetic { seed: 0, vocab_size: cap.vocab as u32, order: 1 }
        };
        Ok(HostDevice {
            b: HostBuffers::zeroed(cap)?,
            oracle,
            synthetic,
            recorded: Recorded::new(scenario, cap.expected_stride()),
            expected_of: vec![None; cap.max_num_seqs],
            input: StepInput::default(),
            variant,
            poison: false,
            written: Written::default(),
        })
    }
}

impl SimDevice for HostDevice {
    fn stage(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> std::result::Result<(), SimError> {
        let cap = self.b.cap;
        let input = step_input(plan, false);
        input.stage(&mut self.b).map_err(err)?;
        write_scheduled(&mut self.b.token_table, cap.max_model_len, plan, contexts);
        let bt = block_rows(plan, cap.blocks_per_row).map_err(err)?;
        self.b.block_table[..bt.len()].copy_from_slice(&bt);
        self.b.counters.fill(0);
        if !self.synthetic {
            let stride = cap.expected_stride();
            for (row, r) in plan.rows.iter().enumerate() {
                if self.expected_of[row] != Some(r.req) {
                    let rec = &self.recorded.rows[r.req];
                    self.b.expected[row * stride..row * stride + rec.len()].copy_from_slice(rec);
                    self.b.expected_len[row] = rec.len() as i32;
                    self.expected_of[row] = Some(r.req);
                }
            }
        }
        self.input = input;
        Ok(())
    }

    fn forward_sample(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> std::result::Result<Vec<Vec<i64>>, SimError> {
        if self.poison {
            self.fill_tails();
        }
        let (total, meta_tokens) = (self.input.num_tokens(), self.input.meta_tokens);
        let stale: Vec<i64> = self.b.slot_mapping[total..meta_tokens].to_vec();
        for k in graphs::full_plan(self.synthetic) {
            k.reference(&mut self.b, &self.oracle);
            if k == Kernel::BuildMetadata && self.variant == Variant::PaddedSlotWrites {
                self.b.slot_mapping[total..meta_tokens].copy_from_slice(&stale);
            }
        }
        self.written.add(&self.input, self.b.cap.blocks_per_row);
        let c = &self.b.counters;
        if c[CTR_MISMATCH] > 0 || c[CTR_OUT_OF_RANGE] > 0 {
            return Err(SimError::Device(format!("step {}: device counters {c:?}", plan.step)));
        }
        let w = plan.width;
        let mut rows: Vec<Vec<i64>> = (0..plan.rows.len())
            .map(|r| self.b.sampled[r * w..(r + 1) * w].iter().map(|&t| i64::from(t)).collect())
            .collect();
        if !self.synthetic {
            self.recorded.check_exhausted(plan, &rows)?;
        }
        // Random-mode rows: the CPU twin of `random_rows.cu` (`random_rows::cpu_rows`).
        let oracle = self.oracle;
        crate::random_rows::replace_random_rows(plan, contexts, &oracle, &mut rows, |b| {
            Ok(crate::random_rows::cpu_rows(&oracle, b, plan.width))
        })?;
        Ok(rows)
    }

    fn read_back(&mut self, _plan: &StepPlan) -> std::result::Result<DeviceView, SimError> {
        let (b, s) = (&self.b, &self.input);
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

/// A committed scenario with FULL-padded decode steps (continuation oracle): the one the
/// known-bad-variant tests run (`executor/tests/gpu.rs`).
pub const VARIANT_SCENARIO: &str = "scenarios/cascade_ghost_entry.json";

#[cfg(test)]
mod tests {
    use super::*;
    use specreplay_sim::{diff, engine, trace, Trace};

    fn run(sc: &Scenario) -> std::result::Result<Trace, SimError> {
        run_variant(sc, Variant::Correct)
    }

    fn run_poisoned(sc: &Scenario) -> std::result::Result<Trace, SimError> {
        let mut dev = HostDevice::poisoned(sc).unwrap();
        Ok(engine::run_on(sc, &mut dev)?.trace)
    }

    /// `--poison`'s marks are right: poisoning every slot no step has written changes no
    /// real row on any committed trace (a kernel reading a never-written slot, or a mark
    /// claiming too little, would), while the stale tails do change where they were never
    /// written.
    #[test]
    fn poisoning_never_written_slots_changes_no_real_row() {
        use crate::replay::real_rows_only;
        let mut paths = vec![root().join("traces/vllm_ngram_13step.json")];
        let dir = root().join("traces/conformance/vllm-0.12.0");
        let mut conf: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        conf.sort();
        paths.extend(conf);
        let mut tails_changed = 0;
        for p in &paths {
            let rec = trace::read(p).unwrap();
            let got = run_poisoned(&rec.scenario()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let rep = diff::compare(&real_rows_only(&rec), &real_rows_only(&got));
            assert!(rep.identical(), "{}: {:?}", p.display(), rep.first);
            tails_changed += usize::from(!diff::compare(&rec, &got).identical());
        }
        assert!(tails_changed > 0, "poison never reached a recorded tail: the probe would test nothing");
    }

    fn run_variant(sc: &Scenario, v: Variant) -> std::result::Result<Trace, SimError> {
        let mut dev = HostDevice::with_variant(sc, v).unwrap();
        Ok(engine::run_on(sc, &mut dev)?.trace)
    }

    fn root() -> std::path::PathBuf {
        crate::repo_root()
    }

    /// The committed random-mode trace replays identical through the kernel references
    /// (random rows by the CPU twin of `random_rows.cu`), and a wrong seed is caught.
    #[test]
    fn the_random_trace_replays_identical_through_the_kernel_references() {
        let rec = trace::read(&root().join("traces/random_ngram_mixed.json")).unwrap();
        let got = run(&rec.scenario()).unwrap();
        let rep = diff::compare(&rec, &got);
        assert!(rep.identical(), "{:?}", rep.first);
        let mut sc = rec.scenario();
        sc.requests[1].sampling.seed = sc.requests[1].sampling.seed.map(|s| s ^ 1);
        assert!(!diff::compare(&rec, &run(&sc).unwrap()).identical());
    }

    /// The scenarios of `gpu fuzz --random --n 500 --seed 1` (random-mode rows verified by
    /// the CPU twin of the device kernels) give the CPU device's traces.
    #[test]
    fn random_fuzz_scenarios_match_the_cpu_device_through_the_kernel_references() {
        let mut random_rows = 0;
        for i in 0..500 {
            let sc = crate::replay::random_fuzz_scenario(1, i).unwrap();
            let cpu = engine::run(&sc).map(|r| r.trace);
            let host = run(&sc);
            match (cpu, host) {
                (Ok(c), Ok(h)) => {
                    random_rows += c.steps.iter().map(|s| s.random_draws.0.len()).sum::<usize>();
                    let rep = diff::compare(&c, &h);
                    assert!(rep.identical(), "random scenario {i}: {:?}", rep.first);
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "random scenario {i}"),
                (a, b) => panic!("random scenario {i}: CPU {:?} vs reference {:?}", a.err(), b.err()),
            }
        }
        assert!(random_rows > 1000, "{random_rows} random rows: the scenarios test little");
    }

    #[test]
    fn the_golden_trace_replays_identical_through_the_kernel_references() {
        let rec = trace::read(&root().join("traces/vllm_ngram_13step.json")).unwrap();
        let got = run(&rec.scenario()).unwrap();
        let rep = diff::compare(&rec, &got);
        assert!(rep.identical(), "{:?}", rep.first);
    }

    /// The scenario the GPU test of the known-bad variant uses has FULL steps with padded
    /// tokens, and the variant's reference is caught there: the first divergence is a
    /// padded token's slot (stale instead of -1).
    #[test]
    fn the_padded_slot_writes_variant_is_caught_by_replay() {
        let rec = trace::read(&root().join("traces/vllm_ngram_13step.json")).unwrap();
        let ok = run_variant(&rec.scenario(), Variant::PaddedSlotWrites).unwrap();
        assert!(diff::compare(&rec, &ok).identical(), "no padded FULL step in the golden trace: nothing to catch");
        let text = std::fs::read_to_string(root().join(VARIANT_SCENARIO)).unwrap();
        let sc = Scenario::from_json(&text).unwrap();
        let cpu = engine::run(&sc).unwrap().trace;
        let padded: Vec<u64> = cpu
            .steps
            .iter()
            .filter(|s| s.cudagraph_mode == "FULL" && s.num_padded_tokens > s.total_num_scheduled_tokens)
            .map(|s| s.step)
            .collect();
        assert!(!padded.is_empty(), "{VARIANT_SCENARIO} has no FULL step with padding");
        assert!(diff::compare(&cpu, &run(&sc).unwrap()).identical());
        let bad = run_variant(&sc, Variant::PaddedSlotWrites).unwrap();
        let d = diff::compare(&cpu, &bad).first.expect("the variant must diverge");
        assert!(d.field.starts_with("attn.slot_mapping["), "{d:?}");
        assert_eq!(d.step, Some(padded[0]), "{d:?}");
    }

    #[test]
    fn conformance_traces_replay_identical_through_the_kernel_references() {
        let dir = root().join("traces/conformance/vllm-0.12.0");
        let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        paths.sort();
        assert!(paths.len() > 100);
        for p in &paths {
            let rec = trace::read(p).unwrap();
            let got = run(&rec.scenario()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let rep = diff::compare(&rec, &got);
            assert!(rep.identical(), "{}: {:?}", p.display(), rep.first);
        }
    }

    const FUZZ_CASES: u64 = 1000;

    #[test]
    fn fuzz_scenarios_match_the_cpu_device_through_the_kernel_references() {
        // The scenarios of `gpu fuzz --n 1000 --seed 1`.
        for i in 0..FUZZ_CASES {
            let sc = crate::replay::fuzz_scenario(1, i).unwrap();
            let cpu = engine::run(&sc).map(|r| r.trace);
            let host = run(&sc);
            match (cpu, host) {
                (Ok(c), Ok(h)) => {
                    let rep = diff::compare(&c, &h);
                    assert!(rep.identical(), "scenario {i}: {:?}", rep.first);
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "scenario {i}"),
                (a, b) => panic!("scenario {i}: CPU {:?} vs reference {:?}", a.err(), b.err()),
            }
        }
    }
}
