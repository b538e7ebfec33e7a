/* config.json: the hub form and the transformers form give the same config;
 * every validation error names the file and the key. */
#include "synth_model.h"

#include <jansson.h>

#include "config.h"

static char path[512];

/* V4-Flash's hub config.json (spec §1), as DeepSeek ships it. */
static const char *flash_hub =
    "{\"architectures\": [\"DeepseekV4ForCausalLM\"], \"model_type\": \"deepseek_v4\","
    " \"vocab_size\": 129280, \"hidden_size\": 4096, \"moe_intermediate_size\": 2048,"
    " \"num_hidden_layers\": 43, \"num_attention_heads\": 64, \"num_key_value_heads\": 1,"
    " \"n_routed_experts\": 256, \"n_shared_experts\": 1, \"num_experts_per_tok\": 6,"
    " \"max_position_embeddings\": 1048576, \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000,"
    " \"q_lora_rank\": 1024, \"qk_rope_head_dim\": 64, \"head_dim\": 512,"
    " \"sliding_window\": 128, \"compress_rope_theta\": 160000, \"o_lora_rank\": 1024, \"o_groups\": 8,"
    " \"index_n_heads\": 64, \"index_head_dim\": 128, \"index_topk\": 512, \"num_hash_layers\": 3,"
    " \"hc_mult\": 4, \"hc_eps\": 1e-6, \"hc_sinkhorn_iters\": 20, \"swiglu_limit\": 10.0,"
    " \"routed_scaling_factor\": 1.5, \"scoring_func\": \"sqrtsoftplus\", \"topk_method\": \"noaux_tc\","
    " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 16, \"original_max_position_embeddings\": 65536,"
    "   \"beta_fast\": 32, \"beta_slow\": 1},"
    " \"num_nextn_predict_layers\": 1, \"bos_token_id\": 0, \"eos_token_id\": [1, 2],"
    " \"quantization_config\": {\"quant_method\": \"fp8\", \"scale_fmt\": \"ue8m0\", \"weight_block_size\": [128, 128]},"
    " \"expert_dtype\": \"fp4\", \"tie_word_embeddings\": false}";

static int setup(void **state)
{
    if (synth_setup_dir(state))
        return -1;
    snprintf(path, sizeof path, "%s/config.json", synth_dir);
    return 0;
}

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    if (!j) fail_msg("test JSON: %s", je.text);
    return j;
}

/* Flash: [0, 0, (4, 128) x 20, 4, 0]; the last entry is the MTP layer's. */
static json_t *flash_ratios(void)
{
    json_t *a = json_array();
    for (int i = 0; i < 44; i++) json_array_append_new(a, json_integer(i < 2 || i == 43 ? 0 : i % 2 ? 128 : 4));
    return a;
}

static json_t *flash_hub_json(void)
{
    json_t *j = parse(flash_hub);
    json_object_set_new(j, "compress_ratios", flash_ratios());
    return j;
}

/* The transformers 5 form of the same model: what DeepseekV4Config.to_dict()
 * writes (layer_types, compress_rates, mlp_layer_types, nested rope_parameters,
 * partial_rotary_factor; no compress_ratios / num_hash_layers / qk_rope_head_dim). */
static json_t *flash_transformers(void)
{
    json_t *j = flash_hub_json();
    json_t *types = json_array(), *mlp = json_array();
    json_t *ratios = json_object_get(j, "compress_ratios");
    for (int i = 0; i < 43; i++) {
        json_int_t r = json_integer_value(json_array_get(ratios, (size_t)i));
        json_array_append_new(types, json_string(r == 0 ? "sliding_attention" : r == 4 ? "compressed_sparse_attention"
                                                                                      : "heavily_compressed_attention"));
        json_array_append_new(mlp, json_string(i < 3 ? "hash_moe" : "moe"));
    }
    json_object_del(j, "compress_ratios");
    json_object_del(j, "num_hash_layers");
    json_object_del(j, "qk_rope_head_dim");
    json_object_del(j, "rope_scaling");
    json_object_del(j, "rope_theta");
    json_object_del(j, "compress_rope_theta");
    json_object_set_new(j, "layer_types", types);
    json_object_set_new(j, "mlp_layer_types", mlp);
    json_object_set_new(j, "partial_rotary_factor", json_real(0.125));
    json_object_set_new(j, "compress_rates", parse("{\"compressed_sparse_attention\": 4, \"heavily_compressed_attention\": 128}"));
    json_object_set_new(j, "rope_parameters", parse(
        "{\"main\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0, \"partial_rotary_factor\": 0.125},"
        " \"compress\": {\"rope_type\": \"yarn\", \"factor\": 16.0, \"original_max_position_embeddings\": 65536,"
        "  \"beta_fast\": 32.0, \"beta_slow\": 1.0, \"rope_theta\": 160000.0, \"partial_rotary_factor\": 0.125,"
        "  \"attention_factor\": 1.0}}"));
    json_object_set_new(j, "eos_token_id", json_integer(1));
    return j;
}

