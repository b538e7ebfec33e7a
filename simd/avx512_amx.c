/* AMX-BF16 (Sapphire Rapids tiles) matrix products for FP8-simulated
 * activations (release numerics): matmul_fp8_e4m3act and matmul_fp4_e4m3act.
 *
 * Exactness is as in avx512_bf16.c: every weight (code x power-of-two block
 * scale) and every FP8-simulated activation is a bf16 number, every product
 * is exact in fp32, so tdpbf16ps adds the same products as the fp32 path and
 * only the order of the sum differs (tdpbf16ps flushes denormal inputs and
 * outputs: products below 2^-126, far below any tolerance we use).
 *
 * Layout. tdpbf16ps C[m][n] += sum_k A[m][k] B[k/2][2n + k%2] over 32 k:
 *   - A: 16 weight rows x 32 bf16, decoded with the block scale folded in
 *     by the decoders avx512_bf16.c uses (bf16_decode.h: e2m1 by vpermw
 *     table + saturating exponent subtract, e4m3 by a vpermi2b table; NaN
 *     codes stay NaN). Rows whose scales fall outside that range are
 *     recomputed by the fp32 kernel, so each row's result still depends on
 *     that row only.
 *   - B: activations as bf16 pairs, one column per token (up to 16).
 *   - C: 16 rows x 16 tokens of fp32.
 * One or two tokens (decode) read B straight from the tokens' bf16 vectors.
 * More tokens are packed first, once per product (e4m3act_pack, kernels.h:
 * the caller shares one copy between its threads), as ready B tiles; the
 * product then runs every token tile over a chunk of 128 columns of 32 rows
 * of A while it decodes the next chunk between the tile products, so each
 * weight is decoded once whatever n is.
 * The columns are taken 64 at a time (a "step"; the last one zero-padded);
 * a step is two k-tiles of 32, the two vectors the step decoder yields, in
 * its column order (avx512_bf16.c's header); the activations are prepared
 * in the same order (prep_step).
 *
 * Order of the sum, for each (token, row): C starts at +0 and takes one
 * tdpbf16ps per k-tile, k-tiles in ascending order (2 per step, every step
 * of the row, padding included), the 32 products of a k-tile combined as the
 * hardware's tdpbf16ps combines them. One output element of tdpbf16ps
 * depends only on its own A row, B column and C element, so the other rows
 * and tokens sharing a tile (zero rows at the ends, zero or unrelated
 * columns) never change it; C carried through memory between chunks of
 * columns is exact. Hence results do not depend on n, r0 or r1, and the
 * one-token path (B and C tiles one column wide, B loaded straight from
 * the token's bf16 vector: 16 rows of one pair each) gives the same bits
 * as the packed path. (Those tiles were 16 columns wide before, B read with
 * a 4-byte row stride: 15 of its 16 row loads crossed a cache line.)
 *
 * Tiles are configured per call (callers run one call per thread inside
 * their parallel regions) and released at the end. Scratch is on the stack
 * and bounded (< 72 KiB); nothing is allocated.
 *
 * DSV4_AMX_EMULATE replaces the tile instructions by a C model of them
 * (thread-local tiles, products summed in the SDM's pseudo-code order), so
 * the layout logic can be tested on a CPU without AMX. */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vbmi,amx-tile,amx-bf16")

