/* AVX-512 (F/BW/VL/DQ) kernels.
 *
 * Matrix products. Weights are decoded to exact f32 (block scales are powers
 * of two, so folding them into the weights loses nothing). Per (token, row)
 * the sum uses one 16-lane accumulator that takes the columns 32 at a time
 * (a "block"; a last partial block is padded with zero weights and zero
 * activations), blocks in ascending order, each block as two 16-column
 * halves; the 16 lanes are then folded pairwise (i+8, i+4, i+2, i+1). Which
 * column of a block a lane takes depends on the format:
 *   - F32, BF16, FP8: lane j takes column j, then column 16 + j;
 *   - FP4: lane j = 4L + d takes column 8d + L, then column 8d + 4 + L. That
 *     is the order in which the packed nibbles fall out of one broadcast
 *     16-byte load shifted by 4L bits in 128-bit lane L (see fp4x32), which
 *     spares the unpacks a natural order would cost; the activations are
 *     permuted to match instead, once per block for all the rows that use it.
 * Two paths compute exactly that sequence of operations:
 *   - few tokens (n <= MV_MAX_N): weights decoded in registers, a group of
 *     rows at a time, each decoded vector used by up to MV_PASS tokens, more
 *     tokens in passes over the group (bandwidth-bound);
 *   - many tokens: RG rows decoded into a stack buffer a chunk at a time,
 *     then RB x TB register tiles of accumulators that read the activations
 *     in the format's column order (FP4: permuted per block in registers,
 *     each permuted vector serving RB rows) (compute-bound).
 * So the result depends on neither n, the token tiling, r0 nor r1. The order
 * differs from the scalar reference (tested within 1e-5 of sum |W||X|). */

#include <immintrin.h>
#include <pthread.h>
#include <string.h>

#include "e4m3_table.h"
#include "exp512.h"
#include "kernels.h"
#include "fold16.h"
#include "formats.h"
#include "prefetch.h"
#include "round_bf16.h"

const dsv4_kernels *kernels_avx512(void);
const dsv4_kernels *kernels_avx512_novnni(void);

#define CHUNK 512    /* columns decoded at a time per row of a GEMM block */
#define RB 4         /* rows per block */
#define TB 6         /* tokens per register tile: RB*TB = 24 accumulators */
_Static_assert(RB == 4 && TB <= 8, "tile_chunk_end folds 4 rows and at most 8 tokens");
#define MV_PASS 3    /* most tokens per in-register pass: rows x tokens accumulators */
#define MV_RB 8      /* rows per in-register block for one token (4 for two or three) */
/* Up to this many tokens, weights are decoded in registers: past MV_PASS,
 * each 4-row block takes the tokens in passes (the accumulators must fit
 * the registers), its weights coming from memory in the first pass and
 * from L1 in the others. 6 rather than 3 (the GEMM path from 4 tokens on):
 * batched decode on the 16-core Sapphire Rapids, release numerics, `dsv4
 * bench -m /tmp/f4 -t 16 -r 2 -p 0 -n 16 -b 1,4,6,8` alternated three
 * times: 4 sequences 66-71 -> 77-81 tok/s, 6 sequences 80-85 -> 91-96. */
#ifndef MV_MAX_N
#define MV_MAX_N 6
#endif

/* W_FP8V: FP8 decoded through VBMI byte tables where the block scale allows
 * (e4m3_table.h), else as W_FP8; the same f32 values, about half the
 * operations per weight. */
enum { W_F32, W_BF16, W_FP8, W_FP4, W_FP8V };

static inline int is_fp8(int fmt)
{
    return fmt == W_FP8 || fmt == W_FP8V;
}

typedef struct {
    int fmt;
    const void *W;
    const uint8_t *scale;
    int rows, cols;
} wsrc;

/* fmt_e8m0_to_f32, inlined: it runs once per 32 weights on the decode path. */
static inline float e8m0(uint8_t b)
{
    uint32_t bits = b == 0xff ? 0x7fc00000u : b == 0 ? 0x00400000u : (uint32_t)b << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline __mmask16 tail_mask(int left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* ---- decoders: 32 columns [k, k+32) of one row (k + 32 <= cols for the
 * vector forms; FP4 columns always come in whole blocks of 32) ---- */

static const float e2m1_lut[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                   -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/* The 16 bytes of one FP4 block, broadcast to the four 128-bit lanes and
 * shifted right by 4L bits in lane L: dword d of lane L then has, in its low
 * nibble, column 8d + L (vector a) and, 16 bits higher, column 8d + 4 + L
 * (vector b). vpermps reads only the low 4 bits of each index, so no mask. */
static inline void fp4x32(const uint8_t *p, __m512 lut, __m512 *a, __m512 *b)
{
    const __m512i shift = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12);
    __m512i v = _mm512_srlv_epi32(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p)), shift);
    *a = _mm512_permutexvar_ps(v, lut);
    *b = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 16), lut);
}

