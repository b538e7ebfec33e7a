/* AVX-512 (F/BW/VL/DQ) kernels. Entries not vectorised yet use the scalar
 * reference.
 *
 * Matrix products: each row is decoded a chunk at a time (CHUNK columns)
 * into a stack buffer of exact f32 weights — block scales are powers of two,
 * so folding them into the weights loses nothing — and that chunk is dotted
 * with every token of a tile. Per (token, row) the sum always uses four
 * 16-lane accumulators, lane group g = (k / 16) mod 4 within the chunk,
 * carried across chunks, reduced once at the end in a fixed order: the
 * result depends on neither n, the token tiling, r0 nor r1. The order differs
 * from the scalar reference (tested within 1e-5 of sum |W||X|). */

#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "formats.h"

const dsv4_kernels *kernels_avx512(void);

#define CHUNK 2048 /* columns decoded at a time: 8 KiB, stays in L1 with a token's X */
#define TILE 16    /* tokens sharing one decoded chunk */

typedef struct {
    __m512 a[4];
} acc4;

/* acc += w[0..len) * x[0..len), len <= CHUNK, lane groups as described above. */
static inline void dot_chunk(acc4 *acc, const float *w, const float *x, int len)
{
    __m512 a0 = acc->a[0], a1 = acc->a[1], a2 = acc->a[2], a3 = acc->a[3];
    int k = 0;
    for (; k + 64 <= len; k += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(x + k + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 32), _mm512_loadu_ps(x + k + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 48), _mm512_loadu_ps(x + k + 48), a3);
    }
    __m512 t[4] = {a0, a1, a2, a3};
    for (int g = 0; k < len; k += 16, g++) {
        __mmask16 m = len - k >= 16 ? 0xffff : (__mmask16)((1u << (len - k)) - 1);
        t[g] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + k), _mm512_maskz_loadu_ps(m, x + k), t[g]);
    }
    for (int g = 0; g < 4; g++)
        acc->a[g] = t[g];
}

static inline float acc4_sum(const acc4 *acc)
{
    __m512 s = _mm512_add_ps(_mm512_add_ps(acc->a[0], acc->a[1]), _mm512_add_ps(acc->a[2], acc->a[3]));
    return _mm512_reduce_add_ps(s);
}

/* Decoders: columns [k0, k0 + len) of row r as exact f32 into buf. */
typedef struct {
    const void *W;
    const uint8_t *scale;
    int rows, cols;
} wsrc;

typedef void (*decode_fn)(const wsrc *src, int r, int k0, int len, float *buf);

static void decode_bf16(const wsrc *src, int r, int k0, int len, float *buf)
{
    const uint16_t *w = (const uint16_t *)src->W + (size_t)r * src->cols + k0;
    int k = 0;
    for (; k + 16 <= len; k += 16) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + k)));
        _mm512_storeu_ps(buf + k, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
    }
    for (; k < len; k++)
        buf[k] = fmt_bf16_to_f32(w[k]);
}

/* e4m3 -> f16 is a bit move (sign to bit 15, exponent+mantissa shifted by 7:
 * the value becomes x * 2^-8, subnormals included), then vcvtph2ps; the 2^8
 * rides on the block scale. NaN codes become f16 NaN. */
static inline void e4m3x32_to_f32(const uint8_t *p, __m512 scale, float *out)
{
    __m512i b = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)p));
    __m512i h = _mm512_and_si512(_mm512_slli_epi16(b, 7), _mm512_set1_epi16((short)0xbf80));
    __mmask32 nan = _mm512_cmpeq_epi16_mask(_mm512_and_si512(h, _mm512_set1_epi16(0x3f80)),
                                           _mm512_set1_epi16(0x3f80));
    h = _mm512_mask_mov_epi16(h, nan, _mm512_set1_epi16(0x7e00));
    __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
    _mm512_storeu_ps(out, _mm512_mul_ps(lo, scale));
    _mm512_storeu_ps(out + 16, _mm512_mul_ps(hi, scale));
}

static void decode_fp8(const wsrc *src, int r, int k0, int len, float *buf)
{
    const uint8_t *w = (const uint8_t *)src->W + (size_t)r * src->cols;
    const uint8_t *srow = src->scale + (size_t)(r / 128) * ((src->cols + 127) / 128);
    for (int b0 = 0; b0 < len; b0 += 128) {
        int k = k0 + b0, blen = len - b0 < 128 ? len - b0 : 128;
        float s = fmt_e8m0_to_f32(srow[k / 128]);
        __m512 s256 = _mm512_set1_ps(s * 256.0f);
        int j = 0;
        for (; j + 32 <= blen; j += 32)
            e4m3x32_to_f32(w + k + j, s256, buf + b0 + j);
        for (; j < blen; j++)
            buf[b0 + j] = fmt_e4m3_to_f32(w[k + j]) * s;
    }
}

