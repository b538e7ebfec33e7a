/* Threaded matrix products over checkpoint-format weights. Work is split by
 * output rows only; each row is computed whole by one kernel call, so the
 * result is the same for every thread count. */
#include "linear.h"

#include "../simd/formats.h"

#include <string.h>

/* Rows per work item: small enough to balance a few thousand rows over many
 * threads, large enough that a chunk streams a useful run of weights. */
#define ROW_CHUNK 16

static void matmul_chunk(const dsv4_kernels *k, const dsv4_linear *W, float *Y, size_t ldy,
                         const float *X, size_t ldx, int n, int r0, int r1, int e4m3act)
{
    if (e4m3act && W->fmt == DSV4_WF_FP8) {
        k->matmul_fp8_e4m3act(Y, ldy, W->data, W->scale, X, ldx, n, W->rows, W->cols, r0, r1);
        return;
    }
    if (e4m3act && W->fmt == DSV4_WF_FP4) {
        k->matmul_fp4_e4m3act(Y, ldy, W->data, W->scale, X, ldx, n, W->rows, W->cols, r0, r1);
        return;
    }
    switch (W->fmt) {
    case DSV4_WF_F32:
        k->matmul_f32(Y, ldy, W->data, X, ldx, n, W->rows, W->cols, r0, r1);
        break;
    case DSV4_WF_BF16:
        k->matmul_bf16(Y, ldy, W->data, X, ldx, n, W->rows, W->cols, r0, r1);
        break;
    case DSV4_WF_FP8:
        k->matmul_fp8(Y, ldy, W->data, W->scale, X, ldx, n, W->rows, W->cols, r0, r1);
        break;
    case DSV4_WF_FP4:
        k->matmul_fp4(Y, ldy, W->data, W->scale, X, ldx, n, W->rows, W->cols, r0, r1);
        break;
    case DSV4_WF_NONE:
        break;
    }
}

static void matmul_rows(const dsv4_kernels *k, const dsv4_linear *W, float *Y, size_t ldy,
                        const float *X, size_t ldx, int n, int r0, int r1, int e4m3act)
{
    if (n <= 0 || r1 <= r0)
        return;
    int chunks = (r1 - r0 + ROW_CHUNK - 1) / ROW_CHUNK;
    if (chunks == 1) {
        matmul_chunk(k, W, Y, ldy, X, ldx, n, r0, r1, e4m3act);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int c = 0; c < chunks; c++) {
        int a = r0 + c * ROW_CHUNK;
        int b = a + ROW_CHUNK < r1 ? a + ROW_CHUNK : r1;
        matmul_chunk(k, W, Y, ldy, X, ldx, n, a, b, e4m3act);
    }
}

void linear_matmul_rows(const dsv4_kernels *k, const dsv4_linear *W, float *Y, size_t ldy,
                        const float *X, size_t ldx, int n, int r0, int r1)
{
    matmul_rows(k, W, Y, ldy, X, ldx, n, r0, r1, 0);
}

void linear_matmul(const dsv4_kernels *k, const dsv4_linear *W, float *Y, const float *X, int n)
{
    matmul_rows(k, W, Y, (size_t)W->rows, X, (size_t)W->cols, n, 0, W->rows, 0);
}

void linear_matmul_rows_e4m3act(const dsv4_kernels *k, const dsv4_linear *W, float *Y, size_t ldy,
                                const float *X, size_t ldx, int n, int r0, int r1)
{
    matmul_rows(k, W, Y, ldy, X, ldx, n, r0, r1, 1);
}

void linear_matmul_e4m3act(const dsv4_kernels *k, const dsv4_linear *W, float *Y, const float *X, int n)
{
    matmul_rows(k, W, Y, (size_t)W->rows, X, (size_t)W->cols, n, 0, W->rows, 1);
}

void linear_row(const dsv4_linear *W, int row, float *out)
{
    int cols = W->cols;
    switch (W->fmt) {
    case DSV4_WF_F32:
        memcpy(out, (const float *)W->data + (size_t)row * cols, (size_t)cols * sizeof *out);
        break;
    case DSV4_WF_BF16: {
        const uint16_t *w = (const uint16_t *)W->data + (size_t)row * cols;
        for (int i = 0; i < cols; i++)
            out[i] = fmt_bf16_to_f32(w[i]);
        break;
    }
    case DSV4_WF_FP8: {
        const uint8_t *w = (const uint8_t *)W->data + (size_t)row * cols;
        const uint8_t *s = W->scale + (size_t)(row / 128) * ((cols + 127) / 128);
        for (int i = 0; i < cols; i++)
            out[i] = fmt_e4m3_to_f32(w[i]) * fmt_e8m0_to_f32(s[i / 128]);
        break;
    }
    case DSV4_WF_FP4: {
        const uint8_t *w = (const uint8_t *)W->data + (size_t)row * (cols / 2);
        const uint8_t *s = W->scale + (size_t)row * (cols / 32);
        for (int i = 0; i < cols; i++) {
            uint8_t code = (i & 1) ? w[i / 2] >> 4 : w[i / 2] & 15;
            out[i] = fmt_e2m1_to_f32(code) * fmt_e8m0_to_f32(s[i / 32]);
        }
        break;
    }
    case DSV4_WF_NONE:
        memset(out, 0, (size_t)cols * sizeof *out);
        break;
    }
}
