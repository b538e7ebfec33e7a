/* tokenizer.json + tokenizer_config.json → the tokenizer's tables. Only what
 * a byte-level BPE tokenizer needs is accepted; anything else is refused with
 * the name of the field, never guessed. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer.h"

typedef struct {
    const char *path;
    dsv4_error *err;
} load_ctx;

/* GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest
 * are shifted to U+0100 and up, in byte order. */
static void byte_level_alphabet(int16_t cp_to_byte[512])
{
    for (int i = 0; i < 512; i++)
        cp_to_byte[i] = -1;
    int shifted = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        cp_to_byte[printable ? b : 256 + shifted++] = (int16_t)b;
    }
}

/* Decodes a byte-level token string to bytes; characters outside the alphabet
 * are kept as their own UTF-8. Returns the length written to out (≤ len). */
static size_t unmap_byte_level(const int16_t cp_to_byte[512], const char *s, size_t len, char *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        int n = tok_utf8_valid_len(u + i, len - i);
        unsigned cp = 0;
        if (n == 1)
            cp = u[i];
        else if (n == 2)
            cp = ((unsigned)(u[i] & 0x1F) << 6) | (u[i + 1] & 0x3F);
        if ((n == 1 || n == 2) && cp < 512 && cp_to_byte[cp] >= 0) {
            out[o++] = (char)cp_to_byte[cp];
            i += (size_t)n;
        } else {
            size_t k = n > 0 ? (size_t)n : 1;
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        }
    }
    return o;
}

static int bad(load_ctx *c, const char *fmt, const char *field, const char *detail)
{
    char msg[400];
    snprintf(msg, sizeof msg, fmt, field, detail ? detail : "");
    return dsv4_fail(c->err, "%s: %s", c->path, msg);
}

static const char *type_of(json_t *obj)
{
    json_t *t = json_is_object(obj) ? json_object_get(obj, "type") : NULL;
    return json_is_string(t) ? json_string_value(t) : NULL;
}

static int get_bool(json_t *obj, const char *key, int dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static const char *behavior_names[] = { "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous" };

static int add_step(dsv4_tokenizer *t, load_ctx *c, const char *pattern, int literal, tok_split_behavior b,
                    int invert, const char *field)
{
    tok_pretok_step *g = realloc(t->steps, (size_t)(t->n_steps + 1) * sizeof *g);
    if (!g)
        return dsv4_fail(c->err, "out of memory");
    t->steps = g;
    tok_pretok_step *s = &t->steps[t->n_steps];
    memset(s, 0, sizeof *s);
    s->behavior = b;
    s->invert = invert;
    char where[300];
    snprintf(where, sizeof where, "%s: %s", c->path, field);
    if (tok_pretok_compile(s, pattern, literal, c->err, where))
        return -1;
    t->n_steps++;
    return 0;
}

static int load_pretokenizer(dsv4_tokenizer *t, load_ctx *c, json_t *p, const char *field)
{
    if (json_is_null(p) || !p)
        return 0;
    const char *type = type_of(p);
    char sub[256];
    if (!type)
        return bad(c, "%s.type is missing%s", field, NULL);
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list))
            return bad(c, "%s.pretokenizers must be an array%s", field, NULL);
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", field, i);
            if (load_pretokenizer(t, c, json_array_get(list, i), sub))
                return -1;
        }
        return 0;
    }
    if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(p, "pattern");
        json_t *re = json_is_object(pat) ? json_object_get(pat, "Regex") : NULL;
        json_t *str = json_is_object(pat) ? json_object_get(pat, "String") : NULL;
        if (!json_is_string(re) && !json_is_string(str))
            return bad(c, "%s.pattern must hold a Regex or a String%s", field, NULL);
        json_t *beh = json_object_get(p, "behavior");
        int b = -1;
        for (int i = 0; i < 5 && json_is_string(beh); i++)
            if (!strcmp(json_string_value(beh), behavior_names[i]))
                b = i;
        if (b < 0)
            return bad(c, "%s.behavior '%s' is not a known split behavior", field,
                       json_is_string(beh) ? json_string_value(beh) : "(missing)");
        snprintf(sub, sizeof sub, "%s.pattern", field);
        return add_step(t, c, json_string_value(re ? re : str), re == NULL, (tok_split_behavior)b,
                        get_bool(p, "invert", 0), sub);
    }
    if (!strcmp(type, "ByteLevel")) {
        if (get_bool(p, "add_prefix_space", 1)) {
            if (t->n_steps > 0)
                return bad(c, "%s.add_prefix_space after a Split step is not supported%s", field, NULL);
            t->prefix_space = 1;
        }
        if (get_bool(p, "use_regex", 1)) {
            snprintf(sub, sizeof sub, "%s (the GPT-2 pattern)", field);
            return add_step(t, c, tok_gpt2_pattern, 0, SPLIT_ISOLATED, 0, sub);
        }
        return 0;
    }
    return bad(c, "%s.type '%s' is not supported (Sequence, Split and ByteLevel are)", field, type);
}

