/* dsv4 chat: an interactive multi-turn chat on stdin/stdout. One input line is
 * one user turn. The session keeps its state between turns: each turn feeds
 * only its own tokens (the end of the previous answer, the user turn, the
 * assistant opening), so the context holds what V4's encoding gives with
 * drop_thinking=False: earlier reasoning stays in, as it was generated. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common_opts.h"

enum { OPT_THINK = OPT_COMMAND, OPT_SYSTEM, OPT_LOSSY_CHAT };

static const char *help =
    "usage: dsv4 chat -m DIR [--think] [--system TEXT] [options]\n"
    "\n"
    "Interactive chat: each line on stdin is a user turn; the answer is streamed to stdout,\n"
    "followed by an empty line. The session keeps its state between turns (only the new\n"
    "turn's tokens are fed). DIR needs the model and tokenizer.json.\n"
    "\n"
    "options:\n"
    "      --think            thinking mode: the answer opens with its reasoning, then </think>\n"
    "      --system TEXT      system prompt\n"
    "  -n, --n-predict N      most tokens per answer (default 1024)\n"
    "      --temp T           temperature; 0 = greedy (default 0)\n"
    "      --top-p P          nucleus sampling threshold in (0, 1] (default 1)\n"
    "      --seed S           random seed for sampling (default 0)\n"
    "      --ctx N            context capacity in tokens (default 8192)\n"
    "      --lossy            replace invalid UTF-8 in input with U+FFFD instead of refusing the line\n"
    COMMON_HELP;

typedef struct {
    dsv4_engine *engine;
    dsv4_session *session;
    dsv4_sampler *sampler;
    dsv4_tokenizer *tok;
    dsv4_detokenizer *detok;
    float *logits;
    int ctx;
} chat_state;

/* Feeds the turn's ids, then generates until EOS or n_predict; streams text. */
static int answer(chat_state *c, const int32_t *ids, int n, long n_predict, dsv4_error *err)
{
    if (dsv4_session_position(c->session) + n + n_predict > c->ctx) {
        snprintf(err->message, sizeof err->message,
                 "the context is full (%d of %d tokens used, this turn needs %d + up to %ld); "
                 "start again with a larger --ctx", dsv4_session_position(c->session), c->ctx, n, n_predict);
        return -1;
    }
    if (dsv4_session_feed(c->session, ids, n, c->logits, 0, err))
        return -1;
    int eos = dsv4_engine_eos_id(c->engine);
    for (long generated = 0; generated < n_predict; generated++) {
        int32_t next = dsv4_sampler_pick(c->sampler, c->logits);
        if (next == eos)
            break;
        const char *text;
        size_t len;
        if (dsv4_detokenizer_push(c->detok, next, &text, &len, err))
            return -1;
        fwrite(text, 1, len, stdout);
        fflush(stdout);
        if (dsv4_session_feed(c->session, &next, 1, c->logits, 0, err))
            return -1;
    }
    const char *rest;
    size_t len;
    dsv4_detokenizer_flush(c->detok, &rest, &len);
    fwrite(rest, 1, len, stdout);
    fputs("\n\n", stdout);
    fflush(stdout);
    return 0;
}

