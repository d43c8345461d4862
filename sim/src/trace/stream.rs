//! Streaming trace reader and writer: one step in memory at a time.
//!
//! [`TraceReader`] detects the encoding by content (bincode magic, else JSON), reads
//! the header up front, then yields steps one by one (idle ranges expanded, at most
//! [`MAX_TRACE_STEPS`](super::MAX_TRACE_STEPS)), then the outputs. [`TraceWriter`] is
//! its inverse and coalesces runs of idle steps into one record.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use super::bin;
use super::json::{self, JsonBody};
use super::{Encoding, Header, Step, BIN_MAGIC, MAX_TRACE_STEPS, VERSION};
use crate::error::TraceError;

/// A byte source with a small buffer, one byte of look-ahead (or a few, for the magic)
/// and the line/column of the next byte (for JSON error positions).
pub(crate) struct Src<R> {
    r: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// 1-based line of the next byte.
    pub(crate) line: u64,
    /// Bytes consumed on the current line.
    pub(crate) col: u64,
    /// Bytes consumed in all.
    pub(crate) offset: u64,
}

const BUF: usize = 64 * 1024;

impl<R: Read> Src<R> {
    pub(crate) fn new(r: R) -> Self {
        Src { r, buf: vec![0; BUF], pos: 0, end: 0, line: 1, col: 0, offset: 0 }
    }

    /// Makes at least one byte available; `false` at end of input.
    fn fill(&mut self) -> Result<bool, TraceError> {
        if self.pos < self.end {
            return Ok(true);
        }
        loop {
            match self.r.read(&mut self.buf) {
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TraceError::Io(format!("read failed: {e}"))),
            }
        }
    }

    /// The next byte without consuming it (`None` at end of input).
    pub(crate) fn peek(&mut self) -> Result<Option<u8>, TraceError> {
        Ok(if self.fill()? { Some(self.buf[self.pos]) } else { None })
    }

    /// Consumes the byte [`peek`](Self::peek) returned.
    pub(crate) fn bump(&mut self) {
        debug_assert!(self.pos < self.end, "bump without a peeked byte");
        let b = self.buf[self.pos];
        self.pos += 1;
        self.offset += 1;
        if b == b'\n' {
            self.line += 1;
            self.col = 0;
        } else {
            self.col += 1;
        }
    }

    /// Whether the input starts with `magic` (consumes nothing).
    pub(crate) fn starts_with(&mut self, magic: &[u8]) -> Result<bool, TraceError> {
        debug_assert!(self.offset == 0 && magic.len() <= BUF);
        while self.end - self.pos < magic.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            }
            let n = loop {
                match self.r.read(&mut self.buf[self.end..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(TraceError::Io(format!("read failed: {e}"))),
                }
            };
            if n == 0 {
                break;
            }
            self.end += n;
        }
        Ok(self.buf[self.pos..self.end].starts_with(magic))
    }

    /// Reads exactly `out.len()` bytes; `false` when the input ended first (any partial
    /// bytes are lost: the caller reports truncation).
    pub(crate) fn read_exact(&mut self, out: &mut [u8]) -> Result<bool, TraceError> {
        let mut done = 0;
        while done < out.len() {
            if !self.fill()? {
                return Ok(false);
            }
            let n = (self.end - self.pos).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            self.offset += n as u64;
            done += n;
        }
        Ok(true)
    }

    /// Reads the rest of the input, failing past `limit` bytes.
    pub(crate) fn read_rest(&mut self, limit: usize) -> Result<Vec<u8>, TraceError> {
        let mut out = self.buf[self.pos..self.end].to_vec();
        self.pos = self.end;
        let mut chunk = vec![0u8; BUF];
        loop {
            if out.len() > limit {
                return Err(TraceError::Limit(format!("a version-1 bincode trace larger than {limit} bytes")));
            }
            match self.r.read(&mut chunk) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TraceError::Io(format!("read failed: {e}"))),
            }
        }
    }
}

/// What the body of a trace yields next.
pub(crate) enum Item {
    Step(Box<Step>),
    /// Idle steps `first..=through`.
    Idle {
        first: u64,
        through: u64,
    },
    End(BTreeMap<String, Vec<u32>>),
}

enum Body {
    Json(JsonBody),
    Bin(bin::BinBody),
    /// A version-1 bincode trace, decoded whole (that format has no frames).
    V1(std::vec::IntoIter<Step>, Option<BTreeMap<String, Vec<u32>>>),
    Done,
}

/// Reads a trace step by step from any byte source.
pub struct TraceReader<R> {
    src: Src<R>,
    header: Header,
    file_version: u32,
    encoding: Encoding,
    body: Body,
    /// Idle steps still to yield: (next, through).
    idle: Option<(u64, u64)>,
    steps: u64,
    outputs: Option<BTreeMap<String, Vec<u32>>>,
}

impl<R: Read> TraceReader<R> {
    /// Reads the header (format and version checked first) and stops before the steps.
    pub fn new(r: R) -> Result<Self, TraceError> {
        let mut src = Src::new(r);
        let (header, file_version, encoding, body) = if src.starts_with(BIN_MAGIC)? {
            match bin::open(&mut src)? {
                bin::Opened::V2(h, v, b) => (h, v, Encoding::Bincode, Body::Bin(b)),
                bin::Opened::V1(t) => {
                    let h = t.header();
                    (h, 1, Encoding::Bincode, Body::V1(t.steps.into_iter(), Some(t.outputs)))
                }
            }
        } else {
            let (h, v, b) = json::open(&mut src)?;
            (h, v, Encoding::Json, Body::Json(b))
        };
        let mut header = header;
        header.version = VERSION;
        Ok(TraceReader { src, header, file_version, encoding, body, idle: None, steps: 0, outputs: None })
    }

