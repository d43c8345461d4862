// A paged toy target model that reads what a real model reads.
//
// `cache_write` stores each consumed input token into a paged token cache through
// `slot_mapping` (as vLLM's `reshape_and_cache_flash` stores K/V; -1 slots are skipped).
// The logits kernels then read each sampled position's context back from that cache
// through the metadata block table, bounded by `seqused_k` (as paged attention does), so a
// wrong slot, block-table row or length changes a token. Integer operations only, so the
// CPU reference (executor/src/reference.rs) matches bit for bit.
//
// counts[] layout: see prepare.cu. counters[] (uint32): 0 context mismatches
// (continuation), 1 positions past the recorded continuation, 2 out-of-range cache
// accesses (a slot or block outside the cache, or a position past seqused_k).

#define C_NUM_REQS 0
#define C_META_TOKENS 2
#define C_NUM_LOGITS 3
#define C_PADDED_TOKENS 5

#define CTR_MISMATCH 0
#define CTR_EXHAUSTED 1
#define CTR_OUT_OF_RANGE 2

__device__ __forceinline__ unsigned long long splitmix(unsigned long long x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// The token at `pos` of request row `r`, read through the metadata block table; -1 (and
// one out-of-range count) when the block or slot is outside the cache.
__device__ __forceinline__ int read_cached(
    const int* meta_block_table, int blocks_per_row, int block_size,
    const int* token_cache, long long cache_slots, int r, int pos, unsigned* counters)
{
    const int block = meta_block_table[(long long)r * blocks_per_row + pos / block_size];
    const long long slot = (long long)block * block_size + pos % block_size;
    if (block < 0 || slot >= cache_slots) {
        atomicAdd(&counters[CTR_OUT_OF_RANGE], 1u);
        return -1;
    }
    return token_cache[slot];
}

__device__ __forceinline__ int row_of_token(const int* cu_q, int num_reqs, int i) {
    int lo = 0, hi = num_reqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (cu_q[mid] <= i) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// Writes input_ids[i] into token_cache[slot_mapping[i]] for i < meta_tokens, skipping -1
// (padded tokens) and counting slots outside the cache.
extern "C" __global__ void cache_write(
    const int* __restrict__ counts,
    const int* __restrict__ input_ids,
    const long long* __restrict__ slot_mapping,
    int* __restrict__ token_cache, long long cache_slots,
    unsigned* __restrict__ counters)
{
    const int n = counts[C_META_TOKENS];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const long long s = slot_mapping[i];
        if (s < 0) continue;
        if (s >= cache_slots) { atomicAdd(&counters[CTR_OUT_OF_RANGE], 1u); continue; }
        token_cache[s] = input_ids[i];
    }
}

// The forward pass's input read: copies input_ids / positions [0, padded_tokens) as the
// graph consumes them (stale tails included) into the `consumed_*` buffers, so the trace
// records what the replayed graph read, not what the persistent buffer holds afterwards.
extern "C" __global__ void consume_inputs(
    const int* __restrict__ counts,
    const int* __restrict__ input_ids,
    const long long* __restrict__ positions,
    int* __restrict__ consumed_ids,
    long long* __restrict__ consumed_pos)
{
    const int n = counts[C_PADDED_TOKENS];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        consumed_ids[i] = input_ids[i];
        consumed_pos[i] = positions[i];
    }
}

