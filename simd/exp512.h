/* expf on 16 lanes within ~2 ulp, shared by the AVX-512 kernels that need
 * one (attention softmax, SwiGLU). Cephes-style: n = round(x log2 e),
 * r = x - n ln 2 in two parts, a degree-6 polynomial, then vscalefps
 * applies 2^n with correct overflow to inf and gradual underflow to 0. The
 * clamp keeps r finite for +-inf (NaN passes through: min/max return their
 * second operand for NaN). Include after a `#pragma GCC target` that
 * enables AVX-512F. */
#ifndef DSV4_SIMD_EXP512_H
#define DSV4_SIMD_EXP512_H

#include <immintrin.h>

static inline __m512 exp512_ps(__m512 x)
{
    x = _mm512_max_ps(_mm512_set1_ps(-150.0f), _mm512_min_ps(_mm512_set1_ps(150.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

#endif
