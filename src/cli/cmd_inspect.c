/* dsv4 inspect: open a model directory (every header and tensor validated) and describe it. */
#include <stdio.h>

#include "common_opts.h"

static const char *help =
    "usage: dsv4 inspect -m DIR [options]\n"
    "\n"
    "Loads the model directory, validates every safetensors header and every tensor's\n"
    "dtype and shape against config.json, and prints a one-line description.\n"
    "\n"
    "options:\n" COMMON_HELP;

int cmd_inspect(int argc, char **argv)
{
    static const struct option longs[] = { COMMON_LONG_OPTS, { 0, 0, 0, 0 } };
    const char *model_dir = NULL;
    dsv4_options opt;
    dsv4_options_default(&opt);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":m:t:h", longs, NULL)) != -1) {
        if (c == 'h') {
            fputs(help, stdout);
            return 0;
        }
        if (c == '?')
            return cli_usage_error("inspect", "unknown option '%s'", argv[optind - 1]);
        if (c == ':')
            return cli_usage_error("inspect", "option '%s' needs a value", argv[optind - 1]);
        int r = common_opt("inspect", c, optarg, &model_dir, &opt);
        if (r > 1)
            return r;
    }
    if (optind < argc)
        return cli_usage_error("inspect", "unexpected argument '%s'", argv[optind]);
    if (!model_dir)
        return cli_usage_error("inspect", "-m DIR is required");
    dsv4_engine *e;
    dsv4_error err;
    if (dsv4_engine_open(&e, model_dir, &opt, &err))
        return cli_error("inspect", "%s", err.message);
    char desc[1024];
    dsv4_engine_describe(e, desc, sizeof desc);
    printf("%s: %s\n", model_dir, desc);
    dsv4_engine_close(e);
    return 0;
}
