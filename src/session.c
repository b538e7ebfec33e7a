/* Sessions: one sequence's position and forward state. feed() checks its
 * input whole before touching the state, then runs it chunk by chunk. */
#include "dsv4.h"

#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "error.h"
#include "forward.h"
#include "profile.h"


int dsv4_session_new(dsv4_session **out, dsv4_engine *engine, int max_tokens, dsv4_error *err)
{
    if (!out)
        return dsv4_fail(err, "dsv4_session_new: out is NULL");
    *out = NULL;
    if (!engine)
        return dsv4_fail(err, "dsv4_session_new: engine is NULL");
    if (max_tokens <= 0)
        return dsv4_fail(err, "dsv4_session_new: max_tokens %d must be positive", max_tokens);
    dsv4_session *s = calloc(1, sizeof *s);
    if (!s)
        return dsv4_fail(err, "out of memory for a session");
    s->engine = engine;
    s->max_tokens = max_tokens;
    if (forward_state_new(&s->state, engine, max_tokens, err)) {
        free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void dsv4_session_free(dsv4_session *session)
{
    if (!session)
        return;
    forward_state_free(session->state);
    free(session);
}

int dsv4_session_position(const dsv4_session *session)
{
    return session->position;
}

void dsv4_session_reset(dsv4_session *session)
{
    forward_state_reset(session->state);
    session->position = 0;
}

int dsv4_session_feed(dsv4_session *session, const int32_t *tokens, int n,
                      float *logits, int all_logits, dsv4_error *err)
{
    if (!session)
        return dsv4_fail(err, "dsv4_session_feed: session is NULL");
    if (n <= 0)
        return dsv4_fail(err, "dsv4_session_feed: %d tokens, need at least 1", n);
    if (!tokens)
        return dsv4_fail(err, "dsv4_session_feed: tokens is NULL");
    const dsv4_engine *e = session->engine;
    int vocab = e->cfg.vocab_size;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            return dsv4_fail(err, "token %ld at index %d is outside the vocabulary (0..%d)",
                             (long)tokens[i], i, vocab - 1);
    if (n > session->max_tokens - session->position)
        return dsv4_fail(err, "context full: position %d + %d tokens exceeds max_tokens %d",
                         session->position, n, session->max_tokens);

    int cap = forward_state_capacity(session->state), chunk = e->opt.prefill_chunk;
    if (n > cap && cap < chunk)
        cap = forward_state_reserve(session->state, e, n < chunk ? n : chunk);
    if (cap <= 0)
        return dsv4_fail(err, "out of memory for the activations of a %d-token chunk", FORWARD_CHUNK);
    int pass = cap < chunk ? cap : chunk;
    for (int done = 0; done < n; done += pass) {
        int len = n - done < pass ? n - done : pass;
        int last_chunk = done + len == n;
        float *out = NULL;
        if (logits && all_logits)
            out = logits + (size_t)done * vocab;
        else if (logits && last_chunk)
            out = logits;
        model_forward(e, session->state, tokens + done, len, session->position, out, all_logits);
        session->position += len;
    }
    return 0;
}

void dsv4_session_trim(dsv4_session *session)
{
    if (session)
        forward_state_trim(session->state, session->engine);
}

size_t dsv4_session_kv_bytes(const dsv4_session *session)
{
    return forward_state_kv_bytes(session->state);
}

void dsv4_session_set_profiling(dsv4_session *session, int on)
{
    forward_state_profile(session->state)->enabled = on != 0;
}

void dsv4_session_stats(const dsv4_session *session, dsv4_stats *out)
{
    *out = forward_state_profile(session->state)->s;
}

void dsv4_session_stats_reset(dsv4_session *session)
{
    memset(&forward_state_profile(session->state)->s, 0, sizeof(dsv4_stats));
}
