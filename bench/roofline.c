/* Roofline probes: the machine's read bandwidth and multiply-add peaks.
 * Compiled with baseline flags; each probe carries its own target attribute
 * and runs only after cpuid says the CPU has the instructions. */
#include "roofline.h"

#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#include <sys/syscall.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

static long probe_iterations = 20000000L;

void roofline_set_iterations(long iterations)
{
    probe_iterations = iterations > 0 ? iterations : 20000000L;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int team(int threads)
{
    return threads > 0 ? threads : omp_get_max_threads();
}

static int has(const char *feature)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!strcmp(feature, "avx512"))
        return __builtin_cpu_supports("avx512f");
    if (!strcmp(feature, "avx2"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strcmp(feature, "vnni"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni");
    if (!strcmp(feature, "bf16"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
    return 0;
#elif defined(__aarch64__)
    return !strcmp(feature, "neon");
#else
    (void)feature;
    return 0;
#endif
}

/* ---- read bandwidth ---- */

/* sysfs' size of cache index3 (or index2 where there is no L3) of cpu0:
 * "32768K", "300M". */
static size_t sysfs_llc_bytes(void)
{
    for (int idx = 3; idx >= 2; idx--) {
        char path[64], text[32];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", idx);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t got = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[got] = 0;
        char *end;
        unsigned long long v = strtoull(text, &end, 10);
        if (end == text)
            continue;
        unsigned long long unit = *end == 'K' ? 1ull << 10 : *end == 'M' ? 1ull << 20 : *end == 'G' ? 1ull << 30 : 1;
        if (v > 0 && v <= (1ull << 40) / unit)
            return (size_t)(v * unit);
    }
    return 0;
}

/* sysfs first: glibc's figure can be the whole package's L3 where this
 * process shares one slice of it (a 2-core Zen 5 VM: 384 MiB against the
 * 32 MiB its cores use). */
size_t roofline_llc_bytes(void)
{
    size_t bytes = sysfs_llc_bytes();
#ifdef _SC_LEVEL3_CACHE_SIZE
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (bytes == 0 && l3 > 0)
        bytes = (size_t)l3;
#endif
    return bytes;
}

size_t roofline_memory_bytes(size_t at_least)
{
    size_t want = at_least, llc = roofline_llc_bytes();
    if (llc > 0 && llc <= SIZE_MAX / LLC_MULTIPLE && llc * LLC_MULTIPLE > want)
        want = llc * LLC_MULTIPLE;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) {
        size_t cap = (size_t)pages / 8 * (size_t)page;
        if (want > cap)
            want = cap > at_least ? cap : at_least;
    }
    return want;
}

/* Summing 64-bit words keeps the loads live; 4 accumulators per thread keep
 * several cache lines in flight. Each variant reads the same bytes. The
 * AVX-512 sum runs with and without software prefetch (the matrix kernels
 * prefetch; on the Sapphire Rapids machine a prefetching kernel outran the
 * plain sum), and the probe keeps the faster: the ceiling is what the
 * machine can deliver, not what one loop gets. */
#define PROBE_PREFETCH 2048 /* bytes ahead: 8 steps of 256 */
#if defined(__x86_64__)
__attribute__((target("avx512f"))) static uint64_t sum_avx512(const uint8_t *b, size_t n, int nt, int prefetch)
{
    long long total = 0;
#pragma omp parallel num_threads(nt) reduction(+ : total)
    {
        __m512i a = _mm512_setzero_si512(), c = a, d = a, e = a;
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i += 256) {
            if (prefetch && i + PROBE_PREFETCH < n) {
                _mm_prefetch((const char *)b + i + PROBE_PREFETCH, _MM_HINT_T0);
                _mm_prefetch((const char *)b + i + PROBE_PREFETCH + 64, _MM_HINT_T0);
                _mm_prefetch((const char *)b + i + PROBE_PREFETCH + 128, _MM_HINT_T0);
                _mm_prefetch((const char *)b + i + PROBE_PREFETCH + 192, _MM_HINT_T0);
            }
            a = _mm512_add_epi64(a, _mm512_load_si512(b + i));
            c = _mm512_add_epi64(c, _mm512_load_si512(b + i + 64));
            d = _mm512_add_epi64(d, _mm512_load_si512(b + i + 128));
            e = _mm512_add_epi64(e, _mm512_load_si512(b + i + 192));
        }
        total += _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a, c), _mm512_add_epi64(d, e)));
    }
    return (uint64_t)total;
}

