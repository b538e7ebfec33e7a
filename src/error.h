/* Errors are values: a failing function fills a dsv4_error and returns -1. */
#ifndef DSV4_ERROR_H
#define DSV4_ERROR_H

#include "dsv4.h"

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int dsv4_fail(dsv4_error *err, const char *fmt, ...);

#endif
