// The Qwen3 forward pass (Hugging Face `transformers/models/qwen3/modeling_qwen3.py`
// `Qwen3ForCausalLM`) on persistent buffers: embedding gather, RMSNorm with fused residual
// add, bf16 GEMMs with f32 accumulation, q/k RMSNorm + RoPE + KV write through
// `slot_mapping` into a paged cache laid out as vLLM's FlashAttention backend
// (`vllm/v1/attention/backends/flash_attn.py` `get_kv_cache_shape`: key and value caches
// `[num_blocks, block_size, num_kv_heads, head_dim]`), paged causal attention for prefill,
// decode and verify, SiLU-mul, and the tied LM head on the logits rows only.
//
// BATCH INVARIANCE BY CONSTRUCTION. Every reduction has one fixed order that depends only
// on the row's own data and the model's shapes, never on the number of rows, the graph
// size or the batch mates; the CPU twin (`executor/src/model/kernels_ref.rs`) performs the
// same operations in the same order and matches bit for bit:
//   * warp_sum_strided: lane l accumulates elements l, l+32, l+64, ... in increasing order
//     (fmaf), then a butterfly (xor 16, 8, 4, 2, 1) adds lanes; every lane ends with the
//     same value.
//   * GEMM dot products: lane l accumulates 8-element chunks l, l+32, ... (elements in
//     order inside a chunk, fmaf), then the same butterfly.
//   * attention: keys in tiles of 32; warp w of ATT_WARPS takes tiles w, w+ATT_WARPS, ...
//     in increasing order with an online softmax; the warps' states are merged in warp
//     order. Scores are sequential fmaf over head_dim.
//   * exp_f: a polynomial of basic operations (no hardware exp), identical on the CPU.
// Rows (tokens) are independent: a row's values depend on its own input, position and
// context only. Compiled with --fmad=false: the only fused multiply-adds are the explicit
// fmaf calls, mirrored by f32::mul_add on the CPU.
//
// bf16 is stored as unsigned short; conversions round to nearest even (NaN kept quiet).
// Header-free; loop bounds come from `counts` (see prepare.cu for its layout).

#define C_NUM_REQS 0
#define C_META_TOKENS 2
#define C_NUM_LOGITS 3
#define C_PADDED_TOKENS 5
#define CTR_OUT_OF_RANGE 2

#define ROWS_PADDED 0
#define ROWS_LOGITS 1

typedef unsigned short bf16_t;

// Activations (rows other kernels of the step write) are `ACT_RESTRICT` pointers: restrict,
// so read-only ones may come through the non-coherent load path, except in the decode
// megakernel's module (qwen_mega.cu, compiled with QWEN_MEGA), where one launch writes
// what it later reads on other SMs and every such load must be a coherent one.
#ifdef QWEN_MEGA
#define ACT_RESTRICT
#else
#define ACT_RESTRICT __restrict__
#endif

__device__ __forceinline__ float bf2f(bf16_t h) { return __uint_as_float(((unsigned int)h) << 16); }

__device__ __forceinline__ bf16_t f2bf(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

__device__ __forceinline__ float round_bf(float f) { return bf2f(f2bf(f)); }

// exp with basic operations only (twin: kernels_ref.rs `exp_f`): 0 below -87, +inf above
// 88, NaN kept; else 2^k * p(r), r = x - k ln2 (two-part ln2), p a degree-7 Taylor
// polynomial in Horner form.
__device__ __forceinline__ float exp_f(float x) {
    if (x != x) return x;
    if (x < -87.0f) return 0.0f;
    if (x > 88.0f) return __int_as_float(0x7f800000);
    const float k = floorf(x * 1.44269502f + 0.5f);
    const float r = (x - k * 0.693145751953125f) - k * 1.42860677e-06f;
    float p = 1.98412701e-04f;
    p = p * r + 1.38888892e-03f;
    p = p * r + 8.33333377e-03f;
    p = p * r + 4.16666679e-02f;
    p = p * r + 1.66666672e-01f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int ki = (int)k;
    return p * __int_as_float((ki + 127) << 23);
}

// SiLU(gate) * up as HF's Qwen3MLP rounds it in bf16 (twin: kernels_ref.rs): gate and up are
// bf16 values, silu = bf16(g / (1 + exp(-g))), the product rounded once.
__device__ __forceinline__ bf16_t silu_mul_bf(float g, float up) {
    const float sg = round_bf(g / (1.0f + exp_f(-g)));
    return f2bf(sg * up);
}


__device__ __forceinline__ float warp_butterfly_sum(float v) {
    v = v + __shfl_xor_sync(0xffffffffu, v, 16);
    v = v + __shfl_xor_sync(0xffffffffu, v, 8);
    v = v + __shfl_xor_sync(0xffffffffu, v, 4);
    v = v + __shfl_xor_sync(0xffffffffu, v, 2);
    v = v + __shfl_xor_sync(0xffffffffu, v, 1);
    return v;
}

// 1 / rms from each lane's sum of squares `ss` of a row of n elements (lane l: elements
// l, l + 32, ... with fmaf: qwen_rmsnorm's order, the q/k norm's and the staged norm's
// too): the butterfly adds the lanes, then qwen_rmsnorm's expression.
__device__ __forceinline__ float lanes_inv_rms(float ss, int n, float eps) {
    ss = warp_butterfly_sum(ss);
    return 1.0f / sqrtf(ss / (float)n + eps);
}

__device__ __forceinline__ float warp_butterfly_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 16));
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 8));
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return v;
}

__device__ __forceinline__ int rows_of(const int* counts, int source) {
    return source == ROWS_LOGITS ? counts[C_NUM_LOGITS] : counts[C_PADDED_TOKENS];
}

// Programmatic dependent launch (KernelPlan::FusedPdl; executor/src/model/launch.rs). Every
// kernel lets the next one in the stream launch at once (pdl_launch_dependents) and waits
// for the previous one to complete, its writes visible, before it reads anything an earlier
// kernel wrote (pdl_wait); before the wait a GEMM only prefetches its first weight rows into
// L2 (gemm_pdl_prologue). Launched without the attribute (the other plans) both are no-ops: the
// wait returns at once. No value changes either way.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_begin() {
    pdl_launch_dependents();
    pdl_wait();
}

// Embedding gather over the padded tokens: residual[t] = embed[input_ids[t]]. An id
// outside the vocabulary gives a zero row (stale padded slots may hold anything); for a
// real token (t < meta_tokens) it also counts as out of range.
extern "C" __global__ void qwen_embed(
    const int* __restrict__ counts,
    const int* __restrict__ input_ids,
    const bf16_t* __restrict__ embed, int vocab, int hidden,
    bf16_t* __restrict__ residual,
    unsigned int* __restrict__ counters)
{
    pdl_begin();
    const int rows = counts[C_PADDED_TOKENS];
    const int real = counts[C_META_TOKENS];
    for (int t = blockIdx.x; t < rows; t += gridDim.x) {
        const int id = input_ids[t];
        const bool ok = id >= 0 && id < vocab;
        if (!ok && t < real && threadIdx.x == 0) atomicAdd(&counters[CTR_OUT_OF_RANGE], 1u);
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
            residual[(long long)t * hidden + i] = ok ? embed[(long long)id * hidden + i] : (bf16_t)0;
        }
    }
}

// Lane l's sum of squares of elements l, l + 32, ... of the K bf16 at p, in that order
// (fmaf), 32 loads in flight at a time: the first half of every RMSNorm order here (the
// butterfly over the lanes is the second).
__device__ __forceinline__ float lane_squares(const bf16_t* p, int K, int lane) {
    float ss = 0.0f;
    for (int base = 0; base < K; base += 32 * 32) {
        bf16_t rv[32];
#pragma unroll
        for (int u = 0; u < 32; ++u) {
            const int i = base + lane + 32 * u;
            rv[u] = p[i < K ? i : 0];
        }
#pragma unroll
        for (int u = 0; u < 32; ++u) {
            const float v = bf2f(rv[u]);
            if (base + lane + 32 * u < K) ss = fmaf(v, v, ss);
        }
    }
    return ss;
}

// RMSNorm (`Qwen3RMSNorm`): with `add`, residual = bf16(delta + residual) first (HF's
// `hidden_states = residual + hidden_states`); then out = bf16(bf16(r * inv) * w), inv =
// 1 / sqrt(mean(r^2) + eps). One warp per row. `source` ROWS_PADDED: rows 0..padded,
// row i in, row i out; ROWS_LOGITS: row j reads row gather[j] and residual is not
// written (the final norm on the logits rows only). Two passes of RMS_U loads ahead; the
// candidate `qwen_rmsnorm_cached` (KernelPlan::Candidate) holds rows of up to 32 * RMS_C
// elements in registers instead.
#define RMS_U 8
#define RMS_C 32
template <bool CACHED>
__device__ __forceinline__ void rmsnorm_rows(
    const int* __restrict__ counts, int source,
    const int* __restrict__ gather,
    const bf16_t* __restrict__ delta,
    bf16_t* __restrict__ residual,
    const bf16_t* __restrict__ weight, int hidden, float eps, int add,
    bf16_t* __restrict__ out)
{
    const int rows = rows_of(counts, source);
    const int lane = threadIdx.x & 31;
    const int warps = blockDim.x >> 5;
    for (int j = blockIdx.x * warps + (threadIdx.x >> 5); j < rows; j += gridDim.x * warps) {
        const long long in_row = (long long)(source == ROWS_LOGITS ? gather[j] : j) * hidden;
        const long long out_row = (long long)j * hidden;
        if (CACHED && hidden <= 32 * RMS_C) {
            // The whole row in registers, lane l holding elements l, l+32, ...: every load
            // of the row (residual, delta, weight) is issued before any arithmetic, with no
            // branch around it (lanes past `hidden` read element 0 and discard it), so the
            // row waits for memory once. The sum and its order are those of the loop below.
            bf16_t rr[RMS_C], dd[RMS_C], ww[RMS_C];
#pragma unroll
            for (int u = 0; u < RMS_C; u++) {
                const int i = lane + 32 * u < hidden ? lane + 32 * u : 0;
                rr[u] = residual[in_row + i];
                dd[u] = delta[in_row + i];
                ww[u] = weight[i];
            }
            float v[RMS_C];
            float ss = 0.0f;
#pragma unroll
            for (int u = 0; u < RMS_C; u++) {
                const int i = lane + 32 * u;
                float r = bf2f(rr[u]);
                if (add) r = round_bf(bf2f(dd[u]) + r);
                v[u] = r;
                if (i < hidden) {
                    if (add && source == ROWS_PADDED) residual[in_row + i] = f2bf(r);
                    ss = fmaf(r, r, ss);
                }
            }
            ss = warp_butterfly_sum(ss);
            const float inv = 1.0f / sqrtf(ss / (float)hidden + eps);
#pragma unroll
            for (int u = 0; u < RMS_C; u++) {
                const int i = lane + 32 * u;
                if (i < hidden) out[out_row + i] = f2bf(round_bf(v[u] * inv) * bf2f(ww[u]));
            }
            continue;
        }
        // Lane l sums r[l]^2, r[l+32]^2, ... in that order (the CPU twin's strided order);
        // the loads of RMS_U elements are issued before the dependent fmaf chain, so a row
        // costs hidden / (32 * RMS_U) memory latencies, not hidden / 32.
        float ss = 0.0f;
        for (int base = lane; base < hidden; base += 32 * RMS_U) {
            float v[RMS_U];
#pragma unroll
            for (int u = 0; u < RMS_U; u++) {
                const int i = base + 32 * u;
                float r = 0.0f;
                if (i < hidden) {
                    r = bf2f(residual[in_row + i]);
                    if (add) r = round_bf(bf2f(delta[in_row + i]) + r);
                }
                v[u] = r;
            }
#pragma unroll
            for (int u = 0; u < RMS_U; u++) {
                const int i = base + 32 * u;
                if (i < hidden) {
                    if (add && source == ROWS_PADDED) residual[in_row + i] = f2bf(v[u]);
                    ss = fmaf(v[u], v[u], ss);
                }
            }
        }
        ss = warp_butterfly_sum(ss);
        const float inv = 1.0f / sqrtf(ss / (float)hidden + eps);
        for (int base = lane; base < hidden; base += 32 * RMS_U) {
            float v[RMS_U], wv[RMS_U];
#pragma unroll
            for (int u = 0; u < RMS_U; u++) {
                const int i = base + 32 * u;
                v[u] = 0.0f;
                wv[u] = 0.0f;
                if (i < hidden) {
                    // In ROWS_PADDED mode with `add` the residual already holds the sum.
                    float r = bf2f(residual[in_row + i]);
                    if (add && source == ROWS_LOGITS) r = round_bf(bf2f(delta[in_row + i]) + r);
                    v[u] = r;
                    wv[u] = bf2f(weight[i]);
                }
            }
#pragma unroll
            for (int u = 0; u < RMS_U; u++) {
                const int i = base + 32 * u;
                if (i < hidden) out[out_row + i] = f2bf(round_bf(v[u] * inv) * wv[u]);
            }
        }
    }
}

#define RMSNORM_ENTRY(NAME, CACHED)                                                            \
    extern "C" __global__ void NAME(const int* __restrict__ counts, int source,                \
                                    const int* __restrict__ gather,                            \
                                    const bf16_t* __restrict__ delta,                          \
                                    bf16_t* __restrict__ residual,                             \
                                    const bf16_t* __restrict__ weight, int hidden, float eps,  \
                                    int add, bf16_t* __restrict__ out)                         \
    {                                                                                          \
        pdl_begin();                                                                           \
        rmsnorm_rows<CACHED>(counts, source, gather, delta, residual, weight, hidden, eps, add, \
                             out);                                                             \
    }
RMSNORM_ENTRY(qwen_rmsnorm, false)
RMSNORM_ENTRY(qwen_rmsnorm_cached, true)

// y[m, n] = sum_k x[m, k] * w[n, k] (torch's `F.linear`, w is [N, K] row-major), bf16 in,
// f32 accumulation in the fixed chunk order above, out as bf16 (`y`) or, with `f32_out`,
// as the bf16-rounded value in f32 (`yf`, the logits). K % 8 == 0, rows 16-byte aligned.
// Each warp owns GEMM_NC consecutive columns and walks the rows in tiles of GEMM_MT; the
// tiling changes which thread computes an element, never the order of its sum.
#define GEMM_WARPS 4
#define GEMM_NC 2
#define GEMM_MT 16

__device__ __forceinline__ void unpack8(uint4 v, float* f) {
    f[0] = __uint_as_float(v.x << 16); f[1] = __uint_as_float(v.x & 0xffff0000u);
    f[2] = __uint_as_float(v.y << 16); f[3] = __uint_as_float(v.y & 0xffff0000u);
    f[4] = __uint_as_float(v.z << 16); f[5] = __uint_as_float(v.z & 0xffff0000u);
    f[6] = __uint_as_float(v.w << 16); f[7] = __uint_as_float(v.w & 0xffff0000u);
}