__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint8_t *b, size_t n, int nt)
{
    long long total = 0;
#pragma omp parallel num_threads(nt) reduction(+ : total)
    {
        __m256i a = _mm256_setzero_si256(), c = a, d = a, e = a;
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i += 128) {
            a = _mm256_add_epi64(a, _mm256_load_si256((const __m256i *)(b + i)));
            c = _mm256_add_epi64(c, _mm256_load_si256((const __m256i *)(b + i + 32)));
            d = _mm256_add_epi64(d, _mm256_load_si256((const __m256i *)(b + i + 64)));
            e = _mm256_add_epi64(e, _mm256_load_si256((const __m256i *)(b + i + 96)));
        }
        __m256i s = _mm256_add_epi64(_mm256_add_epi64(a, c), _mm256_add_epi64(d, e));
        long long lane[4];
        _mm256_storeu_si256((__m256i *)lane, s);
        total += lane[0] + lane[1] + lane[2] + lane[3];
    }
    return (uint64_t)total;
}
#endif

static uint64_t sum_plain(const uint8_t *b, size_t n, int nt)
{
    const uint64_t *w = (const uint64_t *)b;
    long long total = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : total)
    for (size_t i = 0; i < n / 8; i++)
        total += (long long)w[i];
    return (uint64_t)total;
}

double roofline_read_gbs(int threads, size_t bytes)
{
    int nt = team(threads);
    size_t n = bytes ? (bytes + 255) / 256 * 256 : roofline_memory_bytes((size_t)1 << 30);
    uint8_t *b = aligned_alloc(64, n);
    if (!b)
        return 0;
    /* first touch by the threads that will read, so pages land on their nodes */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i += 256)
        memset(b + i, (int)(i >> 8) & 0xff, 256);
    double best = 0;
    volatile uint64_t sink = 0;
    for (int it = 0; it < 6; it++) {
        double t0 = now();
#if defined(__x86_64__)
        if (has("avx512"))
            sink += sum_avx512(b, n, nt, it % 2);
        else if (has("avx2"))
            sink += sum_avx2(b, n, nt);
        else
#endif
            sink += sum_plain(b, n, nt);
        double t = now() - t0;
        if ((double)n / t > best)
            best = (double)n / t;
    }
    free(b);
    return best / 1e9;
}

/* ---- multiply-add peaks ---- */

/* Independent chains hide each unit's latency: 12 for the 16-register
 * instruction sets (AVX2), 24 for those with 32 (WIDE: zmm, NEON). 12 were
 * not enough for vdpbf16ps on Zen 5: two cores, 12 / 16 / 24 chains
 * 997 / 1090 / 1070 GFLOP/s (FMA and VNNI equal at 12 and 24). The same
 * instructions per probe either way. The empty asm keeps the compiler from
 * folding the chains. PER_INSTR: operations per instruction (2 per
 * multiply-add). */
#define PEAK_ASM12(REG, A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11)                          \
    __asm__ volatile("" : "+" REG(A0), "+" REG(A1), "+" REG(A2), "+" REG(A3), "+" REG(A4),        \
                     "+" REG(A5), "+" REG(A6), "+" REG(A7), "+" REG(A8), "+" REG(A9), "+" REG(A10),  \
                     "+" REG(A11))
