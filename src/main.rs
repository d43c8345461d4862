//! The `specreplay` command line: record (`sim`), re-simulate and compare (`replay`),
//! compare two traces (`diff`), print (`show`), re-encode (`convert`), and search
//! builder variants for counterexamples (`explain`).
//!
//! Exit codes: 0 success / identical; 1 divergence found (replay, diff) or no
//! counterexample (explain); 2 bad input (one readable line on stderr per failure);
//! 130 / 143 interrupted by SIGINT / SIGTERM (no partial output left behind).
//!
//! Traces are streamed: `sim` writes each step as the engine produces it, and `replay`,
//! `diff`, `show` and `convert` read one step at a time.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use specreplay_sim::config::RequestSpec;
use specreplay_sim::diff::{self, Comparison};
use specreplay_sim::engine;
use specreplay_sim::trace::{self, Encoding, Header, Step, TraceReader, TraceWriter};
use specreplay_sim::{Scenario, SimError, Trace, TraceError};

mod explain;
mod gpu;
mod io;
mod show;

/// `println!` that does not panic when standard output is closed (`| head`): the
/// report is cut short, the exit status still says what happened.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod check;
mod export;
mod report;

#[derive(Parser)]
#[command(
    name = "specreplay",
    version,
    about = "Deterministic record/replay/diff of speculative-decoding bookkeeping",
    after_help = "Exit codes: 0 success or identical; 1 divergence (replay, diff) or no counterexample (explain); \
2 bad input or a run that cannot go on; 130/143 interrupted. `-` stands for standard input/output. \
Formats: README.md sections \"Scenario format\" and \"Trace format\"."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario and record its trace, step by step as it is produced.
    #[command(
        after_help = "SCENARIO is a scenario (README \"Scenario format\") or a trace, whose scenario is re-run. \
The output is written to a temporary file renamed into place when complete; a symbolic link, FIFO, device, \
read-only file or the input itself is never replaced. Exit codes: 0 recorded, 2 invalid scenario or a run \
that cannot go on (the line names the file and the cause), 130/143 interrupted."
    )]
    Sim {
        /// Scenario JSON (or a trace); `-` reads standard input.
        scenario: PathBuf,
        /// Trace to write: `.bin` = framed bincode, anything else canonical JSON; `-` writes JSON to standard output.
        #[arg(short, long)]
        output: PathBuf,
        /// A note to store in the trace (repeatable).
        #[arg(long = "note")]
        notes: Vec<String>,
    },
    /// Re-simulate traces and compare every field with the recording.
    #[command(after_help = "Each trace's scenario is re-run and every step compared as it is produced; the first \
divergence is reported by step, request and field path. Every trace is reported, even after a failure. \
Exit codes: the worst over all traces: 0 all identical, 1 a divergence, 2 a trace that cannot be read or \
re-run. Trace format: README \"Trace format\" (JSON or .bin, versions 1 and 2).")]
    Replay {
        /// Traces (JSON or .bin, detected by content); `-` reads one from standard input.
        #[arg(required = true)]
        traces: Vec<PathBuf>,
        /// Generation traces (`gpu generate --trace`): re-run the model from this checkpoint
        /// folder on the CPU twin of the GPU forward pass (no GPU needed; its sha256 must
        /// equal the recorded one) and compare steps, outputs and every logits row.
        #[arg(long, value_name = "DIR")]
        model: Option<PathBuf>,
    },
    /// Compare two traces field by field.
    #[command(after_help = "Walks the header (config, requests, oracle), then the steps in order, then the outputs, \
