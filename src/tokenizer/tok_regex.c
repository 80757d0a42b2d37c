/* tok_regex.c - PCRE2 for the tokenizer's split patterns.
 *
 * tokenizer.json patterns are written for Oniguruma (what HF tokenizers runs) and
 * tiktoken's for Rust's regex crate. PCRE2 agrees with both on the syntax these
 * patterns use except in three places, which fr_regex_translate rewrites:
 *   - \s, \S: PCRE2's UCP \s adds U+180E; both references mean Unicode White_Space.
 *   - \p{Han} and other script names: PCRE2 >= 10.40 reads a bare script name as
 *     Script_Extensions (which puts 。 and ー in Han); the references use Script.
 *   - [A&&B] class intersection (Oniguruma, Kimi's pattern): PCRE2 has none, so an
 *     intersection becomes lookaheads, (?:(?=B)A), and nested classes become
 *     alternations.
 * Patterns compile in UTF + UCP mode with PCRE2_MATCH_INVALID_UTF, so text with invalid
 * UTF-8 still matches (invalid bytes simply match nothing), and are JIT-compiled. */
#include "tok_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* ------------------------------------------------------------------ output builder */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 256;
        while (c < b->n + n + 1) c *= 2;
        char *p = realloc(b->p, c);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* ------------------------------------------------------------------ translation */

typedef struct {
    const char *pat;
    size_t len;
    const char *what;
    fr_error *err;
    fr_status rc;
} tr_ctx;

static fr_status tr_fail(tr_ctx *c, size_t at, const char *why) {
    if (!c->rc) c->rc = fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: regex at offset %zu: %s", c->what, at, why);
    return c->rc;
}

/* Is NAME a script PCRE2 knows under sc:? (Probing beats keeping a list in step with
 * PCRE2's Unicode version.) */
static bool is_script_name(const char *name, size_t n) {
    if (n == 0 || n > 64) return false;
    char buf[96];
    snprintf(buf, sizeof buf, "\\p{sc:%.*s}", (int)n, name);
    int e;
    PCRE2_SIZE eo;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)buf, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &e, &eo, NULL);
    if (!code) return false;
    pcre2_code_free(code);
    return true;
}

/* Translate the escape at pat[i] == '\\' into o; return the index after it. */
static size_t tr_escape(tr_ctx *c, size_t i, sbuf *o) {
    const char *p = c->pat;
    if (i + 1 >= c->len) {
        sb_add(o, p + i, 1);
        return i + 1;
    }
    char e = p[i + 1];
    if (e == 's' || e == 'S') {
        sb_str(o, e == 's' ? "\\p{White_Space}" : "\\P{White_Space}");
        return i + 2;
    }
    if ((e == 'p' || e == 'P') && i + 2 < c->len && p[i + 2] == '{') {
        const char *close = memchr(p + i + 3, '}', c->len - (i + 3));
        if (close) {
            const char *name = p + i + 3;
            size_t n = (size_t)(close - name);
            size_t end = (size_t)(close - p) + 1;
            if (n && name[0] != '^' && !memchr(name, ':', n) && !memchr(name, '=', n) && is_script_name(name, n)) {
                sb_add(o, p + i, 3);
                sb_str(o, "sc:");
                sb_add(o, name, n + 1);
            } else
                sb_add(o, p + i, end - i);
            return end;
        }
    }
    /* any other escape: copy the backslash and the whole (UTF-8) character after it */
    size_t k = i + 2;
    while (k < c->len && ((uint8_t)p[k] & 0xc0) == 0x80) k++;
    sb_add(o, p + i, k - i);
    return k;
}

/* A character class, parsed: operands of && (one when there is no intersection),
 * each a run of atoms (already translated) plus nested classes (a union). */
typedef struct tr_class tr_class;
typedef struct {
    sbuf atoms;
    tr_class **nested;
    int n_nested;
} tr_operand;
struct tr_class {
    bool neg;
    tr_operand *ops;
    int n_ops;
};

static void class_free(tr_class *k) {
    if (!k) return;
    for (int i = 0; i < k->n_ops; i++) {
        free(k->ops[i].atoms.p);
        for (int j = 0; j < k->ops[i].n_nested; j++) class_free(k->ops[i].nested[j]);
        free(k->ops[i].nested);
    }
    free(k->ops);
    free(k);
}

