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
        assert!(t.notes.iter().any(|n| n == "backend: cuda"), "{:?}", t.notes);
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
