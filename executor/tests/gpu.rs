//! Tests that need a CUDA GPU. Every one is `#[ignore]`d, so `cargo test` on a machine
//! without a GPU reports them as ignored (never passed); on the GPU host
//! `scripts/gpu-check.sh device` runs them with `--ignored` and
//! `SPECREPLAY_REQUIRE_GPU=1`, and a missing driver or device is a failure.

use specreplay_executor::device::test_device;
use specreplay_executor::graphs::{self, StepGraphs};
use specreplay_executor::layout::*;
use specreplay_executor::selftest::{self, random_step, Rng};
use specreplay_executor::step::Kernel;

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn device_opens_with_versions_and_module_hashes() {
    let dev = test_device();
    assert!(!dev.info.name.is_empty());
    assert!(dev.info.compute_capability.0 >= 9, "kernels are built for sm_90: {:?}", dev.info.compute_capability);
    assert!(dev.info.sm_count > 0 && dev.info.total_memory > 0 && dev.info.driver_version >= 12000);
    let hashes = dev.module_hashes();
    assert_eq!(hashes.len(), specreplay_executor::kernels::MODULES.len());
    assert!(hashes.iter().all(|(_, h)| h.len() == 64));
    // A second open hits the kernel cache and loads the same CUBINs.
    let again = specreplay_executor::device::Device::open(0).unwrap();
    assert_eq!(again.module_hashes(), hashes);
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn every_kernel_matches_its_reference() {
    let dev = test_device();
    let rep = selftest::run(&dev, 400, 0x7e57, &mut |_| {}).unwrap();
    assert!(rep.ok(), "\n{}", rep.table());
    assert_eq!(rep.rows.len(), Kernel::ALL.len() + 1);
}

/// A graph captured on one batch replays correctly on others: loop bounds come from the
/// buffers, not from scalars frozen at capture. The same buffers, replayed with a batch
/// that grows and shrinks, match the references step after step, stale state included.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn one_captured_graph_serves_every_batch_size() {
    let dev = test_device();
    for seed in 0..20u64 {
        let (mut host, oracle) = selftest::random_case(seed, false).unwrap();
        let plan = graphs::full_plan(true);
        let mut sg = StepGraphs::new(&dev, &host, oracle).unwrap();
        sg.capture(&dev, "FULL", &plan).unwrap();
        let mut rng = Rng::new(seed);
        let mut sizes = Vec::new();
        for _ in 0..8 {
            random_step(&mut rng, &mut host).unwrap();
            sizes.push(host.counts[C_NUM_REQS]);
            sg.write(&dev, &host).unwrap();
            sg.replay("FULL").unwrap();
            let got = sg.read(&dev).unwrap();
            for &k in &plan {
                k.reference(&mut host, &oracle);
            }
            assert_eq!(host.differences(&got), vec![], "seed {seed}, batch sizes {sizes:?}");
        }
    }
}

/// Real-vocabulary rows: the synthetic model's 151,936-wide logits and their argmax on
/// the device equal `Synthetic::token_after` of the context read back from the cache.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn wide_vocabulary_rows_pick_the_oracles_token() {
    let dev = test_device();
    for seed in 0..10u64 {
        let (mut host, oracle) = selftest::random_case(seed, true).unwrap();
        let mut bufs = DeviceBuffers::upload(&dev.stream, &host).unwrap();
        graphs::run_eager(&dev, &graphs::full_plan(true), &mut bufs, &oracle).unwrap();
        let got = bufs.download(&dev.stream).unwrap();
        for k in graphs::full_plan(true) {
            k.reference(&mut host, &oracle);
        }
        assert_eq!(host.differences(&got), vec![], "seed {seed}");
        assert_eq!(got.cap.vocab, selftest::WIDE_VOCAB);
    }
}

mod engine_on_gpu {
    use std::path::{Path, PathBuf};

