//! Speculative-decoding hazards: `stale-drafts-verified`, `acceptance-over-drafts`,
//! `drafts-for-finished-request`, `drafter-gate-suppressed`.
//!
//! Mirrors vLLM 0.12.0 `vllm/v1/worker/gpu_model_runner.py` (`_update_states`,
//! `_calc_spec_decode_metadata`, `sample_tokens`' drafter gate) and
//! `vllm/v1/sample/rejection_sampler.py` (row layout: accepted drafts, then the
//! target/bonus token, then -1).

use std::collections::BTreeMap;

use super::{list, Finding, Kind};
use crate::config::{Config, SpecMethod};
use crate::trace::Step;

/// A shadow of every persistent-batch token row: for each (row, position), the step
/// and request at which its current value first appeared there (from the recorded
/// `token_ids_cpu` rows), to name where a stale draft came from.
#[derive(Default)]
pub struct State {
    rows: Vec<Vec<Slot>>,
    names: Vec<String>,
    ids: BTreeMap<String, u32>,
}

#[derive(Clone, Copy)]
struct Slot {
    step: u64,
    req: u32,
    value: i64,
}

impl State {
    fn intern(&mut self, r: &str) -> u32 {
        if let Some(&i) = self.ids.get(r) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(r.to_string());
        self.ids.insert(r.to_string(), i);
        i
    }

    /// Records the token rows after `s`'s bookkeeping: a slot changes owner only when
    /// its value changes (a request re-added over a stale tail does not own that tail).
    fn update(&mut self, s: &Step) {
        if self.rows.len() < s.batch_req_ids.len() {
            self.rows.resize(s.batch_req_ids.len(), Vec::new());
        }
        for (row, r) in s.batch_req_ids.iter().enumerate() {
            let Some(toks) = s.token_ids_cpu.get(r) else { continue };
            let req = self.intern(r);
            let shadow = &mut self.rows[row];
            for (p, &v) in toks.iter().enumerate() {
                match shadow.get_mut(p) {
                    Some(slot) if slot.value == v => {}
                    Some(slot) => *slot = Slot { step: s.step, req, value: v },
                    None => shadow.push(Slot { step: s.step, req, value: v }),
                }
            }
        }
    }
}

pub(super) fn check(st: &mut State, cfg: &Config, s: &Step, vllm: bool, out: &mut Vec<Finding>) {
    if vllm {
        stale_drafts(st, s, out);
    }
    acceptance_over_drafts(s, out);
    if vllm {
        finished_with_drafts(s, out);
        gate(cfg, s, out);
        st.update(s);
    }
}

/// The drafts fed to the target are `input_ids` at the last `len(drafts)` slots of the
/// request's query (`cu_seqlens_q[row + 1] - len .. cu_seqlens_q[row + 1]`); the
/// rejection sampler verifies those, whatever the scheduler reported.
fn stale_drafts(st: &State, s: &Step, out: &mut Vec<Finding>) {
    for (row, r) in s.batch_req_ids.iter().enumerate() {
        let Some(sched) = s.scheduled_spec_decode_tokens.get(r).filter(|d| !d.is_empty()) else { continue };
        let Some(&end) = s.attn.cu_seqlens_q.get(row + 1) else { continue };
        let (Ok(end), n) = (usize::try_from(end), sched.len()) else { continue };
        if end < n || end > s.input_ids.len() {
            continue;
        }
        let fed = &s.input_ids[end - n..end];
        if fed.iter().zip(sched).all(|(&f, &d)| f == i64::from(d)) {
            continue;
        }
        let positions: Option<Vec<usize>> = s
            .positions
            .get(end - n..end)
            .map(|p| p.iter().map(|&x| usize::try_from(x).unwrap_or(usize::MAX)).collect());
        let origin = origin(st, row, fed, positions.as_deref());
        let sampler = s.output_token_ids.get(row).map_or("?".to_string(), |o| list(o));
        out.push(Finding::new(
            Kind::StaleDraftsVerified,
            s.step,
            Some(r),
            format!("input_ids[{}..{end}]", end - n),
            format!(
                "verified drafts {} differ from the scheduled drafts {} (sampler row {sampler}); {origin}: the \
                 request re-entered the persistent batch and _update_states did not write its drafts",
                list(fed),
                list(sched)
            ),
        ));
    }
}

