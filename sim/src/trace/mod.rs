//! The trace file: the recorded run (config, requests, oracle, every step's fields).
//!
//! This is the serialization boundary (engine internals are not `Serialize`). JSON is
//! the canonical, reviewable form; bincode (`.bin`) is a derived form for big traces,
//! behind a magic + version header. Maps keyed by request id are `BTreeMap`s so the
//! bytes never depend on hash order; no `skip`/`flatten`/`tag`/`untagged` attributes
//! are used on the serialized types, since bincode would silently lose data with them —
//! with two exceptions, [`Step::random_draws`] ([`RandomRows`]) and the model evidence
//! ([`evidence`]: header `backend`, `device`, `checkpoint`, `module_hashes`, per-step
//! [`Step::logits`]), whose types write nothing to bincode when empty and refuse to be
//! written there otherwise.
//!
//! Traces are written and read *streaming* ([`TraceWriter`], [`TraceReader`]): one step
//! at a time, so memory is bounded by one step, not by the run.
//!
//! ## Version 2 (written by this build)
//!
//! * JSON: the header members (`format`, `version`, `recorded_by`, `notes`, `config`,
//!   `requests`, `oracle`) one per line, then `"steps": [` with one step per line, then
//!   `outputs`. A run of consecutive idle steps is one element
//!   `{"step": FIRST, "idle": true, "through": LAST}` (a single idle step omits
//!   `through`, as in version 1). Readers need the header members before `steps`.
//! * bincode: `SRTRACE\0`, the version as `u32` little-endian, then frames: a `u32`
//!   little-endian payload length and one bincode-encoded record ([`bin`]): the header,
//!   then steps and idle ranges in order, then an end record holding the outputs.
//!
//! ## Version 1 (still read)
//!
//! The same JSON without `through`; bincode: the magic, the version, then the whole
//! [`Trace`] as one bincode value. Reading a version-1 file gives the in-memory
//! version-2 form ([`VERSION`]); `specreplay convert` re-encodes it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{Config, OracleSpec, RequestSpec, Scenario};
use crate::cudagraph::GraphMode;
use crate::error::TraceError;

pub mod bin;
pub mod evidence;
pub mod json;
pub mod kept_rows;
pub mod schema;
mod stream;

pub use evidence::{CheckpointInfo, Digest, JsonOnly, LogitsRow, F32};
pub use stream::{TraceReader, TraceWriter};

/// The `format` member of every trace.
pub const FORMAT: &str = "specreplay-trace";
/// The trace version this build writes.
pub const VERSION: u32 = 2;
/// The oldest trace version this build reads.
pub const OLDEST_VERSION: u32 = 1;
/// Magic bytes in front of a bincode trace.
pub const BIN_MAGIC: &[u8; 8] = b"SRTRACE\0";
/// Largest bincode payload accepted: a whole version-1 trace, or one version-2 frame
/// (guards fuzzed length prefixes).
pub const BIN_LIMIT: usize = 1 << 30;
/// Largest JSON value accepted for one header member or one step (bounds what a
/// hostile or endless input can make the reader buffer).
pub const JSON_VALUE_LIMIT: usize = 1 << 30;
/// Most steps a trace may hold (idle ranges expanded): the engine's own step limit.
pub const MAX_TRACE_STEPS: u64 = crate::engine::MAX_STEPS;

