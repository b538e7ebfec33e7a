#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "error.h"

/* Real headers are a few hundred KB (about 1,500 tensors per shard); anything
 * far larger is a corrupt or hostile length field, not a model. */
#define ST_MAX_HEADER_BYTES (256u << 20)

#define INDEX_FILE "model.safetensors.index.json"
#define SINGLE_FILE "model.safetensors"

typedef struct {
    char *name;
    uint8_t *map;
    size_t size;
} st_file;

struct st_set {
    st_file *files;
    size_t n_files;
    st_tensor *tensors;
    size_t n_tensors, cap_tensors;
};

static const struct {
    const char *name;
    size_t size;
} dtype_info[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1}, [ST_I8] = {"I8", 1},
    [ST_I16] = {"I16", 2}, [ST_U16] = {"U16", 2}, [ST_I32] = {"I32", 4},
    [ST_U32] = {"U32", 4}, [ST_I64] = {"I64", 8}, [ST_U64] = {"U64", 8},
    [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_F32] = {"F32", 4},
    [ST_F64] = {"F64", 8}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
    [ST_F8_E8M0] = {"F8_E8M0", 1},
};

const char *st_dtype_name(st_dtype dt)
{
    return (unsigned)dt < ST_DTYPE_COUNT ? dtype_info[dt].name : "?";
}

size_t st_dtype_size(st_dtype dt)
{
    return (unsigned)dt < ST_DTYPE_COUNT ? dtype_info[dt].size : 0;
}

static int dtype_from_name(const char *s, st_dtype *out)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(s, dtype_info[i].name) == 0) { *out = (st_dtype)i; return 0; }
    return -1;
}

const char *st_shape_str(const st_tensor *t, char *buf, size_t len)
{
    size_t pos = 0;
    if (len == 0) return buf;
    buf[0] = '\0';
    pos += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s%" PRId64, i ? ", " : "", t->shape[i]);
    if (pos < len) snprintf(buf + pos, len - pos, "]");
    return buf;
}

/* transformers' save_pretrained prefixes names with "model." and leaves the
 * names its conversion mapping anchors at the start (^embed\.weight$,
 * ^head\.weight$, ^hc_head_*$) in its own spelling, because with the prefix
 * the anchored reverse patterns no longer match. */
static const char *const name_aliases[][2] = {
    {"embed_tokens.weight", "embed.weight"},
    {"lm_head.weight", "head.weight"},
    {"hc_head.hc_fn", "hc_head_fn"},
    {"hc_head.hc_base", "hc_head_base"},
    {"hc_head.hc_scale", "hc_head_scale"},
};

static const char *native_name(const char *name)
{
    if (strncmp(name, "model.", 6) == 0) name += 6;
    for (size_t i = 0; i < sizeof name_aliases / sizeof name_aliases[0]; i++)
        if (strcmp(name, name_aliases[i][0]) == 0) return name_aliases[i][1];
    return name;
}

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int push_tensor(st_set *s, const st_tensor *t)
{
    if (s->n_tensors == s->cap_tensors) {
        size_t cap = s->cap_tensors ? 2 * s->cap_tensors : 256;
        st_tensor *n = realloc(s->tensors, cap * sizeof *n);
        if (!n) return -1;
        s->tensors = n;
        s->cap_tensors = cap;
    }
    s->tensors[s->n_tensors++] = *t;
    return 0;
}

static int map_file(st_file *f, const char *dir, dsv4_error *err)
{
    char *path = path_join(dir, f->name);
    if (!path) return dsv4_fail(err, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        dsv4_fail(err, "cannot open '%s': %s", path, strerror(e));
        free(path);
        return -1;
    }
    free(path);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return dsv4_fail(err, "%s: not a regular file", f->name);
    }
    f->size = (size_t)st.st_size;
    if (f->size < 8) {
        close(fd);
        return dsv4_fail(err, "%s: file is %zu bytes, too short for a safetensors header", f->name, f->size);
    }
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return dsv4_fail(err, "%s: mmap failed: %s", f->name, strerror(e));
    f->map = m;
    return 0;
}

