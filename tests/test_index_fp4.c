/* The lightning indexer over FP4 keys (kernels.h index_scores_fp4 and its
 * packing helpers in formats.h): the scalar reference against a by-hand
 * computation of the contract in double precision, then every kernel table
 * this CPU has bitwise against the scalar reference, at the V4 shape and at
 * odd sizes. Also built for aarch64 and run under qemu (tests/test_kernels_neon.sh). */
#include "test_util.h"

#include <math.h>

#include "../simd/formats.h"
#include "../simd/kernels.h"

static const double e2m1_value[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};
static const int8_t e2m1_twice[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static int small_shapes(void)
{
    return getenv("DSV4_TEST_SMALL") != NULL;
}

/* Round to 8 significant bits, ties to even (bf16), for normal finite x. */
static float bf16_by_hand(double x)
{
    if (x == 0)
        return (float)x;
    int e;
    frexp(x, &e);
    return (float)ldexp(nearbyint(ldexp(x, 8 - e)), e - 8);
}

static size_t groups_of(int n_keys)
{
    return ((size_t)n_keys + INDEX_FP4_GROUP - 1) / INDEX_FP4_GROUP;
}

/* Key s, column col, read back from the grouped layout as kernels.h describes it. */
static double layout_key_value(const uint8_t *keys, const uint8_t *ks, int s, int dim, int col)
{
    const uint8_t *g = keys + (size_t)(s / 16) * dim * 8;
    int k = s % 16;
    uint8_t byte = g[64 * (col / 8) + 4 * k + col % 4];
    int code = col % 8 < 4 ? byte & 15 : byte >> 4;
    int scale = ks[(size_t)(s / 16) * dim / 2 + 16 * (col / 32) + k];
    return e2m1_value[code] * ldexp(1.0, scale - 127);
}

/* FP4-simulated values: random, each block of 32 scaled by 2^[lo, hi]. */
static float *fp4_values(size_t n, int lo, int hi, uint64_t *seed)
{
    float *x = malloc(n * sizeof *x);
    for (size_t b = 0; b < n; b += 32) {
        int e = lo + (int)(test_rand_u64(seed) % (uint64_t)(hi - lo + 1));
        for (size_t i = b; i < b + 32; i++)
            x[i] = ldexpf(test_rand_f(seed) * 3.0f, e);
    }
    fmt_fp4_quant_sim(x, n, 32);
    return x;
}

/* ---- packing ---- */

static void test_quant_codes_by_hand(void **state)
{
    (void)state;
    float x[32] = {3.0f, -1.5f, 0.7f, -0.1f, 0.2f};
    uint8_t codes[32], scale;
    fmt_fp4_quant_codes(x, 32, 32, codes, &scale);
    /* amax 3: scale 2^ceil(log2(3/6)) = 2^-1 (e8m0 126); x/scale = 6, -3, 1.4 -> 1.5, -0.2 -> -0, 0.4 -> 0.5 */
    assert_int_equal(scale, 126);
    assert_int_equal(codes[0], 7);
    assert_int_equal(codes[1], 8 | 5);
    assert_int_equal(codes[2], 3);
    assert_int_equal(codes[3] & 7, 0);
    assert_int_equal(codes[4], 1);
    assert_int_equal(codes[5] & 7, 0);

    int8_t qc[32];
    float qs;
    fmt_index_query_pack(qc, &qs, x, 32);
    assert_true(qs == 0.5f);
    assert_int_equal(qc[0], 12);
    assert_int_equal(qc[1], -6);
    assert_int_equal(qc[2], 3);
    assert_int_equal(qc[4], 1);
}

/* Keys packed from raw floats read back as their FP4 simulation; packing the
 * simulated values keeps them; the query's codes and scales too. */
static void test_pack_round_trip(void **state)
{
    (void)state;
    uint64_t seed = 7;
    const int dims[] = {32, 128, 256};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        int dim = dims[d], n = 37;
        float *raw = malloc((size_t)n * dim * sizeof *raw);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            raw[i] = ldexpf(test_rand_f(&seed), (int)(test_rand_u64(&seed) % 40) - 30);
        float *sim = malloc((size_t)n * dim * sizeof *sim);
        memcpy(sim, raw, (size_t)n * dim * sizeof *sim);
        fmt_fp4_quant_sim(sim, (size_t)n * dim, 32);
        size_t kb = groups_of(n) * INDEX_FP4_GROUP_BYTES(dim), sb = groups_of(n) * INDEX_FP4_GROUP_SCALES(dim);
        uint8_t *k1 = calloc(kb, 1), *s1 = calloc(sb, 1), *k2 = calloc(kb, 1), *s2 = calloc(sb, 1);
        for (int s = 0; s < n; s++) {
            fmt_index_key_pack(k1, s1, (size_t)s, dim, raw + (size_t)s * dim);
            fmt_index_key_pack(k2, s2, (size_t)s, dim, sim + (size_t)s * dim);
        }
        for (int s = 0; s < n; s++)
            for (int i = 0; i < dim; i++)
                assert_true(layout_key_value(k1, s1, s, dim, i) == (double)sim[(size_t)s * dim + i]);
        for (int s = 0; s < n; s++)
            for (int b = 0; b < dim / 32; b++) {
                uint8_t e = s1[(size_t)(s / 16) * dim / 2 + 16 * b + s % 16];
                assert_true(e >= 1 && e <= 254);
            }
        /* re-quantizing may pick a smaller scale (a block whose largest code
         * is under 4): other bytes, the same values */
        for (int s = 0; s < n; s++)
            for (int i = 0; i < dim; i++)
                assert_true(layout_key_value(k2, s2, s, dim, i) == (double)sim[(size_t)s * dim + i]);

        int8_t *qc = malloc((size_t)n * dim);
        float *qs = malloc((size_t)n * dim / 32 * sizeof *qs);
        fmt_index_query_pack(qc, qs, raw, (size_t)n * dim);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            assert_true((double)qc[i] * 0.5 * qs[i / 32] == (double)sim[i]);
        free(qc);
        free(qs);
        free(k1);
        free(s1);
        free(k2);
        free(s2);
        free(raw);
        free(sim);
    }
}

