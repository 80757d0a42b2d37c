/* jinja_value.c - values of the template interpreter and how they print.
 *
 * The reference (@huggingface/jinja) is JavaScript, and chat templates print numbers,
 * booleans, lists and JSON through it, so this file reproduces JavaScript's formats:
 * Number.prototype.toString (shortest round-trip digits, exponent past 1e21),
 * FloatValue's "1.0", JSON.stringify's escapes, String(array) joining with commas, and
 * the three different ways the reference turns a value into text ({{ v }}, `~` / `+`,
 * and |join). String lengths and ordering follow UTF-16 code units, as JavaScript's do.
 *
 * Also here: the render arena (bump allocation charged against the memory limit),
 * output buffers, error helpers that attach line:column, and cJSON -> value conversion. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "jinja_impl.h"

/* ---- arena ---------------------------------------------------------------------- */

struct jn_chunk {
    jn_chunk *next;
    size_t used, cap;
    void *adopted; /* a malloc'd block handed over by jn_arena_adopt (no data then) */
    _Alignas(16) unsigned char data[];
};

void jn_arena_init(jn_arena *a, size_t limit, size_t *shared_counter) {
    memset(a, 0, sizeof *a);
    a->limit = limit;
    a->used = shared_counter ? shared_counter : &a->own;
}

void jn_arena_free(jn_arena *a) {
    jn_chunk *c = a->head;
    while (c) {
        jn_chunk *next = c->next;
        free(c->adopted);
        free(c);
        c = next;
    }
    a->head = NULL;
}

static jn_chunk *arena_chunk(jn_arena *a, size_t data_bytes) {
    size_t total = sizeof(jn_chunk) + data_bytes;
    if (total < data_bytes || *a->used > a->limit || total > a->limit - *a->used) {
        a->over_limit = true;
        return NULL;
    }
    jn_chunk *c = malloc(total);
    if (!c) return NULL;
    *a->used += total;
    c->used = 0;
    c->cap = data_bytes;
    c->adopted = NULL;
    return c;
}

