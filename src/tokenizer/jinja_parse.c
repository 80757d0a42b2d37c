/* jinja_parse.c - tokens to syntax tree, with the reference's grammar and precedence.
 *
 * Recursive descent in @huggingface/jinja's order (lowest first): inline if / select,
 * or, and, not, comparisons and `in` (one level, left-assoc), + - ~, * / // %, ** (left
 * assoc, as in Jinja2), `is` tests, `|` filters, unary signs, calls and member access,
 * primaries. Statements: if/elif/else, for (with `if` filter and else), set (also block
 * set and tuple targets), macro, call blocks, filter blocks, break, continue.
 *
 * Nesting is bounded (JN_MAX_PARSE_DEPTH) so a hostile template cannot exhaust the C
 * stack; errors carry the original byte offset of the offending token, and blocks left
 * open name the line of their opening tag. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_impl.h"

#define JN_MAX_PARSE_DEPTH 200

typedef struct {
    jn_arena *arena;
    const jn_token *t;
    size_t n, cur;
    int depth;
    char *msg;
    size_t msgcap;
    uint32_t *errpos;
    bool failed;
} parser;

typedef struct {
    jn_node **v;
    size_t n, cap;
} builder;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static jn_node *
perr(parser *P, uint32_t pos, const char *fmt, ...) {
    if (!P->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(P->msg, P->msgcap, fmt, ap);
        va_end(ap);
        *P->errpos = pos;
        P->failed = true;
    }
    return NULL;
}

static const jn_token *peek(const parser *P, size_t k) {
    size_t i = P->cur + k;
    return i < P->n ? &P->t[i] : &P->t[P->n - 1]; /* the last token is TK_EOF */
}

static const char *describe(const jn_token *t, char *buf, size_t cap) {
    switch (t->type) {
    case TK_EOF: return "end of template";
    case TK_TEXT: return "text";
    case TK_STR: return "a string";
    case TK_COMMENT: return "a comment";
    default: snprintf(buf, cap, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s); return buf;
    }
}

static jn_node *unexpected(parser *P, const char *wanted) {
    char b[64];
    const jn_token *t = peek(P, 0);
    return perr(P, t->pos, "expected %s, found %s", wanted, describe(t, b, sizeof b));
}

static bool is_type(const parser *P, jn_tok_type ty) { return peek(P, 0)->type == ty; }

static bool ident_is(const jn_token *t, const char *name) {
    return t->type == TK_IDENT && t->n == strlen(name) && !memcmp(t->s, name, t->n);
}

static bool is_ident(const parser *P, const char *name) { return ident_is(peek(P, 0), name); }

/* {% name ... : the next two tokens open a statement whose keyword is one of names. */
static bool is_statement(const parser *P, const char *const *names) {
    if (!is_type(P, TK_OPEN_STMT)) return false;
    for (; *names; names++)
        if (ident_is(peek(P, 1), *names)) return true;
    return false;
}

static bool expect(parser *P, jn_tok_type ty, const char *what) {
    if (!is_type(P, ty)) {
        unexpected(P, what);
        return false;
    }
    P->cur++;
    return true;
}

static bool expect_ident(parser *P, const char *name, const char *what) {
    if (!is_ident(P, name)) {
        unexpected(P, what);
        return false;
    }
    P->cur++;
    return true;
}

static jn_node *node(parser *P, jn_kind kind, uint32_t pos) {
    jn_node *x = jn_alloc(P->arena, sizeof *x);
    if (!x) return perr(P, pos, "template too large: out of memory");
    x->kind = (uint8_t)kind;
    x->pos = pos;
    return x;
}

static bool add(parser *P, builder *b, jn_node *x) {
    if (!x) return false;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4;
        jn_node **v = jn_alloc(P->arena, cap * sizeof *v);
        if (!v) {
            perr(P, x->pos, "template too large: out of memory");
            return false;
        }
        if (b->n) memcpy(v, b->v, b->n * sizeof *v);
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = x;
    return true;
}

static jn_list done(builder *b) { return (jn_list){b->v, b->n}; }

static bool enter(parser *P) {
    if (++P->depth > JN_MAX_PARSE_DEPTH) {
        perr(P, peek(P, 0)->pos, "template nested more than %d levels deep", JN_MAX_PARSE_DEPTH);
        return false;
    }
    return true;
}

