/* dtype.c - dtype names and sizes, f16 and fp8 conversions. */
#include "dtype.h"

#include <math.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[FR_DTYPE_COUNT] = {
    [FR_DTYPE_F32] = {"F32", 4},     [FR_DTYPE_F16] = {"F16", 2},
    [FR_DTYPE_BF16] = {"BF16", 2},   [FR_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
    [FR_DTYPE_F64] = {"F64", 8},     [FR_DTYPE_I64] = {"I64", 8},
    [FR_DTYPE_I32] = {"I32", 4},     [FR_DTYPE_I16] = {"I16", 2},
    [FR_DTYPE_I8] = {"I8", 1},       [FR_DTYPE_U8] = {"U8", 1},
    [FR_DTYPE_BOOL] = {"BOOL", 1},   [FR_DTYPE_MXFP4] = {"MXFP4", 0},
    [FR_DTYPE_INT4] = {"INT4", 0},
};

size_t fr_dtype_size(fr_dtype t) { return t < FR_DTYPE_COUNT ? dtype_info[t].size : 0; }

const char *fr_dtype_name(fr_dtype t) { return t < FR_DTYPE_COUNT ? dtype_info[t].name : "?"; }

int fr_dtype_parse(const char *s, fr_dtype *out) {
    for (int i = 0; i < FR_DTYPE_COUNT; i++) {
        if (dtype_info[i].size && strcmp(s, dtype_info[i].name) == 0) {
            *out = (fr_dtype)i;
            return 0;
        }
    }
    return -1;
}

float fr_f16_to_f32(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    float v;
    if (exp == 0) v = ldexpf((float)mant, -24);
    else if (exp == 31) v = mant ? NAN : INFINITY;
    else v = ldexpf((float)(mant | 1024), exp - 25);
    return sign ? -v : v;
}

uint16_t fr_f32_to_f16(float f) {
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    float a = fabsf(f);
    if (isnan(f)) return sign | 0x7e00;
    if (a >= 65520.0f) return sign | 0x7c00; /* rounds to infinity */
    if (a < ldexpf(1.0f, -14)) {             /* subnormal: units of 2^-24 */
        return sign | (uint16_t)lrintf(a * 16777216.0f);
    }
    int e;
    float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5,1) */
    uint32_t q = (uint32_t)lrintf(m * 2048.0f); /* 11 significant bits, RNE */
    if (q == 2048) { q = 1024; e++; }
    if (e + 14 >= 31) return sign | 0x7c00;
    return sign | (uint16_t)((e + 14) << 10) | (uint16_t)(q & 1023);
}

/* value = (-1)^s * 2^(e-7) * (1 + m/8); subnormal (e == 0): (-1)^s * 2^-6 * m/8;
 * 0x7f and 0xff are NaN. fr_e4m3_table below holds the same values for every byte. */
static float e4m3_value(int b) {
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    float v;
    if (e == 15 && m == 7) return NAN;
    if (e == 0) v = ldexpf((float)m, -9);
    else v = ldexpf((float)(8 + m), e - 10);
    return s ? -v : v;
}

uint8_t fr_f32_to_e4m3(float f) {
    if (isnan(f)) return 0x7f;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= 448.0f) return sign | 0x7e;
    /* search the 127 finite magnitudes; ties go to the even code (lowest mantissa bit 0) */
    int best = 0;
    float bestd = INFINITY;
    for (int c = 0; c <= 0x7e; c++) {
        float d = fabsf(e4m3_value(c) - a);
        if (d < bestd || (d == bestd && (c & 1) == 0)) {
            bestd = d;
            best = c;
        }
    }
    return sign | (uint8_t)best;
}

