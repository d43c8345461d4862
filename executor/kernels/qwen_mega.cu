// The decode megakernel (Launches::mega; host side executor/src/model/mega.rs): every
// decoder layer of a small step (at most MEGA_MAX_ROWS padded rows, the decode and verify
// graphs of few requests) in ONE persistent launch of one block per SM, the blocks meeting
// at a grid barrier between the phases that read what another block wrote:
//
//   qkv (input norm folded) | q/k norm + RoPE + KV write | attention | o_proj (+= residual)
//   | gate_up (post norm folded, SiLU-mul epilogue) | down_proj (+= residual)
//
// The products read their weights from shared memory, where bulk copies put them one
// product ahead (WEIGHT STAGING below), and their x rows from shared memory too (X
// STAGING), and sum exactly as the tensor plan's split-K body (gemm_mma_body) does; RoPE
// and attention run the per-op kernels' bodies (qk_norm_rope_kv_body / rope_item,
// attention_body) over the grid's blocks, and for pure decode RoPE runs inside the
// attention items (attention_body with ROPE: one phase and barrier fewer). Every sum keeps its order,
// so the bits are the launch-per-op plan's (the `qwen-kernels` GPU tests compare both with
// the CPU twin). What changes is the time: no launch ramps, and the weights stream in while
// the previous phases, the barriers and attention run. (Session 18's first form, the per-op
// bodies reading weights from global memory with optional L2 prefetch, was 1.36-1.65x
// slower than the per-op launches on the H100: device log run 29.) Compiled in its own
// module with QWEN_MEGA defined (ACT_RESTRICT empty): activations written by one phase are
// read by other SMs in the next, so none of their loads may take the non-coherent path.

// Padded rows a launch may have (mega.rs MEGA_MAX_ROWS): region Z holds that many x rows.
#define MEGA_MAX_ROWS 8

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

// Timing probes (mega.rs `Mega`, `gpu bench-qwen --launches ...+mega:PROBE` only): the same
// launch with parts left out, so one device call splits the step's time. Their values are
// NOT the model's (the layers leave the residual stream as the embedding wrote it, or write
// partial sums); nothing but the benchmark runs them.
#define MEGA_FULL 0
#define MEGA_BARRIERS 1  // the grid barriers alone
#define MEGA_STREAM 2    // + the weight copies and their waits
#define MEGA_PRODUCTS 3  // + the products (no RoPE / KV write, no attention)
#define MEGA_COPIES 4    // the weight copies and their waits alone, no barrier: the stream's own rate
#define MEGA_COMPUTE 5   // everything but the weight copies (products read stale shared memory)
// A flag on top of the mode: thread 0 naps (__nanosleep) between its polls of a grid
// barrier, so 132 SMs do not keep one L2 line busy while a phase's few blocks load.
#define MEGA_NAP 8
// A flag on top of the mode: each layer's attention phase runs twice (the same values: the
// second pass rewrites what the first wrote), the timeline stamping the first pass's end and
// the second's parts, so the stamps show what a pass costs with its code and data already
// brought in by the first.
#define MEGA_TWICE 16
// A flag on top of the mode: the weight copies ask L2 to evict their lines first
// (`createpolicy ... L2::evict_first`, the copies' `L2::cache_hint`), so a step's 1.2 GB of
// weights streaming through the 50 MB L2 does not push out the kernel's own code, the KV
// cache and the activations (an instruction fetch that misses L2 waits for HBM). A hint:
// the same bytes land, so the values are the model's.
#define MEGA_EVICT 32
// A flag on top of the mode: the grid barriers' arrival and polls are thread 32's (warp 1)
// instead of thread 0's, which issues the weight copies. Whether a barrier waits for the
// copies its block issued last (run 37: 3.2 us after o_proj, whose phase issues gate_up's
// 12.6 MB, 2.2 after down_proj, against 1.0 after qkv and gate_up), or for the memory
// system. Values unchanged.
#define MEGA_POLL1 64
// A flag on top of the mode: the compact attention tiles stamp inside (attention_body's
// tile_stamps): events 8-11 become lookup + RoPE, the first tile's K rows staged, its V
// rows staged, V sums + merge (mega_timeline.rs relabels them). Values unchanged.
#define MEGA_TILES 128
// A flag on top of the mode: a copy warp. The weight copies are issued by warp 7 (lane 0),
// which takes no share of the x staging, instead of thread 0, which also polls the grid
// barriers and stages x. Run 39 (timeline-poll): the global-memory operation a thread
// issues after its bulk copies waits ~3 us behind them, wherever it is (the barrier's
// arrival, the next x staging). Values unchanged.
#define MEGA_COPYWARP 256
// A flag on top of the mode: in the fused decode phase each warp requests its first tile's
// K rows before the item's RoPE (attention_body's early_k, att_compact_early), all but the
// item's own token's row, which RoPE writes, and asks the tile's V rows into L2. Run 39 (timeline-tiles): the first K rows took
// 2.0 us after RoPE's 2.9. Values unchanged.
#define MEGA_EARLYK 512

