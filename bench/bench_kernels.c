/* Kernel benchmarks against the machine's own ceilings, measured in the same
 * run: read bandwidth (buffer >> last-level cache, all threads) for the
 * matrix x vector and indexer kernels; peak multiply-add throughput of the
 * instruction set used (FMA fp32, VNNI int8, BF16 dot, AMX-BF16 where the
 * CPU and kernel allow it) for the matrix x matrix kernels.
 *
 *   build/bench-kernels [--json] [--quick] [--isa NAME] [--only matmul|index|attend]
 *
 * Each figure is the best of several repetitions (the ceiling too), so the
 * ratio compares like with like. Weights are random bytes in the release
 * formats; each matrix x vector case cycles over enough copies that the
 * weights are read from memory, not cache. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../simd/formats.h"
#include "../simd/kernels.h"
#include "../src/indexer.h"
#include "../src/linear.h"
#include "roofline.h"

static int json, quick;
static const dsv4_kernels *K;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void report(const char *kernel, const char *shape, const char *isa, double seconds,
                   double achieved, double ceiling, const char *unit)
{
    int threads = omp_get_max_threads();
    double ratio = ceiling > 0 ? achieved / ceiling : 0;
    if (json)
        printf("{\"kernel\":\"%s\",\"shape\":\"%s\",\"isa\":\"%s\",\"threads\":%d,\"seconds\":%.6g,"
               "\"achieved\":%.4g,\"ceiling\":%.4g,\"unit\":\"%s\",\"ratio\":%.3f}\n",
               kernel, shape, isa, threads, seconds, achieved, ceiling, unit, ratio);
    else
        printf("%-22s %-26s %-8s %3d %11.6f %10.2f %10.2f %-8s %6.1f%%\n", kernel, shape, isa,
               threads, seconds, achieved, ceiling, unit, 100 * ratio);
    fflush(stdout);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ULL;
}

static void *big(size_t bytes)
{
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "bench-kernels: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* Parallel first touch so pages spread like the kernels will read them. */
static void fill_bytes(uint8_t *p, size_t n, int lo, int span)
{
#pragma omp parallel
    {
        uint64_t s = 0x1234567ULL * (uint64_t)(omp_get_thread_num() + 1);
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
            p[i] = (uint8_t)(lo + (int)((s * 2685821657736338717ULL >> 40) % (uint64_t)span));
        }
    }
}

/* ---- kernels ---- */

typedef struct {
    dsv4_linear *m;
    int copies;
    size_t bytes; /* per copy, weights + scales */
} mats;

static mats make_mats(dsv4_wformat fmt, int rows, int cols)
{
    size_t wbytes = fmt == DSV4_WF_FP4 ? (size_t)rows * cols / 2
                    : fmt == DSV4_WF_FP8 ? (size_t)rows * cols
                    : fmt == DSV4_WF_BF16 ? (size_t)rows * cols * 2 : (size_t)rows * cols * 4;
    size_t sbytes = fmt == DSV4_WF_FP4 ? (size_t)rows * (cols / 32)
                    : fmt == DSV4_WF_FP8 ? (size_t)((rows + 127) / 128) * ((cols + 127) / 128) : 0;
    size_t target = roofline_memory_bytes((size_t)(quick ? 256 : 1024) << 20);
    mats M = {.bytes = wbytes + sbytes};
    M.copies = (int)((target + M.bytes - 1) / M.bytes);
    if (M.copies < 1)
        M.copies = 1;
    M.m = calloc((size_t)M.copies, sizeof *M.m);
    for (int i = 0; i < M.copies; i++) {
        uint8_t *w = big(wbytes);
        if (fmt == DSV4_WF_FP8)
            fill_bytes(w, wbytes, 0, 0x7e); /* finite positive codes; signs do not matter here */
        else if (fmt == DSV4_WF_BF16) {
            uint16_t *h = (uint16_t *)w;
            fill_bytes(w, wbytes, 0, 256);
            for (size_t j = 0; j < wbytes / 2; j++)
                h[j] = (uint16_t)(0x3c00 | (h[j] & 0x83ff));
        } else if (fmt == DSV4_WF_F32) {
            float *f = (float *)w;
            for (size_t j = 0; j < wbytes / 4; j++)
                f[j] = (float)(rnd() % 1000) / 1000.0f - 0.5f;
        } else
            fill_bytes(w, wbytes, 0, 256);
        uint8_t *s = NULL;
        if (sbytes) {
            s = big(sbytes);
            fill_bytes(s, sbytes, 120, 8);
        }
        M.m[i] = (dsv4_linear){fmt, rows, cols, w, s};
    }
    return M;
}

