//! The GPU model runner's persistent batch (`vllm/v1/worker/gpu_input_batch.py`
//! `InputBatch`) and its CPU block table (`vllm/v1/worker/block_table.py`).
//!
//! Rows outlive their requests: `token_ids_cpu` and block-table rows are never cleared,
//! so a row reused by another request (or filled by `condense`) keeps the previous
//! occupant's values past the live prefix. Invariant: after [`InputBatch::condense`],
//! rows `0..num_reqs` are occupied.

use std::collections::BTreeMap;

use crate::kv::BlockId;

/// One request's runner-side state (`CachedRequestState`).
#[derive(Debug, Clone)]
pub struct ReqState {
    pub prompt: Vec<u32>,
    /// Every sampled token (the runner's copy of the outputs).
    pub output: Vec<u32>,
    pub block_ids: Vec<BlockId>,
    pub num_computed_tokens: usize,
}

impl ReqState {
    pub fn num_tokens(&self) -> usize {
        self.prompt.len() + self.output.len()
    }
}

/// `InputBatch`: persistent rows of per-request CPU state.
#[derive(Debug)]
pub struct InputBatch {
    rows: Vec<Option<usize>>,
    index_of: BTreeMap<usize, usize>,
    /// `token_ids_cpu[max_num_seqs][max_model_len]`.
    pub token_ids: Vec<Vec<u32>>,
    /// Highest written end index of each row (for recording stale tails).
    pub high_water: Vec<usize>,
    pub num_tokens: Vec<usize>,
    pub num_tokens_no_spec: Vec<usize>,
    pub num_prompt_tokens: Vec<usize>,
    pub num_computed: Vec<usize>,
    /// CPU block table `[max_num_seqs][cdiv(max_model_len, block_size)]`, zero-initialised.
    pub block_table: Vec<Vec<i64>>,
    pub blocks_per_row: Vec<usize>,
    removed: Vec<usize>,
}

impl InputBatch {
    pub fn new(max_num_seqs: usize, max_model_len: usize, width: usize) -> Self {
        InputBatch {
            rows: Vec::new(),
            index_of: BTreeMap::new(),
            token_ids: vec![vec![0; max_model_len]; max_num_seqs],
            high_water: vec![0; max_num_seqs],
            num_tokens: vec![0; max_num_seqs],
            num_tokens_no_spec: vec![0; max_num_seqs],
            num_prompt_tokens: vec![0; max_num_seqs],
            num_computed: vec![0; max_num_seqs],
            block_table: vec![vec![0; width]; max_num_seqs],
            blocks_per_row: vec![0; max_num_seqs],
            removed: Vec::new(),
        }
    }

    pub fn num_reqs(&self) -> usize {
        self.index_of.len()
    }

    pub fn row_of(&self, req: usize) -> Option<usize> {
        self.index_of.get(&req).copied()
    }

    /// Requests of rows `0..num_reqs`, in row order.
    pub fn req_ids(&self) -> Vec<usize> {
        let ids: Vec<usize> = self.rows.iter().take(self.num_reqs()).map(|r| r.expect("rows are condensed")).collect();
        ids
    }

    /// Requests in the batch (`req_id_to_index` keys), holes or not.
    pub fn members(&self) -> Vec<usize> {
        self.index_of.keys().copied().collect()
    }

    pub fn contains(&self, req: usize) -> bool {
        self.index_of.contains_key(&req)
    }

    /// Writes `tokens` at `row[start..]`, tracking the row's high-water mark.
    pub fn write_tokens(&mut self, row: usize, start: usize, tokens: &[u32]) {
        let end = start + tokens.len();
        self.token_ids[row][start..end].copy_from_slice(tokens);
        self.high_water[row] = self.high_water[row].max(end);
    }

    /// `remove_request`: the row becomes a hole.
    pub fn remove(&mut self, req: usize) {
        if let Some(row) = self.index_of.remove(&req) {
            self.rows[row] = None;
            self.removed.push(row);
        }
    }

    /// `add_request`: takes the lowest hole, else appends; writes prompt + outputs.
    pub fn add(&mut self, req: usize, st: &ReqState) {
        self.removed.sort_unstable_by(|a, b| b.cmp(a));
        let row = self.removed.pop().unwrap_or(self.num_reqs());
        if row == self.rows.len() {
            self.rows.push(Some(req));
        } else {
            self.rows[row] = Some(req);
        }
        self.index_of.insert(req, row);
        self.num_prompt_tokens[row] = st.prompt.len();
        self.write_tokens(row, 0, &st.prompt);
        self.write_tokens(row, st.prompt.len(), &st.output);
        self.num_tokens[row] = st.num_tokens();
        self.num_tokens_no_spec[row] = st.num_tokens();
        self.num_computed[row] = st.num_computed_tokens;
        self.blocks_per_row[row] = 0;
        self.append_blocks(row, &st.block_ids);
    }

    /// `BlockTable.append_row`.
    pub fn append_blocks(&mut self, row: usize, ids: &[BlockId]) {
        let start = self.blocks_per_row[row];
        for (j, &b) in ids.iter().enumerate() {
            self.block_table[row][start + j] = i64::from(b);
        }
        self.blocks_per_row[row] += ids.len();
    }

    /// `condense`: moves the highest occupied row into the lowest hole until no hole is
    /// below an occupied row; copies `token_ids_cpu[:num_tokens]`, counters and live
    /// block ids.
    pub fn condense(&mut self) {
        let num_reqs = self.num_reqs();
        let mut empty: Vec<usize> = std::mem::take(&mut self.removed);
        empty.sort_unstable();
        if num_reqs == 0 {
            self.rows.clear();
            return;
        }
        let mut last = num_reqs + empty.len() - 1;
        let mut k = 0;
        while k < empty.len() {
            while empty[k..].contains(&last) {
                last -= 1;
            }
            let hole = empty[k];
            if hole >= last {
                break;
            }
            k += 1;
            let req = self.rows[last].take().expect("last occupied row");
            self.rows[hole] = Some(req);
            self.index_of.insert(req, hole);
            let n = self.num_tokens[last];
            let (src, dst) = (self.token_ids[last][..n].to_vec(), hole);
            self.write_tokens(dst, 0, &src);
            self.num_tokens[hole] = n;
            self.num_tokens_no_spec[hole] = self.num_tokens_no_spec[last];
            self.num_prompt_tokens[hole] = self.num_prompt_tokens[last];
            self.num_computed[hole] = self.num_computed[last];
            let nb = self.blocks_per_row[last];
            let live = self.block_table[last][..nb].to_vec();
            self.block_table[hole][..nb].copy_from_slice(&live);
            self.blocks_per_row[hole] = nb;
            last -= 1;
        }
        self.rows.truncate(num_reqs);
        debug_assert!(self.rows.iter().take(num_reqs).all(Option::is_some), "rows 0..num_reqs occupied after condense");
    }
}
