//! The trace file: the recorded run (config, requests, oracle, every step's fields).
//!
//! This is the serialization boundary (engine internals are not `Serialize`). JSON is
//! the canonical, reviewable form; bincode (`.bin`) is a derived form for big traces,
//! behind a magic + version header. Maps keyed by request id are `BTreeMap`s so the
//! bytes never depend on hash order; no `skip`/`flatten`/`tag`/`untagged` attributes
//! are used, since bincode would silently lose data with them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{Config, OracleSpec, RequestSpec, Scenario};
use crate::error::TraceError;

/// The `format` member of every trace.
pub const FORMAT: &str = "specreplay-trace";
/// The only trace version this build reads and writes.
pub const VERSION: u32 = 1;
/// Magic bytes in front of a bincode trace.
pub const BIN_MAGIC: &[u8; 8] = b"SRTRACE\0";
/// Largest bincode payload accepted (guards fuzzed length prefixes).
pub const BIN_LIMIT: usize = 1 << 30;

/// A recorded run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    pub format: String,
    pub version: u32,
    /// Who produced it: `"specreplay-sim <version>"` or `"vllm 0.12.0"`.
    #[serde(default)]
    pub recorded_by: String,
    /// Free-form notes (for instance where a source print is inconsistent).
    #[serde(default)]
    pub notes: Vec<String>,
    pub config: Config,
    pub requests: Vec<RequestSpec>,
    pub oracle: OracleSpec,
    pub steps: Vec<Step>,
    /// Final output token ids per request.
    pub outputs: BTreeMap<String, Vec<u32>>,
}

impl Trace {
    /// A trace of `scenario` recorded by this simulator.
    pub fn recorded(scenario: &Scenario, steps: Vec<Step>, outputs: BTreeMap<String, Vec<u32>>) -> Trace {
        Trace {
            format: FORMAT.into(),
            version: VERSION,
            recorded_by: format!("specreplay-sim {}", env!("CARGO_PKG_VERSION")),
            notes: Vec::new(),
            config: scenario.config.clone(),
            requests: scenario.requests.clone(),
            oracle: scenario.oracle.clone(),
            steps,
            outputs,
        }
    }

    /// The scenario this trace was recorded from.
    pub fn scenario(&self) -> Scenario {
        Scenario { config: self.config.clone(), requests: self.requests.clone(), oracle: self.oracle.clone() }
    }
}

/// One engine step. In an idle step (no request waiting or running) only `step` and
/// `idle` are written; every other field holds its empty value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Step {
    /// 1-based engine step.
    pub step: u64,
    pub idle: bool,
    // ---- scheduler output (vllm/v1/core/sched/scheduler.py) ----
    pub num_scheduled_tokens: BTreeMap<String, u32>,
    pub total_num_scheduled_tokens: u32,
    pub scheduled_spec_decode_tokens: BTreeMap<String, Vec<u32>>,
    /// `num_computed_tokens` of each scheduled request before this step.
    pub num_computed_tokens: BTreeMap<String, u32>,
    pub preempted_req_ids: Vec<String>,
    /// Requests that finished in this step's `update_from_output`, in that order.
    pub finished_req_ids: Vec<String>,
    /// Block ids held by each scheduled request after this step's allocation.
    pub block_ids: BTreeMap<String, Vec<u32>>,
    /// Free blocks in the pool at the end of the step.
    pub num_free_blocks: u32,
    // ---- GPU model runner (vllm/v1/worker/gpu_model_runner.py) ----
    /// Persistent-batch row order: every per-request array below follows it.
    pub batch_req_ids: Vec<String>,
    /// `"NONE"`, `"PIECEWISE"` or `"FULL"`.
    pub cudagraph_mode: String,
    pub num_padded_tokens: u32,
    pub num_reqs_padded: u32,
    /// Common prefix length used by cascade attention this step (0 = not used).
    pub cascade_prefix_len: u32,
    /// `input_ids.gpu[:num_padded_tokens]`, stale tail included.
    pub input_ids: Vec<i64>,
    /// `positions.gpu[:num_padded_tokens]`, stale tail included.
    pub positions: Vec<i64>,
    pub logits_indices: Vec<i64>,
    pub num_sampled_tokens: Vec<u32>,
    pub attn: AttnMetadata,
    /// Sampler output rows in batch order, width max_spec_len + 1, -1 placeholders; a
    /// row whose sample is discarded (partial prefill) is all -1.
    pub output_token_ids: Vec<Vec<i64>>,
    /// Drafts proposed at the end of the step, one entry per batch row; empty when the
    /// drafter did not run (batch-wide gate, or no speculation).
    pub draft_token_ids: BTreeMap<String, Vec<u32>>,
    /// `token_ids_cpu` row of each batch request after sampling bookkeeping, up to the
    /// row's highest written position (stale entries included).
    pub token_ids_cpu: BTreeMap<String, Vec<i64>>,
    /// nano-vllm profile only: the `Context` of this step's forward pass.
    pub context: Option<NanoContext>,
}

/// FlashAttention metadata (`vllm/v1/attention/backends/flash_attn.py`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttnMetadata {
    pub cu_seqlens_q: Vec<i64>,
    pub max_seqlen_q: u32,
    pub seqused_k: Vec<i64>,
    pub max_seqlen_k: u32,
    pub block_table: Vec<Vec<i64>>,
    pub slot_mapping: Vec<i64>,
}

