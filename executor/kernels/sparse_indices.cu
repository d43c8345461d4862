// Sink + heavy-hitter + window sparse indices and weights in one kernel, seed 003 (the
// PQCache indexer of skylight-org/sparse-attention-hub,
// sparse_attention/efficient_attention/implementations/pqcache/workspace/iter-*/optimized_indexer.py),
// as the simulator models it (sim/src/builders/sparse.rs):
//
//   sparse_list[b][h] = [0, sink') ++ (heavy[b][h] + init_offset) ++ [sk - window', sk)
//   sparse_len[b][h]  = sink' + heavy_size + window'
//   weight_list[b][h][j] = 1.0 if j is listed, else 0.0
//
// sparse_build (correct): sink' = min(sink, sk), window' = min(window, sk) (iter-9's clamp).
//   Race-free by ownership: the grid is (case, row (b, h), chunk of hdr[14] slots); each
//   block owns one chunk of one row's weights and of its list. It first marks the heavy
//   indices that fall in its chunk in a shared-memory bitmap (atomicOr on 32-bit integers:
//   OR is commutative and idempotent, so the bitmap does not depend on thread order), then
//   every weight slot is written exactly once, by the one thread that owns it:
//   1.0 if in the sink, in the window or marked, else 0.0. Duplicate indices (overlapping
//   regions, repeated heavy hitters) mark the same bit; no float is written twice and no
//   float atomics are used. List slots are written once each, by their owner, before the
//   barrier: sink and window slots straight away, heavy slots by the marking pass's thread
//   that holds the entry (heavy[m] + init_offset, one load for both), so the writes after
//   the barrier are the weights only.
// sparse_build_fused_unclamped (known bad): iter-11's Triton kernel as seed 003 writes it,
//   one block per (b, h), launched with the raw sink / window sizes: it stores the list, then
//   scatters 1.0 at every listed index without bounds (the weights were zeroed before, as
//   `torch.zeros`: a memset node in the same graph). When window > sk the window starts below
//   0, when sink > sk the sink reaches past the row: the stores land in neighbouring rows or
//   outside the tensor (the host lays out guard zones so this is observable, not fatal).
//
// Batched layout: meta[0] = cases, meta[1] = work items (blocks of the correct kernel; the
// unclamped kernel uses rows). hdr[c * SP_HDR + k]:
//   0 b  1 h  2 sk  3 sink  4 window  5 heavy_size  6 init_offset  7 list_len (this variant's)
//   8 heavy_off  9 list_off  10 len_off  11 weight_off (row 0 of the case)  12 blocks_per_row
//   13 work_off (first work item: block for sparse_build, row for the unclamped kernel)
//   14 chunk (slots per block of sparse_build, a multiple of 256, at most SP_CHUNK)
// The host validates every heavy index + init_offset in [0, sk) (else the reference raises).

#define SP_HDR 16
#define SP_THREADS 256
#define SP_CHUNK 8192
#define SP_BATCH 8

__device__ __forceinline__ int sp_case_of(const int* hdr, int n, int w) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (hdr[mid * SP_HDR + 13] <= w) lo = mid; else hi = mid - 1;
    }
    return lo;
}

__device__ __forceinline__ long long sp_list_value(int off, int sink, int heavy_size, int sk, int window,
                                                   const long long* heavy_row, int init_offset) {
    if (off < sink) return (long long)off;
    if (off < sink + heavy_size) return heavy_row[off - sink] + (long long)init_offset;
    return (long long)(sk - window) + (long long)(off - sink - heavy_size);
}

// One case's header words, loaded from `hdr` or passed by value.
struct SpHdr {
    int w[SP_HDR];
};

struct SpShared {
    unsigned bits[SP_CHUNK / 32];
};

