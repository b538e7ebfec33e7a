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

/* Four 4-lane accumulators over 16-column groups, a masked-by-copy tail. */
static inline float dot_neon(const float *a, const float *b, int n)
{
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    int k = 0;
    for (; k + 16 <= n; k += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + k), vld1q_f32(b + k));
        s1 = vfmaq_f32(s1, vld1q_f32(a + k + 4), vld1q_f32(b + k + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + k + 8), vld1q_f32(b + k + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + k + 12), vld1q_f32(b + k + 12));
    }
    for (; k + 4 <= n; k += 4)
        s0 = vfmaq_f32(s0, vld1q_f32(a + k), vld1q_f32(b + k));
    float tail = 0.0f;
    for (; k < n; k++)
        tail += a[k] * b[k];
    return vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3))) + tail;
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

static void attend_neon(float *out, const float *q, int dim, const float *const *kv, int n_kv,
                        const float *sink, float scale, int bf16_probs, int h0, int h1)
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
            float zj = dot_neon(qh, kv[j], dim) * scale;
            if (j < ATT_CHUNK)
                z[j] = zj;
            m = fmaxf(m, zj);
        }
        float den = 0.0f;
        for (int j = 0; j < n_kv; j++) {
            float zj = j < ATT_CHUNK ? z[j] : dot_neon(qh, kv[j], dim) * scale;
            float e = expf(zj - m);
            den += e;
            float32x4_t p = vdupq_n_f32(bf16_probs ? fmt_round_bf16(e) : e);
            const float *v = kv[j];
            int i = 0;
            for (; i + 4 <= dim; i += 4)
                vst1q_f32(o + i, vfmaq_f32(vld1q_f32(o + i), p, vld1q_f32(v + i)));
            for (; i < dim; i++)
                o[i] += vgetq_lane_f32(p, 0) * v[i];
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

/* ---- indexer scores over FP4 keys (integer dots, the kernels.h order) ----
 *
 * The query is stored once per call with each block's 32 codes split into
 * its even and odd columns, matching a key block's low and high nibbles
 * looked up to codes: idot = even·lo + odd·hi, exactly. Four heads at a time
 * share one key block; pairwise adds put their four integer sums in one
 * vector for the float steps (fused multiply-add, as the contract says). */
#define MAX_B (INDEX_FP4_MAX_DIM / 32)

typedef struct {
    int8_t q[INDEX_FP4_MAX_HEADS][MAX_B][32]; /* even columns, then odd */
    float qs[MAX_B][INDEX_FP4_MAX_HEADS];     /* block scales, heads contiguous */
    float w[INDEX_FP4_MAX_HEADS];
} fp4_query;

static void prepare_query(fp4_query *Q, const int8_t *q_codes, const float *q_scale, const float *w,
                          int n_heads, int dim)
{
    int nb = dim / 32;
    memset(Q, 0, sizeof *Q);
    for (int h = 0; h < n_heads; h++) {
        for (int b = 0; b < nb; b++) {
            for (int i = 0; i < 16; i++) {
                Q->q[h][b][i] = q_codes[(size_t)h * dim + 32 * b + 2 * i];
                Q->q[h][b][16 + i] = q_codes[(size_t)h * dim + 32 * b + 2 * i + 1];
            }
            Q->qs[b][h] = q_scale[(size_t)h * nb + b];
        }
        Q->w[h] = w[h];
    }
}

/* 16 lanes h % 16 summed over head groups, then folded pairwise. */
static inline float fold_lanes(const float32x4_t L[4])
{
    float32x4_t a = vaddq_f32(L[0], L[2]), b = vaddq_f32(L[1], L[3]);
    float32x4_t c = vaddq_f32(a, b);
    float d0 = vgetq_lane_f32(c, 0) + vgetq_lane_f32(c, 2);
    float d1 = vgetq_lane_f32(c, 1) + vgetq_lane_f32(c, 3);
    return d0 + d1;
}

/* One block's integer dots of four heads against one key block (lo = even
 * columns' codes, hi = odd), as one vector of four sums. */
typedef int32x4_t (*dot4_fn)(const fp4_query *Q, int h, int b, int8x16_t lo, int8x16_t hi);

static inline int32x4_t dot1_plain(const int8_t *q, int8x16_t lo, int8x16_t hi)
{
    int16x8_t p0 = vmull_s8(vget_low_s8(lo), vld1_s8(q));
    int16x8_t p1 = vmull_high_s8(lo, vld1q_s8(q));
    int16x8_t p2 = vmull_s8(vget_low_s8(hi), vld1_s8(q + 16));
    int16x8_t p3 = vmull_high_s8(hi, vld1q_s8(q + 16));
    int32x4_t s = vpaddlq_s16(p0);
    s = vpadalq_s16(s, p1);
    s = vpadalq_s16(s, p2);
    return vpadalq_s16(s, p3);
}

static int32x4_t dot4_plain(const fp4_query *Q, int h, int b, int8x16_t lo, int8x16_t hi)
{
    int32x4_t s0 = dot1_plain(Q->q[h][b], lo, hi), s1 = dot1_plain(Q->q[h + 1][b], lo, hi);
    int32x4_t s2 = dot1_plain(Q->q[h + 2][b], lo, hi), s3 = dot1_plain(Q->q[h + 3][b], lo, hi);
    return vpaddq_s32(vpaddq_s32(s0, s1), vpaddq_s32(s2, s3));
}

__attribute__((target("arch=armv8.2-a+dotprod"))) static inline int32x4_t dot1_sdot(const int8_t *q, int8x16_t lo,
                                                                     int8x16_t hi)
{
    int32x4_t s = vdotq_s32(vdupq_n_s32(0), lo, vld1q_s8(q));
    return vdotq_s32(s, hi, vld1q_s8(q + 16));
}

__attribute__((target("arch=armv8.2-a+dotprod"))) static int32x4_t dot4_sdot(const fp4_query *Q, int h, int b,
                                                               int8x16_t lo, int8x16_t hi)
{
    int32x4_t s0 = dot1_sdot(Q->q[h][b], lo, hi), s1 = dot1_sdot(Q->q[h + 1][b], lo, hi);
    int32x4_t s2 = dot1_sdot(Q->q[h + 2][b], lo, hi), s3 = dot1_sdot(Q->q[h + 3][b], lo, hi);
    return vpaddq_s32(vpaddq_s32(s0, s1), vpaddq_s32(s2, s3));
}

static inline __attribute__((always_inline)) void
index_fp4(dot4_fn dot4, float *scores, const int8_t *q_codes, const float *q_scale, const float *w,
          const uint8_t *keys, const uint8_t *key_scale, int n_keys, int n_heads, int dim)
{
    static __thread fp4_query Q; /* 37 KiB: too much for a worker's stack, never allocated */
    prepare_query(&Q, q_codes, q_scale, w, n_heads, dim);
    int nb = dim / 32, G = (n_heads + 15) / 16;
    const int8x16_t lut = vld1q_s8(e2m1_x2);
    const float32x4_t zero = vdupq_n_f32(0.0f);
    for (int s = 0; s < n_keys; s++) {
        const uint8_t *kp = keys + (size_t)s * (dim / 2);
        const uint8_t *ks = key_scale + (size_t)s * nb;
        int8x16_t lo[MAX_B], hi[MAX_B];
        float ksc[MAX_B];
        for (int b = 0; b < nb; b++) {
            uint8x16_t byte = vld1q_u8(kp + 16 * b);
            lo[b] = vqtbl1q_s8(lut, vandq_u8(byte, vdupq_n_u8(15)));
            hi[b] = vqtbl1q_s8(lut, vshrq_n_u8(byte, 4));
            ksc[b] = fmt_e8m0_to_f32(ks[b]) * 0.25f;
        }
        float32x4_t L[4];
        for (int g = 0; g < G; g++) {
            for (int quad = 0; quad < 4; quad++) {
                int h = 16 * g + 4 * quad;
                float32x4_t facc = zero;
                for (int b = 0; b < nb; b++) {
                    float32x4_t d = vmulq_n_f32(vld1q_f32(&Q.qs[b][h]), ksc[b]);
                    facc = vfmaq_f32(facc, vcvtq_f32_s32(dot4(&Q, h, b, lo[b], hi[b])), d);
                }
                /* max(0, acc) with NaN -> +0, as the scalar (acc > 0 ? acc : 0) */
                float32x4_t relu = vbslq_f32(vcgtq_f32(facc, zero), facc, zero);
                float32x4_t v = vmulq_f32(vld1q_f32(&Q.w[h]), relu);
                L[quad] = g == 0 ? v : vaddq_f32(L[quad], v);
            }
        }
        scores[s] = fold_lanes(L);
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
    .matmul_fp8 = matmul_fp8_neon,
    .matmul_fp4 = matmul_fp4_neon,
    .matmul_fp8_e4m3act = matmul_fp8_neon, /* exact products: no other math needed */
    .matmul_fp4_e4m3act = matmul_fp4_neon,
    .index_scores = index_scores_rows,
    .attend = attend_neon,
    .index_scores_fp4 = index_scores_fp4_neon,
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
