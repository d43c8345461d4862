//! The architecture as `config.json` states it (Hugging Face `PretrainedConfig` fields).

/// Which decoder family a checkpoint is; it decides biases and q/k norms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `Qwen3ForCausalLM`: RMSNorm on q and k per head before RoPE, no q/k/v bias.
    Qwen3,
    /// `Qwen2ForCausalLM`: q/k/v biases, no q/k norm.
    Qwen2,
    /// `LlamaForCausalLM`: no biases, no q/k norm.
    Llama,
}

/// The fields of `config.json` the forward pass needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// From `architectures[0]`.
    pub architecture: Architecture,
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `intermediate_size` (the MLP's gate/up width).
    pub intermediate_size: usize,
    /// `num_hidden_layers`.
    pub num_layers: usize,
    /// `num_attention_heads`.
    pub num_heads: usize,
    /// `num_key_value_heads` (GQA; defaults to `num_attention_heads`).
    pub num_kv_heads: usize,
    /// `head_dim` (defaults to `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// `rms_norm_eps`.
    pub rms_norm_eps: f32,
    /// `rope_theta`.
    pub rope_theta: f32,
    /// `max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// `tie_word_embeddings`: the LM head is the embedding matrix.
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    /// Qwen3-0.6B's `config.json` values (Hugging Face `Qwen/Qwen3-0.6B`).
    pub fn qwen3_0_6b() -> Self {
        ModelConfig {
            architecture: Architecture::Qwen3,
            vocab_size: 151_936,
            hidden_size: 1024,
            intermediate_size: 3072,
            num_layers: 28,
            num_heads: 16,
            num_kv_heads: 8,
            head_dim: 128,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            max_position_embeddings: 40_960,
            tie_word_embeddings: true,
        }
    }
}

/// The `config.json` keys of each family, as `transformers` 5.x declares them
/// (`transformers/models/{qwen3,qwen2,llama}/configuration_*.py`).
impl Architecture {
    /// Every supported architecture, in the order error messages list them.
    pub const ALL: [Architecture; 3] = [Architecture::Qwen3, Architecture::Qwen2, Architecture::Llama];

    /// The class name in `config.json`'s `architectures` list.
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Qwen3 => "Qwen3ForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
        }
    }

    /// `model_type` (the key `AutoConfig` dispatches on).
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Qwen3 => "qwen3",
            Architecture::Qwen2 => "qwen2",
            Architecture::Llama => "llama",
        }
    }

    /// The architecture called `name` in `architectures`, if supported.
    pub fn from_hf_name(name: &str) -> Option<Architecture> {
        Architecture::ALL.into_iter().find(|a| a.hf_name() == name)
    }

    /// RMSNorm over each head of q and k before RoPE (`Qwen3Attention.q_norm` / `k_norm`).
    pub fn has_qk_norm(self) -> bool {
        self == Architecture::Qwen3
    }

    /// Biases on q, k and v (`Qwen2Attention`: `nn.Linear(..., bias=True)` for q/k/v).
    pub fn has_qkv_bias(self) -> bool {
        self == Architecture::Qwen2
    }
}

/// `transformers`' defaults for a key absent from `config.json` (the dataclass field
/// defaults of `Qwen3Config`, `Qwen2Config`, `LlamaConfig` in transformers 5.x). Note
/// that Qwen2/Qwen3 default `num_key_value_heads` to 32 (only an explicit `null` means
/// "as many as `num_attention_heads`"), Qwen3 defaults `head_dim` to 128 while Qwen2
/// (no such field) and Llama (`None`) use `hidden_size / num_attention_heads`, and all
/// three default `tie_word_embeddings` to false.
struct Defaults {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_layers: usize,
    num_heads: usize,
    num_kv_heads: Option<usize>,
    head_dim: Option<usize>,
    max_position_embeddings: usize,
}

