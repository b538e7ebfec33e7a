/* The layer loop: embedding -> hc_mult streams -> per layer mHC(attn_norm ->
 * attention) then mHC(ffn_norm -> MoE) -> hc head -> final norm -> logits.
 * Layer-major over a chunk: every layer sees all tokens of the chunk, so each
 * weight matrix is read once per chunk.
 *
 * Plain numerics follow transformers' DeepseekV4Model in float32.
 * Release numerics add the official reference's rounding (inference/model.py,
 * where activations are bf16 between modules); the points handled here are
 *   - u = Σ pre_a X_a (Block.hc_pre returns y.to(bf16))          -> bf16
 *   - attn_norm / ffn_norm outputs (RMSNorm casts to x's dtype)   -> bf16
 *   - attention output (bf16 in the reference; attention.c already
 *     rounds, rounding again is the identity)                      -> bf16
 *   - X' = post·f + comb^T X (Block.hc_post: y.type_as(x))         -> bf16
 *   - hc head output (ParallelHead.hc_head: y.to(dtype))           -> bf16
 *   - final norm output (RMSNorm, bf16 in)                         -> bf16
 *   - the mHC mixes are (fn·v)·rsqrt there, fn·(v·rsqrt) in transformers (hc.c)
 *   - logits: fp32 linear on the bf16 vector (get_logits), no FP8 simulation
 * MoE rounding points are listed in moe.c. The embedding rows are bf16 in the
 * checkpoint, so the residual streams start exactly representable. */
#include "model.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../simd/formats.h"
#include "attention.h"
#include "error.h"
#include "forward.h"
#include "hc.h"
#include "linear.h"
#include "moe.h"
#include "profile.h"
#include "rope.h"

int model_tables_new(model_tables **out, const dsv4_config *cfg, dsv4_error *err)
{
    *out = NULL;
    if (cfg->rope_dim <= 0 || cfg->rope_dim % 2)
        return dsv4_fail(err, "config: qk_rope_head_dim %d must be positive and even", cfg->rope_dim);
    int pairs = cfg->rope_dim / 2;
    model_tables *t = calloc(1, sizeof *t);
    if (t) {
        t->inv_freq_window = malloc((size_t)pairs * sizeof(float));
        t->inv_freq_compressed = malloc((size_t)pairs * sizeof(float));
    }
    if (!t || !t->inv_freq_window || !t->inv_freq_compressed) {
        model_tables_free(t);
        return dsv4_fail(err, "out of memory for RoPE tables (%d pairs)", pairs);
    }
    rope_inv_freq(t->inv_freq_window, cfg, 0);
    rope_inv_freq(t->inv_freq_compressed, cfg, 1);
    *out = t;
    return 0;
}

void model_tables_free(model_tables *t)
{
    if (!t)
        return;
    free(t->inv_freq_window);
    free(t->inv_freq_compressed);
    free(t);
}

struct forward_state {
    int n_layers;
    attn_state **attn;       /* [n_layers] */
    moe_scratch *moe;
    float *X, *X_next;       /* [chunk][hc][dim] residual streams, swapped after each sub-layer */
    float *hc_scratch;       /* [chunk][hc*dim] */
    float *mixes;            /* [chunk][(2+hc)*hc] */
    float *pre, *post;       /* [chunk][hc] */
    float *comb;             /* [chunk][hc*hc] */
    float *u, *normed, *f;   /* [chunk][dim]: collapsed input, its norm, sub-layer output */
    int cap;                 /* tokens per call the buffers above (and moe) take */
    prof_counters prof;      /* this sequence's speed accounting */
    long position;           /* tokens of the sequence run so far */
};

int forward_state_capacity(const forward_state *st)
{
    return st->cap;
}

long forward_state_position(const forward_state *st)
{
    return st->position;
}

size_t forward_state_kv_bytes(const forward_state *st)
{
    size_t bytes = 0;
    for (int l = 0; l < st->n_layers; l++)
        bytes += attn_state_kv_bytes(st->attn[l]);
    return bytes;
}

prof_counters *forward_state_profile(forward_state *st)
{
    return &st->prof;
}

static void free_chunk_buffers(forward_state *st)
{
    moe_scratch_free(st->moe);
    st->moe = NULL;
    float **bufs[] = {&st->X, &st->X_next, &st->hc_scratch, &st->mixes, &st->pre, &st->post, &st->comb,
                      &st->u, &st->normed, &st->f};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    st->cap = 0;
}