// A grid-wide barrier for a launch whose blocks are all resident (the host sizes the grid
// by the occupancy API). bar[0] counts arrivals over the whole launch: at its n-th barrier a
// block adds 1 with release semantics and waits, with acquire loads, until the count
// reaches n * gridDim.x (`target`, thread 0's running total). Each block's releasing add
// continues the chain of read-modify-writes that the waiters' acquire reads the end of, so
// every write before the barrier is visible to every read after it, on every SM (an acquire
// also drops the SM's L1 lines, which may hold rows another SM has rewritten since). One
// round trip to arrive and the polls, where session 18's generation barrier took four
// (device log run 30: 167 of those cost 0.26 ms a step). mega_grid_exit zeroes the words
// for the next launch (or graph replay).
// THE TIMELINE (`gpu bench-qwen --launches ...+mega:timeline`): with `clock` non-null,
// thread 0 of each block stamps MEGA_EVENTS events per layer, each as the pair (%globaltimer
// ns, clock64 cycles) at clock[((block * layers + layer) * MEGA_EVENTS + event) * 2]; mega.rs
// `Timeline` turns them into each phase's time per block and on the grid's critical path.
// A stamp (mega_mark, in qwen.cu: attention_body stamps its own parts) is one
// special-register read and one store by one thread; off, a null test. The event numbers
// are mega_timeline.rs `PHASES`.
#define MEGA_EVENTS 25

// `arrive` is stamped when the whole block reached the barrier, `leave` when it opened
// (-1: not stamped).
// `poller`: the thread that arrives and polls (0, or 32 with MEGA_POLL1); `target` is its
// running total.
__device__ __forceinline__ void mega_grid_sync(unsigned int* bar, unsigned int& target, bool nap, int poller,
                                               unsigned long long* mk, int arrive, int leave) {
    __syncthreads();
    mega_mark(mk, arrive);
    if ((int)threadIdx.x == poller) {
        target += gridDim.x;
        unsigned int now;
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(bar) : "memory");
        while (true) {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(bar) : "memory");
            if (now >= target) break;
            if (nap) __nanosleep(64);
        }
    }
    if (poller != 0) __syncthreads();
    mega_mark(mk, leave);
    __syncthreads();
}

// The barrier between two phases (none in the MEGA_COPIES probe).
__device__ __forceinline__ void mega_phase_sync(unsigned int* bar, unsigned int& target, int mode, bool nap,
                                                int poller, unsigned long long* mk, int arrive, int leave) {
    if (mode != MEGA_COPIES) mega_grid_sync(bar, target, nap, poller, mk, arrive, leave);
}

// After a block's last barrier: bar[1] counts the blocks done; the last one (all others are
// past their last poll of bar[0]) zeroes both words, so they are zero before every launch.
__device__ __forceinline__ void mega_grid_exit(unsigned int* bar) {
    if (threadIdx.x != 0) return;
    unsigned int done;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(done) : "l"(bar + 1) : "memory");
    if (done == gridDim.x - 1) {
        asm volatile("st.relaxed.gpu.global.u32 [%0], 0;" ::"l"(bar) : "memory");
        asm volatile("st.relaxed.gpu.global.u32 [%0], 0;" ::"l"(bar + 1) : "memory");
    }
}

