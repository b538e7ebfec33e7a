/* mHC mixing. The formulas follow transformers' DeepseekV4HyperConnection /
 * DeepseekV4HyperHead, which agree with the official hc_split_sinkhorn kernel
 * and Block.hc_pre / hc_post / ParallelHead.hc_head; the one difference (where
 * the 1/rms factor is applied) is chosen by the numerics option. */
#include "hc.h"

#include <math.h>
#include <string.h>

#include "linear.h"

static inline float sigmoidf(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

static void normalize_rows(float *c, int hc, float eps)
{
    for (int a = 0; a < hc; a++) {
        float sum = 0.0f;
        for (int b = 0; b < hc; b++)
            sum += c[a * hc + b];
        for (int b = 0; b < hc; b++)
            c[a * hc + b] /= sum + eps;
    }
}

static void normalize_cols(float *c, int hc, float eps)
{
    for (int b = 0; b < hc; b++) {
        float sum = 0.0f;
        for (int a = 0; a < hc; a++)
            sum += c[a * hc + b];
        for (int a = 0; a < hc; a++)
            c[a * hc + b] /= sum + eps;
    }
}

void hc_sinkhorn(float *c, int hc, int iters, float eps)
{
    for (int a = 0; a < hc; a++) {
        float *row = c + a * hc;
        float mx = row[0];
        for (int b = 1; b < hc; b++)
            mx = row[b] > mx ? row[b] : mx;
        float sum = 0.0f;
        for (int b = 0; b < hc; b++) {
            row[b] = expf(row[b] - mx);
            sum += row[b];
        }
        for (int b = 0; b < hc; b++)
            row[b] = row[b] / sum + eps;
    }
    /* The softmax stands in for the first row normalisation, so there are
     * iters column normalisations and iters-1 row ones (at least one column
     * pass, as in transformers and the official kernel). */
    normalize_cols(c, hc, eps);
    for (int it = 1; it < iters; it++) {
        normalize_rows(c, hc, eps);
        normalize_cols(c, hc, eps);
    }
}

void hc_split(const float *m, const float *scale, const float *base, int hc, int iters, float eps,
              float *pre, float *post, float *comb)
{
    for (int a = 0; a < hc; a++)
        pre[a] = sigmoidf(m[a] * scale[0] + base[a]) + eps;
    for (int b = 0; b < hc; b++)
        post[b] = 2.0f * sigmoidf(m[hc + b] * scale[1] + base[hc + b]);
    for (int i = 0; i < hc * hc; i++)
        comb[i] = m[2 * hc + i] * scale[2] + base[2 * hc + i];
    hc_sinkhorn(comb, hc, iters, eps);
}

/* 1/sqrt(mean(v²) + eps) in fp32, the mean accumulated in double so the
 * result does not depend on a summation order. */
static float inv_rms(const float *v, int len, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < len; i++)
        ss += (double)v[i] * v[i];
    return 1.0f / sqrtf((float)(ss / len) + eps);
}

void hc_mixes(const dsv4_engine *e, const float *fn, int rows, const float *X, int n,
              float *scratch, float *mixes)
{
    int len = e->cfg.hc_mult * e->cfg.dim;
    float eps = e->cfg.norm_eps;
    dsv4_linear W = { .fmt = DSV4_WF_F32, .rows = rows, .cols = len, .data = fn, .scale = NULL };
    if (e->opt.numerics == DSV4_NUMERICS_PLAIN) {
        /* transformers: F.linear(v * rsqrt(...), fn) */
#pragma omp parallel for schedule(static) if (n > 1)
        for (int t = 0; t < n; t++) {
            const float *v = X + (size_t)t * len;
            float *s = scratch + (size_t)t * len;
            float r = inv_rms(v, len, eps);
            for (int i = 0; i < len; i++)
                s[i] = v[i] * r;
        }
        linear_matmul(e->k, &W, mixes, scratch, n);
    } else {
        /* official: F.linear(v, fn) * rsqrt(...) */
        linear_matmul(e->k, &W, mixes, X, n);
#pragma omp parallel for schedule(static) if (n > 1)
        for (int t = 0; t < n; t++) {
            float r = inv_rms(X + (size_t)t * len, len, eps);
            for (int j = 0; j < rows; j++)
                mixes[(size_t)t * rows + j] *= r;
        }
    }
}