    use specreplay_executor::cuda_device::Probe;
    use specreplay_executor::device::{test_device, Device};
    use specreplay_executor::host_device::VARIANT_SCENARIO;
    use specreplay_executor::kernels::Variant;
    use specreplay_executor::replay::{real_rows_only, run_on_gpu};
    use specreplay_executor::selftest::Rng;
    use specreplay_sim::{diff, engine, fuzzing, trace, Scenario};

    fn root() -> PathBuf {
        specreplay_executor::repo_root()
    }

    fn golden() -> specreplay_sim::Trace {
        trace::read(&root().join("traces/vllm_ngram_13step.json")).unwrap()
    }

    /// The 13-step golden trace replays identical on the GPU, stale tails included; real
    /// rows stay identical under poison; the shadow eager run agrees with the graphs.
    #[test]
    #[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
    fn the_golden_trace_replays_identical_on_the_gpu() {
        let dev = test_device();
        let rec = golden();
        let (t, stats) = run_on_gpu(&dev, &rec.scenario(), Probe::None).unwrap();
        let rep = diff::compare(&rec, &t);
        assert!(rep.identical(), "{:?}", rep.first);
        assert!(stats.replays.keys().any(|k| k.starts_with("FULL/")), "{stats:?}");
        assert_eq!((t.backend.as_str(), t.device.as_str()), ("cuda", dev.info.name.as_str()));
        let (p, _) = run_on_gpu(&dev, &rec.scenario(), Probe::Poison).unwrap();
        let rep = diff::compare(&real_rows_only(&rec), &real_rows_only(&p));
        assert!(rep.identical(), "--poison: {:?}", rep.first);
        let (s, _) = run_on_gpu(&dev, &rec.scenario(), Probe::ShadowEager).unwrap();
        assert!(diff::compare(&rec, &s).identical());
    }

    /// Synthetic-oracle scenarios from the fuzz generator: recorded on the GPU, then
    /// re-simulated on the CPU, identical.
    #[test]
    #[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
    fn gpu_sim_of_synthetic_scenarios_replays_identical_on_the_cpu() {
        let dev = test_device();
        let mut rng = Rng::new(0x5eed);
        for i in 0..60 {
            let bytes: Vec<u8> = (0..512).map(|_| rng.next_u64() as u8).collect();
            let sc = fuzzing::scenario_from_bytes(&bytes).unwrap();
            let cpu = engine::run(&sc);
            match (cpu, run_on_gpu(&dev, &sc, Probe::None)) {
                (Ok(c), Ok((g, _))) => {
                    // What `gpu sim -o` writes, read back, then `replay` on the CPU.
                    let bytes = trace::to_json(&g);
                    let again = trace::from_json(&bytes).unwrap();
                    let rep = diff::compare(&again, &c.trace);
                    assert!(rep.identical(), "scenario {i}: {:?}", rep.first);
                }
                (Err(a), Err(specreplay_executor::replay::RunError::Sim(b))) => assert_eq!(a, b, "scenario {i}"),
                (a, b) => panic!("scenario {i}: CPU {:?} vs GPU {:?}", a.err(), b.err()),
            }
        }
    }

    fn variant_scenario() -> Scenario {
        Scenario::from_json(&std::fs::read_to_string(root().join(VARIANT_SCENARIO)).unwrap()).unwrap()
    }

    /// The known-bad `padded-slot-writes` kernels (padded tokens keep stale slots and
    /// write through them) are caught: `gpu replay` names a padded slot at the first
    /// FULL-padded step; the correct kernels replay the same scenario identical.
    #[test]
    #[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
    fn the_padded_slot_writes_variant_is_caught_on_the_gpu() {
        let good = test_device();
        let sc = variant_scenario();
        let cpu = engine::run(&sc).unwrap().trace;
        let (t, _) = run_on_gpu(&good, &sc, Probe::None).unwrap();
        assert!(diff::compare(&cpu, &t).identical());
        drop(good);
        let bad = Device::open_variant(0, Variant::PaddedSlotWrites).unwrap();
        assert_ne!(bad.module_hashes()[0], test_device().module_hashes()[0], "the variant is another CUBIN");
        match run_on_gpu(&bad, &sc, Probe::None) {
            Ok((t, _)) => {
                let d = diff::compare(&cpu, &t).first.expect("gpu replay must catch the variant");
                assert!(d.field.starts_with("attn.slot_mapping["), "{d:?}");
                assert!(t.notes.iter().any(|n| n == "kernel variant: padded-slot-writes"));
            }
            Err(e) => assert!(e.is_divergence(), "{e}"),
        }
    }

