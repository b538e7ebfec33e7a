/* AVX-512 BF16 matrix products for FP8-simulated activations (release
 * numerics): matmul_fp8_e4m3act and matmul_fp4_e4m3act.
 *
 * Why this is exact. An e2m1 weight has 2 significant bits, an e4m3 weight or
 * activation 4; their e8m0 / act_quant scales are powers of two. So each
 * weight (code x block scale) and each activation is a bf16 number exactly
 * (bf16 keeps 8 significant bits and the fp32 exponent range), and any
 * product of two bf16 numbers is exact in fp32. vdpbf16ps therefore adds the
 * same products the fp32 path adds, with fp32 roundings: only the order of
 * the sum differs (and vdpbf16ps flushes denormals: products below 2^-126,
 * far below the tolerance of any sum we make). This halves the work per
 * weight: one vdpbf16ps takes 32 weights where the fp32 path needs two FMAs
 * and wider decoding.
 *
 * Decoding to bf16 with the block scale folded in (integer ops only):
 *   - e2m1: vpermw from a table of the 8 magnitudes times 2^64 (sign in bit
 *     15, -0 as +0), then a saturating subtract of (191 - s) << 7 from the
 *     exponent field: zero saturates to zero, the rest is code * 2^(s-127)
 *     while s in [2, 191];
 *   - e4m3: a 128-entry table of every magnitude times 2^64 as bf16, scaled
 *     by the same saturating exponent subtract once per 128x128 block (valid
 *     for s in [10, 191]; the NaN code stays NaN), split into its high and
 *     low bytes; then each step of 64 weights is two vpermi2b lookups (VBMI:
 *     the 7-bit code indexes a two-register table), the sign ORed into the
 *     high byte, and two byte unpacks that pair the bytes into bf16 words.
 * A row whose scales fall outside those ranges (never in a release file) is
 * computed by the fp32 kernel instead, so every row's result is still a
 * function of that row alone.
 *
 * Order of the sum, for each (token, row): columns are taken 64 at a time
 * (a "step"; the last one zero-padded) as two vdpbf16ps into one 16-lane
 * accumulator (FP8: in the byte unpacks' order, columns 16L + 0..7 of each
 * 16-column quarter L then columns 16L + 8..15, lane i taking the pair
 * (16(i/4) + 2(i%4), +1) of its half; FP4: even columns then odd columns,
 * pairs (4i, 4i+2) and (4i+1, 4i+3) per lane), steps in
 * ascending order, then the 16 lanes folded pairwise. The few-token path
 * (weights decoded in registers) and the many-token path (decoded chunks,
 * register tiles) run exactly this sequence, so results do not depend on
 * n, r0 or r1. */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vbmi")

#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "prefetch.h"

const dsv4_kernels *kernels_avx512(void);
void matmul_fp8_avx512bf16(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, int n, int rows, int cols, int r0, int r1);
void matmul_fp4_avx512bf16(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, int n, int rows, int cols, int r0, int r1);

#define STEP 64       /* columns per step */
#define GROUP 128     /* columns per scale context (FP8 block; 4 FP4 blocks) */
#define CHUNK 512     /* columns decoded at a time on the many-token path */
#define RB 4          /* rows per register tile / in-register block */
#define RBD 64        /* rows decoded per chunk on the many-token path: the activations'
                         bf16 conversion per chunk is shared by this many rows */
#define TB 6          /* tokens per register tile */
#define TG 48         /* tokens whose accumulators live across chunks */
#define GEMM_MIN_N 4  /* below this, decode in registers */
#define MV_RB 8       /* most rows per in-register block (one token, FP4): the activations'
                         conversion is shared by more rows */

#define FP4_S_MIN 2
#define FP8_S_MIN 10
#define S_MAX 191

typedef struct {
    int fp4;
    const uint8_t *W, *scale;
    int rows, cols;
} qmat;

