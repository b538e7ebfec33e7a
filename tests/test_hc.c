/* mHC: the Sinkhorn projection against an independent double-precision
 * re-implementation, its row/column sums, and the pre/post mixing on
 * hand-chosen parameters. */
#include "test_util.h"

#include <math.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sinkhorn_matches_naive_and_is_doubly_stochastic),
        cmocka_unit_test(test_split_gates),
        cmocka_unit_test(test_mixes_against_naive),
        cmocka_unit_test(test_pre_post_identity_like),
        cmocka_unit_test(test_post_index_order),
        cmocka_unit_test(test_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