// WEIGHT STAGING. A product's tile is the 8 NT weight rows of its columns (GLU: the 8 gate
// rows and the 8 matching up rows), each row K contiguous bf16, so a tile is one or two
// contiguous runs; a block's tiles of a product (tile = blockIdx.x + i * gridDim.x, as the
// split-K bodies walk them) are copied into shared memory by bulk copies
// (cp.async.bulk, completing on an mbarrier) one product AHEAD: the copies of the next
// product start when the current one starts, so the memory streams weights through the
// barriers, RoPE and attention. Two regions alternate (X: qkv, gate_up; Y: o_proj,
// down_proj), so a copy never lands in a region a phase still reads; the host sizes them.
extern __shared__ __align__(128) unsigned char mega_smem[];

__device__ __forceinline__ unsigned int smem_addr(const void* p) {
    return (unsigned int)__cvta_generic_to_shared(p);
}

// Waits for the phase of `bar` with parity `parity` to complete (the copies it counts landed).
__device__ __forceinline__ void mbar_wait(unsigned long long* bar, unsigned int parity) {
    unsigned int done = 0;
    while (!done) {
        asm volatile(
            "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(smem_addr(bar)), "r"(parity)
            : "memory");
    }
}

// Rows [r0, r1) of w (K each) to dst, counted on bar (thread 0 only); `evict`: with the L2
// cache policy `pol` (MEGA_EVICT).
__device__ __forceinline__ void bulk_rows(bf16_t* dst, const bf16_t* __restrict__ w, long long r0, long long r1, int K,
                                          unsigned long long* bar, bool evict, unsigned long long pol) {
    if (r1 <= r0) return;
    const unsigned int bytes = (unsigned int)((r1 - r0) * K * 2);
    if (evict)
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;"
            ::"r"(smem_addr(dst)), "l"(w + r0 * K), "r"(bytes), "r"(smem_addr(bar)), "l"(pol)
            : "memory");
    else
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                     ::"r"(smem_addr(dst)), "l"(w + r0 * K), "r"(bytes), "r"(smem_addr(bar))
                     : "memory");
}

// Weight rows one tile of a product holds.
template <int NT, bool GLU>
__device__ __forceinline__ constexpr int tile_rows() { return GLU ? 16 : NT * 8; }

// Starts the copies of this block's tiles of product (w, K, N) into `dst` on `bar`: every
// thread first orders its earlier reads of the region before the copies (proxy fence, then
// the block barrier), then thread `issuer` (0, or warp 7's lane 0 with MEGA_COPYWARP)
// announces the bytes and issues one or two copies per tile. Rows past N are not copied (their sums are never stored).
template <int NT, bool GLU>
__device__ __forceinline__ void stage_product(bf16_t* dst, const bf16_t* __restrict__ w, int K, int N,
                                              unsigned long long* bar, int mode, bool evict, int issuer) {
    if (mode == MEGA_BARRIERS || mode == MEGA_COMPUTE) return;
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
    if ((int)threadIdx.x != issuer) return;
    const int cols = GLU ? N / 2 : N;
    const int tile_cols = GLU ? 8 : NT * 8;
    const int tiles = (cols + tile_cols - 1) / tile_cols;
    unsigned int bytes = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const int n0 = tile * tile_cols;
        const int n1 = n0 + tile_cols < cols ? n0 + tile_cols : cols;
        bytes += (unsigned int)((GLU ? 2 : 1) * (n1 - n0) * K * 2);
    }
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
    unsigned long long pol = 0;
    if (evict) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    int i = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++i) {
        const int n0 = tile * tile_cols;
        const int n1 = n0 + tile_cols < cols ? n0 + tile_cols : cols;
        bf16_t* t = dst + (long long)i * tile_rows<NT, GLU>() * K;
        bulk_rows(t, w, n0, n1, K, bar, evict, pol);
        if (GLU) bulk_rows(t + 8LL * K, w, (long long)cols + n0, (long long)cols + n1, K, bar, evict, pol);
    }
}

// 16 bytes global -> shared, asynchronously (`cp.async.cg`: from L2, where the previous
// phase's stores from other SMs are, never from a stale L1 line).
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}

