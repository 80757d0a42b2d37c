/* jinja_eval.c - walks the syntax tree: statements write into an output buffer,
 * expressions produce values. Also the public fr_jinja_* entry points.
 *
 * Semantics follow @huggingface/jinja where it differs from Jinja2, because that is what
 * the oracle renders and templates are tested against:
 *   - scopes: `for` bodies and macro calls get a scope; if-blocks do not; `set` writes
 *     the innermost scope, so only namespace attributes escape a loop;
 *   - macros see the variables of their call site (dynamic scope), call blocks those of
 *     the block; `kwargs` / `varargs` exist only when the body reads them;
 *   - a loop's `{% break %}` / `{% continue %}` discards the output of the interrupted
 *     iteration (the reference unwinds with an exception), and the loop's else-block runs
 *     when no iteration completed;
 *   - operators compare and concatenate as the reference does (== is JavaScript's ==
 *     on the underlying values, `~` uses JavaScript's String()).
 * Every evaluation step, allocation and nesting level is charged to the render's limits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_impl.h"

/* ---- scopes -------------------------------------------------------------------------- */

static jn_env *env_new(jn_ctx *c, jn_env *parent) {
    jn_env *e = jn_alloc(&c->arena, sizeof *e);
    if (e) e->parent = parent;
    return e;
}

static int env_set(jn_ctx *c, jn_env *e, const char *name, size_t n, jval v, uint32_t pos) {
    for (size_t i = 0; i < e->n; i++)
        if (e->names[i].n == n && !memcmp(e->names[i].p, name, n)) {
            e->vals[i] = v;
            return FR_OK;
        }
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 4;
        jn_str *names = jn_alloc(&c->arena, cap * sizeof *names);
        jval *vals = jn_alloc(&c->arena, cap * sizeof *vals);
        if (!names || !vals) return jn_oom(c, pos);
        if (e->n) {
            memcpy(names, e->names, e->n * sizeof *names);
            memcpy(vals, e->vals, e->n * sizeof *vals);
        }
        e->names = names;
        e->vals = vals;
        e->cap = cap;
    }
    e->names[e->n] = (jn_str){name, n};
    e->vals[e->n++] = v;
    return FR_OK;
}

jval jn_lookup(jn_env *e, const char *name, size_t n) {
    for (; e; e = e->parent)
        for (size_t i = 0; i < e->n; i++)
            if (e->names[i].n == n && !memcmp(e->names[i].p, name, n)) return e->vals[i];
    return jv_undef();
}

static int enter(jn_ctx *c, uint32_t pos) {
    if (++c->depth > c->lim.max_depth)
        return jn_fail(c, FR_ERR_CAPACITY, pos,
                       "evaluation nested more than %d levels deep (runaway macro recursion?)",
                       c->lim.max_depth);
    return jn_steps(c, 1, pos);
}

static int exec_block(jn_ctx *c, const jn_list *l, jn_env *env, jn_buf *out);

/* Render a block into a string value (set blocks, macro bodies, filter blocks). */
static int block_value(jn_ctx *c, const jn_list *l, jn_env *env, jval *v, uint32_t pos) {
    jn_buf b = {0};
    int rc = exec_block(c, l, env, &b);
    if (rc) {
        jn_buf_release(c, &b);
        return rc;
    }
    return jn_buf_to_value(c, &b, v, pos);
}

/* ---- calls ---------------------------------------------------------------------------- */

int jn_eval_args(jn_ctx *c, const jn_list *args, jn_env *env, jn_args *out) {
    size_t npos = 0, cap = 0;
    int rc;
    memset(out, 0, sizeof *out);
    /* positional part first (spreads included), then keywords, as the reference does */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < args->n; i++) {
            const jn_node *a = args->v[i];
            bool kw = a->kind == E_KWARG || a->kind == E_KWSPREAD;
            if (kw != (pass == 1)) continue;
            jval v;
            if ((rc =
                     jn_eval(c, a->kind == E_KWARG || a->kind == E_SPREAD || a->kind == E_KWSPREAD ? a->a : a,
                             env, &v)))
                return rc;
            if (pass == 0) {
                size_t add = 1;
                if (a->kind == E_SPREAD) {
                    if (v.t != JV_ARRAY)
                        return jn_fail(c, FR_ERR_FORMAT, a->pos, "Cannot unpack non-iterable type: %s",
                                       jv_type_name(v));
                    add = v.u.a->n;
                }
                if (npos + add > cap) {
                    size_t ncap = (npos + add) * 2;
                    jval *nv = jn_alloc(&c->arena, ncap * sizeof *nv);
                    if (!nv) return jn_oom(c, a->pos);
                    if (npos) memcpy(nv, out->pos, npos * sizeof *nv);
                    out->pos = nv;
                    cap = ncap;
                }
                if (a->kind == E_SPREAD)
                    memcpy(out->pos + npos, v.u.a->v, add * sizeof *v.u.a->v);
                else
                    out->pos[npos] = v;
                npos += add;
                continue;
            }
            if (!out->kw && (rc = jv_new_object(c, 4, &out->kw, a->pos))) return rc;
            if (a->kind == E_KWARG) {
                if (jv_object_get(out->kw, a->str, a->len))
                    return jn_fail(c, FR_ERR_FORMAT, a->pos,
                                   "got multiple values for keyword argument '%.*s'", (int)a->len, a->str);
                if ((rc = jv_object_set(c, out->kw, a->str, a->len, v, a->pos))) return rc;
            } else {
                if (v.t != JV_OBJECT)
                    return jn_fail(c, FR_ERR_FORMAT, a->pos, "argument after ** must be a mapping, not %s",
                                   jv_type_name(v));
                for (size_t k = 0; k < v.u.o->n; k++) {
                    if (jv_object_get(out->kw, v.u.o->keys[k].p, v.u.o->keys[k].n))
                        return jn_fail(c, FR_ERR_FORMAT, a->pos,
                                       "got multiple values for keyword argument '%.*s'",
                                       (int)v.u.o->keys[k].n, v.u.o->keys[k].p);
                    if ((rc = jv_object_set(c, out->kw, v.u.o->keys[k].p, v.u.o->keys[k].n, v.u.o->vals[k],
                                            a->pos)))
                        return rc;
                }
            }
        }
    }
    out->npos = npos;
    return FR_OK;
}

