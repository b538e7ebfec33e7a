/* Kernels: scalar against double-precision references, SIMD against scalar
 * (tolerance 1e-5 of sum |a||b| for sums whose order may differ), and the
 * invariances the engine relies on (batch size and row split never change a
 * bit). */
#include "test_util.h"

#include <float.h>
#include <math.h>

#include "../simd/formats.h"
#include "../simd/kernels.h"

#define REL_TOL 1e-5
/* The scales e4m3_table.h's tables hold (FP8_S_MIN, S_MAX there). */
#define FP8_TEST_S_MIN 10
#define FP8_TEST_S_MAX 191

#if defined(__x86_64__)
const dsv4_kernels *kernels_avx512(void); /* the plain table: FP8 without VBMI */
#endif

enum { F32, BF16, FP8, FP4 };
static const char *const fmt_name[] = {"f32", "bf16", "fp8", "fp4"};

typedef struct {
    int fmt, rows, cols;
    void *w;       /* as allocated */
    const void *W; /* possibly offset for misalignment */
    uint8_t *scale;
} mat;

static mat make_mat(int fmt, int rows, int cols, uint64_t seed, int misalign)
{
    mat m = {.fmt = fmt, .rows = rows, .cols = cols};
    size_t count = (size_t)rows * cols, n_scale = 0;
    switch (fmt) {
    case F32: {
        float *w = malloc((count + 1) * sizeof *w);
        for (size_t i = 0; i < count + 1; i++)
            w[i] = test_rand_f(&seed);
        m.w = w;
        m.W = w + misalign;
        break;
    }
    case BF16: {
        uint16_t *w = malloc((count + 1) * sizeof *w);
        for (size_t i = 0; i < count + 1; i++)
            w[i] = fmt_f32_to_bf16(test_rand_f(&seed));
        m.w = w;
        m.W = w + misalign;
        break;
    }
    case FP8: {
        uint8_t *w = malloc(count + 1);
        for (size_t i = 0; i < count + 1; i++) {
            uint8_t c = (uint8_t)test_rand_u64(&seed);
            w[i] = (c & 0x7f) == 0x7f ? 0x00 : c; /* every finite code, NaN excluded */
        }
        m.w = w;
        m.W = w + misalign;
        n_scale = (size_t)((rows + 127) / 128) * ((cols + 127) / 128);
        break;
    }
    case FP4: {
        uint8_t *w = malloc(count / 2 + 1);
        for (size_t i = 0; i < count / 2 + 1; i++)
            w[i] = (uint8_t)test_rand_u64(&seed);
        m.w = w;
        m.W = w + misalign;
        n_scale = (size_t)rows * (cols / 32);
        break;
    }
    }
    if (n_scale) {
        m.scale = malloc(n_scale);
        for (size_t i = 0; i < n_scale; i++)
            m.scale[i] = (uint8_t)(122 + test_rand_u64(&seed) % 10);
    }
    return m;
}

static void free_mat(mat *m)
{
    free(m->w);
    free(m->scale);
}

/* W[r][k] dequantised, from the format definitions. */
static double mat_at(const mat *m, int r, int k)
{
    switch (m->fmt) {
    case F32:
        return ((const float *)m->W)[(size_t)r * m->cols + k];
    case BF16:
        return fmt_bf16_to_f32(((const uint16_t *)m->W)[(size_t)r * m->cols + k]);
    case FP8: {
        int kb = (m->cols + 127) / 128;
        uint8_t c = ((const uint8_t *)m->W)[(size_t)r * m->cols + k];
        return (double)fmt_e4m3_to_f32(c) * ldexp(1, m->scale[(r / 128) * kb + k / 128] - 127);
    }
    default: {
        uint8_t b = ((const uint8_t *)m->W)[(size_t)r * (m->cols / 2) + k / 2];
        uint8_t c = k & 1 ? b >> 4 : b & 15;
        return (double)fmt_e2m1_to_f32(c) * ldexp(1, m->scale[r * (m->cols / 32) + k / 32] - 127);
    }
    }
}

/* When set, FP8/FP4 products go through the kernels' e4m3act entries (BF16
 * ones through matmul_bf16_bf16act) and make_x makes the activations those
 * entries require: FP8-simulated (1) or bf16 numbers only (2). */
static int e4m3act;

static void run_matmul(const dsv4_kernels *kt, const mat *m, float *Y, size_t ldy, const float *X,
                       size_t ldx, int n, int r0, int r1)
{
    if (e4m3act && m->fmt == FP8) {
        kt->matmul_fp8_e4m3act(Y, ldy, m->W, m->scale, X, ldx, n, m->rows, m->cols, r0, r1);
        return;
    }
    if (e4m3act && m->fmt == FP4) {
        kt->matmul_fp4_e4m3act(Y, ldy, m->W, m->scale, X, ldx, n, m->rows, m->cols, r0, r1);
        return;
    }
    if (e4m3act && m->fmt == BF16) {
        kt->matmul_bf16_bf16act(Y, ldy, m->W, X, ldx, n, m->rows, m->cols, r0, r1);
        return;
    }
    switch (m->fmt) {
    case F32:
        kt->matmul_f32(Y, ldy, m->W, X, ldx, n, m->rows, m->cols, r0, r1);
        break;
    case BF16:
        kt->matmul_bf16(Y, ldy, m->W, X, ldx, n, m->rows, m->cols, r0, r1);
        break;
    case FP8:
        kt->matmul_fp8(Y, ldy, m->W, m->scale, X, ldx, n, m->rows, m->cols, r0, r1);
        break;
    default:
        kt->matmul_fp4(Y, ldy, m->W, m->scale, X, ldx, n, m->rows, m->cols, r0, r1);
        break;
    }
}

/* X [n][ldx] (+1 float so callers can misalign), uniform [-1, 1). */
static float *make_x(int n, size_t ldx, uint64_t seed)
{
    float *x = malloc(((size_t)n * ldx + 1) * sizeof *x);
    for (size_t i = 0; i < (size_t)n * ldx + 1; i++)
        x[i] = test_rand_f(&seed);
    if (e4m3act == 1)
        for (int t = 0; t < n; t++)
            fmt_act_quant_sim(x + (size_t)t * ldx, ldx, 128);
    else if (e4m3act == 2) /* bf16 numbers that are not FP8-simulated */
        fmt_round_bf16_array(x, (size_t)n * ldx + 1);
    return x;
}

/* Y (from kernel table kt) against the double-precision product, relative
 * to sum |W||X| of each output. */
static void check_matmul_vs_double(const dsv4_kernels *kt, int fmt, int rows, int cols, int n)
{
    mat m = make_mat(fmt, rows, cols, 1000 + rows * 7 + cols, 0);
    size_t ldx = (size_t)cols + 3, ldy = (size_t)rows + 5;
    float *x = make_x(n, ldx, 42);
    float *y = malloc((size_t)n * ldy * sizeof *y);
    run_matmul(kt, &m, y, ldy, x, ldx, n, 0, rows);
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < n; t++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < cols; k++) {
                double p = mat_at(&m, r, k) * x[t * ldx + k];
                ref += p;
                mag += fabs(p);
            }
            double err = fabs(y[t * ldy + r] - ref);
            if (!(err <= REL_TOL * mag)) {
                print_error("%s %s %dx%d n=%d: row %d tok %d: %g vs %g (mag %g)\n", kt->isa,
                            fmt_name[fmt], rows, cols, n, r, t, y[t * ldy + r], ref, mag);
                fail();
            }
        }
    free(x);
    free(y);
    free_mat(&m);
}

static const int odd_shapes[][3] = {
    /* rows, cols, n */
    {1, 32, 1}, {3, 96, 3}, {130, 160, 17}, {5, 4096, 2}, {129, 257, 3}, {2, 33, 4}, {7, 17, 1},
};

static void matmul_vs_double(const dsv4_kernels *kt)
{
    for (int f = F32; f <= FP4; f++)
        for (size_t s = 0; s < sizeof odd_shapes / sizeof odd_shapes[0]; s++) {
            int cols = odd_shapes[s][1];
            if (f == FP4 && cols % 32)
                continue;
            check_matmul_vs_double(kt, f, odd_shapes[s][0], cols, odd_shapes[s][2]);
        }
}

static void test_scalar_matmul_vs_double(void **state)
{
    (void)state;
    matmul_vs_double(kernels_scalar());
}

/* Every SIMD table this CPU (and this build) has, best first. */
static const char *const simd_isas[] = {"avx512", "avx2", "neon"};
enum { MAX_SIMD = 3 };

