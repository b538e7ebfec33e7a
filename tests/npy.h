/* Reads float32 NumPy .npy files of 2 dimensions (the fixtures' logits). */
#ifndef DSV4_TEST_NPY_H
#define DSV4_TEST_NPY_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Returns a malloc'd [rows][cols] array or NULL (message on stderr). */
static inline float *npy_read_f32_2d(const char *path, long *rows, long *cols)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "npy: cannot open %s\n", path);
        return NULL;
    }
    unsigned char pre[10];
    float *data = NULL;
    char header[4096];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) || pre[6] != 1)
        goto bad;
    size_t hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
    if (hlen >= sizeof header || fread(header, 1, hlen, f) != hlen)
        goto bad;
    header[hlen] = 0;
    if (!strstr(header, "'descr': '<f4'") || !strstr(header, "'fortran_order': False"))
        goto bad;
    const char *shape = strstr(header, "'shape': (");
    if (!shape || sscanf(shape, "'shape': (%ld, %ld)", rows, cols) != 2 || *rows <= 0 || *cols <= 0)
        goto bad;
    data = malloc(sizeof *data * (size_t)(*rows) * (size_t)(*cols));
    if (!data || fread(data, sizeof *data, (size_t)(*rows * *cols), f) != (size_t)(*rows * *cols)) {
        free(data);
        data = NULL;
        goto bad;
    }
    fclose(f);
    return data;
bad:
    fprintf(stderr, "npy: %s is not a 2-D little-endian float32 .npy file\n", path);
    fclose(f);
    return NULL;
}

#endif
