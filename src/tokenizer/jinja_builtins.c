/* jinja_builtins.c - filters, tests, attribute access, string and dict methods, and the
 * global functions (namespace, range, raise_exception, strftime_now).
 *
 * The set is the reference's (@huggingface/jinja 0.5.11), which covers what the shipped
 * chat templates of DeepSeek, Kimi, GLM, Qwen and Llama use. Filters dispatch on the
 * operand's type the way the reference does, so an unsupported combination fails with
 * the reference's wording ("Unknown StringValue filter: x"). Deliberate differences:
 *   - strip/lstrip/rstrip honour a characters argument as Python does (the reference
 *     ignores it and strips white space; templates write .strip('\n') and mean Python);
 *   - tests accept arguments in parentheses (`is eq(3)`, `is in(xs)`), `|default`
 *     works without parentheses, and first/last of an empty list are undefined; the
 *     reference rejects or crashes on these, so no template it renders changes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jinja_impl.h"

enum {
    SM_UPPER,
    SM_LOWER,
    SM_STRIP,
    SM_TITLE,
    SM_CAPITALIZE,
    SM_RSTRIP,
    SM_LSTRIP,
    SM_STARTSWITH,
    SM_ENDSWITH,
    SM_SPLIT,
    SM_REPLACE,
    SM_COUNT_
};
static const char *const STR_METHODS[SM_COUNT_] = {"upper",      "lower",  "strip",  "title",
                                                   "capitalize", "rstrip", "lstrip", "startswith",
                                                   "endswith",   "split",  "replace"};
enum { OM_GET, OM_ITEMS, OM_KEYS, OM_VALUES, OM_DICTSORT, OM_COUNT_ };
static const char *const OBJ_METHODS[OM_COUNT_] = {"get", "items", "keys", "values", "dictsort"};

static bool str_is(jval v, const char *s) {
    return v.t == JV_STR && v.u.s.n == strlen(s) && !memcmp(v.u.s.p, s, v.u.s.n);
}
static bool name_is(const char *p, size_t n, const char *s) { return n == strlen(s) && !memcmp(p, s, n); }
static jn_str S(jval v) { return (jn_str){v.u.s.p, v.u.s.n}; }

static int find_method(const char *const *tbl, int n, jval name) {
    for (int i = 0; i < n; i++)
        if (str_is(name, tbl[i])) return i;
    return -1;
}

static int bound(jn_ctx *c, jn_fn_kind kind, int method, jval self, jval *out, uint32_t pos) {
    jn_func *f;
    int rc = jv_new_func(c, kind, out, &f, pos);
    if (!rc) f->method = method, f->self = self;
    return rc;
}

/* ---- attribute access -------------------------------------------------------------- */

/* s[i] in JavaScript indexes UTF-16 units; half of a surrogate pair prints as U+FFFD. */
static int str_at(jn_ctx *c, jval s, double idx, jval *out, uint32_t pos) {
    int rc = jn_work(c, s.u.s.n, pos);
    if (rc) return rc;
    double len = (double)jn_utf16_len(s.u.s.p, s.u.s.n);
    if (idx < 0) idx += len;
    if (!(idx >= 0 && idx < len)) {
        *out = jv_undef();
        return FR_OK;
    }
    size_t unit = 0;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp;
        size_t k = jn_utf8_decode(s.u.s.p + i, s.u.s.n - i, &cp);
        size_t w = cp >= 0x10000 ? 2 : 1;
        if ((double)(unit + w) > idx) {
            if (w == 2) return jv_new_str(c, "\xEF\xBF\xBD", 3, out, pos);
            *out = jv_str(s.u.s.p + i, k);
            return FR_OK;
        }
        unit += w;
        i += k;
    }
    *out = jv_undef();
    return FR_OK;
}

int jn_member(jn_ctx *c, jval obj, jval prop, jval *out, uint32_t pos) {
    *out = jv_undef();
    if (obj.t == JV_OBJECT || obj.t == JV_NAMESPACE) {
        if (prop.t != JV_STR)
            return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot access property with non-string: got %s",
                           jv_type_name(prop));
        int rc = jn_work(c, prop.u.s.n * (obj.u.o->n + 1), pos);
        if (rc) return rc;
        jval *v = jv_object_get(obj.u.o, prop.u.s.p, prop.u.s.n);
        if (v)
            *out = *v;
        else if (obj.t == JV_OBJECT) {
            int m = find_method(OBJ_METHODS, OM_COUNT_, prop);
            if (m >= 0) return bound(c, FN_OBJ_METHOD, m, obj, out, pos);
        }
        return FR_OK;
    }
    if (obj.t == JV_ARRAY || obj.t == JV_STR) {
        if (prop.t == JV_INT) {
            if (obj.t == JV_STR) return str_at(c, obj, prop.u.d, out, pos);
            double i = prop.u.d < 0 ? prop.u.d + (double)obj.u.a->n : prop.u.d;
            if (i >= 0 && i < (double)obj.u.a->n) *out = obj.u.a->v[(size_t)i];
            return FR_OK;
        }
        if (prop.t != JV_STR)
            return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot access property with non-string/non-number: got %s",
                           jv_type_name(prop));
        if (str_is(prop, "length")) {
            int rc = obj.t == JV_STR ? jn_work(c, obj.u.s.n, pos) : FR_OK;
            if (rc) return rc;
            *out = jv_int(obj.t == JV_STR ? (double)jn_utf16_len(obj.u.s.p, obj.u.s.n) : (double)obj.u.a->n);
            return FR_OK;
        }
        if (obj.t == JV_STR) {
            int m = find_method(STR_METHODS, SM_COUNT_, prop);
            if (m >= 0) return bound(c, FN_STR_METHOD, m, obj, out, pos);
        }
        return FR_OK;
    }
    if (prop.t != JV_STR)
        return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot access property with non-string: got %s",
                       jv_type_name(prop));
    return FR_OK; /* no attributes on numbers, booleans, none, undefined */
}

/* ---- string methods -------------------------------------------------------------------- */

/* Python's strip(chars): chars is a set of characters (code points). */
static bool in_charset(jn_str set, const char *p, size_t k) {
    for (size_t i = 0; i < set.n;) {
        uint32_t cp;
        size_t w = jn_utf8_decode(set.p + i, set.n - i, &cp);
        if (w == k && !memcmp(set.p + i, p, k)) return true;
        i += w;
    }
    return false;
}

static jn_str strip_chars(jn_str s, jn_str set, bool left, bool right) {
    while (left && s.n) {
        uint32_t cp;
        size_t k = jn_utf8_decode(s.p, s.n, &cp);
        if (!in_charset(set, s.p, k)) break;
        s.p += k, s.n -= k;
    }
    while (right && s.n) {
        size_t st = s.n - 1;
        while (st > 0 && ((unsigned char)s.p[st] & 0xC0) == 0x80 && s.n - st < 4) st--;
        if (!in_charset(set, s.p + st, s.n - st)) break;
        s.n = st;
    }
    return s;
}

