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
    for args in [&["gpu", "info"][..], &["gpu", "selftest", "--cases", "3"][..]] {
        let (code, out, err) = cli(args);
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
