/* AVX-512 BF16 matrix products for FP8-simulated activations (release
 * numerics): matmul_fp8_e4m3act and matmul_fp4_e4m3act.
 *
 * Why this is exact. An e2m1 weight has 2 significant bits, an e4m3 weight or
 * activation 4; their e8m0 / act_quant scales are powers of two. So each
 * weight (code x block scale) and each activation is a bf16 number exactly
 * (bf16 keeps 8 significant bits and the fp32 exponent range), and any
 * product of two bf16 numbers is exact in fp32. vdpbf16ps therefore adds the
 * same products the fp32 path adds, with fp32 roundings: only the order of
 * the sum differs (and vdpbf16ps flushes denormals: products below 2^-126,
 * far below the tolerance of any sum we make). This halves the work per
 * weight: one vdpbf16ps takes 32 weights where the fp32 path needs two FMAs
 * and wider decoding.
 *
 * Decoding to bf16 with the block scale folded in (integer ops only):
 *   - e2m1: vpermw from a table of the 8 magnitudes times 2^64 (sign in bit
 *     15, -0 as +0), then a saturating subtract of (191 - s) << 7 from the
 *     exponent field: zero saturates to zero, the rest is code * 2^(s-127)
 *     while s in [2, 191];
 *   - e4m3: a 128-entry table of every magnitude times 2^64 as bf16, scaled
 *     by the same saturating exponent subtract once per 128x128 block (valid
 *     for s in [10, 191]; the NaN code stays NaN), split into its high and
 *     low bytes; then each step of 64 weights is two vpermi2b lookups (VBMI:
 *     the 7-bit code indexes a two-register table), the sign ORed into the
 *     high byte, and two byte unpacks that pair the bytes into bf16 words.
 * A row whose scales fall outside those ranges (never in a release file) is
 * computed by the fp32 kernel instead, so every row's result is still a
 * function of that row alone.
 *
 * Order of the sum, for each (token, row): columns are taken 64 at a time
 * (a "step"; the last one zero-padded) as two vdpbf16ps into one 16-lane
 * accumulator (FP8: in the byte unpacks' order, columns 16L + 0..7 of each
 * 16-column quarter L then columns 16L + 8..15, lane i taking the pair
 * (16(i/4) + 2(i%4), +1) of its half; FP4: even columns then odd columns,
 * pairs (4i, 4i+2) and (4i+1, 4i+3) per lane), steps in
 * ascending order, then the 16 lanes folded pairwise per chunk of columns
 * (chunk_len: 1024, the last one up to 1536), the chunks' sums then added
 * in column order in fp32. The few-token path (weights decoded in
 * registers) and the many-token path (decoded chunks, register tiles) run
 * exactly this sequence, so results do not depend on n, r0 or r1. */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vbmi")

#include <immintrin.h>
#include <string.h>

#include "bf16_decode.h"
#include "fold16.h"
#include "kernels.h"
#include "prefetch.h"

const dsv4_kernels *kernels_avx512(void);
void matmul_fp8_avx512bf16(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, int n, int rows, int cols, int r0, int r1);
void matmul_fp4_avx512bf16(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, int n, int rows, int cols, int r0, int r1);

/* Columns per chunk: the many-token path decodes and converts a chunk at a
 * time, and sums fold per chunk. 1024 rather than 512: one Zen 5
 * core, FP8 [4096x1024] x 512 tokens 264-265 -> 295-299 GFLOP/s, FP4
 * [2048x4096] x 12 265 -> 270-273; rather than 2048: MoE job lists (64
 * experts x 5-19 tokens, two Zen 5 cores) 545-556 against 468-510 GFLOP/s,
 * FP8 within a few percent either way. A short last chunk joins the one
 * before (chunk_len): 1536 columns (V4-Pro's wq_b) are one chunk (FP8
 * [65536x1536] x 64 tokens, two Zen 5 cores: 497-505 -> 543-548). */
#define CHUNK 1024
#define CHUNK_MAX (CHUNK + CHUNK / 2)
#define RB 4          /* rows per register tile / in-register block */
#define RBD_MAX 256   /* most rows per block of the many-token path: the activations'
                         bf16 conversion per chunk is shared by the block's rows */
