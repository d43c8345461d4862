//! The kernel modules (CUDA C in `executor/kernels/*.cu`, embedded at build time) and
//! their run-time compilation by NVRTC to sm_90 CUBIN, with an on-disk cache.
//!
//! The sources are header-free, so NVRTC needs no CUDA include directory (CI has none).
//! Options: `--fmad=false --ftz=false --prec-div=true --prec-sqrt=true`, never fast math,
//! so any float arithmetic is IEEE-exact and the CPU references can match bit for bit.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{ExecError, Result};

/// One kernel module: a `.cu` source and the `extern "C"` entry points it must define.
#[derive(Debug, Clone, Copy)]
pub struct KernelModule {
    pub name: &'static str,
    pub source: &'static str,
    pub entries: &'static [&'static str],
}

/// Every module the executor launches.
pub const MODULES: &[KernelModule] = &[
    KernelModule {
        name: "prepare",
        source: include_str!("../kernels/prepare.cu"),
        entries: &["prepare_inputs", "prepare_rows", "build_metadata"],
    },
    KernelModule {
        name: "toy_model",
        source: include_str!("../kernels/toy_model.cu"),
        entries: &["cache_write", "consume_inputs", "synthetic_logits", "continuation_logits", "context_check"],
    },
    KernelModule {
        name: "sample",
        source: include_str!("../kernels/sample.cu"),
        entries: &["argmax_rows", "rejection_greedy"],
    },
    KernelModule {
        name: "random",
        source: include_str!("../kernels/random.cu"),
        entries: &["philox_blocks", "ln_exp_inputs", "exponential_all"],
    },
    KernelModule {
        name: "random_rows",
        source: concat!(include_str!("../kernels/random.cu"), include_str!("../kernels/random_rows.cu")),
        entries: &["synthetic_target_probs", "rejection_random"],
    },
    KernelModule {
        name: "qwen",
        source: include_str!("../kernels/qwen.cu"),
        entries: &[
            "qwen_embed",
            "qwen_rmsnorm",
            "qwen_rmsnorm_cached",
            "qwen_gemm",
            "qwen_gemm_2_16_2",
            "qwen_gemm_2_4_4",
            "qwen_gemm_1_4_8",
            "qwen_gemm_4_4_4",
            "qwen_gemm_4_8_2",
            "qwen_gemm_8_8_1",
            "qwen_gemm_4_16_1",
            "qwen_gemm_8_4_2",
            "qwen_gemm_2_1_8",
            "qwen_gemm_1_1_16",
            "qwen_gemm_glu_4_4",
            "qwen_gemm_norm_2_1_8",
            "qwen_gemm_norm_glu_1_8",
            "qwen_gemm_resadd_1_1_16",
            "qwen_gemm_t_8_8",
            "qwen_gemm_t_4_8",
            "qwen_gemm_t_8_4",
            "qwen_gemm_t_16_4",
            "qwen_gemm_t_glu_8_8",
            "qwen_qk_norm_rope_kv",
            "qwen_attention",
            "qwen_attention_lean",
            "qwen_attention_gqa2",
            "qwen_attention_gqa2_whole",
            "qwen_silu_mul",
            "mma_probe",
            "qwen_read_probe",
            "qwen_l2_prefetch",
            "qwen_gemm_mma_s_1_1",
            "qwen_gemm_mma_s_2_1",
            "qwen_gemm_mma_s_2_1_4",
            "qwen_gemm_mma_s_1_4",
            "qwen_gemm_mma_s_2_4",
            "qwen_gemm_mma_s_1_2",
            "qwen_gemm_mma_w_1_1",
            "qwen_gemm_mma_w_1_2",
            "qwen_gemm_mma_w_1_4",
            "qwen_gemm_mma_w_2_4",
            "qwen_gemm_mma_w_2_2",
            "qwen_gemm_mma_wr_2_2",
            "qwen_gemm_mma_wr_2_2_4",
            "qwen_gemm_mma_wr_2_1_4",
            "qwen_gemm_mma_sr_2_1",
            "qwen_gemm_mma_s_glu_1",
            "qwen_gemm_mma_norm_s_1_1",
            "qwen_gemm_mma_norm_glu_1",
            "qwen_gemm_mma_norm_p_2_1",
            "qwen_gemm_mma_resadd_s_1_1_4",
            "qwen_gemm_mma_norm_p_2_1_pdl",
            "qwen_gemm_mma_norm_glu_1_pdl",
            "qwen_gemm_mma_resadd_s_1_1_4_pdl",
            "qwen_gemm_mma_resadd_s_1_1",
            "qwen_gemm_mma_xs_2_2",
            "qwen_gemm_mma_xs_2_4",
            "qwen_gemm_mma_resadd_s_2_1",
            "qwen_gemm_mma_xs_norm_2_2",
            "qwen_gemm_mma_xs_norm_2_4",
            "qwen_gemm_mma_xs_norm_glu_2",
            "qwen_gemm_mma_xs_norm_glu_4",
        ],
    },
];

