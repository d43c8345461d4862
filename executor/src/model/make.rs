//! `specreplay gpu make-checkpoint`: a random-weight checkpoint in exactly Hugging Face's
//! layout, so tests and benchmarks have a real-shaped model without downloading one.
//!
//! * Initialisation as `transformers` `PreTrainedModel._init_weights`
//!   (`transformers/modeling_utils.py`): every `nn.Linear` and `nn.Embedding` weight from
//!   N(0, `initializer_range`²) with `initializer_range` 0.02, biases 0, RMSNorm weights 1
//!   (`Qwen3RMSNorm.__init__`: `torch.ones`), then stored as bf16 (round to nearest even).
//! * Layout as `save_pretrained`: `config.json`, `model.safetensors` (or
//!   `model-0000i-of-0000n.safetensors` shards and `model.safetensors.index.json` with
//!   `metadata.total_size` and a name-sorted `weight_map`); a tied LM head is not stored.
//! * The normal variates are a pure function of `(seed, tensor index, element index)`:
//!   sim's Philox4x32-10 ([`specreplay_sim::philox`]) with counter
//!   `[tensor, pair, INIT_PURPOSE, block]` and key = the seed, turned into normals by
//!   Marsaglia's polar form of the Box–Muller transform (no sin/cos: only IEEE basic
//!   operations, `sqrt` and sim's bit-reproducible `philox::ln`, so the same seed gives
//!   the same bytes on every machine, whatever the thread count).
//! * Written per tensor (one tensor in memory at a time, generated on all cores) into
//!   `DIR.tmp`, renamed to `DIR` when complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use specreplay_sim::philox::{ln, philox4x32_10};

use super::checkpoint::{expected_tensors, CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE};
use super::config::INITIALIZER_RANGE;
use super::tokenizer::{byte_level_tokenizer_json, TOKENIZER_FILE};
use super::{DType, MemWeights, ModelConfig};
use crate::error::{ExecError, Result};

/// The third Philox counter word of weight initialisation ("INIT"): distinct from the
/// sampling purposes (1..3) of random mode.
pub const INIT_PURPOSE: u32 = 0x494E_4954;

/// A named model shape for `make-checkpoint --preset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// `Qwen/Qwen3-0.6B`'s `config.json` ([`ModelConfig::qwen3_0_6b`]): 596 M parameters,
    /// 1.19 GB in bf16.
    Qwen3_0_6B,
    /// [`ModelConfig::tiny`]: a 2-layer Qwen3 for tests (vocab 512, hidden 64).
    Tiny,
}

impl Preset {
    /// Every preset name, as the CLI spells it.
    pub const NAMES: [&'static str; 2] = ["qwen3-0.6b", "tiny"];

    /// The preset called `name`.
    pub fn parse(name: &str) -> Result<Preset> {
        match name {
            "qwen3-0.6b" => Ok(Preset::Qwen3_0_6B),
            "tiny" => Ok(Preset::Tiny),
            _ => Err(ExecError::Input(format!(
                "unknown preset {name:?} (expected one of: {})",
                Preset::NAMES.join(", ")
            ))),
        }
    }

    /// The architecture of this preset.
    pub fn config(self) -> ModelConfig {
        match self {
            Preset::Qwen3_0_6B => ModelConfig::qwen3_0_6b(),
            Preset::Tiny => ModelConfig::tiny(),
        }
    }
}

/// How a tensor is initialised (`_init_weights` by module type).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// N(0, std²): linear and embedding weights.
    Normal(f64),
    /// 1: RMSNorm weights.
    Ones,
    /// 0: biases.
    Zeros,
}

/// The initialisation of the tensor called `name`.
pub fn init_of(name: &str) -> Init {
    if name.ends_with("norm.weight") {
        Init::Ones
    } else if name.ends_with(".bias") {
        Init::Zeros
    } else {
        Init::Normal(INITIALIZER_RANGE)
    }
}

/// A uniform in (−1, 1), never 0: `(2·(x >> 8) + 1 − 2²⁴) / 2²⁴`, exact in binary64.
fn signed_uniform(x: u32) -> f64 {
    (f64::from(x >> 8) * 2.0 + 1.0 - 16_777_216.0) / 16_777_216.0
}