static void free_mats(mats *M)
{
    for (int i = 0; i < M->copies; i++) {
        free((void *)M->m[i].data);
        free((void *)M->m[i].scale);
    }
    free(M->m);
}

static float *make_x(size_t count)
{
    float *x = big(count * sizeof *x);
    for (size_t i = 0; i < count; i++)
        x[i] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
    return x;
}

/* n tokens through every copy once; the best of a few passes. e4m3act: the
 * release-numerics entry (activations FP8-simulated, bf16 products). */
static double time_matmul(mats *M, int n, const float *X, float *Y, int passes, int e4m3act)
{
    double best = 1e30;
    for (int p = 0; p < passes; p++) {
        double t0 = now();
        for (int i = 0; i < M->copies; i++)
            (e4m3act ? linear_matmul_e4m3act : linear_matmul)(K, &M->m[i], Y, X, n);
        double t = (now() - t0) / M->copies;
        if (t < best)
            best = t;
    }
    return best;
}

/* One token through EXPERTS_PER_CALL copies per call, as a decode step's
 * MoE hands its experts' matrices to the kernels (one linear_matmul_jobs
 * call, so one fork and join for all of them); the best of a few passes. */
#define EXPERTS_PER_CALL 6
static double time_matvec_jobs(mats *M, const float *X, float *Y, int passes, int e4m3act)
{
    int calls = M->copies / EXPERTS_PER_CALL, rows = M->m[0].rows, cols = M->m[0].cols;
    linear_job jobs[EXPERTS_PER_CALL];
    double best = 1e30;
    for (int p = 0; p < passes; p++) {
        double t0 = now();
        for (int c = 0; c < calls; c++) {
            for (int e = 0; e < EXPERTS_PER_CALL; e++)
                jobs[e] = (linear_job){&M->m[c * EXPERTS_PER_CALL + e], Y + (size_t)e * rows, (size_t)rows, X,
                                       (size_t)cols, 1, 0, rows, e4m3act};
            linear_matmul_jobs(K, jobs, EXPERTS_PER_CALL);
        }
        double t = (now() - t0) / ((double)calls * EXPERTS_PER_CALL);
        if (t < best)
            best = t;
    }
    return best;
}

/* The matvec_<fmt>_x6[_e4m3act] row of an expert shape. */
static void report_matvec_jobs(mats *M, const float *X, float *Y, const char *model, const char *name,
                               const char *fmt, const char *isa, int e4m3act, double bw)
{
    char kernel[64], shape[64];
    snprintf(kernel, sizeof kernel, "matvec_%s_x%d%s", fmt, EXPERTS_PER_CALL, e4m3act ? "_e4m3act" : "");
    snprintf(shape, sizeof shape, "%s %s x%d", model, name, EXPERTS_PER_CALL);
    double t = time_matvec_jobs(M, X, Y, quick ? 2 : 4, e4m3act);
    report(kernel, shape, isa, t, (double)M->bytes / t / 1e9, bw, "GB/s");
}

static const char *fmt_label(dsv4_wformat f)
{
    return f == DSV4_WF_FP4 ? "fp4" : f == DSV4_WF_FP8 ? "fp8" : f == DSV4_WF_BF16 ? "bf16" : "f32";
}

static double bf16_peak, amx_peak;

