//! Sink + heavy-hitter + window sparse indices and weights, seed 003 (the PQCache
//! indexer of skylight-org/sparse-attention-hub,
//! `sparse_attention/efficient_attention/implementations/pqcache/workspace/iter-*/optimized_indexer.py`).
//!
//! Per (batch `b`, head `h`):
//! `sparse_list[b][h] = [0 .. sink) ++ (topk_heavy[b][h] + init_offset) ++ [sk - window .. sk)`,
//! `sparse_len[b][h] = len(sparse_list[b][h])`, and `weight_list[b][h][sk]` is 0.0 except
//! 1.0 at every listed index (a duplicate index writes 1.0 twice: idempotent).
//!
//! Defined edge cases (the reference mirrors iter-9's torch code, which clamps like the
//! native version: `actual_sink = min(sink, sk)`, `actual_window = min(window, sk)`):
//! * **Overlap / `sk < sink + window`**: the window starts inside the sink; the list keeps
//!   the duplicates (no dedup, no sort), so `Σ weight_list[b][h] < sparse_len[b][h]`.
//! * **`sink > sk` or `window > sk`**: clamped to `sk` (the window then is the whole row).
//! * **heavy size 0**: no heavy segment.
//! * **heavy index + init_offset outside `[0, sk)`**: [`BuilderError::HeavyIndexOutOfRange`]
//!   (torch's advanced indexing would raise a device-side assert).
//!
//! Variants:
//! * `reference`: iter-9, three `arange`/copy fills then one advanced-index scatter
//!   `weight_list[batch_idx, head_idx, sparse_list] = 1.0`.
//! * `fused-kernel`: iter-11's single Triton kernel *as written in seed 003*: one program
//!   per (b, h) that picks the region of each offset with `tl.where` and scatters 1.0.
//!   It is launched with the raw `sink_size` / `window_size`, so when either exceeds `sk`
//!   it produces indices outside the row and stores out of bounds
//!   ([`BuilderError::OutOfBoundsStore`]): known to disagree with the reference.
//! * `fused-kernel-clamped`: the same kernel launched with `min(sink, sk)` and
//!   `min(window, sk)`; agrees with the reference everywhere.

use super::BuilderError;

/// The variants of seed 003.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SparseVariant {
    Reference,
    FusedKernel,
    FusedKernelClamped,
}

impl SparseVariant {
    pub const ALL: [SparseVariant; 3] =
        [SparseVariant::Reference, SparseVariant::FusedKernel, SparseVariant::FusedKernelClamped];
    pub fn name(self) -> &'static str {
        match self {
            SparseVariant::Reference => "reference",
            SparseVariant::FusedKernel => "fused-kernel",
            SparseVariant::FusedKernelClamped => "fused-kernel-clamped",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// Inputs of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseInput {
    pub b: usize,
    pub h: usize,
    /// Number of keys.
    pub sk: usize,
    pub sink: usize,
    pub window: usize,
    pub heavy_size: usize,
    pub init_offset: usize,
    /// `topk` heavy-hitter indices `[b][h][heavy_size]`, relative to `init_offset`.
    pub heavy: Vec<Vec<Vec<i64>>>,
}

/// Outputs of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseOutput {
    /// `[b][h][L]`
    pub sparse_list: Vec<Vec<Vec<i64>>>,
    /// `[b][h]`
    pub sparse_len: Vec<Vec<usize>>,
    /// `[b][h][sk]`
    pub weight_list: Vec<Vec<Vec<f32>>>,
}

fn validate_shape(x: &SparseInput) -> Result<(), BuilderError> {
    if x.heavy.len() != x.b || x.heavy.iter().any(|r| r.len() != x.h || r.iter().any(|t| t.len() != x.heavy_size)) {
        return Err(BuilderError::Shape(format!("topk heavy indices must be [{}][{}][{}]", x.b, x.h, x.heavy_size)));
    }
    Ok(())
}

/// Runs the chosen variant.
pub fn build(variant: SparseVariant, x: &SparseInput) -> Result<SparseOutput, BuilderError> {
    validate_shape(x)?;
    let out = match variant {
        SparseVariant::Reference => reference(x)?,
        SparseVariant::FusedKernel => fused(x, x.sink, x.window)?,
        SparseVariant::FusedKernelClamped => fused(x, x.sink.min(x.sk), x.window.min(x.sk))?,
    };
    debug_assert!(out.weight_list.iter().flatten().all(|w| w.len() == x.sk));
    Ok(out)
}