/// The standard normal pair number `pair` of tensor `tensor` under `seed`: Marsaglia's
/// polar method on Philox blocks `[tensor, pair, INIT_PURPOSE, b]` for b = 0, 1, …, each
/// block offering two candidate points (words 0–1, then 2–3); the first point strictly
/// inside the unit disc is used: `(v1·f, v2·f)` with `f = sqrt(−2 ln s / s)`,
/// `s = v1² + v2²`.
pub fn normal_pair(seed: u64, tensor: u32, pair: u32) -> (f64, f64) {
    let key = [seed as u32, (seed >> 32) as u32];
    let mut b = 0u32;
    loop {
        let w = philox4x32_10([tensor, pair, INIT_PURPOSE, b], key);
        for (x, y) in [(w[0], w[1]), (w[2], w[3])] {
            let (v1, v2) = (signed_uniform(x), signed_uniform(y));
            let s = v1 * v1 + v2 * v2;
            if s < 1.0 {
                let f = (-2.0 * ln(s) / s).sqrt();
                return (v1 * f, v2 * f);
            }
        }
        b = b.wrapping_add(1);
    }
}

/// The bf16 bytes (little-endian) of tensor number `index` (its place in
/// [`expected_tensors`]) with `n` elements initialised as `init`, generated on up to
/// `threads` threads (the bytes do not depend on the thread count).
pub fn tensor_bytes(seed: u64, index: u32, n: usize, init: Init, threads: usize) -> Vec<u8> {
    let mut out = vec![0u8; 2 * n];
    match init {
        Init::Ones => {
            let one = half::bf16::ONE.to_le_bytes();
            out.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&one));
        }
        Init::Zeros => {}
        Init::Normal(std) => {
            // Chunks of whole pairs (4 bytes = 2 elements), one per thread.
            let pairs = n.div_ceil(2);
            let per = pairs.div_ceil(threads.max(1)).max(1) * 4;
            std::thread::scope(|s| {
                for (ci, chunk) in out.chunks_mut(per).enumerate() {
                    s.spawn(move || {
                        let first_pair = ci * per / 4;
                        for (k, c) in chunk.chunks_mut(4).enumerate() {
                            let (z0, z1) = normal_pair(seed, index, (first_pair + k) as u32);
                            c[..2].copy_from_slice(&half::bf16::from_f64(z0 * std).to_le_bytes());
                            if c.len() == 4 {
                                c[2..].copy_from_slice(&half::bf16::from_f64(z1 * std).to_le_bytes());
                            }
                        }
                    });
                }
            });
        }
    }
    out
}

/// The weights [`make_checkpoint`] writes for `cfg` and `seed`, in memory (tests and
/// small models; one generator thread per core).
pub fn random_weights(cfg: &ModelConfig, seed: u64) -> MemWeights {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut w = MemWeights::new();
    for (i, (name, shape)) in expected_tensors(cfg).iter().enumerate() {
        let n: usize = shape.iter().product();
        w.insert_raw(name, DType::BF16, shape, tensor_bytes(seed, i as u32, n, init_of(name), threads));
    }
    w
}

/// What `make-checkpoint` does besides the architecture.
#[derive(Clone, Debug)]
pub struct MakeOptions {
    /// Seed of the weights.
    pub seed: u64,
    /// Split into shards of at most this many bytes of tensor data (a larger tensor gets
    /// a shard of its own); `None`: one `model.safetensors`.
    pub shard_bytes: Option<u64>,
    /// Also write the byte-level `tokenizer.json` ([`byte_level_tokenizer_json`]).
    pub tokenizer: bool,
    /// Generator threads (0: all cores).
    pub threads: usize,
}

