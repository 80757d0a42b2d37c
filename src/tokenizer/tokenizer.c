/* tokenizer.c - loading tokenizer.json and tokenizer_config.json, and the encode
 * pipeline that strings the stages together.
 *
 * Encode, as HF's TokenizerImpl::encode does it:
 *   1. split the text on added tokens that match the raw text (normalized: false);
 *   2. normalize each remaining section, split it again on the normalized added tokens;
 *   3. pre-tokenize each remaining piece, run BPE on every pre-token;
 *   4. with FR_TOK_ADD_SPECIAL, put the post-processor's ids around the result.
 * For the post-processor, an explicit add_bos_token / add_eos_token in
 * tokenizer_config.json wins over tokenizer.json (Python transformers rebuilds the
 * post-processor from them: DeepSeek-V3 gets its BOS although its tokenizer.json
 * post-processor is a bare ByteLevel).
 *
 * Loading validates everything it reads and names the place of the first problem:
 * "DIR/tokenizer.json: model.merges[12]: token \"xyz\" is not in the vocabulary", or
 * the byte offset of a JSON syntax error. */
#include "tok_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../io/json_util.h"

/* ------------------------------------------------------------------ building */

static fr_tokenizer *tok_new(void) {
    fr_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->cache_busy = malloc(sizeof *t->cache_busy);
    if (!t->cache_busy) {
        free(t);
        return NULL;
    }
    atomic_flag_clear(t->cache_busy);
    t->unk_id = t->bos_id = t->eos_id = -1;
    memset(t->byte_id, 0xff, sizeof t->byte_id);
    memset(t->fallback_id, 0xff, sizeof t->fallback_id);
    memset(t->trie_raw.root, 0xff, sizeof t->trie_raw.root);
    memset(t->trie_norm.root, 0xff, sizeof t->trie_norm.root);
    return t;
}

void fr_tokenizer_free(fr_tokenizer *t) {
    if (!t) return;
    free(t->disp_off);
    free(t->disp_len);
    free(t->dec_off);
    free(t->dec_len);
    free(t->flags);
    fr_buf_release(&t->disp_text);
    fr_buf_release(&t->dec_text);
    fr_strmap_release(&t->disp_map);
    fr_strmap_release(&t->model_map);
    fr_pairmap_release(&t->merges);
    free(t->cont_prefix);
    free(t->eow_suffix);
    fr_bpe_cache_free(t->cache);
    free(t->cache_busy);
    fr_normalizer_free(t->normalizer);
    fr_pretok_free(t->pretok);
    fr_decoder_free(t->decoder);
    free(t->added);
    fr_buf_release(&t->added_text);
    fr_trie_release(&t->trie_raw);
    fr_trie_release(&t->trie_norm);
    free(t->pp_prefix);
    free(t->pp_suffix);
    free(t->bos_token);
    free(t->eos_token);
    free(t);
}

fr_status fr_tok_alloc_ids(fr_tokenizer *t, int64_t n_ids, fr_error *err) {
    t->n_ids = n_ids;
    size_t n = (size_t)(n_ids > 0 ? n_ids : 1);
    t->disp_off = calloc(n, sizeof *t->disp_off);
    t->disp_len = calloc(n, sizeof *t->disp_len);
    t->dec_off = calloc(n, sizeof *t->dec_off);
    t->dec_len = calloc(n, sizeof *t->dec_len);
    t->flags = calloc(n, 1);
    if (!t->disp_off || !t->disp_len || !t->dec_off || !t->dec_len || !t->flags)
        return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (%lld ids)", (long long)n_ids);
    return FR_OK;
}

fr_status fr_tok_set_token(fr_tokenizer *t, int32_t id, const uint8_t *disp, size_t disp_len, const uint8_t *dec,
                           size_t dec_len, uint8_t flags, fr_error *err) {
    if (t->disp_text.n + disp_len > UINT32_MAX || t->dec_text.n + dec_len > UINT32_MAX)
        return fr_fail(err, FR_ERR_CAPACITY, "tokenizer: vocabulary text exceeds 4 GiB");
    t->disp_off[id] = (uint32_t)t->disp_text.n;
    t->disp_len[id] = (uint32_t)disp_len;
    t->dec_off[id] = (uint32_t)t->dec_text.n;
    t->dec_len[id] = (uint32_t)dec_len;
    t->flags[id] = flags | FR_TOKF_EXISTS;
    fr_status rc = fr_buf_add(&t->disp_text, disp, disp_len, err);
    if (!rc) rc = fr_buf_add(&t->dec_text, dec, dec_len, err);
    if (!rc) rc = fr_strmap_put(&t->disp_map, disp, disp_len, id, err);
    return rc;
}