static void decode_fp4(const wsrc *src, int r, int k0, int len, float *buf)
{
    const uint8_t *w = (const uint8_t *)src->W + (size_t)r * (src->cols / 2);
    const uint8_t *srow = src->scale + (size_t)r * (src->cols / 32);
    const __m512 lut = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f,
                                      -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f);
    /* lane i takes byte i/2, nibble i&1 (low nibble = even column) */
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i shift = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
    for (int j = 0; j < len; j += 32) {
        int k = k0 + j;
        __m512 s = _mm512_set1_ps(fmt_e8m0_to_f32(srow[k / 32]));
        __m128i bytes = _mm_loadu_si128((const __m128i *)(w + k / 2));
        __m128i b_lo = _mm_shuffle_epi8(bytes, dup);
        __m128i b_hi = _mm_shuffle_epi8(_mm_srli_si128(bytes, 8), dup);
        __m512i i_lo = _mm512_srlv_epi32(_mm512_cvtepu8_epi32(b_lo), shift);
        __m512i i_hi = _mm512_srlv_epi32(_mm512_cvtepu8_epi32(b_hi), shift);
        _mm512_storeu_ps(buf + j, _mm512_mul_ps(_mm512_permutexvar_ps(i_lo, lut), s));
        _mm512_storeu_ps(buf + j + 16, _mm512_mul_ps(_mm512_permutexvar_ps(i_hi, lut), s));
    }
}

/* The shared driver: rows [r0, r1), tokens in tiles, columns in chunks.
 * decode == NULL means W is already f32. */
static void matmul_rows(float *Y, size_t ldy, const wsrc *src, decode_fn decode, const float *X,
                        size_t ldx, int n, int r0, int r1)
{
    float buf[CHUNK] __attribute__((aligned(64)));
    acc4 acc[TILE];
    int cols = src->cols;
    for (int r = r0; r < r1; r++) {
        for (int t0 = 0; t0 < n; t0 += TILE) {
            int nt = n - t0 < TILE ? n - t0 : TILE;
            for (int t = 0; t < nt; t++)
                for (int g = 0; g < 4; g++)
                    acc[t].a[g] = _mm512_setzero_ps();
            for (int k0 = 0; k0 < cols; k0 += CHUNK) {
                int len = cols - k0 < CHUNK ? cols - k0 : CHUNK;
                const float *w;
                if (decode) {
                    decode(src, r, k0, len, buf);
                    w = buf;
                } else {
                    w = (const float *)src->W + (size_t)r * cols + k0;
                }
                for (int t = 0; t < nt; t++)
                    dot_chunk(&acc[t], w, X + (size_t)(t0 + t) * ldx + k0, len);
            }
            for (int t = 0; t < nt; t++)
                Y[(size_t)(t0 + t) * ldy + r] = acc4_sum(&acc[t]);
        }
    }
}

static void matmul_f32_avx512(float *Y, size_t ldy, const float *W, const float *X, size_t ldx,
                              int n, int rows, int cols, int r0, int r1)
{
    wsrc src = {W, NULL, rows, cols};
    matmul_rows(Y, ldy, &src, NULL, X, ldx, n, r0, r1);
}

static void matmul_bf16_avx512(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx,
                               int n, int rows, int cols, int r0, int r1)
{
    wsrc src = {W, NULL, rows, cols};
    matmul_rows(Y, ldy, &src, decode_bf16, X, ldx, n, r0, r1);
}

static void matmul_fp8_avx512(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                              const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    wsrc src = {W, scale, rows, cols};
    matmul_rows(Y, ldy, &src, decode_fp8, X, ldx, n, r0, r1);
}

static void matmul_fp4_avx512(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                              const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    wsrc src = {W, scale, rows, cols};
    matmul_rows(Y, ldy, &src, decode_fp4, X, ldx, n, r0, r1);
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

static void index_scores_avx512(float *scores, const float *q, const float *w, const float *keys,
                                int n_keys, int n_heads, int dim)
{
    for (int s = 0; s < n_keys; s++) {
        const float *k = keys + (size_t)s * dim;
        float acc = 0.0f;
        for (int h = 0; h < n_heads; h++) {
            float d = dot_avx512(q + (size_t)h * dim, k, dim);
            acc += w[h] * (d > 0.0f ? d : 0.0f);
        }
        scores[s] = acc;
    }
}

/* Not vectorised yet: the scalar reference. */
static void attend_fallback(float *out, const float *q, int dim, const float *const *kv, int n_kv,
                            const float *sink, float scale, int bf16_probs, int h0, int h1)
{
    kernels_scalar()->attend(out, q, dim, kv, n_kv, sink, scale, bf16_probs, h0, h1);
}

static const dsv4_kernels avx512_table = {
    .isa = "avx512",
    .matmul_f32 = matmul_f32_avx512,
    .matmul_bf16 = matmul_bf16_avx512,
    .matmul_fp8 = matmul_fp8_avx512,
    .matmul_fp4 = matmul_fp4_avx512,
    .index_scores = index_scores_avx512,
    .attend = attend_fallback,
};

const dsv4_kernels *kernels_avx512(void)
{
    return &avx512_table;
}
