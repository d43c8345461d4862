//! `specreplay report TRACE [TRACE2] -o report.html`: one self-contained HTML page (inline
//! CSS and SVG, no script, no network: a Content-Security-Policy of `default-src 'none'`
//! forbids any fetch) showing a run: the timeline of steps × persistent-batch rows,
//! graph mode and padding per step, arrivals / preemptions / finishes, `check` hazards
//! where they occur, per-position acceptance rates, the acceptance-length histogram and
//! KV blocks in use / free over steps. With two traces, both are shown and the first
//! divergence (`specreplay_sim::diff::compare`) is highlighted in each.
//!
//! Timeline cells: with at most [`MAX_STEPS_PLAIN`] steps and [`MAX_ROWS_PLAIN`] rows,
//! one `<rect class="cell" data-step data-row data-req>` per scheduled (step, row);
//! beyond, steps and rows are bucketed so at most ~300 × 32 `class="cell agg"` rects are
//! drawn, each with `data-step-from/-to` and `data-row-from/-to`. Deterministic: the same
//! traces give the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use specreplay_sim::check::{check_trace, Finding, Severity};
use specreplay_sim::summary::Summary;
use specreplay_sim::trace::{CudagraphMode, Step};
use specreplay_sim::{diff, Trace};

use crate::{at, io, read_trace, Fail};

/// Most steps drawn one column each.
pub const MAX_STEPS_PLAIN: usize = 400;
/// Most batch rows drawn one line each.
pub const MAX_ROWS_PLAIN: usize = 48;
const AGG_STEP_COLS: usize = 300;
const AGG_ROW_LINES: usize = 32;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Accepted drafts of a row (valid tokens − the bonus/target, clamped to the drafts).
fn accepted(s: &Step, row: usize, drafts: usize) -> usize {
    let valid = s.output_token_ids.get(row).map_or(0, |o| o.iter().filter(|&&x| x >= 0).count());
    valid.saturating_sub(1).min(drafts)
}

fn cell_color(sched: u32, drafts: usize, acc: usize) -> String {
    if drafts > 0 {
        let hue = 120.0 * acc as f64 / drafts as f64;
        format!("hsl({hue:.0},60%,45%)")
    } else if sched > 1 {
        "#4a78b5".into()
    } else {
        "#9bb7d4".into()
    }
}

fn mode_color(m: CudagraphMode) -> &'static str {
    match m {
        CudagraphMode::None => "#bbbbbb",
        CudagraphMode::Piecewise => "#f0ad4e",
        CudagraphMode::Full => "#5bc0de",
    }
}

/// An aggregated cell: (tokens, drafts, accepted, first step, last step).
type Bucket = (u64, u64, u64, u64, u64);

