//! Buffer capacities, the `counts` layout, and the host mirror of every persistent
//! device buffer ([`HostBuffers`]): the CPU references run on it and the self-test
//! compares it with what the device holds, tails included.
//!
//! Integer types follow vLLM 0.12.0 (`gpu_model_runner.py`, `block_table.py`): token ids
//! int32, positions int64, slot mapping int64, block table int32, `query_start_loc`,
//! `seqused_k`, `logits_indices` and the sampler output int32. The trace keeps its i64
//! view; widening is lossless.

use crate::error::{ExecError, Result};

/// Index of the real batch rows in `counts`.
pub const C_NUM_REQS: usize = 0;
/// Request rows of the attention metadata (FULL: padded; else = num_reqs).
pub const C_META_REQS: usize = 1;
/// Tokens of the attention metadata (FULL: padded; else the real total).
pub const C_META_TOKENS: usize = 2;
/// Sampled positions (sum of `num_sampled`).
pub const C_NUM_LOGITS: usize = 3;
/// Rejection-sampler row width (max drafts + 1 with speculation, else 1).
pub const C_WIDTH: usize = 4;
/// Tokens the forward pass runs over (the graph's size).
pub const C_PADDED_TOKENS: usize = 5;
/// Length of `counts`.
pub const NUM_COUNTS: usize = 8;

/// `counters[CTR_MISMATCH]`: verified context positions that disagree with the recorded row.
pub const CTR_MISMATCH: usize = 0;
/// `counters[CTR_EXHAUSTED]`: sampled positions past the recorded continuation.
pub const CTR_EXHAUSTED: usize = 1;
/// `counters[CTR_OUT_OF_RANGE]`: cache accesses outside the cache or past `seqused_k`.
pub const CTR_OUT_OF_RANGE: usize = 2;
/// Length of `counters`.
pub const NUM_COUNTERS: usize = 4;

/// The fixed sizes of every persistent buffer (engine constants, frozen at allocation and
/// at graph capture).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Batch rows (`max_num_seqs`).
    pub max_num_seqs: usize,
    /// Token-table row stride (`max_model_len`).
    pub max_model_len: usize,
    /// Block-table row stride (`cdiv(max_model_len, block_size)`).
    pub blocks_per_row: usize,
    pub block_size: usize,
    /// Token buffers (`max(max_num_batched_tokens, largest capture size)`); also bounds the
    /// metadata's padded request rows.
    pub max_tokens: usize,
    /// Paged token-cache blocks (`num_gpu_blocks`).
    pub num_blocks: usize,
    /// Logits rows held at once.
    pub max_logits: usize,
    /// Logits row width (vocabulary size).
    pub vocab: usize,
    /// Sampler output row stride (`num_speculative_tokens + 1`).
    pub max_width: usize,
}

impl Capacity {
    /// Row stride of the recorded-continuation table (positions 0..=max_model_len).
    pub fn expected_stride(&self) -> usize {
        self.max_model_len + 1
    }
    pub fn cache_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }
    fn check(&self) -> Result<()> {
        let ok = self.max_num_seqs > 0
            && self.max_model_len > 0
            && self.block_size > 0
            && self.blocks_per_row * self.block_size >= self.max_model_len
            && self.max_tokens > 0
            && self.max_width > 0
            && self.max_model_len < i32::MAX as usize
            && self.max_tokens < i32::MAX as usize
            && self.vocab < i32::MAX as usize
            && (self.max_logits as u64) * (self.vocab as u64) < (1 << 40);
        if ok {
            Ok(())
        } else {
            Err(ExecError::InvalidInput(format!("unusable buffer capacities {self:?}")))
        }
    }
}

