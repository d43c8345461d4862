//! Prompts as text or token ids, and the optional `tokenizer.json` of a checkpoint
//! folder, read with Hugging Face's `tokenizers` crate (the Rust core of
//! `transformers`' fast tokenizers: `tokenizers/src/tokenizer/mod.rs`,
//! `Tokenizer::from_file`).
//!
//! Text is encoded without special tokens (`add_special_tokens = false`): the prompt's
//! ids are exactly what the tokenizer's model and pre-tokenizer produce, as
//! `tokenizer(text, add_special_tokens=False)` in Python.
//!
//! [`byte_level_tokenizer_json`] writes the small tokenizer `make-checkpoint` puts next to
//! random weights: GPT-2 byte-level BPE with no merges, so any text encodes to one id per
//! UTF-8 byte (ids 0–255) and every id of the vocabulary decodes (ids from 256 on as
//! `<id>`).

use std::path::Path;

use crate::error::{ExecError, Result};

/// The tokenizer file of a checkpoint folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A loaded `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({} tokens)", self.inner.get_vocab_size(true))
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` from `path`.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ExecError::Checkpoint(format!("{}: cannot load: {e}", path.display())))?;
        Ok(Tokenizer { inner })
    }

    /// The tokenizer of checkpoint folder `dir`, `None` when it has no `tokenizer.json`.
    pub fn open(dir: &Path) -> Result<Option<Tokenizer>> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Tokenizer::from_file(&path).map(Some)
    }

    /// The ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc =
            self.inner.encode(text, false).map_err(|e| ExecError::Input(format!("cannot tokenize prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| ExecError::Input(format!("cannot decode tokens: {e}")))
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// A prompt as the user gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Text, encoded by the checkpoint's tokenizer.
    Text(String),
    /// Token ids, used as they are.
    Ids(Vec<u32>),
}

impl Prompt {
    /// Parses comma- or whitespace-separated token ids (`"1, 2 3"`).
    pub fn parse_ids(s: &str) -> Result<Prompt> {
        let ids = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<u32>().map_err(|_| ExecError::Input(format!("token id {t:?} is not a number"))))
            .collect::<Result<Vec<u32>>>()?;
        Ok(Prompt::Ids(ids))
    }

    /// The prompt's token ids: text through `tokenizer` (an error naming the missing
    /// `tokenizer.json` when there is none), ids checked against `vocab_size`. An empty
    /// prompt is refused (generation needs one token to start from).
    pub fn resolve(&self, tokenizer: Option<&Tokenizer>, vocab_size: usize) -> Result<Vec<u32>> {
        let ids = match self {
            Prompt::Text(text) => match tokenizer {
                Some(t) => t.encode(text)?,
                None => {
                    return Err(ExecError::Input(format!(
                    "a text prompt needs the checkpoint's {TOKENIZER_FILE}, and there is none: give token ids instead"
                )))
                }
            },
            Prompt::Ids(ids) => ids.clone(),
        };
        if ids.is_empty() {
            return Err(ExecError::Input("empty prompt (no tokens)".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(ExecError::Input(format!("token id {bad} is outside the vocabulary (size {vocab_size})")));
        }
        Ok(ids)
    }
}

/// GPT-2's byte-to-character table (`bytes_to_unicode` of byte-level BPE): printable
/// Latin-1 bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand for themselves, the other 68
/// bytes for U+0100 onwards in byte order.
pub fn byte_char(b: u8) -> char {
    let printable = |x: u8| (33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174;
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('?')
}

/// A `tokenizer.json` for a vocabulary of `vocab_size` ids: byte-level pre-tokenizer and
/// decoder, a BPE model with no merges whose id `b < 256` is byte `b` and whose ids from
/// 256 on are the strings `<id>` (reachable only by decoding). `None` when
/// `vocab_size < 256` (bytes would not fit).
pub fn byte_level_tokenizer_json(vocab_size: usize) -> Option<String> {
    if vocab_size < 256 {
        return None;
    }
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(byte_char(b).to_string(), serde_json::json!(b));
    }
    for id in 256..vocab_size {
        vocab.insert(format!("<{id}>"), serde_json::json!(id));
    }
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    let t = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []
        }
    });
    Some(serde_json::to_string(&t).unwrap_or_default() + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::scratch;

    fn tiny_tokenizer(tag: &str) -> (std::path::PathBuf, Tokenizer) {
        let d = scratch(tag);
        std::fs::write(d.join(TOKENIZER_FILE), byte_level_tokenizer_json(512).unwrap()).unwrap();
        let t = Tokenizer::open(&d).unwrap().unwrap();
        (d, t)
    }

    #[test]
    fn the_byte_table_is_gpt2s() {
        let chars: std::collections::BTreeSet<char> = (0..=255u8).map(byte_char).collect();
        assert_eq!(chars.len(), 256);
        assert_eq!(byte_char(b'A'), 'A');
        assert_eq!(byte_char(b' '), '\u{120}', "space is 'Ġ'");
        assert_eq!(byte_char(b'\n'), '\u{10a}', "newline is 'Ċ'");
        assert_eq!(byte_char(0), '\u{100}');
        assert_eq!(byte_char(173), '\u{143}', "the soft hyphen is the last non-printable");
    }

    #[test]
    fn byte_level_tokenizer_round_trips_any_text() {
        let (d, t) = tiny_tokenizer("tok");
        assert_eq!(t.vocab_size(), 512);
        let text = "Hello, wörld!\n  tabs\tand emoji 🦀";
        let ids = t.encode(text).unwrap();
        assert_eq!(ids, text.bytes().map(u32::from).collect::<Vec<_>>());
        assert_eq!(t.decode(&ids).unwrap(), text);
        assert_eq!(t.decode(&[104, 105, 300]).unwrap(), "hi<300>");
        assert!(byte_level_tokenizer_json(255).is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn prompts_resolve_or_say_why_not() {
        let (d, t) = tiny_tokenizer("tok-prompt");
        assert_eq!(Prompt::Text("ab".into()).resolve(Some(&t), 512).unwrap(), vec![97, 98]);
        assert_eq!(Prompt::parse_ids("1, 2 3").unwrap().resolve(None, 512).unwrap(), vec![1, 2, 3]);
        let e = Prompt::Text("ab".into()).resolve(None, 512).unwrap_err().to_string();
        assert_eq!(e, "a text prompt needs the checkpoint's tokenizer.json, and there is none: give token ids instead");
        assert_eq!(
            Prompt::Ids(vec![1, 512]).resolve(None, 512).unwrap_err().to_string(),
            "token id 512 is outside the vocabulary (size 512)"
        );
        assert_eq!(Prompt::Ids(vec![]).resolve(None, 512).unwrap_err().to_string(), "empty prompt (no tokens)");
        assert_eq!(Prompt::parse_ids("1,x").unwrap_err().to_string(), "token id \"x\" is not a number");
        // No tokenizer.json: None; a broken one: an error naming it.
        std::fs::remove_file(d.join(TOKENIZER_FILE)).unwrap();
        assert!(Tokenizer::open(&d).unwrap().is_none());
        std::fs::write(d.join(TOKENIZER_FILE), "{}").unwrap();
        assert!(Tokenizer::open(&d).unwrap_err().to_string().contains("tokenizer.json: cannot load"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
