/* Top-k for the tables without a vector pass of their own (kernels.h: topk;
 * the method: topk_impl.h): plain C, so AVX2 and NEON machines get the
 * sampled threshold and the rank keys' heap too. The pass stores every
 * index and advances only past the ones that pass: no branch to mispredict. */
#include "kernels.h"

static int at_least(const float *scores, int n, float t, int *cand)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        cand[m] = i;
        m += scores[i] >= t;
    }
    return m;
}

#include "topk_impl.h"

void ops_topk_sampled(int *out, const float *scores, int n, int k, int *scratch)
{
    topk_sampled(out, scores, n, k, scratch);
}