/* e2m1_lut times each e8m0 block scale, by the multiply the decode did
 * before: a block's decode loads its scaled table instead of multiplying
 * (one vector operation fewer per 32 weights; on Intel cores the multiply
 * took a slot of the two ports that do all the decode's vector work).
 * 16 KiB, of which a checkpoint touches the few scales it has. Filled by
 * the first FP4 product (fp4_luts_ready), read only after: not at load
 * time, as this file's code may only run once dispatch has seen AVX-512. */
static float fp4_luts[256][16] __attribute__((aligned(64)));
static pthread_once_t fp4_luts_once = PTHREAD_ONCE_INIT;

static void fp4_luts_fill(void)
{
    const __m512 lut = _mm512_loadu_ps(e2m1_lut);
    for (int s = 0; s < 256; s++)
        _mm512_store_ps(fp4_luts[s], _mm512_mul_ps(lut, _mm512_set1_ps(e8m0((uint8_t)s))));
}

static void fp4_luts_ready(void)
{
    pthread_once(&fp4_luts_once, fp4_luts_fill);
}

/* fp4_luts[s] as a byte offset, the form the decode loops index by. */
static inline const float *fp4_lut_at(int32_t offset)
{
    return (const float *)((const char *)fp4_luts + offset);
}

/* Activations of one 32-column block in the order fp4x32 yields weights. */
static inline void fp4_order_x(const float *x, __m512 *a, __m512 *b)
{
    const __m512i ca = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
    const __m512i cb = _mm512_setr_epi32(4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31);
    __m512 lo = _mm512_loadu_ps(x), hi = _mm512_loadu_ps(x + 16);
    *a = _mm512_permutex2var_ps(lo, ca, hi);
    *b = _mm512_permutex2var_ps(lo, cb, hi);
}

/* e4m3 -> f16 is a bit move (sign to bit 15, exponent+mantissa shifted by 7:
 * the value becomes x * 2^-8, subnormals included, so no f32 subnormal ever
 * reaches a multiply), then vcvtph2ps; the 2^8 rides on the block scale.
 * NaN codes (0x7f, 0xff) are looked for on the raw bytes, and the rare block
 * that has one takes the masked move that makes them f16 NaN. */
static inline void fp8x32(const uint8_t *p, float scale, __m512 *lo, __m512 *hi)
{
    __m256i raw = _mm256_loadu_si256((const __m256i *)p);
    __m512i b = _mm512_cvtepi8_epi16(raw);
    __m512i h = _mm512_and_si512(_mm512_slli_epi16(b, 7), _mm512_set1_epi16((short)0xbf80));
    __mmask32 nan = _mm256_cmpeq_epi8_mask(_mm256_or_si256(raw, _mm256_set1_epi8((char)0x80)),
                                           _mm256_set1_epi8((char)0xff));
    if (__builtin_expect(nan != 0, 0))
        h = _mm512_mask_mov_epi16(h, nan, _mm512_set1_epi16(0x7e00));
    __m512 s = _mm512_set1_ps(scale * 256.0f);
    *lo = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), s);
    *hi = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), s);
}

