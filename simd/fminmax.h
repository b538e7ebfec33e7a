/* fmaxf and fminf as C99 defines them (a NaN operand yields the other
 * one), inline. Without -ffinite-math-only GCC 12 calls libm for each,
 * which per element cost the FP4 quantizers and the attention kernels'
 * running maxima more than their arithmetic. Zeros of either sign compare
 * equal, and then the first operand is returned. */
#ifndef DSV4_SIMD_FMINMAX_H
#define DSV4_SIMD_FMINMAX_H

static inline float max_f32(float a, float b)
{
    return a != a ? b : (b > a ? b : a);
}

static inline float min_f32(float a, float b)
{
    return a != a ? b : (b < a ? b : a);
}

#endif
