/* dsv4 bench: prefill and decode speed, llama-bench style, each figure next
 * to the machine's own ceiling measured in the same run (read bandwidth for
 * decode, peak multiply-add throughput for prefill). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common_opts.h"
#include "../../bench/roofline.h"

static const char *help =
    "usage: dsv4 bench -m DIR [options]\n"
    "\n"
    "Prefill of P tokens and decode of N tokens at each batch size (that many\n"
    "independent sequences stepped together), each repeated; prints tok/s (mean ± sd),\n"
    "bytes of weights read per token, GB/s against the read bandwidth measured now\n"
    "(decode), FLOP/s against the peak of the best instruction set (prefill), and\n"
    "the KV cache one sequence holds at the end of a test (MB KV/seq).\n"
    "\n"
    "options:\n" COMMON_HELP
    "  -p, --prompt P         prefill test of P tokens (default 512; 0 = none)\n"
    "  -n, --gen N            decode test of N tokens (default 128; 0 = none)\n"
    "  -b, --batch LIST       decode batch sizes, comma-separated (default 1,16)\n"
    "  -r, --reps R           repetitions of each test (default 3; one warm-up run more)\n"
    "  -d, --depth LIST       tokens already in each sequence before a test, comma-separated:\n"
    "                         every test runs at each depth (default 0; filled again\n"
    "                         before each run, with progress on a terminal)\n"
    "      --json | --csv | --md   output format (default md)\n"
    "      --profile          time per token by part (attention by kind, indexer, ...)\n"
    "      --no-ceilings      skip the bandwidth and peak probes (ratios print as 0)\n";

enum { O_JSON = OPT_COMMAND, O_CSV, O_MD, O_PROFILE, O_NOCEIL };
enum { FMT_MD, FMT_JSON, FMT_CSV };
#define MAX_BATCHES 16
#define MAX_DEPTHS 8
#define MAX_DEPTH (1 << 22)

typedef struct {
    const char *test;
    int prompt, gen, batch, depth;
    double tok_s, tok_s_sd, bytes_per_tok, flops_per_tok;
    double kv_bytes;                 /* one sequence's KV cache after the test */
    int prefill_chunk;               /* most prompt tokens per forward pass */
    double part_ms[DSV4_PROF_COUNT]; /* per token */
} result;

typedef struct {
    double bw_gbs, peak_gflops;
    const char *peak_isa;
} ceilings;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void measure_ceilings(ceilings *c, int threads)
{
    c->bw_gbs = roofline_read_gbs(threads, 0);
    c->peak_gflops = roofline_fma_gflops(threads, NULL);
    c->peak_isa = roofline_fma_isa();
    double v = roofline_bf16_gflops(threads);
    if (v > c->peak_gflops) { c->peak_gflops = v; c->peak_isa = "avx512-bf16"; }
    v = roofline_amx_bf16_gflops(threads);
    if (v > c->peak_gflops) { c->peak_gflops = v; c->peak_isa = "amx-bf16"; }
}

/* Deterministic token ids away from the special ones. */
static void fill_tokens(int32_t *t, int n, int vocab, uint64_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = (int32_t)(2 + (seed >> 33) % (uint64_t)(vocab > 3 ? vocab - 2 : 1));
    }
}

static void add_stats(dsv4_stats *sum, dsv4_session *const *s, int n)
{
    memset(sum, 0, sizeof *sum);
    for (int i = 0; i < n; i++) {
        dsv4_stats st;
        dsv4_session_stats(s[i], &st);
        sum->tokens += st.tokens;
        sum->weight_bytes += st.weight_bytes;
        sum->flops += st.flops;
        for (int p = 0; p < DSV4_PROF_COUNT; p++) sum->part_seconds[p] += st.part_seconds[p];
    }
}

/* Feeds the depth's tokens to a session (a long depth takes minutes per
 * run: progress on a terminal). */
static int fill_depth(dsv4_session *s, const int32_t *toks, int depth, const char *what, dsv4_error *err)
{
    char label[160];
    snprintf(label, sizeof label, "bench: %.100s: depth", what);
    return cli_feed_prompt(s, toks, depth, NULL, 0, label, err);
}