impl Default for MakeOptions {
    fn default() -> Self {
        MakeOptions { seed: 0, shard_bytes: None, tokenizer: true, threads: 0 }
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct MakeReport {
    /// The checkpoint folder.
    pub dir: PathBuf,
    /// The safetensors files, in order.
    pub files: Vec<String>,
    /// Number of tensors.
    pub tensors: usize,
    /// Number of parameters.
    pub parameters: usize,
    /// Bytes of tensor data.
    pub data_bytes: u64,
    /// Whether a `tokenizer.json` was written.
    pub tokenizer: bool,
}

fn io(path: &Path, e: impl std::fmt::Display) -> ExecError {
    ExecError::Input(format!("{}: {e}", path.display()))
}

/// `DIR` with `.tmp` appended to its last component.
pub fn temp_dir_for(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_os_string();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes a random-weight checkpoint of `cfg` into `dir`, which must not exist or be an
/// empty directory. Everything is written into `DIR.tmp` (which must not exist) and
/// renamed to `DIR` at the end, so `DIR` never holds a partial checkpoint.
pub fn make_checkpoint(cfg: &ModelConfig, opts: &MakeOptions, dir: &Path) -> Result<MakeReport> {
    if dir.as_os_str().is_empty() {
        return Err(ExecError::Input("make-checkpoint: empty output path".into()));
    }
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dir, e)),
        Ok(m) if m.is_dir() => {
            let mut entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
            if entries.next().is_some() {
                return Err(io(dir, "exists and is not empty (make-checkpoint writes a new folder)"));
            }
        }
        Ok(_) => return Err(io(dir, "exists and is not a directory")),
    }
    let tmp = temp_dir_for(dir);
    if std::fs::symlink_metadata(&tmp).is_ok() {
        return Err(io(&tmp, "exists (left by an interrupted make-checkpoint?); remove it first"));
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, format!("cannot create the parent folder: {e}")))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
    let result = write_into(cfg, opts, &tmp).and_then(|mut rep| {
        // An empty DIR is replaced; rename() would fail on a non-empty one.
        if dir.is_dir() {
            std::fs::remove_dir(dir).map_err(|e| io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| io(dir, format!("cannot rename {} into place: {e}", tmp.display())))?;
        rep.dir = dir.to_path_buf();
        Ok(rep)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Which tensors go into which file: consecutive runs of [`expected_tensors`].
fn plan_shards(sizes: &[u64], limit: Option<u64>) -> Vec<std::ops::Range<usize>> {
    let Some(limit) = limit else {
        return std::iter::once(0..sizes.len()).collect();
    };
    let mut out = Vec::new();
    let (mut start, mut acc) = (0, 0u64);
    for (i, &s) in sizes.iter().enumerate() {
        if i > start && acc + s > limit {
            out.push(start..i);
            start = i;
            acc = 0;
        }
        acc += s;
    }
    out.push(start..sizes.len());
    out
}

/// The safetensors name of a dtype.
fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        DType::F32 => "F32",
    }
}

/// The safetensors header of `tensors` (name, dtype, shape), laid out back to back in
/// that order: JSON with `__metadata__` `{"format": "pt"}` (as torch's `save_file`) and
/// each tensor's `dtype`, `shape`, `data_offsets`, padded with spaces to a multiple of 8
/// bytes, preceded by its length (u64 little-endian).
fn safetensors_header(tensors: &[(&str, DType, &[usize])]) -> Vec<u8> {
    let mut o = serde_json::Map::new();
    o.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut off = 0usize;
    for (name, dtype, shape) in tensors {
        let len = dtype.size() * shape.iter().product::<usize>();
        o.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype_name(*dtype), "shape": shape, "data_offsets": [off, off + len]}),
        );
        off += len;
    }
    let mut json = serde_json::to_string(&serde_json::Value::Object(o)).unwrap_or_default().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out
}

/// Writes a small safetensors file from tensors held in memory (name, dtype, shape,
/// little-endian bytes), e.g. a hand-made checkpoint in a test.
pub fn write_safetensors(path: &Path, tensors: &[(String, DType, Vec<usize>, Vec<u8>)]) -> Result<()> {
    let heads: Vec<(&str, DType, &[usize])> =
        tensors.iter().map(|(n, d, s, _)| (n.as_str(), *d, s.as_slice())).collect();
    let mut bytes = safetensors_header(&heads);
    for (_, _, _, b) in tensors {
        bytes.extend_from_slice(b);
    }
    std::fs::write(path, bytes).map_err(|e| io(path, e))
}

