/* The release-numerics bf16 decoders shared by avx512_bf16.c (vdpbf16ps)
 * and avx512_amx.c (AMX tiles): FP8 (e4m3, 128x128 e8m0 blocks) and FP4
 * (e2m1, e8m0 per 32) weights to bf16 with the block scale folded in, a
 * "step" of 64 columns at a time as two vectors of 32, and the activations
 * of a step to bf16 in the same column order. Why the values are exact, the
 * tricks and the order: avx512_bf16.c's header. Include after a
 * `#pragma GCC target` that enables AVX-512 F/BW/VL/DQ, BF16 and VBMI. */
#ifndef DSV4_SIMD_BF16_DECODE_H
#define DSV4_SIMD_BF16_DECODE_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "e4m3_table.h"
#include "masks.h"

#define STEP 64   /* columns per step */
#define GROUP 128 /* columns per scale context (FP8 block; 4 FP4 blocks) */

#define FP4_S_MIN 2 /* FP8_S_MIN and S_MAX: e4m3_table.h */

typedef struct {
    int fp4;
    const uint8_t *W, *scale;
    int rows, cols;
} qmat;

/* ---- tables ---- */

/* e2m1 magnitude x 2^64 as bf16, sign in bit 15, -0 as +0; twice, so vpermw
 * may index with the low 5 bits of a byte (bit 4 belongs to the high nibble). */
#define E2M1_BF16 0, 0x5f00, 0x5f80, 0x5fc0, 0x6000, 0x6040, 0x6080, 0x60c0, \
                  0, 0xdf00, 0xdf80, 0xdfc0, 0xe000, 0xe040, 0xe080, 0xe0c0
static const uint16_t e2m1_lut[32] __attribute__((aligned(64))) = {E2M1_BF16, E2M1_BF16};

/* The word order of FP8 activations matching the byte unpacks (see the
 * header). */
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
        e4m3_tables t = e4m3_tables_for(s);
        c.lo0 = t.lo0;
        c.lo1 = t.lo1;
        c.hi0 = t.hi0;
        c.hi1 = t.hi1;
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

/* ---- whole groups of many rows: the hot loops of the many-token paths ----
 *
 * decode_step pays for its generality (tails, the scale context rebuilt per
 * row and group, offsets recomputed per step): about 4x its vector work.
 * These decode rows [r, r + nr) x groups [g0, g0 + ng), all columns in
 * range, to the same values in the same order: step s of row m as the
 * vectors dst + m * rstride + 2s * vstride and + (2s + 1) * vstride (uint16
 * units). FP4 goes a row at a time; FP8 rows of one 128-row block share the
 * group's tables, built once per group. */

/* One FP4 group (64 bytes of codes w) as the four vectors of its two steps,
 * in decode_step's order, given each step's exponent subtrahends d0, d1
 * ((191 - s) << 7 of the step's two blocks, in words 0-15 and 16-31). */
static inline __attribute__((always_inline)) void fp4_group_d(const uint8_t *w, __m512i d0, __m512i d1, __m512i v[4])
{
    const __m512i lut = _mm512_load_si512(e2m1_lut);
    __m512i b0 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)w));
    __m512i b1 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(w + 32)));
    v[0] = _mm512_subs_epu16(_mm512_permutexvar_epi16(b0, lut), d0);
    v[1] = _mm512_subs_epu16(_mm512_permutexvar_epi16(_mm512_srli_epi16(b0, 4), lut), d0);
    v[2] = _mm512_subs_epu16(_mm512_permutexvar_epi16(b1, lut), d1);
    v[3] = _mm512_subs_epu16(_mm512_permutexvar_epi16(_mm512_srli_epi16(b1, 4), lut), d1);
}

/* The exponent subtrahends (191 - s) << 7 of cnt (at most 32) FP4 block
 * scales s, as words; and from them, those of the step whose first block is
 * word b (its two blocks in words 0-15 and 16-31): runs of rows convert
 * their scales once per 8 groups, then spread them with one vpermw a step. */
static inline __attribute__((always_inline)) __m512i fp4_subtrahends(const uint8_t *s, int cnt)
{
    __m512i sw = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m32(cnt), s));
    return _mm512_slli_epi16(_mm512_sub_epi16(_mm512_set1_epi16(S_MAX), sw), 7);
}

static inline __attribute__((always_inline)) __m512i fp4_step_d(__m512i dw, int b)
{
    return _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_load_si512(idx_step_scale[0]), _mm512_set1_epi16((short)b)),
                                    dw);
}

/* One FP8 group (128 bytes of codes w) with its block's tables. */
static inline __attribute__((always_inline)) void fp8_group(const uint8_t *w, const gctx *c, __m512i v[4])
{
    fp8x64(_mm512_loadu_si512(w), c, &v[0], &v[1]);
    fp8x64(_mm512_loadu_si512(w + STEP), c, &v[2], &v[3]);
}

/* Row r's next run of ns steps (the ones after [s0, s0 + ns)) into L1, or
 * where the includer's RUN_PREFETCH_HINT says (avx512_amx.c: L2): rows are
 * decoded a run at a time, side by side, the pattern the hardware
 * prefetchers follow badly. */
