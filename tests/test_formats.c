/* Number formats: every expected value here comes from an independent
 * formula (bit fields + ldexp, brute-force nearest search) or by hand. */
#include "test_util.h"

#include <math.h>

#include "../simd/formats.h"

static uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* OCP e4m3fn from the bit fields: bias 7, subnormals, S.1111.111 NaN. */
static double e4m3_expected(int c)
{
    int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
    if (e == 15 && m == 7)
        return NAN;
    double v = e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
    return s ? -v : v;
}

/* Nearest e4m3 code of v by exhaustive search over the finite codes,
 * ties to the even code, saturating. Independent of fmt_f32_to_e4m3. */
static int e4m3_nearest(double v)
{
    int sign = v < 0 || (v == 0 && signbit(v)) ? 0x80 : 0;
    double a = fabs(v);
    if (a >= 448)
        return sign | 0x7e;
    int best = 0;
    for (int c = 1; c <= 0x7e; c++) {
        double d = fabs(e4m3_expected(c) - a), db = fabs(e4m3_expected(best) - a);
        if (d < db || (d == db && (c & 1) == 0))
            best = c;
    }
    return sign | best;
}

static void test_e4m3_decode_all_codes(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        float got = fmt_e4m3_to_f32((uint8_t)c);
        double want = e4m3_expected(c);
        if (isnan(want)) {
            assert_true(isnan(got));
            continue;
        }
        assert_true((double)got == want);
        assert_int_equal(signbit(got) != 0, (c & 0x80) != 0);
    }
    assert_true(fmt_e4m3_to_f32(0x7e) == 448.0f);
    assert_true(fmt_e4m3_to_f32(0x01) == 0x1p-9f);
    assert_true(fmt_e4m3_to_f32(0x08) == 0x1p-6f);
    assert_true(isnan(fmt_e4m3_to_f32(0x7f)) && isnan(fmt_e4m3_to_f32(0xff)));
}

static void test_e4m3_roundtrip_finite_codes(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) == 0x7f)
            continue;
        assert_int_equal(fmt_f32_to_e4m3(fmt_e4m3_to_f32((uint8_t)c)), c);
    }
    assert_int_equal(fmt_f32_to_e4m3(0.0f), 0x00);
    assert_int_equal(fmt_f32_to_e4m3(-0.0f), 0x80);
}

static void test_e4m3_rne_midpoints(void **state)
{
    (void)state;
    for (int sign = 0; sign <= 0x80; sign += 0x80)
        for (int c = 0; c < 0x7e; c++) {
            double lo = e4m3_expected(c), hi = e4m3_expected(c + 1);
            double mid = (lo + hi) / 2; /* <= 5 significant bits: exact in f32 */
            int even = (c & 1) ? c + 1 : c;
            float fm = (float)(sign ? -mid : mid);
            assert_int_equal(fmt_f32_to_e4m3(fm), sign | even);
            /* one f32 ulp either side of the tie leaves it */
            float below = nextafterf(fm, 0.0f), above = nextafterf(fm, sign ? -INFINITY : INFINITY);
            assert_int_equal(fmt_f32_to_e4m3(below), sign | c);
            assert_int_equal(fmt_f32_to_e4m3(above), sign | (c + 1));
        }
    /* a few hand cases */
    assert_int_equal(fmt_f32_to_e4m3(0x1p-10f), 0x00);      /* half the smallest subnormal: tie to 0 */
    assert_int_equal(fmt_f32_to_e4m3(3 * 0x1p-10f), 0x02);  /* 1.5 * 2^-9 -> 2 * 2^-9 */
    assert_int_equal(fmt_f32_to_e4m3(17.0f), 0x58);          /* 16 and 18: tie to 16 */
    assert_int_equal(fmt_f32_to_e4m3(19.0f), 0x5a);          /* 18 and 20: tie to 20 */
}

static void test_e4m3_saturation_and_nan(void **state)
{
    (void)state;
    assert_int_equal(fmt_f32_to_e4m3(448.0f), 0x7e);
    assert_int_equal(fmt_f32_to_e4m3(463.9f), 0x7e);
    assert_int_equal(fmt_f32_to_e4m3(464.0f), 0x7e);
    assert_int_equal(fmt_f32_to_e4m3(1e6f), 0x7e);
    assert_int_equal(fmt_f32_to_e4m3(INFINITY), 0x7e);
    assert_int_equal(fmt_f32_to_e4m3(-500.0f), 0xfe);
    assert_int_equal(fmt_f32_to_e4m3(-INFINITY), 0xfe);
    assert_int_equal(fmt_f32_to_e4m3(NAN) & 0x7f, 0x7f);
    assert_int_equal(fmt_f32_to_e4m3(1e-30f), 0x00);
    assert_int_equal(fmt_f32_to_e4m3(-1e-30f), 0x80);
}

