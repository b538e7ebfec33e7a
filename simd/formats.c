/* Exact conversions between f32 and the narrow formats of the V4 release,
 * and the activation-quantisation simulations built on them. Conversions
 * work on bit patterns (rintf, used for ties-to-even, assumes the default
 * rounding mode) so results do not depend on libm. */
#include "formats.h"
#include "fminmax.h"

#include <math.h>
#include <string.h>

static inline uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* 2^e for e in the normal f32 exponent range [-126, 127]. */
static inline float pow2f(int e)
{
    return bits_f32((uint32_t)(e + 127) << 23);
}

float fmt_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t fmt_f32_to_bf16(float x)
{
    uint32_t u = f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u); /* quiet the NaN; truncation could turn it into inf */
    u += 0x7fffu + ((u >> 16) & 1u);            /* carry into the exponent is the correct rounding */
    return (uint16_t)(u >> 16);
}

float fmt_round_bf16(float x)
{
    return fmt_bf16_to_f32(fmt_f32_to_bf16(x));
}

/* fmt_round_bf16 without the branch, on the f32 bits: a NaN keeps its top
 * half with the quiet bit set, anything else gets the carry of ties-to-even.
 * Written so that the compiler vectorises it (a branch-free select over
 * whole blocks: at -O2 gcc vectorises only loops of a known trip count). */
static inline uint32_t round_bf16_bits(uint32_t u)
{
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    uint32_t quiet_nan = (u & 0xffff0000u) | 0x00400000u;
    return (u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded;
}

#define ROUND_BLOCK 64

/* Also built for AVX-512 and AVX2, picked at load time: release numerics
 * round every activation of a pp512 run several times, and the baseline
 * build vectorises this loop 4 wide only. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void fmt_round_bf16_array(float *x, size_t n)
{
    size_t i = 0;
    for (; i + ROUND_BLOCK <= n; i += ROUND_BLOCK) {
        uint32_t u[ROUND_BLOCK];
        memcpy(u, x + i, sizeof u);
        for (int j = 0; j < ROUND_BLOCK; j++)
            u[j] = round_bf16_bits(u[j]);
        memcpy(x + i, u, sizeof u);
    }
    for (; i < n; i++)
        x[i] = bits_f32(round_bf16_bits(f32_bits(x[i])));
}

float fmt_e4m3_to_f32(uint8_t b)
{
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t e = (b >> 3) & 15u, m = b & 7u;
    if (e == 15 && m == 7)
        return bits_f32(sign | 0x7fc00000u);
    if (e == 0) /* subnormal: m * 2^-9, exact in f32 */
        return bits_f32(f32_bits((float)m * (1.0f / 512.0f)) | sign);
    return bits_f32(sign | ((e + 120u) << 23) | (m << 20));
}

uint8_t fmt_f32_to_e4m3(float x)
{
    uint32_t u = f32_bits(x);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7f;
    if (a >= 0x43e00000u) /* >= 448 (includes inf): saturate */
        return sign | 0x7e;
    if (a < 0x3c800000u) {
        /* Below 2^-6 the e4m3 grid is uniform (step 2^-9); scaling by 512 is
         * exact and rintf rounds half to even. m = 8 is code 0x08 = 2^-6. */
        float m = rintf(bits_f32(a) * 512.0f);
        return sign | (uint8_t)m;
    }
    /* Normal: drop 20 mantissa bits with round-half-even; a mantissa carry
     * moves into the exponent, which is the right answer. */
    uint32_t r = (a + 0x7ffffu + ((a >> 20) & 1u)) >> 20;
    uint32_t code = r - (120u << 3);
    if (code > 0x7e)
        code = 0x7e;
    return sign | (uint8_t)code;
}

float fmt_e8m0_to_f32(uint8_t b)
{
    if (b == 0xff)
        return bits_f32(0x7fc00000u);
    if (b == 0) /* 2^-127 is subnormal in f32 */
        return bits_f32(0x00400000u);
    return bits_f32((uint32_t)b << 23);
}

static const float e2m1_values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