static bool starts_with(jn_str s, jval p, bool end) {
    if (p.u.s.n > s.n) return false;
    return !memcmp(end ? s.p + s.n - p.u.s.n : s.p, p.u.s.p, p.u.s.n);
}

static int affix(jn_ctx *c, jn_str s, const jval *args, size_t n, bool end, jval *out, uint32_t pos) {
    const char *name = end ? "endswith" : "startswith";
    int rc = n && args[0].t == JV_STR     ? jn_work(c, args[0].u.s.n, pos)
             : n && args[0].t == JV_ARRAY ? jn_steps(c, args[0].u.a->n, pos)
                                          : FR_OK;
    if (rc) return rc;
    if (n == 0) return jn_fail(c, FR_ERR_FORMAT, pos, "%s() requires at least one argument", name);
    if (args[0].t == JV_STR) {
        *out = jv_bool(starts_with(s, args[0], end));
        return FR_OK;
    }
    if (args[0].t == JV_ARRAY) {
        for (size_t i = 0; i < args[0].u.a->n; i++) {
            jval it = args[0].u.a->v[i];
            if (it.t != JV_STR)
                return jn_fail(c, FR_ERR_FORMAT, pos, "%s() tuple elements must be strings", name);
            if (starts_with(s, it, end)) return *out = jv_bool(true), FR_OK;
        }
        *out = jv_bool(false);
        return FR_OK;
    }
    return jn_fail(c, FR_ERR_FORMAT, pos, "%s() argument must be a string or tuple of strings", name);
}

static int push_item(jn_ctx *c, jval **v, size_t *n, size_t *cap, jval x, uint32_t pos) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        jval *nv = jn_alloc(&c->arena, nc * sizeof *nv);
        if (!nv) return jn_oom(c, pos);
        if (*n) memcpy(nv, *v, *n * sizeof *nv);
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = x;
    return jn_steps(c, 1, pos);
}

static int make_array(jn_ctx *c, jval *items, size_t n, jval *out, uint32_t pos) {
    int rc = jv_new_array(c, 0, out, pos);
    if (!rc) out->u.a->v = items, out->u.a->n = n;
    return rc;
}

/* Python str.split: no separator splits on runs of white space (JavaScript's \s). */
static int str_split(jn_ctx *c, jn_str s, const jval *args, size_t n, jval *out, uint32_t pos) {
    jval sep = n > 0 ? args[0] : jv_null();
    jval maxv = n > 1 ? args[1] : jv_int(-1);
    if (sep.t != JV_STR && sep.t != JV_NULL)
        return jn_fail(c, FR_ERR_FORMAT, pos, "sep argument must be a string or null");
    if (maxv.t != JV_INT) return jn_fail(c, FR_ERR_FORMAT, pos, "maxsplit argument must be a number");
    double max = maxv.u.d;
    jval *items = NULL;
    size_t k = 0, cap = 0;
    int rc = jn_work(c, s.n, pos);
    if (rc) return rc;
    if (sep.t == JV_NULL) {
        jn_str t = jn_js_trim(s, true, false);
        size_t i = 0;
        while (i < t.n && !rc) {
            size_t st = i, w;
            while (i < t.n && !jn_js_ws_len(t.p + i, t.n - i)) {
                uint32_t cp;
                i += jn_utf8_decode(t.p + i, t.n - i, &cp);
            }
            if (max != -1 && (double)k >= max) { /* the rest, trailing white space included */
                rc = push_item(c, &items, &k, &cap, jv_str(t.p + st, t.n - st), pos);
                break;
            }
            rc = push_item(c, &items, &k, &cap, jv_str(t.p + st, i - st), pos);
            while (i < t.n && (w = jn_js_ws_len(t.p + i, t.n - i))) i += w;
        }
    } else {
        if (sep.u.s.n == 0) return jn_fail(c, FR_ERR_FORMAT, pos, "empty separator");
        size_t i = 0;
        for (;;) {
            const char *hit = s.n - i >= sep.u.s.n ? memmem(s.p + i, s.n - i, sep.u.s.p, sep.u.s.n) : NULL;
            if (!hit || (max != -1 && (double)k >= max)) {
                rc = push_item(c, &items, &k, &cap, jv_str(s.p + i, s.n - i), pos);
                break;
            }
            if ((rc = push_item(c, &items, &k, &cap, jv_str(s.p + i, (size_t)(hit - (s.p + i))), pos))) break;
            i = (size_t)(hit - s.p) + sep.u.s.n;
        }
    }
    return rc ? rc : make_array(c, items, k, out, pos);
}

/* replace(old, new[, count]); an empty `old` inserts between every code point. */
static int str_replace(jn_ctx *c, jn_str s, const jval *args, size_t n, jn_object *kw, jval *out,
                       uint32_t pos) {
    if (n < 2) return jn_fail(c, FR_ERR_FORMAT, pos, "replace() requires at least two arguments");
    if (args[0].t != JV_STR || args[1].t != JV_STR)
        return jn_fail(c, FR_ERR_FORMAT, pos, "replace() arguments must be strings");
    jval cnt = n > 2 ? args[2] : jv_null();
    if (n <= 2 && kw) {
        jval *k = jv_object_get(kw, "count", 5);
        if (k) cnt = *k;
    }
    if (cnt.t != JV_INT && cnt.t != JV_NULL)
        return jn_fail(c, FR_ERR_FORMAT, pos, "replace() count argument must be a number or null");
    double left = cnt.t == JV_INT && cnt.u.d >= 0 ? cnt.u.d : INFINITY;
    if (cnt.t == JV_INT && cnt.u.d == 0) return *out = jv_str(s.p, s.n), FR_OK;
    jn_str old = S(args[0]), rep = S(args[1]);
    jn_buf b = {0};
    int rc = jn_work(c, s.n, pos);
    if (rc) return rc;
    size_t i = 0;
    if (old.n == 0) {
        for (;;) {
            if (left > 0) rc = jn_buf_put(c, &b, rep.p, rep.n, pos), left--;
            if (rc || i >= s.n) break;
            uint32_t cp;
            size_t k = jn_utf8_decode(s.p + i, s.n - i, &cp);
            rc = jn_buf_put(c, &b, s.p + i, k, pos);
            i += k;
            if (!rc) rc = jn_steps(c, 1, pos);
        }
    } else {
        while (!rc) {
            const char *hit = left > 0 && s.n - i >= old.n ? memmem(s.p + i, s.n - i, old.p, old.n) : NULL;
            if (!hit) {
                rc = jn_buf_put(c, &b, s.p + i, s.n - i, pos);
                break;
            }
            if (!(rc = jn_buf_put(c, &b, s.p + i, (size_t)(hit - (s.p + i)), pos)))
                rc = jn_buf_put(c, &b, rep.p, rep.n, pos);
            i = (size_t)(hit - s.p) + old.n;
            left--;
        }
    }
    if (rc) {
        jn_buf_release(c, &b);
        return rc;
    }
    return jn_buf_to_value(c, &b, out, pos);
}

