/* test_mx.c - MXFP4 and INT4 scalar code (core/mx.h) against hand-computed bit patterns.
 *
 * Every expected byte, word and scale below was worked out by hand from the format
 * definitions (OCP MX v1.0 section 6.3 with E2M1 ties-to-even and saturation; the
 * compressed-tensors symmetric int4 rule scale = bf16(max(amax / 7.5, 2^-23)),
 * q = round_half_even(clamp(x / scale, -8, 7)), nibble q + 8), with the working in the
 * comments; none was produced by running the code under test. Property checks on random
 * rows then confirm that every dequantized element is a nearest representable value for
 * its block, and that fr_mx_weight_get reads views (sliced, misaligned) the same way. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/dtype.h"
#include "core/mx.h"

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Quantize one 32-element block given its first `len` values (rest 0) and compare the
 * scale byte and the 16 data bytes (bytes not listed in `want` must be 0). */
static void mx_block(const char *what, const float *v, int len, uint8_t want_scale, const uint8_t *want,
                     int nwant) {
    float x[32] = {0};
    if (len > 0) memcpy(x, v, (size_t)len * sizeof(float));
    uint8_t blocks[16], scale = 0x5A, exp[16] = {0};
    memset(blocks, 0x5A, sizeof blocks);
    if (nwant > 0) memcpy(exp, want, (size_t)nwant);
    fr_mxfp4_quantize_row(x, 32, blocks, &scale);
    CHECK_MSG(scale == want_scale, "%s: scale byte 0x%02x, want 0x%02x", what, scale, want_scale);
    for (int j = 0; j < 16; j++)
        CHECK_MSG(blocks[j] == exp[j], "%s: byte %d is 0x%02x, want 0x%02x", what, j, blocks[j], exp[j]);
}

static void test_decode(void) {
    static const float e2m1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
    for (int c = 0; c < 16; c++) {
        CHECK_MSG(fr_e2m1_to_f32((uint8_t)c) == e2m1[c], "e2m1 code %d", c);
        CHECK(!!signbit(fr_e2m1_to_f32((uint8_t)c)) == (c >= 8)); /* code 8 is -0.0 */
        CHECK(fr_e2m1_to_f32((uint8_t)(0xF0 | c)) == e2m1[c]);    /* only the low nibble counts */
    }
    CHECK(fr_e8m0_to_f32(127) == 1.0f);
    CHECK(fr_e8m0_to_f32(128) == 2.0f);
    CHECK(fr_e8m0_to_f32(126) == 0.5f);
    CHECK(f32_bits(fr_e8m0_to_f32(0)) == 0x00400000u); /* 2^-127: subnormal, not 0 */
    CHECK(fr_e8m0_to_f32(0) == ldexpf(1.0f, -127));
    CHECK(f32_bits(fr_e8m0_to_f32(1)) == 0x00800000u);   /* 2^-126 */
    CHECK(f32_bits(fr_e8m0_to_f32(254)) == 0x7F000000u); /* 2^127 */
    CHECK(isnan(fr_e8m0_to_f32(255)));
}