/* Bind a macro's (or call block's) parameters, then render its body. site: the scope of
 * the call (macros) - call blocks use the scope they were written in. */
static int call_macro(jn_ctx *c, const jn_func *f, const jn_args *a, jn_env *site, jval *out, uint32_t pos) {
    const jn_node *decl = f->node;
    char label[80];
    if (f->kind == FN_MACRO)
        snprintf(label, sizeof label, "'%.*s'", (int)(decl->len > 60 ? 60 : decl->len), decl->str);
    else
        snprintf(label, sizeof label, "None");
    jn_env *scope = env_new(c, f->kind == FN_CALLER ? f->env : site);
    if (!scope) return jn_oom(c, pos);
    size_t nparams = decl->args.n, nkw = a->kw ? a->kw->n : 0;
    bool *used = jn_alloc(&c->arena, nkw + nparams + 1), *given = used + nkw; /* kwargs taken, params bound */
    if (!used) return jn_oom(c, pos);
    int rc;
    for (size_t i = 0; i < nparams; i++) {
        const jn_node *p = decl->args.v[i];
        jval v = jv_undef();
        given[i] = i < a->npos;
        if (given[i])
            v = a->pos[i];
        else
            for (size_t k = 0; k < nkw; k++)
                if (!used[k] && a->kw->keys[k].n == p->len && !memcmp(a->kw->keys[k].p, p->str, p->len)) {
                    v = a->kw->vals[k];
                    used[k] = given[i] = true;
                    break;
                }
        if ((rc = env_set(c, scope, p->str, p->len, v, pos))) return rc;
    }
    if (decl->uses_kwargs) {
        jn_object *kw;
        if ((rc = jv_new_object(c, nkw, &kw, pos))) return rc;
        for (size_t k = 0; k < nkw; k++)
            if (!used[k] &&
                (rc = jv_object_set(c, kw, a->kw->keys[k].p, a->kw->keys[k].n, a->kw->vals[k], pos)))
                return rc;
        if ((rc = env_set(c, scope, "kwargs", 6, (jval){.t = JV_OBJECT, .u.o = kw}, pos))) return rc;
    } else
        for (size_t k = 0; k < nkw; k++)
            if (!used[k])
                return jn_fail(c, FR_ERR_FORMAT, pos, "macro %s takes no keyword argument '%.*s'", label,
                               (int)a->kw->keys[k].n, a->kw->keys[k].p);
    if (decl->uses_varargs) {
        jval va;
        size_t extra = a->npos > nparams ? a->npos - nparams : 0;
        if ((rc = jv_new_array(c, extra, &va, pos))) return rc;
        if (extra) memcpy(va.u.a->v, a->pos + nparams, extra * sizeof(jval));
        if ((rc = env_set(c, scope, "varargs", 7, va, pos))) return rc;
    } else if (a->npos > nparams)
        return jn_fail(c, FR_ERR_FORMAT, pos, "macro %s takes not more than %zu argument(s)", label, nparams);
    /* defaults last, in the macro's scope, so they can use earlier parameters */
    for (size_t i = 0; i < nparams; i++) {
        const jn_node *p = decl->args.v[i];
        if (p->kind != E_KWARG || given[i]) continue;
        jval v;
        if ((rc = jn_eval(c, p->a, scope, &v)) || (rc = env_set(c, scope, p->str, p->len, v, pos))) return rc;
    }
    return block_value(c, &decl->body, scope, out, pos);
}

static int call_value(jn_ctx *c, jval fn, const jn_args *a, jn_env *site, jval *out, uint32_t pos) {
    if (fn.t != JV_FUNC)
        return jn_fail(c, FR_ERR_FORMAT, pos, "Cannot call something that is not a function: got %s",
                       jv_type_name(fn));
    if (fn.u.f->kind == FN_MACRO || fn.u.f->kind == FN_CALLER)
        return call_macro(c, fn.u.f, a, site, out, pos);
    return jn_call_builtin(c, fn.u.f, a->pos, a->npos, a->kw, out, pos);
}

