//! NSA `target_verify` / `draft_extend` metadata on the device (`kernels/nsa_builders.cu`),
//! under CUDA-graph replay as SGLang runs it (`nsa_backend.py`
//! `init_forward_metadata_replay_cuda_graph`; the runner's padding in
//! `speculative/eagle_draft_extend_cuda_graph_runner.py`), compared with the simulator's
//! replay model (`specreplay_sim::builders::cuda_graph`).
//!
//! Per case the host does what SGLang's host side does before `graph.replay()`: pads the
//! live batch to its captured size with the fill values (`seq_lens` 1, `accept_length` 1,
//! `req_pool_indices` 0; [`cuda_graph::pad_batch`]) and stages it into the persistent
//! input buffers; the output buffers hold the capture state ([`GraphBuffers::captured`]),
//! so a row the kernel does not write keeps its capture-time value, as on the real path.
//! The graph then builds every field on the device, including `Σ accept_length` (no host
//! sync), and the whole buffers are read back.

use cudarc::driver::{CudaGraph, PushKernelArg};
use specreplay_sim::builders::cases::{self, NsaCase, POOL_SIZE};
use specreplay_sim::builders::cuda_graph::{self, GraphBuffers};
use specreplay_sim::builders::nsa::{NsaMode, NsaVariant};
use specreplay_sim::builders::Outcome;

use super::{off32, DevBuf, GraphedBuilder};
use crate::device::Device;
use crate::error::{ExecError, Result};

/// Header words per case (`NSA_HDR` in the kernel).
pub const HDR: usize = 16;
/// Largest captured batch one block handles (`NSA_MAX_BS`).
pub const MAX_BS: usize = 1024;
/// Row stride of the device's `req_to_token` pool (the widest page table a case may have).
pub const R2T_STRIDE: usize = 4096;

/// A case's header words passed by value (`NsaHdr` in the kernel): the graph-baked entries'
/// first parameter.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HdrArg(pub [i32; HDR]);

// SAFETY: a plain `#[repr(C)]` array of i32, the kernel's `struct NsaHdr { int w[16]; }`.
unsafe impl cudarc::driver::DeviceRepr for HdrArg {}

/// The block size of a graph-baked entry for a captured batch of `bs` requests: the
/// smallest of 32 .. 512 covering it (larger batches loop, as the batched entries do), and
/// 512 whenever the case writes the page table, whose row copies want every thread (run 25:
/// sized to the bs, the baked copies took 6.27 / 10.91 µs at bs 32 / 256 against the
/// batched entry's 5.89 / 10.05 with 512).
pub fn fixed_threads(bs: usize, write_page: bool) -> u32 {
    if write_page {
        return 512;
    }
    [32u32, 64, 128, 256].into_iter().find(|&t| bs <= t as usize).unwrap_or(512)
}

/// The kernel entry point of a variant (`reference` runs the general kernel: it is the
/// reference's semantics, vectorized).
pub fn entry(variant: NsaVariant) -> &'static str {
    match variant {
        NsaVariant::Reference | NsaVariant::General => "nsa_meta_general",
        NsaVariant::UniformQo => "nsa_meta_uniform_qo",
    }
}

/// The device's `req_to_token`: [`POOL_SIZE`] rows of [`R2T_STRIDE`] slots with the values of
/// `ReqToToken::synthetic` (row 0 the reserved all-zero slot, row `p` = `p * 1000 + t + 1`),
/// so every case's `max_context_len ≤ R2T_STRIDE` prefix equals the simulator's pool.
pub fn req_to_token() -> Vec<i32> {
    let mut v = vec![0i32; POOL_SIZE * R2T_STRIDE];
    for p in 1..POOL_SIZE {
        for t in 0..R2T_STRIDE {
            v[p * R2T_STRIDE + t] = (p * 1000 + t + 1) as i32;
        }
    }
    v
}

