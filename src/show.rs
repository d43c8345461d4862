//! `specreplay show`: a step-by-step log in the style of seed 004, then the summary.
//! Streams: one step in memory at a time; a run of idle steps is one line.

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
    let _ = writeln!(out, "free blocks: {}\n", s.num_free_blocks);
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

/// Renders the whole log plus the summary, step by step, to `out`.
pub fn render<R: std::io::Read>(mut reader: TraceReader<R>, out: &mut dyn std::io::Write) -> Result<(), ShowError> {
    let mut text = String::new();
    let h = reader.header().clone();
    let c = &h.config;
    let _ = writeln!(text, "trace: {} (recorded by {}), profile {:?}, k={}, lookup [{}, {}], max_model_len {}, block_size {}, capture sizes {:?}\n",
        h.format, h.recorded_by, c.profile, c.k(), c.prompt_lookup_min, c.prompt_lookup_max, c.max_model_len, c.block_size, c.cudagraph_capture_sizes);
    if c.default_num_gpu_blocks(h.requests.len()) == Some(c.num_gpu_blocks) {
        let _ = writeln!(text, "num_gpu_blocks {} = the default when a scenario leaves it out (every request can reach max_model_len, + the null block; vLLM sizes it from GPU memory)\n", c.num_gpu_blocks);
    }
    let mut summary = Summary::new();
    let mut idle: Option<(u64, u64)> = None;
    while let Some(s) = reader.next_step().map_err(ShowError::Trace)? {
        summary.add(&s);
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
        step_log(&s, &mut text);
        emit(out, &mut text)?;
    }
    if let Some((first, last)) = idle.take() {
        idle_run(first, last, &mut text);
    }
    let outputs = reader.finish().map_err(ShowError::Trace)?;
    for (r, toks) in &outputs {
        let _ = writeln!(text, "output['{r}'] ({} tokens): {}", toks.len(), list(toks));
    }
    let s = summary;
    let _ = writeln!(text, "\nsummary:");
    let _ = writeln!(text, "  total steps: {}", s.steps);
    let _ = writeln!(text, "  steps with draft tokens: {}", s.steps_with_drafts);
    let _ = writeln!(text, "  number of draft tokens: {}", s.spec.num_draft_tokens);
    let _ = writeln!(text, "  number of accepted tokens: {}", s.spec.num_accepted_tokens);
    let _ = writeln!(text, "  mean acceptance length: {:.2}", s.spec.mean_acceptance_length());
    for (i, a) in s.spec.acceptance_per_pos().iter().enumerate() {
        let _ = writeln!(text, "  acceptance at token {i}: {a:.2}");
    }
    emit(out, &mut text)
}
