/* The forward pass: per-model tables and the layer loop.
 * Receives bound weights; knows nothing of files. */
#ifndef DSV4_MODEL_H
#define DSV4_MODEL_H

#include "engine.h"

/* What every session of one model shares. */
struct model_tables {
    float *inv_freq_window;      /* [rope_dim/2]: rope_theta, no YaRN (window-only layers) */
    float *inv_freq_compressed;  /* [rope_dim/2]: compress_rope_theta with YaRN (CSA/HCA layers) */
};

int model_tables_new(model_tables **out, const dsv4_config *cfg, dsv4_error *err);
void model_tables_free(model_tables *t);

#endif
