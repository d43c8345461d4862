//! `specreplay check`: the hazard checker (`sim/src/check/`). The whole committed corpus
//! runs through it (no error-level finding on any recording of vLLM or the simulator; the
//! stale-draft steps `docs/vllm-quirks.md` names are flagged there), the golden trace's
//! findings are pinned, and every kind has a minimal trace that shows it and one that
//! does not (hand-built or mutated from the golden run).

use std::collections::BTreeMap;

use specreplay_sim::check::{check_trace, counts, Finding, Kind, Severity};
use specreplay_sim::trace::{CudagraphMode, Step};
use specreplay_sim::{trace, Trace};

mod common;
use common::{cli, root};

fn golden() -> Trace {
    trace::read(&root().join("traces/vllm_ngram_13step.json")).unwrap()
}

fn step_mut(t: &mut Trace, n: u64) -> &mut Step {
    t.steps.iter_mut().find(|s| s.step == n).unwrap()
}

/// The findings of one kind, as (step, request).
fn of(t: &Trace, k: Kind) -> Vec<(u64, Option<String>)> {
    check_trace(t).into_iter().filter(|f| f.kind == k).map(|f| (f.step, f.req_id)).collect()
}

fn all_committed() -> Vec<(std::path::PathBuf, Trace)> {
    let mut v = common::corpus("traces/conformance/vllm-0.12.0");
    v.extend(common::corpus("traces/conformance/nano-vllm-2f21442"));
    for f in ["traces/vllm_ngram_13step.json", "traces/nano_vllm_basic.json"] {
        v.push((root().join(f), trace::read(&root().join(f)).unwrap()));
    }
    v
}

#[test]
fn committed_corpus_has_no_error_level_hazard_and_flags_the_documented_stale_drafts() {
    let traces = all_committed();
    assert!(traces.len() >= 490, "{} traces", traces.len());
    let mut total: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut stale: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for (p, t) in &traces {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        for f in check_trace(t) {
            *total.entry(f.kind).or_default() += 1;
            if f.severity == Severity::Error {
                errors.push(format!("{name}: {f:?}\n  reproduce: specreplay check {}", p.display()));
            }
            if f.kind == Kind::StaleDraftsVerified {
                stale.entry(name.clone()).or_default().push((f.step, f.req_id.clone().unwrap()));
            }
        }
    }
    assert!(errors.is_empty(), "error-level hazards in recordings:\n{}", errors.join("\n"));
    // docs/vllm-quirks.md §1 names these steps.
    let at = |n: &str| stale.get(n).cloned().unwrap_or_default();
    assert_eq!(at("s3_0099.bin"), vec![(15, "r1".to_string())]);
    assert!(at("s3_0202.bin").contains(&(85, "r9".to_string())), "{:?}", at("s3_0202.bin"));
    assert!(at("s3_0217.bin").contains(&(23, "r2".to_string())), "{:?}", at("s3_0217.bin"));
    // The vLLM-possible kinds all occur in the corpus (the checks can fire on real runs).
    for k in
        [Kind::StaleDraftsVerified, Kind::DraftsForFinishedRequest, Kind::DrafterGateSuppressed, Kind::StaleTailRead]
    {
        assert!(total.get(&k).copied().unwrap_or(0) > 0, "{k} never found in the corpus: {total:?}");
    }
    println!("{total:?}\n{stale:?}");
}

#[test]
fn corpus_exercises_legitimate_block_sharing() {
    // block-shared-without-prefix-hit must stay silent on real prefix-cache hits: make
    // sure the corpus has some (two running requests holding one block).
    let mut shared_steps = 0;
    for (_, t) in common::corpus("traces/conformance/vllm-0.12.0") {
        for s in t.steps.iter().filter(|s| !s.idle) {
            let mut seen = std::collections::BTreeSet::new();
            if s.block_ids.values().flatten().any(|b| !seen.insert(*b)) {
                shared_steps += 1;
            }
        }
    }
    assert!(shared_steps > 0);
}

