// Input preparation and attention metadata of one engine step, on persistent buffers.
//
// Mirrors the device half of vLLM 0.12.0's `GPUModelRunner._prepare_inputs`
// (vllm/v1/worker/gpu_model_runner.py) and the FlashAttention metadata the simulator
// records (sim/src/runner.rs `prepare_inputs`, `attn_metadata`). Header-free; every loop
// bound is read from device memory (`counts`, `query_start_loc`), so a captured CUDA graph
// replays correctly for any batch that fits the buffers. Only scalars that are engine
// constants (table strides, block size) are kernel arguments.
//
// Integer types (vLLM's): token ids int32, positions int64, slot mapping int64, block
// table int32, query_start_loc / seqused_k / logits indices int32.
//
// counts[] layout (int32), shared with executor/src/layout.rs:
//   0 num_reqs      real batch rows
//   1 meta_reqs     request rows of the attention metadata (FULL: padded, else num_reqs)
//   2 meta_tokens   tokens of the attention metadata (FULL: padded, else the real total)
//   3 num_logits    sampled positions (sum of num_sampled)
//   4 width         rejection-sampler row width (max drafts + 1, or 1)
//   5 padded_tokens tokens the forward pass runs over (graph size)

// Row of flat token `i`: the largest r < num_reqs with qsl[r] <= i (rows with zero
// scheduled tokens are skipped by construction).
__device__ __forceinline__ int row_of_token(const int* qsl, int num_reqs, int i) {
    int lo = 0, hi = num_reqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (qsl[mid] <= i) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// input_ids / positions / slot_mapping for the scheduled tokens only: token i of row r
// sits at position num_computed[r] + (i - qsl[r]); its id is gathered from the token
// table row, its slot from the block table (block * block_size + pos % block_size).
// Slots past the total keep whatever they held (stale tails are the point).
extern "C" __global__ void prepare_inputs(
    const int* __restrict__ counts,
    const int* __restrict__ token_table, int max_model_len,
    const int* __restrict__ block_table, int blocks_per_row, int block_size,
    const int* __restrict__ num_computed,
    const int* __restrict__ query_start_loc,
    int* __restrict__ input_ids,
    long long* __restrict__ positions,
    long long* __restrict__ slot_mapping)
{
    const int num_reqs = counts[0];
    if (num_reqs <= 0) return;
    const int total = query_start_loc[num_reqs];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int r = row_of_token(query_start_loc, num_reqs, i);
        const int pos = num_computed[r] + (i - query_start_loc[r]);
        input_ids[i] = token_table[(long long)r * max_model_len + pos];
        positions[i] = (long long)pos;
        const int block = block_table[(long long)r * blocks_per_row + pos / block_size];
        slot_mapping[i] = (long long)block * block_size + pos % block_size;
    }
}

// Per-row outputs: seqused_k = num_computed + num_scheduled, cu_sampled (exclusive prefix
// of num_sampled, plus the total at num_reqs) and logits_indices (the last num_sampled
// flat positions of each row, `_calc_spec_decode_metadata` / `query_start_loc[1:] - 1`).
extern "C" __global__ void prepare_rows(
    const int* __restrict__ counts,
    const int* __restrict__ num_computed,
    const int* __restrict__ query_start_loc,
    const int* __restrict__ num_sampled,
    int* __restrict__ seqused_k,
    int* __restrict__ cu_sampled,
    int* __restrict__ logits_indices)
{
    const int num_reqs = counts[0];
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < num_reqs; r += gridDim.x * blockDim.x) {
        const int end = query_start_loc[r + 1];
        seqused_k[r] = num_computed[r] + (end - query_start_loc[r]);
        int base = 0;
        for (int j = 0; j < r; ++j) base += num_sampled[j];
        cu_sampled[r] = base;
        const int ns = num_sampled[r];
        if (r == num_reqs - 1) cu_sampled[num_reqs] = base + ns;
        for (int j = 0; j < ns; ++j) logits_indices[base + j] = end - ns + j;
    }
}

// Attention metadata as the simulator models it (sim/src/runner.rs `attn_metadata`):
// cu_seqlens_q[r] = qsl[min(r, num_reqs)] for r <= meta_reqs (padded requests repeat the
// total), seqused_k 0 for padded requests, metadata block-table rows copied from the
// persistent table for real rows and -1 for padded ones, slot_mapping -1 for padded
// tokens. PIECEWISE / NONE stage meta_reqs = num_reqs and meta_tokens = the real total,
// so nothing is padded. The persistent block table is never written (its stale columns
// are part of the model).
extern "C" __global__ void build_metadata(
    const int* __restrict__ counts,
    const int* __restrict__ query_start_loc,
    const int* __restrict__ block_table, int blocks_per_row,
    int* __restrict__ cu_seqlens_q,
    int* __restrict__ seqused_k,
    int* __restrict__ meta_block_table,
    long long* __restrict__ slot_mapping)
{
    const int num_reqs = counts[0];
    const int meta_reqs = counts[1];
    const int meta_tokens = counts[2];
    const int total = num_reqs > 0 ? query_start_loc[num_reqs] : 0;
    const int stride = gridDim.x * blockDim.x;
    const int tid = blockIdx.x * blockDim.x + threadIdx.x;
    for (int r = tid; r <= meta_reqs; r += stride) {
        cu_seqlens_q[r] = num_reqs > 0 ? query_start_loc[r < num_reqs ? r : num_reqs] : 0;
    }
    for (int r = num_reqs + tid; r < meta_reqs; r += stride) seqused_k[r] = 0;
    const long long cells = (long long)meta_reqs * blocks_per_row;
    for (long long e = tid; e < cells; e += stride) {
        const long long r = e / blocks_per_row;
        meta_block_table[e] = r < num_reqs ? block_table[e] : -1;
    }
    // Known-bad variant (executor/src/kernels.rs `Variant::PaddedSlotWrites`, compiled only
    // with this macro defined): padded tokens keep their stale slots, so the cache write
    // lets them write through into real requests' blocks.
#ifndef SPECREPLAY_VARIANT_PADDED_SLOT_WRITES
    for (int i = total + tid; i < meta_tokens; i += stride) slot_mapping[i] = -1;
#endif
}
