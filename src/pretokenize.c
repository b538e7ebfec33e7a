/* Pre-tokenization: the Split steps of tokenizer.json, run with PCRE2 (UTF,
 * Unicode properties, JIT). Each step splits every piece the previous step
 * left, and sees only that piece (a lookahead stops at the piece's end), as
 * in HF tokenizers. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer.h"

const char tok_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* HF tokenizers compiles these patterns with Oniguruma, whose Unicode \s is
 * exactly this set. PCRE2's \s adds U+180E, so \s and \S are spelled out. */
#define WHITESPACE_MEMBERS "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

static char *translate_pattern(const char *p)
{
    size_t n = strlen(p), cap = n * 8 + 64, o = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        const char *add = NULL;
        char two[3] = { 0 };
        if (p[i] == '\\' && i + 1 < n) {
            char c = p[i + 1];
            if (c == 's')
                add = in_class ? WHITESPACE_MEMBERS : "[" WHITESPACE_MEMBERS "]";
            else if (c == 'S' && !in_class)
                add = "[^" WHITESPACE_MEMBERS "]";
            else {
                two[0] = '\\';
                two[1] = c;
                add = two;
            }
            i++;
        } else {
            if (p[i] == '[' && !in_class) {
                in_class = 1;
                /* a ']' right after '[' or '[^' is a literal member */
                size_t j = i + 1;
                if (j < n && p[j] == '^')
                    j++;
                if (j < n && p[j] == ']') {
                    memcpy(out + o, p + i, j - i + 1);
                    o += j - i + 1;
                    i = j;
                    continue;
                }
            } else if (p[i] == ']' && in_class)
                in_class = 0;
            two[0] = p[i];
            add = two;
        }
        size_t l = strlen(add);
        if (o + l + 1 > cap) {
            free(out);
            return NULL;
        }
        memcpy(out + o, add, l);
        o += l;
    }
    out[o] = 0;
    return out;
}

int tok_pretok_compile(tok_pretok_step *step, const char *pattern, int literal, dsv4_error *err, const char *field)
{
    char *translated = literal ? strdup(pattern) : translate_pattern(pattern);
    if (!translated)
        return dsv4_fail(err, "out of memory compiling %s", field);
    int code_err;
    PCRE2_SIZE at;
    uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)translated, PCRE2_ZERO_TERMINATED, options, &code_err, &at, NULL);
    free(translated);
    if (!code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code_err, msg, sizeof msg);
        return dsv4_fail(err, "%s: the regex does not compile: %s", field, (const char *)msg);
    }
    /* JIT is a speed-up, not a requirement: the interpreter gives the same matches. */
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
    if (!md) {
        pcre2_code_free(code);
        return dsv4_fail(err, "out of memory compiling %s", field);
    }
    step->code = code;
    step->match_data = md;
    return 0;
}

void tok_pretok_free(tok_pretok_step *step)
{
    pcre2_match_data_free(step->match_data);
    pcre2_code_free(step->code);
    step->code = step->match_data = NULL;
}

static int pieces_push(tok_pieces *p, size_t off, size_t len)
{
    if (len == 0)
        return 0;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 1024;
        tok_piece *g = realloc(p->items, cap * sizeof *g);
        if (!g)
            return -1;
        p->items = g;
        p->cap = cap;
    }
    p->items[p->n++] = (tok_piece){ off, len };
    return 0;
}

/* Extends the last piece to `end` (the merge behaviors), or starts one. */
static int pieces_extend(tok_pieces *p, size_t off, size_t end)
{
    if (p->n > 0) {
        tok_piece *last = &p->items[p->n - 1];
        last->len = end - last->off;
        return 0;
    }
    return pieces_push(p, off, end - off);
}

typedef struct {
    size_t start, end;
    int is_match;
} span;

