//! The seeds' metadata builders (seeds 000-003): hand-computed behaviour, the seed-002
//! demonstration, property tests of every variant against its reference, and the replay
//! of the fuzz corpus (`fuzz/seeds/<target>/*`, `fuzz/regressions/<target>/*`) on stable.
//!
//! Million-case runs: `BUILDERS_CASES=1000000 cargo test --release --test builders -- --ignored --nocapture`.

#[path = "../src/explain.rs"]
mod explain;

use std::path::PathBuf;

use proptest::prelude::*;
use specreplay_sim::builders::cases::{
    self, check_bytes, check_draft_case, check_nsa_case, check_nsa_eager, check_nsa_replay, check_sparse_case,
    replay_outcome, DraftCase, DraftFuzzInput, FuzzTarget, NsaCase, NsaFuzzInput, NsaFuzzRequest, SparseFuzzInput,
};
use specreplay_sim::builders::cuda_graph::{self, GraphBuffers};
use specreplay_sim::builders::draft_select::{select, DraftVariant};
use specreplay_sim::builders::nsa::{self, NsaBatch, NsaMode, NsaParams, NsaVariant, ReqToToken};
use specreplay_sim::builders::sparse::{build, SparseInput, SparseVariant};
use specreplay_sim::builders::{BuilderError, Outcome};

// ---------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------

fn params(d: i32, topk: i32) -> NsaParams {
    NsaParams { num_draft_tokens: d, nsa_index_topk: topk, max_context_len: cases::MAX_CONTEXT_LEN }
}

fn nsa_case(mode: NsaMode, d: i32, topk: i32, seq: &[i32], acc: &[i32], captured_bs: usize) -> NsaCase {
    NsaCase {
        mode,
        params: params(d, topk),
        batch: NsaBatch {
            seq_lens: seq.to_vec(),
            accept_length: acc.to_vec(),
            req_pool_indices: (1..=seq.len()).collect(),
        },
        captured_bs,
    }
}

fn buffers(c: &NsaCase, v: NsaVariant) -> GraphBuffers {
    match replay_outcome(c, v) {
        Outcome::Values(b) => b,
        Outcome::Error(e) => panic!("replay raised: {e}"),
    }
}

// ---------------------------------------------------------------------------------
// seed 000: variable per-request draft selection
// ---------------------------------------------------------------------------------

fn seed_000_scores() -> Vec<Vec<f32>> {
    vec![vec![0.9, 0.8, 0.7, 0.6], vec![0.5, 0.4, 0.3, 0.2], vec![0.95, 0.85, 0.75, 0.65]]
}

#[test]
fn draft_select_seed_000_mixed_counts_2_0_1() {
    // Seed 000's trace: [[0, 1], [], [0]].
    for v in DraftVariant::ALL {
        assert_eq!(select(v, &seed_000_scores(), &[2, 0, 1]).unwrap(), vec![vec![0, 1], vec![], vec![0]]);
    }
}

#[test]
fn draft_select_zero_draft_counts() {
    for v in DraftVariant::ALL {
        assert_eq!(select(v, &seed_000_scores(), &[0, 0, 0]).unwrap(), vec![Vec::<i64>::new(); 3]);
    }
}

#[test]
fn draft_select_empty_batch() {
    for v in DraftVariant::ALL {
        assert_eq!(select(v, &[], &[]).unwrap(), Vec::<Vec<i64>>::new());
    }
}

#[test]
fn draft_select_bs_1_picks_by_score_not_index() {
    // Scores not monotone in the index: top-2 of [0.8, 0.1, 0.9] is [2, 0].
    for v in DraftVariant::ALL {
        assert_eq!(select(v, &[vec![0.8, 0.1, 0.9]], &[2]).unwrap(), vec![vec![2, 0]]);
    }
}

