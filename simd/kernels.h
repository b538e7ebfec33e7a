/* The compute kernels, behind one table of function pointers chosen once at
 * start-up (cpuid). simd/ knows nothing of models: these are matrices,
 * vectors and block scales.
 *
 * Every kernel has a plain C reference (scalar.c); each SIMD version is
 * tested against it. Matrix kernels compute output rows [r0, r1) so callers
 * can split rows between threads; for a given (token, row) the accumulation
 * order does not depend on n, r0 or r1, so results are identical whatever
 * the batch size or thread split. No kernel allocates: the many-token
 * matrix paths keep their decoded weights, activations and accumulators on
 * the stack (up to ~470 KiB, avx512_bf16.c), so threads that call them need
 * the usual 2-8 MiB stacks, not small ones. */
#ifndef DSV4_SIMD_KERNELS_H
#define DSV4_SIMD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *isa; /* "scalar", "avx2", "avx512", "amx", "neon" */

    /* Y[t*ldy + r] = sum_k W[r][k] * X[t*ldx + k], t in [0,n), r in [r0,r1).
     * W is [rows][cols] row-major in the kernel's format. */
    void (*matmul_f32)(float *Y, size_t ldy, const float *W, const float *X, size_t ldx,
                       int n, int rows, int cols, int r0, int r1);
    void (*matmul_bf16)(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx,
                        int n, int rows, int cols, int r0, int r1);
    /* e4m3 bytes [rows][cols]; scale e8m0 [ceil(rows/128)][ceil(cols/128)]. */
    void (*matmul_fp8)(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                       const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1);
    /* e2m1 packed [rows][cols/2], low nibble = even column; scale e8m0 [rows][cols/32]; cols % 32 == 0. */
    void (*matmul_fp4)(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                       const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1);

    /* As matmul_fp8 / matmul_fp4, for activations X that are bf16 numbers,
     * FP8-simulated ones (an e4m3 code times a power of two, as
     * fmt_act_quant_sim leaves them) included: every weight and activation is
     * then exact in bf16 and every product exact in fp32, so a kernel may
     * multiply in bf16 with fp32 accumulation. Same math as matmul_fp8/fp4 up
     * to summation order (and products below 2^-126 flushed to zero); still
     * independent of n, r0, r1. Other X is rounded to bf16 first. */
    void (*matmul_fp8_e4m3act)(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                               const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1);
    void (*matmul_fp4_e4m3act)(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                               const float *X, size_t ldx, int n, int rows, int cols, int r0, int r1);
    /* The instructions behind the two e4m3act entries when they are not this
     * table's own ("avx512bf16": vdpbf16ps, "amx": AMX-BF16 tiles); NULL: isa. */
    const char *e4m3act_isa;
    /* Optional (NULL where absent): the e4m3act products in two phases, for
     * kernels that want the tokens in a layout of their own (AMX tiles), so
     * that one packed copy serves every thread and every row.
     *   e4m3act_packed_bytes(n, cols): bytes of n tokens' packed form; 0 when
     *     this kernel is better fed X directly (one or two tokens);
     *   e4m3act_pack(P, X, ldx, n, cols, fp4, s0, s1): 64-column steps
     *     [s0, s1) of all n tokens into P (64-byte aligned), laid out for FP4
     *     weights (fp4) or FP8 ones; callers may split the ceil(cols/64)
     *     steps between threads;
     *   matmul_fp8/fp4_e4m3act_packed: matmul_fp8/fp4_e4m3act with P packed
     *     from the same X, n and cols for that format; the same bits. X is
     *     still read, for rows the packed kernel cannot take. */
    size_t (*e4m3act_packed_bytes)(int n, int cols);
    void (*e4m3act_pack)(void *P, const float *X, size_t ldx, int n, int cols, int fp4, int s0, int s1);
    void (*matmul_fp8_e4m3act_packed)(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                                      const float *X, size_t ldx, const void *P, int n, int rows, int cols,
                                      int r0, int r1);
    void (*matmul_fp4_e4m3act_packed)(float *Y, size_t ldy, const uint8_t *W, const uint8_t *scale,
                                      const float *X, size_t ldx, const void *P, int n, int rows, int cols,
                                      int r0, int r1);

    /* Lightning-indexer scores: scores[s] = sum_h w[h] * max(0, q[h]·keys[s]),
     * q [n_heads][dim], keys [n_keys][dim] contiguous. Heads summed in order. */
    void (*index_scores)(float *scores, const float *q, const float *w, const float *keys,
                         int n_keys, int n_heads, int dim);

    /* Attention of one query over n_kv shared key=value rows (MQA) with a per-head sink:
     * for head h: z_j = scale * q[h]·kv[j]; p = softmax over {z_j} ∪ {sink[h]} (the sink has
     * value 0); out[h] = sum_j p_j kv[j]. If bf16_probs, p_j is rounded to bf16 before the
     * weighted sum. Heads in [h0, h1). */
    void (*attend)(float *out, const float *q, int dim, const float *const *kv, int n_kv,
                   const float *sink, float scale, int bf16_probs, int h0, int h1);
    /* attend with bf16_probs over rows in the release FP8 layout (formats.h,
     * fmt_kv_row_*): kv[j] holds dim values, the last tail of them bf16,
     * the rest e4m3 codes with scale bytes in [64, 246], or 0xff for a
     * block of NaNs, and NaN codes only in such blocks (as fmt_kv_row_encode
     * writes them). The values are exact in f32, so a kernel that
     * decodes each row as it loads it gives attend's bits on the decoded
     * rows; every table's does (1.75x fewer bytes than bf16 rows for
     * V4's 448 + 64). A table may leave it NULL: its callers then keep
     * fp32 rows. */
    void (*attend_fp8)(float *out, const float *q, int dim, int tail, const uint8_t *const *kv, int n_kv,
                       const float *sink, float scale, int h0, int h1);

    /* Lightning-indexer scores over real FP4 keys in release numerics (the
     * official bf16 einsum), with exact integer dot products.
     * q_codes [n_heads][dim]: twice the e2m1 value of each query element (an
     * integer in [-12, 12]); q_scale [n_heads][dim/32]: the query's block
     * scales (finite); w [n_heads]: head weights (finite). keys, key_scale:
     * n_keys keys in the grouped layout below, starting at a group boundary;
     * every byte of the last group is read, so it must exist, but the slots
     * past n_keys are ignored. dim % 32 == 0, dim <= INDEX_FP4_MAX_DIM,
     * n_heads <= INDEX_FP4_MAX_HEADS. For key s, with bf16() = round to
     * nearest even and every other step an fp32 operation:
     *   ks_b   = e8m0(key_scale of s, block b) * 0.25f
     *   dot_h  = 0; for b ascending: dot_h = fmaf((float)idot_hb, q_scale[h][b] * ks_b, dot_h)
     *            (idot_hb: the exact integer dot of block b's codes, twice e2m1 each)
     *   acc    = 0; for h ascending: acc += bf16(bf16(dot_h > 0 ? dot_h : +0) * w[h])
     *   scores[s] = bf16(acc)
     * Every ISA computes exactly this: the results are bitwise the same. */
    void (*index_scores_fp4)(float *scores, const int8_t *q_codes, const float *q_scale,
                             const float *w, const uint8_t *keys, const uint8_t *key_scale,
                             int n_keys, int n_heads, int dim);

    /* As matmul_bf16, for activations X that are bf16 numbers: every product
     * is then exact in fp32, so a kernel may take them with bf16 dot products.
     * Same math up to summation order (and products below 2^-126 flushed);
     * independent of n, r0, r1. Other X is rounded to bf16 first. */
    void (*matmul_bf16_bf16act)(float *Y, size_t ldy, const uint16_t *W, const float *X, size_t ldx,
                                int n, int rows, int cols, int r0, int r1);

    /* SwiGLU with clamp, in place: g[i] = scale * silu(min(g[i], limit)) *
     * clamp(u[i], -limit, limit), silu(x) = x / (1 + exp(-x)); limit <= 0:
     * no clamping. A NaN input stays NaN (the clamps compare, as torch.clamp).
     * ops_swiglu is the reference; vector versions use their own exp, within
     * a few ulp of it. */
    void (*swiglu)(float *g, const float *u, size_t n, float limit, float scale);
    /* sums[r] = the fp32 sum, from +0 in column order, of bf16(x[r][i]^2)
     * over i < len, for rows r < rows of x (row stride ldx): a bf16 RMSNorm's
     * sum of squares. Exactly ops_sumsq_bf16's bits. */
    void (*sumsq_bf16)(float *sums, const float *x, size_t ldx, int rows, int len);
    /* The k largest scores: ops_topk (below), the same indices. */
    void (*topk)(int *out, const float *scores, int n, int k, int *scratch);
    /* FP4 simulation in place: fmt_fp4_quant_sim (formats.h), bit for bit. */
    void (*fp4_quant_sim)(float *x, size_t n, size_t block);
    /* The indexer's query operands: fmt_index_query_pack (formats.h), bit for bit. */
    void (*index_query_pack)(int8_t *codes_x2, float *scales, const float *x, size_t n);
    /* FP8 simulation of activations in place: fmt_act_quant_sim (formats.h),
     * bit for bit. */
    void (*act_quant_sim)(float *x, size_t n, size_t block);
} dsv4_kernels;

