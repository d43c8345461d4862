//! `specreplay gpu make-checkpoint` and `gpu reference` need no GPU: they run on CI.

mod common;
use common::cli;

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("specreplay-model-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sha_line(out: &str) -> String {
    out.lines().find(|l| l.starts_with("checkpoint sha256 ")).unwrap_or_else(|| panic!("{out}")).to_string()
}

#[test]
fn make_checkpoint_is_seeded_and_refuses_to_overwrite() {
    let d = scratch("make");
    let a = d.join("a");
    let (code, out, err) = cli(&["gpu", "make-checkpoint", "--preset", "tiny", "--seed", "5", a.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Qwen3ForCausalLM 24 tensors, 106880 parameters"), "{out}");
    let b = d.join("b");
    let (_, out_b, _) = cli(&["gpu", "make-checkpoint", "--preset", "tiny", "--seed", "5", b.to_str().unwrap()]);
    assert_eq!(sha_line(&out), sha_line(&out_b), "same seed, same bytes");
    // Pinned: the bytes of a made checkpoint are the same on every machine (CI and the GPU
    // host), so this value only changes with the generator or the file layout.
    let (_, out_1, _) =
        cli(&["gpu", "make-checkpoint", "--preset", "tiny", "--seed", "1", d.join("s1").to_str().unwrap()]);
    assert_eq!(sha_line(&out_1), "checkpoint sha256 8eaf59862e58b0e0f829898e03a6991fcc4887b785da4b5e1c07ced34236740d");
    let c = d.join("c");
    let (_, out_c, _) =
        cli(&["gpu", "make-checkpoint", "--preset", "tiny", "--seed", "6", "--shard-mb", "0", c.to_str().unwrap()]);
    assert_ne!(sha_line(&out), sha_line(&out_c));
    assert!(out_c.contains("in 24 file(s)"), "--shard-mb 0: one tensor a shard: {out_c}");
    assert!(c.join("model.safetensors.index.json").exists());
    // Missing parent folders are created (the write stays atomic: DIR.tmp beside DIR).
    let nested = d.join("new/parent/ck");
    let (code, _, err) = cli(&["gpu", "make-checkpoint", "--preset", "tiny", "--seed", "5", nested.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(nested.join("config.json").exists() && !d.join("new/parent/ck.tmp").exists());
    let (code, out, err) = cli(&["gpu", "make-checkpoint", "--preset", "tiny", a.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(
        err,
        format!("specreplay: error: {}: exists and is not empty (make-checkpoint writes a new folder)\n", a.display())
    );
    let (code, _, err) = cli(&["gpu", "make-checkpoint", "--preset", "gpt2", d.join("x").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err, "specreplay: error: unknown preset \"gpt2\" (expected one of: qwen3-0.6b, tiny)\n");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn reference_generates_from_text_or_ids_and_writes_the_comparison_file() {
    let d = scratch("ref");
    let m = d.join("m");
    assert_eq!(cli(&["gpu", "make-checkpoint", "--preset", "tiny", "--seed", "2", m.to_str().unwrap()]).0, 0);
    let json = d.join("ours.json");
    let (code, out, err) = cli(&[
        "gpu",
        "reference",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "ab",
        "--prompt-ids",
        "97,98",
        "--max-tokens",
        "5",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("prompt of 2 tokens: 5 generated"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["schema"], "specreplay-logits-v1");
    // "ab" is bytes 97, 98: both prompts are the same tokens, so the same results.
    assert_eq!(v["prompts"][0]["ids"], serde_json::json!([97, 98]));
    assert_eq!(v["prompts"][0]["tokens"], v["prompts"][1]["tokens"]);
    assert_eq!(v["prompts"][0]["prefill_logits_digest"], v["prompts"][1]["prefill_logits_digest"]);
    assert_eq!(v["prompts"][0]["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(std::fs::metadata(d.join("ours.p0.f32")).unwrap().len(), 2 * 512 * 4);
    // Without a tokenizer a text prompt is one clear line; ids still work.
    std::fs::remove_file(m.join("tokenizer.json")).unwrap();
    let (code, _, err) =
        cli(&["gpu", "reference", "--model", m.to_str().unwrap(), "--prompt", "ab", "--json", json.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "specreplay: error: a text prompt needs the checkpoint's tokenizer.json, and there is none: give token ids instead\n"
    );
    let (code, _, err) = cli(&[
        "gpu",
        "reference",
        "--model",
        m.to_str().unwrap(),
        "--prompt-ids",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // A broken checkpoint: one line naming the tensor.
    std::fs::write(
        m.join("config.json"),
        std::fs::read_to_string(m.join("config.json"))
            .unwrap()
            .replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"),
    )
    .unwrap();
    let (code, _, err) = cli(&[
        "gpu",
        "reference",
        "--model",
        m.to_str().unwrap(),
        "--prompt-ids",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "tensor model.layers.0.mlp.gate_proj.weight has shape [128, 64], expected [96, 64] from config.json"
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// `scripts/hf_reference.py compare` reads the comparison files `gpu reference` writes
/// (no torch or numpy needed for compare): identical files pass, a perturbed one fails.
#[test]
fn hf_reference_compare_reads_our_comparison_files() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        return; // No Python on this machine: the GPU host runs it (gpu-check hf-reference).
    }
    let d = scratch("hfcmp");
    let m = d.join("m");
    assert_eq!(cli(&["gpu", "make-checkpoint", "--preset", "tiny", "--seed", "2", m.to_str().unwrap()]).0, 0);
    for name in ["a", "b"] {
        let json = d.join(format!("{name}.json"));
        let args = ["gpu", "reference", "--model", m.to_str().unwrap(), "--prompt-ids", "5,6,7", "--max-tokens", "6"];
        let (code, _, err) = cli(&[&args[..], &["--json", json.to_str().unwrap()]].concat());
        assert_eq!(code, 0, "{err}");
    }
    let script = common::root().join("scripts/hf_reference.py");
    let compare = || {
        let out = std::process::Command::new("python3")
            .arg(&script)
            .args([
                "compare",
                "--ours",
                d.join("a.json").to_str().unwrap(),
                "--theirs",
                d.join("b.json").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = compare();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("prefill logits rel err 0.000e+00") && out.contains("identical for 6 tokens"), "{out}");
    // Their logits scaled by 1.02: a relative error of 2e-2 > 1e-2 fails.
    let p = d.join("b.p0.f32");
    let scaled: Vec<u8> = std::fs::read(&p)
        .unwrap()
        .chunks_exact(4)
        .flat_map(|c| (f32::from_le_bytes(c.try_into().unwrap()) * 1.02).to_le_bytes())
        .collect();
    std::fs::write(&p, scaled).unwrap();
    let (code, out) = compare();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("(max 0.01: FAIL;"), "{out}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `gpu generate --model DIR` loads and checks the checkpoint before it opens a device: a
/// wrong tensor shape is exit 2 with one line on any machine; a good checkpoint gets as far
/// as the device (exit 3 where there is no driver, a run where there is one).
#[test]
fn generate_checks_the_checkpoint_before_the_device() {
    let d = scratch("gen");
    let m = d.join("m");
    assert_eq!(cli(&["gpu", "make-checkpoint", "--preset", "tiny", "--seed", "3", m.to_str().unwrap()]).0, 0);
    let args = ["gpu", "generate", "--model", m.to_str().unwrap(), "--prompt-ids", "1,2,3", "--max-tokens", "4"];
    let (code, _, err) = cli(&args);
    let want = if specreplay_executor::device::driver_present() { 0 } else { 3 };
    assert_eq!(code, want, "{err}");
    // The same folder with a config whose intermediate size no longer matches the tensors.
    let cfg_path = m.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let inter = v["intermediate_size"].as_u64().unwrap();
    let bad = cfg.replace(&format!("\"intermediate_size\": {inter}"), &format!("\"intermediate_size\": {}", inter * 2));
    assert_ne!(bad, cfg, "config.json spells intermediate_size as expected");
    std::fs::write(&cfg_path, bad).unwrap();
    let (code, out, err) = cli(&args);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("specreplay: error: ") && err.contains("has shape"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}
