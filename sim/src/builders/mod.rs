//! The seeds' metadata builders (seeds 000-003): a reference version of each that
//! mirrors the seed's original code, and the seeds' proposed "faster" variants as
//! separate, named implementations, so that every variant can be run against the
//! reference bit for bit (eagerly and under a modelled CUDA-graph replay).
//!
//! | builder | seed | module | variants (reference first) |
//! |---|---|---|---|
//! | `nsa-target-verify` | 001 | [`nsa`], [`cuda_graph`] | `reference`, `uniform-qo`, `general` |
//! | `nsa-draft-extend` | 002 | [`nsa`], [`cuda_graph`] | `reference`, `uniform-qo` (known bad), `general` |
//! | `draft-select` | 000 | [`draft_select`] | `loop`, `vectorized` |
//! | `sparse-indices` | 003 | [`sparse`] | `reference`, `fused-kernel` (known bad), `fused-kernel-clamped` |
//!
//! [`cases`] holds the fuzz/property inputs and the check functions the fuzz targets and
//! `tests/builders.rs` share; [`search`] finds and minimizes counterexamples for
//! `specreplay explain`. The tensor operations are modelled in [`torch`].

// `Mismatch` is a full failure report built on the cold path only; boxing it buys nothing.
#![allow(clippy::result_large_err)]

pub mod bench;
pub mod cases;
pub mod cuda_graph;
pub mod draft_select;
pub mod nsa;
pub mod search;
pub mod sparse;
pub mod torch;

use std::fmt;
use thiserror::Error;

/// Invalid input to a builder. Builders return these, never panic.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BuilderError {
    /// Seed 000: a request asks for more drafts than it has candidates (`torch.topk`
    /// would raise "selected index k out of range").
    #[error("request {request}: draft_count {count} > n_cand {n_cand}")]
    DraftCountExceedsCandidates { request: usize, count: usize, n_cand: usize },
    /// A ragged or mis-sized input (e.g. a scores row of the wrong length).
    #[error("shape error: {0}")]
    Shape(String),
    /// Seed 003: a heavy-hitter index (plus `init_offset`) outside `[0, sk)`.
    #[error("batch {batch} head {head}: heavy index {index} (slot {slot}, + init_offset) is outside [0, {sk})")]
    HeavyIndexOutOfRange { batch: usize, head: usize, slot: usize, index: i64, sk: usize },
    /// Seed 003, the literal fused kernel: it would store outside `weight_list[b][h]`
    /// (undefined behaviour on the device; a clear error here).
    #[error("batch {batch} head {head}: out-of-bounds store at index {index} of weight_list row of length {sk} (undefined behaviour on device)")]
    OutOfBoundsStore { batch: usize, head: usize, index: i64, sk: usize },
}

/// What running a builder produced: values, or a raise (torch error or typed error).
/// Comparing outcomes makes "raises where the reference does not" a distinct result.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    Values(T),
    Error(String),
}

impl<T, E: fmt::Display> From<Result<T, E>> for Outcome<T> {
    fn from(r: Result<T, E>) -> Self {
        match r {
            Ok(v) => Outcome::Values(v),
            Err(e) => Outcome::Error(e.to_string()),
        }
    }
}

/// The first disagreement between a variant and the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub builder: String,
    pub variant: String,
    /// `eager` or `cuda-graph replay`.
    pub path: String,
    /// The output field (`nsa_seqlens_expanded`, `weight_list[0][1]`, `outcome`, ...).
    pub field: String,
    /// Element index inside the field (flat), if the disagreement is an element.
    pub index: Option<usize>,
    /// The request (or batch row) that element belongs to, if any.
    pub request: Option<usize>,
    /// Where the element sits, in words ("request 0, q-row 0", "buffer tail", ...).
    pub location: String,
    pub expected: String,
    pub actual: String,
    /// The whole field, reference then variant (abbreviated).
    pub expected_field: String,
    pub actual_field: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} / {} ({}): field {}", self.builder, self.variant, self.path, self.field)?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        write!(
            f,
            " at {}: expected {}, actual {}\n  reference: {}\n  variant:   {}",
            self.location, self.expected, self.actual, self.expected_field, self.actual_field
        )
    }
}

/// Abbreviated `Debug` of a slice (first 24 elements).
pub fn abbrev<T: fmt::Debug>(v: &[T]) -> String {
    if v.len() <= 24 {
        format!("{v:?} (len {})", v.len())
    } else {
        format!("{:?} ... (len {})", &v[..24], v.len())
    }
}

/// Context for building a [`Mismatch`].
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    pub builder: &'a str,
    pub variant: &'a str,
    pub path: &'a str,
}

