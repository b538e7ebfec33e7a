/* Attention of one layer: sliding window + (CSA) top-k compressed entries
 * chosen by the lightning indexer, or (HCA) all compressed entries.
 *
 * Plain numerics are transformers 5.17's DeepseekV4Attention in float32.
 * Release numerics add the official inference/model.py rounding points on
 * the same code path (each one an `if (release)` below):
 *   - x (attn_norm output) is bf16;
 *   - every FP8-weight linear (wq_a, wq_b, wkv, wo_b, indexer.wq_b; whichever
 *     are FP8 in the file) gets its input FP8-simulated per row, block 128
 *     (act_quant), and returns bf16; wo_a runs on the dequantized weights
 *     with a bf16 (unquantized) input and returns bf16; weights_proj (bf16
 *     weights) returns bf16;
 *   - q_norm and kv_norm return bf16; the per-head q norm runs in bf16 as the
 *     reference's `q *= rsqrt(q.square().mean(-1) + eps)` on a bf16 tensor
 *     (square, mean, +eps, rsqrt, product each rounded to bf16);
 *   - RoPE (fp32 math) results are rounded to bf16: q, kv, compressed
 *     entries, indexer q and keys, and the inverse RoPE of the output;
 *   - window kv: FP8 simulation of the non-rope dims, block 64, after RoPE;
 *   - compressor: projections, state and pooling in fp32; the pooled entry is
 *     rounded to bf16, normed (bf16), RoPE'd (bf16), then the main entry gets
 *     FP8 simulation of its non-rope dims (block 64) and the indexer's key
 *     Hadamard rotation (bf16) + FP4 simulation (block 32);
 *   - indexer query: RoPE (bf16), Hadamard (bf16), FP4 simulation (block 32);
 *     head weights bf16(bf16(weights_proj·x) * dim^-1/2 * n_heads^-1/2);
 *     scores in bf16 (indexer.c);
 *   - attention probabilities rounded to bf16 before the PV product
 *     (attend's bf16_probs), the output rounded to bf16.
 *
 * Where the oracle computes a prefill all at once with masks, this file runs
 * the tokens of a chunk one after the other against the layer's state, which
 * gives the same visibility: query t sees window positions
 * max(0, t-window+1)..t and compressed entries j < floor((t+1)/ratio) (HCA:
 * all of them; CSA: the indexer's top-k among them), all in one softmax with
 * the sink. An entry is completed by token (j+1)·ratio-1 before that token
 * attends, so it is visible to it. */
#include "attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compressor.h"
#include "error.h"
#include "indexer.h"
#include "linear.h"
#include "model.h"
#include "profile.h"
#include "rope.h"
#include "../simd/formats.h"

struct attn_state {
    int layer, kind, ratio;
    int max_tokens, max_chunk, max_entries;
    long n_seen;                 /* tokens of the sequence processed so far */

    float *window;               /* ring [window][head_dim]: position p in row p % window */
    float *entries;              /* [max_entries][head_dim] compressed KV */
    int n_entries;
    float *index_keys;           /* CSA: [max_entries][index_head_dim] */
    int n_index_keys;
    compressor_state comp, index_comp;

    /* scratch for max_chunk tokens */
    float *xb;                   /* [chunk][dim] x as the linears read it (bf16 in release) */
    float *xq;                   /* [chunk][dim] FP8-simulated x (release) */
    float *qr, *qrq;             /* [chunk][q_lora]: q_norm(wq_a·x), and its FP8 simulation */
    float *q;                    /* [chunk][n_heads*head_dim] */
    float *kv;                   /* [chunk][head_dim] */
    float *ca, *cg;              /* [chunk][c*head_dim] compressor projections */
    float *iq;                   /* [chunk][index_n_heads*index_head_dim] */
    float *iw;                   /* [chunk][index_n_heads] */
    float *ia, *ig;              /* [chunk][2*index_head_dim] */
    float *o;                    /* [chunk][n_heads*head_dim] */
    float *oa;                   /* [chunk][o_groups*o_lora] */
    float *cos_t, *sin_t;        /* [rope_dim/2] at the query's position */
    float *cos_e, *sin_e;        /* [rope_dim/2] at a compressed entry's position */
    float *entry;                /* [head_dim] one pooled entry */
    const float **kv_rows;       /* [window + visible compressed] */
    float *scores;               /* [max_entries] */
    int *selected, *topk_scratch;/* [max_entries] */
};

