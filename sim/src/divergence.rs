//! Why two generation traces diverge: given the first step where two traces recorded by a
//! model (both headers name a `backend`) differ, every earlier step being identical, say
//! whether the engine's bookkeeping went apart first or the model's numbers did, and if
//! the numbers, whether the row was a near-tie that bf16 rounding alone can flip.
//!
//! The step's fields split in two. Everything the scheduler and the runner's bookkeeping
//! fix *before* the forward pass (scheduled tokens, computed tokens, block ids, batch
//! order, graph mode and padding, `input_ids`, `positions`, `logits_indices`, attention
//! metadata with `slot_mapping`, nano's context) depends only on earlier steps; what the
//! sampler's output decides (`output_token_ids`, `draft_token_ids`, `token_ids_cpu`,
//! `finished_req_ids`, `num_free_blocks`, `random_draws`) and the logits evidence
//! (`logits`) come after it. Then, in order:
//!
//! 1. a bookkeeping field differs: [`Cause::Bookkeeping`] (the inputs the device was given,
//!    or read back, went apart before any logits row did);
//! 2. else the first logits row (in `logits_indices` order) whose digest or top-1 token
//!    differs: [`Cause::NearTie`] when its recorded margin in either trace is within bf16
//!    rounding of a tie ([`crate::trace::evidence::near_tie_threshold`]:
//!    margin ≤ 2^-7 × |top-1 logit|), else [`Cause::Numerical`];
//! 3. else (same logits rows, yet the sampler's output differs): [`Cause::Sampler`];
//! 4. without logits rows on both sides nothing more can be said: [`Cause::NoEvidence`].
//!
//! The question mirrors how engines report greedy-output changes under speculation (vLLM
//! issue #41758: n-gram speculation changes Qwen3-0.6B's greedy output; whether that is a
//! near-tie flipped by a different batch shape or a bookkeeping bug is what this answers).

use std::fmt;

use crate::trace::evidence::near_tie_threshold;
use crate::trace::{LogitsRow, Step};

/// The class of a first divergence between two generation traces.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// A field fixed before the forward pass differs (field path in the step).
    Bookkeeping { field: String },
    /// The first differing logits row is within bf16 rounding of a tie in at least one trace.
    NearTie { req_id: String, position: u32, margin: f32, top1_logit: f32, expected_top1: u32, actual_top1: u32 },
    /// The first differing logits row has a margin larger than rounding explains in both traces.
    Numerical {
        req_id: String,
        position: u32,
        expected_margin: f32,
        actual_margin: f32,
        expected_top1: u32,
        actual_top1: u32,
    },
    /// Same bookkeeping and same logits rows, different sampler output.
    Sampler,
    /// A trace has no logits rows for this step.
    NoEvidence,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Bookkeeping { field } => {
                write!(f, "bookkeeping ({field} differs before any logits row does)")
            }
            Cause::NearTie { req_id, position, margin, top1_logit, expected_top1, actual_top1 } => write!(
                f,
                "numerical near-tie (margin {margin}) at request {req_id:?} position {position}: top-1 {expected_top1} vs \
{actual_top1}, top-1 logit {top1_logit}, within bf16 rounding (margin <= 2^-7 x |top-1 logit| = {})",
                near_tie_threshold(*top1_logit)
            ),
            Cause::Numerical { req_id, position, expected_margin, actual_margin, expected_top1, actual_top1 } => write!(
                f,
                "numerical, not a near-tie: logits differ at request {req_id:?} position {position} (top-1 {expected_top1} \
vs {actual_top1}, margins {expected_margin} and {actual_margin}, both above 2^-7 x |top-1 logit|)"
            ),
            Cause::Sampler => f.write_str("sampler (same bookkeeping and logits rows, different sampled tokens)"),
            Cause::NoEvidence => f.write_str("unclassified (a trace records no logits rows for this step)"),
        }
    }
}

/// `s` with every field the forward pass and sampler decide cleared: what must be equal
/// when the bookkeeping agrees.
fn bookkeeping(s: &Step) -> Step {
    Step {
        output_token_ids: Vec::new(),
        draft_token_ids: Default::default(),
        token_ids_cpu: Default::default(),
        finished_req_ids: Vec::new(),
        num_free_blocks: 0,
        random_draws: Default::default(),
        logits: Default::default(),
        ..s.clone()
    }
}

/// The first differing leaf of two values, as a field path.
fn first_field(e: &Step, a: &Step) -> String {
    let mut c = crate::diff::Comparison::new();
    c.step(e, a);
    c.finish().first.map_or_else(|| "a field".into(), |d| d.field)
}