static int simd_tables(const dsv4_kernels *out[MAX_SIMD])
{
    int n = 0;
    for (int i = 0; i < MAX_SIMD; i++)
        if ((out[n] = kernels_select(simd_isas[i])) != NULL)
            n++;
    if (n == 0)
        print_message("note: no SIMD kernel table on this CPU; SIMD checks skipped\n");
    return n;
}

/* The scalar table, then every SIMD table. */
static int all_tables(const dsv4_kernels *out[1 + MAX_SIMD])
{
    out[0] = kernels_scalar();
    return 1 + simd_tables(out + 1);
}

/* Shapes shrink under emulation (qemu runs the NEON build in `make test`). */
static int small_shapes(void)
{
    const char *v = getenv("DSV4_TEST_SMALL");
    return v && *v && strcmp(v, "0") != 0;
}

static void test_simd_matmul_vs_double(void **state)
{
    (void)state;
    const dsv4_kernels *k[MAX_SIMD];
    for (int i = 0, n = simd_tables(k); i < n; i++)
        matmul_vs_double(k[i]);
}

/* Batch size and row split do not change a bit: each token alone, and the
 * rows in uneven pieces, give exactly the full result. */
static void check_invariance(const dsv4_kernels *kt, int fmt, int rows, int cols, int n)
{
    mat m = make_mat(fmt, rows, cols, 77 + fmt, 0);
    size_t ldx = (size_t)cols, ldy = (size_t)rows;
    float *x = make_x(n, ldx, 5);
    float *full = malloc((size_t)n * ldy * sizeof *full);
    float *part = malloc((size_t)n * ldy * sizeof *part);
    run_matmul(kt, &m, full, ldy, x, ldx, n, 0, rows);
    for (int t = 0; t < n; t++)
        run_matmul(kt, &m, part + t * ldy, ldy, x + t * ldx, ldx, 1, 0, rows);
    assert_memory_equal(full, part, (size_t)n * ldy * sizeof *full);
    memset(part, 0, (size_t)n * ldy * sizeof *part);
    int cuts[] = {0, 1, 4, rows / 3, rows / 3 + 5, rows - 1, rows};
    for (int c = 0; c + 1 < (int)(sizeof cuts / sizeof cuts[0]); c++)
        if (cuts[c] < cuts[c + 1])
            run_matmul(kt, &m, part, ldy, x, ldx, n, cuts[c], cuts[c + 1]);
    assert_memory_equal(full, part, (size_t)n * ldy * sizeof *full);
    /* token subsets of different sizes */
    run_matmul(kt, &m, part, ldy, x, ldx, 3, 0, rows);
    run_matmul(kt, &m, part + 3 * ldy, ldy, x + 3 * ldx, ldx, n - 3, 0, rows);
    assert_memory_equal(full, part, (size_t)n * ldy * sizeof *full);
    free(x);
    free(full);
    free(part);
    free_mat(&m);
}

static void invariance(const dsv4_kernels *kt)
{
    for (int f = F32; f <= FP4; f++) {
        check_invariance(kt, f, 70, 160, 17);
        check_invariance(kt, f, 37, 4096, 5);
        check_invariance(kt, f, 21, 2048, 4); /* in-register passes of 2 + 2 tokens */
        check_invariance(kt, f, 23, 1024, 6); /* 3 + 3, rows past the 4-row blocks */
        if (f != FP4)
            check_invariance(kt, f, 19, 200, 6);
    }
}

static void test_scalar_invariance(void **state)
{
    (void)state;
    invariance(kernels_scalar());
}

static void test_simd_invariance(void **state)
{
    (void)state;
    const dsv4_kernels *k[MAX_SIMD];
    for (int i = 0, n = simd_tables(k); i < n; i++)
        invariance(k[i]);
}

/* SIMD vs scalar at the model's shapes, misaligned pointers, strided Y. */
static void check_simd_vs_scalar(const dsv4_kernels *simd, int fmt, int rows, int cols, int n,
                                 int misalign)
{
    const dsv4_kernels *ref = kernels_scalar();
    mat m = make_mat(fmt, rows, cols, 31 + fmt, misalign);
    size_t ldx = (size_t)cols + 1, ldy = (size_t)rows + 2;
    float *xbuf = make_x(n, ldx, 8);
    const float *x = xbuf + misalign;
    float *a = malloc(((size_t)n * ldy + 1) * sizeof *a), *b = malloc(((size_t)n * ldy + 1) * sizeof *b);
    float *ya = a + misalign, *yb = b + misalign;
    for (size_t i = 0; i < (size_t)n * ldy; i++)
        ya[i] = yb[i] = -7.0f;
    run_matmul(ref, &m, ya, ldy, x, ldx, n, 0, rows);
    run_matmul(simd, &m, yb, ldy, x, ldx, n, 0, rows);
    for (int t = 0; t < n; t++) {
        for (int r = 0; r < rows; r++) {
            double mag = 0;
            for (int k = 0; k < cols; k++)
                mag += fabs(mat_at(&m, r, k) * x[t * ldx + k]);
            double err = fabs((double)ya[t * ldy + r] - yb[t * ldy + r]);
            if (!(err <= REL_TOL * mag)) {
                print_error("%s %dx%d n=%d: row %d tok %d: simd %g scalar %g\n", fmt_name[fmt], rows,
                            cols, n, r, t, yb[t * ldy + r], ya[t * ldy + r]);
                fail();
            }
        }
        for (size_t r = (size_t)rows; r < ldy; r++)
            assert_true(yb[t * ldy + r] == -7.0f);
    }
    free(xbuf);
    free(a);
    free(b);
    free_mat(&m);
}

static void test_simd_matmul_vs_scalar(void **state)
{
    (void)state;
    const dsv4_kernels *ks[MAX_SIMD];
    int big = small_shapes() ? 8 : 1;
    for (int i = 0, n = simd_tables(ks); i < n; i++) {
        const dsv4_kernels *k = ks[i];
        check_simd_vs_scalar(k, FP8, 512 / big, 4096, 3, 1);
        check_simd_vs_scalar(k, FP4, 2048 / big, 2048, 2, 1);
        check_simd_vs_scalar(k, BF16, 256 / big, 4096, 3, 1);
        check_simd_vs_scalar(k, F32, 256 / big, 4096, 2, 1);
        for (int f = F32; f <= FP4; f++)
            for (size_t s = 0; s < sizeof odd_shapes / sizeof odd_shapes[0]; s++) {
                if (f == FP4 && odd_shapes[s][1] % 32)
                    continue;
                check_simd_vs_scalar(k, f, odd_shapes[s][0], odd_shapes[s][1], odd_shapes[s][2], s & 1);
            }
    }
}

/* Every FP4 weight value each kernel can decode, exactly: row r has block
 * scale r (all 256 e8m0 values: 2^-127, a denormal, up to NaN), column j
 * code j % 16, and token t is a one-hot on column t, so output (t, r) is
 * the weight (code t, scale r) itself (the AVX-512 decoder takes it from a
 * table of scaled values), or NaN for the NaN scale. Rows whose weights
 * overflow to infinity (scales 253 and 254, never in a release file) are
 * left out: the scalar reference scales each block's sum, so its zeros
 * stay zero there, where the SIMD kernels' infinite weights times zero
 * give NaN. Fewer tokens than the in-register limit and more (the GEMM
 * paths), on every table. */
static void check_fp4_one_hot(const dsv4_kernels *k, const uint8_t *w, const uint8_t *scale, int rows, int cols,
                              int n, int c0)
{
    /* token t one-hot on a column of code (c0 + t) % 16, in either half */
    float *x = calloc((size_t)n * cols, sizeof *x), *y = calloc((size_t)n * rows, sizeof *y);
    for (int t = 0; t < n; t++)
        x[t * cols + (c0 + t) % 16 + 16 * (c0 % 2)] = 1.0f;
    k->matmul_fp4(y, (size_t)rows, w, scale, x, (size_t)cols, n, rows, cols, 0, rows);
    for (int r = 0; r < rows; r++) {
        int nan_scale = isnan(fmt_e8m0_to_f32(scale[r])), overflows = 0;
        for (int code = 0; code < 16; code++)
            overflows |= isinf(fmt_e2m1_to_f32((uint8_t)code) * fmt_e8m0_to_f32(scale[r]));
        for (int t = 0; t < n && !overflows; t++) {
            int code = (c0 + t) % 16;
            float want = fmt_e2m1_to_f32((uint8_t)code) * fmt_e8m0_to_f32(scale[r]);
            float got = y[(size_t)t * rows + r];
            if (nan_scale ? !isnan(got) : got != want) {
                print_error("%s fp4 n=%d: scale %d code %d: %a, want %a\n", k->isa, n, r, code, got, want);
                fail();
            }
        }
    }
    free(x);
    free(y);
}

