//! A tiny, Vec-based model of the handful of PyTorch tensor operations the seeds'
//! builders use: `arange`, `repeat_interleave`, `cumsum`, `cat`, `max`, `clamp`,
//! `topk`, `split`, gather, and `Tensor.copy_` into (a slice of) a preallocated buffer.
//!
//! Each function mirrors the *observable* behaviour of the torch op on 1-D / 2-D
//! integer or float tensors, including when torch raises. A raise is returned as a
//! [`TorchError`] whose message follows torch's wording, so a variant that raises where
//! the reference does not (or the other way round) shows up as a distinct outcome.
//!
//! Slicing follows Python semantics: `buf[a:b]` clamps `b` to the buffer length and
//! never raises. `dest.copy_(src)` requires `src` to be broadcastable *to* `dest`'s
//! shape: per dimension, `src_dim == dest_dim` or `src_dim == 1` (so a 1-element source
//! silently fills a longer destination, and a 1-element source even "fills" an empty one).

use std::cmp::Ordering;
use std::fmt;

/// A raised torch `RuntimeError` / `IndexError` / `ValueError`, with torch's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchError(pub String);

impl fmt::Display for TorchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `torch.arange(start, end)` (step 1). Raises when `end < start`, like torch
/// ("upper bound and larger bound inconsistent with step sign"); `end == start` is empty.
pub fn arange(start: i32, end: i32) -> Result<Vec<i32>, TorchError> {
    if end < start {
        return Err(TorchError(format!(
            "arange({start}, {end}): upper bound and larger bound inconsistent with step sign"
        )));
    }
    Ok((start..end).collect())
}

/// `torch.repeat_interleave(x, repeats=r)` with a Python-int `r` (dim 0).
pub fn repeat_interleave_scalar<T: Clone>(x: &[T], r: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len() * r);
    for v in x {
        for _ in 0..r {
            out.push(v.clone());
        }
    }
    out
}

/// `torch.repeat_interleave(x, repeats=t, dim=0)` with a per-element tensor `t`.
/// A zero count emits nothing for that element (seed 000's key observation).
pub fn repeat_interleave<T: Clone>(x: &[T], repeats: &[i32]) -> Result<Vec<T>, TorchError> {
    if repeats.len() != x.len() {
        return Err(TorchError(format!(
            "repeats must have the same size as input along dim, but got repeats.size(0) = {} and input.size(0) = {}",
            repeats.len(),
            x.len()
        )));
    }
    if repeats.iter().any(|&r| r < 0) {
        return Err(TorchError("repeats can not be negative".into()));
    }
    let total: usize = repeats.iter().map(|&r| r as usize).sum();
    let mut out = Vec::with_capacity(total);
    for (v, &r) in x.iter().zip(repeats) {
        for _ in 0..r {
            out.push(v.clone());
        }
    }
    Ok(out)
}

/// `torch.cumsum(x, dim=0, dtype=torch.int32)` (int32 wraps on overflow, as on device).
pub fn cumsum(x: &[i32]) -> Vec<i32> {
    let mut acc = 0i32;
    x.iter()
        .map(|&v| {
            acc = acc.wrapping_add(v);
            acc
        })
        .collect()
}

/// `compute_cu_seqlens(x)` (`nsa_backend_mtp_precompute.py`): a leading 0, then the cumsum.
pub fn cu_seqlens(x: &[i32]) -> Vec<i32> {
    let mut out = Vec::with_capacity(x.len() + 1);
    out.push(0);
    out.extend(cumsum(x));
    out
}

/// `torch.cat(list)`; an empty list raises, as in torch.
pub fn cat<T: Clone>(parts: &[Vec<T>]) -> Result<Vec<T>, TorchError> {
    if parts.is_empty() {
        return Err(TorchError("torch.cat(): expected a non-empty list of Tensors".into()));
    }
    Ok(parts.concat())
}

/// `x.max().item()`; an empty tensor raises, as in torch.
pub fn max(x: &[i32]) -> Result<i32, TorchError> {
    x.iter().copied().max().ok_or_else(|| {
        TorchError("max(): Expected reduction dim to be specified for input.numel() == 0. Specify the reduction dim with the 'dim' argument.".into())
    })
}

/// `x.clamp(max=m)`: clamps from above only; zero or negative values pass through.
pub fn clamp_max(x: &[i32], m: i32) -> Vec<i32> {
    x.iter().map(|&v| v.min(m)).collect()
}

/// The order `topk` uses in this model: larger score first; NaN counts as larger than
/// every number (torch's `topk` convention); equal scores (including `-0.0 == 0.0` and
/// NaN vs NaN) keep the **lower index first**. torch itself leaves tie order
/// unspecified (it differs between CPU and CUDA); specreplay pins it so that every
/// variant can be compared bit for bit.
pub fn score_order(a: (usize, f32), b: (usize, f32)) -> Ordering {
    let rank = |v: f32| -> (u8, f32) {
        if v.is_nan() {
            (1, 0.0)
        } else {
            (0, v)
        }
    };
    let (na, va) = rank(a.1);
    let (nb, vb) = rank(b.1);
    // Descending by score, then ascending by index.
    nb.cmp(&na).then_with(|| vb.partial_cmp(&va).unwrap_or(Ordering::Equal)).then_with(|| a.0.cmp(&b.0))
}