static inline __m512 bf16x16(const uint16_t *p, __mmask16 m)
{
    __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

/* Bytes of 32 columns of one row. */
static inline int row_bytes32(int fmt)
{
    return fmt == W_FP4 ? 16 : is_fp8(fmt) ? 32 : fmt == W_BF16 ? 64 : 128;
}

/* Columns [k0, k0 + len) of row r into buf, zero-padded to a multiple of 16;
 * the row's next chunk is prefetched (rows are decoded a chunk at a time,
 * side by side, the pattern the hardware prefetchers follow badly). */
static void decode_chunk(const wsrc *s, int r, int k0, int len, float *buf)
{
    int cols = s->cols, k = 0;
    size_t row_bytes = (size_t)cols * row_bytes32(s->fmt) / 32, chunk_bytes = (size_t)CHUNK * row_bytes32(s->fmt) / 32;
    size_t b0 = (size_t)k0 * row_bytes32(s->fmt) / 32 + chunk_bytes;
    for (size_t b = b0; b < b0 + chunk_bytes && b < row_bytes; b += 64)
        _mm_prefetch((const char *)s->W + (size_t)r * row_bytes + b, _MM_HINT_T0);
    switch (s->fmt) {
    case W_F32: {
        const float *w = (const float *)s->W + (size_t)r * cols + k0;
        for (; k < len; k += 16)
            _mm512_store_ps(buf + k, _mm512_maskz_loadu_ps(tail_mask(len - k), w + k));
        break;
    }
    case W_BF16: {
        const uint16_t *w = (const uint16_t *)s->W + (size_t)r * cols + k0;
        for (; k < len; k += 16)
            _mm512_store_ps(buf + k, bf16x16(w + k, tail_mask(len - k)));
        break;
    }
    case W_FP8:
    case W_FP8V: {
        const uint8_t *w = (const uint8_t *)s->W + (size_t)r * cols;
        const uint8_t *srow = s->scale + (size_t)(r / 128) * ((cols + 127) / 128);
        e4m3_tables T;
        int T_block = -1;
        for (; k < len; k += 16) {
            int c = k0 + k; /* chunk starts and 16-groups never straddle a 128 block */
            if (s->fmt == W_FP8V && len - k >= 64 && c % 64 == 0 && e4m3_scale_in_tables(srow[c / 128])) {
                if (T_block != c / 128) {
                    T = e4m3_tables_for(srow[c / 128]);
                    T_block = c / 128;
                }
                __m512 v[4];
                e4m3x64_f32(w + c, &T, v);
                for (int i = 0; i < 4; i++)
                    _mm512_store_ps(buf + k + 16 * i, v[i]);
                k += 48;
                continue;
            }
            float sc = e8m0(srow[c / 128]);
            if (len - k >= 32 && (c % 128) <= 96) {
                __m512 lo, hi;
                fp8x32(w + c, sc, &lo, &hi);
                _mm512_store_ps(buf + k, lo);
                _mm512_store_ps(buf + k + 16, hi);
                k += 16;
            } else {
                float tmp[16] = {0};
                for (int j = 0; j < 16 && k + j < len; j++)
                    tmp[j] = fmt_e4m3_to_f32(w[c + j]) * sc;
                _mm512_store_ps(buf + k, _mm512_loadu_ps(tmp));
            }
        }
        break;
    }
    case W_FP4: {
        const uint8_t *w = (const uint8_t *)s->W + (size_t)r * (cols / 2);
        const uint8_t *srow = s->scale + (size_t)r * (cols / 32);
        for (; k < len; k += 32) {
            int c = k0 + k;
            __m512 lo, hi;
            fp4x32(w + c / 2, _mm512_load_ps(fp4_luts[srow[c / 32]]), &lo, &hi);
            _mm512_store_ps(buf + k, lo);
            _mm512_store_ps(buf + k + 16, hi);
        }
        break;
    }
    }
}

/* ---- many tokens: RB x TB register tiles over decoded chunks ---- */

/* xs: the chunk's activations, token t at xs + t * ldxs; reads past the
 * chunk's end are masked off. FP4: already in fp4x32's order (fp4_order_x),
 * aligned, whole blocks. first: the sums start at zero, not from acc; last:
 * they end folded in y (row i of token t at y[t * ldy + i]), not in acc. */
static inline __attribute__((always_inline)) void tile(int nr, int nt, const float *buf, int len,
                                                        const float *xs, size_t ldxs,
                                                        __m512 *acc /* [nr][TB] */, int first, int last, float *y,
                                                        size_t ldy)
{
    __m512 a[RB][TB];
    tile_chunk_start(nr, nt, &a[0][0], TB, first, acc, TB);
    /* FP4 too, 16 columns a step: its chunk and activations come in
     * fp4x32's order, whole blocks, and the sums take the same products in
     * the same order. (Both halves of a 32-column block at once held 8
     * weight vectors beside the 24 sums: two sums spilled every step.) */
    for (int k = 0; k < len; k += 16) {
        __mmask16 m = tail_mask(len - k);
        __m512 w[RB];
        #pragma GCC unroll 8
        for (int i = 0; i < nr; i++)
            w[i] = _mm512_load_ps(buf + i * CHUNK + k);
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            __m512 x = _mm512_maskz_loadu_ps(m, xs + (size_t)t * ldxs + k);
            #pragma GCC unroll 8
            for (int i = 0; i < nr; i++)
                a[i][t] = _mm512_fmadd_ps(w[i], x, a[i][t]);
        }
    }
    tile_chunk_end(nr, nt, &a[0][0], TB, last, acc, TB, y, ldy);
}

#define TILE_CASE(NR, NT)                                                                          \
    case (NR) * 8 + (NT):                                                                          \
        tile(NR, NT, buf, len, xs, ldxs, acc, first, last, y, ldy);                                \
        break;
#define TILE_ROW(NR) TILE_CASE(NR, 1) TILE_CASE(NR, 2) TILE_CASE(NR, 3) TILE_CASE(NR, 4) TILE_CASE(NR, 5) \
    TILE_CASE(NR, 6)

static void tile_dispatch(int nr, int nt, const float *buf, int len, const float *xs, size_t ldxs, __m512 *acc,
                          int first, int last, float *y, size_t ldy)
{
    switch (nr * 8 + nt) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4)
    }
}

