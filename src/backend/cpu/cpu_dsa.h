/* cpu_dsa.h - the CPU backend's DSA ops (cpu_dsa.c): the indexer's LayerNorm and
 * half-split RoPE, the indexer top-k, and MLA over the selected tokens. Their contracts
 * are the op comments in ../backend.h; cpu_backend.c puts them in its op table. */
#ifndef FR_CPU_DSA_H
#define FR_CPU_DSA_H

#include "../backend.h"

fr_status fr_cpu_layernorm(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, int64_t stride,
                           const fr_weight *w, const fr_weight *b, float eps);
fr_status fr_cpu_rope_half(fr_backend *be, float *x, int64_t n, int heads, int64_t stride, int64_t head_stride,
                           int rope, const int32_t *pos, const double *freqs, float mscale);
fr_status fr_cpu_dsa_select(fr_backend *be, int32_t *sel, const float *q, const float *w, int64_t n, int64_t pos0,
                            const fr_dsa_layer *L);
fr_status fr_cpu_mla_sparse_attention(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                                      const fr_mla_layer *L, const int32_t *sel, int sel_width, bool absorbed);

#endif
