//! `specreplay gpu ...`: the CUDA executor's commands.
//!
//! Exit codes: 0 success (selftest: 0 mismatches; replay / fuzz: all identical), 1
//! mismatches or divergences, 2 any other failure (one line), 3 no CUDA driver (or no
//! device) on this machine: one line `specreplay: error: no CUDA driver found: ...`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Subcommand;
use specreplay_executor::builders::{self, agreement, timing};
use specreplay_executor::cuda_device::Probe;
use specreplay_executor::device::Device;
use specreplay_executor::kernels::Variant;
use specreplay_executor::model::gpu::{KernelPlan, Launches};
use specreplay_executor::model::mega::{self, Mega};
use specreplay_executor::model::mega_timeline;
use specreplay_executor::model::reference::Reference;
use specreplay_executor::model::tokenizer::{Prompt, Tokenizer};
use specreplay_executor::model::weights::{random_weights, tiny_config, HostWeights};
use specreplay_executor::model::ModelConfig;
use specreplay_executor::model::{comparison, make, Checkpoint};
use specreplay_executor::model_replay;
use specreplay_executor::qwen_device::{generation_trace, QwenDevice};
use specreplay_executor::replay::{self, Coverage, RunError};
use specreplay_executor::{bench, selftest, ExecError};
use specreplay_sim::trace::{CheckpointInfo, Encoding, JsonOnly, Step};
use specreplay_sim::{diff, engine, Scenario, Trace};

/// Exit code of every `gpu` command on a machine without a usable CUDA driver.
pub const EXIT_NO_DRIVER: u8 = 3;