/* One test: reps+1 runs (the first warms caches and page tables, not counted). */
static int run_test(dsv4_engine *e, int prefill, int P, int N, int B, int depth, int reps, int profile,
                    result *r, dsv4_error *err)
{
    int vocab = dsv4_engine_vocab_size(e);
    int len = prefill ? P : N;
    dsv4_session **s = calloc((size_t)B, sizeof *s);
    int32_t *toks = malloc((size_t)(depth + len + 1) * B * sizeof *toks);
    double *rate = calloc((size_t)reps + 1, sizeof *rate);
    float *logits = malloc((size_t)B * vocab * sizeof *logits);
    int rc = -1;
    if (!s || !toks || !rate || !logits) {
        snprintf(err->message, sizeof err->message, "out of memory");
        goto done;
    }
    for (int i = 0; i < B; i++) {
        if (dsv4_session_new(&s[i], e, depth + len + 1, err)) goto done;
        dsv4_session_set_profiling(s[i], profile);
    }
    fill_tokens(toks, (depth + len + 1) * B, vocab, 0x5eed);
    dsv4_stats acc;
    memset(&acc, 0, sizeof acc);
    for (int rep = 0; rep <= reps; rep++) {
        for (int i = 0; i < B; i++) {
            char what[96];
            snprintf(what, sizeof what, "%s%d b%d, run %d of %d, sequence %d", prefill ? "pp" : "tg", len, B,
                     rep + 1, reps + 1, i + 1);
            dsv4_session_reset(s[i]);
            if (depth && fill_depth(s[i], toks + (size_t)i * (depth + len + 1), depth, what, err)) goto done;
            if (!prefill || i > 0) /* only a prefill test's first session takes a long pass afterwards */
                dsv4_session_trim(s[i]);
            dsv4_session_stats_reset(s[i]);
        }
        double t0 = now_s();
        if (prefill) {
            if (dsv4_session_feed(s[0], toks + depth, P, logits, 0, err)) goto done;
        } else if (B == 1) {
            for (int k = 0; k < N; k++)
                if (dsv4_session_feed(s[0], toks + depth + k, 1, logits, 0, err)) goto done;
        } else {
            int32_t step[DSV4_BATCH_MAX];
            for (int k = 0; k < N; k++) {
                for (int i = 0; i < B; i++) step[i] = toks[(size_t)i * (depth + len + 1) + depth + k];
                if (dsv4_batch_step(s, step, B, logits, err)) goto done;
            }
        }
        double dt = now_s() - t0;
        rate[rep] = (double)len * (prefill ? 1 : B) / dt;
        if (rep > 0) {
            dsv4_stats st;
            add_stats(&st, s, B);
            acc.tokens += st.tokens;
            acc.weight_bytes += st.weight_bytes;
            acc.flops += st.flops;
            for (int p = 0; p < DSV4_PROF_COUNT; p++) acc.part_seconds[p] += st.part_seconds[p];
        }
    }
    double mean = 0, var = 0;
    for (int i = 1; i <= reps; i++) mean += rate[i] / reps;
    for (int i = 1; i <= reps; i++) var += (rate[i] - mean) * (rate[i] - mean);
    r->tok_s = mean;
    r->tok_s_sd = reps > 1 ? sqrt(var / (reps - 1)) : 0;
    r->bytes_per_tok = acc.tokens > 0 ? acc.weight_bytes / acc.tokens : 0;
    r->flops_per_tok = acc.tokens > 0 ? acc.flops / acc.tokens : 0;
    for (int p = 0; p < DSV4_PROF_COUNT; p++) r->part_ms[p] = acc.tokens > 0 ? 1e3 * acc.part_seconds[p] / acc.tokens : 0;
    r->kv_bytes = (double)dsv4_session_kv_bytes(s[0]);
    rc = 0;
done:
    for (int i = 0; s && i < B; i++) dsv4_session_free(s[i]);
    free(s);
    free(toks);
    free(rate);
    free(logits);
    return rc;
}

