//! Safe writes and bounded reads (issue 12 item 5): an output never replaces a symbolic
//! link, special file, read-only file or an input; an interrupted write leaves no
//! temporary file; `-` is standard input/output; a FIFO or `/dev/zero` input fails with
//! one line instead of hanging or eating memory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{cli, root};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("specreplay-safeio-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn scenario() -> PathBuf {
    root().join("scenarios/vllm_ngram_13step.json")
}

fn golden() -> PathBuf {
    root().join("traces/vllm_ngram_13step.json")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Files in `d` (sorted names).
fn listing(d: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn assert_refused(args: &[&str], needle: &str) {
    let (code, out, err) = cli(args);
    assert_eq!(code, 2, "{args:?}: exit {code}\nstdout: {out}\nstderr: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("specreplay: error: ") && err.contains(needle), "{args:?}: {err}");
}

#[test]
fn a_symlink_output_is_not_replaced() {
    let d = dir("symlink");
    let target = d.join("target.json");
    std::fs::write(&target, b"keep").unwrap();
    let link = d.join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_refused(&["sim", s(&scenario()), "-o", s(&link)], "is a symbolic link");
    assert_refused(&["convert", s(&golden()), s(&link)], "is a symbolic link");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert_eq!(listing(&d), ["link.json", "target.json"]);
    // A dangling link is not followed into a new file either.
    let dangling = d.join("dangling.json");
    std::os::unix::fs::symlink(d.join("nowhere.json"), &dangling).unwrap();
    assert_refused(&["sim", s(&scenario()), "-o", s(&dangling)], "is a symbolic link");
    assert!(!d.join("nowhere.json").exists());
}

#[test]
fn special_files_are_not_replaced() {
    assert_refused(&["sim", s(&scenario()), "-o", "/dev/null"], "not a regular file");
    let d = dir("special");
    assert_refused(&["convert", s(&golden()), s(&d)], "not a regular file");
}

#[test]
fn read_only_files_and_directories_are_refused() {
    let d = dir("readonly");
    let f = d.join("ro.json");
    std::fs::write(&f, b"keep").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444)).unwrap();
    assert_refused(&["sim", s(&scenario()), "-o", s(&f)], "not writable");
    assert_eq!(std::fs::read(&f).unwrap(), b"keep");
    let sub = d.join("ro-dir");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o555)).unwrap();
    assert_refused(&["convert", s(&golden()), s(&sub.join("out.json"))], "not writable");
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(listing(&sub).is_empty());
}

#[test]
fn the_input_is_never_the_output() {
    let d = dir("same");
    let t = d.join("t.json");
    std::fs::copy(golden(), &t).unwrap();
    let before = std::fs::read(&t).unwrap();
    assert_refused(&["convert", s(&t), s(&t)], "is the input file");
    // The same file under another name: a hard link, a path through `..`.
    let hard = d.join("hard.json");
    std::fs::hard_link(&t, &hard).unwrap();
    assert_refused(&["convert", s(&t), s(&hard)], "is the input file");
    std::fs::create_dir(d.join("sub")).unwrap();
    let dotted = d.join("sub/../t.json");
    assert_refused(&["convert", s(&t), s(&dotted)], "is the input file");
    // sim re-running a trace's scenario must not write over that trace.
    assert_refused(&["sim", s(&t), "-o", s(&hard)], "is the input file");
    // Through standard input too.
    let out = Command::new(env!("CARGO_BIN_EXE_specreplay"))
        .args(["convert", "-", s(&t)])
        .stdin(std::fs::File::open(&t).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&t).unwrap(), before);
    assert_eq!(listing(&d), ["hard.json", "sub", "t.json"]);
}