static int load_normalizer(load_ctx *c, json_t *n, const char *field)
{
    if (!n || json_is_null(n))
        return 0;
    const char *type = type_of(n);
    if (type && !strcmp(type, "Sequence")) {
        json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list))
            return bad(c, "%s.normalizers must be an array%s", field, NULL);
        for (size_t i = 0; i < json_array_size(list); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", field, i);
            if (load_normalizer(c, json_array_get(list, i), sub))
                return -1;
        }
        return 0;
    }
    return bad(c, "%s.type '%s' is not supported (only an empty Sequence or null)", field, type ? type : "(missing)");
}

/* Per-id byte strings, collected before they are packed into one arena. */
typedef struct {
    char *s;
    size_t len;
    int set;
} id_bytes;

static int set_id_bytes(id_bytes *ib, const char *s, size_t len)
{
    free(ib->s);
    ib->s = malloc(len + 1);
    if (!ib->s)
        return -1;
    memcpy(ib->s, s, len);
    ib->len = len;
    ib->set = 1;
    return 0;
}

static int load_added(dsv4_tokenizer *t, load_ctx *c, json_t *list)
{
    if (!list || json_is_null(list))
        return 0;
    if (!json_is_array(list))
        return bad(c, "%s must be an array%s", "added_tokens", NULL);
    size_t n = json_array_size(list);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added)
        return dsv4_fail(c->err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(list, i);
        json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
        char field[64];
        snprintf(field, sizeof field, "added_tokens[%zu]", i);
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 30))
            return bad(c, "%s.id must be an integer in [0, 2^30)%s", field, NULL);
        if (!json_is_string(content) || json_string_length(content) == 0)
            return bad(c, "%s.content must be a non-empty string%s", field, NULL);
        if (get_bool(a, "single_word", 0))
            return bad(c, "%s.single_word=true is not supported%s", field, NULL);
        tok_added *d = &t->added[t->n_added++];
        d->len = json_string_length(content);
        d->content = malloc(d->len + 1);
        if (!d->content)
            return dsv4_fail(c->err, "out of memory");
        memcpy(d->content, json_string_value(content), d->len + 1);
        d->id = (int32_t)json_integer_value(id);
        d->special = get_bool(a, "special", 0);
        d->lstrip = get_bool(a, "lstrip", 0);
        d->rstrip = get_bool(a, "rstrip", 0);
        d->normalized = get_bool(a, "normalized", !d->special);
    }
    return 0;
}

static int load_merges(dsv4_tokenizer *t, load_ctx *c, json_t *merges, const int16_t cp_to_byte[512])
{
    size_t n = json_array_size(merges);
    if (tok_merges_init(&t->merges, n, c->err))
        return -1;
    char *buf = NULL;
    size_t buf_cap = 0;
    int status = 0;
    for (size_t i = 0; i < n && status == 0; i++) {
        json_t *m = json_array_get(merges, i);
        const char *a, *b;
        size_t la, lb;
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            const char *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                char field[64];
                snprintf(field, sizeof field, "model.merges[%zu]", i);
                status = bad(c, "%s is not two tokens separated by one space%s", field, NULL);
                break;
            }
            a = s;
            la = (size_t)(sp - s);
            b = sp + 1;
            lb = strlen(b);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            la = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            lb = json_string_length(json_array_get(m, 1));
        } else {
            char field[64];
            snprintf(field, sizeof field, "model.merges[%zu]", i);
            status = bad(c, "%s must be a string \"a b\" or a pair [\"a\", \"b\"]%s", field, NULL);
            break;
        }
        if (la + lb > buf_cap) {
            buf_cap = (la + lb) * 2 + 64;
            char *g = realloc(buf, buf_cap);
            if (!g) {
                status = dsv4_fail(c->err, "out of memory");
                break;
            }
            buf = g;
        }
        size_t ba = unmap_byte_level(cp_to_byte, a, la, buf);
        size_t bb = unmap_byte_level(cp_to_byte, b, lb, buf + ba);
        int32_t ia = tok_str_index_get(&t->vocab, t, buf, ba);
        int32_t ib = tok_str_index_get(&t->vocab, t, buf + ba, bb);
        int32_t im = tok_str_index_get(&t->vocab, t, buf, ba + bb);
        if (ia < 0 || ib < 0 || im < 0) {
            char field[64];
            snprintf(field, sizeof field, "model.merges[%zu]", i);
            status = bad(c, "%s: a token of the merge or its result is not in model.vocab%s", field, NULL);
            break;
        }
        tok_merges_put(&t->merges, ia, ib, (int32_t)i, im);
    }
    free(buf);
    return status;
}

