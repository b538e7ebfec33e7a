#include "weights_bind.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "../simd/formats.h"

#define FP8_BLOCK 128
#define FP4_BLOCK 32

typedef struct {
    const st_set *st;
    const dsv4_config *cfg;
    dsv4_error *err;
    char name[256];
} binder;

static const char *named(binder *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->name, sizeof b->name, fmt, ap);
    va_end(ap);
    return b->name;
}

static const st_tensor *need(binder *b, const char *name)
{
    const st_tensor *t = st_find(b->st, name);
    if (!t) dsv4_fail(b->err, "tensor '%s' is missing", name);
    return t;
}

static int check_shape(binder *b, const st_tensor *t, int ndim, const int64_t *dims)
{
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == dims[i];
    if (ok) return 0;
    st_tensor want = {.ndim = ndim};
    memcpy(want.shape, dims, (size_t)ndim * sizeof *dims);
    char a[160], f[160];
    return dsv4_fail(b->err, "%s: expected shape %s, found %s (in %s)", t->name, st_shape_str(&want, a, sizeof a),
                     st_shape_str(t, f, sizeof f), t->file);
}

static int check_aligned(binder *b, const st_tensor *t)
{
    size_t a = st_dtype_size(t->dtype);
    if (((uintptr_t)t->data % a) == 0) return 0;
    return dsv4_fail(b->err, "%s: data at byte offset %" PRIu64 " of %s is not aligned to %zu bytes",
                     t->name, t->offset, t->file, a);
}

static int bind_scale(binder *b, const char *base, int64_t rows, int64_t cols, const uint8_t **out)
{
    const st_tensor *s = need(b, named(b, "%s.scale", base));
    if (!s) return -1;
    if (s->dtype != ST_F8_E8M0 && s->dtype != ST_U8)
        return dsv4_fail(b->err, "%s: dtype %s is not supported for a block scale (need F8_E8M0)",
                         s->name, st_dtype_name(s->dtype));
    int64_t dims[2] = {rows, cols};
    if (check_shape(b, s, 2, dims) != 0) return -1;
    *out = s->data;
    return 0;
}

/* base is the module name ("layers.3.attn.wq_b"); the matrix is [rows][cols]. */
static int bind_linear(binder *b, const char *base_in, int rows, int cols, int allow_fp4, dsv4_linear *out)
{
    char base[224];
    snprintf(base, sizeof base, "%s", base_in);
    const st_tensor *t = need(b, named(b, "%s.weight", base));
    if (!t) return -1;
    dsv4_linear l = {.rows = rows, .cols = cols, .data = t->data};
    int64_t dims[2] = {rows, cols};
    switch (t->dtype) {
    case ST_F32: l.fmt = DSV4_WF_F32; break;
    case ST_BF16: l.fmt = DSV4_WF_BF16; break;
    case ST_F8_E4M3: l.fmt = DSV4_WF_FP8; break;
    case ST_I8:
    case ST_U8:
        if (allow_fp4) { l.fmt = DSV4_WF_FP4; break; }
        /* fall through */
    default:
        return dsv4_fail(b->err, "%s: dtype %s is not supported for a%s linear weight (in %s)", t->name,
                         st_dtype_name(t->dtype), allow_fp4 ? "n expert" : "", t->file);
    }
    if (l.fmt == DSV4_WF_FP4) {
        if (cols % FP4_BLOCK)
            return dsv4_fail(b->err, "%s: FP4 weights need a multiple of %d input columns, the model has %d",
                             t->name, FP4_BLOCK, cols);
        dims[1] = cols / 2;
    }
    if (check_shape(b, t, 2, dims) != 0 || check_aligned(b, t) != 0) return -1;
    if (l.fmt == DSV4_WF_FP8 &&
        bind_scale(b, base, (rows + FP8_BLOCK - 1) / FP8_BLOCK, (cols + FP8_BLOCK - 1) / FP8_BLOCK, &l.scale) != 0)
        return -1;
    if (l.fmt == DSV4_WF_FP4 && bind_scale(b, base, rows, cols / FP4_BLOCK, &l.scale) != 0)
        return -1;
    *out = l;
    return 0;
}

