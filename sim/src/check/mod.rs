//! The hazard checker: walks a recorded trace (any recorder: this simulator, vLLM's own
//! code through the conformance driver, another engine) and reports steps where the
//! recorded bookkeeping shows a hazard, one [`Finding`] each.
//!
//! Kinds are stable kebab-case identifiers ([`Kind::as_str`]); each has a severity:
//!
//! * [`Severity::Error`]: a state vLLM 0.12.0 never reaches (an invariant of its
//!   scheduler, KV cache manager or model runner is broken: a KV write into a live block,
//!   freed blocks still in use, ...). On a trace recorded from vLLM, or from the
//!   simulator, none should ever appear.
//! * [`Severity::Warn`]: a vLLM quirk that changes what is verified or counted
//!   (`docs/vllm-quirks.md` §1: stale drafts verified).
//! * [`Severity::Info`]: explanation, not a fault: the batch-wide drafter gate, drafts
//!   for requests that finish in the same step, and which stale values a graph replay read.
//!
//! The checks are grouped by hazard family: [`drafts`] (speculative decoding),
//! [`padding`] (CUDA-graph padding and the persistent input buffers), [`blocks`] (KV
//! blocks). The checker is streaming ([`Checker::step`]): it keeps only the state the
//! checks need (the last writer of each persistent input slot, the blocks each running
//! request holds, the last occupant of each batch row).
//!
//! The golden 13-step trace (`traces/vllm_ngram_13step.json`) yields info findings only:
//! `stale-tail-read` at steps 2, 4, 5, 7 and 13 (PIECEWISE replays of 3 tokens for 1
//! scheduled, reading `input_ids`/`positions` slots 1-2 last written by request "0" at
//! steps 1, 3, 3, 6 and 12) and `drafter-gate-suppressed` at step 13 (max_seqlen_k 31 +
//! k 2 > max_model_len 32); `tests/check.rs` pins this list.

use std::collections::BTreeMap;

use crate::config::{Config, Profile};
use crate::trace::{Header, Step, Trace};

pub mod blocks;
pub mod drafts;
pub mod padding;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Explanation (a vLLM behaviour worth seeing, not a fault).
    Info,
    /// A vLLM behaviour that changes what is verified or counted.
    Warn,
    /// A state vLLM 0.12.0 cannot reach: the recorder or the engine broke an invariant.
    Error,
}

impl Severity {
    /// `"error"`, `"warn"` or `"info"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
            Severity::Info => "info",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hazard kind. The spelling of [`Kind::as_str`] is a stable identifier (`--deny`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The drafts the runner fed (read back from `input_ids`) differ from the drafts
    /// the scheduler scheduled for the request (`docs/vllm-quirks.md` §1; vLLM 0.12.0
    /// `gpu_model_runner.py` `_update_states` re-adds a request without its drafts).
    StaleDraftsVerified,
    /// A padded token (index ≥ `total_num_scheduled_tokens`) with `slot_mapping` ≠ -1:
    /// the padded forward would write KV into a live block (vLLM pads the slot mapping
    /// with -1, `gpu_model_runner.py` `_build_attention_metadata`).
    PaddedSlotWrite,
    /// A FULL-graph padded request row whose block-table row is not all -1 or whose
    /// `seqused_k` is not 0 (vLLM 0.12.0 pads FULL metadata that way,
    /// `flash_attn.py` `FlashAttentionMetadataBuilder.build` with padded `num_reqs`).
    FullPaddedRowLive,
    /// A scheduled position ≥ `max_model_len` (the scheduler's clamp,
    /// `vllm/v1/core/sched/scheduler.py`, never schedules one).
    PositionOverMaxModelLen,
    /// A sampler row holding more accepted tokens than drafts were fed
    /// (`vllm/v1/sample/rejection_sampler.py`: at most `num_draft` + the bonus token).
    AcceptanceOverDrafts,
    /// A running request (not preempted, not finished) holds fewer of its earlier blocks
    /// than before (`vllm/v1/core/kv_cache_manager.py` frees only on finish/preemption).
    BlocksFreedWhileRunning,
    /// A block held by two requests where no prefix-cache hit explains it
    /// (`vllm/v1/core/block_pool.py` shares only cached full blocks found by
    /// `get_computed_blocks` at admission).
    BlockSharedWithoutPrefixHit,
    /// Drafts proposed for a request that finished in the same step
    /// (`docs/vllm-quirks.md` §3: proposals run before `update_from_output`).
    DraftsForFinishedRequest,
    /// The batch-wide drafter gate `max_seq_len + k <= max_model_len` switched drafting
    /// off for every request of a step (`docs/vllm-quirks.md` §4).
    DrafterGateSuppressed,
    /// A graph replay read padded `input_ids`/`positions` slots holding values written by
    /// an earlier step (vLLM writes only `[:total_num_scheduled_tokens]` of the
    /// persistent buffers, `gpu_model_runner.py` `_prepare_inputs`).
    StaleTailRead,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 10] = [
        Kind::StaleDraftsVerified,
        Kind::PaddedSlotWrite,
        Kind::FullPaddedRowLive,
        Kind::PositionOverMaxModelLen,
        Kind::AcceptanceOverDrafts,
        Kind::BlocksFreedWhileRunning,
        Kind::BlockSharedWithoutPrefixHit,
        Kind::DraftsForFinishedRequest,
        Kind::DrafterGateSuppressed,
        Kind::StaleTailRead,
    ];

