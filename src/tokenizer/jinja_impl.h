/* jinja_impl.h - internals shared by the jinja_*.c files (not for other modules).
 *
 * Pipeline: jinja_lex.c turns the source into tokens (after HF's trim_blocks /
 * lstrip_blocks preprocessing, keeping a map back to original byte offsets),
 * jinja_parse.c builds the syntax tree in the template's arena, jinja_eval.c walks it,
 * with filters, tests and methods in jinja_builtins.c and values (strings, numbers in
 * JavaScript's formats, JSON) in jinja_value.c.
 *
 * Memory: everything a render creates lives in one arena freed when the render ends, so
 * values are plain structs passed by value and need no reference counts; the arena and
 * the malloc'd output buffers are charged to the render's memory limit. Values never
 * change after creation except namespace objects, which `{% set ns.x = ... %}` updates. */
#ifndef FR_JINJA_IMPL_H
#define FR_JINJA_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jinja.h"

/* ---- arena ---------------------------------------------------------------------- */

typedef struct jn_chunk jn_chunk;
typedef struct {
    jn_chunk *head;
    size_t *used;    /* bytes charged so far (shared with the render's buffers) */
    size_t limit;    /* fail allocations past this many charged bytes */
    size_t own;      /* counter used when `used` is not shared */
    bool over_limit; /* an allocation was refused for the limit (not for malloc failing) */
} jn_arena;

void jn_arena_init(jn_arena *a, size_t limit, size_t *shared_counter);
void jn_arena_free(jn_arena *a);
/* n bytes, 16-aligned, zeroed; NULL when out of memory or over the limit. */
void *jn_alloc(jn_arena *a, size_t n);
/* Hand a malloc'd block (already charged by its owner) to the arena to free at the end. */
bool jn_arena_adopt(jn_arena *a, void *block);

/* ---- tokens --------------------------------------------------------------------- */

typedef enum {
    TK_EOF,
    TK_TEXT,
    TK_NUM,
    TK_STR,
    TK_IDENT,
    TK_EQUALS,
    TK_LPAREN,
    TK_RPAREN,
    TK_OPEN_STMT,
    TK_CLOSE_STMT,
    TK_OPEN_EXPR,
    TK_CLOSE_EXPR,
    TK_LBRACKET,
    TK_RBRACKET,
    TK_LBRACE,
    TK_RBRACE,
    TK_COMMA,
    TK_DOT,
    TK_COLON,
    TK_PIPE,
    TK_ADD, /* + - ~ */
    TK_MUL, /* * / // % */
    TK_POW, /* ** */
    TK_CMP, /* < > <= >= == != */
    TK_UNARY,
    TK_COMMENT,
} jn_tok_type;

typedef struct {
    jn_tok_type type;
    const char *s; /* text, literal value (escapes resolved) or operator spelling */
    size_t n;
    uint32_t pos; /* byte offset in the original source */
} jn_token;

/* ---- syntax tree ---------------------------------------------------------------- */

typedef enum {
    /* statements */
    N_TEXT,
    N_OUTPUT,      /* {{ a }} */
    N_IF,          /* a test, body, alt */
    N_FOR,         /* a loop target, b iterable (maybe E_SELECT), body, alt (else) */
    N_SET,         /* a target, b value or NULL (then body) */
    N_MACRO,       /* str name, args parameters, body */
    N_CALLBLOCK,   /* a the E_CALL, args caller parameters, body */
    N_FILTERBLOCK, /* a filter (E_IDENT or E_CALL), body */
    N_BREAK,
    N_CONTINUE,
    /* expressions */
    E_INT,
    E_FLOAT,
    E_STR,
    E_IDENT,
    E_ARRAY,   /* args items */
    E_TUPLE,   /* args items */
    E_OBJECT,  /* args keys, alt values (as a list of expressions) */
    E_MEMBER,  /* a object, b property; flag: computed ([..]) */
    E_SLICE,   /* a start, b stop, c step (each may be NULL) */
    E_CALL,    /* a callee, args */
    E_BINARY,  /* op, a, b */
    E_UNARY,   /* op, a */
    E_FILTER,  /* a operand, b filter (E_IDENT or E_CALL) */
    E_TEST,    /* a operand, str test name, flag negate, args (extension: is eq(x)) */
    E_TERNARY, /* a condition, b if true, c if false */
    E_SELECT,  /* a value, b condition ("a if b" without else) */
    E_KWARG,   /* str name, a value */
    E_SPREAD,  /* *a */
    E_KWSPREAD /* **a */
} jn_kind;

typedef enum {
    OP_NONE,
    OP_AND,
    OP_OR,
    OP_NOT,
    OP_EQ,
    OP_NE,
    OP_LT,
    OP_GT,
    OP_LE,
    OP_GE,
    OP_IN,
    OP_NOTIN,
    OP_ADD,
    OP_SUB,
    OP_CONCAT,
    OP_MUL,
    OP_DIV,
    OP_FLOORDIV,
    OP_MOD,
    OP_POW,
    OP_NEG,
    OP_POS,
} jn_op;

typedef struct jn_node jn_node;
typedef struct {
    jn_node **v;
    size_t n;
} jn_list;