// Element e (0..7) of an 8-element bf16 chunk, as f32 (unpack8's value).
__device__ __forceinline__ float bf16_at(uint4 v, int e) {
    const unsigned int u = e < 2 ? v.x : e < 4 ? v.y : e < 6 ? v.z : v.w;
    return __uint_as_float((e & 1) ? (u & 0xffff0000u) : (u << 16));
}

extern "C" __global__ void __launch_bounds__(GEMM_WARPS * 32) qwen_gemm(
    const int* __restrict__ counts, int source,
    const bf16_t* __restrict__ x, int K,
    const bf16_t* __restrict__ w, int N,
    bf16_t* __restrict__ y, float* __restrict__ yf, int f32_out)
{
    pdl_begin();
    const int rows = rows_of(counts, source);
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int chunks = K >> 3;
    for (int n0 = (blockIdx.x * GEMM_WARPS + warp) * GEMM_NC; n0 < N; n0 += gridDim.x * GEMM_WARPS * GEMM_NC) {
        for (int m0 = 0; m0 < rows; m0 += GEMM_MT) {
            float acc[GEMM_MT][GEMM_NC];
#pragma unroll
            for (int a = 0; a < GEMM_MT; ++a)
#pragma unroll
                for (int b = 0; b < GEMM_NC; ++b) acc[a][b] = 0.0f;
            const int mt = rows - m0 < GEMM_MT ? rows - m0 : GEMM_MT;
#pragma unroll 2
            for (int c = lane; c < chunks; c += 32) {
                float wf[GEMM_NC][8];
#pragma unroll
                for (int b = 0; b < GEMM_NC; ++b) {
                    const int n = n0 + b < N ? n0 + b : N - 1;
                    unpack8(*(const uint4*)(w + (long long)n * K + (c << 3)), wf[b]);
                }
#pragma unroll
                for (int a = 0; a < GEMM_MT; ++a) {
                    if (a < mt) {
                        float xf[8];
                        unpack8(*(const uint4*)(x + (long long)(m0 + a) * K + (c << 3)), xf);
#pragma unroll
                        for (int e = 0; e < 8; ++e)
#pragma unroll
                            for (int b = 0; b < GEMM_NC; ++b) acc[a][b] = fmaf(xf[e], wf[b][e], acc[a][b]);
                    }
                }
            }
#pragma unroll
            for (int a = 0; a < GEMM_MT; ++a) {
                if (a < mt) {
#pragma unroll
                    for (int b = 0; b < GEMM_NC; ++b) {
                        const float s = warp_butterfly_sum(acc[a][b]);
                        if (lane == b && n0 + b < N) {
                            const long long o = (long long)(m0 + a) * N + n0 + b;
                            if (f32_out) yf[o] = round_bf(s); else y[o] = f2bf(s);
                        }
                    }
                }
            }
        }
    }
}

// A walking GEMM's start under PDL: let the next kernel launch, prefetch into L2 the weight
// bytes of the warp's first column group that gemm_body's first round reads (its first
// 32 * U chunks of each row, one 128-byte line per lane; weights are never written, so this
// may run while the previous kernel does), then wait for the previous kernel.
template <int NC, int U, bool GLU>
__device__ __forceinline__ void gemm_pdl_prologue(int K, const bf16_t* __restrict__ w, int N) {
    pdl_launch_dependents();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int n0 = (blockIdx.x * GEMM_WARPS + warp) * (GLU ? 1 : NC);
    if (n0 < (GLU ? N / 2 : N)) {
        const int round_chunks = (K >> 3) < 32 * U ? (K >> 3) : 32 * U;
        const int lines = (round_chunks * 16 + 127) / 128;
#pragma unroll
        for (int b = 0; b < NC; ++b) {
            const int n = GLU ? n0 + b * (N / 2) : (n0 + b < N ? n0 + b : N - 1);
            const char* row = (const char*)(w + (long long)n * K);
            for (int line = lane; line < lines; line += 32)
                asm volatile("prefetch.global.L2 [%0];" ::"l"(row + (long long)line * 128));
        }
    }
#endif
    pdl_wait();
}

// The same GEMM with other tilings (same order of every sum, so the same bits): each warp
// owns NC columns and walks the rows in tiles of MT; U chunks' weights are loaded before
// any of them is used (more loads in flight at small batch). `qwen_gemm_v` picks the
// tiling from the row count, which the kernel reads from `counts` (never from the host):
// the choice changes speed only.
//
// GLU (candidate, with NC = 2): the gate_up product with qwen_silu_mul as its epilogue. A
// warp owns the pair (gate column i, up column I + i), I = N / 2, sums both in the order
// above, rounds each to bf16 as the gate_up buffer holds them, and writes act[m, i] =
// bf16(bf16(silu(g)) * u) into y ([rows, I]) exactly as qwen_silu_mul computes it: the same
// bits with one launch fewer.
//
// NORM (candidate): x is the residual stream and the GEMM applies the RMSNorm that
// qwen_rmsnorm (add 0) would have written first: each warp computes a row's sum of squares
// in the norm's order (lane l: elements l, l+32, ... with fmaf, then the butterfly), inv =
// 1 / sqrt(ss / K + eps), and each x element as bf16(bf16(r * inv) * norm_w): the values the
// norm kernel stores, so the same bits without its launch.
// RESADD (candidate): y is the residual stream and the epilogue adds into it what the next
// qwen_rmsnorm (add 1) would have: y = bf16(bf16(sum) + y), each element read and written
// by the one lane that computes it (no other warp of the launch reads y).
template <int NC, int MT, int U, bool XPRE, bool GLU = false, bool NORM = false, bool RESADD = false>
__device__ __forceinline__ void gemm_body(int rows, const bf16_t* __restrict__ x, int K,
                                          const bf16_t* __restrict__ w, int N,
                                          bf16_t* __restrict__ y, float* __restrict__ yf, int f32_out,
                                          const bf16_t* __restrict__ norm_w = nullptr, float eps = 0.0f)
{
    static_assert(!GLU || NC == 2, "a GLU warp owns one (gate, up) pair");
    static_assert(!(NORM && RESADD), "a GEMM reads the residual stream or adds into it, not both");
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int chunks = K >> 3;
    // GLU: n0 walks the I pairs, a warp owns one; column b of the pair is n0 + b * I.
    const int n_end = GLU ? N / 2 : N;
    const int n_step = GLU ? 1 : NC;
    for (int n0 = (blockIdx.x * GEMM_WARPS + warp) * n_step; n0 < n_end; n0 += gridDim.x * GEMM_WARPS * n_step) {
        for (int m0 = 0; m0 < rows; m0 += MT) {
            float acc[MT][NC];
#pragma unroll
            for (int a = 0; a < MT; ++a)
#pragma unroll
                for (int b = 0; b < NC; ++b) acc[a][b] = 0.0f;
            const int mt = rows - m0 < MT ? rows - m0 : MT;
            float inv[MT];
#pragma unroll
            for (int a = 0; a < MT; ++a) inv[a] = 0.0f;
            // NORM: the round condition is the warp's (c0 - lane), not the lane's: every lane
            // runs every round (the norm's butterfly needs all 32); a lane past the last chunk
            // loads chunk 0 and discards it.
            for (int c0 = lane; (NORM ? c0 - lane : c0) < chunks; c0 += 32 * U) {
                // XPRE (candidate tilings): x chunks loaded with the weights, before any is
                // used (no branch around a load: out-of-range rows and chunks read a valid
                // address and are discarded), so a round of U chunks waits for memory once.
                // Otherwise x is loaded where it is used.
                uint4 wv[U][NC];
                uint4 xv[XPRE ? U : 1][XPRE ? MT : 1];
                uint4 nw[NORM ? U : 1];
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    const int c = c0 + 32 * u < chunks ? c0 + 32 * u : NORM ? 0 : c0;
#pragma unroll
                    for (int b = 0; b < NC; ++b) {
                        const int n = GLU ? n0 + b * (N / 2) : (n0 + b < N ? n0 + b : N - 1);
                        wv[u][b] = *(const uint4*)(w + (long long)n * K + (c << 3));
                    }
                    if (NORM) nw[NORM ? u : 0] = *(const uint4*)(norm_w + (c << 3));
                    if (XPRE) {
#pragma unroll
                        for (int a = 0; a < (XPRE ? MT : 1); ++a) {
                            const int row = m0 + (a < mt ? a : 0);
                            xv[XPRE ? u : 0][a] = *(const uint4*)(x + (long long)row * K + (c << 3));
                        }
                    }
                }
                // NORM: the row's sum of squares is computed once, in the first round, after
                // that round's weight loads are issued (they do not depend on it).
                if (NORM && c0 == lane) {
#pragma unroll
                    for (int a = 0; a < MT; ++a) {
                        const long long row = (long long)(m0 + (a < mt ? a : 0)) * K;
                        float ss = lane_squares(x + row, K, lane);
                        ss = warp_butterfly_sum(ss);
                        inv[a] = 1.0f / sqrtf(ss / (float)K + eps);
                    }
                }
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    const int c = c0 + 32 * u;
                    if (c < chunks) {
                        float wf[NC][8], nf[8];
#pragma unroll
                        for (int b = 0; b < NC; ++b) unpack8(wv[u][b], wf[b]);
                        if (NORM) unpack8(nw[NORM ? u : 0], nf);
#pragma unroll
                        for (int a = 0; a < MT; ++a) {
                            if (a < mt) {
                                float xf[8];
                                unpack8(XPRE ? xv[XPRE ? u : 0][XPRE ? a : 0]
                                             : *(const uint4*)(x + (long long)(m0 + a) * K + (c << 3)),
                                        xf);
                                if (NORM) {
#pragma unroll
                                    for (int e = 0; e < 8; ++e) xf[e] = round_bf(round_bf(xf[e] * inv[a]) * nf[e]);
                                }
#pragma unroll
                                for (int e = 0; e < 8; ++e)
#pragma unroll
                                    for (int b = 0; b < NC; ++b) acc[a][b] = fmaf(xf[e], wf[b][e], acc[a][b]);
                            }
                        }
                    }
                }
            }
            if (GLU) {
#pragma unroll
                for (int a = 0; a < MT; ++a) {
                    if (a < mt) {
                        // The butterfly leaves each sum in every lane.
                        const float g = round_bf(warp_butterfly_sum(acc[a][0]));
                        const float up = round_bf(warp_butterfly_sum(acc[a][NC - 1]));
                        if (lane == 0) y[(long long)(m0 + a) * (N / 2) + n0] = silu_mul_bf(g, up);
                    }
                }
                continue;
            }
#pragma unroll
            for (int a = 0; a < MT; ++a) {
                if (a < mt) {
#pragma unroll
                    for (int b = 0; b < NC; ++b) {
                        const float s = warp_butterfly_sum(acc[a][b]);
                        if (lane == b && n0 + b < N) {
                            const long long o = (long long)(m0 + a) * N + n0 + b;
                            if (RESADD) y[o] = f2bf(round_bf(s) + bf2f(y[o]));
                            else if (f32_out) yf[o] = round_bf(s);
                            else y[o] = f2bf(s);
                        }
                    }
                }
            }
        }
    }
}

// Every GEMM entry point's declaration and parameters (the order gpu.rs passes them).
#define GEMM_KERNEL(NAME) extern "C" __global__ void __launch_bounds__(GEMM_WARPS * 32) NAME
#define GEMM_PARAMS                                                                            \
    const int *__restrict__ counts, int source, const bf16_t *__restrict__ x, int K,           \
        const bf16_t *__restrict__ w, int N, bf16_t *__restrict__ y, float *__restrict__ yf,   \
        int f32_out

#define GEMM_ENTRY(NAME, NC, MT, U, XPRE, GLU)                                                 \
    GEMM_KERNEL(NAME)(GEMM_PARAMS)                                                             \
    {                                                                                          \
        gemm_pdl_prologue<NC, U, GLU>(K, w, N);                                          \
        gemm_body<NC, MT, U, XPRE, GLU>(rows_of(counts, source), x, K, w, N, y, yf, f32_out); \
    }
#define GEMM_VARIANT(NAME, NC, MT, U) GEMM_ENTRY(NAME, NC, MT, U, false, false)
// The residual stream adding epilogue (RESADD): the plain signature, y the residual.
#define GEMM_RESADD_ENTRY(NAME, NC, MT, U, XPRE)                                               \
    GEMM_KERNEL(NAME)(GEMM_PARAMS)                                                             \
    {                                                                                          \
        gemm_pdl_prologue<NC, U, false>(K, w, N);                                        \
        gemm_body<NC, MT, U, XPRE, false, false, true>(rows_of(counts, source), x, K, w, N, y, \
                                                        yf, f32_out);                          \
    }
// The fused-norm prologue (NORM): x the residual stream, plus the norm's weight and eps.
#define GEMM_NORM_ENTRY(NAME, NC, MT, U, XPRE, GLU)                                            \
    GEMM_KERNEL(NAME)(GEMM_PARAMS, const bf16_t* __restrict__ norm_w, float eps)               \
    {                                                                                          \
        gemm_pdl_prologue<NC, U, GLU>(K, w, N);                                          \
        gemm_body<NC, MT, U, XPRE, GLU, true, false>(rows_of(counts, source), x, K, w, N, y,  \
                                                      yf, f32_out, norm_w, eps);               \
    }

GEMM_VARIANT(qwen_gemm_2_16_2, 2, 16, 2)
GEMM_VARIANT(qwen_gemm_2_4_4, 2, 4, 4)
GEMM_VARIANT(qwen_gemm_1_4_8, 1, 4, 8)
GEMM_VARIANT(qwen_gemm_4_4_4, 4, 4, 4)
GEMM_VARIANT(qwen_gemm_4_8_2, 4, 8, 2)
GEMM_VARIANT(qwen_gemm_8_8_1, 8, 8, 1)
GEMM_VARIANT(qwen_gemm_4_16_1, 4, 16, 1)
GEMM_VARIANT(qwen_gemm_8_4_2, 8, 4, 2)
// Candidates (KernelPlan::Candidate, not yet measured on the device). One-row tilings
// with x in flight, timed by `gpu bench-gemm` (the folded kernels below use them):
GEMM_ENTRY(qwen_gemm_2_1_8, 2, 1, 8, true, false)
GEMM_ENTRY(qwen_gemm_1_1_16, 1, 1, 16, true, false)
// The gate_up product with the SiLU-mul epilogue, from two rows on:
GEMM_ENTRY(qwen_gemm_glu_4_4, 2, 4, 4, false, true)
// One row (the batch-1 decode): the norms folded into the products that follow them.
GEMM_NORM_ENTRY(qwen_gemm_norm_2_1_8, 2, 1, 8, true, false)
GEMM_NORM_ENTRY(qwen_gemm_norm_glu_1_8, 2, 1, 8, true, true)
// o_proj and down_proj (N = hidden, K up to 3,072) at one row: one column per warp (twice
// the warps of NC 2 on 1,024 columns) and 16 chunks in flight (one round for K <= 4,096).
GEMM_RESADD_ENTRY(qwen_gemm_resadd_1_1_16, 1, 1, 16, true)