static void bench_matmul(const char *model, const char *name, dsv4_wformat fmt, int rows, int cols,
                         double bw, double fma_peak)
{
    mats M = make_mats(fmt, rows, cols);
    float *X = make_x((size_t)64 * cols), *Y = big((size_t)64 * rows * sizeof *Y);
    char kernel[64], shape[64];
    snprintf(kernel, sizeof kernel, "matvec_%s", fmt_label(fmt));
    snprintf(shape, sizeof shape, "%s %s [%dx%d]", model, name, rows, cols);
    double t = time_matmul(&M, 1, X, Y, quick ? 2 : 4, 0);
    report(kernel, shape, K->isa, t, (double)M.bytes / t / 1e9, bw, "GB/s");
    int experts = fmt == DSV4_WF_FP4 && M.copies >= EXPERTS_PER_CALL;
    if (experts) /* expert matrices are small: also as the MoE calls them */
        report_matvec_jobs(&M, X, Y, model, name, fmt_label(fmt), K->isa, 0, bw);
    /* 64 tokens: compute-bound; a few copies are enough (reuse is in-cache). */
    mats M64 = M;
    M64.copies = M.copies < 4 ? M.copies : 4;
    t = time_matmul(&M64, 64, X, Y, quick ? 1 : 3, 0);
    snprintf(kernel, sizeof kernel, "matmul64_%s", fmt_label(fmt));
    report(kernel, shape, K->isa, t, 2.0 * rows * cols * 64 / t / 1e9, fma_peak, "GFLOP/s");
    if (fmt == DSV4_WF_FP8 || fmt == DSV4_WF_FP4) {
        /* release numerics: the same shapes through the e4m3act entries; where
         * those multiply in bf16 the compute ceiling is the BF16 dot peak, or
         * the AMX peak where they run on AMX tiles */
        int bf16_path = K->matmul_fp8_e4m3act != K->matmul_fp8;
        int amx_path = K->e4m3act_isa && !strcmp(K->e4m3act_isa, "amx") && amx_peak > 0;
        const char *isa = K->e4m3act_isa ? K->e4m3act_isa : K->isa;
        for (int i = 0; i < 64; i++)
            fmt_act_quant_sim(X + (size_t)i * cols, (size_t)cols, 128);
        t = time_matmul(&M, 1, X, Y, quick ? 2 : 4, 1);
        snprintf(kernel, sizeof kernel, "matvec_%s_e4m3act", fmt_label(fmt));
        report(kernel, shape, isa, t, (double)M.bytes / t / 1e9, bw, "GB/s");
        if (experts)
            report_matvec_jobs(&M, X, Y, model, name, fmt_label(fmt), isa, 1, bw);
        t = time_matmul(&M64, 64, X, Y, quick ? 1 : 3, 1);
        snprintf(kernel, sizeof kernel, "matmul64_%s_e4m3act", fmt_label(fmt));
        report(kernel, shape, isa, t, 2.0 * rows * cols * 64 / t / 1e9,
               amx_path ? amx_peak : bf16_path && bf16_peak > 0 ? bf16_peak : fma_peak, "GFLOP/s");
    }
    free(X);
    free(Y);
    free_mats(&M);
}

