//! `specreplay check TRACE...`: the hazard checker (`specreplay_sim::check`) over
//! streamed traces. One line per finding, then a count per kind; `--deny KIND,...`
//! turns kinds into exit status 1; `--json` prints one JSON document instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};
use specreplay_sim::check::{self, Checker, Finding, Kind};

use crate::{at, open_trace, Fail};

/// Parses `--deny` values: kind identifiers or `all` (comma-separated, repeatable).
pub fn parse_deny(values: &[String]) -> Result<Vec<Kind>, Fail> {
    let mut out = Vec::new();
    for v in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|v| !v.is_empty()) {
        if v == "all" {
            out.extend(Kind::ALL);
            continue;
        }
        let k = Kind::parse(v).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            Fail(format!("--deny: unknown hazard kind {v:?} (kinds: {}, or all)", names.join(", ")))
        })?;
        out.push(k);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// One finding as a text line.
pub fn line(path: &Path, f: &Finding) -> String {
    let req = f.req_id.as_deref().map_or(String::new(), |r| format!("request {r:?} "));
    format!("{}: step {}: {} {}: {req}{}: {}", path.display(), f.step, f.severity, f.kind, f.field, f.message)
}

/// One finding as a JSON object.
pub fn to_json(f: &Finding) -> Value {
    json!({
        "kind": f.kind.as_str(),
        "severity": f.severity.as_str(),
        "step": f.step,
        "req_id": f.req_id,
        "field": f.field,
        "message": f.message,
    })
}

/// Checks one trace, handing each finding to `emit` as it is found.
pub fn check_file(path: &Path, emit: &mut dyn FnMut(&Finding)) -> Result<u64, Fail> {
    let (mut reader, _) = open_trace(path)?;
    let mut checker = Checker::new(reader.header());
    let mut buf = Vec::new();
    while let Some(s) = reader.next_step().map_err(|e| at(path, e))? {
        checker.step(&s, &mut buf);
        for f in buf.drain(..) {
            emit(&f);
        }
    }
    let steps = reader.steps_read();
    reader.finish().map_err(|e| at(path, e))?;
    Ok(steps)
}

/// Runs `check` over every trace: exit 0 (no denied kind found), 1 (a denied kind
/// found), 2 (a trace could not be read; the others are still checked).
pub fn run(paths: &[PathBuf], deny: &[String], as_json: bool) -> Result<ExitCode, Fail> {
    let deny = parse_deny(deny)?;
    let mut counts: BTreeMap<Kind, usize> = check::counts(&[]);
    let mut worst = 0u8;
    let mut docs = Vec::new();
    for path in paths {
        let mut findings = Vec::new();
        let res = check_file(path, &mut |f| {
            *counts.entry(f.kind).or_default() += 1;
            if as_json {
                findings.push(to_json(f));
            } else {
                out!("{}", line(path, f));
            }
        });
        match res {
            Ok(steps) => {
                if as_json {
                    docs.push(json!({"path": path.display().to_string(), "steps": steps, "findings": findings}));
                }
            }
            Err(Fail(msg)) => {
                eprintln!("specreplay: error: {msg}");
                worst = 2;
                if as_json {
                    docs.push(json!({"path": path.display().to_string(), "error": msg, "findings": findings}));
                }
            }
        }
    }
    let denied: BTreeMap<Kind, usize> = deny.iter().map(|k| (*k, counts[k])).filter(|(_, n)| *n > 0).collect();
    if !denied.is_empty() && worst == 0 {
        worst = 1;
    }
    if as_json {
        let summary: serde_json::Map<String, Value> =
            counts.iter().map(|(k, n)| (k.as_str().to_string(), json!(n))).collect();
        let denied_json: serde_json::Map<String, Value> =
            denied.iter().map(|(k, n)| (k.as_str().to_string(), json!(n))).collect();
        let doc = json!({"traces": docs, "summary": summary, "denied": denied_json, "exit": worst});
        out!("{}", serde_json::to_string_pretty(&doc).expect("JSON values serialize"));
    } else {
        let total: usize = counts.values().sum();
        out!("summary: {} trace(s), {total} finding(s)", paths.len());
        for (k, n) in &counts {
            out!("  {:<32} {:>6}  ({})", k.as_str(), n, k.severity());
        }
        if !denied.is_empty() {
            let list: Vec<String> = denied.iter().map(|(k, n)| format!("{k} ({n})")).collect();
            out!("denied kinds found: {}", list.join(", "));
        }
    }
    Ok(ExitCode::from(worst))
}
