/* The subset of cmocka that tests/test_kernels.c uses, for the aarch64
 * cross build run under qemu-user (Debian has no arm64 libcmocka on an x86
 * host without multiarch). Same output shape: one line per test, a summary,
 * exit status = number of failed tests. */
#ifndef DSV4_CMOCKA_LITE_H
#define DSV4_CMOCKA_LITE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef void (*CMUnitTestFunction)(void **state);
struct CMUnitTest {
    const char *name;
    CMUnitTestFunction test_func;
};

static jmp_buf cmocka_lite_jump;

static inline void cmocka_lite_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: error: %s\n", file, line, what);
    longjmp(cmocka_lite_jump, 1);
}

#define print_error(...) fprintf(stderr, __VA_ARGS__)
#define print_message(...) printf(__VA_ARGS__)
#define fail() cmocka_lite_fail(__FILE__, __LINE__, "fail()")
#define assert_true(c) ((c) ? (void)0 : cmocka_lite_fail(__FILE__, __LINE__, #c))
#define assert_false(c) assert_true(!(c))
#define assert_null(p) assert_true((p) == NULL)
#define assert_non_null(p) assert_true((p) != NULL)
#define assert_int_equal(a, b) assert_true((intmax_t)(a) == (intmax_t)(b))
#define assert_ptr_equal(a, b) assert_true((const void *)(a) == (const void *)(b))
#define assert_string_equal(a, b) assert_true(strcmp((a), (b)) == 0)
#define assert_memory_equal(a, b, n) assert_true(memcmp((a), (b), (n)) == 0)

#define cmocka_unit_test(f) {#f, f}
#define cmocka_run_group_tests(tests, setup, teardown)                                             \
    cmocka_lite_run(tests, sizeof(tests) / sizeof((tests)[0]))

static inline int cmocka_lite_run_one(const struct CMUnitTest *t)
{
    printf("[ RUN      ] %s\n", t->name);
    fflush(stdout);
    int ok = setjmp(cmocka_lite_jump) == 0;
    if (ok)
        t->test_func(NULL);
    printf("[ %8s ] %s\n", ok ? "OK" : "FAILED", t->name);
    fflush(stdout);
    return ok;
}

static inline int cmocka_lite_run(const struct CMUnitTest *tests, size_t n)
{
    int failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += !cmocka_lite_run_one(&tests[i]);
    printf("[==========] %zu test(s) run, %d failed.\n", n, failed);
    return failed;
}

#endif
