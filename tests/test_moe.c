/* MoE on tiny hand-built layers (F32 weights): routing with the selection
 * bias and by hash table, the SwiGLU clamp, expert-major execution against a
 * naive per-token loop, and invariance to chunk size and thread count. */
#include "test_util.h"

#include <math.h>
#include <omp.h>

#include "../simd/formats.h"
#include "engine.h"
#include "moe.h"

#define DIM 16
#define E 8
#define INTER 8
#define VOCAB 32
#define MAXK 4
#define MAX_CHUNK 160 /* more than GROUP_TOKENS (64, moe.c): a chunk runs in several groups */

/* Owns every array the engine's weights point to. Layer 0 routes by hash,
 * layer 1 by score + bias. */
typedef struct {
    dsv4_engine e;
    dsv4_layer_weights layers[2];
    dsv4_expert_weights experts[2][E];
    float gate[2][E * DIM];
    float bias[E];
    int32_t tid2eid[VOCAB * MAXK];
    float w13[2][E + 1][2][INTER * DIM]; /* expert E is the shared one */
    float w2[2][E + 1][DIM * INTER];
} tiny_model;

static dsv4_linear f32_linear(const float *w, int rows, int cols)
{
    dsv4_linear l = { .fmt = DSV4_WF_F32, .rows = rows, .cols = cols, .data = w, .scale = NULL };
    return l;
}

static tiny_model *tiny_new(int top_k, int with_shared, dsv4_numerics numerics)
{
    tiny_model *m = calloc(1, sizeof *m);
    dsv4_engine *e = &m->e;
    e->cfg.dim = DIM;
    e->cfg.vocab_size = VOCAB;
    e->cfg.n_layers = 2;
    e->cfg.n_hash_layers = 1;
    e->cfg.n_routed_experts = E;
    e->cfg.n_activated_experts = top_k;
    e->cfg.n_shared_experts = with_shared;
    e->cfg.moe_inter_dim = INTER;
    e->cfg.route_scale = 1.5f;
    e->cfg.swiglu_limit = 10.0f;
    e->opt.numerics = numerics;
    e->k = kernels_scalar();
    e->w.layers = m->layers;
    for (int l = 0; l < 2; l++) {
        dsv4_layer_weights *lw = &m->layers[l];
        lw->gate = f32_linear(m->gate[l], E, DIM);
        lw->experts = m->experts[l];
        for (int i = 0; i <= E; i++) {
            dsv4_expert_weights *ew = i < E ? &m->experts[l][i] : &lw->shared;
            if (i == E && !with_shared)
                break;
            ew->w1 = f32_linear(m->w13[l][i][0], INTER, DIM);
            ew->w3 = f32_linear(m->w13[l][i][1], INTER, DIM);
            ew->w2 = f32_linear(m->w2[l][i], DIM, INTER);
        }
    }
    m->layers[0].tid2eid = m->tid2eid;
    m->layers[1].gate_bias = m->bias;
    return m;
}

static void tiny_randomize(tiny_model *m, uint64_t seed)
{
    for (int l = 0; l < 2; l++) {
        for (int i = 0; i < E * DIM; i++)
            m->gate[l][i] = test_rand_f(&seed);
        for (int i = 0; i <= E; i++)
            for (int j = 0; j < INTER * DIM; j++) {
                m->w13[l][i][0][j] = 4.0f * test_rand_f(&seed);
                m->w13[l][i][1][j] = 4.0f * test_rand_f(&seed);
                m->w2[l][i][j] = 0.5f * test_rand_f(&seed);
            }
    }
    for (int i = 0; i < E; i++)
        m->bias[i] = 0.3f * test_rand_f(&seed);
    int K = m->e.cfg.n_activated_experts;
    for (int t = 0; t < VOCAB; t++)
        for (int k = 0; k < K; k++)
            m->tid2eid[t * K + k] = (t * 3 + k * 5) % E; /* distinct for K <= 4 since 5k mod 8 differs */
}