static void test_fp4_every_scale(void **state)
{
    (void)state;
    enum { ROWS = 256, COLS = 32 };
    const dsv4_kernels *ks[1 + MAX_SIMD];
    uint8_t *w = malloc(ROWS * COLS / 2), scale[ROWS];
    for (int r = 0; r < ROWS; r++) {
        scale[r] = (uint8_t)r;
        for (int j = 0; j < COLS; j += 2)
            w[r * COLS / 2 + j / 2] = (uint8_t)((j % 16) | ((j + 1) % 16) << 4);
    }
    static const int token_counts[] = {1, 4, 16};
    for (int i = 0, nk = all_tables(ks); i < nk; i++)
        for (size_t c = 0; c < sizeof token_counts / sizeof token_counts[0]; c++)
            for (int c0 = 0; c0 < 16; c0 += token_counts[c])
                check_fp4_one_hot(ks[i], w, scale, ROWS, COLS, token_counts[c], c0);
    free(w);
}

/* ---- indexer scores ---- */

static void check_index_scores(const dsv4_kernels *kt, int n_keys, int n_heads, int dim, int misalign)
{
    uint64_t seed = 123;
    float *qb = make_x(n_heads, dim, seed), *kb = make_x(n_keys, dim, seed + 1);
    float *w = make_x(1, n_heads, seed + 2);
    const float *q = qb + misalign, *keys = kb + misalign;
    float *s = malloc(((size_t)n_keys + 1) * sizeof *s), *sr = malloc((size_t)n_keys * sizeof *sr);
    kt->index_scores(s + misalign, q, w, keys, n_keys, n_heads, dim);
    kernels_scalar()->index_scores(sr, q, w, keys, n_keys, n_heads, dim);
    for (int j = 0; j < n_keys; j++) {
        double ref = 0, mag = 0;
        for (int h = 0; h < n_heads; h++) {
            double d = 0, dm = 0;
            for (int i = 0; i < dim; i++) {
                d += (double)q[h * dim + i] * keys[(size_t)j * dim + i];
                dm += fabs((double)q[h * dim + i] * keys[(size_t)j * dim + i]);
            }
            ref += w[h] * fmax(d, 0);
            mag += fabs(w[h]) * dm;
        }
        assert_true(fabs(s[misalign + j] - ref) <= REL_TOL * mag);
        assert_true(fabs(sr[j] - ref) <= REL_TOL * mag);
        assert_true(fabs(s[misalign + j] - sr[j]) <= REL_TOL * mag);
    }
    free(qb);
    free(kb);
    free(w);
    free(s);
    free(sr);
}

static void test_index_scores(void **state)
{
    (void)state;
    const dsv4_kernels *kts[1 + MAX_SIMD];
    int n = all_tables(kts);
    for (int i = 0; i < n; i++) {
        check_index_scores(kts[i], small_shapes() ? 300 : 4096, 64, 128, 0);
        check_index_scores(kts[i], 17, 3, 20, 1);
        check_index_scores(kts[i], 1, 64, 128, 1);
        check_index_scores(kts[i], 33, 5, 135, 1);
    }
}

/* The GEMM path (many tokens) and the in-register path (few) give the same
 * bits at the V4 shapes, including odd rows and column tails. */
static void test_simd_paths_bitwise(void **state)
{
    (void)state;
    const dsv4_kernels *ks[MAX_SIMD];
    for (int i = 0, n = simd_tables(ks); i < n; i++)
        for (int f = F32; f <= FP4; f++) {
            check_invariance(ks[i], f, 13, 2048, 64);
            check_invariance(ks[i], f, 13, 1024, 140); /* more tokens than a group holds (66) */
            check_invariance(ks[i], f, 9, 7168, 7);
            if (f != FP4)
                check_invariance(ks[i], f, 11, 1000, 9);
        }
}

/* FP8 through the VBMI byte tables (e4m3_table.h) gives the fp32 decoder's
 * weights, so the avx512 table's FP8 products must equal the plain avx512
 * kernel's bit for bit: at rows that straddle 128-row scale blocks, columns
 * that end in a 32-column step and a ragged tail, scales at and beyond the
 * tables' range (those blocks take the plain decoder), NaN codes, any n. */
static void test_fp8_vbmi_tables_bitwise(void **state)
{
    (void)state;
#if defined(__x86_64__)
    const dsv4_kernels *k = kernels_select("avx512"), *plain = kernels_avx512();
    if (!k || k->matmul_fp8 == plain->matmul_fp8) {
        print_message("no VBMI: FP8 tables not tested on this CPU\n");
        return;
    }
    static const int shapes[][2] = {{300, 1000}, {260, 4096}, {17, 1536}, {140, 96}};
    static const uint8_t odd_scales[] = {FP8_TEST_S_MIN, FP8_TEST_S_MAX, FP8_TEST_S_MIN - 1, FP8_TEST_S_MAX + 1, 0, 0xff};
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        int rows = shapes[sh][0], cols = shapes[sh][1], nb = (cols + 127) / 128;
        mat m = make_mat(FP8, rows, cols, 40 + sh, (int)sh % 2);
        for (size_t i = 0; i < sizeof odd_scales; i++) /* some blocks of every row block */
            m.scale[(i * 7) % ((size_t)((rows + 127) / 128) * nb)] = odd_scales[i];
        uint8_t *w = (uint8_t *)m.W;
        w[(size_t)(rows / 2) * cols + 70] = 0x7f; /* NaN codes in a table-decoded step and a tail */
        w[(size_t)(rows - 1) * cols + cols - 1] = 0xff;
        /* the release-numerics entry too where it is this kernel (Intel) */
        for (e4m3act = 0; e4m3act <= (k->matmul_fp8_e4m3act == k->matmul_fp8); e4m3act++)
            for (int n = 1; n <= 64; n = n < 5 ? n + 1 : n * 4) {
                int r0 = n % 2 ? 3 : 124; /* items that start off the 8-row grid and at a block's end */
                float *x = make_x(n, (size_t)cols, 7 + n);
                float *a = calloc((size_t)n * rows, sizeof *a), *b = calloc((size_t)n * rows, sizeof *b);
                if (r0 < rows) {
                    run_matmul(k, &m, a, (size_t)rows, x, (size_t)cols, n, r0, rows);
                    run_matmul(plain, &m, b, (size_t)rows, x, (size_t)cols, n, r0, rows);
                }
                for (size_t i = 0; i < (size_t)n * rows; i++)
                    if (!(isnan(a[i]) && isnan(b[i])) && memcmp(&a[i], &b[i], sizeof *a) != 0) {
                        print_error("fp8 %dx%d n=%d e4m3act=%d: out %zu: %a vs %a\n", rows, cols, n, e4m3act, i,
                                    a[i], b[i]);
                        fail();
                    }
                free(x);
                free(a);
                free(b);
            }
        e4m3act = 0;
        free_mat(&m);
    }
#endif
}

/* ---- release numerics: FP8-simulated activations, bf16 products ---- */

/* Against the double-precision product and the scalar fp32 path, at odd
 * shapes and tails; invariant to batch size and row split; GEMM and
 * in-register paths bitwise equal. */
/* An e4m3 NaN code (0x7f / 0xff) never appears in a release file, but if one
 * does its row must come out NaN, never a silent finite number: the vector
 * decoders look for NaN codes on the raw bytes and fix up only those blocks. */
