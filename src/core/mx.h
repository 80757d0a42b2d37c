/* mx.h - exact scalar code for the two 4-bit weight formats (see weight.h, ARCH.md 7.3-7.4).
 *
 * OCP Microscaling MXFP4 (v1.0): blocks of 32 E2M1 elements (1 sign, 2 exponent bits with
 * bias 1, 1 mantissa bit: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6; no Inf, no NaN) sharing
 * one E8M0 scale byte (2^(e - 127), 0xFF = NaN). A row of n elements is n/2 bytes, element
 * 2j in the low nibble of byte j, and n/32 scale bytes.
 *
 * compressed-tensors "pack-quantized" INT4: symmetric, group 32, offset binary: nibble u
 * means q = u - 8 in [-8, 7], value = q * scale with one BF16 scale per 32 elements. A row
 * of n elements is n/8 int32 words, element k at bits 4*(k % 8) of word k / 8.
 *
 * In memory both formats put element 2j in the low and 2j+1 in the high nibble of byte j
 * of the row (the INT4 words are little-endian, as the checkpoints store them and as every
 * host this engine targets keeps them), which lets one set of kernels read both.
 *
 * Everything here is exact: decoding is a table or bit construction, and the quantizers
 * scale by powers of two or divide in double precision, so rounding decisions (ties
 * included) are the ones the format definitions describe, with no log2f rounding. The
 * policies for NaN, Inf, zero blocks and negative zero are written out at each quantizer
 * in mx.c. These are the slow, obviously right definitions; src/backend/cpu/matmul.c does
 * the same arithmetic many lanes at a time and is tested against fr_mx_weight_get. */
#ifndef FR_MX_H
#define FR_MX_H

#include <stdint.h>
#include <string.h>

#include "weight.h"

/* Elements per scale in both formats. */
#define FR_MX_GROUP 32

/* E2M1 code -> value for the 16 codes (index = nibble): 0, 0.5, 1, 1.5, 2, 3, 4, 6 and the
 * same negated for 8..15 (code 8 is -0.0). */
extern const float fr_e2m1_table[16];

/* Value of an E2M1 nibble (only the low 4 bits of `nibble` are used). */
static inline float fr_e2m1_to_f32(uint8_t nibble) { return fr_e2m1_table[nibble & 15]; }

/* Value of an E8M0 scale byte: 2^(e - 127), exact for every e, including e = 0 (2^-127,
 * an f32 subnormal, bits 0x00400000, not the 0 that e << 23 would give); 0xFF is NaN. */
static inline float fr_e8m0_to_f32(uint8_t e) {
    const uint32_t u = e == 0xFF ? 0x7FC00000u : e == 0 ? 0x00400000u : (uint32_t)e << 23;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The E2M1 code nearest to v, ties to the even code (mantissa bit 0), magnitudes above 6
 * saturated to 6 (the spec's "clamping normal numbers"), the sign of v kept (so -0.0 and
 * negative values that round to zero give code 8, -0). NaN gives code 0: E2M1 has no NaN,
 * an MX block carries NaN in its scale. v is an element already divided by its block scale. */
uint8_t fr_f32_to_e2m1(float v);

/* MXFP4-quantize x[0 .. n): writes ceil(n/2) bytes to `blocks` and ceil(n/32) E8M0 bytes
 * to `scales`, per OCP MX v1.0 6.3 (details in mx.c). n should be a multiple of 32; a
 * shorter last block is quantized as if padded with zeros (unused high nibble 0). */
void fr_mxfp4_quantize_row(const float *x, int64_t n, uint8_t *blocks, uint8_t *scales);

/* out[0 .. n) = E2M1(nibble) * 2^(scale - 127); blocks with scale 0xFF are all NaN. Exact,
 * except that MX reaches 6 * 2^127 and f32 stops below 2^128: values of 2^128 and more
 * (scale byte 253 with |code| >= 4, 254 with |code| >= 2) become +-Inf. The quantizer
 * never writes a scale byte above 252. */
void fr_mxfp4_dequantize_row(const uint8_t *blocks, const uint8_t *scales, int64_t n, float *out);

/* INT4-quantize x[0 .. n) the compressed-tensors way (details in mx.c): per group of 32,
 * scale = bf16(max(amax / 7.5, FLT_EPSILON)), q = round_half_even(clamp(x / scale, -8, 7)),
 * nibble q + 8. Writes ceil(n/8) words and ceil(n/32) scales; n should be a multiple of 32
 * (a shorter last group is quantized as if padded with zeros, unused nibbles 8 = q 0). */
void fr_int4_quantize_row(const float *x, int64_t n, int32_t *packed, uint16_t *scales_bf16);

/* out[0 .. n) = (nibble - 8) * bf16 scale of the element's group. */
void fr_int4_dequantize_row(const int32_t *packed, const uint16_t *scales_bf16, int64_t n, float *out);

/* Element (r, c) of an MXFP4 or INT4 view as float32, relative to the view (fr_weight_rows
 * already offsets `data` and `scales` for these formats, so row0 is not used). Data and
 * scales may sit at any address. Returns 0 for other dtypes and for views without scales
 * or with a non-positive group. */
float fr_mx_weight_get(const fr_weight *w, int64_t r, int64_t c);

#endif
