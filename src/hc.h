/* mHC (manifold-constrained hyper-connections): the hc_mult residual streams
 * of each token are collapsed into one sub-layer input (pre weights) and the
 * sub-layer output is spread back over the streams (post weights plus a
 * Sinkhorn-projected stream mixer comb). Also the final collapse before the
 * head. Everything here is fp32; rounding to bf16 (release numerics) is the
 * caller's business, except in hc_post_bf16. Streams are laid out X[t][a][d]:
 * token t, stream a < hc, dimension d < dim. */
#ifndef DSV4_HC_H
#define DSV4_HC_H

#include "engine.h"

/* comb: [hc][hc] logits in, doubly-stochastic (up to eps) matrix out:
 * row softmax + eps, a column normalisation, then iters-1 rounds of
 * (row normalisation, column normalisation), each dividing by (sum + eps). */
void hc_sinkhorn(float *comb, int hc, int iters, float eps);

/* One token's mix logits m [(2+hc)*hc] -> pre [hc], post [hc], comb [hc][hc],
 * comb[a][b] being the weight of input stream a in output stream b. */
void hc_split(const float *m, const float *scale, const float *base, int hc, int iters, float eps,
              float *pre, float *post, float *comb);

/* mixes[t][r] = fn[r] · v_t / rms(v_t) for t < n, v_t the flattened streams of
 * token t (hc*dim values), rms with norm_eps. fn is [rows][hc*dim] f32.
 * scratch: [n][hc*dim] (plain numerics normalises v before the product, as
 * transformers does; release multiplies the product, as the official code). */
void hc_mixes(const dsv4_engine *e, const float *fn, int rows, const float *X, int n,
              float *scratch, float *mixes);

/* Sub-layer entry: u[t] = Σ_a pre_a X[t][a], plus post [n][hc] and comb [n][hc*hc]
 * for hc_post. mixes [n][(2+hc)*hc], pre [n][hc] and scratch [n][hc*dim] are scratch. */
void hc_pre(const dsv4_engine *e, const dsv4_hc_weights *w, const float *X, int n,
            float *scratch, float *mixes, float *pre, float *post, float *comb, float *u);

/* Sub-layer exit: Xout[t][b] = post_b f[t] + Σ_a comb[a][b] X[t][a]. Xout must not alias X. */
void hc_post(const float *X, const float *f, const float *post, const float *comb,
             int n, int hc, int dim, float *Xout);
/* The same for release numerics (Block.hc_post): f taken rounded to bf16
 * (f itself is left as it is) and Xout rounded to bf16, both done here so
 * that the streams are not read and written once more for the rounding. */
void hc_post_bf16(const float *X, const float *f, const float *post, const float *comb,
                  int n, int hc, int dim, float *Xout);

/* Final collapse: h[t] = Σ_a (σ(m_a·scale + base_a) + hc_eps) X[t][a] with
 * m = hc_head_fn · v / rms(v). mixes [n][hc] and scratch [n][hc*dim] are scratch. */
void hc_head(const dsv4_engine *e, const float *X, int n, float *scratch, float *mixes, float *h);

#endif