/* ---- the scalar reference against the contract by hand ---- */

/* 1 key of ones, heads: q = (0.5, ...) gives dot 16 (w 0.5: 8); q = -1 gives a
 * negative dot (ReLU: 0); q = (6, 0.5, 0...) gives 6.5, times the bf16 of 1/3
 * (0.333984375) is 2.1708984375, which bf16 rounds to 2.171875. */
static void test_scalar_by_hand(void **state)
{
    (void)state;
    const int dim = 32;
    float key[32], q[3][32];
    for (int i = 0; i < 32; i++) {
        key[i] = 1.0f;
        q[0][i] = 0.5f;
        q[1][i] = -1.0f;
        q[2][i] = i == 0 ? 6.0f : i == 1 ? 0.5f : 0.0f;
    }
    uint8_t keys[INDEX_FP4_GROUP_BYTES(32)] = {0}, ks[INDEX_FP4_GROUP_SCALES(32)];
    memset(ks, 127, sizeof ks);
    fmt_index_key_pack(keys, ks, 0, dim, key);
    int8_t qc[3 * 32];
    float qs[3], score = -1.0f;
    fmt_index_query_pack(qc, qs, &q[0][0], 3 * 32);
    const float w_half[1] = {0.5f}, w3[3] = {0.0f, 1.0f, 0.333984375f};
    kernels_scalar()->index_scores_fp4(&score, qc, qs, w_half, keys, ks, 1, 1, dim);
    assert_true(score == 8.0f);
    kernels_scalar()->index_scores_fp4(&score, qc, qs, w3, keys, ks, 1, 3, dim);
    assert_true(score == 2.171875f);
}

