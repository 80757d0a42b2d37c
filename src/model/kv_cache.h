/* kv_cache.h - the paged latent KV cache: a pool of fixed-size blocks per layer and
 * per-sequence block tables.
 *
 * Every layer's pool has the same block layout, so one block id names the same
 * tokens in all layers and a sequence needs one table. A block holds block_size
 * rows of kv_lora + rope floats (normed c_kv then roped k_pe, ARCH.md 4.5). Blocks
 * come from a free stack: taking and returning one is O(1), and a finished or
 * aborted sequence gives all of its blocks back at once.
 *
 * DSA models (ARCH.md 5) also cache one indexer key (index_head_dim floats) per token
 * for each layer that runs its own indexer, in a second pool per such layer with the
 * same block layout, so the same block table finds a token's latent and its key. */
#ifndef FR_KV_CACHE_H
#define FR_KV_CACHE_H

#include <stdint.h>

#include "model.h"

typedef struct {
    fr_backend *be;
    int n_layers, block_size;
    int64_t row;       /* floats per token and layer */
    int64_t n_blocks;  /* blocks in the pool */
    int64_t n_free;    /* blocks on the free stack */
    float **layer;     /* [n_layers] backend memory of n_blocks * block_size rows */
    int64_t index_row; /* DSA: floats per indexer key (index_head_dim), else 0 */
    float **index_layer; /* DSA: [n_layers] n_blocks * block_size keys; NULL for layers without
                          * an indexer (and the whole array NULL for non-DSA models) */
    int32_t *free_ids; /* [n_blocks] free stack, top at n_free - 1 */
} fr_kv_pool;

/* A sequence's block table: blocks[i] holds its tokens i*block_size .. (i+1)*block_size - 1. */
typedef struct {
    int32_t *blocks;
    int64_t n_blocks, cap;
} fr_kv_seq;

fr_status fr_kv_pool_create(const fr_model *m, fr_backend *be, int64_t n_blocks, int block_size, fr_kv_pool **out,
                            fr_error *err);
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