/// `torch.topk(row, k).indices` (sorted=True) with the tie-break of [`score_order`].
/// Raises when `k > len`, as torch does ("selected index k out of range").
pub fn topk_row(row: &[f32], k: usize) -> Result<Vec<i64>, TorchError> {
    if k > row.len() {
        return Err(TorchError(format!("topk: selected index k out of range (k = {k}, size = {})", row.len())));
    }
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut idx: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
    // Partial selection then a sort of the k winners: O(n + k log k), like a real topk.
    // `score_order` is a total order (index tie-break), so the selected set is unique.
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| score_order(a, b));
        idx.truncate(k);
    }
    idx.sort_by(|&a, &b| score_order(a, b));
    Ok(idx.into_iter().map(|(i, _)| i as i64).collect())
}

/// `torch.split(x, sizes)`; raises unless the sizes sum to `len(x)`.
pub fn split<T: Clone>(x: &[T], sizes: &[usize]) -> Result<Vec<Vec<T>>, TorchError> {
    let total: usize = sizes.iter().sum();
    if total != x.len() {
        return Err(TorchError(format!(
            "split_with_sizes expects split_sizes to sum exactly to {} (input tensor's size at dimension 0), but got split_sizes={sizes:?}",
            x.len()
        )));
    }
    let mut out = Vec::with_capacity(sizes.len());
    let mut at = 0;
    for &s in sizes {
        out.push(x[at..at + s].to_vec());
        at += s;
    }
    Ok(out)
}

/// The size of `buf[start:stop]` for a buffer of length `len` (Python slice clamping).
pub fn slice_len(len: usize, start: usize, stop: Option<usize>) -> usize {
    let stop = stop.unwrap_or(len).min(len);
    stop.saturating_sub(start.min(len))
}

fn broadcast_msg(dest: usize, src: usize, dim: usize) -> TorchError {
    TorchError(format!(
        "The size of tensor a ({dest}) must match the size of tensor b ({src}) at non-singleton dimension {dim}"
    ))
}

/// `buf[start:stop].copy_(src)` on a 1-D buffer. `stop = None` means `buf[start:]`
/// (so `copy_into(buf, 0, None, src)` is `buf.copy_(src)`).
pub fn copy_into<T: Clone>(buf: &mut [T], start: usize, stop: Option<usize>, src: &[T]) -> Result<(), TorchError> {
    let n = slice_len(buf.len(), start, stop);
    let s = start.min(buf.len());
    if src.len() == n {
        buf[s..s + n].clone_from_slice(src);
        Ok(())
    } else if src.len() == 1 {
        // Broadcast a single element over the whole destination slice.
        for v in &mut buf[s..s + n] {
            *v = src[0].clone();
        }
        Ok(())
    } else {
        Err(broadcast_msg(n, src.len(), 0))
    }
}

/// `buf[:rows, :cols].copy_(src)` on a 2-D row-major buffer (`buf[r]` is row `r`).
/// `rows`/`cols` = `None` means the whole dimension. Broadcasting per dimension.
pub fn copy_into_2d(
    buf: &mut [Vec<i32>],
    rows: Option<usize>,
    cols: Option<usize>,
    src: &[Vec<i32>],
) -> Result<(), TorchError> {
    let width = buf.first().map_or(0, Vec::len);
    let dr = slice_len(buf.len(), 0, rows);
    let dc = slice_len(width, 0, cols);
    let sr = src.len();
    // A 0-row source has no known width here; treat it as matching.
    let sc = src.first().map_or(dc, Vec::len);
    if !(sr == dr || sr == 1) {
        return Err(broadcast_msg(dr, sr, 0));
    }
    if !(sc == dc || sc == 1) {
        return Err(broadcast_msg(dc, sc, 1));
    }
    for r in 0..dr {
        let s = &src[if sr == 1 { 0 } else { r }];
        for c in 0..dc {
            buf[r][c] = s[if sc == 1 { 0 } else { c }];
        }
    }
    Ok(())
}

/// `table[rows, :cols]` (advanced row indexing, then a clamped column slice).
pub fn index_rows(table: &[Vec<i32>], rows: &[usize], cols: usize) -> Result<Vec<Vec<i32>>, TorchError> {
    rows.iter()
        .map(|&r| {
            let row = table.get(r).ok_or_else(|| {
                TorchError(format!("index {r} is out of bounds for dimension 0 with size {}", table.len()))
            })?;
            Ok(row[..cols.min(row.len())].to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_interleave_skips_zero_counts() {
        // Seed 000, step 4: repeat_interleave([0, 2, 2], [2, 0, 1]) = [0, 0, 2].
        assert_eq!(repeat_interleave(&[0, 2, 2], &[2, 0, 1]).unwrap(), vec![0, 0, 2]);
    }

    #[test]
    fn copy_broadcasts_single_element_and_rejects_mismatch() {
        let mut buf = vec![9; 4];
        copy_into(&mut buf, 0, None, &[5]).unwrap();
        assert_eq!(buf, vec![5, 5, 5, 5]);
        let err = copy_into(&mut buf, 0, Some(10), &[1, 2, 3, 4, 5]).unwrap_err();
        assert!(err.0.contains("size of tensor a (4)"), "{err}");
        // buf[:2].copy_([7, 8]) leaves the tail alone.
        copy_into(&mut buf, 0, Some(2), &[7, 8]).unwrap();
        assert_eq!(buf, vec![7, 8, 5, 5]);
    }

    #[test]
    fn topk_breaks_ties_by_lower_index() {
        assert_eq!(topk_row(&[0.5, 0.9, 0.5, 0.9], 3).unwrap(), vec![1, 3, 0]);
        assert_eq!(topk_row(&[0.0, f32::NAN, -0.0], 3).unwrap(), vec![1, 0, 2]);
        assert!(topk_row(&[1.0], 2).is_err());
    }
}
