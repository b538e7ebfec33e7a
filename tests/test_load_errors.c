/* dsv4_engine_open on synthetic model directories: the valid ones open and
 * bind what the file holds; every corruption gives -1 and one line naming
 * the file, tensor or key. */
#include "synth_model.h"

#include "engine.h"
#include "forward.h"
#include "safetensors.h"


static dsv4_engine *open_ok(const synth_opts *o)
{
    assert_int_equal(synth_write(synth_dir, o), 0);
    dsv4_options opt;
    dsv4_options_default(&opt);
    dsv4_engine *e = NULL;
    dsv4_error err;
    if (dsv4_engine_open(&e, synth_dir, &opt, &err) != 0) fail_msg("open failed: %s", err.message);
    return e;
}

static float bf16_at(const st_tensor *t, size_t i)
{
    uint16_t h;
    memcpy(&h, (const uint8_t *)t->data + 2 * i, 2);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_valid_model_binds(void **state)
{
    (void)state;
    synth_opts o;
    synth_defaults(&o);
    dsv4_engine *e = open_ok(&o);
    assert_int_equal(dsv4_engine_vocab_size(e), 64);
    assert_int_equal(dsv4_engine_bos_id(e), 0);
    assert_int_equal(dsv4_engine_eos_id(e), 1);
    char want[256], got[256];
    snprintf(want, sizeof want, "6 layers (W C H C H W), dim 64, 4 heads, 8 experts top-2, linear FP8, experts FP4, isa %s",
             dsv4_engine_isa(e));
    dsv4_engine_describe(e, got, sizeof got);
    assert_string_equal(got, want);

    const dsv4_weights *w = &e->w;
    const st_set *st = e->files;
    /* Matrices point into the file; FP8 carries its scale, FP4 its per-32 scale. */
    const dsv4_linear *wq_b = &w->layers[1].wq_b;
    assert_int_equal(wq_b->fmt, DSV4_WF_FP8);
    assert_int_equal(wq_b->rows, 4 * 32);
    assert_int_equal(wq_b->cols, 32);
    assert_ptr_equal(wq_b->data, st_find(st, "layers.1.attn.wq_b.weight")->data);
    assert_ptr_equal(wq_b->scale, st_find(st, "layers.1.attn.wq_b.scale")->data);
    const dsv4_linear *w2 = &w->layers[4].experts[7].w2;
    assert_int_equal(w2->fmt, DSV4_WF_FP4);
    assert_int_equal(w2->rows, 64);
    assert_int_equal(w2->cols, 32);
    assert_ptr_equal(w2->scale, st_find(st, "layers.4.ffn.experts.7.w2.scale")->data);
    assert_int_equal(w->layers[4].shared.w2.fmt, DSV4_WF_FP8);
    assert_int_equal(w->layers[0].wo_a.rows, 2 * 16);
    assert_int_equal(w->layers[0].wo_a.cols, 4 * 32 / 2);
    assert_int_equal(w->embed.fmt, DSV4_WF_BF16);

    /* Compressors per layer kind: CSA overlaps (2d) and has an indexer; HCA does not. */
    assert_int_equal(w->layers[1].compressor.overlap, 1);
    assert_int_equal(w->layers[1].compressor.ratio, 4);
    assert_int_equal(w->layers[1].compressor.out_dim, 32);
    assert_int_equal(w->layers[1].compressor.wkv.rows, 64);
    assert_int_equal(w->layers[1].indexer.compressor.out_dim, 16);
    assert_int_equal(w->layers[1].indexer.compressor.wgate.rows, 32);
    assert_int_equal(w->layers[1].indexer.wq_b.rows, 2 * 16);
    assert_int_equal(w->layers[2].compressor.overlap, 0);
    assert_int_equal(w->layers[2].compressor.ratio, 8);
    assert_int_equal(w->layers[2].compressor.wkv.rows, 32);
    assert_int_equal(w->layers[2].indexer.wq_b.fmt, DSV4_WF_NONE);
    assert_int_equal(w->layers[0].compressor.wkv.fmt, DSV4_WF_NONE);
    assert_null(w->layers[0].compressor.ape);

    /* Hash layer 0 has tid2eid (copied from I64) and no bias; the others a bias. */
    const st_tensor *tid = st_find(st, "layers.0.ffn.gate.tid2eid");
    assert_non_null(w->layers[0].tid2eid);
    assert_null(w->layers[0].gate_bias);
    for (size_t i = 0; i < 64 * 2; i++) {
        int64_t v;
        memcpy(&v, (const uint8_t *)tid->data + 8 * i, 8);
        assert_int_equal(w->layers[0].tid2eid[i], v);
    }
    assert_null(w->layers[1].tid2eid);
    assert_non_null(w->layers[1].gate_bias);

    /* Small vectors are converted to float: BF16 norms and F32 ape. */
    const st_tensor *norm = st_find(st, "layers.3.attn_norm.weight");
    for (size_t i = 0; i < 64; i++) assert_true(w->layers[3].attn_norm[i] == bf16_at(norm, i));
    const st_tensor *ape = st_find(st, "layers.3.attn.compressor.ape");
    for (size_t i = 0; i < 4 * 64; i++) {
        float v;
        memcpy(&v, (const uint8_t *)ape->data + 4 * i, 4);
        assert_true(w->layers[3].compressor.ape[i] == v);
    }
    const st_tensor *hcs = st_find(st, "hc_head_scale");
    float v;
    memcpy(&v, hcs->data, 4);
    assert_true(w->hc_head_scale[0] == v);
    dsv4_engine_close(e);
}

static void test_other_valid_layouts(void **state)
{
    (void)state;
    char got[256];
    synth_opts o;

    synth_defaults(&o);
    o.linear_fp8 = 0;
    o.expert_fp4 = 0;
    dsv4_engine *e = open_ok(&o);
    dsv4_engine_describe(e, got, sizeof got);
    assert_non_null(strstr(got, "linear BF16, experts BF16"));
    assert_null(e->w.layers[2].wq_a.scale);
    dsv4_engine_close(e);

    synth_defaults(&o);
    o.transformers_names = 1;
    o.extra_tensor = "layers.0.attn.something_new";
    e = open_ok(&o);
    assert_int_equal(e->w.embed.rows, 64);
    dsv4_engine_close(e);

    synth_defaults(&o);
    o.shards = 2;
    e = open_ok(&o);
    dsv4_engine_close(e);

    /* Two hash layers, FP8 experts, a window-only model. */
    synth_defaults(&o);
    o.n_layers = 3;
    o.ratios[0] = o.ratios[1] = o.ratios[2] = o.ratios[3] = 0;
    o.n_hash_layers = 2;
    o.expert_fp4 = 0;
    e = open_ok(&o);
    dsv4_engine_describe(e, got, sizeof got);
    assert_non_null(strstr(got, "3 layers (W W W)"));
    assert_non_null(e->w.layers[1].tid2eid);
    assert_int_equal(e->w.layers[1].experts[0].w1.fmt, DSV4_WF_FP8);
    dsv4_engine_close(e);
}

typedef struct {
    const char *what;
    void (*corrupt)(synth_opts *o);
    const char *expect[3];
} corruption;

static void c_drop_scale(synth_opts *o) { o->drop_tensor = "layers.1.attn.wq_b.scale"; }
static void c_drop_tid2eid(synth_opts *o) { o->drop_tensor = "layers.0.ffn.gate.tid2eid"; }
static void c_drop_bias(synth_opts *o) { o->drop_tensor = "layers.5.ffn.gate.bias"; }
static void c_drop_ape(synth_opts *o) { o->drop_tensor = "layers.2.attn.compressor.ape"; }
static void c_drop_index_norm(synth_opts *o) { o->drop_tensor = "layers.3.attn.indexer.compressor.norm.weight"; }
static void c_drop_expert(synth_opts *o) { o->drop_tensor = "layers.4.ffn.experts.6.w3.weight"; }
static void c_drop_shared(synth_opts *o) { o->drop_tensor = "layers.4.ffn.shared_experts.w2.weight"; }
static void c_drop_head(synth_opts *o) { o->drop_tensor = "hc_head_base"; }
static void c_retype_linear(synth_opts *o) { o->retype_tensor = "layers.3.attn.wq_b.weight"; o->retype_dtype = "F16"; }
static void c_retype_scale(synth_opts *o) { o->retype_tensor = "layers.3.attn.wq_b.scale"; o->retype_dtype = "F32"; }
static void c_retype_i8(synth_opts *o) { o->retype_tensor = "layers.2.attn.wkv.weight"; o->retype_dtype = "I8"; }
static void c_retype_norm(synth_opts *o) { o->retype_tensor = "layers.2.attn.q_norm.weight"; o->retype_dtype = "I32"; }
static void c_retype_tid(synth_opts *o) { o->retype_tensor = "layers.0.ffn.gate.tid2eid"; o->retype_dtype = "F32"; }
static void c_reshape_linear(synth_opts *o)
{
    o->reshape_tensor = "layers.3.attn.wq_b.weight";
    o->reshape_ndim = 2; o->reshape[0] = 64; o->reshape[1] = 32;
}
static void c_reshape_fp4(synth_opts *o)
{
    o->reshape_tensor = "layers.1.ffn.experts.0.w1.weight";
    o->reshape_ndim = 2; o->reshape[0] = 32; o->reshape[1] = 64; /* unpacked */
}
static void c_reshape_fp4_scale(synth_opts *o)
{
    o->reshape_tensor = "layers.1.ffn.experts.0.w1.scale";
    o->reshape_ndim = 2; o->reshape[0] = 1; o->reshape[1] = 1;
}
static void c_reshape_ape(synth_opts *o)
{
    o->reshape_tensor = "layers.2.attn.compressor.ape";
    o->reshape_ndim = 2; o->reshape[0] = 4; o->reshape[1] = 32;
}
static void c_reshape_vec(synth_opts *o)
{
    o->reshape_tensor = "layers.0.attn.attn_sink";
    o->reshape_ndim = 2; o->reshape[0] = 1; o->reshape[1] = 4;
}
static void c_bad_tid(synth_opts *o) { o->tid2eid_bad = "layers.0.ffn.gate.tid2eid"; }
static void c_truncate(synth_opts *o) { o->truncate_bytes = 100; }
static void c_overrun(synth_opts *o) { o->overrun_tensor = "layers.3.attn.wkv.weight"; }
static void c_lost_shard(synth_opts *o) { o->shards = 2; o->delete_shard = 1; }
static void c_bad_json(synth_opts *o) { o->malformed_config = 1; }
static void c_bad_key(synth_opts *o) { o->config_override = "{\"vocab_size\": 64, \"hidden_size\": \"64\"}"; }
static void c_odd_inter(synth_opts *o) { o->inter = 48; } /* w2 has 48 inputs: not FP4-packable per 32 */

static const corruption corruptions[] = {
    {"missing FP8 scale", c_drop_scale, {"tensor 'layers.1.attn.wq_b.scale' is missing"}},
    {"missing tid2eid", c_drop_tid2eid, {"tensor 'layers.0.ffn.gate.tid2eid' is missing"}},
    {"missing gate bias", c_drop_bias, {"tensor 'layers.5.ffn.gate.bias' is missing"}},
    {"missing ape", c_drop_ape, {"tensor 'layers.2.attn.compressor.ape' is missing"}},
    {"missing indexer norm", c_drop_index_norm, {"tensor 'layers.3.attn.indexer.compressor.norm.weight' is missing"}},
    {"missing expert", c_drop_expert, {"tensor 'layers.4.ffn.experts.6.w3.weight' is missing"}},
    {"missing shared expert", c_drop_shared, {"tensor 'layers.4.ffn.shared_experts.w2.weight' is missing"}},
    {"missing hc_head_base", c_drop_head, {"tensor 'hc_head_base' is missing"}},
    {"F16 linear", c_retype_linear, {"layers.3.attn.wq_b.weight: dtype F16 is not supported for a linear weight"}},
    {"F32 scale", c_retype_scale, {"layers.3.attn.wq_b.scale: dtype F32 is not supported for a block scale"}},
    {"FP4 outside experts", c_retype_i8, {"layers.2.attn.wkv.weight: dtype I8 is not supported for a linear weight"}},
    {"I32 norm", c_retype_norm, {"layers.2.attn.q_norm.weight: dtype I32 is not supported"}},
    {"F32 tid2eid", c_retype_tid, {"layers.0.ffn.gate.tid2eid: dtype F32 is not supported"}},
    {"linear shape", c_reshape_linear, {"layers.3.attn.wq_b.weight: expected shape [128, 32], found [64, 32]"}},
    {"FP4 shape", c_reshape_fp4, {"layers.1.ffn.experts.0.w1.weight: expected shape [32, 32], found [32, 64]"}},
    {"FP4 scale shape", c_reshape_fp4_scale, {"layers.1.ffn.experts.0.w1.scale: expected shape [32, 2], found [1, 1]"}},
    {"ape shape", c_reshape_ape, {"layers.2.attn.compressor.ape: expected shape [8, 32], found [4, 32]"}},
    {"vector rank", c_reshape_vec, {"layers.0.attn.attn_sink: expected shape [4], found [1, 4]"}},
    {"tid2eid range", c_bad_tid, {"layers.0.ffn.gate.tid2eid: entry [63, 1] = 11 is not an expert in [0, 8)"}},
    {"truncated file", c_truncate, {"model.safetensors: tensor '", "runs past the data section"}},
    {"offsets past the file", c_overrun, {"model.safetensors: tensor 'layers.3.attn.wkv.weight' data [", "runs past the data section"}},
    {"lost shard", c_lost_shard, {"model-00001-of-00002.safetensors", "No such file or directory"}},
    {"malformed config", c_bad_json, {"config.json:3:"}},
    {"config key type", c_bad_key, {"config.json: key 'hidden_size' must be a positive integer"}},
    {"FP4 with odd width", c_odd_inter, {"layers.0.ffn.experts.0.w2.weight: FP4 weights need a multiple of 32 input columns"}},
};

static void test_corruptions(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof corruptions / sizeof corruptions[0]; i++) {
        const corruption *c = &corruptions[i];
        synth_opts o;
        synth_defaults(&o);
        c->corrupt(&o);
        synth_rmdir(synth_dir);
        assert_int_equal(mkdir(synth_dir, 0700), 0);
        assert_int_equal(synth_write(synth_dir, &o), 0);
        dsv4_options opt;
        dsv4_options_default(&opt);
        dsv4_engine *e = (dsv4_engine *)1;
        dsv4_error err;
        memset(err.message, 0, sizeof err.message);
        if (dsv4_engine_open(&e, synth_dir, &opt, &err) != -1) fail_msg("%s: opened", c->what);
        assert_null(e);
        if (strchr(err.message, '\n')) fail_msg("%s: multi-line message \"%s\"", c->what, err.message);
        for (int k = 0; k < 3 && c->expect[k]; k++)
            if (!strstr(err.message, c->expect[k]))
                fail_msg("%s: \"%s\" lacks \"%s\"", c->what, err.message, c->expect[k]);
    }
}

