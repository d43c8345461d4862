//! Streaming traces (issue 12 item 4) and CLI reporting (item 7): version 2 with idle
//! ranges and framed `.bin`, version 1 still read, bounded memory on a 1M-step trace,
//! `replay A B C` reporting every trace, `--help` texts, diff attribution of odd ids.

use std::path::{Path, PathBuf};

use specreplay_sim::trace::{self, Encoding, Step};
use specreplay_sim::{engine, Scenario};

mod common;
use common::{cli, root};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("specreplay-stream-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One request arriving at `arrival` (steps before it are idle), synthetic oracle.
fn late_scenario(arrival: u64, id: &str) -> Scenario {
    let text = format!(
        "{{\"config\": {{\"profile\": \"vllm-v1\", \"block_size\": 16, \"num_gpu_blocks\": 8, \"max_num_seqs\": 2, \
         \"max_num_batched_tokens\": 64, \"max_model_len\": 32, \"num_speculative_tokens\": 2, \"prompt_lookup_min\": 2, \
         \"prompt_lookup_max\": 4, \"cudagraph_capture_sizes\": [3]}}, \
         \"requests\": [{{\"req_id\": {id:?}, \"prompt_token_ids\": [1, 2, 3, 1, 2], \"max_tokens\": 8, \"arrival_step\": {arrival}}}, \
                        {{\"req_id\": \"x[0]\", \"prompt_token_ids\": [4, 2, 4, 2], \"max_tokens\": 6, \"arrival_step\": {arrival}}}], \
         \"oracle\": {{\"kind\": \"synthetic\", \"seed\": 7, \"vocab_size\": 8, \"order\": 2}}}}"
    );
    serde_json::from_str(&text).unwrap()
}

fn write_scenario(d: &Path, sc: &Scenario) -> PathBuf {
    let p = d.join("scenario.json");
    std::fs::write(&p, serde_json::to_string(sc).unwrap()).unwrap();
    p
}

#[test]
fn version_1_traces_still_read_and_replay() {
    let fixtures = root().join("tests/fixtures/trace-v1");
    for (v1, v2) in [
        ("s3_0201.bin", "traces/conformance/vllm-0.12.0/s3_0201.bin"),
        ("vllm_ngram_13step.json", "traces/vllm_ngram_13step.json"),
    ] {
        let old = fixtures.join(v1);
        let bytes = std::fs::read(&old).unwrap();
        let version_field = if v1.ends_with(".bin") { bytes[8] } else { 1 };
        assert_eq!(version_field, 1, "{v1} must stay a version-1 fixture");
        assert!(v1.ends_with(".bin") || String::from_utf8_lossy(&bytes).contains("\"version\": 1"));
        // Same contents as its re-encoded (version 2) copy, in memory and per the CLI.
        assert_eq!(trace::read(&old).unwrap(), trace::read(&root().join(v2)).unwrap(), "{v1}");
        let (code, out, err) = cli(&["diff", s(&old), s(&root().join(v2))]);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = cli(&["replay", s(&old)]);
        assert_eq!(code, 0, "{out}{err}");
        // convert upgrades it; the result is byte-identical to the committed one.
        let d = dir(&format!("v1-{v1}"));
        let out_path = d.join(Path::new(v2).file_name().unwrap());
        let (code, _, err) = cli(&["convert", s(&old), s(&out_path)]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read(&out_path).unwrap(), std::fs::read(root().join(v2)).unwrap(), "{v1}");
    }
    // The version-1 bincode fixture holds idle steps (stored with an empty mode).
    let t = trace::read(&fixtures.join("s3_0201.bin")).unwrap();
    assert!(t.steps.iter().any(Step::is_pure_idle));
}

/// JSON laid out by other writers (the vLLM conformance driver's one-line `json.dump`,
/// a pretty-printer, outputs before steps) reads the same.
#[test]
fn other_json_layouts_read_the_same() {
    let t = engine::run(&late_scenario(3, "r")).unwrap().trace;
    let mut v = serde_json::to_value(&t).unwrap();
    for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
        assert_eq!(trace::from_bytes(text.as_bytes()).unwrap(), t);
    }
    v["version"] = 1.into();
    assert_eq!(trace::from_bytes(serde_json::to_string(&v).unwrap().as_bytes()).unwrap(), t, "version 1");
    let outputs = serde_json::to_string(&t.outputs).unwrap();
    let mut h = serde_json::to_string(&t.header()).unwrap();
    h.pop();
    let steps: Vec<String> = t.steps.iter().map(|s| serde_json::to_string(s).unwrap()).collect();
    let reordered = format!("{h}, \"outputs\": {outputs}, \"steps\": [{}]}}", steps.join(","));
    assert_eq!(trace::from_bytes(reordered.as_bytes()).unwrap(), t, "outputs before steps");
}

