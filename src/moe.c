/* MoE feed-forward, expert-major: all tokens of a chunk are routed first,
 * then each expert with tokens runs once over the rows routed to it (its
 * weights are read once per chunk), and each token's routed sum is
 * accumulated in ascending expert order. That order, and the per-row
 * results of the batch-size-invariant kernels, make the output independent
 * of the chunk size and of the thread count.
 *
 * Plain numerics follow transformers (DeepseekV4TopKRouter / HashRouter /
 * Experts / MLP): the routing weight multiplies the expert's output after w2,
 * weights are normalised by (Σ + 1e-20).
 * Release numerics follow the official MoE / Gate / Expert:
 *   - gate: fp32 linear on the (bf16) input, no activation quantisation
 *   - weights normalised by Σ (no epsilon)
 *   - inputs of FP8/FP4 linears (w1, w3, w2; routed and shared): act_quant, blocks of 128
 *   - w1 / w3 outputs -> bf16 (the linears return bf16), then clamp, silu, ·up in fp32
 *   - the routing weight multiplies h before w2; h -> bf16
 *   - each expert's w2 output -> bf16, summed in fp32; shared output -> bf16
 *   - the sum routed + shared -> bf16 */
#include "moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../simd/formats.h"
#include "error.h"
#include "linear.h"
#include "profile.h"

struct moe_scratch {
    int max_chunk;
    float *scores;      /* [max_chunk][E] router logits, then scores */
    float *biased;      /* [E] selection scores of one token */
    int *topk_tmp;      /* [E] */
    int *sel;           /* [max_chunk][K] chosen experts */
    float *weight;      /* [max_chunk][K] their routing weights */
    int *first;         /* [E+1] start of each expert's rows in row_token */
    int *fill;          /* [E] */
    int *row_token;     /* [max_chunk*K] rows grouped by expert: token index */
    float *row_weight;  /* [max_chunk*K] and routing weight */
    float *xq;          /* [max_chunk][dim] FP8-simulated input (release) */
    float *xe;          /* [max_chunk][dim] gathered input rows of one expert */
    float *gate, *up;   /* [max_chunk][inter] */
    float *down;        /* [max_chunk][dim] */
    float *routed;      /* [max_chunk][dim] */
    prof_counters *prof;/* where moe_forward counts (moe_set_profile); may be NULL */
};

void moe_set_profile(moe_scratch *s, struct prof_counters *prof)
{
    s->prof = prof;
}

void moe_scratch_free(moe_scratch *s)
{
    if (!s)
        return;
    free(s->scores);
    free(s->biased);
    free(s->topk_tmp);
    free(s->sel);
    free(s->weight);
    free(s->first);
    free(s->fill);
    free(s->row_token);
    free(s->row_weight);
    free(s->xq);
    free(s->xe);
    free(s->gate);
    free(s->up);
    free(s->down);
    free(s->routed);
    free(s);
}

int moe_scratch_new(moe_scratch **out, const dsv4_engine *e, int max_chunk, dsv4_error *err)
{
    const dsv4_config *c = &e->cfg;
    *out = NULL;
    if (max_chunk <= 0 || c->n_routed_experts <= 0 || c->n_activated_experts <= 0 ||
        c->n_activated_experts > c->n_routed_experts || c->moe_inter_dim <= 0)
        return dsv4_fail(err, "MoE: %d routed experts, %d active, intermediate size %d, chunk %d: need 0 < active <= routed",
                         c->n_routed_experts, c->n_activated_experts, c->moe_inter_dim, max_chunk);
    moe_scratch *s = calloc(1, sizeof *s);
    if (!s)
        return dsv4_fail(err, "out of memory for MoE scratch");
    size_t n = (size_t)max_chunk, E = (size_t)c->n_routed_experts, K = (size_t)c->n_activated_experts;
    size_t dim = (size_t)c->dim, inter = (size_t)c->moe_inter_dim;
    /* Sized by the bound weights too, in case the shared expert is wider. */
    for (int l = 0; e->w.layers && l < c->n_layers; l++)
        if ((size_t)e->w.layers[l].shared.w1.rows > inter)
            inter = (size_t)e->w.layers[l].shared.w1.rows;
    s->max_chunk = max_chunk;
    s->scores = malloc(n * E * sizeof(float));
    s->biased = malloc(E * sizeof(float));
    s->topk_tmp = malloc(E * sizeof(int));
    s->sel = malloc(n * K * sizeof(int));
    s->weight = malloc(n * K * sizeof(float));
    s->first = malloc((E + 1) * sizeof(int));
    s->fill = malloc(E * sizeof(int));
    s->row_token = malloc(n * K * sizeof(int));
    s->row_weight = malloc(n * K * sizeof(float));
    s->xq = malloc(n * dim * sizeof(float));
    s->xe = malloc(n * dim * sizeof(float));
    s->gate = malloc(n * inter * sizeof(float));
    s->up = malloc(n * inter * sizeof(float));
    s->down = malloc(n * dim * sizeof(float));
    s->routed = malloc(n * dim * sizeof(float));
    if (!s->scores || !s->biased || !s->topk_tmp || !s->sel || !s->weight || !s->first || !s->fill ||
        !s->row_token || !s->row_weight || !s->xq || !s->xe || !s->gate || !s->up || !s->down || !s->routed) {
        moe_scratch_free(s);
        return dsv4_fail(err, "out of memory for MoE scratch (%d tokens)", max_chunk);
    }
    *out = s;
    return 0;
}

