/* Many sessions stepped together: one token each, one forward pass over all
 * of them (model_forward_batch), so every weight matrix and every chosen
 * expert is read once per step instead of once per session. */
#include "dsv4.h"

#include <string.h>

#include "engine.h"
#include "error.h"
#include "forward.h"
#include "profile.h"

/* The step counted everything in the first session's counters: give each
 * session its even share of what the step added there. */
static void share_counts(dsv4_session *const *s, int n, const dsv4_stats *before)
{
    dsv4_stats *first = &forward_state_profile(s[0]->state)->s;
    dsv4_stats d = *first;
    d.tokens -= before->tokens;
    d.seconds -= before->seconds;
    d.weight_bytes -= before->weight_bytes;
    d.flops -= before->flops;
    for (int p = 0; p < DSV4_PROF_COUNT; p++)
        d.part_seconds[p] -= before->part_seconds[p];
    for (int i = 0; i < n; i++) {
        dsv4_stats *st = &forward_state_profile(s[i]->state)->s;
        if (i == 0)
            *st = *before;
        st->tokens += d.tokens / n;
        st->seconds += d.seconds / n;
        st->weight_bytes += d.weight_bytes / n;
        st->flops += d.flops / n;
        for (int p = 0; p < DSV4_PROF_COUNT; p++)
            st->part_seconds[p] += d.part_seconds[p] / n;
    }
}

int dsv4_batch_step(dsv4_session *const *sessions, const int32_t *tokens, int n,
                    float *logits, dsv4_error *err)
{
    if (!sessions || !tokens)
        return dsv4_fail(err, "dsv4_batch_step: sessions or tokens is NULL");
    if (n <= 0 || n > DSV4_BATCH_MAX || n > FORWARD_CHUNK)
        return dsv4_fail(err, "dsv4_batch_step: %d sessions, need 1 to %d", n, DSV4_BATCH_MAX);
    const dsv4_engine *e = sessions[0] ? sessions[0]->engine : NULL;
    for (int i = 0; i < n; i++) {
        const dsv4_session *s = sessions[i];
        if (!s)
            return dsv4_fail(err, "dsv4_batch_step: session %d is NULL", i);
        if (s->engine != e)
            return dsv4_fail(err, "dsv4_batch_step: session %d belongs to another engine", i);
        for (int j = 0; j < i; j++)
            if (sessions[j] == s)
                return dsv4_fail(err, "dsv4_batch_step: session %d is also session %d", i, j);
        if (tokens[i] < 0 || tokens[i] >= e->cfg.vocab_size)
            return dsv4_fail(err, "token %ld for session %d is outside the vocabulary (0..%d)",
                             (long)tokens[i], i, e->cfg.vocab_size - 1);
        if (s->position >= s->max_tokens)
            return dsv4_fail(err, "context full: session %d is at max_tokens %d", i, s->max_tokens);
    }
    if (forward_state_capacity(sessions[0]->state) < n)
        return dsv4_fail(err, "dsv4_batch_step: session 0 has no room for %d rows (out of memory earlier)", n);
    forward_state *states[FORWARD_CHUNK];
    for (int i = 0; i < n; i++)
        states[i] = sessions[i]->state;
    dsv4_stats before = forward_state_profile(states[0])->s;
    model_forward_batch(e, states, tokens, n, logits);
    share_counts(sessions, n, &before);
    for (int i = 0; i < n; i++)
        sessions[i]->position++;
    return 0;
}
