/* Picks the kernel table once, from what the CPU reports. */
#include "kernels.h"
#include "amx.h"

#include <string.h>

const dsv4_kernels *kernels_avx512(void);
const dsv4_kernels *kernels_avx512_novnni(void);
const dsv4_kernels *kernels_avx2(void);
const dsv4_kernels *kernels_neon(void);

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static int cpu_has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

void matmul_fp8_avx512bf16(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, int n, int rows, int cols, int r0, int r1);
void matmul_fp4_avx512bf16(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, int n, int rows, int cols, int r0, int r1);
void matmul_fp8_avx512vbmi(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X, size_t ldx,
                           int n, int rows, int cols, int r0, int r1);
void matmul_bf16_avx512bf16(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx, int n, int rows,
                            int cols, int r0, int r1);

static const dsv4_kernels *avx512_or_null(void)
{
    if (!cpu_has_avx512())
        return NULL;
    static dsv4_kernels table;
    table = *(__builtin_cpu_supports("avx512vnni") ? kernels_avx512() : kernels_avx512_novnni());
    /* FP8 through VBMI byte tables (e4m3_table.h): the same f32 weights in
     * about half the operations (Sapphire Rapids, FP8 matrix x vector on 16
     * threads 71-74 -> 89-90 GB/s). */
    if (__builtin_cpu_supports("avx512vbmi")) {
        table.matmul_fp8 = matmul_fp8_avx512vbmi;
        table.matmul_fp8_e4m3act = matmul_fp8_avx512vbmi;
    }
    /* avx512_bf16.c also decodes e4m3 with vpermi2b (VBMI): every CPU with
     * AVX512-BF16 but Cooper Lake has it, and that one keeps the fp32 path.
     * On Intel cores vdpbf16ps issues at half the fp32 FMA rate (Sapphire
     * Rapids, measured: 700 vs 1370 GFLOP/s), and there the fp32 kernels
     * beat the bf16 ones at every n (FP4 matrix x vector 61-63 vs 45-51 GB/s,
     * 64 tokens 660-760 vs 500-580 GFLOP/s); AMD's Zen 4/5 run it at the
     * FMA rate (Zen 5: 987 vs 537) and the bf16 kernels win. The choice is
     * fixed per CPU model, so results never change between runs. */
    if (!__builtin_cpu_supports("avx512bf16") || !__builtin_cpu_supports("avx512vbmi") ||
        !__builtin_cpu_is("amd"))
        return &table;
    /* The release-numerics products in bf16 (avx512_bf16.c). */
    table.matmul_fp8_e4m3act = matmul_fp8_avx512bf16;
    table.matmul_fp4_e4m3act = matmul_fp4_avx512bf16;
    table.matmul_bf16_bf16act = matmul_bf16_avx512bf16;
    table.e4m3act_isa = "avx512bf16";
    return &table;
}

/* The avx512 table with the release-numerics products on AMX tiles
 * (avx512_amx.c), asked for by name only. One kernel has to serve every n,
 * decode included, because one-token steps must give the bits prefill gives;
 * on the Sapphire Rapids machine measured, AMX made 64-token products 3-4x
 * faster than the fp32 kernels and prefill 2.0-2.2x, but one-token decode
 * 10-25% slower (bench/history.md, round 6), and decode speed is what most
 * runs need. */
static const dsv4_kernels *amx_or_null(void)
{
#ifndef DSV4_NO_AMX
    const dsv4_kernels *t = avx512_or_null();
    if (!t || !kernels_amx_usable())
        return NULL;
    static dsv4_kernels with_amx;
    with_amx = *t;
    with_amx.isa = "amx";
    with_amx.matmul_fp8_e4m3act = matmul_fp8_amx;
    with_amx.matmul_fp4_e4m3act = matmul_fp4_amx;
    with_amx.e4m3act_isa = "amx";
    with_amx.e4m3act_packed_bytes = amx_packed_bytes;
    with_amx.e4m3act_pack = amx_pack;
    with_amx.matmul_fp8_e4m3act_packed = matmul_fp8_amx_packed;
    with_amx.matmul_fp4_e4m3act_packed = matmul_fp4_amx_packed;
    return &with_amx;
#else
    return NULL;
#endif
}

/* AVX2 with FMA and F16C (the FP8 decoder's vcvtph2ps): Haswell and later. */
static const dsv4_kernels *avx2_or_null(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return NULL;
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) ? kernels_avx2() : NULL;
}
#endif

/* Best first; each entry NULL when this CPU (or this build) lacks it. */
static const dsv4_kernels *by_name(const char *isa)
{
    if (strcmp(isa, "scalar") == 0)
        return kernels_scalar();
#if defined(__x86_64__) || defined(__i386__)
    if (strcmp(isa, "avx512") == 0)
        return avx512_or_null();
    if (strcmp(isa, "amx") == 0)
        return amx_or_null();
    if (strcmp(isa, "avx2") == 0)
        return avx2_or_null();
#endif
#if defined(__aarch64__)
    if (strcmp(isa, "neon") == 0)
        return kernels_neon();
#endif
    return NULL;
}

const dsv4_kernels *kernels_select(const char *isa)
{
    if (isa)
        return by_name(isa);
    static const char *const order[] = {"avx512", "avx2", "neon", "scalar"};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const dsv4_kernels *k = by_name(order[i]);
        if (k)
            return k;
    }
    return kernels_scalar();
}
