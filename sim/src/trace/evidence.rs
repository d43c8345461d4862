//! What a trace recorded by a real model carries besides the engine's bookkeeping: where
//! it ran (header `backend`, `device`, `checkpoint`, `module_hashes`) and, per step, one
//! [`LogitsRow`] per logits row the forward pass computed (`Step::logits`): a digest of
//! the row, its top-1 token and logit, and the top-1 minus top-2 margin.
//!
//! These fields are evidence, not bookkeeping: the simulator never produces them, `replay`
//! ignores them when only one side carries them, and `diff` of two traces that both carry
//! them compares them (and uses them to classify a divergence, `crate::divergence`).
//!
//! Every one of them is empty in a simulator trace and then written nowhere, so such a
//! trace keeps its bytes in JSON and bincode alike. Like `Step::random_draws` (the
//! precedent), a non-empty value can only be written as JSON: [`JsonOnly`] writes nothing
//! to bincode when empty and refuses to be written there otherwise.
//!
//! Numbers are lossless in JSON: the 64-bit digest is a 16-digit hex string (a JSON number
//! above 2^53 does not survive an f64 reader), each f32 its shortest round-trip decimal
//! (non-finite values as the strings `"inf"`, `"-inf"`, `"NaN"`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A value written only to JSON traces (see the module documentation): bincode holds it
/// only when it equals `T::default()`, as nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonOnly<T>(pub T);

impl<T: Default + PartialEq> JsonOnly<T> {
    /// True when the value is `T::default()` (then written nowhere).
    pub fn is_empty(&self) -> bool {
        self.0 == T::default()
    }
}

impl<T> std::ops::Deref for JsonOnly<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for JsonOnly<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Serialize + Default + PartialEq> Serialize for JsonOnly<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else if self.is_empty() {
            s.serialize_unit()
        } else {
            Err(serde::ser::Error::custom(
                "traces with model evidence (backend, device, checkpoint, module hashes, logits rows) can only be written as JSON",
            ))
        }
    }
}

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for JsonOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            Ok(JsonOnly(T::deserialize(d)?))
        } else {
            <()>::deserialize(d)?;
            Ok(JsonOnly(T::default()))
        }
    }
}

/// JSON: the schema of `T` itself.
impl<T: JsonSchema> JsonSchema for JsonOnly<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(g)
    }
}

/// The weights a run used (header `checkpoint`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointInfo {
    /// The checkpoint folder as given on the command line, or, for in-memory random
    /// weights, `random PRESET seed S` (for instance `random qwen3-0.6b seed 0`).
    pub source: String,
    /// sha256 of the checkpoint's files (`specreplay_executor::model::Checkpoint::hash`,
    /// the hash `gpu make-checkpoint` prints); absent for in-memory random weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A 64-bit logits-row digest: FNV-1a over the row's bf16 bits (equal rows, equal
/// digests). JSON: 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub u64);

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(serde::de::Error::custom(format!("digest {s:?} is not 16 lowercase hex digits")));
        }
        u64::from_str_radix(&s, 16).map(Digest).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Digest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Digest".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[0-9a-f]{16}$",
            "description": "64-bit FNV-1a digest of a logits row's bf16 bits, as 16 lowercase hex digits"})
    }
}

/// An f32 compared bit for bit (so `NaN` equals itself and `-0.0` differs from `0.0`:
/// two recordings agree only if the device produced the same bits). JSON: the shortest
/// decimal that reads back as the same f32; `"inf"`, `"-inf"` or `"NaN"` when not finite.
#[derive(Debug, Clone, Copy, Default)]
pub struct F32(pub f32);

impl PartialEq for F32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for F32 {}

impl std::fmt::Display for F32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for F32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        if x.is_finite() {
            s.serialize_f32(x)
        } else if x.is_nan() {
            s.serialize_str("NaN")
        } else if x > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }
}

impl<'de> Deserialize<'de> for F32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(f32),
            Str(String),
        }
        match Repr::deserialize(d)? {
            Repr::Num(x) => Ok(F32(x)),
            Repr::Str(s) => match s.as_str() {
                "inf" => Ok(F32(f32::INFINITY)),
                "-inf" => Ok(F32(f32::NEG_INFINITY)),
                "NaN" => Ok(F32(f32::NAN)),
                _ => Err(serde::de::Error::custom(format!("{s:?} is not a number, \"inf\", \"-inf\" or \"NaN\""))),
            },
        }
    }
}

impl JsonSchema for F32 {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "F32".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"anyOf": [{"type": "number"}, {"type": "string", "enum": ["inf", "-inf", "NaN"]}],
            "description": "an f32: its shortest round-trip decimal, or inf / -inf / NaN"})
    }
}