// X STAGING. A product's x rows [0, rows) (K bf16 each) into region Z (`xs`, row stride
// xs_stride(K): rows g and g + 1 of a quarter warp's reads fall in disjoint banks) by
// cp.async, every 16-byte piece in flight at once: one memory round trip where the tiles'
// loop made one per chunk (device log, session 20's timeline: 4-8 us a product). With NORM
// the norm weights come along (`nws`); then warp w takes rows w, w + 8, ...: 1 / rms from
// the staged copy in the norm's order (lane_squares, lanes_inv_rms: fragment_inv_rms's
// sums) and, after the block barrier, every element normalised in place by norm8, as the
// norm kernel stores it. The tiles then read x from shared memory only; the bits are the
// unstaged body's. Its loops stay rolled (`#pragma unroll 1`): a block runs them once a
// product, so their code is fetched every layer and unrolled copies only add to it (the
// instruction-fetch question of the device log, session 21).
// RES (o_proj, down_proj: the products that add into the residual stream): the residual
// values the block's tiles will add to (`y`, N columns; tiles of 8 columns, block b's i-th
// at ys + i * MEGA_MAX_ROWS * 8) come in the same batch, so the epilogue does not load them
// behind the next product's weight copies (device log run 35: about 3 us). Only the tile that
// adds into them writes them, so the values are the ones the epilogue would have loaded.
template <bool NORM, bool RES>
__device__ __forceinline__ void stage_x(int stagers, int rows, const bf16_t* x, int K,
                                        const bf16_t* __restrict__ norm_w, float eps, bf16_t* xs, bf16_t* nws,
                                        float* inv_s, const bf16_t* y, int N, bf16_t* ys) {
    const int S = xs_stride(K);
    const int per_row = K >> 3;
    const int n = rows * per_row;
    // The copies are the first `stagers` threads' (all of them, or all but the copy warp).
    const int first = (int)threadIdx.x < stagers ? (int)threadIdx.x : n + per_row + rows;
#pragma unroll 1
    for (int i = first; i < n; i += stagers) {
        const int r = i / per_row, c = i - r * per_row;
        cp_async16(xs + r * S + 8 * c, x + (long long)r * K + 8 * c);
    }
    if (NORM)
        for (int i = first; i < per_row; i += stagers) cp_async16(nws + 8 * i, norm_w + 8 * i);
    if (RES) {
        const int tiles = (N + 7) >> 3;
        int i = 0;
        for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++i)
            for (int r = first; r < rows; r += stagers)
                cp_async16(ys + (i * MEGA_MAX_ROWS + r) * 8, y + (long long)r * N + tile * 8);
    }
    asm volatile("cp.async.wait_all;" ::: "memory");
    __syncthreads();
    if (!NORM) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll 1
    for (int r = warp; r < rows; r += MMA_SPLIT) {
        const float iv = lanes_inv_rms(lane_squares(xs + r * S, K, lane), K, eps);
        if (lane == 0) inv_s[r] = iv;
    }
    __syncthreads();
#pragma unroll 1
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int r = i / per_row, c = i - r * per_row;
        uint4* v = (uint4*)(xs + r * S + 8 * c);
        *v = norm8(*v, *(const uint4*)(nws + 8 * c), inv_s[r]);
    }
    __syncthreads();
}

