//! The Qwen3 forward pass on the GPU (`executor/kernels/qwen.cu`) against its CPU twin
//! (`executor/src/model/host.rs`), and its batch invariance. Every test is `#[ignore]`d
//! (needs a CUDA GPU); `scripts/gpu-check.sh device qwen-kernels` runs them with
//! `SPECREPLAY_REQUIRE_GPU=1`. Failures print the (request, context) rows that differ.

use specreplay_executor::device::test_device;
use specreplay_executor::kernels::MEGA_MODULE;
use specreplay_executor::model::gpu::{KernelPlan, Launches};
use specreplay_executor::model::mega::MEGA_MAX_ROWS;
use specreplay_executor::model::weights::{random_weights, tiny_config, HostWeights};
use specreplay_executor::model::ModelConfig;
use specreplay_executor::qwen_device::*;
use specreplay_sim::{diff, engine, Scenario};

const P0: &[u32] = &[5, 9, 5, 9, 5, 9, 17, 3, 5, 9];
const P1: &[u32] = &[100, 200, 300, 100, 200];
const P2: &[u32] = &[7; 40];

fn weights(cfg: &ModelConfig, seed: u64) -> HostWeights {
    HostWeights::load(cfg, &random_weights(cfg, seed)).unwrap()
}

fn gpu_run(sc: &Scenario, w: &HostWeights, eager: bool) -> (engine::RunResult, Vec<StepLogits>, Greedy) {
    gpu_run_with(sc, w, eager, KernelPlan::default())
}

fn gpu_run_with(
    sc: &Scenario,
    w: &HostWeights,
    eager: bool,
    plan: KernelPlan,
) -> (engine::RunResult, Vec<StepLogits>, Greedy) {
    gpu_run_launching(sc, w, eager, plan, Launches::DEFAULT)
}

fn gpu_run_launching(
    sc: &Scenario,
    w: &HostWeights,
    eager: bool,
    plan: KernelPlan,
    launches: Launches,
) -> (engine::RunResult, Vec<StepLogits>, Greedy) {
    gpu_run_probed(sc, w, eager, plan, launches, false)
}

/// [`gpu_run_launching`], with the poison probe when `poison` (every KV slot and, before each
/// step, the scratch and logits NaN: a read of anything the step did not write shows).
fn gpu_run_probed(
    sc: &Scenario,
    w: &HostWeights,
    eager: bool,
    plan: KernelPlan,
    launches: Launches,
    poison: bool,
) -> (engine::RunResult, Vec<StepLogits>, Greedy) {
    let mut dev = test_device();
    if launches.mega.on() {
        dev.load_extra(&[MEGA_MODULE]).unwrap();
    }
    let mut d = QwenDevice::new(&dev, sc, w).unwrap();
    d.set_kernels(plan).unwrap();
    d.set_launches(launches);
    d.record_logits = true;
    d.force_eager = eager;
    if poison {
        d.set_poison().unwrap();
    }
    let r = engine::run_on(sc, &mut d).unwrap();
    eprintln!(
        "graphs: {} captured, replays {:?}, eager steps {}, megakernel launches {}",
        d.stats.captures, d.stats.replays, d.stats.eager, d.model.mega_launches
    );
    // The megakernel runs exactly when it is on under the tensor plan and a step is small
    // and whole: a FULL graph of at most MEGA_MAX_ROWS padded rows holds it.
    let runs = launches.mega.on() && plan == KernelPlan::Tensor;
    let small_full = d
        .stats
        .replays
        .keys()
        .any(|k| k.strip_prefix("FULL/").and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n <= MEGA_MAX_ROWS));
    if !runs {
        assert_eq!(d.model.mega_launches, 0, "{launches}: the megakernel ran");
    } else if small_full {
        assert!(
            d.model.mega_launches > 0,
            "{launches}: small FULL graphs replayed {:?} without the megakernel",
            d.stats.replays
        );
    }
    (r, std::mem::take(&mut d.logits), d.greedy.clone())
}

fn cpu_run(sc: &Scenario, w: &HostWeights) -> (engine::RunResult, Vec<StepLogits>) {
    cpu_run_with(sc, w, KernelPlan::default())
}

