/* tok_util.c - the tokenizer's small machinery: growable buffers, a byte-string hash
 * map and a pair map (both open addressing with linear probing, sized to stay at most
 * half full), UTF-8 decoding with the strict validity rules of the Unicode standard,
 * the few Unicode predicates the pipeline needs (from utf8proc's tables), GPT-2's
 * byte <-> character map, and the UTF-8 filter that decoding and streaming share. */
#include "tok_impl.h"

#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

/* ------------------------------------------------------------------ buffers */

static size_t grow_cap(size_t cap, size_t need) {
    size_t c = cap ? cap : 64;
    while (c < need) c = c < ((size_t)1 << 62) ? c * 2 : need;
    return c;
}

fr_status fr_buf_reserve(fr_buf *b, size_t extra, fr_error *err) {
    if (extra > SIZE_MAX / 2 - b->n) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: buffer size overflow");
    if (b->n + extra <= b->cap) return FR_OK;
    size_t c = grow_cap(b->cap, b->n + extra);
    uint8_t *p = realloc(b->p, c);
    if (!p) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", c);
    b->p = p;
    b->cap = c;
    return FR_OK;
}

fr_status fr_buf_add(fr_buf *b, const void *src, size_t n, fr_error *err) {
    fr_status rc = fr_buf_reserve(b, n, err);
    if (rc) return rc;
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
    return FR_OK;
}

