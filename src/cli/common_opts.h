/* Options every model-loading subcommand accepts: -m, -t, --numerics, --isa. */
#ifndef DSV4_CLI_COMMON_OPTS_H
#define DSV4_CLI_COMMON_OPTS_H

#include <getopt.h>

#include "cli.h"

enum { OPT_NUMERICS = 1000, OPT_ISA, OPT_TOKENS, OPT_TEMP, OPT_TOP_P, OPT_SEED, OPT_OUT, OPT_CTX };

#define COMMON_LONG_OPTS                                   \
    { "model", required_argument, 0, 'm' },                \
    { "threads", required_argument, 0, 't' },              \
    { "numerics", required_argument, 0, OPT_NUMERICS },    \
    { "isa", required_argument, 0, OPT_ISA },              \
    { "help", no_argument, 0, 'h' }

#define COMMON_HELP                                                                     \
    "  -m, --model DIR        model directory: config.json + *.safetensors (required)\n" \
    "  -t, --threads N        threads (default: all cores)\n"                            \
    "      --numerics MODE    release (default: the official FP8/FP4/bf16 rounding)\n"   \
    "                         or plain (float32, no rounding simulation)\n"              \
    "      --isa NAME         force a kernel set: scalar, avx512 (default: best)\n"      \
    "  -h, --help             this help\n"

/* Handles one common option; returns 1 if handled, 0 if not common, or an exit status > 1 on error. */
static inline int common_opt(const char *cmd, int c, const char *arg, const char **model_dir, dsv4_options *opt)
{
    long v;
    switch (c) {
    case 'm':
        *model_dir = arg;
        return 1;
    case 't':
        if (cli_parse_int(arg, 1, 4096, &v))
            return cli_usage_error(cmd, "-t needs a thread count from 1 to 4096, got '%s'", arg);
        opt->n_threads = (int)v;
        return 1;
    case OPT_NUMERICS:
        if (cli_parse_numerics(arg, &opt->numerics))
            return cli_usage_error(cmd, "--numerics must be 'release' or 'plain', got '%s'", arg);
        return 1;
    case OPT_ISA:
        opt->isa = arg;
        return 1;
    default:
        return 0;
    }
}

#endif