fn cpu_run_with(sc: &Scenario, w: &HostWeights, plan: KernelPlan) -> (engine::RunResult, Vec<StepLogits>) {
    let mut d = QwenHostDevice::new(sc, w.clone()).unwrap();
    d.set_kernels(plan).unwrap();
    let r = engine::run_on(sc, &mut d).unwrap();
    (r, d.logits)
}

fn assert_same_logits(what: &str, a: &[StepLogits], b: &[StepLogits], min_common: usize) {
    let (common, bad) = digest_mismatches(a, b);
    eprintln!("{what}: {common} logits rows in common, {} differ", bad.len());
    assert!(common >= min_common, "{what}: only {common} rows in common");
    assert!(bad.is_empty(), "{what}: rows (request, context length) that differ: {:?}", &bad[..bad.len().min(20)]);
}

/// Whole engine runs of the tiny model (FULL, PIECEWISE and eager steps, prefill chunks,
/// decode and verify): the GPU's traces, outputs and every logits row equal the CPU
/// twin's bit for bit — so every kernel matches its reference on these inputs.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn qwen_forward_matches_the_cpu_twin_bitwise() {
    let w = weights(&tiny_config(), 7);
    for (k, capture) in [(0u32, &[1u32, 2, 4, 8][..]), (3, &[4, 8, 16][..])] {
        let sc = test_scenario(&[(P0, 1), (P1, 2), (P2, 4)], 40, k, capture);
        let (g, gl, _) = gpu_run(&sc, &w, false);
        let (c, cl) = cpu_run(&sc, &w);
        let rep = diff::compare(&c.trace, &g.trace);
        assert!(rep.identical(), "k={k}: GPU trace differs from the CPU twin: {:?}", rep.first);
        assert_same_logits(&format!("k={k} GPU vs CPU twin"), &gl, &cl, 100);
        let modes: Vec<String> = g.trace.steps.iter().map(|s| s.cudagraph_mode.as_str().to_string()).collect();
        eprintln!("k={k}: modes {modes:?}");
    }
}

/// Batch invariance on the GPU: n-gram speculation gives the plain greedy output and the
/// same logits rows; a request alone and among batch mates computes the same logits;
/// graph replays equal eager launches.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn qwen_forward_is_batch_invariant_on_the_gpu() {
    let w = weights(&tiny_config(), 11);
    let prompts: &[(&[u32], u64)] = &[(P0, 1), (P1, 2), (P2, 4)];
    let (plain, pl, _) = gpu_run(&test_scenario(prompts, 60, 0, &[1, 2, 4, 8]), &w, false);
    let (spec, sl, _) = gpu_run(&test_scenario(prompts, 60, 3, &[4, 8, 16]), &w, false);
    assert_eq!(plain.trace.outputs, spec.trace.outputs, "speculation changed greedy output");
    eprintln!("spec stats {:?}", spec.stats);
    assert!(spec.stats.num_accepted_tokens > 0);
    assert_same_logits("plain vs n-gram verify", &pl, &sl, 150);
    let (alone, al, _) = gpu_run(&test_scenario(&[(P1, 1)], 60, 3, &[4, 8, 16]), &w, false);
    assert_eq!(alone.trace.outputs["r0"], spec.trace.outputs["r1"]);
    let remap: Vec<StepLogits> =
        al.iter().map(|s| StepLogits { keys: s.keys.iter().map(|&(_, c)| (1, c)).collect(), ..s.clone() }).collect();
    assert_same_logits("alone vs with batch mates", &remap, &sl, 60);
    let (eager, el, _) = gpu_run(&test_scenario(prompts, 60, 3, &[4, 8, 16]), &w, true);
    assert_eq!(eager.trace.outputs, spec.trace.outputs);
    assert_same_logits("graphs vs eager", &el, &sl, 150);
}

