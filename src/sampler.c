/* Token sampling: greedy, temperature, nucleus (top-p). The scratch for the
 * sorted candidates is allocated once per sampler, never per token. */
#include <math.h>
#include <stdlib.h>

#include "dsv4.h"
#include "error.h"

struct dsv4_sampler {
    int vocab;
    float temperature, top_p;
    uint64_t rng;
    float *probs;             /* [vocab] unnormalised probabilities */
    struct candidate { float p; int32_t id; } *cands; /* nucleus candidates, sorted */
};

int dsv4_sampler_new(dsv4_sampler **out, int vocab, float temperature, float top_p, uint64_t seed, dsv4_error *err)
{
    *out = NULL;
    if (vocab <= 0)
        return dsv4_fail(err, "sampler: vocabulary size must be positive (got %d)", vocab);
    if (!(temperature >= 0.0f) || !isfinite(temperature))
        return dsv4_fail(err, "sampler: temperature must be a finite number >= 0 (got %g)", temperature);
    if (!(top_p > 0.0f && top_p <= 1.0f))
        return dsv4_fail(err, "sampler: top-p must be in (0, 1] (got %g)", top_p);
    dsv4_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return dsv4_fail(err, "sampler: out of memory");
    s->cands = malloc(sizeof *s->cands * (size_t)vocab);
    s->probs = malloc(sizeof *s->probs * (size_t)vocab);
    if (!s->cands || !s->probs) {
        dsv4_sampler_free(s);
        return dsv4_fail(err, "sampler: out of memory for %d candidates", vocab);
    }
    s->vocab = vocab;
    s->temperature = temperature;
    s->top_p = top_p;
    /* splitmix64 of the seed so that seeds 0, 1, 2... give unrelated streams */
    uint64_t z = seed + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    s->rng = (z ^ (z >> 31)) | 1;
    *out = s;
    return 0;
}

void dsv4_sampler_free(dsv4_sampler *s)
{
    if (!s)
        return;
    free(s->cands);
    free(s->probs);
    free(s);
}

static double next_uniform(dsv4_sampler *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (double)((s->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static int32_t argmax(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Probability descending; ties by id so the order is total. */
static int by_prob_desc(const void *a, const void *b)
{
    const struct candidate *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : 1;
}

int32_t dsv4_sampler_pick(dsv4_sampler *s, const float *logits)
{
    if (s->temperature == 0.0f)
        return argmax(logits, s->vocab);

    float max = logits[argmax(logits, s->vocab)];
    double sum = 0.0;
    for (int i = 0; i < s->vocab; i++) {
        s->probs[i] = expf((logits[i] - max) / s->temperature);
        sum += s->probs[i];
    }
    double r;
    if (s->top_p >= 1.0f) {
        r = next_uniform(s) * sum;
        double acc = 0.0;
        for (int i = 0; i < s->vocab; i++) {
            acc += s->probs[i];
            if (r < acc)
                return i;
        }
        return argmax(logits, s->vocab);
    }
    /* Only tokens that could belong to the nucleus need sorting: one whose
     * probability is below (1 - top_p) / vocab of the total never is. */
    float floor_p = (float)((1.0 - s->top_p) / s->vocab * sum);
    int n = 0;
    for (int i = 0; i < s->vocab; i++)
        if (s->probs[i] >= floor_p)
            s->cands[n++] = (struct candidate){ s->probs[i], i };
    qsort(s->cands, (size_t)n, sizeof *s->cands, by_prob_desc);
    double kept = 0.0;
    int keep = 0;
    while (keep < n && kept < s->top_p * sum)
        kept += s->cands[keep++].p;
    r = next_uniform(s) * kept;
    double acc = 0.0;
    for (int i = 0; i < keep; i++) {
        acc += s->cands[i].p;
        if (r < acc)
            return s->cands[i].id;
    }
    return s->cands[keep - 1].id;
}
