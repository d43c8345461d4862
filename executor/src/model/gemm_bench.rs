//! `specreplay gpu bench-gemm`: the forward pass's GEMM tilings (`qwen_gemm` and the
//! `qwen_gemm_NC_MT_U` variants of `executor/kernels/qwen.cu`) timed on the model's shapes,
//! each checked bit-equal to `qwen_gemm` (a tiling changes which thread computes an
//! element, never the order of its sum); the tensor-core entries (`qwen_gemm_mma_*`, another
//! order) are checked against the CPU twin's `dot_tensor` on sampled columns and against each
//! other. Weights are cycled over enough copies that they
//! come from HBM, as in a step; time per launch from CUDA events around a run of launches.

use cudarc::driver::{sys, CudaSlice, PushKernelArg};

use super::gpu::Tiling;
use super::ModelConfig;
use crate::device::Device;
use crate::error::Result;

/// The tilings, each checked bit-equal to the first (`qwen_gemm`).
pub const GEMM_VARIANTS: &[Tiling] = &[
    Tiling::walk("qwen_gemm", 2),
    Tiling::walk("qwen_gemm_2_16_2", 2),
    Tiling::walk("qwen_gemm_2_4_4", 2),
    Tiling::walk("qwen_gemm_1_4_8", 1),
    Tiling::walk("qwen_gemm_4_4_4", 4),
    Tiling::walk("qwen_gemm_4_8_2", 4),
    Tiling::walk("qwen_gemm_8_8_1", 8),
    Tiling::walk("qwen_gemm_4_16_1", 4),
    Tiling::walk("qwen_gemm_8_4_2", 8),
    Tiling::walk("qwen_gemm_2_1_8", 2),
    Tiling::walk("qwen_gemm_1_1_16", 1),
    Tiling::tiled("qwen_gemm_t_8_8", 8, 8),
    Tiling::tiled("qwen_gemm_t_4_8", 4, 8),
    Tiling::tiled("qwen_gemm_t_8_4", 8, 4),
    Tiling::tiled("qwen_gemm_t_16_4", 16, 4),
    Tiling::mma("qwen_gemm_mma_s_1_1", 8, 16, true),
    Tiling::mma("qwen_gemm_mma_s_2_1", 16, 16, true),
    Tiling::mma("qwen_gemm_mma_s_2_1_4", 16, 16, true),
    Tiling::mma("qwen_gemm_mma_s_1_4", 8, 64, true),
    Tiling::mma("qwen_gemm_mma_s_2_4", 16, 64, true),
    Tiling::mma("qwen_gemm_mma_s_1_2", 8, 32, true),
    Tiling::mma("qwen_gemm_mma_w_1_1", 8, 16, false),
    Tiling::mma("qwen_gemm_mma_w_1_2", 8, 32, false),
    Tiling::mma("qwen_gemm_mma_w_1_4", 8, 64, false),
    Tiling::mma("qwen_gemm_mma_w_2_4", 16, 64, false),
    Tiling::mma("qwen_gemm_mma_w_2_2", 16, 32, false),
    Tiling::mma("qwen_gemm_mma_wr_2_2", 16, 32, false),
    Tiling::mma("qwen_gemm_mma_wr_2_2_4", 16, 32, false),
    Tiling::mma("qwen_gemm_mma_wr_2_1_4", 16, 16, false),
    Tiling::mma("qwen_gemm_mma_sr_2_1", 16, 16, true),
    super::gpu::XS_2_2,
    super::gpu::XS_2_4,
];

/// One timed (shape, rows, tiling).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GemmRow {
    pub shape: &'static str,
    pub k: usize,
    pub n: usize,
    pub rows: usize,
    pub kernel: &'static str,
    pub us_per_launch: f64,
    /// Weight bytes / time.
    pub weight_gb_s: f64,
    /// FMA rate in TFLOP/s (2 flops per multiply-add).
    pub tflops: f64,
    /// Registers per thread and local memory (spills) per thread in bytes, as loaded.
    pub regs: i32,
    pub local_bytes: i32,
    /// Output bit-equal to `qwen_gemm`'s (tensor-core entries: to the CPU twin's
    /// `dot_tensor` on sampled columns, and to the first tensor-core entry's output).
    pub equal: bool,
}

