//! `specreplay gpu bench`: device time of one graph replay, measured with CUDA events.
//!
//! For a uniform decode batch of `batch` requests with `k` drafts each (FULL, exact
//! capture size), three graphs on the same persistent buffers: the bookkeeping kernels
//! alone (`prepare_inputs`, `prepare_rows`, `build_metadata`), the whole step (plus the
//! cache write, the consumed-input copy, the synthetic model over real-vocabulary rows,
//! argmax and greedy rejection), and a one-kernel graph that does nothing (the floor: the
//! cost of a graph launch itself). Each is replayed many times between two events; the
//! median per replay is reported.

use cudarc::driver::sys;
use specreplay_sim::oracle::Synthetic;

use crate::device::Device;
use crate::error::Result;
use crate::graphs::{self, StepGraphs};
use crate::layout::*;
use crate::selftest::{Rng, WIDE_VOCAB};
use crate::step::Kernel;

/// One measured configuration (microseconds per replay, medians).
#[derive(Debug, Clone, PartialEq)]
pub struct GraphTiming {
    pub batch: usize,
    pub k: usize,
    pub replays: usize,
    pub bookkeeping_us: f64,
    pub step_us: f64,
    pub floor_us: f64,
}

/// Median of `v` (mean of the middle two for even lengths); 0 for an empty slice.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Buffers staged with a uniform decode batch (`batch` rows, `1 + k` tokens each, 1000
/// tokens of context, distinct blocks), FULL metadata at exact size.
pub fn decode_batch(batch: usize, k: usize, vocab: usize) -> Result<HostBuffers> {
    let block_size = 16;
    let max_model_len = 2048;
    let q = 1 + k;
    let cap = Capacity {
        max_num_seqs: batch.max(1),
        max_model_len,
        blocks_per_row: max_model_len / block_size,
        block_size,
        max_tokens: batch.max(1) * q,
        num_blocks: batch.max(1) * (max_model_len / block_size),
        max_logits: batch.max(1) * q,
        vocab,
        max_width: q,
    };
    let mut b = HostBuffers::zeroed(cap)?;
    let mut rng = Rng::new(0xbe7c);
    for t in &mut b.token_table {
        *t = rng.below(vocab) as i32;
    }
    for (i, x) in b.block_table.iter_mut().enumerate() {
        *x = i as i32;
    }
    let computed = 1000;
    let s = StepInput {
        num_computed: vec![computed; batch],
        query_start_loc: (0..=batch).map(|r| (r * q) as i32).collect(),
        num_sampled: vec![q as i32; batch],
        discard: vec![false; batch],
        meta_reqs: batch,
        meta_tokens: batch * q,
        padded_tokens: batch * q,
        width: q,
    };
    s.stage(&mut b)?;
    Ok(b)
}

/// Median device time of `replays` replays of graph `key` (microseconds).
fn time_graph(dev: &Device, g: &StepGraphs, key: &str, replays: usize) -> Result<f64> {
    for _ in 0..20 {
        g.replay(key)?;
    }
    let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let mut events = Vec::with_capacity(replays);
    for _ in 0..replays {
        let start = dev.ctx.new_event(flags)?;
        let end = dev.ctx.new_event(flags)?;
        start.record(&dev.stream)?;
        g.replay(key)?;
        end.record(&dev.stream)?;
        events.push((start, end));
    }
    dev.stream.synchronize()?;
    let mut us = Vec::with_capacity(replays);
    for (s, e) in &events {
        us.push(f64::from(s.elapsed_ms(e)?) * 1000.0);
    }
    Ok(median(&mut us))
}

/// Measures the graphs at each batch size with `k` drafts per request.
pub fn graph_timings(dev: &Device, batches: &[usize], k: usize, replays: usize) -> Result<Vec<GraphTiming>> {
    // The floor: one kernel that returns at once (no rows), in its own graph.
    let floor_bufs = HostBuffers::zeroed(decode_batch(1, k, 16)?.cap)?;
    let oracle16 = Synthetic { seed: 1, vocab_size: 16, order: 4 };
    let mut floor = StepGraphs::new(dev, &floor_bufs, oracle16)?;
    floor.capture(dev, "floor", &[Kernel::PrepareRows])?;
    let mut out = Vec::new();
    for &batch in batches {
        let host = decode_batch(batch, k, WIDE_VOCAB)?;
        let oracle = Synthetic { seed: 7, vocab_size: WIDE_VOCAB as u32, order: 4 };
        let mut g = StepGraphs::new(dev, &host, oracle)?;
        g.capture(dev, "bookkeeping", &[Kernel::PrepareInputs, Kernel::PrepareRows, Kernel::BuildMetadata])?;
        g.capture(dev, "step", &graphs::full_plan(true))?;
        let bookkeeping_us = time_graph(dev, &g, "bookkeeping", replays)?;
        let step_us = time_graph(dev, &g, "step", replays)?;
        let floor_us = time_graph(dev, &floor, "floor", replays)?;
        tracing::info!(batch, k, bookkeeping_us, step_us, floor_us, "graph timings");
        out.push(GraphTiming { batch, k, replays, bookkeeping_us, step_us, floor_us });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn decode_batches_are_valid_full_uniform_steps() {
        for batch in [1, 32, 256] {
            let mut b = decode_batch(batch, 3, 64).unwrap();
            let o = Synthetic { seed: 7, vocab_size: 64, order: 4 };
            for k in graphs::full_plan(true) {
                k.reference(&mut b, &o);
            }
            assert_eq!(b.counts[C_NUM_REQS] as usize, batch);
            assert_eq!(b.counters, vec![0; NUM_COUNTERS], "no out-of-range access");
            assert_eq!(b.seqused_k[batch - 1], 1004);
            assert_eq!(b.logits_indices[batch * 4 - 1] as usize, batch * 4 - 1);
        }
    }
}