/* ---- expressions ------------------------------------------------------------------------ */

static const char *op_name(jn_op op) {
    static const char *const names[] = {
        [OP_AND] = "and",      [OP_OR] = "or",       [OP_NOT] = "not", [OP_EQ] = "==",    [OP_NE] = "!=",
        [OP_LT] = "<",         [OP_GT] = ">",        [OP_LE] = "<=",   [OP_GE] = ">=",    [OP_IN] = "in",
        [OP_NOTIN] = "not in", [OP_ADD] = "+",       [OP_SUB] = "-",   [OP_CONCAT] = "~", [OP_MUL] = "*",
        [OP_DIV] = "/",        [OP_FLOORDIV] = "//", [OP_MOD] = "%",   [OP_POW] = "**",   [OP_NEG] = "-",
        [OP_POS] = "+"};
    return op < sizeof names / sizeof *names && names[op] ? names[op] : "?";
}

static int concat(jn_ctx *c, jval l, jval r, jval *out, uint32_t pos) {
    jn_buf b = {0};
    int rc = jv_js_str(c, &b, l, pos);
    if (!rc) rc = jv_js_str(c, &b, r, pos);
    if (rc) {
        jn_buf_release(c, &b);
        return rc;
    }
    return jn_buf_to_value(c, &b, out, pos);
}

static bool str_contains(jval hay, jval needle) {
    if (needle.u.s.n == 0) return true;
    if (needle.u.s.n > hay.u.s.n) return false;
    return memmem(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n) != NULL;
}

static int eval_binary(jn_ctx *c, const jn_node *x, jn_env *env, jval *out) {
    jn_op op = (jn_op)x->op;
    jval l, r;
    int rc = jn_eval(c, x->a, env, &l);
    if (rc) return rc;
    if (op == OP_AND) return jv_truthy(l) ? jn_eval(c, x->b, env, out) : (*out = l, FR_OK);
    if (op == OP_OR) return jv_truthy(l) ? (*out = l, FR_OK) : jn_eval(c, x->b, env, out);
    if ((rc = jn_eval(c, x->b, env, &r))) return rc;
    if (op == OP_EQ || op == OP_NE) {
        bool eq;
        if ((rc = jn_work(c, jv_eq_cost(l, r), x->pos)) || (rc = jv_loose_equal(c, l, r, &eq, x->pos)))
            return rc;
        *out = jv_bool(op == OP_EQ ? eq : !eq);
        return FR_OK;
    }
    if (l.t == JV_UNDEF || r.t == JV_UNDEF) {
        if (r.t == JV_UNDEF && (op == OP_IN || op == OP_NOTIN)) {
            *out = jv_bool(op == OP_NOTIN); /* anything in undefined is false */
            return FR_OK;
        }
        return jn_fail(c, FR_ERR_FORMAT, x->pos, "Cannot perform operation %s on undefined values",
                       op_name(op));
    }
    if (l.t == JV_NULL || r.t == JV_NULL)
        return jn_fail(c, FR_ERR_FORMAT, x->pos, "Cannot perform operation %s on null values", op_name(op));
    if (op == OP_CONCAT) return concat(c, l, r, out, x->pos);
    bool nl = jv_is_num(l) || l.t == JV_BOOL, nr = jv_is_num(r) || r.t == JV_BOOL;
    if (op == OP_POW && nl && nr) {
        double a = l.t == JV_BOOL ? l.u.b : l.u.d, b = r.t == JV_BOOL ? r.u.b : r.u.d;
        if (a == 0 && b < 0)
            return jn_fail(c, FR_ERR_FORMAT, x->pos, "0.0 cannot be raised to a negative power");
        double res = pow(a, b);
        if (!isfinite(res))
            return jn_fail(c, FR_ERR_FORMAT, x->pos, "exponentiation result is not a finite real number");
        *out = l.t == JV_FLOAT || r.t == JV_FLOAT || b < 0 ? jv_float(res) : jv_int(res);
        return FR_OK;
    }
    if (jv_is_num(l) && jv_is_num(r)) {
        double a = l.u.d, b = r.u.d;
        bool fl = l.t == JV_FLOAT || r.t == JV_FLOAT;
        switch (op) {
        case OP_ADD: *out = fl ? jv_float(a + b) : jv_int(a + b); return FR_OK;
        case OP_SUB: *out = fl ? jv_float(a - b) : jv_int(a - b); return FR_OK;
        case OP_MUL: *out = fl ? jv_float(a * b) : jv_int(a * b); return FR_OK;
        case OP_DIV: *out = jv_float(a / b); return FR_OK;
        case OP_FLOORDIV: *out = fl ? jv_float(floor(a / b)) : jv_int(floor(a / b)); return FR_OK;
        case OP_MOD: *out = fl ? jv_float(fmod(a, b)) : jv_int(fmod(a, b)); return FR_OK;
        case OP_LT: *out = jv_bool(a < b); return FR_OK;
        case OP_GT: *out = jv_bool(a > b); return FR_OK;
        case OP_GE: *out = jv_bool(a >= b); return FR_OK;
        case OP_LE: *out = jv_bool(a <= b); return FR_OK;
        default: break;
        }
    } else if (l.t == JV_ARRAY && r.t == JV_ARRAY) {
        if (op == OP_ADD) {
            size_t n = l.u.a->n + r.u.a->n;
            if ((rc = jn_steps(c, n, x->pos)) || (rc = jv_new_array(c, n, out, x->pos))) return rc;
            if (l.u.a->n) memcpy(out->u.a->v, l.u.a->v, l.u.a->n * sizeof(jval));
            if (r.u.a->n) memcpy(out->u.a->v + l.u.a->n, r.u.a->v, r.u.a->n * sizeof(jval));
            return FR_OK;
        }
    } else if (r.t == JV_ARRAY && (op == OP_IN || op == OP_NOTIN)) {
        if ((rc = jn_steps(c, r.u.a->n, x->pos))) return rc;
        bool member = false;
        size_t cost = 0;
        for (size_t i = 0; i < r.u.a->n && !member; i++) {
            cost += jv_eq_cost(r.u.a->v[i], l);
            member = jv_strict_equal(r.u.a->v[i], l);
        }
        if ((rc = jn_work(c, cost, x->pos))) return rc;
        *out = jv_bool(op == OP_IN ? member : !member);
        return FR_OK;
    }
    if ((l.t == JV_STR || r.t == JV_STR) && op == OP_ADD) return concat(c, l, r, out, x->pos);
    if (l.t == JV_STR && r.t == JV_STR && (op == OP_IN || op == OP_NOTIN)) {
        if ((rc = jn_work(c, r.u.s.n, x->pos))) return rc;
        bool in = str_contains(r, l);
        *out = jv_bool(op == OP_IN ? in : !in);
        return FR_OK;
    }
    if (l.t == JV_STR && r.t == JV_OBJECT && (op == OP_IN || op == OP_NOTIN)) {
        bool in = jv_object_get(r.u.o, l.u.s.p, l.u.s.n) != NULL;
        *out = jv_bool(op == OP_IN ? in : !in);
        return FR_OK;
    }
    return jn_fail(c, FR_ERR_FORMAT, x->pos, "Unknown operator \"%s\" between %s and %s", op_name(op),
                   jv_type_name(l), jv_type_name(r));
}

