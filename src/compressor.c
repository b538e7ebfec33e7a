#include "compressor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../simd/formats.h"
#include "../simd/kernels.h"

static size_t state_floats(const compressor_state *cs)
{
    int c = 1 + cs->overlap;
    return (size_t)c * cs->ratio * c * cs->d;
}

int compressor_state_init(compressor_state *cs, int ratio, int d, int overlap)
{
    cs->ratio = ratio;
    cs->d = d;
    cs->overlap = overlap ? 1 : 0;
    size_t n = state_floats(cs);
    cs->kv = malloc(n * sizeof *cs->kv);
    cs->score = malloc(n * sizeof *cs->score);
    if (!cs->kv || !cs->score) {
        compressor_state_free(cs);
        return -1;
    }
    compressor_state_reset(cs);
    return 0;
}

void compressor_state_free(compressor_state *cs)
{
    free(cs->kv);
    free(cs->score);
    cs->kv = cs->score = NULL;
}

void compressor_state_reset(compressor_state *cs)
{
    size_t n = state_floats(cs);
    memset(cs->kv, 0, n * sizeof *cs->kv);
    for (size_t i = 0; i < n; i++)
        cs->score[i] = -INFINITY;
}

/* Per channel e: softmax over the slots' scores, then the weighted sum of
 * their values, slots in order (the oracle: (kv * softmax(score)).sum).
 * Slot s lives in state row s; with overlap, slots [0, ratio) read the A half
 * (columns [0, d)) and slots [ratio, 2*ratio) the B half (columns [d, 2d)). */
static void pool(const compressor_state *cs, float *out)
{
    int r = cs->ratio, d = cs->d, w = (1 + cs->overlap) * d;
    int n_slots = (1 + cs->overlap) * r;
    for (int e = 0; e < d; e++) {
        float m = -INFINITY;
        for (int s = 0; s < n_slots; s++) {
            size_t at = (size_t)s * w + (cs->overlap && s >= r ? d : 0) + e;
            m = fmaxf(m, cs->score[at]);
        }
        float den = 0.0f;
        for (int s = 0; s < n_slots; s++) {
            size_t at = (size_t)s * w + (cs->overlap && s >= r ? d : 0) + e;
            den += expf(cs->score[at] - m);
        }
        float acc = 0.0f;
        for (int s = 0; s < n_slots; s++) {
            size_t at = (size_t)s * w + (cs->overlap && s >= r ? d : 0) + e;
            acc += cs->kv[at] * (expf(cs->score[at] - m) / den);
        }
        out[e] = acc;
    }
}

int compressor_push(compressor_state *cs, long t, const float *a, const float *g,
                    const float *ape, float *out)
{
    int r = cs->ratio, w = (1 + cs->overlap) * cs->d;
    int slot = (int)(t % r);
    int row = cs->overlap ? r + slot : slot;
    float *kv_row = cs->kv + (size_t)row * w, *score_row = cs->score + (size_t)row * w;
    const float *ape_row = ape + (size_t)slot * w;
    memcpy(kv_row, a, (size_t)w * sizeof *a);
    for (int i = 0; i < w; i++)
        score_row[i] = g[i] + ape_row[i];
    if ((t + 1) % r != 0)
        return 0;
    pool(cs, out);
    if (cs->overlap) {
        /* The current window becomes the previous one: its A half feeds the next entry. */
        memcpy(cs->kv, cs->kv + (size_t)r * w, (size_t)r * w * sizeof *cs->kv);
        memcpy(cs->score, cs->score + (size_t)r * w, (size_t)r * w * sizeof *cs->score);
    }
    return 1;
}

void compressor_finish_entry(float *entry, int d, const float *norm_w, float eps, int rope_dim,
                             const float *cos_t, const float *sin_t, int release, int rotate)
{
    float *rope = entry + (d - rope_dim);
    if (release)
        fmt_round_bf16_array(entry, (size_t)d);
    ops_rmsnorm(entry, entry, norm_w, d, eps);
    if (release)
        fmt_round_bf16_array(entry, (size_t)d);
    ops_rope(rope, cos_t, sin_t, rope_dim / 2, 0);
    if (!release)
        return;
    fmt_round_bf16_array(rope, (size_t)rope_dim);
    if (rotate) {
        fmt_hadamard(entry, (size_t)d);
        fmt_round_bf16_array(entry, (size_t)d);
        fmt_fp4_quant_sim(entry, (size_t)d, 32);
    } else {
        fmt_act_quant_sim(entry, (size_t)(d - rope_dim), 64);
    }
}