#define INDEX_FP4_MAX_DIM 256
#define INDEX_FP4_MAX_HEADS 128

/* The indexer's FP4 key layout: keys in groups of INDEX_FP4_GROUP, so that a
 * 64-byte vector holds 16 keys x 4 columns (one 32-bit lane per key). Group
 * g of a cache of dim-wide keys:
 *   keys      + g * INDEX_FP4_GROUP_BYTES(dim): for each 8 columns j = 0 .. dim/8-1, 64 bytes;
 *             byte 64*j + 4*k + i (key k of the group, i < 4) holds column 8j+i of key k
 *             in its low nibble and column 8j+4+i in its high nibble (e2m1 codes);
 *   key_scale + g * INDEX_FP4_GROUP_SCALES(dim): byte 16*b + k = e8m0 scale of block b
 *             (columns 32b .. 32b+31) of key k, in [1, 254].
 * Key s is slot s % 16 of group s / 16; per key that is dim/2 + dim/32 bytes
 * (68 for dim 128), and n keys need ceil(n / 16) whole groups.
 * fmt_index_key_pack (formats.h) writes one key. */
#define INDEX_FP4_GROUP 16
#define INDEX_FP4_GROUP_BYTES(dim) ((size_t)(dim) * (INDEX_FP4_GROUP / 2))
#define INDEX_FP4_GROUP_SCALES(dim) ((size_t)(dim) * INDEX_FP4_GROUP / 32)