/// Qwen3-0.6B shapes (hidden 1024, 16/8 heads of 128, intermediate 3072, vocab 151,936;
/// 2 of the 28 layers to keep the CPU twin fast): the GPU equals the CPU twin bit for bit
/// on a short run with prefill, decode and verify rows.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn qwen3_0_6b_shapes_match_the_cpu_twin_bitwise() {
    let mut cfg = ModelConfig::qwen3_0_6b();
    cfg.num_layers = 2;
    let w = weights(&cfg, 3);
    let sc = test_scenario(&[(P0, 1), (P2, 2)], 6, 2, &[3, 6]);
    let (g, gl, _) = gpu_run(&sc, &w, false);
    let (c, cl) = cpu_run(&sc, &w);
    assert_eq!(g.trace.outputs, c.trace.outputs);
    assert_same_logits("qwen3-0.6b shapes GPU vs CPU twin", &gl, &cl, 10);
}

/// The CUDA-core plans equal the CPU twin of their order (`GemmOrder::Lanes`) bit for bit
/// (the tests above run the default, `KernelPlan::Tensor`): `Fused` and the baseline
/// `Unfused` (one launch per op, row-walking GEMMs) on the tiny model (FULL/1 replays:
/// Fused's one-row kernels with the norms folded into the products; prefill steps its
/// register-tiled GEMMs and fused gate_up), `Unfused` on Qwen3-0.6B shapes, and the fused
/// plans on a lone request whose every decode step is one row (qwen_gemm_norm_*,
/// qwen_gemm_resadd_*), in graphs and eagerly.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn both_kernel_plans_match_the_cpu_twin_bitwise() {
    let w = weights(&tiny_config(), 7);
    let sc = test_scenario(&[(P0, 1), (P1, 2), (P2, 4)], 40, 0, &[1, 2, 4, 8]);
    for plan in [KernelPlan::Unfused, KernelPlan::Fused] {
        let (g, gl, _) = gpu_run_with(&sc, &w, false, plan);
        let (c, cl) = cpu_run_with(&sc, &w, plan);
        let what = format!("{} kernels, tiny model, GPU vs CPU twin", plan.name());
        assert!(diff::compare(&c.trace, &g.trace).identical(), "{what}: trace differs");
        assert_same_logits(&what, &gl, &cl, 100);
    }
    let mut cfg = ModelConfig::qwen3_0_6b();
    cfg.num_layers = 2;
    let w = weights(&cfg, 3);
    let sc = test_scenario(&[(P0, 1), (P2, 2)], 6, 0, &[1, 2, 4]);
    let (g, gl, _) = gpu_run_with(&sc, &w, false, KernelPlan::Unfused);
    let (c, cl) = cpu_run_with(&sc, &w, KernelPlan::Unfused);
    assert_eq!(g.trace.outputs, c.trace.outputs);
    assert_same_logits("unfused kernels, qwen3-0.6b shapes, GPU vs CPU twin", &gl, &cl, 10);
    let sc = test_scenario(&[(P0, 1)], 8, 0, &[1, 2]);
    let (c, cl) = cpu_run_with(&sc, &w, KernelPlan::Fused);
    for plan in [KernelPlan::Fused, KernelPlan::FusedPdl] {
        for eager in [false, true] {
            let (g, gl, _) = gpu_run_with(&sc, &w, eager, plan);
            assert_eq!(g.trace.outputs, c.trace.outputs);
            let what = format!("{} kernels, one row, eager {eager}, GPU vs CPU twin", plan.name());
            assert_same_logits(&what, &gl, &cl, 8);
        }
    }
}

