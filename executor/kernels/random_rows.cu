// Random-mode verification on the device: the synthetic oracle's target distribution
// (temperature / top-k / top-p) and vLLM 0.12.0's random rejection rule for n-gram drafts
// (vllm/v1/sample/rejection_sampler.py), the CUDA twins of
// sim/src/oracle.rs `Synthetic::weights`/`probs`/`log_probs`, sim/src/sampling.rs
// `target_probs` and sim/src/rejection.rs `random_row`. Appended to random.cu (Philox,
// sr_ln, sr_exp, sr_exponential) when compiled (executor/src/kernels.rs, module
// "random_rows"). ARCHITECTURE.md ("Random-mode sampling") is the specification.
//
// Bits match the CPU although the algorithms differ: every floating-point value is
// computed by the same expression tree (sums in sim's `lane_sum` order: 256 lanes with a
// strided sequential sum, then a halving tree), and the data-dependent choices (the top-k
// threshold, top-p's mask, argmax races) come from exact integer or order-free operations,
// found here by bitwise binary searches over block-wide counts and sums. One block of
// RR_THREADS threads per row.

#define RR_THREADS 256
#define RR_NEG_INF __longlong_as_double(0xFFF0000000000000LL)

__device__ __forceinline__ unsigned long long rr_splitmix(unsigned long long x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Synthetic::score.
__device__ __forceinline__ unsigned rr_score(unsigned long long h, unsigned v, unsigned vocab) {
    if ((unsigned long long)v == h % (unsigned long long)vocab) return 1u << 23;
    return (unsigned)(rr_splitmix(h + (unsigned long long)v * 0xd1b54a32d192ed03ULL) >> 41);
}

// IEEE total order as unsigned keys (f64::total_cmp).
__device__ __forceinline__ unsigned long long rr_key(double x) {
    const unsigned long long b = (unsigned long long)__double_as_longlong(x);
    return (b >> 63) ? ~b : (b | 0x8000000000000000ULL);
}

// Block-wide sum of one value per thread (exact for integers); every thread gets it.
__device__ unsigned long long rr_sum_u64(unsigned long long v, unsigned long long* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = RR_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    const unsigned long long r = sh[0];
    __syncthreads();
    return r;
}

// sim::sampling::lane_sum: lane t = x[t] + x[t+256] + ... left to right, then the tree.
__device__ double rr_lane_sum(const double* x, unsigned n, double* sh) {
    double acc = 0.0;
    for (unsigned v = threadIdx.x; v < n; v += RR_THREADS) acc += x[v];
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int s = RR_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] = sh[threadIdx.x] + sh[threadIdx.x + s];
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads();
    return r;
}

__device__ double rr_max(const double* x, unsigned n, double* sh) {
    double m = RR_NEG_INF;
    for (unsigned v = threadIdx.x; v < n; v += RR_THREADS) m = fmax(m, x[v]);
    sh[threadIdx.x] = m;
    __syncthreads();
    for (int s = RR_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] = fmax(sh[threadIdx.x], sh[threadIdx.x + s]);
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads();
    return r;
}

// In place: x = softmax(x) (sim::sampling::softmax); e stored first, then divided.
__device__ void rr_softmax(double* x, unsigned n, double* sh) {
    const double m = rr_max(x, n, sh);
    for (unsigned v = threadIdx.x; v < n; v += RR_THREADS) x[v] = x[v] == RR_NEG_INF ? 0.0 : sr_exp(x[v] - m);
    __syncthreads();
    const double sum = rr_lane_sum(x, n, sh);
    for (unsigned v = threadIdx.x; v < n; v += RR_THREADS) x[v] = x[v] / sum;
    __syncthreads();
}

