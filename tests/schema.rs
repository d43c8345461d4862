//! The JSON Schemas under `schema/` (generated from the serde types by
//! `specreplay_sim::trace::schema`) are in sync with the types, and every committed JSON
//! trace and scenario, and every bincode trace converted to its JSON value in memory,
//! validates against them. Regenerate: `SPECREPLAY_UPDATE_SCHEMA=1 cargo test --test schema`.
//!
//! The validator below implements the subset of JSON Schema 2020-12 that schemars emits
//! and fails on any keyword it does not know, so a schema it cannot check fully is noticed.

use std::path::{Path, PathBuf};

use serde_json::Value;
use specreplay_sim::trace::schema::{scenario_schema, trace_schema};

mod common;
use common::root;

fn committed(name: &str, generated: &Value) -> Value {
    let path = root().join("schema").join(name);
    let text = serde_json::to_string_pretty(generated).unwrap() + "\n";
    if std::env::var_os("SPECREPLAY_UPDATE_SCHEMA").is_some() {
        // Two tests regenerate at once: write a temporary file and rename it into place.
        let tmp = path.with_extension(format!("tmp-{:?}", std::thread::current().id()).replace(['(', ')'], ""));
        std::fs::write(&tmp, &text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == text,
        "{} is out of sync with the serde types; regenerate: SPECREPLAY_UPDATE_SCHEMA=1 cargo test --test schema",
        path.display()
    );
    serde_json::from_str(&on_disk).unwrap()
}

/// Validates `v` against `schema` (resolving `$ref` in `root`); errors name the JSON path.
fn validate(root: &Value, schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    if errors.len() > 20 {
        return;
    }
    let s = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => return errors.push(format!("{path}: no value allowed")),
        Value::Object(s) => s,
        _ => panic!("schema at {path} is not an object"),
    };
    for (k, kv) in s {
        match k.as_str() {
            "$schema" | "title" | "description" | "default" | "$defs" | "examples" => {}
            "$ref" => {
                let name = kv.as_str().unwrap().strip_prefix("#/$defs/").expect("local $ref");
                validate(root, &root["$defs"][name], v, path, errors);
            }
            "type" => {
                let types: Vec<&str> = match kv {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(a) => a.iter().map(|t| t.as_str().unwrap()).collect(),
                    _ => panic!("bad type"),
                };
                let ok = types.iter().any(|t| match *t {
                    "object" => v.is_object(),
                    "array" => v.is_array(),
                    "string" => v.is_string(),
                    "boolean" => v.is_boolean(),
                    "null" => v.is_null(),
                    "number" => v.is_number(),
                    "integer" => v.is_i64() || v.is_u64(),
                    t => panic!("unknown type {t}"),
                });
                if !ok {
                    errors.push(format!("{path}: {v} is not of type {types:?}"));
                }
            }
            "format" => {
                let fits = match kv.as_str().unwrap() {
                    "uint" | "uint64" => v.as_u64().is_some(),
                    "uint32" => v.as_u64().is_some_and(|x| x <= u64::from(u32::MAX)),
                    "uint8" => v.as_u64().is_some_and(|x| x <= 255),
                    "int64" | "int" => v.as_i64().is_some(),
                    "int32" => v.as_i64().is_some_and(|x| i32::try_from(x).is_ok()),
                    "float" | "double" => v.is_number(),
                    f => panic!("unknown format {f}"),
                };
                if v.is_number() && !fits {
                    errors.push(format!("{path}: {v} does not fit format {kv}"));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(x), Some(b)) = (v.as_f64(), kv.as_f64()) {
                    if (k == "minimum" && x < b) || (k == "maximum" && x > b) {
                        errors.push(format!("{path}: {v} violates {k} {b}"));
                    }
                }
            }
            "enum" => {
                if !kv.as_array().unwrap().contains(v) {
                    errors.push(format!("{path}: {v} not in {kv}"));
                }
            }
            "const" => {
                if kv != v {
                    errors.push(format!("{path}: {v} is not {kv}"));
                }
            }
            "properties" | "required" | "additionalProperties" => {
                let Some(o) = v.as_object() else { continue };
                match k.as_str() {
                    "properties" => {
                        for (name, sub) in kv.as_object().unwrap() {
                            if let Some(x) = o.get(name) {
                                validate(root, sub, x, &format!("{path}.{name}"), errors);
                            }
                        }
                    }
                    "required" => {
                        for r in kv.as_array().unwrap() {
                            if !o.contains_key(r.as_str().unwrap()) {
                                errors.push(format!("{path}: missing required {r}"));
                            }
                        }
                    }
                    _ => {
                        let props = s.get("properties").and_then(Value::as_object);
                        for (name, x) in o {
                            if props.is_some_and(|p| p.contains_key(name)) {
                                continue;
                            }
                            validate(root, kv, x, &format!("{path}.{name}"), errors);
                        }
                    }
                }
            }
            "items" => {
                if let Some(a) = v.as_array() {
                    for (i, x) in a.iter().enumerate() {
                        validate(root, kv, x, &format!("{path}[{i}]"), errors);
                    }
                }
            }
            "anyOf" | "oneOf" => {
                let n = kv
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|sub| {
                        let mut e = Vec::new();
                        validate(root, sub, v, path, &mut e);
                        e.is_empty()
                    })
                    .count();
                if n == 0 || (k == "oneOf" && n > 1) {
                    errors.push(format!("{path}: {n} of the {k} alternatives match {}", short(v)));
                }
            }
            "allOf" => {
                for sub in kv.as_array().unwrap() {
                    validate(root, sub, v, path, errors);
                }
            }
            // Only the patterns the schemas use (no regex engine here).
            "pattern" => match (kv.as_str().unwrap(), v.as_str()) {
                ("^[0-9a-f]{16}$", Some(x)) => {
                    if x.len() != 16 || !x.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                        errors.push(format!("{path}: {x:?} does not match ^[0-9a-f]{{16}}$"));
                    }
                }
                (_, None) => {}
                (p, _) => panic!("validator does not know pattern {p:?} (at {path}); extend it"),
            },
            other => panic!("validator does not know keyword {other:?} (at {path}); extend it"),
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..120])
    } else {
        s
    }
}

