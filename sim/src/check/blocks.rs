//! KV-block hazards: `blocks-freed-while-running`, `block-shared-without-prefix-hit`.
//!
//! Mirrors vLLM 0.12.0 `vllm/v1/core/kv_cache_manager.py` / `block_pool.py`: a
//! request's block list only grows while it runs (`allocate_slots` appends); blocks are
//! freed on finish (`free`) or preemption (`_preempt_request`); two requests share a
//! block only when the later one found it through the prefix cache at admission
//! (`get_computed_blocks`: its leading `num_computed_tokens / block_size` blocks).
//!
//! Derived from the trace: `block_ids` lists the blocks of each *scheduled* request after
//! allocation; a running request that is not scheduled keeps the blocks last seen. The
//! prefix hit of a request is `num_computed_tokens` at the step it (re-)enters the
//! running set, in whole blocks. nano-vllm traces record no `num_computed_tokens`, so
//! the sharing check runs on vLLM traces only.

use std::collections::BTreeMap;

use super::{list, Finding, Kind};
use crate::config::Config;
use crate::trace::Step;

#[derive(Default)]
pub struct State {
    /// Blocks held by each running request (last seen).
    held: BTreeMap<String, Vec<u32>>,
    /// Leading blocks of each running request that came from a prefix-cache hit.
    hit_blocks: BTreeMap<String, usize>,
}

pub(super) fn check(st: &mut State, cfg: &Config, s: &Step, vllm: bool, out: &mut Vec<Finding>) {
    for r in &s.preempted_req_ids {
        st.held.remove(r);
        st.hit_blocks.remove(r);
    }
    let bs = cfg.block_size.max(1) as usize;
    for (r, blocks) in &s.block_ids {
        match st.held.get(r) {
            Some(old) => {
                let lost: Vec<u32> = old.iter().copied().filter(|b| !blocks.contains(b)).collect();
                if !lost.is_empty() || !blocks.starts_with(old) {
                    out.push(Finding::new(
                        Kind::BlocksFreedWhileRunning,
                        s.step,
                        Some(r),
                        format!("block_ids[{r:?}]"),
                        format!(
                            "request holds {} but held {} before and was neither preempted nor finished: blocks {} \
                             were freed or reordered while it runs",
                            list(blocks),
                            list(old),
                            list(&lost)
                        ),
                    ));
                }
            }
            None => {
                let computed = s.num_computed_tokens.get(r).copied().unwrap_or(0) as usize;
                st.hit_blocks.insert(r.clone(), computed / bs);
            }
        }
        st.held.insert(r.clone(), blocks.clone());
    }
    if vllm && cfg.profile == crate::config::Profile::VllmV1 {
        shared(st, cfg, s, out);
    }
    for r in &s.finished_req_ids {
        st.held.remove(r);
        st.hit_blocks.remove(r);
    }
}

/// Every block held by two or more running requests must sit at the same index of each
/// list, inside the prefix-cache hit of all but at most one of them (the one that
/// computed it), with prefix caching on. Reported once per (step, block).
fn shared(st: &State, cfg: &Config, s: &Step, out: &mut Vec<Finding>) {
    let mut holders: BTreeMap<u32, Vec<(&str, usize)>> = BTreeMap::new();
    for (r, blocks) in &st.held {
        for (j, &b) in blocks.iter().enumerate() {
            if b != 0 {
                holders.entry(b).or_default().push((r, j));
            }
        }
    }
    for (b, hs) in holders.into_iter().filter(|(_, hs)| hs.len() > 1) {
        let same_index = hs.iter().all(|&(_, j)| j == hs[0].1);
        let not_hit: Vec<&str> =
            hs.iter().filter(|&&(r, j)| j >= st.hit_blocks.get(r).copied().unwrap_or(0)).map(|&(r, _)| r).collect();
        if cfg.enable_prefix_caching && same_index && not_hit.len() <= 1 {
            continue;
        }
        // Name a request that is in this step when one is (the one a reader looks at).
        let req = hs.iter().map(|&(r, _)| r).find(|r| s.block_ids.contains_key(*r)).unwrap_or(hs[0].0);
        let who: Vec<String> = hs.iter().map(|(r, j)| format!("{r:?} (index {j})")).collect();
        let why = if !cfg.enable_prefix_caching {
            "prefix caching is off".to_string()
        } else if !same_index {
            "the block sits at different indices of their block lists".to_string()
        } else {
            format!("{} did not get it from a prefix-cache hit at admission", list(&not_hit))
        };
        out.push(Finding::new(
            Kind::BlockSharedWithoutPrefixHit,
            s.step,
            Some(req),
            format!("block_ids[{req:?}]"),
            format!("block {b} is held by {}: {why}", who.join(", ")),
        ));
    }
}