/// A recorded run, held in memory (tests and small tools; the CLI streams instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
    /// Where a model run executed: `"cuda"` (the GPU executor) or `"cpu-twin"` (its
    /// bitwise CPU twin); absent in simulator traces ([`evidence`]).
    #[serde(default, skip_serializing_if = "JsonOnly::is_empty")]
    pub backend: JsonOnly<String>,
    /// The device's name (`"NVIDIA H200"`); absent in simulator traces.
    #[serde(default, skip_serializing_if = "JsonOnly::is_empty")]
    pub device: JsonOnly<String>,
    /// The model weights; absent in simulator traces.
    #[serde(default, skip_serializing_if = "JsonOnly::is_empty")]
    pub checkpoint: JsonOnly<Option<CheckpointInfo>>,
    /// sha256 of each compiled device module (CUBIN), by module name; absent in simulator traces.
    #[serde(default, skip_serializing_if = "JsonOnly::is_empty")]
    pub module_hashes: JsonOnly<BTreeMap<String, String>>,
    /// The forward pass's kernel plan (`fused`, `tensor`, ...), which fixes the order of
    /// its sums and so its logits bits; absent in simulator traces and in model traces made
    /// before it was recorded (those used the CUDA-core order).
    #[serde(default, skip_serializing_if = "JsonOnly::is_empty")]
    pub kernels: JsonOnly<String>,
    pub config: Config,
    pub requests: Vec<RequestSpec>,
    pub oracle: OracleSpec,
    /// Every step, idle ranges expanded (one element per engine step).
    pub steps: Vec<Step>,
    /// Final output token ids per request.
    pub outputs: BTreeMap<String, Vec<u32>>,
}

/// Everything of a trace before its steps: what a streaming reader knows up front.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    /// The in-memory version: always [`VERSION`] once read (older files are upgraded).
    pub version: u32,
    #[serde(default)]
    pub recorded_by: String,
    #[serde(default)]
    pub notes: Vec<String>,
    /// Where a model run executed: `"cuda"` (the GPU executor) or `"cpu-twin"` (its
    /// bitwise CPU twin); absent in simulator traces ([`evidence`]).
    #[serde(default, skip_serializing_if = "JsonOnly::is_empty")]
    pub backend: JsonOnly<String>,
    /// The device's name (`"NVIDIA H200"`); absent in simulator traces.
    #[serde(default, skip_serializing_if = "JsonOnly::is_empty")]
    pub device: JsonOnly<String>,
    /// The model weights; absent in simulator traces.
    #[serde(default, skip_serializing_if = "JsonOnly::is_empty")]
    pub checkpoint: JsonOnly<Option<CheckpointInfo>>,
    /// sha256 of each compiled device module (CUBIN), by module name; absent in simulator traces.
    #[serde(default, skip_serializing_if = "JsonOnly::is_empty")]
    pub module_hashes: JsonOnly<BTreeMap<String, String>>,
    /// The forward pass's kernel plan (`fused`, `tensor`, ...), which fixes the order of
    /// its sums and so its logits bits; absent in simulator traces and in model traces made
    /// before it was recorded (those used the CUDA-core order).
    #[serde(default, skip_serializing_if = "JsonOnly::is_empty")]
    pub kernels: JsonOnly<String>,
    pub config: Config,
    pub requests: Vec<RequestSpec>,
    pub oracle: OracleSpec,
}

impl Header {
    /// The header of a trace of `scenario` recorded by this simulator.
    pub fn recorded(scenario: &Scenario) -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            recorded_by: format!("specreplay-sim {}", env!("CARGO_PKG_VERSION")),
            notes: Vec::new(),
            backend: JsonOnly::default(),
            device: JsonOnly::default(),
            checkpoint: JsonOnly::default(),
            module_hashes: JsonOnly::default(),
            kernels: JsonOnly::default(),
            config: scenario.config.clone(),
            requests: scenario.requests.clone(),
            oracle: scenario.oracle.clone(),
        }
    }

    /// The scenario this trace was recorded from.
    pub fn scenario(&self) -> Scenario {
        Scenario { config: self.config.clone(), requests: self.requests.clone(), oracle: self.oracle.clone() }
    }
}

impl Trace {
    /// A trace of `scenario` recorded by this simulator.
    pub fn recorded(scenario: &Scenario, steps: Vec<Step>, outputs: BTreeMap<String, Vec<u32>>) -> Trace {
        Trace::from_parts(Header::recorded(scenario), steps, outputs)
    }

    /// Assembles a trace from a header, its steps and outputs.
    pub fn from_parts(h: Header, steps: Vec<Step>, outputs: BTreeMap<String, Vec<u32>>) -> Trace {
        Trace {
            format: h.format,
            version: h.version,
            recorded_by: h.recorded_by,
            notes: h.notes,
            backend: h.backend,
            device: h.device,
            checkpoint: h.checkpoint,
            module_hashes: h.module_hashes,
            kernels: h.kernels,
            config: h.config,
            requests: h.requests,
            oracle: h.oracle,
            steps,
            outputs,
        }
    }

