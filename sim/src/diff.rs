//! First-divergence comparison of two traces: walks both in declaration order (header,
//! then step by step, then outputs) and names the first differing step, request and
//! field path with both values.
//!
//! [`Comparison`] takes the pieces one at a time, so a streamed trace (or a running
//! engine) is compared without holding either run in memory; [`compare`] is the same
//! walk over two in-memory traces.
//!
//! Field paths are kept as segments (member keys, array indices) while walking, so the
//! request a value belongs to is read from the segments, never parsed back from the
//! printed path: request ids may contain `.`, `[` or spaces. A key that would make the
//! printed path ambiguous is printed quoted in brackets: `token_ids_cpu["a.b"][3]`.

use serde_json::Value;
use std::collections::BTreeMap;

use crate::divergence::{self, Cause};
use crate::trace::{Header, Step, Trace};

/// One differing leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// 1-based step, or `None` for the header and outputs.
    pub step: Option<u64>,
    /// The request the differing value belongs to, when it can be attributed.
    pub request: Option<String>,
    /// Field path, e.g. `attn.slot_mapping[2]`.
    pub field: String,
    pub expected: String,
    pub actual: String,
}

/// Result of comparing an expected (recorded) trace with an actual one.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub first: Option<Divergence>,
    /// How many leaves differ in the first divergent step (or section).
    pub differing_in_first: usize,
    pub steps_compared: usize,
    /// What the expected trace's divergent step scheduled ([`step_summary`]).
    pub context: Option<String>,
    /// Why two generation traces (both headers name a `backend`) diverge at a step
    /// ([`divergence::classify`]); `None` for other traces and other sections.
    pub cause: Option<Cause>,
}

impl Report {
    pub fn identical(&self) -> bool {
        self.first.is_none()
    }
}

/// One segment of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Prints a path: `a.b[3]`, with keys that hold `.`, `[`, `]`, `"` or spaces (or are
/// empty) quoted in brackets.
fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        match seg {
            Seg::Index(n) => out += &format!("[{n}]"),
            Seg::Key(k) if k.is_empty() || k.contains(['.', '[', ']', '"', ' ']) => out += &format!("[{k:?}]"),
            Seg::Key(k) if i == 0 => out += k,
            Seg::Key(k) => {
                out.push('.');
                out += k;
            }
        }
    }
    out
}

/// One differing leaf: its path, an optional note on the path (array lengths), values.
struct Leaf {
    path: Vec<Seg>,
    note: String,
    expected: String,
    actual: String,
}

fn leaf_diffs(path: &mut Vec<Seg>, a: &Value, b: &Value, out: &mut Vec<Leaf>) {
    let leaf =
        |path: &[Seg], note: String, e: String, a: String| Leaf { path: path.to_vec(), note, expected: e, actual: a };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                path.push(Seg::Key(k.clone()));
                match y.get(k) {
                    Some(vb) => leaf_diffs(path, va, vb, out),
                    None => out.push(leaf(path, String::new(), va.to_string(), "(missing)".into())),
                }
                path.pop();
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    path.push(Seg::Key(k.clone()));
                    out.push(leaf(path, String::new(), "(missing)".into(), vb.to_string()));
                    path.pop();
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                path.push(Seg::Index(i));
                leaf_diffs(path, va, vb, out);
                path.pop();
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            let i = x.iter().zip(y).position(|(p, q)| p != q).unwrap_or(x.len().min(y.len()));
            let note = format!(" (length {} vs {}, first difference at [{i}])", x.len(), y.len());
            out.push(leaf(path, note, a.to_string(), b.to_string()));
        }
        _ if a != b => out.push(leaf(path, String::new(), a.to_string(), b.to_string())),
        _ => {}
    }
}

