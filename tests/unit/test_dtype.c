/* test_dtype.c - scalar conversions against their format definitions. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "core/dtype.h"
#include "core/status.h"

int main(void) {
    /* e4m3 table: spot values from the OCP FP8 definition */
    CHECK(fr_e4m3_to_f32(0x00) == 0.0f);
    CHECK(fr_e4m3_to_f32(0x38) == 1.0f);            /* e = 7, m = 0 */
    CHECK(fr_e4m3_to_f32(0x7e) == 448.0f);          /* max finite */
    CHECK(fr_e4m3_to_f32(0xfe) == -448.0f);
    CHECK(fr_e4m3_to_f32(0x01) == ldexpf(1.0f, -9)); /* min subnormal */
    CHECK(fr_e4m3_to_f32(0x08) == ldexpf(1.0f, -6)); /* min normal */
    CHECK(isnan(fr_e4m3_to_f32(0x7f)) && isnan(fr_e4m3_to_f32(0xff)));
    /* encode: every finite code round-trips, saturation, nearest-even ties */
    int bad = 0;
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7f) == 0x7f) continue;
        float v = fr_e4m3_to_f32((uint8_t)b);
        uint8_t e = fr_f32_to_e4m3(v);
        if (fr_e4m3_to_f32(e) != v) bad++;
    }
    CHECK_MSG(bad == 0, "%d e4m3 codes do not round-trip", bad);
    CHECK(fr_f32_to_e4m3(1000.0f) == 0x7e);
    CHECK(fr_f32_to_e4m3(-1e9f) == 0xfe);
    CHECK(fr_e4m3_to_f32(fr_f32_to_e4m3(1.0625f)) == 1.0f);  /* tie between 1 and 1.125 -> even (1.0) */
    CHECK(fr_e4m3_to_f32(fr_f32_to_e4m3(1.1875f)) == 1.25f); /* tie between 1.125 and 1.25 -> even (1.25) */

    /* bf16 */
    CHECK(fr_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(fr_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(fr_f32_to_bf16(1.0f + ldexpf(1.0f, -8)) == 0x3f80); /* tie -> even */
    CHECK(fr_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)) == 0x3f82);
    CHECK(isnan(fr_bf16_to_f32(fr_f32_to_bf16(NAN))));

    /* f16: every code round-trips through f32 */
    bad = 0;
    for (int h = 0; h < 65536; h++) {
        float v = fr_f16_to_f32((uint16_t)h);
        if (isnan(v)) continue;
        if (fr_f32_to_f16(v) != (uint16_t)h) bad++;
    }
    CHECK_MSG(bad == 0, "%d f16 codes do not round-trip", bad);
    CHECK(fr_f16_to_f32(0x3c00) == 1.0f && fr_f16_to_f32(0x0001) == ldexpf(1.0f, -24));

    /* names */
    fr_dtype t;
    CHECK(fr_dtype_parse("F8_E4M3", &t) == 0 && t == FR_DTYPE_F8_E4M3);
    CHECK(fr_dtype_parse("BF16", &t) == 0 && fr_dtype_size(t) == 2);
    CHECK(fr_dtype_parse("Q4_K", &t) == -1);

    fr_error err;
    CHECK(fr_fail(&err, FR_ERR_FORMAT, "x %d", 3) == FR_ERR_FORMAT && !strcmp(err.msg, "x 3"));
    fr_error_prefix(&err, "file.json");
    CHECK(!strcmp(err.msg, "file.json: x 3"));
    return check_report("dtype");
}
