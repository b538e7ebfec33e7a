/* Shared by the test programs: cmocka, paths, and small helpers.
 * Tests run from the repository root (tests/run.sh does that). */
#ifndef DSV4_TEST_UTIL_H
#define DSV4_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define FIXTURES "tests/fixtures"

/* Deterministic pseudo-random numbers for test data (xorshift64*). */
static inline uint64_t test_rand_u64(uint64_t *s)
{
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}
/* Uniform in [-1, 1). */
static inline float test_rand_f(uint64_t *s)
{
    return (float)((double)(test_rand_u64(s) >> 11) / (double)(1ULL << 52) - 1.0);
}

#endif
