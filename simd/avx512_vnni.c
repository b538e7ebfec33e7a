/* Lightning-indexer scores over FP4 keys with AVX-512 VNNI (vpdpbusd), in
 * the release numerics kernels.h fixes, bitwise equal to the scalar
 * reference, for any scales: one integer dot and one float step per block.
 * avx512_vnni_shifted.c runs it where its one-dot-per-head path cannot.
 *
 * Keys in lanes: a group of 16 keys is decoded once into a stack scratch of
 * dim/4 vectors, vector c holding columns 4c..4c+3 of the 16 keys as
 * unsigned bytes (2*e2m1 + 12, in [0, 24]), one 32-bit lane per key. Each
 * is multiplied with the query's 4 signed codes of those columns, broadcast.
 * The +12 is taken back by starting each block's sum at -12 * (sum of the
 * query's codes in the block), so every integer dot is exact. Heads go in
 * ascending order (the contract's), HEADS_PER_PASS of them against
 * GROUPS_PER_PASS groups at a time: each loaded key vector serves 4 heads
 * and each broadcast query dword 3 groups, so loads do not bound vpdpbusd.
 *
 * vpdpbusd shares its two pipes with vmulps / vfmadd (Zen 4/5, and the FMA
 * ports of Intel cores), so the per-block float step is what limits the
 * kernel. Where every factor is a power of two in range (always, for the
 * FP4 scales the engine passes; checked per call and per pass), the block
 * scale d = q_scale * ks is exact and so is idot * d, and
 *   fmaf(idot, d, dot) = dot + scalef(scalef(idot, log2 q_scale), log2 ks)
 * bit for bit: two vscalefps and an add, which mostly avoid those pipes.
 * Elsewhere the contract's multiply and fused multiply-add are used as is. */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "round_bf16.h"

void index_scores_fp4_blockwise(float *scores, const int8_t *q_codes, const float *q_scale,
                                 const float *w, const uint8_t *keys, const uint8_t *key_scale,
                                 int n_keys, int n_heads, int dim);

#define MAX_B (INDEX_FP4_MAX_DIM / 32)
#define MAX_C (INDEX_FP4_MAX_DIM / 4)
#define HEADS_PER_PASS 4
#define GROUPS_PER_PASS 3

/* Exponent bounds of the scalef path: |idot| < 2^13, so idot * 2^e is exact
 * and normal for e in [-126, 114]; q_scale's exponent and the sum with the
 * key's both stay there. */
#define EXP_MIN (-126)
#define EXP_MAX 114

/* One group of 16 keys, decoded: kc[c] holds columns 4c..4c+3 (2*e2m1 + 12),
 * ks[b] the block scales / 4, ke[b] their log2 as floats (the scalef path). */
typedef struct {
    __m512i kc[MAX_C];
    __m512 ks[MAX_B], ke[MAX_B];
} key_group;

static inline __attribute__((always_inline)) void decode_group(key_group *G, const uint8_t *kg,
                                                                const uint8_t *sg, int nb)
{
    const __m512i lut = _mm512_broadcast_i32x4(
        _mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
    const __m512i nib = _mm512_set1_epi8(0x0f);
    #pragma GCC unroll 32
    for (int j = 0; j < 4 * nb; j++) {
        __m512i b = _mm512_loadu_si512(kg + 64 * j);
        G->kc[2 * j] = _mm512_shuffle_epi8(lut, _mm512_and_si512(b, nib));
        G->kc[2 * j + 1] = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(b, 4), nib));
    }
    #pragma GCC unroll 8
    for (int b = 0; b < nb; b++) {
        __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(sg + 16 * b)));
        G->ks[b] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(e, 23)), _mm512_set1_ps(0.25f));
        G->ke[b] = _mm512_cvtepi32_ps(_mm512_sub_epi32(e, _mm512_set1_epi32(129)));
    }
}

/* Heads h .. h+nh-1 against ng decoded groups: each head's contribution
 * added to acc[g] in head order. qe: log2 of the query's block scales
 * (scalef path, `pow2` set). */
