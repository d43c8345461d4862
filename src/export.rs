//! `specreplay export --format perfetto TRACE -o OUT.json`: the trace as Chrome
//! trace-event JSON (the "JSON Array/Object Format" of the Trace Event Format that
//! chrome://tracing and ui.perfetto.dev load).
//!
//! Layout: process 1 "engine" (thread 1 "steps": one `X` slice per step with the step's
//! scalar fields as args; thread 2 "hazards": `specreplay check` findings as instant
//! events; `C` counters for KV blocks in use / free and scheduled / padded tokens),
//! process 2 "batch rows" (thread r+1 = persistent-batch row r: one slice per step per
//! occupied row, named by its request), process 3 "requests" (thread i+1 = request i in
//! arrival order: one slice per step it is scheduled in, instants for arrival,
//! preemption and finish). `M` metadata events name every process and thread before
//! its first use. Time is synthetic and deterministic: step N spans
//! `[(N-1)·W, N·W)` microseconds with `W` = [`STEP_US`]; a run of idle steps is one slice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use specreplay_sim::check::Checker;
use specreplay_sim::trace::Step;

use crate::{at, io, open_trace, Fail};

/// Width of one engine step on the synthetic time axis, in microseconds.
pub const STEP_US: u64 = 1000;

const PID_ENGINE: u64 = 1;
const PID_ROWS: u64 = 2;
const PID_REQS: u64 = 3;
const TID_STEPS: u64 = 1;
const TID_HAZARDS: u64 = 2;

/// Streams events to the output, one per line, naming threads on first use.
struct Events<W: Write> {
    w: W,
    first: bool,
    named_rows: usize,
}

impl<W: Write> Events<W> {
    fn push(&mut self, v: &Value) -> std::io::Result<()> {
        let sep = if self.first { "" } else { ",\n" };
        self.first = false;
        write!(self.w, "{sep}{v}")
    }

    fn meta(&mut self, pid: u64, tid: Option<u64>, name: &str) -> std::io::Result<()> {
        match tid {
            None => self.push(&json!({"name": "process_name", "ph": "M", "ts": 0, "pid": pid, "tid": 0,
                "args": {"name": name}})),
            Some(tid) => {
                self.push(&json!({"name": "thread_name", "ph": "M", "ts": 0, "pid": pid, "tid": tid,
                    "args": {"name": name}}))?;
                self.push(&json!({"name": "thread_sort_index", "ph": "M", "ts": 0, "pid": pid, "tid": tid,
                    "args": {"sort_index": tid}}))
            }
        }
    }

    fn row(&mut self, row: usize) -> std::io::Result<()> {
        while self.named_rows <= row {
            let r = self.named_rows;
            self.meta(PID_ROWS, Some(r as u64 + 1), &format!("row {r}"))?;
            self.named_rows += 1;
        }
        Ok(())
    }
}

fn ts(step: u64) -> u64 {
    step.saturating_sub(1).saturating_mul(STEP_US)
}

fn step_events<W: Write>(
    ev: &mut Events<W>,
    s: &Step,
    req_index: &BTreeMap<String, u64>,
    usable_blocks: u32,
) -> std::io::Result<()> {
    let t = ts(s.step);
    let drafts: usize = s.scheduled_spec_decode_tokens.values().map(Vec::len).sum();
    ev.push(&json!({"name": format!("step {}", s.step), "cat": "step", "ph": "X", "ts": t, "dur": STEP_US,
        "pid": PID_ENGINE, "tid": TID_STEPS, "args": {
            "step": s.step, "cudagraph_mode": s.cudagraph_mode.as_str(),
            "total_num_scheduled_tokens": s.total_num_scheduled_tokens, "num_padded_tokens": s.num_padded_tokens,
            "num_reqs": s.batch_req_ids.len(), "num_reqs_padded": s.num_reqs_padded,
            "draft_tokens": drafts, "cascade_prefix_len": s.cascade_prefix_len,
            "num_free_blocks": s.num_free_blocks, "preempted": s.preempted_req_ids,
            "finished": s.finished_req_ids, "drafter_ran": !s.draft_token_ids.is_empty()}}))?;
    ev.push(&json!({"name": "KV blocks", "ph": "C", "ts": t, "pid": PID_ENGINE, "tid": TID_STEPS,
        "args": {"used": usable_blocks.saturating_sub(s.num_free_blocks), "free": s.num_free_blocks}}))?;
    ev.push(&json!({"name": "tokens", "ph": "C", "ts": t, "pid": PID_ENGINE, "tid": TID_STEPS,
        "args": {"scheduled": s.total_num_scheduled_tokens,
                 "padding": s.num_padded_tokens.saturating_sub(s.total_num_scheduled_tokens)}}))?;
    for (row, r) in s.batch_req_ids.iter().enumerate() {
        ev.row(row)?;
        let sched = s.num_scheduled_tokens.get(r).copied().unwrap_or(0);
        let draft = s.scheduled_spec_decode_tokens.get(r).map_or(0, Vec::len);
        let out = s.output_token_ids.get(row);
        let valid = out.map_or(0, |o| o.iter().filter(|&&x| x >= 0).count());
        let accepted = if draft > 0 { valid.saturating_sub(1).min(draft) } else { 0 };
        let args = json!({"req_id": r, "row": row, "num_scheduled_tokens": sched,
            "num_computed_tokens": s.num_computed_tokens.get(r), "drafts": draft, "accepted": accepted,
            "rejected": draft - accepted, "output_token_ids": out,
            "proposed": s.draft_token_ids.get(r).map_or(0, Vec::len),
            "blocks": s.block_ids.get(r).map_or(0, Vec::len)});
        ev.push(&json!({"name": r, "cat": "row", "ph": "X", "ts": t, "dur": STEP_US, "pid": PID_ROWS,
            "tid": row as u64 + 1, "args": args}))?;
        if let Some(&i) = req_index.get(r) {
            let name = if draft > 0 { format!("{sched} tok, {accepted}/{draft} acc") } else { format!("{sched} tok") };
            ev.push(&json!({"name": name, "cat": "request", "ph": "X", "ts": t, "dur": STEP_US, "pid": PID_REQS,
                "tid": i + 1, "args": args}))?;
        }
    }
    for (what, ids) in [("preempted", &s.preempted_req_ids), ("finished", &s.finished_req_ids)] {
        for r in ids {
            if let Some(&i) = req_index.get(r) {
                ev.push(&json!({"name": what, "ph": "i", "s": "t", "ts": t, "pid": PID_REQS, "tid": i + 1,
                    "args": {"step": s.step}}))?;
            }
        }
    }
    Ok(())
}

