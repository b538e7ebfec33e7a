/* Plans the tensors of a synthetic V4 checkpoint, assigns them to shards and
 * writes each shard front to back: one header, then every tensor generated
 * into a buffer (in parallel, block by block) and written sequentially. */
#include "synth_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wformat-truncation"

typedef struct {
    int vocab, dim, n_heads, head_dim, rope_dim, q_lora, o_groups, o_lora, window;
    int index_heads, index_dim, index_topk, n_experts, n_active, inter, n_hash;
    float route_scale;
} synth_dims;

/* v4-architecture.md §1. */
static const synth_dims flash_dims = {129280, 4096, 64, 512, 64, 1024, 8, 1024, 128, 64, 128, 512, 256, 6, 2048, 3, 1.5f};
static const synth_dims pro_dims = {129280, 7168, 128, 512, 64, 1536, 16, 1024, 128, 64, 128, 1024, 384, 6, 3072, 3, 2.5f};
/* Every structural feature of the real shapes, at sizes a test writes in a blink. */
static const synth_dims tiny_dims = {512, 256, 4, 256, 64, 128, 2, 64, 128, 4, 128, 16, 16, 4, 128, 3, 1.5f};

static const synth_dims *dims_of(const char *shape)
{
    if (!shape) return NULL;
    if (!strcmp(shape, "flash")) return &flash_dims;
    if (!strcmp(shape, "pro")) return &pro_dims;
    if (!strcmp(shape, "tiny")) return &tiny_dims;
    return NULL;
}

int synth_default_kinds(const char *shape, int n_layers, int *kinds)
{
    int pro = shape && !strcmp(shape, "pro");
    if (!dims_of(shape) || n_layers <= 0 || n_layers > SYNTH_MAX_LAYERS) return -1;
    for (int i = 0; i < n_layers; i++) {
        if (i < 2) kinds[i] = pro ? 2 : 0;
        else kinds[i] = i % 2 == 0 ? 1 : 2;
    }
    return 0;
}

typedef enum { DT_F32, DT_BF16, DT_E4M3, DT_E8M0, DT_I8, DT_I64 } synth_dtype;
static const char *const dtype_name[] = {"F32", "BF16", "F8_E4M3", "F8_E8M0", "I8", "I64"};
static const int dtype_size[] = {4, 2, 1, 1, 1, 8};

typedef enum {
    FILL_F32,      /* uniform in ±amp */
    FILL_BF16,     /* ±[1,2)·2^exp, random mantissa: rms ≈ 1.53·2^exp */
    FILL_NORM,     /* bf16 in [1, 1.055) */
    FILL_FP8,      /* e4m3 ±[0.5, 1.875]: rms ≈ 1.16 */
    FILL_FP4,      /* any e2m1 pair: rms ≈ 2.93 */
    FILL_SCALE,    /* e8m0 bytes 127+exp or one less */
    FILL_TID2EID   /* rows of distinct expert ids */
} synth_fill;

typedef struct {
    char name[96];
    synth_dtype dtype;
    int ndim;
    int64_t shape[2];
    synth_fill fill;
    int exp;          /* FILL_BF16 / FILL_SCALE: the power of two */
    float amp;        /* FILL_F32 */
    int n_ids;        /* FILL_TID2EID: experts to draw from */
    uint64_t bytes, offset; /* offset: in its shard's data section */
    int shard;
} synth_tensor;

typedef struct {
    synth_tensor *t;
    int n, cap;
    int failed;
} synth_plan;

static int fail(char *msg, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    return -1;
}

static synth_tensor *add(synth_plan *p, synth_dtype dt, synth_fill fill, int64_t d0, int64_t d1, const char *fmt, ...)
{
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 1024;
        synth_tensor *t = realloc(p->t, (size_t)cap * sizeof *t);
        if (!t) { p->failed = 1; return NULL; }
        p->t = t;
        p->cap = cap;
    }
    synth_tensor *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->dtype = dt;
    t->fill = fill;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->bytes = (uint64_t)d0 * (uint64_t)(d1 ? d1 : 1) * (uint64_t)dtype_size[dt];
    return t;
}

