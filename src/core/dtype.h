/* dtype.h - element types of checkpoints and activations, and scalar conversions.
 *
 * The names match safetensors' dtype strings. Conversions are scalar and exact
 * (bf16/f16/e4m3 -> f32) or round-to-nearest-even (f32 -> bf16/e4m3); the vector
 * kernels in src/backend/cpu do the same arithmetic many lanes at a time. */
#ifndef FR_DTYPE_H
#define FR_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    FR_DTYPE_F32,
    FR_DTYPE_F16,
    FR_DTYPE_BF16,
    FR_DTYPE_F8_E4M3,
    FR_DTYPE_F64,
    FR_DTYPE_I64,
    FR_DTYPE_I32,
    FR_DTYPE_I16,
    FR_DTYPE_I8,
    FR_DTYPE_U8,
    FR_DTYPE_BOOL,
    /* Weight formats that are not safetensors dtypes (fr_dtype_parse never returns them,
     * fr_dtype_size is 0: a whole row is the smallest unit, see weight.h). */
    FR_DTYPE_MXFP4, /* OCP MX: E2M1 elements, 2 per byte (low nibble first), E8M0 scale per 32 */
    FR_DTYPE_INT4,  /* compressed-tensors pack-quantized: 8 signed nibbles per int32, BF16 scale per 32 */
    FR_DTYPE_COUNT
} fr_dtype;

/* Bytes per element. */
size_t fr_dtype_size(fr_dtype t);
/* safetensors spelling ("BF16", "F8_E4M3", ...). */
const char *fr_dtype_name(fr_dtype t);
/* Parse a safetensors dtype string; returns 0 and sets *out, or -1 if unknown. */
int fr_dtype_parse(const char *s, fr_dtype *out);

static inline float fr_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even; NaN stays NaN. */
static inline uint16_t fr_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float fr_f16_to_f32(uint16_t h);
uint16_t fr_f32_to_f16(float f);

/* FP8 E4M3 ("e4m3fn"): bias 7, no infinities, 0x7f/0xff are NaN, max 448. */
extern const float fr_e4m3_table[256];
static inline float fr_e4m3_to_f32(uint8_t b) { return fr_e4m3_table[b]; }
/* Round to nearest even, saturating to +-448. */
uint8_t fr_f32_to_e4m3(float f);

#endif
