/* jinja_lex.c - template source to tokens, the way @huggingface/jinja does it.
 *
 * HF renders chat templates with trim_blocks and lstrip_blocks on. The reference does not
 * implement those inside the lexer as Jinja2 does; it rewrites the source with regular
 * expressions first, and since templates are written and tested against that behaviour
 * (including its corner cases: the rewrite also touches text, and lstrip stops at `{{`),
 * this file applies the same four rewrites, in the same order:
 *   1. drop one trailing newline;
 *   2. lstrip: at each line start, spaces/tabs followed by `{%`, `{#` or `{-` are removed;
 *   3. trim: a newline right after `%}`, `#}` or `-}` is removed;
 *   4. the transformers-only `{% generation %}` / `{% endgeneration %}` tags are removed,
 *      with their `-` markers stripping the whitespace around them.
 * Every byte of the rewritten text keeps its offset in the original source, so errors
 * (here and at render time) report the line and column the author sees.
 *
 * Tokenization then follows the reference: text runs up to `{%`, `{{` or `{#`; `{%-` and
 * `{{-` trim the previous text, `-%}` and `-}}` skip following white space; `-` or `+`
 * directly before digits after an operator is part of a number literal; `}}` inside a
 * `{...}` literal closes the literal, not the expression. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "jinja_impl.h"

typedef struct {
    char *s;
    uint32_t *pos; /* original offset of each byte of s */
    size_t n;
} jn_text;

static bool alloc_text(jn_arena *a, size_t cap, jn_text *t) {
    t->s = jn_alloc(a, cap + 1);
    t->pos = jn_alloc(a, (cap + 1) * sizeof *t->pos);
    t->n = 0;
    return t->s && t->pos;
}

static void emit(jn_text *t, const jn_text *in, size_t i) {
    t->s[t->n] = in->s[i];
    t->pos[t->n] = in->pos[i];
    t->n++;
}

/* Line terminators for a multiline `^`: \n, \r, U+2028, U+2029. */
static size_t line_term_before(const jn_text *in, size_t i) {
    if (i >= 1 && (in->s[i - 1] == '\n' || in->s[i - 1] == '\r')) return 1;
    if (i >= 3 && (unsigned char)in->s[i - 3] == 0xE2 && (unsigned char)in->s[i - 2] == 0x80 &&
        ((unsigned char)in->s[i - 1] == 0xA8 || (unsigned char)in->s[i - 1] == 0xA9))
        return 3;
    return 0;
}

static bool pass_lstrip(jn_arena *a, const jn_text *in, jn_text *out) {
    if (!alloc_text(a, in->n, out)) return false;
    for (size_t i = 0; i < in->n;) {
        if (i == 0 || line_term_before(in, i)) {
            size_t j = i;
            while (j < in->n && (in->s[j] == ' ' || in->s[j] == '\t')) j++;
            if (j + 1 < in->n && in->s[j] == '{' && strchr("#%-", in->s[j + 1]) && in->s[j + 1]) {
                i = j; /* drop the indentation, keep the tag */
                emit(out, in, i++);
                emit(out, in, i++);
                continue;
            }
        }
        emit(out, in, i++);
    }
    return true;
}

static bool pass_trim(jn_arena *a, const jn_text *in, jn_text *out) {
    if (!alloc_text(a, in->n, out)) return false;
    for (size_t i = 0; i < in->n;) {
        if (i + 2 < in->n && (in->s[i] == '#' || in->s[i] == '%' || in->s[i] == '-') && in->s[i + 1] == '}' &&
            in->s[i + 2] == '\n') {
            emit(out, in, i);
            emit(out, in, i + 1);
            i += 3;
            continue;
        }
        emit(out, in, i++);
    }
    return true;
}

static size_t skip_ws(const jn_text *t, size_t i) {
    for (size_t k; i < t->n && (k = jn_js_ws_len(t->s + i, t->n - i));) i += k;
    return i;
}

