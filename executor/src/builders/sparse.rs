//! Sink + heavy-hitter + window sparse indices and weights on the device
//! (`kernels/sparse_indices.cu`), seed 003 (skylight-org/sparse-attention-hub, PQCache
//! `workspace/iter-*/optimized_indexer.py`), compared with the simulator's reference
//! (`specreplay_sim::builders::sparse`).
//!
//! Layout of a case's weights: `[guard][b * h * sk][guard]` with `guard = max(sink, window, 4)`
//! floats on each side (rounded so rows start 16-byte aligned when `sk % 4 == 0`). The
//! race-free kernel's buffers start as poison (every slot it owns must be overwritten, the
//! guards must survive); the unclamped known-bad kernel runs after a memset in the same
//! graph (its `torch.zeros`), and its out-of-row stores land in neighbouring rows or the guards.

use cudarc::driver::{CudaGraph, PushKernelArg};
use specreplay_sim::builders::sparse::{SparseInput, SparseOutput, SparseVariant};
use specreplay_sim::builders::Outcome;

use super::{off32, DevBuf, GraphedBuilder};
use crate::device::Device;
use crate::error::{ExecError, Result};

/// Header words per case (`SP_HDR`).
pub const HDR: usize = 16;
/// A case's header words passed by value (`SpHdr` in the kernel), the graph-baked entry's
/// first parameter.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HdrArg(pub [i32; HDR]);

// SAFETY: a plain `#[repr(C)]` array of i32, the kernel's `struct SpHdr { int w[16]; }`.
unsafe impl cudarc::driver::DeviceRepr for HdrArg {}

/// Weight slots per block of the race-free kernel (`SP_CHUNK`).
pub const CHUNK: usize = 8192;
/// Poison of the race-free kernel's buffers (a NaN payload no kernel writes).
pub const POISON_W: u32 = 0x7fa5_a5a5;
pub const POISON_L: i64 = -0x5EED_0000;

/// Blocks each work row gets (and the slots each covers) in the race-free kernel: enough
/// blocks that a case fills about [`TARGET_BLOCKS`] (a single-batch row of 8192 slots in
/// one block leaves most of the GPU idle), chunks a multiple of 256 slots and at most
/// [`CHUNK`] (the kernel's shared-memory bitmap).
pub fn blocks_per_row(rows: usize, slots: usize) -> (usize, usize) {
    let want = TARGET_BLOCKS.div_ceil(rows.max(1)).max(1);
    let chunk = slots.div_ceil(want).next_multiple_of(256).clamp(256, CHUNK);
    (slots.div_ceil(chunk).max(1), chunk)
}

/// Blocks per case the race-free kernel's chunking aims at (about two per SM on Hopper).
pub const TARGET_BLOCKS: usize = 256;

/// Whether `variant` runs the literal unclamped kernel.
pub fn unclamped(variant: SparseVariant) -> bool {
    variant == SparseVariant::FusedKernel
}

pub fn entry(variant: SparseVariant) -> &'static str {
    if unclamped(variant) {
        "sparse_build_fused_unclamped"
    } else {
        "sparse_build"
    }
}

/// The reference's raise (shape or heavy index outside `[0, sk)`); nothing is launched.
pub fn raises(x: &SparseInput) -> Option<String> {
    if x.heavy.len() != x.b || x.heavy.iter().any(|r| r.len() != x.h || r.iter().any(|t| t.len() != x.heavy_size)) {
        return Some("shape".into());
    }
    for (bi, rows) in x.heavy.iter().enumerate() {
        for (hi, t) in rows.iter().enumerate() {
            if let Some(slot) =
                t.iter().position(|&v| v + (x.init_offset as i64) < 0 || v + x.init_offset as i64 >= x.sk as i64)
            {
                return Some(format!("batch {bi} head {hi}: heavy index (slot {slot}) outside [0, {})", x.sk));
            }
        }
    }
    None
}

fn list_len(x: &SparseInput, unclamped: bool) -> usize {
    if unclamped {
        x.sink + x.heavy_size + x.window
    } else {
        x.sink.min(x.sk) + x.heavy_size + x.window.min(x.sk)
    }
}

fn guard(x: &SparseInput) -> usize {
    x.sink.max(x.window).max(4).next_multiple_of(4)
}