and reports the first difference. With --by-position, compares instead the logits rows that decided each \
request's kept tokens, per (request, position), for runs of the same requests under different schedules \
(speculation on and off, other batch mates, graph sizes, preemption): the batch-invariance check. \
Exit codes: 0 identical, 1 different, 2 a trace that cannot be read (or, with --by-position, no request and \
no logits rows in common). Trace format: README \"Trace format\".")]
    Diff {
        /// The reference trace (JSON or .bin); `-` reads standard input.
        expected: PathBuf,
        /// The trace compared with it (JSON or .bin); `-` reads standard input.
        actual: PathBuf,
        /// Compare the kept logits rows per (request, position), not the steps.
        #[arg(long)]
        by_position: bool,
    },
    /// Print a trace step by step, with the run summary.
    #[command(
        after_help = "A run of idle steps is printed as one line. --step, --request and --hide-idle narrow the \
log; the summary (steps, idle steps, preemptions, KV utilisation, acceptance) always covers the whole trace. \
Exit codes: 0 printed, 2 a trace that cannot be read, a bad --step range or an unknown --request. Trace format: \
README \"Trace format\"."
    )]
    Show {
        /// Trace (JSON or .bin); `-` reads standard input.
        trace: PathBuf,
        /// Only steps in this inclusive range: `A..B`, `A..`, `..B` or `N` (1-based).
        #[arg(long = "step", value_name = "A..B")]
        step: Option<String>,
        /// Only steps request ID takes part in (scheduled, in the batch, preempted or finished), its fields only.
        #[arg(long, value_name = "ID")]
        request: Option<String>,
        /// Leave idle steps out.
        #[arg(long)]
        hide_idle: bool,
    },
    /// Search a metadata builder variant for a minimized counterexample against its
    /// reference (exit 0 when one is found, 1 when none is).
    #[command(after_help = "Exit codes: 0 a counterexample found (printed, minimized), 1 none found in CASES \
random cases, 2 an unknown builder or variant (one error line). Builders and variants: --list and \
docs/builders.md; README \"Commands\". With --device cuda every candidate runs on the GPU \
(exit 3 without a CUDA driver).")]
    Explain {
        /// Builder name (see `--list`).
        #[arg(required_unless_present = "list")]
        builder: Option<String>,
        /// Variant of the builder to compare with its reference (see `--list`).
        #[arg(long, required_unless_present = "list")]
        variant: Option<String>,
        /// Random cases to try before giving up.
        #[arg(long, default_value_t = 100_000)]
        cases: u64,
        /// Seed of the random case generator (same seed, same search).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// List every builder and variant.
        #[arg(long)]
        list: bool,
        /// Where each candidate runs: `cpu` (the simulator's models) or `cuda` (the
        /// variant's kernel replayed in a CUDA graph on the GPU; exit 3 without a driver).
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        device: String,
    },
    /// Re-encode a trace (also upgrades version 1 to version 2).
    #[command(after_help = "Streams the input to the output one step at a time. The output is written to a \
temporary file renamed into place when complete; it may not be the input itself. Exit codes: 0 written, \
2 a trace that cannot be read or an output that cannot be written. Trace format: README \"Trace format\".")]
    Convert {
        /// Trace to read (JSON or .bin, version 1 or 2); `-` reads standard input.
        input: PathBuf,
        /// Trace to write: `.bin` = framed bincode, anything else canonical JSON; `-` writes JSON to standard output.
        output: PathBuf,
    },
    /// Report hazards in traces: stale drafts verified, padded KV writes, freed or shared blocks, ...
    #[command(
        after_help = "One line per finding (trace: step N: SEVERITY KIND: request \"ID\" FIELD: message), then \
a count per kind. Kinds (severity): stale-drafts-verified (warn), padded-slot-write, full-padded-row-live, \
position-over-max-model-len, acceptance-over-drafts, blocks-freed-while-running, block-shared-without-prefix-hit \
(error: states vLLM 0.12.0 never reaches), drafts-for-finished-request, drafter-gate-suppressed, stale-tail-read \
(info). Exit codes: 0 no denied kind found, 1 a kind given to --deny was found, 2 a trace that cannot be read \
(the other traces are still checked) or an unknown kind. README \"Hazard checks\"."
    )]
    Check {
        /// Traces (JSON or .bin, detected by content); `-` reads one from standard input.
        #[arg(required = true)]
        traces: Vec<PathBuf>,
        /// Kinds that make the exit status 1 when found (comma-separated, repeatable; `all` = every kind).
        #[arg(long, value_name = "KIND,...")]
        deny: Vec<String>,
        /// Print one JSON document (traces, findings, per-kind summary, denied kinds) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Export a trace for a timeline viewer (Chrome trace-event JSON for ui.perfetto.dev / chrome://tracing).
    #[command(after_help = "Tracks: engine steps (one slice per step, its fields as args; KV and token counters; \
hazards from `check` as instants), one track per persistent-batch row and one per request. Time is synthetic: step \
N starts at (N-1) x 1000 us. The output is written to a temporary file renamed into place when complete. Exit \
codes: 0 written, 2 a trace that cannot be read or an output that cannot be written. README \"Timeline export\".")]
    Export {
        /// Output format (only `perfetto`: Chrome trace-event JSON).
        #[arg(long, value_parser = ["perfetto"])]
        format: String,
        /// Trace (JSON or .bin); `-` reads standard input.
        trace: PathBuf,
        /// File to write (JSON); `-` writes to standard output.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write one self-contained HTML page showing a run (or two, with their first divergence).
    #[command(after_help = "The page has no script and loads nothing (inline CSS and SVG; a Content-Security-Policy \
forbids any fetch): a timeline of steps x persistent-batch rows (scheduled tokens, drafts accepted/rejected, graph \
mode and padding, arrivals, preemptions, finishes, hazards from `check`), per-position acceptance, the acceptance \
length histogram and KV blocks over steps. Long runs (over 400 steps or 48 rows) are bucketed. With two traces both \
are shown and the first divergence is highlighted. Exit codes: 0 written, 2 a trace that cannot be read or an \
output that cannot be written. README \"Run report\".")]
    Report {
        /// One trace, or two to compare (JSON or .bin); `-` reads one from standard input.
        #[arg(required = true, num_args = 1..=2)]
        traces: Vec<PathBuf>,
        /// HTML file to write; `-` writes to standard output.
        #[arg(short, long)]
        output: PathBuf,
    },
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