/// The candidate plan `KernelPlan::FusedPdl` (the fused kernels launched with programmatic
/// dependent launch: a kernel may start before the previous one ends and waits for it
/// before reading its results) equals the CPU twin bit for bit, in graphs and eagerly, on
/// the tiny model and on Qwen3-0.6B shapes: a read before the wait would show as a
/// differing row.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn programmatic_dependent_launch_matches_the_cpu_twin_bitwise() {
    let w = weights(&tiny_config(), 7);
    let sc = test_scenario(&[(P0, 1), (P1, 2), (P2, 4)], 40, 3, &[4, 8, 16]);
    let (c, cl) = cpu_run_with(&sc, &w, KernelPlan::FusedPdl);
    for eager in [false, true] {
        let (g, gl, _) = gpu_run_with(&sc, &w, eager, KernelPlan::FusedPdl);
        assert!(diff::compare(&c.trace, &g.trace).identical(), "fused-pdl kernels: trace differs from the CPU twin");
        assert_same_logits(&format!("fused-pdl kernels, tiny model, eager {eager}, GPU vs CPU twin"), &gl, &cl, 100);
    }
    let mut cfg = ModelConfig::qwen3_0_6b();
    cfg.num_layers = 2;
    let w = weights(&cfg, 3);
    let sc = test_scenario(&[(P0, 1), (P2, 2)], 6, 0, &[1, 2, 4]);
    let (c, cl) = cpu_run_with(&sc, &w, KernelPlan::FusedPdl);
    let (g, gl, _) = gpu_run_with(&sc, &w, false, KernelPlan::FusedPdl);
    assert_eq!(g.trace.outputs, c.trace.outputs);
    assert_same_logits("fused-pdl kernels, qwen3-0.6b shapes, GPU vs CPU twin", &gl, &cl, 10);
}

/// The tensor-core plan (`KernelPlan::Tensor`: every product on mma.sync, one K order for
/// every row count) equals its CPU twin bit for bit — the twin models the Hopper block FMA
/// (`TcModel::HOPPER`) — on the tiny model (k 0 and 3: decode rows on the K-splitting
/// kernels, prefill rows on the warp-tile kernels; graphs and eager) and on Qwen3-0.6B
/// shapes; and it is batch invariant: n-gram verify rows equal plain decode rows, a
/// request alone equals it among batch mates. Every [`Launches`] combination (speed only),
/// and the default with every L2 streaming mode (a side-stream branch in each graph),
/// against the same twin run.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn tensor_core_plan_matches_its_cpu_twin_and_is_batch_invariant() {
    let t = KernelPlan::Tensor;
    let w = weights(&tiny_config(), 7);
    for (k, capture) in [(0u32, &[1u32, 2, 4, 8][..]), (3, &[4, 8, 16][..])] {
        let sc = test_scenario(&[(P0, 1), (P1, 2), (P2, 4)], 40, k, capture);
        let (c, cl) = cpu_run_with(&sc, &w, t);
        for l in Launches::ALL {
            for eager in [false, true] {
                let (g, gl, _) = gpu_run_launching(&sc, &w, eager, t, l);
                let rep = diff::compare(&c.trace, &g.trace);
                assert!(
                    rep.identical(),
                    "tensor plan ({l}), k={k}: GPU trace differs from the CPU twin: {:?}",
                    rep.first
                );
                assert_same_logits(
                    &format!("tensor kernels ({l}), tiny model, k={k}, eager {eager}, GPU vs CPU twin"),
                    &gl,
                    &cl,
                    100,
                );
            }
        }
    }
    let prompts: &[(&[u32], u64)] = &[(P0, 1), (P1, 2), (P2, 4)];
    let (plain, pl, _) = gpu_run_with(&test_scenario(prompts, 60, 0, &[1, 2, 4, 8]), &w, false, t);
    let (spec, sl, _) = gpu_run_with(&test_scenario(prompts, 60, 3, &[4, 8, 16]), &w, false, t);
    assert_eq!(plain.trace.outputs, spec.trace.outputs, "tensor plan: speculation changed greedy output");
    assert_same_logits("tensor kernels, plain vs n-gram verify", &pl, &sl, 150);
    let (_, al, _) = gpu_run_with(&test_scenario(&[(P1, 1)], 60, 3, &[4, 8, 16]), &w, false, t);
    let remap: Vec<StepLogits> =
        al.iter().map(|s| StepLogits { keys: s.keys.iter().map(|&(_, c)| (1, c)).collect(), ..s.clone() }).collect();
    assert_same_logits("tensor kernels, alone vs with batch mates", &remap, &sl, 60);
    let mut cfg = ModelConfig::qwen3_0_6b();
    cfg.num_layers = 2;
    let w = weights(&cfg, 3);
    let sc = test_scenario(&[(P0, 1), (P2, 2)], 6, 2, &[1, 2, 4]);
    let (c, cl) = cpu_run_with(&sc, &w, t);
    for l in Launches::ALL.into_iter().chain(Launches::l2_variants()) {
        let (g, gl, _) = gpu_run_launching(&sc, &w, false, t, l);
        assert_eq!(g.trace.outputs, c.trace.outputs);
        assert_same_logits(&format!("tensor kernels ({l}), qwen3-0.6b shapes, GPU vs CPU twin"), &gl, &cl, 10);
    }
    // A lone request: every decode step is one row, the norms folded into the products.
    let sc = test_scenario(&[(P0, 1)], 8, 0, &[1, 2]);
    let (c, cl) = cpu_run_with(&sc, &w, t);
    for l in Launches::ALL.into_iter().chain(Launches::l2_variants()) {
        for eager in [false, true] {
            let (g, gl, _) = gpu_run_launching(&sc, &w, eager, t, l);
            assert_eq!(g.trace.outputs, c.trace.outputs);
            assert_same_logits(&format!("tensor kernels ({l}), one row, eager {eager}, GPU vs CPU twin"), &gl, &cl, 8);
        }
    }
}