#define TB 6          /* tokens per register tile */
_Static_assert(RB == 4 && TB <= 8, "fold16_store_tile4 folds 4 rows and at most 8 tokens");
/* Tokens converted at a time: 64 rather than 48, so a 64-token product
 * decodes its weights once, not twice (two Zen 5 cores, alternated: FP8
 * [32768x1024] x 64 53.4 -> 56.4-58.0%, [65536x1536] 49.0-49.8 -> 50.0-51.2%
 * of the vdpbf16ps peak; pp512 +2-3%). */
#define TG 64
/* Up to MV_MAX_N tokens, weights are decoded in registers: each row block
 * takes the tokens in passes of at most MV_PASS (its accumulators, rows x
 * tokens, must fit the registers), the block's weights coming from memory
 * in the first pass and from L1 in the others. 6 rather than 3 (the GEMM
 * path from 4 tokens on): batched decode, two Zen 5 cores, `dsv4 bench -m
 * /tmp/f4 -t 2 -r 2 -p 0 -n 16 -b 4,6,8` alternated twice, 4 sequences
 * 60.1 / 45.6 -> 65.8 / 47.3 tok/s, 6 sequences 71.6 / 54.8 -> 77.8 / 58.1
 * (the VM changed phase between the two); pp512 unchanged. With 8 tokens
 * in passes (3 + 3 + 2) 8 sequences ran 81-82 against the GEMM's 84. */
#ifndef MV_MAX_N
#define MV_MAX_N 6
#endif
#define MV_PASS 3
#define MV_RB 8       /* most rows per in-register block (one token, FP4): the activations'
                         conversion is shared by more rows */
#define MV_XSTEPS 128 /* rows up to this many steps (8192 columns) get the tokens' bf16
                         steps prepared once per call: 16 KiB of stack per token */

static inline __m512 dp(__m512 acc, __m512i w, __m512i x)
{
    return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x);
}

/* Columns of the chunk at k0: CHUNK, or all that are left when at most
 * CHUNK_MAX are; and how many chunks a row of cols columns takes. */
static inline int chunk_len(int cols, int k0)
{
    return cols - k0 <= CHUNK_MAX ? cols - k0 : CHUNK;
}

static inline int chunk_count(int cols)
{
    return cols <= CHUNK_MAX ? 1 : (cols - CHUNK_MAX + CHUNK - 1) / CHUNK + 1;
}

/* Whether a chunk other than the first starts at column k. */
static inline int chunk_starts(int cols, int k)
{
    return k > 0 && k % CHUNK == 0 && k / CHUNK < chunk_count(cols);
}

/* ---- few tokens: decode in registers, nr rows x nt tokens ---- */

/* xb: the tokens' bf16 steps prepared once per call ([nt][MV_XSTEPS][2]), or
 * NULL (rows too long): then each whole group prepares them again. */
