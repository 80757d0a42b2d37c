/* normalize.c - tokenizer.json normalizers: NFC, NFD, NFKC, NFKD (utf8proc), Lowercase,
 * Strip, StripAccents, Prepend, Replace, and Sequence (flattened into one chain).
 *
 * Each step maps bytes to bytes. HF normalizes Rust strings, which are always valid
 * UTF-8; here invalid bytes may appear (byte-level tokenizers must still encode them),
 * so every step passes invalid bytes through untouched and works on the valid runs
 * between them. Unicode normalization skips runs of plain ASCII, which every form
 * leaves alone, and hands utf8proc only the stretches that contain other characters
 * (each with the ASCII character before it, which a combining mark may attach to). */
#include "tok_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

enum { N_UNICODE, N_LOWER, N_STRIP, N_STRIP_ACCENTS, N_PREPEND, N_REPLACE };

typedef struct {
    int type;
    utf8proc_option_t form; /* N_UNICODE */
    bool left, right;       /* N_STRIP */
    char *str;              /* N_PREPEND text, N_REPLACE content */
    size_t str_len;
    fr_regex re; /* N_REPLACE */
} norm_step;

struct fr_normalizer {
    norm_step *steps;
    int n;
};

void fr_normalizer_free(fr_normalizer *n) {
    if (!n) return;
    for (int i = 0; i < n->n; i++) {
        free(n->steps[i].str);
        fr_regex_free(&n->steps[i].re);
    }
    free(n->steps);
    free(n);
}

static fr_status add_step(fr_normalizer *n, norm_step st, fr_error *err) {
    norm_step *v = realloc(n->steps, (size_t)(n->n + 1) * sizeof *v);
    if (!v) {
        free(st.str);
        fr_regex_free(&st.re);
        return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (normalizer)");
    }
    n->steps = v;
    v[n->n++] = st;
    return FR_OK;
}

static char *dup_str(const char *s, size_t *len) {
    *len = strlen(s);
    char *d = malloc(*len + 1);
    if (d) memcpy(d, s, *len + 1);
    return d;
}

fr_status fr_parse_pattern(const cJSON *j, const char *path, fr_regex *re, fr_error *err) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "Regex");
    char what[400];
    if (cJSON_IsString(s)) {
        snprintf(what, sizeof what, "%s.pattern.String", path);
        return fr_regex_compile(re, s->valuestring, strlen(s->valuestring), true, what, err);
    }
    if (cJSON_IsString(r)) {
        snprintf(what, sizeof what, "%s.pattern.Regex", path);
        return fr_regex_compile(re, r->valuestring, strlen(r->valuestring), false, what, err);
    }
    return fr_fail(err, FR_ERR_FORMAT, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", path);
}

static fr_status parse_into(fr_normalizer *n, const cJSON *j, const char *path, int depth, fr_error *err) {
    if (!j || cJSON_IsNull(j)) return FR_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsObject(j) || !cJSON_IsString(type))
        return fr_fail(err, FR_ERR_FORMAT, "%s: expected an object with a \"type\"", path);
    const char *ty = type->valuestring;
    norm_step st = {0};
    char sub[400];
    if (!strcmp(ty, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "normalizers");
        if (!cJSON_IsArray(list)) return fr_fail(err, FR_ERR_FORMAT, "%s.normalizers: expected an array", path);
        if (depth > 8) return fr_fail(err, FR_ERR_FORMAT, "%s: normalizer sequences nested too deeply", path);
        int i = 0;
        for (const cJSON *e = list->child; e; e = e->next, i++) {
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", path, i);
            fr_status rc = parse_into(n, e, sub, depth + 1, err);
            if (rc) return rc;
        }
        return FR_OK;
    }
    if (!strcmp(ty, "NFC")) st.type = N_UNICODE, st.form = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    else if (!strcmp(ty, "NFD")) st.type = N_UNICODE, st.form = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    else if (!strcmp(ty, "NFKC")) st.type = N_UNICODE, st.form = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    else if (!strcmp(ty, "NFKD")) st.type = N_UNICODE, st.form = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    else if (!strcmp(ty, "Lowercase")) st.type = N_LOWER;
    else if (!strcmp(ty, "StripAccents")) st.type = N_STRIP_ACCENTS;
    else if (!strcmp(ty, "Strip")) {
        st.type = N_STRIP;
        st.left = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "strip_left"));
        st.right = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "strip_right"));
    } else if (!strcmp(ty, "Prepend")) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prepend");
        if (!cJSON_IsString(p)) return fr_fail(err, FR_ERR_FORMAT, "%s.prepend: expected a string", path);
        st.type = N_PREPEND;
        if (!(st.str = dup_str(p->valuestring, &st.str_len))) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    } else if (!strcmp(ty, "Replace")) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
        if (!cJSON_IsString(c)) return fr_fail(err, FR_ERR_FORMAT, "%s.content: expected a string", path);
        st.type = N_REPLACE;
        fr_status rc = fr_parse_pattern(cJSON_GetObjectItemCaseSensitive(j, "pattern"), path, &st.re, err);
        if (rc) return rc;
        if (!(st.str = dup_str(c->valuestring, &st.str_len))) {
            fr_regex_free(&st.re);
            return fr_fail(err, FR_ERR_NOMEM, "out of memory");
        }
    } else
        return fr_fail(err, FR_ERR_UNSUPPORTED, "%s: normalizer type \"%s\" is not supported", path, ty);
    return add_step(n, st, err);
}