/* The power of two that makes weights of the given rms sum `inputs` terms to about rms 1. */
static int gain_exp(double rms, int inputs)
{
    return (int)lround(-log2(rms * sqrt((double)inputs)));
}

static void add_bf16(synth_plan *p, int64_t rows, int64_t cols, const char *name)
{
    synth_tensor *t = add(p, DT_BF16, FILL_BF16, rows, cols, "%s", name);
    if (t) t->exp = gain_exp(1.53, (int)cols);
}

static void add_f32(synth_plan *p, int64_t d0, int64_t d1, float amp, const char *name)
{
    synth_tensor *t = add(p, DT_F32, FILL_F32, d0, d1, "%s", name);
    if (t) t->amp = amp;
}

/* An FP8 linear: e4m3 [rows][cols] + e8m0 [ceil(rows/128)][ceil(cols/128)]. */
static void add_fp8(synth_plan *p, int64_t rows, int64_t cols, const char *base)
{
    add(p, DT_E4M3, FILL_FP8, rows, cols, "%s.weight", base);
    synth_tensor *s = add(p, DT_E8M0, FILL_SCALE, (rows + 127) / 128, (cols + 127) / 128, "%s.scale", base);
    if (s) s->exp = gain_exp(1.16, (int)cols);
}

/* An FP4 expert linear: packed e2m1 [rows][cols/2] as I8 + e8m0 [rows][cols/32]. */
static void add_fp4(synth_plan *p, int64_t rows, int64_t cols, const char *base)
{
    add(p, DT_I8, FILL_FP4, rows, cols / 2, "%s.weight", base);
    synth_tensor *s = add(p, DT_E8M0, FILL_SCALE, rows, cols / 32, "%s.scale", base);
    if (s) s->exp = gain_exp(2.93, (int)cols);
}

static void add_compressor(synth_plan *p, const synth_dims *d, const char *base, int ratio, int out_dim, int overlap)
{
    char n[128];
    int cd = (overlap ? 2 : 1) * out_dim;
    snprintf(n, sizeof n, "%s.wkv.weight", base);   add_bf16(p, cd, d->dim, n);
    snprintf(n, sizeof n, "%s.wgate.weight", base); add_bf16(p, cd, d->dim, n);
    snprintf(n, sizeof n, "%s.ape", base);          add_f32(p, ratio, cd, 0.1f, n);
    add(p, DT_BF16, FILL_NORM, out_dim, 0, "%s.norm.weight", base);
}

