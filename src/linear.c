/* Threaded matrix products over checkpoint-format weights. Work is split by
 * output rows only; each row is computed whole by one kernel call, so the
 * result is the same for every thread count. */
#include "linear.h"

#include "../simd/formats.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* P: the tokens packed for the kernel (kernels.h, e4m3act_pack), or NULL. */
static void matmul_chunk(const dsv4_kernels *k, const dsv4_linear *W, float *Y, size_t ldy,
                         const float *X, size_t ldx, const void *P, int n, int r0, int r1, int e4m3act)
{
    if (P && W->fmt == DSV4_WF_FP8) {
        k->matmul_fp8_e4m3act_packed(Y, ldy, W->data, W->scale, X, ldx, P, n, W->rows, W->cols, r0, r1);
        return;
    }
    if (P && W->fmt == DSV4_WF_FP4) {
        k->matmul_fp4_e4m3act_packed(Y, ldy, W->data, W->scale, X, ldx, P, n, W->rows, W->cols, r0, r1);
        return;
    }
    if (e4m3act && W->fmt == DSV4_WF_FP8) {
        k->matmul_fp8_e4m3act(Y, ldy, W->data, W->scale, X, ldx, n, W->rows, W->cols, r0, r1);
        return;
    }
    if (e4m3act && W->fmt == DSV4_WF_FP4) {
        k->matmul_fp4_e4m3act(Y, ldy, W->data, W->scale, X, ldx, n, W->rows, W->cols, r0, r1);
        return;
    }
    if (e4m3act && W->fmt == DSV4_WF_BF16) {
        k->matmul_bf16_bf16act(Y, ldy, W->data, X, ldx, n, W->rows, W->cols, r0, r1);
        return;
    }
    switch (W->fmt) {
    case DSV4_WF_F32:
        k->matmul_f32(Y, ldy, W->data, X, ldx, n, W->rows, W->cols, r0, r1);
        break;
    case DSV4_WF_BF16:
        k->matmul_bf16(Y, ldy, W->data, X, ldx, n, W->rows, W->cols, r0, r1);
        break;
    case DSV4_WF_FP8:
        k->matmul_fp8(Y, ldy, W->data, W->scale, X, ldx, n, W->rows, W->cols, r0, r1);
        break;
    case DSV4_WF_FP4:
        k->matmul_fp4(Y, ldy, W->data, W->scale, X, ldx, n, W->rows, W->cols, r0, r1);
        break;
    case DSV4_WF_NONE:
        break;
    }
}

/* Least cost (weight bytes, scaled up by the token count) of a work item: a
 * few microseconds of streaming, so that small matrices still spread over
 * many threads while each item reads a useful run of weights. Rows per item
 * are a multiple of the kernels' 4-row tile where rows are small enough. */
#define ITEM_BYTES (64 * 1024)
/* Below this much work (weight bytes + activation FLOPs) a parallel region's
 * fork and join cost more than they save: run on the calling thread. */
#define SERIAL_WORK (96 * 1024)

static double row_bytes(const dsv4_linear *W)
{
    switch (W->fmt) {
    case DSV4_WF_F32: return 4.0 * W->cols;
    case DSV4_WF_BF16: return 2.0 * W->cols;
    case DSV4_WF_FP8: return 1.0 * W->cols;
    case DSV4_WF_FP4: return 0.5 * W->cols;
    default: return 0.0;
    }
}

/* Items per thread for a large total: few enough that handing them out costs
 * nothing (one atomic each), enough that the last ones even out the threads. */
#define ITEMS_PER_THREAD 8

static double job_cost(const linear_job *j)
{
    /* More tokens make a row costlier. */
    return row_bytes(j->W) * (1.0 + j->n / 4.0);
}

static int rows_per_item(const linear_job *j, double item_cost, int packed)
{
    double cost = job_cost(j);
    int rows = cost > 0 ? (int)(item_cost / cost) : 1;
    /* The kernels load each input row once per 4 weight rows (and the GEMM
     * path decodes weights per 4-row block; the packed one per two 16-row
     * tiles): never cut a tile. */
    int least = packed ? 32 : j->n >= 4 ? 16 : 4;
    if (rows < least)
        rows = least;
    return packed ? rows & ~31 : rows & ~3;
}

/* Packed tokens: one copy per distinct input of a batch, made by all
 * threads before any product reads it. The buffer belongs to the calling
 * thread and only grows, so repeated batches allocate nothing; where it
 * cannot grow the products take X directly (same bits). */
#define PACK_ALIGN 64
/* Steps (64 columns) of all tokens per packing item: about a microsecond
 * of conversion at 64 tokens. Items of 8 steps left most threads waiting
 * at the barrier (a 1024-column matrix made 2 items for 16 threads); with
 * 2, Sapphire Rapids' 64-token AMX products ran 3-23% faster (medians of
 * four runs, bench/history.md round 17). */
#define PACK_STEPS 2

typedef struct {
    const linear_job *j; /* the first job with this input */
    size_t off;           /* into the buffer */
    int items;            /* PACK_STEPS-step pieces */
} pack_slot;