#[test]
fn draft_select_smaller_count_takes_its_own_top_by_score() {
    // The reading notes' example for the index-sorting variant: counts [1, 2] over
    // [0.8, 0.1, 0.9]; request 0 must take index 2 (score 0.9), not index 0.
    let scores = vec![vec![0.8, 0.1, 0.9], vec![0.8, 0.1, 0.9]];
    for v in DraftVariant::ALL {
        assert_eq!(select(v, &scores, &[1, 2]).unwrap(), vec![vec![2], vec![2, 0]]);
    }
}

#[test]
fn draft_select_ties_lower_index_first() {
    let scores = vec![vec![0.5, 0.7, 0.5, 0.7, 0.5]];
    for v in DraftVariant::ALL {
        assert_eq!(select(v, &scores, &[4]).unwrap(), vec![vec![1, 3, 0, 2]]);
    }
}

#[test]
fn draft_select_count_above_n_cand_is_a_typed_error() {
    for v in DraftVariant::ALL {
        assert_eq!(
            select(v, &seed_000_scores(), &[1, 5, 9]).unwrap_err(),
            BuilderError::DraftCountExceedsCandidates { request: 1, count: 5, n_cand: 4 }
        );
    }
}

// ---------------------------------------------------------------------------------
// seeds 001 / 002: NSA metadata, eager
// ---------------------------------------------------------------------------------

#[test]
fn nsa_target_verify_eager_hand_computed() {
    // seq_lens [3, 5], D = 2, topk 5: kv = [5, 7]; expanded [4, 5, 6, 7]; clamp -> [4, 5, 5, 5].
    let c = nsa_case(NsaMode::TargetVerify, 2, 5, &[3, 5], &[], 2);
    for v in NsaVariant::ALL {
        let m = nsa::build_eager(v, c.mode, &c.batch, &c.params, &c.req_to_token()).unwrap();
        assert_eq!(m.cache_seqlens, vec![5, 7]);
        assert_eq!(m.cu_seqlens_k, vec![0, 5, 12]);
        assert_eq!(m.seqlens_expanded, vec![4, 5, 6, 7], "{v:?}");
        assert_eq!(m.nsa_cache_seqlens, vec![4, 5, 5, 5]);
        assert_eq!(m.nsa_cu_seqlens_k, vec![0, 4, 9, 14, 19]);
        // page_table_1: request rows repeated D times, max_k = 5 + 2 = 7 columns.
        assert_eq!(m.page_table_1.len(), 4);
        assert_eq!(m.page_table_1[1], vec![1001, 1002, 1003, 1004, 1005, 1006, 1007]);
        assert_eq!(m.page_table_1[2][0], 2001);
    }
}

#[test]
fn nsa_draft_extend_eager_reference_hand_computed() {
    // seq_lens [4, 6], accept [2, 1]: [3, 4] ++ [6]; page rows: req 1 twice, req 2 once.
    let c = nsa_case(NsaMode::DraftExtend, 3, 2048, &[4, 6], &[2, 1], 2);
    let m = nsa::build_eager(NsaVariant::Reference, c.mode, &c.batch, &c.params, &c.req_to_token()).unwrap();
    assert_eq!(m.cache_seqlens, vec![4, 6]);
    assert_eq!(m.seqlens_expanded, vec![3, 4, 6]);
    assert_eq!(m.nsa_cu_seqlens_k, vec![0, 3, 7, 13]);
    assert_eq!(m.page_table_1.iter().map(|r| r[0]).collect::<Vec<_>>(), vec![1001, 1001, 2001]);
    let g = nsa::build_eager(NsaVariant::General, c.mode, &c.batch, &c.params, &c.req_to_token()).unwrap();
    assert_eq!(g, m);
}

#[test]
fn nsa_draft_extend_zero_accept_length_contributes_no_rows() {
    let c = nsa_case(NsaMode::DraftExtend, 2, 2048, &[4, 6, 2], &[0, 2, 0], 4);
    let m = nsa::build_eager(NsaVariant::Reference, c.mode, &c.batch, &c.params, &c.req_to_token()).unwrap();
    assert_eq!(m.seqlens_expanded, vec![5, 6]);
    check_nsa_case(&c, NsaVariant::General).unwrap();
}

