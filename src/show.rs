//! `specreplay show`: a step-by-step log in the style of seed 004, then the summary.
//! Streams: one step in memory at a time; a run of idle steps is one line. [`Filter`]
//! narrows the log (a step range, one request, idle steps hidden); the summary always
//! covers the whole trace.

use std::fmt::Write;

use specreplay_sim::summary::Summary;
use specreplay_sim::trace::{Step, TraceReader};
use specreplay_sim::TraceError;

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(", "))
}

fn map<V>(m: &std::collections::BTreeMap<String, V>, f: impl Fn(&V) -> String) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("'{k}': {}", f(v))).collect();
    format!("{{{}}}", items.join(", "))
}

fn step_log(s: &Step, out: &mut String) {
    if s.idle {
        let _ = writeln!(out, "--- {}. idle (no request waiting or running) ---\n", s.step);
        return;
    }
    let drafts: usize = s.scheduled_spec_decode_tokens.values().map(Vec::len).sum();
    let _ =
        writeln!(out, "--- {}. {} tokens scheduled, {} draft input ---", s.step, s.total_num_scheduled_tokens, drafts);
    let _ = writeln!(out, "schedule result:");
    let _ = writeln!(out, "  num_computed_tokens: {}", map(&s.num_computed_tokens, |v| v.to_string()));
    let _ = writeln!(out, "  num_scheduled_tokens: {}", map(&s.num_scheduled_tokens, |v| v.to_string()));
    let _ = writeln!(out, "  total_num_scheduled_tokens: {}", s.total_num_scheduled_tokens);
    let _ = writeln!(out, "  scheduled_spec_decode_tokens: {}", map(&s.scheduled_spec_decode_tokens, |v| list(v)));
    if !s.preempted_req_ids.is_empty() {
        let _ = writeln!(out, "  preempted: {:?}", s.preempted_req_ids);
    }
    let _ = writeln!(out, "  block_ids: {}", map(&s.block_ids, |v| list(v)));
    let _ = writeln!(
        out,
        "batch rows: {:?}, cudagraph {} ({} tokens, {} reqs padded)",
        s.batch_req_ids, s.cudagraph_mode, s.num_padded_tokens, s.num_reqs_padded
    );
    if let Some(c) = &s.context {
        let opt = |v: &Option<Vec<i64>>| v.as_ref().map_or("None".to_string(), |v| list(v));
        let tables = c
            .block_tables
            .as_ref()
            .map_or("None".to_string(), |t| format!("[{}]", t.iter().map(|r| list(r)).collect::<Vec<_>>().join(", ")));
        let _ = writeln!(
            out,
            "Context(is_prefill={}, max_seqlen_q={}, max_seqlen_k={}, cu_seqlens_q={}, cu_seqlens_k={}, slot_mapping={}, context_lens={}, block_tables={})",
            if c.is_prefill { "True" } else { "False" },
            c.max_seqlen_q,
            c.max_seqlen_k,
            opt(&c.cu_seqlens_q),
            opt(&c.cu_seqlens_k),
            list(&c.slot_mapping),
            opt(&c.context_lens),
            tables
        );
    } else {
        let _ = writeln!(
            out,
            "  logits_indices: {}, num_sampled_tokens: {}",
            list(&s.logits_indices),
            list(&s.num_sampled_tokens)
        );
        let _ = writeln!(out, "_model_forward() on:");
        let _ = writeln!(out, "  input_ids: {}", list(&s.input_ids));
        let _ = writeln!(out, "  positions: {}", list(&s.positions));
        let a = &s.attn;
        let _ = writeln!(
            out,
            "flash_attn: cu_seqlens_q {}, max_seqlen_q {}, seqused_k {}, max_seqlen_k {}",
            list(&a.cu_seqlens_q),
            a.max_seqlen_q,
            list(&a.seqused_k),
            a.max_seqlen_k
        );
        let rows: Vec<String> = a.block_table.iter().map(|r| list(r)).collect();
        let _ = writeln!(out, "  block_table: [{}], slot_mapping: {}", rows.join(", "), list(&a.slot_mapping));
    }
    let rows: Vec<String> = s.output_token_ids.iter().map(|r| list(r)).collect();
    let _ = writeln!(out, "output_token_ids: [{}]", rows.join(", "));
    for (r, row) in &s.token_ids_cpu {
        let _ = writeln!(out, "token_ids_cpu['{r}']: {}", list(row));
    }
    if s.context.is_none() {
        let _ = writeln!(
            out,
            "proposed draft_token_ids: {}",
            if s.draft_token_ids.is_empty() {
                "(drafter did not run)".to_string()
            } else {
                map(&s.draft_token_ids, |v| list(v))
            }
        );
    }
    if !s.finished_req_ids.is_empty() {
        let _ = writeln!(out, "finished: {:?}", s.finished_req_ids);
    }
    if !s.logits.is_empty() {
        // Model runs: each logits row as request@position -> top-1 (margin), near-ties marked.
        let rows: Vec<String> = s
            .logits
            .iter()
            .map(|l| {
                let tie = if l.is_near_tie() { ", near-tie" } else { "" };
                format!("{:?}@{} -> {} (margin {}{tie})", l.req_id, l.position, l.top1, l.margin)
            })
            .collect();
        let _ = writeln!(out, "logits rows: {}", rows.join(", "));
    }
    let _ = writeln!(out, "free blocks: {}\n", s.num_free_blocks);
}