static void test_open_errors(void **state)
{
    (void)state;
    dsv4_options opt;
    dsv4_options_default(&opt);
    assert_int_equal(opt.n_threads, 0);
    assert_int_equal(opt.numerics, DSV4_NUMERICS_RELEASE);
    assert_null(opt.isa);
    dsv4_engine *e;
    dsv4_error err;
    assert_int_equal(dsv4_engine_open(&e, "/nonexistent/dsv4", &opt, &err), -1);
    assert_string_equal(err.message, "cannot open model directory '/nonexistent/dsv4': No such file or directory");

    /* An empty directory: config.json is read first. */
    assert_int_equal(dsv4_engine_open(&e, synth_dir, &opt, &err), -1);
    assert_non_null(strstr(err.message, "config.json': No such file or directory"));

    synth_opts o;
    synth_defaults(&o);
    assert_int_equal(synth_write(synth_dir, &o), 0);
    opt.isa = "sparc";
    assert_int_equal(dsv4_engine_open(&e, synth_dir, &opt, &err), -1);
    assert_string_equal(err.message, "unknown or unsupported ISA 'sparc'");

    opt.isa = "scalar";
    opt.n_threads = 1;
    opt.prefill_chunk = -1;
    assert_int_equal(dsv4_engine_open(&e, synth_dir, &opt, &err), -1);
    assert_string_equal(err.message, "prefill chunk -1: need 1 to 65536 tokens (0: the default, 512)");
    opt.prefill_chunk = DSV4_PREFILL_CHUNK_MAX + 1;
    assert_int_equal(dsv4_engine_open(&e, synth_dir, &opt, &err), -1);

    opt.prefill_chunk = 0;
    if (dsv4_engine_open(&e, synth_dir, &opt, &err) != 0) fail_msg("%s", err.message);
    assert_string_equal(dsv4_engine_isa(e), "scalar");
    assert_int_equal(e->n_threads, 1);
    assert_int_equal(e->opt.prefill_chunk, DSV4_PREFILL_CHUNK_DEFAULT);
    dsv4_engine_close(e);
}