// One tile of a product from its staged weight rows `ws` (tile_rows x K) and staged x rows
// `xs` (stride xs_stride(K), normalised already where the product folds a norm): the
// split-K body of gemm_mma_body (SPLIT_WARPS, MF 1). Warp s takes slice s of the
// 32-element chunks, one accumulator from +0 taking mma_chunk per chunk in increasing
// order; the slices' sums meet in `part` and are added in slice order; GLU writes
// SiLU(gate) * up, RESADD adds into y. The same operands in the same order as
// gemm_mma_body: the same bits.
template <int NT, bool GLU, bool RESADD>
__device__ __forceinline__ void staged_tile(int rows, const bf16_t* xs, int K, const bf16_t* ws, int N, int n0,
                                            bf16_t* y, const bf16_t* yres, float (*part)[16][17]) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int chunks = K >> 5;
    const int cols = GLU ? N / 2 : N;
    const int tile_cols = GLU ? 8 : NT * 8;
    const int S = xs_stride(K);
    bool xok[2];
    int xrow[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = g + 8 * h;
        xok[h] = r < rows;
        xrow[h] = (xok[h] ? r : 0) * S + 8 * t;
    }
    float acc[1][NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[0][nt][e] = 0.0f;
    const int c_end = (warp + 1) * chunks / MMA_SPLIT;
    for (int c = warp * chunks / MMA_SPLIT; c < c_end; ++c) {
        uint4 wv[NT], xv[1][2];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) wv[nt] = *(const uint4*)(ws + (long long)(nt * 8 + g) * K + (c << 5) + 8 * t);
#pragma unroll
        for (int h = 0; h < 2; ++h) xv[0][h] = xok[h] ? *(const uint4*)(xs + xrow[h] + (c << 5)) : make_uint4(0u, 0u, 0u, 0u);
        mma_chunk<NT, 1>(acc, wv, xv);
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) part[warp][frag_row(g, e)][nt * 8 + frag_col(t, e)] = acc[0][nt][e];
    __syncthreads();
    for (int i = threadIdx.x; i < 16 * tile_cols; i += MMA_SPLIT * 32) {
        const int r = i / tile_cols, j = i % tile_cols;
        if (r >= rows || n0 + j >= cols) continue;
        float v[2];
#pragma unroll
        for (int nt = 0; nt < (GLU ? 2 : 1); ++nt) {
            v[nt] = split_k_sum(part, r, GLU ? nt * 8 + j : j);
        }
        if (GLU) {
            const float gt = round_bf(v[0]);
            const float up = round_bf(v[1]);
            y[(long long)r * cols + n0 + j] = silu_mul_bf(gt, up);
        } else {
            const long long idx = (long long)r * N + n0 + j;
            if (RESADD) y[idx] = f2bf(round_bf(v[0]) + bf2f(yres[r * 8 + j]));
            else y[idx] = f2bf(v[0]);
        }
    }
    __syncthreads();
}

// A product's x rows staged (stage_x; stamp e_x) where the mode computes products. The
// caller stages x BEFORE it starts the next product's weight copies: behind a stream of
// megabytes of copies the x loads waited 3-4 us a product (device log, run 34).
template <bool NORM, bool RES>
__device__ __forceinline__ void product_x(int mode, int stagers, int rows, const bf16_t* x, int K,
                                          const bf16_t* __restrict__ norm_w,
                                          float eps, bf16_t* xs, bf16_t* nws, float* inv_s, const bf16_t* y, int N,
                                          bf16_t* ys, unsigned long long* mk, int e_x) {
    if (mode == MEGA_FULL || mode == MEGA_PRODUCTS || mode == MEGA_COMPUTE)
        stage_x<NORM, RES>(stagers, rows, x, K, norm_w, eps, xs, nws, inv_s, y, N, ys);
    mega_mark(mk, e_x);
}

// This block's tiles of a product whose x rows are staged (product_x): the weights awaited
// (`bar`'s phase `parity`; stamp e_w), then the tiles.
template <int NT, bool GLU, bool RESADD>
__device__ __forceinline__ void staged_product(int rows, const bf16_t* xs, int K, const bf16_t* ws, int N, bf16_t* y,
                                               const bf16_t* ys, unsigned long long* bar, unsigned int parity,
                                               float (*part)[16][17], int mode, unsigned long long* mk, int e_w) {
    if (mode == MEGA_BARRIERS) return;
    if (mode == MEGA_STREAM || mode == MEGA_COPIES) {
        mbar_wait(bar, parity);
        return;
    }
    if (mode != MEGA_COMPUTE) mbar_wait(bar, parity);
    mega_mark(mk, e_w);
    const int cols = GLU ? N / 2 : N;
    const int tile_cols = GLU ? 8 : NT * 8;
    const int tiles = (cols + tile_cols - 1) / tile_cols;
    int i = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++i)
        staged_tile<NT, GLU, RESADD>(rows, xs, K, ws + (long long)i * tile_rows<NT, GLU>() * K, N, tile * tile_cols,
                                     y, ys + (long long)i * MEGA_MAX_ROWS * 8, part);
}

