/* The dsv4 command line: subcommands share these helpers. The CLI uses only
 * the public API (include/dsv4.h). */
#ifndef DSV4_CLI_H
#define DSV4_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4.h"

int cmd_run(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_batch(int argc, char **argv);

/* Prints "dsv4 CMD: message" on stderr; returns the exit status 1 (or 2 for usage errors). */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses numbers strictly (the whole string, in range); 0 on success. */
int cli_parse_int(const char *s, long min, long max, long *out);
int cli_parse_float(const char *s, double min, double max, double *out);
/* Parses --numerics release|plain. */
int cli_parse_numerics(const char *s, dsv4_numerics *out);

/* Reads a token file: one integer id per line (blank lines and surrounding
 * spaces allowed). On error *msg names the file and line. Caller frees *ids. */
int cli_read_tokens(const char *path, int32_t **ids, int *n, char *msg, size_t msg_len);

/* Feeds a prompt of n tokens (logits: the last one's, or NULL); on a
 * terminal, when it is longer than 8192 tokens (or prefill_chunk, the
 * engine's --prefill-chunk, if larger; 0: the default), in pieces of that
 * many with a progress line on stderr ("LABEL: prefill k/n tokens, x tok/s"),
 * erased at the end. Pieces give the same state and logits as one call:
 * results do not depend on how a prompt is cut. */
int cli_feed_prompt(dsv4_session *s, const int32_t *ids, int n, float *logits, int prefill_chunk,
                    const char *label, dsv4_error *err);

/* Reads a whole file ("-": stdin; not NUL-terminated); caller frees *data. On error *msg names the file. */
int cli_read_file(const char *path, char **data, size_t *len, char *msg, size_t msg_len);

/* Writes len bytes to path atomically (a temporary file renamed into place). */
int cli_write_file(const char *path, const char *data, size_t len, char *msg, size_t msg_len);

/* Writes a float32 NumPy .npy file of shape [rows][cols], atomically (a
 * temporary file renamed into place), so an interrupted run leaves nothing half-written. */
int cli_write_npy_f32(const char *path, const float *data, long rows, long cols, char *msg, size_t msg_len);

#endif
