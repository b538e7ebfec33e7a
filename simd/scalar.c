/* Plain C reference of every kernel. Written for clarity first; every SIMD
 * version is diffed against these. Accumulation order (documented per
 * kernel) is a function of (token, row) only, never of n, r0 or r1. */
#include "kernels.h"
#include "formats.h"

#include <math.h>
#include <stdlib.h>

/* Weights are decoded a chunk at a time into a stack buffer, then dotted
 * with every token: the weight stream is read once per call. */
#define CHUNK 256

/* matmul_f32 / matmul_bf16: y = sum over k ascending, one fp32 accumulator. */
static void matmul_f32_scalar(float *Y, size_t ldy, const float *W, const float *X, size_t ldx,
                              int n, int rows, int cols, int r0, int r1)
{
    (void)rows;
    for (int r = r0; r < r1; r++) {
        const float *w = W + (size_t)r * cols;
        for (int t = 0; t < n; t++) {
            const float *x = X + (size_t)t * ldx;
            float acc = 0.0f;
            for (int k = 0; k < cols; k++)
                acc += w[k] * x[k];
            Y[(size_t)t * ldy + r] = acc;
        }
    }
}

static void matmul_bf16_scalar(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx,
                               int n, int rows, int cols, int r0, int r1)
{
    (void)rows;
    float buf[CHUNK];
    for (int r = r0; r < r1; r++) {
        const uint16_t *w = W + (size_t)r * cols;
        for (int t = 0; t < n; t++)
            Y[(size_t)t * ldy + r] = 0.0f;
        for (int k0 = 0; k0 < cols; k0 += CHUNK) {
            int len = cols - k0 < CHUNK ? cols - k0 : CHUNK;
            for (int k = 0; k < len; k++)
                buf[k] = fmt_bf16_to_f32(w[k0 + k]);
            for (int t = 0; t < n; t++) {
                const float *x = X + (size_t)t * ldx + k0;
                float acc = Y[(size_t)t * ldy + r];
                for (int k = 0; k < len; k++)
                    acc += buf[k] * x[k];
                Y[(size_t)t * ldy + r] = acc;
            }
        }
    }
}

/* matmul_fp8: per 128-column block (ascending), partial = sum over the block
 * ascending; y = y + partial * scale (y starts at 0). */
static void matmul_fp8_scalar(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                              const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    (void)rows;
    int kblocks = (cols + 127) / 128;
    float buf[128];
    for (int r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * cols;
        const uint8_t *srow = scale + (size_t)(r / 128) * kblocks;
        for (int t = 0; t < n; t++)
            Y[(size_t)t * ldy + r] = 0.0f;
        for (int kb = 0; kb < kblocks; kb++) {
            int k0 = kb * 128, len = cols - k0 < 128 ? cols - k0 : 128;
            float s = fmt_e8m0_to_f32(srow[kb]);
            for (int k = 0; k < len; k++)
                buf[k] = fmt_e4m3_to_f32(w[k0 + k]);
            for (int t = 0; t < n; t++) {
                const float *x = X + (size_t)t * ldx + k0;
                float partial = 0.0f;
                for (int k = 0; k < len; k++)
                    partial += buf[k] * x[k];
                Y[(size_t)t * ldy + r] += partial * s;
            }
        }
    }
}

/* matmul_fp4: as fp8 with 32-column blocks and a per-row scale. */
static void matmul_fp4_scalar(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                              const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    (void)rows;
    int kblocks = cols / 32;
    float buf[32];
    for (int r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * (cols / 2);
        const uint8_t *srow = scale + (size_t)r * kblocks;
        for (int t = 0; t < n; t++)
            Y[(size_t)t * ldy + r] = 0.0f;
        for (int kb = 0; kb < kblocks; kb++) {
            float s = fmt_e8m0_to_f32(srow[kb]);
            for (int j = 0; j < 16; j++) {
                uint8_t byte = w[kb * 16 + j];
                buf[2 * j] = fmt_e2m1_to_f32(byte & 15);
                buf[2 * j + 1] = fmt_e2m1_to_f32(byte >> 4);
            }
            for (int t = 0; t < n; t++) {
                const float *x = X + (size_t)t * ldx + kb * 32;
                float partial = 0.0f;
                for (int k = 0; k < 32; k++)
                    partial += buf[k] * x[k];
                Y[(size_t)t * ldy + r] += partial * s;
            }
        }
    }
}

static float dot_f32(const float *a, const float *b, int n)
{
    float acc = 0.0f;
    for (int i = 0; i < n; i++)
        acc += a[i] * b[i];
    return acc;
}

/* Per key: heads ascending, acc += w[h] * max(0, dot). */
static void index_scores_scalar(float *scores, const float *q, const float *w, const float *keys,
                                int n_keys, int n_heads, int dim)
{
    for (int s = 0; s < n_keys; s++) {
        const float *k = keys + (size_t)s * dim;
        float acc = 0.0f;
        for (int h = 0; h < n_heads; h++)
            acc += w[h] * fmaxf(dot_f32(q + (size_t)h * dim, k, dim), 0.0f);
        scores[s] = acc;
    }
}