static inline __attribute__((always_inline)) void matvec_block(int nr, int nt, float *Y, size_t ldy,
                                                                const qmat *q, const float *X,
                                                                size_t ldx, const __m512i *xb, int rb, int r1)
{
    __m512 acc[MV_RB][MV_PASS];
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            acc[i][t] = _mm512_setzero_ps();
    int cols = q->cols;
    size_t row_bytes = q->fp4 ? (size_t)cols / 2 : (size_t)cols, step_bytes = (size_t)nr * (q->fp4 ? STEP / 2 : STEP);
    int next_row = rb + nr < r1 ? rb + nr : r1; /* prefetch within the caller's rows only */
    size_t left = (size_t)(r1 - next_row) * row_bytes;
    const char *next = (const char *)q->W + (size_t)next_row * row_bytes;
    float part[MV_RB][MV_PASS]; /* the sums of the chunks before, once `folded` */
    int folded = 0;
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            part[i][t] = 0.0f; /* unread until folded; this only informs the compiler */
    __m512i dw[MV_RB]; /* FP4: the rows' scale subtrahends of 8 groups (decode_fp4_rows) */
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        dw[i] = _mm512_setzero_si512();
    for (int g = 0; g * GROUP < cols; g++) {
        gctx c[MV_RB];
        if (chunk_starts(cols, g * GROUP)) { /* chunks start on whole groups */
            #pragma GCC unroll 8
            for (int i = 0; i < nr; i++)
                #pragma GCC unroll 8
                for (int t = 0; t < nt; t++) {
                    float f = fold16(acc[i][t]);
                    part[i][t] = folded ? part[i][t] + f : f;
                    acc[i][t] = _mm512_setzero_ps();
                }
            folded = 1;
        }
        if (q->fp4 && g == 0) /* the next block's scales, a short stream of their own */
            prefetch_next_block((const char *)q->scale + (size_t)next_row * (cols / 32), 0, (size_t)nr * (cols / 32),
                                (size_t)(r1 - next_row) * (cols / 32));
        if ((g + 1) * GROUP <= cols) { /* a whole group: the fast decoders, the same sequence */
            __m512i x[MV_PASS][4];
            prefetch_next_block(next, (size_t)(2 * g) * step_bytes, 2 * step_bytes, left);
            #pragma GCC unroll 8
            for (int t = 0; t < nt && !xb; t++) {
                prep_step(q->fp4, X + (size_t)t * ldx + g * GROUP, STEP, &x[t][0], &x[t][1]);
                prep_step(q->fp4, X + (size_t)t * ldx + g * GROUP + STEP, STEP, &x[t][2], &x[t][3]);
            }
            gctx c8;
            #pragma GCC unroll 8
            for (int i = 0; i < nr; i++) {
                __m512i w[4];
                if (q->fp4) {
                    int b = 4 * (g % 8);
                    if (b == 0)
                        dw[i] = fp4_subtrahends(q->scale + (size_t)(rb + i) * (cols / 32) + 4 * g,
                                                cols / 32 - 4 * g < 32 ? cols / 32 - 4 * g : 32);
                    fp4_group_d(q->W + (size_t)(rb + i) * row_bytes + (size_t)g * (GROUP / 2), fp4_step_d(dw[i], b),
                                fp4_step_d(dw[i], b + 2), w);
                } else {
                    if (i == 0 || (rb + i) % 128 == 0) /* rows of one 128-row block share their scale */
                        c8 = group_ctx(q, rb + i, g);
                    fp8_group(q->W + (size_t)(rb + i) * row_bytes + (size_t)g * GROUP, &c8, w);
                }
                #pragma GCC unroll 8
                for (int t = 0; t < nt; t++)
                    #pragma GCC unroll 4
                    for (int v = 0; v < 4; v++)
                        acc[i][t] = dp(acc[i][t], w[v], xb ? _mm512_load_si512(xb + (t * MV_XSTEPS + 2 * g) * 2 + v) : x[t][v]);
            }
            continue;
        }
        #pragma GCC unroll 8
        for (int i = 0; i < nr; i++) /* FP8 rows of one 128-row block share their scale */
            c[i] = i > 0 && !q->fp4 && (rb + i) / 128 == (rb + i - 1) / 128 ? c[i - 1] : group_ctx(q, rb + i, g);
        for (int j = 0; j < 2 && g * GROUP + j * STEP < cols; j++) {
            int k = g * GROUP + j * STEP, len = cols - k < STEP ? cols - k : STEP;
            __m512i x0[MV_PASS], x1[MV_PASS];
            prefetch_next_block(next, (size_t)(k / STEP) * step_bytes, step_bytes, left);
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++)
                prep_step(q->fp4, X + (size_t)t * ldx + k, len, &x0[t], &x1[t]);
            #pragma GCC unroll 8
            for (int i = 0; i < nr; i++) {
                __m512i w0, w1;
                decode_step(q, rb + i, k, len, &c[i], j, &w0, &w1);
                #pragma GCC unroll 8
                for (int t = 0; t < nt; t++) {
                    acc[i][t] = dp(acc[i][t], w0, x0[t]);
                    acc[i][t] = dp(acc[i][t], w1, x1[t]);
                }
            }
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            Y[(size_t)t * ldy + rb + i] = folded ? part[i][t] + fold16(acc[i][t]) : fold16(acc[i][t]);
}

/* Tokens in the next pass when `left` (two or more) are left: 3, but 2 + 2
 * for four. */
static inline int mv_pass_tokens(int left)
{
    return left == 4 ? 2 : left < MV_PASS ? left : MV_PASS;
}

/* Row block [rb, rb + NR) for all n tokens, pass by pass; only the first
 * pass prefetches the next block (r1 bounds it). Used inside MATVEC_FN,
 * whose n, q1, X, Y, xb, rb and r1 it reads. */
#define MV_PASSES(NR)                                                                              \
    for (int t0 = 0, c; t0 < n; t0 += c) {                                                         \
        c = mv_pass_tokens(n - t0);                                                                \
        const __m512i *xt = xb ? xb + (size_t)t0 * MV_XSTEPS * 2 : NULL;                           \
        int pr1 = t0 == 0 ? r1 : rb + (NR);                                                        \
        if (c == 3)                                                                                \
            matvec_block(NR, 3, Y + (size_t)t0 * ldy, ldy, &q1, X + (size_t)t0 * ldx, ldx, xt, rb, pr1); \
        else                                                                                       \
            matvec_block(NR, 2, Y + (size_t)t0 * ldy, ldy, &q1, X + (size_t)t0 * ldx, ldx, xt, rb, pr1); \
    }

/* One instantiation per format so the decoder's branch folds away. One
 * token: NR1-row blocks; more: 4-row blocks; the rows left one at a time. */
#define MATVEC_FN(NAME, FP4, NR1)                                                                  \
    static void NAME(float *Y, size_t ldy, const qmat *q, const float *X, size_t ldx, int n,      \
                     int r0, int r1)                                                               \
    {                                                                                              \
        int rb = r0;                                                                               \
        size_t row_bytes = q->fp4 ? (size_t)q->cols / 2 : (size_t)q->cols;                         \
        __m512i xbuf[MV_MAX_N * MV_XSTEPS * 2];                                                    \
        const __m512i *xb = q->cols <= MV_XSTEPS * STEP ? xbuf : NULL;                             \
        for (int t = 0; t < n && xb; t++)                                                          \
            for (int s = 0; s * STEP < q->cols; s++)                                               \
                prep_step(FP4, X + (size_t)t * ldx + s * STEP, q->cols - s * STEP,                 \
                          &xbuf[(t * MV_XSTEPS + s) * 2], &xbuf[(t * MV_XSTEPS + s) * 2 + 1]);     \
        /* the first block as a burst: the loop prefetches each next one */                       \
        prefetch_share((const char *)q->W + (size_t)r0 * row_bytes,                                \
                       (size_t)(r1 - r0 < MV_RB ? r1 - r0 : MV_RB) * row_bytes, 0, 1);             \
        const qmat q1 = {FP4, q->W, q->scale, q->rows, q->cols};                                   \
        if (n == 1) {                                                                              \
            for (; rb + (NR1) <= r1; rb += (NR1))                                                  \
                matvec_block(NR1, 1, Y, ldy, &q1, X, ldx, xb, rb, r1);                             \
            for (; rb < r1; rb++)                                                                  \
                matvec_block(1, 1, Y, ldy, &q1, X, ldx, xb, rb, r1);                               \
            return;                                                                                \
        }                                                                                          \
        for (; rb + 4 <= r1; rb += 4)                                                              \
            MV_PASSES(4)                                                                           \
        for (; rb < r1; rb++)                                                                      \
            MV_PASSES(1)                                                                           \
    }

/* FP4 takes 8 rows for one token; FP8 4, as its 4-register tables per row
 * block would not leave room for 8. */
MATVEC_FN(matvec_fp8, 0, 4)
MATVEC_FN(matvec_fp4, 1, 8)

/* ---- many tokens: decoded chunks and RB x TB register tiles ---- */

#define CSTEPS (CHUNK_MAX / STEP) /* steps a chunk's buffers hold */


/* One chunk of a register tile: its sums are folded into y (row i of
 * token t at y[t * ldy + i]), stored there for the first chunk and added
 * to it for the others. */
static inline __attribute__((always_inline)) void tile(int nr, int nt, const __m512i *wb /* [RB][CSTEPS][2] */,
                                                        const __m512i *xb /* [TG][CSTEPS][2] */, int steps,
                                                        int first, float *y, size_t ldy)
{
    __m512 a[RB][TB];
    tile_chunk_start(nr, nt, &a[0][0], TB, 1, NULL, nt);
    /* one vector (half a step) per iteration, not unrolled: 24 accumulators,
     * 4 weights and an activation fit the 32 registers only so (unrolled,
     * GCC spilled two accumulators into the dependency chains) */
    #pragma GCC unroll 1
    for (int v = 0; v < 2 * steps; v++) {
        __m512i w[RB];
        #pragma GCC unroll 8
        for (int i = 0; i < nr; i++)
            w[i] = _mm512_load_si512(wb + i * CSTEPS * 2 + v);
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            __m512i x = _mm512_load_si512(xb + t * CSTEPS * 2 + v);
            #pragma GCC unroll 8
            for (int i = 0; i < nr; i++)
                a[i][t] = dp(a[i][t], w[i], x);
        }
    }
    fold16_store_tile4(nr, nt, &a[0][0], TB, !first, y, ldy);
}