/// Which steps `show` prints.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Inclusive step range.
    pub steps: Option<(u64, u64)>,
    /// Only steps this request takes part in (scheduled, in the batch, preempted or
    /// finished), its per-request fields only.
    pub request: Option<String>,
    /// Leave idle steps out.
    pub hide_idle: bool,
}

impl Filter {
    /// Parses `--step`: `A..B` (inclusive), `A..`, `..B` or `N`.
    pub fn parse_steps(text: &str) -> Result<(u64, u64), String> {
        let num = |t: &str, default: u64| -> Result<u64, String> {
            if t.is_empty() {
                return Ok(default);
            }
            t.parse::<u64>().map_err(|_| format!("--step: expected A..B, A.., ..B or N (1-based steps), got {text:?}"))
        };
        let (a, b) = match text.split_once("..") {
            Some((a, b)) => (num(a, 1)?, num(b, u64::MAX)?),
            None if !text.is_empty() => {
                let n = num(text, 0)?;
                (n, n)
            }
            None => return Err("--step: empty range".into()),
        };
        if a > b {
            return Err(format!("--step: empty range {text:?} (first step after last)"));
        }
        Ok((a, b))
    }

    fn is_active(&self) -> bool {
        self.steps.is_some() || self.request.is_some() || self.hide_idle
    }

    fn in_range(&self, step: u64) -> bool {
        self.steps.is_none_or(|(a, b)| (a..=b).contains(&step))
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((a, b)) = self.steps {
            parts.push(if b == u64::MAX { format!("steps {a}..") } else { format!("steps {a}..{b}") });
        }
        if let Some(r) = &self.request {
            parts.push(format!("request {r:?}"));
        }
        if self.hide_idle {
            parts.push("idle hidden".into());
        }
        parts.join(", ")
    }
}

/// Whether request `r` takes part in step `s`.
fn involves(s: &Step, r: &str) -> bool {
    s.batch_req_ids.iter().any(|x| x == r)
        || s.num_scheduled_tokens.contains_key(r)
        || s.preempted_req_ids.iter().any(|x| x == r)
        || s.finished_req_ids.iter().any(|x| x == r)
}

/// The step with its per-request maps narrowed to `r` (batch-wide arrays kept).
fn restrict(s: &Step, r: &str) -> Step {
    fn keep<V: Clone>(m: &std::collections::BTreeMap<String, V>, r: &str) -> std::collections::BTreeMap<String, V> {
        m.iter().filter(|(k, _)| k.as_str() == r).map(|(k, v)| (k.clone(), v.clone())).collect()
    }
    Step {
        num_scheduled_tokens: keep(&s.num_scheduled_tokens, r),
        scheduled_spec_decode_tokens: keep(&s.scheduled_spec_decode_tokens, r),
        num_computed_tokens: keep(&s.num_computed_tokens, r),
        block_ids: keep(&s.block_ids, r),
        draft_token_ids: keep(&s.draft_token_ids, r),
        token_ids_cpu: keep(&s.token_ids_cpu, r),
        logits: specreplay_sim::trace::JsonOnly(s.logits.iter().filter(|l| l.req_id == r).cloned().collect()),
        ..s.clone()
    }
}

/// Why `show` stopped.
pub enum ShowError {
    Trace(TraceError),
    Write(std::io::Error),
}

fn emit(out: &mut dyn std::io::Write, text: &mut String) -> Result<(), ShowError> {
    out.write_all(text.as_bytes()).map_err(ShowError::Write)?;
    text.clear();
    Ok(())
}

fn idle_run(first: u64, last: u64, out: &mut String) {
    if first == last {
        let _ = writeln!(out, "--- {first}. idle (no request waiting or running) ---\n");
    } else {
        let n = last - first + 1;
        let _ = writeln!(out, "--- {first}-{last}. idle, {n} steps (no request waiting or running) ---\n");
    }
}

