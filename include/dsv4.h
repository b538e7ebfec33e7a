/* dsv4 — CPU inference engine for DeepSeek V4.
 *
 * The whole public surface: an engine (a loaded model plus its thread team)
 * and sessions (the state of one sequence). Everything else stays inside.
 * Every call that can fail returns 0 on success and -1 on failure, with a
 * one-line message in the dsv4_error the caller passed. */
#ifndef DSV4_H
#define DSV4_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct { char message[512]; } dsv4_error;

typedef enum {
    DSV4_NUMERICS_RELEASE = 0, /* the official reference's rounding: FP8 activations, e4m3 KV, FP4 indexer, bf16 */
    DSV4_NUMERICS_PLAIN = 1    /* float32 activations, no rounding simulation (what transformers computes) */
} dsv4_numerics;

typedef struct {
    int n_threads;          /* 0 = all available */
    dsv4_numerics numerics;
    const char *isa;        /* NULL = best the CPU has; "scalar", "avx512" to force one */
} dsv4_options;

typedef struct dsv4_engine dsv4_engine;
typedef struct dsv4_session dsv4_session;

void dsv4_options_default(dsv4_options *opt);

/* Opens a model directory (config.json + safetensors shards), validates and
 * binds every tensor. Weights are memory-mapped, not copied. */
int dsv4_engine_open(dsv4_engine **out, const char *model_dir, const dsv4_options *opt, dsv4_error *err);
void dsv4_engine_close(dsv4_engine *engine);

int dsv4_engine_vocab_size(const dsv4_engine *engine);
int dsv4_engine_eos_id(const dsv4_engine *engine);
int dsv4_engine_bos_id(const dsv4_engine *engine);
const char *dsv4_engine_isa(const dsv4_engine *engine);
/* One line describing the model (layers, kinds, dims, dtypes) for `dsv4 inspect`-style output. */
void dsv4_engine_describe(const dsv4_engine *engine, char *buf, size_t len);

/* A session holds one sequence's state: window rings, compressed KV, compressor state.
 * max_tokens bounds the context it can hold. */
int dsv4_session_new(dsv4_session **out, dsv4_engine *engine, int max_tokens, dsv4_error *err);
void dsv4_session_free(dsv4_session *session);
int dsv4_session_position(const dsv4_session *session);
void dsv4_session_reset(dsv4_session *session);

/* Feeds n tokens at the session's current position (n > 1 is a prefill chunk,
 * n == 1 a decode step). Logits, if not NULL, receive [n][vocab] floats when
 * all_logits is nonzero, else [vocab] for the last token only. */
int dsv4_session_feed(dsv4_session *session, const int32_t *tokens, int n,
                      float *logits, int all_logits, dsv4_error *err);

/* Sampling from logits: temperature 0 = greedy (ties to the lower id);
 * else softmax(logits / temperature) restricted to the smallest set of top
 * tokens whose probability reaches top_p. Deterministic for a given seed. */
typedef struct dsv4_sampler dsv4_sampler;
int dsv4_sampler_new(dsv4_sampler **out, int vocab, float temperature, float top_p, uint64_t seed, dsv4_error *err);
int32_t dsv4_sampler_pick(dsv4_sampler *sampler, const float *logits);
void dsv4_sampler_free(dsv4_sampler *sampler);

#ifdef __cplusplus
}
#endif
#endif
