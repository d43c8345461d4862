//! nano-vllm's `Sequence` block arithmetic and `BlockManager`, as at commit 2f21442
//! (`nanovllm/engine/sequence.py`, `nanovllm/engine/block_manager.py`; line numbers
//! below are of that commit).
//!
//! Two upstream facts shape everything here:
//! * `Sequence.block_size = 256` is a class attribute nothing sets at 2f21442
//!   (`Sequence.set_block_size` arrives in 55c64e7), so a sequence cuts its tokens into
//!   256-token pieces whatever `kvcache_block_size` is, while the block manager and the
//!   model runner use `kvcache_block_size`. With 256 both agree; with 512 (or any larger
//!   multiple of 256) the block manager never sees a full block in `allocate`, and
//!   `prepare_prefill` produces more slots than tokens for prompts above 256 tokens.
//! * `Block.reset()` clears a reused block's `hash` and `token_ids` but leaves its entry
//!   in `hash_to_block_id` (the entry is dropped only from f64d821 on). A later request
//!   whose chain hash maps to that block hits it whenever the block's *current* tokens
//!   equal the request's block tokens, even though the block now holds the KV of another
//!   prefix: a stale-hash hit.
//!
//! Upstream's `assert`s are checked and returned as [`SimError::NanoAssertion`] naming
//! the line; the bookkeeping that upstream keeps twice (`used_block_ids` and the
//! `free_block_ids` deque) is kept once here, the other as `debug_assert!`s.

use std::collections::{HashMap, VecDeque};

use crate::block_hash::{BlockHash, BlockHasher, NO_PARENT};
use crate::error::SimError;

/// `Sequence.block_size` at 2f21442 (`sequence.py:15`), independent of the config.
pub const SEQUENCE_BLOCK_SIZE: usize = 256;

/// An upstream assertion failure (the step is filled in by the engine loop).
pub(crate) fn assertion(message: impl Into<String>) -> SimError {
    SimError::NanoAssertion { step: 0, message: message.into() }
}

/// The scheduler-visible state of one `Sequence` (`sequence.py`).
#[derive(Debug, Clone)]
pub(crate) struct Seq {
    pub tokens: Vec<u32>,
    pub num_prompt_tokens: usize,
    pub num_cached_tokens: usize,
    pub block_table: Vec<usize>,
    pub max_tokens: usize,
    pub ignore_eos: bool,
}

impl Seq {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    /// `num_blocks` (`sequence.py:58`): in 256-token pieces.
    pub fn num_blocks(&self) -> usize {
        self.tokens.len().div_ceil(SEQUENCE_BLOCK_SIZE)
    }
    /// `num_cached_blocks` (`sequence.py:54`).
    pub fn num_cached_blocks(&self) -> usize {
        self.num_cached_tokens / SEQUENCE_BLOCK_SIZE
    }
    /// `last_block_num_tokens` (`sequence.py:62`).
    pub fn last_block_num_tokens(&self) -> usize {
        self.tokens.len() - (self.num_blocks() - 1) * SEQUENCE_BLOCK_SIZE
    }
    /// `block(i)` (`sequence.py:65`): the i-th 256-token piece.
    pub fn block(&self, i: usize) -> &[u32] {
        debug_assert!(i < self.num_blocks(), "sequence.py:66 assert 0 <= i < self.num_blocks");
        &self.tokens[i * SEQUENCE_BLOCK_SIZE..((i + 1) * SEQUENCE_BLOCK_SIZE).min(self.tokens.len())]
    }
    /// `num_completion_tokens` (`sequence.py:42`).
    pub fn num_completion_tokens(&self) -> usize {
        self.tokens.len() - self.num_prompt_tokens
    }
}

/// `Block` (`block_manager.py:8`); `hash == None` is upstream's `-1`.
#[derive(Debug, Clone, Default)]
struct Block {
    ref_count: u32,
    hash: Option<BlockHash>,
    token_ids: Vec<u32>,
}

/// What the block manager did, for tests that must know a behaviour really ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Blocks taken as prefix-cache hits in `allocate`.
    pub prefix_hit_blocks: usize,
    /// Hits on a block whose current tokens match but which was filled under another
    /// prefix (its hash entry is stale).
    pub stale_hash_hits: usize,
    /// Blocks appended by `may_append` (a decode crossing into a new block).
    pub may_append_new_blocks: usize,
    /// Blocks hashed by `may_append` (a decode filling a block).
    pub may_append_hashes: usize,
}

/// `BlockManager` (`block_manager.py:26`).
#[derive(Debug)]
pub(crate) struct BlockManager {
    block_size: usize,
    blocks: Vec<Block>,
    /// Stale entries are kept, as upstream keeps them; never iterated.
    hash_to_block_id: HashMap<BlockHash, usize>,
    free_block_ids: VecDeque<usize>,
    hasher: BlockHasher,
    /// The chain hash each block was last filled under (`None` while partly written):
    /// not upstream state, only what tells a stale-hash hit apart for [`Counters`].
    filled_under: Vec<Option<BlockHash>>,
    pub counters: Counters,
}