float fmt_e2m1_to_f32(uint8_t code)
{
    float v = e2m1_values[code & 7];
    return (code & 8) ? -v : v;
}

/* Nearest e2m1 value of |v| <= 6 (already clamped), ties to the even code.
 * Within each binade the grid is uniform, and an even multiple of the step
 * is exactly a code with mantissa bit 0, so rintf (half to even) on the
 * multiple implements RNE. */
static inline float e2m1_round(float v)
{
    float a = fabsf(v), r;
    if (a < 2.0f)
        r = rintf(a * 2.0f) * 0.5f;
    else if (a < 4.0f)
        r = rintf(a);
    else
        r = rintf(a * 0.5f) * 2.0f;
    return copysignf(r, v);
}

/* 2^ceil(log2(t)) for a positive normal t, as the official kernel computes it
 * from the bits: exponent, plus one when any mantissa bit is set. */
static inline int ceil_log2_bits(float t)
{
    uint32_t u = f32_bits(t);
    int e = (int)((u >> 23) & 0xffu) - 127;
    e += (u & 0x7fffffu) != 0;
    return e > 126 ? 126 : e; /* only an inf/NaN block gets here; keep 2^-e a normal */
}

static float block_amax(const float *x, size_t n)
{
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++)
        amax = max_f32(amax, fabsf(x[i]));
    return amax;
}

int fmt_act_quant_exp(float amax)
{
    /* The official kernel multiplies by the f32 1/448 (not divides); the
     * product decides the mantissa test, so do the same. */
    return ceil_log2_bits(fmaxf(amax, 1e-4f) * (1.0f / 448.0f));
}

void fmt_act_quant_sim(float *x, size_t n, size_t block)
{
    for (size_t b0 = 0; b0 < n; b0 += block) {
        size_t len = n - b0 < block ? n - b0 : block;
        float *xb = x + b0;
        int e = fmt_act_quant_exp(block_amax(xb, len));
        float s = pow2f(e), inv_s = pow2f(-e);
        for (size_t i = 0; i < len; i++) {
            float q = min_f32(max_f32(xb[i] * inv_s, -448.0f), 448.0f);
            xb[i] = fmt_e4m3_to_f32(fmt_f32_to_e4m3(q)) * s;
        }
    }
}

/* The exponent of an FP4 block's scale (official fp4_act_quant). */
int fmt_fp4_quant_exp(float amax)
{
    return ceil_log2_bits(fmaxf(amax, 6.0f * 0x1p-126f) * (1.0f / 6.0f));
}

void fmt_fp4_quant_sim(float *x, size_t n, size_t block)
{
    for (size_t b0 = 0; b0 < n; b0 += block) {
        size_t len = n - b0 < block ? n - b0 : block;
        float *xb = x + b0;
        int e = fmt_fp4_quant_exp(block_amax(xb, len));
        float s = pow2f(e), inv_s = pow2f(-e);
        for (size_t i = 0; i < len; i++) {
            float q = min_f32(max_f32(xb[i] * inv_s, -6.0f), 6.0f);
            xb[i] = e2m1_round(q) * s;
        }
    }
}

/* e2m1 code of a value already on the grid (|v| in {0, .5, 1, 1.5, 2, 3, 4, 6}). */
static uint8_t e2m1_code(float v)
{
    static const uint8_t by_twice[13] = {0, 1, 2, 3, 4, 0, 5, 0, 6, 0, 0, 0, 7};
    return (uint8_t)(by_twice[(int)(fabsf(v) * 2.0f)] | (signbit(v) ? 8 : 0));
}

void fmt_fp4_quant_codes(const float *x, size_t n, size_t block, uint8_t *codes, uint8_t *scales)
{
    for (size_t b0 = 0; b0 < n; b0 += block) {
        size_t len = n - b0 < block ? n - b0 : block;
        int e = fmt_fp4_quant_exp(block_amax(x + b0, len));
        float inv_s = pow2f(-e);
        scales[b0 / block] = (uint8_t)(e + 127);
        for (size_t i = 0; i < len; i++)
            codes[b0 + i] = e2m1_code(e2m1_round(min_f32(max_f32(x[b0 + i] * inv_s, -6.0f), 6.0f)));
    }
}

