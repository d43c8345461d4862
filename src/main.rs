//! The `specreplay` command line: record (`sim`), re-simulate and compare (`replay`),
//! compare two traces (`diff`), print (`show`), and search builder variants for
//! counterexamples (`explain`).
//!
//! Exit codes: 0 success / identical; 1 divergence found (replay, diff) or no
//! counterexample (explain); 2 bad input (one readable line on stderr).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use specreplay_sim::{diff, engine, trace, Scenario};

mod explain;
mod gpu;
mod show;

#[derive(Parser)]
#[command(name = "specreplay", version, about = "Deterministic record/replay/diff of speculative-decoding bookkeeping")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario and record its trace (`.bin` = bincode, else JSON).
    Sim {
        scenario: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// A note to store in the trace (repeatable).
        #[arg(long = "note")]
        notes: Vec<String>,
    },
    /// Re-simulate traces and compare every field (exit 1 if any diverges).
    Replay {
        #[arg(required = true)]
        traces: Vec<PathBuf>,
    },
    /// Compare two traces field by field (exit 1 when they differ).
    Diff { expected: PathBuf, actual: PathBuf },
    /// Print a trace step by step, with the run summary.
    Show { trace: PathBuf },
    /// Search a metadata builder variant for a minimized counterexample against its
    /// reference (exit 0 when one is found, 1 when none is).
    Explain {
        /// Builder name (see `--list`).
        #[arg(required_unless_present = "list")]
        builder: Option<String>,
        #[arg(long, required_unless_present = "list")]
        variant: Option<String>,
        /// Random cases to try before giving up.
        #[arg(long, default_value_t = 100_000)]
        cases: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// List every builder and variant.
        #[arg(long)]
        list: bool,
    },
    /// Re-encode a trace (`.bin` = bincode, else canonical JSON), e.g. to shrink a corpus.
    Convert { input: PathBuf, output: PathBuf },
    /// CUDA executor commands (exit 3 when this machine has no CUDA driver).
    Gpu {
        #[command(subcommand)]
        cmd: gpu::GpuCmd,
    },
}

/// A failure reported as one line with exit code 2.
struct Fail(String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

fn read_trace(path: &Path) -> Result<specreplay_sim::Trace, Fail> {
    trace::read(path).map_err(|e| match e {
        specreplay_sim::TraceError::Io(_) => Fail(e.to_string()),
        _ => Fail(format!("{}: {e}", path.display())),
    })
}

fn read_scenario(path: &Path) -> Result<Scenario, Fail> {
    let text = std::fs::read_to_string(path).map_err(|e| Fail(format!("{}: {e}", path.display())))?;
    let bytes_trace = trace::from_json(&text);
    if let Ok(t) = bytes_trace {
        return Ok(t.scenario());
    }
    Scenario::from_json(&text).map_err(|e| match e {
        specreplay_sim::ConfigError::Json(_) => Fail(format!("{}: {e}", path.display())),
        _ => Fail(e.to_string()),
    })
}

fn print_divergence(rep: &diff::Report, expected: &specreplay_sim::Trace, what: &str, repro: &str) {
    let d = rep.first.as_ref().expect("divergent");
    println!("FAIL {what}");
    let step = d.step.map_or("header/outputs".to_string(), |s| format!("step {s}"));
    let req = d.request.as_deref().map_or(String::new(), |r| format!(" / request {r:?}"));
    println!("first divergence: {step}{req} / {}", d.field);
    println!("  expected  {}", d.expected);
    println!("  actual    {}", d.actual);
    if let Some(line) = d.step.and_then(|s| diff::step_context(expected, s)) {
        println!("  {line}");
    }
    if rep.differing_in_first > 1 {
        println!("  {} more values differ there; later steps not compared", rep.differing_in_first - 1);
    }
    println!("reproduce: {repro}");
}

fn run(cli: Cli) -> Result<ExitCode, Fail> {
    match cli.cmd {
        Cmd::Sim { scenario, output, notes } => {
            let sc = read_scenario(&scenario)?;
            let mut res = engine::run(&sc)?;
            res.trace.notes = notes;
            trace::write(&output, &res.trace)?;
            eprintln!("wrote {} ({} steps)", output.display(), res.trace.steps.len());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Replay { traces } => {
            let mut failed = 0;
            for path in &traces {
                let recorded = read_trace(path)?;
                let res = engine::run(&recorded.scenario()).map_err(|e| Fail(format!("{}: {e}", path.display())))?;
                let rep = diff::compare(&recorded, &res.trace);
                if rep.identical() {
                    println!("OK {}: {} steps identical", path.display(), recorded.steps.len());
                } else {
                    failed += 1;
                    let what = format!("{} (recorded by {}) vs re-simulated", path.display(), recorded.recorded_by);
                    print_divergence(&rep, &recorded, &what, &format!("specreplay replay {}", path.display()));
                }
            }
            if traces.len() > 1 {
                println!("identical: {}/{}", traces.len() - failed, traces.len());
            }
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Diff { expected, actual } => {
            let (a, b) = (read_trace(&expected)?, read_trace(&actual)?);
            let rep = diff::compare(&a, &b);
            if rep.identical() {
                println!("identical: {} steps", a.steps.len());
                Ok(ExitCode::SUCCESS)
            } else {
                print_divergence(
                    &rep,
                    &a,
                    &format!("{} vs {}", expected.display(), actual.display()),
                    &format!("specreplay diff {} {}", expected.display(), actual.display()),
                );
                Ok(ExitCode::from(1))
            }
        }
        Cmd::Explain { builder, variant, cases, seed, list } => {
            if list {
                print!("{}", explain::list());
                return Ok(ExitCode::SUCCESS);
            }
            let (b, v) = (builder.unwrap_or_default(), variant.unwrap_or_default());
            let (found, report) = explain::explain(&b, &v, cases, seed).map_err(Fail)?;
            print!("{report}");
            Ok(if found { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Convert { input, output } => {
            let t = read_trace(&input)?;
            trace::write(&output, &t)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gpu { cmd } => gpu::run(cmd).map_err(Fail),
        Cmd::Show { trace: path } => {
            let t = read_trace(&path)?;
            print!("{}", show::render(&t));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Logs go to stderr through `tracing`, filtered by `RUST_LOG` (off by default): a span per
/// engine step, events for scheduling decisions, preemptions and graph dispatch.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    init_logging();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(Fail(msg)) => {
            eprintln!("specreplay: error: {msg}");
            ExitCode::from(2)
        }
    }
}