#define PEAK_LOOP(T, ZERO, OP, PER_INSTR, REG, WIDE)                                               \
    double best = 0;                                                                               \
    int chains = (WIDE) ? 24 : 12;                                                                 \
    long iters = probe_iterations * 12 / chains;                                                   \
    for (int it = 0; it < 3; it++) {                                                               \
        double t0 = now();                                                                         \
        _Pragma("omp parallel num_threads(nt)")                                                    \
        {                                                                                          \
            T a0 = ZERO, a1 = ZERO, a2 = ZERO, a3 = ZERO, a4 = ZERO, a5 = ZERO, a6 = ZERO,        \
              a7 = ZERO, a8 = ZERO, a9 = ZERO, a10 = ZERO, a11 = ZERO;                             \
            T b0 = ZERO, b1 = ZERO, b2 = ZERO, b3 = ZERO, b4 = ZERO, b5 = ZERO, b6 = ZERO,        \
              b7 = ZERO, b8 = ZERO, b9 = ZERO, b10 = ZERO, b11 = ZERO;                             \
            for (long i = 0; i < iters; i++) {                                                     \
                OP(a0); OP(a1); OP(a2); OP(a3); OP(a4); OP(a5);                                    \
                OP(a6); OP(a7); OP(a8); OP(a9); OP(a10); OP(a11);                                  \
                PEAK_ASM12(REG, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11);                 \
                if (WIDE) {                                                                        \
                    OP(b0); OP(b1); OP(b2); OP(b3); OP(b4); OP(b5);                                \
                    OP(b6); OP(b7); OP(b8); OP(b9); OP(b10); OP(b11);                              \
                    PEAK_ASM12(REG, b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11);             \
                }                                                                                  \
            }                                                                                      \
            PEAK_ASM12(REG, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11);                     \
            if (WIDE)                                                                              \
                PEAK_ASM12(REG, b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11);                 \
        }                                                                                          \
        double t = now() - t0;                                                                     \
        double ops = (double)iters * chains * (PER_INSTR) * nt;                                    \
        if (ops / t > best)                                                                        \
            best = ops / t;                                                                        \
    }                                                                                              \
    return best / 1e9;

#if defined(__x86_64__)
#define XREG "v"

/* 16 lanes x 2 flops per vfmadd231ps zmm. */
__attribute__((target("avx512f,fma"))) static double peak_fma512(int nt)
{
    const __m512 m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-7f);
#define FMA512_OP(a) a = _mm512_fmadd_ps(a, m, c)
    PEAK_LOOP(__m512, _mm512_setzero_ps(), FMA512_OP, 32, XREG, 1)
}

/* 8 lanes x 2 flops per vfmadd231ps ymm. */
__attribute__((target("avx2,fma"))) static double peak_fma256(int nt)
{
    const __m256 m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-7f);
#define FMA256_OP(a) a = _mm256_fmadd_ps(a, m, c)
    PEAK_LOOP(__m256, _mm256_setzero_ps(), FMA256_OP, 16, XREG, 0)
}

/* 64 byte products x 2 ops per vpdpbusd zmm. */
__attribute__((target("avx512f,avx512vnni"))) static double peak_vnni(int nt)
{
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
#define VNNI_OP(x) x = _mm512_dpbusd_epi32(x, a, b)
    PEAK_LOOP(__m512i, _mm512_setzero_si512(), VNNI_OP, 128, XREG, 1)
}

/* 32 bf16 products x 2 flops per vdpbf16ps zmm. */
__attribute__((target("avx512f,avx512bf16"))) static double peak_bf16(int nt)
{
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3f00);
#define BF16_OP(x) x = _mm512_dpbf16_ps(x, a, b)
    PEAK_LOOP(__m512, _mm512_setzero_ps(), BF16_OP, 64, XREG, 1)
}