static void test_fp8_nan_codes(void **state)
{
    (void)state;
    const dsv4_kernels *ks[1 + MAX_SIMD];
    int nk = all_tables(ks);
    int rows = 6, cols = 300;
    mat m = make_mat(FP8, rows, cols, 77, 0);
    uint8_t *w = (uint8_t *)m.W;
    w[1 * cols + 5] = 0x7f;   /* first block of row 1 */
    w[3 * cols + 290] = 0xff; /* the ragged last block of row 3 */
    w[4 * cols + 64] = 0x7f;  /* row 4, a block the fast path decodes whole */
    for (e4m3act = 0; e4m3act <= 1; e4m3act++) { /* plain and release-numerics entries */
        for (int ki = 0; ki < nk; ki++)
            for (int n = 1; n <= 5; n += 4) { /* the few-token and the many-token path */
                float *x = make_x(n, (size_t)cols, 5), *y = malloc((size_t)n * rows * sizeof *y);
                run_matmul(ks[ki], &m, y, (size_t)rows, x, (size_t)cols, n, 0, rows);
                for (int t = 0; t < n; t++)
                    for (int r = 0; r < rows; r++) {
                        int want_nan = r == 1 || r == 3 || r == 4;
                        if (isnan(y[t * rows + r]) != want_nan) {
                            print_error("%s%s n=%d row %d tok %d: %g\n", ks[ki]->isa, e4m3act ? " e4m3act" : "", n,
                                        r, t, y[t * rows + r]);
                            fail();
                        }
                    }
                free(x);
                free(y);
            }
    }
    e4m3act = 0;
    free_mat(&m);
}

static void test_e4m3act(void **state)
{
    (void)state;
    e4m3act = 1;
    const dsv4_kernels *kts[1 + MAX_SIMD];
    int nk = all_tables(kts);
    for (int i = 0; i < nk; i++) {
        const dsv4_kernels *k = kts[i];
        for (int f = FP8; f <= FP4; f++) {
            for (size_t s = 0; s < sizeof odd_shapes / sizeof odd_shapes[0]; s++) {
                if (f == FP4 && odd_shapes[s][1] % 32)
                    continue;
                check_matmul_vs_double(k, f, odd_shapes[s][0], odd_shapes[s][1], odd_shapes[s][2]);
                check_simd_vs_scalar(k, f, odd_shapes[s][0], odd_shapes[s][1], odd_shapes[s][2], s & 1);
            }
            check_matmul_vs_double(k, f, 37, 1056, 9);
            check_simd_vs_scalar(k, f, 300, 4096, 2, 1);
            check_simd_vs_scalar(k, f, 64, 2080, 7, 0);
            check_simd_vs_scalar(k, f, 40, 1536, 12, 1); /* one chunk of CHUNK_MAX columns (avx512_bf16.c) */
            check_invariance(k, f, 70, 160, 17);
            check_invariance(k, f, 13, 2048, 64);
            check_invariance(k, f, 13, 1024, 140); /* more tokens than a group holds (64) */
            check_invariance(k, f, 9, 7168, 7);
            check_invariance(k, f, 300, 256, 9); /* row blocks across FP8's 128-row scale blocks */
            check_invariance(k, f, 300, 1600, 12); /* two chunks, rows in 256-row blocks (avx512_bf16.c) */
            check_invariance(k, f, 200, 1600, 48); /* FP4: two chunks, 84-row blocks */
            check_invariance(k, f, 70, 3200, 140); /* three chunks, three token groups */
            check_simd_vs_scalar(k, f, 20, f == FP4 ? 9024 : 9000, 3, 0); /* rows too long to prepare once */
            check_invariance(k, f, 21, f == FP4 ? 9024 : 9000, 5);
            if (f == FP8)
                check_invariance(k, f, 11, 1000, 9);
        }
    }
    e4m3act = 0;
}

/* Scales the bf16 decoding cannot fold (tiny, huge, NaN) send their rows to
 * the fp32 path: each such row equals matmul_fp8/fp4 bit for bit, and the
 * other rows are unaffected. */
/* The e4m3act entries with inputs that are bf16 but not FP8-simulated (wo_a's
 * in release numerics), and matmul_bf16_bf16act (the head's): still the
 * exact products, within fp32 summation; the BF16 one also invariant to the
 * token count and the row split, at ragged shapes. */
static void test_e4m3act_bf16_inputs(void **state)
{
    (void)state;
    e4m3act = 2;
    const dsv4_kernels *kts[1 + MAX_SIMD];
    int nk = all_tables(kts);
    for (int i = 0; i < nk; i++) {
        for (int f = BF16; f <= FP4; f++) {
            check_matmul_vs_double(kts[i], f, 37, 1056, 9);
            check_matmul_vs_double(kts[i], f, 5, 4096, 2);
            check_matmul_vs_double(kts[i], f, 130, 160, 17);
        }
        for (size_t s = 0; s < sizeof odd_shapes / sizeof odd_shapes[0]; s++)
            check_matmul_vs_double(kts[i], BF16, odd_shapes[s][0], odd_shapes[s][1], odd_shapes[s][2]);
        check_invariance(kts[i], BF16, 70, 160, 17);
        check_invariance(kts[i], BF16, 13, 2048, 64);
        check_invariance(kts[i], BF16, 300, 1000, 9);
        check_invariance(kts[i], BF16, 9, 7168, 7);
        check_invariance(kts[i], BF16, 19, 200, 6);
        check_invariance(kts[i], BF16, 21, 9000, 5); /* rows too long to convert the tokens once */
        check_matmul_vs_double(kts[i], BF16, 20, 9000, 2);
    }
    e4m3act = 0;
}

static void test_e4m3act_scale_range(void **state)
{
    (void)state;
    const dsv4_kernels *k = kernels_select("avx512");
    if (!k)
        return;
    e4m3act = 1;
    for (int f = FP8; f <= FP4; f++) {
        int rows = 300, cols = 640, n = 5;
        mat m = make_mat(f, rows, cols, 99, 0);
        int nb = f == FP4 ? cols / 32 : (cols + 127) / 128;
        /* FP4: row 3 below range, row 5 above; FP8: row block 1 (rows 128..255) NaN in one block */
        if (f == FP4) {
            m.scale[3 * nb + 7] = 1;
            m.scale[5 * nb] = 200;
        } else {
            m.scale[1 * nb + 2] = 0xff;
            m.scale[2 * nb] = 5;
        }
        float *x = make_x(n, (size_t)cols, 3);
        float *y = malloc((size_t)n * rows * sizeof *y), *z = malloc((size_t)n * rows * sizeof *z);
        float *one = malloc((size_t)n * rows * sizeof *one);
        run_matmul(k, &m, y, rows, x, cols, n, 0, rows);
        e4m3act = 0;
        run_matmul(k, &m, z, rows, x, cols, n, 0, rows);
        e4m3act = 1;
        run_matmul(k, &m, one, rows, x, cols, 1, 0, rows);
        for (int r = 0; r < rows; r++) {
            int fallback = f == FP4 ? (r == 3 || r == 5) : r >= 128;
            for (int t = 0; t < n; t++) {
                if (fallback) {
                    float a = y[t * rows + r], b = z[t * rows + r];
                    assert_true(memcmp(&a, &b, sizeof a) == 0);
                } else {
                    double mag = 0;
                    for (int c = 0; c < cols; c++)
                        mag += fabs(mat_at(&m, r, c) * x[t * cols + c]);
                    assert_true(fabs((double)y[t * rows + r] - z[t * rows + r]) <= REL_TOL * mag);
                }
            }
            assert_true(memcmp(&y[r], &one[r], sizeof *y) == 0);
        }
        free(x);
        free(y);
        free(z);
        free(one);
        free_mat(&m);
    }
    e4m3act = 0;
}

/* ---- attention ---- */

typedef struct {
    float *q, *kvbuf, *sink;
    const float **kv;
} attn_case;

static attn_case make_attn(int heads, int dim, int n_kv, uint64_t seed)
{
    attn_case c;
    c.q = make_x(heads, dim, seed);
    for (int i = 0; i < heads * dim; i++)
        c.q[i] *= 3.0f;
    c.kvbuf = make_x(n_kv, dim, seed + 1);
    c.sink = make_x(1, heads, seed + 2);
    c.kv = malloc((size_t)(n_kv ? n_kv : 1) * sizeof *c.kv);
    for (int j = 0; j < n_kv; j++)
        c.kv[j] = c.kvbuf + (size_t)((j * 7919) % n_kv) * dim; /* rows in scattered order */
    return c;
}

static void free_attn(attn_case *c)
{
    free(c->q);
    free(c->kvbuf);
    free(c->sink);
    free(c->kv);
}

/* The two-pass softmax in double; with bf16_probs the weights in the PV sum
 * are bf16(f32 exp) as the kernel contract states. */