static int load_json(json_t *j, dsv4_config *c, dsv4_error *err)
{
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(2)), 0);
    json_decref(j);
    memset(err->message, 0, sizeof err->message);
    return config_load(c, path, err);
}

static void check_flash(const dsv4_config *c)
{
    assert_int_equal(c->vocab_size, 129280);
    assert_int_equal(c->dim, 4096);
    assert_int_equal(c->n_layers, 43);
    assert_int_equal(c->n_mtp_layers, 1);
    assert_int_equal(c->n_heads, 64);
    assert_int_equal(c->head_dim, 512);
    assert_int_equal(c->rope_dim, 64);
    assert_int_equal(c->q_lora_rank, 1024);
    assert_int_equal(c->o_groups, 8);
    assert_int_equal(c->o_lora_rank, 1024);
    assert_int_equal(c->window, 128);
    assert_int_equal(c->index_n_heads, 64);
    assert_int_equal(c->index_head_dim, 128);
    assert_int_equal(c->index_topk, 512);
    assert_int_equal(c->n_routed_experts, 256);
    assert_int_equal(c->n_activated_experts, 6);
    assert_int_equal(c->n_shared_experts, 1);
    assert_int_equal(c->moe_inter_dim, 2048);
    assert_int_equal(c->n_hash_layers, 3);
    assert_true(c->route_scale == 1.5f);
    assert_true(c->swiglu_limit == 10.0f);
    assert_int_equal(c->hc_mult, 4);
    assert_int_equal(c->hc_sinkhorn_iters, 20);
    assert_true(c->hc_eps == 1e-6f);
    assert_true(c->norm_eps == 1e-6f);
    assert_true(c->rope_theta == 10000.0f);
    assert_true(c->compress_rope_theta == 160000.0f);
    assert_true(c->yarn_factor == 16.0f);
    assert_int_equal(c->yarn_original_seq_len, 65536);
    assert_true(c->yarn_beta_fast == 32.0f);
    assert_true(c->yarn_beta_slow == 1.0f);
    assert_int_equal(c->max_position, 1048576);
    assert_int_equal(c->bos_id, 0);
    assert_int_equal(c->eos_id, 1);
    /* Layers 0, 1 window; then CSA on even, HCA on odd layers up to 42 (CSA). */
    assert_int_equal(c->kind[0], DSV4_LAYER_WINDOW);
    assert_int_equal(c->kind[1], DSV4_LAYER_WINDOW);
    assert_int_equal(c->compress_ratio[1], 0);
    for (int i = 2; i < 43; i++) {
        assert_int_equal(c->kind[i], i % 2 ? DSV4_LAYER_HCA : DSV4_LAYER_CSA);
        assert_int_equal(c->compress_ratio[i], i % 2 ? 128 : 4);
    }
}

static void test_hub_form(void **state)
{
    (void)state;
    dsv4_config c;
    dsv4_error err;
    if (load_json(flash_hub_json(), &c, &err) != 0) fail_msg("%s", err.message);
    check_flash(&c);
}

static void test_transformers_form(void **state)
{
    (void)state;
    dsv4_config c;
    dsv4_error err;
    if (load_json(flash_transformers(), &c, &err) != 0) fail_msg("%s", err.message);
    check_flash(&c);

    /* A flat rope_parameters holds the compressed layers' YaRN; legacy per-kind rates fold in. */
    json_t *j = flash_transformers();
    json_object_set_new(j, "rope_parameters", parse(
        "{\"rope_type\": \"yarn\", \"factor\": 8, \"original_max_position_embeddings\": 4096, \"rope_theta\": 10000}"));
    json_object_set_new(j, "compress_rope_theta", json_integer(160000));
    json_object_del(j, "compress_rates");
    json_object_set_new(j, "compress_rate_hca", json_integer(16));
    if (load_json(j, &c, &err) != 0) fail_msg("%s", err.message);
    assert_true(c.yarn_factor == 8.0f);
    assert_int_equal(c.yarn_original_seq_len, 4096);
    assert_true(c.yarn_beta_fast == 32.0f && c.yarn_beta_slow == 1.0f);
    assert_true(c.rope_theta == 10000.0f);
    assert_int_equal(c.compress_ratio[3], 16);
    assert_int_equal(c.kind[3], DSV4_LAYER_HCA);
    assert_int_equal(c.compress_ratio[2], 4);
}

