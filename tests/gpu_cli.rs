//! `specreplay gpu ...` on any machine: without a CUDA driver every command prints one
//! error line and exits 3; on the GPU host (`SPECREPLAY_REQUIRE_GPU=1`) `gpu info` must work.

mod common;
use common::cli;

fn driver_present() -> bool {
    specreplay_executor::device::driver_present()
}

#[test]
fn gpu_commands_without_a_driver_print_one_line_and_exit_3() {
    if driver_present() {
        // A machine with a driver: covered by the GPU check (scripts/gpu-check.sh).
        assert!(!specreplay_executor::device::gpu_required() || cli(&["gpu", "info"]).0 == 0);
        return;
    }
    assert!(!specreplay_executor::device::gpu_required(), "SPECREPLAY_REQUIRE_GPU=1 on a machine with no CUDA driver");
    for args in [
        &["gpu", "info"][..],
        &["gpu", "selftest", "--cases", "3"][..],
        &["gpu", "sim", "scenarios/vllm_ngram_13step.json", "-o", "/dev/null"][..],
        &["gpu", "replay", "traces/vllm_ngram_13step.json"][..],
        &["gpu", "replay", "--poison", "traces/vllm_ngram_13step.json"][..],
        &["gpu", "replay", "--shadow-eager", "traces/vllm_ngram_13step.json"][..],
        &["gpu", "fuzz", "--n", "2"][..],
        &["gpu", "bench", "traces/vllm_ngram_13step.json"][..],
        &["gpu", "builders", "--cases", "3", "--bench-replays", "0"][..],
        &["explain", "nsa-draft-extend", "--variant", "uniform-qo", "--device", "cuda"][..],
        &["gpu", "generate", "--random-model", "tiny", "--prompt-ids", "1,2,3", "--max-tokens", "4"][..],
        &["gpu", "generate", "--random-model", "tiny", "--prompt-ids", "1,2,1", "--num-speculative-tokens", "2"][..],
    ] {
        let (code, out, err) = cli_in_root(args);
        assert_eq!(code, 3, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("specreplay: error: no CUDA driver found: "), "{args:?}: {err}");
    }
}

#[test]
fn gpu_help_documents_exit_code_3() {
    let (code, out, _) = cli(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("gpu") && out.contains("exit 3"), "{out}");
    let (code, out, _) = cli(&["gpu", "selftest", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--cases"), "{out}");
}

fn cli_in_root(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_specreplay"))
        .args(args)
        .current_dir(common::root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_input_to_gpu_commands_is_one_line_and_exit_2() {
    let cases: [(&[&str], &str); 6] = [
        (&["gpu", "builders", "--builder", "nope"], "unknown builder \"nope\""),
        (&["explain", "nope", "--variant", "x", "--device", "cuda"], "unknown builder `nope`"),
        (&["explain", "nsa-draft-extend", "--variant", "nope", "--device", "cuda"], "unknown variant `nope`"),
        (&["gpu", "replay", "no/such/trace.json"], "no/such/trace.json"),
        (&["gpu", "sim", "no/such/scenario.json", "-o", "/dev/null"], "no/such/scenario.json"),
        (
            &["gpu", "sim", "--variant", "nope", "scenarios/vllm_ngram_13step.json", "-o", "/dev/null"],
            "unknown kernel variant",
        ),
    ];
    for (args, want) in cases {
        let (code, out, err) = cli_in_root(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("specreplay: error: ") && err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn gpu_replay_help_documents_the_probes() {
    let (code, out, _) = cli(&["gpu", "replay", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--poison") && out.contains("--shadow-eager"), "{out}");
    assert!(!out.contains("--variant"), "the variant flag is hidden: {out}");
    let (code, out, _) = cli(&["gpu", "--help"]);
    assert_eq!(code, 0);
    for c in ["sim", "replay", "fuzz", "bench", "builders"] {
        assert!(out.contains(c), "{c}: {out}");
    }
}

/// `gpu generate` refuses bad input with one line and exit 2 before it looks for a GPU.
#[test]
fn gpu_generate_bad_input_is_one_line_and_exit_2() {
    for (args, want) in [
        (&["gpu", "generate", "--random-model", "llama-70b", "--prompt-ids", "1"][..], "unknown model preset"),
        (&["gpu", "generate", "--random-model", "tiny"][..], "--prompt-ids or --scenario"),
        (&["gpu", "generate", "--model", "/nonexistent/ckpt", "--prompt-ids", "1"][..], "/nonexistent/ckpt"),
        (
            &["gpu", "generate", "--random-model", "tiny", "--prompt-ids", "1,2", "--trace", "/tmp/x.bin"][..],
            "only JSON traces hold",
        ),
    ] {
        let (code, out, err) = cli_in_root(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("specreplay: error: ") && err.contains(want), "{args:?}: {err}");
    }
}
