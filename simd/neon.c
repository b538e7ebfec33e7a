/* Arm64 NEON kernels (+ the dot-product extension, sdot, where the CPU has it).
 *
 * Matrix products. Weights are decoded to exact f32 a chunk of columns at a
 * time into a stack buffer (block scales are powers of two, so folding them
 * in loses nothing), then dotted with each token. Per (token, row) the sum
 * uses 16 lanes held as four 4-lane accumulators: lane j takes columns
 * k = j (mod 16) in ascending order across chunks (a last partial group of
 * 16 is padded with zero weights and zero activations); the 16 lanes are
 * then folded pairwise (i+8, i+4, i+2, i+1). That order is a function of the
 * (token, row) alone, so results depend on neither n, r0 nor r1. The
 * e4m3act entries are the fp32 ones (the products are exact either way).
 *
 * On x86 this file is empty: the build compiles every simd/ file on every target. */
#if defined(__aarch64__)

#include <arm_neon.h>
#include <math.h>
#include <string.h>
#include <sys/auxv.h>

#include "kernels.h"
#include "formats.h"
#include "kv_fp8_scale.h"

#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif

const dsv4_kernels *kernels_neon(void);

#define CHUNK 256 /* columns decoded at a time */
#define TG 8      /* tokens whose accumulators live across chunks */

enum { W_F32, W_BF16, W_FP8, W_FP4 };

typedef struct {
    int fmt;
    const void *W;
    const uint8_t *scale;
    int cols;
} wsrc;

/* Twice the e2m1 value of each code: small integers, exact after scaling by half the block scale. */
static const int8_t e2m1_x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static inline float e8m0(uint8_t b)
{
    return fmt_e8m0_to_f32(b);
}

static inline void store_i8x16_as_f32(float *dst, int8x16_t v, float32x4_t s)
{
    int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_s8(vget_high_s8(v));
    vst1q_f32(dst, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), s));
    vst1q_f32(dst + 4, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))), s));
    vst1q_f32(dst + 8, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), s));
    vst1q_f32(dst + 12, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))), s));
}

/* e4m3 -> f16 is a bit move (the value becomes x * 2^-8, subnormals
 * included; the 2^8 rides on the scale), then fcvtl. NaN codes stay NaN. */
static inline void fp8x8(const uint8_t *p, float32x4_t s256, float *dst)
{
    int16x8_t b = vmovl_s8(vld1_s8((const int8_t *)p));
    uint16x8_t h = vandq_u16(vreinterpretq_u16_s16(vshlq_n_s16(b, 7)), vdupq_n_u16(0xbf80));
    uint16x8_t nan = vceqq_u16(vandq_u16(h, vdupq_n_u16(0x3f80)), vdupq_n_u16(0x3f80));
    h = vbslq_u16(nan, vdupq_n_u16(0x7e00), h);
    float16x8_t f = vreinterpretq_f16_u16(h);
    vst1q_f32(dst, vmulq_f32(vcvt_f32_f16(vget_low_f16(f)), s256));
    vst1q_f32(dst + 4, vmulq_f32(vcvt_high_f32_f16(f), s256));
}