static void test_optional_keys(void **state)
{
    (void)state;
    dsv4_config c;
    dsv4_error err;
    /* A window-only model needs no indexer keys, no compress theta, no rope_scaling. */
    json_t *j = flash_hub_json();
    json_object_set_new(j, "num_hidden_layers", json_integer(2));
    json_object_set_new(j, "num_hash_layers", json_integer(0));
    json_object_set_new(j, "compress_ratios", parse("[0, 0]"));
    json_object_del(j, "index_n_heads");
    json_object_del(j, "index_head_dim");
    json_object_del(j, "index_topk");
    json_object_del(j, "compress_rope_theta");
    json_object_del(j, "rope_scaling");
    json_object_del(j, "scoring_func");
    json_object_del(j, "bos_token_id");
    json_object_del(j, "eos_token_id");
    json_object_del(j, "num_nextn_predict_layers");
    if (load_json(j, &c, &err) != 0) fail_msg("%s", err.message);
    assert_int_equal(c.n_layers, 2);
    assert_int_equal(c.index_topk, 0);
    assert_true(c.yarn_factor <= 1.0f);
    assert_int_equal(c.yarn_original_seq_len, 0);
    assert_int_equal(c.bos_id, 0);
    assert_int_equal(c.eos_id, 1);
    assert_int_equal(c.n_mtp_layers, 0);
    assert_int_equal(c.n_hash_layers, 0);

    /* A ratio other than 4 is HCA (the official code's rule); an MTP entry beyond the layers is ignored. */
    j = flash_hub_json();
    json_object_set_new(j, "num_hidden_layers", json_integer(3));
    json_object_set_new(j, "compress_ratios", parse("[8, 4, 2, 0]"));
    if (load_json(j, &c, &err) != 0) fail_msg("%s", err.message);
    assert_int_equal(c.kind[0], DSV4_LAYER_HCA);
    assert_int_equal(c.kind[1], DSV4_LAYER_CSA);
    assert_int_equal(c.kind[2], DSV4_LAYER_HCA);
    assert_int_equal(c.compress_ratio[2], 2);
}

typedef struct {
    const char *key;      /* key to change (NULL: none) */
    const char *value;    /* JSON value; NULL deletes the key */
    const char *expect;   /* substring of the error */
} mutation;

static void run_mutations(const mutation *m, size_t n, int transformers)
{
    for (size_t i = 0; i < n; i++) {
        json_t *j = transformers ? flash_transformers() : flash_hub_json();
        if (m[i].value) json_object_set_new(j, m[i].key, parse(m[i].value));
        else json_object_del(j, m[i].key);
        dsv4_config c;
        dsv4_error err;
        if (load_json(j, &c, &err) != -1) fail_msg("%s=%s: loaded", m[i].key, m[i].value ? m[i].value : "(deleted)");
        assert_null(strchr(err.message, '\n'));
        if (!strstr(err.message, m[i].expect))
            fail_msg("%s=%s: \"%s\" lacks \"%s\"", m[i].key, m[i].value ? m[i].value : "(deleted)", err.message, m[i].expect);
        assert_int_equal(c.n_layers, 0); /* nothing half-filled on failure */
    }
}

