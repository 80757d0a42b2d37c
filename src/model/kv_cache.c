/* kv_cache.c - block pool and block tables of the paged latent cache (see kv_cache.h). */
#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>

fr_status fr_kv_dtype_parse(const char *s, fr_kv_dtype *out, fr_error *err) {
    if (!strcmp(s, "auto") || !strcmp(s, "float32")) *out = FR_KV_F32;
    else if (!strcmp(s, "fp8") || !strcmp(s, "fp8_e4m3")) *out = FR_KV_FP8;
    else return fr_fail(err, FR_ERR_INVALID, "kv cache dtype \"%s\" is not supported (auto, float32, fp8, fp8_e4m3)", s);
    return FR_OK;
}

const char *fr_kv_dtype_name(fr_kv_dtype dtype) { return dtype == FR_KV_FP8 ? "fp8_e4m3" : "float32"; }

int64_t fr_kv_bytes_per_token(const fr_model *m, fr_kv_dtype dtype) {
    const fr_config *c = &m->cfg;
    int64_t b = (int64_t)c->n_layers * fr_kv_row_bytes(dtype, c->kv_lora_rank, c->qk_rope_head_dim);
    for (int l = 0; l < c->n_layers; l++)
        if (c->dsa.enabled && m->layers[l].has_indexer) b += fr_kv_row_bytes(dtype, c->dsa.head_dim, 0);
    return b;
}

fr_status fr_kv_pool_create(const fr_model *m, fr_backend *be, int64_t n_blocks, int block_size, fr_kv_pool **out,
                            fr_error *err) {
    return fr_kv_pool_create_dtype(m, be, n_blocks, block_size, FR_KV_F32, out, err);
}

fr_status fr_kv_pool_create_dtype(const fr_model *m, fr_backend *be, int64_t n_blocks, int block_size,
                                  fr_kv_dtype dtype, fr_kv_pool **out, fr_error *err) {
    *out = NULL;
    const fr_config *c = &m->cfg;
    if (block_size < 1 || block_size > 4096 || n_blocks < 1 || n_blocks > INT32_MAX)
        return fr_fail(err, FR_ERR_INVALID, "kv cache: %lld blocks of %d tokens is outside the supported range",
                       (long long)n_blocks, block_size);
    if (dtype != FR_KV_F32 && dtype != FR_KV_FP8)
        return fr_fail(err, FR_ERR_INVALID, "kv cache: unknown dtype %d", (int)dtype);
    fr_kv_pool *p = calloc(1, sizeof *p);
    if (!p) return fr_fail(err, FR_ERR_NOMEM, "kv cache: out of memory");
    p->be = be;
    p->n_layers = c->n_layers;
    p->block_size = block_size;
    p->dtype = dtype;
    p->row = c->kv_lora_rank + c->qk_rope_head_dim;
    p->row_bytes = fr_kv_row_bytes(dtype, c->kv_lora_rank, c->qk_rope_head_dim);
    p->n_blocks = n_blocks;
    p->layer = calloc((size_t)c->n_layers, sizeof *p->layer);
    p->free_ids = malloc((size_t)n_blocks * sizeof *p->free_ids);
    if (!p->layer || !p->free_ids) goto nomem;
    const size_t bytes = (size_t)n_blocks * (size_t)block_size * (size_t)p->row_bytes;
    for (int l = 0; l < c->n_layers; l++)
        if (!(p->layer[l] = be->ops->alloc(be, bytes))) goto nomem;
    if (c->dsa.enabled) {
        p->index_row = c->dsa.head_dim;
        p->index_row_bytes = fr_kv_row_bytes(dtype, c->dsa.head_dim, 0);
        p->index_layer = calloc((size_t)c->n_layers, sizeof *p->index_layer);
        if (!p->index_layer) goto nomem;
        const size_t ibytes = (size_t)n_blocks * (size_t)block_size * (size_t)p->index_row_bytes;
        for (int l = 0; l < c->n_layers; l++)
            if (m->layers[l].has_indexer && !(p->index_layer[l] = be->ops->alloc(be, ibytes))) goto nomem;
    }
    /* Lowest ids on top: a lone sequence gets blocks 0, 1, 2, ... in order. */
    for (int64_t i = 0; i < n_blocks; i++) p->free_ids[i] = (int32_t)(n_blocks - 1 - i);
    p->n_free = n_blocks;
    *out = p;
    return FR_OK;
nomem:
    fr_kv_pool_free(p);
    return fr_fail(err, FR_ERR_NOMEM, "kv cache: out of memory for %lld tokens", (long long)n_blocks * block_size);
}

void fr_kv_pool_free(fr_kv_pool *p) {
    if (!p) return;
    if (p->layer)
        for (int l = 0; l < p->n_layers; l++) p->be->ops->free(p->be, p->layer[l]);
    if (p->index_layer)
        for (int l = 0; l < p->n_layers; l++) p->be->ops->free(p->be, p->index_layer[l]);
    free(p->layer);
    free(p->index_layer);
    free(p->free_ids);
    free(p);
}

int64_t fr_kv_blocks_needed(const fr_kv_pool *p, const fr_kv_seq *s, int64_t n_tokens) {
    const int64_t want = (n_tokens + p->block_size - 1) / p->block_size;
    return want > s->n_blocks ? want - s->n_blocks : 0;
}

fr_status fr_kv_seq_reserve(fr_kv_pool *p, fr_kv_seq *s, int64_t n_tokens) {
    const int64_t more = fr_kv_blocks_needed(p, s, n_tokens);
    if (!more) return FR_OK;
    if (more > p->n_free) return FR_ERR_CAPACITY;
    if (s->n_blocks + more > s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 16;
        while (cap < s->n_blocks + more) cap *= 2;
        int32_t *b = realloc(s->blocks, (size_t)cap * sizeof *b);
        if (!b) return FR_ERR_NOMEM;
        s->blocks = b;
        s->cap = cap;
    }
    for (int64_t i = 0; i < more; i++) s->blocks[s->n_blocks++] = p->free_ids[--p->n_free];
    return FR_OK;
}

void fr_kv_seq_release(fr_kv_pool *p, fr_kv_seq *s) {
    /* Pushed in reverse so that the first block comes back out first. */
    while (s->n_blocks > 0) p->free_ids[p->n_free++] = s->blocks[--s->n_blocks];
}

void fr_kv_seq_free(fr_kv_pool *p, fr_kv_seq *s) {
    fr_kv_seq_release(p, s);
    free(s->blocks);
    s->blocks = NULL;
    s->cap = 0;
}
