/* A writer of tiny, valid release-format model directories (config.json in
 * the hub form + safetensors with every tensor the binder expects: FP8
 * linears with e8m0 scales, FP4 routed experts, random values), with knobs
 * to corrupt them. Header-only (static functions) so any test can include it.
 *
 *   synth_opts o; synth_defaults(&o);
 *   o.drop_tensor = "layers.1.attn.wq_b.scale";
 *   char *dir = synth_tmpdir();
 *   synth_write(dir, &o);          // 0 on success
 *   ... dsv4_engine_open(&e, dir, ...) ...
 *   synth_rmdir(dir); free(dir);
 */
#ifndef DSV4_TEST_SYNTH_MODEL_H
#define DSV4_TEST_SYNTH_MODEL_H

#include <dirent.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

/* Tensor names here are short and fixed; gcc cannot see the bounds through the nested buffers. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define SYNTH_MAX_LAYERS 16

typedef struct {
    /* shapes (defaults: synth_defaults) */
    int vocab, dim, n_layers, n_heads, head_dim, rope_dim, q_lora, o_groups, o_lora, window;
    int index_n_heads, index_head_dim, index_topk;
    int n_experts, n_activated, inter, n_hash_layers, hc_mult;
    int ratios[SYNTH_MAX_LAYERS + 1]; /* n_layers entries + one for the MTP layer (written to config) */
    /* formats */
    int linear_fp8;          /* 1: e4m3 + e8m0 scales; 0: BF16 */
    int expert_fp4;          /* 1: I8-packed e2m1 + e8m0 per 32; 0: same format as the other linears */
    int transformers_names;  /* "model." prefix and save_pretrained's own names for embed/head/hc_head */
    uint64_t seed;
    /* corruptions (NULL / 0 = none) */
    const char *drop_tensor;                     /* omit this tensor (native name) */
    const char *retype_tensor, *retype_dtype;    /* declare another dtype (data size follows it) */
    const char *reshape_tensor; int64_t reshape[2]; int reshape_ndim; /* declare another shape */
    const char *overrun_tensor;                  /* its data_offsets end runs past the file */
    const char *extra_tensor;                    /* add an unknown F32 [2] tensor (must be ignored) */
    long truncate_bytes;                         /* cut this many bytes off the end of (each) shard */
    int shards;                                  /* 1: model.safetensors; 2: two shards + index.json */
    int delete_shard;                            /* 1 or 2: delete that shard after writing */
    int malformed_config;                        /* write config.json with a syntax error on line 3 */
    const char *config_override;                 /* write this text as config.json instead */
    const char *tid2eid_bad;                     /* put an out-of-range expert id into this tid2eid */
} synth_opts;

typedef struct {
    char name[256];
    char dtype[16];
    int ndim;
    int64_t shape[4];
    uint8_t *data;
    size_t nbytes;
    size_t elem;      /* element size, for ordering */
} synth_tensor;

typedef struct {
    synth_tensor *t;
    int n, cap;
    uint64_t rng;
    const synth_opts *o;
} synth_model;

static inline void synth_defaults(synth_opts *o)
{
    static const int ratios[] = {0, 4, 8, 4, 8, 0, 0};
    memset(o, 0, sizeof *o);
    o->vocab = 64; o->dim = 64; o->n_layers = 6; o->n_heads = 4; o->head_dim = 32; o->rope_dim = 8;
    o->q_lora = 32; o->o_groups = 2; o->o_lora = 16; o->window = 8;
    o->index_n_heads = 2; o->index_head_dim = 16; o->index_topk = 4;
    o->n_experts = 8; o->n_activated = 2; o->inter = 32; o->n_hash_layers = 1; o->hc_mult = 4;
    memcpy(o->ratios, ratios, sizeof ratios);
    o->linear_fp8 = 1; o->expert_fp4 = 1; o->seed = 0x5eed; o->shards = 1;
}