static void test_e2m1_round(void) {
    /* midpoints between magnitudes 0|0.5|1|1.5|2|3|4|6 are 0.25, 0.75, 1.25, 1.75, 2.5,
     * 3.5, 5; a tie goes to the even code: 0 (0), 2 (1.0), 4 (2.0), 6 (4.0) */
    CHECK(fr_f32_to_e2m1(0.25f) == 0x0);
    CHECK(fr_f32_to_e2m1(0.2500001f) == 0x1);
    CHECK(fr_f32_to_e2m1(0.75f) == 0x2);
    CHECK(fr_f32_to_e2m1(0.7499999f) == 0x1);
    CHECK(fr_f32_to_e2m1(1.25f) == 0x2);
    CHECK(fr_f32_to_e2m1(1.75f) == 0x4);
    CHECK(fr_f32_to_e2m1(2.5f) == 0x4);
    CHECK(fr_f32_to_e2m1(2.5000002f) == 0x5);
    CHECK(fr_f32_to_e2m1(3.5f) == 0x6);
    CHECK(fr_f32_to_e2m1(5.0f) == 0x6);
    CHECK(fr_f32_to_e2m1(5.0000005f) == 0x7);
    CHECK(fr_f32_to_e2m1(6.0f) == 0x7);
    CHECK(fr_f32_to_e2m1(7.9f) == 0x7); /* saturates */
    CHECK(fr_f32_to_e2m1(1e30f) == 0x7);
    CHECK(fr_f32_to_e2m1(INFINITY) == 0x7);
    CHECK(fr_f32_to_e2m1(-2.5f) == 0xC);
    CHECK(fr_f32_to_e2m1(-1e30f) == 0xF);
    CHECK(fr_f32_to_e2m1(-0.0f) == 0x8);
    CHECK(fr_f32_to_e2m1(-0.1f) == 0x8); /* rounds to zero, keeps the sign */
    CHECK(fr_f32_to_e2m1(NAN) == 0x0);
    for (int c = 0; c < 16; c++) CHECK(fr_f32_to_e2m1(fr_e2m1_to_f32((uint8_t)c)) == c); /* round trip */
}