void *jn_alloc(jn_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    jn_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        /* Chunks double from 4 KiB to 1 MiB; a large request gets a chunk of its own,
         * linked behind the current one so the current chunk's free space stays usable. */
        size_t want = c && c->cap < (1u << 20) && !c->adopted ? c->cap * 2 : (c ? c->cap : 4096);
        if (want < 4096) want = 4096;
        if (want > (1u << 20)) want = 1u << 20;
        if (n > want / 4) {
            jn_chunk *big = arena_chunk(a, n);
            if (!big) return NULL;
            big->used = n;
            if (c) {
                big->next = c->next;
                c->next = big;
            } else {
                big->next = NULL;
                a->head = big;
            }
            memset(big->data, 0, n);
            return big->data;
        }
        jn_chunk *fresh = arena_chunk(a, want);
        if (!fresh) return NULL;
        fresh->next = c;
        a->head = c = fresh;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

bool jn_arena_adopt(jn_arena *a, void *block) {
    jn_chunk *c = arena_chunk(a, 0);
    if (!c) return false;
    c->adopted = block;
    /* Behind the head, so the head keeps serving small allocations. */
    if (a->head) {
        c->next = a->head->next;
        a->head->next = c;
    } else {
        c->next = NULL;
        a->head = c;
    }
    return true;
}

/* ---- errors and budgets ----------------------------------------------------------- */

void jn_line_col(const char *src, size_t len, uint32_t pos, int *line, int *col) {
    int l = 1, k = 1;
    for (size_t i = 0; i < pos && i < len; i++) {
        if (src[i] == '\n')
            l++, k = 1;
        else if (((unsigned char)src[i] & 0xC0) != 0x80)
            k++;
    }
    *line = l;
    *col = k;
}

int jn_fail(jn_ctx *c, fr_status code, uint32_t pos, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    jn_line_col(c->tpl->src, c->tpl->src_len, pos, &line, &col);
    return fr_fail(c->err, code, "chat template line %d:%d: %s", line, col, msg);
}

int jn_oom(jn_ctx *c, uint32_t pos) {
    if (c->arena.over_limit)
        return jn_fail(c, FR_ERR_CAPACITY, pos, "render needs more than the %zu bytes of memory allowed",
                       c->lim.max_memory);
    return jn_fail(c, FR_ERR_NOMEM, pos, "out of memory");
}

int jn_steps(jn_ctx *c, uint64_t n, uint32_t pos) {
    c->steps += n;
    if (c->steps > c->lim.max_steps)
        return jn_fail(c, FR_ERR_CAPACITY, pos,
                       "render takes more than %llu evaluation steps (endless loop?)",
                       (unsigned long long)c->lim.max_steps);
    return FR_OK;
}

int jn_work(jn_ctx *c, size_t bytes, uint32_t pos) {
    return bytes >= 32 ? jn_steps(c, bytes >> 5, pos) : FR_OK;
}

/* ---- buffers -------------------------------------------------------------------- */

int jn_buf_put(jn_ctx *c, jn_buf *b, const char *s, size_t n, uint32_t pos) {
    int rc = jn_work(c, n, pos);
    if (rc) return rc;
    if (n > c->lim.max_output || b->n > c->lim.max_output - n)
        return jn_fail(c, FR_ERR_CAPACITY, pos, "output exceeds the %zu bytes allowed", c->lim.max_output);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        if (cap > c->lim.max_output + 1) cap = c->lim.max_output + 1;
        size_t grow = cap - b->cap;
        if (c->mem_used > c->lim.max_memory || grow > c->lim.max_memory - c->mem_used) {
            c->arena.over_limit = true;
            return jn_oom(c, pos);
        }
        char *p = realloc(b->p, cap);
        if (!p) return jn_oom(c, pos);
        c->mem_used += grow;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return FR_OK;
}

int jn_buf_putc(jn_ctx *c, jn_buf *b, char ch, uint32_t pos) { return jn_buf_put(c, b, &ch, 1, pos); }

void jn_buf_release(jn_ctx *c, jn_buf *b) {
    if (b->p) {
        free(b->p);
        c->mem_used -= b->cap;
    }
    b->p = NULL;
    b->n = b->cap = 0;
}

int jn_buf_to_value(jn_ctx *c, jn_buf *b, jval *out, uint32_t pos) {
    if (!b->p) {
        *out = jv_str("", 0);
        return FR_OK;
    }
    /* The arena takes the block over (no copy); its bytes stay charged. */
    if (!jn_arena_adopt(&c->arena, b->p)) {
        jn_buf_release(c, b);
        return jn_oom(c, pos);
    }
    *out = jv_str(b->p, b->n);
    b->p = NULL;
    b->n = b->cap = 0;
    return FR_OK;
}

/* ---- values --------------------------------------------------------------------- */

int jv_new_str(jn_ctx *c, const char *s, size_t n, jval *out, uint32_t pos) {
    if (n > c->lim.max_output)
        return jn_fail(c, FR_ERR_CAPACITY, pos, "a string of %zu bytes exceeds the %zu allowed", n,
                       c->lim.max_output);
    char *p = jn_alloc(&c->arena, n + 1);
    if (!p) return jn_oom(c, pos);
    if (n) memcpy(p, s, n);
    *out = jv_str(p, n);
    return FR_OK;
}

int jv_new_array(jn_ctx *c, size_t n, jval *out, uint32_t pos) {
    if (n > c->lim.max_steps) return jn_steps(c, n, pos);
    jn_array *a = jn_alloc(&c->arena, sizeof *a);
    jval *v = n ? jn_alloc(&c->arena, n * sizeof *v) : NULL;
    if (!a || (n && !v)) return jn_oom(c, pos);
    a->n = n;
    a->v = v; /* zeroed memory is JV_UNDEF */
    out->t = JV_ARRAY;
    out->u.a = a;
    return FR_OK;
}

int jv_new_object(jn_ctx *c, size_t cap, jn_object **out, uint32_t pos) {
    jn_object *o = jn_alloc(&c->arena, sizeof *o);
    if (!o) return jn_oom(c, pos);
    if (cap) {
        o->keys = jn_alloc(&c->arena, cap * sizeof *o->keys);
        o->vals = jn_alloc(&c->arena, cap * sizeof *o->vals);
        if (!o->keys || !o->vals) return jn_oom(c, pos);
        o->cap = cap;
    }
    *out = o;
    return FR_OK;
}

jval *jv_object_get(const jn_object *o, const char *k, size_t kn) {
    for (size_t i = 0; i < o->n; i++)
        if (o->keys[i].n == kn && !memcmp(o->keys[i].p, k, kn)) return &o->vals[i];
    return NULL;
}

/* Insert or replace (a replaced key keeps its place, as in a JavaScript Map). */
int jv_object_set(jn_ctx *c, jn_object *o, const char *k, size_t kn, jval v, uint32_t pos) {
    int rc = jn_steps(c, o->n / 8 + 1, pos);
    if (rc) return rc;
    jval *slot = jv_object_get(o, k, kn);
    if (slot) {
        *slot = v;
        return FR_OK;
    }
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 4;
        jn_str *keys = jn_alloc(&c->arena, cap * sizeof *keys);
        jval *vals = jn_alloc(&c->arena, cap * sizeof *vals);
        if (!keys || !vals) return jn_oom(c, pos);
        if (o->n) {
            memcpy(keys, o->keys, o->n * sizeof *keys);
            memcpy(vals, o->vals, o->n * sizeof *vals);
        }
        o->keys = keys;
        o->vals = vals;
        o->cap = cap;
    }
    o->keys[o->n].p = k;
    o->keys[o->n].n = kn;
    o->vals[o->n] = v;
    o->n++;
    return FR_OK;
}