    /// The header part (everything but steps and outputs).
    pub fn header(&self) -> Header {
        Header {
            format: self.format.clone(),
            version: self.version,
            recorded_by: self.recorded_by.clone(),
            notes: self.notes.clone(),
            backend: self.backend.clone(),
            device: self.device.clone(),
            checkpoint: self.checkpoint.clone(),
            module_hashes: self.module_hashes.clone(),
            kernels: self.kernels.clone(),
            config: self.config.clone(),
            requests: self.requests.clone(),
            oracle: self.oracle.clone(),
        }
    }

    /// The scenario this trace was recorded from.
    pub fn scenario(&self) -> Scenario {
        Scenario { config: self.config.clone(), requests: self.requests.clone(), oracle: self.oracle.clone() }
    }
}

/// `CUDAGraphMode` of one forward pass as the runner dispatched it
/// (`vllm/config/compilation.py` `CUDAGraphMode`, decided by
/// `vllm/v1/cudagraph_dispatcher.py`). Serialized as the string vLLM prints, in JSON
/// and bincode alike (as in version 1); any other string is rejected when reading,
/// except the empty string in bincode, which is how version-1 `.bin` files stored the
/// (absent) mode of idle steps: it reads as `NONE`, the value idle steps now carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CudagraphMode {
    /// Eager: nothing padded (also every step that ran no forward pass).
    #[default]
    None,
    Piecewise,
    Full,
}

impl Serialize for CudagraphMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CudagraphMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let is_json = d.is_human_readable();
        let s = String::deserialize(d)?;
        match s.as_str() {
            "NONE" => Ok(CudagraphMode::None),
            "PIECEWISE" => Ok(CudagraphMode::Piecewise),
            "FULL" => Ok(CudagraphMode::Full),
            "" if !is_json => Ok(CudagraphMode::None),
            _ => Err(serde::de::Error::unknown_variant(&s, &["NONE", "PIECEWISE", "FULL"])),
        }
    }
}

/// The JSON spelling only (the empty string is a bincode-only legacy value).
impl JsonSchema for CudagraphMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CudagraphMode".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "enum": ["NONE", "PIECEWISE", "FULL"],
            "description": "CUDAGraphMode of the forward pass as the runner dispatched it"})
    }
}

impl CudagraphMode {
    /// The spelling in traces and in vLLM's logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CudagraphMode::None => "NONE",
            CudagraphMode::Piecewise => "PIECEWISE",
            CudagraphMode::Full => "FULL",
        }
    }
}

impl From<GraphMode> for CudagraphMode {
    fn from(m: GraphMode) -> Self {
        match m {
            GraphMode::None => CudagraphMode::None,
            GraphMode::Piecewise => CudagraphMode::Piecewise,
            GraphMode::Full => CudagraphMode::Full,
        }
    }
}

impl std::fmt::Display for CudagraphMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the serialized spelling (`s.cudagraph_mode == "FULL"`).
impl PartialEq<&str> for CudagraphMode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One engine step. In an idle step (no request waiting or running) only `step` and
/// `idle` are written; every other field holds its empty value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
    /// `"NONE"`, `"PIECEWISE"` or `"FULL"` (any other value is rejected on reading).
    pub cudagraph_mode: CudagraphMode,
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
    /// Random-mode rows only (issue 15): per request sampled at temperature > 0 this step,
    /// the generator keys and uniforms its verification used ([`RandomDraws`]). Omitted
    /// when empty, so greedy traces keep their bytes in JSON and bincode alike.
    #[serde(skip_serializing_if = "RandomRows::is_empty")]
    pub random_draws: RandomRows,
    /// Model runs only (`gpu generate` and its CPU twin): every logits row the forward
    /// pass computed this step, in `logits_indices` order ([`LogitsRow`]: digest, top-1
    /// token and logit, margin). Evidence, not bookkeeping: omitted when empty (every
    /// simulator trace), JSON only ([`evidence`]).
    #[serde(skip_serializing_if = "JsonOnly::is_empty")]
    pub logits: JsonOnly<Vec<LogitsRow>>,
}

