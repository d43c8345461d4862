//! specreplay-sim: a pure-Rust, deterministic simulator of a vLLM-v1-style engine
//! running n-gram speculative decoding, plus the trace format it records.
//!
//! See `ARCHITECTURE.md` at the repository root for the data flow and invariants.
#![forbid(unsafe_code)]

pub mod batch;
pub mod block_hash;
pub mod builders;
pub mod check;
pub mod config;
pub mod cudagraph;
pub mod device;
pub mod diff;
pub mod divergence;
pub mod engine;
pub mod error;
pub mod fuzzing;
pub mod kv;
pub mod nano;
pub mod oracle;
pub mod philox;
pub mod proposer;
pub mod rejection;
pub mod request;
pub mod runner;
pub mod sampling;
pub mod scheduler;
pub mod splitmix;
pub mod summary;
pub mod trace;
pub mod vllm;

pub use config::{Config, Profile, RequestSpec, Scenario};
pub use error::{ConfigError, SimError, TraceError};
pub use trace::Trace;