/* Tokens per group, their accumulators on the stack across chunks: 66
 * (11 tiles) rather than 48, so a 64-token product decodes its weights
 * once, not twice. Two Zen 5 cores, alternated three times, 64 tokens: FP8
 * rows 45-60 -> 58-66%, BF16 44-59 -> 58-66% of the FMA peak, FP4 equal. */
#define TG 66
/* Rows decoded per chunk (128 KiB of f32): every activation chunk loaded,
 * and for FP4 reordered, serves this many rows. 32 rather than 16, one Zen
 * 5 core, interleaved: FP4 [2048x4096] at 5 / 12 / 64 tokens 92-95 -> 102-
 * 103 / 123-124 -> 142-143 / 133-135 -> 155-157 GFLOP/s; FP8 [4096x1024]
 * at 64 / 512 tokens unchanged (166-170, 164-172). 64 rather than 32: at
 * 64 tokens FP4's reorder (a load miss and two vpermt2ps per 32 values)
 * still took ~15% of the product; one Zen 5 core 166-173 -> 181-188
 * GFLOP/s, two cores 293-344 -> 304-373 over the three expert shapes, FP8
 * unchanged (three alternations). On the 16-core Sapphire Rapids, where
 * this path is the default, pp512 end to end 202-205 -> 210-217 tok/s
 * (three alternations). 128 was no better for FP4 and cost FP8 a fifth in
 * some runs (its kept sums take 540 KiB). The frame is ~540 KiB. */
#define RG 64
#define TILES_PER_GROUP (TG / TB)

static void matmul_gemm(float *Y, size_t ldy, const wsrc *s, const float *X, size_t ldx, int n,
                        int r0, int r1)
{
    float buf[RG * CHUNK] __attribute__((aligned(64)));
    /* FP4: the group's activations of the chunk in fp4x32's column order,
     * reordered once for all RG rows (per tile they took a vpermt2ps per 16
     * values, on Intel the port of the second FMA unit) */
    float xo[TG * CHUNK] __attribute__((aligned(64)));
    __m512 acc[(RG / RB) * TILES_PER_GROUP * RB * TB];
    size_t row_bytes = (size_t)s->cols * row_bytes32(s->fmt) / 32;
    for (int rg = r0; rg < r1; rg += RG) {
        int nrg = r1 - rg < RG ? r1 - rg : RG;
        for (int g0 = 0; g0 < n; g0 += TG) {
            int ng = n - g0 < TG ? n - g0 : TG;
            for (int k0 = 0; k0 < s->cols; k0 += CHUNK) {
                int len = s->cols - k0 < CHUNK ? s->cols - k0 : CHUNK;
                int chunks = (s->cols + CHUNK - 1) / CHUNK;
                for (int i = 0; i < nrg; i++) {
                    /* the next row group, spread over this group's rows and chunks
                     * (avx512_bf16.c: bursts stall the decoder's own loads) */
                    if (g0 == 0 && rg + RG < r1) {
                        int next = r1 - rg - RG < RG ? r1 - rg - RG : RG, part = (k0 / CHUNK) * nrg + i;
                        prefetch_share((const char *)s->W + (size_t)(rg + RG) * row_bytes, (size_t)next * row_bytes,
                                       part, chunks * nrg);
                        if (s->fmt == W_FP4) /* and its block scales, a stream of their own */
                            prefetch_share((const char *)s->scale + (size_t)(rg + RG) * (s->cols / 32),
                                           (size_t)next * (s->cols / 32), part, chunks * nrg);
                    }
                    decode_chunk(s, rg + i, k0, len, buf + i * CHUNK);
                }
                const float *xs = X + (size_t)g0 * ldx + k0;
                size_t ldxs = ldx;
                if (s->fmt == W_FP4) { /* FP4 columns come in whole blocks */
                    for (int t = 0; t < ng; t++)
                        for (int k = 0; k < len; k += 32) {
                            __m512 xa, xb;
                            fp4_order_x(xs + (size_t)t * ldx + k, &xa, &xb);
                            _mm512_store_ps(xo + (size_t)t * CHUNK + k, xa);
                            _mm512_store_ps(xo + (size_t)t * CHUNK + k + 16, xb);
                        }
                    xs = xo;
                    ldxs = CHUNK;
                }
                int last = k0 + CHUNK >= s->cols;
                /* token tiles outside: a tile's activations (12 KiB) stay in L1
                 * while the group's decoded rows stream from L2, 4 loads a step
                 * instead of the activations' 6 */
                for (int t0 = 0; t0 < ng; t0 += TB)
                    for (int rb = 0; rb < nrg; rb += RB) {
                        int nr = nrg - rb < RB ? nrg - rb : RB;
                        tile_dispatch(nr, ng - t0 < TB ? ng - t0 : TB, buf + (size_t)rb * CHUNK, len,
                                      xs + (size_t)t0 * ldxs, ldxs,
                                      acc + ((rb / RB) * TILES_PER_GROUP + t0 / TB) * RB * TB, k0 == 0, last,
                                      Y + (size_t)(g0 + t0) * ldy + rg + rb, ldy);
                    }
            }
        }
    }
}