#define TILE_CASE(NR, NT)                                                                          \
    case (NR) * 8 + (NT):                                                                          \
        tile(NR, NT, wb, xb, steps, first, y, ldy);                                                \
        break;
#define TILE_ROW(NR) TILE_CASE(NR, 1) TILE_CASE(NR, 2) TILE_CASE(NR, 3) TILE_CASE(NR, 4)            \
    TILE_CASE(NR, 5) TILE_CASE(NR, 6)

/* Not inlined: inside matmul_gemm, GCC 12 allocated the tiles' registers
 * worse (one Zen 5 core: FP4 [2048x4096] x 12 tokens 237-245 against
 * 314-317 GFLOP/s). */
static __attribute__((noinline)) void tile_dispatch(int nr, int nt, const __m512i *wb, const __m512i *xb, int steps,
                                                    int first, float *y, size_t ldy)
{
    switch (nr * 8 + nt) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4)
    }
}

static void decode_chunk(const qmat *q, int r, int k0, __m512i *out /* [CSTEPS][2] */)
{
    int end = k0 + chunk_len(q->cols, k0);
    prefetch_next_run(q, r, k0 / STEP, (end - k0 + STEP - 1) / STEP);
    for (int g = k0 / GROUP; g * GROUP < end; g++) {
        gctx c = group_ctx(q, r, g);
        for (int j = 0; j < 2 && g * GROUP + j * STEP < end; j++) {
            int k = g * GROUP + j * STEP, len = end - k < STEP ? end - k : STEP;
            int s = (k - k0) / STEP;
            if (q->fp4)
                decode_step(&(qmat){1, q->W, q->scale, q->rows, q->cols}, r, k, len, &c, j, &out[2 * s],
                            &out[2 * s + 1]);
            else
                decode_step(&(qmat){0, q->W, q->scale, q->rows, q->cols}, r, k, len, &c, j, &out[2 * s],
                            &out[2 * s + 1]);
        }
    }
}

