#include "error.h"

#include <stdarg.h>
#include <stdio.h>

int dsv4_fail(dsv4_error *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}