/* Double precision, step by step as kernels.h states it, from the float values
 * (the block dots and every sum below are exact in double at these scales, so
 * each (float) conversion is the one fp32 rounding the contract makes). */
static void check_scalar_vs_by_hand(int n_keys, int n_heads, int dim, uint64_t seed)
{
    int nb = dim / 32;
    float *K = fp4_values((size_t)n_keys * dim, -5, 2, &seed);
    float *Q = fp4_values((size_t)n_heads * dim, -4, 3, &seed);
    float *w = malloc((size_t)n_heads * sizeof *w);
    for (int h = 0; h < n_heads; h++)
        w[h] = bf16_by_hand(test_rand_f(&seed) * 0.25);
    uint8_t *keys = calloc(groups_of(n_keys) * INDEX_FP4_GROUP_BYTES(dim), 1);
    uint8_t *ks = calloc(groups_of(n_keys) * INDEX_FP4_GROUP_SCALES(dim), 1);
    for (int s = 0; s < n_keys; s++)
        fmt_index_key_pack(keys, ks, (size_t)s, dim, K + (size_t)s * dim);
    int8_t *qc = malloc((size_t)n_heads * dim);
    float *qs = malloc((size_t)n_heads * nb * sizeof *qs);
    fmt_index_query_pack(qc, qs, Q, (size_t)n_heads * dim);
    float *got = malloc((size_t)n_keys * sizeof *got);
    kernels_scalar()->index_scores_fp4(got, qc, qs, w, keys, ks, n_keys, n_heads, dim);
    int positive = 0, clipped = 0;
    for (int s = 0; s < n_keys; s++) {
        float acc = 0.0f;
        for (int h = 0; h < n_heads; h++) {
            float dot = 0.0f;
            for (int b = 0; b < nb; b++) {
                double blk = 0;
                for (int i = 32 * b; i < 32 * b + 32; i++)
                    blk += (double)Q[(size_t)h * dim + i] * K[(size_t)s * dim + i];
                dot = (float)(dot + blk);
            }
            positive += dot > 0;
            clipped += dot < 0;
            float r = bf16_by_hand(dot > 0 ? dot : 0);
            acc = (float)((double)acc + bf16_by_hand((double)r * w[h]));
        }
        float want = bf16_by_hand(acc);
        if (memcmp(&got[s], &want, sizeof want) != 0) {
            print_error("key %d of %d (%d heads, dim %d): scalar %.9g, by hand %.9g\n", s, n_keys, n_heads, dim,
                        got[s], want);
            fail();
        }
    }
    assert_true(positive > 0 && clipped > 0); /* both sides of the ReLU were taken */
    free(K);
    free(Q);
    free(w);
    free(keys);
    free(ks);
    free(qc);
    free(qs);
    free(got);
}

static void test_scalar_vs_by_hand(void **state)
{
    (void)state;
    check_scalar_vs_by_hand(37, 3, 64, 11);
    check_scalar_vs_by_hand(20, 17, 32, 12);
    check_scalar_vs_by_hand(5, 1, 128, 13);
    check_scalar_vs_by_hand(48, 64, 128, 14);
    check_scalar_vs_by_hand(9, 4, 96, 15);
}

/* ---- every table bitwise against scalar ---- */

/* How the scales are drawn: each kernel may take shortcuts where every
 * scale is a power of two in a safe range, or where a vector's block
 * scales are close (as for real, Hadamard-rotated keys and queries: the
 * avx512 path then takes one integer dot per head), so all kinds are tested.
 * SCALES_NEAR: each key's and each head's block exponents within 3 of
 * their least, except one key in 16 groups (4 apart: that pass goes the
 * general way). SCALES_NEAR_LOW: the same with every dot near 2^-123, so
 * products with the weights approach 2^-126 and head sums with mixed signs
 * go subnormal; SCALES_NEAR_TINY with dots near 2^-135, where small ones
 * are subnormal and round differently (the shortcut must not be taken). */
