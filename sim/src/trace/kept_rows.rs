//! The logits rows that decided each request's kept tokens, keyed by (request, position),
//! so two runs of the same requests under *different schedules* — speculation on and off,
//! other batch mates, other graph sizes or padding, a preemption and recompute — are
//! compared row by row. `specreplay diff` compares step by step and stops at the first
//! scheduling difference; this comparison is the batch-invariance question instead: does
//! position p of request r get the same logits whatever else the step computed?
//!
//! Which rows count. A step records one [`LogitsRow`] per `logits_indices` entry, in order
//! (evidence.rs). For the request at batch index i, `output_token_ids[i]` holds the tokens
//! the step kept (the rest is -1, vLLM's padding of the sampled-token tensor,
//! `vllm/v1/sample/rejection_sampler.py` `PLACEHOLDER_TOKEN_ID`). With n kept tokens the
//! request's first n rows are exactly the rows whose inputs were all true tokens: a verify
//! row j follows drafts 0..j-1, all accepted when j < n; the row after the first rejected
//! draft produced the recovered token, and later rows followed a wrong draft. A partial
//! prefill keeps nothing. Those kept rows are the ones a plain decode of the same request
//! computes too, so they are compared; the others are not.
//!
//! The sampled-token tensor holds every token the rejection sampler produced; the scheduler
//! then trims a request's new tokens at its stop (max_tokens, a stop token, max_model_len:
//! `vllm/v1/core/sched/scheduler.py` `_update_request_with_output`, `del
//! new_token_ids[num_new:]`). Rows past the request's final output are dropped by
//! [`KeptRows::trim_to_outputs`], which also checks every kept row's token against the
//! output at its position (two records of one fact).
//!
//! A position recomputed in one trace (a preempted request's prefill redone) must repeat
//! its own earlier row: a difference there is reported as well.

use std::collections::BTreeMap;
use std::fmt;

use super::{LogitsRow, Step};

/// One kept row: the step that computed it, the row, and the token kept from it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptRow {
    pub step: u64,
    pub row: LogitsRow,
    pub token: u32,
}

/// A position of one trace computed twice with different rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Recomputed {
    pub req_id: String,
    pub position: u32,
    pub first: KeptRow,
    pub again: KeptRow,
}

/// Malformed logits evidence in a step.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeptRowsError {
    #[error("step {step}: output_token_ids has {outputs} rows for {batch} requests in batch_req_ids")]
    Shape { step: u64, outputs: usize, batch: usize },
    #[error("step {step}: request {req_id} kept {kept} tokens but has {rows} logits rows")]
    TooFewRows { step: u64, req_id: String, kept: usize, rows: usize },
    #[error(
        "step {step}: request {req_id} kept token {token} at position {position}, but its output there is {output}"
    )]
    NotTheOutput { step: u64, req_id: String, position: u32, token: u32, output: u32 },
}

/// Every kept row of one trace, per request, per position (first computation), plus the
/// positions recomputed with a different row.
#[derive(Debug, Clone, Default)]
pub struct KeptRows {
    rows: BTreeMap<String, BTreeMap<u32, KeptRow>>,
    recomputed: Vec<Recomputed>,
    steps_without_evidence: u64,
}

