//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `specreplay` binary; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_specreplay")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The recorded traces of a corpus folder (relative to the repository root), sorted by path.
pub fn corpus(dir: &str) -> Vec<(PathBuf, specreplay_sim::Trace)> {
    let dir = root().join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| (p.clone(), specreplay_sim::trace::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))))
        .collect()
}

/// Re-simulates every recording (each `recorded_by` must be `engine`) and asserts all are
/// identical, naming each divergence with the command that reproduces it.
pub fn assert_corpus_replays(traces: &[(PathBuf, specreplay_sim::Trace)], engine: &str) {
    let mut failures = Vec::new();
    for (path, t) in traces {
        assert_eq!(t.recorded_by, engine, "{}", path.display());
        let sim = specreplay_sim::engine::run(&t.scenario()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Some(d) = specreplay_sim::diff::compare(t, &sim.trace).first {
            failures.push(format!(
                "{}: step {:?} / request {:?} / {}: {engine} {} vs sim {}\n  reproduce: specreplay replay {}",
                path.display(),
                d.step,
                d.request,
                d.field,
                d.expected,
                d.actual,
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), traces.len(), failures.join("\n"));
}
