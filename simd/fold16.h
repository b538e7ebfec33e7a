/* The final sum of a 16-lane fp32 accumulator, in the one order every
 * AVX-512 kernel uses: lanes (i, i+8) added, then (i, i+4), (i, i+2),
 * (i, i+1). fold16x16 folds 16 accumulators at once, the same additions
 * done across vectors, so that a many-token product's register tiles end
 * with a few vector stores where fold16 and a scalar store per value cost
 * as much as the products themselves on short rows. Include after a
 * `#pragma GCC target` that enables AVX-512 F/DQ. */
#ifndef DSV4_SIMD_FOLD16_H
#define DSV4_SIMD_FOLD16_H

#include <immintrin.h>

#include "masks.h"

static inline float fold16(__m512 v)
{
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    __m128 d = _mm_add_ss(c, _mm_movehdup_ps(c));
    return _mm_cvtss_f32(d);
}

/* Lane m of the result is fold16(v[m]), bit for bit. */
static inline __m512 fold16x16(const __m512 v[16])
{
    /* The loops are unrolled by pragma: left rolled (GCC 12 -O2), a, b and
     * c lived on the stack, and every register tile's fold paid a store and
     * reload per vector (one Zen 5 core, a 4 x 6 tile over 1024 columns
     * with its fold: 447 -> 509 GFLOP/s). */
    __m512 a[8], b[4], c[2];
    /* (i, i+8): vectors 2p and 2p+1 side by side, 8 sums each */
    #pragma GCC unroll 8
    for (int p = 0; p < 8; p++)
        a[p] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0xee));
    /* (i, i+4): 128-bit block k of b[q] holds vector 4q + k's 4 sums */
    #pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
        b[q] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * q], a[2 * q + 1], 0x88),
                             _mm512_shuffle_f32x4(a[2 * q], a[2 * q + 1], 0xdd));
    /* (i, i+2): per block, the 2 sums of b[2h]'s vector then b[2h+1]'s */
    #pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m512d x = _mm512_castps_pd(b[2 * h]), y = _mm512_castps_pd(b[2 * h + 1]);
        c[h] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    /* (i, i+1): lane 4k + e holds vector 4e + k's sum */
    __m512 d = _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], 0x88), _mm512_shuffle_ps(c[0], c[1], 0xdd));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, d);
}

/* A 4-row register tile's final sums, folded in registers: a[i * tb + t]
 * is row i's accumulator for token t (rows [0, nr) of at most 4, tokens [0,
 * nt) of at most 8). 16 at a time (4 tokens x 4 rows, lane 4t + i; absent
 * ones zero) go through fold16x16, which gives fold16's bits, then each
 * token's rows as one masked store at y + t * ldy (add: the sums are
 * added to what y holds, y + sum in fp32). Folding in the tile
 * after its last chunk spares the strided reload of every accumulator from
 * memory that folding afterwards costs (18-50% of a 1024-column product at
 * 64-512 tokens on one Zen 5 core). */
static inline __attribute__((always_inline)) void fold16_store_tile4(int nr, int nt, const __m512 *a, int tb,
                                                                      int add, float *y, size_t ldy)
{
    const __mmask8 rows = (__mmask8)((1u << nr) - 1);
    #pragma GCC unroll 2
    for (int t0 = 0; t0 < 8; t0 += 4) {
        if (t0 >= nt)
            break;
        __m512 v[16];
        #pragma GCC unroll 16
        for (int m = 0; m < 16; m++) {
            int t = t0 + m / 4, i = m % 4;
            v[m] = t < nt && i < nr ? a[i * tb + t] : _mm512_setzero_ps();
        }
        __m512 f = fold16x16(v);
        __m128 q[4] = {_mm512_extractf32x4_ps(f, 0), _mm512_extractf32x4_ps(f, 1), _mm512_extractf32x4_ps(f, 2),
                       _mm512_extractf32x4_ps(f, 3)};
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            if (t0 + k < nt) {
                float *yt = y + (size_t)(t0 + k) * ldy;
                _mm_mask_storeu_ps(yt, rows, add ? _mm_add_ps(_mm_maskz_loadu_ps(rows, yt), q[k]) : q[k]);
            }
    }
}

/* The start of a register tile's chunk: the first chunk's sums start at
 * +0, later ones continue from acc (row i, token t at acc[i * astride + t]). */
static inline __attribute__((always_inline)) void tile_chunk_start(int nr, int nt, __m512 *a, int tb, int first,
                                                                    const __m512 *acc, int astride)
{
    #pragma GCC unroll 4
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            a[i * tb + t] = first ? _mm512_setzero_ps() : acc[i * astride + t];
}

/* The end of a register tile's chunk: after the last chunk its sums are
 * folded into y (fold16_store_tile4); before, they go back to acc (row i,
 * token t at acc[i * astride + t]) for the next chunk to continue. */
static inline __attribute__((always_inline)) void tile_chunk_end(int nr, int nt, const __m512 *a, int tb, int last,
                                                                  __m512 *acc, int astride, float *y, size_t ldy)
{
    if (last) {
        fold16_store_tile4(nr, nt, a, tb, 0, y, ldy);
        return;
    }
    #pragma GCC unroll 4
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            acc[i * astride + t] = a[i * tb + t];
}

#endif