static void test_hub_errors(void **state)
{
    (void)state;
    static const mutation m[] = {
        {"hidden_size", NULL, "config.json: key 'hidden_size' is missing (a positive integer)"},
        {"hidden_size", "\"4096\"", "config.json: key 'hidden_size' must be a positive integer"},
        {"hidden_size", "0", "config.json: key 'hidden_size' must be a positive integer"},
        {"hidden_size", "4096.5", "config.json: key 'hidden_size' must be a positive integer"},
        {"vocab_size", "-1", "config.json: key 'vocab_size' must be a positive integer"},
        {"n_shared_experts", "2", "config.json: key 'n_shared_experts' must be 1"},
        {"num_hidden_layers", "300", "config.json: key 'num_hidden_layers' (300) exceeds the engine's limit of 256"},
        {"num_hidden_layers", "45", "config.json: key 'compress_ratios' has 44 entries, fewer than num_hidden_layers (45)"},
        {"compress_ratios", NULL, "config.json: key 'compress_ratios' (or 'layer_types') is missing"},
        {"compress_ratios", "\"0,4\"", "config.json: key 'compress_ratios' must be a list"},
        {"num_hash_layers", NULL, "config.json: key 'num_hash_layers' (or 'mlp_layer_types') is missing"},
        {"num_hash_layers", "44", "config.json: key 'num_hash_layers' must be an integer in [0, num_hidden_layers]"},
        {"scoring_func", "\"softmax\"", "config.json: key 'scoring_func' is 'softmax'; only 'sqrtsoftplus' is supported"},
        {"scoring_func", "7", "config.json: key 'scoring_func' is not a string; only 'sqrtsoftplus' is supported"},
        {"qk_rope_head_dim", "512", "config.json: key 'head_dim' (512) must exceed qk_rope_head_dim (512)"},
        {"qk_rope_head_dim", "63", "config.json: key 'qk_rope_head_dim' (63) must be even"},
        {"qk_rope_head_dim", NULL, "config.json: key 'qk_rope_head_dim' (or 'partial_rotary_factor') is missing"},
        {"o_groups", "7", "config.json: key 'num_attention_heads' (64) must be a multiple of o_groups (7)"},
        {"num_experts_per_tok", "257", "config.json: key 'num_experts_per_tok' (257) exceeds n_routed_experts (256)"},
        {"index_topk", "0", "config.json: key 'index_topk' must be a positive integer"},
        {"index_topk", NULL, "config.json: keys 'index_n_heads', 'index_head_dim' and 'index_topk' are required"},
        {"index_head_dim", "96", "config.json: key 'index_head_dim' (96) must be a power of two"},
        {"index_head_dim", "64", "config.json: key 'index_head_dim' (64) must exceed qk_rope_head_dim (64)"},
        {"rope_theta", NULL, "config.json: key 'rope_theta' is missing"},
        {"rope_theta", "-1", "config.json: key 'rope_theta' must be a positive number"},
        {"compress_rope_theta", NULL, "config.json: key 'compress_rope_theta' is missing"},
        {"rms_norm_eps", "\"1e-6\"", "config.json: key 'rms_norm_eps' must be a positive number"},
        {"swiglu_limit", "-1", "config.json: key 'swiglu_limit' must be a non-negative number"},
        {"hc_sinkhorn_iters", NULL, "config.json: key 'hc_sinkhorn_iters' is missing"},
        {"rope_scaling", "{\"type\": \"linear\", \"factor\": 2}", "config.json: key 'rope_scaling.rope_type' is 'linear'; only 'yarn' is supported"},
        {"rope_scaling", "{\"type\": \"yarn\", \"factor\": 16}", "config.json: key 'rope_scaling.original_max_position_embeddings' must be a positive integer"},
        {"rope_scaling", "{\"type\": \"yarn\", \"factor\": 0, \"original_max_position_embeddings\": 4}", "config.json: key 'rope_scaling.factor' must be a positive number"},
        {"rope_scaling", "[1]", "config.json: key 'rope_scaling' must be an object"},
        {"eos_token_id", "[]", "config.json: key 'eos_token_id' must be a non-negative integer or a list of them"},
        {"eos_token_id", "200000", "config.json: key 'eos_token_id' (200000) is outside the vocabulary (129280)"},
        {"num_key_value_heads", "8", "config.json: key 'num_key_value_heads' must be 1"},
        {"quantization_config", "\"fp8\"", "config.json: key 'quantization_config' must be an object"},
        {"expert_dtype", "4", "config.json: key 'expert_dtype' must be a string"},
    };
    run_mutations(m, sizeof m / sizeof m[0], 0);

    json_t *j = flash_hub_json();
    json_array_set_new(json_object_get(j, "compress_ratios"), 1, json_integer(-4));
    dsv4_config c;
    dsv4_error err;
    assert_int_equal(load_json(j, &c, &err), -1);
    assert_string_equal(err.message, "config.json: key 'compress_ratios' entry 1 must be a non-negative integer");
}