/* Python slicing (the reference's utils.slice) over n items. */
static int slice_bounds(jn_ctx *c, const jn_node *s, jn_env *env, double n, double *start, double *stop,
                        double *step) {
    jval v[3];
    const jn_node *parts[3] = {s->a, s->b, s->c};
    static const char *const what[3] = {"start", "stop", "step"};
    for (int i = 0; i < 3; i++) {
        int rc = parts[i] ? jn_eval(c, parts[i], env, &v[i]) : (v[i] = jv_undef(), FR_OK);
        if (rc) return rc;
        if (v[i].t != JV_INT && v[i].t != JV_UNDEF)
            return jn_fail(c, FR_ERR_FORMAT, s->pos, "slice %s must be an integer or left out", what[i]);
    }
    *step = v[2].t == JV_INT ? v[2].u.d : 1;
    if (*step >= 0) {
        double a = v[0].t == JV_INT ? v[0].u.d : 0, b = v[1].t == JV_INT ? v[1].u.d : n;
        *start = a < 0 ? fmax(n + a, 0) : fmin(a, n);
        *stop = b < 0 ? fmax(n + b, 0) : fmin(b, n);
    } else {
        double a = v[0].t == JV_INT ? v[0].u.d : n - 1, b = v[1].t == JV_INT ? v[1].u.d : -1;
        *start = a < 0 ? fmax(n + a, -1) : fmin(a, n - 1);
        *stop = b < -1 ? fmax(n + b, -1) : fmin(b, n - 1);
    }
    return FR_OK;
}

static size_t slice_count(double start, double stop, double step) {
    if (step > 0 && start < stop) return (size_t)ceil((stop - start) / step);
    if (step < 0 && start > stop) return (size_t)ceil((start - stop) / -step);
    return 0;
}