enum { SCALES_POW2, SCALES_ANY, SCALES_EXTREME, SCALES_NEAR, SCALES_NEAR_LOW, SCALES_NEAR_TINY };

static void check_tables_bitwise(int n_keys, int n_heads, int dim, int scales, uint64_t seed)
{
    int nb = dim / 32;
    size_t kb = groups_of(n_keys) * INDEX_FP4_GROUP_BYTES(dim), sb = groups_of(n_keys) * INDEX_FP4_GROUP_SCALES(dim);
    uint8_t *keys = malloc(kb), *ks = malloc(sb);
    for (size_t i = 0; i < kb; i++)
        keys[i] = (uint8_t)test_rand_u64(&seed);
    int near = scales >= SCALES_NEAR, low = scales >= SCALES_NEAR_LOW;
    int key_base[INDEX_FP4_GROUP] = {0};
    for (size_t i = 0; i < sb; i++) {
        int slot = (int)(i / (size_t)(dim / 2)) * 16 + (int)(i % 16);
        int extreme = scales == SCALES_EXTREME && (slot / 16) % 3 == 1;
        uint8_t e = extreme ? (uint8_t)(i & 2 ? 1 + test_rand_u64(&seed) % 8 : 246 + test_rand_u64(&seed) % 9)
                            : (uint8_t)(127 - 30 + test_rand_u64(&seed) % 39);
        if (near) {
            /* block 0 of a group draws each key's base; later blocks add 0..3 (4 for one key in five groups) */
            int block = (int)(i % (size_t)(dim / 2)) / 16, k = (int)(i % 16);
            if (block == 0)
                key_base[k] = low ? 66 : 127 - 20 + (int)(test_rand_u64(&seed) % 21);
            int spread = (slot / 16) % 16 == 2 && k == 7 && block == 1 ? 4 : (int)(test_rand_u64(&seed) % 4);
            e = (uint8_t)(key_base[k] + (block == 0 ? 0 : spread));
        }
        ks[i] = slot < n_keys ? e : (uint8_t)(i & 1 ? 255 : 0);
    }
    int8_t *qc = malloc((size_t)n_heads * dim);
    for (size_t i = 0; i < (size_t)n_heads * dim; i++)
        qc[i] = e2m1_twice[test_rand_u64(&seed) % 16];
    float *qs = malloc((size_t)n_heads * nb * sizeof *qs), *w = malloc((size_t)n_heads * sizeof *w);
    for (int i = 0; i < n_heads * nb; i++)
        qs[i] = scales == SCALES_ANY && i % 5 == 4 ? ldexpf(1.375f, (int)(test_rand_u64(&seed) % 39) - 30)
                : scales == SCALES_EXTREME && i % 7 == 3 ? ldexpf(1.0f, -100)
                                                         : ldexpf(1.0f, (int)(test_rand_u64(&seed) % 39) - 30);
    if (near)
        for (int h = 0; h < n_heads; h++) {
            int base = scales == SCALES_NEAR_TINY ? -72 : low ? -60 : (int)(test_rand_u64(&seed) % 21) - 10;
            for (int b = 0; b < nb; b++)
                qs[h * nb + b] = ldexpf(1.0f, base + (b == 0 ? 0 : (int)(test_rand_u64(&seed) % 4)));
        }
    for (int h = 0; h < n_heads; h++)
        w[h] = bf16_by_hand(test_rand_f(&seed) * ldexp(1.0, (int)(test_rand_u64(&seed) % 8) - 4));
    /* NEAR_LOW: |w| in [1/8, 1) (and one zero), so 2^-123 * w stays normal;
     * NEAR_TINY: |w| in [2^9, 2^10), so the products are normal and only the
     * subnormal dots themselves stand in the shortcut's way */
    if (low)
        for (int h = 0; h < n_heads; h++)
            w[h] = h == 3 ? 0.0f
                          : bf16_by_hand((0.5 + 0.5 * fabs(test_rand_f(&seed))) * (test_rand_u64(&seed) & 1 ? -1 : 1) *
                                         ldexp(1.0, scales == SCALES_NEAR_TINY ? 10 : -(int)(test_rand_u64(&seed) % 3)));
    float *ref = malloc((size_t)n_keys * sizeof *ref), *got = malloc(((size_t)n_keys + 2) * sizeof *got);
    kernels_scalar()->index_scores_fp4(ref, qc, qs, w, keys, ks, n_keys, n_heads, dim);
    int nonzero = 0;
    for (int s = 0; s < n_keys; s++)
        nonzero += ref[s] != 0.0f;
    assert_true(nonzero > 0 || n_keys * n_heads < 64); /* the ReLU may clip a tiny case whole */
    static const char *const isas[] = {"avx512", "avx2", "neon", "scalar"};
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        const dsv4_kernels *k = kernels_select(isas[i]);
        if (!k)
            continue;
        got[0] = got[n_keys + 1] = -5.0f;
        k->index_scores_fp4(got + 1, qc, qs, w, keys, ks, n_keys, n_heads, dim);
        for (int s = 0; s < n_keys; s++)
            if (memcmp(&got[1 + s], &ref[s], sizeof *ref) != 0) {
                print_error("%s: key %d of %d (%d heads, dim %d): %.9g vs scalar %.9g\n", k->isa, s, n_keys,
                            n_heads, dim, got[1 + s], ref[s]);
                fail();
            }
        assert_true(got[0] == -5.0f && got[n_keys + 1] == -5.0f);
    }
    free(keys);
    free(ks);
    free(qc);
    free(qs);
    free(w);
    free(ref);
    free(got);
}