/// The model's GEMM shapes (K, N): fused qkv, o, fused gate/up, down, LM head.
pub fn shapes(c: &ModelConfig) -> Vec<(&'static str, usize, usize)> {
    let heads = c.num_heads + 2 * c.num_kv_heads;
    vec![
        ("qkv_proj", c.hidden_size, heads * c.head_dim),
        ("o_proj", c.num_heads * c.head_dim, c.hidden_size),
        ("gate_up_proj", c.hidden_size, 2 * c.intermediate_size),
        ("down_proj", c.intermediate_size, c.hidden_size),
        ("lm_head", c.hidden_size, c.vocab_size),
    ]
}

fn bf16_noise(seed: u64, n: usize, scale: f32) -> Vec<u16> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = specreplay_sim::splitmix::splitmix(s);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            let v = (2.0 * u - 1.0) * scale;
            (v.to_bits() >> 16) as u16
        })
        .collect()
}

/// The tensor-core output on 16 leading and 16 trailing columns of every row equals the CPU
/// twin's `dot_tensor` bit for bit (stored as the kernels store: bf16, or bf16-rounded f32).
fn twin_sample_equal(
    x: &[u16],
    w: &[u16],
    rows: usize,
    k: usize,
    n: usize,
    f32_out: bool,
    got: &(Vec<u16>, Vec<f32>),
) -> bool {
    use super::kernels_ref::{dot_tensor, f32_to_bf16, round_bf};
    let cols = (0..n.min(16)).chain(n.saturating_sub(16).max(16)..n);
    cols.flat_map(|j| (0..rows).map(move |m| (m, j))).all(|(m, j)| {
        let v = dot_tensor(&x[m * k..(m + 1) * k], &w[j * k..(j + 1) * k]);
        if f32_out {
            got.1[m * n + j].to_bits() == round_bf(v).to_bits()
        } else {
            got.0[m * n + j] == f32_to_bf16(v)
        }
    })
}

/// Times every tiling on every shape at every row count (`launches` per measurement).
pub fn bench(dev: &Device, c: &ModelConfig, rows_list: &[usize], launches: usize) -> Result<Vec<GemmRow>> {
    let mut out = Vec::new();
    let max_rows = rows_list.iter().copied().max().unwrap_or(1);
    for (shape, k, n) in shapes(c) {
        let wbytes = k * n * 2;
        let copies = (256usize << 20).div_ceil(wbytes).clamp(1, 32);
        let w_host = bf16_noise(0x9e37 ^ (k * n) as u64, k * n, 0.03);
        let mut ws: Vec<CudaSlice<u16>> = Vec::with_capacity(copies);
        for _ in 0..copies {
            ws.push(dev.stream.clone_htod(&w_host)?);
        }
        let x_host = bf16_noise(0x51 ^ k as u64, max_rows * k, 1.0);
        let x = dev.stream.clone_htod(&x_host)?;
        let mut y: CudaSlice<u16> = dev.stream.alloc_zeros(max_rows * n)?;
        let mut yf: CudaSlice<f32> = dev.stream.alloc_zeros(max_rows * n)?;
        let f32_out = i32::from(shape == "lm_head");
        for &rows in rows_list {
            let mut counts_host = [0i32; 8];
            counts_host[3] = rows as i32;
            counts_host[5] = rows as i32;
            let counts = dev.stream.clone_htod(&counts_host)?;
            let source = 0i32;
            let mut reference: Option<(Vec<u16>, Vec<f32>)> = None;
            let mut mma_reference: Option<(Vec<u16>, Vec<f32>)> = None;
            for tiling in GEMM_VARIANTS {
                if tiling.shared_bytes(k) > dev.shared_optin() {
                    continue;
                }
                let kernel = tiling.entry;
                let f = dev.function(kernel)?;
                let lc = tiling.launch_config(dev, f, n, rows, k)?;
                let (ki, ni) = (k as i32, n as i32);
                let go = |w: &CudaSlice<u16>, y: &mut CudaSlice<u16>, yf: &mut CudaSlice<f32>| -> Result<()> {
                    let mut l = dev.stream.launch_builder(f);
                    l.arg(&counts).arg(&source).arg(&x).arg(&ki).arg(w).arg(&ni);
                    l.arg(y).arg(yf).arg(&f32_out);
                    // SAFETY: the qwen_gemm signature; x holds rows x K, w N x K, y and yf
                    // rows x N (rows <= max_rows).
                    unsafe { l.launch(lc) }?;
                    Ok(())
                };
                // Correctness: zero the outputs, one launch, read back.
                dev.stream.memset_zeros(&mut y)?;
                dev.stream.memset_zeros(&mut yf)?;
                go(&ws[0], &mut y, &mut yf)?;
                let got = (dev.stream.clone_dtoh(&y.slice(..rows * n))?, dev.stream.clone_dtoh(&yf.slice(..rows * n))?);
                let same = |r: &(Vec<u16>, Vec<f32>)| {
                    r.0 == got.0 && r.1.iter().map(|v| v.to_bits()).eq(got.1.iter().map(|v| v.to_bits()))
                };
                let slot = if tiling.mma_split.is_some() { &mut mma_reference } else { &mut reference };
                let equal = match slot {
                    Some(r) => same(r),
                    None if tiling.mma_split.is_some() => {
                        let ok = twin_sample_equal(&x_host, &w_host, rows, k, n, f32_out != 0, &got);
                        *slot = Some(got);
                        ok
                    }
                    None => {
                        *slot = Some(got);
                        true
                    }
                };
                for i in 0..copies.min(8) {
                    go(&ws[i % copies], &mut y, &mut yf)?;
                }
                let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
                let (a, b) = (dev.ctx.new_event(flags)?, dev.ctx.new_event(flags)?);
                dev.stream.synchronize()?;
                a.record(&dev.stream)?;
                for i in 0..launches {
                    go(&ws[i % copies], &mut y, &mut yf)?;
                }
                b.record(&dev.stream)?;
                dev.stream.synchronize()?;
                let us = f64::from(a.elapsed_ms(&b)?) * 1e3 / launches.max(1) as f64;
                tracing::debug!(shape, rows, kernel, us, "gemm tiling timed");
                out.push(GemmRow {
                    shape,
                    k,
                    n,
                    rows,
                    kernel,
                    us_per_launch: us,
                    weight_gb_s: wbytes as f64 / (us * 1e3),
                    tflops: 2.0 * (rows * k * n) as f64 / (us * 1e6),
                    regs: f.num_regs()?,
                    local_bytes: f.get_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?,
                    equal,
                });
            }
        }
    }
    Ok(out)
}