static inline __mmask16 m16(int left)
{
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
}

static inline __mmask32 m32(int left)
{
    return left >= 32 ? (__mmask32)0xffffffffu : left <= 0 ? (__mmask32)0 : (__mmask32)((1u << left) - 1);
}

static inline __mmask64 m64(int left)
{
    return left >= 64 ? ~(__mmask64)0 : left <= 0 ? (__mmask64)0 : (((__mmask64)1 << left) - 1);
}

static inline float fold16(__m512 v)
{
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    __m128 d = _mm_add_ss(c, _mm_movehdup_ps(c));
    return _mm_cvtss_f32(d);
}

static inline __m512 dp(__m512 acc, __m512i w, __m512i x)
{
    return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x);
}

/* ---- tables ---- */

/* e2m1 magnitude x 2^64 as bf16, sign in bit 15, -0 as +0; twice, so vpermw
 * may index with the low 5 bits of a byte (bit 4 belongs to the high nibble). */
#define E2M1_BF16 0, 0x5f00, 0x5f80, 0x5fc0, 0x6000, 0x6040, 0x6080, 0x60c0, \
                  0, 0xdf00, 0xdf80, 0xdfc0, 0xe000, 0xe040, 0xe080, 0xe0c0
static const uint16_t e2m1_lut[32] __attribute__((aligned(64))) = {E2M1_BF16, E2M1_BF16};

/* Every e4m3 magnitude code c (0..127) x 2^64 as bf16: subnormals (c < 8)
 * are m/8 * 2^-6, normals ((c << 4) + 0x5c00) place exponent and mantissa;
 * 0x7f is NaN. The 2^64 keeps every entry normal before the scale. */
static const uint16_t e4m3_bf16_lut[128] __attribute__((aligned(64))) = {
    0x0000, 0x5b00, 0x5b80, 0x5bc0, 0x5c00, 0x5c20, 0x5c40, 0x5c60,
    0x5c80, 0x5c90, 0x5ca0, 0x5cb0, 0x5cc0, 0x5cd0, 0x5ce0, 0x5cf0,
    0x5d00, 0x5d10, 0x5d20, 0x5d30, 0x5d40, 0x5d50, 0x5d60, 0x5d70,
    0x5d80, 0x5d90, 0x5da0, 0x5db0, 0x5dc0, 0x5dd0, 0x5de0, 0x5df0,
    0x5e00, 0x5e10, 0x5e20, 0x5e30, 0x5e40, 0x5e50, 0x5e60, 0x5e70,
    0x5e80, 0x5e90, 0x5ea0, 0x5eb0, 0x5ec0, 0x5ed0, 0x5ee0, 0x5ef0,
    0x5f00, 0x5f10, 0x5f20, 0x5f30, 0x5f40, 0x5f50, 0x5f60, 0x5f70,
    0x5f80, 0x5f90, 0x5fa0, 0x5fb0, 0x5fc0, 0x5fd0, 0x5fe0, 0x5ff0,
    0x6000, 0x6010, 0x6020, 0x6030, 0x6040, 0x6050, 0x6060, 0x6070,
    0x6080, 0x6090, 0x60a0, 0x60b0, 0x60c0, 0x60d0, 0x60e0, 0x60f0,
    0x6100, 0x6110, 0x6120, 0x6130, 0x6140, 0x6150, 0x6160, 0x6170,
    0x6180, 0x6190, 0x61a0, 0x61b0, 0x61c0, 0x61d0, 0x61e0, 0x61f0,
    0x6200, 0x6210, 0x6220, 0x6230, 0x6240, 0x6250, 0x6260, 0x6270,
    0x6280, 0x6290, 0x62a0, 0x62b0, 0x62c0, 0x62d0, 0x62e0, 0x62f0,
    0x6300, 0x6310, 0x6320, 0x6330, 0x6340, 0x6350, 0x6360, 0x6370,
    0x6380, 0x6390, 0x63a0, 0x63b0, 0x63c0, 0x63d0, 0x63e0, 0x7fc0};