static inline __attribute__((always_inline)) void
heads_pass(int pow2, int nh, int ng, int nb, __m512 *acc, const key_group *G, const int8_t *q, const float *qs,
           const float *qe, const float *w, const int32_t *corr)
{
    const int dim = 32 * nb;
    __m512 dot[HEADS_PER_PASS][GROUPS_PER_PASS];
    #pragma GCC unroll 8
    for (int j = 0; j < nh; j++)
        #pragma GCC unroll 8
        for (int g = 0; g < ng; g++)
            dot[j][g] = _mm512_setzero_ps();
    #pragma GCC unroll 8
    for (int b = 0; b < nb; b++) {
        __m512i ia[HEADS_PER_PASS][GROUPS_PER_PASS];
        #pragma GCC unroll 8
        for (int j = 0; j < nh; j++) {
            __m512i c0 = _mm512_set1_epi32(corr[j * nb + b]);
            #pragma GCC unroll 8
            for (int g = 0; g < ng; g++)
                ia[j][g] = c0;
        }
        #pragma GCC unroll 8
        for (int c = 8 * b; c < 8 * b + 8; c++) {
            __m512i kv[GROUPS_PER_PASS];
            #pragma GCC unroll 8
            for (int g = 0; g < ng; g++)
                kv[g] = _mm512_load_si512(&G[g].kc[c]);
            #pragma GCC unroll 8
            for (int j = 0; j < nh; j++) {
                int32_t qd;
                memcpy(&qd, q + (size_t)j * dim + 4 * c, sizeof qd);
                __m512i qv = _mm512_set1_epi32(qd);
                #pragma GCC unroll 8
                for (int g = 0; g < ng; g++)
                    ia[j][g] = _mm512_dpbusd_epi32(ia[j][g], kv[g], qv);
            }
        }
        #pragma GCC unroll 8
        for (int j = 0; j < nh; j++) {
            __m512 qsb = _mm512_set1_ps(pow2 ? qe[j * nb + b] : qs[j * nb + b]);
            #pragma GCC unroll 8
            for (int g = 0; g < ng; g++) {
                __m512 x = _mm512_cvtepi32_ps(ia[j][g]);
                if (pow2)
                    dot[j][g] = _mm512_add_ps(dot[j][g], _mm512_scalef_ps(_mm512_scalef_ps(x, qsb), G[g].ke[b]));
                else
                    dot[j][g] = _mm512_fmadd_ps(x, _mm512_mul_ps(qsb, G[g].ks[b]), dot[j][g]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < nh; j++) {
        __m512 wj = _mm512_set1_ps(w[j]);
        #pragma GCC unroll 8
        for (int g = 0; g < ng; g++) {
            /* vmaxps returns its second operand (+0) for a -0 dot, as the scalar `dot > 0 ? dot : 0` */
            __m512 r = round_bf16_f32x16(_mm512_max_ps(dot[j][g], _mm512_setzero_ps()));
            acc[g] = _mm512_add_ps(acc[g], round_bf16_f32x16(_mm512_mul_ps(r, wj)));
        }
    }
}

typedef struct {
    const int8_t *q;
    const float *qs, *w;
    const int32_t *corr; /* [n_heads][nb] -12 * sum of the block's query codes */
    const float *qe;     /* [n_heads][nb] log2 q_scale, or NULL if some is not a power of two in range */
    int qe_min, qe_max, n_heads;
} query;

/* ng decoded groups (keys s0 .. s0 + 16*ng - 1, the last possibly partial) against every head. */
static inline __attribute__((always_inline)) void
score_pass(int pow2, int ng, int nb, float *scores, const query *Q, const key_group *G, int n_keys, int s0)
{
    const int dim = 32 * nb;
    __m512 acc[GROUPS_PER_PASS];
    #pragma GCC unroll 8
    for (int g = 0; g < ng; g++)
        acc[g] = _mm512_setzero_ps();
    int h = 0;
    for (; h + HEADS_PER_PASS <= Q->n_heads; h += HEADS_PER_PASS)
        heads_pass(pow2, HEADS_PER_PASS, ng, nb, acc, G, Q->q + (size_t)h * dim, Q->qs + (size_t)h * nb,
                   pow2 ? Q->qe + (size_t)h * nb : NULL, Q->w + h, Q->corr + (size_t)h * nb);
    for (; h < Q->n_heads; h++)
        heads_pass(pow2, 1, ng, nb, acc, G, Q->q + (size_t)h * dim, Q->qs + (size_t)h * nb,
                   pow2 ? Q->qe + (size_t)h * nb : NULL, Q->w + h, Q->corr + (size_t)h * nb);
    #pragma GCC unroll 8
    for (int g = 0; g < ng; g++) {
        __m512 v = round_bf16_f32x16(acc[g]);
        int left = n_keys - (s0 + 16 * g);
        if (left >= INDEX_FP4_GROUP)
            _mm512_storeu_ps(scores + s0 + 16 * g, v);
        else
            _mm512_mask_storeu_ps(scores + s0 + 16 * g, (__mmask16)((1u << left) - 1), v);
    }
}

/* Whether every key scale of n whole groups keeps the scalef path exact. */
static int keys_in_range(const query *Q, const uint8_t *sg, size_t bytes)
{
    if (!Q->qe)
        return 0;
    __m128i lo = _mm_set1_epi8(-1), hi = _mm_setzero_si128();
    for (size_t i = 0; i < bytes; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(sg + i));
        lo = _mm_min_epu8(lo, v);
        hi = _mm_max_epu8(hi, v);
    }
    uint8_t l[16], u[16];
    _mm_storeu_si128((__m128i *)l, lo);
    _mm_storeu_si128((__m128i *)u, hi);
    int kmin = 255, kmax = 0;
    for (int i = 0; i < 16; i++) {
        kmin = l[i] < kmin ? l[i] : kmin;
        kmax = u[i] > kmax ? u[i] : kmax;
    }
    return kmin >= 1 && kmax <= 254 && Q->qe_min + kmin - 129 >= EXP_MIN && Q->qe_max + kmax - 129 <= EXP_MAX;
}

static inline __attribute__((always_inline)) void score_groups(int nb, float *scores, const query *Q,
                                                                const uint8_t *keys, const uint8_t *key_scale,
                                                                int n_keys)
{
    const int dim = 32 * nb;
    const size_t kbytes = INDEX_FP4_GROUP_BYTES(dim), sbytes = INDEX_FP4_GROUP_SCALES(dim);
    key_group G[GROUPS_PER_PASS];
    int n_groups = (n_keys + INDEX_FP4_GROUP - 1) / INDEX_FP4_GROUP, g0 = 0;
    for (; g0 + GROUPS_PER_PASS <= n_groups; g0 += GROUPS_PER_PASS) {
        for (int g = 0; g < GROUPS_PER_PASS; g++)
            decode_group(&G[g], keys + (size_t)(g0 + g) * kbytes, key_scale + (size_t)(g0 + g) * sbytes, nb);
        /* a partial last group holds any bytes past n_keys: the slow path */
        if (16 * (g0 + GROUPS_PER_PASS) <= n_keys &&
            keys_in_range(Q, key_scale + (size_t)g0 * sbytes, GROUPS_PER_PASS * sbytes))
            score_pass(1, GROUPS_PER_PASS, nb, scores, Q, G, n_keys, g0 * INDEX_FP4_GROUP);
        else
            score_pass(0, GROUPS_PER_PASS, nb, scores, Q, G, n_keys, g0 * INDEX_FP4_GROUP);
    }
    for (; g0 < n_groups; g0++) {
        decode_group(&G[0], keys + (size_t)g0 * kbytes, key_scale + (size_t)g0 * sbytes, nb);
        score_pass(0, 1, nb, scores, Q, G, n_keys, g0 * INDEX_FP4_GROUP);
    }
}

/* log2 of a power of two with its exponent in [EXP_MIN, EXP_MAX], else a value outside. */
static int pow2_exponent(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    int e = (int)((u >> 23) & 0xff) - 127;
    return (u & 0x807fffffu) == 0 && e >= EXP_MIN && e <= EXP_MAX ? e : EXP_MAX + 1000;
}

void index_scores_fp4_blockwise(float *scores, const int8_t *q_codes, const float *q_scale,
                                 const float *w, const uint8_t *keys, const uint8_t *key_scale,
                                 int n_keys, int n_heads, int dim)
{
    int nb = dim / 32;
    int32_t corr[INDEX_FP4_MAX_HEADS * MAX_B];
    float qe[INDEX_FP4_MAX_HEADS * MAX_B];
    query Q = {q_codes, q_scale, w, corr, qe, EXP_MAX, EXP_MIN, n_heads};
    for (int i = 0; i < n_heads * nb; i++) {
        const int8_t *qb = q_codes + (size_t)i * 32;
        int sum = 0;
        for (int k = 0; k < 32; k++)
            sum += qb[k];
        corr[i] = -12 * sum;
        int e = pow2_exponent(q_scale[i]);
        if (e > EXP_MAX)
            Q.qe = NULL;
        qe[i] = (float)e;
        Q.qe_min = e < Q.qe_min ? e : Q.qe_min;
        Q.qe_max = e > Q.qe_max ? e : Q.qe_max;
    }
    /* the block count as a constant for the shapes in use, so the loops unroll */
    switch (nb) {
    case 4:
        score_groups(4, scores, &Q, keys, key_scale, n_keys);
        break;
    case 2:
        score_groups(2, scores, &Q, keys, key_scale, n_keys);
        break;
    default:
        score_groups(nb, scores, &Q, keys, key_scale, n_keys);
        break;
    }
}
