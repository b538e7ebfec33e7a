/* mHC mixing. The formulas follow transformers' DeepseekV4HyperConnection /
 * DeepseekV4HyperHead, which agree with the official hc_split_sinkhorn kernel
 * and Block.hc_pre / hc_post / ParallelHead.hc_head; the one difference (where
 * the 1/rms factor is applied) is chosen by the numerics option. */
#include "hc.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "../simd/formats.h"


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

/* inv_rms of m tokens of len values (stride len). Four tokens at a time
 * with one accumulator each: the same sum per token in the same order (the
 * same bits), but four independent chains of double additions hide their
 * latency, which alone sets the speed of one long sum. */
static void inv_rms_tokens(const float *X, int len, int m, float eps, float *r)
{
    int t = 0;
    for (; t + 4 <= m; t += 4) {
        const float *v0 = X + (size_t)t * len, *v1 = v0 + len, *v2 = v1 + len, *v3 = v2 + len;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        for (int i = 0; i < len; i++) {
            s0 += (double)v0[i] * v0[i];
            s1 += (double)v1[i] * v1[i];
            s2 += (double)v2[i] * v2[i];
            s3 += (double)v3[i] * v3[i];
        }
        r[t] = 1.0f / sqrtf((float)(s0 / len) + eps);
        r[t + 1] = 1.0f / sqrtf((float)(s1 / len) + eps);
        r[t + 2] = 1.0f / sqrtf((float)(s2 / len) + eps);
        r[t + 3] = 1.0f / sqrtf((float)(s3 / len) + eps);
    }
    for (; t < m; t++)
        r[t] = inv_rms(X + (size_t)t * len, len, eps);
}

/* Values per step of weighted_sum: a fixed count, so that the compiler
 * turns the loops into vector code (at -O2 gcc vectorises only loops whose
 * trip count it knows, and not where the output might alias the inputs). */
#define SUM_STEP 64

/* out[j] = Σ_a w[a*ws] x[a*xs + j] for j < len, streams a < hc in order
 * (each value one fixed sum, however the loop is cut); with f, out[j] =
 * fw f[j] + that sum. */
static void weighted_sum(float *out, const float *x, size_t xs, const float *w, int ws, int hc, int len,
                         const float *f, float fw)
{
    int j0 = 0;
    for (; j0 + SUM_STEP <= len; j0 += SUM_STEP) {
        float s[SUM_STEP];
        for (int j = 0; j < SUM_STEP; j++)
            s[j] = w[0] * x[j0 + j];
        for (int a = 1; a < hc; a++) {
            const float *xa = x + (size_t)a * xs + j0;
            float wa = w[a * ws];
            for (int j = 0; j < SUM_STEP; j++)
                s[j] += wa * xa[j];
        }
        if (f)
            for (int j = 0; j < SUM_STEP; j++)
                s[j] = fw * f[j0 + j] + s[j];
        memcpy(out + j0, s, sizeof s);
    }
    for (int j = j0; j < len; j++) {
        float s = w[0] * x[j];
        for (int a = 1; a < hc; a++)
            s += w[a * ws] * x[(size_t)a * xs + j];
        out[j] = f ? fw * f[j] + s : s;
    }
}

/* out = Σ_a w[a] X[a] over hc streams of dim values, streams in order. */
static void collapse(const float *X, const float *w, int hc, int dim, float *out)
{
    weighted_sum(out, X, (size_t)dim, w, 1, hc, dim, NULL, 0.0f);
}

/* What follows the mix logits of a token. */
typedef enum { MIX_ONLY, MIX_PRE, MIX_HEAD } mix_use;

typedef struct {
    const dsv4_engine *e;
    const float *fn;
    int rows, len, n;
    const float *X;
    float *scratch, *mixes;
    mix_use use;
    const dsv4_hc_weights *w;   /* MIX_PRE */
    float *pre, *post, *comb;   /* MIX_PRE */
    float *out;                 /* MIX_PRE: u; MIX_HEAD: h */
} mix_call;

/* Tokens per group of the per-token steps (inv_rms_tokens' width). */
#define TOKEN_GROUP 4

/* Plain numerics: scratch = v / rms(v) for tokens [t0, t1), the product's input. */
static void normalize_tokens(const mix_call *c, int t0, int t1)
{
    float r[TOKEN_GROUP];
    float eps = c->e->cfg.norm_eps;
    for (int g = t0; g < t1; g += TOKEN_GROUP) {
        int m = t1 - g < TOKEN_GROUP ? t1 - g : TOKEN_GROUP;
        inv_rms_tokens(c->X + (size_t)g * c->len, c->len, m, eps, r);
        for (int t = 0; t < m; t++) {
            const float *v = c->X + (size_t)(g + t) * c->len;
            float *s = c->scratch + (size_t)(g + t) * c->len;
            float rt = r[t];
#pragma omp simd
            for (int i = 0; i < c->len; i++)
                s[i] = v[i] * rt;
        }
    }
}