static void plan_layer(synth_plan *p, const synth_dims *d, int L, int kind, int n_experts)
{
    char a[64], n[128];
    int hc = 4, mix = (2 + hc) * hc;
    int ratio = kind == 1 ? 4 : kind == 2 ? 128 : 0;
    int64_t qdim = (int64_t)d->n_heads * d->head_dim;
    add(p, DT_BF16, FILL_NORM, d->dim, 0, "layers.%d.attn_norm.weight", L);
    add(p, DT_BF16, FILL_NORM, d->dim, 0, "layers.%d.ffn_norm.weight", L);
    for (int h = 0; h < 2; h++) {
        const char *which = h ? "ffn" : "attn";
        /* fn · (normalised 4·dim streams) should give mixes of order 1. */
        snprintf(n, sizeof n, "layers.%d.hc_%s_fn", L, which);    add_f32(p, mix, (int64_t)hc * d->dim, 1.7f / sqrtf((float)hc * d->dim), n);
        snprintf(n, sizeof n, "layers.%d.hc_%s_base", L, which);  add_f32(p, mix, 0, 0.5f, n);
        snprintf(n, sizeof n, "layers.%d.hc_%s_scale", L, which); add_f32(p, 3, 0, 0.5f, n);
    }
    snprintf(a, sizeof a, "layers.%d.attn", L);
    snprintf(n, sizeof n, "%s.wq_a", a); add_fp8(p, d->q_lora, d->dim, n);
    add(p, DT_BF16, FILL_NORM, d->q_lora, 0, "%s.q_norm.weight", a);
    snprintf(n, sizeof n, "%s.wq_b", a); add_fp8(p, qdim, d->q_lora, n);
    snprintf(n, sizeof n, "%s.wkv", a);  add_fp8(p, d->head_dim, d->dim, n);
    add(p, DT_BF16, FILL_NORM, d->head_dim, 0, "%s.kv_norm.weight", a);
    snprintf(n, sizeof n, "%s.wo_a", a); add_fp8(p, (int64_t)d->o_groups * d->o_lora, qdim / d->o_groups, n);
    snprintf(n, sizeof n, "%s.wo_b", a); add_fp8(p, d->dim, (int64_t)d->o_groups * d->o_lora, n);
    snprintf(n, sizeof n, "%s.attn_sink", a); add_f32(p, d->n_heads, 0, 1.0f, n);
    if (ratio) {
        snprintf(n, sizeof n, "%s.compressor", a);
        add_compressor(p, d, n, ratio, d->head_dim, kind == 1);
    }
    if (kind == 1) {
        snprintf(n, sizeof n, "%s.indexer.wq_b", a); add_fp8(p, (int64_t)d->index_heads * d->index_dim, d->q_lora, n);
        snprintf(n, sizeof n, "%s.indexer.weights_proj.weight", a); add_bf16(p, d->index_heads, d->dim, n);
        snprintf(n, sizeof n, "%s.indexer.compressor", a);
        add_compressor(p, d, n, ratio, d->index_dim, 1);
    }
    snprintf(a, sizeof a, "layers.%d.ffn", L);
    snprintf(n, sizeof n, "%s.gate.weight", a); add_bf16(p, n_experts, d->dim, n);
    if (L < d->n_hash) {
        synth_tensor *t = add(p, DT_I64, FILL_TID2EID, d->vocab, d->n_active, "%s.gate.tid2eid", a);
        if (t) t->n_ids = n_experts;
    } else {
        snprintf(n, sizeof n, "%s.gate.bias", a); add_f32(p, n_experts, 0, 0.1f, n);
    }
    for (int e = 0; e < n_experts; e++) {
        char ep[96];
        snprintf(ep, sizeof ep, "%s.experts.%d", a, e);
        snprintf(n, sizeof n, "%s.w1", ep); add_fp4(p, d->inter, d->dim, n);
        snprintf(n, sizeof n, "%s.w3", ep); add_fp4(p, d->inter, d->dim, n);
        snprintf(n, sizeof n, "%s.w2", ep); add_fp4(p, d->dim, d->inter, n);
    }
    snprintf(n, sizeof n, "%s.shared_experts.w1", a); add_fp8(p, d->inter, d->dim, n);
    snprintf(n, sizeof n, "%s.shared_experts.w3", a); add_fp8(p, d->inter, d->dim, n);
    snprintf(n, sizeof n, "%s.shared_experts.w2", a); add_fp8(p, d->dim, d->inter, n);
}

static int plan_model(synth_plan *p, const synth_spec *s, const synth_dims *d, int n_experts)
{
    int hc = 4;
    synth_tensor *t = add(p, DT_BF16, FILL_BF16, d->vocab, d->dim, "embed.weight");
    if (t) t->exp = -3;
    for (int L = 0; L < s->n_layers; L++)
        plan_layer(p, d, L, s->kinds[L], n_experts);
    add(p, DT_BF16, FILL_NORM, d->dim, 0, "norm.weight");
    add_f32(p, hc, (int64_t)hc * d->dim, 1.7f / sqrtf((float)hc * d->dim), "hc_head_fn");
    add_f32(p, hc, 0, 0.5f, "hc_head_base");
    add_f32(p, 1, 0, 0.5f, "hc_head_scale");
    add_bf16(p, d->vocab, d->dim, "head.weight");
    return p->failed ? -1 : 0;
}