/* title(): upper-case an ASCII letter that starts a word (\b\w); the rest is kept. */
static int str_title(jn_ctx *c, jn_str s, jval *out, uint32_t pos) {
    int rc = jn_work(c, s.n, pos);
    if (rc) return rc;
    char *p = jn_alloc(&c->arena, s.n + 1);
    if (!p) return jn_oom(c, pos);
    for (size_t i = 0; i < s.n; i++) {
        char ch = s.p[i], prev = i ? s.p[i - 1] : ' ';
        bool w =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_';
        bool pw = (prev >= 'a' && prev <= 'z') || (prev >= 'A' && prev <= 'Z') ||
                  (prev >= '0' && prev <= '9') || prev == '_';
        p[i] = w && !pw && ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : ch;
    }
    *out = jv_str(p, s.n);
    return FR_OK;
}

/* capitalize(): the first character upper-cased, the rest as it was (the reference's
 * behaviour, not Python's which lower-cases the rest). */
static int str_capitalize(jn_ctx *c, jn_str s, jval *out, uint32_t pos) {
    if (!s.n) return *out = jv_str(s.p, 0), FR_OK;
    uint32_t cp;
    size_t k = jn_utf8_decode(s.p, s.n, &cp);
    if (cp >= 0x10000) return *out = jv_str(s.p, s.n), FR_OK;
    jval first;
    int rc = jv_lower(c, (jn_str){s.p, k}, true, &first, pos);
    if (rc) return rc;
    jn_buf b = {0};
    if ((rc = jn_buf_put(c, &b, first.u.s.p, first.u.s.n, pos)) ||
        (rc = jn_buf_put(c, &b, s.p + k, s.n - k, pos))) {
        jn_buf_release(c, &b);
        return rc;
    }
    return jn_buf_to_value(c, &b, out, pos);
}

static int str_method(jn_ctx *c, int m, jn_str s, const jval *args, size_t n, jn_object *kw, jval *out,
                      uint32_t pos) {
    switch (m) {
    case SM_UPPER: return jv_lower(c, s, true, out, pos);
    case SM_LOWER: return jv_lower(c, s, false, out, pos);
    case SM_TITLE: return str_title(c, s, out, pos);
    case SM_CAPITALIZE: return str_capitalize(c, s, out, pos);
    case SM_STRIP:
    case SM_LSTRIP:
    case SM_RSTRIP: {
        bool l = m != SM_RSTRIP, r = m != SM_LSTRIP;
        jn_str t = n > 0 && args[0].t == JV_STR ? strip_chars(s, S(args[0]), l, r) : jn_js_trim(s, l, r);
        /* each character looked at was compared with the whole set */
        int rc = n > 0 && args[0].t == JV_STR ? jn_work(c, (s.n - t.n + 8) * (args[0].u.s.n + 1), pos)
                                              : jn_work(c, s.n - t.n, pos);
        *out = jv_str(t.p, t.n);
        return rc;
    }
    case SM_STARTSWITH: return affix(c, s, args, n, false, out, pos);
    case SM_ENDSWITH: return affix(c, s, args, n, true, out, pos);
    case SM_SPLIT: return str_split(c, s, args, n, out, pos);
    case SM_REPLACE: return str_replace(c, s, args, n, kw, out, pos);
    }
    return jn_fail(c, FR_ERR_FORMAT, pos, "internal: unknown string method");
}

/* ---- dict methods ------------------------------------------------------------------------- */

static int obj_items(jn_ctx *c, const jn_object *o, int which, jval *out, uint32_t pos) {
    int rc = jn_steps(c, o->n, pos);
    if (rc || (rc = jv_new_array(c, o->n, out, pos))) return rc;
    for (size_t i = 0; i < o->n; i++) {
        jval k = jv_str(o->keys[i].p, o->keys[i].n);
        if (which == OM_KEYS)
            out->u.a->v[i] = k;
        else if (which == OM_VALUES)
            out->u.a->v[i] = o->vals[i];
        else {
            jval pair;
            if ((rc = jv_new_array(c, 2, &pair, pos))) return rc;
            pair.u.a->v[0] = k;
            pair.u.a->v[1] = o->vals[i];
            out->u.a->v[i] = pair;
        }
    }
    return FR_OK;
}

/* Stable merge sort with a comparator that may fail (mixed types). */
typedef struct {
    jn_ctx *c;
    bool case_sensitive, reverse;
    int key; /* -1: the item itself; 0/1: element of a [k, v] pair */
    const char *attr;
    size_t attr_n;
    uint32_t pos;
    int rc;
} sorter;

static jval attr_path(jval item, const char *path, size_t n);

static jval sort_key(const sorter *s, jval v) {
    if (s->key >= 0) return v.u.a->v[s->key];
    if (s->attr) return attr_path(v, s->attr, s->attr_n);
    return v;
}

static int cmp(sorter *s, jval a, jval b) {
    int r = 0;
    if (s->rc) return 0;
    s->rc = jn_steps(s->c, 1, s->pos);
    if (!s->rc) s->rc = jv_compare(s->c, sort_key(s, a), sort_key(s, b), s->case_sensitive, &r, s->pos);
    return s->reverse ? -r : r;
}

