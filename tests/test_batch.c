/* dsv4_batch_step: stepping several sessions together gives, bit for bit,
 * the logits each session gets stepped alone (every kernel is batch-size
 * invariant and the MoE sums in a fixed expert order), on the oracle
 * fixtures, with sessions at different depths crossing the compression
 * boundaries; and the shared reads show in the byte accounting. Trimming
 * a session's activations changes no result. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dsv4.h"
#include "forward.h" /* the capacity a trim leaves */
#include "test_util.h"

/* One id per line; returns the count (caller frees *out). */
static int load_tokens(const char *path, int32_t **out)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0, cap = 1024;
    int32_t *t = malloc((size_t)cap * sizeof *t);
    long v;
    while (fscanf(f, "%ld", &v) == 1) {
        if (n == cap)
            t = realloc(t, (size_t)(cap *= 2) * sizeof *t);
        t[n++] = (int32_t)v;
    }
    fclose(f);
    *out = t;
    return n;
}

#define N_SESS 3
#define STEPS 12

/* Prompt i: tokens [start[i], start[i] + len[i]) of the fixture; decode feeds the tokens after it. */
static const int start[N_SESS] = {0, 40, 7};
static const int len[N_SESS] = {125, 3, 254}; /* crosses 128 (HCA) and 256 during the steps */

static void run_fixture(const char *dir, dsv4_numerics numerics)
{
    char path[256];
    snprintf(path, sizeof path, "%s/tokens.txt", dir);
    int32_t *tok;
    int n_tok = load_tokens(path, &tok);
    assert_true(n_tok >= 254 + 7 + STEPS + 1);

    dsv4_options opt;
    dsv4_options_default(&opt);
    opt.numerics = numerics;
    dsv4_engine *e;
    dsv4_error err;
    assert_int_equal(dsv4_engine_open(&e, dir, &opt, &err), 0);
    int V = dsv4_engine_vocab_size(e);

    /* Alone: each session prefilled, then stepped one token at a time. */
    float *alone = malloc((size_t)N_SESS * STEPS * V * sizeof(float));
    float *together = malloc((size_t)N_SESS * STEPS * V * sizeof(float));
    for (int i = 0; i < N_SESS; i++) {
        dsv4_session *s;
        assert_int_equal(dsv4_session_new(&s, e, 512, &err), 0);
        assert_int_equal(dsv4_session_feed(s, tok + start[i], len[i], NULL, 0, &err), 0);
        for (int k = 0; k < STEPS; k++)
            assert_int_equal(dsv4_session_feed(s, tok + start[i] + len[i] + k, 1,
                                               alone + ((size_t)k * N_SESS + i) * V, 0, &err), 0);
        dsv4_session_free(s);
    }

    /* Together, each trimmed after its prompt (as dsv4 batch does): the
     * step's scratch is then session 0's decode-sized buffers. */
    dsv4_session *s[N_SESS];
    for (int i = 0; i < N_SESS; i++) {
        assert_int_equal(dsv4_session_new(&s[i], e, 512, &err), 0);
        assert_int_equal(dsv4_session_feed(s[i], tok + start[i], len[i], NULL, 0, &err), 0);
        dsv4_session_trim(s[i]);
    }
    for (int k = 0; k < STEPS; k++) {
        int32_t step_tok[N_SESS];
        for (int i = 0; i < N_SESS; i++)
            step_tok[i] = tok[start[i] + len[i] + k];
        dsv4_stats before;
        dsv4_session_stats(s[0], &before);
        assert_int_equal(dsv4_batch_step(s, step_tok, N_SESS, together + (size_t)k * N_SESS * V, &err), 0);
        dsv4_stats after;
        dsv4_session_stats(s[0], &after);
        assert_true(after.tokens - before.tokens > 0.99 && after.tokens - before.tokens < 1.01);
    }
    for (int i = 0; i < N_SESS; i++)
        assert_int_equal(dsv4_session_position(s[i]), len[i] + STEPS);
    assert_memory_equal(alone, together, (size_t)N_SESS * STEPS * V * sizeof(float));

    /* A batch of one is a decode step. */
    dsv4_session *solo;
    assert_int_equal(dsv4_session_new(&solo, e, 512, &err), 0);
    assert_int_equal(dsv4_session_feed(solo, tok, len[0], NULL, 0, &err), 0);
    assert_int_equal(dsv4_batch_step(&solo, tok + len[0], 1, together, &err), 0);
    assert_memory_equal(alone, together, (size_t)V * sizeof(float));

    /* Bad batches are refused whole: nothing moves. */
    dsv4_session *dup[2] = {s[0], s[0]};
    int32_t two[2] = {1, 2};
    assert_int_equal(dsv4_batch_step(dup, two, 2, NULL, &err), -1);
    assert_non_null(strstr(err.message, "also session 0"));
    int32_t oov[N_SESS] = {1, V, 2};
    assert_int_equal(dsv4_batch_step(s, oov, N_SESS, NULL, &err), -1);
    assert_non_null(strstr(err.message, "session 1"));
    assert_int_equal(dsv4_batch_step(s, oov, 0, NULL, &err), -1);
    for (int i = 0; i < N_SESS; i++)
        assert_int_equal(dsv4_session_position(s[i]), len[i] + STEPS);

    dsv4_session_free(solo);
    for (int i = 0; i < N_SESS; i++)
        dsv4_session_free(s[i]);
    dsv4_engine_close(e);
    free(alone);
    free(together);
    free(tok);
}

