//! Every kernel module compiles with NVRTC to PTX (`compute_90`) and to sm_90 CUBIN, and
//! defines each of its entry points. Needs only NVRTC, not a GPU: CI installs pip's
//! `nvidia-cuda-nvrtc==13.0.88` (the GPU host's build) into `.cache/nvrtc` (`.ci/run`).
//! Without NVRTC this test FAILS: a kernel that does not compile must turn CI red, and a
//! CI machine without NVRTC must not pass silently.

use specreplay_executor::kernels::{self, Output, BUILDER_MODULES, MODULES};

/// Makes `.cache/nvrtc`'s NVRTC loadable when it is not on the library path: loading it
/// by absolute path lets later `dlopen("libnvrtc.so.13")` calls find it by its soname.
fn nvrtc_or_fail() {
    if kernels::nvrtc_present() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/nvrtc/nvidia/cu13/lib");
    // The builtins library first: NVRTC dlopens it by soname at compile time.
    for name in ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"] {
        let lib = dir.join(name);
        if lib.exists() {
            // SAFETY: loading NVRTC runs no initialisers with preconditions; kept loaded
            // for the life of the process.
            if let Ok(l) = unsafe { libloading::Library::new(&lib) } {
                std::mem::forget(l);
            }
        }
    }
    assert!(
        kernels::nvrtc_present(),
        "NVRTC not found: run `.ci/run` once (it installs nvidia-cuda-nvrtc==13.0.88 into .cache/nvrtc) \
         or put a libnvrtc.so.13 on LD_LIBRARY_PATH (CI={})",
        std::env::var("CI").unwrap_or_default()
    );
}

#[test]
fn every_module_compiles_to_ptx_and_sm90_cubin_with_its_entry_points() {
    nvrtc_or_fail();
    let (major, minor) = kernels::nvrtc_version().expect("nvrtcVersion");
    assert!(major >= 12, "NVRTC {major}.{minor} too old for sm_90 CUBIN");
    // The engine's modules and the seeds' metadata builders (loaded on demand).
    for m in MODULES.iter().chain(BUILDER_MODULES).chain([&kernels::MEGA_MODULE]) {
        let ptx = String::from_utf8(kernels::compile(m, "compute_90", Output::Ptx).unwrap()).unwrap();
        let cubin = kernels::compile(m, kernels::ARCH, Output::Cubin).unwrap();
        assert!(cubin.starts_with(b"\x7fELF"), "{}: CUBIN is not an ELF image", m.name);
        for e in m.entries {
            assert!(ptx.contains(&format!(".entry {e}(")), "{}: PTX lacks entry {e}", m.name);
            let needle = e.as_bytes();
            assert!(cubin.windows(needle.len()).any(|w| w == needle), "{}: CUBIN lacks symbol {e}", m.name);
        }
        if !kernels::EXPLICIT_FMA_MODULES.contains(&m.name) {
            assert!(!ptx.contains("fma.rn.f32"), "{}: --fmad=false must leave no contracted f32 FMA", m.name);
        }
        assert!(!ptx.contains("fma.rn.f64"), "{}: --fmad=false must leave no contracted f64 FMA", m.name);
    }
}

#[test]
fn a_kernel_that_does_not_compile_is_a_typed_error_with_the_nvrtc_log() {
    nvrtc_or_fail();
    let bad = kernels::KernelModule {
        name: "broken",
        source: "extern \"C\" __global__ void k(int* p) { p[0] = undefined_name; }\n",
        entries: &["k"],
    };
    let err = kernels::compile(&bad, kernels::ARCH, Output::Cubin).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, specreplay_executor::ExecError::Compile { .. }), "{msg}");
    assert!(msg.contains("undefined_name"), "log missing: {msg}");
    assert!(msg.contains("--fmad=false"), "options missing: {msg}");
}

#[test]
fn the_disk_cache_returns_the_compiled_cubin_and_its_hash() {
    nvrtc_or_fail();
    let dir = std::env::temp_dir().join(format!("specreplay-nvrtc-cache-{}", std::process::id()));
    let m = &MODULES[2];
    let first = kernels::cubin_cached(m, Some(&dir)).unwrap();
    assert!(!first.cached);
    let second = kernels::cubin_cached(m, Some(&dir)).unwrap();
    assert!(second.cached);
    assert_eq!(first.cubin, second.cubin);
    assert_eq!(first.sha256, kernels::sha256_hex(&second.cubin));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The known-bad kernel variant compiles too, to a different CUBIN (its trace notes and
/// module hash then tell it apart), and only the `prepare` module changes.
#[test]
fn the_known_bad_variant_compiles_to_a_different_cubin() {
    use specreplay_executor::kernels::{KernelModule, Variant};
    nvrtc_or_fail();
    for m in MODULES {
        let src = Variant::PaddedSlotWrites.source(m);
        assert_eq!(src == m.source, m.name != "prepare", "{}", m.name);
        if m.name == "prepare" {
            let leaked: &'static str = Box::leak(src.into_boxed_str());
            let bad = KernelModule { source: leaked, ..*m };
            let a = kernels::compile(m, kernels::ARCH, Output::Cubin).unwrap();
            let b = kernels::compile(&bad, kernels::ARCH, Output::Cubin).unwrap();
            assert_ne!(a, b, "the macro must change the code");
        }
    }
}

/// In the modules that call `fmaf` explicitly, every f32 FMA of the PTX comes from those
/// calls: with `fmaf` spelled as a separate multiply and add, none is left (so
/// `--fmad=false` still stops every contraction the CPU twins could not reproduce).
#[test]
fn explicit_fma_modules_contract_nothing_else() {
    nvrtc_or_fail();
    for name in kernels::EXPLICIT_FMA_MODULES {
        let m = kernels::module(name).unwrap();
        let ptx = String::from_utf8(kernels::compile(m, "compute_90", Output::Ptx).unwrap()).unwrap();
        assert!(ptx.contains("fma.rn.f32"), "{name}: the explicit fmaf calls are gone?");
        let src: &'static str =
            Box::leak(format!("#define fmaf(a, b, c) ((a) * (b) + (c))\n{}", m.source).into_boxed_str());
        let plain = kernels::KernelModule { source: src, ..*m };
        let ptx = String::from_utf8(kernels::compile(&plain, "compute_90", Output::Ptx).unwrap()).unwrap();
        assert!(!ptx.contains("fma.rn.f32"), "{name}: an f32 FMA that is not an explicit fmaf call");
    }
}
