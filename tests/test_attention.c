/* Attention of one layer (window, CSA, HCA) on a tiny random layer built
 * here: against a naive whole-sequence reference written in double from
 * transformers' semantics (plain numerics), chunk and thread invariance in
 * both numerics, the compressor against a naive recomputation, the indexer's
 * scores and top-k against brute force, and the RoPE tables. */
#include "test_util.h"

#include <math.h>
#include <omp.h>

#include "attention.h"
#include "compressor.h"
#include "indexer.h"
#include "linear.h"
#include "model.h"
#include "rope.h"
#include "../simd/formats.h"

/* ---- a tiny model: layer 0 window, 1 CSA (ratio 4), 2 HCA (ratio 8) ---- */

enum { DIM = 128, HEADS = 4, HEAD_DIM = 64, ROPE_DIM = 16, Q_LORA = 32, GROUPS = 2, O_LORA = 16,
       WINDOW = 8, IHEADS = 4, IDIM = 32, TOPK = 3, CSA_RATIO = 4, HCA_RATIO = 8, N_LAYERS = 3 };

#define MAX_ALLOCS 256
static void *allocs[MAX_ALLOCS];
static int n_allocs;

static void *keep(void *p)
{
    assert_non_null(p);
    assert_true(n_allocs < MAX_ALLOCS);
    allocs[n_allocs++] = p;
    return p;
}

static void free_all(void)
{
    while (n_allocs > 0)
        free(allocs[--n_allocs]);
}

static float *rand_vec(size_t n, float amp, uint64_t *seed)
{
    float *v = keep(malloc(n * sizeof *v));
    for (size_t i = 0; i < n; i++)
        v[i] = amp * test_rand_f(seed);
    return v;
}

/* Norm weights near 1, so the norms matter but do not blow values up. */
static float *norm_vec(size_t n, uint64_t *seed)
{
    float *v = keep(malloc(n * sizeof *v));
    for (size_t i = 0; i < n; i++)
        v[i] = 1.0f + 0.25f * test_rand_f(seed);
    return v;
}

/* Random weights of magnitude amp in the given format. FP8 block scales vary
 * between 128x128 blocks so the block indexing matters. */
static dsv4_linear make_linear(dsv4_wformat fmt, int rows, int cols, float amp, uint64_t *seed)
{
    dsv4_linear W = {.fmt = fmt, .rows = rows, .cols = cols};
    size_t count = (size_t)rows * cols;
    if (fmt == DSV4_WF_F32) {
        W.data = rand_vec(count, amp, seed);
    } else if (fmt == DSV4_WF_BF16) {
        uint16_t *w = keep(malloc(count * sizeof *w));
        for (size_t i = 0; i < count; i++)
            w[i] = fmt_f32_to_bf16(amp * test_rand_f(seed));
        W.data = w;
    } else {
        int rb = (rows + 127) / 128, cb = (cols + 127) / 128;
        uint8_t *scale = keep(malloc((size_t)rb * cb));
        for (int i = 0; i < rb * cb; i++)
            scale[i] = (uint8_t)(118 + i % 3);
        uint8_t *w = keep(malloc(count));
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++) {
                float s = fmt_e8m0_to_f32(scale[(r / 128) * cb + k / 128]);
                w[(size_t)r * cols + k] = fmt_f32_to_e4m3(amp * test_rand_f(seed) / s);
            }
        W.data = w;
        W.scale = scale;
    }
    return W;
}

static dsv4_compressor_weights make_compressor(int ratio, int d, int overlap, uint64_t *seed)
{
    int c = 1 + overlap;
    float amp = 1.0f / sqrtf((float)DIM);
    dsv4_compressor_weights cw = {.ratio = ratio, .out_dim = d, .overlap = overlap};
    cw.wkv = make_linear(DSV4_WF_BF16, c * d, DIM, amp, seed);
    /* Gates several units wide, so the pooling weights are far from uniform. */
    cw.wgate = make_linear(DSV4_WF_BF16, c * d, DIM, 4.0f * amp, seed);
    cw.ape = rand_vec((size_t)ratio * c * d, 1.0f, seed);
    cw.norm = norm_vec((size_t)d, seed);
    return cw;
}

/* One engine's weights at a time: make_engine overwrites them (two engines
 * built from the same seed hold the same values). */
static dsv4_layer_weights layer_store[N_LAYERS];
static model_tables tables_store;