static void *xcalloc(size_t n, size_t size, int *failed)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        *failed = 1;
    return p;
}

int attn_state_new(attn_state **out, const dsv4_engine *e, int layer, int max_tokens, int max_chunk,
                   dsv4_error *err)
{
    const dsv4_config *c = &e->cfg;
    *out = NULL;
    if (layer < 0 || layer >= c->n_layers)
        return dsv4_fail(err, "attention: layer %d out of range [0, %d)", layer, c->n_layers);
    if (max_tokens <= 0 || max_chunk <= 0)
        return dsv4_fail(err, "attention: max_tokens (%d) and max_chunk (%d) must be positive",
                         max_tokens, max_chunk);
    int kind = c->kind[layer], ratio = kind == DSV4_LAYER_WINDOW ? 0 : c->compress_ratio[layer];
    if (kind != DSV4_LAYER_WINDOW && ratio <= 0)
        return dsv4_fail(err, "attention: layer %d is compressed but has compress_ratio %d", layer, ratio);
    if (c->n_heads % c->o_groups != 0)
        return dsv4_fail(err, "attention: n_heads %d not divisible by o_groups %d", c->n_heads, c->o_groups);
    if (c->rope_dim % 2 != 0 || c->rope_dim > c->head_dim)
        return dsv4_fail(err, "attention: rope_dim %d invalid for head_dim %d", c->rope_dim, c->head_dim);
    if (kind == DSV4_LAYER_CSA && (c->index_head_dim & (c->index_head_dim - 1)) != 0)
        return dsv4_fail(err, "attention: index_head_dim %d is not a power of two (Hadamard)", c->index_head_dim);

    attn_state *st = calloc(1, sizeof *st);
    if (!st)
        return dsv4_fail(err, "attention: out of memory for layer %d state", layer);
    st->layer = layer;
    st->kind = kind;
    st->ratio = ratio;
    st->max_tokens = max_tokens;
    st->max_chunk = max_chunk;
    st->max_entries = ratio ? max_tokens / ratio : 0;

    int failed = 0;
    size_t ch = (size_t)max_chunk, hd = (size_t)c->head_dim, qdim = (size_t)c->n_heads * hd;
    size_t me = (size_t)st->max_entries;
    st->window = xcalloc((size_t)c->window * hd, sizeof(float), &failed);
    st->xb = xcalloc(ch * c->dim, sizeof(float), &failed);
    st->xq = xcalloc(ch * c->dim, sizeof(float), &failed);
    st->qr = xcalloc(ch * c->q_lora_rank, sizeof(float), &failed);
    st->qrq = xcalloc(ch * c->q_lora_rank, sizeof(float), &failed);
    st->q = xcalloc(ch * qdim, sizeof(float), &failed);
    st->kv = xcalloc(ch * hd, sizeof(float), &failed);
    st->o = xcalloc(ch * qdim, sizeof(float), &failed);
    st->oa = xcalloc(ch * c->o_groups * c->o_lora_rank, sizeof(float), &failed);
    st->cos_t = xcalloc((size_t)c->rope_dim / 2, sizeof(float), &failed);
    st->sin_t = xcalloc((size_t)c->rope_dim / 2, sizeof(float), &failed);
    st->cos_e = xcalloc((size_t)c->rope_dim / 2, sizeof(float), &failed);
    st->sin_e = xcalloc((size_t)c->rope_dim / 2, sizeof(float), &failed);
    st->entry = xcalloc(hd, sizeof(float), &failed);
    size_t max_rows = (size_t)c->window;
    if (kind != DSV4_LAYER_WINDOW) {
        int overlap = kind == DSV4_LAYER_CSA;
        size_t cw = (size_t)(1 + overlap) * hd;
        st->entries = xcalloc(me * hd, sizeof(float), &failed);
        st->ca = xcalloc(ch * cw, sizeof(float), &failed);
        st->cg = xcalloc(ch * cw, sizeof(float), &failed);
        if (!failed && compressor_state_init(&st->comp, ratio, c->head_dim, overlap) != 0)
            failed = 1;
        max_rows += kind == DSV4_LAYER_HCA ? me : (me < (size_t)c->index_topk ? me : (size_t)c->index_topk);
    }
    if (kind == DSV4_LAYER_CSA) {
        size_t id = (size_t)c->index_head_dim;
        st->index_keys = xcalloc(me * id, sizeof(float), &failed);
        st->iq = xcalloc(ch * c->index_n_heads * id, sizeof(float), &failed);
        st->iw = xcalloc(ch * c->index_n_heads, sizeof(float), &failed);
        st->ia = xcalloc(ch * 2 * id, sizeof(float), &failed);
        st->ig = xcalloc(ch * 2 * id, sizeof(float), &failed);
        st->scores = xcalloc(me, sizeof(float), &failed);
        st->selected = xcalloc(me, sizeof(int), &failed);
        st->topk_scratch = xcalloc(me, sizeof(int), &failed);
        if (!failed && compressor_state_init(&st->index_comp, ratio, c->index_head_dim, 1) != 0)
            failed = 1;
    }
    st->kv_rows = xcalloc(max_rows, sizeof(float *), &failed);
    if (failed) {
        attn_state_free(st);
        return dsv4_fail(err, "attention: out of memory for layer %d state (max_tokens %d, max_chunk %d)",
                         layer, max_tokens, max_chunk);
    }
    *out = st;
    return 0;
}

