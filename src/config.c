/* config.json in either of its two spellings:
 * - the hub form DeepSeek ships (compress_ratios, num_hash_layers,
 *   qk_rope_head_dim, rope_scaling);
 * - the form transformers 5 writes (layer_types + compress_rates,
 *   mlp_layer_types, partial_rotary_factor, rope_parameters {main, compress}).
 * Explicit keys win; where both spellings are present they must agree.
 * Defaults exist only where both references have the same one (each marked). */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "error.h"

typedef struct {
    const char *file;   /* base name, for messages */
    json_t *root;
    dsv4_error *err;
} reader;

static const char *kind_names[] = {
    [DSV4_LAYER_WINDOW] = "sliding_attention",
    [DSV4_LAYER_CSA] = "compressed_sparse_attention",
    [DSV4_LAYER_HCA] = "heavily_compressed_attention",
};

static int int_value(const json_t *v, int min, int *out)
{
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    if (x < min || x > INT_MAX) return -1;
    *out = (int)x;
    return 0;
}

static const char *int_kind(int min)
{
    return min > 0 ? "a positive integer" : "a non-negative integer";
}

/* min = 1: positive; min = 0: non-negative. */
static int req_int(reader *r, const char *key, int min, int *out)
{
    const json_t *v = json_object_get(r->root, key);
    if (!v) return dsv4_fail(r->err, "%s: key '%s' is missing (%s)", r->file, key, int_kind(min));
    if (int_value(v, min, out) != 0)
        return dsv4_fail(r->err, "%s: key '%s' must be %s", r->file, key, int_kind(min));
    return 0;
}

static int opt_int(reader *r, const char *key, int min, int def, int *out)
{
    const json_t *v = json_object_get(r->root, key);
    if (!v || json_is_null(v)) { *out = def; return 0; }
    if (int_value(v, min, out) != 0)
        return dsv4_fail(r->err, "%s: key '%s' must be %s", r->file, key, int_kind(min));
    return 0;
}

/* A number (integer or real) in a JSON object; positive or non-negative. */
static int num_in(reader *r, const json_t *obj, const char *where, const char *key, int positive,
                  int required, float *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (!required) return 1;
        return dsv4_fail(r->err, "%s: key '%s%s' is missing (a %s number)", r->file, where, key,
                         positive ? "positive" : "non-negative");
    }
    double x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!(positive ? x > 0 : x >= 0) || !isfinite(x))
        return dsv4_fail(r->err, "%s: key '%s%s' must be a %s number", r->file, where, key,
                         positive ? "positive" : "non-negative");
    *out = (float)x;
    return 0;
}

static int req_num(reader *r, const char *key, int positive, float *out)
{
    return num_in(r, r->root, "", key, positive, 1, out);
}

static int kind_from_string(const char *s, dsv4_layer_kind *out)
{
    for (int k = 0; k < 3; k++)
        if (strcmp(s, kind_names[k]) == 0) { *out = (dsv4_layer_kind)k; return 0; }
    return -1;
}

/* The official code gives a layer an indexer and an overlapping compressor
 * exactly when its ratio is 4. */
static dsv4_layer_kind kind_from_ratio(int ratio)
{
    return ratio == 0 ? DSV4_LAYER_WINDOW : ratio == 4 ? DSV4_LAYER_CSA : DSV4_LAYER_HCA;
}

/* Per-kind compression rate of the transformers form: compress_rates
 * {kind: rate} (default {CSA: 4, HCA: 128}, transformers' own default, which
 * is also what the release uses), folded with the legacy top-level
 * compress_rate_csa / compress_rate_hca. */