/// A packed batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packed {
    pub cases: usize,
    pub work: usize,
    pub unclamped: bool,
    pub hdr: Vec<i32>,
    pub heavy: Vec<i64>,
    pub list: Vec<i64>,
    pub lens: Vec<i32>,
    pub weights: Vec<f32>,
}

/// Elements a case adds: (heavy, list, lens, weights incl. guards).
pub fn footprint(x: &SparseInput, unclamped: bool) -> [usize; 4] {
    let rows = x.b * x.h;
    [rows * x.heavy_size, rows * list_len(x, unclamped), rows, rows * x.sk + 2 * guard(x) + 4]
}

impl Packed {
    pub fn new(unclamped: bool) -> Packed {
        Packed { unclamped, ..Default::default() }
    }

    /// Appends a case that does not raise.
    pub fn push(&mut self, x: &SparseInput) -> std::result::Result<(), String> {
        let rows = x.b * x.h;
        let l = list_len(x, self.unclamped);
        let (bpr, chunk) = if self.unclamped { (1, CHUNK) } else { blocks_per_row(rows, x.sk.max(l)) };
        let fill_w = if self.unclamped { 0.0 } else { f32::from_bits(POISON_W) };
        // Leading guard, rounded so the rows start 16-byte aligned.
        let lead = guard(x) + (4 - (self.weights.len() + guard(x)) % 4) % 4;
        let weight_off = self.weights.len() + lead;
        let h = [
            off32(x.b, "b")?,
            off32(x.h, "h")?,
            off32(x.sk, "sk")?,
            off32(x.sink, "sink")?,
            off32(x.window, "window")?,
            off32(x.heavy_size, "heavy_size")?,
            off32(x.init_offset, "init_offset")?,
            off32(l, "list_len")?,
            off32(self.heavy.len(), "heavy")?,
            off32(self.list.len(), "list")?,
            off32(self.lens.len(), "lens")?,
            off32(weight_off, "weights")?,
            off32(bpr, "blocks per row")?,
            off32(self.work, "work")?,
            off32(chunk, "chunk")?,
        ];
        self.hdr.extend_from_slice(&h);
        self.hdr.resize(self.hdr.len() + HDR - h.len(), 0);
        self.heavy.extend(x.heavy.iter().flatten().flatten().copied());
        self.list.resize(self.list.len() + rows * l, POISON_L);
        self.lens.resize(self.lens.len() + rows, -1);
        self.weights.resize(weight_off + rows * x.sk + guard(x), fill_w);
        self.work += rows * bpr;
        self.cases += 1;
        Ok(())
    }

    fn h(&self, k: usize) -> &[i32] {
        &self.hdr[k * HDR..(k + 1) * HDR]
    }

    /// Case `k` as the simulator's output, or an `Error` when the device stored outside the
    /// rows (a guard changed, or the list holds an index outside `[0, sk)` at which the kernel
    /// stored): the simulator's `OutOfBoundsStore` wording, plus what the device showed.
    pub fn unpack(&self, k: usize, x: &SparseInput) -> Outcome<SparseOutput> {
        let h = self.h(k);
        let (l, list_off, len_off, w_off) = (h[7] as usize, h[9] as usize, h[10] as usize, h[11] as usize);
        let g = guard(x);
        let rows = x.b * x.h;
        let fill = if self.unclamped { 0f32.to_bits() } else { POISON_W };
        let lead_start = if k == 0 { 0 } else { w_off - g };
        let touched = self.weights[lead_start..w_off]
            .iter()
            .chain(&self.weights[w_off + rows * x.sk..w_off + rows * x.sk + g])
            .filter(|w| w.to_bits() != fill)
            .count();
        let oob = (0..rows * l).find(|&i| {
            let v = self.list[list_off + i];
            v < 0 || v >= x.sk as i64
        });
        if touched > 0 || oob.is_some() {
            let (row, index) = oob.map_or((0, -1), |i| (i / l.max(1), self.list[list_off + i]));
            return Outcome::Error(format!(
                "batch {} head {}: out-of-bounds store at index {index} of weight_list row of length {} (undefined behaviour on device; observed: {touched} guard float(s) written)",
                row / x.h.max(1),
                row % x.h.max(1),
                x.sk
            ));
        }
        let mut out = SparseOutput { sparse_list: Vec::new(), sparse_len: Vec::new(), weight_list: Vec::new() };
        for bi in 0..x.b {
            let (mut ls, mut ns, mut ws) = (Vec::new(), Vec::new(), Vec::new());
            for hi in 0..x.h {
                let r = bi * x.h + hi;
                ls.push(self.list[list_off + r * l..list_off + (r + 1) * l].to_vec());
                ns.push(self.lens[len_off + r].max(0) as usize);
                ws.push(self.weights[w_off + r * x.sk..w_off + (r + 1) * x.sk].to_vec());
            }
            out.sparse_list.push(ls);
            out.sparse_len.push(ns);
            out.weight_list.push(ws);
        }
        Outcome::Values(out)
    }

