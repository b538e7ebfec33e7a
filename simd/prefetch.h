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
static inline void prefetch_next_block(const char *next, size_t done, size_t step_bytes, size_t left)
{
    for (size_t j = 0; j < step_bytes; j += 64)
        if (done + j < left)
            _mm_prefetch(next + done + j, _MM_HINT_T1);
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