/// nano-vllm's `Context` (`nanovllm/utils/context.py`, built in `engine/model_runner.py`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NanoContext {
    pub is_prefill: bool,
    pub max_seqlen_q: u32,
    pub max_seqlen_k: u32,
    pub cu_seqlens_q: Option<Vec<i64>>,
    pub cu_seqlens_k: Option<Vec<i64>>,
    pub slot_mapping: Vec<i64>,
    pub context_lens: Option<Vec<i64>>,
    pub block_tables: Option<Vec<Vec<i64>>>,
}

fn check_header(format: &str, version: u32) -> Result<(), TraceError> {
    if format != FORMAT {
        return Err(TraceError::Format(format!("not a specreplay trace (format {format:?}, expected {FORMAT:?})")));
    }
    if version != VERSION {
        return Err(TraceError::Version { found: version, supported: VERSION });
    }
    Ok(())
}

/// Parses a JSON trace.
pub fn from_json(text: &str) -> Result<Trace, TraceError> {
    // Read the header first, so an unknown version is reported as such.
    #[derive(Deserialize)]
    struct Header {
        format: Option<String>,
        version: Option<u32>,
    }
    let header: Header = serde_json::from_str(text).map_err(|e| TraceError::Json(e.to_string()))?;
    check_header(header.format.as_deref().unwrap_or(""), header.version.unwrap_or(0))?;
    let trace: Trace = serde_json::from_str(text).map_err(|e| TraceError::Json(e.to_string()))?;
    Ok(trace)
}

/// Serializes a trace as canonical JSON: header members one per line, one line per step.
pub fn to_json(trace: &Trace) -> String {
    fn line<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).expect("trace types always serialize")
    }
    let mut out = String::from("{\n");
    out += &format!("  \"format\": {},\n", line(&trace.format));
    out += &format!("  \"version\": {},\n", trace.version);
    out += &format!("  \"recorded_by\": {},\n", line(&trace.recorded_by));
    out += &format!("  \"notes\": {},\n", line(&trace.notes));
    out += &format!("  \"config\": {},\n", line(&trace.config));
    out += &format!("  \"requests\": {},\n", line(&trace.requests));
    out += &format!("  \"oracle\": {},\n", line(&trace.oracle));
    out += "  \"steps\": [";
    for (i, step) in trace.steps.iter().enumerate() {
        out += if i == 0 { "\n    " } else { ",\n    " };
        if step.idle {
            out += &format!("{{\"step\":{},\"idle\":true}}", step.step);
        } else {
            out += &line(step);
        }
    }
    out += if trace.steps.is_empty() { "],\n" } else { "\n  ],\n" };
    out += &format!("  \"outputs\": {}\n", line(&trace.outputs));
    out += "}\n";
    out
}

/// Serializes a trace as bincode behind the `SRTRACE\0` + version header.
pub fn to_bincode(trace: &Trace) -> Vec<u8> {
    let mut out = BIN_MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    let body = bincode::serde::encode_to_vec(trace, bincode::config::standard()).expect("trace types always serialize");
    out.extend_from_slice(&body);
    out
}

/// Parses a bincode trace written by [`to_bincode`].
pub fn from_bincode(bytes: &[u8]) -> Result<Trace, TraceError> {
    if bytes.len() < 12 || &bytes[..8] != BIN_MAGIC {
        return Err(TraceError::Format("not a specreplay bincode trace (bad magic)".into()));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(TraceError::Version { found: version, supported: VERSION });
    }
    let config = bincode::config::standard().with_limit::<BIN_LIMIT>();
    let (trace, used): (Trace, usize) =
        bincode::serde::decode_from_slice(&bytes[12..], config).map_err(|e| TraceError::Bincode(e.to_string()))?;
    if used != bytes.len() - 12 {
        return Err(TraceError::Bincode(format!("{} trailing bytes", bytes.len() - 12 - used)));
    }
    check_header(&trace.format, trace.version)?;
    Ok(trace)
}

/// Parses trace bytes: bincode when they start with the magic, JSON otherwise.
pub fn from_bytes(bytes: &[u8]) -> Result<Trace, TraceError> {
    if bytes.starts_with(BIN_MAGIC) {
        return from_bincode(bytes);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| TraceError::Json(format!("not UTF-8: {e}")))?;
    from_json(text)
}

/// Reads a trace file (format chosen by content: bincode magic or JSON).
pub fn read(path: &Path) -> Result<Trace, TraceError> {
    let bytes = std::fs::read(path).map_err(|e| TraceError::Io(format!("{}: {e}", path.display())))?;
    from_bytes(&bytes)
}

/// Writes a trace atomically (temp file in the same directory, then rename); `.bin`
/// selects bincode, anything else JSON.
pub fn write(path: &Path, trace: &Trace) -> Result<(), TraceError> {
    let bytes =
        if path.extension().is_some_and(|e| e == "bin") { to_bincode(trace) } else { to_json(trace).into_bytes() };
    write_atomic(path, &bytes)
}

/// Writes bytes to `path` via a temporary sibling and a rename, so a reader never sees a
/// half-written file and a failed write leaves the old file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TraceError> {
    let io = |e: std::io::Error| TraceError::Io(format!("{}: {e}", path.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| TraceError::Io(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}