/* Value of every E4M3 byte (see e4m3_value for the rule). */
const float fr_e4m3_table[256] = {
    0.0f, 0.001953125f, 0.00390625f, 0.005859375f, 0.0078125f, 0.009765625f, 0.01171875f, 0.013671875f,
    0.015625f, 0.017578125f, 0.01953125f, 0.021484375f, 0.0234375f, 0.025390625f, 0.02734375f, 0.029296875f,
    0.03125f, 0.03515625f, 0.0390625f, 0.04296875f, 0.046875f, 0.05078125f, 0.0546875f, 0.05859375f,
    0.0625f, 0.0703125f, 0.078125f, 0.0859375f, 0.09375f, 0.1015625f, 0.109375f, 0.1171875f,
    0.125f, 0.140625f, 0.15625f, 0.171875f, 0.1875f, 0.203125f, 0.21875f, 0.234375f,
    0.25f, 0.28125f, 0.3125f, 0.34375f, 0.375f, 0.40625f, 0.4375f, 0.46875f,
    0.5f, 0.5625f, 0.625f, 0.6875f, 0.75f, 0.8125f, 0.875f, 0.9375f,
    1.0f, 1.125f, 1.25f, 1.375f, 1.5f, 1.625f, 1.75f, 1.875f,
    2.0f, 2.25f, 2.5f, 2.75f, 3.0f, 3.25f, 3.5f, 3.75f,
    4.0f, 4.5f, 5.0f, 5.5f, 6.0f, 6.5f, 7.0f, 7.5f,
    8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f,
    16.0f, 18.0f, 20.0f, 22.0f, 24.0f, 26.0f, 28.0f, 30.0f,
    32.0f, 36.0f, 40.0f, 44.0f, 48.0f, 52.0f, 56.0f, 60.0f,
    64.0f, 72.0f, 80.0f, 88.0f, 96.0f, 104.0f, 112.0f, 120.0f,
    128.0f, 144.0f, 160.0f, 176.0f, 192.0f, 208.0f, 224.0f, 240.0f,
    256.0f, 288.0f, 320.0f, 352.0f, 384.0f, 416.0f, 448.0f, NAN,
    -0.0f, -0.001953125f, -0.00390625f, -0.005859375f, -0.0078125f, -0.009765625f, -0.01171875f, -0.013671875f,
    -0.015625f, -0.017578125f, -0.01953125f, -0.021484375f, -0.0234375f, -0.025390625f, -0.02734375f, -0.029296875f,
    -0.03125f, -0.03515625f, -0.0390625f, -0.04296875f, -0.046875f, -0.05078125f, -0.0546875f, -0.05859375f,
    -0.0625f, -0.0703125f, -0.078125f, -0.0859375f, -0.09375f, -0.1015625f, -0.109375f, -0.1171875f,
    -0.125f, -0.140625f, -0.15625f, -0.171875f, -0.1875f, -0.203125f, -0.21875f, -0.234375f,
    -0.25f, -0.28125f, -0.3125f, -0.34375f, -0.375f, -0.40625f, -0.4375f, -0.46875f,
    -0.5f, -0.5625f, -0.625f, -0.6875f, -0.75f, -0.8125f, -0.875f, -0.9375f,
    -1.0f, -1.125f, -1.25f, -1.375f, -1.5f, -1.625f, -1.75f, -1.875f,
    -2.0f, -2.25f, -2.5f, -2.75f, -3.0f, -3.25f, -3.5f, -3.75f,
    -4.0f, -4.5f, -5.0f, -5.5f, -6.0f, -6.5f, -7.0f, -7.5f,
    -8.0f, -9.0f, -10.0f, -11.0f, -12.0f, -13.0f, -14.0f, -15.0f,
    -16.0f, -18.0f, -20.0f, -22.0f, -24.0f, -26.0f, -28.0f, -30.0f,
    -32.0f, -36.0f, -40.0f, -44.0f, -48.0f, -52.0f, -56.0f, -60.0f,
    -64.0f, -72.0f, -80.0f, -88.0f, -96.0f, -104.0f, -112.0f, -120.0f,
    -128.0f, -144.0f, -160.0f, -176.0f, -192.0f, -208.0f, -224.0f, -240.0f,
    -256.0f, -288.0f, -320.0f, -352.0f, -384.0f, -416.0f, -448.0f, NAN,
};
