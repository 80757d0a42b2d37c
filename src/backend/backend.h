/* backend.h - the operation table the forward pass is written against.
 *
 * The model's forward pass (src/model/forward.c) is written once as calls on
 * this table of coarse, fusable operations; each backend (cpu/ now, cuda/ next)
 * fills a static fr_backend_ops. Activation buffers come from the backend's own
 * allocator, so on a GPU they are device pointers: the forward pass never
 * dereferences them. Weights are fr_weight views in their stored format.
 *
 * Shapes are given as [rows, cols] in float32 elements, row-major, unless an op
 * says otherwise. An op may alias `out` with an input only where it says so.
 * Ops marked "(optional)" may be NULL; the fr_be_* wrappers then report
 * FR_ERR_UNSUPPORTED naming the op. Keep the table able to carry communication
 * ops (all-reduce fused with add+RMSNorm for tensor parallelism). */
#ifndef FR_BACKEND_H
#define FR_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../core/status.h"
#include "../core/weight.h"

#define FR_BACKEND_API_VERSION 5

typedef struct fr_backend fr_backend;

/* ---- KV cache rows
 *
 * A cache row holds one token's values for one layer: n_lat values, then n_rope values
 * (the MLA latent: normed c_kv then roped k_pe, n_lat = kv_lora, n_rope = rope; a DSA
 * indexer key: n_lat = index_head_dim, n_rope = 0). Its element format is the pool's: */
typedef enum {
    FR_KV_F32 = 0, /* float32, exact: n_lat + n_rope floats per row (the default) */
    FR_KV_FP8,     /* n_lat values E4M3 under one float32 scale, n_rope values BF16 */
} fr_kv_dtype;

/* An FP8 row (bytes from its start; rows start 16-byte aligned):
 *   [0, n_lat)                         E4M3, value = e4m3 * scale
 *   [rope_off, rope_off + 2 * n_rope)  BF16 (round to nearest even), rope_off = n_lat rounded up to 4
 *   [scale_off, scale_off + 4)         float32 scale = amax(|lat values|) / 448, 0 for an all-zero row
 * then padding to a multiple of 16 bytes, so that vector loads (16 bytes on a GPU) never
 * straddle rows. DeepSeek's 512 + 64 latent: 656 bytes (float32: 2304); a 128-wide
 * indexer key: 144 (512). The k_pe stays BF16 (as in FlashMLA's FP8 layout, ARCH.md 5):
 * it is 64 of the 576 values, and off the shared scale the positional part of every score
 * keeps BF16 precision. */
static inline int64_t fr_kv_fp8_rope_off(int64_t n_lat) { return (n_lat + 3) & ~(int64_t)3; }
static inline int64_t fr_kv_fp8_scale_off(int64_t n_lat, int64_t n_rope) {
    return (fr_kv_fp8_rope_off(n_lat) + 2 * n_rope + 3) & ~(int64_t)3;
}
/* Bytes from one cache row to the next. */
static inline int64_t fr_kv_row_bytes(fr_kv_dtype dt, int64_t n_lat, int64_t n_rope) {
    if (dt == FR_KV_F32) return (n_lat + n_rope) * (int64_t)sizeof(float);
    return (fr_kv_fp8_scale_off(n_lat, n_rope) + 4 + 15) & ~(int64_t)15;
}
static inline float fr_kv_fp8_scale(const uint8_t *row, int64_t n_lat, int64_t n_rope) {
    float s;
    memcpy(&s, row + fr_kv_fp8_scale_off(n_lat, n_rope), sizeof s);
    return s;
}
static inline const uint16_t *fr_kv_fp8_rope(const uint8_t *row, int64_t n_lat) {
    return (const uint16_t *)(const void *)(row + fr_kv_fp8_rope_off(n_lat));
}
/* An FP8 row as n_lat + n_rope floats. */
static inline void fr_kv_fp8_decode(const uint8_t *row, int64_t n_lat, int64_t n_rope, float *out) {
    const float s = fr_kv_fp8_scale(row, n_lat, n_rope);
    const uint16_t *pe = fr_kv_fp8_rope(row, n_lat);
    for (int64_t i = 0; i < n_lat; i++) out[i] = fr_e4m3_to_f32(row[i]) * s;
    for (int64_t i = 0; i < n_rope; i++) out[n_lat + i] = fr_bf16_to_f32(pe[i]);
}
/* The reference FP8 encoder of one row x[n_lat + n_rope] (backend.c): what the kv_write
 * op must store. Scale amax/448 (so the largest value maps to +-448 exactly), each lat
 * value x / scale rounded to the nearest E4M3 (ties to even, saturating), rope values
 * to BF16; padding bytes are zeroed. A row with amax 0 stores scale 0 and zero bytes. */
