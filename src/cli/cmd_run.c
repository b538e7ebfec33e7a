/* dsv4 run: prefill a prompt, then generate, streaming the text (or, for a
 * --tokens prompt, the token ids) as it comes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common_opts.h"
#include "default_model.h"

enum { OPT_LOSSY = OPT_COMMAND };

static const char *help =
    "usage: dsv4 run [-m DIR] (-p TEXT | --tokens FILE) [options]\n"
    "\n"
    "Without -m: $DSV4_MODEL, else the built-in model (models/" CLI_DEFAULT_MODEL_NAME " beside the build).\n"
    "Prefills the prompt and generates up to N tokens, printing the text as soon as it is\n"
    "produced (with --tokens: each generated token id); stops early at the end-of-sequence token.\n"
    "\n"
    "options:\n"
    "  -p, --prompt TEXT      prompt text, tokenized with DIR's tokenizer.json (BOS as its\n"
    "                         tokenizer_config.json says); no chat template is applied\n"
    "      --lossy            replace invalid UTF-8 in the prompt with U+FFFD instead of failing\n"
    "      --tokens FILE      prompt as token ids, one per line\n"
    "  -n, --n-predict N      tokens to generate (default 32)\n"
    "      --temp T           temperature; 0 = greedy (default 0)\n"
    "      --top-p P          nucleus sampling threshold in (0, 1] (default 1)\n"
    "      --seed S           random seed for sampling (default 0)\n"
    "      --ctx N            context capacity in tokens (default: prompt + N)\n"
    COMMON_HELP;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cmd_run(int argc, char **argv)
{
    static const struct option longs[] = {
        COMMON_LONG_OPTS,
        { "prompt", required_argument, 0, 'p' },
        { "tokens", required_argument, 0, OPT_TOKENS },
        SAMPLING_LONG_OPTS,
        { "lossy", no_argument, 0, OPT_LOSSY },
        { 0, 0, 0, 0 },
    };
    const char *prompt = NULL, *tokens_path = NULL;
    int lossy = 0;
    cli_sampling sampling = { .n_predict = 32, .top_p = 1.0 };
    cli_parser p;
    cli_parser_init(&p, "run", help, ":m:t:p:n:h", longs, argc, argv);
    p.sampling = &sampling;
    int c;
    while ((c = cli_next_option(&p)) != CLI_END) {
        if (c == CLI_EXIT)
            return p.status;
        switch (c) {
        case 'p': prompt = optarg; break;
        case OPT_TOKENS: tokens_path = optarg; break;
        case OPT_LOSSY: lossy = 1; break;
        }
    }
    const char *model_dir = p.model_dir;
    long n_predict = sampling.n_predict, ctx = sampling.ctx;
    char default_dir[4096], default_msg[1200];
    if (!model_dir) {
        if (cli_default_model(default_dir, sizeof default_dir, default_msg, sizeof default_msg))
            return cli_error("run", "%s", default_msg);
        model_dir = default_dir;
    }
    if (prompt && tokens_path)
        return cli_usage_error("run", "give either -p TEXT or --tokens FILE, not both");
    if (!prompt && !tokens_path)
        return cli_usage_error("run", "a prompt is required: -p TEXT or --tokens FILE");

    char msg[600];
    int32_t *tokens;
    int n;
    dsv4_tokenizer *tok = NULL;
    dsv4_detokenizer *detok = NULL;
    dsv4_error err;
    if (prompt) {
        size_t n_ids;
        if (dsv4_tokenizer_open(&tok, model_dir, &err))
            return cli_error("run", "-p TEXT needs the model's tokenizer (or give ids with --tokens FILE): %s",
                             err.message);
        unsigned flags = (dsv4_tokenizer_adds_bos(tok) ? DSV4_TOKENIZE_BOS : 0) | (lossy ? DSV4_TOKENIZE_LOSSY : 0);
        if (dsv4_tokenize(tok, prompt, strlen(prompt), flags, &tokens, &n_ids, &err) ||
            dsv4_detokenizer_new(&detok, tok, &err)) {
            dsv4_tokenizer_close(tok);
            return cli_error("run", "prompt: %s", err.message);
        }
        if (n_ids == 0) {
            free(tokens);
            dsv4_detokenizer_free(detok);
            dsv4_tokenizer_close(tok);
            return cli_usage_error("run", "the prompt is empty");
        }
        n = (int)n_ids;
        tokens_path = "prompt";
    } else if (cli_read_tokens(tokens_path, &tokens, &n, msg, sizeof msg))
        return cli_error("run", "%s", msg);
    if (ctx == 0)
        ctx = n + n_predict;
    if (ctx < n + n_predict) {
        free(tokens);
        dsv4_detokenizer_free(detok);
        dsv4_tokenizer_close(tok);
        return cli_usage_error("run", "--ctx %ld is smaller than prompt (%d) + tokens to generate (%ld)", ctx, n, n_predict);
    }

    dsv4_engine *e = NULL;
    dsv4_session *s = NULL;
    dsv4_sampler *sampler = NULL;
    float *logits = NULL;
    int status = 1;
    if (dsv4_engine_open(&e, model_dir, &p.opt, &err) || dsv4_session_new(&s, e, (int)ctx, &err) ||
        dsv4_sampler_new(&sampler, dsv4_engine_vocab_size(e), (float)sampling.temp, (float)sampling.top_p,
                         (uint64_t)sampling.seed, &err)) {
        cli_error("run", "%s", err.message);
        goto done;
    }
    logits = malloc(sizeof *logits * (size_t)dsv4_engine_vocab_size(e));
    if (!logits) {
        cli_error("run", "out of memory");
        goto done;
    }
    double t0 = now_s();
    if (cli_feed_prompt(s, tokens, n, logits, p.opt.prefill_chunk, "run", &err)) {
        cli_error("run", "%s: %s", tokens_path, err.message);
        goto done;
    }
    double t1 = now_s();
    int generated = 0, eos = dsv4_engine_eos_id(e);
    while (generated < n_predict) {
        int32_t next = dsv4_sampler_pick(sampler, logits);
        if (detok) {
            const char *piece;
            size_t len;
            if (next != eos && dsv4_detokenizer_push(detok, next, &piece, &len, &err)) {
                putchar('\n');
                cli_error("run", "%s", err.message);
                goto done;
            }
            if (next != eos)
                fwrite(piece, 1, len, stdout);
        } else
            printf("%s%d", generated ? " " : "", next);
        fflush(stdout);
        generated++;
        if (next == eos || generated == n_predict)
            break;
        if (dsv4_session_feed(s, &next, 1, logits, 0, &err)) {
            putchar('\n');
            cli_error("run", "%s", err.message);
            goto done;
        }
    }
    double t2 = now_s();
    if (detok) {
        const char *rest;
        size_t len;
        dsv4_detokenizer_flush(detok, &rest, &len);
        fwrite(rest, 1, len, stdout);
    }
    if (generated)
        putchar('\n');
    fflush(stdout); /* the statistics line goes to stderr: keep it after the text */
    fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s); decode: %d tokens in %.3f s (%.1f tok/s); isa %s\n",
            n, t1 - t0, n / (t1 - t0), generated, t2 - t1,
            generated > 1 ? (generated - 1) / (t2 - t1) : 0.0, dsv4_engine_isa(e));
    status = 0;
done:
    free(logits);
    free(tokens);
    dsv4_detokenizer_free(detok);
    dsv4_tokenizer_close(tok);
    dsv4_sampler_free(sampler);
    dsv4_session_free(s);
    dsv4_engine_close(e);
    return status;
}