    /// The stable identifier.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::StaleDraftsVerified => "stale-drafts-verified",
            Kind::PaddedSlotWrite => "padded-slot-write",
            Kind::FullPaddedRowLive => "full-padded-row-live",
            Kind::PositionOverMaxModelLen => "position-over-max-model-len",
            Kind::AcceptanceOverDrafts => "acceptance-over-drafts",
            Kind::BlocksFreedWhileRunning => "blocks-freed-while-running",
            Kind::BlockSharedWithoutPrefixHit => "block-shared-without-prefix-hit",
            Kind::DraftsForFinishedRequest => "drafts-for-finished-request",
            Kind::DrafterGateSuppressed => "drafter-gate-suppressed",
            Kind::StaleTailRead => "stale-tail-read",
        }
    }

    /// Parses an identifier.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The severity every finding of this kind has.
    pub fn severity(self) -> Severity {
        match self {
            Kind::StaleDraftsVerified => Severity::Warn,
            Kind::DraftsForFinishedRequest | Kind::DrafterGateSuppressed | Kind::StaleTailRead => Severity::Info,
            _ => Severity::Error,
        }
    }

    /// Whether vLLM 0.12.0 itself produces this kind (every kind but the errors).
    pub fn possible_in_vllm(self) -> bool {
        self.severity() != Severity::Error
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One hazard at one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub severity: Severity,
    /// 1-based engine step.
    pub step: u64,
    /// The request concerned, when the hazard belongs to one.
    pub req_id: Option<String>,
    /// The trace field path (`input_ids[3..5]`, `attn.slot_mapping[7]`, `block_ids["a"]`).
    pub field: String,
    /// What was seen and why it matters.
    pub message: String,
}

impl Finding {
    pub(crate) fn new(kind: Kind, step: u64, req_id: Option<&str>, field: String, message: String) -> Finding {
        Finding { kind, severity: kind.severity(), step, req_id: req_id.map(str::to_string), field, message }
    }
}

/// Streaming checker: feed the header, then each step in order.
pub struct Checker {
    cfg: Config,
    padding: padding::State,
    drafts: drafts::State,
    blocks: blocks::State,
}

impl Checker {
    /// A checker for a trace with this header.
    pub fn new(h: &Header) -> Checker {
        Checker {
            cfg: h.config.clone(),
            padding: padding::State::default(),
            drafts: drafts::State::default(),
            blocks: blocks::State::default(),
        }
    }

    /// Checks one step (idle steps change nothing), appending its findings in a fixed
    /// order (drafts, padding, blocks; within a family, batch-row or request-id order).
    pub fn step(&mut self, s: &Step, out: &mut Vec<Finding>) {
        if s.idle {
            return;
        }
        let vllm = self.cfg.profile == Profile::VllmV1 && s.context.is_none();
        position_over_max_model_len(&self.cfg, s, out);
        drafts::check(&mut self.drafts, &self.cfg, s, vllm, out);
        if vllm {
            padding::check(&mut self.padding, s, out);
        }
        blocks::check(&mut self.blocks, &self.cfg, s, vllm, out);
    }
}

/// Every finding of an in-memory trace, in step order.
pub fn check_trace(t: &Trace) -> Vec<Finding> {
    let mut c = Checker::new(&t.header());
    let mut out = Vec::new();
    for s in &t.steps {
        c.step(s, &mut out);
    }
    out
}

/// Findings per kind (every kind present, zero included), in [`Kind::ALL`] order.
pub fn counts(findings: &[Finding]) -> BTreeMap<Kind, usize> {
    let mut c: BTreeMap<Kind, usize> = Kind::ALL.iter().map(|&k| (k, 0)).collect();
    for f in findings {
        *c.entry(f.kind).or_default() += 1;
    }
    c
}

/// `position-over-max-model-len`: scheduled positions only (padded slots are stale).
fn position_over_max_model_len(cfg: &Config, s: &Step, out: &mut Vec<Finding>) {
    let mml = i64::from(cfg.max_model_len);
    let n = (s.total_num_scheduled_tokens as usize).min(s.positions.len());
    let Some(i) = s.positions[..n].iter().position(|&p| p >= mml) else { return };
    let req = owner(s, i);
    out.push(Finding::new(
        Kind::PositionOverMaxModelLen,
        s.step,
        req,
        format!("positions[{i}]"),
        format!(
            "scheduled position {} >= max_model_len {} (the scheduler clamps every request to max_model_len - 1 tokens)",
            s.positions[i], cfg.max_model_len
        ),
    ));
}

/// The request owning scheduled token `i` (by `cu_seqlens_q`, else by the per-request
/// counts in batch order).
pub(crate) fn owner(s: &Step, i: usize) -> Option<&str> {
    let mut end = 0usize;
    for r in &s.batch_req_ids {
        end += s.num_scheduled_tokens.get(r).copied().unwrap_or(0) as usize;
        if i < end {
            return Some(r);
        }
    }
    None
}

/// `[a, b, c]` for messages.
pub(crate) fn list<T: std::fmt::Display>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_are_kebab_case() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert!(k.as_str().chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{k}");
        }
        assert_eq!(Kind::parse("stale-drafts"), None);
        assert!(!Kind::PaddedSlotWrite.possible_in_vllm());
        assert!(Kind::StaleTailRead.possible_in_vllm());
    }
}