/// Largest scenario file read (scenarios are small; this stops an endless input).
const SCENARIO_LIMIT: u64 = 64 << 20;

fn at(path: &Path, e: impl std::fmt::Display) -> Fail {
    Fail(format!("{}: {e}", path.display()))
}

/// A trace being read from a file or standard input.
type Reader = TraceReader<Box<dyn std::io::Read>>;

fn open_trace(path: &Path) -> Result<(Reader, Option<io::Identity>), Fail> {
    let (input, id) = io::open_input(path).map_err(Fail)?;
    Ok((TraceReader::new(input).map_err(|e| at(path, e))?, id))
}

/// A scenario file, or the scenario of a trace (whose problems are reported as trace
/// problems: format, version). A bincode trace is read only up to its header; a JSON
/// input is read whole, up to [`SCENARIO_LIMIT`].
fn read_scenario(path: &Path) -> Result<(Scenario, Option<io::Identity>), Fail> {
    let (input, id) = io::open_input(path).map_err(Fail)?;
    let mut input = std::io::BufReader::new(input);
    let head = std::io::BufRead::fill_buf(&mut input).map_err(|e| at(path, io::io_reason(&e)))?;
    if head.starts_with(&trace::BIN_MAGIC[..4]) {
        let reader = TraceReader::new(input).map_err(|e| at(path, format!("{e} (given as a trace)")))?;
        return Ok((reader.header().scenario(), id));
    }
    let bytes = io::read_capped(path, &mut input, SCENARIO_LIMIT).map_err(Fail)?;
    let sc = if trace::looks_like_trace(&bytes) {
        TraceReader::new(&bytes[..]).map_err(|e| at(path, format!("{e} (given as a trace)")))?.header().scenario()
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|e| at(path, format!("malformed scenario: not UTF-8: {e}")))?;
        Scenario::from_json(text).map_err(|e| at(path, e))?
    };
    Ok((sc, id))
}

/// A whole trace in memory (the GPU commands, which re-run it as a unit).
fn read_trace(path: &Path) -> Result<(Trace, Option<io::Identity>), Fail> {
    let (mut reader, id) = open_trace(path)?;
    let header = reader.header().clone();
    let mut steps = Vec::new();
    while let Some(s) = reader.next_step().map_err(|e| at(path, e))? {
        steps.push(s);
    }
    let outputs = reader.finish().map_err(|e| at(path, e))?;
    Ok((Trace::from_parts(header, steps, outputs), id))
}

/// Writes a whole trace through the guarded output path (never over an input, a link or
/// a special file; temp file + rename).
fn write_trace(output: &Path, inputs: &[Option<io::Identity>], t: &Trace) -> Result<(), Fail> {
    let out = io::create_output(output, inputs).map_err(Fail)?;
    let write_err = |e: std::io::Error| at(output, format!("cannot write: {}", io::io_reason(&e)));
    let mut w = TraceWriter::new(out, encoding_for(output), &t.header()).map_err(write_err)?;
    for s in &t.steps {
        w.push(s).map_err(write_err)?;
    }
    w.finish(&t.outputs).map_err(write_err)?.commit().map_err(Fail)?;
    Ok(())
}