/* Rows [r, r + nr) of a chunk of whole groups: the fast decoders, after the
 * same per-row prefetch of the next chunk as decode_chunk. FP8 rows of one
 * 128-row block share their group tables: *ctx_block says whose ctx holds
 * (-1: none yet), rebuilt when the rows enter another block. */
static void decode_chunk_rows(const qmat *q, int r, int nr, int k0, __m512i *out, gctx *ctx, int *ctx_block)
{
    int ng = chunk_len(q->cols, k0) / GROUP;
    if (q->fp4) {
        decode_fp4_rows(q, r, nr, k0 / GROUP, ng, (uint16_t *)out, CSTEPS * 2 * 32, 32);
        return;
    }
    if (r / 128 != (r + nr - 1) / 128) {
        decode_fp8_rows(q, r, nr, k0 / GROUP, ng, (uint16_t *)out, CSTEPS * 2 * 32, 32);
        return;
    }
    if (*ctx_block != r / 128) {
        fp8_block_ctx(q, r, k0 / GROUP, ng, ctx);
        *ctx_block = r / 128;
    }
    decode_fp8_rows_ctx(q, r, nr, k0 / GROUP, ng, ctx, (uint16_t *)out, CSTEPS * 2 * 32, 32);
}

/* Tokens of register tile j when ng tokens are split into as few tiles as
 * TB allows, evenly: 13 as 5 + 4 + 4, not 6 + 6 + 1. A tile of one or two
 * tokens has too few accumulators to cover vdpbf16ps's latency (4 or 8
 * chains), so it costs about as much as a full one. */