// For each target row r < n_rows (context hash hashes[r], the request's temperature,
// top_k, top_p at params index param_of[r]): out[r * vocab + v] = target_probs(log_probs)
// of sim, as binary64. scratch holds n_rows * vocab doubles (the top-p probabilities).
extern "C" __global__ void synthetic_target_probs(
    int n_rows, unsigned vocab, const unsigned long long* __restrict__ hashes,
    const int* __restrict__ param_of, const float* __restrict__ temperature,
    const unsigned* __restrict__ top_k, const float* __restrict__ top_p,
    double* __restrict__ scratch, double* __restrict__ out)
{
    __shared__ unsigned long long sh_u[RR_THREADS];
    __shared__ double sh_d[RR_THREADS];
    for (int r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const unsigned long long h = hashes[r];
        const int pi = param_of[r];
        double* x = out + (long long)r * vocab;
        double* q = scratch + (long long)r * vocab;
        // 1. Synthetic::weights: r_v = 1 + (score >> 19), R = sum, S = ceil(log2 R).
        unsigned long long part = 0;
        for (unsigned v = threadIdx.x; v < vocab; v += RR_THREADS) part += 1u + (rr_score(h, v, vocab) >> 19);
        const unsigned long long total = rr_sum_u64(part, sh_u);
        const unsigned shift = 64u - (unsigned)__clzll((long long)(total - 1ULL));
        const unsigned a = (unsigned)(h % (unsigned long long)vocab);
        const float scale = __int_as_float((int)((127u - shift) << 23));
        const double t = (double)temperature[pi];
        for (unsigned v = threadIdx.x; v < vocab; v += RR_THREADS) {
            unsigned w = 1u + (rr_score(h, v, vocab) >> 19);
            if (v == a) w += (unsigned)((1ULL << shift) - total);
            const float p = (float)w * scale;
            x[v] = sr_ln((double)p) / t;
        }
        __syncthreads();
        // 2. top-k: the k-th largest key (largest t with #{key >= t} >= k); below it -inf.
        const unsigned k = top_k[pi];
        if (k > 0 && k < vocab) {
            unsigned long long th = 0;
            for (int bit = 63; bit >= 0; --bit) {
                const unsigned long long cand = th | (1ULL << bit);
                unsigned long long c = 0;
                for (unsigned v = threadIdx.x; v < vocab; v += RR_THREADS) c += rr_key(x[v]) >= cand;
                if (rr_sum_u64(c, sh_u) >= k) th = cand;
            }
            for (unsigned v = threadIdx.x; v < vocab; v += RR_THREADS)
                if (rr_key(x[v]) < th) x[v] = RR_NEG_INF;
            __syncthreads();
        }
        // 3. top-p on exact 2^62 fixed-point cumulative sums in (x, index) order.
        const float tp = top_p[pi];
        if (tp < 1.0f) {
            for (unsigned v = threadIdx.x; v < vocab; v += RR_THREADS) q[v] = x[v];
            __syncthreads();
            rr_softmax(q, vocab, sh_d);
            const unsigned long long limit = (unsigned long long)((1.0 - (double)tp) * 4611686018427387904.0);
            // F(t) = sum of fixed62(q_u) over key_u <= t; find the largest t with F(t) <= limit.
            unsigned long long t0 = 0;
            bool any = false;
            for (int bit = 63; bit >= 0; --bit) {
                const unsigned long long cand = t0 | (1ULL << bit);
                unsigned long long s = 0;
                for (unsigned v = threadIdx.x; v < vocab; v += RR_THREADS)
                    if (rr_key(x[v]) <= cand) s += (unsigned long long)(q[v] * 4611686018427387904.0);
                if (rr_sum_u64(s, sh_u) <= limit) { t0 = cand; any = true; }
            }
            if (!any) {
                unsigned long long s = 0;
                for (unsigned v = threadIdx.x; v < vocab; v += RR_THREADS)
                    if (rr_key(x[v]) == 0ULL) s += (unsigned long long)(q[v] * 4611686018427387904.0);
                any = rr_sum_u64(s, sh_u) <= limit; // F(0) <= limit: t0 = 0 is valid
            }
            // L: the level where the cumulative sum first exceeds the limit (none: every
            // token but the largest is masked, as the level of the largest key).
            unsigned long long level, m, below = 0;
            unsigned long long kmax = 0;
            for (unsigned v = threadIdx.x; v < vocab; v += RR_THREADS) kmax = max(kmax, rr_key(x[v]));
            sh_u[threadIdx.x] = kmax;
            __syncthreads();
            for (int s = RR_THREADS / 2; s > 0; s >>= 1) {
                if (threadIdx.x < s) sh_u[threadIdx.x] = max(sh_u[threadIdx.x], sh_u[threadIdx.x + s]);
                __syncthreads();
            }
            kmax = sh_u[0];
            __syncthreads();
            const bool none = any && t0 >= kmax;
            level = !any ? 0ULL : (none ? kmax : t0 + 1ULL);
            unsigned long long cnt = 0, qsum = 0, qlev = 0;
            for (unsigned v = threadIdx.x; v < vocab; v += RR_THREADS) {
                const unsigned long long kv = rr_key(x[v]);
                if (kv < level) qsum += (unsigned long long)(q[v] * 4611686018427387904.0);
                if (kv == level) { cnt += 1; qlev = (unsigned long long)(q[v] * 4611686018427387904.0); }
            }
            below = rr_sum_u64(qsum, sh_u);
            const unsigned long long n_level = rr_sum_u64(cnt, sh_u);
            // Every token of a level has the same probability: take the largest seen.
            sh_u[threadIdx.x] = qlev;
            __syncthreads();
            for (int s = RR_THREADS / 2; s > 0; s >>= 1) {
                if (threadIdx.x < s) sh_u[threadIdx.x] = max(sh_u[threadIdx.x], sh_u[threadIdx.x + s]);
                __syncthreads();
            }
            qlev = sh_u[0];
            __syncthreads();
            if (none) m = n_level - 1ULL;
            else m = qlev == 0ULL ? n_level : (limit - below) / qlev;
            if (m > n_level) m = n_level;
            // I = min{i : #{u < i, key_u == level} >= m}: mask level tokens with index < I.
            unsigned cut = 0;
            if (m > 0) {
                unsigned best = 0; // largest i with count(u < i) < m
                for (int bit = 20; bit >= 0; --bit) {
                    const unsigned cand = best | (1u << bit);
                    unsigned long long c = 0;
                    for (unsigned v = threadIdx.x; v < vocab && v < cand; v += RR_THREADS) c += rr_key(x[v]) == level;
                    if (rr_sum_u64(c, sh_u) < m) best = cand;
                }
                cut = best + 1u;
            }
            for (unsigned v = threadIdx.x; v < vocab; v += RR_THREADS) {
                const unsigned long long kv = rr_key(x[v]);
                if (kv < level || (kv == level && v < cut)) x[v] = RR_NEG_INF;
            }
            __syncthreads();
        }
        // 4. the final softmax.
        rr_softmax(x, vocab, sh_d);
    }
}