void attn_state_free(attn_state *st)
{
    if (!st)
        return;
    free(st->window);
    free(st->entries);
    free(st->index_keys);
    if (st->comp.kv)
        compressor_state_free(&st->comp);
    if (st->index_comp.kv)
        compressor_state_free(&st->index_comp);
    free(st->xb);
    free(st->xq);
    free(st->qr);
    free(st->qrq);
    free(st->q);
    free(st->kv);
    free(st->ca);
    free(st->cg);
    free(st->iq);
    free(st->iw);
    free(st->ia);
    free(st->ig);
    free(st->o);
    free(st->oa);
    free(st->cos_t);
    free(st->sin_t);
    free(st->cos_e);
    free(st->sin_e);
    free(st->entry);
    free(st->kv_rows);
    free(st->scores);
    free(st->selected);
    free(st->topk_scratch);
    free(st);
}

void attn_state_reset(attn_state *st)
{
    st->n_seen = 0;
    st->n_entries = 0;
    st->n_index_keys = 0;
    if (st->comp.kv)
        compressor_state_reset(&st->comp);
    if (st->index_comp.kv)
        compressor_state_reset(&st->index_comp);
}

static int is_quantized(const dsv4_linear *W)
{
    return W->fmt == DSV4_WF_FP8 || W->fmt == DSV4_WF_FP4;
}

/* Y = W·X for n rows; in release numerics a quantized W reads the FP8-simulated
 * input xq (the reference's act_quant inside linear()) and the output is bf16. */
static void project(const dsv4_kernels *k, const dsv4_linear *W, float *Y, const float *x, const float *xq,
                    int n, int release)
{
    if (release && is_quantized(W))
        linear_matmul_e4m3act(k, W, Y, xq, n); /* xq is FP8-simulated: exact bf16 products */
    else
        linear_matmul(k, W, Y, x, n);
    if (release)
        fmt_round_bf16_array(Y, (size_t)n * W->rows);
}

static void act_quant_rows(float *dst, const float *src, int n, int cols)
{
    memcpy(dst, src, (size_t)n * cols * sizeof *dst);
    for (int i = 0; i < n; i++)
        fmt_act_quant_sim(dst + (size_t)i * cols, (size_t)cols, 128);
}

static void rmsnorm_rows(float *x, const float *w, int n, int cols, float eps, int release)
{
    for (int i = 0; i < n; i++)
        ops_rmsnorm(x + (size_t)i * cols, x + (size_t)i * cols, w, cols, eps);
    if (release)
        fmt_round_bf16_array(x, (size_t)n * cols);
}

/* The reference's per-head q norm on a bf16 tensor: each elementwise op and
 * the mean (fp32 accumulation) return bf16. */
