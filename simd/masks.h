/* Lane masks for the first `left` elements of an AVX-512 vector (all lanes
 * at or past the width, none at or below zero): 16 floats, 32 and 64 small
 * integers. Shared by the kernels that take ragged ends with masked loads. */
#ifndef DSV4_SIMD_MASKS_H
#define DSV4_SIMD_MASKS_H

#include <immintrin.h>

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

#endif
