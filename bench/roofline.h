/* Ceilings of the machine we run on, measured now: sustained read bandwidth
 * and peak multiply-add throughput of each instruction set. A benchmark
 * divides what a kernel achieves by these to say how close it is to the
 * hardware's limit. Model-agnostic; depends only on libc, libm and libgomp.
 *
 * threads <= 0 means all OpenMP threads (omp_get_max_threads()). Each figure
 * is the best of a few repetitions. A probe for an instruction set the CPU
 * (or, for AMX, the kernel) does not grant returns 0. */
#ifndef DSV4_BENCH_ROOFLINE_H
#define DSV4_BENCH_ROOFLINE_H

#include <stddef.h>

/* GB/s (1e9 bytes) reading a buffer of `bytes` (0: roofline_memory_bytes
 * of 1 GiB; choose it much larger than the last-level cache to measure
 * memory, not cache). */
double roofline_read_gbs(int threads, size_t bytes);

/* A size that reads from memory, not cache: at least `at_least`, and
 * LLC_MULTIPLE times the last-level cache where the system reports one
 * (sysfs, else glibc), but at most an eighth of the physical memory. One Sapphire Rapids-class VM reports a 300 MiB L3: a
 * 256 MiB probe there read 95-211 GB/s from one run to the next. */
#define LLC_MULTIPLE 8
size_t roofline_memory_bytes(size_t at_least);

/* The last-level cache in bytes as this process sees it, 0 if unknown. */
size_t roofline_llc_bytes(void);

/* Peak fp32 GFLOP/s of vfmadd with vectors of `isa`: "avx512" (zmm),
 * "avx2" (ymm, FMA3), "neon" (fmla q), or NULL for the widest this CPU has. */
double roofline_fma_gflops(int threads, const char *isa);
/* The instruction set roofline_fma_gflops(threads, NULL) measures. */
const char *roofline_fma_isa(void);

/* Peak int8 GOP/s (2 per multiply-add): AVX-512 VNNI vpdpbusd zmm. */
double roofline_vnni_gops(int threads);
/* Peak GFLOP/s of AVX-512 BF16 vdpbf16ps zmm (2 per bf16 product). */
double roofline_bf16_gflops(int threads);
/* Peak GFLOP/s of AMX-BF16 tdpbf16ps; asks Linux for the tile-data permission. */
double roofline_amx_bf16_gflops(int threads);

/* Compute probes run `iterations` x 12 instructions per thread; 0 means the
 * default (about 0.1-0.5 s per probe). Smaller values trade precision for time. */
void roofline_set_iterations(long iterations);

#endif
