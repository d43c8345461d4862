//! A Hugging Face checkpoint folder, memory-mapped: `config.json` plus `model.safetensors`
//! or the shards named by `model.safetensors.index.json`, as `save_pretrained` writes
//! them and `PreTrainedModel.from_pretrained` reads them
//! (`transformers/modeling_utils.py`: `SAFE_WEIGHTS_NAME` first, then
//! `SAFE_WEIGHTS_INDEX_NAME`; the index's `weight_map` names the shard of each tensor).
//!
//! [`Checkpoint::open`] parses every safetensors header (offsets checked by the
//! `safetensors` crate, the file length must match) and maps the files; the bytes are
//! only read when a tensor is used. [`Checkpoint::validate`] checks that every tensor the
//! architecture needs ([`expected_tensors`]) is there, bf16, of the shape `config.json`
//! implies; each failure is one line naming the tensor and the file.
//! [`Checkpoint::hash`] is the checkpoint's identity for a trace header.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{names, DType, ModelConfig, TensorRef, WeightSource};
use crate::error::{ExecError, Result};

/// `config.json`.
pub const CONFIG_FILE: &str = "config.json";
/// A single-file checkpoint (`transformers` `SAFE_WEIGHTS_NAME`).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint (`SAFE_WEIGHTS_INDEX_NAME`).
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Every tensor a checkpoint of `cfg` must hold, with its shape, in the order of
/// `transformers`' state dict (`Qwen3ForCausalLM` / `Qwen2ForCausalLM` /
/// `LlamaForCausalLM`: embedding, then per layer the attention (q/k/v biases for Qwen2,
/// q/k norms for Qwen3), the MLP and the two norms, then the final norm and, when not
/// tied, `lm_head.weight`).
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, hd, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let (q, kv) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
    let mut out = vec![(names::EMBED.to_string(), vec![cfg.vocab_size, h])];
    for l in 0..cfg.num_layers {
        let mut add = |suffix: &str, shape: Vec<usize>| out.push((names::layer(l, suffix), shape));
        add("self_attn.q_proj.weight", vec![q, h]);
        if cfg.architecture.has_qkv_bias() {
            add("self_attn.q_proj.bias", vec![q]);
        }
        add("self_attn.k_proj.weight", vec![kv, h]);
        if cfg.architecture.has_qkv_bias() {
            add("self_attn.k_proj.bias", vec![kv]);
        }
        add("self_attn.v_proj.weight", vec![kv, h]);
        if cfg.architecture.has_qkv_bias() {
            add("self_attn.v_proj.bias", vec![kv]);
        }
        add("self_attn.o_proj.weight", vec![h, q]);
        if cfg.architecture.has_qk_norm() {
            add("self_attn.q_norm.weight", vec![hd]);
            add("self_attn.k_norm.weight", vec![hd]);
        }
        add("mlp.gate_proj.weight", vec![i, h]);
        add("mlp.up_proj.weight", vec![i, h]);
        add("mlp.down_proj.weight", vec![h, i]);
        add("input_layernorm.weight", vec![h]);
        add("post_attention_layernorm.weight", vec![h]);
    }
    out.push((names::FINAL_NORM.to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push((names::LM_HEAD.to_string(), vec![cfg.vocab_size, h]));
    }
    out
}

