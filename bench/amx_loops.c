/* What the AMX tile unit allows a 64-token product, apart from the kernel:
 * loops of tdpbf16ps fed as simd/avx512_amx.c feeds them (2x2 tiles: two A
 * and two B tile loads per four products), with and without the FP4 decode
 * a 64-token product needs per product (128 weights: bf16_decode.h's
 * fp4_group_d and its stores), every operand in L1 or B streamed from L2.
 * Prints ns per product and TFLOP/s for one thread, two and all, each loop
 * against the products-only loop of the same thread count (all threads'
 * products-only loop is what bench-kernels' probe_amx_bf16 measures).
 *
 *   gcc -O2 -fopenmp -o build/amx-loops bench/amx_loops.c && build/amx-loops
 *
 * Sapphire Rapids figures and what they showed: bench/history.md, round 17.
 * Linux only (the tile data permission); exits 1 without AMX. */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vbmi,amx-tile,amx-bf16")
#define _GNU_SOURCE
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../simd/bf16_decode.h"

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

#define LOAD(t, base) __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"(64L) : "memory")
#define STORE(t, base) __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"(64L) : "memory")
#define DP(c, a, b) __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

enum { PRODUCTS_ONLY, LOADS_L1, B_FROM_L2, C_ROUND_TRIP, N_LOOPS };
static const char *const loop_names[N_LOOPS] = {"4 products, no loads", "2x2: 4 loads + 4 products",
                                                "2x2, B from L2", "2x2, C through memory /16"};

#define L2_BYTES (512 * 1024) /* B streamed from here: 64 tokens x 4096 columns */
#define ITERS 100000L

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint16_t random_bf16(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return (uint16_t)(0x3f80 | (*seed >> 25) | ((*seed >> 9) & 0x8000)); /* +-[1, 2) */
}

/* One thread's loop; the master thread notes when the team starts (after
 * every thread's setup) and ends. */
static void run_loop(int loop, int decode, uint8_t *l2, double *t0, double *t1)
{
    tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    __asm__ volatile("ldtilecfg %0" ::"m"(cfg) : "memory");
    static __thread uint16_t ops[4][512] __attribute__((aligned(64)));
    static __thread float c_mem[4][256] __attribute__((aligned(64)));
    static __thread uint8_t codes[64 * 64] __attribute__((aligned(64)));
    static __thread uint16_t decoded[16][512] __attribute__((aligned(64)));
    uint32_t seed = 99u + (uint32_t)omp_get_thread_num();
    for (int i = 0; i < 4 * 512; i++)
        ops[i / 512][i % 512] = random_bf16(&seed);
    for (size_t i = 0; i < L2_BYTES / 2; i++)
        ((uint16_t *)l2)[i] = random_bf16(&seed);
    for (int i = 0; i < 64 * 64; i++)
        codes[i] = (uint8_t)random_bf16(&seed);
    __asm__ volatile("tilezero %tmm0\n tilezero %tmm1\n tilezero %tmm2\n tilezero %tmm3");
    LOAD(4, ops[0]);
    LOAD(5, ops[1]);
    LOAD(6, ops[2]);
    LOAD(7, ops[3]);
    __m512i d0 = _mm512_set1_epi16(64 << 7), d1 = _mm512_set1_epi16(65 << 7);
#pragma omp barrier
#pragma omp master
    *t0 = now();
    for (long it = 0; it < ITERS; it++) {
        const uint8_t *b0 = loop == B_FROM_L2 ? l2 + ((it * 2048) & (L2_BYTES - 1)) : (const uint8_t *)ops[2];
        const uint8_t *b1 = loop == B_FROM_L2 ? b0 + 1024 : (const uint8_t *)ops[3];
        if (loop != PRODUCTS_ONLY) {
            LOAD(4, ops[0]);
            LOAD(6, b0);
            LOAD(7, b1);
            LOAD(5, ops[1]);
        }
        DP(0, 4, 6);
        DP(1, 4, 7);
        DP(2, 5, 6);
        DP(3, 5, 7);
        if (loop == C_ROUND_TRIP && it % 4 == 3) {
            STORE(0, c_mem[0]);
            STORE(1, c_mem[1]);
            STORE(2, c_mem[2]);
            STORE(3, c_mem[3]);
            LOAD(0, c_mem[1]);
            LOAD(1, c_mem[0]);
            LOAD(2, c_mem[3]);
            LOAD(3, c_mem[2]);
        }
        for (int g = 0; decode && g < 4; g++) { /* 4 x 128 weights: 4 products' worth at 64 tokens */
            __m512i v[4];
            fp4_group_d(codes + 64 * ((it * 4 + g) & 63), d0, d1, v);
            for (int i = 0; i < 4; i++)
                _mm512_store_si512(decoded[4 * (g & 1) + i], v[i]);
        }
    }
#pragma omp barrier
#pragma omp master
    *t1 = now();
    __asm__ volatile("tilerelease");
}

/* Best of three timings of the team, in ns per product per thread. */
static double time_loop(int loop, int decode, int threads, uint8_t **l2)
{
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = 0, t1 = 0;
#pragma omp parallel num_threads(threads)
        run_loop(loop, decode, l2[omp_get_thread_num()], &t0, &t1);
        if (t1 - t0 < best)
            best = t1 - t0;
    }
    return best / ITERS / 4 * 1e9;
}

int main(void)
{
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) != 0 ||
        !__builtin_cpu_supports("avx512bf16")) {
        fprintf(stderr, "amx-loops: this CPU or kernel gives no AMX tiles\n");
        return 1;
    }
    int all = omp_get_max_threads(), counts[3] = {1, 2, all};
    uint8_t **l2 = calloc((size_t)all, sizeof *l2);
    for (int i = 0; i < all; i++)
        l2[i] = aligned_alloc(4096, L2_BYTES);
    /* Untimed first: the first tile products of a process ran at half
     * speed for tens of milliseconds on the device (bench/history.md). */
    time_loop(PRODUCTS_ONLY, 0, all, l2);
    for (int c = 0; c < 3; c++) {
        int threads = counts[c];
        if (threads > all || (c > 0 && threads == counts[c - 1]))
            continue;
        double base = time_loop(PRODUCTS_ONLY, 0, threads, l2);
        for (int loop = 0; loop < N_LOOPS; loop++)
            for (int decode = 0; decode < 2; decode++) {
                double ns = loop == PRODUCTS_ONLY && !decode ? base : time_loop(loop, decode, threads, l2);
                printf("%2d threads  %-28s %-12s %6.2f ns/product  %6.2f TFLOP/s  %5.1f%% of products only\n",
                       threads, loop_names[loop], decode ? "+ FP4 decode" : "", ns, threads * 16384.0 / ns / 1e3,
                       100.0 * base / ns);
            }
    }
    return 0;
}
