/* A bf16 RMSNorm's sums of squares over many rows with AVX-512
 * (kernels.h: sumsq_bf16), bit for bit with ops_sumsq_bf16: each row's sum
 * is one chain of fp32 additions in column order, so the vectors run across
 * rows, 16 at a time: a 16 x 16 block of squares (rounded to bf16) is
 * transposed so that vector c holds column c of the 16 rows, and the rows'
 * sums take the columns in order. Missing rows and columns are zeros, and
 * adding +0 to a sum of squares changes no bit. */
#include <immintrin.h>
#include <stdint.h>

#include "kernels.h"
#include "masks.h"
#include "round_bf16.h"

void sumsq_bf16_avx512(float *sums, const float *x, size_t ldx, int rows, int len);

/* round_bf16_f32x16, with fmt_round_bf16's NaN: the high half, quiet. */
static inline __m512 round_bf16_any(__m512 v)
{
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    __m512i q = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0xffff0000u)),
                                _mm512_set1_epi32(0x00400000));
    return _mm512_mask_mov_ps(round_bf16_f32x16(v), nan, _mm512_castsi512_ps(q));
}

/* r[0..16) <- its transpose (r[i] lane j <- r[j] lane i). */
static inline void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) { /* pairs of rows: 32-bit interleave */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* fours: 64-bit interleave */
        for (int j = 0; j < 2; j++) {
            __m512d a = _mm512_castps_pd(t[i + j]), b = _mm512_castps_pd(t[i + j + 2]);
            r[i + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            r[i + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    }
    for (int i = 0; i < 16; i += 8) /* eights: 128-bit lanes */
        for (int j = 0; j < 4; j++) {
            t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
        }
    for (int j = 0; j < 8; j++) { /* sixteen: 256-bit halves */
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
}

void sumsq_bf16_avx512(float *sums, const float *x, size_t ldx, int rows, int len)
{
    for (int r0 = 0; r0 < rows; r0 += 16) {
        int nr = rows - r0 < 16 ? rows - r0 : 16;
        __m512 acc = _mm512_setzero_ps();
        for (int i0 = 0; i0 < len; i0 += 16) {
            __mmask16 cols = m16(len - i0);
            __m512 b[16];
            for (int r = 0; r < 16; r++) {
                __m512 v = r < nr ? _mm512_maskz_loadu_ps(cols, x + (size_t)(r0 + r) * ldx + i0) : _mm512_setzero_ps();
                b[r] = round_bf16_any(_mm512_mul_ps(v, v));
            }
            transpose16(b);
            for (int c = 0; c < 16; c++)
                acc = _mm512_add_ps(acc, b[c]);
        }
        _mm512_mask_storeu_ps(sums + r0, m16(nr), acc);
    }
}
