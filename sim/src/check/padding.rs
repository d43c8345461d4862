//! CUDA-graph padding hazards: `padded-slot-write`, `full-padded-row-live`,
//! `stale-tail-read`.
//!
//! Mirrors vLLM 0.12.0 `vllm/v1/worker/gpu_model_runner.py`: `_prepare_inputs` writes
//! only `input_ids`/`positions[:total_num_scheduled_tokens]` of the persistent buffers,
//! a graph replay reads `[:num_padded_tokens]` (the tail is whatever an earlier step
//! left); `_build_attention_metadata` pads `slot_mapping` with -1 and, for FULL graphs,
//! the request dimension (`seqused_k` 0, block-table rows -1).

use super::{list, Finding, Kind};
use crate::trace::{CudagraphMode, Step};

/// The last write of each persistent `input_ids`/`positions` slot.
#[derive(Default)]
pub struct State {
    /// Per slot: (step, request, input id, position) of the last scheduled write.
    slots: Vec<Option<Write>>,
}

#[derive(Clone, PartialEq, Eq)]
struct Write {
    step: u64,
    req: String,
    input_id: i64,
    position: i64,
}

pub(super) fn check(st: &mut State, s: &Step, out: &mut Vec<Finding>) {
    let total = s.total_num_scheduled_tokens as usize;
    padded_slot_write(s, total, out);
    full_padded_row_live(s, out);
    stale_tail(st, s, total, out);
    // This step's writes: the scheduled slots.
    let n = total.min(s.input_ids.len()).min(s.positions.len());
    if st.slots.len() < n {
        st.slots.resize(n, None);
    }
    for i in 0..n {
        let Some(req) = super::owner(s, i) else { break };
        st.slots[i] =
            Some(Write { step: s.step, req: req.to_string(), input_id: s.input_ids[i], position: s.positions[i] });
    }
}

fn padded_slot_write(s: &Step, total: usize, out: &mut Vec<Finding>) {
    let sm = &s.attn.slot_mapping;
    let live: Vec<usize> = (total..sm.len()).filter(|&i| sm[i] != -1).collect();
    if let Some(&first) = live.first() {
        out.push(Finding::new(
            Kind::PaddedSlotWrite,
            s.step,
            None,
            format!("attn.slot_mapping[{first}]"),
            format!(
                "{} padded token(s) (index >= total_num_scheduled_tokens {total}) map to KV slots {} instead of -1: \
                 the padded forward writes KV into live blocks",
                live.len(),
                list(&live.iter().map(|&i| sm[i]).collect::<Vec<_>>())
            ),
        ));
    }
}

fn full_padded_row_live(s: &Step, out: &mut Vec<Finding>) {
    if s.cudagraph_mode != CudagraphMode::Full {
        return;
    }
    let a = &s.attn;
    // Rows past what the metadata holds cannot be live (and a hostile count is no loop).
    let padded = (s.num_reqs_padded as usize).min(a.block_table.len().max(a.seqused_k.len()));
    for row in s.batch_req_ids.len()..padded {
        let table = a.block_table.get(row).filter(|t| t.iter().any(|&b| b != -1));
        let used = a.seqused_k.get(row).copied().filter(|&u| u != 0);
        if table.is_none() && used.is_none() {
            continue;
        }
        let mut what = Vec::new();
        if let Some(t) = table {
            what.push(format!("block_table[{row}] = {} (expected all -1)", list(t)));
        }
        if let Some(u) = used {
            what.push(format!("seqused_k[{row}] = {u} (expected 0)"));
        }
        out.push(Finding::new(
            Kind::FullPaddedRowLive,
            s.step,
            None,
            format!("attn.{}[{row}]", if table.is_some() { "block_table" } else { "seqused_k" }),
            format!(
                "FULL graph padded request row {row} (of {} padded, {} real) is live: {}; attention would read a \
                 real request's KV",
                s.num_reqs_padded,
                s.batch_req_ids.len(),
                what.join(", ")
            ),
        ));
    }
}

/// Who last wrote a slot: (step, request), or never written.
type Origin<'a> = Option<(u64, &'a str)>;

/// One finding per graph replay with a padded tail: which slots were read and where each
/// run of consecutive slots got its value.
fn stale_tail(st: &State, s: &Step, total: usize, out: &mut Vec<Finding>) {
    if s.cudagraph_mode == CudagraphMode::None {
        return;
    }
    let end = (s.num_padded_tokens as usize).min(s.input_ids.len()).min(s.positions.len());
    if end <= total {
        return;
    }
    // Runs of slots with the same origin (writer step + request, or never written).
    let mut runs: Vec<(usize, usize, Origin)> = Vec::new();
    let mut mismatched = Vec::new();
    for i in total..end {
        let w = st.slots.get(i).and_then(Option::as_ref);
        let key = w.map(|w| (w.step, w.req.as_str()));
        if let Some(w) = w {
            if w.input_id != s.input_ids[i] || w.position != s.positions[i] {
                mismatched.push(i);
            }
        }
        match runs.last_mut() {
            Some((_, hi, k)) if *k == key && *hi == i => *hi = i + 1,
            _ => runs.push((i, i + 1, key)),
        }
    }
    let origins: Vec<String> = runs
        .iter()
        .map(|(lo, hi, k)| {
            let slots = if hi - lo == 1 { format!("slot {lo}") } else { format!("slots {lo}-{}", hi - 1) };
            match k {
                Some((step, req)) => format!("{slots} from step {step} request {req:?}"),
                None => format!("{slots} never written in this trace"),
            }
        })
        .collect();
    let mismatch = if mismatched.is_empty() {
        String::new()
    } else {
        format!("; slots {} do not hold what their last write stored", list(&mismatched))
    };
    out.push(Finding::new(
        Kind::StaleTailRead,
        s.step,
        None,
        format!("input_ids[{total}..{end}]"),
        format!(
            "{} replay of {} tokens for {total} scheduled read stale input_ids {} / positions {}: {}{mismatch}",
            s.cudagraph_mode,
            s.num_padded_tokens,
            list(&s.input_ids[total..end]),
            list(&s.positions[total..end]),
            origins.join(", ")
        ),
    ));
}