static _Thread_local struct {
    void *p;
    size_t cap;
} pack_buf;

static int pack_fp4(const linear_job *j)
{
    return j->W->fmt == DSV4_WF_FP4;
}

static int wants_pack(const dsv4_kernels *k, const linear_job *j)
{
    return j->e4m3act && (j->W->fmt == DSV4_WF_FP8 || j->W->fmt == DSV4_WF_FP4) && k->e4m3act_packed_bytes &&
           j->r1 > j->r0 && k->e4m3act_packed_bytes(j->n, j->W->cols) > 0;
}

static int same_input(const linear_job *a, const linear_job *b)
{
    return a->X == b->X && a->ldx == b->ldx && a->n == b->n && a->W->cols == b->W->cols &&
           pack_fp4(a) == pack_fp4(b);
}

/* Slots for the jobs that pack (slot_of[i], -1 for the others), laid out in
 * the grown buffer; returns their count, 0 (and no slot) when the buffer
 * cannot grow to hold them. */
static int plan_packs(const dsv4_kernels *k, const linear_job *jobs, int n_jobs, pack_slot *slots,
                      int *slot_of)
{
    int n_slots = 0;
    size_t total = 0;
    for (int i = 0; i < n_jobs; i++) {
        slot_of[i] = -1;
        if (!wants_pack(k, &jobs[i]))
            continue;
        for (int s = n_slots - 1; s >= 0 && slot_of[i] < 0; s--)
            if (same_input(slots[s].j, &jobs[i]))
                slot_of[i] = s;
        if (slot_of[i] >= 0)
            continue;
        size_t bytes = k->e4m3act_packed_bytes(jobs[i].n, jobs[i].W->cols);
        int steps = (jobs[i].W->cols + 63) / 64;
        slots[n_slots] = (pack_slot){&jobs[i], total, (steps + PACK_STEPS - 1) / PACK_STEPS};
        total += (bytes + PACK_ALIGN - 1) / PACK_ALIGN * PACK_ALIGN;
        slot_of[i] = n_slots++;
    }
    if (total > pack_buf.cap) {
        void *p = aligned_alloc(PACK_ALIGN, total);
        if (!p) {
            for (int i = 0; i < n_jobs; i++)
                slot_of[i] = -1;
            return 0;
        }
        free(pack_buf.p);
        pack_buf.p = p;
        pack_buf.cap = total;
    }
    return n_slots;
}

static void pack_item(const dsv4_kernels *k, void *buf, const pack_slot *slots, int n_slots, int it)
{
    int s = 0;
    while (s + 1 < n_slots && it >= slots[s].items) {
        it -= slots[s].items;
        s++;
    }
    const linear_job *j = slots[s].j;
    int steps = (j->W->cols + 63) / 64, s0 = it * PACK_STEPS;
    int s1 = s0 + PACK_STEPS < steps ? s0 + PACK_STEPS : steps;
    k->e4m3act_pack((char *)buf + slots[s].off, j->X, j->ldx, j->n, j->W->cols, pack_fp4(j), s0, s1);
}

typedef struct {
    const linear_job *jobs;
    int n_jobs;
    const int *first, *step, *slot_of;
    const pack_slot *slots;
    const void *buf;
} item_plan;

static void run_item(const dsv4_kernels *k, const item_plan *pl, int it)
{
    int lo = 0, hi = pl->n_jobs - 1;
    while (lo < hi) { /* the job holding item it: last i with first[i] <= it */
        int mid = (lo + hi + 1) / 2;
        if (pl->first[mid] <= it)
            lo = mid;
        else
            hi = mid - 1;
    }
    const linear_job *j = &pl->jobs[lo];
    int a = j->r0 + (it - pl->first[lo]) * pl->step[lo];
    int b = a + pl->step[lo] < j->r1 ? a + pl->step[lo] : j->r1;
    const void *P = pl->slot_of[lo] >= 0 ? (const char *)pl->buf + pl->slots[pl->slot_of[lo]].off : NULL;
    matmul_chunk(k, j->W, j->Y, j->ldy, j->X, j->ldx, P, j->n, a, b, j->e4m3act);
}

