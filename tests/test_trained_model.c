/* The built-in trained model (models/v4-tiny-en) against what transformers
 * computed on exactly its exported weights (eval/eval.json, written by
 * tools/train_small_model.py): held-out perplexity in plain numerics within
 * 0.1 %, release numerics within 1 % of plain, the KL between the two, the
 * tokenizer reproducing transformers' token ids, and how much the indexer's
 * top-k costs against attending to every compressed entry. */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "dsv4.h"

#define MODEL "models/v4-tiny-en"
#define BATCH 256

typedef struct {
    int32_t *ids;
    int n;
    int ctx;
    int chunks;
    double tf_ppl, tf_chunk_nll[8];
    int vocab;
} fixture;

static fixture fx;

static int32_t *read_ids(const char *path, int *n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    int cap = 1024, k = 0;
    int32_t *ids = malloc(sizeof *ids * cap);
    long v;
    while (ids && fscanf(f, "%ld", &v) == 1) {
        if (k == cap) {
            cap *= 2;
            int32_t *g = realloc(ids, sizeof *ids * cap);
            if (!g) {
                free(ids);
                ids = NULL;
                break;
            }
            ids = g;
        }
        ids[k++] = (int32_t)v;
    }
    fclose(f);
    *n = k;
    return ids;
}

static int setup(void **state)
{
    (void)state;
    json_error_t je;
    json_t *root = json_load_file(MODEL "/eval/eval.json", 0, &je);
    if (!root) {
        fprintf(stderr, "%s/eval/eval.json: %s\n", MODEL, je.text);
        return -1;
    }
    json_t *f = json_object_get(root, "fixture");
    fx.ctx = (int)json_integer_value(json_object_get(root, "ctx"));
    fx.chunks = (int)json_integer_value(json_object_get(f, "chunks"));
    fx.tf_ppl = json_real_value(json_object_get(f, "ppl"));
    json_t *sums = json_object_get(f, "chunk_nll_sums");
    for (int k = 0; k < fx.chunks && k < 8; k++)
        fx.tf_chunk_nll[k] = json_real_value(json_array_get(sums, k));
    json_decref(root);
    fx.ids = read_ids(MODEL "/eval/heldout_tokens.txt", &fx.n);
    if (!fx.ids || fx.ctx < 2 || fx.chunks < 1 || fx.chunks > 8 || fx.n < fx.chunks * (fx.ctx - 1))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(fx.ids);
    return 0;
}

static dsv4_engine *open_engine(const char *dir, dsv4_numerics numerics)
{
    dsv4_options opt;
    dsv4_options_default(&opt);
    opt.numerics = numerics;
    dsv4_engine *e = NULL;
    dsv4_error err;
    if (dsv4_engine_open(&e, dir, &opt, &err)) {
        fprintf(stderr, "%s: %s\n", dir, err.message);
        return NULL;
    }
    return e;
}