/* Columns [k0, k0 + len) of row r into buf, zero-padded to a multiple of 16. */
static void decode_chunk(const wsrc *s, int r, int k0, int len, float *buf)
{
    int cols = s->cols, k = 0;
    switch (s->fmt) {
    case W_F32:
        memcpy(buf, (const float *)s->W + (size_t)r * cols + k0, (size_t)len * sizeof *buf);
        k = len;
        break;
    case W_BF16: {
        const uint16_t *w = (const uint16_t *)s->W + (size_t)r * cols + k0;
        for (; k + 8 <= len; k += 8) {
            uint16x8_t v = vld1q_u16(w + k);
            vst1q_f32(buf + k, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16)));
            vst1q_f32(buf + k + 4, vreinterpretq_f32_u32(vshll_high_n_u16(v, 16)));
        }
        for (; k < len; k++)
            buf[k] = fmt_bf16_to_f32(w[k]);
        break;
    }
    case W_FP8: {
        const uint8_t *w = (const uint8_t *)s->W + (size_t)r * cols;
        const uint8_t *srow = s->scale + (size_t)(r / 128) * ((cols + 127) / 128);
        for (; k < len; k++) {
            int c = k0 + k;
            float sc = e8m0(srow[c / 128]);
            if (k + 8 <= len && c % 128 <= 120) { /* 8 columns within one scale block */
                fp8x8(w + c, vdupq_n_f32(sc * 256.0f), buf + k);
                k += 7;
            } else {
                buf[k] = fmt_e4m3_to_f32(w[c]) * sc;
            }
        }
        break;
    }
    case W_FP4: {
        const uint8_t *w = (const uint8_t *)s->W + (size_t)r * (cols / 2);
        const uint8_t *srow = s->scale + (size_t)r * (cols / 32);
        const int8x16_t lut = vld1q_s8(e2m1_x2);
        for (; k < len; k += 32) { /* chunks hold whole 32-column blocks */
            int c = k0 + k;
            uint8x16_t b = vld1q_u8(w + c / 2);
            int8x16_t even = vqtbl1q_s8(lut, vandq_u8(b, vdupq_n_u8(15)));
            int8x16_t odd = vqtbl1q_s8(lut, vshrq_n_u8(b, 4));
            float32x4_t sc = vdupq_n_f32(e8m0(srow[c / 32]) * 0.5f);
            store_i8x16_as_f32(buf + k, vzip1q_s8(even, odd), sc);
            store_i8x16_as_f32(buf + k + 16, vzip2q_s8(even, odd), sc);
        }
        break;
    }
    }
    for (; k % 16; k++)
        buf[k] = 0.0f;
}

static inline float fold16(const float32x4_t a[4])
{
    float32x4_t b = vaddq_f32(vaddq_f32(a[0], a[2]), vaddq_f32(a[1], a[3]));
    float32x2_t c = vadd_f32(vget_low_f32(b), vget_high_f32(b));
    return vget_lane_f32(c, 0) + vget_lane_f32(c, 1);
}

static void matmul_any(float *Y, size_t ldy, const wsrc *s, const float *X, size_t ldx, int n,
                       int r0, int r1)
{
    float buf[CHUNK] __attribute__((aligned(16)));
    float xt[16] __attribute__((aligned(16)));
    float32x4_t acc[TG][4];
    for (int r = r0; r < r1; r++) {
        for (int g0 = 0; g0 < n; g0 += TG) {
            int ng = n - g0 < TG ? n - g0 : TG;
            for (int t = 0; t < ng; t++)
                for (int i = 0; i < 4; i++)
                    acc[t][i] = vdupq_n_f32(0.0f);
            for (int k0 = 0; k0 < s->cols; k0 += CHUNK) {
                int len = s->cols - k0 < CHUNK ? s->cols - k0 : CHUNK;
                int full = len & ~15;
                decode_chunk(s, r, k0, len, buf);
                for (int t = 0; t < ng; t++) {
                    const float *x = X + (size_t)(g0 + t) * ldx + k0;
                    float32x4_t a0 = acc[t][0], a1 = acc[t][1], a2 = acc[t][2], a3 = acc[t][3];
                    for (int k = 0; k < full; k += 16) {
                        a0 = vfmaq_f32(a0, vld1q_f32(buf + k), vld1q_f32(x + k));
                        a1 = vfmaq_f32(a1, vld1q_f32(buf + k + 4), vld1q_f32(x + k + 4));
                        a2 = vfmaq_f32(a2, vld1q_f32(buf + k + 8), vld1q_f32(x + k + 8));
                        a3 = vfmaq_f32(a3, vld1q_f32(buf + k + 12), vld1q_f32(x + k + 12));
                    }
                    if (full < len) { /* the ragged end, padded with zeros */
                        memset(xt, 0, sizeof xt);
                        memcpy(xt, x + full, (size_t)(len - full) * sizeof *xt);
                        a0 = vfmaq_f32(a0, vld1q_f32(buf + full), vld1q_f32(xt));
                        a1 = vfmaq_f32(a1, vld1q_f32(buf + full + 4), vld1q_f32(xt + 4));
                        a2 = vfmaq_f32(a2, vld1q_f32(buf + full + 8), vld1q_f32(xt + 8));
                        a3 = vfmaq_f32(a3, vld1q_f32(buf + full + 12), vld1q_f32(xt + 12));
                    }
                    acc[t][0] = a0, acc[t][1] = a1, acc[t][2] = a2, acc[t][3] = a3;
                }
            }
            for (int t = 0; t < ng; t++)
                Y[(size_t)(g0 + t) * ldy + r] = fold16(acc[t]);
        }
    }
}

