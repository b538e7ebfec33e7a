/* FP8 (e4m3) weights through VBMI byte tables: a 128-entry table of every
 * code's magnitude as bf16 with the block's e8m0 scale folded in, split into
 * its low and high bytes so that vpermi2b (the 7-bit code indexes a
 * two-register table) looks up 64 codes at a time. avx512_bf16.c and
 * avx512_amx.c (through bf16_decode.h) take the bf16 values; avx512.c takes
 * them as f32 (e4m3x64_f32), the same values its fp8x32 computes.
 *
 * VBMI is not in avx512.c's baseline (Skylake-SP and Cascade Lake lack it),
 * so the two byte permutes are written in asm, which the compiler's target
 * checks do not see: callers run them only where cpuid reports VBMI.
 * Include after AVX-512 F/BW are enabled (command line or pragma). */
#ifndef DSV4_SIMD_E4M3_TABLE_H
#define DSV4_SIMD_E4M3_TABLE_H

#include <immintrin.h>
#include <stdint.h>

/* Block scales s the scaled table holds exactly: each entry is the
 * magnitude x 2^64 minus (S_MAX - s) << 7 from its exponent field, a
 * saturating subtract; from FP8_S_MIN on, even the least subnormal stays a
 * normal number. */
#define FP8_S_MIN 10
#define S_MAX 191

/* Every e4m3 magnitude code c (0..127) x 2^64 as bf16: subnormals (c < 8)
 * are m/8 * 2^-6, normals ((c << 4) + 0x5c00) place exponent and mantissa;
 * 0x7f is NaN. The 2^64 keeps every entry normal before the scale. */
static const uint16_t e4m3_bf16_lut[128] __attribute__((aligned(64))) = {
    0x0000, 0x5b00, 0x5b80, 0x5bc0, 0x5c00, 0x5c20, 0x5c40, 0x5c60,
    0x5c80, 0x5c90, 0x5ca0, 0x5cb0, 0x5cc0, 0x5cd0, 0x5ce0, 0x5cf0,
    0x5d00, 0x5d10, 0x5d20, 0x5d30, 0x5d40, 0x5d50, 0x5d60, 0x5d70,
    0x5d80, 0x5d90, 0x5da0, 0x5db0, 0x5dc0, 0x5dd0, 0x5de0, 0x5df0,
    0x5e00, 0x5e10, 0x5e20, 0x5e30, 0x5e40, 0x5e50, 0x5e60, 0x5e70,
    0x5e80, 0x5e90, 0x5ea0, 0x5eb0, 0x5ec0, 0x5ed0, 0x5ee0, 0x5ef0,
    0x5f00, 0x5f10, 0x5f20, 0x5f30, 0x5f40, 0x5f50, 0x5f60, 0x5f70,
    0x5f80, 0x5f90, 0x5fa0, 0x5fb0, 0x5fc0, 0x5fd0, 0x5fe0, 0x5ff0,
    0x6000, 0x6010, 0x6020, 0x6030, 0x6040, 0x6050, 0x6060, 0x6070,
    0x6080, 0x6090, 0x60a0, 0x60b0, 0x60c0, 0x60d0, 0x60e0, 0x60f0,
    0x6100, 0x6110, 0x6120, 0x6130, 0x6140, 0x6150, 0x6160, 0x6170,
    0x6180, 0x6190, 0x61a0, 0x61b0, 0x61c0, 0x61d0, 0x61e0, 0x61f0,
    0x6200, 0x6210, 0x6220, 0x6230, 0x6240, 0x6250, 0x6260, 0x6270,
    0x6280, 0x6290, 0x62a0, 0x62b0, 0x62c0, 0x62d0, 0x62e0, 0x62f0,
    0x6300, 0x6310, 0x6320, 0x6330, 0x6340, 0x6350, 0x6360, 0x6370,
    0x6380, 0x6390, 0x63a0, 0x63b0, 0x63c0, 0x63d0, 0x63e0, 0x7fc0};

/* Byte gathers that split 64 bf16 words (two registers) into their low and
 * high bytes. */
#define BYTE_IDX(o) o, o + 2, o + 4, o + 6, o + 8, o + 10, o + 12, o + 14
static const uint8_t idx_low_bytes[64] __attribute__((aligned(64))) = {
    BYTE_IDX(0), BYTE_IDX(16), BYTE_IDX(32), BYTE_IDX(48),
    BYTE_IDX(64), BYTE_IDX(80), BYTE_IDX(96), BYTE_IDX(112)};
static const uint8_t idx_high_bytes[64] __attribute__((aligned(64))) = {
    BYTE_IDX(1), BYTE_IDX(17), BYTE_IDX(33), BYTE_IDX(49),
    BYTE_IDX(65), BYTE_IDX(81), BYTE_IDX(97), BYTE_IDX(113)};