/* Cuts the tensors, in plan order, into shards of at most max bytes (a
 * tensor larger than that gets a shard of its own); within a shard the
 * widest elements come first so every tensor is aligned to its element size. */
static int assign_shards(synth_plan *p, uint64_t max)
{
    int shard = 0;
    uint64_t used = 0;
    for (int i = 0; i < p->n; i++) {
        if (used > 0 && used + p->t[i].bytes > max) {
            shard++;
            used = 0;
        }
        p->t[i].shard = shard;
        used += p->t[i].bytes;
    }
    int n_shards = shard + 1;
    for (int s = 0; s < n_shards; s++) {
        uint64_t off = 0;
        for (int size = 8; size >= 1; size /= 2)
            for (int i = 0; i < p->n; i++)
                if (p->t[i].shard == s && dtype_size[p->t[i].dtype] == size) {
                    p->t[i].offset = off;
                    off += p->t[i].bytes;
                }
    }
    return n_shards;
}

static int valid_spec(const synth_spec *s, const synth_dims **d, int *n_experts, char *msg, size_t len)
{
    *d = dims_of(s->shape);
    if (!*d) return fail(msg, len, "unknown shape '%s' (flash, pro or tiny)", s->shape ? s->shape : "(none)");
    if (s->n_layers <= 0 || s->n_layers > SYNTH_MAX_LAYERS)
        return fail(msg, len, "--layers %d: need 1 to %d", s->n_layers, SYNTH_MAX_LAYERS);
    for (int i = 0; i < s->n_layers; i++)
        if (s->kinds[i] < 0 || s->kinds[i] > 2) return fail(msg, len, "layer %d: unknown kind %d", i, s->kinds[i]);
    *n_experts = s->n_experts > 0 ? s->n_experts : (*d)->n_experts;
    if (*n_experts < (*d)->n_active)
        return fail(msg, len, "--experts %d: need at least %d (the experts each token uses)", *n_experts, (*d)->n_active);
    return 0;
}

uint64_t synth_planned_bytes(const synth_spec *s)
{
    const synth_dims *d;
    int ne;
    char msg[8];
    if (valid_spec(s, &d, &ne, msg, sizeof msg)) return 0;
    synth_plan p = {0};
    uint64_t total = 0;
    if (plan_model(&p, s, d, ne) == 0)
        for (int i = 0; i < p.n; i++) total += p.t[i].bytes;
    free(p.t);
    return total;
}

/* ---- values ---- */

static inline uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#define GEN_BLOCK ((uint64_t)1 << 20)

/* Bytes [off, off+len) of tensor t, off a multiple of GEN_BLOCK: each block
 * has its own generator, seeded by (seed, tensor, block). */