static void test_mxfp4_blocks(void) {
    { /* amax 6: floor(log2 6) = 2, shared 2 - 2 = 0, byte 127. Codes 6->7, -6->F, 4->6,
       * 3->5, 2->4, 1.5->3, 1->2, 0.5->1, 0->0, -0.5->9; element 2j low nibble of byte j */
        const float v[] = {6, -6, 4, 3, 2, 1.5f, 1, 0.5f, 0, -0.5f};
        const uint8_t w[] = {0xF7, 0x56, 0x34, 0x12, 0x90};
        mx_block("exact codes", v, 10, 0x7F, w, 5);
    }
    { /* scale 2^0 (amax 6 at element 31); ties: 0.25->0, 0.75->2, 1.25->2, 1.75->4,
       * 2.5->4, 3.5->6, 5->6, -2.5->C; others: 0.26->1, 2.6->5, 5.1->7, 0.24->0,
       * -5->E (tie, even 4.0), -0.75->A */
        float v[32] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f,  3.5f,  5.0f,
                       -2.5f, 0.26f, 2.6f,  5.1f,  0.24f, -5.0f, -0.75f};
        v[31] = 6.0f;
        const uint8_t w[] = {0x20, 0x42, 0x64, 0xC6, 0x51, 0x07, 0xAE, 0, 0, 0, 0, 0, 0, 0, 0, 0x70};
        mx_block("ties", v, 32, 0x7F, w, 16);
    }
    { /* amax 12: floor(log2 12) = 3, shared 1, byte 128; /2: 6->7, 2.5->4, 3.5->6, 5->6,
       * 0.25->0, 0.75->2 (ties after scaling) */
        const float v[] = {12, 5, 7, 10, 0.5f, 1.5f};
        const uint8_t w[] = {0x47, 0x66, 0x20};
        mx_block("scaled ties", v, 6, 0x80, w, 3);
    }
    { /* amax exactly 4: floor(log2 4) = 2 exactly, shared 0, byte 127; 4->6, 1->2, -0.5->9 */
        const float v[] = {4, 1, -0.5f};
        const uint8_t w[] = {0x26, 0x09};
        mx_block("amax 4", v, 3, 0x7F, w, 2);
    }
    { /* amax exactly 8: shared 1, byte 128; /2: 4->6, 0.5->1, 1.5->3, 0.25->0 (tie) */
        const float v[] = {8, 1, 3, 0.5f};
        const uint8_t w[] = {0x16, 0x03};
        mx_block("amax 8", v, 4, 0x80, w, 2);
    }
    { /* amax just below 4 (3.99999976): floor(log2) = 1, shared -1, byte 126; x2:
       * 7.9999995->7 (saturated), 3->6->7, 2.4->4.8->6, 2.6->5.2->7, -1.2->-2.4->C */
        const float v[] = {nextafterf(4.0f, 0.0f), 3.0f, 2.4f, 2.6f, -1.2f};
        const uint8_t w[] = {0x77, 0x76, 0x0C};
        mx_block("amax below 4", v, 5, 0x7E, w, 3);
    }
    { /* amax just below 1 (0.99999994): floor(log2) = -1, shared -3, byte 124; x8 -> 7.9999995 -> 7 */
        const float v[] = {nextafterf(1.0f, 0.0f)};
        const uint8_t w[] = {0x07};
        mx_block("amax below 1", v, 1, 0x7C, w, 1);
    }
    { /* saturation: amax 7.5: floor(log2) = 2, shared 0; 7->7, 5.5->7, -7.5->F */
        const float v[] = {7, 5.5f, -7.5f};
        const uint8_t w[] = {0x77, 0x0F};
        mx_block("saturation", v, 3, 0x7F, w, 2);
    }
    { /* tiny: amax 2^-130: shared -132 clamps to -127, byte 0; 2^-130 / 2^-127 = 0.125 -> 0 */
        const float v[] = {ldexpf(1.0f, -130)};
        mx_block("2^-130", v, 1, 0x00, NULL, 0);
    }
    { /* amax 2^-126: shared -128 -> -127, byte 0; / 2^-127: 2^-126->2->4, 2^-128->0.5->1,
       * 3*2^-129->0.75->2 (tie) */
        const float v[] = {ldexpf(1.0f, -126), ldexpf(1.0f, -128), ldexpf(3.0f, -129)};
        const uint8_t w[] = {0x14, 0x02};
        mx_block("2^-126", v, 3, 0x00, w, 2);
    }
    { /* amax 3 * 2^-126 = 1.5 * 2^-125: shared exactly -127, byte 0; -> 6 -> 7 */
        const float v[] = {ldexpf(3.0f, -126)};
        const uint8_t w[] = {0x07};
        mx_block("1.5*2^-125", v, 1, 0x00, w, 1);
    }
    { /* amax 2^-124: shared -126, byte 1; -> 4 -> 6 */
        const float v[] = {ldexpf(1.0f, -124)};
        const uint8_t w[] = {0x06};
        mx_block("2^-124", v, 1, 0x01, w, 1);
    }
    { /* smallest subnormal 2^-149: byte 0, 2^-22 -> 0 */
        const float v[] = {FLT_TRUE_MIN};
        mx_block("2^-149", v, 1, 0x00, NULL, 0);
    }
    { /* large: 2^127: shared 125, byte 252; -> 4 -> 6 */
        const float v[] = {ldexpf(1.0f, 127)};
        const uint8_t w[] = {0x06};
        mx_block("2^127", v, 1, 0xFC, w, 1);
    }
    { /* FLT_MAX: floor(log2) 127, shared 125, byte 252; FLT_MAX / 2^125 = 7.99999952 -> 7;
       * -2^125 -> -1 -> A; 5 * 2^124 -> 2.5 -> 4 (tie) */
        const float v[] = {FLT_MAX, -ldexpf(1.0f, 125), ldexpf(5.0f, 124)};
        const uint8_t w[] = {0xA7, 0x04};
        mx_block("FLT_MAX", v, 3, 0xFC, w, 2);
    }
    /* all zero: log2(0) = -inf clamps to -127, byte 0, codes 0 */
    mx_block("zeros", NULL, 0, 0x00, NULL, 0);
    { /* negative zero keeps its sign: amax 1, shared -2, byte 125; -0->8, 1*4->6,
       * -0.01*4 = -0.04 -> -0 -> 8 */
        const float v[] = {-0.0f, 1.0f, -0.01f};
        const uint8_t w[] = {0x68, 0x08};
        mx_block("-0", v, 3, 0x7D, w, 2);
    }
    { /* a block of -0.0 only: amax 0 -> byte 0; every code 8 */
        float v[32];
        for (int i = 0; i < 32; i++) v[i] = -0.0f;
        uint8_t w[16];
        memset(w, 0x88, 16);
        mx_block("all -0", v, 32, 0x00, w, 16);
    }
    { /* NaN or Inf in a block: scale 0xFF (NaN), codes 0; the next block is unaffected */
        const float specials[] = {NAN, INFINITY, -INFINITY};
        for (int s = 0; s < 3; s++) {
            float x[64] = {1, 2, 3};
            x[5] = specials[s];
            x[32] = 6.0f; /* block 1: scale 2^0, code 7 */
            uint8_t blocks[32], scales[2];
            memset(blocks, 0x5A, sizeof blocks);
            fr_mxfp4_quantize_row(x, 64, blocks, scales);
            CHECK_MSG(scales[0] == 0xFF, "special %d: scale 0x%02x", s, scales[0]);
            CHECK(scales[1] == 0x7F);
            int bad = 0;
            for (int j = 0; j < 16; j++) bad += blocks[j] != 0;
            CHECK(bad == 0);
            CHECK(blocks[16] == 0x07);
            float out[64];
            fr_mxfp4_dequantize_row(blocks, scales, 64, out);
            int nans = 0;
            for (int i = 0; i < 32; i++) nans += isnan(out[i]) != 0;
            CHECK(nans == 32);
            CHECK(out[32] == 6.0f && out[33] == 0.0f);
        }
    }
}