#[test]
fn nsa_empty_batch_raises_in_every_variant() {
    // int(seq_lens_cpu.max().item()) on an empty batch raises before any variant code.
    for mode in [NsaMode::TargetVerify, NsaMode::DraftExtend] {
        let c = nsa_case(mode, 2, 8, &[], &[], 1);
        for v in NsaVariant::ALL {
            let r = nsa::build_eager(v, mode, &c.batch, &c.params, &c.req_to_token());
            assert!(r.unwrap_err().0.starts_with("max(): Expected reduction dim"));
        }
        check_nsa_eager(&c, NsaVariant::UniformQo).unwrap();
    }
}

#[test]
fn nsa_bs_1_target_verify_all_variants_agree() {
    let c = nsa_case(NsaMode::TargetVerify, 4, 3, &[0], &[], 1);
    for v in NsaVariant::ALL {
        check_nsa_case(&c, v).unwrap();
    }
}

#[test]
fn compute_nsa_seqlens_clamps_from_above_only() {
    // uniform-qo on draft_extend with seq_len 1 < D = 3 gives start -1: the clamp lets
    // the negative and zero lengths through (nsa/utils.py compute_nsa_seqlens).
    let c = nsa_case(NsaMode::DraftExtend, 3, 2, &[1], &[1], 1);
    let m = nsa::build_eager(NsaVariant::UniformQo, c.mode, &c.batch, &c.params, &c.req_to_token()).unwrap();
    assert_eq!(m.seqlens_expanded, vec![-1, 0, 1]);
    assert_eq!(m.nsa_cache_seqlens, vec![-1, 0, 1]);
}

// ---------------------------------------------------------------------------------
// CUDA-graph replay
// ---------------------------------------------------------------------------------

#[test]
fn replay_draft_extend_reference_leaves_capture_values_in_the_tail() {
    // Captured bs 2, D 3: buffers hold 6 rows, captured with seq_lens = 1, i.e.
    // kv = 4 and expanded [2, 3, 4] per request. Live: one request, seq 9, accept 2;
    // padded row: seq 1, accept 1. Reference writes [8, 9] ++ [1] and leaves rows 3..6.
    let c = nsa_case(NsaMode::DraftExtend, 3, 2048, &[9], &[2], 2);
    let b = buffers(&c, NsaVariant::Reference);
    assert_eq!(b.cache_seqlens, vec![9, 1]);
    assert_eq!(b.cu_seqlens_k, vec![0, 9, 10]);
    assert_eq!(b.seqlens_expanded, vec![8, 9, 1, 2, 3, 4]);
    // Padded row reads the reserved zero slot of req_to_token.
    assert_eq!(b.page_table_1[2][0], 0);
    assert_eq!(b.page_table_1[0][0], 1001);
    // The general variant writes the same rows, so it leaves the same tail.
    assert_eq!(buffers(&c, NsaVariant::General), b);
    // uniform-qo overwrites all 6 rows: [7, 8, 9] ++ [-1, 0, 1] (padded row, seq 1).
    assert_eq!(buffers(&c, NsaVariant::UniformQo).seqlens_expanded, vec![7, 8, 9, -1, 0, 1]);
}

#[test]
fn replay_all_padding_batch() {
    // No live request, graph for bs 1: the padded row has seq 1, accept 1 -> expanded [1].
    let c = nsa_case(NsaMode::DraftExtend, 2, 2048, &[], &[], 1);
    let b = buffers(&c, NsaVariant::Reference);
    assert_eq!(b.seqlens_expanded, vec![1, 3]); // row 1 keeps the capture value 3
    check_nsa_replay(&c, NsaVariant::General).unwrap();
    // target_verify: padded row kv = 1 + D = 3, expanded [2, 3]: uniform-qo is exact.
    let t = nsa_case(NsaMode::TargetVerify, 2, 2048, &[], &[], 1);
    assert_eq!(buffers(&t, NsaVariant::Reference).seqlens_expanded, vec![2, 3]);
    check_nsa_replay(&t, NsaVariant::UniformQo).unwrap();
}