int jv_new_func(jn_ctx *c, jn_fn_kind kind, jval *out, jn_func **f, uint32_t pos) {
    jn_func *fn = jn_alloc(&c->arena, sizeof *fn);
    if (!fn) return jn_oom(c, pos);
    fn->kind = kind;
    out->t = JV_FUNC;
    out->u.f = fn;
    if (f) *f = fn;
    return FR_OK;
}

/* Python truthiness as the reference computes it: empty strings, lists and dicts are
 * false, a namespace always true. */
bool jv_truthy(jval v) {
    switch ((jv_type)v.t) {
    case JV_UNDEF:
    case JV_NULL: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT:
    case JV_FLOAT: return v.u.d != 0 && !isnan(v.u.d);
    case JV_STR: return v.u.s.n > 0;
    case JV_ARRAY: return v.u.a->n > 0;
    case JV_OBJECT: return v.u.o->n > 0;
    case JV_NAMESPACE:
    case JV_FUNC: return true;
    }
    return false;
}

const char *jv_type_name(jval v) {
    switch ((jv_type)v.t) {
    case JV_UNDEF: return "UndefinedValue";
    case JV_NULL: return "NullValue";
    case JV_BOOL: return "BooleanValue";
    case JV_INT: return "IntegerValue";
    case JV_FLOAT: return "FloatValue";
    case JV_STR: return "StringValue";
    case JV_ARRAY: return v.u.a->tuple ? "TupleValue" : "ArrayValue";
    case JV_OBJECT: return "ObjectValue";
    case JV_NAMESPACE: return "NamespaceValue";
    case JV_FUNC: return "FunctionValue";
    }
    return "?";
}

int jv_from_json(jn_ctx *c, const cJSON *j, jval *out, int depth) {
    if (depth > 1000) return jn_fail(c, FR_ERR_FORMAT, 0, "input JSON nested deeper than 1000 levels");
    int rc = jn_steps(c, 1, 0);
    if (rc) return rc;
    if (cJSON_IsNull(j))
        *out = jv_null();
    else if (cJSON_IsFalse(j))
        *out = jv_bool(false);
    else if (cJSON_IsTrue(j))
        *out = jv_bool(true);
    else if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        /* JSON.parse gives one number type; Number.isInteger decides how it prints. */
        *out = isfinite(d) && d == trunc(d) ? jv_int(d) : jv_float(d);
    } else if (cJSON_IsString(j))
        *out = jv_str(j->valuestring, strlen(j->valuestring));
    else if (cJSON_IsArray(j)) {
        size_t n = (size_t)cJSON_GetArraySize(j), i = 0;
        if ((rc = jv_new_array(c, n, out, 0))) return rc;
        for (const cJSON *e = j->child; e && i < n; e = e->next, i++)
            if ((rc = jv_from_json(c, e, &out->u.a->v[i], depth + 1))) return rc;
    } else if (cJSON_IsObject(j)) {
        jn_object *o;
        if ((rc = jv_new_object(c, (size_t)cJSON_GetArraySize(j), &o, 0))) return rc;
        for (const cJSON *e = j->child; e; e = e->next) {
            jval v;
            if ((rc = jv_from_json(c, e, &v, depth + 1))) return rc;
            /* Duplicate keys: the last value wins, at the first key's place (JSON.parse). */
            if ((rc = jv_object_set(c, o, e->string, strlen(e->string), v, 0))) return rc;
        }
        out->t = JV_OBJECT;
        out->u.o = o;
    } else
        return jn_fail(c, FR_ERR_FORMAT, 0, "unsupported JSON value in the render context");
    return FR_OK;
}

/* ---- numbers as JavaScript prints them ------------------------------------------- */