static void print_result(int fmt, const result *r, const ceilings *c, int profile, int first)
{
    double gbs = r->bytes_per_tok * r->tok_s / 1e9;
    double gflops = r->flops_per_tok * r->tok_s / 1e9;
    double bw_ratio = c->bw_gbs > 0 ? gbs / c->bw_gbs : 0;
    double fl_ratio = c->peak_gflops > 0 ? gflops / c->peak_gflops : 0;
    char name[32];
    snprintf(name, sizeof name, "%s%d", r->test, r->prompt ? r->prompt : r->gen);
    if (fmt == FMT_JSON) {
        printf("{\"test\": \"%s\", \"prompt\": %d, \"gen\": %d, \"batch\": %d, \"depth\": %d, \"tok_s\": %.3f, "
               "\"tok_s_sd\": %.3f, \"weight_bytes_per_token\": %.0f, \"gbs\": %.3f, \"bw_ceiling_gbs\": %.3f, "
               "\"bw_ratio\": %.4f, \"gflops\": %.3f, \"peak_gflops\": %.3f, \"peak_isa\": \"%s\", \"flops_ratio\": %.4f, "
               "\"kv_bytes_per_sequence\": %.0f, \"prefill_chunk\": %d",
               name, r->prompt, r->gen, r->batch, r->depth, r->tok_s, r->tok_s_sd, r->bytes_per_tok, gbs, c->bw_gbs,
               bw_ratio, gflops, c->peak_gflops, c->peak_isa, fl_ratio, r->kv_bytes, r->prefill_chunk);
        if (profile) {
            printf(", \"profile_ms_per_token\": {");
            for (int p = 0; p < DSV4_PROF_COUNT; p++)
                printf("%s\"%s\": %.4f", p ? ", " : "", dsv4_prof_part_name(p), r->part_ms[p]);
            printf("}");
        }
        printf("}\n");
    } else if (fmt == FMT_CSV) {
        if (first) {
            printf("test,prompt,gen,batch,depth,tok_s,tok_s_sd,weight_bytes_per_token,gbs,bw_ceiling_gbs,bw_ratio,"
                   "gflops,peak_gflops,flops_ratio,kv_bytes_per_sequence,prefill_chunk");
            for (int p = 0; profile && p < DSV4_PROF_COUNT; p++) printf(",ms_%s", dsv4_prof_part_name(p));
            printf("\n");
        }
        printf("%s,%d,%d,%d,%d,%.3f,%.3f,%.0f,%.3f,%.3f,%.4f,%.3f,%.3f,%.4f,%.0f,%d", name, r->prompt, r->gen,
               r->batch, r->depth, r->tok_s, r->tok_s_sd, r->bytes_per_tok, gbs, c->bw_gbs, bw_ratio, gflops,
               c->peak_gflops, fl_ratio, r->kv_bytes, r->prefill_chunk);
        for (int p = 0; profile && p < DSV4_PROF_COUNT; p++) printf(",%.4f", r->part_ms[p]);
        printf("\n");
    } else {
        if (first) {
            printf("| test | batch | depth | tok/s | MB weights/tok | GB/s | of %.1f GB/s | GFLOP/s | of %.0f (%s) "
                   "| MB KV/seq |\n",
                   c->bw_gbs, c->peak_gflops, c->peak_isa);
            printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        }
        printf("| %s | %d | %d | %.2f ± %.2f | %.1f | %.2f | %.1f%% | %.1f | %.1f%% | %.2f |\n", name, r->batch,
               r->depth, r->tok_s, r->tok_s_sd, r->bytes_per_tok / 1e6, gbs, 100 * bw_ratio, gflops, 100 * fl_ratio,
               r->kv_bytes / 1e6);
    }
}

static void print_profile_md(const result *rs, int n)
{
    printf("\n| ms/token |");
    for (int i = 0; i < n; i++) {
        printf(" %s%d b%d", rs[i].test, rs[i].prompt ? rs[i].prompt : rs[i].gen, rs[i].batch);
        printf(rs[i].depth ? " @%d |" : " |", rs[i].depth);
    }
    printf("\n|---|");
    for (int i = 0; i < n; i++) printf("---:|");
    printf("\n");
    for (int p = 0; p <= DSV4_PROF_COUNT; p++) {
        printf("| %s |", p < DSV4_PROF_COUNT ? dsv4_prof_part_name(p) : "**total**");
        for (int i = 0; i < n; i++) {
            double v = 0;
            if (p < DSV4_PROF_COUNT) v = rs[i].part_ms[p];
            else for (int q = 0; q < DSV4_PROF_COUNT; q++) v += rs[i].part_ms[q];
            printf(" %.3f |", v);
        }
        printf("\n");
    }
}

/* A comma-separated list of at most max integers in [lo, hi]: its length, or -1. */
static int parse_list(const char *s, int *b, int max, long lo, long hi)
{
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < lo || v > hi || n == max) return -1;
        b[n++] = (int)v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return n;
}