static void attend_ref(double *out, const attn_case *c, int h, int dim, int n_kv, float scale,
                       int bf16_probs)
{
    double m = -INFINITY;
    double *z = malloc((size_t)n_kv * sizeof *z);
    for (int j = 0; j < n_kv; j++) {
        double d = 0;
        for (int i = 0; i < dim; i++)
            d += (double)c->q[h * dim + i] * c->kv[j][i];
        z[j] = d * scale;
        m = fmax(m, z[j]);
    }
    double den = exp(c->sink[h] - m);
    for (int i = 0; i < dim; i++)
        out[i] = 0;
    for (int j = 0; j < n_kv; j++) {
        double e = exp(z[j] - m);
        den += e;
        double p = bf16_probs ? fmt_round_bf16((float)e) : e;
        for (int i = 0; i < dim; i++)
            out[i] += p * c->kv[j][i];
    }
    for (int i = 0; i < dim; i++)
        out[i] /= den;
    free(z);
}

static void check_attend(const dsv4_kernels *kt, int heads, int dim, int n_kv, int bf16_probs)
{
    attn_case c = make_attn(heads, dim, n_kv, 900 + n_kv);
    float scale = 1.0f / sqrtf((float)dim);
    float *out = malloc((size_t)heads * dim * sizeof *out);
    float *outr = malloc((size_t)heads * dim * sizeof *outr);
    double *ref = malloc((size_t)dim * sizeof *ref);
    kt->attend(out, c.q, dim, c.kv, n_kv, c.sink, scale, bf16_probs, 0, heads);
    kernels_scalar()->attend(outr, c.q, dim, c.kv, n_kv, c.sink, scale, bf16_probs, 0, heads);
    for (int h = 0; h < heads; h++) {
        attend_ref(ref, &c, h, dim, n_kv, scale, bf16_probs);
        for (int i = 0; i < dim; i++) {
            /* values are |kv| < 1 and weights sum to <= 1: absolute tolerance.
             * With bf16 probabilities an f32 exp that differs in the last bit
             * can flip a bf16 rounding: allow a bf16 ulp (2^-8) per weight. */
            double tol = bf16_probs ? 4e-3 : 2e-5;
            double e1 = fabs(out[h * dim + i] - ref[i]), e2 = fabs(outr[h * dim + i] - ref[i]);
            if (!(e1 <= tol && e2 <= tol)) {
                print_error("%s attend h=%d i=%d n_kv=%d bf16=%d: %g scalar %g ref %g\n", kt->isa, h, i,
                            n_kv, bf16_probs, out[h * dim + i], outr[h * dim + i], ref[i]);
                fail();
            }
        }
    }
    free(out);
    free(outr);
    free(ref);
    free_attn(&c);
}

static void test_attend(void **state)
{
    (void)state;
    const dsv4_kernels *kts[1 + MAX_SIMD];
    int n = all_tables(kts);
    for (int i = 0; i < n; i++)
        for (int bf = 0; bf <= 1; bf++) {
            check_attend(kts[i], 64, 512, 640, bf);
            check_attend(kts[i], 3, 37, 5, bf);
            check_attend(kts[i], 2, 512, 1, bf);
            check_attend(kts[i], 4, 128, 129, bf);
            check_attend(kts[i], 5, 72, 2500, bf); /* past the kernels' stack of scores */
        }
}

/* attend_fp8 over rows in the release FP8 layout: every table's gives its
 * own attend's bits (bf16 probabilities) on the decoded rows. Shapes where
 * the codes end inside a vector (37 + 0, 72 - 16, 130 - 2 against 16, 8 and
 * 4 lanes), blocks at scales from 2^-12 to 2^3, odd row counts, past the
 * kernels' stack of scores, head ranges that are no multiple of 4. */
static void check_attend_fp8(const dsv4_kernels *k, int heads, int dim, int tail, int n_kv, int h0, int h1)
{
    attn_case c = make_attn(heads, dim, n_kv, 2100 + n_kv + dim);
    size_t row_bytes = fmt_kv_row_bytes(dim, tail);
    uint8_t *bytes = malloc((n_kv ? (size_t)n_kv : 1) * row_bytes);
    const uint8_t **rows = malloc((n_kv ? (size_t)n_kv : 1) * sizeof *rows);
    for (int j = 0; j < n_kv; j++) {
        float *x = c.kvbuf + (size_t)j * dim;
        for (int i = 0; i < dim; i++)
            x[i] = ldexpf(x[i], (i / 64 + j) % 16 - 12);
        fmt_kv_row_encode(bytes + (size_t)j * row_bytes, x, dim, tail);
        fmt_kv_row_decode(x, bytes + (size_t)j * row_bytes, dim, tail);
    }
    for (int j = 0; j < n_kv; j++) /* in the scattered order of c.kv */
        rows[j] = bytes + (size_t)((c.kv[j] - c.kvbuf) / dim) * row_bytes;
    float scale = 1.0f / sqrtf((float)dim);
    size_t len = (size_t)heads * dim;
    float *o8 = malloc(len * sizeof *o8), *of = malloc(len * sizeof *of);
    for (size_t i = 0; i < len; i++)
        o8[i] = of[i] = 99.0f;
    k->attend_fp8(o8, c.q, dim, tail, rows, n_kv, c.sink, scale, h0, h1);
    k->attend(of, c.q, dim, (const float *const *)c.kv, n_kv, c.sink, scale, 1, h0, h1);
    if (memcmp(o8, of, len * sizeof *o8) != 0) {
        print_error("%s attend_fp8 heads=%d dim=%d tail=%d n_kv=%d differs from attend\n", k->isa, heads, dim,
                    tail, n_kv);
        fail();
    }
    free(o8);
    free(of);
    free(rows);
    free(bytes);
    free_attn(&c);
}

static void test_attend_fp8(void **state)
{
    (void)state;
    static const int cases[][6] = {{64, 512, 64, 640, 0, 64}, {3, 37, 0, 5, 0, 3},   {2, 512, 64, 1, 0, 2},
                                   {6, 130, 2, 129, 1, 6},    {5, 72, 16, 2501, 0, 5}, {4, 96, 32, 0, 0, 4},
                                   {4, 64, 64, 33, 0, 4},     {3, 100, 20, 17, 0, 3}};
    const dsv4_kernels *kts[1 + MAX_SIMD];
    int n = all_tables(kts);
    for (int i = 0; i < n; i++) {
        assert_non_null(kts[i]->attend_fp8); /* every table has one */
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
            check_attend_fp8(kts[i], cases[ci][0], cases[ci][1], cases[ci][2], cases[ci][3], cases[ci][4],
                             cases[ci][5]);
    }
}

/* A NaN in a row (kept in its block's scale) reaches every head's output. */
static void test_attend_fp8_nan(void **state)
{
    (void)state;
    enum { HEADS = 5, DIM = 512, TAIL = 64, ROWS = 9 };
    float q[HEADS * DIM], x[DIM], out[HEADS * DIM], sink[HEADS] = {0};
    static uint8_t bytes[ROWS][640];
    const uint8_t *rows[ROWS];
    for (int i = 0; i < HEADS * DIM; i++)
        q[i] = 0.01f * (float)(i % 13);
    for (int j = 0; j < ROWS; j++) {
        for (int i = 0; i < DIM; i++)
            x[i] = 0.1f * (float)((i + j) % 5);
        if (j == 6)
            x[300] = NAN;
        fmt_kv_row_encode(bytes[j], x, DIM, TAIL);
        rows[j] = bytes[j];
    }
    const dsv4_kernels *kts[1 + MAX_SIMD];
    int n = all_tables(kts);
    for (int i = 0; i < n; i++) {
        kts[i]->attend_fp8(out, q, DIM, TAIL, rows, ROWS, sink, 0.05f, 0, HEADS);
        for (int k = 0; k < HEADS * DIM; k++)
            if (!isnan(out[k])) {
                print_error("%s attend_fp8: out[%d] = %g over a NaN row\n", kts[i]->isa, k, out[k]);
                fail();
            }
    }
}

/* bf16 rounding of the probabilities is visible: with one key at weight
 * e = exp(z - m) = 1 and another at exp(-0.01) (not a bf16 value), the
 * output differs between the two modes exactly as computed by hand. */
static void test_attend_bf16_probs_by_hand(void **state)
{
    (void)state;
    const dsv4_kernels *kts[1 + MAX_SIMD];
    int n = all_tables(kts);
    float q[2] = {1, 0}, k0[2] = {0, 1}, k1[2] = {-0.01f, 1};
    const float *kv[2] = {k0, k1};
    float sink = -INFINITY;
    for (int i = 0; i < n; i++) {
        float out[2];
        float e1 = expf(-0.01f), den = 1.0f + e1;
        kts[i]->attend(out, q, 2, kv, 2, &sink, 1.0f, 1, 0, 1);
        float p1 = fmt_round_bf16(e1);
        assert_true(fabsf(out[0] - (p1 * -0.01f) / den) <= 1e-7f);
        assert_true(fabsf(out[1] - (1.0f + p1) / den) <= 1e-6f);
        kts[i]->attend(out, q, 2, kv, 2, &sink, 1.0f, 0, 0, 1);
        assert_true(fabsf(out[1] - 1.0f) <= 1e-6f);
        assert_true(fabsf(out[0] - (e1 * -0.01f) / den) <= 1e-7f);
    }
}