/// Why SGLang's replay would raise on this case (so nothing is launched), mirroring the
/// simulator's `cuda_graph::replay` errors: a negative `accept_length` (`repeat_interleave`),
/// `Σ accept_length > bs * D` (the page-table / `nsa_seqlens_expanded` `copy_` does not
/// broadcast), or a `req_pool_indices` row outside the pool (indexing). `None`: it runs.
pub fn raises(case: &NsaCase) -> Option<String> {
    let padded = cuda_graph::pad_batch(&case.batch, case.captured_bs);
    if padded.req_pool_indices.iter().any(|&p| p >= POOL_SIZE) {
        return Some("req_pool_indices outside req_to_token".into());
    }
    if case.mode == NsaMode::DraftExtend {
        if padded.accept_length.iter().any(|&a| a < 0) {
            return Some("repeats can not be negative".into());
        }
        let sum: i64 = padded.accept_length.iter().map(|&a| a as i64).sum();
        if sum > case.captured_bs as i64 * case.params.num_draft_tokens as i64 {
            return Some("Σ accept_length exceeds the captured bs * D rows".into());
        }
    }
    None
}

/// Whether a case fits the kernels' fixed limits (else a typed error, never a launch).
pub fn supported(case: &NsaCase) -> std::result::Result<(), String> {
    let p = &case.params;
    if case.captured_bs == 0 || case.captured_bs > MAX_BS || case.captured_bs < case.batch.bs() {
        return Err(format!("captured bs {} outside 1..={MAX_BS} or below the live bs", case.captured_bs));
    }
    if p.num_draft_tokens < 1 || p.max_context_len == 0 || p.max_context_len > R2T_STRIDE {
        return Err(format!(
            "D {} must be ≥ 1, max_context_len {} in 1..={R2T_STRIDE}",
            p.num_draft_tokens, p.max_context_len
        ));
    }
    Ok(())
}

/// A batch of cases packed for one launch: headers, padded inputs, and the output buffers
/// (capture state before the launch, the graph's results after).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packed {
    pub cases: usize,
    pub hdr: Vec<i32>,
    pub page_off: Vec<i64>,
    pub seq_lens: Vec<i32>,
    pub accept: Vec<i32>,
    pub rpi: Vec<i32>,
    pub cache_seqlens: Vec<i32>,
    pub cu_seqlens_k: Vec<i32>,
    pub page_table: Vec<i32>,
    pub expanded: Vec<i32>,
    pub nsa_cache: Vec<i32>,
    pub nsa_cu: Vec<i32>,
}

/// Element counts a case adds to each buffer (requests, cu entries, rows, nsa-cu entries, page).
pub fn footprint(case: &NsaCase, write_page: bool) -> [usize; 5] {
    let bs = case.captured_bs;
    let rows = bs * case.params.num_draft_tokens.max(0) as usize;
    let page = if write_page { rows * case.params.max_context_len } else { 0 };
    [bs, bs + 1, rows, rows + 1, page]
}

impl Packed {
    /// Appends a case (padded to its captured size, outputs in the capture state). The
    /// caller has checked [`supported`] and [`raises`].
    pub fn push(&mut self, case: &NsaCase, write_page: bool) -> std::result::Result<(), String> {
        supported(case)?;
        let padded = cuda_graph::pad_batch(&case.batch, case.captured_bs);
        let cap = GraphBuffers::captured_without_page_table(case.captured_bs, &case.params);
        let p = &case.params;
        let h = [
            if case.mode == NsaMode::TargetVerify { 0 } else { 1 },
            p.num_draft_tokens,
            p.nsa_index_topk,
            off32(case.captured_bs, "bs")?,
            off32(p.max_context_len, "W")?,
            write_page as i32,
            off32(self.seq_lens.len(), "requests")?,
            off32(self.cu_seqlens_k.len(), "cu_seqlens_k")?,
            off32(self.expanded.len(), "rows")?,
            off32(self.nsa_cu.len(), "nsa_cu_seqlens_k")?,
            POOL_SIZE as i32,
        ];
        self.hdr.extend_from_slice(&h);
        self.hdr.resize(self.hdr.len() + HDR - h.len(), 0);
        self.page_off.push(self.page_table.len() as i64);
        self.seq_lens.extend_from_slice(&padded.seq_lens);
        self.accept.extend_from_slice(&padded.accept_length);
        self.rpi.extend(padded.req_pool_indices.iter().map(|&r| r as i32));
        self.cache_seqlens.extend_from_slice(&cap.cache_seqlens);
        self.cu_seqlens_k.extend_from_slice(&cap.cu_seqlens_k);
        if write_page {
            let cells = cap.seqlens_expanded.len() * p.max_context_len;
            self.page_table.resize(self.page_table.len() + cells, cuda_graph::PAGE_TABLE_FILL_VALUE);
        }
        self.expanded.extend_from_slice(&cap.seqlens_expanded);
        self.nsa_cache.extend_from_slice(&cap.nsa_cache_seqlens);
        self.nsa_cu.extend_from_slice(&cap.nsa_cu_seqlens_k);
        self.cases += 1;
        Ok(())
    }