#[test]
fn replay_raises_when_rows_exceed_the_captured_buffer() {
    // accept_length > D is outside production, but the model is exact: Σq = 5 rows into a
    // 2 * 2 = 4-row buffer: buf[:5] is clamped to 4 rows and copy_ raises.
    let c = nsa_case(NsaMode::DraftExtend, 2, 2048, &[9, 9], &[3, 2], 2);
    match replay_outcome(&c, NsaVariant::Reference) {
        Outcome::Error(e) => assert!(e.contains("size of tensor a (4) must match the size of tensor b (5)"), "{e}"),
        Outcome::Values(_) => panic!("expected a raise"),
    }
    // general raises the same way. So does uniform-qo: its seqlens_expanded would fit
    // (always bs*D rows), but the page-table copy before it is shared and raises first.
    check_nsa_replay(&c, NsaVariant::General).unwrap();
    check_nsa_replay(&c, NsaVariant::UniformQo).unwrap();
    match replay_outcome(&c, NsaVariant::UniformQo) {
        Outcome::Error(e) => assert!(
            e.contains("size of tensor a (4) must match the size of tensor b (5) at non-singleton dimension 0"),
            "{e}"
        ),
        Outcome::Values(_) => panic!("expected a raise"),
    }
}

#[test]
fn padding_fill_values() {
    let raw = NsaBatch { seq_lens: vec![5], accept_length: vec![3], req_pool_indices: vec![6] };
    let p = cuda_graph::pad_batch(&raw, 4);
    assert_eq!(p.seq_lens, vec![5, 1, 1, 1]);
    assert_eq!(p.accept_length, vec![3, 1, 1, 1]);
    assert_eq!(p.req_pool_indices, vec![6, 0, 0, 0]);
    assert_eq!(ReqToToken::synthetic(2, 3).rows[0], vec![0, 0, 0]);
}

// ---------------------------------------------------------------------------------
// The seed-002 demonstration
// ---------------------------------------------------------------------------------

#[test]
fn seed_002_uniform_qo_minimal_counterexample() {
    // The smallest production input: one request, D = 2, one accepted token, seq_len 1.
    // Reference: the single q-row sees 1 key. uniform-qo writes 2 rows starting at
    // kv - D + 1 = 0: the live row sees 0 keys. No error: the graph buffer has bs*D rows.
    let c = nsa_case(NsaMode::DraftExtend, 2, 1, &[1], &[1], 1);
    let m = check_nsa_replay(&c, NsaVariant::UniformQo).unwrap_err();
    assert_eq!((m.field.as_str(), m.index, m.request), ("nsa_seqlens_expanded", Some(0), Some(0)));
    assert_eq!((m.expected.as_str(), m.actual.as_str()), ("1", "0"));
    // Eager, the same call returns 2 rows for 1 q-row.
    let e = check_nsa_eager(&c, NsaVariant::UniformQo).unwrap_err();
    assert!(e.location.contains("field length: expected 1, actual 2"), "{}", e.location);
    // Full acceptance (accept_length == D) hides the bug.
    check_nsa_case(&nsa_case(NsaMode::DraftExtend, 2, 1, &[1, 7], &[2, 2], 2), NsaVariant::UniformQo).unwrap();
}

#[test]
fn explain_finds_and_minimizes_the_seed_002_failure() {
    let (found, report) = explain::explain("nsa-draft-extend", "uniform-qo", 100_000, 1).unwrap();
    assert!(found, "{report}");
    for needle in [
        "nsa-draft-extend",
        "uniform-qo",
        "bs                  1 live",
        "D                   2",
        "seq_lens            [1]",
        "accept_length       [1]",
        "field      nsa_seqlens_expanded",
        "element    0",
        "request    0",
        "expected   1",
        "actual     0",
        "reproduce: specreplay explain nsa-draft-extend --variant uniform-qo",
    ] {
        assert!(report.contains(needle), "missing {needle:?} in\n{report}");
    }
}

