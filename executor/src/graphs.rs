//! CUDA graphs over a fixed launch list on persistent buffers, as vLLM captures its
//! model runner (`vllm/v1/worker/gpu_model_runner.py` `capture_model`,
//! `vllm/compilation/cuda_graph.py`): capture once per (size, mode), then replay with
//! whatever the step staged into the same buffers.
//!
//! Capture uses `CU_STREAM_CAPTURE_MODE_THREAD_LOCAL` on the device's non-default stream,
//! with event tracking off (set by [`crate::device::Device::open`]). A FULL graph contains
//! the metadata build and the context-reading kernels; a PIECEWISE plan leaves the
//! attention-like context reads out of the graph and launches them eagerly around it.
//! Invariant: the buffers a graph was captured on outlive it and are never reallocated;
//! [`StepGraphs`] owns both, and its graphs are dropped first.

use std::collections::BTreeMap;

use cudarc::driver::{sys, CudaGraph};
use specreplay_sim::oracle::Synthetic;

use crate::device::Device;
use crate::error::{ExecError, Result};
use crate::layout::{DeviceBuffers, HostBuffers};
use crate::step::{self, Kernel};

/// A fixed list of launches.
pub type Plan = Vec<Kernel>;

/// Runs `plan` eagerly.
pub fn run_eager(dev: &Device, plan: &[Kernel], b: &mut DeviceBuffers, oracle: &Synthetic) -> Result<()> {
    for &k in plan {
        step::launch(dev, k, b, oracle)?;
    }
    Ok(())
}

/// Captures `plan` into an instantiated graph (nothing runs during capture). The
/// kernels must have run once before (module loading is not capturable); capture
/// failures end the capture before returning the error.
pub fn capture(dev: &Device, plan: &[Kernel], b: &mut DeviceBuffers, oracle: &Synthetic) -> Result<CudaGraph> {
    dev.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
    let launched = run_eager(dev, plan, b, oracle);
    let ended = dev.stream.end_capture(sys::CUgraphInstantiate_flags(0));
    launched?;
    ended?.ok_or_else(|| ExecError::Capture("the capture recorded no graph".into()))
}

/// Persistent buffers plus the graphs captured on them, by key (e.g. `"FULL/8"`).
pub struct StepGraphs {
    // Declared first: dropped before the buffers they point into.
    graphs: BTreeMap<String, CudaGraph>,
    bufs: DeviceBuffers,
    oracle: Synthetic,
}

impl StepGraphs {
    /// Allocates the buffers from `init` (their initial contents are the first "stale"
    /// values), and warms every kernel up once eagerly so capture loads nothing.
    pub fn new(dev: &Device, init: &HostBuffers, oracle: Synthetic) -> Result<StepGraphs> {
        let mut bufs = DeviceBuffers::upload(&dev.stream, init)?;
        // Warm-up on a zero batch: every kernel returns at once (counts are 0), writing nothing.
        let mut zero = init.clone();
        zero.counts.fill(0);
        bufs.write(&dev.stream, &zero)?;
        run_eager(dev, &Kernel::ALL, &mut bufs, &oracle)?;
        bufs.write(&dev.stream, init)?;
        dev.stream.synchronize()?;
        Ok(StepGraphs { graphs: BTreeMap::new(), bufs, oracle })
    }

    /// Captures `plan` under `key` (replacing an earlier graph of that key).
    pub fn capture(&mut self, dev: &Device, key: &str, plan: &[Kernel]) -> Result<()> {
        let g = capture(dev, plan, &mut self.bufs, &self.oracle)?;
        g.upload()?;
        self.graphs.insert(key.to_string(), g);
        Ok(())
    }

    /// Replays the graph `key` on the current buffer contents (asynchronous).
    pub fn replay(&self, key: &str) -> Result<()> {
        let g = self.graphs.get(key).ok_or_else(|| ExecError::Capture(format!("no graph captured as {key:?}")))?;
        g.launch()?;
        Ok(())
    }

    /// Runs `plan` eagerly on the same buffers (PIECEWISE's outside-graph part, NONE).
    pub fn eager(&mut self, dev: &Device, plan: &[Kernel]) -> Result<()> {
        run_eager(dev, plan, &mut self.bufs, &self.oracle)
    }

    /// Overwrites every buffer in place (addresses unchanged).
    pub fn write(&mut self, dev: &Device, h: &HostBuffers) -> Result<()> {
        self.bufs.write(&dev.stream, h)
    }

    /// Reads every buffer back (synchronizes).
    pub fn read(&self, dev: &Device) -> Result<HostBuffers> {
        self.bufs.download(&dev.stream)
    }

    /// Whether a graph is captured under `key`.
    pub fn has(&self, key: &str) -> bool {
        self.graphs.contains_key(key)
    }

    /// The persistent buffers (for partial uploads and read-backs; never reallocate them).
    pub fn bufs(&self) -> &DeviceBuffers {
        &self.bufs
    }

    /// The persistent buffers, mutable (contents only: the graphs hold their addresses).
    pub fn bufs_mut(&mut self) -> &mut DeviceBuffers {
        &mut self.bufs
    }

    /// Keys of the captured graphs, sorted.
    pub fn keys(&self) -> Vec<&str> {
        self.graphs.keys().map(String::as_str).collect()
    }
}

/// The FULL plan: metadata build and context reads inside one graph.
pub fn full_plan(synthetic: bool) -> Plan {
    let mut p = vec![
        Kernel::PrepareInputs,
        Kernel::PrepareRows,
        Kernel::BuildMetadata,
        Kernel::CacheWrite,
        Kernel::ConsumeInputs,
    ];
    p.extend(model_kernels(synthetic));
    p.extend([Kernel::ArgmaxRows, Kernel::RejectionGreedy]);
    p
}

/// The toy model's context-reading kernels (the attention-like part PIECEWISE leaves
/// outside its graphs).
pub fn model_kernels(synthetic: bool) -> Vec<Kernel> {
    if synthetic {
        vec![Kernel::SyntheticLogits]
    } else {
        vec![Kernel::ContextCheck, Kernel::ContinuationLogits]
    }
}
