/* Top-k selection without sifting most scores through a heap (kernels.h:
 * topk), the same indices as ops_topk, written once for every table that
 * has it. The including file defines
 *   static int at_least(const float *scores, int n, float t, int *cand):
 * the indices of the scores >= t (NaN never), ascending, into cand (room
 * for n), and their count; then includes this file and gets topk_sampled().
 *
 * The heap's cost is its insertions (a few thousand sift-downs for 256K
 * scores and k = 1024, each a chain of mispredicted branches), not the scan.
 * So first a threshold t from a strided sample: its r-th best value, r set
 * for ~1.25 k of the n scores to reach t. One pass (at_least) keeps the
 * indices of the scores >= t; when at least k qualify, the top k are all
 * among them (the k-th best is then >= t, and so is every score tied with
 * it), and a heap over them alone gives ops_topk's answer. When fewer do (an
 * unlucky sample) or t is NaN, ops_topk runs over everything. Either way the
 * result is exact. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#define SAMPLE 4096
#define MIN_N (2 * SAMPLE) /* below, and for k above n / 8, no sample: every score a candidate */
#define HEAP_KEYS 4096     /* most k for the rank keys' heap (32 KiB of stack) */

/* A score and its index as one number that orders as ops_topk ranks: the
 * float's bits made monotonic (-0 as +0, NaN below -inf) above the index's
 * complement (the lower index wins a tie). Candidates are never NaN; in the
 * sample a NaN ranked r-th makes the threshold NaN, and the heap runs over
 * everything. */
static inline uint64_t rank_key(const float *scores, int i)
{
    uint32_t u;
    memcpy(&u, &scores[i], sizeof u);
    if (u == 0x80000000u)
        u = 0;
    uint32_t key = (u & 0x7fffffffu) > 0x7f800000u ? 0 : u & 0x80000000u ? ~u : u | 0x80000000u;
    return (uint64_t)key << 32 | (uint32_t)~(uint32_t)i;
}

static void sift_down(uint64_t *heap, int k, int pos)
{
    uint64_t v = heap[pos];
    for (;;) {
        int l = 2 * pos + 1, r = l + 1, worst = l;
        if (l >= k)
            break;
        if (r < k && heap[r] < heap[l])
            worst = r;
        if (heap[worst] >= v)
            break;
        heap[pos] = heap[worst];
        pos = worst;
    }
    heap[pos] = v;
}

/* heap <- the k best rank keys of m scores, those at idx[j] (or at j *
 * stride without idx), as a min-heap: its root is the k-th best. */
static void keep_best(uint64_t *heap, int k, const float *scores, const int *idx, int stride, int m)
{
    for (int j = 0; j < k; j++)
        heap[j] = rank_key(scores, idx ? idx[j] : j * stride);
    for (int j = k / 2 - 1; j >= 0; j--)
        sift_down(heap, k, j);
    for (int j = k; j < m; j++) {
        uint64_t v = rank_key(scores, idx ? idx[j] : j * stride);
        if (v > heap[0]) {
            heap[0] = v;
            sift_down(heap, k, 0);
        }
    }
}

/* The r-th best of a strided sample of SAMPLE scores (r <= HEAP_KEYS):
 * a float, or NaN when NaN ranks that high. */
static float sample_threshold(const float *scores, int n, int r)
{
    uint64_t heap[HEAP_KEYS];
    keep_best(heap, r, scores, NULL, n / SAMPLE, SAMPLE);
    return scores[~(uint32_t)heap[0]];
}

/* ops_topk's choice among the candidates in scratch[0, m) (k <= HEAP_KEYS),
 * by rank keys: integer comparisons, no scores reloaded through indices.
 * Then the chosen indices in ascending order through a bitmap of the n
 * scores' indices in scratch (the candidates are spent). */
static void select_among(int *out, const float *scores, int n, int *scratch, int m, int k)
{
    uint64_t heap[HEAP_KEYS];
    keep_best(heap, k, scores, scratch, 0, m);
    unsigned *bits = (unsigned *)scratch;
    size_t words = ((size_t)n + 31) / 32;
    memset(bits, 0, words * sizeof *bits);
    for (int i = 0; i < k; i++) {
        uint32_t j = ~(uint32_t)heap[i];
        bits[j / 32] |= 1u << (j % 32);
    }
    int o = 0;
    for (size_t w = 0; w < words; w++)
        for (unsigned b = bits[w]; b; b &= b - 1)
            out[o++] = (int)(w * 32 + (size_t)__builtin_ctz(b));
}

static void topk_sampled(int *out, const float *scores, int n, int k, int *scratch)
{
    if (k <= 0)
        return;
    if (k > n / 2 || k > HEAP_KEYS) {
        ops_topk(out, scores, n, k, scratch);
        return;
    }
    /* few scores: all of them candidates (but NaNs), through the keys' heap */
    float t = -INFINITY;
    if (n >= MIN_N && k <= n / 8)
        t = sample_threshold(scores, n, (int)(((long)k * SAMPLE * 5 / 4 + n - 1) / n) + 8);
    int m = t == t ? at_least(scores, n, t, scratch) : 0;
    if (m >= k)
        select_among(out, scores, n, scratch, m, k);
    else
        ops_topk(out, scores, n, k, scratch);
}