static void test_transformers_errors(void **state)
{
    (void)state;
    static const mutation m[] = {
        {"layer_types", "[\"sliding_attention\", \"full_attention\"]", "config.json: key 'layer_types' has 2 entries, fewer than num_hidden_layers (43)"},
        {"compress_rates", "{\"compressed_sparse_attention\": 0}", "config.json: key 'compress_rates.compressed_sparse_attention' must be a positive integer"},
        {"compress_rates", "[4, 128]", "config.json: key 'compress_rates' must be an object"},
        {"mlp_layer_types", "[\"moe\", \"hash_moe\"]", "config.json: key 'mlp_layer_types' has 2 entries"},
        {"mlp_layer_types", NULL, "config.json: key 'num_hash_layers' (or 'mlp_layer_types') is missing"},
        {"partial_rotary_factor", "0.1", "config.json: key 'partial_rotary_factor' times head_dim (512) is not a whole number"},
        {"rope_parameters", "{\"main\": {\"rope_theta\": 10000}, \"compress\": {\"rope_type\": \"dynamic\", \"rope_theta\": 160000}}",
         "config.json: key 'rope_parameters.compress.rope_type' is 'dynamic'; only 'yarn' is supported"},
        {"rope_parameters", "{\"main\": {\"rope_type\": \"default\"}, \"compress\": {\"rope_type\": \"default\", \"rope_theta\": 160000}}",
         "config.json: key 'rope_theta' is missing"},
        {"rope_parameters", "7", "config.json: key 'rope_parameters' must be an object"},
    };
    run_mutations(m, sizeof m / sizeof m[0], 1);

    /* Per-entry errors need full-length lists. */
    static const struct { int layer; const char *key, *value, *expect; } e[] = {
        {5, "layer_types", "\"full_attention\"", "config.json: key 'layer_types' entry 5 must be one of sliding_attention"},
        {7, "mlp_layer_types", "\"hash_moe\"", "config.json: key 'mlp_layer_types': hash_moe layer 7 follows a moe layer"},
        {7, "mlp_layer_types", "\"dense\"", "config.json: key 'mlp_layer_types' entry 7 must be 'hash_moe' or 'moe'"},
    };
    for (size_t i = 0; i < sizeof e / sizeof e[0]; i++) {
        json_t *j = flash_transformers();
        json_array_set_new(json_object_get(j, e[i].key), (size_t)e[i].layer, parse(e[i].value));
        dsv4_config c;
        dsv4_error err;
        assert_int_equal(load_json(j, &c, &err), -1);
        if (!strstr(err.message, e[i].expect)) fail_msg("\"%s\" lacks \"%s\"", err.message, e[i].expect);
    }

    /* Both spellings present and disagreeing. */
    json_t *j = flash_transformers();
    json_t *r = flash_ratios();
    json_array_set_new(r, 3, json_integer(4));
    json_object_set_new(j, "compress_ratios", r);
    dsv4_config c;
    dsv4_error err;
    assert_int_equal(load_json(j, &c, &err), -1);
    assert_string_equal(err.message, "config.json: key 'compress_ratios' entry 3 (4) disagrees with layer_types entry "
                                     "'heavily_compressed_attention' (rate 128)");
    j = flash_transformers();
    json_object_set_new(j, "num_hash_layers", json_integer(2));
    assert_int_equal(load_json(j, &c, &err), -1);
    assert_string_equal(err.message, "config.json: key 'num_hash_layers' (2) disagrees with mlp_layer_types (3 hash layers)");
}

static void test_file_errors(void **state)
{
    (void)state;
    dsv4_config c;
    dsv4_error err;
    assert_int_equal(synth_write_text(synth_dir, "config.json", "{\n  \"vocab_size\": 64,\n  \"hidden_size\": 64,,\n}\n"), 0);
    assert_int_equal(config_load(&c, path, &err), -1);
    if (strncmp(err.message, "config.json:3:", 14) != 0) fail_msg("%s", err.message);

    assert_int_equal(synth_write_text(synth_dir, "config.json", "[1, 2]"), 0);
    assert_int_equal(config_load(&c, path, &err), -1);
    assert_string_equal(err.message, "config.json: top level must be a JSON object");

    char missing[600];
    snprintf(missing, sizeof missing, "%s/nope.json", synth_dir);
    assert_int_equal(config_load(&c, missing, &err), -1);
    assert_true(strstr(err.message, "cannot read '") && strstr(err.message, "nope.json': No such file or directory"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hub_form, setup, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_transformers_form, setup, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_optional_keys, setup, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_hub_errors, setup, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_transformers_errors, setup, synth_teardown_dir),
        cmocka_unit_test_setup_teardown(test_file_errors, setup, synth_teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