static void head_norm_bf16(float *q, int dim, float eps)
{
    float sum = 0.0f;
    for (int i = 0; i < dim; i++)
        sum += fmt_round_bf16(q[i] * q[i]);
    float mean = fmt_round_bf16(sum / (float)dim);
    float var = fmt_round_bf16(mean + eps);
    float r = fmt_round_bf16(1.0f / sqrtf(var));
    for (int i = 0; i < dim; i++)
        q[i] = fmt_round_bf16(q[i] * r);
}

/* Step 1: everything that depends on one token only, batched over the chunk. */
static void project_chunk(const dsv4_engine *e, const dsv4_layer_weights *L, attn_state *st,
                          const float *x, int n, int release, prof_counters *prof)
{
    const dsv4_config *c = &e->cfg;
    const dsv4_kernels *k = e->k;
    const float *xin = x;
    if (release) {
        memcpy(st->xb, x, (size_t)n * c->dim * sizeof *x);
        fmt_round_bf16_array(st->xb, (size_t)n * c->dim);
        act_quant_rows(st->xq, st->xb, n, c->dim);
        xin = st->xb;
    }

    prof_linear(prof, &L->wq_a, n);
    prof_linear(prof, &L->wq_b, n);
    prof_linear(prof, &L->wkv, n);
    project(k, &L->wq_a, st->qr, xin, st->xq, n, release);
    rmsnorm_rows(st->qr, L->q_norm, n, c->q_lora_rank, c->norm_eps, release);
    if (release)
        act_quant_rows(st->qrq, st->qr, n, c->q_lora_rank);
    project(k, &L->wq_b, st->q, st->qr, st->qrq, n, release);
    for (int i = 0; i < n * c->n_heads; i++) {
        float *qh = st->q + (size_t)i * c->head_dim;
        if (release)
            head_norm_bf16(qh, c->head_dim, c->norm_eps);
        else
            ops_rmsnorm(qh, qh, NULL, c->head_dim, c->norm_eps);
    }

    project(k, &L->wkv, st->kv, xin, st->xq, n, release);
    rmsnorm_rows(st->kv, L->kv_norm, n, c->head_dim, c->norm_eps, release);

    if (st->kind == DSV4_LAYER_WINDOW)
        return;
    /* Compressor projections stay fp32 in both numerics (fp32 weights in the reference). */
    double t0 = prof_begin(prof);
    prof_linear(prof, &L->compressor.wkv, n);
    prof_linear(prof, &L->compressor.wgate, n);
    linear_matmul(k, &L->compressor.wkv, st->ca, xin, n);
    linear_matmul(k, &L->compressor.wgate, st->cg, xin, n);
    prof_end(prof, DSV4_PROF_COMPRESSOR, t0);
    if (st->kind != DSV4_LAYER_CSA)
        return;
    t0 = prof_begin(prof);
    const dsv4_indexer_weights *I = &L->indexer;
    prof_linear(prof, &I->wq_b, n);
    prof_linear(prof, &I->weights_proj, n);
    prof_linear(prof, &I->compressor.wkv, n);
    prof_linear(prof, &I->compressor.wgate, n);
    project(k, &I->wq_b, st->iq, st->qr, st->qrq, n, release);
    project(k, &I->weights_proj, st->iw, xin, st->xq, n, release);
    for (int i = 0; i < n; i++)
        indexer_scale_weights(st->iw + (size_t)i * c->index_n_heads, c->index_n_heads, c->index_head_dim,
                              release);
    linear_matmul(k, &I->compressor.wkv, st->ia, xin, n);
    linear_matmul(k, &I->compressor.wgate, st->ig, xin, n);
    prof_end(prof, DSV4_PROF_INDEXER, t0);
}

/* RoPE on the last rope_dim dims of each of n_vec vectors of length dim. */
static void rope_vectors(float *v, int n_vec, int dim, int rope_dim, const float *cos_t, const float *sin_t,
                         int inverse, int release)
{
    for (int h = 0; h < n_vec; h++) {
        float *r = v + (size_t)h * dim + (dim - rope_dim);
        ops_rope(r, cos_t, sin_t, rope_dim / 2, inverse);
        if (release)
            fmt_round_bf16_array(r, (size_t)rope_dim);
    }
}

/* Step 2 for the CSA indexer of token i (position t): its compressor may emit
 * a key, then the query scores every visible key and keeps the top k.
 * Returns how many entries are selected (in st->selected). */
