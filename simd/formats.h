/* Number formats of the V4 release files and of its simulated activations:
 * bf16, e4m3 (FP8), e2m1 (FP4), e8m0 (power-of-two block scales).
 * Scalar, exact, model-agnostic. */
#ifndef DSV4_SIMD_FORMATS_H
#define DSV4_SIMD_FORMATS_H

#include <stddef.h>
#include <stdint.h>

float fmt_bf16_to_f32(uint16_t h);
uint16_t fmt_f32_to_bf16(float x);          /* round to nearest even; NaN stays NaN */
float fmt_round_bf16(float x);              /* f32 -> bf16 -> f32 */
void fmt_round_bf16_array(float *x, size_t n);

float fmt_e4m3_to_f32(uint8_t b);           /* OCP e4m3fn: bias 7, max 448, 0x7f/0xff NaN */
uint8_t fmt_f32_to_e4m3(float x);           /* RNE, saturates to +-448 */
float fmt_e8m0_to_f32(uint8_t b);           /* 2^(b-127); 0xff NaN */
float fmt_e2m1_to_f32(uint8_t code);        /* low 4 bits: 0,.5,1,1.5,2,3,4,6; bit 3 = sign */

/* FP8 simulation of activations (official act_quant): per block of `block`
 * contiguous values, s = 2^ceil(log2(max(amax,1e-4)/448)), x <- e4m3(x/s)*s.
 * A short last block is its own block. In place. */
void fmt_act_quant_sim(float *x, size_t n, size_t block);
/* FP4 simulation (official fp4_act_quant): s = 2^ceil(log2(max(amax, 6*2^-126)/6)),
 * x <- e2m1(x/s)*s, per block. In place. */
void fmt_fp4_quant_sim(float *x, size_t n, size_t block);

/* y = x * H_n / sqrt(n), H Sylvester (H[i][j] = (-1)^popcount(i&j)); n a power of two. In place. */
void fmt_hadamard(float *x, size_t n);

#endif
