/* weight.h - a read-only view of one weight matrix in its stored format.
 *
 * Kernels read weights exactly as the checkpoint stores them: no dequantized copy
 * of a whole tensor is ever kept. A view may cover a slice of rows of a larger
 * tensor (one head of kv_b_proj, one shard for tensor parallelism): `data` then
 * points at the first row of the slice and `row0` says where that row sits in the
 * original tensor, so the FP8 block-scale grid is indexed correctly. */
#ifndef FR_WEIGHT_H
#define FR_WEIGHT_H

#include <stdint.h>

#include "dtype.h"

typedef struct {
    fr_dtype dtype;       /* F32, F16, BF16 or F8_E4M3 */
    int64_t rows, cols;   /* [out_features, in_features]; y = x · Wᵀ */
    const void *data;     /* borrowed: row-major [rows, cols], usually inside an mmap */
    /* F8_E4M3 only (NULL otherwise): the checkpoint's `weight_scale_inv`, a multiplier,
     * W_real[r, c] = W[r, c] * scale_inv[(row0 + r) / block_rows, c / block_cols]. */
    const float *scale_inv; /* borrowed: [scale_rows, scale_cols] row-major */
    int32_t block_rows, block_cols;
    int64_t scale_cols;   /* ceil(full tensor cols / block_cols) */
    int64_t row0;         /* index of row 0 of this view inside the full tensor */
    /* MXFP4 and INT4 only (NULL otherwise): one scale per `group` (32) inputs of each row,
     * row-major [rows, cols / group]; E8M0 bytes for MXFP4, BF16 for INT4. cols is a
     * multiple of group. Data rows: MXFP4 cols/2 bytes (element 2j in the low nibble of
     * byte j); INT4 cols/8 int32 words (element k at bits 4*(k%8) of word k/8, value u-8). */
    const void *scales;
    int32_t group;
} fr_weight;

/* Stored bytes of one row of w (scales not included). */
static inline int64_t fr_weight_row_bytes(const fr_weight *w) {
    switch (w->dtype) {
    case FR_DTYPE_MXFP4: return w->cols / 2;
    case FR_DTYPE_INT4: return w->cols / 8 * 4;
    default: return w->cols * (int64_t)fr_dtype_size(w->dtype);
    }
}

/* Bytes of one row's group scales (MXFP4, INT4), else 0. */
static inline int64_t fr_weight_row_scale_bytes(const fr_weight *w) {
    if (w->dtype == FR_DTYPE_MXFP4) return w->cols / w->group;
    if (w->dtype == FR_DTYPE_INT4) return w->cols / w->group * 2;
    return 0;
}

/* View of rows [r0, r0 + n) of w. */
static inline fr_weight fr_weight_rows(const fr_weight *w, int64_t r0, int64_t n) {
    fr_weight v = *w;
    v.data = (const uint8_t *)w->data + (size_t)r0 * (size_t)fr_weight_row_bytes(w);
    if (w->scales) v.scales = (const uint8_t *)w->scales + (size_t)r0 * (size_t)fr_weight_row_scale_bytes(w);
    v.rows = n;
    v.row0 = w->row0 + r0;
    return v;
}

/* Bytes of the stored matrix (and its scales) that a full pass over it reads. */
static inline int64_t fr_weight_bytes(const fr_weight *w) {
    int64_t b = w->rows * (fr_weight_row_bytes(w) + fr_weight_row_scale_bytes(w));
    if (w->scale_inv) {
        int64_t sr = (w->rows + w->block_rows - 1) / w->block_rows + 1;
        b += sr * w->scale_cols * 4;
    }
    return b;
}

/* Element (r, c) of the view as float32 (slow path: tests, the odd scalar use). */
float fr_weight_get(const fr_weight *w, int64_t r, int64_t c);

#endif