static int index_token(const dsv4_engine *e, const dsv4_layer_weights *L, attn_state *st, const attn_state *sc,
                       int i, long t, const float *inv_freq, int release)
{
    const dsv4_config *c = &e->cfg;
    const dsv4_indexer_weights *I = &L->indexer;
    int id = c->index_head_dim, ih = c->index_n_heads;
    float *key = st->index_keys + (size_t)st->n_index_keys * id;
    if (compressor_push(&st->index_comp, t, sc->ia + (size_t)i * 2 * id, sc->ig + (size_t)i * 2 * id,
                        I->compressor.ape, key)) {
        long entry_pos = t + 1 - st->ratio;
        rope_cos_sin(st->cos_e, st->sin_e, inv_freq, c->rope_dim / 2, entry_pos);
        compressor_finish_entry(key, id, I->compressor.norm, c->norm_eps, c->rope_dim, st->cos_e, st->sin_e,
                                release, 1);
        st->n_index_keys++;
    }
    int visible = st->n_index_keys;
    if (visible == 0)
        return 0;
    float *iq = sc->iq + (size_t)i * ih * id;
    indexer_prepare_query(iq, ih, id, c->rope_dim, st->cos_t, st->sin_t, release);
    indexer_scores(e->k, st->scores, iq, sc->iw + (size_t)i * ih, st->index_keys, visible, ih, id, release);
    return indexer_select(st->selected, st->scores, visible, c->index_topk, st->topk_scratch);
}

/* Step 2: row i of sc's projections, the token at position t of the sequence
 * whose state is st (sc == st for a chunk of one sequence). */
static void attend_token(const dsv4_engine *e, const dsv4_layer_weights *L, attn_state *st, attn_state *sc,
                         int i, long t, int release, prof_counters *prof)
{
    const dsv4_config *c = &e->cfg;
    int hd = c->head_dim, H = c->n_heads, rd = c->rope_dim, win = c->window;
    const float *inv_freq = st->kind == DSV4_LAYER_WINDOW ? e->tables->inv_freq_window
                                                          : e->tables->inv_freq_compressed;
    float *q = sc->q + (size_t)i * H * hd;
    float *kv = sc->kv + (size_t)i * hd;

    rope_cos_sin(st->cos_t, st->sin_t, inv_freq, rd / 2, t);
    rope_vectors(q, H, hd, rd, st->cos_t, st->sin_t, 0, release);
    rope_vectors(kv, 1, hd, rd, st->cos_t, st->sin_t, 0, release);
    if (release)
        fmt_act_quant_sim(kv, (size_t)(hd - rd), 64);
    memcpy(st->window + (size_t)(t % win) * hd, kv, (size_t)hd * sizeof *kv);

    int n_selected = 0;
    double t0 = prof_begin(prof);
    if (st->kind == DSV4_LAYER_CSA) {
        n_selected = index_token(e, L, st, sc, i, t, inv_freq, release);
        prof_end(prof, DSV4_PROF_INDEXER, t0);
        t0 = prof_begin(prof);
    }
    if (st->kind != DSV4_LAYER_WINDOW) {
        float *entry = st->entries + (size_t)st->n_entries * hd;
        int cw = (st->kind == DSV4_LAYER_CSA ? 2 : 1) * hd;
        if (compressor_push(&st->comp, t, sc->ca + (size_t)i * cw, sc->cg + (size_t)i * cw,
                            L->compressor.ape, entry)) {
            /* RoPE at the window's first position. */
            rope_cos_sin(st->cos_e, st->sin_e, inv_freq, rd / 2, t + 1 - st->ratio);
            compressor_finish_entry(entry, hd, L->compressor.norm, c->norm_eps, rd, st->cos_e, st->sin_e,
                                    release, 0);
            st->n_entries++;
        }
        prof_end(prof, DSV4_PROF_COMPRESSOR, t0);
    }

    int n_rows = 0;
    long first = t - win + 1 > 0 ? t - win + 1 : 0;
    for (long p = first; p <= t; p++)
        st->kv_rows[n_rows++] = st->window + (size_t)(p % win) * hd;
    if (st->kind == DSV4_LAYER_HCA) {
        for (int j = 0; j < st->n_entries; j++)
            st->kv_rows[n_rows++] = st->entries + (size_t)j * hd;
    } else if (st->kind == DSV4_LAYER_CSA) {
        for (int j = 0; j < n_selected; j++)
            st->kv_rows[n_rows++] = st->entries + (size_t)st->selected[j] * hd;
    }

    if (prof)
        prof->s.flops += 4.0 * H * hd * n_rows;
    float *o = sc->o + (size_t)i * H * hd;
    const dsv4_kernels *k = e->k;
    const float *const *rows = st->kv_rows;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(static)
    for (int h = 0; h < H; h++)
        k->attend(o, q, hd, rows, n_rows, L->attn_sink, scale, release, h, h + 1);
    if (release)
        fmt_round_bf16_array(o, (size_t)H * hd);
    rope_vectors(o, H, hd, rd, st->cos_t, st->sin_t, 1, release);
}

