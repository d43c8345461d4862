// Greedy sampling: argmax over each logits row, then greedy rejection sampling.
//
// `rejection_greedy` mirrors vLLM 0.12.0's `rejection_greedy_sample_kernel`
// (vllm/v1/sample/rejection_sampler.py) as the simulator models it (sim/src/rejection.rs,
// sim/src/runner.rs `sample`): accepted drafts, then the target token at the first
// mismatch or the bonus token, -1 padded to the row width; rows whose sample is discarded
// (partial prefill) are all -1. Loop bounds come from `counts` (see prepare.cu).

#define C_NUM_REQS 0
#define C_NUM_LOGITS 3
#define C_WIDTH 4

#define ARGMAX_THREADS 1024

// Keeps (ov, oi) over (bv, bi) when it is larger or equal with a lower index (-1: none).
__device__ __forceinline__ void argmax_merge(float& bv, int& bi, float ov, int oi) {
    if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
        bv = ov;
        bi = oi;
    }
}

__device__ __forceinline__ void argmax_take(float& bv, int& bi, float x, int v) {
    if (bi < 0 || x > bv) {
        bv = x;
        bi = v;
    }
}

// One block per logits row j < num_logits: the index of the largest value, the lowest
// index winning ties (values must not be NaN). Each thread scans its own subset in
// increasing index order (strict >), so it keeps its subset's largest value at its lowest
// index; merging those by (larger value, then lower index) gives the same result as one
// sequential scan, whatever the subsets. The subsets are 16-byte groups of four (a 16-byte
// aligned row), four groups in flight per thread: one block streams a 151,936-word row at
// L2 rate, where one word per thread at a time took 40.8 us at batch 1 (device log run 23,
// Nsight Compute).
extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS) argmax_rows(
    const int* __restrict__ counts,
    const float* __restrict__ logits, int vocab,
    int* __restrict__ argmax)
{
    __shared__ float best_v[ARGMAX_THREADS / 32];
    __shared__ int best_i[ARGMAX_THREADS / 32];
    const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    const int num_logits = counts[C_NUM_LOGITS];
    for (int j = blockIdx.x; j < num_logits; j += gridDim.x) {
        const float* row = logits + (long long)j * vocab;
        float bv = 0.0f;
        int bi = -1;
        int v0 = 0;
        if (((unsigned long long)row & 15ull) == 0ull) {
            const int n4 = vocab >> 2;
            const float4* r4 = reinterpret_cast<const float4*>(row);
            int q = t;
            for (; q + 3 * ARGMAX_THREADS < n4; q += 4 * ARGMAX_THREADS) {
                float4 a[4];
#pragma unroll
                for (int u = 0; u < 4; ++u) a[u] = r4[q + u * ARGMAX_THREADS];
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    const int v = 4 * (q + u * ARGMAX_THREADS);
                    argmax_take(bv, bi, a[u].x, v);
                    argmax_take(bv, bi, a[u].y, v + 1);
                    argmax_take(bv, bi, a[u].z, v + 2);
                    argmax_take(bv, bi, a[u].w, v + 3);
                }
            }
            for (; q < n4; q += ARGMAX_THREADS) {
                const float4 a = r4[q];
                argmax_take(bv, bi, a.x, 4 * q);
                argmax_take(bv, bi, a.y, 4 * q + 1);
                argmax_take(bv, bi, a.z, 4 * q + 2);
                argmax_take(bv, bi, a.w, 4 * q + 3);
            }
            v0 = 4 * n4;
        }
        for (int v = v0 + t; v < vocab; v += ARGMAX_THREADS) argmax_take(bv, bi, row[v], v);
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_down_sync(0xffffffffu, bv, off);
            const int oi = __shfl_down_sync(0xffffffffu, bi, off);
            argmax_merge(bv, bi, ov, oi);
        }
        if (lane == 0) {
            best_v[warp] = bv;
            best_i[warp] = bi;
        }
        __syncthreads();
        if (warp == 0) {
            bv = lane < ARGMAX_THREADS / 32 ? best_v[lane] : 0.0f;
            bi = lane < ARGMAX_THREADS / 32 ? best_i[lane] : -1;
            for (int off = 16; off > 0; off >>= 1) {
                const float ov = __shfl_down_sync(0xffffffffu, bv, off);
                const int oi = __shfl_down_sync(0xffffffffu, bi, off);
                argmax_merge(bv, bi, ov, oi);
            }
            if (lane == 0) argmax[j] = bi;
        }
        __syncthreads();
    }
}

// One thread per request row r < num_reqs. Row r's drafts are the last num_sampled[r] - 1
// input ids of the row (read back from the input buffer, as `_calc_spec_decode_metadata`
// does); its target tokens are argmax[cu_sampled[r] + j].
extern "C" __global__ void rejection_greedy(
    const int* __restrict__ counts,
    const int* __restrict__ query_start_loc,
    const int* __restrict__ num_sampled,
    const int* __restrict__ cu_sampled,
    const int* __restrict__ discard,
    const int* __restrict__ input_ids,
    const int* __restrict__ argmax,
    int* __restrict__ sampled)
{
    const int num_reqs = counts[C_NUM_REQS];
    const int width = counts[C_WIDTH];
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < num_reqs; r += gridDim.x * blockDim.x) {
        int* out = sampled + (long long)r * width;
        int k = 0;
        if (!discard[r]) {
            const int nd = num_sampled[r] - 1;
            const int base = cu_sampled[r];
            const int draft0 = query_start_loc[r + 1] - nd;
            bool all = true;
            for (int j = 0; j < nd; ++j) {
                const int t = argmax[base + j];
                out[k++] = t;
                if (t != input_ids[draft0 + j]) { all = false; break; }
            }
            if (all) out[k++] = argmax[base + nd];
        }
        for (; k < width; ++k) out[k] = -1;
    }
}
