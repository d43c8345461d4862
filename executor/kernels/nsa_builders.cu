// NSA (DeepSeek sparse attention) speculative metadata, seeds 001 / 002, as one kernel
// per variant, run inside a replayed CUDA graph on persistent buffers.
//
// Mirrors the target_verify and draft_extend (v1) branches of SGLang's
// `init_forward_metadata_replay_cuda_graph`
// (python/sglang/srt/layers/attention/nsa_backend.py, NativeSparseAttnBackend) as the
// simulator models them (sim/src/builders/cuda_graph.rs `replay`, sim/src/builders/nsa.rs):
//
//   cache_seqlens[i]      = seq_lens[i] + draft            (draft = D for verify, 0 for extend)
//   cu_seqlens_k[1 + i]   = cumsum(cache_seqlens)[i]        (element 0 keeps its value)
//   page_table_1[r, :K]   = req_to_token[rpi[req(r)], :K]   K = min(max(seq_lens) + draft, W)
//   nsa_seqlens_expanded[r] = kv - qo + 1 + local           (one row per query token)
//   nsa_cache_seqlens[r]  = min(expanded[r], topk)          (compute_nsa_seqlens: clamp(max=topk))
//   nsa_cu_seqlens_k[1 + r] = cumsum(nsa_cache_seqlens)[r]
//
// target_verify writes whole buffers (bs*D rows); draft_extend writes only the rows it
// produces (`buf[:n].copy_`) and leaves the tail as it was (capture-time or stale values:
// the host uploads the capture state, the graph never touches the tail).
//
// Variants (separate entry points):
//   nsa_meta_general    rows per request = qo_i (verify: D; extend: accept_length[i], 0 allowed).
//                       Correct for any qo: the per-request prefix sum cu_qo is computed here,
//                       on the device (one thread per request writes that request's rows;
//                       a page-table row finds its request by binary search over cu_qo).
//   nsa_meta_uniform_qo seed 001's quick win, reverted by seed 002: D rows per request,
//                       start kv - D + 1. Exact for target_verify; for draft_extend it writes
//                       bs*D rows of shifted / misaligned lengths, which fit the verify-shaped
//                       capture buffers exactly, so nothing raises: the seed-002 failure.
//   *_fixed_<T>         the same two variants, one case per graph with its header as a kernel
//                       parameter and T threads (SGLang's one graph per captured bs).
// Both variants write the page table by accept_length (draft_extend) or D (verify), as
// upstream does: that part was never vectorized differently.
//
// Int32 cumulative sums wrap like torch.cumsum(dtype=int32) (unsigned arithmetic).
//
// Batched layout: many independent cases per launch (one block per case, grid-stride over
// x; gridDim.y > 1 splits each case's page-table copy over that many blocks).
// meta[0] = number of cases. hdr[c * NSA_HDR + k]:
//   0 mode (0 target_verify, 1 draft_extend)   1 D   2 topk   3 bs (the captured size: live
//   rows followed by padded rows with SGLang's fill values, written by the host)   4 W (page
//   table width = max context length)   5 write_page (0: leave page_table_1 alone)
//   6 req_off (seq_lens / accept_length / req_pool_indices / cache_seqlens)   7 cu_off
//   (cu_seqlens_k, bs + 1 entries)   8 row_off (expanded / nsa_cache, bs*D entries)
//   9 nsa_cu_off (bs*D + 1 entries)   10 pool rows of req_to_token
// page_off[c]: element offset of the case's page table (bs*D rows of W).
// The host validates bs <= NSA_MAX_BS, W <= req_to_token's stride, accept_length >= 0,
// sum(accept_length) <= bs*D (else torch raises in every variant and nothing is launched)
// and req_pool_indices < pool rows.

#define NSA_HDR 16
#define NSA_THREADS 512
#define NSA_MAX_BS 1024

// Inclusive warp scans of three values (unsigned = wrapping int32) and a running max of a
// fourth, the four shuffle chains interleaved.
__device__ __forceinline__ void warp_scan3_max(unsigned v[3], int& m, int lane) {
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        unsigned n[3];
#pragma unroll
        for (int k = 0; k < 3; ++k) n[k] = __shfl_up_sync(0xffffffffu, v[k], off);
        const int nm = __shfl_up_sync(0xffffffffu, m, off);
        if (lane >= off) {
#pragma unroll
            for (int k = 0; k < 3; ++k) v[k] += n[k];
            m = max(m, nm);
        }
    }
}