static void make_engine(dsv4_engine *e, dsv4_numerics numerics, uint64_t seed)
{
    memset(e, 0, sizeof *e);
    dsv4_config *c = &e->cfg;
    c->dim = DIM;
    c->n_layers = N_LAYERS;
    c->n_heads = HEADS;
    c->head_dim = HEAD_DIM;
    c->rope_dim = ROPE_DIM;
    c->q_lora_rank = Q_LORA;
    c->o_groups = GROUPS;
    c->o_lora_rank = O_LORA;
    c->window = WINDOW;
    c->index_n_heads = IHEADS;
    c->index_head_dim = IDIM;
    c->index_topk = TOPK;
    c->norm_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->compress_rope_theta = 160000.0f;
    c->yarn_factor = 16.0f;
    c->yarn_original_seq_len = 64;
    c->yarn_beta_fast = 32.0f;
    c->yarn_beta_slow = 1.0f;
    c->kind[0] = DSV4_LAYER_WINDOW;
    c->kind[1] = DSV4_LAYER_CSA;
    c->compress_ratio[1] = CSA_RATIO;
    c->kind[2] = DSV4_LAYER_HCA;
    c->compress_ratio[2] = HCA_RATIO;

    for (int l = 0; l < N_LAYERS; l++) {
        dsv4_layer_weights *L = &layer_store[l];
        memset(L, 0, sizeof *L);
        L->wq_a = make_linear(DSV4_WF_FP8, Q_LORA, DIM, 1.0f / sqrtf(DIM), &seed);
        L->q_norm = norm_vec(Q_LORA, &seed);
        L->wq_b = make_linear(DSV4_WF_FP8, HEADS * HEAD_DIM, Q_LORA, 1.0f / sqrtf(Q_LORA), &seed);
        L->wkv = make_linear(DSV4_WF_FP8, HEAD_DIM, DIM, 1.0f / sqrtf(DIM), &seed);
        L->kv_norm = norm_vec(HEAD_DIM, &seed);
        L->wo_a = make_linear(DSV4_WF_FP8, GROUPS * O_LORA, HEADS * HEAD_DIM / GROUPS,
                              1.0f / sqrtf(HEADS * HEAD_DIM / GROUPS), &seed);
        L->wo_b = make_linear(DSV4_WF_F32, DIM, GROUPS * O_LORA, 1.0f / sqrtf(GROUPS * O_LORA), &seed);
        L->attn_sink = rand_vec(HEADS, 2.0f, &seed);
        if (c->kind[l] != DSV4_LAYER_WINDOW)
            L->compressor = make_compressor(c->compress_ratio[l], HEAD_DIM, c->kind[l] == DSV4_LAYER_CSA, &seed);
        if (c->kind[l] == DSV4_LAYER_CSA) {
            L->indexer.wq_b = make_linear(DSV4_WF_FP8, IHEADS * IDIM, Q_LORA, 1.0f / sqrtf(Q_LORA), &seed);
            L->indexer.weights_proj = make_linear(DSV4_WF_BF16, IHEADS, DIM, 1.0f / sqrtf(DIM), &seed);
            L->indexer.compressor = make_compressor(CSA_RATIO, IDIM, 1, &seed);
        }
    }
    e->w.layers = layer_store;
    e->opt.numerics = numerics;
    e->k = kernels_select(NULL);
    tables_store.inv_freq_window = keep(malloc(ROPE_DIM / 2 * sizeof(float)));
    tables_store.inv_freq_compressed = keep(malloc(ROPE_DIM / 2 * sizeof(float)));
    rope_inv_freq(tables_store.inv_freq_window, c, 0);
    rope_inv_freq(tables_store.inv_freq_compressed, c, 1);
    e->tables = &tables_store;
}

/* Feeds x [T][DIM] in chunks of the given sizes (cycled); out [T][DIM]. */
static void run_layer(const dsv4_engine *e, int layer, const float *x, int T, const int *chunks, int n_chunks,
                      float *out)
{
    int max_chunk = 0;
    for (int i = 0; i < n_chunks; i++)
        max_chunk = chunks[i] > max_chunk ? chunks[i] : max_chunk;
    attn_state *st = NULL;
    dsv4_error err = {{0}};
    assert_int_equal(attn_state_new(&st, e, layer, T, max_chunk, &err), 0);
    int pos = 0, ci = 0;
    while (pos < T) {
        int n = chunks[ci++ % n_chunks];
        if (n > T - pos)
            n = T - pos;
        attention_forward(e, layer, st, x + (size_t)pos * DIM, n, pos, out + (size_t)pos * DIM);
        pos += n;
    }
    attn_state_free(st);
}

/* ---- the naive reference: transformers' whole-sequence math in double ---- */

static double *dense(const dsv4_linear *W)
{
    double *d = keep(malloc((size_t)W->rows * W->cols * sizeof *d));
    float *row = malloc((size_t)W->cols * sizeof *row);
    for (int r = 0; r < W->rows; r++) {
        linear_row(W, r, row);
        for (int k = 0; k < W->cols; k++)
            d[(size_t)r * W->cols + k] = row[k];
    }
    free(row);
    return d;
}

static void matvec(double *y, const double *W, int rows, int cols, const double *x)
{
    for (int r = 0; r < rows; r++) {
        double acc = 0;
        for (int k = 0; k < cols; k++)
            acc += W[(size_t)r * cols + k] * x[k];
        y[r] = acc;
    }
}

static void rmsnorm_d(double *x, int n, const float *w)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + 1e-6);
    for (int i = 0; i < n; i++)
        x[i] = x[i] * r * (w ? w[i] : 1.0);
}

/* transformers' apply_rotary_pos_emb on the last ROPE_DIM dims of v[dim]:
 * rotate_half pairs (x[2i], x[2i+1]) -> (-x[2i+1], x[2i]). */
static void rope_d(double *v, int dim, const float *inv_freq, double pos, int inverse)
{
    double *x = v + dim - ROPE_DIM;
    for (int i = 0; i < ROPE_DIM / 2; i++) {
        double a = inv_freq[i] * pos, c = cos(a), s = inverse ? -sin(a) : sin(a);
        double x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = x0 * c - x1 * s;
        x[2 * i + 1] = x1 * c + x0 * s;
    }
}

/* Entries j < T/ratio of a compressor over the whole sequence (the oracle's
 * prefill): a/g [T][c*d] (g without ape). HCA pools window j; CSA pools the
 * first halves of window j-1 and the second halves of window j. */