static moe_scratch *scratch_for(tiny_model *m)
{
    moe_scratch *s = NULL;
    dsv4_error err;
    assert_int_equal(moe_scratch_new(&s, &m->e, MAX_CHUNK, &err), 0);
    return s;
}

static double sqrt_softplus(double x)
{
    return sqrt(log1p(exp(x)));
}

static double silu(double x)
{
    return x / (1.0 + exp(-x));
}

/* Output layout for the routing tests: every expert reads only input dim 15
 * (set to 1): gate = g15, up = u15; expert i writes only output dim i. So
 * out[i] = INTER * silu(clamp(g15)) * clamp(u15) * weight_i. The gate reads
 * dims 0..7: logit of expert i = x[i]. */
static void routing_layout(tiny_model *m, float g15, float u15)
{
    memset(m->gate, 0, sizeof m->gate);
    memset(m->w13, 0, sizeof m->w13);
    memset(m->w2, 0, sizeof m->w2);
    for (int l = 0; l < 2; l++) {
        for (int i = 0; i < E; i++) {
            m->gate[l][i * DIM + i] = 1.0f;
            for (int j = 0; j < INTER; j++) {
                m->w13[l][i][0][j * DIM + 15] = g15;
                m->w13[l][i][1][j * DIM + 15] = u15;
                m->w2[l][i][i * INTER + j] = 1.0f;
            }
        }
    }
}

static void test_bias_steers_selection_not_weights(void **state)
{
    (void)state;
    tiny_model *m = tiny_new(2, 0, DSV4_NUMERICS_PLAIN);
    routing_layout(m, 1.0f, 1.0f);
    /* By score alone experts 0 and 1 win; the bias promotes 3 over 1. */
    memset(m->bias, 0, sizeof m->bias);
    m->bias[3] = 5.0f;
    float x[DIM] = { 3.0f, 2.9f, 0.0f, 0.0f, -1.0f, -2.0f, 0.5f, 0.1f };
    x[15] = 1.0f;
    float out[DIM];
    int32_t tok = 0;
    moe_scratch *s = scratch_for(m);
    moe_forward(&m->e, 1, s, x, &tok, 1, out);

    double s0 = sqrt_softplus(3.0), s3 = sqrt_softplus(0.0);
    double unit = INTER * silu(1.0);
    for (int i = 0; i < DIM; i++) {
        double want = i == 0 ? unit * s0 / (s0 + s3) * 1.5 : i == 3 ? unit * s3 / (s0 + s3) * 1.5 : 0.0;
        assert_true(fabs(out[i] - want) < 1e-5);
    }
    moe_scratch_free(s);
    free(m);
}

static void test_ties_go_to_lower_index(void **state)
{
    (void)state;
    tiny_model *m = tiny_new(2, 0, DSV4_NUMERICS_PLAIN);
    routing_layout(m, 1.0f, 1.0f);
    memset(m->bias, 0, sizeof m->bias);
    float x[DIM] = { 0.0f, 1.0f, 0.0f, 1.0f, 1.0f, 0.0f, 1.0f, 0.0f };
    x[15] = 1.0f;
    float out[DIM];
    int32_t tok = 0;
    moe_scratch *s = scratch_for(m);
    moe_forward(&m->e, 1, s, x, &tok, 1, out);
    for (int i = 0; i < DIM; i++)
        assert_true((out[i] != 0.0f) == (i == 1 || i == 3));
    moe_scratch_free(s);
    free(m);
}

