/* attend_bf16 with vdpbf16ps: attention of one query over bf16 key=value
 * rows in release numerics (kernels.h), for CPUs whose bf16 dot product runs
 * at the fp32 FMA rate (AMD Zen 4/5: twice the products per instruction).
 *
 * Every product is exact in fp32 (q, the rows and the rounded probabilities
 * are bf16 numbers), so only the order of the sums differs from the scalar
 * reference. The structure is attend_impl.h's: AT_HG heads per group, each
 * loaded row serving all of them (8 rather than 4: long row lists come
 * from L3 once per group; two Zen 5 cores, 64 heads over 4224 rows 251 ->
 * 292 GFLOP/s, 640 rows the same); scores of up to AT_ZCH rows kept on the
 * stack (past that, recomputed chunk by chunk with the same code); one
 * global max; the denominator over the unrounded weights plus exp(sink - max).
 *   - Scores: per row, the dim columns 32 at a time, one vdpbf16ps per head
 *     against the head's q converted to bf16 once per group.
 *   - Weighted sum: rows two at a time. vpunpck{l,h}wd of the two rows' bf16
 *     vectors pair their values column by column, and each head's two
 *     probabilities, broadcast as one 32-bit pair, multiply them in one
 *     vdpbf16ps: the unpacks' column order (within each 128-bit lane,
 *     columns 8L + 0..3 from the low unpack, 8L + 4..7 from the high one)
 *     is undone once per slice of output columns at the end. */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "exp512.h"
#include "fold16.h"
#include "kernels.h"
#include "round_bf16.h"

void attend_bf16_avx512bf16(float *out, const float *q, int dim, const uint16_t *const *kv, int n_kv,
                            const float *sink, float scale, int h0, int h1);

#define AT_HG 8          /* heads per group */
#define AT_ZCH 2048      /* rows whose scores are kept */
#define AT_MAXV 32       /* q vectors a head may have: dim up to 1024 */
#define AT_PV 1          /* 32-column vectors per weighted-sum slice */

