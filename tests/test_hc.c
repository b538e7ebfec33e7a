/* mHC: the Sinkhorn projection against an independent double-precision
 * re-implementation, its row/column sums, and the pre/post mixing on
 * hand-chosen parameters. */
#include "test_util.h"

#include <math.h>
#include <omp.h>

#include "../simd/formats.h"
#include "engine.h"
#include "hc.h"

#define HC 4
#define DIM 40
#define MIX ((2 + HC) * HC)

/* The iteration as the transformers docstring states it: softmax over the
 * last axis plus eps, then "alternate" column and row normalisation,
 * written here as: for each of `iters` rounds, rows (skipped in the first
 * round, the softmax having done it) then columns. */
static void naive_sinkhorn(double *c, int hc, int iters, double eps)
{
    for (int a = 0; a < hc; a++) {
        double mx = -INFINITY, sum = 0.0;
        for (int b = 0; b < hc; b++)
            mx = fmax(mx, c[a * hc + b]);
        for (int b = 0; b < hc; b++)
            sum += exp(c[a * hc + b] - mx);
        for (int b = 0; b < hc; b++)
            c[a * hc + b] = exp(c[a * hc + b] - mx) / sum + eps;
    }
    for (int round = 0; round < (iters > 1 ? iters : 1); round++) {
        double rows[16] = { 0 }, cols[16] = { 0 };
        if (round > 0) {
            for (int i = 0; i < hc * hc; i++)
                rows[i / hc] += c[i];
            for (int i = 0; i < hc * hc; i++)
                c[i] /= rows[i / hc] + eps;
        }
        for (int i = 0; i < hc * hc; i++)
            cols[i % hc] += c[i];
        for (int i = 0; i < hc * hc; i++)
            c[i] /= cols[i % hc] + eps;
    }
}

static void test_sinkhorn_matches_naive_and_is_doubly_stochastic(void **state)
{
    (void)state;
    uint64_t seed = 42;
    for (int trial = 0; trial < 50; trial++) {
        float c[HC * HC];
        double ref[HC * HC];
        for (int i = 0; i < HC * HC; i++) {
            c[i] = (trial % 2 ? 4.0f : 1.5f) * test_rand_f(&seed);
            ref[i] = c[i];
        }
        int iters = trial % 5 == 0 ? 1 : 20;
        hc_sinkhorn(c, HC, iters, 1e-6f);
        naive_sinkhorn(ref, HC, iters, 1e-6);
        for (int i = 0; i < HC * HC; i++) {
            assert_true(c[i] > 0.0f);
            assert_true(fabs(c[i] - ref[i]) < 2e-6);
        }
        /* The last step divides columns by (sum + eps): columns sum to 1 - O(eps). */
        for (int b = 0; b < HC; b++) {
            double col = 0.0;
            for (int a = 0; a < HC; a++)
                col += c[a * HC + b];
            assert_true(fabs(col - 1.0) < 1e-5);
        }
        /* Rows converge fast for moderate logits; wide ones (±4) need more rounds. */
        if (iters == 20 && trial % 2 == 0) {
            for (int a = 0; a < HC; a++) {
                double row = 0.0;
                for (int b = 0; b < HC; b++)
                    row += c[a * HC + b];
                assert_true(fabs(row - 1.0) < 1e-5);
            }
        }
    }
}

static void test_split_gates(void **state)
{
    (void)state;
    float m[MIX], base[MIX], scale[3] = { 0.5f, 2.0f, 1.5f };
    uint64_t seed = 7;
    for (int i = 0; i < MIX; i++) {
        m[i] = test_rand_f(&seed);
        base[i] = test_rand_f(&seed);
    }
    float pre[HC], post[HC], comb[HC * HC];
    hc_split(m, scale, base, HC, 20, 1e-6f, pre, post, comb);
    double ref[HC * HC];
    for (int a = 0; a < HC; a++) {
        double p = 1.0 / (1.0 + exp(-(m[a] * 0.5 + base[a]))) + 1e-6;
        double q = 2.0 / (1.0 + exp(-(m[HC + a] * 2.0 + base[HC + a])));
        assert_true(fabs(pre[a] - p) < 1e-6);
        assert_true(fabs(post[a] - q) < 1e-6);
    }
    for (int i = 0; i < HC * HC; i++)
        ref[i] = (double)m[2 * HC + i] * 1.5 + base[2 * HC + i];
    naive_sinkhorn(ref, HC, 20, 1e-6);
    for (int i = 0; i < HC * HC; i++)
        assert_true(fabs(comb[i] - ref[i]) < 2e-6);
}