fn differs(e: &LogitsRow, a: &LogitsRow) -> bool {
    e.digest != a.digest || e.top1 != a.top1
}

/// Classifies the first divergent step `e` (expected) vs `a` (actual) of two generation
/// traces whose earlier steps are identical (see the module documentation).
pub fn classify(e: &Step, a: &Step) -> Cause {
    let (be, ba) = (bookkeeping(e), bookkeeping(a));
    if be != ba {
        return Cause::Bookkeeping { field: first_field(&be, &ba) };
    }
    if e.logits.is_empty() || a.logits.is_empty() {
        return Cause::NoEvidence;
    }
    for (i, (re, ra)) in e.logits.iter().zip(a.logits.iter()).enumerate() {
        if (re.req_id.as_str(), re.position) != (ra.req_id.as_str(), ra.position) {
            return Cause::Bookkeeping { field: format!("logits[{i}] (request and position)") };
        }
        if !differs(re, ra) {
            continue;
        }
        // The trace whose row is closest to a tie (relative to its threshold) is the witness.
        let tie = [re, ra].into_iter().filter(|r| r.is_near_tie()).min_by(|x, y| x.margin.0.total_cmp(&y.margin.0));
        return match tie {
            Some(r) => Cause::NearTie {
                req_id: re.req_id.clone(),
                position: re.position,
                margin: r.margin.0,
                top1_logit: r.top1_logit.0,
                expected_top1: re.top1,
                actual_top1: ra.top1,
            },
            None => Cause::Numerical {
                req_id: re.req_id.clone(),
                position: re.position,
                expected_margin: re.margin.0,
                actual_margin: ra.margin.0,
                expected_top1: re.top1,
                actual_top1: ra.top1,
            },
        };
    }
    if e.logits.len() != a.logits.len() {
        return Cause::Bookkeeping { field: format!("logits (length {} vs {})", e.logits.len(), a.logits.len()) };
    }
    Cause::Sampler
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Digest, JsonOnly, F32};

    fn row(req: &str, position: u32, digest: u64, top1: u32, top1_logit: f32, margin: f32) -> LogitsRow {
        LogitsRow {
            req_id: req.into(),
            position,
            digest: Digest(digest),
            top1,
            top1_logit: F32(top1_logit),
            margin: F32(margin),
        }
    }

    fn step() -> Step {
        let mut s = Step { step: 3, total_num_scheduled_tokens: 2, ..Default::default() };
        s.batch_req_ids = vec!["a".into(), "b".into()];
        s.attn.slot_mapping = vec![16, 32];
        s.output_token_ids = vec![vec![7], vec![9]];
        s.logits = JsonOnly(vec![row("a", 5, 1, 7, 8.0, 1.0), row("b", 9, 2, 9, -2.0, 0.5)]);
        s
    }

    #[test]
    fn each_class_and_its_trigger() {
        let e = step();
        // Second row flipped, its margin within rounding in the actual trace only.
        let mut a = e.clone();
        a.output_token_ids[1] = vec![4];
        a.logits[1] = row("b", 9, 3, 4, -2.0, 0.0078125);
        match classify(&e, &a) {
            Cause::NearTie { req_id, position: 9, margin, expected_top1: 9, actual_top1: 4, .. } => {
                assert_eq!((req_id.as_str(), margin), ("b", 0.0078125))
            }
            c => panic!("{c:?}"),
        }
        // The same flip with margins far from a tie in both traces: numerical.
        a.logits[1].margin = F32(0.25);
        assert!(matches!(classify(&e, &a), Cause::Numerical { position: 9, .. }), "{:?}", classify(&e, &a));
        // A digest change alone (same top-1, wide margins) is numerical too.
        let mut d = e.clone();
        d.logits[0].digest = Digest(99);
        assert!(matches!(classify(&e, &d), Cause::Numerical { expected_top1: 7, actual_top1: 7, .. }));
        // Bookkeeping first, whatever the logits do.
        a.attn.slot_mapping[1] = 33;
        assert_eq!(classify(&e, &a), Cause::Bookkeeping { field: "attn.slot_mapping[1]".into() });
        // Same logits, different sampled token: the sampler.
        let mut s = e.clone();
        s.output_token_ids[0] = vec![8];
        assert_eq!(classify(&e, &s), Cause::Sampler);
        // No logits on one side: nothing to say beyond the bookkeeping.
        let mut n = s.clone();
        n.logits = JsonOnly::default();
        assert_eq!(classify(&e, &n), Cause::NoEvidence);
        assert!(Cause::Sampler.to_string().starts_with("sampler"));
    }
}
