/* Attention of one query over gathered rows, written once for every x86
 * vector width. The including file defines VLEN, the type vec and these
 * primitives (all static inline), then includes this file and gets
 * attend_vec():
 *   vec vzero(void), vset1(float), vadd(vec, vec), vsub(vec, vec), vdiv(vec, vec),
 *   vfma(a, b, c) = a*b + c, vload_n(p, left) / vstore_n(p, v, left): the first
 *   min(left, VLEN) lanes (none when left <= 0; loads zero the rest),
 *   vkeep_n(v, left): lanes >= left set to zero, float vsum(vec),
 *   vexp(vec): expf within ~2 ulp (inf above the range, 0 below, exp(0) = 1),
 *   vround_bf16(vec): round to nearest even bf16, kept as f32.
 * The key=value rows are float unless the includer defines AT_ROW (their
 * element type), AT_ROW_AT(row, i, left) (the vector of columns [i, i + VLEN)
 * of a row as f32, as vload_n does for float rows; i is a multiple of VLEN
 * and the functions' dim and tail, the row's shape, are in scope) and
 * AT_FN(name) (the names this instance's functions take, so one file may hold
 * several). at_attend takes rows of any kind; the float instance also defines
 * attend_vec, with the kernel table's attend signature.
 *
 * Semantics are attend_scalar's (scalar.c): a global max over the scores
 * (the sink outside it), the denominator over the unrounded weights plus
 * exp(sink - max), the weighted sum over bf16-rounded weights when asked.
 * Each score is computed once: a group of AT_HG heads keeps the scores of
 * AT_ZCH rows on the stack; past that many rows the second pass recomputes
 * them chunk by chunk with the same code (so the same bits). Loops are
 * tiled so each row loaded serves AT_HG heads. Sums run in another order
 * than the scalar reference's: results agree within rounding (tested). */

#include "fminmax.h"

#ifndef AT_ROW
#define AT_ROW float
#define AT_ROW_AT(row, i, left) vload_n((row) + (i), left)
#define AT_FN(name) name
#define AT_FLOAT_ROWS
#endif

/* heads per group (at most 8) and output vectors per weighted-sum tile: an
 * includer may choose others (AT_HG * AT_PV accumulators must fit its
 * registers) */
#ifndef AT_HG
#define AT_HG 4
#endif
#ifndef AT_PV
#define AT_PV 4
#endif
#define AT_ZCH 1024 /* rows whose scores are kept */

/* z[h][j] = scale * q_h . kv[j], two rows at a time against NH heads. */
static inline __attribute__((always_inline)) void AT_FN(at_scores)(int NH, const float *q, int dim, int tail,
                                                            const AT_ROW *const *kv, int nj,
                                                            float scale, float z[AT_HG][AT_ZCH],
                                                            float *m)
{
    (void)tail; /* for AT_ROW_AT */
    int j = 0;
    for (; j < nj; j += 2) {
        int two = j + 1 < nj;
        const AT_ROW *k0 = kv[j], *k1 = kv[two ? j + 1 : j];
        vec a0[AT_HG], a1[AT_HG];
        #pragma GCC unroll 8
        for (int h = 0; h < NH; h++)
            a0[h] = a1[h] = vzero();
        int i = 0;
        for (; i + VLEN <= dim; i += VLEN) {
            vec r0 = AT_ROW_AT(k0, i, VLEN), r1 = AT_ROW_AT(k1, i, VLEN);
            #pragma GCC unroll 8
            for (int h = 0; h < NH; h++) {
                vec qh = vload_n(q + (size_t)h * dim + i, VLEN);
                a0[h] = vfma(qh, r0, a0[h]);
                a1[h] = vfma(qh, r1, a1[h]);
            }
        }
        if (i < dim) {
            vec r0 = AT_ROW_AT(k0, i, dim - i), r1 = AT_ROW_AT(k1, i, dim - i);
            #pragma GCC unroll 8
            for (int h = 0; h < NH; h++) {
                vec qh = vload_n(q + (size_t)h * dim + i, dim - i);
                a0[h] = vfma(qh, r0, a0[h]);
                a1[h] = vfma(qh, r1, a1[h]);
            }
        }
        #pragma GCC unroll 8
        for (int h = 0; h < NH; h++) {
            z[h][j] = vsum(a0[h]) * scale;
            m[h] = max_f32(m[h], z[h][j]);
            if (two) {
                z[h][j + 1] = vsum(a1[h]) * scale;
                m[h] = max_f32(m[h], z[h][j + 1]);
            }
        }
    }
}