void fr_kv_fp8_encode(const float *x, int64_t n_lat, int64_t n_rope, uint8_t *row);

/* Everything attention needs to know about one layer's MLA weights and cache. */
typedef struct {
    int n_heads, nope, rope, v, kv_lora; /* H, d_n, d_r, d_v, r_kv */
    float scale;                         /* softmax scale incl. YaRN mscale^2 */
    const fr_weight *kv_b;               /* [H * (nope + v), kv_lora]: per head W_UK rows then W_UV rows */
    /* The paged latent cache: rows of kv_lora + rope values (normed c_kv then roped k_pe) in
     * kv_dtype (rows fr_kv_row_bytes(kv_dtype, kv_lora, rope) apart) in blocks of block_size
     * rows; the sequence's token s is row blocks[s / block_size] * block_size + s % block_size. */
    const void *cache;
    fr_kv_dtype kv_dtype;
    const int32_t *blocks;               /* the sequence's block table (host memory) */
    int block_size;
    int64_t max_ctx;                     /* >= pos0 + n, the same on every decode step of the
                                          * sequence: what a recorded step's launches (and the
                                          * staged block table) are sized by; blocks holds
                                          * ceil((pos0 + n) / block_size) valid entries */
} fr_mla_layer;

/* Cache row of the sequence's token s. */
static inline int64_t fr_mla_slot(const fr_mla_layer *L, int64_t s) {
    return (int64_t)L->blocks[s / L->block_size] * L->block_size + s % L->block_size;
}
/* Token s's row in an FP8 latent cache. */
static inline const uint8_t *fr_mla_row_fp8(const fr_mla_layer *L, int64_t s) {
    return (const uint8_t *)L->cache + fr_mla_slot(L, s) * fr_kv_row_bytes(FR_KV_FP8, L->kv_lora, L->rope);
}
/* Token s's latent row as kv_lora + rope floats, either dtype: a pointer into a float32
 * cache (tmp unused, so that path costs what it always did), or the FP8 row decoded
 * into tmp[kv_lora + rope]. */
static inline const float *fr_mla_row(const fr_mla_layer *L, int64_t s, float *tmp) {
    if (L->kv_dtype == FR_KV_F32) return (const float *)L->cache + fr_mla_slot(L, s) * (L->kv_lora + L->rope);
    fr_kv_fp8_decode(fr_mla_row_fp8(L, s), L->kv_lora, L->rope, tmp);
    return tmp;
}

/* One layer's DSA indexer (DeepSeek Sparse Attention, shared/docs/ARCH.md 5): sizes and its
 * paged key cache. Keys are LayerNorm'd and roped, head_dim values per token in kv_dtype
 * (cache rows with n_lat = head_dim, n_rope = 0), paged with the same block table and
 * block size as the latent cache (token s is row blocks[s / block_size] * block_size +
 * s % block_size of `keys`). */
typedef struct {
    int n_heads, head_dim;   /* H_I, D_I */
    int topk;                /* width of a selection row: min(index_topk, tokens the cache holds) */
    float scale;             /* H_I^-1/2 (on weights_proj) * D_I^-1/2 (on q·k) */
    const void *keys;
    fr_kv_dtype kv_dtype;
    const int32_t *blocks;   /* the sequence's block table (host memory) */
    int block_size;
    int64_t max_ctx;         /* as in fr_mla_layer */
} fr_dsa_layer;

/* Cache row of the sequence's token s. */
static inline int64_t fr_dsa_slot(const fr_dsa_layer *L, int64_t s) {
    return (int64_t)L->blocks[s / L->block_size] * L->block_size + s % L->block_size;
}
/* Token s's indexer key as head_dim floats, either dtype (as fr_mla_row; tmp[head_dim]). */
static inline const float *fr_dsa_key(const fr_dsa_layer *L, int64_t s, float *tmp) {
    if (L->kv_dtype == FR_KV_F32) return (const float *)L->keys + fr_dsa_slot(L, s) * L->head_dim;
    const uint8_t *row = (const uint8_t *)L->keys + fr_dsa_slot(L, s) * fr_kv_row_bytes(FR_KV_FP8, L->head_dim, 0);
    fr_kv_fp8_decode(row, L->head_dim, 0, tmp);
    return tmp;
}

/* MoE routing parameters (noaux_tc: sigmoid scores, bias for selection only). */
typedef struct {
    int n_experts, top_k, n_group, topk_group;
    bool norm_topk_prob;
    float routed_scaling_factor;
    const fr_weight *gate;     /* router [E, D] */
    const fr_weight *bias;     /* e_score_correction_bias [E] (F32), may be NULL */
} fr_router;

