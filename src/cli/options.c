/* The getopt_long loop every subcommand shares (common_opts.h). */
#include <stdio.h>

#include "common_opts.h"

void cli_parser_init(cli_parser *p, const char *cmd, const char *help, const char *shorts,
                     const struct option *longs, int argc, char **argv)
{
    *p = (cli_parser){ .cmd = cmd, .help = help, .shorts = shorts, .longs = longs, .argc = argc, .argv = argv };
    dsv4_options_default(&p->opt);
    p->opt.prefill_chunk = CLI_PREFILL_CHUNK;
    optind = 1;
}

/* 1: handled; 0: not a common option; CLI_EXIT: bad value (status set). */
static int common_option(cli_parser *p, int c, const char *arg)
{
    long v;
    switch (c) {
    case 'm':
        p->model_dir = arg;
        return 1;
    case 't':
        if (cli_parse_int(arg, 1, 4096, &v))
            break;
        p->opt.n_threads = (int)v;
        return 1;
    case OPT_NUMERICS:
        if (cli_parse_numerics(arg, &p->opt.numerics)) {
            p->status = cli_usage_error(p->cmd, "--numerics must be 'release' or 'plain', got '%s'", arg);
            return CLI_EXIT;
        }
        return 1;
    case OPT_ISA:
        p->opt.isa = arg;
        return 1;
    case OPT_PREFILL_CHUNK:
        if (cli_parse_int(arg, 1, DSV4_PREFILL_CHUNK_MAX, &v)) {
            p->status = cli_usage_error(p->cmd, "--prefill-chunk needs a token count from 1 to %d, got '%s'",
                                        DSV4_PREFILL_CHUNK_MAX, arg);
            return CLI_EXIT;
        }
        p->opt.prefill_chunk = (int)v;
        return 1;
    default:
        return 0;
    }
    p->status = cli_usage_error(p->cmd, "-t needs a thread count from 1 to 4096, got '%s'", arg);
    return CLI_EXIT;
}

static int sampling_option(cli_parser *p, int c, const char *arg)
{
    cli_sampling *s = p->sampling;
    const char *what;
    switch (c) {
    case 'n':
        if (!cli_parse_int(arg, 0, 1 << 30, &s->n_predict))
            return 1;
        what = "-n needs a non-negative integer";
        break;
    case OPT_TEMP:
        if (!cli_parse_float(arg, 0.0, 1e6, &s->temp))
            return 1;
        what = "--temp needs a number >= 0";
        break;
    case OPT_TOP_P:
        if (!cli_parse_float(arg, 1e-9, 1.0, &s->top_p))
            return 1;
        what = "--top-p needs a number in (0, 1]";
        break;
    case OPT_SEED:
        if (!cli_parse_int(arg, 0, __LONG_MAX__, &s->seed))
            return 1;
        what = "--seed needs a non-negative integer";
        break;
    case OPT_CTX:
        if (!cli_parse_int(arg, 1, 1 << 30, &s->ctx))
            return 1;
        what = "--ctx needs a positive integer";
        break;
    default:
        return 0;
    }
    p->status = cli_usage_error(p->cmd, "%s, got '%s'", what, arg);
    return CLI_EXIT;
}

int cli_next_option(cli_parser *p)
{
    for (;;) {
        int c = getopt_long(p->argc, p->argv, p->shorts, p->longs, NULL);
        if (c == -1) {
            if (optind < p->argc && !p->operands) {
                p->status = cli_usage_error(p->cmd, "unexpected argument '%s'", p->argv[optind]);
                return CLI_EXIT;
            }
            return CLI_END;
        }
        if (c == 'h') {
            fputs(p->help, stdout);
            p->status = 0;
            return CLI_EXIT;
        }
        if (c == '?' || c == ':') {
            p->status = cli_usage_error(p->cmd, c == '?' ? "unknown option '%s'" : "option '%s' needs a value",
                                        p->argv[optind - 1]);
            return CLI_EXIT;
        }
        int r = common_option(p, c, optarg);
        if (r == 0 && p->sampling)
            r = sampling_option(p, c, optarg);
        if (r == CLI_EXIT)
            return CLI_EXIT;
        if (r == 0)
            return c;
    }
}