static void msort(sorter *s, jval *v, size_t n, jval *tmp) {
    if (n < 2 || s->rc) return;
    size_t h = n / 2;
    msort(s, v, h, tmp);
    msort(s, v + h, n - h, tmp);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = cmp(s, v[j], v[i]) < 0 ? v[j++] : v[i++];
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

static int sorted_copy(jn_ctx *c, const jn_array *a, sorter *s, jval *out) {
    int rc = jv_new_array(c, a->n, out, s->pos);
    jval *tmp = a->n ? jn_alloc(&c->arena, a->n * sizeof *tmp) : NULL;
    if (rc) return rc;
    if (a->n && !tmp) return jn_oom(c, s->pos);
    if (a->n) memcpy(out->u.a->v, a->v, a->n * sizeof *tmp);
    msort(s, out->u.a->v, a->n, tmp);
    return s->rc;
}

/* The argument at position i, else keyword `name`, else dflt. */
static jval arg(const jval *args, size_t n, jn_object *kw, size_t i, const char *name, jval dflt) {
    if (i < n) return args[i];
    jval *v = kw && name ? jv_object_get(kw, name, strlen(name)) : NULL;
    return v ? *v : dflt;
}

static int obj_method(jn_ctx *c, int m, jval self, const jval *args, size_t n, jn_object *kw, jval *out,
                      uint32_t pos) {
    const jn_object *o = self.u.o;
    if (m == OM_GET) {
        jval key = n > 0 ? args[0] : jv_undef();
        if (key.t != JV_STR)
            return jn_fail(c, FR_ERR_FORMAT, pos, "Object key must be a string: got %s", jv_type_name(key));
        jval *v = jv_object_get(o, key.u.s.p, key.u.s.n);
        *out = v ? *v : n > 1 ? args[1] : kw && kw->n ? (jval){.t = JV_OBJECT, .u.o = kw} : jv_null();
        return FR_OK;
    }
    if (m == OM_DICTSORT) {
        jval cs = arg(args, n, kw, 0, "case_sensitive", jv_bool(false));
        jval by = arg(args, n, kw, 1, "by", jv_str("key", 3));
        jval rev = arg(args, n, kw, 2, "reverse", jv_bool(false));
        if (cs.t != JV_BOOL) return jn_fail(c, FR_ERR_FORMAT, pos, "case_sensitive must be a boolean");
        if (by.t != JV_STR) return jn_fail(c, FR_ERR_FORMAT, pos, "by must be a string");
        if (!str_is(by, "key") && !str_is(by, "value"))
            return jn_fail(c, FR_ERR_FORMAT, pos, "by must be either 'key' or 'value'");
        if (rev.t != JV_BOOL) return jn_fail(c, FR_ERR_FORMAT, pos, "reverse must be a boolean");
        jval items;
        int rc = obj_items(c, o, OM_ITEMS, &items, pos);
        if (rc) return rc;
        sorter s = {c, cs.u.b, rev.u.b, str_is(by, "key") ? 0 : 1, NULL, 0, pos, FR_OK};
        return sorted_copy(c, items.u.a, &s, out);
    }
    return obj_items(c, o, m, out, pos);
}

/* ---- globals --------------------------------------------------------------------------------- */

static int fn_range(jn_ctx *c, const jval *args, size_t n, jval *out, uint32_t pos) {
    for (size_t i = 0; i < n && i < 3; i++)
        if (!jv_is_num(args[i]))
            return jn_fail(c, FR_ERR_FORMAT, pos, "range() arguments must be numbers, got %s",
                           jv_type_name(args[i]));
    if (n == 0 || n > 3) return jn_fail(c, FR_ERR_FORMAT, pos, "range() takes 1 to 3 arguments");
    double start = n > 1 ? args[0].u.d : 0, stop = n > 1 ? args[1].u.d : args[0].u.d,
           step = n > 2 ? args[2].u.d : 1;
    if (step == 0) return jn_fail(c, FR_ERR_FORMAT, pos, "range() step must not be zero");
    double cnt = step > 0 ? (stop > start ? ceil((stop - start) / step) : 0)
                          : (start > stop ? ceil((start - stop) / -step) : 0);
    if (!(cnt <= (double)c->lim.max_steps))
        return jn_fail(c, FR_ERR_CAPACITY, pos,
                       "range() of %.0f items is more than the %llu evaluation steps allowed", cnt,
                       (unsigned long long)c->lim.max_steps);
    size_t k = (size_t)cnt;
    int rc = jn_steps(c, k, pos);
    if (rc || (rc = jv_new_array(c, k, out, pos))) return rc;
    for (size_t i = 0; i < k; i++) {
        double v = start + (double)i * step;
        out->u.a->v[i] = v == trunc(v) ? jv_int(v) : jv_float(v);
    }
    return FR_OK;
}

static int fn_namespace(jn_ctx *c, const jval *args, size_t n, jn_object *kw, jval *out, uint32_t pos) {
    jn_object *o;
    int rc = jv_new_object(c, 4, &o, pos);
    if (rc) return rc;
    if (n > 1) return jn_fail(c, FR_ERR_FORMAT, pos, "namespace expected at most 1 argument, got %zu", n);
    if (n == 1) {
        jval src = args[0];
        if (src.t == JV_OBJECT) {
            for (size_t i = 0; i < src.u.o->n && !rc; i++)
                rc = jv_object_set(c, o, src.u.o->keys[i].p, src.u.o->keys[i].n, src.u.o->vals[i], pos);
        } else if (src.t == JV_ARRAY) {
            for (size_t i = 0; i < src.u.a->n && !rc; i++) {
                jval pair = src.u.a->v[i];
                if (pair.t != JV_ARRAY || pair.u.a->n != 2)
                    return jn_fail(c, FR_ERR_FORMAT, pos,
                                   "namespace expected an object or an iterable of [key, value] pairs");
                if (pair.u.a->v[0].t != JV_STR)
                    return jn_fail(c, FR_ERR_FORMAT, pos, "namespace keys must be strings");
                rc = jv_object_set(c, o, pair.u.a->v[0].u.s.p, pair.u.a->v[0].u.s.n, pair.u.a->v[1], pos);
            }
        } else
            return jn_fail(c, FR_ERR_FORMAT, pos, "'%s' object is not iterable", jv_type_name(src));
    }
    for (size_t i = 0; kw && i < kw->n && !rc; i++)
        rc = jv_object_set(c, o, kw->keys[i].p, kw->keys[i].n, kw->vals[i], pos);
    if (rc) return rc;
    out->t = JV_NAMESPACE;
    out->u.o = o;
    return FR_OK;
}

static int fn_strftime(jn_ctx *c, const jval *args, size_t n, jval *out, uint32_t pos) {
    static const char *const months[12] = {"January",   "February", "March",    "April",
                                           "May",       "June",     "July",     "August",
                                           "September", "October",  "November", "December"};
    if (n < 1 || args[0].t != JV_STR)
        return jn_fail(c, FR_ERR_FORMAT, pos, "strftime_now() takes a format string");
    int rc = jn_work(c, args[0].u.s.n * 8, pos);
    if (rc) return rc;
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    jn_buf b = {0};
    jn_str f = S(args[0]);
    for (size_t i = 0; i < f.n && !rc; i++) {
        char tmp[32];
        if (f.p[i] != '%' || i + 1 >= f.n || !strchr("YmdbBHM%", f.p[i + 1])) {
            rc = jn_buf_putc(c, &b, f.p[i], pos);
            continue;
        }
        switch (f.p[++i]) {
        case 'Y': snprintf(tmp, sizeof tmp, "%d", tm.tm_year + 1900); break;
        case 'm': snprintf(tmp, sizeof tmp, "%02d", tm.tm_mon + 1); break;
        case 'd': snprintf(tmp, sizeof tmp, "%02d", tm.tm_mday); break;
        case 'b': snprintf(tmp, sizeof tmp, "%.3s", months[tm.tm_mon]); break;
        case 'B': snprintf(tmp, sizeof tmp, "%s", months[tm.tm_mon]); break;
        case 'H': snprintf(tmp, sizeof tmp, "%02d", tm.tm_hour); break;
        case 'M': snprintf(tmp, sizeof tmp, "%02d", tm.tm_min); break;
        default: snprintf(tmp, sizeof tmp, "%%"); break;
        }
        rc = jn_buf_put(c, &b, tmp, strlen(tmp), pos);
    }
    if (rc) {
        jn_buf_release(c, &b);
        return rc;
    }
    return jn_buf_to_value(c, &b, out, pos);
}

int jn_call_builtin(jn_ctx *c, jn_func *f, jval *args, size_t nargs, jn_object *kw, jval *out, uint32_t pos) {
    switch (f->kind) {
    case FN_NAMESPACE: return fn_namespace(c, args, nargs, kw, out, pos);
    case FN_RANGE: return fn_range(c, args, nargs, out, pos);
    case FN_STRFTIME: return fn_strftime(c, args, nargs, out, pos);
    case FN_RAISE: {
        jn_buf b = {0};
        if (nargs) jv_join_item(c, &b, args[0], pos);
        int rc = jn_fail(c, FR_ERR_FORMAT, pos, "raise_exception: %.*s", (int)(b.n > 300 ? 300 : b.n),
                         b.p ? b.p : "");
        jn_buf_release(c, &b);
        return rc;
    }
    case FN_STR_METHOD: return str_method(c, f->method, S(f->self), args, nargs, kw, out, pos);
    case FN_OBJ_METHOD: return obj_method(c, f->method, f->self, args, nargs, kw, out, pos);
    default: return jn_fail(c, FR_ERR_FORMAT, pos, "internal: not a builtin");
    }
}

/* ---- tests ------------------------------------------------------------------------------------- */

bool jn_test_by_name(const char *name, size_t n, jval a, jval b, bool *known, int *err_kind) {
    *known = true;
    *err_kind = 0;
    if (name_is(name, n, "defined")) return a.t != JV_UNDEF;
    if (name_is(name, n, "undefined")) return a.t == JV_UNDEF;
    if (name_is(name, n, "none")) return a.t == JV_NULL;
    if (name_is(name, n, "string")) return a.t == JV_STR;
    if (name_is(name, n, "number")) return jv_is_num(a);
    if (name_is(name, n, "integer")) return a.t == JV_INT;
    if (name_is(name, n, "boolean")) return a.t == JV_BOOL;
    if (name_is(name, n, "true")) return a.t == JV_BOOL && a.u.b;
    if (name_is(name, n, "false")) return a.t == JV_BOOL && !a.u.b;
    if (name_is(name, n, "callable")) return a.t == JV_FUNC;
    if (name_is(name, n, "mapping")) return a.t == JV_OBJECT;
    if (name_is(name, n, "iterable")) return (a.t == JV_ARRAY && !a.u.a->tuple) || a.t == JV_STR;
    if (name_is(name, n, "sequence")) return a.t == JV_ARRAY || a.t == JV_OBJECT || a.t == JV_STR;
    if (name_is(name, n, "odd") || name_is(name, n, "even")) {
        if (a.t != JV_INT) return *err_kind = 1, false;
        bool odd = fmod(a.u.d, 2) != 0;
        return name_is(name, n, "odd") ? odd : !odd;
    }
    if (name_is(name, n, "equalto") || name_is(name, n, "eq")) return jv_strict_equal(a, b);
    if (name_is(name, n, "ne")) return !jv_strict_equal(a, b);
    *known = false;
    return false;
}

/* lower/upper tests and `is in(...)` need the context (case mapping, steps). */
int jn_apply_test(jn_ctx *c, const jn_node *test, jval operand, jn_env *env, bool *out) {
    jn_args a = {0};
    int rc = test->args.n ? jn_eval_args(c, &test->args, env, &a) : FR_OK;
    if (rc) return rc;
    jval b = a.npos ? a.pos[0] : jv_undef();
    if (name_is(test->str, test->len, "lower") || name_is(test->str, test->len, "upper")) {
        *out = false;
        if (operand.t != JV_STR) return FR_OK;
        jval conv;
        if ((rc = jv_lower(c, S(operand), name_is(test->str, test->len, "upper"), &conv, test->pos)))
            return rc;
        *out = conv.u.s.n == operand.u.s.n && !memcmp(conv.u.s.p, operand.u.s.p, conv.u.s.n);
        return FR_OK;
    }
    if (name_is(test->str, test->len, "in")) {
        if (b.t == JV_ARRAY) {
            *out = false;
            size_t cost = 0;
            for (size_t i = 0; i < b.u.a->n && !*out; i++) {
                cost += jv_eq_cost(b.u.a->v[i], operand);
                *out = jv_strict_equal(b.u.a->v[i], operand);
            }
            if ((rc = jn_steps(c, b.u.a->n, test->pos)) || (rc = jn_work(c, cost, test->pos))) return rc;
        } else if (b.t == JV_STR && operand.t == JV_STR && (rc = jn_work(c, b.u.s.n, test->pos))) {
            return rc;
        } else if (b.t == JV_STR && operand.t == JV_STR)
            *out = operand.u.s.n <= b.u.s.n &&
                   (operand.u.s.n == 0 || memmem(b.u.s.p, b.u.s.n, operand.u.s.p, operand.u.s.n));
        else if (b.t == JV_OBJECT && operand.t == JV_STR)
            *out = jv_object_get(b.u.o, operand.u.s.p, operand.u.s.n) != NULL;
        else
            return jn_fail(c, FR_ERR_FORMAT, test->pos, "test 'in' needs a list, string or mapping argument");
        return FR_OK;
    }
    bool known;
    int ek;
    if ((rc = jn_work(c, jv_eq_cost(operand, b), test->pos))) return rc;
    *out = jn_test_by_name(test->str, test->len, operand, b, &known, &ek);
    if (!known) return jn_fail(c, FR_ERR_FORMAT, test->pos, "Unknown test: %.*s", (int)test->len, test->str);
    if (ek)
        return jn_fail(c, FR_ERR_FORMAT, test->pos, "cannot %.*s on %s", (int)test->len, test->str,
                       jv_type_name(operand));
    return FR_OK;
}

/* ---- filters ------------------------------------------------------------------------------------ */

/* "a.b.0": keys of mappings, indexes of lists; anything else is undefined. */
static jval attr_path(jval item, const char *path, size_t n) {
    jval v = item;
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < n && path[j] != '.') j++;
        if (v.t == JV_OBJECT || v.t == JV_NAMESPACE) {
            jval *x = jv_object_get(v.u.o, path + i, j - i);
            v = x ? *x : jv_undef();
        } else if (v.t == JV_ARRAY) {
            char buf[24];
            size_t len = j - i < sizeof buf - 1 ? j - i : sizeof buf - 1;
            memcpy(buf, path + i, len);
            buf[len] = 0;
            char *end;
            long idx = strtol(buf, &end, 10);
            if (end == buf || idx < 0 || (size_t)idx >= v.u.a->n) return jv_undef();
            v = v.u.a->v[idx];
        } else
            return jv_undef();
        if (j >= n) return v;
        i = j + 1;
    }
}

