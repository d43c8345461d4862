//! Golden replays: every committed trace re-simulates identically, the 13-step trace
//! holds the values seed 004 prints, and any single changed value is caught by name.

use std::path::PathBuf;

use serde_json::Value;
use specreplay_sim::{diff, engine, trace, Trace};

mod common;
use common::{cli, root};

fn golden(name: &str) -> Trace {
    trace::read(&root().join("traces").join(name)).expect("golden trace parses")
}

fn replay(t: &Trace) -> diff::Report {
    let res = engine::run(&t.scenario()).expect("golden scenario runs");
    diff::compare(t, &res.trace)
}

#[test]
fn every_top_level_trace_replays_identically() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("traces")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let t = trace::read(&path).unwrap();
            let rep = replay(&t);
            assert!(
                rep.identical(),
                "{}: {:?}\nreproduce: specreplay replay {}",
                path.display(),
                rep.first,
                path.display()
            );
            n += 1;
        }
    }
    assert!(n >= 2, "expected the golden traces in traces/");
}

/// Values printed by seed 004 (`../shared/seeds/004_*.txt`), transcribed by hand.
#[test]
fn vllm_13step_holds_every_printed_value() {
    let t = golden("vllm_ngram_13step.json");
    assert_eq!(t.steps.len(), 13);
    let s = |i: usize| &t.steps[i - 1];
    let prompt = [852, 220, 16, 15, 5109, 1172, 5610, 15723, 220, 16, 25];
    // step 1: prefill of 11 tokens, unpadded
    assert_eq!(s(1).num_scheduled_tokens["0"], 11);
    assert_eq!(s(1).input_ids, prompt.iter().map(|&x| x as i64).collect::<Vec<_>>());
    assert_eq!(s(1).positions, (0..11).collect::<Vec<i64>>());
    assert_eq!(s(1).logits_indices, vec![10]);
    assert_eq!(s(1).attn.cu_seqlens_q, vec![0, 11]);
    assert_eq!(s(1).attn.seqused_k, vec![11]);
    assert_eq!(s(1).attn.block_table, vec![vec![1, 0]]);
    assert_eq!(s(1).token_ids_cpu["0"].last(), Some(&220));
    // step 2: stale padded tail
    assert_eq!(s(2).num_computed_tokens["0"], 11);
    assert_eq!(s(2).input_ids, vec![220, 220, 16]);
    assert_eq!(s(2).positions, vec![11, 1, 2]);
    assert_eq!(s(2).attn.seqused_k, vec![12]);
    assert_eq!(s(2).attn.max_seqlen_k, 12);
    assert_eq!(s(2).draft_token_ids["0"], vec![15, 5109]);
    // step 3: drafts rejected at position 0
    assert_eq!(s(3).scheduled_spec_decode_tokens["0"], vec![15, 5109]);
    assert_eq!(s(3).logits_indices, vec![0, 1, 2]);
    assert_eq!(s(3).num_sampled_tokens, vec![3]);
    assert_eq!(s(3).input_ids, vec![16, 15, 5109]);
    assert_eq!(s(3).positions, vec![12, 13, 14]);
    assert_eq!(s(3).attn.seqused_k, vec![15]);
    assert_eq!(s(3).output_token_ids, vec![vec![11, -1, -1]]);
    assert_eq!(&s(3).token_ids_cpu["0"][11..], &[220, 16, 11, 5109]);
    assert_eq!(s(3).draft_token_ids["0"], Vec::<u32>::new());
    // steps 5-7
    assert_eq!(s(5).draft_token_ids["0"], vec![15, 5109]);
    assert_eq!(s(6).output_token_ids, vec![vec![16, -1, -1]]);
    assert_eq!(&s(6).token_ids_cpu["0"][15..], &[16, 16, 5109]);
    assert_eq!(s(7).draft_token_ids["0"], vec![220, 16]);
    // step 8: full acceptance, second block
    assert_eq!(s(8).num_computed_tokens["0"], 17);
    assert_eq!(s(8).input_ids, vec![11, 220, 16]);
    assert_eq!(s(8).positions, vec![17, 18, 19]);
    assert_eq!(s(8).attn.seqused_k, vec![20]);
    assert_eq!(s(8).attn.block_table, vec![vec![1, 2]]);
    assert_eq!(s(8).output_token_ids, vec![vec![220, 16, 16]]);
    assert_eq!(s(8).draft_token_ids["0"], vec![11, 220]);
    // step 9 (the seed's "step 8" row print shows this row)
    assert_eq!(s(9).output_token_ids, vec![vec![16, -1, -1]]);
    assert_eq!(s(9).token_ids_cpu["0"].len(), 23);
    assert_eq!(&s(9).token_ids_cpu["0"][19..], &[16, 16, 16, 220]);
    // steps 10-12
    assert_eq!(s(10).num_computed_tokens["0"], 21);
    assert_eq!(s(10).input_ids, vec![16, 11, 220]);
    assert_eq!(s(10).output_token_ids, vec![vec![11, 220, 16]]);
    assert_eq!(s(10).draft_token_ids["0"], vec![16, 16]);
    assert_eq!(s(11).num_computed_tokens["0"], 24);
    assert_eq!(s(11).input_ids, vec![16, 16, 16]);
    assert_eq!(s(11).output_token_ids, vec![vec![16, 16, 16]]);
    assert_eq!(s(12).output_token_ids, vec![vec![11, 220, 16]]);
    assert_eq!(s(12).draft_token_ids["0"], vec![16]);
    assert_eq!(s(12).token_ids_cpu["0"].len(), 31);
    // step 13: the max_model_len clamp drops the draft; stale tail from step 12
    assert_eq!(s(13).num_computed_tokens["0"], 30);
    assert_eq!(s(13).num_scheduled_tokens["0"], 1);
    assert!(s(13).scheduled_spec_decode_tokens.is_empty());
    assert_eq!(s(13).input_ids, vec![16, 11, 220]);
    assert_eq!(s(13).positions, vec![30, 28, 29]);
    assert_eq!(s(13).logits_indices, vec![0]);
    assert_eq!(
        t.outputs["0"],
        vec![220, 16, 11, 220, 16, 16, 11, 220, 16, 16, 16, 11, 220, 16, 16, 16, 16, 11, 220, 16, 16]
    );
}