static inline size_t synth_dtype_size(const char *dt)
{
    if (!strcmp(dt, "F64") || !strcmp(dt, "I64") || !strcmp(dt, "U64")) return 8;
    if (!strcmp(dt, "F32") || !strcmp(dt, "I32") || !strcmp(dt, "U32")) return 4;
    if (!strcmp(dt, "BF16") || !strcmp(dt, "F16") || !strcmp(dt, "I16") || !strcmp(dt, "U16")) return 2;
    return 1;
}

static inline uint16_t synth_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

/* Random contents that decode to finite, modest values in each format. */
static inline void synth_fill(synth_model *m, synth_tensor *t, const char *kind)
{
    size_t n = t->elem ? t->nbytes / t->elem : 0;
    for (size_t i = 0; i < n; i++) {
        float r = test_rand_f(&m->rng);
        if (!strcmp(kind, "norm")) r = 1.0f + 0.1f * r;
        else if (!strcmp(kind, "small")) r = 0.1f * r;
        if (!strcmp(t->dtype, "F32")) {
            memcpy(t->data + 4 * i, &r, 4);
        } else if (!strcmp(t->dtype, "BF16") || !strcmp(t->dtype, "F16")) {
            uint16_t h = synth_bf16(r);
            memcpy(t->data + 2 * i, &h, 2);
        } else if (!strcmp(t->dtype, "I64")) {
            int64_t e = (int64_t)(test_rand_u64(&m->rng) % (uint64_t)m->o->n_experts);
            memcpy(t->data + 8 * i, &e, 8);
        } else if (!strcmp(kind, "scale")) {
            t->data[i] = (uint8_t)(120 + test_rand_u64(&m->rng) % 8); /* 2^-7 .. 2^0 */
        } else {
            uint8_t b = (uint8_t)test_rand_u64(&m->rng);
            if (!strcmp(t->dtype, "F8_E4M3") && (b & 0x7f) == 0x7f) b ^= 1; /* e4m3fn NaN */
            t->data[i] = b;
        }
    }
}

static inline void synth_add(synth_model *m, const char *name, const char *dtype, int ndim, int64_t d0, int64_t d1,
                      const char *kind)
{
    const synth_opts *o = m->o;
    if (o->drop_tensor && !strcmp(o->drop_tensor, name)) return;
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 256;
        m->t = realloc(m->t, (size_t)m->cap * sizeof *m->t);
    }
    synth_tensor *t = &m->t[m->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    if (o->retype_tensor && !strcmp(o->retype_tensor, name)) snprintf(t->dtype, sizeof t->dtype, "%s", o->retype_dtype);
    if (o->reshape_tensor && !strcmp(o->reshape_tensor, name)) {
        t->ndim = o->reshape_ndim;
        t->shape[0] = o->reshape[0];
        t->shape[1] = o->reshape[1];
    }
    t->elem = synth_dtype_size(t->dtype);
    size_t count = 1;
    for (int i = 0; i < t->ndim; i++) count *= (size_t)t->shape[i];
    t->nbytes = count * t->elem;
    t->data = calloc(t->nbytes ? t->nbytes : 1, 1);
    synth_fill(m, t, kind);
    if (o->tid2eid_bad && !strcmp(o->tid2eid_bad, name) && t->nbytes >= 8) {
        int64_t bad = o->n_experts + 3;
        memcpy(t->data + t->nbytes - 8, &bad, 8);
    }
}

static inline void synth_linear(synth_model *m, const char *base, int64_t rows, int64_t cols, int expert)
{
    char n[192], s[192];
    snprintf(n, sizeof n, "%s.weight", base);
    snprintf(s, sizeof s, "%s.scale", base);
    if (expert && m->o->expert_fp4) {
        synth_add(m, n, "I8", 2, rows, cols / 2, "w");
        synth_add(m, s, "F8_E8M0", 2, rows, cols / 32, "scale");
    } else if (m->o->linear_fp8) {
        synth_add(m, n, "F8_E4M3", 2, rows, cols, "w");
        synth_add(m, s, "F8_E8M0", 2, (rows + 127) / 128, (cols + 127) / 128, "scale");
    } else {
        synth_add(m, n, "BF16", 2, rows, cols, "small");
    }
}