fn encoding_for(path: &Path) -> Encoding {
    if io::is_stdio(path) {
        Encoding::Json
    } else {
        Encoding::for_path(path)
    }
}

fn print_divergence(rep: &diff::Report, what: &str, repro: &str) {
    let d = rep.first.as_ref().expect("divergent");
    out!("FAIL {what}");
    let step = d.step.map_or("header/outputs".to_string(), |s| format!("step {s}"));
    let req = d.request.as_deref().map_or(String::new(), |r| format!(" / request {r:?}"));
    out!("first divergence: {step}{req} / {}", d.field);
    out!("  expected  {}", d.expected);
    out!("  actual    {}", d.actual);
    if let Some(line) = &rep.context {
        out!("  {line}");
    }
    if let Some(cause) = &rep.cause {
        out!("  cause: {cause}");
    }
    if rep.differing_in_first > 1 {
        out!("  {} more values differ there; later steps not compared", rep.differing_in_first - 1);
    }
    out!("reproduce: {repro}");
}

/// Drains a reader, returning how many steps it held in all.
fn count_rest<R: std::io::Read>(r: &mut TraceReader<R>, path: &Path) -> Result<u64, Fail> {
    while r.next_step().map_err(|e| at(path, e))?.is_some() {}
    Ok(r.steps_read())
}

/// Re-simulates one trace, comparing each produced step with the next recorded one.
/// `Ok(true)` identical, `Ok(false)` diverged (reported on stdout).
fn replay_one(path: &Path) -> Result<bool, Fail> {
    let (mut reader, _) = open_trace(path)?;
    let scenario = reader.header().scenario();
    let recorded_by = reader.header().recorded_by.clone();
    let mut cmp = Comparison::new();
    let mut read_error: Option<TraceError> = None;
    let mut recorded_ended = false;
    let mut produced = 0u64;
    let run = engine::run_with(&scenario, None, &mut |s: Step| {
        produced += 1;
        if recorded_ended {
            return Ok(());
        }
        match reader.next_step() {
            Ok(Some(e)) if cmp.step(&e, &s) => Ok(()),
            Ok(Some(_)) => Err(SimError::Sink("diverged".into())),
            Ok(None) => {
                recorded_ended = true;
                Ok(())
            }
            Err(e) => {
                read_error = Some(e);
                Err(SimError::Sink("unreadable".into()))
            }
        }
    });
    if let Some(e) = read_error {
        return Err(at(path, e));
    }
    match run {
        Err(SimError::Sink(_)) if cmp.diverged() => {}
        Err(e) => return Err(at(path, e)),
        Ok(end) => {
            let go_on = if recorded_ended {
                cmp.step_counts(reader.steps_read(), produced, None)
            } else {
                match reader.next_step().map_err(|e| at(path, e))? {
                    None => true,
                    Some(extra) => {
                        let total = count_rest(&mut reader, path)?;
                        cmp.step_counts(total, produced, Some(&extra))
                    }
                }
            };
            if go_on {
                let outputs = reader.finish().map_err(|e| at(path, e))?;
                cmp.outputs(&outputs, &end.outputs);
            }
        }
    }
    let rep = cmp.finish();
    if rep.identical() {
        out!("OK {}: {} steps identical", path.display(), produced);
        return Ok(true);
    }
    let what = format!("{} (recorded by {recorded_by}) vs re-simulated", path.display());
    print_divergence(&rep, &what, &format!("specreplay replay {}", path.display()));
    Ok(false)
}

fn diff_traces(expected: &Path, actual: &Path) -> Result<ExitCode, Fail> {
    let (mut re, _) = open_trace(expected)?;
    let (mut ra, _) = open_trace(actual)?;
    let mut cmp = Comparison::new();
    let mut same = cmp.header(re.header(), ra.header());
    while same {
        let e = re.next_step().map_err(|e| at(expected, e))?;
        let a = ra.next_step().map_err(|e| at(actual, e))?;
        match (e, a) {
            (Some(e), Some(a)) => same = cmp.step(&e, &a),
            (None, None) => break,
            (Some(extra), None) => {
                let total = count_rest(&mut re, expected)?;
                same = cmp.step_counts(total, ra.steps_read(), Some(&extra));
            }
            (None, Some(_)) => {
                let total = count_rest(&mut ra, actual)?;
                same = cmp.step_counts(re.steps_read(), total, None);
            }
        }
    }
    if same {
        let steps = re.steps_read();
        let oe = re.finish().map_err(|e| at(expected, e))?;
        let oa = ra.finish().map_err(|e| at(actual, e))?;
        if cmp.outputs(&oe, &oa) {
            out!("identical: {steps} steps");
            return Ok(ExitCode::SUCCESS);
        }
    }
    print_divergence(
        &cmp.finish(),
        &format!("{} vs {}", expected.display(), actual.display()),
        &format!("specreplay diff {} {}", expected.display(), actual.display()),
    );
    Ok(ExitCode::from(1))
}

