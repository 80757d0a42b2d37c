/* kv_cache.h - the paged latent KV cache: a pool of fixed-size blocks per layer and
 * per-sequence block tables.
 *
 * Every layer's pool has the same block layout, so one block id names the same
 * tokens in all layers and a sequence needs one table. A block holds block_size
 * rows of kv_lora + rope values (normed c_kv then roped k_pe, ARCH.md 4.5) in the
 * pool's dtype: float32 (exact, the default) or FP8 (c_kv E4M3 with one float32 scale
 * per token, k_pe BF16: backend.h has the row layout; 3.5x smaller at DeepSeek's
 * sizes). Blocks come from a free stack: taking and returning one is O(1), and a
 * finished or aborted sequence gives all of its blocks back at once.
 *
 * DSA models (ARCH.md 5) also cache one indexer key (index_head_dim values) per token
 * for each layer that runs its own indexer, in a second pool per such layer with the
 * same block layout, so the same block table finds a token's latent and its key. The
 * keys take the pool's dtype too (FP8: E4M3 with one scale per key). */
#ifndef FR_KV_CACHE_H
#define FR_KV_CACHE_H

#include <stdint.h>

#include "model.h"

typedef struct {
    fr_backend *be;
    int n_layers, block_size;
    fr_kv_dtype dtype;
    int64_t row;       /* values per token and layer (kv_lora + rope) */
    int64_t row_bytes; /* bytes per token and layer: fr_kv_row_bytes(dtype, kv_lora, rope) */
    int64_t n_blocks;  /* blocks in the pool */
    int64_t n_free;    /* blocks on the free stack */
    void **layer;      /* [n_layers] backend memory of n_blocks * block_size rows */
    int64_t index_row; /* DSA: values per indexer key (index_head_dim), else 0 */
    int64_t index_row_bytes; /* DSA: fr_kv_row_bytes(dtype, index_head_dim, 0), else 0 */
    void **index_layer; /* DSA: [n_layers] n_blocks * block_size keys; NULL for layers without
                         * an indexer (and the whole array NULL for non-DSA models) */
    int32_t *free_ids; /* [n_blocks] free stack, top at n_free - 1 */
} fr_kv_pool;

/* A sequence's block table: blocks[i] holds its tokens i*block_size .. (i+1)*block_size - 1. */
typedef struct {
    int32_t *blocks;
    int64_t n_blocks, cap;
} fr_kv_seq;

/* A pool of n_blocks blocks of block_size tokens, float32 (fr_kv_pool_create_dtype with
 * FR_KV_F32). */
fr_status fr_kv_pool_create(const fr_model *m, fr_backend *be, int64_t n_blocks, int block_size, fr_kv_pool **out,
                            fr_error *err);
/* The same with the cache's element format (what an engine option such as
 * --kv-cache-dtype selects). */
fr_status fr_kv_pool_create_dtype(const fr_model *m, fr_backend *be, int64_t n_blocks, int block_size,
                                  fr_kv_dtype dtype, fr_kv_pool **out, fr_error *err);

/* Bytes one token occupies in a pool of this dtype for model m, over all layers: the
 * latent rows plus the indexer keys of DSA layers (what sizes a pool for a memory budget). */
int64_t fr_kv_bytes_per_token(const fr_model *m, fr_kv_dtype dtype);

/* "auto" / "float32" -> FR_KV_F32 (the exact default), "fp8" / "fp8_e4m3" -> FR_KV_FP8
 * (the spellings of vLLM's --kv-cache-dtype). FR_ERR_INVALID names the accepted values. */
fr_status fr_kv_dtype_parse(const char *s, fr_kv_dtype *out, fr_error *err);
/* "float32" or "fp8_e4m3". */
const char *fr_kv_dtype_name(fr_kv_dtype dtype);
void fr_kv_pool_free(fr_kv_pool *p);

/* Blocks seq still needs to hold n_tokens (0 when it already does). */
int64_t fr_kv_blocks_needed(const fr_kv_pool *p, const fr_kv_seq *s, int64_t n_tokens);
/* Make seq hold n_tokens. FR_ERR_CAPACITY (seq unchanged) when the pool is short;
 * FR_ERR_NOMEM when the table cannot grow. */
fr_status fr_kv_seq_reserve(fr_kv_pool *p, fr_kv_seq *s, int64_t n_tokens);
/* Give all of seq's blocks back (the table's memory is kept for reuse). */
void fr_kv_seq_release(fr_kv_pool *p, fr_kv_seq *s);
/* Release and free the table. */
void fr_kv_seq_free(fr_kv_pool *p, fr_kv_seq *s);

#endif