static int rate_for_kind(reader *r, dsv4_layer_kind kind, int *out)
{
    if (kind == DSV4_LAYER_WINDOW) { *out = 0; return 0; }
    const char *legacy = kind == DSV4_LAYER_CSA ? "compress_rate_csa" : "compress_rate_hca";
    *out = kind == DSV4_LAYER_CSA ? 4 : 128;
    const json_t *rates = json_object_get(r->root, "compress_rates");
    if (rates && !json_is_null(rates)) {
        if (!json_is_object(rates))
            return dsv4_fail(r->err, "%s: key 'compress_rates' must be an object {layer type: rate}", r->file);
        const json_t *v = json_object_get(rates, kind_names[kind]);
        if (v && int_value(v, 1, out) != 0)
            return dsv4_fail(r->err, "%s: key 'compress_rates.%s' must be a positive integer", r->file, kind_names[kind]);
    }
    return opt_int(r, legacy, 1, *out, out);
}

static int read_layer_schedule(reader *r, dsv4_config *c)
{
    const int n = c->n_layers;
    const json_t *types = json_object_get(r->root, "layer_types");
    const json_t *ratios = json_object_get(r->root, "compress_ratios");
    if (types && json_is_null(types)) types = NULL;
    if (ratios && json_is_null(ratios)) ratios = NULL;
    if (!types && !ratios)
        return dsv4_fail(r->err, "%s: key 'compress_ratios' (or 'layer_types') is missing", r->file);

    /* compress_ratios may be longer than the layer count: the release appends
     * the MTP layer's ratio. */
    if (ratios) {
        if (!json_is_array(ratios))
            return dsv4_fail(r->err, "%s: key 'compress_ratios' must be a list of non-negative integers", r->file);
        if ((long)json_array_size(ratios) < n)
            return dsv4_fail(r->err, "%s: key 'compress_ratios' has %zu entries, fewer than num_hidden_layers (%d)",
                             r->file, json_array_size(ratios), n);
        for (int i = 0; i < n; i++)
            if (int_value(json_array_get(ratios, (size_t)i), 0, &c->compress_ratio[i]) != 0)
                return dsv4_fail(r->err, "%s: key 'compress_ratios' entry %d must be a non-negative integer", r->file, i);
    }
    if (types) {
        if (!json_is_array(types))
            return dsv4_fail(r->err, "%s: key 'layer_types' must be a list of strings", r->file);
        if ((long)json_array_size(types) < n)
            return dsv4_fail(r->err, "%s: key 'layer_types' has %zu entries, fewer than num_hidden_layers (%d)",
                             r->file, json_array_size(types), n);
        for (int i = 0; i < n; i++) {
            const json_t *v = json_array_get(types, (size_t)i);
            dsv4_layer_kind kind;
            if (!json_is_string(v) || kind_from_string(json_string_value(v), &kind) != 0)
                return dsv4_fail(r->err, "%s: key 'layer_types' entry %d must be one of sliding_attention, "
                                 "compressed_sparse_attention, heavily_compressed_attention", r->file, i);
            int rate;
            if (rate_for_kind(r, kind, &rate) != 0) return -1;
            if (ratios && c->compress_ratio[i] != rate)
                return dsv4_fail(r->err, "%s: key 'compress_ratios' entry %d (%d) disagrees with layer_types "
                                 "entry '%s' (rate %d)", r->file, i, c->compress_ratio[i], kind_names[kind], rate);
            c->kind[i] = kind;
            c->compress_ratio[i] = rate;
        }
    } else {
        for (int i = 0; i < n; i++) c->kind[i] = kind_from_ratio(c->compress_ratio[i]);
    }
    return 0;
}

/* Hash-routed layers must be a prefix: the release routes layers
 * [0, num_hash_layers) by token id. */
