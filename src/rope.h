/* Rotary position embedding tables: interleaved pairs on the last rope_dim
 * dims. Window-only layers use rope_theta; compressed layers use
 * compress_rope_theta with YaRN always on (V4, unlike V3.2). */
#ifndef DSV4_ROPE_H
#define DSV4_ROPE_H

#include "config.h"

/* inv_freq[i], i < rope_dim/2, for window-only (compressed = 0) or compressed layers. */
void rope_inv_freq(float *inv_freq, const dsv4_config *cfg, int compressed);
/* cos/sin of pos * inv_freq[i] for i < n_pairs, as the oracle computes them (fp32). */
void rope_cos_sin(float *cos_t, float *sin_t, const float *inv_freq, int n_pairs, long pos);

#endif