fn reference(x: &SparseInput) -> Result<SparseOutput, BuilderError> {
    let sink = x.sink.min(x.sk);
    let window = x.window.min(x.sk);
    let len = sink + x.heavy_size + window;
    // Heavy indices must land in [0, sk) (advanced indexing would assert on device).
    for (bi, rows) in x.heavy.iter().enumerate() {
        for (hi, t) in rows.iter().enumerate() {
            for (slot, &v) in t.iter().enumerate() {
                let index = v + x.init_offset as i64;
                if index < 0 || index >= x.sk as i64 {
                    return Err(BuilderError::HeavyIndexOutOfRange { batch: bi, head: hi, slot, index, sk: x.sk });
                }
            }
        }
    }
    // sparse_list = torch.empty(b, h, len); sink fill; heavy copy; window fill.
    let mut sparse_list = vec![vec![vec![0i64; len]; x.h]; x.b];
    for (bi, rows) in sparse_list.iter_mut().enumerate() {
        for (hi, row) in rows.iter_mut().enumerate() {
            for (i, v) in row[..sink].iter_mut().enumerate() {
                *v = i as i64;
            }
            for (i, v) in row[sink..sink + x.heavy_size].iter_mut().enumerate() {
                *v = x.heavy[bi][hi][i] + x.init_offset as i64;
            }
            for (i, v) in row[sink + x.heavy_size..].iter_mut().enumerate() {
                *v = (x.sk - window + i) as i64;
            }
        }
    }
    // weight_list = zeros; weight_list[batch_idx, head_idx, sparse_list] = 1.0
    let mut weight_list = vec![vec![vec![0f32; x.sk]; x.h]; x.b];
    for (bi, rows) in sparse_list.iter().enumerate() {
        for (hi, row) in rows.iter().enumerate() {
            for &idx in row {
                weight_list[bi][hi][idx as usize] = 1.0;
            }
        }
    }
    Ok(SparseOutput { sparse_len: vec![vec![len; x.h]; x.b], sparse_list, weight_list })
}

/// The fused kernel: one program per (b, h) pair, `sink_size` / `window_size` as launched.
fn fused(x: &SparseInput, sink_size: usize, window_size: usize) -> Result<SparseOutput, BuilderError> {
    let total = sink_size + x.heavy_size + window_size;
    let mut sparse_list = vec![vec![vec![0i64; total]; x.h]; x.b];
    let mut weight_list = vec![vec![vec![0f32; x.sk]; x.h]; x.b];
    for pid in 0..x.b * x.h {
        let (bi, hi) = (pid / x.h, pid % x.h);
        let row = &mut sparse_list[bi][hi];
        let window_start = x.sk as i64 - window_size as i64;
        for (off, slot) in row.iter_mut().enumerate() {
            let in_sink = off < sink_size;
            let in_heavy = !in_sink && off < sink_size + x.heavy_size;
            *slot = if in_sink {
                off as i64
            } else if in_heavy {
                x.heavy[bi][hi][off - sink_size] + x.init_offset as i64
            } else {
                window_start + (off - sink_size - x.heavy_size) as i64
            };
        }
        // Scatter 1.0 at every listed index (races are benign: every write is 1.0).
        for &idx in row.iter() {
            if idx < 0 || idx >= x.sk as i64 {
                return Err(BuilderError::OutOfBoundsStore { batch: bi, head: hi, index: idx, sk: x.sk });
            }
            weight_list[bi][hi][idx as usize] = 1.0;
        }
    }
    Ok(SparseOutput { sparse_len: vec![vec![total; x.h]; x.b], sparse_list, weight_list })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_keeps_duplicates_and_weights_are_idempotent() {
        // sk = 4, sink 2, window 3: [0, 1] ++ [5-?] ... heavy [[[0]]] + offset 1 -> 1.
        let x = SparseInput {
            b: 1,
            h: 1,
            sk: 4,
            sink: 2,
            window: 3,
            heavy_size: 1,
            init_offset: 1,
            heavy: vec![vec![vec![0]]],
        };
        let out = build(SparseVariant::Reference, &x).unwrap();
        assert_eq!(out.sparse_list[0][0], vec![0, 1, 1, 1, 2, 3]);
        assert_eq!(out.sparse_len[0][0], 6);
        assert_eq!(out.weight_list[0][0], vec![1.0, 1.0, 1.0, 1.0]);
    }
}