static float *alloc_floats(size_t n)
{
    return malloc(n * sizeof(float));
}

/* Buffers for n tokens per call; on failure none are left and cap is 0. */
static int alloc_chunk_buffers(forward_state *st, const dsv4_engine *e, int n_tokens, dsv4_error *err)
{
    const dsv4_config *c = &e->cfg;
    size_t n = (size_t)n_tokens, hc = (size_t)c->hc_mult, dim = (size_t)c->dim;
    st->X = alloc_floats(n * hc * dim);
    st->X_next = alloc_floats(n * hc * dim);
    st->hc_scratch = alloc_floats(n * hc * dim);
    st->mixes = alloc_floats(n * (2 + hc) * hc);
    st->pre = alloc_floats(n * hc);
    st->post = alloc_floats(n * hc);
    st->comb = alloc_floats(n * hc * hc);
    st->u = alloc_floats(n * dim);
    st->normed = alloc_floats(n * dim);
    st->f = alloc_floats(n * dim);
    if (!st->X || !st->X_next || !st->hc_scratch || !st->mixes || !st->pre || !st->post || !st->comb ||
        !st->u || !st->normed || !st->f) {
        free_chunk_buffers(st);
        return dsv4_fail(err, "out of memory for the activations of a %d-token chunk", n_tokens);
    }
    if (moe_scratch_new(&st->moe, e, n_tokens, err)) {
        free_chunk_buffers(st);
        return -1;
    }
    moe_set_profile(st->moe, &st->prof);
    st->cap = n_tokens;
    return 0;
}

int forward_state_reserve(forward_state *st, const dsv4_engine *e, int n)
{
    if (n <= st->cap || n > e->opt.prefill_chunk)
        return st->cap;
    int old = st->cap;
    free_chunk_buffers(st);
    dsv4_error ignored;
    if (alloc_chunk_buffers(st, e, n, &ignored) == 0)
        return st->cap;
    /* Back to what worked before (freed just now, so it fits again unless
     * something else took the memory meanwhile). */
    if (alloc_chunk_buffers(st, e, old, &ignored) == 0)
        return st->cap;
    return alloc_chunk_buffers(st, e, FORWARD_CHUNK, &ignored) == 0 ? st->cap : 0;
}

void forward_state_trim(forward_state *st, const dsv4_engine *e)
{
    if (st->cap <= FORWARD_CHUNK)
        return;
    free_chunk_buffers(st);
    dsv4_error ignored;
    alloc_chunk_buffers(st, e, FORWARD_CHUNK, &ignored);
}

void forward_state_free(forward_state *st)
{
    if (!st)
        return;
    if (st->attn)
        for (int l = 0; l < st->n_layers; l++)
            attn_state_free(st->attn[l]);
    free(st->attn);
    moe_scratch_free(st->moe);
    free(st->X);
    free(st->X_next);
    free(st->hc_scratch);
    free(st->mixes);
    free(st->pre);
    free(st->post);
    free(st->comb);
    free(st->u);
    free(st->normed);
    free(st->f);
    free(st);
}

int forward_state_new(forward_state **out, const dsv4_engine *e, int max_tokens, dsv4_error *err)
{
    const dsv4_config *c = &e->cfg;
    *out = NULL;
    if (c->hc_mult <= 0 || c->dim <= 0 || c->n_layers <= 0)
        return dsv4_fail(err, "config: hc_mult %d, hidden_size %d, num_hidden_layers %d must be positive",
                         c->hc_mult, c->dim, c->n_layers);
    forward_state *st = calloc(1, sizeof *st);
    if (!st)
        return dsv4_fail(err, "out of memory for the session state");
    st->n_layers = c->n_layers;
    st->attn = calloc((size_t)c->n_layers, sizeof *st->attn);
    if (!st->attn) {
        forward_state_free(st);
        return dsv4_fail(err, "out of memory for the session state");
    }
    if (alloc_chunk_buffers(st, e, FORWARD_CHUNK, err)) {
        forward_state_free(st);
        return -1;
    }
    for (int l = 0; l < c->n_layers; l++) {
        if (attn_state_new(&st->attn[l], e, l, max_tokens, FORWARD_CHUNK, err)) {
            forward_state_free(st);
            return -1;
        }
    }
    *out = st;
    return 0;
}

void forward_state_reset(forward_state *st)
{
    for (int l = 0; l < st->n_layers; l++)
        attn_state_reset(st->attn[l]);
    st->position = 0;
}

