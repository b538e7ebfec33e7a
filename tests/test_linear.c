/* The threaded linear layer: thread count never changes a bit, rows land
 * where asked, and linear_row dequantises with the right block scale. */
#include "test_util.h"

#include <math.h>
#include <omp.h>

#include "linear.h"
#include "../simd/formats.h"

typedef struct {
    dsv4_linear lin;
    void *data;
    uint8_t *scale;
} test_matrix;

/* Random weights in the given format; scales vary in [2^-3, 2^2]. */
static test_matrix make_matrix(dsv4_wformat fmt, int rows, int cols, uint64_t seed)
{
    test_matrix m = {.lin = {.fmt = fmt, .rows = rows, .cols = cols}};
    size_t count = (size_t)rows * cols;
    size_t n_scale = 0;
    switch (fmt) {
    case DSV4_WF_F32: {
        float *w = malloc(count * sizeof *w);
        for (size_t i = 0; i < count; i++)
            w[i] = test_rand_f(&seed);
        m.data = w;
        break;
    }
    case DSV4_WF_BF16: {
        uint16_t *w = malloc(count * sizeof *w);
        for (size_t i = 0; i < count; i++)
            w[i] = fmt_f32_to_bf16(test_rand_f(&seed));
        m.data = w;
        break;
    }
    case DSV4_WF_FP8: {
        uint8_t *w = malloc(count);
        for (size_t i = 0; i < count; i++) {
            uint8_t c = (uint8_t)test_rand_u64(&seed);
            w[i] = (c & 0x7f) == 0x7f ? 0x7e : c;
        }
        m.data = w;
        n_scale = (size_t)((rows + 127) / 128) * ((cols + 127) / 128);
        break;
    }
    case DSV4_WF_FP4: {
        uint8_t *w = malloc(count / 2);
        for (size_t i = 0; i < count / 2; i++)
            w[i] = (uint8_t)test_rand_u64(&seed);
        m.data = w;
        n_scale = (size_t)rows * (cols / 32);
        break;
    }
    case DSV4_WF_NONE:
        break;
    }
    if (n_scale) {
        m.scale = malloc(n_scale);
        for (size_t i = 0; i < n_scale; i++)
            m.scale[i] = (uint8_t)(124 + test_rand_u64(&seed) % 6);
    }
    m.lin.data = m.data;
    m.lin.scale = m.scale;
    return m;
}

static void free_matrix(test_matrix *m)
{
    free(m->data);
    free(m->scale);
}

static float *random_vec(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = test_rand_f(&seed);
    return x;
}

static const dsv4_wformat formats[] = {DSV4_WF_F32, DSV4_WF_BF16, DSV4_WF_FP8, DSV4_WF_FP4};

static void check_threads_bitwise(const dsv4_kernels *k)
{
    const int rows = 300, cols = 320, n = 5;
    for (size_t f = 0; f < 4; f++) {
        test_matrix m = make_matrix(formats[f], rows, cols, 100 + f);
        float *x = random_vec((size_t)n * cols, 7);
        float *y1 = malloc(sizeof(float) * n * rows), *y2 = malloc(sizeof(float) * n * rows);
        omp_set_num_threads(1);
        linear_matmul(k, &m.lin, y1, x, n);
        omp_set_num_threads(2);
        linear_matmul(k, &m.lin, y2, x, n);
        assert_memory_equal(y1, y2, sizeof(float) * n * rows);
        /* and against a double-precision product of the dequantised rows */
        float *row = malloc(sizeof(float) * cols);
        for (int r = 0; r < rows; r++) {
            linear_row(&m.lin, r, row);
            for (int t = 0; t < n; t++) {
                double ref = 0, mag = 0;
                for (int c = 0; c < cols; c++) {
                    ref += (double)row[c] * x[t * cols + c];
                    mag += fabs((double)row[c] * x[t * cols + c]);
                }
                assert_true(fabs(y1[t * rows + r] - ref) <= 1e-5 * mag + 1e-30);
            }
        }
        free(row);
        free(x);
        free(y1);
        free(y2);
        free_matrix(&m);
    }
}

static void test_threads_bitwise_scalar(void **state)
{
    (void)state;
    check_threads_bitwise(kernels_select("scalar"));
}

static void test_threads_bitwise_best(void **state)
{
    (void)state;
    check_threads_bitwise(kernels_select(NULL));
}

/* Rows outside [r0, r1) and columns beyond ldy's used part stay untouched. */
static void test_rows_subrange(void **state)
{
    (void)state;
    const dsv4_kernels *k = kernels_select(NULL);
    const int rows = 200, cols = 128, n = 3;
    const size_t ldy = 260;
    test_matrix m = make_matrix(DSV4_WF_FP8, rows, cols, 5);
    float *x = random_vec((size_t)n * cols, 9);
    float full[3 * 200], part[3 * 260];
    linear_matmul(k, &m.lin, full, x, n);
    for (size_t i = 0; i < sizeof part / sizeof *part; i++)
        part[i] = -12345.0f;
    omp_set_num_threads(2);
    linear_matmul_rows(k, &m.lin, part, ldy, x, cols, n, 37, 181);
    for (int t = 0; t < n; t++)
        for (size_t r = 0; r < ldy; r++) {
            float v = part[t * ldy + r];
            if (r >= 37 && r < 181)
                assert_memory_equal(&v, &full[t * rows + r], sizeof v);
            else
                assert_true(v == -12345.0f);
        }
    free(x);
    free_matrix(&m);
}

static void test_linear_row_by_hand(void **state)
{
    (void)state;
    /* FP8 256 x 256: row 130 uses scale row 1 */
    uint8_t w8[256 * 256] = {0};
    uint8_t s8[4] = {127, 127, 129, 120}; /* [2][2]: row block 1 = {4, 2^-7} */
    w8[130 * 256 + 5] = 0x38;             /* 1.0 */
    w8[130 * 256 + 200] = 0xc0;           /* -2.0 */
    dsv4_linear l8 = {.fmt = DSV4_WF_FP8, .rows = 256, .cols = 256, .data = w8, .scale = s8};
    float row[256];
    linear_row(&l8, 130, row);
    assert_true(row[5] == 4.0f);
    assert_true(row[200] == -2.0f * 0x1p-7f);
    assert_true(row[0] == 0.0f && row[255] == 0.0f);
    /* FP4 2 x 64: low nibble is the even column */
    uint8_t w4[2 * 32] = {0};
    uint8_t s4[4] = {127, 127, 128, 126};
    w4[32 + 0] = 0x9 << 4 | 0x7; /* row 1: col 0 = 6, col 1 = -0.5 */
    w4[32 + 20] = 0x3;           /* row 1: col 40 = 1.5, in block 1 */
    dsv4_linear l4 = {.fmt = DSV4_WF_FP4, .rows = 2, .cols = 64, .data = w4, .scale = s4};
    float row4[64];
    linear_row(&l4, 1, row4);
    assert_true(row4[0] == 12.0f && row4[1] == -1.0f && row4[40] == 0.75f && row4[41] == 0.0f);
    /* BF16 */
    uint16_t wb[4] = {0x3f80, 0xc040, 0x0000, 0x4049};
    dsv4_linear lb = {.fmt = DSV4_WF_BF16, .rows = 2, .cols = 2, .data = wb};
    float rowb[2];
    linear_row(&lb, 1, rowb);
    assert_true(rowb[0] == 0.0f && rowb[1] == 3.140625f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_bitwise_scalar),
        cmocka_unit_test(test_threads_bitwise_best),
        cmocka_unit_test(test_rows_subrange),
        cmocka_unit_test(test_linear_row_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