/// Reads a whole trace's kept logits rows ([`trace::kept_rows`]) and its requests.
fn kept_rows(path: &Path) -> Result<(trace::kept_rows::KeptRows, Vec<RequestSpec>), Fail> {
    let (mut r, _) = open_trace(path)?;
    let requests = r.header().requests.clone();
    let mut kept = trace::kept_rows::KeptRows::new();
    while let Some(s) = r.next_step().map_err(|e| at(path, e))? {
        kept.add_step(&s).map_err(|e| at(path, e))?;
    }
    let outputs = r.finish().map_err(|e| at(path, e))?;
    let prompt_lens = requests.iter().map(|q| (q.req_id.clone(), q.prompt_token_ids.len())).collect();
    kept.trim_to_outputs(&outputs, &prompt_lens).map_err(|e| at(path, e))?;
    Ok((kept, requests))
}

/// `diff --by-position`: the batch-invariance comparison of two runs of the same requests.
fn diff_by_position(expected: &Path, actual: &Path) -> Result<ExitCode, Fail> {
    let (ke, re) = kept_rows(expected)?;
    let (ka, ra) = kept_rows(actual)?;
    for e in &re {
        if let Some(a) = ra.iter().find(|a| a.req_id == e.req_id) {
            if a.prompt_token_ids != e.prompt_token_ids {
                return Err(Fail(format!(
                    "{} vs {}: request {} has different prompts in the two traces",
                    expected.display(),
                    actual.display(),
                    e.req_id
                )));
            }
        }
    }
    let results = trace::kept_rows::compare(&ke, &ka);
    let rows: usize = results.iter().map(|c| c.compared).sum();
    if rows == 0 {
        return Err(Fail(format!(
            "{} vs {}: no request has kept logits rows in both traces (are both recorded by a model run, \
             with the same request ids?)",
            expected.display(),
            actual.display()
        )));
    }
    let mut same = true;
    for c in &results {
        out!("{c}");
        same &= c.first_difference.is_none();
    }
    for (path, k) in [(expected, &ke), (actual, &ka)] {
        for r in k.recomputed() {
            same = false;
            out!(
                "{}: {} position {} recomputed with another row: step {} digest {}, step {} digest {}",
                path.display(),
                r.req_id,
                r.position,
                r.first.step,
                r.first.row.digest,
                r.again.step,
                r.again.row.digest
            );
        }
    }
    if same {
        out!("identical by position: {} requests, {rows} kept logits rows", results.len());
        Ok(ExitCode::SUCCESS)
    } else {
        out!("reproduce: specreplay diff --by-position {} {}", expected.display(), actual.display());
        Ok(ExitCode::from(1))
    }
}

fn sim(scenario: &Path, output: &Path, notes: Vec<String>) -> Result<ExitCode, Fail> {
    let (sc, id) = read_scenario(scenario)?;
    sc.validate().map_err(|e| at(scenario, e))?;
    let out = io::create_output(output, &[id]).map_err(Fail)?;
    let mut header = Header::recorded(&sc);
    header.notes = notes;
    let write_err = |e: std::io::Error| at(output, format!("cannot write: {}", io::io_reason(&e)));
    let mut w = TraceWriter::new(out, encoding_for(output), &header).map_err(write_err)?;
    let mut failed: Option<std::io::Error> = None;
    let run = engine::run_with(&sc, None, &mut |s| {
        w.push(&s).map_err(|e| {
            failed = Some(e);
            SimError::Sink("write failed".into())
        })
    });
    if let Some(e) = failed {
        return Err(write_err(e));
    }
    let end = run.map_err(|e| at(scenario, e))?;
    let steps = w.steps_written();
    w.finish(&end.outputs).map_err(write_err)?.commit().map_err(Fail)?;
    eprintln!("wrote {} ({steps} steps)", output.display());
    Ok(ExitCode::SUCCESS)
}