macro_rules! host_buffers {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty = |$c:ident| $len:expr ),* $(,)?) => {
        /// Host mirror of every persistent device buffer, field for field.
        #[derive(Debug, Clone, PartialEq)]
        pub struct HostBuffers {
            pub cap: Capacity,
            $( $(#[$doc])* pub $name: Vec<$ty>, )*
        }

        impl HostBuffers {
            /// Every buffer at its capacity, zero-filled.
            pub fn zeroed(cap: Capacity) -> Result<Self> {
                cap.check()?;
                Ok(HostBuffers { cap, $( $name: { #[allow(unused_variables)] let $c = &cap; vec![<$ty>::default(); $len] }, )* })
            }

            /// Names of the buffers whose contents differ between `self` and `other`, with
            /// the first differing index.
            pub fn differences(&self, other: &HostBuffers) -> Vec<(&'static str, usize)> {
                let mut d = Vec::new();
                $(
                    if let Some(i) = self.$name.iter().zip(&other.$name).position(|(a, b)| a.bits_ne(b)) {
                        d.push((stringify!($name), i));
                    } else if self.$name.len() != other.$name.len() {
                        d.push((stringify!($name), self.$name.len().min(other.$name.len())));
                    }
                )*
                d
            }
        }

        /// Device twin of [`HostBuffers`]: the persistent buffers, allocated once at
        /// capacity and never reallocated (CUDA graphs hold their addresses).
        pub struct DeviceBuffers {
            pub cap: Capacity,
            $( pub $name: cudarc::driver::CudaSlice<$ty>, )*
        }

        impl DeviceBuffers {
            /// Allocates every buffer and fills it with `h`'s contents.
            pub fn upload(stream: &std::sync::Arc<cudarc::driver::CudaStream>, h: &HostBuffers) -> Result<Self> {
                Ok(DeviceBuffers { cap: h.cap, $( $name: stream.clone_htod(&h.$name)?, )* })
            }

            /// Overwrites every buffer with `h`'s contents (same capacity), in place.
            pub fn write(&mut self, stream: &std::sync::Arc<cudarc::driver::CudaStream>, h: &HostBuffers) -> Result<()> {
                if h.cap != self.cap {
                    return Err(ExecError::InvalidInput(format!("capacity {:?} != buffers {:?}", h.cap, self.cap)));
                }
                $( stream.memcpy_htod(&h.$name, &mut self.$name)?; )*
                Ok(())
            }

            /// Reads every buffer back.
            pub fn download(&self, stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> Result<HostBuffers> {
                let h = HostBuffers { cap: self.cap, $( $name: stream.clone_dtoh(&self.$name)?, )* };
                stream.synchronize()?;
                Ok(h)
            }
        }
    };
}

/// Bitwise inequality (f32 compared by bits, so -0.0 != 0.0 and NaNs compare).
pub trait BitsNe {
    fn bits_ne(&self, other: &Self) -> bool;
}
impl BitsNe for i32 {
    fn bits_ne(&self, other: &Self) -> bool {
        self != other
    }
}
impl BitsNe for i64 {
    fn bits_ne(&self, other: &Self) -> bool {
        self != other
    }
}
impl BitsNe for u32 {
    fn bits_ne(&self, other: &Self) -> bool {
        self != other
    }
}
impl BitsNe for f32 {
    fn bits_ne(&self, other: &Self) -> bool {
        self.to_bits() != other.to_bits()
    }
}

host_buffers! {
    /// Per-step sizes (see the `C_*` indices); every kernel reads its loop bounds here.
    counts: i32 = |c| NUM_COUNTS,
    /// `token_ids_cpu` mirror: `[max_num_seqs x max_model_len]`.
    token_table: i32 = |c| c.max_num_seqs * c.max_model_len,
    /// Persistent block table: `[max_num_seqs x blocks_per_row]`.
    block_table: i32 = |c| c.max_num_seqs * c.blocks_per_row,
    /// Per row: tokens whose KV is computed before this step.
    num_computed: i32 = |c| c.max_num_seqs,
    /// Per row + 1: cumulative scheduled tokens (`query_start_loc`, cu_seqlens_q unpadded).
    query_start_loc: i32 = |c| c.max_num_seqs + 1,
    /// Per row: sampled positions (drafts + 1 with speculation, else 1).
    num_sampled: i32 = |c| c.max_num_seqs,
    /// Per row: 1 when the row's sample is discarded (partial prefill).
    discard: i32 = |c| c.max_num_seqs,
    input_ids: i32 = |c| c.max_tokens,
    positions: i64 = |c| c.max_tokens,
    slot_mapping: i64 = |c| c.max_tokens,
    /// Attention metadata: per (padded) request row.
    seqused_k: i32 = |c| c.max_tokens,
    /// Exclusive prefix of `num_sampled` (+ total).
    cu_sampled: i32 = |c| c.max_num_seqs + 1,
    logits_indices: i32 = |c| c.max_tokens,
    /// Attention metadata: `cu_seqlens_q` over the (padded) request rows.
    cu_seqlens_q: i32 = |c| c.max_tokens + 1,
    /// Attention metadata block table: `[max_tokens x blocks_per_row]`, padded rows -1.
    meta_block_table: i32 = |c| c.max_tokens * c.blocks_per_row,
    /// `input_ids[:padded_tokens]` as the forward pass consumed them (written inside the graph).
    consumed_ids: i32 = |c| c.max_tokens,
    /// `positions[:padded_tokens]` as the forward pass consumed them.
    consumed_pos: i64 = |c| c.max_tokens,
    /// Paged token cache: `[num_blocks x block_size]`.
    token_cache: i32 = |c| c.num_blocks * c.block_size,
    /// Recorded continuation per row (prompt + outputs): `[max_num_seqs x (max_model_len + 1)]`.
    expected: i32 = |c| c.max_num_seqs * c.expected_stride(),
    expected_len: i32 = |c| c.max_num_seqs,
    /// `[max_logits x vocab]`.
    logits: f32 = |c| c.max_logits * c.vocab,
    argmax: i32 = |c| c.max_logits,
    /// Rejection-sampler rows: `[max_num_seqs x max_width]`, row stride = `counts[C_WIDTH]`.
    sampled: i32 = |c| c.max_num_seqs * c.max_width,
    counters: u32 = |c| NUM_COUNTERS,
}

/// One step's per-row inputs, as the host stages them (real rows only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepInput {
    pub num_computed: Vec<i32>,
    /// `num_reqs + 1` entries starting at 0.
    pub query_start_loc: Vec<i32>,
    pub num_sampled: Vec<i32>,
    pub discard: Vec<bool>,
    pub meta_reqs: usize,
    pub meta_tokens: usize,
    pub padded_tokens: usize,
    pub width: usize,
}

impl StepInput {
    pub fn num_reqs(&self) -> usize {
        self.num_computed.len()
    }
    pub fn num_tokens(&self) -> usize {
        self.query_start_loc.last().copied().unwrap_or(0) as usize
    }
    pub fn num_logits(&self) -> usize {
        self.num_sampled.iter().map(|&n| n as usize).sum()
    }

    /// Checks that the step fits `cap` and is self-consistent, so no kernel reads or
    /// writes out of bounds (block ids are checked by the kernels: out-of-range reads
    /// count in `counters`).
    pub fn validate(&self, cap: &Capacity) -> Result<()> {
        let n = self.num_reqs();
        let bad = |m: String| Err(ExecError::InvalidInput(m));
        if n > cap.max_num_seqs {
            return bad(format!("{n} rows > max_num_seqs {}", cap.max_num_seqs));
        }
        if self.query_start_loc.len() != n + 1 || self.num_sampled.len() != n || self.discard.len() != n {
            return bad("per-row vectors disagree in length".into());
        }
        if self.query_start_loc[0] != 0 {
            return bad("query_start_loc[0] != 0".into());
        }
        for r in 0..n {
            let q = self.query_start_loc[r + 1] - self.query_start_loc[r];
            let (c, s) = (self.num_computed[r], self.num_sampled[r]);
            if q < 1 || c < 0 || (c + q) as usize > cap.max_model_len {
                return bad(format!("row {r}: {c} computed + {q} scheduled outside 1..=max_model_len"));
            }
            if s < 1 || s > q || s as usize > self.width {
                return bad(format!("row {r}: {s} sampled with {q} scheduled, width {}", self.width));
            }
        }
        let total = self.num_tokens();
        if total > cap.max_tokens || self.meta_tokens > cap.max_tokens || self.padded_tokens > cap.max_tokens {
            return bad(format!("{total} tokens (padded {}) > buffers of {}", self.padded_tokens, cap.max_tokens));
        }
        if self.meta_reqs < n
            || self.meta_reqs > cap.max_tokens
            || self.meta_tokens < total
            || self.padded_tokens < total
        {
            return bad("metadata sizes smaller than the batch".into());
        }
        if self.num_logits() > cap.max_logits || self.width == 0 || self.width > cap.max_width {
            return bad(format!("{} logits rows / width {} over capacity", self.num_logits(), self.width));
        }
        Ok(())
    }

    /// Writes the step into the host mirror (counts and per-row inputs; rows past
    /// `num_reqs` keep their stale values, as the device's do).
    pub fn stage(&self, b: &mut HostBuffers) -> Result<()> {
        self.validate(&b.cap)?;
        let n = self.num_reqs();
        b.counts[C_NUM_REQS] = n as i32;
        b.counts[C_META_REQS] = self.meta_reqs as i32;
        b.counts[C_META_TOKENS] = self.meta_tokens as i32;
        b.counts[C_NUM_LOGITS] = self.num_logits() as i32;
        b.counts[C_WIDTH] = self.width as i32;
        b.counts[C_PADDED_TOKENS] = self.padded_tokens as i32;
        b.num_computed[..n].copy_from_slice(&self.num_computed);
        b.query_start_loc[..=n].copy_from_slice(&self.query_start_loc);
        b.num_sampled[..n].copy_from_slice(&self.num_sampled);
        for (d, &x) in b.discard[..n].iter_mut().zip(&self.discard) {
            *d = i32::from(x);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn small_cap() -> Capacity {
        Capacity {
            max_num_seqs: 4,
            max_model_len: 16,
            blocks_per_row: 4,
            block_size: 4,
            max_tokens: 16,
            num_blocks: 8,
            max_logits: 8,
            vocab: 11,
            max_width: 3,
        }
    }

    fn one_row() -> StepInput {
        StepInput {
            num_computed: vec![3],
            query_start_loc: vec![0, 3],
            num_sampled: vec![3],
            discard: vec![false],
            meta_reqs: 1,
            meta_tokens: 3,
            padded_tokens: 4,
            width: 3,
        }
    }

    #[test]
    fn validate_rejects_what_would_run_out_of_bounds() {
        let cap = small_cap();
        assert!(one_row().validate(&cap).is_ok());
        let mut s = one_row();
        s.num_computed = vec![14];
        assert!(s.validate(&cap).is_err(), "position past max_model_len");
        let mut s = one_row();
        s.num_sampled = vec![4];
        assert!(s.validate(&cap).is_err(), "more samples than scheduled tokens");
        let mut s = one_row();
        s.meta_reqs = 0;
        assert!(s.validate(&cap).is_err(), "metadata smaller than the batch");
        let mut s = one_row();
        s.width = 4;
        s.num_sampled = vec![3];
        assert!(s.validate(&cap).is_err(), "width past the sampler buffer");
    }

    #[test]
    fn stage_writes_only_real_rows_and_counts() {
        let mut b = HostBuffers::zeroed(small_cap()).unwrap();
        b.num_computed = vec![9; 4];
        one_row().stage(&mut b).unwrap();
        assert_eq!(b.num_computed, vec![3, 9, 9, 9]);
        assert_eq!(&b.counts[..6], &[1, 1, 3, 3, 3, 4]);
        let other = b.clone();
        b.logits[5] = -0.0;
        assert_eq!(b.differences(&other), vec![("logits", 5)]);
    }
}
