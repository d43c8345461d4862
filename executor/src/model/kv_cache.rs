//! The paged KV cache layout, as vLLM's FlashAttention backend allocates it
//! (`vllm/v1/attention/backends/flash_attn.py` `FlashAttentionBackend.get_kv_cache_shape`:
//! `(2, num_blocks, block_size, num_kv_heads, head_size)`; here the key and value halves
//! are two buffers per layer). A token's `slot_mapping` entry is `block * block_size +
//! offset`, so its head `h` lives at element `(slot * num_kv_heads + h) * head_dim`.

/// Shape of one layer's key (or value) cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl KvLayout {
    /// Token slots (`num_blocks * block_size`).
    pub fn slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Elements of one layer's key (or value) cache.
    pub fn len(&self) -> usize {
        self.slots() * self.num_kv_heads * self.head_dim
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// First element of (slot, kv head).
    pub fn offset(&self, slot: usize, kv_head: usize) -> usize {
        (slot * self.num_kv_heads + kv_head) * self.head_dim
    }

    /// The slot of key `pos` of a request whose block-table row is `blocks`, or `None`
    /// when its block is missing, negative or outside the cache.
    pub fn slot(&self, blocks: &[i32], pos: usize) -> Option<usize> {
        let b = *blocks.get(pos / self.block_size)?;
        let slot = usize::try_from(b).ok()? * self.block_size + pos % self.block_size;
        (slot < self.slots()).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_block_table_and_refuse_what_is_outside() {
        let l = KvLayout { num_blocks: 4, block_size: 16, num_kv_heads: 2, head_dim: 8 };
        assert_eq!(l.len(), 4 * 16 * 2 * 8);
        assert_eq!(l.slot(&[3, 1], 17), Some(16 + 1));
        assert_eq!(l.slot(&[3, 1], 5), Some(48 + 5));
        assert_eq!(l.slot(&[3, -1], 17), None);
        assert_eq!(l.slot(&[3, 9], 17), None, "block 9 of 4");
        assert_eq!(l.slot(&[3], 17), None, "past the row");
        assert_eq!(l.offset(5, 1), (5 * 2 + 1) * 8);
    }
}