impl Ctx<'_> {
    /// Compares one field element by element with `eq`; `locate(i)` names element `i`.
    pub fn compare<T: fmt::Debug>(
        &self,
        field: &str,
        exp: &[T],
        act: &[T],
        eq: impl Fn(&T, &T) -> bool,
        locate: impl Fn(usize) -> (Option<usize>, String),
    ) -> Result<(), Mismatch> {
        let common = exp.len().min(act.len());
        let first = (0..common).find(|&i| !eq(&exp[i], &act[i]));
        let (index, expected, actual) = match first {
            Some(i) => (i, format!("{:?}", exp[i]), format!("{:?}", act[i])),
            None if exp.len() == act.len() => return Ok(()),
            None => {
                let i = common;
                let show = |v: &[T]| v.get(i).map_or("<none: field ends>".to_string(), |x| format!("{x:?}"));
                (i, show(exp), show(act))
            }
        };
        let (request, mut location) = locate(index);
        if exp.len() != act.len() {
            location.push_str(&format!(" (field length: expected {}, actual {})", exp.len(), act.len()));
        }
        Err(Mismatch {
            builder: self.builder.into(),
            variant: self.variant.into(),
            path: self.path.into(),
            field: field.into(),
            index: Some(index),
            request,
            location,
            expected,
            actual,
            expected_field: abbrev(exp),
            actual_field: abbrev(act),
        })
    }

    /// Compares two outcomes: both raising counts as agreement (the caller sees an
    /// exception either way); values are compared by `values`.
    pub fn compare_outcomes<T>(
        &self,
        exp: &Outcome<T>,
        act: &Outcome<T>,
        values: impl FnOnce(&T, &T) -> Result<(), Mismatch>,
    ) -> Result<(), Mismatch> {
        match (exp, act) {
            (Outcome::Values(e), Outcome::Values(a)) => values(e, a),
            (Outcome::Error(_), Outcome::Error(_)) => Ok(()),
            (e, a) => {
                let show = |o: &Outcome<T>| match o {
                    Outcome::Values(_) => "values (no error)".to_string(),
                    Outcome::Error(m) => format!("raises: {m}"),
                };
                Err(Mismatch {
                    builder: self.builder.into(),
                    variant: self.variant.into(),
                    path: self.path.into(),
                    field: "outcome".into(),
                    index: None,
                    request: None,
                    location: "whole call".into(),
                    expected: show(e),
                    actual: show(a),
                    expected_field: show(e),
                    actual_field: show(a),
                })
            }
        }
    }
}

/// One builder and its variants, for `specreplay explain --list`.
#[derive(Debug, Clone, Copy)]
pub struct BuilderInfo {
    pub name: &'static str,
    pub seed: &'static str,
    pub upstream: &'static str,
    /// (variant name, description, known to disagree with the reference)
    pub variants: &'static [(&'static str, &'static str, bool)],
}

/// Every builder and variant specreplay models.
pub const BUILDERS: &[BuilderInfo] = &[
    BuilderInfo {
        name: "nsa-target-verify",
        seed: "001",
        upstream: "sglang nsa_backend.py init_forward_metadata[_replay_cuda_graph], target_verify",
        variants: &[
            ("reference", "upstream list comprehension + torch.cat", false),
            ("uniform-qo", "seed 001 quick win: repeat_interleave(kv-D+1, D) + arange(D).repeat(bs)", false),
            ("general", "vectorized for any qo: repeat_interleave(kv-qo+1, qo) + local offsets", false),
        ],
    },
    BuilderInfo {
        name: "nsa-draft-extend",
        seed: "002",
        upstream: "sglang nsa_backend.py init_forward_metadata[_replay_cuda_graph], draft_extend (v1)",
        variants: &[
            ("reference", "upstream list comprehension + torch.cat, qo = accept_length", false),
            ("uniform-qo", "seed 002's reverted vectorization (assumes qo = D for every request)", true),
            ("general", "vectorized for any qo: repeat_interleave(kv-qo+1, qo) + local offsets", false),
        ],
    },
    BuilderInfo {
        name: "draft-select",
        seed: "000",
        upstream: "TileSpec per-request variable draft counts (sjchoi1/sglang tile_spec/)",
        variants: &[
            ("loop", "per-request torch.topk(scores[i], c_i) (reference)", false),
            ("vectorized", "one topk(max c) + cumsum/repeat_interleave/gather/split", false),
            (
                "vectorized-sorted",
                "the fork's test_vectorized_slice.py: top-max indices sorted by index before the gather",
                true,
            ),
        ],
    },
    BuilderInfo {
        name: "sparse-indices",
        seed: "003",
        upstream: "sparse-attention-hub pqcache optimized_indexer.py (iter-9 torch ops vs iter-11 fused kernel)",
        variants: &[
            ("reference", "iter-9: arange fills + advanced-index weight scatter, sizes clamped to sk", false),
            ("fused-kernel", "iter-11 kernel as written: unclamped sink_size/window_size", true),
            ("fused-kernel-clamped", "iter-11 kernel launched with min(sink, sk), min(window, sk)", false),
        ],
    },
];

/// Looks up a builder by name.
pub fn builder_info(name: &str) -> Option<&'static BuilderInfo> {
    BUILDERS.iter().find(|b| b.name == name)
}
