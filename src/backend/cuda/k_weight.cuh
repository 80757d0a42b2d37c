/* k_weight.cuh - element decoding on the device, one definition per stored format.
 *
 * Bit-level conversions (no cuda_fp16.h / cuda_bf16.h) so that CUDA, HIP and the CPU
 * emulator compute the same values; each equals the host conversion in src/core
 * (fr_bf16_to_f32, fr_f16_to_f32, fr_e4m3_table, fr_e2m1_table, fr_e8m0_to_f32). */
#ifndef FR_K_WEIGHT_CUH
#define FR_K_WEIGHT_CUH

#include "gpu_compat.h"
#include "../../core/weight.h"

__device__ __forceinline__ float fr_dev_bits_f32(uint32_t u) {
    union { uint32_t u; float f; } v;
    v.u = u;
    return v.f;
}
__device__ __forceinline__ uint32_t fr_dev_f32_bits(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    return v.u;
}
__device__ __forceinline__ float fr_dev_bf16(uint16_t h) { return fr_dev_bits_f32((uint32_t)h << 16); }
/* Round to nearest even; NaN stays NaN (as fr_f32_to_bf16). */
__device__ __forceinline__ uint16_t fr_dev_to_bf16(float f) {
    uint32_t u = fr_dev_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
__device__ __forceinline__ float fr_dev_f16(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t e = (h >> 10) & 31, m = h & 1023;
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float32 */
        const float v = (float)m * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (e == 31) return fr_dev_bits_f32(sign | 0x7f800000u | (m << 13));
    return fr_dev_bits_f32(sign | ((e + 112) << 23) | (m << 13));
}
/* E4M3 (e4m3fn): bias 7, subnormals m * 2^-9, 0x7f / 0xff NaN. */
__device__ __forceinline__ float fr_dev_e4m3(uint8_t b) {
    const uint32_t sign = (uint32_t)(b & 0x80) << 24;
    const uint32_t e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return fr_dev_bits_f32(0x7fc00000u | sign);
    if (e == 0) {
        const float v = (float)m * 0.001953125f;
        return sign ? -v : v;
    }
    return fr_dev_bits_f32(sign | ((e + 120) << 23) | (m << 20));
}
/* E2M1 nibble: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and negatives. */
__device__ __forceinline__ float fr_dev_e2m1(uint32_t nib) {
    const uint32_t e = (nib >> 1) & 3, m = nib & 1;
    const float mag = e == 0 ? 0.5f * (float)m : (float)(1u << (e - 1)) * (1.0f + 0.5f * (float)m);
    return (nib & 8) ? -mag : mag;
}
/* E8M0 scale: 2^(e - 127); 0xFF is NaN. */
__device__ __forceinline__ float fr_dev_e8m0(uint8_t e) {
    if (e == 0xff) return fr_dev_bits_f32(0x7fc00000u);
    if (e == 0) return fr_dev_bits_f32(0x00400000u); /* 2^-127, subnormal */
    return fr_dev_bits_f32((uint32_t)e << 23);
}

/* Element (r, c) of a device-resident weight view (the slow, general path: kernels that
 * stream whole rows decode 16 bytes at a time instead). */
__device__ __forceinline__ float fr_dev_weight_get(const fr_weight &w, int64_t r, int64_t c) {
    switch (w.dtype) {
    case FR_DTYPE_F32: return ((const float *)w.data)[r * w.cols + c];
    case FR_DTYPE_F16: return fr_dev_f16(((const uint16_t *)w.data)[r * w.cols + c]);
    case FR_DTYPE_BF16: return fr_dev_bf16(((const uint16_t *)w.data)[r * w.cols + c]);
    case FR_DTYPE_F8_E4M3: {
        const float v = fr_dev_e4m3(((const uint8_t *)w.data)[r * w.cols + c]);
        if (!w.scale_inv) return v;
        return v * w.scale_inv[((w.row0 + r) / w.block_rows) * w.scale_cols + c / w.block_cols];
    }
    case FR_DTYPE_MXFP4: {
        const uint8_t b = ((const uint8_t *)w.data)[r * (w.cols / 2) + c / 2];
        const float s = fr_dev_e8m0(((const uint8_t *)w.scales)[r * (w.cols / w.group) + c / w.group]);
        return fr_dev_e2m1((c & 1) ? (uint32_t)(b >> 4) : (uint32_t)(b & 15)) * s;
    }
    case FR_DTYPE_INT4: {
        const uint32_t word = ((const uint32_t *)w.data)[r * (w.cols / 8) + c / 8];
        const int q = (int)((word >> (4 * (c % 8))) & 15) - 8;
        const float s = fr_dev_bf16(((const uint16_t *)w.scales)[r * (w.cols / w.group) + c / w.group]);
        return (float)q * s;
    }
    default: return 0.0f;
    }
}

#endif