/* Does a generation tag start at i ("{%")? Sets *end past "%}" and the two strip marks. */
static bool generation_tag(const jn_text *t, size_t i, size_t *end, bool *lstrip, bool *rstrip) {
    if (i + 1 >= t->n || t->s[i] != '{' || t->s[i + 1] != '%') return false;
    size_t j = i + 2;
    *lstrip = j < t->n && t->s[j] == '-';
    if (*lstrip) j++;
    j = skip_ws(t, j);
    if (t->n - j >= 3 && !memcmp(t->s + j, "end", 3) && t->n - j >= 13 &&
        !memcmp(t->s + j + 3, "generation", 10))
        j += 3;
    if (t->n - j < 10 || memcmp(t->s + j, "generation", 10)) return false;
    j = skip_ws(t, j + 10);
    *rstrip = j < t->n && t->s[j] == '-';
    if (*rstrip) j++;
    if (j + 1 >= t->n || t->s[j] != '%' || t->s[j + 1] != '}') return false;
    *end = j + 2;
    return true;
}

static bool pass_generation(jn_arena *a, const jn_text *in, jn_text *out) {
    if (!alloc_text(a, in->n, out)) return false;
    size_t keep_from = 0; /* output before this was produced by a previous tag's match */
    for (size_t i = 0; i < in->n;) {
        size_t end;
        bool ls, rs;
        if (in->s[i] == '{' && generation_tag(in, i, &end, &ls, &rs)) {
            if (ls) { /* drop the white space run before the tag (not what a match consumed) */
                while (out->n > keep_from) {
                    size_t st = out->n - 1;
                    while (st > keep_from && ((unsigned char)out->s[st] & 0xC0) == 0x80) st--;
                    if (jn_js_ws_len(out->s + st, out->n - st) != out->n - st) break;
                    out->n = st;
                }
            }
            size_t after = skip_ws(in, end);
            if (!rs)
                for (size_t k = end; k < after; k++) emit(out, in, k);
            keep_from = out->n;
            i = after;
            continue;
        }
        emit(out, in, i++);
    }
    return true;
}

/* ---- tokenizer ------------------------------------------------------------------- */

typedef struct {
    jn_arena *arena;
    const jn_text *t;
    size_t cur;
    jn_token *toks;
    size_t n, cap;
    int curly;
    char *msg;
    size_t msgcap;
    uint32_t *errpos;
    uint32_t src_len;
} lexer;

static uint32_t opos(const lexer *L, size_t i) { return i < L->t->n ? L->t->pos[i] : L->src_len; }

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static fr_status
lex_fail(lexer *L, size_t at, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->msg, L->msgcap, fmt, ap);
    va_end(ap);
    *L->errpos = opos(L, at);
    return FR_ERR_FORMAT;
}

static fr_status push(lexer *L, jn_tok_type type, const char *s, size_t n, size_t at) {
    if (L->n == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 64;
        jn_token *v = jn_alloc(L->arena, cap * sizeof *v);
        if (!v) return lex_fail(L, at, "template too large: out of memory");
        if (L->n) memcpy(v, L->toks, L->n * sizeof *v);
        L->toks = v;
        L->cap = cap;
    }
    L->toks[L->n++] = (jn_token){type, s, n, opos(L, at)};
    return FR_OK;
}

static jn_tok_type last_type(const lexer *L) { return L->n ? L->toks[L->n - 1].type : TK_EOF; }

/* {%- and {{- : trim the white space at the end of the text token just before. */
static void strip_trailing(lexer *L) {
    if (!L->n || L->toks[L->n - 1].type != TK_TEXT) return;
    jn_token *tk = &L->toks[L->n - 1];
    jn_str s = jn_js_trim((jn_str){tk->s, tk->n}, false, true);
    tk->n = s.n;
    if (!tk->n) L->n--;
}