#[test]
fn explain_finds_nothing_for_correct_variants() {
    for (b, v) in [
        ("nsa-draft-extend", "general"),
        ("nsa-target-verify", "uniform-qo"),
        ("nsa-target-verify", "general"),
        ("draft-select", "vectorized"),
        ("sparse-indices", "fused-kernel-clamped"),
    ] {
        let (found, report) = explain::explain(b, v, 3_000, 7).unwrap();
        assert!(!found, "{report}");
        assert!(report.contains("NO COUNTEREXAMPLE"), "{report}");
    }
}

#[test]
fn explain_list_and_errors() {
    let l = explain::list();
    for name in [
        "nsa-target-verify",
        "nsa-draft-extend",
        "draft-select",
        "sparse-indices",
        "uniform-qo",
        "general",
        "loop",
        "vectorized",
        "fused-kernel-clamped",
    ] {
        assert!(l.contains(name), "{name} missing from\n{l}");
    }
    assert!(explain::explain("nope", "general", 1, 1).unwrap_err().contains("unknown builder"));
    assert!(explain::explain("nsa-draft-extend", "nope", 1, 1).unwrap_err().contains("unknown variant"));
}

// ---------------------------------------------------------------------------------
// seed 003: sparse sink + heavy + window
// ---------------------------------------------------------------------------------

fn sparse(sk: usize, sink: usize, window: usize, init_offset: usize, heavy: Vec<i64>) -> SparseInput {
    SparseInput { b: 1, h: 1, sk, sink, window, heavy_size: heavy.len(), init_offset, heavy: vec![vec![heavy]] }
}

#[test]
fn sparse_disjoint_regions() {
    // sk 10, sink 2, heavy [3, 1] + offset 2 = [5, 3], window 3: [0,1,5,3,7,8,9].
    let x = sparse(10, 2, 3, 2, vec![3, 1]);
    for v in SparseVariant::ALL {
        let o = build(v, &x).unwrap();
        assert_eq!(o.sparse_list[0][0], vec![0, 1, 5, 3, 7, 8, 9]);
        assert_eq!(o.sparse_len[0][0], 7);
        assert_eq!(o.weight_list[0][0], vec![1., 1., 0., 1., 0., 1., 0., 1., 1., 1.]);
    }
}

#[test]
fn sparse_sk_below_sink_plus_window_duplicates_but_weights_count_once() {
    // sk 4 < sink 3 + window 3: window [1, 2, 3] overlaps the sink [0, 1, 2].
    let o = build(SparseVariant::Reference, &sparse(4, 3, 3, 0, vec![])).unwrap();
    assert_eq!(o.sparse_list[0][0], vec![0, 1, 2, 1, 2, 3]);
    assert_eq!(o.sparse_len[0][0], 6);
    assert_eq!(o.weight_list[0][0].iter().sum::<f32>(), 4.0); // Σ weights < sparse_len
    assert_eq!(build(SparseVariant::FusedKernelClamped, &sparse(4, 3, 3, 0, vec![])).unwrap(), o);
}

#[test]
fn sparse_heavy_size_0() {
    let o = build(SparseVariant::FusedKernelClamped, &sparse(6, 1, 2, 0, vec![])).unwrap();
    assert_eq!(o.sparse_list[0][0], vec![0, 4, 5]);
}

#[test]
fn sparse_heavy_index_out_of_range_is_a_typed_error() {
    let e = build(SparseVariant::Reference, &sparse(6, 1, 1, 2, vec![4])).unwrap_err();
    assert_eq!(e, BuilderError::HeavyIndexOutOfRange { batch: 0, head: 0, slot: 0, index: 6, sk: 6 });
}