static void batch_matches_alone_real_ratios(void **state)
{
    (void)state;
    run_fixture(FIXTURES "/real_ratios", DSV4_NUMERICS_RELEASE);
    run_fixture(FIXTURES "/real_ratios", DSV4_NUMERICS_PLAIN);
}

static void batch_matches_alone_mixed16(void **state)
{
    (void)state;
    run_fixture(FIXTURES "/mixed16", DSV4_NUMERICS_RELEASE);
}

/* dsv4_session_trim frees what a long pass grew, back to a decode step's
 * FORWARD_CHUNK rows, and changes no result: a session trimmed between two
 * long feeds (so the second grows its buffers again) and then stepped gives
 * the logits of one never trimmed. */
static void trim_frees_and_keeps_results(void **state)
{
    (void)state;
    int32_t *tok;
    int n_tok = load_tokens(FIXTURES "/real_ratios/tokens.txt", &tok);
    assert_true(n_tok >= 254 + 100 + 1);
    dsv4_engine *e;
    dsv4_error err;
    assert_int_equal(dsv4_engine_open(&e, FIXTURES "/real_ratios", NULL, &err), 0);
    int V = dsv4_engine_vocab_size(e);
    float *kept = malloc(2 * (size_t)V * sizeof(float)), *trimmed = malloc(2 * (size_t)V * sizeof(float));
    dsv4_session *a, *b;
    assert_int_equal(dsv4_session_new(&a, e, 512, &err), 0);
    assert_int_equal(dsv4_session_new(&b, e, 512, &err), 0);
    dsv4_session_trim(b); /* nothing grown yet: nothing to do */
    assert_int_equal(forward_state_capacity(b->state), FORWARD_CHUNK);
    assert_int_equal(dsv4_session_feed(a, tok, 254, NULL, 0, &err), 0);
    assert_int_equal(dsv4_session_feed(b, tok, 254, NULL, 0, &err), 0);
    assert_int_equal(forward_state_capacity(b->state), 254);
    dsv4_session_trim(b);
    assert_int_equal(forward_state_capacity(b->state), FORWARD_CHUNK);
    assert_int_equal(dsv4_session_feed(a, tok + 254, 100, kept, 0, &err), 0);
    assert_int_equal(dsv4_session_feed(b, tok + 254, 100, trimmed, 0, &err), 0);
    assert_int_equal(forward_state_capacity(b->state), 100);
    dsv4_session_trim(b);
    assert_int_equal(dsv4_batch_step(&a, tok + 354, 1, kept + V, &err), 0);
    assert_int_equal(dsv4_batch_step(&b, tok + 354, 1, trimmed + V, &err), 0);
    assert_memory_equal(kept, trimmed, 2 * (size_t)V * sizeof(float));
    dsv4_session_trim(NULL);
    dsv4_session_free(a);
    dsv4_session_free(b);
    dsv4_engine_close(e);
    free(kept);
    free(trimmed);
    free(tok);
}

/* Weight bytes per token: a batch of 3 shares every dense matrix, so it reads
 * less per token than one session alone, but more than a third (each session
 * routes its own experts, and the embedding rows are per token). */
static void batch_shares_weight_reads(void **state)
{
    (void)state;
    dsv4_engine *e;
    dsv4_error err;
    assert_int_equal(dsv4_engine_open(&e, FIXTURES "/real_ratios", NULL, &err), 0);
    dsv4_session *s[N_SESS];
    int32_t t3[N_SESS] = {5, 9, 77};
    for (int i = 0; i < N_SESS; i++) {
        assert_int_equal(dsv4_session_new(&s[i], e, 64, &err), 0);
        dsv4_session_set_profiling(s[i], 1);
    }
    assert_int_equal(dsv4_session_feed(s[0], t3, 1, NULL, 0, &err), 0);
    dsv4_stats one;
    dsv4_session_stats(s[0], &one);
    assert_true(one.tokens == 1 && one.weight_bytes > 0 && one.flops > 0 && one.seconds > 0);
    double parts = 0;
    for (int p = 0; p < DSV4_PROF_COUNT; p++) {
        assert_true(one.part_seconds[p] >= -1e-9);
        parts += one.part_seconds[p];
    }
    assert_true(parts > 0.999 * one.seconds && parts < 1.001 * one.seconds);
    assert_true(one.part_seconds[DSV4_PROF_MOE_ROUTED] > 0 && one.part_seconds[DSV4_PROF_ATTN_CSA] > 0);

    for (int i = 0; i < N_SESS; i++)
        dsv4_session_stats_reset(s[i]);
    assert_int_equal(dsv4_batch_step(s, t3, N_SESS, NULL, &err), 0);
    double bytes = 0, toks = 0;
    for (int i = 0; i < N_SESS; i++) {
        dsv4_stats st;
        dsv4_session_stats(s[i], &st);
        bytes += st.weight_bytes;
        toks += st.tokens;
    }
    assert_true(toks > 2.99 && toks < 3.01);
    assert_true(bytes / toks < 0.9 * one.weight_bytes);
    assert_true(bytes / toks > one.weight_bytes / N_SESS);
    for (int i = 0; i < N_SESS; i++)
        dsv4_session_free(s[i]);
    dsv4_engine_close(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(batch_matches_alone_real_ratios),
        cmocka_unit_test(batch_matches_alone_mixed16),
        cmocka_unit_test(batch_shares_weight_reads),
        cmocka_unit_test(trim_frees_and_keeps_results),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