    /// A sample of the vLLM conformance corpus replays identical on the GPU.
    #[test]
    #[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
    fn conformance_traces_replay_identical_on_the_gpu() {
        let dev = test_device();
        let dir = root().join("traces/conformance/vllm-0.12.0");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        paths.sort();
        for p in paths.iter().step_by(11) {
            let rec = trace::read(Path::new(p)).unwrap();
            let (t, _) =
                run_on_gpu(&dev, &rec.scenario(), Probe::None).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let rep = diff::compare(&rec, &t);
            assert!(rep.identical(), "{}: {:?}", p.display(), rep.first);
        }
    }
}

// ---------------------------------------------------------------------------------
// The seeds' metadata builders (executor/src/builders, issue 17); names start with
// `builders_` (gpu-check stage `builders-tests` runs only these).
// ---------------------------------------------------------------------------------

mod builder_kernels {
    use specreplay_executor::builders::{self, agreement, explain, nsa, timing};
    use specreplay_executor::device::test_device;
    use specreplay_sim::builders::cases::{self, NsaCase};
    use specreplay_sim::builders::nsa::{NsaBatch, NsaMode, NsaParams, NsaVariant};
    use specreplay_sim::builders::Outcome;

    fn builders_device() -> specreplay_executor::device::Device {
        let mut dev = test_device();
        builders::load(&mut dev).expect("builder kernels load");
        dev
    }

