//! bincode traces.
//!
//! Version 2 is framed: after `SRTRACE\0` and the version (`u32` little-endian) come
//! frames, each a `u32` little-endian payload length and one bincode-encoded
//! [`Record`] (standard config: variable-length integers). The first record is the
//! header, the last one the end record with the outputs; in between, steps and idle
//! ranges in order. A file that stops before its end record is truncated, and an error.
//!
//! Version 1 (read only): the magic, the version, then the whole [`Trace`] as one
//! bincode value.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};

use super::stream::{Item, Src};
use super::{check_header, Header, Step, Trace, BIN_LIMIT};
use crate::error::TraceError;

/// One frame of a version-2 bincode trace (decoding side).
#[derive(Debug, Deserialize)]
pub enum Record {
    Header(Box<Header>),
    Step(Box<Step>),
    /// Idle steps `first..=through`.
    Idle {
        first: u64,
        through: u64,
    },
    End(BTreeMap<String, Vec<u32>>),
}

/// The encoding side of [`Record`] (same variants, same order, borrowed).
#[derive(Debug, Serialize)]
pub enum RecordRef<'a> {
    Header(&'a Header),
    Step(&'a Step),
    Idle { first: u64, through: u64 },
    End(&'a BTreeMap<String, Vec<u32>>),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<BIN_LIMIT>()
}

/// One sentence for a bincode decoding failure (bincode's own `Display` is a debug dump).
pub fn describe(e: &bincode::error::DecodeError) -> String {
    use bincode::error::DecodeError as E;
    match e {
        E::UnexpectedEnd { .. } => "the data ends in the middle of a value (truncated or corrupt)".into(),
        E::LimitExceeded => format!("a length exceeds the {BIN_LIMIT}-byte limit (corrupt data)"),
        E::UnexpectedVariant { type_name, found, .. } => {
            format!("variant {found} of {type_name} does not exist (corrupt data, or not a specreplay trace)")
        }
        E::Utf8 { .. } => "a string is not valid UTF-8 (corrupt data)".into(),
        E::InvalidBooleanValue(b) => format!("byte {b} is not a boolean (corrupt data)"),
        E::InvalidIntegerType { .. } => "an integer has an invalid encoding (corrupt data)".into(),
        E::OutsideUsizeRange(n) => format!("a length of {n} does not fit this machine (corrupt data)"),
        E::OtherString(s) => s.clone(),
        E::Other(s) => (*s).to_string(),
        _ => "corrupt data".into(),
    }
}

/// Writes one frame.
pub(crate) fn write_frame<W: Write>(w: &mut W, scratch: &mut Vec<u8>, r: &RecordRef) -> std::io::Result<()> {
    scratch.clear();
    bincode::serde::encode_into_std_write(r, scratch, bincode::config::standard())
        .map_err(|e| std::io::Error::other(format!("bincode: {e}")))?;
    if scratch.len() > BIN_LIMIT {
        return Err(std::io::Error::other(format!(
            "a trace record of {} bytes exceeds the frame limit",
            scratch.len()
        )));
    }
    w.write_all(&(scratch.len() as u32).to_le_bytes())?;
    w.write_all(scratch)
}

/// What follows the magic.
pub(crate) enum Opened {
    /// Header, file version, body.
    V2(Header, u32, BinBody),
    V1(Trace),
}

/// Reads the magic, the version and the header record (or, for version 1, everything).
pub(crate) fn open<R: Read>(src: &mut Src<R>) -> Result<Opened, TraceError> {
    let mut head = [0u8; 12];
    if !src.read_exact(&mut head)? {
        return Err(TraceError::Bincode("the file ends inside its 12-byte header".into()));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    match version {
        1 => {
            let bytes = src.read_rest(BIN_LIMIT)?;
            let (trace, used): (Trace, usize) =
                bincode::serde::decode_from_slice(&bytes, config()).map_err(|e| TraceError::Bincode(describe(&e)))?;
            if used != bytes.len() {
                return Err(TraceError::Bincode(format!("{} bytes after the end of the trace", bytes.len() - used)));
            }
            if trace.version != 1 {
                return Err(TraceError::Bincode(format!(
                    "the header says version 1 but the trace inside says version {}",
                    trace.version
                )));
            }
            check_header(Some(&trace.format), Some(trace.version))?;
            Ok(Opened::V1(trace))
        }
        2 => {
            let mut body = BinBody { frames: 0, done: false, buf: Vec::new() };
            match body.frame(src)? {
                Some(Record::Header(h)) => {
                    if h.version != version {
                        return Err(TraceError::Bincode(format!(
                            "the file header says version {version} but its header record says version {}",
                            h.version
                        )));
                    }
                    check_header(Some(&h.format), Some(h.version))?;
                    Ok(Opened::V2(*h, version, body))
                }
                Some(_) => Err(TraceError::Bincode("the first record is not the trace header".into())),
                None => Err(TraceError::Bincode("the file ends before the trace header".into())),
            }
        }
        v => Err(check_header(Some(super::FORMAT), Some(v))
            .err()
            .unwrap_or(TraceError::Version { found: v, supported: super::VERSION })),
    }
}

/// Frames after the header, read on demand.
pub(crate) struct BinBody {
    frames: u64,
    done: bool,
    buf: Vec<u8>,
}

impl BinBody {
    /// The next record, `None` at a clean end of input (between frames).
    fn frame<R: Read>(&mut self, src: &mut Src<R>) -> Result<Option<Record>, TraceError> {
        let start = src.offset;
        if src.peek()?.is_none() {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        if !src.read_exact(&mut len)? {
            return Err(TraceError::Bincode(format!("the file ends inside the length of record {}", self.frames + 1)));
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > BIN_LIMIT {
            return Err(TraceError::Bincode(format!(
                "record {} (byte {start}) claims {len} bytes, over the {BIN_LIMIT}-byte limit (corrupt data)",
                self.frames + 1
            )));
        }
        self.buf.resize(len, 0);
        if !src.read_exact(&mut self.buf)? {
            return Err(TraceError::Bincode(format!(
                "the file ends inside record {} (byte {start}, {len} bytes): truncated",
                self.frames + 1
            )));
        }
        self.frames += 1;
        let (rec, used): (Record, usize) = bincode::serde::decode_from_slice(&self.buf, config())
            .map_err(|e| TraceError::Bincode(format!("record {} (byte {start}): {}", self.frames, describe(&e))))?;
        if used != len {
            return Err(TraceError::Bincode(format!(
                "record {} (byte {start}): {} bytes left over inside the frame (corrupt data)",
                self.frames,
                len - used
            )));
        }
        Ok(Some(rec))
    }

    pub(crate) fn next<R: Read>(&mut self, src: &mut Src<R>) -> Result<Item, TraceError> {
        debug_assert!(!self.done);
        match self.frame(src)? {
            Some(Record::Step(s)) => Ok(Item::Step(s)),
            Some(Record::Idle { first, through }) => Ok(Item::Idle { first, through }),
            Some(Record::End(outputs)) => {
                self.done = true;
                if src.peek()?.is_some() {
                    return Err(TraceError::Bincode("data after the end record".into()));
                }
                Ok(Item::End(outputs))
            }
            Some(Record::Header(_)) => Err(TraceError::Bincode(format!("record {} is a second header", self.frames))),
            None => Err(TraceError::Bincode(format!(
                "the file ends after record {} without its end record: truncated",
                self.frames
            ))),
        }
    }
}