    /// The CPU twin of both kernels over the packed arrays (the unclamped one stores
    /// wherever its indices point, inside the weights array, like the device).
    pub fn run_twin(&mut self) {
        if self.unclamped {
            self.weights.iter_mut().for_each(|w| *w = 0.0);
        }
        for k in 0..self.cases {
            let h: Vec<i32> = self.h(k).to_vec();
            let (b, hh, sk, heavy_size, init) = (h[0] as usize, h[1] as usize, h[2] as i64, h[5] as usize, h[6] as i64);
            let (sink, window) = if self.unclamped {
                (h[3] as i64, h[4] as i64)
            } else {
                ((h[3] as i64).min(sk), (h[4] as i64).min(sk))
            };
            let l = h[7] as usize;
            for row in 0..b * hh {
                let heavy = &self.heavy[h[8] as usize + row * heavy_size..h[8] as usize + (row + 1) * heavy_size];
                let value = |off: i64| -> i64 {
                    if off < sink {
                        off
                    } else if off < sink + heavy_size as i64 {
                        heavy[(off - sink) as usize] + init
                    } else {
                        sk - window + (off - sink - heavy_size as i64)
                    }
                };
                let vals: Vec<i64> = (0..l as i64).map(value).collect();
                let lbase = h[9] as usize + row * l;
                self.list[lbase..lbase + l].copy_from_slice(&vals);
                self.lens[h[10] as usize + row] = l as i32;
                let wbase = h[11] as i64 + row as i64 * sk;
                if self.unclamped {
                    for &v in &vals {
                        self.weights[(wbase + v) as usize] = 1.0;
                    }
                } else {
                    for j in 0..sk {
                        let on = j < sink || j >= sk - window || heavy.iter().any(|&v| v + init == j);
                        self.weights[(wbase + j) as usize] = if on { 1.0 } else { 0.0 };
                    }
                }
            }
        }
    }
}

/// Capacities (elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub cases: usize,
    pub heavy: usize,
    pub list: usize,
    pub lens: usize,
    pub weights: usize,
}

impl Capacity {
    pub fn fits(&self, p: &Packed, f: [usize; 4]) -> bool {
        p.cases < self.cases
            && p.heavy.len() + f[0] <= self.heavy
            && p.list.len() + f[1] <= self.list
            && p.lens.len() + f[2] <= self.lens
            && p.weights.len() + f[3] <= self.weights
    }
    pub fn of(p: &Packed) -> Capacity {
        Capacity {
            cases: p.cases,
            heavy: p.heavy.len(),
            list: p.list.len(),
            lens: p.lens.len(),
            weights: p.weights.len(),
        }
    }
}

/// Persistent buffers and graphs of the sparse kernels.
pub struct SparseDevice {
    graphs: Vec<(String, CudaGraph)>,
    pub cap: Capacity,
    /// Set by [`SparseDevice::bake`]: graphs run `sparse_build_fixed` with this header and
    /// work-item count as kernel parameters (one graph per case) instead of reading `meta`
    /// and `hdr`.
    baked: Option<(HdrArg, i32)>,
    meta: DevBuf<i32>,
    hdr: DevBuf<i32>,
    heavy: DevBuf<i64>,
    list: DevBuf<i64>,
    lens: DevBuf<i32>,
    weights: DevBuf<f32>,
}