static void fill_block(const synth_tensor *t, uint64_t tseed, uint64_t off, uint8_t *dst, size_t len)
{
    uint64_t rng = tseed ^ (off / GEN_BLOCK) * 0xd1b54a32d192ed03ull;
    splitmix64(&rng);
    size_t i = 0;
    if (t->fill == FILL_F32) {
        for (; i + 4 <= len; i += 4) {
            float v = ((float)(splitmix64(&rng) >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * t->amp;
            memcpy(dst + i, &v, 4);
        }
        return;
    }
    uint64_t bf_exp = (uint64_t)(127 + t->exp) << 7;
    uint64_t scale_byte = (uint64_t)(127 + t->exp);
    for (; i < len; i += 8) {
        uint64_t r = splitmix64(&rng), w;
        switch (t->fill) {
        case FILL_BF16: w = (r & 0x807f807f807f807full) | bf_exp * 0x0001000100010001ull; break;
        case FILL_NORM: w = (r & 0x0007000700070007ull) | 0x3f803f803f803f80ull; break;
        /* sign, exponent 0110/0111, mantissa: never the e4m3fn NaN. */
        case FILL_FP8: w = (r & 0x8f8f8f8f8f8f8f8full) | 0x3030303030303030ull; break;
        case FILL_FP4: w = r; break;
        case FILL_SCALE: w = scale_byte * 0x0101010101010101ull - (r & 0x0101010101010101ull); break;
        default: w = 0; break;
        }
        size_t n = len - i < 8 ? len - i : 8;
        memcpy(dst + i, &w, n);
    }
}

/* Hash-routing rows: n_active distinct experts per token, each row drawn from its own generator. */
static void fill_tid2eid(const synth_tensor *t, uint64_t tseed, uint8_t *dst)
{
    int K = (int)t->shape[1];
    for (int64_t row = 0; row < t->shape[0]; row++) {
        uint64_t rng = tseed ^ (uint64_t)row * 0xd1b54a32d192ed03ull;
        int64_t ids[64];
        for (int k = 0; k < K && k < 64; k++) {
            int64_t e;
            int dup;
            do {
                e = (int64_t)(splitmix64(&rng) % (uint64_t)t->n_ids);
                dup = 0;
                for (int j = 0; j < k; j++) dup |= ids[j] == e;
            } while (dup);
            ids[k] = e;
        }
        memcpy(dst + (size_t)row * K * 8, ids, (size_t)K * 8);
    }
}

static void fill_range(const synth_tensor *t, uint64_t tseed, uint64_t off, uint8_t *dst, size_t len)
{
    long blocks = (long)((len + GEN_BLOCK - 1) / GEN_BLOCK);
#pragma omp parallel for schedule(static)
    for (long b = 0; b < blocks; b++) {
        uint64_t o = (uint64_t)b * GEN_BLOCK;
        size_t n = len - o < GEN_BLOCK ? len - o : GEN_BLOCK;
        fill_block(t, tseed, off + o, dst + o, n);
    }
}

/* ---- files ---- */

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

typedef struct {
    char *s;
    size_t len, cap;
} strbuf;

static int sb_printf(strbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return -1;
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return 0;
        }
        size_t cap = (b->cap ? b->cap * 2 : 65536) + (size_t)n;
        char *s = realloc(b->s, cap);
        if (!s) return -1;
        b->s = s;
        b->cap = cap;
    }
}

static void shard_name(char *out, size_t len, int shard, int n_shards)
{
    snprintf(out, len, "model-%05d-of-%05d.safetensors", shard + 1, n_shards);
}