// Synthetic oracle (sim::oracle::Synthetic): one block per logits row j < num_logits.
// The row's flat token i = logits_indices[j] belongs to request row r (cu_seqlens_q) at
// position p = positions[i]; the context is positions 0..=p, of which the last
// min(order, p + 1) are read from the cache and hashed:
//   h = splitmix(seed ^ 0x5eed5eed5eed5eed); h = splitmix(h ^ token) for each, in order.
// The logits row is score(h, v) for v < vocab (Synthetic::score): 2^23 at v = h % vocab,
// else the top 23 bits of splitmix(h + v * 0xd1b54a32d192ed03); all exact in f32.
extern "C" __global__ void synthetic_logits(
    const int* __restrict__ counts,
    const int* __restrict__ logits_indices,
    const long long* __restrict__ positions,
    const int* __restrict__ cu_seqlens_q,
    const int* __restrict__ seqused_k,
    const int* __restrict__ meta_block_table, int blocks_per_row, int block_size,
    const int* __restrict__ token_cache, long long cache_slots,
    unsigned long long seed, int order, int vocab,
    float* __restrict__ logits,
    unsigned* __restrict__ counters)
{
    __shared__ unsigned long long h_shared;
    const int num_reqs = counts[C_NUM_REQS];
    const int num_logits = counts[C_NUM_LOGITS];
    for (int j = blockIdx.x; j < num_logits; j += gridDim.x) {
        if (threadIdx.x == 0) {
            const int i = logits_indices[j];
            const int r = row_of_token(cu_seqlens_q, num_reqs, i);
            const int p = (int)positions[i];
            unsigned long long h = splitmix(seed ^ 0x5eed5eed5eed5eedULL);
            const int len = p + 1;
            const int n = len < order ? len : order;
            for (int q = len - n; q < len; ++q) {
                int t;
                if (q >= seqused_k[r]) {
                    atomicAdd(&counters[CTR_OUT_OF_RANGE], 1u);
                    t = -1;
                } else {
                    t = read_cached(meta_block_table, blocks_per_row, block_size, token_cache, cache_slots, r, q, counters);
                }
                h = splitmix(h ^ (unsigned long long)(unsigned)t);
            }
            h_shared = h;
        }
        __syncthreads();
        const unsigned long long h = h_shared;
        const unsigned long long top = h % (unsigned long long)vocab;
        float* row = logits + (long long)j * vocab;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
            unsigned s;
            if ((unsigned long long)v == top) s = 1u << 23;
            else s = (unsigned)(splitmix(h + (unsigned long long)v * 0xd1b54a32d192ed03ULL) >> 41);
            row[v] = (float)s;
        }
        __syncthreads();
    }
}

// Continuation oracle: the logits row of position p of request row r is one-hot at the
// recorded token expected[r][p + 1] (1.0 there, 0.0 elsewhere); a position past the
// recorded row counts as exhausted and gives an all-zero row.
extern "C" __global__ void continuation_logits(
    const int* __restrict__ counts,
    const int* __restrict__ logits_indices,
    const long long* __restrict__ positions,
    const int* __restrict__ cu_seqlens_q,
    const int* __restrict__ expected, int expected_stride,
    const int* __restrict__ expected_len,
    int vocab,
    float* __restrict__ logits,
    unsigned* __restrict__ counters)
{
    __shared__ int t_shared;
    const int num_reqs = counts[C_NUM_REQS];
    const int num_logits = counts[C_NUM_LOGITS];
    for (int j = blockIdx.x; j < num_logits; j += gridDim.x) {
        if (threadIdx.x == 0) {
            const int i = logits_indices[j];
            const int r = row_of_token(cu_seqlens_q, num_reqs, i);
            const int next = (int)positions[i] + 1;
            int t = -1;
            if (next < expected_len[r]) t = expected[(long long)r * expected_stride + next];
            else atomicAdd(&counters[CTR_EXHAUSTED], 1u);
            t_shared = t;
        }
        __syncthreads();
        const int t = t_shared;
        float* row = logits + (long long)j * vocab;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) row[v] = v == t ? 1.0f : 0.0f;
        __syncthreads();
    }
}

// Continuation oracle, the context the target attends to: for each request row r, every
// verified position q < seqused_k[r] - (num_sampled[r] - 1) (the drafts of this step are
// not verified) is read from the cache through the block table and compared with the
// recorded row; each disagreement (or a position past the recorded row) counts once.
extern "C" __global__ void context_check(
    const int* __restrict__ counts,
    const int* __restrict__ num_sampled,
    const int* __restrict__ seqused_k,
    const int* __restrict__ meta_block_table, int blocks_per_row, int block_size,
    const int* __restrict__ token_cache, long long cache_slots,
    const int* __restrict__ expected, int expected_stride,
    const int* __restrict__ expected_len,
    unsigned* __restrict__ counters)
{
    const int num_reqs = counts[C_NUM_REQS];
    for (int r = blockIdx.x; r < num_reqs; r += gridDim.x) {
        const int verified = seqused_k[r] - (num_sampled[r] - 1);
        for (int q = threadIdx.x; q < verified; q += blockDim.x) {
            const int t = read_cached(meta_block_table, blocks_per_row, block_size, token_cache, cache_slots, r, q, counters);
            if (q >= expected_len[r] || t != expected[(long long)r * expected_stride + q]) {
                atomicAdd(&counters[CTR_MISMATCH], 1u);
            }
        }
    }
}