/// Renders the log (narrowed by `filter`) plus the whole trace's summary, step by step, to `out`.
pub fn render<R: std::io::Read>(
    mut reader: TraceReader<R>,
    out: &mut dyn std::io::Write,
    filter: &Filter,
) -> Result<(), ShowError> {
    let mut text = String::new();
    let h = reader.header().clone();
    let c = &h.config;
    let _ = writeln!(text, "trace: {} (recorded by {}), profile {:?}, k={}, lookup [{}, {}], max_model_len {}, block_size {}, capture sizes {:?}\n",
        h.format, h.recorded_by, c.profile, c.k(), c.prompt_lookup_min, c.prompt_lookup_max, c.max_model_len, c.block_size, c.cudagraph_capture_sizes);
    if !h.backend.is_empty() {
        let ck = h.checkpoint.as_ref().map_or(String::new(), |c| match &c.sha256 {
            Some(sha) => format!(", checkpoint {} (sha256 {sha})", c.source),
            None => format!(", checkpoint {}", c.source),
        });
        let dev = if h.device.is_empty() { String::new() } else { format!(" on {}", h.device.as_str()) };
        let _ = writeln!(
            text,
            "model run: backend {}{dev}{ck}, {} device module(s) hashed\n",
            h.backend.as_str(),
            h.module_hashes.len()
        );
    }
    if c.default_num_gpu_blocks(h.requests.len()) == Some(c.num_gpu_blocks) {
        let _ = writeln!(text, "num_gpu_blocks {} = the default when a scenario leaves it out (every request can reach max_model_len, + the null block; vLLM sizes it from GPU memory)\n", c.num_gpu_blocks);
    }
    let mut summary = Summary::new();
    let mut idle: Option<(u64, u64)> = None;
    let mut shown = 0u64;
    while let Some(s) = reader.next_step().map_err(ShowError::Trace)? {
        summary.add(&s);
        let visible = filter.in_range(s.step)
            && filter.request.as_deref().is_none_or(|r| involves(&s, r))
            && !(filter.hide_idle && s.idle);
        if !visible {
            if let Some((first, last)) = idle.take() {
                idle_run(first, last, &mut text);
            }
            continue;
        }
        shown += 1;
        if s.is_pure_idle() {
            match idle {
                Some((first, last)) if last.checked_add(1) == Some(s.step) => idle = Some((first, s.step)),
                Some((first, last)) => {
                    idle_run(first, last, &mut text);
                    idle = Some((s.step, s.step));
                }
                None => idle = Some((s.step, s.step)),
            }
            continue;
        }
        if let Some((first, last)) = idle.take() {
            idle_run(first, last, &mut text);
        }
        match &filter.request {
            Some(r) => step_log(&restrict(&s, r), &mut text),
            None => step_log(&s, &mut text),
        }
        emit(out, &mut text)?;
    }
    if let Some((first, last)) = idle.take() {
        idle_run(first, last, &mut text);
    }
    let outputs = reader.finish().map_err(ShowError::Trace)?;
    for (r, toks) in outputs.iter().filter(|(r, _)| filter.request.as_ref().is_none_or(|x| x == *r)) {
        let _ = writeln!(text, "output['{r}'] ({} tokens): {}", toks.len(), list(toks));
    }
    let s = summary;
    let _ = writeln!(text, "\nsummary:");
    if filter.is_active() {
        let _ = writeln!(
            text,
            "  shown: {shown} of {} steps ({}); the summary covers the whole trace",
            s.steps as u64 + s.idle_steps,
            filter.describe()
        );
    }
    let _ = writeln!(text, "  total steps: {}", s.steps);
    let _ = writeln!(text, "  idle steps: {}", s.idle_steps);
    let _ = writeln!(text, "  preemptions: {}", s.preemptions);
    // vLLM never allocates the null block 0; nano-vllm's pool starts at block 0.
    let usable = match c.profile {
        specreplay_sim::Profile::VllmV1 => c.num_gpu_blocks.saturating_sub(1),
        specreplay_sim::Profile::NanoVllm => c.num_gpu_blocks,
    };
    if let Some((peak, mean)) = s.kv_used(usable) {
        let pct = |x: f64| if usable == 0 { 0.0 } else { 100.0 * x / f64::from(usable) };
        let _ = writeln!(
            text,
            "  KV blocks in use: peak {peak} of {usable} ({:.1}%), mean {mean:.1} ({:.1}%)",
            pct(f64::from(peak)),
            pct(mean)
        );
    }
    let _ = writeln!(text, "  steps with draft tokens: {}", s.steps_with_drafts);
    let _ = writeln!(text, "  number of draft tokens: {}", s.spec.num_draft_tokens);
    let _ = writeln!(text, "  number of accepted tokens: {}", s.spec.num_accepted_tokens);
    let _ = writeln!(text, "  mean acceptance length: {:.2}", s.spec.mean_acceptance_length());
    for (i, a) in s.spec.acceptance_per_pos().iter().enumerate() {
        let _ = writeln!(text, "  acceptance at token {i}: {a:.2}");
    }
    emit(out, &mut text)
}
