/* dsv4 perplexity: teacher-forced perplexity over chunks of a text or a token
 * file, like llama-perplexity. The token stream (no BOS) is cut into pieces of
 * ctx-1 tokens; each chunk is BOS + piece in a fresh session, and every piece
 * token is scored given the tokens before it in its chunk. A last partial
 * piece is dropped, so two runs over the same stream score the same tokens. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common_opts.h"
#include "default_model.h"

static const char *help =
    "usage: dsv4 perplexity [-m DIR] (--file TEXT | --tokens FILE) [options]\n"
    "\n"
    "Teacher-forced perplexity: the tokens (no BOS) are cut into pieces of ctx-1 tokens,\n"
    "each chunk is BOS + piece in a fresh context, and every piece token is scored given\n"
    "the tokens before it in its chunk; a last partial piece is dropped. Prints each\n"
    "chunk's running perplexity, then the final one and the speed.\n"
    "Without -m: $DSV4_MODEL, else the built-in model (models/" CLI_DEFAULT_MODEL_NAME ").\n"
    "\n"
    "options:\n"
    "      --file TEXT        UTF-8 text, tokenized with the model's tokenizer.json\n"
    "      --tokens FILE      token ids instead, one per line (no BOS)\n"
    "      --ctx N            tokens per chunk, BOS included (default 2048)\n"
    "      --chunks N         score at most N chunks (default: all)\n"
    "      --batch N          tokens per forward call (default 256; the result does not depend on it)\n"
    COMMON_HELP;

/* -log softmax(logits)[target], in double. */
static double token_nll(const float *logits, int vocab, int target)
{
    double mx = logits[0];
    for (int v = 1; v < vocab; v++)
        if (logits[v] > mx)
            mx = logits[v];
    double sum = 0.0;
    for (int v = 0; v < vocab; v++)
        sum += exp((double)logits[v] - mx);
    return log(sum) + mx - (double)logits[target];
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cmd_perplexity(int argc, char **argv)
{
    enum { OPT_FILE = OPT_COMMAND, OPT_CHUNKS, OPT_BATCH };
    static const struct option longs[] = {
        COMMON_LONG_OPTS,
        { "file", required_argument, 0, OPT_FILE },
        { "tokens", required_argument, 0, OPT_TOKENS },
        { "ctx", required_argument, 0, OPT_CTX },
        { "chunks", required_argument, 0, OPT_CHUNKS },
        { "batch", required_argument, 0, OPT_BATCH },
        { 0, 0, 0, 0 },
    };
    const char *text_path = NULL, *tokens_path = NULL;
    long ctx = 2048, max_chunks = 0, batch = 256;
    cli_parser p;
    cli_parser_init(&p, "perplexity", help, ":m:t:h", longs, argc, argv);
    int c;
    while ((c = cli_next_option(&p)) != CLI_END) {
        if (c == CLI_EXIT)
            return p.status;
        if (c == OPT_FILE)
            text_path = optarg;
        else if (c == OPT_TOKENS)
            tokens_path = optarg;
        else if (c == OPT_CTX && cli_parse_int(optarg, 2, 1 << 24, &ctx))
            return cli_usage_error("perplexity", "--ctx needs an integer >= 2, got '%s'", optarg);
        else if (c == OPT_CHUNKS && cli_parse_int(optarg, 1, 1L << 30, &max_chunks))
            return cli_usage_error("perplexity", "--chunks needs a positive integer, got '%s'", optarg);
        else if (c == OPT_BATCH && cli_parse_int(optarg, 1, 1 << 20, &batch))
            return cli_usage_error("perplexity", "--batch needs a positive integer, got '%s'", optarg);
    }
    if (!text_path == !tokens_path)
        return cli_usage_error("perplexity", "give exactly one of --file TEXT and --tokens FILE");

    char msg[1200], dir_buf[4096];
    const char *model_dir = p.model_dir;
    if (!model_dir) {
        if (cli_default_model(dir_buf, sizeof dir_buf, msg, sizeof msg))
            return cli_error("perplexity", "%s", msg);
        model_dir = dir_buf;
    }

    dsv4_engine *e = NULL;
    dsv4_session *s = NULL;
    dsv4_tokenizer *tok = NULL;
    dsv4_error err;
    int32_t *ids = NULL, *chunk = NULL;
    float *logits = NULL;
    char *text = NULL;
    int status = 1;
    size_t n_ids = 0;

    if (tokens_path) {
        int n;
        if (cli_read_tokens(tokens_path, &ids, &n, msg, sizeof msg))
            return cli_error("perplexity", "%s", msg);
        n_ids = (size_t)n;
    } else {
        size_t len;
        if (cli_read_file(text_path, &text, &len, msg, sizeof msg))
            return cli_error("perplexity", "%s", msg);
        if (dsv4_tokenizer_open(&tok, model_dir, &err) || dsv4_tokenize(tok, text, len, 0, &ids, &n_ids, &err)) {
            cli_error("perplexity", "%s: %s", text_path, err.message);
            goto done;
        }
    }
    if (dsv4_engine_open(&e, model_dir, &p.opt, &err)) {
        cli_error("perplexity", "%s", err.message);
        goto done;
    }
    int vocab = dsv4_engine_vocab_size(e), bos = dsv4_engine_bos_id(e);
    if (bos < 0) {
        cli_error("perplexity", "%s: the model has no BOS token (config.json bos_token_id)", model_dir);
        goto done;
    }
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= vocab) {
            cli_error("perplexity", "%s: token %zu is %d, outside the vocabulary [0, %d)",
                      tokens_path ? tokens_path : text_path, i, (int)ids[i], vocab);
            goto done;
        }
    long piece = ctx - 1;
    long n_chunks = (long)(n_ids / (size_t)piece);
    if (max_chunks && n_chunks > max_chunks)
        n_chunks = max_chunks;
    if (n_chunks == 0) {
        cli_error("perplexity", "%zu tokens: fewer than one chunk of %ld (--ctx %ld minus BOS)",
                  n_ids, piece, ctx);
        goto done;
    }
    if (batch > ctx)
        batch = ctx;
    chunk = malloc(sizeof *chunk * (size_t)ctx);
    logits = malloc(sizeof *logits * (size_t)batch * (size_t)vocab);
    if (!chunk || !logits) {
        cli_error("perplexity", "out of memory for %ld x %d logits", batch, vocab);
        goto done;
    }
    if (dsv4_session_new(&s, e, (int)ctx, &err)) {
        cli_error("perplexity", "%s", err.message);
        goto done;
    }
    printf("perplexity: %s, %zu tokens, %ld chunks of %ld (BOS + %ld), numerics %s\n", model_dir, n_ids,
           n_chunks, ctx, piece, p.opt.numerics == DSV4_NUMERICS_PLAIN ? "plain" : "release");
    fflush(stdout);

    double nll_total = 0.0, t0 = now_seconds();
    long scored = 0;
    for (long k = 0; k < n_chunks; k++) {
        chunk[0] = bos;
        memcpy(chunk + 1, ids + (size_t)k * piece, sizeof *chunk * (size_t)piece);
        dsv4_session_reset(s);
        double nll_chunk = 0.0;
        for (long at = 0; at < ctx;) {
            int n = (int)(ctx - at < batch ? ctx - at : batch);
            if (dsv4_session_feed(s, chunk + at, n, logits, 1, &err)) {
                cli_error("perplexity", "chunk %ld: %s", k + 1, err.message);
                goto done;
            }
            /* the logits at position i predict chunk[i + 1]; the last position predicts nothing */
            for (int i = 0; i < n && at + i + 1 < ctx; i++)
                nll_chunk += token_nll(logits + (size_t)i * vocab, vocab, chunk[at + i + 1]);
            at += n;
        }
        nll_total += nll_chunk;
        scored += piece;
        printf("[%ld/%ld] chunk ppl %.4f, running ppl %.4f\n", k + 1, n_chunks, exp(nll_chunk / piece),
               exp(nll_total / scored));
        fflush(stdout);
    }
    double secs = now_seconds() - t0;
    printf("final: PPL %.6f over %ld tokens (mean NLL %.9f), %.1f tokens/s\n", exp(nll_total / scored), scored,
           nll_total / scored, (double)n_chunks * ctx / secs);
    status = 0;
done:
    free(logits);
    free(chunk);
    free(ids);
    free(text);
    dsv4_session_free(s);
    dsv4_engine_close(e);
    dsv4_tokenizer_close(tok);
    return status;
}
