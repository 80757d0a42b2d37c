/* bpe.c - byte-pair encoding of one pre-token piece, for tokenizer.json BPE models and
 * tiktoken vocabularies, plus the per-tokenizer word cache.
 *
 * Both variants share one loop: symbols in a linked list over the piece's bytes, a
 * min-heap of candidate merges ordered by (rank, position), the lowest applied first
 * and ties going to the leftmost - HF's Word::merge_all and tiktoken's byte_pair_merge
 * pick the same merge this way. They differ only in what ranks a pair:
 *   - tokenizer.json: the merges list, (left id, right id) -> (rank, merged id);
 *   - tiktoken: the rank (= id) of the concatenated bytes, if that is a token.
 * A heap entry is stale once either of its two symbols has changed since it was pushed:
 * each symbol carries a version that every merge touching it bumps.
 *
 * Pieces repeat (words, spaces, punctuation), so results for short pieces are kept in
 * a direct-mapped cache (bounded: 16384 slots, key <= 47 bytes, <= 15 ids). */
#include "tok_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS 16384
#define CACHE_KEY 47
#define CACHE_IDS 15

typedef struct {
    uint64_t hash;
    uint8_t klen, nids;
    uint8_t key[CACHE_KEY];
    int32_t ids[CACHE_IDS];
} cache_slot;

struct fr_bpe_cache {
    cache_slot slots[CACHE_SLOTS];
};

typedef struct {
    int32_t id, prev, next; /* next = -2: merged away */
    uint32_t start, end;    /* bytes of the piece this symbol covers */
    uint32_t ver;
} sym;

typedef struct {
    uint32_t rank;
    int32_t pos, right, new_id;
    uint32_t lver, rver;
} cand;

struct fr_bpe_scratch {
    sym *syms;
    size_t cap_syms;
    cand *heap;
    size_t n_heap, cap_heap;
    fr_buf key; /* char-level symbol with prefix / suffix */
};

fr_status fr_bpe_cache_create(fr_bpe_cache **out, fr_error *err) {
    *out = calloc(1, sizeof **out);
    return *out ? FR_OK : fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (word cache)");
}

void fr_bpe_cache_free(fr_bpe_cache *c) { free(c); }

fr_status fr_bpe_scratch_create(fr_bpe_scratch **out, fr_error *err) {
    *out = calloc(1, sizeof **out);
    return *out ? FR_OK : fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory");
}

void fr_bpe_scratch_free(fr_bpe_scratch *s) {
    if (!s) return;
    free(s->syms);
    free(s->heap);
    fr_buf_release(&s->key);
    free(s);
}