#include <immintrin.h>
#include <string.h>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* The decoders' next-run prefetch goes to L2 here, not L1: a 32-row block
 * of a matrix whose rows are a power of two bytes long (every Flash expert:
 * 2048 or 1024 bytes) maps each run into two L1 sets, so the next run's
 * lines evict one another before use. Sapphire Rapids, 16 threads, two
 * rounds side by side: FP4 matrix x vector 25-29% -> 44-50% and 12-13% ->
 * 29-32% of the read probe, FP8 39-44% -> 78-82% and 22-23% -> 53-58%;
 * 64-token products equal or better. (Zen 5's bf16 path: no difference.) */
#define RUN_PREFETCH_HINT _MM_HINT_T1
#include "amx.h"
#include "bf16_decode.h"
#include "kernels.h"

const dsv4_kernels *kernels_avx512(void);

/* One- and two-token path: columns decoded at a time, and columns of the
 * tokens' bf16 vectors kept at once. */
#define SKC 128
#define SKT (SKC / 32)
#define XSEG 8192
#define SMALL_N 2

/* ---- tile instructions ---- */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

#ifndef DSV4_AMX_EMULATE
/* Own asm with memory operands: GCC 12's intrinsics do not tell the compiler
 * that tile loads read and tile stores write memory (and _tile_loadconfig
 * reads only 8 bytes of the config), so scratch stores could be dropped. */
#define TILE_LOAD(t, base, stride)                                                                 \
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"((long)(stride)) : "memory")
#define TILE_STORE(t, base, stride)                                                                \
    __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"((long)(stride)) : "memory")
#define TILE_ZERO(t) __asm__ volatile("tilezero %%tmm" #t ::)
#define TILE_DP(c, a, b) __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)
#define TILE_CONFIG(cfg) __asm__ volatile("ldtilecfg %0" ::"m"(*(const tilecfg *)(cfg)) : "memory")
#define TILE_RELEASE() __asm__ volatile("tilerelease" ::)
#else
static _Thread_local struct {
    uint8_t t[8][16][64];
    tilecfg cfg;
} emu;

static float emu_bf16(const uint8_t *p)
{
    uint32_t u = (uint32_t)(p[0] | p[1] << 8) << 16;
    if ((u & 0x7f800000u) == 0)
        u &= 0x80000000u; /* denormal inputs count as zero */
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void emu_load(int t, const void *base, long stride)
{
    memset(emu.t[t], 0, sizeof emu.t[t]);
    for (int r = 0; r < emu.cfg.rows[t]; r++)
        memcpy(emu.t[t][r], (const uint8_t *)base + r * stride, emu.cfg.colsb[t]);
}

static void emu_store(int t, void *base, long stride)
{
    for (int r = 0; r < emu.cfg.rows[t]; r++)
        memcpy((uint8_t *)base + r * stride, emu.t[t][r], emu.cfg.colsb[t]);
}

static void emu_dp(int c, int a, int b)
{
    for (int m = 0; m < emu.cfg.rows[c]; m++)
        for (int n = 0; n < emu.cfg.colsb[c] / 4; n++) {
            float acc;
            memcpy(&acc, &emu.t[c][m][4 * n], 4);
            for (int k = 0; k < emu.cfg.colsb[a] / 4; k++) {
                acc += emu_bf16(&emu.t[a][m][4 * k]) * emu_bf16(&emu.t[b][k][4 * n]);
                acc += emu_bf16(&emu.t[a][m][4 * k + 2]) * emu_bf16(&emu.t[b][k][4 * n + 2]);
            }
            memcpy(&emu.t[c][m][4 * n], &acc, 4);
        }
}

#define TILE_LOAD(t, base, stride) emu_load(t, base, stride)
#define TILE_STORE(t, base, stride) emu_store(t, base, stride)
#define TILE_ZERO(i) memset(emu.t[i], 0, sizeof emu.t[i])
#define TILE_DP(c, a, b) emu_dp(c, a, b)
#define TILE_CONFIG(c) memcpy(&emu.cfg, (c), sizeof emu.cfg)
#define TILE_RELEASE() memset(&emu, 0, sizeof emu)
#endif

/* Eight tiles of 16 rows: C in 0-3, A in 4-5, B in 6-7. A is always 64
 * bytes wide (32 bf16); B and C are too for the packed path (16 tokens),
 * and one column (4 bytes) wide for the one- and two-token path. */
static void tiles_on(int bc_bytes)
{
    tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = (uint16_t)(i == 4 || i == 5 ? 64 : bc_bytes);
        cfg.rows[i] = 16;
    }
    TILE_CONFIG(&cfg);
}

/* ---- permission: the CPU bits, and Linux's tile data state (5.16+) ---- */

int kernels_amx_usable(void)
{
    static int state = -1; /* computed once; a racing second computation gives the same answer */
    if (state >= 0)
        return state;
    int ok = 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vbmi")) {
#ifdef DSV4_AMX_EMULATE
        ok = 1;
#elif defined(__linux__)
        unsigned a, b, c, d;
        __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
        if (((d >> 22) & 1) && ((d >> 24) & 1)) /* AMX-BF16, AMX-TILE */
            ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#endif
    }
    state = ok;
    return ok;
}

