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
