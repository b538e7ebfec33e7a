/* AVX2 + FMA (+ F16C) kernels, for x86-64 CPUs without AVX-512 (Haswell to
 * Alder Lake, Zen 1-3).
 *
 * Matrix products. RB rows are decoded a chunk of columns at a time into a
 * stack buffer as exact f32 (block scales are powers of two, so folding them
 * in loses nothing), then an RB x TB register tile of accumulators runs over
 * the chunk. Per (token, row) the sum uses one 8-lane accumulator: lane j
 * takes columns k = j (mod 8) in ascending order across chunks (a last
 * partial group padded with zero weights and zero activations), then the
 * lanes are folded pairwise (i+4, i+2, i+1). One path for every n, so the
 * result depends on neither n, the token tiling, r0 nor r1. The e4m3act
 * entries are the fp32 ones (their products are exact either way). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "formats.h"

const dsv4_kernels *kernels_avx2(void);

#define CHUNK 512 /* columns decoded at a time */
#define RB 4      /* rows per tile */
#define TB 2      /* tokens per tile: RB*TB = 8 accumulators, 4 weight registers */
#define TG 32     /* tokens whose accumulators live across chunks */

enum { W_F32, W_BF16, W_FP8, W_FP4 };

typedef struct {
    int fmt;
    const void *W;
    const uint8_t *scale;
    int cols;
} wsrc;

static inline __m256i lane_mask(int left)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline float fold8(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}

/* Twice the e2m1 value of each code: integers, exact once scaled by half the block scale. */
static const int8_t e2m1_x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* 16 bytes of e4m3 in one 128-column block: e4m3 -> f16 is a bit move (the
 * value becomes x * 2^-8, subnormals included; the 2^8 rides on the scale),
 * then vcvtph2ps. NaN codes stay NaN. */
static inline void fp8x16(const uint8_t *p, __m256 s256, float *dst)
{
    __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
    __m256i h = _mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16((short)0xbf80));
    __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x3f80)), _mm256_set1_epi16(0x3f80));
    h = _mm256_blendv_epi8(h, _mm256_set1_epi16(0x7e00), nan);
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), s256));
    _mm256_storeu_ps(dst + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), s256));
}

static inline void i8x16_to_f32(__m128i v, __m256 s, float *dst)
{
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), s));
    _mm256_storeu_ps(dst + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))), s));
}

/* Columns [k0, k0 + len) of row r into buf, zero-padded to a multiple of 8. */
static void decode_chunk(const wsrc *s, int r, int k0, int len, float *buf)
{
    int cols = s->cols, k = 0;
    switch (s->fmt) {
    case W_F32:
        memcpy(buf, (const float *)s->W + (size_t)r * cols + k0, (size_t)len * sizeof *buf);
        k = len;
        break;
    case W_BF16: {
        const uint16_t *w = (const uint16_t *)s->W + (size_t)r * cols + k0;
        for (; k + 8 <= len; k += 8) {
            __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k)));
            _mm256_storeu_ps(buf + k, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        }
        for (; k < len; k++)
            buf[k] = fmt_bf16_to_f32(w[k]);
        break;
    }
    case W_FP8: {
        const uint8_t *w = (const uint8_t *)s->W + (size_t)r * cols;
        const uint8_t *srow = s->scale + (size_t)(r / 128) * ((cols + 127) / 128);
        for (; k < len; k++) {
            int c = k0 + k;
            float sc = fmt_e8m0_to_f32(srow[c / 128]);
            if (k + 16 <= len && c % 128 <= 112) { /* 16 columns within one scale block */
                fp8x16(w + c, _mm256_set1_ps(sc * 256.0f), buf + k);
                k += 15;
            } else {
                buf[k] = fmt_e4m3_to_f32(w[c]) * sc;
            }
        }
        break;
    }
    case W_FP4: {
        const uint8_t *w = (const uint8_t *)s->W + (size_t)r * (cols / 2);
        const uint8_t *srow = s->scale + (size_t)r * (cols / 32);
        const __m128i lut = _mm_loadu_si128((const __m128i *)e2m1_x2), nib = _mm_set1_epi8(15);
        for (; k < len; k += 32) { /* chunks hold whole 32-column blocks */
            int c = k0 + k;
            __m128i b = _mm_loadu_si128((const __m128i *)(w + c / 2));
            __m128i even = _mm_shuffle_epi8(lut, _mm_and_si128(b, nib));
            __m128i odd = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(b, 4), nib));
            __m256 sc = _mm256_set1_ps(fmt_e8m0_to_f32(srow[c / 32]) * 0.5f);
            i8x16_to_f32(_mm_unpacklo_epi8(even, odd), sc, buf + k);
            i8x16_to_f32(_mm_unpackhi_epi8(even, odd), sc, buf + k + 16);
        }
        break;
    }
    }
    for (; k % 8; k++)
        buf[k] = 0.0f;
}

