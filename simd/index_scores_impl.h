/* Lightning-indexer scores over f32 keys, written once for every vector ISA:
 * scores[s] = sum_h w[h] * max(0, q[h]·keys[s]), heads summed in order.
 * The including file names its vector dot product
 *   float row_dot(const float *a, const float *b, int n)
 * (a #define to its own function) before including this file. */

static void index_scores_rows(float *scores, const float *q, const float *w, const float *keys,
                              int n_keys, int n_heads, int dim)
{
    for (int s = 0; s < n_keys; s++) {
        const float *k = keys + (size_t)s * dim;
        float acc = 0.0f;
        for (int h = 0; h < n_heads; h++) {
            float d = row_dot(q + (size_t)h * dim, k, dim);
            acc += w[h] * (d > 0.0f ? d : 0.0f);
        }
        scores[s] = acc;
    }
}