/* A small F32 or BF16 tensor of the given shape, copied to an owned float array. */
static int bind_floats(binder *b, const char *name, int ndim, int64_t d0, int64_t d1, float **out)
{
    const st_tensor *t = need(b, name);
    if (!t) return -1;
    if (t->dtype != ST_F32 && t->dtype != ST_BF16)
        return dsv4_fail(b->err, "%s: dtype %s is not supported here (need F32 or BF16, in %s)", t->name,
                         st_dtype_name(t->dtype), t->file);
    int64_t dims[2] = {d0, d1};
    if (check_shape(b, t, ndim, dims) != 0) return -1;
    size_t n = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return dsv4_fail(b->err, "out of memory binding %s", t->name);
    const uint8_t *src = t->data;
    if (t->dtype == ST_F32) {
        memcpy(v, src, n * sizeof *v); /* the mapping need not be 4-byte aligned */
    } else {
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            v[i] = fmt_bf16_to_f32(h);
        }
    }
    *out = v;
    return 0;
}

static int bind_vec(binder *b, const char *name, int64_t n, float **out)
{
    return bind_floats(b, name, 1, n, 0, out);
}

static int bind_tid2eid(binder *b, const char *name, int32_t **out)
{
    const dsv4_config *c = b->cfg;
    const st_tensor *t = need(b, name);
    if (!t) return -1;
    if (t->dtype != ST_I64 && t->dtype != ST_I32)
        return dsv4_fail(b->err, "%s: dtype %s is not supported (need I64 or I32, in %s)", t->name,
                         st_dtype_name(t->dtype), t->file);
    int64_t dims[2] = {c->vocab_size, c->n_activated_experts};
    if (check_shape(b, t, 2, dims) != 0) return -1;
    size_t n = (size_t)c->vocab_size * (size_t)c->n_activated_experts;
    int32_t *v = malloc(n * sizeof *v);
    if (!v) return dsv4_fail(b->err, "out of memory binding %s", t->name);
    const uint8_t *src = t->data;
    for (size_t i = 0; i < n; i++) {
        int64_t e;
        if (t->dtype == ST_I64) {
            memcpy(&e, src + 8 * i, 8);
        } else {
            int32_t e32;
            memcpy(&e32, src + 4 * i, 4);
            e = e32;
        }
        if (e < 0 || e >= c->n_routed_experts) {
            free(v);
            return dsv4_fail(b->err, "%s: entry [%zu, %zu] = %" PRId64 " is not an expert in [0, %d)", t->name,
                             i / (size_t)c->n_activated_experts, i % (size_t)c->n_activated_experts, e,
                             c->n_routed_experts);
        }
        v[i] = (int32_t)e;
    }
    *out = v;
    return 0;
}

static int bind_hc(binder *b, const char *prefix, dsv4_hc_weights *hc)
{
    const dsv4_config *c = b->cfg;
    int64_t mix = (int64_t)(2 + c->hc_mult) * c->hc_mult, width = (int64_t)c->hc_mult * c->dim;
    char base[160];
    snprintf(base, sizeof base, "%s", prefix);
    if (bind_floats(b, named(b, "%s_fn", base), 2, mix, width, &hc->fn) != 0) return -1;
    if (bind_vec(b, named(b, "%s_base", base), mix, &hc->base) != 0) return -1;
    return bind_vec(b, named(b, "%s_scale", base), 3, &hc->scale);
}

