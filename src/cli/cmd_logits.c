/* dsv4 logits: teacher-forced logits of every position of a token file, as a float32 .npy [T, vocab]. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common_opts.h"

static const char *help =
    "usage: dsv4 logits -m DIR --tokens FILE --out FILE.npy [options]\n"
    "\n"
    "Feeds the token ids of FILE (one integer per line) through the model and writes\n"
    "the logits of every position as a float32 NumPy array of shape [T, vocab].\n"
    "The output appears only when complete (written to a temporary file, then renamed).\n"
    "\n"
    "options:\n"
    "      --tokens FILE      token ids, one per line (required)\n"
    "      --out FILE.npy     output file (required)\n"
    "      --chunk N          tokens per forward call (default 64; the result does not depend on it)\n"
    COMMON_HELP;

int cmd_logits(int argc, char **argv)
{
    enum { OPT_CHUNK = OPT_COMMAND };
    static const struct option longs[] = {
        COMMON_LONG_OPTS,
        { "tokens", required_argument, 0, OPT_TOKENS },
        { "out", required_argument, 0, OPT_OUT },
        { "chunk", required_argument, 0, OPT_CHUNK },
        { 0, 0, 0, 0 },
    };
    const char *tokens_path = NULL, *out_path = NULL;
    long chunk = 64;
    cli_parser p;
    cli_parser_init(&p, "logits", help, ":m:t:h", longs, argc, argv);
    int c;
    while ((c = cli_next_option(&p)) != CLI_END) {
        if (c == CLI_EXIT)
            return p.status;
        if (c == OPT_TOKENS)
            tokens_path = optarg;
        else if (c == OPT_OUT)
            out_path = optarg;
        else if (c == OPT_CHUNK && cli_parse_int(optarg, 1, 1 << 20, &chunk))
            return cli_usage_error("logits", "--chunk needs a positive integer, got '%s'", optarg);
    }
    const char *model_dir = p.model_dir;
    if (!model_dir)
        return cli_usage_error("logits", "-m DIR is required");
    if (!tokens_path)
        return cli_usage_error("logits", "--tokens FILE is required");
    if (!out_path)
        return cli_usage_error("logits", "--out FILE.npy is required");

    char msg[600];
    int32_t *tokens;
    int n;
    if (cli_read_tokens(tokens_path, &tokens, &n, msg, sizeof msg))
        return cli_error("logits", "%s", msg);

    dsv4_engine *e = NULL;
    dsv4_session *s = NULL;
    float *logits = NULL;
    dsv4_error err;
    int status = 1;
    if (dsv4_engine_open(&e, model_dir, &p.opt, &err) || dsv4_session_new(&s, e, n, &err)) {
        cli_error("logits", "%s", err.message);
        goto done;
    }
    long vocab = dsv4_engine_vocab_size(e);
    logits = malloc(sizeof *logits * (size_t)n * (size_t)vocab);
    if (!logits) {
        cli_error("logits", "out of memory for %d x %ld logits", n, vocab);
        goto done;
    }
    int show_progress = isatty(STDERR_FILENO) && n > chunk;
    for (int done_n = 0; done_n < n;) {
        int step = n - done_n < chunk ? n - done_n : (int)chunk;
        if (dsv4_session_feed(s, tokens + done_n, step, logits + (size_t)done_n * vocab, 1, &err)) {
            cli_error("logits", "%s: %s", tokens_path, err.message);
            goto done;
        }
        done_n += step;
        if (show_progress)
            fprintf(stderr, "\rlogits: %d/%d tokens", done_n, n);
    }
    if (show_progress)
        fputc('\n', stderr);
    if (cli_write_npy_f32(out_path, logits, n, vocab, msg, sizeof msg)) {
        cli_error("logits", "%s", msg);
        goto done;
    }
    status = 0;
done:
    free(logits);
    free(tokens);
    dsv4_session_free(s);
    dsv4_engine_close(e);
    return status;
}