/// The decode megakernel (`Launches::mega`, every layer of a step of at most 8 rows in one
/// persistent launch with grid barriers) computes the per-op plan's bits: the tiny model's
/// FULL, PIECEWISE (no megakernel) and eager steps, decode and verify, graphs, eager and
/// poisoned (scratch, logits and unwritten KV slots NaN before each step), and
/// Qwen3-0.6B shapes with several requests and one row, and with head dims 128 and 64 and a
/// 150-token prompt (two attention tiles for warp 0), against the CPU twin; n-gram
/// speculation leaves the greedy output unchanged. Graphs replay many times, so a grid
/// barrier or a staging mbarrier that did not reset would hang or corrupt a later step.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn megakernel_matches_the_cpu_twin() {
    let t = KernelPlan::Tensor;
    let w = weights(&tiny_config(), 7);
    for (k, capture) in [(0u32, &[1u32, 2, 4, 8][..]), (3, &[4, 8, 16][..])] {
        let sc = test_scenario(&[(P0, 1), (P1, 2), (P2, 4)], 40, k, capture);
        let (c, cl) = cpu_run_with(&sc, &w, t);
        for l in Launches::mega_variants() {
            for (eager, poison) in [(false, false), (true, false), (false, true)] {
                let (g, gl, _) = gpu_run_probed(&sc, &w, eager, t, l, poison);
                let what = format!("megakernel ({l}), tiny model, k={k}, eager {eager}, poison {poison}");
                let rep = diff::compare(&c.trace, &g.trace);
                assert!(rep.identical(), "{what}: trace differs: {:?}", rep.first);
                assert_same_logits(&what, &gl, &cl, 100);
            }
        }
    }
    let mut cfg = ModelConfig::qwen3_0_6b();
    cfg.num_layers = 2;
    let w = weights(&cfg, 3);
    for (prompts, k, capture, min) in [
        (&[(P0, 1), (P2, 2)][..], 2u32, &[1u32, 2, 4][..], 10),
        (&[(P0, 1)][..], 0, &[1, 2][..], 8),
        (&[(P0, 1), (P1, 1), (P2, 2)][..], 0, &[1, 2, 4][..], 12),
    ] {
        let sc = test_scenario(prompts, 8, k, capture);
        let (c, cl) = cpu_run_with(&sc, &w, t);
        for l in Launches::mega_variants() {
            let (g, gl, _) = gpu_run_launching(&sc, &w, false, t, l);
            assert_eq!(g.trace.outputs, c.trace.outputs, "megakernel ({l}), qwen3-0.6b shapes, k={k}");
            assert_same_logits(&format!("megakernel ({l}), qwen3-0.6b shapes, k={k}, GPU vs CPU twin"), &gl, &cl, min);
        }
    }
    // Head dims 128 and 64 (the compact entry's two staged widths) and a 150-token prompt,
    // so warp 0 of attention takes two tiles (keys past 4 x 32).
    let long: Vec<u32> = (0..150u32).map(|j| (j * 37 + 11) % 480 + 3).collect();
    for head_dim in [128, 64] {
        let mut cfg = ModelConfig::qwen3_0_6b();
        cfg.num_layers = 2;
        cfg.head_dim = head_dim;
        let w = weights(&cfg, 5);
        let sc = test_scenario(&[(&long[..], 1), (P1, 2)], 6, 0, &[1, 2]);
        let (c, cl) = cpu_run_with(&sc, &w, t);
        for l in Launches::mega_variants() {
            let (g, gl, _) = gpu_run_launching(&sc, &w, false, t, l);
            let what = format!("megakernel ({l}), qwen3-0.6b shapes, head_dim {head_dim}, a 150-token prompt");
            assert_eq!(g.trace.outputs, c.trace.outputs, "{what}");
            assert_same_logits(&what, &gl, &cl, 10);
        }
    }
    let prompts: &[(&[u32], u64)] = &[(P0, 1), (P1, 2), (P2, 4)];
    let w = weights(&tiny_config(), 7);
    let l = Launches::mega_variants()[0];
    let (plain, _, _) = gpu_run_launching(&test_scenario(prompts, 60, 0, &[1, 2, 4, 8]), &w, false, t, l);
    let (spec, _, _) = gpu_run_launching(&test_scenario(prompts, 60, 3, &[4, 8, 16]), &w, false, t, l);
    assert_eq!(plain.trace.outputs, spec.trace.outputs, "megakernel: speculation changed greedy output");
}