static void test_tables_bitwise(void **state)
{
    (void)state;
    int small = small_shapes();
    check_tables_bitwise(small ? 300 : 3000, 64, 128, SCALES_POW2, 1); /* V4 shape */
    check_tables_bitwise(small ? 101 : 1001, 64, 128, SCALES_ANY, 2);
    check_tables_bitwise(small ? 100 : 500, 64, 128, SCALES_EXTREME, 3);
    check_tables_bitwise(1, 1, 32, SCALES_POW2, 4);
    check_tables_bitwise(15, 3, 64, SCALES_POW2, 5);
    check_tables_bitwise(17, 17, 128, SCALES_POW2, 6);
    check_tables_bitwise(33, 1, 128, SCALES_ANY, 7);
    check_tables_bitwise(31, 3, 32, SCALES_POW2, 8);
    check_tables_bitwise(50, 17, 64, SCALES_EXTREME, 9);
    check_tables_bitwise(64, 5, 96, SCALES_POW2, 10); /* odd block count */
    check_tables_bitwise(19, 5, 96, SCALES_ANY, 11);
    check_tables_bitwise(7, 2, 160, SCALES_POW2, 12);
    check_tables_bitwise(40, 128, 256, SCALES_POW2, 13); /* the limits */
    check_tables_bitwise(40, 128, 256, SCALES_EXTREME, 14);
    check_tables_bitwise(small ? 300 : 3000, 64, 128, SCALES_NEAR, 15); /* V4 shape, real-like scales */
    check_tables_bitwise(small ? 301 : 1001, 64, 128, SCALES_NEAR_LOW, 16);
    check_tables_bitwise(91, 7, 64, SCALES_NEAR, 17);   /* heads not a multiple of 4, a partial group */
    check_tables_bitwise(40, 128, 256, SCALES_NEAR, 18); /* the limits */
    check_tables_bitwise(35, 3, 32, SCALES_NEAR_LOW, 19);
    check_tables_bitwise(small ? 300 : 1000, 64, 128, SCALES_NEAR_TINY, 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quant_codes_by_hand),
        cmocka_unit_test(test_pack_round_trip),
        cmocka_unit_test(test_scalar_by_hand),
        cmocka_unit_test(test_scalar_vs_by_hand),
        cmocka_unit_test(test_tables_bitwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