static void test_hash_layer_uses_tid2eid(void **state)
{
    (void)state;
    tiny_model *m = tiny_new(2, 0, DSV4_NUMERICS_PLAIN);
    routing_layout(m, 1.0f, 1.0f);
    /* Scores would pick 0 and 1; the table says 6 and 2 for token 5. */
    float x[DIM] = { 3.0f, 2.0f, -1.0f, 0.0f, 0.0f, 0.0f, 0.5f, 0.0f };
    x[15] = 1.0f;
    m->tid2eid[5 * 2 + 0] = 6;
    m->tid2eid[5 * 2 + 1] = 2;
    float out[DIM];
    int32_t tok = 5;
    moe_scratch *s = scratch_for(m);
    moe_forward(&m->e, 0, s, x, &tok, 1, out);
    double s6 = sqrt_softplus(0.5), s2 = sqrt_softplus(-1.0), unit = INTER * silu(1.0);
    for (int i = 0; i < DIM; i++) {
        double want = i == 6 ? unit * s6 / (s6 + s2) * 1.5 : i == 2 ? unit * s2 / (s6 + s2) * 1.5 : 0.0;
        assert_true(fabs(out[i] - want) < 1e-5);
    }
    moe_scratch_free(s);
    free(m);
}

/* gate is clamped from above only, up on both sides (transformers and the official Expert). */
static void test_swiglu_clamp(void **state)
{
    (void)state;
    const float cases[3][2] = { { 50.0f, -50.0f }, { -50.0f, 50.0f }, { 4.0f, 12.0f } };
    for (int c = 0; c < 3; c++) {
        tiny_model *m = tiny_new(2, 0, DSV4_NUMERICS_PLAIN);
        routing_layout(m, cases[c][0], cases[c][1]);
        memset(m->bias, 0, sizeof m->bias);
        float x[DIM] = { 1.0f, 1.0f, 0 };
        x[15] = 1.0f;
        float out[DIM];
        int32_t tok = 0;
        moe_scratch *s = scratch_for(m);
        moe_forward(&m->e, 1, s, x, &tok, 1, out);
        double g = fmin(cases[c][0], 10.0), u = fmax(fmin(cases[c][1], 10.0), -10.0);
        double want = INTER * silu(g) * u * 0.5 * 1.5; /* experts 0 and 1 tie in score: weight 1/2 each */
        assert_true(fabs(out[0] - want) < 1e-4 * fabs(want) + 1e-6);
        assert_true(fabs(out[1] - want) < 1e-4 * fabs(want) + 1e-6);
        moe_scratch_free(s);
        free(m);
    }
}

/* Per token, in the order transformers states it: scores, top-k of biased
 * scores (own selection: repeated arg-max, lower index first), normalised
 * weights, Σ_k w_k·expert_k(x) + shared(x), in double. */
static int naive_clamps; /* how often the naive loop clamped: the random test must exercise it */

static void naive_moe(const tiny_model *m, int layer, const float *x, int32_t tok, double *out)
{
    const dsv4_layer_weights *lw = &m->layers[layer];
    int K = m->e.cfg.n_activated_experts;
    double sc[E], chosen[E] = { 0 }, sel_score[MAXK];
    int sel[MAXK];
    for (int i = 0; i < E; i++) {
        double z = 0.0;
        for (int d = 0; d < DIM; d++)
            z += (double)m->gate[layer][i * DIM + d] * x[d];
        sc[i] = sqrt_softplus(z);
    }
    for (int k = 0; k < K; k++) {
        if (lw->tid2eid) {
            sel[k] = lw->tid2eid[tok * K + k];
            continue;
        }
        int best = -1;
        for (int i = 0; i < E; i++)
            if (!chosen[i] && (best < 0 || sc[i] + lw->gate_bias[i] > sc[best] + lw->gate_bias[best]))
                best = i;
        chosen[best] = 1;
        sel[k] = best;
    }
    double sum = 0.0;
    for (int k = 0; k < K; k++)
        sum += sel_score[k] = sc[sel[k]];
    for (int d = 0; d < DIM; d++)
        out[d] = 0.0;
    for (int k = 0; k <= K; k++) {
        int i = k < K ? sel[k] : E;
        double w = k < K ? sel_score[k] / sum * 1.5 : 1.0;
        double h[INTER];
        for (int j = 0; j < INTER; j++) {
            double g = 0.0, u = 0.0;
            for (int d = 0; d < DIM; d++) {
                g += (double)m->w13[layer][i][0][j * DIM + d] * x[d];
                u += (double)m->w13[layer][i][1][j * DIM + d] * x[d];
            }
            naive_clamps += g > 10.0 || fabs(u) > 10.0;
            g = fmin(g, 10.0);
            u = fmax(fmin(u, 10.0), -10.0);
            h[j] = silu(g) * u;
        }
        for (int d = 0; d < DIM; d++) {
            double y = 0.0;
            for (int j = 0; j < INTER; j++)
                y += (double)m->w2[layer][i][d * INTER + j] * h[j];
            out[d] += w * y;
        }
    }
}