#define KV_BLOCK 64

size_t fmt_kv_row_bytes(int dim, int tail)
{
    size_t head = (size_t)(dim - tail);
    return 2 * (size_t)tail + head + (head + KV_BLOCK - 1) / KV_BLOCK;
}

void fmt_kv_row_encode(uint8_t *row, const float *x, int dim, int tail)
{
    int head = dim - tail;
    uint8_t *codes = row + 2 * (size_t)tail, *scales = codes + head;
    for (int i = 0; i < tail; i++) {
        uint16_t b = fmt_f32_to_bf16(x[head + i]);
        row[2 * i] = (uint8_t)b;
        row[2 * i + 1] = (uint8_t)(b >> 8);
    }
    for (int b0 = 0; b0 < head; b0 += KV_BLOCK) {
        int len = head - b0 < KV_BLOCK ? head - b0 : KV_BLOCK;
        int e = fmt_act_quant_exp(block_amax(x + b0, (size_t)len));
        e = e > 119 ? 119 : e; /* keeps scale * 2^8 finite for the kernels' decode */
        float inv_s = pow2f(-e);
        int nan = 0;
        for (int i = 0; i < len; i++) {
            codes[b0 + i] = fmt_f32_to_e4m3(min_f32(max_f32(x[b0 + i] * inv_s, -448.0f), 448.0f));
            nan |= isnan(x[b0 + i]);
        }
        /* a NaN's block decodes as NaN through its scale, so the kernels
         * need not look for NaN codes */
        scales[b0 / KV_BLOCK] = nan ? 0xff : (uint8_t)(e + 127);
    }
}

float fmt_kv_row_value(const uint8_t *row, int dim, int tail, int i)
{
    int head = dim - tail;
    if (i >= head) {
        int k = i - head;
        return fmt_bf16_to_f32((uint16_t)(row[2 * k] | row[2 * k + 1] << 8));
    }
    const uint8_t *codes = row + 2 * (size_t)tail;
    return fmt_e4m3_to_f32(codes[i]) * fmt_e8m0_to_f32(codes[head + i / KV_BLOCK]);
}

void fmt_kv_row_decode(float *x, const uint8_t *row, int dim, int tail)
{
    for (int i = 0; i < dim; i++)
        x[i] = fmt_kv_row_value(row, dim, tail, i);
}

/* Keys in groups of 16, 16 keys x 4 columns per 64 bytes (kernels.h). */
void fmt_index_key_pack(uint8_t *keys, uint8_t *key_scale, size_t s, int dim, const float *x)
{
    size_t g = s / 16, k = s % 16;
    uint8_t *kg = keys + g * (size_t)dim * 8, *sg = key_scale + g * (size_t)dim / 2;
    for (int b = 0; b < dim / 32; b++) {
        uint8_t codes[32];
        fmt_fp4_quant_codes(x + 32 * b, 32, 32, codes, &sg[16 * b + k]);
        for (int j = 0; j < 4; j++)     /* the block's four 8-column chunks */
            for (int i = 0; i < 4; i++)
                kg[64 * (4 * b + j) + 4 * k + i] = (uint8_t)(codes[8 * j + i] | codes[8 * j + 4 + i] << 4);
    }
}

void fmt_index_query_pack(int8_t *codes_x2, float *scales, const float *x, size_t n)
{
    static const int8_t twice[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
    for (size_t b0 = 0; b0 < n; b0 += 32) {
        uint8_t codes[32], e;
        fmt_fp4_quant_codes(x + b0, 32, 32, codes, &e);
        scales[b0 / 32] = fmt_e8m0_to_f32(e);
        for (int i = 0; i < 32; i++)
            codes_x2[b0 + i] = twice[codes[i]];
    }
}

void fmt_hadamard(float *x, size_t n)
{
    for (size_t h = 1; h < n; h *= 2)
        for (size_t i = 0; i < n; i += 2 * h)
            for (size_t j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    float scale = 1.0f / sqrtf((float)n);
    for (size_t i = 0; i < n; i++)
        x[i] *= scale;
}