/* Byte gathers that split 64 bf16 words (two registers) into their low and
 * high bytes, and the word order of FP8 activations matching the byte
 * unpacks (see the header). */
#define BYTE_IDX(o) o, o + 2, o + 4, o + 6, o + 8, o + 10, o + 12, o + 14
static const uint8_t idx_low_bytes[64] __attribute__((aligned(64))) = {
    BYTE_IDX(0), BYTE_IDX(16), BYTE_IDX(32), BYTE_IDX(48),
    BYTE_IDX(64), BYTE_IDX(80), BYTE_IDX(96), BYTE_IDX(112)};
static const uint8_t idx_high_bytes[64] __attribute__((aligned(64))) = {
    BYTE_IDX(1), BYTE_IDX(17), BYTE_IDX(33), BYTE_IDX(49),
    BYTE_IDX(65), BYTE_IDX(81), BYTE_IDX(97), BYTE_IDX(113)};
#undef BYTE_IDX
#define QUARTER(o) o, o + 1, o + 2, o + 3, o + 4, o + 5, o + 6, o + 7
static const uint16_t idx_fp8_first[32] __attribute__((aligned(64))) = {
    QUARTER(0), QUARTER(16), QUARTER(32), QUARTER(48)};
static const uint16_t idx_fp8_second[32] __attribute__((aligned(64))) = {
    QUARTER(8), QUARTER(24), QUARTER(40), QUARTER(56)};
#undef QUARTER

/* Word permutations: deinterleave 64 activations (FP4 even/odd columns) and
 * spread 4 FP4 block scales over the two halves of a step. */
static const uint16_t idx_even[32] __attribute__((aligned(64))) = {
    0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
    32, 34, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 62};
static const uint16_t idx_odd[32] __attribute__((aligned(64))) = {
    1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
    33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
static const uint16_t idx_step_scale[2][32] __attribute__((aligned(64))) = {
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}};

/* ---- per-row scale context for one GROUP of columns ---- */

typedef struct {
    __m512i a;              /* FP4: (191 - s) << 7 per block (words 0..3) */
    __m512i lo0, lo1, hi0, hi1; /* FP8: low / high bytes of the scaled e4m3 table, codes 0-63 and 64-127 */
} gctx;

static inline gctx group_ctx(const qmat *q, int r, int g)
{
    gctx c;
    if (q->fp4) {
        int nb = q->cols / 32, b0 = g * (GROUP / 32);
        int cnt = nb - b0 < 4 ? nb - b0 : 4;
        __m128i s = _mm_maskz_loadu_epi8((__mmask16)((1u << cnt) - 1), q->scale + (size_t)r * nb + b0);
        __m512i w = _mm512_cvtepu8_epi16(_mm256_castsi128_si256(s));
        c.a = _mm512_slli_epi16(_mm512_sub_epi16(_mm512_set1_epi16(S_MAX), w), 7);
        c.lo0 = c.lo1 = c.hi0 = c.hi1 = c.a;
    } else {
        int nb = (q->cols + 127) / 128;
        /* unsigned: out-of-range scales (their rows are redone in fp32) must not overflow here */
        unsigned s = q->scale[(size_t)(r / 128) * nb + g];
        __m512i d = _mm512_set1_epi16((short)(uint16_t)((S_MAX - s) << 7)), t[4];
        for (int i = 0; i < 4; i++)
            t[i] = _mm512_subs_epu16(_mm512_load_si512(e4m3_bf16_lut + 32 * i), d);
        t[3] = _mm512_mask_mov_epi16(t[3], (__mmask32)1 << 31, _mm512_set1_epi16(0x7fc0));
        const __m512i lo = _mm512_load_si512(idx_low_bytes), hi = _mm512_load_si512(idx_high_bytes);
        c.lo0 = _mm512_permutex2var_epi8(t[0], lo, t[1]);
        c.hi0 = _mm512_permutex2var_epi8(t[0], hi, t[1]);
        c.lo1 = _mm512_permutex2var_epi8(t[2], lo, t[3]);
        c.hi1 = _mm512_permutex2var_epi8(t[2], hi, t[3]);
        c.a = c.lo0;
    }
    return c;
}

