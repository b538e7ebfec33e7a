/* UTF-8 checks for the tokenizer: strict validation of input, and the
 * "maximal subpart" replacement rule (Unicode §3.9, Rust's from_utf8_lossy,
 * WHATWG) for bytes that do not form UTF-8. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

/* 1: a valid character of *n bytes; 0: invalid, *n = bytes of the maximal
 * invalid subpart; -1: the bytes run out inside a character that could still
 * be completed (*n = len). */
int tok_utf8_classify(const unsigned char *s, size_t len, size_t *n)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *n = 1;
        return 1;
    }
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else {
        *n = 1;
        return 0;
    }
    for (size_t k = 1; k < need; k++) {
        if (k >= len) {
            *n = len;
            return -1;
        }
        unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
        if (s[k] < lo_k || s[k] > hi_k) {
            *n = k;
            return 0;
        }
    }
    *n = need;
    return 1;
}

int tok_utf8_valid_len(const unsigned char *s, size_t len)
{
    size_t n;
    return len > 0 && tok_utf8_classify(s, len, &n) == 1 ? (int)n : 0;
}

size_t tok_utf8_check(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t n;
        if (tok_utf8_classify(u + i, len - i, &n) != 1)
            return i;
        i += n;
    }
    return len;
}

char *tok_utf8_lossy(const char *s, size_t len, size_t *out_len)
{
    const unsigned char *u = (const unsigned char *)s;
    /* each invalid byte grows to at most 3 */
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n;
        int r = tok_utf8_classify(u + i, len - i, &n);
        if (r == 1) {
            memcpy(out + o, s + i, n);
            o += n;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
        }
        i += n;
    }
    out[o] = 0;
    *out_len = o;
    return out;
}