static int json_nonneg_int(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* One header entry: dtype, shape, data_offsets, all checked against the file. */
static int parse_entry(st_set *s, const st_file *f, const char *key, const json_t *e,
                       uint64_t data_start, uint64_t data_size, dsv4_error *err)
{
    st_tensor t = {0};
    if (!json_is_object(e))
        return dsv4_fail(err, "%s: header entry for tensor '%s' is not an object", f->name, key);
    const json_t *jd = json_object_get(e, "dtype");
    if (!json_is_string(jd))
        return dsv4_fail(err, "%s: tensor '%s' has no string 'dtype'", f->name, key);
    if (dtype_from_name(json_string_value(jd), &t.dtype) != 0)
        return dsv4_fail(err, "%s: tensor '%s' has unknown dtype '%s'", f->name, key, json_string_value(jd));

    const json_t *js = json_object_get(e, "shape");
    if (!json_is_array(js))
        return dsv4_fail(err, "%s: tensor '%s' has no 'shape' array", f->name, key);
    if (json_array_size(js) > ST_MAX_DIMS)
        return dsv4_fail(err, "%s: tensor '%s' has %zu dimensions (at most %d supported)",
                         f->name, key, json_array_size(js), ST_MAX_DIMS);
    t.ndim = (int)json_array_size(js);
    uint64_t nelem = 1;
    int overflow = 0;
    for (int i = 0; i < t.ndim; i++) {
        uint64_t d;
        if (json_nonneg_int(json_array_get(js, (size_t)i), &d) != 0 || d > (uint64_t)INT64_MAX)
            return dsv4_fail(err, "%s: tensor '%s' shape entry %d is not a non-negative integer", f->name, key, i);
        t.shape[i] = (int64_t)d;
        overflow |= __builtin_mul_overflow(nelem, d, &nelem);
    }
    uint64_t nbytes;
    overflow |= __builtin_mul_overflow(nelem, (uint64_t)st_dtype_size(t.dtype), &nbytes);

    const json_t *jo = json_object_get(e, "data_offsets");
    uint64_t begin, end;
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        json_nonneg_int(json_array_get(jo, 0), &begin) != 0 || json_nonneg_int(json_array_get(jo, 1), &end) != 0)
        return dsv4_fail(err, "%s: tensor '%s' needs 'data_offsets' [begin, end] of non-negative integers", f->name, key);
    if (begin > end)
        return dsv4_fail(err, "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64 ") has begin after end",
                         f->name, key, begin, end);
    if (end > data_size)
        return dsv4_fail(err, "%s: tensor '%s' data [%" PRIu64 ", %" PRIu64 ") runs past the data section (%" PRIu64 " bytes)",
                         f->name, key, begin, end, data_size);
    char shape[160];
    st_shape_str(&t, shape, sizeof shape);
    if (overflow)
        return dsv4_fail(err, "%s: tensor '%s' shape %s overflows a 64-bit byte count", f->name, key, shape);
    if (nbytes != end - begin)
        return dsv4_fail(err, "%s: tensor '%s' is %s %s = %" PRIu64 " bytes but data_offsets [%" PRIu64 ", %" PRIu64 ") hold %" PRIu64 " bytes",
                         f->name, key, st_dtype_name(t.dtype), shape, nbytes, begin, end, end - begin);

    t.name = strdup(native_name(key));
    if (!t.name) return dsv4_fail(err, "out of memory");
    t.file = f->name;
    t.offset = data_start + begin;
    t.data = f->map + t.offset;
    t.nbytes = (size_t)nbytes;
    if (push_tensor(s, &t) != 0) {
        free((char *)t.name);
        return dsv4_fail(err, "out of memory");
    }
    return 0;
}

static int parse_header(st_set *s, const st_file *f, dsv4_error *err)
{
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->map[i];
    if (n > f->size - 8)
        return dsv4_fail(err, "%s: header length %" PRIu64 " runs past the end of the file (%zu bytes)", f->name, n, f->size);
    if (n > ST_MAX_HEADER_BYTES)
        return dsv4_fail(err, "%s: header length %" PRIu64 " exceeds the %u-byte limit", f->name, n, ST_MAX_HEADER_BYTES);
    json_error_t je;
    json_t *root = json_loadb((const char *)f->map + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return dsv4_fail(err, "%s: header JSON %d:%d: %s", f->name, je.line, je.column, je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return dsv4_fail(err, "%s: header is not a JSON object", f->name);
    }
    uint64_t data_start = 8 + n, data_size = f->size - data_start;
    const char *key;
    json_t *val;
    int rc = 0;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        if ((rc = parse_entry(s, f, key, val, data_start, data_size, err)) != 0) break;
    }
    json_decref(root);
    return rc;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int cmp_name_tensor(const void *key, const void *t)
{
    return strcmp((const char *)key, ((const st_tensor *)t)->name);
}

static int sort_and_check(st_set *s, dsv4_error *err)
{
    if (s->n_tensors) qsort(s->tensors, s->n_tensors, sizeof *s->tensors, cmp_tensor);
    for (size_t i = 1; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i - 1].name, s->tensors[i].name) == 0)
            return dsv4_fail(err, "tensor '%s' appears twice (in %s and %s)", s->tensors[i].name,
                             s->tensors[i - 1].file, s->tensors[i].file);
    return 0;
}