/* ---- few tokens: decode in registers, RB rows at a time ---- */

/* What the in-register decode keeps of each row's block scales: FP8 the
 * current block's as a float (f[0]); FP4 16 blocks' tables as offsets into
 * fp4_luts (off[b % 16] for block b). */
typedef union {
    float f[16];
    int32_t off[16];
} row_scales;

static inline __attribute__((always_inline)) void decode32(const wsrc *s, int r, int k, const row_scales *rs,
                                                            __m512 *lo, __m512 *hi)
{
    int cols = s->cols;
    switch (s->fmt) {
    case W_F32: {
        const float *w = (const float *)s->W + (size_t)r * cols + k;
        *lo = _mm512_loadu_ps(w);
        *hi = _mm512_loadu_ps(w + 16);
        break;
    }
    case W_BF16: {
        const uint16_t *w = (const uint16_t *)s->W + (size_t)r * cols + k;
        *lo = bf16x16(w, 0xffff);
        *hi = bf16x16(w + 16, 0xffff);
        break;
    }
    case W_FP8:
    case W_FP8V:
        fp8x32((const uint8_t *)s->W + (size_t)r * cols + k, rs->f[0], lo, hi);
        break;
    default:
        fp4x32((const uint8_t *)s->W + (size_t)r * (cols / 2) + k / 2,
               _mm512_load_ps(fp4_lut_at(rs->off[(k / 32) % 16])), lo, hi);
        break;
    }
}

/* The fp4_luts offsets of FP4 blocks [b, b + 16) of row r (fewer at the
 * row's end): one vector conversion instead of one scalar per block. */
static inline void fp4_lut_offsets16(const wsrc *s, int r, int b, int32_t *out)
{
    int nb = s->cols / 32, left = nb - b;
    __m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(tail_mask(left), s->scale + (size_t)r * nb + b));
    _mm512_store_si512(out, _mm512_slli_epi32(v, 6)); /* x sizeof fp4_luts[0] */
}

/* Columns [k, k + 64) of rows [rb, rb + nr) through the tables T: the same
 * products in the same order as two 32-column steps of matvec_block. */
static inline __attribute__((always_inline)) void fp8v_step64(int nr, int nt, __m512 acc[][MV_PASS],
                                                               const wsrc *s, int rb, int k,
                                                               const e4m3_tables *T, const float *X, size_t ldx)
{
    __m512 x[MV_PASS][4];
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++)
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            x[t][j] = _mm512_loadu_ps(X + (size_t)t * ldx + k + 16 * j);
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++) {
        __m512 w[4];
        e4m3x64_f32((const uint8_t *)s->W + (size_t)(rb + i) * s->cols + k, T, w);
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            #pragma GCC unroll 4
            for (int j = 0; j < 4; j++)
                acc[i][t] = _mm512_fmadd_ps(w[j], x[t][j], acc[i][t]);
    }
}

