/* Opening a model: config, shards, bound weights, kernels, threads, tables. */
#include "engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <omp.h>

#include "error.h"
#include "model.h"
#include "safetensors.h"
#include "weights_bind.h"

void dsv4_options_default(dsv4_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->n_threads = 0;
    opt->numerics = DSV4_NUMERICS_RELEASE;
    opt->isa = NULL;
}

int dsv4_engine_open(dsv4_engine **out, const char *model_dir, const dsv4_options *opt, dsv4_error *err)
{
    *out = NULL;
    dsv4_options defaults;
    if (!opt) {
        dsv4_options_default(&defaults);
        opt = &defaults;
    }
    if (opt->n_threads < 0) return dsv4_fail(err, "thread count %d is negative", opt->n_threads);
    if (opt->numerics != DSV4_NUMERICS_RELEASE && opt->numerics != DSV4_NUMERICS_PLAIN)
        return dsv4_fail(err, "unknown numerics mode %d", (int)opt->numerics);
    if (opt->prefill_chunk < 0 || opt->prefill_chunk > DSV4_PREFILL_CHUNK_MAX)
        return dsv4_fail(err, "prefill chunk %d: need 1 to %d tokens (0: the default, %d)", opt->prefill_chunk,
                         DSV4_PREFILL_CHUNK_MAX, DSV4_PREFILL_CHUNK_DEFAULT);
    struct stat st;
    if (stat(model_dir, &st) != 0)
        return dsv4_fail(err, "cannot open model directory '%s': %s", model_dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return dsv4_fail(err, "cannot open model directory '%s': %s", model_dir, strerror(ENOTDIR));

    dsv4_engine *e = calloc(1, sizeof *e);
    if (!e) return dsv4_fail(err, "out of memory");
    e->opt = *opt;
    if (e->opt.prefill_chunk == 0)
        e->opt.prefill_chunk = DSV4_PREFILL_CHUNK_DEFAULT;
    size_t n = strlen(model_dir);
    char *cfg_path = malloc(n + sizeof "/config.json");
    if (!cfg_path) {
        free(e);
        return dsv4_fail(err, "out of memory");
    }
    memcpy(cfg_path, model_dir, n);
    memcpy(cfg_path + n, "/config.json", sizeof "/config.json");
    int rc = config_load(&e->cfg, cfg_path, err);
    free(cfg_path);
    if (rc != 0) {
        free(e);
        return -1;
    }
    if (st_open(&e->files, model_dir, err) != 0) goto fail;
    if (weights_bind(&e->w, &e->cfg, e->files, err) != 0) goto fail;
    e->k = kernels_select(opt->isa);
    if (!e->k) {
        dsv4_fail(err, "unknown or unsupported ISA '%s'", opt->isa ? opt->isa : "(best available)");
        goto fail;
    }
    e->opt.isa = e->k->isa; /* the caller's string need not outlive this call */
    e->n_threads = opt->n_threads > 0 ? opt->n_threads : omp_get_num_procs();
    omp_set_num_threads(e->n_threads);
    if (model_tables_new(&e->tables, &e->cfg, err) != 0) goto fail;
    *out = e;
    return 0;
fail:
    dsv4_engine_close(e);
    return -1;
}

void dsv4_engine_close(dsv4_engine *e)
{
    if (!e) return;
    if (e->tables) model_tables_free(e->tables);
    weights_free(&e->w, &e->cfg);
    st_close(e->files);
    free(e);
}

int dsv4_engine_vocab_size(const dsv4_engine *e) { return e->cfg.vocab_size; }
int dsv4_engine_eos_id(const dsv4_engine *e) { return e->cfg.eos_id; }
int dsv4_engine_bos_id(const dsv4_engine *e) { return e->cfg.bos_id; }
const char *dsv4_engine_isa(const dsv4_engine *e) { return e->k ? e->k->isa : "none"; }

static const char *wformat_name(dsv4_wformat f)
{
    switch (f) {
    case DSV4_WF_F32: return "F32";
    case DSV4_WF_BF16: return "BF16";
    case DSV4_WF_FP8: return "FP8";
    case DSV4_WF_FP4: return "FP4";
    default: return "none";
    }
}

void dsv4_engine_describe(const dsv4_engine *e, char *buf, size_t len)
{
    if (!buf || len == 0) return;
    const dsv4_config *c = &e->cfg;
    static const char kind_letter[] = {[DSV4_LAYER_WINDOW] = 'W', [DSV4_LAYER_CSA] = 'C', [DSV4_LAYER_HCA] = 'H'};
    size_t pos = 0;
#define APPEND(...) do { if (pos < len) pos += (size_t)snprintf(buf + pos, len - pos, __VA_ARGS__); } while (0)
    APPEND("%d layers (", c->n_layers);
    for (int i = 0; i < c->n_layers; i++) APPEND("%s%c", i ? " " : "", kind_letter[c->kind[i]]);
    const dsv4_layer_weights *l0 = c->n_layers > 0 && e->w.layers ? &e->w.layers[0] : NULL;
    APPEND("), dim %d, %d heads, %d experts top-%d, linear %s, experts %s, isa %s", c->dim, c->n_heads,
           c->n_routed_experts, c->n_activated_experts, l0 ? wformat_name(l0->wq_a.fmt) : "none",
           l0 && l0->experts ? wformat_name(l0->experts[0].w1.fmt) : "none", dsv4_engine_isa(e));
#undef APPEND
}
