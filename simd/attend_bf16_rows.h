/* attend_bf16 for the includer's vector width: attend_impl.h once more,
 * over rows of bf16 bits that the includer's vload_bf16_n(p, left) widens to
 * the f32 values they stand for as it loads them. The arithmetic and its
 * order are attend's, so the bits are attend's on the widened rows, while
 * half the bytes are kept and read. Include after attend_impl.h. */
#undef AT_ROW
#undef AT_ROW_AT
#undef AT_FN
#define AT_ROW uint16_t
#define AT_ROW_AT(row, i, left) vload_bf16_n((row) + (i), left)
#define AT_FN(name) name##_bf16rows
#include "attend_impl.h"

static void attend_bf16_vec(float *out, const float *q, int dim, const uint16_t *const *kv, int n_kv,
                            const float *sink, float scale, int h0, int h1)
{
    at_attend_bf16rows(out, q, dim, 0, kv, n_kv, sink, scale, 1, h0, h1);
}