static jn_node *parse_any(parser *P);
static jn_node *parse_expression(parser *P);
static jn_node *parse_primary(parser *P);
static jn_node *parse_call(parser *P, jn_node *callee);

static const char *const CLOSERS[] = {"endif",     "endfor", "endset", "endmacro", "endcall",
                                      "endfilter", "elif",   "else",   NULL};

/* Statements up to one of `stop` (not consumed); `opener` names the block for errors. An
 * end tag of another kind, or the end of the template, is reported at the opening tag. */
static bool parse_block(parser *P, builder *b, const char *const *stop, const jn_token *opener,
                        const char *end) {
    while (!is_statement(P, stop)) {
        if (is_type(P, TK_EOF)) {
            perr(P, opener->pos,
                 "{%% %.*s %%} is never closed (expected {%% %s %%} before the end of the template)",
                 (int)opener->n, opener->s, end);
            return false;
        }
        if (is_statement(P, CLOSERS)) {
            const jn_token *k = peek(P, 1);
            perr(P, opener->pos,
                 "{%% %.*s %%} is not closed: found {%% %.*s %%} where {%% %s %%} was expected",
                 (int)opener->n, opener->s, (int)(k->n > 20 ? 20 : k->n), k->s, end);
            return false;
        }
        if (!add(P, b, parse_any(P))) return false;
    }
    return true;
}

/* ---- argument lists --------------------------------------------------------------- */

/* ( args ) for calls ("call") or declarations ("parameters"). */
static bool parse_args(parser *P, bool params, jn_list *out) {
    builder b = {0};
    if (!expect(P, TK_LPAREN, "'('")) return false;
    bool saw_kw = false, saw_spread = false;
    while (!is_type(P, TK_RPAREN)) {
        const jn_token *t = peek(P, 0);
        if (t->type == TK_EOF) return unexpected(P, "')'"), false;
        bool kwspread = t->type == TK_POW, spread = t->type == TK_MUL && t->n == 1 && t->s[0] == '*';
        if (params && (kwspread || spread))
            return perr(P, t->pos, "argument unpacking is not allowed in parameter declarations"), false;
        if (kwspread) {
            P->cur++;
            jn_node *x = node(P, E_KWSPREAD, t->pos);
            if (!x || !(x->a = parse_expression(P)) || !add(P, &b, x)) return false;
            if (is_type(P, TK_COMMA)) P->cur++;
            if (!is_type(P, TK_RPAREN))
                return perr(P, peek(P, 0)->pos, "`**` must be applied to the final argument"), false;
            break;
        }
        jn_node *arg;
        if (spread) {
            if (saw_spread) return perr(P, t->pos, "only one `*` argument unpacking is allowed"), false;
            saw_spread = true;
            P->cur++;
            if (!(arg = node(P, E_SPREAD, t->pos)) || !(arg->a = parse_expression(P))) return false;
        } else {
            if (!(arg = parse_expression(P))) return false;
            if (is_type(P, TK_EQUALS)) {
                uint32_t eq = peek(P, 0)->pos;
                P->cur++;
                if (arg->kind != E_IDENT)
                    return perr(P, eq,
                                params ? "expected an identifier for a parameter"
                                       : "expected an identifier before '=' in a keyword argument"),
                           false;
                jn_node *kw = node(P, E_KWARG, arg->pos);
                if (!kw) return false;
                kw->str = arg->str;
                kw->len = arg->len;
                if (!(kw->a = parse_expression(P))) return false;
                arg = kw;
            }
            if (params) {
                if (arg->kind != E_IDENT && arg->kind != E_KWARG)
                    return perr(P, arg->pos, "expected an identifier for a parameter"), false;
                for (size_t i = 0; i < b.n; i++)
                    if (b.v[i]->len == arg->len && !memcmp(b.v[i]->str, arg->str, arg->len))
                        return perr(P, arg->pos, "duplicate parameter name '%.*s'", (int)arg->len, arg->str),
                               false;
            }
            if (arg->kind == E_KWARG)
                saw_kw = true;
            else if (saw_kw)
                return perr(P, arg->pos,
                            params ? "non-default parameter follows a default parameter"
                                   : "positional argument follows a keyword argument"),
                       false;
            else if (saw_spread)
                return perr(P, arg->pos, "positional argument follows `*` unpacking"), false;
        }
        if (!add(P, &b, arg)) return false;
        if (is_type(P, TK_COMMA)) P->cur++;
    }
    P->cur++; /* ) */
    *out = done(&b);
    return true;
}