/* One SwiGLU MLP: down(silu(gate x) * up x). */
typedef struct {
    const fr_weight *gate, *up, *down; /* [I, D], [I, D], [D, I] */
} fr_mlp;

typedef struct {
    int api_version;
    const char *name;

    /* Release the backend and everything it owns (be itself included). */
    void (*destroy)(fr_backend *be);
    /* Allocate / free an activation buffer of `bytes` bytes (zeroed). */
    void *(*alloc)(fr_backend *be, size_t bytes);
    void (*free)(fr_backend *be, void *p);
    /* Wait for queued work (optional: synchronous backends leave it NULL). */
    fr_status (*synchronize)(fr_backend *be);

    /* out[t] = table row ids[t]; out [n, table->cols]. ids were range-checked by the caller. */
    fr_status (*embed)(fr_backend *be, float *out, const int32_t *ids, int64_t n, const fr_weight *table);
    /* y[n, w->rows] = x[n, w->cols] · Wᵀ. */
    fr_status (*matmul)(fr_backend *be, float *y, const float *x, int64_t n, const fr_weight *w);
    /* out[t] = w ⊙ x[t] / sqrt(mean(x[t]²) + eps), rows of length dim with stride `stride`
     * in both x and out (out may alias x). */
    fr_status (*rmsnorm)(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, int64_t stride,
                         const fr_weight *w, float eps);
    /* Fused residual add + RMSNorm: resid += delta; out = rmsnorm(resid). delta may be NULL. */
    fr_status (*add_rmsnorm)(fr_backend *be, float *out, float *resid, const float *delta, int64_t n,
                             int64_t dim, const fr_weight *w, float eps);
    /* Rotate interleaved pairs (x[2i], x[2i+1]) of `heads` vectors of `rope` dims, the first at
     * x + t*stride, the next heads each head_stride further, by angle pos[t] * freqs[i], with
     * cos and sin scaled by mscale (YaRN's attention factor; 1 for released configs). */
    fr_status (*rope)(fr_backend *be, float *x, int64_t n, int heads, int64_t stride, int64_t head_stride,
                      int rope, const int32_t *pos, const double *freqs, float mscale);
    /* MLA over the latent cache for n query tokens at positions pos0 .. pos0+n-1 whose cache rows
     * are already written. q: [n, H, nope + rope] (rope part already rotated); out: [n, H * v].
     * absorbed=false: the prefill ("naive") form that up-projects keys and values from the
     * latent; absorbed=true: the decode form that absorbs W_UK into q and W_UV into the output. */
    fr_status (*mla_attention)(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                               const fr_mla_layer *L, bool absorbed);
    /* Routed experts + shared MLP: out[n, D] = Σ_j w_j Expert_{idx_j}(x) + shared(x). */
    fr_status (*moe)(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, const fr_router *r,
                     const fr_mlp *experts, const fr_mlp *shared);
    /* Dense SwiGLU MLP: out[n, D] = down(silu(gate x) ⊙ up x). */
    fr_status (*mlp)(fr_backend *be, float *out, const float *x, int64_t n, const fr_mlp *m);
    /* dst[dst_rows[i]] = src[src_rows[i]] for i < n, rows of dim floats (a NULL index array
     * means 0, 1, 2, ...): gathers rows for the head. The index arrays are host memory. */
    fr_status (*copy_rows)(fr_backend *be, float *dst, const int64_t *dst_rows, const float *src,
                           const int64_t *src_rows, int64_t n, int64_t dim);
    /* Write n tokens into a paged cache in its dtype: src row i (n_lat + n_rope floats, rows
     * packed) becomes cache row dst_rows[i] (host memory), fr_kv_row_bytes(dt, ...) apart.
     * FR_KV_F32 copies; FR_KV_FP8 encodes each row exactly as fr_kv_fp8_encode does (one
     * amax reduction and n_lat + n_rope conversions per row: a warp per row on a GPU). The
     * attention ops read the rows back through fr_mla_row / fr_dsa_key or the same layout. */
    fr_status (*kv_write)(fr_backend *be, void *cache, fr_kv_dtype dt, const int64_t *dst_rows, const float *src,
                          int64_t n, int64_t n_lat, int64_t n_rope);
    /* Copy n floats (or n int32 ids from argmax: any 4-byte values) device->host (host
     * backends: memcpy). */
    fr_status (*to_host)(fr_backend *be, float *host, const float *src, size_t n);
    /* Copy n floats host->device (optional; host backends: memcpy). Filling a cache with
     * synthetic rows for a long-context benchmark is its one user. */
    fr_status (*from_host)(fr_backend *be, float *dst, const float *host, size_t n);
    /* Sum `buf` over all ranks of a tensor-parallel group (optional; single-rank backends: NULL). */
    fr_status (*all_reduce)(fr_backend *be, float *buf, size_t n);

    /* ---- DSA (ARCH 5); optional: NULL in a backend without sparse attention, and then a
     * DSA model is refused when the forward pass is created. */
    /* LayerNorm: out[t] = (x[t] - mean) / sqrt(var + eps) ⊙ w + b over dim values, rows
     * `stride` apart in x and out (out may alias x); statistics in float32 or wider. */
    fr_status (*layernorm)(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, int64_t stride,
                           const fr_weight *w, const fr_weight *b, float eps);
    /* As rope, but on half-split pairs (x[i], x[i + rope/2]) ("NeoX" layout; the DeepSeek-V3.2
     * indexer). */
    fr_status (*rope_half)(fr_backend *be, float *x, int64_t n, int heads, int64_t stride, int64_t head_stride,
                           int rope, const int32_t *pos, const double *freqs, float mscale);
    /* Indexer top-k for n query tokens at positions pos0 .. pos0+n-1 of one sequence whose
     * keys (these tokens' included) are in L->keys. q: [n, H_I, D_I] (roped); w: [n, H_I]
     * (weights_proj output, unscaled). Token t scores every key s <= pos0+t as
     * I = scale * Σ_h w[t,h] * ReLU(q[t,h]·k[s]) and keeps the min(topk, pos0+t+1) best
     * (equal scores: the earlier key). sel: [n, L->topk] backend memory; row t gets the
     * kept positions in increasing order, then -1 padding. */
    fr_status (*dsa_select)(fr_backend *be, int32_t *sel, const float *q, const float *w, int64_t n, int64_t pos0,
                            const fr_dsa_layer *L);
    /* mla_attention restricted to selected keys: query token t attends only to the
     * positions in row t of sel ([n, sel_width], as dsa_select writes it; every entry
     * <= pos0+t, -1 ends a row early). Same q, out, forms and cache as mla_attention. */
    fr_status (*mla_sparse_attention)(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                                      const fr_mla_layer *L, const int32_t *sel, int sel_width, bool absorbed);

    /* Make weight w usable by later ops (optional: host-memory backends leave it NULL). A
     * device backend copies the tensor's bytes (data, scales, scale grid) to device memory
     * once, in their stored format; registering bytes already resident is a no-op. The
     * forward pass registers every weight of the model when it is created; ops later
     * receive the same host views and translate them. */
    fr_status (*register_weight)(fr_backend *be, const fr_weight *w);

    /* Step bracketing (optional, both or neither). The forward pass calls step_begin before
     * a step's first op and step_end after its last, before reading results. key names a
     * step shape that repeats with only per-step values changing (a decode step of T
     * sequences), 0 a one-off. A backend may record a repeated shape once (a CUDA graph) and
     * replay it; ops then must take every per-step value (positions, lengths, block-table
     * contents, rows) from memory they stage, never from a launch argument, which is why the
     * attention ops get max_ctx. step_end returns FR_ERR_RETRY when it ran nothing (a replay
     * did not match the recording): the caller runs the step again. */
    fr_status (*step_begin)(fr_backend *be, uint64_t key);
    fr_status (*step_end)(fr_backend *be);

    /* Greedy pick (optional): ids[r] = fr_argmax_f32(x + r * cols, cols) for r < rows (the
     * first index of the largest value; core/argmax.h), cols < 2^24. x and ids are backend
     * memory. A greedy decode step then brings rows ids to the host, not rows x vocab
     * floats. */
    fr_status (*argmax)(fr_backend *be, int32_t *ids, const float *x, int64_t rows, int64_t cols);
} fr_backend_ops;

struct fr_backend {
    const fr_backend_ops *ops;
    void *ctx;          /* backend private state */
    int n_threads;
    /* Counters a benchmark reads: bytes of weights the matmul-type ops touched, and the
     * seconds spent in attention (mla_attention, mla_sparse_attention) and in the DSA
     * indexer's scoring and top-k (dsa_select). The CPU backend times each call; an
     * asynchronous backend would time with events and add at synchronize. */
    uint64_t weight_bytes_read;
    double attention_s, indexer_s;
};

/* CPU backend with n_threads OpenMP threads (0: all cores). */
fr_status fr_cpu_backend_create(int n_threads, fr_backend **out, fr_error *err);
void fr_backend_destroy(fr_backend *be);

/* Router selection on one row of scores (exposed for tests): writes top_k expert ids and
 * weights. scores: sigmoid outputs [E]; bias may be NULL. */
void fr_route_select(const fr_router *r, const float *scores, const float *bias, int32_t *idx, float *w);

#endif
