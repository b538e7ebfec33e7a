/* Resolving the built-in model relative to the executable rather than the
 * current directory, so that `build/dsv4 run` works from anywhere. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "default_model.h"

int cli_default_model(char *buf, size_t len, char *msg, size_t msg_len)
{
    const char *env = getenv("DSV4_MODEL");
    const char *origin;
    if (env && *env) {
        if ((size_t)snprintf(buf, len, "%s", env) >= len) {
            snprintf(msg, msg_len, "DSV4_MODEL is too long");
            return -1;
        }
        origin = "DSV4_MODEL";
    } else {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0) {
            snprintf(msg, msg_len, "no model given (-m DIR) and the executable's directory is unknown; "
                                   "pass -m DIR or set DSV4_MODEL");
            return -1;
        }
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
        if ((size_t)snprintf(buf, len, "%s/../models/%s", exe, CLI_DEFAULT_MODEL_NAME) >= len) {
            snprintf(msg, msg_len, "the built-in model's path is too long");
            return -1;
        }
        origin = "the built-in model";
    }
    char cfg[PATH_MAX + 16];
    struct stat st;
    snprintf(cfg, sizeof cfg, "%s/config.json", buf);
    if (stat(cfg, &st) != 0) {
        snprintf(msg, msg_len, "no model given (-m DIR) and %s is missing: no %s; pass -m DIR or set DSV4_MODEL",
                 origin, cfg);
        return -1;
    }
    return 0;
}
