/* A model directory's safetensors files: model.safetensors, or
 * model.safetensors.index.json plus the shards it names. Each file is
 * mmapped read-only once; every header is validated before any tensor is
 * handed out, because the files come from the internet. */
#ifndef DSV4_SAFETENSORS_H
#define DSV4_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4.h"

typedef enum {
    ST_BOOL = 0,
    ST_U8, ST_I8, ST_I16, ST_U16, ST_I32, ST_U32, ST_I64, ST_U64,
    ST_F16, ST_BF16, ST_F32, ST_F64,
    ST_F8_E4M3, ST_F8_E5M2, ST_F8_E8M0,
    ST_DTYPE_COUNT
} st_dtype;

#define ST_MAX_DIMS 8

typedef struct {
    const char *name;       /* native name (a "model." prefix and transformers aliases resolved) */
    const char *file;       /* file name inside the directory, for messages */
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
    uint64_t offset;        /* byte offset of the data inside its file */
} st_tensor;

typedef struct st_set st_set;

/* Opens dir/model.safetensors.index.json if present, else dir/model.safetensors. */
int st_open(st_set **out, const char *dir, dsv4_error *err);
void st_close(st_set *set);

/* NULL when absent. O(log n). */
const st_tensor *st_find(const st_set *set, const char *name);
size_t st_count(const st_set *set);
const st_tensor *st_at(const st_set *set, size_t i); /* sorted by name */

const char *st_dtype_name(st_dtype dt);
size_t st_dtype_size(st_dtype dt);
/* "[a, b, c]" into buf. */
const char *st_shape_str(const st_tensor *t, char *buf, size_t len);

#endif
