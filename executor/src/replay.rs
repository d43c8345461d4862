//! Runs on the GPU and what `gpu sim` / `gpu replay` / `gpu fuzz` compare: a scenario
//! through the simulator's engine loop with a [`CudaDevice`], the trace header notes of a
//! GPU run, the real-rows view `--poison` compares, and the coverage counts of a fuzz run.

use specreplay_sim::engine;
use specreplay_sim::trace::{JsonOnly, Trace};
use specreplay_sim::{Scenario, SimError};

use crate::cuda_device::{CudaDevice, Probe, RunStats};
use crate::device::Device;
use crate::error::ExecError;
use crate::kernels::Variant;

/// `recorded_by` of a trace recorded on the GPU.
pub fn recorded_by() -> String {
    format!("specreplay-executor {} (cuda)", env!("CARGO_PKG_VERSION"))
}

/// Marks `trace` as recorded by the executor on the GPU: `recorded_by`, the header's
/// `backend` (`"cuda"`), `device` and `module_hashes` (each module's CUBIN sha256), and a
/// note naming the kernel variant when it is not the correct one.
pub fn mark_gpu(trace: &mut Trace, device_name: &str, modules: &[(String, String)], variant: Variant) {
    trace.recorded_by = recorded_by();
    trace.backend = JsonOnly("cuda".into());
    trace.device = JsonOnly(device_name.into());
    trace.module_hashes = JsonOnly(modules.iter().cloned().collect());
    if variant != Variant::Correct {
        trace.notes.push(format!("kernel variant: {}", variant.as_str()));
    }
}

/// Moves the header's model evidence (`backend`, `device`, `checkpoint`,
/// `module_hashes`, `kernels`), which only JSON traces hold, into notes (`backend: cuda`,
/// `device: NAME`, `checkpoint: SOURCE [sha256 H]`, `module NAME sha256 H`, `kernels: P`): how a
/// bincode (`.bin`) trace records where it ran. Per-step logits rows have no such
/// form: a trace with them can only be written as JSON.
pub fn evidence_to_notes(trace: &mut Trace) {
    let mut notes = Vec::new();
    if !trace.backend.is_empty() {
        notes.push(format!("backend: {}", trace.backend.0));
    }
    if !trace.device.is_empty() {
        notes.push(format!("device: {}", trace.device.0));
    }
    if let Some(c) = trace.checkpoint.0.take() {
        notes.push(match c.sha256 {
            Some(h) => format!("checkpoint: {} sha256 {h}", c.source),
            None => format!("checkpoint: {}", c.source),
        });
    }
    notes.extend(trace.module_hashes.iter().map(|(name, sha)| format!("module {name} sha256 {sha}")));
    if !trace.kernels.is_empty() {
        notes.push(format!("kernels: {}", trace.kernels.0));
    }
    trace.backend = JsonOnly::default();
    trace.kernels = JsonOnly::default();
    trace.device = JsonOnly::default();
    trace.module_hashes = JsonOnly::default();
    notes.append(&mut trace.notes);
    trace.notes = notes;
}

/// Why a GPU run did not produce a trace.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The executor could not set the device up (driver, NVRTC, allocation, profile).
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The engine stopped: the scenario's own error, or a device check that failed.
    #[error(transparent)]
    Sim(#[from] SimError),
}

impl RunError {
    /// Whether the GPU disagreed with what the engine expects (a divergence to report as
    /// FAIL), as opposed to a setup failure or an error the scenario itself raises.
    pub fn is_divergence(&self) -> bool {
        matches!(
            self,
            RunError::Sim(SimError::Device(_) | SimError::DeviceOutput { .. } | SimError::OracleExhausted { .. })
        )
    }
}

/// Runs `scenario` through the engine loop on the GPU and records its trace.
pub fn run_on_gpu(dev: &Device, scenario: &Scenario, probe: Probe) -> Result<(Trace, RunStats), RunError> {
    let mut cuda = CudaDevice::new(dev, scenario, probe)?;
    let mut trace = engine::run_on(scenario, &mut cuda)?.trace;
    mark_gpu(&mut trace, &dev.info.name, &dev.module_hashes(), dev.variant);
    Ok((trace, cuda.stats))
}

/// The trace restricted to what real rows produce: `input_ids`, `positions` and
/// `slot_mapping` cut to the step's scheduled tokens (their padded tails are stale or
/// poisoned slots, which `--poison` changes on purpose); everything else (scheduler
/// fields, sampler rows, drafts, token rows, padded metadata the kernels compute,
/// outputs) is kept and compared.
pub fn real_rows_only(t: &Trace) -> Trace {
    let mut t = t.clone();
    for s in &mut t.steps {
        let n = s.total_num_scheduled_tokens as usize;
        s.input_ids.truncate(n);
        s.positions.truncate(n);
        s.attn.slot_mapping.truncate(n);
    }
    t
}

