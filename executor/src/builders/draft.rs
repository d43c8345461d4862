//! Per-request variable draft selection on the device (`kernels/draft_select.cu`), seed 000
//! (TileSpec's ragged drafting, sjchoi1/sglang `tile_spec/test_vectorized_slice.py`),
//! compared with the simulator's loop reference (`specreplay_sim::builders::draft_select`).
//! Seed 000 has no CUDA-graph form upstream; the kernels run under graph replay here anyway
//! (loop bounds from device buffers), so the same graph serves any batch.
//!
//! The output of a case is the selected indices of every request, back to back
//! (`Σ draft_counts` int64 slots); before the launch they hold a poison value, so a slot
//! the kernel fails to write is a mismatch.

use cudarc::driver::{CudaGraph, PushKernelArg};
use specreplay_sim::builders::cases::DraftCase;
use specreplay_sim::builders::draft_select::{DraftVariant, Selection};
use specreplay_sim::builders::{BuilderError, Outcome};

use super::{off32, DevBuf, GraphedBuilder};
use crate::device::Device;
use crate::error::{ExecError, Result};

/// Header words per case (`DS_HDR`).
pub const HDR: usize = 8;
/// Largest candidate count per row (`DS_MAX_CAND`).
pub const MAX_CAND: usize = 1024;
/// What an output slot holds before the launch.
pub const POISON: i64 = -0x5EED_0000;

/// A case's header words passed by value (`DsHdr` in the kernel), the graph-baked entries'
/// first parameter.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HdrArg(pub [i32; HDR]);

// SAFETY: a plain `#[repr(C)]` array of i32, the kernel's `struct DsHdr { int w[8]; }`.
unsafe impl cudarc::driver::DeviceRepr for HdrArg {}

/// The kernel entry point of a simulator variant (`loop` and `vectorized` agree: both run the
/// segmented top-k kernel).
pub fn entry(variant: DraftVariant) -> &'static str {
    match variant {
        DraftVariant::Loop | DraftVariant::Vectorized => "draft_select_topk",
        DraftVariant::VectorizedSorted => "draft_select_sorted",
    }
}

/// The reference's raise on this case (typed error; nothing is launched), or `None`.
pub fn raises(case: &DraftCase) -> Option<String> {
    specreplay_sim::builders::draft_select::select(DraftVariant::Loop, &case.scores, &case.counts)
        .err()
        .map(|e: BuilderError| e.to_string())
}

/// A packed batch: headers, counts, scores, and the output slots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packed {
    pub cases: usize,
    pub rows: usize,
    pub hdr: Vec<i32>,
    pub counts: Vec<i32>,
    pub scores: Vec<f32>,
    pub out: Vec<i64>,
}

/// Elements a case adds: (rows, scores, output slots).
pub fn footprint(case: &DraftCase) -> [usize; 3] {
    let n = case.scores.first().map_or(0, Vec::len);
    [case.counts.len(), case.counts.len() * n, case.counts.iter().sum()]
}

impl Packed {
    /// Appends a case that does not raise.
    pub fn push(&mut self, case: &DraftCase) -> std::result::Result<(), String> {
        let n = case.scores.first().map_or(0, Vec::len);
        if n > MAX_CAND {
            return Err(format!("n_cand {n} > {MAX_CAND}"));
        }
        let h = [
            off32(case.counts.len(), "bs")?,
            off32(n, "n_cand")?,
            off32(self.counts.len(), "counts")?,
            off32(self.scores.len(), "scores")?,
            off32(self.out.len(), "out")?,
            off32(self.rows, "rows")?,
        ];
        self.hdr.extend_from_slice(&h);
        self.hdr.resize(self.hdr.len() + HDR - h.len(), 0);
        self.counts.extend(case.counts.iter().map(|&c| c as i32));
        for row in &case.scores {
            self.scores.extend_from_slice(row);
        }
        self.out.resize(self.out.len() + case.counts.iter().sum::<usize>(), POISON);
        self.rows += case.counts.len();
        self.cases += 1;
        Ok(())
    }

    /// Case `k`'s selection (split by its counts).
    pub fn unpack(&self, k: usize) -> Selection {
        let h = &self.hdr[k * HDR..(k + 1) * HDR];
        let (bs, req, mut at) = (h[0] as usize, h[2] as usize, h[4] as usize);
        (0..bs)
            .map(|i| {
                let c = self.counts[req + i] as usize;
                at += c;
                self.out[at - c..at].to_vec()
            })
            .collect()
    }

