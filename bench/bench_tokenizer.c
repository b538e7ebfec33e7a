/* Tokenizer timing probe: load time of a tokenizer.json directory, and encode
 * speed (one core) on generated English prose and Chinese text.
 * Usage: bench-tokenizer DIR [MB]   (`make bench-tokenizer` uses the V3 reference tokenizer) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsv4.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x243f6a8885a308d3ULL;
static unsigned next_rand(unsigned n)
{
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return (unsigned)((rng * 2685821657736338717ULL) >> 33) % n;
}

static const char *english[] = {
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
    "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
    "memory", "bandwidth", "compressed", "attention", "expert", "experts", "document", "summary", "context",
    "window", "engine", "reasoning", "tokenizer", "throughput", "measured", "carefully", "although", "however",
    "thousands", "morning", "government", "international", "development", "1984", "42", "don't", "it's",
};
static const char chinese[] = "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从，。";

static char *make_english(size_t bytes, size_t *len)
{
    char *s = malloc(bytes + 64);
    size_t n = 0;
    int words = 0;
    while (n < bytes) {
        const char *w = english[next_rand(sizeof english / sizeof *english)];
        size_t l = strlen(w);
        memcpy(s + n, w, l);
        n += l;
        if (++words % 17 == 0)
            s[n++] = '.', s[n++] = (words % 85 == 0) ? '\n' : ' ';
        else
            s[n++] = next_rand(12) == 0 ? ',' : ' ';
    }
    *len = n;
    return s;
}

static char *make_chinese(size_t bytes, size_t *len)
{
    char *s = malloc(bytes + 64);
    size_t n = 0, chars = (sizeof chinese - 1) / 3;
    while (n < bytes) {
        memcpy(s + n, chinese + 3 * next_rand((unsigned)chars), 3);
        n += 3;
        if (next_rand(200) == 0)
            s[n++] = '\n';
    }
    *len = n;
    return s;
}

static void measure(dsv4_tokenizer *t, const char *name, const char *text, size_t len)
{
    dsv4_error err;
    int32_t *ids;
    size_t n;
    for (int pass = 0; pass < 2; pass++) {
        double t0 = now_s();
        if (dsv4_tokenize(t, text, len, 0, &ids, &n, &err)) {
            fprintf(stderr, "bench-tokenizer: %s\n", err.message);
            exit(1);
        }
        double dt = now_s() - t0;
        printf("encode %-8s %s: %.1f MB in %.3f s = %.1f MB/s, %zu tokens (%.2f bytes/token)\n", name,
               pass ? "warm cache" : "cold cache", len / 1e6, dt, len / 1e6 / dt, n, (double)len / (double)n);
        free(ids);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench-tokenizer DIR [MB]\n");
        return 2;
    }
    size_t mb = argc > 2 ? (size_t)atoi(argv[2]) : 16;
    dsv4_tokenizer *t;
    dsv4_error err;
    double t0 = now_s();
    if (dsv4_tokenizer_open(&t, argv[1], &err)) {
        fprintf(stderr, "bench-tokenizer: %s\n", err.message);
        return 1;
    }
    printf("load %s: %.3f s (%d ids)\n", argv[1], now_s() - t0, dsv4_tokenizer_n_ids(t));
    size_t len;
    char *en = make_english(mb << 20, &len);
    measure(t, "English", en, len);
    free(en);
    char *zh = make_chinese(mb << 20, &len);
    measure(t, "Chinese", zh, len);
    free(zh);
    dsv4_tokenizer_close(t);
    return 0;
}
