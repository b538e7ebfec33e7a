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
    cli_parser p;
    cli_parser_init(&p, "inspect", help, ":m:t:h", longs, argc, argv);
    int c;
    while ((c = cli_next_option(&p)) != CLI_END)
        if (c == CLI_EXIT)
            return p.status;
    const char *model_dir = p.model_dir;
    if (!model_dir)
        return cli_usage_error("inspect", "-m DIR is required");
    dsv4_engine *e;
    dsv4_error err;
    if (dsv4_engine_open(&e, model_dir, &p.opt, &err))
        return cli_error("inspect", "%s", err.message);
    char desc[1024];
    dsv4_engine_describe(e, desc, sizeof desc);
    printf("%s: %s\n", model_dir, desc);
    dsv4_engine_close(e);
    return 0;
}
