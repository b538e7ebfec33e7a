/* Lightning-indexer scores over FP4 keys, AVX-512 VNNI: the entry of the
 * avx512 table. Where the scales allow it (real keys and queries: both are
 * Hadamard-rotated before quantization, so a vector's 32-column blocks have
 * similar magnitudes), each (head, key) dot is one integer dot product
 * instead of one per block; elsewhere avx512_vnni.c's block-wise kernel
 * runs. Both equal the scalar reference bit for bit (kernels.h).
 *
 * Shifted codes. When every query scale is a power of two, a head's block
 * exponents lie within 3 of their least (qm), and a key's block scales
 * within 3 of their least (km), each block's codes are shifted left by its
 * exponent's excess: the query's 2*e2m1 codes stay within +-96 and the
 * key's within +-96 (signed bytes). Then
 *   idot' = sum over all columns of q' * k' = sum_b 2^(dq_b + dk_b) idot_b
 * is exact in int32 (|idot'| < 2^22 for dim <= 256), and the reference's
 * block-by-block sum, every term a multiple of 2^E0 (E0 = qm + km - 129)
 * below 2^(E0 + 22), is exact too: dot = idot' * 2^E0. vpdpbusd wants one
 * side unsigned: the query is stored as q' + 96, so each key's integer sum
 * starts at -96 * (sum of its shifted codes), computed once per key.
 *
 * Scales taken out. With every value involved normal and finite (the range
 * checks below), rounding commutes with powers of two, so per key
 *   bf16(bf16(max(dot, 0)) * w) = bf16(bf16(max(idot', 0)) * (w * 2^qm)) * 2^(km - 129)
 * and the head sum takes 2^(km - 129) out as a common factor: the loop
 * runs on integers cast to float, the head weights pre-scaled by 2^qm, and
 * one vscalefps per key group at the end. Where a sum is subnormal it is
 * exact on both sides (every term is a multiple of 2^-133, or of its
 * scaled image), so the factor still comes out exactly.
 *
 * Schedule. Four heads x three key groups (16 keys each) at a time: twelve
 * int32 accumulators, each loaded key vector serving four heads and each
 * broadcast query dword three groups. The per-(head, group) tail (ReLU,
 * two bf16 roundings, multiply, add) of one head quad is issued in four
 * slices between the next quad's vpdpbusd: issued after the quad, its ~170
 * dependent operations filled the scheduler and stalled the integer dots
 * (Zen 5, one core: 635 -> 770 GOP/s, 59% -> 72% of the vpdpbusd peak).
 * Intel cores take the tail two groups at a time in bf16 instructions
 * instead (score_pass_pairs, below). */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "round_bf16.h"

void index_scores_fp4_avx512vnni(float *scores, const int8_t *q_codes, const float *q_scale,
                                 const float *w, const uint8_t *keys, const uint8_t *key_scale,
                                 int n_keys, int n_heads, int dim);
void index_scores_fp4_blockwise(float *scores, const int8_t *q_codes, const float *q_scale, const float *w,
                                const uint8_t *keys, const uint8_t *key_scale, int n_keys, int n_heads,
                                int dim); /* avx512_vnni.c */

#define MAX_B (INDEX_FP4_MAX_DIM / 32)
#define MAX_C (INDEX_FP4_MAX_DIM / 4)
#define HEADS 4
#define GROUPS 3
#define MAX_SHIFT 3
#define QUERY_OFFSET 96 /* 12 << MAX_SHIFT: q' + 96 is in [0, 192] */
/* |idot'| < 2^IDOT_BITS: 32 * 12 * 12 * 2^(2 * MAX_SHIFT) per block, 8 blocks at most */
#define IDOT_BITS 22
/* and a sum over up to 128 heads of products below 2^(IDOT_BITS + 1 + log2 w) */
#define SUM_BITS (IDOT_BITS + 1 + 7)

/* The query, shifted once per call: codes + 96 as unsigned bytes, each
 * head's least block exponent and its weight times 2^qm. */
