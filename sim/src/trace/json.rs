//! JSON traces: the canonical writer and a pull reader that holds one top-level member
//! or one step at a time.
//!
//! The reader scans the top-level object itself (keys, `:`/`,` structure, the `steps`
//! array) and hands each member value or step element, as bytes, to `serde_json`, so
//! every type error keeps serde's wording with the absolute line and column.

use serde::de::{DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};

use super::stream::{Item, Src};
use super::{check_header, Header, Step, JSON_VALUE_LIMIT};
use crate::error::TraceError;

const HEADER_MEMBERS: [&str; 12] = [
    "format",
    "version",
    "recorded_by",
    "notes",
    "backend",
    "device",
    "checkpoint",
    "module_hashes",
    "kernels",
    "config",
    "requests",
    "oracle",
];
const ALL_MEMBERS: &str = "`format`, `version`, `recorded_by`, `notes`, `backend`, `device`, `checkpoint`, \
`module_hashes`, `kernels`, `config`, `requests`, `oracle`, `steps`, `outputs`";
/// Deeper nesting than serde_json's own limit (128) stops the scanner; serde then
/// reports the recursion limit at the right place.
const MAX_DEPTH: usize = 256;
/// Longest top-level scalar scanned (numbers and literals are short).
const MAX_SCALAR: usize = 4096;

fn put<W: Write, T: Serialize + ?Sized>(w: &mut W, v: &T) -> std::io::Result<()> {
    serde_json::to_writer(w, v).map_err(std::io::Error::from)
}

/// Writes `{`, the header members one per line (the model evidence members only when
/// not empty), and `"steps": [`.
pub(crate) fn write_header<W: Write>(w: &mut W, h: &Header) -> std::io::Result<()> {
    w.write_all(b"{\n  \"format\": ")?;
    put(w, &h.format)?;
    write!(w, ",\n  \"version\": {},\n  \"recorded_by\": ", h.version)?;
    put(w, &h.recorded_by)?;
    w.write_all(b",\n  \"notes\": ")?;
    put(w, &h.notes)?;
    if !h.backend.is_empty() {
        w.write_all(b",\n  \"backend\": ")?;
        put(w, &h.backend)?;
    }
    if !h.device.is_empty() {
        w.write_all(b",\n  \"device\": ")?;
        put(w, &h.device)?;
    }
    if !h.checkpoint.is_empty() {
        w.write_all(b",\n  \"checkpoint\": ")?;
        put(w, &h.checkpoint)?;
    }
    if !h.module_hashes.is_empty() {
        w.write_all(b",\n  \"module_hashes\": ")?;
        put(w, &h.module_hashes)?;
    }
    if !h.kernels.is_empty() {
        w.write_all(b",\n  \"kernels\": ")?;
        put(w, &h.kernels)?;
    }
    w.write_all(b",\n  \"config\": ")?;
    put(w, &h.config)?;
    w.write_all(b",\n  \"requests\": ")?;
    put(w, &h.requests)?;
    w.write_all(b",\n  \"oracle\": ")?;
    put(w, &h.oracle)?;
    w.write_all(b",\n  \"steps\": [")
}

fn sep<W: Write>(w: &mut W, first: bool) -> std::io::Result<()> {
    w.write_all(if first { b"\n    " } else { b",\n    " })
}

/// Writes one step element (an idle step in its short form).
pub(crate) fn write_step<W: Write>(w: &mut W, first: bool, s: &Step) -> std::io::Result<()> {
    sep(w, first)?;
    if s.is_pure_idle() {
        write!(w, "{{\"step\":{},\"idle\":true}}", s.step)
    } else {
        put(w, s)
    }
}

/// Writes the idle steps `first..=through` as one element.
pub(crate) fn write_idle<W: Write>(w: &mut W, first_elem: bool, first: u64, through: u64) -> std::io::Result<()> {
    sep(w, first_elem)?;
    if first == through {
        write!(w, "{{\"step\":{first},\"idle\":true}}")
    } else {
        write!(w, "{{\"step\":{first},\"idle\":true,\"through\":{through}}}")
    }
}