/* A standard normal deviate (Box-Muller). */
static double gaussian(void)
{
    double u = ((double)(rnd() >> 11) + 0.5) / 9007199254740992.0, v = (double)(rnd() >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static void bench_indexer(int n_keys, double bw, double vnni_peak)
{
    const int heads = 64, dim = 128, nb = dim / 32;
    /* Operands as the engine makes them: queries and keys are Hadamard-
     * rotated before FP4 quantization (indexer.c, compressor.c), so their
     * values look Gaussian; the engine's packers quantize them here. */
    float *raw = big((size_t)heads * dim * sizeof *raw);
    for (int i = 0; i < heads * dim; i++)
        raw[i] = (float)gaussian();
    int8_t *qc = big((size_t)heads * dim);
    float *qs = big((size_t)heads * nb * sizeof *qs), *w = big(heads * sizeof *w);
    fmt_index_query_pack(qc, qs, raw, (size_t)heads * dim);
    for (int h = 0; h < heads; h++)
        w[h] = fmt_round_bf16(0.01f * (float)(h - 20));
    /* enough independent key sets that they come from memory (copies of one) */
    size_t kbytes = (size_t)n_keys * (dim / 2), sbytes = (size_t)n_keys * nb;
    int sets = (int)(roofline_memory_bytes((size_t)(quick ? 128 : 512) << 20) / (kbytes + sbytes)) + 1;
    uint8_t **keys = calloc((size_t)sets, sizeof *keys), **ks = calloc((size_t)sets, sizeof *ks);
    float key[128];
    for (int i = 0; i < sets; i++) {
        keys[i] = big(kbytes);
        ks[i] = big(sbytes);
        if (i > 0) {
            memcpy(keys[i], keys[0], kbytes);
            memcpy(ks[i], ks[0], sbytes);
            continue;
        }
        for (int s = 0; s < n_keys; s++) {
            for (int c = 0; c < dim; c++)
                key[c] = (float)gaussian();
            fmt_index_key_pack(keys[0], ks[0], (size_t)s, dim, key);
        }
    }
    float *scores = big((size_t)n_keys * sizeof *scores);
    int *top = big(1024 * sizeof *top), *scratch = big((size_t)n_keys * sizeof *scratch);
    double best = 1e30;
    for (int p = 0; p < (quick ? 1 : 3); p++) {
        double t0 = now();
        for (int i = 0; i < sets; i++) /* the engine's split over threads */
            indexer_scores_fp4(K, scores, qc, qs, w, keys[i], ks[i], n_keys, heads, dim);
        double t = (now() - t0) / sets;
        if (t < best)
            best = t;
    }
    char shape[64];
    snprintf(shape, sizeof shape, "%dK keys x 64h x 128", n_keys / 1024);
    report("index_fp4 (bytes)", shape, K->isa, best, (double)(kbytes + sbytes) / best / 1e9, bw, "GB/s");
    report("index_fp4 (int8 ops)", shape, K->isa, best, 2.0 * n_keys * heads * dim / best / 1e9,
           vnni_peak, "GOP/s");
    /* top-k: one thread, as the engine runs it per query */
    int k = n_keys >= 262144 ? 1024 : 512;
    double tk = 1e30;
    for (int p = 0; p < 3; p++) {
        double t0 = now();
        K->topk(top, scores, n_keys, k, scratch);
        double t = now() - t0;
        if (t < tk)
            tk = t;
    }
    snprintf(shape, sizeof shape, "%dK scores, k=%d", n_keys / 1024, k);
    report("topk (1 thread)", shape, K->isa, tk, (double)n_keys * 4 / tk / 1e9,
           bw / omp_get_max_threads(), "GB/s");
    for (int i = 0; i < sets; i++) {
        free(keys[i]);
        free(ks[i]);
    }
    free(keys);
    free(ks);
    free(scores);
    free(top);
    free(scratch);
    free(qc);
    free(qs);
    free(w);
    free(raw);
}

/* The rows attention reads: fp32, or the release FP8 layout (attend_fp8:
 * 448 e4m3 + 64 bf16). */
enum rows { ROWS_F32, ROWS_FP8 };

/* One query, 64 heads x 512, over n_comp gathered + 128 window entries;
 * heads split over threads, `group` heads per call (the vector kernels
 * share each row they load among their group). fp32 rows go through attend,
 * FP8 rows through attend_fp8 (release numerics); against the FMA peak. */
static void bench_attend(double peak, int n_comp, int group, enum rows rows)
{
    const int heads = 64, dim = 512, rope = 64, n_kv = n_comp + 128;
    size_t row8 = fmt_kv_row_bytes(dim, rope);
    float *q = make_x((size_t)heads * dim), *kvf = make_x((size_t)n_kv * dim);
    uint8_t *kv8 = big((size_t)n_kv * row8);
    float *out = big((size_t)heads * dim * sizeof *out), sink[64];
    const float **kv = malloc(n_kv * sizeof *kv);
    const uint8_t **kv_8 = malloc(n_kv * sizeof *kv_8);
    for (size_t i = 0; i < (size_t)heads * dim; i++)
        q[i] = fmt_round_bf16(q[i]);
    for (int j = 0; j < n_kv; j++) { /* rows in scattered order, as gathered */
        size_t r = (size_t)((j * 7919) % n_kv);
        fmt_kv_row_encode(kv8 + (size_t)j * row8, kvf + (size_t)j * dim, dim, rope);
        kv[j] = kvf + r * dim;
        kv_8[j] = kv8 + r * row8;
    }
    for (int h = 0; h < heads; h++)
        sink[h] = 0.1f;
    double best = 1e30;
    for (int p = 0; p < 5; p++) {
        double t0 = now();
#pragma omp parallel for schedule(static)
        for (int h = 0; h < heads; h += group) {
            int h1 = h + group < heads ? h + group : heads;
            if (rows == ROWS_FP8)
                K->attend_fp8(out, q, dim, rope, kv_8, n_kv, sink, 0.044f, h, h1);
            else
                K->attend(out, q, dim, kv, n_kv, sink, 0.044f, 1, h, h1);
        }
        double t = now() - t0;
        if (t < best)
            best = t;
    }
    static const char *const names[] = {"attend", "attend_fp8"};
    char kernel[64], shape[64];
    snprintf(kernel, sizeof kernel, "%s (%d head%s/call)", names[rows], group, group > 1 ? "s" : "");
    snprintf(shape, sizeof shape, "64h x 512, %d+128 kv", n_comp);
    report(kernel, shape, K->isa, best, 4.0 * heads * n_kv * dim / best / 1e9, peak, "GFLOP/s");
    free(q);
    free(kvf);
    free(kv8);
    free(out);
    free(kv);
    free(kv_8);
}

int main(int argc, char **argv)
{
    const char *isa = NULL, *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc)
            isa = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--json] [--quick] [--isa NAME] [--only matmul|index|attend]\n", argv[0]);
            return 2;
        }
    }
    K = kernels_select(isa);
    if (!K) {
        fprintf(stderr, "bench-kernels: ISA '%s' unknown or not supported here\n", isa);
        return 2;
    }
    if (quick)
        roofline_set_iterations(20000000L / 8);
    size_t probe_bytes = roofline_memory_bytes((size_t)(quick ? 256 : 1024) << 20);
    double bw = roofline_read_gbs(0, probe_bytes);
    char probe_shape[64];
    snprintf(probe_shape, sizeof probe_shape, "%zu MiB (LLC %zu MiB)", probe_bytes >> 20, roofline_llc_bytes() >> 20);
    report("probe_read_bw", probe_shape, "-", 0, bw, bw, "GB/s");
    /* the matmuls' ceiling: the FMA peak of the vectors the chosen kernels use */
    /* the "amx" table is the avx512 one with AMX release-numerics products:
     * its fp32 kernels run on the AVX-512 FMA units */
    const char *fma_isa = !strcmp(K->isa, "scalar") ? roofline_fma_isa() : !strcmp(K->isa, "amx") ? "avx512" : K->isa;
    double fma = roofline_fma_gflops(0, fma_isa);
    report("probe_fma_f32", "vfmadd / fmla", fma_isa, 0, fma, fma, "GFLOP/s");
    double vnni = roofline_vnni_gops(0);
    if (vnni > 0)
        report("probe_vnni_int8", "zmm vpdpbusd", "avx512", 0, vnni, vnni, "GOP/s");
    double bf16 = bf16_peak = roofline_bf16_gflops(0);
    if (bf16 > 0)
        report("probe_bf16_dot", "zmm vdpbf16ps", "avx512", 0, bf16, bf16, "GFLOP/s");
    double amx = amx_peak = roofline_amx_bf16_gflops(0);
    if (amx > 0)
        report("probe_amx_bf16", "tdpbf16ps 16x16x32", "amx", 0, amx, amx, "GFLOP/s");

    if (!only || !strcmp(only, "matmul")) {
        bench_matmul("Flash", "expert w1/w3", DSV4_WF_FP4, 2048, 4096, bw, fma);
        bench_matmul("Flash", "expert w2", DSV4_WF_FP4, 4096, 2048, bw, fma);
        bench_matmul("Pro", "expert w1/w3", DSV4_WF_FP4, 3072, 7168, bw, fma);
        bench_matmul("Flash", "wq_b", DSV4_WF_FP8, 32768, 1024, bw, fma);
        bench_matmul("Pro", "wq_b", DSV4_WF_FP8, 65536, 1536, bw, fma);
        bench_matmul("Flash", "compressor wkv", DSV4_WF_BF16, 1024, 4096, bw, fma);
    }
    if (!only || !strcmp(only, "index")) {
        bench_indexer(65536, bw, vnni);
        bench_indexer(262144, bw, vnni);
    }
    if (!only || !strcmp(only, "attend")) {
        bench_attend(fma, 512, 1, ROWS_F32);
        bench_attend(fma, 512, 4, ROWS_F32);
        /* attention over FP8 rows (the KV cache of release numerics), and an
         * HCA layer at 512K tokens, against the FMA peak */
        if (K->attend_fp8)
            for (int n_comp = 512; n_comp <= 4096; n_comp *= 8) {
                bench_attend(fma, n_comp, 4, ROWS_FP8);
                bench_attend(fma, n_comp, 8, ROWS_FP8);
            }
    }
    return 0;
}
