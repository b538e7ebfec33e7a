/* dsv4 synth: write a synthetic release-format checkpoint with the real
 * V4-Flash / V4-Pro shapes and random values (synth_writer.h). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "cli.h"
#include "synth_writer.h"

static const char *help =
    "usage: dsv4 synth --shape flash|pro --layers N --seed S --out DIR [options]\n"
    "\n"
    "Writes a checkpoint in the release format (config.json, index, safetensors shards;\n"
    "FP8 e4m3 + e8m0 linears, packed FP4 experts) with the real shapes and random values,\n"
    "deterministic by seed. Per-token cost is linear in layers, so a few full-width layers\n"
    "give the per-layer speed of the full model (see `dsv4 bench`).\n"
    "\n"
    "options:\n"
    "      --shape NAME       flash or pro (tiny: small dims, for tests)\n"
    "      --layers N         number of layers\n"
    "      --kinds LIST       layer kinds, comma-separated: window, csa, hca (default: the\n"
    "                         shape's own order; Flash: window, window, csa, hca, csa, ...)\n"
    "      --experts E        routed experts per layer (default: the shape's, 256 / 384);\n"
    "                         fewer shrink the files, not the work per token\n"
    "      --seed S           random seed (default 1)\n"
    "      --out DIR          output directory (created if missing)\n"
    "      --shard-gb G       largest shard in GB (default 4)\n"
    "  -h, --help             this help\n";

enum { O_SHAPE = 2000, O_LAYERS, O_KINDS, O_EXPERTS, O_SEED, O_OUT, O_SHARD };

static int parse_kinds(const char *list, int *kinds, int max)
{
    int n = 0;
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (n == max) return -1;
        if (len == 6 && !strncmp(p, "window", 6)) kinds[n++] = 0;
        else if (len == 3 && !strncmp(p, "csa", 3)) kinds[n++] = 1;
        else if (len == 3 && !strncmp(p, "hca", 3)) kinds[n++] = 2;
        else return -1;
        p += len;
        if (*p == ',') p++;
    }
    return n;
}

typedef struct {
    struct timespec start;
    double last;
} progress_state;

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

static void progress(void *ctx, const char *tensor, uint64_t done, uint64_t total)
{
    progress_state *ps = ctx;
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
    double s = seconds_since(&ps->start);
    if (s - ps->last < 0.5 && done != total) return;
    ps->last = s;
    fprintf(stderr, "\rsynth: %3d%%  %6.2f / %.2f GB  %5.2f GB/s  %-48.48s", pct, done / 1e9, total / 1e9,
            s > 0 ? done / 1e9 / s : 0.0, tensor);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

int cmd_synth(int argc, char **argv)
{
    static const struct option longs[] = {
        {"shape", required_argument, 0, O_SHAPE}, {"layers", required_argument, 0, O_LAYERS},
        {"kinds", required_argument, 0, O_KINDS}, {"experts", required_argument, 0, O_EXPERTS},
        {"seed", required_argument, 0, O_SEED},   {"out", required_argument, 0, O_OUT},
        {"shard-gb", required_argument, 0, O_SHARD}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    synth_spec s;
    memset(&s, 0, sizeof s);
    s.seed = 1;
    const char *kinds = NULL;
    long v;
    double g;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", longs, NULL)) != -1) {
        switch (c) {
        case 'h': fputs(help, stdout); return 0;
        case O_SHAPE: s.shape = optarg; break;
        case O_LAYERS:
            if (cli_parse_int(optarg, 1, SYNTH_MAX_LAYERS, &v))
                return cli_usage_error("synth", "--layers needs 1 to %d, got '%s'", SYNTH_MAX_LAYERS, optarg);
            s.n_layers = (int)v;
            break;
        case O_KINDS: kinds = optarg; break;
        case O_EXPERTS:
            if (cli_parse_int(optarg, 1, 4096, &v))
                return cli_usage_error("synth", "--experts needs 1 to 4096, got '%s'", optarg);
            s.n_experts = (int)v;
            break;
        case O_SEED:
            if (cli_parse_int(optarg, 0, 0x7fffffffffffffffL, &v))
                return cli_usage_error("synth", "--seed needs a non-negative integer, got '%s'", optarg);
            s.seed = (uint64_t)v;
            break;
        case O_OUT: s.out_dir = optarg; break;
        case O_SHARD:
            if (cli_parse_float(optarg, 0.001, 1e6, &g))
                return cli_usage_error("synth", "--shard-gb needs a positive size, got '%s'", optarg);
            s.shard_bytes = (uint64_t)(g * 1e9);
            break;
        case ':': return cli_usage_error("synth", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("synth", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("synth", "unexpected argument '%s'", argv[optind]);
    if (!s.shape) return cli_usage_error("synth", "--shape flash|pro is required");
    if (!s.n_layers) return cli_usage_error("synth", "--layers N is required");
    if (!s.out_dir) return cli_usage_error("synth", "--out DIR is required");
    if (synth_default_kinds(s.shape, s.n_layers, s.kinds))
        return cli_usage_error("synth", "--shape must be flash or pro, got '%s'", s.shape);
    if (kinds) {
        int n = parse_kinds(kinds, s.kinds, SYNTH_MAX_LAYERS);
        if (n < 0) return cli_usage_error("synth", "--kinds: a comma-separated list of window, csa, hca, got '%s'", kinds);
        if (n != s.n_layers)
            return cli_usage_error("synth", "--kinds lists %d layers, --layers says %d", n, s.n_layers);
    }

    uint64_t need = synth_planned_bytes(&s);
    struct statvfs fs;
    char probe[1024];
    snprintf(probe, sizeof probe, "%s", s.out_dir);
    while (statvfs(probe, &fs) != 0) { /* not created yet: the nearest existing parent */
        char *slash = strrchr(probe, '/');
        if (!slash || slash == probe) { snprintf(probe, sizeof probe, "%s", slash ? "/" : "."); break; }
        *slash = 0;
    }
    if (statvfs(probe, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize < need)
        return cli_error("synth", "%s: %.2f GB needed, %.2f GB free", s.out_dir, need / 1e9,
                         (double)fs.f_bavail * fs.f_frsize / 1e9);

    progress_state ps = {.last = -1.0};
    clock_gettime(CLOCK_MONOTONIC, &ps.start);
    s.progress = progress;
    s.progress_ctx = &ps;
    char msg[512];
    if (synth_write_checkpoint(&s, msg, sizeof msg)) return cli_error("synth", "%s", msg);
    double t = seconds_since(&ps.start);
    fprintf(stderr, "synth: wrote %s (%.2f GB) in %.1f s\n", s.out_dir, need / 1e9, t);
    return 0;
}