static void log_softmax(const float *x, int n, double *out)
{
    double mx = x[0], s = 0.0;
    for (int i = 1; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    for (int i = 0; i < n; i++)
        s += exp((double)x[i] - mx);
    double lse = mx + log(s);
    for (int i = 0; i < n; i++)
        out[i] = (double)x[i] - lse;
}

/* Teacher-forced NLL sums per chunk (BOS + piece, as eval.json's chunking) for
 * engine a; with engine b too, the mean KL(a || b) over the same positions. */
static void score(dsv4_engine *a, dsv4_engine *b, int ctx, int chunks, double *nll_a, double *nll_b,
                  double *kl_mean)
{
    int piece = ctx - 1, vocab = dsv4_engine_vocab_size(a);
    dsv4_session *sa = NULL, *sb = NULL;
    dsv4_error err;
    assert_int_equal(dsv4_session_new(&sa, a, ctx, &err), 0);
    if (b)
        assert_int_equal(dsv4_session_new(&sb, b, ctx, &err), 0);
    float *la = malloc(sizeof *la * BATCH * vocab), *lb = malloc(sizeof *lb * BATCH * vocab);
    double *pa = malloc(sizeof *pa * vocab), *pb = malloc(sizeof *pb * vocab);
    int32_t *chunk = malloc(sizeof *chunk * ctx);
    assert_non_null(la);
    assert_non_null(lb);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_non_null(chunk);
    double kl = 0.0;
    long positions = 0;
    for (int k = 0; k < chunks; k++) {
        chunk[0] = dsv4_engine_bos_id(a);
        memcpy(chunk + 1, fx.ids + (size_t)k * piece, sizeof *chunk * piece);
        dsv4_session_reset(sa);
        if (sb)
            dsv4_session_reset(sb);
        nll_a[k] = 0.0;
        if (nll_b)
            nll_b[k] = 0.0;
        for (int at = 0; at < ctx; at += BATCH) {
            int n = ctx - at < BATCH ? ctx - at : BATCH;
            assert_int_equal(dsv4_session_feed(sa, chunk + at, n, la, 1, &err), 0);
            if (sb)
                assert_int_equal(dsv4_session_feed(sb, chunk + at, n, lb, 1, &err), 0);
            for (int i = 0; i < n && at + i + 1 < ctx; i++) {
                int target = chunk[at + i + 1];
                log_softmax(la + (size_t)i * vocab, vocab, pa);
                nll_a[k] -= pa[target];
                if (!sb)
                    continue;
                log_softmax(lb + (size_t)i * vocab, vocab, pb);
                nll_b[k] -= pb[target];
                double d = 0.0;
                for (int v = 0; v < vocab; v++)
                    d += exp(pa[v]) * (pa[v] - pb[v]);
                kl += d;
                positions++;
            }
        }
    }
    if (kl_mean)
        *kl_mean = positions ? kl / positions : 0.0;
    free(la);
    free(lb);
    free(pa);
    free(pb);
    free(chunk);
    dsv4_session_free(sa);
    dsv4_session_free(sb);
}

static double ppl_of(const double *nll, int ctx, int chunks)
{
    double s = 0.0;
    for (int k = 0; k < chunks; k++)
        s += nll[k];
    return exp(s / ((double)chunks * (ctx - 1)));
}

/* dsv4's tokenizer gives exactly the ids HF tokenizers gave for the held-out text. */
static void test_tokenizer_matches(void **state)
{
    (void)state;
    FILE *f = fopen(MODEL "/eval/heldout.txt", "rb");
    assert_non_null(f);
    static char text[1 << 20];
    size_t len = fread(text, 1, sizeof text, f);
    fclose(f);
    dsv4_tokenizer *tok = NULL;
    dsv4_error err;
    assert_int_equal(dsv4_tokenizer_open(&tok, MODEL, &err), 0);
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(dsv4_tokenize(tok, text, len, 0, &ids, &n, &err), 0);
    assert_int_equal((int)n, fx.n);
    assert_memory_equal(ids, fx.ids, sizeof *ids * n);
    free(ids);
    dsv4_tokenizer_close(tok);
}

/* Plain numerics = transformers on the same weights (0.1 %); release within 1 % of plain. */
static void test_heldout_perplexity(void **state)
{
    (void)state;
    dsv4_engine *plain = open_engine(MODEL, DSV4_NUMERICS_PLAIN);
    dsv4_engine *release = open_engine(MODEL, DSV4_NUMERICS_RELEASE);
    assert_non_null(plain);
    assert_non_null(release);
    double nll_p[8], nll_r[8], kl;
    score(plain, release, fx.ctx, fx.chunks, nll_p, nll_r, &kl);
    double ppl_p = ppl_of(nll_p, fx.ctx, fx.chunks), ppl_r = ppl_of(nll_r, fx.ctx, fx.chunks);
    long tokens = (long)fx.chunks * (fx.ctx - 1);
    printf("figure: held-out PPL over %ld tokens (%d chunks of %d): transformers %.6f, dsv4 plain %.6f "
           "(%+.2e rel), dsv4 release %.6f (%+.3f%% vs plain)\n", tokens, fx.chunks, fx.ctx, fx.tf_ppl, ppl_p,
           ppl_p / fx.tf_ppl - 1.0, ppl_r, 100.0 * (ppl_r / ppl_p - 1.0));
    printf("figure: release vs plain KL(plain || release) = %.3e nats/token (mean over %ld positions)\n", kl,
           tokens);
    for (int k = 0; k < fx.chunks; k++)
        assert_true(fabs(nll_p[k] / fx.tf_chunk_nll[k] - 1.0) <= 1e-3);
    assert_true(fabs(ppl_p / fx.tf_ppl - 1.0) <= 1e-3);
    assert_true(fabs(ppl_r / ppl_p - 1.0) <= 1e-2);
    assert_true(kl > 0.0 && kl < 0.05);
    dsv4_engine_close(plain);
    dsv4_engine_close(release);
}

/* The same weights with index_topk raised past every compressed entry (dense
 * CSA): what the trained indexer's top-k selection costs in perplexity. */
static void test_indexer_topk_vs_dense(void **state)
{
    (void)state;
    char dir[] = "/tmp/dsv4-dense-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[512], target[512];
    const char *links[] = { "model.safetensors", "tokenizer.json", "tokenizer_config.json" };
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, links[i]);
        assert_non_null(realpath(MODEL, target));
        strncat(target, "/", sizeof target - strlen(target) - 1);
        strncat(target, links[i], sizeof target - strlen(target) - 1);
        assert_int_equal(symlink(target, path), 0);
    }
    json_error_t je;
    json_t *cfg = json_load_file(MODEL "/config.json", 0, &je);
    assert_non_null(cfg);
    long topk = (long)json_integer_value(json_object_get(cfg, "index_topk"));
    assert_true(topk > 0 && topk < fx.ctx / 8);
    json_object_set_new(cfg, "index_topk", json_integer(fx.ctx));
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(json_dump_file(cfg, path, JSON_INDENT(2)), 0);
    json_decref(cfg);

    dsv4_engine *sparse = open_engine(MODEL, DSV4_NUMERICS_PLAIN);
    dsv4_engine *dense = open_engine(dir, DSV4_NUMERICS_PLAIN);
    assert_non_null(sparse);
    assert_non_null(dense);
    double nll_s[8], nll_d[8], kl;
    /* half a chunk keeps the test short; its last queries still see 256 entries, 4x top-k */
    int ctx = fx.ctx / 2;
    score(dense, sparse, ctx, 1, nll_d, nll_s, &kl);
    double ppl_d = ppl_of(nll_d, ctx, 1), ppl_s = ppl_of(nll_s, ctx, 1);
    printf("figure: CSA indexer top-%ld vs dense (every compressed entry, up to %d), first %d tokens: PPL %.4f "
           "vs %.4f (%+.2f%%), KL(dense || top-k) %.3e nats/token\n", topk, ctx / 4, ctx, ppl_s, ppl_d,
           100.0 * (ppl_s / ppl_d - 1.0), kl);
    /* a trained indexer keeps what matters: top-k costs little against dense */
    assert_true(ppl_s / ppl_d - 1.0 < 0.05);
    dsv4_engine_close(sparse);
    dsv4_engine_close(dense);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, links[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
}

