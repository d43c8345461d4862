//! Paged KV cache: the block pool with its free queue and prefix cache, and the
//! per-request block lists of the KV cache manager.
//!
//! Mirrors vLLM 0.12.0 `vllm/v1/core/block_pool.py`, `kv_cache_manager.py`,
//! `single_type_kv_cache_manager.py` (full attention, one KV cache group) and
//! `kv_cache_utils.py` (`FreeKVCacheBlockQueue`).
//!
//! Invariants: block 0 is the null block, never handed out, never freed, never counted
//! as free; a block is in the free queue iff its ref count is 0; a cached block hash
//! maps to blocks whose `hash` field is that hash.

use std::collections::BTreeMap;

/// Block id as vLLM numbers them (`0..num_gpu_blocks`, 0 = null block).
pub type BlockId = u32;

/// Prefix-cache block hashes come from the simulator's one interner ([`crate::block_hash`]).
pub use crate::block_hash::{BlockHash, BlockHasher};

#[derive(Debug, Clone, Default)]
struct Block {
    ref_cnt: u32,
    hash: Option<BlockHash>,
    prev: Option<BlockId>,
    next: Option<BlockId>,
}

/// `BlockPool` with its doubly linked `FreeKVCacheBlockQueue` (allocation from the head,
/// freed blocks appended to the tail) and the hash → blocks prefix-cache map.
#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<Block>,
    head: Option<BlockId>,
    tail: Option<BlockId>,
    num_free: usize,
    caching: bool,
    /// hash → blocks with that hash, in insertion order (`get_one_block` takes the first).
    cached: BTreeMap<BlockHash, Vec<BlockId>>,
}

impl BlockPool {
    /// A pool of `num_blocks` blocks in id order, with block 0 taken as the null block.
    pub fn new(num_blocks: usize, caching: bool) -> Self {
        let mut blocks = vec![Block::default(); num_blocks];
        for (i, b) in blocks.iter_mut().enumerate().skip(1) {
            b.prev = if i > 1 { Some(i as BlockId - 1) } else { None };
            b.next = if i + 1 < num_blocks { Some(i as BlockId + 1) } else { None };
        }
        let has = num_blocks > 1;
        BlockPool {
            blocks,
            head: has.then_some(1),
            tail: has.then_some(num_blocks as BlockId - 1),
            num_free: num_blocks.saturating_sub(1),
            caching,
            cached: BTreeMap::new(),
        }
    }

    /// Free blocks (ref count 0, excluding the null block).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    fn unlink(&mut self, id: BlockId) {
        let (prev, next) = (self.blocks[id as usize].prev, self.blocks[id as usize].next);
        match prev {
            Some(p) => self.blocks[p as usize].next = next,
            None => self.head = next,
        }
        match next {
            Some(n) => self.blocks[n as usize].prev = prev,
            None => self.tail = prev,
        }
        self.blocks[id as usize].prev = None;
        self.blocks[id as usize].next = None;
        self.num_free -= 1;
    }

    fn push_tail(&mut self, id: BlockId) {
        self.blocks[id as usize].prev = self.tail;
        self.blocks[id as usize].next = None;
        match self.tail {
            Some(t) => self.blocks[t as usize].next = Some(id),
            None => self.head = Some(id),
        }
        self.tail = Some(id);
        self.num_free += 1;
    }

    /// The first cached block with this hash (`get_cached_block`).
    pub fn cached_block(&self, hash: BlockHash) -> Option<BlockId> {
        self.cached.get(&hash).and_then(|v| v.first().copied())
    }

    /// `get_new_blocks`: pops `n` blocks from the head; a reused cached block loses its hash.
    pub fn get_new_blocks(&mut self, n: usize) -> Vec<BlockId> {
        debug_assert!(n <= self.num_free, "caller checks the free count first");
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let id = self.head.expect("free queue holds num_free blocks");
            self.unlink(id);
            if self.caching {
                self.evict_hash(id);
            }
            debug_assert_eq!(self.blocks[id as usize].ref_cnt, 0);
            self.blocks[id as usize].ref_cnt = 1;
            out.push(id);
        }
        out
    }

    fn evict_hash(&mut self, id: BlockId) {
        if let Some(h) = self.blocks[id as usize].hash.take() {
            if let Some(list) = self.cached.get_mut(&h) {
                list.retain(|&b| b != id);
                if list.is_empty() {
                    self.cached.remove(&h);
                }
            }
        }
    }

    /// `touch`: a prefix-cache hit takes a reference; a free block leaves the free queue.
    pub fn touch(&mut self, ids: &[BlockId]) {
        for &id in ids {
            if self.blocks[id as usize].ref_cnt == 0 && id != 0 {
                self.unlink(id);
            }
            self.blocks[id as usize].ref_cnt += 1;
        }
    }

    /// `free_blocks`: drops one reference per block; blocks reaching 0 are appended to the
    /// tail in the given order.
    pub fn free_blocks(&mut self, ordered: &[BlockId]) {
        for &id in ordered {
            debug_assert!(self.blocks[id as usize].ref_cnt > 0, "double free of block {id}");
            self.blocks[id as usize].ref_cnt -= 1;
        }
        for &id in ordered {
            if self.blocks[id as usize].ref_cnt == 0 && id != 0 {
                self.push_tail(id);
            }
        }
    }

    pub fn ref_cnt(&self, id: BlockId) -> u32 {
        self.blocks[id as usize].ref_cnt
    }

    /// `cache_full_blocks`: records the hashes of newly full blocks.
    fn cache(&mut self, id: BlockId, hash: BlockHash) {
        debug_assert!(self.blocks[id as usize].hash.is_none(), "block {id} cached twice");
        self.blocks[id as usize].hash = Some(hash);
        self.cached.entry(hash).or_default().push(id);
    }
}