    /// The CPU twin of the kernels: ranks by the same total order, the same slot rule.
    pub fn run_twin(&mut self, sorted: bool) {
        for k in 0..self.cases {
            let h: Vec<i32> = self.hdr[k * HDR..(k + 1) * HDR].to_vec();
            let (bs, n, req, sc, out_off) = (h[0] as usize, h[1] as usize, h[2] as usize, h[3] as usize, h[4] as usize);
            let max_c = self.counts[req..req + bs].iter().copied().max().unwrap_or(0);
            let mut off = out_off;
            for i in 0..bs {
                let ci = self.counts[req + i];
                let row = &self.scores[sc + i * n..sc + (i + 1) * n];
                let rank: Vec<i32> =
                    (0..n).map(|j| (0..n).filter(|&q| before(row[q], q, row[j], j)).count() as i32).collect();
                for j in 0..n {
                    if !sorted && rank[j] < ci {
                        self.out[off + rank[j] as usize] = j as i64;
                    }
                    if sorted && rank[j] < max_c {
                        let pos = (0..j).filter(|&q| rank[q] < max_c).count() as i32;
                        if pos < ci {
                            self.out[off + pos as usize] = j as i64;
                        }
                    }
                }
                off += ci.max(0) as usize;
            }
        }
    }
}

/// `ds_before` of the kernel: larger first, NaN above numbers, ties by lower index.
pub fn before(a: f32, ia: usize, b: f32, ib: usize) -> bool {
    let (na, nb) = (a.is_nan(), b.is_nan());
    if na != nb {
        return na;
    }
    if !na && a != b {
        return a > b;
    }
    ia < ib
}

/// Capacities (elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub cases: usize,
    pub rows: usize,
    pub scores: usize,
    pub out: usize,
}

impl Capacity {
    pub fn fits(&self, p: &Packed, f: [usize; 3]) -> bool {
        p.cases < self.cases
            && p.rows + f[0] <= self.rows
            && p.scores.len() + f[1] <= self.scores
            && p.out.len() + f[2] <= self.out
    }
    pub fn of(p: &Packed) -> Capacity {
        Capacity { cases: p.cases, rows: p.rows, scores: p.scores.len(), out: p.out.len() }
    }
}

/// Persistent buffers and graphs of the draft-selection kernels.
pub struct DraftDevice {
    graphs: Vec<(String, CudaGraph)>,
    pub cap: Capacity,
    /// Set by [`DraftDevice::bake`]: graphs run the `*_fixed` entries with this header as a
    /// kernel parameter, one block per row (one graph per case) instead of reading `meta`
    /// and `hdr`.
    baked: Option<HdrArg>,
    meta: DevBuf<i32>,
    hdr: DevBuf<i32>,
    counts: DevBuf<i32>,
    scores: DevBuf<f32>,
    out: DevBuf<i64>,
}

impl DraftDevice {
    pub fn new(dev: &Device, cap: Capacity) -> Result<DraftDevice> {
        Ok(DraftDevice {
            graphs: Vec::new(),
            cap,
            baked: None,
            meta: DevBuf::new(dev, "meta", 4)?,
            hdr: DevBuf::new(dev, "hdr", cap.cases * HDR)?,
            counts: DevBuf::new(dev, "draft_counts", cap.rows)?,
            scores: DevBuf::new(dev, "scores", cap.scores)?,
            out: DevBuf::new(dev, "selected", cap.out)?,
        })
    }
}

impl GraphedBuilder for DraftDevice {
    type Packed = Packed;

    fn launch(&mut self, dev: &Device, entry: &str, grid: u32) -> Result<()> {
        let (f, grid) = match &self.baked {
            Some(h) => (dev.function(&format!("{entry}_fixed"))?, h.0[0].max(1) as u32),
            None => (dev.function(entry)?, grid.max(1)),
        };
        let mut l = dev.stream.launch_builder(f);
        match &self.baked {
            Some(h) => l.arg(h),
            None => l.arg(&self.meta.d).arg(&self.hdr.d),
        };
        l.arg(&self.counts.d).arg(&self.scores.d).arg(&mut self.out.d);
        let cfg = cudarc::driver::LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: arguments match draft_select_*'s parameters (the `_fixed` entries take the
        // header by value in place of meta / hdr); offsets come from `Packed::push` within the
        // capacities `stage` checks (`bake` checks the baked one with `check_fits`).
        unsafe { l.launch(cfg) }?;
        Ok(())
    }

