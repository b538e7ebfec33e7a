/* The tokenizer's public calls: open/close, encode (added tokens, then
 * pre-tokenization, then BPE per piece), decode, and streaming decode. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer.h"

void dsv4_tokenizer_close(dsv4_tokenizer *t)
{
    if (!t)
        return;
    free(t->bytes);
    free(t->bytes_off);
    free(t->vocab_bytes);
    free(t->vocab_off);
    free(t->is_added);
    free(t->is_special);
    tok_str_index_free(&t->vocab);
    tok_merges_free(&t->merges);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    tok_trie_free(&t->trie_raw);
    tok_trie_free(&t->trie_normalized);
    for (int i = 0; i < t->n_steps; i++)
        tok_pretok_free(&t->steps[i]);
    free(t->steps);
    tok_cache_free(&t->cache);
    free(t->pieces.items);
    free(t->scratch.items);
    free(t);
}

int dsv4_tokenizer_open(dsv4_tokenizer **out, const char *dir, dsv4_error *err)
{
    *out = NULL;
    dsv4_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return dsv4_fail(err, "out of memory");
    if (tok_load(t, dir, err)) {
        dsv4_tokenizer_close(t);
        return -1;
    }
    *out = t;
    return 0;
}

int dsv4_tokenizer_n_ids(const dsv4_tokenizer *t) { return t->n_ids; }
int dsv4_tokenizer_bos_id(const dsv4_tokenizer *t) { return t->bos_id; }
int dsv4_tokenizer_eos_id(const dsv4_tokenizer *t) { return t->eos_id; }
int dsv4_tokenizer_adds_bos(const dsv4_tokenizer *t) { return t->add_bos; }

/* Text between added tokens: pre-tokenize, then BPE each piece. */
static int encode_plain(dsv4_tokenizer *t, const char *s, size_t len, tok_ids *out, dsv4_error *err)
{
    if (len == 0)
        return 0;
    char *spaced = NULL;
    if (t->prefix_space && s[0] != ' ') {
        spaced = malloc(len + 1);
        if (!spaced)
            return dsv4_fail(err, "out of memory");
        spaced[0] = ' ';
        memcpy(spaced + 1, s, len);
        s = spaced;
        len++;
    }
    int status = tok_pretokenize(t, s, len, err);
    for (size_t i = 0; status == 0 && i < t->pieces.n; i++) {
        tok_piece p = t->pieces.items[i];
        if (tok_bpe_piece(t, s + p.off, p.len, out))
            status = dsv4_fail(err, "out of memory");
    }
    free(spaced);
    return status;
}

/* The second pass: added tokens that HF matches on normalized text. */
static int encode_between(dsv4_tokenizer *t, const char *s, size_t len, tok_ids *out, dsv4_error *err)
{
    size_t at = 0, start, end;
    int k;
    while ((k = tok_trie_find(&t->trie_normalized, t->added, s, len, at, &start, &end)) >= 0) {
        if (encode_plain(t, s + at, start - at, out, err) || tok_ids_push(out, t->added[k].id))
            return err->message[0] ? -1 : dsv4_fail(err, "out of memory");
        at = end;
    }
    return encode_plain(t, s + at, len - at, out, err);
}

int dsv4_tokenize(dsv4_tokenizer *t, const char *text, size_t len, unsigned flags, int32_t **ids, size_t *n_ids,
                  dsv4_error *err)
{
    *ids = NULL;
    *n_ids = 0;
    err->message[0] = 0;
    char *fixed = NULL;
    size_t bad_at = tok_utf8_check(text, len);
    if (bad_at < len) {
        if (!(flags & DSV4_TOKENIZE_LOSSY))
            return dsv4_fail(err, "invalid UTF-8 at byte offset %zu (byte 0x%02X)", bad_at,
                             (unsigned char)text[bad_at]);
        fixed = tok_utf8_lossy(text, len, &len);
        if (!fixed)
            return dsv4_fail(err, "out of memory");
        text = fixed;
    }
    tok_ids out = { 0 };
    int status = 0;
    if ((flags & DSV4_TOKENIZE_BOS) && t->bos_id >= 0)
        status = tok_ids_push(&out, t->bos_id) ? dsv4_fail(err, "out of memory") : 0;
    size_t at = 0, start, end;
    int k;
    while (status == 0 && (k = tok_trie_find(&t->trie_raw, t->added, text, len, at, &start, &end)) >= 0) {
        status = encode_between(t, text + at, start - at, &out, err);
        if (status == 0 && tok_ids_push(&out, t->added[k].id))
            status = dsv4_fail(err, "out of memory");
        at = end;
    }
    if (status == 0)
        status = encode_between(t, text + at, len - at, &out, err);
    free(fixed);
    if (status) {
        free(out.ids);
        return -1;
    }
    if (!out.ids)
        out.ids = malloc(sizeof *out.ids); /* an empty result is still a valid pointer to free */
    *ids = out.ids;
    *n_ids = out.n;
    return 0;
}