/// What a reader needs to re-derive one random-mode row's decisions (vLLM 0.12.0
/// `vllm/v1/sample/rejection_sampler.py` `rejection_random_sample_kernel` for n-gram drafts;
/// the variates come from `crate::philox`, ARCHITECTURE.md "Random-mode sampling").
///
/// With `n` drafts: draft `j` is accepted iff `p_j(d_j) ≥ uniforms[j] × 2^-24`; the
/// recovered token at the first rejection races the exponential vector of stream
/// `(seed, request, position, Recover)`; the bonus (or, without drafts, the only) token
/// races `(seed, request, position + n, Sample)`. `p_j` is the target distribution after
/// the row's context up to draft `j` (`crate::sampling::target_probs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomDraws {
    /// The request's 64-bit generator seed (given or derived, as the header records it).
    pub seed: u64,
    /// The request's index in arrival order: the first Philox counter word.
    pub request: u32,
    /// Sequence position of the row's first sampled token: its first draft, or the
    /// sampled token itself when the row has no drafts.
    pub position: u32,
    /// `u_j` of every draft as its integer numerator: `u_j = uniforms[j] × 2^-24` exactly
    /// (word 0 of stream `(seed, request, position + j, Accept)`, top 24 bits).
    pub uniforms: Vec<u32>,
}

/// The random-mode rows of one step, by request id.
///
/// Serde: JSON writes the map; bincode writes nothing for an empty map (the layout of every
/// greedy `.bin` trace, which reads back as empty) and refuses a non-empty one, as
/// bincode traces refuse random-mode requests (`crate::config::RequestSpec`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RandomRows(pub BTreeMap<String, RandomDraws>);

/// JSON: the map from request id to its draws (bincode holds only empty maps).
impl JsonSchema for RandomRows {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RandomRows".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <BTreeMap<String, RandomDraws>>::json_schema(g)
    }
}

impl RandomRows {
    /// True when no request of the step was sampled at temperature > 0.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for RandomRows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else if self.0.is_empty() {
            s.serialize_unit()
        } else {
            Err(serde::ser::Error::custom("random-mode steps can only be written as JSON"))
        }
    }
}

impl<'de> Deserialize<'de> for RandomRows {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            Ok(RandomRows(BTreeMap::deserialize(d)?))
        } else {
            <()>::deserialize(d)?;
            Ok(RandomRows::default())
        }
    }
}

impl Step {
    /// The idle step `step` (no request waiting or running; `vllm/v1/engine/core.py`
    /// `step` returns without scheduling).
    pub fn idle(step: u64) -> Step {
        Step { step, idle: true, ..Default::default() }
    }

    /// Whether this is exactly the idle step [`Step::idle`] of its number (the only
    /// kind of step written as `{"step", "idle"}` or coalesced into an idle range).
    pub fn is_pure_idle(&self) -> bool {
        self.idle && *self == Step::idle(self.step)
    }
}

/// FlashAttention metadata (`vllm/v1/attention/backends/flash_attn.py`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// How a trace is encoded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Canonical JSON (one step per line).
    Json,
    /// Framed bincode behind [`BIN_MAGIC`].
    Bincode,
}

impl Encoding {
    /// `.bin` selects bincode, anything else JSON.
    pub fn for_path(path: &Path) -> Encoding {
        if path.extension().is_some_and(|e| e == "bin") {
            Encoding::Bincode
        } else {
            Encoding::Json
        }
    }
}