static int write_text_file(const char *dir, const char *name, const char *text, char *msg, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return fail(msg, len, "cannot create %s: %s", path, strerror(errno));
    int ok = fputs(text, f) >= 0;
    if (fclose(f) != 0 || !ok) return fail(msg, len, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

static int write_config(const synth_spec *s, const synth_dims *d, int n_experts, char *msg, size_t len)
{
    strbuf b = {0};
    char ratios[SYNTH_MAX_LAYERS * 5 + 8];
    size_t p = 0;
    for (int i = 0; i <= s->n_layers; i++) {
        int r = i == s->n_layers ? 0 : s->kinds[i] == 1 ? 4 : s->kinds[i] == 2 ? 128 : 0;
        p += (size_t)snprintf(ratios + p, sizeof ratios - p, "%s%d", i ? ", " : "", r);
    }
    int n_hash = d->n_hash < s->n_layers ? d->n_hash : s->n_layers;
    int rc = sb_printf(&b,
        "{\n"
        "  \"architectures\": [\"DeepseekV4ForCausalLM\"],\n"
        "  \"model_type\": \"deepseek_v4\",\n"
        "  \"synthetic\": {\"shape\": \"%s\", \"seed\": %llu},\n"
        "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n"
        "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": 1,\n  \"head_dim\": %d,\n"
        "  \"qk_rope_head_dim\": %d,\n  \"q_lora_rank\": %d,\n  \"o_groups\": %d,\n  \"o_lora_rank\": %d,\n"
        "  \"sliding_window\": %d,\n  \"index_n_heads\": %d,\n  \"index_head_dim\": %d,\n  \"index_topk\": %d,\n"
        "  \"n_routed_experts\": %d,\n  \"num_experts_per_tok\": %d,\n  \"n_shared_experts\": 1,\n"
        "  \"moe_intermediate_size\": %d,\n  \"num_hash_layers\": %d,\n  \"scoring_func\": \"sqrtsoftplus\",\n"
        "  \"norm_topk_prob\": true,\n  \"routed_scaling_factor\": %g,\n  \"swiglu_limit\": 10.0,\n"
        "  \"hidden_act\": \"silu\",\n"
        "  \"hc_mult\": 4,\n  \"hc_sinkhorn_iters\": 20,\n  \"hc_eps\": 1e-06,\n  \"rms_norm_eps\": 1e-06,\n"
        "  \"rope_theta\": 10000.0,\n  \"compress_rope_theta\": 160000.0,\n"
        "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 16, \"original_max_position_embeddings\": 65536,"
        " \"beta_fast\": 32, \"beta_slow\": 1},\n"
        "  \"compress_ratios\": [%s],\n  \"num_nextn_predict_layers\": 1,\n"
        "  \"max_position_embeddings\": 1048576,\n  \"bos_token_id\": 0,\n  \"eos_token_id\": 1,\n"
        "  \"tie_word_embeddings\": false,\n"
        "  \"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", \"scale_fmt\": \"ue8m0\","
        " \"weight_block_size\": [128, 128]},\n"
        "  \"expert_dtype\": \"fp4\",\n  \"torch_dtype\": \"bfloat16\"\n}\n",
        s->shape, (unsigned long long)s->seed, d->vocab, d->dim, s->n_layers, d->n_heads, d->head_dim, d->rope_dim,
        d->q_lora, d->o_groups, d->o_lora, d->window, d->index_heads, d->index_dim, d->index_topk, n_experts,
        d->n_active, d->inter, n_hash, (double)d->route_scale, ratios);
    if (rc) {
        free(b.s);
        return fail(msg, len, "out of memory for config.json");
    }
    rc = write_text_file(s->out_dir, "config.json", b.s, msg, len);
    free(b.s);
    return rc;
}

static int write_index(const synth_spec *s, const synth_plan *p, int n_shards, char *msg, size_t len)
{
    strbuf b = {0};
    uint64_t total = 0;
    for (int i = 0; i < p->n; i++) total += p->t[i].bytes;
    int rc = sb_printf(&b, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {\n", (unsigned long long)total);
    for (int i = 0; i < p->n && !rc; i++) {
        char shard[64];
        shard_name(shard, sizeof shard, p->t[i].shard, n_shards);
        rc = sb_printf(&b, "    \"%s\": \"%s\"%s\n", p->t[i].name, shard, i + 1 < p->n ? "," : "");
    }
    if (!rc) rc = sb_printf(&b, "  }\n}\n");
    if (rc) {
        free(b.s);
        return fail(msg, len, "out of memory for the index");
    }
    rc = write_text_file(s->out_dir, "model.safetensors.index.json", b.s, msg, len);
    free(b.s);
    return rc;
}

static uint64_t tensor_seed(uint64_t seed, int index)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + (uint64_t)index;
    return splitmix64(&x);
}

#define WRITE_BUFFER ((size_t)64 << 20)

static int write_shard(const synth_spec *s, const synth_plan *p, int shard, int n_shards, uint8_t *buf,
                       uint64_t *done, uint64_t total, char *msg, size_t len)
{
    char name[64], path[1024];
    shard_name(name, sizeof name, shard, n_shards);
    snprintf(path, sizeof path, "%s/%s", s->out_dir, name);

    /* Tensors of this shard in data order. */
    int *order = malloc((size_t)p->n * sizeof *order), n = 0;
    if (!order) return fail(msg, len, "out of memory");
    for (int size = 8; size >= 1; size /= 2)
        for (int i = 0; i < p->n; i++)
            if (p->t[i].shard == shard && dtype_size[p->t[i].dtype] == size) order[n++] = i;

    strbuf h = {0};
    int rc = sb_printf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int k = 0; k < n && !rc; k++) {
        const synth_tensor *t = &p->t[order[k]];
        rc = sb_printf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", t->name, dtype_name[t->dtype],
                       (long long)t->shape[0]);
        if (!rc && t->ndim == 2) rc = sb_printf(&h, ",%lld", (long long)t->shape[1]);
        if (!rc) rc = sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->offset,
                                (unsigned long long)(t->offset + t->bytes));
    }
    if (!rc) rc = sb_printf(&h, "}");
    while (!rc && h.len % 8) rc = sb_printf(&h, " ");
    if (rc) {
        free(order);
        free(h.s);
        return fail(msg, len, "out of memory for the header of %s", name);
    }

    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        free(order);
        free(h.s);
        return fail(msg, len, "cannot create %s: %s", path, strerror(errno));
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    rc = write_all(fd, len8, 8) || write_all(fd, h.s, h.len);
    free(h.s);
    for (int k = 0; k < n && !rc; k++) {
        const synth_tensor *t = &p->t[order[k]];
        uint64_t tseed = tensor_seed(s->seed, order[k]);
        if (t->fill == FILL_TID2EID) {
            uint8_t *ids = malloc(t->bytes);
            if (!ids) {
                rc = -1;
                errno = ENOMEM;
                break;
            }
            fill_tid2eid(t, tseed, ids);
            rc = write_all(fd, ids, t->bytes);
            free(ids);
        } else {
            for (uint64_t off = 0; off < t->bytes && !rc; off += WRITE_BUFFER) {
                size_t chunk = t->bytes - off < WRITE_BUFFER ? (size_t)(t->bytes - off) : WRITE_BUFFER;
                fill_range(t, tseed, off, buf, chunk);
                rc = write_all(fd, buf, chunk);
            }
        }
        *done += t->bytes;
        if (s->progress) s->progress(s->progress_ctx, t->name, *done, total);
    }
    int saved = errno;
    if (close(fd) != 0 && !rc) {
        rc = -1;
        saved = errno;
    }
    free(order);
    if (rc) return fail(msg, len, "cannot write %s: %s", path, strerror(saved));
    return 0;
}