#[derive(Subcommand)]
pub enum GpuCmd {
    /// Device, compute capability, multiprocessors, memory, driver, NVRTC and cuBLAS versions.
    Info,
    /// Every kernel against its CPU reference on random inputs, plus the step pipeline in
    /// CUDA graphs; prints kernel / cases / mismatches (exit 0 only with 0 mismatches).
    Selftest {
        /// Random cases per kernel.
        #[arg(long, default_value_t = 10_000)]
        cases: u64,
        /// Random-mode rows (target distributions + vLLM's random rejection rule) compared
        /// with the CPU twin, bit for bit; 0 skips them.
        #[arg(long, default_value_t = 1_000_000)]
        random_rows: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the table as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Run a scenario on the GPU (engine loop on the CPU, device work in CUDA graphs) and
    /// record its trace; the header names the backend (`cuda`), the device and the module
    /// hashes (a `.bin` trace keeps them as notes).
    Sim {
        scenario: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Kernel variant (testing: a known-bad variant the check must catch).
        #[arg(long, hide = true, default_value = "correct")]
        variant: String,
    },
    /// Re-run each trace's scenario on the GPU and compare every field, stale tails
    /// included (exit 1 if any diverges).
    Replay {
        #[arg(required = true)]
        traces: Vec<PathBuf>,
        /// Fill never-written slots of the input and metadata buffers with poison before
        /// each launch; compare real rows only (tails then differ on purpose).
        #[arg(long, conflicts_with = "shadow_eager")]
        poison: bool,
        /// Also run each step eagerly at exact size on a second buffer set and compare
        /// real rows with the graph replay.
        #[arg(long)]
        shadow_eager: bool,
        #[arg(long, hide = true, default_value = "correct")]
        variant: String,
        /// Generation traces (`gpu generate --trace`): re-run the model from this checkpoint
        /// folder (its sha256 must equal the recorded one) on the GPU and compare steps,
        /// outputs and every logits row (digest, top-1, margin) with the recording.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["poison", "shadow_eager"])]
        model: Option<PathBuf>,
    },
    /// Random scenarios from the engine fuzz generator (synthetic oracle), each run on
    /// the GPU and re-simulated on the CPU: prints `identical: X/N` and coverage counts.
    Fuzz {
        #[arg(long, default_value_t = 1000)]
        n: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Index of the first scenario (to reproduce one: `--first I --n 1`).
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Also write the counts as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Random-mode scenarios: seeded temperature / top-k / top-p on most requests
        /// (`replay::random_fuzz_scenario`), verified on the device by the random-mode kernels.
        #[arg(long)]
        random: bool,
        #[arg(long, hide = true, default_value = "correct")]
        variant: String,
    },
    /// The seeds' metadata builders (seeds 000-003) as kernels under CUDA-graph replay:
    /// N random cases per kernel variant against the simulator's reference (prints
    /// `kernel variant cases mismatches ...`; correct variants must show 0, known-bad ones
    /// > 0 with the first mismatch), then device time per graph replay (median).
    #[command(after_help = "Exit codes: 0 every correct variant agrees on every case, every known-bad variant \
disagrees, and every variant equals the simulator's model of it; 1 otherwise; 2 bad input; 3 no CUDA driver. \
Known-bad variants run at most 100000 cases. README \"GPU commands\", docs/builders.md.")]
    Builders {
        /// Random cases per correct kernel variant.
        #[arg(long, default_value_t = 100_000)]
        cases: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// CUDA-graph replays per timed graph (0: no timings).
        #[arg(long, default_value_t = 2000)]
        bench_replays: usize,
        /// Only this builder's variants in the agreement run (repeatable; default all):
        /// nsa-target-verify, nsa-draft-extend, draft-select, sparse-indices.
        #[arg(long = "builder", value_name = "NAME")]
        only: Vec<String>,
        /// Also write the tables as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Write a random-weight checkpoint in Hugging Face layout (config.json, model.safetensors
    /// or shards + index, tokenizer.json) with transformers' init (N(0, 0.02²) linear and
    /// embedding weights, RMSNorm weights 1), bf16. Needs no GPU. DIR must not exist or be
    /// empty; written into DIR.tmp and renamed when complete.
    MakeCheckpoint {
        /// Model shape: qwen3-0.6b (Qwen/Qwen3-0.6B's config) or tiny (a 2-layer Qwen3 for tests).
        #[arg(long)]
        preset: String,
        /// Seed of the weights (same seed, same bytes on every machine).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Split into shards of at most this many MB (10^6 bytes) of tensor data, with
        /// model.safetensors.index.json.
        #[arg(long)]
        shard_mb: Option<u64>,
        /// Do not write tokenizer.json.
        #[arg(long)]
        no_tokenizer: bool,
        dir: PathBuf,
    },
    /// CPU reference forward pass of a checkpoint (f32 math over its bf16 weights): prefill
    /// logits and greedy continuations of prompts, written as the logits comparison file
    /// (schema: executor/src/model/comparison.rs) that scripts/hf_reference.py compares.
    /// Needs no GPU.
    Reference {
        /// Checkpoint folder.
        #[arg(long)]
        model: PathBuf,
        /// A prompt as text (needs the checkpoint's tokenizer.json); repeatable.
        #[arg(long)]
        prompt: Vec<String>,
        /// A prompt as token ids ("1,2,3"); repeatable.
        #[arg(long)]
        prompt_ids: Vec<String>,
        /// Tokens to generate greedily per prompt.
        #[arg(long, default_value_t = 16)]
        max_tokens: usize,
        /// The comparison JSON to write (logits files beside it).
        #[arg(long)]
        json: PathBuf,
        /// Which forward pass: `reference` (f32 math over the bf16 weights) or `executor`
        /// (the CUDA forward's bitwise CPU twin: bf16 activations, f32 accumulation, the
        /// numbers the GPU computes).
        #[arg(long, default_value = "reference", value_parser = ["reference", "executor"])]
        forward: String,
    },
    /// Greedy generation with the Qwen3 forward pass on the GPU, through the simulator's
    /// engine (scheduler, persistent batch, graph dispatch, n-gram drafter): prompts as
    /// token ids or a scenario file; prints the outputs and a summary (tokens/s, mean
    /// acceptance length, acceptance per draft position).
    Generate {
        /// Hugging Face checkpoint folder (config.json + model.safetensors).
        #[arg(long, conflicts_with = "random_model", required_unless_present = "random_model")]
        model: Option<PathBuf>,
        /// In-memory random weights instead of a checkpoint: `qwen3-0.6b` or `tiny`.
        #[arg(long)]
        random_model: Option<String>,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The prompt as comma-separated token ids.
        #[arg(long, value_delimiter = ',', num_args = 1.., action = clap::ArgAction::Append)]
        prompt_ids: Vec<u32>,
        /// A scenario file (its requests and engine config; its oracle is ignored).
        #[arg(long, conflicts_with = "prompt_ids")]
        scenario: Option<PathBuf>,
        #[arg(long, default_value_t = 64)]
        max_tokens: u32,
        /// n-gram drafts per step (0: no speculation).
        #[arg(long, default_value_t = 0)]
        num_speculative_tokens: u32,
        #[arg(long, default_value_t = 2)]
        prompt_lookup_min: u32,
        #[arg(long, default_value_t = 5)]
        prompt_lookup_max: u32,
        /// Run every step eagerly (no CUDA graphs).
        #[arg(long)]
        eager: bool,
        /// The poison probe: unwritten KV slots, the activation scratch and the logits
        /// rows hold NaN before every step; a correct run records the same trace as
        /// without it (compare the two with `specreplay diff`).
        #[arg(long)]
        poison: bool,
        /// The forward pass's kernels: `tensor` (tensor cores; the default where the model's
        /// K sizes are multiples of 32) or `fused` (CUDA cores: another order of the sums, so
        /// other logits bits; both batch invariant and matched bit for bit by the CPU twin);
        /// `unfused` and `fused-pdl` sum as `fused`. The trace header records the plan.
        #[arg(long)]
        kernels: Option<KernelPlan>,
        /// Record the run's trace, JSON only (its oracle: the greedy tokens sampled, so
        /// `specreplay replay` re-simulates it on any machine; its header: backend, device,
        /// checkpoint, module hashes and kernel plan; each step: every logits row's digest, top-1 token
        /// and logit, and top-1/top-2 margin, read back from the device).
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Qwen3 decode speed on a random-weight model: ms per decode step (FULL graph replay
    /// and whole engine step) at each batch size, and n-gram vs plain tokens/s at batch 1.
    #[command(hide = true)]
    BenchQwen {
        #[arg(long, default_value = "qwen3-0.6b")]
        random_model: String,
        #[arg(long, value_delimiter = ',', default_values_t = [1u32, 64])]
        batch: Vec<u32>,
        /// Decode steps timed through the engine per batch size.
        #[arg(long, default_value_t = 64)]
        steps: u32,
        /// Graph replays timed per batch size.
        #[arg(long, default_value_t = 200)]
        replays: usize,
        /// Kernel plans to time, each over every batch size (`tensor`, the default, `fused`,
        /// `fused-pdl`, `unfused`: see `KernelPlan`); the n-gram comparison runs with the first.
        #[arg(long, value_delimiter = ',', default_value = "tensor")]
        kernels: Vec<KernelPlan>,
        /// The tensor plan's launch choices to time (speed only: `default`, `base`, or
        /// `staged`, `prefetch`, `pdl`, `whole` joined by `+` in that order, e.g. `prefetch+pdl`,
        /// then optionally `+bulkN` / `+linesN` (L2 streaming) and `+mega` (steps of at most 8
        /// rows as the decode megakernel) or a timing probe `+mega:barriers`, `+mega:stream`,
        /// `+mega:products`, `+mega:copies`, `+mega:compute` (the megakernel with parts left out, to split its time; its values
        /// are not the model's) or `+mega:timeline` (the full megakernel, every block stamping each phase's end: prints
        /// each phase's time on the critical path and per block), `+mega:timeline-nap` (the same with naps between
        /// barrier polls), `+mega:timeline-twice` (the same with each layer's attention run twice), `+mega:timeline-evict` (the same with
        /// the weight copies evict-first in L2), `+mega-compact` / `+mega:timeline-compact` (the megakernel's entry with
        /// attention's rows staged in shared memory and summed by loops), `+mega-compact-evict` /
        /// `+mega:timeline-compact-evict` (that entry with evict-first weight copies), `+mega:timeline-poll` (that, with the
        /// grid barriers polled by thread 32 instead of the thread that issues the copies), `+mega:timeline-tiles` (that,
        /// with stamps inside the compact attention tiles), `+mega-compact-copywarp` / `+mega:timeline-copywarp` (the compact
        /// entry with evict-first copies issued by a copy warp), `+mega:timeline-tiles-copywarp` (both), `+mega-compact-earlyk` / `+mega:timeline-earlyk` /
        /// `+mega:timeline-tiles-earlyk` (the copy warp with attention's first K rows requested before RoPE); see `Launches`); the n-gram comparison runs with the
        /// first, which must not be a probe.
        #[arg(long, value_delimiter = ',', default_value = "default")]
        launches: Vec<Launches>,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The forward pass's GEMM tilings on a model preset's shapes: µs per launch, weight
    /// GB/s, TFLOP/s, each tiling checked bit-equal to `qwen_gemm`.
    #[command(hide = true)]
    BenchGemm {
        #[arg(long, default_value = "qwen3-0.6b")]
        random_model: String,
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 64])]
        rows: Vec<usize>,
        #[arg(long, default_value_t = 50)]
        launches: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Every kernel module compiled to sm_90 CUBIN into the kernel cache folder DIR, with
    /// NVRTC alone (no GPU, no driver): `scripts/gpu-check.sh build` fills `.gpu/kernels`
    /// here, so the device's calls load the CUBINs instead of compiling them (the cache key
    /// holds the source, the options, NVRTC's version and the architecture).
    #[command(hide = true)]
    CompileKernels { dir: PathBuf },
    /// Device time per graph replay (bookkeeping kernels, whole step, one-kernel floor)
    /// at batch 1, 32 and 256 with k = 3, and GPU vs CPU replay steps/s on TRACES.
    Bench {
        traces: Vec<PathBuf>,
        /// Replays per measured graph.
        #[arg(long, default_value_t = 2000)]
        replays: usize,
        /// Write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Runs a `gpu` command; `Err` is the one-line message of an exit-2 failure.
pub fn run(cmd: GpuCmd) -> Result<ExitCode, String> {
    run_exec(|| execute(cmd))
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ExecError {
    ExecError::Input(format!("{}: {e}", path.display()))
}

fn fail_line(what: &str, e: &RunError, repro: &str) {
    println!("FAIL {what}");
    println!("  {e}");
    println!("reproduce: {repro}");
}

fn execute(cmd: GpuCmd) -> Result<ExitCode, ExecError> {
    match cmd {
        GpuCmd::MakeCheckpoint { preset, seed, shard_mb, no_tokenizer, dir } => {
            let cfg = make::Preset::parse(&preset)?.config();
            let opts = make::MakeOptions {
                seed,
                shard_bytes: shard_mb.map(|mb| mb.saturating_mul(1_000_000)),
                tokenizer: !no_tokenizer,
                threads: 0,
            };
            let t0 = Instant::now();
            let rep = make::make_checkpoint(&cfg, &opts, &dir)?;
            let secs = t0.elapsed().as_secs_f64();
            let hash = Checkpoint::open_validated(&dir)?.hash()?;
            println!(
                "wrote {}: {} {} tensors, {} parameters, {} bytes in {} file(s){} in {secs:.1} s",
                dir.display(),
                cfg.architecture.hf_name(),
                rep.tensors,
                rep.parameters,
                rep.data_bytes,
                rep.files.len(),
                if rep.tokenizer { " + tokenizer.json" } else { "" },
            );
            println!("checkpoint sha256 {hash}");
            Ok(ExitCode::SUCCESS)
        }
        GpuCmd::Reference { model, prompt, prompt_ids, max_tokens, json, forward } => {
            let ck = Checkpoint::open_validated(&model)?;
            let tok = Tokenizer::open(&model)?;
            let cfg = ck.config().clone();
            let mut prompts: Vec<Prompt> = prompt.into_iter().map(Prompt::Text).collect();
            for p in &prompt_ids {
                prompts.push(Prompt::parse_ids(p)?);
            }
            if prompts.is_empty() {
                return Err(ExecError::Input("gpu reference: give at least one --prompt or --prompt-ids".into()));
            }
            let executor = forward == "executor";
            let (reference, weights) = if executor {
                (None, Some(load_weights(&model, &cfg)?))
            } else {
                (Some(Reference::new(&cfg, &ck)?), None)
            };
            let mut results = Vec::new();
            for p in &prompts {
                let ids = p.resolve(tok.as_ref(), cfg.vocab_size)?;
                let t0 = Instant::now();
                let (prefill_logits, gen) = match (&reference, &weights) {
                    (Some(r), _) => r.prefill_and_generate(&ids, max_tokens)?,
                    (None, Some(w)) => {
                        specreplay_executor::model::twin_prompt::prefill_and_generate(w.clone(), &ids, max_tokens)?
                    }
                    (None, None) => unreachable!("one forward pass is loaded"),
                };
                let (tokens, margins): (Vec<u32>, Vec<f32>) = gen.into_iter().unzip();
                let min_margin = margins.iter().copied().fold(f32::INFINITY, f32::min);
                println!(
                    "prompt of {} tokens: {} generated in {:.1} s, smallest margin {min_margin:.3e}",
                    ids.len(),
                    tokens.len(),
                    t0.elapsed().as_secs_f64()
                );
                results.push(comparison::PromptResult { ids, prefill_logits, tokens, margins });
            }
            let hash = ck.hash()?;
            let (source, dtype) = if executor {
                ("specreplay-executor-cpu-twin", "bf16-activations-f32-accumulation")
            } else {
                ("specreplay-cpu-reference", "f32-over-bf16")
            };
            comparison::write(&json, source, dtype, Some(&hash), cfg.vocab_size, &results)?;
            println!("wrote {}", json.display());
            Ok(ExitCode::SUCCESS)
        }
        GpuCmd::CompileKernels { dir } => {
            use specreplay_executor::kernels;
            let nvrtc = kernels::nvrtc_version()?;
            for m in kernels::MODULES.iter().chain(kernels::BUILDER_MODULES).chain([&kernels::MEGA_MODULE]) {
                let c = kernels::cubin_cached(m, Some(&dir))?;
                // cubin_cached only disables caching when it cannot write: here that is the
                // whole point, so a missing file is an error.
                let path = kernels::cache_path(m, &dir, nvrtc);
                if !path.is_file() {
                    return Err(io_err(&path, "could not write the compiled module"));
                }
                let how = if c.cached { "cached" } else { "compiled" };
                println!("module {:<14} sha256 {} ({how})", c.name, c.sha256);
            }
            Ok(ExitCode::SUCCESS)
        }
        GpuCmd::Info => {
            let dev = Device::open(0)?;
            print!("{}", dev.info);
            for (name, sha) in dev.module_hashes() {
                println!("module {name:<12} sha256 {sha}");
            }
            Ok(ExitCode::SUCCESS)
        }
        GpuCmd::Selftest { cases, random_rows, seed, json } => {
            let dev = Device::open(0)?;
            println!("{} (sm {}.{})", dev.info.name, dev.info.compute_capability.0, dev.info.compute_capability.1);
            // Progress on stderr with the wall time of each kernel's cases (the table on
            // stdout stays deterministic).
            let mut t = std::time::Instant::now();
            let rep = selftest::run_with_random(&dev, cases, random_rows, seed, &mut |row| {
                eprintln!(
                    "  {:<22} {:>8} cases {:>8} mismatches {:>8.2} s",
                    row.kernel,
                    row.cases,
                    row.mismatches,
                    t.elapsed().as_secs_f64()
                );
                t = std::time::Instant::now();
            })?;
            print!("{}", rep.table());
            if let Some(path) = json {
                crate::io::write_file(&path, (rep.json() + "\n").as_bytes()).map_err(ExecError::Input)?;
            }
            Ok(if rep.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        GpuCmd::Sim { scenario, output, variant } => {
            let variant = Variant::parse(&variant)?;
            let (sc, id) = crate::read_scenario(&scenario).map_err(|f| ExecError::Input(f.0))?;
            let dev = Device::open_variant(0, variant)?;
            let (mut t, stats) = match replay::run_on_gpu(&dev, &sc, Probe::None) {
                Ok(r) => r,
                Err(RunError::Exec(e)) => return Err(e),
                Err(e) => return Err(ExecError::Input(format!("{}: {e}", scenario.display()))),
            };
            if crate::encoding_for(&output) == Encoding::Bincode {
                replay::evidence_to_notes(&mut t);
            }
            crate::write_trace(&output, &[id], &t).map_err(|f| ExecError::Input(f.0))?;
            eprintln!(
                "wrote {} ({} steps; {} graphs captured, {} graph replays, {} eager steps)",
                output.display(),
                t.steps.len(),
                stats.captures,
                stats.replays.values().sum::<u64>(),
                stats.eager
            );
            Ok(ExitCode::SUCCESS)
        }
        GpuCmd::Replay { traces, model: Some(dir), .. } => replay_model_traces(&traces, &dir, true),
        GpuCmd::Replay { traces, poison, shadow_eager, variant, model: None } => {
            let variant = Variant::parse(&variant)?;
            let recorded: Vec<Trace> = traces
                .iter()
                .map(|p| crate::read_trace(p).map(|(t, _)| t).map_err(|f| ExecError::Input(f.0)))
                .collect::<Result<_, _>>()?;
            let dev = Device::open_variant(0, variant)?;
            let probe = if poison {
                Probe::Poison
            } else if shadow_eager {
                Probe::ShadowEager
            } else {
                Probe::None
            };
            let flag = match probe {
                Probe::Poison => " --poison",
                Probe::ShadowEager => " --shadow-eager",
                Probe::None => "",
            };
            let (mut failed, mut steps) = (0, 0usize);
            let t0 = Instant::now();
            for (path, rec) in traces.iter().zip(&recorded) {
                let repro = format!("specreplay gpu replay{flag} {}", path.display());
                let what = format!("{} (recorded by {}) vs GPU{flag}", path.display(), rec.recorded_by);
                let got = match replay::run_on_gpu(&dev, &rec.scenario(), probe) {
                    Ok((t, _)) => t,
                    Err(RunError::Exec(e)) => return Err(e),
                    Err(e) if e.is_divergence() => {
                        failed += 1;
                        fail_line(&what, &e, &repro);
                        continue;
                    }
                    Err(e) => return Err(ExecError::Input(format!("{}: {e}", path.display()))),
                };
                steps += got.steps.len();
                let rep = if poison {
                    diff::compare(&replay::real_rows_only(rec), &replay::real_rows_only(&got))
                } else {
                    diff::compare(rec, &got)
                };
                if rep.identical() {
                    let how = if poison { "real rows identical under poison" } else { "identical" };
                    println!("OK {}: {} steps {how}", path.display(), rec.steps.len());
                } else {
                    failed += 1;
                    crate::print_divergence(&rep, &what, &repro);
                }
            }
            if traces.len() > 1 {
                println!("identical: {}/{}", traces.len() - failed, traces.len());
            }
            let secs = t0.elapsed().as_secs_f64();
            eprintln!("gpu replay: {steps} steps in {secs:.3} s ({:.0} steps/s)", steps as f64 / secs.max(1e-9));
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        GpuCmd::Fuzz { n, seed, first, json, random, variant } => {
            let variant = Variant::parse(&variant)?;
            let dev = Device::open_variant(0, variant)?;
            let (mut same, mut cov, mut shown, mut random_rows) = (0u64, Coverage::default(), 0, 0usize);
            let flag = if random { " --random" } else { "" };
            for i in first..first + n {
                let sc = if random { replay::random_fuzz_scenario(seed, i) } else { replay::fuzz_scenario(seed, i) };
                let Some(sc) = sc else {
                    return Err(ExecError::Input(format!("fuzz scenario {i}: generator ran out of bytes")));
                };
                let cpu = engine::run(&sc);
                let gpu = replay::run_on_gpu(&dev, &sc, Probe::None);
                let verdict: Result<(), String> = match (&cpu, &gpu) {
                    (_, Err(RunError::Exec(e))) => return Err(ExecError::Input(format!("fuzz scenario {i}: {e}"))),
                    (Ok(c), Ok((g, _))) => {
                        cov.add(&c.trace);
                        random_rows += c.trace.steps.iter().map(|s| s.random_draws.0.len()).sum::<usize>();
                        let rep = diff::compare(&c.trace, g);
                        match rep.first {
                            None => Ok(()),
                            Some(d) => Err(format!(
                                "{} / {} / {}: CPU {} vs GPU {}",
                                d.step.map_or("header/outputs".into(), |s| format!("step {s}")),
                                d.request.unwrap_or_default(),
                                d.field,
                                d.expected,
                                d.actual
                            )),
                        }
                    }
                    (Err(c), Err(RunError::Sim(g))) if c == g => Ok(()),
                    (c, g) => Err(format!(
                        "CPU {} vs GPU {}",
                        c.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into()),
                        g.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into())
                    )),
                };
                match verdict {
                    Ok(()) => same += 1,
                    Err(msg) if shown < 5 => {
                        shown += 1;
                        println!("FAIL fuzz scenario {i}: {msg}");
                        println!("reproduce: specreplay gpu fuzz{flag} --seed {seed} --first {i} --n 1");
                    }
                    Err(_) => {}
                }
                if (i + 1 - first) % 100 == 0 {
                    eprintln!("gpu fuzz: {}/{n} run, {same} identical so far", i + 1 - first);
                }
            }
            println!("identical: {same}/{n}");
            if random {
                println!("random-mode rows verified on the device: {random_rows}");
            }
            println!(
                "scenarios with FULL steps: {}, PIECEWISE steps: {}, NONE steps: {}, preemption: {}, prefix-cache hits: {}",
                cov.full, cov.piecewise, cov.none, cov.preemption, cov.prefix_hits
            );
            if let Some(path) = json {
                let j = serde_json::json!({
                    "n": n, "seed": seed, "identical": same, "random": random, "random_rows": random_rows,
                    "full": cov.full, "piecewise": cov.piecewise, "none": cov.none,
                    "preemption": cov.preemption, "prefix_hits": cov.prefix_hits,
                });
                crate::io::write_file(&path, format!("{j}\n").as_bytes()).map_err(ExecError::Input)?;
            }
            Ok(if same == n { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        GpuCmd::Builders { cases, seed, bench_replays, only, json } => {
            let known = agreement::builder_names();
            if let Some(bad) = only.iter().find(|b| !known.contains(&b.as_str())) {
                return Err(ExecError::Input(format!("unknown builder {bad:?} (one of: {})", known.join(", "))));
            }
            let mut dev = Device::open(0)?;
            let mods = builders::load(&mut dev)?;
            println!("{} (sm {}.{})", dev.info.name, dev.info.compute_capability.0, dev.info.compute_capability.1);
            for m in &mods {
                println!("module {:<14} sha256 {}", m.name, m.sha256);
            }
            println!("agreement: {cases} random cases per correct kernel variant (seed {seed}), each replayed in a CUDA graph, whole buffers vs the simulator");
            print!("{}", agreement::header());
            let rows = agreement::run_only(agreement::Backend::Device(&dev), &only, cases, seed, &mut |r| {
                // Each row as it completes (a run cut short by a time limit keeps its rows).
                use std::io::Write as _;
                print!("{}", agreement::line(r));
                let _ = std::io::stdout().flush();
                tracing::info!(kernel = r.kv.builder, variant = r.kv.variant, seconds = r.seconds, phases = ?r.phases, "builder agreement");
            })?;
            print!("{}", agreement::details(&rows));
            let timings = if bench_replays > 0 { timing::run(&dev, bench_replays)? } else { Vec::new() };
            if !timings.is_empty() {
                println!("\nper CUDA-graph replay, median of {bench_replays} replays (CUDA events):");
                print!("{}", timing::table(&timings));
            }
            if let Some(path) = json {
                let j = serde_json::json!({
                    "device": dev.info.name,
                    "cases": cases,
                    "seed": seed,
                    "agreement": rows.iter().map(|r| serde_json::json!({
                        "kernel": r.kv.builder, "variant": r.kv.variant, "known_bad": r.kv.known_bad,
                        "cases": r.cases, "mismatches": r.mismatches, "raising": r.raising,
                        "model_mismatches": r.model_mismatches, "ok": r.ok(), "seconds": r.seconds,
                        "phases": {"generate": r.phases.generate, "pack": r.phases.pack,
                                   "device": r.phases.device, "check": r.phases.check},
                        "first_mismatch": r.first,
                    })).collect::<Vec<_>>(),
                    "timings": timings.iter().map(|t| serde_json::json!({
                        "graph": t.what, "variant": t.variant, "size": t.size, "replays": t.replays,
                        "median_us": t.median_us,
                    })).collect::<Vec<_>>(),
                });
                crate::io::write_file(&path, format!("{j}\n").as_bytes()).map_err(ExecError::Input)?;
            }
            Ok(if rows.iter().all(|r| r.ok()) { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        GpuCmd::Generate {
            model,
            random_model,
            seed,
            prompt_ids,
            scenario,
            max_tokens,
            num_speculative_tokens,
            prompt_lookup_min,
            prompt_lookup_max,
            eager,
            poison,
            kernels,
            trace,
        } => {
            let cfg = match (&model, random_model.as_deref()) {
                (_, Some(preset)) => preset_config(preset)?,
                (Some(dir), None) => load_config(dir)?,
                (None, None) => {
                    return Err(ExecError::Input("--model DIR or --random-model PRESET is required".into()))
                }
            };
            let (sc, id) = match &scenario {
                Some(path) => crate::read_scenario(path).map_err(|f| ExecError::Input(f.0))?,
                None => {
                    let spec = GenSpec {
                        max_tokens,
                        k: num_speculative_tokens,
                        min: prompt_lookup_min,
                        max: prompt_lookup_max,
                    };
                    (generate_scenario(&prompt_ids, &spec, cfg.max_position_embeddings)?, None)
                }
            };
            // A generation trace carries logits rows, which only JSON traces hold: refused
            // before any work.
            if let Some(path) = &trace {
                if crate::encoding_for(path) == Encoding::Bincode {
                    return Err(ExecError::Input(format!(
                        "--trace {}: a generation trace records logits rows, which only JSON traces hold (use a .json path)",
                        path.display()
                    )));
                }
            }
            // The weights (checked against the config) before the device: a bad checkpoint is
            // exit 2 on any machine.
            let (weights, checkpoint) = match (&model, random_model.as_deref()) {
                (_, Some(p)) => (
                    HostWeights::load(&cfg, &random_weights(&cfg, seed))?,
                    CheckpointInfo { source: format!("random {p} seed {seed}"), sha256: None },
                ),
                (Some(dir), None) => {
                    let hash = Checkpoint::open(dir)?.hash()?;
                    (load_weights(dir, &cfg)?, CheckpointInfo { source: dir.display().to_string(), sha256: Some(hash) })
                }
                (None, None) => unreachable!("checked above"),
            };
            let mut dev = Device::open(0)?;
            let mega_module = mega::load_module(&mut dev);
            let dev = dev;
            let mut qd = QwenDevice::new(&dev, &sc, &weights)?;
            if let Some(plan) = kernels {
                qd.set_kernels(plan)?;
            }
            qd.force_eager = eager;
            qd.record_logits = trace.is_some();
            if poison {
                qd.set_poison()?;
            }
            let mut progress = GenerationProgress::new(&sc);
            let mut steps = Vec::new();
            let t0 = Instant::now();
            let end = engine::run_with(&sc, Some(&mut qd), &mut |s| {
                progress.step(&s);
                steps.push(s);
                Ok(())
            })
            .map_err(|e| ExecError::Input(e.to_string()))?;
            let secs = t0.elapsed().as_secs_f64();
            progress.finish();
            let r = engine::RunResult { trace: Trace::recorded(&sc, steps, end.outputs), stats: end.stats };
            let generated: usize = r.trace.outputs.values().map(Vec::len).sum();
            for (req, out) in &r.trace.outputs {
                println!("{req}: {}", out.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
            }
            let st = &r.stats;
            let mean_len =
                if st.num_drafts > 0 { 1.0 + st.num_accepted_tokens as f64 / st.num_drafts as f64 } else { 1.0 };
            println!(
                "generated {generated} tokens in {} steps, {secs:.3} s ({:.1} tokens/s); mean acceptance length {mean_len:.3}; accepted per position {:?}; graphs captured {}, eager steps {}",
                r.trace.steps.len(),
                generated as f64 / secs.max(1e-9),
                st.accepted_per_pos,
                qd.stats.captures,
                qd.stats.eager
            );
            if let Some(path) = trace {
                let mut t = generation_trace(r.trace, &sc, &qd.greedy, &qd.logits);
                // The megakernel's module joins the header's modules when the run launched it.
                let mut modules = dev.module_hashes();
                if qd.model.mega_launches > 0 {
                    modules.extend(mega_module);
                }
                replay::mark_gpu(&mut t, &dev.info.name, &modules, dev.variant);
                t.checkpoint = JsonOnly(Some(checkpoint));
                t.kernels = JsonOnly(qd.kernels().name().to_string());
                crate::write_trace(&path, &[id], &t).map_err(|f| ExecError::Input(f.0))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        GpuCmd::BenchGemm { random_model, rows, launches, json } => {
            let cfg = preset_config(&random_model)?;
            let dev = Device::open(0)?;
            println!("{} | GEMM tilings on {random_model}'s shapes", dev.info.name);
            println!(
                "{:<13} {:>5} {:>6} {:>5} {:<22} {:>10} {:>8} {:>7} {:>6} {:>9}",
                "shape", "K", "N", "rows", "kernel", "us/launch", "GB/s", "TFLOP/s", "bits", "regs/lmem"
            );
            let table = specreplay_executor::model::gemm_bench::bench(&dev, &cfg, &rows, launches)?;
            let mut unequal = 0;
            for r in &table {
                unequal += usize::from(!r.equal);
                println!(
                    "{:<13} {:>5} {:>6} {:>5} {:<22} {:>10.2} {:>8.0} {:>7.2} {:>6} {:>5}/{:<3}",
                    r.shape,
                    r.k,
                    r.n,
                    r.rows,
                    r.kernel,
                    r.us_per_launch,
                    r.weight_gb_s,
                    r.tflops,
                    if r.equal { "equal" } else { "DIFFER" },
                    r.regs,
                    r.local_bytes
                );
            }
            let floors = specreplay_executor::model::gemm_bench::read_floor(&dev, &cfg, launches)?;
            for r in &floors {
                println!(
                    "read floor {:<13} {:>9} bytes {:>10.2} us/launch {:>8.0} GB/s (qwen_read_probe: the bytes only)",
                    r.shape, r.bytes, r.us_per_launch, r.gb_s
                );
            }
            if let Some(path) = json {
                let v = serde_json::json!({"device": dev.info.name, "rows": table, "read_floor": floors});
                crate::io::write_file(&path, format!("{v}\n").as_bytes()).map_err(ExecError::Input)?;
            }
            Ok(if unequal == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        GpuCmd::BenchQwen { random_model, batch, steps, replays, kernels, launches, json } => {
            let cfg = preset_config(&random_model)?;
            let mut dev = Device::open(0)?;
            if launches.iter().any(|l| l.mega.on()) {
                dev.load_extra(&[specreplay_executor::kernels::MEGA_MODULE])?;
            }
            let dev = dev;
            if launches.first().is_some_and(|l| l.mega.is_probe()) {
                return Err(ExecError::Input(
                    "--launches: the first entry runs the n-gram comparison and cannot be a +mega:PROBE timing probe"
                        .into(),
                ));
            }
            let t0 = Instant::now();
            let weights = HostWeights::load(&cfg, &random_weights(&cfg, 1))?;
            let gb = weights.bytes() as f64 / 1e9;
            println!(
                "{} | random {random_model} ({gb:.3} GB of bf16 weights, built in {:.1} s)",
                dev.info.name,
                t0.elapsed().as_secs_f64()
            );
            let mut rows = Vec::new();
            let first_launches = launches.first().copied().unwrap_or_default();
            let runs: Vec<(KernelPlan, Launches)> = kernels
                .iter()
                .flat_map(|&plan| {
                    let ls = if plan == KernelPlan::Tensor { launches.clone() } else { vec![Launches::DEFAULT] };
                    ls.into_iter().map(move |l| (plan, l))
                })
                .collect();
            for &(plan, launch) in &runs {
                println!("kernels {} launches {launch}", plan.name());
                if let Some(m) = mega::describe(&dev, &cfg, launch)? {
                    println!("  {m}");
                }
                println!("{:>6} {:>14} {:>16} {:>14}", "batch", "graph_ms_step", "engine_ms_step", "weights_GB/s");
                for &b in &batch {
                    let prompts: Vec<Vec<u32>> =
                        (0..b).map(|i| (0..32).map(|j| 1000 + 97 * i + 13 * j).collect()).collect();
                    let mut profile = Vec::new();
                    let mut timeline = None;
                    let mut run = |max_tokens: u32| -> Result<(f64, Option<f64>), ExecError> {
                        let sc = bench_scenario(&prompts, max_tokens, 0)?;
                        let mut qd = QwenDevice::new(&dev, &sc, &weights)?;
                        qd.set_kernels(plan)?;
                        qd.set_launches(launch);
                        let t = Instant::now();
                        engine::run_on(&sc, &mut qd).map_err(|e| ExecError::Input(e.to_string()))?;
                        let secs = t.elapsed().as_secs_f64();
                        let key = format!(
                            "FULL/{}",
                            qd.graph_keys()
                                .iter()
                                .filter_map(|k| k.strip_prefix("FULL/")?.parse::<usize>().ok())
                                .filter(|&s| s >= b as usize)
                                .min()
                                .unwrap_or(b as usize)
                        );
                        let g = if max_tokens > 8 { qd.time_graph(&key, replays).ok() } else { None };
                        // The timeline exists only where the step ran as the megakernel (at
                        // most MEGA_MAX_ROWS padded rows).
                        let padded = key.strip_prefix("FULL/").and_then(|n| n.parse::<usize>().ok());
                        if max_tokens > 8 && launch.mega.stamps() && padded.is_some_and(|n| n <= mega::MEGA_MAX_ROWS) {
                            timeline = Some(qd.model.mega_timeline(&dev)?);
                        }
                        if max_tokens > 8 {
                            profile = qd.profile_ops(4)?;
                        }
                        Ok((secs, g))
                    };
                    let (short, _) = run(8)?;
                    let (long, graph_ms) = run(8 + steps)?;
                    let engine_ms = (long - short) * 1e3 / f64::from(steps);
                    let g = graph_ms.unwrap_or(f64::NAN);
                    println!("{b:>6} {g:>14.3} {engine_ms:>16.3} {:>14.0}", gb / (g / 1e3));
                    let total: f64 = profile.iter().map(|(_, n, us)| *n as f64 * us).sum();
                    let mut ops = Vec::new();
                    for (kind, n, us) in &profile {
                        let ms = *n as f64 * us / 1e3;
                        println!(
                        "  profile batch {b:>3} {kind:<16} {n:>3} x {us:>8.2} us = {ms:>7.3} ms ({:>4.1}% of the ops' sum)",
                        100.0 * ms * 1e3 / total.max(1e-9)
                    );
                        ops.push(serde_json::json!({"op": kind, "launches": n, "us_per_launch": us}));
                    }
                    println!(
                    "  profile batch {b:>3} ops' sum {:.3} ms; graph step {g:.3} ms (the rest: bookkeeping, sampler, gaps between kernels)",
                    total / 1e3
                );
                    if timeline.is_none() && launch.mega.stamps() {
                        println!(
                            "  timeline batch {b:>3}: none (steps of more than {} padded rows launch per op)",
                            mega::MEGA_MAX_ROWS
                        );
                    }
                    if let Some(t) = &timeline {
                        println!(
                            "  timeline batch {b:>3}: {} blocks x {} layers, span {:.1} us, timer step {} ns, {:.3} cycles/ns",
                            t.blocks, t.layers, t.span_us, t.timer_step_ns, t.cycles_per_ns
                        );
                        for p in &t.phases {
                            println!(
                                "  timeline batch {b:>3} {:<52} critical {:>7.2} us  per block {:>7.2} us  first layer {:>7.2} us",
                                mega_timeline::label(p.phase, matches!(launch.mega, Mega::Probe(q) if q.tile_stamps())),
                                p.critical_us,
                                p.block_us,
                                p.first_us
                            );
                        }
                    }
                    rows.push(serde_json::json!({"kernels": plan, "launches": launch.to_string(), "batch": b, "graph_ms_per_step": g,
                    "engine_ms_per_step": engine_ms, "ops": ops, "timeline": timeline}));
                }
            }
            // n-gram speculation on a repetitive prompt vs plain decoding, batch 1.
            let rep: Vec<u32> = (0..64).map(|j| 500 + (j % 8)).collect();
            let mut tps = Vec::new();
            for k in [0u32, 3] {
                let sc = bench_scenario(std::slice::from_ref(&rep), 256, k)?;
                let mut qd = QwenDevice::new(&dev, &sc, &weights)?;
                qd.set_kernels(kernels.first().copied().unwrap_or_default())?;
                qd.set_launches(first_launches);
                let t = Instant::now();
                let r = engine::run_on(&sc, &mut qd).map_err(|e| ExecError::Input(e.to_string()))?;
                let secs = t.elapsed().as_secs_f64();
                let n: usize = r.trace.outputs.values().map(Vec::len).sum();
                println!(
                    "batch 1, k {k}: {n} tokens in {secs:.3} s = {:.1} tokens/s; acceptance {:?} of {} drafted",
                    n as f64 / secs,
                    r.stats.num_accepted_tokens,
                    r.stats.num_draft_tokens
                );
                tps.push((k, n as f64 / secs, r.trace.outputs));
            }
            println!("n-gram speed-up {:.2}x; outputs identical: {}", tps[1].1 / tps[0].1, tps[0].2 == tps[1].2);
            if let Some(path) = json {
                let j = serde_json::json!({"device": dev.info.name, "model": random_model, "weights_gb": gb, "decode": rows,
                    "ngram": {"plain_tokens_per_s": tps[0].1, "ngram_k3_tokens_per_s": tps[1].1, "identical": tps[0].2 == tps[1].2}});
                crate::io::write_file(&path, format!("{j}\n").as_bytes()).map_err(ExecError::Input)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        GpuCmd::Bench { traces, replays, json } => {
            let recorded: Vec<Trace> = traces
                .iter()
                .map(|p| crate::read_trace(p).map(|(t, _)| t).map_err(|f| ExecError::Input(f.0)))
                .collect::<Result<_, _>>()?;
            let dev = Device::open(0)?;
            println!("{}", dev.info.name);
            let timings = bench::graph_timings(&dev, &[1, 32, 256], 3, replays)?;
            println!("{:>6} {:>3} {:>16} {:>12} {:>12}", "batch", "k", "bookkeeping_us", "step_us", "floor_us");
            for t in &timings {
                println!(
                    "{:>6} {:>3} {:>16.2} {:>12.2} {:>12.2}",
                    t.batch, t.k, t.bookkeeping_us, t.step_us, t.floor_us
                );
            }
            // Replay throughput: the same scenarios on the CPU device and on the GPU.
            let (mut cpu_steps, mut gpu_steps) = (0usize, 0usize);
            let t0 = Instant::now();
            for (p, rec) in traces.iter().zip(&recorded) {
                let r = engine::run(&rec.scenario()).map_err(|e| io_err(p, e))?;
                cpu_steps += r.trace.steps.len();
            }
            let cpu_s = t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            for (p, rec) in traces.iter().zip(&recorded) {
                let (t, _) = replay::run_on_gpu(&dev, &rec.scenario(), Probe::None).map_err(|e| io_err(p, e))?;
                gpu_steps += t.steps.len();
            }
            let gpu_s = t0.elapsed().as_secs_f64();
            let rate = |steps: usize, s: f64| steps as f64 / s.max(1e-9);
            if !traces.is_empty() {
                println!(
                    "replay of {} traces: CPU {cpu_steps} steps in {cpu_s:.3} s ({:.0} steps/s), GPU {gpu_steps} steps in {gpu_s:.3} s ({:.0} steps/s)",
                    traces.len(),
                    rate(cpu_steps, cpu_s),
                    rate(gpu_steps, gpu_s)
                );
            }
            if let Some(path) = json {
                let rows: Vec<_> = timings
                    .iter()
                    .map(|t| {
                        serde_json::json!({"batch": t.batch, "k": t.k, "replays": t.replays,
                            "bookkeeping_us_median": t.bookkeeping_us, "step_us_median": t.step_us,
                            "one_kernel_floor_us_median": t.floor_us})
                    })
                    .collect();
                let j = serde_json::json!({
                    "device": dev.info.name,
                    "graph_replay": rows,
                    "replay": {"traces": traces.len(), "cpu_steps": cpu_steps, "cpu_seconds": cpu_s,
                        "cpu_steps_per_s": rate(cpu_steps, cpu_s), "gpu_steps": gpu_steps, "gpu_seconds": gpu_s,
                        "gpu_steps_per_s": rate(gpu_steps, gpu_s)},
                });
                crate::io::write_file(&path, format!("{j}\n").as_bytes()).map_err(ExecError::Input)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `specreplay explain BUILDER --variant V --device cuda`: the CPU explain's search and
/// minimization with each candidate evaluated on the GPU (exit 0 found, 1 none, 2 bad
/// input, 3 no CUDA driver).
pub fn explain_on_device(builder: &str, variant: &str, cases: u64, seed: u64) -> Result<ExitCode, String> {
    let run = || -> Result<ExitCode, ExecError> {
        // Unknown names are bad input (exit 2) before any device is needed.
        specreplay_sim::builders::search::explain(builder, variant, 0, seed).map_err(ExecError::Input)?;
        let mut dev = Device::open(0)?;
        builders::load(&mut dev)?;
        let e = builders::explain::explain(&dev, builder, variant, cases, seed)?;
        print!("{}", e.report);
        Ok(if e.found { ExitCode::SUCCESS } else { ExitCode::from(1) })
    };
    run_exec(run)
}

/// The config of a random-weight preset (`gpu generate --random-model`).
pub fn preset_config(name: &str) -> Result<ModelConfig, ExecError> {
    match name {
        "qwen3-0.6b" => Ok(ModelConfig::qwen3_0_6b()),
        "tiny" => Ok(tiny_config()),
        _ => Err(ExecError::Input(format!("unknown model preset {name:?} (expected qwen3-0.6b or tiny)"))),
    }
}

/// The architecture of the checkpoint in `dir` (`config.json`; one error line if it is
/// missing, malformed or an unknown architecture).
fn load_config(dir: &Path) -> Result<ModelConfig, ExecError> {
    Ok(Checkpoint::open(dir)?.config().clone())
}

/// The checkpoint's weights, every tensor checked against `cfg` (name, shape, dtype) before
/// any is used: a missing or wrong tensor is one error line.
fn load_weights(dir: &Path, cfg: &ModelConfig) -> Result<HostWeights, ExecError> {
    let ck = Checkpoint::open_validated(dir)?;
    HostWeights::load(cfg, &ck)
}

/// `replay --model DIR` (CPU twin) and `gpu replay --model DIR` (CUDA): each generation
/// trace's model re-run from the checkpoint and compared with the recording
/// (`model_replay`). Exit 0 all identical, 1 a divergence (printed with its cause).
pub fn replay_model(traces: &[PathBuf], dir: &Path, cuda: bool) -> Result<ExitCode, String> {
    run_exec(|| replay_model_traces(traces, dir, cuda))
}

/// Runs a `gpu` command body: a missing driver is exit 3 with its one line, any other
/// error is the exit-2 line.
fn run_exec(f: impl FnOnce() -> Result<ExitCode, ExecError>) -> Result<ExitCode, String> {
    match f() {
        Ok(code) => Ok(code),
        Err(e @ ExecError::NoDriver(_)) => {
            eprintln!("specreplay: error: {e}");
            Ok(ExitCode::from(EXIT_NO_DRIVER))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn replay_model_traces(traces: &[PathBuf], dir: &Path, cuda: bool) -> Result<ExitCode, ExecError> {
    let recorded: Vec<Trace> = traces
        .iter()
        .map(|p| crate::read_trace(p).map(|(t, _)| t).map_err(|f| ExecError::Input(f.0)))
        .collect::<Result<_, _>>()?;
    let ck = Checkpoint::open_validated(dir)?;
    for t in &recorded {
        model_replay::check_checkpoint(t, &ck)?;
    }
    let cfg = ck.config().clone();
    let dev = if cuda {
        let mut d = Device::open(0)?;
        mega::load_module(&mut d);
        Some(d)
    } else {
        None
    };
    let (cmd, on) = if cuda { ("gpu replay", "GPU") } else { ("replay", "CPU twin") };
    let mut same = 0;
    for (path, rec) in traces.iter().zip(&recorded) {
        let w = HostWeights::load(&cfg, &ck)?;
        let backend = match &dev {
            Some(d) => model_replay::Backend::Cuda(d),
            None => model_replay::Backend::CpuTwin,
        };
        let (got, rep) = model_replay::replay(rec, w, backend)?;
        let rows: usize = got.steps.iter().map(|s| s.logits.0.len()).sum();
        if rep.identical() {
            println!("OK {}: {} steps and {rows} logits rows identical ({on})", path.display(), got.steps.len());
            same += 1;
        } else {
            let what = format!("{} (recorded by {}) vs the model re-run ({on})", path.display(), rec.recorded_by);
            let repro = format!("specreplay {cmd} --model {} {}", dir.display(), path.display());
            crate::print_divergence(&rep, &what, &repro);
        }
    }
    if traces.len() > 1 {
        println!("identical: {same}/{}", traces.len());
    }
    Ok(if same == traces.len() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Generation limits of a prompt-ids run.
pub struct GenSpec {
    pub max_tokens: u32,
    pub k: u32,
    pub min: u32,
    pub max: u32,
}

/// The scenario of `gpu generate --prompt-ids ...`: one request per prompt, all arriving
/// at step 1, `max_model_len` = longest prompt + max_tokens + k + 1 (at most the model's
/// `max_position_embeddings`), vLLM's defaults otherwise.
pub fn generate_scenario(prompt_ids: &[u32], spec: &GenSpec, max_pos: usize) -> Result<Scenario, ExecError> {
    if prompt_ids.is_empty() {
        return Err(ExecError::Input("give --prompt-ids or --scenario".into()));
    }
    let len = prompt_ids.len() as u64 + u64::from(spec.max_tokens) + u64::from(spec.k) + 1;
    let mml = len.min(max_pos as u64);
    let speculative = if spec.k > 0 {
        format!(
            r#", "num_speculative_tokens": {}, "prompt_lookup_min": {}, "prompt_lookup_max": {}"#,
            spec.k, spec.min, spec.max
        )
    } else {
        String::new()
    };
    let json = format!(
        r#"{{"config": {{"max_model_len": {mml}{speculative}}}, "requests": [{{"req_id": "0", "prompt_token_ids": {prompt_ids:?}, "max_tokens": {}}}], "oracle": {{"kind": "synthetic", "seed": 0, "vocab_size": 2, "order": 1}}}}"#,
        spec.max_tokens
    );
    Scenario::from_json(&json).map_err(|e| ExecError::Input(format!("--prompt-ids: {e}")))
}

/// The benchmark scenario: one request per prompt, all at step 1, `max_tokens` each,
/// n-gram with `k` drafts (lookup 1..=4) when k > 0, vLLM's default capture sizes.
fn bench_scenario(prompts: &[Vec<u32>], max_tokens: u32, k: u32) -> Result<Scenario, ExecError> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let reqs: Vec<String> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| format!(r#"{{"req_id": "{i}", "prompt_token_ids": {p:?}, "max_tokens": {max_tokens}}}"#))
        .collect();
    let spec = if k > 0 {
        format!(r#", "num_speculative_tokens": {k}, "prompt_lookup_min": 1, "prompt_lookup_max": 4"#)
    } else {
        String::new()
    };
    let json = format!(
        r#"{{"config": {{"max_model_len": {}{spec}}}, "requests": [{}], "oracle": {{"kind": "synthetic", "seed": 0, "vocab_size": 2, "order": 1}}}}"#,
        longest + max_tokens + k + 8,
        reqs.join(", ")
    );
    Scenario::from_json(&json).map_err(|e| ExecError::Input(e.to_string()))
}

/// The progress bar of `gpu generate`: tokens generated (sampled tokens kept, each request
/// capped at its `max_tokens`) out of the requests' `max_tokens` summed, with tokens/s.
/// Drawn on stderr only when stderr is a terminal; hidden otherwise (logs, tests, CI), where
/// `tracing` stays the only log channel.
struct GenerationProgress {
    bar: indicatif::ProgressBar,
    /// Per request id: (tokens counted, max_tokens).
    counts: std::collections::BTreeMap<String, (u64, u64)>,
}

impl GenerationProgress {
    fn new(sc: &Scenario) -> Self {
        use std::io::IsTerminal;
        let total: u64 = sc.requests.iter().map(|r| u64::from(r.max_tokens)).sum();
        let bar = if std::io::stderr().is_terminal() {
            let style = indicatif::ProgressStyle::with_template(
                "generate [{bar:32}] {pos}/{len} tokens, {per_sec}, {elapsed_precise}",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            indicatif::ProgressBar::new(total).with_style(style)
        } else {
            indicatif::ProgressBar::hidden()
        };
        let counts = sc.requests.iter().map(|r| (r.req_id.clone(), (0, u64::from(r.max_tokens)))).collect();
        GenerationProgress { bar, counts }
    }

    /// Counts the tokens a recorded step kept (valid prefix of each sampler row).
    fn step(&mut self, s: &Step) {
        let mut added = 0;
        for (req, row) in s.batch_req_ids.iter().zip(&s.output_token_ids) {
            if let Some((n, max)) = self.counts.get_mut(req) {
                let kept = (row.iter().take_while(|&&t| t >= 0).count() as u64).min(*max - *n);
                *n += kept;
                added += kept;
            }
        }
        self.bar.inc(added);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