/// One logits row of a step as the device computed it, in `logits_indices` order (a
/// verify row of `n` drafts has `n + 1` rows; a partial prefill's discarded row is
/// recorded too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogitsRow {
    /// The request the row belongs to.
    pub req_id: String,
    /// Context length the row follows: the sequence position of the token sampled from it.
    pub position: u32,
    /// [`Digest`] of the whole row (bf16 bits).
    pub digest: Digest,
    /// Argmax of the row (lowest index on ties, as the greedy sampler picks).
    pub top1: u32,
    /// The row's largest logit.
    pub top1_logit: F32,
    /// Largest minus second-largest logit (0 on an exact tie).
    pub margin: F32,
}

impl LogitsRow {
    /// Whether the row's top-1 and top-2 are within bf16 rounding of a tie
    /// ([`near_tie_threshold`]).
    pub fn is_near_tie(&self) -> bool {
        is_near_tie(self.margin.0, self.top1_logit.0)
    }
}

/// The largest margin treated as a numerical near-tie for a row whose top-1 logit is
/// `top1`: `2^-7 × |top1|`.
///
/// Why: the logits are bf16 values (8 significant bits), so one unit in the last place at
/// `|top1|` is `2^(floor(log2 |top1|) - 7)`, between `2^-8 × |top1|` and `2^-7 × |top1|`.
/// A margin of at most `2^-7 × |top1|` is therefore at most two bf16 ulps: one different
/// rounding of either logit (half an ulp each, from a different f32 accumulation order or
/// a different but equally valid kernel) can close it and swap the argmax. A larger margin
/// cannot be explained by rounding of the final values alone. The product is exact (a
/// power-of-two scaling) except for subnormal results.
pub fn near_tie_threshold(top1: f32) -> f32 {
    top1.abs() * (1.0 / 128.0)
}

/// `margin <= near_tie_threshold(top1)` (an exact tie, margin 0, always qualifies; a NaN
/// never does).
pub fn is_near_tie(margin: f32, top1: f32) -> bool {
    margin == 0.0 || margin <= near_tie_threshold(top1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f32 bit pattern class survives JSON: shortest decimals, subnormals, signed
    /// zero, infinities, NaN.
    #[test]
    fn f32_round_trips_bit_for_bit_through_json() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut values: Vec<f32> =
            vec![0.0, -0.0, 1.0, f32::MIN_POSITIVE, 1e-45, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY];
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(f32::from_bits(x as u32));
        }
        for v in values {
            let j = serde_json::to_string(&F32(v)).unwrap();
            let back: F32 = serde_json::from_str(&j).unwrap();
            if v.is_nan() {
                assert!(back.0.is_nan(), "{j}");
            } else {
                assert_eq!(back, F32(v), "{v:e} -> {j}");
            }
        }
        assert!(serde_json::from_str::<F32>("\"big\"").is_err());
    }

    #[test]
    fn digests_are_16_hex_digits_and_lossless() {
        for d in [0u64, 1, u64::MAX, 0x8000_0000_0000_0001, (1 << 53) + 1] {
            let j = serde_json::to_string(&Digest(d)).unwrap();
            assert_eq!(j.len(), 18, "{j}");
            assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), Digest(d));
        }
        for bad in ["\"12\"", "\"00000000000000AB\"", "\"+000000000000000\"", "17"] {
            assert!(serde_json::from_str::<Digest>(bad).is_err(), "{bad}");
        }
    }

    /// The threshold admits two bf16 ulps at the top-1 logit and nothing more.
    #[test]
    fn near_tie_threshold_is_two_bf16_ulps_at_most() {
        // top-1 = 8.0: bf16 ulp there is 2^(3-7) = 1/16; threshold = 1/16.
        assert!(is_near_tie(0.0625, 8.0));
        assert!(!is_near_tie(0.125, 8.0));
        // top-1 = 15.5 (ulp 1/16 too): threshold 0.121..., two ulps (0.125) is just past it.
        assert!(is_near_tie(0.0625, 15.5));
        assert!(!is_near_tie(0.125, 15.5));
        // Negative top-1 logits use |top1|; an exact tie always counts; NaN never.
        assert!(is_near_tie(0.03, -4.0));
        assert!(is_near_tie(0.0, 0.0));
        assert!(!is_near_tie(f32::NAN, 4.0));
        assert!(!is_near_tie(1e-3, 0.0));
    }

    #[test]
    fn json_only_values_are_refused_by_bincode_unless_empty() {
        let cfg = bincode::config::standard();
        let empty: JsonOnly<String> = JsonOnly::default();
        let bytes = bincode::serde::encode_to_vec(&empty, cfg).unwrap();
        assert!(bytes.is_empty());
        let (back, n): (JsonOnly<String>, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!((back, n), (empty, 0));
        let full = JsonOnly("cuda".to_string());
        let e = bincode::serde::encode_to_vec(&full, cfg).unwrap_err().to_string();
        assert!(e.contains("only be written as JSON"), "{e}");
        assert_eq!(serde_json::to_string(&full).unwrap(), "\"cuda\"");
    }
}