/// One launch that only reads a shape's weight bytes (`qwen_read_probe`: 16-byte loads, 4
/// in flight per thread, 8 blocks of 256 threads per SM), timed as [`bench()`] times the
/// tilings (copies cycled so the bytes come from HBM, CUDA events around a run of launches):
/// the floor a product of that shape meets in this measurement, launch included.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReadFloor {
    pub shape: &'static str,
    pub bytes: usize,
    pub us_per_launch: f64,
    pub gb_s: f64,
}

/// [`ReadFloor`] of every shape of [`shapes`].
pub fn read_floor(dev: &Device, c: &ModelConfig, launches: usize) -> Result<Vec<ReadFloor>> {
    let f = dev.function("qwen_read_probe")?;
    let lc = cudarc::driver::LaunchConfig {
        grid_dim: (8 * dev.info.sm_count.max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut sink: CudaSlice<u32> = dev.stream.alloc_zeros(4)?;
    let mut out = Vec::new();
    for (shape, k, n) in shapes(c) {
        let bytes = k * n * 2;
        let copies = (256usize << 20).div_ceil(bytes).clamp(1, 32);
        let mut ws: Vec<CudaSlice<u16>> = Vec::with_capacity(copies);
        for _ in 0..copies {
            ws.push(dev.stream.alloc_zeros(k * n)?);
        }
        let n16 = (bytes / 16) as i64;
        let mut go = |w: &CudaSlice<u16>| -> Result<()> {
            let mut l = dev.stream.launch_builder(f);
            l.arg(w).arg(&n16).arg(&mut sink);
            // SAFETY: qwen_read_probe(const uint4*, long long, unsigned*): w holds n16 16-byte
            // words (k * n bf16, k * n * 2 a multiple of 16 for every shape), sink 4 words.
            unsafe { l.launch(lc) }?;
            Ok(())
        };
        for w in ws.iter().take(8) {
            go(w)?;
        }
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let (a, b) = (dev.ctx.new_event(flags)?, dev.ctx.new_event(flags)?);
        dev.stream.synchronize()?;
        a.record(&dev.stream)?;
        for i in 0..launches {
            go(&ws[i % copies])?;
        }
        b.record(&dev.stream)?;
        dev.stream.synchronize()?;
        let us = f64::from(a.elapsed_ms(&b)?) * 1e3 / launches.max(1) as f64;
        out.push(ReadFloor { shape, bytes, us_per_launch: us, gb_s: bytes as f64 / (us * 1e3) });
    }
    Ok(out)
}