static void test_attend_edges(void **state)
{
    (void)state;
    const dsv4_kernels *kts[1 + MAX_SIMD];
    int n = all_tables(kts);
    for (int i = 0; i < n; i++) {
        const dsv4_kernels *k = kts[i];
        enum { H = 4, D = 64, NKV = 10 };
        attn_case c = make_attn(H, D, NKV, 5);
        float out[H * D];
        /* a huge sink takes all the weight: output ~ 0 */
        float big[H] = {1e4f, 1e4f, 80.0f, 1e4f};
        for (int bf = 0; bf <= 1; bf++) {
            k->attend(out, c.q, D, c.kv, NKV, big, 1.0f / 8, bf, 0, H);
            for (int j = 0; j < H * D; j++) {
                assert_false(isnan(out[j]));
                assert_true(fabsf(out[j]) < 1e-20f);
            }
        }
        /* one key and no sink weight: the output is that key */
        float none[H] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        for (int bf = 0; bf <= 1; bf++) {
            k->attend(out, c.q, D, c.kv, 1, none, 1.0f / 8, bf, 0, H);
            for (int h = 0; h < H; h++)
                assert_memory_equal(out + h * D, c.kv[0], D * sizeof(float));
        }
        /* one key with the sink: out = kv0 * e^z / (e^z + e^sink) */
        k->attend(out, c.q, D, c.kv, 1, c.sink, 1.0f / 8, 0, 0, H);
        for (int h = 0; h < H; h++) {
            double z = 0;
            for (int j = 0; j < D; j++)
                z += (double)c.q[h * D + j] * c.kv[0][j];
            double w = 1 / (1 + exp(c.sink[h] - z / 8));
            for (int j = 0; j < D; j++)
                assert_true(fabs(out[h * D + j] - w * c.kv[0][j]) <= 1e-6);
        }
        /* only heads [h0, h1) are written */
        for (int j = 0; j < H * D; j++)
            out[j] = 99.0f;
        k->attend(out, c.q, D, c.kv, NKV, c.sink, 1.0f / 8, 0, 1, 3);
        for (int j = 0; j < H * D; j++)
            if (j < D || j >= 3 * D)
                assert_true(out[j] == 99.0f);
            else
                assert_true(out[j] != 99.0f);
        free_attn(&c);
    }
}

/* ---- small ops ---- */

/* Brute force: sort indices by (score desc, NaN last, index asc), take k. */
static const float *g_scores;
static int by_rank(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    float x = g_scores[i], y = g_scores[j];
    if (isnan(x) != isnan(y))
        return isnan(x) ? 1 : -1;
    if (!isnan(x) && x != y)
        return x > y ? -1 : 1;
    return i - j;
}
static int by_index(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

static void check_topk_with(const dsv4_kernels *kt, const float *scores, int n, int k)
{
    int *out = malloc((size_t)(k ? k : 1) * sizeof *out), *scratch = malloc((size_t)n * sizeof *scratch);
    int *ref = malloc((size_t)n * sizeof *ref);
    for (int i = 0; i < n; i++)
        ref[i] = i;
    g_scores = scores;
    qsort(ref, (size_t)n, sizeof *ref, by_rank);
    qsort(ref, (size_t)k, sizeof *ref, by_index);
    kt->topk(out, scores, n, k, scratch);
    if (memcmp(out, ref, (size_t)k * sizeof *out) != 0) {
        print_error("%s: topk n %d k %d differs from the brute force\n", kt->isa, n, k);
        fail();
    }
    free(out);
    free(scratch);
    free(ref);
}

/* Through every table. */
static void check_topk(const float *scores, int n, int k)
{
    const dsv4_kernels *kts[1 + MAX_SIMD];
    int nk = all_tables(kts);
    for (int i = 0; i < nk; i++)
        check_topk_with(kts[i], scores, n, k);
}

static void test_topk(void **state)
{
    (void)state;
    /* ties go to the lower index */
    float s1[] = {1, 3, 3, 2, 3, 0};
    int out[6], scratch[6];
    ops_topk(out, s1, 6, 2, scratch);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 2);
    ops_topk(out, s1, 6, 4, scratch);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 2);
    assert_int_equal(out[2], 3);
    assert_int_equal(out[3], 4);
    /* k = n returns every index in order */
    ops_topk(out, s1, 6, 6, scratch);
    for (int i = 0; i < 6; i++)
        assert_int_equal(out[i], i);
    /* NaN ranks below everything, -inf included */
    float s2[] = {NAN, -INFINITY, 5, NAN, -1};
    ops_topk(out, s2, 5, 3, scratch);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 2);
    assert_int_equal(out[2], 4);
    ops_topk(out, s2, 5, 4, scratch);
    assert_int_equal(out[0], 0);
    /* random with many ties, against brute force */
    uint64_t seed = 17;
    static float s3[5000];
    for (int i = 0; i < 5000; i++)
        s3[i] = (float)(test_rand_u64(&seed) % 50);
    const int ks[] = {0, 1, 7, 512, 1024, 4999, 5000};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++)
        check_topk(s3, 5000, ks[i]);
    for (int i = 0; i < 5000; i++)
        s3[i] = test_rand_f(&seed);
    check_topk(s3, 5000, 512);
    check_topk(s3, 1, 1);

    /* Signed zeros tie (the lower index wins whatever the sign), NaN ranks
     * below -inf, with k small enough for the vector tables' own path. */
    float z[64];
    for (int i = 0; i < 64; i++)
        z[i] = i < 8 ? (i % 2 ? 0.0f : -0.0f) : i % 3 ? NAN : i % 5 ? -INFINITY : -1.0f;
    for (int k = 1; k <= 32; k++)
        check_topk(z, 64, k);

    /* Enough scores for the vector tables' threshold path (16K and more),
     * every way it can go: random (the sample's threshold holds), bf16-like
     * values with many ties at the threshold, rising (the threshold from a
     * sample of a trend), NaNs and signed zeros among them, all equal (every
     * score a candidate), and a sample that sees only high values while the
     * rest are low (fewer than k candidates: the whole heap). */
    enum { BIG = 70001 };
    float *b = malloc(BIG * sizeof *b);
    const int kb[] = {1, 64, 512, 1024, 8750};
    for (int pass = 0; pass < 6; pass++) {
        for (int i = 0; i < BIG; i++) {
            float r = test_rand_f(&seed);
            b[i] = pass == 0   ? r
                   : pass == 1 ? (float)(int)(r * 64.0f) / 64.0f
                   : pass == 2 ? (float)i * 1e-3f + r * 1e-2f
                   : pass == 3 ? (i % 97 == 0 ? NAN : i % 89 == 0 ? -0.0f : i % 83 == 0 ? 0.0f : r)
                   : pass == 4 ? 0.5f
                               : (i % (BIG / 4096) == 0 ? 10.0f + r : r);
        }
        for (size_t i = 0; i < sizeof kb / sizeof kb[0]; i++)
            check_topk(b, BIG, kb[i]);
        check_topk(b, 16384, 512);
    }
    free(b);
}

/* A quantization simulation of every table (fp4: fp4_quant_sim, else
 * act_quant_sim) against its formats.c reference, bit for bit: 1000 values,
 * first the cases, then random ones over 80 binades (seed), with NaN (one
 * in the last vector of its block), +-inf, and two whole blocks of signed
 * zeros holding a denormal; on the first lens[l] values, in blocks of
 * block0 and 2 * block0 (short last blocks). */