// Register-tiled GEMM for many rows (candidate, from 8 rows on): the same sums as
// qwen_gemm (lane l of the warp owns chunks l, l + 32, ... of K, elements in order with
// fmaf, then warp_butterfly_sum), so the same bits; what changes is how many sums a warp
// carries at once. A warp owns a tile of MT rows x NC columns (MT * NC accumulators per
// lane, each x chunk used for NC columns and each weight chunk for MT rows: about one
// conversion per 4 fmaf instead of one per 2) and the tiles are walked grid-stride with the
// row tile fastest, so the warps of a block share the weight chunks through L1. The
// butterfly of MT * NC sums is a reduce-scatter: at each xor step s a lane keeps half of
// its sums and sends the other half, adding its partner's partial as `own + other` exactly
// as warp_butterfly_sum does, so each sum ends in one lane with warp_butterfly_sum's value
// (every step of it is the same addition of the same two partials) at about a fifth of the
// shuffles. Lane l ends with sums o = l * P / 32 + j (P = MT * NC, j < P / 32), o = a * NC + b.
// GLU (P = 64): tile column b is gate column n0 + b / 2 when b is even, up column
// I + n0 + b / 2 when odd, so a lane ends with a (gate, up) pair of one row and writes
// qwen_silu_mul's value into act ([rows, I]).
// One step of the reduce-scatter butterfly: the lane keeps sums [HALF, 2 HALF) when bit s
// of its lane is set, [0, HALF) otherwise, each as `own + partner's` (warp_butterfly_sum's
// addition), into acc[0, HALF).
template <int HALF>
__device__ __forceinline__ void reduce_scatter_step(float* acc, int lane, int s) {
    const bool upper = (lane & s) != 0;
#pragma unroll
    for (int i = 0; i < HALF; ++i) {
        const float keep = upper ? acc[i + HALF] : acc[i];
        const float send = upper ? acc[i] : acc[i + HALF];
        acc[i] = keep + __shfl_xor_sync(0xffffffffu, send, s);
    }
}

template <int MT, int NC, bool GLU>
__device__ __forceinline__ void gemm_tiled_body(int rows, const bf16_t* __restrict__ x, int K,
                                                const bf16_t* __restrict__ w, int N,
                                                bf16_t* __restrict__ y, float* __restrict__ yf, int f32_out)
{
    constexpr int P = MT * NC;
    static_assert(P % 32 == 0 && P <= 64, "the reduce-scatter needs 32 or 64 sums per lane");
    static_assert(!GLU || (P == 64 && NC % 2 == 0), "a GLU lane ends with one (gate, up) pair");
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int chunks = K >> 3;
    const int cols = GLU ? N / 2 : N;                  // GLU: pairs
    const int col_step = GLU ? NC / 2 : NC;            // columns (pairs) per tile
    const int col_tiles = (cols + col_step - 1) / col_step;
    const int row_tiles = (rows + MT - 1) / MT;
    const int tiles = col_tiles * row_tiles;
    for (int t = blockIdx.x * GEMM_WARPS + warp; t < tiles; t += gridDim.x * GEMM_WARPS) {
        const int m0 = (t % row_tiles) * MT;
        const int n0 = (t / row_tiles) * col_step;
        long long wrow[NC], xrow[MT];
#pragma unroll
        for (int b = 0; b < NC; ++b) {
            int n;
            if (GLU) {
                const int pair = n0 + b / 2 < cols ? n0 + b / 2 : cols - 1;
                n = (b & 1) ? cols + pair : pair;
            } else {
                n = n0 + b < N ? n0 + b : N - 1;
            }
            wrow[b] = (long long)n * K;
        }
#pragma unroll
        for (int a = 0; a < MT; ++a) xrow[a] = (long long)(m0 + a < rows ? m0 + a : rows - 1) * K;
        float acc[P];
#pragma unroll
        for (int i = 0; i < P; ++i) acc[i] = 0.0f;
        for (int c = lane; c < chunks; c += 32) {
            uint4 wv[NC], xv[MT];
#pragma unroll
            for (int b = 0; b < NC; ++b) wv[b] = *(const uint4*)(w + wrow[b] + (c << 3));
#pragma unroll
            for (int a = 0; a < MT; ++a) xv[a] = *(const uint4*)(x + xrow[a] + (c << 3));
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                float wf[NC], xf[MT];
#pragma unroll
                for (int b = 0; b < NC; ++b) wf[b] = bf16_at(wv[b], e);
#pragma unroll
                for (int a = 0; a < MT; ++a) xf[a] = bf16_at(xv[a], e);
#pragma unroll
                for (int a = 0; a < MT; ++a)
#pragma unroll
                    for (int b = 0; b < NC; ++b) acc[a * NC + b] = fmaf(xf[a], wf[b], acc[a * NC + b]);
            }
        }
        // Reduce-scatter: after the step of xor s the lane holds P * s / 32 sums.
        reduce_scatter_step<P / 2>(acc, lane, 16);
        reduce_scatter_step<P / 4>(acc, lane, 8);
        reduce_scatter_step<P / 8>(acc, lane, 4);
        reduce_scatter_step<P / 16>(acc, lane, 2);
        reduce_scatter_step<P / 32>(acc, lane, 1);
        constexpr int J = P / 32;
        if (GLU) {
            const int o = lane * J;  // (gate, up) = (acc[0], acc[1]), row a, pair b / 2
            const int a = o / NC, pair = n0 + (o % NC) / 2;
            if (m0 + a < rows && pair < cols) {
                const float g = round_bf(acc[0]);
                const float up = round_bf(acc[1]);
                y[(long long)(m0 + a) * cols + pair] = silu_mul_bf(g, up);
            }
        } else {
#pragma unroll
            for (int j = 0; j < J; ++j) {
                const int o = lane * J + j;
                const int a = o / NC, n = n0 + o % NC;
                if (m0 + a < rows && n < N) {
                    const long long idx = (long long)(m0 + a) * N + n;
                    if (f32_out) yf[idx] = round_bf(acc[j]); else y[idx] = f2bf(acc[j]);
                }
            }
        }
    }
}

#define GEMM_TILED_ENTRY(NAME, MT, NC, GLU)                                                    \
    GEMM_KERNEL(NAME)(GEMM_PARAMS)                                                             \
    {                                                                                          \
        pdl_begin();                                                                           \
        gemm_tiled_body<MT, NC, GLU>(rows_of(counts, source), x, K, w, N, y, yf, f32_out);     \
    }
GEMM_TILED_ENTRY(qwen_gemm_t_8_8, 8, 8, false)
GEMM_TILED_ENTRY(qwen_gemm_t_4_8, 4, 8, false)
GEMM_TILED_ENTRY(qwen_gemm_t_8_4, 8, 4, false)
GEMM_TILED_ENTRY(qwen_gemm_t_16_4, 16, 4, false)
GEMM_TILED_ENTRY(qwen_gemm_t_glu_8_8, 8, 8, true)

// Per token and head of the fused qkv row ([q heads | k heads | v heads], head_dim each):
// q and k heads get RMSNorm over head_dim (Qwen3's q_norm / k_norm; skipped when
// `qk_norm` is 0) then RoPE (neox `rotate_half`: out = bf16(bf16(x*cos) + bf16(rot*sin)),
// cos/sin the bf16 table `rope[pos][i][0|1]` for i < head_dim/2, as HF casts them to the
// activation dtype); q goes to `q_out` [T, num_heads, head_dim]; k and v of real tokens
// (t < meta_tokens) with slot >= 0 go to the paged caches (slot -1: padded, skipped).
// The q/k norm + RoPE + KV write's arguments.
#define QK_ROPE_ARGS                                                                             \
    const int* __restrict__ counts, const bf16_t* ACT_RESTRICT qkv, const long long* __restrict__ positions, \
        const long long* __restrict__ slot_mapping, const bf16_t* __restrict__ q_norm,            \
        const bf16_t* __restrict__ k_norm, int qk_norm, float eps, const bf16_t* __restrict__ rope, int rope_len, \
        int num_heads, int num_kv_heads, int head_dim, bf16_t* ACT_RESTRICT q_out,                \
        bf16_t* ACT_RESTRICT k_cache, bf16_t* ACT_RESTRICT v_cache, long long cache_slots,        \
        unsigned int* __restrict__ counters
#define QK_ROPE_PASS                                                                             \
    counts, qkv, positions, slot_mapping, q_norm, k_norm, qk_norm, eps, rope, rope_len, num_heads, num_kv_heads, \
        head_dim, q_out, k_cache, v_cache, cache_slots, counters
// RoPE of one head whose lane holds elements lane + 32 k (k < 2 HK of them: head_dim = 64 HK),
// so element d's partner d -+ head_dim / 2 is the same lane's k -+ HK: stored as bf16 to dst,
// or with `qf` non-null widened to floats there.
template <int HK>
__device__ __forceinline__ void rope_store(const float* nv, const float* cv, const float* sv, int lane, int head_dim,
                                           bf16_t* dst, float* qf) {
#pragma unroll
    for (int k = 0; k < 2 * HK; ++k) {
        const int d = lane + 32 * k;
        const float rot = k < HK ? -nv[k + HK] : nv[k - HK];
        const bf16_t o = f2bf(round_bf(nv[k] * cv[k]) + round_bf(rot * sv[k]));
        if (qf != nullptr) qf[d] = bf2f(o);
        else dst[d] = o;
    }
}

// Item (token t, head h) of the q/k norm + RoPE + KV write, by one warp with `v` (head_dim
// floats of shared scratch): a V head is copied into its cache slot, a K head normalised,
// rotated and stored into its slot, a q head normalised, rotated and stored into q_out, or,
// with `qf` non-null, into qf as the floats q_out's bf16 would widen to (the fused decode
// phase of the megakernel: its attention reads q from there). The loads that do not depend
// on each other go out together: the slot, the position and the head's qkv elements first,
// then the position's cos / sin row and the norm weights (a lane holds at most RK = 8
// elements of a head: head_dim <= 256). The values and their order are the
// one-load-at-a-time loop's.
__device__ __forceinline__ void rope_item(QK_ROPE_ARGS, int t, int h, int real, int lane, float* v, float* qf) {
    constexpr int RK = 8;
    const int heads = num_heads + 2 * num_kv_heads;
    const int half = head_dim >> 1;
    const bf16_t* src = qkv + (long long)t * heads * head_dim + (long long)h * head_dim;
    const long long slot = t < real ? slot_mapping[t] : -1;
    const bool is_v = h >= num_heads + num_kv_heads;
    long long pos = is_v ? 0 : positions[t];
    bf16_t xr[RK];
#pragma unroll
    for (int k = 0; k < RK; ++k) {
        const int d = lane + 32 * k;
        xr[k] = d < head_dim ? src[d] : (bf16_t)0;
    }
    const bool in_cache = slot >= 0 && slot < cache_slots;
    if (t < real && slot >= cache_slots && lane == 0) atomicAdd(&counters[CTR_OUT_OF_RANGE], 1u);
    if (is_v) {
        if (in_cache) {
            const int kvh = h - num_heads - num_kv_heads;
            bf16_t* dst = v_cache + (slot * num_kv_heads + kvh) * head_dim;
#pragma unroll
            for (int k = 0; k < RK; ++k) {
                const int d = lane + 32 * k;
                if (d < head_dim) dst[d] = xr[k];
            }
        }
        return;
    }
    const bool is_q = h < num_heads;
    if (!is_q && !in_cache) return;
    if (pos < 0 || pos >= rope_len) {
        if (t < real && lane == 0) atomicAdd(&counters[CTR_OUT_OF_RANGE], 1u);
        pos = 0;
    }
    const bf16_t* cs = rope + pos * head_dim;
    const bf16_t* nw = is_q ? q_norm : k_norm;
    float cv[RK], sv[RK], wv[RK];
#pragma unroll
    for (int k = 0; k < RK; ++k) {
        const int d = lane + 32 * k;
        const int i = d < half ? d : d - half;
        cv[k] = d < head_dim ? bf2f(cs[2 * i]) : 0.0f;
        sv[k] = d < head_dim ? bf2f(cs[2 * i + 1]) : 0.0f;
        wv[k] = qk_norm && d < head_dim ? bf2f(nw[d]) : 0.0f;
    }
    // The normalised values (or the raw ones without the q/k norm).
    float nv[RK];
    if (qk_norm) {
        float ss = 0.0f;
#pragma unroll
        for (int k = 0; k < RK; ++k)
            if (lane + 32 * k < head_dim) ss = fmaf(bf2f(xr[k]), bf2f(xr[k]), ss);
        const float inv = lanes_inv_rms(ss, head_dim, eps);
#pragma unroll
        for (int k = 0; k < RK; ++k) nv[k] = round_bf(round_bf(bf2f(xr[k]) * inv) * wv[k]);
    } else {
#pragma unroll
        for (int k = 0; k < RK; ++k) nv[k] = bf2f(xr[k]);
    }
    bf16_t* dst = is_q ? q_out + ((long long)t * num_heads + h) * head_dim
                       : k_cache + (slot * num_kv_heads + (h - num_heads)) * head_dim;
    float* qd = is_q ? qf : nullptr;
    // Element d's partner d -+ half is the same lane's element k -+ half / 32 when head_dim
    // is 64, 128 or 256; otherwise it comes through the warp's scratch `v`.
    if (head_dim == 128) rope_store<2>(nv, cv, sv, lane, head_dim, dst, qd);
    else if (head_dim == 64) rope_store<1>(nv, cv, sv, lane, head_dim, dst, qd);
    else if (head_dim == 256) rope_store<4>(nv, cv, sv, lane, head_dim, dst, qd);
    else {
#pragma unroll
        for (int k = 0; k < RK; ++k) {
            const int d = lane + 32 * k;
            if (d < head_dim) v[d] = nv[k];
        }
        __syncwarp();
#pragma unroll
        for (int k = 0; k < RK; ++k) {
            const int d = lane + 32 * k;
            if (d >= head_dim) continue;
            const float rot = d < half ? -v[d + half] : v[d - half];
            const bf16_t o = f2bf(round_bf(v[d] * cv[k]) + round_bf(rot * sv[k]));
            if (qd != nullptr) qd[d] = bf2f(o);
            else dst[d] = o;
        }
        __syncwarp();
    }
}