fn convert(input: &Path, output: &Path) -> Result<ExitCode, Fail> {
    let (mut reader, id) = open_trace(input)?;
    let out = io::create_output(output, &[id]).map_err(Fail)?;
    let write_err = |e: std::io::Error| at(output, format!("cannot write: {}", io::io_reason(&e)));
    let mut w = TraceWriter::new(out, encoding_for(output), reader.header()).map_err(write_err)?;
    while let Some(s) = reader.next_step().map_err(|e| at(input, e))? {
        w.push(&s).map_err(write_err)?;
    }
    let outputs = reader.finish().map_err(|e| at(input, e))?;
    w.finish(&outputs).map_err(write_err)?.commit().map_err(Fail)?;
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> Result<ExitCode, Fail> {
    match cli.cmd {
        Cmd::Sim { scenario, output, notes } => sim(&scenario, &output, notes),
        Cmd::Replay { traces, model: Some(dir) } => gpu::replay_model(&traces, &dir, false).map_err(Fail),
        Cmd::Replay { traces, model: None } => {
            // Every trace is reported; the exit status is the worst (2 > 1 > 0).
            let (mut identical, mut worst) = (0, 0u8);
            for path in &traces {
                match replay_one(path) {
                    Ok(true) => identical += 1,
                    Ok(false) => worst = worst.max(1),
                    Err(Fail(msg)) => {
                        eprintln!("specreplay: error: {msg}");
                        worst = 2;
                    }
                }
            }
            if traces.len() > 1 {
                out!("identical: {identical}/{}", traces.len());
            }
            Ok(ExitCode::from(worst))
        }
        Cmd::Diff { expected, actual, by_position: false } => diff_traces(&expected, &actual),
        Cmd::Diff { expected, actual, by_position: true } => diff_by_position(&expected, &actual),
        Cmd::Explain { builder, variant, cases, seed, list, device } => {
            if list {
                print!("{}", explain::list());
                return Ok(ExitCode::SUCCESS);
            }
            let (b, v) = (builder.unwrap_or_default(), variant.unwrap_or_default());
            if device == "cuda" {
                return gpu::explain_on_device(&b, &v, cases, seed).map_err(Fail);
            }
            let (found, report) = explain::explain(&b, &v, cases, seed).map_err(Fail)?;
            print!("{report}");
            Ok(if found { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Convert { input, output } => convert(&input, &output),
        Cmd::Gpu { cmd } => gpu::run(cmd).map_err(Fail),
        Cmd::Check { traces, deny, json } => check::run(&traces, &deny, json),
        Cmd::Report { traces, output } => report::run(&traces, &output).map(|()| ExitCode::SUCCESS),
        Cmd::Export { format: _, trace, output } => {
            let steps = export::perfetto(&trace, &output)?;
            tracing::info!(steps, "exported {}", output.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { trace: path, step, request, hide_idle } => {
            let steps = step.as_deref().map(show::Filter::parse_steps).transpose().map_err(Fail)?;
            let (reader, _) = open_trace(&path)?;
            if let Some(r) = &request {
                if !reader.header().requests.iter().any(|x| &x.req_id == r) {
                    return Err(at(&path, format!("--request: no request {r:?} in this trace")));
                }
            }
            let filter = show::Filter { steps, request, hide_idle };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            // A reader that stops early (`| head`) ends the listing quietly.
            let stdout_err = |e: std::io::Error| match e.kind() {
                std::io::ErrorKind::BrokenPipe => Ok(()),
                _ => Err(Fail(format!("standard output: {}", io::io_reason(&e)))),
            };
            match show::render(reader, &mut out, &filter) {
                Ok(()) => std::io::Write::flush(&mut out).or_else(stdout_err)?,
                Err(show::ShowError::Trace(e)) => return Err(at(&path, e)),
                Err(show::ShowError::Write(e)) => stdout_err(e)?,
            }
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
    let cli = Cli::parse();
    if let Err(msg) = io::install_signal_cleanup() {
        eprintln!("specreplay: error: {msg}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(code) => code,
        Err(Fail(msg)) => {
            eprintln!("specreplay: error: {msg}");
            ExitCode::from(2)
        }
    }
}