/// One trace's timeline as SVG.
fn timeline(t: &Trace, findings: &[Finding], divergence: Option<u64>, out: &mut String) {
    let n_steps = t.steps.len();
    let max_rows = t.steps.iter().map(|s| s.batch_req_ids.len().max(s.num_reqs_padded as usize)).max().unwrap_or(0);
    let aggregate = n_steps > MAX_STEPS_PLAIN || max_rows > MAX_ROWS_PLAIN;
    let (sb, rb) = if aggregate {
        (n_steps.div_ceil(AGG_STEP_COLS).max(1), max_rows.div_ceil(AGG_ROW_LINES).max(1))
    } else {
        (1, 1)
    };
    let cols = n_steps.div_ceil(sb).max(1);
    let lines = max_rows.div_ceil(rb).max(1);
    let cw = (1100.0 / cols as f64).clamp(3.0, 28.0);
    let rh = if aggregate { 12.0 } else { (560.0 / lines as f64).clamp(8.0, 18.0) };
    let left = 92.0;
    let top = 64.0;
    let width = left + cw * cols as f64 + 20.0;
    let height = top + rh * lines as f64 + 30.0;
    let col_x = |i: usize| left + cw * (i / sb) as f64;
    let _ = writeln!(
        out,
        "<svg class=\"timeline\" data-aggregated=\"{aggregate}\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\">"
    );
    // Strips: graph mode / padding, events, hazards.
    let _ = writeln!(out, "<text x=\"4\" y=\"14\" class=\"lbl\">graph</text><text x=\"4\" y=\"32\" class=\"lbl\">events</text><text x=\"4\" y=\"50\" class=\"lbl\">hazards</text>");
    let mut haz: BTreeMap<u64, Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        haz.entry(f.step).or_default().push(f);
    }
    let arrivals: BTreeMap<u64, Vec<&str>> = t.requests.iter().fold(BTreeMap::new(), |mut m, r| {
        m.entry(r.arrival_step).or_insert_with(Vec::new).push(r.req_id.as_str());
        m
    });
    for (i, s) in t.steps.iter().enumerate() {
        let x = col_x(i);
        if i % sb == 0 || !aggregate {
            if s.idle {
                let _ = writeln!(out, "<rect class=\"idle\" data-step=\"{}\" x=\"{x:.1}\" y=\"4\" width=\"{cw:.1}\" height=\"14\" fill=\"#eee\"><title>step {}: idle</title></rect>", s.step, s.step);
            } else {
                let pad = s.num_padded_tokens.saturating_sub(s.total_num_scheduled_tokens);
                let _ = writeln!(out, "<rect class=\"mode\" data-step=\"{}\" x=\"{x:.1}\" y=\"4\" width=\"{cw:.1}\" height=\"14\" fill=\"{}\"><title>step {}: {} — {} scheduled, {} padded tokens ({pad} padding), {} of {} request rows real</title></rect>",
                    s.step, mode_color(s.cudagraph_mode), s.step, s.cudagraph_mode, s.total_num_scheduled_tokens, s.num_padded_tokens, s.batch_req_ids.len(), s.num_reqs_padded);
                if pad > 0 && !aggregate {
                    let _ = writeln!(out, "<rect x=\"{x:.1}\" y=\"15\" width=\"{cw:.1}\" height=\"3\" fill=\"#333\"/>");
                }
            }
        }
        let mut ev = Vec::new();
        if let Some(a) = arrivals.get(&s.step) {
            ev.push(format!("arrived: {}", a.join(", ")));
        }
        if !s.preempted_req_ids.is_empty() {
            ev.push(format!("preempted: {}", s.preempted_req_ids.join(", ")));
        }
        if !s.finished_req_ids.is_empty() {
            ev.push(format!("finished: {}", s.finished_req_ids.join(", ")));
        }
        if !ev.is_empty() {
            let color = if s.preempted_req_ids.is_empty() { "#555" } else { "#d9534f" };
            let _ = writeln!(out, "<circle class=\"event\" data-step=\"{}\" cx=\"{:.1}\" cy=\"28\" r=\"{:.1}\" fill=\"{color}\"><title>step {}: {}</title></circle>",
                s.step, x + cw / 2.0, (cw / 2.0).clamp(1.5, 5.0), s.step, esc(&ev.join("; ")));
        }
        if let Some(fs) = haz.get(&s.step) {
            let worst = fs.iter().map(|f| f.severity).max().unwrap_or(Severity::Info);
            let color = match worst {
                Severity::Error => "#c9302c",
                Severity::Warn => "#ec971f",
                Severity::Info => "#8fa9c4",
            };
            let msgs: Vec<String> = fs.iter().map(|f| format!("{} {}: {}", f.severity, f.kind, f.message)).collect();
            let _ = writeln!(out, "<rect class=\"hazard sev-{}\" data-step=\"{}\" x=\"{x:.1}\" y=\"40\" width=\"{cw:.1}\" height=\"14\" fill=\"{color}\"><title>step {}: {}</title></rect>",
                worst, s.step, s.step, esc(&msgs.join("\n")));
        }
    }
    // Row labels.
    for l in 0..lines {
        if lines <= 48 || l % 4 == 0 {
            let label = if rb == 1 { format!("row {l}") } else { format!("rows {}-{}", l * rb, (l + 1) * rb - 1) };
            let _ =
                writeln!(out, "<text x=\"4\" y=\"{:.1}\" class=\"lbl\">{label}</text>", top + rh * l as f64 + rh * 0.8);
        }
    }
    if aggregate {
        // (step bucket, row bucket) → (tokens, drafts, accepted, first step, last step)
        let mut agg: BTreeMap<(usize, usize), Bucket> = BTreeMap::new();
        for (i, s) in t.steps.iter().enumerate() {
            for (row, r) in s.batch_req_ids.iter().enumerate() {
                let sched = s.num_scheduled_tokens.get(r).copied().unwrap_or(0);
                let d = s.scheduled_spec_decode_tokens.get(r).map_or(0, Vec::len);
                let a = accepted(s, row, d);
                let e = agg.entry((i / sb, row / rb)).or_insert((0, 0, 0, s.step, s.step));
                e.0 += u64::from(sched);
                e.1 += d as u64;
                e.2 += a as u64;
                e.3 = e.3.min(s.step);
                e.4 = e.4.max(s.step);
            }
        }
        let peak = agg.values().map(|v| v.0).max().unwrap_or(1).max(1);
        for ((c, l), (tok, d, a, s0, s1)) in &agg {
            let x = left + cw * *c as f64;
            let y = top + rh * *l as f64;
            let light = 90.0 - 55.0 * (*tok as f64 / peak as f64).sqrt();
            let hue = if *d > 0 { 120.0 * *a as f64 / *d as f64 } else { 210.0 };
            let _ = writeln!(out, "<rect class=\"cell agg\" data-step-from=\"{s0}\" data-step-to=\"{s1}\" data-row-from=\"{}\" data-row-to=\"{}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cw:.1}\" height=\"{rh:.1}\" fill=\"hsl({hue:.0},55%,{light:.0}%)\"><title>steps {s0}-{s1}, rows {}-{}: {tok} tokens scheduled, {d} drafts, {a} accepted</title></rect>",
                l * rb, (l + 1) * rb - 1, l * rb, (l + 1) * rb - 1);
        }
    } else {
        let mut flagged: BTreeMap<(u64, &str), usize> = BTreeMap::new();
        for f in findings {
            if let Some(r) = &f.req_id {
                *flagged.entry((f.step, r.as_str())).or_default() += 1;
            }
        }
        for (i, s) in t.steps.iter().enumerate() {
            let x = col_x(i);
            for (row, r) in s.batch_req_ids.iter().enumerate() {
                let y = top + rh * row as f64;
                let sched = s.num_scheduled_tokens.get(r).copied().unwrap_or(0);
                let d = s.scheduled_spec_decode_tokens.get(r).map_or(0, Vec::len);
                let a = accepted(s, row, d);
                let proposed = s.draft_token_ids.get(r).map_or(0, Vec::len);
                let fin = s.finished_req_ids.contains(r);
                let hz = flagged.contains_key(&(s.step, r.as_str()));
                let stroke = if hz { " stroke=\"#c9302c\" stroke-width=\"2\"" } else { "" };
                let _ = writeln!(out, "<rect class=\"cell{}\" data-step=\"{}\" data-row=\"{row}\" data-req=\"{}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"{stroke}><title>step {} row {row}: request {} — {sched} token(s) scheduled, drafts {d}: {a} accepted, {} rejected; {proposed} proposed{}</title></rect>",
                    if hz { " flagged" } else { "" }, s.step, esc(r), (cw - 1.0).max(1.0), rh - 1.0, cell_color(sched, d, a),
                    s.step, esc(r), d - a, if fin { "; finished" } else { "" });
                if fin {
                    let _ = writeln!(
                        out,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"#111\"/>",
                        x + cw - 3.0,
                        y + rh / 2.0
                    );
                }
            }
            if s.cudagraph_mode == CudagraphMode::Full {
                for row in s.batch_req_ids.len()..s.num_reqs_padded as usize {
                    let y = top + rh * row as f64;
                    let _ = writeln!(out, "<rect class=\"pad\" data-step=\"{}\" data-row=\"{row}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"url(#hatch)\"><title>step {} row {row}: FULL-graph padded request</title></rect>",
                        s.step, (cw - 1.0).max(1.0), rh - 1.0, s.step);
                }
            }
        }
    }
    if let Some(d) = divergence {
        if let Some(i) = t.steps.iter().position(|s| s.step == d) {
            let x = col_x(i);
            let _ = writeln!(out, "<rect class=\"divergence\" data-step=\"{d}\" x=\"{:.1}\" y=\"0\" width=\"{:.1}\" height=\"{height:.0}\" fill=\"none\" stroke=\"#d10\" stroke-width=\"3\"><title>first divergence: step {d}</title></rect>",
                x - 1.0, cw + 2.0);
        }
    }
    let _ = writeln!(out, "<defs><pattern id=\"hatch\" width=\"4\" height=\"4\" patternUnits=\"userSpaceOnUse\"><path d=\"M0,4 L4,0\" stroke=\"#999\"/></pattern></defs></svg>");
}

