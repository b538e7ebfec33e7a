/* dsv4 tokenize: text on stdin → token ids on stdout (or back with --decode).
 * Needs only tokenizer.json (+ tokenizer_config.json) in the directory. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common_opts.h"

static const char *help =
    "usage: dsv4 tokenize -m DIR [--lines] [--decode] [--lossy] [--bos|--no-bos] < INPUT\n"
    "\n"
    "Reads UTF-8 text on stdin and prints its token ids, separated by spaces.\n"
    "DIR needs only tokenizer.json (and tokenizer_config.json for BOS/EOS).\n"
    "\n"
    "options:\n"
    "  -m, --model DIR   directory holding tokenizer.json (required)\n"
    "      --lines       one output line of ids per input line, each line encoded on its\n"
    "                    own (without its newline and without BOS)\n"
    "      --decode      the reverse: ids (spaces/newlines between) in, text out; with\n"
    "                    --lines, each input line of ids decodes to one output line\n"
    "      --lossy       replace invalid UTF-8 with U+FFFD instead of failing\n"
    "      --bos         prepend BOS (default: as tokenizer_config.json's add_bos_token)\n"
    "      --no-bos      never prepend BOS\n"
    "  -h, --help        this help\n";

enum { OPT_LINES = OPT_COMMAND, OPT_DECODE, OPT_LOSSY, OPT_BOS, OPT_NO_BOS };

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            char *g = realloc(buf, cap * 2);
            if (!g) {
                free(buf);
                return NULL;
            }
            buf = g;
            cap *= 2;
        }
    }
    if (buf)
        buf[n] = 0;
    *len = n;
    return buf;
}

static int print_ids(const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%s%d", i ? " " : "", ids[i]);
    return putchar('\n') == EOF;
}

static int encode_span(dsv4_tokenizer *tok, const char *s, size_t len, unsigned flags, long line)
{
    int32_t *ids;
    size_t n;
    dsv4_error err;
    if (dsv4_tokenize(tok, s, len, flags, &ids, &n, &err)) {
        if (line > 0)
            return cli_error("tokenize", "stdin line %ld: %s", line, err.message);
        return cli_error("tokenize", "stdin: %s", err.message);
    }
    print_ids(ids, n);
    free(ids);
    return 0;
}

/* Parses ids from s[0..len): integers separated by whitespace. */
static int decode_span(dsv4_tokenizer *tok, const char *s, size_t len, long line)
{
    size_t cap = 64, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    int status = 0;
    size_t i = 0;
    while (ids && i < len && status == 0) {
        while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
            i++;
        if (i == len)
            break;
        size_t j = i;
        while (j < len && !(s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r'))
            j++;
        char word[32];
        long v;
        size_t wl = j - i < sizeof word - 1 ? j - i : sizeof word - 1;
        memcpy(word, s + i, wl);
        word[wl] = 0;
        if (j - i >= sizeof word || cli_parse_int(word, 0, INT32_MAX, &v)) {
            status = cli_error("tokenize", "stdin line %ld: '%s' is not a token id", line, word);
            break;
        }
        if (n == cap) {
            int32_t *g = realloc(ids, cap * 2 * sizeof *g);
            if (!g) {
                free(ids);
                ids = NULL;
                break;
            }
            ids = g;
            cap *= 2;
        }
        ids[n++] = (int32_t)v;
        i = j;
    }
    if (!ids)
        return cli_error("tokenize", "out of memory");
    if (status == 0) {
        char *text;
        size_t tl;
        dsv4_error err;
        if (dsv4_detokenize(tok, ids, n, &text, &tl, &err))
            status = cli_error("tokenize", "stdin line %ld: %s", line, err.message);
        else {
            fwrite(text, 1, tl, stdout);
            free(text);
        }
    }
    free(ids);
    return status;
}

int cmd_tokenize(int argc, char **argv)
{
    static const struct option longs[] = {
        { "model", required_argument, 0, 'm' },
        { "lines", no_argument, 0, OPT_LINES },
        { "decode", no_argument, 0, OPT_DECODE },
        { "lossy", no_argument, 0, OPT_LOSSY },
        { "bos", no_argument, 0, OPT_BOS },
        { "no-bos", no_argument, 0, OPT_NO_BOS },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    int lines = 0, decode = 0, lossy = 0, bos = -1, c;
    cli_parser p;
    cli_parser_init(&p, "tokenize", help, ":m:h", longs, argc, argv);
    while ((c = cli_next_option(&p)) != CLI_END) {
        switch (c) {
        case CLI_EXIT: return p.status;
        case OPT_LINES: lines = 1; break;
        case OPT_DECODE: decode = 1; break;
        case OPT_LOSSY: lossy = 1; break;
        case OPT_BOS: bos = 1; break;
        case OPT_NO_BOS: bos = 0; break;
        }
    }
    const char *dir = p.model_dir;
    if (!dir)
        return cli_usage_error("tokenize", "-m DIR is required");
    dsv4_tokenizer *tok;
    dsv4_error err;
    if (dsv4_tokenizer_open(&tok, dir, &err))
        return cli_error("tokenize", "%s", err.message);
    size_t len;
    char *in = read_all(stdin, &len);
    if (!in) {
        dsv4_tokenizer_close(tok);
        return cli_error("tokenize", "cannot read stdin (out of memory)");
    }
    unsigned flags = lossy ? DSV4_TOKENIZE_LOSSY : 0;
    int status = 0;
    if (!lines) {
        if ((bos < 0 ? dsv4_tokenizer_adds_bos(tok) : bos) && !decode)
            flags |= DSV4_TOKENIZE_BOS;
        status = decode ? decode_span(tok, in, len, 1) : encode_span(tok, in, len, flags, 0);
    } else {
        if (bos == 1)
            flags |= DSV4_TOKENIZE_BOS;
        long line = 0;
        for (size_t at = 0; at < len && status == 0;) {
            const char *nl = memchr(in + at, '\n', len - at);
            size_t end = nl ? (size_t)(nl - in) : len;
            line++;
            if (decode) {
                status = decode_span(tok, in + at, end - at, line);
                putchar('\n');
            } else
                status = encode_span(tok, in + at, end - at, flags, line);
            at = end + 1;
        }
    }
    if (fflush(stdout) != 0 && status == 0)
        status = cli_error("tokenize", "cannot write stdout");
    free(in);
    dsv4_tokenizer_close(tok);
    return status;
}