/* o_h += sum_j p[h][j] kv[j] over output columns [i, i + width), rows ascending. */
static inline __attribute__((always_inline)) void AT_FN(at_pv_slice)(int NH, int width, float *o, int dim, int tail,
                                                              const AT_ROW *const *kv, int nj,
                                                              float p[AT_HG][AT_ZCH], int i)
{
    (void)tail; /* for AT_ROW_AT */
    vec acc[AT_HG][AT_PV];
    #pragma GCC unroll 8
    for (int h = 0; h < NH; h++)
        #pragma GCC unroll 4
        for (int v = 0; v < AT_PV; v++)
            acc[h][v] = vload_n(o + (size_t)h * dim + i + v * VLEN, width - v * VLEN);
    for (int j = 0; j < nj; j++) {
        vec r[AT_PV];
        #pragma GCC unroll 4
        for (int v = 0; v < AT_PV; v++)
            r[v] = AT_ROW_AT(kv[j], i + v * VLEN, width - v * VLEN);
        #pragma GCC unroll 8
        for (int h = 0; h < NH; h++) {
            vec ph = vset1(p[h][j]);
            #pragma GCC unroll 4
            for (int v = 0; v < AT_PV; v++)
                acc[h][v] = vfma(ph, r[v], acc[h][v]);
        }
    }
    #pragma GCC unroll 8
    for (int h = 0; h < NH; h++)
        #pragma GCC unroll 4
        for (int v = 0; v < AT_PV; v++)
            vstore_n(o + (size_t)h * dim + i + v * VLEN, acc[h][v], width - v * VLEN);
}

static inline __attribute__((always_inline)) void AT_FN(at_group)(int NH, float *out, const float *q,
                                                           int dim, int tail, const AT_ROW *const *kv,
                                                           int n_kv, const float *sink, float scale,
                                                           int bf16_probs)
{
    float z[AT_HG][AT_ZCH];
    float m[AT_HG];
    vec den[AT_HG];
    for (int h = 0; h < NH; h++) {
        m[h] = -INFINITY;
        den[h] = vzero();
        memset(out + (size_t)h * dim, 0, (size_t)dim * sizeof *out);
    }
    if (n_kv <= 0)
        return;
    for (int j0 = 0; j0 < n_kv; j0 += AT_ZCH)
        AT_FN(at_scores)(NH, q, dim, tail, kv + j0, n_kv - j0 < AT_ZCH ? n_kv - j0 : AT_ZCH, scale, z, m);
    for (int j0 = 0; j0 < n_kv; j0 += AT_ZCH) {
        int nj = n_kv - j0 < AT_ZCH ? n_kv - j0 : AT_ZCH;
        if (n_kv > AT_ZCH) {
            float unused[AT_HG];
            for (int h = 0; h < AT_HG; h++)
                unused[h] = -INFINITY;
            AT_FN(at_scores)(NH, q, dim, tail, kv + j0, nj, scale, z, unused);
        }
        for (int h = 0; h < NH; h++) {
            vec mh = vset1(m[h]);
            for (int j = 0; j < nj; j += VLEN) {
                vec e = vkeep_n(vexp(vsub(vload_n(z[h] + j, nj - j), mh)), nj - j);
                den[h] = vadd(den[h], e);
                vstore_n(z[h] + j, bf16_probs ? vround_bf16(e) : e, nj - j);
            }
        }
        int i = 0;
        for (; i + AT_PV * VLEN <= dim; i += AT_PV * VLEN)
            AT_FN(at_pv_slice)(NH, AT_PV * VLEN, out, dim, tail, kv + j0, nj, z, i);
        if (i < dim)
            AT_FN(at_pv_slice)(NH, dim - i, out, dim, tail, kv + j0, nj, z, i);
    }
    for (int h = 0; h < NH; h++) {
        vec d = vset1(vsum(den[h]) + expf(sink[h] - m[h]));
        float *o = out + (size_t)h * dim;
        for (int i = 0; i < dim; i += VLEN)
            vstore_n(o + i, vdiv(vload_n(o + i, dim - i), d), dim - i);
    }
}

static void AT_FN(at_attend)(float *out, const float *q, int dim, int tail, const AT_ROW *const *kv, int n_kv,
                              const float *sink, float scale, int bf16_probs, int h0, int h1)
{
    for (int hg = h0; hg < h1; hg += AT_HG) {
        float *o = out + (size_t)hg * dim;
        const float *qg = q + (size_t)hg * dim;
        /* the group's head count as a constant, so at_group's loops unroll */
#define AT_CASE(n)                                                                  \
    case n:                                                                         \
        AT_FN(at_group)(n, o, qg, dim, tail, kv, n_kv, sink + hg, scale, bf16_probs); \
        break;
        switch (h1 - hg < AT_HG ? h1 - hg : AT_HG) {
            AT_CASE(1)
            AT_CASE(2)
            AT_CASE(3)
#if AT_HG > 4
            AT_CASE(4)
            AT_CASE(5)
            AT_CASE(6)
            AT_CASE(7)
#endif
        default:
            AT_FN(at_group)(AT_HG, o, qg, dim, tail, kv, n_kv, sink + hg, scale, bf16_probs);
            break;
        }
#undef AT_CASE
    }
}

#undef AT_HG
#undef AT_PV
#undef AT_ZCH

#ifdef AT_FLOAT_ROWS
static void attend_vec(float *out, const float *q, int dim, const float *const *kv, int n_kv, const float *sink,
                       float scale, int bf16_probs, int h0, int h1)
{
    at_attend(out, q, dim, 0, kv, n_kv, sink, scale, bf16_probs, h0, h1);
}
#undef AT_FLOAT_ROWS
#endif