/* The recall figure comes from the trainer (transformers, on the exported
 * weights): the engine's selection is checked through the perplexity parity. */
static void test_report_indexer_recall(void **state)
{
    (void)state;
    json_error_t je;
    json_t *root = json_load_file(MODEL "/eval/eval.json", 0, &je);
    assert_non_null(root);
    json_t *r = json_object_get(root, "indexer_recall_topk");
    json_t *per = json_object_get(r, "per_csa_layer");
    assert_true(json_array_size(per) > 0);
    printf("figure: indexer top-%lld recall vs dense main-attention ranking (transformers, eval.json):",
           (long long)json_integer_value(json_object_get(r, "k")));
    for (size_t i = 0; i < json_array_size(per); i++)
        printf(" %.3f", json_real_value(json_array_get(per, i)));
    printf("\n");
    json_decref(root);
}

/* Greedy decoding in plain numerics reproduces transformers' greedy sample token for token. */
static void test_greedy_sample_matches(void **state)
{
    (void)state;
    json_error_t je;
    json_t *root = json_load_file(MODEL "/eval/eval.json", 0, &je);
    assert_non_null(root);
    json_t *sm = json_object_get(json_object_get(root, "samples"), "plain");
    const char *prompt = json_string_value(json_object_get(sm, "prompt"));
    json_t *want = json_object_get(sm, "continuation_ids");
    assert_non_null(prompt);
    int n_want = (int)json_array_size(want);
    assert_true(n_want > 10);
    dsv4_tokenizer *tok = NULL;
    dsv4_error err;
    assert_int_equal(dsv4_tokenizer_open(&tok, MODEL, &err), 0);
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(dsv4_tokenize(tok, prompt, strlen(prompt), DSV4_TOKENIZE_BOS, &ids, &n, &err), 0);
    dsv4_engine *e = open_engine(MODEL, DSV4_NUMERICS_PLAIN);
    assert_non_null(e);
    dsv4_session *s = NULL;
    assert_int_equal(dsv4_session_new(&s, e, (int)n + n_want, &err), 0);
    int vocab = dsv4_engine_vocab_size(e);
    float *logits = malloc(sizeof *logits * vocab);
    assert_non_null(logits);
    assert_int_equal(dsv4_session_feed(s, ids, (int)n, logits, 0, &err), 0);
    int same = 0;
    for (int i = 0; i < n_want; i++) {
        int32_t best = 0;
        for (int v = 1; v < vocab; v++)
            if (logits[v] > logits[best])
                best = v;
        if (best != (int32_t)json_integer_value(json_array_get(want, i)))
            break;
        same++;
        assert_int_equal(dsv4_session_feed(s, &best, 1, logits, 0, &err), 0);
    }
    printf("figure: greedy sample, plain numerics: %d of %d tokens equal to transformers'\n", same, n_want);
    assert_int_equal(same, n_want);
    free(logits);
    free(ids);
    dsv4_session_free(s);
    dsv4_engine_close(e);
    dsv4_tokenizer_close(tok);
    json_decref(root);
}

int main(void)
{
    if (access(MODEL "/config.json", R_OK) != 0) {
        fprintf(stderr, "%s is missing\n", MODEL);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_matches),
        cmocka_unit_test(test_heldout_perplexity),
        cmocka_unit_test(test_indexer_topk_vs_dense),
        cmocka_unit_test(test_report_indexer_recall),
        cmocka_unit_test(test_greedy_sample_matches),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