static int to_string_value(jn_ctx *c, jval v, jval *out, uint32_t pos) {
    jn_buf b = {0};
    int rc = jv_render(c, &b, v, pos);
    if (rc) {
        jn_buf_release(c, &b);
        return rc;
    }
    return jn_buf_to_value(c, &b, out, pos);
}

static int join(jn_ctx *c, jval operand, jval sep, jval *out, uint32_t pos) {
    jn_buf b = {0};
    int rc = FR_OK;
    if (operand.t == JV_STR) { /* Array.from(string): code points */
        for (size_t i = 0; i < operand.u.s.n && !rc;) {
            uint32_t cp;
            size_t k = jn_utf8_decode(operand.u.s.p + i, operand.u.s.n - i, &cp);
            if (i) rc = jn_buf_put(c, &b, sep.u.s.p, sep.u.s.n, pos);
            if (!rc) rc = jn_buf_put(c, &b, operand.u.s.p + i, k, pos);
            i += k;
        }
    } else {
        rc = jn_steps(c, operand.u.a->n, pos);
        for (size_t i = 0; i < operand.u.a->n && !rc; i++) {
            if (i) rc = jn_buf_put(c, &b, sep.u.s.p, sep.u.s.n, pos);
            if (!rc) rc = jv_join_item(c, &b, operand.u.a->v[i], pos);
        }
    }
    if (rc) {
        jn_buf_release(c, &b);
        return rc;
    }
    return jn_buf_to_value(c, &b, out, pos);
}