/* A tiny engine: only the fields the hc functions read. */
static void make_engine(dsv4_engine *e, dsv4_numerics numerics)
{
    memset(e, 0, sizeof *e);
    e->cfg.hc_mult = HC;
    e->cfg.dim = DIM;
    e->cfg.hc_sinkhorn_iters = 20;
    e->cfg.hc_eps = 1e-6f;
    e->cfg.norm_eps = 1e-6f;
    e->opt.numerics = numerics;
    e->k = kernels_scalar();
}

static void fill_streams(float *X, int n, uint64_t *seed)
{
    for (int i = 0; i < n * HC * DIM; i++)
        X[i] = 3.0f * test_rand_f(seed);
}

static void test_mixes_against_naive(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        dsv4_engine e;
        make_engine(&e, mode ? DSV4_NUMERICS_RELEASE : DSV4_NUMERICS_PLAIN);
        enum { N = 3 };
        static float X[N * HC * DIM], fn[MIX * HC * DIM], scratch[N * HC * DIM];
        float mixes[N * MIX];
        uint64_t seed = 11 + mode;
        fill_streams(X, N, &seed);
        for (int i = 0; i < MIX * HC * DIM; i++)
            fn[i] = 0.1f * test_rand_f(&seed);
        hc_mixes(&e, fn, MIX, X, N, scratch, mixes);
        for (int t = 0; t < N; t++) {
            const float *v = X + t * HC * DIM;
            double ss = 0.0;
            for (int i = 0; i < HC * DIM; i++)
                ss += (double)v[i] * v[i];
            double r = 1.0 / sqrt(ss / (HC * DIM) + 1e-6);
            for (int j = 0; j < MIX; j++) {
                double dot = 0.0, mag = 0.0;
                for (int i = 0; i < HC * DIM; i++) {
                    dot += (double)fn[j * HC * DIM + i] * v[i];
                    mag += fabs((double)fn[j * HC * DIM + i] * v[i]);
                }
                assert_true(fabs(mixes[t * MIX + j] - dot * r) <= 1e-6 * mag * r + 1e-7);
            }
        }
    }
}

/* fn = 0: every mix logit is the base. Pre weights σ(base)+eps, post 2σ(base),
 * and a comb base with a large diagonal makes the mixer the identity. */
static void test_pre_post_identity_like(void **state)
{
    (void)state;
    dsv4_engine e;
    make_engine(&e, DSV4_NUMERICS_PLAIN);
    enum { N = 2 };
    static float X[N * HC * DIM], Xout[N * HC * DIM], scratch[N * HC * DIM], fn[MIX * HC * DIM];
    float base[MIX] = { 0 }, scale[3] = { 1, 1, 1 };
    float mixes[N * MIX], pre[N * HC], post[N * HC], comb[N * HC * HC], u[N * DIM], f[N * DIM];
    const float pre_logit[HC] = { 0.0f, 1.0f, -1.0f, 2.0f };
    for (int a = 0; a < HC; a++) {
        base[a] = pre_logit[a];
        base[HC + a] = 0.0f; /* post = 2σ(0) = 1 */
        base[2 * HC + a * HC + a] = 40.0f;
    }
    dsv4_hc_weights w = { .fn = fn, .base = base, .scale = scale };
    uint64_t seed = 5;
    fill_streams(X, N, &seed);
    for (int i = 0; i < N * DIM; i++)
        f[i] = test_rand_f(&seed);

    hc_pre(&e, &w, X, N, scratch, mixes, pre, post, comb, u);
    for (int t = 0; t < N; t++) {
        for (int a = 0; a < HC; a++) {
            double p = 1.0 / (1.0 + exp(-pre_logit[a])) + 1e-6;
            assert_true(fabs(pre[t * HC + a] - p) < 1e-6);
            assert_true(fabs(post[t * HC + a] - 1.0) < 1e-6);
            for (int b = 0; b < HC; b++)
                assert_true(fabs(comb[t * HC * HC + a * HC + b] - (a == b)) < 1e-5);
        }
        for (int d = 0; d < DIM; d++) {
            double s = 0.0;
            for (int a = 0; a < HC; a++)
                s += (double)pre[t * HC + a] * X[(t * HC + a) * DIM + d];
            assert_true(fabs(u[t * DIM + d] - s) < 1e-5);
        }
    }
    hc_post(X, f, post, comb, N, HC, DIM, Xout);
    for (int t = 0; t < N; t++)
        for (int b = 0; b < HC; b++)
            for (int d = 0; d < DIM; d++)
                assert_true(fabs(Xout[(t * HC + b) * DIM + d] - (f[t * DIM + d] + X[(t * HC + b) * DIM + d])) < 1e-4);
}