static void matmul_f32_neon(float *Y, size_t ldy, const float *W, const float *X, size_t ldx, int n,
                            int rows, int cols, int r0, int r1)
{
    (void)rows;
    matmul_any(Y, ldy, &(wsrc){W_F32, W, NULL, cols}, X, ldx, n, r0, r1);
}

static void matmul_bf16_neon(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx,
                             int n, int rows, int cols, int r0, int r1)
{
    (void)rows;
    matmul_any(Y, ldy, &(wsrc){W_BF16, W, NULL, cols}, X, ldx, n, r0, r1);
}

static void matmul_fp8_neon(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                            const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    (void)rows;
    matmul_any(Y, ldy, &(wsrc){W_FP8, W, scale, cols}, X, ldx, n, r0, r1);
}

static void matmul_fp4_neon(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                            const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1)
{
    (void)rows;
    matmul_any(Y, ldy, &(wsrc){W_FP4, W, scale, cols}, X, ldx, n, r0, r1);
}

/* The kind of key=value rows a function reads, and their shape where the
 * kind needs it (constants where the functions below are inlined). */
enum { ROWS_F32, ROWS_FP8 };
typedef struct {
    int kind, dim, tail; /* dim, tail: ROWS_FP8's layout (formats.h) */
} row_kind;

/* Four e4m3 codes of one block times its scale: fp8x8's bit move to f16
 * (x 2^-8), the 2^8 in the scale table; no NaN check (a row's NaNs are in
 * its scale, formats.h). */
static inline float32x4_t e4m3x4(const uint8_t *p, uint8_t scale_byte)
{
    uint32_t four;
    memcpy(&four, p, sizeof four);
    int16x8_t b = vmovl_s8(vreinterpret_s8_u32(vdup_n_u32(four)));
    uint16x8_t h = vandq_u16(vreinterpretq_u16_s16(vshlq_n_s16(b, 7)), vdupq_n_u16(0xbf80));
    return vmulq_n_f32(vcvt_f32_f16(vget_low_f16(vreinterpretq_f16_u16(h))), kv_fp8_scale.x256[scale_byte]);
}

static inline float32x4_t bf16x4(const uint16_t *p)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}

/* Four lanes of a key=value row from column i (i % 4 == 0): fp32 values,
 * or an FP8 row decoded as loaded (exact), so either form of a row gives
 * the same bits. */
static inline __attribute__((always_inline)) float32x4_t row4(const void *row, int i, row_kind rk)
{
    if (rk.kind == ROWS_FP8) {
        int head = rk.dim - rk.tail;
        const uint8_t *codes = (const uint8_t *)row + 2 * (size_t)rk.tail;
        if (i + 4 <= head)
            return e4m3x4(codes + i, codes[head + i / 64]);
        if (i >= head)
            return bf16x4((const uint16_t *)row + (i - head));
        float lane[4];
        for (int l = 0; l < 4; l++)
            lane[l] = fmt_kv_row_value(row, rk.dim, rk.tail, i + l);
        return vld1q_f32(lane);
    }
    return vld1q_f32((const float *)row + i);
}

static inline __attribute__((always_inline)) float row1(const void *row, int i, row_kind rk)
{
    if (rk.kind == ROWS_FP8)
        return fmt_kv_row_value(row, rk.dim, rk.tail, i);
    return ((const float *)row)[i];
}