/// Closes the steps array and writes the outputs and the closing brace.
pub(crate) fn write_end<W: Write>(
    w: &mut W,
    no_steps: bool,
    outputs: &BTreeMap<String, Vec<u32>>,
) -> std::io::Result<()> {
    w.write_all(if no_steps { b"],\n  \"outputs\": " } else { b"\n  ],\n  \"outputs\": " })?;
    put(w, outputs)?;
    w.write_all(b"\n}\n")
}

// ---------------------------------------------------------------- reading

fn at<R>(src: &Src<R>) -> String {
    format!("at line {} column {}", src.line, src.col + 1)
}

fn syntax<R>(src: &Src<R>, what: &str) -> TraceError {
    TraceError::Json(format!("{what} {}", at(src)))
}

fn skip_ws<R: Read>(src: &mut Src<R>) -> Result<Option<u8>, TraceError> {
    while let Some(b) = src.peek()? {
        if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return Ok(Some(b));
        }
        src.bump();
    }
    Ok(None)
}

/// Where a scanned value starts: (line, bytes before it on that line).
type Pos = (u64, u64);

/// Copies the next JSON value's bytes into `out` (structure only: strings, brackets,
/// scalars; serde validates the rest). Stops early at end of input or too deep a
/// nesting, leaving serde to report the error.
fn scan_value<R: Read>(src: &mut Src<R>, out: &mut Vec<u8>) -> Result<Pos, TraceError> {
    out.clear();
    skip_ws(src)?;
    let pos = (src.line, src.col);
    let mut depth = 0usize;
    'value: while let Some(b) = src.peek()? {
        if out.len() > JSON_VALUE_LIMIT {
            return Err(TraceError::Limit(format!(
                "a JSON value larger than {JSON_VALUE_LIMIT} bytes starting at line {} column {}",
                pos.0,
                pos.1 + 1
            )));
        }
        match b {
            b'"' => {
                out.push(b);
                src.bump();
                loop {
                    let Some(c) = src.peek()? else { break 'value };
                    out.push(c);
                    src.bump();
                    if c == b'\\' {
                        let Some(e) = src.peek()? else { break 'value };
                        out.push(e);
                        src.bump();
                    } else if c == b'"' {
                        break;
                    }
                    if out.len() > JSON_VALUE_LIMIT {
                        continue 'value;
                    }
                }
                if depth == 0 {
                    break;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                out.push(b);
                src.bump();
                if depth > MAX_DEPTH {
                    break;
                }
            }
            b'}' | b']' => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
                out.push(b);
                src.bump();
                if depth == 0 {
                    break;
                }
            }
            b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => break,
            // No number or literal is this long: stop and let serde name the problem.
            _ if depth == 0 && out.len() >= MAX_SCALAR => break,
            _ => {
                out.push(b);
                src.bump();
            }
        }
    }
    Ok(pos)
}

/// Parses scanned bytes; serde's error position is made absolute.
fn parse<T: DeserializeOwned>(bytes: &[u8], pos: Pos) -> Result<T, TraceError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let text = e.to_string();
        if e.line() == 0 {
            return TraceError::Json(text);
        }
        let msg = text.rsplit_once(" at line ").map_or(text.as_str(), |(m, _)| m);
        let (line, col) = if e.line() == 1 {
            (pos.0, pos.1 + e.column() as u64)
        } else {
            (pos.0 + e.line() as u64 - 1, e.column() as u64)
        };
        TraceError::Json(format!("{msg} at line {line} column {col}"))
    })
}

/// Reads a member key and its `:` (the caller has seen that a member follows).
fn key<R: Read>(src: &mut Src<R>, buf: &mut Vec<u8>) -> Result<(String, Pos), TraceError> {
    match skip_ws(src)? {
        Some(b'"') => {}
        Some(_) => return Err(syntax(src, "key must be a string")),
        None => return Err(syntax(src, "EOF while parsing an object")),
    }
    let pos = scan_value(src, buf)?;
    let k: String = parse(buf, pos)?;
    match skip_ws(src)? {
        Some(b':') => src.bump(),
        Some(_) => return Err(syntax(src, "expected `:`")),
        None => return Err(syntax(src, "EOF while parsing an object")),
    }
    Ok((k, pos))
}

