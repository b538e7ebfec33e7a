/* Lightning-indexer scores over FP4 keys with AVX-512 VNNI (vpdpbusd).
 *
 * One lane per head: the query is transposed once per call into, for each
 * group of 4 columns, a vector of 16 heads' 4 codes; each key's 4 codes are
 * broadcast against it. vpdpbusd multiplies unsigned by signed bytes, so
 * keys are stored as (2*e2m1 + 12) in [0, 24] and each block's sum starts
 * at -12 * (sum of the query's codes in the block): the integer dot is exact.
 * The float combination follows the order kernels.h fixes, bitwise. */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "formats.h"

void index_scores_fp4_avx512vnni(float *scores, const int8_t *q_codes, const float *q_scale,
                                 const float *w, const uint8_t *keys, const uint8_t *key_scale,
                                 int n_keys, int n_heads, int dim);

#define MAX_G (INDEX_FP4_MAX_HEADS / 16)
#define MAX_C (INDEX_FP4_MAX_DIM / 4)
#define MAX_B (INDEX_FP4_MAX_DIM / 32)

typedef struct {
    int32_t qt[MAX_C][MAX_G][16] __attribute__((aligned(64))); /* 4 codes of 16 heads */
    int32_t corr[MAX_B][MAX_G][16] __attribute__((aligned(64)));
    float qs[MAX_B][MAX_G][16] __attribute__((aligned(64)));
    float w[MAX_G][16] __attribute__((aligned(64)));
} query_t;

/* 128 key codes (+12) at natural positions: codes of column 32L + j sit at
 * lo[16L + j] for j < 16 and hi[16L + j - 16] otherwise (in-lane unpacks). */
static inline void expand_key(const uint8_t *p, int bytes, uint8_t *lo, uint8_t *hi)
{
    const __m512i lut = _mm512_broadcast_i32x4(
        _mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
    const __m512i nib = _mm512_set1_epi8(0x0f);
    __mmask64 m = bytes >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << bytes) - 1);
    __m512i b = _mm512_maskz_loadu_epi8(m, p);
    __m512i l = _mm512_shuffle_epi8(lut, _mm512_and_si512(b, nib));
    __m512i h = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(b, 4), nib));
    _mm512_store_si512((__m512i *)lo, _mm512_unpacklo_epi8(l, h));
    _mm512_store_si512((__m512i *)hi, _mm512_unpackhi_epi8(l, h));
}

static inline int32_t key_dword(const uint8_t *lo, const uint8_t *hi, int c)
{
    int L = c / 8, j = (c % 8) * 4;
    int32_t v;
    memcpy(&v, j < 16 ? lo + 16 * L + j : hi + 16 * L + j - 16, 4);
    return v;
}

static inline __attribute__((always_inline)) void score_keys(int G, float *scores, const query_t *Q,
                                                              const uint8_t *keys,
                                                              const uint8_t *key_scale, int n_keys,
                                                              int dim)
{
    int nb = dim / 32, kbytes = dim / 2;
    uint8_t lo[2][64] __attribute__((aligned(64))), hi[2][64] __attribute__((aligned(64)));
    for (int s = 0; s < n_keys; s++) {
        const uint8_t *kp = keys + (size_t)s * kbytes;
        const uint8_t *ks = key_scale + (size_t)s * nb;
        for (int part = 0; part * 64 < kbytes; part++)
            expand_key(kp + part * 64, kbytes - part * 64, lo[part], hi[part]);
        __m512 facc[MAX_G];
        for (int g = 0; g < G; g++)
            facc[g] = _mm512_setzero_ps();
        for (int b = 0; b < nb; b++) {
            __m512i iacc[MAX_G];
            for (int g = 0; g < G; g++)
                iacc[g] = _mm512_load_si512((const __m512i *)Q->corr[b][g]);
            for (int c = 8 * b; c < 8 * b + 8; c++) {
                int part = c / 32;
                __m512i kd = _mm512_set1_epi32(key_dword(lo[part], hi[part], c % 32));
                for (int g = 0; g < G; g++)
                    iacc[g] = _mm512_dpbusd_epi32(iacc[g], kd,
                                                  _mm512_load_si512((const __m512i *)Q->qt[c][g]));
            }
            __m512 kscale = _mm512_set1_ps(fmt_e8m0_to_f32(ks[b]) * 0.25f);
            for (int g = 0; g < G; g++) {
                __m512 d = _mm512_mul_ps(_mm512_load_ps(Q->qs[b][g]), kscale);
                facc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[g]), d, facc[g]);
            }
        }
        __m512 lane = _mm512_setzero_ps();
        for (int g = 0; g < G; g++) {
            __m512 v = _mm512_mul_ps(_mm512_load_ps(Q->w[g]), _mm512_max_ps(facc[g], _mm512_setzero_ps()));
            lane = g == 0 ? v : _mm512_add_ps(lane, v);
        }
        __m256 a = _mm256_add_ps(_mm512_castps512_ps256(lane), _mm512_extractf32x8_ps(lane, 1));
        __m128 x = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        __m128 y = _mm_add_ps(x, _mm_movehl_ps(x, x));
        scores[s] = _mm_cvtss_f32(_mm_add_ss(y, _mm_movehdup_ps(y)));
    }
}

void index_scores_fp4_avx512vnni(float *scores, const int8_t *q_codes, const float *q_scale,
                                 const float *w, const uint8_t *keys, const uint8_t *key_scale,
                                 int n_keys, int n_heads, int dim)
{
    static __thread query_t Q; /* 48 KiB: too much for a worker's stack, never allocated */
    int G = (n_heads + 15) / 16, nb = dim / 32, nc = dim / 4;
    memset(&Q, 0, sizeof Q);
    for (int h = 0; h < n_heads; h++) {
        const int8_t *qh = q_codes + (size_t)h * dim;
        for (int c = 0; c < nc; c++)
            memcpy(&Q.qt[c][h / 16][h % 16], qh + 4 * c, 4);
        for (int b = 0; b < nb; b++) {
            int sum = 0;
            for (int i = 0; i < 32; i++)
                sum += qh[32 * b + i];
            Q.corr[b][h / 16][h % 16] = -12 * sum;
            Q.qs[b][h / 16][h % 16] = q_scale[(size_t)h * nb + b];
        }
        Q.w[h / 16][h % 16] = w[h];
    }
    switch (G) {
    case 4:
        score_keys(4, scores, &Q, keys, key_scale, n_keys, dim);
        break;
    case 8:
        score_keys(8, scores, &Q, keys, key_scale, n_keys, dim);
        break;
    default:
        score_keys(G, scores, &Q, keys, key_scale, n_keys, dim);
        break;
    }
}