static tr_operand *class_new_op(tr_ctx *c, tr_class *k, size_t at) {
    tr_operand *ops = realloc(k->ops, (size_t)(k->n_ops + 1) * sizeof *ops);
    if (!ops) {
        tr_fail(c, at, "out of memory");
        return NULL;
    }
    k->ops = ops;
    memset(&ops[k->n_ops], 0, sizeof *ops);
    return &ops[k->n_ops++];
}

/* Parse the class at pat[*pi] == '['; *pi ends after its ']'. */
static tr_class *tr_parse_class(tr_ctx *c, size_t *pi, int depth) {
    const char *p = c->pat;
    size_t start = *pi, i = start + 1;
    if (depth > 16) {
        tr_fail(c, start, "character classes nested too deeply");
        return NULL;
    }
    tr_class *k = calloc(1, sizeof *k);
    if (!k) {
        tr_fail(c, start, "out of memory");
        return NULL;
    }
    if (i < c->len && p[i] == '^') k->neg = true, i++;
    tr_operand *op = class_new_op(c, k, start);
    bool first = true;
    while (op && i < c->len) {
        char ch = p[i];
        if (ch == ']' && !first) {
            *pi = i + 1;
            for (int j = 0; j < k->n_ops; j++)
                if (k->ops[j].atoms.oom) tr_fail(c, start, "out of memory");
            if (c->rc) break;
            return k;
        }
        if (ch == ']') { /* a leading ] is literal */
            sb_str(&op->atoms, "\\]");
            i++;
        } else if (ch == '\\') {
            i = tr_escape(c, i, &op->atoms);
        } else if (ch == '&' && i + 1 < c->len && p[i + 1] == '&') {
            op = class_new_op(c, k, i);
            i += 2;
        } else if (ch == '[' && i + 1 < c->len && p[i + 1] == ':') { /* POSIX [:name:] */
            const char *close = NULL;
            for (size_t j = i + 2; j + 1 < c->len; j++)
                if (p[j] == ':' && p[j + 1] == ']') {
                    close = p + j;
                    break;
                }
            if (!close) {
                tr_fail(c, i, "unterminated POSIX class");
                break;
            }
            sb_add(&op->atoms, p + i, (size_t)(close - (p + i)) + 2);
            i = (size_t)(close - p) + 2;
        } else if (ch == '[') {
            tr_class *sub = tr_parse_class(c, &i, depth + 1);
            if (!sub) break;
            tr_class **v = realloc(op->nested, (size_t)(op->n_nested + 1) * sizeof *v);
            if (!v) {
                class_free(sub);
                tr_fail(c, i, "out of memory");
                break;
            }
            op->nested = v;
            v[op->n_nested++] = sub;
        } else {
            sb_add(&op->atoms, p + i, 1);
            i++;
        }
        first = false;
    }
    if (!c->rc) tr_fail(c, start, "unterminated character class");
    class_free(k);
    return NULL;
}

static void tr_emit_class(tr_class *k, sbuf *o);

/* One operand as a single-character expression. */
static void tr_emit_operand(tr_operand *op, sbuf *o) {
    int parts = (op->atoms.n > 0) + op->n_nested;
    if (parts != 1) sb_str(o, "(?:");
    bool bar = false;
    if (op->atoms.n) {
        sb_str(o, "[");
        sb_add(o, op->atoms.p, op->atoms.n);
        sb_str(o, "]");
        bar = true;
    }
    for (int j = 0; j < op->n_nested; j++) {
        if (bar) sb_str(o, "|");
        tr_emit_class(op->nested[j], o);
        bar = true;
    }
    if (parts == 0) sb_str(o, "(?!)"); /* an empty operand matches nothing */
    if (parts != 1) sb_str(o, ")");
}