/// After a member value: `true` when another member follows (`,`), `false` at `}`.
fn member_sep<R: Read>(src: &mut Src<R>) -> Result<bool, TraceError> {
    match skip_ws(src)? {
        Some(b',') => {
            src.bump();
            if skip_ws(src)? == Some(b'}') {
                return Err(syntax(src, "trailing comma"));
            }
            Ok(true)
        }
        Some(b'}') => {
            src.bump();
            Ok(false)
        }
        Some(_) => Err(syntax(src, "expected `,` or `}`")),
        None => Err(syntax(src, "EOF while parsing an object")),
    }
}

fn unknown(k: &str, pos: Pos) -> TraceError {
    TraceError::Json(format!(
        "unknown field `{k}`, expected one of {ALL_MEMBERS} at line {} column {}",
        pos.0,
        pos.1 + 1
    ))
}

fn duplicate(k: &str, pos: Pos) -> TraceError {
    TraceError::Json(format!("duplicate field `{k}` at line {} column {}", pos.0, pos.1 + 1))
}

/// The steps array and what follows it, read on demand.
pub(crate) struct JsonBody {
    version: u32,
    first: bool,
    outputs: Option<BTreeMap<String, Vec<u32>>>,
    buf: Vec<u8>,
}

/// Reads the top level up to the first step; checks `format` and `version` before any
/// other member is interpreted.
pub(crate) fn open<R: Read>(src: &mut Src<R>) -> Result<(Header, u32, JsonBody), TraceError> {
    let mut buf = Vec::new();
    match skip_ws(src)? {
        Some(b'{') => src.bump(),
        _ => {
            // Let serde describe what is there instead of an object (from a short
            // prefix: an endless input such as /dev/zero is not read on).
            let pos = (src.line, src.col);
            while buf.len() < 64 {
                let Some(b) = src.peek()? else { break };
                buf.push(b);
                src.bump();
            }
            let _: serde::de::IgnoredAny = parse(&buf, pos)?;
            return Err(TraceError::Format("not a specreplay trace (the file is not a JSON object)".into()));
        }
    }
    let mut raw: BTreeMap<&'static str, (Vec<u8>, Pos)> = BTreeMap::new();
    let mut outputs = None;
    let mut has_steps = false;
    if skip_ws(src)? == Some(b'}') {
        src.bump();
    } else {
        loop {
            let (k, kpos) = key(src, &mut buf)?;
            if k == "steps" {
                match skip_ws(src)? {
                    Some(b'[') => src.bump(),
                    _ => return Err(syntax(src, "invalid type for `steps`: expected an array")),
                }
                has_steps = true;
                break;
            }
            let vpos = scan_value(src, &mut buf)?;
            if k == "outputs" {
                if outputs.is_some() {
                    return Err(duplicate(&k, kpos));
                }
                outputs = Some(parse(&buf, vpos)?);
            } else {
                let name = HEADER_MEMBERS.iter().find(|&&m| m == k).ok_or_else(|| unknown(&k, kpos))?;
                if raw.insert(name, (std::mem::take(&mut buf), vpos)).is_some() {
                    return Err(duplicate(&k, kpos));
                }
            }
            if !member_sep(src)? {
                break;
            }
        }
    }
    fn member<T: DeserializeOwned>(
        raw: &BTreeMap<&'static str, (Vec<u8>, Pos)>,
        name: &str,
    ) -> Result<Option<T>, TraceError> {
        raw.get(name).map(|(b, p)| parse(b, *p)).transpose()
    }
    let format: Option<String> = member(&raw, "format")?;
    let version: Option<u32> = member(&raw, "version")?;
    let version = check_header(format.as_deref(), version)?;
    let missing = |f: &str| TraceError::Json(format!("missing field `{f}`"));
    let header = Header {
        format: format.unwrap_or_default(),
        version,
        recorded_by: member(&raw, "recorded_by")?.unwrap_or_default(),
        notes: member(&raw, "notes")?.unwrap_or_default(),
        backend: member(&raw, "backend")?.unwrap_or_default(),
        device: member(&raw, "device")?.unwrap_or_default(),
        checkpoint: member(&raw, "checkpoint")?.unwrap_or_default(),
        module_hashes: member(&raw, "module_hashes")?.unwrap_or_default(),
        kernels: member(&raw, "kernels")?.unwrap_or_default(),
        config: member(&raw, "config")?.ok_or_else(|| missing("config"))?,
        requests: member(&raw, "requests")?.ok_or_else(|| missing("requests"))?,
        oracle: member(&raw, "oracle")?.ok_or_else(|| missing("oracle"))?,
    };
    if !has_steps {
        return Err(missing("steps"));
    }
    Ok((header, version, JsonBody { version, first: true, outputs, buf }))
}