/* comb[a][b] is the weight of input stream a in output stream b: a
 * permutation matrix moves stream a to stream perm[a]. */
static void test_post_index_order(void **state)
{
    (void)state;
    static float X[HC * DIM], Xout[HC * DIM], f[DIM];
    float post[HC] = { 0.5f, 0.25f, 2.0f, 1.0f }, comb[HC * HC] = { 0 };
    const int perm[HC] = { 1, 3, 0, 2 };
    uint64_t seed = 9;
    fill_streams(X, 1, &seed);
    for (int d = 0; d < DIM; d++)
        f[d] = test_rand_f(&seed);
    for (int a = 0; a < HC; a++)
        comb[a * HC + perm[a]] = 1.0f;
    hc_post(X, f, post, comb, 1, HC, DIM, Xout);
    for (int a = 0; a < HC; a++) {
        int b = perm[a];
        for (int d = 0; d < DIM; d++)
            assert_true(Xout[b * DIM + d] == post[b] * f[d] + X[a * DIM + d]);
    }
}

static void test_head(void **state)
{
    (void)state;
    dsv4_engine e;
    make_engine(&e, DSV4_NUMERICS_PLAIN);
    enum { N = 2 };
    static float X[N * HC * DIM], scratch[N * HC * DIM], fn[HC * HC * DIM];
    float base[HC] = { 0.5f, -0.5f, 1.0f, 0.0f }, scale[1] = { 0.75f }, mixes[N * HC], h[N * DIM];
    uint64_t seed = 13;
    fill_streams(X, N, &seed);
    for (int i = 0; i < HC * HC * DIM; i++)
        fn[i] = 0.05f * test_rand_f(&seed);
    e.w.hc_head_fn = fn;
    e.w.hc_head_base = base;
    e.w.hc_head_scale = scale;
    hc_head(&e, X, N, scratch, mixes, h);
    for (int t = 0; t < N; t++) {
        const float *v = X + t * HC * DIM;
        double ss = 0.0;
        for (int i = 0; i < HC * DIM; i++)
            ss += (double)v[i] * v[i];
        double r = 1.0 / sqrt(ss / (HC * DIM) + 1e-6), w[HC];
        for (int a = 0; a < HC; a++) {
            double m = 0.0;
            for (int i = 0; i < HC * DIM; i++)
                m += (double)fn[a * HC * DIM + i] * v[i];
            w[a] = 1.0 / (1.0 + exp(-(m * r * 0.75 + base[a]))) + 1e-6;
        }
        for (int d = 0; d < DIM; d++) {
            double s = 0.0;
            for (int a = 0; a < HC; a++)
                s += w[a] * v[a * DIM + d];
            assert_true(fabs(h[t * DIM + d] - s) < 1e-5);
        }
    }
}

/* ---- token and thread splits: bit-exact against a sequential re-implementation ---- */

/* Wide enough that the functions start teams and split tokens and rows. */
#define WDIM 256
#define WLEN (HC * WDIM)
#define WN 37 /* not a multiple of any block size */

