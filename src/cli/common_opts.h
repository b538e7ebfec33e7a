/* Option parsing every subcommand shares: one getopt_long loop that handles
 * --help, unknown options, missing values, trailing arguments, the options of
 * every model-loading command (-m, -t, --numerics, --isa) and, for commands
 * that generate, the sampling options (-n, --temp, --top-p, --seed, --ctx);
 * each command's help text states its own defaults. */
#ifndef DSV4_CLI_COMMON_OPTS_H
#define DSV4_CLI_COMMON_OPTS_H

#include <getopt.h>

#include "cli.h"

enum {
    OPT_NUMERICS = 1000, OPT_ISA, OPT_PREFILL_CHUNK, OPT_TOKENS, OPT_TEMP, OPT_TOP_P, OPT_SEED, OPT_OUT, OPT_CTX,
    OPT_COMMAND = 1100 /* commands number their own options from here */
};

/* Prompt tokens per forward pass unless --prefill-chunk says otherwise (the
 * library's default is 512): each routed expert is then read once for ~4x the
 * tokens, which made a 2048-token prompt 8-10% faster on two Zen 5 cores, 15%
 * on 16 Sapphire Rapids cores and 40-62% there with --isa amx (bench/history.md).
 * The pass's activations (~0.5 GB at V4-Flash width) are held by one session
 * at a time: batch and bench trim each session once its prompt is in. */
#define CLI_PREFILL_CHUNK 2048

#define COMMON_LONG_OPTS                                   \
    { "model", required_argument, 0, 'm' },                \
    { "threads", required_argument, 0, 't' },              \
    { "numerics", required_argument, 0, OPT_NUMERICS },    \
    { "isa", required_argument, 0, OPT_ISA },              \
    { "prefill-chunk", required_argument, 0, OPT_PREFILL_CHUNK }, \
    { "help", no_argument, 0, 'h' }

#define COMMON_HELP                                                                     \
    "  -m, --model DIR        model directory: config.json + *.safetensors\n"            \
    "  -t, --threads N        threads (default: all cores)\n"                            \
    "      --numerics MODE    release (default: the official FP8/FP4/bf16 rounding)\n"   \
    "                         or plain (float32, no rounding simulation)\n"              \
    "      --isa NAME         kernel set: scalar, avx2, avx512, neon (default: the best\n"  \
    "                         this CPU has), or amx: avx512 with the release-numerics\n"   \
    "                         products on AMX tiles (faster prefill, slower decode)\n"     \
    "      --prefill-chunk N  most prompt tokens per forward pass (default 2048; like\n" \
    "                         llama.cpp's -ub): longer passes read each expert for more\n" \
    "                         tokens, faster on long prompts, ~0.25 MB of activations\n"  \
    "                         per token at V4-Flash width; results do not change\n"       \
    "  -h, --help             this help\n"

#define SAMPLING_LONG_OPTS                                 \
    { "n-predict", required_argument, 0, 'n' },            \
    { "temp", required_argument, 0, OPT_TEMP },            \
    { "top-p", required_argument, 0, OPT_TOP_P },          \
    { "seed", required_argument, 0, OPT_SEED },            \
    { "ctx", required_argument, 0, OPT_CTX }

typedef struct {
    long n_predict, seed, ctx; /* ctx 0: the command's default */
    double temp, top_p;
} cli_sampling;

typedef struct {
    const char *cmd, *help, *shorts;
    const struct option *longs;
    int argc;
    char **argv;
    const char *model_dir;     /* -m */
    dsv4_options opt;          /* -t, --numerics, --isa, --prefill-chunk */
    cli_sampling *sampling;    /* NULL: the command takes no sampling options */
    int status;                /* what the command returns after CLI_EXIT */
    int operands;              /* 1: arguments after the options are the command's (from optind) */
} cli_parser;

enum { CLI_END = -1, CLI_EXIT = -2 };

/* Starts parsing argv (argv[0] is the command's name). */
void cli_parser_init(cli_parser *p, const char *cmd, const char *help, const char *shorts,
                     const struct option *longs, int argc, char **argv);
/* The next option the command handles itself (value in optarg); CLI_END when
 * all are read; CLI_EXIT when the command must return p->status at once
 * (help printed, or a usage error reported). */
int cli_next_option(cli_parser *p);

#endif