/* out[t] = RMSNorm(in[t]) with weight w, for t < n; in release numerics
 * in[t] is first rounded to bf16 in place (the callers' input is a bf16
 * activation there) and out[t] rounded after. One token is a few
 * microseconds: a team pays off from two. */
static void rmsnorm_rows(const dsv4_engine *e, float *out, float *in, const float *w, int n)
{
    int dim = e->cfg.dim, release = e->opt.numerics == DSV4_NUMERICS_RELEASE;
#pragma omp parallel for schedule(static) if (n > 1)
    for (int t = 0; t < n; t++) {
        float *x = in + (size_t)t * dim, *y = out + (size_t)t * dim;
        if (release)
            fmt_round_bf16_array(x, (size_t)dim);
        ops_rmsnorm(y, x, w, dim, e->cfg.norm_eps);
        if (release)
            fmt_round_bf16_array(y, (size_t)dim);
    }
}

static void swap_streams(forward_state *st)
{
    float *tmp = st->X;
    st->X = st->X_next;
    st->X_next = tmp;
}

/* One mHC-wrapped sub-layer: collapse the streams, norm, run it, spread back. */
static void hc_collapse(const dsv4_engine *e, forward_state *st, const dsv4_hc_weights *hw,
                        const float *norm_w, int n)
{
    double rows = (2.0 + e->cfg.hc_mult) * e->cfg.hc_mult, cols = (double)e->cfg.hc_mult * e->cfg.dim;
    prof_bytes(&st->prof, rows * cols * sizeof(float), 2.0 * rows * cols * n);
    hc_pre(e, hw, st->X, n, st->hc_scratch, st->mixes, st->pre, st->post, st->comb, st->u);
    rmsnorm_rows(e, st->normed, st->u, norm_w, n);
}

static void hc_expand(const dsv4_engine *e, forward_state *st, int n)
{
    int hc = e->cfg.hc_mult, dim = e->cfg.dim;
    if (e->opt.numerics == DSV4_NUMERICS_RELEASE)
        hc_post_bf16(st->X, st->f, st->post, st->comb, n, hc, dim, st->X_next);
    else
        hc_post(st->X, st->f, st->post, st->comb, n, hc, dim, st->X_next);
    swap_streams(st);
}

static void compute_logits(const dsv4_engine *e, forward_state *st, const float *X, int n, float *logits)
{
    int dim = e->cfg.dim;
    hc_head(e, X, n, st->hc_scratch, st->mixes, st->u);
    rmsnorm_rows(e, st->normed, st->u, e->w.norm, n);
    prof_linear(&st->prof, &e->w.head, n);
    prof_bytes(&st->prof, (double)e->cfg.hc_mult * e->cfg.hc_mult * dim * sizeof(float), 0);
    if (e->opt.numerics == DSV4_NUMERICS_RELEASE) /* normed is bf16 there (rmsnorm_rows) */
        linear_matmul_e4m3act(e->k, &e->w.head, logits, st->normed, n);
    else
        linear_matmul(e->k, &e->w.head, logits, st->normed, n);
}

static const int kind_part[] = {
    [DSV4_LAYER_WINDOW] = DSV4_PROF_ATTN_WINDOW, [DSV4_LAYER_CSA] = DSV4_PROF_ATTN_CSA, [DSV4_LAYER_HCA] = DSV4_PROF_ATTN_HCA};

/* The layer loop over n rows; sc holds the scratch (and counts), row i is the
 * next token of the sequence whose state is rows[i] (rows NULL: all of sc's
 * own sequence). Rows of one sequence are consecutive tokens in order. The
 * attention runs in slices of FORWARD_CHUNK rows (its scratch), the rest over
 * all n. logits: [n][vocab] for every row, or the last row only. */