impl KeptRows {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one step's kept rows (steps in trace order).
    pub fn add_step(&mut self, s: &Step) -> Result<(), KeptRowsError> {
        if s.output_token_ids.len() != s.batch_req_ids.len() {
            return Err(KeptRowsError::Shape {
                step: s.step,
                outputs: s.output_token_ids.len(),
                batch: s.batch_req_ids.len(),
            });
        }
        let rows = &s.logits.0;
        let keeps_any = s.output_token_ids.iter().any(|o| o.iter().any(|&t| t >= 0));
        if rows.is_empty() {
            self.steps_without_evidence += u64::from(keeps_any);
            return Ok(());
        }
        for (req_id, outputs) in s.batch_req_ids.iter().zip(&s.output_token_ids) {
            let kept: Vec<u32> = outputs.iter().filter(|&&t| t >= 0).map(|&t| t as u32).collect();
            let mine: Vec<&LogitsRow> = rows.iter().filter(|r| &r.req_id == req_id).collect();
            if mine.len() < kept.len() {
                return Err(KeptRowsError::TooFewRows {
                    step: s.step,
                    req_id: req_id.clone(),
                    kept: kept.len(),
                    rows: mine.len(),
                });
            }
            for (row, &token) in mine.iter().zip(&kept) {
                let k = KeptRow { step: s.step, row: (*row).clone(), token };
                let per = self.rows.entry(req_id.clone()).or_default();
                match per.get(&row.position) {
                    None => {
                        per.insert(row.position, k);
                    }
                    Some(first) if first.row.digest != k.row.digest => self.recomputed.push(Recomputed {
                        req_id: req_id.clone(),
                        position: row.position,
                        first: first.clone(),
                        again: k,
                    }),
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Drops the rows of tokens the scheduler trimmed at each request's stop, given the
    /// trace's final outputs and each request's prompt length: output token i sits at
    /// position `prompt_len + i`. Checks that every remaining row kept the output's token.
    /// Requests with no recorded output (an unfinished run) are left as they are.
    pub fn trim_to_outputs(
        &mut self,
        outputs: &BTreeMap<String, Vec<u32>>,
        prompt_lens: &BTreeMap<String, usize>,
    ) -> Result<(), KeptRowsError> {
        for (req_id, per) in &mut self.rows {
            let (Some(out), Some(&prompt_len)) = (outputs.get(req_id), prompt_lens.get(req_id)) else { continue };
            let end = prompt_len + out.len();
            per.retain(|&p, _| (p as usize) < end);
            for (&p, k) in per.iter() {
                let Some(&output) = (p as usize).checked_sub(prompt_len).and_then(|i| out.get(i)) else { continue };
                if output != k.token {
                    return Err(KeptRowsError::NotTheOutput {
                        step: k.step,
                        req_id: req_id.clone(),
                        position: p,
                        token: k.token,
                        output,
                    });
                }
            }
        }
        Ok(())
    }

    /// The kept rows of one request, by position.
    pub fn request(&self, req_id: &str) -> Option<&BTreeMap<u32, KeptRow>> {
        self.rows.get(req_id)
    }

    /// Positions computed twice in this trace with different rows.
    pub fn recomputed(&self) -> &[Recomputed] {
        &self.recomputed
    }

    /// Steps that kept tokens but recorded no logits rows (a trace not recorded by a model).
    pub fn steps_without_evidence(&self) -> u64 {
        self.steps_without_evidence
    }
}

/// How one request's kept rows compare between two traces.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestComparison {
    pub req_id: String,
    /// Positions compared (in order, up to and including the first difference).
    pub compared: usize,
    /// The first position whose rows differ (digest or kept token), with both rows.
    pub first_difference: Option<(KeptRow, KeptRow)>,
    /// Positions kept in only one trace before any difference (different lengths).
    pub only_expected: usize,
    pub only_actual: usize,
}

impl RequestComparison {
    /// Whether the first difference is a numerical near-tie in either trace.
    pub fn near_tie(&self) -> Option<bool> {
        self.first_difference.as_ref().map(|(e, a)| e.row.is_near_tie() || a.row.is_near_tie())
    }
}

impl fmt::Display for RequestComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first_difference {
            None => write!(f, "{}: {} positions, every row identical", self.req_id, self.compared)?,
            Some((e, a)) => {
                let what = if e.row.digest == a.row.digest { "same row, different kept token" } else { "rows differ" };
                let class = if self.near_tie() == Some(true) { "numerical near-tie" } else { "numerical" };
                write!(
                    f,
                    "{}: {} at position {} after {} identical ({}): expected step {} top1 {} margin {} (digest {}), \
                     actual step {} top1 {} margin {} (digest {})",
                    self.req_id,
                    what,
                    e.row.position,
                    self.compared - 1,
                    class,
                    e.step,
                    e.row.top1,
                    e.row.margin.0,
                    e.row.digest,
                    a.step,
                    a.row.top1,
                    a.row.margin.0,
                    a.row.digest
                )?;
            }
        }
        if self.only_expected + self.only_actual > 0 {
            write!(f, "; kept only in expected: {}, only in actual: {}", self.only_expected, self.only_actual)?;
        }
        Ok(())
    }
}

/// Compares the requests both traces ran (same id), position by position in order, up to
/// each request's first difference (after it, the two runs' inputs differ and their rows
/// are no longer comparable).
pub fn compare(expected: &KeptRows, actual: &KeptRows) -> Vec<RequestComparison> {
    let mut out = Vec::new();
    for (req_id, e_rows) in &expected.rows {
        let Some(a_rows) = actual.rows.get(req_id) else { continue };
        let mut c = RequestComparison {
            req_id: req_id.clone(),
            compared: 0,
            first_difference: None,
            only_expected: 0,
            only_actual: 0,
        };
        for (pos, e) in e_rows {
            match a_rows.get(pos) {
                None => c.only_expected += 1,
                Some(a) => {
                    c.compared += 1;
                    if e.row.digest != a.row.digest || e.token != a.token {
                        c.first_difference = Some((e.clone(), a.clone()));
                        break;
                    }
                }
            }
        }
        if c.first_difference.is_none() {
            c.only_actual = a_rows.keys().filter(|p| !e_rows.contains_key(p)).count();
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::evidence::{Digest, F32};

    fn row(req: &str, position: u32, digest: u64, top1: u32) -> LogitsRow {
        LogitsRow { req_id: req.into(), position, digest: Digest(digest), top1, top1_logit: F32(4.0), margin: F32(0.5) }
    }

    fn step(n: u64, batch: &[&str], outputs: Vec<Vec<i64>>, rows: Vec<LogitsRow>) -> Step {
        let mut s = Step { step: n, ..Step::default() };
        s.batch_req_ids = batch.iter().map(|b| b.to_string()).collect();
        s.output_token_ids = outputs;
        s.logits.0 = rows;
        s
    }

    /// A verify step: q0 ran 3 drafts, kept 2 tokens (draft 0 accepted, recovered token);
    /// rows 2 and 3 followed a rejected draft and must not be kept.
    #[test]
    fn only_the_rows_before_the_first_rejection_are_kept() {
        let mut k = KeptRows::new();
        let s = step(
            1,
            &["q0", "q1"],
            vec![vec![7, 8, -1, -1], vec![5]],
            vec![
                row("q0", 10, 1, 7),
                row("q0", 11, 2, 8),
                row("q0", 12, 3, 9),
                row("q0", 13, 4, 9),
                row("q1", 4, 5, 5),
            ],
        );
        k.add_step(&s).unwrap();
        let q0: Vec<u32> = k.request("q0").unwrap().keys().copied().collect();
        assert_eq!(q0, vec![10, 11]);
        assert_eq!(k.request("q0").unwrap()[&11].token, 8);
        assert_eq!(k.request("q1").unwrap()[&4].row.digest, Digest(5));
    }

    #[test]
    fn a_partial_prefill_keeps_nothing_and_missing_rows_are_an_error() {
        let mut k = KeptRows::new();
        k.add_step(&step(1, &["q0"], vec![vec![-1]], vec![row("q0", 5, 1, 3)])).unwrap();
        assert!(k.request("q0").is_none());
        let bad = step(2, &["q0"], vec![vec![3, 4]], vec![row("q0", 5, 1, 3)]);
        assert_eq!(k.add_step(&bad), Err(KeptRowsError::TooFewRows { step: 2, req_id: "q0".into(), kept: 2, rows: 1 }));
        let shape = step(3, &["q0", "q1"], vec![vec![3]], vec![row("q0", 5, 1, 3)]);
        assert!(matches!(k.add_step(&shape), Err(KeptRowsError::Shape { .. })));
    }

    /// A verify step at the request's last tokens: the sampler kept 3 tokens, the stop at
    /// max_tokens trimmed the third; its row is not a kept row. A kept token that is not the
    /// output at its position is an inconsistent trace.
    #[test]
    fn rows_past_the_stop_are_trimmed_and_tokens_checked_against_the_outputs() {
        let mut k = KeptRows::new();
        let s =
            step(1, &["q0"], vec![vec![7, 8, 9]], vec![row("q0", 10, 1, 7), row("q0", 11, 2, 8), row("q0", 12, 3, 9)]);
        k.add_step(&s).unwrap();
        let prompt_lens = BTreeMap::from([("q0".to_string(), 8usize)]);
        let outputs = BTreeMap::from([("q0".to_string(), vec![5, 6, 7, 8])]);
        k.trim_to_outputs(&outputs, &prompt_lens).unwrap();
        let q0: Vec<u32> = k.request("q0").unwrap().keys().copied().collect();
        assert_eq!(q0, vec![10, 11]);

        let mut bad = KeptRows::new();
        bad.add_step(&s).unwrap();
        let wrong = BTreeMap::from([("q0".to_string(), vec![5, 6, 7, 4])]);
        assert_eq!(
            bad.trim_to_outputs(&wrong, &prompt_lens),
            Err(KeptRowsError::NotTheOutput { step: 1, req_id: "q0".into(), position: 11, token: 8, output: 4 })
        );
    }

    #[test]
    fn a_recomputed_position_with_another_row_is_reported() {
        let mut k = KeptRows::new();
        k.add_step(&step(1, &["q0"], vec![vec![3]], vec![row("q0", 5, 1, 3)])).unwrap();
        k.add_step(&step(4, &["q0"], vec![vec![3]], vec![row("q0", 5, 1, 3)])).unwrap();
        assert!(k.recomputed().is_empty());
        k.add_step(&step(9, &["q0"], vec![vec![3]], vec![row("q0", 5, 2, 3)])).unwrap();
        assert_eq!(k.recomputed().len(), 1);
        assert_eq!((k.recomputed()[0].first.step, k.recomputed()[0].again.step), (1, 9));
    }

    /// The same positions reached by a speculative schedule (one verify step) and a plain
    /// one (three decode steps): identical; a changed digest is found at its position and
    /// the comparison stops there.
    #[test]
    fn different_schedules_compare_by_position() {
        let mut spec = KeptRows::new();
        spec.add_step(&step(
            1,
            &["q0"],
            vec![vec![7, 8, 9]],
            vec![row("q0", 10, 1, 7), row("q0", 11, 2, 8), row("q0", 12, 3, 9)],
        ))
        .unwrap();
        let mut plain = KeptRows::new();
        for (i, (pos, d, t)) in [(10, 1, 7), (11, 2, 8), (12, 3, 9)].into_iter().enumerate() {
            plain.add_step(&step(i as u64 + 1, &["q0"], vec![vec![t as i64]], vec![row("q0", pos, d, t)])).unwrap();
        }
        let c = compare(&spec, &plain);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].compared, c[0].first_difference.is_none()), (3, true));

        let mut other = KeptRows::new();
        for (i, (pos, d, t)) in [(10, 1, 7), (11, 99, 8), (12, 3, 9)].into_iter().enumerate() {
            other.add_step(&step(i as u64 + 1, &["q0"], vec![vec![t as i64]], vec![row("q0", pos, d, t)])).unwrap();
        }
        let c = compare(&spec, &other);
        let (e, a) = c[0].first_difference.clone().unwrap();
        assert_eq!((c[0].compared, e.row.position, a.row.digest), (2, 11, Digest(99)));
        assert_eq!(c[0].near_tie(), Some(false));
        assert!(c[0].to_string().contains("position 11 after 1 identical (numerical)"), "{}", c[0]);
    }

    #[test]
    fn requests_in_one_trace_only_are_not_compared_and_extra_positions_are_counted() {
        let mut a = KeptRows::new();
        a.add_step(&step(1, &["q0", "q1"], vec![vec![1], vec![2]], vec![row("q0", 3, 1, 1), row("q1", 3, 2, 2)]))
            .unwrap();
        let mut b = KeptRows::new();
        b.add_step(&step(1, &["q0"], vec![vec![1, 4]], vec![row("q0", 3, 1, 1), row("q0", 4, 5, 4)])).unwrap();
        let c = compare(&a, &b);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].req_id.as_str(), c[0].compared, c[0].only_actual), ("q0", 1, 1));
    }
}