typedef struct {
    uint8_t codes[INDEX_FP4_MAX_HEADS * INDEX_FP4_MAX_DIM] __attribute__((aligned(64)));
    float wq[INDEX_FP4_MAX_HEADS];
    int qlo, qhi; /* least and greatest qm */
    int wlo, whi; /* least and greatest exponent of a nonzero w */
    int pairs;    /* take the tail two groups at a time (Intel cores with AVX512-BF16) */
} query;

/* The exponent of a power of two (normal), else INT_MIN-ish. */
static int exact_pow2(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    int e = (int)((u >> 23) & 0xff);
    return (u & 0x807fffffu) == 0 && e > 0 && e < 255 ? e - 127 : -100000;
}

/* Whether the call's query and weights fit the shifted path; fills Q. */
static int query_prepare(query *Q, const int8_t *q_codes, const float *q_scale, const float *w, int n_heads,
                         int nb)
{
    const int dim = 32 * nb;
    Q->qlo = Q->wlo = 1000;
    Q->qhi = Q->whi = -1000;
    for (int h = 0; h < n_heads; h++) {
        int e[MAX_B], qm = 1000, qx = -1000;
        for (int b = 0; b < nb; b++) {
            e[b] = exact_pow2(q_scale[h * nb + b]);
            qm = e[b] < qm ? e[b] : qm;
            qx = e[b] > qx ? e[b] : qx;
        }
        if (qm < -126 || qx - qm > MAX_SHIFT)
            return 0;
        uint32_t wu;
        memcpy(&wu, &w[h], sizeof wu);
        int we = (int)((wu >> 23) & 0xff);
        if (we == 255 || (we == 0 && (wu & 0x7fffffu)))
            return 0; /* infinite, NaN or subnormal weights: the block-wise kernel */
        if (we) {
            Q->wlo = we - 127 < Q->wlo ? we - 127 : Q->wlo;
            Q->whi = we - 127 > Q->whi ? we - 127 : Q->whi;
        }
        Q->qlo = qm < Q->qlo ? qm : Q->qlo;
        Q->qhi = qm > Q->qhi ? qm : Q->qhi;
        /* w * 2^qm; exact once the range check below passes (else unused) */
        Q->wq[h] = _mm_cvtss_f32(_mm_scalef_ss(_mm_set_ss(w[h]), _mm_set_ss((float)qm)));
        for (int b = 0; b < nb; b++) {
            /* shift bytes by 16-bit words, then clear the bits each byte took from its neighbour */
            __m256i v = _mm256_loadu_si256((const __m256i *)(q_codes + (size_t)h * dim + 32 * b));
            int d = e[b] - qm;
            v = _mm256_and_si256(_mm256_sll_epi16(v, _mm_cvtsi32_si128(d)), _mm256_set1_epi8((char)(0xff << d)));
            v = _mm256_add_epi8(v, _mm256_set1_epi8(QUERY_OFFSET));
            _mm256_store_si256((__m256i *)(Q->codes + (size_t)h * dim + 32 * b), v);
        }
    }
    if (Q->wlo == 1000)
        Q->wlo = Q->whi = 0; /* every weight zero */
    /* w * 2^qm normal (or zero), and the unscaled head sums finite */
    if (Q->wlo + Q->qlo < -126 || Q->whi + Q->qhi + SUM_BITS > 127)
        return 0;
    return 1;
}

/* One group of 16 keys, shifted: kc[c] holds columns 4c..4c+3 as signed
 * bytes (2*e2m1) << dk, init the lanes' -96 * (sum of those), kexp their
 * km - 129 as floats. */
typedef struct {
    __m512i kc[MAX_C];
    __m512i init;
    __m512 kexp;
} key_group;

/* Decodes a group; returns whether its live lanes fit the shifted path,
 * with their least and greatest km widening *klo, *khi. */
