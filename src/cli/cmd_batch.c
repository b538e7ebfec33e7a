/* dsv4 batch: generate for many text files, several sequences decoding
 * together (offline batch work such as summarizing documents). Each output
 * is what `dsv4 run` prints for that prompt: a session per file, its own
 * sampler with the same seed, and dsv4_batch_step, whose results are those
 * of feeding each session alone. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common_opts.h"
#include "default_model.h"

enum { OPT_LOSSY = OPT_COMMAND, OPT_SUFFIX, OPT_FORCE, OPT_FILES_FROM, OPT_CHAT, OPT_THINK, OPT_SYSTEM };

static const char *help =
    "usage: dsv4 batch [-m DIR] -o OUTDIR [options] (FILE... | --files-from LIST)\n"
    "\n"
    "Without -m: $DSV4_MODEL, else the built-in model (models/" CLI_DEFAULT_MODEL_NAME " beside the build).\n"
    "For each FILE, its text (plus --suffix) is the prompt, and up to N tokens are generated\n"
    "into OUTDIR/NAME.out (NAME: the file's name), exactly the text `dsv4 run -p` prints for\n"
    "that prompt (with --chat: the answer `dsv4 chat` gives to it as one user turn). Each\n"
    "prompt is prefilled alone (a session keeps only a decode step's activations once its\n"
    "prompt is in, so long passes cost memory for one prompt at a time); then up to B\n"
    "sequences decode together, every weight read once per step for all of them, and a\n"
    "finished sequence's place goes to the next file. Each output is written whole (a\n"
    "temporary file renamed into place) and files whose output exists are skipped, so a run\n"
    "that was interrupted resumes where it stopped. A line per file on stderr, then the\n"
    "totals; a file that cannot be read or tokenized is reported and the others go on (exit\n"
    "status 1 at the end).\n"
    "\n"
    "options:\n"
    "  -o, --out-dir DIR      where the outputs go (created if missing)\n"
    "  -b, --batch B          sequences decoding together, 1 to 64 (default 16)\n"
    "      --suffix TEXT      appended to each file's text to make its prompt, e.g. a request\n"
    "                         such as $'\\n\\nSummary:' (default: none)\n"
    "      --chat             make each prompt a user turn of V4's chat format (the text\n"
    "                         plus --suffix as its content); the output is the answer\n"
    "      --think            the same in thinking mode: the answer opens with its reasoning\n"
    "      --system TEXT      a system prompt before each user turn (implies --chat)\n"
    "      --files-from LIST  also the files named in LIST, one path per line ('-': stdin)\n"
    "      --force            regenerate files whose output exists\n"
    "      --lossy            replace invalid UTF-8 in a file with U+FFFD instead of failing it\n"
    "  -n, --n-predict N      tokens to generate per file (default 128)\n"
    "      --temp T           temperature; 0 = greedy (default 0)\n"
    "      --top-p P          nucleus sampling threshold in (0, 1] (default 1)\n"
    "      --seed S           random seed, the same for every file (default 0)\n"
    "      --ctx N            context capacity of each sequence (default: its prompt + N)\n"
    COMMON_HELP;

/* One file's sequence while it generates. */
typedef struct {
    int file;               /* index into the inputs */
    dsv4_session *s;
    dsv4_sampler *sampler;
    dsv4_detokenizer *detok;
    char *text;             /* what is generated so far */
    size_t len, cap;
    int prompt_tokens, generated;
} sequence;

typedef struct {
    const char *out_dir, *suffix, *system_prompt;
    int batch, force, lossy;
    int chat, think; /* chat: V4's chat format, thinking mode if think */
    int prefill_chunk; /* the engine's --prefill-chunk (0: default), for cli_feed_prompt */
    cli_sampling sampling;
    dsv4_engine *e;
    dsv4_tokenizer *tok;
    char **inputs;
    int n_inputs;
    /* totals */
    int done, skipped, failed;
    long prompt_tokens, generated, decoded; /* decoded: tokens fed by batch steps */
    double prefill_s, decode_s;
} batch_job;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int output_path(const batch_job *j, int file, char *buf, size_t len)
{
    return snprintf(buf, len, "%s/%s.out", j->out_dir, base_name(j->inputs[file])) >= (int)len ? -1 : 0;
}