static void forward_rows(const dsv4_engine *e, forward_state *sc, forward_state *const *rows,
                         const int32_t *tokens, int n, float *logits, int all_logits)
{
    const dsv4_config *c = &e->cfg;
    int hc = c->hc_mult, dim = c->dim;
    prof_counters *prof = &sc->prof;
    double t_start = prof_now(), t0 = t_start;

    for (int t = 0; t < n; t++) {
        float *x0 = sc->X + (size_t)t * hc * dim;
        linear_row(&e->w.embed, tokens[t], x0);
        for (int a = 1; a < hc; a++)
            memcpy(x0 + (size_t)a * dim, x0, (size_t)dim * sizeof(float));
        prof_bytes(prof, prof_linear_bytes(&e->w.embed) / e->w.embed.rows, 0);
    }

    for (int l = 0; l < c->n_layers; l++) {
        const dsv4_layer_weights *lw = &e->w.layers[l];
        attn_state *sa = sc->attn[l];

        t0 = prof_begin(prof);
        hc_collapse(e, sc, &lw->hc_attn, lw->attn_norm, n);
        prof_end(prof, DSV4_PROF_HC, t0);

        t0 = prof_begin(prof);
        double inner = prof->s.part_seconds[DSV4_PROF_INDEXER] + prof->s.part_seconds[DSV4_PROF_COMPRESSOR];
        for (int s0 = 0; s0 < n; s0 += FORWARD_CHUNK) {
            int m = n - s0 < FORWARD_CHUNK ? n - s0 : FORWARD_CHUNK;
            attention_project(e, l, sa, sc->normed + (size_t)s0 * dim, m, prof);
            if (rows && m > 1 && m >= omp_get_max_threads()) {
                /* Rows of a batch step belong to distinct sequences (batch.c):
                 * their cores touch disjoint states and scratch rows, so they
                 * run side by side, each whole on one thread (the per-head
                 * loop inside stays serial there). Counts go to per-row
                 * counters, added in row order. Fewer rows than threads: one
                 * row at a time, heads split over the team. */
                prof_counters row_prof[FORWARD_CHUNK];
                double wall = prof_begin(prof);
#pragma omp parallel for schedule(dynamic, 1)
                for (int i = 0; i < m; i++) {
                    row_prof[i] = (prof_counters){.enabled = prof->enabled};
                    double r0 = prof_begin(prof);
                    attention_core(e, l, rows[s0 + i]->attn[l], sa, i, &row_prof[i]);
                    row_prof[i].s.seconds = prof->enabled ? prof_now() - r0 : 0.0;
                }
                if (prof->enabled)
                    wall = prof_now() - wall;
                prof_add_rows(prof, row_prof, m, wall);
            } else if (rows) {
                for (int i = 0; i < m; i++)
                    attention_core(e, l, rows[s0 + i]->attn[l], sa, i, prof);
            } else {
                attention_core_chunk(e, l, sa, m, prof);
            }
            attention_output(e, l, sa, m, sc->f + (size_t)s0 * dim, prof);
        }
        if (prof->enabled) {
            inner = prof->s.part_seconds[DSV4_PROF_INDEXER] + prof->s.part_seconds[DSV4_PROF_COMPRESSOR] - inner;
            prof->s.part_seconds[kind_part[c->kind[l]]] += prof_now() - t0 - inner;
        }

        t0 = prof_begin(prof);
        hc_expand(e, sc, n);
        hc_collapse(e, sc, &lw->hc_ffn, lw->ffn_norm, n);
        prof_end(prof, DSV4_PROF_HC, t0);

        moe_forward(e, l, sc->moe, sc->normed, tokens, n, sc->f);

        t0 = prof_begin(prof);
        hc_expand(e, sc, n);
        prof_end(prof, DSV4_PROF_HC, t0);
    }

    t0 = prof_begin(prof);
    if (logits && all_logits)
        compute_logits(e, sc, sc->X, n, logits);
    else if (logits)
        compute_logits(e, sc, sc->X + (size_t)(n - 1) * hc * dim, 1, logits);
    prof_end(prof, DSV4_PROF_HEAD, t0);

    if (rows)
        for (int i = 0; i < n; i++)
            rows[i]->position++;
    else
        sc->position += n;
    double total = prof_now() - t_start;
    prof->s.seconds += total;
    prof->s.tokens += n;
    if (prof->enabled) {
        double known = 0;
        for (int p = 0; p < DSV4_PROF_OTHER; p++)
            known += prof->s.part_seconds[p];
        /* "other" is what the parts do not cover, kept as a running remainder. */
        prof->s.part_seconds[DSV4_PROF_OTHER] = prof->s.seconds - known;
    }
}

void model_forward(const dsv4_engine *e, forward_state *st, const int32_t *tokens, int n, int pos0,
                   float *logits, int all_logits)
{
    if (n <= 0 || n > st->cap || pos0 != forward_state_position(st))
        return;
    forward_rows(e, st, NULL, tokens, n, logits, all_logits);
}

void model_forward_batch(const dsv4_engine *e, forward_state *const *states, const int32_t *tokens, int n,
                         float *logits)
{
    if (n <= 0 || n > FORWARD_CHUNK || n > states[0]->cap)
        return;
    forward_rows(e, states[0], states, tokens, n, logits, 1);
}
