//! CPU references of every kernel: pure functions of the same buffers, writing exactly
//! what the kernel writes and nothing else (so stale tails stay stale on both sides).
//! The self-test runs a kernel on the device and its reference here on the same inputs and
//! compares every buffer bit for bit.

use crate::layout::*;
use specreplay_sim::oracle::Synthetic;

fn row_of_token(cu: &[i32], num_reqs: usize, i: i32) -> usize {
    // The largest r < num_reqs with cu[r] <= i (rows with no tokens are skipped).
    (0..num_reqs).rev().find(|&r| cu[r] <= i).unwrap_or(0)
}

/// `prepare.cu::prepare_inputs`: input ids, positions and slot mapping of the scheduled
/// tokens (`gpu_model_runner.py` `_prepare_inputs`).
pub fn prepare_inputs(b: &mut HostBuffers) {
    let c = b.cap;
    let n = b.counts[C_NUM_REQS].max(0) as usize;
    if n == 0 {
        return;
    }
    let total = b.query_start_loc[n];
    for i in 0..total {
        let r = row_of_token(&b.query_start_loc, n, i);
        let pos = (b.num_computed[r] + (i - b.query_start_loc[r])) as usize;
        let iu = i as usize;
        b.input_ids[iu] = b.token_table[r * c.max_model_len + pos];
        b.positions[iu] = pos as i64;
        let block = b.block_table[r * c.blocks_per_row + pos / c.block_size];
        b.slot_mapping[iu] = i64::from(block) * c.block_size as i64 + (pos % c.block_size) as i64;
    }
}

/// `prepare.cu::prepare_rows`: seqused_k, cu_sampled and logits_indices of the real rows.
pub fn prepare_rows(b: &mut HostBuffers) {
    let n = b.counts[C_NUM_REQS].max(0) as usize;
    let mut base = 0;
    for r in 0..n {
        let end = b.query_start_loc[r + 1];
        b.seqused_k[r] = b.num_computed[r] + (end - b.query_start_loc[r]);
        b.cu_sampled[r] = base;
        let ns = b.num_sampled[r];
        for j in 0..ns {
            b.logits_indices[(base + j) as usize] = end - ns + j;
        }
        base += ns;
        if r == n - 1 {
            b.cu_sampled[n] = base;
        }
    }
}

/// `prepare.cu::build_metadata`: the attention metadata as `sim/src/runner.rs`
/// `attn_metadata` models it (FULL pads requests and tokens; else exact).
pub fn build_metadata(b: &mut HostBuffers) {
    let bpr = b.cap.blocks_per_row;
    let n = b.counts[C_NUM_REQS].max(0) as usize;
    let meta_reqs = b.counts[C_META_REQS].max(0) as usize;
    let meta_tokens = b.counts[C_META_TOKENS].max(0) as usize;
    let total = if n > 0 { b.query_start_loc[n] as usize } else { 0 };
    for r in 0..=meta_reqs {
        b.cu_seqlens_q[r] = if n > 0 { b.query_start_loc[r.min(n)] } else { 0 };
    }
    for r in n..meta_reqs {
        b.seqused_k[r] = 0;
    }
    for e in 0..meta_reqs * bpr {
        b.meta_block_table[e] = if e / bpr < n { b.block_table[e] } else { -1 };
    }
    for i in total..meta_tokens {
        b.slot_mapping[i] = -1;
    }
}

/// `toy_model.cu::cache_write`: input ids into the paged cache through slot_mapping.
pub fn cache_write(b: &mut HostBuffers) {
    let slots = b.cap.cache_slots() as i64;
    for i in 0..b.counts[C_META_TOKENS].max(0) as usize {
        let s = b.slot_mapping[i];
        if s < 0 {
            continue;
        }
        if s >= slots {
            b.counters[CTR_OUT_OF_RANGE] += 1;
            continue;
        }
        b.token_cache[s as usize] = b.input_ids[i];
    }
}

/// `toy_model.cu::consume_inputs`: `input_ids`/`positions[:padded_tokens]` as consumed.
pub fn consume_inputs(b: &mut HostBuffers) {
    let n = b.counts[C_PADDED_TOKENS].max(0) as usize;
    b.consumed_ids[..n].copy_from_slice(&b.input_ids[..n]);
    b.consumed_pos[..n].copy_from_slice(&b.positions[..n]);
}

