//! The logits comparison file: what a forward pass produced for a few prompts, written
//! by specreplay (`gpu reference`, the CPU reference; the GPU forward pass can write the
//! same) and by `scripts/hf_reference.py` (transformers' `Qwen3ForCausalLM`), and read by
//! `scripts/hf_reference.py compare`.
//!
//! Schema (`"schema": "specreplay-logits-v1"`), one JSON object:
//!
//! ```text
//! {
//!   "schema": "specreplay-logits-v1",
//!   "source": "specreplay-cpu-reference" | "transformers" | ...,   // who computed it
//!   "dtype": "f32-over-bf16" | "bfloat16" | "float32",              // arithmetic
//!   "checkpoint_sha256": "<hex>" | null,                            // Checkpoint::hash
//!   "vocab_size": V,
//!   "prompts": [
//!     {
//!       "ids": [u32, ...],                  // the prompt, L tokens
//!       "prefill_logits_digest": "<hex>",   // SHA-256 of the L×V prefill logits as f32 LE
//!       "prefill_logits_file": "NAME.f32",  // those L×V f32 LE values, row-major, beside
//!                                           // the JSON file (relative path)
//!       "tokens": [u32, ...],               // greedy continuation (argmax, lowest id on ties)
//!       "margins": [f32, ...]               // top-1 minus top-2 logit at each generated
//!                                           // position (same length as tokens)
//!     }, ...
//!   ]
//! }
//! ```
//!
//! Row `i` of the prefill logits is the distribution after `ids[..=i]`; `tokens[0]` is the
//! argmax of row `L − 1`, `margins[0]` its margin.

use std::path::Path;

use crate::error::{ExecError, Result};

/// The `schema` value.
pub const SCHEMA: &str = "specreplay-logits-v1";

/// One prompt's results.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptResult {
    /// The prompt's token ids.
    pub ids: Vec<u32>,
    /// `ids.len()` rows of `vocab` logits.
    pub prefill_logits: Vec<Vec<f32>>,
    /// Greedy continuation.
    pub tokens: Vec<u32>,
    /// Top-1/top-2 margin at each generated position.
    pub margins: Vec<f32>,
}

/// SHA-256 (hex) of `rows` as consecutive f32 little-endian values.
pub fn logits_digest(rows: &[Vec<f32>]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for r in rows {
        for v in r {
            h.update(v.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `json_path` and, beside it, one `<stem>.p<i>.f32` logits file per prompt.
pub fn write(
    json_path: &Path,
    source: &str,
    dtype: &str,
    checkpoint_sha256: Option<&str>,
    vocab_size: usize,
    prompts: &[PromptResult],
) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| ExecError::Input(format!("{}: {e}", p.display()));
    let dir = json_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = json_path.file_stem().and_then(|s| s.to_str()).unwrap_or("logits");
    let mut list = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let name = format!("{stem}.p{i}.f32");
        let bytes: Vec<u8> = p.prefill_logits.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join(&name), bytes).map_err(|e| io(&dir.join(&name), e))?;
        list.push(serde_json::json!({
            "ids": p.ids,
            "prefill_logits_digest": logits_digest(&p.prefill_logits),
            "prefill_logits_file": name,
            "tokens": p.tokens,
            "margins": p.margins,
        }));
    }
    let v = serde_json::json!({
        "schema": SCHEMA,
        "source": source,
        "dtype": dtype,
        "checkpoint_sha256": checkpoint_sha256,
        "vocab_size": vocab_size,
        "prompts": list,
    });
    std::fs::write(json_path, serde_json::to_string(&v).unwrap_or_default() + "\n").map_err(|e| io(json_path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_schema_with_logits_beside_it() {
        let d = crate::model::checkpoint::scratch("cmp");
        let p = PromptResult {
            ids: vec![1, 2],
            prefill_logits: vec![vec![0.5, -1.0], vec![2.0, 0.0]],
            tokens: vec![0],
            margins: vec![2.0],
        };
        write(&d.join("ours.json"), "test", "f32-over-bf16", Some("ab"), 2, std::slice::from_ref(&p)).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("ours.json")).unwrap()).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["prompts"][0]["prefill_logits_file"], "ours.p0.f32");
        assert_eq!(v["prompts"][0]["prefill_logits_digest"], logits_digest(&p.prefill_logits));
        let raw = std::fs::read(d.join("ours.p0.f32")).unwrap();
        assert_eq!(raw.len(), 16);
        assert_eq!(f32::from_le_bytes(raw[4..8].try_into().unwrap()), -1.0);
        // The digest sees every bit.
        assert_ne!(logits_digest(&[vec![0.5, -1.0]]), logits_digest(&[vec![0.5, -1.0000001]]));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