// Block-wide exponential race argmax_v p[v] / E_v over v != excluded (sim rejection::race):
// higher score wins, the lower index on equal scores.
__device__ unsigned rr_race(const double* p, unsigned vocab, int excluded, unsigned long long seed,
                            unsigned request, unsigned position, unsigned purpose,
                            double* sh_d, unsigned* sh_i)
{
    double best = -1.0;
    unsigned bi = 0xFFFFFFFFu;
    const unsigned k0 = (unsigned)seed, k1 = (unsigned)(seed >> 32);
    for (unsigned b = threadIdx.x; 4u * b < vocab; b += RR_THREADS) {
        const philox_out o = philox4x32_10(request, position, purpose, b, k0, k1);
        for (unsigned lane = 0; lane < 4u; ++lane) {
            const unsigned v = 4u * b + lane;
            if (v >= vocab) break;
            const double pv = p[v];
            const double score = ((int)v == excluded || pv == 0.0) ? 0.0 : pv / sr_exponential(o.w[lane]);
            if (score > best || (score == best && v < bi)) { best = score; bi = v; }
        }
    }
    sh_d[threadIdx.x] = best;
    sh_i[threadIdx.x] = bi;
    __syncthreads();
    for (int s = RR_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            const double o = sh_d[threadIdx.x + s];
            const unsigned oi = sh_i[threadIdx.x + s];
            if (o > sh_d[threadIdx.x] || (o == sh_d[threadIdx.x] && oi < sh_i[threadIdx.x])) {
                sh_d[threadIdx.x] = o;
                sh_i[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    const unsigned r = sh_i[0];
    __syncthreads();
    return r;
}

// For each row r < n_rows: discarded rows are all -1; otherwise vLLM's random rule on the
// target rows probs[(first_target[r] + j) * vocab ...] (j = 0..num_draft[r], the last one
// the bonus position), drafts at drafts[draft_offset[r] + j], the generator keyed by
// (seeds[r], request[r], first_pos[r] + ..., purpose): out[r * width ...], -1 padded.
extern "C" __global__ void rejection_random(
    int n_rows, unsigned vocab, int width, const int* __restrict__ discard,
    const int* __restrict__ first_target, const int* __restrict__ num_draft,
    const int* __restrict__ draft_offset, const int* __restrict__ drafts,
    const unsigned long long* __restrict__ seeds, const unsigned* __restrict__ request,
    const unsigned* __restrict__ first_pos, const double* __restrict__ probs,
    long long* __restrict__ out)
{
    __shared__ double sh_d[RR_THREADS];
    __shared__ unsigned sh_i[RR_THREADS];
    __shared__ int sh_state[2]; // emitted count, rejected draft (-1: none)
    for (int r = blockIdx.x; r < n_rows; r += gridDim.x) {
        long long* row = out + (long long)r * width;
        for (int j = threadIdx.x; j < width; j += RR_THREADS) row[j] = -1;
        __syncthreads();
        if (discard[r]) continue;
        const int n = num_draft[r];
        const unsigned p0 = first_pos[r];
        const unsigned long long seed = seeds[r];
        const double* base = probs + (long long)first_target[r] * vocab;
        // 1. the bonus sample, drawn first.
        const unsigned bonus = rr_race(base + (long long)n * vocab, vocab, -1, seed, request[r], p0 + (unsigned)n, 1u,
                                       sh_d, sh_i);
        // 2. the uniforms, in draft order.
        if (threadIdx.x == 0) {
            int j = 0;
            for (; j < n; ++j) {
                const int d = drafts[draft_offset[r] + j];
                const philox_out o = philox4x32_10(request[r], p0 + (unsigned)j, 2u, 0u, (unsigned)seed,
                                                   (unsigned)(seed >> 32));
                const float u = (float)(o.w[0] >> 8) * (float)TWO_M24;
                if (base[(long long)j * vocab + d] >= (double)u) {
                    row[j] = d;
                } else {
                    break;
                }
            }
            sh_state[0] = j;
            sh_state[1] = j < n ? j : -1;
        }
        __syncthreads();
        const int rejected = sh_state[1];
        if (rejected >= 0) {
            // 3. the recovered token from the row's shared exponential vector.
            const int d = drafts[draft_offset[r] + rejected];
            const unsigned t = rr_race(base + (long long)rejected * vocab, vocab, d, seed, request[r], p0, 3u, sh_d, sh_i);
            if (threadIdx.x == 0) row[rejected] = t;
        } else if (threadIdx.x == 0) {
            row[n] = bonus;
        }
        __syncthreads();
    }
}