/* ---- expressions ------------------------------------------------------------------- */

static jn_node *parse_sequence(parser *P, bool primary) {
    jn_node *first = primary ? parse_primary(P) : parse_expression(P);
    if (!first || !is_type(P, TK_COMMA)) return first;
    jn_node *tup = node(P, E_TUPLE, first->pos);
    builder b = {0};
    if (!tup || !add(P, &b, first)) return NULL;
    while (is_type(P, TK_COMMA)) {
        P->cur++;
        if (!add(P, &b, primary ? parse_primary(P) : parse_expression(P))) return NULL;
    }
    tup->args = done(&b);
    return tup;
}

static jn_node *binary(parser *P, jn_op op, uint32_t pos, jn_node *l, jn_node *r) {
    if (!l || !r) return NULL;
    jn_node *x = node(P, E_BINARY, pos);
    if (!x) return NULL;
    x->op = (uint8_t)op;
    x->a = l;
    x->b = r;
    return x;
}

static jn_node *parse_member(parser *P, jn_node *obj) {
    while (obj && (is_type(P, TK_DOT) || is_type(P, TK_LBRACKET))) {
        const jn_token *op = peek(P, 0);
        P->cur++;
        jn_node *m = node(P, E_MEMBER, op->pos);
        if (!m) return NULL;
        m->a = obj;
        if (op->type == TK_LBRACKET) {
            m->flag = true;
            /* [expr] or a slice [a:b:c] with any part left out */
            jn_node *parts[4] = {0};
            int np = 0;
            bool slice = false;
            while (!is_type(P, TK_RBRACKET)) {
                if (is_type(P, TK_EOF)) return unexpected(P, "']'");
                if (np == 4) return perr(P, op->pos, "a slice takes at most three parts");
                if (is_type(P, TK_COLON)) {
                    parts[np++] = NULL;
                    P->cur++;
                    slice = true;
                } else {
                    if (!(parts[np++] = parse_expression(P))) return NULL;
                    if (is_type(P, TK_COLON)) P->cur++, slice = true;
                }
            }
            if (np == 0) return perr(P, op->pos, "expected an index or slice inside []");
            if (slice) {
                if (np > 3) return perr(P, op->pos, "a slice takes at most three parts");
                jn_node *s = node(P, E_SLICE, op->pos);
                if (!s) return NULL;
                s->a = parts[0];
                s->b = parts[1];
                s->c = parts[2];
                m->b = s;
            } else
                m->b = parts[0];
            if (!expect(P, TK_RBRACKET, "']'")) return NULL;
        } else {
            jn_node *prop = parse_primary(P);
            if (!prop) return NULL;
            if (prop->kind != E_IDENT && prop->kind != E_INT)
                return perr(P, prop->pos, "expected a name or an integer after '.'");
            m->b = prop;
        }
        obj = m;
    }
    return obj;
}

static jn_node *parse_call(parser *P, jn_node *callee) {
    jn_node *x = node(P, E_CALL, peek(P, 0)->pos);
    if (!x || !parse_args(P, false, &x->args)) return NULL;
    x->a = callee;
    x = parse_member(P, x);
    if (x && is_type(P, TK_LPAREN)) return parse_call(P, x);
    return x;
}

static jn_node *parse_call_member(parser *P) {
    jn_node *m = parse_member(P, parse_primary(P));
    if (m && is_type(P, TK_LPAREN)) return parse_call(P, m);
    return m;
}

static jn_node *parse_unary_sign(parser *P) {
    const jn_token *t = peek(P, 0);
    if ((t->type == TK_UNARY || t->type == TK_ADD) && t->n == 1 && (t->s[0] == '-' || t->s[0] == '+')) {
        if (!enter(P)) return NULL;
        P->cur++;
        jn_node *x = node(P, E_UNARY, t->pos);
        if (!x || !(x->a = parse_unary_sign(P))) return NULL;
        x->op = t->s[0] == '-' ? OP_NEG : OP_POS;
        P->depth--;
        return x;
    }
    return parse_call_member(P);
}