static float ref_sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* One token's mix logits with the scalar kernels' documented order (one fp32
 * accumulator, columns ascending) and the 1/rms of hc.h (sum of squares in
 * double, ascending), in the numerics' order of scaling. */
static void ref_mixes(const float *fn, int rows, const float *v, dsv4_numerics numerics, float *m)
{
    double ss = 0.0;
    for (int i = 0; i < WLEN; i++)
        ss += (double)v[i] * v[i];
    float r = 1.0f / sqrtf((float)(ss / WLEN) + 1e-6f);
    for (int j = 0; j < rows; j++) {
        float acc = 0.0f;
        for (int i = 0; i < WLEN; i++)
            acc += fn[(size_t)j * WLEN + i] * (numerics == DSV4_NUMERICS_PLAIN ? v[i] * r : v[i]);
        m[j] = numerics == DSV4_NUMERICS_PLAIN ? acc : acc * r;
    }
}

static void ref_collapse(const float *v, const float *w, float *out)
{
    for (int d = 0; d < WDIM; d++) {
        float s = w[0] * v[d];
        for (int a = 1; a < HC; a++)
            s += w[a] * v[a * WDIM + d];
        out[d] = s;
    }
}

typedef struct {
    float X[WN * WLEN], fn[MIX * WLEN], head_fn[HC * WLEN], f[WN * WDIM];
    float base[MIX], scale[3], head_base[HC], head_scale[1];
    /* expected */
    float pre[WN * HC], post[WN * HC], comb[WN * HC * HC], u[WN * WDIM], h[WN * WDIM];
    float Xout[WN * WLEN], Xout_bf16[WN * WLEN];
    /* computed */
    float scratch[WN * WLEN], mixes[WN * MIX], g_pre[WN * HC], g_post[WN * HC], g_comb[WN * HC * HC];
    float g_u[WN * WDIM], g_Xout[WN * WLEN];
} split_case;

static void fill_split_case(split_case *c, dsv4_numerics numerics)
{
    uint64_t seed = 101 + numerics;
    for (int i = 0; i < WN * WLEN; i++)
        c->X[i] = 2.0f * test_rand_f(&seed);
    for (int i = 0; i < MIX * WLEN; i++)
        c->fn[i] = 0.05f * test_rand_f(&seed);
    for (int i = 0; i < HC * WLEN; i++)
        c->head_fn[i] = 0.05f * test_rand_f(&seed);
    for (int i = 0; i < WN * WDIM; i++)
        c->f[i] = test_rand_f(&seed);
    for (int i = 0; i < MIX; i++)
        c->base[i] = 0.5f * test_rand_f(&seed);
    for (int a = 0; a < HC; a++)
        c->head_base[a] = 0.5f * test_rand_f(&seed);
    c->scale[0] = 0.7f, c->scale[1] = 0.3f, c->scale[2] = 1.3f, c->head_scale[0] = 0.6f;

    for (int t = 0; t < WN; t++) {
        const float *v = c->X + (size_t)t * WLEN;
        float m[MIX], mh[HC];
        ref_mixes(c->fn, MIX, v, numerics, m);
        hc_split(m, c->scale, c->base, HC, 20, 1e-6f, c->pre + t * HC, c->post + t * HC, c->comb + t * HC * HC);
        ref_collapse(v, c->pre + t * HC, c->u + t * WDIM);
        ref_mixes(c->head_fn, HC, v, numerics, mh);
        for (int a = 0; a < HC; a++)
            mh[a] = ref_sigmoid(mh[a] * c->head_scale[0] + c->head_base[a]) + 1e-6f;
        ref_collapse(v, mh, c->h + t * WDIM);
        for (int b = 0; b < HC; b++)
            for (int d = 0; d < WDIM; d++) {
                const float *cb = c->comb + t * HC * HC + b;
                float mixed = cb[0] * v[d];
                for (int a = 1; a < HC; a++)
                    mixed += cb[a * HC] * v[a * WDIM + d];
                float pb = c->post[t * HC + b], fd = c->f[t * WDIM + d];
                c->Xout[(size_t)(t * HC + b) * WDIM + d] = pb * fd + mixed;
                c->Xout_bf16[(size_t)(t * HC + b) * WDIM + d] = fmt_round_bf16(pb * fmt_round_bf16(fd) + mixed);
            }
    }
}