#[test]
fn golden_trace_shows_only_vllm_possible_info_findings() {
    let f = check_trace(&golden());
    assert!(f.iter().all(|f| f.kind.possible_in_vllm() && f.severity == Severity::Info), "{f:#?}");
    let got: Vec<(u64, &str)> = f.iter().map(|f| (f.step, f.kind.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (2, "stale-tail-read"),
            (4, "stale-tail-read"),
            (5, "stale-tail-read"),
            (7, "stale-tail-read"),
            (13, "drafter-gate-suppressed"),
            (13, "stale-tail-read"),
        ]
    );
    assert!(f[0].message.contains("slots 1-2 from step 1 request \"0\""), "{}", f[0].message);
}

#[test]
fn stale_drafts_verified() {
    let t = trace::read(&root().join("traces/conformance/vllm-0.12.0/s3_0099.bin")).unwrap();
    let f: Vec<Finding> = check_trace(&t).into_iter().filter(|f| f.kind == Kind::StaleDraftsVerified).collect();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].field.as_str(), f[0].severity), ("input_ids[2..6]", Severity::Warn));
    assert!(f[0].message.contains("[0, 0, 0, 0]") && f[0].message.contains("[80, 189, 80, 189]"), "{}", f[0].message);
    assert!(f[0].message.contains("never written"), "{}", f[0].message);
    // Golden: step 3 feeds the scheduled drafts [15, 5109]; tamper the fed one.
    let mut g = golden();
    assert!(of(&g, Kind::StaleDraftsVerified).is_empty());
    step_mut(&mut g, 3).input_ids[2] = 7;
    assert_eq!(of(&g, Kind::StaleDraftsVerified), vec![(3, Some("0".into()))]);
}

#[test]
fn stale_drafts_name_the_earlier_occupant() {
    let t = trace::read(&root().join("traces/conformance/vllm-0.12.0/s3_0202.bin")).unwrap();
    let f = check_trace(&t).into_iter().find(|f| f.kind == Kind::StaleDraftsVerified && f.step == 85).unwrap();
    assert!(f.message.contains("[151]") && f.message.contains("written by request \"r5\""), "{}", f.message);
}

#[test]
fn padded_slot_write() {
    let mut g = golden();
    // Step 2: PIECEWISE, 1 token scheduled, padded to 3.
    step_mut(&mut g, 2).attn.slot_mapping.extend([-1, -1]);
    assert!(of(&g, Kind::PaddedSlotWrite).is_empty());
    step_mut(&mut g, 2).attn.slot_mapping[2] = 29;
    assert_eq!(of(&g, Kind::PaddedSlotWrite), vec![(2, None)]);
}

fn padded_full(block_row: Vec<i64>, used: i64) -> Trace {
    let mut g = golden();
    let s = step_mut(&mut g, 3);
    assert_eq!(s.cudagraph_mode, CudagraphMode::Full);
    s.num_reqs_padded = 2;
    s.attn.block_table.push(block_row);
    s.attn.seqused_k.push(used);
    g
}

#[test]
fn full_padded_row_live() {
    assert!(of(&padded_full(vec![-1, -1], 0), Kind::FullPaddedRowLive).is_empty());
    assert_eq!(of(&padded_full(vec![1, -1], 0), Kind::FullPaddedRowLive), vec![(3, None)]);
    assert_eq!(of(&padded_full(vec![-1, -1], 15), Kind::FullPaddedRowLive), vec![(3, None)]);
    // Same rows under PIECEWISE are not FULL padding.
    let mut g = padded_full(vec![1, -1], 15);
    step_mut(&mut g, 3).cudagraph_mode = CudagraphMode::Piecewise;
    assert!(of(&g, Kind::FullPaddedRowLive).is_empty());
}

#[test]
fn position_over_max_model_len() {
    let mut g = golden();
    assert!(of(&g, Kind::PositionOverMaxModelLen).is_empty());
    // A stale padded position past the limit is not scheduled: not flagged.
    step_mut(&mut g, 13).positions[2] = 40;
    assert!(of(&g, Kind::PositionOverMaxModelLen).is_empty());
    step_mut(&mut g, 13).positions[0] = 32;
    assert_eq!(of(&g, Kind::PositionOverMaxModelLen), vec![(13, Some("0".into()))]);
}