static double *pool_all(const double *a, const double *g, int T, const dsv4_compressor_weights *cw, int d,
                        const float *inv_freq)
{
    int r = cw->ratio, c = 1 + cw->overlap, w = c * d, n_ent = T / r;
    double *ent = keep(calloc((size_t)(n_ent ? n_ent : 1) * d, sizeof *ent));
    double *val = malloc((size_t)2 * r * sizeof *val), *sc = malloc((size_t)2 * r * sizeof *sc);
    for (int j = 0; j < n_ent; j++) {
        for (int e = 0; e < d; e++) {
            int n = 0;
            if (cw->overlap && j > 0)
                for (int t = (j - 1) * r; t < j * r; t++, n++) {
                    val[n] = a[(size_t)t * w + e];
                    sc[n] = g[(size_t)t * w + e] + cw->ape[(size_t)(t % r) * w + e];
                }
            int off = cw->overlap ? d : 0;
            for (int t = j * r; t < (j + 1) * r; t++, n++) {
                val[n] = a[(size_t)t * w + off + e];
                sc[n] = g[(size_t)t * w + off + e] + cw->ape[(size_t)(t % r) * w + off + e];
            }
            double m = -INFINITY, den = 0, acc = 0;
            for (int s = 0; s < n; s++)
                m = fmax(m, sc[s]);
            for (int s = 0; s < n; s++)
                den += exp(sc[s] - m);
            for (int s = 0; s < n; s++)
                acc += val[s] * exp(sc[s] - m) / den;
            ent[(size_t)j * d + e] = acc;
        }
        rmsnorm_d(ent + (size_t)j * d, d, cw->norm);
        rope_d(ent + (size_t)j * d, d, inv_freq, (double)j * r, 0);
    }
    free(val);
    free(sc);
    return ent;
}

/* vis_shift = 0: query t sees entries j < floor((t+1)/ratio) (the oracle);
 * vis_shift = 1: j < floor(t/ratio), to show the test can tell them apart. */