static int is_release(const dsv4_engine *e)
{
    return e->opt.numerics == DSV4_NUMERICS_RELEASE;
}

/* The official linear() quantises its input to FP8 only for FP8/FP4 weights. */
static int quantizes_input(const dsv4_engine *e, const dsv4_linear *W)
{
    return is_release(e) && (W->fmt == DSV4_WF_FP8 || W->fmt == DSV4_WF_FP4);
}

static void act_quant_rows(float *x, int n, int cols)
{
    for (int t = 0; t < n; t++)
        fmt_act_quant_sim(x + (size_t)t * cols, (size_t)cols, 128);
}

/* torch.nn.functional.softplus (beta 1, threshold 20), then sqrt. */
static inline float sqrt_softplus(float x)
{
    return sqrtf(x > 20.0f ? x : log1pf(expf(x)));
}

static void route(const dsv4_engine *e, int layer, moe_scratch *s, const float *x,
                  const int32_t *tokens, int n)
{
    const dsv4_layer_weights *lw = &e->w.layers[layer];
    int E = e->cfg.n_routed_experts, K = e->cfg.n_activated_experts;
    linear_matmul(e->k, &lw->gate, s->scores, x, n);
    for (int t = 0; t < n; t++) {
        float *sc = s->scores + (size_t)t * E;
        int *sel = s->sel + (size_t)t * K;
        float *w = s->weight + (size_t)t * K;
        for (int i = 0; i < E; i++)
            sc[i] = sqrt_softplus(sc[i]);
        if (lw->tid2eid) {
            memcpy(sel, lw->tid2eid + (size_t)tokens[t] * K, (size_t)K * sizeof *sel);
        } else if (lw->gate_bias) {
            /* The bias steers the choice only; weights come from the raw scores. */
            for (int i = 0; i < E; i++)
                s->biased[i] = sc[i] + lw->gate_bias[i];
            ops_topk(sel, s->biased, E, K, s->topk_tmp);
        } else {
            ops_topk(sel, sc, E, K, s->topk_tmp);
        }
        float sum = 0.0f;
        for (int k = 0; k < K; k++)
            sum += sc[sel[k]];
        if (!is_release(e))
            sum += 1e-20f;
        for (int k = 0; k < K; k++)
            w[k] = sc[sel[k]] / sum * e->cfg.route_scale;
    }
}

/* Groups the (token, slot) pairs by expert: rows of expert i are
 * first[i] .. first[i+1]-1, in ascending token order. */
static void group_by_expert(const dsv4_engine *e, moe_scratch *s, int n)
{
    int E = e->cfg.n_routed_experts, K = e->cfg.n_activated_experts;
    memset(s->first, 0, (size_t)(E + 1) * sizeof(int));
    for (int r = 0; r < n * K; r++)
        s->first[s->sel[r] + 1]++;
    for (int i = 0; i < E; i++)
        s->first[i + 1] += s->first[i];
    memcpy(s->fill, s->first, (size_t)E * sizeof(int));
    for (int t = 0; t < n; t++)
        for (int k = 0; k < K; k++) {
            int row = s->fill[s->sel[t * K + k]]++;
            s->row_token[row] = t;
            s->row_weight[row] = s->weight[t * K + k];
        }
}

/* out[r] = w2 · (silu(min(w1·X[r], limit)) · clamp(w3·X[r], ±limit) [· wr[r]]) for r < m.
 * wr (release only) is the routing weight applied before w2, as the official Expert does. */