/* The compressor of a layer (d = head_dim) or of its indexer (d = index_head_dim). */
static int bind_compressor(binder *b, const char *prefix, int ratio, int d, int overlap, dsv4_compressor_weights *cw)
{
    const dsv4_config *c = b->cfg;
    int cd = (overlap ? 2 : 1) * d;
    char base[160];
    snprintf(base, sizeof base, "%s", prefix);
    cw->ratio = ratio;
    cw->out_dim = d;
    cw->overlap = overlap;
    if (bind_linear(b, named(b, "%s.wkv", base), cd, c->dim, 0, &cw->wkv) != 0) return -1;
    if (bind_linear(b, named(b, "%s.wgate", base), cd, c->dim, 0, &cw->wgate) != 0) return -1;
    if (bind_floats(b, named(b, "%s.ape", base), 2, ratio, cd, &cw->ape) != 0) return -1;
    return bind_vec(b, named(b, "%s.norm.weight", base), d, &cw->norm);
}

static int bind_attention(binder *b, int L, dsv4_layer_weights *lw)
{
    const dsv4_config *c = b->cfg;
    char p[96];
    snprintf(p, sizeof p, "layers.%d.attn", L);
    int heads_width = c->n_heads * c->head_dim;
    if (bind_linear(b, named(b, "%s.wq_a", p), c->q_lora_rank, c->dim, 0, &lw->wq_a) ||
        bind_vec(b, named(b, "%s.q_norm.weight", p), c->q_lora_rank, &lw->q_norm) ||
        bind_linear(b, named(b, "%s.wq_b", p), heads_width, c->q_lora_rank, 0, &lw->wq_b) ||
        bind_linear(b, named(b, "%s.wkv", p), c->head_dim, c->dim, 0, &lw->wkv) ||
        bind_vec(b, named(b, "%s.kv_norm.weight", p), c->head_dim, &lw->kv_norm) ||
        bind_linear(b, named(b, "%s.wo_a", p), c->o_groups * c->o_lora_rank, heads_width / c->o_groups, 0, &lw->wo_a) ||
        bind_linear(b, named(b, "%s.wo_b", p), c->dim, c->o_groups * c->o_lora_rank, 0, &lw->wo_b) ||
        bind_vec(b, named(b, "%s.attn_sink", p), c->n_heads, &lw->attn_sink))
        return -1;
    if (c->kind[L] == DSV4_LAYER_WINDOW) return 0;
    int csa = c->kind[L] == DSV4_LAYER_CSA;
    if (bind_compressor(b, named(b, "%s.compressor", p), c->compress_ratio[L], c->head_dim, csa, &lw->compressor))
        return -1;
    if (!csa) return 0;
    dsv4_indexer_weights *ix = &lw->indexer;
    if (bind_linear(b, named(b, "%s.indexer.wq_b", p), c->index_n_heads * c->index_head_dim, c->q_lora_rank, 0, &ix->wq_b) ||
        bind_linear(b, named(b, "%s.indexer.weights_proj", p), c->index_n_heads, c->dim, 0, &ix->weights_proj))
        return -1;
    return bind_compressor(b, named(b, "%s.indexer.compressor", p), c->compress_ratio[L], c->index_head_dim, 1,
                           &ix->compressor);
}

static int bind_expert(binder *b, const char *prefix, int allow_fp4, dsv4_expert_weights *ew)
{
    const dsv4_config *c = b->cfg;
    char p[128];
    snprintf(p, sizeof p, "%s", prefix);
    if (bind_linear(b, named(b, "%s.w1", p), c->moe_inter_dim, c->dim, allow_fp4, &ew->w1) ||
        bind_linear(b, named(b, "%s.w3", p), c->moe_inter_dim, c->dim, allow_fp4, &ew->w3) ||
        bind_linear(b, named(b, "%s.w2", p), c->dim, c->moe_inter_dim, allow_fp4, &ew->w2))
        return -1;
    return 0;
}

