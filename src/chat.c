/* V4's chat prompt, as the official encoding/encoding_dsv4.py builds it
 * (without tools, tasks and images): the messages are rendered to one string
 * with the special tokens spelled out, which the tokenizer then encodes. */
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define BOS "<｜begin▁of▁sentence｜>"
#define EOS "<｜end▁of▁sentence｜>"
#define USER "<｜User｜>"
#define ASSISTANT "<｜Assistant｜>"
#define LATEST_REMINDER "<｜latest_reminder｜>"
#define THINK_START "<think>"
#define THINK_END "</think>"

/* reasoning_effort="max" in thinking mode: prepended to the first message. */
static const char reasoning_effort_max[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} strbuf;

static void put(strbuf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (b->oom || n == 0)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *g = realloc(b->s, cap);
        if (!g) {
            b->oom = 1;
            return;
        }
        b->s = g;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

static int is_role(const dsv4_chat_message *m, const char *role) { return m->role && !strcmp(m->role, role); }
static int is_user_like(const dsv4_chat_message *m) { return is_role(m, "user") || is_role(m, "developer"); }

static int last_user_index(const dsv4_chat_message *m, int n)
{
    for (int i = n - 1; i >= 0; i--)
        if (is_user_like(&m[i]))
            return i;
    return -1;
}

/* _drop_thinking_messages: before the last user turn, developer messages go
 * and assistant turns lose their reasoning. Fills keep[] with indices; returns the count. */
static int drop_thinking(const dsv4_chat_message *m, int n, int *keep, int *drop_reasoning)
{
    int last = last_user_index(m, n), k = 0;
    for (int i = 0; i < n; i++) {
        int always = is_role(&m[i], "user") || is_role(&m[i], "system") || is_role(&m[i], "latest_reminder");
        if (always || i >= last) {
            drop_reasoning[k] = 0;
            keep[k++] = i;
        } else if (is_role(&m[i], "assistant")) {
            drop_reasoning[k] = 1;
            keep[k++] = i;
        }
    }
    return k;
}

/* render_message over the (possibly reduced) list msgs[0..n). */
static void render_one(strbuf *b, const dsv4_chat_message *const *msgs, const int *no_reasoning, int n, int index,
                       const dsv4_chat_options *opt, int drop)
{
    const dsv4_chat_message *m = msgs[index];
    int last_user = -1;
    for (int i = n - 1; i >= 0 && last_user < 0; i--)
        if (is_user_like(msgs[i]))
            last_user = i;
    if (index == 0 && opt->thinking && opt->max_effort)
        put(b, reasoning_effort_max);
    if (is_role(m, "system"))
        put(b, m->content);
    else if (is_role(m, "developer") || is_role(m, "user")) {
        put(b, USER);
        put(b, m->content);
    } else if (is_role(m, "latest_reminder")) {
        put(b, LATEST_REMINDER);
        put(b, m->content);
    } else if (is_role(m, "assistant")) {
        if (opt->thinking && (!drop || index > last_user)) {
            if (!no_reasoning[index])
                put(b, m->reasoning);
            put(b, THINK_END);
        }
        put(b, m->content);
        put(b, EOS);
    }
    /* what follows a user turn that the assistant answers (or that ends the prompt) */
    if (index + 1 < n && !is_role(msgs[index + 1], "assistant") && !is_role(msgs[index + 1], "latest_reminder"))
        return;
    if (is_user_like(m)) {
        put(b, ASSISTANT);
        int think = opt->thinking && (!drop || index >= last_user);
        put(b, think ? THINK_START : THINK_END);
    }
}

static int check_messages(const dsv4_chat_message *m, int n, const dsv4_chat_options *opt, dsv4_error *err)
{
    if (n < 0 || (n > 0 && !m))
        return dsv4_fail(err, "chat: no messages");
    if (opt->first < 0 || opt->first > n)
        return dsv4_fail(err, "chat: first=%d is outside the %d messages", opt->first, n);
    static const char *roles[] = { "system", "user", "assistant", "developer", "latest_reminder" };
    for (int i = 0; i < n; i++) {
        int ok = 0;
        for (int r = 0; r < 5; r++)
            ok |= is_role(&m[i], roles[r]);
        if (!ok)
            return dsv4_fail(err, "chat: message %d has role '%s' (system, user, assistant, developer or "
                                  "latest_reminder)", i, m[i].role ? m[i].role : "(null)");
        if (is_role(&m[i], "developer") && (!m[i].content || !*m[i].content))
            return dsv4_fail(err, "chat: message %d: a developer message needs content", i);
    }
    return 0;
}

int dsv4_chat_render(const dsv4_chat_message *messages, int n_messages, const dsv4_chat_options *options,
                     char **text, size_t *len, dsv4_error *err)
{
    *text = NULL;
    *len = 0;
    dsv4_chat_options opt = { 0 };
    if (options)
        opt = *options;
    if (check_messages(messages, n_messages, &opt, err))
        return -1;
    int n = n_messages;
    const dsv4_chat_message **msgs = malloc(sizeof *msgs * (size_t)(n + 1));
    int *idx = malloc(sizeof *idx * (size_t)(n + 1)), *no_reasoning = calloc((size_t)n + 1, sizeof *no_reasoning);
    strbuf b = { 0 };
    if (!msgs || !idx || !no_reasoning)
        b.oom = 1;
    int drop = !opt.keep_reasoning, count = n, first = opt.first;
    if (!b.oom && opt.thinking && drop) {
        count = drop_thinking(messages, n, idx, no_reasoning);
        /* the context (messages before `first`) reduced on its own decides how many are already there */
        int *ctx_idx = malloc(sizeof *ctx_idx * (size_t)(first + 1)), *ctx_nr = malloc(sizeof *ctx_nr * (size_t)(first + 1));
        if (!ctx_idx || !ctx_nr)
            b.oom = 1;
        else
            first = drop_thinking(messages, opt.first, ctx_idx, ctx_nr);
        free(ctx_idx);
        free(ctx_nr);
        if (first > count)
            first = count;
    } else
        for (int i = 0; i < n && idx; i++)
            idx[i] = i;
    for (int i = 0; !b.oom && i < count; i++)
        msgs[i] = &messages[idx[i]];
    if (!b.oom && opt.first == 0 && !opt.no_bos)
        put(&b, BOS);
    for (int i = first; !b.oom && i < count; i++)
        render_one(&b, msgs, no_reasoning, count, i, &opt, drop);
    free(msgs);
    free(idx);
    free(no_reasoning);
    if (b.oom) {
        free(b.s);
        return dsv4_fail(err, "out of memory");
    }
    if (!b.s)
        b.s = calloc(1, 1);
    if (!b.s)
        return dsv4_fail(err, "out of memory");
    *text = b.s;
    *len = b.len;
    return 0;
}

int dsv4_chat_encode(dsv4_tokenizer *tok, const dsv4_chat_message *messages, int n_messages,
                     const dsv4_chat_options *opt, int32_t **ids, size_t *n_ids, dsv4_error *err)
{
    *ids = NULL;
    *n_ids = 0;
    char *text;
    size_t len;
    if (dsv4_chat_render(messages, n_messages, opt, &text, &len, err))
        return -1;
    int r = dsv4_tokenize(tok, text, len, 0, ids, n_ids, err);
    free(text);
    return r;
}
