/* The forward pass: per-model tables and the layer loop.
 * Receives bound weights; knows nothing of files. */
#ifndef DSV4_MODEL_H
#define DSV4_MODEL_H

#include "engine.h"

/* Precomputes what every session of this model shares (RoPE tables, ...). */
int model_tables_new(model_tables **out, const dsv4_config *cfg, dsv4_error *err);
void model_tables_free(model_tables *t);

#endif