static int read_hash_layers(reader *r, dsv4_config *c)
{
    const json_t *mlp = json_object_get(r->root, "mlp_layer_types");
    const json_t *num = json_object_get(r->root, "num_hash_layers");
    if (mlp && json_is_null(mlp)) mlp = NULL;
    if (num && json_is_null(num)) num = NULL;
    if (!mlp && !num)
        return dsv4_fail(r->err, "%s: key 'num_hash_layers' (or 'mlp_layer_types') is missing", r->file);
    if (num) {
        if (int_value(num, 0, &c->n_hash_layers) != 0 || c->n_hash_layers > c->n_layers)
            return dsv4_fail(r->err, "%s: key 'num_hash_layers' must be an integer in [0, num_hidden_layers]", r->file);
    }
    if (!mlp) return 0;
    if (!json_is_array(mlp))
        return dsv4_fail(r->err, "%s: key 'mlp_layer_types' must be a list of strings", r->file);
    if ((long)json_array_size(mlp) < c->n_layers)
        return dsv4_fail(r->err, "%s: key 'mlp_layer_types' has %zu entries, fewer than num_hidden_layers (%d)",
                         r->file, json_array_size(mlp), c->n_layers);
    int n_hash = 0;
    for (int i = 0; i < c->n_layers; i++) {
        const json_t *v = json_array_get(mlp, (size_t)i);
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        int is_hash = strcmp(s, "hash_moe") == 0;
        if (!is_hash && strcmp(s, "moe") != 0)
            return dsv4_fail(r->err, "%s: key 'mlp_layer_types' entry %d must be 'hash_moe' or 'moe'", r->file, i);
        if (is_hash && n_hash != i)
            return dsv4_fail(r->err, "%s: key 'mlp_layer_types': hash_moe layer %d follows a moe layer "
                             "(hash layers must come first)", r->file, i);
        n_hash += is_hash;
    }
    if (num && n_hash != c->n_hash_layers)
        return dsv4_fail(r->err, "%s: key 'num_hash_layers' (%d) disagrees with mlp_layer_types (%d hash layers)",
                         r->file, c->n_hash_layers, n_hash);
    c->n_hash_layers = n_hash;
    return 0;
}

static const json_t *rope_sub(reader *r, const char *label)
{
    const json_t *rp = json_object_get(r->root, "rope_parameters");
    const json_t *v = json_is_object(rp) ? json_object_get(rp, label) : NULL;
    return json_is_object(v) ? v : NULL;
}

