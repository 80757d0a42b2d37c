/* detok.c - ids back to text: tokenizer.json decoders (ByteLevel, ByteFallback,
 * Replace, Fuse, Strip, Metaspace, Sequence), full decode and the streaming
 * detokenizer.
 *
 * Decoders work as in HF tokenizers, on the list of token strings, except that bytes
 * stay bytes: where HF turns invalid UTF-8 into U+FFFD inside the ByteLevel and
 * ByteFallback decoders, here the raw bytes go through and a final UTF-8 filter does
 * the replacement only when FR_TOK_LOSSY asks for it. That keeps byte-level round
 * trips exact, and lets the streaming detokenizer work on raw bytes.
 *
 * Streaming uses HF's DecodeStream idea: decode a short window (the last emitted token
 * as context, plus the new ones) and emit what it adds beyond the context's own decode.
 * The context makes first-token rules (Metaspace dropping the leading space, Strip)
 * apply the same way in both decodes, so the difference is exactly the new text. */
#include "tok_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { D_BYTELEVEL, D_BYTEFALLBACK, D_REPLACE, D_FUSE, D_STRIP, D_METASPACE };

typedef struct {
    int type;
    fr_regex re;           /* D_REPLACE */
    uint8_t *content;      /* D_REPLACE */
    size_t content_len;
    int32_t strip_cp;      /* D_STRIP */
    int64_t start, stop;   /* D_STRIP */
    int32_t repl_cp;       /* D_METASPACE */
    bool drop_first_repl;  /* D_METASPACE: prepend_scheme != never */
} dec_step;

struct fr_decoder {
    dec_step *steps;
    int n;
};

void fr_decoder_free(fr_decoder *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) {
        fr_regex_free(&d->steps[i].re);
        free(d->steps[i].content);
    }
    free(d->steps);
    free(d);
}

bool fr_decoder_is_bytelevel(const fr_decoder *d) { return d && d->n == 1 && d->steps[0].type == D_BYTELEVEL; }

static fr_status add_step(fr_decoder *d, dec_step st, fr_error *err) {
    dec_step *v = realloc(d->steps, (size_t)(d->n + 1) * sizeof *v);
    if (!v) {
        fr_regex_free(&st.re);
        free(st.content);
        return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (decoder)");
    }
    d->steps = v;
    v[d->n++] = st;
    return FR_OK;
}

/* One character given as a JSON string: its code point, or -1. */
static int32_t one_char(const cJSON *j) {
    if (!cJSON_IsString(j)) return -1;
    int32_t cp;
    size_t n = strlen(j->valuestring);
    int k = fr_utf8_next((const uint8_t *)j->valuestring, n, &cp);
    return k && (size_t)k == n ? cp : -1;
}

static fr_status parse_into(fr_decoder *d, const cJSON *j, const char *path, int depth, fr_error *err) {
    if (!j || cJSON_IsNull(j)) return FR_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsObject(j) || !cJSON_IsString(type))
        return fr_fail(err, FR_ERR_FORMAT, "%s: expected an object with a \"type\"", path);
    const char *ty = type->valuestring;
    dec_step st = {0};
    if (!strcmp(ty, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "decoders");
        if (!cJSON_IsArray(list)) return fr_fail(err, FR_ERR_FORMAT, "%s.decoders: expected an array", path);
        if (depth > 8) return fr_fail(err, FR_ERR_FORMAT, "%s: decoder sequences nested too deeply", path);
        int i = 0;
        for (const cJSON *e = list->child; e; e = e->next, i++) {
            char sub[400];
            snprintf(sub, sizeof sub, "%s.decoders[%d]", path, i);
            fr_status rc = parse_into(d, e, sub, depth + 1, err);
            if (rc) return rc;
        }
        return FR_OK;
    }
    if (!strcmp(ty, "ByteLevel")) st.type = D_BYTELEVEL;
    else if (!strcmp(ty, "ByteFallback")) st.type = D_BYTEFALLBACK;
    else if (!strcmp(ty, "Fuse")) st.type = D_FUSE;
    else if (!strcmp(ty, "Replace")) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
        if (!cJSON_IsString(c)) return fr_fail(err, FR_ERR_FORMAT, "%s.content: expected a string", path);
        st.type = D_REPLACE;
        fr_status rc = fr_parse_pattern(cJSON_GetObjectItemCaseSensitive(j, "pattern"), path, &st.re, err);
        if (rc) return rc;
        st.content_len = strlen(c->valuestring);
        if (!(st.content = malloc(st.content_len + 1))) {
            fr_regex_free(&st.re);
            return fr_fail(err, FR_ERR_NOMEM, "out of memory");
        }
        memcpy(st.content, c->valuestring, st.content_len + 1);
    } else if (!strcmp(ty, "Strip")) {
        st.type = D_STRIP;
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "start"), *e = cJSON_GetObjectItemCaseSensitive(j, "stop");
        st.strip_cp = one_char(cJSON_GetObjectItemCaseSensitive(j, "content"));
        if (st.strip_cp < 0) return fr_fail(err, FR_ERR_FORMAT, "%s.content: expected one character", path);
        if (!cJSON_IsNumber(s) || !cJSON_IsNumber(e) || s->valuedouble < 0 || e->valuedouble < 0 ||
            s->valuedouble > 1e6 || e->valuedouble > 1e6)
            return fr_fail(err, FR_ERR_FORMAT, "%s: start and stop must be small non-negative integers", path);
        st.start = (int64_t)s->valuedouble;
        st.stop = (int64_t)e->valuedouble;
    } else if (!strcmp(ty, "Metaspace")) {
        st.type = D_METASPACE;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "replacement");
        st.repl_cp = r ? one_char(r) : 0x2581;
        if (st.repl_cp < 0) return fr_fail(err, FR_ERR_FORMAT, "%s.replacement: expected one character", path);
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme");
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(j, "add_prefix_space");
        st.drop_first_repl = cJSON_IsString(ps) ? strcmp(ps->valuestring, "never") != 0 : !cJSON_IsFalse(aps);
    } else
        return fr_fail(err, FR_ERR_UNSUPPORTED, "%s: decoder type \"%s\" is not supported", path, ty);
    return add_step(d, st, err);
}