/* Key=value rows as attend and attend_fp8 take them: fp32 values, or FP8
 * rows (formats.h) decoded where each value is read (the same operations on
 * the same values). */
typedef struct {
    const float *const *f32;
    const uint8_t *const *fp8;
    int dim, tail;
} attend_rows;

static inline float row_value(attend_rows kv, int j, int i)
{
    return kv.fp8 ? fmt_kv_row_value(kv.fp8[j], kv.dim, kv.tail, i) : kv.f32[j][i];
}

static float row_dot(const float *q, attend_rows kv, int j, int dim)
{
    float acc = 0.0f;
    for (int i = 0; i < dim; i++)
        acc += q[i] * row_value(kv, j, i);
    return acc;
}

/* Two passes per head, as the official sparse_attn computes it:
 *   z_j = dot(q_h, kv_j) * scale;  m = max_j z_j (the sink does not enter the max);
 *   e_j = exp(z_j - m);  den = (sum_j e_j, j ascending) + exp(sink_h - m);
 *   out_h = (sum_j p_j kv_j, j ascending) / den, with p_j = bf16(e_j) if bf16_probs else e_j.
 * The denominator always sums the unrounded e_j (the official kernel rounds
 * only the PV operand). The official kernel runs an online softmax over
 * blocks of 64 keys, so its bf16 rounding is applied to exp(z_j - running
 * max); with one global max here the rounded values can differ in the last
 * bf16 bit when the running max changes across blocks. */
static void attend_any(float *out, const float *q, int dim, attend_rows kv, int n_kv, const float *sink,
                       float scale, int bf16_probs, int h0, int h1)
{
    for (int h = h0; h < h1; h++) {
        const float *qh = q + (size_t)h * dim;
        float *o = out + (size_t)h * dim;
        for (int i = 0; i < dim; i++)
            o[i] = 0.0f;
        if (n_kv <= 0)
            continue;
        float m = -INFINITY;
        for (int j = 0; j < n_kv; j++)
            m = fmaxf(m, row_dot(qh, kv, j, dim) * scale);
        float den = 0.0f;
        for (int j = 0; j < n_kv; j++) {
            float e = expf(row_dot(qh, kv, j, dim) * scale - m);
            den += e;
            float p = bf16_probs ? fmt_round_bf16(e) : e;
            for (int i = 0; i < dim; i++)
                o[i] += p * row_value(kv, j, i);
        }
        den += expf(sink[h] - m);
        for (int i = 0; i < dim; i++)
            o[i] /= den;
    }
}

static void attend_scalar(float *out, const float *q, int dim, const float *const *kv, int n_kv,
                          const float *sink, float scale, int bf16_probs, int h0, int h1)
{
    attend_any(out, q, dim, (attend_rows){.f32 = kv}, n_kv, sink, scale, bf16_probs, h0, h1);
}

/* attend_scalar with bf16 probabilities over FP8 rows: its bits on the
 * decoded rows. */
static void attend_fp8_scalar(float *out, const float *q, int dim, int tail, const uint8_t *const *kv,
                              int n_kv, const float *sink, float scale, int h0, int h1)
{
    attend_any(out, q, dim, (attend_rows){.fp8 = kv, .dim = dim, .tail = tail}, n_kv, sink, scale, 1, h0, h1);
}

/* Twice the e2m1 value of each code: FP4 values are multiples of 1/2, so
 * doubled they are integers and the dot products are exact. */
static const int8_t e2m1_x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* Code of column col of key k in a group of the indexer's key layout (kernels.h). */
static inline int index_key_code(const uint8_t *group, int k, int col)
{
    uint8_t byte = group[64 * (col / 8) + 4 * k + col % 4];
    return e2m1_x2[col % 8 < 4 ? byte & 15 : byte >> 4];
}

/* The kernels.h contract, step by step. */
static void index_scores_fp4_scalar(float *scores, const int8_t *q_codes, const float *q_scale,
                                    const float *w, const uint8_t *keys, const uint8_t *key_scale,
                                    int n_keys, int n_heads, int dim)
{
    int nb = dim / 32;
    for (int s = 0; s < n_keys; s++) {
        const uint8_t *kg = keys + (size_t)(s / 16) * INDEX_FP4_GROUP_BYTES(dim);
        const uint8_t *sg = key_scale + (size_t)(s / 16) * INDEX_FP4_GROUP_SCALES(dim);
        int k = s % 16;
        float acc = 0.0f;
        for (int h = 0; h < n_heads; h++) {
            const int8_t *qh = q_codes + (size_t)h * dim;
            float dot = 0.0f;
            for (int b = 0; b < nb; b++) {
                int32_t idot = 0;
                for (int i = 32 * b; i < 32 * b + 32; i++)
                    idot += qh[i] * index_key_code(kg, k, i);
                float ks = fmt_e8m0_to_f32(sg[16 * b + k]) * 0.25f;
                dot = fmaf((float)idot, q_scale[(size_t)h * nb + b] * ks, dot);
            }
            float r = fmt_round_bf16(dot > 0.0f ? dot : 0.0f);
            acc += fmt_round_bf16(r * w[h]);
        }
        scores[s] = fmt_round_bf16(acc);
    }
}