static inline __attribute__((always_inline)) void matvec_block(int nr, int nt, float *Y, size_t ldy,
                                                                const wsrc *s, const float *X,
                                                                size_t ldx, int rb, int r1)
{
    __m512 acc[MV_RB][MV_PASS];
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            acc[i][t] = _mm512_setzero_ps();
    int cols = s->cols, k = 0;
    size_t row_bytes = (size_t)cols * row_bytes32(s->fmt) / 32, step_bytes = (size_t)nr * row_bytes32(s->fmt);
    int next_row = rb + nr < r1 ? rb + nr : r1; /* prefetch within the caller's rows only */
    const char *next = (const char *)s->W + (size_t)next_row * row_bytes;
    size_t left = (size_t)(r1 - next_row) * row_bytes;
    row_scales rs[MV_RB] __attribute__((aligned(64)));
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        rs[i].f[0] = 0.0f; /* set at k = 0 below; this only informs the compiler */
    /* W_FP8V: 64 columns a step through the tables where the rows share
     * one 128-row scale block and its scale is in the tables' range */
    int by_table = s->fmt == W_FP8V && rb / 128 == (rb + nr - 1) / 128, in_tables = 0;
    e4m3_tables T;
    while (k + 32 <= cols) {
        __m512 x0[MV_PASS], x1[MV_PASS];
        if (s->fmt == W_FP4 && k % 512 == 0) {
            #pragma GCC unroll 8
            for (int i = 0; i < nr; i++)
                fp4_lut_offsets16(s, rb + i, k / 32, rs[i].off);
        }
        if (is_fp8(s->fmt) && k % 128 == 0) {
            #pragma GCC unroll 8
            for (int i = 0; i < nr; i++)
                rs[i].f[0] = e8m0(s->scale[(size_t)((rb + i) / 128) * ((cols + 127) / 128) + k / 128]);
            if (by_table) {
                unsigned sb = s->scale[(size_t)(rb / 128) * ((cols + 127) / 128) + k / 128];
                in_tables = e4m3_scale_in_tables(sb);
                if (in_tables)
                    T = e4m3_tables_for(sb);
            }
        }
        if (in_tables && k + 64 <= cols) {
            prefetch_next_block(next, (size_t)(k / 32) * step_bytes, 2 * step_bytes, left);
            fp8v_step64(nr, nt, acc, s, rb, k, &T, X, ldx);
            k += 64;
            continue;
        }
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            if (s->fmt == W_FP4) {
                fp4_order_x(X + (size_t)t * ldx + k, &x0[t], &x1[t]);
            } else {
                x0[t] = _mm512_loadu_ps(X + (size_t)t * ldx + k);
                x1[t] = _mm512_loadu_ps(X + (size_t)t * ldx + k + 16);
            }
        }
        prefetch_next_block(next, (size_t)(k / 32) * step_bytes, step_bytes, left);
        if (s->fmt == W_FP4 && k == 0) /* and the next block's scales, a short stream of their own */
            prefetch_next_block((const char *)s->scale + (size_t)next_row * (cols / 32), 0,
                                (size_t)nr * (cols / 32), (size_t)(r1 - next_row) * (cols / 32));
        #pragma GCC unroll 8
        for (int i = 0; i < nr; i++) {
            __m512 lo, hi;
            decode32(s, rb + i, k, &rs[i], &lo, &hi);
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                acc[i][t] = _mm512_fmadd_ps(lo, x0[t], acc[i][t]);
                acc[i][t] = _mm512_fmadd_ps(hi, x1[t], acc[i][t]);
            }
        }
        k += 32;
    }
    if (k < cols) { /* the ragged end (never for FP4): the GEMM path's decoder */
        float buf[32] __attribute__((aligned(64)));
        #pragma GCC unroll 8
        for (int i = 0; i < nr; i++) {
            decode_chunk(s, rb + i, k, cols - k, buf);
            for (int j = k; j < cols; j += 16) {
                __mmask16 m = tail_mask(cols - j);
                #pragma GCC unroll 8
                for (int t = 0; t < nt; t++)
                    acc[i][t] = _mm512_fmadd_ps(_mm512_load_ps(buf + (j - k)),
                                                _mm512_maskz_loadu_ps(m, X + (size_t)t * ldx + j), acc[i][t]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < nr; i++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            Y[(size_t)t * ldy + rb + i] = fold16(acc[i][t]);
}

/* Each block prefetches the next (matvec_block); the first block of a call
 * is fetched as a burst here: a work item of a thread is often only a few
 * blocks long, and its first one would otherwise wait on memory row by row. */
static inline void prefetch_first_block(const wsrc *s, int r0, int r1)
{
    size_t row_bytes = (size_t)s->cols * row_bytes32(s->fmt) / 32;
    prefetch_share((const char *)s->W + (size_t)r0 * row_bytes, (size_t)(r1 - r0 < MV_RB ? r1 - r0 : MV_RB) * row_bytes,
                   0, 1);
}

#define MV_CASE(FMT, NR, NT)                                                                       \
    case (NR) * 4 + (NT):                                                                          \
        for (; rb + (NR) <= r1; rb += (NR))                                                        \
            matvec_block(NR, NT, Y, ldy, &(wsrc){FMT, s->W, s->scale, s->rows, s->cols}, X, ldx,  \
                         rb, r1);                                                                  \
        break;

/* Tokens of the pass that starts with `left` tokens to go: 3 at a time, but
 * 4 as 2 + 2 (a pass of one token has too few accumulators; so from two
 * tokens on no pass has one). */
static inline int mv_pass_tokens(int left)
{
    return left == 4 ? 2 : left < MV_PASS ? left : MV_PASS;
}

/* Row block [rb, rb + NR) for all n tokens, pass by pass; only the first
 * pass prefetches the next block (r1 bounds it). Used inside MATVEC_FN,
 * whose s, n, X, Y, rb and r1 it reads. */
#define MV_PASSES(FMT, NR)                                                                         \
    for (int t0 = 0, c; t0 < n; t0 += c) {                                                         \
        c = mv_pass_tokens(n - t0);                                                                \
        int pr1 = t0 == 0 ? r1 : rb + (NR);                                                        \
        const wsrc ws = {FMT, s->W, s->scale, s->rows, s->cols};                                   \
        if (c == 3)                                                                                \
            matvec_block(NR, 3, Y + (size_t)t0 * ldy, ldy, &ws, X + (size_t)t0 * ldx, ldx, rb, pr1); \
        else                                                                                       \
            matvec_block(NR, 2, Y + (size_t)t0 * ldy, ldy, &ws, X + (size_t)t0 * ldx, ldx, rb, pr1); \
    }

/* One instantiation per format so the decoder's switch folds away. */
#define MATVEC_FN(NAME, FMT)                                                                       \
    static void NAME(float *Y, size_t ldy, const wsrc *s, const float *X, size_t ldx, int n,     \
                     int r0, int r1)                                                               \
    {                                                                                              \
        int rb = r0;                                                                               \
        prefetch_first_block(s, r0, r1);                                                           \
        if (n > MV_PASS) { /* in passes: 4-row blocks, then single rows */                        \
            for (; rb + 4 <= r1; rb += 4)                                                          \
                MV_PASSES(FMT, 4)                                                                  \
            for (; rb < r1; rb++)                                                                  \
                MV_PASSES(FMT, 1)                                                                  \
            return;                                                                                \
        }                                                                                          \
        for (int nr = MV_RB; nr >= 1; nr--) {                                                      \
            switch (nr * 4 + n) {                                                                  \
                MV_CASE(FMT, 8, 1) MV_CASE(FMT, 4, 2) MV_CASE(FMT, 4, 3)                           \
                MV_CASE(FMT, 1, 1) MV_CASE(FMT, 1, 2) MV_CASE(FMT, 1, 3)                           \
            default:                                                                               \
                break;                                                                             \
            }                                                                                      \
        }                                                                                          \
    }

MATVEC_FN(matvec_f32, W_F32)
MATVEC_FN(matvec_bf16, W_BF16)
MATVEC_FN(matvec_fp8, W_FP8)
MATVEC_FN(matvec_fp8v, W_FP8V)
MATVEC_FN(matvec_fp4, W_FP4)

typedef void (*matvec_fn)(float *, size_t, const wsrc *, const float *, size_t, int, int, int);

static void matmul_any(float *Y, size_t ldy, const wsrc *s, matvec_fn mv, const float *X,
                       size_t ldx, int n, int r0, int r1)
{
    if (n <= 0 || r1 <= r0)
        return;
    if (n > MV_MAX_N)
        matmul_gemm(Y, ldy, s, X, ldx, n, r0, r1);
    else
        mv(Y, ldy, s, X, ldx, n, r0, r1);
}

static void matmul_f32_avx512(float *Y, size_t ldy, const float *W, const float *X, size_t ldx,
                              int n, int rows, int cols, int r0, int r1)
{
    wsrc s = {W_F32, W, NULL, rows, cols};
    matmul_any(Y, ldy, &s, matvec_f32, X, ldx, n, r0, r1);
}

static void matmul_bf16_avx512(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx,
                               int n, int rows, int cols, int r0, int r1)
{
    wsrc s = {W_BF16, W, NULL, rows, cols};
    matmul_any(Y, ldy, &s, matvec_bf16, X, ldx, n, r0, r1);
}

static void matmul_fp8_avx512(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                              const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    wsrc s = {W_FP8, W, scale, rows, cols};
    matmul_any(Y, ldy, &s, matvec_fp8, X, ldx, n, r0, r1);
}

/* FP8 through the VBMI tables: for CPUs that have VBMI (dispatch.c). */
void matmul_fp8_avx512vbmi(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale, const float *X, size_t ldx,
                           int n, int rows, int cols, int r0, int r1)
{
    wsrc s = {W_FP8V, W, scale, rows, cols};
    matmul_any(Y, ldy, &s, matvec_fp8v, X, ldx, n, r0, r1);
}

static void matmul_fp4_avx512(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                              const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    wsrc s = {W_FP4, W, scale, rows, cols};
    fp4_luts_ready();
    matmul_any(Y, ldy, &s, matvec_fp4, X, ldx, n, r0, r1);
}
/* Lightning-indexer scores: per key, heads in order; each dot uses two
 * 16-lane accumulators (alternating 16-column groups) reduced at the end. */
static inline float dot_avx512(const float *a, const float *b, int n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), s1);
    }
    if (k + 16 <= n) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
        k += 16;
    }
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