fr_status fr_tok_add_added(fr_tokenizer *t, const fr_added_token *a, const uint8_t *content, size_t len,
                           fr_error *err) {
    if (t->n_added % 64 == 0) {
        fr_added_token *v = realloc(t->added, (size_t)(t->n_added + 64) * sizeof *v);
        if (!v) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (added tokens)");
        t->added = v;
    }
    if (t->added_text.n + len > UINT32_MAX) return fr_fail(err, FR_ERR_CAPACITY, "tokenizer: added tokens too large");
    fr_added_token x = *a;
    x.off = (uint32_t)t->added_text.n;
    x.len = (uint32_t)len;
    t->added[t->n_added++] = x;
    return fr_buf_add(&t->added_text, content, len, err);
}

/* Build the matching tries. Tokens marked normalized match the normalized text, with
 * their content normalized the same way; without a normalizer there is one pass. */
fr_status fr_tok_finish_added(fr_tokenizer *t, fr_error *err) {
    fr_status rc = FR_OK;
    fr_buf norm = {0};
    fr_regex_scratch sc = {0};
    if (t->normalizer && (rc = fr_regex_scratch_init(&sc, err))) return rc;
    for (int32_t i = 0; i < t->n_added && !rc; i++) {
        const fr_added_token *a = &t->added[i];
        const uint8_t *s = t->added_text.p + a->off;
        if (!a->len) continue;
        t->any_single_word |= a->single_word;
        if (a->normalized && t->normalizer) {
            if (!(rc = fr_normalizer_run(t->normalizer, &sc, s, a->len, &norm, err)))
                rc = fr_trie_insert(&t->trie_norm, norm.p, norm.n, i, err);
        } else
            rc = fr_trie_insert(&t->trie_raw, s, a->len, i, err);
    }
    fr_buf_release(&norm);
    fr_regex_scratch_release(&sc);
    return rc;
}

/* ------------------------------------------------------------------ tokenizer_config.json */

fr_status fr_tok_read_config(const char *dir, cJSON **out, fr_error *err) {
    char path[4096];
    *out = NULL;
    if (snprintf(path, sizeof path, "%s/tokenizer_config.json", dir) >= (int)sizeof path)
        return fr_fail(err, FR_ERR_INVALID, "tokenizer: directory path too long");
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT) {
        *out = cJSON_CreateObject();
        return *out ? FR_OK : fr_fail(err, FR_ERR_NOMEM, "out of memory");
    }
    char *text;
    size_t len;
    fr_status rc = fr_read_file(path, (size_t)16 << 20, &text, &len, err);
    if (rc) return rc;
    rc = fr_json_parse(text, len, path, out, err);
    free(text);
    if (!rc && !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return fr_fail(err, FR_ERR_FORMAT, "%s: expected a JSON object", path);
    }
    return rc;
}

/* bos_token / eos_token: a string, an AddedToken object {"content": ...}, or null. */
static const char *config_token(const cJSON *cfg, const char *key, const char *dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        return cJSON_IsString(c) ? c->valuestring : NULL;
    }
    return v ? NULL : dflt; /* explicit null: none */
}

static char *dup_cstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

fr_status fr_tok_apply_config(fr_tokenizer *t, const cJSON *cfg, const char *path, const char *default_bos,
                              const char *default_eos, fr_error *err) {
    const char *bos = config_token(cfg, "bos_token", default_bos), *eos = config_token(cfg, "eos_token", default_eos);
    if (bos) {
        if (!(t->bos_token = dup_cstr(bos))) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
        t->bos_id = fr_tokenizer_token_to_id(t, bos, strlen(bos));
    }
    if (eos) {
        if (!(t->eos_token = dup_cstr(eos))) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
        t->eos_id = fr_tokenizer_token_to_id(t, eos, strlen(eos));
    }
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
    if (ab && !cJSON_IsBool(ab) && !cJSON_IsNull(ab)) return fr_fail(err, FR_ERR_FORMAT, "%s: add_bos_token: expected true or false", path);
    if (ae && !cJSON_IsBool(ae) && !cJSON_IsNull(ae)) return fr_fail(err, FR_ERR_FORMAT, "%s: add_eos_token: expected true or false", path);
    if (cJSON_IsBool(ab) || cJSON_IsBool(ae)) { /* transformers' update_post_processor: [BOS] A [EOS] */
        free(t->pp_prefix);
        free(t->pp_suffix);
        t->pp_prefix = malloc(sizeof(int32_t));
        t->pp_suffix = malloc(sizeof(int32_t));
        if (!t->pp_prefix || !t->pp_suffix) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
        t->n_prefix = t->n_suffix = 0;
        if (cJSON_IsTrue(ab) && t->bos_id >= 0) t->pp_prefix[t->n_prefix++] = t->bos_id;
        if (cJSON_IsTrue(ae) && t->eos_id >= 0) t->pp_suffix[t->n_suffix++] = t->eos_id;
    }
    return FR_OK;
}