static jn_node *parse_filter(parser *P) {
    jn_node *operand = parse_unary_sign(P);
    while (operand && is_type(P, TK_PIPE)) {
        P->cur++;
        jn_node *f = parse_primary(P);
        if (!f) return NULL;
        if (f->kind != E_IDENT) return perr(P, f->pos, "expected a filter name after '|'");
        if (is_type(P, TK_LPAREN) && !(f = parse_call(P, f))) return NULL;
        jn_node *x = node(P, E_FILTER, f->pos);
        if (!x) return NULL;
        x->a = operand;
        x->b = f;
        operand = x;
    }
    return operand;
}

static jn_node *parse_test(parser *P) {
    jn_node *operand = parse_filter(P);
    while (operand && is_ident(P, "is")) {
        P->cur++;
        bool neg = is_ident(P, "not");
        if (neg) P->cur++;
        jn_node *name = parse_primary(P);
        if (!name) return NULL;
        if (name->kind != E_IDENT) return perr(P, name->pos, "expected a test name after 'is'");
        jn_node *x = node(P, E_TEST, name->pos);
        if (!x) return NULL;
        x->a = operand;
        x->flag = neg;
        x->str = name->str;
        x->len = name->len;
        /* extension: tests with arguments, `is eq(3)` (the reference has none) */
        if (is_type(P, TK_LPAREN) && !parse_args(P, false, &x->args)) return NULL;
        operand = x;
    }
    return operand;
}

static jn_node *parse_pow(parser *P) {
    jn_node *l = parse_test(P);
    while (l && is_type(P, TK_POW)) {
        uint32_t pos = peek(P, 0)->pos;
        P->cur++;
        l = binary(P, OP_POW, pos, l, parse_test(P));
    }
    return l;
}

static jn_node *parse_mul(parser *P) {
    jn_node *l = parse_pow(P);
    while (l && is_type(P, TK_MUL)) {
        const jn_token *t = peek(P, 0);
        P->cur++;
        jn_op op = t->n == 2 ? OP_FLOORDIV : t->s[0] == '*' ? OP_MUL : t->s[0] == '/' ? OP_DIV : OP_MOD;
        l = binary(P, op, t->pos, l, parse_pow(P));
    }
    return l;
}

static jn_node *parse_add(parser *P) {
    jn_node *l = parse_mul(P);
    while (l && is_type(P, TK_ADD)) {
        const jn_token *t = peek(P, 0);
        P->cur++;
        jn_op op = t->s[0] == '+' ? OP_ADD : t->s[0] == '-' ? OP_SUB : OP_CONCAT;
        l = binary(P, op, t->pos, l, parse_mul(P));
    }
    return l;
}

static jn_node *parse_compare(parser *P) {
    jn_node *l = parse_add(P);
    while (l) {
        const jn_token *t = peek(P, 0);
        jn_op op;
        if (ident_is(t, "not") && ident_is(peek(P, 1), "in"))
            op = OP_NOTIN, P->cur += 2;
        else if (ident_is(t, "in"))
            op = OP_IN, P->cur++;
        else if (t->type == TK_CMP) {
            P->cur++;
            op = t->s[0] == '='   ? OP_EQ
                 : t->s[0] == '!' ? OP_NE
                 : t->s[0] == '<' ? (t->n == 2 ? OP_LE : OP_LT)
                                  : (t->n == 2 ? OP_GE : OP_GT);
        } else
            break;
        l = binary(P, op, t->pos, l, parse_add(P));
    }
    return l;
}

static jn_node *parse_not(parser *P) {
    /* The reference loops here: after `not X`, a further `not` at this level starts a new
     * operand that replaces the first (`not a != not not b` parses that way). */
    jn_node *right = NULL;
    while (is_ident(P, "not")) {
        const jn_token *t = peek(P, 0);
        if (!enter(P)) return NULL;
        P->cur++;
        jn_node *x = node(P, E_UNARY, t->pos);
        if (!x || !(x->a = parse_not(P))) return NULL;
        x->op = OP_NOT;
        P->depth--;
        right = x;
    }
    return right ? right : parse_compare(P);
}

static jn_node *parse_and(parser *P) {
    jn_node *l = parse_not(P);
    while (l && is_ident(P, "and")) {
        uint32_t pos = peek(P, 0)->pos;
        P->cur++;
        l = binary(P, OP_AND, pos, l, parse_not(P));
    }
    return l;
}

