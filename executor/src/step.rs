//! Kernel launches on the persistent buffers. Every launch has a grid fixed by the
//! buffer capacities (never by the step), reads its loop bounds from device buffers and
//! allocates nothing, so the same launch list runs eagerly or inside a CUDA graph.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use specreplay_sim::oracle::Synthetic;

use crate::device::Device;
use crate::error::Result;
use crate::layout::DeviceBuffers;

/// Every kernel, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernel {
    PrepareInputs,
    PrepareRows,
    BuildMetadata,
    CacheWrite,
    ConsumeInputs,
    SyntheticLogits,
    ContinuationLogits,
    ContextCheck,
    ArgmaxRows,
    RejectionGreedy,
}

impl Kernel {
    pub const ALL: [Kernel; 10] = [
        Kernel::PrepareInputs,
        Kernel::PrepareRows,
        Kernel::BuildMetadata,
        Kernel::CacheWrite,
        Kernel::ConsumeInputs,
        Kernel::SyntheticLogits,
        Kernel::ContinuationLogits,
        Kernel::ContextCheck,
        Kernel::ArgmaxRows,
        Kernel::RejectionGreedy,
    ];

    /// The `extern "C"` entry point.
    pub fn entry(self) -> &'static str {
        match self {
            Kernel::PrepareInputs => "prepare_inputs",
            Kernel::PrepareRows => "prepare_rows",
            Kernel::BuildMetadata => "build_metadata",
            Kernel::CacheWrite => "cache_write",
            Kernel::ConsumeInputs => "consume_inputs",
            Kernel::SyntheticLogits => "synthetic_logits",
            Kernel::ContinuationLogits => "continuation_logits",
            Kernel::ContextCheck => "context_check",
            Kernel::ArgmaxRows => "argmax_rows",
            Kernel::RejectionGreedy => "rejection_greedy",
        }
    }

    /// Runs this kernel's CPU reference on the host mirror.
    pub fn reference(self, b: &mut crate::layout::HostBuffers, oracle: &Synthetic) {
        use crate::reference as r;
        match self {
            Kernel::PrepareInputs => r::prepare_inputs(b),
            Kernel::PrepareRows => r::prepare_rows(b),
            Kernel::BuildMetadata => r::build_metadata(b),
            Kernel::CacheWrite => r::cache_write(b),
            Kernel::ConsumeInputs => r::consume_inputs(b),
            Kernel::SyntheticLogits => r::synthetic_logits(b, oracle),
            Kernel::ContinuationLogits => r::continuation_logits(b),
            Kernel::ContextCheck => r::context_check(b),
            Kernel::ArgmaxRows => r::argmax_rows(b),
            Kernel::RejectionGreedy => r::rejection_greedy(b),
        }
    }
}

/// Threads per block of `argmax_rows` (`ARGMAX_THREADS` in sample.cu).
pub const ARGMAX_THREADS: u32 = 1024;

