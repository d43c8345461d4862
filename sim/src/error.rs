//! Typed errors of the simulator. Every user-facing failure is one of these; nothing in
//! the library panics on user input.

use thiserror::Error;

/// An invalid scenario (config, requests or oracle).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("invalid oracle: {0}")]
    Oracle(String),
    /// A rule about one request (`vllm/v1/engine/input_processor.py`, `sampling_params.py`).
    #[error("invalid request {req_id:?}: {message}")]
    Request { req_id: String, message: String },
    /// A scenario file that is not well-formed scenario JSON (syntax, unknown field, type).
    #[error("malformed scenario: {0}")]
    Json(String),
}

/// A trace that cannot be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TraceError {
    #[error("io error: {0}")]
    Io(String),
    #[error("malformed trace JSON: {0}")]
    Json(String),
    #[error("malformed bincode trace: {0}")]
    Bincode(String),
    #[error("{0}")]
    Format(String),
    #[error("unsupported trace version {found} (this build reads versions 1 to {supported})")]
    Version { found: u32, supported: u32 },
    #[error("not a specreplay trace: missing `version`")]
    MissingVersion,
    /// Input past a size or step limit (a hostile or endless input).
    #[error("trace too large: {0}")]
    Limit(String),
}

/// A run that cannot go on.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SimError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("oracle exhausted: request {req_id:?} needs the target token at position {position}, but the continuation holds only {available} tokens")]
    OracleExhausted { req_id: String, position: usize, available: usize },
    #[error("stalled at step {step}: {reason}")]
    Stalled { step: u64, reason: String },
    #[error("run exceeded {0} steps")]
    TooManySteps(u64),
    /// A device returned sampler output that breaks the rejection sampler's contract.
    #[error("step {step}: device output for request {req_id:?} is invalid at {field}: {message}")]
    DeviceOutput { step: u64, req_id: String, field: String, message: String },
    /// The device failed (driver, kernel, memory).
    #[error("device error: {0}")]
    Device(String),
    /// A state in which vLLM 0.12.0 itself fails an assertion (the engine would crash).
    #[error("step {step}: vLLM 0.12.0 would fail an assertion here: {message}")]
    VllmAssertion { step: u64, message: String },
    /// The step sink stopped the run: a trace write failed, or a replay found its
    /// first divergence (the sink keeps the details).
    #[error("{0}")]
    Sink(String),
    /// A state in which nano-vllm (at the modelled commit) fails one of its own
    /// assertions or raises (the engine would crash); `message` names the upstream line.
    #[error("step {step}: nano-vllm @2f21442 would fail here: {message}")]
    NanoAssertion { step: u64, message: String },
}

impl SimError {
    /// Fills in the step of an error raised below the engine loop.
    pub fn at_step(self, at: u64) -> SimError {
        match self {
            SimError::VllmAssertion { message, .. } => SimError::VllmAssertion { step: at, message },
            SimError::NanoAssertion { message, .. } => SimError::NanoAssertion { step: at, message },
            other => other,
        }
    }
}
