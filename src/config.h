/* The model's hyper-parameters, read from config.json (hub form or the form
 * transformers 5 writes). Nothing about the model is a compile-time constant. */
#ifndef DSV4_CONFIG_H
#define DSV4_CONFIG_H

#include "dsv4.h"

#define DSV4_MAX_LAYERS 256

typedef enum {
    DSV4_LAYER_WINDOW = 0, /* sliding window only */
    DSV4_LAYER_CSA = 1,    /* overlapping compressor + lightning indexer + top-k */
    DSV4_LAYER_HCA = 2     /* non-overlapping compressor, dense over all entries */
} dsv4_layer_kind;

typedef struct {
    int vocab_size;
    int dim;                 /* hidden_size */
    int n_layers;            /* main layers (num_hidden_layers) */
    int n_mtp_layers;        /* num_nextn_predict_layers; not run by the engine yet */
    int n_heads;
    int head_dim;            /* 512: nope part + rope part; K = V, one shared head */
    int rope_dim;            /* qk_rope_head_dim: the last rope_dim dims carry RoPE */
    int q_lora_rank;
    int o_groups, o_lora_rank;
    int window;              /* sliding_window */
    int index_n_heads, index_head_dim, index_topk;
    int n_routed_experts, n_activated_experts, n_shared_experts;
    int moe_inter_dim;
    int n_hash_layers;       /* layers [0, n_hash_layers) route by tid2eid */
    float route_scale;       /* routed_scaling_factor */
    float swiglu_limit;      /* 0 = no clamp */
    int hc_mult, hc_sinkhorn_iters;
    float hc_eps, norm_eps;
    float rope_theta;            /* window-only layers */
    float compress_rope_theta;   /* compressed layers, with YaRN */
    float yarn_factor;           /* <= 1: no YaRN */
    int yarn_original_seq_len;
    float yarn_beta_fast, yarn_beta_slow;
    int max_position;
    int bos_id, eos_id;
    int compress_ratio[DSV4_MAX_LAYERS];  /* per main layer; 0 for window-only layers */
    dsv4_layer_kind kind[DSV4_MAX_LAYERS]; /* from layer_types, or ratio 4 => CSA, other ratios => HCA */
} dsv4_config;

/* Reads dir/config.json. Errors name the file and the key. */
int config_load(dsv4_config *cfg, const char *path, dsv4_error *err);

#endif