/// The decode megakernel (`executor/kernels/qwen_mega.cu`, [`crate::model::mega`]): the
/// forward pass's bodies compiled again with `QWEN_MEGA` defined (activation loads coherent,
/// since one launch writes what other SMs read), plus the persistent entries that run them.
pub const MEGA_MODULE: KernelModule = KernelModule {
    name: "qwen_mega",
    source: concat!(
        "#define QWEN_MEGA 1\n",
        include_str!("../kernels/qwen.cu"),
        include_str!("../kernels/qwen_mega.cu")
    ),
    entries: &["qwen_decode_layers", "qwen_decode_layers_whole", "qwen_decode_layers_compact"],
};

/// The seeds' metadata builders (seeds 000-003), loaded on demand by
/// [`crate::builders`] (`specreplay gpu builders`, `explain --device cuda`).
pub const BUILDER_MODULES: &[KernelModule] = &[
    KernelModule {
        name: "nsa_builders",
        source: include_str!("../kernels/nsa_builders.cu"),
        entries: &[
            "nsa_meta_general",
            "nsa_meta_uniform_qo",
            "nsa_meta_general_fixed_32",
            "nsa_meta_general_fixed_64",
            "nsa_meta_general_fixed_128",
            "nsa_meta_general_fixed_256",
            "nsa_meta_general_fixed_512",
            "nsa_meta_uniform_qo_fixed_32",
            "nsa_meta_uniform_qo_fixed_64",
            "nsa_meta_uniform_qo_fixed_128",
            "nsa_meta_uniform_qo_fixed_256",
            "nsa_meta_uniform_qo_fixed_512",
            "builders_empty",
            "builders_spin",
        ],
    },
    KernelModule {
        name: "draft_select",
        source: include_str!("../kernels/draft_select.cu"),
        entries: &["draft_select_topk", "draft_select_sorted", "draft_select_topk_fixed", "draft_select_sorted_fixed"],
    },
    KernelModule {
        name: "sparse_indices",
        source: include_str!("../kernels/sparse_indices.cu"),
        entries: &["sparse_build", "sparse_build_fused_unclamped", "sparse_build_fixed"],
    },
];

/// Modules whose f32 fused multiply-adds are explicit `fmaf` calls, mirrored by
/// `f32::mul_add` in their CPU twins (`executor/src/model/kernels_ref.rs`); `--fmad=false`
/// still forbids the compiler from contracting anything else in them.
pub const EXPLICIT_FMA_MODULES: &[&str] = &["qwen", "qwen_mega"];

/// The GPU architecture every module is built for (H100 / H200).
pub const ARCH: &str = "sm_90";

/// NVRTC options besides the architecture: no contraction, no flush-to-zero, IEEE
/// division and square root (no `--use_fast_math`).
pub const OPTIONS: &[&str] = &["--fmad=false", "--ftz=false", "--prec-div=true", "--prec-sqrt=true", "--std=c++17"];

/// A kernel build: the correct kernels, or a deliberately wrong variant that the GPU
/// check must catch (selected by the hidden `--variant` flag of the `gpu` commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    #[default]
    Correct,
    /// `build_metadata` leaves FULL-padded tokens' slots stale instead of -1, so the
    /// cache write lets padded tokens write through into real blocks (the class of bug of
    /// SGLang PR #10892 / vLLM PR #43682).
    PaddedSlotWrites,
}

impl Variant {
    /// Every variant's CLI spelling.
    pub const NAMES: [&'static str; 2] = ["correct", "padded-slot-writes"];

    /// Parses a CLI spelling.
    pub fn parse(s: &str) -> Result<Variant> {
        match s {
            "correct" => Ok(Variant::Correct),
            "padded-slot-writes" => Ok(Variant::PaddedSlotWrites),
            _ => Err(ExecError::Input(format!(
                "unknown kernel variant {s:?} (expected one of: {})",
                Variant::NAMES.join(", ")
            ))),
        }
    }

    /// The CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Correct => "correct",
            Variant::PaddedSlotWrites => "padded-slot-writes",
        }
    }

    /// The source of `m` in this variant: the correct source, or the macro that selects
    /// the wrong code path prepended (so the cache key and CUBIN hash differ too).
    pub fn source(self, m: &KernelModule) -> String {
        match self {
            Variant::PaddedSlotWrites if m.name == "prepare" => {
                format!("#define SPECREPLAY_VARIANT_PADDED_SLOT_WRITES 1\n{}", m.source)
            }
            _ => m.source.to_string(),
        }
    }
}

