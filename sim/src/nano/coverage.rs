//! Coverage marks of a nano-vllm trace: which of nano-vllm's behaviours a recorded run
//! exercises, read from the trace alone (so they hold for recordings of nano-vllm's own
//! code as much as for the simulator's). Tests require marks to stay non-zero.

use std::collections::{BTreeMap, HashMap};

use crate::trace::Trace;

/// Counts, per mark, the steps (or requests, for finish marks) that show it.
///
/// Marks: `prefill_step`, `decode_step`, `idle_step`, `multi_sequence_prefill`,
/// `prefix_hit` (a prefill whose `cu_seqlens_k` exceeds `cu_seqlens_q` for a sequence),
/// `fully_cached_prompt` (a prefilled sequence with no token to compute),
/// `stale_hash_hit` (a hit on a block whose KV was last written under another prefix;
/// tracked from the slot writes, block size 256 only), `stale_hit_one_token` (such a
/// hit leaving exactly one token to compute), `preemption`,
/// `reprefill_after_preemption`, `may_append_new_block` (a decode step growing a
/// block table), `decode_fills_block` (a decode of the block's last slot, which
/// `may_append` hashes), `eos_finish`, `max_tokens_finish`, `block_size_over_256`.
pub fn marks(t: &Trace) -> BTreeMap<&'static str, usize> {
    let mut c: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut mark = |k: &'static str, hit: bool| *c.entry(k).or_default() += usize::from(hit);
    let bs = t.config.block_size as usize;
    mark("block_size_over_256", bs > 256);
    let full: HashMap<&str, Vec<u32>> = t
        .requests
        .iter()
        .map(|r| {
            let out = t.outputs.get(&r.req_id).map(Vec::as_slice).unwrap_or(&[]);
            (r.req_id.as_str(), [r.prompt_token_ids.as_slice(), out].concat())
        })
        .collect();
    let prompt_len: HashMap<&str, usize> =
        t.requests.iter().map(|r| (r.req_id.as_str(), r.prompt_token_ids.len())).collect();
    for r in &t.requests {
        let out = t.outputs.get(&r.req_id).map(Vec::as_slice).unwrap_or(&[]);
        let on_eos = !r.ignore_eos && r.eos_token_id.is_some() && out.last().copied() == r.eos_token_id;
        mark("eos_finish", on_eos && out.len() < r.max_tokens as usize);
        mark("max_tokens_finish", out.len() == r.max_tokens as usize);
    }
    // Block → the token prefix whose KV its last slot holds (None: partly rewritten).
    let mut filled: HashMap<i64, Vec<u32>> = HashMap::new();
    let mut last_table: HashMap<&str, usize> = HashMap::new();
    for s in &t.steps {
        mark("idle_step", s.idle);
        let Some(ctx) = s.context.as_ref().filter(|_| !s.idle) else { continue };
        mark("preemption", !s.preempted_req_ids.is_empty());
        let n = s.batch_req_ids.len();
        // Owner of each input row.
        let owners: Vec<&str> = if ctx.is_prefill {
            let cu = ctx.cu_seqlens_q.as_deref().unwrap_or(&[]);
            (0..n)
                .flat_map(|j| std::iter::repeat_n(s.batch_req_ids[j].as_str(), (cu[j + 1] - cu[j]) as usize))
                .collect()
        } else {
            s.batch_req_ids.iter().map(String::as_str).collect()
        };
        if bs == 256 && ctx.slot_mapping.len() == s.positions.len() {
            for ((&pos, &slot), r) in s.positions.iter().zip(&ctx.slot_mapping).zip(&owners) {
                let b = slot / bs as i64;
                if slot % bs as i64 == bs as i64 - 1 {
                    filled.insert(b, full[r][..pos as usize + 1].to_vec());
                } else {
                    filled.remove(&b);
                }
            }
        }
        if ctx.is_prefill {
            mark("prefill_step", true);
            mark("multi_sequence_prefill", n >= 2);
            let (cq, ck) = (ctx.cu_seqlens_q.as_deref().unwrap_or(&[]), ctx.cu_seqlens_k.as_deref().unwrap_or(&[]));
            for (j, r) in s.batch_req_ids.iter().enumerate() {
                let (q, k) = ((cq[j + 1] - cq[j]) as usize, (ck[j + 1] - ck[j]) as usize);
                let cached = k - q;
                mark("prefix_hit", cached > 0);
                mark("fully_cached_prompt", q == 0);
                mark("reprefill_after_preemption", k > prompt_len[r.as_str()]);
                if bs == 256 {
                    let stale = (0..cached / bs).any(|bi| {
                        let b = i64::from(s.block_ids[r][bi]);
                        filled.get(&b).map(Vec::as_slice) != Some(&full[r.as_str()][..(bi + 1) * bs])
                    });
                    mark("stale_hash_hit", stale);
                    mark("stale_hit_one_token", stale && q == 1);
                }
            }
        } else {
            mark("decode_step", true);
            for (j, r) in s.batch_req_ids.iter().enumerate() {
                let len = ctx.context_lens.as_deref().unwrap_or(&[])[j] as usize;
                mark("decode_fills_block", len.is_multiple_of(bs));
                let grew = last_table.get(r.as_str()).is_some_and(|&w| s.block_ids[r].len() > w);
                mark("may_append_new_block", grew);
            }
        }
        for (r, b) in &s.block_ids {
            last_table.insert(r.as_str(), b.len());
        }
    }
    c
}
