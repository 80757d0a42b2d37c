/* mx.c - MXFP4 and INT4 quantizers, dequantizers and element access (see mx.h).
 *
 * MXFP4 follows OCP Microscaling Formats v1.0, section 6.3, for each block of 32:
 *   amax       = max |V_i|
 *   shared_exp = floor(log2(amax)) - emax_elem            (emax_elem = 2 for E2M1)
 *   X          = 2^shared_exp, stored as the E8M0 byte shared_exp + 127
 *   P_i        = quantize_to_E2M1(V_i / X), normals clamped (saturated) to +-6
 * floor(log2(amax)) is taken from frexpf's exponent, which is exact for every finite
 * float including subnormals: a power of two gives its own exponent, and a value just
 * below one (3.9999) gives the exponent below (1), where log2f could round up to 2.
 * V_i / X is formed exactly (a power-of-two scaling in double, which cannot overflow or
 * lose bits for any float), and the E2M1 rounding compares that exact value with the
 * midpoints between codes, so ties are seen as ties.
 *
 * Policies where the spec leaves a choice, with the reasoning:
 *  - Rounding: round to nearest, ties to the even code (mantissa bit 0), as IEEE-style
 *    conversions and the spec's "quantize_to_element_format" do; the Microsoft reference
 *    emulator defaults to ties-away instead, which differs only on exact ties
 *    (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5 times X).
 *  - Saturation: because X comes from floor(log2(amax)), amax / X lies in [4, 8), so
 *    the largest elements can exceed 6; they clamp to +-6 (code 7/15), by design of the
 *    spec ("clamping normal numbers"), never wrap or become NaN.
 *  - Scale range: shared_exp below -127 (amax < 2^-125) clamps to -127, scale byte 0,
 *    i.e. X = 2^-127; elements then round as usual (2^-130 -> 0.125 X -> code 0). For a
 *    finite float amax <= 2^128 - 2^104, shared_exp <= 125, so the NaN that the spec
 *    gives for shared_exp > 127 cannot arise from finite inputs.
 *  - All-zero block: log2(0) = -inf, which the clamp above takes to -127: scale byte 0
 *    and all elements 0. This is also what the reference emulator produces (it adds
 *    FP32_MIN_NORMAL to a zero amax, floor(log2(2^-126)) - 2 = -128, clamped to -127),
 *    and it is the smallest scale, so it can never inflate anything.
 *  - NaN or +-Inf anywhere in a block: the block's scale byte is 0xFF (NaN) and every
 *    element code is 0. E2M1 cannot hold Inf or NaN, the spec's semantics make a NaN
 *    scale turn every element of its block into NaN, and the reference emulator does the
 *    same (an Inf amax gives an out-of-range shared exponent, hence NaN; its corner-case
 *    tests expect "all other values in a shared vector with a NaN/Inf become NaN"). The
 *    codes are 0 only so the bytes are deterministic; decoders ignore them.
 *  - Negative zero and negative values that round to zero keep their sign (code 8,
 *    -0.0): an IEEE-style conversion preserves the sign of a zero result, E2M1 has the
 *    encoding, and it decodes to a value equal to 0, so nothing downstream changes.
 *
 * INT4 follows compressed-tensors (calculate_qparams / _quantize) for symmetric int
 * groups: the quantized range is [q_min, q_max] = [-8, 7], so
 *   scale = max(|min|, |max|) / ((q_max - q_min) / 2) = amax / 7.5,
 *   clamped below at torch.finfo(float32).eps = 2^-23 (which also covers an all-zero
 *   group: no division by zero), then stored as BF16 (round to nearest even);
 *   q = round(clamp(x / scale, -8, 7)) with torch.round's ties to even, using the stored
 *   BF16 scale so that (u - 8) * scale is the nearest representable value to x.
 * Dividing by 7.5 rather than 7 means +amax maps to 7.5, which rounds to 8 and clamps to
 * 7 (error scale / 2), while -amax maps exactly to -8: the format's asymmetric range is
 * used. x / scale is computed in double, exact enough that a quotient is a tie only when
 * it truly is one (compressed-tensors divides in the tensor's dtype, bf16 for bf16
 * weights, which can move values within bf16 rounding of a half-integer). A NaN or +-Inf
 * in a group gives a NaN scale (BF16 0x7FC0) and all nibbles 8 (q = 0), so the whole
 * group decodes to NaN, the same policy as an MX block. -0.0 becomes q = 0 (no signed
 * zero in two's complement int4). */
#include "mx.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>

#include "dtype.h"

