//! `specreplay explain`: exit 0 with a readable counterexample for the seed-002 variant,
//! exit 1 for the general vectorization, exit 2 for an unknown builder.

mod common;
use common::cli as run;

#[test]
fn seed_002_counterexample_is_found_and_printed() {
    let (code, out, _) = run(&["explain", "nsa-draft-extend", "--variant", "uniform-qo"]);
    assert_eq!(code, 0, "{out}");
    for needle in [
        "COUNTEREXAMPLE",
        "nsa_seqlens_expanded",
        "request    0",
        "expected",
        "actual",
        "reproduce: specreplay explain",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn general_variant_has_no_counterexample() {
    let (code, out, _) = run(&["explain", "nsa-draft-extend", "--variant", "general", "--cases", "3000"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NO COUNTEREXAMPLE"), "{out}");
}

#[test]
fn list_and_unknown_builder() {
    let (code, out, _) = run(&["explain", "--list"]);
    assert_eq!(code, 0);
    for b in ["nsa-target-verify", "nsa-draft-extend", "draft-select", "sparse-indices", "uniform-qo", "general"] {
        assert!(out.contains(b), "{b} not listed");
    }
    let (code, _, err) = run(&["explain", "nope", "--variant", "x"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The TileSpec fork's sorted gather (seed 000's "correct" logic with the fork's
/// `torch.sort` of the top-max indices) is found wrong for a request with fewer drafts.
#[test]
fn seed_000_sorted_variant_counterexample() {
    let (code, out, _) = run(&["explain", "draft-select", "--variant", "vectorized-sorted"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("COUNTEREXAMPLE") && out.contains("selected[0]"), "{out}");
    let (code, out, _) = run(&["explain", "draft-select", "--variant", "vectorized", "--cases", "3000"]);
    assert_eq!(code, 1, "{out}");
}