// Block-wide inclusive scans of three values per thread and an inclusive running max of a
// fourth, in one pass: each warp scans its own (warp_scan3_max), then warp 0 scans the warp
// totals the same way (2 barriers + 1 for the reuse of `s`). `tot` / `*tot_max` receive the
// block's sums and max. `s` holds 4 * THREADS / 32. A one-warp block needs no barrier: the
// totals are lane 31's.
template <int THREADS>
__device__ __forceinline__ void block_scan3_max(unsigned v[3], int& m, unsigned* s, unsigned tot[3], int* tot_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    constexpr int W = THREADS / 32;
    warp_scan3_max(v, m, lane);
    if (W == 1) {
#pragma unroll
        for (int k = 0; k < 3; ++k) tot[k] = __shfl_sync(0xffffffffu, v[k], 31);
        *tot_max = __shfl_sync(0xffffffffu, m, 31);
        return;
    }
    if (lane == 31) {
#pragma unroll
        for (int k = 0; k < 3; ++k) s[k * W + warp] = v[k];
        s[3 * W + warp] = (unsigned)m;
    }
    __syncthreads();
    if (warp == 0) {
        unsigned w[3];
#pragma unroll
        for (int k = 0; k < 3; ++k) w[k] = (lane < W) ? s[k * W + lane] : 0u;
        int wm = (lane < W) ? (int)s[3 * W + lane] : (int)0x80000000;
        warp_scan3_max(w, wm, lane);
        if (lane < W) {
#pragma unroll
            for (int k = 0; k < 3; ++k) s[k * W + lane] = w[k];
            s[3 * W + lane] = (unsigned)wm;
        }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        if (warp > 0) v[k] += s[k * W + warp - 1];
        tot[k] = s[k * W + W - 1];
    }
    *tot_max = (int)s[3 * W + W - 1];
    __syncthreads();
}

// sum over j < q of min(lo + j, topk), as the wrapping int32 sum of the rows' values
// (torch.cumsum(dtype=int32)): exact in 64 bits, then reduced mod 2^32, which equals the
// wrapping sum of the same terms in any order. Valid when lo + j never wraps (lo >= INT_MIN);
// the caller falls back to the row loop otherwise.
__device__ __forceinline__ unsigned clamped_run_sum(long long lo, long long q, long long topk) {
    const long long m = min(max(topk - lo, 0ll), q);  // rows below the clamp
    // Mod 2^64 (unsigned) is enough: only the low 32 bits are kept; m (m - 1) / 2 is exact.
    const unsigned long long sum = (unsigned long long)m * (unsigned long long)lo +
                                   (unsigned long long)(m * (m - 1) / 2) +
                                   (unsigned long long)(q - m) * (unsigned long long)topk;
    return (unsigned)sum;
}

// The largest i in [0, n) with cu[i] <= r (cu non-decreasing, cu[0] = 0 <= r).
__device__ __forceinline__ int request_of_row(const int* cu, int n, int r) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (cu[mid] <= r) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// One case's header words (the layout above), as loaded from `hdr` or passed by value.
struct NsaHdr {
    int w[NSA_HDR];
};