static void test_e4m3_encode_random_vs_search(void **state)
{
    (void)state;
    uint64_t seed = 0x1234;
    for (int i = 0; i < 20000; i++) {
        float v = test_rand_f(&seed) * ldexpf(1.0f, (int)(test_rand_u64(&seed) % 24) - 14);
        assert_int_equal(fmt_f32_to_e4m3(v), e4m3_nearest(v));
    }
}

static void test_e8m0(void **state)
{
    (void)state;
    assert_true(fmt_e8m0_to_f32(127) == 1.0f);
    assert_true(fmt_e8m0_to_f32(128) == 2.0f);
    assert_true(fmt_e8m0_to_f32(120) == 0x1p-7f);
    assert_true(fmt_e8m0_to_f32(254) == 0x1p127f);
    assert_true(fmt_e8m0_to_f32(1) == 0x1p-126f);
    assert_true(fmt_e8m0_to_f32(0) == 0x1p-127f);
    assert_true(isnan(fmt_e8m0_to_f32(255)));
}

static void test_e2m1_table(void **state)
{
    (void)state;
    const float want[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
    for (int c = 0; c < 16; c++) {
        assert_true(fmt_e2m1_to_f32((uint8_t)c) == want[c]);
        assert_int_equal(signbit(fmt_e2m1_to_f32((uint8_t)c)) != 0, c >= 8);
        assert_true(fmt_e2m1_to_f32((uint8_t)(c | 0xf0)) == want[c]); /* high bits ignored */
    }
}

static void test_bf16(void **state)
{
    (void)state;
    assert_int_equal(fmt_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(fmt_f32_to_bf16(-2.0f), 0xc000);
    assert_true(fmt_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(fmt_bf16_to_f32(0x4049) == 3.140625f);
    /* bf16 has 7 mantissa bits: at 1.0 the ulp is 2^-7 */
    assert_true(fmt_round_bf16(1.0f + 0x1p-8f) == 1.0f);                   /* tie, to even */
    assert_true(fmt_round_bf16(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);     /* tie, to even (up) */
    assert_true(fmt_round_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
    assert_true(fmt_round_bf16(1.0f + 0x1p-8f - 0x1p-20f) == 1.0f);
    assert_true(fmt_round_bf16(-(1.0f + 3 * 0x1p-8f)) == -(1.0f + 0x1p-6f));
    assert_int_equal(fmt_f32_to_bf16(float_of(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds to inf */
    assert_int_equal(fmt_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(fmt_f32_to_bf16(-INFINITY), 0xff80);
    /* NaN stays NaN, even one whose payload is only in the dropped bits */
    assert_true(isnan(fmt_bf16_to_f32(fmt_f32_to_bf16(float_of(0x7f800001u)))));
    assert_true(isnan(fmt_bf16_to_f32(fmt_f32_to_bf16(float_of(0xffffffffu)))));
    assert_true(isnan(fmt_round_bf16(NAN)));
    /* subnormal tie */
    assert_int_equal(fmt_f32_to_bf16(float_of(0x00008000u)), 0x0000);
    assert_int_equal(fmt_f32_to_bf16(float_of(0x00018000u)), 0x0002);
    float arr[3] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 5.0f};
    fmt_round_bf16_array(arr, 3);
    assert_true(arr[0] == 1.0f && arr[1] == 1.0f + 0x1p-6f && arr[2] == 5.0f);
    /* random: the result is a bf16 value and the nearest one */
    uint64_t seed = 99;
    for (int i = 0; i < 10000; i++) {
        float v = test_rand_f(&seed) * 1000.0f;
        float r = fmt_round_bf16(v);
        assert_int_equal(bits_of(r) & 0xffffu, 0);
        float lo = float_of(bits_of(v) & 0xffff0000u);
        float hi = float_of((bits_of(v) & 0xffff0000u) + 0x10000u);
        assert_true(fabsf(r - v) <= fabsf(lo - v) && fabsf(r - v) <= fabsf(hi - v));
    }
}

/* ---- act_quant / fp4 simulation ---- */

/* Independent reference: the scale from log2 in double of the f32 product
 * amax * (1/448), as the official kernel forms it; q from the search. */
static void act_quant_ref(float *x, size_t n, size_t block)
{
    for (size_t b0 = 0; b0 < n; b0 += block) {
        size_t len = n - b0 < block ? n - b0 : block;
        double amax = 0;
        for (size_t i = 0; i < len; i++)
            amax = fmax(amax, fabs(x[b0 + i]));
        float t = fmaxf((float)amax, 1e-4f) * (1.0f / 448.0f);
        double s = exp2(ceil(log2((double)t)));
        for (size_t i = 0; i < len; i++)
            x[b0 + i] = (float)(e4m3_expected(e4m3_nearest(x[b0 + i] / s)) * s);
    }
}

/* The block {amax, 2^-9 s, 1.5*2^-9 s} comes back as {., 2^-9 s, 2^-8 s} only
 * for the scale s: a larger scale sends the second to 0, a smaller one keeps
 * the third exact. */
static void check_act_scale(float amax, float s)
{
    float x[3] = {amax, 0x1p-9f * s, 1.5f * 0x1p-9f * s};
    fmt_act_quant_sim(x, 3, 3);
    assert_true(x[1] == 0x1p-9f * s);
    assert_true(x[2] == 0x1p-8f * s);
}

static void test_act_quant_scale_rule(void **state)
{
    (void)state;
    check_act_scale(448.0f, 1.0f);
    check_act_scale(449.0f, 2.0f);
    check_act_scale(224.0f, 0.5f);
    check_act_scale(225.0f, 1.0f);
    check_act_scale(896.0f, 2.0f);
    check_act_scale(897.0f, 4.0f);
    check_act_scale(1.0f, 0x1p-8f);      /* 1/448 -> 2^-8 (2^-9 < 1/448 < 2^-8) */
    check_act_scale(1e-9f, 0x1p-22f);    /* floor 1e-4: 1e-4/448 = 2.23e-7 -> 2^-22 */
    check_act_scale(-449.0f, 2.0f);
}

static void test_act_quant_vs_reference_and_properties(void **state)
{
    (void)state;
    uint64_t seed = 7;
    enum { N = 1000 };
    static float x[N], ref[N], once[N];
    const size_t blocks[] = {128, 64, 7};
    for (int trial = 0; trial < 3; trial++) {
        size_t block = blocks[trial];
        for (int i = 0; i < N; i++) {
            /* magnitudes vary per block so scales differ */
            float mag = ldexpf(1.0f, (int)((i / block) % 30) - 15);
            x[i] = test_rand_f(&seed) * mag;
        }
        memcpy(ref, x, sizeof x);
        memcpy(once, x, sizeof x);
        fmt_act_quant_sim(once, N, block);
        act_quant_ref(ref, N, block);
        for (int i = 0; i < N; i++)
            assert_int_equal(bits_of(once[i]), bits_of(ref[i]));
        /* idempotent */
        float twice[N];
        memcpy(twice, once, sizeof once);
        fmt_act_quant_sim(twice, N, block);
        assert_memory_equal(twice, once, sizeof once);
        /* error at most half an e4m3 ulp, in the block's scale */
        for (size_t b0 = 0; b0 < N; b0 += block) {
            size_t len = N - b0 < block ? N - b0 : block;
            double amax = 0;
            for (size_t i = 0; i < len; i++)
                amax = fmax(amax, fabs(x[b0 + i]));
            double s = exp2(ceil(log2(fmax(amax, 1e-4) / 448)));
            for (size_t i = 0; i < len; i++) {
                double v = fabs(x[b0 + i]) / s;
                double ulp = v < 0x1p-6 ? 0x1p-9 : exp2(floor(log2(v)) - 3);
                assert_true(fabs(once[b0 + i] - x[b0 + i]) <= 0.5 * ulp * s);
                /* value is e4m3 * s */
                double q = once[b0 + i] / s;
                assert_true(e4m3_expected(e4m3_nearest(q)) == q);
            }
        }
    }
}

static void check_fp4_scale(float amax, float s)
{
    float x[3] = {amax, 0.5f * s, 0.75f * s};
    fmt_fp4_quant_sim(x, 3, 3);
    assert_true(x[1] == 0.5f * s);
    assert_true(x[2] == 1.0f * s);
}

static void test_fp4_quant_scale_rule(void **state)
{
    (void)state;
    check_fp4_scale(6.0f, 1.0f);
    check_fp4_scale(6.0001f, 2.0f);
    check_fp4_scale(3.0f, 0.5f);
    check_fp4_scale(12.0f, 2.0f);
    check_fp4_scale(13.0f, 4.0f);
    check_fp4_scale(0.0f, 0x1p-126f); /* floor 6*2^-126 */
}

static void test_fp4_quant_ties_and_values(void **state)
{
    (void)state;
    /* amax 6 pins s = 1; then each value goes to its e2m1 neighbour */
    const float in[] = {6, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5, -0.25f, -0.75f, -2.5f, -5,
                        0.3f, 2.6f, 5.1f, 0.74f, -3.4f, 4.9f};
    const float want[] = {6, 0, 1, 1, 2, 2, 4, 4, -0.0f, -1, -2, -4, 0.5f, 3, 6, 0.5f, -3, 4};
    enum { N = sizeof in / sizeof in[0] };
    float x[N];
    memcpy(x, in, sizeof in);
    fmt_fp4_quant_sim(x, N, N);
    for (int i = 0; i < N; i++)
        assert_true(x[i] == want[i]);
    /* random: every result is an e2m1 value times the block scale, idempotent */
    uint64_t seed = 3;
    float y[256], y2[256];
    for (int i = 0; i < 256; i++)
        y[i] = test_rand_f(&seed) * ldexpf(1.0f, i / 32 - 4);
    float orig[256];
    memcpy(orig, y, sizeof y);
    fmt_fp4_quant_sim(y, 256, 32);
    memcpy(y2, y, sizeof y);
    fmt_fp4_quant_sim(y2, 256, 32);
    assert_memory_equal(y, y2, sizeof y);
    for (int b = 0; b < 8; b++) {
        double amax = 0;
        for (int i = 0; i < 32; i++)
            amax = fmax(amax, fabs(orig[b * 32 + i]));
        double s = exp2(ceil(log2(amax / 6)));
        for (int i = 0; i < 32; i++) {
            double q = y[b * 32 + i] / s, v = orig[b * 32 + i] / s;
            int ok = 0;
            for (int c = 0; c < 16; c++)
                ok |= fmt_e2m1_to_f32((uint8_t)c) == q;
            assert_true(ok);
            double step = fabs(v) < 2 ? 0.5 : fabs(v) < 4 ? 1 : 2;
            assert_true(fabs(q - v) <= step / 2);
        }
    }
}

/* ---- KV rows in FP8 (release layout) ---- */

/* Bytes at their places, by hand: dim 130 with a bf16 tail of 2, so one full
 * block of 64 codes and one of 64 more. */
static void test_kv_row_layout(void **state)
{
    (void)state;
    float x[130];
    for (int i = 0; i < 64; i++)
        x[i] = 1.0f;   /* block 0: amax 448 -> scale 2^0, 1.0 is code 0x38 */
    x[5] = -448.0f;
    for (int i = 64; i < 128; i++)
        x[i] = 0.25f;  /* block 1: amax 0.25 -> scale 2^-10 (0.25/448 in (2^-11, 2^-10]) */
    x[128] = 1.0f;     /* bf16 0x3f80 */
    x[129] = -2.0f;    /* bf16 0xc000 */
    uint8_t row[2 * 2 + 128 + 2 + 1];
    assert_int_equal(fmt_kv_row_bytes(130, 2), 2 * 2 + 128 + 2);
    row[sizeof row - 1] = 0xa5; /* the row ends where fmt_kv_row_bytes says */
    fmt_kv_row_encode(row, x, 130, 2);
    assert_int_equal(row[sizeof row - 1], 0xa5);
    assert_int_equal(row[0], 0x80);
    assert_int_equal(row[1], 0x3f);
    assert_int_equal(row[2], 0x00);
    assert_int_equal(row[3], 0xc0);
    assert_int_equal(row[4 + 0], 0x38);
    assert_int_equal(row[4 + 5], 0xfe);  /* -448 */
    assert_int_equal(row[4 + 64], 0x78); /* 0.25 / 2^-10 = 256 = 2^8: exponent field 8 + 7 */
    assert_int_equal(row[4 + 128], 127);
    assert_int_equal(row[4 + 129], 127 - 10);
    for (int i = 0; i < 130; i++)
        assert_true(fmt_kv_row_value(row, 130, 2, i) == x[i]);
}

/* decode(encode(x)) is act_quant_sim (blocks of 64) on the head and bf16
 * rounding on the tail, bit for bit; encoding what decode gave keeps every
 * value (the re-derived scale may halve: then the codes double). */
static void test_kv_row_roundtrip(void **state)
{
    (void)state;
    const int shapes[][2] = {{512, 64}, {64, 16}, {72, 16}, {100, 0}, {37, 37}, {131, 2}, {1, 0}};
    uint64_t seed = 23;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int dim = shapes[si][0], tail = shapes[si][1], head = dim - tail;
        float x[512], sim[512], back[512], again[512];
        uint8_t row[640], row2[640];
        for (int trial = 0; trial < 20; trial++) {
            for (int i = 0; i < dim; i++) {
                float mag = ldexpf(1.0f, (int)((i / 64 + trial) % 24) - 12);
                x[i] = test_rand_f(&seed) * mag;
            }
            if (trial == 1)
                for (int i = 0; i < dim; i++)
                    x[i] = 0.0f;
            memcpy(sim, x, (size_t)dim * sizeof *x);
            fmt_act_quant_sim(sim, (size_t)head, 64);
            for (int i = head; i < dim; i++)
                sim[i] = fmt_round_bf16(sim[i]);
            fmt_kv_row_encode(row, x, dim, tail);
            fmt_kv_row_decode(back, row, dim, tail);
            for (int i = 0; i < dim; i++)
                assert_int_equal(bits_of(back[i]), bits_of(sim[i]));
            fmt_kv_row_encode(row2, back, dim, tail);
            fmt_kv_row_decode(again, row2, dim, tail);
            assert_memory_equal(again, back, (size_t)dim * sizeof *back);
        }
    }
}

/* A NaN makes its block's scale NaN (0xff), so the whole block decodes as
 * NaN; the other blocks keep their values. */
static void test_kv_row_nan(void **state)
{
    (void)state;
    float x[200], back[200];
    for (int i = 0; i < 200; i++)
        x[i] = (float)(i % 7) - 3.0f;
    x[70] = NAN;
    uint8_t row[256];
    fmt_kv_row_encode(row, x, 200, 8);
    assert_int_equal(row[16 + 192 + 1], 0xff);
    fmt_kv_row_decode(back, row, 200, 8);
    for (int i = 0; i < 200; i++)
        assert_true(i >= 64 && i < 128 ? isnan(back[i]) : back[i] == x[i]);
}

/* ---- Hadamard ---- */

static void test_hadamard(void **state)
{
    (void)state;
    const size_t sizes[] = {1, 2, 8, 128, 1024};
    uint64_t seed = 11;
    static float x[1024], y[1024];
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        for (size_t i = 0; i < n; i++)
            x[i] = test_rand_f(&seed);
        memcpy(y, x, n * sizeof *x);
        fmt_hadamard(y, n);
        double norm = 1 / sqrt((double)n);
        for (size_t i = 0; i < n; i++) {
            double ref = 0, mag = 0;
            for (size_t j = 0; j < n; j++) {
                double h = (__builtin_popcountll(i & j) & 1) ? -1 : 1;
                ref += x[j] * h;
                mag += fabs(x[j]);
            }
            assert_true(fabs(y[i] - ref * norm) <= 1e-6 * mag * norm + 1e-7);
        }
        /* H H = n I: applying twice returns the input */
        fmt_hadamard(y, n);
        for (size_t i = 0; i < n; i++)
            assert_true(fabsf(y[i] - x[i]) <= 1e-5f);
    }
    /* n = 2 by hand */
    float z[2] = {3, 1};
    fmt_hadamard(z, 2);
    assert_true(fabsf(z[0] - 4 / sqrtf(2)) < 1e-6f && fabsf(z[1] - 2 / sqrtf(2)) < 1e-6f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e4m3_decode_all_codes),
        cmocka_unit_test(test_e4m3_roundtrip_finite_codes),
        cmocka_unit_test(test_e4m3_rne_midpoints),
        cmocka_unit_test(test_e4m3_saturation_and_nan),
        cmocka_unit_test(test_e4m3_encode_random_vs_search),
        cmocka_unit_test(test_e8m0),
        cmocka_unit_test(test_e2m1_table),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_act_quant_scale_rule),
        cmocka_unit_test(test_act_quant_vs_reference_and_properties),
        cmocka_unit_test(test_fp4_quant_scale_rule),
        cmocka_unit_test(test_fp4_quant_ties_and_values),
        cmocka_unit_test(test_kv_row_layout),
        cmocka_unit_test(test_kv_row_roundtrip),
        cmocka_unit_test(test_kv_row_nan),
        cmocka_unit_test(test_hadamard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