/* ------------------------------------------------------------------ tokenizer.json */

typedef struct {
    fr_tokenizer *t;
    const char *file; /* path of tokenizer.json, for messages */
    fr_buf tmp;
    fr_error *err;
} loader;

/* The BPE symbol key of a vocabulary string: raw bytes for byte-level models (false
 * when the string has characters outside GPT-2's alphabet), else the string itself. */
static bool model_key(loader *L, const char *s, size_t n, const uint8_t **key, size_t *klen, fr_status *rc) {
    *rc = FR_OK;
    if (!L->t->byte_level) {
        *key = (const uint8_t *)s;
        *klen = n;
        return true;
    }
    if (!fr_bytelevel_to_bytes((const uint8_t *)s, n, &L->tmp, L->err, rc)) return false;
    *key = L->tmp.p;
    *klen = L->tmp.n;
    return true;
}

static int32_t model_lookup(loader *L, const char *s, size_t n) {
    const uint8_t *key;
    size_t klen;
    fr_status rc;
    if (!model_key(L, s, n, &key, &klen, &rc)) return -1;
    return fr_strmap_get(&L->t->model_map, key, klen);
}

/* A token string's decoded bytes under a ByteLevel decoder: the bytes it stands for,
 * or its own UTF-8 when it has other characters (as HF's decoder keeps them). */
static fr_status dec_bytes(loader *L, const char *s, size_t n, const uint8_t **out, size_t *len) {
    fr_status rc;
    if (fr_bytelevel_to_bytes((const uint8_t *)s, n, &L->tmp, L->err, &rc)) {
        *out = L->tmp.p;
        *len = L->tmp.n;
    } else {
        *out = (const uint8_t *)s;
        *len = n;
    }
    return rc;
}

static bool json_id(const cJSON *v, int64_t *id) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= FR_TOK_MAX_VOCAB ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return false;
    *id = (int64_t)v->valuedouble;
    return true;
}

