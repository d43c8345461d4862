//! The one block-hash interner of the simulator, shared by vLLM's prefix cache
//! (`crate::kv`, `vllm/v1/core/kv_cache_utils.py hash_block_tokens`) and nano-vllm's
//! block manager (`crate::nano`, `nanovllm/engine/block_manager.py compute_hash`).
//!
//! Both engines hash a full block as a function of its parent block's hash and its own
//! tokens (vLLM: sha256 / builtin hash over `(parent, tokens, extra_keys)`; nano-vllm:
//! xxh64 over the parent's 8 little-endian bytes, when there is a parent, then the
//! tokens as int64). Modelling the digest is pointless: what either engine does with a
//! hash is compare it for equality. The interner hands out ids in first-seen order, so
//! two chains get the same id exactly when parent and tokens are equal, it never
//! collides, and equal inputs give equal ids on every run (no hash-order dependence).

use std::collections::HashMap;

/// Identity of a full block's token prefix: an interned `(parent, tokens)` pair.
/// Ids start at 1; [`NO_PARENT`] (0) is never handed out.
pub type BlockHash = u64;

/// The parent of a sequence's first block (vLLM's `NONE_HASH`, nano-vllm's `prefix = -1`).
pub const NO_PARENT: BlockHash = 0;

/// Chained block hashing over full blocks, exact (an interner).
#[derive(Debug, Default)]
pub struct BlockHasher {
    ids: HashMap<(BlockHash, Vec<u32>), BlockHash>,
}

impl BlockHasher {
    /// The hash of a block holding `tokens` whose predecessor has hash `parent`
    /// ([`NO_PARENT`] for a first block).
    pub fn hash(&mut self, parent: BlockHash, tokens: &[u32]) -> BlockHash {
        // Looked up by key only; the map is never iterated, so its order cannot leak.
        if let Some(&id) = self.ids.get(&(parent, tokens.to_vec())) {
            return id;
        }
        let id = self.ids.len() as BlockHash + 1;
        self.ids.insert((parent, tokens.to_vec()), id);
        id
    }

    /// Extends `hashes` (the chain of a request's full blocks, vLLM's
    /// `Request.block_hashes`) to cover every full block of `tokens`.
    pub fn update(&mut self, hashes: &mut Vec<BlockHash>, tokens: &[u32], block_size: usize) {
        let full = tokens.len() / block_size;
        while hashes.len() < full {
            let i = hashes.len();
            let parent = if i == 0 { NO_PARENT } else { hashes[i - 1] };
            let h = self.hash(parent, &tokens[i * block_size..(i + 1) * block_size]);
            hashes.push(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_chains_share_ids_and_different_parents_do_not() {
        let mut h = BlockHasher::default();
        let a = h.hash(NO_PARENT, &[1, 2]);
        let b = h.hash(a, &[1, 2]);
        assert_eq!((a, b), (1, 2), "ids in first-seen order from 1");
        assert_eq!(h.hash(NO_PARENT, &[1, 2]), a);
        assert_ne!(h.hash(b, &[1, 2]), b, "same tokens under another parent is another block");
        let mut chain = Vec::new();
        h.update(&mut chain, &[1, 2, 1, 2, 9], 2);
        assert_eq!(chain, vec![a, b], "only full blocks are hashed");
    }
}