struct jn_node {
    uint8_t kind;                   /* jn_kind */
    uint8_t op;                     /* jn_op */
    bool flag;                      /* computed member / negated test */
    bool uses_kwargs, uses_varargs; /* macros and call blocks: body reads kwargs / varargs */
    uint32_t pos;                   /* byte offset in the original source */
    double num;                     /* E_INT, E_FLOAT */
    const char *str;                /* E_STR, E_IDENT, N_TEXT, N_MACRO name, E_KWARG name, E_TEST name */
    size_t len;
    jn_node *a, *b, *c;
    jn_list body, alt, args;
};

struct fr_jinja_template {
    jn_arena arena;  /* owns everything below */
    const char *src; /* copy of the original source, for line:column */
    size_t src_len;
    jn_list body;
    bool loop_escapes; /* see jn_loop_escapes */
};

/* Tokens of src (after HF preprocessing), in `arena`; ends with TK_EOF. */
fr_status jn_lex(jn_arena *arena, const char *src, size_t len, jn_token **toks, size_t *ntoks, char *msg,
                 size_t msgcap, uint32_t *errpos);
/* Syntax tree of the tokens; on failure msg and *errpos say what and where. */
fr_status jn_parse(jn_arena *arena, const jn_token *toks, size_t ntoks, jn_list *body, char *msg,
                   size_t msgcap, uint32_t *errpos);
/* Whether any `loop` value may be kept past its iteration (see jinja_parse.c). */
bool jn_loop_escapes(const jn_list *body);
/* 1-based line and column (in characters) of byte offset pos. */
void jn_line_col(const char *src, size_t len, uint32_t pos, int *line, int *col);

/* ---- values --------------------------------------------------------------------- */

typedef enum {
    JV_UNDEF,
    JV_NULL,
    JV_BOOL,
    JV_INT, /* JavaScript numbers: doubles that print as integers */
    JV_FLOAT,
    JV_STR,
    JV_ARRAY,
    JV_OBJECT,
    JV_NAMESPACE,
    JV_FUNC,
} jv_type;

typedef struct jn_array jn_array;
typedef struct jn_object jn_object;
typedef struct jn_func jn_func;

typedef struct {
    uint8_t t; /* jv_type */
    union {
        bool b;
        double d;
        struct {
            const char *p; /* not NUL-terminated; arena or template memory */
            size_t n;
        } s;
        jn_array *a;
        jn_object *o;
        jn_func *f;
    } u;
} jval;

struct jn_array {
    size_t n;
    bool tuple; /* (a, b): the reference refuses to serialize these */
    jval *v;
};

typedef struct {
    const char *p;
    size_t n;
} jn_str;

struct jn_object {
    size_t n, cap;
    jn_str *keys; /* insertion order */
    jval *vals;
};

typedef enum {
    FN_NAMESPACE,
    FN_RANGE,
    FN_RAISE,
    FN_STRFTIME,
    FN_MACRO,      /* node: the N_MACRO */
    FN_CALLER,     /* node: the N_CALLBLOCK; env: where the call block stands */
    FN_STR_METHOD, /* self: the string; method: which */
    FN_OBJ_METHOD, /* self: the object */
} jn_fn_kind;

struct jn_env;
struct jn_func {
    jn_fn_kind kind;
    int method;
    jval self;
    const jn_node *node;
    struct jn_env *env;
};

/* Variables of one scope; lookups walk to the parent. */
typedef struct jn_env {
    struct jn_env *parent;
    size_t n, cap;
    jn_str *names;
    jval *vals;
} jn_env;

/* Growable output buffer, malloc'd and charged to the render's memory counter. */
typedef struct {
    char *p;
    size_t n, cap;
} jn_buf;

/* Status codes inside the evaluator: FR_OK, a negative fr_status, or loop control. */
enum { JN_BREAK = 1, JN_CONTINUE = 2 };

/* State of one render. */
typedef struct {
    const fr_jinja_template *tpl;
    fr_jinja_limits lim;
    jn_arena arena;
    size_t mem_used; /* arena chunks + live buffers */
    uint64_t steps;
    int depth;
    fr_error *err;
    jn_env *globals;
} jn_ctx;

/* Fail the render with "line L:C: message" at node position pos. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
int jn_fail(jn_ctx *c, fr_status code, uint32_t pos, const char *fmt, ...);
/* The same for out-of-memory / over-limit allocations. */
int jn_oom(jn_ctx *c, uint32_t pos);
/* Charge n steps; fails past the limit. */
int jn_steps(jn_ctx *c, uint64_t n, uint32_t pos);
/* Charge work over `bytes` bytes of string (one step per 32), so that string operations
 * on huge values count against the step budget like loop iterations do. */
int jn_work(jn_ctx *c, size_t bytes, uint32_t pos);
/* Bytes jv_strict_equal would compare (equal-length strings), for jn_work. */
size_t jv_eq_cost(jval a, jval b);