static int eval_slice(jn_ctx *c, jval obj, const jn_node *s, jn_env *env, jval *out) {
    if (obj.t != JV_ARRAY && obj.t != JV_STR)
        return jn_fail(c, FR_ERR_FORMAT, s->pos, "Slice object must be an array or string");
    int rc;
    if (obj.t == JV_ARRAY) {
        double start, stop, step;
        if ((rc = slice_bounds(c, s, env, (double)obj.u.a->n, &start, &stop, &step))) return rc;
        size_t k = slice_count(start, stop, step);
        if ((rc = jn_steps(c, k, s->pos)) || (rc = jv_new_array(c, k, out, s->pos))) return rc;
        for (size_t i = 0; i < k; i++) out->u.a->v[i] = obj.u.a->v[(size_t)(start + (double)i * step)];
        return FR_OK;
    }
    /* strings slice by code point (Array.from(string)) */
    const char *p = obj.u.s.p;
    size_t n = obj.u.s.n, ncp = 0;
    if ((rc = jn_work(c, n, s->pos))) return rc;
    for (size_t i = 0; i < n; ncp++) {
        uint32_t cp;
        i += jn_utf8_decode(p + i, n - i, &cp);
    }
    double start, stop, step;
    if ((rc = slice_bounds(c, s, env, (double)ncp, &start, &stop, &step))) return rc;
    size_t k = slice_count(start, stop, step);
    if ((rc = jn_steps(c, k / 16 + 1, s->pos))) return rc;
    if (step == 1) { /* contiguous: point into the original */
        size_t i = 0, cpi = 0, b0 = n, b1 = n;
        for (; i <= n; cpi++) {
            if (cpi == (size_t)start) b0 = i;
            if (cpi == (size_t)start + k) {
                b1 = i;
                break;
            }
            if (i == n) break;
            uint32_t cp;
            i += jn_utf8_decode(p + i, n - i, &cp);
        }
        *out = jv_str(p + (b0 < b1 ? b0 : b1), b0 < b1 ? b1 - b0 : 0);
        return FR_OK;
    }
    uint32_t *off = jn_alloc(&c->arena, (ncp + 1) * sizeof *off);
    if (!off) return jn_oom(c, s->pos);
    for (size_t i = 0, j = 0; i < n; j++) {
        uint32_t cp;
        off[j] = (uint32_t)i;
        i += jn_utf8_decode(p + i, n - i, &cp);
    }
    off[ncp] = (uint32_t)n;
    jn_buf b = {0};
    for (size_t i = 0; i < k && !rc; i++) {
        size_t idx = (size_t)(start + (double)i * step);
        rc = jn_buf_put(c, &b, p + off[idx], off[idx + 1] - off[idx], s->pos);
    }
    if (rc) {
        jn_buf_release(c, &b);
        return rc;
    }
    return jn_buf_to_value(c, &b, out, s->pos);
}

int jn_eval(jn_ctx *c, const jn_node *x, jn_env *env, jval *out) {
    int rc = enter(c, x->pos);
    if (rc) return rc;
    switch ((jn_kind)x->kind) {
    case E_INT: *out = jv_int(x->num); break;
    case E_FLOAT: *out = jv_float(x->num); break;
    case E_STR: *out = jv_str(x->str ? x->str : "", x->len); break;
    case E_IDENT: *out = jn_lookup(env, x->str, x->len); break;
    case E_ARRAY:
    case E_TUPLE:
        if ((rc = jv_new_array(c, x->args.n, out, x->pos))) break;
        out->u.a->tuple = x->kind == E_TUPLE;
        for (size_t i = 0; i < x->args.n && !rc; i++) rc = jn_eval(c, x->args.v[i], env, &out->u.a->v[i]);
        break;
    case E_OBJECT: {
        jn_object *o;
        if ((rc = jv_new_object(c, x->args.n, &o, x->pos))) break;
        for (size_t i = 0; i < x->args.n && !rc; i++) {
            jval k, v;
            if ((rc = jn_eval(c, x->args.v[i], env, &k))) break;
            if (k.t != JV_STR) {
                rc = jn_fail(c, FR_ERR_FORMAT, x->args.v[i]->pos, "Object keys must be strings: got %s",
                             jv_type_name(k));
                break;
            }
            if (!(rc = jn_eval(c, x->alt.v[i], env, &v)))
                rc = jv_object_set(c, o, k.u.s.p, k.u.s.n, v, x->pos);
        }
        out->t = JV_OBJECT;
        out->u.o = o;
        break;
    }
    case E_MEMBER: {
        jval obj, prop;
        if ((rc = jn_eval(c, x->a, env, &obj))) break;
        if (x->flag && x->b->kind == E_SLICE) {
            rc = eval_slice(c, obj, x->b, env, out);
            break;
        }
        if (x->flag)
            rc = jn_eval(c, x->b, env, &prop);
        else
            prop = x->b->kind == E_INT ? jv_int(x->b->num) : jv_str(x->b->str, x->b->len);
        if (!rc) rc = jn_member(c, obj, prop, out, x->pos);
        break;
    }
    case E_CALL: {
        jn_args a;
        jval fn;
        if (!(rc = jn_eval_args(c, &x->args, env, &a)) && !(rc = jn_eval(c, x->a, env, &fn)))
            rc = call_value(c, fn, &a, env, out, x->pos);
        break;
    }
    case E_BINARY: rc = eval_binary(c, x, env, out); break;
    case E_UNARY: {
        jval v;
        if ((rc = jn_eval(c, x->a, env, &v))) break;
        if (x->op == OP_NOT)
            *out = jv_bool(!jv_truthy(v));
        else if (jv_is_num(v) || v.t == JV_BOOL) {
            double d = (x->op == OP_NEG ? -1.0 : 1.0) * (v.t == JV_BOOL ? (double)v.u.b : v.u.d);
            *out = v.t == JV_FLOAT ? jv_float(d) : jv_int(d);
        } else
            rc = jn_fail(c, FR_ERR_FORMAT, x->pos, "Unknown operator \"%s\" for %s", op_name((jn_op)x->op),
                         jv_type_name(v));
        break;
    }
    case E_FILTER: {
        jval v;
        if (!(rc = jn_eval(c, x->a, env, &v))) rc = jn_apply_filter(c, v, x->b, env, out);
        break;
    }
    case E_TEST: {
        jval v;
        bool res;
        if (!(rc = jn_eval(c, x->a, env, &v)) && !(rc = jn_apply_test(c, x, v, env, &res)))
            *out = jv_bool(x->flag ? !res : res);
        break;
    }
    case E_TERNARY: {
        jval cond;
        if (!(rc = jn_eval(c, x->a, env, &cond))) rc = jn_eval(c, jv_truthy(cond) ? x->b : x->c, env, out);
        break;
    }
    case E_SELECT: {
        jval cond;
        if ((rc = jn_eval(c, x->b, env, &cond))) break;
        if (jv_truthy(cond))
            rc = jn_eval(c, x->a, env, out);
        else
            *out = jv_undef();
        break;
    }
    default:
        rc = jn_fail(c, FR_ERR_FORMAT, x->pos, "this expression is only valid in an argument list");
        break;
    }
    c->depth--;
    return rc;
}

