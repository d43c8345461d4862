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

#define ARGMAX_THREADS 256

// One block per logits row j < num_logits: the index of the largest value, the lowest
// index winning ties (values must not be NaN). Each thread scans a strided subset in
// increasing order (strict >), then a tree reduction keeps the larger value or, on a tie,
// the smaller index; the result is the same as a sequential scan.
extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS) argmax_rows(
    const int* __restrict__ counts,
    const float* __restrict__ logits, int vocab,
    int* __restrict__ argmax)
{
    __shared__ float best_v[ARGMAX_THREADS];
    __shared__ int best_i[ARGMAX_THREADS];
    const int num_logits = counts[C_NUM_LOGITS];
    for (int j = blockIdx.x; j < num_logits; j += gridDim.x) {
        const float* row = logits + (long long)j * vocab;
        float bv = 0.0f;
        int bi = -1;
        for (int v = threadIdx.x; v < vocab; v += ARGMAX_THREADS) {
            const float x = row[v];
            if (bi < 0 || x > bv) { bv = x; bi = v; }
        }
        best_v[threadIdx.x] = bv;
        best_i[threadIdx.x] = bi;
        __syncthreads();
        for (int s = ARGMAX_THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) {
                const float ov = best_v[threadIdx.x + s];
                const int oi = best_i[threadIdx.x + s];
                const int mi = best_i[threadIdx.x];
                if (oi >= 0 && (mi < 0 || ov > best_v[threadIdx.x] || (ov == best_v[threadIdx.x] && oi < mi))) {
                    best_v[threadIdx.x] = ov;
                    best_i[threadIdx.x] = oi;
                }
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) argmax[j] = best_i[0];
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