/* Four 4-lane accumulators over 16-column groups, a masked-by-copy tail. */
static inline __attribute__((always_inline)) float dot_row(const float *a, const void *b, int n, row_kind rk)
{
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    int k = 0;
    for (; k + 16 <= n; k += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + k), row4(b, k, rk));
        s1 = vfmaq_f32(s1, vld1q_f32(a + k + 4), row4(b, k + 4, rk));
        s2 = vfmaq_f32(s2, vld1q_f32(a + k + 8), row4(b, k + 8, rk));
        s3 = vfmaq_f32(s3, vld1q_f32(a + k + 12), row4(b, k + 12, rk));
    }
    for (; k + 4 <= n; k += 4)
        s0 = vfmaq_f32(s0, vld1q_f32(a + k), row4(b, k, rk));
    float tail = 0.0f;
    for (; k < n; k++)
        tail += a[k] * row1(b, k, rk);
    return vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3))) + tail;
}

static inline float dot_neon(const float *a, const float *b, int n)
{
    return dot_row(a, b, n, (row_kind){ROWS_F32, 0, 0});
}

#define row_dot dot_neon
#include "index_scores_impl.h"
#undef row_dot

/* Attention as the scalar reference defines it (global max, the sink outside
 * the max, the denominator over unrounded weights, bf16 rounding only of the
 * PV weights), with each score computed once: scores of a chunk of keys are
 * kept on the stack; past ATT_CHUNK keys the later scores are recomputed in
 * the second pass (same code, same bits). */
#define ATT_CHUNK 2048

static inline __attribute__((always_inline)) void attend_rows(float *out, const float *q, int dim,
                                                               const void *const *kv, int n_kv, const float *sink,
                                                               float scale, int bf16_probs, int h0, int h1,
                                                               row_kind rk)
{
    float z[ATT_CHUNK];
    for (int h = h0; h < h1; h++) {
        const float *qh = q + (size_t)h * dim;
        float *o = out + (size_t)h * dim;
        memset(o, 0, (size_t)dim * sizeof *o);
        if (n_kv <= 0)
            continue;
        float m = -INFINITY;
        for (int j = 0; j < n_kv; j++) {
            float zj = dot_row(qh, kv[j], dim, rk) * scale;
            if (j < ATT_CHUNK)
                z[j] = zj;
            m = fmaxf(m, zj);
        }
        float den = 0.0f;
        for (int j = 0; j < n_kv; j++) {
            float zj = j < ATT_CHUNK ? z[j] : dot_row(qh, kv[j], dim, rk) * scale;
            float e = expf(zj - m);
            den += e;
            float32x4_t p = vdupq_n_f32(bf16_probs ? fmt_round_bf16(e) : e);
            const void *v = kv[j];
            int i = 0;
            for (; i + 4 <= dim; i += 4)
                vst1q_f32(o + i, vfmaq_f32(vld1q_f32(o + i), p, row4(v, i, rk)));
            for (; i < dim; i++)
                o[i] += vgetq_lane_f32(p, 0) * row1(v, i, rk);
        }
        den += expf(sink[h] - m);
        float32x4_t inv = vdupq_n_f32(den);
        int i = 0;
        for (; i + 4 <= dim; i += 4)
            vst1q_f32(o + i, vdivq_f32(vld1q_f32(o + i), inv));
        for (; i < dim; i++)
            o[i] /= den;
    }
}

static void attend_neon(float *out, const float *q, int dim, const float *const *kv, int n_kv,
                        const float *sink, float scale, int bf16_probs, int h0, int h1)
{
    attend_rows(out, q, dim, (const void *const *)kv, n_kv, sink, scale, bf16_probs, h0, h1,
                (row_kind){ROWS_F32, 0, 0});
}

/* Release numerics over rows in the FP8 layout (kernels.h): attend_neon's
 * bits on the decoded rows, from 583 bytes a row where bf16 keeps 1024. */
