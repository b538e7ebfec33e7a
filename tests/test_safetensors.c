/* safetensors: header parsing, lookup, transformers names, and every kind of
 * corrupt file giving a clear error that names the file, tensor and offsets. */
#include "synth_model.h"

#include <fcntl.h>

#include "safetensors.h"


/* Writes dir/model.safetensors with the given header and data. */
static void write_single(const char *header, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", synth_dir);
    assert_int_equal(synth_write_raw(path, header, strlen(header), data, len), 0);
}

/* Opens synth_dir, expecting failure; returns the message. */
static const char *open_fails(dsv4_error *err)
{
    st_set *s = (st_set *)1;
    memset(err->message, 0, sizeof err->message);
    assert_int_equal(st_open(&s, synth_dir, err), -1);
    assert_null(s);
    assert_true(strlen(err->message) > 0);
    assert_null(strchr(err->message, '\n'));
    return err->message;
}

#define assert_has(msg, sub) do { \
    if (!strstr((msg), (sub))) fail_msg("message \"%s\" lacks \"%s\"", (msg), (sub)); } while (0)

static void test_reads_hand_written_file(void **state)
{
    (void)state;
    uint8_t data[12];
    float a[2] = {1.5f, -2.0f};
    uint16_t b[2] = {0x3f80, 0xc040}; /* bf16 1.0, -3.0 */
    memcpy(data, a, 8);
    memcpy(data + 8, b, 4);
    write_single("{\"__metadata__\":{\"format\":\"pt\"},"
                 "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[8,12]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[12,12]}}   ", data, 12);
    /* A scalar (shape []) is one element: 4 bytes, not the 0 the offsets give. */
    dsv4_error err;
    assert_has(open_fails(&err), "tensor 's' is F32 [] = 4 bytes but data_offsets [12, 12) hold 0 bytes");

    write_single("{\"__metadata__\":{\"format\":\"pt\"},"
                 "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[8,12]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"z\":{\"dtype\":\"U8\",\"shape\":[0,5],\"data_offsets\":[12,12]}}", data, 12);
    st_set *s;
    assert_int_equal(st_open(&s, synth_dir, &err), 0);
    assert_int_equal(st_count(s), 3);
    const st_tensor *ta = st_find(s, "a"), *tb = st_find(s, "b"), *tz = st_find(s, "z");
    assert_non_null(ta);
    assert_non_null(tb);
    assert_non_null(tz);
    assert_null(st_find(s, "c"));
    assert_null(st_find(s, "__metadata__"));
    assert_int_equal(ta->dtype, ST_F32);
    assert_int_equal(ta->ndim, 1);
    assert_int_equal(ta->shape[0], 2);
    assert_int_equal(ta->nbytes, 8);
    float got[2];
    memcpy(got, ta->data, 8);
    assert_true(got[0] == 1.5f && got[1] == -2.0f);
    assert_int_equal(tb->dtype, ST_BF16);
    assert_int_equal(tb->ndim, 2);
    assert_int_equal(tb->shape[1], 2);
    uint16_t gb[2];
    memcpy(gb, tb->data, 4);
    assert_int_equal(gb[0], 0x3f80);
    assert_int_equal(gb[1], 0xc040);
    assert_string_equal(ta->file, "model.safetensors");
    assert_int_equal(tz->nbytes, 0);
    char buf[64];
    assert_string_equal(st_shape_str(tz, buf, sizeof buf), "[0, 5]");
    /* The header JSON is 8 + header bytes in: data offsets are absolute in the file. */
    assert_int_equal(tb->offset, ta->offset + 8);
    st_close(s);
}

static void test_every_dtype_name(void **state)
{
    (void)state;
    static const struct { const char *name; size_t size; st_dtype dt; } dts[] = {
        {"BOOL", 1, ST_BOOL}, {"U8", 1, ST_U8}, {"I8", 1, ST_I8}, {"I16", 2, ST_I16}, {"U16", 2, ST_U16},
        {"I32", 4, ST_I32}, {"U32", 4, ST_U32}, {"I64", 8, ST_I64}, {"U64", 8, ST_U64}, {"F16", 2, ST_F16},
        {"BF16", 2, ST_BF16}, {"F32", 4, ST_F32}, {"F64", 8, ST_F64}, {"F8_E4M3", 1, ST_F8_E4M3},
        {"F8_E5M2", 1, ST_F8_E5M2}, {"F8_E8M0", 1, ST_F8_E8M0},
    };
    for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
        char h[256];
        snprintf(h, sizeof h, "{\"t\":{\"dtype\":\"%s\",\"shape\":[3],\"data_offsets\":[0,%zu]}}", dts[i].name,
                 3 * dts[i].size);
        uint8_t data[24] = {0};
        write_single(h, data, 3 * dts[i].size);
        st_set *s;
        dsv4_error err;
        assert_int_equal(st_open(&s, synth_dir, &err), 0);
        assert_int_equal(st_find(s, "t")->dtype, dts[i].dt);
        assert_string_equal(st_dtype_name(dts[i].dt), dts[i].name);
        assert_int_equal(st_dtype_size(dts[i].dt), dts[i].size);
        st_close(s);
    }
}