/// The token at `pos` of request row `r`, through the metadata block table (-1 and an
/// out-of-range count when outside the cache).
fn read_cached(b: &mut HostBuffers, r: usize, pos: usize) -> i32 {
    let c = b.cap;
    let block = b.meta_block_table[r * c.blocks_per_row + pos / c.block_size];
    let slot = i64::from(block) * c.block_size as i64 + (pos % c.block_size) as i64;
    if block < 0 || slot >= c.cache_slots() as i64 {
        b.counters[CTR_OUT_OF_RANGE] += 1;
        return -1;
    }
    b.token_cache[slot as usize]
}

/// `toy_model.cu::synthetic_logits`: each sampled position's context, read from the
/// cache, hashed as `Synthetic::context_hash` does; the row is `Synthetic::score`.
pub fn synthetic_logits(b: &mut HostBuffers, oracle: &Synthetic) {
    let vocab = b.cap.vocab;
    let n = b.counts[C_NUM_REQS].max(0) as usize;
    for j in 0..b.counts[C_NUM_LOGITS].max(0) as usize {
        let i = b.logits_indices[j];
        let r = row_of_token(&b.cu_seqlens_q, n, i);
        let p = b.positions[i as usize] as usize;
        let len = p + 1;
        let take = len.min(oracle.order as usize);
        let mut ctx = Vec::with_capacity(take);
        for q in len - take..len {
            let t = if q as i64 >= i64::from(b.seqused_k[r]) {
                b.counters[CTR_OUT_OF_RANGE] += 1;
                -1
            } else {
                read_cached(b, r, q)
            };
            ctx.push(t as u32);
        }
        let h = oracle.context_hash(&ctx);
        debug_assert_eq!(oracle.vocab_size as usize, vocab, "logits rows are as wide as the vocabulary");
        let row = &mut b.logits[j * vocab..(j + 1) * vocab];
        for (v, x) in row.iter_mut().enumerate() {
            *x = oracle.score(h, v as u32) as f32;
        }
    }
}

/// `toy_model.cu::continuation_logits`: one-hot at the recorded next token.
pub fn continuation_logits(b: &mut HostBuffers) {
    let (vocab, stride) = (b.cap.vocab, b.cap.expected_stride());
    let n = b.counts[C_NUM_REQS].max(0) as usize;
    for j in 0..b.counts[C_NUM_LOGITS].max(0) as usize {
        let i = b.logits_indices[j];
        let r = row_of_token(&b.cu_seqlens_q, n, i);
        let next = b.positions[i as usize] + 1;
        let t = if next < i64::from(b.expected_len[r]) {
            b.expected[r * stride + next as usize]
        } else {
            b.counters[CTR_EXHAUSTED] += 1;
            -1
        };
        for (v, x) in b.logits[j * vocab..(j + 1) * vocab].iter_mut().enumerate() {
            *x = if v as i64 == i64::from(t) { 1.0 } else { 0.0 };
        }
    }
}

/// `toy_model.cu::context_check`: verified context positions that disagree with the
/// recorded row.
pub fn context_check(b: &mut HostBuffers) {
    let stride = b.cap.expected_stride();
    for r in 0..b.counts[C_NUM_REQS].max(0) as usize {
        let verified = b.seqused_k[r] - (b.num_sampled[r] - 1);
        for q in 0..verified.max(0) as usize {
            let t = read_cached(b, r, q);
            if q as i64 >= i64::from(b.expected_len[r]) || t != b.expected[r * stride + q] {
                b.counters[CTR_MISMATCH] += 1;
            }
        }
    }
}

/// `sample.cu::argmax_rows`: index of the largest value, lowest index on ties.
pub fn argmax_rows(b: &mut HostBuffers) {
    let vocab = b.cap.vocab;
    for j in 0..b.counts[C_NUM_LOGITS].max(0) as usize {
        b.argmax[j] = argmax(&b.logits[j * vocab..(j + 1) * vocab]);
    }
}

/// Argmax of one row, lowest index winning ties; -1 for an empty row.
pub fn argmax(row: &[f32]) -> i32 {
    let Some(&first) = row.first() else { return -1 };
    let mut best = (0, first);
    for (v, &x) in row.iter().enumerate().skip(1) {
        if x > best.1 {
            best = (v, x);
        }
    }
    best.0 as i32
}

