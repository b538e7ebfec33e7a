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
 *   - the sum routed + shared -> bf16
 *
 * Speed: the rows of many experts are run together (a group of at most
 * GROUP_ROWS (token, expert) rows, consecutive in expert order): all their
 * w1/w3 products in one parallel region, all w2 products in another, so a
 * decode step costs two fork/joins per layer instead of three per expert.
 * Elementwise work (SwiGLU, rounding, the weighted sum) is split over the
 * team by blocks whose results do not depend on who computes them. */
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
    int group_rows;     /* rows of the expert buffers (xe, down; gate/up hold max(this, max_chunk)) */
    float *scores;      /* [max_chunk][E] router logits, then scores */
    float *biased;      /* [max_chunk][E] selection scores */
    int *topk_tmp;      /* [max_chunk][E] */
    int *sel;           /* [max_chunk][K] chosen experts */
    float *weight;      /* [max_chunk][K] their routing weights */
    int *first;         /* [E+1] start of each expert's rows in row_token */
    int *fill;          /* [E] */
    int *row_token;     /* [max_chunk*K] rows grouped by expert: token index */
    float *row_weight;  /* [max_chunk*K] and routing weight */
    float *xq;          /* [max_chunk][dim] FP8-simulated input (release) */
    float *xe;          /* [group_rows][dim] gathered input rows of a group of experts */
    float *gate, *up;   /* [max(group_rows, max_chunk)][inter] */
    float *down;        /* [group_rows][dim] */
    float *routed;      /* [max_chunk][dim] */
    linear_job jobs[LINEAR_MAX_JOBS];
    prof_counters *prof;/* where moe_forward counts (moe_set_profile); may be NULL */
};

/* (token, expert) rows run together: enough for a whole decode batch of 64
 * tokens in one group. */
#define GROUP_TOKENS 64
/* Elementwise work below this many values stays on the calling thread. */
#define PAR_MIN 16384
/* Values per elementwise work item (a multiple of the FP8 simulation's block of 128). */
#define EW_BLOCK 512

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
    size_t g = (n < GROUP_TOKENS ? n : GROUP_TOKENS) * K;
    size_t gu = g > n ? g : n;
    s->max_chunk = max_chunk;
    s->group_rows = (int)g;
    s->scores = malloc(n * E * sizeof(float));
    s->biased = malloc(n * E * sizeof(float));
    s->topk_tmp = malloc(n * E * sizeof(int));
    s->sel = malloc(n * K * sizeof(int));
    s->weight = malloc(n * K * sizeof(float));
    s->first = malloc((E + 1) * sizeof(int));
    s->fill = malloc(E * sizeof(int));
    s->row_token = malloc(n * K * sizeof(int));
    s->row_weight = malloc(n * K * sizeof(float));
    s->xq = malloc(n * dim * sizeof(float));
    s->xe = malloc(g * dim * sizeof(float));
    s->gate = malloc(gu * inter * sizeof(float));
    s->up = malloc(gu * inter * sizeof(float));
    s->down = malloc(g * dim * sizeof(float));
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

/* torch.nn.functional.softplus (beta 1, threshold 20), then sqrt. */
static inline float sqrt_softplus(float x)
{
    return sqrtf(x > 20.0f ? x : log1pf(expf(x)));
}

static void route_token(const dsv4_engine *e, const dsv4_layer_weights *lw, moe_scratch *s, int32_t token, int t)
{
    int E = e->cfg.n_routed_experts, K = e->cfg.n_activated_experts;
    float *sc = s->scores + (size_t)t * E;
    float *biased = s->biased + (size_t)t * E;
    int *tmp = s->topk_tmp + (size_t)t * E;
    int *sel = s->sel + (size_t)t * K;
    float *w = s->weight + (size_t)t * K;
    for (int i = 0; i < E; i++)
        sc[i] = sqrt_softplus(sc[i]);
    if (lw->tid2eid) {
        memcpy(sel, lw->tid2eid + (size_t)token * K, (size_t)K * sizeof *sel);
    } else if (lw->gate_bias) {
        /* The bias steers the choice only; weights come from the raw scores. */
        for (int i = 0; i < E; i++)
            biased[i] = sc[i] + lw->gate_bias[i];
        ops_topk(sel, biased, E, K, tmp);
    } else {
        ops_topk(sel, sc, E, K, tmp);
    }
    float sum = 0.0f;
    for (int k = 0; k < K; k++)
        sum += sc[sel[k]];
    if (!is_release(e))
        sum += 1e-20f;
    for (int k = 0; k < K; k++)
        w[k] = sc[sel[k]] / sum * e->cfg.route_scale;
}