#[test]
fn idle_runs_are_one_record_and_expand_on_reading() {
    let d = dir("idle");
    let sc = late_scenario(1000, "r");
    let path = write_scenario(&d, &sc);
    let in_memory = engine::run(&sc).unwrap().trace;
    for name in ["t.json", "t.bin"] {
        let out = d.join(name);
        let (code, _, err) = cli(&["sim", s(&path), "-o", s(&out)]);
        assert_eq!(code, 0, "{err}");
        let bytes = std::fs::read(&out).unwrap();
        assert!(bytes.len() < 8000, "{name}: {} bytes for 999 idle steps", bytes.len());
        // The streaming writer and the in-memory encoder agree byte for byte.
        let enc = Encoding::for_path(&out);
        assert_eq!(bytes, trace::write_to(Vec::new(), enc, &in_memory).unwrap(), "{name}");
        let t = trace::from_bytes(&bytes).unwrap();
        assert_eq!(t, in_memory, "{name}");
        assert_eq!(&t.steps[..999], &(1..=999).map(Step::idle).collect::<Vec<_>>()[..]);
        let (code, out_text, _) = cli(&["replay", s(&out)]);
        assert_eq!(code, 0, "{out_text}");
    }
    let text = std::fs::read_to_string(d.join("t.json")).unwrap();
    assert!(text.contains("\n    {\"step\":1,\"idle\":true,\"through\":999},\n"), "{text}");
}

/// A step marked idle that carries other values is written in full, never coalesced.
#[test]
fn the_writer_is_lossless_for_unusual_steps() {
    let mut t = engine::run(&late_scenario(4, "r")).unwrap().trace;
    t.steps[1].num_free_blocks = 3; // an "idle" step with a value
    t.steps.insert(3, Step::idle(77)); // a gap in the numbering
    for enc in [Encoding::Json, Encoding::Bincode] {
        let bytes = trace::write_to(Vec::new(), enc, &t).unwrap();
        assert_eq!(trace::from_bytes(&bytes).unwrap(), t, "{enc:?}");
    }
}

#[test]
fn every_cut_of_a_framed_bin_is_an_error() {
    let t = engine::run(&late_scenario(3, "r")).unwrap().trace;
    let bin = trace::to_bincode(&t);
    assert_eq!(trace::from_bytes(&bin).unwrap(), t);
    for cut in 0..bin.len() {
        let e = trace::from_bytes(&bin[..cut]).expect_err("a truncated trace parsed");
        assert!(!format!("{e}").contains("UnexpectedEnd"), "{e}");
    }
    let mut extra = bin.clone();
    extra.push(0);
    assert!(trace::from_bytes(&extra).is_err());
}

/// A hostile idle range cannot expand past the engine's step limit.
#[test]
fn idle_ranges_are_bounded() {
    let g = std::fs::read_to_string(root().join("traces/vllm_ngram_13step.json")).unwrap();
    let bad =
        g.replacen("{\"step\":1,", "{\"step\":1,\"idle\":true,\"through\":18446744073709551615},\n    {\"step\":1,", 1);
    let e = trace::from_bytes(bad.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("more than 1000000 steps"), "{e}");
}

