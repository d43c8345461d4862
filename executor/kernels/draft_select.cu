// Per-request variable draft selection, seed 000 (TileSpec's ragged drafting; the pattern of
// tile_spec/test_vectorized_slice.py in the sjchoi1/sglang fork), as the simulator models it
// (sim/src/builders/draft_select.rs): from scores[bs][n_cand] and draft_counts[bs] (0 allowed,
// up to n_cand), request i's top draft_counts[i] candidate indices, best first, packed
// back to back (request i's run starts at sum(draft_counts[:i])).
//
// Order (sim/src/builders/torch.rs `score_order`): larger score first; NaN above every number;
// equal scores (-0.0 == 0.0, NaN vs NaN) keep the lower index first. It is a total order, so
// every candidate j has a unique rank (the number of candidates ordered before it).
//
//   draft_select_topk    segmented top-k: candidate j of request i goes to output slot rank(j)
//                        when rank(j) < draft_counts[i]. Equals the per-request torch.topk loop.
//   draft_select_sorted  the fork's known-bad form: the top-max(draft_counts) set of each row,
//                        sorted by candidate index, and its first draft_counts[i] members (the
//                        lowest indices, not the best scores, when draft_counts[i] < max).
//
// Race-free: one block per (case, request) row; each thread computes the rank of its own
// candidates by reading the row from shared memory; output slots are distinct ranks (or
// distinct sorted positions), so every output element has exactly one writer. No atomics.
//
// *_fixed: one case per graph with its header as a kernel parameter (see ds_fixed).
//
// Batched layout: meta[0] = cases, meta[1] = total rows. hdr[c * DS_HDR + k]:
//   0 bs   1 n_cand   2 req_off (draft_counts)   3 score_off (scores, bs * n_cand)
//   4 out_off (first output slot)   5 row_off (first global row of the case)
// The host validates n_cand <= DS_MAX_CAND and draft_counts[i] <= n_cand (else the
// reference raises DraftCountExceedsCandidates and nothing is launched).

#define DS_HDR 8
#define DS_THREADS 256
#define DS_MAX_CAND 1024

// The order as one unsigned key, larger = ordered first: numbers by value (-0.0 and 0.0
// equal), NaN above every number (all NaNs equal). Candidate a is ordered before b iff
// key(a) > key(b), or the keys are equal and a's index is lower.
__device__ __forceinline__ unsigned ds_key(float x) {
    if (x != x) return 0xffffffffu;
    if (x == 0.0f) return 0x80000000u;
    const unsigned b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The case holding global row w: the largest c with row_off[c] <= w (row_off[0] = 0 <= w,
// offsets non-decreasing). A 32-way search by each warp: every round its lanes probe 32
// evenly spaced cases of [lo + 1, hi] at once and a ballot keeps the last probe at or
// below w, so a batch of 4096 cases takes 3 dependent loads instead of a binary search's 12
// (the agreement runs are bound by this latency, one search per row). Called by whole
// warps in uniform control flow.
__device__ __forceinline__ int ds_case_of(const int* hdr, int n, int w) {
    const int lane = threadIdx.x & 31;
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int span = hi - lo;
        const int p = lo + 1 + (int)(((long long)lane * span) >> 5);
        const unsigned m = __ballot_sync(0xffffffffu, hdr[p * DS_HDR + 5] <= w);
        if (m == 0u) {
            hi = lo;
        } else {
            const int j = 31 - __clz(m);
            const int next = j == 31 ? hi + 1 : lo + 1 + (int)(((long long)(j + 1) * span) >> 5);
            lo = lo + 1 + (int)(((long long)j * span) >> 5);
            hi = next - 1;
        }
    }
    return lo;
}

// Block-wide sum and max of (v, m) over DS_THREADS threads; every thread gets both.
__device__ __forceinline__ void ds_block_sum_max(int& v, int& m, int* s_sum, int* s_max) {
    const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
        m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
    }
    if (lane == 0) { s_sum[warp] = v; s_max[warp] = m; }
    __syncthreads();
    v = 0; m = 0;
    for (int k = 0; k < DS_THREADS / 32; ++k) { v += s_sum[k]; m = max(m, s_max[k]); }
}

// One case's header words, loaded from `hdr` or passed by value.
struct DsHdr {
    int w[DS_HDR];
};

struct DsShared {
    unsigned key[DS_MAX_CAND];
    int rank[DS_MAX_CAND];
    int sum[DS_THREADS / 32];
    int max[DS_THREADS / 32];
};