static void check_quant_sim(int fp4, const float *cases, size_t n_cases, uint64_t seed, size_t block0)
{
    const dsv4_kernels *kts[1 + MAX_SIMD];
    int nk = all_tables(kts);
    size_t n = 1000;
    float *x = malloc(n * sizeof *x), *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    for (size_t i = 0; i < n; i++)
        x[i] = ldexpf(test_rand_f(&seed), (int)(test_rand_u64(&seed) % 80) - 40);
    memcpy(x, cases, n_cases * sizeof *cases);
    x[3 * block0 + 8] = NAN;
    x[4 * block0 - 6] = NAN;
    x[5 * block0 - 20] = INFINITY;
    x[5 * block0 - 19] = -INFINITY;
    for (size_t i = 6 * block0; i < 8 * block0; i++)
        x[i] = i % 2 ? -0.0f : 0.0f;
    x[7 * block0 + 2] = 1e-40f;
    static const size_t lens[] = {1000, 999, 135, 17, 5};
    for (int ki = 0; ki < nk; ki++)
        for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
            for (size_t block = block0; block <= 2 * block0; block += block0) {
                memcpy(want, x, n * sizeof *x);
                memcpy(got, x, n * sizeof *x);
                (fp4 ? fmt_fp4_quant_sim : fmt_act_quant_sim)(want, lens[l], block);
                (fp4 ? kts[ki]->fp4_quant_sim : kts[ki]->act_quant_sim)(got, lens[l], block);
                for (size_t i = 0; i < n; i++)
                    if (memcmp(&want[i], &got[i], sizeof *got) != 0) {
                        print_error("%s: n %zu block %zu, x[%zu] = %a: %a vs %a\n", kts[ki]->isa, lens[l], block, i,
                                    x[i], got[i], want[i]);
                        fail();
                    }
            }
    free(x);
    free(want);
    free(got);
}

static void test_act_quant_sim(void **state)
{
    (void)state;
    static const float cases[] = {448.0f, 1.0625f, 1.1875f, -1.0625f, 300.0f, 304.0f, 432.0f, 447.9f, -448.0f,
                                  0x1p-6f, 0x1.ffp-7f, 0x1.8p-9f, 0x1.4p-9f, 0x1p-10f, 0x1p-11f, 0.0f, -0.0f,
                                  0x1.2p-6f, 17.0f, -0.3f, 1e-30f, 500.0f, -1e9f};
    check_quant_sim(0, cases, sizeof cases / sizeof *cases, 99, 64);
}

/* fp4_quant_sim of every table against fmt_fp4_quant_sim, bit for bit: a
 * block whose scale is 1 (amax 6) holding e2m1's ties (0.25 ... 5, each way
 * to even), values just off them, the step edges 2 and 4, signed zeros and
 * small negatives (to -0), NaN (to -6 times the scale), inf; then random
 * values over 80 binades, in blocks of 32 and 64 with short last blocks. */
static void test_fp4_quant_sim(void **state)
{
    (void)state;
    static const float cases[] = {6.0f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, -0.25f, -1.75f, -5.0f,
                                  0x1.000002p-2f, 0x1.fffffep-3f, 1.7499999f, 2.0f, 4.0f, -2.0f, -4.0f, 3.9999998f,
                                  0.0f, -0.0f, -0.1f, 0.1f, 5.9999995f, -6.0f, 1e-30f, -1e-39f, 0.5f, 1.0f, 1.5f,
                                  3.0f, 4.5f};
    check_quant_sim(1, cases, sizeof cases / sizeof *cases, 77, 32);
    /* by hand, scale 1: the ties go to even, the rest to nearest */
    float h[8] = {6.0f, 0.25f, 0.75f, 1.75f, 2.5f, 5.0f, -0.1f, 2.9f};
    fmt_fp4_quant_sim(h, 8, 8);
    static const float hw[8] = {6.0f, 0.0f, 1.0f, 2.0f, 2.0f, 4.0f, -0.0f, 3.0f};
    assert_memory_equal(h, hw, sizeof h);
}

/* index_query_pack of every table against fmt_index_query_pack, bit for
 * bit: the FP4 cases above (ties, edges, signed zeros, NaN and inf in
 * either half of a block), random values over 80 binades, a zero block. */
static void test_index_query_pack(void **state)
{
    (void)state;
    static const float cases[] = {6.0f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, -0.25f, -1.75f, -5.0f,
                                  2.0f, 4.0f, -2.0f, -4.0f, 0.0f, -0.0f, -0.1f, 0.1f, -6.0f, 1e-30f, 3.0f};
    const dsv4_kernels *kts[1 + MAX_SIMD];
    int nk = all_tables(kts);
    uint64_t seed = 5;
    enum { N = 1024 };
    static float x[N], ws[N / 32], gs[N / 32];
    static int8_t wc[N], gc[N];
    for (size_t i = 0; i < N; i++)
        x[i] = ldexpf(test_rand_f(&seed), (int)(test_rand_u64(&seed) % 80) - 40);
    memcpy(x, cases, sizeof cases);
    x[40] = NAN;      /* first half of block 1 */
    x[90] = NAN;      /* second half of block 2 */
    x[100] = INFINITY;
    x[140] = -INFINITY;
    for (size_t i = 160; i < 192; i++)
        x[i] = 0.0f;
    for (int ki = 0; ki < nk; ki++)
        for (size_t n = 32; n <= N; n += N - 32) {
            memset(wc, 0x55, sizeof wc), memset(gc, 0x55, sizeof gc);
            fmt_index_query_pack(wc, ws, x, n);
            kts[ki]->index_query_pack(gc, gs, x, n);
            assert_memory_equal(gc, wc, sizeof wc);
            assert_memory_equal(gs, ws, n / 32 * sizeof *gs);
        }
    int8_t hc[32];
    float hs, h32[32] = {0};
    memcpy(h32, cases, sizeof cases);
    fmt_index_query_pack(hc, &hs, h32, 32); /* scale 1: codes are twice the rounded values */
    assert_true(hs == 1.0f && hc[0] == 12 && hc[1] == 0 && hc[2] == 2 && hc[4] == 4 && hc[7] == 8 && hc[10] == -8);
}

/* sumsq_bf16 of every table against ops_sumsq_bf16, bit for bit: row and
 * column counts around 16, a row stride wider than the rows, values over
 * 60 binades with NaN, inf, squares that overflow or flush, signed zeros.
 * By hand: 3 and 4 give 25; 1 + 2^-8 squares to 1 + 2^-7 + 2^-16, which
 * bf16 rounds to 1 + 2^-7. */
static void test_sumsq_bf16(void **state)
{
    (void)state;
    float h[2] = {3.0f, 4.0f}, hs;
    ops_sumsq_bf16(&hs, h, 2, 1, 2);
    assert_true(hs == 25.0f);
    float g = 1.0f + 0x1p-8f;
    ops_sumsq_bf16(&hs, &g, 1, 1, 1);
    assert_true(hs == 1.0f + 0x1p-7f);

    const dsv4_kernels *kts[1 + MAX_SIMD];
    int nk = all_tables(kts);
    uint64_t seed = 13;
    enum { R = 64, L = 512, LD = L + 3 };
    float *x = malloc((size_t)R * LD * sizeof *x);
    for (size_t i = 0; i < (size_t)R * LD; i++)
        x[i] = ldexpf(test_rand_f(&seed), (int)(test_rand_u64(&seed) % 60) - 30);
    x[5] = NAN, x[LD + 7] = INFINITY, x[2 * LD] = 3e19f, x[3 * LD + 1] = 1e-30f, x[4 * LD + 2] = -0.0f;
    x[17 * LD + 16] = -NAN;
    uint32_t payload = 0x7fbfffffu; /* a NaN whose square keeps low bits that would carry when rounded */
    memcpy(&x[9 * LD + 3], &payload, sizeof payload);
    static const int rows[] = {1, 5, 16, 17, 64}, lens[] = {1, 15, 16, 17, 512};
    float want[R], got[R];
    for (int ki = 1; ki < nk; ki++)
        for (int a = 0; a < 5; a++)
            for (int b = 0; b < 5; b++) {
                ops_sumsq_bf16(want, x, LD, rows[a], lens[b]);
                memset(got, 0x55, sizeof got);
                kts[ki]->sumsq_bf16(got, x, LD, rows[a], lens[b]);
                for (int r = 0; r < rows[a]; r++)
                    if (memcmp(&got[r], &want[r], sizeof *got) != 0) {
                        print_error("%s: rows %d len %d, row %d: %a vs %a\n", kts[ki]->isa, rows[a], lens[b], r,
                                    got[r], want[r]);
                        fail();
                    }
                for (int r = rows[a]; r < R; r++) { /* nothing past the rows */
                    uint32_t u;
                    memcpy(&u, &got[r], sizeof u);
                    assert_true(u == 0x55555555u);
                }
            }
    free(x);
}

/* swiglu of every table against ops_swiglu: within 4 ulp (the vector
 * versions' own exp), NaN and inf where the reference has them; clamped and
 * not, scaled, every tail length. By hand: silu(1) = 1 / (1 + e^-1), a gate
 * clamped to the limit, an up clamped to -limit, NaN through both clamps. */
