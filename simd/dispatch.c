/* Picks the kernel table once, from what the CPU reports. */
#include "kernels.h"

#include <string.h>

const dsv4_kernels *kernels_avx512(void);

static int cpu_has_avx512(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

const dsv4_kernels *kernels_select(const char *isa)
{
    if (!isa)
        return cpu_has_avx512() ? kernels_avx512() : kernels_scalar();
    if (strcmp(isa, "scalar") == 0)
        return kernels_scalar();
    if (strcmp(isa, "avx512") == 0)
        return cpu_has_avx512() ? kernels_avx512() : NULL;
    return NULL;
}