static void reference_layer(const dsv4_engine *e, int layer, const float *x, int T, double *out, int vis_shift)
{
    const dsv4_layer_weights *L = &e->w.layers[layer];
    int kind = e->cfg.kind[layer], r = e->cfg.compress_ratio[layer];
    const float *inv_freq = kind == DSV4_LAYER_WINDOW ? e->tables->inv_freq_window
                                                      : e->tables->inv_freq_compressed;
    int qd = HEADS * HEAD_DIM;
    double *Wqa = dense(&L->wq_a), *Wqb = dense(&L->wq_b), *Wkv = dense(&L->wkv);
    double *Woa = dense(&L->wo_a), *Wob = dense(&L->wo_b);
    double *xd = keep(malloc((size_t)DIM * sizeof *xd));
    double *qr = keep(malloc((size_t)T * Q_LORA * sizeof *qr));
    double *q = keep(malloc((size_t)T * qd * sizeof *q));
    double *kv = keep(malloc((size_t)T * HEAD_DIM * sizeof *kv));
    double *ca = NULL, *cg = NULL, *ent = NULL, *ia = NULL, *ig = NULL, *ikeys = NULL, *iq = NULL, *iw = NULL;
    int cw = (kind == DSV4_LAYER_CSA ? 2 : 1) * HEAD_DIM;
    double *Cwkv = NULL, *Cwgate = NULL, *Iwkv = NULL, *Iwgate = NULL, *Iwqb = NULL, *Iwp = NULL;
    if (kind != DSV4_LAYER_WINDOW) {
        ca = keep(malloc((size_t)T * cw * sizeof *ca));
        cg = keep(malloc((size_t)T * cw * sizeof *cg));
        Cwkv = dense(&L->compressor.wkv);
        Cwgate = dense(&L->compressor.wgate);
    }
    if (kind == DSV4_LAYER_CSA) {
        Iwkv = dense(&L->indexer.compressor.wkv);
        Iwgate = dense(&L->indexer.compressor.wgate);
        Iwqb = dense(&L->indexer.wq_b);
        Iwp = dense(&L->indexer.weights_proj);
        ia = keep(malloc((size_t)T * 2 * IDIM * sizeof *ia));
        ig = keep(malloc((size_t)T * 2 * IDIM * sizeof *ig));
        iq = keep(malloc((size_t)T * IHEADS * IDIM * sizeof *iq));
        iw = keep(malloc((size_t)T * IHEADS * sizeof *iw));
    }
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < DIM; i++)
            xd[i] = x[(size_t)t * DIM + i];
        matvec(qr + (size_t)t * Q_LORA, Wqa, Q_LORA, DIM, xd);
        rmsnorm_d(qr + (size_t)t * Q_LORA, Q_LORA, L->q_norm);
        matvec(q + (size_t)t * qd, Wqb, qd, Q_LORA, qr + (size_t)t * Q_LORA);
        for (int h = 0; h < HEADS; h++) {
            rmsnorm_d(q + (size_t)t * qd + h * HEAD_DIM, HEAD_DIM, NULL);
            rope_d(q + (size_t)t * qd + h * HEAD_DIM, HEAD_DIM, inv_freq, t, 0);
        }
        matvec(kv + (size_t)t * HEAD_DIM, Wkv, HEAD_DIM, DIM, xd);
        rmsnorm_d(kv + (size_t)t * HEAD_DIM, HEAD_DIM, L->kv_norm);
        rope_d(kv + (size_t)t * HEAD_DIM, HEAD_DIM, inv_freq, t, 0);
        if (kind != DSV4_LAYER_WINDOW) {
            matvec(ca + (size_t)t * cw, Cwkv, cw, DIM, xd);
            matvec(cg + (size_t)t * cw, Cwgate, cw, DIM, xd);
        }
        if (kind == DSV4_LAYER_CSA) {
            matvec(ia + (size_t)t * 2 * IDIM, Iwkv, 2 * IDIM, DIM, xd);
            matvec(ig + (size_t)t * 2 * IDIM, Iwgate, 2 * IDIM, DIM, xd);
            matvec(iq + (size_t)t * IHEADS * IDIM, Iwqb, IHEADS * IDIM, Q_LORA, qr + (size_t)t * Q_LORA);
            for (int h = 0; h < IHEADS; h++)
                rope_d(iq + ((size_t)t * IHEADS + h) * IDIM, IDIM, inv_freq, t, 0);
            matvec(iw + (size_t)t * IHEADS, Iwp, IHEADS, DIM, xd);
            for (int h = 0; h < IHEADS; h++) /* softmax_scale * weights_scaling */
                iw[(size_t)t * IHEADS + h] *= pow(IDIM, -0.5) * pow(IHEADS, -0.5);
        }
    }
    if (kind != DSV4_LAYER_WINDOW)
        ent = pool_all(ca, cg, T, &L->compressor, HEAD_DIM, inv_freq);
    if (kind == DSV4_LAYER_CSA)
        ikeys = pool_all(ia, ig, T, &L->indexer.compressor, IDIM, inv_freq);

    int max_rows = WINDOW + T;
    const double **rows = keep(malloc((size_t)max_rows * sizeof *rows));
    double *scores = keep(malloc((size_t)(T + 1) * sizeof *scores));
    int *order = keep(malloc((size_t)(T + 1) * sizeof *order));
    double *logit = keep(malloc((size_t)(max_rows + 1) * sizeof *logit));
    double *o = keep(malloc((size_t)qd * sizeof *o));
    double *oa = keep(malloc((size_t)GROUPS * O_LORA * sizeof *oa));
    for (int t = 0; t < T; t++) {
        int n = 0;
        for (int p = t - WINDOW + 1 < 0 ? 0 : t - WINDOW + 1; p <= t; p++)
            rows[n++] = kv + (size_t)p * HEAD_DIM;
        int visible = r ? (t + 1 - vis_shift) / r : 0;
        if (kind == DSV4_LAYER_HCA)
            for (int j = 0; j < visible; j++)
                rows[n++] = ent + (size_t)j * HEAD_DIM;
        if (kind == DSV4_LAYER_CSA && visible > 0) {
            for (int s = 0; s < visible; s++) {
                double acc = 0;
                for (int h = 0; h < IHEADS; h++) {
                    double dot = 0;
                    for (int i = 0; i < IDIM; i++)
                        dot += iq[((size_t)t * IHEADS + h) * IDIM + i] * ikeys[(size_t)s * IDIM + i];
                    acc += iw[(size_t)t * IHEADS + h] * (dot > 0 ? dot : 0);
                }
                scores[s] = acc;
                order[s] = s;
            }
            /* Brute-force ranking: selection sort, higher score first, ties to the lower index. */
            for (int a = 0; a < visible; a++)
                for (int b = a + 1; b < visible; b++)
                    if (scores[order[b]] > scores[order[a]] ||
                        (scores[order[b]] == scores[order[a]] && order[b] < order[a])) {
                        int tmp = order[a];
                        order[a] = order[b];
                        order[b] = tmp;
                    }
            int k = visible < TOPK ? visible : TOPK;
            for (int j = 0; j < k; j++)
                rows[n++] = ent + (size_t)order[j] * HEAD_DIM;
        }
        for (int h = 0; h < HEADS; h++) {
            const double *qh = q + (size_t)t * qd + h * HEAD_DIM;
            double m = L->attn_sink[h];
            for (int j = 0; j < n; j++) {
                double dot = 0;
                for (int i = 0; i < HEAD_DIM; i++)
                    dot += qh[i] * rows[j][i];
                logit[j] = dot / sqrt((double)HEAD_DIM);
                m = fmax(m, logit[j]);
            }
            double den = exp(L->attn_sink[h] - m);
            for (int j = 0; j < n; j++)
                den += exp(logit[j] - m);
            double *oh = o + h * HEAD_DIM;
            for (int i = 0; i < HEAD_DIM; i++)
                oh[i] = 0;
            for (int j = 0; j < n; j++)
                for (int i = 0; i < HEAD_DIM; i++)
                    oh[i] += exp(logit[j] - m) / den * rows[j][i];
            rope_d(oh, HEAD_DIM, inv_freq, t, 1);
        }
        int gdim = qd / GROUPS;
        for (int g = 0; g < GROUPS; g++)
            for (int rr = 0; rr < O_LORA; rr++) {
                double acc = 0;
                for (int k = 0; k < gdim; k++)
                    acc += Woa[(size_t)(g * O_LORA + rr) * gdim + k] * o[g * gdim + k];
                oa[g * O_LORA + rr] = acc;
            }
        matvec(out + (size_t)t * DIM, Wob, DIM, GROUPS * O_LORA, oa);
    }
}

static double max_rel_diff(const float *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / den;
}

static float *input_seq(int T, uint64_t seed)
{
    /* Like an attn_norm output: rms ~1. */
    return rand_vec((size_t)T * DIM, 1.7f, &seed);
}

/* ---- tests ---- */