#[test]
fn a_million_idle_steps_run_in_bounded_memory() {
    let d = dir("million");
    let sc = late_scenario(999_990, "r");
    let path = write_scenario(&d, &sc);
    let out = d.join("m.json");
    let bin = env!("CARGO_BIN_EXE_specreplay");
    // 200 MB of address space: the version-1 reader needed 1.3 GB to diff this trace.
    let limited = |args: &str| {
        let o = std::process::Command::new("bash")
            .args(["-c", &format!("ulimit -v 200000 && exec {bin} {args}")])
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, _, err) = limited(&format!("sim {} -o {}", s(&path), s(&out)));
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::metadata(&out).unwrap().len() < 10_000);
    let (code, stdout, err) = limited(&format!("replay {}", s(&out)));
    assert_eq!(code, 0, "{err}");
    let steps = stdout.trim().strip_suffix(" steps identical").and_then(|l| l.rsplit(' ').next()).unwrap().to_string();
    assert!(steps.parse::<u64>().unwrap() > 999_990, "{stdout}");
    let (code, stdout, err) = limited(&format!("diff {0} {0}", s(&out)));
    assert_eq!((code, stdout), (0, format!("identical: {steps} steps\n")), "{err}");
    let (code, stdout, err) = limited(&format!("show {}", s(&out)));
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("--- 1-999989. idle, 999989 steps (no request waiting or running) ---"), "{stdout}");
}