impl BlockManager {
    /// `__init__`: blocks `0..num_blocks`, all free, in id order.
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        BlockManager {
            block_size,
            blocks: vec![Block::default(); num_blocks],
            hash_to_block_id: HashMap::new(),
            free_block_ids: (0..num_blocks).collect(),
            hasher: BlockHasher::default(),
            filled_under: vec![None; num_blocks],
            counters: Counters::default(),
        }
    }

    /// `kvcache_block_size`.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_free(&self) -> usize {
        self.free_block_ids.len()
    }

    fn is_used(&self, id: usize) -> bool {
        // `used_block_ids` holds exactly the blocks with a reference.
        self.blocks[id].ref_count > 0
    }

    /// `compute_hash` (`block_manager.py:36`) via the shared interner; `prefix` `None`
    /// is upstream's `-1` (no prefix bytes hashed).
    fn compute_hash(&mut self, token_ids: &[u32], prefix: Option<BlockHash>) -> BlockHash {
        self.hasher.hash(prefix.unwrap_or(NO_PARENT), token_ids)
    }

    /// `_allocate_block` (`block_manager.py:43`): reset (ref 1, hash -1, no tokens) and
    /// leave the free deque. The block's `hash_to_block_id` entry stays (stale).
    fn allocate_block(&mut self, id: usize) -> Result<(), SimError> {
        if self.blocks[id].ref_count != 0 {
            return Err(assertion(format!("block_manager.py:45 assert block.ref_count == 0 (block {id})")));
        }
        self.blocks[id] = Block { ref_count: 1, hash: None, token_ids: Vec::new() };
        let pos = self.free_block_ids.iter().position(|&b| b == id);
        let pos = pos.ok_or_else(|| assertion(format!("block_manager.py:47 free_block_ids.remove({id}): not free")))?;
        self.free_block_ids.remove(pos);
        self.filled_under[id] = None;
        Ok(())
    }

    /// `_deallocate_block` (`block_manager.py:51`): back to the end of the free deque.
    fn deallocate_block(&mut self, id: usize) {
        debug_assert_eq!(self.blocks[id].ref_count, 0, "block_manager.py:52");
        debug_assert!(!self.free_block_ids.contains(&id), "block_manager.py:53 used_block_ids.remove");
        self.free_block_ids.push_back(id);
    }

    /// `can_allocate` (`block_manager.py:56`).
    pub fn can_allocate(&self, seq: &Seq) -> bool {
        self.free_block_ids.len() >= seq.num_blocks()
    }

    /// `allocate` (`block_manager.py:59`): hash full pieces along the chain, hit while
    /// `hash_to_block_id` maps the hash to a block whose *current* `token_ids` equal the
    /// piece (a stale entry included), then take blocks from the front of the free deque.
    pub fn allocate(&mut self, seq: &mut Seq) -> Result<(), SimError> {
        if !seq.block_table.is_empty() {
            return Err(assertion("block_manager.py:60 assert not seq.block_table"));
        }
        let mut h: Option<BlockHash> = None;
        let mut cache_miss = false;
        for i in 0..seq.num_blocks() {
            let token_ids = seq.block(i).to_vec();
            h = if token_ids.len() == self.block_size { Some(self.compute_hash(&token_ids, h)) } else { None };
            let hit = h.and_then(|h| self.hash_to_block_id.get(&h).copied());
            if hit.is_none_or(|b| self.blocks[b].token_ids != token_ids) {
                cache_miss = true;
            }
            let block_id = if cache_miss {
                let id = *self
                    .free_block_ids
                    .front()
                    .ok_or_else(|| assertion("block_manager.py:70 free_block_ids[0] on an empty deque"))?;
                self.allocate_block(id)?;
                id
            } else {
                let id = hit.expect("a hit when there is no miss");
                seq.num_cached_tokens += self.block_size;
                self.counters.prefix_hit_blocks += 1;
                if self.filled_under[id] != h {
                    self.counters.stale_hash_hits += 1;
                }
                if self.is_used(id) {
                    self.blocks[id].ref_count += 1;
                } else {
                    let filled = self.filled_under[id];
                    self.allocate_block(id)?;
                    // A hit is not rewritten: its KV stays what it was.
                    self.filled_under[id] = filled;
                }
                id
            };
            if let Some(h) = h {
                if cache_miss {
                    // Written by this prefill.
                    self.filled_under[block_id] = Some(h);
                }
                self.blocks[block_id].hash = Some(h);
                self.blocks[block_id].token_ids = token_ids;
                self.hash_to_block_id.insert(h, block_id);
            }
            seq.block_table.push(block_id);
        }
        Ok(())
    }

    /// `deallocate` (`block_manager.py:84`): drop one reference per table entry, last
    /// block first; blocks reaching 0 go to the end of the free deque.
    pub fn deallocate(&mut self, seq: &mut Seq) {
        for &id in seq.block_table.iter().rev() {
            debug_assert!(self.blocks[id].ref_count > 0, "a held block has a reference");
            self.blocks[id].ref_count -= 1;
            if self.blocks[id].ref_count == 0 {
                self.deallocate_block(id);
            }
        }
        seq.num_cached_tokens = 0;
        seq.block_table.clear();
    }

    /// `can_append` (`block_manager.py:93`): one free block when the sequence has just
    /// crossed into a new block.
    pub fn can_append(&self, seq: &Seq) -> bool {
        self.free_block_ids.len() >= usize::from(seq.len() % self.block_size == 1)
    }

    /// `may_append` (`block_manager.py:96`): a new block at `len % block_size == 1`, the
    /// last block hashed at `len % block_size == 0` (its tokens are the sequence's last
    /// 256-token piece, its prefix the previous block's hash or none).
    pub fn may_append(&mut self, seq: &mut Seq) -> Result<(), SimError> {
        let last = *seq
            .block_table
            .last()
            .ok_or_else(|| assertion("block_manager.py:98 block_table[-1] of an empty table"))?;
        let len = seq.len();
        if len % self.block_size == 1 {
            if self.blocks[last].hash.is_none() {
                return Err(assertion("block_manager.py:100 assert last_block.hash != -1"));
            }
            let id = *self
                .free_block_ids
                .front()
                .ok_or_else(|| assertion("block_manager.py:101 free_block_ids[0] on an empty deque"))?;
            self.allocate_block(id)?;
            seq.block_table.push(id);
            self.counters.may_append_new_blocks += 1;
        } else if len.is_multiple_of(self.block_size) {
            if self.blocks[last].hash.is_some() {
                return Err(assertion("block_manager.py:105 assert last_block.hash == -1"));
            }
            let token_ids = seq.block(seq.num_blocks() - 1).to_vec();
            let n = seq.block_table.len();
            let prefix = if n > 1 { self.blocks[seq.block_table[n - 2]].hash } else { None };
            let h = self.compute_hash(&token_ids, prefix);
            self.blocks[last].hash = Some(h);
            self.blocks[last].token_ids = token_ids;
            self.hash_to_block_id.insert(h, last);
            self.filled_under[last] = Some(h);
            self.counters.may_append_hashes += 1;
        } else if self.blocks[last].hash.is_some() {
            return Err(assertion("block_manager.py:112 assert last_block.hash == -1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(tokens: Vec<u32>) -> Seq {
        let n = tokens.len();
        Seq {
            tokens,
            num_prompt_tokens: n,
            num_cached_tokens: 0,
            block_table: Vec::new(),
            max_tokens: 1,
            ignore_eos: true,
        }
    }

    /// The case: a block reused by another prefix keeps its old hash entry, and a
    /// request with the old prefix hits it when the block's new tokens equal its own.
    #[test]
    fn a_reused_block_keeps_its_stale_hash_entry_and_is_hit() {
        let bs = 256;
        let mut bm = BlockManager::new(2, bs);
        let x = vec![7u32; bs];
        // A: [x] + 1 token: block 0 hashed under (no prefix, x), block 1 partial.
        let mut a = seq([x.clone(), vec![1]].concat());
        bm.allocate(&mut a).unwrap();
        assert_eq!(a.block_table, vec![0, 1]);
        bm.deallocate(&mut a); // free deque: [1, 0]
                               // B: [y] + [x]: block 1 (front) for y, block 0 misses (other prefix) and is
                               // taken from the front: reset, then filled with x under B's chain.
        let y = vec![9u32; bs];
        let mut b = seq([y, x.clone()].concat());
        bm.allocate(&mut b).unwrap();
        assert_eq!((b.block_table.clone(), b.num_cached_tokens), (vec![1, 0], 0));
        bm.deallocate(&mut b);
        // C: A's prefix again. hash(x) still maps to block 0 (stale: it holds B's KV)
        // and block 0's tokens are x, so C hits and schedules 1 token.
        let mut c = seq([x, vec![2]].concat());
        bm.allocate(&mut c).unwrap();
        assert_eq!(c.block_table[0], 0);
        assert_eq!(c.num_cached_tokens, 256);
        assert_eq!(bm.counters.stale_hash_hits, 1);
    }

    /// With `kvcache_block_size` 512 the 256-token pieces are never full blocks: no hit.
    #[test]
    fn block_size_512_never_hashes_in_allocate() {
        let mut bm = BlockManager::new(8, 512);
        let p: Vec<u32> = (0..600).map(|i| i % 5).collect();
        let mut a = seq(p.clone());
        bm.allocate(&mut a).unwrap();
        assert_eq!(a.block_table.len(), 3, "600 tokens in 256-token pieces");
        bm.deallocate(&mut a);
        let mut b = seq(p);
        bm.allocate(&mut b).unwrap();
        assert_eq!((b.num_cached_tokens, bm.counters.prefix_hit_blocks), (0, 0));
    }

    #[test]
    fn may_append_asserts_are_checked() {
        let mut bm = BlockManager::new(4, 256);
        let mut a = seq(vec![1; 10]);
        bm.allocate(&mut a).unwrap();
        // A partial last block entering a new block without having been hashed: the
        // state upstream asserts against at block_manager.py:100.
        a.tokens.resize(257, 1);
        let e = bm.may_append(&mut a).unwrap_err();
        assert!(e.to_string().contains("block_manager.py:100"), "{e}");
    }
}