static void swiglu(const dsv4_engine *e, const dsv4_expert_weights *ew, moe_scratch *s,
                   const float *X, int m, const float *wr, float *out)
{
    int inter = ew->w1.rows;
    float limit = e->cfg.swiglu_limit;
    prof_linear(s->prof, &ew->w1, m);
    prof_linear(s->prof, &ew->w3, m);
    prof_linear(s->prof, &ew->w2, m);
    /* X is FP8-simulated exactly when w1 quantizes its input (moe_forward):
     * then the FP8/FP4 products may be taken in bf16, exactly. */
    void (*mm)(const dsv4_kernels *, const dsv4_linear *, float *, const float *, int) =
        quantizes_input(e, &ew->w1) ? linear_matmul_e4m3act : linear_matmul;
    mm(e->k, &ew->w1, s->gate, X, m);
    mm(e->k, &ew->w3, s->up, X, m);
    if (is_release(e)) {
        fmt_round_bf16_array(s->gate, (size_t)m * inter);
        fmt_round_bf16_array(s->up, (size_t)m * inter);
    }
    for (int r = 0; r < m; r++) {
        float *g = s->gate + (size_t)r * inter;
        const float *u = s->up + (size_t)r * inter;
        for (int i = 0; i < inter; i++) {
            float gi = g[i], ui = u[i];
            if (limit > 0.0f) {
                /* Comparisons, not fminf/fmaxf, so a NaN propagates as in torch.clamp. */
                gi = gi > limit ? limit : gi;
                ui = ui > limit ? limit : ui < -limit ? -limit : ui;
            }
            float h = gi / (1.0f + expf(-gi)) * ui;
            g[i] = wr ? wr[r] * h : h;
        }
    }
    if (is_release(e)) {
        fmt_round_bf16_array(s->gate, (size_t)m * inter);
        if (quantizes_input(e, &ew->w2))
            act_quant_rows(s->gate, m, inter);
    }
    (quantizes_input(e, &ew->w2) ? linear_matmul_e4m3act : linear_matmul)(e->k, &ew->w2, out, s->gate, m);
    if (is_release(e))
        fmt_round_bf16_array(out, (size_t)m * e->cfg.dim);
}

void moe_forward(const dsv4_engine *e, int layer, moe_scratch *s, const float *x,
                 const int32_t *tokens, int n, float *out)
{
    const dsv4_layer_weights *lw = &e->w.layers[layer];
    int E = e->cfg.n_routed_experts, dim = e->cfg.dim;
    size_t row_bytes = (size_t)dim * sizeof(float);
    if (n <= 0)
        return;

    double t0 = prof_begin(s->prof);
    prof_linear(s->prof, &lw->gate, n);
    route(e, layer, s, x, tokens, n);
    group_by_expert(e, s, n);

    /* The same FP8-simulated input feeds every FP8/FP4 expert linear. */
    if (is_release(e)) {
        memcpy(s->xq, x, (size_t)n * row_bytes);
        act_quant_rows(s->xq, n, dim);
    }

    memset(s->routed, 0, (size_t)n * row_bytes);
    for (int i = 0; i < E; i++) {
        const dsv4_expert_weights *ew = &lw->experts[i];
        const float *src = quantizes_input(e, &ew->w1) ? s->xq : x;
        /* An expert gets at most one row per (token, slot); a hash table
         * naming an expert twice for a token can exceed the chunk, hence the batches. */
        for (int r0 = s->first[i]; r0 < s->first[i + 1]; r0 += s->max_chunk) {
            int m = s->first[i + 1] - r0;
            if (m > s->max_chunk)
                m = s->max_chunk;
            for (int r = 0; r < m; r++)
                memcpy(s->xe + (size_t)r * dim, src + (size_t)s->row_token[r0 + r] * dim, row_bytes);
            swiglu(e, ew, s, s->xe, m, is_release(e) ? s->row_weight + r0 : NULL, s->down);
            for (int r = 0; r < m; r++) {
                float *acc = s->routed + (size_t)s->row_token[r0 + r] * dim;
                const float *y = s->down + (size_t)r * dim;
                if (is_release(e)) {
                    for (int d = 0; d < dim; d++)
                        acc[d] += y[d];
                } else {
                    float w = s->row_weight[r0 + r];
                    for (int d = 0; d < dim; d++)
                        acc[d] += y[d] * w;
                }
            }
        }
    }

    prof_end(s->prof, DSV4_PROF_MOE_ROUTED, t0);
    t0 = prof_begin(s->prof);
    if (lw->shared.w1.fmt != DSV4_WF_NONE) {
        const float *src = quantizes_input(e, &lw->shared.w1) ? s->xq : x;
        swiglu(e, &lw->shared, s, src, n, NULL, out);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            out[i] = s->routed[i] + out[i];
    } else {
        memcpy(out, s->routed, (size_t)n * row_bytes);
    }
    if (is_release(e))
        fmt_round_bf16_array(out, (size_t)n * dim);
    prof_end(s->prof, DSV4_PROF_MOE_SHARED, t0);
}