/// Where one tensor lives: its file, element type (as stored), shape, byte range.
#[derive(Clone, Debug)]
struct Entry {
    file: usize,
    /// `None` for a stored dtype the forward pass cannot use (its name in `raw_dtype`).
    dtype: Option<DType>,
    raw_dtype: String,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A memory-mapped safetensors file.
struct Shard {
    name: String,
    map: memmap2::Mmap,
}

/// An opened checkpoint folder.
pub struct Checkpoint {
    dir: PathBuf,
    config: ModelConfig,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("files", &self.files())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn ck(msg: String) -> ExecError {
    ExecError::Checkpoint(msg)
}

/// A shard name from the index: a plain file name inside the folder.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\\')
}

fn stored_dtype(d: safetensors::Dtype) -> Option<DType> {
    match d {
        safetensors::Dtype::BF16 => Some(DType::BF16),
        safetensors::Dtype::F16 => Some(DType::F16),
        safetensors::Dtype::F32 => Some(DType::F32),
        _ => None,
    }
}

impl Checkpoint {
    /// Opens `dir`: reads `config.json` ([`ModelConfig::from_json`]), then
    /// `model.safetensors` if present, else the shards listed in
    /// `model.safetensors.index.json`. Does not check the tensors against the config:
    /// call [`Checkpoint::validate`].
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        if !dir.is_dir() {
            return Err(ck(format!("{}: not a directory", dir.display())));
        }
        let config = ModelConfig::from_json(&dir.join(CONFIG_FILE))?;
        let single = dir.join(WEIGHTS_FILE);
        let index = dir.join(INDEX_FILE);
        let (files, weight_map): (Vec<String>, Option<BTreeMap<String, String>>) = if single.exists() {
            (vec![WEIGHTS_FILE.to_string()], None)
        } else if index.exists() {
            let map = read_index(&index)?;
            let mut files: Vec<String> = map.values().cloned().collect();
            files.sort();
            files.dedup();
            (files, Some(map))
        } else {
            return Err(ck(format!("{}: no {WEIGHTS_FILE} and no {INDEX_FILE}", dir.display())));
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut tensors = BTreeMap::new();
        for (fi, name) in files.iter().enumerate() {
            let path = dir.join(name);
            let file = std::fs::File::open(&path).map_err(|e| ck(format!("{}: cannot read: {e}", path.display())))?;
            // SAFETY: the map is read-only; a checkpoint file modified while mapped can
            // change the bytes we read (never memory safety of Rust objects we own: the
            // bytes are only copied or converted, never reinterpreted as references).
            let map =
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ck(format!("{}: cannot map: {e}", path.display())))?;
            let (n, meta) = safetensors::SafeTensors::read_metadata(&map)
                .map_err(|e| ck(format!("{}: not a valid safetensors file: {e}", path.display())))?;
            let base = 8 + n;
            for (tname, info) in meta.tensors() {
                if let Some(m) = &weight_map {
                    // The index decides which shard holds a tensor; extra copies elsewhere
                    // are ignored, as transformers does.
                    if m.get(&tname).map(String::as_str) != Some(name.as_str()) {
                        continue;
                    }
                }
                let entry = Entry {
                    file: fi,
                    dtype: stored_dtype(info.dtype),
                    raw_dtype: info.dtype.to_string(),
                    shape: info.shape.clone(),
                    start: base + info.data_offsets.0,
                    end: base + info.data_offsets.1,
                };
                if tensors.insert(tname.clone(), entry).is_some() {
                    return Err(ck(format!("{}: tensor {tname} is stored twice", path.display())));
                }
            }
            shards.push(Shard { name: name.clone(), map });
        }
        if let Some(m) = &weight_map {
            for (tname, file) in m {
                if !tensors.contains_key(tname) {
                    return Err(ck(format!(
                        "{}: {INDEX_FILE} puts tensor {tname} in {file}, which does not hold it",
                        dir.display()
                    )));
                }
            }
        }
        Ok(Checkpoint { dir: dir.to_path_buf(), config, shards, tensors })
    }