static void test_header_errors(void **state)
{
    (void)state;
    dsv4_error err;
    uint8_t data[64] = {0};
    static const struct { const char *header; size_t data_len; const char *expect; } cases[] = {
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,99999]}}", 8,
         "model.safetensors: tensor 'x' data [0, 99999) runs past the data section (8 bytes)"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
         "model.safetensors: tensor 'x' is F32 [3] = 12 bytes but data_offsets [0, 8) hold 8 bytes"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "tensor 'x' data_offsets [8, 0) has begin after end"},
        {"{\"x\":{\"dtype\":\"Q4_K\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'x' has unknown dtype 'Q4_K'"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "tensor 'x' shape entry 0 is not a non-negative integer"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "tensor 'x' shape entry 0"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, "tensor 'x' has 9 dimensions"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,8]}}", 8,
         "tensor 'x' shape [4294967296, 4294967296, 4] overflows"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "tensor 'x' needs 'data_offsets'"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, "tensor 'x' needs 'data_offsets'"},
        {"{\"x\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'x' has no string 'dtype'"},
        {"{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "tensor 'x' has no 'shape' array"},
        {"{\"x\":[1,2]}", 8, "header entry for tensor 'x' is not an object"},
        {"[1,2,3]", 0, "model.safetensors: header is not a JSON object"},
        {"{\"x\":{\"dtype\":\"F32\",\n\"shape\":[2],,}}", 8, "model.safetensors: header JSON 2:"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "duplicate"},
        {"{\"model.x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'x' appears twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_single(cases[i].header, data, cases[i].data_len);
        const char *msg = open_fails(&err);
        if (!strstr(msg, cases[i].expect)) fail_msg("case %zu: \"%s\" lacks \"%s\"", i, msg, cases[i].expect);
    }
}

static void test_length_field_errors(void **state)
{
    (void)state;
    dsv4_error err;
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", synth_dir);

    FILE *f = fopen(path, "wb");
    fwrite("\x05\x00\x00", 1, 3, f);
    fclose(f);
    assert_has(open_fails(&err), "model.safetensors: file is 3 bytes, too short for a safetensors header");

    /* Length field larger than the file. */
    uint8_t raw[24] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    f = fopen(path, "wb");
    fwrite(raw, 1, 10, f);
    fclose(f);
    assert_has(open_fails(&err), "model.safetensors: header length 9223372036854775807 runs past the end of the file (10 bytes)");

    /* A length that fits a (sparse) file but not the sane cap. */
    uint64_t big = 300ull << 20;
    for (int i = 0; i < 8; i++) raw[i] = (uint8_t)(big >> (8 * i));
    f = fopen(path, "wb");
    fwrite(raw, 1, 8, f);
    fclose(f);
    assert_int_equal(truncate(path, (off_t)(big + 64)), 0);
    assert_has(open_fails(&err), "model.safetensors: header length 314572800 exceeds");
}

static void test_directory_errors(void **state)
{
    (void)state;
    dsv4_error err;
    st_set *s;
    assert_int_equal(st_open(&s, "/nonexistent/dsv4-model", &err), -1);
    assert_string_equal(err.message, "cannot open model directory '/nonexistent/dsv4-model': No such file or directory");
    assert_has(open_fails(&err), "has neither model.safetensors nor model.safetensors.index.json");
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", synth_dir);
    FILE *f = fopen(path, "w");
    fclose(f);
    assert_int_equal(st_open(&s, path, &err), -1);
    assert_has(err.message, "Not a directory");
}

