/* The AMX release-numerics kernels (simd/avx512_amx.c): against the double
 * product and the scalar reference (tolerance 1e-5 of sum |w||x|, as
 * test_kernels.c's e4m3act checks), bitwise invariant to the token count
 * (one-token decode = prefill), the row split and ragged shapes, rows with
 * scales outside the bf16 range recomputed by the fp32 kernel, and the
 * dispatch. Skipped where the CPU has no AMX or Linux refuses the tiles. */
#include "test_util.h"

#include <math.h>

#include <omp.h>

#include "../simd/amx.h"
#include "../simd/formats.h"
#include "../simd/kernels.h"
#include "linear.h"

#define REL_TOL 1e-5


typedef void (*matmul_fn)(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                          size_t ldx, int n, int rows, int cols, int r0, int r1);

/* The header-only cmocka of cross builds has no skip(): the test just passes. */
#ifdef skip
#define SKIP() skip()
#else
#define SKIP() return
#endif

#define NEED_AMX()                                                                                 \
    do {                                                                                           \
        if (!kernels_amx_usable()) {                                                               \
            print_message("skipped: no AMX\n");                                                    \
            SKIP();                                                                                \
        }                                                                                          \
    } while (0)

typedef struct {
    int fp4, rows, cols;
    uint8_t *w, *scale; /* w as allocated; W = w + misalign */
    const uint8_t *W;
} qm;

static qm make_qm(int fp4, int rows, int cols, uint64_t seed, int misalign)
{
    qm m = {.fp4 = fp4, .rows = rows, .cols = cols};
    size_t bytes = fp4 ? (size_t)rows * cols / 2 : (size_t)rows * cols;
    size_t n_scale = fp4 ? (size_t)rows * (cols / 32) : (size_t)((rows + 127) / 128) * ((cols + 127) / 128);
    m.w = malloc(bytes + 1);
    for (size_t i = 0; i < bytes + 1; i++) {
        uint8_t c = (uint8_t)test_rand_u64(&seed);
        m.w[i] = !fp4 && (c & 0x7f) == 0x7f ? 0 : c; /* every finite e4m3 code, NaN excluded */
    }
    m.W = m.w + misalign;
    m.scale = malloc(n_scale);
    for (size_t i = 0; i < n_scale; i++)
        m.scale[i] = (uint8_t)(122 + test_rand_u64(&seed) % 10);
    return m;
}

static void free_qm(qm *m)
{
    free(m->w);
    free(m->scale);
}

static double qm_at(const qm *m, int r, int k)
{
    if (!m->fp4) {
        int kb = (m->cols + 127) / 128;
        return (double)fmt_e4m3_to_f32(m->W[(size_t)r * m->cols + k]) *
               ldexp(1, m->scale[(r / 128) * kb + k / 128] - 127);
    }
    uint8_t b = m->W[(size_t)r * (m->cols / 2) + k / 2];
    return (double)fmt_e2m1_to_f32(k & 1 ? b >> 4 : b & 15) * ldexp(1, m->scale[r * (m->cols / 32) + k / 32] - 127);
}

static matmul_fn amx_fn(const qm *m)
{
    return m->fp4 ? matmul_fp4_amx : matmul_fp8_amx;
}

static void run(matmul_fn f, const qm *m, float *Y, size_t ldy, const float *X, size_t ldx, int n, int r0, int r1)
{
    f(Y, ldy, m->W, m->scale, X, ldx, n, m->rows, m->cols, r0, r1);
}

/* n tokens [n][ldx], FP8-simulated per 128 block (what the kernels require). */
static float *make_x(int n, size_t ldx, uint64_t seed)
{
    float *x = malloc(((size_t)n * ldx + 1) * sizeof *x);
    for (size_t i = 0; i < (size_t)n * ldx + 1; i++)
        x[i] = test_rand_f(&seed);
    for (int t = 0; t < n; t++)
        fmt_act_quant_sim(x + (size_t)t * ldx, ldx, 128);
    return x;
}

/* AMX against the double product and against the scalar table's e4m3act
 * entry; strided, misaligned X and Y; Y's padding untouched. */
