//! JSON Schemas of the two file formats, generated from the serde types with schemars:
//! the trace (what [`super::TraceReader`] accepts and [`super::TraceWriter`] writes as
//! JSON) and the scenario file (what [`crate::Scenario::from_json`] accepts, before
//! defaults are resolved). Committed as `schema/trace.schema.json` and
//! `schema/scenario.schema.json`; `tests/schema.rs` keeps them in sync and validates
//! every committed trace and scenario against them.
//!
//! What the derive cannot see is patched in here: a `steps` element may also be an idle
//! range `{"step": FIRST, "idle": true, "through": LAST}` (version 2, `json.rs`).

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Value};

use super::Trace;
use crate::config::input::ScenarioInput;

/// A run of idle steps, one element of `steps` (version 2 only).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct IdleRange {
    /// First idle step.
    step: u64,
    /// Always `true`.
    idle: bool,
    /// Last idle step of the run (≥ `step`).
    through: u64,
}

fn generator() -> SchemaGenerator {
    schemars::generate::SchemaSettings::draft2020_12().into_generator()
}

/// The trace schema (JSON, versions 1 and 2).
pub fn trace_schema() -> Value {
    let mut g = generator();
    let idle = g.subschema_for::<IdleRange>();
    let mut root = g.into_root_schema_for::<Trace>().to_value();
    let step = root["properties"]["steps"]["items"].take();
    root["properties"]["steps"]["items"] = json!({"anyOf": [step, idle.to_value()]});
    root["properties"]["steps"]["description"] =
        json!("Every engine step in order, 1-based and consecutive; a run of idle steps may be one idle range.");
    root["$defs"]["IdleRange"]["properties"]["idle"]["const"] = json!(true);
    root["properties"]["format"]["const"] = json!(super::FORMAT);
    root["properties"]["version"]["minimum"] = json!(super::OLDEST_VERSION);
    root["properties"]["version"]["maximum"] = json!(super::VERSION);
    root
}

/// The scenario-file schema (fields left out take vLLM 0.12.0's defaults).
pub fn scenario_schema() -> Value {
    generator().into_root_schema_for::<ScenarioInput>().to_value()
}