enum { NT = 150 };

static void random_tokens(float *x, int32_t *tok, uint64_t seed)
{
    for (int i = 0; i < NT * DIM; i++)
        x[i] = test_rand_f(&seed);
    for (int t = 0; t < NT; t++)
        tok[t] = (int32_t)(test_rand_u64(&seed) % VOCAB);
}

static void test_expert_major_equals_naive(void **state)
{
    (void)state;
    tiny_model *m = tiny_new(3, 1, DSV4_NUMERICS_PLAIN);
    tiny_randomize(m, 1234);
    static float x[NT * DIM], out[NT * DIM];
    int32_t tok[NT];
    random_tokens(x, tok, 99);
    moe_scratch *s = scratch_for(m);
    for (int layer = 0; layer < 2; layer++) {
        moe_forward(&m->e, layer, s, x, tok, NT, out);
        naive_clamps = 0;
        for (int t = 0; t < NT; t++) {
            double ref[DIM];
            naive_moe(m, layer, x + t * DIM, tok[t], ref);
            for (int d = 0; d < DIM; d++) {
                assert_true(fabs(out[t * DIM + d] - ref[d]) < 1e-4 * (1.0 + fabs(ref[d])));
            }
        }
        assert_true(naive_clamps > 0);
    }
    moe_scratch_free(s);
    free(m);
}

static void run_chunked(tiny_model *m, moe_scratch *s, int layer, const float *x, const int32_t *tok,
                        int chunk, float *out)
{
    for (int t0 = 0; t0 < NT; t0 += chunk) {
        int n = NT - t0 < chunk ? NT - t0 : chunk;
        moe_forward(&m->e, layer, s, x + t0 * DIM, tok + t0, n, out + t0 * DIM);
    }
}

static void test_chunk_and_thread_invariance(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        tiny_model *m = tiny_new(3, 1, mode ? DSV4_NUMERICS_RELEASE : DSV4_NUMERICS_PLAIN);
        tiny_randomize(m, 77 + mode);
        static float x[NT * DIM], ref[NT * DIM], out[NT * DIM];
        int32_t tok[NT];
        random_tokens(x, tok, 5 + mode);
        moe_scratch *s = scratch_for(m);
        int saved = omp_get_max_threads();
        for (int layer = 0; layer < 2; layer++) {
            omp_set_num_threads(1);
            run_chunked(m, s, layer, x, tok, NT, ref);
            const int chunks[] = { 1, 5, 16, NT };
            const int threads[] = { 1, 3, 4 };
            for (int c = 0; c < 4; c++)
                for (int th = 0; th < 3; th++) {
                    omp_set_num_threads(threads[th]);
                    run_chunked(m, s, layer, x, tok, chunks[c], out);
                    assert_memory_equal(out, ref, sizeof out);
                }
            if (mode == 1)
                for (int i = 0; i < NT * DIM; i++)
                    assert_true(ref[i] == fmt_round_bf16(ref[i]));
        }
        omp_set_num_threads(saved);
        moe_scratch_free(s);
        free(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bias_steers_selection_not_weights),
        cmocka_unit_test(test_ties_go_to_lower_index),
        cmocka_unit_test(test_hash_layer_uses_tid2eid),
        cmocka_unit_test(test_swiglu_clamp),
        cmocka_unit_test(test_expert_major_equals_naive),
        cmocka_unit_test(test_chunk_and_thread_invariance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