#[test]
fn acceptance_over_drafts() {
    let mut g = golden();
    // Step 3 verified 2 drafts: at most 3 valid tokens.
    step_mut(&mut g, 3).output_token_ids[0] = vec![15, 5109, 11];
    assert!(of(&g, Kind::AcceptanceOverDrafts).is_empty());
    step_mut(&mut g, 3).output_token_ids[0] = vec![15, 5109, 11, 16];
    assert_eq!(of(&g, Kind::AcceptanceOverDrafts), vec![(3, Some("0".into()))]);
    // Step 2 verified none: two tokens are one too many.
    let mut g = golden();
    step_mut(&mut g, 2).output_token_ids[0] = vec![16, 11];
    assert_eq!(of(&g, Kind::AcceptanceOverDrafts), vec![(2, Some("0".into()))]);
}

#[test]
fn blocks_freed_while_running() {
    let mut g = golden();
    assert!(of(&g, Kind::BlocksFreedWhileRunning).is_empty());
    step_mut(&mut g, 5).block_ids.insert("0".into(), vec![7]);
    // Step 5 drops block 1 (and step 6 drops the 7 it got).
    assert_eq!(of(&g, Kind::BlocksFreedWhileRunning), vec![(5, Some("0".into())), (6, Some("0".into()))]);
    // A preemption at step 4 and another at step 5 make both changes legitimate.
    step_mut(&mut g, 5).preempted_req_ids = vec!["0".into()];
    step_mut(&mut g, 6).preempted_req_ids = vec!["0".into()];
    assert!(of(&g, Kind::BlocksFreedWhileRunning).is_empty());
}

/// A two-request trace whose step 1 gives both requests block 1.
fn two_holders(computed_b: u32, prefix_caching: bool) -> Trace {
    let mut g = golden();
    g.config.enable_prefix_caching = prefix_caching;
    let mut s = Step { step: 1, ..Default::default() };
    s.batch_req_ids = vec!["a".into(), "b".into()];
    s.num_scheduled_tokens = [("a".to_string(), 16), ("b".to_string(), 16 - computed_b)].into();
    s.total_num_scheduled_tokens = 32 - computed_b;
    s.num_computed_tokens = [("a".to_string(), 0), ("b".to_string(), computed_b)].into();
    s.block_ids = [("a".to_string(), vec![1]), ("b".to_string(), vec![1, 2])].into();
    g.steps = vec![s];
    g
}

#[test]
fn block_shared_without_prefix_hit() {
    // b found block 1 in the prefix cache (16 computed tokens = one block): legitimate.
    assert!(of(&two_holders(16, true), Kind::BlockSharedWithoutPrefixHit).is_empty());
    assert_eq!(of(&two_holders(0, true), Kind::BlockSharedWithoutPrefixHit), vec![(1, Some("a".into()))]);
    assert_eq!(of(&two_holders(16, false), Kind::BlockSharedWithoutPrefixHit), vec![(1, Some("a".into()))]);
}

#[test]
fn drafts_for_finished_request() {
    let mut g = golden();
    assert!(of(&g, Kind::DraftsForFinishedRequest).is_empty());
    let s = step_mut(&mut g, 12);
    s.finished_req_ids = vec!["0".into()];
    assert!(!s.draft_token_ids["0"].is_empty());
    assert_eq!(of(&g, Kind::DraftsForFinishedRequest), vec![(12, Some("0".into()))]);
    step_mut(&mut g, 12).draft_token_ids.insert("0".into(), vec![]);
    assert!(of(&g, Kind::DraftsForFinishedRequest).is_empty());
}

#[test]
fn drafter_gate_suppressed() {
    let g = golden();
    assert_eq!(of(&g, Kind::DrafterGateSuppressed), vec![(13, None)]);
    // Without speculation an empty draft map is not a gate.
    let mut g = golden();
    g.config.method = specreplay_sim::config::SpecMethod::None;
    assert!(of(&g, Kind::DrafterGateSuppressed).is_empty());
}