    /// [`Checkpoint::open`] then [`Checkpoint::validate`].
    pub fn open_validated(dir: &Path) -> Result<Checkpoint> {
        let c = Checkpoint::open(dir)?;
        c.validate()?;
        Ok(c)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The architecture from `config.json`.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The safetensors files, in name order.
    pub fn files(&self) -> Vec<&str> {
        self.shards.iter().map(|s| s.name.as_str()).collect()
    }

    /// Every stored tensor name, sorted.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Checks every tensor of [`expected_tensors`]: present, bf16, of the expected
    /// shape. The first failure is returned as one line naming the tensor (and its file).
    /// Tensors the architecture does not use are allowed (HF ignores them too, e.g. a
    /// stored `lm_head.weight` of a tied model).
    pub fn validate(&self) -> Result<()> {
        let arch = self.config.architecture.hf_name();
        for (name, shape) in expected_tensors(&self.config) {
            let Some(e) = self.tensors.get(&name) else {
                return Err(ck(format!("{}: missing tensor {name} ({arch} needs it)", self.dir.display())));
            };
            let file = self.dir.join(&self.shards[e.file].name);
            if e.dtype != Some(DType::BF16) {
                return Err(ck(format!(
                    "{}: tensor {name} is {}, expected BF16 (convert the checkpoint to bfloat16)",
                    file.display(),
                    e.raw_dtype
                )));
            }
            if e.shape != shape {
                return Err(ck(format!(
                    "{}: tensor {name} has shape {:?}, expected {shape:?} from {CONFIG_FILE}",
                    file.display(),
                    e.shape
                )));
            }
        }
        Ok(())
    }

    /// The checkpoint's identity: SHA-256 (hex) over the bytes of `config.json` followed
    /// by the bytes of each safetensors file in name order (streamed; the index file is
    /// not included: it only says which shard holds what).
    pub fn hash(&self) -> Result<String> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut paths = vec![self.dir.join(CONFIG_FILE)];
        paths.extend(self.shards.iter().map(|s| self.dir.join(&s.name)));
        let mut buf = vec![0u8; 1 << 20];
        for p in paths {
            let mut f = std::fs::File::open(&p).map_err(|e| ck(format!("{}: cannot read: {e}", p.display())))?;
            loop {
                let n = f.read(&mut buf).map_err(|e| ck(format!("{}: cannot read: {e}", p.display())))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
}

fn read_index(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| ck(format!("{}: cannot read: {e}", path.display())))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ck(format!("{}: invalid JSON: {e}", path.display())))?;
    let Some(map) = v.get("weight_map").and_then(|m| m.as_object()) else {
        return Err(ck(format!("{}: no `weight_map` object", path.display())));
    };
    let mut out = BTreeMap::new();
    for (tensor, file) in map {
        let Some(file) = file.as_str().filter(|f| plain_file_name(f)) else {
            return Err(ck(format!(
                "{}: tensor {tensor} maps to {file}, not a file name in the folder",
                path.display()
            )));
        };
        out.insert(tensor.clone(), file.to_string());
    }
    Ok(out)
}

impl WeightSource for Checkpoint {
    fn tensor(&self, name: &str) -> Result<TensorRef<'_>> {
        let Some(e) = self.tensors.get(name) else {
            return Err(ck(format!("{}: missing tensor {name}", self.dir.display())));
        };
        let Some(dtype) = e.dtype else {
            return Err(ck(format!(
                "{}: tensor {name} has dtype {}, which the forward pass does not read",
                self.dir.join(&self.shards[e.file].name).display(),
                e.raw_dtype
            )));
        };
        Ok(TensorRef { dtype, shape: &e.shape, bytes: &self.shards[e.file].map[e.start..e.end] })
    }
}

/// Tensors held in memory by name: weights a test or a tool builds itself.
#[derive(Clone, Debug, Default)]
pub struct MemWeights {
    tensors: BTreeMap<String, (DType, Vec<usize>, Vec<u8>)>,
}

impl MemWeights {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `name` as bf16 values rounded from `values` (round to nearest
    /// even, as torch's `.to(torch.bfloat16)`). Panics when `values` does not fill
    /// `shape` (a bug in the caller, not user input).
    pub fn insert_bf16(&mut self, name: &str, shape: &[usize], values: &[f32]) {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "tensor {name}: shape and values differ");
        let bytes = values.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
        self.tensors.insert(name.to_string(), (DType::BF16, shape.to_vec(), bytes));
    }

    /// Adds raw little-endian bytes of any dtype (tests of the dtype checks).
    pub fn insert_raw(&mut self, name: &str, dtype: DType, shape: &[usize], bytes: Vec<u8>) {
        assert_eq!(shape.iter().product::<usize>() * dtype.size(), bytes.len(), "tensor {name}: size");
        self.tensors.insert(name.to_string(), (dtype, shape.to_vec(), bytes));
    }

    /// Removes `name` (tests of the missing-tensor checks).
    pub fn remove(&mut self, name: &str) {
        self.tensors.remove(name);
    }
}

impl WeightSource for MemWeights {
    fn tensor(&self, name: &str) -> Result<TensorRef<'_>> {
        match self.tensors.get(name) {
            Some((dtype, shape, bytes)) => Ok(TensorRef { dtype: *dtype, shape, bytes }),
            None => Err(ck(format!("missing tensor {name}"))),
        }
    }
}