void jn_fmt_js_number(double d, char out[40]) {
    if (isnan(d)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(d)) {
        strcpy(out, d < 0 ? "-Infinity" : "Infinity");
        return;
    }
    if (d == 0) {
        strcpy(out, "0");
        return;
    }
    if (fabs(d) < 9007199254740992.0 && d == trunc(d)) { /* whole numbers below 2^53: plain digits */
        snprintf(out, 40, "%.0f", d);
        return;
    }
    char buf[40], digits[24];
    double x = fabs(d);
    /* Shortest digit string that reads back as x: the correctly rounded one at the
     * smallest precision that round-trips (ECMA-262 Number::toString). */
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, x);
        if (strtod(buf, NULL) == x) break;
    }
    int k = 0, e = 0;
    const char *q = buf;
    for (; *q && *q != 'e'; q++)
        if (isdigit((unsigned char)*q)) digits[k++] = *q;
    if (*q == 'e') e = atoi(q + 1);
    while (k > 1 && digits[k - 1] == '0') k--;
    digits[k] = 0;
    int n = e + 1; /* x = 0.digits * 10^n */
    char *o = out;
    if (d < 0) *o++ = '-';
    if (k <= n && n <= 21) {
        memcpy(o, digits, (size_t)k), o += k;
        for (int i = 0; i < n - k; i++) *o++ = '0';
    } else if (0 < n && n <= 21) {
        memcpy(o, digits, (size_t)n), o += n;
        *o++ = '.';
        memcpy(o, digits + n, (size_t)(k - n)), o += k - n;
    } else if (-6 < n && n <= 0) {
        *o++ = '0', *o++ = '.';
        for (int i = 0; i < -n; i++) *o++ = '0';
        memcpy(o, digits, (size_t)k), o += k;
    } else {
        *o++ = digits[0];
        if (k > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)(k - 1)), o += k - 1;
        }
        o += sprintf(o, "e%c%d", n - 1 < 0 ? '-' : '+', abs(n - 1));
    }
    *o = 0;
}

void jn_fmt_js_float(double d, char out[40]) {
    if (d == 0 && signbit(d))
        strcpy(out, "-0.0");
    else if (isfinite(d) && d == trunc(d) && fabs(d) < 1e21)
        snprintf(out, 40, "%.1f", d);
    else
        jn_fmt_js_number(d, out);
}

/* ---- Unicode helpers -------------------------------------------------------------- */

size_t jn_utf8_decode(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) {
        *cp = 0;
        return 1;
    }
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    int len = u[0] >= 0xF0 ? 4 : u[0] >= 0xE0 ? 3 : u[0] >= 0xC2 ? 2 : 0;
    if (len == 0 || (size_t)len > n || u[0] > 0xF4) goto bad;
    uint32_t c = u[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((u[i] & 0xC0) != 0x80) goto bad;
        c = (c << 6) | (u[i] & 0x3F);
    }
    if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10FFFF)) || (c >= 0xD800 && c < 0xE000))
        goto bad;
    *cp = c;
    return (size_t)len;
bad: /* invalid bytes read as U+FFFD, one byte at a time */
    *cp = 0xFFFD;
    return 1;
}

size_t jn_utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static bool js_ws_cp(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000 || c == 0xFEFF;
}

size_t jn_js_ws_len(const char *s, size_t n) {
    if (n == 0) return 0;
    unsigned char b = (unsigned char)s[0];
    if (b < 0x80) return (b >= 0x09 && b <= 0x0D) || b == 0x20 ? 1 : 0;
    uint32_t cp;
    size_t k = jn_utf8_decode(s, n, &cp);
    return js_ws_cp(cp) ? k : 0;
}

size_t jn_utf16_len(const char *s, size_t n) {
    size_t units = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += jn_utf8_decode(s + i, n - i, &cp);
        units += cp >= 0x10000 ? 2 : 1;
    }
    return units;
}

/* JavaScript's < on strings compares UTF-16 code units: astral characters (surrogates
 * 0xD800..) sort below U+E000..U+FFFF, unlike a code point or byte comparison. */
int jn_utf16_cmp(const char *a, size_t an, const char *b, size_t bn) {
    size_t i = 0, j = 0;
    while (i < an && j < bn) {
        uint32_t x, y;
        i += jn_utf8_decode(a + i, an - i, &x);
        j += jn_utf8_decode(b + j, bn - j, &y);
        if (x == y) continue;
        bool xa = x >= 0x10000, ya = y >= 0x10000;
        if (xa == ya) return x < y ? -1 : 1;
        if (xa) return y >= 0xE000 ? -1 : 1;
        return x >= 0xE000 ? 1 : -1;
    }
    if (i < an) return 1;
    if (j < bn) return -1;
    return 0;
}