void linear_matmul_jobs(const dsv4_kernels *k, const linear_job *jobs, int n_jobs)
{
    int first[LINEAR_MAX_JOBS + 1], step[LINEAR_MAX_JOBS], slot_of[LINEAR_MAX_JOBS];
    pack_slot slots[LINEAR_MAX_JOBS];
    double work = 0.0;
    if (n_jobs > LINEAR_MAX_JOBS) {
        for (int i = 0; i < n_jobs; i += LINEAR_MAX_JOBS)
            linear_matmul_jobs(k, jobs + i, n_jobs - i < LINEAR_MAX_JOBS ? n_jobs - i : LINEAR_MAX_JOBS);
        return;
    }
    int rows[LINEAR_MAX_JOBS];
    for (int i = 0; i < n_jobs; i++) {
        const linear_job *j = &jobs[i];
        rows[i] = j->n > 0 && j->W->fmt != DSV4_WF_NONE && j->r1 > j->r0 ? j->r1 - j->r0 : 0;
        work += rows[i] * job_cost(j);
    }
    int n_slots = plan_packs(k, jobs, n_jobs, slots, slot_of), pack_items = 0;
    for (int s = 0; s < n_slots; s++)
        pack_items += slots[s].items;
    double item_cost = work / ((double)omp_get_max_threads() * ITEMS_PER_THREAD);
    if (item_cost < ITEM_BYTES)
        item_cost = ITEM_BYTES;
    first[0] = 0;
    for (int i = 0; i < n_jobs; i++) {
        step[i] = rows_per_item(&jobs[i], item_cost, slot_of[i] >= 0);
        first[i + 1] = first[i] + (rows[i] + step[i] - 1) / step[i];
    }
    int items = first[n_jobs];
    if (items == 0)
        return;
    void *buf = pack_buf.p; /* the calling thread's: read it here, not in the team */
    item_plan pl = {jobs, n_jobs, first, step, slot_of, slots, buf};
    int parallel = items > 1 && work > SERIAL_WORK;
    /* Items differ in cost (formats, token counts): hand them out dynamically.
     * Which thread computes an item does not change its result. */
    if (pack_items == 0) {
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
        for (int it = 0; it < items; it++)
            run_item(k, &pl, it);
        return;
    }
#pragma omp parallel if (parallel)
    {
#pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < pack_items; it++)
            pack_item(k, buf, slots, n_slots, it);
        /* the loop's barrier: every pack is complete before a product reads it */
#pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < items; it++)
            run_item(k, &pl, it);
    }
}

static void matmul_rows(const dsv4_kernels *k, const dsv4_linear *W, float *Y, size_t ldy,
                        const float *X, size_t ldx, int n, int r0, int r1, int e4m3act)
{
    linear_job j = {W, Y, ldy, X, ldx, n, r0, r1, e4m3act};
    linear_matmul_jobs(k, &j, 1);
}

void linear_matmul_rows(const dsv4_kernels *k, const dsv4_linear *W, float *Y, size_t ldy,
                        const float *X, size_t ldx, int n, int r0, int r1)
{
    matmul_rows(k, W, Y, ldy, X, ldx, n, r0, r1, 0);
}

void linear_matmul(const dsv4_kernels *k, const dsv4_linear *W, float *Y, const float *X, int n)
{
    matmul_rows(k, W, Y, (size_t)W->rows, X, (size_t)W->cols, n, 0, W->rows, 0);
}

void linear_matmul_rows_e4m3act(const dsv4_kernels *k, const dsv4_linear *W, float *Y, size_t ldy,
                                const float *X, size_t ldx, int n, int r0, int r1)
{
    matmul_rows(k, W, Y, ldy, X, ldx, n, r0, r1, 1);
}

void linear_matmul_e4m3act(const dsv4_kernels *k, const dsv4_linear *W, float *Y, const float *X, int n)
{
    matmul_rows(k, W, Y, (size_t)W->rows, X, (size_t)W->cols, n, 0, W->rows, 1);
}

/* Below this many values the rows stay on the calling thread. */
#define QUANT_PAR_MIN 16384

void linear_act_quant_rows(const dsv4_kernels *k, float *dst, const float *src, int n, int cols)
{
#pragma omp parallel for schedule(static) if ((long)n * cols >= QUANT_PAR_MIN && n > 1)
    for (int i = 0; i < n; i++) {
        if (dst != src)
            memcpy(dst + (size_t)i * cols, src + (size_t)i * cols, (size_t)cols * sizeof *dst);
        k->act_quant_sim(dst + (size_t)i * cols, (size_t)cols, 128);
    }
}

void linear_row(const dsv4_linear *W, int row, float *out)
{
    int cols = W->cols;
    switch (W->fmt) {
    case DSV4_WF_F32:
        memcpy(out, (const float *)W->data + (size_t)row * cols, (size_t)cols * sizeof *out);
        break;
    case DSV4_WF_BF16: {
        const uint16_t *w = (const uint16_t *)W->data + (size_t)row * cols;
        for (int i = 0; i < cols; i++)
            out[i] = fmt_bf16_to_f32(w[i]);
        break;
    }
    case DSV4_WF_FP8: {
        const uint8_t *w = (const uint8_t *)W->data + (size_t)row * cols;
        const uint8_t *s = W->scale + (size_t)(row / 128) * ((cols + 127) / 128);
        for (int i = 0; i < cols; i++)
            out[i] = fmt_e4m3_to_f32(w[i]) * fmt_e8m0_to_f32(s[i / 128]);
        break;
    }
    case DSV4_WF_FP4: {
        const uint8_t *w = (const uint8_t *)W->data + (size_t)row * (cols / 2);
        const uint8_t *s = W->scale + (size_t)row * (cols / 32);
        for (int i = 0; i < cols; i++) {
            uint8_t code = (i & 1) ? w[i / 2] >> 4 : w[i / 2] & 15;
            out[i] = fmt_e2m1_to_f32(code) * fmt_e8m0_to_f32(s[i / 32]);
        }
        break;
    }
    case DSV4_WF_NONE:
        memset(out, 0, (size_t)cols * sizeof *out);
        break;
    }
}