fn check(schema: &Value, v: &Value) -> Vec<String> {
    let mut e = Vec::new();
    validate(schema, schema, v, "$", &mut e);
    e
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn all_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for d in ["traces", "scenarios", "tests/fixtures", "fuzz/seeds/trace_parser", "conformance/vllm/scenarios"] {
        files(&root().join(d), &mut v);
    }
    v.sort();
    v
}

/// A trace file as the JSON value its readers see: JSON text as is; a bincode trace
/// decoded and re-encoded as canonical JSON.
fn trace_value(p: &Path) -> Value {
    let bytes = std::fs::read(p).unwrap();
    if bytes.starts_with(specreplay_sim::trace::BIN_MAGIC) {
        let t = specreplay_sim::trace::from_bincode(&bytes).unwrap();
        serde_json::from_str(&specreplay_sim::trace::to_json(&t)).unwrap()
    } else {
        serde_json::from_slice(&bytes).unwrap()
    }
}

#[test]
fn committed_schemas_are_in_sync_with_the_types() {
    committed("trace.schema.json", &trace_schema());
    committed("scenario.schema.json", &scenario_schema());
}

#[test]
fn every_committed_trace_and_scenario_validates() {
    let ts = committed("trace.schema.json", &trace_schema());
    let ss = committed("scenario.schema.json", &scenario_schema());
    let (mut traces, mut scenarios, mut failures) = (0, 0, Vec::new());
    for p in all_files() {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        let is_trace = match ext {
            "bin" => true,
            "json" => specreplay_sim::trace::looks_like_trace(&std::fs::read(&p).unwrap()),
            _ => continue,
        };
        if p.components().any(|c| c.as_os_str() == "model") {
            continue; // conformance/vllm/model/config.json is a model config, not ours
        }
        let (schema, v) = if is_trace {
            traces += 1;
            (&ts, trace_value(&p))
        } else {
            scenarios += 1;
            (&ss, serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap())
        };
        let e = check(schema, &v);
        if !e.is_empty() {
            failures.push(format!("{}:\n  {}", p.display(), e.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{} files fail their schema:\n{}", failures.len(), failures.join("\n"));
    assert!(traces >= 490 && scenarios >= 7, "{traces} traces, {scenarios} scenarios");
    println!("{traces} traces, {scenarios} scenarios valid");
}

#[test]
fn the_schemas_reject_what_serde_rejects() {
    let ts = trace_schema();
    let ss = scenario_schema();
    let golden = trace_value(&root().join("traces/vllm_ngram_13step.json"));
    assert!(check(&ts, &golden).is_empty());
    let bad = |f: &dyn Fn(&mut Value)| {
        let mut v = golden.clone();
        f(&mut v);
        check(&ts, &v)
    };
    assert!(!bad(&|v| v["steps"][2]["cudagraph_mode"] = "EAGER".into()).is_empty());
    assert!(!bad(&|v| v["steps"][2]["bogus"] = 1.into()).is_empty());
    assert!(!bad(&|v| v["format"] = "other".into()).is_empty());
    assert!(!bad(&|v| v["version"] = 3.into()).is_empty());
    assert!(!bad(&|v| v["steps"][0]["input_ids"] = "x".into()).is_empty());
    assert!(!bad(&|v| v["requests"][0]["sampling"] = serde_json::json!({"temperature": 1})).is_empty());
    assert!(!bad(&|v| v["oracle"]["kind"] = "lm".into()).is_empty());
    // An idle range is a valid step element; `through` on a busy step is not.
    assert!(bad(&|v| v["steps"][0] = serde_json::json!({"step": 1, "idle": true, "through": 4})).is_empty());
    assert!(!bad(&|v| v["steps"][0]["through"] = 4.into()).is_empty());
    // Scenarios: the README's minimal one passes; an unknown field or a missing prompt does not.
    let sc: Value = serde_json::from_str(
        r#"{"config": {"max_model_len": 32}, "requests": [{"req_id": "0", "prompt_token_ids": [1]}],
            "oracle": {"kind": "synthetic", "seed": 1, "vocab_size": 3, "order": 1}}"#,
    )
    .unwrap();
    assert!(check(&ss, &sc).is_empty(), "{:?}", check(&ss, &sc));
    let mut x = sc.clone();
    x["config"]["max_modl_len"] = 1.into();
    assert!(!check(&ss, &x).is_empty());
    let mut x = sc.clone();
    x["requests"][0].as_object_mut().unwrap().remove("prompt_token_ids");
    assert!(!check(&ss, &x).is_empty());
    // Every value the schema accepts in these cases, serde accepts too.
    assert!(specreplay_sim::Scenario::from_json(&sc.to_string()).is_ok());
}

/// A generation trace (the Qwen3 CPU twin through the engine, with header evidence and
/// per-step logits rows) validates; a digest that is not 16 hex digits, a margin that is
/// neither a number nor inf/-inf/NaN, and an unknown member of a logits row do not.
#[test]
fn a_generation_trace_validates_and_bad_evidence_does_not() {
    use specreplay_executor::model::weights::{random_weights, tiny_config, HostWeights};
    use specreplay_executor::qwen_device::{generation_trace, test_scenario, QwenHostDevice};
    use specreplay_sim::trace::{CheckpointInfo, JsonOnly};
    let sc = test_scenario(&[(&[5, 9, 5, 9, 5, 9], 1), (&[3, 4, 3, 4], 2)], 12, 2, &[2, 4]);
    let cfg = tiny_config();
    let mut d = QwenHostDevice::new(&sc, HostWeights::load(&cfg, &random_weights(&cfg, 3)).unwrap()).unwrap();
    let r = specreplay_sim::engine::run_on(&sc, &mut d).unwrap();
    let mut t = generation_trace(r.trace, &sc, &d.greedy, &d.logits);
    t.backend = JsonOnly("cpu-twin".into());
    t.device = JsonOnly("host".into());
    t.module_hashes = JsonOnly([("qwen".to_string(), "ab".repeat(32))].into());
    t.checkpoint = JsonOnly(Some(CheckpointInfo { source: "ck".into(), sha256: Some("cd".repeat(32)) }));
    let v: Value = serde_json::from_str(&specreplay_sim::trace::to_json(&t)).unwrap();
    let ts = trace_schema();
    assert_eq!(check(&ts, &v), Vec::<String>::new());
    let i = t.steps.iter().position(|s| !s.logits.is_empty()).unwrap();
    let bad = |f: &dyn Fn(&mut Value)| {
        let mut w = v.clone();
        f(&mut w["steps"][i]["logits"][0]);
        check(&ts, &w)
    };
    assert!(!bad(&|r| r["digest"] = "ABCDEF0123456789".into()).is_empty());
    assert!(!bad(&|r| r["digest"] = 12.into()).is_empty());
    assert!(!bad(&|r| r["margin"] = "big".into()).is_empty());
    assert!(!bad(&|r| r["extra"] = 1.into()).is_empty());
    assert!(bad(&|r| r["margin"] = "inf".into()).is_empty());
}