static jn_node *parse_or(parser *P) {
    jn_node *l = parse_and(P);
    while (l && is_ident(P, "or")) {
        uint32_t pos = peek(P, 0)->pos;
        P->cur++;
        l = binary(P, OP_OR, pos, l, parse_and(P));
    }
    return l;
}

static jn_node *parse_if_expr(parser *P) {
    jn_node *a = parse_or(P);
    if (!a || !is_ident(P, "if")) return a;
    uint32_t pos = peek(P, 0)->pos;
    P->cur++;
    jn_node *test = parse_or(P);
    if (!test) return NULL;
    if (is_ident(P, "else")) {
        P->cur++;
        jn_node *x = node(P, E_TERNARY, pos);
        if (!x || !(x->c = parse_if_expr(P))) return NULL;
        x->a = test;
        x->b = a;
        return x;
    }
    jn_node *x = node(P, E_SELECT, pos);
    if (!x) return NULL;
    x->a = a;
    x->b = test;
    return x;
}

static jn_node *parse_expression(parser *P) {
    if (!enter(P)) return NULL;
    jn_node *x = parse_if_expr(P);
    P->depth--;
    return x;
}

static jn_node *parse_primary(parser *P) {
    const jn_token *t = peek(P, 0);
    char b[64];
    switch (t->type) {
    case TK_NUM: {
        P->cur++;
        char buf[400];
        if (t->n >= sizeof buf) return perr(P, t->pos, "number literal too long");
        memcpy(buf, t->s, t->n);
        buf[t->n] = 0;
        jn_node *x = node(P, memchr(t->s, '.', t->n) ? E_FLOAT : E_INT, t->pos);
        if (x) x->num = strtod(buf, NULL);
        return x;
    }
    case TK_STR: {
        P->cur++;
        jn_node *x = node(P, E_STR, t->pos);
        if (!x) return NULL;
        x->str = t->s;
        x->len = t->n;
        if (is_type(P, TK_STR)) { /* adjacent literals concatenate */
            size_t total = t->n;
            for (size_t k = 0; peek(P, k)->type == TK_STR; k++) total += peek(P, k)->n;
            char *s = jn_alloc(P->arena, total + 1);
            if (!s) return perr(P, t->pos, "template too large: out of memory");
            memcpy(s, t->s, t->n);
            size_t n = t->n;
            while (is_type(P, TK_STR)) {
                memcpy(s + n, peek(P, 0)->s, peek(P, 0)->n);
                n += peek(P, 0)->n;
                P->cur++;
            }
            x->str = s;
            x->len = n;
        }
        return x;
    }
    case TK_IDENT: {
        P->cur++;
        jn_node *x = node(P, E_IDENT, t->pos);
        if (x) x->str = t->s, x->len = t->n;
        return x;
    }
    case TK_LPAREN: {
        P->cur++;
        jn_node *x = parse_sequence(P, false);
        if (x && !expect(P, TK_RPAREN, "')'")) return NULL;
        return x;
    }
    case TK_LBRACKET: {
        P->cur++;
        builder items = {0};
        while (!is_type(P, TK_RBRACKET)) {
            if (is_type(P, TK_EOF)) return unexpected(P, "']'");
            if (!add(P, &items, parse_expression(P))) return NULL;
            if (is_type(P, TK_COMMA)) P->cur++;
        }
        P->cur++;
        jn_node *x = node(P, E_ARRAY, t->pos);
        if (x) x->args = done(&items);
        return x;
    }
    case TK_LBRACE: {
        P->cur++;
        builder keys = {0}, vals = {0};
        while (!is_type(P, TK_RBRACE)) {
            if (is_type(P, TK_EOF)) return unexpected(P, "'}'");
            if (!add(P, &keys, parse_expression(P))) return NULL;
            if (!expect(P, TK_COLON, "':' between key and value")) return NULL;
            if (!add(P, &vals, parse_expression(P))) return NULL;
            if (is_type(P, TK_COMMA)) P->cur++;
        }
        P->cur++;
        jn_node *x = node(P, E_OBJECT, t->pos);
        if (x) x->args = done(&keys), x->alt = done(&vals);
        return x;
    }
    default: return perr(P, t->pos, "unexpected %s in an expression", describe(t, b, sizeof b));
    }
}