static const char *opt_string(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static fr_status load_vocab(loader *L, const cJSON *vocab) {
    fr_tokenizer *t = L->t;
    uint32_t n_vocab = (uint32_t)cJSON_GetArraySize(vocab);
    fr_status rc = fr_strmap_reserve(&t->model_map, n_vocab, L->err);
    if (!rc) rc = fr_strmap_reserve(&t->disp_map, n_vocab + 1024, L->err);
    for (const cJSON *e = vocab->child; e && !rc; e = e->next) {
        int64_t id;
        size_t n = strlen(e->string);
        if (!json_id(e, &id))
            return fr_fail(L->err, FR_ERR_FORMAT, "%s: model.vocab[\"%.40s\"]: expected an id in [0, %d)", L->file,
                           e->string, FR_TOK_MAX_VOCAB);
        if (n > FR_TOK_MAX_TOKEN_BYTES)
            return fr_fail(L->err, FR_ERR_FORMAT, "%s: model.vocab[\"%.40s\"]: token of %zu bytes (at most %d allowed)",
                           L->file, e->string, n, FR_TOK_MAX_TOKEN_BYTES);
        const uint8_t *key, *dec;
        size_t klen, dlen;
        if (model_key(L, e->string, n, &key, &klen, &rc) && (rc = fr_strmap_put(&t->model_map, key, klen, (int32_t)id, L->err)))
            return rc;
        if (rc || (rc = dec_bytes(L, e->string, n, &dec, &dlen))) return rc;
        rc = fr_tok_set_token(t, (int32_t)id, (const uint8_t *)e->string, n, dec, dlen, 0, L->err);
    }
    return rc;
}

static fr_status load_merges(loader *L, const cJSON *merges) {
    fr_tokenizer *t = L->t;
    size_t plen = t->cont_prefix ? strlen(t->cont_prefix) : 0;
    char *joined = malloc(2 * FR_TOK_MAX_TOKEN_BYTES + 2);
    if (!joined) return fr_fail(L->err, FR_ERR_NOMEM, "out of memory");
    fr_status rc = fr_pairmap_reserve(&t->merges, (uint64_t)cJSON_GetArraySize(merges), L->err);
    int64_t i = 0;
    for (const cJSON *e = merges->child; e && !rc; e = e->next, i++) {
        const char *a, *b;
        size_t na, nb;
        char *sp = NULL;
        if (cJSON_IsString(e)) { /* "a b" */
            sp = strchr(e->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ') || sp == e->valuestring || !sp[1]) {
                rc = fr_fail(L->err, FR_ERR_FORMAT, "%s: model.merges[%lld]: expected \"A B\", found \"%.60s\"", L->file,
                             (long long)i, e->valuestring);
                break;
            }
            a = e->valuestring, na = (size_t)(sp - a), b = sp + 1, nb = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) { /* ["a", "b"] */
            a = e->child->valuestring, na = strlen(a), b = e->child->next->valuestring, nb = strlen(b);
        } else {
            rc = fr_fail(L->err, FR_ERR_FORMAT, "%s: model.merges[%lld]: expected \"A B\" or [\"A\", \"B\"]", L->file,
                         (long long)i);
            break;
        }
        if (na > FR_TOK_MAX_TOKEN_BYTES || nb > FR_TOK_MAX_TOKEN_BYTES || nb < plen) {
            rc = fr_fail(L->err, FR_ERR_FORMAT, "%s: model.merges[%lld]: token too long or too short", L->file, (long long)i);
            break;
        }
        int32_t ia = model_lookup(L, a, na), ib = model_lookup(L, b, nb);
        memcpy(joined, a, na);
        memcpy(joined + na, b + plen, nb - plen); /* HF drops the continuing-subword prefix of b */
        int32_t im = model_lookup(L, joined, na + nb - plen);
        if (ia < 0 || ib < 0 || im < 0) {
            const char *which = ia < 0 ? a : ib < 0 ? b : joined;
            int wl = (int)(ia < 0 ? na : ib < 0 ? nb : na + nb - plen);
            rc = fr_fail(L->err, FR_ERR_FORMAT, "%s: model.merges[%lld]: token \"%.*s\" is not in the vocabulary", L->file,
                         (long long)i, wl > 60 ? 60 : wl, which);
            break;
        }
        if (i > UINT32_MAX - 1) {
            rc = fr_fail(L->err, FR_ERR_FORMAT, "%s: model.merges: too many merges", L->file);
            break;
        }
        rc = fr_pairmap_put(&t->merges, ia, ib, (uint32_t)i, im, L->err);
    }
    free(joined);
    return rc;
}

static fr_status load_model(loader *L, const cJSON *model) {
    fr_tokenizer *t = L->t;
    fr_status rc;
    if (!cJSON_IsObject(model)) return fr_fail(L->err, FR_ERR_FORMAT, "%s: model: expected an object", L->file);
    const char *type = opt_string(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (type && strcmp(type, "BPE"))
        return fr_fail(L->err, FR_ERR_UNSUPPORTED, "%s: model.type \"%s\" is not supported (only BPE)", L->file, type);
    if (!cJSON_IsObject(vocab)) return fr_fail(L->err, FR_ERR_FORMAT, "%s: model.vocab: expected an object", L->file);
    if (!cJSON_IsArray(merges)) return fr_fail(L->err, FR_ERR_FORMAT, "%s: model.merges: expected an array", L->file);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
        return fr_fail(L->err, FR_ERR_UNSUPPORTED, "%s: model.dropout: BPE dropout is not supported", L->file);
    t->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    t->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    const char *cp = opt_string(model, "continuing_subword_prefix"), *ew = opt_string(model, "end_of_word_suffix");
    if ((cp && *cp && !(t->cont_prefix = dup_cstr(cp))) || (ew && *ew && !(t->eow_suffix = dup_cstr(ew))))
        return fr_fail(L->err, FR_ERR_NOMEM, "out of memory");
    if ((rc = load_vocab(L, vocab)) || (rc = load_merges(L, merges))) return rc;
    const char *unk = opt_string(model, "unk_token");
    if (unk) t->unk_id = model_lookup(L, unk, strlen(unk)); /* missing: unknown characters are dropped */
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        if (t->byte_fallback) t->fallback_id[b] = model_lookup(L, name, 6);
        if (t->byte_level) {
            uint8_t byte = (uint8_t)b;
            t->byte_id[b] = fr_strmap_get(&t->model_map, &byte, 1);
        }
    }
    return FR_OK;
}

static fr_status load_added(loader *L, const cJSON *added) {
    fr_tokenizer *t = L->t;
    if (cJSON_IsNull(added) || !added) return FR_OK;
    if (!cJSON_IsArray(added)) return fr_fail(L->err, FR_ERR_FORMAT, "%s: added_tokens: expected an array", L->file);
    fr_status rc = FR_OK;
    int i = 0;
    for (const cJSON *e = added->child; e && !rc; e = e->next, i++) {
        int64_t id;
        const char *content = opt_string(e, "content");
        if (!json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id))
            return fr_fail(L->err, FR_ERR_FORMAT, "%s: added_tokens[%d].id: expected an id in [0, %d)", L->file, i,
                           FR_TOK_MAX_VOCAB);
        size_t n = content ? strlen(content) : 0;
        if (!content || n == 0 || n > FR_TOK_MAX_TOKEN_BYTES)
            return fr_fail(L->err, FR_ERR_FORMAT, "%s: added_tokens[%d].content: expected a string of 1 to %d bytes",
                           L->file, i, FR_TOK_MAX_TOKEN_BYTES);
        fr_added_token a = {.id = (int32_t)id};
        a.special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        a.lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "lstrip"));
        a.rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "rstrip"));
        a.single_word = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "single_word"));
        const cJSON *nz = cJSON_GetObjectItemCaseSensitive(e, "normalized");
        a.normalized = cJSON_IsBool(nz) ? cJSON_IsTrue(nz) : !a.special;
        const uint8_t *dec;
        size_t dlen;
        if ((rc = dec_bytes(L, content, n, &dec, &dlen))) return rc;
        uint8_t fl = FR_TOKF_ADDED | (a.special ? FR_TOKF_SPECIAL : 0);
        if ((rc = fr_tok_set_token(t, a.id, (const uint8_t *)content, n, dec, dlen, fl, L->err))) return rc;
        rc = fr_tok_add_added(t, &a, (const uint8_t *)content, n, L->err);
    }
    return rc;
}