static int special_from_config(dsv4_tokenizer *t, json_t *cfg, const char *key)
{
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return -1;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    for (int i = t->n_added - 1; i >= 0; i--)
        if (t->added[i].len == len && !memcmp(t->added[i].content, s, len))
            return t->added[i].id;
    return tok_str_index_get(&t->vocab, t, s, len);
}

static int load_config(dsv4_tokenizer *t, const char *dir, dsv4_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    t->bos_id = t->eos_id = -1;
    t->add_bos = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return 0; /* optional: without it there is no BOS/EOS */
    fclose(f);
    json_error_t je;
    json_t *cfg = json_load_file(path, 0, &je);
    if (!cfg)
        return dsv4_fail(err, "%s: line %d: %s", path, je.line, je.text);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        return dsv4_fail(err, "%s: not a JSON object", path);
    }
    t->bos_id = special_from_config(t, cfg, "bos_token");
    t->eos_id = special_from_config(t, cfg, "eos_token");
    json_t *ab = json_object_get(cfg, "add_bos_token");
    t->add_bos = json_is_true(ab) && t->bos_id >= 0;
    json_decref(cfg);
    return 0;
}

int tok_load(dsv4_tokenizer *t, const char *dir, dsv4_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    load_ctx c = { path, err };
    FILE *probe = fopen(path, "r");
    if (!probe)
        return dsv4_fail(err, "%s: cannot open: %s", path, strerror(errno));
    fclose(probe);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!root)
        return dsv4_fail(err, "%s: line %d: %s", path, je.line, je.text);
    int status = -1;
    id_bytes *ib = NULL;
    int16_t cp_to_byte[512];
    byte_level_alphabet(cp_to_byte);

    json_t *model = json_object_get(root, "model");
    const char *mtype = type_of(model);
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(root)) {
        bad(&c, "the top level must be an object%s%s", "", NULL);
        goto done;
    }
    if (!json_is_object(model)) {
        bad(&c, "%s is missing or not an object%s", "model", NULL);
        goto done;
    }
    if (mtype && strcmp(mtype, "BPE")) {
        bad(&c, "model.type '%s' is not supported (only byte-level BPE)%s", mtype, NULL);
        goto done;
    }
    if (!json_is_object(vocab) || !json_is_array(merges)) {
        bad(&c, "%s must be an object of token → id and model.merges an array%s", "model.vocab", NULL);
        goto done;
    }
    json_t *v;
    if ((v = json_object_get(model, "continuing_subword_prefix")) && json_is_string(v) && json_string_length(v)) {
        bad(&c, "%s is not supported (byte-level BPE has none)%s", "model.continuing_subword_prefix", NULL);
        goto done;
    }
    if ((v = json_object_get(model, "end_of_word_suffix")) && json_is_string(v) && json_string_length(v)) {
        bad(&c, "%s is not supported (byte-level BPE has none)%s", "model.end_of_word_suffix", NULL);
        goto done;
    }
    if (get_bool(model, "byte_fallback", 0)) {
        bad(&c, "%s=true is a sentencepiece-style BPE, not byte-level; not supported%s", "model.byte_fallback", NULL);
        goto done;
    }
    if ((v = json_object_get(model, "dropout")) && json_is_number(v) && json_number_value(v) > 0) {
        bad(&c, "%s > 0 is for training; not supported%s", "model.dropout", NULL);
        goto done;
    }
    t->ignore_merges = get_bool(model, "ignore_merges", 0);
    if (load_normalizer(&c, json_object_get(root, "normalizer"), "normalizer") ||
        load_pretokenizer(t, &c, json_object_get(root, "pre_tokenizer"), "pre_tokenizer") ||
        load_added(t, &c, json_object_get(root, "added_tokens")))
        goto done;
    json_t *dec = json_object_get(root, "decoder");
    if (!type_of(dec) || strcmp(type_of(dec), "ByteLevel")) {
        bad(&c, "decoder.type '%s' is not supported (only ByteLevel)%s", type_of(dec) ? type_of(dec) : "(missing)", NULL);
        goto done;
    }

    /* ids: the vocab's and the added tokens' */
    long max_id = -1;
    const char *key;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 30)) {
            char field[128];
            snprintf(field, sizeof field, "model.vocab[\"%.60s\"]", key);
            bad(&c, "%s must be an integer id in [0, 2^30)%s", field, NULL);
            goto done;
        }
        if (json_integer_value(v) > max_id)
            max_id = (long)json_integer_value(v);
    }
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id > max_id)
            max_id = t->added[i].id;
    if (max_id < 0) {
        bad(&c, "%s is empty%s", "model.vocab", NULL);
        goto done;
    }
    t->n_ids = (int)max_id + 1;
    ib = calloc((size_t)t->n_ids, sizeof *ib);
    t->is_added = calloc((size_t)t->n_ids, 1);
    t->is_special = calloc((size_t)t->n_ids, 1);
    t->bytes_off = calloc((size_t)t->n_ids + 1, sizeof *t->bytes_off);
    if (!ib || !t->is_added || !t->is_special || !t->bytes_off) {
        dsv4_fail(err, "out of memory");
        goto done;
    }
    char *tmp = NULL;
    size_t tmp_cap = 0, total = 0;
    json_object_foreach(vocab, key, v) {
        size_t len = strlen(key);
        if (len > tmp_cap) {
            tmp_cap = len * 2 + 16;
            char *g = realloc(tmp, tmp_cap);
            if (!g) {
                free(tmp);
                dsv4_fail(err, "out of memory");
                goto done;
            }
            tmp = g;
        }
        size_t n = unmap_byte_level(cp_to_byte, key, len, tmp);
        if (set_id_bytes(&ib[json_integer_value(v)], tmp, n)) {
            free(tmp);
            dsv4_fail(err, "out of memory");
            goto done;
        }
    }
    free(tmp);
    for (int i = 0; i < t->n_ids; i++)
        total += ib[i].len;
    /* Added tokens decode to their content; the vocab index keeps the vocab's spelling. */
    char *vocab_bytes = malloc(total + 1);
    uint64_t *vocab_off = calloc((size_t)t->n_ids + 1, sizeof *vocab_off);
    if (!vocab_bytes || !vocab_off) {
        free(vocab_bytes);
        free(vocab_off);
        dsv4_fail(err, "out of memory");
        goto done;
    }
    for (int i = 0; i < t->n_ids; i++) {
        memcpy(vocab_bytes + vocab_off[i], ib[i].s ? ib[i].s : "", ib[i].len);
        vocab_off[i + 1] = vocab_off[i] + ib[i].len;
    }
    t->vocab_bytes = vocab_bytes;
    t->vocab_off = vocab_off;
    if (tok_str_index_init(&t->vocab, json_object_size(vocab))) {
        dsv4_fail(err, "out of memory");
        goto done;
    }
    json_object_foreach(vocab, key, v)
        tok_str_index_put(&t->vocab, t, (int32_t)json_integer_value(v));
    for (int b = 0; b < 256; b++) {
        char ch = (char)b;
        t->byte_id[b] = tok_str_index_get(&t->vocab, t, &ch, 1);
    }
    if (load_merges(t, &c, merges, cp_to_byte))
        goto done;
    {
        /* What each id decodes to: the added tokens' content over the vocab spelling. */
        for (int i = 0; i < t->n_added; i++) {
            if (set_id_bytes(&ib[t->added[i].id], t->added[i].content, t->added[i].len)) {
                dsv4_fail(err, "out of memory");
                goto done;
            }
            t->is_added[t->added[i].id] = 1;
            t->is_special[t->added[i].id] = (uint8_t)t->added[i].special;
        }
        total = 0;
        for (int i = 0; i < t->n_ids; i++)
            total += ib[i].len;
        char *packed = malloc(total + 1);
        uint64_t *off = calloc((size_t)t->n_ids + 1, sizeof *off);
        if (!packed || !off) {
            free(packed);
            free(off);
            dsv4_fail(err, "out of memory");
            goto done;
        }
        for (int i = 0; i < t->n_ids; i++) {
            memcpy(packed + off[i], ib[i].s ? ib[i].s : "", ib[i].len);
            off[i + 1] = off[i] + ib[i].len;
        }
        free(t->bytes_off);
        t->bytes = packed;
        t->bytes_off = off;
    }
    if (tok_trie_build(&t->trie_raw, t->added, t->n_added, 0, err) ||
        tok_trie_build(&t->trie_normalized, t->added, t->n_added, 1, err))
        goto done;
    if (load_config(t, dir, err))
        goto done;
    status = 0;
done:
    if (ib)
        for (int i = 0; i < t->n_ids; i++)
            free(ib[i].s);
    free(ib);
    json_decref(root);
    return status;
}