int cmd_bench(int argc, char **argv)
{
    static const struct option longs[] = {
        COMMON_LONG_OPTS,
        {"prompt", required_argument, 0, 'p'}, {"gen", required_argument, 0, 'n'},
        {"batch", required_argument, 0, 'b'},  {"reps", required_argument, 0, 'r'},
        {"depth", required_argument, 0, 'd'},  {"json", no_argument, 0, O_JSON},
        {"csv", no_argument, 0, O_CSV},        {"md", no_argument, 0, O_MD},
        {"profile", no_argument, 0, O_PROFILE}, {"no-ceilings", no_argument, 0, O_NOCEIL},
        {0, 0, 0, 0}};
    int P = 512, N = 128, reps = 3, fmt = FMT_MD, profile = 0, ceil_probe = 1;
    int batches[MAX_BATCHES] = {1, 16}, n_batches = 2, depths[MAX_DEPTHS] = {0}, n_depths = 1;
    long v;
    int c;
    cli_parser prs;
    cli_parser_init(&prs, "bench", help, ":m:t:p:n:b:r:d:h", longs, argc, argv);
    while ((c = cli_next_option(&prs)) != CLI_END) {
        switch (c) {
        case CLI_EXIT: return prs.status;
        case 'p':
        case 'n':
            if (cli_parse_int(optarg, 0, 1 << 20, &v))
                return cli_usage_error("bench", "-%c needs a token count, got '%s'", c, optarg);
            *(c == 'p' ? &P : &N) = (int)v;
            break;
        case 'b':
            n_batches = parse_list(optarg, batches, MAX_BATCHES, 1, DSV4_BATCH_MAX);
            if (n_batches <= 0)
                return cli_usage_error("bench", "-b needs 1 to %d batch sizes 1..%d separated by commas, got '%s'",
                                       MAX_BATCHES, DSV4_BATCH_MAX, optarg);
            break;
        case 'r':
            if (cli_parse_int(optarg, 1, 1000, &v))
                return cli_usage_error("bench", "-r needs 1 to 1000 repetitions, got '%s'", optarg);
            reps = (int)v;
            break;
        case 'd':
            n_depths = parse_list(optarg, depths, MAX_DEPTHS, 0, MAX_DEPTH);
            if (n_depths <= 0)
                return cli_usage_error("bench", "--depth needs 1 to %d token counts 0..%d separated by commas, got '%s'",
                                       MAX_DEPTHS, MAX_DEPTH, optarg);
            break;
        case O_JSON: fmt = FMT_JSON; break;
        case O_CSV: fmt = FMT_CSV; break;
        case O_MD: fmt = FMT_MD; break;
        case O_PROFILE: profile = 1; break;
        case O_NOCEIL: ceil_probe = 0; break;
        }
    }
    const char *model_dir = prs.model_dir;
    dsv4_options opt = prs.opt;
    if (!model_dir) return cli_usage_error("bench", "-m DIR is required");

    dsv4_engine *e;
    dsv4_error err;
    if (dsv4_engine_open(&e, model_dir, &opt, &err)) return cli_error("bench", "%s", err.message);
    char desc[1024];
    dsv4_engine_describe(e, desc, sizeof desc);
    fprintf(stderr, "bench: %s: %s; prefill passes of up to %d tokens\n", model_dir, desc, opt.prefill_chunk);

    ceilings ceil = {0, 0, "none"};
    if (ceil_probe) {
        measure_ceilings(&ceil, opt.n_threads);
        fprintf(stderr, "bench: read bandwidth %.2f GB/s, peak %.1f GFLOP/s (%s)\n", ceil.bw_gbs, ceil.peak_gflops,
                ceil.peak_isa);
    }

    result rs[MAX_DEPTHS * (MAX_BATCHES + 1)];
    int n_res = 0, status = 0;
    if (fmt == FMT_MD)
        printf("\n%s; prefill passes of up to %d tokens\n\n", desc, opt.prefill_chunk);
    for (int d = 0; d < n_depths && !status; d++) {
        int depth = depths[d];
        for (int t = -1; t < n_batches && !status; t++) {
            result *r = &rs[n_res];
            memset(r, 0, sizeof *r);
            r->depth = depth;
            r->prefill_chunk = opt.prefill_chunk;
            if (t < 0) {
                if (P <= 0) continue;
                r->test = "pp";
                r->prompt = P;
                r->batch = 1;
            } else {
                if (N <= 0) break;
                r->test = "tg";
                r->gen = N;
                r->batch = batches[t];
            }
            if (run_test(e, t < 0, P, N, r->batch, depth, reps, profile, r, &err)) {
                status = cli_error("bench", "%s", err.message);
                break;
            }
            print_result(fmt, r, &ceil, profile, n_res == 0);
            fflush(stdout);
            n_res++;
        }
    }
    if (!status && profile && fmt == FMT_MD && n_res) print_profile_md(rs, n_res);
    dsv4_engine_close(e);
    return status;
}
