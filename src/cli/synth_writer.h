/* Synthetic release-format checkpoints with the real V4 shapes and random
 * values: what `dsv4 synth` writes so speed can be measured without the
 * 150 GB (Flash) / 800 GB (Pro) downloads. Same files as a release: hub-form
 * config.json, model.safetensors.index.json, shards with native tensor names,
 * FP8 e4m3 linears with e8m0 128x128 block scales, FP4 packed experts with
 * e8m0 scales per 32 inputs, BF16 embed/head/norms/compressors/gate, F32 mHC,
 * ape, sinks and biases, I64 hash tables of distinct experts.
 *
 * Values are scaled so every linear roughly keeps the size of its input
 * (weights of rms ~ 1/sqrt(inputs)), which keeps activations finite through
 * any number of layers. The bytes depend only on the spec and the seed:
 * each 1 MiB block of a tensor has its own generator, so the output is the
 * same whatever the thread count. */
#ifndef DSV4_CLI_SYNTH_WRITER_H
#define DSV4_CLI_SYNTH_WRITER_H

#include <stddef.h>
#include <stdint.h>

#define SYNTH_MAX_LAYERS 128

typedef struct {
    const char *shape;              /* "flash", "pro", or "tiny" (small dims, for tests) */
    int n_layers;
    int kinds[SYNTH_MAX_LAYERS];    /* 0 window, 1 CSA (ratio 4), 2 HCA (ratio 128) */
    int n_experts;                  /* 0 = the shape's own count */
    uint64_t seed;
    const char *out_dir;            /* created if missing; existing files of the same names are replaced */
    uint64_t shard_bytes;           /* largest shard; 0 = 4 GB */
    /* Called after each tensor: bytes written so far of total. May be NULL. */
    void (*progress)(void *ctx, const char *tensor, uint64_t done, uint64_t total);
    void *progress_ctx;
} synth_spec;

/* The shape's default layer kinds for n layers (Flash: window, window, then
 * CSA/HCA alternating; Pro: HCA, HCA, then CSA/HCA alternating). -1 if the
 * shape is unknown. */
int synth_default_kinds(const char *shape, int n_layers, int *kinds);

/* Total bytes the checkpoint's shards will take (for a disk-space check). 0 if the spec is invalid. */
uint64_t synth_planned_bytes(const synth_spec *spec);

/* Writes the checkpoint. 0 on success; else -1 with a one-line message. */
int synth_write_checkpoint(const synth_spec *spec, char *msg, size_t msg_len);

#endif
