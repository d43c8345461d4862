//! Re-running the model of a recorded generation trace (`gpu generate --trace`): the
//! trace's own scenario (config, requests, arrivals) driven through the one engine with the
//! same checkpoint, on the GPU ([`QwenDevice`]) or on its bitwise CPU twin
//! ([`QwenHostDevice`]), and the result compared with the recording by `diff::compare`,
//! which compares the per-step logits rows (digest, top-1, margin) when both traces carry
//! them. So a GPU-recorded run is reproduced bit for bit on the device (`gpu replay --model`)
//! and on any machine (`replay --model`), and a divergence is located and classified.

use specreplay_sim::config::Scenario;
use specreplay_sim::diff::{self, Report};
use specreplay_sim::{engine, Trace};

use crate::device::Device;
use crate::error::{ExecError, Result};
use crate::model::gpu::KernelPlan;
use crate::model::weights::HostWeights;
use crate::model::Checkpoint;
use crate::qwen_device::{GenerationDevice, QwenDevice, QwenHostDevice};

/// Where the model runs.
pub enum Backend<'d> {
    /// The CUDA forward pass (`QwenDevice`).
    Cuda(&'d Device),
    /// Its CPU twin (`QwenHostDevice`): the same bits, no GPU.
    CpuTwin,
}

/// The checkpoint `ck` is the one the trace was recorded with: when the trace names a
/// sha256, `ck`'s must equal it (one error line otherwise). Returns `ck`'s hash.
pub fn check_checkpoint(trace: &Trace, ck: &Checkpoint) -> Result<String> {
    let hash = ck.hash()?;
    if let Some(rec) = trace.checkpoint.0.as_ref().and_then(|c| c.sha256.as_deref()) {
        if rec != hash {
            return Err(ExecError::Checkpoint(format!(
                "{}: checkpoint sha256 {hash}, but the trace was recorded with {rec} ({})",
                ck.dir().display(),
                trace.checkpoint.0.as_ref().map_or("", |c| c.source.as_str())
            )));
        }
    }
    Ok(hash)
}

/// Runs the trace's scenario with `weights` on `backend`; returns the new generation trace.
pub fn rerun(trace: &Trace, weights: HostWeights, backend: Backend<'_>) -> Result<Trace> {
    if trace.backend.0.is_empty() {
        return Err(ExecError::Input(
            "not a generation trace (no backend in its header): replay it without --model".into(),
        ));
    }
    let sc = trace.scenario();
    // The recorded plan: it fixes the order of the sums, so the logits bits.
    let plan = KernelPlan::recorded(&trace.kernels)?;
    match backend {
        Backend::Cuda(dev) => {
            let mut d = QwenDevice::new(dev, &sc, &weights)?;
            d.set_kernels(plan)?;
            run(&sc, &mut d)
        }
        Backend::CpuTwin => {
            let mut d = QwenHostDevice::new(&sc, weights)?;
            d.set_kernels(plan)?;
            run(&sc, &mut d)
        }
    }
}

/// One generation run of `sc` through the engine on `d`, recording logits rows.
fn run(sc: &Scenario, d: &mut impl GenerationDevice) -> Result<Trace> {
    d.record_logits(true);
    let r = engine::run_on(sc, d).map_err(|e| ExecError::Input(format!("engine: {e}")))?;
    Ok(d.generation_trace(r.trace, sc))
}

/// [`rerun`] then the comparison with the recording (steps, outputs, logits rows).
pub fn replay(trace: &Trace, weights: HostWeights, backend: Backend<'_>) -> Result<(Trace, Report)> {
    let got = rerun(trace, weights, backend)?;
    let rep = diff::compare(trace, &got);
    Ok((got, rep))
}
