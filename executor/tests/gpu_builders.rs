//! The seeds' metadata builders on the GPU (`executor/src/builders`). Every test is
//! `#[ignore]`d: it needs a CUDA GPU; `scripts/gpu-check.sh device` runs them with
//! `--ignored` and `SPECREPLAY_REQUIRE_GPU=1`.

use specreplay_executor::builders::{self, agreement, explain, nsa, timing};
use specreplay_executor::device::test_device;
use specreplay_sim::builders::cases::{self, NsaCase};
use specreplay_sim::builders::nsa::{NsaBatch, NsaMode, NsaParams, NsaVariant};
use specreplay_sim::builders::Outcome;

fn device() -> specreplay_executor::device::Device {
    let mut dev = test_device();
    builders::load(&mut dev).expect("builder kernels load");
    dev
}

/// Small-case agreement: every correct kernel variant equals the simulator on every case,
/// every known-bad one disagrees, each exactly as the simulator models it.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn every_builder_kernel_agrees_with_the_simulator_on_random_batches() {
    let dev = device();
    let rows = agreement::run(agreement::Backend::Device(&dev), 3000, 0x7e57, &mut |_| {}).unwrap();
    let text = agreement::table(&rows);
    println!("{text}");
    assert!(rows.iter().all(|r| r.ok()), "{text}");
}

/// Seed 002 physically: the minimized case under graph replay. `uniform-qo` raises nothing
/// and writes 0 into `nsa_seqlens_expanded[0]` (expected 1); `general` equals the
/// reference, the never-written row 1 keeping its capture-time value 3.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn the_seed_002_failure_is_silent_under_graph_replay() {
    let dev = device();
    let case = NsaCase {
        mode: NsaMode::DraftExtend,
        params: NsaParams { num_draft_tokens: 2, nsa_index_topk: 1, max_context_len: cases::MAX_CONTEXT_LEN },
        batch: NsaBatch { seq_lens: vec![1], accept_length: vec![1], req_pool_indices: vec![1] },
        captured_bs: 1,
    };
    let cap = nsa::Capacity { cases: 1, reqs: 8, rows: 64, page: 64 * cases::MAX_CONTEXT_LEN };
    let mut nd = nsa::NsaDevice::new(&dev, cap).unwrap();
    let g = nsa::device_outcome(&dev, &mut nd, &case, NsaVariant::General).unwrap();
    let u = nsa::device_outcome(&dev, &mut nd, &case, NsaVariant::UniformQo).unwrap();
    let (Outcome::Values(g), Outcome::Values(u)) = (&g, &u) else { panic!("no raise expected: {g:?} {u:?}") };
    assert_eq!(g.seqlens_expanded, vec![1, 3]);
    assert_eq!(u.seqlens_expanded, vec![0, 1]);
    assert!(cases::check_nsa_replay_actual(&case, NsaVariant::General, &Outcome::Values(g.clone()), "device").is_ok());
    let m = cases::check_nsa_replay_actual(&case, NsaVariant::UniformQo, &Outcome::Values(u.clone()), "device")
        .unwrap_err();
    assert_eq!(
        (m.field.as_str(), m.index, m.expected.as_str(), m.actual.as_str()),
        ("nsa_seqlens_expanded", Some(0), "1", "0")
    );
}

/// `explain --device cuda` minimizes to the CPU explain's counterexample.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn explain_on_the_device_finds_the_cpu_counterexample() {
    let dev = device();
    let gpu = explain::explain(&dev, "nsa-draft-extend", "uniform-qo", 100_000, 1).unwrap();
    let cpu = specreplay_sim::builders::search::explain("nsa-draft-extend", "uniform-qo", 100_000, 1).unwrap();
    let input =
        |r: &str| r.split("minimized input").nth(1).unwrap().split("first divergence").next().unwrap().to_string();
    assert!(gpu.found, "{}", gpu.report);
    assert_eq!(input(&gpu.report), input(&cpu.report), "{}", gpu.report);
    assert!(gpu.report.contains("expected   1") && gpu.report.contains("actual     0"), "{}", gpu.report);
    let none = explain::explain(&dev, "nsa-draft-extend", "general", 3000, 1).unwrap();
    assert!(!none.found, "{}", none.report);
}

/// The timings run and are positive (a smoke test; the figures come from `gpu builders`).
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn timings_are_measured_for_every_graph() {
    let dev = device();
    let t = timing::run(&dev, 50).unwrap();
    println!("{}", timing::table(&t));
    assert!(t.len() > 20 && t.iter().all(|r| r.median_us > 0.0));
}