/// Looks a module up by name.
pub fn module(name: &str) -> Result<&'static KernelModule> {
    MODULES
        .iter()
        .chain([&MEGA_MODULE])
        .find(|m| m.name == name)
        .ok_or_else(|| ExecError::UnknownKernel(name.to_string()))
}

/// Whether an NVRTC library can be loaded (never panics).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

fn require_nvrtc() -> Result<()> {
    if nvrtc_present() {
        Ok(())
    } else {
        Err(ExecError::NoNvrtc(
            "libnvrtc.so.13 is not on the library path (CI installs pip's nvidia-cuda-nvrtc==13.0.88 into .cache/nvrtc; \
             set LD_LIBRARY_PATH to its nvidia/cu13/lib)"
                .into(),
        ))
    }
}

/// NVRTC's version `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; both pointers are valid for writes.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| ExecError::Nvrtc(format!("nvrtcVersion: {e}")))?;
    Ok((major, minor))
}

/// What NVRTC produces for a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// PTX text for a virtual architecture (`compute_90`).
    Ptx,
    /// A CUBIN for a real architecture (`sm_90`).
    Cubin,
}

/// The full option list for `arch` (e.g. `sm_90` or `compute_90`).
pub fn options_for(arch: &str) -> Vec<String> {
    let mut o = vec![format!("--gpu-architecture={arch}")];
    o.extend(OPTIONS.iter().map(|s| s.to_string()));
    o
}

/// Compiles `m` with NVRTC to PTX or CUBIN for `arch`. A compile failure is
/// [`ExecError::Compile`] with NVRTC's log.
pub fn compile(m: &KernelModule, arch: &str, out: Output) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result, sys};
    require_nvrtc()?;
    let opts = options_for(arch);
    let src = std::ffi::CString::new(m.source).map_err(|e| ExecError::Nvrtc(format!("{}: {e}", m.name)))?;
    let name = std::ffi::CString::new(format!("{}.cu", m.name)).expect("module names have no NUL");
    let prog =
        result::create_program(&src, Some(&name)).map_err(|e| ExecError::Nvrtc(format!("nvrtcCreateProgram: {e}")))?;
    // SAFETY: `prog` was created above and is destroyed exactly once below.
    let res = unsafe { result::compile_program(prog, &opts) };
    let outcome = match res {
        Err(_) => {
            // SAFETY: `prog` is live.
            let log = unsafe { result::get_program_log(prog) }.map(|l| c_chars_to_string(&l)).unwrap_or_default();
            Err(ExecError::Compile { module: m.name.to_string(), options: opts.join(" "), log })
        }
        Ok(()) => match out {
            // SAFETY: `prog` compiled successfully.
            Output::Ptx => unsafe { result::get_ptx(prog) }
                .map(|p| c_chars_to_string(&p).into_bytes())
                .map_err(|e| ExecError::Nvrtc(format!("nvrtcGetPTX: {e}"))),
            Output::Cubin => {
                let mut size = 0usize;
                // SAFETY: `prog` compiled for a real architecture; the buffer has `size` bytes.
                unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }
                    .result()
                    .map_err(|e| ExecError::Nvrtc(format!("nvrtcGetCUBINSize: {e}")))
                    .and_then(|()| {
                        let mut buf = vec![0u8; size];
                        unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast()) }
                            .result()
                            .map_err(|e| ExecError::Nvrtc(format!("nvrtcGetCUBIN: {e}")))?;
                        Ok(buf)
                    })
            }
        },
    };
    // SAFETY: destroyed once; nothing refers to it afterwards.
    let _ = unsafe { result::destroy_program(prog) };
    outcome
}

