/* The scale bytes of FP8 key=value rows (formats.h, fmt_kv_row_*) as the
 * attention kernels apply them, after the bit move of e4m3 into f16 that
 * leaves each value times 2^-8. */
#ifndef DSV4_SIMD_KV_FP8_SCALE_H
#define DSV4_SIMD_KV_FP8_SCALE_H

#include <stdint.h>

/* 2^8 times each scale byte's value, from memory (a broadcast load, no
 * shuffle port): 2^(b - 119) up to 246, infinite past it (the kernels'
 * contract stops there), NaN for 0xff, a block of NaNs. */
#define KV_FP8_SCALE(b) ((b) == 255 ? 0x7fc00000u : (b) > 246 ? 0x7f800000u : (uint32_t)((b) + 8) << 23)
#define KV_FP8_S4(b) KV_FP8_SCALE(b), KV_FP8_SCALE((b) + 1), KV_FP8_SCALE((b) + 2), KV_FP8_SCALE((b) + 3)
#define KV_FP8_S16(b) KV_FP8_S4(b), KV_FP8_S4((b) + 4), KV_FP8_S4((b) + 8), KV_FP8_S4((b) + 12)
#define KV_FP8_S64(b) KV_FP8_S16(b), KV_FP8_S16((b) + 16), KV_FP8_S16((b) + 32), KV_FP8_S16((b) + 48)
static const union {
    uint32_t bits[256];
    float x256[256];
} kv_fp8_scale = {{KV_FP8_S64(0), KV_FP8_S64(64), KV_FP8_S64(128), KV_FP8_S64(192)}};

#endif