static inline __m512 dp(__m512 acc, __m512i a, __m512i b)
{
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

/* The first min(left, 32) bf16 values at p, zeros after. */
static inline __m512i load_bf16(const uint16_t *p, int left)
{
    if (left >= 32)
        return _mm512_loadu_si512(p);
    return _mm512_maskz_loadu_epi16(left <= 0 ? 0 : (__mmask32)(((uint64_t)1 << left) - 1), p);
}

static inline __mmask16 lanes(int left)
{
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
}

/* z[h][j] = scale * q_h . kv[j], two rows at a time against NH heads;
 * qb[h][v]: head h's columns 32v..32v+31 as bf16. */
static inline __attribute__((always_inline)) void at_scores(int NH, const __m512i qb[AT_HG][AT_MAXV], int dim,
                                                            const uint16_t *const *kv, int nj, float scale,
                                                            float z[AT_HG][AT_ZCH], float *m)
{
    int nv = (dim + 31) / 32;
    for (int j = 0; j < nj; j += 2) {
        int two = j + 1 < nj;
        const uint16_t *k0 = kv[j], *k1 = kv[two ? j + 1 : j];
        __m512 a0[AT_HG], a1[AT_HG];
        #pragma GCC unroll 8
        for (int h = 0; h < NH; h++)
            a0[h] = a1[h] = _mm512_setzero_ps();
        for (int v = 0; v < nv; v++) {
            __m512i r0 = load_bf16(k0 + 32 * v, dim - 32 * v), r1 = load_bf16(k1 + 32 * v, dim - 32 * v);
            #pragma GCC unroll 8
            for (int h = 0; h < NH; h++) {
                a0[h] = dp(a0[h], qb[h][v], r0);
                a1[h] = dp(a1[h], qb[h][v], r1);
            }
        }
        #pragma GCC unroll 8
        for (int h = 0; h < NH; h++) {
            z[h][j] = fold16(a0[h]) * scale;
            m[h] = fmaxf(m[h], z[h][j]);
            if (two) {
                z[h][j + 1] = fold16(a1[h]) * scale;
                m[h] = fmaxf(m[h], z[h][j + 1]);
            }
        }
    }
}

/* Column indices that undo the unpacks' order: natural columns 16s..16s+15
 * of a 32-column vector from its low (lanes 0-15) and high (16-31) unpack
 * accumulators. */
static const int32_t unpack_order[2][16] __attribute__((aligned(64))) = {
    {0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23},
    {8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31}};

/* o_h += sum_j p[h][j] kv[j] over columns [c0, c0 + 32 * AT_PV) (those below
 * dim), rows ascending in pairs; pp[h][j/2] holds the bf16 pair (p_j, p_j+1). */
static inline __attribute__((always_inline)) void at_pv_slice(int NH, float *o, int dim, const uint16_t *const *kv,
                                                              int nj, const uint32_t pp[AT_HG][AT_ZCH / 2], int c0)
{
    __m512 lo[AT_HG][AT_PV], hi[AT_HG][AT_PV];
    #pragma GCC unroll 8
    for (int h = 0; h < NH; h++)
        #pragma GCC unroll 2
        for (int v = 0; v < AT_PV; v++)
            lo[h][v] = hi[h][v] = _mm512_setzero_ps();
    for (int j = 0; j < nj; j += 2) {
        __m512i ul[AT_PV], uh[AT_PV];
        #pragma GCC unroll 2
        for (int v = 0; v < AT_PV; v++) {
            int left = dim - c0 - 32 * v;
            __m512i a = load_bf16(kv[j] + c0 + 32 * v, left);
            /* an odd count's last row pairs with zeros (its partner's weight is +0 too) */
            __m512i b = j + 1 < nj ? load_bf16(kv[j + 1] + c0 + 32 * v, left) : _mm512_setzero_si512();
            ul[v] = _mm512_unpacklo_epi16(a, b);
            uh[v] = _mm512_unpackhi_epi16(a, b);
        }
        #pragma GCC unroll 8
        for (int h = 0; h < NH; h++) {
            __m512i p = _mm512_set1_epi32((int)pp[h][j / 2]);
            #pragma GCC unroll 2
            for (int v = 0; v < AT_PV; v++) {
                lo[h][v] = dp(lo[h][v], p, ul[v]);
                hi[h][v] = dp(hi[h][v], p, uh[v]);
            }
        }
    }
    const __m512i first = _mm512_load_si512(unpack_order[0]), second = _mm512_load_si512(unpack_order[1]);
    #pragma GCC unroll 8
    for (int h = 0; h < NH; h++)
        #pragma GCC unroll 2
        for (int v = 0; v < AT_PV; v++) {
            float *oh = o + (size_t)h * dim + c0 + 32 * v;
            int left = dim - c0 - 32 * v;
            __m512 n0 = _mm512_permutex2var_ps(lo[h][v], first, hi[h][v]);
            __m512 n1 = _mm512_permutex2var_ps(lo[h][v], second, hi[h][v]);
            _mm512_mask_storeu_ps(oh, lanes(left), _mm512_add_ps(_mm512_maskz_loadu_ps(lanes(left), oh), n0));
            _mm512_mask_storeu_ps(oh + 16, lanes(left - 16),
                                  _mm512_add_ps(_mm512_maskz_loadu_ps(lanes(left - 16), oh + 16), n1));
        }
}

static inline __attribute__((always_inline)) void at_group(int NH, float *out, const float *q, int dim,
                                                           const uint16_t *const *kv, int n_kv, const float *sink,
                                                           float scale)
{
    __m512i qb[AT_HG][AT_MAXV];
    float z[AT_HG][AT_ZCH];
    uint32_t pp[AT_HG][AT_ZCH / 2];
    float m[AT_HG];
    __m512 den[AT_HG];
    int nv = (dim + 31) / 32;
    for (int h = 0; h < NH; h++) {
        m[h] = -INFINITY;
        den[h] = _mm512_setzero_ps();
        memset(out + (size_t)h * dim, 0, (size_t)dim * sizeof *out);
        const float *qh = q + (size_t)h * dim;
        for (int v = 0; v < nv; v++) {
            int left = dim - 32 * v;
            __m512 f0 = _mm512_maskz_loadu_ps(lanes(left), qh + 32 * v);
            __m512 f1 = _mm512_maskz_loadu_ps(lanes(left - 16), qh + 32 * v + 16);
            qb[h][v] = (__m512i)_mm512_cvtne2ps_pbh(f1, f0);
        }
    }
    if (n_kv <= 0)
        return;
    for (int j0 = 0; j0 < n_kv; j0 += AT_ZCH)
        at_scores(NH, qb, dim, kv + j0, n_kv - j0 < AT_ZCH ? n_kv - j0 : AT_ZCH, scale, z, m);
    for (int j0 = 0; j0 < n_kv; j0 += AT_ZCH) {
        int nj = n_kv - j0 < AT_ZCH ? n_kv - j0 : AT_ZCH;
        if (n_kv > AT_ZCH) {
            float unused[AT_HG];
            for (int h = 0; h < AT_HG; h++)
                unused[h] = -INFINITY;
            at_scores(NH, qb, dim, kv + j0, nj, scale, z, unused);
        }
        for (int h = 0; h < NH; h++) {
            __m512 mh = _mm512_set1_ps(m[h]);
            for (int j = 0; j < nj; j += 16) {
                __mmask16 k = lanes(nj - j);
                __m512 e = _mm512_maskz_mov_ps(k, exp512_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, z[h] + j), mh)));
                den[h] = _mm512_add_ps(den[h], e);
                /* the rounded weights' bf16 bits, paired (j, j + 1) into 32-bit words */
                __m256i b = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(round_bf16_f32x16(e)), 16));
                _mm256_mask_storeu_epi16((uint16_t *)pp[h] + j, (__mmask16)k, b);
            }
            if (nj % 2)
                ((uint16_t *)pp[h])[nj] = 0;
        }
        for (int c0 = 0; c0 < dim; c0 += 32 * AT_PV)
            at_pv_slice(NH, out, dim, kv + j0, nj, pp, c0);
    }
    for (int h = 0; h < NH; h++) {
        __m512 d = _mm512_set1_ps(fold16(den[h]) + expf(sink[h] - m[h]));
        float *o = out + (size_t)h * dim;
        for (int i = 0; i < dim; i += 16)
            _mm512_mask_storeu_ps(o + i, lanes(dim - i), _mm512_div_ps(_mm512_maskz_loadu_ps(lanes(dim - i), o + i), d));
    }
}