    /// Small-case agreement: every correct kernel variant equals the simulator on every case,
    /// every known-bad one disagrees, each exactly as the simulator models it.
    #[test]
    #[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
    fn builders_every_kernel_agrees_with_the_simulator_on_random_batches() {
        let dev = builders_device();
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
    fn builders_the_seed_002_failure_is_silent_under_graph_replay() {
        let dev = builders_device();
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
        assert!(
            cases::check_nsa_replay_actual(&case, NsaVariant::General, &Outcome::Values(g.clone()), "device").is_ok()
        );
        let m = cases::check_nsa_replay_actual(&case, NsaVariant::UniformQo, &Outcome::Values(u.clone()), "device")
            .unwrap_err();
        assert_eq!(
            (m.field.as_str(), m.index, m.expected.as_str(), m.actual.as_str()),
            ("nsa_seqlens_expanded", Some(0), "1", "0")
        );
    }

    /// The graph-baked NSA entries (header as kernel parameters, one graph per case, block
    /// sized to the captured bs) equal the simulator's replay model of their variant on
    /// random cases of every size class, whole buffers (tails, page table) included.
    #[test]
    #[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
    fn builders_the_graph_baked_nsa_entries_equal_the_simulator() {
        let dev = builders_device();
        let cap = nsa::Capacity { cases: 1, reqs: 1024, rows: 1 << 13, page: 1 << 23 };
        let mut nd = nsa::NsaDevice::new(&dev, cap).unwrap();
        let mut rng = specreplay_sim::splitmix::Rng::new(0xba6e);
        let mut ran = [0usize; 2];
        for mode in [NsaMode::TargetVerify, NsaMode::DraftExtend] {
            for i in 0..1500 {
                let c = agreement::random_nsa_case(&mut rng, mode, agreement::MAX_BS);
                if nsa::raises(&c).is_some() || nsa::footprint(&c, true)[4] > cap.page {
                    continue;
                }
                for v in [NsaVariant::General, NsaVariant::UniformQo] {
                    let act = nsa::device_outcome_baked(&dev, &mut nd, &c, v).unwrap();
                    assert_eq!(act, cases::replay_outcome(&c, v), "case {i} {mode:?} {v:?}: {c:?}");
                }
                ran[(c.captured_bs > 32) as usize] += 1;
            }
        }
        assert!(ran[0] > 500 && ran[1] > 300, "{ran:?}");
    }

    /// The graph-baked draft-select entries (header as a kernel parameter, a block per row)
    /// equal the simulator's model of their variant on random cases.
    #[test]
    #[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
    fn builders_the_graph_baked_draft_entries_equal_the_simulator() {
        use specreplay_executor::builders::draft;
        use specreplay_sim::builders::draft_select::{select, DraftVariant};
        let dev = builders_device();
        let cap = draft::Capacity { cases: 1, rows: 1024, scores: 1 << 20, out: 1 << 20 };
        let mut dd = draft::DraftDevice::new(&dev, cap).unwrap();
        let mut rng = specreplay_sim::splitmix::Rng::new(0xd5a);
        let (mut ran, mut sorted_differs) = (0usize, 0usize);
        for i in 0..1500 {
            let c = agreement::random_draft_case(&mut rng, agreement::MAX_BS);
            if draft::raises(&c).is_some() {
                continue;
            }
            for v in [DraftVariant::Vectorized, DraftVariant::VectorizedSorted] {
                let act = draft::device_outcome_baked(&dev, &mut dd, &c, v).unwrap();
                let model = Outcome::from(select(v, &c.scores, &c.counts));
                assert_eq!(act, model, "case {i} {v:?}: {c:?}");
                if v == DraftVariant::VectorizedSorted {
                    sorted_differs +=
                        (model != Outcome::from(select(DraftVariant::Loop, &c.scores, &c.counts))) as usize;
                }
            }
            ran += 1;
        }
        assert!(ran > 1000 && sorted_differs > 50, "{ran} {sorted_differs}");
    }

    /// The graph-baked sparse build (`sparse_build_fixed`) equals the simulator's clamped
    /// model on random cases, seed 003's clamping cases among them.
    #[test]
    #[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
    fn builders_the_graph_baked_sparse_entry_equals_the_simulator() {
        use specreplay_executor::builders::sparse;
        use specreplay_sim::builders::sparse::{build, SparseVariant};
        let dev = builders_device();
        let cap = sparse::Capacity { cases: 1, heavy: 1 << 22, list: 1 << 22, lens: 1 << 20, weights: 1 << 26 };
        let mut sd = sparse::SparseDevice::new(&dev, cap).unwrap();
        let mut rng = specreplay_sim::splitmix::Rng::new(0x5ba);
        let (mut ran, mut clamps) = (0usize, 0usize);
        for i in 0..1500 {
            let x = agreement::random_sparse_case(&mut rng, agreement::MAX_SK);
            if sparse::raises(&x).is_some() || !cap.fits(&sparse::Packed::new(false), sparse::footprint(&x, false)) {
                continue;
            }
            let act = sparse::device_outcome_baked(&dev, &mut sd, &x).unwrap();
            assert_eq!(act, Outcome::from(build(SparseVariant::FusedKernelClamped, &x)), "case {i}: {x:?}");
            ran += 1;
            clamps += (x.sink > x.sk || x.window > x.sk) as usize;
        }
        assert!(ran > 1000 && clamps > 20, "{ran} {clamps}");
    }

    /// `explain --device cuda` minimizes to the CPU explain's counterexample.
    #[test]
    #[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
    fn builders_explain_on_the_device_finds_the_cpu_counterexample() {
        let dev = builders_device();
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
    fn builders_timings_are_measured_for_every_graph() {
        let dev = builders_device();
        let t = timing::run(&dev, 50).unwrap();
        println!("{}", timing::table(&t));
        assert!(t.len() > 20 && t.iter().all(|r| r.median_us > 0.0));
    }
}