static int bind_moe(binder *b, int L, dsv4_layer_weights *lw)
{
    const dsv4_config *c = b->cfg;
    char p[96];
    snprintf(p, sizeof p, "layers.%d.ffn", L);
    if (bind_linear(b, named(b, "%s.gate", p), c->n_routed_experts, c->dim, 0, &lw->gate)) return -1;
    if (L < c->n_hash_layers) {
        if (bind_tid2eid(b, named(b, "%s.gate.tid2eid", p), &lw->tid2eid)) return -1;
    } else if (bind_vec(b, named(b, "%s.gate.bias", p), c->n_routed_experts, &lw->gate_bias)) {
        return -1;
    }
    lw->experts = calloc((size_t)c->n_routed_experts, sizeof *lw->experts);
    if (!lw->experts) return dsv4_fail(b->err, "out of memory");
    for (int e = 0; e < c->n_routed_experts; e++) {
        char ep[128];
        snprintf(ep, sizeof ep, "%s.experts.%d", p, e);
        if (bind_expert(b, ep, 1, &lw->experts[e])) return -1;
    }
    if (c->n_shared_experts > 0 && bind_expert(b, named(b, "%s.shared_experts", p), 0, &lw->shared)) return -1;
    return 0;
}

static int bind_layer(binder *b, int L, dsv4_layer_weights *lw)
{
    const dsv4_config *c = b->cfg;
    if (bind_vec(b, named(b, "layers.%d.attn_norm.weight", L), c->dim, &lw->attn_norm) ||
        bind_vec(b, named(b, "layers.%d.ffn_norm.weight", L), c->dim, &lw->ffn_norm))
        return -1;
    char p[64];
    snprintf(p, sizeof p, "layers.%d.hc_attn", L);
    if (bind_hc(b, p, &lw->hc_attn)) return -1;
    snprintf(p, sizeof p, "layers.%d.hc_ffn", L);
    if (bind_hc(b, p, &lw->hc_ffn)) return -1;
    return bind_attention(b, L, lw) || bind_moe(b, L, lw) ? -1 : 0;
}

int weights_bind(dsv4_weights *w, const dsv4_config *cfg, const st_set *st, dsv4_error *err)
{
    memset(w, 0, sizeof *w);
    binder b = {.st = st, .cfg = cfg, .err = err};
    int rc = -1;
    w->layers = calloc((size_t)cfg->n_layers, sizeof *w->layers);
    if (!w->layers) {
        dsv4_fail(err, "out of memory");
        goto out;
    }
    if (bind_linear(&b, "embed", cfg->vocab_size, cfg->dim, 0, &w->embed) ||
        bind_linear(&b, "head", cfg->vocab_size, cfg->dim, 0, &w->head) ||
        bind_vec(&b, "norm.weight", cfg->dim, &w->norm) ||
        bind_floats(&b, "hc_head_fn", 2, cfg->hc_mult, (int64_t)cfg->hc_mult * cfg->dim, &w->hc_head_fn) ||
        bind_vec(&b, "hc_head_base", cfg->hc_mult, &w->hc_head_base) ||
        bind_vec(&b, "hc_head_scale", 1, &w->hc_head_scale))
        goto out;
    for (int L = 0; L < cfg->n_layers; L++)
        if (bind_layer(&b, L, &w->layers[L])) goto out;
    rc = 0;
out:
    if (rc) weights_free(w, cfg);
    return rc;
}

static void free_compressor(dsv4_compressor_weights *cw)
{
    free(cw->ape);
    free(cw->norm);
}

static void free_hc(dsv4_hc_weights *hc)
{
    free(hc->fn);
    free(hc->base);
    free(hc->scale);
}

void weights_free(dsv4_weights *w, const dsv4_config *cfg)
{
    if (!w) return;
    if (w->layers) {
        for (int L = 0; L < cfg->n_layers; L++) {
            dsv4_layer_weights *lw = &w->layers[L];
            free(lw->attn_norm);
            free(lw->ffn_norm);
            free_hc(&lw->hc_attn);
            free_hc(&lw->hc_ffn);
            free(lw->q_norm);
            free(lw->kv_norm);
            free(lw->attn_sink);
            free_compressor(&lw->compressor);
            free_compressor(&lw->indexer.compressor);
            free(lw->gate_bias);
            free(lw->tid2eid);
            free(lw->experts);
        }
        free(w->layers);
    }
    free(w->norm);
    free(w->hc_head_fn);
    free(w->hc_head_base);
    free(w->hc_head_scale);
    memset(w, 0, sizeof *w);
}
