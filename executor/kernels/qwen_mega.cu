// The decode megakernel (Launches::mega; host side executor/src/model/mega.rs): every
// decoder layer of a small step (at most MEGA_MAX_ROWS padded rows, the decode and verify
// graphs of few requests) in ONE persistent launch, its blocks all resident at once and
// meeting at a grid barrier between the phases that read what another block wrote:
//
//   qkv (input norm folded) | q/k norm + RoPE + KV write | attention | o_proj (+= residual)
//   | gate_up (post norm folded, SiLU-mul epilogue) | down_proj (+= residual)
//
// Each phase runs the body of the kernel the tensor plan launches for it (qwen.cu:
// gemm_mma_body with the folded norms, qk_norm_rope_kv_body, attention_body), over the
// grid's blocks instead of a launch's: the work items are the same and every sum keeps its
// order, so the bits are the launch-per-op plan's (the `qwen-kernels` GPU tests compare both
// with the CPU twin). What changes is the time between phases: no launch ramp, and before
// a block waits at a barrier it may ask its share of a later product's weights into L2
// (`prefetch`), so the card's memory keeps streaming through the phases that read little
// (RoPE, attention). Compiled in its own module with QWEN_MEGA defined (ACT_RESTRICT
// empty): activations written by one phase are read by other SMs in the next, so none of
// their loads may take the non-coherent path.

// The layer table: per layer MEGA_PTRS device pointers in this order (mega.rs writes it).
#define MEGA_PTRS 10
#define MEGA_INPUT_NORM 0
#define MEGA_QKV 1
#define MEGA_Q_NORM 2
#define MEGA_K_NORM 3
#define MEGA_O 4
#define MEGA_POST_NORM 5
#define MEGA_GATE_UP 6
#define MEGA_DOWN 7
#define MEGA_K_CACHE 8
#define MEGA_V_CACHE 9

// A grid-wide barrier for a launch whose blocks are all resident (the host sizes the grid
// by the occupancy API). bar[0] counts arrivals, bar[1] is the generation: the last block
// to arrive resets the count and then advances the generation (a release), which the others
// wait for with acquire loads. Release and acquire at gpu scope make every write before the
// barrier visible to every read after it, on every SM (an acquire also drops the SM's L1
// lines, which may hold rows another SM has rewritten since). The barrier leaves bar[0] at 0,
// so the next launch (or graph replay) starts clean.
__device__ __forceinline__ void mega_grid_sync(unsigned int* bar) {
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int g, arrived, now;
        asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(g) : "l"(bar + 1) : "memory");
        asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(arrived) : "l"(bar) : "memory");
        if (arrived == gridDim.x - 1) {
            asm volatile("st.relaxed.gpu.global.u32 [%0], 0;" ::"l"(bar) : "memory");
            asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(bar + 1) : "memory");
        } else {
            do {
                asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(bar + 1) : "memory");
            } while (now == g);
        }
    }
    __syncthreads();
}

// Asks this block's 1/gridDim.x share of `elems` bf16 weights into L2 (one
// prefetch.global.L2 per 128-byte line). A hint: it writes nothing.
__device__ __forceinline__ void mega_prefetch(const bf16_t* w, long long elems) {
    const long long bytes = elems * 2;
    const long long per = ((bytes + gridDim.x - 1) / gridDim.x + 127) & ~127LL;
    const long long b0 = per * blockIdx.x;
    const long long b1 = b0 + per < bytes ? b0 + per : bytes;
    for (long long o = b0 + 128LL * threadIdx.x; o < b1; o += 128LL * blockDim.x)
        asm volatile("prefetch.global.L2 [%0];" ::"l"((const char*)w + o));
}

#define MEGA_ARGS                                                                                 \
    const int* __restrict__ counts, const unsigned long long* __restrict__ table, int num_layers, \
        bf16_t* residual, bf16_t* qkv, bf16_t* q, bf16_t* attn, bf16_t* act,                      \
        const long long* __restrict__ positions, const long long* __restrict__ slot_mapping,      \
        const int* __restrict__ cu_seqlens_q, const int* __restrict__ seqused_k,                   \
        const int* __restrict__ block_table, int blocks_per_row, int block_size,                   \
        const bf16_t* __restrict__ rope, int rope_len, int hidden, int inter, int num_heads,       \
        int num_kv_heads, int head_dim, int qk_norm, float eps, long long cache_slots, int prefetch, \
        unsigned int* bar, unsigned int* __restrict__ counters