/* Post-processors as [prefix ids] A [suffix ids]; a Sequence nests them. */
static fr_status add_ids(int32_t **v, int32_t *n, const int32_t *ids, int32_t k, bool front, fr_error *err) {
    int32_t *p = realloc(*v, (size_t)(*n + k + 1) * sizeof *p);
    if (!p) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    if (front) memmove(p + k, p, (size_t)*n * sizeof *p), memcpy(p, ids, (size_t)k * sizeof *p);
    else memcpy(p + *n, ids, (size_t)k * sizeof *p);
    *v = p;
    *n += k;
    return FR_OK;
}

static fr_status parse_post(loader *L, const cJSON *j, const char *path, int depth) {
    fr_tokenizer *t = L->t;
    if (!j || cJSON_IsNull(j)) return FR_OK;
    const char *type = opt_string(j, "type");
    if (!type) return fr_fail(L->err, FR_ERR_FORMAT, "%s: %s: expected an object with a \"type\"", L->file, path);
    fr_status rc = FR_OK;
    char sub[300];
    if (!strcmp(type, "ByteLevel")) return FR_OK; /* offsets only */
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "processors");
        if (!cJSON_IsArray(list) || depth > 8)
            return fr_fail(L->err, FR_ERR_FORMAT, "%s: %s.processors: expected an array", L->file, path);
        int i = 0;
        for (const cJSON *e = list->child; e && !rc; e = e->next, i++) {
            snprintf(sub, sizeof sub, "%s.processors[%d]", path, i);
            rc = parse_post(L, e, sub, depth + 1);
        }
        return rc;
    }
    int32_t pre[64], suf[64], npre = 0, nsuf = 0;
    if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
        if (!cJSON_IsArray(single)) return fr_fail(L->err, FR_ERR_FORMAT, "%s: %s.single: expected an array", L->file, path);
        bool seen_a = false;
        int i = 0;
        for (const cJSON *e = single->child; e; e = e->next, i++) {
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
            const cJSON *sq = cJSON_GetObjectItemCaseSensitive(e, "Sequence");
            if (sq) {
                const char *sid = opt_string(sq, "id");
                if (!sid || strcmp(sid, "A") || seen_a)
                    return fr_fail(L->err, FR_ERR_FORMAT, "%s: %s.single[%d]: expected one Sequence \"A\"", L->file, path, i);
                seen_a = true;
                continue;
            }
            const char *name = st ? opt_string(st, "id") : NULL;
            const cJSON *spec = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
            const cJSON *ids = spec ? cJSON_GetObjectItemCaseSensitive(spec, "ids") : NULL;
            if (!cJSON_IsArray(ids))
                return fr_fail(L->err, FR_ERR_FORMAT, "%s: %s.single[%d]: special token without ids in special_tokens",
                               L->file, path, i);
            for (const cJSON *x = ids->child; x; x = x->next) {
                int64_t id;
                if (!json_id(x, &id) || id >= t->n_ids || (seen_a ? nsuf : npre) >= 64)
                    return fr_fail(L->err, FR_ERR_FORMAT, "%s: %s.special_tokens[\"%.40s\"]: bad id", L->file, path, name);
                if (seen_a) suf[nsuf++] = (int32_t)id;
                else pre[npre++] = (int32_t)id;
            }
        }
        if (!seen_a) return fr_fail(L->err, FR_ERR_FORMAT, "%s: %s.single: no Sequence \"A\"", L->file, path);
    } else if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(j, "cls"), *sep = cJSON_GetObjectItemCaseSensitive(j, "sep");
        int64_t a, b;
        if (!cJSON_IsArray(cls) || !cJSON_IsArray(sep) || cJSON_GetArraySize(cls) != 2 || cJSON_GetArraySize(sep) != 2 ||
            !json_id(cls->child->next, &a) || !json_id(sep->child->next, &b) || a >= t->n_ids || b >= t->n_ids)
            return fr_fail(L->err, FR_ERR_FORMAT, "%s: %s: expected cls and sep as [\"token\", id]", L->file, path);
        pre[npre++] = (int32_t)a;
        suf[nsuf++] = (int32_t)b;
    } else
        return fr_fail(L->err, FR_ERR_UNSUPPORTED, "%s: %s: post-processor type \"%s\" is not supported", L->file, path,
                       type);
    /* a later processor wraps what the earlier ones produced */
    if ((rc = add_ids(&t->pp_prefix, &t->n_prefix, pre, npre, true, L->err))) return rc;
    return add_ids(&t->pp_suffix, &t->n_suffix, suf, nsuf, false, L->err);
}

