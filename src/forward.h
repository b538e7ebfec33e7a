/* The forward pass over one sequence, as session.c drives it: a state that
 * persists between calls (per-layer attention state) plus the scratch of one
 * chunk, and the layer loop over a chunk of consecutive tokens. */
#ifndef DSV4_FORWARD_H
#define DSV4_FORWARD_H

#include "engine.h"

/* Most rows of one attention pass (a batch step, or a slice of a prefill
 * chunk): every state is created able to take this many tokens per call.
 * Results do not depend on any chunk size (every per-token computation has a
 * fixed order, and the matrix kernels are batch-size invariant). */
#define FORWARD_CHUNK 64

typedef struct forward_state forward_state;

int forward_state_new(forward_state **out, const dsv4_engine *e, int max_tokens, dsv4_error *err);
void forward_state_free(forward_state *st);
/* Forgets the sequence: the next call starts at position 0. */
void forward_state_reset(forward_state *st);

/* Tokens one model_forward call may take now (FORWARD_CHUNK at creation). */
int forward_state_capacity(const forward_state *st);
/* Grows the chunk buffers to take n tokens per call (n <= the engine's
 * prefill_chunk: the MoE then sees every expert with ~n·top-k/E rows, enough
 * for the matrix kernels to reuse each weight row over many tokens);
 * returns the capacity afterwards, unchanged if memory runs out (the caller
 * then cuts smaller chunks: same results). */
int forward_state_reserve(forward_state *st, const dsv4_engine *e, int n);

/* Back to FORWARD_CHUNK tokens per call where a prefill grew more (frees the
 * difference); capacity 0 if even that cannot be had again (a later reserve
 * retries). */
void forward_state_trim(forward_state *st, const dsv4_engine *e);

/* Runs tokens[0..n) (n <= forward_state_capacity, ids already validated) at positions
 * pos0.. pos0+n-1, continuing the state. logits: NULL for none; else
 * [n][vocab] when all_logits, [vocab] for the last token otherwise. */
void model_forward(const dsv4_engine *e, forward_state *st, const int32_t *tokens, int n, int pos0,
                   float *logits, int all_logits);

/* What a public dsv4_session is (session.c, batch.c). */
struct dsv4_session {
    dsv4_engine *engine;
    forward_state *state;
    int max_tokens;
    int position;       /* tokens already fed */
};

/* Tokens the sequence has run. */
long forward_state_position(const forward_state *st);
/* Bytes of KV cache its tokens occupy, all layers (attn_state_kv_bytes). */
size_t forward_state_kv_bytes(const forward_state *st);
/* The sequence's speed accounting (profile.h); a batch step counts in its first state's. */
struct prof_counters *forward_state_profile(forward_state *st);

/* One token for each of n distinct sequences (n <= FORWARD_CHUNK), ids
 * already validated, each at its own next position: every matrix is read once
 * for all n rows; the attention core runs per sequence against its own state.
 * states[0]'s scratch serves the whole step. logits: NULL or [n][vocab]. */
void model_forward_batch(const dsv4_engine *e, forward_state *const *states, const int32_t *tokens, int n,
                         float *logits);

#endif
