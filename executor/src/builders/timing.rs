//! `specreplay gpu builders`, part 2: device time per CUDA-graph replay of each builder
//! kernel (CUDA events around every replay, median of `replays`), at the sizes the issue's
//! torch baselines use (`scripts/bench_builders_torch.py` runs the seeds' torch forms on
//! the same GPU), plus the one-kernel empty-replay floor.
//!
//! * NSA at bs 1 / 32 / 256, D 4, seq_lens 100-3099, topk 2048: the `seqlens_expanded` /
//!   `nsa_cache_seqlens` / `nsa_cu_seqlens_k` / `cache_seqlens` / `cu_seqlens_k` fields
//!   (what seed 001's quick win computes), and once more with the page-table copy.
//!   draft_extend uses `accept_length` 1-4 (ragged).
//! * Draft selection at bs 1 / 32 / 256, 128 candidates, counts `[1, 1, 1, 64]` repeated
//!   (seed 000's high-variance example; bs 1 gets `[64]`).
//! * Sparse at (b 1, h 32, sk 8192) and (b 4, h 32, sk 32768): sink 128, window 512,
//!   heavy 2048, init_offset 128.

use cudarc::driver::{sys, CudaGraph, PushKernelArg};
use specreplay_sim::builders::bench::high_variance_counts;
use specreplay_sim::builders::cases::{DraftCase, NsaCase, POOL_SIZE};
use specreplay_sim::builders::nsa::{NsaBatch, NsaMode, NsaParams, NsaVariant};
use specreplay_sim::builders::sparse::{SparseInput, SparseVariant};
use specreplay_sim::splitmix::Rng;

use super::{draft, nsa, sparse, DevBuf};
use crate::bench::median;
use crate::builders::GraphedBuilder;
use crate::device::Device;
use crate::error::{ExecError, Result};

/// One measured graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// What the graph builds (`nsa-target-verify seqlens`, `draft-select`, `floor`, ...).
    pub what: String,
    pub variant: String,
    /// The size (`bs 32`, `b 4 h 32 sk 32768`).
    pub size: String,
    pub replays: usize,
    pub median_us: f64,
}

/// Replays queued behind one [`spin`] (host enqueue of a replay and its two events is far
/// below the spin's 5 ms).
const QUEUED: usize = 100;

/// Holds the stream for about 5 ms (10^7 SM cycles) so that the host queues what follows.
fn spin(dev: &Device) -> Result<()> {
    let f = dev.function("builders_spin")?;
    let cfg = cudarc::driver::LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
    let cycles: i64 = 10_000_000;
    let mut l = dev.stream.launch_builder(f);
    l.arg(&cycles);
    // SAFETY: builders_spin(long long) takes one scalar.
    unsafe { l.launch(cfg) }?;
    Ok(())
}

/// Median device time of `replays` launches of `launch` (20 warm-up launches first): CUDA
/// events around every launch, the launches queued in batches of [`QUEUED`] behind a
/// [`spin`] kernel, so each interval is the GPU's time for that launch (graph launch
/// included) and never the host's launch latency. `scripts/bench_builders_torch.py`
/// measures its graphs the same way (`torch.cuda._sleep`).
fn time(dev: &Device, replays: usize, launch: &dyn Fn() -> Result<()>) -> Result<f64> {
    for _ in 0..20 {
        launch()?;
    }
    let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let mut us = Vec::with_capacity(replays);
    let mut left = replays;
    while left > 0 {
        let n = left.min(QUEUED);
        left -= n;
        dev.stream.synchronize()?;
        spin(dev)?;
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            let (a, b) = (dev.ctx.new_event(flags)?, dev.ctx.new_event(flags)?);
            a.record(&dev.stream)?;
            launch()?;
            b.record(&dev.stream)?;
            events.push((a, b));
        }
        dev.stream.synchronize()?;
        for (a, b) in &events {
            us.push(f64::from(a.elapsed_ms(b)?) * 1000.0);
        }
    }
    Ok(median(&mut us))
}