/// Writes the Perfetto export of `input` to `output` (guarded write, temp + rename).
pub fn perfetto(input: &Path, output: &Path) -> Result<u64, Fail> {
    let (mut reader, id) = open_trace(input)?;
    let h = reader.header().clone();
    let out = io::create_output(output, &[id]).map_err(Fail)?;
    let werr = |e: std::io::Error| at(output, format!("cannot write: {}", io::io_reason(&e)));
    let mut ev = Events { w: std::io::BufWriter::new(out), first: true, named_rows: 0 };
    write!(ev.w, "{{\"displayTimeUnit\": \"ms\", \"otherData\": {{\"format\": \"specreplay perfetto export\", \"recorded_by\": {}, \"step_us\": {STEP_US}}},\n\"traceEvents\": [\n", Value::from(h.recorded_by.clone())).map_err(werr)?;
    ev.meta(PID_ENGINE, None, "engine").map_err(werr)?;
    ev.meta(PID_ENGINE, Some(TID_STEPS), "steps").map_err(werr)?;
    ev.meta(PID_ENGINE, Some(TID_HAZARDS), "hazards (specreplay check)").map_err(werr)?;
    ev.meta(PID_ROWS, None, "batch rows").map_err(werr)?;
    ev.meta(PID_REQS, None, "requests").map_err(werr)?;
    let mut req_index = BTreeMap::new();
    for (i, r) in h.requests.iter().enumerate() {
        req_index.insert(r.req_id.clone(), i as u64);
        ev.meta(PID_REQS, Some(i as u64 + 1), &format!("request {}", r.req_id)).map_err(werr)?;
        ev.push(&json!({"name": "arrival", "ph": "i", "s": "t", "ts": ts(r.arrival_step), "pid": PID_REQS,
            "tid": i as u64 + 1, "args": {"arrival_step": r.arrival_step, "prompt_len": r.prompt_token_ids.len()}}))
            .map_err(werr)?;
    }
    let usable = match h.config.profile {
        specreplay_sim::Profile::VllmV1 => h.config.num_gpu_blocks.saturating_sub(1),
        specreplay_sim::Profile::NanoVllm => h.config.num_gpu_blocks,
    };
    let mut checker = Checker::new(&h);
    let mut findings = Vec::new();
    let mut idle: Option<(u64, u64)> = None;
    let flush_idle = |ev: &mut Events<_>, idle: &mut Option<(u64, u64)>| -> std::io::Result<()> {
        if let Some((a, b)) = idle.take() {
            ev.push(&json!({"name": "idle", "cat": "idle", "ph": "X", "ts": ts(a),
                "dur": (b - a + 1).saturating_mul(STEP_US), "pid": PID_ENGINE, "tid": TID_STEPS,
                "args": {"first_step": a, "last_step": b}}))?;
        }
        Ok(())
    };
    while let Some(s) = reader.next_step().map_err(|e| at(input, e))? {
        if s.idle {
            idle = match idle {
                Some((a, b)) if b + 1 == s.step => Some((a, s.step)),
                other => {
                    let mut o = other;
                    flush_idle(&mut ev, &mut o).map_err(werr)?;
                    Some((s.step, s.step))
                }
            };
            continue;
        }
        flush_idle(&mut ev, &mut idle).map_err(werr)?;
        step_events(&mut ev, &s, &req_index, usable).map_err(werr)?;
        checker.step(&s, &mut findings);
        for f in findings.drain(..) {
            ev.push(&json!({"name": f.kind.as_str(), "cat": f.severity.as_str(), "ph": "i", "s": "t",
                "ts": ts(f.step), "pid": PID_ENGINE, "tid": TID_HAZARDS,
                "args": {"severity": f.severity.as_str(), "req_id": f.req_id, "field": f.field, "message": f.message}}))
                .map_err(werr)?;
        }
    }
    flush_idle(&mut ev, &mut idle).map_err(werr)?;
    let steps = reader.steps_read();
    reader.finish().map_err(|e| at(input, e))?;
    write!(ev.w, "\n]}}\n").map_err(werr)?;
    let out = ev.w.into_inner().map_err(|e| werr(e.into_error()))?;
    out.commit().map_err(Fail)?;
    Ok(steps)
}