int synth_write_checkpoint(const synth_spec *s, char *msg, size_t len)
{
    const synth_dims *d;
    int n_experts;
    if (valid_spec(s, &d, &n_experts, msg, len)) return -1;
    if (!s->out_dir) return fail(msg, len, "no output directory");
    if (mkdir(s->out_dir, 0755) != 0 && errno != EEXIST)
        return fail(msg, len, "cannot create %s: %s", s->out_dir, strerror(errno));

    synth_plan p = {0};
    if (plan_model(&p, s, d, n_experts)) {
        free(p.t);
        return fail(msg, len, "out of memory planning the tensors");
    }
    int n_shards = assign_shards(&p, s->shard_bytes ? s->shard_bytes : 4000000000ull);
    uint64_t total = 0, done = 0;
    for (int i = 0; i < p.n; i++) total += p.t[i].bytes;

    int rc = write_config(s, d, n_experts, msg, len);
    if (!rc) rc = write_index(s, &p, n_shards, msg, len);
    uint8_t *buf = rc ? NULL : malloc(WRITE_BUFFER);
    if (!rc && !buf) rc = fail(msg, len, "out of memory for the write buffer");
    for (int sh = 0; sh < n_shards && !rc; sh++)
        rc = write_shard(s, &p, sh, n_shards, buf, &done, total, msg, len);
    free(buf);
    free(p.t);
    return rc;
}