/* mixes of tokens [t0, t1), rows [r0, r1). The kernels' result for a
 * (token, row) does not depend on the token count or row range of a call,
 * so any split into such blocks gives the same bits. */
static void product_block(const mix_call *c, int t0, int t1, int r0, int r1)
{
    const float *in = c->e->opt.numerics == DSV4_NUMERICS_PLAIN ? c->scratch : c->X;
    c->e->k->matmul_f32(c->mixes + (size_t)t0 * c->rows, (size_t)c->rows, c->fn, in + (size_t)t0 * c->len,
                        (size_t)c->len, t1 - t0, c->rows, c->len, r0, r1);
}

/* After the product, tokens [t0, t1): release numerics' 1/rms factor, then
 * the token's use of its mixes. */
static void finish_tokens(const mix_call *c, int t0, int t1)
{
    const dsv4_engine *e = c->e;
    int hc = e->cfg.hc_mult, dim = e->cfg.dim, rows = c->rows;
    float r[TOKEN_GROUP];
    for (int g = t0; g < t1; g += TOKEN_GROUP) {
        int m = t1 - g < TOKEN_GROUP ? t1 - g : TOKEN_GROUP;
        if (e->opt.numerics != DSV4_NUMERICS_PLAIN) {
            /* official: F.linear(v, fn) * rsqrt(...) */
            inv_rms_tokens(c->X + (size_t)g * c->len, c->len, m, e->cfg.norm_eps, r);
            for (int t = 0; t < m; t++)
                for (int j = 0; j < rows; j++)
                    c->mixes[(size_t)(g + t) * rows + j] *= r[t];
        }
        for (int t = g; t < g + m; t++) {
            float *mt = c->mixes + (size_t)t * rows;
            const float *xt = c->X + (size_t)t * hc * dim;
            if (c->use == MIX_PRE) {
                const dsv4_hc_weights *w = c->w;
                hc_split(mt, w->scale, w->base, hc, e->cfg.hc_sinkhorn_iters, e->cfg.hc_eps,
                         c->pre + (size_t)t * hc, c->post + (size_t)t * hc, c->comb + (size_t)t * hc * hc);
                collapse(xt, c->pre + (size_t)t * hc, hc, dim, c->out + (size_t)t * dim);
            } else if (c->use == MIX_HEAD) {
                const dsv4_weights *w = &e->w;
                for (int a = 0; a < hc; a++)
                    mt[a] = sigmoidf(mt[a] * w->hc_head_scale[0] + w->hc_head_base[a]) + e->cfg.hc_eps;
                collapse(xt, mt, hc, dim, c->out + (size_t)t * dim);
            }
        }
    }
}

/* Most tokens per work item: each item reads the whole fn matrix (1.5 MB
 * for V4), so more tokens share that read, while their inputs (2 MB here)
 * still mostly stay in the core's cache from the norm to the collapse
 * (32 measured best of 8..64 at 512 tokens). */
#define ITEM_TOKENS 32
/* Fewest tokens per item where there are that many: the kernels' GEMM path,
 * which reads a weight block once for all of them. */
#define GEMM_TOKENS 4
/* The kernels' row tile: row blocks are multiples of it. */
#define ROW_TILE 4
/* Below this much work (weight bytes, scaled up by the tokens) a team's
 * fork and join cost more than they save. */
#define SERIAL_WORK (96.0 * 1024)

/* The whole computation for n tokens, in one parallel region. Many tokens:
 * items are token blocks, each run from norm to collapse by one thread. Few
 * tokens (decode): the rows are split too, so the product (the weights are
 * hc*dim floats a row) spreads over the team; the per-token steps run
 * before and after it. */