impl Defaults {
    fn of(arch: Architecture) -> Defaults {
        match arch {
            Architecture::Qwen3 => Defaults {
                vocab_size: 151_936,
                hidden_size: 4096,
                intermediate_size: 22_016,
                num_layers: 32,
                num_heads: 32,
                num_kv_heads: Some(32),
                head_dim: Some(128),
                max_position_embeddings: 32_768,
            },
            Architecture::Qwen2 => Defaults {
                vocab_size: 151_936,
                hidden_size: 4096,
                intermediate_size: 22_016,
                num_layers: 32,
                num_heads: 32,
                num_kv_heads: Some(32),
                head_dim: None,
                max_position_embeddings: 32_768,
            },
            Architecture::Llama => Defaults {
                vocab_size: 32_000,
                hidden_size: 4096,
                intermediate_size: 11_008,
                num_layers: 32,
                num_heads: 32,
                num_kv_heads: None,
                head_dim: None,
                max_position_embeddings: 2048,
            },
        }
    }
}

/// `rms_norm_eps` default of all three families.
const DEFAULT_RMS_NORM_EPS: f32 = 1e-6;
/// RoPE base when neither `rope_parameters.rope_theta` nor `rope_theta` is given
/// (`transformers/modeling_rope_utils.py`: the default RoPE base).
const DEFAULT_ROPE_THETA: f32 = 10_000.0;
/// `initializer_range` written to `config.json` (HF's default; `make-checkpoint` draws
/// linear and embedding weights from N(0, this²), as `PreTrainedModel._init_weights`).
pub const INITIALIZER_RANGE: f64 = 0.02;

type Obj = serde_json::Map<String, serde_json::Value>;

fn bad(what: String) -> crate::ExecError {
    crate::ExecError::Checkpoint(format!("config.json: {what}"))
}

/// A non-negative integer field, `default` when absent (or `null` with `null_default`).
fn int_field(o: &Obj, key: &str, default: Option<usize>) -> crate::Result<Option<usize>> {
    match o.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) => Ok(Some(n)),
            None => Err(bad(format!("`{key}` must be a non-negative integer, found {v}"))),
        },
    }
}

fn float_field(o: &Obj, key: &str) -> crate::Result<Option<f32>> {
    match o.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x as f32)),
            _ => Err(bad(format!("`{key}` must be a positive number, found {v}"))),
        },
    }
}

fn bool_field(o: &Obj, key: &str, default: bool) -> crate::Result<bool> {
    match o.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(v) => Err(bad(format!("`{key}` must be true or false, found {v}"))),
    }
}