static int json_filter(jn_ctx *c, jval operand, const jn_args *a, jval *out, uint32_t pos) {
    jn_json_opts o = {.indent = -1, .undef_as_null = true};
    jn_object *kw = a ? a->kw : NULL;
    jval ind = arg(NULL, 0, kw, 0, "indent", jv_null()),
         asc = arg(NULL, 0, kw, 0, "ensure_ascii", jv_bool(false));
    jval sk = arg(NULL, 0, kw, 0, "sort_keys", jv_bool(false)),
         sep = arg(NULL, 0, kw, 0, "separators", jv_null());
    if (ind.t != JV_INT && ind.t != JV_NULL)
        return jn_fail(c, FR_ERR_FORMAT, pos, "If set, indent must be a number");
    if (asc.t != JV_BOOL) return jn_fail(c, FR_ERR_FORMAT, pos, "If set, ensure_ascii must be a boolean");
    if (sk.t != JV_BOOL) return jn_fail(c, FR_ERR_FORMAT, pos, "If set, sort_keys must be a boolean");
    if (ind.t == JV_INT) {
        if (ind.u.d < 0 || ind.u.d > 64)
            return jn_fail(c, FR_ERR_FORMAT, pos, "tojson indent must be between 0 and 64");
        o.indent = (int)ind.u.d;
    }
    if (sep.t == JV_ARRAY) {
        if (sep.u.a->n != 2 || sep.u.a->v[0].t != JV_STR || sep.u.a->v[1].t != JV_STR)
            return jn_fail(c, FR_ERR_FORMAT, pos, "separators must be a tuple of two strings");
        o.item_sep = sep.u.a->v[0].u.s.p, o.item_sep_n = sep.u.a->v[0].u.s.n;
        o.key_sep = sep.u.a->v[1].u.s.p, o.key_sep_n = sep.u.a->v[1].u.s.n;
    } else if (sep.t != JV_NULL)
        return jn_fail(c, FR_ERR_FORMAT, pos, "If set, separators must be a tuple of two strings");
    o.ensure_ascii = asc.u.b;
    o.sort_keys = sk.u.b;
    jn_buf b = {0};
    int rc = jv_to_json(c, &b, operand, &o, 0, pos);
    if (rc) {
        jn_buf_release(c, &b);
        return rc;
    }
    return jn_buf_to_value(c, &b, out, pos);
}

/* parseInt(s, 10) / parseFloat(s): leading white space, then the longest number prefix. */
static bool js_parse_number(jn_str s, bool integer, double *out) {
    s = jn_js_trim(s, true, false);
    char buf[128];
    size_t n = s.n < sizeof buf - 1 ? s.n : sizeof buf - 1, i = 0;
    memcpy(buf, s.p, n);
    buf[n] = 0;
    if (buf[i] == '+' || buf[i] == '-') i++;
    if (!integer && !strncmp(buf + i, "Infinity", 8))
        return *out = buf[0] == '-' ? -INFINITY : INFINITY, true;
    size_t st = i;
    while (buf[i] >= '0' && buf[i] <= '9') i++;
    size_t nd = i - st;
    if (!integer) {
        if (buf[i] == '.') {
            i++;
            while (buf[i] >= '0' && buf[i] <= '9') i++, nd++;
        }
        if (nd && (buf[i] == 'e' || buf[i] == 'E')) {
            size_t j = i + 1;
            if (buf[j] == '+' || buf[j] == '-') j++;
            if (buf[j] >= '0' && buf[j] <= '9') {
                while (buf[j] >= '0' && buf[j] <= '9') j++;
                i = j;
            }
        }
    }
    if (!nd) return false;
    buf[i] = 0;
    *out = strtod(buf, NULL);
    if (integer) *out = trunc(*out);
    return true;
}

static int indent_filter(jn_ctx *c, jn_str s, jval width, bool first, bool blank, jval *out, uint32_t pos) {
    if (width.t != JV_INT) return jn_fail(c, FR_ERR_FORMAT, pos, "width must be a number");
    if (width.u.d < 0 || width.u.d > 1024)
        return jn_fail(c, FR_ERR_FORMAT, pos, "indent width must be between 0 and 1024");
    jn_buf b = {0};
    int rc = FR_OK;
    size_t line = 0;
    for (size_t i = 0; i <= s.n && !rc; line++) {
        const char *nl = i < s.n ? memchr(s.p + i, '\n', s.n - i) : NULL;
        size_t end = nl ? (size_t)(nl - s.p) : s.n;
        if (line) rc = jn_buf_putc(c, &b, '\n', pos);
        if (!rc && !((!first && line == 0) || (!blank && end == i)))
            for (int k = 0; k < (int)width.u.d && !rc; k++) rc = jn_buf_putc(c, &b, ' ', pos);
        if (!rc) rc = jn_buf_put(c, &b, s.p + i, end - i, pos);
        if (!nl) break;
        i = end + 1;
    }
    if (rc) {
        jn_buf_release(c, &b);
        return rc;
    }
    return jn_buf_to_value(c, &b, out, pos);
}

/* JavaScript truthiness of a raw value (arrays and maps are objects, always true). */
static bool js_truthy(jval v) { return v.t == JV_ARRAY || v.t == JV_OBJECT ? true : jv_truthy(v); }

static int unique(jn_ctx *c, const jn_array *a, jval *out, uint32_t pos) {
    jval *items = NULL;
    size_t k = 0, cap = 0;
    int rc = FR_OK;
    for (size_t i = 0; i < a->n && !rc; i++) {
        bool seen = false;
        size_t cost = 0;
        rc = jn_steps(c, k / 4 + 1, pos);
        for (size_t j = 0; j < k && !seen; j++) {
            cost += jv_eq_cost(items[j], a->v[i]);
            seen = jv_strict_equal(items[j], a->v[i]) ||
                   (jv_is_num(items[j]) && jv_is_num(a->v[i]) && isnan(items[j].u.d) && isnan(a->v[i].u.d));
        }
        if (!rc) rc = jn_work(c, cost, pos);
        if (!seen && !rc) rc = push_item(c, &items, &k, &cap, a->v[i], pos);
    }
    return rc ? rc : make_array(c, items, k, out, pos);
}

