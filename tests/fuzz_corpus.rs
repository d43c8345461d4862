//! Replays the committed corpus of the `engine` and `trace_parser` fuzz targets on stable
//! (the builder targets are replayed by `tests/builders.rs`), through the same library
//! functions the targets call.

use std::path::PathBuf;

use specreplay_sim::fuzzing::{check_scenario_bytes, check_trace_bytes};

fn files(target: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target);
        if let Ok(rd) = std::fs::read_dir(&dir) {
            v.extend(rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()));
        }
    }
    v.sort();
    v
}

#[test]
fn engine_corpus_replays() {
    let fs = files("engine");
    assert!(fs.len() >= 5, "engine corpus missing");
    for f in fs {
        let data = std::fs::read(&f).unwrap();
        if let Err(e) = check_scenario_bytes(&data) {
            panic!("{}: {e}\nreproduce: cd fuzz && cargo fuzz run -s none engine {}", f.display(), f.display());
        }
    }
}

#[test]
fn trace_parser_corpus_replays() {
    let fs = files("trace_parser");
    assert!(fs.len() >= 3, "trace_parser corpus missing");
    for f in fs {
        let data = std::fs::read(&f).unwrap();
        // Panics (the failure) propagate; Ok or Err are both fine.
        check_trace_bytes(&data);
        let mut truncated = data.clone();
        truncated.truncate(data.len() / 2);
        check_trace_bytes(&truncated);
    }
}