static void test_mxfp4_dequant(void) {
    /* byte 0x3A: element 0 = code A (-1), element 1 = code 3 (1.5); scale 130 = 2^3 */
    uint8_t blocks[16] = {0x3A, 0x17}, scale = 130;
    float out[32];
    fr_mxfp4_dequantize_row(blocks, &scale, 32, out);
    CHECK(out[0] == -8.0f && out[1] == 12.0f && out[2] == 48.0f && out[3] == 4.0f && out[4] == 0.0f);
    /* scale byte 0 = 2^-127: code 7 -> 6 * 2^-127 = 1.5 * 2^-125 (bits 0x01400000),
     * code 1 -> 2^-128 (subnormal, bits 0x00200000) */
    scale = 0;
    fr_mxfp4_dequantize_row(blocks, &scale, 32, out);
    CHECK(f32_bits(out[2]) == 0x01400000u);
    CHECK(f32_bits(out[3]) == 0x00200000u);
    /* 2^127 times 1.5 is finite; times 2 (code 4) overflows f32: +Inf (MX can hold values
     * up to 6 * 2^127, f32 only below 2^128) */
    uint8_t b2[16] = {0x32, 0x04}, s2 = 254;
    fr_mxfp4_dequantize_row(b2, &s2, 32, out);
    CHECK(out[0] == ldexpf(1.0f, 127) && out[1] == ldexpf(1.5f, 127));
    CHECK(isinf(out[2]) && out[2] > 0);
    /* NaN scale: all 32 NaN even for code 0 */
    s2 = 0xFF;
    memset(b2, 0, sizeof b2);
    fr_mxfp4_dequantize_row(b2, &s2, 32, out);
    int nans = 0;
    for (int i = 0; i < 32; i++) nans += isnan(out[i]) != 0;
    CHECK(nans == 32);
}

