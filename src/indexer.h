/* Lightning indexer of CSA layers: scores every visible compressed entry for
 * one query and keeps the top k. The indexer's keys come from its own
 * compressor (compressor.h, rotate = 1); this file holds the query side, the
 * scoring and the selection. */
#ifndef DSV4_INDEXER_H
#define DSV4_INDEXER_H

#include "../simd/kernels.h"

/* Query heads q [n_heads][dim] (indexer.wq_b·qr) at one position: RoPE on the
 * last rope_dim dims of each head; in release numerics bf16 rounding after
 * RoPE, Hadamard rotation, bf16, FP4 simulation (block 32, k's
 * fp4_quant_sim). In place. */
void indexer_prepare_query(const dsv4_kernels *k, float *q, int n_heads, int dim, int rope_dim,
                           const float *cos_t, const float *sin_t, int release);

/* Head weights w [n_heads] (weights_proj·x) times 1/sqrt(dim·n_heads), which
 * folds the oracle's softmax_scale (dim^-1/2, on the scores) and
 * weights_scaling (n_heads^-1/2) into the weights. Release: bf16 before and
 * after the scaling, as the reference's bf16 linear and product. In place. */
void indexer_scale_weights(float *w, int n_heads, int dim, int release);

/* scores[s] = sum_h w[h] * ReLU(q[h]·keys[s]) for s < n_keys, split over the
 * OpenMP team by keys (call from outside a parallel region). Release: each
 * head's ReLU'd dot and its product with w[h] rounded to bf16, the head sum
 * accumulated in fp32 and rounded to bf16, as the reference's bf16 einsum. */
void indexer_scores(const dsv4_kernels *k, float *scores, const float *q, const float *w,
                    const float *keys, int n_keys, int n_heads, int dim, int release);

/* Release numerics over real FP4 keys: the same scores as indexer_scores
 * with release = 1 up to the summation order of each dot (here exact
 * integer dots per 32-block, fused-multiply-added in block order; see
 * kernels.h index_scores_fp4), with the operands as the reference's FP4
 * einsum holds them. q_codes [n_heads][dim], q_scales [n_heads][dim/32]:
 * the query after indexer_prepare_query, packed by fmt_index_query_pack;
 * keys, key_scales: n_keys keys in the grouped layout of kernels.h
 * (fmt_index_key_pack). Split over the OpenMP team by keys, like
 * indexer_scores: each key's score is computed whole by one thread. */
void indexer_scores_fp4(const dsv4_kernels *k, float *scores, const int8_t *q_codes, const float *q_scales,
                        const float *w, const uint8_t *keys, const uint8_t *key_scales, int n_keys, int n_heads,
                        int dim);

/* The min(topk, n_keys) best entries, ties to the lower index, ascending
 * index order; returns how many. scratch holds n_keys ints. */
int indexer_select(const dsv4_kernels *k, int *sel, const float *scores, int n_keys, int topk, int *scratch);

#endif