/// The default megakernel runs only where its module is loaded: a model on a device without
/// it launches per op (`mega::available`), one with it keeps the default, and a run of the
/// default then launches it.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn the_default_megakernel_needs_its_module() {
    let w = weights(&tiny_config(), 7);
    let sc = test_scenario(&[(P0, 1)], 8, 0, &[1, 2]);
    let bare = test_device();
    let d = QwenDevice::new(&bare, &sc, &w).unwrap();
    assert!(Launches::DEFAULT.mega.on(), "the default launches the megakernel");
    assert!(!d.model.launches.mega.on(), "no module loaded, yet the megakernel is on: {}", d.model.launches);
    let mut dev = test_device();
    let m = specreplay_executor::model::mega::load_module(&mut dev);
    assert!(m.as_ref().is_some_and(|(name, sha)| name == "qwen_mega" && sha.len() == 64), "{m:?}");
    let mut d = QwenDevice::new(&dev, &sc, &w).unwrap();
    assert_eq!(d.model.launches, Launches::DEFAULT);
    engine::run_on(&sc, &mut d).unwrap();
    assert!(d.model.mega_launches > 0, "the default launched no megakernel: {:?}", d.stats.replays);
}

/// A GPU model run replays on the simulator from its recorded greedy tokens.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn a_gpu_model_run_replays_on_the_simulator() {
    let w = weights(&tiny_config(), 5);
    let sc = test_scenario(&[(P0, 1), (P1, 2), (P2, 3)], 40, 2, &[3, 6, 12]);
    let (g, _, greedy) = gpu_run(&sc, &w, false);
    let cpu = engine::run(&with_recorded_oracle(&sc, &greedy)).unwrap();
    let mut rec = g.trace.clone();
    rec.oracle = cpu.trace.oracle.clone();
    let rep = diff::compare(&rec, &cpu.trace);
    assert!(rep.identical(), "{:?}", rep.first);
}

