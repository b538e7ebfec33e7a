#include "indexer.h"

#include <math.h>
#include <omp.h>

#include "../simd/formats.h"

void indexer_prepare_query(const dsv4_kernels *k, float *q, int n_heads, int dim, int rope_dim,
                           const float *cos_t, const float *sin_t, int release)
{
    for (int h = 0; h < n_heads; h++) {
        float *qh = q + (size_t)h * dim;
        float *rope = qh + (dim - rope_dim);
        ops_rope(rope, cos_t, sin_t, rope_dim / 2, 0);
        if (!release)
            continue;
        fmt_round_bf16_array(rope, (size_t)rope_dim);
        fmt_hadamard(qh, (size_t)dim);
        fmt_round_bf16_array(qh, (size_t)dim);
        k->fp4_quant_sim(qh, (size_t)dim, 32);
    }
}

void indexer_scale_weights(float *w, int n_heads, int dim, int release)
{
    float c = (float)(1.0 / sqrt((double)dim * (double)n_heads));
    for (int h = 0; h < n_heads; h++)
        w[h] = release ? fmt_round_bf16(fmt_round_bf16(w[h]) * c) : w[h] * c;
}

/* Keys per work item: each key's score is computed whole by one thread, so
 * the split does not change any result. */
#define KEY_BLOCK 256
#define FP4_CALLS_PER_THREAD 8 /* indexer_scores_fp4 */
#define FP4_CALL_MIN 1024

static void scores_block_release(const dsv4_kernels *k, float *scores, const float *q, const float *w,
                                 const float *keys, int n_keys, int n_heads, int dim)
{
    float relu_dot[KEY_BLOCK];
    const float one = 1.0f;
    for (int s = 0; s < n_keys; s++)
        scores[s] = 0.0f;
    for (int h = 0; h < n_heads; h++) {
        /* One head with weight 1: the kernel returns exactly max(0, q_h·k). */
        k->index_scores(relu_dot, q + (size_t)h * dim, &one, keys, n_keys, 1, dim);
        for (int s = 0; s < n_keys; s++)
            scores[s] += fmt_round_bf16(fmt_round_bf16(relu_dot[s]) * w[h]);
    }
    for (int s = 0; s < n_keys; s++)
        scores[s] = fmt_round_bf16(scores[s]);
}

void indexer_scores(const dsv4_kernels *k, float *scores, const float *q, const float *w,
                    const float *keys, int n_keys, int n_heads, int dim, int release)
{
    int blocks = (n_keys + KEY_BLOCK - 1) / KEY_BLOCK;
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (int b = 0; b < blocks; b++) {
        int s0 = b * KEY_BLOCK, cnt = n_keys - s0 < KEY_BLOCK ? n_keys - s0 : KEY_BLOCK;
        const float *kb = keys + (size_t)s0 * dim;
        if (release)
            scores_block_release(k, scores + s0, q, w, kb, cnt, n_heads, dim);
        else
            k->index_scores(scores + s0, q, w, kb, cnt, n_heads, dim);
    }
}

void indexer_scores_fp4(const dsv4_kernels *k, float *scores, const int8_t *q_codes, const float *q_scales,
                        const float *w, const uint8_t *keys, const uint8_t *key_scales, int n_keys, int n_heads,
                        int dim)
{
    /* Eight calls per thread, handed out as threads come free, each of at
     * least FP4_CALL_MIN keys. One call per thread, all equal (as before),
     * left every thread waiting for the slowest: on the 16-core Sapphire
     * Rapids VM, two calls, eight alternations, medians 3000 -> 3790 GOP/s
     * over 64K keys and 3080 -> 3750 over 256K (bench/history.md, round
     * 11). The kernel prepares the query once per call
     * (avx512_vnni_shifted.c), and calls of 256 keys ran 12% slower than
     * calls of 8192 (Zen 5, one core): hence the floor. Whole key groups
     * per call. */
    _Static_assert(FP4_CALL_MIN % INDEX_FP4_GROUP == 0, "calls must take whole FP4 key groups");
    int calls = omp_get_max_threads() * FP4_CALLS_PER_THREAD, per = (n_keys + calls - 1) / calls;
    per = (per + INDEX_FP4_GROUP - 1) / INDEX_FP4_GROUP * INDEX_FP4_GROUP;
    per = per > FP4_CALL_MIN ? per : FP4_CALL_MIN;
    int blocks = (n_keys + per - 1) / per;
#pragma omp parallel for schedule(dynamic, 1) if (blocks > 1)
    for (int b = 0; b < blocks; b++) {
        int s0 = b * per, cnt = n_keys - s0 < per ? n_keys - s0 : per;
        size_t g0 = (size_t)s0 / INDEX_FP4_GROUP;
        k->index_scores_fp4(scores + s0, q_codes, q_scales, w, keys + g0 * INDEX_FP4_GROUP_BYTES(dim),
                            key_scales + g0 * INDEX_FP4_GROUP_SCALES(dim), cnt, n_heads, dim);
    }
}

int indexer_select(const dsv4_kernels *kt, int *sel, const float *scores, int n_keys, int topk, int *scratch)
{
    int k = topk < n_keys ? topk : n_keys;
    if (k <= 0)
        return 0;
    kt->topk(sel, scores, n_keys, k, scratch);
    return k;
}