static void test_int4(void) {
    { /* amax 7.5: scale 7.5 / 7.5 = 1.0 = bf16 0x3F80. q: -7.5->-8 (tie, even), 7, 0, 1,
       * -1, 2.5->2, 3.5->4, -2.5->-2; u = q + 8: 0,F,8,9,7,A,C,6 -> word 0x6CA798F0.
       * 0.4->0, 0.5->0 (tie), 0.6->1, -0.5->0, 6.6->7, 7.4->7, -7.4->-7, 7: u 8,8,9,8,F,F,1,F
       * -> 0xF1FF8988 (negative as int32); elements 16..31 zero -> 0x88888888 */
        float x[32] = {-7.5f, 7, 0, 1, -1, 2.5f, 3.5f, -2.5f, 0.4f, 0.5f, 0.6f, -0.5f, 6.6f, 7.4f, -7.4f, 7};
        int32_t p[4];
        uint16_t s;
        fr_int4_quantize_row(x, 32, p, &s);
        CHECK_MSG(s == 0x3F80, "scale 0x%04x", s);
        CHECK((uint32_t)p[0] == 0x6CA798F0u);
        CHECK((uint32_t)p[1] == 0xF1FF8988u);
        CHECK((uint32_t)p[2] == 0x88888888u && (uint32_t)p[3] == 0x88888888u);
        float out[32];
        s = 0x4000; /* 2.0: values are 2q */
        fr_int4_dequantize_row(p, &s, 32, out);
        static const float want[16] = {-16, 14, 0, 2, -2, 4, 8, -4, 0, 0, 2, 0, 14, 14, -14, 14};
        for (int i = 0; i < 16; i++) CHECK_MSG(out[i] == want[i], "int4 dequant %d: %g", i, out[i]);
        CHECK(out[31] == 0.0f);
    }
    { /* amax 1: 1 / 7.5 = 0.1333.. = 1.0667 * 2^-3; bf16 keeps 7 fraction bits:
       * 0.0667 * 128 = 8.53 -> 9, scale (1 + 9/128) / 8 = 137/1024 = 0.1337890625 = 0x3E09.
       * 1 / s = 7.47 -> 7 (F); -1 -> -7 (1); 137/2048 = s/2 -> 0.5 -> 0 (8, tie);
       * 411/2048 = 1.5s -> 2 (A, tie); 685/2048 = 2.5s -> 2 (A); -959/2048 = -3.5s -> -4 (4)
       * -> word nibbles F,1,8,A,A,4,8,8 = 0x884AA81F */
        float x[32] = {1.0f, -1.0f, 137.0f / 2048, 411.0f / 2048, 685.0f / 2048, -959.0f / 2048};
        int32_t p[4];
        uint16_t s;
        fr_int4_quantize_row(x, 32, p, &s);
        CHECK_MSG(s == 0x3E09, "scale 0x%04x", s);
        CHECK_MSG((uint32_t)p[0] == 0x884AA81Fu, "word 0x%08x", (unsigned)p[0]);
    }
    { /* zero group: scale clamps to FLT_EPSILON = 2^-23 = bf16 0x3400, all q 0 */
        float x[32] = {0};
        int32_t p[4];
        uint16_t s;
        fr_int4_quantize_row(x, 32, p, &s);
        CHECK(s == 0x3400);
        CHECK((uint32_t)p[0] == 0x88888888u && (uint32_t)p[3] == 0x88888888u);
    }
    { /* tiny group: 1e-7 / 7.5 < 2^-23, so scale 2^-23; 1e-7 / 2^-23 = 0.84 -> 1 (9) */
        float x[32] = {1e-7f};
        int32_t p[4];
        uint16_t s;
        fr_int4_quantize_row(x, 32, p, &s);
        CHECK(s == 0x3400);
        CHECK((uint32_t)p[0] == 0x88888889u);
    }
    { /* -0.0 and small negatives are q = 0; +7.5 (= +amax) clamps to 7: nibbles 8,F,8,.. */
        float x[32] = {-0.0f, 7.5f, -0.3f};
        int32_t p[4];
        uint16_t s;
        fr_int4_quantize_row(x, 32, p, &s);
        CHECK(s == 0x3F80);
        CHECK((uint32_t)p[0] == 0x888888F8u);
    }
    { /* NaN / Inf: that group's scale NaN (0x7FC0), nibbles 8; the next group unaffected */
        const float specials[] = {NAN, INFINITY, -INFINITY};
        for (int sp = 0; sp < 3; sp++) {
            float x[64] = {1, 2};
            x[7] = specials[sp];
            x[32] = 7.5f; /* scale 1, clamp(7.5) = 7 -> F */
            int32_t p[8];
            uint16_t s[2];
            fr_int4_quantize_row(x, 64, p, s);
            CHECK(s[0] == 0x7FC0 && s[1] == 0x3F80);
            CHECK((uint32_t)p[0] == 0x88888888u && (uint32_t)p[3] == 0x88888888u);
            CHECK((uint32_t)p[4] == 0x8888888Fu);
            float out[64];
            fr_int4_dequantize_row(p, s, 64, out);
            CHECK(isnan(out[0]) && isnan(out[31]) && out[32] == 7.0f);
        }
    }
}