#[test]
fn stale_tail_read() {
    let g = golden();
    let f: Vec<Finding> = check_trace(&g).into_iter().filter(|f| f.kind == Kind::StaleTailRead).collect();
    // Steps 1 (NONE) and 3 (FULL, 3 of 3 scheduled) read no stale slot.
    assert_eq!(f.iter().map(|f| f.step).collect::<Vec<_>>(), vec![2, 4, 5, 7, 13]);
    assert!(f[1].message.contains("slots 1-2 from step 3 request \"0\""), "{}", f[1].message);
    // A value that is not what the last write stored is pointed out.
    let mut g = golden();
    step_mut(&mut g, 2).input_ids[1] = 5;
    let f = check_trace(&g).into_iter().find(|f| f.kind == Kind::StaleTailRead).unwrap();
    assert!(f.message.contains("do not hold what their last write stored"), "{}", f.message);
    // A replay whose padding was never written by this trace says so.
    let mut g = golden();
    g.steps.remove(0);
    let f = check_trace(&g).into_iter().find(|f| f.kind == Kind::StaleTailRead).unwrap();
    assert!(f.message.contains("never written in this trace"), "{}", f.message);
}

#[test]
fn counts_cover_every_kind() {
    let c = counts(&check_trace(&golden()));
    assert_eq!(c.len(), Kind::ALL.len());
    assert_eq!((c[&Kind::StaleTailRead], c[&Kind::DrafterGateSuppressed]), (5, 1));
}

#[test]
fn cli_lines_summary_deny_and_json() {
    let golden = root().join("traces/vllm_ngram_13step.json");
    let g = golden.to_str().unwrap();
    let (code, out, err) = cli(&["check", g]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.contains(": step 13: info drafter-gate-suppressed: draft_token_ids: batch-wide drafter gate"), "{out}");
    assert!(out.contains("summary: 1 trace(s), 6 finding(s)"), "{out}");
    // Denying a kind the trace has: exit 1; one it lacks: exit 0.
    let (code, out, _) = cli(&["check", g, "--deny", "padded-slot-write,drafter-gate-suppressed"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("denied kinds found: drafter-gate-suppressed (1)"), "{out}");
    assert_eq!(cli(&["check", g, "--deny", "padded-slot-write"]).0, 0);
    assert_eq!(cli(&["check", g, "--deny", "all"]).0, 1);
    let (code, _, err) = cli(&["check", g, "--deny", "nope"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("specreplay: error: --deny: unknown hazard kind \"nope\""), "{err}");
    // JSON: one document, findings with every key.
    let (code, out, _) = cli(&["check", "--json", g, "--deny", "stale-tail-read"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = &v["traces"][0]["findings"][0];
    for key in ["kind", "severity", "step", "req_id", "field", "message"] {
        assert!(f.get(key).is_some(), "{key} missing in {f}");
    }
    assert_eq!(v["summary"]["stale-tail-read"], 5);
    assert_eq!(v["denied"]["stale-tail-read"], 5);
    // An unreadable trace: exit 2, the others still checked.
    let (code, out, err) = cli(&["check", "/nonexistent.json", g]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.json") && out.contains("summary: 2 trace(s), 6 finding(s)"), "{err}{out}");
}

#[test]
fn malformed_steps_do_not_panic() {
    let mut g = golden();
    let s = step_mut(&mut g, 3);
    s.attn.cu_seqlens_q = vec![0, i64::MAX];
    s.num_padded_tokens = u32::MAX;
    s.num_reqs_padded = u32::MAX;
    s.total_num_scheduled_tokens = u32::MAX;
    s.positions.clear();
    s.attn.seqused_k = vec![-5];
    s.batch_req_ids.push("ghost".into());
    let s = step_mut(&mut g, 4);
    s.input_ids.clear();
    s.attn.cu_seqlens_q.clear();
    s.block_ids.insert("x".into(), vec![0, 0, 1]);
    g.config.block_size = 0;
    let _ = check_trace(&g);
}