/// An f32 written as the shortest decimal that reads back to it (`1e-6`, not
/// `9.99999997e-7`), as a JSON number.
fn json_f32(x: f32) -> serde_json::Value {
    let shortest: f64 = format!("{x:e}").parse().unwrap_or(f64::from(x));
    serde_json::Number::from_f64(shortest).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

impl ModelConfig {
    /// Reads `config.json` at `path` ([`ModelConfig::from_json_str`]).
    pub fn from_json(path: &std::path::Path) -> crate::Result<ModelConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::ExecError::Checkpoint(format!("{}: cannot read: {e}", path.display())))?;
        ModelConfig::from_json_str(&text)
            .map_err(|e| crate::ExecError::Checkpoint(format!("{}: {}", path.display(), checkpoint_msg(e))))
    }

    /// Parses the text of a `config.json` the way `AutoConfig.from_pretrained` reads it:
    /// `architectures[0]` picks the family, absent keys take that family's defaults
    /// (`Defaults`), RoPE θ comes from `rope_parameters.rope_theta` (transformers 5.x)
    /// or the legacy top-level `rope_theta`. What the forward pass does not implement is
    /// refused with one line: another activation than SiLU, RoPE scaling, sliding-window
    /// attention, attention or MLP biases on Qwen3/Llama.
    pub fn from_json_str(text: &str) -> crate::Result<ModelConfig> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let o = v.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let name = match o.get("architectures") {
            Some(serde_json::Value::Array(a)) => match a.first() {
                Some(serde_json::Value::String(s)) => s.clone(),
                _ => return Err(bad("`architectures` must be a non-empty list of class names".into())),
            },
            _ => return Err(bad("no `architectures` list (which model class is this?)".into())),
        };
        let architecture = Architecture::from_hf_name(&name).ok_or_else(|| {
            let known: Vec<&str> = Architecture::ALL.iter().map(|a| a.hf_name()).collect();
            bad(format!("unknown architecture {name:?} (supported: {})", known.join(", ")))
        })?;
        let d = Defaults::of(architecture);
        let req = |key: &str, default: usize| -> crate::Result<usize> {
            Ok(int_field(o, key, Some(default))?.unwrap_or(default))
        };
        let vocab_size = req("vocab_size", d.vocab_size)?;
        let hidden_size = req("hidden_size", d.hidden_size)?;
        let intermediate_size = req("intermediate_size", d.intermediate_size)?;
        let num_layers = req("num_hidden_layers", d.num_layers)?;
        let num_heads = req("num_attention_heads", d.num_heads)?;
        let max_position_embeddings = req("max_position_embeddings", d.max_position_embeddings)?;
        for (key, n) in [
            ("vocab_size", vocab_size),
            ("hidden_size", hidden_size),
            ("intermediate_size", intermediate_size),
            ("num_hidden_layers", num_layers),
            ("num_attention_heads", num_heads),
        ] {
            if n == 0 {
                return Err(bad(format!("`{key}` must be positive")));
            }
        }
        // An explicit null means "as many as num_attention_heads" in every family.
        let num_kv_heads = match o.get("num_key_value_heads") {
            Some(serde_json::Value::Null) => num_heads,
            _ => int_field(o, "num_key_value_heads", d.num_kv_heads)?.unwrap_or(num_heads),
        };
        let head_dim = match o.get("head_dim") {
            Some(serde_json::Value::Null) => hidden_size / num_heads,
            _ => int_field(o, "head_dim", d.head_dim)?.unwrap_or(hidden_size / num_heads),
        };
        if num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
            return Err(bad(format!(
                "`num_attention_heads` ({num_heads}) must be a multiple of `num_key_value_heads` ({num_kv_heads})"
            )));
        }
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(bad(format!("`head_dim` must be positive and even (RoPE rotates pairs), found {head_dim}")));
        }
        let rms_norm_eps = float_field(o, "rms_norm_eps")?.unwrap_or(DEFAULT_RMS_NORM_EPS);
        let mut rope_theta = float_field(o, "rope_theta")?;
        match o.get("rope_parameters") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(p)) => {
                let ty = p.get("rope_type").and_then(|t| t.as_str()).unwrap_or("default");
                if ty != "default" {
                    return Err(bad(format!("RoPE type {ty:?} is not supported (only \"default\")")));
                }
                if let Some(t) = float_field(p, "rope_theta")? {
                    rope_theta = Some(t);
                }
            }
            Some(v) => return Err(bad(format!("`rope_parameters` must be an object, found {v}"))),
        }
        match o.get("rope_scaling") {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => return Err(bad(format!("RoPE scaling is not supported, found `rope_scaling` {v}"))),
        }
        if let Some(act) = o.get("hidden_act").filter(|a| !a.is_null()) {
            if act.as_str() != Some("silu") {
                return Err(bad(format!("activation {act} is not supported (only \"silu\")")));
            }
        }
        if bool_field(o, "use_sliding_window", false)? {
            return Err(bad("sliding-window attention (`use_sliding_window`: true) is not supported".into()));
        }
        if architecture != Architecture::Qwen2 && bool_field(o, "attention_bias", false)? {
            return Err(bad(format!("`attention_bias`: true is not supported for {name}")));
        }
        if bool_field(o, "mlp_bias", false)? {
            return Err(bad("`mlp_bias`: true is not supported".into()));
        }
        Ok(ModelConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta: rope_theta.unwrap_or(DEFAULT_ROPE_THETA),
            max_position_embeddings,
            tie_word_embeddings: bool_field(o, "tie_word_embeddings", false)?,
        })
    }

    /// A `config.json` that transformers 5.x `AutoConfig` (and 4.x) loads as this model:
    /// `architectures`, `model_type`, every size, RoPE θ both as 5.x `rope_parameters`
    /// and as the legacy `rope_theta`, `dtype` and the legacy `torch_dtype` "bfloat16",
    /// `initializer_range` 0.02. Keys in a fixed order; ends with a newline.
    pub fn to_json(&self) -> String {
        use serde_json::json;
        let mut o = Obj::new();
        let mut put = |k: &str, v: serde_json::Value| {
            o.insert(k.to_string(), v);
        };
        put("architectures", json!([self.architecture.hf_name()]));
        put("model_type", json!(self.architecture.model_type()));
        put("vocab_size", json!(self.vocab_size));
        put("hidden_size", json!(self.hidden_size));
        put("intermediate_size", json!(self.intermediate_size));
        put("num_hidden_layers", json!(self.num_layers));
        put("num_attention_heads", json!(self.num_heads));
        put("num_key_value_heads", json!(self.num_kv_heads));
        put("head_dim", json!(self.head_dim));
        put("hidden_act", json!("silu"));
        put("max_position_embeddings", json!(self.max_position_embeddings));
        put("initializer_range", json!(INITIALIZER_RANGE));
        put("rms_norm_eps", json_f32(self.rms_norm_eps));
        put("rope_theta", json_f32(self.rope_theta));
        put("rope_parameters", json!({"rope_type": "default", "rope_theta": json_f32(self.rope_theta)}));
        if self.architecture != Architecture::Qwen2 {
            put("attention_bias", json!(false));
        }
        if self.architecture == Architecture::Llama {
            put("mlp_bias", json!(false));
        } else {
            put("use_sliding_window", json!(false));
            put("sliding_window", serde_json::Value::Null);
            put("max_window_layers", json!(self.num_layers));
        }
        put("attention_dropout", json!(0.0));
        put("use_cache", json!(true));
        put("tie_word_embeddings", json!(self.tie_word_embeddings));
        put("dtype", json!("bfloat16"));
        put("torch_dtype", json!("bfloat16"));
        let mut s = serde_json::to_string_pretty(&serde_json::Value::Object(o)).unwrap_or_default();
        s.push('\n');
        s
    }

    /// A small Qwen3 for tests: vocab 512, hidden 64, 2 layers, 4 heads, 2 KV heads,
    /// head_dim 16, intermediate 128, tied embeddings, θ 10⁶ (`make-checkpoint --preset tiny`).
    pub fn tiny() -> Self {
        ModelConfig {
            architecture: Architecture::Qwen3,
            vocab_size: 512,
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            max_position_embeddings: 4096,
            tie_word_embeddings: true,
        }
    }

    /// Number of parameters stored in a checkpoint of this architecture (the tied LM
    /// head counted once).
    pub fn num_parameters(&self) -> usize {
        crate::model::checkpoint::expected_tensors(self).iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

/// The message of a [`crate::ExecError::Checkpoint`] without its `checkpoint: ` prefix.
fn checkpoint_msg(e: crate::ExecError) -> String {
    match e {
        crate::ExecError::Checkpoint(m) => m.strip_prefix("config.json: ").map(str::to_string).unwrap_or(m),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Qwen/Qwen3-0.6B`'s `config.json` as published (transformers 4.51 era: legacy
    /// `rope_theta` and `torch_dtype`).
    const QWEN3_0_6B_JSON: &str = r#"{
      "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
      "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
      "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
      "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
      "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
      "use_cache": true, "use_sliding_window": false, "vocab_size": 151936
    }"#;

    fn err(text: &str) -> String {
        ModelConfig::from_json_str(text).unwrap_err().to_string()
    }

    #[test]
    fn the_published_qwen3_0_6b_config_reads_as_the_preset() {
        assert_eq!(ModelConfig::from_json_str(QWEN3_0_6B_JSON).unwrap(), ModelConfig::qwen3_0_6b());
    }

    #[test]
    fn to_json_reads_back_for_every_family() {
        let mut qwen2 = ModelConfig::tiny();
        qwen2.architecture = Architecture::Qwen2;
        qwen2.tie_word_embeddings = false;
        let mut llama = ModelConfig::tiny();
        llama.architecture = Architecture::Llama;
        llama.rope_theta = 500_000.0;
        llama.rms_norm_eps = 1e-5;
        for c in [ModelConfig::qwen3_0_6b(), ModelConfig::tiny(), qwen2, llama] {
            let text = c.to_json();
            assert_eq!(ModelConfig::from_json_str(&text).unwrap(), c, "{text}");
        }
    }

    #[test]
    fn to_json_has_the_keys_transformers_5_reads() {
        let v: serde_json::Value = serde_json::from_str(&ModelConfig::qwen3_0_6b().to_json()).unwrap();
        assert_eq!(v["architectures"][0], "Qwen3ForCausalLM");
        assert_eq!(v["model_type"], "qwen3");
        assert_eq!(v["dtype"], "bfloat16");
        assert_eq!(v["torch_dtype"], "bfloat16");
        assert_eq!(v["rope_parameters"]["rope_type"], "default");
        assert_eq!(v["rope_parameters"]["rope_theta"].as_f64(), Some(1e6));
        assert_eq!(v["rms_norm_eps"].as_f64(), Some(1e-6), "shortest decimal, not the f32 widened");
        assert_eq!(v["tie_word_embeddings"], true);
        assert_eq!(v["head_dim"], 128);
    }

    #[test]
    fn absent_keys_take_each_familys_transformers_default() {
        let llama = ModelConfig::from_json_str(
            r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4}"#,
        )
        .unwrap();
        assert_eq!((llama.num_kv_heads, llama.head_dim, llama.vocab_size), (4, 16, 32_000));
        assert_eq!(
            (llama.rope_theta, llama.tie_word_embeddings, llama.max_position_embeddings),
            (10_000.0, false, 2048)
        );
        let qwen3 = ModelConfig::from_json_str(r#"{"architectures": ["Qwen3ForCausalLM"]}"#).unwrap();
        assert_eq!((qwen3.num_kv_heads, qwen3.head_dim, qwen3.num_layers), (32, 128, 32));
        // Qwen2 has no head_dim field: hidden / heads; an explicit null KV count = heads.
        let qwen2 = ModelConfig::from_json_str(
            r#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
                "num_key_value_heads": null}"#,
        )
        .unwrap();
        assert_eq!((qwen2.num_kv_heads, qwen2.head_dim), (4, 16));
        // transformers 5.x rope_parameters win over the legacy key.
        let c = ModelConfig::from_json_str(
            r#"{"architectures": ["Qwen3ForCausalLM"], "rope_theta": 5.0,
                "rope_parameters": {"rope_type": "default", "rope_theta": 7.0}}"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 7.0);
    }

    #[test]
    fn unusable_configs_are_one_clear_line() {
        assert_eq!(
            err(r#"{"architectures": ["MistralForCausalLM"]}"#),
            "checkpoint: config.json: unknown architecture \"MistralForCausalLM\" (supported: Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM)"
        );
        assert_eq!(
            err(r#"{"model_type": "qwen3"}"#),
            "checkpoint: config.json: no `architectures` list (which model class is this?)"
        );
        assert_eq!(
            err(r#"{"architectures": ["Qwen3ForCausalLM"], "hidden_size": "big"}"#),
            "checkpoint: config.json: `hidden_size` must be a non-negative integer, found \"big\""
        );
        assert_eq!(
            err(r#"{"architectures": ["Qwen3ForCausalLM"], "num_attention_heads": 16, "num_key_value_heads": 5}"#),
            "checkpoint: config.json: `num_attention_heads` (16) must be a multiple of `num_key_value_heads` (5)"
        );
        assert!(err(r#"{"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "llama3"}}"#)
            .contains("RoPE scaling is not supported"));
        assert!(err(r#"{"architectures": ["LlamaForCausalLM"], "hidden_act": "gelu"}"#)
            .contains("\"gelu\" is not supported"));
        assert!(err(r#"{"architectures": ["Qwen3ForCausalLM"], "attention_bias": true}"#).contains("attention_bias"));
        assert!(err("[1, 2]").contains("not a JSON object"));
        assert!(err("{").contains("invalid JSON"));
        // The same config with the offending key removed is fine (the checks can pass).
        assert!(
            ModelConfig::from_json_str(r#"{"architectures": ["Qwen2ForCausalLM"], "attention_bias": true}"#).is_ok()
        );
    }

    #[test]
    fn from_json_names_the_file_once() {
        let dir = std::env::temp_dir().join(format!("specreplay-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config.json");
        std::fs::write(&p, r#"{"architectures": ["GPT2LMHeadModel"]}"#).unwrap();
        let e = ModelConfig::from_json(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "checkpoint: {}: unknown architecture \"GPT2LMHeadModel\" (supported: Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM)",
                p.display()
            )
        );
        let missing = ModelConfig::from_json(&dir.join("nope.json")).unwrap_err().to_string();
        assert!(missing.contains("nope.json: cannot read"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parameter_count_of_qwen3_0_6b_is_596m() {
        // 596,049,920 stored parameters (tied head counted once): 1.19 GB in bf16.
        assert_eq!(ModelConfig::qwen3_0_6b().num_parameters(), 596_049_920);
    }
}