static void check_vs_reference(int fp4, int rows, int cols, int n, int misalign)
{
    qm m = make_qm(fp4, rows, cols, 1000 + rows * 7 + cols, misalign);
    size_t ldx = (size_t)cols + 3, ldy = (size_t)rows + 5;
    float *xb = make_x(n, ldx, 42 + n);
    const float *x = xb + misalign;
    float *a = malloc(((size_t)n * ldy + 1) * sizeof *a), *b = malloc(((size_t)n * ldy + 1) * sizeof *b);
    float *ya = a + misalign, *yb = b + misalign;
    for (size_t i = 0; i < (size_t)n * ldy; i++)
        ya[i] = yb[i] = -7.0f;
    run(amx_fn(&m), &m, ya, ldy, x, ldx, n, 0, rows);
    const dsv4_kernels *s = kernels_scalar();
    run(fp4 ? s->matmul_fp4_e4m3act : s->matmul_fp8_e4m3act, &m, yb, ldy, x, ldx, n, 0, rows);
    for (int t = 0; t < n; t++) {
        for (int r = 0; r < rows; r++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < cols; k++) {
                double p = qm_at(&m, r, k) * x[t * ldx + k];
                ref += p;
                mag += fabs(p);
            }
            double got = ya[t * ldy + r];
            if (!(fabs(got - ref) <= REL_TOL * mag && fabs(got - yb[t * ldy + r]) <= REL_TOL * mag)) {
                print_error("%s %dx%d n=%d: row %d tok %d: amx %g scalar %g double %g (mag %g)\n",
                            fp4 ? "fp4" : "fp8", rows, cols, n, r, t, got, yb[t * ldy + r], ref, mag);
                fail();
            }
        }
        for (size_t r = (size_t)rows; r < ldy; r++)
            assert_true(ya[t * ldy + r] == -7.0f);
    }
    free(xb);
    free(a);
    free(b);
    free_qm(&m);
}

static const int shapes[][3] = {
    /* rows, cols, n: ragged rows, FP8 columns off 32 / 64 / 128, both token paths */
    {1, 32, 1},   {3, 96, 3},     {130, 160, 17}, {5, 4096, 2}, {129, 257, 3}, {2, 33, 4},
    {7, 17, 1},   {37, 1056, 9},  {300, 4096, 2}, {64, 2080, 7}, {70, 1000, 64}, {17, 7168, 1},
    {40, 5000, 2}, {33, 9000, 1}, {45, 4160, 33},
};

static void test_vs_reference(void **state)
{
    (void)state;
    NEED_AMX();
    for (int fp4 = 0; fp4 <= 1; fp4++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            if (fp4 && shapes[s][1] % 32)
                continue;
            check_vs_reference(fp4, shapes[s][0], shapes[s][1], shapes[s][2], (int)(s & 1));
        }
}

/* Every token count, each token alone, every row split: the same bits. */
static void check_invariance(int fp4, int rows, int cols)
{
    enum { N = 64 };
    static const int ns[] = {1, 2, 3, 15, 16, 17, 33, 64};
    qm m = make_qm(fp4, rows, cols, 77 + fp4 + cols, 0);
    size_t ldx = (size_t)cols, ldy = (size_t)rows;
    float *x = make_x(N, ldx, 5);
    float *full = malloc((size_t)N * ldy * sizeof *full), *part = malloc((size_t)N * ldy * sizeof *part);
    matmul_fn f = amx_fn(&m);
    run(f, &m, full, ldy, x, ldx, N, 0, rows);
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        /* tokens [N - ns, N) as a batch of ns: its own tile positions differ from the full run's */
        int n = ns[i], t0 = N - n;
        memset(part, 0, (size_t)N * ldy * sizeof *part);
        run(f, &m, part + (size_t)t0 * ldy, ldy, x + (size_t)t0 * ldx, ldx, n, 0, rows);
        if (memcmp(full + (size_t)t0 * ldy, part + (size_t)t0 * ldy, (size_t)n * ldy * sizeof *full) != 0) {
            print_error("%s %dx%d: %d tokens differ from %d\n", fp4 ? "fp4" : "fp8", rows, cols, n, N);
            fail();
        }
    }
    memset(part, 0, (size_t)N * ldy * sizeof *part);
    for (int t = 0; t < N; t++)
        run(f, &m, part + (size_t)t * ldy, ldy, x + (size_t)t * ldx, ldx, 1, 0, rows);
    assert_memory_equal(full, part, (size_t)N * ldy * sizeof *full);
    /* row pieces cut off the 16-row tiles, with the many-token and the one/two-token paths */
    int cuts[] = {0, 1, 5, 16, 17, 40, rows / 2, rows / 2 + 3, rows - 1, rows};
    for (int pass = 0; pass < 3; pass++) {
        int n = pass == 0 ? N : pass == 1 ? 2 : 1;
        memset(part, 0, (size_t)N * ldy * sizeof *part);
        for (int c = 0; c + 1 < (int)(sizeof cuts / sizeof cuts[0]); c++)
            if (cuts[c] < cuts[c + 1])
                run(f, &m, part, ldy, x, ldx, n, cuts[c], cuts[c + 1]);
        assert_memory_equal(full, part, (size_t)n * ldy * sizeof *full);
    }
    free(x);
    free(full);
    free(part);
    free_qm(&m);
}

