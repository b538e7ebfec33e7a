/* Top-k with AVX-512 (kernels.h: topk; the method: topk_impl.h): the pass
 * over all scores compares 16 at a time and compresses the passing indices
 * in registers. */
#include <immintrin.h>

#include "masks.h"

void topk_avx512(int *out, const float *scores, int n, int k, int *scratch);

/* Indices of the scores >= t (NaN never), ascending, into cand; their count. */
static int at_least(const float *scores, int n, float t, int *cand)
{
    const __m512 tv = _mm512_set1_ps(t);
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    int m = 0, i = 0;
    /* cand + m + 16 <= cand + i + 16 <= cand + n: a whole vector's store fits */
    for (; i + 16 <= n; i += 16, idx = _mm512_add_epi32(idx, step)) {
        __mmask16 keep = _mm512_cmp_ps_mask(_mm512_loadu_ps(scores + i), tv, _CMP_GE_OQ);
        if (keep) {
            _mm512_storeu_si512(cand + m, _mm512_maskz_compress_epi32(keep, idx));
            m += __builtin_popcount(keep);
        }
    }
    if (i < n) {
        __mmask16 keep = _mm512_mask_cmp_ps_mask(m16(n - i), _mm512_maskz_loadu_ps(m16(n - i), scores + i), tv,
                                                 _CMP_GE_OQ);
        int c = __builtin_popcount(keep);
        _mm512_mask_storeu_epi32(cand + m, (__mmask16)((1u << c) - 1), _mm512_maskz_compress_epi32(keep, idx));
        m += c;
    }
    return m;
}

#include "topk_impl.h"

void topk_avx512(int *out, const float *scores, int n, int k, int *scratch)
{
    topk_sampled(out, scores, n, k, scratch);
}