const dsv4_kernels *kernels_scalar(void);
/* The best table this CPU supports, or the one named (NULL if unknown or unsupported). */
const dsv4_kernels *kernels_select(const char *isa);

/* Small ops in plain C. ops_rmsnorm and ops_rope run as they are (a few per
 * token); the others are the references of table entries that have vector
 * versions (and the entries of the tables that do not), public so that
 * those versions can fall back on them. */

/* y = w ⊙ x / sqrt(mean(x²) + eps); w may be NULL (no weight). y may alias x. */
void ops_rmsnorm(float *y, const float *x, const float *w, int n, float eps);
/* Interleaved rotary embedding on x[0..2*n_pairs): (x[2i], x[2i+1]) rotated by angle
 * with the given cos/sin; inverse rotates by -angle. */
void ops_rope(float *x, const float *cos_t, const float *sin_t, int n_pairs, int inverse);
/* sumsq_bf16's and swiglu's (the table entries above). */
void ops_sumsq_bf16(float *sums, const float *x, size_t ldx, int rows, int len);
void ops_swiglu(float *g, const float *u, size_t n, float limit, float scale);
/* topk's: indices of the k largest scores (k <= n), ties to the lower index,
 * written in ascending index order. scratch holds n ints. */
void ops_topk(int *out, const float *scores, int n, int k, int *scratch);
/* The same indices, from a sampled threshold (topk_impl.h) in plain C: the
 * topk of the tables without a vector version. */
void ops_topk_sampled(int *out, const float *scores, int n, int k, int *scratch);

#endif
