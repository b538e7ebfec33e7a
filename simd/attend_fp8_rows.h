/* attend_fp8 for the includer's vector width: attend_impl.h once more, over
 * key=value rows in the release FP8 layout (formats.h, fmt_kv_row_*), each
 * vector of a row decoded as it is loaded. The includer defines
 * vload_e4m3_x256(p, s), VLEN e4m3 codes as f32 times 2^-8 (the bit move of
 * e4m3 into f16: exact, subnormals included) times the vector s, and
 * vload_bf16_n(p, left), the first min(left, VLEN) bf16 values at p widened
 * to f32 (zeros after). The arithmetic and its order are attend's, so the
 * bits are attend's on the decoded rows, from 583 bytes a row where bf16
 * keeps 1024 (V4's 448 + 64).
 * Include after attend_impl.h. */
#undef AT_ROW
#undef AT_ROW_AT
#undef AT_FN
#define AT_ROW uint8_t
#define AT_ROW_AT(row, i, left) at_fp8_load(row, i, left, dim, tail)
#define AT_FN(name) name##_fp8rows

#include "kv_fp8_scale.h"

/* Columns [i, i + VLEN) of a row, the first `left` of them (i a multiple of
 * VLEN, which divides 64, so a whole vector of codes lies in one block):
 * whole vectors of codes, and the bf16 tail, load as vectors; the vector
 * that straddles the two, or a short one of codes at the row's end, goes
 * lane by lane. */
static inline __attribute__((always_inline)) vec at_fp8_load(const uint8_t *row, int i, int left, int dim, int tail)
{
    int head = dim - tail;
    const uint8_t *codes = row + 2 * (size_t)tail;
    if (i + VLEN <= head)
        return vload_e4m3_x256(codes + i, vset1(kv_fp8_scale.x256[codes[head + i / 64]]));
    if (i >= head)
        return vload_bf16_n((const uint16_t *)(const void *)row + (i - head), left);
    float lane[VLEN];
    for (int l = 0; l < VLEN; l++)
        lane[l] = l < left ? fmt_kv_row_value(row, dim, tail, i + l) : 0.0f;
    return vload_n(lane, VLEN);
}

#include "attend_impl.h"

static void attend_fp8_vec(float *out, const float *q, int dim, int tail, const uint8_t *const *kv, int n_kv,
                           const float *sink, float scale, int h0, int h1)
{
    at_attend_fp8rows(out, q, dim, tail, kv, n_kv, sink, scale, 1, h0, h1);
}
