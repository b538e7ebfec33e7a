/* FP8 and FP4 simulation of activations (fmt_act_quant_sim and
 * fmt_fp4_quant_sim in formats.c, the references) and the indexer's query
 * codes (fmt_index_query_pack) with AVX-512, bit for bit.
 * FP8: per block, the scale from the
 * largest |x| (fmt_act_quant_exp), then every x / s clamped to +-448,
 * rounded to the nearest e4m3 value (ties to even) and multiplied back.
 *
 * The rounding stays in f32 bits, as formats.c's encoder does: at or above
 * 2^-6 (e4m3's smallest normal) it drops 20 mantissa bits half to even, a
 * carry moving into the exponent; below, the grid is uniform in steps of
 * 2^-9, so x * 512 rounded to an integer (exact scalings) is the code. The
 * clamp keeps every value at most 448, where no rounding saturates.
 *
 * NaN follows the reference's fmaxf/fminf: ignored by the block maximum,
 * then clamped to -448 (vmaxps returns its second operand for a NaN first
 * one). */
#include <immintrin.h>

#include "formats.h"
#include "masks.h"

void act_quant_sim_avx512(float *x, size_t n, size_t block);
void fp4_quant_sim_avx512(float *x, size_t n, size_t block);
void index_query_pack_avx512(int8_t *codes_x2, float *scales, const float *x, size_t n);

static inline __m512 e4m3_round(__m512 q)
{
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    __m512i u = _mm512_castps_si512(q), a = _mm512_and_si512(u, abs_mask);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1));
    __m512i normal = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(a, _mm512_set1_epi32(0x7ffff)), odd),
                                      _mm512_set1_epi32((int)0xfff00000u));
    __m512 tiny = _mm512_mul_ps(_mm512_roundscale_ps(_mm512_mul_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(512.0f)),
                                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                                _mm512_set1_ps(1.0f / 512.0f));
    __mmask16 is_tiny = _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32(0x3c800000)); /* below 2^-6 */
    __m512i r = _mm512_mask_mov_epi32(normal, is_tiny, _mm512_castps_si512(tiny));
    return _mm512_castsi512_ps(_mm512_or_si512(r, _mm512_andnot_si512(abs_mask, u)));
}


/* e2m1's grid {0, .5, 1, 1.5, 2, 3, 4, 6} (|q| <= 6), ties to even, as
 * formats.c's e2m1_round: steps of 0.5 below 2, 1 below 4, then 2, each a
 * power-of-two scaling around one integer rounding (exact); the sign kept,
 * so small negatives round to -0. */
static inline __m512 e2m1_round(__m512 q)
{
    const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    __m512 a = _mm512_and_ps(q, abs_mask);
    __mmask16 lo = _mm512_cmp_ps_mask(a, _mm512_set1_ps(2.0f), _CMP_LT_OQ);
    __mmask16 hi = _mm512_cmp_ps_mask(a, _mm512_set1_ps(4.0f), _CMP_GE_OQ);
    __m512 up = _mm512_mask_blend_ps(hi, _mm512_mask_blend_ps(lo, _mm512_set1_ps(1.0f), _mm512_set1_ps(2.0f)),
                                     _mm512_set1_ps(0.5f));
    __m512 down = _mm512_mask_blend_ps(hi, _mm512_mask_blend_ps(lo, _mm512_set1_ps(1.0f), _mm512_set1_ps(0.5f)),
                                       _mm512_set1_ps(2.0f));
    __m512 r = _mm512_mul_ps(_mm512_roundscale_ps(_mm512_mul_ps(a, up), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                             down);
    return _mm512_or_ps(r, _mm512_andnot_ps(abs_mask, q));
}


/* Both simulations, block by block: the scale from the block's largest
 * |x| (NaNs ignored), then each x / s clamped to the format's largest value
 * (a NaN clamped to its negative, as the reference's fmaxf leaves it),
 * rounded to the format's grid and multiplied back. fp4 is a constant at
 * each call, so each entry is compiled for its own format. */
static inline __attribute__((always_inline)) void quant_sim(float *x, size_t n, size_t block, int fp4)
{
    const float top = fp4 ? 6.0f : 448.0f;
    for (size_t b0 = 0; b0 < n; b0 += block) {
        size_t len = n - b0 < block ? n - b0 : block;
        float *xb = x + b0;
        __m512 amax = _mm512_setzero_ps();
        for (size_t i = 0; i < len; i += 16)
            amax = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m16(len - i < 16 ? (int)(len - i) : 16), xb + i)), amax);
        float a = _mm512_reduce_max_ps(amax);
        int e = fp4 ? fmt_fp4_quant_exp(a) : fmt_act_quant_exp(a);
        /* e is within [-126, 126]: both powers of two are normal */
        __m512 s = _mm512_castsi512_ps(_mm512_set1_epi32((127 + e) << 23));
        __m512 inv_s = _mm512_castsi512_ps(_mm512_set1_epi32((127 - e) << 23));
        for (size_t i = 0; i < len; i += 16) {
            __mmask16 m = m16(len - i < 16 ? (int)(len - i) : 16);
            __m512 q = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xb + i), inv_s);
            q = _mm512_min_ps(_mm512_max_ps(q, _mm512_set1_ps(-top)), _mm512_set1_ps(top));
            _mm512_mask_storeu_ps(xb + i, m, _mm512_mul_ps(fp4 ? e2m1_round(q) : e4m3_round(q), s));
        }
    }
}

void act_quant_sim_avx512(float *x, size_t n, size_t block)
{
    quant_sim(x, n, block, 0);
}

void fp4_quant_sim_avx512(float *x, size_t n, size_t block)
{
    quant_sim(x, n, block, 1);
}

/* Per block of 32: the FP4 quantization above, kept as twice the e2m1 value
 * (an integer in [-12, 12], exact in f32; -0 gives 0) and the scale 2^e. */
void index_query_pack_avx512(int8_t *codes_x2, float *scales, const float *x, size_t n)
{
    for (size_t b0 = 0; b0 < n; b0 += 32) {
        __m512 v0 = _mm512_loadu_ps(x + b0), v1 = _mm512_loadu_ps(x + b0 + 16);
        /* NaNs ignored, as by the reference: vmaxps returns its second operand */
        __m512 amax = _mm512_max_ps(_mm512_abs_ps(v1), _mm512_max_ps(_mm512_abs_ps(v0), _mm512_setzero_ps()));
        int e = fmt_fp4_quant_exp(_mm512_reduce_max_ps(amax));
        __m512 inv_s = _mm512_castsi512_ps(_mm512_set1_epi32((127 - e) << 23));
        scales[b0 / 32] = fmt_e8m0_to_f32((uint8_t)(e + 127));
        for (int h = 0; h < 2; h++) {
            __m512 q = _mm512_mul_ps(h ? v1 : v0, inv_s);
            q = _mm512_min_ps(_mm512_max_ps(q, _mm512_set1_ps(-6.0f)), _mm512_set1_ps(6.0f));
            __m512i twice = _mm512_cvtps_epi32(_mm512_add_ps(e2m1_round(q), e2m1_round(q)));
            _mm_storeu_si128((__m128i *)(codes_x2 + b0 + 16 * h), _mm512_cvtepi32_epi8(twice));
        }
    }
}