static void test_invariance(void **state)
{
    (void)state;
    NEED_AMX();
    check_invariance(0, 77, 1000); /* FP8: ragged rows, columns off 32 */
    check_invariance(0, 150, 4096);
    check_invariance(0, 50, 5000); /* beyond one segment of the one/two-token path */
    check_invariance(0, 45, 33);
    check_invariance(1, 77, 2080); /* FP4: a half step at the end */
    check_invariance(1, 40, 7168);
    check_invariance(1, 66, 9024);
}

/* Scales outside the bf16 range (tiny, huge, NaN) send their rows to the
 * fp32 kernel: those rows equal matmul_fp8/fp4 bit for bit, the others stay
 * within tolerance and are unaffected, and one token equals five. */
static void test_scale_fallback(void **state)
{
    (void)state;
    NEED_AMX();
    const dsv4_kernels *k = kernels_select("amx");
    assert_non_null(k);
    for (int fp4 = 0; fp4 <= 1; fp4++) {
        int rows = 300, cols = fp4 ? 640 : 600, n = 5;
        qm m = make_qm(fp4, rows, cols, 99, 0);
        int nb = fp4 ? cols / 32 : (cols + 127) / 128;
        if (fp4) {
            m.scale[3 * nb + 7] = 1;
            m.scale[5 * nb] = 200;
            m.scale[40 * nb + nb - 1] = 0;
        } else {
            m.scale[1 * nb + 2] = 0xff;
            m.scale[2 * nb] = 5;
        }
        float *x = make_x(n, (size_t)cols, 3);
        float *y = malloc((size_t)n * rows * sizeof *y), *z = malloc((size_t)n * rows * sizeof *z);
        float *one = malloc((size_t)n * rows * sizeof *one);
        run(amx_fn(&m), &m, y, rows, x, cols, n, 0, rows);
        run(fp4 ? k->matmul_fp4 : k->matmul_fp8, &m, z, rows, x, cols, n, 0, rows);
        run(amx_fn(&m), &m, one, rows, x, cols, 1, 0, rows);
        for (int r = 0; r < rows; r++) {
            int fallback = fp4 ? (r == 3 || r == 5 || r == 40) : r >= 128;
            for (int t = 0; t < n; t++) {
                float a = y[t * rows + r], b = z[t * rows + r];
                if (fallback) {
                    assert_memory_equal(&a, &b, sizeof a);
                } else {
                    double mag = 0;
                    for (int c = 0; c < cols; c++)
                        mag += fabs(qm_at(&m, r, c) * x[t * cols + c]);
                    assert_true(fabs((double)a - b) <= REL_TOL * mag);
                }
            }
            assert_memory_equal(&y[r], &one[r], sizeof *y);
        }
        free(x);
        free(y);
        free(z);
        free(one);
        free_qm(&m);
    }
}

/* An e4m3 NaN code (never in a release file) makes its row NaN, not a
 * silent finite number, on both token paths. */