static inline jval jv_undef(void) {
    jval v = {.t = JV_UNDEF};
    return v;
}
static inline jval jv_null(void) {
    jval v = {.t = JV_NULL};
    return v;
}
static inline jval jv_bool(bool b) {
    jval v = {.t = JV_BOOL};
    v.u.b = b;
    return v;
}
static inline jval jv_int(double d) {
    jval v = {.t = JV_INT};
    v.u.d = d;
    return v;
}
static inline jval jv_float(double d) {
    jval v = {.t = JV_FLOAT};
    v.u.d = d;
    return v;
}
static inline jval jv_str(const char *p, size_t n) {
    jval v = {.t = JV_STR};
    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}
static inline bool jv_is_num(jval v) { return v.t == JV_INT || v.t == JV_FLOAT; }

/* buffers */
int jn_buf_put(jn_ctx *c, jn_buf *b, const char *s, size_t n, uint32_t pos);
int jn_buf_putc(jn_ctx *c, jn_buf *b, char ch, uint32_t pos);
void jn_buf_release(jn_ctx *c, jn_buf *b);
/* Turn the buffer into a string value owned by the arena (the buffer is emptied). */
int jn_buf_to_value(jn_ctx *c, jn_buf *b, jval *out, uint32_t pos);

/* values */
int jv_new_str(jn_ctx *c, const char *s, size_t n, jval *out, uint32_t pos);
int jv_new_array(jn_ctx *c, size_t n, jval *out, uint32_t pos); /* n undefined items */
int jv_new_object(jn_ctx *c, size_t cap, jn_object **out, uint32_t pos);
int jv_object_set(jn_ctx *c, jn_object *o, const char *k, size_t kn, jval v, uint32_t pos);
jval *jv_object_get(const jn_object *o, const char *k, size_t kn);
int jv_new_func(jn_ctx *c, jn_fn_kind kind, jval *out, jn_func **f, uint32_t pos);
bool jv_truthy(jval v);
const char *jv_type_name(jval v); /* the reference's names: StringValue, ... */
int jv_from_json(jn_ctx *c, const cJSON *j, jval *out, int depth);

/* printing, in the reference's three flavours */
int jv_render(jn_ctx *c, jn_buf *b, jval v, uint32_t pos);    /* {{ v }}, |string on arrays */
int jv_js_str(jn_ctx *c, jn_buf *b, jval v, uint32_t pos);    /* JavaScript String(v.value): ~ and + */
int jv_join_item(jn_ctx *c, jn_buf *b, jval v, uint32_t pos); /* Array.join of raw values */

typedef struct {
    int indent; /* < 0: none */
    bool ensure_ascii, sort_keys, undef_as_null;
    const char *item_sep, *key_sep; /* NULL: the defaults */
    size_t item_sep_n, key_sep_n;
} jn_json_opts;
int jv_to_json(jn_ctx *c, jn_buf *b, jval v, const jn_json_opts *o, int depth, uint32_t pos);

/* numbers as JavaScript prints them */
void jn_fmt_js_number(double d, char out[40]);
void jn_fmt_js_float(double d, char out[40]); /* FloatValue.toString: 1.0, -0.0 */

/* Unicode helpers on UTF-8 */
size_t jn_utf8_decode(const char *s, size_t n, uint32_t *cp); /* bytes used (>= 1) */
size_t jn_utf8_encode(uint32_t cp, char out[4]);
size_t jn_js_ws_len(const char *s, size_t n); /* JavaScript \s at s: its byte length, else 0 */
size_t jn_utf16_len(const char *s, size_t n);
int jn_utf16_cmp(const char *a, size_t an, const char *b, size_t bn);
jn_str jn_js_trim(jn_str s, bool left, bool right);

/* comparisons shared by sort, dictsort and the `in` / == operators */
bool jv_strict_equal(jval a, jval b);                                  /* JavaScript === on raw values */
int jv_loose_equal(jn_ctx *c, jval a, jval b, bool *eq, uint32_t pos); /* JavaScript == on raw values */
int jv_compare(jn_ctx *c, jval a, jval b, bool case_sensitive, int *res, uint32_t pos);
int jv_lower(jn_ctx *c, jn_str s, bool upper, jval *out, uint32_t pos);

/* builtins (jinja_builtins.c) */
int jn_apply_filter(jn_ctx *c, jval operand, const jn_node *filter, jn_env *env, jval *out);
int jn_apply_test(jn_ctx *c, const jn_node *test, jval operand, jn_env *env, bool *out);
int jn_member(jn_ctx *c, jval obj, jval prop, jval *out, uint32_t pos);
int jn_call_builtin(jn_ctx *c, jn_func *f, jval *args, size_t nargs, jn_object *kw, jval *out, uint32_t pos);
bool jn_test_by_name(const char *name, size_t n, jval a, jval b, bool *known, int *err_kind);

/* evaluator entry points used by the builtins */
int jn_eval(jn_ctx *c, const jn_node *n, jn_env *env, jval *out);
typedef struct {
    jval *pos;
    size_t npos;
    jn_object *kw; /* NULL when none */
} jn_args;
int jn_eval_args(jn_ctx *c, const jn_list *args, jn_env *env, jn_args *out);
jval jn_lookup(jn_env *env, const char *name, size_t n);

#endif