/* ---- statements ------------------------------------------------------------------------- */

static int assign(jn_ctx *c, const jn_node *target, jval v, jn_env *env, bool in_set) {
    if (target->kind == E_IDENT) return env_set(c, env, target->str, target->len, v, target->pos);
    if (target->kind == E_TUPLE) {
        if (v.t != JV_ARRAY)
            return jn_fail(c, FR_ERR_FORMAT, target->pos, "Cannot unpack non-iterable type%s: %s",
                           in_set ? " in set" : "", jv_type_name(v));
        if (v.u.a->n != target->args.n)
            return jn_fail(c, FR_ERR_FORMAT, target->pos, "Too %s items to unpack%s",
                           target->args.n > v.u.a->n ? "few" : "many", in_set ? " in set" : "");
        for (size_t i = 0; i < target->args.n; i++) {
            const jn_node *t = target->args.v[i];
            if (t->kind != E_IDENT) return jn_fail(c, FR_ERR_FORMAT, t->pos, "can only unpack into names");
            int rc = env_set(c, env, t->str, t->len, v.u.a->v[i], t->pos);
            if (rc) return rc;
        }
        return FR_OK;
    }
    return jn_fail(c, FR_ERR_FORMAT, target->pos, "invalid assignment target");
}

static int exec_set(jn_ctx *c, const jn_node *s, jn_env *env) {
    jval v;
    int rc = s->b ? jn_eval(c, s->b, env, &v) : block_value(c, &s->body, env, &v, s->pos);
    if (rc) return rc;
    const jn_node *t = s->a;
    if (t->kind == E_MEMBER) {
        jval obj;
        if ((rc = jn_eval(c, t->a, env, &obj))) return rc;
        if (obj.t != JV_NAMESPACE)
            return jn_fail(c, FR_ERR_FORMAT, t->pos, "cannot assign attribute on non-namespace object (%s)",
                           jv_type_name(obj));
        if (t->flag || t->b->kind != E_IDENT)
            return jn_fail(c, FR_ERR_FORMAT, t->pos, "Cannot assign to member with non-identifier property");
        return jv_object_set(c, obj.u.o, t->b->str, t->b->len, v, t->pos);
    }
    return assign(c, t, v, env, true);
}

/* The loop object's keys never change, so every iteration's object shares them (objects
 * with n == cap are copied before a key is added, so this table is never written). */
static const jn_str LOOP_KEYS[9] = {{"index", 5},     {"index0", 6},   {"revindex", 8},
                                    {"revindex0", 9}, {"first", 5},    {"last", 4},
                                    {"length", 6},    {"previtem", 8}, {"nextitem", 8}};

