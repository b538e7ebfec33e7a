/* Binding the checkpoint's tensors to dsv4_weights (weights.h). */
#ifndef DSV4_WEIGHTS_BIND_H
#define DSV4_WEIGHTS_BIND_H

#include "safetensors.h"
#include "weights.h"

/* Checks presence, dtype and shape of every tensor cfg implies (per layer
 * kind, hash layers, shared expert) and fills w. Matrices keep pointing into
 * st, which must outlive w. mtp.* and unknown tensors are ignored. On failure
 * w is left empty (nothing to free). */
int weights_bind(dsv4_weights *w, const dsv4_config *cfg, const st_set *st, dsv4_error *err);
/* Frees what weights_bind allocated; w may be partly bound or zeroed. */
void weights_free(dsv4_weights *w, const dsv4_config *cfg);

#endif