// A warp per (token, head) item, grid-stride over the launch's WARPS-warp blocks.
template <int WARPS>
__device__ __forceinline__ void qk_norm_rope_kv_body(QK_ROPE_ARGS)
{
    __shared__ float vals[WARPS][256];
    const int rows = counts[C_PADDED_TOKENS];
    const int real = counts[C_META_TOKENS];
    const int lane = threadIdx.x & 31;
    const int wib = threadIdx.x >> 5;
    const int heads = num_heads + 2 * num_kv_heads;
    const long long items = (long long)rows * heads;
    for (long long it = (long long)blockIdx.x * WARPS + wib; it < items; it += (long long)gridDim.x * WARPS)
        rope_item(QK_ROPE_PASS, (int)(it / heads), (int)(it % heads), real, lane, vals[wib], nullptr);
}
extern "C" __global__ void qwen_qk_norm_rope_kv(QK_ROPE_ARGS)
{
    pdl_begin();
    qk_norm_rope_kv_body<4>(QK_ROPE_PASS);
}

// Paged causal attention for every real token (prefill chunks, decode, verify alike):
// token t of request r (cu_seqlens_q) at position p attends to keys 0..=p of r, read
// through the metadata block table (vLLM's `block_table`, `seqused_k`); GQA head h reads
// kv head h / (num_heads / num_kv_heads). One block of ATT_WARPS warps per (token, head);
// the order is fixed per query row (see the top of this file). Keys past seqused_k or
// blocks outside the cache count as out of range and are skipped. out: [T, num_heads,
// head_dim] bf16 of (sum p v) / (sum p).
#define ATT_WARPS 4
#define ATT_MAX_HD 256
#define ATT_VU 4

__device__ __forceinline__ int row_of(const int* cu, int n, int i) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (cu[mid] <= i) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// row_of with a first guess: g = t * n / total is the request of token t when every request
// has the same query length (uniform decode, uniform verify); its two bounds are loaded
// together and, when cu[g] <= t < cu[g + 1], g is also the largest i with cu[i] <= t (every
// later cu[i] >= cu[g + 1] > t). Otherwise the binary search. The same request either way,
// in one memory round trip instead of log2(n) dependent ones in the common case.
__device__ __forceinline__ int row_of_guessed(const int* cu, int n, int total, int t) {
    long long g = total > 0 ? (long long)t * n / total : 0;
    g = g < n - 1 ? g : n - 1;
    g = g > 0 ? g : 0;
    const int a = cu[g], b = cu[g + 1];
    if (a <= t && t < b) return (int)g;
    return row_of(cu, n, t);
}

// One 32-key tile's online-softmax step, the order both attention paths and the CPU twin
// (`attention_head`) share: s is this lane's score (-inf when its key is skipped), `live`
// whether it counts. Returns false, l untouched, when every key of the tile is skipped;
// else `m_new` is the running max (the caller's m once the tile is summed), `corr` rescales
// the earlier sums, `p` is this lane's weight and l the running denominator.
__device__ __forceinline__ bool softmax_tile(float s, bool live, float m, float* m_new, float* l, float* corr,
                                             float* p) {
    *m_new = fmaxf(m, warp_butterfly_max(s));
    if (*m_new == __int_as_float(0xff800000)) return false;
    *corr = exp_f(m - *m_new);
    *p = live ? exp_f(s - *m_new) : 0.0f;
    *l = *l * *corr + warp_butterfly_sum(*p);
    return true;
}

// The V dimensions one lane holds in `att_tiles_fast` (EPL contiguous bf16).
template <int EPL> struct VPart;
template <> struct VPart<2> {
    unsigned int u;
    __device__ __forceinline__ void load(const bf16_t* p) { u = *(const unsigned int*)p; }
    __device__ __forceinline__ float get(int e) const { return __uint_as_float(e ? (u & 0xffff0000u) : (u << 16)); }
};
template <> struct VPart<4> {
    uint2 u;
    __device__ __forceinline__ void load(const bf16_t* p) { u = *(const uint2*)p; }
    __device__ __forceinline__ float get(int e) const {
        const unsigned int w = e < 2 ? u.x : u.y;
        return __uint_as_float((e & 1) ? (w & 0xffff0000u) : (w << 16));
    }
};

// What both one-warp tile bodies (att_tiles_fast, att_tiles_compact) share, so their sums
// are one definition. AttKeys walks the warp's keys: tile by tile, each lane's key, its
// cache slot through the block table (-1: past nk, or out of range, counted), the next
// tile's block-table entry loaded while this tile computes.
struct AttKeys {
    long long key;
    int blk;
    __device__ __forceinline__ AttKeys(int warp, int lane, long long nk, const int* __restrict__ bt_row,
                                       int block_size) {
        key = (long long)warp * 32 + lane;
        blk = key < nk ? bt_row[key / block_size] : -1;
    }
    // This tile's slot for the lane; then moves to the warp's next tile.
    __device__ __forceinline__ long long next(long long nk, const int* __restrict__ bt_row, int block_size,
                                              long long cache_slots, unsigned int* __restrict__ counters) {
        long long slot = -1;
        if (key < nk) {
            const long long sl = (long long)blk * block_size + key % block_size;
            if (blk < 0 || sl >= cache_slots) atomicAdd(&counters[CTR_OUT_OF_RANGE], 1u);
            else slot = sl;
        }
        key += 32 * ATT_WARPS;
        if (key < nk) blk = bt_row[key / block_size];
        return slot;
    }
};

// A warp's running online softmax for G heads, EPL output dimensions a lane (lane owns
// dims lane * EPL ..).
template <int G, int EPL>
struct AttRun {
    float m[G], l[G], acc[G][EPL];
    __device__ __forceinline__ AttRun() {
#pragma unroll
        for (int gi = 0; gi < G; ++gi) {
            m[gi] = __int_as_float(0xff800000);
            l[gi] = 0.0f;
#pragma unroll
            for (int e = 0; e < EPL; ++e) acc[gi][e] = 0.0f;
        }
    }
    // A tile's softmax step (softmax_tile) from the lane's dot products (its key live when
    // slot >= 0): p and any per head; the accumulators rescaled where the tile counts.
    __device__ __forceinline__ void tile(const float* dot, bool live, float scale, float* p, bool* any) {
#pragma unroll
        for (int gi = 0; gi < G; ++gi) {
            p[gi] = 0.0f;
            const float sc = live ? dot[gi] * scale : __int_as_float(0xff800000);
            float m_new, corr;
            any[gi] = softmax_tile(sc, live, m[gi], &m_new, &l[gi], &corr, &p[gi]);
            if (any[gi]) {
#pragma unroll
                for (int e = 0; e < EPL; ++e) acc[gi][e] = acc[gi][e] * corr;
                m[gi] = m_new;
            }
        }
    }
    // Key j of the tile (live: every lane calls it): its weight p from lane j times its V
    // dimensions, per head that counts.
    __device__ __forceinline__ void add_v(const float* p, const bool* any, int j, const VPart<EPL>& v) {
#pragma unroll
        for (int gi = 0; gi < G; ++gi) {
            const float pj = __shfl_sync(0xffffffffu, p[gi], j);
            if (!any[gi]) continue;
#pragma unroll
            for (int e = 0; e < EPL; ++e) acc[gi][e] = fmaf(pj, v.get(e), acc[gi][e]);
        }
    }
    __device__ __forceinline__ void store(float (*__restrict__ wacc)[ATT_WARPS][ATT_MAX_HD], int warp, int lane,
                                          float* m_out, float* l_out) const {
#pragma unroll
        for (int gi = 0; gi < G; ++gi) {
            m_out[gi] = m[gi];
            l_out[gi] = l[gi];
#pragma unroll
            for (int e = 0; e < EPL; ++e) wacc[gi][warp][lane * EPL + e] = acc[gi][e];
        }
    }
};

// One warp's tiles w, w + ATT_WARPS, ... for head_dim HD (64 or 128): the same scores,
// online softmax and key order as the generic loop in qwen_attention (and the CPU twin),
// but each lane's whole K row (HD/8 16-byte loads) and the tile's 32 V rows (HD/32
// contiguous dimensions per lane) are requested before any of them is used, and the next
// tile's block-table entry while this tile computes: a tile costs one memory round trip,
// not one per few keys. Only which lane holds which accumulator changes (lane owns dims
// lane*EPL ..); every sum keeps its order, so the bits are the generic loop's.
template <int HD, int SPLIT, int G>
__device__ __forceinline__ void att_tiles_fast(
    const float (*__restrict__ qs)[ATT_MAX_HD], const bf16_t* ACT_RESTRICT k_cache, const bf16_t* ACT_RESTRICT v_cache,
    long long cache_slots, const int* __restrict__ bt_row, int block_size, int num_kv_heads, int kvh,
    long long nk, float scale, int warp, int lane, unsigned int* __restrict__ counters,
    float (*__restrict__ wacc)[ATT_WARPS][ATT_MAX_HD], float* m_out, float* l_out)
{
    constexpr int EPL = HD / 32;
    AttRun<G, EPL> run;
    AttKeys keys(warp, lane, nk, bt_row, block_size);
    const long long tiles = (nk + 31) >> 5;
    for (long long ti = warp; ti < tiles; ti += ATT_WARPS) {
        const long long slot = keys.next(nk, bt_row, block_size, cache_slots, counters);
        const unsigned live = __ballot_sync(0xffffffffu, slot >= 0);
        // SPLIT parts of K and of V: part 0 of both requested first, later parts after the
        // previous part's arithmetic (fewer registers, more blocks per SM; same order).
        constexpr int KC = HD / 8 / SPLIT, VJ = 32 / SPLIT;
        const uint4* kr = (const uint4*)(k_cache + (slot >= 0 ? (slot * num_kv_heads + kvh) * HD : 0));
        uint4 kraw[KC];
#pragma unroll
        for (int c = 0; c < KC; ++c) kraw[c] = slot >= 0 ? kr[c] : make_uint4(0u, 0u, 0u, 0u);
        VPart<EPL> vr[VJ];
#pragma unroll
        for (int j = 0; j < VJ; ++j) {
            const long long sj = __shfl_sync(0xffffffffu, slot, j);
            if (sj >= 0) vr[j].load(v_cache + (sj * num_kv_heads + kvh) * HD + lane * EPL);
        }
        // G query heads of one KV head (GQA) share every K and V load; each head's sums
        // keep the one-head order.
        float dot[G];
#pragma unroll
        for (int gi = 0; gi < G; ++gi) dot[gi] = 0.0f;
#pragma unroll
        for (int part = 0; part < SPLIT; ++part) {
            if (part > 0) {
#pragma unroll
                for (int c = 0; c < KC; ++c) kraw[c] = slot >= 0 ? kr[part * KC + c] : make_uint4(0u, 0u, 0u, 0u);
            }
            if (slot >= 0) {
#pragma unroll
                for (int c = 0; c < KC; ++c) {
                    float kf[8];
                    unpack8(kraw[c], kf);
#pragma unroll
                    for (int gi = 0; gi < G; ++gi)
#pragma unroll
                        for (int e = 0; e < 8; ++e) dot[gi] = fmaf(qs[gi][(part * KC + c) * 8 + e], kf[e], dot[gi]);
                }
            }
        }
        float p[G];
        bool any[G];
        run.tile(dot, slot >= 0, scale, p, any);
#pragma unroll
        for (int part = 0; part < SPLIT; ++part) {
            if (part > 0) {
#pragma unroll
                for (int j = 0; j < VJ; ++j) {
                    const long long sj = __shfl_sync(0xffffffffu, slot, part * VJ + j);
                    if (sj >= 0) vr[j].load(v_cache + (sj * num_kv_heads + kvh) * HD + lane * EPL);
                }
            }
#pragma unroll
            for (int j = 0; j < VJ; ++j) {
                if (!((live >> (part * VJ + j)) & 1u)) continue;
                run.add_v(p, any, part * VJ + j, vr[j]);
            }
        }
    }
    run.store(wacc, warp, lane, m_out, l_out);
}

// The decode megakernel's timeline stamp (qwen_mega.cu THE TIMELINE): with `mk` non-null,
// thread 0 writes the pair (%globaltimer ns, clock64 cycles) of event e at mk[2e]. One
// special-register read and one store by one thread; with mk null, a null test.
__device__ __forceinline__ void mega_mark(unsigned long long* mk, int e) {
    if (mk != nullptr && e >= 0 && threadIdx.x == 0) {
        unsigned long long ns;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
        mk[2 * e] = ns;
        mk[2 * e + 1] = (unsigned long long)clock64();
    }
}