/// A bar chart (values in [0, max]).
fn bars(title: &str, labels: &[String], values: &[f64], max: f64, fmt: &dyn Fn(f64) -> String, out: &mut String) {
    let w = 40.0f64.max(360.0 / values.len().max(1) as f64).min(60.0);
    let width = 50.0 + w * values.len().max(1) as f64;
    let _ = writeln!(
        out,
        "<figure><figcaption>{}</figcaption><svg class=\"chart\" width=\"{width:.0}\" height=\"170\">",
        esc(title)
    );
    let _ = writeln!(out, "<line x1=\"40\" y1=\"140\" x2=\"{width:.0}\" y2=\"140\" stroke=\"#888\"/>");
    for (i, (v, l)) in values.iter().zip(labels).enumerate() {
        let h = if max > 0.0 { 120.0 * v / max } else { 0.0 };
        let x = 44.0 + w * i as f64;
        let _ = writeln!(out, "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#4a78b5\"><title>{}: {}</title></rect><text x=\"{:.1}\" y=\"155\" class=\"lbl\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"lbl\">{}</text>",
            140.0 - h, w - 8.0, esc(l), fmt(*v), x, esc(l), x, 136.0 - h, fmt(*v));
    }
    let _ = writeln!(out, "</svg></figure>");
}