static inline __attribute__((always_inline)) int decode_group(key_group *G, const uint8_t *kg, const uint8_t *sg,
                                                               int nb, __mmask16 live, int *klo, int *khi)
{
    __m512i e[MAX_B], km = _mm512_set1_epi32(255), kx = _mm512_setzero_si512();
    #pragma GCC unroll 8
    for (int b = 0; b < MAX_B; b++)
        e[b] = _mm512_setzero_si512(); /* (nb <= MAX_B: only for the compiler) */
    #pragma GCC unroll 8
    for (int b = 0; b < nb; b++) {
        e[b] = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(sg + 16 * b)));
        km = _mm512_min_epu32(km, e[b]);
        kx = _mm512_max_epu32(kx, e[b]);
    }
    __mmask16 bad = _mm512_mask_cmpgt_epu32_mask(live, _mm512_sub_epi32(kx, km), _mm512_set1_epi32(MAX_SHIFT)) |
                    _mm512_mask_cmpeq_epu32_mask(live, km, _mm512_setzero_si512()) |
                    _mm512_mask_cmpgt_epu32_mask(live, kx, _mm512_set1_epi32(254));
    if (bad)
        return 0;
    int lo = (int)_mm512_mask_reduce_min_epu32(live, km), hi = (int)_mm512_mask_reduce_max_epu32(live, km);
    *klo = lo < *klo ? lo : *klo;
    *khi = hi > *khi ? hi : *khi;
    G->kexp = _mm512_cvtepi32_ps(_mm512_sub_epi32(km, _mm512_set1_epi32(129)));

    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12));
    /* per lane, the byte mask that clears what a shift by 0..3 carries in from the byte below */
    const __m512i carry = _mm512_setr_epi32(-1, (int)0xfefefefeu, (int)0xfcfcfcfcu, (int)0xf8f8f8f8u, 0, 0, 0, 0,
                                            0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i nib = _mm512_set1_epi8(0x0f), off = _mm512_set1_epi8(QUERY_OFFSET);
    __m512i sum = _mm512_setzero_si512();
    #pragma GCC unroll 8
    for (int b = 0; b < nb; b++) {
        __m512i sh = _mm512_sub_epi32(e[b], km), keep = _mm512_permutexvar_epi32(sh, carry);
        #pragma GCC unroll 4
        for (int jj = 0; jj < 4; jj++) {
            int j = 4 * b + jj;
            __m512i v = _mm512_loadu_si512(kg + 64 * j);
            __m512i lo4 = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, nib));
            __m512i hi4 = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), nib));
            lo4 = _mm512_and_si512(_mm512_sllv_epi32(lo4, sh), keep);
            hi4 = _mm512_and_si512(_mm512_sllv_epi32(hi4, sh), keep);
            G->kc[2 * j] = lo4;
            G->kc[2 * j + 1] = hi4;
            sum = _mm512_dpbusd_epi32(sum, off, lo4);
            sum = _mm512_dpbusd_epi32(sum, off, hi4);
        }
    }
    G->init = _mm512_sub_epi32(_mm512_setzero_si512(), sum);
    return 1;
}

/* One head's tail for ng groups: acc += bf16(bf16(max(idot', 0)) * wq). */
static inline __attribute__((always_inline)) void head_tail(int ng, __m512 *acc, const __m512i *dots, float wq)
{
    __m512 wv = _mm512_set1_ps(wq);
    #pragma GCC unroll 4
    for (int g = 0; g < ng; g++) {
        __m512 r = round_bf16_f32x16(_mm512_cvtepi32_ps(_mm512_max_epi32(dots[g], _mm512_setzero_si512())));
        acc[g] = _mm512_add_ps(acc[g], round_bf16_f32x16(_mm512_mul_ps(r, wv)));
    }
}

/* ng decoded groups against every head, heads in ascending order; the
 * scores of keys s0 .. s0 + 16*ng - 1 (those below n_keys) are stored. */