fn grid(items: usize, threads: u32) -> LaunchConfig {
    let blocks = items.div_ceil(threads as usize).clamp(1, 1024) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.clamp(1, 1024) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// Enqueues `k` on the device's stream over `b` (asynchronous; capturable). `oracle` is
/// used by [`Kernel::SyntheticLogits`] only, whose `vocab_size` must be `b.cap.vocab`.
pub fn launch(dev: &Device, k: Kernel, b: &mut DeviceBuffers, oracle: &Synthetic) -> Result<()> {
    let c = b.cap;
    let (mml, bpr, bs) = (c.max_model_len as i32, c.blocks_per_row as i32, c.block_size as i32);
    let slots = c.cache_slots() as i64;
    let (vocab, stride) = (c.vocab as i32, c.expected_stride() as i32);
    let seed = oracle.seed;
    let order = oracle.order.min(i32::MAX as u32) as i32;
    debug_assert!(k != Kernel::SyntheticLogits || oracle.vocab_size as usize == c.vocab);
    let f = dev.function(k.entry())?;
    let mut l = dev.stream.launch_builder(f);
    let cfg = match k {
        Kernel::PrepareInputs => {
            l.arg(&b.counts).arg(&b.token_table).arg(&mml).arg(&b.block_table).arg(&bpr).arg(&bs);
            l.arg(&b.num_computed).arg(&b.query_start_loc).arg(&mut b.input_ids).arg(&mut b.positions);
            l.arg(&mut b.slot_mapping);
            grid(c.max_tokens, 256)
        }
        Kernel::PrepareRows => {
            l.arg(&b.counts).arg(&b.num_computed).arg(&b.query_start_loc).arg(&b.num_sampled);
            l.arg(&mut b.seqused_k).arg(&mut b.cu_sampled).arg(&mut b.logits_indices);
            grid(c.max_num_seqs, 128)
        }
        Kernel::BuildMetadata => {
            l.arg(&b.counts).arg(&b.query_start_loc).arg(&b.block_table).arg(&bpr);
            l.arg(&mut b.cu_seqlens_q).arg(&mut b.seqused_k).arg(&mut b.meta_block_table).arg(&mut b.slot_mapping);
            grid(c.max_tokens * c.blocks_per_row.max(1) + 1, 256)
        }
        Kernel::CacheWrite => {
            l.arg(&b.counts).arg(&b.input_ids).arg(&b.slot_mapping).arg(&mut b.token_cache).arg(&slots);
            l.arg(&mut b.counters);
            grid(c.max_tokens, 256)
        }
        Kernel::ConsumeInputs => {
            l.arg(&b.counts).arg(&b.input_ids).arg(&b.positions).arg(&mut b.consumed_ids).arg(&mut b.consumed_pos);
            grid(c.max_tokens, 256)
        }
        Kernel::SyntheticLogits => {
            l.arg(&b.counts).arg(&b.logits_indices).arg(&b.positions).arg(&b.cu_seqlens_q).arg(&b.seqused_k);
            l.arg(&b.meta_block_table).arg(&bpr).arg(&bs).arg(&b.token_cache).arg(&slots);
            l.arg(&seed).arg(&order).arg(&vocab).arg(&mut b.logits).arg(&mut b.counters);
            per_row(c.max_logits)
        }
        Kernel::ContinuationLogits => {
            l.arg(&b.counts).arg(&b.logits_indices).arg(&b.positions).arg(&b.cu_seqlens_q);
            l.arg(&b.expected).arg(&stride).arg(&b.expected_len).arg(&vocab).arg(&mut b.logits);
            l.arg(&mut b.counters);
            per_row(c.max_logits)
        }
        Kernel::ContextCheck => {
            l.arg(&b.counts).arg(&b.num_sampled).arg(&b.seqused_k).arg(&b.meta_block_table).arg(&bpr).arg(&bs);
            l.arg(&b.token_cache).arg(&slots).arg(&b.expected).arg(&stride).arg(&b.expected_len);
            l.arg(&mut b.counters);
            per_row(c.max_num_seqs)
        }
        Kernel::ArgmaxRows => {
            l.arg(&b.counts).arg(&b.logits).arg(&vocab).arg(&mut b.argmax);
            LaunchConfig {
                grid_dim: (c.max_logits.clamp(1, 1024) as u32, 1, 1),
                block_dim: (ARGMAX_THREADS, 1, 1),
                shared_mem_bytes: 0,
            }
        }
        Kernel::RejectionGreedy => {
            l.arg(&b.counts).arg(&b.query_start_loc).arg(&b.num_sampled).arg(&b.cu_sampled).arg(&b.discard);
            l.arg(&b.input_ids).arg(&b.argmax).arg(&mut b.sampled);
            grid(c.max_num_seqs, 128)
        }
    };
    // SAFETY: every argument matches the kernel's parameter list in executor/kernels/*.cu
    // (pointers to buffers of the capacities the kernels assume, scalars of the C types);
    // the kernels index only within those capacities for inputs that pass
    // `StepInput::validate`.
    unsafe { l.launch(cfg) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn argmax_block_size_is_the_kernels_define() {
        let src = include_str!("../kernels/sample.cu");
        assert!(src.contains(&format!("#define ARGMAX_THREADS {}\n", super::ARGMAX_THREADS)));
    }
}
