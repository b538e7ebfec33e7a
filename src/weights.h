/* The model's weights bound to the structs the forward pass reads.
 * Matrices point into the mmapped shards (dsv4_linear); small vectors
 * (norms, biases, mHC parameters, sinks, ape) are converted once to float
 * and owned here. The forward pass never sees a file or a tensor name. */
#ifndef DSV4_WEIGHTS_H
#define DSV4_WEIGHTS_H

#include <stdint.h>

#include "config.h"
#include "linear.h"

/* mHC parameters of one sub-layer: fn [(2+hc)*hc][hc*dim], base [(2+hc)*hc], scale [3]. */
typedef struct {
    float *fn, *base, *scale;
} dsv4_hc_weights;

/* Gated pooling compressor: wkv, wgate [c*d][dim] (c = 2 when overlapping, CSA),
 * ape [ratio][c*d], norm [d]. */
typedef struct {
    dsv4_linear wkv, wgate;
    float *ape, *norm;
    int ratio, out_dim, overlap;
} dsv4_compressor_weights;

typedef struct {
    dsv4_linear wq_b;          /* [index_n_heads*index_head_dim][q_lora] */
    dsv4_linear weights_proj;  /* [index_n_heads][dim] */
    dsv4_compressor_weights compressor; /* out_dim = index_head_dim */
} dsv4_indexer_weights;

typedef struct {
    dsv4_linear w1, w2, w3;    /* gate [inter][dim], down [dim][inter], up [inter][dim] */
} dsv4_expert_weights;

typedef struct {
    float *attn_norm, *ffn_norm;          /* [dim] */
    dsv4_hc_weights hc_attn, hc_ffn;

    /* attention */
    dsv4_linear wq_a;                     /* [q_lora][dim] */
    float *q_norm;                        /* [q_lora] */
    dsv4_linear wq_b;                     /* [n_heads*head_dim][q_lora] */
    dsv4_linear wkv;                      /* [head_dim][dim] */
    float *kv_norm;                       /* [head_dim] */
    dsv4_linear wo_a;                     /* [o_groups*o_lora][n_heads*head_dim/o_groups] */
    dsv4_linear wo_b;                     /* [dim][o_groups*o_lora] */
    float *attn_sink;                     /* [n_heads] */
    dsv4_compressor_weights compressor;   /* ratio > 0 layers; out_dim = head_dim */
    dsv4_indexer_weights indexer;         /* CSA layers */

    /* MoE */
    dsv4_linear gate;                     /* [n_routed_experts][dim] */
    float *gate_bias;                     /* [n_routed_experts], non-hash layers */
    int32_t *tid2eid;                     /* [vocab][n_activated], hash layers (copied, range-checked) */
    dsv4_expert_weights *experts;         /* [n_routed_experts] */
    dsv4_expert_weights shared;           /* n_shared_experts == 1; shared inter = moe_inter_dim */
} dsv4_layer_weights;

typedef struct {
    dsv4_linear embed;                    /* [vocab][dim] */
    dsv4_linear head;                     /* [vocab][dim] */
    float *norm;                          /* [dim] */
    float *hc_head_fn, *hc_head_base, *hc_head_scale; /* [hc][hc*dim], [hc], [1] */
    dsv4_layer_weights *layers;           /* [n_layers] */
} dsv4_weights;

#endif