// att_tiles_fast's tiles with the K and V rows staged in shared memory (COMPACT: the
// decode megakernel's compact entry). The same keys, scores, online softmax and sums in the
// same order, so the same bits; what changes is the code: the rows come in by cp.async
// (every copy of a tile in flight at once) and the dot products and the V sums run as
// loops over the staged rows, where att_tiles_fast unrolls them into one straight run of
// ~1,400 instructions a tile. In a persistent kernel whose layer is too much code for the
// SM's instruction cache, each phase's instructions are fetched again every layer, and a
// straight run is fetched line by line (device log, session 20: attention took 25 us in the
// megakernel against 7 us per launch). `buf`: this warp's ATT_COMPACT_WARP_BYTES of shared
// memory: 32 rows of ATT_COMPACT_KST bf16 (K rows, then the same space for V rows), then
// the tile's 32 slots. HD 64 or 128.
#define ATT_COMPACT_KST (128 + 8)
#define ATT_COMPACT_WARP_BYTES (32 * ATT_COMPACT_KST * 2 + 32 * 8)
// `.ca`: through L1, as att_tiles_fast's plain loads read the cache (the fused decode
// phase's own slot was written by the item's own warps, ordered by the item's barrier).
__device__ __forceinline__ void cp_async16_ca(void* dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" ::"r"((unsigned int)__cvta_generic_to_shared(dst)),
                 "l"(src)
                 : "memory");
}
// Rows `slots[j] >= 0` of `cache` (kv head kvh, HD wide) into rows j of buf (stride
// ATT_COMPACT_KST), by the warp, then waits for them (`wait`; else they stay in flight).
// Row `skip` is left out (-1: none).
template <int HD>
__device__ __forceinline__ void att_stage_rows(bf16_t* buf, const long long* slots, const bf16_t* cache,
                                               int num_kv_heads, int kvh, int lane, int skip = -1, bool wait = true) {
    constexpr int CH = HD / 8;
#pragma unroll 4
    for (int i = lane; i < 32 * CH; i += 32) {
        const int j = i / CH, c = i % CH;
        const long long sj = slots[j];
        if (sj >= 0 && j != skip)
            cp_async16_ca(buf + j * ATT_COMPACT_KST + c * 8, cache + (sj * num_kv_heads + kvh) * HD + c * 8);
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
    if (!wait) return;
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    __syncwarp();
}
// Row j (slot sj >= 0) of `cache` into row j of buf, by the warp, then waits for every row
// the warp has in flight.
template <int HD>
__device__ __forceinline__ void att_stage_row_and_wait(bf16_t* buf, int j, long long sj, const bf16_t* cache,
                                                       int num_kv_heads, int kvh, int lane) {
    constexpr int CH = HD / 8;
    if (j >= 0 && sj >= 0 && lane < CH)
        cp_async16_ca(buf + j * ATT_COMPACT_KST + lane * 8, cache + (sj * num_kv_heads + kvh) * HD + lane * 8);
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;" ::: "memory");
    __syncwarp();
}

// EARLY (the fused decode phase, compact tiles): the warp's first tile's slots and K rows
// are requested (and its V rows asked into L2) before the item's RoPE, all but the row of the item's own token (key nk - 1:
// rope_item writes it), which att_tiles_compact requests after the item's barrier; the
// rows' memory round trip overlaps RoPE. `keys` moves past the first tile; `slot0` is its
// slot for the lane. The same rows land, so the same sums.
template <int HD>
__device__ __forceinline__ void att_compact_early(AttKeys& keys, long long& slot0, long long nk,
                                                  const int* __restrict__ bt_row, int block_size, long long cache_slots,
                                                  unsigned int* __restrict__ counters, const bf16_t* k_cache,
                                                  const bf16_t* v_cache, int num_kv_heads, int kvh, int warp, int lane,
                                                  unsigned char* buf_bytes) {
    slot0 = keys.next(nk, bt_row, block_size, cache_slots, counters);
    if ((long long)warp * 32 >= nk) return;
    bf16_t* buf = (bf16_t*)buf_bytes;
    long long* slots = (long long*)(buf_bytes + 32 * ATT_COMPACT_KST * 2);
    slots[lane] = slot0;
    __syncwarp();
    const int own = ((nk - 1) >> 5) == warp ? (int)((nk - 1) & 31) : -1;
    att_stage_rows<HD>(buf, slots, k_cache, num_kv_heads, kvh, lane, own, false);
    // The same tile's V rows asked into L2 (a hint: the V staging after the dot products
    // then waits for L2, not HBM; the own row's line is rewritten by RoPE, in L2).
    if (slot0 >= 0) {
        const bf16_t* vr = v_cache + (slot0 * num_kv_heads + kvh) * HD;
#pragma unroll
        for (int b = 0; b < HD * 2; b += 128) asm volatile("prefetch.global.L2 [%0];" ::"l"((const char*)vr + b));
    }
}
template <int HD, int G>
__device__ __forceinline__ void att_tiles_compact(
    const float (*__restrict__ qs)[ATT_MAX_HD], const bf16_t* k_cache, const bf16_t* v_cache, long long cache_slots,
    const int* __restrict__ bt_row, int block_size, int num_kv_heads, int kvh, long long nk, float scale, int warp,
    int lane, unsigned int* __restrict__ counters, float (*__restrict__ wacc)[ATT_WARPS][ATT_MAX_HD], float* m_out,
    float* l_out, unsigned char* buf_bytes, unsigned long long* tmk = nullptr, int te = 0, AttKeys* early = nullptr,
    long long slot0 = -1)
{
    // tmk (the MEGA_TILES probe): thread 0 stamps event te when its first tile's K rows
    // are staged, te + 1 when its V rows are. `early`: att_compact_early requested the
    // first tile (its keys, `slot0`).
    static_assert(HD == 64 || HD == 128, "the staged rows are at most 128 wide");
    constexpr int EPL = HD / 32;
    constexpr int CH = HD / 8;
    bf16_t* buf = (bf16_t*)buf_bytes;
    long long* slots = (long long*)(buf_bytes + 32 * ATT_COMPACT_KST * 2);
    AttRun<G, EPL> run;
    AttKeys keys = early != nullptr ? *early : AttKeys(warp, lane, nk, bt_row, block_size);
    const long long tiles = (nk + 31) >> 5;
    for (long long ti = warp; ti < tiles; ti += ATT_WARPS) {
        const bool pre = early != nullptr && ti == warp;
        const long long slot = pre ? slot0 : keys.next(nk, bt_row, block_size, cache_slots, counters);
        const unsigned live = __ballot_sync(0xffffffffu, slot >= 0);
        if (pre) {
            // The own token's row (RoPE wrote it before the item's barrier), then every row.
            const int own = ((nk - 1) >> 5) == ti ? (int)((nk - 1) & 31) : -1;
            att_stage_row_and_wait<HD>(buf, own, own >= 0 ? slots[own] : -1, k_cache, num_kv_heads, kvh, lane);
        } else {
            // The previous tile's V reads are done (its loop ended with __syncwarp).
            slots[lane] = slot;
            __syncwarp();
            att_stage_rows<HD>(buf, slots, k_cache, num_kv_heads, kvh, lane);
        }
        if (ti == warp) mega_mark(tmk, te);
        float dot[G];
#pragma unroll
        for (int gi = 0; gi < G; ++gi) dot[gi] = 0.0f;
        if (slot >= 0) {
            const bf16_t* kr = buf + lane * ATT_COMPACT_KST;
#pragma unroll 1
            for (int c = 0; c < CH; ++c) {
                float kf[8];
                unpack8(*(const uint4*)(kr + c * 8), kf);
#pragma unroll
                for (int gi = 0; gi < G; ++gi)
#pragma unroll
                    for (int e = 0; e < 8; ++e) dot[gi] = fmaf(qs[gi][c * 8 + e], kf[e], dot[gi]);
            }
        }
        float p[G];
        bool any[G];
        run.tile(dot, slot >= 0, scale, p, any);
        // Every lane is past its K row: the V rows take the same space.
        __syncwarp();
        att_stage_rows<HD>(buf, slots, v_cache, num_kv_heads, kvh, lane);
        if (ti == warp) mega_mark(tmk, te + 1);
#pragma unroll 1
        for (int j = 0; j < 32; ++j) {
            if (!((live >> j) & 1u)) continue;
            VPart<EPL> vr;
            vr.load(buf + j * ATT_COMPACT_KST + lane * EPL);
            run.add_v(p, any, j, vr);
        }
        __syncwarp();
    }
    run.store(wacc, warp, lane, m_out, l_out);
}

// The barrier of one attention item's ATT_WARPS warps: the block's (SUBS == 1), or named
// barrier 1 + sub of ATT_WARPS * 32 threads when a block runs SUBS items side by side (the
// decode megakernel's blocks of 8 warps).
template <int SUBS>
__device__ __forceinline__ void att_sync(int sub) {
    if (SUBS == 1) {
        __syncthreads();
    } else {
        asm volatile("bar.sync %0, %1;" ::"r"(1 + sub), "r"(ATT_WARPS * 32) : "memory");
    }
}

// What the fused decode phase (attention_body with ROPE) needs of the q/k norm + RoPE + KV
// write besides attention's own arguments.
struct RopeArgs {
    const bf16_t* qkv;
    const long long* slot_mapping;
    const bf16_t* q_norm;
    const bf16_t* k_norm;
    int qk_norm;
    float eps;
    const bf16_t* rope;
    int rope_len;
    int real;
    bf16_t* q_out;
};

// Items are (token, group of G query heads sharing one KV head): G = 1 is every head alone;
// G > 1 (qwen_attention_gqa) loads each K and V row once for the group. SUBS: items a block
// runs at once, one per ATT_WARPS warps (item blockIdx.x * SUBS + sub, stride gridDim.x *
// SUBS); every item's sums are the same whichever warps compute it.
// ROPE (the decode megakernel's fused phase; only for pure decode, every request one query
// token, with G the whole GQA group, G + 2 <= ATT_WARPS and head_dim 64, 128 or 256): the
// item first runs the q/k norm + RoPE + KV write of its token for its heads (rope_item:
// warp w < G q head h0 + w straight into the item's q floats, warp G the K head and warp
// G + 1 the V head of its KV head, written to the token's cache slot), so no other item
// and no grid barrier is waited for: the slot's writes are the item's own warps', ordered
// before the tiles' loads by the item's barrier. The same values, so the same sums.
// EXT: the items' shared scratch (ATT_SCRATCH(G) floats per item) is `ext`, not the
// function's own (the megakernel lends its x-staging region, idle during attention).
#define ATT_SCRATCH(G) ((G) * ATT_MAX_HD + 2 * (G) * ATT_WARPS + (G) * ATT_WARPS * ATT_MAX_HD)
// MK: stamps events e0 .. e0 + 3 of thread 0's items (mk, the megakernel's timeline):
// the request lookup and q loads, RoPE/KV (or q staged), the tiles, the merge and store.
// COMPACT (head_dim 64 or 128): the tiles of att_tiles_compact, each warp staging its rows
// in `tiles_smem` + ATT_COMPACT_WARP_BYTES * (threadIdx.x / 32).
template <int SPLIT, int G, int SUBS = 1, bool ROPE = false, bool EXT = false, bool COMPACT = false>
__device__ __forceinline__ void attention_body(
    const int* __restrict__ counts,
    const bf16_t* ACT_RESTRICT q,
    const bf16_t* ACT_RESTRICT k_cache, const bf16_t* ACT_RESTRICT v_cache, long long cache_slots,
    const int* __restrict__ cu_seqlens_q, const int* __restrict__ seqused_k,
    const int* __restrict__ block_table, int blocks_per_row, int block_size,
    const long long* __restrict__ positions,
    int num_heads, int num_kv_heads, int head_dim,
    bf16_t* ACT_RESTRICT out,
    unsigned int* __restrict__ counters,
    RopeArgs ra = RopeArgs{},
    float* ext = nullptr,
    unsigned long long* mk = nullptr, int e0 = 0,
    unsigned char* tiles_smem = nullptr, bool tile_stamps = false, bool early_k = false)
{
    constexpr int THREADS = ATT_WARPS * 32;
    const int sub = SUBS == 1 ? 0 : (int)(threadIdx.x / THREADS);
    const int tid = SUBS == 1 ? (int)threadIdx.x : (int)(threadIdx.x % THREADS);
    // Per item: q floats [G][ATT_MAX_HD], the warps' maxima and sums [G][ATT_WARPS] each,
    // their accumulators [G][ATT_WARPS][ATT_MAX_HD].
    float* scratch;
    if constexpr (EXT) {
        scratch = ext;
    } else {
        __shared__ float att_smem[SUBS * ATT_SCRATCH(G)];
        scratch = att_smem;
    }
    float* mine = scratch + sub * ATT_SCRATCH(G);
    float (*qs)[ATT_MAX_HD] = (float (*)[ATT_MAX_HD])mine;
    float (*wm)[ATT_WARPS] = (float (*)[ATT_WARPS])(mine + G * ATT_MAX_HD);
    float (*wl)[ATT_WARPS] = (float (*)[ATT_WARPS])(mine + G * ATT_MAX_HD + G * ATT_WARPS);
    float (*wacc)[ATT_WARPS][ATT_MAX_HD] = (float (*)[ATT_WARPS][ATT_MAX_HD])(mine + G * ATT_MAX_HD + 2 * G * ATT_WARPS);
    const int num_reqs = counts[C_NUM_REQS];
    if (num_reqs <= 0) return;
    const int total = cu_seqlens_q[num_reqs];
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int group = num_heads / num_kv_heads;
    const int groups = num_heads / G;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const float NEG_INF = __int_as_float(0xff800000);
    const long long items = (long long)total * groups;
    for (long long it = (long long)blockIdx.x * SUBS + sub; it < items; it += (long long)gridDim.x * SUBS) {
        const int t = (int)(it / groups);
        const int h0 = (int)(it % groups) * G;
        const int kvh = h0 / group;
        // The loads that need only t go out with the request lookup's: the position and the
        // item's q elements (at most QU a thread: G * head_dim <= 2 * ATT_MAX_HD).
        constexpr int QU = (2 * ATT_MAX_HD + THREADS - 1) / THREADS;
        long long nk = positions[t] + 1;
        bf16_t qr[QU];
#pragma unroll
        for (int u = 0; u < QU; ++u) {
            const int i = tid + u * THREADS;
            qr[u] = !ROPE && i < G * head_dim ? q[((long long)t * num_heads + h0) * head_dim + i] : (bf16_t)0;
        }
        const int r = row_of_guessed(cu_seqlens_q, num_reqs, total, t);
        if (nk > seqused_k[r] || nk < 1) {
            if (tid == 0) atomicAdd(&counters[CTR_OUT_OF_RANGE], 1u);
            nk = nk < 1 ? 0 : seqused_k[r];
        }
        att_sync<SUBS>(sub);
        // tile_stamps (the MEGA_TILES probe, compact tiles only): e0 after RoPE, e0 + 1 and
        // e0 + 2 inside the tiles (K rows, V rows staged), e0 + 3 after the merge.
        tile_stamps = tile_stamps && COMPACT && (head_dim == 128 || head_dim == 64);
        if (!tile_stamps) mega_mark(mk, e0);
        const int* bt_row = block_table + (long long)r * blocks_per_row;
        unsigned char* wbuf = COMPACT ? tiles_smem + (threadIdx.x >> 5) * ATT_COMPACT_WARP_BYTES : nullptr;
        // early_k (MEGA_EARLYK): the first tile's K rows requested before RoPE
        // (att_compact_early); `ekeys` continues from there.
        const bool early = ROPE && COMPACT && early_k && (head_dim == 128 || head_dim == 64);
        AttKeys ekeys(warp, lane, early ? nk : 0, bt_row, block_size);
        long long slot0 = -1;
        if (early) {
            if (head_dim == 128)
                att_compact_early<128>(ekeys, slot0, nk, bt_row, block_size, cache_slots, counters, k_cache, v_cache,
                                       num_kv_heads, kvh, warp, lane, wbuf);
            else
                att_compact_early<64>(ekeys, slot0, nk, bt_row, block_size, cache_slots, counters, k_cache, v_cache,
                                      num_kv_heads, kvh, warp, lane, wbuf);
        }
        if (ROPE) {
            if (warp < G + 2) {
                const int h = warp < G ? h0 + warp : warp == G ? num_heads + kvh : num_heads + num_kv_heads + kvh;
                rope_item(counts, ra.qkv, positions, ra.slot_mapping, ra.q_norm, ra.k_norm, ra.qk_norm, ra.eps, ra.rope,
                          ra.rope_len, num_heads, num_kv_heads, head_dim, ra.q_out, (bf16_t*)k_cache, (bf16_t*)v_cache,
                          cache_slots, counters, t, h, ra.real, lane, nullptr, warp < G ? qs[warp] : nullptr);
            }
        } else {
#pragma unroll
            for (int u = 0; u < QU; ++u) {
                const int i = tid + u * THREADS;
                if (i < G * head_dim) qs[i / head_dim][i % head_dim] = bf2f(qr[u]);
            }
        }
        att_sync<SUBS>(sub);
        mega_mark(mk, tile_stamps ? e0 : e0 + 1);
        float m[G], l[G];
        unsigned long long* tmk = tile_stamps ? mk : nullptr;
        if (COMPACT && (head_dim == 128 || head_dim == 64)) {
            AttKeys* ek = early ? &ekeys : nullptr;
            if (head_dim == 128)
                att_tiles_compact<128, G>(qs, k_cache, v_cache, cache_slots, bt_row, block_size, num_kv_heads, kvh, nk,
                                          scale, warp, lane, counters, wacc, m, l, wbuf, tmk, e0 + 1, ek, slot0);
            else
                att_tiles_compact<64, G>(qs, k_cache, v_cache, cache_slots, bt_row, block_size, num_kv_heads, kvh, nk,
                                         scale, warp, lane, counters, wacc, m, l, wbuf, tmk, e0 + 1, ek, slot0);
        } else if (head_dim == 128) {
            att_tiles_fast<128, SPLIT, G>(qs, k_cache, v_cache, cache_slots, bt_row, block_size, num_kv_heads, kvh, nk,
                                          scale, warp, lane, counters, wacc, m, l);
        } else if (head_dim == 64) {
            att_tiles_fast<64, SPLIT, G>(qs, k_cache, v_cache, cache_slots, bt_row, block_size, num_kv_heads, kvh, nk,
                                         scale, warp, lane, counters, wacc, m, l);
        } else {
#pragma unroll 1
          for (int gi = 0; gi < G; ++gi) {
            m[gi] = NEG_INF;
            l[gi] = 0.0f;
            float acc[ATT_MAX_HD / 32];
#pragma unroll
            for (int e = 0; e < ATT_MAX_HD / 32; ++e) acc[e] = 0.0f;
            const long long tiles = (nk + 31) >> 5;
            for (long long ti = warp; ti < tiles; ti += ATT_WARPS) {
                const long long key = ti * 32 + lane;
                long long slot = -1;
                float s = NEG_INF;
                if (key < nk) {
                    const int blk = block_table[(long long)r * blocks_per_row + key / block_size];
                    slot = (long long)blk * block_size + key % block_size;
                    if (blk < 0 || slot >= cache_slots) {
                        if (gi == 0) atomicAdd(&counters[CTR_OUT_OF_RANGE], 1u);
                        slot = -1;
                    } else {
                        const bf16_t* kr = k_cache + (slot * num_kv_heads + kvh) * head_dim;
                        float dot = 0.0f;
#pragma unroll 4
                        for (int d = 0; d < head_dim; d += 8) {
                            float kf[8];
                            unpack8(*(const uint4*)(kr + d), kf);
#pragma unroll
                            for (int e = 0; e < 8; ++e) dot = fmaf(qs[gi][d + e], kf[e], dot);
                        }
                        s = dot * scale;
                    }
                }
                float m_new, corr, p;
                if (!softmax_tile(s, slot >= 0, m[gi], &m_new, &l[gi], &corr, &p)) continue;
#pragma unroll
                for (int e = 0; e < ATT_MAX_HD / 32; ++e) acc[e] = acc[e] * corr;
                // Keys j = 0..31 in order for every acc[e]; the V rows of ATT_VU keys are
                // loaded before their fmaf chain (memory latency overlapped, same sums).
                for (int j0 = 0; j0 < 32; j0 += ATT_VU) {
                    float pj[ATT_VU], vv[ATT_VU][ATT_MAX_HD / 32];
                    bool live[ATT_VU];
#pragma unroll
                    for (int u = 0; u < ATT_VU; ++u) {
                        pj[u] = __shfl_sync(0xffffffffu, p, j0 + u);
                        const long long sj = __shfl_sync(0xffffffffu, slot, j0 + u);
                        live[u] = sj >= 0;
                        const bf16_t* vr = v_cache + (live[u] ? (sj * num_kv_heads + kvh) * head_dim : 0);
#pragma unroll
                        for (int e = 0; e < ATT_MAX_HD / 32; ++e) {
                            const int d = lane + 32 * e;
                            vv[u][e] = live[u] && d < head_dim ? bf2f(vr[d]) : 0.0f;
                        }
                    }
#pragma unroll
                    for (int u = 0; u < ATT_VU; ++u) {
                        if (!live[u]) continue;
#pragma unroll
                        for (int e = 0; e < ATT_MAX_HD / 32; ++e) {
                            const int d = lane + 32 * e;
                            if (d < head_dim) acc[e] = fmaf(pj[u], vv[u][e], acc[e]);
                        }
                    }
                }
                m[gi] = m_new;
            }
#pragma unroll
            for (int e = 0; e < ATT_MAX_HD / 32; ++e) {
                const int d = lane + 32 * e;
                if (d < head_dim) wacc[gi][warp][d] = acc[e];
            }
          }
        }
        if (lane == 0) {
#pragma unroll
            for (int gi = 0; gi < G; ++gi) { wm[gi][warp] = m[gi]; wl[gi][warp] = l[gi]; }
        }
        att_sync<SUBS>(sub);
        if (!tile_stamps) mega_mark(mk, e0 + 2);
#pragma unroll 1
        for (int gi = 0; gi < G; ++gi) {
            float M = NEG_INF;
            for (int w2 = 0; w2 < ATT_WARPS; ++w2) M = fmaxf(M, wm[gi][w2]);
            float L = 0.0f;
            float ew[ATT_WARPS];
            for (int w2 = 0; w2 < ATT_WARPS; ++w2) {
                ew[w2] = wm[gi][w2] == NEG_INF ? 0.0f : exp_f(wm[gi][w2] - M);
                L = fmaf(wl[gi][w2], ew[w2], L);
            }
            for (int d = tid; d < head_dim; d += THREADS) {
                float o = 0.0f;
                for (int w2 = 0; w2 < ATT_WARPS; ++w2) o = fmaf(wacc[gi][w2][d], ew[w2], o);
                out[((long long)t * num_heads + h0 + gi) * head_dim + d] = f2bf(L > 0.0f ? o / L : 0.0f);
            }
        }
        mega_mark(mk, e0 + 3);
    }
}

#define ATTENTION_ARGS                                                                           \
    const int* __restrict__ counts, const bf16_t* __restrict__ q, const bf16_t* __restrict__ k_cache, \
        const bf16_t* __restrict__ v_cache, long long cache_slots, const int* __restrict__ cu_seqlens_q, \
        const int* __restrict__ seqused_k, const int* __restrict__ block_table, int blocks_per_row,   \
        int block_size, const long long* __restrict__ positions, int num_heads, int num_kv_heads,     \
        int head_dim, bf16_t* __restrict__ out, unsigned int* __restrict__ counters
#define ATTENTION_PASS                                                                           \
    counts, q, k_cache, v_cache, cache_slots, cu_seqlens_q, seqused_k, block_table, blocks_per_row, \
        block_size, positions, num_heads, num_kv_heads, head_dim, out, counters
// Every K and V row of a tile in flight at once (the most latency hidden per block: few
// blocks, as at batch 1).
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) qwen_attention(ATTENTION_ARGS) {
    pdl_begin();
    attention_body<1, 1>(ATTENTION_PASS);
}
// Half a tile's K and V rows at a time: fewer registers, so more blocks per SM when the step
// has many (token, head) items. Same sums in the same order, so the same bits.
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32, 4) qwen_attention_lean(ATTENTION_ARGS) {
    pdl_begin();
    attention_body<2, 1>(ATTENTION_PASS);
}
// The lean body for pairs of query heads sharing a KV head (GQA with an even group, launched
// with half the items): each K and V row read once for both. Same sums per head.
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32, 4) qwen_attention_gqa2(ATTENTION_ARGS) {
    pdl_begin();
    attention_body<2, 2>(ATTENTION_PASS);
}
// Pairs of query heads with every K and V row of a tile requested at once (SPLIT 1: two
// memory round trips per tile instead of four, more registers, fewer blocks per SM; at 64
// decode rows the step has only about 4 items per SM anyway). Launches::whole_tiles. Same
// sums per head in the same order, so the same bits.
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) qwen_attention_gqa2_whole(ATTENTION_ARGS) {
    pdl_begin();
    attention_body<1, 2>(ATTENTION_PASS);
}