static inline __attribute__((always_inline)) void score_pass(int ng, int nb, float *scores, const query *Q,
                                                              int n_heads, const key_group *G, int n_keys, int s0)
{
    const int dim = 32 * nb, nc = 8 * nb, slot = nc / HEADS;
    __m512 acc[GROUPS];
    __m512i prev[HEADS][GROUPS];
    #pragma GCC unroll 4
    for (int g = 0; g < ng; g++)
        acc[g] = _mm512_setzero_ps();
    int h = 0, pending = -1;
    for (; h + HEADS <= n_heads; h += HEADS) {
        /* opaque, so that the key vectors are loaded here, next to their
         * use, rather than hoisted out of the head loop and spilled */
        const key_group *Gp = G;
        __asm__("" : "+r"(Gp));
        __m512i ia[HEADS][GROUPS];
        #pragma GCC unroll 4
        for (int j = 0; j < HEADS; j++)
            #pragma GCC unroll 4
            for (int g = 0; g < ng; g++)
                ia[j][g] = Gp[g].init;
        const uint8_t *qh = Q->codes + (size_t)h * dim;
        #pragma GCC unroll 64
        for (int c = 0; c < nc; c++) {
            if (pending >= 0 && c % slot == slot / 2)
                head_tail(ng, acc, prev[c / slot], Q->wq[pending + c / slot]);
            __m512i kv[GROUPS];
            #pragma GCC unroll 4
            for (int g = 0; g < ng; g++)
                kv[g] = _mm512_load_si512(&Gp[g].kc[c]);
            #pragma GCC unroll 4
            for (int j = 0; j < HEADS; j++) {
                __m512i qv = _mm512_broadcastd_epi32(_mm_loadu_si32(qh + (size_t)j * dim + 4 * c));
                #pragma GCC unroll 4
                for (int g = 0; g < ng; g++)
                    ia[j][g] = _mm512_dpbusd_epi32(ia[j][g], qv, kv[g]);
            }
        }
        #pragma GCC unroll 4
        for (int j = 0; j < HEADS; j++)
            #pragma GCC unroll 4
            for (int g = 0; g < ng; g++)
                prev[j][g] = ia[j][g];
        pending = h;
    }
    if (pending >= 0)
        for (int j = 0; j < HEADS; j++)
            head_tail(ng, acc, prev[j], Q->wq[pending + j]);
    for (; h < n_heads; h++) {
        __m512i ia[GROUPS];
        #pragma GCC unroll 4
        for (int g = 0; g < ng; g++)
            ia[g] = G[g].init;
        const uint8_t *qh = Q->codes + (size_t)h * dim;
        for (int c = 0; c < nc; c++) {
            __m512i qv = _mm512_broadcastd_epi32(_mm_loadu_si32(qh + 4 * c));
            #pragma GCC unroll 4
            for (int g = 0; g < ng; g++)
                ia[g] = _mm512_dpbusd_epi32(ia[g], qv, G[g].kc[c]);
        }
        head_tail(ng, acc, ia, Q->wq[h]);
    }
    #pragma GCC unroll 4
    for (int g = 0; g < ng; g++) {
        __m512 v = _mm512_scalef_ps(round_bf16_f32x16(acc[g]), G[g].kexp);
        int left = n_keys - (s0 + 16 * g);
        if (left >= INDEX_FP4_GROUP)
            _mm512_storeu_ps(scores + s0 + 16 * g, v);
        else
            _mm512_mask_storeu_ps(scores + s0 + 16 * g, (__mmask16)((1u << left) - 1), v);
    }
}

/* ---- Intel cores: the tail two groups at a time in bf16 instructions ----
 *
 * On Sapphire Rapids the tail's integer operations share ports 0 and 5 with
 * vpdpbusd (without the tail a core ran 31% faster), and slicing it between
 * the dots gained nothing there. vcvtne2ps2bf16 rounds two vectors to bf16
 * in one instruction, exactly as round_bf16_f32x16 does for the normal
 * values the shortcut has (it flushes subnormal inputs, which the range
 * checks exclude); vpunpck{l,h}wd against zero widens them back, which permutes
 * the lanes: the same way for every head, so the sums are taken in lanes
 * [g 0-3 | g+1 0-3 | g 4-7 | g+1 4-7] and [g 8-11 | g+1 8-11 | g 12-15 |
 * g+1 12-15] and sorted once per pass. 14 operations per two groups
 * instead of 28. Four heads x four groups per pass, no slicing. Sapphire
 * Rapids, 16 threads, bench-kernels --only index: 256K keys 3075 -> 3416
 * and 4357 GOP/s (two runs), 64K keys unchanged (3363 -> 3290, 3375); on
 * Zen 5 the sliced integer tail stays ahead (forced on: 66-74% against
 * 83% of the peak), so AMD keeps it. */
#define PAIR_GROUPS 4

