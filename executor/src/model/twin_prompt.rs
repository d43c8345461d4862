//! One prompt through the executor's forward pass on its bitwise CPU twin
//! ([`HostModel`], the same bits as the CUDA kernels): the logits of every prefill
//! position and a greedy continuation, for `gpu reference --forward executor`, so
//! `scripts/hf_reference.py compare` measures what the GPU computes (bf16 activations, f32
//! accumulation) against transformers, not only the f32 reference ([`super::reference`]).
//!
//! The step buffers are filled directly (one sequence, slot = position, block table
//! 0, 1, 2, ...): this is a model harness, not an engine; generation through the engine is
//! `gpu generate`.

use super::host::{margin, top1, HostModel};
use super::reference::Generated;
use super::weights::HostWeights;
use crate::error::{ExecError, Result};
use crate::layout::*;

/// Capacity of a one-sequence run of `len` positions (prefill rows included).
fn capacity(len: usize, vocab: usize, prefill: usize) -> Capacity {
    let block_size = 16;
    let blocks = len.div_ceil(block_size).max(1);
    Capacity {
        max_num_seqs: 1,
        max_model_len: blocks * block_size,
        blocks_per_row: blocks,
        block_size,
        max_tokens: prefill.max(1),
        num_blocks: blocks,
        max_logits: prefill.max(1),
        vocab,
        max_width: 1,
    }
}

/// Runs `tokens` at positions `start..` (one sequence, KV of positions `< start` already
/// in `m`'s caches); every position gets a logits row, returned in order.
fn step(m: &mut HostModel, b: &mut HostBuffers, tokens: &[u32], start: usize) -> Vec<Vec<f32>> {
    let t = tokens.len();
    let bpr = b.cap.blocks_per_row;
    for (i, &tok) in tokens.iter().enumerate() {
        b.input_ids[i] = tok as i32;
        b.positions[i] = (start + i) as i64;
        b.slot_mapping[i] = (start + i) as i64;
        b.logits_indices[i] = i as i32;
    }
    b.cu_seqlens_q[0] = 0;
    b.cu_seqlens_q[1] = t as i32;
    b.seqused_k[0] = (start + t) as i32;
    for j in 0..bpr {
        b.meta_block_table[j] = j as i32;
    }
    b.counts[C_NUM_REQS] = 1;
    b.counts[C_META_REQS] = 1;
    b.counts[C_META_TOKENS] = t as i32;
    b.counts[C_NUM_LOGITS] = t as i32;
    b.counts[C_WIDTH] = 1;
    b.counts[C_PADDED_TOKENS] = t as i32;
    m.forward(b);
    let v = b.cap.vocab;
    (0..t).map(|j| b.logits[j * v..(j + 1) * v].to_vec()).collect()
}

/// The prefill logits of `prompt` (one row per position) and `n` greedy tokens with the
/// top-1/top-2 margin at each (argmax: lowest id on ties).
pub fn prefill_and_generate(w: HostWeights, prompt: &[u32], n: usize) -> Result<(Vec<Vec<f32>>, Generated)> {
    if prompt.is_empty() {
        return Err(ExecError::Input("an empty prompt has no logits".into()));
    }
    let vocab = w.cfg.vocab_size;
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(ExecError::Input(format!("token id {bad} is outside the vocabulary ({vocab})")));
    }
    let cap = capacity(prompt.len() + n, vocab, prompt.len());
    let mut b = HostBuffers::zeroed(cap)?;
    let mut m = HostModel::new(w, &cap);
    let prefill = step(&mut m, &mut b, prompt, 0);
    let mut out = Vec::with_capacity(n);
    let mut last = prefill.last().cloned().unwrap_or_default();
    for i in 0..n {
        let (tok, _) = top1(&last);
        out.push((tok, margin(&last)));
        if i + 1 < n {
            last = step(&mut m, &mut b, &[tok], prompt.len() + i).remove(0);
        }
    }
    if b.counters.iter().any(|&c| c != 0) {
        return Err(ExecError::Input(format!("the forward pass flagged its counters {:?}", b.counters)));
    }
    Ok((prefill, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::reference::Reference;
    use crate::model::weights::random_weights;
    use crate::model::ModelConfig;

    /// The twin's prefill rows agree with the f32 reference to bf16 accuracy and its
    /// last row equals what an incremental decode of the same prefix computes.
    #[test]
    fn prefill_rows_track_the_reference_and_decode_matches_prefill() {
        let cfg = ModelConfig::tiny();
        let mem = random_weights(&cfg, 3);
        let w = HostWeights::load(&cfg, &mem).unwrap();
        let prompt: Vec<u32> = (0..7).map(|i| 3 + 11 * i).collect();
        let (rows, gen) = prefill_and_generate(w.clone(), &prompt, 4).unwrap();
        assert_eq!((rows.len(), gen.len()), (7, 4));
        let reference = Reference::new(&cfg, &mem).unwrap().logits(&prompt).unwrap();
        for (a, b) in rows.iter().zip(&reference) {
            let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(err <= 0.05 * scale, "bf16 twin vs f32 reference: {err} of {scale}");
        }
        // Decoding the prompt's last token after a prefill of the rest gives the bits of
        // the full prefill's last row (the batch invariance the GPU relies on).
        let (head, _) = prefill_and_generate(w.clone(), &prompt[..6], 0).unwrap();
        assert_eq!(head.len(), 6);
        let cap = capacity(8, cfg.vocab_size, 6);
        let mut b = HostBuffers::zeroed(cap).unwrap();
        let mut m = HostModel::new(w, &cap);
        step(&mut m, &mut b, &prompt[..6], 0);
        let last = step(&mut m, &mut b, &prompt[6..], 6);
        assert_eq!(
            last[0].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            rows[6].iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(gen[0].0, top1(&rows[6]).0);
    }
}