jn_str jn_js_trim(jn_str s, bool left, bool right) {
    if (left)
        for (size_t k; s.n && (k = jn_js_ws_len(s.p, s.n));) s.p += k, s.n -= k;
    if (right)
        while (s.n) {
            /* step back to the start of the last character */
            size_t st = s.n - 1;
            while (st > 0 && ((unsigned char)s.p[st] & 0xC0) == 0x80 && s.n - st < 4) st--;
            size_t k = jn_js_ws_len(s.p + st, s.n - st);
            if (!k || st + k != s.n) break;
            s.n = st;
        }
    return s;
}

/* upper() / lower() with Unicode simple case mapping, plus the one full mapping that
 * matters in practice (German sharp s upper-cases to "SS" in JavaScript and Python). */
int jv_lower(jn_ctx *c, jn_str s, bool upper, jval *out, uint32_t pos) {
    jn_buf b = {0};
    int rc = jn_work(c, s.n, pos);
    for (size_t i = 0; i < s.n && !rc;) {
        uint32_t cp;
        size_t k = jn_utf8_decode(s.p + i, s.n - i, &cp);
        if (cp < 0x80) {
            char ch = (char)(upper ? toupper((int)cp) : tolower((int)cp));
            rc = jn_buf_putc(c, &b, ch, pos);
        } else if (upper && cp == 0xDF) {
            rc = jn_buf_put(c, &b, "SS", 2, pos);
        } else {
            char enc[4];
            uint32_t m = (uint32_t)(upper ? utf8proc_toupper((utf8proc_int32_t)cp)
                                          : utf8proc_tolower((utf8proc_int32_t)cp));
            if (cp == 0xFFFD)
                rc = jn_buf_put(c, &b, s.p + i, k, pos); /* keep invalid bytes as they were */
            else
                rc = jn_buf_put(c, &b, enc, jn_utf8_encode(m, enc), pos);
        }
        i += k;
    }
    if (rc) {
        jn_buf_release(c, &b);
        return rc;
    }
    return jn_buf_to_value(c, &b, out, pos);
}

/* ---- printing ----------------------------------------------------------------------- */

static int put_str(jn_ctx *c, jn_buf *b, const char *s, uint32_t pos) {
    return jn_buf_put(c, b, s, strlen(s), pos);
}

int jv_render(jn_ctx *c, jn_buf *b, jval v, uint32_t pos) {
    char num[40];
    switch ((jv_type)v.t) {
    case JV_UNDEF: return put_str(c, b, "undefined", pos);
    case JV_NULL: return put_str(c, b, "undefined", pos); /* the reference's NullValue holds undefined */
    case JV_BOOL: return put_str(c, b, v.u.b ? "true" : "false", pos);
    case JV_INT: jn_fmt_js_number(v.u.d, num); return put_str(c, b, num, pos);
    case JV_FLOAT: jn_fmt_js_float(v.u.d, num); return put_str(c, b, num, pos);
    case JV_STR: return jn_buf_put(c, b, v.u.s.p, v.u.s.n, pos);
    case JV_ARRAY:
    case JV_OBJECT:
    case JV_NAMESPACE: {
        jn_json_opts o = {.indent = -1};
        return jv_to_json(c, b, v, &o, 0, pos);
    }
    case JV_FUNC: break;
    }
    return jn_fail(c, FR_ERR_FORMAT, pos, "cannot print a function (missing call parentheses?)");
}

int jv_js_str(jn_ctx *c, jn_buf *b, jval v, uint32_t pos) {
    char num[40];
    switch ((jv_type)v.t) {
    case JV_INT:
    case JV_FLOAT: jn_fmt_js_number(v.u.d, num); return put_str(c, b, num, pos);
    case JV_ARRAY: {
        /* Array.prototype.toString: items' own toString joined by commas. */
        int rc = jn_steps(c, v.u.a->n, pos);
        for (size_t i = 0; i < v.u.a->n && !rc; i++) {
            if (i) rc = jn_buf_putc(c, b, ',', pos);
            if (!rc) rc = jv_render(c, b, v.u.a->v[i], pos);
        }
        return rc;
    }
    case JV_OBJECT:
    case JV_NAMESPACE: return put_str(c, b, "[object Map]", pos);
    default: return jv_render(c, b, v, pos);
    }
}

