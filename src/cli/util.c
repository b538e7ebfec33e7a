/* Helpers shared by the subcommands: strict number parsing, token and text files, .npy output. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(msg, msg_len, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
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

int cli_write_file(const char *path, const char *data, size_t len, char *msg, size_t msg_len)
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
    int ok = fwrite(data, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(msg, msg_len, "cannot write '%s': %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

int cli_write_npy_f32(const char *path, const float *data, long rows, long cols, char *msg, size_t msg_len)
{
    char header[128];
    int hl = snprintf(header, sizeof header,
                      "{'descr': '<f4', 'fortran_order': False, 'shape': (%ld, %ld), }", rows, cols);
    /* NumPy format 1.0: magic, version, u16 header length; header padded with
     * spaces and ended by '\n' so that the data starts at a multiple of 64. */
    int total = 10 + hl + 1;
    int pad = (64 - total % 64) % 64;
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
    unsigned short hlen = (unsigned short)(hl + pad + 1);
    unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                              (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8) };
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(header, 1, (size_t)hl, f) == (size_t)hl;
    for (int i = 0; ok && i < pad; i++)
        ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    ok = ok && fwrite(data, sizeof(float), (size_t)(rows * cols), f) == (size_t)(rows * cols);
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(msg, msg_len, "cannot write '%s': %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}
