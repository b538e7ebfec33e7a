/* AVX-512 BF16 products of BF16 weights with bf16 activations
 * (matmul_bf16_bf16act): the head and other BF16 linears whose input
 * release numerics have already rounded to bf16.
 *
 * bf16 x bf16 is exact in fp32, so `vdpbf16ps` adds the same products the
 * fp32 kernels add; only the order differs (and denormal products flush, as
 * in avx512_bf16.c). The weights need no decoding at all: 32 of them are one
 * 64-byte load, in the order `vdpbf16ps` pairs them. On Zen 4/5 this issues
 * at the FMA rate for twice the work per instruction, and the fp32 kernels'
 * bf16 -> f32 widening disappears; on Intel dispatch.c keeps the fp32 ones.
 *
 * Order of the sum, for each (token, row): one 16-lane accumulator from +0,
 * one `vdpbf16ps` per 32 columns in ascending order (lane i takes columns
 * 32j + 2i and 32j + 2i + 1; the ragged last block zero-padded), then the
 * lanes folded pairwise (fold16). The one-to-three-token path and the
 * many-token path (register tiles over chunks of columns, the accumulators
 * carried between chunks in memory) run exactly this sequence: results do
 * not depend on n, r0 or r1. */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

#include <immintrin.h>

#include "fold16.h"
#include "kernels.h"
#include "masks.h"
#include "prefetch.h"

void matmul_bf16_avx512bf16(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx, int n, int rows,
                            int cols, int r0, int r1);

#define MV_RB 8      /* rows per block for one or two tokens (4 for three) */
#define MV_XB 256    /* tokens converted once per call for rows up to 32 * MV_XB columns */
#define GEMM_MIN_N 4 /* from here on, register tiles */
#define RB 4         /* rows per tile */
#define TB 6         /* tokens per tile */
_Static_assert(RB == 4 && TB <= 8, "tile_chunk_end folds 4 rows and at most 8 tokens");
#define TG 48        /* tokens whose accumulators live across chunks */
#define RBD 64       /* rows per block of the many-token path */
#define CHUNK 512    /* columns of the tokens converted at a time */
#define CB (CHUNK / 32)

/* Columns [k, k + 32) of a token as bf16 pairs in natural order (zeros past len). */
static inline __m512i x32(const float *x, int len)
{
    __m512 lo = _mm512_maskz_loadu_ps(m16(len), x), hi = _mm512_maskz_loadu_ps(m16(len - 16), x + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* Columns [k, k + 32) of a weight row (zeros past len). */
static inline __m512i w32(const uint16_t *w, int len)
{
    return len >= 32 ? _mm512_loadu_si512(w) : _mm512_maskz_loadu_epi16(m32(len), w);
}

static inline __m512 dp(__m512 acc, __m512i w, __m512i x)
{
    return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x);
}

/* ---- one to three tokens: rows in blocks, the next block prefetched ---- */

/* xb: the tokens as bf16, [nt][MV_XB] vectors, or NULL (longer rows: converted per block). */
static inline __attribute__((always_inline)) void matvec_block(int nr, int nt, float *Y, size_t ldy,
                                                                const uint16_t *W, const float *X, size_t ldx,
                                                                const __m512i *xb, int cols, int rb, int r1)
{
    __m512 acc[MV_RB][GEMM_MIN_N - 1];
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            acc[i][t] = _mm512_setzero_ps();
    size_t row_bytes = (size_t)cols * 2, step_bytes = (size_t)nr * 64;
    int next_row = rb + nr < r1 ? rb + nr : r1; /* prefetch within the caller's rows only */
    const char *next = (const char *)(W + (size_t)next_row * cols);
    size_t left = (size_t)(r1 - next_row) * row_bytes;
    for (int k = 0; k < cols; k += 32) {
        __m512i x[GEMM_MIN_N - 1];
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            x[t] = xb ? _mm512_load_si512(xb + t * MV_XB + k / 32) : x32(X + (size_t)t * ldx + k, cols - k);
        prefetch_next_block(next, (size_t)(k / 32) * step_bytes, step_bytes, left);
        #pragma GCC unroll 8
        for (int i = 0; i < nr; i++) {
            __m512i w = w32(W + (size_t)(rb + i) * cols + k, cols - k);
            #pragma GCC unroll 4
            for (int t = 0; t < nt; t++)
                acc[i][t] = dp(acc[i][t], w, x[t]);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            Y[(size_t)t * ldy + rb + i] = fold16(acc[i][t]);
}

#define MV_CASE(NR, NT)                                                                            \
    case (NR) * 4 + (NT):                                                                          \
        for (; rb + (NR) <= r1; rb += (NR))                                                        \
            matvec_block(NR, NT, Y, ldy, W, X, ldx, xb, cols, rb, r1);                             \
        break;

static void matvec(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx, int n, int cols, int r0,
                   int r1)
{
    int rb = r0;
    __m512i xbuf[(GEMM_MIN_N - 1) * MV_XB];
    const __m512i *xb = cols <= 32 * MV_XB ? xbuf : NULL;
    for (int t = 0; t < n && xb; t++)
        for (int k = 0; k < cols; k += 32)
            xbuf[t * MV_XB + k / 32] = x32(X + (size_t)t * ldx + k, cols - k);
    /* the first block as a burst: each block prefetches the next */
    prefetch_share((const char *)(W + (size_t)r0 * cols), (size_t)(r1 - r0 < MV_RB ? r1 - r0 : MV_RB) * cols * 2, 0,
                   1);
    for (int nr = MV_RB; nr >= 1; nr--) {
        switch (nr * 4 + n) {
            MV_CASE(8, 1) MV_CASE(8, 2) MV_CASE(4, 3) MV_CASE(1, 1) MV_CASE(1, 2) MV_CASE(1, 3)
        default:
            break;
        }
    }
}

/* ---- many tokens: RB x TB register tiles, accumulators carried across chunks ---- */

/* first: the sums start at zero, not from acc; last: they end folded in y
 * (row i of token t at y[t * ldy + i]), not in acc. */
static inline __attribute__((always_inline)) void tile(int nr, int nt, const uint16_t *W, int cols, int k0,
                                                        int nb, const __m512i *xb /* [TG][CB] */, int first,
                                                        int last, __m512 *acc /* [RBD][TG], at the tile's corner */,
                                                        float *y, size_t ldy)
{
    __m512 a[RB][TB];
    tile_chunk_start(nr, nt, &a[0][0], TB, first, acc, TG);
    for (int b = 0; b < nb; b++) {
        int k = k0 + 32 * b;
        __m512i w[RB];
        #pragma GCC unroll 4
        for (int i = 0; i < nr; i++)
            w[i] = w32(W + (size_t)i * cols + k, cols - k);
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            __m512i x = _mm512_load_si512(xb + t * CB + b);
            #pragma GCC unroll 4
            for (int i = 0; i < nr; i++)
                a[i][t] = dp(a[i][t], w[i], x);
        }
    }
    tile_chunk_end(nr, nt, &a[0][0], TB, last, acc, TG, y, ldy);
}

#define TILE_CASE(NR, NT)                                                                          \
    case (NR) * 8 + (NT):                                                                          \
        tile(NR, NT, W, cols, k0, nb, xb, first, last, acc, y, ldy);                               \
        break;
#define TILE_ROW(NR) TILE_CASE(NR, 1) TILE_CASE(NR, 2) TILE_CASE(NR, 3) TILE_CASE(NR, 4) TILE_CASE(NR, 5) TILE_CASE(NR, 6)

static void tile_dispatch(int nr, int nt, const uint16_t *W, int cols, int k0, int nb, const __m512i *xb, int first,
                          int last, __m512 *acc, float *y, size_t ldy)
{
    switch (nr * 8 + nt) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4)
    }
}