template <bool UNIFORM, int THREADS>
__device__ __forceinline__ void nsa_meta_case(
    const NsaHdr& h, long long page_off,
    const int* __restrict__ seq_lens, const int* __restrict__ accept, const int* __restrict__ rpi,
    const int* __restrict__ r2t, int r2t_stride,
    int* __restrict__ cache_seqlens, int* __restrict__ cu_seqlens_k, int* __restrict__ page_table,
    int* __restrict__ expanded, int* __restrict__ nsa_cache, int* __restrict__ nsa_cu,
    int* s_cu, unsigned* s_scan)
{
    const int t = threadIdx.x;
    // gridDim.y blocks share one case: all compute the prefix sums (cheap, bs <= 1024), the
    // y = 0 block writes every field but the page table, and all split the page-table rows.
    const bool lead = blockIdx.y == 0;
    const int mode = h.w[0], D = h.w[1], topk = h.w[2], bs = h.w[3], W = h.w[4], write_page = h.w[5];
    const int req_off = h.w[6], cu_off = h.w[7], row_off = h.w[8], nsa_cu_off = h.w[9];
    const int draft = (mode == 0) ? D : 0;
    const int rows_cap = bs * D;

    // 1. One thread per request: its row count for the page table and, in the general
    //    variant, for the expanded rows (verify: D; extend: accept_length[i]); its
    //    cache_seqlens; the sum of its rows' clamped lengths (closed form). One scan of the
    //    three gives s_cu (rows), cu_seqlens_k and each request's base in nsa_cu_seqlens_k;
    //    the running max gives max(seq_lens). Then the thread writes its own rows: row
    //    values and prefix sums identical to one thread per row (same int32 wrapping).
    //    uniform-qo: D expanded rows per request at i * D, start kv - D + 1 (seed 001).
    if (t == 0) s_cu[0] = 0;
    unsigned carry[3] = {0u, 0u, 0u};
    int mx = (int)0x80000000;
    for (int base = 0; base < bs; base += THREADS) {
        const int i = base + t;
        int q = 0, kv = 0, qe = 0, m = (int)0x80000000;
        unsigned v[3] = {0u, 0u, 0u}, run = 0u;
        if (i < bs) {
            const int s = seq_lens[req_off + i];
            q = (mode == 0) ? D : accept[req_off + i];
            kv = (int)((unsigned)s + (unsigned)draft);
            qe = UNIFORM ? D : q;
            m = s;
            const long long lo = (long long)kv - qe + 1;
            if (lo >= (long long)(int)0x80000000) {
                run = clamped_run_sum(lo, qe, topk);
            } else {
                for (int j = 0; j < qe; ++j)
                    run += (unsigned)min((int)((unsigned)kv - (unsigned)qe + 1u + (unsigned)j), topk);
            }
            v[0] = (unsigned)q;
            v[1] = (unsigned)kv;
            v[2] = run;
        }
        unsigned tot[3];
        int tmax;
        block_scan3_max<THREADS>(v, m, s_scan, tot, &tmax);
        if (i < bs) {
            s_cu[i + 1] = (int)(carry[0] + v[0]);
            if (lead) {
                cache_seqlens[req_off + i] = kv;
                cu_seqlens_k[cu_off + 1 + i] = (int)(carry[1] + v[1]);
                // 2. This request's expanded rows, their clamp and its prefix sum.
                unsigned acc = carry[2] + v[2] - run;  // nsa_cu before this request's rows
                const int r0 = UNIFORM ? i * D : (int)(carry[0] + v[0]) - q;
                for (int j = 0; j < qe; ++j) {
                    const int r = r0 + j;
                    if (r >= rows_cap) break;
                    const int val = (int)((unsigned)kv - (unsigned)qe + 1u + (unsigned)j);
                    const int c = min(val, topk);
                    acc += (unsigned)c;
                    expanded[row_off + r] = val;
                    nsa_cache[row_off + r] = c;
                    nsa_cu[nsa_cu_off + 1 + r] = (int)acc;
                }
            }
        }
#pragma unroll
        for (int k = 0; k < 3; ++k) carry[k] += tot[k];
        mx = max(mx, tmax);
    }
    const int max_k = (int)((unsigned)mx + (unsigned)draft);
    const int n_page = min((int)carry[0], rows_cap);  // rows the page-table copy writes
    __syncthreads();  // s_cu complete

    // 3. The page-table rows: req_to_token[rpi[req(r)], :K], repeated per query row.
    if (write_page && max_k > 0) {
        const int cols = min(max_k, W);
        // One row per (block, step): the row's request found once, its columns copied by
        // the block's threads (coalesced reads of req_to_token, coalesced writes).
        for (int r = blockIdx.y; r < n_page; r += gridDim.y) {
            const int i = request_of_row(s_cu, bs, r);
            const int* __restrict__ src = r2t + (long long)rpi[req_off + i] * r2t_stride;
            int* __restrict__ dst = page_table + page_off + (long long)r * W;
            int col0 = 0;
            if ((((unsigned long long)src | (unsigned long long)dst) & 15ull) == 0ull) {
                // 16-byte copies, four in flight per thread.
                const int n4 = cols >> 2;
                const int4* __restrict__ s4 = reinterpret_cast<const int4*>(src);
                int4* __restrict__ d4 = reinterpret_cast<int4*>(dst);
#pragma unroll 4
                for (int k = t; k < n4; k += THREADS) d4[k] = s4[k];
                col0 = n4 << 2;
            }
            for (int col = col0 + t; col < cols; col += THREADS) dst[col] = src[col];
        }
    }
    __syncthreads();
}

template <bool UNIFORM>
__device__ __forceinline__ void nsa_meta_cases(
    const int* __restrict__ meta, const int* __restrict__ hdr, const long long* __restrict__ page_off,
    const int* __restrict__ seq_lens, const int* __restrict__ accept, const int* __restrict__ rpi,
    const int* __restrict__ r2t, int r2t_stride,
    int* __restrict__ cache_seqlens, int* __restrict__ cu_seqlens_k, int* __restrict__ page_table,
    int* __restrict__ expanded, int* __restrict__ nsa_cache, int* __restrict__ nsa_cu)
{
    __shared__ int s_cu[NSA_MAX_BS + 1];
    __shared__ unsigned s_scan[4 * (NSA_THREADS / 32)];
    const int n = meta[0];
    for (int c = blockIdx.x; c < n; c += gridDim.x) {
        NsaHdr h;
#pragma unroll
        for (int k = 0; k < NSA_HDR; ++k) h.w[k] = hdr[(long long)c * NSA_HDR + k];
        nsa_meta_case<UNIFORM, NSA_THREADS>(h, page_off[c], seq_lens, accept, rpi, r2t, r2t_stride, cache_seqlens,
                                            cu_seqlens_k, page_table, expanded, nsa_cache, nsa_cu, s_cu, s_scan);
    }
}