static inline int tile_tokens(int ng, int j)
{
    int tiles = (ng + TB - 1) / TB;
    return ng / tiles + (j < ng % tiles);
}

/* The working state of one matmul_gemm call. */
typedef struct {
    const qmat *q;
    const float *X;
    size_t ldx;
    float *Y;
    size_t ldy;
    int r1;
    __m512i *wb, *xb; /* one tile's decoded rows [RB][CSTEPS][2]; the group's chunk [TG][CSTEPS][2] */
    gctx *ctx;        /* FP8: the group tables of the rows' 128-row scale block */
} gemm_call;

/* Rows [rb, rb + nrd) x tokens [g0, g0 + ng) x the chunk at k0: the tokens'
 * chunk converted once, then each register tile's RB rows decoded just
 * before their tiles run, so the tiles read them from L1 (decoding the
 * whole block first left them in L2; two Zen 5 cores, medians of six
 * alternations: FP4 [2048x4096] x 12 tokens 420 -> 452, x 64 608 -> 644,
 * FP8 [4096x1024] x 16 367 -> 375, x 64 556 -> 590 GFLOP/s). */
static void gemm_pass(const gemm_call *c, int rb, int nrd, int g0, int ng, int k0)
{
    const qmat *q = c->q;
    int len = chunk_len(q->cols, k0), steps = (len + STEP - 1) / STEP, whole = whole_groups(q, k0 / STEP, steps);
    int first = k0 == 0, ctx_block = -1;
    int slices = (nrd + RB - 1) / RB, chunks = chunk_count(q->cols);
    size_t row_bytes = q->fp4 ? (size_t)q->cols / 2 : (size_t)q->cols;
    for (int t = 0; t < ng; t++)
        for (int s = 0; s < steps; s++) {
            int k = k0 + s * STEP, l = q->cols - k < STEP ? q->cols - k : STEP;
            prep_step(q->fp4, c->X + (size_t)(g0 + t) * c->ldx + k, l, &c->xb[(t * CSTEPS + s) * 2],
                      &c->xb[(t * CSTEPS + s) * 2 + 1]);
        }
    for (int i0 = 0; i0 < nrd; i0 += RB) {
        int nr = nrd - i0 < RB ? nrd - i0 : RB;
        /* the next row block, spread over this block's tiles: issued per
         * chunk (32 KiB at once for FP4 [2048x4096]) the prefetches filled
         * the miss buffers and the decode's own loads queued behind them.
         * FP8 rows of one chunk (wq_b) spread it further, a row's share
         * before each row's decode: their slice's 64 lines at once still
         * held the decode back (two Zen 5 cores, FP8 [65536x1024] x 16
         * tokens 407-418 -> 494-510 GFLOP/s, [32768x1024] x 64 599-613 ->
         * 647-661); rows of several chunks gained nothing so. */
        int per_row = !q->fp4 && chunks == 1, pieces = per_row ? RB : 1;
        for (int p = 0; p < pieces; p++) {
            if (g0 == 0 && rb + RBD_MAX < c->r1) {
                int next = c->r1 - rb - RBD_MAX < RBD_MAX ? c->r1 - rb - RBD_MAX : RBD_MAX;
                int part = ((k0 / CHUNK) * slices + i0 / RB) * pieces + p;
                prefetch_share((const char *)q->W + (size_t)(rb + RBD_MAX) * row_bytes, (size_t)next * row_bytes,
                               part, chunks * slices * pieces);
                if (q->fp4) /* and its block scales, a stream of their own */
                    prefetch_share((const char *)q->scale + (size_t)(rb + RBD_MAX) * (q->cols / 32),
                                   (size_t)next * (q->cols / 32), part, chunks * slices * pieces);
            }
            int i = per_row ? p : 0, m = per_row ? p < nr : nr; /* the piece's rows [i, i + m) */
            if (m == 0)
                continue;
            if (whole)
                decode_chunk_rows(q, rb + i0 + i, m, k0, c->wb + i * CSTEPS * 2, c->ctx, &ctx_block);
            else
                for (int r = i; r < i + m; r++)
                    decode_chunk(q, rb + i0 + r, k0, c->wb + r * CSTEPS * 2);
        }
        for (int t0 = 0, j = 0; t0 < ng; t0 += tile_tokens(ng, j++))
            tile_dispatch(nr, tile_tokens(ng, j), c->wb, c->xb + t0 * CSTEPS * 2, steps, first,
                          c->Y + (size_t)(g0 + t0) * c->ldy + rb + i0, c->ldy);
    }
}

