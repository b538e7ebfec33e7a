/* The AMX kernels (avx512_amx.c), for the dispatcher and their tests: the
 * release-numerics products on tiles, direct and from packed tokens, in
 * the shapes of kernels.h's e4m3act entries. */
#ifndef DSV4_SIMD_AMX_H
#define DSV4_SIMD_AMX_H

#include <stddef.h>
#include <stdint.h>

/* The CPU has AMX-BF16 and Linux grants the tile data (asked once). */
int kernels_amx_usable(void);
void matmul_fp8_amx(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X, size_t ldx,
                    int n, int rows, int cols, int r0, int r1);
void matmul_fp4_amx(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X, size_t ldx,
                    int n, int rows, int cols, int r0, int r1);
size_t amx_packed_bytes(int n, int cols);
void amx_pack(void *P, const float *X, size_t ldx, int n, int cols, int fp4, int s0, int s1);
void matmul_fp8_amx_packed(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, const void *P, int n, int rows, int cols, int r0, int r1);
void matmul_fp4_amx_packed(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, const void *P, int n, int rows, int cols, int r0, int r1);

#endif