fr_status fr_decoder_parse(const cJSON *j, const char *path, fr_decoder **out, fr_error *err) {
    *out = NULL;
    fr_decoder *d = calloc(1, sizeof *d);
    if (!d) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    fr_status rc = parse_into(d, j, path, 0, err);
    if (rc || d->n == 0) {
        fr_decoder_free(d);
        if (!rc && j && !cJSON_IsNull(j)) { /* an empty Sequence: tokens are concatenated as they are */
            if (!(d = calloc(1, sizeof *d))) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
            *out = d;
        }
        return rc;
    }
    *out = d;
    return FR_OK;
}

/* ------------------------------------------------------------------ running the chain */

/* A list of byte strings: spans over one buffer. */
typedef struct {
    fr_buf text;
    fr_spans sp;
} toklist;

static void toklist_release(toklist *l) {
    fr_buf_release(&l->text);
    free(l->sp.v);
    memset(l, 0, sizeof *l);
}

static fr_status toklist_begin(toklist *l, fr_error *err) { /* open a new token */
    if (l->text.n > UINT32_MAX / 2) return fr_fail(err, FR_ERR_CAPACITY, "tokenizer: decoded text too large");
    return fr_spans_push(&l->sp, (uint32_t)l->text.n, 0, 0, err);
}

static fr_status toklist_add(toklist *l, const void *p, size_t n, fr_error *err) { /* extend the open token */
    fr_status rc = fr_buf_add(&l->text, p, n, err);
    if (!rc) l->sp.v[l->sp.n - 1].len += (uint32_t)n;
    return rc;
}