    fn stage(&mut self, dev: &Device, p: &Packed) -> Result<()> {
        self.check_fits(p)?;
        self.meta.put(dev, &[p.cases as i32, p.rows as i32, 0, 0])?;
        self.hdr.put(dev, &p.hdr)?;
        self.counts.put(dev, &p.counts)?;
        self.scores.put(dev, &p.scores)?;
        self.out.put(dev, &p.out)?;
        Ok(())
    }

    fn read(&self, dev: &Device, p: &mut Packed) -> Result<()> {
        self.out.get(dev, &mut p.out)?;
        dev.stream.synchronize()?;
        Ok(())
    }

    fn check_fits(&self, p: &Packed) -> Result<()> {
        let c = &self.cap;
        if p.cases > c.cases || p.rows > c.rows || p.scores.len() > c.scores || p.out.len() > c.out {
            return Err(ExecError::InvalidInput(format!("draft batch of {} cases exceeds the buffers {c:?}", p.cases)));
        }
        Ok(())
    }

    fn cases_of(p: &Packed) -> usize {
        p.cases
    }

    /// The `*_fixed` entries (one block per row) take the header by value.
    fn set_baked(&mut self, p: Option<&Packed>) -> Result<()> {
        self.baked = p.map(|p| super::first_header(&p.hdr).map(HdrArg)).transpose()?;
        Ok(())
    }

    super::graphed_fields!();

    fn graph_key(&self, entry: &str, grid: u32) -> String {
        match &self.baked {
            Some(h) => format!("{entry}/fixed {:?}", h.0),
            None => format!("{entry}/{grid}"),
        }
    }
}

/// One case on the device, as an outcome (the reference's typed error when it raises).
pub fn device_outcome(
    dev: &Device,
    dd: &mut DraftDevice,
    case: &DraftCase,
    variant: DraftVariant,
) -> Result<Outcome<Selection>> {
    if let Some(why) = raises(case) {
        return Ok(Outcome::Error(why));
    }
    let mut p = Packed::default();
    p.push(case).map_err(ExecError::InvalidInput)?;
    dd.run(dev, entry(variant), &mut p, super::BATCH_GRID)?;
    Ok(Outcome::Values(p.unpack(0)))
}

/// [`device_outcome`] through a graph captured for this case alone, its header baked into
/// the `*_fixed` entry's parameters.
pub fn device_outcome_baked(
    dev: &Device,
    dd: &mut DraftDevice,
    case: &DraftCase,
    variant: DraftVariant,
) -> Result<Outcome<Selection>> {
    if let Some(why) = raises(case) {
        return Ok(Outcome::Error(why));
    }
    let mut p = Packed::default();
    p.push(case).map_err(ExecError::InvalidInput)?;
    dd.run_baked(dev, entry(variant), &mut p)?;
    Ok(Outcome::Values(p.unpack(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use specreplay_sim::builders::cases;
    use specreplay_sim::builders::draft_select::select;

    #[test]
    fn the_twin_equals_the_simulator_batched_and_catches_the_sorted_variant() {
        let mut rng = specreplay_sim::splitmix::Rng::new(3);
        let cs: Vec<DraftCase> = (0..300).map(|_| super::super::agreement::random_draft_case(&mut rng, 48)).collect();
        let mut bad = 0;
        for (variant, sorted) in [(DraftVariant::Vectorized, false), (DraftVariant::VectorizedSorted, true)] {
            let mut p = Packed::default();
            let ok: Vec<&DraftCase> = cs.iter().filter(|c| raises(c).is_none()).collect();
            for c in &ok {
                p.push(c).unwrap();
            }
            p.run_twin(sorted);
            for (k, c) in ok.iter().enumerate() {
                let got = p.unpack(k);
                assert_eq!(got, select(variant, &c.scores, &c.counts).unwrap(), "{variant:?} {c:?}");
                let verdict = cases::check_draft_actual(c, variant, &Outcome::Values(got), "twin");
                if sorted {
                    bad += verdict.is_err() as usize;
                } else {
                    assert!(verdict.is_ok(), "{c:?}");
                }
            }
            assert!(ok.len() > 200 && ok.len() < cs.len(), "raising cases generated too: {}", ok.len());
        }
        assert!(bad > 10, "the sorted variant disagrees on mixed counts: {bad}");
    }

    #[test]
    fn ties_nan_and_signed_zero_follow_the_simulators_order() {
        let c = DraftCase { scores: vec![vec![0.0, f32::NAN, -0.0, 1.0, f32::NAN]], counts: vec![5] };
        let mut p = Packed::default();
        p.push(&c).unwrap();
        p.run_twin(false);
        assert_eq!(p.unpack(0), vec![vec![1, 4, 3, 0, 2]]);
    }
}