    fn h(&self, k: usize) -> &[i32] {
        &self.hdr[k * HDR..(k + 1) * HDR]
    }

    /// Case `k`'s buffers as the simulator's [`GraphBuffers`] (whole buffers, tails included).
    /// Without the page table in the layout, `page_table_1` is left empty.
    pub fn unpack(&self, k: usize) -> GraphBuffers {
        let h = self.h(k);
        let (d, bs, w) = (h[1] as usize, h[3] as usize, h[4] as usize);
        let (req, cu, row, ncu) = (h[6] as usize, h[7] as usize, h[8] as usize, h[9] as usize);
        let rows = bs * d;
        let page_table_1 = if h[5] != 0 {
            let base = self.page_off[k] as usize;
            (0..rows).map(|r| self.page_table[base + r * w..base + (r + 1) * w].to_vec()).collect()
        } else {
            Vec::new()
        };
        GraphBuffers {
            captured_bs: bs,
            cache_seqlens: self.cache_seqlens[req..req + bs].to_vec(),
            cu_seqlens_k: self.cu_seqlens_k[cu..cu + bs + 1].to_vec(),
            page_table_1,
            seqlens_expanded: self.expanded[row..row + rows].to_vec(),
            nsa_cache_seqlens: self.nsa_cache[row..row + rows].to_vec(),
            nsa_cu_seqlens_k: self.nsa_cu[ncu..ncu + rows + 1].to_vec(),
        }
    }

    /// The CPU twin of `nsa_meta_general` / `nsa_meta_uniform_qo`: the same arithmetic over
    /// the same packed arrays (wrapping int32 sums), one case at a time, in the kernel's
    /// form: per request its row count, `cache_seqlens` and the closed-form sum of its rows'
    /// clamped lengths ([`clamped_run_sum`]); the prefix sums of those; then each request's
    /// rows from its base (uniform-qo: D rows at `i * D`).
    pub fn run_twin(&mut self, uniform: bool, r2t: &[i32], r2t_stride: usize) {
        for k in 0..self.cases {
            let h: Vec<i32> = self.h(k).to_vec();
            let (mode, d, topk, bs, w, write_page) = (h[0], h[1], h[2], h[3] as usize, h[4] as usize, h[5]);
            let (req, cu_off, row_off, ncu) = (h[6] as usize, h[7] as usize, h[8] as usize, h[9] as usize);
            let draft = if mode == 0 { d } else { 0 };
            let rows_cap = bs * d as usize;
            let mut cu = vec![0i32; bs + 1];
            let (mut acc_k, mut acc_c, mut mx) = (0i32, 0i32, i32::MIN);
            for i in 0..bs {
                let s = self.seq_lens[req + i];
                let q = if mode == 0 { d } else { self.accept[req + i] };
                let kv = s.wrapping_add(draft);
                let qe = if uniform { d } else { q };
                cu[i + 1] = cu[i].wrapping_add(q);
                mx = mx.max(s);
                self.cache_seqlens[req + i] = kv;
                acc_k = acc_k.wrapping_add(kv);
                self.cu_seqlens_k[cu_off + 1 + i] = acc_k;
                let lo = i64::from(kv) - i64::from(qe) + 1;
                let row = |j: i32| kv.wrapping_sub(qe).wrapping_add(1).wrapping_add(j);
                let run = if lo >= i64::from(i32::MIN) {
                    clamped_run_sum(lo, i64::from(qe), i64::from(topk))
                } else {
                    (0..qe).fold(0i32, |a, j| a.wrapping_add(row(j).min(topk)))
                };
                let r0 = if uniform { i * d as usize } else { cu[i] as usize };
                let mut a = acc_c;
                for j in 0..qe.max(0) {
                    let r = r0 + j as usize;
                    if r >= rows_cap {
                        break;
                    }
                    let (v, c) = (row(j), row(j).min(topk));
                    a = a.wrapping_add(c);
                    self.expanded[row_off + r] = v;
                    self.nsa_cache[row_off + r] = c;
                    self.nsa_cu[ncu + 1 + r] = a;
                }
                acc_c = acc_c.wrapping_add(run);
            }
            let max_k = mx.wrapping_add(draft);
            let n_page = (cu[bs].max(0) as usize).min(rows_cap);
            let request_of = |r: usize| -> usize { cu[..bs].partition_point(|&c| c as usize <= r) - 1 };
            if write_page != 0 && max_k > 0 {
                let cols = (max_k as usize).min(w);
                let base = self.page_off[k] as usize;
                for r in 0..n_page {
                    let p = self.rpi[req + request_of(r)] as usize;
                    for col in 0..cols {
                        self.page_table[base + r * w + col] = r2t[p * r2t_stride + col];
                    }
                }
            }
        }
    }
}

