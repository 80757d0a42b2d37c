/* weight.c - scalar access to a weight view (see weight.h). */
#include "weight.h"

#include "mx.h"

float fr_weight_get(const fr_weight *w, int64_t r, int64_t c) {
    size_t i = (size_t)r * (size_t)w->cols + (size_t)c;
    switch (w->dtype) {
    case FR_DTYPE_F32: return ((const float *)w->data)[i];
    case FR_DTYPE_F16: return fr_f16_to_f32(((const uint16_t *)w->data)[i]);
    case FR_DTYPE_BF16: return fr_bf16_to_f32(((const uint16_t *)w->data)[i]);
    case FR_DTYPE_F8_E4M3: {
        float v = fr_e4m3_to_f32(((const uint8_t *)w->data)[i]);
        int64_t sr = (w->row0 + r) / w->block_rows, sc = c / w->block_cols;
        return v * w->scale_inv[sr * w->scale_cols + sc];
    }
    case FR_DTYPE_MXFP4:
    case FR_DTYPE_INT4: return fr_mx_weight_get(w, r, c);
    default: return 0.0f;
    }
}