// act = bf16(bf16(silu(gate)) * up) over the padded rows; gate_up is [T, 2I] = [gate | up]
// (HF `down_proj(act_fn(gate_proj(x)) * up_proj(x))`, silu(g) = g / (1 + exp(-g))).
extern "C" __global__ void qwen_silu_mul(
    const int* __restrict__ counts,
    const bf16_t* __restrict__ gate_up, int inter,
    bf16_t* __restrict__ act)
{
    pdl_begin();
    const long long n = (long long)counts[C_PADDED_TOKENS] * inter;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
        const long long t = e / inter;
        const int i = (int)(e % inter);
        const float g = bf2f(gate_up[t * 2 * inter + i]);
        const float u = bf2f(gate_up[t * 2 * inter + inter + i]);
        act[e] = silu_mul_bf(g, u);
    }
}

// Tensor-core probe (bench and model-fitting only, launched by the GPU test
// `tensor_core_block_model_matches_the_mma`): warp c executes ONE
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 on case c's A (16 x 16 bf16, row
// major), B (8 columns x 16 k, bf16, k contiguous: a weight matrix's rows) and C (16 x 8
// f32, row major), writing D (16 x 8 f32, row major). Fragment layout from the PTX ISA
// ("Matrix Fragments for mma.m16n8k16 with floating point type"): g = lane / 4,
// t = lane % 4; a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..);
// b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g); c0 c1 (g, 2t..2t+1), c2 c3 (g+8, 2t..);
// the lower k index sits in the lower 16 bits.
__device__ __forceinline__ unsigned int pack_bf2(bf16_t lo, bf16_t hi) {
    return (unsigned int)lo | ((unsigned int)hi << 16);
}

__device__ __forceinline__ void mma_bf16_16816(float* d, const unsigned int* a, const unsigned int* b, const float* c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#endif
}

// bench-gemm's read floor (`gemm_bench::read_floor`): streams n16 16-byte words with 4 loads
// in flight per thread (grid-stride), the time of one launch that only reads a weight
// matrix's bytes from HBM. The XOR keeps the loads; the store practically never happens.
extern "C" __global__ void __launch_bounds__(256) qwen_read_probe(const uint4* __restrict__ w, long long n16,
                                                                  unsigned int* __restrict__ sink) {
    unsigned int acc = 0u;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        uint4 v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) v[u] = w[i + u * stride];
#pragma unroll
        for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < n16; i += stride) {
        const uint4 v = w[i];
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9e3779b9u) sink[0] = acc;
}

// Cross-kernel weight streaming (Launches::l2_ahead): a small grid on a side stream that asks
// L2 for a later product's weight bytes while the kernels before that product run, so the
// card's memory keeps streaming across kernel boundaries and the product finds its weights
// in L2. A hint only: it writes nothing and reads no value, so no result can change. Each
// thread takes one `chunk` bytes (a multiple of 16; the base is 256-byte aligned) and asks for
// it with one bulk prefetch (`cp.async.bulk.prefetch.L2`, sm_90: the copy engine walks it) or,
// `bulk` 0, with one `prefetch.global.L2` per 128-byte line. A tail below 16 bytes is left to
// the product's own loads.
extern "C" __global__ void __launch_bounds__(32) qwen_l2_prefetch(const char* __restrict__ p, long long bytes,
                                                                   int chunk, int bulk) {
    const long long off = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * (long long)chunk;
    if (off >= bytes) return;
    long long n = bytes - off < (long long)chunk ? bytes - off : (long long)chunk;
    n &= ~15LL;
    if (n == 0) return;
    const char* a = p + off;
    if (bulk) {
#if __CUDA_ARCH__ >= 900
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"((unsigned)n) : "memory");
        return;
#endif
    }
    for (long long o = 0; o < n; o += 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(a + o));
}

extern "C" __global__ void mma_probe(int cases, const bf16_t* __restrict__ a, const bf16_t* __restrict__ b,
                                     const float* __restrict__ c, float* __restrict__ d) {
    const int cs = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    const int lane = (int)(threadIdx.x & 31);
    if (cs >= cases) return;
    const int g = lane >> 2, t = lane & 3;
    const bf16_t* A = a + (size_t)cs * 256;
    const bf16_t* B = b + (size_t)cs * 128;
    const float* C = c + (size_t)cs * 128;
    float* D = d + (size_t)cs * 128;
    unsigned int ar[4], br[2];
    float cr[4], dr[4];
    ar[0] = pack_bf2(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]);
    ar[1] = pack_bf2(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]);
    ar[2] = pack_bf2(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]);
    ar[3] = pack_bf2(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9]);
    br[0] = pack_bf2(B[g * 16 + 2 * t], B[g * 16 + 2 * t + 1]);
    br[1] = pack_bf2(B[g * 16 + 2 * t + 8], B[g * 16 + 2 * t + 9]);
    cr[0] = C[g * 8 + 2 * t];
    cr[1] = C[g * 8 + 2 * t + 1];
    cr[2] = C[(g + 8) * 8 + 2 * t];
    cr[3] = C[(g + 8) * 8 + 2 * t + 1];
    mma_bf16_16816(dr, ar, br, cr);
    D[g * 8 + 2 * t] = dr[0];
    D[g * 8 + 2 * t + 1] = dr[1];
    D[(g + 8) * 8 + 2 * t] = dr[2];
    D[(g + 8) * 8 + 2 * t + 1] = dr[3];
}

// TENSOR-CORE GEMMs (KernelPlan::Tensor): y = x W^T with mma.sync m16n8k16 bf16 -> f32. The
// order of every output's sum is fixed by K alone (never by the rows, the grid or the
// tiling), so the products stay batch invariant, and the CPU twin
// (kernels_ref.rs `dot_tensor`, tensor_core.rs `TcModel::HOPPER`) reproduces it bit for bit:
//   * K is cut into MMA_SPLIT slices of 32-element chunks: slice s holds chunks
//     [s C / S, (s + 1) C / S) of C = K / 32 (empty slices add +0).
//   * In a slice, an accumulator starts at +0 and takes two block FMAs per chunk k0: first
//     the 16 products k0 + 8t + j, then k0 + 8t + 4 + j (t < 4, j < 4). (A lane loads 8
//     consecutive elements, x and W alike, and hands elements 0-3 to the first mma, 4-7 to
//     the second: the fragment layout makes those its k pairs (2t, 2t+1) and (2t+8, 2t+9).)
//   * The slices' sums are added in slice order with f32 additions: ((p0 + p1) + p2) ...
// Two bodies compute that order. MMA_SPLIT_WARPS: a block of MMA_SPLIT warps shares one tile
// of 16 MF rows x 8 NT columns, warp s takes slice s, the partial sums meet in shared
// memory (few rows: the weights stream through 8x more warps). Otherwise: each warp owns a
// tile and walks all slices, adding slice s's sum into its total when the slice ends (many
// rows: the block's warps take neighbouring column tiles of one row group, so they read the
// same x rows at once). Rows past `rows` load zeros and are not stored; a row's sums
// depend on its own x row only (an mma output is a function of its row of A).
#define MMA_SPLIT 8