static void test_fp8_nan_code(void **state)
{
    (void)state;
    NEED_AMX();
    int rows = 20, cols = 300;
    qm m = make_qm(0, rows, cols, 7, 0);
    m.w[1 * cols + 5] = 0x7f;
    m.w[17 * cols + 290] = 0xff;
    for (int n = 1; n <= 5; n += 4) {
        float *x = make_x(n, (size_t)cols, 9), *y = malloc((size_t)n * rows * sizeof *y);
        run(matmul_fp8_amx, &m, y, (size_t)rows, x, (size_t)cols, n, 0, rows);
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows; r++)
                assert_true(!!isnan(y[t * rows + r]) == (r == 1 || r == 17));
        free(x);
        free(y);
    }
    free_qm(&m);
}

/* Tokens packed once (in pieces, as threads split it) give the direct
 * entry's bits, for every row split and token count, token groups past 256
 * included, and rows with out-of-range scales still go to the fp32 kernel. */
static void check_packed(const dsv4_kernels *k, int fp4, int rows, int cols, int n)
{
    qm m = make_qm(fp4, rows, cols, 500 + n + cols, 0);
    if (fp4 && rows > 9)
        m.scale[9 * (cols / 32)] = 1; /* row 9 */
    if (!fp4 && rows > 128)
        m.scale[(cols + 127) / 128] = 0xff; /* rows 128 and up */
    size_t ldx = (size_t)cols + 1, ldy = (size_t)rows + 2;
    float *x = make_x(n, ldx, 11 + n);
    float *want = calloc((size_t)n * ldy, sizeof *want), *got = calloc((size_t)n * ldy, sizeof *got);
    run(amx_fn(&m), &m, want, ldy, x, ldx, n, 0, rows);
    size_t bytes = k->e4m3act_packed_bytes(n, cols);
    assert_true(bytes > 0);
    void *P = aligned_alloc(64, (bytes + 63) / 64 * 64);
    memset(P, 0xa5, bytes); /* every byte the products read must be written by the pack */
    int steps = (cols + 63) / 64, cut1 = steps / 3, cut2 = 2 * steps / 3;
    k->e4m3act_pack(P, x, ldx, n, cols, fp4, cut2, steps);
    k->e4m3act_pack(P, x, ldx, n, cols, fp4, 0, cut1);
    k->e4m3act_pack(P, x, ldx, n, cols, fp4, cut1, cut2);
    int cuts[] = {0, 1, 17, 40, rows};
    for (int c = 0; c < 5; c++)
        cuts[c] = cuts[c] < rows ? cuts[c] : rows;
    for (int c = 0; c + 1 < 5; c++)
        if (cuts[c] < cuts[c + 1])
            (fp4 ? k->matmul_fp4_e4m3act_packed : k->matmul_fp8_e4m3act_packed)(
                got, ldy, m.W, m.scale, x, ldx, P, n, rows, cols, cuts[c], cuts[c + 1]);
    if (memcmp(want, got, (size_t)n * ldy * sizeof *want) != 0) {
        for (size_t i = 0; i < (size_t)n * ldy; i++)
            if (memcmp(&want[i], &got[i], 4)) {
                print_error("first diff tok %zu row %zu: %g vs %g\n", i / ldy, i % ldy, want[i], got[i]);
                break;
            }
        print_error("%s %dx%d n=%d: packed differs from direct\n", fp4 ? "fp4" : "fp8", rows, cols, n);
        fail();
    }
    free(P);
    free(x);
    free(want);
    free(got);
    free_qm(&m);
}

static void test_packed(void **state)
{
    (void)state;
    NEED_AMX();
    const dsv4_kernels *k = kernels_select("amx");
    assert_non_null(k);
    assert_int_equal(k->e4m3act_packed_bytes(1, 4096), 0);
    assert_int_equal(k->e4m3act_packed_bytes(2, 4096), 0);
    static const int shapes_p[][3] = {
        {50, 1000, 3}, {77, 2080, 17}, {45, 33, 33}, {40, 4160, 64}, {33, 640, 300}, {16, 7168, 16}, {150, 320, 20},
    };
    for (int fp4 = 0; fp4 <= 1; fp4++)
        for (size_t s = 0; s < sizeof shapes_p / sizeof shapes_p[0]; s++)
            if (!fp4 || shapes_p[s][1] % 32 == 0)
                check_packed(k, fp4, shapes_p[s][0], shapes_p[s][1], shapes_p[s][2]);
}