/* A prompt longer than the forward buffers: the session grows them to the
 * engine's prefill chunk (or the prompt, if shorter) and no further, and
 * runs passes of at most that many tokens (each pass reads the dense
 * weights once more: *weight_bytes tells the passes apart). */
static int capacity_after_feed(int prefill_chunk, int n, double *weight_bytes)
{
    synth_opts o;
    synth_defaults(&o);
    assert_int_equal(synth_write(synth_dir, &o), 0);
    dsv4_options opt;
    dsv4_options_default(&opt);
    opt.n_threads = 1;
    opt.numerics = DSV4_NUMERICS_PLAIN; /* this small model's indexer is too narrow for the FP4 one */
    opt.prefill_chunk = prefill_chunk;
    dsv4_engine *e;
    dsv4_session *s;
    dsv4_error err;
    if (dsv4_engine_open(&e, synth_dir, &opt, &err) != 0) fail_msg("%s", err.message);
    if (dsv4_session_new(&s, e, n, &err) != 0) fail_msg("%s", err.message);
    int32_t *tokens = malloc(sizeof *tokens * (size_t)n);
    for (int i = 0; i < n; i++)
        tokens[i] = (int32_t)(i % dsv4_engine_vocab_size(e));
    if (dsv4_session_feed(s, tokens, n, NULL, 0, &err) != 0) fail_msg("%s", err.message);
    assert_int_equal(dsv4_session_position(s), n);
    int cap = forward_state_capacity(s->state);
    dsv4_stats st;
    dsv4_session_stats(s, &st);
    *weight_bytes = st.weight_bytes;
    free(tokens);
    dsv4_session_free(s);
    dsv4_engine_close(e);
    return cap;
}

static void test_prefill_chunk(void **state)
{
    (void)state;
    double one_pass, two_passes, small_passes, ignored;
    assert_int_equal(capacity_after_feed(0, 150, &one_pass), 150);
    assert_int_equal(capacity_after_feed(100, 150, &two_passes), 100);
    assert_int_equal(capacity_after_feed(100, 90, &ignored), 90);
    /* never below what a state starts with, but passes of 5 all the same */
    assert_int_equal(capacity_after_feed(5, 150, &small_passes), FORWARD_CHUNK);
    assert_true(one_pass < two_passes);
    assert_true(small_passes > 10 * one_pass); /* 30 passes, not the 3 a 64-token buffer holds */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_model_binds, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_other_valid_layouts, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_corruptions, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_prefill_chunk, synth_setup_dir, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_open_errors, synth_setup_dir, synth_teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
