/* The built-in model: what `dsv4 run` (and other commands) use without -m. */
#ifndef DSV4_CLI_DEFAULT_MODEL_H
#define DSV4_CLI_DEFAULT_MODEL_H

#include <stddef.h>

#define CLI_DEFAULT_MODEL_NAME "v4-tiny-en"

/* Writes the model directory to use into buf: $DSV4_MODEL if set, else
 * <directory of the executable>/../models/v4-tiny-en (build/dsv4 -> models/ of the
 * checkout). Returns 0 if that directory holds a config.json; else -1 with a
 * message in msg naming the path looked at and how to fix it. */
int cli_default_model(char *buf, size_t len, char *msg, size_t msg_len);

#endif