static int read_rope(reader *r, dsv4_config *c, int any_compressed)
{
    const json_t *rp = json_object_get(r->root, "rope_parameters");
    if (rp && !json_is_null(rp) && !json_is_object(rp))
        return dsv4_fail(r->err, "%s: key 'rope_parameters' must be an object", r->file);
    const json_t *main_p = rope_sub(r, "main"), *comp_p = rope_sub(r, "compress");
    /* A flat rope_parameters (not split into main/compress) holds the YaRN
     * fields of the compressed layers, as transformers reads it. */
    const json_t *flat = json_is_object(rp) && !main_p && !comp_p ? rp : NULL;

    /* rope_dim: qk_rope_head_dim, else head_dim * partial_rotary_factor. */
    const json_t *v = json_object_get(r->root, "qk_rope_head_dim");
    if (v) {
        if (int_value(v, 1, &c->rope_dim) != 0)
            return dsv4_fail(r->err, "%s: key 'qk_rope_head_dim' must be a positive integer", r->file);
    } else {
        const json_t *holder = json_object_get(r->root, "partial_rotary_factor") ? r->root : main_p;
        float f;
        int rc = holder ? num_in(r, holder, holder == r->root ? "" : "rope_parameters.main.",
                                 "partial_rotary_factor", 1, 0, &f) : 1;
        if (rc < 0) return -1;
        if (rc > 0)
            return dsv4_fail(r->err, "%s: key 'qk_rope_head_dim' (or 'partial_rotary_factor') is missing", r->file);
        double d = (double)f * c->head_dim;
        if (fabs(d - floor(d + 0.5)) > 1e-3 || d < 1)
            return dsv4_fail(r->err, "%s: key 'partial_rotary_factor' times head_dim (%d) is not a whole number",
                             r->file, c->head_dim);
        c->rope_dim = (int)floor(d + 0.5);
    }

    int rc = num_in(r, r->root, "", "rope_theta", 1, 0, &c->rope_theta);
    if (rc > 0 && main_p) rc = num_in(r, main_p, "rope_parameters.main.", "rope_theta", 1, 0, &c->rope_theta);
    if (rc > 0 && flat) rc = num_in(r, flat, "rope_parameters.", "rope_theta", 1, 0, &c->rope_theta);
    if (rc > 0) return dsv4_fail(r->err, "%s: key 'rope_theta' is missing (a positive number)", r->file);
    if (rc < 0) return -1;

    rc = num_in(r, r->root, "", "compress_rope_theta", 1, 0, &c->compress_rope_theta);
    if (rc > 0 && comp_p) rc = num_in(r, comp_p, "rope_parameters.compress.", "rope_theta", 1, 0, &c->compress_rope_theta);
    if (rc < 0) return -1;
    if (rc > 0) {
        if (any_compressed)
            return dsv4_fail(r->err, "%s: key 'compress_rope_theta' is missing (a positive number)", r->file);
        c->compress_rope_theta = c->rope_theta; /* unused: no compressed layer */
    }

    /* YaRN, compressed layers only. rope_scaling (hub) wins over rope_parameters. */
    const char *where = "rope_scaling.";
    const json_t *y = json_object_get(r->root, "rope_scaling");
    if (y && json_is_null(y)) y = NULL;
    if (y && !json_is_object(y)) return dsv4_fail(r->err, "%s: key 'rope_scaling' must be an object", r->file);
    if (!y && comp_p) { y = comp_p; where = "rope_parameters.compress."; }
    if (!y && flat) { y = flat; where = "rope_parameters."; }
    c->yarn_factor = 1.0f;
    c->yarn_original_seq_len = 0;
    c->yarn_beta_fast = 32.0f;
    c->yarn_beta_slow = 1.0f;
    if (!y) return 0;
    const json_t *t = json_object_get(y, "rope_type");
    if (!t) t = json_object_get(y, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : t ? NULL : "default";
    if (!type) return dsv4_fail(r->err, "%s: key '%srope_type' must be a string", r->file, where);
    if (strcmp(type, "default") == 0) return 0;
    if (strcmp(type, "yarn") != 0)
        return dsv4_fail(r->err, "%s: key '%srope_type' is '%s'; only 'yarn' is supported", r->file, where, type);
    if (num_in(r, y, where, "factor", 1, 1, &c->yarn_factor) != 0) return -1;
    const json_t *o = json_object_get(y, "original_max_position_embeddings");
    if (!o || int_value(o, 1, &c->yarn_original_seq_len) != 0)
        return dsv4_fail(r->err, "%s: key '%soriginal_max_position_embeddings' must be a positive integer", r->file, where);
    /* 32 and 1 are YaRN's own defaults in both the official code and transformers. */
    if (num_in(r, y, where, "beta_fast", 1, 0, &c->yarn_beta_fast) < 0) return -1;
    if (num_in(r, y, where, "beta_slow", 1, 0, &c->yarn_beta_slow) < 0) return -1;
    return 0;
}

static int read_token_ids(reader *r, dsv4_config *c)
{
    /* 0 and 1 are the release tokenizer's BOS/EOS and transformers' defaults. */
    if (opt_int(r, "bos_token_id", 0, 0, &c->bos_id) != 0) return -1;
    const json_t *e = json_object_get(r->root, "eos_token_id");
    c->eos_id = 1;
    if (json_is_array(e)) {
        if (json_array_size(e) == 0 || int_value(json_array_get(e, 0), 0, &c->eos_id) != 0)
            return dsv4_fail(r->err, "%s: key 'eos_token_id' must be a non-negative integer or a list of them", r->file);
    } else if (e && !json_is_null(e) && int_value(e, 0, &c->eos_id) != 0) {
        return dsv4_fail(r->err, "%s: key 'eos_token_id' must be a non-negative integer or a list of them", r->file);
    }
    if (c->bos_id >= c->vocab_size)
        return dsv4_fail(r->err, "%s: key 'bos_token_id' (%d) is outside the vocabulary (%d)", r->file, c->bos_id, c->vocab_size);
    if (c->eos_id >= c->vocab_size)
        return dsv4_fail(r->err, "%s: key 'eos_token_id' (%d) is outside the vocabulary (%d)", r->file, c->eos_id, c->vocab_size);
    return 0;
}

static int read_config(reader *r, dsv4_config *c)
{
    if (req_int(r, "vocab_size", 1, &c->vocab_size) || req_int(r, "hidden_size", 1, &c->dim) ||
        req_int(r, "num_hidden_layers", 1, &c->n_layers) || req_int(r, "num_attention_heads", 1, &c->n_heads) ||
        req_int(r, "head_dim", 1, &c->head_dim) || req_int(r, "q_lora_rank", 1, &c->q_lora_rank) ||
        req_int(r, "o_groups", 1, &c->o_groups) || req_int(r, "o_lora_rank", 1, &c->o_lora_rank) ||
        req_int(r, "sliding_window", 1, &c->window) ||
        req_int(r, "n_routed_experts", 1, &c->n_routed_experts) ||
        req_int(r, "num_experts_per_tok", 1, &c->n_activated_experts) ||
        req_int(r, "n_shared_experts", 0, &c->n_shared_experts) ||
        req_int(r, "moe_intermediate_size", 1, &c->moe_inter_dim) ||
        req_int(r, "hc_mult", 1, &c->hc_mult) || req_int(r, "hc_sinkhorn_iters", 1, &c->hc_sinkhorn_iters) ||
        req_int(r, "max_position_embeddings", 1, &c->max_position) ||
        /* The engine does not run MTP, so an absent count means none to skip. */
        opt_int(r, "num_nextn_predict_layers", 0, 0, &c->n_mtp_layers))
        return -1;
    if (req_num(r, "routed_scaling_factor", 1, &c->route_scale) || req_num(r, "swiglu_limit", 0, &c->swiglu_limit) ||
        req_num(r, "hc_eps", 1, &c->hc_eps) || req_num(r, "rms_norm_eps", 1, &c->norm_eps))
        return -1;
    if (c->n_layers > DSV4_MAX_LAYERS)
        return dsv4_fail(r->err, "%s: key 'num_hidden_layers' (%d) exceeds the engine's limit of %d layers",
                         r->file, c->n_layers, DSV4_MAX_LAYERS);
    int kv_heads;
    if (opt_int(r, "num_key_value_heads", 1, 1, &kv_heads) != 0) return -1;
    if (kv_heads != 1)
        return dsv4_fail(r->err, "%s: key 'num_key_value_heads' must be 1 (V4 shares one K=V head)", r->file);

    /* sqrtsoftplus is the default in both the official ModelArgs and transformers. */
    const json_t *sf = json_object_get(r->root, "scoring_func");
    if (sf && !json_is_null(sf) && (!json_is_string(sf) || strcmp(json_string_value(sf), "sqrtsoftplus") != 0))
        return dsv4_fail(r->err, "%s: key 'scoring_func' is %s%s%s; only 'sqrtsoftplus' is supported", r->file,
                         json_is_string(sf) ? "'" : "", json_is_string(sf) ? json_string_value(sf) : "not a string",
                         json_is_string(sf) ? "'" : "");
    const json_t *qc = json_object_get(r->root, "quantization_config");
    if (qc && !json_is_null(qc) && !json_is_object(qc))
        return dsv4_fail(r->err, "%s: key 'quantization_config' must be an object", r->file);
    const json_t *ed = json_object_get(r->root, "expert_dtype");
    if (ed && !json_is_null(ed) && !json_is_string(ed))
        return dsv4_fail(r->err, "%s: key 'expert_dtype' must be a string", r->file);

    if (read_layer_schedule(r, c) != 0 || read_hash_layers(r, c) != 0) return -1;
    int any_csa = 0, any_compressed = 0;
    for (int i = 0; i < c->n_layers; i++) {
        any_csa |= c->kind[i] == DSV4_LAYER_CSA;
        any_compressed |= c->kind[i] != DSV4_LAYER_WINDOW;
    }
    if (read_rope(r, c, any_compressed) != 0 || read_token_ids(r, c) != 0) return -1;
    if (c->head_dim <= c->rope_dim)
        return dsv4_fail(r->err, "%s: key 'head_dim' (%d) must exceed qk_rope_head_dim (%d)", r->file, c->head_dim, c->rope_dim);
    if (c->rope_dim % 2)
        return dsv4_fail(r->err, "%s: key 'qk_rope_head_dim' (%d) must be even", r->file, c->rope_dim);

    /* The indexer exists only in CSA layers; its keys are optional otherwise. */
    int min_index = any_csa ? 1 : 0;
    if (opt_int(r, "index_n_heads", min_index, 0, &c->index_n_heads) ||
        opt_int(r, "index_head_dim", min_index, 0, &c->index_head_dim) ||
        opt_int(r, "index_topk", min_index, 0, &c->index_topk))
        return -1;
    if (any_csa) {
        if (!json_object_get(r->root, "index_n_heads") || !json_object_get(r->root, "index_head_dim") ||
            !json_object_get(r->root, "index_topk"))
            return dsv4_fail(r->err, "%s: keys 'index_n_heads', 'index_head_dim' and 'index_topk' are required "
                             "when a compressed_sparse_attention layer exists", r->file);
        if (c->index_head_dim <= c->rope_dim)
            return dsv4_fail(r->err, "%s: key 'index_head_dim' (%d) must exceed qk_rope_head_dim (%d)",
                             r->file, c->index_head_dim, c->rope_dim);
        if (c->index_head_dim & (c->index_head_dim - 1))
            return dsv4_fail(r->err, "%s: key 'index_head_dim' (%d) must be a power of two (Hadamard rotation)",
                             r->file, c->index_head_dim);
    }

    if (c->n_heads % c->o_groups)
        return dsv4_fail(r->err, "%s: key 'num_attention_heads' (%d) must be a multiple of o_groups (%d)",
                         r->file, c->n_heads, c->o_groups);
    if (c->n_activated_experts > c->n_routed_experts)
        return dsv4_fail(r->err, "%s: key 'num_experts_per_tok' (%d) exceeds n_routed_experts (%d)",
                         r->file, c->n_activated_experts, c->n_routed_experts);
    if (c->n_shared_experts != 1)
        return dsv4_fail(r->err, "%s: key 'n_shared_experts' must be 1 (the release has one shared expert)", r->file);
    for (int i = 0; i < c->n_layers; i++)
        if (c->kind[i] != DSV4_LAYER_WINDOW && c->compress_ratio[i] <= 0)
            return dsv4_fail(r->err, "%s: layer %d is compressed but its compress ratio is %d", r->file, i, c->compress_ratio[i]);
    return 0;
}

int config_load(dsv4_config *cfg, const char *path, dsv4_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    const char *slash = strrchr(path, '/');
    reader r = {.file = slash ? slash + 1 : path, .err = err};
    struct stat st;
    if (stat(path, &st) != 0) return dsv4_fail(err, "cannot read '%s': %s", path, strerror(errno));
    json_error_t je;
    r.root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!r.root) {
        if (je.line < 0) return dsv4_fail(err, "cannot read '%s': %s", path, je.text);
        return dsv4_fail(err, "%s:%d:%d: %s", r.file, je.line, je.column, je.text);
    }
    int rc = json_is_object(r.root) ? read_config(&r, cfg) : dsv4_fail(err, "%s: top level must be a JSON object", r.file);
    json_decref(r.root);
    if (rc != 0) memset(cfg, 0, sizeof *cfg);
    return rc;
}