/// Checks the `format` and `version` members (`None` = missing).
pub(crate) fn check_header(format: Option<&str>, version: Option<u32>) -> Result<u32, TraceError> {
    match format {
        None => {
            return Err(TraceError::Format(format!("not a specreplay trace (missing `format`, expected {FORMAT:?})")))
        }
        Some(f) if f != FORMAT => {
            return Err(TraceError::Format(format!("not a specreplay trace (format {f:?}, expected {FORMAT:?})")))
        }
        Some(_) => {}
    }
    match version {
        None => Err(TraceError::MissingVersion),
        Some(v) if !(OLDEST_VERSION..=VERSION).contains(&v) => {
            Err(TraceError::Version { found: v, supported: VERSION })
        }
        Some(v) => Ok(v),
    }
}

/// Whether `bytes` are meant as a trace rather than a scenario: the bincode magic, or a
/// JSON object with a `format`, `version` or `steps` member (so a trace given where a
/// scenario is expected reports its trace problem, not "unknown field `format`").
pub fn looks_like_trace(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        format: Option<serde::de::IgnoredAny>,
        version: Option<serde::de::IgnoredAny>,
        steps: Option<serde::de::IgnoredAny>,
    }
    bytes.starts_with(BIN_MAGIC)
        || serde_json::from_slice::<Probe>(bytes)
            .is_ok_and(|p| p.format.is_some() || p.version.is_some() || p.steps.is_some())
}

/// Reads a whole trace into memory from any byte source.
pub fn read_from<R: std::io::Read>(r: R) -> Result<Trace, TraceError> {
    let mut reader = TraceReader::new(r)?;
    let mut steps = Vec::new();
    while let Some(s) = reader.next_step()? {
        steps.push(s);
    }
    let header = reader.header().clone();
    let outputs = reader.finish()?;
    Ok(Trace::from_parts(header, steps, outputs))
}

/// Parses a JSON trace (version 1 or 2).
pub fn from_json(text: &str) -> Result<Trace, TraceError> {
    if text.as_bytes().starts_with(BIN_MAGIC) {
        return Err(TraceError::Format("a bincode trace where JSON was expected".into()));
    }
    read_from(text.as_bytes())
}

/// Parses trace bytes: bincode when they start with the magic, JSON otherwise.
pub fn from_bytes(bytes: &[u8]) -> Result<Trace, TraceError> {
    read_from(bytes)
}

/// Parses a bincode trace (version 1 or 2).
pub fn from_bincode(bytes: &[u8]) -> Result<Trace, TraceError> {
    if !bytes.starts_with(BIN_MAGIC) {
        return Err(TraceError::Format("not a specreplay bincode trace (bad magic)".into()));
    }
    read_from(bytes)
}

/// Writes a whole in-memory trace to `w` (streaming encoder, same bytes as a recording).
pub fn write_to<W: std::io::Write>(w: W, encoding: Encoding, trace: &Trace) -> std::io::Result<W> {
    let mut tw = TraceWriter::new(w, encoding, &trace.header())?;
    for s in &trace.steps {
        tw.push(s)?;
    }
    tw.finish(&trace.outputs)
}

/// Serializes a trace as canonical JSON: header members one per line, one line per step
/// (idle runs coalesced).
pub fn to_json(trace: &Trace) -> String {
    let bytes = write_to(Vec::new(), Encoding::Json, trace).expect("writing to memory cannot fail");
    String::from_utf8(bytes).expect("serde_json writes UTF-8")
}

/// Serializes a trace as framed bincode behind the `SRTRACE\0` + version header.
pub fn to_bincode(trace: &Trace) -> Vec<u8> {
    write_to(Vec::new(), Encoding::Bincode, trace).expect("writing to memory cannot fail")
}

/// Reads a trace file (format chosen by content: bincode magic or JSON).
pub fn read(path: &Path) -> Result<Trace, TraceError> {
    let f = std::fs::File::open(path).map_err(|e| TraceError::Io(format!("{}: {e}", path.display())))?;
    read_from(std::io::BufReader::new(f))
}

/// Writes a trace atomically (temp file in the same directory, then rename); `.bin`
/// selects bincode, anything else JSON. (The CLI uses its own guarded writer.)
pub fn write(path: &Path, trace: &Trace) -> Result<(), TraceError> {
    let bytes = write_to(Vec::new(), Encoding::for_path(path), trace).expect("writing to memory cannot fail");
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
