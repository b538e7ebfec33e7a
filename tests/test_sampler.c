/* The sampler: greedy is argmax, sampling follows softmax(logits/T), top-p
 * keeps only the nucleus, and a seed fixes the stream. */
#include <math.h>

#include "test_util.h"
#include "dsv4.h"

static void test_greedy_is_argmax_with_low_tie(void **state)
{
    (void)state;
    dsv4_sampler *s;
    dsv4_error err;
    assert_int_equal(dsv4_sampler_new(&s, 5, 0.0f, 1.0f, 7, &err), 0);
    const float logits[5] = { 0.5f, 3.0f, -1.0f, 3.0f, 2.9f };
    assert_int_equal(dsv4_sampler_pick(s, logits), 1);
    dsv4_sampler_free(s);
}

/* Frequencies over many draws agree with softmax(logits / T) within 5 sigma. */
static void test_sampling_follows_softmax(void **state)
{
    (void)state;
    const float logits[4] = { 1.0f, 2.0f, 0.0f, 1.5f };
    const float temp = 0.7f;
    double p[4], z = 0.0;
    for (int i = 0; i < 4; i++)
        z += p[i] = exp(logits[i] / temp);
    dsv4_sampler *s;
    dsv4_error err;
    assert_int_equal(dsv4_sampler_new(&s, 4, temp, 1.0f, 42, &err), 0);
    const int draws = 200000;
    int count[4] = { 0 };
    for (int i = 0; i < draws; i++)
        count[dsv4_sampler_pick(s, logits)]++;
    for (int i = 0; i < 4; i++) {
        double expect = p[i] / z * draws, sigma = sqrt(expect * (1 - p[i] / z));
        assert_true(fabs(count[i] - expect) < 5 * sigma);
    }
    dsv4_sampler_free(s);
}

/* With top_p = 0.5 only the tokens needed to reach half the mass can appear. */
static void test_top_p_keeps_only_the_nucleus(void **state)
{
    (void)state;
    /* probabilities 0.4, 0.3, 0.2, 0.1 at T = 1 */
    const float logits[4] = { logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f) };
    dsv4_sampler *s;
    dsv4_error err;
    assert_int_equal(dsv4_sampler_new(&s, 4, 1.0f, 0.5f, 3, &err), 0);
    int count[4] = { 0 };
    for (int i = 0; i < 20000; i++)
        count[dsv4_sampler_pick(s, logits)]++;
    assert_int_equal(count[2] + count[3], 0);
    assert_true(count[0] > count[1] && count[1] > 0); /* 4:3 inside the nucleus */
    dsv4_sampler_free(s);
}

static void test_seed_fixes_the_stream(void **state)
{
    (void)state;
    float logits[64];
    for (int i = 0; i < 64; i++)
        logits[i] = (float)((i * 37) % 11) * 0.3f;
    dsv4_sampler *a, *b, *c;
    dsv4_error err;
    assert_int_equal(dsv4_sampler_new(&a, 64, 1.0f, 0.9f, 5, &err), 0);
    assert_int_equal(dsv4_sampler_new(&b, 64, 1.0f, 0.9f, 5, &err), 0);
    assert_int_equal(dsv4_sampler_new(&c, 64, 1.0f, 0.9f, 6, &err), 0);
    int differs = 0;
    for (int i = 0; i < 100; i++) {
        int32_t x = dsv4_sampler_pick(a, logits), y = dsv4_sampler_pick(b, logits), w = dsv4_sampler_pick(c, logits);
        assert_int_equal(x, y);
        differs += x != w;
    }
    assert_true(differs > 0);
    dsv4_sampler_free(a);
    dsv4_sampler_free(b);
    dsv4_sampler_free(c);
}

static void test_bad_parameters_are_refused(void **state)
{
    (void)state;
    dsv4_sampler *s;
    dsv4_error err;
    assert_int_equal(dsv4_sampler_new(&s, 4, -1.0f, 1.0f, 0, &err), -1);
    assert_non_null(strstr(err.message, "temperature"));
    assert_int_equal(dsv4_sampler_new(&s, 4, 1.0f, 0.0f, 0, &err), -1);
    assert_non_null(strstr(err.message, "top-p"));
    assert_int_equal(dsv4_sampler_new(&s, 0, 1.0f, 1.0f, 0, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax_with_low_tie),
        cmocka_unit_test(test_sampling_follows_softmax),
        cmocka_unit_test(test_top_p_keeps_only_the_nucleus),
        cmocka_unit_test(test_seed_fixes_the_stream),
        cmocka_unit_test(test_bad_parameters_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