#define MEGA_ARGS                                                                                 \
    const int* __restrict__ counts, const unsigned long long* __restrict__ table, int num_layers, \
        bf16_t* residual, bf16_t* qkv, bf16_t* q, bf16_t* attn, bf16_t* act,                      \
        const long long* __restrict__ positions, const long long* __restrict__ slot_mapping,      \
        const int* __restrict__ cu_seqlens_q, const int* __restrict__ seqused_k,                   \
        const int* __restrict__ block_table, int blocks_per_row, int block_size,                   \
        const bf16_t* __restrict__ rope, int rope_len, int hidden, int inter, int num_heads,       \
        int num_kv_heads, int head_dim, int qk_norm, float eps, long long cache_slots, int region_x, int region_z, \
        unsigned int* bar, unsigned int* __restrict__ counters, int mode, unsigned long long* clock

// Every layer; `region_x`: bytes of shared memory region X (Y follows it), `region_z`: where
// region Z (x rows, then norm weights) starts; `mode` MEGA_FULL (or a timing probe above).
// ATT_SPLIT: the attention body's SPLIT (2: half a tile's K and V rows at a time, as
// qwen_attention_lean; 1: all of them at once, as qwen_attention, more registers).
template <int ATT_SPLIT, bool COMPACT = false>
__device__ __forceinline__ void decode_layers(MEGA_ARGS) {
    __shared__ float part[MMA_SPLIT][16][17];
    __shared__ __align__(8) unsigned long long mbar[2];
    __shared__ float inv_s[MEGA_MAX_ROWS];
    bf16_t* region[2] = {(bf16_t*)mega_smem, (bf16_t*)(mega_smem + region_x)};
    bf16_t* xs = (bf16_t*)(mega_smem + region_z);
    unsigned int parity[2] = {0u, 0u};
    unsigned int target = 0u;  // the poller: arrivals the next grid barrier waits for
    const bool nap = (mode & MEGA_NAP) != 0;
    const int passes = (mode & MEGA_TWICE) != 0 ? 2 : 1;
    const bool evict = (mode & MEGA_EVICT) != 0;
    const int poller = (mode & MEGA_POLL1) != 0 ? 32 : 0;
    const bool tile_stamps = (mode & MEGA_TILES) != 0;
    const bool copy_warp = (mode & MEGA_COPYWARP) != 0;
    const int issuer = copy_warp ? (MMA_SPLIT - 1) * 32 : 0;
    const int stagers = copy_warp ? (MMA_SPLIT - 1) * 32 : (int)blockDim.x;
    const bool early_k = (mode & MEGA_EARLYK) != 0;
    mode &= ~(MEGA_NAP | MEGA_TWICE | MEGA_EVICT | MEGA_POLL1 | MEGA_TILES | MEGA_COPYWARP | MEGA_EARLYK);
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(&mbar[0])) : "memory");
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(&mbar[1])) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (num_layers <= 0) return;
    const int rows = counts[C_PADDED_TOKENS];
    if (rows > MEGA_MAX_ROWS) {
        // The host never launches more (Mega::applies); Z holds MEGA_MAX_ROWS rows.
        if (blockIdx.x == 0 && threadIdx.x == 0) atomicAdd(&counters[CTR_OUT_OF_RANGE], 1u);
        return;
    }
    // Region Z: MEGA_MAX_ROWS x rows at the widest padded stride, then the norm weights (mega.rs
    // `regions`).
    int s_max = xs_stride(hidden) > xs_stride(inter) ? xs_stride(hidden) : xs_stride(inter);
    if (xs_stride(num_heads * head_dim) > s_max) s_max = xs_stride(num_heads * head_dim);
    bf16_t* nws = xs + MEGA_MAX_ROWS * s_max;
    bf16_t* ys = nws + hidden;  // the residual slices of RESADD products (stage_x RES)
    // Pure decode (request i's tokens are [i, i + 1): every request one query token), with a
    // GQA group of 2 and a head the RoPE lanes hold in registers: RoPE/KV runs inside the
    // attention items (attention_body with ROPE), one phase and one grid barrier fewer. The
    // same test on every block, so every block meets the same barriers.
    const int real = counts[C_META_TOKENS];
    const int num_reqs = counts[C_NUM_REQS];
    const bool fuse_shape =
        num_kv_heads > 0 && num_heads == 2 * num_kv_heads && (head_dim == 64 || head_dim == 128 || head_dim == 256);
    const bool fused = __syncthreads_and(
        fuse_shape && num_reqs > 0 && (threadIdx.x > num_reqs || cu_seqlens_q[threadIdx.x] == (int)threadIdx.x));
    const int n_qkv = (num_heads + 2 * num_kv_heads) * head_dim;
    const int k_o = num_heads * head_dim;
    const int n_gu = 2 * inter;
    const unsigned long long* p0 = table;
    stage_product<2, false>(region[0], (const bf16_t*)p0[MEGA_QKV], hidden, n_qkv, &mbar[0], mode, evict, issuer);
    for (int l = 0; l < num_layers; ++l) {
        const unsigned long long* p = table + (long long)l * MEGA_PTRS;
        bf16_t* k_cache = (bf16_t*)p[MEGA_K_CACHE];
        bf16_t* v_cache = (bf16_t*)p[MEGA_V_CACHE];
        // This block's stamps of layer l (null: no timeline); the event numbers are mega.rs
        // `TIMELINE_EVENTS`.
        unsigned long long* mk =
            clock != nullptr ? clock + ((long long)blockIdx.x * num_layers + l) * (2 * MEGA_EVENTS) : nullptr;
        mega_mark(mk, 0);
        // qkv = input_norm(residual) W_qkv^T from X; o_proj's weights start into Y.
        product_x<true, false>(mode, stagers, rows, residual, hidden, (const bf16_t*)p[MEGA_INPUT_NORM], eps, xs, nws, inv_s,
                               nullptr, 0, ys, mk, 1);
        stage_product<1, false>(region[1], (const bf16_t*)p[MEGA_O], k_o, hidden, &mbar[1], mode, evict, issuer);
        staged_product<2, false, false>(rows, xs, hidden, region[0], n_qkv, qkv, ys, &mbar[0], parity[0], part, mode, mk,
                                        2);
        parity[0] ^= 1u;
        mega_phase_sync(bar, target, mode, nap, poller, mk, 3, 4);
        const bool work = mode == MEGA_FULL || mode == MEGA_COMPUTE;
        if (!fused) {
            if (work)
                qk_norm_rope_kv_body<MMA_SPLIT>(counts, qkv, positions, slot_mapping, (const bf16_t*)p[MEGA_Q_NORM],
                                                (const bf16_t*)p[MEGA_K_NORM], qk_norm, eps, rope, rope_len, num_heads,
                                                num_kv_heads, head_dim, q, k_cache, v_cache, cache_slots, counters);
            mega_phase_sync(bar, target, mode, nap, poller, mk, 5, 6);
        } else {
            // Pure decode: RoPE/KV inside the attention items, no barrier between (stamps 5
            // and 6 at once).
            mega_mark(mk, 5);
            mega_mark(mk, 6);
        }
        // One pass, or two (MEGA_TWICE). Stamp 7 ends the first of two (with one, it is
        // stamp 6 again); stamps 8-11 are the last pass's parts of thread 0's items, stamped
        // first at the pass's start for a block without items.
        for (int pass = 0; pass < passes; ++pass) {
            const bool last = pass + 1 == passes;
            if (pass > 0) __syncthreads();
            if (last)
                for (int e = 7; e <= 11; ++e) mega_mark(mk, e);
            unsigned long long* amk = last ? mk : nullptr;
            if (!work) continue;
            if (fused)
                attention_body<ATT_SPLIT, 2, MMA_SPLIT / ATT_WARPS, true, true, COMPACT>(
                    counts, q, k_cache, v_cache, cache_slots, cu_seqlens_q, seqused_k, block_table, blocks_per_row,
                    block_size, positions, num_heads, num_kv_heads, head_dim, attn, counters,
                    RopeArgs{qkv, slot_mapping, (const bf16_t*)p[MEGA_Q_NORM], (const bf16_t*)p[MEGA_K_NORM], qk_norm,
                             eps, rope, rope_len, real, q},
                    (float*)xs, amk, 8, mega_smem, tile_stamps, early_k);
            else
                attention_body<ATT_SPLIT, 1, MMA_SPLIT / ATT_WARPS, false, true, COMPACT>(
                    counts, q, k_cache, v_cache, cache_slots, cu_seqlens_q, seqused_k, block_table, blocks_per_row,
                    block_size, positions, num_heads, num_kv_heads, head_dim, attn, counters, RopeArgs{}, (float*)xs,
                    amk, 8, mega_smem);
        }
        mega_phase_sync(bar, target, mode, nap, poller, mk, 12, 13);
        // residual += attn W_o^T from Y; gate_up's weights start into X.
        product_x<false, true>(mode, stagers, rows, attn, k_o, nullptr, 0.0f, xs, nws, inv_s, residual, hidden, ys, mk, 14);
        stage_product<2, true>(region[0], (const bf16_t*)p[MEGA_GATE_UP], hidden, n_gu, &mbar[0], mode, evict, issuer);
        staged_product<1, false, true>(rows, xs, k_o, region[1], hidden, residual, ys, &mbar[1], parity[1], part, mode,
                                       mk, 15);
        parity[1] ^= 1u;
        mega_phase_sync(bar, target, mode, nap, poller, mk, 16, 17);
        // act = silu(gate) * up of post_norm(residual) from X; down_proj's weights into Y.
        product_x<true, false>(mode, stagers, rows, residual, hidden, (const bf16_t*)p[MEGA_POST_NORM], eps, xs, nws, inv_s,
                               nullptr, 0, ys, mk, 18);
        stage_product<1, false>(region[1], (const bf16_t*)p[MEGA_DOWN], inter, hidden, &mbar[1], mode, evict, issuer);
        staged_product<2, true, false>(rows, xs, hidden, region[0], n_gu, act, ys, &mbar[0], parity[0], part, mode, mk,
                                       19);
        parity[0] ^= 1u;
        mega_phase_sync(bar, target, mode, nap, poller, mk, 20, 21);
        // residual += act W_down^T from Y; the next layer's qkv weights into X.
        product_x<false, true>(mode, stagers, rows, act, inter, nullptr, 0.0f, xs, nws, inv_s, residual, hidden, ys, mk, 22);
        if (l + 1 < num_layers)
            stage_product<2, false>(region[0], (const bf16_t*)table[(long long)(l + 1) * MEGA_PTRS + MEGA_QKV], hidden,
                                    n_qkv, &mbar[0], mode, evict, issuer);
        staged_product<1, false, true>(rows, xs, inter, region[1], hidden, residual, ys, &mbar[1], parity[1], part,
                                       mode, mk, 23);
        parity[1] ^= 1u;
        // The layer's end: the block's last tile done (the next layer's stamp 0 is the
        // barrier opening).
        if (l + 1 < num_layers) mega_phase_sync(bar, target, mode, nap, poller, mk, 24, -1);
        else if (clock != nullptr) {
            __syncthreads();
            mega_mark(mk, 24);
        }
    }
    mega_grid_exit(bar);
}

#define MEGA_PASS                                                                                   \
    counts, table, num_layers, residual, qkv, q, attn, act, positions, slot_mapping, cu_seqlens_q, \
        seqused_k, block_table, blocks_per_row, block_size, rope, rope_len, hidden, inter, num_heads, \
        num_kv_heads, head_dim, qk_norm, eps, cache_slots, region_x, region_z, bar, counters, mode, clock
extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32, 1) qwen_decode_layers(MEGA_ARGS) {
    decode_layers<2>(MEGA_PASS);
}
// Launches::whole_tiles: attention with every K and V row of a tile in flight at once.
extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32, 1) qwen_decode_layers_whole(MEGA_ARGS) {
    decode_layers<1>(MEGA_PASS);
}
// Launches::mega Compact: attention's K and V rows staged in region X (free between qkv's
// tiles and gate_up's copies; the host sizes it for ATT_COMPACT_WARP_BYTES a warp) and
// summed by loops (att_tiles_compact): fewer instructions a layer to fetch, the same values.
extern "C" __global__ void __launch_bounds__(MMA_SPLIT * 32, 1) qwen_decode_layers_compact(MEGA_ARGS) {
    decode_layers<2, true>(MEGA_PASS);
}