/// `Σ_{j < q} min(lo + j, topk)` reduced mod 2^32, as `nsa_builders.cu`'s
/// `clamped_run_sum`: the exact sum in 64 bits (valid while no `lo + j` leaves int32, which
/// the callers check), equal to the wrapping int32 sum of the same terms in any order
/// (`torch.cumsum(dtype=int32)` of the rows' `nsa_cache_seqlens`).
pub fn clamped_run_sum(lo: i64, q: i64, topk: i64) -> i32 {
    let m = (topk - lo).clamp(0, q.max(0));
    // Mod 2^64 is enough (only the low 32 bits are kept); m (m - 1) / 2 is exact.
    let sum = m.wrapping_mul(lo).wrapping_add(m * (m - 1) / 2).wrapping_add((q - m).wrapping_mul(topk));
    sum as i32
}

/// Buffer capacities of a [`NsaDevice`] (elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub cases: usize,
    pub reqs: usize,
    pub rows: usize,
    pub page: usize,
}

impl Capacity {
    /// Whether `p` plus a case of footprint `f` still fits.
    pub fn fits(&self, p: &Packed, f: [usize; 5]) -> bool {
        p.cases < self.cases
            && p.seq_lens.len() + f[0] <= self.reqs
            && p.cu_seqlens_k.len() + f[1] <= self.reqs + self.cases
            && p.expanded.len() + f[2] <= self.rows
            && p.nsa_cu.len() + f[3] <= self.rows + self.cases
            && p.page_table.len() + f[4] <= self.page
    }

    /// Exactly one packed batch.
    pub fn of(p: &Packed) -> Capacity {
        Capacity { cases: p.cases, reqs: p.seq_lens.len(), rows: p.expanded.len(), page: p.page_table.len() }
    }
}

/// The persistent device buffers of the NSA builders and the graphs captured on them.
pub struct NsaDevice {
    // Declared first: dropped before the buffers they point into.
    graphs: Vec<(String, CudaGraph)>,
    pub cap: Capacity,
    /// Blocks sharing each case's page-table copy (`gridDim.y`; 1 for batched runs).
    pub page_split: u32,
    /// Set by [`NsaDevice::bake`]: graphs run the `*_fixed_*` entries with this header and
    /// page offset as kernel parameters (one graph per case, as SGLang captures one graph per
    /// batch size) instead of reading `meta` and `hdr`.
    baked: Option<(HdrArg, i64)>,
    meta: DevBuf<i32>,
    hdr: DevBuf<i32>,
    page_off: DevBuf<i64>,
    seq_lens: DevBuf<i32>,
    accept: DevBuf<i32>,
    rpi: DevBuf<i32>,
    r2t: DevBuf<i32>,
    cache_seqlens: DevBuf<i32>,
    cu_seqlens_k: DevBuf<i32>,
    page_table: DevBuf<i32>,
    expanded: DevBuf<i32>,
    nsa_cache: DevBuf<i32>,
    nsa_cu: DevBuf<i32>,
}

impl NsaDevice {
    /// Allocates every buffer at `cap` and uploads the `req_to_token` pool.
    pub fn new(dev: &Device, cap: Capacity) -> Result<NsaDevice> {
        let mut d = NsaDevice {
            graphs: Vec::new(),
            cap,
            page_split: 1,
            baked: None,
            meta: DevBuf::new(dev, "meta", 4)?,
            hdr: DevBuf::new(dev, "hdr", cap.cases * HDR)?,
            page_off: DevBuf::new(dev, "page_off", cap.cases)?,
            seq_lens: DevBuf::new(dev, "seq_lens", cap.reqs)?,
            accept: DevBuf::new(dev, "accept_length", cap.reqs)?,
            rpi: DevBuf::new(dev, "req_pool_indices", cap.reqs)?,
            r2t: DevBuf::new(dev, "req_to_token", POOL_SIZE * R2T_STRIDE)?,
            cache_seqlens: DevBuf::new(dev, "cache_seqlens", cap.reqs)?,
            cu_seqlens_k: DevBuf::new(dev, "cu_seqlens_k", cap.reqs + cap.cases)?,
            page_table: DevBuf::new(dev, "page_table_1", cap.page)?,
            expanded: DevBuf::new(dev, "nsa_seqlens_expanded", cap.rows)?,
            nsa_cache: DevBuf::new(dev, "nsa_cache_seqlens", cap.rows)?,
            nsa_cu: DevBuf::new(dev, "nsa_cu_seqlens_k", cap.rows + cap.cases)?,
        };
        d.r2t.put(dev, &req_to_token())?;
        Ok(d)
    }
}