// Row i of a case. The scores are loaded first (independent of the offsets), the output
// offset (sum of the earlier counts) and max count come from one block reduction, then each
// candidate's rank is counted by G threads (G = the largest power of two <= DS_THREADS / n,
// at most 32, candidates j = t / G, comparisons split k = t % G (mod G)) and summed over
// the G lanes. Ranks are exact counts, so the split does not change them.
template <bool SORTED>
__device__ __forceinline__ void ds_row(const DsHdr& h, int i, const int* __restrict__ counts,
                                       const float* __restrict__ scores, long long* __restrict__ out,
                                       DsShared& sh)
{
    const int t = threadIdx.x;
    const int bs = h.w[0], n = h.w[1], req_off = h.w[2], score_off = h.w[3], out_off = h.w[4];
    const float* row = scores + score_off + (long long)i * n;
    for (int j = t; j < n; j += DS_THREADS) sh.key[j] = ds_key(row[j]);
    int sum = 0, mx = 0;
    for (int k = t; k < bs; k += DS_THREADS) {
        const int v = counts[req_off + k];
        if (k < i) sum += v;
        mx = max(mx, v);
    }
    ds_block_sum_max(sum, mx, sh.sum, sh.max);  // (its barrier also publishes the keys)
    const int off = out_off + sum;
    const int max_c = mx;
    const int ci = counts[req_off + i];
    if (ci > 0) {  // uniform across the block
        int g = 1;
        while (g < 32 && 2 * g * n <= DS_THREADS) g *= 2;
        const int part = t & (g - 1);
        for (int j0 = t / g; j0 < (n + DS_THREADS / g - 1) / (DS_THREADS / g) * (DS_THREADS / g); j0 += DS_THREADS / g) {
            const int j = j0 < n ? j0 : n - 1;
            const unsigned kj = sh.key[j];
            int rank = 0;
            // Unrolled so that 8 independent shared-memory loads are in flight (the
            // loop is bound by their latency, not by the compares).
#pragma unroll 8
            for (int k = part; k < n; k += g) {
                const unsigned kk = sh.key[k];
                rank += (kk > kj || (kk == kj && k < j)) ? 1 : 0;
            }
            for (int o = 1; o < g; o <<= 1) rank += __shfl_xor_sync(0xffffffffu, rank, o);
            if (part == 0 && j0 < n) {
                if (SORTED) sh.rank[j] = rank;
                else if (rank < ci) out[off + rank] = (long long)j;
            }
        }
        if (SORTED) {
            __syncthreads();
            for (int j = t; j < n; j += DS_THREADS) {
                if (sh.rank[j] < max_c) {
                    int pos = 0;
                    for (int k = 0; k < j; ++k) pos += (sh.rank[k] < max_c) ? 1 : 0;
                    if (pos < ci) out[off + pos] = (long long)j;
                }
            }
        }
    }
    __syncthreads();
}

// The batched entries: every row of every case, the case found per row (ds_case_of).
template <bool SORTED>
__device__ void ds_rows(const int* __restrict__ meta, const int* __restrict__ hdr,
                        const int* __restrict__ counts, const float* __restrict__ scores,
                        long long* __restrict__ out)
{
    __shared__ DsShared sh;
    const int ncases = meta[0], nrows = meta[1];
    for (int w = blockIdx.x; w < nrows; w += gridDim.x) {
        const int c = ds_case_of(hdr, ncases, w);
        DsHdr h;
#pragma unroll
        for (int k = 0; k < DS_HDR; ++k) h.w[k] = hdr[c * DS_HDR + k];
        ds_row<SORTED>(h, w - h.w[5], counts, scores, out, sh);
    }
}

// One case per graph (one graph per captured bs, as SGLang): the header is a kernel
// parameter baked into the graph, block b is row b. Same rows, same values.
template <bool SORTED>
__device__ __forceinline__ void ds_fixed(const DsHdr& h, const int* __restrict__ counts,
                                         const float* __restrict__ scores, long long* __restrict__ out)
{
    __shared__ DsShared sh;
    for (int i = blockIdx.x; i < h.w[0]; i += gridDim.x) ds_row<SORTED>(h, i, counts, scores, out, sh);
}

extern "C" __global__ void __launch_bounds__(DS_THREADS) draft_select_topk_fixed(
    const DsHdr h, const int* __restrict__ counts, const float* __restrict__ scores, long long* __restrict__ out)
{
    ds_fixed<false>(h, counts, scores, out);
}

extern "C" __global__ void __launch_bounds__(DS_THREADS) draft_select_sorted_fixed(
    const DsHdr h, const int* __restrict__ counts, const float* __restrict__ scores, long long* __restrict__ out)
{
    ds_fixed<true>(h, counts, scores, out);
}

extern "C" __global__ void __launch_bounds__(DS_THREADS) draft_select_topk(
    const int* __restrict__ meta, const int* __restrict__ hdr, const int* __restrict__ counts,
    const float* __restrict__ scores, long long* __restrict__ out)
{
    ds_rows<false>(meta, hdr, counts, scores, out);
}

extern "C" __global__ void __launch_bounds__(DS_THREADS) draft_select_sorted(
    const int* __restrict__ meta, const int* __restrict__ hdr, const int* __restrict__ counts,
    const float* __restrict__ scores, long long* __restrict__ out)
{
    ds_rows<true>(meta, hdr, counts, scores, out);
}