/* Block by block of RBD_MAX rows, chunk by chunk, group by group of TG
 * tokens. Each chunk's sums fold into Y, so nothing is kept between
 * chunks, and the chunks go outside the groups, so a block's chunk of
 * weights stays in L2 while the groups take turns; the activations,
 * converted again by every block, are read rows / 256 times. Keeping the
 * 16-lane sums between chunks instead (as FP4 did, with 64-row blocks at
 * 64 tokens) read wo_b's 16 MiB of activations 64 times: one Zen 5 core,
 * FP8 [2048x8192] x 512 tokens 205-217 -> 274-283 GFLOP/s; and once
 * fold16x16 stayed in registers, folding per chunk beat FP4's round trip
 * of those sums through memory too (two Zen 5 cores, 64 FP4 [2048x4096]
 * experts x 12 tokens 570 / 581 -> 590 / 598 GFLOP/s; pp512 +1%). */
static void matmul_gemm(float *Y, size_t ldy, const qmat *q, const float *X, size_t ldx, int n, int r0,
                        int r1)
{
    __m512i wb[RB * CSTEPS * 2], xb[TG * CSTEPS * 2];
    gctx ctx[CHUNK_MAX / GROUP];
    gemm_call c = {q, X, ldx, Y, ldy, r1, wb, xb, ctx};
    for (int rb = r0; rb < r1; rb += RBD_MAX) {
        int nrd = r1 - rb < RBD_MAX ? r1 - rb : RBD_MAX;
        for (int k0 = 0; k0 < q->cols; k0 += chunk_len(q->cols, k0))
            for (int g0 = 0; g0 < n; g0 += TG)
                gemm_pass(&c, rb, nrd, g0, n - g0 < TG ? n - g0 : TG, k0);
    }
}

static void matmul_q(const qmat *q, float *Y, size_t ldy, const float *X, size_t ldx, int n, int r0, int r1)
{
    if (n <= 0 || r1 <= r0)
        return;
    if (n > MV_MAX_N)
        matmul_gemm(Y, ldy, q, X, ldx, n, r0, r1);
    else if (q->fp4)
        matvec_fp4(Y, ldy, q, X, ldx, n, r0, r1);
    else
        matvec_fp8(Y, ldy, q, X, ldx, n, r0, r1);
    const dsv4_kernels *f = kernels_avx512();
    for (int r = r0; r < r1; r++)
        if (!row_in_range(q, r))
            (q->fp4 ? f->matmul_fp4 : f->matmul_fp8)(Y, ldy, q->W, q->scale, X, ldx, n, q->rows, q->cols,
                                                      r, r + 1);
}

void matmul_fp8_avx512bf16(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    qmat q = {0, W, scale, rows, cols};
    matmul_q(&q, Y, ldy, X, ldx, n, r0, r1);
}

void matmul_fp4_avx512bf16(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    qmat q = {1, W, scale, rows, cols};
    matmul_q(&q, Y, ldy, X, ldx, n, r0, r1);
}