#undef BYTE_IDX

/* Columns of a 64-code step in the order e4m3x64_f32's unpacks take them:
 * byte 16L + 8(v/2) + 2(q%4) + v%2 holds column 16v + q, so that f32 vector
 * v comes out as columns 16v..16v+15 in natural order. */
#define F32_COLS(v, q) [16 * ((q) / 4) + 8 * ((v) / 2) + 2 * ((q) % 4) + (v) % 2] = 16 * (v) + (q)
#define F32_COLS16(v) F32_COLS(v, 0), F32_COLS(v, 1), F32_COLS(v, 2), F32_COLS(v, 3), F32_COLS(v, 4), \
    F32_COLS(v, 5), F32_COLS(v, 6), F32_COLS(v, 7), F32_COLS(v, 8), F32_COLS(v, 9), F32_COLS(v, 10),     \
    F32_COLS(v, 11), F32_COLS(v, 12), F32_COLS(v, 13), F32_COLS(v, 14), F32_COLS(v, 15)
static const uint8_t idx_f32_cols[64] __attribute__((aligned(64))) = {
    F32_COLS16(0), F32_COLS16(1), F32_COLS16(2), F32_COLS16(3)};
#undef F32_COLS16
#undef F32_COLS

/* vpermb: byte i of the result is byte idx[i] (low 6 bits) of tab. */
static inline __m512i vbmi_permb(__m512i idx, __m512i tab)
{
    __m512i r;
    __asm__("vpermb %2, %1, %0" : "=v"(r) : "v"(idx), "v"(tab));
    return r;
}

/* vpermi2b: byte i of the result is byte idx[i] (low 7 bits) of lo:hi. */
static inline __m512i vbmi_permi2b(__m512i lo, __m512i idx, __m512i hi)
{
    __asm__("vpermi2b %2, %1, %0" : "+v"(idx) : "v"(lo), "v"(hi));
    return idx;
}

/* Low and high bytes of the table scaled by block scale s (FP8_S_MIN <= s
 * <= S_MAX), codes 0-63 and 64-127; the NaN code stays NaN. */
typedef struct {
    __m512i lo0, lo1, hi0, hi1;
} e4m3_tables;

static inline e4m3_tables e4m3_tables_for(unsigned s)
{
    __m512i d = _mm512_set1_epi16((short)(uint16_t)((S_MAX - s) << 7)), t[4];
    for (int i = 0; i < 4; i++)
        t[i] = _mm512_subs_epu16(_mm512_load_si512(e4m3_bf16_lut + 32 * i), d);
    t[3] = _mm512_mask_mov_epi16(t[3], (__mmask32)1 << 31, _mm512_set1_epi16(0x7fc0));
    const __m512i lo = _mm512_load_si512(idx_low_bytes), hi = _mm512_load_si512(idx_high_bytes);
    e4m3_tables T = {vbmi_permi2b(t[0], lo, t[1]), vbmi_permi2b(t[2], lo, t[3]), vbmi_permi2b(t[0], hi, t[1]),
                     vbmi_permi2b(t[2], hi, t[3])};
    return T;
}

static inline int e4m3_scale_in_tables(unsigned s)
{
    return s >= FP8_S_MIN && s <= S_MAX;
}

/* 64 codes at p as f32 weights (code x 2^(s - 127)), columns 16v..16v+15
 * in w[v]: one byte permute into the unpacks' order, two table lookups, the
 * sign ORed into the high byte, two byte unpacks into bf16 words, and each
 * word moved to the top of its f32 (a shift for the even words, a mask for
 * the odd ones: no further shuffles). A bf16 value is an f32 with its low
 * 16 bits zero, so these are the exact values fp32 decoding gives. */
static inline void e4m3x64_f32(const uint8_t *p, const e4m3_tables *T, __m512 w[4])
{
    __m512i c = vbmi_permb(_mm512_load_si512(idx_f32_cols), _mm512_loadu_si512(p));
    __m512i hb = vbmi_permi2b(T->hi0, c, T->hi1), lb = vbmi_permi2b(T->lo0, c, T->lo1);
    hb = _mm512_ternarylogic_epi32(hb, c, _mm512_set1_epi8((char)0x80), 0xf8); /* hb | (c & 0x80) */
    __m512i w0 = _mm512_unpacklo_epi8(lb, hb), w1 = _mm512_unpackhi_epi8(lb, hb);
    const __m512i top = _mm512_set1_epi32((int)0xffff0000);
    w[0] = _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16));
    w[1] = _mm512_castsi512_ps(_mm512_and_si512(w0, top));
    w[2] = _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16));
    w[3] = _mm512_castsi512_ps(_mm512_and_si512(w1, top));
}

#endif
