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
use specreplay_executor::model::reference::Reference;
use specreplay_executor::model::tokenizer::{Prompt, Tokenizer};
use specreplay_executor::model::{comparison, make, Checkpoint};
use specreplay_executor::replay::{self, Coverage, RunError};
use specreplay_executor::{bench, selftest, ExecError};
use specreplay_sim::{diff, engine, Trace};

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
    /// record its trace; the notes say `backend: cuda`, the device and the module hashes.
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
    },
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
    match execute(cmd) {
        Ok(code) => Ok(code),
        Err(e @ ExecError::NoDriver(_)) => {
            eprintln!("specreplay: error: {e}");
            Ok(ExitCode::from(EXIT_NO_DRIVER))
        }
        Err(e) => Err(e.to_string()),
    }
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
        GpuCmd::Reference { model, prompt, prompt_ids, max_tokens, json } => {
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
            let reference = Reference::new(&cfg, &ck)?;
            let mut results = Vec::new();
            for p in &prompts {
                let ids = p.resolve(tok.as_ref(), cfg.vocab_size)?;
                let t0 = Instant::now();
                let (prefill_logits, gen) = reference.prefill_and_generate(&ids, max_tokens)?;
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
            comparison::write(
                &json,
                "specreplay-cpu-reference",
                "f32-over-bf16",
                Some(&hash),
                cfg.vocab_size,
                &results,
            )?;
            println!("wrote {}", json.display());
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
                std::fs::write(&path, rep.json() + "\n")
                    .map_err(|e| ExecError::Input(format!("{}: {e}", path.display())))?;
            }
            Ok(if rep.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        GpuCmd::Sim { scenario, output, variant } => {
            let variant = Variant::parse(&variant)?;
            let (sc, id) = crate::read_scenario(&scenario).map_err(|f| ExecError::Input(f.0))?;
            let dev = Device::open_variant(0, variant)?;
            let (t, stats) = match replay::run_on_gpu(&dev, &sc, Probe::None) {
                Ok(r) => r,
                Err(RunError::Exec(e)) => return Err(e),
                Err(e) => return Err(ExecError::Input(format!("{}: {e}", scenario.display()))),
            };
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
        GpuCmd::Replay { traces, poison, shadow_eager, variant } => {
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
                std::fs::write(&path, format!("{j}\n")).map_err(|e| io_err(&path, e))?;
            }
            Ok(if same == n { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        GpuCmd::Builders { cases, seed, bench_replays, json } => {
            let mut dev = Device::open(0)?;
            let mods = builders::load(&mut dev)?;
            println!("{} (sm {}.{})", dev.info.name, dev.info.compute_capability.0, dev.info.compute_capability.1);
            for m in &mods {
                println!("module {:<14} sha256 {}", m.name, m.sha256);
            }
            println!("agreement: {cases} random cases per correct kernel variant (seed {seed}), each replayed in a CUDA graph, whole buffers vs the simulator");
            print!("{}", agreement::header());
            let rows = agreement::run(agreement::Backend::Device(&dev), cases, seed, &mut |r| {
                // Each row as it completes (a run cut short by a time limit keeps its rows).
                use std::io::Write as _;
                print!("{}", agreement::line(r));
                let _ = std::io::stdout().flush();
                tracing::info!(kernel = r.kv.builder, variant = r.kv.variant, seconds = r.seconds, "builder agreement");
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
                        "first_mismatch": r.first,
                    })).collect::<Vec<_>>(),
                    "timings": timings.iter().map(|t| serde_json::json!({
                        "graph": t.what, "variant": t.variant, "size": t.size, "replays": t.replays,
                        "median_us": t.median_us,
                    })).collect::<Vec<_>>(),
                });
                std::fs::write(&path, format!("{j}\n")).map_err(|e| io_err(&path, e))?;
            }
            Ok(if rows.iter().all(|r| r.ok()) { ExitCode::SUCCESS } else { ExitCode::from(1) })
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
                std::fs::write(&path, format!("{j}\n")).map_err(|e| io_err(&path, e))?;
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
    match run() {
        Ok(code) => Ok(code),
        Err(e @ ExecError::NoDriver(_)) => {
            eprintln!("specreplay: error: {e}");
            Ok(ExitCode::from(EXIT_NO_DRIVER))
        }
        Err(e) => Err(e.to_string()),
    }
}