// The split-K body's sum of output (r, c): the MMA_SPLIT warps' partial sums added in slice
// order (gemm_mma_body and the megakernel's staged_tile).
template <typename PartTile>
__device__ __forceinline__ float split_k_sum(const PartTile* part, int r, int c) {
    float sum = part[0][r][c];
#pragma unroll
    for (int q = 1; q < MMA_SPLIT; ++q) sum = sum + part[q][r][c];
    return sum;
}

template <int NT, int MF>
__device__ __forceinline__ void mma_chunk(float (*acc)[NT][4], const uint4* wv, const uint4 (*xv)[2]) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const unsigned int b[2] = {half ? wv[nt].z : wv[nt].x, half ? wv[nt].w : wv[nt].y};
#pragma unroll
            for (int mf = 0; mf < MF; ++mf) {
                const unsigned int a[4] = {half ? xv[mf][0].z : xv[mf][0].x, half ? xv[mf][1].z : xv[mf][1].x,
                                           half ? xv[mf][0].w : xv[mf][0].y, half ? xv[mf][1].w : xv[mf][1].y};
                mma_bf16_16816(acc[mf][nt], a, b, acc[mf][nt]);
            }
        }
    }
}

// Output (row, column) of fragment element e (0-3) of lane (g, t): rows g / g + 8, columns
// 2t / 2t + 1.
__device__ __forceinline__ int frag_row(int g, int e) { return g + ((e >> 1) << 3); }
__device__ __forceinline__ int frag_col(int t, int e) { return 2 * t + (e & 1); }

// The 8 bf16 of `xv` normalised as qwen_rmsnorm stores them: bf16(bf16(r * inv) * w).
__device__ __forceinline__ uint4 norm8(uint4 xv, uint4 nw, float inv) {
    unsigned int o[4];
#pragma unroll
    for (int p = 0; p < 4; ++p)
        o[p] = pack_bf2(f2bf(round_bf(bf16_at(xv, 2 * p) * inv) * bf16_at(nw, 2 * p)),
                        f2bf(round_bf(bf16_at(xv, 2 * p + 1) * inv) * bf16_at(nw, 2 * p + 1)));
    return make_uint4(o[0], o[1], o[2], o[3]);
}

// NORM and RESADD as in gemm_body (the one-row folded norms, KernelPlan::folds_norms): NORM
// reads the residual stream as x and normalises each element as it loads it (the warp first
// computes the row's sum of squares in the norm's order); RESADD adds bf16(sum) into y, the
// residual stream, where the next norm would have.
// XS (x staged, KernelPlan::Tensor from 17 rows): the split-K body with the block's TR x rows
// copied once into dynamic shared memory (each row padded to an odd multiple of 64 bytes, so
// a quarter warp's 16-byte reads of rows g and g + 1 fall in disjoint banks), the partial
// sums after them; a block takes a contiguous run of tiles (row group major) and restages
// only when the row group changes. Without it every tile re-read its x rows from L2 (at 64
// rows twice the weights' bytes per tile). The fragments, and so every sum, are the same.
extern __shared__ __align__(16) unsigned char mma_dyn_smem[];

// NORM (unstaged): 1 / rms of rows g and g + 8 of the fragment whose `rows` rows start at x
// (lane g's rows; 0 past `rows`), every lane joining each row's sum in the norm's order
// (lane l: elements l, l + 32, ... with fmaf, then the butterfly). gemm_mma_body's; the
// decode megakernel's stage_x (qwen_mega.cu) sums the same way from its staged copy.
__device__ __forceinline__ void fragment_inv_rms(int rows, const bf16_t* x, int K, float eps, float* inv) {
    const int lane = threadIdx.x & 31, g = lane >> 2;
    inv[0] = inv[1] = 0.0f;
    for (int r = 0; r < 16 && r < rows; ++r) {
        const long long row = (long long)r * K;
        const float iv = lanes_inv_rms(lane_squares(x + row, K, lane), K, eps);
        if (r == g) inv[0] = iv;
        if (r == g + 8) inv[1] = iv;
    }
}


// The lane's weight vectors of chunks c .. c + U - 1 for its NT weight rows (`wrow`: each
// row's start plus the lane's 8 elements), zeros from `c_end` on.
template <int U, int NT>
__device__ __forceinline__ void load_w_chunks(uint4 (*wv)[NT], const bf16_t* __restrict__ w,
                                              const long long* wrow, int c, int c_end) {
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
            wv[u][nt] = c + u < c_end ? *(const uint4*)(w + wrow[nt] + ((c + u) << 5)) : make_uint4(0u, 0u, 0u, 0u);
}
#define STAGED_NORM_U 16

__host__ __device__ __forceinline__ int xs_stride(int K) { return K + ((K & 63) ? 0 : 32); }

template <int NT, int MF, int U, bool SPLIT_WARPS, bool GLU, bool NORM = false, bool RESADD = false, bool XS = false,
          bool PF = false, bool ROWS_FAST = false>
__device__ __forceinline__ void gemm_mma_body(int rows, const bf16_t* ACT_RESTRICT x, int K,
                                              const bf16_t* __restrict__ w, int N,
                                              bf16_t* ACT_RESTRICT y, float* ACT_RESTRICT yf, int f32_out,
                                              const bf16_t* __restrict__ norm_w = nullptr, float eps = 0.0f)
{
    static_assert(!GLU || NT == 2, "a GLU tile is 8 gate and the 8 matching up columns");
    static_assert(!NORM || MF == 1 || XS, "an unstaged folded norm normalises one fragment's rows");
    static_assert(!XS || SPLIT_WARPS, "x is staged for the split-K body");
    static_assert(!PF || (SPLIT_WARPS && !XS), "PF requests the warp's first slice chunks");
    constexpr int TR = MF * 16;
    typedef float PartTile[TR][NT * 8 + 1];
    __shared__ float part_static[SPLIT_WARPS && !XS ? MMA_SPLIT : 1][XS ? 1 : TR][NT * 8 + 1];
    const int xstride = XS ? xs_stride(K) : 0;
    bf16_t* xs = (bf16_t*)mma_dyn_smem;
    PartTile* part = XS ? (PartTile*)(mma_dyn_smem + (size_t)TR * xstride * 2) : (PartTile*)part_static;
    int staged_m0 = -1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int chunks = K >> 5;
    const int cols = GLU ? N / 2 : N;
    const int tile_cols = GLU ? 8 : NT * 8;
    const int col_tiles = (cols + tile_cols - 1) / tile_cols;
    const int row_tiles = (rows + TR - 1) / TR;
    const int tiles = col_tiles * row_tiles;
    const int per_block = SPLIT_WARPS ? 1 : MMA_SPLIT;  // tiles a block takes at once
    // XS: block b takes tiles [b T / grid, (b + 1) T / grid).
    const int first = XS ? (int)((long long)tiles * blockIdx.x / gridDim.x) : blockIdx.x * per_block;
    const int end = XS ? (int)((long long)tiles * (blockIdx.x + 1) / gridDim.x) : tiles;
    const int stride = XS ? 1 : gridDim.x * per_block;
    for (int base = first; base < end; base += stride) {
        const int tile = SPLIT_WARPS ? base : base + warp;
        // Neighbouring tiles share a row group: tile = row_tile * col_tiles + col_tile; with
        // ROWS_FAST they share a column group instead: tile = col_tile * row_tiles +
        // row_tile, so the row groups of one column tile run at once and its weights come
        // from HBM once (row group major, a product whose weights outgrow L2 -- the LM head
        // -- streams them once per row group).
        const int m0 = (ROWS_FAST ? tile % row_tiles : tile / col_tiles) * TR;
        const int n0 = (ROWS_FAST ? tile / row_tiles : tile % col_tiles) * tile_cols;
        const bool live = tile < tiles;
        if (XS && m0 != staged_m0) {
            // Every thread is past its reads of the previous group (the loop ends with a
            // barrier); rows past `rows` stage as zeros, as the direct loads read them.
            const int vecs = K >> 3, total = TR * vecs;
            for (int i0 = threadIdx.x; i0 < total; i0 += 8 * MMA_SPLIT * 32) {
                uint4 v[8];
#pragma unroll
                for (int u = 0; u < 8; ++u) {
                    const int i = i0 + u * MMA_SPLIT * 32, r = i / vecs;
                    v[u] = i < total && m0 + r < rows ? *(const uint4*)(x + (long long)(m0 + r) * K + 8 * (i - r * vecs))
                                                      : make_uint4(0u, 0u, 0u, 0u);
                }
#pragma unroll
                for (int u = 0; u < 8; ++u) {
                    const int i = i0 + u * MMA_SPLIT * 32, r = i / vecs;
                    if (i < total) *(uint4*)(xs + r * xstride + 8 * (i - r * vecs)) = v[u];
                }
            }
            __syncthreads();
            if constexpr (NORM) {
                // The input / post RMSNorm of the staged rows, in qwen_rmsnorm's order: lane
                // l sums squares of elements l, l + 32, ... (fmaf), the warp's butterfly
                // adds the lanes; each element becomes bf16(bf16(r * inv) * w). A warp takes
                // two rows at a time, each lane's STAGED_NORM_U values of both loaded before
                // its two fmaf chains (one row at a time was a chain of dependent shared
                // loads: device log run 22).
                for (int r = warp; r < TR && m0 + r < rows; r += 2 * MMA_SPLIT) {
                    const bool two = r + MMA_SPLIT < TR && m0 + r + MMA_SPLIT < rows;
                    bf16_t* ra = xs + r * xstride;
                    bf16_t* rb = xs + (two ? r + MMA_SPLIT : r) * xstride;
                    float sa = 0.0f, sb = 0.0f;
                    for (int base = lane; base < K; base += 32 * STAGED_NORM_U) {
                        float va[STAGED_NORM_U], vb[STAGED_NORM_U];
#pragma unroll
                        for (int u = 0; u < STAGED_NORM_U; ++u) {
                            const int i = base + 32 * u < K ? base + 32 * u : 0;
                            va[u] = bf2f(ra[i]);
                            vb[u] = bf2f(rb[i]);
                        }
#pragma unroll
                        for (int u = 0; u < STAGED_NORM_U; ++u)
                            if (base + 32 * u < K) {
                                sa = fmaf(va[u], va[u], sa);
                                sb = fmaf(vb[u], vb[u], sb);
                            }
                    }
                    const float ia = lanes_inv_rms(sa, K, eps), ib = lanes_inv_rms(sb, K, eps);
                    for (int i = lane; i < (K >> 3); i += 32) {
                        const uint4 nw = *(const uint4*)(norm_w + 8 * i);
                        uint4* pa = (uint4*)(ra + 8 * i);
                        uint4* pb = (uint4*)(rb + 8 * i);
                        const uint4 a = *pa, b = *pb;
                        *pa = norm8(a, nw, ia);
                        if (two) *pb = norm8(b, nw, ib);
                    }
                }
                __syncthreads();
            }
            staged_m0 = m0;
        }
        long long wrow[NT];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            int n;
            if (GLU) {
                const int pair = n0 + g < cols ? n0 + g : cols - 1;
                n = nt ? cols + pair : pair;
            } else {
                n = n0 + nt * 8 + g < N ? n0 + nt * 8 + g : N - 1;
            }
            wrow[nt] = (long long)n * K + 8 * t;
        }
        long long xrow[MF][2];
        bool xok[MF][2];
#pragma unroll
        for (int mf = 0; mf < MF; ++mf)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = m0 + mf * 16 + g + 8 * h;
                xok[mf][h] = live && r < rows;
                xrow[mf][h] = (long long)(xok[mf][h] ? r : 0) * K + 8 * t;
            }
        // PF: the warp's first U weight chunks are requested before anything else (before
        // the NORM sum of squares below), so the row's norm overlaps their memory latency.
        uint4 wpre[PF ? U : 1][NT];
        const int c_begin = SPLIT_WARPS ? warp * chunks / MMA_SPLIT : 0;
        if constexpr (PF) load_w_chunks<U, NT>(wpre, w, wrow, c_begin, (warp + 1) * chunks / MMA_SPLIT);
        // NORM: 1 / rms of the fragment's rows g and g + 8 (every lane joins each row's sum).
        float inv[2] = {0.0f, 0.0f};
        if (NORM && !XS) fragment_inv_rms(live ? rows - m0 : 0, x + (long long)m0 * K, K, eps, inv);
        float total[MF][NT][4];
        const int s_first = SPLIT_WARPS ? warp : 0;
        const int s_last = SPLIT_WARPS ? warp : (live ? MMA_SPLIT - 1 : -1);
        for (int s = s_first; s <= s_last; ++s) {
            float acc[MF][NT][4];
#pragma unroll
            for (int mf = 0; mf < MF; ++mf)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[mf][nt][e] = 0.0f;
            const int c_end = (s + 1) * chunks / MMA_SPLIT;
            int c = s * chunks / MMA_SPLIT;
            if constexpr (XS) {
                // The fragment rows mf * 16 + g (+ 8) at chunk c, from the staged copy.
                const bf16_t* xl = xs + g * xstride + 8 * t;
                for (; c < c_end; c += U) {
                    uint4 wv[U][NT];
                    load_w_chunks<U, NT>(wv, w, wrow, c, c_end);
#pragma unroll
                    for (int u = 0; u < U; ++u) {
                        if (c + u >= c_end) break;
                        uint4 xv[MF][2];
#pragma unroll
                        for (int mf = 0; mf < MF; ++mf)
#pragma unroll
                            for (int h = 0; h < 2; ++h)
                                xv[mf][h] = *(const uint4*)(xl + (mf * 16 + 8 * h) * xstride + ((c + u) << 5));
                        mma_chunk<NT, MF>(acc, wv[u], xv);
                    }
                }
            }
            for (; c + U <= c_end; c += U) {
                uint4 wv[U][NT], xv[U][MF][2];
                const bool pre = PF && c == c_begin;
#pragma unroll
                for (int u = 0; u < U; ++u) {
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt)
                        wv[u][nt] = pre ? wpre[u][nt] : *(const uint4*)(w + wrow[nt] + ((c + u) << 5));
#pragma unroll
                    for (int mf = 0; mf < MF; ++mf)
#pragma unroll
                        for (int h = 0; h < 2; ++h)
                            xv[u][mf][h] = xok[mf][h] ? *(const uint4*)(x + xrow[mf][h] + ((c + u) << 5))
                                                      : make_uint4(0u, 0u, 0u, 0u);
                }
                if (NORM) {
#pragma unroll
                    for (int u = 0; u < U; ++u) {
                        const uint4 nw = *(const uint4*)(norm_w + ((c + u) << 5) + 8 * t);
#pragma unroll
                        for (int h = 0; h < 2; ++h)
                            if (xok[0][h]) xv[u][0][h] = norm8(xv[u][0][h], nw, inv[h]);
                    }
                }
#pragma unroll
                for (int u = 0; u < U; ++u) mma_chunk<NT, MF>(acc, wv[u], xv[u]);
            }
            for (; c < c_end; ++c) {
                uint4 wv[NT], xv[MF][2];
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) wv[nt] = *(const uint4*)(w + wrow[nt] + (c << 5));
#pragma unroll
                for (int mf = 0; mf < MF; ++mf)