const float fr_e2m1_table[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                 -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/* Code nearest to v (exact), ties to even, saturating; sign kept; NaN -> 0. The
 * midpoints between consecutive magnitudes are 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5; at a
 * midpoint the even code (0, 2, 4, 6) wins, hence <= before even codes and < before odd. */
static uint8_t e2m1_rne(double v) {
    if (isnan(v)) return 0;
    const uint8_t s = signbit(v) ? 8 : 0;
    const double a = fabs(v);
    uint8_t c;
    if (a <= 0.25)
        c = 0;
    else if (a < 0.75)
        c = 1;
    else if (a <= 1.25)
        c = 2;
    else if (a < 1.75)
        c = 3;
    else if (a <= 2.5)
        c = 4;
    else if (a < 3.5)
        c = 5;
    else if (a <= 5.0)
        c = 6;
    else
        c = 7; /* 6 and everything above: saturate */
    return (uint8_t)(s | c);
}

uint8_t fr_f32_to_e2m1(float v) { return e2m1_rne((double)v); }

/* floor(log2(a)) for finite a > 0, exact (frexpf: a = m * 2^e, m in [0.5, 1)). */
static int floor_log2f(float a) {
    int e;
    (void)frexpf(a, &e);
    return e - 1;
}

void fr_mxfp4_quantize_row(const float *x, int64_t n, uint8_t *blocks, uint8_t *scales) {
    for (int64_t b = 0; b * FR_MX_GROUP < n; b++) {
        const int64_t c0 = b * FR_MX_GROUP;
        const int len = (int)(n - c0 < FR_MX_GROUP ? n - c0 : FR_MX_GROUP);
        float amax = 0.0f;
        bool special = false; /* NaN or Inf in the block */
        for (int i = 0; i < len; i++) {
            const float a = fabsf(x[c0 + i]);
            if (!(a <= FLT_MAX))
                special = true;
            else if (a > amax)
                amax = a;
        }
        uint8_t codes[FR_MX_GROUP] = {0};
        if (special) {
            scales[b] = 0xFF;
        } else {
            int se = amax > 0.0f ? floor_log2f(amax) - 2 : -127;
            if (se < -127) se = -127; /* never above 125 for a finite float, see the top */
            scales[b] = (uint8_t)(se + 127);
            /* 2^-se is a normal float for se in [-127, 125], and x * 2^-se < 8, so the
             * product is exact unless it falls below 2^-126, where it rounds toward a zero
             * of its own sign and the code is 0 (or 8) whatever the rounding. The code
             * counts the midpoints below |v|, as e2m1_rne decides them (ties to even);
             * the loop has no branches and vectorizes. No NaN reaches here. */
            const float inv_scale = ldexpf(1.0f, -se);
            for (int i = 0; i < len; i++) {
                const float v = x[c0 + i] * inv_scale, a = fabsf(v);
                const int c = (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) +
                              (a > 5.0f);
                codes[i] = (uint8_t)(c | (signbit(v) ? 8 : 0));
            }
        }
        uint8_t *out = blocks + c0 / 2;
        for (int i = 0; i < len; i += 2) out[i / 2] = (uint8_t)(codes[i] | codes[i + 1] << 4);
    }
}

void fr_mxfp4_dequantize_row(const uint8_t *blocks, const uint8_t *scales, int64_t n, float *out) {
    for (int64_t c = 0; c < n; c++) {
        const uint8_t nib = (uint8_t)(blocks[c / 2] >> (4 * (c & 1)));
        out[c] = fr_e2m1_to_f32(nib) * fr_e8m0_to_f32(scales[c / FR_MX_GROUP]);
    }
}

void fr_int4_quantize_row(const float *x, int64_t n, int32_t *packed, uint16_t *scales_bf16) {
    for (int64_t g = 0; g * FR_MX_GROUP < n; g++) {
        const int64_t c0 = g * FR_MX_GROUP;
        const int len = (int)(n - c0 < FR_MX_GROUP ? n - c0 : FR_MX_GROUP);
        float amax = 0.0f;
        bool special = false;
        for (int i = 0; i < len; i++) {
            const float a = fabsf(x[c0 + i]);
            if (!(a <= FLT_MAX))
                special = true;
            else if (a > amax)
                amax = a;
        }
        uint8_t u[FR_MX_GROUP];
        memset(u, 8, sizeof u); /* q = 0, also for the padding of a short last group */
        if (special) {
            scales_bf16[g] = 0x7FC0;
        } else {
            float s = amax / 7.5f;
            if (!(s >= FLT_EPSILON)) s = FLT_EPSILON;
            const uint16_t sb = fr_f32_to_bf16(s);
            scales_bf16[g] = sb;
            const double sd = (double)fr_bf16_to_f32(sb);
            for (int i = 0; i < len; i++) {
                double v = (double)x[c0 + i] / sd;
                v = v < -8.0 ? -8.0 : v > 7.0 ? 7.0 : v;
                u[i] = (uint8_t)((int)nearbyint(v) + 8); /* default rounding: ties to even */
            }
        }
        for (int wd = 0; wd < (len + 7) / 8; wd++) {
            uint32_t word = 0;
            for (int k = 0; k < 8; k++) word |= (uint32_t)u[8 * wd + k] << (4 * k);
            memcpy(&packed[c0 / 8 + wd], &word, 4);
        }
    }
}

void fr_int4_dequantize_row(const int32_t *packed, const uint16_t *scales_bf16, int64_t n, float *out) {
    for (int64_t c = 0; c < n; c++) {
        uint32_t word;
        memcpy(&word, &packed[c / 8], 4);
        const int u = (int)((word >> (4 * (c % 8))) & 15);
        out[c] = (float)(u - 8) * fr_bf16_to_f32(scales_bf16[c / FR_MX_GROUP]);
    }
}

float fr_mx_weight_get(const fr_weight *w, int64_t r, int64_t c) {
    if ((w->dtype != FR_DTYPE_MXFP4 && w->dtype != FR_DTYPE_INT4) || !w->scales || w->group <= 0) return 0.0f;
    /* Both formats: element c of a row is nibble (c & 1) of byte c / 2 (mx.h). Bytes are
     * read one at a time, so neither data nor scales need any alignment. */
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)fr_weight_row_bytes(w);
    const uint8_t nib = (uint8_t)((row[c / 2] >> (4 * (c & 1))) & 15);
    const int64_t nsc = w->cols / w->group, sidx = r * nsc + c / w->group;
    if (w->dtype == FR_DTYPE_MXFP4)
        return fr_e2m1_to_f32(nib) * fr_e8m0_to_f32(((const uint8_t *)w->scales)[sidx]);
    uint16_t h;
    memcpy(&h, (const uint8_t *)w->scales + 2 * (size_t)sidx, 2);
    return (float)((int)nib - 8) * fr_bf16_to_f32(h);
}