static int check_id(const dsv4_tokenizer *t, int32_t id, dsv4_error *err)
{
    if (id < 0 || id >= t->n_ids)
        return dsv4_fail(err, "token id %d is outside the tokenizer's ids 0..%d", id, t->n_ids - 1);
    return 0;
}

int dsv4_detokenize(const dsv4_tokenizer *t, const int32_t *ids, size_t n_ids, char **text, size_t *len,
                    dsv4_error *err)
{
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (check_id(t, ids[i], err))
            return -1;
        total += t->bytes_off[ids[i] + 1] - t->bytes_off[ids[i]];
    }
    char *raw = malloc(total + 1);
    if (!raw)
        return dsv4_fail(err, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t l = t->bytes_off[ids[i] + 1] - t->bytes_off[ids[i]];
        memcpy(raw + o, t->bytes + t->bytes_off[ids[i]], l);
        o += l;
    }
    *text = tok_utf8_lossy(raw, total, len);
    free(raw);
    return *text ? 0 : dsv4_fail(err, "out of memory");
}

/* ---- streaming decode ---- */

struct dsv4_detokenizer {
    const dsv4_tokenizer *tok;
    unsigned char pending[4]; /* the start of a character still waiting for its last bytes */
    size_t n_pending;
    char *out;
    size_t out_cap;
};

int dsv4_detokenizer_new(dsv4_detokenizer **out, const dsv4_tokenizer *tok, dsv4_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return dsv4_fail(err, "out of memory");
    (*out)->tok = tok;
    return 0;
}

void dsv4_detokenizer_free(dsv4_detokenizer *d)
{
    if (d) {
        free(d->out);
        free(d);
    }
}

int dsv4_detokenizer_push(dsv4_detokenizer *d, int32_t id, const char **text, size_t *len, dsv4_error *err)
{
    *text = "";
    *len = 0;
    if (check_id(d->tok, id, err))
        return -1;
    const dsv4_tokenizer *t = d->tok;
    size_t tl = t->bytes_off[id + 1] - t->bytes_off[id];
    size_t in_len = d->n_pending + tl;
    /* output ≤ 3 bytes per input byte (each invalid byte may become U+FFFD) */
    if (in_len * 3 + 1 > d->out_cap) {
        size_t cap = in_len * 3 + 64;
        char *g = realloc(d->out, cap);
        if (!g)
            return dsv4_fail(err, "out of memory");
        d->out = g;
        d->out_cap = cap;
    }
    unsigned char *in = malloc(in_len ? in_len : 1);
    if (!in)
        return dsv4_fail(err, "out of memory");
    memcpy(in, d->pending, d->n_pending);
    memcpy(in + d->n_pending, t->bytes + t->bytes_off[id], tl);
    size_t o = 0, i = 0;
    d->n_pending = 0;
    while (i < in_len) {
        size_t n;
        int r = tok_utf8_classify(in + i, in_len - i, &n);
        if (r < 0) {
            memcpy(d->pending, in + i, n);
            d->n_pending = n;
            break;
        }
        if (r == 1)
            memcpy(d->out + o, in + i, n), o += n;
        else
            memcpy(d->out + o, "\xEF\xBF\xBD", 3), o += 3;
        i += n;
    }
    free(in);
    d->out[o] = 0;
    *text = d->out;
    *len = o;
    return 0;
}

void dsv4_detokenizer_flush(dsv4_detokenizer *d, const char **text, size_t *len)
{
    *text = d->n_pending ? "\xEF\xBF\xBD" : "";
    *len = d->n_pending ? 3 : 0;
    d->n_pending = 0;
}