/* ---- statements -------------------------------------------------------------------- */

static const char *const STOP_IF[] = {"elif", "else", "endif", NULL};
static const char *const STOP_ENDIF[] = {"endif", NULL};
static const char *const STOP_FOR[] = {"endfor", "else", NULL};
static const char *const STOP_ENDFOR[] = {"endfor", NULL};
static const char *const STOP_SET[] = {"endset", NULL};
static const char *const STOP_MACRO[] = {"endmacro", NULL};
static const char *const STOP_CALL[] = {"endcall", NULL};
static const char *const STOP_FILTER[] = {"endfilter", NULL};

/* Does the body read `kwargs` / `varargs` (outside a nested declaration of them)? The
 * reference decides from this whether a macro accepts extra arguments. */
static void scan_special(const jn_node *x, bool *kw, bool *va, int depth) {
    if (!x || depth > 400) return;
    if (x->kind == E_IDENT) {
        if (x->len == 6 && !memcmp(x->str, "kwargs", 6)) *kw = true;
        if (x->len == 7 && !memcmp(x->str, "varargs", 7)) *va = true;
        return;
    }
    if (x->kind == N_MACRO) return; /* a nested macro has its own */
    if (x->kind == E_MEMBER && !x->flag) {
        scan_special(x->a, kw, va, depth + 1);
        return;
    }
    if (x->kind == E_FILTER) {
        scan_special(x->a, kw, va, depth + 1);
        if (x->b && x->b->kind == E_CALL)
            for (size_t i = 0; i < x->b->args.n; i++) scan_special(x->b->args.v[i], kw, va, depth + 1);
        return;
    }
    scan_special(x->a, kw, va, depth + 1);
    scan_special(x->b, kw, va, depth + 1);
    scan_special(x->c, kw, va, depth + 1);
    const jn_list *ls[3] = {&x->body, &x->alt, &x->args};
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < ls[k]->n; i++) scan_special(ls[k]->v[i], kw, va, depth + 1);
}

static void mark_special(jn_node *decl) {
    bool kw = false, va = false;
    for (size_t i = 0; i < decl->body.n; i++) scan_special(decl->body.v[i], &kw, &va, 0);
    for (size_t i = 0; i < decl->args.n; i++) { /* a parameter named kwargs is an ordinary one */
        const jn_node *p = decl->args.v[i];
        if (p->len == 6 && !memcmp(p->str, "kwargs", 6)) kw = false;
        if (p->len == 7 && !memcmp(p->str, "varargs", 7)) va = false;
    }
    decl->uses_kwargs = kw;
    decl->uses_varargs = va;
}

static jn_node *parse_if(parser *P, const jn_token *opener) {
    jn_node *x = node(P, N_IF, opener->pos);
    if (!x || !(x->a = parse_expression(P)) || !expect(P, TK_CLOSE_STMT, "'%}'")) return NULL;
    builder body = {0}, alt = {0};
    if (!parse_block(P, &body, STOP_IF, opener, "endif")) return NULL;
    x->body = done(&body);
    if (is_statement(P, (const char *const[]){"elif", NULL})) {
        const jn_token *el = peek(P, 1);
        P->cur += 2;
        if (!enter(P) || !add(P, &alt, parse_if(P, el))) return NULL;
        P->depth--;
    } else if (is_statement(P, (const char *const[]){"else", NULL})) {
        P->cur += 2;
        if (!expect(P, TK_CLOSE_STMT, "'%}'") || !parse_block(P, &alt, STOP_ENDIF, opener, "endif"))
            return NULL;
    }
    x->alt = done(&alt);
    return x;
}

static jn_node *parse_for(parser *P, const jn_token *opener) {
    jn_node *x = node(P, N_FOR, opener->pos);
    if (!x || !(x->a = parse_sequence(P, true))) return NULL;
    if (x->a->kind != E_IDENT && x->a->kind != E_TUPLE)
        return perr(P, x->a->pos, "expected a loop variable name");
    if (!expect_ident(P, "in", "'in' after the loop variable") || !(x->b = parse_expression(P)) ||
        !expect(P, TK_CLOSE_STMT, "'%}'"))
        return NULL;
    builder body = {0}, alt = {0};
    if (!parse_block(P, &body, STOP_FOR, opener, "endfor")) return NULL;
    if (is_statement(P, (const char *const[]){"else", NULL})) {
        P->cur += 2;
        if (!expect(P, TK_CLOSE_STMT, "'%}'") || !parse_block(P, &alt, STOP_ENDFOR, opener, "endfor"))
            return NULL;
    }
    x->body = done(&body);
    x->alt = done(&alt);
    return x;
}