/// The fuzz scenario `i` of `seed` (`gpu fuzz`): the engine fuzz generator
/// (`specreplay_sim::fuzzing::scenario_from_bytes`, synthetic oracle) over 512 pseudo-random bytes.
pub fn fuzz_scenario(seed: u64, i: u64) -> Option<Scenario> {
    let mut rng = crate::selftest::Rng::new(specreplay_sim::splitmix::splitmix(seed ^ i.wrapping_mul(0x9e37_79b9)));
    let bytes: Vec<u8> = (0..512).map(|_| rng.next_u64() as u8).collect();
    specreplay_sim::fuzzing::scenario_from_bytes(&bytes)
}

/// The random-mode fuzz scenario `i` of `seed` (`gpu fuzz --random`): [`fuzz_scenario`]
/// with seeded sampling parameters on about three requests in four (temperature 0.5, 1, 2
/// or another in [0.05, 3), top-k and top-p on or off, seeds given or derived); nano-vllm
/// scenarios stay greedy (that profile is modelled greedy-only).
pub fn random_fuzz_scenario(seed: u64, i: u64) -> Option<Scenario> {
    use specreplay_sim::config::Profile;
    use specreplay_sim::sampling::{derive_seed, SamplingParams};
    let mut sc = fuzz_scenario(seed, i)?;
    if sc.config.profile != Profile::VllmV1 {
        return Some(sc);
    }
    let mut rng = crate::selftest::Rng::new(specreplay_sim::splitmix::splitmix(!seed ^ i.wrapping_mul(0x15)));
    let vocab = u64::from(sc.oracle.vocab_size.max(1));
    let oracle_seed = sc.oracle.seed;
    for (k, r) in sc.requests.iter_mut().enumerate() {
        if rng.next_u64().is_multiple_of(4) {
            continue;
        }
        let temperature = match rng.next_u64() % 4 {
            0 => 0.5,
            1 => 1.0,
            2 => 2.0,
            _ => 0.05 + (rng.next_u64() % 295) as f32 / 100.0,
        };
        let top_k = if rng.next_u64().is_multiple_of(2) { 0 } else { 1 + (rng.next_u64() % vocab) as u32 };
        let top_p = if rng.next_u64().is_multiple_of(2) { 1.0 } else { 0.1 + (rng.next_u64() % 90) as f32 / 100.0 };
        let seed = if rng.next_u64().is_multiple_of(2) { rng.next_u64() } else { derive_seed(oracle_seed, k) };
        r.sampling = SamplingParams { temperature, top_k, top_p, seed: Some(seed) };
    }
    Some(sc)
}

/// What a set of scenarios exercised (from their CPU traces).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    pub full: u64,
    pub piecewise: u64,
    pub none: u64,
    pub preemption: u64,
    pub prefix_hits: u64,
}