fr_status fr_normalizer_parse(const cJSON *j, const char *path, fr_normalizer **out, fr_error *err) {
    *out = NULL;
    fr_normalizer *n = calloc(1, sizeof *n);
    if (!n) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    fr_status rc = parse_into(n, j, path, 0, err);
    if (rc || n->n == 0) { /* an empty chain is the identity: no normalizer at all */
        fr_normalizer_free(n);
        return rc;
    }
    *out = n;
    return FR_OK;
}

/* ------------------------------------------------------------------ steps */

static fr_status run_unicode(utf8proc_option_t form, const uint8_t *in, size_t n, fr_buf *o, fr_error *err) {
    fr_status rc = FR_OK;
    size_t i = 0;
    while (i < n && !rc) {
        int32_t cp;
        if (in[i] < 0x80 && (i + 1 == n || in[i + 1] < 0x80)) { /* ASCII not followed by a possible mark */
            size_t j = i + 1;
            while (j < n && in[j] < 0x80 && (j + 1 == n || in[j + 1] < 0x80)) j++;
            rc = fr_buf_add(o, in + i, j - i, err);
            i = j;
            continue;
        }
        if (in[i] >= 0x80 && !fr_utf8_next(in + i, n - i, &cp)) { /* invalid byte: as is */
            rc = fr_buf_add(o, in + i, 1, err);
            i++;
            continue;
        }
        size_t j = i + (in[i] < 0x80 ? 1 : (size_t)fr_utf8_next(in + i, n - i, &cp));
        while (j < n) {
            if (in[j] < 0x80) {
                if (j + 1 == n || in[j + 1] < 0x80) break;
                j++;
                continue;
            }
            int k = fr_utf8_next(in + j, n - j, &cp);
            if (!k) break;
            j += (size_t)k;
        }
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t m = utf8proc_map(in + i, (utf8proc_ssize_t)(j - i), &dst, form);
        if (m < 0) rc = fr_fail(err, FR_ERR_NOMEM, "tokenizer: Unicode normalization failed: %s", utf8proc_errmsg(m));
        else rc = fr_buf_add(o, dst, (size_t)m, err);
        free(dst);
        i = j;
    }
    return rc;
}

/* Per character; f writes the replacement of cp (up to 8 bytes) and returns its length. */
static fr_status run_map(const uint8_t *in, size_t n, fr_buf *o, int (*f)(int32_t cp, uint8_t *dst), fr_error *err) {
    fr_status rc = fr_buf_reserve(o, n, err);
    for (size_t i = 0; i < n && !rc;) {
        int32_t cp;
        int k = fr_utf8_next(in + i, n - i, &cp);
        if (!k) {
            rc = fr_buf_add(o, in + i, 1, err);
            i++;
            continue;
        }
        uint8_t tmp[8];
        int m = f(cp, tmp);
        rc = fr_buf_add(o, tmp, (size_t)m, err);
        i += (size_t)k;
    }
    return rc;
}