static jn_node *parse_set(parser *P, const jn_token *opener) {
    jn_node *x = node(P, N_SET, opener->pos);
    if (!x || !(x->a = parse_sequence(P, false))) return NULL;
    if (is_type(P, TK_EQUALS)) {
        P->cur++;
        if (!(x->b = parse_sequence(P, false))) return NULL;
    } else {
        builder body = {0};
        if (!expect(P, TK_CLOSE_STMT, "'=' or '%}'") || !parse_block(P, &body, STOP_SET, opener, "endset"))
            return NULL;
        x->body = done(&body);
        P->cur++; /* {% */
        if (!expect_ident(P, "endset", "'endset'")) return NULL;
    }
    if (!expect(P, TK_CLOSE_STMT, "'%}'")) return NULL;
    return x;
}

static jn_node *parse_statement(parser *P) {
    P->cur++; /* {% */
    const jn_token *kw = peek(P, 0);
    char b[64];
    if (kw->type != TK_IDENT)
        return perr(P, kw->pos, "expected a statement name after {%%, found %s", describe(kw, b, sizeof b));
    P->cur++;
    jn_node *x = NULL;
    if (ident_is(kw, "set")) return parse_set(P, kw);
    if (ident_is(kw, "if")) {
        if (!(x = parse_if(P, kw))) return NULL;
        P->cur++; /* {% (parse_block stopped at it) */
        if (!expect_ident(P, "endif", "'endif'") || !expect(P, TK_CLOSE_STMT, "'%}'")) return NULL;
        return x;
    }
    if (ident_is(kw, "for")) {
        if (!(x = parse_for(P, kw))) return NULL;
        P->cur++;
        if (!expect_ident(P, "endfor", "'endfor'") || !expect(P, TK_CLOSE_STMT, "'%}'")) return NULL;
        return x;
    }
    if (ident_is(kw, "macro")) {
        jn_node *name = parse_primary(P);
        if (!name) return NULL;
        if (name->kind != E_IDENT) return perr(P, name->pos, "expected a macro name");
        if (!(x = node(P, N_MACRO, kw->pos))) return NULL;
        x->str = name->str;
        x->len = name->len;
        builder body = {0};
        if (!parse_args(P, true, &x->args) || !expect(P, TK_CLOSE_STMT, "'%}'") ||
            !parse_block(P, &body, STOP_MACRO, kw, "endmacro"))
            return NULL;
        x->body = done(&body);
        P->cur++;
        if (!expect_ident(P, "endmacro", "'endmacro'") || !expect(P, TK_CLOSE_STMT, "'%}'")) return NULL;
        mark_special(x);
        return x;
    }
    if (ident_is(kw, "call")) {
        if (!(x = node(P, N_CALLBLOCK, kw->pos))) return NULL;
        if (is_type(P, TK_LPAREN) && !parse_args(P, true, &x->args)) return NULL;
        jn_node *callee = parse_primary(P);
        if (!callee) return NULL;
        if (callee->kind != E_IDENT) return perr(P, callee->pos, "expected a macro name after {%% call %%}");
        jn_node *call = node(P, E_CALL, callee->pos);
        if (!call || !parse_args(P, false, &call->args)) return NULL;
        call->a = callee;
        x->a = call;
        builder body = {0};
        if (!expect(P, TK_CLOSE_STMT, "'%}'") || !parse_block(P, &body, STOP_CALL, kw, "endcall"))
            return NULL;
        x->body = done(&body);
        P->cur++;
        if (!expect_ident(P, "endcall", "'endcall'") || !expect(P, TK_CLOSE_STMT, "'%}'")) return NULL;
        mark_special(x);
        return x;
    }
    if (ident_is(kw, "filter")) {
        if (!(x = node(P, N_FILTERBLOCK, kw->pos))) return NULL;
        jn_node *f = parse_primary(P);
        if (!f) return NULL;
        if (f->kind != E_IDENT) return perr(P, f->pos, "expected a filter name");
        if (is_type(P, TK_LPAREN) && !(f = parse_call(P, f))) return NULL;
        x->a = f;
        builder body = {0};
        if (!expect(P, TK_CLOSE_STMT, "'%}'") || !parse_block(P, &body, STOP_FILTER, kw, "endfilter"))
            return NULL;
        x->body = done(&body);
        P->cur++;
        if (!expect_ident(P, "endfilter", "'endfilter'") || !expect(P, TK_CLOSE_STMT, "'%}'")) return NULL;
        return x;
    }
    if (ident_is(kw, "break") || ident_is(kw, "continue")) {
        if (!(x = node(P, ident_is(kw, "break") ? N_BREAK : N_CONTINUE, kw->pos))) return NULL;
        return expect(P, TK_CLOSE_STMT, "'%}'") ? x : NULL;
    }
    for (const char *const *c = CLOSERS; *c; c++)
        if (ident_is(kw, *c)) return perr(P, kw->pos, "unexpected {%% %s %%}: no block is open", *c);
    return perr(P, kw->pos, "unknown statement '%.*s'", (int)(kw->n > 40 ? 40 : kw->n), kw->s);
}