    /// The header (config, requests, oracle, notes); `version` is the in-memory one.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The version the file was written in.
    pub fn file_version(&self) -> u32 {
        self.file_version
    }

    /// The encoding the file was written in.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Steps yielded so far.
    pub fn steps_read(&self) -> u64 {
        self.steps
    }

    fn count(&mut self, n: u64) -> Result<(), TraceError> {
        self.steps =
            self.steps.checked_add(n).filter(|&s| s <= MAX_TRACE_STEPS).ok_or_else(|| {
                TraceError::Limit(format!("more than {MAX_TRACE_STEPS} steps (the engine's step limit)"))
            })?;
        Ok(())
    }

    /// The next step (idle ranges expanded), or `None` after the last one.
    pub fn next_step(&mut self) -> Result<Option<Step>, TraceError> {
        if let Some((next, through)) = self.idle {
            self.idle = if next < through { Some((next + 1, through)) } else { None };
            return Ok(Some(Step::idle(next)));
        }
        let item = match &mut self.body {
            Body::Json(b) => b.next(&mut self.src)?,
            Body::Bin(b) => b.next(&mut self.src)?,
            Body::V1(steps, outputs) => match steps.next() {
                Some(s) => Item::Step(Box::new(s)),
                None => Item::End(outputs.take().unwrap_or_default()),
            },
            Body::Done => return Ok(None),
        };
        match item {
            Item::Step(s) => {
                self.count(1)?;
                Ok(Some(*s))
            }
            Item::Idle { first, through } => {
                if through < first {
                    return Err(TraceError::Format(format!(
                        "idle range {first} through {through} runs backwards (after step {})",
                        self.steps
                    )));
                }
                self.count(through - first + 1)?;
                self.idle = if first < through { Some((first + 1, through)) } else { None };
                Ok(Some(Step::idle(first)))
            }
            Item::End(outputs) => {
                self.outputs = Some(outputs);
                self.body = Body::Done;
                Ok(None)
            }
        }
    }

    /// Reads (and drops) any remaining steps, then returns the outputs; fails on data
    /// after the end of the trace.
    pub fn finish(mut self) -> Result<BTreeMap<String, Vec<u32>>, TraceError> {
        while self.next_step()?.is_some() {}
        Ok(self.outputs.take().unwrap_or_default())
    }
}

/// Writes a trace as it is produced: header first, then each step (runs of idle steps
/// coalesced into one record), then the outputs.
pub struct TraceWriter<W: Write> {
    w: W,
    encoding: Encoding,
    /// Whether no element has been written into the steps array yet (JSON).
    first: bool,
    /// Idle run not yet written: (first, through).
    idle: Option<(u64, u64)>,
    steps: u64,
    scratch: Vec<u8>,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the header (always as version [`VERSION`]).
    pub fn new(mut w: W, encoding: Encoding, header: &Header) -> std::io::Result<Self> {
        let mut h = header.clone();
        h.version = VERSION;
        let mut scratch = Vec::new();
        match encoding {
            Encoding::Json => json::write_header(&mut w, &h)?,
            Encoding::Bincode => {
                w.write_all(BIN_MAGIC)?;
                w.write_all(&VERSION.to_le_bytes())?;
                bin::write_frame(&mut w, &mut scratch, &bin::RecordRef::Header(&h))?;
            }
        }
        Ok(TraceWriter { w, encoding, first: true, idle: None, steps: 0, scratch })
    }

    /// Steps pushed so far.
    pub fn steps_written(&self) -> u64 {
        self.steps
    }

    /// Appends one step.
    pub fn push(&mut self, s: &Step) -> std::io::Result<()> {
        self.steps += 1;
        if s.is_pure_idle() {
            if let Some((first, through)) = self.idle {
                if through.checked_add(1) == Some(s.step) {
                    self.idle = Some((first, s.step));
                    return Ok(());
                }
            }
            self.flush_idle()?;
            self.idle = Some((s.step, s.step));
            return Ok(());
        }
        self.flush_idle()?;
        match self.encoding {
            Encoding::Json => json::write_step(&mut self.w, self.first, s)?,
            Encoding::Bincode => bin::write_frame(&mut self.w, &mut self.scratch, &bin::RecordRef::Step(s))?,
        }
        self.first = false;
        Ok(())
    }

    fn flush_idle(&mut self) -> std::io::Result<()> {
        if let Some((first, through)) = self.idle.take() {
            match self.encoding {
                Encoding::Json => json::write_idle(&mut self.w, self.first, first, through)?,
                Encoding::Bincode => {
                    bin::write_frame(&mut self.w, &mut self.scratch, &bin::RecordRef::Idle { first, through })?
                }
            }
            self.first = false;
        }
        Ok(())
    }

    /// Writes the outputs and the end of the trace; returns the sink, flushed.
    pub fn finish(mut self, outputs: &BTreeMap<String, Vec<u32>>) -> std::io::Result<W> {
        self.flush_idle()?;
        match self.encoding {
            Encoding::Json => json::write_end(&mut self.w, self.first, outputs)?,
            Encoding::Bincode => bin::write_frame(&mut self.w, &mut self.scratch, &bin::RecordRef::End(outputs))?,
        }
        self.w.flush()?;
        Ok(self.w)
    }
}