impl JsonBody {
    /// The next element of the steps array, or the end (outputs) after it.
    pub(crate) fn next<R: Read>(&mut self, src: &mut Src<R>) -> Result<Item, TraceError> {
        let close = match skip_ws(src)? {
            Some(b']') if self.first => true,
            Some(_) if self.first => false,
            Some(b',') => {
                src.bump();
                if skip_ws(src)? == Some(b']') {
                    return Err(syntax(src, "trailing comma"));
                }
                false
            }
            Some(b']') => true,
            Some(_) => return Err(syntax(src, "expected `,` or `]`")),
            None => return Err(syntax(src, "EOF while parsing a list")),
        };
        if close {
            src.bump();
            return self.trailer(src);
        }
        self.first = false;
        let pos = scan_value(src, &mut self.buf)?;
        if self.version < 2 {
            return Ok(Item::Step(Box::new(parse(&self.buf, pos)?)));
        }
        let e: StepElem = parse(&self.buf, pos)?;
        match e.through {
            None => Ok(Item::Step(Box::new(e.step))),
            Some(through) if e.step.is_pure_idle() => Ok(Item::Idle { first: e.step.step, through }),
            Some(_) => Err(TraceError::Format(format!(
                "step {} has `through` but is not an idle step {{\"step\", \"idle\": true}} (line {})",
                e.step.step, pos.0
            ))),
        }
    }

    /// Members after the steps (only `outputs`), the closing brace, nothing after it.
    fn trailer<R: Read>(&mut self, src: &mut Src<R>) -> Result<Item, TraceError> {
        while member_sep(src)? {
            let (k, kpos) = key(src, &mut self.buf)?;
            if k != "outputs" {
                if HEADER_MEMBERS.contains(&k.as_str()) || k == "steps" {
                    return Err(TraceError::Json(format!(
                        "`{k}` after `steps` at line {} column {} (readers need the header members before the steps)",
                        kpos.0,
                        kpos.1 + 1
                    )));
                }
                return Err(unknown(&k, kpos));
            }
            if self.outputs.is_some() {
                return Err(duplicate(&k, kpos));
            }
            let vpos = scan_value(src, &mut self.buf)?;
            self.outputs = Some(parse(&self.buf, vpos)?);
        }
        if skip_ws(src)?.is_some() {
            return Err(syntax(src, "trailing characters"));
        }
        self.outputs.take().map(Item::End).ok_or_else(|| TraceError::Json("missing field `outputs`".into()))
    }
}

/// A version-2 step element: a [`Step`], or an idle range (`through` = its last step).
struct StepElem {
    step: Step,
    through: Option<u64>,
}

impl<'de> Deserialize<'de> for StepElem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ElemVisitor)
    }
}

struct ElemVisitor;

impl<'de> Visitor<'de> for ElemVisitor {
    type Value = StepElem;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a step object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StepElem, A::Error> {
        let mut through = None;
        let step = Step::deserialize(serde::de::value::MapAccessDeserializer::new(Through {
            inner: map,
            through: &mut through,
        }))?;
        Ok(StepElem { step, through })
    }
}

/// Passes every member to [`Step`]'s own deserializer except `through`, kept aside.
struct Through<'a, A> {
    inner: A,
    through: &'a mut Option<u64>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Through<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(k) = self.inner.next_key::<String>()? else { return Ok(None) };
            if k != "through" {
                return seed.deserialize(k.into_deserializer()).map(Some);
            }
            if self.through.is_some() {
                return Err(serde::de::Error::duplicate_field("through"));
            }
            *self.through = Some(self.inner.next_value()?);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}
