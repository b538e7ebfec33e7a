/* Gated pooling compressor of CSA and HCA layers (one per layer, plus the
 * lightning indexer's own in CSA layers), fed one token at a time.
 *
 * Token at position t contributes a = wkv·x and g = wgate·x + ape[t % ratio]
 * (fp32). HCA (overlap = 0): entry j pools, per channel, the `ratio` tokens of
 * window j with weights softmax(g). CSA (overlap = 1, a and g are 2d wide):
 * entry j pools 2·ratio slots per channel — the first halves (A) of window
 * j-1's tokens and the second halves (B) of window j's tokens; before the
 * first window the A slots are empty (a = 0, g = -inf: weight 0). Entry j is
 * emitted by the token that closes window j, t = (j+1)·ratio - 1. */
#ifndef DSV4_COMPRESSOR_H
#define DSV4_COMPRESSOR_H

typedef struct {
    int ratio, d, overlap;
    /* rows [(1+overlap)*ratio][(1+overlap)*d]: with overlap, rows [0, ratio) hold
     * the previous window, rows [ratio, 2*ratio) the current one. */
    float *kv, *score;
} compressor_state;

int compressor_state_init(compressor_state *cs, int ratio, int d, int overlap);
void compressor_state_free(compressor_state *cs);
/* A fresh sequence: a = 0, g = -inf everywhere. */
void compressor_state_reset(compressor_state *cs);

/* Feeds the token at position t (a, g as wkv·x, wgate·x, without ape; ape is
 * [ratio][(1+overlap)*d]). When t closes a window, writes the pooled entry
 * (before norm and RoPE) to out[d] and returns 1; else returns 0. */
int compressor_push(compressor_state *cs, long t, const float *a, const float *g,
                    const float *ape, float *out);

/* What happens to a pooled entry before it is stored: RMSNorm (norm_w), RoPE
 * on the last rope_dim dims at the window's first position, and in release
 * numerics the reference's rounding: bf16 around the norm and after RoPE, then
 * either FP8 simulation of the non-rope dims (block 64, main compressor) or
 * Hadamard rotation + FP4 simulation (block 32, indexer: rotate = 1). */
void compressor_finish_entry(float *entry, int d, const float *norm_w, float eps, int rope_dim,
                             const float *cos_t, const float *sin_t, int release, int rotate);

#endif