#define row_dot dot_avx512
#include "index_scores_impl.h"
#undef row_dot

/* ---- attention: attend_impl.h over 16-lane vectors ---- */

#define VLEN 16
typedef __m512 vec;

static inline vec vzero(void) { return _mm512_setzero_ps(); }
static inline vec vset1(float x) { return _mm512_set1_ps(x); }
static inline vec vadd(vec a, vec b) { return _mm512_add_ps(a, b); }
static inline vec vsub(vec a, vec b) { return _mm512_sub_ps(a, b); }
static inline vec vdiv(vec a, vec b) { return _mm512_div_ps(a, b); }
static inline vec vfma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline vec vmul(vec a, vec b) { return _mm512_mul_ps(a, b); }
static inline vec vmin(vec a, vec b) { return _mm512_min_ps(a, b); }
static inline vec vmax(vec a, vec b) { return _mm512_max_ps(a, b); }
static inline float vsum(vec v) { return fold16(v); }

static inline __mmask16 lanes(int left)
{
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
}

static inline vec vload_n(const float *p, int left)
{
    return left >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes(left), p);
}

static inline void vstore_n(float *p, vec v, int left)
{
    if (left >= 16)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, lanes(left), v);
}

static inline vec vkeep_n(vec v, int left)
{
    return _mm512_maskz_mov_ps(lanes(left), v);
}