const st_tensor *st_find(const st_set *s, const char *name)
{
    if (!s || !s->n_tensors) return NULL;
    return bsearch(name, s->tensors, s->n_tensors, sizeof *s->tensors, cmp_name_tensor);
}

size_t st_count(const st_set *s) { return s ? s->n_tensors : 0; }

const st_tensor *st_at(const st_set *s, size_t i) { return s && i < s->n_tensors ? &s->tensors[i] : NULL; }

static int add_file(st_set *s, const char *name)
{
    st_file *n = realloc(s->files, (s->n_files + 1) * sizeof *n);
    if (!n) return -1;
    s->files = n;
    s->files[s->n_files] = (st_file){0};
    if (!(s->files[s->n_files].name = strdup(name))) return -1;
    s->n_files++;
    return 0;
}

static size_t find_file(const st_set *s, const char *name)
{
    for (size_t i = 0; i < s->n_files; i++)
        if (strcmp(s->files[i].name, name) == 0) return i;
    return (size_t)-1;
}

/* A shard name must stay inside the model directory. */
static int shard_name_ok(const char *name)
{
    return name[0] && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static int open_sharded(st_set *s, const char *dir, const char *index_path, dsv4_error *err)
{
    json_error_t je;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return dsv4_fail(err, INDEX_FILE ":%d:%d: %s", je.line, je.column, je.text);
    int rc = -1;
    json_t *map = json_object_get(root, "weight_map");
    const char *key;
    json_t *val;
    if (!json_is_object(map)) {
        dsv4_fail(err, INDEX_FILE ": key 'weight_map' must be an object");
        goto out;
    }
    json_object_foreach(map, key, val) {
        if (!json_is_string(val) || !shard_name_ok(json_string_value(val))) {
            dsv4_fail(err, INDEX_FILE ": weight_map entry '%s' must name a file in the model directory", key);
            goto out;
        }
        if (find_file(s, json_string_value(val)) == (size_t)-1 && add_file(s, json_string_value(val)) != 0) {
            dsv4_fail(err, "out of memory");
            goto out;
        }
    }
    if (s->n_files == 0) {
        dsv4_fail(err, INDEX_FILE ": weight_map is empty");
        goto out;
    }
    for (size_t i = 0; i < s->n_files; i++) {
        if (map_file(&s->files[i], dir, err) != 0) {
            char inner[sizeof err->message];
            snprintf(inner, sizeof inner, "%s", err->message);
            dsv4_fail(err, "shard '%s' named in " INDEX_FILE ": %s", s->files[i].name, inner);
            goto out;
        }
        if (parse_header(s, &s->files[i], err) != 0) goto out;
    }
    if (sort_and_check(s, err) != 0) goto out;
    json_object_foreach(map, key, val) {
        const st_tensor *t = st_find(s, native_name(key));
        if (!t || strcmp(t->file, json_string_value(val)) != 0) {
            dsv4_fail(err, "%s: tensor '%s' named in " INDEX_FILE " is missing", json_string_value(val), key);
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int st_open(st_set **out, const char *dir, dsv4_error *err)
{
    *out = NULL;
    struct stat st;
    if (stat(dir, &st) != 0) return dsv4_fail(err, "cannot open model directory '%s': %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return dsv4_fail(err, "cannot open model directory '%s': %s", dir, strerror(ENOTDIR));
    st_set *s = calloc(1, sizeof *s);
    if (!s) return dsv4_fail(err, "out of memory");
    char *index_path = path_join(dir, INDEX_FILE);
    int rc;
    if (!index_path) {
        rc = dsv4_fail(err, "out of memory");
    } else if (access(index_path, F_OK) == 0) {
        rc = open_sharded(s, dir, index_path, err);
    } else if (add_file(s, SINGLE_FILE) != 0) {
        rc = dsv4_fail(err, "out of memory");
    } else {
        char *single = path_join(dir, SINGLE_FILE);
        int absent = single && access(single, F_OK) != 0 && errno == ENOENT;
        free(single);
        if (absent)
            rc = dsv4_fail(err, "model directory '%s' has neither " SINGLE_FILE " nor " INDEX_FILE, dir);
        else
            rc = map_file(&s->files[0], dir, err);
        if (rc == 0) rc = parse_header(s, &s->files[0], err);
        if (rc == 0) rc = sort_and_check(s, err);
    }
    free(index_path);
    if (rc != 0) {
        st_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void st_close(st_set *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_tensors; i++) free((char *)s->tensors[i].name);
    free(s->tensors);
    for (size_t i = 0; i < s->n_files; i++) {
        if (s->files[i].map) munmap(s->files[i].map, s->files[i].size);
        free(s->files[i].name);
    }
    free(s->files);
    free(s);
}