static void gemm(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx, int n, int cols, int r0, int r1)
{
    __m512i xb[TG * CB];
    __m512 acc[RBD * TG];
    for (int rb = r0; rb < r1; rb += RBD) {
        int nrd = r1 - rb < RBD ? r1 - rb : RBD;
        for (int g0 = 0; g0 < n; g0 += TG) {
            int ng = n - g0 < TG ? n - g0 : TG;
            for (int k0 = 0; k0 < cols; k0 += CHUNK) {
                int nb = ((cols - k0 < CHUNK ? cols - k0 : CHUNK) + 31) / 32;
                for (int t = 0; t < ng; t++)
                    for (int b = 0; b < nb; b++)
                        xb[t * CB + b] = x32(X + (size_t)(g0 + t) * ldx + k0 + 32 * b, cols - k0 - 32 * b);
                int last = k0 + CHUNK >= cols;
                for (int i0 = 0; i0 < nrd; i0 += RB) {
                    /* This tile's rows of the next chunk (the next row block's
                     * first after the last), as the decoders of the other
                     * paths prefetch their next run: issued just before the
                     * tile's own chunk, the lines arrive in time and few at
                     * once. A burst of the whole next row block per chunk did
                     * nothing: the head [129280x4096] x 16 tokens took 49-55
                     * ms on two Zen 5 cores with it and without; this way
                     * 32-40. (Written out here: from a static function of its
                     * own, GCC 12 emitted no prefetch at all.) */
                    int nk = k0 + CHUNK < cols ? k0 + CHUNK : 0, nr = nk ? rb + i0 : rb + RBD + i0;
                    if (g0 == 0 && nr + RB <= r1)
                        for (int i = 0; i < RB; i++)
                            for (int o = 0; o < 2 * CHUNK && nk + o / 2 < cols; o += 64)
                                _mm_prefetch((const char *)(W + (size_t)(nr + i) * cols + nk) + o, _MM_HINT_T0);
                    for (int t0 = 0; t0 < ng; t0 += TB)
                        tile_dispatch(nrd - i0 < RB ? nrd - i0 : RB, ng - t0 < TB ? ng - t0 : TB,
                                      W + (size_t)(rb + i0) * cols, cols, k0, nb, xb + t0 * CB, k0 == 0, last,
                                      acc + i0 * TG + t0, Y + (size_t)(g0 + t0) * ldy + rb + i0, ldy);
                }
            }
        }
    }
}

void matmul_bf16_avx512bf16(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx, int n, int rows,
                            int cols, int r0, int r1)
{
    (void)rows;
    if (n <= 0 || r1 <= r0 || cols <= 0)
        return;
    if (n >= GEMM_MIN_N)
        gemm(Y, ldy, W, X, ldx, n, cols, r0, r1);
    else
        matvec(Y, ldy, W, X, ldx, n, cols, r0, r1);
}