static fr_status step_run(const dec_step *st, fr_regex_scratch *sc, const toklist *in, toklist *out, fr_error *err) {
    fr_status rc = FR_OK;
    out->text.n = 0;
    out->sp.n = 0;
    if (st->type == D_FUSE || st->type == D_BYTELEVEL) { /* both end with a single token */
        if ((rc = toklist_begin(out, err))) return rc;
    }
    for (size_t k = 0; k < in->sp.n && !rc; k++) {
        const uint8_t *s = in->text.p + in->sp.v[k].off;
        size_t n = in->sp.v[k].len;
        if (st->type != D_FUSE && st->type != D_BYTELEVEL && (rc = toklist_begin(out, err))) break;
        switch (st->type) {
        case D_FUSE: rc = toklist_add(out, s, n, err); break;
        case D_BYTELEVEL: { /* GPT-2 characters back to bytes; a token with any other character stays as is */
            size_t mark = out->text.n;
            bool ok = true;
            for (size_t i = 0; i < n && ok && !rc;) {
                int32_t cp;
                int c = fr_utf8_next(s + i, n - i, &cp);
                int b = c ? fr_char_to_byte(cp) : -1;
                if (b < 0) ok = false;
                else {
                    uint8_t byte = (uint8_t)b;
                    rc = toklist_add(out, &byte, 1, err);
                    i += (size_t)c;
                }
            }
            if (!ok && !rc) {
                out->sp.v[out->sp.n - 1].len -= (uint32_t)(out->text.n - mark);
                out->text.n = mark;
                rc = toklist_add(out, s, n, err);
            }
            break;
        }
        case D_BYTEFALLBACK: {
            unsigned v;
            char hex[3] = {0};
            if (n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>') memcpy(hex, s + 3, 2);
            char *end;
            v = hex[0] ? (unsigned)strtoul(hex, &end, 16) : 256;
            if (hex[0] && *end == 0 && v < 256) {
                uint8_t byte = (uint8_t)v;
                rc = toklist_add(out, &byte, 1, err);
            } else
                rc = toklist_add(out, s, n, err);
            break;
        }
        case D_REPLACE: {
            size_t pos = 0, last = 0, ms, me;
            int r = 0;
            while (!rc && pos <= n && (r = fr_regex_find(&st->re, sc, s, n, pos, &ms, &me, err)) > 0) {
                if (!(rc = toklist_add(out, s + last, ms - last, err))) rc = toklist_add(out, st->content, st->content_len, err);
                last = pos = me;
                if (me == ms) { /* empty match: keep the next character and move past it */
                    if (ms >= n) break;
                    int32_t cp;
                    int cl = fr_utf8_next(s + ms, n - ms, &cp);
                    size_t step = cl ? (size_t)cl : 1;
                    if (!rc) rc = toklist_add(out, s + ms, step, err);
                    last = pos = ms + step;
                }
            }
            if (!rc && r < 0) rc = (fr_status)r;
            if (!rc && last < n) rc = toklist_add(out, s + last, n - last, err);
            break;
        }
        case D_STRIP: { /* up to start leading / stop trailing copies of one character */
            size_t a = 0, b = n;
            int32_t cp;
            int c;
            for (int64_t i = 0; i < st->start && a < b && (c = fr_utf8_next(s + a, b - a, &cp)) > 0 && cp == st->strip_cp; i++)
                a += (size_t)c;
            for (int64_t i = 0; i < st->stop && b > a; i++) {
                size_t q = b - 1;
                while (q > a && (s[q] & 0xc0) == 0x80 && b - q < 4) q--;
                if (fr_utf8_next(s + q, b - q, &cp) != (int)(b - q) || cp != st->strip_cp) break;
                b = q;
            }
            rc = toklist_add(out, s + a, b - a, err);
            break;
        }
        case D_METASPACE: { /* replacement -> space; the first token drops them instead */
            for (size_t i = 0; i < n && !rc;) {
                int32_t cp;
                int c = fr_utf8_next(s + i, n - i, &cp);
                size_t cl = c ? (size_t)c : 1;
                if (c && cp == st->repl_cp) {
                    if (!(k == 0 && st->drop_first_repl)) rc = toklist_add(out, " ", 1, err);
                } else
                    rc = toklist_add(out, s + i, cl, err);
                i += cl;
            }
            break;
        }
        }
    }
    return rc;
}

fr_status fr_decode_raw(const fr_tokenizer *t, const int32_t *ids, int64_t n, bool skip_special, fr_tok_text *out,
                        fr_error *err) {
    fr_status rc = FR_OK;
    if (t->decode_bytes) { /* ByteLevel / tiktoken: each token's bytes, concatenated */
        for (int64_t i = 0; i < n && !rc; i++) {
            int32_t id = ids[i];
            if (id < 0 || id >= t->n_ids || !(t->flags[id] & FR_TOKF_EXISTS)) continue;
            if (skip_special && (t->flags[id] & FR_TOKF_SPECIAL)) continue;
            rc = fr_text_add(out, t->dec_text.p + t->dec_off[id], t->dec_len[id], err);
        }
        return rc;
    }
    toklist a = {0}, b = {0};
    for (int64_t i = 0; i < n && !rc; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->flags[id] & FR_TOKF_EXISTS)) continue;
        if (skip_special && (t->flags[id] & FR_TOKF_SPECIAL)) continue;
        if (!(rc = toklist_begin(&a, err))) rc = toklist_add(&a, t->disp_text.p + t->disp_off[id], t->disp_len[id], err);
    }
    toklist *cur = &a, *nxt = &b;
    fr_regex_scratch sc = {0};
    if (!rc && t->decoder && t->decoder->n) rc = fr_regex_scratch_init(&sc, err);
    for (int i = 0; t->decoder && i < t->decoder->n && !rc; i++) {
        rc = step_run(&t->decoder->steps[i], &sc, cur, nxt, err);
        toklist *x = cur;
        cur = nxt;
        nxt = x;
    }
    for (size_t k = 0; k < cur->sp.n && !rc; k++) { /* no decoder at all: HF joins with spaces */
        if (!t->decoder && k > 0) rc = fr_text_add(out, " ", 1, err);
        if (!rc) rc = fr_text_add(out, cur->text.p + cur->sp.v[k].off, cur->sp.v[k].len, err);
    }
    fr_regex_scratch_release(&sc);
    toklist_release(&a);
    toklist_release(&b);
    return rc;
}