/* Row r's steps [s0, s0 + ns) as bf16 k-tiles: k-tile i of the run at
 * dst + i * tstride (uint16 units), 32 values each. */
static inline __attribute__((always_inline)) void decode_row(const qmat *q, int r, int s0, int ns,
                                                              uint16_t *dst, size_t tstride)
{
    prefetch_next_run(q, r, s0, ns);
    gctx c = group_ctx(q, r, s0 * STEP / GROUP);
    for (int i = 0; i < ns; i++) {
        int k = (s0 + i) * STEP, j = (k % GROUP) / STEP;
        if (i > 0 && j == 0)
            c = group_ctx(q, r, k / GROUP);
        __m512i w0, w1;
        decode_step(q, r, k, q->cols - k, &c, j, &w0, &w1);
        _mm512_store_si512(dst + 2 * i * tstride, w0);
        _mm512_store_si512(dst + (2 * i + 1) * tstride, w1);
    }
}

static inline void zero_row(int ns, uint16_t *dst, size_t tstride)
{
    for (int i = 0; i < 2 * ns; i++)
        _mm512_store_si512(dst + i * tstride, _mm512_setzero_si512());
}

/* Token x's steps [s0, s0 + ns) as bf16 in k-tile order (32 values per k-tile). */
static void prep_token(int fp4, const float *x, int cols, int s0, int ns, uint16_t *dst)
{
    for (int i = 0; i < ns; i++) {
        int k = (s0 + i) * STEP;
        __m512i x0, x1;
        prep_step(fp4, x + k, cols - k, &x0, &x1);
        _mm512_store_si512(dst + 64 * i, x0);
        _mm512_store_si512(dst + 64 * i + 32, x1);
    }
}

