/* Speed accounting for one session: tokens, wall time, bytes of weights read
 * and FLOPs (always counted: a few additions per matrix), and, when profiling
 * is on, seconds per part of the forward pass. The timers cost one branch
 * each when profiling is off. */
#ifndef DSV4_PROFILE_H
#define DSV4_PROFILE_H

#include <time.h>

#include "dsv4.h"
#include "linear.h"

typedef struct prof_counters {
    int enabled;
    dsv4_stats s;
} prof_counters;

static inline double prof_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* A start time when profiling is on, else 0 (no clock read). */
static inline double prof_begin(const prof_counters *p)
{
    return p && p->enabled ? prof_now() : 0.0;
}

static inline void prof_end(prof_counters *p, int part, double t0)
{
    if (p && p->enabled)
        p->s.part_seconds[part] += prof_now() - t0;
}

/* Bytes one pass over W reads: the matrix plus its block scales. */
double prof_linear_bytes(const dsv4_linear *W);

/* One product of W with n input rows: its bytes, and 2·rows·cols·n FLOPs. */
static inline void prof_linear(prof_counters *p, const dsv4_linear *W, int n)
{
    if (p && W->fmt != DSV4_WF_NONE && n > 0) {
        p->s.weight_bytes += prof_linear_bytes(W);
        p->s.flops += 2.0 * W->rows * (double)W->cols * n;
    }
}

/* Reads of weights that are not matrices (mHC mixes, embedding rows). */
static inline void prof_bytes(prof_counters *p, double bytes, double flops)
{
    if (p) {
        p->s.weight_bytes += bytes;
        p->s.flops += flops;
    }
}

/* Adds the counts of m rows computed side by side (each row's seconds field:
 * its own time). Their part seconds are scaled by wall / (sum of the rows'
 * seconds), so the parts keep adding up to wall-clock time. */
void prof_add_rows(prof_counters *p, const prof_counters *rows, int m, double wall);

#endif