impl Coverage {
    /// Adds one scenario's trace: counts it once per feature it exercises. A prefix-cache
    /// hit is a request whose first scheduled step starts with computed tokens.
    pub fn add(&mut self, t: &Trace) {
        let mode = |m: &str| t.steps.iter().any(|s| s.cudagraph_mode == m);
        self.full += u64::from(mode("FULL"));
        self.piecewise += u64::from(mode("PIECEWISE"));
        self.none += u64::from(mode("NONE"));
        self.preemption += u64::from(t.steps.iter().any(|s| !s.preempted_req_ids.is_empty()));
        let mut seen = std::collections::BTreeSet::new();
        let mut hit = false;
        for s in &t.steps {
            for r in s.num_scheduled_tokens.keys() {
                if seen.insert(r.clone()) && s.num_computed_tokens.get(r).copied().unwrap_or(0) > 0 {
                    hit = true;
                }
            }
        }
        self.prefix_hits += u64::from(hit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use specreplay_sim::diff;

    fn golden() -> Trace {
        specreplay_sim::trace::read(&crate::repo_root().join("traces/vllm_ngram_13step.json")).unwrap()
    }

    #[test]
    fn the_header_names_the_backend_device_and_modules_and_notes_the_variant() {
        let m = vec![("prepare".to_string(), "ab".repeat(32)), ("model".to_string(), "cd".repeat(32))];
        let mut t = golden();
        t.notes.clear(); // as a trace fresh from the engine
        mark_gpu(&mut t, "NVIDIA H200", &m, Variant::Correct);
        assert_eq!((t.backend.as_str(), t.device.as_str()), ("cuda", "NVIDIA H200"));
        assert_eq!(t.module_hashes.get("prepare"), Some(&"ab".repeat(32)));
        assert!(t.notes.is_empty(), "{:?}", t.notes);
        assert!(t.recorded_by.starts_with("specreplay-executor ") && t.recorded_by.ends_with(" (cuda)"));
        // The facts survive JSON, and bincode refuses them.
        let back = specreplay_sim::trace::from_json(&specreplay_sim::trace::to_json(&t)).unwrap();
        assert_eq!(back, t);
        let mut v = golden();
        v.notes.clear();
        mark_gpu(&mut v, "X", &m, Variant::PaddedSlotWrites);
        assert!(v.notes.contains(&"kernel variant: padded-slot-writes".to_string()), "{:?}", v.notes);
        // As notes for bincode: the same facts, modules in name order, the variant note kept.
        evidence_to_notes(&mut v);
        assert_eq!(
            v.notes,
            vec![
                "backend: cuda".to_string(),
                "device: X".into(),
                format!("module model sha256 {}", "cd".repeat(32)),
                format!("module prepare sha256 {}", "ab".repeat(32)),
                "kernel variant: padded-slot-writes".into(),
            ]
        );
        let bin = specreplay_sim::trace::to_bincode(&v);
        assert_eq!(specreplay_sim::trace::from_bincode(&bin).unwrap(), v);
    }

    #[test]
    fn poisoned_tails_are_ignored_but_real_slots_are_not() {
        let t = golden();
        let step = t.steps.iter().position(|s| s.input_ids.len() > s.total_num_scheduled_tokens as usize);
        let mut changed = t.clone();
        let (i, n) = match step {
            Some(i) => (i, t.steps[i].total_num_scheduled_tokens as usize),
            None => {
                // No padded step in the golden trace: pad one by hand.
                let i = t.steps.iter().position(|s| !s.idle).unwrap();
                let n = t.steps[i].total_num_scheduled_tokens as usize;
                changed.steps[i].input_ids.push(0);
                (i, n)
            }
        };
        // A poisoned tail: different in full, identical on real rows.
        let mut poisoned = changed.clone();
        *poisoned.steps[i].input_ids.last_mut().unwrap() = crate::cuda_device::POISON_I32 as i64;
        assert!(!diff::compare(&changed, &poisoned).identical());
        assert!(diff::compare(&real_rows_only(&changed), &real_rows_only(&poisoned)).identical());
        // A changed real slot is still reported.
        let mut bad = poisoned.clone();
        bad.steps[i].positions[n - 1] += 1;
        let rep = diff::compare(&real_rows_only(&changed), &real_rows_only(&bad));
        assert_eq!(rep.first.unwrap().field, format!("positions[{}]", n - 1));
        let mut bad = poisoned;
        bad.steps[i].output_token_ids[0][0] ^= 1;
        assert!(!diff::compare(&real_rows_only(&changed), &real_rows_only(&bad)).identical());
    }

    /// `gpu fuzz --n 1000 --seed 1` exercises every graph mode, preemption and prefix-cache
    /// hits (measured here on the CPU on its first 300 scenarios).
    #[test]
    fn the_fuzz_scenarios_cover_every_mode_preemption_and_prefix_hits() {
        let mut c = Coverage::default();
        for i in 0..300 {
            let sc = fuzz_scenario(1, i).expect("512 bytes are enough");
            if let Ok(r) = engine::run(&sc) {
                c.add(&r.trace);
            }
        }
        assert!(c.full >= 10 && c.piecewise >= 10 && c.none >= 10, "{c:?}");
        assert!(c.preemption >= 5 && c.prefix_hits >= 3, "{c:?}");
    }

    #[test]
    fn coverage_counts_modes_preemption_and_prefix_hits() {
        let t = golden();
        let mut c = Coverage::default();
        c.add(&t);
        let has = |m: &str| u64::from(t.steps.iter().any(|s| s.cudagraph_mode == m));
        assert_eq!((c.full, c.piecewise, c.none), (has("FULL"), has("PIECEWISE"), has("NONE")));
        assert!(c.full + c.piecewise + c.none >= 1);
        let mut t2 = t.clone();
        let s = t2.steps.iter_mut().find(|s| !s.idle).unwrap();
        s.preempted_req_ids.push("x".into());
        let r = s.num_scheduled_tokens.keys().next().unwrap().clone();
        s.num_computed_tokens.insert(r, 16);
        let mut c2 = Coverage::default();
        c2.add(&t2);
        assert_eq!((c2.preemption, c2.prefix_hits), (1, 1));
    }
}