/// Where stale draft values came from: the requests and steps that wrote them into this
/// batch row, or never-written (zero) slots.
fn origin(st: &State, row: usize, fed: &[i64], positions: Option<&[usize]>) -> String {
    let shadow = st.rows.get(row).map_or(&[][..], Vec::as_slice);
    let mut parts: Vec<String> = Vec::new();
    for (i, &f) in fed.iter().enumerate() {
        let slot = positions.and_then(|p| p.get(i)).and_then(|&p| shadow.get(p)).filter(|s| s.value == f);
        let part = match slot {
            Some(s) => format!("written by request {:?} at step {}", st.names[s.req as usize], s.step),
            None if f == 0 => "never written (zero)".to_string(),
            None => "unknown".to_string(),
        };
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    format!("stale slots of batch row {row}: {}", parts.join(", then "))
}

/// A row with more valid tokens than drafts fed + 1.
fn acceptance_over_drafts(s: &Step, out: &mut Vec<Finding>) {
    for (row, r) in s.batch_req_ids.iter().enumerate() {
        let Some(o) = s.output_token_ids.get(row) else { continue };
        let valid = o.iter().filter(|&&x| x >= 0).count();
        let drafts = s.scheduled_spec_decode_tokens.get(r).map_or(0, Vec::len);
        if valid > drafts + 1 {
            out.push(Finding::new(
                Kind::AcceptanceOverDrafts,
                s.step,
                Some(r),
                format!("output_token_ids[{row}]"),
                format!(
                    "sampler row {} accepts {} token(s) but only {drafts} draft(s) were fed (at most drafts + 1 \
                     tokens per row)",
                    list(o),
                    valid - 1
                ),
            ));
        }
    }
}

fn finished_with_drafts(s: &Step, out: &mut Vec<Finding>) {
    for r in &s.finished_req_ids {
        if let Some(d) = s.draft_token_ids.get(r).filter(|d| !d.is_empty()) {
            out.push(Finding::new(
                Kind::DraftsForFinishedRequest,
                s.step,
                Some(r),
                format!("draft_token_ids[{r:?}]"),
                format!(
                    "drafts {} proposed for a request that finished in this step (the drafter runs before \
                     update_from_output; the proposal is dropped)",
                    list(d)
                ),
            ));
        }
    }
}

/// The drafter did not run (empty `draft_token_ids`) in a speculative run.
fn gate(cfg: &Config, s: &Step, out: &mut Vec<Finding>) {
    if cfg.method != SpecMethod::Ngram || !s.draft_token_ids.is_empty() || s.batch_req_ids.is_empty() {
        return;
    }
    let max_seq = u64::from(s.attn.max_seqlen_k);
    let k = u64::from(cfg.num_speculative_tokens);
    let why = if max_seq + k > u64::from(cfg.max_model_len) {
        format!("max_seqlen_k {max_seq} + k {k} > max_model_len {}", cfg.max_model_len)
    } else {
        format!(
            "the drafter did not run although max_seqlen_k {max_seq} + k {k} <= max_model_len {}",
            cfg.max_model_len
        )
    };
    let longest = longest_request(s);
    out.push(Finding::new(
        Kind::DrafterGateSuppressed,
        s.step,
        None,
        "draft_token_ids".into(),
        format!(
            "batch-wide drafter gate: {why}; no request of the {} in the batch got proposals{}",
            s.batch_req_ids.len(),
            longest.map_or(String::new(), |r| format!(" (longest sequence: request {r:?})"))
        ),
    ));
}

fn longest_request(s: &Step) -> Option<&str> {
    let lens: BTreeMap<usize, &str> = s
        .batch_req_ids
        .iter()
        .enumerate()
        .filter_map(|(row, r)| s.attn.seqused_k.get(row).map(|&l| (l.max(0) as usize, r.as_str())))
        .collect();
    lens.last_key_value().map(|(_, r)| *r)
}