/* Applies a split behavior to the spans of one piece, in HF's fold order. */
static int apply_behavior(tok_split_behavior b, const span *s, size_t n, tok_pieces *out)
{
    size_t first_out = out->n;
    int prev_match = 0, r = 0;
    switch (b) {
    case SPLIT_REMOVED:
        for (size_t i = 0; i < n && !r; i++)
            if (!s[i].is_match)
                r = pieces_push(out, s[i].start, s[i].end - s[i].start);
        return r;
    case SPLIT_ISOLATED:
        for (size_t i = 0; i < n && !r; i++)
            r = pieces_push(out, s[i].start, s[i].end - s[i].start);
        return r;
    case SPLIT_MERGED_PREV:
        for (size_t i = 0; i < n && !r; i++) {
            if (s[i].is_match && !prev_match && out->n > first_out)
                r = pieces_extend(out, s[i].start, s[i].end);
            else
                r = pieces_push(out, s[i].start, s[i].end - s[i].start);
            prev_match = s[i].is_match;
        }
        return r;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < n && !r; i++) {
            if (s[i].is_match == prev_match && out->n > first_out)
                r = pieces_extend(out, s[i].start, s[i].end);
            else
                r = pieces_push(out, s[i].start, s[i].end - s[i].start);
            prev_match = s[i].is_match;
        }
        return r;
    case SPLIT_MERGED_NEXT: {
        /* a match joins the span after it: walk backwards, then restore order */
        for (size_t k = n; k-- > 0 && !r;) {
            if (s[k].is_match && !prev_match && out->n > first_out) {
                tok_piece *last = &out->items[out->n - 1];
                last->len += last->off - s[k].start;
                last->off = s[k].start;
            } else
                r = pieces_push(out, s[k].start, s[k].end - s[k].start);
            prev_match = s[k].is_match;
        }
        for (size_t i = first_out, j = out->n; !r && j-- > i; i++) {
            tok_piece tmp = out->items[i];
            out->items[i] = out->items[j];
            out->items[j] = tmp;
        }
        return r;
    }
    }
    return r;
}

static int split_piece(const tok_pretok_step *step, const char *text, tok_piece piece, span **spans, size_t *spans_cap,
                       tok_pieces *out, dsv4_error *err)
{
    const unsigned char *subject = (const unsigned char *)text + piece.off;
    size_t n = 0, prev = 0, at = 0;
    pcre2_match_data *md = step->match_data;
    for (;;) {
        if (n + 2 > *spans_cap) {
            size_t cap = *spans_cap ? *spans_cap * 2 : 256;
            span *g = realloc(*spans, cap * sizeof *g);
            if (!g)
                return dsv4_fail(err, "out of memory pre-tokenizing");
            *spans = g;
            *spans_cap = cap;
        }
        if (at > piece.len)
            break;
        int rc = pcre2_match(step->code, subject, piece.len, at, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return dsv4_fail(err, "pre-tokenizer regex failed (PCRE2 error %d) at byte %zu", rc, piece.off + at);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) {
            /* empty matches make no split; step over one character */
            at = ms + 1;
            while (at < piece.len && (subject[at] & 0xC0) == 0x80)
                at++;
            continue;
        }
        if (ms > prev)
            (*spans)[n++] = (span){ piece.off + prev, piece.off + ms, step->invert };
        (*spans)[n++] = (span){ piece.off + ms, piece.off + me, !step->invert };
        prev = at = me;
    }
    if (prev < piece.len)
        (*spans)[n++] = (span){ piece.off + prev, piece.off + piece.len, step->invert };
    if (apply_behavior(step->behavior, *spans, n, out))
        return dsv4_fail(err, "out of memory pre-tokenizing");
    return 0;
}

int tok_pretokenize(dsv4_tokenizer *t, const char *text, size_t len, dsv4_error *err)
{
    t->pieces.n = 0;
    if (pieces_push(&t->pieces, 0, len))
        return dsv4_fail(err, "out of memory pre-tokenizing");
    span *spans = NULL;
    size_t spans_cap = 0;
    int status = 0;
    for (int s = 0; s < t->n_steps && status == 0; s++) {
        t->scratch.n = 0;
        for (size_t i = 0; i < t->pieces.n && status == 0; i++)
            status = split_piece(&t->steps[s], text, t->pieces.items[i], &spans, &spans_cap, &t->scratch, err);
        tok_pieces swap = t->pieces;
        t->pieces = t->scratch;
        t->scratch = swap;
    }
    free(spans);
    return status;
}