#pragma unroll
                    for (int h = 0; h < 2; ++h)
                        xv[mf][h] = xok[mf][h] ? *(const uint4*)(x + xrow[mf][h] + (c << 5)) : make_uint4(0u, 0u, 0u, 0u);
                if (NORM) {
                    const uint4 nw = *(const uint4*)(norm_w + (c << 5) + 8 * t);
#pragma unroll
                    for (int h = 0; h < 2; ++h)
                        if (xok[0][h]) xv[0][h] = norm8(xv[0][h], nw, inv[h]);
                }
                mma_chunk<NT, MF>(acc, wv, xv);
            }
#pragma unroll
            for (int mf = 0; mf < MF; ++mf)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        total[mf][nt][e] = s == s_first ? acc[mf][nt][e] : total[mf][nt][e] + acc[mf][nt][e];
        }
        if (SPLIT_WARPS) {
#pragma unroll
            for (int mf = 0; mf < MF; ++mf)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        part[warp][mf * 16 + frag_row(g, e)][nt * 8 + frag_col(t, e)] = total[mf][nt][e];
            __syncthreads();
            // Thread i adds output i's slices in order (all warps' partials are in `part`).
            for (int i = threadIdx.x; i < TR * tile_cols; i += MMA_SPLIT * 32) {
                const int r = i / tile_cols, j = i % tile_cols;
                if (m0 + r >= rows || n0 + j >= cols) continue;
                float v[2];
#pragma unroll
                for (int nt = 0; nt < (GLU ? 2 : 1); ++nt) {
                    v[nt] = split_k_sum(part, r, GLU ? nt * 8 + j : j);
                }
                const long long row = m0 + r;
                if (GLU) {
                    const float gt = round_bf(v[0]);
                    const float up = round_bf(v[1]);
                    y[row * cols + n0 + j] = silu_mul_bf(gt, up);
                } else {
                    const long long idx = row * N + n0 + j;
                    if (RESADD) y[idx] = f2bf(round_bf(v[0]) + bf2f(y[idx]));
                    else if (f32_out) yf[idx] = round_bf(v[0]);
                    else y[idx] = f2bf(v[0]);
                }
            }
            __syncthreads();
        } else if (live) {
#pragma unroll
            for (int mf = 0; mf < MF; ++mf)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const long long row = m0 + mf * 16 + frag_row(g, e);
                    if (row >= rows) continue;
                    if (GLU) {
                        const int pair = n0 + frag_col(t, e);
                        if (pair >= cols) continue;
                        const float gt = round_bf(total[mf][0][e]);
                        const float up = round_bf(total[mf][1][e]);
                        y[row * cols + pair] = silu_mul_bf(gt, up);
                    } else {
#pragma unroll
                        for (int nt = 0; nt < NT; ++nt) {
                            const int n = n0 + nt * 8 + frag_col(t, e);
                            if (n >= N) continue;
                            const long long idx = row * N + n;
                            const float v = total[mf][nt][e];
                            if (RESADD) y[idx] = f2bf(round_bf(v) + bf2f(y[idx]));
                            else if (f32_out) yf[idx] = round_bf(v);
                            else y[idx] = f2bf(v);
                        }
                    }
                }
        }
    }
}

#define GEMM_MMA_ENTRY_X(NAME, NT, MF, U, SPLIT_WARPS, GLU, XS)                                \
    extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32) NAME(GEMM_PARAMS)             \
    {                                                                                          \
        pdl_begin();                                                                           \
        gemm_mma_body<NT, MF, U, SPLIT_WARPS, GLU, false, false, XS>(rows_of(counts, source), x, K, w, N, \
                                                                     y, yf, f32_out);          \
    }
#define GEMM_MMA_ENTRY(NAME, NT, MF, U, SPLIT_WARPS, GLU) GEMM_MMA_ENTRY_X(NAME, NT, MF, U, SPLIT_WARPS, GLU, false)
#define GEMM_MMA_FOLDED_ENTRY(NAME, NT, GLU, NORM, RESADD)                                       \
    extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32) NAME(GEMM_PARAMS,                \
                                                                       const bf16_t* __restrict__ norm_w, float eps) \
    {                                                                                            \
        pdl_begin();                                                                             \
        gemm_mma_body<NT, 1, 2, true, GLU, NORM, RESADD>(rows_of(counts, source), x, K, w, N, y, yf, \
                                                         f32_out, norm_w, eps);                  \
    }
// The one-row folded products of the tensor plan (KernelPlan::folds_norms).
GEMM_MMA_FOLDED_ENTRY(qwen_gemm_mma_norm_s_1_1, 1, false, true, false)
GEMM_MMA_FOLDED_ENTRY(qwen_gemm_mma_norm_glu_1, 2, true, true, false)
// The one-row products of the tensor plan's prefetching launches (Launches::prefetch): 16
// columns and 4 chunks in flight per warp (a K = 1,024 slice whole), the normalising ones
// requesting their weights before the row's sum of squares (PF).
#define GEMM_MMA_FOLDED_PF_ENTRY(NAME, NT, GLU)                                                  \
    extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32) NAME(GEMM_PARAMS,                \
                                                                       const bf16_t* __restrict__ norm_w, float eps) \
    {                                                                                            \
        pdl_begin();                                                                             \
        gemm_mma_body<NT, 1, 4, true, GLU, true, false, false, true>(rows_of(counts, source), x, K, w, N, y, \
                                                                     yf, f32_out, norm_w, eps);  \
    }
GEMM_MMA_FOLDED_PF_ENTRY(qwen_gemm_mma_norm_p_2_1, 2, false)
extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32) qwen_gemm_mma_resadd_s_1_1_4(GEMM_PARAMS)
{
    pdl_begin();
    gemm_mma_body<1, 1, 4, true, false, false, true>(rows_of(counts, source), x, K, w, N, y, yf, f32_out);
}
// The tensor plan with Launches::pdl (launched with programmatic stream serialization): a
// one-row product may start while the kernels before it run. Before its wait it requests
// into L2 every weight line of its block's first tile (the only one at one row: tile =
// blockIdx.x, row group 0; the same rows the body reads, clamped as there); weights are
// never written, so the fetch overlaps the kernel before it. Nothing else is read before
// pdl_wait (counts, x and y come after). Launched without the attribute the wait returns at
// once. Same body, same sums: the bits of the entry without _pdl.
template <int NT, bool GLU>
__device__ __forceinline__ void mma_pdl_l2_prologue(const bf16_t* __restrict__ w, int K, int N) {
    pdl_launch_dependents();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const int cols = GLU ? N / 2 : N;
    const int n0 = blockIdx.x * (GLU ? 8 : NT * 8);
    if (n0 < cols) {
        constexpr int WROWS = GLU ? 16 : NT * 8;
        const int lines = (K * 2 + 127) / 128;  // per weight row
        for (int i = threadIdx.x; i < WROWS * lines; i += blockDim.x) {
            const int r = i / lines, line = i - r * lines;
            int n;
            if (GLU) {
                const int pair = n0 + (r & 7) < cols ? n0 + (r & 7) : cols - 1;
                n = r < 8 ? pair : cols + pair;
            } else {
                n = n0 + r < N ? n0 + r : N - 1;
            }
            asm volatile("prefetch.global.L2 [%0];" ::"l"((const char*)(w + (long long)n * K) + (long long)line * 128));
        }
    }
#endif
    pdl_wait();
}
#define GEMM_MMA_FOLDED_PDL_ENTRY(NAME, NT, U, GLU, PF)                                           \
    extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32) NAME(GEMM_PARAMS,                \
                                                                       const bf16_t* __restrict__ norm_w, float eps) \
    {                                                                                            \
        mma_pdl_l2_prologue<NT, GLU>(w, K, N);                                                   \
        gemm_mma_body<NT, 1, U, true, GLU, true, false, false, PF>(rows_of(counts, source), x, K, w, N, y, \
                                                                   yf, f32_out, norm_w, eps);    \
    }
GEMM_MMA_FOLDED_PDL_ENTRY(qwen_gemm_mma_norm_p_2_1_pdl, 2, 4, false, true)
GEMM_MMA_FOLDED_PDL_ENTRY(qwen_gemm_mma_norm_glu_1_pdl, 2, 2, true, false)
extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32) qwen_gemm_mma_resadd_s_1_1_4_pdl(GEMM_PARAMS)
{
    mma_pdl_l2_prologue<1, false>(w, K, N);
    gemm_mma_body<1, 1, 4, true, false, false, true>(rows_of(counts, source), x, K, w, N, y, yf, f32_out);
}
// RESADD takes no norm: the plain GEMM parameters (gpu.rs passes nine arguments).
extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32) qwen_gemm_mma_resadd_s_1_1(GEMM_PARAMS)
{
    pdl_begin();
    gemm_mma_body<1, 1, 2, true, false, false, true>(rows_of(counts, source), x, K, w, N, y, yf, f32_out);
}
// From 17 rows (KernelPlan::folds_norms): o_proj / down_proj add into the residual stream,
// qkv / gate_up normalise their staged x rows (XS + NORM).
extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32) qwen_gemm_mma_resadd_s_2_1(GEMM_PARAMS)
{
    pdl_begin();
    gemm_mma_body<2, 1, 2, true, false, false, true>(rows_of(counts, source), x, K, w, N, y, yf, f32_out);
}
#define GEMM_MMA_XS_NORM_ENTRY(NAME, MF, GLU)                                                    \
    extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32) NAME(GEMM_PARAMS,                \
                                                                       const bf16_t* __restrict__ norm_w, float eps) \
    {                                                                                            \
        pdl_begin();                                                                             \
        gemm_mma_body<2, MF, 4, true, GLU, true, false, true>(rows_of(counts, source), x, K, w, N, y, yf, \
                                                              f32_out, norm_w, eps);             \
    }
GEMM_MMA_XS_NORM_ENTRY(qwen_gemm_mma_xs_norm_2_2, 2, false)
GEMM_MMA_XS_NORM_ENTRY(qwen_gemm_mma_xs_norm_2_4, 4, false)
GEMM_MMA_XS_NORM_ENTRY(qwen_gemm_mma_xs_norm_glu_2, 2, true)
GEMM_MMA_XS_NORM_ENTRY(qwen_gemm_mma_xs_norm_glu_4, 4, true)
// qwen_gemm_mma_s_NT_MF: slices across the block's warps; qwen_gemm_mma_w_NT_MF: a warp per tile.
GEMM_MMA_ENTRY(qwen_gemm_mma_s_1_1, 1, 1, 4, true, false)
GEMM_MMA_ENTRY(qwen_gemm_mma_s_2_1, 2, 1, 2, true, false)
GEMM_MMA_ENTRY(qwen_gemm_mma_s_2_1_4, 2, 1, 4, true, false)
GEMM_MMA_ENTRY(qwen_gemm_mma_s_1_4, 1, 4, 2, true, false)
GEMM_MMA_ENTRY(qwen_gemm_mma_s_2_4, 2, 4, 1, true, false)
GEMM_MMA_ENTRY(qwen_gemm_mma_s_1_2, 1, 2, 2, true, false)
GEMM_MMA_ENTRY(qwen_gemm_mma_w_1_1, 1, 1, 4, false, false)
GEMM_MMA_ENTRY(qwen_gemm_mma_w_1_2, 1, 2, 4, false, false)
GEMM_MMA_ENTRY(qwen_gemm_mma_w_1_4, 1, 4, 2, false, false)
GEMM_MMA_ENTRY(qwen_gemm_mma_w_2_4, 2, 4, 2, false, false)
GEMM_MMA_ENTRY(qwen_gemm_mma_w_2_2, 2, 2, 2, false, false)
GEMM_MMA_ENTRY(qwen_gemm_mma_s_glu_1, 2, 1, 2, true, true)
// qwen_gemm_mma_wr_NT_MF[_U] (a warp per tile) and qwen_gemm_mma_sr_NT_MF (K split over the
// block's warps): the row tiles of a column tile on neighbouring warps / blocks (ROWS_FAST
// above; candidates from 17 rows, the LM head first).
#define GEMM_MMA_R_ENTRY(NAME, NT, MF, U, SPLIT_WARPS)                                         \
    extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32) NAME(GEMM_PARAMS)             \
    {                                                                                          \
        pdl_begin();                                                                           \
        gemm_mma_body<NT, MF, U, SPLIT_WARPS, false, false, false, false, false, true>(rows_of(counts, source), x, \
                                                                                      K, w, N, y, yf, f32_out); \
    }
GEMM_MMA_R_ENTRY(qwen_gemm_mma_wr_2_2, 2, 2, 2, false)
GEMM_MMA_R_ENTRY(qwen_gemm_mma_wr_2_2_4, 2, 2, 4, false)
GEMM_MMA_R_ENTRY(qwen_gemm_mma_wr_2_1_4, 2, 1, 4, false)
GEMM_MMA_R_ENTRY(qwen_gemm_mma_sr_2_1, 2, 1, 2, true)
// qwen_gemm_mma_xs_NT_MF: x staged (XS above); launched with its dynamic shared memory.
#define GEMM_MMA_XS_ENTRY(NAME, NT, MF, U, GLU) GEMM_MMA_ENTRY_X(NAME, NT, MF, U, true, GLU, true)
GEMM_MMA_XS_ENTRY(qwen_gemm_mma_xs_2_2, 2, 2, 4, false)
GEMM_MMA_XS_ENTRY(qwen_gemm_mma_xs_2_4, 2, 4, 4, false)