static void run_mixes(const mix_call *c)
{
    int n = c->n, rows = c->rows, threads = omp_get_max_threads();
    int plain = c->e->opt.numerics == DSV4_NUMERICS_PLAIN;
    int tb = (n + threads - 1) / threads;
    int least = n < GEMM_TOKENS ? n : GEMM_TOKENS;
    tb = tb < least ? least : tb > ITEM_TOKENS ? ITEM_TOKENS : tb;
    int n_tb = (n + tb - 1) / tb, n_rb = 1, rb = rows;
    if (n_tb < threads) {
        int max_rb = rows / ROW_TILE > 1 ? rows / ROW_TILE : 1;
        n_rb = (threads + n_tb - 1) / n_tb;
        n_rb = n_rb < max_rb ? n_rb : max_rb;
        rb = (rows + n_rb - 1) / n_rb;
        rb = (rb + ROW_TILE - 1) / ROW_TILE * ROW_TILE;
        n_rb = (rows + rb - 1) / rb;
    }
    int items = n_tb * n_rb;
    double work = (double)rows * c->len * sizeof(float) * (1.0 + n / 4.0);
    int parallel = items > 1 && work > SERIAL_WORK;
    if (n_rb == 1) {
#pragma omp parallel for schedule(static) if (parallel)
        for (int b = 0; b < n_tb; b++) {
            int t0 = b * tb, t1 = t0 + tb < n ? t0 + tb : n;
            if (plain)
                normalize_tokens(c, t0, t1);
            product_block(c, t0, t1, 0, rows);
            finish_tokens(c, t0, t1);
        }
        return;
    }
    int groups = (n + TOKEN_GROUP - 1) / TOKEN_GROUP;
#pragma omp parallel if (parallel)
    {
        if (plain) {
#pragma omp for schedule(static)
            for (int g = 0; g < groups; g++)
                normalize_tokens(c, g * TOKEN_GROUP, g * TOKEN_GROUP + TOKEN_GROUP < n ? g * TOKEN_GROUP + TOKEN_GROUP : n);
        }
#pragma omp for schedule(static)
        for (int it = 0; it < items; it++) {
            int t0 = it / n_rb * tb, r0 = it % n_rb * rb;
            product_block(c, t0, t0 + tb < n ? t0 + tb : n, r0, r0 + rb < rows ? r0 + rb : rows);
        }
#pragma omp for schedule(static)
        for (int g = 0; g < groups; g++)
            finish_tokens(c, g * TOKEN_GROUP, g * TOKEN_GROUP + TOKEN_GROUP < n ? g * TOKEN_GROUP + TOKEN_GROUP : n);
    }
}

void hc_mixes(const dsv4_engine *e, const float *fn, int rows, const float *X, int n,
              float *scratch, float *mixes)
{
    mix_call c = {.e = e, .fn = fn, .rows = rows, .len = e->cfg.hc_mult * e->cfg.dim, .n = n, .X = X,
                  .scratch = scratch, .mixes = mixes, .use = MIX_ONLY};
    run_mixes(&c);
}

void hc_pre(const dsv4_engine *e, const dsv4_hc_weights *w, const float *X, int n,
            float *scratch, float *mixes, float *pre, float *post, float *comb, float *u)
{
    int hc = e->cfg.hc_mult;
    mix_call c = {.e = e, .fn = w->fn, .rows = (2 + hc) * hc, .len = hc * e->cfg.dim, .n = n, .X = X,
                  .scratch = scratch, .mixes = mixes, .use = MIX_PRE, .w = w,
                  .pre = pre, .post = post, .comb = comb, .out = u};
    run_mixes(&c);
}

/* Values of one output stream per work item. */
#define POST_BLOCK 1024

static void post_streams(const float *X, const float *f, const float *post, const float *comb,
                         int n, int hc, int dim, int round_bf16, float *Xout)
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
        const float *ft = f + (size_t)t * dim + d0;
        float *yb = Xout + ((size_t)t * hc + b) * dim + d0;
        float f_bf16[POST_BLOCK];
        if (round_bf16) {
            /* f is shared by the hc items of its token: round a copy */
            memcpy(f_bf16, ft, (size_t)(d1 - d0) * sizeof(float));
            fmt_round_bf16_array(f_bf16, (size_t)(d1 - d0));
            ft = f_bf16;
        }
        weighted_sum(yb, xt + d0, (size_t)dim, comb + (size_t)t * hc * hc + b, hc, hc, d1 - d0, ft,
                     post[(size_t)t * hc + b]);
        if (round_bf16) /* while the block is in L1: one pass over the streams less */
            fmt_round_bf16_array(yb, (size_t)(d1 - d0));
    }
}

void hc_post(const float *X, const float *f, const float *post, const float *comb,
             int n, int hc, int dim, float *Xout)
{
    post_streams(X, f, post, comb, n, hc, dim, 0, Xout);
}

void hc_post_bf16(const float *X, const float *f, const float *post, const float *comb,
                  int n, int hc, int dim, float *Xout)
{
    post_streams(X, f, post, comb, n, hc, dim, 1, Xout);
}

void hc_head(const dsv4_engine *e, const float *X, int n, float *scratch, float *mixes, float *h)
{
    int hc = e->cfg.hc_mult;
    mix_call c = {.e = e, .fn = e->w.hc_head_fn, .rows = hc, .len = hc * e->cfg.dim, .n = n, .X = X,
                  .scratch = scratch, .mixes = mixes, .use = MIX_HEAD, .out = h};
    run_mixes(&c);
}
