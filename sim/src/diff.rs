//! First-divergence comparison of two traces: walks both in declaration order (header,
//! then step by step, then outputs) and names the first differing step, request and
//! field path with both values.

use serde_json::Value;

use crate::trace::{Step, Trace};

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
}

impl Report {
    pub fn identical(&self) -> bool {
        self.first.is_none()
    }
}

fn leaf_diffs(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, String, String)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match y.get(k) {
                    Some(vb) => leaf_diffs(&p, va, vb, out),
                    None => out.push((p, va.to_string(), "(missing)".into())),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    out.push((p, "(missing)".into(), vb.to_string()));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                leaf_diffs(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            let i = x.iter().zip(y).position(|(p, q)| p != q).unwrap_or(x.len().min(y.len()));
            out.push((
                format!("{path} (length {} vs {}, first difference at [{i}])", x.len(), y.len()),
                a.to_string(),
                b.to_string(),
            ));
        }
        _ if a != b => out.push((path.to_string(), a.to_string(), b.to_string())),
        _ => {}
    }
}

/// Which request a step field path belongs to (per-request maps, batch-row arrays and
/// token arrays split by `cu_seqlens_q`).
fn attribute(step: &Step, field: &str) -> Option<String> {
    let head = field.split(['.', '[', ' ']).next().unwrap_or("");
    let index = |prefix: &str| -> Option<usize> {
        let rest = field.strip_prefix(prefix)?.strip_prefix('[')?;
        rest.split(']').next()?.parse().ok()
    };
    let row_req = |row: usize| step.batch_req_ids.get(row).cloned();
    let token_req = |i: usize| {
        let cu = &step.attn.cu_seqlens_q;
        (0..step.batch_req_ids.len()).find(|&r| cu.get(r + 1).is_some_and(|&e| (i as i64) < e)).and_then(row_req)
    };
    match head {
        "num_scheduled_tokens"
        | "scheduled_spec_decode_tokens"
        | "num_computed_tokens"
        | "block_ids"
        | "draft_token_ids"
        | "token_ids_cpu" => field.split('.').nth(1).map(|k| k.split('[').next().unwrap_or(k).to_string()),
        "output_token_ids" | "num_sampled_tokens" => index(head).and_then(row_req),
        "input_ids" | "positions" | "logits_indices" => index(head).and_then(token_req),
        "attn" => {
            if let Some(i) = index("attn.block_table").or_else(|| index("attn.seqused_k")) {
                row_req(i)
            } else if let Some(i) = index("attn.slot_mapping") {
                token_req(i)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("trace types serialize")
}

/// Compares `expected` with `actual` and reports the first divergence.
pub fn compare(expected: &Trace, actual: &Trace) -> Report {
    let mut report = Report::default();
    let header = |t: &Trace| serde_json::json!({"config": to_value(&t.config), "requests": to_value(&t.requests), "oracle": to_value(&t.oracle)});
    let mut diffs = Vec::new();
    leaf_diffs("", &header(expected), &header(actual), &mut diffs);
    if let Some((field, e, a)) = diffs.first().cloned() {
        report.differing_in_first = diffs.len();
        report.first = Some(Divergence { step: None, request: None, field, expected: e, actual: a });
        return report;
    }
    for (i, (se, sa)) in expected.steps.iter().zip(&actual.steps).enumerate() {
        report.steps_compared = i + 1;
        let mut diffs = Vec::new();
        leaf_diffs("", &to_value(se), &to_value(sa), &mut diffs);
        if let Some((field, e, a)) = diffs.first().cloned() {
            report.differing_in_first = diffs.len();
            report.first = Some(Divergence {
                step: Some(i as u64 + 1),
                request: attribute(se, &field),
                field,
                expected: e,
                actual: a,
            });
            return report;
        }
    }
    if expected.steps.len() != actual.steps.len() {
        let n = expected.steps.len().min(actual.steps.len());
        report.differing_in_first = 1;
        report.first = Some(Divergence {
            step: Some(n as u64 + 1),
            request: None,
            field: "steps (count)".into(),
            expected: format!("{} steps", expected.steps.len()),
            actual: format!("{} steps", actual.steps.len()),
        });
        return report;
    }
    let mut diffs = Vec::new();
    leaf_diffs("outputs", &to_value(&expected.outputs), &to_value(&actual.outputs), &mut diffs);
    if let Some((field, e, a)) = diffs.first().cloned() {
        report.differing_in_first = diffs.len();
        let request = field.split('.').nth(1).map(|k| k.split('[').next().unwrap_or(k).to_string());
        report.first = Some(Divergence { step: None, request, field, expected: e, actual: a });
    }
    report
}

/// One line saying what the expected trace's step scheduled (context for a divergence).
pub fn step_context(t: &Trace, step: u64) -> Option<String> {
    let s = t.steps.get(usize::try_from(step).ok()?.checked_sub(1)?)?;
    if s.idle {
        return Some(format!("step {step} is idle in the expected trace"));
    }
    let reqs: Vec<String> = s
        .num_scheduled_tokens
        .iter()
        .map(|(r, n)| match s.scheduled_spec_decode_tokens.get(r) {
            Some(d) => format!("{r:?}: {n} ({} + {} spec)", n.saturating_sub(d.len() as u32), d.len()),
            None => format!("{r:?}: {n}"),
        })
        .collect();
    let before = if step > 1 { format!("; steps 1-{} identical", step - 1) } else { String::new() };
    Some(format!(
        "step {step} schedules {} token(s) [{}], padded to {} ({}){before}",
        s.total_num_scheduled_tokens,
        reqs.join(", "),
        s.num_padded_tokens,
        s.cudagraph_mode
    ))
}