/* Step 3: grouped low-rank output projection, batched over the chunk. */
static void output_chunk(const dsv4_engine *e, const dsv4_layer_weights *L, attn_state *st, int n, float *out,
                         int release, prof_counters *prof)
{
    const dsv4_config *c = &e->cfg;
    int G = c->o_groups, r = c->o_lora_rank;
    size_t qdim = (size_t)c->n_heads * c->head_dim, gdim = qdim / G;
    prof_linear(prof, &L->wo_a, n);
    prof_linear(prof, &L->wo_b, n);
    for (int g = 0; g < G; g++)
        linear_matmul_rows(e->k, &L->wo_a, st->oa, (size_t)G * r, st->o + g * gdim, qdim, n, g * r, (g + 1) * r);
    if (release) {
        fmt_round_bf16_array(st->oa, (size_t)n * G * r);
        if (is_quantized(&L->wo_b))
            for (int i = 0; i < n; i++)
                fmt_act_quant_sim(st->oa + (size_t)i * G * r, (size_t)G * r, 128);
    }
    if (release && is_quantized(&L->wo_b))
        linear_matmul_e4m3act(e->k, &L->wo_b, out, st->oa, n);
    else
        linear_matmul(e->k, &L->wo_b, out, st->oa, n);
    if (release)
        fmt_round_bf16_array(out, (size_t)n * c->dim);
}

void attention_project(const dsv4_engine *e, int layer, attn_state *sc, const float *x, int n,
                       prof_counters *prof)
{
    project_chunk(e, &e->w.layers[layer], sc, x, n, e->opt.numerics == DSV4_NUMERICS_RELEASE, prof);
}

int attention_core(const dsv4_engine *e, int layer, attn_state *st, attn_state *sc, int i, prof_counters *prof)
{
    if (layer != st->layer || layer != sc->layer || st->n_seen >= st->max_tokens || i < 0 || i >= sc->max_chunk)
        return -1;
    attend_token(e, &e->w.layers[layer], st, sc, i, st->n_seen, e->opt.numerics == DSV4_NUMERICS_RELEASE, prof);
    st->n_seen++;
    return 0;
}

void attention_output(const dsv4_engine *e, int layer, attn_state *sc, int n, float *out, prof_counters *prof)
{
    output_chunk(e, &e->w.layers[layer], sc, n, out, e->opt.numerics == DSV4_NUMERICS_RELEASE, prof);
}

void attention_forward(const dsv4_engine *e, int layer, attn_state *st,
                       const float *x, int n, int pos0, float *out)
{
    const dsv4_layer_weights *L = &e->w.layers[layer];
    int release = e->opt.numerics == DSV4_NUMERICS_RELEASE;
    /* The caller guarantees these (session.c); refusing here keeps a broken
     * caller from writing past the state instead of computing garbage. */
    if (n <= 0 || n > st->max_chunk || pos0 != st->n_seen || (long)pos0 + n > st->max_tokens
        || layer != st->layer) {
        if (n > 0)
            memset(out, 0, (size_t)n * e->cfg.dim * sizeof *out);
        return;
    }
    project_chunk(e, L, st, x, n, release, NULL);
    for (int i = 0; i < n; i++)
        attend_token(e, L, st, st, i, (long)pos0 + i, release, NULL);
    output_chunk(e, L, st, n, out, release, NULL);
    st->n_seen += n;
}