static jn_node *parse_any(parser *P) {
    const jn_token *t = peek(P, 0);
    jn_node *x = NULL;
    if (!enter(P)) return NULL;
    switch (t->type) {
    case TK_TEXT:
    case TK_COMMENT: /* a comment renders as empty text */
        P->cur++;
        if ((x = node(P, N_TEXT, t->pos)) && t->type == TK_TEXT) x->str = t->s, x->len = t->n;
        break;
    case TK_OPEN_STMT: x = parse_statement(P); break;
    case TK_OPEN_EXPR:
        P->cur++;
        if ((x = node(P, N_OUTPUT, t->pos)) && (x->a = parse_expression(P)) &&
            !expect(P, TK_CLOSE_EXPR, "'}}'"))
            x = NULL;
        else if (x && !x->a)
            x = NULL;
        break;
    default: {
        char b[64];
        x = perr(P, t->pos, "unexpected %s", describe(t, b, sizeof b));
    }
    }
    P->depth--;
    return x;
}

/* Can a `loop` object outlive its iteration? Only if the name is used other than as
 * `loop.attr` (stored, passed, filtered, or a method taken). When it cannot, the
 * evaluator updates one loop object in place instead of allocating one per iteration. */
static bool loop_escapes(const jn_node *x, int depth) {
    if (!x) return false;
    if (depth > 400) return true;
    if (x->kind == E_IDENT) return x->len == 4 && !memcmp(x->str, "loop", 4);
    if (x->kind == E_MEMBER && x->a->kind == E_IDENT && x->a->len == 4 && !memcmp(x->a->str, "loop", 4)) {
        static const char *const methods[] = {"get", "items", "keys", "values", "dictsort"};
        if (x->flag) return loop_escapes(x->b, depth + 1) || x->b->kind != E_STR;
        for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
            if (x->b->len == strlen(methods[i]) && !memcmp(x->b->str, methods[i], x->b->len)) return true;
        return false;
    }
    if (x->kind == E_MEMBER && !x->flag) return loop_escapes(x->a, depth + 1);
    if (loop_escapes(x->a, depth + 1) || loop_escapes(x->b, depth + 1) || loop_escapes(x->c, depth + 1))
        return true;
    const jn_list *ls[3] = {&x->body, &x->alt, &x->args};
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < ls[k]->n; i++)
            if (loop_escapes(ls[k]->v[i], depth + 1)) return true;
    return false;
}

bool jn_loop_escapes(const jn_list *body) {
    for (size_t i = 0; i < body->n; i++)
        if (loop_escapes(body->v[i], 0)) return true;
    return false;
}

fr_status jn_parse(jn_arena *arena, const jn_token *toks, size_t ntoks, jn_list *body, char *msg,
                   size_t msgcap, uint32_t *errpos) {
    parser P = {.arena = arena, .t = toks, .n = ntoks, .msg = msg, .msgcap = msgcap, .errpos = errpos};
    builder b = {0};
    while (!is_type(&P, TK_EOF))
        if (!add(&P, &b, parse_any(&P))) break;
    if (P.failed) return FR_ERR_FORMAT;
    *body = done(&b);
    return FR_OK;
}
