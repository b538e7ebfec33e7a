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
/* That scale's exponent for a block whose largest |x| is amax (NaNs ignored). */
int fmt_act_quant_exp(float amax);
/* FP4 simulation (official fp4_act_quant): s = 2^ceil(log2(max(amax, 6*2^-126)/6)),
 * x <- e2m1(x/s)*s, per block. In place. */
void fmt_fp4_quant_sim(float *x, size_t n, size_t block);
/* That scale's exponent for a block whose largest |x| is amax (NaNs ignored). */
int fmt_fp4_quant_exp(float amax);

/* The same quantization as codes: codes[i] the e2m1 code (low 4 bits) of
 * x[i], scales[i / block] the e8m0 exponent of the block's scale (in
 * [1, 253]), so that e2m1(codes[i]) * e8m0(scales[i / block]) is what
 * fmt_fp4_quant_sim leaves in x[i]. Quantizing values that are already
 * FP4-simulated returns them unchanged. */
void fmt_fp4_quant_codes(const float *x, size_t n, size_t block, uint8_t *codes, uint8_t *scales);

/* Key=value rows in FP8, the release layout of the KV cache: a row of dim
 * values whose first head = dim - tail are FP8-simulated as fmt_act_quant_sim
 * does them with blocks of 64 (kept as e4m3 codes and e8m0 scales) and whose
 * last tail values are bf16. Bytes: [0, 2*tail) the tail's bf16 values
 * (little-endian, so a row starting at an even address has them aligned),
 * then head e4m3 codes, then one scale byte per block of 64 codes (a short
 * last block is its own). For V4's 448 + 64 that is 128 + 448 + 7 = 583. */
size_t fmt_kv_row_bytes(int dim, int tail);
/* Row of x: codes and scales as fmt_act_quant_sim(x, head, 64) makes them
 * (values already simulated come back unchanged), the tail rounded to bf16;
 * so fmt_kv_row_value gives what act_quant_sim plus bf16 rounding leaves.
 * Scale bytes stay in [105, 246] (a block beyond 448 * 2^119, near FLT_MAX,
 * saturates there), or 0xff (NaN) for a block with a NaN, which then
 * decodes as all NaN: no other block has a NaN code (0x7f, 0xff), so the
 * attention kernels look only at the scale. */
void fmt_kv_row_encode(uint8_t *row, const float *x, int dim, int tail);
/* Column i's value (exact: a code times its power-of-two scale). */
float fmt_kv_row_value(const uint8_t *row, int dim, int tail, int i);
void fmt_kv_row_decode(float *x, const uint8_t *row, int dim, int tail);

/* The lightning indexer's FP4 operands (kernels.h, index_scores_fp4), from
 * values FP4-quantized per 32 here (FP4-simulated values keep their value):
 * one key of dim floats into slot s of a key cache in the grouped layout;
 * and n query values (n % 32 == 0) as codes (twice the e2m1 value) and
 * float block scales. */
void fmt_index_key_pack(uint8_t *keys, uint8_t *key_scale, size_t s, int dim, const float *x);
void fmt_index_query_pack(int8_t *codes_x2, float *scales, const float *x, size_t n);

/* y = x * H_n / sqrt(n), H Sylvester (H[i][j] = (-1)^popcount(i&j)); n a power of two. In place. */
void fmt_hadamard(float *x, size_t n);

#endif