static int append(sequence *q, const char *piece, size_t len)
{
    if (len == 0)
        return 0; /* a token that completes no character yet */
    if (q->len + len + 1 > q->cap) {
        size_t cap = q->cap ? q->cap : 1024;
        while (q->len + len + 1 > cap)
            cap *= 2;
        char *grown = realloc(q->text, cap);
        if (!grown)
            return -1;
        q->text = grown;
        q->cap = cap;
    }
    memcpy(q->text + q->len, piece, len);
    q->len += len;
    return 0;
}

static void release(sequence *q)
{
    dsv4_session_free(q->s);
    dsv4_sampler_free(q->sampler);
    dsv4_detokenizer_free(q->detok);
    free(q->text);
    *q = (sequence){ .file = -1 };
}

static void file_failed(batch_job *j, int file, const char *msg)
{
    fprintf(stderr, "dsv4 batch: %s: %s\n", j->inputs[file], msg);
    j->failed++;
}

/* Starts file `file` in q: tokenize, open a session, prefill (logits: the
 * last position's). 0 on success; else the file is reported as failed. */
static int start(batch_job *j, sequence *q, int file, float *logits)
{
    char msg[600];
    const char *why = msg;
    dsv4_error err;
    char *data = NULL, *prompt = NULL;
    size_t len = 0, n_ids = 0;
    int32_t *ids = NULL;
    *q = (sequence){ .file = file };
    if (cli_read_file(j->inputs[file], &data, &len, msg, sizeof msg)) {
        fprintf(stderr, "dsv4 batch: %s\n", msg); /* msg names the file */
        j->failed++;
        q->file = -1;
        return -1;
    }
    size_t sl = strlen(j->suffix);
    prompt = realloc(data, len + sl + 1);
    if (!prompt) {
        free(data);
        why = "out of memory";
        goto fail;
    }
    memcpy(prompt + len, j->suffix, sl + 1);
    int bad;
    if (j->chat) { /* dsv4_chat_encode's ids (BOS in the rendered text), --lossy honoured */
        dsv4_chat_message turns[2] = { { "system", j->system_prompt, NULL }, { "user", prompt, NULL } };
        dsv4_chat_options opt = { .thinking = j->think };
        char *text = NULL;
        size_t text_len;
        int first = j->system_prompt ? 0 : 1;
        bad = dsv4_chat_render(turns + first, 2 - first, &opt, &text, &text_len, &err) ||
              dsv4_tokenize(j->tok, text, text_len, j->lossy ? DSV4_TOKENIZE_LOSSY : 0, &ids, &n_ids, &err);
        free(text);
    } else {
        unsigned flags = (dsv4_tokenizer_adds_bos(j->tok) ? DSV4_TOKENIZE_BOS : 0) |
                         (j->lossy ? DSV4_TOKENIZE_LOSSY : 0);
        bad = dsv4_tokenize(j->tok, prompt, len + sl, flags, &ids, &n_ids, &err);
    }
    free(prompt);
    if (bad || n_ids == 0) {
        why = bad ? err.message : "the prompt is empty";
        goto fail;
    }
    long n_predict = j->sampling.n_predict, ctx = j->sampling.ctx ? j->sampling.ctx : (long)n_ids + n_predict;
    if (ctx < (long)n_ids + n_predict) {
        snprintf(msg, sizeof msg, "--ctx %ld is smaller than its prompt (%zu) + tokens to generate (%ld)", ctx,
                 n_ids, n_predict);
        goto fail;
    }
    if (ctx > 1L << 30) {
        why = "prompt too long";
        goto fail;
    }
    why = err.message;
    if (dsv4_session_new(&q->s, j->e, (int)ctx, &err) ||
        dsv4_sampler_new(&q->sampler, dsv4_engine_vocab_size(j->e), (float)j->sampling.temp,
                         (float)j->sampling.top_p, (uint64_t)j->sampling.seed, &err) ||
        dsv4_detokenizer_new(&q->detok, j->tok, &err))
        goto fail;
    double t0 = now_s();
    if (cli_feed_prompt(q->s, ids, (int)n_ids, logits, j->prefill_chunk, j->inputs[file], &err))
        goto fail;
    dsv4_session_trim(q->s); /* only the prompt's pass needed its activations */
    j->prefill_s += now_s() - t0;
    j->prompt_tokens += (long)n_ids;
    q->prompt_tokens = (int)n_ids;
    free(ids);
    return 0;
fail:
    file_failed(j, file, why);
    free(ids);
    release(q);
    return -1;
}