static void make_wide_engine(dsv4_engine *e, dsv4_numerics numerics, split_case *c, const dsv4_kernels *k)
{
    make_engine(e, numerics);
    e->cfg.dim = WDIM;
    e->k = k;
    e->w.hc_head_fn = c->head_fn;
    e->w.hc_head_base = c->head_base;
    e->w.hc_head_scale = c->head_scale;
}

/* Tokens [t0, t0 + n) of one call must equal the expectation bit for bit. */
static void check_split_call(const dsv4_engine *e, split_case *c, int t0, int n)
{
    dsv4_hc_weights w = { .fn = c->fn, .base = c->base, .scale = c->scale };
    const float *X = c->X + (size_t)t0 * WLEN;
    hc_pre(e, &w, X, n, c->scratch, c->mixes, c->g_pre, c->g_post, c->g_comb, c->g_u);
    assert_memory_equal(c->g_pre, c->pre + t0 * HC, (size_t)n * HC * sizeof(float));
    assert_memory_equal(c->g_post, c->post + t0 * HC, (size_t)n * HC * sizeof(float));
    assert_memory_equal(c->g_comb, c->comb + t0 * HC * HC, (size_t)n * HC * HC * sizeof(float));
    assert_memory_equal(c->g_u, c->u + t0 * WDIM, (size_t)n * WDIM * sizeof(float));

    hc_head(e, X, n, c->scratch, c->mixes, c->g_u);
    assert_memory_equal(c->g_u, c->h + t0 * WDIM, (size_t)n * WDIM * sizeof(float));

    const float *f = c->f + (size_t)t0 * WDIM;
    hc_post(X, f, c->post + t0 * HC, c->comb + t0 * HC * HC, n, HC, WDIM, c->g_Xout);
    assert_memory_equal(c->g_Xout, c->Xout + (size_t)t0 * WLEN, (size_t)n * WLEN * sizeof(float));
    hc_post_bf16(X, f, c->post + t0 * HC, c->comb + t0 * HC * HC, n, HC, WDIM, c->g_Xout);
    assert_memory_equal(c->g_Xout, c->Xout_bf16 + (size_t)t0 * WLEN, (size_t)n * WLEN * sizeof(float));
}

/* hc_pre / hc_head / hc_post split their work by tokens, rows and thread
 * count; with the scalar kernels every value has one documented order, so
 * each call must reproduce a sequential re-implementation exactly, for any
 * token count and team size. */
static void test_splits_match_sequential_reference(void **state)
{
    (void)state;
    static split_case c;
    int saved = omp_get_max_threads();
    const int threads[] = { 1, 2, 3, 7 };
    const int counts[][2] = { { 0, WN }, { 3, 1 }, { 5, 2 }, { 8, 5 }, { 13, 17 } }; /* {t0, n} */
    for (int mode = 0; mode < 2; mode++) {
        dsv4_numerics numerics = mode ? DSV4_NUMERICS_RELEASE : DSV4_NUMERICS_PLAIN;
        fill_split_case(&c, numerics);
        dsv4_engine e;
        make_wide_engine(&e, numerics, &c, kernels_scalar());
        for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++) {
            omp_set_num_threads(threads[ti]);
            for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++)
                check_split_call(&e, &c, counts[ci][0], counts[ci][1]);
        }
    }
    omp_set_num_threads(saved);
}

/* With the machine's best kernels the order inside a product is the
 * kernel's own: there the expectation is one token per call on one thread,
 * and every token count and team size must give the same bits. */