#[test]
fn nano_vllm_basic_holds_the_seed_context() {
    let t = golden("nano_vllm_basic.json");
    let pre = t.steps[0].context.as_ref().unwrap();
    assert!(pre.is_prefill);
    assert_eq!((pre.max_seqlen_q, pre.max_seqlen_k), (11, 11));
    assert_eq!(pre.cu_seqlens_q.as_deref(), Some(&[0, 11][..]));
    assert_eq!(pre.cu_seqlens_k.as_deref(), Some(&[0, 11][..]));
    assert_eq!(pre.slot_mapping, (0..11).collect::<Vec<i64>>());
    assert_eq!((pre.context_lens.clone(), pre.block_tables.clone()), (None, None));
    let dec = t.steps[1].context.as_ref().unwrap();
    assert!(!dec.is_prefill);
    assert_eq!((dec.max_seqlen_q, dec.max_seqlen_k), (0, 0));
    assert_eq!((dec.cu_seqlens_q.clone(), dec.cu_seqlens_k.clone()), (None, None));
    assert_eq!(dec.slot_mapping, vec![11]);
    assert_eq!(dec.context_lens.as_deref(), Some(&[12][..]));
    assert_eq!(dec.block_tables, Some(vec![vec![0]]));
}

/// Every numeric leaf of every step, changed by one, is reported at that step and path.
#[test]
fn any_single_changed_value_is_named() {
    let t = golden("vllm_ngram_13step.json");
    let fresh = engine::run(&t.scenario()).unwrap().trace;
    let mut checked = 0;
    for i in 0..t.steps.len() {
        let v = serde_json::to_value(&t.steps[i]).unwrap();
        let mut leaves = Vec::new();
        collect_numbers(&v, String::new(), &mut leaves);
        for path in leaves {
            let mut m = serde_json::to_value(&t.steps[i]).unwrap();
            bump(&mut m, &path);
            let mut mutated = t.clone();
            mutated.steps[i] = serde_json::from_value(m).unwrap();
            let rep = diff::compare(&mutated, &fresh);
            let d = rep.first.unwrap_or_else(|| panic!("step {} {path}: change not detected", i + 1));
            assert_eq!(d.step, Some(i as u64 + 1), "{path}");
            assert_eq!(d.field, path, "step {}", i + 1);
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} leaves checked");
}

/// Non-numeric leaves too: a changed string, flag or request id is named by the diff.
#[test]
fn changed_strings_and_flags_are_named() {
    let t = golden("vllm_ngram_13step.json");
    let fresh = engine::run(&t.scenario()).unwrap().trace;
    type Mutation = Box<dyn Fn(&mut specreplay_sim::trace::Step)>;
    let cases: Vec<(usize, &str, Mutation)> = vec![
        (3, "cudagraph_mode", Box::new(|s| s.cudagraph_mode = specreplay_sim::trace::CudagraphMode::None)),
        (5, "batch_req_ids[0]", Box::new(|s| s.batch_req_ids[0] = "1".into())),
        (1, "idle", Box::new(|s| s.idle = true)),
        (13, "finished_req_ids", Box::new(|s| s.finished_req_ids.clear())),
        (
            8,
            "draft_token_ids.1",
            Box::new(|s| {
                let d = s.draft_token_ids.remove("0").unwrap();
                s.draft_token_ids.insert("1".into(), d);
            }),
        ),
    ];
    for (step, field, mutate) in cases {
        let mut m = t.clone();
        mutate(&mut m.steps[step - 1]);
        let d = diff::compare(&m, &fresh).first.unwrap_or_else(|| panic!("{field}: not detected"));
        assert_eq!(d.step, Some(step as u64), "{field}");
        assert!(d.field.starts_with(field), "{field} vs {}", d.field);
    }
}

fn collect_numbers(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Number(_) => out.push(path),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| collect_numbers(x, format!("{path}[{i}]"), out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            collect_numbers(x, p, out)
        }),
        _ => {}
    }
}