void attend_bf16_avx512bf16(float *out, const float *q, int dim, const uint16_t *const *kv, int n_kv,
                            const float *sink, float scale, int h0, int h1)
{
    if (dim > 32 * AT_MAXV) { /* longer than any V4 head: the reference */
        kernels_scalar()->attend_bf16(out, q, dim, kv, n_kv, sink, scale, h0, h1);
        return;
    }
    for (int hg = h0; hg < h1; hg += AT_HG) {
        float *o = out + (size_t)hg * dim;
        const float *qg = q + (size_t)hg * dim;
        switch (h1 - hg < AT_HG ? h1 - hg : AT_HG) {
        case 1: at_group(1, o, qg, dim, kv, n_kv, sink + hg, scale); break;
        case 2: at_group(2, o, qg, dim, kv, n_kv, sink + hg, scale); break;
        case 3: at_group(3, o, qg, dim, kv, n_kv, sink + hg, scale); break;
        case 4: at_group(4, o, qg, dim, kv, n_kv, sink + hg, scale); break;
        case 5: at_group(5, o, qg, dim, kv, n_kv, sink + hg, scale); break;
        case 6: at_group(6, o, qg, dim, kv, n_kv, sink + hg, scale); break;
        case 7: at_group(7, o, qg, dim, kv, n_kv, sink + hg, scale); break;
        default: at_group(8, o, qg, dim, kv, n_kv, sink + hg, scale); break;
        }
    }
}