__attribute__((target("avx512bf16"))) static inline void pair_tail(__m512 *acc_a, __m512 *acc_b, __m512i d0,
                                                                    __m512i d1, __m512 wv)
{
    const __m512i zero = _mm512_setzero_si512();
    __m512 x0 = _mm512_cvtepi32_ps(_mm512_max_epi32(d0, zero)), x1 = _mm512_cvtepi32_ps(_mm512_max_epi32(d1, zero));
    __m512i r = (__m512i)_mm512_cvtne2ps_pbh(x1, x0); /* words 0-15 from x0, 16-31 from x1 */
    __m512 lo = _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, r));
    __m512 hi = _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, r));
    __m512i p = (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(hi, wv), _mm512_mul_ps(lo, wv));
    *acc_a = _mm512_add_ps(*acc_a, _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, p)));
    *acc_b = _mm512_add_ps(*acc_b, _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, p)));
}

__attribute__((target("avx512bf16"))) static inline __attribute__((always_inline)) void
score_pass_pairs_nb(int nb, float *scores, const query *Q, int n_heads, const key_group *G, int s0)
{
    const int dim = 32 * nb, nc = 8 * nb;
    __m512 acc[PAIR_GROUPS];
    for (int g = 0; g < PAIR_GROUPS; g++)
        acc[g] = _mm512_setzero_ps();
    for (int h = 0; h < n_heads; h += HEADS) {
        int nh = n_heads - h < HEADS ? n_heads - h : HEADS;
        const key_group *Gp = G;
        __asm__("" : "+r"(Gp));
        __m512i ia[HEADS][PAIR_GROUPS];
        #pragma GCC unroll 4
        for (int j = 0; j < HEADS; j++)
            #pragma GCC unroll 4
            for (int g = 0; g < PAIR_GROUPS; g++)
                ia[j][g] = Gp[g].init;
        const uint8_t *qh = Q->codes + (size_t)h * dim;
        #pragma GCC unroll 64
        for (int c = 0; c < nc; c++) {
            __m512i kv[PAIR_GROUPS];
            #pragma GCC unroll 4
            for (int g = 0; g < PAIR_GROUPS; g++)
                kv[g] = _mm512_load_si512(&Gp[g].kc[c]);
            #pragma GCC unroll 4
            for (int j = 0; j < HEADS; j++) {
                /* past the last head, head h again (those sums are dropped) */
                __m512i qv = _mm512_broadcastd_epi32(_mm_loadu_si32(qh + (size_t)(j < nh ? j : 0) * dim + 4 * c));
                #pragma GCC unroll 4
                for (int g = 0; g < PAIR_GROUPS; g++)
                    ia[j][g] = _mm512_dpbusd_epi32(ia[j][g], qv, kv[g]);
            }
        }
        for (int j = 0; j < nh; j++) {
            __m512 wv = _mm512_set1_ps(Q->wq[h + j]);
            pair_tail(&acc[0], &acc[1], ia[j][0], ia[j][1], wv);
            pair_tail(&acc[2], &acc[3], ia[j][2], ia[j][3], wv);
        }
    }
    const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    const __m512i second = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    for (int g = 0; g < PAIR_GROUPS; g += 2) {
        __m512 a = _mm512_permutex2var_ps(acc[g], first, acc[g + 1]);
        __m512 b = _mm512_permutex2var_ps(acc[g], second, acc[g + 1]);
        _mm512_storeu_ps(scores + s0 + 16 * g, _mm512_scalef_ps(round_bf16_f32x16(a), G[g].kexp));
        _mm512_storeu_ps(scores + s0 + 16 * (g + 1), _mm512_scalef_ps(round_bf16_f32x16(b), G[g + 1].kexp));
    }
}

/* Four whole groups (keys s0 .. s0 + 63, all below n_keys). */
__attribute__((target("avx512bf16"), noinline)) static void score_pass_pairs(int nb, float *scores, const query *Q,
                                                                            int n_heads, const key_group *G,
                                                                            int s0)
{
    if (nb == 4)
        score_pass_pairs_nb(4, scores, Q, n_heads, G, s0);
    else
        score_pass_pairs_nb(nb, scores, Q, n_heads, G, s0);
}