/* ---- decoding one step of one row to bf16 (w0, w1) ---- */


static inline void fp8x64(__m512i raw, const gctx *c, __m512i *w0, __m512i *w1)
{
    __m512i hb = _mm512_permutex2var_epi8(c->hi0, raw, c->hi1); /* index bit 7 (the sign) is ignored */
    __m512i lb = _mm512_permutex2var_epi8(c->lo0, raw, c->lo1);
    hb = _mm512_ternarylogic_epi32(hb, raw, _mm512_set1_epi8((char)0x80), 0xf8); /* hb | (raw & 0x80) */
    *w0 = _mm512_unpacklo_epi8(lb, hb);
    *w1 = _mm512_unpackhi_epi8(lb, hb);
}

static inline __attribute__((always_inline)) void decode_step(const qmat *q, int r, int k, int len,
                                                               const gctx *c, int j, __m512i *w0,
                                                               __m512i *w1)
{
    if (q->fp4) {
        const uint8_t *p = q->W + (size_t)r * (q->cols / 2) + k / 2;
        __m256i raw = len >= STEP ? _mm256_loadu_si256((const __m256i *)p) : _mm256_maskz_loadu_epi8(m32(len / 2), p);
        __m512i b = _mm512_cvtepu8_epi16(raw);
        const __m512i lut = _mm512_load_si512(e2m1_lut);
        __m512i d = _mm512_permutexvar_epi16(_mm512_load_si512(idx_step_scale[j]), c->a);
        *w0 = _mm512_subs_epu16(_mm512_permutexvar_epi16(b, lut), d);
        *w1 = _mm512_subs_epu16(_mm512_permutexvar_epi16(_mm512_srli_epi16(b, 4), lut), d);
    } else {
        const uint8_t *p = q->W + (size_t)r * q->cols + k;
        fp8x64(len >= STEP ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(m64(len), p), c, w0, w1);
    }
}

/* ---- activations of one step to bf16 in the weights' order ---- */

static inline __attribute__((always_inline)) void prep_step(int fp4, const float *x, int len, __m512i *x0,
                                                             __m512i *x1)
{
    __m512 f0 = _mm512_maskz_loadu_ps(m16(len), x), f1 = _mm512_maskz_loadu_ps(m16(len - 16), x + 16);
    __m512 f2 = _mm512_maskz_loadu_ps(m16(len - 32), x + 32), f3 = _mm512_maskz_loadu_ps(m16(len - 48), x + 48);
    __m512i a = (__m512i)_mm512_cvtne2ps_pbh(f1, f0), b = (__m512i)_mm512_cvtne2ps_pbh(f3, f2);
    *x0 = _mm512_permutex2var_epi16(a, _mm512_load_si512(fp4 ? idx_even : idx_fp8_first), b);
    *x1 = _mm512_permutex2var_epi16(a, _mm512_load_si512(fp4 ? idx_odd : idx_fp8_second), b);
}

/* ---- few tokens: decode in registers, nr rows x nt tokens ---- */