static inline void synth_compressor(synth_model *m, const char *p, int ratio, int d, int overlap)
{
    const synth_opts *o = m->o;
    char n[192];
    int cd = (overlap ? 2 : 1) * d;
    snprintf(n, sizeof n, "%s.wkv.weight", p);   synth_add(m, n, "BF16", 2, cd, o->dim, "small");
    snprintf(n, sizeof n, "%s.wgate.weight", p); synth_add(m, n, "BF16", 2, cd, o->dim, "small");
    snprintf(n, sizeof n, "%s.ape", p);          synth_add(m, n, "F32", 2, ratio, cd, "small");
    snprintf(n, sizeof n, "%s.norm.weight", p);  synth_add(m, n, "BF16", 1, d, 0, "norm");
}

static inline void synth_tensors(synth_model *m)
{
    const synth_opts *o = m->o;
    char p[64], n[192];
    int mix = (2 + o->hc_mult) * o->hc_mult;
    synth_add(m, "embed.weight", "BF16", 2, o->vocab, o->dim, "w");
    synth_add(m, "head.weight", "BF16", 2, o->vocab, o->dim, "small");
    synth_add(m, "norm.weight", "BF16", 1, o->dim, 0, "norm");
    synth_add(m, "hc_head_fn", "F32", 2, o->hc_mult, (int64_t)o->hc_mult * o->dim, "small");
    synth_add(m, "hc_head_base", "F32", 1, o->hc_mult, 0, "small");
    synth_add(m, "hc_head_scale", "F32", 1, 1, 0, "small");
    for (int L = 0; L < o->n_layers; L++) {
        int ratio = o->ratios[L], csa = ratio == 4;
        snprintf(n, sizeof n, "layers.%d.attn_norm.weight", L); synth_add(m, n, "BF16", 1, o->dim, 0, "norm");
        snprintf(n, sizeof n, "layers.%d.ffn_norm.weight", L);  synth_add(m, n, "BF16", 1, o->dim, 0, "norm");
        for (int h = 0; h < 2; h++) {
            const char *which = h ? "ffn" : "attn";
            snprintf(n, sizeof n, "layers.%d.hc_%s_fn", L, which);
            synth_add(m, n, "F32", 2, mix, (int64_t)o->hc_mult * o->dim, "small");
            snprintf(n, sizeof n, "layers.%d.hc_%s_base", L, which);  synth_add(m, n, "F32", 1, mix, 0, "small");
            snprintf(n, sizeof n, "layers.%d.hc_%s_scale", L, which); synth_add(m, n, "F32", 1, 3, 0, "small");
        }
        snprintf(p, sizeof p, "layers.%d.attn", L);
        snprintf(n, sizeof n, "%s.wq_a", p);   synth_linear(m, n, o->q_lora, o->dim, 0);
        snprintf(n, sizeof n, "%s.q_norm.weight", p); synth_add(m, n, "BF16", 1, o->q_lora, 0, "norm");
        snprintf(n, sizeof n, "%s.wq_b", p);   synth_linear(m, n, (int64_t)o->n_heads * o->head_dim, o->q_lora, 0);
        snprintf(n, sizeof n, "%s.wkv", p);    synth_linear(m, n, o->head_dim, o->dim, 0);
        snprintf(n, sizeof n, "%s.kv_norm.weight", p); synth_add(m, n, "BF16", 1, o->head_dim, 0, "norm");
        snprintf(n, sizeof n, "%s.wo_a", p);
        synth_linear(m, n, (int64_t)o->o_groups * o->o_lora, (int64_t)o->n_heads * o->head_dim / o->o_groups, 0);
        snprintf(n, sizeof n, "%s.wo_b", p);   synth_linear(m, n, o->dim, (int64_t)o->o_groups * o->o_lora, 0);
        snprintf(n, sizeof n, "%s.attn_sink", p); synth_add(m, n, "F32", 1, o->n_heads, 0, "small");
        if (ratio > 0) {
            snprintf(n, sizeof n, "%s.compressor", p);
            synth_compressor(m, n, ratio, o->head_dim, csa);
        }
        if (csa) {
            snprintf(n, sizeof n, "%s.indexer.wq_b", p);
            synth_linear(m, n, (int64_t)o->index_n_heads * o->index_head_dim, o->q_lora, 0);
            snprintf(n, sizeof n, "%s.indexer.weights_proj.weight", p);
            synth_add(m, n, "BF16", 2, o->index_n_heads, o->dim, "small");
            snprintf(n, sizeof n, "%s.indexer.compressor", p);
            synth_compressor(m, n, ratio, o->index_head_dim, 1);
        }
        snprintf(p, sizeof p, "layers.%d.ffn", L);
        snprintf(n, sizeof n, "%s.gate.weight", p); synth_add(m, n, "BF16", 2, o->n_experts, o->dim, "small");
        if (L < o->n_hash_layers) {
            snprintf(n, sizeof n, "%s.gate.tid2eid", p); synth_add(m, n, "I64", 2, o->vocab, o->n_activated, "ids");
        } else {
            snprintf(n, sizeof n, "%s.gate.bias", p); synth_add(m, n, "F32", 1, o->n_experts, 0, "small");
        }
        for (int e = 0; e <= o->n_experts; e++) {
            int shared = e == o->n_experts;
            char ep[128];
            if (shared) snprintf(ep, sizeof ep, "%s.shared_experts", p);
            else snprintf(ep, sizeof ep, "%s.experts.%d", p, e);
            snprintf(n, sizeof n, "%s.w1", ep); synth_linear(m, n, o->inter, o->dim, !shared);
            snprintf(n, sizeof n, "%s.w3", ep); synth_linear(m, n, o->inter, o->dim, !shared);
            snprintf(n, sizeof n, "%s.w2", ep); synth_linear(m, n, o->dim, o->inter, !shared);
        }
    }
    /* An MTP tensor the binder must ignore. */
    synth_add(m, "mtp.0.norm.weight", "BF16", 1, o->dim, 0, "norm");
    if (o->extra_tensor) synth_add(m, o->extra_tensor, "F32", 1, 2, 0, "small");
}