/* 16x16 transpose of 32-bit elements, in place. */
static inline void transpose16(__m512i r[16])
{
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int b = 0; b < 16; b += 4) {
        u[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
        u[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
        u[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
        u[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
    }
    for (int c = 0; c < 4; c++) {
        __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
        __m512i w0 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88), w1 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
        r[c] = _mm512_shuffle_i32x4(v0, w0, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(v1, w1, 0x88);
        r[8 + c] = _mm512_shuffle_i32x4(v0, w0, 0xdd);
        r[12 + c] = _mm512_shuffle_i32x4(v1, w1, 0xdd);
    }
}

/* C tile [16 rows][16 tokens] into Y: rows [0, nr), tokens [0, nt). */
static void write_c(const float *C, float *Y, size_t ldy, int row, int nr, int nt)
{
    __m512i v[16];
    for (int m = 0; m < 16; m++)
        v[m] = _mm512_load_si512(C + 16 * m);
    transpose16(v);
    for (int t = 0; t < nt; t++)
        _mm512_mask_storeu_ps(Y + (size_t)t * ldy + row, m16(nr), _mm512_castsi512_ps(v[t]));
}

/* Tile loads get no store forwarding: a tile load of data still in the store
 * buffer waits until those stores commit, which stalls the core for hundreds
 * of cycles. So both paths decode one chunk ahead into a second buffer: the
 * tile loads of chunk c come at least a k-step's products after its stores. */

/* ---- one or two tokens: B straight from the tokens' bf16 vectors ---- */

/* Token t's B tile for k-tile s of the current segment: one column, the
 * token's 16 pairs (4-byte rows). */
#define SB(t, s) (xk[t] + 32 * (s))

/* Rows [rb, rb + nr) (a 32-row block), steps [s0, s0 + ns), into
 * A [k-tile][2][16][32]: its tile rows [m0, m1) (up to 16 or 32), those
 * past nr zeros. ctx: FP8's group contexts for steps [s0, s0 + ns) when
 * the rows lie in one 128-row block (fp8_block_ctx), else NULL. */
static void decode_rows(const qmat *q, int rb, int nr, int s0, int ns, uint16_t *A, int m0, int m1,
                        const gctx *ctx)
{
    /* row m of the block is row m % 16 of A tile m / 16: 32 values apart throughout */
    int whole = whole_groups(q, s0, ns), live = (m1 < nr ? m1 : nr) - m0;
    if (whole && live > 0) {
        uint16_t *dst = A + 32 * m0;
        if (q->fp4)
            decode_fp4_rows(q, rb + m0, live, s0 / 2, ns / 2, dst, 32, 2 * 16 * 32);
        else if (ctx)
            decode_fp8_rows_ctx(q, rb + m0, live, s0 / 2, ns / 2, ctx, dst, 32, 2 * 16 * 32);
        else
            decode_fp8_rows(q, rb + m0, live, s0 / 2, ns / 2, dst, 32, 2 * 16 * 32);
    }
    for (int m = m0; m < m1; m++) {
        if (m >= nr)
            zero_row(ns, A + 32 * m, 2 * 16 * 32);
        else if (!whole)
            decode_row(q, rb + m, s0, ns, A + 32 * m, 2 * 16 * 32);
    }
}

static void small_decode(const qmat *q, int rb, int nr, int s0, int ns, uint16_t *A)
{
    decode_rows(q, rb, nr, s0, ns, A, 0, nr > 16 ? 32 : 16, NULL);
}

static __attribute__((noinline)) void matmul_small(const qmat *q, float *Y, size_t ldy, const float *X,
                                                   size_t ldx, int n, int r0, int r1)
{
    uint16_t xk[SMALL_N][XSEG] __attribute__((aligned(64)));
    uint16_t A[2][SKT * 2 * 16 * 32] __attribute__((aligned(64)));
    float C[16] __attribute__((aligned(64)));
    int steps = (q->cols + STEP - 1) / STEP, seg_steps = XSEG / STEP, cs = SKT / 2;
    int nseg = (steps + seg_steps - 1) / seg_steps;
    if (nseg == 1)
        for (int t = 0; t < n; t++)
            prep_token(q->fp4, X + (size_t)t * ldx, q->cols, 0, steps, xk[t]);
    for (int rb = r0; rb < r1; rb += 32) {
        int nr = r1 - rb < 32 ? r1 - rb : 32, two = nr > 16;
        TILE_ZERO(0);
        TILE_ZERO(1);
        TILE_ZERO(2);
        TILE_ZERO(3);
        for (int sg = 0; sg < nseg; sg++) {
            int sg0 = sg * seg_steps, sgn = steps - sg0 < seg_steps ? steps - sg0 : seg_steps;
            if (nseg > 1)
                for (int t = 0; t < n; t++)
                    prep_token(q->fp4, X + (size_t)t * ldx, q->cols, sg0, sgn, xk[t]);
            int nch = (sgn + cs - 1) / cs;
            small_decode(q, rb, nr, sg0, sgn < cs ? sgn : cs, A[0]);
            for (int ch = 0; ch < nch; ch++) {
                int c0 = ch * cs, ns = sgn - c0 < cs ? sgn - c0 : cs;
                if (ch + 1 < nch) {
                    int c1 = c0 + cs;
                    small_decode(q, rb, nr, sg0 + c1, sgn - c1 < cs ? sgn - c1 : cs, A[(ch + 1) & 1]);
                }
                const uint16_t *a = A[ch & 1];
                for (int s = 0; s < 2 * ns; s++) {
                    TILE_LOAD(4, a + s * 2 * 16 * 32, 64);
                    TILE_LOAD(6, SB(0, 2 * c0 + s), 4);
                    if (two)
                        TILE_LOAD(5, a + s * 2 * 16 * 32 + 16 * 32, 64);
                    if (n == 2)
                        TILE_LOAD(7, SB(1, 2 * c0 + s), 4);
                    TILE_DP(0, 4, 6);
                    if (n == 2)
                        TILE_DP(1, 4, 7);
                    if (two) {
                        TILE_DP(2, 5, 6);
                        if (n == 2)
                            TILE_DP(3, 5, 7);
                    }
                }
            }
        }
        /* column t of C tile (i, t) is token t */
        for (int i = 0; i < (two ? 2 : 1); i++)
            for (int t = 0; t < n; t++) {
                if (i == 0 && t == 0)
                    TILE_STORE(0, C, 4);
                else if (i == 0)
                    TILE_STORE(1, C, 4);
                else if (t == 0)
                    TILE_STORE(2, C, 4);
                else
                    TILE_STORE(3, C, 4);
                int rows = nr - 16 * i < 16 ? nr - 16 * i : 16;
                for (int m = 0; m < rows; m++)
                    Y[(size_t)t * ldy + rb + 16 * i + m] = C[m];
            }
    }
}

/* ---- many tokens: packed once per product, then A decoded a chunk ahead ---- */

/* The packed tokens: for k-tile kt (two per step, kt_total in all) and
 * token tile j (16 tokens, the last zero-padded) of tiles_n, the B tile of
 * those tokens' bf16 pairs, 16 k-pair rows x 16 tokens (1 KiB). Token tiles
 * go in pairs, as the products read them: pair g's tiles lie together,
 * k-tile after k-tile, so a product walks P in address order. */
static inline const uint32_t *btile(const void *P, int tiles_n, int kt_total, int kt, int j)
{
    int g = j / 2, width = tiles_n - 2 * g < 2 ? 1 : 2;
    return (const uint32_t *)P + ((size_t)2 * g * kt_total + (size_t)kt * width + (size_t)(j % 2)) * 256;
}

static size_t packed_bytes(int n, int cols)
{
    if (n <= SMALL_N || cols <= 0)
        return 0;
    size_t steps = ((size_t)cols + STEP - 1) / STEP, tiles_n = ((size_t)n + 15) / 16;
    return 2 * steps * tiles_n * 1024;
}

static void pack_tokens(void *P, const float *X, size_t ldx, int n, int cols, int fp4, int s0, int s1)
{
    int tiles_n = (n + 15) / 16, kt_total = 2 * ((cols + STEP - 1) / STEP);
    for (int j = 0; j < tiles_n; j++) {
        int nt = n - 16 * j < 16 ? n - 16 * j : 16;
        for (int s = s0; s < s1; s++) {
            __m512i v[16], w[16];
            for (int t = 0; t < 16; t++) {
                v[t] = w[t] = _mm512_setzero_si512();
                if (t < nt)
                    prep_step(fp4, X + (size_t)(16 * j + t) * ldx + (size_t)s * STEP, cols - s * STEP, &v[t], &w[t]);
            }
            transpose16(v);
            transpose16(w);
            uint32_t *b0 = (uint32_t *)btile(P, tiles_n, kt_total, 2 * s, j);
            uint32_t *b1 = (uint32_t *)btile(P, tiles_n, kt_total, 2 * s + 1, j);
            for (int p = 0; p < 16; p++) {
                _mm512_store_si512(b0 + 16 * p, v[p]);
                _mm512_store_si512(b1 + 16 * p, w[p]);
            }
        }
    }
}

/* Rows per block (two A tiles), columns per decoded chunk, and tokens per
 * group (their C tiles wait in stack scratch while other token pairs run).
 * 128 columns: a chunk's B tiles for 64 tokens (16 KiB) and both A buffers
 * then fit Sapphire Rapids' 48 KiB L1; at 256 one 32-row item ran 1.5-2.5x
 * slower on one core, its tile loads coming from L2. (Decoding a whole row
 * range into L2 first and keeping C in the tiles was slower still.) */
#ifndef PK_KC
#define PK_KC 128
#endif
#define PK_KT (PK_KC / 32)
#ifndef PK_TG
#define PK_TG 256
#endif
#define PK_TT (PK_TG / 16)

/* The next chunk's decode, spread over this chunk's k-steps: a few of its
 * tile rows after each k-step's products, so the vector ports decode while
 * the tile unit multiplies (decoding the whole chunk between two chunks'
 * products left the tiles idle meanwhile: the out-of-order window holds a
 * few hundred instructions, a chunk's decode over a thousand). The rows are
 * done one k-step before the chunk ends, so its stores have committed when
 * the next chunk's tile loads read them (see above). Sapphire Rapids, 16
 * threads, 64-token products: 16-25% -> 17-30% of the tdpbf16ps probe
 * (bench/history.md, round 17). */
typedef struct {
    const qmat *q;
    int rb, nr, s0, ns; /* the chunk's rows and steps */
    uint16_t *A;
    const gctx *ctx;    /* FP8 group contexts, or NULL */
    int next, end, per; /* tile rows decoded, to decode, per k-step */
} chunk_decode;

static inline void decode_some(chunk_decode *d)
{
    if (d->next >= d->end)
        return;
    int m1 = d->next + d->per < d->end ? d->next + d->per : d->end;
    decode_rows(d->q, d->rb, d->nr, d->s0, d->ns, d->A, d->next, m1, d->ctx);
    d->next = m1;
}

/* C tile (i, j) of the group in scratch; tile register 2i + j (0-3) while computed. */
#define CS(i, j) (&C[((i) * PK_TT + (j)) * 256])

/* How a token pair's C tiles start a chunk: already in the tile registers,
 * at zero, or from scratch. */
enum { C_KEEP, C_ZERO, C_LOAD };

/* Row tiles [0, ni) x token tiles [j, j + nj) of the group (the product's
 * [jp, jp + nj)) for one chunk, over its kt k-tiles; C starts as `start`
 * says and goes back to scratch if `store`. */
static inline __attribute__((always_inline)) void pk_block(int ni, int nj, int start, int store, int kt,
                                                            const uint16_t *A, const void *P, int tiles_n, int kt0,
                                                            int kt_total, int jp, int j, float *C,
                                                            chunk_decode *d)
{
    if (start == C_ZERO) {
        TILE_ZERO(0);
        TILE_ZERO(1);
        TILE_ZERO(2);
        TILE_ZERO(3);
    } else if (start == C_LOAD) {
        TILE_LOAD(0, CS(0, j), 64);
        if (nj == 2)
            TILE_LOAD(1, CS(0, j + 1), 64);
        if (ni == 2)
            TILE_LOAD(2, CS(1, j), 64);
        if (ni == 2 && nj == 2)
            TILE_LOAD(3, CS(1, j + 1), 64);
    }
    for (int s = 0; s < kt; s++) {
        TILE_LOAD(4, A + s * 2 * 16 * 32, 64);
        TILE_LOAD(6, btile(P, tiles_n, kt_total, kt0 + s, jp), 64);
        if (nj == 2)
            TILE_LOAD(7, btile(P, tiles_n, kt_total, kt0 + s, jp + 1), 64);
        if (ni == 2)
            TILE_LOAD(5, A + s * 2 * 16 * 32 + 16 * 32, 64);
        TILE_DP(0, 4, 6);
        if (nj == 2)
            TILE_DP(1, 4, 7);
        if (ni == 2)
            TILE_DP(2, 5, 6);
        if (ni == 2 && nj == 2)
            TILE_DP(3, 5, 7);
        decode_some(d);
    }
    if (store) {
        TILE_STORE(0, CS(0, j), 64);
        if (nj == 2)
            TILE_STORE(1, CS(0, j + 1), 64);
        if (ni == 2)
            TILE_STORE(2, CS(1, j), 64);
        if (ni == 2 && nj == 2)
            TILE_STORE(3, CS(1, j + 1), 64);
    }
}

/* Chunk ch of nch for every token pair of a group of tt token tiles. The
 * pairs go forward in even chunks and backward in odd ones, so the pair a
 * chunk ends with starts the next one with its C still in the tiles: one C
 * round trip through scratch fewer per chunk (with one pair, 32 tokens or
 * fewer, none at all). Each C element still takes its k-tiles in order. */
static inline __attribute__((always_inline)) void pk_blocks(int ni, int kt, const uint16_t *A, const void *P,
                                                             int tiles_n, int kt0, int kt_total, int j0, int tt,
                                                             int ch, int nch, float *C, chunk_decode *d)
{
    int np = (tt + 1) / 2, slots = np * kt;
    d->per = (d->end + (slots > 1 ? slots - 2 : 0)) / (slots > 1 ? slots - 1 : 1);
    for (int idx = 0; idx < np; idx++) {
        int j = 2 * (ch % 2 == 0 ? idx : np - 1 - idx);
        int start = ch == 0 ? C_ZERO : idx == 0 ? C_KEEP : C_LOAD, store = idx < np - 1 || ch == nch - 1;
        if (tt - j >= 2)
            pk_block(ni, 2, start, store, kt, A, P, tiles_n, kt0, kt_total, j0 + j, j, C, d);
        else
            pk_block(ni, 1, start, store, kt, A, P, tiles_n, kt0, kt_total, j0 + j, j, C, d);
    }
}

static __attribute__((noinline)) void matmul_packed(const qmat *q, float *Y, size_t ldy, const void *P, int n,
                                                    int r0, int r1)
{
    uint16_t Ab[2][PK_KT * 2 * 16 * 32] __attribute__((aligned(64)));
    float C[2 * PK_TT * 256] __attribute__((aligned(64)));
    gctx ctx[(PK_KC + GROUP - 1) / GROUP];
    int steps = (q->cols + STEP - 1) / STEP, cs = PK_KC / STEP, nch = (steps + cs - 1) / cs;
    int tiles_n = (n + 15) / 16;
    for (int rb = r0; rb < r1; rb += 32) {
        int nr = r1 - rb < 32 ? r1 - rb : 32, ni = nr > 16 ? 2 : 1;
        for (int g0 = 0; g0 < n; g0 += PK_TG) {
            int ng = n - g0 < PK_TG ? n - g0 : PK_TG, tt = (ng + 15) / 16, j0 = g0 / 16;
            small_decode(q, rb, nr, 0, steps < cs ? steps : cs, Ab[0]);
            for (int ch = 0; ch < nch; ch++) {
                int c0 = ch * cs, ns = steps - c0 < cs ? steps - c0 : cs;
                chunk_decode d = {q, rb, nr, 0, 0, Ab[(ch + 1) & 1], NULL, 0, 0, 0};
                if (ch + 1 < nch) {
                    d.s0 = c0 + cs;
                    d.ns = steps - d.s0 < cs ? steps - d.s0 : cs;
                    d.end = ni * 16;
                    if (!q->fp4 && whole_groups(q, d.s0, d.ns) && rb / 128 == (rb + nr - 1) / 128) {
                        fp8_block_ctx(q, rb, d.s0 / 2, d.ns / 2, ctx);
                        d.ctx = ctx;
                    }
                }
                if (ni == 2)
                    pk_blocks(2, 2 * ns, Ab[ch & 1], P, tiles_n, 2 * c0, 2 * steps, j0, tt, ch, nch, C, &d);
                else
                    pk_blocks(1, 2 * ns, Ab[ch & 1], P, tiles_n, 2 * c0, 2 * steps, j0, tt, ch, nch, C, &d);
                while (d.next < d.end) /* a safety net: pk_blocks spreads every row over its k-steps */
                    decode_some(&d);
            }
            for (int i = 0; i < ni; i++)
                for (int j = 0; j < tt; j++) {
                    int nri = nr - 16 * i < 16 ? nr - 16 * i : 16, ntj = ng - 16 * j < 16 ? ng - 16 * j : 16;
                    write_c(CS(i, j), Y + (size_t)(g0 + 16 * j) * ldy, ldy, rb + 16 * i, nri, ntj);
                }
        }
    }
}

/* ---- entries ---- */

/* Rows whose scales the bf16 decoders cannot take: the fp32 kernel, whole. */
static void redo_out_of_range(const qmat *q, float *Y, size_t ldy, const float *X, size_t ldx, int n, int r0,
                              int r1)
{
    const dsv4_kernels *f = kernels_avx512();
    for (int r = r0; r < r1; r++)
        if (!row_in_range(q, r))
            (q->fp4 ? f->matmul_fp4 : f->matmul_fp8)(Y, ldy, q->W, q->scale, X, ldx, n, q->rows, q->cols,
                                                      r, r + 1);
}

/* Without a packed copy, tokens go two at a time through the small path:
 * the same bits, for callers that do not pack (linear.c packs). */
static void matmul_q(const qmat *q, float *Y, size_t ldy, const float *X, size_t ldx, int n, int r0, int r1)
{
    if (n <= 0 || r1 <= r0 || q->cols <= 0)
        return;
    tiles_on(4);
    for (int t = 0; t < n; t += SMALL_N)
        matmul_small(q, Y + (size_t)t * ldy, ldy, X + (size_t)t * ldx, ldx, n - t < SMALL_N ? n - t : SMALL_N,
                     r0, r1);
    TILE_RELEASE();
    redo_out_of_range(q, Y, ldy, X, ldx, n, r0, r1);
}

static void matmul_qp(const qmat *q, float *Y, size_t ldy, const float *X, size_t ldx, const void *P, int n,
                      int r0, int r1)
{
    if (n <= 0 || r1 <= r0 || q->cols <= 0)
        return;
    tiles_on(64);
    matmul_packed(q, Y, ldy, P, n, r0, r1);
    TILE_RELEASE();
    redo_out_of_range(q, Y, ldy, X, ldx, n, r0, r1);
}

void matmul_fp8_amx(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X, size_t ldx,
                    int n, int rows, int cols, int r0, int r1)
{
    qmat q = {0, W, scale, rows, cols};
    matmul_q(&q, Y, ldy, X, ldx, n, r0, r1);
}

void matmul_fp4_amx(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X, size_t ldx,
                    int n, int rows, int cols, int r0, int r1)
{
    qmat q = {1, W, scale, rows, cols};
    matmul_q(&q, Y, ldy, X, ldx, n, r0, r1);
}

size_t amx_packed_bytes(int n, int cols)
{
    return packed_bytes(n, cols);
}

void amx_pack(void *P, const float *X, size_t ldx, int n, int cols, int fp4, int s0, int s1)
{
    pack_tokens(P, X, ldx, n, cols, fp4, s0, s1);
}

void matmul_fp8_amx_packed(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, const void *P, int n, int rows, int cols, int r0, int r1)
{
    qmat q = {0, W, scale, rows, cols};
    matmul_qp(&q, Y, ldy, X, ldx, P, n, r0, r1);
}

void matmul_fp4_amx_packed(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X,
                           size_t ldx, const void *P, int n, int rows, int cols, int r0, int r1)
{
    qmat q = {1, W, scale, rows, cols};
    matmul_qp(&q, Y, ldy, X, ldx, P, n, r0, r1);
}