/* AMX needs the CPU bits and Linux's permission for the tile data state (5.16+). */
static int amx_permitted(void)
{
    unsigned a, b, c, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    if (!((d >> 22) & 1) || !((d >> 24) & 1)) /* AMX-BF16, AMX-TILE */
        return 0;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

/* One tdpbf16ps on 16x32 bf16 tiles = 16*16*32 multiply-adds; 4 independent
 * accumulator tiles keep the unit busy. The tiles hold random bf16 values,
 * as real operands do: on all 16 cores of the Sapphire Rapids measured, zero
 * tiles ran 19% faster (17.7 vs 14.9 TFLOP/s), the power drawn depending on
 * the data. */
__attribute__((target("amx-tile,amx-bf16"))) static double peak_amx(int nt)
{
    double best = 0;
    long iters = probe_iterations / 2;
    for (int it = 0; it < 3; it++) {
        double t0 = now();
#pragma omp parallel num_threads(nt)
        {
            amx_config cfg;
            memset(&cfg, 0, sizeof cfg);
            cfg.palette = 1;
            for (int i = 0; i < 8; i++) {
                cfg.colsb[i] = 64;
                cfg.rows[i] = 16;
            }
            /* GCC 12's _tile_loadconfig tells the compiler it reads only the
             * first 8 bytes of cfg, so without this barrier the stores to
             * colsb/rows may be dropped: an invalid config faults (#GP). */
            __asm__ __volatile__("" ::: "memory");
            _tile_loadconfig(&cfg);
            /* values in +-[1, 2): sums stay far from overflow */
            uint16_t ops[4][16 * 32] __attribute__((aligned(64)));
            uint32_t seed = 12345u + 7919u * (uint32_t)omp_get_thread_num();
            for (int i = 0; i < 4 * 16 * 32; i++) {
                seed = seed * 1664525u + 1013904223u;
                ops[i / 512][i % 512] = (uint16_t)(0x3f80 | (seed >> 25) | ((seed >> 9) & 0x8000));
            }
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            _tile_loadd(4, ops[0], 64); _tile_loadd(5, ops[1], 64);
            _tile_loadd(6, ops[2], 64); _tile_loadd(7, ops[3], 64);
            for (long i = 0; i < iters; i++) {
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            _tile_release();
        }
        double t = now() - t0;
        double flops = (double)iters * 4 * 16 * 16 * 32 * 2 * nt;
        if (flops / t > best)
            best = flops / t;
    }
    return best / 1e9;
}
#endif

#if defined(__aarch64__)
#define AREG "w"
/* 4 lanes x 2 flops per fmla v.4s. */
static double peak_neon(int nt)
{
    const float32x4_t m = vdupq_n_f32(0.999f), c = vdupq_n_f32(1e-7f);
#define NEON_OP(a) a = vfmaq_f32(c, a, m)
    PEAK_LOOP(float32x4_t, vdupq_n_f32(0), NEON_OP, 8, AREG, 1)
}
#endif

const char *roofline_fma_isa(void)
{
    if (has("avx512"))
        return "avx512";
    if (has("avx2"))
        return "avx2";
    if (has("neon"))
        return "neon";
    return "none";
}

double roofline_fma_gflops(int threads, const char *isa)
{
    int nt = team(threads);
    if (!isa)
        isa = roofline_fma_isa();
    if (!has(isa))
        return 0;
#if defined(__x86_64__)
    if (!strcmp(isa, "avx512"))
        return peak_fma512(nt);
    if (!strcmp(isa, "avx2"))
        return peak_fma256(nt);
#elif defined(__aarch64__)
    if (!strcmp(isa, "neon"))
        return peak_neon(nt);
#endif
    (void)nt;
    return 0;
}

double roofline_vnni_gops(int threads)
{
#if defined(__x86_64__)
    if (has("vnni"))
        return peak_vnni(team(threads));
#endif
    (void)threads;
    return 0;
}

double roofline_bf16_gflops(int threads)
{
#if defined(__x86_64__)
    if (has("bf16"))
        return peak_bf16(team(threads));
#endif
    (void)threads;
    return 0;
}

double roofline_amx_bf16_gflops(int threads)
{
#if defined(__x86_64__)
    if (amx_permitted())
        return peak_amx(team(threads));
#endif
    (void)threads;
    return 0;
}
