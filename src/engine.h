/* What an engine is, inside: config, bound weights, the files they live in,
 * the kernels chosen for this CPU, and tables the forward pass precomputes. */
#ifndef DSV4_ENGINE_H
#define DSV4_ENGINE_H

#include "dsv4.h"
#include "config.h"
#include "weights.h"
#include "../simd/kernels.h"

typedef struct st_set st_set;           /* safetensors.h: the opened shards */
typedef struct model_tables model_tables; /* model.h: RoPE tables and other per-model constants */

struct dsv4_engine {
    dsv4_config cfg;
    dsv4_weights w;
    dsv4_options opt;
    int n_threads;
    const dsv4_kernels *k;
    st_set *files;
    model_tables *tables;
};

#endif