static int filter_plain(jn_ctx *c, jval v, const jn_node *f, jval *out) {
    const char *nm = f->str;
    size_t nn = f->len;
    uint32_t pos = f->pos;
#define IS(s) name_is(nm, nn, s)
    if (IS("safe")) return *out = v, FR_OK;
    if (IS("tojson")) return json_filter(c, v, NULL, out, pos);
    if (IS("default")) return *out = v.t == JV_UNDEF ? jv_str("", 0) : v, FR_OK;
    switch ((jv_type)v.t) {
    case JV_ARRAY: {
        const jn_array *a = v.u.a;
        if (IS("list")) return *out = v, FR_OK;
        if (IS("first")) return *out = a->n ? a->v[0] : jv_undef(), FR_OK;
        if (IS("last")) return *out = a->n ? a->v[a->n - 1] : jv_undef(), FR_OK;
        if (IS("length")) return *out = jv_int((double)a->n), FR_OK;
        if (IS("reverse")) {
            int rc = jn_steps(c, a->n, pos);
            if (rc || (rc = jv_new_array(c, a->n, out, pos))) return rc;
            for (size_t i = 0; i < a->n; i++) out->u.a->v[i] = a->v[a->n - 1 - i];
            return FR_OK;
        }
        if (IS("sort")) {
            sorter s = {c, false, false, -1, NULL, 0, pos, FR_OK};
            return sorted_copy(c, a, &s, out);
        }
        if (IS("join")) return join(c, v, jv_str("", 0), out, pos);
        if (IS("string")) return to_string_value(c, v, out, pos);
        if (IS("unique")) return unique(c, a, out, pos);
        return jn_fail(c, FR_ERR_FORMAT, pos, "Unknown ArrayValue filter: %.*s", (int)nn, nm);
    }
    case JV_STR: {
        jn_str s = S(v);
        if (IS("length")) {
            int rc = jn_work(c, s.n, pos);
            return rc ? rc : (*out = jv_int((double)jn_utf16_len(s.p, s.n)), FR_OK);
        }
        if (IS("upper") || IS("lower")) return jv_lower(c, s, IS("upper"), out, pos);
        if (IS("title")) return str_title(c, s, out, pos);
        if (IS("capitalize")) return str_capitalize(c, s, out, pos);
        if (IS("trim")) {
            jn_str t = jn_js_trim(s, true, true);
            return *out = jv_str(t.p, t.n), FR_OK;
        }
        if (IS("indent")) return indent_filter(c, s, jv_int(4), false, false, out, pos);
        if (IS("join") || IS("string")) return *out = v, FR_OK;
        if (IS("int") || IS("float")) {
            double d;
            bool ok = js_parse_number(s, IS("int"), &d);
            *out = IS("int") ? jv_int(ok ? d : 0) : jv_float(ok ? d : 0);
            return FR_OK;
        }
        return jn_fail(c, FR_ERR_FORMAT, pos, "Unknown StringValue filter: %.*s", (int)nn, nm);
    }
    case JV_INT:
    case JV_FLOAT:
        if (IS("abs")) return *out = v, out->u.d = fabs(v.u.d), FR_OK;
        if (IS("int")) return *out = jv_int(floor(v.u.d)), FR_OK;
        if (IS("float")) return *out = jv_float(v.u.d), FR_OK;
        if (IS("string")) return to_string_value(c, v, out, pos);
        return jn_fail(c, FR_ERR_FORMAT, pos, "Unknown NumericValue filter: %.*s", (int)nn, nm);
    case JV_OBJECT: {
        if (IS("items")) return obj_items(c, v.u.o, OM_ITEMS, out, pos);
        if (IS("length")) return *out = jv_int((double)v.u.o->n), FR_OK;
        int m = find_method(OBJ_METHODS, OM_COUNT_, jv_str(nm, nn));
        if (m >= 0) return obj_method(c, m, v, NULL, 0, NULL, out, pos);
        return jn_fail(c, FR_ERR_FORMAT, pos, "Unknown ObjectValue filter: %.*s", (int)nn, nm);
    }
    case JV_BOOL:
        if (IS("bool")) return *out = v, FR_OK;
        if (IS("int")) return *out = jv_int(v.u.b), FR_OK;
        if (IS("float")) return *out = jv_float(v.u.b), FR_OK;
        if (IS("string")) return *out = v.u.b ? jv_str("true", 4) : jv_str("false", 5), FR_OK;
        return jn_fail(c, FR_ERR_FORMAT, pos, "Unknown BooleanValue filter: %.*s", (int)nn, nm);
    default: break;
    }
    return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot apply filter \"%.*s\" to type: %s", (int)nn, nm,
                   jv_type_name(v));
#undef IS
}

static int select_attr(jn_ctx *c, const jn_array *a, const jn_node *call, jn_env *env, bool select,
                       jval *out) {
    const char *nm = select ? "selectattr" : "rejectattr";
    uint32_t pos = call->pos;
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i].t != JV_OBJECT && a->v[i].t != JV_NAMESPACE)
            return jn_fail(c, FR_ERR_FORMAT, pos, "`%s` can only be applied to array of objects", nm);
    jval args[3] = {jv_undef(), jv_undef(), jv_undef()};
    for (size_t i = 0; i < call->args.n; i++) {
        if (call->args.v[i]->kind != E_STR)
            return jn_fail(c, FR_ERR_FORMAT, pos, "arguments of `%s` must be strings", nm);
        if (i < 3) args[i] = jv_str(call->args.v[i]->str, call->args.v[i]->len);
    }
    if (args[0].t != JV_STR) return jn_fail(c, FR_ERR_FORMAT, pos, "`%s` needs an attribute name", nm);
    jval *items = NULL;
    size_t k = 0, cap = 0;
    int rc = FR_OK;
    for (size_t i = 0; i < a->n && !rc; i++) {
        jval *attr = jv_object_get(a->v[i].u.o, args[0].u.s.p, args[0].u.s.n);
        bool res = false;
        if (attr) {
            if (args[1].t == JV_STR) {
                bool known;
                int ek;
                jn_node t = {.kind = E_TEST, .str = args[1].u.s.p, .len = args[1].u.s.n, .pos = pos};
                if (name_is(t.str, t.len, "lower") || name_is(t.str, t.len, "upper")) {
                    rc = jn_apply_test(c, &t, *attr, env, &res);
                } else {
                    rc = jn_work(c, jv_eq_cost(*attr, args[2]), pos);
                    res = jn_test_by_name(t.str, t.len, *attr, args[2], &known, &ek);
                    if (rc) break;
                    if (!known)
                        rc = jn_fail(c, FR_ERR_FORMAT, pos, "Unknown test: %.*s", (int)t.len, t.str);
                    else if (ek)
                        rc = jn_fail(c, FR_ERR_FORMAT, pos, "cannot %.*s on %s", (int)t.len, t.str,
                                     jv_type_name(*attr));
                }
            } else
                res = jv_truthy(*attr);
        }
        if (!rc && res == select) rc = push_item(c, &items, &k, &cap, a->v[i], pos);
    }
    return rc ? rc : make_array(c, items, k, out, pos);
}

