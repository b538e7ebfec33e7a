/* SwiGLU with clamp (kernels.h: swiglu), written once for every x86 vector
 * width. The including file defines VLEN, vec and attend_impl.h's
 * primitives (vzero, vset1, vadd, vsub, vdiv, vload_n, vstore_n, vexp),
 * and two more:
 *   vmul(a, b) = a * b,
 *   vmin(a, b) / vmax(a, b): the x86 instructions, which return b where
 *   either is NaN, so min(limit, x) is `x > limit ? limit : x` exactly.
 * The same operations in the same order as ops_swiglu but for the exp
 * (vexp, within a few ulp of expf). */

static void swiglu_vec(float *g, const float *u, size_t n, float limit, float scale)
{
    const vec lim = vset1(limit), neg_lim = vset1(-limit), one = vset1(1.0f), s = vset1(scale);
    int clamp = limit > 0.0f;
    for (size_t i = 0; i < n; i += VLEN) {
        int left = n - i < VLEN ? (int)(n - i) : VLEN;
        vec gi = vload_n(g + i, left), ui = vload_n(u + i, left);
        if (clamp) {
            gi = vmin(lim, gi);
            ui = vmax(neg_lim, vmin(lim, ui));
        }
        vec h = vmul(vdiv(gi, vadd(one, vexp(vsub(vzero(), gi)))), ui);
        vstore_n(g + i, vmul(s, h), left);
    }
}