impl SparseDevice {
    pub fn new(dev: &Device, cap: Capacity) -> Result<SparseDevice> {
        Ok(SparseDevice {
            graphs: Vec::new(),
            cap,
            baked: None,
            meta: DevBuf::new(dev, "meta", 4)?,
            hdr: DevBuf::new(dev, "hdr", cap.cases * HDR)?,
            heavy: DevBuf::new(dev, "topk heavy indices", cap.heavy)?,
            list: DevBuf::new(dev, "sparse_list", cap.list)?,
            lens: DevBuf::new(dev, "sparse_len", cap.lens)?,
            weights: DevBuf::new(dev, "weight_list", cap.weights)?,
        })
    }
}

impl GraphedBuilder for SparseDevice {
    type Packed = Packed;

    fn launch(&mut self, dev: &Device, entry: &str, grid: u32) -> Result<()> {
        if entry == "sparse_build_fused_unclamped" {
            // weight_list = torch.zeros(...) before the kernel (seed 003 keeps it).
            dev.stream.memset_zeros(&mut self.weights.d)?;
        }
        let baked = match &self.baked {
            Some(b) if entry == "sparse_build" => Some(*b),
            Some(_) => {
                return Err(ExecError::InvalidInput(format!("{entry} has no graph-baked entry (sparse_build has)")))
            }
            None => None,
        };
        let (f, grid) = match &baked {
            Some((_, work)) => (dev.function("sparse_build_fixed")?, (*work).max(1) as u32),
            None => (dev.function(entry)?, grid.max(1)),
        };
        let mut l = dev.stream.launch_builder(f);
        match &baked {
            Some((h, work)) => l.arg(h).arg(work),
            None => l.arg(&self.meta.d).arg(&self.hdr.d),
        };
        l.arg(&self.heavy.d).arg(&mut self.list.d).arg(&mut self.lens.d);
        l.arg(&mut self.weights.d);
        let cfg = cudarc::driver::LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: arguments match sparse_build*'s parameters (sparse_build_fixed takes the
        // header and work count by value in place of meta / hdr); offsets come from
        // `Packed::push` within the capacities `stage` checks (`bake` checks the baked one;
        // the unclamped kernel's stray stores stay in the guard zones `Packed::push` lays out).
        unsafe { l.launch(cfg) }?;
        Ok(())
    }

    fn stage(&mut self, dev: &Device, p: &Packed) -> Result<()> {
        self.check_fits(p)?;
        self.meta.put(dev, &[p.cases as i32, p.work as i32, 0, 0])?;
        self.hdr.put(dev, &p.hdr)?;
        self.heavy.put(dev, &p.heavy)?;
        self.list.put(dev, &p.list)?;
        self.lens.put(dev, &p.lens)?;
        self.weights.put(dev, &p.weights)?;
        Ok(())
    }

    fn read(&self, dev: &Device, p: &mut Packed) -> Result<()> {
        self.list.get(dev, &mut p.list)?;
        self.lens.get(dev, &mut p.lens)?;
        self.weights.get(dev, &mut p.weights)?;
        dev.stream.synchronize()?;
        Ok(())
    }

    fn check_fits(&self, p: &Packed) -> Result<()> {
        let c = &self.cap;
        if p.cases > c.cases
            || p.heavy.len() > c.heavy
            || p.list.len() > c.list
            || p.lens.len() > c.lens
            || p.weights.len() > c.weights
        {
            return Err(ExecError::InvalidInput(format!(
                "sparse batch of {} cases exceeds the buffers {c:?}",
                p.cases
            )));
        }
        Ok(())
    }

    fn cases_of(p: &Packed) -> usize {
        p.cases
    }

    /// `sparse_build_fixed` (a block per work item) takes the header and the work count by
    /// value; the unclamped kernel has no baked entry.
    fn set_baked(&mut self, p: Option<&Packed>) -> Result<()> {
        self.baked = match p {
            None => None,
            Some(p) if p.unclamped => {
                return Err(ExecError::InvalidInput("the unclamped sparse kernel has no graph-baked entry".into()))
            }
            Some(p) => {
                Some((HdrArg(super::first_header(&p.hdr)?), off32(p.work, "work").map_err(ExecError::InvalidInput)?))
            }
        };
        Ok(())
    }

    super::graphed_fields!();

    fn graph_key(&self, entry: &str, grid: u32) -> String {
        match &self.baked {
            Some((h, work)) => format!("{entry}/fixed {:?} x{work}", h.0),
            None => format!("{entry}/{grid}"),
        }
    }
}