static void test_plain_matches_reference(void **state)
{
    (void)state;
    dsv4_engine e;
    make_engine(&e, DSV4_NUMERICS_PLAIN, 11);
    enum { T = 45 };
    float *x = input_seq(T, 5);
    float *out = keep(malloc((size_t)T * DIM * sizeof *out));
    double *ref = keep(malloc((size_t)T * DIM * sizeof *ref));
    int whole[] = {T};
    const dsv4_kernels *tables[] = {kernels_scalar(), kernels_select(NULL)};
    for (int layer = 0; layer < N_LAYERS; layer++) {
        reference_layer(&e, layer, x, T, ref, 0);
        for (int kt = 0; kt < 2; kt++) {
            e.k = tables[kt];
            run_layer(&e, layer, x, T, whole, 1, out);
            double d = max_rel_diff(out, ref, (size_t)T * DIM);
            if (d > 2e-5)
                fail_msg("layer %d, %s kernels: max |out - reference| / max |reference| = %g", layer, e.k->isa, d);
        }
        if (layer != 0) {
            /* Off-by-one visibility (floor(t/ratio)) must be visible in the output. */
            reference_layer(&e, layer, x, T, ref, 1);
            double shifted = max_rel_diff(out, ref, (size_t)T * DIM);
            if (shifted < 1e-3)
                fail_msg("layer %d: output does not distinguish floor(t/ratio) visibility (%g)", layer, shifted);
        }
    }
    free_all();
}

static void check_chunk_invariance(dsv4_numerics numerics)
{
    dsv4_engine e;
    make_engine(&e, numerics, 21);
    enum { T = 41 };
    float *x = input_seq(T, 8);
    float *a = keep(malloc((size_t)T * DIM * sizeof *a));
    float *b = keep(malloc((size_t)T * DIM * sizeof *b));
    int whole[] = {T}, single[] = {1}, mixed[] = {3, 5, 1, 7, 2, 9};
    for (int layer = 0; layer < N_LAYERS; layer++) {
        run_layer(&e, layer, x, T, whole, 1, a);
        for (size_t i = 0; i < (size_t)T * DIM; i++)
            assert_true(isfinite(a[i]));
        run_layer(&e, layer, x, T, single, 1, b);
        if (memcmp(a, b, (size_t)T * DIM * sizeof *a) != 0)
            fail_msg("numerics %d layer %d: one chunk != one token at a time", numerics, layer);
        run_layer(&e, layer, x, T, mixed, 6, b);
        if (memcmp(a, b, (size_t)T * DIM * sizeof *a) != 0)
            fail_msg("numerics %d layer %d: one chunk != mixed chunks", numerics, layer);
    }
    free_all();
}

static void test_chunk_invariance_plain(void **state)
{
    (void)state;
    check_chunk_invariance(DSV4_NUMERICS_PLAIN);
}

static void test_chunk_invariance_release(void **state)
{
    (void)state;
    check_chunk_invariance(DSV4_NUMERICS_RELEASE);
}

static void test_thread_invariance(void **state)
{
    (void)state;
    enum { T = 37 };
    int whole[] = {T};
    int saved = omp_get_max_threads();
    for (int numerics = 0; numerics < 2; numerics++) {
        dsv4_engine e;
        make_engine(&e, (dsv4_numerics)numerics, 31);
        float *x = input_seq(T, 9);
        float *a = keep(malloc((size_t)T * DIM * sizeof *a));
        float *b = keep(malloc((size_t)T * DIM * sizeof *b));
        for (int layer = 0; layer < N_LAYERS; layer++) {
            omp_set_num_threads(1);
            run_layer(&e, layer, x, T, whole, 1, a);
            omp_set_num_threads(3);
            run_layer(&e, layer, x, T, whole, 1, b);
            if (memcmp(a, b, (size_t)T * DIM * sizeof *a) != 0)
                fail_msg("numerics %d layer %d: 1 thread != 3 threads", numerics, layer);
        }
        free_all();
    }
    omp_set_num_threads(saved);
}

/* Release numerics keep the window and the entries as FP8 rows wherever
 * the kernels have attend_fp8, and as fp32 rows holding the same simulated
 * values where they do not: since the FP8 simulation is the storage format,
 * the two give the same bits, in one chunk and token by token. */
static void test_fp8_rows_equal_fp32_rows(void **state)
{
    (void)state;
    enum { T = 45 };
    int whole[] = {T}, single[] = {1};
    dsv4_engine fp8, fp32;
    make_engine(&fp8, DSV4_NUMERICS_RELEASE, 61);
    make_engine(&fp32, DSV4_NUMERICS_RELEASE, 61);
    assert_non_null(fp8.k->attend_fp8);
    dsv4_kernels without = *fp8.k;
    without.attend_fp8 = NULL;
    fp32.k = &without;
    float *x = input_seq(T, 6);
    float *a = keep(malloc((size_t)T * DIM * sizeof *a));
    float *b = keep(malloc((size_t)T * DIM * sizeof *b));
    for (int layer = 0; layer < N_LAYERS; layer++)
        for (int by_token = 0; by_token < 2; by_token++) {
            run_layer(&fp8, layer, x, T, by_token ? single : whole, 1, a);
            run_layer(&fp32, layer, x, T, by_token ? single : whole, 1, b);
            if (memcmp(a, b, (size_t)T * DIM * sizeof *a) != 0)
                fail_msg("layer %d (%s): FP8 rows != fp32 rows", layer, by_token ? "token by token" : "one chunk");
        }
    free_all();
}

/* The KV bytes a layer's state reports after T tokens, against the layout
 * counted here: window rows (at most WINDOW), one entry per `ratio` tokens,
 * and in CSA layers one indexer key per entry; release numerics keep FP8
 * rows (bf16 RoPE tail + e4m3 codes + a scale per 64, padded to 8) and FP4
 * keys (IDIM/2 code bytes + IDIM/32 scales), plain numerics fp32. */