/* The name as transformers' save_pretrained writes it. */
static inline void synth_file_name(const synth_opts *o, const char *native, char *out, size_t len)
{
    static const char *const alias[][2] = {
        {"embed.weight", "model.embed_tokens.weight"}, {"head.weight", "lm_head.weight"},
        {"hc_head_fn", "model.hc_head.hc_fn"}, {"hc_head_base", "model.hc_head.hc_base"},
        {"hc_head_scale", "model.hc_head.hc_scale"},
    };
    if (!o->transformers_names) { snprintf(out, len, "%s", native); return; }
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
        if (!strcmp(native, alias[i][0])) { snprintf(out, len, "%s", alias[i][1]); return; }
    snprintf(out, len, "model.%s", native);
}

static inline int synth_cmp_elem(const void *a, const void *b)
{
    const synth_tensor *x = a, *y = b;
    if (x->elem != y->elem) return x->elem > y->elem ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Writes u64 header length + header + data: the raw safetensors layout. */
static inline int synth_write_raw(const char *path, const char *header, size_t header_len, const void *data, size_t data_len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)header_len >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(header, 1, header_len, f) == header_len &&
             (data_len == 0 || fwrite(data, 1, data_len, f) == data_len);
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Writes tensors t[i] for i in idx[0..n) as one safetensors file, largest
 * element size first so every tensor is naturally aligned. */
static inline int synth_write_shard(const synth_opts *o, const char *path, synth_tensor **ts, int n)
{
    size_t cap = 4096 + (size_t)n * 320, len = 0, data_len = 0;
    char *h = malloc(cap);
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) data_len += ts[i]->nbytes;
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        const synth_tensor *t = ts[i];
        char fname[256];
        synth_file_name(o, t->name, fname, sizeof fname);
        size_t end = pos + t->nbytes;
        if (o->overrun_tensor && !strcmp(o->overrun_tensor, t->name)) end = data_len + 1000;
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", fname, t->dtype);
        for (int d = 0; d < t->ndim; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%" PRId64, d ? "," : "", t->shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", pos, end);
        pos += t->nbytes;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';
    uint8_t *data = malloc(data_len ? data_len : 1);
    pos = 0;
    for (int i = 0; i < n; i++) {
        memcpy(data + pos, ts[i]->data, ts[i]->nbytes);
        pos += ts[i]->nbytes;
    }
    int rc = synth_write_raw(path, h, len, data, data_len);
    free(h);
    free(data);
    if (rc == 0 && o->truncate_bytes > 0) {
        struct stat st;
        if (stat(path, &st) != 0 || truncate(path, st.st_size > o->truncate_bytes ? st.st_size - o->truncate_bytes : 0) != 0)
            rc = -1;
    }
    return rc;
}