/// One case on the device, as an outcome.
pub fn device_outcome(
    dev: &Device,
    sd: &mut SparseDevice,
    x: &SparseInput,
    variant: SparseVariant,
) -> Result<Outcome<SparseOutput>> {
    if let Some(why) = raises(x) {
        return Ok(Outcome::Error(why));
    }
    let mut p = Packed::new(unclamped(variant));
    p.push(x).map_err(ExecError::InvalidInput)?;
    if !sd.cap.fits(&Packed::new(p.unclamped), footprint(x, p.unclamped)) {
        return Err(ExecError::InvalidInput(format!("sparse case too large for the buffers {:?}", sd.cap)));
    }
    sd.run(dev, entry(variant), &mut p, super::BATCH_GRID)?;
    Ok(p.unpack(0, x))
}

/// [`device_outcome`] of the race-free kernel through a graph captured for this case
/// alone, its header baked into `sparse_build_fixed`'s parameters.
pub fn device_outcome_baked(dev: &Device, sd: &mut SparseDevice, x: &SparseInput) -> Result<Outcome<SparseOutput>> {
    if let Some(why) = raises(x) {
        return Ok(Outcome::Error(why));
    }
    let mut p = Packed::new(false);
    p.push(x).map_err(ExecError::InvalidInput)?;
    sd.run_baked(dev, "sparse_build", &mut p)?;
    Ok(p.unpack(0, x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use specreplay_sim::builders::cases;
    use specreplay_sim::builders::sparse::build;

    #[test]
    fn the_chunks_cover_every_slot_within_the_bitmap_and_fill_the_gpu() {
        for rows in [0usize, 1, 3, 32, 255, 256, 4096] {
            for slots in [0usize, 1, 255, 256, 1000, 8192, 8193, 32768, 1 << 20] {
                let (bpr, chunk) = blocks_per_row(rows, slots);
                assert!(chunk % 256 == 0 && (256..=CHUNK).contains(&chunk), "{rows} {slots}: {chunk}");
                assert!(bpr * chunk >= slots && (bpr - 1) * chunk < slots.max(1), "{rows} {slots}: {bpr} x {chunk}");
                // Small cases are split until about TARGET_BLOCKS blocks (rounding the chunk up
                // to 256 slots at most halves that), or 256-slot chunks.
                assert!(rows * bpr >= (TARGET_BLOCKS / 2).min(rows * slots.div_ceil(256)), "{rows} {slots}: {bpr}");
            }
        }
    }

    #[test]
    fn the_twins_equal_the_simulator_batched_and_the_unclamped_one_stores_out_of_rows() {
        let mut rng = specreplay_sim::splitmix::Rng::new(11);
        let xs: Vec<SparseInput> =
            (0..400).map(|_| super::super::agreement::random_sparse_case(&mut rng, 600)).collect();
        let ok: Vec<&SparseInput> = xs.iter().filter(|x| raises(x).is_none()).collect();
        assert!(ok.len() > 300 && ok.len() < xs.len(), "{}", ok.len());
        for variant in [SparseVariant::FusedKernelClamped, SparseVariant::FusedKernel] {
            let mut p = Packed::new(unclamped(variant));
            for x in &ok {
                p.push(x).unwrap();
            }
            p.run_twin();
            let mut oob = 0;
            for (k, x) in ok.iter().enumerate() {
                let got = p.unpack(k, x);
                let model: Outcome<SparseOutput> = build(variant, x).into();
                match (&got, &model) {
                    (Outcome::Values(g), Outcome::Values(m)) => assert_eq!(g, m, "{variant:?} {x:?}"),
                    (Outcome::Error(_), Outcome::Error(_)) => oob += 1,
                    _ => {
                        // A neighbour row absorbed the stray store: values differ from the
                        // model's, which raises; only the unclamped kernel may do this.
                        assert!(unclamped(variant), "{variant:?} {x:?} {got:?}");
                        oob += 1;
                    }
                }
                let verdict = cases::check_sparse_actual(x, variant, &got, "twin");
                assert_eq!(
                    verdict.is_ok(),
                    !unclamped(variant) || matches!((&got, &model), (Outcome::Values(_), Outcome::Values(_))),
                    "{x:?}"
                );
            }
            assert_eq!(oob > 0, unclamped(variant), "{variant:?}: {oob}");
        }
    }
}