static inline __attribute__((always_inline)) void tile(int nr, int nt, const float *buf, int len,
                                                        const float *X, size_t ldx, int k0,
                                                        __m256 *acc /* [TB][RB] */)
{
    __m256 a[TB][RB];
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++)
        #pragma GCC unroll 4
        for (int i = 0; i < nr; i++)
            a[t][i] = acc[t * RB + i];
    int full = len & ~7, k = 0;
    for (; k < full; k += 8) {
        __m256 w[RB];
        #pragma GCC unroll 4
        for (int i = 0; i < nr; i++)
            w[i] = _mm256_load_ps(buf + i * CHUNK + k);
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            __m256 x = _mm256_loadu_ps(X + (size_t)t * ldx + k0 + k);
            #pragma GCC unroll 4
            for (int i = 0; i < nr; i++)
                a[t][i] = _mm256_fmadd_ps(w[i], x, a[t][i]);
        }
    }
    if (k < len) {
        __m256i m = lane_mask(len - k);
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            __m256 x = _mm256_maskload_ps(X + (size_t)t * ldx + k0 + k, m);
            #pragma GCC unroll 4
            for (int i = 0; i < nr; i++)
                a[t][i] = _mm256_fmadd_ps(_mm256_load_ps(buf + i * CHUNK + k), x, a[t][i]);
        }
    }
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++)
        #pragma GCC unroll 4
        for (int i = 0; i < nr; i++)
            acc[t * RB + i] = a[t][i];
}

#define TILE_CASE(NR, NT)                                                                          \
    case (NR) * 4 + (NT):                                                                          \
        tile(NR, NT, buf, len, X, ldx, k0, acc);                                                   \
        break;

static void tile_dispatch(int nr, int nt, const float *buf, int len, const float *X, size_t ldx,
                          int k0, __m256 *acc)
{
    switch (nr * 4 + nt) {
        TILE_CASE(1, 1) TILE_CASE(1, 2) TILE_CASE(2, 1) TILE_CASE(2, 2)
        TILE_CASE(3, 1) TILE_CASE(3, 2) TILE_CASE(4, 1) TILE_CASE(4, 2)
    }
}

static void matmul_any(float *Y, size_t ldy, const wsrc *s, const float *X, size_t ldx, int n,
                       int r0, int r1)
{
    float buf[RB * CHUNK] __attribute__((aligned(32)));
    __m256 acc[TG * RB];
    for (int rb = r0; rb < r1; rb += RB) {
        int nr = r1 - rb < RB ? r1 - rb : RB;
        for (int g0 = 0; g0 < n; g0 += TG) {
            int ng = n - g0 < TG ? n - g0 : TG;
            for (int i = 0; i < ng * RB; i++)
                acc[i] = _mm256_setzero_ps();
            for (int k0 = 0; k0 < s->cols; k0 += CHUNK) {
                int len = s->cols - k0 < CHUNK ? s->cols - k0 : CHUNK;
                for (int i = 0; i < nr; i++)
                    decode_chunk(s, rb + i, k0, len, buf + i * CHUNK);
                for (int t0 = 0; t0 < ng; t0 += TB) {
                    int nt = ng - t0 < TB ? ng - t0 : TB;
                    tile_dispatch(nr, nt, buf, len, X + (size_t)(g0 + t0) * ldx, ldx, k0, acc + t0 * RB);
                }
            }
            for (int t = 0; t < ng; t++)
                for (int i = 0; i < nr; i++)
                    Y[(size_t)(g0 + t) * ldy + rb + i] = fold8(acc[t * RB + i]);
        }
    }
}

static void matmul_f32_avx2(float *Y, size_t ldy, const float *W, const float *X, size_t ldx, int n,
                            int rows, int cols, int r0, int r1)
{
    (void)rows;
    matmul_any(Y, ldy, &(wsrc){W_F32, W, NULL, cols}, X, ldx, n, r0, r1);
}

static void matmul_bf16_avx2(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx,
                             int n, int rows, int cols, int r0, int r1)
{
    (void)rows;
    matmul_any(Y, ldy, &(wsrc){W_BF16, W, NULL, cols}, X, ldx, n, r0, r1);
}

static void matmul_fp8_avx2(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                            const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    (void)rows;
    matmul_any(Y, ldy, &(wsrc){W_FP8, W, scale, cols}, X, ldx, n, r0, r1);
}

static void matmul_fp4_avx2(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                            const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    (void)rows;
    matmul_any(Y, ldy, &(wsrc){W_FP4, W, scale, cols}, X, ldx, n, r0, r1);
}

/* ---- indexer scores (f32): per key, heads in order ---- */

static inline float dot_avx2(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int k = 0;
    for (; k + 16 <= n; k += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
    }
    for (; k < n; k += 8) {
        __m256i m = lane_mask(n - k);
        s0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + k, m), _mm256_maskload_ps(b + k, m), s0);
    }
    return fold8(_mm256_add_ps(s0, s1));
}

#define row_dot dot_avx2
#include "index_scores_impl.h"
#undef row_dot