static void test_kv_bytes(void **state)
{
    (void)state;
    enum { T = 45 };
    const size_t fp8_row = (2 * ROPE_DIM + (HEAD_DIM - ROPE_DIM) + (HEAD_DIM - ROPE_DIM + 63) / 64 + 7) / 8 * 8;
    for (int numerics = 0; numerics < 2; numerics++) {
        int release = numerics == DSV4_NUMERICS_RELEASE;
        dsv4_engine e;
        make_engine(&e, (dsv4_numerics)numerics, 71);
        float *x = input_seq(T, 3);
        float *out = keep(malloc((size_t)T * DIM * sizeof *out));
        size_t row = release ? fp8_row : HEAD_DIM * sizeof(float), key = release ? IDIM / 2 + IDIM / 32 : IDIM * 4;
        for (int layer = 0; layer < N_LAYERS; layer++) {
            attn_state *st = NULL;
            dsv4_error err = {{0}};
            assert_int_equal(attn_state_new(&st, &e, layer, T, 8, &err), 0);
            assert_int_equal(attn_state_kv_bytes(st), 0);
            for (int pos = 0; pos < T; pos += 5) {
                attention_forward(&e, layer, st, x + (size_t)pos * DIM, 5, pos, out + (size_t)pos * DIM);
                int seen = pos + 5, kind = e.cfg.kind[layer];
                size_t entries = kind == DSV4_LAYER_WINDOW ? 0 : (size_t)(seen / e.cfg.compress_ratio[layer]);
                size_t expect = (size_t)(seen < WINDOW ? seen : WINDOW) * row + entries * row +
                                (kind == DSV4_LAYER_CSA ? entries * key : 0);
                if (attn_state_kv_bytes(st) != expect)
                    fail_msg("numerics %d layer %d after %d tokens: %zu KV bytes, expected %zu", numerics, layer,
                             seen, attn_state_kv_bytes(st), expect);
            }
            attn_state_free(st);
        }
        free_all();
    }
}

/* Release numerics round at many points: close to plain, never equal to it. */
static void test_release_near_plain(void **state)
{
    (void)state;
    enum { T = 33 };
    int whole[] = {T};
    dsv4_engine plain, release;
    make_engine(&plain, DSV4_NUMERICS_PLAIN, 41);
    make_engine(&release, DSV4_NUMERICS_RELEASE, 41);
    /* FP4 indexer scores may legitimately pick other entries than fp32 ones;
     * with k above the entry count both select everything, which isolates
     * the rounding of the values from the selection. */
    plain.cfg.index_topk = release.cfg.index_topk = T;
    float *x = input_seq(T, 4);
    float *a = keep(malloc((size_t)T * DIM * sizeof *a));
    float *b = keep(malloc((size_t)T * DIM * sizeof *b));
    double *ad = keep(malloc((size_t)T * DIM * sizeof *ad));
    for (int layer = 0; layer < N_LAYERS; layer++) {
        run_layer(&plain, layer, x, T, whole, 1, a);
        run_layer(&release, layer, x, T, whole, 1, b);
        for (size_t i = 0; i < (size_t)T * DIM; i++)
            ad[i] = a[i];
        double d = max_rel_diff(b, ad, (size_t)T * DIM);
        if (!(d > 1e-4 && d < 0.1))
            fail_msg("layer %d: release vs plain relative difference %g outside (1e-4, 0.1)", layer, d);
        /* Every output is bf16 in release numerics. */
        for (size_t i = 0; i < (size_t)T * DIM; i++)
            assert_true(b[i] == fmt_round_bf16(b[i]));
    }
    free_all();
}

static void test_reset_restarts_sequence(void **state)
{
    (void)state;
    dsv4_engine e;
    make_engine(&e, DSV4_NUMERICS_RELEASE, 51);
    enum { T = 19 };
    float *x = input_seq(T, 3);
    float *a = keep(malloc((size_t)T * DIM * sizeof *a));
    float *b = keep(malloc((size_t)T * DIM * sizeof *b));
    for (int layer = 0; layer < N_LAYERS; layer++) {
        attn_state *st = NULL;
        dsv4_error err = {{0}};
        assert_int_equal(attn_state_new(&st, &e, layer, T, T, &err), 0);
        attention_forward(&e, layer, st, x, T, 0, a);
        attn_state_reset(st);
        attention_forward(&e, layer, st, x, T, 0, b);
        assert_memory_equal(a, b, (size_t)T * DIM * sizeof *a);
        attn_state_free(st);
    }
    free_all();
}

static void test_state_new_rejects_bad_arguments(void **state)
{
    (void)state;
    dsv4_engine e;
    make_engine(&e, DSV4_NUMERICS_PLAIN, 61);
    attn_state *st = NULL;
    dsv4_error err = {{0}};
    assert_int_equal(attn_state_new(&st, &e, N_LAYERS, 16, 4, &err), -1);
    assert_non_null(strstr(err.message, "layer"));
    assert_int_equal(attn_state_new(&st, &e, 0, 16, 0, &err), -1);
    assert_non_null(strstr(err.message, "max_chunk"));
    assert_null(st);
    free_all();
}

/* ---- compressor ---- */