static int exec_for(jn_ctx *c, const jn_node *s, jn_env *env, jn_buf *out) {
    jn_env *scope = env_new(c, env);
    if (!scope) return jn_oom(c, s->pos);
    const jn_node *iter = s->b, *test = NULL;
    if (iter->kind == E_SELECT) test = iter->b, iter = iter->a;
    jval it;
    int rc = jn_eval(c, iter, scope, &it);
    if (rc) return rc;
    if (it.t == JV_OBJECT) { /* iterate over the keys */
        jval keys;
        if ((rc = jv_new_array(c, it.u.o->n, &keys, s->pos))) return rc;
        for (size_t i = 0; i < it.u.o->n; i++) keys.u.a->v[i] = jv_str(it.u.o->keys[i].p, it.u.o->keys[i].n);
        it = keys;
    } else if (it.t != JV_ARRAY)
        return jn_fail(c, FR_ERR_FORMAT, iter->pos, "Expected iterable or object type in for loop: got %s",
                       jv_type_name(it));
    const jval *items = it.u.a->v;
    size_t n = it.u.a->n;
    if (test) { /* {% for x in xs if cond %}: filter first, so loop.* counts the kept items */
        jval *kept = n ? jn_alloc(&c->arena, n * sizeof *kept) : NULL;
        jn_env *ls = env_new(c, scope); /* reused: nothing can keep a reference to it */
        size_t k = 0;
        if ((n && !kept) || !ls) return jn_oom(c, s->pos);
        for (size_t i = 0; i < n; i++) {
            jval cond;
            ls->n = 0;
            if ((rc = assign(c, s->a, items[i], ls, false)) || (rc = jn_eval(c, test, ls, &cond))) return rc;
            if (jv_truthy(cond)) kept[k++] = items[i];
        }
        items = kept;
        n = k;
    }
    bool none = true;
    jn_object *lo = NULL;
    jval *lv = NULL;
    for (size_t i = 0; i < n; i++) {
        if ((rc = jn_steps(c, 1, s->pos))) return rc;
        if (!lo || c->tpl->loop_escapes) { /* else one object, updated in place */
            lo = jn_alloc(&c->arena, sizeof *lo);
            lv = jn_alloc(&c->arena, 9 * sizeof *lv);
            if (!lo || !lv) return jn_oom(c, s->pos);
            lo->n = lo->cap = 9;
            lo->keys = (jn_str *)LOOP_KEYS;
            lo->vals = lv;
        }
        lv[0] = jv_int((double)i + 1);
        lv[1] = jv_int((double)i);
        lv[2] = jv_int((double)(n - i));
        lv[3] = jv_int((double)(n - i - 1));
        lv[4] = jv_bool(i == 0);
        lv[5] = jv_bool(i == n - 1);
        lv[6] = jv_int((double)n);
        lv[7] = i > 0 ? items[i - 1] : jv_undef();
        lv[8] = i + 1 < n ? items[i + 1] : jv_undef();
        if ((rc = env_set(c, scope, "loop", 4, (jval){.t = JV_OBJECT, .u.o = lo}, s->pos)) ||
            (rc = assign(c, s->a, items[i], scope, false)))
            return rc;
        size_t mark = out->n;
        rc = exec_block(c, &s->body, scope, out);
        if (rc == JN_CONTINUE || rc == JN_BREAK) {
            out->n = mark; /* the interrupted iteration's output is dropped */
            if (out->p) out->p[mark] = 0;
            if (rc == JN_BREAK) break;
            continue;
        }
        if (rc) return rc;
        none = false;
    }
    return none ? exec_block(c, &s->alt, scope, out) : FR_OK;
}

static int emit_value(jn_ctx *c, jval v, jn_buf *out, uint32_t pos) {
    if (v.t == JV_UNDEF || v.t == JV_NULL) return FR_OK;
    return jv_render(c, out, v, pos);
}

static int exec_stmt(jn_ctx *c, const jn_node *s, jn_env *env, jn_buf *out) {
    jval v;
    int rc;
    switch ((jn_kind)s->kind) {
    case N_TEXT: return s->len ? jn_buf_put(c, out, s->str, s->len, s->pos) : FR_OK;
    case N_OUTPUT:
        if ((rc = jn_eval(c, s->a, env, &v))) return rc;
        return emit_value(c, v, out, s->a->pos);
    case N_IF:
        if ((rc = jn_eval(c, s->a, env, &v))) return rc;
        return exec_block(c, jv_truthy(v) ? &s->body : &s->alt, env, out);
    case N_FOR: return exec_for(c, s, env, out);
    case N_SET: return exec_set(c, s, env);
    case N_MACRO: {
        jn_func *f;
        if ((rc = jv_new_func(c, FN_MACRO, &v, &f, s->pos))) return rc;
        f->node = s;
        return env_set(c, env, s->str, s->len, v, s->pos);
    }
    case N_CALLBLOCK: {
        jval caller, fn;
        jn_func *f;
        jn_args a;
        if ((rc = jv_new_func(c, FN_CALLER, &caller, &f, s->pos))) return rc;
        f->node = s;
        f->env = env;
        if ((rc = jn_eval_args(c, &s->a->args, env, &a)) || (rc = jn_eval(c, s->a->a, env, &fn))) return rc;
        jn_env *site = env_new(c, env);
        if (!site) return jn_oom(c, s->pos);
        if ((rc = env_set(c, site, "caller", 6, caller, s->pos)) ||
            (rc = call_value(c, fn, &a, site, &v, s->a->pos)))
            return rc;
        return emit_value(c, v, out, s->pos);
    }
    case N_FILTERBLOCK:
        if ((rc = block_value(c, &s->body, env, &v, s->pos)) || (rc = jn_apply_filter(c, v, s->a, env, &v)))
            return rc;
        return emit_value(c, v, out, s->pos);
    case N_BREAK: return JN_BREAK;
    case N_CONTINUE: return JN_CONTINUE;
    default: return jn_fail(c, FR_ERR_FORMAT, s->pos, "internal: unexpected node in a statement list");
    }
}

