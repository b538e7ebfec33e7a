/* Helpers shared by the subcommands: strict number parsing, token and text files, .npy output. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static int vreport(const char *cmd, int status, const char *fmt, va_list ap)
{
    fprintf(stderr, "dsv4 %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    return status;
}

int cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vreport(cmd, 1, fmt, ap);
    va_end(ap);
    return r;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dsv4 %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'dsv4 %s --help')\n", cmd);
    va_end(ap);
    return 2;
}

int cli_parse_int(const char *s, long min, long max, long *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_float(const char *s, double min, double max, double *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_numerics(const char *s, dsv4_numerics *out)
{
    if (strcmp(s, "release") == 0)
        *out = DSV4_NUMERICS_RELEASE;
    else if (strcmp(s, "plain") == 0)
        *out = DSV4_NUMERICS_PLAIN;
    else
        return -1;
    return 0;
}

int cli_read_tokens(const char *path, int32_t **ids, int *n, char *msg, size_t msg_len)
{
    *ids = NULL;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(msg, msg_len, "cannot open token file '%s': %s", path, strerror(errno));
        return -1;
    }
    int cap = 1024, count = 0;
    int32_t *buf = malloc(sizeof *buf * (size_t)cap);
    char line[256];
    long lineno = 0;
    int status = 0;
    while (buf && fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            snprintf(msg, msg_len, "%s:%ld: line too long for a token id", path, lineno);
            status = -1;
            break;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        char *e = p + strlen(p);
        while (e > p && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            *--e = 0;
        if (!*p)
            continue;
        long v;
        if (cli_parse_int(p, 0, INT32_MAX, &v) != 0) {
            snprintf(msg, msg_len, "%s:%ld: '%.40s' is not a token id (a non-negative integer)", path, lineno, p);
            status = -1;
            break;
        }
        if (count == cap) {
            cap *= 2;
            int32_t *grown = realloc(buf, sizeof *buf * (size_t)cap);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
        }
        buf[count++] = (int32_t)v;
    }
    if (!buf) {
        snprintf(msg, msg_len, "%s: out of memory", path);
        status = -1;
    } else if (status == 0 && ferror(f)) {
        snprintf(msg, msg_len, "%s: read error: %s", path, strerror(errno));
        status = -1;
    } else if (status == 0 && count == 0) {
        snprintf(msg, msg_len, "%s: no token ids in the file", path);
        status = -1;
    }
    fclose(f);
    if (status != 0) {
        free(buf);
        return -1;
    }
    *ids = buf;
    *n = count;
    return 0;
}

int cli_read_file(const char *path, char **data, size_t *len, char *msg, size_t msg_len)
{
    int from_stdin = !strcmp(path, "-");
    FILE *f = from_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        snprintf(msg, msg_len, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            if (!from_stdin)
                fclose(f);
            snprintf(msg, msg_len, "%s: out of memory", path);
            return -1;
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *grown = realloc(buf, cap * 2);
        if (!grown)
            free(buf);
        buf = grown;
        cap *= 2;
    }
    int bad = ferror(f);
    if (!from_stdin)
        fclose(f);
    if (bad) {
        free(buf);
        snprintf(msg, msg_len, "%s: read error", path);
        return -1;
    }
    *data = buf;
    *len = n;
    return 0;
}

int cli_feed_prompt(dsv4_session *s, const int32_t *ids, int n, float *logits, int prefill_chunk,
                    const char *label, dsv4_error *err)
{
    int piece = prefill_chunk > 8192 ? prefill_chunk : 8192;
    int show = isatty(STDERR_FILENO) && n > piece, shown = 0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int done = 0; done < n;) {
        int len = show && n - done > piece ? piece : n - done;
        if (dsv4_session_feed(s, ids + done, len, logits, 0, err))
            return -1;
        done += len;
        if (show) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            double secs = (double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec);
            shown = fprintf(stderr, "\r%s: prefill %d/%d tokens, %.0f tok/s ", label, done, n,
                            secs > 0 ? done / secs : 0.0);
        }
    }
    if (show && shown > 1)
        fprintf(stderr, "\r%*s\r", shown - 1, "");
    return 0;
}

/* Writes the parts one after the other into a temporary file beside path,
 * then renames it into place: readers see the whole file or none. */
static int write_parts(const char *path, const void *const *parts, const size_t *lens, int n, char *msg,
                       size_t msg_len)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        snprintf(msg, msg_len, "output path too long");
        return -1;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(msg, msg_len, "cannot write '%s': %s", tmp, strerror(errno));
        return -1;
    }
    int ok = 1;
    for (int i = 0; ok && i < n; i++)
        ok = fwrite(parts[i], 1, lens[i], f) == lens[i];
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(msg, msg_len, "cannot write '%s': %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

int cli_write_file(const char *path, const char *data, size_t len, char *msg, size_t msg_len)
{
    const void *parts[1] = { data };
    return write_parts(path, parts, &len, 1, msg, msg_len);
}

int cli_write_npy_f32(const char *path, const float *data, long rows, long cols, char *msg, size_t msg_len)
{
    /* NumPy format 1.0: magic, version, u16 header length; header padded with
     * spaces and ended by '\n' so that the data starts at a multiple of 64. */
    char head[192];
    int hl = snprintf(head + 10, sizeof head - 10,
                      "{'descr': '<f4', 'fortran_order': False, 'shape': (%ld, %ld), }", rows, cols);
    int total = 10 + hl + 1, pad = (64 - total % 64) % 64;
    memset(head + 10 + hl, ' ', (size_t)pad);
    head[10 + hl + pad] = '\n';
    unsigned short hlen = (unsigned short)(hl + pad + 1);
    const unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                    (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8) };
    memcpy(head, pre, sizeof pre);
    const void *parts[2] = { head, data };
    size_t lens[2] = { (size_t)(total + pad), sizeof(float) * (size_t)rows * (size_t)cols };
    return write_parts(path, parts, lens, 2, msg, msg_len);
}