static void attend_fp8_neon(float *out, const float *q, int dim, int tail, const uint8_t *const *kv, int n_kv,
                            const float *sink, float scale, int h0, int h1)
{
    attend_rows(out, q, dim, (const void *const *)kv, n_kv, sink, scale, 1, h0, h1,
                (row_kind){ROWS_FP8, dim, tail});
}

/* ---- indexer scores over FP4 keys (release numerics, kernels.h) ----
 *
 * Keys in lanes, as the layout is made for: each 16-byte quarter of a
 * 64-byte chunk is 4 keys x 4 columns, so a group of 16 keys is decoded
 * once (nibbles looked up to signed codes) and each head's 4 query codes of
 * a column quad, duplicated into all lanes, are dotted with it: sdot, or
 * widening multiplies and pairwise adds without the dot-product extension.
 * The integer dots are exact; every float step is the scalar reference's,
 * lane by lane, so the scores are bitwise the same. */
#define MAX_B (INDEX_FP4_MAX_DIM / 32)
#define MAX_C (INDEX_FP4_MAX_DIM / 4)

typedef int32x4_t (*dot4_fn)(int32x4_t acc, int8x16_t keys, int8x16_t q4);

static inline int32x4_t dot4_plain(int32x4_t acc, int8x16_t k, int8x16_t q4)
{
    int16x8_t lo = vmull_s8(vget_low_s8(k), vget_low_s8(q4));
    int16x8_t hi = vmull_high_s8(k, q4);
    return vpadalq_s16(acc, vpaddq_s16(lo, hi));
}

__attribute__((target("arch=armv8.2-a+dotprod"))) static inline int32x4_t dot4_sdot(int32x4_t acc, int8x16_t k,
                                                                                    int8x16_t q4)
{
    return vdotq_s32(acc, k, q4);
}

/* Round to nearest even at bit 16 (finite inputs), as fmt_f32_to_bf16. */
static inline float32x4_t round_bf16_q(float32x4_t x)
{
    uint32x4_t u = vreinterpretq_u32_f32(x);
    uint32x4_t odd = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    u = vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), odd);
    return vreinterpretq_f32_u32(vandq_u32(u, vdupq_n_u32(0xffff0000u)));
}

static inline __attribute__((always_inline)) void
index_fp4(dot4_fn dot4, float *scores, const int8_t *q_codes, const float *q_scale, const float *w,
          const uint8_t *keys, const uint8_t *key_scale, int n_keys, int n_heads, int dim)
{
    const int8x16_t lut = vld1q_s8(e2m1_x2);
    const float32x4_t zero = vdupq_n_f32(0.0f);
    int nb = dim / 32;
    for (int s0 = 0; s0 < n_keys; s0 += INDEX_FP4_GROUP) {
        const uint8_t *kg = keys + (size_t)(s0 / 16) * INDEX_FP4_GROUP_BYTES(dim);
        const uint8_t *sg = key_scale + (size_t)(s0 / 16) * INDEX_FP4_GROUP_SCALES(dim);
        int8x16_t kc[MAX_C][4]; /* columns 4c..4c+3 of keys 4v..4v+3 */
        for (int j = 0; j < dim / 8; j++)
            for (int v = 0; v < 4; v++) {
                uint8x16_t byte = vld1q_u8(kg + 64 * j + 16 * v);
                kc[2 * j][v] = vqtbl1q_s8(lut, vandq_u8(byte, vdupq_n_u8(15)));
                kc[2 * j + 1][v] = vqtbl1q_s8(lut, vshrq_n_u8(byte, 4));
            }
        float32x4_t ks[MAX_B][4];
        for (int b = 0; b < nb; b++)
            for (int v = 0; v < 4; v++) {
                uint32_t e4;
                memcpy(&e4, sg + 16 * b + 4 * v, sizeof e4);
                uint32x4_t e = vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(e4))));
                ks[b][v] = vmulq_n_f32(vreinterpretq_f32_u32(vshlq_n_u32(e, 23)), 0.25f);
            }
        float32x4_t acc[4] = {zero, zero, zero, zero};
        for (int h = 0; h < n_heads; h++) {
            const int8_t *qh = q_codes + (size_t)h * dim;
            float32x4_t dot[4] = {zero, zero, zero, zero};
            for (int b = 0; b < nb; b++) {
                int32x4_t ia[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
                for (int c = 8 * b; c < 8 * b + 8; c++) {
                    int32_t qd;
                    memcpy(&qd, qh + 4 * c, sizeof qd);
                    int8x16_t q4 = vreinterpretq_s8_s32(vdupq_n_s32(qd));
                    for (int v = 0; v < 4; v++)
                        ia[v] = dot4(ia[v], kc[c][v], q4);
                }
                float qs = q_scale[(size_t)h * nb + b];
                for (int v = 0; v < 4; v++)
                    dot[v] = vfmaq_f32(dot[v], vcvtq_f32_s32(ia[v]), vmulq_n_f32(ks[b][v], qs));
            }
            float32x4_t wh = vdupq_n_f32(w[h]);
            for (int v = 0; v < 4; v++) {
                /* dot > 0 ? dot : +0, as the scalar reference (a -0 dot gives +0) */
                float32x4_t r = round_bf16_q(vbslq_f32(vcgtq_f32(dot[v], zero), dot[v], zero));
                acc[v] = vaddq_f32(acc[v], round_bf16_q(vmulq_f32(r, wh)));
            }
        }
        float out[16];
        for (int v = 0; v < 4; v++)
            vst1q_f32(out + 4 * v, round_bf16_q(acc[v]));
        int left = n_keys - s0 < 16 ? n_keys - s0 : 16;
        memcpy(scores + s0, out, (size_t)left * sizeof *out);
    }
}