static inline __attribute__((always_inline)) void matvec_block(int nr, int nt, float *Y, size_t ldy,
                                                                const qmat *q, const float *X,
                                                                size_t ldx, int rb, int r1)
{
    __m512 acc[MV_RB][GEMM_MIN_N - 1];
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            acc[i][t] = _mm512_setzero_ps();
    int cols = q->cols;
    size_t row_bytes = q->fp4 ? (size_t)cols / 2 : (size_t)cols, step_bytes = (size_t)nr * (q->fp4 ? STEP / 2 : STEP);
    int next_row = rb + nr < r1 ? rb + nr : r1; /* prefetch within the caller's rows only */
    size_t left = (size_t)(r1 - next_row) * row_bytes;
    const char *next = (const char *)q->W + (size_t)next_row * row_bytes;
    for (int g = 0; g * GROUP < cols; g++) {
        gctx c[MV_RB];
        if (q->fp4 && g == 0) /* the next block's scales, a short stream of their own */
            prefetch_next_block((const char *)q->scale + (size_t)next_row * (cols / 32), 0, (size_t)nr * (cols / 32),
                                (size_t)(r1 - next_row) * (cols / 32));
        #pragma GCC unroll 8
        for (int i = 0; i < nr; i++) /* FP8 rows of one 128-row block share their scale */
            c[i] = i > 0 && !q->fp4 && (rb + i) / 128 == (rb + i - 1) / 128 ? c[i - 1] : group_ctx(q, rb + i, g);
        for (int j = 0; j < 2 && g * GROUP + j * STEP < cols; j++) {
            int k = g * GROUP + j * STEP, len = cols - k < STEP ? cols - k : STEP;
            __m512i x0[GEMM_MIN_N - 1], x1[GEMM_MIN_N - 1];
            prefetch_next_block(next, (size_t)(k / STEP) * step_bytes, step_bytes, left);
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++)
                prep_step(q->fp4, X + (size_t)t * ldx + k, len, &x0[t], &x1[t]);
            #pragma GCC unroll 8
            for (int i = 0; i < nr; i++) {
                __m512i w0, w1;
                decode_step(q, rb + i, k, len, &c[i], j, &w0, &w1);
                #pragma GCC unroll 8
                for (int t = 0; t < nt; t++) {
                    acc[i][t] = dp(acc[i][t], w0, x0[t]);
                    acc[i][t] = dp(acc[i][t], w1, x1[t]);
                }
            }
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            Y[(size_t)t * ldy + rb + i] = fold16(acc[i][t]);
}

#define MV_CASE(FP4, NR, NT)                                                                       \
    case (NR) * 4 + (NT):                                                                          \
        for (; rb + (NR) <= r1; rb += (NR))                                                        \
            matvec_block(NR, NT, Y, ldy, &(qmat){FP4, q->W, q->scale, q->rows, q->cols}, X, ldx,  \
                         rb, r1);                                                                  \
        break;

/* One instantiation per format so the decoder's branch folds away. */
#define MATVEC_FN(NAME, FP4, NR1)                                                                  \
    static void NAME(float *Y, size_t ldy, const qmat *q, const float *X, size_t ldx, int n,      \
                     int r0, int r1)                                                               \
    {                                                                                              \
        int rb = r0;                                                                               \
        for (int nr = MV_RB; nr >= 1; nr--) {                                                      \
            switch (nr * 4 + n) {                                                                  \
                MV_CASE(FP4, NR1, 1) MV_CASE(FP4, 4, 2) MV_CASE(FP4, 4, 3)                         \
                MV_CASE(FP4, 1, 1) MV_CASE(FP4, 1, 2) MV_CASE(FP4, 1, 3)                           \
            default:                                                                               \
                break;                                                                             \
            }                                                                                      \
        }                                                                                          \
    }

/* FP4 takes 8 rows for one token; FP8 4, as its 4-register tables per row
 * block would not leave room for 8. */
MATVEC_FN(matvec_fp8, 0, 4)
MATVEC_FN(matvec_fp4, 1, 8)

/* ---- many tokens: decoded chunks and RB x TB register tiles ---- */

#define CSTEPS (CHUNK / STEP)

static inline __attribute__((always_inline)) void tile(int nr, int nt, const __m512i *wb /* [RBD][CSTEPS][2] */,
                                                        const __m512i *xb /* [TG][CSTEPS][2] */, int steps,
                                                        __m512 *acc /* [RBD][TG], at the tile's corner */)
{
    __m512 a[RB][TB];
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            a[i][t] = acc[i * TG + t];
    for (int s = 0; s < steps; s++)
        #pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m512i w[RB];
            #pragma GCC unroll 8
            for (int i = 0; i < nr; i++)
                w[i] = _mm512_load_si512(wb + (i * CSTEPS + s) * 2 + h);
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                __m512i x = _mm512_load_si512(xb + (t * CSTEPS + s) * 2 + h);
                #pragma GCC unroll 8
                for (int i = 0; i < nr; i++)
                    a[i][t] = dp(a[i][t], w[i], x);
            }
        }
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            acc[i * TG + t] = a[i][t];
}