static int exec_block(jn_ctx *c, const jn_list *l, jn_env *env, jn_buf *out) {
    int rc = l->n ? enter(c, l->v[0]->pos) : FR_OK;
    if (rc || !l->n) return rc;
    for (size_t i = 0; i < l->n && !rc; i++) {
        rc = jn_steps(c, 1, l->v[i]->pos);
        if (!rc) rc = exec_stmt(c, l->v[i], env, out);
    }
    c->depth--;
    return rc;
}

/* ---- public API -------------------------------------------------------------------------- */

void fr_jinja_limits_default(fr_jinja_limits *lim) {
    lim->max_output = (size_t)32 << 20;
    lim->max_memory = (size_t)256 << 20;
    lim->max_steps = 20000000;
    lim->max_depth = 400;
}

fr_status fr_jinja_parse(const char *src, size_t len, fr_jinja_template **out, fr_error *err) {
    *out = NULL;
    if (len > FR_JINJA_MAX_SOURCE)
        return fr_fail(err, FR_ERR_FORMAT, "chat template: %zu bytes, more than the %u allowed", len,
                       FR_JINJA_MAX_SOURCE);
    fr_jinja_template *t = calloc(1, sizeof *t);
    if (!t) return fr_fail(err, FR_ERR_NOMEM, "chat template: out of memory");
    jn_arena_init(&t->arena, (size_t)1 << 30, NULL);
    char *copy = jn_alloc(&t->arena, len + 1);
    if (!copy) {
        fr_jinja_free(t);
        return fr_fail(err, FR_ERR_NOMEM, "chat template: out of memory");
    }
    memcpy(copy, src, len);
    t->src = copy;
    t->src_len = len;
    jn_token *toks;
    size_t ntoks;
    char msg[400];
    uint32_t pos = 0;
    fr_status rc = jn_lex(&t->arena, copy, len, &toks, &ntoks, msg, sizeof msg, &pos);
    if (!rc) rc = jn_parse(&t->arena, toks, ntoks, &t->body, msg, sizeof msg, &pos);
    if (!rc) t->loop_escapes = jn_loop_escapes(&t->body);
    if (rc) {
        int line, col;
        jn_line_col(copy, len, pos, &line, &col);
        fr_fail(err, rc, "chat template syntax error at line %d:%d: %s", line, col, msg);
        fr_jinja_free(t);
        return rc;
    }
    *out = t;
    return FR_OK;
}

void fr_jinja_free(fr_jinja_template *t) {
    if (!t) return;
    jn_arena_free(&t->arena);
    free(t);
}

static int add_global(jn_ctx *c, const char *name, jval v) {
    return env_set(c, c->globals, name, strlen(name), v, 0);
}

static int setup_globals(jn_ctx *c, const cJSON *context) {
    static const struct {
        const char *name;
        jn_fn_kind kind;
    } fns[] = {{"namespace", FN_NAMESPACE},
               {"range", FN_RANGE},
               {"raise_exception", FN_RAISE},
               {"strftime_now", FN_STRFTIME}};
    int rc;
    if (!(c->globals = env_new(c, NULL))) return jn_oom(c, 0);
    if ((rc = add_global(c, "true", jv_bool(true))) || (rc = add_global(c, "false", jv_bool(false))) ||
        (rc = add_global(c, "none", jv_null())) || (rc = add_global(c, "True", jv_bool(true))) ||
        (rc = add_global(c, "False", jv_bool(false))) || (rc = add_global(c, "None", jv_null())))
        return rc;
    for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) {
        jval v;
        if ((rc = jv_new_func(c, fns[i].kind, &v, NULL, 0)) || (rc = add_global(c, fns[i].name, v)))
            return rc;
    }
    if (!context) return FR_OK;
    if (!cJSON_IsObject(context))
        return fr_fail(c->err, FR_ERR_INVALID, "chat template: the render context must be a JSON object");
    for (const cJSON *e = context->child; e; e = e->next) {
        jval v;
        if ((rc = jv_from_json(c, e, &v, 0)) ||
            (rc = env_set(c, c->globals, e->string, strlen(e->string), v, 0)))
            return rc;
    }
    return FR_OK;
}

fr_status fr_jinja_render(const fr_jinja_template *t, const cJSON *context, const fr_jinja_limits *lim,
                          char **out, size_t *out_len, fr_error *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    jn_ctx c = {.tpl = t, .err = err};
    if (lim)
        c.lim = *lim;
    else
        fr_jinja_limits_default(&c.lim);
    jn_arena_init(&c.arena, c.lim.max_memory, &c.mem_used);
    jn_buf b = {0};
    int rc = setup_globals(&c, context);
    if (!rc) rc = exec_block(&c, &t->body, c.globals, &b);
    if (rc == JN_BREAK || rc == JN_CONTINUE)
        rc = fr_fail(err, FR_ERR_FORMAT, "chat template: {%% %s %%} outside of a loop",
                     rc == JN_BREAK ? "break" : "continue");
    if (!rc && !b.p) rc = jn_buf_put(&c, &b, "", 0, 0); /* always hand back a string */
    jn_arena_free(&c.arena);
    if (rc) {
        free(b.p);
        return (fr_status)rc;
    }
    *out = b.p;
    if (out_len) *out_len = b.n;
    return FR_OK;
}