static void test_splits_match_single_tokens_best_kernels(void **state)
{
    (void)state;
    static split_case c;
    static float one_u[WN * WDIM], one_h[WN * WDIM], one_comb[WN * HC * HC], one_post[WN * HC];
    int saved = omp_get_max_threads();
    const int threads[] = { 2, 3, 7 };
    for (int mode = 0; mode < 2; mode++) {
        dsv4_numerics numerics = mode ? DSV4_NUMERICS_RELEASE : DSV4_NUMERICS_PLAIN;
        fill_split_case(&c, numerics);
        dsv4_engine e;
        make_wide_engine(&e, numerics, &c, kernels_select(NULL));
        dsv4_hc_weights w = { .fn = c.fn, .base = c.base, .scale = c.scale };
        omp_set_num_threads(1);
        for (int t = 0; t < WN; t++) {
            const float *X = c.X + (size_t)t * WLEN;
            hc_pre(&e, &w, X, 1, c.scratch, c.mixes, c.g_pre, one_post + t * HC, one_comb + t * HC * HC,
                   one_u + t * WDIM);
            hc_head(&e, X, 1, c.scratch, c.mixes, one_h + t * WDIM);
        }
        for (int t = 0; t < WN * WDIM; t++) /* and close to the scalar expectation */
            assert_true(fabsf(one_u[t] - c.u[t]) <= 1e-4f * (1.0f + fabsf(c.u[t])));
        for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++) {
            omp_set_num_threads(threads[ti]);
            for (int n = 2; n <= WN; n += 7) {
                hc_pre(&e, &w, c.X, n, c.scratch, c.mixes, c.g_pre, c.g_post, c.g_comb, c.g_u);
                assert_memory_equal(c.g_u, one_u, (size_t)n * WDIM * sizeof(float));
                assert_memory_equal(c.g_post, one_post, (size_t)n * HC * sizeof(float));
                assert_memory_equal(c.g_comb, one_comb, (size_t)n * HC * HC * sizeof(float));
                hc_head(&e, c.X, n, c.scratch, c.mixes, c.g_u);
                assert_memory_equal(c.g_u, one_h, (size_t)n * WDIM * sizeof(float));
            }
        }
    }
    omp_set_num_threads(saved);
}

/* fmt_round_bf16_array (hc_post_bf16's rounding) against round-to-nearest-
 * even written as comparisons on the dropped half: specials, ties, and
 * random bit patterns, over lengths that end inside and outside its blocks. */
static void test_round_bf16_array_exact(void **state)
{
    (void)state;
    enum { LEN = 1000 };
    static const uint32_t special[] = {
        0x00000000u, 0x80000000u, 0x00000001u, 0x00008000u, 0x00018000u, 0x007fffffu, 0x3f808000u,
        0x3f818000u, 0x3f808001u, 0x3f807fffu, 0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u, 0x7f800000u,
        0xff800000u, 0x7f800001u, 0x7fc00000u, 0xffffffffu, 0x7fbfffffu, 0xff80ffffu,
    };
    float x[LEN];
    uint32_t bits[LEN];
    uint64_t seed = 77;
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < LEN; i++) {
            bits[i] = i < (int)(sizeof special / sizeof special[0]) && round == 0 ? special[i]
                                                                                  : (uint32_t)test_rand_u64(&seed);
            memcpy(&x[i], &bits[i], sizeof x[i]);
        }
        size_t n = LEN - (size_t)round % 70;
        fmt_round_bf16_array(x, n);
        for (size_t i = 0; i < LEN; i++) {
            uint32_t u = bits[i], hi = u >> 16, lo = u & 0xffffu, want;
            if (i >= n)
                want = u; /* past the end: untouched */
            else if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
                want = (hi | 0x0040u) << 16; /* NaN: quiet, sign and payload top kept */
            else
                want = (hi + (lo > 0x8000u || (lo == 0x8000u && (hi & 1u)))) << 16;
            uint32_t got;
            memcpy(&got, &x[i], sizeof got);
            assert_int_equal(got, want);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sinkhorn_matches_naive_and_is_doubly_stochastic),
        cmocka_unit_test(test_split_gates),
        cmocka_unit_test(test_mixes_against_naive),
        cmocka_unit_test(test_pre_post_identity_like),
        cmocka_unit_test(test_post_index_order),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_splits_match_sequential_reference),
        cmocka_unit_test(test_splits_match_single_tokens_best_kernels),
        cmocka_unit_test(test_round_bf16_array_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