static int lower_cp(int32_t cp, uint8_t *dst) {
    if (cp == 0x130) { /* the one unconditional multi-character lowercase mapping: İ -> i + combining dot */
        int k = fr_utf8_encode('i', dst);
        return k + fr_utf8_encode(0x307, dst + k);
    }
    return fr_utf8_encode(utf8proc_tolower(cp), dst);
}

static int strip_accent_cp(int32_t cp, uint8_t *dst) {
    return utf8proc_category(cp) == UTF8PROC_CATEGORY_MN ? 0 : fr_utf8_encode(cp, dst);
}

static fr_status run_strip(const norm_step *st, const uint8_t *in, size_t n, fr_buf *o, fr_error *err) {
    size_t a = 0, b = n;
    int32_t cp;
    int k;
    while (st->left && a < b && (k = fr_utf8_next(in + a, b - a, &cp)) > 0 && fr_uni_is_space(cp)) a += (size_t)k;
    while (st->right && b > a) {
        size_t s = b - 1;
        while (s > a && (in[s] & 0xc0) == 0x80 && b - s < 4) s--;
        if (fr_utf8_next(in + s, b - s, &cp) != (int)(b - s) || !fr_uni_is_space(cp)) break;
        b = s;
    }
    return fr_buf_add(o, in + a, b - a, err);
}

static fr_status run_replace(const norm_step *st, fr_regex_scratch *sc, const uint8_t *in, size_t n, fr_buf *o,
                             fr_error *err) {
    size_t pos = 0, last = 0, ms, me;
    int r;
    fr_status rc = FR_OK;
    while (pos <= n && (r = fr_regex_find(&st->re, sc, in, n, pos, &ms, &me, err)) > 0) {
        if ((rc = fr_buf_add(o, in + last, ms - last, err)) || (rc = fr_buf_add(o, st->str, st->str_len, err))) return rc;
        last = me;
        if (me == ms) { /* empty match: keep the next character and move past it */
            if (ms >= n) break;
            int32_t cp;
            int k = fr_utf8_next(in + ms, n - ms, &cp);
            size_t step = k ? (size_t)k : 1;
            if ((rc = fr_buf_add(o, in + ms, step, err))) return rc;
            last = pos = ms + step;
        } else
            pos = me;
    }
    if (r < 0) return (fr_status)r;
    return last < n ? fr_buf_add(o, in + last, n - last, err) : FR_OK;
}

fr_status fr_normalizer_run(const fr_normalizer *nz, fr_regex_scratch *sc, const uint8_t *in, size_t len, fr_buf *out,
                            fr_error *err) {
    fr_buf tmp = {0};
    fr_buf *bufs[2] = {out, &tmp};
    const uint8_t *cur = in;
    size_t cur_n = len;
    fr_status rc = FR_OK;
    int w = 0; /* the buffer the next step writes */
    for (int i = 0; i < nz->n && !rc; i++) {
        const norm_step *st = &nz->steps[i];
        fr_buf *o = bufs[w];
        o->n = 0;
        switch (st->type) {
        case N_UNICODE: rc = run_unicode(st->form, cur, cur_n, o, err); break;
        case N_LOWER: rc = run_map(cur, cur_n, o, lower_cp, err); break;
        case N_STRIP_ACCENTS: rc = run_map(cur, cur_n, o, strip_accent_cp, err); break;
        case N_STRIP: rc = run_strip(st, cur, cur_n, o, err); break;
        case N_PREPEND:
            if (cur_n && !(rc = fr_buf_add(o, st->str, st->str_len, err))) rc = fr_buf_add(o, cur, cur_n, err);
            break;
        case N_REPLACE: rc = run_replace(st, sc, cur, cur_n, o, err); break;
        }
        cur = o->p;
        cur_n = o->n;
        w ^= 1;
    }
    if (!rc && cur != out->p) { /* the last step wrote tmp (or there were none) */
        out->n = 0;
        rc = fr_buf_add(out, cur, cur_n, err);
    }
    fr_buf_release(&tmp);
    return rc;
}
