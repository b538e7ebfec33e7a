/* RoPE tables, computed the way the oracle (transformers 5.17,
 * DeepseekV4RotaryEmbedding + _compute_yarn_parameters) computes them, in
 * float32 and in the same operation order, so the tables agree to the last
 * bit wherever the C library's powf agrees with torch's.
 *
 * transformers' YaRN for the "compress" rope type:
 *   pos_freqs  = base ** (arange(0, dim, 2) / dim)            (float32)
 *   extrap     = 1 / pos_freqs,  interp = 1 / (factor * pos_freqs)
 *   low, high  = floor/ceil of dim*ln(orig/(beta*2*pi)) / (2 ln base), for beta_fast / beta_slow,
 *                clamped to [0, dim-1]  (computed in double, as Python does)
 *   ramp_i     = clamp((i - low) / (high - low), 0, 1),  ef = 1 - ramp
 *   inv_freq   = interp * (1 - ef) + extrap * ef
 * with the configured `factor` used as is and no attention (mscale) factor:
 * the V4 config forces attention_factor = 1. The official reference blends
 * freqs/factor*(1-smooth) + freqs*smooth instead: the same value up to the
 * last float bit. */
#include "rope.h"

#include <math.h>

static double yarn_correction_dim(double rotations, int dim, double base, double orig_len)
{
    return dim * log(orig_len / (rotations * 2.0 * M_PI)) / (2.0 * log(base));
}

void rope_inv_freq(float *inv_freq, const dsv4_config *cfg, int compressed)
{
    int dim = cfg->rope_dim, half = dim / 2;
    float base = compressed ? cfg->compress_rope_theta : cfg->rope_theta;
    int yarn = compressed && cfg->yarn_factor > 1.0f;

    double low = 0, high = 0;
    if (yarn) {
        double beta_fast = cfg->yarn_beta_fast > 0 ? cfg->yarn_beta_fast : 32.0;
        double beta_slow = cfg->yarn_beta_slow > 0 ? cfg->yarn_beta_slow : 1.0;
        low = floor(yarn_correction_dim(beta_fast, dim, base, cfg->yarn_original_seq_len));
        high = ceil(yarn_correction_dim(beta_slow, dim, base, cfg->yarn_original_seq_len));
        if (low < 0)
            low = 0;
        if (high > dim - 1)
            high = dim - 1;
        if (low == high)
            high += 0.001; /* transformers' guard against a zero-width ramp */
    }
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)dim;
        float pos_freq = powf(base, expo);
        float extrap = 1.0f / pos_freq;
        if (!yarn) {
            inv_freq[i] = extrap;
            continue;
        }
        float interp = 1.0f / (cfg->yarn_factor * pos_freq);
        float ramp = ((float)i - (float)low) / (float)(high - low);
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        float ef = 1.0f - ramp;
        float a = interp * (1.0f - ef);
        float b = extrap * ef;
        inv_freq[i] = a + b;
    }
}

/* The angle is the float32 product the oracle forms (inv_freq @ position);
 * its cosine and sine are taken in double and rounded once, i.e. the
 * correctly rounded float, which any accurate float cos/sin returns. */
void rope_cos_sin(float *cos_t, float *sin_t, const float *inv_freq, int n_pairs, long pos)
{
    float p = (float)pos;
    for (int i = 0; i < n_pairs; i++) {
        float angle = inv_freq[i] * p;
        cos_t[i] = (float)cos((double)angle);
        sin_t[i] = (float)sin((double)angle);
    }
}