fr_status fr_tokenizer_decode(const fr_tokenizer *t, const int32_t *ids, int64_t n, unsigned flags, fr_tok_text *out,
                              fr_error *err) {
    out->len = 0;
    fr_status rc = fr_text_add(out, "", 0, err);
    if (rc || n <= 0) return rc;
    if (!(flags & FR_TOK_LOSSY)) return fr_decode_raw(t, ids, n, flags & FR_TOK_SKIP_SPECIAL, out, err);
    fr_tok_text raw = {0};
    fr_utf8_filter f = {.lossy = true};
    rc = fr_decode_raw(t, ids, n, flags & FR_TOK_SKIP_SPECIAL, &raw, err);
    if (!rc) rc = fr_utf8_filter_feed(&f, (const uint8_t *)raw.data, raw.len, out, err);
    if (!rc) rc = fr_utf8_filter_flush(&f, out, err);
    fr_tok_text_release(&raw);
    return rc;
}

/* ------------------------------------------------------------------ streaming */

#define WINDOW_MAX 64 /* tokens kept while they decode to nothing; then the context restarts */

struct fr_detok {
    const fr_tokenizer *t;
    bool skip_special;
    int32_t win[WINDOW_MAX]; /* the context id (already emitted), then pending ids */
    int nwin;
    fr_tok_text ctx; /* what the context decodes to on its own */
    fr_tok_text buf;
    fr_utf8_filter filter;
};

fr_status fr_detok_create(const fr_tokenizer *t, unsigned flags, fr_detok **out, fr_error *err) {
    fr_detok *d = calloc(1, sizeof *d);
    if (!d) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (detokenizer)");
    d->t = t;
    d->skip_special = flags & FR_TOK_SKIP_SPECIAL;
    d->filter.lossy = flags & FR_TOK_LOSSY;
    *out = d;
    return FR_OK;
}

void fr_detok_reset(fr_detok *d) {
    d->nwin = 0;
    d->ctx.len = 0;
    d->filter.nhold = d->filter.need = 0;
}

void fr_detok_destroy(fr_detok *d) {
    if (!d) return;
    fr_tok_text_release(&d->buf);
    fr_tok_text_release(&d->ctx);
    free(d);
}

fr_status fr_detok_push(fr_detok *d, int32_t id, fr_tok_text *out, fr_error *err) {
    const fr_tokenizer *t = d->t;
    if (out->len == 0 && !out->data) {
        fr_status rc = fr_text_add(out, "", 0, err);
        if (rc) return rc;
    }
    if (id < 0 || id >= t->n_ids || !(t->flags[id] & FR_TOKF_EXISTS)) return FR_OK; /* as decode: skipped */
    if (d->skip_special && (t->flags[id] & FR_TOKF_SPECIAL)) return FR_OK;
    if (t->decode_bytes) /* each token's bytes are its text: no context needed */
        return fr_utf8_filter_feed(&d->filter, t->dec_text.p + t->dec_off[id], t->dec_len[id], out, err);
    if (d->nwin == WINDOW_MAX) { /* many tokens that decode to nothing: keep only the last as context */
        d->win[0] = d->win[d->nwin - 1];
        d->nwin = 1;
        d->ctx.len = 0;
        fr_status rc = fr_decode_raw(t, d->win, 1, false, &d->ctx, err);
        if (rc) return rc;
    }
    d->win[d->nwin++] = id;
    d->buf.len = 0;
    fr_status rc = fr_decode_raw(t, d->win, d->nwin, false, &d->buf, err);
    if (rc) return rc;
    if (d->buf.len < d->ctx.len || (d->ctx.len && memcmp(d->buf.data, d->ctx.data, d->ctx.len) != 0))
        return fr_fail(err, FR_ERR_UNSUPPORTED, "detokenizer: this decoder chain cannot be streamed "
                                                "(a decode is not a prefix of a longer one)");
    size_t fresh = d->buf.len - d->ctx.len;
    if (!fresh) return FR_OK;
    if ((rc = fr_utf8_filter_feed(&d->filter, (const uint8_t *)d->buf.data + d->ctx.len, fresh, out, err))) return rc;
    /* the newest token becomes the context */
    d->win[0] = id;
    d->nwin = 1;
    d->ctx.len = 0;
    return fr_decode_raw(t, d->win, 1, false, &d->ctx, err);
}

fr_status fr_detok_finish(fr_detok *d, fr_tok_text *out, fr_error *err) {
    if (!out->data) {
        fr_status rc = fr_text_add(out, "", 0, err);
        if (rc) return rc;
    }
    fr_status rc = fr_utf8_filter_flush(&d->filter, out, err);
    fr_detok_reset(d);
    return rc;
}