/* Ends q: its text (as `dsv4 run` prints it) into its output file. */
static void finish(batch_job *j, sequence *q)
{
    char path[4096], msg[600];
    const char *rest;
    size_t len;
    dsv4_detokenizer_flush(q->detok, &rest, &len);
    int bad = append(q, rest, len) || (q->generated && append(q, "\n", 1));
    if (bad)
        file_failed(j, q->file, "out of memory");
    else if (output_path(j, q->file, path, sizeof path))
        file_failed(j, q->file, "output path too long");
    else if (cli_write_file(path, q->text ? q->text : "", q->len, msg, sizeof msg))
        file_failed(j, q->file, msg);
    else {
        j->done++;
        j->generated += q->generated;
        fprintf(stderr, "dsv4 batch: [%d/%d] %s: %d prompt + %d generated tokens -> %s\n",
                j->done + j->skipped + j->failed, j->n_inputs, j->inputs[q->file], q->prompt_tokens, q->generated,
                path);
    }
    release(q);
}

/* Picks q's next token from its logits; 1 if q goes on (the token in *next), 0 if it ended. */
static int advance(batch_job *j, sequence *q, const float *logits, int32_t *next, int eos)
{
    dsv4_error err;
    if (q->generated >= j->sampling.n_predict) {
        finish(j, q);
        return 0;
    }
    int32_t id = dsv4_sampler_pick(q->sampler, logits);
    q->generated++;
    if (id != eos) {
        const char *piece;
        size_t len;
        int bad = dsv4_detokenizer_push(q->detok, id, &piece, &len, &err);
        if (bad || append(q, piece, len)) {
            file_failed(j, q->file, bad ? err.message : "out of memory");
            release(q);
            return 0;
        }
    }
    if (id == eos || q->generated == j->sampling.n_predict) {
        finish(j, q);
        return 0;
    }
    *next = id;
    return 1;
}

/* The next input still to do (output missing, or --force), or -1. */
static int next_input(batch_job *j, int *cursor)
{
    while (*cursor < j->n_inputs) {
        int f = (*cursor)++;
        char path[4096];
        struct stat st;
        if (output_path(j, f, path, sizeof path)) {
            file_failed(j, f, "output path too long");
            continue;
        }
        if (!j->force && stat(path, &st) == 0) {
            j->skipped++;
            fprintf(stderr, "dsv4 batch: [%d/%d] %s: skipped, %s exists\n", j->done + j->skipped + j->failed,
                    j->n_inputs, j->inputs[f], path);
            continue;
        }
        return f;
    }
    return -1;
}

/* Starts the next file still to do in q, past files that fail (each
 * reported); 0 when none is left. */
static int take_next(batch_job *j, int *cursor, sequence *q, float *logits)
{
    for (int f; (f = next_input(j, cursor)) >= 0;)
        if (start(j, q, f, logits) == 0)
            return 1;
    return 0;
}

/* The live sequences stay in places [0, n), each with its logits in its row
 * of one [batch][vocab] buffer, so a step's rows are those places in order. */