void fr_buf_release(fr_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

fr_status fr_ids_add(fr_tok_ids *v, const int32_t *ids, int64_t n, fr_error *err) {
    if (v->n + n > v->cap) {
        int64_t c = v->cap ? v->cap : 64;
        while (c < v->n + n) c *= 2;
        int32_t *p = realloc(v->ids, (size_t)c * sizeof *p);
        if (!p) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (%lld ids)", (long long)c);
        v->ids = p;
        v->cap = c;
    }
    if (n) memcpy(v->ids + v->n, ids, (size_t)n * sizeof *ids);
    v->n += n;
    return FR_OK;
}

fr_status fr_ids_push(fr_tok_ids *v, int32_t id, fr_error *err) {
    if (v->n < v->cap) {
        v->ids[v->n++] = id;
        return FR_OK;
    }
    return fr_ids_add(v, &id, 1, err);
}

fr_status fr_text_add(fr_tok_text *t, const void *src, size_t n, fr_error *err) {
    if (t->len + n + 1 > t->cap) {
        if (n > SIZE_MAX / 4) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: text size overflow");
        size_t c = grow_cap(t->cap, t->len + n + 1);
        char *p = realloc(t->data, c);
        if (!p) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", c);
        t->data = p;
        t->cap = c;
    }
    if (n) memcpy(t->data + t->len, src, n);
    t->len += n;
    t->data[t->len] = 0;
    return FR_OK;
}

void fr_tok_ids_release(fr_tok_ids *v) {
    if (!v) return;
    free(v->ids);
    memset(v, 0, sizeof *v);
}

void fr_tok_text_release(fr_tok_text *t) {
    if (!t) return;
    free(t->data);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------ hashing */

static inline uint64_t mix64(uint64_t x) { /* splitmix64's finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

uint64_t fr_hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, s, 8);
        h = (h ^ mix64(k)) * 0x9e3779b97f4a7c15ull;
        s += 8;
        n -= 8;
    }
    uint64_t k = 0;
    for (size_t i = 0; i < n; i++) k |= (uint64_t)s[i] << (8 * i);
    return mix64(h ^ k ^ ((uint64_t)n << 59));
}

static fr_status strmap_rehash(fr_strmap *m, uint32_t nslots, fr_error *err) {
    struct fr_strmap_slot *slots = calloc(nslots, sizeof *slots);
    if (!slots) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (hash table of %u slots)", nslots);
    uint32_t mask = nslots - 1;
    for (uint32_t e = 0; e < m->count; e++) {
        uint32_t i = (uint32_t)m->entries[e].hash & mask;
        while (slots[i].entry) i = (i + 1) & mask;
        slots[i] = (struct fr_strmap_slot){e + 1, (uint32_t)(m->entries[e].hash >> 32)};
    }
    free(m->slots);
    m->slots = slots;
    m->mask = mask;
    return FR_OK;
}

fr_status fr_strmap_reserve(fr_strmap *m, uint32_t n, fr_error *err) {
    uint64_t want = 1024;
    while (want < (uint64_t)n * 2) want *= 2;
    if (want > ((uint64_t)1 << 31)) return fr_fail(err, FR_ERR_CAPACITY, "tokenizer: hash map of %u keys", n);
    if (m->slots && want <= (uint64_t)m->mask + 1) return FR_OK;
    if (n > m->entries_cap) {
        struct fr_strmap_entry *p = realloc(m->entries, (size_t)n * sizeof *p);
        if (!p) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (hash map of %u entries)", n);
        m->entries = p;
        m->entries_cap = n;
    }
    return strmap_rehash(m, (uint32_t)want, err);
}

static int64_t strmap_find(const fr_strmap *m, const void *key, size_t len, uint64_t h) {
    if (!m->slots) return -1;
    uint32_t h32 = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & m->mask;; i = (i + 1) & m->mask) {
        struct fr_strmap_slot s = m->slots[i];
        if (!s.entry) return -1;
        if (s.hash != h32) continue;
        const struct fr_strmap_entry *x = &m->entries[s.entry - 1];
        if (x->hash == h && x->len == len && memcmp(m->keys.p + x->off, key, len) == 0) return s.entry - 1;
    }
}

fr_status fr_strmap_put(fr_strmap *m, const void *key, size_t len, int32_t value, fr_error *err) {
    if (len > UINT32_MAX / 2) return fr_fail(err, FR_ERR_FORMAT, "tokenizer: key of %zu bytes", len);
    uint64_t h = fr_hash_bytes(key, len);
    int64_t e = strmap_find(m, key, len, h);
    if (e >= 0) {
        m->entries[e].value = value;
        return FR_OK;
    }
    fr_status rc;
    if (m->count >= (UINT32_MAX >> 2)) return fr_fail(err, FR_ERR_CAPACITY, "tokenizer: hash map full");
    if (!m->slots || (uint64_t)(m->count + 1) * 2 > (uint64_t)m->mask + 1) {
        uint32_t nslots = m->slots ? (m->mask + 1) * 2 : 1024;
        if ((rc = strmap_rehash(m, nslots, err))) return rc;
    }
    if (m->count == m->entries_cap) {
        uint32_t c = m->entries_cap ? m->entries_cap * 2 : 512;
        struct fr_strmap_entry *p = realloc(m->entries, (size_t)c * sizeof *p);
        if (!p) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (hash map of %u entries)", c);
        m->entries = p;
        m->entries_cap = c;
    }
    if (m->keys.n + len > UINT32_MAX) return fr_fail(err, FR_ERR_CAPACITY, "tokenizer: hash map keys exceed 4 GiB");
    uint32_t off = (uint32_t)m->keys.n;
    if ((rc = fr_buf_add(&m->keys, key, len, err))) return rc;
    m->entries[m->count] = (struct fr_strmap_entry){.hash = h, .off = off, .len = (uint32_t)len, .value = value};
    uint32_t i = (uint32_t)h & m->mask;
    while (m->slots[i].entry) i = (i + 1) & m->mask;
    m->slots[i] = (struct fr_strmap_slot){++m->count, (uint32_t)(h >> 32)};
    return FR_OK;
}

int32_t fr_strmap_get(const fr_strmap *m, const void *key, size_t len) {
    int64_t e = strmap_find(m, key, len, fr_hash_bytes(key, len));
    return e < 0 ? -1 : m->entries[e].value;
}

void fr_strmap_release(fr_strmap *m) {
    free(m->slots);
    free(m->entries);
    fr_buf_release(&m->keys);
    memset(m, 0, sizeof *m);
}

static inline uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static fr_status pairmap_rehash(fr_pairmap *m, uint64_t nslots, fr_error *err) {
    struct fr_pair_slot *slots = malloc(nslots * sizeof *slots);
    if (!slots)
        return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (merge table of %llu slots)", (unsigned long long)nslots);
    for (uint64_t i = 0; i < nslots; i++) slots[i].key = UINT64_MAX;
    uint64_t mask = nslots - 1;
    for (uint64_t i = 0; m->slots && i <= m->mask; i++) {
        if (m->slots[i].key == UINT64_MAX) continue;
        uint64_t j = mix64(m->slots[i].key) & mask;
        while (slots[j].key != UINT64_MAX) j = (j + 1) & mask;
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->mask = mask;
    return FR_OK;
}

fr_status fr_pairmap_reserve(fr_pairmap *m, uint64_t n, fr_error *err) {
    uint64_t want = 1024;
    while (want < n * 2) want *= 2;
    if (m->slots && want <= m->mask + 1) return FR_OK;
    return pairmap_rehash(m, want, err);
}

fr_status fr_pairmap_put(fr_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged, fr_error *err) {
    if (!m->slots || (m->count + 1) * 2 > m->mask + 1) {
        fr_status rc = pairmap_rehash(m, m->slots ? (m->mask + 1) * 2 : 1024, err);
        if (rc) return rc;
    }
    uint64_t k = pair_key(a, b), i = mix64(k) & m->mask;
    while (m->slots[i].key != UINT64_MAX && m->slots[i].key != k) i = (i + 1) & m->mask;
    if (m->slots[i].key == UINT64_MAX) m->count++;
    /* a repeated pair takes its later rank, as HF's HashMap insert does */
    m->slots[i] = (struct fr_pair_slot){k, (uint64_t)rank << 32 | (uint32_t)merged};
    return FR_OK;
}

bool fr_pairmap_get(const fr_pairmap *m, int32_t a, int32_t b, uint32_t *rank, int32_t *merged) {
    if (!m->slots) return false;
    uint64_t k = pair_key(a, b);
    for (uint64_t i = mix64(k) & m->mask;; i = (i + 1) & m->mask) {
        if (m->slots[i].key == k) {
            *rank = (uint32_t)(m->slots[i].val >> 32);
            *merged = (int32_t)(uint32_t)m->slots[i].val;
            return true;
        }
        if (m->slots[i].key == UINT64_MAX) return false;
    }
}

void fr_pairmap_release(fr_pairmap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------ UTF-8 / Unicode */

int fr_utf8_next(const uint8_t *s, size_t n, int32_t *cp) {
    if (!n) return 0;
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    int32_t v;
    uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) len = 2, v = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3, v = c & 0x0f;
        if (c == 0xe0) lo = 0xa0; /* no overlongs */
        if (c == 0xed) hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, v = c & 0x07;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f; /* nothing past U+10FFFF */
    } else
        return 0;
    if (n < (size_t)len || s[1] < lo || s[1] > hi) return 0;
    v = v << 6 | (s[1] & 0x3f);
    for (int i = 2; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    *cp = v;
    return len;
}

int fr_utf8_encode(int32_t cp, uint8_t out[4]) {
    if (cp < 0x80) return out[0] = (uint8_t)cp, 1;
    if (cp < 0x800) return out[0] = (uint8_t)(0xc0 | cp >> 6), out[1] = (uint8_t)(0x80 | (cp & 0x3f)), 2;
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (uint8_t)(0xf0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

bool fr_uni_is_space(int32_t cp) {
    if (cp < 0x80) return cp == ' ' || (cp >= 9 && cp <= 13);
    if (cp == 0x85) return true;
    utf8proc_category_t c = utf8proc_category(cp);
    /* White_Space beyond the controls is exactly the Z categories */
    return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

bool fr_uni_is_py_space(int32_t cp) {
    /* str.isspace(): bidi class WS, B or S, or category Zs; adds the separators 0x1C-0x1F */
    if (cp >= 0x1c && cp <= 0x1f) return true;
    return fr_uni_is_space(cp);
}

bool fr_uni_is_word(int32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') || cp == '_';
    if (cp == 0x200c || cp == 0x200d) return true;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* GPT-2's map keeps the printable bytes (33-126, 161-172, 174-255) as themselves and
 * moves the other 68 (0-32, 127-160, 173), in byte order, to U+0100..U+0143. */
int fr_char_to_byte(int32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return cp;
    if (cp >= 256 && cp <= 288) return cp - 256;       /* bytes 0-32 */
    if (cp >= 289 && cp <= 322) return cp - 289 + 127; /* bytes 127-160 */
    if (cp == 323) return 173;
    return -1;
}

int32_t fr_byte_to_cp(uint8_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    if (b <= 32) return 256 + b;
    if (b <= 160) return 289 + (b - 127);
    return 323; /* 173 */
}

bool fr_bytelevel_to_bytes(const uint8_t *s, size_t n, fr_buf *out, fr_error *err, fr_status *rc) {
    out->n = 0;
    *rc = fr_buf_reserve(out, n, err);
    if (*rc) return false;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        int k = fr_utf8_next(s + i, n - i, &cp);
        int b = k ? fr_char_to_byte(cp) : -1;
        if (b < 0) return false;
        out->p[out->n++] = (uint8_t)b;
        i += (size_t)k;
    }
    return true;
}

fr_status fr_bytes_to_bytelevel(const uint8_t *s, size_t n, fr_buf *out, fr_error *err) {
    out->n = 0;
    fr_status rc = fr_buf_reserve(out, 2 * n, err);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) out->n += (size_t)fr_utf8_encode(fr_byte_to_cp(s[i]), out->p + out->n);
    return FR_OK;
}

/* ------------------------------------------------------------------ UTF-8 filter */

static const uint8_t replacement_char[3] = {0xef, 0xbf, 0xbd};

/* The held bytes will never complete: pass them on as invalid. */
static fr_status filter_reject(fr_utf8_filter *f, fr_tok_text *out, fr_error *err) {
    fr_status rc = f->lossy ? fr_text_add(out, replacement_char, 3, err) : fr_text_add(out, f->hold, (size_t)f->nhold, err);
    f->nhold = f->need = 0;
    return rc;
}

fr_status fr_utf8_filter_feed(fr_utf8_filter *f, const uint8_t *s, size_t n, fr_tok_text *out, fr_error *err) {
    fr_status rc = FR_OK;
    size_t i = 0;
    while (i < n) {
        if (!f->nhold) {
            /* fast path: copy the run of complete characters in one go */
            size_t j = i;
            int32_t cp;
            int k;
            while (j < n && (s[j] < 0x80 || (k = fr_utf8_next(s + j, n - j, &cp)) > 0)) j += s[j] < 0x80 ? 1 : (size_t)k;
            if (j > i && (rc = fr_text_add(out, s + i, j - i, err))) return rc;
            i = j;
            if (i == n) break;
            uint8_t c = s[i];
            int need = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : -1;
            if (need < 0) { /* a byte that can never start a character */
                if ((rc = f->lossy ? fr_text_add(out, replacement_char, 3, err) : fr_text_add(out, &c, 1, err))) return rc;
                i++;
                continue;
            }
            f->hold[0] = c;
            f->nhold = 1;
            f->need = need;
            i++;
            continue;
        }
        uint8_t c = s[i], lead = f->hold[0], lo = 0x80, hi = 0xbf;
        if (f->nhold == 1) {
            if (lead == 0xe0) lo = 0xa0;
            if (lead == 0xed) hi = 0x9f;
            if (lead == 0xf0) lo = 0x90;
            if (lead == 0xf4) hi = 0x8f;
        }
        if (c < lo || c > hi) { /* the held prefix is a maximal invalid subpart; re-read c */
            if ((rc = filter_reject(f, out, err))) return rc;
            continue;
        }
        f->hold[f->nhold++] = c;
        i++;
        if (--f->need == 0) {
            if ((rc = fr_text_add(out, f->hold, (size_t)f->nhold, err))) return rc;
            f->nhold = 0;
        }
    }
    return FR_OK;
}

fr_status fr_utf8_filter_flush(fr_utf8_filter *f, fr_tok_text *out, fr_error *err) {
    return f->nhold ? filter_reject(f, out, err) : FR_OK;
}
