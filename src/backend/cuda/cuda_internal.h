/* cuda_internal.h - what the CUDA backend's files share (C++ / CUDA only).
 *
 * The op table lives in cuda_backend.cu; each k_*.cu file implements some ops with
 * the exact signatures of fr_backend_ops (backend.h). Pointers to activations, caches
 * and scratch are device pointers. Weights arrive as host fr_weight views (pointers into
 * the mmap'd checkpoint or a host buffer); every weight the model owns was uploaded once
 * by the register_weight op, and fr_cu_weight turns a view into the same view over the
 * device copy. Host arrays an op receives (positions, rows, block tables, RoPE
 * frequencies) are copied to the device with fr_cu_stage. All work goes on one stream;
 * nothing here synchronizes except to_host and a staging-ring wrap. */
#ifndef FR_CUDA_INTERNAL_H
#define FR_CUDA_INTERNAL_H

#include "gpu_compat.h"

extern "C" {
#include "../backend.h"
}

/* Scratch buffers an op may keep between calls, one per purpose (grown on demand). */
typedef enum {
    FR_CU_SCRATCH_MATMUL = 0,
    FR_CU_SCRATCH_ATTN,
    FR_CU_SCRATCH_ATTN2,
    FR_CU_SCRATCH_MOE,
    FR_CU_SCRATCH_MOE2,
    FR_CU_SCRATCH_MOE3,
    FR_CU_SCRATCH_DSA,
    FR_CU_SCRATCH_COUNT
} fr_cu_scratch_slot;

typedef struct fr_cu_ctx fr_cu_ctx;

fr_gpu_stream fr_cu_stream(fr_backend *be);
/* The device's multiprocessor count (132 on an H100 SXM / H200), which sizes split-K and
 * the attention splits: enough blocks to fill every SM. */
int fr_cu_sm_count(fr_backend *be);
/* The device view of host view w (data, scale_inv, scales translated). FR_ERR_INVALID if
 * w's bytes were never registered. */
fr_status fr_cu_weight(fr_backend *be, const fr_weight *w, fr_weight *dev);
/* Device copy of `bytes` host bytes, valid for work queued on the stream from now until
 * the staging ring wraps (a wrap synchronizes the stream first). NULL on failure. Within a
 * step (step_begin .. step_end) an array is staged once and later calls with the same host
 * address and size return that copy: the host array must not change during the step (true
 * of every array the op table hands an op). */
const void *fr_cu_stage(fr_backend *be, const void *host, size_t bytes);
/* A value built by the op itself (a position in a stack variable): staged by content, so
 * equal values within a step share one copy and a reused stack address is never mistaken
 * for an earlier value. */
const void *fr_cu_stage_value(fr_backend *be, const void *value, size_t bytes);
/* As fr_cu_stage, taking `reserve` >= bytes of ring: an array whose length changes from step
 * to step (a block table) staged at its longest keeps a recorded step's layout. */
const void *fr_cu_stage_reserve(fr_backend *be, const void *host, size_t bytes, size_t reserve);
/* Device scratch buffer `slot` of at least `bytes` (contents undefined); NULL on failure.
 * Growing synchronizes the stream (the old buffer may still be in use). */
void *fr_cu_scratch(fr_backend *be, fr_cu_scratch_slot slot, size_t bytes);
/* FR_ERR_DEVICE if a launch or earlier async work failed (the message goes to stderr
 * once, naming `what`), else FR_OK. Call after each op's launches. */
fr_status fr_cu_check(fr_backend *be, const char *what);

/* A device buffer of `bytes` tied to `key` for the backend's lifetime (per-expert weight
 * tables, say): allocated on the first call with *fresh = true, when the caller fills
 * it; later calls with the same key return it with *fresh = false. NULL on failure. */
void *fr_cu_memo(fr_backend *be, const void *key, size_t bytes, bool *fresh);
/* A device counter of weight bytes that kernels add to (atomicAdd) when only the device
 * knows what they read (the experts routing chose); the backend folds it into
 * be->weight_bytes_read at synchronize and to_host. */
unsigned long long *fr_cu_bytes_counter(fr_backend *be);

/* Launch geometry helper. */
static inline unsigned fr_cu_blocks(int64_t n, int64_t per_block) { return (unsigned)((n + per_block - 1) / per_block); }

/* ---- ops implemented in the k_*.cu files */
/* k_basic.cu */
fr_status fr_cu_embed(fr_backend *be, float *out, const int32_t *ids, int64_t n, const fr_weight *table);
fr_status fr_cu_rmsnorm(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, int64_t stride,
                        const fr_weight *w, float eps);
fr_status fr_cu_add_rmsnorm(fr_backend *be, float *out, float *resid, const float *delta, int64_t n, int64_t dim,
                            const fr_weight *w, float eps);
fr_status fr_cu_rope(fr_backend *be, float *x, int64_t n, int heads, int64_t stride, int64_t head_stride, int rope,
                     const int32_t *pos, const double *freqs, float mscale);
fr_status fr_cu_rope_half(fr_backend *be, float *x, int64_t n, int heads, int64_t stride, int64_t head_stride,
                          int rope, const int32_t *pos, const double *freqs, float mscale);
fr_status fr_cu_layernorm(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, int64_t stride,
                          const fr_weight *w, const fr_weight *b, float eps);
fr_status fr_cu_argmax(fr_backend *be, int32_t *ids, const float *x, int64_t rows, int64_t cols);
fr_status fr_cu_copy_rows(fr_backend *be, float *dst, const int64_t *dst_rows, const float *src,
                          const int64_t *src_rows, int64_t n, int64_t dim);
fr_status fr_cu_kv_write(fr_backend *be, void *cache, fr_kv_dtype dt, const int64_t *dst_rows, const float *src,
                         int64_t n, int64_t n_lat, int64_t n_rope);
/* k_matmul.cu */
fr_status fr_cu_matmul(fr_backend *be, float *y, const float *x, int64_t n, const fr_weight *w);
/* y[n, dev->rows] = x[n, dev->cols] · Wᵀ for a weight view already on the device (other
 * ops' building block: no translation, no byte counting). */
fr_status fr_cu_matmul_dev(fr_backend *be, float *y, const float *x, int64_t n, const fr_weight *dev);
/* k_attention.cu */
fr_status fr_cu_mla_attention(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                              const fr_mla_layer *L, bool absorbed);
fr_status fr_cu_mla_sparse_attention(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                                     const fr_mla_layer *L, const int32_t *sel, int sel_width, bool absorbed);
fr_status fr_cu_dsa_select(fr_backend *be, int32_t *sel, const float *q, const float *w, int64_t n, int64_t pos0,
                           const fr_dsa_layer *L);
/* k_moe.cu */
fr_status fr_cu_moe(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, const fr_router *r,
                    const fr_mlp *experts, const fr_mlp *shared);
fr_status fr_cu_mlp(fr_backend *be, float *out, const float *x, int64_t n, const fr_mlp *m);

#endif