#[test]
fn dash_is_standard_input_and_output() {
    let out = Command::new(env!("CARGO_BIN_EXE_specreplay"))
        .args(["sim", "-", "-o", "-"])
        .stdin(std::fs::File::open(scenario()).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let t = specreplay_sim::trace::from_bytes(&out.stdout).unwrap();
    let g = specreplay_sim::trace::read(&golden()).unwrap();
    assert_eq!((t.steps, t.outputs), (g.steps, g.outputs));
    // replay / show / diff / convert read `-`.
    for args in [vec!["replay", "-"], vec!["show", "-"], vec!["diff", "-", s(&golden())], vec!["convert", "-", "-"]] {
        let o = Command::new(env!("CARGO_BIN_EXE_specreplay"))
            .args(&args)
            .stdin(std::fs::File::open(golden()).unwrap())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_specreplay"))
        .args(["convert", "-", "-"])
        .stdin(std::fs::File::open(golden()).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.stdout, std::fs::read(golden()).unwrap(), "canonical JSON on stdout");
}

/// Runs the binary with a deadline: a hang is a failure, not a stuck test.
fn run_with_deadline(args: &[&str], stdin: Stdio, secs: u64) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_specreplay"))
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("{args:?} still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_fifo_input_fails_instead_of_hanging() {
    let d = dir("fifo");
    let fifo = d.join("in.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    for args in [vec!["show", s(&fifo)], vec!["replay", s(&fifo)], vec!["sim", s(&fifo), "-o", "-"]] {
        let (code, err) = run_with_deadline(&args, Stdio::null(), 20);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("not a regular file") && err.lines().count() == 1, "{args:?}: {err}");
    }
}

#[test]
fn dev_zero_input_fails_instead_of_eating_memory() {
    for args in [vec!["show", "/dev/zero"], vec!["sim", "/dev/zero", "-o", "-"], vec!["diff", "/dev/zero", "/dev/zero"]]
    {
        let (code, err) = run_with_deadline(&args, Stdio::null(), 20);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
    }
    // Through standard input, reading stops at the first byte (traces) or at the
    // scenario size limit.
    for args in [vec!["show", "-"], vec!["replay", "-"], vec!["sim", "-", "-o", "-"]] {
        let (code, err) = run_with_deadline(&args, std::fs::File::open("/dev/zero").unwrap().into(), 60);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

/// A scenario whose trace takes seconds to write (64 requests, long rows).
fn big_scenario(d: &Path) -> PathBuf {
    let reqs: Vec<String> = (0..32)
        .map(|i| format!("{{\"req_id\": \"{i}\", \"prompt_token_ids\": [{}, 1, 2, 3], \"max_tokens\": 1500}}", i % 7))
        .collect();
    let body = format!(
        "{{\"config\": {{\"profile\": \"vllm-v1\", \"block_size\": 16, \"num_gpu_blocks\": 4000, \"max_num_seqs\": 32, \
         \"max_num_batched_tokens\": 2048, \"max_model_len\": 1600, \"method\": \"none\", \"num_speculative_tokens\": 0, \
         \"prompt_lookup_min\": 1, \"prompt_lookup_max\": 1, \"cudagraph_capture_sizes\": [8, 16, 32]}}, \
         \"requests\": [{}], \"oracle\": {{\"kind\": \"synthetic\", \"seed\": 3, \"vocab_size\": 8, \"order\": 2}}}}",
        reqs.join(", ")
    );
    let p = d.join("big_scenario.json");
    std::fs::File::create(&p).unwrap().write_all(body.as_bytes()).unwrap();
    p
}

#[test]
fn sigint_during_a_write_leaves_no_temporary_file() {
    let d = dir("sigint");
    let sc = big_scenario(&d);
    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("trace.json");
    for (sig, code) in [("-INT", 130), ("-TERM", 143)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_specreplay"))
            .args(["sim", s(&sc), "-o", s(&out)])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the temporary file exists and has grown, then interrupt.
        let start = Instant::now();
        loop {
            let growing =
                std::fs::read_dir(&out_dir).unwrap().any(|e| e.unwrap().metadata().is_ok_and(|m| m.len() > 100_000));
            if growing {
                break;
            }
            assert!(child.try_wait().unwrap().is_none(), "the write finished before it could be interrupted");
            assert!(start.elapsed() < Duration::from_secs(60), "no temporary file appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
        assert!(st.success());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{sig}");
        assert!(listing(&out_dir).is_empty(), "{sig}: left behind: {:?}", listing(&out_dir));
    }
}