int jv_join_item(jn_ctx *c, jn_buf *b, jval v, uint32_t pos) {
    if (v.t == JV_UNDEF || v.t == JV_NULL) return FR_OK; /* Array.join prints null as "" */
    return jv_js_str(c, b, v, pos);
}

static int json_string(jn_ctx *c, jn_buf *b, const char *s, size_t n, bool ascii, uint32_t pos) {
    int rc = jn_buf_putc(c, b, '"', pos);
    size_t run = 0; /* start of the pending run of bytes copied as they are */
    for (size_t i = 0; i < n && !rc;) {
        unsigned char ch = (unsigned char)s[i];
        char esc[16];
        size_t en = 0, k = 1;
        if (ch == '"' || ch == '\\')
            esc[0] = '\\', esc[1] = (char)ch, en = 2;
        else if (ch < 0x20) {
            char named = ch == '\b'   ? 'b'
                         : ch == '\f' ? 'f'
                         : ch == '\n' ? 'n'
                         : ch == '\r' ? 'r'
                         : ch == '\t' ? 't'
                                      : 0;
            if (named)
                esc[0] = '\\', esc[1] = named, en = 2;
            else
                en = (size_t)sprintf(esc, "\\u%04x", ch);
        } else if (ascii && ch >= 0x7F) {
            uint32_t cp;
            k = jn_utf8_decode(s + i, n - i, &cp);
            if (cp >= 0x10000) {
                uint32_t v = cp - 0x10000;
                en = (size_t)sprintf(esc, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            } else
                en = (size_t)sprintf(esc, "\\u%04x", cp);
        }
        if (en) {
            if (i > run) rc = jn_buf_put(c, b, s + run, i - run, pos);
            if (!rc) rc = jn_buf_put(c, b, esc, en, pos);
            i += k;
            run = i;
        } else
            i++;
    }
    if (!rc && n > run) rc = jn_buf_put(c, b, s + run, n - run, pos);
    if (!rc) rc = jn_buf_putc(c, b, '"', pos);
    return rc;
}

static int pad(jn_ctx *c, jn_buf *b, int indent, int depth, uint32_t pos) {
    int rc = jn_buf_putc(c, b, '\n', pos);
    for (int i = 0; i < indent * depth && !rc; i++) rc = jn_buf_putc(c, b, ' ', pos);
    return rc;
}

typedef struct {
    jn_str key;
    jval val;
} kv_pair;

static void sort_pairs(kv_pair *p, size_t n, kv_pair *tmp) {
    /* stable merge sort by UTF-16 order of the key */
    if (n < 2) return;
    size_t h = n / 2;
    sort_pairs(p, h, tmp);
    sort_pairs(p + h, n - h, tmp);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = jn_utf16_cmp(p[j].key.p, p[j].key.n, p[i].key.p, p[i].key.n) < 0 ? p[j++] : p[i++];
    while (i < h) tmp[k++] = p[i++];
    while (j < n) tmp[k++] = p[j++];
    memcpy(p, tmp, n * sizeof *p);
}

int jv_to_json(jn_ctx *c, jn_buf *b, jval v, const jn_json_opts *o, int depth, uint32_t pos) {
    char num[40];
    if (depth > 512)
        return jn_fail(c, FR_ERR_CAPACITY, pos,
                       "tojson: value nested deeper than 512 levels (a namespace holding itself?)");
    const char *isep = o->item_sep, *ksep = o->key_sep;
    size_t isn = o->item_sep_n, ksn = o->key_sep_n;
    if (!isep) isep = o->indent > 0 ? "," : ", ", isn = strlen(isep);
    if (!ksep) ksep = ": ", ksn = 2;
    int rc;
    switch ((jv_type)v.t) {
    case JV_UNDEF: return put_str(c, b, o->undef_as_null ? "null" : "undefined", pos);
    case JV_NULL: return put_str(c, b, "null", pos);
    case JV_BOOL: return put_str(c, b, v.u.b ? "true" : "false", pos);
    case JV_INT:
    case JV_FLOAT:
        if (!isfinite(v.u.d)) return put_str(c, b, "null", pos);
        jn_fmt_js_number(v.u.d, num);
        return put_str(c, b, num, pos);
    case JV_STR: return json_string(c, b, v.u.s.p, v.u.s.n, o->ensure_ascii, pos);
    case JV_ARRAY: {
        const jn_array *a = v.u.a;
        if (a->tuple) break;
        if ((rc = jn_steps(c, a->n, pos)) || (rc = jn_buf_putc(c, b, '[', pos))) return rc;
        for (size_t i = 0; i < a->n; i++) {
            if (i && (rc = jn_buf_put(c, b, isep, isn, pos))) return rc;
            if (o->indent > 0 && (rc = pad(c, b, o->indent, depth + 1, pos))) return rc;
            if ((rc = jv_to_json(c, b, a->v[i], o, depth + 1, pos))) return rc;
        }
        if (o->indent > 0 && a->n && (rc = pad(c, b, o->indent, depth, pos))) return rc;
        return jn_buf_putc(c, b, ']', pos);
    }
    case JV_OBJECT:
    case JV_NAMESPACE: {
        const jn_object *ob = v.u.o;
        kv_pair *pairs = NULL;
        if ((rc = jn_steps(c, ob->n, pos))) return rc;
        if (ob->n) {
            pairs = jn_alloc(&c->arena, 2 * ob->n * sizeof *pairs);
            if (!pairs) return jn_oom(c, pos);
            for (size_t i = 0; i < ob->n; i++) pairs[i].key = ob->keys[i], pairs[i].val = ob->vals[i];
            if (o->sort_keys) sort_pairs(pairs, ob->n, pairs + ob->n);
        }
        if ((rc = jn_buf_putc(c, b, '{', pos))) return rc;
        for (size_t i = 0; i < ob->n; i++) {
            if (i && (rc = jn_buf_put(c, b, isep, isn, pos))) return rc;
            if (o->indent > 0 && (rc = pad(c, b, o->indent, depth + 1, pos))) return rc;
            if ((rc = json_string(c, b, pairs[i].key.p, pairs[i].key.n, o->ensure_ascii, pos)) ||
                (rc = jn_buf_put(c, b, ksep, ksn, pos)) ||
                (rc = jv_to_json(c, b, pairs[i].val, o, depth + 1, pos)))
                return rc;
        }
        if (o->indent > 0 && ob->n && (rc = pad(c, b, o->indent, depth, pos))) return rc;
        return jn_buf_putc(c, b, '}', pos);
    }
    case JV_FUNC: break;
    }
    return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot convert to JSON: %s", jv_type_name(v));
}

/* ---- comparisons -------------------------------------------------------------------- */

/* The JavaScript type of a value's raw .value: number, string, boolean, undefined,
 * array, map or function. The reference's NullValue is built without a value, so none
 * and undefined share the raw value `undefined` (`none in [undefined]` is true there). */
static int raw_kind(jval v) {
    switch ((jv_type)v.t) {
    case JV_INT:
    case JV_FLOAT: return 1;
    case JV_STR: return 2;
    case JV_BOOL: return 3;
    case JV_NULL:
    case JV_UNDEF: return 5;
    case JV_ARRAY: return 6;
    case JV_OBJECT:
    case JV_NAMESPACE: return 7;
    case JV_FUNC: return 8;
    }
    return 0;
}

size_t jv_eq_cost(jval a, jval b) {
    return a.t == JV_STR && b.t == JV_STR && a.u.s.n == b.u.s.n ? a.u.s.n : 0;
}

bool jv_strict_equal(jval a, jval b) {
    int ka = raw_kind(a), kb = raw_kind(b);
    if (ka != kb) return false;
    switch (ka) {
    case 1: return a.u.d == b.u.d;
    case 2: return a.u.s.n == b.u.s.n && !memcmp(a.u.s.p, b.u.s.p, a.u.s.n);
    case 3: return a.u.b == b.u.b;
    case 5: return true;
    case 6: return a.u.a == b.u.a;
    case 7: return a.u.o == b.u.o;
    default: return a.u.f == b.u.f;
    }
}

/* StringToNumber: surrounding white space ignored, "" is 0, decimal or 0x/0o/0b. */
static double js_to_number(jn_str s) {
    s = jn_js_trim(s, true, true);
    if (s.n == 0) return 0;
    char buf[64];
    if (s.n >= sizeof buf) return NAN;
    memcpy(buf, s.p, s.n);
    buf[s.n] = 0;
    if (buf[0] == '0' && (buf[1] == 'x' || buf[1] == 'X' || buf[1] == 'o' || buf[1] == 'O' || buf[1] == 'b' ||
                          buf[1] == 'B')) {
        int base = (buf[1] | 32) == 'x' ? 16 : (buf[1] | 32) == 'o' ? 8 : 2;
        if (!buf[2]) return NAN;
        double r = 0;
        for (const char *p = buf + 2; *p; p++) {
            int dgt = isdigit((unsigned char)*p)   ? *p - '0'
                      : isalpha((unsigned char)*p) ? (*p | 32) - 'a' + 10
                                                   : 99;
            if (dgt >= base) return NAN;
            r = r * base + dgt;
        }
        return r;
    }
    const char *p = buf;
    if (*p == '+' || *p == '-') p++;
    if (!strcmp(p, "Infinity")) return buf[0] == '-' ? -INFINITY : INFINITY;
    /* decimal literal: digits [. digits] [e[+-]digits], at least one mantissa digit */
    int nd = 0;
    while (isdigit((unsigned char)*p)) p++, nd++;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) p++, nd++;
    }
    if (!nd) return NAN;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!isdigit((unsigned char)*p)) return NAN;
        while (isdigit((unsigned char)*p)) p++;
    }
    if (*p) return NAN;
    return strtod(buf, NULL);
}