#[test]
fn sparse_window_longer_than_sk_breaks_the_literal_fused_kernel() {
    // Reference clamps the window to sk; the kernel as written starts it at sk - window < 0.
    let x = sparse(2, 0, 3, 0, vec![]);
    assert_eq!(build(SparseVariant::Reference, &x).unwrap().sparse_list[0][0], vec![0, 1]);
    assert_eq!(
        build(SparseVariant::FusedKernel, &x).unwrap_err(),
        BuilderError::OutOfBoundsStore { batch: 0, head: 0, index: -1, sk: 2 }
    );
    let (found, report) = explain::explain("sparse-indices", "fused-kernel", 10_000, 1).unwrap();
    assert!(found && report.contains("field      outcome"), "{report}");
}

// ---------------------------------------------------------------------------------
// The fuzz corpus, replayed on stable
// ---------------------------------------------------------------------------------

fn corpus_files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn fuzz_corpus_replays() {
    let mut replayed = 0;
    for t in FuzzTarget::ALL {
        for f in corpus_files("seeds", t.name()) {
            let data = std::fs::read(&f).unwrap();
            if !t.expects_failure() {
                if let Err(r) = check_bytes(t, &data) {
                    panic!("{}: {r}", f.display());
                }
            }
            replayed += 1;
        }
        for f in corpus_files("regressions", t.name()) {
            let data = std::fs::read(&f).unwrap();
            let r = check_bytes(t, &data);
            if t.expects_failure() {
                // Known-bad variant: its crash inputs must keep failing.
                assert!(r.is_err(), "{} no longer fails", f.display());
            } else if let Err(r) = r {
                panic!("regression {} fails again: {r}", f.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 5, "corpus missing: only {replayed} files");
}

// ---------------------------------------------------------------------------------
// Properties (PROPTEST_CASES raises the case count; failures persist in
// tests/builders.proptest-regressions)
// ---------------------------------------------------------------------------------

fn nsa_input() -> impl Strategy<Value = NsaFuzzInput> {
    (any::<u8>(), any::<u8>(), any::<u8>(), prop::collection::vec(any::<(u8, u8, u8)>(), 0..12)).prop_map(
        |(d, topk, extra_pad, r)| NsaFuzzInput {
            d,
            topk,
            extra_pad,
            requests: r.into_iter().map(|(seq_len, accept, pool)| NsaFuzzRequest { seq_len, accept, pool }).collect(),
        },
    )
}

fn draft_input() -> impl Strategy<Value = DraftCase> {
    (any::<u8>(), prop::collection::vec(any::<u8>(), 0..10), prop::collection::vec(any::<i8>(), 0..40))
        .prop_map(|(n_cand, counts, scores)| DraftFuzzInput { n_cand, counts, scores }.to_case())
}

fn sparse_input() -> impl Strategy<Value = SparseInput> {
    (any::<[u8; 7]>(), prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(a, heavy)| {
        SparseFuzzInput {
            b: a[0],
            h: a[1],
            sk: a[2],
            sink: a[3],
            window: a[4],
            heavy_size: a[5],
            init_offset: a[6],
            heavy,
        }
        .to_case()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(256), ..ProptestConfig::default() })]

    #[test]
    fn prop_nsa_target_verify_all_variants_agree(input in nsa_input()) {
        let c = input.to_case(NsaMode::TargetVerify);
        for v in [NsaVariant::UniformQo, NsaVariant::General] {
            if let Err(m) = check_nsa_case(&c, v) { prop_assert!(false, "{}", m); }
        }
    }

    #[test]
    fn prop_nsa_draft_extend_general_agrees(input in nsa_input()) {
        if let Err(m) = check_nsa_case(&input.to_case(NsaMode::DraftExtend), NsaVariant::General) {
            prop_assert!(false, "{}", m);
        }
    }

    /// The mechanism, exactly: on replay uniform-qo agrees when every row of the padded
    /// batch has accept_length == D; otherwise, for the first request k with
    /// accept_length != D, if accept_length[k] > 0 and Σ accept_length <= bs*D, the first
    /// wrong element is nsa_seqlens_expanded[k*D], in request k's own rows.
    /// Two exceptions were found by this property (tests/builders.proptest-regressions):
    /// Σ accept_length > bs*D (impossible in production) makes the shared page-table
    /// copy raise in both; with accept_length[k] == 0 the variant's rows can coincide
    /// with the stale capture values the reference leaves in place.
    #[test]
    fn prop_uniform_qo_fails_exactly_when_some_accept_length_differs_from_d(input in nsa_input()) {
        let c = input.to_case(NsaMode::DraftExtend);
        let padded = cuda_graph::pad_batch(&c.batch, c.captured_bs);
        let d = c.params.num_draft_tokens;
        let sum: i32 = padded.accept_length.iter().sum();
        let r = check_nsa_replay(&c, NsaVariant::UniformQo);
        match padded.accept_length.iter().position(|&q| q != d) {
            None => prop_assert!(r.is_ok()),
            Some(_) if sum > c.captured_bs as i32 * d => prop_assert!(r.is_ok(), "both should raise"),
            Some(k) if padded.accept_length[k] > 0 => {
                let m = r.expect_err("accept_length != D must disagree");
                prop_assert_eq!(m.field.as_str(), "nsa_seqlens_expanded");
                prop_assert_eq!(m.index, Some(k * d as usize));
                prop_assert_eq!(m.request, Some(k));
            }
            Some(_) => {}
        }
    }

    #[test]
    fn prop_draft_select_vectorized_agrees(c in draft_input()) {
        if let Err(m) = check_draft_case(&c, DraftVariant::Vectorized) { prop_assert!(false, "{}", m); }
    }

    #[test]
    fn prop_sparse_fused_clamped_agrees(x in sparse_input()) {
        if let Err(m) = check_sparse_case(&x, SparseVariant::FusedKernelClamped) { prop_assert!(false, "{}", m); }
    }
}

// ---------------------------------------------------------------------------------
// Million-case runs (recorded in BENCHMARKS.md)
// ---------------------------------------------------------------------------------

#[test]
#[ignore = "long: BUILDERS_CASES=1000000 cargo test --release --test builders -- --ignored --nocapture"]
fn million_random_cases_per_target() {
    let n: u64 = std::env::var("BUILDERS_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    for t in FuzzTarget::ALL {
        let start = std::time::Instant::now();
        let stats = cases::run_random(t, n, 0x5eed);
        let secs = start.elapsed().as_secs_f64();
        match (&stats.first_failure, t.expects_failure()) {
            (None, false) => println!("{:<28} {} cases, no mismatch, {:.1} s", t.name(), stats.cases, secs),
            (Some((i, _)), true) => {
                println!("{:<28} known-bad: first mismatch at random case #{i} ({:.3} s)", t.name(), secs)
            }
            (Some((_, r)), false) => panic!("{}: {r}", t.name()),
            (None, true) => panic!("{}: known-bad variant never failed", t.name()),
        }
    }
}

#[test]
fn hand_written_corpus_decodes_as_named() {
    // arbitrary's take-rest Vec reads a continuation bool (odd byte) before each element.
    let data = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/nsa_draft_extend_uniform_qo/minimal-live-bs1-d2-seq1-accept1"),
    )
    .unwrap();
    let report = check_bytes(FuzzTarget::NsaDraftExtendUniformQo, &data).unwrap_err();
    assert!(report.contains("seq_lens: [\n            1,\n        ]"), "{report}");
    assert!(report.contains("request 0, its q-row 0: expected 1, actual 0"), "{report}");
    let seed = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/nsa_draft_extend_uniform_qo/full_acceptance_agrees"),
    )
    .unwrap();
    check_bytes(FuzzTarget::NsaDraftExtendUniformQo, &seed).unwrap();
}