fn write_into(cfg: &ModelConfig, opts: &MakeOptions, tmp: &Path) -> Result<MakeReport> {
    let threads =
        if opts.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { opts.threads };
    let tensors = expected_tensors(cfg);
    let sizes: Vec<u64> = tensors.iter().map(|(_, s)| 2 * s.iter().product::<usize>() as u64).collect();
    let shards = plan_shards(&sizes, opts.shard_bytes);
    // One file is `model.safetensors` without an index, as `save_pretrained` does.
    let names: Vec<String> = if shards.len() == 1 {
        vec![WEIGHTS_FILE.to_string()]
    } else {
        (1..=shards.len()).map(|i| format!("model-{i:05}-of-{:05}.safetensors", shards.len())).collect()
    };
    std::fs::write(tmp.join(CONFIG_FILE), cfg.to_json()).map_err(|e| io(&tmp.join(CONFIG_FILE), e))?;
    let mut weight_map = std::collections::BTreeMap::new();
    for (range, fname) in shards.iter().zip(&names) {
        let path = tmp.join(fname);
        let file = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 22, file);
        let heads: Vec<(&str, DType, &[usize])> =
            tensors[range.clone()].iter().map(|(n, s)| (n.as_str(), DType::BF16, s.as_slice())).collect();
        w.write_all(&safetensors_header(&heads)).map_err(|e| io(&path, e))?;
        for i in range.clone() {
            let (name, shape) = &tensors[i];
            let n: usize = shape.iter().product();
            let bytes = tensor_bytes(opts.seed, i as u32, n, init_of(name), threads);
            w.write_all(&bytes).map_err(|e| io(&path, e))?;
            weight_map.insert(name.clone(), fname.clone());
            tracing::debug!(tensor = %name, ?shape, file = %fname, "written");
        }
        let file = w.into_inner().map_err(|e| io(&path, e.error()))?;
        file.sync_all().map_err(|e| io(&path, e))?;
    }
    let data_bytes: u64 = sizes.iter().sum();
    if names.len() > 1 {
        let index = serde_json::json!({"metadata": {"total_size": data_bytes}, "weight_map": weight_map});
        let text = serde_json::to_string_pretty(&index).unwrap_or_default() + "\n";
        std::fs::write(tmp.join(INDEX_FILE), text).map_err(|e| io(&tmp.join(INDEX_FILE), e))?;
    }
    let mut tokenizer = false;
    if opts.tokenizer {
        match byte_level_tokenizer_json(cfg.vocab_size) {
            Some(json) => {
                std::fs::write(tmp.join(TOKENIZER_FILE), json).map_err(|e| io(&tmp.join(TOKENIZER_FILE), e))?;
                tokenizer = true;
            }
            None => tracing::info!(vocab = cfg.vocab_size, "vocabulary under 256 tokens: no tokenizer.json"),
        }
    }
    Ok(MakeReport {
        dir: tmp.to_path_buf(),
        files: names,
        tensors: tensors.len(),
        parameters: sizes.iter().sum::<u64>() as usize / 2,
        data_bytes,
        tokenizer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::scratch;
    use crate::model::WeightSource;

    fn values(bytes: &[u8]) -> Vec<f64> {
        bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect()
    }

    #[test]
    fn normals_have_mean_0_and_variance_1_and_depend_on_seed_tensor_and_pair() {
        let n = 200_000u32;
        let (mut s1, mut s2, mut s4) = (0f64, 0f64, 0f64);
        for p in 0..n / 2 {
            let (a, b) = normal_pair(7, 0, p);
            for z in [a, b] {
                s1 += z;
                s2 += z * z;
                s4 += z * z * z * z;
            }
        }
        let nf = f64::from(n);
        let (mean, var, kurt) = (s1 / nf, s2 / nf, s4 / nf);
        // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032; 5 sigma.
        assert!(mean.abs() < 0.012, "mean {mean}");
        assert!((var - 1.0).abs() < 0.016, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.1, "fourth moment {kurt} (normal: 3)");
        assert_eq!(normal_pair(7, 0, 5), normal_pair(7, 0, 5));
        assert_ne!(normal_pair(7, 0, 5), normal_pair(8, 0, 5));
        assert_ne!(normal_pair(7, 0, 5), normal_pair(7, 1, 5));
        assert_ne!(normal_pair(7, 0, 5), normal_pair(7, 0, 6));
    }

    #[test]
    fn tensor_bytes_follow_init_and_not_the_thread_count() {
        let one = tensor_bytes(1, 4, 10_001, Init::Normal(0.02), 1);
        assert_eq!(one, tensor_bytes(1, 4, 10_001, Init::Normal(0.02), 3));
        assert_eq!(one.len(), 20_002);
        let v = values(&one);
        let sd = (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
        assert!((sd - 0.02).abs() < 0.001, "std {sd}");
        assert!(values(&tensor_bytes(1, 4, 9, Init::Ones, 2)).iter().all(|&x| x == 1.0));
        assert!(tensor_bytes(1, 4, 9, Init::Zeros, 2).iter().all(|&b| b == 0));
        assert_eq!(init_of("model.layers.3.self_attn.q_norm.weight"), Init::Ones);
        assert_eq!(init_of("model.norm.weight"), Init::Ones);
        assert_eq!(init_of("model.layers.0.self_attn.k_proj.bias"), Init::Zeros);
        assert_eq!(init_of("model.embed_tokens.weight"), Init::Normal(0.02));
        // Element 2p+1 of an odd-length tensor is dropped, the rest are the pairs.
        let (z0, z1) = normal_pair(1, 4, 0);
        assert_eq!(
            &one[..4],
            [half::bf16::from_f64(z0 * 0.02).to_le_bytes(), half::bf16::from_f64(z1 * 0.02).to_le_bytes()].concat()
        );
    }

    #[test]
    fn presets_match_their_configs() {
        assert_eq!(Preset::parse("qwen3-0.6b").unwrap().config(), ModelConfig::qwen3_0_6b());
        assert_eq!(Preset::parse("tiny").unwrap().config(), ModelConfig::tiny());
        assert_eq!(
            Preset::parse("qwen3-8b").unwrap_err().to_string(),
            "unknown preset \"qwen3-8b\" (expected one of: qwen3-0.6b, tiny)"
        );
    }

    #[test]
    fn make_checkpoint_writes_a_new_folder_atomically() {
        let d = scratch("make");
        let opts = MakeOptions { seed: 1, ..Default::default() };
        // Into an empty existing folder: fine, with the tokenizer; no leftovers.
        let empty = d.join("empty");
        std::fs::create_dir(&empty).unwrap();
        let rep = make_checkpoint(&ModelConfig::tiny(), &opts, &empty).unwrap();
        assert_eq!(
            (rep.tensors, rep.files.clone(), rep.tokenizer),
            (1 + 2 * 11 + 1, vec![WEIGHTS_FILE.to_string()], true)
        );
        assert_eq!(rep.parameters, ModelConfig::tiny().num_parameters());
        let mut listed: Vec<String> =
            std::fs::read_dir(&empty).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        listed.sort();
        assert_eq!(listed, [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE]);
        assert!(!temp_dir_for(&empty).exists());
        // Not over a non-empty folder, a file, or beside a leftover DIR.tmp.
        let e = make_checkpoint(&ModelConfig::tiny(), &opts, &empty).unwrap_err().to_string();
        assert_eq!(e, format!("{}: exists and is not empty (make-checkpoint writes a new folder)", empty.display()));
        let file = d.join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(make_checkpoint(&ModelConfig::tiny(), &opts, &file)
            .unwrap_err()
            .to_string()
            .ends_with("exists and is not a directory"));
        let fresh = d.join("fresh");
        std::fs::create_dir(temp_dir_for(&fresh)).unwrap();
        let e = make_checkpoint(&ModelConfig::tiny(), &opts, &fresh).unwrap_err().to_string();
        assert!(e.contains("fresh.tmp: exists (left by an interrupted make-checkpoint?)"), "{e}");
        assert!(!fresh.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn random_weights_are_hf_init_in_hf_layout() {
        let cfg = ModelConfig::tiny();
        let w = random_weights(&cfg, 9);
        let norm = values(w.tensor("model.layers.1.self_attn.k_norm.weight").unwrap().bytes);
        assert_eq!(norm, vec![1.0; 16]);
        let emb = values(w.tensor("model.embed_tokens.weight").unwrap().bytes);
        assert_eq!(emb.len(), 512 * 64);
        let sd = (emb.iter().map(|x| x * x).sum::<f64>() / emb.len() as f64).sqrt();
        assert!((sd - 0.02).abs() < 0.001, "{sd}");
        assert!(w.tensor("lm_head.weight").is_err(), "tied: not stored");
        // Different tensors get different values (distinct counters).
        let q = w.tensor("model.layers.0.self_attn.q_proj.weight").unwrap().bytes;
        let k = w.tensor("model.layers.0.self_attn.k_proj.weight").unwrap().bytes;
        assert_ne!(&q[..64], &k[..64]);
    }
}