static int filter_call(jn_ctx *c, jval v, const jn_node *call, jn_env *env, jval *out) {
    const jn_node *callee = call->a;
    uint32_t pos = callee->pos;
    if (callee->kind != E_IDENT) return jn_fail(c, FR_ERR_FORMAT, pos, "Unknown filter");
    const char *nm = callee->str;
    size_t nn = callee->len;
#define IS(s) name_is(nm, nn, s)
    jn_args a;
    int rc;
    if (IS("selectattr") || IS("rejectattr")) {
        if (v.t != JV_ARRAY)
            return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot apply filter \"%.*s\" to type: %s", (int)nn, nm,
                           jv_type_name(v));
        return select_attr(c, v.u.a, call, env, IS("selectattr"), out);
    }
    if ((rc = jn_eval_args(c, &call->args, env, &a))) return rc;
    if (IS("tojson")) return json_filter(c, v, &a, out, pos);
    if (IS("join")) {
        if (v.t != JV_STR && v.t != JV_ARRAY)
            return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot apply filter \"join\" to type: %s",
                           jv_type_name(v));
        jval sep = arg(a.pos, a.npos, a.kw, 0, "separator", jv_str("", 0));
        if (sep.t != JV_STR) return jn_fail(c, FR_ERR_FORMAT, pos, "separator must be a string");
        return join(c, v, sep, out, pos);
    }
    if (IS("int") || IS("float")) {
        jval dflt = arg(a.pos, a.npos, a.kw, 0, "default", IS("int") ? jv_int(0) : jv_float(0));
        double d;
        if (v.t == JV_STR)
            *out = js_parse_number(S(v), IS("int"), &d) ? (IS("int") ? jv_int(d) : jv_float(d)) : dflt;
        else if (jv_is_num(v))
            *out = v;
        else if (v.t == JV_BOOL)
            *out = IS("int") ? jv_int(v.u.b) : jv_float(v.u.b);
        else
            return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot apply filter \"%.*s\" to type: %s", (int)nn, nm,
                           jv_type_name(v));
        return FR_OK;
    }
    if (IS("default")) {
        jval dflt = a.npos > 0 ? a.pos[0] : jv_str("", 0);
        jval boolean = arg(a.pos, a.npos, a.kw, 1, "boolean", jv_bool(false));
        if (boolean.t != JV_BOOL)
            return jn_fail(c, FR_ERR_FORMAT, pos, "`default` filter flag must be a boolean");
        *out = v.t == JV_UNDEF || (boolean.u.b && !jv_truthy(v)) ? dflt : v;
        return FR_OK;
    }
    if (v.t == JV_ARRAY) {
        if (IS("sort")) {
            jval rev = arg(a.pos, a.npos, a.kw, 0, "reverse", jv_bool(false));
            jval cs = arg(a.pos, a.npos, a.kw, 1, "case_sensitive", jv_bool(false));
            jval at = arg(a.pos, a.npos, a.kw, 2, "attribute", jv_null());
            if (rev.t != JV_BOOL) return jn_fail(c, FR_ERR_FORMAT, pos, "reverse must be a boolean");
            if (cs.t != JV_BOOL) return jn_fail(c, FR_ERR_FORMAT, pos, "case_sensitive must be a boolean");
            if (at.t != JV_STR && at.t != JV_INT && at.t != JV_NULL)
                return jn_fail(c, FR_ERR_FORMAT, pos, "attribute must be a string, integer, or null");
            sorter s = {c, cs.u.b, rev.u.b, -1, NULL, 0, pos, FR_OK};
            if (at.t == JV_INT) {
                char num[40];
                jn_fmt_js_number(at.u.d, num);
                jval sv;
                if ((rc = jv_new_str(c, num, strlen(num), &sv, pos))) return rc;
                at = sv;
            }
            if (at.t == JV_STR) s.attr = at.u.s.p, s.attr_n = at.u.s.n;
            return sorted_copy(c, v.u.a, &s, out);
        }
        if (IS("map")) {
            jval *at = a.kw ? jv_object_get(a.kw, "attribute", 9) : NULL;
            if (!at)
                return jn_fail(c, FR_ERR_FORMAT, pos,
                               "`map` expressions without `attribute` set are not currently supported.");
            if (at->t != JV_STR) return jn_fail(c, FR_ERR_FORMAT, pos, "attribute must be a string");
            jval *dflt = jv_object_get(a.kw, "default", 7);
            if ((rc = jn_steps(c, v.u.a->n, pos)) || (rc = jv_new_array(c, v.u.a->n, out, pos))) return rc;
            for (size_t i = 0; i < v.u.a->n; i++) {
                jval it = v.u.a->v[i];
                if (it.t != JV_OBJECT && it.t != JV_NAMESPACE)
                    return jn_fail(c, FR_ERR_FORMAT, pos, "items in map must be an object");
                jval r = attr_path(it, at->u.s.p, at->u.s.n);
                out->u.a->v[i] = r.t == JV_UNDEF && dflt ? *dflt : r;
            }
            return FR_OK;
        }
        return jn_fail(c, FR_ERR_FORMAT, pos, "Unknown ArrayValue filter: %.*s", (int)nn, nm);
    }
    if (v.t == JV_STR) {
        if (IS("indent")) {
            jval w = arg(a.pos, a.npos, a.kw, 0, "width", jv_int(4));
            jval first = arg(a.pos, a.npos, a.kw, 1, "first", jv_bool(false));
            jval blank = arg(a.pos, a.npos, a.kw, 2, "blank", jv_bool(false));
            return indent_filter(c, S(v), w, js_truthy(first), js_truthy(blank), out, pos);
        }
        if (IS("replace")) return str_replace(c, S(v), a.pos, a.npos, a.kw, out, pos);
        return jn_fail(c, FR_ERR_FORMAT, pos, "Unknown StringValue filter: %.*s", (int)nn, nm);
    }
    if (v.t == JV_OBJECT) {
        int m = find_method(OBJ_METHODS, OM_COUNT_, jv_str(nm, nn));
        if (m >= 0) return obj_method(c, m, v, a.pos, a.npos, a.kw, out, pos);
        return jn_fail(c, FR_ERR_FORMAT, pos, "Unknown ObjectValue filter: %.*s", (int)nn, nm);
    }
    return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot apply filter \"%.*s\" to type: %s", (int)nn, nm,
                   jv_type_name(v));
#undef IS
}

int jn_apply_filter(jn_ctx *c, jval operand, const jn_node *filter, jn_env *env, jval *out) {
    if (filter->kind == E_IDENT) return filter_plain(c, operand, filter, out);
    if (filter->kind == E_CALL) return filter_call(c, operand, filter, env, out);
    return jn_fail(c, FR_ERR_FORMAT, filter->pos, "a filter must be a name or a call");
}