static void test_synth_model_lookup(void **state)
{
    (void)state;
    synth_opts o;
    synth_defaults(&o);
    assert_int_equal(synth_write(synth_dir, &o), 0);
    st_set *s;
    dsv4_error err;
    if (st_open(&s, synth_dir, &err) != 0) fail_msg("%s", err.message);
    const st_tensor *t = st_find(s, "layers.1.attn.wq_b.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_F8_E4M3);
    assert_int_equal(t->shape[0], o.n_heads * o.head_dim);
    assert_int_equal(t->shape[1], o.q_lora);
    t = st_find(s, "layers.2.ffn.experts.7.w2.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_I8);
    assert_int_equal(t->shape[0], o.dim);
    assert_int_equal(t->shape[1], o.inter / 2);
    t = st_find(s, "layers.0.ffn.gate.tid2eid");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_I64);
    assert_null(st_find(s, "layers.6.attn_norm.weight"));
    for (size_t i = 1; i < st_count(s); i++)
        assert_true(strcmp(st_at(s, i - 1)->name, st_at(s, i)->name) < 0);
    /* Every tensor is inside the file and findable by its own name. */
    for (size_t i = 0; i < st_count(s); i++) assert_ptr_equal(st_find(s, st_at(s, i)->name), st_at(s, i));
    st_close(s);
}

static void test_transformers_names(void **state)
{
    (void)state;
    synth_opts o;
    synth_defaults(&o);
    o.transformers_names = 1;
    assert_int_equal(synth_write(synth_dir, &o), 0);
    st_set *s;
    dsv4_error err;
    if (st_open(&s, synth_dir, &err) != 0) fail_msg("%s", err.message);
    static const char *const natives[] = {"embed.weight", "head.weight", "hc_head_fn", "hc_head_base",
                                          "hc_head_scale", "norm.weight", "layers.0.attn.wq_a.weight",
                                          "layers.5.ffn.shared_experts.w2.scale"};
    for (size_t i = 0; i < sizeof natives / sizeof natives[0]; i++)
        if (!st_find(s, natives[i])) fail_msg("'%s' not found", natives[i]);
    assert_null(st_find(s, "model.embed_tokens.weight"));
    assert_null(st_find(s, "embed_tokens.weight"));
    assert_null(st_find(s, "model.layers.0.attn.wq_a.weight"));
    st_close(s);
}

static void test_sharded(void **state)
{
    (void)state;
    synth_opts o;
    synth_defaults(&o);
    o.shards = 2;
    assert_int_equal(synth_write(synth_dir, &o), 0);
    st_set *s;
    dsv4_error err;
    if (st_open(&s, synth_dir, &err) != 0) fail_msg("%s", err.message);
    int in1 = 0, in2 = 0;
    for (size_t i = 0; i < st_count(s); i++) {
        in1 += !strcmp(st_at(s, i)->file, "model-00001-of-00002.safetensors");
        in2 += !strcmp(st_at(s, i)->file, "model-00002-of-00002.safetensors");
    }
    assert_true(in1 > 0 && in2 > 0);
    assert_int_equal((size_t)(in1 + in2), st_count(s));
    st_close(s);
}

static void test_sharded_errors(void **state)
{
    (void)state;
    synth_opts o;
    synth_defaults(&o);
    o.shards = 2;
    o.delete_shard = 2;
    assert_int_equal(synth_write(synth_dir, &o), 0);
    dsv4_error err;
    const char *msg = open_fails(&err);
    assert_has(msg, "shard 'model-00002-of-00002.safetensors' named in model.safetensors.index.json");
    assert_has(msg, "No such file or directory");

    /* A tensor the index names but its shard lacks. */
    synth_rmdir(synth_dir);
    assert_int_equal(mkdir(synth_dir, 0700), 0);
    write_single("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "x", 1);
    char path[512], idx[512];
    snprintf(path, sizeof path, "%s/model.safetensors", synth_dir);
    snprintf(idx, sizeof idx, "%s/shard-a.safetensors", synth_dir);
    assert_int_equal(rename(path, idx), 0);
    assert_int_equal(synth_write_text(synth_dir, "model.safetensors.index.json",
                                      "{\"weight_map\": {\"a\": \"shard-a.safetensors\", \"ghost\": \"shard-a.safetensors\"}}"), 0);
    assert_has(open_fails(&err), "shard-a.safetensors: tensor 'ghost' named in model.safetensors.index.json is missing");

    /* The index assigns a tensor to the wrong shard. */
    assert_int_equal(synth_write_text(synth_dir, "model.safetensors.index.json",
                                      "{\"weight_map\": {\"a\": \"shard-b.safetensors\", \"b\": \"shard-a.safetensors\"}}"), 0);
    assert_has(open_fails(&err), "shard 'shard-b.safetensors'");

    assert_int_equal(synth_write_text(synth_dir, "model.safetensors.index.json",
                                      "{\"weight_map\": {\"a\": \"../shard-a.safetensors\"}}"), 0);
    assert_has(open_fails(&err), "model.safetensors.index.json: weight_map entry 'a' must name a file in the model directory");

    assert_int_equal(synth_write_text(synth_dir, "model.safetensors.index.json", "{\"metadata\": {}}"), 0);
    assert_has(open_fails(&err), "model.safetensors.index.json: key 'weight_map' must be an object");

    assert_int_equal(synth_write_text(synth_dir, "model.safetensors.index.json", "{\"weight_map\": {\n\"a\": }"), 0);
    assert_has(open_fails(&err), "model.safetensors.index.json:2:");
}

static void test_truncated_and_overrun(void **state)
{
    (void)state;
    synth_opts o;
    synth_defaults(&o);
    o.truncate_bytes = 100;
    assert_int_equal(synth_write(synth_dir, &o), 0);
    dsv4_error err;
    const char *msg = open_fails(&err);
    assert_has(msg, "model.safetensors: tensor '");
    assert_has(msg, "runs past the data section");

    synth_defaults(&o);
    o.overrun_tensor = "layers.3.attn.wkv.weight";
    assert_int_equal(synth_write(synth_dir, &o), 0);
    msg = open_fails(&err);
    assert_has(msg, "model.safetensors: tensor 'layers.3.attn.wkv.weight' data [");
    assert_has(msg, "runs past the data section");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_hand_written_file, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_every_dtype_name, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_header_errors, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_length_field_errors, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_directory_errors, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_synth_model_lookup, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_transformers_names, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_sharded, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_sharded_errors, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_truncated_and_overrun, synth_setup_dir, synth_teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