/* linear.c packs each distinct input once for the whole batch (two jobs
 * share one here) while the team computes: the direct entry's bits, for one
 * thread and for several, next to jobs that do not pack. */
static void test_packed_jobs(void **state)
{
    (void)state;
    NEED_AMX();
    const dsv4_kernels *k = kernels_select("amx");
    enum { NJ = 5 };
    static const int spec[NJ][4] = {/* fp4, rows, cols, n */
                                    {1, 96, 640, 20}, {1, 80, 640, 20}, {0, 70, 300, 20}, {0, 40, 300, 2}, {1, 33, 128, 7}};
    qm m[NJ];
    dsv4_linear lin[NJ];
    float *x[NJ], *want[NJ], *got[NJ];
    for (int i = 0; i < NJ; i++) {
        m[i] = make_qm(spec[i][0], spec[i][1], spec[i][2], 900 + i, 0);
        lin[i] = (dsv4_linear){spec[i][0] ? DSV4_WF_FP4 : DSV4_WF_FP8, spec[i][1], spec[i][2], m[i].W, m[i].scale};
        x[i] = i == 1 ? x[0] : make_x(spec[i][3], (size_t)spec[i][2], 30 + i); /* jobs 0 and 1: one input */
        size_t out = (size_t)spec[i][3] * spec[i][1];
        want[i] = malloc(out * sizeof *want[i]);
        got[i] = malloc(out * sizeof *got[i]);
        run(amx_fn(&m[i]), &m[i], want[i], (size_t)spec[i][1], x[i], (size_t)spec[i][2], spec[i][3], 0, spec[i][1]);
    }
    int saved = omp_get_max_threads();
    for (int threads = 1; threads <= 3; threads += 2) {
        omp_set_num_threads(threads);
        linear_job jobs[NJ];
        for (int i = 0; i < NJ; i++) {
            memset(got[i], 0, (size_t)spec[i][3] * spec[i][1] * sizeof *got[i]);
            jobs[i] = (linear_job){&lin[i], got[i], (size_t)spec[i][1], x[i], (size_t)spec[i][2], spec[i][3],
                                   0, spec[i][1], 1};
        }
        linear_matmul_jobs(k, jobs, NJ);
        for (int i = 0; i < NJ; i++)
            assert_memory_equal(want[i], got[i], (size_t)spec[i][3] * spec[i][1] * sizeof *got[i]);
    }
    omp_set_num_threads(saved);
    for (int i = 0; i < NJ; i++) {
        if (i != 1)
            free(x[i]);
        free(want[i]);
        free(got[i]);
        free_qm(&m[i]);
    }
}

/* AMX is asked for by name ("amx"; slower decode, see dispatch.c): the best
 * table never uses it; the named one does where the CPU has it, and without
 * AMX no table claims it. */
static void test_dispatch(void **state)
{
    (void)state;
    const dsv4_kernels *best = kernels_select(NULL), *amx = kernels_select("amx");
    assert_true(!best->e4m3act_isa || strcmp(best->e4m3act_isa, "amx") != 0);
    if (!kernels_amx_usable()) {
        assert_null(amx);
        print_message("skipped: no AMX\n");
        SKIP();
    }
    assert_non_null(amx);
    assert_ptr_equal(amx->matmul_fp8_e4m3act, matmul_fp8_amx);
    assert_ptr_equal(amx->matmul_fp4_e4m3act, matmul_fp4_amx);
    assert_non_null(amx->e4m3act_isa);
    assert_string_equal(amx->e4m3act_isa, "amx");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_vs_reference),
        cmocka_unit_test(test_invariance),
        cmocka_unit_test(test_scale_fallback),
        cmocka_unit_test(test_fp8_nan_code),
        cmocka_unit_test(test_packed),
        cmocka_unit_test(test_packed_jobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