static int run_batch(batch_job *j)
{
    int vocab = dsv4_engine_vocab_size(j->e), eos = dsv4_engine_eos_id(j->e), cursor = 0, n = 0;
    sequence seq[DSV4_BATCH_MAX];
    dsv4_session *sessions[DSV4_BATCH_MAX];
    int32_t tokens[DSV4_BATCH_MAX];
    float *logits = malloc(sizeof *logits * (size_t)vocab * (size_t)j->batch);
    if (!logits)
        return cli_error("batch", "out of memory");
#define ROW(i) (logits + (size_t)(i) * vocab)
    dsv4_error err;
    int status = 0;
    while (n < j->batch && take_next(j, &cursor, &seq[n], ROW(n))) /* the first files fill the places */
        n++;
    while (n > 0) {
        /* each sequence picks its next token; one that ends gives its place
         * to the next file or, with none left, to the last live sequence
         * (which has not picked yet: it comes later in this pass) */
        for (int i = 0; i < n;) {
            if (advance(j, &seq[i], ROW(i), &tokens[i], eos)) {
                sessions[i] = seq[i].s;
                i++;
                continue;
            }
            if (take_next(j, &cursor, &seq[i], ROW(i)))
                continue;
            if (i < --n) {
                seq[i] = seq[n];
                memcpy(ROW(i), ROW(n), sizeof *logits * (size_t)vocab);
            }
        }
        if (n == 0)
            break;
        double t0 = now_s();
        if (dsv4_batch_step(sessions, tokens, n, logits, &err)) {
            status = cli_error("batch", "%s", err.message);
            break;
        }
        j->decode_s += now_s() - t0;
        j->decoded += n;
    }
#undef ROW
    for (int i = 0; i < n; i++)
        release(&seq[i]);
    free(logits);
    return status;
}

/* The inputs: the command's operands, then the lines of LIST (its buffer,
 * *list, holds them: free it after the job). */
static int gather_inputs(batch_job *j, char **operands, int n_operands, const char *list_path, char **list,
                         char *msg, size_t msg_len)
{
    size_t len = 0, lines = 0;
    if (list_path) {
        if (cli_read_file(list_path, list, &len, msg, msg_len))
            return -1;
        char *grown = realloc(*list, len + 1);
        if (!grown) {
            snprintf(msg, msg_len, "%s: out of memory", list_path);
            return -1;
        }
        *list = grown;
        grown[len] = '\0';
        for (size_t i = 0; i < len; i++)
            lines += grown[i] == '\n';
        lines++;
    }
    j->inputs = malloc(sizeof *j->inputs * ((size_t)n_operands + lines + 1));
    if (!j->inputs) {
        snprintf(msg, msg_len, "out of memory");
        return -1;
    }
    j->n_inputs = 0;
    for (int i = 0; i < n_operands; i++)
        j->inputs[j->n_inputs++] = operands[i];
    for (char *line = *list, *next; list_path && line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
            line[--n] = '\0';
        if (n > 0 && j->n_inputs < INT32_MAX)
            j->inputs[j->n_inputs++] = line;
    }
    return 0;
}

typedef struct {
    const char *base;
    int index;
} named_input;

