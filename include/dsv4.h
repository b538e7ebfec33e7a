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

/* Tokens one forward pass of a prefill takes, at most (0: the default). A
 * longer pass reads each weight once for more tokens (each routed expert for
 * ~pass x top-k / experts of them), so long prompts go faster, for ~0.25 MB
 * of activations per token at V4-Flash width. Results do not depend on it. */
#define DSV4_PREFILL_CHUNK_DEFAULT 512
#define DSV4_PREFILL_CHUNK_MAX 65536

typedef struct {
    int n_threads;          /* 0 = all available */
    dsv4_numerics numerics;
    const char *isa;        /* NULL = best the CPU has; "scalar", "avx512" to force one */
    int prefill_chunk;      /* 0 = DSV4_PREFILL_CHUNK_DEFAULT; else 1..DSV4_PREFILL_CHUNK_MAX */
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
/* Frees the activations a long feed grew (the pass's tokens x ~0.25 MB at
 * V4-Flash width), back to what one decode step or batch step needs: for a
 * session that only decodes now while others prefill. A later long feed
 * grows them again. Results do not change. */
void dsv4_session_trim(dsv4_session *session);

/* ---- Many sessions stepped together ----
 * One token for each of n distinct sessions of the same engine (n <= DSV4_BATCH_MAX).
 * Every weight matrix is read once for the whole batch (each routed expert once
 * for all the tokens routed to it); only the attention core runs per session,
 * against that session's state. Each session advances by one position. logits,
 * if not NULL, receive [n][vocab]. The results are exactly those of feeding
 * each session its token alone. */
#define DSV4_BATCH_MAX 64
int dsv4_batch_step(dsv4_session *const *sessions, const int32_t *tokens, int n,
                    float *logits, dsv4_error *err);

/* ---- Speed accounting, per session ----
 * Counted on every feed / batch step: tokens, wall seconds, bytes of weights
 * read (each matrix once per forward call that reads it: attention, the shared
 * expert, the routed experts actually chosen, mHC mixes, embedding rows, the
 * head) and FLOPs (2 per multiply-add of the linears and the attention core).
 * A batch step's work is split evenly over its sessions. With profiling on,
 * part_seconds also splits the time by part (off: zero cost, zeros). */
typedef enum {
    DSV4_PROF_ATTN_WINDOW, DSV4_PROF_ATTN_CSA, DSV4_PROF_ATTN_HCA, /* attention by layer kind, */
    DSV4_PROF_INDEXER, DSV4_PROF_COMPRESSOR,                         /* without these two */
    DSV4_PROF_MOE_ROUTED,  /* routing and the routed experts */
    DSV4_PROF_MOE_SHARED,
    DSV4_PROF_HC,          /* mHC mixes, pre/post, the sub-layer norms */
    DSV4_PROF_HEAD,        /* hc head, final norm, logits */
    DSV4_PROF_OTHER,       /* the rest: embedding, bookkeeping */
    DSV4_PROF_COUNT
} dsv4_prof_part;

typedef struct {
    double tokens;
    double seconds;
    double weight_bytes;
    double flops;
    double part_seconds[DSV4_PROF_COUNT];
} dsv4_stats;

/* Bytes of KV cache the session's tokens occupy over all layers: the
 * sliding window's rows, the compressed entries and the indexer keys (in
 * release numerics as the release layout stores them: 584-byte entries,
 * 68-byte FP4 keys at V4's widths). Grows with the context; what the tokens
 * hold, not what max_tokens reserved. */
size_t dsv4_session_kv_bytes(const dsv4_session *session);

const char *dsv4_prof_part_name(int part);
void dsv4_session_set_profiling(dsv4_session *session, int on);
void dsv4_session_stats(const dsv4_session *session, dsv4_stats *out);
void dsv4_session_stats_reset(dsv4_session *session);

/* Sampling from logits: temperature 0 = greedy (ties to the lower id);
 * else softmax(logits / temperature) restricted to the smallest set of top
 * tokens whose probability reaches top_p. Deterministic for a given seed. */
typedef struct dsv4_sampler dsv4_sampler;
int dsv4_sampler_new(dsv4_sampler **out, int vocab, float temperature, float top_p, uint64_t seed, dsv4_error *err);
int32_t dsv4_sampler_pick(dsv4_sampler *sampler, const float *logits);
void dsv4_sampler_free(dsv4_sampler *sampler);

/* ---- Text: the model directory's tokenizer (HF tokenizer.json, byte-level BPE) ----
 * Needs only tokenizer.json (+ tokenizer_config.json for BOS/EOS and add_bos_token).
 * A tokenizer keeps a cache and scratch buffers: use one per thread. */
typedef struct dsv4_tokenizer dsv4_tokenizer;

int dsv4_tokenizer_open(dsv4_tokenizer **out, const char *dir, dsv4_error *err);
void dsv4_tokenizer_close(dsv4_tokenizer *tok);
int dsv4_tokenizer_n_ids(const dsv4_tokenizer *tok);   /* highest id + 1 */
int dsv4_tokenizer_bos_id(const dsv4_tokenizer *tok);  /* -1 if none */
int dsv4_tokenizer_eos_id(const dsv4_tokenizer *tok);  /* -1 if none */
int dsv4_tokenizer_adds_bos(const dsv4_tokenizer *tok); /* tokenizer_config.json's add_bos_token */

enum {
    DSV4_TOKENIZE_BOS = 1,   /* prepend BOS */
    DSV4_TOKENIZE_LOSSY = 2  /* invalid UTF-8 becomes U+FFFD instead of an error */
};
/* Encodes len bytes of UTF-8 text; special-token text (e.g. "<｜User｜>") becomes its id.
 * *ids is malloc'ed (free() it), *n_ids its length. Invalid UTF-8 fails naming the byte offset. */
int dsv4_tokenize(dsv4_tokenizer *tok, const char *text, size_t len, unsigned flags,
                  int32_t **ids, size_t *n_ids, dsv4_error *err);
/* Decodes ids to UTF-8 text (special tokens included as their text; bytes that do
 * not form UTF-8 become U+FFFD). *text is malloc'ed and NUL-terminated; *len excludes the NUL. */
int dsv4_detokenize(const dsv4_tokenizer *tok, const int32_t *ids, size_t n_ids,
                    char **text, size_t *len, dsv4_error *err);

/* Streaming decode: tokens in, text out, never half a UTF-8 character. */
typedef struct dsv4_detokenizer dsv4_detokenizer;
int dsv4_detokenizer_new(dsv4_detokenizer **out, const dsv4_tokenizer *tok, dsv4_error *err);
/* Adds one token; *text and *len receive the complete characters it finished (maybe none).
 * The text stays valid until the next call on this detokenizer. */
int dsv4_detokenizer_push(dsv4_detokenizer *d, int32_t id, const char **text, size_t *len, dsv4_error *err);
/* Ends the stream: bytes still waiting for the rest of their character come out as U+FFFD. */
void dsv4_detokenizer_flush(dsv4_detokenizer *d, const char **text, size_t *len);
void dsv4_detokenizer_free(dsv4_detokenizer *d);

/* ---- V4 chat prompt (the official encoding_dsv4.py, without tools) ---- */
typedef struct {
    const char *role;      /* "system", "user", "assistant", "developer", "latest_reminder" */
    const char *content;   /* NULL = empty */
    const char *reasoning; /* assistant only: the thinking text; NULL = none */
} dsv4_chat_message;

typedef struct {
    int thinking;       /* 1: thinking mode (the assistant turn opens with <think>); 0: chat mode (</think>) */
    int keep_reasoning; /* 1: keep earlier turns' reasoning (drop_thinking=False); 0: drop it, as the default */
    int max_effort;     /* 1: reasoning_effort="max" (thinking mode only: a fixed paragraph first) */
    int first;          /* messages[0..first) are already in the session: render only the rest, no BOS */
    int no_bos;         /* 1: no BOS even when first == 0 */
} dsv4_chat_options; /* all zero = chat mode, reasoning dropped, whole conversation, with BOS */

/* The prompt as text (malloc'ed, NUL-terminated). */
int dsv4_chat_render(const dsv4_chat_message *messages, int n_messages, const dsv4_chat_options *opt,
                     char **text, size_t *len, dsv4_error *err);
/* The prompt as token ids (malloc'ed): the rendered text, tokenized with its special tokens. */
int dsv4_chat_encode(dsv4_tokenizer *tok, const dsv4_chat_message *messages, int n_messages,
                     const dsv4_chat_options *opt, int32_t **ids, size_t *n_ids, dsv4_error *err);

#ifdef __cplusplus
}
#endif
#endif