/* Whether every exponent of this pass keeps the rewrite exact: block
 * scales q_scale * ks normal, dots finite with room, products with the
 * weights normal (or zero) and their sums finite. */
static int pass_in_range(const query *Q, int klo, int khi)
{
    int e0lo = Q->qlo + klo - 129, e0hi = Q->qhi + khi - 129;
    return e0lo >= -126 && e0hi + IDOT_BITS <= 127 && e0lo + Q->wlo >= -126 && e0hi + Q->whi + SUM_BITS <= 127;
}

static inline __attribute__((always_inline)) void score_all(int nb, float *scores, const query *Q,
                                                             const int8_t *q_codes, const float *q_scale,
                                                             const float *w, const uint8_t *keys,
                                                             const uint8_t *key_scale, int n_keys, int n_heads)
{
    const int dim = 32 * nb;
    const size_t kbytes = INDEX_FP4_GROUP_BYTES(dim), sbytes = INDEX_FP4_GROUP_SCALES(dim);
    int n_groups = (n_keys + INDEX_FP4_GROUP - 1) / INDEX_FP4_GROUP;
    key_group G[PAIR_GROUPS];
    for (int g0 = 0; g0 < n_groups;) {
        int pairs = Q->pairs && 16 * (g0 + PAIR_GROUPS) <= n_keys;
        int ng = pairs ? PAIR_GROUPS : n_groups - g0 >= GROUPS ? GROUPS : 1, ok = 1, klo = 1000, khi = -1000;
        for (int g = 0; g < ng && ok; g++) {
            int left = n_keys - 16 * (g0 + g);
            __mmask16 live = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
            ok = decode_group(&G[g], keys + (size_t)(g0 + g) * kbytes, key_scale + (size_t)(g0 + g) * sbytes, nb,
                              live, &klo, &khi);
        }
        if (ok && pass_in_range(Q, klo, khi)) {
            if (pairs)
                score_pass_pairs(nb, scores, Q, n_heads, G, 16 * g0);
            else if (ng == GROUPS)
                score_pass(GROUPS, nb, scores, Q, n_heads, G, n_keys, 16 * g0);
            else
                score_pass(1, nb, scores, Q, n_heads, G, n_keys, 16 * g0);
        } else {
            int s0 = 16 * g0, cnt = n_keys - s0 < 16 * ng ? n_keys - s0 : 16 * ng;
            index_scores_fp4_blockwise(scores + s0, q_codes, q_scale, w, keys + (size_t)g0 * kbytes,
                                       key_scale + (size_t)g0 * sbytes, cnt, n_heads, dim);
        }
        g0 += ng;
    }
}

/* Fixed per CPU model, like dispatch.c's choices (both ways give the same
 * bits). Building with -DDSV4_INDEX_PAIRS=0 or 1 forces the choice where
 * the CPU has AVX512-BF16 (to test and measure both on one machine). */
static int pairs_wanted(void)
{
    static int state = -1;
    if (state < 0) {
        __builtin_cpu_init();
        int bf16 = __builtin_cpu_supports("avx512bf16");
#ifdef DSV4_INDEX_PAIRS
        state = bf16 && DSV4_INDEX_PAIRS;
#else
        state = bf16 && __builtin_cpu_is("intel");
#endif
    }
    return state;
}

void index_scores_fp4_avx512vnni(float *scores, const int8_t *q_codes, const float *q_scale,
                                 const float *w, const uint8_t *keys, const uint8_t *key_scale,
                                 int n_keys, int n_heads, int dim)
{
    int nb = dim / 32;
    query Q;
    Q.pairs = pairs_wanted();
    if (n_keys <= 0 || !query_prepare(&Q, q_codes, q_scale, w, n_heads, nb)) {
        index_scores_fp4_blockwise(scores, q_codes, q_scale, w, keys, key_scale, n_keys, n_heads, dim);
        return;
    }
    /* the block count as a constant for the shape in use, so the loops unroll */
    if (nb == 4)
        score_all(4, scores, &Q, q_codes, q_scale, w, keys, key_scale, n_keys, n_heads);
    else
        score_all(nb, scores, &Q, q_codes, q_scale, w, keys, key_scale, n_keys, n_heads);
}