/// `KVCacheManager` for one full-attention group: per-request block lists over a pool.
#[derive(Debug)]
pub struct KvCacheManager {
    pub pool: BlockPool,
    block_size: usize,
    max_model_len: usize,
    caching: bool,
    req_blocks: BTreeMap<usize, Vec<BlockId>>,
    num_cached_block: BTreeMap<usize, usize>,
}

impl KvCacheManager {
    pub fn new(num_blocks: usize, block_size: usize, max_model_len: usize, caching: bool) -> Self {
        KvCacheManager {
            pool: BlockPool::new(num_blocks, caching),
            block_size,
            max_model_len,
            caching,
            req_blocks: BTreeMap::new(),
            num_cached_block: BTreeMap::new(),
        }
    }

    /// Blocks held by a request.
    pub fn blocks(&self, req: usize) -> &[BlockId] {
        self.req_blocks.get(&req).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `get_computed_blocks`: the longest run of cached full blocks of the request's
    /// prefix, hitting at most `num_tokens - 1` tokens.
    pub fn computed_blocks(&self, block_hashes: &[BlockHash], num_tokens: usize) -> Vec<BlockId> {
        if !self.caching {
            return Vec::new();
        }
        let max_blocks = num_tokens.saturating_sub(1) / self.block_size;
        let mut hits = Vec::new();
        for &h in block_hashes.iter().take(max_blocks) {
            match self.pool.cached_block(h) {
                Some(b) => hits.push(b),
                None => break,
            }
        }
        hits
    }

    /// `allocate_slots`: makes room for `num_new_tokens` after `num_computed` (+ hits);
    /// `None` when the pool cannot supply the blocks (the scheduler then preempts).
    /// Returns the newly allocated blocks.
    pub fn allocate_slots(
        &mut self,
        req: usize,
        num_computed: usize,
        num_new_tokens: usize,
        new_computed: &[BlockId],
        req_num_tokens: usize,
        block_hashes: &[BlockHash],
    ) -> Option<Vec<BlockId>> {
        debug_assert!(num_new_tokens > 0);
        // `get_num_blocks_to_allocate` reads the defaultdict `req_to_blocks[request_id]`,
        // creating an (empty) entry even when the allocation then fails; only `free` drops
        // it. Such entries count in `num_common_prefix_blocks`.
        self.req_blocks.entry(req).or_default();
        let computed = num_computed + new_computed.len() * self.block_size;
        let need_tokens = (computed + num_new_tokens).min(self.max_model_len);
        let held = self.blocks(req).len();
        let required = need_tokens.div_ceil(self.block_size);
        let evictable = new_computed.iter().filter(|&&b| self.pool.ref_cnt(b) == 0 && b != 0).count();
        let to_allocate = (required as i64 - new_computed.len() as i64 - held as i64) + evictable as i64;
        if to_allocate > self.pool.num_free() as i64 {
            return None;
        }
        if self.caching {
            self.pool.touch(new_computed);
        }
        if !new_computed.is_empty() {
            // save_new_computed_blocks: hits only ever arrive on a request's first allocation.
            debug_assert!(held == 0 && !self.num_cached_block.contains_key(&req));
            self.req_blocks.entry(req).or_default().extend_from_slice(new_computed);
            self.num_cached_block.insert(req, new_computed.len());
        }
        let list = self.req_blocks.entry(req).or_default();
        let missing = required.saturating_sub(list.len());
        let fresh = self.pool.get_new_blocks(missing);
        list.extend_from_slice(&fresh);
        if self.caching {
            let to_cache = (computed + num_new_tokens).min(req_num_tokens);
            self.cache_blocks(req, to_cache, block_hashes);
        }
        Some(fresh)
    }

    fn cache_blocks(&mut self, req: usize, num_tokens: usize, block_hashes: &[BlockHash]) {
        let done = self.num_cached_block.get(&req).copied().unwrap_or(0);
        let full = num_tokens / self.block_size;
        if done >= full {
            return;
        }
        debug_assert!(block_hashes.len() >= full, "block hashes cover every full block");
        let list = self.req_blocks[&req].clone();
        for i in done..full {
            self.pool.cache(list[i], block_hashes[i]);
        }
        self.num_cached_block.insert(req, full);
    }

    /// `get_num_common_prefix_blocks` (`FullAttentionManager`): leading blocks of `req`
    /// referenced by every request that has an entry in `req_to_blocks`; 0 without
    /// prefix caching (`KVCacheCoordinatorNoPrefixCache`).
    pub fn num_common_prefix_blocks(&self, req: usize) -> usize {
        if !self.caching {
            return 0;
        }
        let holders = self.req_blocks.len() as u32;
        self.blocks(req).iter().take_while(|&&b| self.pool.ref_cnt(b) == holders).count()
    }

    /// `free`: releases a request's blocks, last block first.
    pub fn free(&mut self, req: usize) {
        let list = self.req_blocks.remove(&req).unwrap_or_default();
        let reversed: Vec<BlockId> = list.into_iter().rev().collect();
        self.pool.free_blocks(&reversed);
        self.num_cached_block.remove(&req);
    }
}