/* JavaScript == between raw values (the reference compares .value with ==). Arrays
 * against primitives compare their String() form (which can fail, as it does there);
 * maps never equal primitives. */
int jv_loose_equal(jn_ctx *c, jval a, jval b, bool *eq, uint32_t pos) {
    int ka = raw_kind(a), kb = raw_kind(b);
    *eq = false;
    if (ka == kb) return *eq = jv_strict_equal(a, b), FR_OK;
    if (ka == 5 || kb == 5) return FR_OK;
    if (ka == 3) return jv_loose_equal(c, jv_int(a.u.b ? 1 : 0), b, eq, pos);
    if (kb == 3) return jv_loose_equal(c, a, jv_int(b.u.b ? 1 : 0), eq, pos);
    if (ka == 1 && kb == 2) return *eq = a.u.d == js_to_number((jn_str){b.u.s.p, b.u.s.n}), FR_OK;
    if (ka == 2 && kb == 1) return *eq = b.u.d == js_to_number((jn_str){a.u.s.p, a.u.s.n}), FR_OK;
    if ((ka == 6 && (kb == 1 || kb == 2)) || (kb == 6 && (ka == 1 || ka == 2))) {
        jval arr = ka == 6 ? a : b, prim = ka == 6 ? b : a;
        jn_buf buf = {0};
        int rc = jv_js_str(c, &buf, arr, pos);
        if (!rc) rc = jv_loose_equal(c, jv_str(buf.p ? buf.p : "", buf.n), prim, eq, pos);
        jn_buf_release(c, &buf);
        return rc;
    }
    return FR_OK;
}