static inline int synth_write_text(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static inline int synth_write_config(const char *dir, const synth_opts *o)
{
    if (o->config_override) return synth_write_text(dir, "config.json", o->config_override);
    if (o->malformed_config)
        return synth_write_text(dir, "config.json", "{\n  \"vocab_size\": 64,\n  \"hidden_size\": 64,,\n}\n");
    char ratios[256];
    size_t p = 0;
    for (int i = 0; i <= o->n_layers; i++)
        p += (size_t)snprintf(ratios + p, sizeof ratios - p, "%s%d", i ? ", " : "", o->ratios[i]);
    char text[4096];
    snprintf(text, sizeof text,
             "{\n"
             "  \"architectures\": [\"DeepseekV4ForCausalLM\"],\n"
             "  \"model_type\": \"deepseek_v4\",\n"
             "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n"
             "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": 1,\n  \"head_dim\": %d,\n"
             "  \"qk_rope_head_dim\": %d,\n  \"q_lora_rank\": %d,\n  \"o_groups\": %d,\n  \"o_lora_rank\": %d,\n"
             "  \"sliding_window\": %d,\n  \"index_n_heads\": %d,\n  \"index_head_dim\": %d,\n  \"index_topk\": %d,\n"
             "  \"n_routed_experts\": %d,\n  \"num_experts_per_tok\": %d,\n  \"n_shared_experts\": 1,\n"
             "  \"moe_intermediate_size\": %d,\n  \"num_hash_layers\": %d,\n  \"scoring_func\": \"sqrtsoftplus\",\n"
             "  \"topk_method\": \"noaux_tc\",\n  \"routed_scaling_factor\": 1.5,\n  \"swiglu_limit\": 10.0,\n"
             "  \"hc_mult\": %d,\n  \"hc_sinkhorn_iters\": 20,\n  \"hc_eps\": 1e-6,\n  \"rms_norm_eps\": 1e-6,\n"
             "  \"rope_theta\": 10000,\n  \"compress_rope_theta\": 160000,\n"
             "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 16, \"original_max_position_embeddings\": 65536,"
             " \"beta_fast\": 32, \"beta_slow\": 1},\n"
             "  \"compress_ratios\": [%s],\n  \"num_nextn_predict_layers\": 1,\n"
             "  \"max_position_embeddings\": 1048576,\n  \"bos_token_id\": 0,\n  \"eos_token_id\": 1,\n"
             "  \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", \"quant_method\": \"fp8\","
             " \"scale_fmt\": \"ue8m0\", \"weight_block_size\": [128, 128]},\n"
             "  \"expert_dtype\": \"fp4\",\n  \"torch_dtype\": \"bfloat16\"\n}\n",
             o->vocab, o->dim, o->n_layers, o->n_heads, o->head_dim, o->rope_dim, o->q_lora, o->o_groups, o->o_lora,
             o->window, o->index_n_heads, o->index_head_dim, o->index_topk, o->n_experts, o->n_activated, o->inter,
             o->n_hash_layers, o->hc_mult, ratios);
    return synth_write_text(dir, "config.json", text);
}

/* Removes every file in the (flat) directory, keeping the directory. */
static inline void synth_clean(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

/* A fresh empty directory under /tmp; the caller frees the string. */
static inline char *synth_tmpdir(void)
{
    char *d = strdup("/tmp/dsv4-test-XXXXXX");
    if (!mkdtemp(d)) { free(d); return NULL; }
    return d;
}

/* Removes the (flat) directory and the files in it. */
static inline void synth_rmdir(const char *dir)
{
    synth_clean(dir);
    rmdir(dir);
}

/* cmocka setup/teardown that give each test a fresh synth_dir. */
static char *synth_dir;

static inline int synth_setup_dir(void **state)
{
    (void)state;
    synth_dir = synth_tmpdir();
    return synth_dir ? 0 : -1;
}

static inline int synth_teardown_dir(void **state)
{
    (void)state;
    synth_rmdir(synth_dir);
    free(synth_dir);
    synth_dir = NULL;
    return 0;
}

/* Writes a complete model into dir, replacing any files already there. */
static inline int synth_write(const char *dir, const synth_opts *o)
{
    synth_model m = {.rng = o->seed ? o->seed : 1, .o = o};
    synth_clean(dir);
    synth_tensors(&m);
    synth_tensor **order = malloc((size_t)m.n * sizeof *order);
    for (int i = 0; i < m.n; i++) order[i] = &m.t[i];
    int rc = synth_write_config(dir, o);
    char path[512];
    if (rc == 0 && o->shards <= 1) {
        qsort(m.t, (size_t)m.n, sizeof *m.t, synth_cmp_elem);
        for (int i = 0; i < m.n; i++) order[i] = &m.t[i];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = synth_write_shard(o, path, order, m.n);
    } else if (rc == 0) {
        /* Tensors alternate between the two shards; index.json maps each. */
        qsort(m.t, (size_t)m.n, sizeof *m.t, synth_cmp_elem);
        size_t cap = 256 + (size_t)m.n * 256, len = 0;
        char *idx = malloc(cap);
        len += (size_t)snprintf(idx + len, cap - len, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
        int first = 1;
        for (int s = 0; s < 2 && rc == 0; s++) {
            int n = 0;
            for (int i = s; i < m.n; i += 2) order[n++] = &m.t[i];
            char shard[64];
            snprintf(shard, sizeof shard, "model-%05d-of-00002.safetensors", s + 1);
            snprintf(path, sizeof path, "%s/%s", dir, shard);
            rc = synth_write_shard(o, path, order, n);
            for (int i = 0; i < n; i++) {
                char fname[256];
                synth_file_name(o, order[i]->name, fname, sizeof fname);
                len += (size_t)snprintf(idx + len, cap - len, "%s\"%s\": \"%s\"", first ? "" : ", ", fname, shard);
                first = 0;
            }
        }
        len += (size_t)snprintf(idx + len, cap - len, "}}\n");
        if (rc == 0) rc = synth_write_text(dir, "model.safetensors.index.json", idx);
        free(idx);
        if (rc == 0 && o->delete_shard) {
            snprintf(path, sizeof path, "%s/model-%05d-of-00002.safetensors", dir, o->delete_shard);
            rc = unlink(path);
        }
    }
    for (int i = 0; i < m.n; i++) free(m.t[i].data);
    free(m.t);
    free(order);
    return rc;
}

#pragma GCC diagnostic pop

#endif
