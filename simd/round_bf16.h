/* Round 16 floats to bf16 (nearest, ties to even at bit 16), kept as f32,
 * for finite inputs (subnormals included, rounded on their bits). Integer
 * operations only: on the cores measured they leave the multiply pipes to
 * the products around them (vpdpbusd in the indexer, the FMAs of attend).
 * Shared by the AVX-512 kernels; the including file enables AVX-512F. */
#ifndef DSV4_SIMD_ROUND_BF16_H
#define DSV4_SIMD_ROUND_BF16_H

#include <immintrin.h>

static inline __m512 round_bf16_f32x16(__m512 x)
{
    __m512i u = _mm512_castps_si512(x);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    u = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd);
    return _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32((int)0xffff0000u)));
}

#endif