static void index_scores_fp4_neon(float *scores, const int8_t *q_codes, const float *q_scale,
                                  const float *w, const uint8_t *keys, const uint8_t *key_scale,
                                  int n_keys, int n_heads, int dim)
{
    index_fp4(dot4_plain, scores, q_codes, q_scale, w, keys, key_scale, n_keys, n_heads, dim);
}

__attribute__((target("arch=armv8.2-a+dotprod"))) static void
index_scores_fp4_neon_dotprod(float *scores, const int8_t *q_codes, const float *q_scale,
                              const float *w, const uint8_t *keys, const uint8_t *key_scale,
                              int n_keys, int n_heads, int dim)
{
    index_fp4(dot4_sdot, scores, q_codes, q_scale, w, keys, key_scale, n_keys, n_heads, dim);
}

static dsv4_kernels neon_table = {
    .isa = "neon",
    .matmul_f32 = matmul_f32_neon,
    .matmul_bf16 = matmul_bf16_neon,
    .matmul_bf16_bf16act = matmul_bf16_neon,
    .matmul_fp8 = matmul_fp8_neon,
    .matmul_fp4 = matmul_fp4_neon,
    .matmul_fp8_e4m3act = matmul_fp8_neon, /* exact products: no other math needed */
    .matmul_fp4_e4m3act = matmul_fp4_neon,
    .index_scores = index_scores_rows,
    .attend = attend_neon,
    .attend_fp8 = attend_fp8_neon,
    .index_scores_fp4 = index_scores_fp4_neon,
    .swiglu = ops_swiglu,
    .fp4_quant_sim = fmt_fp4_quant_sim,
    .index_query_pack = fmt_index_query_pack,
    .sumsq_bf16 = ops_sumsq_bf16,
    .topk = ops_topk_sampled,
    .act_quant_sim = fmt_act_quant_sim,
};

/* sdot where the CPU reports it (Cortex-A76 / Neoverse N1 and later). */
const dsv4_kernels *kernels_neon(void)
{
    static dsv4_kernels with_dotprod;
    if (!(getauxval(AT_HWCAP) & HWCAP_ASIMDDP))
        return &neon_table;
    with_dotprod = neon_table;
    with_dotprod.index_scores_fp4 = index_scores_fp4_neon_dotprod;
    return &with_dotprod;
}

#endif /* __aarch64__ */