#ifndef RUN_PREFETCH_HINT
#define RUN_PREFETCH_HINT _MM_HINT_T0
#endif
static inline void prefetch_next_run(const qmat *q, int r, int s0, int ns)
{
    size_t row_bytes = q->fp4 ? (size_t)q->cols / 2 : (size_t)q->cols, step_bytes = q->fp4 ? STEP / 2 : STEP;
    size_t next = (size_t)(s0 + ns) * step_bytes, end = next + (size_t)ns * step_bytes;
    end = end < row_bytes ? end : row_bytes;
    for (size_t b = next; b < end; b += 64)
        _mm_prefetch((const char *)q->W + (size_t)r * row_bytes + b, RUN_PREFETCH_HINT);
}

static inline __attribute__((always_inline)) void decode_fp4_rows(const qmat *q, int r, int nr, int g0, int ng,
                                                                   uint16_t *dst, size_t rstride, size_t vstride)
{
    size_t row_bytes = (size_t)q->cols / 2, row_scales = (size_t)q->cols / 32;
    for (int m = 0; m < nr; m++) {
        prefetch_next_run(q, r + m, 2 * g0, 2 * ng);
        const uint8_t *w = q->W + (size_t)(r + m) * row_bytes + (size_t)g0 * (GROUP / 2);
        const uint8_t *s = q->scale + (size_t)(r + m) * row_scales + (size_t)g0 * (GROUP / 32);
        uint16_t *o = dst + m * rstride;
        /* the subtrahends of the run's blocks, 32 at a time (8 groups) */
        __m512i dw = _mm512_setzero_si512();
        for (int g = 0; g < ng; g++, w += GROUP / 2, o += 4 * vstride) {
            int b = 4 * (g % 8);
            if (b == 0)
                dw = fp4_subtrahends(s + 4 * g, 4 * (ng - g) < 32 ? 4 * (ng - g) : 32);
            __m512i v[4];
            fp4_group_d(w, fp4_step_d(dw, b), fp4_step_d(dw, b + 2), v);
            for (int i = 0; i < 4; i++)
                _mm512_store_si512(o + i * vstride, v[i]);
        }
    }
}

static inline __attribute__((always_inline)) void decode_fp8_rows(const qmat *q, int r, int nr, int g0, int ng,
                                                                   uint16_t *dst, size_t rstride, size_t vstride)
{
    size_t row_bytes = (size_t)q->cols;
    for (int g = 0; g < ng; g++) {
        gctx c = group_ctx(q, r, g0 + g);
        for (int m = 0; m < nr; m++) {
            if (g == 0)
                prefetch_next_run(q, r + m, 2 * g0, 2 * ng);
            if (m > 0 && (r + m) % 128 == 0)
                c = group_ctx(q, r + m, g0 + g);
            uint16_t *o = dst + m * rstride + 4 * (size_t)g * vstride;
            __m512i v[4];
            fp8_group(q->W + (size_t)(r + m) * row_bytes + (size_t)(g0 + g) * GROUP, &c, v);
            for (int i = 0; i < 4; i++)
                _mm512_store_si512(o + i * vstride, v[i]);
        }
    }
}

/* decode_fp8_rows for rows [r, r + nr) of one 128-row block, whose group
 * contexts ctx[0, ng) (groups g0...) the caller built once for that block
 * (fp8_block_ctx) and shares between the short row slices it decodes. */
static inline void fp8_block_ctx(const qmat *q, int r, int g0, int ng, gctx *ctx)
{
    for (int g = 0; g < ng; g++)
        ctx[g] = group_ctx(q, r, g0 + g);
}

static inline __attribute__((always_inline)) void decode_fp8_rows_ctx(const qmat *q, int r, int nr, int g0, int ng,
                                                                       const gctx *ctx, uint16_t *dst,
                                                                       size_t rstride, size_t vstride)
{
    size_t row_bytes = (size_t)q->cols;
    for (int m = 0; m < nr; m++) {
        prefetch_next_run(q, r + m, 2 * g0, 2 * ng);
        const uint8_t *w = q->W + (size_t)(r + m) * row_bytes + (size_t)g0 * GROUP;
        uint16_t *o = dst + m * rstride;
        for (int g = 0; g < ng; g++, w += GROUP, o += 4 * vstride) {
            __m512i v[4];
            fp8_group(w, &ctx[g], v);
            for (int i = 0; i < 4; i++)
                _mm512_store_si512(o + i * vstride, v[i]);
        }
    }
}

/* Whether steps [s0, s0 + ns) are whole groups of columns in range. */
static inline int whole_groups(const qmat *q, int s0, int ns)
{
    return s0 % 2 == 0 && ns % 2 == 0 && (size_t)(s0 + ns) * STEP <= (size_t)q->cols;
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

/* ---- rows outside the bf16 scale range ---- */

static inline int scales_in_range(const uint8_t *s, int count, int lo)
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

static inline int row_in_range(const qmat *q, int r)
{
    if (q->fp4)
        return scales_in_range(q->scale + (size_t)r * (q->cols / 32), q->cols / 32, FP4_S_MIN);
    int nb = (q->cols + 127) / 128;
    return scales_in_range(q->scale + (size_t)(r / 128) * nb, nb, FP8_S_MIN);
}

#endif