fn bump(v: &mut Value, path: &str) {
    let mut cur = v;
    for part in path.split('.') {
        let (key, idx) = match part.find('[') {
            Some(p) => (&part[..p], Some(&part[p..])),
            None => (part, None),
        };
        if !key.is_empty() {
            cur = cur.get_mut(key).unwrap();
        }
        if let Some(idx) = idx {
            for i in idx.split(['[', ']']).filter(|s| !s.is_empty()) {
                cur = cur.get_mut(i.parse::<usize>().unwrap()).unwrap();
            }
        }
    }
    let n = cur.as_i64().unwrap();
    *cur = Value::from(n + 1);
}

#[test]
fn cli_replay_exit_codes() {
    let golden_path = root().join("traces/vllm_ngram_13step.json");
    let (code, out, _) = cli(&["replay", golden_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // change step 7's first position in a copy
    let mut t = golden("vllm_ngram_13step.json");
    t.steps[6].positions[0] = 99;
    let dir = tempdir();
    let p = dir.join("mutated.json");
    trace::write(&p, &t).unwrap();
    let (code, out, _) = cli(&["replay", p.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("first divergence: step 7 / request \"0\" / positions[0]"), "{out}");
    assert!(out.contains("expected  99") && out.contains("actual    16"), "{out}");
    assert!(out.contains("reproduce: specreplay replay"), "{out}");
    assert!(
        out.contains("step 7 schedules 1 token(s) [\"0\": 1], padded to 3 (PIECEWISE); steps 1-6 identical"),
        "{out}"
    );
}

#[test]
fn show_output_snapshot() {
    let t = golden("vllm_ngram_13step.json");
    let (code, out, _) = cli(&["show", root().join("traces/vllm_ngram_13step.json").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("mean acceptance length: 2.14"));
    assert_eq!(t.steps.len(), 13);
    insta::assert_snapshot!("show_vllm_ngram_13step", out);
}

#[test]
fn bincode_round_trip_is_lossless() {
    let t = golden("vllm_ngram_13step.json");
    let bin = trace::to_bincode(&t);
    assert_eq!(trace::from_bytes(&bin).unwrap(), t);
    let dir = tempdir();
    let p = dir.join("t.bin");
    trace::write(&p, &t).unwrap();
    let (code, out, _) = cli(&["replay", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(trace::to_json(&trace::read(&p).unwrap()), trace::to_json(&t));
}

pub fn tempdir() -> PathBuf {
    let d =
        std::env::temp_dir().join(format!("specreplay-test-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