/// The floor: a graph of one kernel that reads one word and returns.
fn floor(dev: &Device, replays: usize) -> Result<f64> {
    let meta: DevBuf<i32> = DevBuf::new(dev, "meta", 4)?;
    let f = dev.function("builders_empty")?;
    let cfg = cudarc::driver::LaunchConfig { grid_dim: (1, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 };
    let go = || -> Result<()> {
        let mut l = dev.stream.launch_builder(f);
        l.arg(&meta.d);
        // SAFETY: builders_empty(const int*) with a 4-element buffer.
        unsafe { l.launch(cfg) }?;
        Ok(())
    };
    go()?;
    dev.stream.synchronize()?;
    let g: CudaGraph = super::capture(dev, go)?;
    time(dev, replays, &|| g.launch().map_err(ExecError::from))
}

/// The NSA case of a timing row: live bs = captured bs, D 4.
pub fn nsa_bench_case(mode: NsaMode, bs: usize) -> NsaCase {
    let mut rng = Rng::new(0x5eed_0001 ^ bs as u64);
    let batch = NsaBatch {
        seq_lens: (0..bs).map(|_| 100 + rng.range(0, 2999) as i32).collect(),
        accept_length: (0..bs).map(|_| rng.range(1, 4) as i32).collect(),
        req_pool_indices: (0..bs).map(|i| 1 + i % (POOL_SIZE - 1)).collect(),
    };
    NsaCase {
        mode,
        params: NsaParams { num_draft_tokens: 4, nsa_index_topk: 2048, max_context_len: nsa::R2T_STRIDE },
        batch,
        captured_bs: bs,
    }
}

/// The draft-selection case of a timing row.
pub fn draft_bench_case(bs: usize) -> DraftCase {
    let mut rng = Rng::new(0x5eed_0002 ^ bs as u64);
    let scores = (0..bs).map(|_| (0..128).map(|_| rng.range(0, 999) as f32 / 1000.0).collect()).collect();
    DraftCase { scores, counts: high_variance_counts(bs) }
}

/// The sparse case of a timing row.
pub fn sparse_bench_case(b: usize, h: usize, sk: usize) -> SparseInput {
    let mut rng = Rng::new(0x5eed_0003 ^ sk as u64);
    let (sink, window, heavy_size, init_offset) = (128, 512, 2048, 128);
    let heavy = (0..b)
        .map(|_| {
            (0..h)
                .map(|_| (0..heavy_size).map(|_| rng.range(0, (sk - init_offset - 1) as u64) as i64).collect())
                .collect()
        })
        .collect();
    SparseInput { b, h, sk, sink, window, heavy_size, init_offset, heavy }
}

/// Every timing row (see the module docs).
pub fn run(dev: &Device, replays: usize) -> Result<Vec<Timing>> {
    let mut out = Vec::new();
    let fl = floor(dev, replays)?;
    out.push(Timing {
        what: "floor (one empty kernel)".into(),
        variant: "-".into(),
        size: "-".into(),
        replays,
        median_us: fl,
    });
    for (mode, variants) in [
        (NsaMode::TargetVerify, [NsaVariant::General, NsaVariant::UniformQo]),
        (NsaMode::DraftExtend, [NsaVariant::General, NsaVariant::UniformQo]),
    ] {
        for page in [false, true] {
            for bs in [1usize, 32, 256] {
                let c = nsa_bench_case(mode, bs);
                let mut p = nsa::Packed::default();
                p.push(&c, page).map_err(ExecError::InvalidInput)?;
                let mut nd = nsa::NsaDevice::new(dev, nsa::Capacity::of(&p))?;
                // The page-table copy (bs*D rows of up to 3100 slots): rows spread over two
                // blocks per SM.
                nd.page_split = if page { (2 * dev.info.sm_count.max(1)) as u32 } else { 1 };
                // Each variant twice: the batched entry (header read from `hdr`), then the
                // graph-baked one (header as kernel parameters, block sized to the bs).
                for (v, baked) in variants.iter().flat_map(|&v| [(v, false), (v, true)]) {
                    nd.bake(baked.then_some(&p))?;
                    nd.stage(dev, &p)?;
                    let g = nd.graph(dev, nsa::entry(v), 1)?;
                    nd.stage(dev, &p)?;
                    let us = time(dev, replays, &|| nd.replay(g))?;
                    let what = format!("{} {}", mode.builder_name(), if page { "+page_table" } else { "seqlens" });
                    out.push(Timing {
                        what,
                        variant: if baked { format!("{} baked", v.name()) } else { v.name().into() },
                        size: format!("bs {bs}"),
                        replays,
                        median_us: us,
                    });
                }
                nd.bake(None)?;
            }
        }
    }
    for bs in [1usize, 32, 256] {
        let c = draft_bench_case(bs);
        let mut p = draft::Packed::default();
        p.push(&c).map_err(ExecError::InvalidInput)?;
        let mut dd = draft::DraftDevice::new(dev, draft::Capacity::of(&p))?;
        let variants = [("segmented-topk", "draft_select_topk"), ("vectorized-sorted", "draft_select_sorted")];
        for ((name, entry), baked) in variants.iter().flat_map(|&v| [(v, false), (v, true)]) {
            dd.bake(baked.then_some(&p))?;
            dd.stage(dev, &p)?;
            let g = dd.graph(dev, entry, bs as u32)?;
            dd.stage(dev, &p)?;
            let us = time(dev, replays, &|| dd.replay(g))?;
            out.push(Timing {
                what: "draft-select counts [1,1,1,64]*, n_cand 128".into(),
                variant: if baked { format!("{name} baked") } else { name.into() },
                size: format!("bs {bs}"),
                replays,
                median_us: us,
            });
        }
    }
    for (b, h, sk) in [(1usize, 32usize, 8192usize), (4, 32, 32768)] {
        let x = sparse_bench_case(b, h, sk);
        for v in [SparseVariant::FusedKernelClamped, SparseVariant::FusedKernel] {
            let mut p = sparse::Packed::new(sparse::unclamped(v));
            p.push(&x).map_err(ExecError::InvalidInput)?;
            let mut sd = sparse::SparseDevice::new(dev, sparse::Capacity::of(&p))?;
            // The race-free kernel twice: batched, then graph-baked (sparse_build_fixed).
            let bakes: &[bool] = if v == SparseVariant::FusedKernelClamped { &[false, true] } else { &[false] };
            for &baked in bakes {
                sd.bake(baked.then_some(&p))?;
                sd.stage(dev, &p)?;
                let g = sd.graph(dev, sparse::entry(v), p.work as u32)?;
                sd.stage(dev, &p)?;
                let us = time(dev, replays, &|| sd.replay(g))?;
                out.push(Timing {
                    what: "sparse-indices sink 128 + heavy 2048 + window 512".into(),
                    variant: if baked { format!("{} baked", v.name()) } else { v.name().into() },
                    size: format!("b {b} h {h} sk {sk}"),
                    replays,
                    median_us: us,
                });
            }
            sd.bake(None)?;
        }
    }
    Ok(out)
}

/// The timing table.
pub fn table(rows: &[Timing]) -> String {
    let mut s = format!("{:<46} {:<21} {:<20} {:>10}\n", "graph", "variant", "size", "median_us");
    for r in rows {
        s.push_str(&format!("{:<46} {:<21} {:<20} {:>10.2}\n", r.what, r.variant, r.size, r.median_us));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_cases_are_valid_and_fit_one_launch() {
        for mode in [NsaMode::TargetVerify, NsaMode::DraftExtend] {
            for bs in [1, 32, 256] {
                let c = nsa_bench_case(mode, bs);
                assert!(nsa::raises(&c).is_none() && nsa::supported(&c).is_ok());
            }
        }
        assert!(draft::raises(&draft_bench_case(256)).is_none());
        assert_eq!(draft_bench_case(1).counts, vec![64]);
        for (b, h, sk) in [(1, 32, 8192), (4, 32, 32768)] {
            let x = sparse_bench_case(b, h, sk);
            assert!(sparse::raises(&x).is_none());
            let mut p = sparse::Packed::new(false);
            p.push(&x).unwrap();
            // b 1: 32 rows of 8192 slots in 8 chunks of 1024 (256 blocks); b 4: 128 rows in
            // 4 chunks of 8192 (the bitmap's limit).
            let (bpr, chunk) = if b == 1 { (8, 1024) } else { (4, 8192) };
            assert_eq!((p.work, p.hdr[12], p.hdr[14]), (b * h * bpr, bpr as i32, chunk));
        }
    }
}