static inline bool cand_less(const cand *a, const cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static fr_status heap_push(fr_bpe_scratch *s, cand c, fr_error *err) {
    if (s->n_heap == s->cap_heap) {
        size_t n = s->cap_heap ? s->cap_heap * 2 : 64;
        cand *h = realloc(s->heap, n * sizeof *h);
        if (!h) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (BPE heap)");
        s->heap = h;
        s->cap_heap = n;
    }
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = c;
    return FR_OK;
}

static cand heap_pop(fr_bpe_scratch *s) {
    cand top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand *best = &last;
        if (l < n && cand_less(&s->heap[l], best)) m = l, best = &s->heap[l];
        if (r < n && cand_less(&s->heap[r], best)) m = r;
        if (m == i) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* Rank the pair of symbols l, r; push it when it can merge. */
static fr_status try_pair(const fr_tokenizer *t, fr_bpe_scratch *s, const uint8_t *p, int32_t l, int32_t r,
                          fr_error *err) {
    const sym *a = &s->syms[l], *b = &s->syms[r];
    uint32_t rank;
    int32_t merged;
    if (t->tiktoken) {
        merged = fr_strmap_get(&t->model_map, p + a->start, b->end - a->start);
        if (merged < 0) return FR_OK;
        rank = (uint32_t)merged;
    } else if (!fr_pairmap_get(&t->merges, a->id, b->id, &rank, &merged))
        return FR_OK;
    return heap_push(s, (cand){.rank = rank, .pos = l, .right = r, .new_id = merged, .lver = a->ver, .rver = b->ver}, err);
}

static fr_status add_sym(fr_bpe_scratch *s, size_t *n, int32_t id, size_t start, size_t end, fr_error *err) {
    if (*n == s->cap_syms) {
        size_t c = s->cap_syms ? s->cap_syms * 2 : 64;
        sym *v = realloc(s->syms, c * sizeof *v);
        if (!v) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (BPE symbols)");
        s->syms = v;
        s->cap_syms = c;
    }
    s->syms[*n] = (sym){.id = id, .prev = (int32_t)*n - 1, .next = (int32_t)*n + 1, .start = (uint32_t)start,
                        .end = (uint32_t)end, .ver = 0};
    (*n)++;
    return FR_OK;
}

/* An unknown character: HF adds the unk token (fused with a preceding unk when
 * fuse_unk), or drops it when the model has none. */
typedef struct {
    bool pending;
    size_t start, end;
} unk_state;

static fr_status flush_unk(const fr_tokenizer *t, fr_bpe_scratch *s, size_t *n, unk_state *u, fr_error *err) {
    if (!u->pending) return FR_OK;
    u->pending = false;
    return add_sym(s, n, t->unk_id, u->start, u->end, err);
}

static fr_status unknown(const fr_tokenizer *t, fr_bpe_scratch *s, size_t *n, unk_state *u, size_t start, size_t end,
                         fr_error *err) {
    if (t->unk_id < 0) return FR_OK;
    if (u->pending && t->fuse_unk) {
        u->end = end;
        return FR_OK;
    }
    fr_status rc = flush_unk(t, s, n, u, err);
    *u = (unk_state){true, start, end};
    return rc;
}

/* Initial symbols: one per byte (byte-level) or per character (char-level). */
static fr_status init_symbols(const fr_tokenizer *t, fr_bpe_scratch *s, const uint8_t *p, size_t len, size_t *n,
                              fr_error *err) {
    fr_status rc = FR_OK;
    unk_state u = {0};
    *n = 0;
    if (t->byte_level) {
        for (size_t i = 0; i < len && !rc; i++) {
            int32_t id = t->byte_id[p[i]];
            if (id >= 0 && !(rc = flush_unk(t, s, n, &u, err))) rc = add_sym(s, n, id, i, i + 1, err);
            else if (id < 0) rc = unknown(t, s, n, &u, i, i + 1, err);
        }
    } else {
        for (size_t i = 0; i < len && !rc;) {
            int32_t cp;
            int k = fr_utf8_next(p + i, len - i, &cp);
            size_t cl = k ? (size_t)k : 1, end = i + cl;
            const uint8_t *key = p + i;
            size_t klen = cl;
            if ((t->cont_prefix && i > 0) || (t->eow_suffix && end == len)) {
                s->key.n = 0;
                if (t->cont_prefix && i > 0) rc = fr_buf_add(&s->key, t->cont_prefix, strlen(t->cont_prefix), err);
                if (!rc) rc = fr_buf_add(&s->key, p + i, cl, err);
                if (!rc && t->eow_suffix && end == len) rc = fr_buf_add(&s->key, t->eow_suffix, strlen(t->eow_suffix), err);
                if (rc) break;
                key = s->key.p;
                klen = s->key.n;
            }
            int32_t id = fr_strmap_get(&t->model_map, key, klen);
            if (id >= 0) {
                if (!(rc = flush_unk(t, s, n, &u, err))) rc = add_sym(s, n, id, i, end, err);
            } else {
                bool all = t->byte_fallback;
                for (size_t b = 0; all && b < klen; b++) all = t->fallback_id[key[b]] >= 0;
                if (all) { /* byte fallback: <0xXX> per byte, all on this character's span */
                    rc = flush_unk(t, s, n, &u, err);
                    for (size_t b = 0; b < klen && !rc; b++) rc = add_sym(s, n, t->fallback_id[key[b]], i, end, err);
                } else
                    rc = unknown(t, s, n, &u, i, end, err);
            }
            i = end;
        }
    }
    if (!rc) rc = flush_unk(t, s, n, &u, err);
    if (!rc && *n) s->syms[*n - 1].next = -1;
    return rc;
}

static fr_status encode_word(const fr_tokenizer *t, fr_bpe_scratch *s, const uint8_t *p, size_t len, fr_tok_ids *out,
                             fr_error *err) {
    if (t->tiktoken || t->ignore_merges) { /* a piece that is itself a token is taken whole */
        int32_t id = fr_strmap_get(&t->model_map, p, len);
        if (id >= 0) return fr_ids_push(out, id, err);
    }
    size_t n;
    fr_status rc = init_symbols(t, s, p, len, &n, err);
    if (rc) return rc;
    s->n_heap = 0;
    for (size_t i = 0; i + 1 < n && !rc; i++) rc = try_pair(t, s, p, (int32_t)i, (int32_t)i + 1, err);
    while (!rc && s->n_heap) {
        cand c = heap_pop(s);
        sym *l = &s->syms[c.pos];
        if (l->ver != c.lver || l->next != c.right || s->syms[c.right].ver != c.rver) continue; /* stale */
        sym *rs = &s->syms[c.right];
        l->id = c.new_id;
        l->end = rs->end;
        l->next = rs->next;
        l->ver++;
        if (rs->next >= 0) s->syms[rs->next].prev = c.pos;
        rs->next = -2;
        rs->ver++;
        if (l->prev >= 0) rc = try_pair(t, s, p, l->prev, c.pos, err);
        if (!rc && l->next >= 0) rc = try_pair(t, s, p, c.pos, l->next, err);
    }
    for (int32_t i = n ? 0 : -1; i >= 0 && !rc; i = s->syms[i].next) rc = fr_ids_push(out, s->syms[i].id, err);
    return rc;
}

fr_status fr_bpe_encode(const fr_tokenizer *t, fr_bpe_scratch *s, bool use_cache, const uint8_t *p, size_t n,
                        fr_tok_ids *out, fr_error *err) {
    if (!n) return FR_OK;
    cache_slot *slot = NULL;
    uint64_t h = 0;
    if (use_cache && n <= CACHE_KEY) {
        h = fr_hash_bytes(p, n);
        slot = &t->cache->slots[h & (CACHE_SLOTS - 1)];
        if (slot->klen == n && slot->hash == h && memcmp(slot->key, p, n) == 0) return fr_ids_add(out, slot->ids, slot->nids, err);
    }
    int64_t start = out->n;
    fr_status rc = encode_word(t, s, p, n, out, err);
    if (!rc && slot && out->n - start <= CACHE_IDS) {
        slot->hash = h;
        slot->klen = (uint8_t)n;
        slot->nids = (uint8_t)(out->n - start);
        memcpy(slot->key, p, n);
        memcpy(slot->ids, out->ids + start, (size_t)slot->nids * sizeof *slot->ids);
    }
    return rc;
}