static void check_compressor(int ratio, int d, int overlap, int T)
{
    uint64_t seed = 71 + (uint64_t)overlap;
    int w = (1 + overlap) * d;
    float *a = rand_vec((size_t)T * w, 1.0f, &seed);
    float *g = rand_vec((size_t)T * w, 3.0f, &seed);
    float *ape = rand_vec((size_t)ratio * w, 1.0f, &seed);
    compressor_state cs;
    assert_int_equal(compressor_state_init(&cs, ratio, d, overlap), 0);
    float *out = keep(malloc((size_t)d * sizeof *out));
    double *ref = keep(malloc((size_t)2 * ratio * sizeof *ref));
    int emitted = 0;
    for (int t = 0; t < T; t++) {
        int got = compressor_push(&cs, t, a + (size_t)t * w, g + (size_t)t * w, ape, out);
        assert_int_equal(got, (t + 1) % ratio == 0);
        if (!got)
            continue;
        int j = t / ratio;
        assert_int_equal(j, emitted);
        emitted++;
        /* Naive: gather this entry's slots straight from the token rows. */
        for (int e = 0; e < d; e++) {
            double val[256], sc[256];
            int n = 0;
            if (overlap && j > 0)
                for (int s = (j - 1) * ratio; s < j * ratio; s++, n++) {
                    val[n] = a[(size_t)s * w + e];
                    sc[n] = (double)g[(size_t)s * w + e] + ape[(size_t)(s % ratio) * w + e];
                }
            for (int s = j * ratio; s < (j + 1) * ratio; s++, n++) {
                int off = overlap ? d : 0;
                val[n] = a[(size_t)s * w + off + e];
                sc[n] = (double)g[(size_t)s * w + off + e] + ape[(size_t)(s % ratio) * w + off + e];
            }
            double m = -INFINITY, den = 0, acc = 0;
            for (int s = 0; s < n; s++)
                m = fmax(m, sc[s]);
            for (int s = 0; s < n; s++)
                den += exp(sc[s] - m);
            for (int s = 0; s < n; s++)
                acc += val[s] * exp(sc[s] - m) / den;
            if (fabs(out[e] - acc) > 2e-6 * (1 + fabs(acc)))
                fail_msg("ratio %d overlap %d entry %d channel %d: %g vs naive %g", ratio, overlap, j, e,
                         out[e], acc);
        }
    }
    assert_int_equal(emitted, T / ratio);
    compressor_state_free(&cs);
    free_all();
}

static void test_compressor_hca_pooling(void **state)
{
    (void)state;
    check_compressor(8, 24, 0, 37);
    check_compressor(128, 8, 0, 300);
}

static void test_compressor_csa_pooling(void **state)
{
    (void)state;
    check_compressor(4, 24, 1, 37);
}

/* ---- indexer ---- */

static void test_indexer_scores_and_topk(void **state)
{
    (void)state;
    uint64_t seed = 81;
    enum { N = 300, H = 5, D = 32, K = 17 };
    float *q = rand_vec((size_t)H * D, 1.0f, &seed);
    float *w = rand_vec(H, 1.0f, &seed);
    float *keys = rand_vec((size_t)N * D, 1.0f, &seed);
    float *scores = keep(malloc(N * sizeof *scores));
    indexer_scores(kernels_select(NULL), scores, q, w, keys, N, H, D, 0);
    for (int s = 0; s < N; s++) {
        double acc = 0;
        for (int h = 0; h < H; h++) {
            double dot = 0;
            for (int i = 0; i < D; i++)
                dot += (double)q[h * D + i] * keys[(size_t)s * D + i];
            acc += w[h] * fmax(dot, 0.0);
        }
        assert_true(fabs(scores[s] - acc) < 1e-4 * (1 + fabs(acc)));
    }
    /* Ties: entries 10, 20, 30 share the best score; 5 and 7 share a middling one. */
    for (int s = 0; s < N; s++)
        scores[s] = (float)(s % 13) * 0.01f - 1.0f;
    scores[10] = scores[20] = scores[30] = 5.0f;
    scores[7] = scores[5] = 4.0f;
    int sel[K], scratch[N];
    assert_int_equal(indexer_select(kernels_scalar(), sel, scores, N, 4, scratch), 4);
    assert_int_equal(sel[0], 5);
    assert_int_equal(sel[1], 10);
    assert_int_equal(sel[2], 20);
    assert_int_equal(sel[3], 30);
    assert_int_equal(indexer_select(kernels_scalar(), sel, scores, 3, K, scratch), 3); /* fewer visible than k */
    assert_int_equal(indexer_select(kernels_scalar(), sel, scores, 0, K, scratch), 0);

    /* Release: every score is a bf16 value, close to the fp32 one. */
    float *plain = keep(malloc(N * sizeof *plain));
    indexer_scores(kernels_select(NULL), plain, q, w, keys, N, H, D, 0);
    indexer_scores(kernels_select(NULL), scores, q, w, keys, N, H, D, 1);
    for (int s = 0; s < N; s++) {
        assert_true(scores[s] == fmt_round_bf16(scores[s]));
        assert_true(fabs(scores[s] - plain[s]) < 0.02 * (1 + fabs(plain[s])));
    }
    free_all();
}

/* indexer_scores_fp4 splits the keys into calls by thread count (dynamic,
 * whole key groups): every split gives the bits of one call over all keys. */