#[test]
fn replay_reports_every_trace_with_the_worst_status() {
    let d = dir("worst");
    let good = root().join("traces/vllm_ngram_13step.json");
    let mut t = trace::read(&good).unwrap();
    t.steps[6].positions[0] = 99;
    let diverging = d.join("diverging.json");
    trace::write(&diverging, &t).unwrap();
    let unreadable = d.join("unreadable.json");
    std::fs::write(&unreadable, b"{").unwrap();
    let (code, out, err) = cli(&["replay", s(&good), s(&diverging), s(&unreadable), s(&good)]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(out.matches("OK ").count(), 2, "{out}");
    assert!(out.contains("FAIL ") && out.contains("first divergence: step 7 / request \"0\" / positions[0]"), "{out}");
    assert!(out.ends_with("identical: 2/4\n"), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unreadable.json"), "{err}");
    let (code, out, _) = cli(&["replay", s(&diverging), s(&good)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.ends_with("identical: 1/2\n"), "{out}");
}

/// A recorded trace with fewer or more steps than the re-run is reported as a count.
#[test]
fn step_count_differences_are_reported() {
    let d = dir("count");
    let mut t = trace::read(&root().join("traces/vllm_ngram_13step.json")).unwrap();
    t.steps.pop();
    let short = d.join("short.json");
    trace::write(&short, &t).unwrap();
    let (code, out, _) = cli(&["replay", s(&short)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("first divergence: step 13 / steps (count)"), "{out}");
    assert!(out.contains("expected  12 steps") && out.contains("actual    13 steps"), "{out}");
    let (code, out, _) = cli(&["diff", s(&root().join("traces/vllm_ngram_13step.json")), s(&short)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("expected  13 steps") && out.contains("actual    12 steps"), "{out}");
    assert!(out.contains("step 13 schedules 1 token(s)"), "{out}");
}

/// Request ids with `.` and `[` are named correctly by the CLI diff.
#[test]
fn diff_names_requests_with_dots_and_brackets() {
    let d = dir("ids");
    let sc = late_scenario(1, "a.b");
    let t = engine::run(&sc).unwrap().trace;
    let a = d.join("a.json");
    trace::write(&a, &t).unwrap();
    for (id, path_start) in [("a.b", "token_ids_cpu[\"a.b\"]"), ("x[0]", "token_ids_cpu[\"x[0]\"]")] {
        let mut m = t.clone();
        let i = m.steps.iter().position(|s| s.token_ids_cpu.contains_key(id)).unwrap();
        m.steps[i].token_ids_cpu.get_mut(id).unwrap()[0] += 1;
        let b = d.join("b.json");
        trace::write(&b, &m).unwrap();
        let (code, out, _) = cli(&["diff", s(&a), s(&b)]);
        assert_eq!(code, 1, "{out}");
        let want = format!("first divergence: step {} / request {id:?} / {path_start}[0]", i + 1);
        assert!(out.contains(&want), "{want}\n{out}");
    }
}

#[test]
fn help_describes_arguments_exit_codes_and_formats() {
    let mut all = String::new();
    for cmd in ["sim", "replay", "diff", "show", "convert", "explain", "check", "export", "report"] {
        let (code, out, _) = cli(&[cmd, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("Exit codes"), "{cmd}: {out}");
        assert!(out.contains("README"), "{cmd}: {out}");
        assert!(cmd == "explain" || out.contains("standard input"), "{cmd}: {out}");
        all += &format!("==== specreplay {cmd} --help\n{out}\n");
    }
    insta::assert_snapshot!("help", all);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Any mix of idle steps (consecutive or not, pure or carrying values) and busy
    /// steps comes back unchanged from both encodings, and the idle runs are coalesced.
    #[test]
    fn writer_and_reader_round_trip(kinds in proptest::collection::vec((0u8..4, 0u64..3), 0..60)) {
        let mut t = engine::run(&late_scenario(2, "r")).unwrap().trace;
        let busy = t.steps.iter().find(|s| !s.idle).unwrap().clone();
        t.steps.clear();
        let mut n = 0u64;
        for (kind, gap) in kinds {
            n += 1 + if kind == 0 { gap } else { 0 };
            let step = match kind {
                0 | 1 => Step::idle(n),
                2 => Step { step: n, ..busy.clone() },
                _ => Step { num_free_blocks: 5, ..Step::idle(n) },
            };
            t.steps.push(step);
        }
        for enc in [Encoding::Json, Encoding::Bincode] {
            let bytes = trace::write_to(Vec::new(), enc, &t).unwrap();
            proptest::prop_assert_eq!(&trace::from_bytes(&bytes).unwrap(), &t);
        }
        let json = trace::to_json(&t);
        let runs = t.steps.windows(2).filter(|w| w[0].is_pure_idle() && w[1].is_pure_idle() && w[1].step == w[0].step + 1).count();
        proptest::prop_assert_eq!(json.matches("\"through\"").count() > 0, runs > 0);
    }
}

/// Request ids with quotes, backslashes and closing brackets survive the scanner (it
/// tracks strings and escapes, not just brackets).
#[test]
fn odd_characters_in_ids_round_trip() {
    let t = engine::run(&late_scenario(2, "we\"ird]}\\[id,")).unwrap().trace;
    for enc in [Encoding::Json, Encoding::Bincode] {
        let bytes = trace::write_to(Vec::new(), enc, &t).unwrap();
        assert_eq!(trace::from_bytes(&bytes).unwrap(), t, "{enc:?}");
    }
}

/// `sim` given a trace (JSON or framed bincode) re-runs the trace's scenario.
#[test]
fn sim_reruns_the_scenario_of_a_trace() {
    let d = dir("rerun");
    let golden = root().join("traces/vllm_ngram_13step.json");
    let bin = d.join("g.bin");
    let (code, _, err) = cli(&["convert", s(&golden), s(&bin)]);
    assert_eq!(code, 0, "{err}");
    for input in [golden.clone(), bin] {
        let out = d.join("rerun.json");
        let (code, _, err) = cli(&["sim", s(&input), "-o", s(&out)]);
        assert_eq!(code, 0, "{err}");
        let (code, stdout, _) = cli(&["diff", s(&golden), s(&out)]);
        assert_eq!(code, 0, "{stdout}");
    }
}