/* Largest id named by the vocabulary and the added tokens (ids are validated later). */
static int64_t max_id(const cJSON *vocab, const cJSON *added) {
    double m = -1;
    for (const cJSON *e = vocab ? vocab->child : NULL; e; e = e->next)
        if (cJSON_IsNumber(e) && e->valuedouble > m && e->valuedouble < FR_TOK_MAX_VOCAB) m = e->valuedouble;
    for (const cJSON *e = cJSON_IsArray(added) ? added->child : NULL; e; e = e->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (cJSON_IsNumber(id) && id->valuedouble > m && id->valuedouble < FR_TOK_MAX_VOCAB) m = id->valuedouble;
    }
    return (int64_t)m + 1;
}

static fr_status load_hf(fr_tokenizer *t, const char *dir, const char *file, fr_error *err) {
    char *text = NULL;
    size_t len;
    cJSON *root = NULL, *cfg = NULL;
    loader L = {.t = t, .file = file, .err = err};
    char path[4200];
    fr_status rc = fr_read_file(file, FR_TOK_MAX_JSON, &text, &len, err);
    if (rc) return rc;
    rc = fr_json_parse(text, len, file, &root, err);
    free(text);
    if (rc) return rc;
    if (!cJSON_IsObject(root)) {
        rc = fr_fail(err, FR_ERR_FORMAT, "%s: expected a JSON object", file);
        goto out;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    snprintf(path, sizeof path, "%s: pre_tokenizer", file);
    if ((rc = fr_pretok_parse(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path, &t->pretok, &t->byte_level, err)))
        goto out;
    if ((rc = fr_tok_alloc_ids(t, max_id(cJSON_GetObjectItemCaseSensitive(model, "vocab"), added), err))) goto out;
    if ((rc = load_model(&L, model)) || (rc = load_added(&L, added))) goto out;
    snprintf(path, sizeof path, "%s: normalizer", file);
    if ((rc = fr_normalizer_parse(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path, &t->normalizer, err)))
        goto out;
    snprintf(path, sizeof path, "%s: decoder", file);
    if ((rc = fr_decoder_parse(cJSON_GetObjectItemCaseSensitive(root, "decoder"), path, &t->decoder, err))) goto out;
    t->decode_bytes = fr_decoder_is_bytelevel(t->decoder);
    if ((rc = parse_post(&L, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "post_processor", 0))) goto out;
    if ((rc = fr_tok_finish_added(t, err))) goto out;
    if ((rc = fr_tok_read_config(dir, &cfg, err))) goto out;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    rc = fr_tok_apply_config(t, cfg, path, NULL, NULL, err);
out:
    fr_buf_release(&L.tmp);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    return rc;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

fr_status fr_tokenizer_load(const char *dir, fr_tokenizer **out, fr_error *err) {
    *out = NULL;
    char file[4096];
    fr_tokenizer *t = tok_new();
    if (!t) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory");
    fr_status rc;
    if (snprintf(file, sizeof file, "%s/tokenizer.json", dir) >= (int)sizeof file - 16)
        rc = fr_fail(err, FR_ERR_INVALID, "tokenizer: directory path too long");
    else if (file_exists(file))
        rc = load_hf(t, dir, file, err);
    else if (snprintf(file, sizeof file, "%s/tiktoken.model", dir), file_exists(file))
        rc = fr_tiktoken_load(t, dir, err);
    else
        rc = fr_fail(err, FR_ERR_IO, "%s: no tokenizer.json or tiktoken.model", dir);
    if (!rc) rc = fr_bpe_cache_create(&t->cache, err);
    if (rc) {
        fr_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return FR_OK;
}

/* ------------------------------------------------------------------ encode */

typedef struct {
    const fr_tokenizer *t;
    bool split_special;
    fr_tok_ids *out;
    fr_regex_scratch rsc;
    fr_bpe_scratch *bpe;
    bool use_cache;
    fr_buf norm, arena;
    fr_spans sp, sp_tmp;
    bool section_first; /* the section being split on normalized tokens starts the text */
} enc;

/* Pre-tokenize one piece of normalized text and run BPE on each pre-token. */
static fr_status model_piece(enc *e, const uint8_t *s, size_t n, bool first, fr_error *err) {
    const fr_tokenizer *t = e->t;
    if (!n) return FR_OK;
    if (!t->pretok) return fr_bpe_encode(t, e->bpe, e->use_cache, s, n, e->out, err);
    e->arena.n = 0;
    fr_status rc = fr_buf_add(&e->arena, s, n, err);
    if (!rc) rc = fr_pretok_run(t->pretok, &e->rsc, &e->arena, n, first, &e->sp, &e->sp_tmp, err);
    for (size_t i = 0; i < e->sp.n && !rc; i++)
        rc = fr_bpe_encode(t, e->bpe, e->use_cache, e->arena.p + e->sp.v[i].off, e->sp.v[i].len, e->out, err);
    return rc;
}

/* Kimi's encode cuts text into 400,000-character chunks, then cuts each wherever a run
 * of whitespace or of non-whitespace (Python's isspace) passes 25,000 characters. */
static fr_status kimi_runs(enc *e, const uint8_t *s, size_t n, bool first, fr_error *err) {
    size_t slice = 0, run = 0;
    bool cur = false, started = false;
    fr_status rc = FR_OK;
    for (size_t i = 0; i < n && !rc;) {
        int32_t cp;
        int k = fr_utf8_next(s + i, n - i, &cp);
        bool now = k && fr_uni_is_py_space(cp);
        if (!started) cur = now, started = true;
        if (cur != now) {
            run = 1;
            cur = now;
        } else if (++run > 25000) {
            rc = model_piece(e, s + slice, i - slice, first && slice == 0, err);
            slice = i;
            run = 1;
        }
        i += k ? (size_t)k : 1;
    }
    return rc ? rc : model_piece(e, s + slice, n - slice, first && slice == 0, err);
}

static fr_status model_section(enc *e, const uint8_t *s, size_t n, bool first, fr_error *err) {
    if (!e->t->kimi_chunks) return model_piece(e, s, n, first, err);
    fr_status rc = FR_OK;
    for (size_t i = 0; i < n && !rc;) {
        size_t j = i;
        for (size_t chars = 0; j < n && chars < 400000; chars++) {
            int32_t cp;
            int k = fr_utf8_next(s + j, n - j, &cp);
            j += k ? (size_t)k : 1;
        }
        rc = kimi_runs(e, s + i, j - i, first && i == 0, err);
        i = j;
    }
    return rc;
}

static fr_status on_norm_piece(void *ctx, const uint8_t *s, size_t n, int32_t token, size_t off, fr_error *err) {
    enc *e = ctx;
    if (token >= 0) return fr_ids_push(e->out, e->t->added[token].id, err);
    return model_section(e, s, n, e->section_first && off == 0, err);
}

static fr_status on_raw_piece(void *ctx, const uint8_t *s, size_t n, int32_t token, size_t off, fr_error *err) {
    enc *e = ctx;
    const fr_tokenizer *t = e->t;
    if (token >= 0) return fr_ids_push(e->out, t->added[token].id, err);
    bool first = off == 0;
    if (!t->normalizer) return model_section(e, s, n, first, err);
    fr_status rc = fr_normalizer_run(t->normalizer, &e->rsc, s, n, &e->norm, err);
    if (rc || e->norm.n == 0) return rc;
    if (t->trie_norm.n == 0) return model_section(e, e->norm.p, e->norm.n, first, err);
    e->section_first = first;
    return fr_added_split(t, &t->trie_norm, e->norm.p, e->norm.n, e->split_special, on_norm_piece, e, err);
}

fr_status fr_tokenizer_encode(const fr_tokenizer *t, const char *text, size_t len, unsigned flags, fr_tok_ids *out,
                              fr_error *err) {
    out->n = 0;
    if (len > FR_TOK_MAX_TEXT)
        return fr_fail(err, FR_ERR_CAPACITY, "tokenizer: text of %zu bytes exceeds the %zu-byte limit", len,
                       (size_t)FR_TOK_MAX_TEXT);
    if (!text && len) return fr_fail(err, FR_ERR_INVALID, "tokenizer: NULL text");
    enc e = {.t = t, .split_special = flags & FR_TOK_SPLIT_SPECIAL, .out = out};
    fr_status rc = fr_regex_scratch_init(&e.rsc, err);
    if (!rc) rc = fr_bpe_scratch_create(&e.bpe, err);
    if (!rc && (flags & FR_TOK_ADD_SPECIAL)) rc = fr_ids_add(out, t->pp_prefix, t->n_prefix, err);
    /* the word cache is shared: whoever holds it uses it, a concurrent caller goes without */
    e.use_cache = t->cache && !atomic_flag_test_and_set(t->cache_busy);
    if (!rc) rc = fr_added_split(t, &t->trie_raw, (const uint8_t *)text, len, e.split_special, on_raw_piece, &e, err);
    if (e.use_cache) atomic_flag_clear(t->cache_busy);
    if (!rc && (flags & FR_TOK_ADD_SPECIAL)) rc = fr_ids_add(out, t->pp_suffix, t->n_suffix, err);
    fr_regex_scratch_release(&e.rsc);
    fr_bpe_scratch_free(e.bpe);
    fr_buf_release(&e.norm);
    fr_buf_release(&e.arena);
    free(e.sp.v);
    free(e.sp_tmp.v);
    if (rc) out->n = 0;
    return rc;
}

/* ------------------------------------------------------------------ lookups */

int32_t fr_tokenizer_token_to_id(const fr_tokenizer *t, const char *s, size_t len) {
    return s ? fr_strmap_get(&t->disp_map, s, len) : -1;
}

const char *fr_tokenizer_id_to_token(const fr_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || !(t->flags[id] & FR_TOKF_EXISTS)) return NULL;
    if (len) *len = t->disp_len[id];
    return (const char *)t->disp_text.p + t->disp_off[id];
}

int64_t fr_tokenizer_vocab_size(const fr_tokenizer *t) { return t->n_ids; }

bool fr_tokenizer_is_special(const fr_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & FR_TOKF_SPECIAL);
}

int32_t fr_tokenizer_bos_id(const fr_tokenizer *t) { return t->bos_id; }
int32_t fr_tokenizer_eos_id(const fr_tokenizer *t) { return t->eos_id; }
const char *fr_tokenizer_bos_token(const fr_tokenizer *t) { return t->bos_token; }
const char *fr_tokenizer_eos_token(const fr_tokenizer *t) { return t->eos_token; }