#define NSA_ARGS                                                                                          \
    const int *__restrict__ seq_lens, const int *__restrict__ accept, const int *__restrict__ rpi,        \
        const int *__restrict__ r2t, int r2t_stride, int *__restrict__ cache_seqlens,                     \
        int *__restrict__ cu_seqlens_k, int *__restrict__ page_table, int *__restrict__ expanded,         \
        int *__restrict__ nsa_cache, int *__restrict__ nsa_cu
#define NSA_PASS                                                                                          \
    seq_lens, accept, rpi, r2t, r2t_stride, cache_seqlens, cu_seqlens_k, page_table, expanded, nsa_cache, \
        nsa_cu

extern "C" __global__ void __launch_bounds__(NSA_THREADS) nsa_meta_general(
    const int* __restrict__ meta, const int* __restrict__ hdr, const long long* __restrict__ page_off, NSA_ARGS)
{
    nsa_meta_cases<false>(meta, hdr, page_off, NSA_PASS);
}

extern "C" __global__ void __launch_bounds__(NSA_THREADS) nsa_meta_uniform_qo(
    const int* __restrict__ meta, const int* __restrict__ hdr, const long long* __restrict__ page_off, NSA_ARGS)
{
    nsa_meta_cases<true>(meta, hdr, page_off, NSA_PASS);
}

// One case per graph, as SGLang captures one graph per batch size: the header is a kernel
// parameter baked into the captured graph (bs, D, topk, mode and the buffer offsets are
// fixed per capture; only the inputs' contents change between replays), so the dependent
// chain starts at seq_lens instead of meta -> hdr -> seq_lens. Block size THREADS is picked
// per captured bs (the smallest of 32 .. 512 covering it; the arithmetic is the same
// per-request form, so the values are those of the batched entries). gridDim.y splits the
// page-table copy as above.
template <bool UNIFORM, int THREADS>
__device__ __forceinline__ void nsa_meta_fixed(const NsaHdr& h, long long page_off, NSA_ARGS)
{
    __shared__ int s_cu[NSA_MAX_BS + 1];
    __shared__ unsigned s_scan[4 * (THREADS / 32)];
    nsa_meta_case<UNIFORM, THREADS>(h, page_off, NSA_PASS, s_cu, s_scan);
}

#define NSA_FIXED(NAME, UNIFORM, THREADS)                                                   \
    extern "C" __global__ void __launch_bounds__(THREADS) NAME(                              \
        const NsaHdr h, long long page_off, NSA_ARGS)                                        \
    {                                                                                        \
        nsa_meta_fixed<UNIFORM, THREADS>(h, page_off, NSA_PASS);                             \
    }
NSA_FIXED(nsa_meta_general_fixed_32, false, 32)
NSA_FIXED(nsa_meta_general_fixed_64, false, 64)
NSA_FIXED(nsa_meta_general_fixed_128, false, 128)
NSA_FIXED(nsa_meta_general_fixed_256, false, 256)
NSA_FIXED(nsa_meta_general_fixed_512, false, 512)
NSA_FIXED(nsa_meta_uniform_qo_fixed_32, true, 32)
NSA_FIXED(nsa_meta_uniform_qo_fixed_64, true, 64)
NSA_FIXED(nsa_meta_uniform_qo_fixed_128, true, 128)
NSA_FIXED(nsa_meta_uniform_qo_fixed_256, true, 256)
NSA_FIXED(nsa_meta_uniform_qo_fixed_512, true, 512)

// The one-kernel graph-replay floor: a kernel that reads one word and returns.
extern "C" __global__ void builders_empty(const int* __restrict__ meta) {
    if (meta[0] < 0 && threadIdx.x == 0) asm volatile("trap;");
}

// Timing aid: holds the stream for `cycles` SM clock cycles so that the host can queue a
// batch of graph replays (and their events) behind it; the replays then run back to back
// and their events measure device time only, not the host's launch latency.
extern "C" __global__ void builders_spin(long long cycles) {
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
}