static const dsv4_kernels scalar_table = {
    .isa = "scalar",
    .matmul_f32 = matmul_f32_scalar,
    .matmul_bf16 = matmul_bf16_scalar,
    .matmul_bf16_bf16act = matmul_bf16_scalar,
    .matmul_fp8 = matmul_fp8_scalar,
    .matmul_fp4 = matmul_fp4_scalar,
    .matmul_fp8_e4m3act = matmul_fp8_scalar, /* the exact products need no other math */
    .matmul_fp4_e4m3act = matmul_fp4_scalar,
    .index_scores = index_scores_scalar,
    .attend = attend_scalar,
    .attend_fp8 = attend_fp8_scalar,
    .index_scores_fp4 = index_scores_fp4_scalar,
    .swiglu = ops_swiglu,
    .fp4_quant_sim = fmt_fp4_quant_sim,
    .index_query_pack = fmt_index_query_pack,
    .sumsq_bf16 = ops_sumsq_bf16,
    .topk = ops_topk,
    .act_quant_sim = fmt_act_quant_sim,
};

const dsv4_kernels *kernels_scalar(void)
{
    return &scalar_table;
}

/* ---- small ops (kernels.h: some are table entries' references) ---- */

/* Sum of squares in double, ascending, so the norm does not depend on the
 * magnitude spread of x; mean and eps are added in f32 as the reference does. */
void ops_rmsnorm(float *y, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) {
        float v = x[i] * r;
        y[i] = w ? w[i] * v : v;
    }
}

void ops_sumsq_bf16(float *sums, const float *x, size_t ldx, int rows, int len)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * ldx;
        float s = 0.0f;
        for (int i = 0; i < len; i++)
            s += fmt_round_bf16(xr[i] * xr[i]);
        sums[r] = s;
    }
}

void ops_swiglu(float *g, const float *u, size_t n, float limit, float scale)
{
    for (size_t i = 0; i < n; i++) {
        float gi = g[i], ui = u[i];
        if (limit > 0.0f) {
            /* Comparisons, not fminf/fmaxf, so a NaN propagates as in torch.clamp. */
            gi = gi > limit ? limit : gi;
            ui = ui > limit ? limit : ui < -limit ? -limit : ui;
        }
        g[i] = scale * (gi / (1.0f + expf(-gi)) * ui);
    }
}

/* (a + ib)(c + is), or times the conjugate for the inverse. */
void ops_rope(float *x, const float *cos_t, const float *sin_t, int n_pairs, int inverse)
{
    for (int i = 0; i < n_pairs; i++) {
        float a = x[2 * i], b = x[2 * i + 1];
        float c = cos_t[i], s = inverse ? -sin_t[i] : sin_t[i];
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}

/* Total order for selection: any number beats NaN; larger beats smaller;
 * among equals (and among NaNs) the lower index wins. */
static inline int topk_better(const float *scores, int i, int j)
{
    float a = scores[i], b = scores[j];
    int an = isnan(a), bn = isnan(b);
    if (an != bn)
        return bn;
    if (!an && a != b)
        return a > b;
    return i < j;
}

/* Min-heap (root = worst kept) of indices. */
static void topk_sift_down(int *heap, int k, int pos, const float *scores)
{
    for (;;) {
        int l = 2 * pos + 1, r = l + 1, worst = pos;
        if (l < k && topk_better(scores, heap[worst], heap[l]))
            worst = l;
        if (r < k && topk_better(scores, heap[worst], heap[r]))
            worst = r;
        if (worst == pos)
            return;
        int tmp = heap[pos];
        heap[pos] = heap[worst];
        heap[worst] = tmp;
        pos = worst;
    }
}

static int int_ascending(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* O(n log k): a k-sized min-heap (in scratch) of the best seen so far. */
void ops_topk(int *out, const float *scores, int n, int k, int *scratch)
{
    if (k <= 0)
        return;
    if (k > n)
        k = n;
    int *heap = scratch;
    for (int i = 0; i < k; i++)
        heap[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--)
        topk_sift_down(heap, k, i, scores);
    /* Every later index loses a tie to the heap's (lower) ones, so i enters
     * exactly when it is a number above the worst kept, or the worst kept is
     * NaN and it is not: one comparison with a cached value for most i. */
    float worst = scores[heap[0]];
    for (int i = k; i < n; i++) {
        float v = scores[i];
        if (v > worst || (worst != worst && v == v)) {
            heap[0] = i;
            topk_sift_down(heap, k, 0, scores);
            worst = scores[heap[0]];
        }
    }
    for (int i = 0; i < k; i++)
        out[i] = heap[i];
    qsort(out, (size_t)k, sizeof *out, int_ascending);
}