impl GraphedBuilder for NsaDevice {
    type Packed = Packed;

    fn launch(&mut self, dev: &Device, entry: &str, grid: u32) -> Result<()> {
        let stride = R2T_STRIDE as i32;
        let (f, threads, grid) = match &self.baked {
            Some((h, _)) => {
                let t = fixed_threads(h.0[3].max(0) as usize, h.0[5] != 0);
                (dev.function(&format!("{entry}_fixed_{t}"))?, t, 1)
            }
            None => (dev.function(entry)?, 512, grid.max(1)),
        };
        let mut l = dev.stream.launch_builder(f);
        match &self.baked {
            Some((h, off)) => l.arg(h).arg(off),
            None => l.arg(&self.meta.d).arg(&self.hdr.d).arg(&self.page_off.d),
        };
        l.arg(&self.seq_lens.d);
        l.arg(&self.accept.d).arg(&self.rpi.d).arg(&self.r2t.d).arg(&stride);
        l.arg(&mut self.cache_seqlens.d).arg(&mut self.cu_seqlens_k.d).arg(&mut self.page_table.d);
        l.arg(&mut self.expanded.d).arg(&mut self.nsa_cache.d).arg(&mut self.nsa_cu.d);
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (grid, self.page_split.max(1), 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match nsa_meta_*'s parameter list (the `_fixed_` entries take
        // the header and page offset by value in place of meta / hdr / page_off); every
        // header offset was produced by `Packed::push` within the capacities checked by
        // `stage` (`bake` checks the baked one).
        unsafe { l.launch(cfg) }?;
        Ok(())
    }

    /// Stages a packed batch (inputs and the outputs' initial contents).
    fn stage(&mut self, dev: &Device, p: &Packed) -> Result<()> {
        self.check_fits(p)?;
        self.meta.put(dev, &[p.cases as i32, 0, 0, 0])?;
        self.hdr.put(dev, &p.hdr)?;
        self.page_off.put(dev, &p.page_off)?;
        self.seq_lens.put(dev, &p.seq_lens)?;
        self.accept.put(dev, &p.accept)?;
        self.rpi.put(dev, &p.rpi)?;
        self.cache_seqlens.put(dev, &p.cache_seqlens)?;
        self.cu_seqlens_k.put(dev, &p.cu_seqlens_k)?;
        self.page_table.put(dev, &p.page_table)?;
        self.expanded.put(dev, &p.expanded)?;
        self.nsa_cache.put(dev, &p.nsa_cache)?;
        self.nsa_cu.put(dev, &p.nsa_cu)?;
        Ok(())
    }

    /// Reads every output buffer back into `p` (synchronizes).
    fn read(&self, dev: &Device, p: &mut Packed) -> Result<()> {
        self.cache_seqlens.get(dev, &mut p.cache_seqlens)?;
        self.cu_seqlens_k.get(dev, &mut p.cu_seqlens_k)?;
        self.page_table.get(dev, &mut p.page_table)?;
        self.expanded.get(dev, &mut p.expanded)?;
        self.nsa_cache.get(dev, &mut p.nsa_cache)?;
        self.nsa_cu.get(dev, &mut p.nsa_cu)?;
        dev.stream.synchronize()?;
        Ok(())
    }

    fn check_fits(&self, p: &Packed) -> Result<()> {
        let c = &self.cap;
        if p.cases > c.cases || p.seq_lens.len() > c.reqs || p.expanded.len() > c.rows || p.page_table.len() > c.page {
            return Err(ExecError::InvalidInput(format!("NSA batch of {} cases exceeds the buffers {c:?}", p.cases)));
        }
        Ok(())
    }

    fn cases_of(p: &Packed) -> usize {
        p.cases
    }

    /// The `*_fixed_*` entries take the header and the page-table offset by value.
    fn set_baked(&mut self, p: Option<&Packed>) -> Result<()> {
        self.baked = p.map(|p| super::first_header(&p.hdr).map(|h| (HdrArg(h), p.page_off[0]))).transpose()?;
        Ok(())
    }

    super::graphed_fields!();

    fn graph_key(&self, entry: &str, grid: u32) -> String {
        match &self.baked {
            Some((h, off)) => format!("{entry}/fixed {:?} @{off}x{}", h.0, self.page_split),
            None => format!("{entry}/{grid}x{}", self.page_split),
        }
    }
}

/// One case on the device: the padded replay of `variant`'s kernel, as an outcome
/// (`Error` with SGLang's raise when the host would refuse it: nothing is launched).
pub fn device_outcome(
    dev: &Device,
    nd: &mut NsaDevice,
    case: &NsaCase,
    variant: NsaVariant,
) -> Result<Outcome<GraphBuffers>> {
    if raises(case).is_some() {
        // The host runs SGLang's torch ops before the replay: they raise, with torch's message.
        return Ok(cases::replay_outcome(case, NsaVariant::Reference));
    }
    let mut p = Packed::default();
    p.push(case, true).map_err(ExecError::InvalidInput)?;
    nd.run(dev, entry(variant), &mut p, 1)?;
    Ok(Outcome::Values(p.unpack(0)))
}

/// [`device_outcome`] through a graph captured for this case alone, its header baked into
/// the `*_fixed_*` entry's parameters (SGLang's one graph per captured batch size).
pub fn device_outcome_baked(
    dev: &Device,
    nd: &mut NsaDevice,
    case: &NsaCase,
    variant: NsaVariant,
) -> Result<Outcome<GraphBuffers>> {
    if raises(case).is_some() {
        return Ok(cases::replay_outcome(case, NsaVariant::Reference));
    }
    let mut p = Packed::default();
    p.push(case, true).map_err(ExecError::InvalidInput)?;
    nd.run_baked(dev, entry(variant), &mut p)?;
    Ok(Outcome::Values(p.unpack(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use specreplay_sim::builders::cases::replay_outcome;
    use specreplay_sim::builders::nsa::{NsaBatch, NsaParams};

    #[test]
    fn a_baked_graph_gets_the_smallest_block_covering_its_batch() {
        let t: Vec<u32> = [1, 32, 33, 64, 65, 128, 200, 256, 257, 512, 1024].map(|b| fixed_threads(b, false)).to_vec();
        assert_eq!(t, [32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 512]);
        assert!([1, 32, 256, 1024].iter().all(|&b| fixed_threads(b, true) == 512));
        // The kernel's `struct NsaHdr { int w[NSA_HDR]; }`, passed by value.
        assert_eq!(std::mem::size_of::<HdrArg>(), 4 * HDR);
    }

    #[test]
    fn the_closed_form_run_sum_equals_the_wrapping_row_sum() {
        // Every regime: all rows below the clamp, all above, straddling it, negative starts,
        // starts at INT_MIN, rows ending at INT_MAX, sums that wrap int32, q = 0.
        let mut rng = specreplay_sim::splitmix::Rng::new(17);
        let edges = [i64::from(i32::MIN), -5_000, -1, 0, 1, 2048, i64::from(i32::MAX) - 4_000];
        for case in 0..20_000u32 {
            let q = i64::from(rng.range(0, 4_000) as u32);
            let lo = if case % 3 == 0 {
                edges[case as usize % edges.len()]
            } else {
                i64::from(i32::MIN) + rng.range(0, u32::MAX as u64 - 4_000) as i64
            };
            let topk = match case % 4 {
                0 => lo + q / 2,
                1 => i64::from(rng.range(0, 1 << 20) as u32),
                2 => i64::from(i32::MIN) + rng.range(0, u32::MAX as u64) as i64,
                _ => i64::from(i32::MAX),
            };
            let topk = topk.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
            assert!(lo + q - 1 <= i64::from(i32::MAX));
            let direct = (0..q).fold(0i32, |a, j| a.wrapping_add(((lo + j).min(topk)) as i32));
            assert_eq!(clamped_run_sum(lo, q, topk), direct, "lo {lo} q {q} topk {topk}");
        }
    }

    pub(crate) fn case(mode: NsaMode, d: i32, seq: &[i32], acc: &[i32], captured: usize) -> NsaCase {
        NsaCase {
            mode,
            params: NsaParams { num_draft_tokens: d, nsa_index_topk: 2048, max_context_len: cases::MAX_CONTEXT_LEN },
            batch: NsaBatch {
                seq_lens: seq.to_vec(),
                accept_length: acc.to_vec(),
                req_pool_indices: (1..=seq.len()).map(|i| i % POOL_SIZE).collect(),
            },
            captured_bs: captured,
        }
    }

    fn twin(cases: &[NsaCase], variant: NsaVariant) -> Vec<Outcome<GraphBuffers>> {
        let mut p = Packed::default();
        for c in cases.iter().filter(|c| raises(c).is_none()) {
            p.push(c, true).unwrap();
        }
        p.run_twin(variant == NsaVariant::UniformQo, &req_to_token(), R2T_STRIDE);
        let mut k = 0;
        cases
            .iter()
            .map(|c| match raises(c) {
                Some(w) => Outcome::Error(w),
                None => {
                    k += 1;
                    Outcome::Values(p.unpack(k - 1))
                }
            })
            .collect()
    }

    #[test]
    fn pack_then_unpack_is_the_capture_state() {
        let c = case(NsaMode::DraftExtend, 3, &[5, 2], &[1, 2], 4);
        let mut p = Packed::default();
        p.push(&c, true).unwrap();
        p.push(&c, true).unwrap();
        assert_eq!(p.unpack(1), GraphBuffers::captured(4, &c.params));
    }

    #[test]
    fn the_twin_equals_the_simulators_replay_model_batched() {
        // Random wide-domain cases (the agreement generator), many per packed batch.
        let mut rng = specreplay_sim::splitmix::Rng::new(17);
        for mode in [NsaMode::TargetVerify, NsaMode::DraftExtend] {
            let cs: Vec<NsaCase> =
                (0..400).map(|_| super::super::agreement::random_nsa_case(&mut rng, mode, 64)).collect();
            for v in [NsaVariant::General, NsaVariant::UniformQo] {
                let got = twin(&cs, v);
                for (c, g) in cs.iter().zip(&got) {
                    match (g, &replay_outcome(c, v)) {
                        (Outcome::Error(_), Outcome::Error(_)) => {}
                        (g, m) => assert_eq!(g, m, "{mode:?} {v:?} {c:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn raises_exactly_when_the_simulator_raises() {
        let mut rng = specreplay_sim::splitmix::Rng::new(5);
        let mut seen = [0usize; 2];
        for _ in 0..3000 {
            let mode = if rng.range(0, 1) == 0 { NsaMode::TargetVerify } else { NsaMode::DraftExtend };
            let c = super::super::agreement::random_nsa_case(&mut rng, mode, 32);
            let sim_raises = matches!(replay_outcome(&c, NsaVariant::Reference), Outcome::Error(_));
            assert_eq!(raises(&c).is_some(), sim_raises, "{c:?}");
            seen[sim_raises as usize] += 1;
        }
        assert!(seen[0] > 100 && seen[1] > 10, "both kinds generated: {seen:?}");
    }

    #[test]
    fn the_seed_002_case_is_wrong_only_in_the_uniform_qo_twin() {
        // bs 1, D 2, seq_lens [1], accept [1]: expanded[0] must be 1; uniform-qo writes 0.
        let c = case(NsaMode::DraftExtend, 2, &[1], &[1], 1);
        let g = twin(std::slice::from_ref(&c), NsaVariant::General);
        let u = twin(std::slice::from_ref(&c), NsaVariant::UniformQo);
        let (Outcome::Values(g), Outcome::Values(u)) = (&g[0], &u[0]) else { panic!() };
        assert_eq!(g.seqlens_expanded, vec![1, 3], "row 1 keeps its capture-time value");
        assert_eq!(u.seqlens_expanded, vec![0, 1]);
        assert!(cases::check_nsa_replay_actual(&c, NsaVariant::General, &Outcome::Values(g.clone()), "twin").is_ok());
        let m =
            cases::check_nsa_replay_actual(&c, NsaVariant::UniformQo, &Outcome::Values(u.clone()), "twin").unwrap_err();
        assert_eq!(
            (m.field.as_str(), m.index, m.expected.as_str(), m.actual.as_str()),
            ("nsa_seqlens_expanded", Some(0), "1", "0")
        );
    }
}