/* out = Σ_a w[a] X[a] over hc streams of dim values, streams in order. */
static void collapse(const float *X, const float *w, int hc, int dim, float *out)
{
    for (int d = 0; d < dim; d++)
        out[d] = w[0] * X[d];
    for (int a = 1; a < hc; a++) {
        const float *xa = X + (size_t)a * dim;
        for (int d = 0; d < dim; d++)
            out[d] += w[a] * xa[d];
    }
}

void hc_pre(const dsv4_engine *e, const dsv4_hc_weights *w, const float *X, int n,
            float *scratch, float *mixes, float *pre, float *post, float *comb, float *u)
{
    int hc = e->cfg.hc_mult, dim = e->cfg.dim, mix = (2 + hc) * hc;
    hc_mixes(e, w->fn, mix, X, n, scratch, mixes);
    /* One token's split and collapse is a few microseconds: a team only pays
     * off over several tokens. */
#pragma omp parallel for schedule(static) if (n > 1)
    for (int t = 0; t < n; t++) {
        hc_split(mixes + (size_t)t * mix, w->scale, w->base, hc, e->cfg.hc_sinkhorn_iters, e->cfg.hc_eps,
                 pre + (size_t)t * hc, post + (size_t)t * hc, comb + (size_t)t * hc * hc);
        collapse(X + (size_t)t * hc * dim, pre + (size_t)t * hc, hc, dim, u + (size_t)t * dim);
    }
}

/* Values of one output stream per work item. */
#define POST_BLOCK 1024

void hc_post(const float *X, const float *f, const float *post, const float *comb,
             int n, int hc, int dim, float *Xout)
{
    /* Split by (token, output stream, dimension block): even one token's
     * 4x4 mix of 4096-wide streams spreads over a team; each value is one
     * fixed sum, whoever computes it. */
    int blocks = (dim + POST_BLOCK - 1) / POST_BLOCK, items = n * hc * blocks;
#pragma omp parallel for schedule(static) if ((long)n * hc * hc * dim >= 32768 && items > 1)
    for (int it = 0; it < items; it++) {
        int t = it / (hc * blocks), b = it / blocks % hc, d0 = it % blocks * POST_BLOCK;
        int d1 = d0 + POST_BLOCK < dim ? d0 + POST_BLOCK : dim;
        const float *xt = X + (size_t)t * hc * dim;
        const float *ft = f + (size_t)t * dim;
        const float *pt = post + (size_t)t * hc;
        const float *ct = comb + (size_t)t * hc * hc;
        float *yb = Xout + ((size_t)t * hc + b) * dim;
        for (int d = d0; d < d1; d++) {
            float mixed = ct[b] * xt[d];
            for (int a = 1; a < hc; a++)
                mixed += ct[a * hc + b] * xt[(size_t)a * dim + d];
            yb[d] = pt[b] * ft[d] + mixed;
        }
    }
}

void hc_head(const dsv4_engine *e, const float *X, int n, float *scratch, float *mixes, float *h)
{
    const dsv4_weights *w = &e->w;
    int hc = e->cfg.hc_mult, dim = e->cfg.dim;
    hc_mixes(e, w->hc_head_fn, hc, X, n, scratch, mixes);
#pragma omp parallel for schedule(static) if (n > 1)
    for (int t = 0; t < n; t++) {
        float *m = mixes + (size_t)t * hc;
        for (int a = 0; a < hc; a++)
            m[a] = sigmoidf(m[a] * w->hc_head_scale[0] + w->hc_head_base[a]) + e->cfg.hc_eps;
        collapse(X + (size_t)t * hc * dim, m, hc, dim, h + (size_t)t * dim);
    }
}