/* A row of n not a multiple of 32: the short last block is quantized as if zero-padded
 * and nothing past ceil(n/2) bytes / ceil(n/8) words / ceil(n/32) scales is written. */
static void test_short_rows(void) {
    float x[41];
    for (int i = 0; i < 41; i++) x[i] = (float)(i % 7) - 3.0f;
    uint8_t blocks[24], scales[4];
    memset(blocks, 0xEE, sizeof blocks);
    memset(scales, 0xEE, sizeof scales);
    fr_mxfp4_quantize_row(x, 41, blocks, scales);
    CHECK(blocks[21] == 0xEE && scales[2] == 0xEE);
    /* last block: x[32..40] = 1,2,3,-3,-2,-1,0,1,2: amax 3, shared -1 (byte 126); x2:
     * 2->4, 4->6, 6->7, -6->F, -4->E, -2->C, 0->0, 2->4, 4->6 (its high nibble unused: 0) */
    CHECK(scales[1] == 0x7E);
    CHECK(blocks[16] == 0x64 && blocks[17] == 0xF7 && blocks[18] == 0xCE && blocks[19] == 0x40 &&
          blocks[20] == 0x06);
    int32_t p[8];
    uint16_t s[4];
    for (int i = 0; i < 8; i++) p[i] = 0x11111111;
    s[2] = 0xEEEE;
    fr_int4_quantize_row(x, 41, p, s);
    CHECK(p[6] == 0x11111111 && s[2] == 0xEEEE);
    /* x[40] = 2 in group 1 (amax 3: scale bf16(0.4) = 0x3ECD = 0.400390625, 2 / 0.4004 =
     * 4.995 -> 5, u 13 = D); the rest of word 5 is padding (8) */
    CHECK(s[1] == 0x3ECD);
    CHECK((uint32_t)p[5] == 0x8888888Du);
}

/* Random rows: the dequantized value of every element is a nearest representable value
 * of its block (E2M1 grid times X, X = 2^(floor(log2 amax) - 2) found independently). */
