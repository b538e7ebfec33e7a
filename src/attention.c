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
 *   - the window kv and the main entries are stored as what that simulation
 *     makes, FP8 rows of the release layout (e4m3 codes + e8m0 scales + the
 *     bf16 RoPE tail, 584 bytes at V4's 512; formats.h), which attend_fp8
 *     reads as they are;
 *   - indexer query: RoPE (bf16), Hadamard (bf16), FP4 simulation (block 32);
 *     head weights bf16(bf16(weights_proj·x) * dim^-1/2 * n_heads^-1/2);
 *     scores in bf16 (indexer.c), over the keys and q held as their FP4
 *     codes and block scales (68 bytes a key), with exact integer dots;
 *   - attention probabilities rounded to bf16 before the PV product
 *     (attend's bf16_probs), the output rounded to bf16.
 *
 * Where the oracle computes a prefill all at once with masks, this file
 * advances the layer's state token by token (window ring, compressed entries,
 * indexer keys) and lets each token attend to what the state held right after
 * its own advance (tokens of a chunk side by side, attend_chunk), which gives
 * the same visibility: query t sees window positions
 * max(0, t-window+1)..t and compressed entries j < floor((t+1)/ratio) (HCA:
 * all of them; CSA: the indexer's top-k among them), all in one softmax with
 * the sink. An entry is completed by token (j+1)·ratio-1 before that token
 * attends, so it is visible to it. */
#include "attention.h"

#include <math.h>
#include <omp.h>
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

    float *window;               /* ring [ring][head_dim]: position p in row p % ring (NULL with window_8) */
    int ring;                    /* window + max_chunk: a whole chunk's keys fit beside the window of its first token */
    float *entries;              /* [max_entries][head_dim] compressed KV (NULL with entries_8) */
    int n_entries;
    float *index_keys;           /* CSA, plain: [max_entries][index_head_dim] */
    uint8_t *index_fp4;          /* CSA, release: the keys as FP4 codes and e8m0 scales, */
    uint8_t *index_fp4_scales;   /*   in groups of 16 (kernels.h layout, 68 bytes a key at dim 128) */
    float *index_key;            /* CSA, release: [index_head_dim] one key before packing */
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
    int8_t *iqc;                 /* release: [chunk][index_n_heads*index_head_dim] iq as FP4 codes (x2) */
    float *iqs;                  /* release: [chunk][index_n_heads*index_head_dim/32] their block scales */
    float *ia, *ig;              /* [chunk][2*index_head_dim] */
    float *o;                    /* [chunk][n_heads*head_dim] */
    float *oa;                   /* [chunk][o_groups*o_lora] */
    float *cos_t, *sin_t;        /* [rope_dim/2] at the query's position */
    float *cos_e, *sin_e;        /* [rope_dim/2] at a compressed entry's position */
    float *entry;                /* [head_dim] one pooled entry */
    const float **kv_rows;       /* [max_rows]: window + visible compressed (NULL with window_8) */
    /* Release numerics where the kernels have attend_fp8 (every table:
     * AVX-512, AVX2, NEON, the scalar reference): the window ring and the
     * entries only in the release FP8 layout (formats.h: their values are
     * FP8-simulated with a bf16 RoPE tail, so nothing is lost), row_bytes a
     * row (584 for V4), which that kernel reads; NULL otherwise. */
    uint8_t *window_8, *entries_8;
    size_t row_bytes, key_bytes; /* a KV row, an indexer key, in the form kept */
    const uint8_t **kv_rows_8;   /* [max_rows] */
    float *scores;               /* [max_entries] */
    int *selected, *topk_scratch;/* [max_entries] */

    /* A chunk's cores side by side (attention_core_chunk): per token, what
     * the state held when it attended; per worker thread, its scratch. */
    int *vis_entries, *vis_keys; /* [max_chunk] */
    prof_counters *row_prof;     /* [max_chunk] */
    int workers;
    float *w_cos, *w_sin;        /* [workers][rope_dim/2] */
    const float **w_rows;        /* [workers][max_rows] (NULL with window_8) */
    const uint8_t **w_rows_8;    /* [workers][max_rows], with window_8 */
    float *w_scores;             /* [workers][max_entries] (CSA) */
    int *w_selected, *w_topk;    /* [workers][max_entries] (CSA) */
    int max_rows;
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
    int release = e->opt.numerics == DSV4_NUMERICS_RELEASE;
    if (kind == DSV4_LAYER_CSA && release &&
        (c->index_head_dim % 32 != 0 || c->index_head_dim > INDEX_FP4_MAX_DIM ||
         c->index_n_heads > INDEX_FP4_MAX_HEADS))
        return dsv4_fail(err, "attention: the FP4 indexer needs index_head_dim a multiple of 32 up to %d and "
                         "index_n_heads up to %d (have %d, %d)", INDEX_FP4_MAX_DIM, INDEX_FP4_MAX_HEADS,
                         c->index_head_dim, c->index_n_heads);

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
    st->ring = c->window + max_chunk;
    /* Release numerics where the kernels read FP8 rows: the window ring and
     * the entries are kept only in that layout (0.29x the fp32 rows); an
     * entry is pooled in st->entry first. Rows start at multiples of 8. */
    int fp8_rows = release && e->k->attend_fp8;
    st->row_bytes = fp8_rows ? (fmt_kv_row_bytes(c->head_dim, c->rope_dim) + 7) & ~(size_t)7 : hd * sizeof(float);
    st->key_bytes = release ? (INDEX_FP4_GROUP_BYTES(c->index_head_dim) + INDEX_FP4_GROUP_SCALES(c->index_head_dim)) /
                                  INDEX_FP4_GROUP
                            : (size_t)c->index_head_dim * sizeof(float);
    if (!fp8_rows)
        st->window = xcalloc((size_t)st->ring * hd, sizeof(float), &failed);
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
        if (!fp8_rows)
            st->entries = xcalloc(me * hd, sizeof(float), &failed);
        st->ca = xcalloc(ch * cw, sizeof(float), &failed);
        st->cg = xcalloc(ch * cw, sizeof(float), &failed);
        if (!failed && compressor_state_init(&st->comp, ratio, c->head_dim, overlap) != 0)
            failed = 1;
        max_rows += kind == DSV4_LAYER_HCA ? me : (me < (size_t)c->index_topk ? me : (size_t)c->index_topk);
    }
    if (kind == DSV4_LAYER_CSA) {
        size_t id = (size_t)c->index_head_dim;
        if (release) {
            size_t groups = (me + INDEX_FP4_GROUP - 1) / INDEX_FP4_GROUP;
            st->index_fp4 = xcalloc(groups, INDEX_FP4_GROUP_BYTES(id), &failed);
            st->index_fp4_scales = xcalloc(groups, INDEX_FP4_GROUP_SCALES(id), &failed);
            st->index_key = xcalloc(id, sizeof(float), &failed);
            st->iqc = xcalloc(ch * c->index_n_heads * id, sizeof(int8_t), &failed);
            st->iqs = xcalloc(ch * c->index_n_heads * id / 32, sizeof(float), &failed);
        } else {
            st->index_keys = xcalloc(me * id, sizeof(float), &failed);
        }
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
    st->max_rows = (int)max_rows;
    if (fp8_rows) {
        st->window_8 = xcalloc((size_t)st->ring, st->row_bytes, &failed);
        if (kind != DSV4_LAYER_WINDOW)
            st->entries_8 = xcalloc(me, st->row_bytes, &failed);
        st->kv_rows_8 = xcalloc(max_rows, sizeof(uint8_t *), &failed);
    } else {
        st->kv_rows = xcalloc(max_rows, sizeof(float *), &failed);
    }
    st->workers = omp_get_max_threads();
    if (st->workers > max_chunk)
        st->workers = max_chunk;
    size_t w = (size_t)st->workers, half = (size_t)c->rope_dim / 2;
    st->vis_entries = xcalloc(ch, sizeof(int), &failed);
    st->vis_keys = xcalloc(ch, sizeof(int), &failed);
    st->row_prof = xcalloc(ch, sizeof(prof_counters), &failed);
    st->w_cos = xcalloc(w * half, sizeof(float), &failed);
    st->w_sin = xcalloc(w * half, sizeof(float), &failed);
    if (fp8_rows)
        st->w_rows_8 = xcalloc(w * max_rows, sizeof(uint8_t *), &failed);
    else
        st->w_rows = xcalloc(w * max_rows, sizeof(float *), &failed);
    if (kind == DSV4_LAYER_CSA) {
        st->w_scores = xcalloc(w * me, sizeof(float), &failed);
        st->w_selected = xcalloc(w * me, sizeof(int), &failed);
        st->w_topk = xcalloc(w * me, sizeof(int), &failed);
    }
    if (failed) {
        attn_state_free(st);
        return dsv4_fail(err, "attention: out of memory for layer %d state (max_tokens %d, max_chunk %d)",
                         layer, max_tokens, max_chunk);
    }
    *out = st;
    return 0;
}

size_t attn_state_kv_bytes(const attn_state *st)
{
    size_t window = (size_t)(st->ring - st->max_chunk), seen = (size_t)st->n_seen;
    return ((seen < window ? seen : window) + (size_t)st->n_entries) * st->row_bytes +
           (size_t)st->n_index_keys * st->key_bytes;
}

void attn_state_free(attn_state *st)
{
    if (!st)
        return;
    free(st->window);
    free(st->entries);
    free(st->window_8);
    free(st->entries_8);
    free(st->kv_rows_8);
    free(st->w_rows_8);
    free(st->index_keys);
    free(st->index_fp4);
    free(st->index_fp4_scales);
    free(st->index_key);
    free(st->iqc);
    free(st->iqs);
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
    free(st->vis_entries);
    free(st->vis_keys);
    free(st->row_prof);
    free(st->w_cos);
    free(st->w_sin);
    free(st->w_rows);
    free(st->w_scores);
    free(st->w_selected);
    free(st->w_topk);
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

/* Per-row work of a chunk below this many values stays on the calling thread. */
#define PAR_MIN 16384

/* Y = W·X for n rows as a job of a batch. In release numerics a quantized W
 * reads the FP8-simulated input xq (the reference's act_quant inside
 * linear()), a BF16 W the input x, which is bf16 there: either way the
 * products are exact in bf16, so the jobs take the kernels' bf16-activation
 * entries (vdpbf16ps on AMD, the fp32 kernels elsewhere). */
static linear_job project_job(const dsv4_linear *W, float *Y, const float *x, const float *xq, int n, int release)
{
    int q = release && is_quantized(W), bf = release && W->fmt == DSV4_WF_BF16;
    linear_job j = {W, Y, (size_t)W->rows, q ? xq : x, (size_t)W->cols, n, 0, W->rows, q || bf};
    return j;
}

/* The bf16 rounding of a projection's output (release): the reference's
 * linears return bf16. */
static void round_rows(float *y, size_t count)
{
    size_t blocks = (count + 4095) / 4096;
#pragma omp parallel for schedule(static) if (count >= PAR_MIN)
    for (size_t b = 0; b < blocks; b++)
        fmt_round_bf16_array(y + b * 4096, count - b * 4096 < 4096 ? count - b * 4096 : 4096);
}

static void rmsnorm_rows(float *x, const float *w, int n, int cols, float eps, int release)
{
#pragma omp parallel for schedule(static) if ((long)n * cols >= PAR_MIN && n > 1)
    for (int i = 0; i < n; i++) {
        ops_rmsnorm(x + (size_t)i * cols, x + (size_t)i * cols, w, cols, eps);
        if (release)
            fmt_round_bf16_array(x + (size_t)i * cols, (size_t)cols);
    }
}

/* The reference's per-head q norm on a bf16 tensor, for `heads` heads of
 * dim values at q: each elementwise op and the mean (fp32 accumulation, in
 * column order: the kernels' sumsq_bf16, which runs the heads' sums side by
 * side) return bf16. */
#define NORM_HEADS 16
static void head_norm_bf16(const dsv4_kernels *k, float *q, int heads, int dim, float eps)
{
    float sum[NORM_HEADS];
    k->sumsq_bf16(sum, q, (size_t)dim, heads, dim);
    for (int h = 0; h < heads; h++) {
        float mean = fmt_round_bf16(sum[h] / (float)dim);
        float var = fmt_round_bf16(mean + eps);
        float r = fmt_round_bf16(1.0f / sqrtf(var));
        float *qh = q + (size_t)h * dim;
        for (int i = 0; i < dim; i++)
            qh[i] *= r;
        fmt_round_bf16_array(qh, (size_t)dim);
    }
}

/* Step 1: everything that depends on one token only, batched over the chunk.
 * The products that read x (wq_a, wkv, the compressors' and the indexer's
 * x-side projections) run in one parallel region, the two that read the
 * normed q_lora (wq_b, indexer wq_b) in a second: a decode step pays two
 * fork/joins here, not eight. */
static void project_chunk(const dsv4_engine *e, const dsv4_layer_weights *L, attn_state *st,
                          const float *x, int n, int release, prof_counters *prof)
{
    const dsv4_config *c = &e->cfg;
    const dsv4_kernels *k = e->k;
    const dsv4_indexer_weights *I = &L->indexer;
    const float *xin = x;
    int csa = st->kind == DSV4_LAYER_CSA, compressed = st->kind != DSV4_LAYER_WINDOW;
    if (release) {
        memcpy(st->xb, x, (size_t)n * c->dim * sizeof *x);
        fmt_round_bf16_array(st->xb, (size_t)n * c->dim);
        linear_act_quant_rows(k, st->xq, st->xb, n, c->dim);
        xin = st->xb;
    }

    prof_linear(prof, &L->wq_a, n);
    prof_linear(prof, &L->wq_b, n);
    prof_linear(prof, &L->wkv, n);
    linear_job jobs[8];
    int nj = 0;
    jobs[nj++] = project_job(&L->wq_a, st->qr, xin, st->xq, n, release);
    jobs[nj++] = project_job(&L->wkv, st->kv, xin, st->xq, n, release);
    if (compressed) {
        /* Compressor projections read the unquantized input in both numerics (the
         * reference's weights are fp32, the file's BF16: the same values). */
        prof_linear(prof, &L->compressor.wkv, n);
        prof_linear(prof, &L->compressor.wgate, n);
        jobs[nj++] = project_job(&L->compressor.wkv, st->ca, xin, xin, n, release);
        jobs[nj++] = project_job(&L->compressor.wgate, st->cg, xin, xin, n, release);
    }
    if (csa) {
        prof_linear(prof, &I->wq_b, n);
        prof_linear(prof, &I->weights_proj, n);
        prof_linear(prof, &I->compressor.wkv, n);
        prof_linear(prof, &I->compressor.wgate, n);
        jobs[nj++] = project_job(&I->weights_proj, st->iw, xin, st->xq, n, release);
        jobs[nj++] = project_job(&I->compressor.wkv, st->ia, xin, xin, n, release);
        jobs[nj++] = project_job(&I->compressor.wgate, st->ig, xin, xin, n, release);
    }
    linear_matmul_jobs(k, jobs, nj);
    if (release) {
        round_rows(st->qr, (size_t)n * L->wq_a.rows);
        round_rows(st->kv, (size_t)n * L->wkv.rows);
        if (csa)
            round_rows(st->iw, (size_t)n * I->weights_proj.rows);
    }
    rmsnorm_rows(st->qr, L->q_norm, n, c->q_lora_rank, c->norm_eps, release);
    rmsnorm_rows(st->kv, L->kv_norm, n, c->head_dim, c->norm_eps, release);
    if (release)
        linear_act_quant_rows(k, st->qrq, st->qr, n, c->q_lora_rank);
    nj = 0;
    jobs[nj++] = project_job(&L->wq_b, st->q, st->qr, st->qrq, n, release);
    if (csa)
        jobs[nj++] = project_job(&I->wq_b, st->iq, st->qr, st->qrq, n, release);
    linear_matmul_jobs(k, jobs, nj);

    /* per token, heads NORM_HEADS at a time */
    int per_token = (c->n_heads + NORM_HEADS - 1) / NORM_HEADS, items = n * per_token;
#pragma omp parallel for schedule(static) if ((long)n * c->n_heads * c->head_dim >= PAR_MIN && items > 1)
    for (int it = 0; it < items; it++) {
        int h0 = (it % per_token) * NORM_HEADS, nh = c->n_heads - h0 < NORM_HEADS ? c->n_heads - h0 : NORM_HEADS;
        float *qh = st->q + ((size_t)(it / per_token) * c->n_heads + h0) * c->head_dim;
        if (release) {
            fmt_round_bf16_array(qh, (size_t)nh * c->head_dim);
            head_norm_bf16(k, qh, nh, c->head_dim, c->norm_eps);
        } else {
            for (int h = 0; h < nh; h++)
                ops_rmsnorm(qh + (size_t)h * c->head_dim, qh + (size_t)h * c->head_dim, NULL, c->head_dim,
                            c->norm_eps);
        }
    }
    if (!csa)
        return;
    if (release)
        round_rows(st->iq, (size_t)n * I->wq_b.rows);
    for (int i = 0; i < n; i++)
        indexer_scale_weights(st->iw + (size_t)i * c->index_n_heads, c->index_n_heads, c->index_head_dim,
                              release);
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

/* Step 2, the part that changes the state, for row i of sc's projections,
 * the token at position t of the sequence whose state is st (sc == st for a
 * chunk of one sequence), in token order: its key enters the window ring, and
 * its compressors may emit an entry (CSA: and an indexer key). Afterwards
 * st->n_entries / n_index_keys are what this token sees. */
static void advance_state(const dsv4_engine *e, const dsv4_layer_weights *L, attn_state *st, const attn_state *sc,
                          int i, long t, const float *cos_t, const float *sin_t, int release, prof_counters *prof)
{
    const dsv4_config *c = &e->cfg;
    int hd = c->head_dim, rd = c->rope_dim;
    const float *inv_freq = st->kind == DSV4_LAYER_WINDOW ? e->tables->inv_freq_window
                                                          : e->tables->inv_freq_compressed;
    float *kv = sc->kv + (size_t)i * hd;
    rope_vectors(kv, 1, hd, rd, cos_t, sin_t, 0, release);
    if (st->window_8) {
        /* the FP8 simulation (block 64) by storing the codes it makes */
        fmt_kv_row_encode(st->window_8 + (size_t)(t % st->ring) * st->row_bytes, kv, hd, rd);
    } else {
        if (release)
            fmt_act_quant_sim(kv, (size_t)(hd - rd), 64);
        memcpy(st->window + (size_t)(t % st->ring) * hd, kv, (size_t)hd * sizeof *kv);
    }

    double t0 = prof_begin(prof);
    if (st->kind == DSV4_LAYER_CSA) {
        const dsv4_indexer_weights *I = &L->indexer;
        int id = c->index_head_dim;
        /* release: FP4-simulated by compressor_finish_entry, then stored as its codes */
        float *key = st->index_fp4 ? st->index_key : st->index_keys + (size_t)st->n_index_keys * id;
        if (compressor_push(&st->index_comp, t, sc->ia + (size_t)i * 2 * id, sc->ig + (size_t)i * 2 * id,
                            I->compressor.ape, key)) {
            rope_cos_sin(st->cos_e, st->sin_e, inv_freq, rd / 2, t + 1 - st->ratio);
            compressor_finish_entry(key, id, I->compressor.norm, c->norm_eps, rd, st->cos_e, st->sin_e,
                                    release, 1);
            if (st->index_fp4)
                fmt_index_key_pack(st->index_fp4, st->index_fp4_scales, (size_t)st->n_index_keys, id, key);
            st->n_index_keys++;
        }
        prof_end(prof, DSV4_PROF_INDEXER, t0);
        t0 = prof_begin(prof);
    }
    if (st->kind != DSV4_LAYER_WINDOW) {
        float *entry = st->entries_8 ? st->entry : st->entries + (size_t)st->n_entries * hd;
        int cw = (st->kind == DSV4_LAYER_CSA ? 2 : 1) * hd;
        if (compressor_push(&st->comp, t, sc->ca + (size_t)i * cw, sc->cg + (size_t)i * cw,
                            L->compressor.ape, entry)) {
            /* RoPE at the window's first position. */
            rope_cos_sin(st->cos_e, st->sin_e, inv_freq, rd / 2, t + 1 - st->ratio);
            compressor_finish_entry(entry, hd, L->compressor.norm, c->norm_eps, rd, st->cos_e, st->sin_e,
                                    release, 0);
            if (st->entries_8) /* FP8-simulated already: the codes keep every value */
                fmt_kv_row_encode(st->entries_8 + (size_t)st->n_entries * st->row_bytes, entry, hd, rd);
            st->n_entries++;
        }
        prof_end(prof, DSV4_PROF_COMPRESSOR, t0);
    }
}

/* Heads [h0, h1) of one query over its rows: the FP8 rows where the state
 * keeps them (kv_rows_8 non-NULL; rd values of bf16 RoPE tail), else the
 * fp32 rows. */
static void attend_heads(const dsv4_kernels *k, float *o, const float *q, int hd, int rd, const float *const *kv_rows,
                         const uint8_t *const *kv_rows_8, int n_rows, const float *sink, float scale, int release,
                         int h0, int h1)
{
    if (kv_rows_8)
        k->attend_fp8(o, q, hd, rd, kv_rows_8, n_rows, sink, scale, h0, h1);
    else
        k->attend(o, q, hd, kv_rows, n_rows, sink, scale, release, h0, h1);
}

/* Step 2, the attention itself, for row i (position t), seeing the first
 * n_entries compressed entries and n_keys indexer keys of st (what the state
 * held right after this token's advance_state), with the given scratch.
 * heads_parallel: split the heads over the team (one token at a time), else
 * all heads on the calling thread (tokens side by side). Reads the state,
 * never writes it. */
static void attend_row(const dsv4_engine *e, const dsv4_layer_weights *L, const attn_state *st, attn_state *sc,
                       int i, long t, int n_entries, int n_keys, const float *cos_t, const float *sin_t,
                       const float **kv_rows, const uint8_t **kv_rows_8, float *scores, int *selected,
                       int *topk_scratch, int heads_parallel, int release, prof_counters *prof)
{
    const dsv4_config *c = &e->cfg;
    int hd = c->head_dim, H = c->n_heads, rd = c->rope_dim, win = c->window;
    float *q = sc->q + (size_t)i * H * hd;
    rope_vectors(q, H, hd, rd, cos_t, sin_t, 0, release);

    int n_selected = 0;
    if (st->kind == DSV4_LAYER_CSA && n_keys > 0) {
        double t0 = prof_begin(prof);
        int id = c->index_head_dim, ih = c->index_n_heads;
        float *iq = sc->iq + (size_t)i * ih * id;
        indexer_prepare_query(e->k, iq, ih, id, rd, cos_t, sin_t, release);
        if (st->index_fp4) {
            /* the FP4-simulated q as the codes and scales it is made of */
            int8_t *qc = sc->iqc + (size_t)i * ih * id;
            float *qs = sc->iqs + (size_t)i * ih * id / 32;
            e->k->index_query_pack(qc, qs, iq, (size_t)ih * id);
            indexer_scores_fp4(e->k, scores, qc, qs, sc->iw + (size_t)i * ih, st->index_fp4, st->index_fp4_scales,
                               n_keys, ih, id);
        } else {
            indexer_scores(e->k, scores, iq, sc->iw + (size_t)i * ih, st->index_keys, n_keys, ih, id, 0);
        }
        n_selected = indexer_select(e->k, selected, scores, n_keys, c->index_topk, topk_scratch);
        prof_end(prof, DSV4_PROF_INDEXER, t0);
    }

    /* the rows: window positions, then entries (HCA: all; CSA: the selected),
     * as FP8 rows or fp32 ones */
    int n_rows = 0, fp8_rows = st->window_8 != NULL;
    long first = t - win + 1 > 0 ? t - win + 1 : 0;
    for (long p = first; p <= t; p++, n_rows++) {
        size_t slot = (size_t)(p % st->ring);
        if (fp8_rows)
            kv_rows_8[n_rows] = st->window_8 + slot * st->row_bytes;
        else
            kv_rows[n_rows] = st->window + slot * hd;
    }
    int n_comp = st->kind == DSV4_LAYER_HCA ? n_entries : st->kind == DSV4_LAYER_CSA ? n_selected : 0;
    for (int j = 0; j < n_comp; j++, n_rows++) {
        size_t entry = (size_t)(st->kind == DSV4_LAYER_HCA ? j : selected[j]);
        if (fp8_rows)
            kv_rows_8[n_rows] = st->entries_8 + entry * st->row_bytes;
        else
            kv_rows[n_rows] = st->entries + entry * hd;
    }

    if (prof)
        prof->s.flops += 4.0 * H * hd * n_rows;
    float *o = sc->o + (size_t)i * H * hd;
    const dsv4_kernels *k = e->k;
    float scale = 1.0f / sqrtf((float)hd);
    const uint8_t *const *rows_8 = fp8_rows ? kv_rows_8 : NULL;
    if (heads_parallel) {
        /* Heads in eights while that still gives every thread a group, else
         * in fours: the kernels read each key row once for a group (up to 8
         * heads on AVX-512 over FP8 rows, 4 elsewhere), so larger groups
         * decode and load each row fewer times. A head's bits do not depend
         * on its group. */
        int per = H / 8 >= omp_get_max_threads() ? 8 : 4, groups = (H + per - 1) / per;
#pragma omp parallel for schedule(static)
        for (int g = 0; g < groups; g++)
            attend_heads(k, o, q, hd, rd, kv_rows, rows_8, n_rows, L->attn_sink, scale, release, per * g,
                         per * g + per < H ? per * g + per : H);
    } else {
        attend_heads(k, o, q, hd, rd, kv_rows, rows_8, n_rows, L->attn_sink, scale, release, 0, H);
    }
    if (release)
        fmt_round_bf16_array(o, (size_t)H * hd);
    rope_vectors(o, H, hd, rd, cos_t, sin_t, 1, release);
}

/* Step 2 for one token: row i of sc, position t of st's sequence. */
static void attend_token(const dsv4_engine *e, const dsv4_layer_weights *L, attn_state *st, attn_state *sc,
                         int i, long t, int heads_parallel, int release, prof_counters *prof)
{
    const float *inv_freq = st->kind == DSV4_LAYER_WINDOW ? e->tables->inv_freq_window
                                                          : e->tables->inv_freq_compressed;
    rope_cos_sin(st->cos_t, st->sin_t, inv_freq, e->cfg.rope_dim / 2, t);
    advance_state(e, L, st, sc, i, t, st->cos_t, st->sin_t, release, prof);
    attend_row(e, L, st, sc, i, t, st->n_entries, st->n_index_keys, st->cos_t, st->sin_t, st->kv_rows, st->kv_rows_8,
               st->scores, st->selected, st->topk_scratch, heads_parallel, release, prof);
}

/* Step 2 for rows 0..n-1 of st's own scratch, the next n tokens of its
 * sequence: the state advances token by token first (cheap, in order), then
 * the tokens attend side by side, each seeing exactly what it would have seen
 * one at a time (window keys up to its position: the ring holds the window
 * plus a chunk; entries and indexer keys recorded per token). Few tokens:
 * one at a time with the heads split instead. */
static void attend_chunk(const dsv4_engine *e, const dsv4_layer_weights *L, attn_state *st, int n, long pos0,
                         int release, prof_counters *prof)
{
    int team = omp_get_max_threads();
    if (team > st->workers)
        team = st->workers;
    if (n < 2 || team < 2 || n < team) {
        for (int i = 0; i < n; i++)
            attend_token(e, L, st, st, i, pos0 + i, 1, release, prof);
        return;
    }
    const float *inv_freq = st->kind == DSV4_LAYER_WINDOW ? e->tables->inv_freq_window
                                                          : e->tables->inv_freq_compressed;
    int half = e->cfg.rope_dim / 2;
    for (int i = 0; i < n; i++) {
        rope_cos_sin(st->cos_t, st->sin_t, inv_freq, half, pos0 + i);
        advance_state(e, L, st, st, i, pos0 + i, st->cos_t, st->sin_t, release, prof);
        st->vis_entries[i] = st->n_entries;
        st->vis_keys[i] = st->n_index_keys;
    }
    prof_counters *row_prof = st->row_prof;
    int enabled = prof && prof->enabled;
    double wall = enabled ? prof_now() : 0.0;
    size_t me = (size_t)st->max_entries;
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
    for (int i = 0; i < n; i++) {
        int w = omp_get_thread_num();
        float *cos_t = st->w_cos + (size_t)w * half, *sin_t = st->w_sin + (size_t)w * half;
        row_prof[i] = (prof_counters){.enabled = enabled};
        double r0 = enabled ? prof_now() : 0.0;
        rope_cos_sin(cos_t, sin_t, inv_freq, half, pos0 + i);
        attend_row(e, L, st, st, i, pos0 + i, st->vis_entries[i], st->vis_keys[i], cos_t, sin_t,
                   st->w_rows ? st->w_rows + (size_t)w * st->max_rows : NULL,
                   st->w_rows_8 ? st->w_rows_8 + (size_t)w * st->max_rows : NULL,
                   st->w_scores ? st->w_scores + (size_t)w * me : NULL,
                   st->w_selected ? st->w_selected + (size_t)w * me : NULL,
                   st->w_topk ? st->w_topk + (size_t)w * me : NULL, 0, release, &row_prof[i]);
        row_prof[i].s.seconds = enabled ? prof_now() - r0 : 0.0;
    }
    if (prof)
        prof_add_rows(prof, row_prof, n, enabled ? prof_now() - wall : 0.0);
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
    linear_job jobs[64];
    /* In release numerics o is bf16 (rounded after attend and the inverse
     * RoPE): the exact bf16 products apply to wo_a's unquantized input too. */
    int wo_a_bf16 = release && is_quantized(&L->wo_a);
    for (int g0 = 0; g0 < G; g0 += 64) {
        int nj = 0;
        for (int g = g0; g < G && g < g0 + 64; g++)
            jobs[nj++] = (linear_job){&L->wo_a, st->oa, (size_t)G * r, st->o + g * gdim, qdim, n, g * r, (g + 1) * r,
                                      wo_a_bf16};
        linear_matmul_jobs(e->k, jobs, nj);
    }
    if (release) {
        round_rows(st->oa, (size_t)n * G * r);
        if (is_quantized(&L->wo_b))
            linear_act_quant_rows(e->k, st->oa, st->oa, n, G * r);
    }
    if (release && is_quantized(&L->wo_b))
        linear_matmul_e4m3act(e->k, &L->wo_b, out, st->oa, n);
    else
        linear_matmul(e->k, &L->wo_b, out, st->oa, n);
    if (release)
        round_rows(out, (size_t)n * c->dim);
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
    /* Inside a parallel region (rows of a batch side by side) the heads stay on this thread. */
    attend_token(e, &e->w.layers[layer], st, sc, i, st->n_seen, !omp_in_parallel(),
                 e->opt.numerics == DSV4_NUMERICS_RELEASE, prof);
    st->n_seen++;
    return 0;
}

int attention_core_chunk(const dsv4_engine *e, int layer, attn_state *st, int n, struct prof_counters *prof)
{
    if (layer != st->layer || n < 0 || n > st->max_chunk || st->n_seen + n > st->max_tokens)
        return -1;
    attend_chunk(e, &e->w.layers[layer], st, n, st->n_seen, e->opt.numerics == DSV4_NUMERICS_RELEASE, prof);
    st->n_seen += n;
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
    attend_chunk(e, L, st, n, pos0, release, NULL);
    output_chunk(e, L, st, n, out, release, NULL);
    st->n_seen += n;
}