int jv_compare(jn_ctx *c, jval a, jval b, bool case_sensitive, int *res, uint32_t pos) {
    if (a.t == JV_NULL && b.t == JV_NULL) return *res = 0, FR_OK;
    if (a.t == JV_UNDEF && b.t == JV_UNDEF) return *res = 0, FR_OK;
    if (a.t == JV_NULL || b.t == JV_NULL || a.t == JV_UNDEF || b.t == JV_UNDEF)
        return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot compare %s with %s", jv_type_name(a), jv_type_name(b));
    bool na = jv_is_num(a) || a.t == JV_BOOL, nb = jv_is_num(b) || b.t == JV_BOOL;
    if (na && nb) {
        double x = a.t == JV_BOOL ? a.u.b : a.u.d, y = b.t == JV_BOOL ? b.u.b : b.u.d;
        *res = x < y ? -1 : x > y ? 1 : 0;
        return FR_OK;
    }
    if (a.t != b.t || (a.t == JV_ARRAY && a.u.a->tuple != b.u.a->tuple))
        return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot compare different types: %s and %s", jv_type_name(a),
                       jv_type_name(b));
    if (a.t != JV_STR) return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot compare type: %s", jv_type_name(a));
    int rc = jn_work(c, a.u.s.n + b.u.s.n, pos);
    if (rc) return rc;
    if (case_sensitive) {
        *res = jn_utf16_cmp(a.u.s.p, a.u.s.n, b.u.s.p, b.u.s.n);
        return FR_OK;
    }
    jval la, lb;
    rc = jv_lower(c, (jn_str){a.u.s.p, a.u.s.n}, false, &la, pos);
    if (!rc) rc = jv_lower(c, (jn_str){b.u.s.p, b.u.s.n}, false, &lb, pos);
    if (rc) return rc;
    *res = jn_utf16_cmp(la.u.s.p, la.u.s.n, lb.u.s.p, lb.u.s.n);
    return FR_OK;
}