/// A fresh scratch folder for tests (removed first if a previous run left it).
#[cfg(test)]
pub(crate) fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("specreplay-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::make::{make_checkpoint, random_weights, write_safetensors, MakeOptions};

    /// The tiny model's tensors as `write_safetensors` input, with `edit` applied.
    fn tiny_tensors(
        edit: impl Fn(&mut Vec<(String, DType, Vec<usize>, Vec<u8>)>),
    ) -> Vec<(String, DType, Vec<usize>, Vec<u8>)> {
        let cfg = ModelConfig::tiny();
        let w = random_weights(&cfg, 3);
        let mut v: Vec<_> = expected_tensors(&cfg)
            .into_iter()
            .map(|(n, s)| {
                let b = w.tensor(&n).unwrap().bytes.to_vec();
                (n, DType::BF16, s, b)
            })
            .collect();
        edit(&mut v);
        v
    }

    /// A single-file checkpoint folder of `config` and `tensors`.
    fn folder(tag: &str, config: &str, tensors: &[(String, DType, Vec<usize>, Vec<u8>)]) -> PathBuf {
        let d = scratch(tag);
        std::fs::write(d.join(CONFIG_FILE), config).unwrap();
        write_safetensors(&d.join(WEIGHTS_FILE), tensors).unwrap();
        d
    }

    fn open_err(d: &Path) -> String {
        Checkpoint::open_validated(d).unwrap_err().to_string()
    }

    #[test]
    fn a_made_checkpoint_opens_validates_and_serves_its_bytes() {
        let d = scratch("ck-made");
        let out = d.join("tiny");
        make_checkpoint(&ModelConfig::tiny(), &MakeOptions { seed: 3, ..Default::default() }, &out).unwrap();
        let c = Checkpoint::open_validated(&out).unwrap();
        assert_eq!(c.config(), &ModelConfig::tiny());
        assert_eq!(c.files(), vec![WEIGHTS_FILE]);
        assert_eq!(c.tensor_names().count(), expected_tensors(&ModelConfig::tiny()).len());
        let mem = random_weights(&ModelConfig::tiny(), 3);
        for (name, shape) in expected_tensors(&ModelConfig::tiny()) {
            let t = c.expect_bf16(&name, &shape).unwrap();
            assert_eq!(t.bytes, mem.tensor(&name).unwrap().bytes, "{name}");
        }
        // Tied: no lm_head stored, and asking for it names it.
        assert!(c.tensor(names::LM_HEAD).unwrap_err().to_string().contains("missing tensor lm_head.weight"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_sharded_checkpoint_holds_the_same_tensors() {
        let d = scratch("ck-shards");
        let opts = MakeOptions { seed: 3, shard_bytes: Some(40_000), ..Default::default() };
        make_checkpoint(&ModelConfig::tiny(), &opts, &d.join("s")).unwrap();
        make_checkpoint(&ModelConfig::tiny(), &MakeOptions { seed: 3, ..Default::default() }, &d.join("one")).unwrap();
        let (s, one) =
            (Checkpoint::open_validated(&d.join("s")).unwrap(), Checkpoint::open_validated(&d.join("one")).unwrap());
        assert!(s.files().len() > 2, "{:?}", s.files());
        assert_eq!(s.files()[0], format!("model-00001-of-{:05}.safetensors", s.files().len()));
        assert!(d.join("s").join(INDEX_FILE).exists() && !d.join("one").join(INDEX_FILE).exists());
        for name in one.tensor_names() {
            assert_eq!(s.tensor(name).unwrap().bytes, one.tensor(name).unwrap().bytes, "{name}");
        }
        // The index must name files that hold the tensors.
        let idx = d.join("s").join(INDEX_FILE);
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
        let wrong = s.files()[0].to_string();
        assert_ne!(v["weight_map"][names::FINAL_NORM], wrong.as_str());
        v["weight_map"][names::FINAL_NORM] = wrong.clone().into();
        std::fs::write(&idx, v.to_string()).unwrap();
        let e = open_err(&d.join("s"));
        assert!(e.ends_with(&format!("puts tensor model.norm.weight in {wrong}, which does not hold it")), "{e}");
        std::fs::write(&idx, r#"{"weight_map": {"model.norm.weight": "../x.safetensors"}}"#).unwrap();
        assert!(open_err(&d.join("s")).contains("not a file name in the folder"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn broken_checkpoints_are_one_line_naming_tensor_and_file() {
        let cfg = ModelConfig::tiny().to_json();
        // Intact: validates (the checks below can pass).
        let d = folder("ck-ok", &cfg, &tiny_tensors(|_| {}));
        Checkpoint::open_validated(&d).unwrap();
        std::fs::remove_dir_all(&d).unwrap();

        let d = folder(
            "ck-missing",
            &cfg,
            &tiny_tensors(|v| v.retain(|t| t.0 != "model.layers.1.self_attn.k_norm.weight")),
        );
        assert_eq!(
            open_err(&d),
            format!(
                "checkpoint: {}: missing tensor model.layers.1.self_attn.k_norm.weight (Qwen3ForCausalLM needs it)",
                d.display()
            )
        );
        std::fs::remove_dir_all(&d).unwrap();

        let d = folder(
            "ck-f32",
            &cfg,
            &tiny_tensors(|v| {
                let t = v.iter_mut().find(|t| t.0 == names::FINAL_NORM).unwrap();
                t.1 = DType::F32;
                t.3 = 1f32.to_le_bytes().repeat(64);
            }),
        );
        assert_eq!(
            open_err(&d),
            format!(
                "checkpoint: {}: tensor model.norm.weight is F32, expected BF16 (convert the checkpoint to bfloat16)",
                d.join(WEIGHTS_FILE).display()
            )
        );
        std::fs::remove_dir_all(&d).unwrap();

        let d = folder(
            "ck-shape",
            &cfg,
            &tiny_tensors(|v| {
                let t = v.iter_mut().find(|t| t.0 == "model.layers.0.mlp.down_proj.weight").unwrap();
                t.2 = vec![128, 64];
            }),
        );
        assert_eq!(
            open_err(&d),
            format!(
                "checkpoint: {}: tensor model.layers.0.mlp.down_proj.weight has shape [128, 64], expected [64, 128] from config.json",
                d.join(WEIGHTS_FILE).display()
            )
        );
        std::fs::remove_dir_all(&d).unwrap();

        let d = folder("ck-arch", &cfg.replace("Qwen3ForCausalLM", "MambaForCausalLM"), &tiny_tensors(|_| {}));
        assert_eq!(
            open_err(&d),
            format!(
                "checkpoint: {}: unknown architecture \"MambaForCausalLM\" (supported: Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM)",
                d.join(CONFIG_FILE).display()
            )
        );
        // The same weights as Llama lack nothing Llama needs (extra q/k norms are ignored).
        std::fs::write(d.join(CONFIG_FILE), cfg.replace("Qwen3ForCausalLM", "LlamaForCausalLM")).unwrap();
        Checkpoint::open_validated(&d).unwrap();
        // As Qwen2 the q/k/v biases are missing.
        std::fs::write(d.join(CONFIG_FILE), cfg.replace("Qwen3ForCausalLM", "Qwen2ForCausalLM")).unwrap();
        assert!(
            open_err(&d).contains("missing tensor model.layers.0.self_attn.q_proj.bias (Qwen2ForCausalLM needs it)")
        );
        std::fs::remove_dir_all(&d).unwrap();

        // A truncated file, an empty folder.
        let d = folder("ck-trunc", &cfg, &tiny_tensors(|_| {}));
        let p = d.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 2]).unwrap();
        assert!(open_err(&d).starts_with(&format!("checkpoint: {}: not a valid safetensors file", p.display())));
        std::fs::remove_file(&p).unwrap();
        assert_eq!(open_err(&d), format!("checkpoint: {}: no {WEIGHTS_FILE} and no {INDEX_FILE}", d.display()));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_hash_covers_config_and_weights() {
        let d = folder("ck-hash", &ModelConfig::tiny().to_json(), &tiny_tensors(|_| {}));
        let h0 = Checkpoint::open(&d).unwrap().hash().unwrap();
        assert_eq!(h0.len(), 64);
        assert_eq!(Checkpoint::open(&d).unwrap().hash().unwrap(), h0, "stable");
        // One weight bit flipped (last byte of the data) changes it.
        let p = d.join(WEIGHTS_FILE);
        let mut bytes = std::fs::read(&p).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let h1 = Checkpoint::open(&d).unwrap().hash().unwrap();
        assert_ne!(h1, h0);
        // So does a config change.
        std::fs::write(d.join(CONFIG_FILE), ModelConfig::tiny().to_json().replace("4096", "4097")).unwrap();
        assert_ne!(Checkpoint::open(&d).unwrap().hash().unwrap(), h1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