static void tr_emit_class(tr_class *k, sbuf *o) {
    if (k->n_ops == 1 && k->ops[0].n_nested == 0 && k->ops[0].atoms.n) { /* plain class: as written */
        sb_str(o, k->neg ? "[^" : "[");
        sb_add(o, k->ops[0].atoms.p, k->ops[0].atoms.n);
        sb_str(o, "]");
        return;
    }
    if (k->neg) sb_str(o, "(?:(?!");
    sb_str(o, "(?:");
    for (int j = 1; j < k->n_ops; j++) { /* every later operand must hold at this position */
        sb_str(o, "(?=");
        tr_emit_operand(&k->ops[j], o);
        sb_str(o, ")");
    }
    tr_emit_operand(&k->ops[0], o); /* and the first consumes the character */
    sb_str(o, ")");
    if (k->neg) sb_str(o, ")(?s:.))");
}

fr_status fr_regex_translate(const char *pat, size_t len, char **out, const char *what, fr_error *err) {
    tr_ctx c = {.pat = pat, .len = len, .what = what, .err = err};
    sbuf o = {0};
    sb_add(&o, "", 0);
    for (size_t i = 0; i < len && !c.rc;) {
        if (pat[i] == '\\') {
            i = tr_escape(&c, i, &o);
        } else if (pat[i] == '[') {
            tr_class *k = tr_parse_class(&c, &i, 0);
            if (!k) break;
            tr_emit_class(k, &o);
            class_free(k);
        } else {
            sb_add(&o, pat + i, 1);
            i++;
        }
    }
    if (!c.rc && o.oom) c.rc = fr_fail(err, FR_ERR_NOMEM, "%s: out of memory translating regex", what);
    if (c.rc) {
        free(o.p);
        return c.rc;
    }
    *out = o.p;
    return FR_OK;
}

/* ------------------------------------------------------------------ compile / match */

static fr_status compile(fr_regex *re, const char *pat, size_t len, uint32_t extra, const char *what, fr_error *err) {
    int e;
    PCRE2_SIZE eo;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | extra, &e,
                                     &eo, NULL);
    if (!code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(e, msg, sizeof msg);
        return fr_fail(err, FR_ERR_FORMAT, "%s: regex error at offset %zu: %s", what, (size_t)eo, (char *)msg);
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* best effort: the interpreter is the fallback */
    re->code = code;
    return FR_OK;
}

/* A literal string as a pattern: PCRE2_LITERAL cannot be combined with
 * PCRE2_MATCH_INVALID_UTF, so escape instead (\x{..} for ASCII punctuation and controls). */
static fr_status escape_literal(const char *s, size_t len, char **out, const char *what, fr_error *err) {
    char *o = malloc(len * 6 + 1), *d = o;
    if (!o) return fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        if (plain) *d++ = (char)c;
        else d += sprintf(d, "\\x{%x}", c);
    }
    *d = 0;
    *out = o;
    return FR_OK;
}

fr_status fr_regex_compile(fr_regex *re, const char *pat, size_t len, bool literal, const char *what, fr_error *err) {
    re->code = NULL;
    char *t;
    fr_status rc = literal ? escape_literal(pat, len, &t, what, err) : fr_regex_translate(pat, len, &t, what, err);
    if (rc) return rc;
    rc = compile(re, t, strlen(t), 0, what, err);
    free(t);
    return rc;
}

fr_status fr_regex_compile_raw(fr_regex *re, const char *pat, const char *what, fr_error *err) {
    re->code = NULL;
    return compile(re, pat, strlen(pat), 0, what, err);
}

void fr_regex_free(fr_regex *re) {
    if (re && re->code) pcre2_code_free(re->code);
    if (re) re->code = NULL;
}

fr_status fr_regex_scratch_init(fr_regex_scratch *s, fr_error *err) {
    s->md = pcre2_match_data_create(8, NULL);
    if (!s->md) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (regex match data)");
    return FR_OK;
}

void fr_regex_scratch_release(fr_regex_scratch *s) {
    if (s->md) pcre2_match_data_free(s->md);
    s->md = NULL;
}

int fr_regex_find(const fr_regex *re, fr_regex_scratch *sc, const uint8_t *s, size_t n, size_t from, size_t *ms,
                  size_t *me, fr_error *err) {
    if (from > n) return 0;
    int rc = pcre2_match(re->code, s, n, from, 0, sc->md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* deep backtracking: the interpreter keeps its stack on the heap */
        rc = pcre2_match(re->code, s, n, from, PCRE2_NO_JIT, sc->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return fr_fail(err, FR_ERR_CAPACITY, "tokenizer: regex match failed at byte %zu: %s", from, (char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}