/// Operands for the tensor-core probe: per case a spread of exponents (0 to 40 binades),
/// zeros, near-cancelling pairs and accumulators from negligible to dominant, so that the
/// alignment width, the rounding and where `c` joins are all exercised.
fn mma_operands(cases: usize, seed: u64) -> (Vec<u16>, Vec<u16>, Vec<f32>) {
    let mut s = seed;
    let mut next = move || {
        s = specreplay_sim::splitmix::splitmix(s);
        s
    };
    let (mut a, mut b, mut c) = (vec![0u16; cases * 256], vec![0u16; cases * 128], vec![0f32; cases * 128]);
    for cs in 0..cases {
        let r = next();
        let spread = [0u64, 1, 3, 8, 16, 40][(r % 6) as usize];
        let base = 127 - 10 + (r >> 8) % 12;
        let mut val = |zero_odds: u64| -> u16 {
            let r = next();
            if r % zero_odds == 0 {
                return 0;
            }
            let e = (base + (r >> 8) % (spread + 1)).saturating_sub(spread / 2).clamp(1, 254);
            (((r >> 60) & 1) << 15) as u16 | ((e as u16) << 7) | ((r >> 20) & 0x7f) as u16
        };
        for i in 0..256 {
            a[cs * 256 + i] = val(16);
        }
        for i in 0..128 {
            b[cs * 128 + i] = val(16);
        }
        if r & (1 << 40) != 0 {
            // Near-cancelling pairs: k and k + 1 of every B column differ only in sign and
            // the last mantissa bit, and A's row repeats the same value at k and k + 1.
            for n in 0..8 {
                for k in (0..16).step_by(2) {
                    let v = b[cs * 128 + n * 16 + k];
                    b[cs * 128 + n * 16 + k + 1] = (v ^ 0x8000) ^ (next() & 1) as u16;
                }
            }
            for m in 0..16 {
                for k in (0..16).step_by(2) {
                    a[cs * 256 + m * 16 + k + 1] = a[cs * 256 + m * 16 + k];
                }
            }
        }
        for i in 0..128 {
            let r = next();
            let shift = (r % 48) as i32 - 24; // relative to the products' scale
            let e = ((2 * base as i32 - 127) + shift).clamp(1, 254) as u32;
            c[cs * 128 + i] = if r % 7 == 0 {
                0.0
            } else {
                f32::from_bits(((r >> 63) as u32) << 31 | e << 23 | ((r >> 8) as u32 & 0x7f_ffff))
            };
        }
    }
    (a, b, c)
}

