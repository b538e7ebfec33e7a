/* A weight matrix as it lies in the checkpoint (mmapped, never converted),
 * and the threaded matrix products over it. */
#ifndef DSV4_LINEAR_H
#define DSV4_LINEAR_H

#include <stddef.h>
#include <stdint.h>

#include "../simd/kernels.h"

typedef enum {
    DSV4_WF_NONE = 0, /* tensor absent */
    DSV4_WF_F32,
    DSV4_WF_BF16,
    DSV4_WF_FP8,      /* e4m3 [rows][cols] + e8m0 scale [ceil(rows/128)][ceil(cols/128)] */
    DSV4_WF_FP4       /* e2m1 packed [rows][cols/2] + e8m0 scale [rows][cols/32] */
} dsv4_wformat;

typedef struct {
    dsv4_wformat fmt;
    int rows, cols;          /* [out, in] */
    const void *data;
    const uint8_t *scale;    /* FP8/FP4 only */
} dsv4_linear;

/* Y[t][r] = W[r]·X[t] for t < n and r in [r0, r1), rows split across the
 * OpenMP team (call from outside a parallel region). Identical results for
 * any thread count. */
void linear_matmul_rows(const dsv4_kernels *k, const dsv4_linear *W, float *Y, size_t ldy,
                        const float *X, size_t ldx, int n, int r0, int r1);
/* Whole matrix: Y [n][rows], X [n][cols], dense. */
void linear_matmul(const dsv4_kernels *k, const dsv4_linear *W, float *Y, const float *X, int n);
/* The same products for X whose every value is a bf16 number (FP8-simulated
 * by fmt_act_quant_sim, as release numerics leave the input of an FP8/FP4
 * linear, or rounded to bf16): FP8/FP4/BF16 weights then use the kernels'
 * exact bf16 products (matmul_fp8/fp4_e4m3act, matmul_bf16_bf16act); F32
 * weights are computed as above. */
void linear_matmul_rows_e4m3act(const dsv4_kernels *k, const dsv4_linear *W, float *Y, size_t ldy,
                                const float *X, size_t ldx, int n, int r0, int r1);
void linear_matmul_e4m3act(const dsv4_kernels *k, const dsv4_linear *W, float *Y, const float *X, int n);
/* One matrix product of a batch: Y[t][r] = W[r]·X[t] for t < n, r in [r0, r1);
 * e4m3act: X is bf16-exact (as linear_matmul_rows_e4m3act). */
typedef struct {
    const dsv4_linear *W;
    float *Y;
    size_t ldy;
    const float *X;
    size_t ldx;
    int n, r0, r1;
    int e4m3act;
} linear_job;
#define LINEAR_MAX_JOBS 1024
/* All jobs in one parallel region (rows of every job cut into work items of
 * similar cost; small totals run on the calling thread): one fork/join for
 * many small matrices. Results are those of the jobs run one by one. Outputs
 * must not overlap. */
void linear_matmul_jobs(const dsv4_kernels *k, const linear_job *jobs, int n_jobs);
/* dst = src (n rows of cols values; dst may be src), FP8-simulated per
 * block of 128 (k->act_quant_sim), as release numerics quantize the input
 * of an FP8/FP4 linear; rows split over the team from a few thousand values. */
void linear_act_quant_rows(const dsv4_kernels *k, float *dst, const float *src, int n, int cols);
/* One row of W as floats (embedding lookup). */
void linear_row(const dsv4_linear *W, int row, float *out);

#endif