/// KV blocks used and free over steps.
fn kv_chart(t: &Trace, out: &mut String) {
    let usable = match t.config.profile {
        specreplay_sim::Profile::VllmV1 => t.config.num_gpu_blocks.saturating_sub(1),
        specreplay_sim::Profile::NanoVllm => t.config.num_gpu_blocks,
    };
    let busy: Vec<&Step> = t.steps.iter().filter(|s| !s.idle).collect();
    let n = busy.len().max(2);
    let width = 760.0;
    let x = |i: usize| 40.0 + (width - 60.0) * i as f64 / (n - 1) as f64;
    let y = |v: u32| 150.0 - 130.0 * f64::from(v) / f64::from(usable.max(1));
    let pts = |f: &dyn Fn(&Step) -> u32| -> String {
        busy.iter()
            .enumerate()
            .map(|(i, s)| format!("{:.1},{:.1}", x(i), y(f(s).min(usable))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(out, "<figure><figcaption>KV blocks over busy steps (of {usable} allocatable): <span style=\"color:#c9302c\">in use</span>, <span style=\"color:#2e9e4f\">free</span></figcaption><svg class=\"chart kv\" width=\"{width:.0}\" height=\"170\">");
    let _ = writeln!(out, "<line x1=\"40\" y1=\"150\" x2=\"{width:.0}\" y2=\"150\" stroke=\"#888\"/><text x=\"2\" y=\"24\" class=\"lbl\">{usable}</text><text x=\"2\" y=\"150\" class=\"lbl\">0</text>");
    let _ = writeln!(
        out,
        "<polyline fill=\"none\" stroke=\"#c9302c\" stroke-width=\"1.5\" points=\"{}\"/>",
        pts(&|s| usable.saturating_sub(s.num_free_blocks))
    );
    let _ = writeln!(
        out,
        "<polyline fill=\"none\" stroke=\"#2e9e4f\" stroke-width=\"1.5\" points=\"{}\"/>",
        pts(&|s| s.num_free_blocks)
    );
    let _ = writeln!(out, "</svg></figure>");
}

fn section(name: &str, t: &Trace, divergence: Option<u64>, out: &mut String) {
    let findings = check_trace(t);
    let sum = Summary::from_trace(t);
    let mut by_kind: BTreeMap<&str, (usize, Severity)> = BTreeMap::new();
    for f in &findings {
        by_kind.entry(f.kind.as_str()).or_insert((0, f.severity)).0 += 1;
    }
    let _ = writeln!(out, "<section class=\"trace\"><h2>{}</h2>", esc(name));
    let _ = writeln!(out, "<p class=\"meta\">recorded by {}; profile {:?}, k = {}, max_model_len {}, block_size {}, {} requests, {} busy + {} idle steps, {} preemptions; drafts {} / accepted {} (mean acceptance length {:.2})</p>",
        esc(&t.recorded_by), t.config.profile, t.config.k(), t.config.max_model_len, t.config.block_size, t.requests.len(),
        sum.steps, sum.idle_steps, sum.preemptions, sum.spec.num_draft_tokens, sum.spec.num_accepted_tokens, sum.spec.mean_acceptance_length());
    let _ = writeln!(out, "<h3>Timeline: steps × persistent-batch rows</h3><div class=\"scroll\">");
    timeline(t, &findings, divergence, out);
    let _ = writeln!(out, "</div>");
    let _ = writeln!(out, "<h3>Hazards (specreplay check)</h3>");
    if by_kind.is_empty() {
        let _ = writeln!(out, "<p>none</p>");
    } else {
        let _ = writeln!(out, "<ul class=\"hazards\">");
        for (k, (n, sev)) in &by_kind {
            let _ = writeln!(out, "<li class=\"sev-{sev}\">{sev} <b>{k}</b>: {n}</li>");
        }
        let _ = writeln!(out, "</ul>");
        let shown: Vec<&Finding> = findings.iter().filter(|f| f.severity != Severity::Info).take(50).collect();
        if !shown.is_empty() {
            let _ = writeln!(out, "<table class=\"findings\"><tr><th>step</th><th>kind</th><th>request</th><th>field</th><th>message</th></tr>");
            for f in shown {
                let _ = writeln!(
                    out,
                    "<tr class=\"sev-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    f.severity,
                    f.step,
                    f.kind,
                    esc(f.req_id.as_deref().unwrap_or("")),
                    esc(&f.field),
                    esc(&f.message)
                );
            }
            let _ = writeln!(out, "</table>");
        }
    }
    let _ = writeln!(out, "<div class=\"charts\">");
    let per_pos = sum.spec.acceptance_per_pos();
    let labels: Vec<String> = (0..per_pos.len()).map(|i| format!("pos {i}")).collect();
    bars("Acceptance rate per draft position", &labels, &per_pos, 1.0, &|v| format!("{v:.2}"), out);
    let mut hist: Vec<f64> = vec![0.0; per_pos.len() + 1];
    for s in t.steps.iter().filter(|s| !s.idle) {
        for (row, r) in s.batch_req_ids.iter().enumerate() {
            let d = s.scheduled_spec_decode_tokens.get(r).map_or(0, Vec::len);
            if d > 0 {
                let a = accepted(s, row, d);
                if a >= hist.len() {
                    hist.resize(a + 1, 0.0);
                }
                hist[a] += 1.0;
            }
        }
    }
    let hl: Vec<String> = (0..hist.len()).map(|i| format!("{i}")).collect();
    let hmax = hist.iter().copied().fold(0.0, f64::max);
    bars(
        "Acceptance length histogram (accepted drafts per draft event)",
        &hl,
        &hist,
        hmax,
        &|v| format!("{v:.0}"),
        out,
    );
    kv_chart(t, out);
    let _ = writeln!(out, "</div></section>");
}

const STYLE: &str = "body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fff}\
h1{font-size:20px}h2{font-size:16px;border-bottom:1px solid #ccc}h3{font-size:14px;margin:12px 0 4px}\
.scroll{overflow-x:auto;border:1px solid #ddd}.lbl{font-size:10px;fill:#444}.meta{color:#555}\
.charts{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}figcaption{font-weight:600}\
.sev-error{color:#c9302c}.sev-warn{color:#b06d00}table.findings{border-collapse:collapse;font-size:12px}\
table.findings td,table.findings th{border:1px solid #ddd;padding:2px 4px;text-align:left}\
.diverge{background:#fee;border:2px solid #d10;padding:6px;margin:8px 0}.legend span{display:inline-block;padding:0 6px;margin-right:4px;color:#fff}";

/// Builds the report page of one trace, or of two with their first divergence.
pub fn html(traces: &[(String, Trace)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
<title>specreplay report</title><style>{STYLE}</style></head><body>"
    );
    let names: Vec<String> = traces.iter().map(|(n, _)| esc(n)).collect();
    let _ = writeln!(out, "<h1>specreplay report: {}</h1>", names.join(" vs "));
    let _ = writeln!(out, "<p class=\"legend\">cells: <span style=\"background:#4a78b5\">prefill / chunk</span><span style=\"background:#9bb7d4\">decode</span><span style=\"background:hsl(120,60%,45%)\">drafts all accepted</span><span style=\"background:hsl(0,60%,45%)\">drafts all rejected</span> (hue = accepted share); graph strip: <span style=\"background:#bbbbbb\">NONE</span><span style=\"background:#f0ad4e\">PIECEWISE</span><span style=\"background:#5bc0de\">FULL</span> (dark bar = padded tokens; hatched rows = FULL padded requests); events: grey arrival/finish, red preemption; hazards: red error, orange warn, blue info (hover for details).</p>");
    let mut divergence = None;
    if let [(a_name, a), (b_name, b)] = traces {
        let rep = diff::compare(a, b);
        match &rep.first {
            None => {
                let _ = writeln!(
                    out,
                    "<p class=\"diverge identical\">The two traces are identical ({} steps).</p>",
                    rep.steps_compared
                );
            }
            Some(d) => {
                divergence = d.step;
                let step = d.step.map_or("header/outputs".to_string(), |s| format!("step {s}"));
                let req = d.request.as_deref().map_or(String::new(), |r| format!(" / request {r:?}"));
                let _ = writeln!(out, "<div class=\"diverge\" data-step=\"{}\"><b>First divergence</b>: {}{} / {}<br>{}: {}<br>{}: {}</div>",
                    d.step.unwrap_or(0), step, esc(&req), esc(&d.field), esc(a_name), esc(&d.expected), esc(b_name), esc(&d.actual));
            }
        }
    }
    for (name, t) in traces {
        section(name, t, divergence, &mut out);
    }
    let _ = writeln!(out, "</body></html>");
    out
}

/// `specreplay report`: reads the traces, writes the page (guarded write).
pub fn run(inputs: &[PathBuf], output: &Path) -> Result<(), Fail> {
    if inputs.is_empty() || inputs.len() > 2 {
        return Err(Fail("report takes one or two traces".into()));
    }
    let mut traces = Vec::new();
    let mut ids = Vec::new();
    for p in inputs {
        let (t, id) = read_trace(p)?;
        traces.push((p.display().to_string(), t));
        ids.push(id);
    }
    let page = html(&traces);
    let mut out = io::create_output(output, &ids).map_err(Fail)?;
    std::io::Write::write_all(&mut out, page.as_bytes())
        .map_err(|e| at(output, format!("cannot write: {}", io::io_reason(&e))))?;
    out.commit().map_err(Fail)
}