/// The tensor-core block FMA's CPU model (`model::tensor_core::TcModel::HOPPER`) equals
/// `mma.sync.m16n8k16` bf16 -> f32 bit for bit on 1,048,576 outputs; every candidate model
/// is scored first (printed, best first), so a different GPU shows which one it follows.
/// With SPECREPLAY_MMA_DUMP=DIR the operands and results are written there.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn tensor_core_block_model_matches_the_mma() {
    use cudarc::driver::{LaunchConfig, PushKernelArg};
    use specreplay_executor::model::tensor_core::TcModel;
    let dev = test_device();
    let cases = 8192usize;
    let (a, b, c) = mma_operands(cases, 0x7c0de);
    let (da, db, dc) =
        (dev.stream.clone_htod(&a).unwrap(), dev.stream.clone_htod(&b).unwrap(), dev.stream.clone_htod(&c).unwrap());
    let mut dd = dev.stream.alloc_zeros::<f32>(cases * 128).unwrap();
    let f = dev.function("mma_probe").unwrap();
    let n = cases as i32;
    let mut l = dev.stream.launch_builder(f);
    l.arg(&n).arg(&da).arg(&db).arg(&dc).arg(&mut dd);
    let lc = LaunchConfig { grid_dim: (cases.div_ceil(4) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: mma_probe(cases, a[cases*256], b[cases*128], c[cases*128], d[cases*128]).
    unsafe { l.launch(lc) }.unwrap();
    let d = dev.stream.clone_dtoh(&dd).unwrap();
    if let Ok(dir) = std::env::var("SPECREPLAY_MMA_DUMP") {
        let bytes = |v: Vec<u8>, name: &str| std::fs::write(std::path::Path::new(&dir).join(name), v).unwrap();
        bytes(a.iter().flat_map(|x| x.to_le_bytes()).collect(), "mma_a.bin");
        bytes(b.iter().flat_map(|x| x.to_le_bytes()).collect(), "mma_b.bin");
        bytes(c.iter().flat_map(|x| x.to_le_bytes()).collect(), "mma_c.bin");
        bytes(d.iter().flat_map(|x| x.to_le_bytes()).collect(), "mma_d.bin");
    }
    let model_out = |m: &TcModel, cs: usize, i: usize| -> f32 {
        let (row, col) = (i / 8, i % 8);
        m.fma(c[cs * 128 + i], &a[cs * 256 + row * 16..][..16], &b[cs * 128 + col * 16..][..16])
    };
    let mismatches = |m: &TcModel, upto: usize| -> usize {
        (0..upto)
            .flat_map(|cs| (0..128).map(move |i| (cs, i)))
            .filter(|&(cs, i)| model_out(m, cs, i).to_bits() != d[cs * 128 + i].to_bits())
            .count()
    };
    let mut scored: Vec<(usize, TcModel)> = TcModel::candidates().iter().map(|m| (mismatches(m, 256), *m)).collect();
    scored.sort_by_key(|s| s.0);
    for (bad, m) in scored.iter().take(12) {
        eprintln!("tensor-core model candidate {m:?}: {bad} of 32768 outputs differ");
    }
    let bad = mismatches(&TcModel::HOPPER, cases);
    eprintln!("TcModel::HOPPER vs mma.sync m16n8k16 bf16: {} outputs, {bad} differ", cases * 128);
    if bad > 0 {
        let (cs, i) = (0..cases)
            .flat_map(|cs| (0..128).map(move |i| (cs, i)))
            .find(|&(cs, i)| model_out(&TcModel::HOPPER, cs, i).to_bits() != d[cs * 128 + i].to_bits())
            .unwrap();
        let (row, col) = (i / 8, i % 8);
        panic!(
            "first difference: case {cs} output ({row},{col}): c {:e}, a {:04x?}, b {:04x?}: gpu {:e} ({:08x}), model {:e}",
            c[cs * 128 + i],
            &a[cs * 256 + row * 16..][..16],
            &b[cs * 128 + col * 16..][..16],
            d[cs * 128 + i],
            d[cs * 128 + i].to_bits(),
            model_out(&TcModel::HOPPER, cs, i)
        );
    }
}

/// A launch whose argument list does not fit the kernel's parameters is an error naming
/// both lists, not a launch that reads past the list (session 10: a folded entry declared
/// two parameters more than the forward pass passed, and the process crashed).
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn a_launch_with_the_wrong_arguments_is_an_error() {
    use cudarc::driver::LaunchConfig;
    use specreplay_executor::model::launch::RawArgs;
    let dev = test_device();
    let f = dev.function("qwen_silu_mul").unwrap();
    let buf = dev.stream.alloc_zeros::<u16>(64).unwrap();
    let lc = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 };
    let mut l = RawArgs::new(&dev.stream);
    l.arg(&buf).arg(&buf).arg(&0i32);
    // SAFETY: the check refuses the launch before the driver reads the list.
    let e = unsafe { l.launch(f, lc, false) }.unwrap_err().to_string();
    assert!(e.contains("3 arguments") && e.contains("takes 4 parameters"), "{e}");
    let mut l = RawArgs::new(&dev.stream);
    l.arg(&buf).arg(&buf).arg(&0i64).arg(&buf);
    // SAFETY: as above (the third parameter is an int, 4 bytes, not 8).
    let e = unsafe { l.launch(f, lc, false) }.unwrap_err().to_string();
    assert!(e.contains("[8, 8, 8, 8]"), "{e}");
}

/// With every L2 streaming mode, graphs of launch lists that stream nothing (the norms'
/// and attention's profile graphs, captured after eager steps whose products forked the
/// side stream) capture and replay: a join without a fork in the same list would make the
/// capturing stream wait on uncaptured side-stream work (CUDA_ERROR_STREAM_CAPTURE_ISOLATION,
/// device log 2026-12-07).
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the GPU host (scripts/gpu-check.sh)"]
fn l2_streaming_profiles_every_op_kind() {
    let mut cfg = ModelConfig::qwen3_0_6b();
    cfg.num_layers = 2;
    let w = weights(&cfg, 3);
    let sc = test_scenario(&[(P0, 1)], 8, 0, &[1, 2]);
    let dev = test_device();
    for l in Launches::l2_variants() {
        let mut d = QwenDevice::new(&dev, &sc, &w).unwrap();
        d.set_kernels(KernelPlan::Tensor).unwrap();
        d.set_launches(l);
        engine::run_on(&sc, &mut d).unwrap();
        let profile = d.profile_ops(1).unwrap_or_else(|e| panic!("{l}: profiling failed: {e}"));
        assert!(profile.iter().all(|p| p.2 > 0.0), "{l}: a profile time is not positive: {profile:?}");
    }
}
