/* Software prefetch of the next block of rows in address order, for the
 * matrix x vector kernels. They read a block of rows side by side, a few
 * bytes of each row per step; from memory that pattern came at half the
 * bandwidth of one sequential stream on the machines measured, and the
 * hardware prefetchers did not fix it. Prefetching the next block (the
 * rows that follow, contiguous in memory) as one sequential stream, the
 * same number of bytes per step as the step consumes, restores it. */
#ifndef DSV4_SIMD_PREFETCH_H
#define DSV4_SIMD_PREFETCH_H

#include <immintrin.h>
#include <stddef.h>

/* next: the next block's first byte; done: bytes of it prefetched so far;
 * left: bytes from next to the end of the caller's rows (nothing past them:
 * the rows after belong to another work item, maybe another thread). Sizes,
 * not an end pointer: GCC 12 dropped the prefetches when bounded by a
 * pointer comparison. */
/* Into L1 (T0): measured against L2 (T1) with one binary each, alternated,
 * all matrix x vector rows of bench-kernels --quick: on two Zen 5 cores in
 * the VM's fast phase (probe ~80 GB/s) FP4 36-48 against 23-47 GB/s, BF16
 * 50-52 against 48-49, the bf16 head alone 62-64 against 54-58; on the
 * 16-core Sapphire Rapids equal or better (FP8 94-107 against 90-94 GB/s). */
#ifndef PREFETCH_NEXT_HINT
#define PREFETCH_NEXT_HINT _MM_HINT_T0
#endif
static inline void prefetch_next_block(const char *next, size_t done, size_t step_bytes, size_t left)
{
    for (size_t j = 0; j < step_bytes; j += 64)
        if (done + j < left)
            _mm_prefetch(next + done + j, PREFETCH_NEXT_HINT);
}

/* Part `part` of `parts` equal shares of the `bytes` at next, in address
 * order: the many-token paths spread the next row block's prefetch over the
 * chunks of the current one. */
static inline void prefetch_share(const char *next, size_t bytes, int part, int parts)
{
    size_t lo = bytes * (size_t)part / (size_t)parts, hi = bytes * (size_t)(part + 1) / (size_t)parts;
    for (size_t j = lo & ~(size_t)63; j < hi; j += 64)
        _mm_prefetch(next + j, _MM_HINT_T0);
}

#endif