int cmd_chat(int argc, char **argv)
{
    static const struct option longs[] = {
        COMMON_LONG_OPTS,
        { "think", no_argument, 0, OPT_THINK },
        { "system", required_argument, 0, OPT_SYSTEM },
        SAMPLING_LONG_OPTS,
        { "lossy", no_argument, 0, OPT_LOSSY_CHAT },
        { 0, 0, 0, 0 },
    };
    const char *system_prompt = NULL;
    int think = 0, lossy = 0, c;
    cli_sampling sampling = { .n_predict = 1024, .top_p = 1.0, .ctx = 8192 };
    cli_parser p;
    cli_parser_init(&p, "chat", help, ":m:t:n:h", longs, argc, argv);
    p.sampling = &sampling;
    while ((c = cli_next_option(&p)) != CLI_END) {
        if (c == CLI_EXIT)
            return p.status;
        switch (c) {
        case OPT_THINK: think = 1; break;
        case OPT_SYSTEM: system_prompt = optarg; break;
        case OPT_LOSSY_CHAT: lossy = 1; break;
        }
    }
    const char *model_dir = p.model_dir;
    long n_predict = sampling.n_predict, ctx = sampling.ctx;
    if (!model_dir)
        return cli_usage_error("chat", "-m DIR is required");

    chat_state s = { .ctx = (int)ctx };
    dsv4_error err;
    int status = 1;
    char *line = NULL;
    size_t line_cap = 0;
    if (dsv4_tokenizer_open(&s.tok, model_dir, &err) || dsv4_detokenizer_new(&s.detok, s.tok, &err) ||
        dsv4_engine_open(&s.engine, model_dir, &p.opt, &err) || dsv4_session_new(&s.session, s.engine, (int)ctx, &err) ||
        dsv4_sampler_new(&s.sampler, dsv4_engine_vocab_size(s.engine), (float)sampling.temp, (float)sampling.top_p, (uint64_t)sampling.seed,
                         &err)) {
        cli_error("chat", "%s", err.message);
        goto done;
    }
    s.logits = malloc(sizeof *s.logits * (size_t)dsv4_engine_vocab_size(s.engine));
    if (!s.logits) {
        cli_error("chat", "out of memory");
        goto done;
    }
    int interactive = isatty(STDIN_FILENO), turn = 0;
    long lineno = 0;
    ssize_t got;
    for (;;) {
        if (interactive)
            fputs("> ", stderr);
        if ((got = getline(&line, &line_cap, stdin)) < 0)
            break;
        lineno++;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = 0;
        if (memchr(line, 0, (size_t)got)) {
            cli_error("chat", "stdin line %ld: a NUL byte in the text; line skipped", lineno);
            continue;
        }
        /* Check the user's text on its own, so that bad UTF-8 names its place in the line. */
        int32_t *probe;
        size_t n_probe;
        if (!lossy && dsv4_tokenize(s.tok, line, (size_t)got, 0, &probe, &n_probe, &err)) {
            cli_error("chat", "stdin line %ld: %s; line skipped (--lossy replaces it with U+FFFD)", lineno, err.message);
            continue;
        }
        if (!lossy)
            free(probe);
        char *text = line;
        if (lossy) {
            /* round-trip through the tokenizer's replacement: encode lossily, decode */
            char *fixed;
            size_t fixed_len;
            if (dsv4_tokenize(s.tok, line, (size_t)got, DSV4_TOKENIZE_LOSSY, &probe, &n_probe, &err) ||
                dsv4_detokenize(s.tok, probe, n_probe, &fixed, &fixed_len, &err)) {
                cli_error("chat", "stdin line %ld: %s", lineno, err.message);
                goto done;
            }
            free(probe);
            text = fixed;
        }
        dsv4_chat_message msgs[2];
        int n_msgs = 0;
        if (turn == 0 && system_prompt)
            msgs[n_msgs++] = (dsv4_chat_message){ "system", system_prompt, NULL };
        msgs[n_msgs++] = (dsv4_chat_message){ "user", text, NULL };
        dsv4_chat_options copt = { .thinking = think, .keep_reasoning = 1, .no_bos = turn > 0 };
        int32_t *ids;
        size_t n_ids;
        int r = dsv4_chat_encode(s.tok, msgs, n_msgs, &copt, &ids, &n_ids, &err);
        if (text != line)
            free(text);
        if (r) {
            cli_error("chat", "stdin line %ld: %s", lineno, err.message);
            goto done;
        }
        if (turn > 0) {
            /* the previous answer ends with EOS (sampled or not) before the next user turn */
            int32_t *with_eos = malloc(sizeof *with_eos * (n_ids + 1));
            if (!with_eos) {
                free(ids);
                cli_error("chat", "out of memory");
                goto done;
            }
            with_eos[0] = dsv4_engine_eos_id(s.engine);
            memcpy(with_eos + 1, ids, sizeof *ids * n_ids);
            free(ids);
            ids = with_eos;
            n_ids++;
        }
        r = answer(&s, ids, (int)n_ids, n_predict, &err);
        free(ids);
        if (r) {
            cli_error("chat", "%s", err.message);
            goto done;
        }
        turn++;
    }
    status = 0;
done:
    free(line);
    free(s.logits);
    dsv4_sampler_free(s.sampler);
    dsv4_session_free(s.session);
    dsv4_engine_close(s.engine);
    dsv4_detokenizer_free(s.detok);
    dsv4_tokenizer_close(s.tok);
    return status;
}