#define TILE_CASE(NR, NT)                                                                          \
    case (NR) * 8 + (NT):                                                                          \
        tile(NR, NT, wb, xb, steps, acc);                                                          \
        break;
#define TILE_ROW(NR) TILE_CASE(NR, 1) TILE_CASE(NR, 2) TILE_CASE(NR, 3) TILE_CASE(NR, 4)            \
    TILE_CASE(NR, 5) TILE_CASE(NR, 6)

static void tile_dispatch(int nr, int nt, const __m512i *wb, const __m512i *xb, int steps, __m512 *acc)
{
    switch (nr * 8 + nt) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4)
    }
}

static void decode_chunk(const qmat *q, int r, int k0, __m512i *out /* [CSTEPS][2] */)
{
    int end = k0 + CHUNK < q->cols ? k0 + CHUNK : q->cols;
    /* this row's next chunk: rows are decoded a chunk at a time, side by
     * side, the pattern the hardware prefetchers follow badly */
    size_t row_bytes = q->fp4 ? (size_t)q->cols / 2 : (size_t)q->cols, chunk_bytes = q->fp4 ? CHUNK / 2 : CHUNK;
    size_t next = (q->fp4 ? (size_t)k0 / 2 : (size_t)k0) + chunk_bytes;
    for (size_t b = next; b < next + chunk_bytes && b < row_bytes; b += 64)
        _mm_prefetch((const char *)q->W + (size_t)r * row_bytes + b, _MM_HINT_T0);
    for (int g = k0 / GROUP; g * GROUP < end; g++) {
        gctx c = group_ctx(q, r, g);
        for (int j = 0; j < 2 && g * GROUP + j * STEP < end; j++) {
            int k = g * GROUP + j * STEP, len = end - k < STEP ? end - k : STEP;
            int s = (k - k0) / STEP;
            if (q->fp4)
                decode_step(&(qmat){1, q->W, q->scale, q->rows, q->cols}, r, k, len, &c, j, &out[2 * s],
                            &out[2 * s + 1]);
            else
                decode_step(&(qmat){0, q->W, q->scale, q->rows, q->cols}, r, k, len, &c, j, &out[2 * s],
                            &out[2 * s + 1]);
        }
    }
}