static void test_swiglu(void **state)
{
    (void)state;
    float g0[3] = {1.0f, 20.0f, NAN}, u0[3] = {1.0f, -30.0f, 2.0f};
    ops_swiglu(g0, u0, 3, 10.0f, 1.0f);
    assert_true(fabsf(g0[0] - 0.7310586f) < 1e-7f);
    assert_true(fabsf(g0[1] - -10.0f * (float)(10.0 / (1.0 + exp(-10.0)))) < 1e-5f);
    assert_true(isnan(g0[2]));
    float g1[1] = {NAN}, u1[1] = {1.0f};
    ops_swiglu(u1, g1, 1, 10.0f, 1.0f); /* NaN up, clamped */
    assert_true(isnan(u1[0]));

    const dsv4_kernels *kts[1 + MAX_SIMD];
    int nk = all_tables(kts);
    uint64_t seed = 31;
    enum { N = 1000 };
    static float g[N], u[N], want[N], got[N];
    for (int i = 0; i < N; i++) {
        g[i] = test_rand_f(&seed) * (i % 3 ? 8.0f : 120.0f);
        u[i] = test_rand_f(&seed) * (i % 5 ? 4.0f : 40.0f);
    }
    g[7] = INFINITY, g[8] = -INFINITY, g[9] = NAN, u[10] = NAN, u[11] = INFINITY, g[12] = -0.0f;
    g[13] = -100.0f, g[14] = 100.0f, g[15] = -87.5f, g[16] = 1e-30f, u[17] = -0.0f;
    static const size_t lens[] = {N, N - 1, 33, 17, 5, 1};
    static const float limits[] = {10.0f, 0.0f}, scales[] = {1.0f, 0.37f};
    for (int ki = 1; ki < nk; ki++)
        for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    memcpy(want, g, sizeof g);
                    memcpy(got, g, sizeof g);
                    ops_swiglu(want, u, lens[l], limits[a], scales[b]);
                    kts[ki]->swiglu(got, u, lens[l], limits[a], scales[b]);
                    for (size_t i = 0; i < N; i++) {
                        float w = want[i], x = got[i];
                        int ok = i >= lens[l] ? memcmp(&w, &x, sizeof w) == 0 /* untouched */
                                 : isnan(w) ? isnan(x)
                                 : isinf(w) ? x == w
                                 : fabsf(x - w) <= 4 * FLT_EPSILON * fabsf(w) + 1e-37f;
                        if (!ok) {
                            print_error("%s: n %zu limit %g scale %g, g %a u %a: %a vs %a\n", kts[ki]->isa,
                                        lens[l], limits[a], scales[b], g[i], u[i], x, w);
                            fail();
                        }
                    }
                }
}

static void test_rmsnorm(void **state)
{
    (void)state;
    uint64_t seed = 4;
    enum { N = 4096 };
    static float x[N], w[N], y[N];
    for (int i = 0; i < N; i++) {
        x[i] = test_rand_f(&seed) * 10;
        w[i] = test_rand_f(&seed);
    }
    double ss = 0;
    for (int i = 0; i < N; i++)
        ss += (double)x[i] * x[i];
    double r = 1 / sqrt(ss / N + 1e-6);
    ops_rmsnorm(y, x, w, N, 1e-6f);
    for (int i = 0; i < N; i++)
        assert_true(fabs(y[i] - w[i] * x[i] * r) <= 1e-6 * fabs(x[i] * r) + 1e-7);
    ops_rmsnorm(y, x, NULL, N, 1e-6f);
    for (int i = 0; i < N; i++)
        assert_true(fabs(y[i] - x[i] * r) <= 1e-6 * fabs(x[i] * r));
    memcpy(w, y, sizeof y);
    ops_rmsnorm(x, x, NULL, N, 1e-6f); /* aliasing */
    assert_memory_equal(x, w, sizeof x);
    /* by hand: x = {3, 4}: mean square 12.5 */
    float h[2] = {3, 4};
    ops_rmsnorm(h, h, NULL, 2, 0.0f);
    assert_true(fabsf(h[0] - 3 / sqrtf(12.5f)) < 1e-6f && fabsf(h[1] - 4 / sqrtf(12.5f)) < 1e-6f);
    /* eps matters for a zero vector */
    float z[4] = {0, 0, 0, 0};
    ops_rmsnorm(z, z, NULL, 4, 1e-6f);
    assert_true(z[0] == 0 && !isnan(z[3]));
}

static void test_rope(void **state)
{
    (void)state;
    /* a quarter turn: (a, b) -> (-b, a) */
    float x[4] = {1, 2, 3, 4}, c[2] = {0, 1}, s[2] = {1, 0};
    ops_rope(x, c, s, 2, 0);
    assert_true(x[0] == -2 && x[1] == 1 && x[2] == 3 && x[3] == 4);
    ops_rope(x, c, s, 2, 1);
    assert_true(x[0] == 1 && x[1] == 2 && x[2] == 3 && x[3] == 4);
    /* random angles against double, and the inverse undoes it */
    uint64_t seed = 8;
    enum { P = 32 };
    float v[2 * P], v0[2 * P], cs[P], sn[P];
    for (int i = 0; i < P; i++) {
        double a = test_rand_f(&seed) * 10;
        cs[i] = (float)cos(a);
        sn[i] = (float)sin(a);
        v[2 * i] = test_rand_f(&seed);
        v[2 * i + 1] = test_rand_f(&seed);
    }
    memcpy(v0, v, sizeof v);
    ops_rope(v, cs, sn, P, 0);
    for (int i = 0; i < P; i++) {
        double re = (double)v0[2 * i] * cs[i] - (double)v0[2 * i + 1] * sn[i];
        double im = (double)v0[2 * i] * sn[i] + (double)v0[2 * i + 1] * cs[i];
        assert_true(fabs(v[2 * i] - re) < 1e-6 && fabs(v[2 * i + 1] - im) < 1e-6);
    }
    ops_rope(v, cs, sn, P, 1);
    for (int i = 0; i < 2 * P; i++)
        assert_true(fabsf(v[i] - v0[i]) < 1e-6f);
}

static void test_select(void **state)
{
    (void)state;
    const dsv4_kernels *best = kernels_select(NULL);
    assert_non_null(best);
    assert_string_equal(kernels_select("scalar")->isa, "scalar");
    assert_ptr_equal(kernels_select("scalar"), kernels_scalar());
    assert_null(kernels_select("bogus"));
    /* the best is the first SIMD table present, each names itself */
    const dsv4_kernels *first = NULL;
    for (int i = 0; i < MAX_SIMD; i++) {
        const dsv4_kernels *k = kernels_select(simd_isas[i]);
        if (k) {
            assert_string_equal(k->isa, simd_isas[i]);
            if (!first)
                first = k;
        }
    }
    assert_ptr_equal(best, first ? first : kernels_scalar());
#if defined(__aarch64__)
    /* every Arm64 CPU has NEON: this build must test it, not only scalar */
    assert_non_null(kernels_select("neon"));
#endif
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        assert_non_null(kernels_select("avx2"));
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select),
        cmocka_unit_test(test_scalar_matmul_vs_double),
        cmocka_unit_test(test_simd_matmul_vs_double),
        cmocka_unit_test(test_scalar_invariance),
        cmocka_unit_test(test_simd_invariance),
        cmocka_unit_test(test_simd_matmul_vs_scalar),
        cmocka_unit_test(test_fp4_every_scale),
        cmocka_unit_test(test_index_scores),
        cmocka_unit_test(test_simd_paths_bitwise),
        cmocka_unit_test(test_fp8_nan_codes),
        cmocka_unit_test(test_fp8_vbmi_tables_bitwise),
        cmocka_unit_test(test_e4m3act),
        cmocka_unit_test(test_e4m3act_bf16_inputs),
        cmocka_unit_test(test_e4m3act_scale_range),
        cmocka_unit_test(test_attend),
        cmocka_unit_test(test_attend_fp8),
        cmocka_unit_test(test_attend_fp8_nan),
        cmocka_unit_test(test_attend_bf16_probs_by_hand),
        cmocka_unit_test(test_attend_edges),
        cmocka_unit_test(test_topk),
        cmocka_unit_test(test_act_quant_sim),
        cmocka_unit_test(test_fp4_quant_sim),
        cmocka_unit_test(test_index_query_pack),
        cmocka_unit_test(test_sumsq_bf16),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