static void test_indexer_fp4_split_invariance(void **state)
{
    (void)state;
    uint64_t seed = 83;
    enum { N = 40003, H = 64, D = 128 }; /* calls of 5008 / 2512 / 1680 keys for 1 / 2 / 3 threads; a ragged end */
    const dsv4_kernels *k = kernels_select(NULL);
    float *q = rand_vec((size_t)H * D, 1.0f, &seed), *w = rand_vec(H, 0.1f, &seed);
    float *qs = keep(malloc((size_t)H * (D / 32) * sizeof *qs)), key[D];
    int8_t *qc = keep(malloc((size_t)H * D));
    size_t groups = (N + INDEX_FP4_GROUP - 1) / INDEX_FP4_GROUP;
    uint8_t *keys = keep(calloc(groups, INDEX_FP4_GROUP_BYTES(D)));
    uint8_t *ks = keep(calloc(groups, INDEX_FP4_GROUP_SCALES(D)));
    fmt_index_query_pack(qc, qs, q, (size_t)H * D);
    for (int s = 0; s < N; s++) {
        for (int i = 0; i < D; i++)
            key[i] = (float)((s * 37 + i * 11) % 23 - 11) * 0.125f;
        fmt_index_key_pack(keys, ks, (size_t)s, D, key);
    }
    float *whole = keep(malloc(N * sizeof *whole)), *split = keep(malloc(N * sizeof *split));
    k->index_scores_fp4(whole, qc, qs, w, keys, ks, N, H, D);
    int threads = omp_get_max_threads();
    for (int t = 1; t <= 3; t++) {
        omp_set_num_threads(t);
        memset(split, 0xff, N * sizeof *split);
        indexer_scores_fp4(k, split, qc, qs, w, keys, ks, N, H, D);
        assert_memory_equal(split, whole, N * sizeof *split);
    }
    omp_set_num_threads(threads);
    free_all();
}

/* ---- RoPE ---- */

static void test_rope_tables(void **state)
{
    (void)state;
    dsv4_config c;
    memset(&c, 0, sizeof c);
    c.rope_dim = 64;
    c.rope_theta = 10000.0f;
    c.compress_rope_theta = 160000.0f;
    c.yarn_factor = 16.0f;
    c.yarn_original_seq_len = 65536;
    c.yarn_beta_fast = 32.0f;
    c.yarn_beta_slow = 1.0f;
    float win[32], comp[32];
    rope_inv_freq(win, &c, 0);
    rope_inv_freq(comp, &c, 1);
    for (int i = 0; i < 32; i++) {
        double f_win = pow(10000.0, -2.0 * i / 64);
        assert_true(fabs(win[i] - f_win) <= 1e-6 * f_win);
        /* Spec §2 for V4-Flash: ramp from dim pair 15 to 25, factor 16. */
        double f = pow(160000.0, -2.0 * i / 64);
        double ramp = fmin(fmax((i - 15) / 10.0, 0.0), 1.0);
        double want = f * (1 - ramp) + f / 16 * ramp;
        if (fabs(comp[i] - want) > 1e-6 * want)
            fail_msg("yarn inv_freq[%d] = %g, want %g", i, comp[i], want);
    }
    /* No YaRN configured: the compressed table is plain compress_rope_theta. */
    c.yarn_factor = 1.0f;
    rope_inv_freq(comp, &c, 1);
    for (int i = 0; i < 32; i++) {
        double f = pow(160000.0, -2.0 * i / 64);
        assert_true(fabs(comp[i] - f) <= 1e-6 * f);
    }
}

static void test_rope_rotation(void **state)
{
    (void)state;
    uint64_t seed = 91;
    float inv[8], cs[8], sn[8];
    dsv4_config c;
    memset(&c, 0, sizeof c);
    c.rope_dim = 16;
    c.rope_theta = 10000.0f;
    rope_inv_freq(inv, &c, 0);
    for (long pos = 0; pos < 5000; pos += 97) {
        rope_cos_sin(cs, sn, inv, 8, pos);
        float x[16], y[16];
        for (int i = 0; i < 16; i++)
            x[i] = y[i] = test_rand_f(&seed);
        ops_rope(y, cs, sn, 8, 0);
        for (int i = 0; i < 8; i++) {
            /* transformers: x*cos + rotate_half(x)*sin, rotate_half pairs (x[2i], x[2i+1]) -> (-x[2i+1], x[2i]) */
            double a = (double)(inv[i] * (float)pos); /* the oracle's float32 angle */
            double e0 = x[2 * i] * cos(a) - x[2 * i + 1] * sin(a);
            double e1 = x[2 * i + 1] * cos(a) + x[2 * i] * sin(a);
            assert_true(fabs(y[2 * i] - e0) < 1e-5 && fabs(y[2 * i + 1] - e1) < 1e-5);
        }
        ops_rope(y, cs, sn, 8, 1);
        for (int i = 0; i < 16; i++)
            assert_true(fabs(y[i] - x[i]) < 1e-6);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rope_tables),
        cmocka_unit_test(test_rope_rotation),
        cmocka_unit_test(test_compressor_hca_pooling),
        cmocka_unit_test(test_compressor_csa_pooling),
        cmocka_unit_test(test_indexer_scores_and_topk),
        cmocka_unit_test(test_indexer_fp4_split_invariance),
        cmocka_unit_test(test_plain_matches_reference),
        cmocka_unit_test(test_chunk_invariance_plain),
        cmocka_unit_test(test_chunk_invariance_release),
        cmocka_unit_test(test_thread_invariance),
        cmocka_unit_test(test_fp8_rows_equal_fp32_rows),
        cmocka_unit_test(test_kv_bytes),
        cmocka_unit_test(test_release_near_plain),
        cmocka_unit_test(test_reset_restarts_sequence),
        cmocka_unit_test(test_state_new_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
