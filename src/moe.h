/* The MoE feed-forward of one layer for a chunk of tokens: routing
 * (sqrt-softplus scores, selection bias or hash table), routed experts run
 * expert-major, the shared expert. */
#ifndef DSV4_MOE_H
#define DSV4_MOE_H

#include "engine.h"

typedef struct moe_scratch moe_scratch;

int moe_scratch_new(moe_scratch **out, const dsv4_engine *e, int max_chunk, dsv4_error *err);
void moe_scratch_free(moe_scratch *s);

/* x: [n][dim] the ffn input (after ffn_norm); tokens: the n token ids (hash layers route by id);
 * out: [n][dim]. */
void moe_forward(const dsv4_engine *e, int layer, moe_scratch *s, const float *x,
                 const int32_t *tokens, int n, float *out);

/* Where moe_forward counts weight bytes, FLOPs and (if enabled) its time; NULL: nowhere. */
struct prof_counters; /* profile.h */
void moe_set_profile(moe_scratch *s, struct prof_counters *prof);

#endif