static void test_mxfp4_random(void) {
    uint32_t st = 12345;
    enum { N = 32 * 64 };
    static float x[N], out[N];
    static uint8_t blocks[N / 2], scales[N / 32];
    for (int i = 0; i < N; i++) {
        st = st * 1664525u + 1013904223u;
        const int blk = i / 32;
        const double mag = ldexp(1.0, (blk % 40) - 20); /* blocks at very different scales */
        x[i] = (float)(((double)(st >> 8) / 16777216.0 * 2.0 - 1.0) * mag);
    }
    x[5] = 0.0f;
    fr_mxfp4_quantize_row(x, N, blocks, scales);
    fr_mxfp4_dequantize_row(blocks, scales, N, out);
    static const double grid[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    int bad = 0;
    for (int b = 0; b < N / 32; b++) {
        double amax = 0;
        for (int i = 0; i < 32; i++) amax = fmax(amax, fabs(x[32 * b + i]));
        int e = 0; /* 2^e <= amax < 2^(e+1) by stepping, no log2 */
        while (ldexp(1.0, e) > amax) e--;
        while (ldexp(1.0, e + 1) <= amax) e++;
        const double X = ldexp(1.0, e - 2 < -127 ? -127 : e - 2);
        if (scales[b] != (uint8_t)((e - 2 < -127 ? -127 : e - 2) + 127)) bad++;
        for (int i = 0; i < 32; i++) {
            const double v = x[32 * b + i], q = out[32 * b + i];
            double best = INFINITY;
            for (int g = 0; g < 8; g++) best = fmin(best, fabs(fabs(v) - grid[g] * X));
            if (!(fabs(v - q) <= best) || (q != 0 && signbit(q) != signbit(v))) bad++;
        }
    }
    CHECK_MSG(bad == 0, "%d MXFP4 round-trip failures", bad);
}

static void test_int4_random(void) {
    uint32_t st = 777;
    enum { N = 32 * 64 };
    static float x[N], out[N];
    static int32_t p[N / 8];
    static uint16_t s[N / 32];
    for (int i = 0; i < N; i++) {
        st = st * 1664525u + 1013904223u;
        x[i] = (float)(((double)(st >> 8) / 16777216.0 * 2.0 - 1.0) * ldexp(1.0, (i / 32) % 30 - 15));
    }
    fr_int4_quantize_row(x, N, p, s);
    fr_int4_dequantize_row(p, s, N, out);
    int bad = 0;
    for (int g = 0; g < N / 32; g++) {
        double amax = 0;
        for (int i = 0; i < 32; i++) amax = fmax(amax, fabs(x[32 * g + i]));
        const double sc = fr_bf16_to_f32(s[g]);
        if (s[g] != fr_f32_to_bf16((float)amax / 7.5f)) bad++;
        for (int i = 0; i < 32; i++) {
            const double v = x[32 * g + i], q = out[32 * g + i];
            double best = INFINITY;
            for (int k = -8; k <= 7; k++) best = fmin(best, fabs(v - k * sc));
            if (!(fabs(v - q) <= best)) bad++;
            if (!(fabs(v - q) <= 0.5 * sc + (fabs(v) > 7 * sc ? fabs(v) - 7 * sc : 0))) bad++;
        }
    }
    CHECK_MSG(bad == 0, "%d INT4 round-trip failures", bad);
}

/* fr_mx_weight_get on whole and row-sliced views, data and scales at odd addresses. */
static void test_weight_get(void) {
    enum { R = 3, C = 64 };
    float x[R * C], ref[R * C];
    for (int i = 0; i < R * C; i++) x[i] = (float)((i * 37) % 23) * 0.25f - 2.5f;
    for (int f = 0; f < 2; f++) {
        const fr_dtype dt = f == 0 ? FR_DTYPE_MXFP4 : FR_DTYPE_INT4;
        uint8_t data[R * C / 2 + 1], sc[R * C / 32 * 2 + 1];
        for (int r = 0; r < R; r++) {
            uint8_t rowd[C / 2], rows_[C / 32 * 2];
            if (dt == FR_DTYPE_MXFP4) {
                fr_mxfp4_quantize_row(x + r * C, C, rowd, rows_);
                fr_mxfp4_dequantize_row(rowd, rows_, C, ref + r * C);
                memcpy(sc + 1 + r * (C / 32), rows_, C / 32);
            } else {
                int32_t pk[C / 8];
                uint16_t s16[C / 32];
                fr_int4_quantize_row(x + r * C, C, pk, s16);
                fr_int4_dequantize_row(pk, s16, C, ref + r * C);
                memcpy(rowd, pk, sizeof rowd);
                memcpy(sc + 1 + r * (C / 32) * 2, s16, sizeof s16);
            }
            memcpy(data + 1 + r * (C / 2), rowd, C / 2);
        }
        fr_weight w = {.dtype = dt, .rows = R, .cols = C, .data = data + 1, .scales = sc + 1, .group = 32};
        int bad = 0;
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++) bad += fr_mx_weight_get(&w, r, c) != ref[r * C + c];
        fr_weight v = fr_weight_rows(&w, 1, 2);
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < C; c++) bad += fr_mx_weight_get(&v, r, c) != ref[(r + 1) * C + c];
        CHECK_MSG(bad == 0, "%s fr_mx_weight_get: %d mismatches", fr_dtype_name(dt), bad);
        CHECK(v.row0 == 1);
        w.scales = NULL;
        CHECK(fr_mx_weight_get(&w, 0, 0) == 0.0f);
    }
    fr_weight bf = {.dtype = FR_DTYPE_BF16, .rows = 1, .cols = 1, .data = "ab"};
    CHECK(fr_mx_weight_get(&bf, 0, 0) == 0.0f);
}

int main(void) {
    test_decode();
    test_e2m1_round();
    test_mxfp4_blocks();
    test_mxfp4_dequant();
    test_int4();
    test_short_rows();
    test_mxfp4_random();
    test_int4_random();
    test_weight_get();
    return check_report("mx");
}