#define MEGA_PASS                                                                                 \
    counts, table, num_layers, residual, qkv, q, attn, act, positions, slot_mapping, cu_seqlens_q,  \
        seqused_k, block_table, blocks_per_row, block_size, rope, rope_len, hidden, inter, num_heads, \
        num_kv_heads, head_dim, qk_norm, eps, cache_slots, prefetch, bar, counters

__device__ __forceinline__ void mega_layers(MEGA_ARGS) {
    const int rows = counts[C_PADDED_TOKENS];
    const int n_qkv = (num_heads + 2 * num_kv_heads) * head_dim;
    const int k_o = num_heads * head_dim;
    const int n_gu = 2 * inter;
    for (int l = 0; l < num_layers; ++l) {
        const unsigned long long* p = table + (long long)l * MEGA_PTRS;
        const bf16_t* w_qkv = (const bf16_t*)p[MEGA_QKV];
        const bf16_t* w_o = (const bf16_t*)p[MEGA_O];
        const bf16_t* w_gu = (const bf16_t*)p[MEGA_GATE_UP];
        const bf16_t* w_down = (const bf16_t*)p[MEGA_DOWN];
        bf16_t* k_cache = (bf16_t*)p[MEGA_K_CACHE];
        bf16_t* v_cache = (bf16_t*)p[MEGA_V_CACHE];
        // qwen_gemm_mma_norm_p_2_1: qkv = input_norm(residual) W_qkv^T.
        gemm_mma_body<2, 1, 4, true, false, true, false, false, true>(
            rows, residual, hidden, w_qkv, n_qkv, qkv, nullptr, 0, (const bf16_t*)p[MEGA_INPUT_NORM], eps);
        if (prefetch) mega_prefetch(w_o, (long long)hidden * k_o);
        mega_grid_sync(bar);
        // qwen_qk_norm_rope_kv: a warp per (token, head).
        qk_norm_rope_kv_body<MMA_SPLIT>(counts, qkv, positions, slot_mapping, (const bf16_t*)p[MEGA_Q_NORM],
                                        (const bf16_t*)p[MEGA_K_NORM], qk_norm, eps, rope, rope_len, num_heads,
                                        num_kv_heads, head_dim, q, k_cache, v_cache, cache_slots, counters);
        if (prefetch) mega_prefetch(w_gu, (long long)n_gu * hidden);
        mega_grid_sync(bar);
        // qwen_attention_lean's body, two (token, head) items per block.
        attention_body<2, 1, MMA_SPLIT / ATT_WARPS>(counts, q, k_cache, v_cache, cache_slots, cu_seqlens_q,
                                                    seqused_k, block_table, blocks_per_row, block_size, positions,
                                                    num_heads, num_kv_heads, head_dim, attn, counters);
        if (prefetch) mega_prefetch(w_down, (long long)hidden * inter);
        mega_grid_sync(bar);
        // qwen_gemm_mma_resadd_s_1_1_4: residual += attn W_o^T.
        gemm_mma_body<1, 1, 4, true, false, false, true>(rows, attn, k_o, w_o, hidden, residual, nullptr, 0);
        if (prefetch && l + 1 < num_layers)
            mega_prefetch((const bf16_t*)table[(long long)(l + 1) * MEGA_PTRS + MEGA_QKV], (long long)n_qkv * hidden);
        mega_grid_sync(bar);
        // qwen_gemm_mma_norm_glu_1: act = silu(gate) * up of post_norm(residual).
        gemm_mma_body<2, 1, 2, true, true, true, false>(rows, residual, hidden, w_gu, n_gu, act, nullptr, 0,
                                                        (const bf16_t*)p[MEGA_POST_NORM], eps);
        mega_grid_sync(bar);
        // qwen_gemm_mma_resadd_s_1_1_4: residual += act W_down^T.
        gemm_mma_body<1, 1, 4, true, false, false, true>(rows, act, inter, w_down, hidden, residual, nullptr, 0);
        if (l + 1 < num_layers) mega_grid_sync(bar);
    }
}

// One block per SM (every phase's registers available to it) or two (at most 128 registers
// a thread). The host picks the grid from the occupancy of the entry it launches.
extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32, 1) qwen_decode_layers(MEGA_ARGS) {
    mega_layers(MEGA_PASS);
}
extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32, 2) qwen_decode_layers_2(MEGA_ARGS) {
    mega_layers(MEGA_PASS);
}