static inline vec vexp(vec x) { return exp512_ps(x); }

/* Round to nearest even at bit 16 (the weights are finite and >= 0). */
static inline vec vround_bf16(vec v)
{
    return round_bf16_f32x16(v);
}

#include <math.h>
#include "attend_impl.h"
#include "swiglu_impl.h"

/* bf16 row elements widened to f32 as loaded: the bf16 tail of FP8 rows
 * (attend_fp8_rows.h). */
static inline vec vload_bf16_n(const uint16_t *p, int left)
{
    __m256i b = left >= 16 ? _mm256_loadu_si256((const __m256i *)p) : _mm256_maskz_loadu_epi16(lanes(left), p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
}

/* 16 e4m3 codes times 2^-8 times s, for attend_fp8 (attend_fp8_rows.h):
 * fp8x32's bit move to f16, without its NaN check (a row's NaNs are in
 * its scale). */
static inline vec vload_e4m3_x256(const uint8_t *p, vec s)
{
    __m128i raw = _mm_loadu_si128((const __m128i *)p);
    __m256i h = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(raw), 7), _mm256_set1_epi16((short)0xbf80));
    return _mm512_mul_ps(_mm512_cvtph_ps(h), s);
}

#define AT_HG 8 /* 8 heads x 2 output vectors of accumulators: 0.65 -> 0.49 ms for 64 heads over 640 rows */
#define AT_PV 2
#include "attend_fp8_rows.h"

void index_scores_fp4_avx512vnni(float *scores, const int8_t *q_codes, const float *q_scale,
                                 const float *w, const uint8_t *keys, const uint8_t *key_scale,
                                 int n_keys, int n_heads, int dim);
void act_quant_sim_avx512(float *x, size_t n, size_t block); /* avx512_quant.c */
void fp4_quant_sim_avx512(float *x, size_t n, size_t block);  /* avx512_quant.c */
void index_query_pack_avx512(int8_t *codes_x2, float *scales, const float *x, size_t n);
void topk_avx512(int *out, const float *scores, int n, int k, int *scratch); /* avx512_topk.c */
void sumsq_bf16_avx512(float *sums, const float *x, size_t ldx, int rows, int len); /* avx512_sumsq.c */

static const dsv4_kernels avx512_table = {
    .isa = "avx512",
    .matmul_f32 = matmul_f32_avx512,
    .matmul_bf16 = matmul_bf16_avx512,
    .matmul_bf16_bf16act = matmul_bf16_avx512,
    .matmul_fp8 = matmul_fp8_avx512,
    .matmul_fp4 = matmul_fp4_avx512,
    .matmul_fp8_e4m3act = matmul_fp8_avx512, /* dispatch.c swaps in avx512_bf16.c where the CPU has BF16 */
    .matmul_fp4_e4m3act = matmul_fp4_avx512,
    .index_scores = index_scores_rows,
    .attend = attend_vec,
    .attend_fp8 = attend_fp8_vec,
    .index_scores_fp4 = index_scores_fp4_avx512vnni,
    .swiglu = swiglu_vec,
    .fp4_quant_sim = fp4_quant_sim_avx512,
    .index_query_pack = index_query_pack_avx512,
    .sumsq_bf16 = sumsq_bf16_avx512,
    .topk = topk_avx512,
    .act_quant_sim = act_quant_sim_avx512,
};

/* AVX-512 without VNNI (Skylake-SP): the integer indexer falls back to C. */
static dsv4_kernels avx512_novnni_table;

const dsv4_kernels *kernels_avx512(void)
{
    return &avx512_table;
}

const dsv4_kernels *kernels_avx512_novnni(void)
{
    avx512_novnni_table = avx512_table;
    avx512_novnni_table.index_scores_fp4 = kernels_scalar()->index_scores_fp4;
    return &avx512_novnni_table;
}