fn c_chars_to_string(v: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = v.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The cache key of a module: sha256 over the source, the options, the NVRTC version and
/// the architecture (NUL-separated).
pub fn cache_key(m: &KernelModule, arch: &str, nvrtc: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(m.source.as_bytes());
    h.update([0]);
    h.update(options_for(arch).join(" ").as_bytes());
    h.update([0]);
    h.update(format!("nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
    h.update([0]);
    h.update(arch.as_bytes());
    hex(&h.finalize())
}

/// Where the cache at `dir` keeps `m`'s CUBIN for [`ARCH`] under NVRTC `nvrtc`.
pub fn cache_path(m: &KernelModule, dir: &Path, nvrtc: (i32, i32)) -> PathBuf {
    dir.join(format!("{}-{ARCH}-{}.cubin", m.name, cache_key(m, ARCH, nvrtc)))
}

/// The kernel cache folder: `$SPECREPLAY_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/specreplay/kernels`, else `$HOME/.cache/specreplay/kernels`; `None`
/// when none of these is set (then nothing is cached).
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("SPECREPLAY_KERNEL_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("specreplay/kernels")))
        .or_else(|| var("HOME").map(|p| p.join(".cache/specreplay/kernels")))
}

/// A module compiled to CUBIN, with the sha256 of the CUBIN for the trace header.
#[derive(Debug, Clone)]
pub struct CompiledModule {
    pub name: &'static str,
    pub cubin: Vec<u8>,
    /// sha256 of `cubin` (lowercase hex).
    pub sha256: String,
    /// Whether it came from the disk cache.
    pub cached: bool,
}

/// The CUBIN of `m` for [`ARCH`], from the cache at `dir` when present, else compiled and
/// stored there atomically (temporary file + rename). Cache I/O failures only disable
/// caching; compile failures are errors.
pub fn cubin_cached(m: &KernelModule, dir: Option<&Path>) -> Result<CompiledModule> {
    let nvrtc = nvrtc_version()?;
    let path = dir.map(|d| cache_path(m, d, nvrtc));
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()).filter(|b| !b.is_empty()) {
        return Ok(CompiledModule { name: m.name, sha256: sha256_hex(&bytes), cubin: bytes, cached: true });
    }
    let cubin = compile(m, ARCH, Output::Cubin)?;
    tracing::info!(module = m.name, arch = ARCH, bytes = cubin.len(), "NVRTC compiled kernel module");
    if let (Some(dir), Some(path)) = (dir, path.as_ref()) {
        let _ = write_atomic(dir, path, &cubin);
    }
    Ok(CompiledModule { name: m.name, sha256: sha256_hex(&cubin), cubin, cached: false })
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("cubin"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_changes_with_every_input() {
        let m = MODULES[0];
        let base = cache_key(&m, "sm_90", (13, 0));
        assert_eq!(base.len(), 64);
        assert_ne!(base, cache_key(&m, "sm_89", (13, 0)));
        assert_ne!(base, cache_key(&m, "sm_90", (13, 1)));
        let edited = KernelModule { source: "// edited\n", ..m };
        assert_ne!(base, cache_key(&edited, "sm_90", (13, 0)));
        // The file the cache keeps (and `gpu compile-kernels` writes) is named by the key.
        let dir = Path::new("/cache");
        assert_eq!(
            cache_path(&m, dir, (13, 0)),
            dir.join(format!("{}-{ARCH}-{}.cubin", m.name, cache_key(&m, ARCH, (13, 0))))
        );
        assert_ne!(cache_path(&m, dir, (13, 0)), cache_path(&edited, dir, (13, 0)));
    }

    #[test]
    fn module_entries_are_defined_extern_c_in_their_sources() {
        for m in MODULES.iter().chain(BUILDER_MODULES).chain([&MEGA_MODULE]) {
            for e in m.entries {
                assert!(
                    m.source.contains(&format!("__global__ void {e}("))
                        || m.source.contains(&format!(") {e}("))
                        || m.source.contains(&format!("\nGEMM_VARIANT({e}, "))
                        || m.source.contains(&format!("\nNSA_FIXED({e}, "))
                        || m.source.contains(&format!("\nGEMM_ENTRY({e}, "))
                        || m.source.contains(&format!("\nGEMM_NORM_ENTRY({e}, "))
                        || m.source.contains(&format!("\nGEMM_RESADD_ENTRY({e}, "))
                        || m.source.contains(&format!("\nGEMM_TILED_ENTRY({e}, "))
                        || m.source.contains(&format!("\nGEMM_MMA_ENTRY({e}, "))
                        || m.source.contains(&format!("\nGEMM_MMA_R_ENTRY({e}, "))
                        || m.source.contains(&format!("\nGEMM_MMA_FOLDED_ENTRY({e}, "))
                        || m.source.contains(&format!("\nGEMM_MMA_FOLDED_PF_ENTRY({e}, "))
                        || m.source.contains(&format!("\nGEMM_MMA_FOLDED_PDL_ENTRY({e}, "))
                        || m.source.contains(&format!("\nGEMM_MMA_XS_ENTRY({e}, "))
                        || m.source.contains(&format!("\nGEMM_MMA_XS_NORM_ENTRY({e}, "))
                        || m.source.contains(&format!("\nRMSNORM_ENTRY({e}, ")),
                    "{}: no entry {e}",
                    m.name
                );
            }
            assert!(!m.source.contains("#include"), "{} must be header-free", m.name);
        }
        assert!(module("nope").is_err());
    }

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("specreplay-kcache-{}", std::process::id()));
        let path = dir.join("x.cubin");
        write_atomic(&dir, &path, b"abc").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