/// Which request a step field belongs to (per-request maps, batch-row arrays and token
/// arrays split by `cu_seqlens_q`).
fn attribute(step: &Step, path: &[Seg]) -> Option<String> {
    let key = |i: usize| match path.get(i) {
        Some(Seg::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    let index = |i: usize| match path.get(i) {
        Some(Seg::Index(n)) => Some(*n),
        _ => None,
    };
    let row_req = |row: usize| step.batch_req_ids.get(row).cloned();
    let token_req = |i: usize| {
        let cu = &step.attn.cu_seqlens_q;
        (0..step.batch_req_ids.len()).find(|&r| cu.get(r + 1).is_some_and(|&e| (i as i64) < e)).and_then(row_req)
    };
    match key(0)? {
        "num_scheduled_tokens"
        | "scheduled_spec_decode_tokens"
        | "num_computed_tokens"
        | "block_ids"
        | "draft_token_ids"
        | "token_ids_cpu"
        | "random_draws" => key(1).map(str::to_string),
        "output_token_ids" | "num_sampled_tokens" => index(1).and_then(row_req),
        "logits" => index(1).and_then(|i| step.logits.get(i)).map(|r| r.req_id.clone()),
        "input_ids" | "positions" | "logits_indices" => index(1).and_then(token_req),
        "attn" => match key(1)? {
            "block_table" | "seqused_k" => index(2).and_then(row_req),
            "slot_mapping" => index(2).and_then(token_req),
            _ => None,
        },
        _ => None,
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("trace types serialize")
}

/// The differing leaves of two values, the first one as a divergence.
fn first_leaf(
    root: Vec<Seg>,
    e: &Value,
    a: &Value,
    attribute_to: impl Fn(&[Seg]) -> Option<String>,
) -> Option<(Divergence, usize)> {
    let mut path = root;
    let mut leaves = Vec::new();
    leaf_diffs(&mut path, e, a, &mut leaves);
    let n = leaves.len();
    let l = leaves.into_iter().next()?;
    let d = Divergence {
        step: None,
        request: attribute_to(&l.path),
        field: render(&l.path) + &l.note,
        expected: l.expected,
        actual: l.actual,
    };
    Some((d, n))
}

/// A first-divergence comparison fed piece by piece: header, steps in order, step
/// counts, outputs. Each method returns `true` while no divergence has been found.
#[derive(Debug, Default)]
pub struct Comparison {
    report: Report,
    /// Both headers name a model backend: classify a step divergence ([`Report::cause`]).
    models: bool,
}

impl Comparison {
    pub fn new() -> Self {
        Comparison::default()
    }

    fn found(&mut self, d: Divergence, n: usize, context: Option<String>) -> bool {
        self.report.first = Some(d);
        self.report.differing_in_first = n;
        self.report.context = context;
        false
    }

    /// Compares config, requests and oracle (not the notes nor the model evidence:
    /// `backend`, `device`, `checkpoint` and `module_hashes` say where a run happened, and
    /// runs of one scenario on two machines are what `diff` is for).
    pub fn header(&mut self, e: &Header, a: &Header) -> bool {
        self.models = !e.backend.is_empty() && !a.backend.is_empty();
        let h = |t: &Header| serde_json::json!({"config": to_value(&t.config), "requests": to_value(&t.requests), "oracle": to_value(&t.oracle)});
        match first_leaf(Vec::new(), &h(e), &h(a), |_| None) {
            Some((d, n)) => self.found(d, n, None),
            None => true,
        }
    }

    /// Compares the next step of each trace. The logits rows (`Step::logits`, model
    /// evidence) are compared only when both steps carry them: a simulator replay of a
    /// model run has none and is compared on its bookkeeping.
    pub fn step(&mut self, e: &Step, a: &Step) -> bool {
        self.report.steps_compared += 1;
        if e == a {
            return true;
        }
        let index = self.report.steps_compared as u64;
        let trimmed;
        let (ve, va) = if e.logits.is_empty() != a.logits.is_empty() {
            trimmed =
                (Step { logits: Default::default(), ..e.clone() }, Step { logits: Default::default(), ..a.clone() });
            if trimmed.0 == trimmed.1 {
                return true;
            }
            (&trimmed.0, &trimmed.1)
        } else {
            (e, a)
        };
        match first_leaf(Vec::new(), &to_value(ve), &to_value(va), |p| attribute(ve, p)) {
            Some((mut d, n)) => {
                d.step = Some(index);
                if self.models {
                    self.report.cause = Some(divergence::classify(e, a));
                }
                self.found(d, n, Some(step_summary(e, index)))
            }
            None => true,
        }
    }

    /// Reports different step counts once every common step matched; `extra` is the
    /// expected trace's first step past the actual one's end, if it has one.
    pub fn step_counts(&mut self, expected: u64, actual: u64, extra: Option<&Step>) -> bool {
        if expected == actual {
            return true;
        }
        let at = expected.min(actual) + 1;
        let d = Divergence {
            step: Some(at),
            request: None,
            field: "steps (count)".into(),
            expected: format!("{expected} steps"),
            actual: format!("{actual} steps"),
        };
        self.found(d, 1, extra.map(|s| step_summary(s, at)))
    }

    /// Compares the final outputs.
    pub fn outputs(&mut self, e: &BTreeMap<String, Vec<u32>>, a: &BTreeMap<String, Vec<u32>>) -> bool {
        let root = vec![Seg::Key("outputs".into())];
        let request = |p: &[Seg]| match p.get(1) {
            Some(Seg::Key(k)) => Some(k.clone()),
            _ => None,
        };
        match first_leaf(root, &to_value(e), &to_value(a), request) {
            Some((d, n)) => self.found(d, n, None),
            None => true,
        }
    }

    /// Whether a divergence has been found.
    pub fn diverged(&self) -> bool {
        self.report.first.is_some()
    }

    pub fn finish(self) -> Report {
        self.report
    }
}

/// Compares `expected` with `actual` and reports the first divergence.
pub fn compare(expected: &Trace, actual: &Trace) -> Report {
    let mut c = Comparison::new();
    if !c.header(&expected.header(), &actual.header()) {
        return c.finish();
    }
    for (se, sa) in expected.steps.iter().zip(&actual.steps) {
        if !c.step(se, sa) {
            return c.finish();
        }
    }
    let (ne, na) = (expected.steps.len(), actual.steps.len());
    if c.step_counts(ne as u64, na as u64, expected.steps.get(na)) {
        c.outputs(&expected.outputs, &actual.outputs);
    }
    c.finish()
}

/// One line saying what a step of the expected trace scheduled (context for a
/// divergence at 1-based step `index`).
pub fn step_summary(s: &Step, index: u64) -> String {
    if s.idle {
        return format!("step {index} is idle in the expected trace");
    }
    let reqs: Vec<String> = s
        .num_scheduled_tokens
        .iter()
        .map(|(r, n)| match s.scheduled_spec_decode_tokens.get(r) {
            Some(d) => format!("{r:?}: {n} ({} + {} spec)", n.saturating_sub(d.len() as u32), d.len()),
            None => format!("{r:?}: {n}"),
        })
        .collect();
    let before = if index > 1 { format!("; steps 1-{} identical", index - 1) } else { String::new() };
    format!(
        "step {index} schedules {} token(s) [{}], padded to {} ({}){before}",
        s.total_num_scheduled_tokens,
        reqs.join(", "),
        s.num_padded_tokens,
        s.cudagraph_mode
    )
}

/// [`step_summary`] of the expected trace's 1-based step `step`.
pub fn step_context(t: &Trace, step: u64) -> Option<String> {
    let s = t.steps.get(usize::try_from(step).ok()?.checked_sub(1)?)?;
    Some(step_summary(s, step))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step_with(ids: &[&str]) -> Step {
        let mut s = Step { step: 1, total_num_scheduled_tokens: ids.len() as u32, ..Default::default() };
        for (i, id) in ids.iter().enumerate() {
            s.num_scheduled_tokens.insert(id.to_string(), 1);
            s.token_ids_cpu.insert(id.to_string(), vec![1, 2, 3]);
            s.batch_req_ids.push(id.to_string());
            s.output_token_ids.push(vec![7]);
            s.input_ids.push(i as i64);
        }
        s.attn.cu_seqlens_q = (0..=ids.len() as i64).collect();
        s
    }

    /// Request ids holding `.`, `[` or spaces are attributed from the path segments
    /// (parsing the printed path back named `"a"` for `"a.b"`).
    #[test]
    fn ids_with_dots_and_brackets_are_attributed() {
        let ids = ["a.b", "x[0]", "p q"];
        for (k, id) in ids.iter().enumerate() {
            let e = step_with(&ids);
            let mut a = e.clone();
            a.token_ids_cpu.get_mut(*id).unwrap()[2] = 9;
            let mut c = Comparison::new();
            assert!(!c.step(&e, &a));
            let d = c.finish().first.unwrap();
            assert_eq!(d.request.as_deref(), Some(*id), "{}", d.field);
            assert_eq!(d.field, format!("token_ids_cpu[{id:?}][2]"));
            // A row-indexed field attributes through batch_req_ids.
            let mut a = e.clone();
            a.output_token_ids[k][0] = 8;
            let mut c = Comparison::new();
            assert!(!c.step(&e, &a));
            let d = c.finish().first.unwrap();
            assert_eq!(
                (d.request.as_deref(), d.field.as_str()),
                (Some(*id), format!("output_token_ids[{k}][0]").as_str())
            );
            // A token-indexed field attributes through cu_seqlens_q.
            let mut a = e.clone();
            a.input_ids[k] = 50;
            let mut c = Comparison::new();
            assert!(!c.step(&e, &a));
            assert_eq!(c.finish().first.unwrap().request.as_deref(), Some(*id));
        }
    }

    /// A key missing on one side and an array length mismatch name the request too.
    #[test]
    fn missing_keys_and_length_changes_are_attributed() {
        let e = step_with(&["a.b", "c"]);
        let mut a = e.clone();
        a.token_ids_cpu.get_mut("a.b").unwrap().push(4);
        let mut c = Comparison::new();
        c.step(&e, &a);
        let d = c.finish().first.unwrap();
        assert_eq!(d.request.as_deref(), Some("a.b"));
        assert_eq!(d.field, "token_ids_cpu[\"a.b\"] (length 3 vs 4, first difference at [3])");
        let mut a = e.clone();
        let row = a.token_ids_cpu.remove("c").unwrap();
        a.token_ids_cpu.insert("c.d".into(), row);
        let mut c = Comparison::new();
        c.step(&e, &a);
        assert_eq!(c.finish().first.unwrap().request.as_deref(), Some("c"));
        let mut c = Comparison::new();
        let out_e = BTreeMap::from([("x[0]".to_string(), vec![1, 2])]);
        let out_a = BTreeMap::from([("x[0]".to_string(), vec![1, 3])]);
        assert!(!c.outputs(&out_e, &out_a));
        let d = c.finish().first.unwrap();
        assert_eq!((d.request.as_deref(), d.field.as_str()), (Some("x[0]"), "outputs[\"x[0]\"][1]"));
    }
}