static void skip_leading(lexer *L) { L->cur = skip_ws(L->t, L->cur); }

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_word(char c) {
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* The reference's consumeWhile for identifiers and digits: reaching the end of the
 * source inside a tag is an error. */
static fr_status consume(lexer *L, bool (*pred)(char), size_t *start, size_t *len) {
    *start = L->cur;
    *len = 0;
    while (L->cur < L->t->n && pred(L->t->s[L->cur])) {
        L->cur++;
        if (L->cur >= L->t->n) return lex_fail(L, L->cur, "unexpected end of template inside a tag");
    }
    *len = L->cur - *start;
    return FR_OK;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c |= 32;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static fr_status string_literal(lexer *L) {
    const jn_text *t = L->t;
    char q = t->s[L->cur];
    size_t open = L->cur++;
    /* Pass 1: find the end and whether there are escapes. */
    size_t i = L->cur;
    bool escapes = false;
    while (i < t->n && t->s[i] != q) {
        if (t->s[i] == '\\')
            escapes = true, i += 2;
        else
            i++;
    }
    if (i >= t->n) return lex_fail(L, open, "unterminated string literal");
    if (!escapes) {
        fr_status rc = push(L, TK_STR, t->s + L->cur, i - L->cur, open);
        L->cur = i + 1;
        return rc;
    }
    char *out = jn_alloc(L->arena, (i - L->cur) * 2 + 4);
    if (!out) return lex_fail(L, open, "template too large: out of memory");
    size_t n = 0;
    uint32_t hi = 0; /* a pending \uD800..\uDBFF waiting for its low half */
    while (L->cur < t->n && t->s[L->cur] != q) {
        char c = t->s[L->cur];
        if (c != '\\') {
            if (hi) n += jn_utf8_encode(0xFFFD, out + n), hi = 0;
            out[n++] = c;
            L->cur++;
            continue;
        }
        size_t at = L->cur++;
        if (L->cur >= t->n) return lex_fail(L, at, "unexpected end of template in a string escape");
        char e = t->s[L->cur++];
        if (e == 'x' || e == 'u') {
            int len = e == 'x' ? 2 : 4;
            uint32_t v = 0;
            for (int k = 0; k < len; k++) {
                int h = L->cur + (size_t)k < t->n ? hexval(t->s[L->cur + (size_t)k]) : -1;
                if (h < 0) return lex_fail(L, at, "invalid hexadecimal escape sequence \\%c", e);
                v = v * 16 + (uint32_t)h;
            }
            L->cur += (size_t)len;
            /* JavaScript builds UTF-16: pair surrogates, print lone ones as U+FFFD. */
            if (v >= 0xDC00 && v < 0xE000 && hi) {
                v = 0x10000 + ((hi - 0xD800) << 10) + (v - 0xDC00);
                hi = 0;
            } else {
                if (hi) n += jn_utf8_encode(0xFFFD, out + n), hi = 0;
                if (v >= 0xD800 && v < 0xDC00) {
                    hi = v;
                    continue;
                }
                if (v >= 0xDC00 && v < 0xE000) v = 0xFFFD;
            }
            n += jn_utf8_encode(v, out + n);
            continue;
        }
        const char *from = "ntrbfv'\"\\", *to = "\n\t\r\b\f\v'\"\\";
        const char *f = strchr(from, e);
        if (!f || !e) return lex_fail(L, at, "unexpected escaped character '%c'", e);
        if (hi) n += jn_utf8_encode(0xFFFD, out + n), hi = 0;
        out[n++] = to[f - from];
    }
    if (hi) n += jn_utf8_encode(0xFFFD, out + n);
    if (L->cur >= t->n) return lex_fail(L, open, "unterminated string literal");
    L->cur++; /* closing quote */
    return push(L, TK_STR, out, n, open);
}

static const struct {
    const char *seq;
    jn_tok_type type;
} table[] = {
    {"{%", TK_OPEN_STMT}, {"%}", TK_CLOSE_STMT}, {"{{", TK_OPEN_EXPR}, {"}}", TK_CLOSE_EXPR},
    {"(", TK_LPAREN},     {")", TK_RPAREN},      {"{", TK_LBRACE},     {"}", TK_RBRACE},
    {"[", TK_LBRACKET},   {"]", TK_RBRACKET},    {",", TK_COMMA},      {".", TK_DOT},
    {":", TK_COLON},      {"|", TK_PIPE},        {"<=", TK_CMP},       {">=", TK_CMP},
    {"==", TK_CMP},       {"!=", TK_CMP},        {"<", TK_CMP},        {">", TK_CMP},
    {"+", TK_ADD},        {"-", TK_ADD},         {"~", TK_ADD},        {"**", TK_POW},
    {"*", TK_MUL},        {"//", TK_MUL},        {"/", TK_MUL},        {"%", TK_MUL},
    {"=", TK_EQUALS},
};

static bool starts(const jn_text *t, size_t i, const char *s) {
    size_t n = strlen(s);
    return t->n - i >= n && !memcmp(t->s + i, s, n);
}

static fr_status tokenize(lexer *L) {
    const jn_text *t = L->t;
    fr_status rc = FR_OK;
    while (L->cur < t->n && !rc) {
        jn_tok_type lt = last_type(L);
        if (L->n == 0 || lt == TK_CLOSE_STMT || lt == TK_CLOSE_EXPR || lt == TK_COMMENT) {
            size_t st = L->cur;
            while (L->cur < t->n && !(t->s[L->cur] == '{' && L->cur + 1 < t->n &&
                                      strchr("%{#", t->s[L->cur + 1]) && t->s[L->cur + 1]))
                L->cur++;
            if (L->cur > st) {
                rc = push(L, TK_TEXT, t->s + st, L->cur - st, st);
                continue;
            }
        }
        if (starts(t, L->cur, "{#")) {
            size_t open = L->cur;
            L->cur += 2;
            bool strip_before = L->cur < t->n && t->s[L->cur] == '-';
            if (strip_before) L->cur++;
            size_t cs = L->cur;
            while (!(L->cur + 1 < t->n && t->s[L->cur] == '#' && t->s[L->cur + 1] == '}')) {
                if (L->cur + 2 >= t->n) return lex_fail(L, open, "comment is not closed with #}");
                L->cur++;
            }
            bool strip_after = L->cur > cs && t->s[L->cur - 1] == '-';
            if (strip_before) strip_trailing(L);
            rc = push(L, TK_COMMENT, t->s + cs, L->cur - cs, open);
            L->cur += 2;
            if (strip_after) skip_leading(L);
            continue;
        }
        if (starts(t, L->cur, "{%-")) {
            strip_trailing(L);
            rc = push(L, TK_OPEN_STMT, "{%", 2, L->cur);
            L->cur += 3;
            continue;
        }
        if (starts(t, L->cur, "{{-")) {
            strip_trailing(L);
            rc = push(L, TK_OPEN_EXPR, "{{", 2, L->cur);
            L->curly = 0;
            L->cur += 3;
            continue;
        }
        size_t ws_start = L->cur;
        skip_leading(L);
        if (L->cur > ws_start && L->cur >= t->n)
            return lex_fail(L, L->cur, "unexpected end of template inside a tag");
        if (L->cur >= t->n) break;
        if (starts(t, L->cur, "-%}")) {
            rc = push(L, TK_CLOSE_STMT, "%}", 2, L->cur);
            L->cur += 3;
            skip_leading(L);
            continue;
        }
        if (starts(t, L->cur, "-}}")) {
            rc = push(L, TK_CLOSE_EXPR, "}}", 2, L->cur);
            L->cur += 3;
            skip_leading(L);
            continue;
        }
        char c = t->s[L->cur];
        if (c == '-' || c == '+') {
            lt = last_type(L);
            if (L->n == 0 || lt == TK_TEXT) return lex_fail(L, L->cur, "unexpected character '%c'", c);
            if (lt != TK_IDENT && lt != TK_NUM && lt != TK_STR && lt != TK_RPAREN && lt != TK_RBRACKET) {
                /* unary: a sign directly followed by digits makes a negative literal */
                size_t at = L->cur++, ds, dn;
                if ((rc = consume(L, is_digit, &ds, &dn))) return rc;
                if (dn && L->cur + 1 < t->n && t->s[L->cur] == '.' && is_digit(t->s[L->cur + 1])) {
                    L->cur++;
                    size_t fs, fn;
                    if ((rc = consume(L, is_digit, &fs, &fn))) return rc;
                    dn = L->cur - ds;
                }
                if (dn)
                    rc = push(L, TK_NUM, t->s + at, 1 + dn, at);
                else
                    rc = push(L, TK_UNARY, t->s + at, 1, at);
                continue;
            }
        }
        bool matched = false;
        for (size_t k = 0; k < sizeof table / sizeof *table; k++) {
            if (table[k].type == TK_CLOSE_EXPR && L->curly > 0) continue;
            if (!starts(t, L->cur, table[k].seq)) continue;
            size_t len = strlen(table[k].seq);
            rc = push(L, table[k].type, t->s + L->cur, len, L->cur);
            if (table[k].type == TK_OPEN_EXPR)
                L->curly = 0;
            else if (table[k].type == TK_LBRACE)
                L->curly++;
            else if (table[k].type == TK_RBRACE)
                L->curly--;
            L->cur += len;
            matched = true;
            break;
        }
        if (matched) continue;
        if (c == '\'' || c == '"') {
            rc = string_literal(L);
            continue;
        }
        if (is_digit(c)) {
            size_t ds, dn;
            if ((rc = consume(L, is_digit, &ds, &dn))) return rc;
            if (last_type(L) != TK_DOT && L->cur + 1 < t->n && t->s[L->cur] == '.' &&
                is_digit(t->s[L->cur + 1])) {
                L->cur++;
                size_t fs, fn;
                if ((rc = consume(L, is_digit, &fs, &fn))) return rc;
            }
            rc = push(L, TK_NUM, t->s + ds, L->cur - ds, ds);
            continue;
        }
        if (is_word(c)) {
            size_t ws, wn;
            if ((rc = consume(L, is_word, &ws, &wn))) return rc;
            rc = push(L, TK_IDENT, t->s + ws, wn, ws);
            continue;
        }
        uint32_t cp;
        char enc[5] = {0};
        jn_utf8_decode(t->s + L->cur, t->n - L->cur, &cp);
        jn_utf8_encode(cp, enc);
        return lex_fail(L, L->cur, "unexpected character '%s' inside a tag", enc);
    }
    if (!rc) rc = push(L, TK_EOF, "", 0, t->n);
    return rc;
}

fr_status jn_lex(jn_arena *arena, const char *src, size_t len, jn_token **toks, size_t *ntoks, char *msg,
                 size_t msgcap, uint32_t *errpos) {
    jn_text a, b;
    *errpos = 0;
    if (!alloc_text(arena, len, &a)) {
        snprintf(msg, msgcap, "template too large: out of memory");
        return FR_ERR_NOMEM;
    }
    memcpy(a.s, src, len);
    for (size_t i = 0; i < len; i++) a.pos[i] = (uint32_t)i;
    a.n = len;
    if (a.n && a.s[a.n - 1] == '\n') a.n--;
    if (!pass_lstrip(arena, &a, &b) || !pass_trim(arena, &b, &a) || !pass_generation(arena, &a, &b)) {
        snprintf(msg, msgcap, "template too large: out of memory");
        return FR_ERR_NOMEM;
    }
    lexer L = {
        .arena = arena, .t = &b, .msg = msg, .msgcap = msgcap, .errpos = errpos, .src_len = (uint32_t)len};
    fr_status rc = tokenize(&L);
    if (rc) return rc;
    *toks = L.toks;
    *ntoks = L.n;
    return FR_OK;
}
