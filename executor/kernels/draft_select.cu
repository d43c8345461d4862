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
// Batched layout: meta[0] = cases, meta[1] = total rows. hdr[c * DS_HDR + k]:
//   0 bs   1 n_cand   2 req_off (draft_counts)   3 score_off (scores, bs * n_cand)
//   4 out_off (first output slot)   5 row_off (first global row of the case)
// The host validates n_cand <= DS_MAX_CAND and draft_counts[i] <= n_cand (else the
// reference raises DraftCountExceedsCandidates and nothing is launched).

#define DS_HDR 8
#define DS_THREADS 256
#define DS_MAX_CAND 1024

// Whether candidate (a, ia) is ordered before (b, ib).
__device__ __forceinline__ bool ds_before(float a, int ia, float b, int ib) {
    const bool na = (a != a), nb = (b != b);
    if (na != nb) return na;
    if (!na && a != b) return a > b;
    return ia < ib;
}

// The case holding global row w: the largest c with row_off[c] <= w.
__device__ __forceinline__ int ds_case_of(const int* hdr, int n, int w) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (hdr[mid * DS_HDR + 5] <= w) lo = mid; else hi = mid - 1;
    }
    return lo;
}

template <bool SORTED>
__device__ void ds_rows(const int* __restrict__ meta, const int* __restrict__ hdr,
                        const int* __restrict__ counts, const float* __restrict__ scores,
                        long long* __restrict__ out)
{
    __shared__ float s_score[DS_MAX_CAND];
    __shared__ int s_rank[DS_MAX_CAND];
    __shared__ int s_red[DS_THREADS];
    __shared__ int s_red2[DS_THREADS];
    const int t = threadIdx.x;
    const int ncases = meta[0], nrows = meta[1];
    for (int w = blockIdx.x; w < nrows; w += gridDim.x) {
        const int c = ds_case_of(hdr, ncases, w);
        const int* h = hdr + c * DS_HDR;
        const int bs = h[0], n = h[1], req_off = h[2], score_off = h[3], out_off = h[4];
        const int i = w - h[5];
        // Output offset: sum of the counts before row i; SORTED also needs max(counts).
        int sum = 0, mx = 0;
        for (int k = t; k < bs; k += DS_THREADS) {
            const int v = counts[req_off + k];
            if (k < i) sum += v;
            mx = max(mx, v);
        }
        s_red[t] = sum;
        s_red2[t] = mx;
        __syncthreads();
        for (int s = DS_THREADS / 2; s > 0; s >>= 1) {
            if (t < s) {
                s_red[t] += s_red[t + s];
                s_red2[t] = max(s_red2[t], s_red2[t + s]);
            }
            __syncthreads();
        }
        const int off = out_off + s_red[0];
        const int max_c = s_red2[0];
        const int ci = counts[req_off + i];
        __syncthreads();
        if (ci > 0) {  // uniform across the block
            const float* row = scores + score_off + (long long)i * n;
            for (int j = t; j < n; j += DS_THREADS) s_score[j] = row[j];
            __syncthreads();
            for (int j = t; j < n; j += DS_THREADS) {
                const float sj = s_score[j];
                int rank = 0;
                for (int k = 0; k < n; ++k) rank += ds_before(s_score[k], k, sj, j) ? 1 : 0;
                if (SORTED) s_rank[j] = rank;
                else if (rank < ci) out[off + rank] = (long long)j;
            }
            if (SORTED) {
                __syncthreads();
                for (int j = t; j < n; j += DS_THREADS) {
                    if (s_rank[j] < max_c) {
                        int pos = 0;
                        for (int k = 0; k < j; ++k) pos += (s_rank[k] < max_c) ? 1 : 0;
                        if (pos < ci) out[off + pos] = (long long)j;
                    }
                }
            }
        }
        __syncthreads();
    }
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
