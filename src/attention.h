/* Attention of one layer for a chunk of consecutive tokens of one sequence:
 * sliding window, plus compressed entries (CSA: top-k chosen by the lightning
 * indexer; HCA: all of them). Tokens of a chunk are processed in order against
 * the layer's persistent state, so a prefill of T tokens and T decode steps
 * compute the same thing. */
#ifndef DSV4_ATTENTION_H
#define DSV4_ATTENTION_H

#include "engine.h"

typedef struct attn_state attn_state; /* one layer's per-sequence state: window ring, compressed entries, compressor state, scratch */

/* max_tokens: the longest context the sequence may reach; max_chunk: the most tokens one call passes. */
int attn_state_new(attn_state **out, const dsv4_engine *e, int layer, int max_tokens, int max_chunk, dsv4_error *err);
void attn_state_free(attn_state *st);
void attn_state_reset(attn_state *st);
/* Bytes of KV cache the tokens seen so far occupy: the window's rows (up to
 * `window` of them), the compressed entries and the indexer keys, in the
 * form the state keeps them (FP8 rows and FP4 keys in release numerics). */
size_t attn_state_kv_bytes(const attn_state *st);

/* x: [n][dim] the attention input (after attn_norm) of tokens at positions pos0 .. pos0+n-1,
 * which must continue the state (pos0 == tokens already seen). out: [n][dim]. */
void attention_forward(const dsv4_engine *e, int layer, attn_state *st,
                       const float *x, int n, int pos0, float *out);

/* The same in three phases, so that the tokens of many sequences can share
 * the projections (every matrix read once for all of them) while each token's
 * attention core runs against its own sequence's state. sc is the state whose
 * chunk scratch holds the rows (any state of this layer with max_chunk >= n).
 *   1. attention_project: x [n][dim] -> the projections of the n rows, in sc;
 *   2. attention_core: row i of sc, as the next token (position st's tokens
 *      seen so far) of the sequence whose state is st; rows of one sequence
 *      must be passed in order. -1 (nothing done) if st is full or i is out of range;
 *   3. attention_output: the output projection of the n rows -> out [n][dim].
 * prof (may be NULL) counts weight bytes, FLOPs and, if enabled, the indexer's and
 * compressors' time. */
struct prof_counters; /* profile.h */
void attention_project(const dsv4_engine *e, int layer, attn_state *sc, const float *x, int n,
                       struct prof_counters *prof);
int attention_core(const dsv4_engine *e, int layer, attn_state *st, attn_state *sc, int i,
                   struct prof_counters *prof);
/* Step 2 for rows 0..n-1 of st's own scratch (st == sc), the next n tokens of
 * st's sequence: the same results as attention_core for i = 0..n-1, with the
 * tokens' cores side by side on the team where there are enough of them. */
int attention_core_chunk(const dsv4_engine *e, int layer, attn_state *st, int n, struct prof_counters *prof);
void attention_output(const dsv4_engine *e, int layer, attn_state *sc, int n, float *out,
                      struct prof_counters *prof);

#endif
