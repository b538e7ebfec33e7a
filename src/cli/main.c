/* dsv4: the command-line front end. Each subcommand lives in its own file. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define DSV4_VERSION "0.1.0"

static const char *usage =
    "usage: dsv4 COMMAND [options]\n"
    "\n"
    "CPU inference for DeepSeek V4 (Flash, Pro) from the release checkpoint files.\n"
    "\n"
    "commands:\n"
    "  run       generate text (or tokens) from a prompt\n"
    "  batch     generate for many text files, decoding them together (e.g. summaries)\n"
    "  chat      interactive multi-turn chat on stdin/stdout\n"
    "  tokenize  text to token ids and back (needs only tokenizer.json)\n"
    "  logits    teacher-forced logits of every position of a token file, as .npy\n"
    "  perplexity  teacher-forced perplexity of a text or token file, chunk by chunk\n"
    "  inspect   load a model directory, validate every tensor and describe it\n"
    "  synth     write a synthetic checkpoint with the real V4 shapes (random values)\n"
    "  bench     prefill and decode speed against the machine's own ceilings\n"
    "\n"
    "'dsv4 COMMAND --help' lists a command's options. 'dsv4 --version' prints the version.\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("dsv4 %s\n", DSV4_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "batch"))
        return cmd_batch(argc - 1, argv + 1);
    if (!strcmp(cmd, "logits"))
        return cmd_logits(argc - 1, argv + 1);
    if (!strcmp(cmd, "perplexity"))
        return cmd_perplexity(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize"))
        return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "chat"))
        return cmd_chat(argc - 1, argv + 1);
    if (!strcmp(cmd, "synth"))
        return cmd_synth(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "inspect"))
        return cmd_inspect(argc - 1, argv + 1);
    fprintf(stderr, "dsv4: unknown command '%s' (see 'dsv4 --help')\n", cmd);
    return 2;
}