/// `sample.cu::rejection_greedy`: vLLM's greedy rejection rows (`rejection_sampler.py`
/// `rejection_greedy_sample_kernel`; the simulator's `rejection::greedy_row`).
pub fn rejection_greedy(b: &mut HostBuffers) {
    let width = b.counts[C_WIDTH].max(0) as usize;
    for r in 0..b.counts[C_NUM_REQS].max(0) as usize {
        let mut row = Vec::with_capacity(width);
        if b.discard[r] == 0 {
            let nd = (b.num_sampled[r] - 1) as usize;
            let base = b.cu_sampled[r] as usize;
            let draft0 = b.query_start_loc[r + 1] as usize - nd;
            let mut all = true;
            for j in 0..nd {
                let t = b.argmax[base + j];
                row.push(t);
                if t != b.input_ids[draft0 + j] {
                    all = false;
                    break;
                }
            }
            if all {
                row.push(b.argmax[base + nd]);
            }
        }
        row.resize(width, -1);
        b.sampled[r * width..(r + 1) * width].copy_from_slice(&row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use specreplay_sim::oracle::TargetModel;
    use specreplay_sim::rejection::{greedy_row, RowInput};

    fn cap() -> Capacity {
        Capacity {
            max_num_seqs: 3,
            max_model_len: 12,
            blocks_per_row: 3,
            block_size: 4,
            max_tokens: 12,
            num_blocks: 10,
            max_logits: 12,
            vocab: 7,
            max_width: 4,
        }
    }

    /// Two rows: row 0 decodes 1 token + 2 drafts at position 5.., row 1 prefills 4 tokens
    /// from 0; FULL-padded to 3 requests and 8 tokens.
    fn staged() -> HostBuffers {
        let mut b = HostBuffers::zeroed(cap()).unwrap();
        b.input_ids.fill(77);
        b.positions.fill(77);
        b.slot_mapping.fill(77);
        for (k, t) in b.token_table.iter_mut().enumerate() {
            *t = 100 + k as i32;
        }
        b.block_table[..3].copy_from_slice(&[4, 2, 9]);
        b.block_table[3..6].copy_from_slice(&[7, 8, 1]);
        b.block_table[6..9].copy_from_slice(&[5, 5, 5]);
        let step = StepInput {
            num_computed: vec![5, 0],
            query_start_loc: vec![0, 3, 7],
            num_sampled: vec![3, 1],
            discard: vec![false, true],
            meta_reqs: 3,
            meta_tokens: 8,
            padded_tokens: 8,
            width: 3,
        };
        step.stage(&mut b).unwrap();
        b
    }

    #[test]
    fn prepare_writes_scheduled_slots_only() {
        let mut b = staged();
        prepare_inputs(&mut b);
        prepare_rows(&mut b);
        assert_eq!(&b.positions[..8], &[5, 6, 7, 0, 1, 2, 3, 77]);
        assert_eq!(&b.input_ids[..8], &[105, 106, 107, 112, 113, 114, 115, 77]);
        // row 0: position 5 is block_table[0][1] = 2 -> slot 2*4+1.
        assert_eq!(&b.slot_mapping[..8], &[9, 10, 11, 28, 29, 30, 31, 77]);
        assert_eq!(&b.seqused_k[..2], &[8, 4]);
        assert_eq!(&b.cu_sampled[..3], &[0, 3, 4]);
        assert_eq!(&b.logits_indices[..4], &[0, 1, 2, 6]);
        build_metadata(&mut b);
        assert_eq!(&b.cu_seqlens_q[..4], &[0, 3, 7, 7]);
        assert_eq!(&b.seqused_k[..3], &[8, 4, 0]);
        assert_eq!(&b.meta_block_table[..9], &[4, 2, 9, 7, 8, 1, -1, -1, -1]);
        assert_eq!(b.slot_mapping[7], -1, "padded token slot");
        assert_eq!(b.slot_mapping[8], 77, "past the padded size: stale");
    }

    #[test]
    fn rejection_matches_the_simulators_greedy_row() {
        // The target model: next token = (last + 1) % 7 on any context.
        struct Succ;
        impl TargetModel for Succ {
            fn next_token(&self, _: &str, _: usize, ctx: &[u32]) -> Result<u32, specreplay_sim::SimError> {
                Ok((ctx.last().unwrap() + 1) % 7)
            }
        }
        for drafts in [vec![], vec![3], vec![3, 4], vec![3, 5], vec![6, 0, 1], vec![2, 2, 2]] {
            let ctx: Vec<u32> = [1, 2].iter().copied().chain(drafts.iter().copied()).collect();
            let want = greedy_row(
                &Succ,
                &RowInput { req_id: "r", prompt_len: 1, context: &ctx, verify_from: 2, drafts: &drafts },
                4,
            )
            .unwrap();
            let mut b = HostBuffers::zeroed(cap()).unwrap();
            let nd = drafts.len();
            StepInput {
                num_computed: vec![1],
                query_start_loc: vec![0, nd as i32 + 1],
                num_sampled: vec![nd as i32 + 1],
                discard: vec![false],
                meta_reqs: 1,
                meta_tokens: nd + 1,
                padded_tokens: nd + 1,
                width: 4,
            }
            .stage(&mut b)
            .unwrap();
            b.cu_sampled[0] = 0;
            for j in 0..=nd {
                b.input_ids[j] = ctx[1 + j] as i32;
                b.argmax[j] = ((ctx[1 + j] + 1) % 7) as i32;
            }
            rejection_greedy(&mut b);
            let got: Vec<i64> = b.sampled[..4].iter().map(|&t| i64::from(t)).collect();
            assert_eq!(got, want, "drafts {drafts:?}");
        }
    }

    #[test]
    fn synthetic_logits_argmax_is_the_oracles_token_through_the_cache() {
        let oracle = Synthetic { seed: 3, vocab_size: 7, order: 2 };
        let mut b = staged();
        prepare_inputs(&mut b);
        prepare_rows(&mut b);
        build_metadata(&mut b);
        // Cache holds row 0's first positions too (computed earlier).
        for pos in 0..5 {
            let slot = [4, 2, 9][pos / 4] * 4 + pos % 4;
            b.token_cache[slot] = 100 + pos as i32;
        }
        cache_write(&mut b);
        assert_eq!(b.counters, vec![0; 4]);
        synthetic_logits(&mut b, &oracle);
        argmax_rows(&mut b);
        // Logits row 1 is row 0's position 6: context = tokens 0..=6 of row 0.
        let ctx: Vec<u32> = (100..107).collect();
        assert_eq!(b.argmax[1] as u32, oracle.token_after(&ctx));
        let ctx1: Vec<u32> = (112..116).collect();
        assert_eq!(b.argmax[3] as u32, oracle.token_after(&ctx1), "row 1's last prefill position");
    }

    #[test]
    fn a_wrong_block_changes_the_token_or_is_counted() {
        let oracle = Synthetic { seed: 3, vocab_size: 7, order: 3 };
        let mut b = staged();
        prepare_inputs(&mut b);
        prepare_rows(&mut b);
        build_metadata(&mut b);
        cache_write(&mut b);
        let mut good = b.clone();
        synthetic_logits(&mut good, &oracle);
        b.meta_block_table[3] = 9; // row 1's first block points elsewhere
        synthetic_logits(&mut b, &oracle);
        assert_ne!(good.logits[21..28], b.logits[21..28]);
        b.meta_block_table[3] = 50; // outside the cache
        synthetic_logits(&mut b, &oracle);
        assert!(b.counters[CTR_OUT_OF_RANGE] > 0);
    }

    #[test]
    fn continuation_counts_context_disagreements_and_exhaustion() {
        let mut b = staged();
        prepare_inputs(&mut b);
        prepare_rows(&mut b);
        build_metadata(&mut b);
        let stride = b.cap.expected_stride();
        // Row 1 (prefill 112..116) recorded as 112..116 then 3, 4.
        b.expected[stride..stride + 6].copy_from_slice(&[112, 113, 114, 115, 3, 4]);
        b.expected_len[1] = 6;
        b.expected_len[0] = 0; // row 0 has no record: every verified position disagrees
        cache_write(&mut b);
        context_check(&mut b);
        // row 0: verified = 8 - 2 = 6 positions, but positions 0..5 were never cached
        // (zeros) and expected_len is 0: 6 mismatches; row 1 matches.
        assert_eq!(b.counters[CTR_MISMATCH], 6);
        continuation_logits(&mut b);
        argmax_rows(&mut b);
        assert_eq!(b.counters[CTR_EXHAUSTED], 3, "row 0's three sampled positions");
        assert_eq!(b.argmax[3], 3, "row 1's position 3 -> recorded token at 4");
    }

    #[test]
    fn argmax_takes_the_lowest_index_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[-0.0, 0.0]), 0);
        assert_eq!(argmax(&[]), -1);
    }
}