static void route(const dsv4_engine *e, int layer, moe_scratch *s, const float *x,
                  const int32_t *tokens, int n)
{
    const dsv4_layer_weights *lw = &e->w.layers[layer];
    linear_matmul(e->k, &lw->gate, s->scores, x, n);
#pragma omp parallel for schedule(static) if (n >= 8)
    for (int t = 0; t < n; t++)
        route_token(e, lw, s, tokens[t], t);
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

/* SwiGLU between the two products, on m rows of gate/up (inter values each):
 * gate <- silu(min(gate, limit)) · clamp(up, ±limit) [· wr[r]], with the
 * release rounding (w1/w3 outputs and h to bf16; h FP8-simulated when w2
 * quantizes its input). wr (release only) is the routing weight applied
 * before w2, as the official Expert does. */
static void swiglu_act(const dsv4_engine *e, float *gate, float *up, int m, int inter, const float *wr,
                       int quant_h)
{
    float limit = e->cfg.swiglu_limit;
    int release = is_release(e);
    int per_row = (inter + EW_BLOCK - 1) / EW_BLOCK;
    int items = m * per_row;
    /* An exp and a few roundings per value: worth a team from a few thousand values. */
#pragma omp parallel for schedule(static) if ((long)m * inter >= PAR_MIN / 8 && items > 1)
    for (int it = 0; it < items; it++) {
        int r = it / per_row, c0 = (it % per_row) * EW_BLOCK;
        int len = inter - c0 < EW_BLOCK ? inter - c0 : EW_BLOCK;
        float *g = gate + (size_t)r * inter + c0;
        float *u = up + (size_t)r * inter + c0;
        if (release) {
            fmt_round_bf16_array(g, (size_t)len);
            fmt_round_bf16_array(u, (size_t)len);
        }
        e->k->swiglu(g, u, (size_t)len, limit, wr ? wr[r] : 1.0f); /* times 1: the same bits as none */
        if (release) {
            fmt_round_bf16_array(g, (size_t)len);
            if (quant_h) /* c0 is a multiple of the block of 128 */
                e->k->act_quant_sim(g, (size_t)len, 128);
        }
    }
}

static linear_job job(const dsv4_engine *e, const dsv4_linear *W, float *Y, size_t ldy, const float *X,
                      size_t ldx, int m)
{
    /* X is FP8-simulated exactly when W quantizes its input (moe_forward,
     * swiglu_act): the FP8/FP4 products may then be taken in bf16, exactly. */
    linear_job j = {W, Y, ldy, X, ldx, m, 0, W->rows, quantizes_input(e, W)};
    return j;
}

/* The rows [*a, returned) of the group's [g0, g1) that expert i takes
 * (none where *a is not below it). */
static inline int expert_rows(const moe_scratch *s, int i, int g0, int g1, int *a)
{
    *a = s->first[i] > g0 ? s->first[i] : g0;
    return s->first[i + 1] < g1 ? s->first[i + 1] : g1;
}

/* Rows [g0, g1) of the expert-grouped rows: gather, w1/w3 of every expert
 * present, SwiGLU, w2, then each token's sum in row (= ascending expert)
 * order. */
static void run_group(const dsv4_engine *e, const dsv4_layer_weights *lw, moe_scratch *s, const float *x,
                      const float *xq, int g0, int g1)
{
    int E = e->cfg.n_routed_experts, dim = e->cfg.dim, m = g1 - g0;
    int inter = e->cfg.moe_inter_dim;
    size_t row_bytes = (size_t)dim * sizeof(float);
    int release = is_release(e), n_jobs = 0;
    const dsv4_expert_weights *ew0 = NULL;
    /* the rows gathered over the team (a group's are ~6 MB at 512 tokens),
     * each expert's from the input its w1 reads */
#pragma omp parallel for schedule(dynamic, 8) if ((long)m * dim >= PAR_MIN && m > 1)
    for (int i = 0; i < E; i++) {
        int a, b = expert_rows(s, i, g0, g1, &a);
        const float *src = quantizes_input(e, &lw->experts[i].w1) ? xq : x;
        for (int r = a; r < b; r++)
            memcpy(s->xe + (size_t)(r - g0) * dim, src + (size_t)s->row_token[r] * dim, row_bytes);
    }
    for (int i = 0; i < E; i++) {
        int a, b = expert_rows(s, i, g0, g1, &a);
        if (a >= b)
            continue;
        const dsv4_expert_weights *ew = &lw->experts[i];
        prof_linear(s->prof, &ew->w1, b - a);
        prof_linear(s->prof, &ew->w3, b - a);
        prof_linear(s->prof, &ew->w2, b - a);
        const float *X = s->xe + (size_t)(a - g0) * dim;
        s->jobs[n_jobs++] = job(e, &ew->w1, s->gate + (size_t)(a - g0) * inter, inter, X, dim, b - a);
        s->jobs[n_jobs++] = job(e, &ew->w3, s->up + (size_t)(a - g0) * inter, inter, X, dim, b - a);
        ew0 = ew;
    }
    if (!ew0)
        return;
    linear_matmul_jobs(e->k, s->jobs, n_jobs);
    swiglu_act(e, s->gate, s->up, m, inter, release ? s->row_weight + g0 : NULL, quantizes_input(e, &ew0->w2));
    n_jobs = 0;
    for (int i = 0; i < E; i++) {
        int a, b = expert_rows(s, i, g0, g1, &a);
        if (a < b)
            s->jobs[n_jobs++] = job(e, &lw->experts[i].w2, s->down + (size_t)(a - g0) * dim, dim,
                                    s->gate + (size_t)(a - g0) * inter, inter, b - a);
    }
    linear_matmul_jobs(e->k, s->jobs, n_jobs);

    /* Split by dimensions so each token's sum keeps its row order. */
    int blocks = (dim + EW_BLOCK - 1) / EW_BLOCK;
#pragma omp parallel for schedule(static) if ((long)m * dim >= PAR_MIN && blocks > 1)
    for (int blk = 0; blk < blocks; blk++) {
        int d0 = blk * EW_BLOCK, len = dim - d0 < EW_BLOCK ? dim - d0 : EW_BLOCK;
        for (int r = g0; r < g1; r++) {
            float *acc = s->routed + (size_t)s->row_token[r] * dim + d0;
            float *y = s->down + (size_t)(r - g0) * dim + d0;
            if (release) {
                fmt_round_bf16_array(y, (size_t)len);
                for (int d = 0; d < len; d++)
                    acc[d] += y[d];
            } else {
                float w = s->row_weight[r];
                for (int d = 0; d < len; d++)
                    acc[d] += y[d] * w;
            }
        }
    }
}

/* Where the group of rows starting at g0 ends: at most group_rows on, at
 * the last expert boundary that allows, so that an expert is not split
 * between two groups (its weights read twice, each time for fewer tokens);
 * only an expert with more rows than a group is. */
static int group_end(const moe_scratch *s, int E, int total, int g0)
{
    int limit = total - g0 < s->group_rows ? total : g0 + s->group_rows;
    if (limit == total)
        return total;
    int end = limit;
    for (int i = E; i > 0 && s->first[i] > g0; i--)
        if (s->first[i] <= limit) {
            end = s->first[i];
            break;
        }
    return end;
}

static void shared_expert(const dsv4_engine *e, const dsv4_expert_weights *ew, moe_scratch *s, const float *x,
                          const float *xq, int n, float *out)
{
    int inter = ew->w1.rows, dim = e->cfg.dim;
    const float *src = quantizes_input(e, &ew->w1) ? xq : x;
    prof_linear(s->prof, &ew->w1, n);
    prof_linear(s->prof, &ew->w3, n);
    prof_linear(s->prof, &ew->w2, n);
    s->jobs[0] = job(e, &ew->w1, s->gate, inter, src, dim, n);
    s->jobs[1] = job(e, &ew->w3, s->up, inter, src, dim, n);
    linear_matmul_jobs(e->k, s->jobs, 2);
    swiglu_act(e, s->gate, s->up, n, inter, NULL, quantizes_input(e, &ew->w2));
    s->jobs[0] = job(e, &ew->w2, out, dim, s->gate, inter, n);
    linear_matmul_jobs(e->k, s->jobs, 1);
}

void moe_forward(const dsv4_engine *e, int layer, moe_scratch *s, const float *x,
                 const int32_t *tokens, int n, float *out)
{
    const dsv4_layer_weights *lw = &e->w.layers[layer];
    int dim = e->cfg.dim, K = e->cfg.n_activated_experts;
    size_t row_bytes = (size_t)dim * sizeof(float);
    size_t total = (size_t)n * dim;
    int release = is_release(e);
    if (n <= 0)
        return;

    double t0 = prof_begin(s->prof);
    prof_linear(s->prof, &lw->gate, n);
    route(e, layer, s, x, tokens, n);
    group_by_expert(e, s, n);

    /* The same FP8-simulated input feeds every FP8/FP4 expert linear. */
    if (release)
        linear_act_quant_rows(e->k, s->xq, x, n, dim);

    /* zeroed over the team: at 512 tokens 8 MB a layer, which one thread
     * clears while the others wait */
#pragma omp parallel for schedule(static) if (total >= PAR_MIN && n > 1)
    for (int t = 0; t < n; t++)
        memset(s->routed + (size_t)t * dim, 0, row_bytes);
    for (int g0 = 0, g1; g0 < n * K; g0 = g1) {
        g1 = group_end(s, e->cfg.n_routed_experts, n * K, g0);
        run_group(e, lw, s, x, s->xq, g0, g1);
    }

    prof_end(s->prof, DSV4_PROF_MOE_ROUTED, t0);
    t0 = prof_begin(s->prof);
    int has_shared = lw->shared.w1.fmt != DSV4_WF_NONE;
    if (has_shared)
        shared_expert(e, &lw->shared, s, x, s->xq, n, out);
    int blocks = (int)((total + EW_BLOCK - 1) / EW_BLOCK);
#pragma omp parallel for schedule(static) if (total >= PAR_MIN)
    for (int blk = 0; blk < blocks; blk++) {
        size_t i0 = (size_t)blk * EW_BLOCK, len = total - i0 < EW_BLOCK ? total - i0 : EW_BLOCK;
        if (release && has_shared)
            fmt_round_bf16_array(out + i0, len);
        for (size_t i = i0; i < i0 + len; i++)
            out[i] = has_shared ? s->routed[i] + out[i] : s->routed[i];
        if (release)
            fmt_round_bf16_array(out + i0, len);
    }
    prof_end(s->prof, DSV4_PROF_MOE_SHARED, t0);
}