static void matmul_gemm(float *Y, size_t ldy, const qmat *q, const float *X, size_t ldx, int n, int r0,
                        int r1)
{
    __m512i wb[RBD * CSTEPS * 2], xb[TG * CSTEPS * 2];
    __m512 acc[RBD * TG];
    size_t row_bytes = q->fp4 ? (size_t)q->cols / 2 : (size_t)q->cols;
    for (int rb = r0; rb < r1; rb += RBD) {
        int nrd = r1 - rb < RBD ? r1 - rb : RBD;
        for (int g0 = 0; g0 < n; g0 += TG) {
            int ng = n - g0 < TG ? n - g0 : TG;
            for (int i = 0; i < nrd * TG; i++)
                acc[i] = _mm512_setzero_ps();
            for (int k0 = 0; k0 < q->cols; k0 += CHUNK) {
                int len = q->cols - k0 < CHUNK ? q->cols - k0 : CHUNK;
                int steps = (len + STEP - 1) / STEP;
                if (g0 == 0 && rb + RBD < r1) /* the next row block, over this block's chunks */
                    prefetch_share((const char *)q->W + (size_t)(rb + RBD) * row_bytes,
                                   (size_t)(r1 - rb - RBD < RBD ? r1 - rb - RBD : RBD) * row_bytes, k0 / CHUNK,
                                   (q->cols + CHUNK - 1) / CHUNK);
                for (int i = 0; i < nrd; i++)
                    decode_chunk(q, rb + i, k0, wb + i * CSTEPS * 2);
                for (int t = 0; t < ng; t++)
                    for (int s = 0; s < steps; s++) {
                        int k = k0 + s * STEP, l = q->cols - k < STEP ? q->cols - k : STEP;
                        prep_step(q->fp4, X + (size_t)(g0 + t) * ldx + k, l, &xb[(t * CSTEPS + s) * 2],
                                  &xb[(t * CSTEPS + s) * 2 + 1]);
                    }
                for (int i0 = 0; i0 < nrd; i0 += RB)
                    for (int t0 = 0; t0 < ng; t0 += TB)
                        tile_dispatch(nrd - i0 < RB ? nrd - i0 : RB, ng - t0 < TB ? ng - t0 : TB,
                                      wb + i0 * CSTEPS * 2, xb + t0 * CSTEPS * 2, steps, acc + i0 * TG + t0);
            }
            for (int i = 0; i < nrd; i++)
                for (int t = 0; t < ng; t++)
                    Y[(size_t)(g0 + t) * ldy + rb + i] = fold16(acc[i * TG + t]);
        }
    }
}

/* ---- rows outside the bf16 scale range ---- */

static int scales_in_range(const uint8_t *s, int count, int lo)
{
    for (int i = 0; i < count; i += 64) {
        __mmask64 m = count - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (count - i)) - 1);
        __m512i v = _mm512_maskz_loadu_epi8(m, s + i);
        if (_mm512_mask_cmplt_epu8_mask(m, v, _mm512_set1_epi8((char)lo)) |
            _mm512_mask_cmpgt_epu8_mask(m, v, _mm512_set1_epi8((char)S_MAX)))
            return 0;
    }
    return 1;
}

static int row_in_range(const qmat *q, int r)
{
    if (q->fp4)
        return scales_in_range(q->scale + (size_t)r * (q->cols / 32), q->cols / 32, FP4_S_MIN);
    int nb = (q->cols + 127) / 128;
    return scales_in_range(q->scale + (size_t)(r / 128) * nb, nb, FP8_S_MIN);
}

static void matmul_q(const qmat *q, float *Y, size_t ldy, const float *X, size_t ldx, int n, int r0, int r1)
{
    if (n <= 0 || r1 <= r0)
        return;
    if (n >= GEMM_MIN_N)
        matmul_gemm(Y, ldy, q, X, ldx, n, r0, r1);
    else if (q->fp4)
        matvec_fp4(Y, ldy, q, X, ldx, n, r0, r1);
    else
        matvec_fp8(Y, ldy, q, X, ldx, n, r0, r1);
    const dsv4_kernels *f = kernels_avx512();
    for (int r = r0; r < r1; r++)
        if (!row_in_range(q, r))
            (q->fp4 ? f->matmul_fp4 : f->matmul_fp8)(Y, ldy, q->W, q->scale, X, ldx, n, q->rows, q->cols,
                                                      r, r + 1);
}

void matmul_fp8_avx512bf16(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    qmat q = {0, W, scale, rows, cols};
    matmul_q(&q, Y, ldy, X, ldx, n, r0, r1);
}

void matmul_fp4_avx512bf16(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    qmat q = {1, W, scale, rows, cols};
    matmul_q(&q, Y, ldy, X, ldx, n, r0, r1);
}