static int by_base_name(const void *a, const void *b)
{
    const named_input *x = a, *y = b;
    int c = strcmp(x->base, y->base);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* Inputs present and their outputs distinct (sorted by name: fine for a
 * hundred thousand files). */
static int check_inputs(const batch_job *j)
{
    if (j->n_inputs == 0)
        return cli_usage_error("batch", "no input files");
    named_input *names = malloc(sizeof *names * (size_t)j->n_inputs);
    if (!names)
        return cli_error("batch", "out of memory");
    for (int i = 0; i < j->n_inputs; i++)
        names[i] = (named_input){ base_name(j->inputs[i]), i };
    qsort(names, (size_t)j->n_inputs, sizeof *names, by_base_name);
    int status = 0;
    for (int i = 1; i < j->n_inputs && !status; i++)
        if (!strcmp(names[i - 1].base, names[i].base))
            status = cli_usage_error("batch", "'%s' and '%s' would write the same output",
                                     j->inputs[names[i - 1].index], j->inputs[names[i].index]);
    free(names);
    return status;
}

/* Output directory, model, tokenizer, then the batch and its totals. */
static int run_job(batch_job *j, const cli_parser *p)
{
    if (mkdir(j->out_dir, 0777) != 0 && errno != EEXIST)
        return cli_error("batch", "cannot create '%s': %s", j->out_dir, strerror(errno));
    struct stat st;
    if (stat(j->out_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cli_error("batch", "'%s' is not a directory", j->out_dir);

    const char *model_dir = p->model_dir;
    char default_dir[4096], default_msg[1200];
    if (!model_dir) {
        if (cli_default_model(default_dir, sizeof default_dir, default_msg, sizeof default_msg))
            return cli_error("batch", "%s", default_msg);
        model_dir = default_dir;
    }
    dsv4_error err;
    if (dsv4_tokenizer_open(&j->tok, model_dir, &err))
        return cli_error("batch", "needs the model's tokenizer: %s", err.message);
    if (dsv4_engine_open(&j->e, model_dir, &p->opt, &err)) {
        dsv4_tokenizer_close(j->tok);
        return cli_error("batch", "%s", err.message);
    }
    j->prefill_chunk = p->opt.prefill_chunk;
    double t0 = now_s();
    int status = run_batch(j);
    double wall = now_s() - t0;
    fprintf(stderr,
            "dsv4 batch: %d written, %d skipped, %d failed of %d; prefill %ld tokens in %.2f s (%.1f tok/s); "
            "decode %ld tokens in %.2f s (%.1f tok/s), up to %d together; %.2f s in all; isa %s\n",
            j->done, j->skipped, j->failed, j->n_inputs, j->prompt_tokens, j->prefill_s,
            j->prefill_s > 0 ? j->prompt_tokens / j->prefill_s : 0.0, j->decoded, j->decode_s,
            j->decode_s > 0 ? j->decoded / j->decode_s : 0.0, j->batch, wall, dsv4_engine_isa(j->e));
    dsv4_engine_close(j->e);
    dsv4_tokenizer_close(j->tok);
    return status ? status : j->failed ? 1 : 0;
}

int cmd_batch(int argc, char **argv)
{
    static const struct option longs[] = {
        COMMON_LONG_OPTS,
        { "out-dir", required_argument, 0, 'o' },
        { "batch", required_argument, 0, 'b' },
        { "suffix", required_argument, 0, OPT_SUFFIX },
        { "force", no_argument, 0, OPT_FORCE },
        { "files-from", required_argument, 0, OPT_FILES_FROM },
        { "chat", no_argument, 0, OPT_CHAT },
        { "think", no_argument, 0, OPT_THINK },
        { "system", required_argument, 0, OPT_SYSTEM },
        { "lossy", no_argument, 0, OPT_LOSSY },
        SAMPLING_LONG_OPTS,
        { 0, 0, 0, 0 },
    };
    batch_job j = { .suffix = "", .batch = 16, .sampling = { .n_predict = 128, .top_p = 1.0 } };
    const char *list_path = NULL;
    cli_parser p;
    cli_parser_init(&p, "batch", help, ":m:t:o:b:n:h", longs, argc, argv);
    p.sampling = &j.sampling;
    p.operands = 1;
    int c;
    long v;
    while ((c = cli_next_option(&p)) != CLI_END) {
        if (c == CLI_EXIT)
            return p.status;
        switch (c) {
        case 'o': j.out_dir = optarg; break;
        case 'b':
            if (cli_parse_int(optarg, 1, DSV4_BATCH_MAX, &v))
                return cli_usage_error("batch", "-b needs a batch size from 1 to %d, got '%s'", DSV4_BATCH_MAX, optarg);
            j.batch = (int)v;
            break;
        case OPT_SUFFIX: j.suffix = optarg; break;
        case OPT_FORCE: j.force = 1; break;
        case OPT_FILES_FROM: list_path = optarg; break;
        case OPT_CHAT: j.chat = 1; break;
        case OPT_THINK: j.chat = j.think = 1; break;
        case OPT_SYSTEM: j.chat = 1; j.system_prompt = optarg; break;
        case OPT_LOSSY: j.lossy = 1; break;
        }
    }
    if (!j.out_dir)
        return cli_usage_error("batch", "-o OUTDIR is required");
    char *list = NULL, msg[600];
    if (gather_inputs(&j, argv + optind, argc - optind, list_path, &list, msg, sizeof msg)) {
        free(list);
        return cli_error("batch", "%s", msg);
    }
    int status = check_inputs(&j);
    if (status == 0)
        status = run_job(&j, &p);
    free(j.inputs);
    free(list);
    return status;
}
