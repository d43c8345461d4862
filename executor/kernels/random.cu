// Random-mode sampling's generator and its logarithm / exponential: the CUDA twins of
// sim/src/philox.rs (Philox4x32-10 keyed by (seed, request, position, purpose); `ln`,
// `exp`, the uniform and exponential variates). Every expression below is written in the
// same order as its Rust twin, from IEEE-754 basic operations only; NVRTC compiles with
// --fmad=false (no contraction), so both give the same bits. ARCHITECTURE.md ("Random-mode
// sampling: the generator") is the specification.
//
// The entry points here exist to prove the twins equal (executor/tests/gpu.rs,
// `philox_ln_exp_twins_are_bit_equal`): raw Philox blocks, ln/exp of generated inputs, and
// the exponential variate of every one of its 2^24 possible words.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

struct philox_out { unsigned w[4]; };

// Random123 philox4x32_R(10, ctr, key).
__device__ __forceinline__ philox_out philox4x32_10(unsigned c0, unsigned c1, unsigned c2, unsigned c3,
                                                    unsigned k0, unsigned k1)
{
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const unsigned long long p0 = (unsigned long long)PHILOX_M0 * c0;
        const unsigned long long p1 = (unsigned long long)PHILOX_M1 * c2;
        const unsigned n0 = (unsigned)(p1 >> 32) ^ c1 ^ k0;
        const unsigned n1 = (unsigned)p1;
        const unsigned n2 = (unsigned)(p0 >> 32) ^ c3 ^ k1;
        const unsigned n3 = (unsigned)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    }
    philox_out o;
    o.w[0] = c0; o.w[1] = c1; o.w[2] = c2; o.w[3] = c3;
    return o;
}

#define TWO_M24 (1.0 / 16777216.0)
#define LN2_HI __longlong_as_double(0x3FE62E42FEE00000LL)
#define LN2_LO __longlong_as_double(0x3DEA39EF35793C76LL)
#define SQRT2 __longlong_as_double(0x3FF6A09E667F3BCDLL)
#define LOG2_E __longlong_as_double(0x3FF71547652B82FELL)

// sim/src/philox.rs `ln`.
__device__ double sr_ln(double x)
{
    if (x != x || x < 0.0) return __longlong_as_double(0x7FF8000000000000LL);
    if (x == 0.0) return __longlong_as_double(0xFFF0000000000000LL);
    if (x == __longlong_as_double(0x7FF0000000000000LL)) return x;
    unsigned long long bits = (unsigned long long)__double_as_longlong(x);
    long long e = 0;
    if ((bits >> 52) == 0) {
        bits = (unsigned long long)__double_as_longlong(x * 18014398509481984.0);
        e = -54;
    }
    e += (long long)((bits >> 52) & 0x7ff) - 1023;
    double m = __longlong_as_double((long long)((bits & 0x000FFFFFFFFFFFFFULL) | 0x3FF0000000000000ULL));
    if (m > SQRT2) {
        m *= 0.5;
        e += 1;
    }
    const double s = (m - 1.0) / (m + 1.0);
    const double z = s * s;
    double p = 1.0 / 23.0;
    p = p * z + 1.0 / 21.0;
    p = p * z + 1.0 / 19.0;
    p = p * z + 1.0 / 17.0;
    p = p * z + 1.0 / 15.0;
    p = p * z + 1.0 / 13.0;
    p = p * z + 1.0 / 11.0;
    p = p * z + 1.0 / 9.0;
    p = p * z + 1.0 / 7.0;
    p = p * z + 1.0 / 5.0;
    p = p * z + 1.0 / 3.0;
    p = p * z + 1.0;
    const double lnm = 2.0 * s * p;
    const double ef = (double)e;
    return ef * LN2_HI + (ef * LN2_LO + lnm);
}

__device__ __forceinline__ double sr_pow2(long long k)
{
    return __longlong_as_double((long long)((unsigned long long)(k + 1023) << 52));
}

// sim/src/philox.rs `exp`.
__device__ double sr_exp(double x)
{
    if (x != x) return x;
    if (x > 709.782712893384) return __longlong_as_double(0x7FF0000000000000LL);
    if (x < -745.2) return 0.0;
    const double kf = floor(x * LOG2_E + 0.5);
    const double r = (x - kf * LN2_HI) - kf * LN2_LO;
    double p = 1.0;
    for (int i = 13; i >= 1; --i) {
        p = 1.0 + p * r / (double)i;
    }
    const long long k = (long long)kf;
    if (k > 1023) return p * sr_pow2(k - 1) * 2.0;
    if (k >= -1022) return p * sr_pow2(k);
    return p * sr_pow2(k + 600) * sr_pow2(-600);
}

// sim/src/philox.rs `open_uniform` and `exponential`.
__device__ __forceinline__ double sr_open_uniform(unsigned x) { return ((double)(x >> 8) + 0.5) * TWO_M24; }
__device__ __forceinline__ double sr_exponential(unsigned x) { return -sr_ln(sr_open_uniform(x)); }

// out[4i..4i+4] = philox4x32_10([c0, c1, c2, c3 + i], [k0, k1]) for i < n.
extern "C" __global__ void philox_blocks(unsigned c0, unsigned c1, unsigned c2, unsigned c3,
                                         unsigned k0, unsigned k1, long long n, unsigned* __restrict__ out)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const philox_out o = philox4x32_10(c0, c1, c2, c3 + (unsigned)i, k0, k1);
        out[4 * i] = o.w[0];
        out[4 * i + 1] = o.w[1];
        out[4 * i + 2] = o.w[2];
        out[4 * i + 3] = o.w[3];
    }
}

// For i < n, with o = philox4x32_10([base + i, 0, 0x1e, 0], [k0, k1]):
// ln_out[i] = ln(x) for x the positive finite binary64 of bits (o0 | o1 << 32) & 0x7FEF...F
// (subnormals and 0 included), exp_out[i] = exp(y) for y = (o2 | o3 << 32) >> 11, times
// 2^-53, times 1490, minus 745 (so y in [-745, 745)).
extern "C" __global__ void ln_exp_inputs(unsigned base, unsigned k0, unsigned k1, long long n,
                                         double* __restrict__ ln_out, double* __restrict__ exp_out)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const philox_out o = philox4x32_10(base + (unsigned)i, 0u, 0x1eu, 0u, k0, k1);
        const unsigned long long a = ((unsigned long long)o.w[0] | ((unsigned long long)o.w[1] << 32)) & 0x7FEFFFFFFFFFFFFFULL;
        const unsigned long long b = ((unsigned long long)o.w[2] | ((unsigned long long)o.w[3] << 32)) >> 11;
        ln_out[i] = sr_ln(__longlong_as_double((long long)a));
        exp_out[i] = sr_exp((double)b * (1.0 / 9007199254740992.0) * 1490.0 - 745.0);
    }
}

// out[k] = exponential(k << 8) for k < 2^24: every value the Exp(1) variate can take.
extern "C" __global__ void exponential_all(double* __restrict__ out)
{
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < (1LL << 24);
         k += (long long)gridDim.x * blockDim.x) {
        out[k] = sr_exponential((unsigned)k << 8);
    }
}
