/* FP8 simulation of activations (fmt_act_quant_sim in formats.c, the
 * reference) with AVX-512, bit for bit: per block, the scale from the
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

void act_quant_sim_avx512(float *x, size_t n, size_t block)
{
    for (size_t b0 = 0; b0 < n; b0 += block) {
        size_t len = n - b0 < block ? n - b0 : block;
        float *xb = x + b0;
        __m512 amax = _mm512_setzero_ps();
        for (size_t i = 0; i < len; i += 16)
            amax = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m16(len - i < 16 ? (int)(len - i) : 16), xb + i)), amax);
        int e = fmt_act_quant_exp(_mm512_reduce_max_ps(amax));
        /* e is within [-126, 126]: both powers of two are normal */
        __m512 s = _mm512_castsi512_ps(_mm512_set1_epi32((127 + e) << 23));
        __m512 inv_s = _mm512_castsi512_ps(_mm512_set1_epi32((127 - e) << 23));
        for (size_t i = 0; i < len; i += 16) {
            __mmask16 m = m16(len - i < 16 ? (int)(len - i) : 16);
            __m512 q = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xb + i), inv_s);
            q = _mm512_min_ps(_mm512_max_ps(q, _mm512_set1_ps(-448.0f)), _mm512_set1_ps(448.0f));
            _mm512_mask_storeu_ps(xb + i, m, _mm512_mul_ps(e4m3_round(q), s));
        }
    }
}