/* ---- attention: attend_impl.h over 8-lane vectors ---- */

#define VLEN 8
typedef __m256 vec;

static inline vec vzero(void) { return _mm256_setzero_ps(); }
static inline vec vset1(float x) { return _mm256_set1_ps(x); }
static inline vec vadd(vec a, vec b) { return _mm256_add_ps(a, b); }
static inline vec vsub(vec a, vec b) { return _mm256_sub_ps(a, b); }
static inline vec vdiv(vec a, vec b) { return _mm256_div_ps(a, b); }
static inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline vec vmul(vec a, vec b) { return _mm256_mul_ps(a, b); }
static inline vec vmin(vec a, vec b) { return _mm256_min_ps(a, b); }
static inline vec vmax(vec a, vec b) { return _mm256_max_ps(a, b); }
static inline float vsum(vec v) { return fold8(v); }

static inline vec vload_n(const float *p, int left)
{
    return left >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask(left));
}

static inline void vstore_n(float *p, vec v, int left)
{
    if (left >= 8)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, lane_mask(left), v);
}

static inline vec vkeep_n(vec v, int left)
{
    return _mm256_and_ps(v, _mm256_castsi256_ps(lane_mask(left)));
}

/* Cephes-style expf (as exp512.h), with 2^n applied in two halves so that
 * n in [-150, 150] neither overflows the exponent field early nor skips
 * gradual underflow; the clamp sends +-inf to inf / 0 (NaN passes through). */
static inline vec vexp(vec x)
{
    x = _mm256_max_ps(_mm256_set1_ps(-104.0f), _mm256_min_ps(_mm256_set1_ps(89.0f), x));
    vec n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vec r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    vec p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    vec e = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    /* NaN in, NaN out (the integer path above lost it) */
    return _mm256_blendv_ps(e, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* Round to nearest even at bit 16 (the weights are finite and >= 0). */
static inline vec vround_bf16(vec v)
{
    __m256i b = _mm256_castps_si256(v);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    b = _mm256_add_epi32(b, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff)));
    return _mm256_castsi256_ps(_mm256_and_si256(b, _mm256_set1_epi32((int)0xffff0000u)));
}

#include "attend_impl.h"
#include "swiglu_impl.h"

/* bf16 row elements widened to f32 as loaded: the bf16 tail of FP8 rows
 * (attend_fp8_rows.h); a short vector goes through a zeroed buffer, as AVX2
 * has no masked 16-bit load. */
static inline vec vload_bf16_n(const uint16_t *p, int left)
{
    __m128i b;
    if (left >= 8) {
        b = _mm_loadu_si128((const __m128i *)p);
    } else {
        uint16_t t[8] = {0};
        if (left > 0)
            memcpy(t, p, (size_t)left * sizeof *t);
        b = _mm_loadu_si128((const __m128i *)t);
    }
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
}

/* 8 e4m3 codes times 2^-8 times s, for attend_fp8 (attend_fp8_rows.h):
 * fp8x16's bit move to f16, without its NaN check (a row's NaNs are in
 * its scale). */
static inline vec vload_e4m3_x256(const uint8_t *p, vec s)
{
    __m128i b = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p));
    __m128i h = _mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16((short)0xbf80));
    return _mm256_mul_ps(_mm256_cvtph_ps(h), s);
}

#include "attend_fp8_rows.h"

/* The FP4-key indexer has no AVX2 version yet: the scalar one (same bits). */
static void index_scores_fp4_scalar(float *scores, const int8_t *q_codes, const float *q_scale,
                                    const float *w, const uint8_t *keys, const uint8_t *key_scale,
                                    int n_keys, int n_heads, int dim)
{
    kernels_scalar()->index_scores_fp4(scores, q_codes, q_scale, w, keys, key_scale, n_keys, n_heads, dim);
}

static const dsv4_kernels avx2_table = {
    .isa = "avx2",
    .matmul_f32 = matmul_f32_avx2,
    .matmul_bf16 = matmul_bf16_avx2,
    .matmul_bf16_bf16act = matmul_bf16_avx2,
    .matmul_fp8 = matmul_fp8_avx2,
    .matmul_fp4 = matmul_fp4_avx2,
    .matmul_fp8_e4m3act = matmul_fp8_avx2, /* exact products: no other math needed */
    .matmul_fp4_e4m3act = matmul_fp4_avx2,
    .index_scores = index_scores_rows,
    .attend = attend_vec,
    .attend_fp8 = attend_fp8_vec,
    .index_scores_fp4 = index_scores_fp4_scalar,
    .swiglu = swiglu_vec,
    .fp4_quant_sim = fmt_fp4_quant_sim,
    .index_query_pack = fmt_index_query_pack,
    .sumsq_bf16 = ops_sumsq_bf16,
    .topk = ops_topk_sampled,
    .act_quant_sim = fmt_act_quant_sim,
};

const dsv4_kernels *kernels_avx2(void)
{
    return &avx2_table;
}