// Work item `item` of a case (row item / blocks_per_row, chunk item % blocks_per_row).
__device__ __forceinline__ void sp_item(const SpHdr& hh, int item, const long long* __restrict__ heavy,
                                        long long* __restrict__ list, int* __restrict__ lens,
                                        float* __restrict__ weights, SpShared& sh)
{
    const int* h = hh.w;
    unsigned* s_bits = sh.bits;
    const int t = threadIdx.x;
    {
        const int H = h[1], sk = h[2], heavy_size = h[5], init_offset = h[6];
        const int sink = min(h[3], sk), window = min(h[4], sk);
        const int L = sink + heavy_size + window;
        const int bpr = h[12];
        const int row = item / bpr, chunk = item - row * bpr;
        const int csize = h[14];
        const int lo = chunk * csize;
        const long long* heavy_row = heavy + h[8] + (long long)row * heavy_size;
        long long* lrow = list + h[9] + (long long)row * L;
        const int lhi = min(lo + csize, L);
        // 1. Mark the heavy indices of this row that fall in [lo, lo + csize). The first
        //    batch of heavy entries is requested before the bitmap's clearing barrier, so its
        //    load latency overlaps that barrier and the sink / window list writes.
        long long hv[SP_BATCH];
#pragma unroll
        for (int k = 0; k < SP_BATCH; ++k) {
            const int m = t + k * SP_THREADS;
            hv[k] = m < heavy_size ? heavy_row[m] : 0ll;
        }
        for (int k = t; k < csize / 32; k += SP_THREADS) s_bits[k] = 0u;
        //    The list's sink and window slots of this chunk (no input read).
        for (int off = lo + t; off < lhi; off += SP_THREADS)
            if (off < sink || off >= sink + heavy_size)
                lrow[off] = sp_list_value(off, sink, heavy_size, sk, window, heavy_row, init_offset);
        if (chunk == 0 && t == 0) lens[h[10] + row] = L;
        __syncthreads();
        //    SP_BATCH loads in flight per thread before its atomics (the loads are the
        //    latency: one L2 round trip per batch instead of one per index). The thread
        //    holding heavy entry m also writes its list slot sink + m when this block owns it
        //    (m in [need_lo, need_hi): slots [lo, min(lo + csize, L))).
        const int need_lo = max(lo - sink, 0), need_hi = min(lhi - sink, heavy_size);
        for (int m0 = t; m0 < heavy_size; m0 += SP_THREADS * SP_BATCH) {
            if (m0 != t) {
#pragma unroll
                for (int k = 0; k < SP_BATCH; ++k) {
                    const int m = m0 + k * SP_THREADS;
                    hv[k] = m < heavy_size ? heavy_row[m] : 0ll;
                }
            }
            long long idx[SP_BATCH];
#pragma unroll
            for (int k = 0; k < SP_BATCH; ++k) {
                const int m = m0 + k * SP_THREADS;
                if (m >= need_lo && m < need_hi) lrow[sink + m] = hv[k] + (long long)init_offset;
                idx[k] = m < heavy_size ? hv[k] + (long long)init_offset - lo : -1ll;
            }
#pragma unroll
            for (int k = 0; k < SP_BATCH; ++k)
                if (idx[k] >= 0 && idx[k] < csize) atomicOr(&s_bits[idx[k] >> 5], 1u << (idx[k] & 31));
        }
        __syncthreads();
        // 2. Weights: every slot of the chunk, one owner each.
        const int hi = min(lo + csize, sk);
        float* wrow = weights + h[11] + (long long)row * sk;
        const int wstart = sk - window;
        int j0 = lo;
        if (hi > lo && ((unsigned long long)(wrow + lo) & 15ull) == 0ull) {
            const int n4 = (hi - lo) >> 2;
            for (int q = t; q < n4; q += SP_THREADS) {
                const int j = lo + 4 * q;
                float v[4];
                for (int e = 0; e < 4; ++e) {
                    const int jj = j + e, b = jj - lo;
                    const bool on = jj < sink || jj >= wstart || ((s_bits[b >> 5] >> (b & 31)) & 1u);
                    v[e] = on ? 1.0f : 0.0f;
                }
                *reinterpret_cast<float4*>(wrow + j) = make_float4(v[0], v[1], v[2], v[3]);
            }
            j0 = lo + 4 * n4;
        }
        for (int j = j0 + t; j < hi; j += SP_THREADS) {
            const int b = j - lo;
            const bool on = j < sink || j >= wstart || ((s_bits[b >> 5] >> (b & 31)) & 1u);
            wrow[j] = on ? 1.0f : 0.0f;
        }
        (void)H;
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(SP_THREADS) sparse_build(
    const int* __restrict__ meta, const int* __restrict__ hdr, const long long* __restrict__ heavy,
    long long* __restrict__ list, int* __restrict__ lens, float* __restrict__ weights)
{
    __shared__ SpShared sh;
    const int ncases = meta[0], nwork = meta[1];
    for (int w = blockIdx.x; w < nwork; w += gridDim.x) {
        const int c = sp_case_of(hdr, ncases, w);
        SpHdr h;
#pragma unroll
        for (int k = 0; k < SP_HDR; ++k) h.w[k] = hdr[c * SP_HDR + k];
        sp_item(h, w - h.w[13], heavy, list, lens, weights, sh);
    }
}

// One case per graph, its header a kernel parameter baked into the graph (one graph per
// shape, as a captured decode step has): block b is work item b. Same items, same values.
extern "C" __global__ void __launch_bounds__(SP_THREADS) sparse_build_fixed(
    const SpHdr h, int nwork, const long long* __restrict__ heavy, long long* __restrict__ list,
    int* __restrict__ lens, float* __restrict__ weights)
{
    __shared__ SpShared sh;
    for (int w = blockIdx.x; w < nwork; w += gridDim.x) sp_item(h, w, heavy, list, lens, weights, sh);
}

extern "C" __global__ void __launch_bounds__(SP_THREADS) sparse_build_fused_unclamped(
    const int* __restrict__ meta, const int* __restrict__ hdr, const long long* __restrict__ heavy,
    long long* __restrict__ list, int* __restrict__ lens, float* __restrict__ weights)
{
    const int t = threadIdx.x;
    const int ncases = meta[0], nrows = meta[1];
    for (int w = blockIdx.x; w < nrows; w += gridDim.x) {
        const int c = sp_case_of(hdr, ncases, w);
        const int* h = hdr + c * SP_HDR;
        const int sk = h[2], sink = h[3], window = h[4], heavy_size = h[5], init_offset = h[6];
        const int L = sink + heavy_size + window;  // raw sizes, as launched in seed 003
        const int row = w - h[13];
        const long long* heavy_row = heavy + h[8] + (long long)row * heavy_size;
        long long* lrow = list + h[9] + (long long)row * L;
        float* wrow = weights + h[11] + (long long)row * sk;
        for (int off = t; off < L; off += SP_THREADS)
            lrow[off] = sp_list_value(off, sink, heavy_size, sk, window, heavy_row, init_offset);
        if (t == 0) lens[h[10] + row] = L;
        __syncthreads();
        // weight_list[b][h][idx] = 1.0 for every listed idx, unchecked (seed 003).
        for (int off = t; off < L; off += SP_THREADS) wrow[lrow[off]] = 1.0f;
        __syncthreads();
    }
}
